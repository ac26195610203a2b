package deliver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/mfilter/mfilter/internal/mailfmt"
	"github.com/mfilter/mfilter/internal/maillock"
	"golang.org/x/sys/unix"
)

type fileID struct{ dev, ino uint64 }

func idOf(st os.FileInfo) (fileID, bool) {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{uint64(sys.Dev), sys.Ino}, true
}

// writeMbox appends msg to an mbox folder in procmail's format.
func (t *Txn) writeMbox(d *Delivery, msg []byte) error {
	w := t.w
	if !d.opts.Flags.IsZero() {
		msg = withMboxFlags(msg, d.opts.Flags)
	}
	data := Bytes(mailfmt.MboxParts(msg, func() []byte { return mailfmt.MboxFromLine(msg, w.opts.Now()) }, w.opts.Berkeley, w.opts.Mboxrd))
	return t.appendLocked(d, data)
}

// Bytes is what a delivery writes, in pieces written one after another.
type Bytes [][]byte

// Len is the number of bytes in b.
func (b Bytes) Len() int {
	n := 0
	for _, p := range b {
		n += len(p)
	}
	return n
}

// AppendRaw appends data unchanged to the mbox at path, under the same
// locks; the rescue mbox uses it so that filing it again gives back the
// very same messages.
func (t *Txn) AppendRaw(path string, data []byte) (*Delivery, error) {
	f := Folder{Name: path, Path: path, Kind: Mbox}
	d := &Delivery{Folder: f, fsys: t.w.fsFor(f)}
	if err := t.appendLocked(d, Bytes{data}); err != nil {
		return nil, fmt.Errorf("append to %s: %w", path, err)
	}
	t.add(d)
	return d, nil
}

// mboxAppend is where one delivery's bytes went, so that they can be
// taken back while nothing has been appended after them.
type mboxAppend struct {
	id         fileID
	start, end int64
	// data is the bytes appended, to check that they are still there
	// before taking them back: the batch holds its messages until the
	// commit anyway, and a comparison then costs less than a hash of
	// every append.
	data Bytes
}

// lockMbox takes the dotlock FOLDER.lock, the pair of procmail's, mutt's
// and the MTAs'. Where the directory does not let us create it (a spool
// directory without write access), procmail and mutt carry on with the
// kernel lock alone, and so do we: the returned lock is then nil.
func (w *Writer) lockMbox(ctx context.Context, fsys fileSystem, path string) (*maillock.Dotlock, error) {
	lock, err := maillock.AcquireDotlockIn(ctx, lockFS{fsys}, path+".lock", w.opts.Lock)
	if err != nil {
		if !errors.Is(err, fs.ErrPermission) && !errors.Is(err, syscall.EROFS) {
			return nil, err
		}
		w.warn("%v; using the fcntl lock alone", err)
	}
	return lock, nil
}

func (w *Writer) unlockMbox(lock *maillock.Dotlock) {
	if err := lock.Release(); err != nil {
		w.warn("%v", err)
	}
}

// openMboxFile opens path for appending, creating it (mode 0600) when
// missing, and reports whether it did, so that Commit syncs the new
// directory entry too. O_NONBLOCK keeps a FIFO from hanging us.
func openMboxFile(fsys fileSystem, path string) (file, bool, error) {
	const flags = os.O_WRONLY | os.O_APPEND | unix.O_NONBLOCK
	for range 8 {
		f, err := fsys.OpenFile(path, flags, 0)
		if err == nil {
			return f, false, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, false, err
		}
		f, err = fsys.OpenFile(path, flags|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			return f, true, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, false, err
		}
	}
	// Still both missing and existing: a symlink to a file that does
	// not exist yet, which procmail creates through the link.
	f, err := fsys.OpenFile(path, flags|os.O_CREATE, 0o600)
	return f, err == nil, err
}

