package deliver

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestLinkTempBothWays names unnamed files by their descriptor
// (AT_EMPTY_PATH) and through /proc/self/fd, the way taken where the
// kernel refuses the first, in a plain directory and under an os.Root.
func TestLinkTempBothWays(t *testing.T) {
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	t.Cleanup(func() { emptyPathRefused.Store(false) })
	for _, refused := range []bool{false, true} {
		for _, c := range []struct {
			name string
			fsys fileSystem
			path func(string) string
		}{
			{"os", osFS{}, func(n string) string { return filepath.Join(dir, n) }},
			{"root", rootFS{root}, func(n string) string { return n }},
		} {
			emptyPathRefused.Store(refused)
			name := c.name + map[bool]string{false: "-fd", true: "-proc"}[refused]
			f, err := c.fsys.OpenTemp(c.path("."), name)
			if errors.Is(err, errors.ErrUnsupported) {
				t.Fatalf("%s: this file system has no unnamed files: %v", name, err)
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := writeAll(f, []byte(name)); err != nil {
				t.Fatal(err)
			}
			if err := c.fsys.LinkTemp(f, c.path(name)); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			// An existing name is never replaced.
			if err := c.fsys.LinkTemp(f, c.path(name)); !errors.Is(err, fs.ErrExist) {
				t.Errorf("%s: linking over an existing name: %v, want ErrExist", name, err)
			}
			f.Close()
			got, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil || string(got) != name {
				t.Errorf("%s: linked file holds %q, %v", name, got, err)
			}
			if emptyPathRefused.Load() != refused {
				t.Errorf("%s: emptyPathRefused changed to %v", name, !refused)
			}
		}
	}
}
