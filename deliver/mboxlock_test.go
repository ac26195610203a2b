package deliver

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mfilter/mfilter/internal/mailfmt"
	"github.com/mfilter/mfilter/internal/maillock"
	"golang.org/x/sys/unix"
)

var fastLock = maillock.LockOptions{Timeout: 10 * time.Second, MaxSleep: 5 * time.Millisecond, Suspend: time.Millisecond}

// ofdLock takes an open-file-description write lock on path. OFD locks
// conflict with the POSIX fcntl locks the writers take even within one
// process, so a test can play the other mail program.
func ofdLock(t *testing.T, path string) (release func()) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	return func() { f.Close() }
}

// TestMboxFcntlLock: an mbox append waits for another program's fcntl
// lock, and gives up after the lock timeout with nothing written and no
// dotlock left behind.
func TestMboxFcntlLock(t *testing.T) {
	dir := t.TempDir()
	mb := mustFolder(t, dir, "mbox")
	if err := os.WriteFile(mb.Path, []byte("From x  Tue Jan  2 03:04:05 2024\nX: old\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(mb.Path)
	release := ofdLock(t, mb.Path)

	opts := testOptions()
	opts.Lock = maillock.LockOptions{Timeout: 200 * time.Millisecond, MaxSleep: 10 * time.Millisecond}
	w := NewWriter(opts)
	_, err := w.Begin(context.Background()).Deliver(mb, []byte("X: new\n\n"))
	if !errors.Is(err, maillock.ErrLockTimeout) {
		t.Errorf("Deliver under a foreign fcntl lock = %v, want maillock.ErrLockTimeout", err)
	}
	if after, _ := os.ReadFile(mb.Path); !bytes.Equal(before, after) {
		t.Errorf("mbox changed while locked")
	}
	if _, err := os.Lstat(mb.Path + ".lock"); err == nil {
		t.Errorf("dotlock left behind")
	}

	opts.Lock.Timeout = 10 * time.Second
	w = NewWriter(opts)
	time.AfterFunc(300*time.Millisecond, release)
	start := time.Now()
	deliverCommit(t, w, []byte("X: new\n\n"), mb)
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Errorf("delivered after %v, while the fcntl lock was held for 300ms", el)
	}
	if after, _ := os.ReadFile(mb.Path); !bytes.HasSuffix(after, []byte("X: new\n\n")) {
		t.Errorf("mbox after the lock was released: %q", after)
	}
}

// TestMboxDotlockTimeout: an mbox whose dotlock stays held fails the
// delivery after the timeout, leaving the mbox and the lock alone.
func TestMboxDotlockTimeout(t *testing.T) {
	dir := t.TempDir()
	mb := mustFolder(t, dir, "mbox")
	if err := os.WriteFile(mb.Path+".lock", []byte("0"), 0o444); err != nil {
		t.Fatal(err)
	}
	opts := testOptions()
	opts.Lock = maillock.LockOptions{Timeout: 100 * time.Millisecond, MaxSleep: 10 * time.Millisecond}
	_, err := NewWriter(opts).Begin(context.Background()).Deliver(mb, []byte("X: 1\n\n"))
	if !errors.Is(err, maillock.ErrLockTimeout) {
		t.Errorf("Deliver = %v, want maillock.ErrLockTimeout", err)
	}
	if _, err := os.Stat(mb.Path); err == nil {
		t.Errorf("mbox created without the lock")
	}
	if _, err := os.Stat(mb.Path + ".lock"); err != nil {
		t.Errorf("the other holder's lock was removed")
	}
}

// TestMboxConcurrentWriters: writers in many goroutines (each its own
// Writer, as separate deliveries would be) append to one mbox; every
// message arrives whole.
func TestMboxConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	mb := mustFolder(t, dir, "mbox")
	const writers, each = 6, 40
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			opts := testOptions()
			opts.Lock = fastLock
			w := NewWriter(opts)
			for i := range each {
				txn := w.Begin(context.Background())
				body := strings.Repeat(string(rune('a'+g)), 3000+i)
				if _, err := txn.Deliver(mb, []byte("From w  Tue Jan  2 03:04:05 2024\nX-Id: "+string(rune('a'+g))+"\n\n"+body+"\n")); err != nil {
					t.Error(err)
					return
				}
				if err := txn.Commit(); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	data, err := os.ReadFile(mb.Path)
	if err != nil {
		t.Fatal(err)
	}
	sp := mailfmt.NewSplitter(bytes.NewReader(data), mailfmt.SplitOptions{})
	n := 0
	for {
		m, err := sp.Next()
		if err != nil {
			break
		}
		n++
		parts := bytes.SplitN(m, []byte("\n\n"), 2)
		id := string(parts[0][len(parts[0])-1])
		body := strings.TrimRight(string(parts[1]), "\n")
		if strings.Trim(body, id) != "" {
			t.Fatalf("message %d (X-Id %s) is mixed with another: %.80q", n, id, body)
		}
	}
	if n != writers*each {
		t.Errorf("%d messages in the mbox, want %d", n, writers*each)
	}
}
