package maillock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mfilter/mfilter/internal/mailtest"
)

var fastLock = LockOptions{Timeout: 10 * time.Second, MaxSleep: 5 * time.Millisecond, Suspend: time.Millisecond}

// TestDotlockExclusive: among many concurrent takers, at most one holds
// the lock at any time, and the lock file says "mfilter <pid>" (procmail
// writes "0"; the content is for recognising mfilter's own abandoned
// locks), mode 0444 before the umask.
func TestDotlockExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "box.lock")
	var holders, maxHolders, total atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				l, err := AcquireDotlock(context.Background(), path, fastLock)
				if err != nil {
					t.Error(err)
					return
				}
				n := holders.Add(1)
				for {
					m := maxHolders.Load()
					if n <= m || maxHolders.CompareAndSwap(m, n) {
						break
					}
				}
				if b, err := os.ReadFile(path); err != nil || string(b) != fmt.Sprintf("mfilter %d\n", os.Getpid()) {
					t.Errorf("lock file holds %q, %v", b, err)
				}
				if st, err := os.Stat(path); err != nil || st.Mode().Perm()&0o222 != 0 {
					t.Errorf("lock file mode %v, %v", st.Mode(), err)
				}
				time.Sleep(100 * time.Microsecond)
				holders.Add(-1)
				total.Add(1)
				if err := l.Release(); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if maxHolders.Load() != 1 || total.Load() != 200 {
		t.Errorf("max concurrent holders %d (want 1), %d acquisitions (want 200)", maxHolders.Load(), total.Load())
	}
	if names := mailtest.ListDir(t, filepath.Dir(path)); len(names) != 0 {
		t.Errorf("left behind: %v", names)
	}
}

// TestDotlockTimeout: a held lock makes the taker give up after Timeout
// with ErrLockTimeout, not hang and not take it.
func TestDotlockTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "box.lock")
	held, err := AcquireDotlock(context.Background(), path, fastLock)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = AcquireDotlock(context.Background(), path, LockOptions{Timeout: 150 * time.Millisecond, MaxSleep: 10 * time.Millisecond})
	el := time.Since(start)
	if !errors.Is(err, ErrLockTimeout) {
		t.Errorf("err = %v, want ErrLockTimeout", err)
	}
	if el < 150*time.Millisecond || el > 3*time.Second {
		t.Errorf("gave up after %v, want about 150ms", el)
	}
	if err := held.Release(); err != nil {
		t.Fatal(err)
	}
}

// TestDotlockStale: an abandoned lock (older than Stale by the file
// system's clock) is forced; a "lock" that is big or a directory is
// someone's data and never is.
func TestDotlockStale(t *testing.T) {
	old := time.Now().Add(-2 * time.Hour)
	for _, c := range []struct {
		name   string
		make   func(p string) error
		forced bool
	}{
		{"stale", func(p string) error { return os.WriteFile(p, []byte("0"), 0o444) }, true},
		{"stale-empty", func(p string) error { return os.WriteFile(p, nil, 0o444) }, true},
		{"big", func(p string) error { return os.WriteFile(p, bytes.Repeat([]byte("x"), 17), 0o444) }, false},
		{"directory", func(p string) error { return os.Mkdir(p, 0o700) }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "box.lock")
			if err := c.make(path); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(path, old, old); err != nil {
				t.Fatal(err)
			}
			opts := LockOptions{Timeout: 300 * time.Millisecond, Stale: time.Hour, Suspend: time.Millisecond, MaxSleep: 10 * time.Millisecond}
			l, err := AcquireDotlock(context.Background(), path, opts)
			if c.forced {
				if err != nil {
					t.Fatalf("stale lock not forced: %v", err)
				}
				l.Release()
				return
			}
			if !errors.Is(err, ErrLockTimeout) {
				t.Errorf("err = %v, want ErrLockTimeout", err)
			}
			if _, err := os.Lstat(path); err != nil {
				t.Errorf("%s was removed", c.name)
			}
		})
	}
	t.Run("fresh", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "box.lock")
		os.WriteFile(path, []byte("0"), 0o444)
		_, err := AcquireDotlock(context.Background(), path, LockOptions{Timeout: 100 * time.Millisecond, Stale: time.Hour, MaxSleep: 10 * time.Millisecond})
		if !errors.Is(err, ErrLockTimeout) {
			t.Errorf("a fresh lock was taken: %v", err)
		}
	})
}

