package deliver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// faultFS wraps a fileSystem, records every operation the writers make
// (so tests can check that fsyncs happen, and in which order) and fails
// the operations that fail() picks.
type faultFS struct {
	inner fileSystem
	base  string // stripped from recorded names

	mu     sync.Mutex
	events []string
	// fail returns the error to inject into op on name, or nil. ops:
	// open (OpenFile, and OpenTemp with the file's label), mkdir, link
	// (Link and LinkTemp), remove, write, sync (a file), syncdir,
	// syncfs, truncate.
	fail func(op, name string) error
	// named makes OpenTemp unsupported, as on a file system without
	// O_TMPFILE: the writers then use named temporary files.
	named bool
	// trustSyncFS makes FSInfo report that syncfs(2) stands in for
	// fsyncing each file, whatever file system the test runs on (an
	// overlay /tmp would not), so that the syncfs paths are tested
	// everywhere instead of skipped; the events show what was synced.
	trustSyncFS bool
}

func (f *faultFS) rel(name string) string {
	if r, err := filepath.Rel(f.base, name); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return name
}

// do records op and returns the injected error, if any.
func (f *faultFS) do(op, name string, extra ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	ev := op + " " + f.rel(name)
	for _, e := range extra {
		ev += " " + f.rel(e)
	}
	var err error
	if f.fail != nil {
		err = f.fail(op, name)
	}
	if err != nil {
		ev += " FAIL"
	}
	f.events = append(f.events, ev)
	return err
}

// Events returns the recorded operations.
func (f *faultFS) Events() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.events...)
}

func (f *faultFS) OpenFile(name string, flag int, perm os.FileMode) (file, error) {
	if err := f.do("open", name); err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	fd, err := f.inner.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &faultFile{file: fd, fs: f, name: name, dir: flag&unix.O_DIRECTORY != 0}, nil
}

func (f *faultFS) Mkdir(name string, perm os.FileMode) error {
	if err := f.do("mkdir", name); err != nil {
		return &os.PathError{Op: "mkdir", Path: name, Err: err}
	}
	return f.inner.Mkdir(name, perm)
}

func (f *faultFS) Link(oldname, newname string) error {
	if err := f.do("link", newname, oldname); err != nil {
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: err}
	}
	return f.inner.Link(oldname, newname)
}

func (f *faultFS) Remove(name string) error {
	if err := f.do("remove", name); err != nil {
		return &os.PathError{Op: "remove", Path: name, Err: err}
	}
	return f.inner.Remove(name)
}

func (f *faultFS) OpenTemp(dir, label string) (file, error) {
	if f.named {
		return nil, errors.ErrUnsupported
	}
	name := filepath.Join(dir, label)
	if err := f.do("open", name); err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	fd, err := f.inner.OpenTemp(dir, label)
	if err != nil {
		return nil, err
	}
	return &faultFile{file: fd, fs: f, name: name}, nil
}

func (f *faultFS) LinkTemp(fh file, newname string) error {
	if err := f.do("link", newname, fh.Name()); err != nil {
		return &os.LinkError{Op: "link", Old: fh.Name(), New: newname, Err: err}
	}
	return f.inner.LinkTemp(unwrap(fh), newname)
}

func (f *faultFS) SyncFS(fh file) error {
	if err := f.do("syncfs", fh.Name()); err != nil {
		return &os.PathError{Op: "syncfs", Path: fh.Name(), Err: err}
	}
	return f.inner.SyncFS(unwrap(fh))
}

func (f *faultFS) FSInfo(fh file) (fsInfo, error) {
	info, err := f.inner.FSInfo(unwrap(fh))
	if err == nil && f.trustSyncFS {
		info.syncfs = true
	}
	return info, err
}

func unwrap(fh file) file {
	if ff, ok := fh.(*faultFile); ok {
		return ff.file
	}
	return fh
}

func (f *faultFS) Stat(name string) (os.FileInfo, error)  { return f.inner.Stat(name) }
func (f *faultFS) Lstat(name string) (os.FileInfo, error) { return f.inner.Lstat(name) }

type faultFile struct {
	file
	fs   *faultFS
	name string
	dir  bool
}

// Write fails after writing half of p, the way a full disk or RLIMIT_FSIZE
// leaves a partial write behind.
func (f *faultFile) Write(p []byte) (int, error) {
	if err := f.fs.do("write", f.name); err != nil {
		n, _ := f.file.Write(p[:len(p)/2])
		return n, &os.PathError{Op: "write", Path: f.name, Err: err}
	}
	return f.file.Write(p)
}

func (f *faultFile) Sync() error {
	op := "sync"
	if f.dir {
		op = "syncdir"
	}
	if err := f.fs.do(op, f.name); err != nil {
		return &os.PathError{Op: "sync", Path: f.name, Err: err}
	}
	return f.file.Sync()
}

func (f *faultFile) Truncate(size int64) error {
	if err := f.fs.do("truncate", f.name); err != nil {
		return &os.PathError{Op: "truncate", Path: f.name, Err: err}
	}
	return f.file.Truncate(size)
}

// newFaultWriter returns a Writer whose folders all go through a faultFS
// rooted (for its event names) at base.
func newFaultWriter(t *testing.T, base string, opts Options) (*Writer, *faultFS) {
	t.Helper()
	ffs := &faultFS{base: base}
	w := NewWriter(opts)
	w.wrapFS = func(inner fileSystem) fileSystem {
		ffs.inner = inner
		return ffs
	}
	return w, ffs
}

// failNth fails the nth (1-based) op whose name contains substr with errno.
func failNth(op, substr string, n int, errno syscall.Errno) func(string, string) error {
	seen := 0
	return func(o, name string) error {
		if o != op || !strings.Contains(name, substr) {
			return nil
		}
		seen++
		if seen == n {
			return errno
		}
		return nil
	}
}

func (f *faultFS) String() string { return fmt.Sprint(f.Events()) }
