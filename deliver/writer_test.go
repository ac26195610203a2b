package deliver

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mfilter/mfilter/internal/maillock"
	"github.com/mfilter/mfilter/internal/mailtest"
	"golang.org/x/sys/unix"
)

var updateWriterGolden = flag.Bool("update-writer-golden", false, "rewrite deliver/testdata/writer golden files")

var fixedNow = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

func testOptions() Options {
	return Options{
		Hostname: "host.example",
		Now:      func() time.Time { return fixedNow },
		Lock:     maillock.LockOptions{Timeout: 5 * time.Second, MaxSleep: 20 * time.Millisecond},
	}
}

func mustFolder(t *testing.T, base, spec string) Folder {
	t.Helper()
	f, err := ParseFolder(base, spec)
	if err != nil {
		t.Fatalf("ParseFolder(%q): %v", spec, err)
	}
	return f
}

// deliverCommit delivers msg into each folder in one Txn and commits.
func deliverCommit(t *testing.T, w *Writer, msg []byte, folders ...Folder) []*Delivery {
	t.Helper()
	txn := w.Begin(context.Background())
	var ds []*Delivery
	for _, f := range folders {
		d, err := txn.Deliver(f, msg)
		if err != nil {
			t.Fatalf("Deliver(%s): %v", f.Name, err)
		}
		ds = append(ds, d)
	}
	if err := txn.Commit(); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	return ds
}

