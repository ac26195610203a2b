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
// the least any maildir delivery must do. No splitting, no process
// start-up, no locks. The rows show how far each tool is from the disk's
// limit and what batching the fsyncs can buy.
type floor struct {
	label    string
	parallel int  // fsyncs in flight
	syncfs   bool // one syncfs(2) per batch instead of an fsync per file
}

var floors = []floor{
	{label: "floor: fsync each file in turn", parallel: 1},
	{label: "floor: 16 fsyncs in flight", parallel: 16},
	{label: "floor: 256 fsyncs in flight", parallel: 256},
	{label: "floor: syncfs per 256 files", syncfs: true},
}

// floorBatch is how many files one syncfs covers, as many as mfilter
// commits together.
const floorBatch = 256

// floorRows times every floor runs times, for the files in contents and
// the mbox files in mboxes (each written at once, made durable with the
// files: what appending those messages one by one would at least take).
func floorRows(work string, contents, mboxes [][]byte, runs int) ([]stats, error) {
	var rows []stats
	for k, f := range floors {
		var rs []result
		for run := 0; run < runs; run++ {
			dir := filepath.Join(work, fmt.Sprintf("floor%d-run%d", k, run+1))
			syscall.Sync()
			start := time.Now()
			var err error
			if f.syncfs {
				err = writeMaildirSyncfs(dir, contents, mboxes)
			} else {
				err = writeMaildirFsync(dir, contents, mboxes, f.parallel)
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f.label, err)
			}
			rs = append(rs, result{wall: time.Since(start)})
		}
		rows = append(rows, summarize(f.label, rs, len(contents), false))
	}
	return rows, nil
}

func makeMaildir(dir string) error {
	for _, sub := range []string{"", "tmp", "new", "cur"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			return err
		}
	}
	return nil
}

func floorName(i int) string { return fmt.Sprintf("%d.floor", i) }

// writeFile writes data to dir/tmp/NAME and fsyncs it when sync is set.
func writeFile(dir string, i int, data []byte, sync bool) error {
	f, err := os.OpenFile(filepath.Join(dir, "tmp", floorName(i)), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
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
	return err
}

// publish links dir/tmp/NAME to dir/new/NAME and removes the tmp name.
func publish(dir string, i int) error {
	tmp := filepath.Join(dir, "tmp", floorName(i))
	if err := os.Link(tmp, filepath.Join(dir, "new", floorName(i))); err != nil {
		return err
	}
	return os.Remove(tmp)
}

func syncPath(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// writeMaildirFsync writes and fsyncs the mboxes, writes, fsyncs and
// publishes each file, with up to parallel files in flight, then fsyncs
// new/ (and dir, for the mboxes).
func writeMaildirFsync(dir string, contents, mboxes [][]byte, parallel int) error {
	if err := makeMaildir(dir); err != nil {
		return err
	}
	if err := writeMboxes(dir, mboxes, true); err != nil {
		return err
	}
	jobs := make(chan int)
	errs := make(chan error, parallel)
	for range parallel {
		go func() {
			var first error
			for i := range jobs {
				if first == nil {
					if first = writeFile(dir, i, contents[i], true); first == nil {
						first = publish(dir, i)
					}
				}
			}
			errs <- first
		}()
	}
	for i := range contents {
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
		if err := syncPath(dir); err != nil {
			return err
		}
	}
	return syncPath(filepath.Join(dir, "new"))
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

// writeMaildirSyncfs writes the mboxes, then each batch of files into
// tmp/, makes them all durable with one syncfs(2) (the first also the
// mboxes and their names), publishes them, and fsyncs new/.
func writeMaildirSyncfs(dir string, contents, mboxes [][]byte) error {
	if err := makeMaildir(dir); err != nil {
		return err
	}
	if err := writeMboxes(dir, mboxes, false); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	for lo := 0; lo < len(contents); lo += floorBatch {
		hi := min(lo+floorBatch, len(contents))
		for i := lo; i < hi; i++ {
			if err := writeFile(dir, i, contents[i], false); err != nil {
				return err
			}
		}
		if err := unix.Syncfs(int(d.Fd())); err != nil {
			return fmt.Errorf("syncfs: %w", err)
		}
		for i := lo; i < hi; i++ {
			if err := publish(dir, i); err != nil {
				return err
			}
		}
		if err := syncPath(filepath.Join(dir, "new")); err != nil {
			return err
		}
	}
	return nil
}
