package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/filer"
	"github.com/mfilter/mfilter/internal/maillog"
	"github.com/mfilter/mfilter/internal/sysexits"
)

// filingFlags are the options every filing mode shares.
type filingFlags struct {
	base        string
	def         string
	logFile     string
	berkeley    bool
	mboxrd      bool
	lockTimeout time.Duration
	rescue      string
}

func (ff *filingFlags) register(fs *flag.FlagSet, batch bool) {
	fs.StringVar(&ff.base, "maildir", "", "base directory for relative folders (default $HOME)")
	fs.StringVar(&ff.def, "default", "Maildir/", "folder for messages no rule files")
	fs.StringVar(&ff.logFile, "log", "", "append procmail's log abstract to this file")
	fs.BoolVar(&ff.berkeley, "berkeley", false, "ignore Content-Length fields")
	fs.BoolVar(&ff.berkeley, "Y", false, "same as --berkeley")
	fs.BoolVar(&ff.mboxrd, "mboxrd", false, "write mbox folders as mboxrd")
	fs.DurationVar(&ff.lockTimeout, "lock-timeout", deliver.DefaultLockOptions.Timeout, "how long to wait for a folder lock")
	if batch {
		fs.StringVar(&ff.rescue, "rescue", "", "mbox for messages that could not be filed")
	}
}

// setup is what a filing command runs with.
type setup struct {
	filer   *filer.Filer
	logFile *os.File
}

func (s *setup) close() {
	if s.logFile != nil {
		s.logFile.Close()
	}
}

// newSetup turns the flags into a Filer. Errors are configuration errors.
func newSetup(env *environ, ff *filingFlags) (*setup, error) {
	base := ff.base
	if base == "" {
		base = env.getenv("HOME")
		if base == "" {
			return nil, errors.New("--maildir not given and $HOME is not set")
		}
	}
	base = expandHome(env, base)
	if !filepath.IsAbs(base) {
		abs, err := filepath.Abs(base)
		if err != nil {
			return nil, err
		}
		base = abs
	}
	def, err := deliver.ParseFolder(base, expandHome(env, ff.def))
	if err != nil {
		return nil, fmt.Errorf("--default: %w", err)
	}
	warn := func(msg string) { fmt.Fprintf(env.stderr, "mfilter: warning: %s\n", msg) }
	w := deliver.NewWriter(deliver.Options{
		Berkeley: ff.berkeley,
		Mboxrd:   ff.mboxrd,
		Lock:     deliver.LockOptions{Timeout: ff.lockTimeout},
		Warn:     warn,
	})
	s := &setup{}
	var logw io.Writer
	if ff.logFile != "" {
		path := expandHome(env, ff.logFile)
		if !filepath.IsAbs(path) {
			path = filepath.Join(base, path)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("--log: %w", err)
		}
		s.logFile, logw = f, f
	}
	rescue := ff.rescue
	if rescue == "" {
		rescue = filepath.Join(base, "mfilter-rescue.mbox")
	} else {
		rescue = expandHome(env, rescue)
		if !filepath.IsAbs(rescue) {
			rescue = filepath.Join(base, rescue)
		}
	}
	s.filer = &filer.Filer{
		Writer: w,
		Router: filer.DefaultRouter{Folder: def},
		Log:    maillog.New(logw),
		Rescue: rescue,
		Warn:   warn,
	}
	return s, nil
}

func expandHome(env *environ, p string) string {
	if p == "~" || len(p) > 1 && p[:2] == "~/" {
		if home := env.getenv("HOME"); home != "" {
			return filepath.Join(home, p[1:])
		}
	}
	return p
}

func parseFlags(env *environ, fs *flag.FlagSet, args []string) error {
	fs.SetOutput(env.stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}

func usageExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return sysexits.OK
	}
	return sysexits.Usage
}

// runDeliver delivers exactly one message from stdin, never splitting it.
func runDeliver(ctx context.Context, env *environ, args []string) int {
	fs := flag.NewFlagSet("mfilter deliver", flag.ContinueOnError)
	var ff filingFlags
	ff.register(fs, false)
	sender := fs.String("f", "", "envelope sender: replace or create the From_ line (procmail -f)")
	if err := parseFlags(env, fs, args); err != nil {
		return usageExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "mfilter deliver: unexpected argument %q (the message comes on stdin)\n", fs.Arg(0))
		return sysexits.Usage
	}
	s, err := newSetup(env, &ff)
	if err != nil {
		fmt.Fprintf(env.stderr, "mfilter deliver: %v\n", err)
		return sysexits.Config
	}
	defer s.close()
	msg, err := io.ReadAll(env.stdin)
	if err != nil {
		fmt.Fprintf(env.stderr, "mfilter deliver: read message: %v\n", err)
		return sysexits.TempFail
	}
	// As procmail -d does, blank lines before the message are dropped.
	msg = bytes.TrimLeft(msg, "\n")
	if *sender != "" {
		msg = deliver.SetEnvelopeSender(msg, *sender, time.Now())
	}
	if err := s.filer.FileOne(ctx, msg); err != nil {
		fmt.Fprintf(env.stderr, "mfilter deliver: not delivered, try again later: %v\n", err)
		return sysexits.TempFail
	}
	return sysexits.OK
}

// runSplit files every message of the mbox on stdin.
func runSplit(ctx context.Context, env *environ, args []string) int {
	fs := flag.NewFlagSet("mfilter", flag.ContinueOnError)
	var ff filingFlags
	ff.register(fs, true)
	if err := parseFlags(env, fs, args); err != nil {
		return usageExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "mfilter: unexpected argument %q (use mfilter file PATH to read files)\n", fs.Arg(0))
		return sysexits.Usage
	}
	s, err := newSetup(env, &ff)
	if err != nil {
		fmt.Fprintf(env.stderr, "mfilter: %v\n", err)
		return sysexits.Config
	}
	defer s.close()
	return fileMbox(ctx, env, s, "stdin", env.stdin, &ff)
}

// runFile files every message of each mbox named on the command line.
func runFile(ctx context.Context, env *environ, args []string) int {
	fs := flag.NewFlagSet("mfilter file", flag.ContinueOnError)
	var ff filingFlags
	ff.register(fs, true)
	if err := parseFlags(env, fs, args); err != nil {
		return usageExit(err)
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(env.stderr, "mfilter file: name at least one mbox file")
		return sysexits.Usage
	}
	s, err := newSetup(env, &ff)
	if err != nil {
		fmt.Fprintf(env.stderr, "mfilter file: %v\n", err)
		return sysexits.Config
	}
	defer s.close()
	code := sysexits.OK
	for _, path := range fs.Args() {
		f, err := os.Open(path)
		if err != nil {
			fmt.Fprintf(env.stderr, "mfilter file: %v\n", err)
			code = worse(code, sysexits.TempFail)
			continue
		}
		c := fileMbox(ctx, env, s, path, f, &ff)
		f.Close()
		code = worse(code, c)
	}
	return code
}

func worse(a, b int) int {
	if a != sysexits.OK {
		return a
	}
	return b
}

func fileMbox(ctx context.Context, env *environ, s *setup, name string, r io.Reader, ff *filingFlags) int {
	src := deliver.NewSplitter(r, deliver.SplitOptions{Berkeley: ff.berkeley})
	sum, err := s.filer.FileAll(ctx, src)
	if err != nil {
		fmt.Fprintf(env.stderr, "mfilter: %s: %v\n", name, err)
		return sysexits.TempFail
	}
	_ = sum
	return sysexits.OK
}
