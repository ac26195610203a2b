package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mfilter/mfilter/internal/mailfmt"
	"github.com/mfilter/mfilter/internal/mailtest"
)

// lockTestMessage is message n of writer w: a unique id, a body whose
// size varies (so that appends of different lengths interleave), and the
// lines that mbox escaping must handle.
func lockTestMessage(w string, n int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From %s@example.com  Tue Jan  2 03:04:05 2024\n", w)
	fmt.Fprintf(&b, "From: %s <%s@example.com>\nSubject: message %d of %s\nX-Test-Id: %s-%d\n\n", w, w, n, w, w, n)
	for i := range 1 + (n*37)%200 {
		fmt.Fprintf(&b, "%s %d line %d: the quick brown fox\n", w, n, i)
		if i%50 == 7 {
			b.WriteString("From the body, which mbox escaping must quote\n>From already quoted\n\n")
		}
	}
	return b.Bytes()
}

var testIDRE = regexp.MustCompile(`(?m)^X-Test-Id: (\S+)$`)

// TestLockInterop runs two `mfilter deliver` loops, one procmail loop
// and a loop of `mfilter < mbox` (30 messages a run, which keeps the
// mbox's locks from one append to the next of a batch) at once, 300
// messages each, into one mbox. All take the dotlock box.lock and an
// fcntl lock; if any side ignored the others' locks, appends would
// interleave. The result must split, with mfilter's splitter and with the
// real formail -s, into exactly the 1,200 messages, each byte for byte
// what procmail writes for it.
func TestLockInterop(t *testing.T) {
	procmail := e2eTool(t, "procmail")
	formail := e2eTool(t, "formail")
	dir := t.TempDir()
	box := filepath.Join(dir, "box")
	// LOCKSLEEP=0: procmail retries a busy dotlock at once instead of
	// sleeping 8 s (sleep(0) returns immediately).
	rc := filepath.Join(dir, "rc")
	if err := os.WriteFile(rc, []byte("MAILDIR="+dir+"\nLOCKSLEEP=0\n:0:\nbox\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const each = 300
	// A delivery stuck on a lock (procmail waits for ever) must fail
	// the test, not hang it.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	type loop struct {
		name  string
		cmd   func(msg []byte) *exec.Cmd
		batch int // messages a run (default 1)
	}
	loops := []loop{
		{"mfA", func([]byte) *exec.Cmd {
			return exec.CommandContext(ctx, mfilterBin, "deliver", "--maildir", dir, "--default", "box")
		}, 1},
		{"mfB", func([]byte) *exec.Cmd {
			return exec.CommandContext(ctx, mfilterBin, "deliver", "--maildir", dir, "--default", "box")
		}, 1},
		{"pm", func([]byte) *exec.Cmd { return exec.CommandContext(ctx, procmail, "-m", rc) }, 1},
		{"mfS", func([]byte) *exec.Cmd {
			return exec.CommandContext(ctx, mfilterBin, "--maildir", dir, "--default", "box")
		}, 30},
	}
	want := make(map[string][]byte)
	for _, l := range loops {
		for n := range each {
			msg := lockTestMessage(l.name, n)
			want[fmt.Sprintf("%s-%d", l.name, n)] = mailfmt.MboxBytes(msg, nil, false, false)
		}
	}

	start := time.Now()
	var wg sync.WaitGroup
	times := make([]time.Duration, len(loops))
	for i, l := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			batch := max(l.batch, 1)
			for n := 0; n < each; n += batch {
				var in []byte
				for k := n; k < n+batch; k++ {
					in = append(in, lockTestMessage(l.name, k)...)
				}
				cmd := l.cmd(nil)
				cmd.Stdin = bytes.NewReader(in)
				cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+filepath.Join(dir, ".config"))
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("%s message %d: %v\n%s", l.name, n, err, out)
					return
				}
			}
			times[i] = time.Since(t0)
		}()
	}
	wg.Wait()
	total := time.Since(start)
	t.Logf("%d deliveries in %v (loops: mfilter deliver %v, %v; procmail %v; mfilter < mbox %v)", len(want), total.Round(time.Millisecond),
		times[0].Round(time.Millisecond), times[1].Round(time.Millisecond), times[2].Round(time.Millisecond), times[3].Round(time.Millisecond))
	if t.Failed() {
		return
	}

	data, err := os.ReadFile(box)
	if err != nil {
		t.Fatal(err)
	}
	check := func(how string, msgs [][]byte) {
		t.Helper()
		seen := make(map[string]bool)
		for i, m := range msgs {
			ids := testIDRE.FindAllSubmatch(m, -1)
			if len(ids) != 1 {
				t.Errorf("%s: message %d has %d ids (interleaved appends?): %.200q", how, i, len(ids), m)
				continue
			}
			id := string(ids[0][1])
			if seen[id] {
				t.Errorf("%s: %s appears twice", how, id)
			}
			seen[id] = true
			if !bytes.Equal(m, want[id]) {
				t.Errorf("%s: %s differs from what procmail writes for it:\n%s", how, id, e2eFirstDiff(m, want[id]))
			}
		}
		if len(msgs) != len(want) || len(seen) != len(want) {
			t.Errorf("%s: %d messages, %d distinct ids; want %d", how, len(msgs), len(seen), len(want))
		}
	}

	var split [][]byte
	sp := mailfmt.NewSplitter(bytes.NewReader(data), mailfmt.SplitOptions{})
	for {
		m, err := sp.Next()
		if err != nil {
			break
		}
		split = append(split, m)
	}
	check("mailfmt.Splitter", split)

	// formail hands each message to the program; a separator line that
	// no message contains marks where each one ended.
	const sep = "\x01--formail-message-end--\x01\n"
	cmd := exec.Command(formail, "-s", "sh", "-c", `cat; printf '\001--formail-message-end--\001\n'`)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("formail -s: %v", err)
	}
	parts := strings.Split(string(out), sep)
	if parts[len(parts)-1] != "" {
		t.Fatalf("formail output does not end with a separator")
	}
	var fm [][]byte
	for _, p := range parts[:len(parts)-1] {
		fm = append(fm, []byte(p))
	}
	check("formail -s", fm)

	for _, n := range mailtest.ListDir(t, dir) {
		if n != "box" && n != "rc" {
			t.Errorf("left behind in the mail directory: %s", n)
		}
	}
	if total > 2*time.Minute {
		t.Errorf("took %v, want under 2 minutes", total)
	}
}

func e2eTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is needed (test.sh installs it): %v", name, err)
	}
	return p
}

// e2eFirstDiff shows where a and b part.
func e2eFirstDiff(a, b []byte) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	lo := max(0, i-40)
	return fmt.Sprintf("at byte %d: got %q, want %q", i, a[lo:min(len(a), i+40)], b[lo:min(len(b), i+40)])
}
