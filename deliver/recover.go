package deliver

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

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
	if err := lockFile(ctx, fh, w.opts.Lock); err != nil {
		return false, err
	}
	defer unlockFile(fh)
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
