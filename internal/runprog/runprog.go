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
}

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
	var out bytes.Buffer
	if opts.Stdout {
		cmd.Stdout = &out
	}
	errBuf := &limitedBuffer{max: 4096}
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
	case <-ctx.Done():
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return Result{Exit: -1, Stderr: errBuf.Bytes()}, fmt.Errorf("run %s: %w after %v", argv[0], ErrTimeout, opts.Timeout)
		}
		return Result{Exit: -1, Stderr: errBuf.Bytes()}, fmt.Errorf("run %s: %w", argv[0], ctx.Err())
	}
	res := Result{Stdout: out.Bytes(), Stderr: errBuf.Bytes()}
	var ee *exec.ExitError
	switch {
	case err == nil:
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

type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
