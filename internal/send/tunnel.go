package send

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/mfilter/mfilter/remote"
)

// Link is an SSH connection that forwards TCP (a *remote.Client).
type Link interface {
	DialTCP(ctx context.Context, addr string) (net.Conn, error)
	Wait() error
	Close() error
}

// Tunnel forwards the connections a local listener accepts to the relay
// through an SSH link it keeps up: when the link drops, it dials again
// (quickly at first, then backing off to MaxBackoff), and a client that
// connects meanwhile waits for the link up to LinkWait, then gets an SMTP
// 421 reply (try again later) instead of a reset.
type Tunnel struct {
	Listener net.Listener
	// Dial opens the SSH link.
	Dial  func(ctx context.Context) (Link, error)
	Relay string
	// LinkWait is how long a client waits for a link (default 30s).
	LinkWait time.Duration
	// MaxBackoff caps the wait between dials (default 30s).
	MaxBackoff time.Duration
	// Note receives a line for each event (link up, link lost, a client
	// that could not be forwarded).
	Note func(string)

	mu    sync.Mutex
	link  Link
	ready chan struct{} // closed when link is set
}

// Serve runs until ctx is done; it closes the listener then.
func (t *Tunnel) Serve(ctx context.Context) error {
	if t.LinkWait <= 0 {
		t.LinkWait = 30 * time.Second
	}
	if t.MaxBackoff <= 0 {
		t.MaxBackoff = 30 * time.Second
	}
	if t.Note == nil {
		t.Note = func(string) {}
	}
	t.ready = make(chan struct{})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t.keepLink(ctx)
	}()
	stop := context.AfterFunc(ctx, func() { t.Listener.Close() })
	defer stop()
	var err error
	for {
		var c net.Conn
		c, err = t.Listener.Accept()
		if err != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.handle(ctx, c)
		}()
	}
	cancel()
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("tunnel: accept: %w", err)
}

// keepLink dials the link, waits for it to end, and dials again.
func (t *Tunnel) keepLink(ctx context.Context) {
	const minBackoff = 100 * time.Millisecond
	backoff := minBackoff
	for ctx.Err() == nil {
		l, err := t.Dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			t.Note(fmt.Sprintf("no link: %v (trying again in %s)", err, backoff.Round(time.Millisecond)))
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, t.MaxBackoff)
			continue
		}
		backoff = minBackoff
		t.Note("link up")
		t.setLink(l)
		done := make(chan error, 1)
		go func() { done <- l.Wait() }()
		select {
		case <-ctx.Done():
			t.dropLink(l)
			l.Close()
			<-done
			return
		case err := <-done:
			t.dropLink(l)
			l.Close()
			t.Note(fmt.Sprintf("link lost (%v); dialing again", err))
		}
	}
}

func (t *Tunnel) setLink(l Link) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.link = l
	close(t.ready)
}

func (t *Tunnel) dropLink(l Link) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.link == l {
		t.link = nil
		t.ready = make(chan struct{})
	}
}

// current returns the link, waiting for one until deadline.
func (t *Tunnel) current(ctx context.Context, deadline time.Time) Link {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		t.mu.Lock()
		l, ready := t.link, t.ready
		t.mu.Unlock()
		if l != nil {
			return l
		}
		select {
		case <-ready:
		case <-timer.C:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

func (t *Tunnel) handle(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	deadline := time.Now().Add(t.LinkWait)
	var up net.Conn
	var lastErr error
	for up == nil {
		l := t.current(ctx, deadline)
		if l == nil {
			if ctx.Err() != nil {
				return
			}
			msg := "no SSH link to the mail server"
			if lastErr != nil {
				msg = lastErr.Error()
			}
			t.Note(fmt.Sprintf("client %s: %s; told it to try later", c.RemoteAddr(), msg))
			fmt.Fprintf(c, "421 4.4.2 mfilter tunnel: %s, try again later\r\n", oneLine(msg))
			return
		}
		var err error
		up, err = l.DialTCP(ctx, t.Relay)
		if err != nil {
			lastErr = err
			var fe *remote.ForwardError
			if errors.As(err, &fe) {
				// The link is fine; the relay is not there (a new
				// link would meet the same).
				t.Note(fmt.Sprintf("client %s: %v; told it to try later", c.RemoteAddr(), err))
				fmt.Fprintf(c, "421 4.4.1 mfilter tunnel: %s\r\n", oneLine(err.Error()))
				return
			}
			// The link is dead and does not know it yet: drop it and
			// wait for the next one.
			t.dropLink(l)
			l.Close()
		}
	}
	defer up.Close()
	pipe(c, up)
}

func oneLine(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '\r' || c == '\n' {
			b[i] = ' '
		}
	}
	return string(b)
}

type closeWriter interface{ CloseWrite() error }

// pipe copies both ways; EOF on one side is passed on as a half-close,
// an error closes both.
func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		_, err := io.Copy(dst, src)
		if cw, ok := dst.(closeWriter); ok && err == nil {
			if cw.CloseWrite() == nil {
				return
			}
		}
		a.Close()
		b.Close()
	}
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
}
