package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// ForwardError is the server's refusal to open a channel to an address:
// forwarding is not allowed there (AllowTcpForwarding, PermitOpen), or
// nothing answers at the address as the server sees it.
type ForwardError struct {
	Addr string
	// Prohibited is true when the server's configuration forbids the
	// forward, false when it tried and the connection failed.
	Prohibited bool
	Err        error
}

func (e *ForwardError) Error() string {
	if e.Prohibited {
		return fmt.Sprintf("the SSH server refuses to forward to %s (AllowTcpForwarding or PermitOpen in its sshd_config): %v", e.Addr, e.Err)
	}
	return fmt.Sprintf("the SSH server could not connect to %s: %v", e.Addr, e.Err)
}

func (e *ForwardError) Unwrap() error { return e.Err }

// DialTCP opens a direct-tcpip channel to addr (host:port) as the server
// sees it: the server resolves host and makes the connection, so that
// "localhost:25" is the server's own SMTP port. The connection supports
// deadlines (an expired one closes it) and is closed when ctx is done.
func (c *Client) DialTCP(ctx context.Context, addr string) (net.Conn, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("forward to %q: %w", addr, err)
	}
	conn, err := c.c.DialContext(ctx, "tcp", addr)
	if err != nil {
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) {
			return nil, &ForwardError{Addr: addr, Prohibited: oce.Reason == ssh.Prohibited, Err: err}
		}
		return nil, fmt.Errorf("open a channel to %s over SSH: %w", addr, err)
	}
	dc := &deadlineConn{Conn: conn}
	dc.stop = context.AfterFunc(ctx, func() { dc.Close() })
	return dc, nil
}

// Wait blocks until the SSH connection ends, and says why.
func (c *Client) Wait() error {
	return c.c.Wait()
}

// deadlineConn gives an SSH channel the deadlines net.Conn promises (the
// channel itself refuses them): when a deadline passes, the connection
// is closed and Read and Write fail with os.ErrDeadlineExceeded. Closing
// is coarser than a socket's deadline, but every user of these
// connections (SMTP, TLS handshakes) gives up on a timeout anyway.
type deadlineConn struct {
	net.Conn
	stop func() bool

	mu       sync.Mutex
	timer    *time.Timer
	timedOut bool
}

type closeWriter interface{ CloseWrite() error }

// CloseWrite sends EOF to the other side, keeping the read side open.
func (d *deadlineConn) CloseWrite() error {
	if cw, ok := d.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return errors.New("close write: not supported")
}

func (d *deadlineConn) Read(p []byte) (int, error) {
	n, err := d.Conn.Read(p)
	return n, d.fix(err)
}

func (d *deadlineConn) Write(p []byte) (int, error) {
	n, err := d.Conn.Write(p)
	return n, d.fix(err)
}

func (d *deadlineConn) fix(err error) error {
	if err == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timedOut {
		return fmt.Errorf("%w (the connection was closed)", os.ErrDeadlineExceeded)
	}
	return err
}

func (d *deadlineConn) Close() error {
	d.mu.Lock()
	if d.timer != nil {
		d.timer.Stop()
	}
	d.mu.Unlock()
	if d.stop != nil {
		d.stop()
	}
	return d.Conn.Close()
}

// SetDeadline arms (or with a zero time, disarms) the close timer.
func (d *deadlineConn) SetDeadline(t time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	if t.IsZero() {
		return nil
	}
	wait := time.Until(t)
	if wait <= 0 {
		d.timedOut = true
		go d.Conn.Close()
		return nil
	}
	d.timer = time.AfterFunc(wait, func() {
		d.mu.Lock()
		d.timedOut = true
		d.mu.Unlock()
		d.Conn.Close()
	})
	return nil
}

// SetReadDeadline and SetWriteDeadline share the one timer.
func (d *deadlineConn) SetReadDeadline(t time.Time) error  { return d.SetDeadline(t) }
func (d *deadlineConn) SetWriteDeadline(t time.Time) error { return d.SetDeadline(t) }
