package maillog

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// procmailAbstract delivers msg with the real procmail -m into the mbox
// folder (relative to a fresh MAILDIR) and returns what it logged and
// how many bytes it wrote.
func procmailAbstract(t *testing.T, msg []byte, folder string) (log []byte, wrote int) {
	t.Helper()
	procmail, err := exec.LookPath("procmail")
	if err != nil {
		t.Fatalf("procmail is required (test.sh installs it): %v", err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, folder)
	// procmail sleeps a second before writing to an mbox whose atime
	// and mtime are the same second ("NFS atime hack"), as a new one's
	// are: make one whose atime is older.
	const seed = "seed\n"
	if err := os.WriteFile(path, []byte(seed), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, time.Unix(1e9, 0), time.Now()); err != nil {
		t.Fatal(err)
	}
	rc := filepath.Join(dir, "rc")
	logfile := filepath.Join(dir, "log")
	text := fmt.Sprintf("MAILDIR=%s\nDEFAULT=\"%s\"\nLOGFILE=%s\n", dir, folder, logfile)
	if err := os.WriteFile(rc, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(procmail, "-m", rc)
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(msg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("procmail: %v: %s", err, out)
	}
	log, err = os.ReadFile(logfile)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return log, int(st.Size()) - len(seed)
}

var sizeAtEnd = regexp.MustCompile(`\t *([0-9]+)\n$`)

// TestAbstractMatchesProcmail: for each message and folder name, the
// abstract is byte for byte what procmail logs.
func TestAbstractMatchesProcmail(t *testing.T) {
	long := strings.Repeat("x", 100)
	cases := []struct{ name, msg, folder string }{
		{"From_ and Subject", "From a@example.com Mon Jan  1 00:00:00 2024\nSubject: hello\n\nbody\n", "mbox"},
		{"Subject second", "X: 1\nSubject: hello\n\nbody\n", "mbox"},
		{"no Subject", "X: 1\n\nSubject: in the body\n", "mbox"},
		{"lower-case subject", "X: 1\nsubject: lower\n\nb\n", "mbox"},
		{"empty Subject", "X: 1\nSubject:\n\nb\n", "mbox"},
		{"Subject continued", "X: 1\nSubject: first\n  second\n\nb\n", "mbox"},
		{"two Subjects", "X: 1\nSubject: one\nSubject: two\n\nb\n", "mbox"},
		{"Subject with specials", "X: 1\nSubject: a\tb\vc\fd\re\n\nb\n", "mbox"},
		{"Subject 77 bytes", "X: 1\nSubject: " + long[:68] + "\n\nb\n", "mbox"},
		{"Subject 78 bytes", "X: 1\nSubject: " + long[:69] + "\n\nb\n", "mbox"},
		{"Subject 79 bytes", "X: 1\nSubject: " + long[:70] + "\n\nb\n", "mbox"},
		{"Subject long", "X: 1\nSubject: " + long + "\n\nb\n", "mbox"},
		{"Subject 8-bit", "X: 1\nSubject: caf\xe9 \xff\n\nb\n", "mbox"},
		{"Subject with NUL", "X: 1\nSubject: a\x00b\n\nb\n", "mbox"},
		{"Subject-like field", "X: 1\nSubjects: no\nX-Subject: no\nSubject: yes\n\nb\n", "mbox"},
		{"long From_ line", "From " + long + long + " Mon Jan  1 00:00:00 2024\nSubject: s\n\nb\n", "mbox"},
		{"From_ line only", "From a@example.com Mon Jan  1 00:00:00 2024\n", "mbox"},
		{"From_ line without newline", "From a@example.com Mon Jan  1 00:00:00 2024", "mbox"},
		{"no blank line", "X: 1\nSubject: s\n", "mbox"},
		{"no final newline after Subject", "From a b\nSubject: cut", "mbox"},
		{"CRLF", "X: 1\r\nSubject: crlf\r\n\r\nb\r\n", "mbox"},
		{"CRLF Subject in body", "X: 1\r\n\r\nSubject: body\r\n", "mbox"},
		{"no header", "plain text\n", "mbox"},
		{"empty", "", "mbox"},
		{"leading blank lines", "\n\nX: 1\nSubject: after blanks\n\nb\n", "mbox"},
		{"folder with tab", "X: 1\n\nb\n", "a\tb"},
	}
	// The TAB count depends on the folder's length: every length up to
	// past the 60-byte cut.
	for n := 1; n <= 66; n++ {
		cases = append(cases, struct{ name, msg, folder string }{fmt.Sprintf("folder length %d", n), "X: 1\n\nb\n", long[:n]})
	}
	var mu sync.Mutex
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			mu.Lock() // one procmail at a time keeps the machine responsive
			log, wrote := procmailAbstract(t, []byte(c.msg), c.folder)
			mu.Unlock()
			m := sizeAtEnd.FindSubmatch(log)
			if m == nil {
				t.Fatalf("procmail logged %q", log)
			}
			size, _ := strconv.Atoi(string(m[1]))
			if size != wrote {
				t.Fatalf("procmail logged %d bytes and wrote %d", size, wrote)
			}
			if got := Abstract([]byte(c.msg), c.folder, size); !bytes.Equal(got, log) {
				t.Errorf("msg %q folder %q:\n\tprocmail %q\n\tAbstract %q", c.msg, c.folder, log, got)
			}
		})
	}
}

