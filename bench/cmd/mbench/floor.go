package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A floor writes the same files into a maildir in-process, each file
// durable before its name appears in new/, and new/ durable at the end:
// what a maildir delivery must do, and nothing else. No splitting, no
// process start-up, no locks. The rows show how far each tool is from
// the disk's limit and what batching the fsyncs can buy.
type floor struct {
	label    string
	parallel int  // fsyncs in flight
	syncfs   bool // one syncfs(2) per batch instead of an fsync per file
	// pipelined: as mfilter files, unnamed files (O_TMPFILE) whose
	// batches are made durable, linked and their names made durable
	// while the next batches are written, up to floorFlying at once.
	pipelined bool
}

var floors = []floor{
	{label: "floor: fsync each file in turn", parallel: 1},
	{label: "floor: 16 fsyncs in flight", parallel: 16},
	{label: "floor: 256 fsyncs in flight", parallel: 256},
	{label: "floor: syncfs per 256 files", syncfs: true},
	{label: "floor: syncfs, 3 batches in flight", pipelined: true},
}

// floorFlying is how many batches the pipelined floor commits at once,
// as many as mfilter does.
const floorFlying = 3

// floorBatch is how many files one syncfs covers, as many as mfilter
// commits together.
const floorBatch = 256

// A floorFile is one message file a floor writes.
type floorFile struct {
	folder string // the maildir, below the floor's directory; "" is that directory
	data   []byte
}

// floorRows times every floor runs times, for files and the mbox files in
// mboxes (each written at once, made durable with the files: what
// appending those messages one by one would at least take).
func floorRows(work string, files []floorFile, mboxes [][]byte, runs int) ([]stats, error) {
	var rows []stats
	for k, f := range floors {
		var rs []result
		for run := 0; run < runs; run++ {
			dir := filepath.Join(work, fmt.Sprintf("floor%d-run%d", k, run+1))
			syscall.Sync()
			start := time.Now()
			err := writeFloor(f, dir, files, mboxes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f.label, err)
			}
			rs = append(rs, result{wall: time.Since(start), steal: -1})
		}
		rows = append(rows, summarize(f.label, rs, len(files), false))
	}
	return rows, nil
}

// writeFloor makes the maildirs of files under dir and runs floor f.
func writeFloor(f floor, dir string, files []floorFile, mboxes [][]byte) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	var paths []string // of the maildirs, in the order they are first used
	seen := make(map[string]bool)
	for _, ff := range files {
		if !seen[ff.folder] {
			seen[ff.folder] = true
			paths = append(paths, filepath.Join(dir, ff.folder))
		}
	}
	for _, p := range paths {
		if err := makeMaildir(p); err != nil {
			return err
		}
	}
	w := &floorWriter{dir: dir, files: files, maildirs: paths}
	switch {
	case f.pipelined:
		return w.pipelined(mboxes)
	case f.syncfs:
		return w.syncfs(mboxes)
	}
	return w.fsync(mboxes, f.parallel)
}

func makeMaildir(dir string) error {
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return err
		}
	}
	return nil
}

// floorWriter writes files into their maildirs below dir.
type floorWriter struct {
	dir      string
	files    []floorFile
	maildirs []string
}

func floorName(i int) string { return fmt.Sprintf("%d.floor", i) }

func (w *floorWriter) path(i int, sub string) string {
	return filepath.Join(w.dir, w.files[i].folder, sub, floorName(i))
}

