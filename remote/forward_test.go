package remote

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mfilter/mfilter/internal/sshtest"
)

// TestDialTCP: a channel reaches a port as the server sees it, echoes
// both ways and half-closes; a closed port is a ForwardError that is not
// Prohibited, forwarding switched off one that is; a deadline closes the
// channel.
func TestDialTCP(t *testing.T) {
	srv := sshtest.Start(t, sshtest.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	c, err := dialTest(t, srv, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	conn, err := c.DialTCP(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "ping\n"); err != nil {
		t.Fatal(err)
	}
	conn.(interface{ CloseWrite() error }).CloseWrite()
	got, err := io.ReadAll(conn)
	if err != nil || string(got) != "ping\n" {
		t.Fatalf("echo: %q %v", got, err)
	}
	conn.Close()

	// A deadline that passes closes the channel.
	conn, err = c.DialTCP(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(100 * time.Millisecond))
	start := time.Now()
	_, err = conn.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Errorf("read past the deadline: %v after %s", err, time.Since(start))
	}
	// A cancelled context closes it too.
	cctx, cancel := context.WithCancel(ctx)
	conn, err = c.DialTCP(cctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Error("read after cancel succeeded")
	}

	// Nothing listens there (as the server sees it).
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := dead.Addr().String()
	dead.Close()
	_, err = c.DialTCP(ctx, addr)
	var fe *ForwardError
	if !errors.As(err, &fe) || fe.Prohibited || !strings.Contains(err.Error(), "could not connect to "+addr) {
		t.Errorf("a closed port: %v", err)
	}
	if _, err := c.DialTCP(ctx, "no-port"); err == nil {
		t.Error("an address without a port was accepted")
	}

	// Forwarding off in sshd.
	srv.RestartWith(t, "AllowTcpForwarding no")
	c2, err := dialTest(t, srv, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_, err = c2.DialTCP(ctx, ln.Addr().String())
	if !errors.As(err, &fe) || !fe.Prohibited {
		t.Errorf("forwarding off: %v, want a prohibited ForwardError", err)
	}
	// The restart dropped the first connection: Wait returns.
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Error("Wait did not return after the server went away")
	}
}
