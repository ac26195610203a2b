package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mfilter/mfilter/internal/fetch"
	"github.com/mfilter/mfilter/internal/send"
	"github.com/mfilter/mfilter/internal/sysexits"
	"github.com/mfilter/mfilter/remote"
)

const sendUsage = `usage: mfilter send [-t] [-i|-oi] [-f SENDER] [-F NAME] [-v] [options] [--] [RECIPIENT...] < message
       mfilter send --flush [options]      (also -q)
       mfilter send --list [options]       (also -bp)

Sends a message the way sendmail does, through the SSH connection to the
mail server (the rules' send: section, else fetch:) and the SMTP relay as
the server sees it (send: relay:, default localhost:25).

  -t            recipients from To:, Cc: and Bcc: too (Bcc: is always removed)
  -i, -oi       a line with a lone dot does not end the message
  -f, -r ADDR   envelope sender (default: the From: address, else user@host)
  -F NAME       full name for a From: field that is added
  -N DSN        never, or success,failure,delay; -R full|hdrs; -V ENVID
  -v            say what happens
  -odq          queue the message without trying to send it
  Accepted and ignored: -oe*, -odb, -odi, -odf, -om, -oL*, other -o and -O
  options, -B TYPE, -G, -U, -m, -n, -h N, -L TAG, -X FILE, -d X, -p P.

  --rules FILE  --host --port --user --identity --known-hosts
  --accept-new-host-key --timeout D   (SSH, as fetch-and-file)
  --relay HOST:PORT   the SMTP server as the SSH server sees it
  --queue[=true|accept]  keep a message that cannot go yet (exit 75, or 0
                with accept); --no-queue: do not; --queue-dir DIR
  --flush       send what is queued; --list: show it

Exit status: 0 sent (or queued with -odq or queue: accept), 64 usage,
65 -t found no recipient, 67 a recipient refused (5xx; nothing sent),
69 the message refused (5xx), 75 try again later (no link, 4xx; queued
with --queue), 77 authentication refused or a password file others can
read, 78 configuration error.
`

// sendConfig is everything mfilter send and tunnel run with, from the
// flags, the rules' send: section, and its fetch: section.
type sendConfig struct {
	ssh      remote.Settings
	relay    string
	relayOpt send.Relay
	set      send.Settings
	queue    send.QueueMode
	queueDir string
	listen   string
	home     string
	agent    string
	helo     string
	domain   string
}

const sendProg = "mfilter send"

func runSend(ctx context.Context, env *environ, args []string) int {
	o, err := parseSendArgs(args)
	if err != nil {
		code := env.exitCode(sendProg, err)
		fmt.Fprint(env.stderr, sendUsage)
		return code
	}
	if o.help {
		fmt.Fprint(env.stdout, sendUsage)
		return sysexits.OK
	}
	r := &sendRun{env: env, o: o}
	return env.exitCode(sendProg, r.run(ctx))
}

// sendRun is one run of mfilter send; each step is a method.
type sendRun struct {
	env    *environ
	o      *sendOpts
	cfg    *sendConfig
	q      *send.Queue
	dialer *sshDialer
	mailer *send.Mailer
	// auth reads the password once, when the first connection needs it.
	auth    sync.Once
	authErr error
}

func (r *sendRun) run(ctx context.Context) error {
	o := r.o
	if len(o.ignored) > 0 {
		r.say("ignoring sendmail options %s", strings.Join(o.ignored, " "))
	}
	cfg, err := loadSendConfig(r.env, sendProg, o.rules, o.sendFlags())
	if err != nil {
		return err
	}
	r.cfg = cfg
	r.q = &send.Queue{Dir: cfg.queueDir}
	if o.list {
		return listQueue(r.env, r.q)
	}
	if o.flush && (len(o.recipients) > 0 || o.extract) {
		return failf(sysexits.Usage, "--flush sends the queue; it takes no message")
	}
	r.dialer = &sshDialer{cfg: cfg, warn: r.warn, say: r.say}
	defer r.dialer.close()
	r.mailer = &send.Mailer{Relay: cfg.relayOpt, Connect: r.connect}
	r.mailer.Relay.Say = r.say
	defer r.mailer.Close()
	if o.flush {
		return r.flush(ctx)
	}
	return r.sendMessage(ctx)
}

