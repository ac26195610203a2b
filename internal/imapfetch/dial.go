package imapfetch

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"

	"github.com/mfilter/mfilter/internal/runprog"
)

// secretTimeout bounds a password or token program.
const secretTimeout = 2 * time.Minute

// Conn is a logged-in connection to the server.
type Conn struct {
	C          *imapclient.Client
	Caps       imap.CapSet
	Compressed bool // COMPRESS=DEFLATE is on
	wire       *countConn
	stop       func() bool
}

// Close logs out (briefly) and closes the connection.
func (c *Conn) Close() error {
	c.stop()
	done := make(chan struct{})
	go func() {
		c.C.Logout().Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	return c.C.Close()
}

// Dial connects with the settings' TLS, and logs in with the password or
// token their program prints. opts may carry a unilateral data handler.
// The connection is closed when ctx ends. With compress: auto (the
// default) mfilter greets and logs in itself and hands go-imap a
// compressed link where the server offers COMPRESS=DEFLATE (session.go);
// with compress: none go-imap does all.
func Dial(ctx context.Context, s *Settings, run runprog.Runner, opts imapclient.Options) (*Conn, error) {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	raw, err := (&net.Dialer{}).DialContext(dctx, "tcp", s.Host)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", s.Host, err)
	}
	cc := &countConn{Conn: raw}
	if s.NoCompress {
		return dialClient(ctx, dctx, s, run, opts, cc, timeout)
	}
	return dialSession(ctx, dctx, s, run, opts, cc, timeout)
}

// dialClient lets go-imap greet, log in and ask for the capabilities.
func dialClient(ctx, dctx context.Context, s *Settings, run runprog.Runner, opts imapclient.Options, cc *countConn, timeout time.Duration) (*Conn, error) {
	c, err := newClient(dctx, s, cc, &opts)
	if err != nil {
		cc.Close()
		return nil, fmt.Errorf("connect to %s: %w", s.Host, err)
	}
	conn := &Conn{C: c, wire: cc, stop: context.AfterFunc(ctx, func() { c.Close() })}
	// The greeting, TLS and login get the connect timeout; later
	// reads the library's own.
	cc.SetDeadline(time.Now().Add(timeout))
	if err := conn.login(ctx, s, run); err != nil {
		conn.stop()
		c.Close()
		return nil, err
	}
	cc.SetDeadline(time.Time{})
	return conn, nil
}

// newClient starts the IMAP session on conn: TLS first (imaps), STARTTLS
// (imap), or none (tls: none, loopback only).
func newClient(ctx context.Context, s *Settings, conn net.Conn, opts *imapclient.Options) (*imapclient.Client, error) {
	if s.Plain {
		c := imapclient.New(conn, opts)
		return c, c.WaitGreeting()
	}
	cfg, err := tlsConfig(s)
	if err != nil {
		return nil, err
	}
	if s.TLS {
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, err
		}
		c := imapclient.New(tc, opts)
		return c, c.WaitGreeting()
	}
	opts.TLSConfig = cfg
	return imapclient.NewStartTLS(conn, opts)
}

// countConn counts the bytes over the connection, both ways.
type countConn struct {
	net.Conn
	n atomic.Int64
}

func (c *countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// Wire is the number of bytes over the connection so far.
func (c *Conn) Wire() int64 { return c.wire.n.Load() }

// tlsConfig verifies the server's certificate against the system's roots
// or the ca: file.
func tlsConfig(s *Settings) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: s.ServerName, MinVersion: tls.VersionTLS12}
	if s.CA == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(s.CA)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca %s: no PEM certificate in it", s.CA)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// login authenticates: LOGIN with a password, or XOAUTH2/OAUTHBEARER
// with a token (a fresh one on every connection).
func (c *Conn) login(ctx context.Context, s *Settings, run runprog.Runner) error {
	caps, err := c.C.Capability().Wait()
	if err != nil {
		return fmt.Errorf("%s: capabilities: %w", s.Host, err)
	}
	if len(s.TokenCommand) > 0 {
		tok, err := secret(ctx, run, s.TokenCommand)
		if err != nil {
			return err
		}
		if err := c.C.Authenticate(tokenClient(caps, s.User, tok)); err != nil {
			return &AuthError{Host: s.Host, User: s.User, Err: err}
		}
	} else {
		pw, err := secret(ctx, run, s.PasswordCommand)
		if err != nil {
			return err
		}
		if err := c.C.Login(s.User, pw).Wait(); err != nil {
			return &AuthError{Host: s.Host, User: s.User, Err: err}
		}
	}
	// The capabilities may change after login (COMPRESS, UIDPLUS).
	c.Caps, err = c.C.Capability().Wait()
	if err != nil {
		return fmt.Errorf("%s: capabilities: %w", s.Host, err)
	}
	return nil
}

// AuthError is a refused login: a setting to fix, not a passing failure.
type AuthError struct {
	Host, User string
	Err        error
}

func (e *AuthError) Error() string {
	return fmt.Sprintf("%s refused the login of %s: %v", e.Host, e.User, e.Err)
}
func (e *AuthError) Unwrap() error { return e.Err }

