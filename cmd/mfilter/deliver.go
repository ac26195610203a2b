package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mfilter/mfilter/internal/filer"
	"github.com/mfilter/mfilter/internal/mailfmt"
	"github.com/mfilter/mfilter/internal/sysexits"
	"github.com/mfilter/mfilter/rules"
)

// runDeliver is the MDA: it delivers exactly one message from stdin,
// never splitting it. Its exit status is 0 (delivered, or kept) or 75
// (try again later) and nothing else, whatever is wrong with its setup or
// the machine: MTAs bounce on every other status, and so the mail would
// be lost by mfilter's fault. Before it exits 75 it reads the rest of its
// input, so that the caller never meets a broken pipe.
func runDeliver(ctx context.Context, env *environ, args []string) (code int) {
	in := &inputTracker{r: env.stdin}
	d := &mda{env: env, in: in}
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(env.stderr, "mfilter deliver: internal error (a bug; please report it): %v\n%s", r, debug.Stack())
			code = sysexits.TempFail
		}
		if d.delivered {
			code = sysexits.OK
		}
		if code != sysexits.OK {
			code = sysexits.TempFail
			in.drain(ctx)
		}
	}()
	return d.run(ctx, args)
}

// mda is one run of mfilter deliver.
type mda struct {
	env       *environ
	in        *inputTracker
	ff        filingFlags
	delivered bool // the message is on disk: whatever happens next, exit 0
}

const mdaProg = "mfilter deliver"

func (d *mda) run(ctx context.Context, args []string) int {
	if err := checkDescriptors(); err != nil {
		return d.tempFail(err)
	}
	fs := flag.NewFlagSet(mdaProg, flag.ContinueOnError)
	d.ff.register(fs, false)
	fs.StringVar(&d.ff.sender, "f", "", "envelope sender: replace or create the From_ line (procmail -f)")
	fs.StringVar(&d.ff.recipient, "a", "", "envelope recipient, for envelope-to: conditions")
	if err := parseFlags(d.env, fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return sysexits.OK
		}
		return d.tempFail(errors.New("bad command line (see above): fix the MDA setting; the message stays with the caller"))
	}
	if fs.NArg() > 0 {
		return d.tempFail(fmt.Errorf("unexpected argument %q (the message comes on stdin): fix the MDA setting", fs.Arg(0)))
	}
	d.ff.logOptional = true
	msg, err := readMessage(d.in, inputSize(d.env.stdin), messageBudget())
	if err != nil {
		return d.tempFail(fmt.Errorf("read message: %w", err))
	}
	// As procmail -d does, blank lines before the message are dropped.
	msg = bytes.TrimLeft(msg, "\n")
	if d.ff.sender != "" {
		msg = mailfmt.SetEnvelopeSender(msg, d.ff.sender, time.Now())
	}
	s, serr := newSetup(d.env, mdaProg, &d.ff)
	if serr != nil {
		if serr.code == sysexits.TempFail || serr.code == sysexits.Usage {
			// A usage error is the MDA setting's: the message waits
			// with the caller until it is fixed.
			return d.tempFail(serr.err)
		}
		s, err = d.keepSetup(serr)
		if err != nil {
			return d.tempFail(err)
		}
	}
	defer s.close()
	return d.file(ctx, s, msg)
}

// file files msg with s, and keeps it in the default folder when the
// rules sent it somewhere no retry can reach.
func (d *mda) file(ctx context.Context, s *setup, msg []byte) int {
	err := s.filer.FileOne(ctx, msg)
	if err != nil && filer.Permanent(err) {
		reason := fmt.Sprintf("%v; kept in %s instead", err, s.def.Path)
		fmt.Fprintf(d.env.stderr, "%s: %s\n", mdaProg, reason)
		s.note(reason)
		s.filer.Router = filer.DefaultRouter{Folder: s.def}
		err = s.filer.FileOne(ctx, msg)
	}
	if err != nil {
		return d.tempFail(fmt.Errorf("not delivered: %w", err))
	}
	d.delivered = true
	return sysexits.OK
}

// keepSetup is the setup of an implicit keep: the rules cannot be used
// (serr says why), so the message goes to the default folder, as procmail
// and Sieve keep mail when the filter is broken. A rules file with errors
// still names that folder when its maildir and default settings parse on
// their own; an insecure file is not trusted at all.
func (d *mda) keepSetup(serr *setupError) (*setup, error) {
	keep := d.ff
	keep.rules, keep.noRules = "", true
	var ie *rules.InsecureError
	switch {
	case errors.As(serr.err, &ie):
		if keep.def == "" {
			keep.def = "~/Maildir/"
		}
	case serr.rulesFile != "":
		ks := rules.ReadKeepSettings(serr.rulesFile)
		keep.base = firstNonEmpty(keep.base, ks.Maildir)
		keep.def = firstNonEmpty(keep.def, ks.Default)
		keep.logFile = firstNonEmpty(keep.logFile, ks.Log)
	}
	s, kerr := newSetup(d.env, mdaProg, &keep)
	if kerr != nil {
		return nil, fmt.Errorf("the rules cannot be used (%v), and neither can the default folder: %v", serr.err, kerr.err)
	}
	printRuleErrors(d.env, serr.err)
	reason := fmt.Sprintf("the rules cannot be used (%s); delivering to %s (implicit keep)", oneLine(serr.err), s.def.Path)
	fmt.Fprintf(d.env.stderr, "%s: %s\n", mdaProg, reason)
	s.note(reason)
	return s, nil
}

// tempFail reports err and returns 75.
func (d *mda) tempFail(err error) int {
	fmt.Fprintf(d.env.stderr, "%s: %v; try again later\n", mdaProg, err)
	return sysexits.TempFail
}

