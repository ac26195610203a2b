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
	"strings"
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
		{"fetch-and-file", "claim the spool on the mail server over SSH and file it", runFetch},
		{"check", "check the rules file and report every problem", runCheck},
		{"test", "show what the rules do with messages, writing nothing", runTest},
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
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	env := &environ{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	os.Exit(run(ctx, env, os.Args[1:]))
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
       mfilter deliver [-f SENDER] [options] < message

With no command, mfilter splits the mbox on stdin (like formail -s procmail)
and files every message. Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(env.stdout, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprint(env.stdout, `
Options (all modes):
  --maildir DIR     base directory for relative folders (default $HOME)
  --default FOLDER  where messages go (default Maildir/): a trailing /
                    means maildir, /. means MH, anything else an mbox
  --log FILE        append procmail's log abstract for each delivery
  -Y, --berkeley    ignore Content-Length fields (procmail -Y)
  --mboxrd          write mbox folders as mboxrd (>From quoting undoable)
  --lock-timeout D  give up waiting for a folder lock after D (default 5m)
Options (mbox modes):
  --rescue FILE     mbox for messages that could not be filed
                    (default <maildir>/mfilter-rescue.mbox)

Exit status: 0 all delivered, 64 usage, 75 temporary failure (try again;
nothing lost), 78 configuration error. See mfilter(1).
`)
	return sysexits.OK
}

// errUsage marks command-line mistakes (exit 64).
var errUsage = errors.New("usage")
