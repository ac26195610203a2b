package deliver

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mfilter/mfilter/internal/maillock"
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

	// OpenTemp opens a new regular file in directory dir that has no
	// name (O_TMPFILE) until LinkTemp gives it one; if that never
	// happens, even in a crash, the file is gone without a trace. label
	// is the name the file goes by in errors until then. A file system
	// without unnamed files returns errors.ErrUnsupported.
	OpenTemp(dir, label string) (file, error)
	// LinkTemp gives f, from OpenTemp, the name newname, failing with
	// fs.ErrExist rather than replacing it.
	LinkTemp(f file, newname string) error
	// SyncFS makes everything written to the file system that holds f
	// durable (syncfs(2)), and reports the write-back errors of that
	// file system since f was opened.
	SyncFS(f file) error
	// FSInfo says which file system holds f and whether SyncFS can
	// stand in for fsyncing each of its files.
	FSInfo(f file) (fsInfo, error)
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

// osFS is the OS name space. dirs, when set, keeps the directories of
// unnamed files open (see dirCache).
type osFS struct{ dirs *dirCache }

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
func (osFS) SyncFS(f file) error                       { return syncFS(f) }
func (osFS) FSInfo(f file) (fsInfo, error)             { return fdFSInfo(f) }

func (o osFS) OpenTemp(dir, label string) (file, error) {
	if !procFD() {
		return nil, errors.ErrUnsupported
	}
	open := func(dirfd int, name string) (fd int, err error) {
		err = ignoringEINTR(func() (err error) {
			fd, err = unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_TMPFILE|unix.O_CLOEXEC, 0o600)
			return err
		})
		return fd, err
	}
	fd, err := -1, error(unix.EBADF)
	if dirfd := o.cachedDir(dir); dirfd >= 0 {
		if fd, err = open(dirfd, "."); err == unix.ENOENT {
			o.dirs.drop(dir, dirfd) // removed: maybe made again
		}
	}
	if fd < 0 && err != nil {
		fd, err = open(unix.AT_FDCWD, dir)
	}
	if err != nil {
		return nil, tempErr(&os.PathError{Op: "open", Path: dir, Err: err})
	}
	return &rawFile{fd: fd, dir: dir, label: label}, nil
}

func (o osFS) LinkTemp(f file, newname string) error {
	// newname is a maildir's or MH folder's path and a plain name: cut
	// at the last slash rather than clean it twice for Dir and Base.
	i := strings.LastIndexByte(newname, '/')
	if i <= 0 || i == len(newname)-1 {
		return linkFD(f, unix.AT_FDCWD, newname, newname)
	}
	dir := newname[:i]
	if dirfd := o.cachedDir(dir); dirfd >= 0 {
		err := linkFD(f, dirfd, newname[i+1:], newname)
		if !errors.Is(err, unix.ENOENT) {
			return err
		}
		o.dirs.drop(dir, dirfd) // removed: maybe made again
	}
	return linkFD(f, unix.AT_FDCWD, newname, newname)
}

// cachedDir returns a descriptor of dir from the cache, or -1.
func (o osFS) cachedDir(dir string) int {
	if o.dirs == nil {
		return -1
	}
	return o.dirs.get(dir)
}

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
func (f rootFS) SyncFS(fh file) error                      { return syncFS(fh) }
func (f rootFS) FSInfo(fh file) (fsInfo, error)            { return fdFSInfo(fh) }

func (f rootFS) OpenTemp(dir, label string) (file, error) {
	if !procFD() {
		return nil, errors.ErrUnsupported
	}
	fh, err := f.r.OpenFile(dir, os.O_WRONLY|unix.O_TMPFILE, 0o600)
	if err != nil {
		return nil, tempErr(err)
	}
	return &tempFile{File: fh, name: filepath.Join(dir, label)}, nil
}

