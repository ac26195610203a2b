// The runtime reads no cgroup limits for GOMAXPROCS, at start or later:
// it would keep two descriptors open for them (an MDA may run under a low
// descriptor limit) and spend start-up time on them; mfilter's work is
// one or two goroutines deep.
//
//go:debug containermaxprocs=0
//go:debug updatemaxprocs=0

// Command mfilter files mail: it splits mboxes, delivers single messages
// as an MDA, and (later) fetches remote spools over SSH. See mfilter(1).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/mfilter/mfilter/internal/sysexits"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "devel"

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *environ, args []string) int
}

var commands []command

func init() {
	commands = []command{
		{"deliver", "deliver one message from stdin (an MDA, like procmail -d)", runDeliver},
		{"file", "split mbox files and file every message", runFile},
		{"fetch-and-file", "file the server's spool (over SSH) or IMAP folders", runFetch},
		{"send", "send a message through the SSH link, like sendmail (-t, -i, -f)", runSend},
		{"tunnel", "forward a local SMTP port to the relay through the SSH link", runTunnel},
		{"refile", "file maildirs, MH folders or mboxes again by the rules", runRefile},
		{"check", "check the rules file and report every problem", runCheck},
		{"test", "show what the rules do with messages, writing nothing", runTest},
		{"convert", "turn a procmailrc into rules; --verify compares them", runConvert},
		{"version", "print the version", runVersion},
		{"help", "show this help", runHelp},
	}
}

// environ is what a command may touch besides its arguments, so that tests
// can run commands in-process.
type environ struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	// hold, when set, hears how many bytes of messages a filer holds in
	// memory (main sizes the collector's memory limit with it).
	hold func(bytes int)
	// mapped, when set, hears that the messages come from a mapped file
	// (main lets the collector run more often: see gcPercentMapped).
	mapped func()
}

func main() {
	gc := tuneGC(os.Getenv)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	env := &environ{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	if gc != nil {
		env.hold = gc.hold
	}
	env.mapped = mappedGC(os.Getenv)
	os.Exit(run(ctx, env, os.Args[1:]))
}

// The garbage collector runs less often than Go's default (GOGC=100)
// and within a memory limit that follows the mail held, unless GOGC or
// GOMEMLIMIT say otherwise. mfilter's live heap is mostly the messages
// read ahead and in the batches being written and committed, a few
// megabytes of ordinary mail, while a large mbox makes tens of
// megabytes of garbage: at 100 the collector runs every few megabytes.
// At gcPercent it runs a fifth as often; the limit, gcMinLimit or
// gcHeldBase plus gcPerHeldByte for each byte held, whichever is more,
// keeps the peak where it was for small mail and above the live heap
// for large mail, where a fixed limit would make the collector run
// without pause (see bench/README.md). Messages split from a mapped
// file are not copied onto the heap, which then holds little and makes
// little garbage: gcPercentMapped, Go's default, keeps that heap small
// (the peak of a long run where a short run's is) for a collection or
// two more in a run.
const (
	gcPercent       = 400
	gcPercentMapped = 100
	gcMinLimit      = 20 << 20
	gcHeldBase      = 8 << 20
	gcPerHeldByte   = 3
)

// mappedGC returns what environ.mapped does: set gcPercentMapped, unless
// GOGC (from getenv) is the user's.
func mappedGC(getenv func(string) string) func() {
	if getenv("GOGC") != "" {
		return nil
	}
	return func() { debug.SetGCPercent(gcPercentMapped) }
}

// gcTuner raises the collector's memory limit as the mail held grows.
type gcTuner struct {
	limit atomic.Int64 // what was last set, for a check without the lock
	mu    sync.Mutex   // orders the raises: the runtime keeps the last one set
}

// tuneGC applies gcPercent and the memory limit, each unless the
// environment (getenv) sets its variable. It is process-wide, so only
// main calls it. It returns the tuner that moves the limit, or nil when
// GOMEMLIMIT is the user's.
func tuneGC(getenv func(string) string) *gcTuner {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if getenv("GOMEMLIMIT") != "" {
		return nil
	}
	t := &gcTuner{}
	t.limit.Store(gcMinLimit)
	debug.SetMemoryLimit(gcMinLimit)
	return t
}

// hold raises the memory limit, never lowers it, to fit held bytes of
// messages, their copies and the rest of the heap.
func (t *gcTuner) hold(held int) {
	want := gcHeldBase + gcPerHeldByte*int64(held)
	if want <= t.limit.Load() {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if want > t.limit.Load() {
		debug.SetMemoryLimit(want)
		t.limit.Store(want)
	}
}

func run(ctx context.Context, env *environ, args []string) int {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		for _, c := range commands {
			if c.name == args[0] {
				return c.run(ctx, env, args[1:])
			}
		}
		fmt.Fprintf(env.stderr, "mfilter: unknown command %q (try mfilter help)\n", args[0])
		return sysexits.Usage
	}
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
		return runHelp(ctx, env, nil)
	}
	if len(args) > 0 && (args[0] == "--version" || args[0] == "-version") {
		return runVersion(ctx, env, nil)
	}
	return runSplit(ctx, env, args)
}

