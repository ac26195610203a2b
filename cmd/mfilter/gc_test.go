package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// resetGC puts Go's defaults back for a test and restores what was set
// before it when the test ends.
func resetGC(t *testing.T) {
	pct := debug.SetGCPercent(100)
	lim := debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() {
		debug.SetGCPercent(pct)
		debug.SetMemoryLimit(lim)
	})
}

func TestTuneGC(t *testing.T) {
	resetGC(t)
	tests := []struct {
		name      string
		env       map[string]string
		wantPct   int
		wantLim   int64
		wantTuner bool
	}{
		{"defaults", nil, gcPercent, gcMinLimit, true},
		{"GOGC set", map[string]string{"GOGC": "100"}, 100, gcMinLimit, true},
		{"GOMEMLIMIT set", map[string]string{"GOMEMLIMIT": "1GiB"}, gcPercent, math.MaxInt64, false},
		{"both set", map[string]string{"GOGC": "100", "GOMEMLIMIT": "1GiB"}, 100, math.MaxInt64, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The runtime read the variables at start: here they stay
			// unset and the test's values stand for what it read.
			debug.SetGCPercent(100)
			debug.SetMemoryLimit(math.MaxInt64)
			tuner := tuneGC(func(k string) string { return tt.env[k] })
			if got := debug.SetGCPercent(100); got != tt.wantPct {
				t.Errorf("GC percent = %d, want %d", got, tt.wantPct)
			}
			if got := debug.SetMemoryLimit(-1); got != tt.wantLim {
				t.Errorf("memory limit = %d, want %d", got, tt.wantLim)
			}
			if (tuner != nil) != tt.wantTuner {
				t.Errorf("tuner = %v, want one: %v", tuner, tt.wantTuner)
			}
		})
	}
}

// TestGCTunerHold keeps the limit at its floor for the few megabytes
// that ordinary mail holds, raises it above what large mail holds, so
// that the collector does not run without pause, and never lowers it.
func TestGCTunerHold(t *testing.T) {
	resetGC(t)
	tuner := tuneGC(func(string) string { return "" })
	limit := func() int64 { return debug.SetMemoryLimit(-1) }
	tuner.hold(4 << 20) // 1,000 messages of 4 KiB
	if got := limit(); got != gcMinLimit {
		t.Errorf("holding 4 MiB: limit %d, want the floor %d", got, gcMinLimit)
	}
	tuner.hold(100 << 20)
	want := int64(gcHeldBase + gcPerHeldByte*(100<<20))
	if got := limit(); got != want || got < 2*(100<<20) {
		t.Errorf("holding 100 MiB: limit %d, want %d (at least twice what is held)", got, want)
	}
	tuner.hold(1 << 20)
	if got := limit(); got != want {
		t.Errorf("holding less again moved the limit to %d, want %d kept", got, want)
	}
}

// TestGCTunerHoldConcurrent raises the limit from several goroutines, as
// the filer's reader and writer do: the runtime ends with the largest.
func TestGCTunerHoldConcurrent(t *testing.T) {
	resetGC(t)
	tuner := tuneGC(func(string) string { return "" })
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				tuner.hold((i*8 + g) << 12)
			}
		}()
	}
	wg.Wait()
	want := int64(gcHeldBase + gcPerHeldByte*((1999*8+7)<<12))
	if got := debug.SetMemoryLimit(-1); got != want {
		t.Errorf("limit %d after concurrent raises, want the largest, %d", got, want)
	}
}

// TestMappedGC: a mapped input lowers the collector's percent, unless
// GOGC is the user's.
func TestMappedGC(t *testing.T) {
	resetGC(t)
	if f := mappedGC(func(k string) string { return map[string]string{"GOGC": "300"}[k] }); f != nil {
		t.Error("GOGC set, and a mapped input would still change the collector's percent")
	}
	f := mappedGC(func(string) string { return "" })
	debug.SetGCPercent(gcPercent)
	f()
	if got := debug.SetGCPercent(100); got != gcPercentMapped {
		t.Errorf("GC percent = %d after a mapped input, want %d", got, gcPercentMapped)
	}
}