// TestAbstractSize: the size column is right-aligned in 7 columns and
// grows beyond them (checked with procmail on a 10 MB message).
func TestAbstractSize(t *testing.T) {
	msg := []byte("X: 1\n\n" + strings.Repeat("0123456789abcdef\n", 10_000_000/17+1))
	log, wrote := procmailAbstract(t, msg, "mbox")
	if wrote < 10_000_000 {
		t.Fatalf("wrote only %d bytes", wrote)
	}
	if got := Abstract(msg, "mbox", wrote); !bytes.Equal(got, log) {
		t.Errorf("procmail %q, Abstract %q", log, got)
	}
	for _, c := range []struct {
		size int
		want string
	}{{0, "      0"}, {7, "      7"}, {1234567, "1234567"}, {12345678, "12345678"}} {
		got := string(Abstract(nil, "f", c.size))
		if !strings.HasSuffix(got, "\t"+c.want+"\n") {
			t.Errorf("size %d: %q", c.size, got)
		}
	}
}

// TestLogSubjectFirstLine is a deliberate difference: when a message has
// no From_ line and starts with its Subject, procmail looks for the
// start of that line before its buffer and logs a bare space or garbage.
// mfilter logs the Subject.
func TestLogSubjectFirstLine(t *testing.T) {
	msg := []byte("Subject: first line\nX: 1\n\nbody\n")
	log, wrote := procmailAbstract(t, msg, "mbox")
	right := " Subject: first line\n"
	if bytes.Contains(log, []byte(right)) {
		t.Fatalf("procmail now logs the Subject right: %q", log)
	}
	// Everything but the Subject line is procmail's.
	i := bytes.Index(log, []byte("  Folder: "))
	if i < 0 {
		t.Fatalf("procmail logged %q", log)
	}
	if got, want := Abstract(msg, "mbox", wrote), right+string(log[i:]); string(got) != want {
		t.Errorf("Abstract = %q, want %q", got, want)
	}
}

// TestLogger: each abstract is one Write, and a nil Logger logs nothing.
func TestLogger(t *testing.T) {
	var w countingWriter
	l := New(&w)
	for range 3 {
		if err := l.Log([]byte("Subject: s\n\nb\n"), "f", 12); err != nil {
			t.Fatal(err)
		}
	}
	if w.writes != 3 {
		t.Errorf("%d writes for 3 abstracts", w.writes)
	}
	if want := strings.Repeat(string(Abstract([]byte("Subject: s\n\nb\n"), "f", 12)), 3); w.buf.String() != want {
		t.Errorf("logged %q, want %q", w.buf.String(), want)
	}
	var nilLogger *Logger
	if err := nilLogger.Log(nil, "f", 1); err != nil {
		t.Errorf("nil Logger: %v", err)
	}
	if err := New(nil).Log(nil, "f", 1); err != nil {
		t.Errorf("Logger without a writer: %v", err)
	}
}

type countingWriter struct {
	buf    bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.buf.Write(p)
}
