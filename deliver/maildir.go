package deliver

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/mfilter/mfilter/internal/mailfmt"
)

// MaildirName returns a fresh maildir base name for a message of size
// bytes: seconds, microseconds, pid, a per-process counter, 64 random bits
// and the host, so names cannot collide across processes or hosts even
// with a clock step, then the ",S=<size>" that Dovecot and Courier read
// instead of stat(2). Logs show the name without it (see MaildirUnique),
// so that procmail's mailstat still folds deliveries into their folder.
func (w *Writer) MaildirName(size int) string {
	var buf [128]byte
	b := append(w.appendUnique(buf[:0]), ",S="...)
	return string(strconv.AppendInt(b, int64(size), 10))
}

func (w *Writer) maildirUnique() string {
	var buf [128]byte
	return string(w.appendUnique(buf[:0]))
}

// appendUnique appends a fresh unique name part to b (one allocation a
// name instead of one a part: a name is made for every message).
func (w *Writer) appendUnique(b []byte) []byte {
	now := w.opts.Now()
	n := w.counter.Add(1)
	b = strconv.AppendInt(b, now.Unix(), 10)
	b = append(b, ".M"...)
	b = strconv.AppendInt(b, int64(now.Nanosecond()/1000), 10)
	b = append(b, 'P')
	b = strconv.AppendInt(b, int64(w.pid), 10)
	b = append(b, 'Q')
	b = strconv.AppendUint(b, n, 10)
	b = append(b, 'R')
	b = appendRandomHex(b, 8)
	b = append(b, '.')
	return append(b, w.host...)
}

// MaildirHas reports whether maildir folder f holds a message whose unique
// name part is unique, in new/ or (moved there by a reader) in cur/.
func MaildirHas(f Folder, unique string) (bool, error) {
	fsys := fileSystem(osFS{})
	if f.root != nil {
		fsys = rootFS{f.root}
	}
	for _, sub := range []string{"new", "cur"} {
		dir := filepath.Join(f.Path, sub)
		if _, err := fsys.Lstat(filepath.Join(dir, unique)); err == nil {
			return true, nil
		}
		df, err := fsys.OpenFile(dir, os.O_RDONLY, 0)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return false, err
		}
		names, err := df.Readdirnames(-1)
		df.Close()
		if err != nil {
			return false, fmt.Errorf("read %s: %w", dir, err)
		}
		for _, n := range names {
			if MaildirUnique(n) == unique {
				return true, nil
			}
		}
	}
	return false, nil
}

// MaildirUniques lists the unique name parts of the messages in maildir
// folder f, in new/ and cur/: MaildirHas for many names at once.
func MaildirUniques(f Folder) (map[string]bool, error) {
	fsys := fileSystem(osFS{})
	if f.root != nil {
		fsys = rootFS{f.root}
	}
	out := make(map[string]bool)
	for _, sub := range []string{"new", "cur"} {
		dir := filepath.Join(f.Path, sub)
		df, err := fsys.OpenFile(dir, os.O_RDONLY, 0)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		names, err := df.Readdirnames(-1)
		df.Close()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", dir, err)
		}
		for _, n := range names {
			out[MaildirUnique(n)] = true
		}
	}
	return out, nil
}

// MaildirUnique is the unique part of a maildir file name: the name
// without its ",S=" (and any ":2," flags) info.
func MaildirUnique(name string) string {
	base := name
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		base = name[i+1:]
	}
	if i := strings.IndexAny(base, ",:"); i > 0 {
		return name[:len(name)-len(base)+i]
	}
	return name
}

// ensureMaildir creates dir/{tmp,new,cur} (mode 0700) when missing; the
// next Commit makes the new entries durable. What it found is cached for
// the Writer's life; forget undoes that when a folder was removed under
// a long run.
func (w *Writer) ensureMaildir(fsys fileSystem, dir string) error {
	key := maildirKey(fsys, dir)
	w.mu.Lock()
	ok := w.maildirs[key]
	w.mu.Unlock()
	if ok {
		return nil
	}
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := w.mkdirAllLater(fsys, filepath.Join(dir, sub), dir); err != nil {
			return err
		}
	}
	w.mu.Lock()
	w.maildirs[key] = true
	w.mu.Unlock()
	return nil
}

func (w *Writer) forgetMaildir(fsys fileSystem, dir string) {
	w.mu.Lock()
	delete(w.maildirs, maildirKey(fsys, dir))
	w.mu.Unlock()
}

func maildirKey(fsys fileSystem, dir string) string {
	if _, ok := fsys.(osFS); ok {
		return dir
	}
	return fmt.Sprintf("%p:%s", fsys, dir)
}