func runVersion(_ context.Context, env *environ, _ []string) int {
	fmt.Fprintf(env.stdout, "mfilter %s\n", version)
	return sysexits.OK
}

func runHelp(_ context.Context, env *environ, _ []string) int {
	fmt.Fprint(env.stdout, `usage: mfilter [options] < mbox
       mfilter file [options] MBOX...
       mfilter deliver [-f SENDER] [-a RECIPIENT] [options] < message
       mfilter fetch-and-file [--host HOST] [options]
       mfilter send [-t] [-i] [-f SENDER] [options] [RECIPIENT...] < message
       mfilter tunnel [--listen 127.0.0.1:2525] [options]
       mfilter check [--rules FILE]
       mfilter test [--rules FILE] [-f SENDER] [-a RECIPIENT] MESSAGE...

With no command, mfilter splits the mbox on stdin (like formail -s procmail)
and files every message. Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(env.stdout, "  %-15s %s\n", c.name, c.summary)
	}
	fmt.Fprint(env.stdout, `
Options of the filing commands:
  --rules FILE      the rules (default $XDG_CONFIG_HOME/mfilter/rules.yaml,
                    then ~/.mfilter.yaml); --no-rules files everything into
                    the default folder
  --maildir DIR     base directory for relative folders (default: the
                    rules' maildir:, else $HOME)
  --default FOLDER  where mail goes that no rule delivers (default: the
                    rules' default:, else Maildir/); a trailing / means
                    maildir, /. means MH, anything else an mbox
  --log FILE        append procmail's log abstract for each delivery
  -Y, --berkeley    ignore Content-Length fields (procmail -Y)
  --mboxrd          write mbox folders as mboxrd (>From quoting undoable)
  --lock-timeout D  give up waiting for a folder lock after D (default 5m)
  --rescue FILE     mbox modes: where messages that could not be filed go
                    (default <maildir>/mfilter-rescue.mbox)
  --read-mboxrd     mbox modes: the input is mboxrd
file: --state-dir DIR (journals: a killed run is finished by running it
  again) --state-lock-timeout D (wait for another run on the file, 30s)
fetch-and-file: --host --port --user --identity --known-hosts --spool
  --compress --accept-new-host-key --local-spool --state-dir
  --state-lock-timeout --timeout -v --watch --poll D
  (or the rules' fetch: section: a spool, an imap: folder, or a list
  of them); see mfilter(1).

Exit status: 0 all delivered (or no mail), 64 usage, 65 unreadable message
file (test), 75 temporary failure (try again; nothing lost), 77 insecure
rules file, 78 configuration error (nothing touched). See mfilter(1).
`)
	return sysexits.OK
}

// errUsage marks command-line mistakes (exit 64).
var errUsage = errors.New("usage")