// secret runs a password or token program (from argv, never a shell) and
// returns the first line of its output.
func secret(ctx context.Context, run runprog.Runner, argv []string) (string, error) {
	res, err := run.Run(ctx, argv, nil, runprog.Options{Timeout: secretTimeout, Stdout: true, MaxStdout: 64 << 10})
	if err != nil {
		return "", fmt.Errorf("%s: %w", argv[0], err)
	}
	if res.Exit != 0 {
		return "", fmt.Errorf("%s", runprog.Describe(argv, res))
	}
	line, _, _ := bytes.Cut(res.Stdout, []byte("\n"))
	pw := strings.TrimSuffix(string(line), "\r")
	if pw == "" {
		return "", fmt.Errorf("%s printed nothing", argv[0])
	}
	return pw, nil
}

// tokenClient is OAUTHBEARER, or XOAUTH2 where the server offers only
// that.
func tokenClient(caps imap.CapSet, user, tok string) sasl.Client {
	if caps.Has(imap.AuthCap("OAUTHBEARER")) || !caps.Has(imap.AuthCap("XOAUTH2")) {
		return sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: user, Token: tok})
	}
	return xoauth2{user: user, token: tok}
}

// xoauth2 is the XOAUTH2 SASL mechanism (Google's, Microsoft's), which
// go-sasl dropped: one message, and on failure an empty reply to the
// server's JSON error.
type xoauth2 struct{ user, token string }

func (x xoauth2) Start() (string, []byte, error) {
	return "XOAUTH2", []byte("user=" + x.user + "\x01auth=Bearer " + x.token + "\x01\x01"), nil
}

func (x xoauth2) Next(challenge []byte) ([]byte, error) {
	return []byte{}, nil
}

// dialSession greets, logs in and turns compression on itself, then
// hands go-imap the connection, logged in.
func dialSession(ctx, dctx context.Context, s *Settings, run runprog.Runner, opts imapclient.Options, cc *countConn, timeout time.Duration) (*Conn, error) {
	stop := context.AfterFunc(ctx, func() { cc.Close() })
	cc.SetDeadline(time.Now().Add(timeout))
	ss, err := startSession(dctx, s, cc)
	if err == nil {
		err = ss.auth(ctx, s, run, timeout)
	}
	compressed := false
	if err == nil && ss.caps.Has(capCompress) {
		err = ss.compress()
		compressed = err == nil
	}
	stop()
	if err != nil {
		cc.Close()
		var auth *AuthError
		if errors.As(err, &auth) {
			return nil, err
		}
		return nil, fmt.Errorf("connect to %s: %w", s.Host, err)
	}
	cc.SetDeadline(time.Time{})
	c := imapclient.New(ss.handoff(compressed), &opts)
	conn := &Conn{C: c, Compressed: compressed, wire: cc, stop: context.AfterFunc(ctx, func() { c.Close() })}
	// Asked again over the link go-imap now holds: what the server
	// says, not the greeting made up for go-imap, and a first
	// exchange through the compression.
	if conn.Caps, err = c.Capability().Wait(); err != nil {
		conn.stop()
		c.Close()
		return nil, fmt.Errorf("%s: capabilities: %w", s.Host, err)
	}
	return conn, nil
}

// startSession reads the greeting over TLS, STARTTLS or (tls: none)
// neither, and the capabilities.
func startSession(ctx context.Context, s *Settings, conn net.Conn) (*session, error) {
	var cfg *tls.Config
	if !s.Plain {
		var err error
		if cfg, err = tlsConfig(s); err != nil {
			return nil, err
		}
	}
	if s.TLS {
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		conn = tc
	}
	ss := newSession(conn)
	starttls := !s.TLS && !s.Plain
	if err := ss.greeting(starttls); err != nil {
		return nil, err
	}
	if starttls {
		if err := ss.startTLS(ctx, cfg); err != nil {
			return nil, err
		}
	}
	return ss, ss.capability()
}

// auth logs in with the password or token (a fresh one each time), then
// learns the capabilities of the logged-in session (COMPRESS, UIDPLUS).
func (ss *session) auth(ctx context.Context, s *Settings, run runprog.Runner, timeout time.Duration) error {
	if ss.authd {
		return nil
	}
	argv := s.PasswordCommand
	if len(s.TokenCommand) > 0 {
		argv = s.TokenCommand
	}
	sec, err := secret(ctx, run, argv)
	if err != nil {
		return err
	}
	// The program may have asked the user for a passphrase.
	ss.conn.SetDeadline(time.Now().Add(timeout))
	if len(s.TokenCommand) > 0 {
		err = ss.authenticate(tokenClient(ss.caps, s.User, sec))
	} else {
		err = ss.login(s.User, sec)
	}
	var refused *imap.Error
	if errors.As(err, &refused) {
		return &AuthError{Host: s.Host, User: s.User, Err: err}
	}
	if err != nil {
		return err
	}
	return ss.capability()
}
