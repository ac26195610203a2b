package mailfmt

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

var updateProcmailGolden = flag.Bool("update-procmail", false, "rewrite testdata/procmail/* from the real procmail")

// procmailCases are messages whose bytes procmail 3.22 changes on the way
// into a folder (procmail-behaviour.md §1-2). The golden files under
// testdata/procmail hold what the real procmail -m wrote for each;
// TestProcmailGoldenIsProcmail checks them against the real procmail on
// every run, TestProcmailEdits checks mfilter's edits against them.
var procmailCases = []struct {
	name, msg string
	// deviation, when set, is what mfilter writes into an mbox instead
	// of procmail's bytes, made from procmail's; the reason is its doc.
	deviation func(procmail []byte) []byte
}{
	{name: "plain", msg: "From: Alice <alice@example.com>\nSubject: s1\n\nhello\nFrom the body\n>From quoted\n>>From twice\nFromage\n"},
	{name: "from-line", msg: "From orig@example.net Mon Jan  1 00:00:00 2024\nFrom: a@example.net\n\nbody\n"},
	{name: "from-in-header", msg: "X: 1\nFrom inheader\nY: 2\n\nbody\n"},
	{name: "from-case", msg: "X: 1\n\nFROM a\nfrom b\nFrom\tc\nFrom d\n"},
	{name: "from-first-body-line", msg: "X: 1\n\nFrom first\n"},
	{name: "no-final-newline", msg: "X: 1\n\nno-final-newline"},
	{name: "blank-end", msg: "X: 1\n\nblank\n\n"},
	{name: "triple-newline", msg: "X: 1\n\nb\n\n\n"},
	{name: "header-only-no-newline", msg: "X: 1"},
	{name: "header-only", msg: "X: 1\n"},
	{name: "empty", msg: ""},
	{name: "leading-blank-lines", msg: "\n\nX: 1\nFrom inheader\n\nbody\nFrom x\n"},
	{name: "no-header", msg: "just a line\nFrom here\n"},
	{name: "from-continuation", msg: "From a@example.com Mon Jan  1 00:00:00 2024\n>From b@example.com Sun Dec 31 00:00:00 2023\n>quoted\nX: 1\n\nbody\n"},
	{name: "from-line-only", msg: "From a@example.com Mon Jan  1 00:00:00 2024"},
	{name: "cl-shrink", msg: "Content-Length: 999\n\nFrom a\nb\n"},
	{name: "cl-grow", msg: "Content-Length: 3\n\n0123456789abcde\n"},
	{name: "cl-padded", msg: "Content-Length:    1\n\n012345678\n"},
	{name: "cl-blank-end", msg: "Content-Length: 2\n\nFrom a\nFrom b\n\n"},
	{name: "cl-overflow", msg: "Content-Length: 1\n\n" + strings.Repeat("x", 40) + "\nFrom early\n" + strings.Repeat("y", 100) + "\nFrom late\n"},
	{name: "cl-empty", msg: "Content-Length:\n\nFrom first\nbody\n"},
	{name: "cl-lower", msg: "content-length: 5\n\n1234567\n"},
	{name: "cl-second", msg: "X: 1\nContent-Length: 1\ncontent-length: 2\n\nFrom a\nbody\n"},
	{name: "cl-in-body", msg: "X: 1\n\nContent-Length: 1\nFrom a\n"},
	{name: "cl-no-blank-line", msg: "Content-Length: 7\nX: 1"},
	{name: "cl-width-25", msg: "Content-Length:" + strings.Repeat(" ", 24) + "1\n\nhello\n"},
	{name: "cl-width-26", msg: "Content-Length:" + strings.Repeat(" ", 25) + "1\n\nhello\n"},
	{name: "cl-width-27", msg: "Content-Length:" + strings.Repeat(" ", 26) + "1\n\nhello\n"},
	{name: "cl-crlf", msg: "Content-Length: 5\r\nX: 1\r\n\r\nabc\r\nFrom x\r\n"},
	{name: "cl-from-line", msg: "From a@example.com Mon Jan  1 00:00:00 2024\nContent-Length: 0\n\nFrom b\n"},
	{name: "crlf", msg: "From a@example.com Mon Jan  1 00:00:00 2024\r\nX: 1\r\n\r\nbody\r\nFrom crlf\r\n"},
	{name: "8bit", msg: "Subject: caf\xe9 \xff\xfe\n\nK\xe4se\nFrom \xe4\n"},
	// procmail looks for "\nFrom " with strstr, which stops at a NUL;
	// mfilter escapes the whole message, so that no "From " line after
	// a NUL can start a message for a reader.
	{
		name: "nul-in-body", msg: "X: 1\n\nbefore\nFrom one\nnul\x00here\nFrom two\n",
		deviation: func(p []byte) []byte {
			return bytes.Replace(p, []byte("\nFrom two"), []byte("\n>From two"), 1)
		},
	},
	{
		name: "nul-in-header", msg: "X: a\x00b\nY: 2\nFrom h\n\nFrom body\n",
		deviation: func(p []byte) []byte {
			p = bytes.Replace(p, []byte("\nFrom h"), []byte("\n>From h"), 1)
			return bytes.Replace(p, []byte("\nFrom body"), []byte("\n>From body"), 1)
		},
	},
}

