package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mfilter/mfilter/internal/mailfmt"
	"github.com/mfilter/mfilter/internal/mailtest"
	"github.com/mfilter/mfilter/internal/sysexits"
)

// nobodyUID is the unprivileged user the permission tests run mfilter
// as: these tests run as root, where file modes stop nothing.
const nobodyUID = 65534

// e2eRun is one run of the mfilter binary.
type e2eRun struct {
	args   []string
	stdin  []byte
	home   string // HOME and XDG_CONFIG_HOME, so no real rules file is read
	nobody bool   // run as uid/gid 65534
	fsize  uint64 // RLIMIT_FSIZE in bytes for the child; 0 = unlimited
	limit  time.Duration
	// stdinFile, when set, is the child's stdin instead of stdin bytes
	// (a file, as a shell's < gives it).
	stdinFile *os.File
}

// run executes r and returns the exit code and stderr. A panic or a
// signal death fails the test: on every input the binary must end with
// an exit code.
func (r e2eRun) run(t *testing.T) (int, string) {
	t.Helper()
	limit := r.limit
	if limit == 0 {
		limit = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, mfilterBin, r.args...)
	cmd.Env = append(os.Environ(), "HOME="+r.home, "XDG_CONFIG_HOME="+filepath.Join(r.home, ".config"))
	if r.nobody {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyUID, Gid: nobodyUID}}
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	var stdin io.WriteCloser
	if r.stdinFile != nil {
		cmd.Stdin = r.stdinFile
		stdin = nopWriteCloser{}
	} else {
		var err error
		if stdin, err = cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The limit is set before the child gets its input, so before it
	// can write anything. Go ignores SIGXFSZ: write returns EFBIG.
	if r.fsize > 0 {
		lim := unix.Rlimit{Cur: r.fsize, Max: r.fsize}
		if err := unix.Prlimit(cmd.Process.Pid, unix.RLIMIT_FSIZE, &lim, nil); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("prlimit: %v", err)
		}
	}
	go func() {
		stdin.Write(r.stdin)
		stdin.Close()
	}()
	err := cmd.Wait()
	if ctx.Err() != nil {
		t.Fatalf("mfilter %v did not end within %v", r.args, limit)
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Fatalf("mfilter %v died of %v\n%s", r.args, ws.Signal(), stderr.String())
		}
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if s := stderr.String(); strings.Contains(s, "panic:") || strings.Contains(s, "goroutine ") {
		t.Fatalf("mfilter %v panicked:\n%s", r.args, s)
	}
	return code, stderr.String()
}

type nopWriteCloser struct{}

func (nopWriteCloser) Write(p []byte) (int, error) { return len(p), nil }
func (nopWriteCloser) Close() error                { return nil }

