// Package dupcache keeps formail -D duplicate caches: which message keys
// were delivered, so that a second copy is recognised. The rules ask
// (Seen); the filer records a key once its message is durable (Record)
// or lets it go when the delivery failed (Forget).
package dupcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mfilter/mfilter/internal/maillock"
)

// Store remembers message keys in formail -D cache files, so that an
// existing ~/.msgid.cache keeps working after the switch. A key is written
// only once the message it belongs to was delivered (formail writes it
// first, so a message whose delivery fails is dropped as a duplicate when
// it comes again). Keys of messages still being delivered are held in
// memory, so that a second copy in the same batch is caught too.
//
// Across processes, the check and the record are one step: from the
// first Seen that finds a key new until the last such key of the cache
// is recorded or forgotten, the process holds an fcntl lock on the cache
// file, so that another mfilter delivering the same message meanwhile
// waits, then finds the key recorded (or, if the delivery failed, not:
// it delivers the message itself). The lock goes with the process, so a
// crash leaves neither the key nor a lock behind.
type Store struct {
	mu      sync.Mutex
	pending map[string]map[string]bool // cache file -> keys awaiting Record
	held    map[string]*heldCache      // cache file -> its lock, while keys are pending
	seen    sync.Mutex                 // one Seen at a time: it may wait for a lock
	Lock    maillock.LockOptions
	// ReadOnly is for looking without delivering (mfilter test): Seen
	// neither creates nor locks the cache file.
	ReadOnly bool
}

// heldCache is a cache file this process holds the lock of.
type heldCache struct {
	f *os.File // nil: the file could not be opened for writing; not locked
}

// New returns an empty store.
func New() *Store {
	return &Store{pending: make(map[string]map[string]bool), held: make(map[string]*heldCache)}
}

// Seen reports whether key is in the cache file or pending; if not, key
// becomes pending until Record or Forget, and the cache file stays
// locked until no key of it is pending.
func (s *Store) Seen(path, key string, size int64) (bool, error) {
	s.seen.Lock()
	defer s.seen.Unlock()
	s.mu.Lock()
	if s.pending == nil {
		s.pending = make(map[string]map[string]bool)
		s.held = make(map[string]*heldCache)
	}
	if s.pending[path][key] {
		s.mu.Unlock()
		return true, nil
	}
	h := s.held[path]
	s.mu.Unlock()
	fresh := false
	if h == nil && !s.ReadOnly {
		// No key of this cache pending, so no Record or Forget of it
		// runs meanwhile: the lock is taken without s.mu, which
		// Record needs for other caches.
		var err error
		if h, err = lockCache(context.Background(), path, s.Lock); err != nil {
			return false, err
		}
		fresh = true
	}
	var data []byte
	var err error
	if h != nil && h.f != nil {
		data, err = io.ReadAll(io.NewSectionReader(h.f, 0, size))
	} else {
		data, err = readCache(path, size)
		if errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		if _, dup := scanCache(data, key, size); dup {
			if fresh {
				h.release()
			}
			return true, nil
		}
	}
	if err != nil {
		if fresh {
			h.release()
		}
		return false, fmt.Errorf("duplicate cache %s: %w", path, err)
	}
	if s.pending[path] == nil {
		s.pending[path] = make(map[string]bool)
	}
	s.pending[path][key] = true
	if fresh {
		s.held[path] = h
	}
	return false, nil
}

// lockCache opens the cache file at path (creating it and its directory)
// and takes its lock, waiting up to opts.Timeout. A cache that cannot be
// opened for writing is read without a lock, as before: its Record fails
// later, with a warning, and the message is delivered all the same.
func lockCache(ctx context.Context, path string, opts maillock.LockOptions) (*heldCache, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return &heldCache{}, nil
		}
	}
	f, err := openCache(path, os.O_RDWR|os.O_CREATE)
	if errors.Is(err, errNotRegular) {
		return nil, err
	}
	if err != nil {
		return &heldCache{}, nil
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = maillock.DefaultLockOptions.Timeout
	}
	deadline := time.Now().Add(timeout)
	sleep := time.Millisecond
	for {
		lk := unix.Flock_t{Type: unix.F_WRLCK}
		err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
		if err == nil {
			return &heldCache{f: f}, nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EINTR) {
			// No OFD locks here (an old kernel, some network file
			// systems): go on unlocked, as before.
			return &heldCache{f: f}, nil
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("duplicate cache %s: %w", path, maillock.ErrLockTimeout)
		}
		if err := ctx.Err(); err != nil {
			f.Close()
			return nil, err
		}
		time.Sleep(sleep)
		sleep = min(2*sleep, 100*time.Millisecond)
	}
}