// TestFileInputMapped: mfilter < mbox maps a regular file and tells
// main (environ.mapped); an mbox through a pipe is read as it comes.
// Both file every message.
func TestFileInputMapped(t *testing.T) {
	mbox := []byte("From a@b  Mon Jan  1 00:00:00 2024\nSubject: one\n\nbody\n\nFrom c@d  Tue Jan  2 00:00:00 2024\nSubject: two\n\nbody\n\n")
	for _, tc := range []struct {
		name       string
		open       func(t *testing.T) *os.File
		wantMapped bool
	}{
		{"file", func(t *testing.T) *os.File {
			path := filepath.Join(t.TempDir(), "in.mbox")
			if err := os.WriteFile(path, mbox, 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}, true},
		{"pipe", func(t *testing.T) *os.File {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			go func() { w.Write(mbox); w.Close() }()
			return r
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			in := tc.open(t)
			defer in.Close()
			mapped := false
			var stderr strings.Builder
			env := &environ{stdin: in, stdout: io.Discard, stderr: &stderr,
				getenv: func(k string) string {
					if k == "HOME" {
						return base
					}
					return ""
				},
				mapped: func() { mapped = true }}
			if code := run(context.Background(), env, []string{"--maildir", base, "--default", "md/"}); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			if mapped != tc.wantMapped {
				t.Errorf("mapped = %v, want %v", mapped, tc.wantMapped)
			}
			if got, _ := os.ReadDir(filepath.Join(base, "md", "new")); len(got) != 2 {
				t.Errorf("%d messages filed, want 2", len(got))
			}
		})
	}
}

// TestLargeMessagesFromFileBounded: an mbox of large messages, given as a
// file (and so mapped), is filed in memory bounded by the messages in
// flight, not the file: the map's pages of each finished batch leave
// resident memory, also those the writer read again after the splitter.
func TestLargeMessagesFromFileBounded(t *testing.T) {
	base := t.TempDir()
	path := filepath.Join(base, "in.mbox")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat(strings.Repeat("x", 76)+"\n", 2<<20/77) // 2 MB
	const n = 120                                                  // 240 MB
	for i := range n {
		fmt.Fprintf(f, "From a@b  Tue Jan  2 03:04:05 2024\nSubject: big %d\n\n%s\n", i, body)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	// GNU time forks mfilter from its own small process: Go starts a
	// child sharing the test's memory until exec, and the kernel counts
	// the test's peak as the child's.
	usage := filepath.Join(base, "usage")
	cmd := exec.Command("/usr/bin/time", "-f", "%M", "-o", usage, mfilterBin, "--maildir", base, "--default", "md/")
	cmd.Stdin = in
	cmd.Env = append(os.Environ(), "HOME="+base)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mfilter: %v: %s", err, out)
	}
	if got, _ := os.ReadDir(filepath.Join(base, "md", "new")); len(got) != n {
		t.Fatalf("%d messages filed, want %d", len(got), n)
	}
	b, err := os.ReadFile(usage)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("GNU time wrote %q: %v", b, err)
	}
	// Batches end at 4 MiB: the read-ahead, a batch being written and
	// three committing hold about 20 MB of messages.
	peak := kb << 10
	t.Logf("peak RSS %d MB", peak>>20)
	if peak > 80<<20 {
		t.Errorf("peak RSS %d MB filing %d MB of 2 MB messages", peak>>20, n*2)
	}
}

// TestOneLargeMessageFromFile: one 200 MB message read from a file is
// filed holding at most its size plus 64 MB, into a maildir and into an
// mbox, by mfilter file, mfilter < file and mfilter deliver < file (it
// peaked at 0.4 to 0.7 GB: the splitter, the read and the mbox From_
// line each copied it).
func TestOneLargeMessageFromFile(t *testing.T) {
	base := t.TempDir()
	const size = 200 << 20
	line := strings.Repeat("y", 99) + "\n"
	write := func(name, first string) string {
		p := filepath.Join(base, name)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		w := bufio.NewWriterSize(f, 1<<20)
		w.WriteString(first + "Subject: large\n\n")
		for n := 0; n < size; n += len(line) {
			w.WriteString(line)
		}
		w.WriteString("\n")
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		return p
	}
	mbox := write("in.mbox", "From a@b  Tue Jan  2 03:04:05 2024\n")
	eml := write("in.eml", "")
	for _, c := range []struct {
		name, in string
		args     []string
	}{
		{"file-maildir", "", []string{"file", "--maildir", base, "--default", "md/", mbox}},
		{"file-mbox", "", []string{"file", "--maildir", base, "--default", "box", mbox}},
		{"stdin-maildir", mbox, []string{"--maildir", base, "--default", "md2/"}},
		{"deliver-maildir", eml, []string{"deliver", "--maildir", base, "--default", "md3/"}},
		{"deliver-mbox", eml, []string{"deliver", "--maildir", base, "--default", "box2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			usage := filepath.Join(base, "usage-"+c.name)
			cmd := exec.Command("/usr/bin/time", append([]string{"-f", "%M", "-o", usage, mfilterBin}, c.args...)...)
			if c.in != "" {
				in, err := os.Open(c.in)
				if err != nil {
					t.Fatal(err)
				}
				defer in.Close()
				cmd.Stdin = in
			}
			cmd.Env = append(os.Environ(), "HOME="+base)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("mfilter %v: %v: %s", c.args, err, out)
			}
			b, err := os.ReadFile(usage)
			if err != nil {
				t.Fatal(err)
			}
			kb, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatalf("GNU time wrote %q: %v", b, err)
			}
			// What it filed goes: five copies of 200 MB are a lot of disk.
			for _, folder := range []string{"md", "md2", "md3", "box", "box2"} {
				os.RemoveAll(filepath.Join(base, folder))
			}
			peak := kb << 10
			t.Logf("peak RSS %d MB for a %d MB message", peak>>20, size>>20)
			if peak > size+64<<20 {
				t.Errorf("peak RSS %d MB, more than the message (%d MB) plus 64 MB", peak>>20, size>>20)
			}
		})
	}
}
