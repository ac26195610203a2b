// Package remote reaches the mail server: an SSH client (known_hosts,
// ssh-agent, identity files, ssh config) and the spool protocol that claims
// a user's spool by renaming it under its dotlock (or, where its directory
// is not writable, by a locked copy and truncation), streams it compressed,
// and removes it only when the caller says every message is filed. It knows
// nothing about rules or folders.
package remote

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// SSHConfig says how to reach and log in to the server.
type SSHConfig struct {
	Host string // what the user named: a host, an address, or an ssh config alias
	// Addr is host:port to dial (from HostName and Port).
	Addr     string
	User     string
	Identity []string // private key files, tried after the agent
	// KnownHosts are the known_hosts files; host keys must be in them.
	KnownHosts []string
	// AcceptNewHostKey records the key of a host that is not known yet,
	// like OpenSSH's StrictHostKeyChecking=accept-new. A changed key is
	// refused regardless.
	AcceptNewHostKey bool
	// Agent is the ssh-agent socket ("" for none).
	Agent string
	// Timeout bounds the TCP connect and the SSH handshake.
	Timeout time.Duration
	// KeepAlive is the interval of keepalive requests; a connection that
	// misses three in a row is closed.
	KeepAlive time.Duration
	// Warn receives notes (a key file that could not be used, a host key
	// that was recorded).
	Warn func(string)
}

// HostKeyError is a host key problem, which configuration must solve:
// unknown host, changed key, or a known_hosts file that cannot be used.
type HostKeyError struct {
	Host    string
	Changed bool
	Line    string // the known_hosts line that would accept the key offered
	File    string // where it would go; for a bad file, FILE:LINE
	// Offered are the server's host keys, one per type, as ssh-keygen -l
	// shows them ("256 SHA256:... (ED25519)"), for an unknown host.
	Offered []string
	// BadFile is set when a known_hosts file cannot be used (Err says
	// why, File where).
	BadFile bool
	Err     error
}

func (e *HostKeyError) Error() string {
	if e.BadFile {
		return fmt.Sprintf("known_hosts %s: %v", e.File, e.Err)
	}
	if e.Changed {
		return fmt.Sprintf("host key for %s has CHANGED (possible man-in-the-middle attack); the server offered %s; if the change is legitimate, replace its entry in %s", e.Host, e.Line, e.File)
	}
	keys := ""
	if len(e.Offered) > 0 {
		keys = "; the server offers these host keys:\n  " + strings.Join(e.Offered, "\n  ") + "\n"
	} else {
		keys = "; "
	}
	return fmt.Sprintf("host %s is not in %s%scheck the key fingerprint with the server's administrator (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the server), then add this line:\n%s\n(or run once with --accept-new-host-key)", e.Host, e.File, keys, e.Line)
}

func (e *HostKeyError) Unwrap() error { return e.Err }

// Client is an SSH connection to the mail server.
type Client struct {
	c    *ssh.Client
	conn net.Conn
	done chan struct{}
	once sync.Once
}

// Dial connects and authenticates.
func Dial(ctx context.Context, cfg SSHConfig) (*Client, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = 15 * time.Second
	}
	warn := cfg.Warn
	if warn == nil {
		warn = func(string) {}
	}
	hostKeyCB, algos, err := hostKeyCallback(cfg, warn)
	if err != nil {
		return nil, err
	}
	auths, closeAgent, err := authMethods(cfg, warn)
	if err != nil {
		return nil, err
	}
	defer closeAgent()
	clientCfg := &ssh.ClientConfig{
		User:              cfg.User,
		Auth:              auths,
		HostKeyCallback:   hostKeyCB,
		HostKeyAlgorithms: algos,
		Timeout:           cfg.Timeout,
	}
	d := net.Dialer{Timeout: cfg.Timeout}
	conn, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cfg.Addr, err)
	}
	// ClientConfig.Timeout covers only the TCP connect: bound the
	// handshake too, so that a server that stops answering cannot hang us.
	conn.SetDeadline(time.Now().Add(cfg.Timeout))
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	sc, chans, reqs, err := ssh.NewClientConn(quickAck(conn), cfg.Addr, clientCfg)
	stop()
	if err != nil {
		conn.Close()
		var hk *HostKeyError
		if errors.As(err, &hk) {
			if !hk.Changed && !hk.BadFile {
				describeOffered(ctx, cfg, hk)
			}
			return nil, hk
		}
		return nil, fmt.Errorf("ssh to %s: %w", cfg.Addr, err)
	}
	conn.SetDeadline(time.Time{})
	c := &Client{c: ssh.NewClient(sc, chans, reqs), conn: conn, done: make(chan struct{})}
	go c.keepAlive(cfg.KeepAlive)
	return c, nil
}

