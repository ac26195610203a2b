package dupcache

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestDupCacheNotRegular: a FIFO (or anything else that is not a regular
// file) where the duplicate cache should be is refused at once, by the
// store that delivers and by the one that only looks (mfilter test):
// open(2) of a FIFO waited for a writer, and no signal ended the wait.
func TestDupCacheNotRegular(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ".msgid.cache")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ro := range []bool{false, true} {
		s := New()
		s.ReadOnly = ro
		done := make(chan error, 1)
		go func() {
			_, err := s.Seen(path, "<a@b>", 8192)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("read-only %v: a FIFO as the cache was accepted", ro)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("read-only %v: Seen hangs on a FIFO", ro)
		}
	}
	if err := New().Record(context.Background(), path, "<a@b>", 8192); err == nil {
		t.Error("Record into a FIFO was accepted")
	}
	if _, err := os.Stat(path + ".lock"); err == nil {
		t.Error("a lock was left behind")
	}
}