// snapshot maps every file and directory under dir to its mode and
// contents, so that tests can check that nothing changed.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := make(map[string]string)
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := e.Info()
		if err != nil {
			return err
		}
		if e.IsDir() {
			m[rel+"/"] = info.Mode().String()
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		m[rel] = info.Mode().String() + " " + string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func diffSnapshots(before, after map[string]string) string {
	var out []string
	for k, v := range after {
		if b, ok := before[k]; !ok {
			out = append(out, "+ "+k)
		} else if b != v {
			out = append(out, "~ "+k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			out = append(out, "- "+k)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// goldenCases are the messages whose written bytes are pinned by golden
// files under testdata/writer; they cover procmail-behaviour.md §1-2.
// They are files (../testdata/golden-cases/NAME.eml) that the mailfmt
// fuzz tests take as seeds too.
var goldenCases = readGoldenCases()

func readGoldenCases() []struct{ name, msg string } {
	paths, err := filepath.Glob(filepath.Join("..", "testdata", "golden-cases", "*.eml"))
	if err != nil || len(paths) == 0 {
		panic(fmt.Sprintf("golden cases: %v (%d files)", err, len(paths)))
	}
	var cases []struct{ name, msg string }
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			panic(err)
		}
		cases = append(cases, struct{ name, msg string }{strings.TrimSuffix(filepath.Base(p), ".eml"), string(b)})
	}
	return cases
}

// goldenKinds are the ways each golden case is written.
var goldenKinds = []struct {
	ext  string
	spec string // folder spec relative to the test dir
	opt  func(*Options)
}{
	{"mbox", "mbox", nil},
	{"mboxY", "mbox", func(o *Options) { o.Berkeley = true }},
	{"mboxrd", "mbox", func(o *Options) { o.Mboxrd = true }},
	{"maildir", "md/", nil},
	{"mh", "mh/.", nil},
	{"dir", "dir", nil},
}

// TestWriterGolden pins the bytes of every writer for every golden case.
// The files were checked against procmail 3.22 -m (procmail-behaviour.md).
// The differences are deliberate: mfilter's mbox writer adds a From_ line
// where the message has none (as formail does; leading-blank-lines,
// no-from-line, no-header, empty), escapes past a NUL (nul-bytes), and
// escapes the body where the Content-Length is wrong (cl-overflow,
// cl-empty), so that every written message reads back as one.
func TestWriterGolden(t *testing.T) {
	for _, c := range goldenCases {
		for _, k := range goldenKinds {
			t.Run(c.name+"."+k.ext, func(t *testing.T) {
				dir := t.TempDir()
				if k.ext == "dir" {
					if err := os.Mkdir(filepath.Join(dir, "dir"), 0o700); err != nil {
						t.Fatal(err)
					}
				}
				opts := testOptions()
				if k.opt != nil {
					k.opt(&opts)
				}
				w := NewWriter(opts)
				f := mustFolder(t, dir, k.spec)
				ds := deliverCommit(t, w, []byte(c.msg), f)
				got, err := os.ReadFile(ds[0].Path)
				if err != nil {
					t.Fatal(err)
				}
				if ds[0].Size != len(got) {
					t.Errorf("Size = %d, file has %d bytes", ds[0].Size, len(got))
				}
				golden := filepath.Join("testdata", "writer", c.name+"."+k.ext)
				if *updateWriterGolden {
					if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(golden, got, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test -update-writer-golden to create it)", err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s: wrote\n%q\nwant (%s)\n%q", f.Kind, got, golden, want)
				}
			})
		}
	}
}

var maildirNameRE = regexp.MustCompile(`^[0-9]+\.M[0-9]+P[0-9]+Q[0-9]+R[0-9a-f]{16}\.host\\057x\\072y,S=[0-9]+$`)

// mailstatNameRE is what procmail's mailstat folds into "folder/": a
// maildir name outside it makes every delivery a folder of its own.
var mailstatNameRE = regexp.MustCompile(`^[-[:alnum:]_][-[:alnum:]_.,+:%@]*$`)

// TestWriterNamesAndModes checks file names, modes and directory creation
// for every folder kind, starting from nothing.
func TestWriterNamesAndModes(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "plain"), 0o755); err != nil {
		t.Fatal(err)
	}
	opts := testOptions()
	opts.Hostname = "host/x:y" // '/' and ':' must not reach a file name
	w := NewWriter(opts)
	msg := []byte("From a@b  Tue Jan  2 03:04:05 2024\nSubject: x\n\nbody\n")
	md := mustFolder(t, dir, "deep/er/md/")
	mb := mustFolder(t, dir, "other/deep/mbox")
	mh := mustFolder(t, dir, "mh/sub/.")
	pd := mustFolder(t, dir, "plain")
	if pd.Kind != Dir {
		t.Fatalf("existing directory parsed as %v", pd.Kind)
	}
	var paths []string
	for range 3 {
		for _, d := range deliverCommit(t, w, msg, md, mb, mh, pd) {
			paths = append(paths, d.Path)
		}
	}

	for _, d := range []string{"deep", "deep/er", "deep/er/md", "deep/er/md/tmp", "deep/er/md/new", "deep/er/md/cur", "other", "other/deep", "mh", "mh/sub"} {
		st, err := os.Stat(filepath.Join(dir, d))
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != 0o700 {
			t.Errorf("%s: mode %o, want 0700", d, got)
		}
	}
	newNames := mailtest.ListDir(t, filepath.Join(dir, "deep/er/md/new"))
	if len(newNames) != 3 || len(mailtest.ListDir(t, filepath.Join(dir, "deep/er/md/tmp"))) != 0 {
		t.Errorf("maildir new/ = %v, tmp/ should be empty", newNames)
	}
	for _, n := range newNames {
		if !maildirNameRE.MatchString(n) {
			t.Errorf("maildir name %q does not match %s", n, maildirNameRE)
		}
	}
	w2 := NewWriter(testOptions()) // a host name without '/' or ':'
	if n := MaildirUnique(w2.MaildirName(42)); !mailstatNameRE.MatchString(n) {
		t.Errorf("logged maildir name %q is not one mailstat folds (%s)", n, mailstatNameRE)
	}
	if got := mailtest.ListDir(t, filepath.Join(dir, "mh/sub")); !slices.Equal(got, []string{"1", "2", "3"}) {
		t.Errorf("MH folder holds %v, want 1 2 3", got)
	}
	plain := mailtest.ListDir(t, filepath.Join(dir, "plain"))
	if len(plain) != 3 {
		t.Errorf("plain dir holds %v", plain)
	}
	for _, n := range plain {
		st, err := os.Stat(filepath.Join(dir, "plain", n))
		if err != nil {
			t.Fatal(err)
		}
		if want := "msg." + inodeName(st.Sys().(*syscall.Stat_t).Ino); n != want {
			t.Errorf("plain dir file %s, want %s (procmail's inode name)", n, want)
		}
	}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != 0o600 {
			t.Errorf("%s: mode %o, want 0600", p, got)
		}
	}
	for _, lock := range []string{"other/deep/mbox.lock"} {
		if _, err := os.Lstat(filepath.Join(dir, lock)); err == nil {
			t.Errorf("%s left behind", lock)
		}
	}
}

// TestInodeName checks procmail's ultoan (procmail-behaviour.md §2.3).
func TestInodeName(t *testing.T) {
	for _, c := range []struct {
		ino  uint64
		want string
	}{{9987193, "5RGm"}, {0, "A"}, {63, "_"}, {64, "AB"}} {
		if got := inodeName(c.ino); got != c.want {
			t.Errorf("inodeName(%d) = %q, want %q", c.ino, got, c.want)
		}
	}
}

