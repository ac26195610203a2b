package deliver

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// writeNumbered writes an MH or plain-directory message into a temporary
// file inside the folder; Commit links it to its final name. Bytes as
// procmail writes them: the From_ line is kept, nothing is escaped, and
// the trailing newline rule applies.
func (w *Writer) writeNumbered(d *Delivery, msg []byte) error {
	dir := d.Folder.Path
	if err := mkdirAllDurable(d.fsys, dir); err != nil {
		return err
	}
	data, _ := prepare(msg, w.opts.Berkeley)
	data = forceBlank(data)
	// A dot name: MH tools and mail readers ignore it if a crash leaves it.
	tmp := filepath.Join(dir, ".mfilter-tmp."+w.MaildirName(len(data)))
	f, err := d.fsys.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := writeAll(f, data); err != nil {
		f.Close()
		d.fsys.Remove(tmp)
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	d.file, d.tmp, d.Size = f, tmp, len(data)
	if d.Folder.Kind == Dir {
		st, err := f.Stat()
		if err != nil {
			f.Close()
			d.fsys.Remove(tmp)
			return err
		}
		sys, _ := st.Sys().(*syscall.Stat_t)
		if sys == nil {
			f.Close()
			d.fsys.Remove(tmp)
			return errors.New("no inode number")
		}
		d.Path = filepath.Join(dir, "msg."+inodeName(sys.Ino))
		d.finalize = w.linkDir
	} else {
		d.finalize = w.linkMH
	}
	return nil
}

// inodeName is procmail's ultoan: base 64 over A-Z a-z 0-9 - _, least
// significant digit first.
func inodeName(n uint64) string {
	const digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	var b []byte
	for {
		b = append(b, digits[n&63])
		n >>= 6
		if n == 0 {
			return string(b)
		}
	}
}

func (w *Writer) linkDir(d *Delivery) error {
	if err := linkNoReplace(d.fsys, d.tmp, d.Path); err != nil {
		d.fsys.Remove(d.tmp)
		return err
	}
	d.fsys.Remove(d.tmp)
	d.tmp = ""
	return nil
}

// linkMH links the message to the highest all-digit name + 1, counting up
// while another process wins the race for a number.
func (w *Writer) linkMH(d *Delivery) error {
	n, err := highestMH(d.fsys, d.Folder.Path)
	if err != nil {
		d.fsys.Remove(d.tmp)
		return err
	}
	for {
		n++
		name := filepath.Join(d.Folder.Path, strconv.FormatInt(n, 10))
		err := linkNoReplace(d.fsys, d.tmp, name)
		if err == nil {
			d.Path = name
			break
		}
		if !errors.Is(err, fs.ErrExist) {
			d.fsys.Remove(d.tmp)
			return err
		}
	}
	d.fsys.Remove(d.tmp)
	d.tmp = ""
	return nil
}

func highestMH(fsys fileSystem, dir string) (int64, error) {
	f, err := fsys.OpenFile(dir, os.O_RDONLY, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", dir, err)
	}
	var max int64
	for _, name := range names {
		if v, err := strconv.ParseInt(name, 10, 64); err == nil && v > max && isDigits(name) {
			max = v
		}
	}
	return max, nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
