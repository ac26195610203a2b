package imapfetch

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"

	"github.com/mfilter/mfilter/internal/mtatest"
	"github.com/mfilter/mfilter/internal/runprog"
)

// zlibConf turns on Dovecot's COMPRESS=DEFLATE (Dovecot 2.3).
const zlibConf = "protocol imap {\n  mail_plugins = $mail_plugins imap_zlib\n}\n"

// TestCompressDial: with the plugin the link is compressed, go-imap
// works over it, and compress: none or a server without the plugin
// gives an uncompressed link that works as well.
func TestCompressDial(t *testing.T) {
	for _, tc := range []struct {
		name       string
		extra      string
		noCompress bool
		want       bool
	}{
		{"offered", zlibConf, false, true},
		{"offered, compress none", zlibConf, true, false},
		{"not offered", "", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := mtatest.StartDovecot(t, mtatest.DovecotOptions{Users: []string{"alice"}, Extra: tc.extra})
			w := newWorld(t, d)
			w.set.NoCompress = tc.noCompress
			ids := w.deliverN(t, 40)
			conn, err := Dial(context.Background(), &w.set, runprog.Exec{}, imapclient.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if conn.Compressed != tc.want {
				t.Errorf("compressed %v, want %v", conn.Compressed, tc.want)
			}
			if !conn.Caps.Has(imap.CapUIDPlus) || !conn.Caps.Has(imap.CapIdle) {
				t.Errorf("capabilities after login %v: no UIDPLUS or IDLE", conn.Caps)
			}
			if conn.C.State() != imap.ConnStateAuthenticated {
				t.Errorf("state %v, want authenticated", conn.C.State())
			}
			conn.Close()
			rep := w.run(t)
			if rep.Messages != 40 {
				t.Errorf("filed %d, want 40", rep.Messages)
			}
			checkOnce(t, w.filed(t), ids)
			t.Logf("40 messages: %d bytes over the link", rep.Wire)
		})
	}
}

// TestSessionLogin logs in with passwords that need quoting (a quote,
// a backslash, a space) and a literal (8-bit bytes), by LOGIN and
// AUTHENTICATE PLAIN with and without SASL-IR; a wrong password is an
// AuthError.
func TestSessionLogin(t *testing.T) {
	pws := map[string]string{"alice": mtatest.Password("alice"), "bob": `p"w\ x`, "carol": "pässwörd"}
	// A second passdb, tried after the first refuses: the passwords
	// of mtatest's are "pw-" and the user name.
	dir, err := os.MkdirTemp("", "mfilter-passdb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	file := filepath.Join(dir, "passwd")
	if err := os.WriteFile(file, []byte("bob:{PLAIN}"+pws["bob"]+"\ncarol:{PLAIN}"+pws["carol"]+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := mtatest.StartDovecot(t, mtatest.DovecotOptions{Users: []string{"alice", "bob", "carol"},
		Extra: "passdb {\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u " + file + "\n}\n"})
	for u, pw := range pws {
		s := Settings{Host: d.IMAPAddr, Plain: true, ServerName: "127.0.0.3", Folder: "INBOX", User: u,
			PasswordCommand: []string{"echo", pw}, Timeout: 10 * time.Second}
		conn, err := Dial(context.Background(), &s, runprog.Exec{}, imapclient.Options{})
		if err != nil {
			t.Fatalf("login of %s: %v", u, err)
		}
		if _, err := conn.C.Select("INBOX", nil).Wait(); err != nil {
			t.Errorf("%s: select: %v", u, err)
		}
		conn.Close()
		// LOGIN with synchronizing literals: as if the server lacked
		// LITERAL+.
		ss := rawSession(t, &s)
		delete(ss.caps, imap.CapLiteralPlus)
		delete(ss.caps, imap.CapLiteralMinus)
		if err := ss.login(u, pw); err != nil {
			t.Errorf("LOGIN of %s without LITERAL+: %v", u, err)
		}
		ss.conn.Close()
		for _, ir := range []bool{true, false} {
			if err := authPlain(t, &s, u, pw, ir); err != nil {
				t.Errorf("AUTHENTICATE PLAIN of %s (SASL-IR %v): %v", u, ir, err)
			}
		}
	}
	s := Settings{Host: d.IMAPAddr, Plain: true, ServerName: "127.0.0.3", Folder: "INBOX", User: "bob",
		PasswordCommand: []string{"echo", pws["carol"]}, Timeout: 10 * time.Second}
	_, err = Dial(context.Background(), &s, runprog.Exec{}, imapclient.Options{})
	var auth *AuthError
	if !errors.As(err, &auth) {
		t.Errorf("a wrong password: %v, want an AuthError", err)
	}
}

// rawSession is a session greeted, before login.
func rawSession(t *testing.T, s *Settings) *session {
	raw, err := net.Dial("tcp", s.Host)
	if err != nil {
		t.Fatal(err)
	}
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	ss, err := startSession(context.Background(), s, raw)
	if err != nil {
		t.Fatal(err)
	}
	return ss
}

// authPlain runs AUTHENTICATE PLAIN on a session of its own.
func authPlain(t *testing.T, s *Settings, user, pw string, ir bool) error {
	ss := rawSession(t, s)
	defer ss.conn.Close()
	if !ss.caps.Has(imap.CapSASLIR) {
		t.Fatalf("Dovecot lacks SASL-IR: %v", ss.caps)
	}
	if !ir {
		delete(ss.caps, imap.CapSASLIR)
	}
	return ss.authenticate(sasl.NewPlainClient("", user, pw))
}

// fakeServer serves one connection: a greeting, LOGIN and COMPRESS
// accepted, then after the COMPRESS OK the bytes of after.
func fakeServer(t *testing.T, after []byte) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n"))
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			tag, cmd, _ := strings.Cut(strings.TrimSpace(line), " ")
			switch {
			case strings.HasPrefix(cmd, "LOGIN"):
				c.Write([]byte(tag + " OK [CAPABILITY IMAP4rev1 IDLE COMPRESS=DEFLATE] in\r\n"))
			case cmd == "COMPRESS DEFLATE":
				c.Write([]byte(tag + " OK DEFLATE active\r\n"))
				c.Write(after)
				time.Sleep(2 * time.Second)
				return
			default:
				c.Write([]byte(tag + " BAD what\r\n"))
			}
		}
	}()
	return ln.Addr().String()
}

// TestCompressCorrupt: a server whose DEFLATE stream is corrupt or
// cut is an error of the connection, soon, not a hang or garbage.
func TestCompressCorrupt(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after []byte
		want  string
	}{
		// go-imap reports the inflate error, or the write of its
		// command to the connection the error closed.
		{"corrupt", []byte("* this is no deflate stream\r\n\xff\xff\xff\xff"), "capabilities"},
		{"cut", nil, "capabilities"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Settings{Host: fakeServer(t, tc.after), Plain: true, ServerName: "127.0.0.1", Folder: "INBOX", User: "alice",
				PasswordCommand: []string{"echo", "pw"}, Timeout: 5 * time.Second}
			start := time.Now()
			_, err := Dial(context.Background(), &s, runprog.Exec{}, imapclient.Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("dial: %v, want an error with %q", err, tc.want)
			}
			if d := time.Since(start); d > 4*time.Second {
				t.Errorf("the error took %s", d)
			}
			t.Logf("%v", err)
		})
	}
}