// keepAlive closes the connection when the server stops answering.
func (c *Client) keepAlive(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	missed := 0
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		reply := make(chan error, 1)
		go func() {
			_, _, err := c.c.SendRequest("keepalive@openssh.com", true, nil)
			reply <- err
		}()
		select {
		case err := <-reply:
			if err != nil {
				c.Close()
				return
			}
			missed = 0
		case <-time.After(every):
			if missed++; missed >= 3 {
				c.Close()
				return
			}
		case <-c.done:
			return
		}
	}
}

// Close closes the connection.
func (c *Client) Close() error {
	var err error
	c.once.Do(func() {
		close(c.done)
		err = c.c.Close()
	})
	return err
}

// Run runs a command on the server with stdin and stdout, and returns its
// exit status (an *ssh.ExitError for non-zero). Cancelling ctx closes the
// session.
func (c *Client) Run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) error {
	s, err := c.c.NewSession()
	if err != nil {
		return fmt.Errorf("ssh session: %w", err)
	}
	defer s.Close()
	s.Stdin, s.Stdout, s.Stderr = stdin, stdout, stderr
	stop := context.AfterFunc(ctx, func() {
		s.Signal(ssh.SIGKILL)
		s.Close()
	})
	defer stop()
	err = s.Run(cmd)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Stream starts a command and returns its stdout; Wait reports how it
// ended. The caller must call Wait.
func (c *Client) Stream(ctx context.Context, cmd string, stdin io.Reader) (io.Reader, func() error, error) {
	s, err := c.c.NewSession()
	if err != nil {
		return nil, nil, fmt.Errorf("ssh session: %w", err)
	}
	s.Stdin = stdin
	out, err := s.StdoutPipe()
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	var errBuf strings.Builder
	s.Stderr = &limitWriter{w: &errBuf, n: 4096}
	if err := s.Start(cmd); err != nil {
		s.Close()
		return nil, nil, fmt.Errorf("ssh start: %w", err)
	}
	stop := context.AfterFunc(ctx, func() {
		s.Signal(ssh.SIGKILL)
		s.Close()
	})
	wait := func() error {
		defer stop()
		defer s.Close()
		err := s.Wait()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && errBuf.Len() > 0 {
			return fmt.Errorf("%w: %s", err, strings.TrimSpace(errBuf.String()))
		}
		return err
	}
	return out, wait, nil
}

type limitWriter struct {
	w io.Writer
	n int
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}

// hostKeyCallback checks host keys against known_hosts, strictly: an
// unknown host is refused with the line to add (unless AcceptNewHostKey),
// a changed key always. It also orders the host key algorithms by what
// known_hosts holds, so that a server with several key types is not
// refused over a type known_hosts lacks (golang/go#29286).
func hostKeyCallback(cfg SSHConfig, warn func(string)) (ssh.HostKeyCallback, []string, error) {
	var files []string
	for _, f := range cfg.KnownHosts {
		if _, err := os.Stat(f); err == nil {
			files = append(files, f)
		}
	}
	writeTo := ""
	if len(cfg.KnownHosts) > 0 {
		writeTo = cfg.KnownHosts[0]
	}
	var db *knownhosts.HostKeyDB
	if len(files) > 0 {
		for _, f := range files {
			if err := checkKnownHosts(f, warn); err != nil {
				return nil, nil, err
			}
		}
		var err error
		db, err = knownhosts.NewDB(files...)
		if err != nil {
			return nil, nil, &HostKeyError{BadFile: true, File: strings.Join(files, ", "), Err: err}
		}
	}
	var algos []string
	if db != nil {
		algos = db.HostKeyAlgorithms(cfg.Addr)
	}
	cb := func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		var err error
		if db != nil {
			err = db.HostKeyCallback()(hostname, remote, key)
			if err == nil {
				return nil
			}
		} else {
			err = errors.New("no known_hosts file")
		}
		line := knownhosts.Line([]string{knownhosts.Normalize(hostname)}, key)
		if db != nil && knownhosts.IsHostKeyChanged(err) {
			return &HostKeyError{Host: hostname, Changed: true, Line: line, File: strings.Join(files, ", "), Err: err}
		}
		if db != nil && !knownhosts.IsHostUnknown(err) {
			return fmt.Errorf("host key check for %s: %w", hostname, err)
		}
		if !cfg.AcceptNewHostKey || writeTo == "" {
			return &HostKeyError{Host: hostname, Line: line, File: writeTo, Err: err}
		}
		if err := appendKnownHost(writeTo, line); err != nil {
			return err
		}
		warn(fmt.Sprintf("recorded the host key of %s in %s: %s", hostname, writeTo, ssh.FingerprintSHA256(key)))
		return nil
	}
	return cb, algos, nil
}

