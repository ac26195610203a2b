package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
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

// fileKillRules send messages to a maildir, an mbox and an MH folder.
const fileKillRules = "default: inbox/\nrules:\n  - if: {headers: '^X-Test-ID: .*[19]$'}\n    then: {folder: some.mbox}\n  - if: {headers: '^X-Test-ID: .*8$'}\n    then: {folder: mh/.}\n"

// fileRun runs mfilter file on input with the rules in dir; it returns
// the command, started, when kill is set, else waits.
func fileCmd(dir, input string) *exec.Cmd {
	cmd := exec.Command(mfilterBin, "file", "--rules", filepath.Join(dir, "rules.yaml"), "--maildir", filepath.Join(dir, "Mail"),
		"--state-dir", filepath.Join(dir, "state"), input)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	return cmd
}

func fileDir(t *testing.T) string {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(fileKillRules), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestFileSurvivesKills kills mfilter file with SIGKILL at random
// moments of its run, over many trials, and runs it again (sometimes
// killing that run too): every message of the mbox must then be filed
// exactly once, and no journal be left.
func TestFileSurvivesKills(t *testing.T) {
	msgs := smallSpool(3000, "k")
	rng := rand.New(rand.NewPCG(13, 4))
	probe := fileDir(t)
	input := filepath.Join(probe, "in.mbox")
	if err := os.WriteFile(input, bytes.Join(msgs, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if out, err := fileCmd(probe, input).CombinedOutput(); err != nil {
		t.Fatalf("probe run: %v %s", err, out)
	}
	full := time.Since(start)
	checkFileFiled(t, probe, msgs)
	checkNoFileState(t, probe)
	// Kills land at a random moment of the first half of a run's time;
	// a loaded machine makes runs slower or faster than the probe, so a
	// run that finished before its kill halves the window, and trials go
	// on (up to 48) until 8 runs were killed while running.
	killed, trials := 0, 0
	window := full / 2
	for trial := 0; trial < 48 && (trial < 16 || killed < 8); trial++ {
		trials++
		dir := fileDir(t)
		input := filepath.Join(dir, "in.mbox")
		if err := os.WriteFile(input, bytes.Join(msgs, nil), 0o600); err != nil {
			t.Fatal(err)
		}
		// Killed once or twice; a run that finished before its kill
		// filed everything (running it again would file it again, as
		// it should).
		finished := false
		for kill := 0; kill < 1+trial%2 && !finished; kill++ {
			cmd := fileCmd(dir, input)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// From when it has started filing (its journal is there),
			// at a random moment of the first half of a run's time.
			for deadline := time.Now().Add(full); time.Now().Before(deadline); time.Sleep(100 * time.Microsecond) {
				if js, _ := filepath.Glob(filepath.Join(dir, "state", "*.journal")); len(js) > 0 {
					break
				}
			}
			time.Sleep(time.Duration(rng.Int64N(int64(window) + 1)))
			cmd.Process.Signal(syscall.SIGKILL)
			err := cmd.Wait()
			var ee *exec.ExitError
			if errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled() {
				// Killed after it removed its journal, on its way out:
				// it had filed everything (the journal is made before
				// the first delivery).
				js, _ := filepath.Glob(filepath.Join(dir, "state", "*.journal"))
				if len(js) == 0 && len(filedIDs(t, filepath.Join(dir, "Mail"))) > 0 {
					finished = true
					continue
				}
				if kill == 0 {
					killed++
				}
				continue
			}
			if err != nil {
				t.Fatalf("trial %d: %v", trial, err)
			}
			finished = true
			window = max(window/2, time.Millisecond)
		}
		if !finished {
			if out, err := fileCmd(dir, input).CombinedOutput(); err != nil {
				t.Fatalf("trial %d: the run after the kill: %v %s", trial, err, out)
			}
		}
		checkFileFiled(t, dir, msgs)
	}
	t.Logf("%d of %d runs killed while running", killed, trials)
	if killed < 8 {
		t.Errorf("only %d of %d runs were killed while running", killed, trials)
	}
}

// checkFileFiled checks that every message of msgs is filed exactly once
// under dir/Mail and that nothing but a state lock's file is left in
// dir/state: a run killed after it removed its journal, before it
// removed its lock file, leaves that file (harmless: the lock went with
// the process, and the next run takes it and removes it).
func checkFileFiled(t *testing.T, dir string, msgs [][]byte) {
	t.Helper()
	got, want := filedIDs(t, filepath.Join(dir, "Mail")), wantIDs(msgs)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("filed %d messages, the mbox had %d; first difference: %s", len(got), len(want), firstMismatch(got, want))
	}
	j, _ := filepath.Glob(filepath.Join(dir, "state", "*"))
	if j = slices.DeleteFunc(j, func(p string) bool { return strings.HasSuffix(p, ".lock") }); len(j) > 0 {
		t.Fatalf("state left: %v", j)
	}
}

// checkNoFileState checks that a run that ended by itself left nothing in
// dir/state, not even its lock's file.
func checkNoFileState(t *testing.T, dir string) {
	t.Helper()
	if j, _ := filepath.Glob(filepath.Join(dir, "state", "*")); len(j) > 0 {
		t.Fatalf("state left after a run that ended: %v", j)
	}
}

// snapshotTree copies the files under src to dst: hard links for the
// files a later run never changes (maildir and MH messages), copies for
// the rest (mboxes, which it appends to).
func snapshotTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if e.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		if strings.HasSuffix(p, ".mbox") {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(to, b, 0o600)
		}
		return os.Link(p, to)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// killAtCommitted starts cmd and kills it with SIGKILL as soon as a
// journal in state holds a committed record (a run in the middle of its
// work); it returns that journal's name and bytes, or "" when the run
// ended first.
func killAtCommitted(t *testing.T, cmd *exec.Cmd, state string) (string, []byte) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	for {
		select {
		case <-done:
			return "", nil
		default:
		}
		js, _ := filepath.Glob(filepath.Join(state, "*.journal"))
		if len(js) == 1 {
			if b, _ := os.ReadFile(js[0]); bytes.Contains(b, []byte(`"committed"`)) {
				cmd.Process.Signal(syscall.SIGKILL)
				<-done
				b, _ = os.ReadFile(js[0])
				return filepath.Base(js[0]), b
			}
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// TestFileJournalCut kills mfilter file in the middle of its run, then,
// for every byte offset of the journal's tail, runs it again on a copy
// of the folders with the journal cut there (a torn last record, a lost
// tail): every message must be filed exactly once, never twice.
func TestFileJournalCut(t *testing.T) {
	msgs := smallSpool(1500, "j")
	dir := fileDir(t)
	input := filepath.Join(dir, "in.mbox")
	if err := os.WriteFile(input, bytes.Join(msgs, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	var journal []byte
	var jname string
	for try := 0; journal == nil; try++ {
		if try == 20 {
			t.Fatal("no run was killed with a journal")
		}
		os.RemoveAll(filepath.Join(dir, "Mail"))
		os.RemoveAll(filepath.Join(dir, "state"))
		jname, journal = killAtCommitted(t, fileCmd(dir, input), filepath.Join(dir, "state"))
	}
	// Every byte offset of the last record (a torn record), and
	// every record boundary of the twenty before them (a lost tail).
	var cuts []int
	lines := bytes.SplitAfter(journal, []byte("\n"))
	off := len(journal)
	for k := len(lines) - 1; k >= 0 && k >= len(lines)-23; k-- {
		off -= len(lines[k])
		if k >= len(lines)-2 {
			for c := off + 1; c < off+len(lines[k]); c++ {
				cuts = append(cuts, c)
			}
		}
		cuts = append(cuts, off)
	}
	cuts = append(cuts, len(journal))
	t.Logf("journal of %d bytes, %d cuts", len(journal), len(cuts))
	snap := filepath.Join(t.TempDir(), "snap")
	snapshotTree(t, filepath.Join(dir, "Mail"), snap)
	for _, cut := range cuts {
		run := fileDir(t)
		snapshotTree(t, snap, filepath.Join(run, "Mail"))
		if err := os.MkdirAll(filepath.Join(run, "state"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(run, "state", jname), journal[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		// The same file (the journal is keyed by its inode), so the
		// runs take turns with it.
		if out, err := fileCmd(run, input).CombinedOutput(); err != nil {
			t.Fatalf("cut at %d of %d: %v %s", cut, len(journal), err, out)
		}
		checkFileFiled(t, run, msgs)
		os.RemoveAll(run)
	}
}

// TestFetchJournalCut: the same for fetch-and-file --local-spool, whose
// journal records the claim too: a run killed in the middle, then for
// each cut of its journal's tail a run on copies of the folders and of
// the claimed file files every message exactly once.
func TestFetchJournalCut(t *testing.T) {
	msgs := smallSpool(1500, "fj")
	args := func(e *fetchEnv) []string {
		return []string{"fetch-and-file", "--rules", e.rules, "--maildir", e.mail, "--state-dir", e.state, "--local-spool", e.spool}
	}
	var e *fetchEnv
	var journal []byte
	var jname string
	for try := 0; journal == nil; try++ {
		if try == 20 {
			t.Fatal("no run was killed with a journal")
		}
		e = newFetchEnv(t, nil, fileKillRules)
		e.appendSpool(msgs)
		jname, journal = killAtCommitted(t, e.cmd(args(e)...), e.state)
	}
	claimed := e.leftovers()
	if len(claimed) != 1 {
		t.Fatalf("claimed files: %v", claimed)
	}
	claimData, err := os.ReadFile(claimed[0])
	if err != nil {
		t.Fatal(err)
	}
	var cuts []int
	lines := bytes.SplitAfter(journal, []byte("\n"))
	off := len(journal)
	for k := len(lines) - 1; k >= 0 && k >= len(lines)-23; k-- {
		off -= len(lines[k])
		if k >= len(lines)-2 {
			for c := off + 1; c < off+len(lines[k]); c++ {
				cuts = append(cuts, c)
			}
		}
		cuts = append(cuts, off)
	}
	cuts = append(cuts, len(journal))
	t.Logf("journal of %d bytes, %d cuts", len(journal), len(cuts))
	snap := filepath.Join(t.TempDir(), "snap")
	snapshotTree(t, e.mail, snap)
	for _, cut := range cuts {
		if err := os.RemoveAll(e.mail); err != nil {
			t.Fatal(err)
		}
		snapshotTree(t, snap, e.mail)
		os.Remove(e.spool)
		if err := os.WriteFile(claimed[0], claimData, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(e.state, jname), journal[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		if code, out := e.run(args(e)...); code != 0 {
			t.Fatalf("cut at %d of %d: exit %d: %s", cut, len(journal), code, out)
		}
		got, want := filedIDs(t, e.mail), wantIDs(msgs)
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("cut at %d of %d: filed %d messages, the spool had %d; first difference: %s", cut, len(journal), len(got), len(want), firstMismatch(got, want))
		}
	}
}

// TestFileConcurrentRuns starts mfilter file on one large mbox twice at
// once and a third time a little later: one run files it, the others
// wait for it and file nothing (filing it again while it is being filed
// would file every message twice); every message is filed exactly once.
func TestFileConcurrentRuns(t *testing.T) {
	msgs := smallSpool(20000, "fc")
	dir := fileDir(t)
	input := filepath.Join(dir, "in.mbox")
	if err := os.WriteFile(input, bytes.Join(msgs, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i, d := range []time.Duration{0, 0, 300 * time.Millisecond} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(d)
			if out, err := fileCmd(dir, input).CombinedOutput(); err != nil {
				t.Errorf("run %d: %v %s", i, err, out)
			}
		}()
	}
	wg.Wait()
	checkFileFiled(t, dir, msgs)
}

// TestFileSurvivesKillsWithRescues: as TestFileSurvivesKills, with a
// tenth of the messages going to a folder that cannot be made (a file
// where its directory must be), so that they are rescued: after the
// kills and a last run, each message is exactly once in its folder or in
// the rescue mbox.
func TestFileSurvivesKillsWithRescues(t *testing.T) {
	msgs := smallSpool(3000, "r")
	rules := fileKillRules + "  - if: {headers: '^X-Test-ID: .*3$'}\n    then: {folder: broken/sub/}\n"
	rng := rand.New(rand.NewPCG(5, 6))
	setup := func() (string, string) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(rules), 0o600)
		os.MkdirAll(filepath.Join(dir, "Mail"), 0o700)
		os.WriteFile(filepath.Join(dir, "Mail", "broken"), nil, 0o600)
		input := filepath.Join(dir, "in.mbox")
		os.WriteFile(input, bytes.Join(msgs, nil), 0o600)
		return dir, input
	}
	dir, input := setup()
	start := time.Now()
	if out, err := fileCmd(dir, input).CombinedOutput(); err == nil {
		t.Fatalf("probe run: exit 0, want 75 (rescues): %s", out)
	}
	full := time.Since(start)
	// As in TestFileSurvivesKills: a run that finished before its kill
	// halves the window, and trials go on (up to 24) until 4 were killed.
	killed, trials := 0, 0
	window := full / 2
	for trial := 0; trial < 24 && (trial < 8 || killed < 4); trial++ {
		trials++
		dir, input := setup()
		cmd := fileCmd(dir, input)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(full); time.Now().Before(deadline); time.Sleep(100 * time.Microsecond) {
			if js, _ := filepath.Glob(filepath.Join(dir, "state", "*.journal")); len(js) > 0 {
				break
			}
		}
		time.Sleep(time.Duration(rng.Int64N(int64(window) + 1)))
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		var ee *exec.ExitError
		js, _ := filepath.Glob(filepath.Join(dir, "state", "*.journal"))
		if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() || len(js) == 0 {
			window = max(window/2, time.Millisecond)
		} else {
			killed++
			out, err := fileCmd(dir, input).CombinedOutput()
			if !errors.As(err, &ee) || ee.ExitCode() != 75 {
				t.Fatalf("trial %d: the run after the kill: %v %s", trial, err, out)
			}
		}
		checkFileFiled(t, dir, msgs)
	}
	if killed < 4 {
		t.Errorf("only %d of %d runs were killed while running", killed, trials)
	}
}
