package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/confine"
	"github.com/mfilter/mfilter/internal/mailfmt"
	"github.com/mfilter/mfilter/internal/send"
	"github.com/mfilter/mfilter/internal/sysexits"
	"github.com/mfilter/mfilter/rules"
)

// rulesPath finds the rules file: --rules, else
// $XDG_CONFIG_HOME/mfilter/rules.yaml, else ~/.mfilter.yaml. "" means
// there is none (then every message goes to the default folder).
func rulesPath(env *environ, flagValue string) (string, error) {
	if flagValue != "" {
		return expandHome(env, flagValue), nil
	}
	var candidates []string
	xdg := env.getenv("XDG_CONFIG_HOME")
	if xdg == "" && env.getenv("HOME") != "" {
		xdg = filepath.Join(env.getenv("HOME"), ".config")
	}
	if xdg != "" {
		candidates = append(candidates, filepath.Join(xdg, "mfilter", "rules.yaml"))
	}
	if home := env.getenv("HOME"); home != "" {
		candidates = append(candidates, filepath.Join(home, ".mfilter.yaml"))
	}
	for _, c := range candidates {
		if _, err := os.Stat(c); err == nil {
			return c, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
	}
	return "", nil
}

// loadRules loads the rules and maps failures to exit codes: 77 for an
// insecure file, 78 for anything else wrong with it.
func loadRules(env *environ, prog, path string) (*rules.Config, int) {
	cfg, err := rules.Load(path)
	if err == nil {
		return cfg, sysexits.OK
	}
	reportRulesError(env, prog, path, err)
	return nil, rulesExitCode(err)
}

// rulesExitCode is the exit status of the batch and interactive commands
// for a rules file that cannot be loaded.
func rulesExitCode(err error) int {
	var ie *rules.InsecureError
	if errors.As(err, &ie) {
		return sysexits.NoPerm
	}
	return sysexits.Config
}

// reportRulesError prints why the rules file at path cannot be used.
func reportRulesError(env *environ, prog, path string, err error) {
	var el rules.ErrorList
	if errors.As(err, &el) {
		printRuleErrors(env, el)
		fmt.Fprintf(env.stderr, "%s: %d error(s) in %s; no mail was touched\n", prog, len(el), path)
		return
	}
	fmt.Fprintf(env.stderr, "%s: %v\n", prog, err)
}

// printRuleErrors prints each error of an ErrorList on a line of its own
// and reports whether err was one.
func printRuleErrors(env *environ, err error) bool {
	var el rules.ErrorList
	if !errors.As(err, &el) {
		return false
	}
	for _, e := range el {
		fmt.Fprintln(env.stderr, e)
	}
	return true
}

// runCheck loads the rules and reports every problem (exit 78), an
// insecure file (exit 77), or "ok".
func runCheck(_ context.Context, env *environ, args []string) int {
	fs := flag.NewFlagSet("mfilter check", flag.ContinueOnError)
	rulesFlag := fs.String("rules", "", "rules file (default $XDG_CONFIG_HOME/mfilter/rules.yaml, then ~/.mfilter.yaml)")
	if err := parseFlags(env, fs, args); err != nil {
		return usageExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "mfilter check: unexpected argument %q (use --rules FILE)\n", fs.Arg(0))
		return sysexits.Usage
	}
	path, err := rulesPath(env, *rulesFlag)
	if err != nil {
		fmt.Fprintf(env.stderr, "mfilter check: %v\n", err)
		return sysexits.Config
	}
	if path == "" {
		fmt.Fprintln(env.stderr, "mfilter check: no rules file (give --rules FILE, or create $XDG_CONFIG_HOME/mfilter/rules.yaml or ~/.mfilter.yaml)")
		return sysexits.Config
	}
	cfg, code := loadRules(env, "mfilter check", path)
	if cfg == nil {
		return code
	}
	_, ferr := parseFetchSources(cfg.Sections["fetch"])
	_, serr := send.ParseSettings(cfg.Sections["send"])
	if ferr != nil || serr != nil {
		for _, err := range []error{ferr, serr} {
			if err != nil {
				reportRuleErrors(env, err)
			}
		}
		fmt.Fprintf(env.stderr, "mfilter check: errors in %s; no mail was touched\n", path)
		return sysexits.Config
	}
	for _, w := range rules.Lint(cfg) {
		fmt.Fprintf(env.stderr, "warning: %v\n", w)
	}
	fmt.Fprintf(env.stdout, "%s: ok (%d rules)\n", path, countRules(cfg.Rules))
	return sysexits.OK
}