// LinkTemp links into the directory of newname opened through the root,
// so that neither ".." nor a symbolic link can lead outside it; the last
// name is a plain name inside that directory.
func (f rootFS) LinkTemp(fh file, newname string) error {
	d, err := f.r.OpenFile(filepath.Dir(newname), os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return &os.LinkError{Op: "link", Old: fh.Name(), New: newname, Err: err}
	}
	defer d.Close()
	return linkFD(fh, int(d.Fd()), filepath.Base(newname), newname)
}

// tempFile is an unnamed file from OpenTemp; its Name is the label it
// goes by in errors.
type tempFile struct {
	*os.File
	name string
}

func (f *tempFile) Name() string { return f.name }

// rawFile is a file descriptor used without the os package: an *os.File
// costs five more system calls for each open (it tries the descriptor
// with the network poller first), which is a tenth of what writing a
// small message takes. It serves the unnamed message files, which are
// only written, synced, linked and closed.
type rawFile struct {
	fd         int
	dir, label string
}

func (f *rawFile) Name() string { return filepath.Join(f.dir, f.label) }
func (f *rawFile) Fd() uintptr  { return uintptr(f.fd) }

func (f *rawFile) err(op string, err error) error {
	return &os.PathError{Op: op, Path: f.Name(), Err: err}
}

func (f *rawFile) Write(p []byte) (int, error) {
	if f.fd < 0 {
		return 0, f.err("write", os.ErrClosed)
	}
	n := 0
	for n < len(p) {
		var m int
		err := ignoringEINTR(func() (err error) {
			m, err = unix.Write(f.fd, p[n:])
			return err
		})
		if err != nil {
			return n, f.err("write", err)
		}
		if m == 0 {
			return n, f.err("write", io.ErrShortWrite)
		}
		n += m
	}
	return n, nil
}

func (f *rawFile) ReadAt(p []byte, off int64) (int, error) {
	if f.fd < 0 {
		return 0, f.err("read", os.ErrClosed)
	}
	n := 0
	for n < len(p) {
		var m int
		err := ignoringEINTR(func() (err error) {
			m, err = unix.Pread(f.fd, p[n:], off+int64(n))
			return err
		})
		if err != nil {
			return n, f.err("read", err)
		}
		if m == 0 {
			return n, io.EOF
		}
		n += m
	}
	return n, nil
}

func (f *rawFile) Close() error {
	if f.fd < 0 {
		return f.err("close", os.ErrClosed)
	}
	fd := f.fd
	f.fd = -1
	if err := unix.Close(fd); err != nil && err != syscall.EINTR {
		return f.err("close", err)
	}
	return nil
}

func (f *rawFile) Sync() error {
	if err := ignoringEINTR(func() error { return unix.Fsync(f.fd) }); err != nil {
		return f.err("sync", err)
	}
	return nil
}

func (f *rawFile) Stat() (os.FileInfo, error) {
	var st unix.Stat_t
	if err := ignoringEINTR(func() error { return unix.Fstat(f.fd, &st) }); err != nil {
		return nil, f.err("stat", err)
	}
	return rawStat{name: f.label, st: st}, nil
}

func (f *rawFile) Truncate(size int64) error {
	if err := ignoringEINTR(func() error { return unix.Ftruncate(f.fd, size) }); err != nil {
		return f.err("truncate", err)
	}
	return nil
}

func (f *rawFile) Seek(offset int64, whence int) (int64, error) {
	n, err := unix.Seek(f.fd, offset, whence)
	if err != nil {
		return n, f.err("seek", err)
	}
	return n, nil
}

func (f *rawFile) Readdirnames(int) ([]string, error) {
	return nil, f.err("readdirent", syscall.ENOTDIR)
}

// rawStat is the os.FileInfo of a rawFile; Sys is a *syscall.Stat_t as
// for an *os.File.
type rawStat struct {
	name string
	st   unix.Stat_t
}

