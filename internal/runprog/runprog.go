// Package runprog runs external programs for mfilter: rule conditions,
// filters, pipes and forwards. Programs get an argument vector, never a
// shell, so no message text can be interpreted as a command; the message
// goes on stdin; a timeout kills the program's whole process group.
package runprog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Result is how a program ended.
type Result struct {
	Exit   int    // exit status; -1 if killed by a signal
	Stdout []byte // only when asked for
	Stderr []byte // the first 4 KiB, for error messages
}

// ErrTimeout is returned when a program ran longer than its timeout.
var ErrTimeout = errors.New("timed out")

// Runner runs programs. Tests substitute their own.
type Runner interface {
	Run(ctx context.Context, argv []string, stdin []byte, opts Options) (Result, error)
}

// Options for one run.
type Options struct {
	Timeout time.Duration
	Stdout  bool     // capture stdout (filters); otherwise it is discarded
	Env     []string // extra NAME=value entries
	// MaxStdout bounds the output kept with Stdout (default
	// DefaultMaxStdout): a program that writes more is stopped, and the
	// run fails with ErrTooMuchOutput.
	MaxStdout int
}

// DefaultMaxStdout is how much output a filter may write by default.
const DefaultMaxStdout = 64 << 20

// ErrTooMuchOutput is returned when a program wrote more than MaxStdout.
var ErrTooMuchOutput = errors.New("wrote more output than allowed")

// drainTime is how long a program's descriptors are read after it
// exited: a child it left in the background may hold them open, and the
// program's work is done when it exits (as procmail sees it).
const drainTime = 500 * time.Millisecond

// StderrKept is how much of a program's standard error is kept for
// error messages; the rest is read and dropped.
const StderrKept = 4096

// Exec runs programs with os/exec.
type Exec struct{}

// Run starts argv with stdin and waits for it. The error is non-nil when
// the program could not be started, timed out, or ctx ended; a non-zero
// exit status is reported in Result, not as an error.
func (Exec) Run(ctx context.Context, argv []string, stdin []byte, opts Options) (Result, error) {
	if len(argv) == 0 || argv[0] == "" {
		return Result{}, errors.New("empty command")
	}
	if opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.WaitDelay = drainTime
	maxOut := opts.MaxStdout
	if maxOut <= 0 {
		maxOut = DefaultMaxStdout
	}
	overflow := make(chan struct{})
	out := &cappedBuffer{max: maxOut, overflow: overflow}
	if opts.Stdout {
		cmd.Stdout = out
	}
	errBuf := &limitedBuffer{max: StderrKept}
	cmd.Stderr = errBuf
	cmd.Env = append(os.Environ(), opts.Env...)
	// Its own process group, so that a timeout also stops its children.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return Result{}, fmt.Errorf("run %s: %w", argv[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-overflow:
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		// What it wrote up to the bound is kept: a variable set from a
		// program's output keeps it, as procmail's VAR=|cmd does.
		return Result{Exit: -1, Stdout: out.Bytes(), Stderr: errBuf.Bytes()}, fmt.Errorf("run %s: %w (%d bytes)", argv[0], ErrTooMuchOutput, maxOut)
	case <-ctx.Done():
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return Result{Exit: -1, Stdout: out.Bytes(), Stderr: errBuf.Bytes()}, fmt.Errorf("run %s: %w after %v", argv[0], ErrTimeout, opts.Timeout)
		}
		return Result{Exit: -1, Stderr: errBuf.Bytes()}, fmt.Errorf("run %s: %w", argv[0], ctx.Err())
	}
	res := Result{Stdout: out.Bytes(), Stderr: errBuf.Bytes()}
	var ee *exec.ExitError
	switch {
	case err == nil, errors.Is(err, exec.ErrWaitDelay):
		// ErrWaitDelay: it exited, and something it started still held
		// its output after drainTime.
	case errors.As(err, &ee):
		res.Exit = ee.ExitCode()
	default:
		// A program that stops reading its stdin early is not an error
		// in itself; its exit status says whether it worked.
		if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, io.ErrClosedPipe) {
			return res, fmt.Errorf("run %s: %w", argv[0], err)
		}
	}
	return res, nil
}

// Describe is a one-line message for a failed run.
func Describe(argv []string, res Result) string {
	msg := fmt.Sprintf("%s exited with status %d", argv[0], res.Exit)
	if res.Exit < 0 {
		msg = argv[0] + " was killed"
	}
	if s := strings.TrimSpace(string(res.Stderr)); s != "" {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[:i]
		}
		msg += ": " + s
	}
	return msg
}

// limitedBuffer keeps the first max bytes written and drops the rest.
// The buffer is a field, not embedded: an embedded bytes.Buffer's
// ReadFrom would let io.Copy (os/exec's) bypass Write and its bound.
type limitedBuffer struct {
	buf bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *limitedBuffer) Bytes() []byte { return b.buf.Bytes() }

// cappedBuffer keeps up to max bytes; past that it closes overflow once
// and refuses the rest, so that the writing program gets EPIPE.
// Not embedded, for the reason limitedBuffer gives.
type cappedBuffer struct {
	buf      bytes.Buffer
	max      int
	overflow chan struct{}
	over     bool
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if b.over {
		return 0, ErrTooMuchOutput
	}
	if b.buf.Len()+len(p) > b.max {
		b.buf.Write(p[:b.max-b.buf.Len()]) // what fits is kept
		b.over = true
		close(b.overflow)
		return 0, ErrTooMuchOutput
	}
	return b.buf.Write(p)
}

func (b *cappedBuffer) Bytes() []byte { return b.buf.Bytes() }
