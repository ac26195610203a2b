package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mfilter/mfilter/internal/sysexits"
)

// deliverUnder runs mfilter deliver in a shell that first sets limits
// (ulimit arguments, such as "-n 7"), so that the limits hold from the
// runtime's start, with stdin from the file in. It returns the real exit
// status and stderr.
func deliverUnder(t *testing.T, ulimit, in, home string, args ...string) (int, string) {
	t.Helper()
	// The redirection comes first: dash saves descriptors above 10 for a
	// redirection on exec, which a low limit refuses.
	script := `exec <"$MFILTER_TEST_IN" && ulimit ` + ulimit + ` && exec "$0" deliver "$@"`
	cmd := exec.Command("sh", append([]string{"-c", script, mfilterBin}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "MFILTER_TEST_IN="+in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &ee) && ee.Exited():
		return ee.ExitCode(), stderr.String()
	}
	t.Fatalf("mfilter deliver under ulimit %s: %v\n%s", ulimit, err, stderr.String())
	return 0, ""
}

func writeMessage(t *testing.T, dir string, size int) string {
	t.Helper()
	var b bytes.Buffer
	b.WriteString("From: alice@example.org\nSubject: limits\n\n")
	for b.Len() < size {
		b.WriteString("a line of the body, long enough to fill the message quickly\n")
	}
	p := filepath.Join(dir, "msg-"+strconv.Itoa(size)+".eml")
	if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDeliverDescriptorLimit: under a low descriptor limit the Go
// runtime's poller used to take the last descriptors at the first file
// opened and die (exit 2, a bounce), once after the message was linked
// into new/. Now deliver works with 7 descriptors, and below that exits
// 75 having written nothing.
func TestDeliverDescriptorLimit(t *testing.T) {
	for _, c := range []struct {
		limit  int
		folder string
		want   int
	}{
		{7, "md/", 0}, {7, "box", 0}, {7, "mh/.", 0}, {16, "box", 0},
		{6, "md/", sysexits.TempFail}, {4, "box", sysexits.TempFail},
	} {
		t.Run(strconv.Itoa(c.limit)+"-"+c.folder, func(t *testing.T) {
			home := t.TempDir()
			in := writeMessage(t, t.TempDir(), 500)
			code, stderr := deliverUnder(t, "-n "+strconv.Itoa(c.limit), in, home, "--maildir", home, "--default", c.folder)
			if code != c.want {
				t.Fatalf("exit %d, want %d:\n%s", code, c.want, stderr)
			}
			got := len(e2eTreeFiles(t, home))
			if c.want == 0 && got != 1 {
				t.Errorf("%d files in the mail directory, want the message", got)
			}
			if c.want != 0 && got != 0 {
				t.Errorf("%d files in the mail directory after a failure, want none", got)
			}
		})
	}
}

// TestDeliverAddressSpaceLimit: under RLIMIT_AS a message too large for
// the process used to kill the runtime (exit 2). Now it is refused with
// 75 before anything is written, and a message that fits is delivered.
func TestDeliverAddressSpaceLimit(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		size int
		want int
	}{
		{10 << 10, 0},
		{200 << 20, sysexits.TempFail},
	} {
		t.Run(strconv.Itoa(c.size), func(t *testing.T) {
			home := t.TempDir()
			in := writeMessage(t, dir, c.size)
			code, stderr := deliverUnder(t, "-v 900000", in, home, "--maildir", home, "--default", "md/")
			if code != c.want {
				t.Fatalf("exit %d, want %d:\n%.500s", code, c.want, stderr)
			}
			if c.want != 0 && !strings.Contains(stderr, "RLIMIT_AS") {
				t.Errorf("stderr does not say why: %.500s", stderr)
			}
			if n := len(e2eTreeFiles(t, home)); (c.want == 0) != (n == 1) {
				t.Errorf("%d files in the mail directory", n)
			}
		})
	}
}

// TestDeliverDrainsBeforeTempFail: when deliver gives up (exit 75) before
// reading all of a large message, it reads the rest first: fetchmail,
// still writing, would otherwise get EPIPE and abort its whole poll.
func TestDeliverDrainsBeforeTempFail(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
	}{
		{"unwritable-folder", []string{"--default", "f/md/"}},
		{"usage-error", []string{"--no-such-flag"}},
		{"argument", []string{"extra"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			home := t.TempDir()
			if err := os.WriteFile(filepath.Join(home, "f"), []byte("a file\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(mfilterBin, append([]string{"deliver", "--maildir", home}, c.args...)...)
			cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"))
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			msg := []byte("From: a@example.org\nSubject: big\n\n" + strings.Repeat("body line of a large message\n", 100000))
			werr := make(chan error, 1)
			go func() {
				// Slowly, as a fetcher writes what it downloads.
				var err error
				for off := 0; off < len(msg) && err == nil; off += 64 << 10 {
					_, err = stdin.Write(msg[off:min(off+64<<10, len(msg))])
					time.Sleep(time.Millisecond)
				}
				stdin.Close()
				werr <- err
			}()
			err = cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != sysexits.TempFail {
				t.Fatalf("exit %v, want 75: %s", err, stderr.String())
			}
			if err := <-werr; err != nil {
				t.Errorf("the writer got %v: deliver did not read all of its input", err)
			}
		})
	}
}

// panicReader panics when read, as a bug below deliver would.
type panicReader struct{}

func (panicReader) Read([]byte) (int, error) { panic("a bug") }

// TestDeliverPanicIsTempFail: a panic in deliver is reported and turned
// into 75; a Go crash would exit 2, which MTAs bounce.
func TestDeliverPanicIsTempFail(t *testing.T) {
	home := t.TempDir()
	var stderr bytes.Buffer
	env := &environ{stdin: panicReader{}, stdout: io.Discard, stderr: &stderr, getenv: func(k string) string {
		if k == "HOME" {
			return home
		}
		return ""
	}}
	code := run(context.Background(), env, []string{"deliver", "--maildir", home})
	if code != sysexits.TempFail || !strings.Contains(stderr.String(), "internal error") {
		t.Fatalf("exit %d, want 75 with the panic reported: %s", code, stderr.String())
	}
}

// e2eTreeFiles lists the regular files below dir.
func e2eTreeFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