// e2eDir is a directory that user nobody can reach (t.TempDir is 0700):
// owned by root, mode 0755, so nobody can read but not write it.
func e2eDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mfilter-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// e2eTree maps each path under dir to its mode and contents.
func e2eTree(t *testing.T, dir string) map[string]string {
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

func e2eTreeDiff(before, after map[string]string) string {
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

// e2eMaildirFiles returns the contents of the files in a maildir's new/,
// sorted, and fails if tmp/ holds anything.
func e2eMaildirFiles(t *testing.T, md string) []string {
	t.Helper()
	if names := e2eListDirMaybe(t, filepath.Join(md, "tmp")); len(names) > 0 {
		t.Errorf("%s/tmp holds %v", md, names)
	}
	var out []string
	for _, n := range e2eListDirMaybe(t, filepath.Join(md, "new")) {
		b, err := os.ReadFile(filepath.Join(md, "new", n))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	sort.Strings(out)
	return out
}

func e2eListDirMaybe(t *testing.T, dir string) []string {
	t.Helper()
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return mailtest.ListDir(t, dir)
}

func e2eSplit(t *testing.T, data []byte) [][]byte {
	t.Helper()
	sp := mailfmt.NewSplitter(bytes.NewReader(data), mailfmt.SplitOptions{})
	var out [][]byte
	for {
		m, err := sp.Next()
		if err != nil {
			return out
		}
		out = append(out, m)
	}
}

const failMsg = "From sender@example.com  Tue Jan  2 03:04:05 2024\nFrom: Sender <sender@example.com>\nSubject: failure test\n\nbody\nFrom the body\n"

func e2eMbox(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, "From s%d@example.com  Tue Jan  2 03:04:05 2024\nSubject: message %d\nX-N: %d\n\nbody %d\n>From quoted\n\n", i, i, i, i)
	}
	return b.Bytes()
}

// TestFailureUnwritable runs mfilter deliver as user nobody against
// folders it may not write: the exit code is 75, the error says to try
// again, and nothing under the mail directory changes.
func TestFailureUnwritable(t *testing.T) {
	cases := []struct {
		name   string
		folder string
		setup  func(t *testing.T, base string)
	}{
		{"maildir", "md/", func(t *testing.T, base string) {
			for _, d := range []string{"md/tmp", "md/new", "md/cur"} {
				os.MkdirAll(filepath.Join(base, d), 0o755)
			}
		}},
		{"maildir-missing", "md/", nil},
		{"mbox-missing", "box", nil},
		{"mbox-existing", "box", func(t *testing.T, base string) {
			os.WriteFile(filepath.Join(base, "box"), []byte("From x  Tue Jan  2 03:04:05 2024\nX: old\n\n"), 0o644)
		}},
		{"mbox-missing-parent", "sub/box", nil},
		{"mh", "mh/.", func(t *testing.T, base string) { os.Mkdir(filepath.Join(base, "mh"), 0o755) }},
		{"dir", "plain", func(t *testing.T, base string) { os.Mkdir(filepath.Join(base, "plain"), 0o755) }},
		// A folder that cannot even be looked at is no configuration
		// error (78 makes MTAs bounce), just a failed delivery.
		{"unsearchable-mbox", "priv/box", func(t *testing.T, base string) { os.Mkdir(filepath.Join(base, "priv"), 0o700) }},
		{"unsearchable-maildir", "priv/md/", func(t *testing.T, base string) { os.Mkdir(filepath.Join(base, "priv"), 0o700) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base := e2eDir(t)
			if c.setup != nil {
				c.setup(t, base)
			}
			before := e2eTree(t, base)
			start := time.Now()
			code, stderr := e2eRun{
				args:   []string{"deliver", "--maildir", base, "--default", c.folder},
				stdin:  []byte(failMsg),
				home:   base,
				nobody: true,
			}.run(t)
			t.Logf("exit %d after %v", code, time.Since(start).Round(time.Millisecond))
			if code != sysexits.TempFail {
				t.Errorf("exit %d, want 75; stderr:\n%s", code, stderr)
			}
			if !strings.Contains(stderr, "try again later") || !strings.Contains(stderr, "permission denied") {
				t.Errorf("stderr does not explain: %s", stderr)
			}
			if d := e2eTreeDiff(before, e2eTree(t, base)); d != "" {
				t.Errorf("the mail directory changed:\n%s", d)
			}
		})
	}
}

// TestFailureNotADirectory: a regular file where a folder's directory
// must be fails with 75 and touches nothing; missing directories are
// created (mode 0700).
func TestFailureNotADirectory(t *testing.T) {
	for _, folder := range []string{"f/md/", "f/box", "f/mh/.", "f/deeper/md/"} {
		t.Run(folder, func(t *testing.T) {
			base := t.TempDir()
			if err := os.WriteFile(filepath.Join(base, "f"), []byte("a file\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			before := e2eTree(t, base)
			code, stderr := e2eRun{args: []string{"deliver", "--maildir", base, "--default", folder}, stdin: []byte(failMsg), home: base}.run(t)
			if code != sysexits.TempFail || !strings.Contains(stderr, "not a directory") {
				t.Errorf("exit %d, want 75 saying why; stderr:\n%s", code, stderr)
			}
			if d := e2eTreeDiff(before, e2eTree(t, base)); d != "" {
				t.Errorf("the mail directory changed:\n%s", d)
			}
		})
	}
	t.Run("missing-parents-created", func(t *testing.T) {
		base := t.TempDir()
		for _, folder := range []string{"a/b/md/", "c/d/box", "e/f/mh/."} {
			code, stderr := e2eRun{args: []string{"deliver", "--maildir", base, "--default", folder}, stdin: []byte(failMsg), home: base}.run(t)
			if code != 0 {
				t.Fatalf("%s: exit %d: %s", folder, code, stderr)
			}
		}
		for _, d := range []string{"a", "a/b", "a/b/md", "a/b/md/new", "c", "c/d", "e", "e/f", "e/f/mh"} {
			st, err := os.Stat(filepath.Join(base, d))
			if err != nil || st.Mode().Perm() != 0o700 {
				t.Errorf("%s: %v %v, want a 0700 directory", d, st.Mode(), err)
			}
		}
	})
}

// TestFailureFileSizeLimit makes an mbox append fail halfway with EFBIG
// (RLIMIT_FSIZE, as a full disk or quota would): the mbox is truncated
// back to its former bytes and the exit is 75. In a maildir the partial
// file is removed.
func TestFailureFileSizeLimit(t *testing.T) {
	big := []byte(failMsg + strings.Repeat("a long body line that will not fit\n", 2000))
	t.Run("mbox", func(t *testing.T) {
		base := t.TempDir()
		box := filepath.Join(base, "box")
		old := e2eMbox(300)
		if err := os.WriteFile(box, old, 0o600); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		code, stderr := e2eRun{
			args:  []string{"deliver", "--maildir", base, "--default", "box"},
			stdin: big, home: base, fsize: uint64(len(old)) + 4096,
		}.run(t)
		t.Logf("exit %d after %v", code, time.Since(start).Round(time.Millisecond))
		if code != sysexits.TempFail || !strings.Contains(stderr, "file too large") {
			t.Errorf("exit %d, want 75 for EFBIG; stderr:\n%s", code, stderr)
		}
		if got, _ := os.ReadFile(box); !bytes.Equal(got, old) {
			t.Errorf("mbox not truncated back: %d bytes, had %d", len(got), len(old))
		}
		if names := mailtest.ListDir(t, base); !slices.Equal(names, []string{"box"}) {
			t.Errorf("mail directory holds %v", names)
		}
	})
	t.Run("maildir", func(t *testing.T) {
		base := t.TempDir()
		code, stderr := e2eRun{
			args:  []string{"deliver", "--maildir", base, "--default", "md/"},
			stdin: big, home: base, fsize: 4096,
		}.run(t)
		if code != sysexits.TempFail || !strings.Contains(stderr, "file too large") {
			t.Errorf("exit %d, want 75 for EFBIG; stderr:\n%s", code, stderr)
		}
		if files := e2eMaildirFiles(t, filepath.Join(base, "md")); len(files) != 0 {
			t.Errorf("maildir holds %d messages", len(files))
		}
	})
	t.Run("batch", func(t *testing.T) {
		// Message 3 does not fit; the others do. It goes to the rescue
		// mbox (which starts empty, so it fits there), and filing the
		// rescue mbox again gives back exactly that message.
		base := t.TempDir()
		box := filepath.Join(base, "box")
		old := e2eMbox(1000)
		if err := os.WriteFile(box, old, 0o600); err != nil {
			t.Fatal(err)
		}
		msgs := e2eSplit(t, e2eMbox(5))
		msgs[3] = append(bytes.TrimRight(msgs[3], "\n"), '\n')
		msgs[3] = append(msgs[3], bytes.Repeat([]byte("a long body line that will not fit\n"), 2000)...)
		msgs[3] = append(msgs[3], '\n')
		input := bytes.Join(msgs, nil)
		rescue := filepath.Join(base, "rescue.mbox")
		code, stderr := e2eRun{
			args:  []string{"--maildir", base, "--default", "box", "--rescue", rescue},
			stdin: input, home: base, fsize: uint64(len(old)) + 4096,
		}.run(t)
		if code != sysexits.TempFail || !strings.Contains(stderr, rescue) || !strings.Contains(stderr, "file too large") {
			t.Fatalf("exit %d, want 75 naming the rescue mbox; stderr:\n%s", code, stderr)
		}
		got, _ := os.ReadFile(box)
		want := append(bytes.Clone(old), msgs[0]...)
		for _, i := range []int{1, 2, 4} {
			want = append(want, msgs[i]...)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("mbox is not the old bytes plus messages 0 1 2 4:\n%s", e2eFirstDiff(got, want))
		}
		r, _ := os.ReadFile(rescue)
		if !bytes.Equal(r, msgs[3]) {
			t.Errorf("rescue mbox does not hold exactly message 3:\n%s", e2eFirstDiff(r, msgs[3]))
		}
		code, stderr = e2eRun{args: []string{"file", "--maildir", base, "--default", "again/", rescue}, home: base}.run(t)
		if code != 0 {
			t.Fatalf("filing the rescue mbox: exit %d: %s", code, stderr)
		}
		files := e2eMaildirFiles(t, filepath.Join(base, "again"))
		if len(files) != 1 || files[0] != string(msgs[3][bytes.IndexByte(msgs[3], '\n')+1:]) {
			t.Errorf("filing the rescue mbox gave %d messages, want message 3 back", len(files))
		}
	})
}

// TestFailureBatchRescue files whole mboxes (the corpus and a generated
// one) into a folder that cannot be written, as user nobody and as root
// (a regular file in the folder's path). Every message must go to the
// rescue mbox named in the error, exit 75, and filing the rescue mbox
// again must give the same messages as filing the input directly.
func TestFailureBatchRescue(t *testing.T) {
	inputs := map[string][]byte{"generated": e2eMbox(50)}
	corpusDir := filepath.Join("..", "..", "testdata", "corpus", "mbox")
	filepath.WalkDir(corpusDir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			if b, err := os.ReadFile(p); err == nil {
				inputs[strings.TrimPrefix(p, corpusDir+"/")] = b
			}
		}
		return nil
	})
	if len(inputs) < 5 {
		t.Fatalf("corpus mboxes missing under %s", corpusDir)
	}
	for _, how := range []string{"nobody", "file-in-path"} {
		for name, input := range inputs {
			t.Run(how+"/"+name, func(t *testing.T) {
				base := e2eDir(t)
				spool := filepath.Join(base, "spool")
				if err := os.Mkdir(spool, 0o700); err != nil {
					t.Fatal(err)
				}
				folder := "md/"
				if how == "nobody" {
					os.Chown(spool, nobodyUID, nobodyUID)
				} else {
					os.WriteFile(filepath.Join(base, "f"), nil, 0o600)
					folder = "f/md/"
				}
				rescue := filepath.Join(spool, "rescue.mbox")
				code, stderr := e2eRun{
					args:  []string{"--maildir", base, "--default", folder, "--rescue", rescue},
					stdin: input, home: base, nobody: how == "nobody",
				}.run(t)
				want := e2eSplit(t, input)
				if len(want) == 0 {
					if code != 0 {
						t.Errorf("an mbox without messages: exit %d: %s", code, stderr)
					}
					return
				}
				if code != sysexits.TempFail || !strings.Contains(stderr, rescue) ||
					!strings.Contains(stderr, fmt.Sprintf("%d of %d messages", len(want), len(want))) {
					t.Fatalf("exit %d, want 75 naming the rescue mbox and %d messages; stderr:\n%s", code, len(want), stderr)
				}
				if _, err := os.Stat(filepath.Join(base, "md", "new")); err == nil && how == "nobody" {
					t.Errorf("the unwritable folder was created")
				}
				rdata, err := os.ReadFile(rescue)
				if err != nil {
					t.Fatal(err)
				}
				got := e2eSplit(t, rdata)
				if len(got) != len(want) {
					t.Fatalf("rescue mbox splits into %d messages, the input into %d", len(got), len(want))
				}
				for i := range want {
					// The From_ line may be one generated at split
					// time, with a different date; the rest is equal.
					g, w := got[i][bytes.IndexByte(got[i], '\n')+1:], want[i][bytes.IndexByte(want[i], '\n')+1:]
					if !bytes.Equal(g, w) {
						t.Errorf("rescued message %d differs:\n%s", i, e2eFirstDiff(g, w))
					}
				}
				// Filing the rescue mbox again equals filing the input.
				if code, stderr := (e2eRun{args: []string{"file", "--maildir", base, "--default", "again/", rescue}, home: base}).run(t); code != 0 {
					t.Fatalf("filing the rescue mbox: exit %d: %s", code, stderr)
				}
				if code, stderr := (e2eRun{args: []string{"--maildir", base, "--default", "direct/"}, stdin: input, home: base}).run(t); code != 0 {
					t.Fatalf("filing the input: exit %d: %s", code, stderr)
				}
				again, direct := e2eMaildirFiles(t, filepath.Join(base, "again")), e2eMaildirFiles(t, filepath.Join(base, "direct"))
				if !slices.Equal(again, direct) || len(direct) != len(want) {
					t.Errorf("filing the rescue mbox gave %d messages, filing the input %d (want %d), or they differ", len(again), len(direct), len(want))
				}
			})
		}
	}
}

// TestOddInput feeds inputs that are not tidy mail to both modes. Each
// must be delivered (deliver: byte for byte, batch: every line kept),
// never dropped, never a crash.
func TestOddInput(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	garbage := make([]byte, 64<<10)
	for i := range garbage {
		garbage[i] = byte(rng.UintN(256))
	}
	garbage = bytes.ReplaceAll(garbage, []byte("From "), []byte("Frxm "))
	garbage = bytes.ReplaceAll(garbage, []byte("\n\n"), []byte("\n.")) // one header, no body
	garbage[0] = 'x'
	hugeLine := append([]byte("Subject: huge\n\n"), bytes.Repeat([]byte("0123456789"), 1<<20)...)
	hugeLine = append(hugeLine, '\n')
	inputs := []struct {
		name string
		msg  []byte
	}{
		{"garbage", garbage},
		{"empty", nil},
		{"nul-bytes", []byte("Subject: n\x00ul\n\nbody \x00\x00 with NULs\n\x00\n")},
		{"8bit-header", []byte("Subject: caf\xe9 \xff\nFrom: J\xc3\xbcrgen <j@example.de>\n\n\xe4\xf6\xfc\n")},
		{"huge-line", hugeLine},
		{"no-newline", []byte("Subject: x\n\nno final newline")},
		{"blank-lines-only", []byte("\n\n\n")},
		{"crlf", []byte("Subject: crlf\r\n\r\nbody\r\n")},
		{"no-header", []byte("just text\nmore text\n")},
	}
	for _, in := range inputs {
		t.Run("deliver/"+in.name, func(t *testing.T) {
			base := t.TempDir()
			start := time.Now()
			code, stderr := e2eRun{args: []string{"deliver", "--maildir", base, "--default", "md/"}, stdin: in.msg, home: base}.run(t)
			if el := time.Since(start); el > 5*time.Second {
				t.Logf("took %v", el)
			}
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			files := e2eMaildirFiles(t, filepath.Join(base, "md"))
			want := string(bytes.TrimLeft(in.msg, "\n")) // procmail -d drops leading blank lines
			if len(files) != 1 || files[0] != want {
				t.Errorf("delivered %d files; want exactly the input (%d bytes)", len(files), len(want))
			}
		})
		t.Run("batch/"+in.name, func(t *testing.T) {
			base := t.TempDir()
			code, stderr := e2eRun{args: []string{"--maildir", base, "--default", "md/"}, stdin: in.msg, home: base}.run(t)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			files := e2eMaildirFiles(t, filepath.Join(base, "md"))
			all := strings.Join(files, "")
			if len(bytes.TrimLeft(in.msg, "\n\r")) > 0 && len(files) == 0 {
				t.Fatalf("nothing delivered")
			}
			for i, line := range bytes.Split(in.msg, []byte("\n")) {
				if len(bytes.TrimSpace(line)) > 0 && !strings.Contains(all, string(line)) {
					t.Fatalf("input line %d (%.40q) is not in any delivered message", i, line)
				}
			}
		})
	}
}

// TestTruncatedSenderField: a message without a From_ line whose sender
// field is a truncated "<address," must be filed into an mbox (which
// needs a generated From_ line) in both modes. This failed with a crash
// (exit 2: the MTA bounces the mail) from the envelope sender parser
// (skipWords in internal/mailfmt/sender.go); the filer now turns that
// crash into exit 75, which still is no delivery.
func TestTruncatedSenderField(t *testing.T) {
	msg := []byte("From: Someone <someone@example.com,\nSubject: truncated\n\nbody\n")
	for _, args := range [][]string{{"deliver", "--default", "box"}, {"--default", "box"}} {
		t.Run(args[0], func(t *testing.T) {
			base := t.TempDir()
			code, stderr := e2eRun{args: append(args, "--maildir", base), stdin: msg, home: base}.run(t)
			if code != 0 {
				t.Fatalf("exit %d, want 0: %.300s", code, stderr)
			}
			b, _ := os.ReadFile(filepath.Join(base, "box"))
			if m := e2eSplit(t, b); len(m) != 1 || !bytes.Contains(m[0], []byte("Subject: truncated\n")) {
				t.Errorf("mbox holds %q", b)
			}
		})
	}
}

// TestRefileRescueStillFailing: following the error's advice before the
// folder is fixed (mfilter file RESCUE, or mfilter < RESCUE, where RESCUE
// is also the rescue mbox) must end, leave RESCUE as it was, and save the
// messages to a new rescue mbox that the error names. It used to append
// to the file it was reading, without end.
func TestRefileRescueStillFailing(t *testing.T) {
	for _, how := range []string{"file", "stdin"} {
		t.Run(how, func(t *testing.T) {
			base := t.TempDir()
			os.WriteFile(filepath.Join(base, "f"), nil, 0o600)
			rescue := filepath.Join(base, "mfilter-rescue.mbox")
			orig := e2eMbox(20)
			if err := os.WriteFile(rescue, orig, 0o600); err != nil {
				t.Fatal(err)
			}
			r := e2eRun{args: []string{"--maildir", base, "--default", "f/md/"}, home: base, limit: 30 * time.Second}
			if how == "file" {
				r.args = append([]string{"file"}, append(r.args, rescue)...)
			} else {
				r.stdin = orig
				in, err := os.Open(rescue)
				if err != nil {
					t.Fatal(err)
				}
				defer in.Close()
				r.stdinFile = in
			}
			code, stderr := r.run(t)
			if code != sysexits.TempFail {
				t.Fatalf("exit %d, want 75: %s", code, stderr)
			}
			if b, _ := os.ReadFile(rescue); !bytes.Equal(b, orig) {
				t.Errorf("the rescue mbox being filed changed (%d bytes, had %d)", len(b), len(orig))
			}
			var other string
			for _, n := range mailtest.ListDir(t, base) {
				if strings.HasPrefix(n, "mfilter-rescue.mbox.") && !strings.HasSuffix(n, ".lock") {
					other = filepath.Join(base, n)
				}
			}
			if other == "" || !strings.Contains(stderr, other) {
				t.Fatalf("no new rescue mbox named in the error: %s", stderr)
			}
			if b, _ := os.ReadFile(other); !bytes.Equal(b, orig) {
				t.Errorf("%s does not hold the 20 messages", other)
			}
		})
	}
}
