package deliver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/mfilter/mfilter/internal/mailtest"
)

// TestFaults injects a failure into every operation a writer makes, for
// every folder kind, and checks the promise of the package: the failure
// is reported (by Deliver or by Commit, for this delivery), the message
// is nowhere, no temporary or lock file is left, and what the folder
// held before is byte for byte intact.
func TestFaults(t *testing.T) {
	const marker = "Subject: the new message"
	msg := []byte("From a@example.com  Tue Jan  2 03:04:05 2024\n" + marker + "\n\n" + strings.Repeat("body line\n", 500))
	type fault struct {
		op, substr string
		errno      syscall.Errno
	}
	cases := []struct {
		spec   string
		fresh  bool // the folder does not exist yet
		faults []fault
	}{
		{"md/", false, []fault{
			{"open", "/tmp/", syscall.EACCES},
			{"write", "/tmp/", syscall.ENOSPC},
			{"sync", "/tmp/", syscall.EIO},
			{"link", "/new/", syscall.EIO},
			{"syncdir", "/new", syscall.EIO},
		}},
		{"md/", true, []fault{
			{"mkdir", "/md", syscall.EACCES},
			{"mkdir", "/cur", syscall.EDQUOT},
			{"syncdir", "/md", syscall.EIO},
		}},
		{"mh/.", false, []fault{
			{"open", ".mfilter-tmp", syscall.EACCES},
			{"write", ".mfilter-tmp", syscall.EFBIG},
			{"sync", ".mfilter-tmp", syscall.EIO},
			{"link", "/mh/", syscall.EMLINK},
			{"syncdir", "/mh", syscall.EIO},
		}},
		{"dir", false, []fault{
			{"open", ".mfilter-tmp", syscall.EROFS},
			{"write", ".mfilter-tmp", syscall.ENOSPC},
			{"sync", ".mfilter-tmp", syscall.EIO},
			{"link", "/dir/", syscall.EIO},
			{"syncdir", "/dir", syscall.EIO},
		}},
		{"mbox", false, []fault{
			{"open", "/mbox", syscall.EACCES},
			{"write", "/mbox", syscall.EFBIG},
			{"write", "/mbox", syscall.ENOSPC},
			{"sync", "/mbox", syscall.EIO},
			{"link", "mbox.lock", syscall.EIO},
			{"open", ".mbox.lock.", syscall.EIO},
		}},
		{"sub/mbox", true, []fault{
			{"mkdir", "/sub", syscall.EACCES},
			{"write", "/mbox", syscall.EFBIG},
			{"sync", "/mbox", syscall.EIO},
			{"syncdir", "/sub", syscall.EIO},
		}},
	}
	for _, named := range []bool{false, true} {
		for _, c := range cases {
			for _, fl := range c.faults {
				name := c.spec + "/" + fl.op + "(" + fl.substr + ")=" + fl.errno.Error()
				if c.fresh {
					name = "new-" + name
				}
				if named {
					name = "named/" + name
				}
				t.Run(name, func(t *testing.T) {
					testFault(t, c.spec, c.fresh, named, marker, msg, fl.op, fl.substr, fl.errno)
				})
			}
		}
	}
}

// testFault is one case of TestFaults: named makes the writer use named
// temporary files, as on a file system without O_TMPFILE.
func testFault(t *testing.T, spec string, fresh, named bool, marker string, msg []byte, op, substr string, errno syscall.Errno) {
	dir := t.TempDir()
	w, ffs := newFaultWriter(t, dir, testOptions())
	ffs.named = named
	if !fresh {
		if spec == "dir" {
			os.Mkdir(filepath.Join(dir, "dir"), 0o700)
		}
		deliverCommit(t, w, []byte("Subject: old message\n\nold\n"), mustFolder(t, dir, spec))
	}
	before := snapshot(t, dir)
	f := mustFolder(t, dir, spec)
	ffs.fail = failNth(op, substr, 1, errno)

	txn := w.Begin(context.Background())
	d, derr := txn.Deliver(f, msg)
	cerr := txn.Commit()
	switch {
	case derr != nil:
		if !errors.Is(derr, errno) {
			t.Errorf("Deliver error %v does not wrap %v", derr, errno)
		}
	case cerr == nil:
		t.Fatalf("the fault was not reported (events %v)", ffs)
	case d.Err == nil:
		t.Errorf("Commit failed (%v) but the delivery has no Err", cerr)
	case !errors.Is(cerr, errno):
		t.Errorf("Commit error %v does not wrap %v", cerr, errno)
	}
	if !strings.Contains(strings.Join(ffs.Events(), "\n"), "FAIL") {
		t.Fatalf("the fault was never injected: %v", ffs)
	}

	after := snapshot(t, dir)
	for k, v := range after {
		if strings.Contains(v, marker) {
			t.Errorf("%s holds the failed message", k)
		}
		base := filepath.Base(k)
		if strings.HasPrefix(base, ".mfilter-tmp") || strings.HasSuffix(k, ".lock") || strings.HasPrefix(base, ".mbox.lock") ||
			strings.Contains(k, "/tmp/") && !strings.HasSuffix(k, "/") {
			t.Errorf("%s left behind", k)
		}
		if old, ok := before[k]; ok && old != v {
			t.Errorf("%s changed", k)
		}
		if _, ok := before[k]; !ok && !strings.HasSuffix(k, "/") && v != "-rw------- " {
			t.Errorf("new file %s: %q", k, v) // only an empty new mbox may stay
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			t.Errorf("%s disappeared", k)
		}
	}
}