// procmailKinds are the folders each case is delivered to, and the
// procmail options for them.
var procmailKinds = []struct {
	ext, folder string
	args        []string
}{
	{"mbox", "mbox", nil},
	{"mboxY", "mboxY", []string{"-Y"}},
	{"maildir", "md/", nil},
	{"mh", "mh/.", nil},
}

// procmailEdits is what mfilter's port of procmail's edits writes for
// msg into a folder of the given kind.
func procmailEdits(msg []byte, ext string) []byte {
	data, l := prepare(msg, ext == "mboxY")
	switch ext {
	case "mbox", "mboxY":
		return forceBlank(escapeFrom(data, l))
	case "maildir":
		return skipFromLine(data)
	case "mh":
		return forceBlank(data)
	}
	panic("unknown kind " + ext)
}

func goldenPath(name, ext string) string {
	return filepath.Join("testdata", "procmail", name+"."+ext)
}

// TestProcmailEdits compares mfilter's edits with procmail's bytes.
func TestProcmailEdits(t *testing.T) {
	for _, c := range procmailCases {
		for _, k := range procmailKinds {
			t.Run(c.name+"."+k.ext, func(t *testing.T) {
				want, err := os.ReadFile(goldenPath(c.name, k.ext))
				if err != nil {
					t.Fatalf("golden file (make it with go test -run TestProcmailGoldenIsProcmail -update-procmail): %v", err)
				}
				if c.deviation != nil && strings.HasPrefix(k.ext, "mbox") {
					dev := c.deviation(want)
					if bytes.Equal(dev, want) {
						t.Fatalf("the documented deviation changes nothing: procmail now writes %q", want)
					}
					want = dev
				}
				orig := c.msg
				if got := procmailEdits([]byte(c.msg), k.ext); !bytes.Equal(got, want) {
					t.Errorf("msg %q:\n\tgot  %q\n\twant %q", c.msg, got, want)
				}
				if c.msg != orig {
					t.Errorf("the edits changed their input")
				}
			})
		}
	}
}