// appendLocked appends data to the mbox d.Folder under the dotlock and an
// fcntl lock. A failed or short write truncates the file back to its old
// size. The fsync comes at Commit, once for each mbox file.
//
// The locks stay held for the next appends of this Txn to the same mbox
// (taking a dotlock is four directory changes; an mbox often gets many
// messages of a batch) until ReleaseLocks, which Commit, RollbackTo and
// Abort call first. While it holds locks a Txn only tries the next
// mbox's locks once; if they are busy it lets go of its own before it
// waits, so that two mfilters filing into the same mboxes cannot wait
// for each other.
func (t *Txn) appendLocked(d *Delivery, data Bytes) error {
	w := t.w
	path := d.Folder.Path
	h, err := t.holdMbox(d.fsys, path)
	if err != nil {
		return err
	}
	f := h.f
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	old := st.Size()
	if d.opts.BeforeWrite != nil {
		if err := d.opts.BeforeWrite(d.Folder, old, data); err != nil {
			return err
		}
	}
	if err := writeParts(f, data); err != nil {
		// Undo the partial message so the mbox stays well formed, and
		// make the undo durable.
		err = fmt.Errorf("write %s: %w", path, err)
		if terr := f.Truncate(old); terr != nil {
			return fmt.Errorf("%w (and truncating back to %d bytes failed: %v)", err, old, terr)
		}
		if serr := f.Sync(); serr != nil {
			w.warn("fsync %s after truncating it back: %v", path, serr)
		}
		return err
	}
	// With O_APPEND the offset is now the end of our bytes, wherever a
	// writer that ignores locks may have put its own.
	end, err := f.Seek(0, io.SeekCurrent)
	size := data.Len()
	if err != nil {
		end = old + int64(size)
	}
	d.Path, d.Size = path, size
	d.mbox = &mboxAppend{id: h.id, start: end - int64(size), end: end, data: data}
	if m, seen := t.mbox[h.id]; seen {
		m.created = m.created || h.created
	} else {
		t.mbox[h.id] = &openMbox{f: f, fsys: h.fsys, path: path, created: h.created}
		h.synced = true
	}
	h.created = false
	return nil
}

// heldMbox is an mbox whose locks a Txn holds, open for appending.
type heldMbox struct {
	fsys    fileSystem
	lock    *maillock.Dotlock
	f       file
	id      fileID
	created bool // by this hold, not yet recorded in Txn.mbox
	synced  bool // f is Txn.mbox's descriptor for the fsync: not closed on release
}

// holdMbox returns the held mbox at path, taking its locks and opening it
// (creating it and its directory when missing) unless this Txn holds it
// already.
func (t *Txn) holdMbox(fsys fileSystem, path string) (*heldMbox, error) {
	if h := t.held[path]; h != nil && h.fsys == fsys {
		return h, nil
	}
	if dir := filepath.Dir(path); dir != "." {
		if err := mkdirAllDurable(fsys, dir); err != nil {
			return nil, err
		}
	}
	if len(t.held) > 0 {
		// A context already done: the locks are tried once, and busy
		// ones fail with maillock.ErrLockTimeout.
		once, cancel := context.WithCancel(t.ctx)
		cancel()
		h, err := t.lockMbox(once, fsys, path)
		if err == nil || !errors.Is(err, maillock.ErrLockTimeout) {
			return h, err
		}
		t.ReleaseLocks() // busy: wait holding nothing
	}
	return t.lockMbox(t.ctx, fsys, path)
}

// lockMbox takes both locks of the mbox at path and opens it.
func (t *Txn) lockMbox(ctx context.Context, fsys fileSystem, path string) (*heldMbox, error) {
	w := t.w
	lock, err := w.lockMbox(ctx, fsys, path)
	if err != nil {
		return nil, err
	}
	f, created, err := openMboxFile(fsys, path)
	if err != nil {
		w.unlockMbox(lock)
		return nil, err
	}
	fail := func(err error) (*heldMbox, error) {
		f.Close()
		w.unlockMbox(lock)
		return nil, err
	}
	if err := maillock.LockFile(ctx, f, w.opts.Lock); err != nil {
		return fail(err)
	}
	st, err := f.Stat()
	if err != nil {
		return fail(fmt.Errorf("stat %s: %w", path, err)) // closing f drops its fcntl lock
	}
	if !st.Mode().IsRegular() {
		return fail(fmt.Errorf("%s is not a regular file", path))
	}
	id, ok := idOf(st)
	if !ok {
		return fail(fmt.Errorf("%s: no inode number", path))
	}
	h := &heldMbox{fsys: fsys, lock: lock, f: f, id: id, created: created}
	if t.held == nil {
		t.held = make(map[string]*heldMbox)
	}
	t.held[path] = h
	return h, nil
}

