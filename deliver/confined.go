package deliver

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