// TestMHNumbering: the highest all-digit name + 1 (procmail-behaviour.md
// §2.2), and a batch of deliveries counts on from there.
func TestMHNumbering(t *testing.T) {
	dir := t.TempDir()
	mhdir := filepath.Join(dir, "mh")
	if err := os.Mkdir(mhdir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"7", "abc", "12x", "0007"} {
		if err := os.WriteFile(filepath.Join(mhdir, n), []byte("old "+n), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	w := NewWriter(testOptions())
	f := mustFolder(t, dir, "mh/.")
	txn := w.Begin(context.Background())
	for i := range 3 {
		if _, err := txn.Deliver(f, fmt.Appendf(nil, "Subject: %d\n\n", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := txn.Commit(); err != nil {
		t.Fatal(err)
	}
	got := mailtest.ListDir(t, mhdir)
	want := []string{"0007", "10", "12x", "7", "8", "9", "abc"}
	if !slices.Equal(got, want) {
		t.Errorf("MH folder holds %v, want %v", got, want)
	}
	for i, n := range []string{"8", "9", "10"} {
		b, _ := os.ReadFile(filepath.Join(mhdir, n))
		if want := fmt.Sprintf("Subject: %d\n\n", i); string(b) != want {
			t.Errorf("%s = %q, want %q", n, b, want)
		}
	}
}

// TestMHNumberingPastInt64: the numbers go on past int64 as procmail's
// do (it writes 9223372036854775808 after 9223372036854775807), not to
// negative numbers that MH readers ignore; 99...9 becomes 100...0.
func TestMHNumberingPastInt64(t *testing.T) {
	for _, c := range []struct {
		existing string
		want     []string
	}{
		{"9223372036854775807", []string{"9223372036854775808", "9223372036854775809"}},
		{"18446744073709551615", []string{"18446744073709551616", "18446744073709551617"}},
		{"999", []string{"1000", "1001"}},
		{"0999999999999999999999", []string{"1000000000000000000000", "1000000000000000000001"}},
	} {
		t.Run(c.existing, func(t *testing.T) {
			dir := t.TempDir()
			mhdir := filepath.Join(dir, "mh")
			if err := os.Mkdir(mhdir, 0o700); err != nil {
				t.Fatal(err)
			}
			for _, n := range []string{c.existing, "5"} {
				if err := os.WriteFile(filepath.Join(mhdir, n), []byte("old\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			w := NewWriter(testOptions())
			f := mustFolder(t, dir, "mh/.")
			for i := range 2 {
				// One message per Txn: the second reads the folder again.
				txn := w.Begin(context.Background())
				if _, err := txn.Deliver(f, fmt.Appendf(nil, "Subject: %d\n\n", i)); err != nil {
					t.Fatal(err)
				}
				if err := txn.Commit(); err != nil {
					t.Fatal(err)
				}
			}
			for i, n := range c.want {
				b, err := os.ReadFile(filepath.Join(mhdir, n))
				if want := fmt.Sprintf("Subject: %d\n\n", i); err != nil || string(b) != want {
					t.Errorf("%s = %q (%v), want %q; folder holds %v", n, b, err, want, mailtest.ListDir(t, mhdir))
				}
			}
		})
	}
}

// TestNeverOverwrite races every writer against a process that takes the
// name it is about to link to: the existing file must stay untouched and
// the message must land under another name.
func TestNeverOverwrite(t *testing.T) {
	for _, spec := range []string{"md/", "mh/.", "dir"} {
		t.Run(spec, func(t *testing.T) {
			dir := t.TempDir()
			if spec == "dir" {
				os.Mkdir(filepath.Join(dir, "dir"), 0o700)
			}
			w, ffs := newFaultWriter(t, dir, testOptions())
			const squatter = "squatter's message\n"
			ffs.fail = func(op, name string) error {
				// Just before the first link, someone creates the target.
				if op == "link" && !strings.HasSuffix(name, ".lock") {
					ffs.fail = nil
					if err := os.WriteFile(name, []byte(squatter), 0o600); err != nil {
						t.Error(err)
					}
				}
				return nil
			}
			f := mustFolder(t, dir, spec)
			ds := deliverCommit(t, w, []byte("Subject: mine\n\nbody\n"), f)
			b, err := os.ReadFile(ds[0].Path)
			if err != nil || !bytes.Contains(b, []byte("Subject: mine")) {
				t.Fatalf("delivered file %s: %q, %v", ds[0].Path, b, err)
			}
			squatters := 0
			target := filepath.Dir(ds[0].Path)
			for _, n := range mailtest.ListDir(t, target) {
				b, _ := os.ReadFile(filepath.Join(target, n))
				if string(b) == squatter {
					squatters++
				}
			}
			if squatters != 1 {
				t.Errorf("the file that took the name was replaced (%d copies left)", squatters)
			}
			if names := mailtest.ListDir(t, target); len(names) != 2 {
				t.Errorf("folder holds %v, want the squatter and our message", names)
			}
		})
	}
}

// TestMissingParentIsAFile: a regular file where a folder's parent
// directory must be is an error for every kind, and nothing is written.
func TestMissingParentIsAFile(t *testing.T) {
	for _, spec := range []string{"f/md/", "f/sub/mbox", "f/mh/.", "f/mbox"} {
		t.Run(spec, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "f"), []byte("a file\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, dir)
			w := NewWriter(testOptions())
			f := mustFolder(t, dir, spec)
			txn := w.Begin(context.Background())
			if _, err := txn.Deliver(f, []byte("X: 1\n\n")); err == nil {
				t.Fatalf("delivery under a regular file succeeded")
			} else if !strings.Contains(err.Error(), "not a directory") {
				t.Errorf("error %q does not say why", err)
			}
			if err := txn.Commit(); err != nil {
				t.Fatal(err)
			}
			if d := diffSnapshots(before, snapshot(t, dir)); d != "" {
				t.Errorf("files changed:\n%s", d)
			}
		})
	}
}

// TestTxnVisibility: maildir, MH and directory messages appear only at
// Commit; until then only a temporary file exists, unnamed where the file
// system has O_TMPFILE, else in tmp/ (or as a dot file). mbox appends are
// visible at once.
func TestTxnVisibility(t *testing.T) {
	for _, named := range []bool{false, true} {
		t.Run(fmt.Sprintf("named=%v", named), func(t *testing.T) {
			dir := t.TempDir()
			os.Mkdir(filepath.Join(dir, "dir"), 0o700)
			w, ffs := newFaultWriter(t, dir, testOptions())
			ffs.named = named
			md, mh, pd, mb := mustFolder(t, dir, "md/"), mustFolder(t, dir, "mh/."), mustFolder(t, dir, "dir"), mustFolder(t, dir, "mbox")
			txn := w.Begin(context.Background())
			msg := []byte("From a@b  Tue Jan  2 03:04:05 2024\nX: 1\n\nbody\n")
			for _, f := range []Folder{md, mh, pd, mb} {
				if _, err := txn.Deliver(f, msg); err != nil {
					t.Fatal(err)
				}
			}
			if n := len(mailtest.ListDir(t, filepath.Join(dir, "md/new"))); n != 0 {
				t.Errorf("maildir new/ has %d files before Commit", n)
			}
			want := 0
			if named {
				want = 1
			}
			if n := len(mailtest.ListDir(t, filepath.Join(dir, "md/tmp"))); n != want {
				t.Errorf("maildir tmp/ has %d files before Commit, want %d", n, want)
			}
			for _, d := range []string{"mh", "dir"} {
				names := mailtest.ListDir(t, filepath.Join(dir, d))
				for _, n := range names {
					if !strings.HasPrefix(n, ".mfilter-tmp.") {
						t.Errorf("%s/%s visible before Commit", d, n)
					}
				}
				if len(names) != want {
					t.Errorf("%s holds %v before Commit, want %d temporary files", d, names, want)
				}
			}
			if b, _ := os.ReadFile(mb.Path); !bytes.Equal(b, append(msg, '\n')) {
				t.Errorf("mbox holds %q before Commit, want the appended message", b)
			}
			if err := txn.Commit(); err != nil {
				t.Fatal(err)
			}
			if n := len(mailtest.ListDir(t, filepath.Join(dir, "md/new"))); n != 1 {
				t.Errorf("maildir new/ has %d files after Commit", n)
			}
			if n := len(mailtest.ListDir(t, filepath.Join(dir, "md/tmp"))); n != 0 {
				t.Errorf("maildir tmp/ has %d files after Commit", n)
			}
			for _, d := range []string{"mh", "dir"} {
				names := mailtest.ListDir(t, filepath.Join(dir, d))
				if len(names) != 1 || strings.HasPrefix(names[0], ".") {
					t.Errorf("%s holds %v after Commit", d, names)
				}
			}
		})
	}
}

// TestTxnRollback checks Savepoint/RollbackTo and Abort for every kind:
// what was delivered after the savepoint is gone without a trace (mbox
// appends truncated away), what came before stays and commits.
func TestTxnRollback(t *testing.T) {
	for _, end := range []string{"rollback", "abort"} {
		t.Run(end, func(t *testing.T) {
			dir := t.TempDir()
			os.Mkdir(filepath.Join(dir, "dir"), 0o700)
			w := NewWriter(testOptions())
			folders := []Folder{mustFolder(t, dir, "md/"), mustFolder(t, dir, "mh/."), mustFolder(t, dir, "dir"), mustFolder(t, dir, "mbox")}
			// Existing content that must survive.
			deliverCommit(t, w, []byte("Subject: old\n\nold\n"), folders...)
			before := snapshot(t, dir)

			txn := w.Begin(context.Background())
			var kept []*Delivery
			if end == "rollback" {
				for _, f := range folders {
					d, err := txn.Deliver(f, []byte("Subject: kept\n\nkept\n"))
					if err != nil {
						t.Fatal(err)
					}
					kept = append(kept, d)
				}
			}
			sp := txn.Savepoint()
			for range 2 {
				for _, f := range folders {
					if _, err := txn.Deliver(f, []byte("Subject: dropped\n\ndropped\n")); err != nil {
						t.Fatal(err)
					}
				}
			}
			if end == "rollback" {
				if err := txn.RollbackTo(sp); err != nil {
					t.Fatalf("RollbackTo: %v", err)
				}
				if txn.Pending() != len(folders) {
					t.Errorf("Pending = %d after RollbackTo, want %d", txn.Pending(), len(folders))
				}
				if err := txn.Commit(); err != nil {
					t.Fatal(err)
				}
			} else if err := txn.Abort(); err != nil {
				t.Fatalf("Abort: %v", err)
			}
			after := snapshot(t, dir)
			for k, v := range after {
				if strings.Contains(v, "dropped") {
					t.Errorf("%s still holds a rolled-back message", k)
				}
				if strings.Contains(k, ".mfilter-tmp") || strings.HasPrefix(k, "md/tmp/") && k != "md/tmp/" || strings.HasSuffix(k, ".lock") {
					t.Errorf("%s left behind", k)
				}
			}
			if end == "abort" {
				if d := diffSnapshots(before, after); d != "" {
					t.Errorf("Abort changed files:\n%s", d)
				}
				return
			}
			for _, d := range kept {
				b, err := os.ReadFile(d.Path)
				if err != nil || !bytes.Contains(b, []byte("Subject: kept")) {
					t.Errorf("delivery before the savepoint lost: %s: %q %v", d.Path, b, err)
				}
			}
		})
	}
}

// TestMboxRollbackRespectsOthers: an mbox append that someone appended
// after is not truncated (that would destroy their message); RollbackTo
// reports it instead.
func TestMboxRollbackRespectsOthers(t *testing.T) {
	dir := t.TempDir()
	w := NewWriter(testOptions())
	mb := mustFolder(t, dir, "mbox")
	txn := w.Begin(context.Background())
	if _, err := txn.Deliver(mb, []byte("Subject: ours\n\n")); err != nil {
		t.Fatal(err)
	}
	txn.ReleaseLocks() // else the other writer waits for them
	other := NewWriter(testOptions())
	deliverCommit(t, other, []byte("Subject: theirs\n\n"), mb)
	before, _ := os.ReadFile(mb.Path)
	err := txn.RollbackTo(0)
	if err == nil || !strings.Contains(err.Error(), "no longer at the end") {
		t.Errorf("RollbackTo = %v, want an error saying the append is no longer at the end", err)
	}
	if after, _ := os.ReadFile(mb.Path); !bytes.Equal(before, after) {
		t.Errorf("mbox changed from\n%q\nto\n%q", before, after)
	}
}

// TestMboxRollbackChecksBytes: an append whose bytes someone rewrote in
// place (the size unchanged) is not truncated either; one left as it was
// is, also when it spans more than one read.
func TestMboxRollbackChecksBytes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		body    string
		rewrite bool
	}{
		{"rewritten", "short\n", true},
		{"rewritten near the end of a long one", strings.Repeat("x", 200<<10) + "\n", true},
		{"as it was", "short\n", false},
		{"long, as it was", strings.Repeat("x", 200<<10) + "\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			w := NewWriter(testOptions())
			mb := mustFolder(t, dir, "mbox")
			deliverCommit(t, w, []byte("Subject: first\n\nbody\n"), mb)
			committed, _ := os.ReadFile(mb.Path)
			txn := w.Begin(context.Background())
			if _, err := txn.Deliver(mb, []byte("Subject: ours\n\n"+tc.body)); err != nil {
				t.Fatal(err)
			}
			txn.ReleaseLocks()
			if tc.rewrite {
				b, _ := os.ReadFile(mb.Path)
				b[len(b)-3] ^= 0x20 // one byte of ours, in place
				if err := os.WriteFile(mb.Path, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			before, _ := os.ReadFile(mb.Path)
			err := txn.RollbackTo(0)
			after, _ := os.ReadFile(mb.Path)
			switch {
			case tc.rewrite && (err == nil || !strings.Contains(err.Error(), "changed")):
				t.Errorf("RollbackTo = %v, want an error saying the bytes changed", err)
			case tc.rewrite && !bytes.Equal(before, after):
				t.Errorf("a rewritten append was truncated")
			case !tc.rewrite && (err != nil || !bytes.Equal(after, committed)):
				t.Errorf("RollbackTo = %v; mbox %d bytes, want the %d committed", err, len(after), len(committed))
			}
		})
	}
}

// TestMboxLocksHeld: a Txn keeps an mbox's locks for its next appends
// there (others wait) until ReleaseLocks or Commit.
func TestMboxLocksHeld(t *testing.T) {
	dir := t.TempDir()
	mb := mustFolder(t, dir, "mbox")
	w := NewWriter(testOptions())
	txn := w.Begin(context.Background())
	for i := range 3 {
		if _, err := txn.Deliver(mb, fmt.Appendf(nil, "Subject: m%d\n\n", i)); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(mb.Path + ".lock"); err != nil {
			t.Fatalf("after append %d the dotlock is gone: %v", i, err)
		}
	}
	if _, err := maillock.AcquireDotlock(context.Background(), mb.Path+".lock", maillock.LockOptions{Timeout: 50 * time.Millisecond}); !errors.Is(err, maillock.ErrLockTimeout) {
		t.Errorf("another locker got the held dotlock: %v", err)
	}
	f, err := os.OpenFile(mb.Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// A classic fcntl lock, as procmail and mutt take it, from another
	// process's point of view: F_GETLK reports the conflicting lock.
	lk := unix.Flock_t{Type: unix.F_WRLCK}
	if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &lk); err != nil || lk.Type == unix.F_UNLCK {
		t.Errorf("no fcntl lock held on the mbox (F_GETLK: %v, type %d)", err, lk.Type)
	}
	if err := txn.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(mb.Path + ".lock"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("dotlock left after Commit: %v", err)
	}
	lk = unix.Flock_t{Type: unix.F_WRLCK}
	if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &lk); err != nil || lk.Type != unix.F_UNLCK {
		t.Errorf("fcntl lock still held after Commit (F_GETLK: %v, type %d)", err, lk.Type)
	}
	if b, _ := os.ReadFile(mb.Path); bytes.Count(b, []byte("Subject: m")) != 3 {
		t.Errorf("mbox holds %q", b)
	}
}

// TestMboxLocksNoDeadlock: two Txns each holding one mbox, each wanting
// the other's: the one that finds the second busy lets go of its own
// before it waits, so both finish (else both wait for the lock timeout).
func TestMboxLocksNoDeadlock(t *testing.T) {
	dir := t.TempDir()
	p, q := mustFolder(t, dir, "p"), mustFolder(t, dir, "q")
	opts := testOptions()
	opts.Lock.Timeout = 3 * time.Second
	a, b := NewWriter(opts).Begin(context.Background()), NewWriter(opts).Begin(context.Background())
	for _, c := range []struct {
		txn *Txn
		f   Folder
	}{{a, p}, {b, q}} {
		if _, err := c.txn.Deliver(c.f, []byte("Subject: first\n\n")); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() {
		_, err := a.Deliver(q, []byte("Subject: a\n\n")) // busy: a lets go of p, waits for q
		done <- errors.Join(err, a.Commit())
	}()
	start := time.Now()
	if _, err := b.Deliver(p, []byte("Subject: b\n\n")); err != nil {
		t.Fatalf("b waited for p: %v", err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("a: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v: they waited for each other", d)
	}
}

// TestCommitGroups: the deliveries of one message (a BeginMessage group)
// are kept or taken back together; other messages of the batch are not
// affected. An mbox append that later messages were appended after cannot
// be taken back, and its error says so.
func TestCommitGroups(t *testing.T) {
	for _, c := range []struct {
		name    string
		failing int  // the message whose MH link fails
		undone  bool // its mbox append can be truncated away
	}{
		{"last", 2, true},
		{"middle", 1, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			w, ffs := newFaultWriter(t, dir, testOptions())
			md, mb, mh := mustFolder(t, dir, "md/"), mustFolder(t, dir, "mbox"), mustFolder(t, dir, "mh/.")
			txn := w.Begin(context.Background())
			var groups [][]*Delivery
			for i := range 3 {
				txn.BeginMessage()
				var g []*Delivery
				for _, f := range []Folder{md, mh, mb} {
					d, err := txn.Deliver(f, fmt.Appendf(nil, "Subject: m%d\n\nbody %d\n", i, i))
					if err != nil {
						t.Fatal(err)
					}
					g = append(g, d)
				}
				groups = append(groups, g)
			}
			ffs.fail = failNth("link", "/mh/", c.failing+1, syscall.EIO)
			if err := txn.Commit(); err == nil {
				t.Fatal("Commit succeeded despite a failed link")
			}
			for i, g := range groups {
				for _, d := range g {
					if (d.Err != nil) != (i == c.failing) {
						t.Errorf("message %d, %s: Err = %v", i, d.Folder.Kind, d.Err)
					}
				}
			}
			all := snapshot(t, dir)
			count := func(s string) int {
				n := 0
				for _, v := range all {
					n += strings.Count(v, s)
				}
				return n
			}
			failed := fmt.Sprintf("Subject: m%d", c.failing)
			wantLeft := 0
			if !c.undone {
				wantLeft = 1 // in the mbox, before m2
				mbErr := groups[c.failing][2].Err
				if mbErr == nil || !strings.Contains(mbErr.Error(), "could not take back") {
					t.Errorf("mbox delivery error %v does not say the copy stayed", mbErr)
				}
			}
			if n := count(failed); n != wantLeft {
				t.Errorf("the failed message is in %d places, want %d", n, wantLeft)
			}
			for i := range 3 {
				if s := fmt.Sprintf("Subject: m%d", i); i != c.failing && count(s) != 3 {
					t.Errorf("%s delivered %d times, want 3", s, count(s))
				}
			}
			for k := range all {
				if strings.HasPrefix(k, "md/tmp/") && k != "md/tmp/" || strings.Contains(k, ".mfilter-tmp") || strings.HasSuffix(k, ".lock") {
					t.Errorf("%s left behind", k)
				}
			}
		})
	}
}

// TestCommitDurability checks, through the recorded operations, that each
// message file is durable before it gets its name, that each directory
// that got names is fsynced once afterwards, that each mbox is made
// durable once, and that a new mbox's directory entry is fsynced too, all
// before Commit returns: many deliveries, one commit. A file is durable
// when it was fsynced, or when a syncfs of its file system came after its
// last write; that syncfs is called on the file written first, since it
// reports the write-back errors since that file was opened. Every way of
// committing is checked: an fsync per file (as for a single message) or
// one syncfs, with unnamed (O_TMPFILE) or named temporary files.
func TestCommitDurability(t *testing.T) {
	for _, syncfs := range []bool{false, true} {
		for _, named := range []bool{false, true} {
			t.Run(fmt.Sprintf("syncfs=%v/named=%v", syncfs, named), func(t *testing.T) {
				testCommitDurability(t, syncfs, named)
			})
		}
	}
}

func testCommitDurability(t *testing.T, syncfs, named bool) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "dir"), 0o700)
	os.MkdirAll(filepath.Join(dir, "md", "tmp"), 0o700)
	os.MkdirAll(filepath.Join(dir, "md", "new"), 0o700)
	os.MkdirAll(filepath.Join(dir, "md", "cur"), 0o700)
	os.Mkdir(filepath.Join(dir, "mh"), 0o700)
	w, ffs := newFaultWriter(t, dir, testOptions())
	ffs.named = named
	w.syncfsMin = 0
	if syncfs {
		w.syncfsMin = 1
		ffs.trustSyncFS = true
	}
	folders := []Folder{mustFolder(t, dir, "md/"), mustFolder(t, dir, "mh/."), mustFolder(t, dir, "dir"), mustFolder(t, dir, "mbox")}
	const n = 50
	txn := w.Begin(context.Background())
	for i := range n {
		txn.BeginMessage()
		for _, f := range folders {
			if _, err := txn.Deliver(f, fmt.Appendf(nil, "Subject: %d\n\n", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	beforeCommit := len(ffs.Events())
	for _, ev := range ffs.Events() {
		if strings.HasPrefix(ev, "sync") || strings.HasPrefix(ev, "link") && !strings.Contains(ev, ".lock") {
			t.Errorf("%q before Commit: fsyncs and links belong to Commit", ev)
		}
	}
	if err := txn.Commit(); err != nil {
		t.Fatal(err)
	}
	all := ffs.Events()
	evs := all[beforeCommit:]
	lastWrite := map[string]int{} // by file name, over all events
	firstWrite := ""
	for i, ev := range all {
		if f := strings.Fields(ev); f[0] == "write" {
			lastWrite[f[1]] = i
			if firstWrite == "" {
				firstWrite = f[1]
			}
		}
	}
	syncedAt := map[string]int{}
	linkedAt := map[string]int{}
	count := map[string]int{}
	var syncfsAt []int
	for j, ev := range evs {
		i := beforeCommit + j
		f := strings.Fields(ev)
		count[f[0]+" "+f[1]]++
		switch f[0] {
		case "sync":
			syncedAt[f[1]] = i
		case "syncfs":
			if len(syncfsAt) == 0 && f[1] != firstWrite {
				t.Errorf("syncfs on %s, want the file written first, %s", f[1], firstWrite)
			}
			syncfsAt = append(syncfsAt, i)
		case "link":
			if !strings.HasSuffix(f[1], ".lock") {
				linkedAt[f[2]] = i // keyed by the temporary name
			}
		}
	}
	lastLink := 0
	for _, li := range linkedAt {
		lastLink = max(lastLink, li)
	}
	// With syncfs: one for the data, before the first link, and one for
	// the directories, after the last.
	if syncfs && (len(syncfsAt) != 2 || syncfsAt[1] < lastLink) || !syncfs && len(syncfsAt) > 0 {
		t.Errorf("syncfs at events %v, last link at %d (syncfs mode %v): want one before the links and one after", syncfsAt, lastLink, syncfs)
	}
	if syncfs && len(syncedAt) > 0 {
		t.Errorf("%d files fsynced besides the syncfs", len(syncedAt))
	}
	dataSyncfs := -1
	if len(syncfsAt) > 0 {
		dataSyncfs = syncfsAt[0]
	}
	durableAt := func(name string) (int, bool) {
		if si, ok := syncedAt[name]; ok {
			return si, true
		}
		if dataSyncfs >= 0 && dataSyncfs > lastWrite[name] {
			return dataSyncfs, true
		}
		return 0, false
	}
	if len(linkedAt) != 3*n {
		t.Errorf("%d links, want %d", len(linkedAt), 3*n)
	}
	for tmp, li := range linkedAt {
		if di, ok := durableAt(tmp); !ok || di > li {
			t.Errorf("%s linked before it was durable", tmp)
		}
	}
	for _, d := range []string{"md/new", "mh", "dir", "."} {
		want := 1
		if syncfs {
			want = 0 // the second syncfs
		}
		if c := count["syncdir "+d]; c != want {
			t.Errorf("directory %s fsynced %d times in Commit, want %d", d, c, want)
		}
		for i, ev := range evs {
			if ev == "syncdir "+d && d != "." && beforeCommit+i < lastLink {
				t.Errorf("directory %s fsynced before the last link", d)
			}
		}
	}
	if _, ok := durableAt("mbox"); !ok {
		t.Errorf("mbox not made durable")
	}
	if c := count["sync mbox"]; !syncfs && c != 1 {
		t.Errorf("mbox fsynced %d times, want once per Commit", c)
	}
	if names := mailtest.ListDir(t, filepath.Join(dir, "md", "tmp")); len(names) != 0 {
		t.Errorf("md/tmp holds %v after Commit", names)
	}
}

// TestNewFolderDurability: folders made for a delivery are made durable by
// its Commit, not by an fsync after each mkdir: no sync of any kind
// before Commit, and each directory whose entries changed is synced (or
// covered by a syncfs) after the last mkdir and before Commit returns.
func TestNewFolderDurability(t *testing.T) {
	for _, syncfs := range []bool{false, true} {
		t.Run(fmt.Sprintf("syncfs=%v", syncfs), func(t *testing.T) {
			dir := t.TempDir()
			w, ffs := newFaultWriter(t, dir, testOptions())
			w.syncfsMin = 0
			if syncfs {
				w.syncfsMin = 1
				ffs.trustSyncFS = true
			}
			txn := w.Begin(context.Background())
			for _, spec := range []string{"a/b/md/", "a/c/mh/.", "md2/"} {
				for i := range 3 {
					txn.BeginMessage()
					if _, err := txn.Deliver(mustFolder(t, dir, spec), fmt.Appendf(nil, "Subject: %d\n\n", i)); err != nil {
						t.Fatal(err)
					}
				}
			}
			before := ffs.Events()
			lastMkdir := 0
			for i, ev := range before {
				if strings.HasPrefix(ev, "sync") {
					t.Errorf("%q before Commit", ev)
				}
				if strings.HasPrefix(ev, "mkdir") {
					lastMkdir = i
				}
			}
			if err := txn.Commit(); err != nil {
				t.Fatal(err)
			}
			evs := ffs.Events()
			synced := map[string]bool{}
			for _, ev := range evs[lastMkdir:] {
				f := strings.Fields(ev)
				if f[0] == "syncdir" {
					synced[f[1]] = true
				}
				if f[0] == "syncfs" && strings.HasSuffix(f[1], "/new") || f[0] == "syncfs" && !strings.Contains(f[1], "/") {
					synced["syncfs"] = true // the directories' syncfs
				}
			}
			for _, d := range []string{".", "a", "a/b", "a/b/md", "a/c", "a/c/mh", "md2", "a/b/md/new", "md2/new"} {
				if !synced[d] && !(syncfs && synced["syncfs"]) {
					t.Errorf("directory %s not made durable (events after the last mkdir: %v)", d, evs[lastMkdir:])
				}
			}
			if p := w.pendingDirs(); len(p) != 0 {
				t.Errorf("still pending after Commit: %v", p)
			}
		})
	}
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestMaildirRecreated: a maildir removed under a long run is made again
// instead of failing every later delivery.
func TestMaildirRecreated(t *testing.T) {
	dir := t.TempDir()
	w := NewWriter(testOptions())
	md := mustFolder(t, dir, "md/")
	deliverCommit(t, w, []byte("X: 1\n\n"), md)
	if err := os.RemoveAll(md.Path); err != nil {
		t.Fatal(err)
	}
	ds := deliverCommit(t, w, []byte("X: 2\n\n"), md)
	if b, err := os.ReadFile(ds[0].Path); err != nil || string(b) != "X: 2\n\n" {
		t.Errorf("%s: %q %v", ds[0].Path, b, err)
	}
}

// TestMboxFIFO: a FIFO where an mbox should be is an error, not a hang.
func TestMboxFIFO(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	w := NewWriter(testOptions())
	txn := w.Begin(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := txn.Deliver(Folder{Name: p, Path: p, Kind: Mbox}, []byte("X: 1\n\n"))
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Error("delivery into a FIFO succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("delivery into a FIFO hangs")
	}
}
