package statelock

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A second Acquire of a held lock (another open file description: OFD
// locks conflict within one process too) waits, then fails with a
// BusyError naming the holder; once released it succeeds at once.
func TestAcquireBusyThenFree(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "x.lock")
	l, err := Acquire(context.Background(), p, "test", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = Acquire(context.Background(), p, "test", 200*time.Millisecond)
	var be *BusyError
	if !errors.As(err, &be) || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("second Acquire: %v after %v, want a BusyError after 200ms", err, time.Since(start))
	}
	if !strings.Contains(be.Error(), "pid ") {
		t.Errorf("busy error does not name the holder: %v", be)
	}
	go func() { time.Sleep(100 * time.Millisecond); l.Release() }()
	l2, err := Acquire(context.Background(), p, "test", 5*time.Second)
	if err != nil {
		t.Fatalf("Acquire after release: %v", err)
	}
	l2.Release()
}

// Release removes the file; a waiter that had opened it before then
// must not take the removed file's lock for the lock: with a third
// process taking the new file meanwhile, two would hold "the" lock.
func TestReleaseRemovesAndWaiterRetries(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.lock")
	l, err := Acquire(context.Background(), p, "first", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Lock)
	go func() {
		l2, err := Acquire(context.Background(), p, "second", 5*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- l2
	}()
	time.Sleep(50 * time.Millisecond) // the waiter has the old file open
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	l2 := <-got
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the waiter holds a lock on a file not at %s: %v", p, err)
	}
	if _, err := Acquire(context.Background(), p, "third", 50*time.Millisecond); err == nil {
		t.Fatal("a third Acquire succeeded while the second holds the lock")
	}
	l2.Release()
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("lock file still there after Release: %v", err)
	}
}
