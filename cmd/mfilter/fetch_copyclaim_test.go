package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mfilter/mfilter/internal/sshtest"
)

var writerSeq atomic.Int64

// postfixAppend appends msgs to spool as Postfix's local(8) does on
// Debian (mailbox_delivery_lock = fcntl, dotlock): the dotlock SPOOL.lock
// made by a link, then an fcntl write lock on the spool, the append, and
// both let go. A dotlock whose pid is not a live process is broken, as
// liblockfile (dotlockfile) does; an empty one is waited for.
func postfixAppend(t *testing.T, spool string, msgs [][]byte) error {
	lock := spool + ".lock"
	tmp := fmt.Sprintf("%s.writer.%d.%d", lock, os.Getpid(), writerSeq.Add(1))
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o444); err != nil {
		return err
	}
	defer os.Remove(tmp)
	deadline := time.Now().Add(60 * time.Second)
	for os.Link(tmp, lock) != nil {
		if b, err := os.ReadFile(lock); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 && syscall.Kill(pid, 0) == syscall.ESRCH {
				os.Remove(lock)
				continue
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(lock)
			pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			return fmt.Errorf("dotlock %s held for a minute: %q, process %s", lock, b, st)
		}
		time.Sleep(time.Millisecond)
	}
	defer os.Remove(lock)
	f, err := os.OpenFile(spool, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	lk := syscall.Flock_t{Type: syscall.F_WRLCK}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLKW, &lk); err != nil {
		return err
	}
	for _, m := range msgs {
		if _, err := f.Write(m); err != nil {
			return err
		}
	}
	return nil
}

// TestFetchCopyClaimSurvivesKills: the login user is outside group mail
// and the spool's directory root:mail 2775, so every claim is a copy and
// truncation. A writer appends under Postfix's locks all the time, while
// mfilter is killed with SIGKILL at random moments, and now and then
// the server (sshd with every session, the claim's sh and perl too) at a
// random moment instead. In the end every message is filed exactly once
// (by its X-Test-ID and its bytes), the spool is empty, and nothing is
// left: no claim, no marker or partial copy, no lock, no journal.
func TestFetchCopyClaimSurvivesKills(t *testing.T) {
	u := sshtest.NoMailUser(t)
	srv := sshtest.Start(t, sshtest.Options{User: u.Name})
	e := newFetchEnv(t, srv, "default: inbox/\nrules:\n  - if: {headers: '^X-Test-ID: .*[19]$'}\n    then: {folder: some.mbox}\n")
	e.spool = sshtest.MailSpool(t, u)
	claims := sshtest.ClaimsDir(u, e.spool)
	rng := rand.New(rand.NewPCG(5, 6))

	var mu sync.Mutex
	var all [][]byte
	add := func(m [][]byte) {
		if err := postfixAppend(t, e.spool, m); err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		all = append(all, m...)
		mu.Unlock()
	}
	add(spoolMessages(t, 600, "probe"))
	start := time.Now()
	if code, out := e.run(e.args(srv.Addr)...); code != 0 {
		t.Fatalf("probe run: %d %s", code, out)
	}
	full := time.Since(start)
	if l := e.leftovers(); len(l) > 0 {
		t.Fatalf("a claim by renaming, not copying: %v", l)
	}

	pool := spoolMessages(t, 4000, "w")
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		wr := rand.New(rand.NewPCG(7, 8))
		for i := 0; i < len(pool); {
			select {
			case <-stop:
				return
			default:
			}
			n := min(1+wr.IntN(3), len(pool)-i)
			add(pool[i : i+n])
			i += n
			time.Sleep(time.Duration(2+wr.IntN(8)) * time.Millisecond)
		}
	}()
	const trials = 30
	killed, restarts := 0, 0
	for i := 0; i < trials; i++ {
		add(spoolMessages(t, 200, fmt.Sprintf("kill%d", i)))
		cmd := e.cmd(e.args(srv.Addr)...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if i%3 == 2 {
			// The server goes down inside a claim: between the marker
			// and its removal (copying, renaming, truncating, syncing),
			// where the next run has to tell the two crashes apart.
			waitPending(claims, full)
			time.Sleep(time.Duration(rng.Int64N(int64(3 * time.Millisecond))))
			srv.Restart(t)
			restarts++
		} else if time.Sleep(time.Duration(rng.Int64N(int64(full)))); cmd.Process.Signal(syscall.SIGKILL) == nil {
			killed++
		}
		cmd.Wait()
	}
	close(stop)
	<-done
	// A last message, under the locks: a dotlock that a restart left
	// behind (dotlockfile killed while it held it) is broken here, as
	// liblockfile breaks a lock whose process is gone.
	add(spoolMessages(t, 1, "last"))
	// The last runs: mail that came during one is fetched by the next.
	for i := 0; ; i++ {
		if code, out := e.run(e.args(srv.Addr)...); code != 0 {
			var dump strings.Builder
			js, _ := filepath.Glob(filepath.Join(e.state, "*.journal"))
			for _, j := range js {
				b, _ := os.ReadFile(j)
				lines := strings.Split(string(b), "\n")
				var keep []string
				for _, l := range lines {
					if !strings.Contains(l, `"write"`) && !strings.Contains(l, `"committing"`) {
						keep = append(keep, l)
					}
				}
				fmt.Fprintf(&dump, "%s:\n%s\n", j, strings.Join(keep, "\n"))
			}
			ents, _ := os.ReadDir(claims)
			for _, en := range ents {
				st, _ := os.Stat(filepath.Join(claims, en.Name()))
				fmt.Fprintf(&dump, "%s %d\n", en.Name(), st.Size())
			}
			t.Fatalf("clean run %d: %d %s\n%s", i, code, out, dump.String())
		}
		if st, err := os.Stat(e.spool); err == nil && st.Size() == 0 || i == 3 {
			break
		}
	}
	if killed < 10 {
		t.Errorf("only %d of %d runs were killed while running", killed, trials-restarts)
	}
	mu.Lock()
	defer mu.Unlock()
	checkFiled(t, e, all)
	if ents, _ := os.ReadDir(claims); len(ents) > 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("left in %s: %v", claims, names)
	}
	ents, _ := os.ReadDir(filepath.Dir(e.spool))
	var names []string
	for _, en := range ents {
		// dotlockfile's temporary file (.lkPIDTIMEHOST), left when a
		// restart killed it between making it and linking it.
		if en.Name() != filepath.Base(e.spool) && !strings.HasPrefix(en.Name(), ".lk") {
			names = append(names, en.Name())
		}
	}
	if len(names) > 0 {
		t.Errorf("the spool's directory holds %v besides the spool", names)
	}
	t.Logf("%d messages; %d runs killed, %d server restarts; a run took %v", len(all), killed, restarts, full)
}

// waitPending returns when a claim's marker is in dir, or after d.
func waitPending(dir string, d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if m, _ := filepath.Glob(filepath.Join(dir, "*.pending")); len(m) > 0 {
			return
		}
		time.Sleep(100 * time.Microsecond)
	}
}
