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

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/fetch"
	"github.com/mfilter/mfilter/internal/statelock"
	"github.com/mfilter/mfilter/internal/sysexits"
	"github.com/mfilter/mfilter/remote"
	"github.com/mfilter/mfilter/rules"
)

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// runFetch claims the spool on the server (or here), files every message,
// and removes the claimed file only when all of it is filed.
func runFetch(ctx context.Context, env *environ, args []string) int {
	const prog = "mfilter fetch-and-file"
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	var ff filingFlags
	ff.register(fs, false)
	host := fs.String("host", "", "server (or ssh config alias)")
	port := fs.Int("port", 0, "SSH port")
	user := fs.String("user", "", "user on the server")
	var identity, knownHosts stringList
	fs.Var(&identity, "identity", "private key file (repeatable)")
	fs.Var(&knownHosts, "known-hosts", "known_hosts file (repeatable)")
	spool := fs.String("spool", "", "the spool on the server (default /var/mail/USER)")
	compress := fs.String("compress", "", "auto, zstd, gzip or none (default auto)")
	acceptNew := fs.Bool("accept-new-host-key", false, "record the host key of a server not in known_hosts (a changed key is always refused)")
	localSpool := fs.String("local-spool", "", "claim and file a spool on this machine instead, without SSH")
	stateDir := fs.String("state-dir", "", "where journals live (default $XDG_STATE_HOME/mfilter)")
	timeout := fs.Duration("timeout", 0, "connect and handshake timeout (default 30s)")
	stateLockTimeout := fs.Duration("state-lock-timeout", 0, "how long to wait for another run filing the same spool (default 30s); then exit 75")
	verbose := fs.Bool("v", false, "say what is happening")
	if err := parseFlags(env, fs, args); err != nil {
		return usageExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "%s: unexpected argument %q\n", prog, fs.Arg(0))
		return sysexits.Usage
	}
	lockFlagSet := false
	fs.Visit(func(f *flag.Flag) { lockFlagSet = lockFlagSet || f.Name == "lock-timeout" })

	s, serr := newSetup(env, prog, &ff)
	if serr != nil {
		return reportSetup(env, prog, serr)
	}
	defer s.close()
	set, err := fetchSettings(env, prog, s.cfg)
	if err != nil {
		return env.exitCode(prog, err)
	}
	// Flags win over the rules' fetch: section.
	if *host != "" {
		set.Host = *host
	}
	if *port != 0 {
		set.Port = *port
	}
	if *user != "" {
		set.User = *user
	}
	if len(identity) > 0 {
		set.Identity = identity
	}
	if len(knownHosts) > 0 {
		set.KnownHosts = knownHosts
	}
	if *spool != "" {
		set.Spool = *spool
	}
	if *compress != "" {
		set.Compress = *compress
	}
	if *acceptNew {
		set.AcceptNewHostKey = true
	}
	if *stateDir != "" {
		set.StateDir = *stateDir
	}
	if *timeout != 0 {
		set.Timeout = *timeout
	}
	if *stateLockTimeout != 0 {
		set.StateLockTimeout = *stateLockTimeout
	}
	if lockFlagSet || set.LockTimeout == 0 {
		set.LockTimeout = ff.lockTimeout
	}
	switch set.Compress {
	case "", "auto", "zstd", "gzip", "none":
	default:
		fmt.Fprintf(env.stderr, "%s: --compress must be auto, zstd, gzip or none\n", prog)
		return sysexits.Usage
	}
	home := env.getenv("HOME")
	if set.StateDir == "" {
		st := env.getenv("XDG_STATE_HOME")
		if st == "" {
			st = filepath.Join(home, ".local", "state")
		}
		set.StateDir = filepath.Join(st, "mfilter")
	}
	set.StateDir = expandHome(env, set.StateDir)
	hostname, _ := os.Hostname()

	say := func(format string, args ...any) {
		if *verbose {
			fmt.Fprintf(env.stderr, prog+": "+format+"\n", args...)
		}
	}
	var sp remote.Spool
	if *localSpool != "" {
		path := expandHome(env, *localSpool)
		if abs, err := filepath.Abs(path); err == nil {
			path = abs
		}
		sp = &remote.LocalSpool{SpoolPath: path, Lock: lockOpts(set)}
		say("local spool %s", path)
	} else {
		cfg, err := remote.Resolve(ctx, remote.Settings{
			Host: set.Host, Port: set.Port, User: set.User, Identity: set.Identity,
			KnownHosts: expandAllHome(env, set.KnownHosts), AcceptNewHostKey: set.AcceptNewHostKey, Timeout: set.Timeout,
			SSHConfigFile: env.getenv("MFILTER_SSH_CONFIG"),
		}, home, env.getenv("SSH_AUTH_SOCK"))
		if err != nil {
			fmt.Fprintf(env.stderr, "%s: %v\n", prog, err)
			return sysexits.Config
		}
		cfg.Warn = func(m string) { fmt.Fprintf(env.stderr, "%s: %s\n", prog, m) }
		say("connecting to %s as %s", cfg.Addr, cfg.User)
		client, err := remote.Dial(ctx, cfg)
		if err != nil {
			fmt.Fprintf(env.stderr, "%s: %v\n", prog, err)
			var hk *remote.HostKeyError
			if errors.As(err, &hk) {
				return sysexits.Config
			}
			return sysexits.TempFail
		}
		defer client.Close()
		path := set.Spool
		if path == "" {
			path = "/var/mail/" + cfg.User
		}
		sp = &remote.SSHSpool{C: client, SpoolPath: path, Who: cfg.User + "@" + set.Host, Compress: set.Compress, LockWait: set.LockTimeout}
		say("spool %s", sp.Describe())
	}
	showProgress := term.IsTerminal(int(os.Stderr.Fd())) && env.stderr == os.Stderr
	start := time.Now()
	f := &fetch.Fetcher{
		Spool:    sp,
		Filer:    s.filer,
		Writer:   s.filer.Writer,
		StateDir: set.StateDir,
		Client:   hostname,
		Host:     hostname,
		Berkeley: ff.berkeley,
		Warn:     func(m string) { fmt.Fprintf(env.stderr, "%s: %s\n", prog, m) },
		LockWait: set.StateLockTimeout,
	}
	if showProgress {
		var last time.Time
		f.Progress = func(p fetch.Progress) {
			if time.Since(last) < 200*time.Millisecond {
				return
			}
			last = time.Now()
			rate := float64(p.Bytes) / time.Since(start).Seconds()
			fmt.Fprintf(env.stderr, "\r%s: %s of %s, %d messages (%s/s, %s over the link)   ", prog, size(p.Bytes), size(p.Size), p.Messages, size(int64(rate)), size(p.Wire))
		}
	}
	rep, err := f.Run(ctx)
	if showProgress {
		fmt.Fprint(env.stderr, "\r\033[K")
	}
	var busy *statelock.BusyError
	if errors.As(err, &busy) {
		fmt.Fprintf(env.stderr, "%s: %s: %v; nothing was done (try again later)\n", prog, sp.Describe(), err)
		return sysexits.TempFail
	}
	if err != nil {
		fmt.Fprintf(env.stderr, "%s: %v (the server keeps what was not filed; run again to finish)\n", prog, err)
		return sysexits.TempFail
	}
	if rep.Files == 0 {
		say("no mail")
		return sysexits.OK
	}
	if *verbose || showProgress {
		codec := rep.Codec
		if codec == "" {
			codec = "none"
		}
		link := ""
		if *localSpool == "" {
			link = fmt.Sprintf(", %s over the link with %s", size(rep.Wire), codec)
		}
		fmt.Fprintf(env.stderr, "%s: filed %d messages (%s%s) from %s in %s\n",
			prog, rep.Messages, size(rep.Bytes), link, sp.Describe(), time.Since(start).Round(time.Millisecond))
	}
	return sysexits.OK
}

func lockOpts(s fetch.Settings) deliver.LockOptions {
	return deliver.LockOptions{Timeout: s.LockTimeout}
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
	if cfg == nil {
		return fetch.Settings{}, nil
	}
	set, err := fetch.ParseSettings(cfg.Sections["fetch"])
	if err != nil {
		reportRuleErrors(env, err)
		fmt.Fprintf(env.stderr, "%s: the fetch: section of %s has errors; no mail was touched\n", prog, cfg.Path)
		return set, failed(sysexits.Config)
	}
	return set, nil
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