// ReleaseLocks lets go of the mbox locks that this Txn holds for its next
// appends. Callers that pause between deliveries (waiting for input,
// running a program) call it first, so that no one waits for an mbox
// meanwhile; Commit, RollbackTo and Abort call it themselves.
func (t *Txn) ReleaseLocks() {
	for path, h := range t.held {
		if err := maillock.UnlockFile(h.f); err != nil {
			t.w.warn("fcntl unlock %s: %v", path, err)
		}
		if !h.synced {
			h.f.Close()
		}
		t.w.unlockMbox(h.lock)
	}
	clear(t.held)
}

// unappend truncates d's bytes away from its mbox, under both locks, if
// they are still the last bytes of the same file: never anyone else's.
func (w *Writer) unappend(ctx context.Context, d *Delivery) error {
	a, path := d.mbox, d.Folder.Path
	fail := func(err error) error {
		return fmt.Errorf("could not take back the message appended to %s: %w", path, err)
	}
	lock, err := w.lockMbox(ctx, d.fsys, path)
	if err != nil {
		return fail(err)
	}
	defer w.unlockMbox(lock)
	f, err := d.fsys.OpenFile(path, os.O_RDWR|unix.O_NONBLOCK, 0)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	if err := maillock.LockFile(ctx, f, w.opts.Lock); err != nil {
		return fail(err)
	}
	defer maillock.UnlockFile(f)
	st, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	if id, _ := idOf(st); id != a.id {
		return fail(errors.New("the file was replaced"))
	}
	if st.Size() != a.end {
		return fail(fmt.Errorf("it is no longer at the end (size %d, expected %d)", st.Size(), a.end))
	}
	if same, err := holdsParts(f, a.start, a.data); err != nil {
		return fail(err)
	} else if !same {
		return fail(errors.New("the bytes at its place changed"))
	}
	if err := f.Truncate(a.start); err != nil {
		return fail(err)
	}
	d.mbox = nil
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("fsync after truncating: %w", err))
	}
	return nil
}

// writeParts writes every piece of data.
func writeParts(f file, data Bytes) error {
	for _, p := range data {
		if err := writeAll(f, p); err != nil {
			return err
		}
	}
	return nil
}

// holdsParts reports whether f holds the pieces of want one after
// another from offset off.
func holdsParts(f io.ReaderAt, off int64, want Bytes) (bool, error) {
	for _, p := range want {
		if same, err := holds(f, off, p); !same || err != nil {
			return same, err
		}
		off += int64(len(p))
	}
	return true, nil
}

// holds reports whether f holds want at offset off, reading it in
// pieces.
func holds(f io.ReaderAt, off int64, want []byte) (bool, error) {
	buf := make([]byte, min(len(want), 64<<10))
	for len(want) > 0 {
		n, err := f.ReadAt(buf[:min(len(buf), len(want))], off)
		if !bytes.Equal(buf[:n], want[:n]) {
			return false, nil
		}
		if err != nil && n < min(len(buf), len(want)) {
			if errors.Is(err, io.EOF) {
				return false, nil
			}
			return false, err
		}
		want, off = want[n:], off+int64(n)
	}
	return true, nil
}

// renameNoReplace renames oldname to newname unless newname exists.
func renameNoReplace(oldname, newname string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldname, unix.AT_FDCWD, newname, unix.RENAME_NOREPLACE)
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	return nil
}