// TestFaultTruncateFails: when the write and then the truncation back
// fail, the error says that a partial message may be left.
func TestFaultTruncateFails(t *testing.T) {
	dir := t.TempDir()
	w, ffs := newFaultWriter(t, dir, testOptions())
	f := mustFolder(t, dir, "mbox")
	fails := map[string]bool{"write": true, "truncate": true}
	ffs.fail = func(op, name string) error {
		if fails[op] && strings.HasSuffix(name, "/mbox") {
			return syscall.EIO
		}
		return nil
	}
	_, err := w.Begin(context.Background()).Deliver(f, []byte("X: 1\n\nbody\n"))
	if err == nil || !strings.Contains(err.Error(), "truncating back to 0 bytes failed") {
		t.Errorf("Deliver = %v, want an error that reports the failed truncation", err)
	}
}

// TestFaultBatchIsolation: in a batch, a message whose file cannot be
// made durable fails alone; the others are delivered. With syncfs, the
// failing syncfs makes Commit fsync each file to learn which one failed.
func TestFaultBatchIsolation(t *testing.T) {
	for _, syncfs := range []bool{false, true} {
		for _, named := range []bool{false, true} {
			t.Run(fmt.Sprintf("syncfs=%v/named=%v", syncfs, named), func(t *testing.T) {
				testFaultBatchIsolation(t, syncfs, named)
			})
		}
	}
}