func countRules(rs []*rules.Rule) int {
	n := len(rs)
	for _, r := range rs {
		n += countRules(r.Rules)
	}
	return n
}

// runTest evaluates each message against the rules and prints what would
// happen and why, writing nothing: no folder, no pipe, no forward, no
// duplicate cache. Program conditions and filters do run, since the
// outcome depends on them.
func runTest(ctx context.Context, env *environ, args []string) int {
	fs := flag.NewFlagSet("mfilter test", flag.ContinueOnError)
	rulesFlag := fs.String("rules", "", "rules file")
	sender := fs.String("f", "", "envelope sender")
	recipient := fs.String("a", "", "envelope recipient")
	base := fs.String("maildir", "", "base directory for relative folders (default from the rules, then $HOME)")
	def := fs.String("default", "", "default folder (default from the rules, then Maildir/)")
	casesFile := fs.String("cases", "", "check the rules against a cases file (YAML: a list of {message: PATH, folder: FOLDER, ...})")
	writeRoot := fs.String("write-cases", "", "print a cases file for the messages in the folder tree DIR, as they are filed now")
	if err := parseFlags(env, fs, args); err != nil {
		return usageExit(err)
	}
	if *writeRoot != "" {
		if err := writeCases(env.stdout, *writeRoot); err != nil {
			fmt.Fprintf(env.stderr, "mfilter test: %v\n", err)
			return sysexits.IOErr
		}
		return sysexits.OK
	}
	if fs.NArg() == 0 && *casesFile == "" {
		fmt.Fprintln(env.stderr, "mfilter test: name at least one message file (- for stdin), or --cases FILE")
		return sysexits.Usage
	}
	path, err := rulesPath(env, *rulesFlag)
	if err != nil || path == "" {
		fmt.Fprintln(env.stderr, "mfilter test: no rules file (give --rules FILE)")
		return sysexits.Config
	}
	cfg, code := loadRules(env, "mfilter test", path)
	if cfg == nil {
		return code
	}
	ff := filingFlags{base: *base, def: *def}
	eng, baseDir, defFolder, err := newEngine(env, cfg, &ff)
	if err != nil {
		fmt.Fprintf(env.stderr, "mfilter test: %v\n", err)
		return sysexits.Config
	}
	eng.ReadOnlyDuplicates() // writes nothing, locks nothing
	if *casesFile != "" {
		return runCases(ctx, env, &caseEngine{eng: eng, base: baseDir, home: env.getenv("HOME")}, *casesFile)
	}
	status := sysexits.OK
	printed := false
	for _, name := range fs.Args() {
		var msg []byte
		if name == "-" {
			msg, err = io.ReadAll(env.stdin)
		} else {
			msg, err = os.ReadFile(name)
		}
		if err != nil {
			fmt.Fprintf(env.stderr, "mfilter test: %v\n", err)
			status = sysexits.DataErr
			continue
		}
		msg = bytes.TrimLeft(msg, "\n")
		if *sender != "" {
			// As mfilter deliver -f does: the rules see the From_ line.
			msg = mailfmt.SetEnvelopeSender(msg, *sender, time.Now())
		}
		if printed {
			fmt.Fprintln(env.stdout)
		}
		printed = true
		fmt.Fprintf(env.stdout, "== %s\n", name)
		dec, err := eng.Evaluate(ctx, msg, rules.EvalOptions{Envelope: rules.Envelope{Sender: *sender, Recipient: *recipient}, Trace: true})
		if err != nil {
			fmt.Fprintf(env.stdout, "error: %v (the message would be kept for a later try: exit 75)\n", err)
			status = sysexits.TempFail
			continue
		}
		for _, l := range dec.Trace {
			fmt.Fprintln(env.stdout, l)
		}
		for _, w := range dec.Warnings {
			fmt.Fprintf(env.stdout, "warning: %s\n", w)
		}
		for _, l := range dec.Logs {
			fmt.Fprintf(env.stdout, "log: %s\n", l)
		}
		fmt.Fprintln(env.stdout, "result:")
		printSteps(env.stdout, dec.Steps, "  ", baseDir, defFolder)
		dec.Abort()
	}
	return status
}

// printSteps prints steps, each followed by its fallbacks.
func printSteps(w io.Writer, steps []rules.Step, indent, base, def string) {
	for _, s := range steps {
		fmt.Fprintf(w, "%s%s\n", indent, describeStep(s, base, def))
		if len(s.Fallback) > 0 {
			fmt.Fprintf(w, "%s  if it fails:\n", indent)
			printSteps(w, s.Fallback, indent+"    ", base, def)
		}
	}
}

