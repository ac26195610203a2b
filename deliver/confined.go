package deliver

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ParseConfinedFolder types spec like ParseFolder, for a folder name built
// from message data: it must name a place inside the mail root base, and
// every access goes through root (an os.Root opened on base), so that
// neither ".." nor a symbolic link can lead the delivery outside it,
// whatever the message says.
func ParseConfinedFolder(root *os.Root, base, spec string) (Folder, error) {
	f, err := ParseFolder("", spec)
	if err != nil {
		return Folder{}, err
	}
	if f.Kind == Discard {
		return f, nil
	}
	p := f.Path
	if filepath.IsAbs(p) {
		rel, err := filepath.Rel(base, p)
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			return Folder{}, fmt.Errorf("folder %q is built from message data and must stay inside %s", spec, base)
		}
		p = rel
	}
	p = filepath.Clean(p)
	if p == "." || p == ".." || strings.HasPrefix(p, "../") {
		return Folder{}, fmt.Errorf("folder %q is built from message data and must stay inside %s", spec, base)
	}
	f.Path = p
	f.root = root
	f.clean = true // cleaned above, and never the dot
	if f.Kind == Mbox {
		if st, err := root.Stat(p); err == nil && st.IsDir() {
			f.Kind = Dir
		}
	}
	return f, nil
}

// CheckMboxFile refuses an existing file at path (below root) that is not
// an mbox: not empty, and not starting with a From_ line. A folder name
// built from message data may only create an mbox or add to one, never
// append mail to some other file of the user's.
func CheckMboxFile(root *os.Root, path string) error {
	f, err := root.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("folder %q is built from message data and is not a regular file", path)
	}
	head := make([]byte, 5)
	n, _ := io.ReadFull(f, head)
	if n > 0 && string(head[:n]) != "From "[:n] || n > 0 && n < 5 {
		return fmt.Errorf("folder %q is built from message data and names a file that is not an mbox", path)
	}
	return nil
}
