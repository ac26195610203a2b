package send

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mfilter/mfilter/internal/sysexits"
)

// testServer is a go-smtp server that records what it gets, the bytes on
// the wire included, and answers as the test says.
type testServer struct {
	addr string
	srv  *smtp.Server

	mu        sync.Mutex
	wire      bytes.Buffer
	got       []received
	resets    int
	rcptReply map[string]*smtp.SMTPError
	dataReply *smtp.SMTPError
	users     map[string]string // AUTH logins; nil: no AUTH
}

type received struct {
	from, helo, user, mech string
	to                     []string
	data                   string
	tls, utf8              bool
}

func startServer(t *testing.T, configure func(*testServer)) *testServer {
	ts := &testServer{rcptReply: map[string]*smtp.SMTPError{}}
	if configure != nil {
		configure(ts)
	}
	ts.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &testSession{ts: ts, c: c}, nil
	}))
	ts.srv.Domain = "relay.test"
	ts.srv.AllowInsecureAuth = true
	ts.srv.EnableSMTPUTF8 = true
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = ln.Addr().String()
	go ts.srv.Serve(&tapListener{Listener: ln, ts: ts})
	t.Cleanup(func() { ts.srv.Close() })
	return ts
}

func (ts *testServer) dial(ctx context.Context) (net.Conn, error) {
	return net.Dial("tcp", ts.addr)
}

func (ts *testServer) messages() []received {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]received(nil), ts.got...)
}

type tapListener struct {
	net.Listener
	ts *testServer
}

func (l *tapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &tapConn{Conn: c, ts: l.ts}, nil
}

type tapConn struct {
	net.Conn
	ts *testServer
}

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.ts.mu.Lock()
	c.ts.wire.Write(p[:n])
	c.ts.mu.Unlock()
	return n, err
}

type testSession struct {
	ts         *testServer
	c          *smtp.Conn
	from       string
	to         []string
	user, mech string
	utf8       bool
}

func (s *testSession) Reset() {
	s.ts.mu.Lock()
	s.ts.resets++
	s.ts.mu.Unlock()
	s.from, s.to = "", nil
}
func (s *testSession) Logout() error { return nil }
func (s *testSession) Mail(from string, opts *smtp.MailOptions) error {
	s.from, s.utf8 = from, opts != nil && opts.UTF8
	return nil
}
func (s *testSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.ts.mu.Lock()
	reply := s.ts.rcptReply[to]
	s.ts.mu.Unlock()
	if reply != nil {
		return reply
	}
	s.to = append(s.to, to)
	return nil
}
func (s *testSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.ts.mu.Lock()
	defer s.ts.mu.Unlock()
	if s.ts.dataReply != nil {
		return s.ts.dataReply
	}
	_, isTLS := s.c.TLSConnectionState()
	s.ts.got = append(s.ts.got, received{from: s.from, to: s.to, data: string(data), helo: s.c.Hostname(), tls: isTLS, user: s.user, mech: s.mech, utf8: s.utf8})
	return nil
}

