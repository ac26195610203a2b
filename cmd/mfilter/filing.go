package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/filer"
	"github.com/mfilter/mfilter/internal/mailfmt"
	"github.com/mfilter/mfilter/internal/maillock"
	"github.com/mfilter/mfilter/internal/maillog"
	"github.com/mfilter/mfilter/internal/sysexits"
	"github.com/mfilter/mfilter/rules"
)

// filingFlags are the options every filing mode shares.
type filingFlags struct {
	rules       string
	noRules     bool
	base        string
	def         string
	logFile     string
	berkeley    bool
	mboxrd      bool
	readMboxrd  bool
	lockTimeout time.Duration
	rescue      string
	sender      string
	recipient   string
	// logOptional makes a log file that cannot be opened a warning, not
	// a failure: an MDA delivers without its log rather than not at all.
	logOptional bool
}

func (ff *filingFlags) register(fs *flag.FlagSet, batch bool) {
	fs.StringVar(&ff.rules, "rules", "", "rules file (default $XDG_CONFIG_HOME/mfilter/rules.yaml, then ~/.mfilter.yaml)")
	fs.BoolVar(&ff.noRules, "no-rules", false, "use no rules file: every message goes to the default folder")
	fs.StringVar(&ff.base, "maildir", "", "base directory for relative folders (default from the rules, then $HOME)")
	fs.StringVar(&ff.def, "default", "", "folder for messages no rule delivers (default from the rules, then Maildir/)")
	fs.StringVar(&ff.logFile, "log", "", "append procmail's log abstract to this file")
	fs.BoolVar(&ff.berkeley, "berkeley", false, "ignore Content-Length fields")
	fs.BoolVar(&ff.berkeley, "Y", false, "same as --berkeley")
	fs.BoolVar(&ff.mboxrd, "mboxrd", false, "write mbox folders as mboxrd")
	fs.DurationVar(&ff.lockTimeout, "lock-timeout", maillock.DefaultLockOptions.Timeout, "how long to wait for a folder lock")
	if batch {
		fs.StringVar(&ff.rescue, "rescue", "", "mbox for messages that could not be filed")
		fs.BoolVar(&ff.readMboxrd, "read-mboxrd", false, "the input is mboxrd: strip one > from >From lines")
	}
}

// setup is what a filing command runs with.
type setup struct {
	filer   *filer.Filer
	logFile *os.File
	root    *os.Root
	router  *filer.RulesRouter // nil without rules
	cfg     *rules.Config      // nil without rules
	base    string
	def     deliver.Folder // where mail goes that no rule delivers
}

func (s *setup) close() {
	if s.logFile != nil {
		s.logFile.Close()
	}
	if s.root != nil {
		s.root.Close()
	}
}

// setupError carries the exit status of a failed setup: 78 for a mistake
// in the rules or flags, 77 for an insecure rules file, 75 for trouble in
// the environment (a log file that cannot be opened) that a retry may
// not meet again.
type setupError struct {
	code int
	err  error
	// rulesFile is set when err is the rules file's: it cannot be loaded.
	rulesFile string
}

func (e *setupError) Error() string { return e.err.Error() }

// newSetup loads the rules (if there are any) and turns them and the flags
// into a Filer; flags win over the rules' settings. prog prefixes the
// messages.
func newSetup(env *environ, prog string, ff *filingFlags) (*setup, *setupError) {
	cfg, serr := setupRules(env, ff)
	if serr != nil {
		return nil, serr
	}
	set := pickSettings(cfg, ff)
	base, serr := mailBase(env, set.base)
	if serr != nil {
		return nil, serr
	}
	defSpec := expandHome(env, set.def)
	def, err := deliver.ParseFolder(base, defSpec)
	if err != nil {
		return nil, &setupError{code: sysexits.Config, err: fmt.Errorf("default folder: %w", err)}
	}
	warn := func(msg string) { fmt.Fprintf(env.stderr, "%s: warning: %s\n", prog, msg) }
	w := deliver.NewWriter(deliver.Options{
		Berkeley: ff.berkeley,
		Mboxrd:   ff.mboxrd,
		Lock:     maillock.LockOptions{Timeout: ff.lockTimeout},
		Warn:     warn,
	})
	s := &setup{base: base, cfg: cfg, def: def}
	logw, lp, serr := s.openLog(env, set.log, ff.logOptional, warn)
	if serr != nil {
		return nil, serr
	}
	rescue := rescuePath(env, base, ff.rescue)
	var router filer.Router = filer.DefaultRouter{Folder: def}
	if cfg != nil {
		resolved := &filingFlags{base: base, def: defSpec, berkeley: ff.berkeley, logFile: lp, rescue: rescue}
		envelope := rules.Envelope{Sender: ff.sender, Recipient: ff.recipient}
		if serr := s.routeByRules(env, resolved, envelope); serr != nil {
			s.close()
			return nil, serr
		}
		router = s.router
	}
	s.filer = &filer.Filer{
		Writer:   w,
		Router:   router,
		Log:      maillog.NewFormat(logw, set.logFormat),
		Rescue:   rescue,
		Berkeley: ff.berkeley,
		Warn:     warn,
		Hold:     env.hold,
	}
	return s, nil
}