func appendKnownHost(path, line string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("record host key: %w", err)
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("record host key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// authMethods offers the agent's keys, then the identity files'. Keys
// that cannot be used (missing, passphrase-protected) are skipped with a
// note: the agent may hold them.
func authMethods(cfg SSHConfig, warn func(string)) ([]ssh.AuthMethod, func(), error) {
	var signers []ssh.Signer
	closer := func() {}
	var agentSigners func() ([]ssh.Signer, error)
	if cfg.Agent != "" {
		conn, err := net.Dial("unix", cfg.Agent)
		if err != nil {
			warn(fmt.Sprintf("ssh-agent at %s: %v", cfg.Agent, err))
		} else {
			ag := agent.NewClient(conn)
			agentSigners = ag.Signers
			closer = func() { conn.Close() }
		}
	}
	for _, f := range cfg.Identity {
		data, err := os.ReadFile(f)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				warn(fmt.Sprintf("identity %s: %v", f, err))
			}
			continue
		}
		s, err := ssh.ParsePrivateKey(data)
		if err != nil {
			var pm *ssh.PassphraseMissingError
			if errors.As(err, &pm) {
				if agentSigners == nil {
					warn(fmt.Sprintf("identity %s is protected by a passphrase; load it into ssh-agent", f))
				}
				continue
			}
			warn(fmt.Sprintf("identity %s: %v", f, err))
			continue
		}
		signers = append(signers, s)
	}
	var auths []ssh.AuthMethod
	if agentSigners != nil || len(signers) > 0 {
		auths = append(auths, ssh.PublicKeysCallback(func() ([]ssh.Signer, error) {
			var all []ssh.Signer
			if agentSigners != nil {
				if s, err := agentSigners(); err == nil {
					all = append(all, s...)
				}
			}
			return append(all, signers...), nil
		}))
	}
	if len(auths) == 0 {
		return nil, closer, errors.New("no SSH key to log in with: start ssh-agent with your key loaded, or name a key with --identity")
	}
	return auths, closer, nil
}

// JoinHostPort formats host and port for dialing.
func JoinHostPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// checkKnownHosts reads a known_hosts file as OpenSSH does: a line it
// cannot parse is skipped (with a note naming it), but a file that holds
// nothing else, or that cannot be read, is a configuration error naming
// FILE:LINE, not a failure to retry.
func checkKnownHosts(path string, warn func(string)) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return &HostKeyError{BadFile: true, File: path, Err: err}
	}
	var firstBad error
	badAt, valid := 0, 0
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if _, _, _, _, _, err := ssh.ParseKnownHosts([]byte(line)); err != nil {
			if firstBad == nil {
				firstBad, badAt = err, n+1
			}
			warn(fmt.Sprintf("known_hosts %s:%d: ignored: %v", path, n+1, err))
			continue
		}
		valid++
	}
	if valid == 0 && firstBad != nil {
		return &HostKeyError{BadFile: true, File: fmt.Sprintf("%s:%d", path, badAt), Err: firstBad}
	}
	return nil
}

// probeAlgorithms are the host key types asked for, one handshake each,
// to show an unknown host's keys as ssh-keyscan would; ed25519 first, the
// type the documentation's ssh-keyscan -t ed25519 records.
var probeAlgorithms = []string{
	ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521, ssh.KeyAlgoRSASHA512,
}

// errProbed ends a handshake once the host key is seen.
var errProbed = errors.New("host key probed")

// describeOffered fills hk.Offered with every host key the server offers
// (a handshake per key type, stopped at the host key) and makes hk.Line
// the ed25519 key's line when there is one.
func describeOffered(ctx context.Context, cfg SSHConfig, hk *HostKeyError) {
	var lines []string
	for _, algo := range probeAlgorithms {
		var got ssh.PublicKey
		clientCfg := &ssh.ClientConfig{
			User:              cfg.User,
			HostKeyAlgorithms: []string{algo},
			HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
				got = key
				return errProbed
			},
			Timeout: cfg.Timeout,
		}
		d := net.Dialer{Timeout: cfg.Timeout}
		conn, err := d.DialContext(ctx, "tcp", cfg.Addr)
		if err != nil {
			break
		}
		conn.SetDeadline(time.Now().Add(cfg.Timeout))
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		if c, _, _, err := ssh.NewClientConn(conn, cfg.Addr, clientCfg); err == nil {
			c.Close()
		}
		stop()
		conn.Close()
		if got == nil {
			continue
		}
		hk.Offered = append(hk.Offered, keyFingerprint(got))
		lines = append(lines, knownhosts.Line([]string{knownhosts.Normalize(hk.Host)}, got))
	}
	if len(lines) > 0 {
		hk.Line = lines[0] // ed25519 when offered
	}
}

// keyFingerprint shows a key as ssh-keygen -l does: bits, SHA256
// fingerprint, type.
func keyFingerprint(key ssh.PublicKey) string {
	bits, name := 0, strings.ToUpper(strings.TrimPrefix(key.Type(), "ssh-"))
	if ck, ok := key.(ssh.CryptoPublicKey); ok {
		switch k := ck.CryptoPublicKey().(type) {
		case *rsa.PublicKey:
			bits = k.N.BitLen()
		case *ecdsa.PublicKey:
			bits, name = k.Curve.Params().BitSize, "ECDSA"
		case ed25519.PublicKey:
			bits = 256
		}
	}
	return fmt.Sprintf("%d %s (%s)", bits, ssh.FingerprintSHA256(key), name)
}
