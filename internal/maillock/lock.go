// Package maillock takes the locks mail programs agree on: procmail's
// dotlock (FOLDER.lock, made with a hard link) and whole-file fcntl locks.
package maillock

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// File is the part of an open file that the locks use.
type File interface {
	io.Writer
	io.ReaderAt
	io.Closer
	Name() string
	Stat() (os.FileInfo, error)
	Fd() uintptr
}

// FS is the part of a file system that a dotlock uses: the writers pass
// their own, which tests replace to inject faults.
type FS interface {
	OpenFile(name string, flag int, perm os.FileMode) (File, error)
	Link(oldname, newname string) error
	Remove(name string) error
	Lstat(name string) (os.FileInfo, error)
}

// OS is the operating system's name space.
type OS struct{}

func (OS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err // not a typed nil inside the interface
	}
	return f, nil
}

func (OS) Link(oldname, newname string) error     { return os.Link(oldname, newname) }
func (OS) Remove(name string) error               { return os.Remove(name) }
func (OS) Lstat(name string) (os.FileInfo, error) { return os.Lstat(name) }

// LockOptions tune how long mfilter waits for locks held by others.
type LockOptions struct {
	// Timeout bounds the wait for a dotlock or an fcntl lock; the delivery
	// then fails as a temporary error (exit 75) instead of hanging.
	Timeout time.Duration
	// Stale is the age after which a dotlock is considered abandoned and
	// removed (procmail's LOCKTIMEOUT, 1024 s).
	Stale time.Duration
	// Suspend is the pause after forcing a stale lock, giving its holder a
	// chance to notice (procmail's SUSPEND, 16 s).
	Suspend time.Duration
	// MaxSleep caps the pause between attempts on a busy lock.
	MaxSleep time.Duration
}

// DefaultLockOptions wait up to five minutes: long enough for any real
// delivery, short enough that an MTA's command timeout is not reached
// before mfilter asks for a retry.
var DefaultLockOptions = LockOptions{
	Timeout:  5 * time.Minute,
	Stale:    1024 * time.Second,
	Suspend:  16 * time.Second,
	MaxSleep: time.Second,
}

func (o LockOptions) withDefaults() LockOptions {
	d := DefaultLockOptions
	if o.Timeout > 0 {
		d.Timeout = o.Timeout
	}
	if o.Stale > 0 {
		d.Stale = o.Stale
	}
	if o.Suspend > 0 {
		d.Suspend = o.Suspend
	}
	if o.MaxSleep > 0 {
		d.MaxSleep = o.MaxSleep
	}
	return d
}

// ErrLockTimeout is returned when a lock stayed busy for LockOptions.Timeout.
var ErrLockTimeout = errors.New("timed out waiting for lock")

// Dotlock is a held lock file, created the way procmail, mutt and the MTAs
// create NAME.lock: a unique temporary file is hard-linked to the lock
// name, which succeeds for exactly one process even over NFS.
//
// mfilter's lock files say "mfilter <pid>", and mfilter holds an open file
// description lock (fcntl F_OFD_SETLK) on them for as long as it holds the
// dotlock: when a killed mfilter
// leaves its lock file behind, the next one sees that nobody holds it and
// takes it over at once, instead of waiting for it to grow stale (17
// minutes, during which every MTA delivery to that mbox would wait too).
// Lock files of other programs are only ever forced by age.
type Dotlock struct {
	fsys FS
	path string
	held File // the lock file, fcntl-locked while the dotlock is ours
	// The lock file we made, so that we never remove another's: inode
	// numbers are reused at once, so its mtime is compared too (a lock
	// is only taken over after it looked stale for LockOptions.Stale).
	made os.FileInfo
}

// maxLockSize is procmail's MAX_locksize: a bigger "lock" is someone's
// data, never forced.
const maxLockSize = 16

