package deliver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mfilter/mfilter/internal/mailfmt"
	"github.com/mfilter/mfilter/internal/maillock"
	"golang.org/x/sys/unix"
)

// These functions let a journal find out, after a crash, whether a
// delivery it had started was made (fetch-and-file files every message
// exactly once).

// RecoverMboxAppend settles an append of size bytes (sha256 sum) that was
// to start at offset at of the mbox f: it reports whether the bytes are
// there. If the file ends partway through them, that partial message is
// truncated away, under the mbox's locks, so that it can be appended
// again; bytes of someone else at that offset are never touched.
func (w *Writer) RecoverMboxAppend(ctx context.Context, f Folder, at, size int64, sum [sha256.Size]byte) (bool, error) {
	fsys := w.fsFor(f)
	lock, err := w.lockMbox(ctx, fsys, f.Path)
	if err != nil {
		return false, err
	}
	defer w.unlockMbox(lock)
	fh, err := fsys.OpenFile(f.Path, os.O_RDWR|unix.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("recover %s: %w", f.Path, err)
	}
	defer fh.Close()
	if err := maillock.LockFile(ctx, fh, w.opts.Lock); err != nil {
		return false, err
	}
	defer maillock.UnlockFile(fh)
	st, err := fh.Stat()
	if err != nil {
		return false, err
	}
	if st.Size() <= at {
		return false, nil
	}
	n := min(size, st.Size()-at)
	got := make([]byte, n)
	if _, err := fh.ReadAt(got, at); err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("recover %s: %w", f.Path, err)
	}
	if n == size {
		return sha256.Sum256(got) == sum, nil
	}
	// The file ends inside the append: a crash cut it short. Nobody has
	// appended after it, so it can go.
	if err := fh.Truncate(at); err != nil {
		return false, fmt.Errorf("recover %s: truncate a partial message: %w", f.Path, err)
	}
	return false, fh.Sync()
}

// FolderHolds reports whether an MH or directory folder holds a message
// file with exactly these size and sha256 sum.
func (w *Writer) FolderHolds(f Folder, size int64, sum [sha256.Size]byte) (bool, error) {
	fsys := w.fsFor(f)
	d, err := fsys.OpenFile(f.Path, os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return false, fmt.Errorf("read %s: %w", f.Path, err)
	}
	for _, n := range names {
		if strings.HasPrefix(n, ".") {
			continue // temporary files
		}
		p := filepath.Join(f.Path, n)
		st, err := fsys.Lstat(p)
		if err != nil || !st.Mode().IsRegular() || st.Size() != size {
			continue
		}
		fh, err := fsys.OpenFile(p, os.O_RDONLY, 0)
		if err != nil {
			continue
		}
		data := make([]byte, size)
		_, err = fh.ReadAt(data, 0)
		fh.Close()
		if (err == nil || errors.Is(err, io.EOF)) && sha256.Sum256(data) == sum {
			return true, nil
		}
	}
	return false, nil
}

// DeliveryBytes is what a delivery of msg with flags to the mbox, MH or
// directory folder f writes (nil for other kinds): what a journal whose
// record of the delivery was lost looks for after a crash.
func (w *Writer) DeliveryBytes(f Folder, msg []byte, flags Flags) []byte {
	switch f.Kind {
	case Mbox:
		if !flags.IsZero() {
			msg = withMboxFlags(msg, flags) // as writeMbox does
		}
		return mailfmt.MboxBytes(msg, func() []byte { return mailfmt.MboxFromLine(msg, w.opts.Now()) }, w.opts.Berkeley, w.opts.Mboxrd)
	case MH, Dir:
		return mailfmt.FileBytes(msg, w.opts.Berkeley)
	}
	return nil
}

// ReadMboxFrom returns the bytes of the mbox f from offset from to its
// end (none when it is missing or shorter).
func (w *Writer) ReadMboxFrom(f Folder, from int64) ([]byte, error) {
	fh, err := w.fsFor(f).OpenFile(f.Path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() <= from {
		return nil, nil
	}
	buf := make([]byte, st.Size()-from)
	n, err := fh.ReadAt(buf, from)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read %s: %w", f.Path, err)
	}
	return buf[:n], nil
}

// FolderSums counts the message files of the MH or directory folder f
// modified at or after since, by size and sha256 sum ("size:hex").
func (w *Writer) FolderSums(f Folder, since time.Time) (map[string]int, error) {
	fsys := w.fsFor(f)
	d, err := fsys.OpenFile(f.Path, os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]int{}, nil
	}
	if err != nil {
		return nil, err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", f.Path, err)
	}
	out := make(map[string]int)
	for _, n := range names {
		if strings.HasPrefix(n, ".") {
			continue
		}
		p := filepath.Join(f.Path, n)
		st, err := fsys.Lstat(p)
		if err != nil || !st.Mode().IsRegular() || st.ModTime().Before(since) {
			continue
		}
		fh, err := fsys.OpenFile(p, os.O_RDONLY, 0)
		if err != nil {
			continue
		}
		data := make([]byte, st.Size())
		_, err = fh.ReadAt(data, 0)
		fh.Close()
		if err == nil || errors.Is(err, io.EOF) {
			out[SumKey(data)]++
		}
	}
	return out, nil
}

// SumKey is FolderSums's key for a file holding data.
func SumKey(data []byte) string {
	sum := sha256.Sum256(data)
	return strconv.Itoa(len(data)) + ":" + hex.EncodeToString(sum[:])
}

// AppendRawWith is AppendRaw with options: a journal's BeforeWrite, so
// that a rescue append is found again after a crash.
func (t *Txn) AppendRawWith(path string, data []byte, o DeliverOptions) (*Delivery, error) {
	f := Folder{Name: path, Path: path, Kind: Mbox}
	d := &Delivery{Folder: f, fsys: t.w.fsFor(f), opts: o}
	if err := t.appendLocked(d, Bytes{data}); err != nil {
		return nil, fmt.Errorf("append to %s: %w", path, err)
	}
	t.add(d)
	return d, nil
}