// setupRules loads the rules file that the flags or the environment
// name, or returns nil without one.
func setupRules(env *environ, ff *filingFlags) (*rules.Config, *setupError) {
	path, err := rulesPath(env, ff.rules)
	if err != nil {
		return nil, &setupError{code: sysexits.Config, err: err}
	}
	if ff.noRules {
		if ff.rules != "" {
			return nil, &setupError{code: sysexits.Usage, err: errors.New("--rules and --no-rules contradict each other")}
		}
		return nil, nil
	}
	if path == "" {
		return nil, nil
	}
	cfg, err := rules.Load(path)
	if err != nil {
		return nil, &setupError{code: rulesExitCode(err), err: err, rulesFile: path}
	}
	return cfg, nil
}

// settings are the places a setup files to and logs in, as written.
type settings struct {
	base, def, log string
	logFormat      maillog.Format
}

// pickSettings takes each setting from its flag, else from the rules
// (cfg may be nil), else its default.
func pickSettings(cfg *rules.Config, ff *filingFlags) settings {
	pick := func(flagValue string, setting *rules.Str, def string) string {
		if flagValue != "" {
			return flagValue
		}
		if setting != nil {
			return setting.Value
		}
		return def
	}
	if cfg == nil {
		return settings{base: ff.base, def: pick(ff.def, nil, "Maildir/"), log: ff.logFile, logFormat: maillog.Procmail}
	}
	set := settings{
		base:      pick(ff.base, cfg.Maildir, ""),
		def:       pick(ff.def, cfg.Default, "Maildir/"),
		log:       pick(ff.logFile, cfg.Log, ""),
		logFormat: maillog.Procmail,
	}
	if cfg.LogFormat != nil && cfg.LogFormat.Value == "json" {
		set.logFormat = maillog.JSON
	}
	return set
}

// mailBase is the mail directory, absolute: base as set, else $HOME.
func mailBase(env *environ, base string) (string, *setupError) {
	if base == "" {
		base = env.getenv("HOME")
		if base == "" {
			return "", &setupError{code: sysexits.Config, err: errors.New("no mail directory: give --maildir or set maildir: in the rules ($HOME is not set either)")}
		}
	}
	base = expandHome(env, base)
	if !filepath.IsAbs(base) {
		abs, err := filepath.Abs(base)
		if err != nil {
			return "", &setupError{code: sysexits.Config, err: err}
		}
		base = abs
	}
	return base, nil
}

// openLog opens the log file spec names, if any, relative to the mail
// directory; it returns the writer (nil without a log) and the path.
// With optional, a log that cannot be opened is only warned about.
func (s *setup) openLog(env *environ, spec string, optional bool, warn func(string)) (io.Writer, string, *setupError) {
	if spec == "" {
		return nil, "", nil
	}
	lp := expandHome(env, spec)
	if !filepath.IsAbs(lp) {
		lp = filepath.Join(s.base, lp)
	}
	f, err := openLog(lp)
	switch {
	case err == nil:
		s.logFile = f
		return f, lp, nil
	case optional:
		warn(fmt.Sprintf("log file: %v; delivering without it", err))
		return nil, lp, nil
	default:
		return nil, lp, &setupError{code: sysexits.TempFail, err: fmt.Errorf("log file: %w", err)}
	}
}

// rescuePath is the rescue mbox: the flag's, relative to the mail
// directory base, else mfilter-rescue.mbox there.
func rescuePath(env *environ, base, flagValue string) string {
	if flagValue == "" {
		return filepath.Join(base, "mfilter-rescue.mbox")
	}
	rescue := expandHome(env, flagValue)
	if !filepath.IsAbs(rescue) {
		rescue = filepath.Join(base, rescue)
	}
	return rescue
}

