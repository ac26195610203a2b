package dupcache

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mfilter/mfilter/internal/maillock"
)

// Two stores stand for two processes (their fcntl locks are open file
// description locks, which conflict within one process too). While one
// has a key pending, the other's Seen of that cache waits; after the
// first records the key the second finds it, and after the first forgets
// it (a failed delivery) the second does not.
func TestStoreCheckAndRecordAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "msgid.cache")
	ctx := context.Background()
	for _, record := range []bool{true, false} {
		a, b := New(), New()
		key := "<k" + map[bool]string{true: "r", false: "f"}[record] + "@x>"
		if dup, err := a.Seen(path, key, 8192); err != nil || dup {
			t.Fatalf("first Seen: %v %v", dup, err)
		}
		done := make(chan bool)
		go func() {
			dup, err := b.Seen(path, key, 8192)
			if err != nil {
				t.Error(err)
			}
			done <- dup
		}()
		select {
		case <-done:
			t.Fatal("the second Seen did not wait for the first key's outcome")
		case <-time.After(200 * time.Millisecond):
		}
		if record {
			if err := a.Record(ctx, path, key, 8192); err != nil {
				t.Fatal(err)
			}
		} else {
			a.Forget(path, key)
		}
		if dup := <-done; dup != record {
			t.Errorf("record=%v: second Seen says duplicate=%v", record, dup)
		}
		b.Forget(path, key)
	}
	if _, err := os.Stat(path + ".lock"); !os.IsNotExist(err) {
		t.Errorf("dotlock left: %v", err)
	}
}

// A Seen that waits longer than the lock timeout fails (the message is
// retried later) instead of hanging.
func TestStoreLockTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "msgid.cache")
	a := New()
	b := New()
	b.Lock = maillock.LockOptions{Timeout: 100 * time.Millisecond}
	if _, err := a.Seen(path, "<a@x>", 8192); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Seen(path, "<a@x>", 8192); err == nil {
		t.Fatal("Seen of a locked cache did not time out")
	}
	a.Forget(path, "<a@x>")
	if dup, err := b.Seen(path, "<a@x>", 8192); err != nil || dup {
		t.Fatalf("after Forget: %v %v", dup, err)
	}
}

// A read-only store (mfilter test) creates no cache file.
func TestStoreReadOnlyCreatesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "msgid.cache")
	s := New()
	s.ReadOnly = true
	if dup, err := s.Seen(path, "<a@x>", 8192); err != nil || dup {
		t.Fatal(dup, err)
	}
	s.Forget(path, "<a@x>")
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("read-only Seen made the cache file: %v", err)
	}
}
