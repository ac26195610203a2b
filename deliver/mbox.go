package deliver

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

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

// MboxBytes returns what is appended to an mbox for msg: a From_ line
// (kept, or generated as formail does when msg has none), the message with
// procmail's Content-Length rewrite and ">From " escaping, and the
// trailing newline rule. With mboxrd, every line (after the first) that
// matches ^>*From gets one more '>'.
func MboxBytes(msg []byte, now func() []byte, berkeley, mboxrd bool) []byte {
	if !HasFromLine(msg) {
		gen := now()
		m := make([]byte, 0, len(gen)+len(msg))
		msg = append(append(m, gen...), msg...)
	}
	data, l := prepare(msg, berkeley)
	if mboxrd {
		data = escapeMboxrd(data)
	} else {
		data = escapeFrom(data, l)
	}
	return forceBlank(data)
}

// escapeMboxrd adds '>' to every line after the first that matches
// ^>*From , so that readers can strip exactly one '>' back off.
func escapeMboxrd(data []byte) []byte {
	var out []byte
	last := 0
	for i := 0; ; {
		j := bytes.IndexByte(data[i:], '\n')
		if j < 0 {
			break
		}
		p := i + j + 1
		i = p
		q := p
		for q < len(data) && data[q] == '>' {
			q++
		}
		if !bytes.HasPrefix(data[q:], []byte("From ")) {
			continue
		}
		if out == nil {
			out = make([]byte, 0, len(data)+64)
		}
		out = append(out, data[last:p]...)
		out = append(out, '>')
		last = p
	}
	if out == nil {
		return data
	}
	return append(out, data[last:]...)
}

// writeMbox appends msg to an mbox folder in procmail's format.
func (t *Txn) writeMbox(d *Delivery, msg []byte) error {
	w := t.w
	data := MboxBytes(msg, func() []byte { return GeneratedFromLine(msg, w.opts.Now()) }, w.opts.Berkeley, w.opts.Mboxrd)
	return t.appendLocked(d, data)
}

// AppendRaw appends data unchanged to the mbox at path, under the same
// locks; the rescue mbox uses it so that filing it again gives back the
// very same messages.
func (t *Txn) AppendRaw(path string, data []byte) (*Delivery, error) {
	d := &Delivery{Folder: Folder{Name: path, Path: path, Kind: Mbox}, fsys: osFS{}}
	if err := t.appendLocked(d, data); err != nil {
		return nil, fmt.Errorf("append to %s: %w", path, err)
	}
	t.items = append(t.items, d)
	return d, nil
}

// appendLocked appends data to the mbox d.Folder under the dotlock
// FOLDER.lock and an fcntl lock, the pair that procmail, mutt and the MTAs
// honour. A failed or short write truncates the file back to its old size.
// The fsync comes at Commit, once for each mbox file.
func (t *Txn) appendLocked(d *Delivery, data []byte) error {
	w := t.w
	path := d.Folder.Path
	if dir := filepath.Dir(path); dir != "." {
		if err := mkdirAllDurable(d.fsys, dir); err != nil {
			return err
		}
	}
	lock, err := acquireDotlock(t.ctx, d.fsys, path+".lock", w.opts.Lock)
	if err != nil {
		// A spool directory we may not create files in: procmail and mutt
		// carry on with the kernel lock alone, and so do we.
		if !errors.Is(err, fs.ErrPermission) && !errors.Is(err, syscall.EROFS) {
			return err
		}
		w.warn("%v; using the fcntl lock alone", err)
	}
	defer func() {
		if err := lock.Release(); err != nil {
			w.warn("%v", err)
		}
	}()

	f, err := d.fsys.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	keep := false
	defer func() {
		if !keep {
			f.Close()
		}
	}()
	if err := lockFile(t.ctx, f, w.opts.Lock); err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		unlockFile(f)
		return fmt.Errorf("stat: %w", err)
	}
	if !st.Mode().IsRegular() {
		unlockFile(f)
		return errors.New("not a regular file")
	}
	old := st.Size()
	if err := writeAll(f, data); err != nil {
		// Undo the partial message so the mbox stays well formed.
		if terr := f.Truncate(old); terr != nil {
			err = fmt.Errorf("%w (and truncating back to %d bytes failed: %v)", err, old, terr)
		}
		unlockFile(f)
		return err
	}
	if err := unlockFile(f); err != nil {
		w.warn("fcntl unlock %s: %v", path, err)
	}
	d.Path, d.Size = path, len(data)
	id, ok := idOf(st)
	if !ok {
		return errors.New("no inode number")
	}
	d.mboxID = id
	if _, seen := t.mbox[id]; !seen {
		t.mbox[id] = f
		keep = true
	}
	return nil
}

// renameNoReplace renames oldname to newname unless newname exists.
func renameNoReplace(oldname, newname string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldname, unix.AT_FDCWD, newname, unix.RENAME_NOREPLACE)
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	return nil
}
