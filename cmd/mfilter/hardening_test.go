package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mfilter/mfilter/internal/sshtest"
	"github.com/mfilter/mfilter/internal/sysexits"
)

// lockFilesUnder lists the dotlock files (NAME.lock) left under dir.
func lockFilesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() && strings.HasSuffix(p, ".lock") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// TestRescueFullLeavesNoLock files mboxes under RLIMIT_FSIZE (a full
// disk) where the folder and the rescue mbox both fail to grow: every
// run must end with 75 and leave no NAME.lock behind, whichever of them
// fails first and whether some rescues fit before the limit.
func TestRescueFullLeavesNoLock(t *testing.T) {
	for _, tc := range []struct {
		name       string
		rescueSize int // bytes already in the rescue mbox
		limit      int // RLIMIT_FSIZE
		folder     string
	}{
		{"all-fail-mbox", 5000, 4096, "box"},
		{"all-fail-maildir", 5000, 20, "md/"},
		{"some-rescued", 0, 600, "box"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			box := filepath.Join(base, "box")
			if err := os.WriteFile(box, e2eMbox(100), 0o600); err != nil {
				t.Fatal(err)
			}
			rescue := filepath.Join(base, "rescue.mbox")
			if err := os.WriteFile(rescue, []byte(strings.Repeat("x", tc.rescueSize)), 0o600); err != nil {
				t.Fatal(err)
			}
			input := filepath.Join(base, "in.mbox")
			if err := os.WriteFile(input, e2eMbox(20), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{
				{"file", "--maildir", base, "--default", tc.folder, "--rescue", rescue, input},
				{"--maildir", base, "--default", tc.folder, "--rescue", rescue},
			} {
				in, _ := os.ReadFile(input)
				code, stderr := e2eRun{args: args, stdin: in, home: base, fsize: uint64(tc.limit)}.run(t)
				if code != sysexits.TempFail {
					t.Errorf("%v: exit %d, want 75; stderr:\n%s", args[0], code, stderr)
				}
				if locks := lockFilesUnder(t, base); len(locks) > 0 {
					t.Errorf("%v: lock files left behind: %v\nstderr:\n%s", args[0], locks, stderr)
				}
			}
		})
	}
}

// smallSpool returns n small messages, each with a unique X-Test-ID.
func smallSpool(n int, tag string) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, "From s%d@example.org  Mon Jan  1 00:00:00 2024\nX-Test-ID: %s-%d\nMessage-ID: <%s-%d@example.org>\nSubject: message %d\n\nbody %d\n\n", i, tag, i, tag, i, i, i)
	}
	return out
}

// concurrentRules send a tenth of the messages to an mbox, the rest to
// a maildir, so that both kinds of folder are checked.
const concurrentRules = "default: inbox/\nrules:\n  - if: {headers: '^X-Test-ID: .*7$'}\n    then: {folder: some.mbox}\n"

// TestFetchConcurrentRuns starts fetch-and-file runs on one local spool
// and state directory at the same time and a little apart: each message
// must be filed exactly once, every run must exit 0 (it waited for the
// other) or, with a short --state-lock-timeout, 75 saying that another
// run is at work.
func TestFetchConcurrentRuns(t *testing.T) {
	for _, tc := range []struct {
		name   string
		delays []time.Duration // when each run starts
		wait   string          // --state-lock-timeout, "" for the default
	}{
		{"together-then-later", []time.Duration{0, 0, 300 * time.Millisecond}, ""},
		{"apart", []time.Duration{0, 300 * time.Millisecond, 800 * time.Millisecond}, ""},
		{"short-wait", []time.Duration{0, 0, 100 * time.Millisecond}, "50ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newFetchEnv(t, nil, concurrentRules)
			msgs := smallSpool(20000, "c")
			e.appendSpool(msgs)
			args := []string{"fetch-and-file", "--rules", e.rules, "--maildir", e.mail, "--state-dir", e.state, "--local-spool", e.spool}
			if tc.wait != "" {
				args = append(args, "--state-lock-timeout", tc.wait)
			}
			type result struct {
				code int
				out  string
			}
			results := make([]result, len(tc.delays))
			var wg sync.WaitGroup
			for i, d := range tc.delays {
				wg.Add(1)
				go func() {
					defer wg.Done()
					time.Sleep(d)
					code, out := e.run(args...)
					results[i] = result{code, out}
				}()
			}
			wg.Wait()
			busy := 0
			for i, r := range results {
				switch {
				case r.code == 0:
				case r.code == 75 && tc.wait != "" && strings.Contains(r.out, "another mfilter"):
					busy++
				default:
					t.Errorf("run %d: exit %d: %s", i, r.code, r.out)
				}
			}
			if tc.wait != "" && busy == 0 {
				t.Errorf("no run gave up waiting with a 50ms --state-lock-timeout")
			}
			checkFiled(t, e, msgs)
		})
	}
}

// TestFetchConcurrentRunsSSH: the same over SSH, two runs at once and
// a third a little later.
func TestFetchConcurrentRunsSSH(t *testing.T) {
	srv := sshtest.Start(t, sshtest.Options{})
	e := newFetchEnv(t, srv, concurrentRules)
	msgs := smallSpool(20000, "s")
	e.appendSpool(msgs)
	var wg sync.WaitGroup
	for i, d := range []time.Duration{0, 0, 300 * time.Millisecond} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(d)
			if code, out := e.run(e.args(srv.Addr)...); code != 0 {
				t.Errorf("run %d: exit %d: %s", i, code, out)
			}
		}()
	}
	wg.Wait()
	checkFiled(t, e, msgs)
}

// TestDuplicateConcurrentDeliveries delivers one Message-ID with 24
// concurrent mfilter deliver processes through a duplicate: rule: the
// check and the record must be one step across processes, so exactly one
// copy reaches the inbox and the others are dropped as duplicates.
func TestDuplicateConcurrentDeliveries(t *testing.T) {
	base := t.TempDir()
	rules := filepath.Join(base, "rules.yaml")
	if err := os.WriteFile(rules, []byte("maildir: "+base+"\ndefault: inbox/\nrules:\n  - if: {duplicate: true}\n    then: {folder: dups/}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A large message keeps each process long between its check and
	// its record; all of them are started and get their input at once.
	msg := []byte("From: a@example.org\nMessage-ID: <same@example.org>\nSubject: once\n\n" + strings.Repeat("body line\n", 200000))
	for round := range 3 {
		const n = 24
		cmds := make([]*exec.Cmd, n)
		pipes := make([]io.WriteCloser, n)
		outs := make([]bytes.Buffer, n)
		for i := range n {
			cmds[i] = exec.Command(mfilterBin, "deliver", "--rules", rules)
			cmds[i].Env = append(os.Environ(), "HOME="+base)
			cmds[i].Stderr = &outs[i]
			var err error
			if pipes[i], err = cmds[i].StdinPipe(); err != nil {
				t.Fatal(err)
			}
			if err := cmds[i].Start(); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pipes[i].Write(msg)
				pipes[i].Close()
			}()
		}
		wg.Wait()
		for i := range n {
			if err := cmds[i].Wait(); err != nil {
				t.Errorf("delivery %d: %v: %s", i, err, outs[i].String())
			}
		}
		inbox := e2eMaildirFiles(t, filepath.Join(base, "inbox"))
		dups := e2eMaildirFiles(t, filepath.Join(base, "dups"))
		if len(inbox) != 1 || len(dups) != (round+1)*n-1 {
			t.Fatalf("round %d: %d in the inbox, %d in dups/, want 1 and %d", round, len(inbox), len(dups), (round+1)*n-1)
		}
	}
}