// sendFlags are the settings of o that loadSendConfig merges.
func (o *sendOpts) sendFlags() sendFlags {
	return sendFlags{host: o.host, port: o.port, user: o.user, identity: o.identity,
		knownHosts: o.knownHosts, acceptNew: o.acceptNew, timeout: o.timeout, relay: o.relay, queue: o.queue, queueDir: o.queueDir}
}

// say tells what happens, with -v.
func (r *sendRun) say(format string, args ...any) {
	if r.o.verbose {
		fmt.Fprintf(r.env.stderr, sendProg+": "+format+"\n", args...)
	}
}

func (r *sendRun) warn(m string) { fmt.Fprintf(r.env.stderr, "%s: %s\n", sendProg, m) }

// connect opens a connection to the relay, reading the password first.
func (r *sendRun) connect(ctx context.Context) (net.Conn, error) {
	r.auth.Do(func() { r.authErr = r.cfg.password(ctx, r.env, &r.mailer.Relay) })
	if r.authErr != nil {
		return nil, r.authErr
	}
	return r.dialer.connect(ctx)
}

// flushQueue sends what is queued; verbose says what happens to each
// message even without -v.
func (r *sendRun) flushQueue(ctx context.Context, verbose bool) send.FlushReport {
	return send.Flush(ctx, r.q, r.mailer, func(m string) {
		if verbose || r.o.verbose {
			r.warn(m)
		}
	})
}

// flush is --flush: send the queue, and nothing else.
func (r *sendRun) flush(ctx context.Context) error {
	names, err := r.q.List()
	if err != nil {
		return fail(sysexits.TempFail, err)
	}
	if len(names) == 0 {
		r.say("the queue %s is empty", r.q.Dir)
		return nil
	}
	rep := r.flushQueue(ctx, true)
	r.say("sent %d, left %d, failed %d", rep.Sent, rep.Left, rep.Failed)
	if rep.Err != nil {
		return fail(send.ExitCode(rep.Err), rep.Err)
	}
	return nil
}

// sendMessage sends the message on stdin, after what waits in the queue.
func (r *sendRun) sendMessage(ctx context.Context) error {
	msg, envl, err := r.prepare()
	if err != nil {
		return err
	}
	r.say("from <%s> to %s, %d bytes", envl.From, strings.Join(envl.To, ", "), len(msg))
	if r.o.queueOnly {
		name, err := r.q.Put(envl, msg)
		if err != nil {
			return fail(sysexits.TempFail, err)
		}
		r.say("queued as %s in %s", name, r.q.Dir)
		return nil
	}
	// What waits in the queue goes first, over the same connection.
	if names, _ := r.q.List(); len(names) > 0 {
		rep := r.flushQueue(ctx, false)
		if rep.Err != nil {
			fmt.Fprintf(r.env.stderr, "%s: the queue (%d message(s) left): %v\n", sendProg, rep.Left, rep.Err)
		}
	}
	reply, err := r.mailer.Send(ctx, envl, msg)
	if err != nil {
		return r.notSent(envl, msg, err)
	}
	r.say("sent: %s", reply)
	return nil
}

// errNoRecipients is a send without recipients.
func errNoRecipients() error {
	return failf(sysexits.Usage, "no recipients (name them, or use -t to take them from the message)")
}