// AcquireDotlock takes the dotlock path (usually FOLDER.lock), waiting
// while another process holds it and removing it when it is older than
// opts.Stale. It fails with ErrLockTimeout after opts.Timeout.
func AcquireDotlock(ctx context.Context, path string, opts LockOptions) (*Dotlock, error) {
	return AcquireDotlockIn(ctx, OS{}, path, opts)
}

// AcquireDotlockIn is AcquireDotlock in the file system fsys.
func AcquireDotlockIn(ctx context.Context, fsys FS, path string, opts LockOptions) (*Dotlock, error) {
	opts = opts.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	sleep := 5 * time.Millisecond
	for {
		st, held, err := tryDotlock(fsys, path)
		if err == nil {
			return &Dotlock{fsys: fsys, path: path, held: held, made: st}, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if abandoned(fsys, path) {
			continue // a dead mfilter's lock, removed: try again at once
		}
		// The age is measured against the file system's clock (the
		// mtime of the temporary file just made), as procmail does, so
		// that clock skew with an NFS server cannot force a live lock.
		if st != nil && forceStale(fsys, path, st.ModTime(), opts.Stale) {
			// An abandoned lock (its holder crashed) was removed; pause
			// so that a slow live holder notices, as procmail does.
			if err := sleepCtx(ctx, opts.Suspend); err != nil {
				return nil, fmt.Errorf("lock %s: %w", path, ErrLockTimeout)
			}
			continue
		}
		if err := sleepCtx(ctx, jitter(sleep)); err != nil {
			return nil, fmt.Errorf("lock %s: %w", path, ErrLockTimeout)
		}
		if sleep *= 2; sleep > opts.MaxSleep {
			sleep = opts.MaxSleep
		}
	}
}

// forceStale removes the lock at path if it is older than stale by the
// file system clock now, and reports whether it did.
func forceStale(fsys FS, path string, now time.Time, stale time.Duration) bool {
	if now.IsZero() {
		return false
	}
	st, err := fsys.Lstat(path)
	if err != nil || !st.Mode().IsRegular() || st.Size() > maxLockSize || now.Sub(st.ModTime()) <= stale {
		return false
	}
	// Check again just before removing, so that a lock that another
	// process forced and retook meanwhile is not removed (the window
	// cannot be closed; procmail has it too).
	again, err := fsys.Lstat(path)
	if err != nil || !os.SameFile(st, again) || !again.ModTime().Equal(st.ModTime()) {
		return false
	}
	err = fsys.Remove(path)
	return err == nil || errors.Is(err, fs.ErrNotExist)
}

// lockContent is what mfilter writes into its lock files (procmail
// writes "0"); it must stay within maxLockSize.
func lockContent() []byte { return []byte("mfilter " + strconv.Itoa(os.Getpid()) + "\n") }

// abandoned removes the lock at path if an mfilter made it and no process
// holds its fcntl lock any more (the holder died), and reports whether it
// did.
func abandoned(fsys FS, path string) bool {
	st, err := fsys.Lstat(path)
	if err != nil || !st.Mode().IsRegular() || st.Size() > maxLockSize {
		return false
	}
	f, err := fsys.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	buf := make([]byte, maxLockSize)
	n, _ := f.ReadAt(buf, 0)
	if !bytes.HasPrefix(buf[:n], []byte("mfilter ")) {
		return false
	}
	// An open file description lock (Linux): unlike a classic fcntl lock
	// it also conflicts with the other descriptors of this very process.
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil || lk.Type != unix.F_UNLCK {
		return false // held, or we cannot tell
	}
	again, err := fsys.Lstat(path)
	if err != nil || !os.SameFile(st, again) || !again.ModTime().Equal(st.ModTime()) {
		return false
	}
	err = fsys.Remove(path)
	return err == nil || errors.Is(err, fs.ErrNotExist)
}

// tryDotlock makes one attempt; fs.ErrExist means someone holds the lock.
// It returns the status of the temporary file it made (on success that
// is the lock's, and its mtime is the file system's idea of now) and, on
// success, the lock file kept open with an fcntl lock on it.
func tryDotlock(fsys FS, path string) (os.FileInfo, File, error) {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+"."+randomHex(6)+"."+strconv.Itoa(os.Getpid()))
	f, err := fsys.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return nil, nil, err
	}
	defer fsys.Remove(tmp)
	_, werr := f.Write(lockContent())
	st, serr := f.Stat()
	// The fcntl lock is taken before the link, so that the lock file is
	// never visible unheld.
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	ferr := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
	if err := errors.Join(werr, serr); err != nil {
		f.Close()
		return nil, nil, err
	}
	held := f
	if ferr != nil {
		// A file system without fcntl locks: the lock still works, it
		// just cannot be recognised as abandoned.
		f.Close()
		held = nil
	}
	lerr := fsys.Link(tmp, path)
	if lerr == nil {
		return st, held, nil
	}
	// On NFS a lost reply can report failure for a link that was made:
	// the link count is the truth then (procmail's hlink does the same).
	if lst, err := fsys.Lstat(tmp); err == nil {
		if sys, ok := lst.Sys().(*syscall.Stat_t); ok && sys.Nlink == 2 {
			return st, held, nil
		}
	}
	if held != nil {
		held.Close()
	}
	return st, nil, lerr
}

