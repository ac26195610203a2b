package send

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mfilter/mfilter/remote"
)

// fakeLink dials TCP directly, and ends when closed.
type fakeLink struct {
	refuse bool
	once   sync.Once
	done   chan struct{}
}

func newFakeLink() *fakeLink { return &fakeLink{done: make(chan struct{})} }

func (l *fakeLink) DialTCP(ctx context.Context, addr string) (net.Conn, error) {
	select {
	case <-l.done:
		return nil, errors.New("link closed")
	default:
	}
	if l.refuse {
		return nil, &remote.ForwardError{Addr: addr, Err: errors.New("connect failed")}
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}
func (l *fakeLink) Wait() error  { <-l.done; return errors.New("closed") }
func (l *fakeLink) Close() error { l.once.Do(func() { close(l.done) }); return nil }

func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				io.WriteString(c, "220 relay\r\n")
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

func startTunnel(t *testing.T, tun *Tunnel) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tun.Listener = ln
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tun.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

func greeting(t *testing.T, addr string) (string, net.Conn) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("greeting: %v", err)
	}
	return line, c
}

func TestTunnelForwardsAndRedials(t *testing.T) {
	relay := echoServer(t)
	var dials atomic.Int32
	var mu sync.Mutex
	var links []*fakeLink
	addr := startTunnel(t, &Tunnel{Relay: relay, Dial: func(ctx context.Context) (Link, error) {
		dials.Add(1)
		l := newFakeLink()
		mu.Lock()
		links = append(links, l)
		mu.Unlock()
		return l, nil
	}})
	line, c := greeting(t, addr)
	if line != "220 relay\r\n" {
		t.Fatalf("greeting %q", line)
	}
	io.WriteString(c, "EHLO x\r\n")
	c.(*net.TCPConn).CloseWrite()
	rest, _ := io.ReadAll(c)
	if string(rest) != "EHLO x\r\n" {
		t.Errorf("echo through the tunnel: %q", rest)
	}
	c.Close()
	// The link drops: the tunnel dials again, and serves the next client.
	mu.Lock()
	links[0].Close()
	mu.Unlock()
	line, c = greeting(t, addr)
	c.Close()
	if line != "220 relay\r\n" || dials.Load() < 2 {
		t.Errorf("after the link dropped: %q, %d dials", line, dials.Load())
	}
}

func TestTunnelTellsClientsToWait(t *testing.T) {
	// No link at all: 421 after LinkWait.
	var notes []string
	var mu sync.Mutex
	addr := startTunnel(t, &Tunnel{Relay: "127.0.0.1:1", LinkWait: 200 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Note: func(s string) { mu.Lock(); notes = append(notes, s); mu.Unlock() },
		Dial: func(ctx context.Context) (Link, error) { return nil, errors.New("host unreachable") }})
	start := time.Now()
	line, c := greeting(t, addr)
	c.Close()
	if !strings.HasPrefix(line, "421 4.4.2 ") || time.Since(start) < 200*time.Millisecond {
		t.Errorf("no link: %q after %s", line, time.Since(start))
	}
	// A link, but the relay is not there as the server sees it: 421 at
	// once.
	addr = startTunnel(t, &Tunnel{Relay: "127.0.0.1:1", Dial: func(ctx context.Context) (Link, error) {
		l := newFakeLink()
		l.refuse = true
		return l, nil
	}})
	line, c = greeting(t, addr)
	c.Close()
	if !strings.HasPrefix(line, "421 4.4.1 ") || !strings.Contains(line, "could not connect") {
		t.Errorf("relay refused: %q", line)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(notes) == 0 || !strings.Contains(strings.Join(notes, "\n"), "host unreachable") {
		t.Errorf("notes: %q", notes)
	}
}