// note writes a line about this run to the log, if there is one.
func (s *setup) note(text string) {
	if s.filer != nil && s.filer.Log.Enabled() {
		s.filer.Log.Note("mfilter: " + text)
	}
}

func oneLine(err error) string {
	var el rules.ErrorList
	if errors.As(err, &el) && len(el) > 0 {
		if len(el) == 1 {
			return el[0].Error()
		}
		return fmt.Sprintf("%s, and %d more error(s)", el[0].Error(), len(el)-1)
	}
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

// inputTracker reads the message and knows whether all of it was read.
type inputTracker struct {
	r   io.Reader
	eof bool
}

func (t *inputTracker) Read(p []byte) (int, error) {
	if t.eof {
		return 0, io.EOF
	}
	done := false
	defer func() {
		if !done {
			t.eof = true // the reader panicked: read no more
		}
	}()
	n, err := t.r.Read(p)
	done = true
	if err != nil {
		t.eof = true
	}
	return n, err
}

// drain reads and discards the rest of the input, so that a caller
// still writing the message (fetchmail, getmail) does not get EPIPE and
// abort its whole run: it is told 75 and keeps the message. It stops
// when ctx is cancelled (SIGTERM).
func (t *inputTracker) drain(ctx context.Context) {
	if t.eof {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// A reader that panicked once is not read again.
		defer func() { recover() }()
		io.Copy(io.Discard, t)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// errTooLarge is a message that does not fit the memory this process
// may use.
var errTooLarge = errors.New("the message does not fit in this process's address-space limit (RLIMIT_AS)")

// readMessage reads all of r, failing rather than crashing when it would
// need more than max bytes (max <= 0: no bound): the Go runtime dies with
// exit status 2 when it runs out of address space, which MTAs bounce.
func readMessage(r io.Reader, size, max int64) ([]byte, error) {
	if max > 0 && size > max {
		return nil, errTooLarge
	}
	if max > 0 {
		r = io.LimitReader(r, max+1)
	}
	var msg []byte
	var err error
	if size > 0 {
		// The size is known: one buffer of it, not the 2.25 times
		// that growing one holds at its peak.
		msg, err = readAllSized(r, size)
	} else {
		msg, err = io.ReadAll(r)
	}
	if err == nil && max > 0 && int64(len(msg)) > max {
		return nil, errTooLarge
	}
	return msg, err
}

// readAllSized reads all of r, expecting size bytes (it may be more: a
// file can grow).
func readAllSized(r io.Reader, size int64) ([]byte, error) {
	msg := make([]byte, 0, size+1)
	for {
		n, err := r.Read(msg[len(msg):cap(msg)])
		msg = msg[:len(msg)+n]
		if err == io.EOF {
			return msg, nil
		}
		if err != nil {
			return msg, err
		}
		if len(msg) == cap(msg) {
			msg = append(msg, 0)[:len(msg)]
		}
	}
}

// inputSize is how many bytes are left to read from stdin when it is a
// regular file, else 0.
func inputSize(stdin io.Reader) int64 {
	f, ok := stdin.(*os.File)
	if !ok {
		return 0
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return 0
	}
	off, err := f.Seek(0, io.SeekCurrent)
	if err != nil || off > st.Size() {
		return 0
	}
	return st.Size() - off
}

// messageBudget is the largest message deliver reads under the process's
// address-space limit, or 0 when there is none. A message is held about
// four times over at its peak (read buffer growth, a From_ line added, a
// rule's edit), plus the runtime's own growth: a fifth of what is left.
func messageBudget() int64 {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_AS, &lim); err != nil || lim.Cur == unix.RLIM_INFINITY {
		return 0
	}
	left := int64(lim.Cur) - addressSpaceUsed() - 64<<20 - threadStacks()
	if left < 1<<20 {
		return 1 << 20
	}
	return left / 5
}

// cgoThreads is how many more threads the runtime may start while
// deliver reads and files a message.
const cgoThreads = 16

// threadStacks is the address space that new threads may reserve: none
// for Go's own threads, RLIMIT_STACK each for the C library's.
func threadStacks() int64 {
	var lim unix.Rlimit
	if !withCgo || unix.Getrlimit(unix.RLIMIT_STACK, &lim) != nil {
		return 0
	}
	if lim.Cur == unix.RLIM_INFINITY || lim.Cur > 64<<20 {
		lim.Cur = 64 << 20
	}
	return cgoThreads * int64(lim.Cur)
}

// addressSpaceUsed is the process's mapped address space in bytes.
func addressSpaceUsed() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	pages, err := strconv.ParseInt(strings.Fields(string(b) + " 0")[0], 10, 64)
	if err != nil {
		return 0
	}
	return pages * int64(os.Getpagesize())
}

// freeDescriptorsNeeded is how many free descriptors deliver needs: two
// for the runtime's poller, two to deliver.
const freeDescriptorsNeeded = 4

// checkDescriptors makes sure the Go runtime's poller has its
// descriptors before delivery takes the last free ones: the runtime
// starts it at the first file opened and dies (exit 2) when it cannot.
// Too few free descriptors to deliver at all is an error (75).
func checkDescriptors() error {
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for len(fds) < freeDescriptorsNeeded {
		// Raw descriptors: os.Open would start the poller.
		fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("%d free file descriptors, a delivery needs %d: %w", len(fds), freeDescriptorsNeeded, err)
		}
		fds = append(fds, fd)
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	fds = nil
	f, err := os.Open(os.DevNull)
	if err != nil {
		return fmt.Errorf("cannot open %s: %w", os.DevNull, err)
	}
	return f.Close()
}