// TestProcmailGoldenIsProcmail delivers every case with the real
// procmail -m into each kind of folder and checks that the golden files
// hold what it wrote (with -update-procmail, it writes them). All cases
// go into one mbox per kind: procmail sleeps a second before its first
// write to a new mbox ("NFS atime hack"), and only then.
func TestProcmailGoldenIsProcmail(t *testing.T) {
	procmail, err := exec.LookPath("procmail")
	if err != nil {
		t.Fatalf("procmail is required (test.sh installs it): %v", err)
	}
	for _, k := range procmailKinds {
		t.Run(k.ext, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			rc := filepath.Join(dir, "rc")
			// procmail dotlocks DEFAULT$LOCKEXT ("md/.lock"): the
			// directory must exist or it retries for a minute.
			if k.ext == "maildir" || k.ext == "mh" {
				if err := os.Mkdir(filepath.Join(dir, strings.Trim(k.folder, "/.")), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			text := fmt.Sprintf("MAILDIR=%s\nDEFAULT=%s\nLOGFILE=%s/log\n", dir, k.folder, dir)
			if err := os.WriteFile(rc, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			folder := filepath.Join(dir, strings.TrimSuffix(strings.TrimSuffix(k.folder, "."), "/"))
			var size int64
			for _, c := range procmailCases {
				cmd := exec.Command(procmail, append(k.args, "-m", rc)...)
				cmd.Dir = dir
				cmd.Stdin = strings.NewReader(c.msg)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("%s: procmail: %v: %s", c.name, err, out)
				}
				var got []byte
				if strings.HasPrefix(k.ext, "mbox") {
					// Only stat the mbox between deliveries: reading it
					// would make procmail sleep before every one.
					st, err := os.Stat(folder)
					if err != nil {
						t.Fatal(err)
					}
					got = []byte(fmt.Sprint(size, " ", st.Size()))
					size = st.Size()
				} else {
					got = newestFile(t, folder, k.ext == "maildir")
				}
				checkGolden(t, c.name, k.ext, got, folder)
			}
		})
	}
}

// checkGolden compares (or with -update-procmail writes) one golden
// file. For an mbox, got is the "start end" range, read at the end.
func checkGolden(t *testing.T, name, ext string, got []byte, folder string) {
	t.Helper()
	if strings.HasPrefix(ext, "mbox") {
		var a, b int
		if _, err := fmt.Sscan(string(got), &a, &b); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			all, err := os.ReadFile(folder)
			if err != nil {
				t.Fatal(err)
			}
			compareGolden(t, name, ext, all[a:b])
		})
		return
	}
	compareGolden(t, name, ext, got)
}

func compareGolden(t *testing.T, name, ext string, got []byte) {
	t.Helper()
	path := goldenPath(name, ext)
	if *updateProcmailGolden {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update-procmail)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: procmail wrote %q, the golden file holds %q", path, got, want)
	}
}

// newestFile reads the file a delivery just made in a maildir (new/) or
// MH folder: the highest number, or the newest maildir name.
func newestFile(t *testing.T, folder string, maildir bool) []byte {
	t.Helper()
	dir := folder
	if maildir {
		dir = filepath.Join(folder, "new")
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	type f struct {
		name string
		key  time.Time
		n    int
	}
	var fs []f
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || e.IsDir() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		var n int
		fmt.Sscan(e.Name(), &n)
		fs = append(fs, f{e.Name(), info.ModTime(), n})
	}
	if len(fs) == 0 {
		t.Fatalf("%s is empty", dir)
	}
	sort.Slice(fs, func(i, j int) bool {
		if maildir {
			return fs[i].key.Before(fs[j].key) || fs[i].key.Equal(fs[j].key) && fs[i].name < fs[j].name
		}
		return fs[i].n < fs[j].n
	})
	last := fs[len(fs)-1]
	b, err := os.ReadFile(filepath.Join(dir, last.name))
	if err != nil {
		t.Fatal(err)
	}
	// Move it away so that the next delivery's file is the only one.
	if err := os.Rename(filepath.Join(dir, last.name), filepath.Join(folder, ".seen-"+last.name)); err != nil {
		t.Fatal(err)
	}
	if !maildir {
		// MH numbers count on from the highest: keep one placeholder.
		if err := os.WriteFile(filepath.Join(dir, last.name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// TestPrepareBodyOffset checks where prepareMaybeCopy puts the body
// against the line-by-line search it replaced, on every string of up to
// 12 bytes of '\n' and 'a'.
func TestPrepareBodyOffset(t *testing.T) {
	ref := func(raw []byte) int {
		n, p := len(raw), 0
		for p < n {
			c := raw[p]
			p++
			if c != '\n' {
				break
			}
		}
		body := n
		for q := p; ; {
			i := bytes.IndexByte(raw[q:], '\n')
			if i < 0 {
				break
			}
			q += i + 1
			if q < n && raw[q] == '\n' {
				body = q + 1
				break
			}
		}
		return body
	}
	for n := 0; n <= 12; n++ {
		for bits := 0; bits < 1<<n; bits++ {
			raw := make([]byte, n)
			for i := range raw {
				raw[i] = "a\n"[bits>>i&1]
			}
			if _, l, _ := prepareMaybeCopy(raw, true); l.body != ref(raw) {
				t.Fatalf("body of %q at %d, want %d", raw, l.body, ref(raw))
			}
		}
	}
}