// write writes file i to its tmp/ and fsyncs it when sync is set.
func (w *floorWriter) write(i int, sync bool) error {
	f, err := os.OpenFile(w.path(i, "tmp"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(w.files[i].data)
	if sync && err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// publish links file i from tmp/ into new/ and removes the tmp name.
func (w *floorWriter) publish(i int) error {
	if err := os.Link(w.path(i, "tmp"), w.path(i, "new")); err != nil {
		return err
	}
	return os.Remove(w.path(i, "tmp"))
}

// syncNew fsyncs the new/ of every maildir.
func (w *floorWriter) syncNew() error {
	for _, p := range w.maildirs {
		if err := syncPath(filepath.Join(p, "new")); err != nil {
			return err
		}
	}
	return nil
}

func syncPath(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// fsync writes and fsyncs the mboxes, writes, fsyncs and publishes each
// file, with up to parallel files in flight, then fsyncs each new/ (and
// the directory, for the mboxes).
func (w *floorWriter) fsync(mboxes [][]byte, parallel int) error {
	if err := writeMboxes(w.dir, mboxes, true); err != nil {
		return err
	}
	jobs := make(chan int)
	errs := make(chan error, parallel)
	for range parallel {
		go func() {
			var first error
			for i := range jobs {
				if first == nil {
					if first = w.write(i, true); first == nil {
						first = w.publish(i)
					}
				}
			}
			errs <- first
		}()
	}
	for i := range w.files {
		jobs <- i
	}
	close(jobs)
	var all []error
	for range parallel {
		all = append(all, <-errs)
	}
	if err := errors.Join(all...); err != nil {
		return err
	}
	if len(mboxes) > 0 {
		if err := syncPath(w.dir); err != nil {
			return err
		}
	}
	return w.syncNew()
}

// writeMboxes writes each of mboxes to its own file in dir, fsyncing it
// when sync is set.
func writeMboxes(dir string, mboxes [][]byte, sync bool) error {
	for i, data := range mboxes {
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("floor%d.mbox", i)), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		_, err = f.Write(data)
		if sync && err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// openAndWriteMboxes opens the floor's directory for syncfs(2), before
// anything is written (syncfs reports the write-back errors since), then
// writes the mboxes, unsynced.
func (w *floorWriter) openAndWriteMboxes(mboxes [][]byte) (*os.File, error) {
	d, err := os.Open(w.dir)
	if err != nil {
		return nil, err
	}
	if err := writeMboxes(w.dir, mboxes, false); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// syncfs writes the mboxes, then each batch of files into tmp/, makes
// them all durable with one syncfs(2) (the first also the mboxes and
// their names), publishes them, and fsyncs each new/.
func (w *floorWriter) syncfs(mboxes [][]byte) error {
	d, err := w.openAndWriteMboxes(mboxes)
	if err != nil {
		return err
	}
	defer d.Close()
	for lo := 0; lo < len(w.files); lo += floorBatch {
		hi := min(lo+floorBatch, len(w.files))
		for i := lo; i < hi; i++ {
			if err := w.write(i, false); err != nil {
				return err
			}
		}
		if err := unix.Syncfs(int(d.Fd())); err != nil {
			return fmt.Errorf("syncfs: %w", err)
		}
		for i := lo; i < hi; i++ {
			if err := w.publish(i); err != nil {
				return err
			}
		}
		if err := w.syncNew(); err != nil {
			return err
		}
	}
	return nil
}

// pipelined writes the mboxes, then each batch of files into tmp/
// unnamed, and hands the batch to a goroutine that makes the files
// durable with one syncfs(2), links them into new/ and makes the names
// durable with another, while the next batch is written; at most
// floorFlying batches commit at once.
func (w *floorWriter) pipelined(mboxes [][]byte) error {
	d, err := w.openAndWriteMboxes(mboxes)
	if err != nil {
		return err
	}
	defer d.Close()
	slots := make(chan struct{}, floorFlying)
	errs := make(chan error, len(w.files)/floorBatch+1)
	flying := 0
	for lo := 0; lo < len(w.files); lo += floorBatch {
		hi := min(lo+floorBatch, len(w.files))
		fds := make([]int, 0, hi-lo)
		for i := lo; i < hi; i++ {
			tmp := filepath.Join(w.dir, w.files[i].folder, "tmp")
			fd, err := unix.Open(tmp, unix.O_WRONLY|unix.O_TMPFILE|unix.O_CLOEXEC, 0o600)
			if err == nil {
				_, err = unix.Write(fd, w.files[i].data)
			}
			if err != nil {
				return fmt.Errorf("unnamed file in %s: %w", tmp, err)
			}
			fds = append(fds, fd)
		}
		slots <- struct{}{}
		flying++
		go func() {
			defer func() { <-slots }()
			errs <- w.commitUnnamed(d, lo, fds)
		}()
	}
	var all []error
	for range flying {
		all = append(all, <-errs)
	}
	return errors.Join(all...)
}

// commitUnnamed makes the unnamed files fds (files first, first+1, ...)
// durable, names them in their new/, and makes the names durable.
func (w *floorWriter) commitUnnamed(d *os.File, first int, fds []int) error {
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("syncfs: %w", err)
	}
	for k, fd := range fds {
		src := fmt.Sprintf("/proc/self/fd/%d", fd)
		if err := unix.Linkat(unix.AT_FDCWD, src, unix.AT_FDCWD, w.path(first+k, "new"), unix.AT_SYMLINK_FOLLOW); err != nil {
			return fmt.Errorf("link %s: %w", w.path(first+k, "new"), err)
		}
	}
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("syncfs: %w", err)
	}
	return nil
}
