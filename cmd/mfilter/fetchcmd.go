package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/mfilter/mfilter/internal/fetch"
	"github.com/mfilter/mfilter/internal/maillock"
	"github.com/mfilter/mfilter/internal/statelock"
	"github.com/mfilter/mfilter/internal/sysexits"
	"github.com/mfilter/mfilter/remote"
	"github.com/mfilter/mfilter/rules"
)

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

const fetchProg = "mfilter fetch-and-file"

// runFetch claims the spool on the server (or here), files every message,
// and removes the claimed file only when all of it is filed.
func runFetch(ctx context.Context, env *environ, args []string) int {
	r := &fetchRun{env: env}
	return env.exitCode(fetchProg, r.run(ctx, args))
}

// fetchFlags are fetch-and-file's command line.
type fetchFlags struct {
	filing                      filingFlags
	host, user, spool, compress string
	localSpool, stateDir        string
	port                        int
	identity, knownHosts        stringList
	acceptNew, verbose, watch   bool
	timeout, stateLockTimeout   time.Duration
	poll                        time.Duration
	lockTimeoutSet              bool // --lock-timeout was given
}

func (fl *fetchFlags) register(fs *flag.FlagSet) {
	fl.filing.register(fs, false)
	fs.StringVar(&fl.host, "host", "", "server (or ssh config alias)")
	fs.IntVar(&fl.port, "port", 0, "SSH port")
	fs.StringVar(&fl.user, "user", "", "user on the server")
	fs.Var(&fl.identity, "identity", "private key file (repeatable)")
	fs.Var(&fl.knownHosts, "known-hosts", "known_hosts file (repeatable)")
	fs.StringVar(&fl.spool, "spool", "", "the spool on the server (default /var/mail/USER)")
	fs.StringVar(&fl.compress, "compress", "", "auto, zstd, gzip or none (default auto)")
	fs.BoolVar(&fl.acceptNew, "accept-new-host-key", false, "record the host key of a server not in known_hosts (a changed key is always refused)")
	fs.StringVar(&fl.localSpool, "local-spool", "", "claim and file a spool on this machine instead, without SSH")
	fs.StringVar(&fl.stateDir, "state-dir", "", "where journals live (default $XDG_STATE_HOME/mfilter)")
	fs.DurationVar(&fl.timeout, "timeout", 0, "connect and handshake timeout (default 30s)")
	fs.DurationVar(&fl.stateLockTimeout, "state-lock-timeout", 0, "how long to wait for another run filing the same spool (default 30s); then exit 75")
	fs.BoolVar(&fl.verbose, "v", false, "say what is happening")
	fs.BoolVar(&fl.watch, "watch", false, "stay and file new mail as it arrives (IMAP IDLE; spools polled) until SIGTERM")
	fs.DurationVar(&fl.poll, "poll", 5*time.Minute, "with --watch: how often to look at a spool, or at an IMAP server without IDLE")
}

// override sets what the flags give in set: flags win over the rules'
// fetch: section.
func (fl *fetchFlags) override(set *fetch.Settings) {
	if fl.host != "" {
		set.Host = fl.host
	}
	if fl.port != 0 {
		set.Port = fl.port
	}
	if fl.user != "" {
		set.User = fl.user
	}
	if len(fl.identity) > 0 {
		set.Identity = fl.identity
	}
	if len(fl.knownHosts) > 0 {
		set.KnownHosts = fl.knownHosts
	}
	if fl.spool != "" {
		set.Spool = fl.spool
	}
	if fl.compress != "" {
		set.Compress = fl.compress
	}
	if fl.acceptNew {
		set.AcceptNewHostKey = true
	}
	if fl.stateDir != "" {
		set.StateDir = fl.stateDir
	}
	if fl.timeout != 0 {
		set.Timeout = fl.timeout
	}
	if fl.stateLockTimeout != 0 {
		set.StateLockTimeout = fl.stateLockTimeout
	}
	if fl.lockTimeoutSet || set.LockTimeout == 0 {
		set.LockTimeout = fl.filing.lockTimeout
	}
}

