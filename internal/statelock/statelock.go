// Package statelock keeps two mfilter runs from working on the same
// spool or mbox at once: each takes an exclusive lock on a file in the
// state directory, next to the journals, for as long as it runs. The
// lock is an fcntl open file description lock, so it goes with the
// process however that ends: a killed run leaves the file, never the
// lock, and the next run takes it at once.
package statelock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultWait is how long a run waits for another one to finish before
// it gives up (exit 75): long enough for a run that is finishing, short
// enough for a cron job every few minutes.
const DefaultWait = 30 * time.Second

// Lock is a held state lock.
type Lock struct {
	f    *os.File
	path string
	// Waited says that another process held the lock when Acquire
	// began: it may have done the work meanwhile.
	Waited bool
}

// BusyError says that another process held the lock for the whole wait.
type BusyError struct {
	Path   string
	Holder string // what the holder wrote into the lock file, if anything
	Waited time.Duration
}

func (e *BusyError) Error() string {
	who := "another mfilter"
	if e.Holder != "" {
		who += " (" + e.Holder + ")"
	}
	return fmt.Sprintf("%s is still working on it, holding %s; gave up after waiting %v", who, e.Path, e.Waited)
}

// Acquire takes the lock at path, creating the file (and its directory)
// when missing, waiting up to wait (<= 0: DefaultWait) while another
// process holds it. It fails with a *BusyError when the wait ends, and
// with ctx's error when ctx ends first.
func Acquire(ctx context.Context, path, what string, wait time.Duration) (*Lock, error) {
	if wait <= 0 {
		wait = DefaultWait
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("state lock: %w", err)
	}
	start := time.Now()
	deadline := start.Add(wait)
	sleep := 10 * time.Millisecond
	var f *os.File
	waited := false
	for {
		if f == nil {
			var err error
			f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				return nil, fmt.Errorf("state lock: %w", err)
			}
		}
		err := setLock(f, unix.F_WRLCK)
		if err == nil {
			// The holder removes the file before it lets go: a lock
			// won on a file no longer at path is worth nothing.
			if current(f, path) {
				break
			}
			f.Close()
			f = nil
			continue
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("state lock %s: %w", path, err)
		}
		waited = true
		left := time.Until(deadline)
		if left <= 0 {
			holder := readHolder(f)
			f.Close()
			return nil, &BusyError{Path: path, Holder: holder, Waited: time.Since(start).Round(time.Millisecond)}
		}
		t := time.NewTimer(min(sleep, left))
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, ctx.Err()
		case <-t.C:
		}
		sleep = min(2*sleep, 250*time.Millisecond)
	}
	// Who holds it, for the message of the next run that finds it
	// busy; nothing depends on it, so it is not synced.
	host, _ := os.Hostname()
	info := fmt.Sprintf("pid %d on %s, %s, since %s\n", os.Getpid(), host, what, time.Now().Format(time.RFC3339))
	if f.Truncate(0) == nil {
		f.WriteAt([]byte(info), 0)
	}
	return &Lock{f: f, path: path, Waited: waited}, nil
}

// current reports whether f is still the file at path.
func current(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	return err == nil && os.SameFile(a, b)
}

// Release removes the lock file, so that the state directory holds only
// journals, and lets the lock go (the process's end lets it go too, but
// leaves the file). A waiter that then wins the removed file's lock
// sees that it is gone and makes a new one.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	rerr := os.Remove(l.path)
	if errors.Is(rerr, os.ErrNotExist) {
		rerr = nil
	}
	err := errors.Join(rerr, l.f.Close())
	l.f = nil
	return err
}

// setLock sets a whole-file lock without waiting: an open file
// description lock, which belongs to this open file alone (a classic
// fcntl lock would belong to the process and go when it closes any
// descriptor of the file), or a classic one on kernels without them.
func setLock(f *os.File, typ int16) error {
	lk := unix.Flock_t{Type: typ}
	err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
	if errors.Is(err, unix.EINVAL) {
		lk = unix.Flock_t{Type: typ}
		err = unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk)
	}
	return err
}

func readHolder(f *os.File) string {
	buf := make([]byte, 256)
	n, _ := f.ReadAt(buf, 0)
	return strings.TrimSpace(strings.ToValidUTF8(string(buf[:n]), "?"))
}

// Name turns s (a spool's description, a file's identity) into a file
// name part.
func Name(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}