// routeByRules makes s.router from the rules, with the settings resolved
// in ff.
func (s *setup) routeByRules(env *environ, ff *filingFlags, envelope rules.Envelope) *setupError {
	eng, _, _, err := newEngine(env, s.cfg, ff)
	if err != nil {
		return &setupError{code: sysexits.Config, err: err}
	}
	// Folders built from message data are opened below the mail root
	// through an os.Root, which needs the root to exist.
	if err := os.MkdirAll(s.base, 0o700); err != nil {
		return &setupError{code: sysexits.TempFail, err: fmt.Errorf("mail directory: %w", err)}
	}
	root, err := os.OpenRoot(s.base)
	if err != nil {
		return &setupError{code: sysexits.TempFail, err: fmt.Errorf("mail directory: %w", err)}
	}
	s.root = root
	s.router = &filer.RulesRouter{Engine: eng, Base: s.base, Root: root, Guard: eng.Guard(), Envelope: envelope}
	return nil
}

// openLog opens the log file at path for appending, making its directory.
func openLog(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
}

// reportSetup prints a setup failure and returns its exit status.
func reportSetup(env *environ, prog string, e *setupError) int {
	if e.rulesFile != "" {
		reportRulesError(env, prog, e.rulesFile, e.err)
	} else if e.err != nil {
		fmt.Fprintf(env.stderr, "%s: %v\n", prog, e.err)
	}
	return e.code
}

// expandHome replaces a leading ~ or ~/ by $HOME. It keeps the rest as
// written: a trailing / (maildir) or /. (MH) says the folder's type.
func expandHome(env *environ, p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home := env.getenv("HOME"); home != "" {
			return strings.TrimRight(home, "/") + p[1:]
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
	s, serr := newSetup(env, "mfilter", &ff)
	if serr != nil {
		return reportSetup(env, "mfilter", serr)
	}
	defer s.close()
	return fileMbox(ctx, env, s, "stdin", env.stdin, &ff)
}

// runFile files every message of each mbox named on the command line.
func runFile(ctx context.Context, env *environ, args []string) int {
	fs := flag.NewFlagSet("mfilter file", flag.ContinueOnError)
	var ff filingFlags
	ff.register(fs, true)
	stateDir := fs.String("state-dir", "", "where the journals of unfinished runs live (default $XDG_STATE_HOME/mfilter)")
	stateLockTimeout := fs.Duration("state-lock-timeout", 0, "how long to wait for another run filing the same file (default 30s); then exit 75")
	if err := parseFlags(env, fs, args); err != nil {
		return usageExit(err)
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(env.stderr, "mfilter file: name at least one mbox file")
		return sysexits.Usage
	}
	s, serr := newSetup(env, "mfilter file", &ff)
	if serr != nil {
		return reportSetup(env, "mfilter file", serr)
	}
	defer s.close()
	state := *stateDir
	if state == "" {
		state = defaultStateDir(env)
	} else {
		state = expandHome(env, state)
	}
	code := sysexits.OK
	for _, path := range fs.Args() {
		f, err := os.Open(path)
		if err != nil {
			fmt.Fprintf(env.stderr, "mfilter file: %v\n", err)
			code = worse(code, sysexits.TempFail)
			continue
		}
		c := fileJournaled(ctx, env, s, path, f, &ff, state, *stateLockTimeout)
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
	opts := mailfmt.SplitOptions{Berkeley: ff.berkeley, Mboxrd: ff.readMboxrd}
	var src *mailfmt.Splitter
	if f, ok := r.(*os.File); ok {
		src = mailfmt.NewFileSplitter(f, opts) // mapped, when a regular file
	} else {
		src = mailfmt.NewSplitter(r, opts)
	}
	if src.Mapped() && env.mapped != nil {
		env.mapped()
	}
	sum, err := s.filer.FileAll(ctx, src)
	// FileAll is done with every message.
	if cerr := src.Close(); cerr != nil && err == nil {
		fmt.Fprintf(env.stderr, "mfilter: %s: %v\n", name, cerr)
	}
	if err != nil {
		fmt.Fprintf(env.stderr, "mfilter: %s: %v\n", name, err)
		return sysexits.TempFail
	}
	_ = sum
	return sysexits.OK
}