func testFaultBatchIsolation(t *testing.T, syncfs, named bool) {
	dir := t.TempDir()
	opts := testOptions()
	var warnings []string
	opts.Warn = func(s string) { warnings = append(warnings, s) }
	w, ffs := newFaultWriter(t, dir, opts)
	ffs.named = named
	w.syncfsMin = 0
	if syncfs {
		w.syncfsMin = 1
		ffs.trustSyncFS = true
	}
	md := mustFolder(t, dir, "md/")
	txn := w.Begin(context.Background())
	var ds []*Delivery
	for i := range 10 {
		txn.BeginMessage()
		d, err := txn.Deliver(md, []byte("Subject: "+string(rune('a'+i))+"\n\n"))
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	bad := filepath.Base(ds[4].file.Name())
	failSync := failNth("sync", bad, 1, syscall.EIO)
	ffs.fail = func(op, name string) error {
		if op == "syncfs" {
			return syscall.EIO
		}
		return failSync(op, name)
	}
	if err := txn.Commit(); err == nil {
		t.Fatal("Commit reported no error")
	}
	for i, d := range ds {
		_, serr := os.Stat(d.Path)
		if i == 4 {
			if d.Err == nil || serr == nil {
				t.Errorf("failed message: Err %v, file %v", d.Err, serr)
			}
			continue
		}
		if d.Err != nil || serr != nil {
			t.Errorf("message %d: Err %v, file %v", i, d.Err, serr)
		}
	}
	if n := len(mailtest.ListDir(t, filepath.Join(dir, "md/tmp"))); n != 0 {
		t.Errorf("%d files left in tmp/", n)
	}
	evs := strings.Join(ffs.Events(), "\n")
	if syncfs {
		if !strings.Contains(evs, "syncfs ") || len(warnings) == 0 || !strings.Contains(warnings[0], "syncfs") {
			t.Errorf("the failed syncfs was not tried or not warned about: warnings %q, events %v", warnings, ffs)
		}
		if n := strings.Count(evs, "\nsync "); n != 10 {
			t.Errorf("%d files fsynced after the failed syncfs, want 10", n)
		}
	} else if strings.Contains(evs, "syncfs") {
		t.Errorf("syncfs called: %v", ffs)
	}
}

// TestCommitSyncChoice: a Commit of few files (mfilter deliver files one
// message) fsyncs each of them; one of many files on a file system whose
// syncfs(2) is trusted makes them durable with one syncfs.
func TestCommitSyncChoice(t *testing.T) {
	dir := t.TempDir()
	info, err := fdFSInfo(mustOpen(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, SyncfsMin - 1, SyncfsMin, 100} {
		w, ffs := newFaultWriter(t, dir, testOptions())
		md := mustFolder(t, dir, fmt.Sprintf("md%d/", n))
		txn := w.Begin(context.Background())
		for i := range n {
			txn.BeginMessage()
			if _, err := txn.Deliver(md, fmt.Appendf(nil, "Subject: %d\n\n", i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := txn.Commit(); err != nil {
			t.Fatal(err)
		}
		syncs, syncfs := 0, 0
		for _, ev := range ffs.Events() {
			switch strings.Fields(ev)[0] {
			case "sync":
				syncs++
			case "syncfs":
				syncfs++
			}
		}
		wantSyncfs := 0
		if n >= SyncfsMin && info.syncfs {
			wantSyncfs = 2 // the files, then the directories
		}
		if syncfs != wantSyncfs || syncs != n*(1-wantSyncfs/2) {
			t.Errorf("%d messages: %d fsyncs and %d syncfs, want %d syncfs", n, syncs, syncfs, wantSyncfs)
		}
		if names := mailtest.ListDir(t, filepath.Join(md.Path, "new")); len(names) != n {
			t.Errorf("%d messages: new/ holds %d", n, len(names))
		}
	}
}

func TestKernelAtLeast(t *testing.T) {
	for _, c := range []struct {
		release string
		want    bool
	}{
		{"5.8.0", true}, {"5.7.19-arch1", false}, {"6.1.0-13-amd64", true}, {"4.19.0", false},
		{"5.10", true}, {"10.0.0", true}, {"garbage", false},
	} {
		if got := kernelAtLeast(c.release, 5, 8); got != c.want {
			t.Errorf("kernelAtLeast(%q, 5, 8) = %v", c.release, got)
		}
	}
}

// TestDotlockPermissionFallback: where the lock file cannot be created
// (a mail spool without write access), the delivery goes ahead under the
// fcntl lock alone, as procmail and mutt do, and says so.
func TestDotlockPermissionFallback(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	var warnings []string
	opts.Warn = func(s string) { warnings = append(warnings, s) }
	w, ffs := newFaultWriter(t, dir, opts)
	ffs.fail = func(op, name string) error {
		if op == "open" && strings.Contains(name, ".mbox.lock.") {
			return syscall.EACCES
		}
		return nil
	}
	f := mustFolder(t, dir, "mbox")
	deliverCommit(t, w, []byte("X: 1\n\n"), f)
	if b, _ := os.ReadFile(f.Path); !bytes.Contains(b, []byte("X: 1\n")) {
		t.Errorf("mbox holds %q", b)
	}
	if len(warnings) == 0 || !strings.Contains(warnings[0], "fcntl lock alone") {
		t.Errorf("warnings %q", warnings)
	}
}

// TestDeliverCancelled: a cancelled context stops delivery before
// anything is written.
func TestDeliverCancelled(t *testing.T) {
	dir := t.TempDir()
	w := NewWriter(testOptions())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	txn := w.Begin(ctx)
	for _, spec := range []string{"md/", "mbox", "mh/."} {
		if _, err := txn.Deliver(mustFolder(t, dir, spec), []byte("X: 1\n\n")); !errors.Is(err, context.Canceled) {
			t.Errorf("%s: Deliver = %v, want context.Canceled", spec, err)
		}
	}
	if names := mailtest.ListDir(t, dir); len(names) != 0 {
		t.Errorf("cancelled deliveries wrote %v", names)
	}
}

func TestUnder(t *testing.T) {
	for _, c := range []struct {
		dir, path string
		want      bool
	}{
		{"/a/b", "/a/b", true}, {"/a/b", "/a/b/c", true}, {"/a/b/", "/a/b/c", true},
		{"/a/b", "/a/bc", false}, {"/a/b", "/a", false}, {"/", "/a", true},
		{".", "lists/a", true}, {".", "/abs", false}, {"lists", "lists/a", true}, {"lists", "listsx/a", false},
	} {
		if got := under(c.dir, c.path); got != c.want {
			t.Errorf("under(%q, %q) = %v", c.dir, c.path, got)
		}
	}
}
