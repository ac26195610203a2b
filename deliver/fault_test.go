package deliver

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
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
	for _, c := range cases {
		for _, fl := range c.faults {
			name := c.spec + "/" + fl.op + "(" + fl.substr + ")=" + fl.errno.Error()
			if c.fresh {
				name = "new-" + name
			}
			t.Run(name, func(t *testing.T) {
				dir := t.TempDir()
				w, ffs := newFaultWriter(t, dir, testOptions())
				if !c.fresh {
					if c.spec == "dir" {
						os.Mkdir(filepath.Join(dir, "dir"), 0o700)
					}
					deliverCommit(t, w, []byte("Subject: old message\n\nold\n"), mustFolder(t, dir, c.spec))
				}
				before := snapshot(t, dir)
				f := mustFolder(t, dir, c.spec)
				ffs.fail = failNth(fl.op, fl.substr, 1, fl.errno)

				txn := w.Begin(context.Background())
				d, derr := txn.Deliver(f, msg)
				cerr := txn.Commit()
				switch {
				case derr != nil:
					if !errors.Is(derr, fl.errno) {
						t.Errorf("Deliver error %v does not wrap %v", derr, fl.errno)
					}
				case cerr == nil:
					t.Fatalf("the fault was not reported (events %v)", ffs)
				case d.Err == nil:
					t.Errorf("Commit failed (%v) but the delivery has no Err", cerr)
				case !errors.Is(cerr, fl.errno):
					t.Errorf("Commit error %v does not wrap %v", cerr, fl.errno)
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
			})
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
// made durable fails alone; the others are delivered.
func TestFaultBatchIsolation(t *testing.T) {
	dir := t.TempDir()
	w, ffs := newFaultWriter(t, dir, testOptions())
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
	ffs.fail = failNth("sync", bad, 1, syscall.EIO)
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
	if n := len(listDir(t, filepath.Join(dir, "md/tmp"))); n != 0 {
		t.Errorf("%d files left in tmp/", n)
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
	if names := listDir(t, dir); len(names) != 0 {
		t.Errorf("cancelled deliveries wrote %v", names)
	}
}