func describeStep(s rules.Step, base, def string) string {
	switch s.Kind {
	case rules.StepFolder:
		f, err := deliver.ParseFolder(base, s.Folder)
		kind := "?"
		if err == nil {
			kind = f.Kind.String() + " " + f.Path
		}
		verb := "deliver to"
		if s.Copy {
			verb = "copy to"
		}
		if s.Default {
			verb = "default folder"
		}
		return fmt.Sprintf("%s %s (%s)", verb, s.Folder, kind)
	case rules.StepPipe:
		verb := "pipe to"
		if s.Copy {
			verb = "pipe a copy to"
		}
		if s.Input != "" && s.Input != "message" {
			verb += " (the " + s.Input + ")"
		}
		return fmt.Sprintf("%s %s", verb, quoteArgv(s.Argv))
	case rules.StepForward:
		verb := "forward with"
		if s.Copy {
			verb = "forward a copy with"
		}
		return fmt.Sprintf("%s %s", verb, quoteArgv(s.Argv))
	case rules.StepDiscard:
		return "discard"
	case rules.StepReply:
		return fmt.Sprintf("reply to %s with %s (once per %v, state %s)", s.Reply.To, quoteArgv(s.Reply.Argv), s.Reply.Period, s.Reply.Dir)
	}
	return "?"
}

func quoteArgv(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$") {
			a = fmt.Sprintf("%q", a)
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

// newEngine builds the rule engine from the rules and the flags; flags
// win over the rules' settings. It returns the mail base directory and
// the default folder it settled on.
func newEngine(env *environ, cfg *rules.Config, ff *filingFlags) (*rules.Engine, string, string, error) {
	base := ff.base
	if base == "" && cfg.Maildir != nil {
		base = cfg.Maildir.Value
	}
	if base == "" {
		base = env.getenv("HOME")
	}
	base = expandHome(env, base)
	if base == "" {
		return nil, "", "", errors.New("no mail base directory: set maildir: in the rules or give --maildir")
	}
	if abs, err := filepath.Abs(base); err == nil {
		base = abs
	}
	def := ff.def
	if def == "" && cfg.Default != nil {
		def = cfg.Default.Value
	}
	if def == "" {
		def = "Maildir/"
	}
	def = expandHome(env, def)
	host, _ := os.Hostname()
	vars := map[string]string{
		"HOME":    env.getenv("HOME"),
		"USER":    firstNonEmpty(env.getenv("USER"), env.getenv("LOGNAME")),
		"LOGNAME": firstNonEmpty(env.getenv("LOGNAME"), env.getenv("USER")),
		"HOST":    host,
		"MAILDIR": base,
		"DEFAULT": def,
	}
	send := append([]string(nil), rules.DefaultMfilterSend...)
	if self, err := os.Executable(); err == nil {
		send[0] = self
	}
	if cfg.Path != "" {
		if abs, err := filepath.Abs(cfg.Path); err == nil {
			send = append(send[:2:2], append([]string{"--rules", abs}, send[2:]...)...)
		}
	}
	guard := confine.New(base, ownFiles(env, cfg)...)
	guard.Reserve(ff.logFile, ff.rescue)
	eng := rules.NewEngine(cfg, rules.Options{Default: def, Vars: vars, Berkeley: ff.berkeley, MfilterSend: send, Guard: guard})
	return eng, base, def, nil
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// ownFiles lists mfilter's own files and directories that a path built
// from message data must never name: the rules file and its directory's
// mfilter files, the state directory, and the rules' log and duplicate
// caches as written (relative ones are below the mail directory).
func ownFiles(env *environ, cfg *rules.Config) []string {
	home := env.getenv("HOME")
	state := env.getenv("XDG_STATE_HOME")
	if state == "" && home != "" {
		state = filepath.Join(home, ".local", "state")
	}
	var out []string
	if state != "" {
		out = append(out, filepath.Join(state, "mfilter"))
	}
	if home != "" {
		out = append(out, filepath.Join(home, ".config", "mfilter"), filepath.Join(home, ".mfilter.yaml"))
	}
	if cfg == nil {
		return out
	}
	if cfg.Path != "" {
		if abs, err := filepath.Abs(cfg.Path); err == nil {
			out = append(out, abs)
		}
	}
	if cfg.Log != nil {
		out = append(out, expandHome(env, cfg.Log.Value))
	}
	for _, c := range cfg.DuplicateCaches() {
		out = append(out, expandHome(env, c))
	}
	for _, d := range cfg.ReplyStates() {
		out = append(out, expandHome(env, d))
	}
	return out
}