// fetchRun is one run of fetch-and-file; each step is a method.
type fetchRun struct {
	env  *environ
	fl   fetchFlags
	set  fetch.Settings
	home string
}

func (r *fetchRun) run(ctx context.Context, args []string) error {
	if err := r.parseFlags(args); err != nil {
		return err
	}
	s, serr := newSetup(r.env, fetchProg, &r.fl.filing)
	if serr != nil {
		return failed(reportSetup(r.env, fetchProg, serr))
	}
	defer s.close()
	srcs, err := fetchSourceList(r.env, fetchProg, s.cfg)
	if err != nil {
		return err
	}
	if len(srcs) == 0 || r.fl.localSpool != "" {
		// The flags alone, or a spool here: the first SSH source's
		// settings amended by the flags.
		srcs = []fetchSource{{ssh: new(firstSSH(srcs))}}
	}
	if r.fl.watch {
		r.fl.verbose = true
		return r.watch(ctx, s, srcs)
	}
	return r.runSources(ctx, s, srcs)
}

func (r *fetchRun) parseFlags(args []string) error {
	fs := flag.NewFlagSet(fetchProg, flag.ContinueOnError)
	r.fl.register(fs)
	if err := parseFlags(r.env, fs, args); err != nil {
		return failed(usageExit(err))
	}
	if fs.NArg() > 0 {
		return failf(sysexits.Usage, "unexpected argument %q", fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) { r.fl.lockTimeoutSet = r.fl.lockTimeoutSet || f.Name == "lock-timeout" })
	return nil
}

// settle merges the flags into the settings, checks them, and fills in
// the state directory.
func (r *fetchRun) settle() error {
	set := &r.set
	r.fl.override(set)
	switch set.Compress {
	case "", "auto", "zstd", "gzip", "none":
	default:
		return failf(sysexits.Usage, "--compress must be auto, zstd, gzip or none")
	}
	r.home = r.env.getenv("HOME")
	if set.StateDir == "" {
		st := r.env.getenv("XDG_STATE_HOME")
		if st == "" {
			st = filepath.Join(r.home, ".local", "state")
		}
		set.StateDir = filepath.Join(st, "mfilter")
	}
	set.StateDir = expandHome(r.env, set.StateDir)
	return nil
}

// say tells what is happening, with -v.
func (r *fetchRun) say(format string, args ...any) {
	if r.fl.verbose {
		fmt.Fprintf(r.env.stderr, fetchProg+": "+format+"\n", args...)
	}
}

// warn reports a problem that does not stop the run.
func (r *fetchRun) warn(m string) { fmt.Fprintf(r.env.stderr, "%s: %s\n", fetchProg, m) }

// openSpool returns the spool to claim, here or on the server, and what
// closes it.
func (r *fetchRun) openSpool(ctx context.Context) (remote.Spool, func(), error) {
	if r.fl.localSpool == "" {
		return r.dialSpool(ctx)
	}
	path := expandHome(r.env, r.fl.localSpool)
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	sp := &remote.LocalSpool{SpoolPath: path, Lock: lockOpts(r.set)}
	r.say("local spool %s", path)
	return sp, func() {}, nil
}

// dialSpool connects to the server and returns its spool.
func (r *fetchRun) dialSpool(ctx context.Context) (remote.Spool, func(), error) {
	env, set := r.env, r.set
	cfg, err := remote.Resolve(ctx, remote.Settings{
		Host: set.Host, Port: set.Port, User: set.User, Identity: set.Identity,
		KnownHosts: expandAllHome(env, set.KnownHosts), AcceptNewHostKey: set.AcceptNewHostKey, Timeout: set.Timeout,
		SSHConfigFile: env.getenv("MFILTER_SSH_CONFIG"),
	}, r.home, env.getenv("SSH_AUTH_SOCK"))
	if err != nil {
		return nil, nil, fail(sysexits.Config, err)
	}
	cfg.Warn = r.warn
	r.say("connecting to %s as %s", cfg.Addr, cfg.User)
	client, err := remote.Dial(ctx, cfg)
	if err != nil {
		var hk *remote.HostKeyError
		if errors.As(err, &hk) {
			return nil, nil, fail(sysexits.Config, err)
		}
		return nil, nil, fail(sysexits.TempFail, err)
	}
	path := set.Spool
	if path == "" {
		path = "/var/mail/" + cfg.User
	}
	sp := &remote.SSHSpool{C: client, SpoolPath: path, Who: cfg.User + "@" + set.Host, Compress: set.Compress, LockWait: set.LockTimeout}
	r.say("spool %s", sp.Describe())
	return sp, func() { client.Close() }, nil
}