func (h *heldCache) release() {
	if h.f != nil {
		h.f.Close() // and with it the lock
	}
}

// Forget drops a pending key (its message was not delivered).
func (s *Store) Forget(path, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forgetLocked(path, key)
}

func (s *Store) forgetLocked(path, key string) {
	if !s.pending[path][key] {
		return
	}
	delete(s.pending[path], key)
	if len(s.pending[path]) == 0 {
		if h := s.held[path]; h != nil {
			h.release()
			delete(s.held, path)
		}
	}
}

// Record writes key into the cache file the way formail -D does: at the
// end marker (an empty key), followed by a new end marker, wrapping to the
// start once the file reaches size bytes. The file is locked with a
// dotlock and fcntl, like procmail's ":0 Wh: msgid.lock" recipe.
func (s *Store) Record(ctx context.Context, path, key string, size int64) error {
	s.mu.Lock()
	var h *heldCache
	if s.pending[path][key] {
		h = s.held[path]
	}
	s.mu.Unlock()
	defer s.Forget(path, key)
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("duplicate cache %s: %w", path, err)
		}
	}
	if h == nil || h.f == nil {
		// Not checked by this store first: lock it now.
		var err error
		if h, err = lockCache(ctx, path, s.Lock); err != nil {
			return err
		}
		defer h.release()
		if h.f == nil {
			f, err := openCache(path, os.O_RDWR|os.O_CREATE)
			if err != nil {
				return fmt.Errorf("duplicate cache %s: %w", path, err)
			}
			h.f = f
		}
	}
	lock, err := maillock.AcquireDotlock(ctx, path+".lock", s.Lock)
	if err != nil {
		return fmt.Errorf("duplicate cache: %w", err)
	}
	defer lock.Release()
	f := h.f
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("duplicate cache %s: %w", path, err)
	}
	data, err := io.ReadAll(io.NewSectionReader(f, 0, st.Size()))
	if err != nil {
		return fmt.Errorf("duplicate cache %s: %w", path, err)
	}
	at, dup := scanCache(data, key, size)
	if dup {
		return nil
	}
	rec := append([]byte(key), 0, 0)
	if _, err := f.WriteAt(rec, at); err != nil {
		return fmt.Errorf("duplicate cache %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("duplicate cache %s: %w", path, err)
	}
	return nil
}

// scanCache looks for key among the NUL-terminated keys of a formail
// cache, reading no further than size bytes, and returns where a new key
// goes: at the first empty key (the end marker), else at 0.
func scanCache(data []byte, key string, size int64) (insertAt int64, dup bool) {
	insertAt = -1
	var off int64
	for off < size && off < int64(len(data)) {
		end := bytes.IndexByte(data[off:], 0)
		if end < 0 {
			break
		}
		word := data[off : off+int64(end)]
		if len(word) == 0 {
			if insertAt < 0 {
				insertAt = off
			}
		} else if string(word) == key {
			return 0, true
		}
		off += int64(end) + 1
	}
	if insertAt < 0 || insertAt >= size {
		insertAt = 0
	}
	return insertAt, false
}

// errNotRegular is a duplicate cache that is not a regular file.
var errNotRegular = errors.New("is not a regular file")

// openCache opens a cache file without blocking on a FIFO or a device
// someone put in its place (open(2) of a FIFO waits for a writer, and
// no signal ends that wait), and refuses anything but a regular file.
func openCache(path string, flag int) (*os.File, error) {
	f, err := os.OpenFile(path, flag|unix.O_NONBLOCK|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("duplicate cache %s %w", path, errNotRegular)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// readCache reads up to size bytes of the cache file at path; a missing
// file reads as empty.
func readCache(path string, size int64) ([]byte, error) {
	f, err := openCache(path, os.O_RDONLY)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, size))
}

// Entry is a key a duplicate condition found new: what Record writes
// once the message is delivered.
type Entry struct {
	Path string // the cache file
	Key  string
	Size int64 // the cache's size bound
}

// RecordAll records every entry (see Record), going on past failures.
func (s *Store) RecordAll(ctx context.Context, es []Entry) error {
	var errs []error
	for _, e := range es {
		if err := s.Record(ctx, e.Path, e.Key, e.Size); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ForgetAll forgets every entry (see Forget): their messages were not
// delivered.
func (s *Store) ForgetAll(es []Entry) {
	for _, e := range es {
		s.Forget(e.Path, e.Key)
	}
}