// Release removes the lock file, unless it is no longer ours (someone
// judged it stale and took it over).
func (l *Dotlock) Release() error {
	if l == nil {
		return nil
	}
	if st, err := l.fsys.Lstat(l.path); err == nil {
		if !os.SameFile(st, l.made) || !st.ModTime().Equal(l.made.ModTime()) {
			if l.held != nil {
				l.held.Close()
			}
			return fmt.Errorf("unlock %s: the lock was taken over by another process", l.path)
		}
	}
	// Removed before the fcntl lock goes, so that no one sees the file
	// unheld and takes it for abandoned.
	err := l.fsys.Remove(l.path)
	if l.held != nil {
		l.held.Close()
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("unlock %s: %w", l.path, err)
	}
	return nil
}

// Fder is an open file: its descriptor, and its name for errors.
type Fder interface {
	Fd() uintptr
	Name() string
}

// LockFile takes a whole-file fcntl write lock on f, as procmail, mutt and
// dovecot do, polling so that the wait honours ctx and opts.Timeout.
//
// It is an open file description lock where the kernel has them: they
// conflict with the classic fcntl locks of other programs just the same,
// but belong to f alone, whereas a classic lock belongs to the process
// and goes when it closes any descriptor of the file, as a batch being
// committed does while the next one appends to the same mbox.
func LockFile(ctx context.Context, f Fder, opts LockOptions) error {
	opts = opts.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	sleep := time.Millisecond
	for {
		err := fcntlLock(f, unix.F_WRLCK)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("fcntl lock %s: %w", f.Name(), err)
		}
		if err := sleepCtx(ctx, jitter(sleep)); err != nil {
			return fmt.Errorf("fcntl lock %s: %w", f.Name(), ErrLockTimeout)
		}
		if sleep *= 2; sleep > opts.MaxSleep {
			sleep = opts.MaxSleep
		}
	}
}

// UnlockFile releases the lock LockFile took.
func UnlockFile(f Fder) error { return fcntlLock(f, unix.F_UNLCK) }

// fcntlLock sets a whole-file lock of type typ on f without waiting: an
// open file description lock, or a classic one where the kernel has no
// such locks (EINVAL, before Linux 3.15).
func fcntlLock(f Fder, typ int16) error {
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: 0, Len: 0}
	err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
	if errors.Is(err, unix.EINVAL) {
		lk = unix.Flock_t{Type: typ, Whence: 0, Start: 0, Len: 0}
		err = unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk)
	}
	return err
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// jitter spreads retries of competing processes apart.
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// randomHex returns n random bytes in hex, for a temporary name that
// must not collide with a competitor's.
func randomHex(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return hex.EncodeToString(b)
}
