package main

// fetch-and-file from IMAP with COMPRESS=DEFLATE (RFC 4978): Dovecot's
// imap_zlib plugin, bytes over the link counted by a proxy.

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// zlibConf turns on Dovecot's COMPRESS=DEFLATE (Dovecot 2.3).
const zlibConf = "protocol imap {\n  mail_plugins = $mail_plugins imap_zlib\n}\n"

// countProxy forwards TCP connections to target and counts the bytes,
// both ways, of all of them.
type countProxy struct {
	ln    net.Listener
	bytes atomic.Int64
}

func startCountProxy(t *testing.T, target string) *countProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &countProxy{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c, target)
		}
	}()
	return p
}

func (p *countProxy) serve(c net.Conn, target string) {
	defer c.Close()
	s, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer s.Close()
	var wg sync.WaitGroup
	for _, d := range [][2]net.Conn{{c, s}, {s, c}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, _ := io.Copy(d[1], d[0])
			p.bytes.Add(n)
			d[1].(*net.TCPConn).CloseWrite()
		}()
	}
	wg.Wait()
}

// TestIMAPCompress files the same corpus messages over an uncompressed
// link (compress: none) and a compressed one (the default), each
// exactly once; the compressed link carries fewer bytes.
func TestIMAPCompress(t *testing.T) {
	e := newIMAPEnv(t, zlibConf)
	proxy := startCountProxy(t, e.d.IMAPAddr)
	url := "imap://" + proxy.ln.Addr().String() + "/INBOX"
	var all [][]byte
	var wire [2]int64
	for i, mode := range []string{"none", "auto"} {
		e.setFetch(e.source(url, "tls: none", "compress: "+mode))
		all = append(all, e.deliver(300, "compress-"+mode)...)
		before := proxy.bytes.Load()
		code, out := e.run(e.args("-v")...)
		if code != 0 {
			t.Fatalf("compress: %s: exit %d: %s", mode, code, out)
		}
		if got := strings.Contains(out, "COMPRESS=DEFLATE"); got != (mode == "auto") {
			t.Errorf("compress: %s: the log says compressed %v:\n%s", mode, got, out)
		}
		e.check(all)
		// The proxy counts a connection when both its halves end.
		for deadline := time.Now().Add(5 * time.Second); proxy.bytes.Load() == before && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		wire[i] = proxy.bytes.Load() - before
	}
	ratio := float64(wire[1]) / float64(wire[0])
	t.Logf("300 corpus messages: %d bytes over the link uncompressed, %d compressed (%.2fx)", wire[0], wire[1], ratio)
	if ratio > 0.8 {
		t.Errorf("compressed link carried %.2fx the uncompressed bytes", ratio)
	}
}

// TestIMAPWatchCompressed: --watch over a compressed link: IDLE (the
// writer flushes after every command and DONE) hears of new mail, which
// is filed within 3 seconds.
func TestIMAPWatchCompressed(t *testing.T) {
	e := newIMAPEnv(t, zlibConf)
	all := e.deliver(5, "before")
	w := startWatch(t, e)
	w.waitLine("COMPRESS=DEFLATE", 10*time.Second)
	w.waitLine("filed 5 messages", 10*time.Second)
	time.Sleep(300 * time.Millisecond) // into IDLE
	for i := 0; i < 3; i++ {
		m := spoolMessages(t, 1, fmt.Sprintf("late%d", i))[0]
		all = append(all, m)
		start := time.Now()
		e.d.Save(t, "alice", m[strings.IndexByte(string(m), '\n')+1:])
		w.waitLine("filed 1 messages", 3*time.Second)
		t.Logf("message %d filed %s after its delivery", i, time.Since(start).Round(time.Millisecond))
	}
	w.stop()
	e.check(all)
}