// TestDotlockReleaseTakenOver: a lock that another process forced and
// retook meanwhile is not removed by the first holder.
func TestDotlockReleaseTakenOver(t *testing.T) {
	path := filepath.Join(t.TempDir(), "box.lock")
	l, err := AcquireDotlock(context.Background(), path, fastLock)
	if err != nil {
		t.Fatal(err)
	}
	// Another process judged it stale (it is LockOptions.Stale old by
	// then), removed it and made its own.
	os.Remove(path)
	if err := os.WriteFile(path, []byte("0"), 0o444); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	os.Chtimes(path, later, later)
	if err := l.Release(); err == nil || !strings.Contains(err.Error(), "taken over") {
		t.Errorf("Release = %v, want a taken-over error", err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("the other process's lock was removed")
	}
}

// TestDotlockProcmailLockfile checks the dotlock against procmail's own
// lockfile(1): each excludes the other.
func TestDotlockProcmailLockfile(t *testing.T) {
	lockfile, err := exec.LookPath("lockfile")
	if err != nil {
		t.Fatalf("procmail's lockfile(1) is needed: %v", err)
	}
	path := filepath.Join(t.TempDir(), "box.lock")
	l, err := AcquireDotlock(context.Background(), path, fastLock)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(lockfile, "-r", "0", path).CombinedOutput(); err == nil {
		t.Errorf("lockfile took the lock that mfilter holds: %s", out)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(lockfile, "-r", "0", path).CombinedOutput(); err != nil {
		t.Fatalf("lockfile after release: %v %s", err, out)
	}
	_, err = AcquireDotlock(context.Background(), path, LockOptions{Timeout: 100 * time.Millisecond, MaxSleep: 10 * time.Millisecond})
	if !errors.Is(err, ErrLockTimeout) {
		t.Errorf("mfilter took the lock that lockfile holds: %v", err)
	}
	os.Remove(path)
}

// TestDotlockAbandoned: the lock file of an mfilter that died (no process
// holds its lock) is taken over at once; one whose holder lives, and
// anyone else's lock file, waits.
func TestDotlockAbandoned(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "box.lock")
	// A dead mfilter's lock: its content, nobody holding it.
	os.WriteFile(path, []byte("mfilter 99999\n"), 0o444)
	start := time.Now()
	l, err := AcquireDotlock(context.Background(), path, LockOptions{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("an abandoned mfilter lock must be taken over: %v", err)
	}
	if time.Since(start) > time.Second {
		t.Fatalf("took %v", time.Since(start))
	}
	// A live holder (this one): another taker must wait and time out.
	if _, err := AcquireDotlock(context.Background(), path, LockOptions{Timeout: 200 * time.Millisecond}); !errors.Is(err, ErrLockTimeout) {
		t.Fatalf("a held lock was taken over: %v", err)
	}
	l.Release()
	// procmail's lock file ("0"), fresh: not ours, never taken over early.
	os.WriteFile(path, []byte("0"), 0o444)
	if _, err := AcquireDotlock(context.Background(), path, LockOptions{Timeout: 200 * time.Millisecond}); !errors.Is(err, ErrLockTimeout) {
		t.Fatalf("procmail's lock was taken over: %v", err)
	}
}

func TestRandomHex(t *testing.T) {
	for _, n := range []int{1, 6, 8, 9, 20} {
		seen := make(map[string]bool)
		for range 1000 {
			h := randomHex(n)
			if len(h) != 2*n || strings.Trim(h, "0123456789abcdef") != "" {
				t.Fatalf("randomHex(%d) = %q", n, h)
			}
			seen[h] = true
		}
		if n >= 6 && len(seen) != 1000 {
			t.Errorf("randomHex(%d): %d distinct in 1000", n, len(seen))
		}
	}
}

func TestJitter(t *testing.T) {
	d := 100 * time.Millisecond
	lo, hi := d, time.Duration(0)
	for range 2000 {
		j := jitter(d)
		lo, hi = min(lo, j), max(hi, j)
	}
	if lo < d/2 || hi > d || hi-lo < d/4 {
		t.Errorf("jitter(%v) ranged over [%v, %v], want a spread within [%v, %v]", d, lo, hi, d/2, d)
	}
}