// prepare reads the message on stdin and returns it ready to send, with
// its envelope.
func (r *sendRun) prepare() ([]byte, send.Envelope, error) {
	o := r.o
	if len(o.recipients) == 0 && !o.extract {
		return nil, send.Envelope{}, errNoRecipients()
	}
	msg, err := send.ReadMessage(r.env.stdin, o.ignoreDots)
	if err != nil {
		return nil, send.Envelope{}, fail(sysexits.IOErr, err)
	}
	recipients, err := r.recipients(msg)
	if err != nil {
		return nil, send.Envelope{}, err
	}
	userHost := defaultSender(r.env, r.cfg)
	sender := r.sender(msg, userHost)
	msg = send.Prepare{Sender: sender, FullName: o.fullName, Fallback: userHost, Host: r.cfg.helo, Now: time.Now()}.Apply(msg)
	envl := send.Envelope{From: sender, To: recipients, Notify: o.notify, Return: o.ret, EnvelopeID: o.envid}
	return msg, envl, nil
}

// recipients are those of the command line, and with -t those of msg.
func (r *sendRun) recipients(msg []byte) ([]string, error) {
	recipients := send.ParseRecipients(r.o.recipients)
	if r.o.extract {
		recipients = append(recipients, send.HeaderRecipients(msg)...)
	}
	recipients = send.Dedupe(send.Qualify(recipients, r.cfg.domain))
	if len(recipients) > 0 {
		return recipients, nil
	}
	if r.o.extract {
		return nil, failf(sysexits.DataErr, "no recipient in the message's To:, Cc: or Bcc: fields nor on the command line")
	}
	return nil, errNoRecipients()
}

// sender is the envelope sender: -f, else the From: address of msg, else
// userHost.
func (r *sendRun) sender(msg []byte, userHost string) string {
	sender := userHost
	if r.o.senderSet {
		sender = strings.TrimSpace(r.o.sender)
		if sender == "<>" {
			sender = ""
		}
		sender = strings.TrimSuffix(strings.TrimPrefix(sender, "<"), ">")
	} else if from := send.FromAddress(msg); from != "" {
		sender = from
	}
	if sender != "" {
		sender = send.Qualify([]string{sender}, r.cfg.domain)[0]
	}
	return sender
}

// notSent reports err, the failure to send msg, and queues msg if it is
// worth another try and the settings say so.
func (r *sendRun) notSent(envl send.Envelope, msg []byte, err error) error {
	temporary := send.IsTemporary(err)
	if temporary && (r.cfg.queue == send.QueueOn || r.cfg.queue == send.QueueAccept) {
		name, qerr := r.q.Put(envl, msg)
		if qerr != nil {
			return failf(sysexits.TempFail, "not sent: %v; and it could not be queued: %v", err, qerr)
		}
		queued := fmt.Errorf("not sent yet: %v; queued as %s (mfilter send --flush, or the next send, delivers it)", err, name)
		if r.cfg.queue == send.QueueAccept {
			r.warn(queued.Error())
			return nil
		}
		return fail(sysexits.TempFail, queued)
	}
	if temporary {
		return failf(send.ExitCode(err), "not sent, try again later: %v", err)
	}
	return failf(send.ExitCode(err), "not sent: %v", err)
}

// listQueue is --list: what waits in the queue.
func listQueue(env *environ, q *send.Queue) error {
	names, err := q.List()
	if err != nil {
		return fail(sysexits.TempFail, err)
	}
	for _, n := range names {
		e, queued, size, err := q.Peek(n)
		if err != nil {
			fmt.Fprintf(env.stdout, "%s  (unreadable: %v)\n", n, err)
			continue
		}
		fmt.Fprintf(env.stdout, "%s  %d bytes  queued %s  <%s> -> %s\n", n, size, queued.Local().Format(time.DateTime), e.From, strings.Join(e.To, ", "))
	}
	failed, _ := q.Failed()
	fmt.Fprintf(env.stdout, "%d message(s) queued in %s", len(names), q.Dir)
	if len(failed) > 0 {
		fmt.Fprintf(env.stdout, "; %d refused for good in %s", len(failed), filepath.Join(q.Dir, "failed"))
	}
	fmt.Fprintln(env.stdout)
	return nil
}