// writeMaildir writes the message into tmp/ (as an unnamed file where the
// file system has them); Commit links it into new/. procmail's bytes: the
// From_ line and its '>' continuation lines are dropped, nothing is
// escaped and nothing is appended.
func (w *Writer) writeMaildir(d *Delivery, msg []byte) error {
	dir := d.Folder.Path
	data := mailfmt.MaildirBytes(msg, w.opts.Berkeley)
	name := w.MaildirName(len(data))
	if d.opts.MaildirName != "" {
		name = d.opts.MaildirName + ",S=" + strconv.Itoa(len(data))
	}
	tmpDir := d.Folder.in("tmp")
	for attempt := 0; ; attempt++ {
		if err := w.ensureMaildir(d.fsys, dir); err != nil {
			return err
		}
		err := w.createTemp(d, tmpDir, name)
		if err == nil {
			break
		}
		if attempt == 0 && errors.Is(err, fs.ErrNotExist) {
			w.forgetMaildir(d.fsys, dir) // removed since we made it
			continue
		}
		if attempt == 0 && d.opts.MaildirName != "" && errors.Is(err, fs.ErrExist) {
			// A chosen name is ours: a crashed run left it in tmp/.
			d.fsys.Remove(filepath.Join(tmpDir, name))
			continue
		}
		return err
	}
	if err := writeAll(d.file, data); err != nil {
		err = fmt.Errorf("write %s: %w", d.file.Name(), err)
		d.discardTemp()
		return err
	}
	d.Size = len(data)
	d.Path = d.Folder.in("new", name)
	if !d.opts.Flags.IsZero() {
		// A message with flags has been seen by a reader: cur/.
		letters, err := maildirKeywordLetters(dir, d.opts.Flags.Keywords)
		if err != nil {
			d.discardTemp()
			return err
		}
		d.Path = d.Folder.in("cur", name+d.opts.Flags.maildirInfo(letters))
	}
	return nil
}

// createTemp opens d's file in dir: unnamed (OpenTemp) where the file
// system has such files, so that nothing is left behind by a crash and
// no name is made and removed, else as dir/name.
func (w *Writer) createTemp(d *Delivery, dir, name string) error {
	key := maildirKey(d.fsys, dir)
	w.mu.Lock()
	named := w.named[key]
	w.mu.Unlock()
	if !named {
		f, err := d.fsys.OpenTemp(dir, name)
		if err == nil {
			d.file, d.anon = f, true
			return nil
		}
		if !errors.Is(err, errors.ErrUnsupported) {
			return err
		}
		w.mu.Lock()
		w.named[key] = true
		w.mu.Unlock()
	}
	tmp := filepath.Join(dir, name)
	f, err := d.fsys.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	d.file, d.tmp = f, tmp
	return nil
}

// discardTemp closes and removes the file createTemp made.
func (d *Delivery) discardTemp() {
	d.file.Close()
	if d.tmp != "" {
		d.fsys.Remove(d.tmp)
	}
	d.file, d.tmp, d.anon = nil, "", false
}

// linkMaildir links the durable file into new/ without ever replacing an
// existing message; the caller removes a tmp/ name.
func (w *Writer) linkMaildir(d *Delivery) error {
	for attempt := 0; ; attempt++ {
		err := d.linkTo(d.Path)
		if err == nil {
			return nil
		}
		if errors.Is(err, fs.ErrExist) && attempt < 5 && d.opts.MaildirName == "" {
			// Another name in the same directory, with the same info.
			info := ""
			if i := strings.LastIndex(filepath.Base(d.Path), ":2,"); i >= 0 {
				info = filepath.Base(d.Path)[i:]
			}
			d.Path = filepath.Join(filepath.Dir(d.Path), w.MaildirName(d.Size)+info)
			continue
		}
		return err
	}
}

// linkNoReplace makes newname refer to oldname's file, failing with
// fs.ErrExist rather than replacing newname. On file systems without hard
// links it falls back to a rename that refuses to replace; oldname is
// then gone, which the callers tolerate.
func linkNoReplace(fsys fileSystem, oldname, newname string) error {
	err := fsys.Link(oldname, newname)
	if err == nil || errors.Is(err, fs.ErrExist) {
		return err
	}
	var errno syscall.Errno
	if _, isOS := fsys.(osFS); isOS && errors.As(err, &errno) &&
		(errno == syscall.EPERM || errno == syscall.ENOTSUP || errno == syscall.EMLINK) {
		if rerr := renameNoReplace(oldname, newname); rerr == nil {
			return nil
		}
	}
	return err
}

// appendRandomHex appends n random bytes in hex to dst. math/rand/v2's
// generator (ChaCha8, seeded by the system) is unpredictable enough for
// names that must not collide and, unlike crypto/rand, costs no system
// call: a maildir name is made for every message.
func appendRandomHex(dst []byte, n int) []byte {
	for ; n > 0; n -= 8 {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], rand.Uint64())
		dst = hex.AppendEncode(dst, b[:min(n, 8)])
	}
	return dst
}