func (s rawStat) Name() string       { return s.name }
func (s rawStat) Size() int64        { return s.st.Size }
func (s rawStat) ModTime() time.Time { return time.Unix(s.st.Mtim.Unix()) }
func (s rawStat) IsDir() bool        { return s.Mode().IsDir() }
func (s rawStat) Mode() os.FileMode {
	m := os.FileMode(s.st.Mode & 0o777)
	switch s.st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		m |= os.ModeDir
	case unix.S_IFLNK:
		m |= os.ModeSymlink
	case unix.S_IFIFO:
		m |= os.ModeNamedPipe
	case unix.S_IFSOCK:
		m |= os.ModeSocket
	case unix.S_IFCHR:
		m |= os.ModeDevice | os.ModeCharDevice
	case unix.S_IFBLK:
		m |= os.ModeDevice
	}
	return m
}
func (s rawStat) Sys() any {
	st := s.st
	return &syscall.Stat_t{Dev: st.Dev, Ino: st.Ino, Nlink: st.Nlink, Mode: st.Mode, Uid: st.Uid, Gid: st.Gid,
		Rdev: st.Rdev, Size: st.Size, Blksize: st.Blksize, Blocks: st.Blocks,
		Atim: syscall.Timespec(st.Atim), Mtim: syscall.Timespec(st.Mtim), Ctim: syscall.Timespec(st.Ctim)}
}

// tempErr turns the errors of a kernel or file system without O_TMPFILE
// into errors.ErrUnsupported.
func tempErr(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) && (errno == syscall.EOPNOTSUPP || errno == syscall.EISDIR || errno == syscall.EINVAL) {
		return errors.ErrUnsupported
	}
	return err
}

// procFD reports whether /proc/self/fd is there: LinkTemp names an
// unnamed file through it where linkat(2) refuses AT_EMPTY_PATH.
var procFD = sync.OnceValue(func() bool {
	st, err := os.Stat("/proc/self/fd")
	return err == nil && st.IsDir()
})

// emptyPathRefused is set once linkat(2) has refused AT_EMPTY_PATH where
// the /proc/self/fd path worked: kernels before 6.10 allow it only with
// CAP_DAC_READ_SEARCH. It caches that property of the kernel.
var emptyPathRefused atomic.Bool

// linkFD gives the unnamed file f the name name in the directory dirfd;
// display is that name for errors. It links the descriptor itself
// (AT_EMPTY_PATH) where the kernel lets it, which spares a path walk
// through /proc for every message; else it names the file through
// /proc/self/fd.
func linkFD(f file, dirfd int, name, display string) error {
	fd := int(f.Fd())
	var err error
	if !emptyPathRefused.Load() {
		err = ignoringEINTR(func() error {
			return unix.Linkat(fd, "", dirfd, name, unix.AT_EMPTY_PATH)
		})
		if err == nil || (err != unix.ENOENT && err != unix.EPERM) {
			return linkErr(f, display, err)
		}
	}
	src := "/proc/self/fd/" + strconv.Itoa(fd)
	perr := ignoringEINTR(func() error {
		return unix.Linkat(unix.AT_FDCWD, src, dirfd, name, unix.AT_SYMLINK_FOLLOW)
	})
	if perr == nil && err != nil {
		emptyPathRefused.Store(true)
	}
	return linkErr(f, display, perr)
}

func linkErr(f file, display string, err error) error {
	if err != nil {
		return &os.LinkError{Op: "link", Old: f.Name(), New: display, Err: err}
	}
	return nil
}

func ignoringEINTR(fn func() error) error {
	for {
		err := fn()
		if err != syscall.EINTR {
			return err
		}
	}
}

// fsInfo describes the file system that holds a file.
type fsInfo struct {
	dev uint64
	// syncfs: SyncFS makes this file system's data durable and reports
	// its write-back errors: a local file system that implements
	// sync_fs on a kernel (5.8 or later) whose syncfs(2) returns
	// write-back errors. Elsewhere (NFS, FUSE, overlay, older kernels)
	// each file is fsynced instead.
	syncfs bool
}

// File system magic numbers (statfs(2)) of the file systems whose
// syncfs(2) is trusted.
var syncfsTypes = map[int64]bool{
	0xEF53:     true, // ext2, ext3, ext4
	0x58465342: true, // xfs
	0x9123683E: true, // btrfs
	0xF2F52010: true, // f2fs
	0x01021994: true, // tmpfs: nothing to make durable
}