func defaultSender(env *environ, cfg *sendConfig) string {
	name := firstNonEmpty(env.getenv("USER"), env.getenv("LOGNAME"))
	if name == "" {
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
	}
	host := cfg.domain
	if host == "" {
		host = cfg.helo
	}
	return name + "@" + host
}

// sendFlags are the command-line settings of send and tunnel.
type sendFlags struct {
	host       string
	port       int
	user       string
	identity   []string
	knownHosts []string
	acceptNew  bool
	timeout    time.Duration
	relay      string
	queue      string
	queueDir   string
	listen     string
}

// loadSendConfig reads the rules (if any) and merges their send: and
// fetch: sections with the flags: flags first, then send:, then fetch:
// for the SSH login (its port and user only when send: names no other
// host).
func loadSendConfig(env *environ, prog, rulesFlag string, fl sendFlags) (*sendConfig, error) {
	fset, sset, err := readSendSections(env, prog, rulesFlag)
	if err != nil {
		return nil, err
	}
	c := &sendConfig{set: sset, home: env.getenv("HOME"), agent: env.getenv("SSH_AUTH_SOCK")}
	c.ssh = sshSettings(env, fl, sset, fset)
	c.relay = firstNonEmpty(fl.relay, sset.Relay, send.DefaultRelay)
	if err := send.CheckHostPort(c.relay); err != nil {
		return nil, failf(sysexits.Config, "relay %q: %v", c.relay, err)
	}
	c.queue = sset.Queue
	if fl.queue != "" {
		c.queue = send.QueueMode(fl.queue)
	}
	c.queueDir = queueDir(env, c.home, fl, sset, fset)
	c.listen = firstNonEmpty(fl.listen, sset.Listen, "127.0.0.1:2525")
	c.domain = sset.Domain
	c.helo = sset.Helo
	if c.helo == "" {
		c.helo, _ = os.Hostname()
		if c.helo == "" {
			c.helo = "localhost"
		}
	}
	c.relayOpt, err = relayOptions(env, c)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// readSendSections reads the fetch: and send: sections of the rules, if
// there are rules; it reports their errors.
func readSendSections(env *environ, prog, rulesFlag string) (fetch.Settings, send.Settings, error) {
	var fset fetch.Settings
	var sset send.Settings
	path, err := rulesPath(env, rulesFlag)
	if err != nil {
		return fset, sset, fail(sysexits.Config, err)
	}
	if path == "" {
		return fset, sset, nil
	}
	rc, code := loadRules(env, prog, path)
	if rc == nil {
		return fset, sset, failed(code)
	}
	if fset, err = fetchSettings(env, prog, rc); err != nil {
		return fset, sset, err
	}
	sset, err = send.ParseSettings(rc.Sections["send"])
	if err != nil {
		reportRuleErrors(env, err)
		fmt.Fprintf(env.stderr, "%s: the send: section of %s has errors; nothing was sent\n", prog, path)
		return fset, sset, failed(sysexits.Config)
	}
	return fset, sset, nil
}

// sshSettings merges the SSH login of the flags, send: and fetch:.
func sshSettings(env *environ, fl sendFlags, sset send.Settings, fset fetch.Settings) remote.Settings {
	sameHost := sset.Host == ""
	s := remote.Settings{Host: firstNonEmpty(fl.host, sset.Host, fset.Host), SSHConfigFile: env.getenv("MFILTER_SSH_CONFIG")}
	s.Port = fl.port
	if s.Port == 0 {
		s.Port = sset.Port
	}
	if s.Port == 0 && sameHost {
		s.Port = fset.Port
	}
	s.User = firstNonEmpty(fl.user, sset.User)
	if s.User == "" && sameHost {
		s.User = fset.User
	}
	s.Identity = firstList(fl.identity, sset.Identity, fset.Identity)
	for i, p := range s.Identity {
		s.Identity[i] = expandHome(env, p)
	}
	s.KnownHosts = expandAllHome(env, firstList(fl.knownHosts, sset.KnownHosts, fset.KnownHosts))
	s.AcceptNewHostKey = fl.acceptNew || fset.AcceptNewHostKey
	if sset.AcceptNewHostKey != nil && !fl.acceptNew {
		s.AcceptNewHostKey = *sset.AcceptNewHostKey
	}
	s.Timeout = fl.timeout
	if s.Timeout == 0 {
		s.Timeout = sset.Timeout
	}
	if s.Timeout == 0 {
		s.Timeout = fset.Timeout
	}
	return s
}

// queueDir is where the queue lives: --queue-dir, send: queue-dir:, else
// outbox in the state directory.
func queueDir(env *environ, home string, fl sendFlags, sset send.Settings, fset fetch.Settings) string {
	dir := expandHome(env, fl.queueDir)
	if dir == "" {
		dir = expandHome(env, sset.QueueDir)
	}
	if dir == "" {
		st := expandHome(env, fset.StateDir)
		if st == "" {
			st = env.getenv("XDG_STATE_HOME")
			if st == "" {
				st = filepath.Join(home, ".local", "state")
			}
			st = filepath.Join(st, "mfilter")
		}
		dir = filepath.Join(st, "outbox")
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return dir
}

// relayOptions are the SMTP settings of c: HELO name and STARTTLS.
func relayOptions(env *environ, c *sendConfig) (send.Relay, error) {
	sset := c.set
	r := send.Relay{Helo: c.helo, StartTLS: sset.StartTLS}
	if r.StartTLS == "" || r.StartTLS == send.TLSNo {
		return r, nil
	}
	host, _, _ := net.SplitHostPort(c.relay)
	tc := &tls.Config{ServerName: firstNonEmpty(sset.TLSServerName, host)}
	if sset.TLSCA != "" {
		pool, err := readCAs(env, sset.TLSCA)
		if err != nil {
			return r, err
		}
		tc.RootCAs = pool
	}
	if sset.TLSVerify != nil && !*sset.TLSVerify {
		tc.InsecureSkipVerify = true
	}
	r.TLS = tc
	return r, nil
}

// readCAs reads the certificates of send: tls-ca:.
func readCAs(env *environ, file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(expandHome(env, file))
	if err != nil {
		return nil, failf(sysexits.Config, "tls-ca: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, failf(sysexits.Config, "tls-ca %s holds no PEM certificate", file)
	}
	return pool, nil
}

func firstList(ls ...[]string) []string {
	for _, l := range ls {
		if len(l) > 0 {
			return append([]string(nil), l...)
		}
	}
	return nil
}

// password fills in the AUTH login, reading the password from its file
// or command when the settings ask for AUTH.
func (c *sendConfig) password(ctx context.Context, env *environ, r *send.Relay) error {
	s := c.set
	if s.AuthUser == "" {
		return nil
	}
	var pw string
	switch {
	case s.PasswordFile != "":
		path := expandHome(env, s.PasswordFile)
		st, err := os.Stat(path)
		if err != nil {
			return &send.Failure{Kind: send.Config, Stage: "AUTH", Err: fmt.Errorf("password-file: %w", err)}
		}
		if st.Mode().Perm()&0o077 != 0 {
			return &send.Failure{Kind: send.Denied, Stage: "AUTH", Err: fmt.Errorf("password-file %s can be read by others (mode %o): chmod 600 it", path, st.Mode().Perm())}
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return &send.Failure{Kind: send.Config, Stage: "AUTH", Err: fmt.Errorf("password-file: %w", err)}
		}
		pw = passwordLine(data)
	case len(s.PasswordCommand) > 0:
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, s.PasswordCommand[0], s.PasswordCommand[1:]...)
		cmd.Stderr = env.stderr
		out, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				// pass or gpg may fail for a while (a locked agent):
				// worth another try.
				return &send.Failure{Kind: send.Temporary, Stage: "AUTH", Err: fmt.Errorf("password-command %s: %w", quoteArgv(s.PasswordCommand), err)}
			}
			return &send.Failure{Kind: send.Config, Stage: "AUTH", Err: fmt.Errorf("password-command %s: %w", quoteArgv(s.PasswordCommand), err)}
		}
		pw = passwordLine(out)
	default:
		pw = s.Password
	}
	if pw == "" {
		return &send.Failure{Kind: send.Config, Stage: "AUTH", Err: errors.New("the password is empty")}
	}
	r.Auth = &send.Auth{User: s.AuthUser, Password: pw, Mechanism: s.AuthMechanism}
	return nil
}

