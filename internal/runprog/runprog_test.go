package runprog

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestBackgroundChildHoldingOutput: a program that exits leaving a child
// in the background with its stderr (and stdout) open is done when it
// exits: it used to be waited for until the timeout, and the MTA retried
// (and ran the pipe again) every time.
func TestBackgroundChildHoldingOutput(t *testing.T) {
	for _, c := range []struct {
		name   string
		stdout bool
		script string
	}{
		{"stderr", false, "cat >/dev/null; (sleep 30 >/dev/null &); exit 0"},
		{"stdout of a filter", true, "cat; (sleep 30 2>/dev/null &); exit 0"},
		{"stdin unread", false, "(sleep 30 >/dev/null 2>&1 &); exit 3"},
	} {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			res, err := Exec{}.Run(context.Background(), []string{"sh", "-c", c.script}, []byte(strings.Repeat("line\n", 100000)), Options{Timeout: 20 * time.Second, Stdout: c.stdout})
			took := time.Since(start)
			if err != nil {
				t.Fatalf("err %v after %v", err, took)
			}
			if took > 3*time.Second {
				t.Errorf("took %v: the background child was waited for", took)
			}
			if c.name == "stdin unread" && res.Exit != 3 {
				t.Errorf("exit %d, want 3", res.Exit)
			}
			if c.stdout && len(res.Stdout) != 500000 {
				t.Errorf("filter output %d bytes, want 500000", len(res.Stdout))
			}
		})
	}
}

// TestOutputBounded: a filter that writes without end is stopped at
// MaxStdout, fast and without holding more than that.
func TestOutputBounded(t *testing.T) {
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	_, err := Exec{}.Run(context.Background(), []string{"sh", "-c", "cat >/dev/null; exec yes aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}, []byte("x\n"), Options{Timeout: 60 * time.Second, Stdout: true, MaxStdout: 8 << 20})
	if !errors.Is(err, ErrTooMuchOutput) {
		t.Fatalf("err %v, want ErrTooMuchOutput", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("took %v", took)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Errorf("allocated %d MB for an 8 MB limit", grew>>20)
	}
}

// TestStderrBounded: only the first StderrKept bytes of stderr are kept.
func TestStderrBounded(t *testing.T) {
	res, err := Exec{}.Run(context.Background(), []string{"sh", "-c", "head -c 50000000 /dev/zero | tr '\\0' e >&2; exit 1"}, nil, Options{Timeout: 60 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Exit != 1 || len(res.Stderr) != StderrKept {
		t.Errorf("exit %d, %d bytes of stderr kept, want 1 and %d", res.Exit, len(res.Stderr), StderrKept)
	}
}
