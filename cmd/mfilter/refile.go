package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mfilter/mfilter/internal/maillock"
	"github.com/mfilter/mfilter/internal/refile"
	"github.com/mfilter/mfilter/internal/statelock"
	"github.com/mfilter/mfilter/internal/sysexits"
)

// runRefile files the messages of maildirs, MH folders and mbox files
// again by the rules (internal/refile): those the rules send elsewhere
// leave the source, exactly once across crashes; the rest stay.
func runRefile(ctx context.Context, env *environ, args []string) int {
	const prog = "mfilter refile"
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	var ff filingFlags
	ff.register(fs, false)
	var dry, verbose bool
	fs.BoolVar(&dry, "dry-run", false, "change nothing: print where the messages would go")
	fs.BoolVar(&dry, "n", false, "same as --dry-run")
	fs.BoolVar(&verbose, "v", false, "list each message with where it goes")
	programs := fs.Bool("programs", false, "let the rules' pipes and forwards run (else such messages stay)")
	readMboxrd := fs.Bool("read-mboxrd", false, "mbox sources are mboxrd: strip one > from >From lines")
	stateDir := fs.String("state-dir", "", "where the journals of unfinished runs live (default $XDG_STATE_HOME/mfilter)")
	stateLockTimeout := fs.Duration("state-lock-timeout", statelock.DefaultWait, "how long to wait for another run on the same source; then exit 75")
	if err := parseFlags(env, fs, args); err != nil {
		return usageExit(err)
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(env.stderr, "mfilter refile: name at least one maildir, MH folder or mbox file")
		return sysexits.Usage
	}
	s, serr := newSetup(env, prog, &ff)
	if serr != nil {
		return reportSetup(env, prog, serr)
	}
	defer s.close()
	state := *stateDir
	if state == "" {
		state = refileStateDir(env)
	} else {
		state = expandHome(env, state)
	}
	host, _ := os.Hostname()
	o := &refile.Options{
		Filer:         s.filer,
		StateDir:      state,
		Host:          host,
		DryRun:        dry,
		Verbose:       verbose,
		Programs:      *programs,
		Out:           env.stdout,
		Warn:          func(msg string) { fmt.Fprintf(env.stderr, "%s: %s\n", prog, msg) },
		Lock:          maillock.LockOptions{Timeout: ff.lockTimeout},
		StateLockWait: *stateLockTimeout,
		Berkeley:      ff.berkeley,
		ReadMboxrd:    *readMboxrd,
	}
	code := sysexits.OK
	for _, src := range fs.Args() {
		rep, err := refile.Run(ctx, o, expandHome(env, src))
		if rep != nil {
			refile.Format(env.stdout, rep)
		}
		if err != nil {
			var busy *statelock.BusyError
			if errors.As(err, &busy) {
				fmt.Fprintf(env.stderr, "%s: %s: %v; nothing was done (try again later)\n", prog, src, err)
			} else {
				fmt.Fprintf(env.stderr, "%s: %s: %v\n", prog, src, err)
			}
			if code == sysexits.OK {
				code = sysexits.TempFail
			}
		}
	}
	return code
}

// refileStateDir is $XDG_STATE_HOME/mfilter, else ~/.local/state/mfilter,
// or "" without either.
func refileStateDir(env *environ) string {
	st := env.getenv("XDG_STATE_HOME")
	if st == "" {
		home := env.getenv("HOME")
		if home == "" {
			return ""
		}
		st = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(st, "mfilter")
}