func passwordLine(b []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(b))
	if sc.Scan() {
		return strings.TrimRight(sc.Text(), "\r")
	}
	return ""
}

// sshDialer dials the SSH connection on first use and opens a channel to
// the relay over it for each connect.
type sshDialer struct {
	cfg    *sendConfig
	warn   func(string)
	say    func(string, ...any)
	client *remote.Client
	// failed is the error of a dial that failed: one run does not wait
	// for a dead server twice.
	failed error
}

func (d *sshDialer) dial(ctx context.Context) (*remote.Client, error) {
	cfg, err := remote.Resolve(ctx, d.cfg.ssh, d.cfg.home, d.cfg.agent)
	if err != nil {
		return nil, &send.Failure{Kind: send.Config, Stage: "connect", Err: err}
	}
	cfg.Warn = d.warn
	if d.say != nil {
		d.say("connecting to %s as %s", cfg.Addr, cfg.User)
	}
	c, err := remote.Dial(ctx, cfg)
	if err != nil {
		var hk *remote.HostKeyError
		if errors.As(err, &hk) {
			return nil, &send.Failure{Kind: send.Config, Stage: "connect", Err: err}
		}
		if strings.Contains(err.Error(), "no SSH key") {
			return nil, &send.Failure{Kind: send.Config, Stage: "connect", Err: err}
		}
		return nil, &send.Failure{Kind: send.Temporary, Stage: "connect", Err: err}
	}
	return c, nil
}

