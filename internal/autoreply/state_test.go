package autoreply

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestOncePerPeriod: a second message in the period gets no reply, one
// after it does; another sender, or another reply (handle), has its own.
func TestOncePerPeriod(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	n := 0
	send := func() error { n++; return nil }
	steps := []struct {
		key  string
		at   time.Duration
		sent bool
	}{
		{Key("bob@x.org", "h"), 0, true},
		{Key("BOB@x.org", "h"), time.Hour, false},
		{Key("carol@x.org", "h"), time.Hour, true},
		{Key("bob@x.org", "other"), time.Hour, true},
		{Key("bob@x.org", "h"), 7*24*time.Hour - time.Second, false},
		{Key("bob@x.org", "h"), 7 * 24 * time.Hour, true},
	}
	for i, st := range steps {
		sent, err := Once(dir, st.key, 7*24*time.Hour, now.Add(st.at), send)
		if err != nil || sent != st.sent {
			t.Fatalf("step %d: sent %v err %v, want %v", i, sent, err, st.sent)
		}
	}
	if n != 4 {
		t.Errorf("sent %d, want 4", n)
	}
}

// TestOnceFailedSendIsNotRemembered: a reply that could not be sent is
// tried again with the next message.
func TestOnceFailedSendIsNotRemembered(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	if _, err := Once(dir, "k", time.Hour, now, func() error { return errors.New("down") }); err == nil {
		t.Fatal("no error from a failed send")
	}
	if sent, err := Once(dir, "k", time.Hour, now, func() error { return nil }); !sent || err != nil {
		t.Fatalf("after a failed send: sent %v err %v", sent, err)
	}
}

// TestOnceConcurrent: runs racing for the same sender reply once.
func TestOnceConcurrent(t *testing.T) {
	dir := t.TempDir()
	var n atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := Once(dir, "k", time.Hour, time.Now(), func() error { n.Add(1); return nil }); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n.Load() != 1 {
		t.Errorf("%d replies, want 1", n.Load())
	}
}

// TestOnceBounded: the state keeps at most MaxEntries senders.
func TestOnceBounded(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	var b strings.Builder
	for i := range MaxEntries + 50 {
		fmt.Fprintf(&b, "%d k%d\n", now.Add(time.Duration(i+1)*time.Minute).Unix(), i)
	}
	os.WriteFile(filepath.Join(dir, "state"), []byte(b.String()), 0o600)
	if sent, err := Once(dir, "new", 24*time.Hour, now, func() error { return nil }); !sent || err != nil {
		t.Fatalf("sent %v err %v", sent, err)
	}
	entries, err := readState(filepath.Join(dir, "state"))
	if err != nil || len(entries) != MaxEntries {
		t.Fatalf("%d entries (%v), want %d", len(entries), err, MaxEntries)
	}
}
