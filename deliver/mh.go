package deliver

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/mfilter/mfilter/internal/mailfmt"
)

// writeNumbered writes an MH or plain-directory message into a temporary
// file inside the folder; Commit links it to its final name. Bytes as
// procmail writes them: the From_ line is kept, nothing is escaped, and
// the trailing newline rule applies.
func (w *Writer) writeNumbered(d *Delivery, msg []byte) error {
	dir := d.Folder.Path
	if err := w.mkdirAllLater(d.fsys, dir, dir); err != nil {
		return err
	}
	data := mailfmt.FileBytes(msg, w.opts.Berkeley)
	// A dot name, where a named temporary file is needed: MH tools and
	// mail readers ignore it if a crash leaves it.
	if err := w.createTemp(d, dir, ".mfilter-tmp."+w.maildirUnique()); err != nil {
		return err
	}
	f := d.file
	fail := func(err error) error {
		d.discardTemp()
		return err
	}
	if d.opts.BeforeWrite != nil {
		if err := d.opts.BeforeWrite(d.Folder, 0, Bytes{data}); err != nil {
			return fail(err)
		}
	}
	if err := writeAll(f, data); err != nil {
		return fail(fmt.Errorf("write %s: %w", f.Name(), err))
	}
	if d.Folder.Kind == Dir {
		st, err := f.Stat()
		if err != nil {
			return fail(fmt.Errorf("stat %s: %w", f.Name(), err))
		}
		sys, _ := st.Sys().(*syscall.Stat_t)
		if sys == nil {
			return fail(fmt.Errorf("%s: no inode number", f.Name()))
		}
		d.Path = filepath.Join(dir, "msg."+inodeName(sys.Ino))
	}
	d.Size = len(data)
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

// linkDir links the message to msg.<inode>, procmail's name. That name
// can only be taken by a file copied in from elsewhere; then a suffix
// keeps it from being replaced (procmail would fail).
func linkDir(d *Delivery) error {
	base := d.Path
	for n := 1; ; n++ {
		err := d.linkTo(d.Path)
		if err == nil || !errors.Is(err, fs.ErrExist) || n == 100 {
			return err
		}
		d.Path = base + "." + strconv.Itoa(n)
	}
}

// linkMH links the message to the highest all-digit name + 1, counting up
// while another process wins the race for a number. next remembers the
// last number per folder within one Commit, so that a batch reads each
// folder once. Numbers are decimal strings of any length: past
// 9223372036854775807 comes 9223372036854775808, as procmail writes,
// not a negative number that MH readers do not see.
func linkMH(d *Delivery, next map[dirRef]string) error {
	ref := dirRef{d.fsys, d.Folder.Path}
	n, ok := next[ref]
	if !ok {
		var err error
		if n, err = highestMH(d.fsys, d.Folder.Path); err != nil {
			return err
		}
	}
	for {
		n = incDecimal(n)
		name := filepath.Join(d.Folder.Path, n)
		err := d.linkTo(name)
		if err == nil {
			d.Path = name
			next[ref] = n
			return nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
}

// highestMH returns the highest message number in dir, "0" if none.
func highestMH(fsys fileSystem, dir string) (string, error) {
	f, err := fsys.OpenFile(dir, os.O_RDONLY, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", dir, err)
	}
	max := "0"
	for _, name := range names {
		if !isDigits(name) {
			continue
		}
		if n := strings.TrimLeft(name, "0"); n != "" && decimalLess(max, n) {
			max = n
		}
	}
	return max, nil
}

// decimalLess compares two decimal numbers without leading zeros.
func decimalLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// incDecimal adds one to a decimal number without leading zeros.
func incDecimal(n string) string {
	b := []byte(n)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < '9' {
			b[i]++
			return string(b)
		}
		b[i] = '0'
	}
	return "1" + string(b)
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