func (d *sshDialer) connect(ctx context.Context) (net.Conn, error) {
	if d.client == nil {
		if d.failed != nil {
			return nil, d.failed
		}
		c, err := d.dial(ctx)
		if err != nil {
			d.failed = err
			return nil, err
		}
		d.client = c
	}
	conn, err := d.client.DialTCP(ctx, d.cfg.relay)
	if err != nil {
		var fe *remote.ForwardError
		if !errors.As(err, &fe) {
			// The link is gone: the next connect dials again.
			d.client.Close()
			d.client = nil
		}
		return nil, &send.Failure{Kind: send.Temporary, Stage: "connect", Err: err}
	}
	if d.say != nil {
		d.say("channel to %s open", d.cfg.relay)
	}
	return conn, nil
}

func (d *sshDialer) close() {
	if d.client != nil {
		d.client.Close()
	}
}

// runTunnel forwards a local port to the relay through the SSH link,
// dialing again whenever the link drops.
func runTunnel(ctx context.Context, env *environ, args []string) int {
	const prog = "mfilter tunnel"
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	rulesFlag := fs.String("rules", "", "rules file")
	listen := fs.String("listen", "", "local address to listen on (default: send: listen:, else 127.0.0.1:2525)")
	listenAny := fs.Bool("listen-any", false, "allow an address that is not loopback (anyone who reaches it can send through your server)")
	relay := fs.String("relay", "", "the SMTP server as the SSH server sees it (default: send: relay:, else localhost:25)")
	host := fs.String("host", "", "SSH server (or ssh config alias)")
	port := fs.Int("port", 0, "SSH port")
	user := fs.String("user", "", "user on the SSH server")
	var identity, knownHosts stringList
	fs.Var(&identity, "identity", "private key file (repeatable)")
	fs.Var(&knownHosts, "known-hosts", "known_hosts file (repeatable)")
	acceptNew := fs.Bool("accept-new-host-key", false, "record the host key of a server not in known_hosts")
	timeout := fs.Duration("timeout", 0, "connect and handshake timeout (default 30s)")
	linkWait := fs.Duration("link-wait", 30*time.Second, "how long a client waits for the SSH link before it is told to try later")
	verbose := fs.Bool("v", false, "say what is happening")
	if err := parseFlags(env, fs, args); err != nil {
		return usageExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "%s: unexpected argument %q\n", prog, fs.Arg(0))
		return sysexits.Usage
	}
	cfg, err := loadSendConfig(env, prog, *rulesFlag, sendFlags{host: *host, port: *port, user: *user, identity: identity,
		knownHosts: knownHosts, acceptNew: *acceptNew, timeout: *timeout, relay: *relay, listen: *listen})
	if err != nil {
		return env.exitCode(prog, err)
	}
	if err := checkLoopback(ctx, cfg.listen); err != nil && !*listenAny {
		fmt.Fprintf(env.stderr, "%s: %v; anyone who can reach it could send mail through your server: give --listen-any if you mean it\n", prog, err)
		return sysexits.Usage
	}
	note := func(m string) { fmt.Fprintf(env.stderr, "%s: %s\n", prog, m) }
	say := func(format string, args ...any) {
		if *verbose {
			note(fmt.Sprintf(format, args...))
		}
	}
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		fmt.Fprintf(env.stderr, "%s: %v\n", prog, err)
		return sysexits.Unavailable
	}
	dialer := &sshDialer{cfg: cfg, warn: note, say: say}
	// The first link is dialed here: settings that cannot work (an
	// unknown host key, no key to log in with) end the tunnel at once
	// instead of being tried forever; a server that is down is not a
	// reason to stop.
	first, err := dialer.dial(ctx)
	if err != nil {
		var f *send.Failure
		if errors.As(err, &f) && f.Kind == send.Config {
			ln.Close()
			fmt.Fprintf(env.stderr, "%s: %v\n", prog, err)
			return sysexits.Config
		}
		note(fmt.Sprintf("no link yet: %v", err))
	}
	t := &send.Tunnel{
		Listener: ln,
		Relay:    cfg.relay,
		LinkWait: *linkWait,
		Note:     note,
		Dial: func(ctx context.Context) (send.Link, error) {
			if first != nil {
				c := first
				first = nil
				return c, nil
			}
			c, err := dialer.dial(ctx)
			if err != nil {
				return nil, err
			}
			return c, nil
		},
	}
	note(fmt.Sprintf("listening on %s, forwarding to %s through %s", ln.Addr(), cfg.relay, cfg.ssh.Host))
	if err := t.Serve(ctx); err != nil {
		fmt.Fprintf(env.stderr, "%s: %v\n", prog, err)
		return sysexits.TempFail
	}
	return sysexits.OK
}

// checkLoopback refuses an address that is not loopback: an IP must be a
// loopback one, and a name must resolve to loopback addresses only.
func checkLoopback(ctx context.Context, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", addr, err)
	}
	if host == "" {
		return fmt.Errorf("listen address %q is every interface", addr)
	}
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() {
			return fmt.Errorf("listen address %s is not a loopback address", host)
		}
		return nil
	}
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", host, err)
	}
	for _, ip := range ips {
		if !ip.IP.IsLoopback() {
			return fmt.Errorf("listen address %s resolves to %s, which is not loopback", host, ip.IP)
		}
	}
	return nil
}