// AuthMechanisms and Auth make testSession an smtp.AuthSession.
func (s *testSession) AuthMechanisms() []string {
	if s.ts.users == nil {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

func (s *testSession) Auth(mech string) (sasl.Server, error) {
	check := func(user, pass string) error {
		if s.ts.users[user] != pass || pass == "" {
			return smtp.ErrAuthFailed
		}
		s.user, s.mech = user, mech
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, user, pass string) error { return check(user, pass) }), nil
	case sasl.Login:
		return &loginServer{check: check}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// loginServer is the server side of AUTH LOGIN, which go-sasl lacks.
type loginServer struct {
	check      func(user, pass string) error
	step       int
	user, pass string
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step++
		if resp != nil {
			l.user = string(resp)
			l.step++
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		l.user = string(resp)
		l.step++
		return []byte("Password:"), false, nil
	default:
		l.pass = string(resp)
		return nil, true, l.check(l.user, l.pass)
	}
}

func openTest(t *testing.T, ts *testServer, r Relay) (*Session, error) {
	t.Helper()
	conn, err := ts.dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r.Helo == "" {
		r.Helo = "client.test"
	}
	return Open(context.Background(), conn, r)
}

// TestDotStuffing: dots at the start of lines are doubled on the wire and
// undone by the server; bare LF becomes CRLF; the message arrives whole.
func TestDotStuffing(t *testing.T) {
	ts := startServer(t, nil)
	s, err := openTest(t, ts, Relay{})
	if err != nil {
		t.Fatal(err)
	}
	msg := "Subject: dots\n\n.\n..\n.x\nmid.dle\r\n.crlf\r\nno newline at the end ."
	reply, err := s.Send(context.Background(), Envelope{From: "a@x", To: []string{"b@x"}}, []byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if reply == "" {
		t.Error("no reply text for the DATA")
	}
	got := ts.messages()
	want := strings.ReplaceAll(strings.ReplaceAll(msg, "\r\n", "\n"), "\n", "\r\n") + "\r\n"
	if len(got) != 1 || got[0].data != want {
		t.Fatalf("got %+v, want %q", got, want)
	}
	wire := ts.wire.String()
	for _, w := range []string{"\r\n\r\n..\r\n...\r\n..x\r\nmid.dle\r\n..crlf\r\nno newline at the end .\r\n.\r\n"} {
		if !strings.Contains(wire, w) {
			t.Errorf("the wire lacks %q:\n%q", w, wire)
		}
	}
	if got[0].helo != "client.test" {
		t.Errorf("EHLO %q", got[0].helo)
	}
}

func TestAuth(t *testing.T) {
	ts := startServer(t, func(ts *testServer) { ts.users = map[string]string{"alice": "s3cret"} })
	env := Envelope{From: "a@x", To: []string{"b@x"}}
	for _, mech := range []string{"", "LOGIN", "PLAIN"} {
		s, err := openTest(t, ts, Relay{Auth: &Auth{User: "alice", Password: "s3cret", Mechanism: mech}})
		if err != nil {
			t.Fatalf("%q: %v", mech, err)
		}
		if _, err := s.Send(context.Background(), env, []byte("Subject: x\n\nx\n")); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	got := ts.messages()
	if len(got) != 3 || got[0].mech != "PLAIN" || got[1].mech != "LOGIN" || got[2].mech != "PLAIN" || got[0].user != "alice" {
		t.Fatalf("logins: %+v", got)
	}
	// A wrong password: refused, exit 77.
	_, err := openTest(t, ts, Relay{Auth: &Auth{User: "alice", Password: "wrong"}})
	if ExitCode(err) != sysexits.NoPerm || !strings.Contains(err.Error(), "535") {
		t.Errorf("a wrong password: %v (exit %d, want 77)", err, ExitCode(err))
	}
	// No AUTH offered: a configuration error.
	plain := startServer(t, nil)
	_, err = openTest(t, plain, Relay{Auth: &Auth{User: "alice", Password: "s3cret"}})
	if ExitCode(err) != sysexits.Config || !strings.Contains(err.Error(), "does not offer AUTH") {
		t.Errorf("no AUTH: %v (exit %d, want 78)", err, ExitCode(err))
	}
}

// TestRecipientsAllOrNothing: one refused recipient stops the whole
// message (RSET, no DATA): 5xx makes it permanent (67), 4xx alone
// temporary (75).
func TestRecipientsAllOrNothing(t *testing.T) {
	ts := startServer(t, func(ts *testServer) {
		ts.rcptReply["gone@x"] = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		ts.rcptReply["full@x"] = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"}
	})
	s, err := openTest(t, ts, Relay{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	msg := []byte("Subject: x\n\nx\n")
	_, err = s.Send(context.Background(), Envelope{From: "a@x", To: []string{"ok@x", "full@x", "gone@x"}}, msg)
	if ExitCode(err) != sysexits.NoUser || !strings.Contains(err.Error(), "550 5.1.1 no such user") || !strings.Contains(err.Error(), "2 of 3 recipients refused") {
		t.Errorf("550 and 452: %v (exit %d, want 67)", err, ExitCode(err))
	}
	_, err = s.Send(context.Background(), Envelope{From: "a@x", To: []string{"ok@x", "full@x"}}, msg)
	if ExitCode(err) != sysexits.TempFail || !strings.Contains(err.Error(), "452 4.2.2 mailbox full") {
		t.Errorf("452: %v (exit %d, want 75)", err, ExitCode(err))
	}
	// The session goes on: a good message after the refused ones.
	if _, err := s.Send(context.Background(), Envelope{From: "a@x", To: []string{"ok@x"}}, msg); err != nil {
		t.Fatal(err)
	}
	if got := ts.messages(); len(got) != 1 || len(got[0].to) != 1 {
		t.Fatalf("delivered: %+v (only the last message may go)", got)
	}
}

func TestDataRefusedAndSize(t *testing.T) {
	ts := startServer(t, func(ts *testServer) {
		ts.dataReply = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "spam"}
	})
	ts.srv.MaxMessageBytes = 1000
	s, err := openTest(t, ts, Relay{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Send(context.Background(), Envelope{From: "a@x", To: []string{"b@x"}}, []byte("Subject: x\n\nx\n"))
	if ExitCode(err) != sysexits.Unavailable || !strings.Contains(err.Error(), "554 5.7.1 spam") {
		t.Errorf("554 after DATA: %v (exit %d, want 69)", err, ExitCode(err))
	}
	_, err = s.Send(context.Background(), Envelope{From: "a@x", To: []string{"b@x"}}, bytes.Repeat([]byte("x"), 2000))
	if ExitCode(err) != sysexits.Unavailable || !strings.Contains(err.Error(), "at most 1000") {
		t.Errorf("too big: %v (exit %d, want 69)", err, ExitCode(err))
	}
}

func TestSMTPUTF8(t *testing.T) {
	ts := startServer(t, nil)
	s, err := openTest(t, ts, Relay{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, m := range []struct {
		env  Envelope
		msg  string
		utf8 bool
	}{
		{Envelope{From: "a@x", To: []string{"b@x"}}, "Subject: plain\n\nbody é\n", false},
		{Envelope{From: "a@x", To: []string{"b@x"}}, "Subject: Grüße\n\nbody\n", true},
		{Envelope{From: "jörg@x", To: []string{"b@x"}}, "Subject: x\n\nbody\n", true},
	} {
		if _, err := s.Send(context.Background(), m.env, []byte(m.msg)); err != nil {
			t.Fatal(err)
		}
		got := ts.messages()
		if last := got[len(got)-1]; last.utf8 != m.utf8 {
			t.Errorf("%q from %s: SMTPUTF8 %v, want %v", m.msg, m.env.From, last.utf8, m.utf8)
		}
	}
}

func testCert(t *testing.T, name string) (tls.Certificate, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

func TestStartTLS(t *testing.T) {
	cert, pool := testCert(t, "relay.test")
	ts := startServer(t, nil)
	ts.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	env := Envelope{From: "a@x", To: []string{"b@x"}}
	for _, mode := range []TLSMode{TLSIfOffered, TLSRequired} {
		s, err := openTest(t, ts, Relay{StartTLS: mode, TLS: &tls.Config{ServerName: "relay.test", RootCAs: pool}})
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		if !s.TLS() {
			t.Errorf("%s: not encrypted", mode)
		}
		if _, err := s.Send(context.Background(), env, []byte("Subject: tls\n\n.x\n")); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	got := ts.messages()
	if len(got) != 2 || !got[0].tls || !got[1].tls || got[1].data != "Subject: tls\r\n\r\n.x\r\n" || got[1].helo != "client.test" {
		t.Fatalf("over TLS: %+v", got)
	}
	// A name the certificate does not hold: a configuration error.
	_, err := openTest(t, ts, Relay{StartTLS: TLSRequired, TLS: &tls.Config{ServerName: "other.test", RootCAs: pool}})
	if ExitCode(err) != sysexits.Config || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("wrong name: %v (exit %d, want 78)", err, ExitCode(err))
	}
	// Not offered: required fails, if-offered goes on in the clear.
	plain := startServer(t, nil)
	_, err = openTest(t, plain, Relay{StartTLS: TLSRequired, TLS: &tls.Config{ServerName: "relay.test"}})
	if ExitCode(err) != sysexits.Config || !strings.Contains(err.Error(), "does not offer STARTTLS") {
		t.Errorf("required, not offered: %v (exit %d, want 78)", err, ExitCode(err))
	}
	s, err := openTest(t, plain, Relay{StartTLS: TLSIfOffered, TLS: &tls.Config{ServerName: "relay.test"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Send(context.Background(), env, []byte("Subject: clear\n\nx\n")); err != nil || s.TLS() {
		t.Fatalf("if-offered, not offered: %v, TLS %v", err, s.TLS())
	}
	s.Close()
}

// TestBrokenConnection: a relay that hangs up is a temporary failure.
func TestBrokenConnection(t *testing.T) {
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
			io.WriteString(c, "220 hello\r\n")
			c.Close()
		}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(context.Background(), conn, Relay{})
	var f *Failure
	if !errors.As(err, &f) || !IsTemporary(err) || ExitCode(err) != sysexits.TempFail {
		t.Errorf("a hang-up: %v, want a temporary failure", err)
	}
}
