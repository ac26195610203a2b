package deliver

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// fileSystem is where a folder lives: the plain OS name space for folders
// the user wrote down, or an os.Root for names built from message data,
// which then cannot leave the mail root through ".." or symlinks. Tests
// wrap it to inject faults.
type fileSystem interface {
	OpenFile(name string, flag int, perm os.FileMode) (file, error)
	Mkdir(name string, perm os.FileMode) error
	Link(oldname, newname string) error
	Remove(name string) error
	Stat(name string) (os.FileInfo, error)
	Lstat(name string) (os.FileInfo, error)
}

// file is the part of *os.File that the writers use.
type file interface {
	io.Writer
	io.ReaderAt
	io.Closer
	Name() string
	Sync() error
	Stat() (os.FileInfo, error)
	Truncate(size int64) error
	Seek(offset int64, whence int) (int64, error)
	Fd() uintptr
	Readdirnames(n int) ([]string, error)
}

type osFS struct{}

func (osFS) OpenFile(name string, flag int, perm os.FileMode) (file, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err // not a typed nil inside the interface
	}
	return f, nil
}
func (osFS) Mkdir(name string, perm os.FileMode) error { return os.Mkdir(name, perm) }
func (osFS) Link(oldname, newname string) error        { return os.Link(oldname, newname) }
func (osFS) Remove(name string) error                  { return os.Remove(name) }
func (osFS) Stat(name string) (os.FileInfo, error)     { return os.Stat(name) }
func (osFS) Lstat(name string) (os.FileInfo, error)    { return os.Lstat(name) }

type rootFS struct{ r *os.Root }

func (f rootFS) OpenFile(name string, flag int, perm os.FileMode) (file, error) {
	fd, err := f.r.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return fd, nil
}
func (f rootFS) Mkdir(name string, perm os.FileMode) error { return f.r.Mkdir(name, perm) }
func (f rootFS) Link(oldname, newname string) error        { return f.r.Link(oldname, newname) }
func (f rootFS) Remove(name string) error                  { return f.r.Remove(name) }
func (f rootFS) Stat(name string) (os.FileInfo, error)     { return f.r.Stat(name) }
func (f rootFS) Lstat(name string) (os.FileInfo, error)    { return f.r.Lstat(name) }

// syncDir makes the entries of directory dir durable.
func syncDir(fsys fileSystem, dir string) error {
	d, err := fsys.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("open directory %s for fsync: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	// EINVAL: a file system that cannot sync directories (some FUSE and
	// network file systems); its entries are as durable as they get.
	if err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// mkdirAllDurable creates dir and any missing parents with mode 0700,
// fsyncing each parent whose entries changed so that a crash cannot lose
// a folder that a delivery was already reported into.
func mkdirAllDurable(fsys fileSystem, dir string) error {
	st, err := fsys.Stat(dir)
	if err == nil {
		if !st.IsDir() {
			return &os.PathError{Op: "mkdir", Path: dir, Err: syscall.ENOTDIR}
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(dir)
	if parent != dir && parent != "." && parent != "/" {
		if err := mkdirAllDurable(fsys, parent); err != nil {
			return err
		}
	}
	if err := fsys.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			if st, serr := fsys.Stat(dir); serr == nil && st.IsDir() {
				return nil // made by a concurrent delivery
			}
		}
		return err
	}
	return syncDir(fsys, parent)
}