func fdFSInfo(f file) (fsInfo, error) {
	fd := int(f.Fd())
	var st unix.Stat_t
	if err := ignoringEINTR(func() error { return unix.Fstat(fd, &st) }); err != nil {
		return fsInfo{}, &os.PathError{Op: "fstat", Path: f.Name(), Err: err}
	}
	info := fsInfo{dev: uint64(st.Dev)}
	var sfs unix.Statfs_t
	if err := ignoringEINTR(func() error { return unix.Fstatfs(fd, &sfs) }); err != nil {
		return info, nil // fsync each file
	}
	info.syncfs = syncfsTypes[int64(sfs.Type)] && syncfsReportsErrors()
	return info, nil
}

// syncfsReportsErrors: before Linux 5.8, syncfs(2) returned success even
// when writing back failed.
var syncfsReportsErrors = sync.OnceValue(func() bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return false
	}
	return kernelAtLeast(unix.ByteSliceToString(u.Release[:]), 5, 8)
})

// kernelAtLeast compares a release like "6.1.0-13-amd64" with major.minor.
func kernelAtLeast(release string, major, minor int) bool {
	var ma, mi int
	if _, err := fmt.Sscanf(release, "%d.%d", &ma, &mi); err != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}

func syncFS(f file) error {
	fd := int(f.Fd())
	if err := ignoringEINTR(func() error { return unix.Syncfs(fd) }); err != nil {
		return &os.PathError{Op: "syncfs", Path: f.Name(), Err: err}
	}
	return nil
}

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
	return mkdirAll(fsys, dir, func(parent string) error { return syncDir(fsys, parent) })
}

// mkdirAll creates dir and any missing parents with mode 0700, and calls
// made with the parent of each directory it made.
func mkdirAll(fsys fileSystem, dir string, made func(parent string) error) error {
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
		if err := mkdirAll(fsys, parent, made); err != nil {
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
	return made(parent)
}

// mkdirAllLater is mkdirAll for the folders of deliveries: the parents
// whose entries changed are made durable by the next Commit (every
// Commit syncs them before it reports success, see pendingDirs), not one
// fsync after each mkdir. folder is the folder they were made for.
func (w *Writer) mkdirAllLater(fsys fileSystem, dir, folder string) error {
	return mkdirAll(fsys, dir, func(parent string) error {
		w.mu.Lock()
		w.made++
		w.pending[dirRef{fsys, parent}] = pendingDir{folder, w.made}
		w.mu.Unlock()
		return nil
	})
}

// pendingDir is a directory whose entries mkdirAllLater changed: folder
// was made in it, and gen counts the change, so that a Commit that made
// the directory durable before a later change does not forget that one
// (commits run while the next batch is written).
type pendingDir struct {
	folder string
	gen    uint64
}

// pendingDirs returns the directories whose entries mkdirAllLater changed
// and that no Commit has made durable yet.
func (w *Writer) pendingDirs() map[dirRef]pendingDir {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.pending) == 0 {
		return nil
	}
	return maps.Clone(w.pending)
}

// pendingDone forgets a directory that a Commit made durable, unless it
// changed again since pendingDirs returned it as gen.
func (w *Writer) pendingDone(ref dirRef, gen uint64) {
	w.mu.Lock()
	if w.pending[ref].gen == gen {
		delete(w.pending, ref)
	}
	w.mu.Unlock()
}

// lockFS lets the dotlock work in a writer's file system, so that tests
// inject faults into it as into the rest.
type lockFS struct{ fsys fileSystem }

func (l lockFS) OpenFile(name string, flag int, perm os.FileMode) (maillock.File, error) {
	f, err := l.fsys.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (l lockFS) Link(oldname, newname string) error     { return l.fsys.Link(oldname, newname) }
func (l lockFS) Remove(name string) error               { return l.fsys.Remove(name) }
func (l lockFS) Lstat(name string) (os.FileInfo, error) { return l.fsys.Lstat(name) }