// fetch files the spool's messages and says what it did.
func (r *fetchRun) fetch(ctx context.Context, s *setup, sp remote.Spool) error {
	env := r.env
	hostname, _ := os.Hostname()
	showProgress := term.IsTerminal(int(os.Stderr.Fd())) && env.stderr == os.Stderr
	start := time.Now()
	f := &fetch.Fetcher{
		Spool:    sp,
		Filer:    s.filer,
		Writer:   s.filer.Writer,
		StateDir: r.set.StateDir,
		Client:   hostname,
		Host:     hostname,
		Berkeley: r.fl.filing.berkeley,
		Warn:     r.warn,
		LockWait: r.set.StateLockTimeout,
	}
	if showProgress {
		f.Progress = (&progressLine{env: env, start: start}).show
	}
	rep, err := f.Run(ctx)
	if showProgress {
		fmt.Fprint(env.stderr, "\r\033[K")
	}
	var busy *statelock.BusyError
	if errors.As(err, &busy) {
		return failf(sysexits.TempFail, "%s: %v; nothing was done (try again later)", sp.Describe(), err)
	}
	if err != nil {
		return failf(sysexits.TempFail, "%v (the server keeps what was not filed; run again to finish)", err)
	}
	if rep.Files == 0 {
		r.say("no mail")
		return nil
	}
	if r.fl.verbose || showProgress {
		r.report(rep, sp, start)
	}
	return nil
}

// report says how much was filed.
func (r *fetchRun) report(rep fetch.Report, sp remote.Spool, start time.Time) {
	codec := rep.Codec
	if codec == "" {
		codec = "none"
	}
	link := ""
	if r.fl.localSpool == "" {
		link = fmt.Sprintf(", %s over the link with %s", size(rep.Wire), codec)
	}
	fmt.Fprintf(r.env.stderr, "%s: filed %d messages (%s%s) from %s in %s\n",
		fetchProg, rep.Messages, size(rep.Bytes), link, sp.Describe(), time.Since(start).Round(time.Millisecond))
}

// progressLine shows a fetch's progress on the terminal, at most five
// times a second.
type progressLine struct {
	env         *environ
	start, last time.Time
}

func (p *progressLine) show(pr fetch.Progress) {
	if time.Since(p.last) < 200*time.Millisecond {
		return
	}
	p.last = time.Now()
	rate := float64(pr.Bytes) / time.Since(p.start).Seconds()
	fmt.Fprintf(p.env.stderr, "\r%s: %s of %s, %d messages (%s/s, %s over the link)   ", fetchProg, size(pr.Bytes), size(pr.Size), pr.Messages, size(int64(rate)), size(pr.Wire))
}

func lockOpts(s fetch.Settings) maillock.LockOptions {
	return maillock.LockOptions{Timeout: s.LockTimeout}
}

func expandAllHome(env *environ, ps []string) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = expandHome(env, p)
	}
	return out
}

// fetchSettings reads the fetch: section of the rules, if any. Its
// errors are reported here.
func fetchSettings(env *environ, prog string, cfg *rules.Config) (fetch.Settings, error) {
	srcs, err := fetchSourceList(env, prog, cfg)
	return firstSSH(srcs), err
}

func reportRuleErrors(env *environ, err error) {
	var el rules.ErrorList
	if errors.As(err, &el) {
		for _, e := range el {
			fmt.Fprintln(env.stderr, e)
		}
		return
	}
	fmt.Fprintln(env.stderr, err)
}

func size(n int64) string {
	switch {
	case n >= 10<<20:
		return fmt.Sprintf("%.0f MB", float64(n)/(1<<20))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f kB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
