package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// TestRulePairs runs each procmailrc of testdata/rules/pairs with the real
// procmail and the rules.yaml next to it with mfilter deliver, on every
// test message, and requires the same folders with the same bytes: maildir
// and MH folders compared by content, mbox files byte for byte apart from
// the date of the From_ line, pipes and forwards by what the program got,
// duplicate caches byte for byte.
func TestRulePairs(t *testing.T) {
	pairs, err := filepath.Glob(filepath.Join("..", "..", "testdata", "rules", "pairs", "*"))
	if err != nil || len(pairs) < 15 {
		t.Fatalf("want at least 15 pairs, found %d (%v)", len(pairs), err)
	}
	msgs := ruleTestMessages(t)
	for _, pair := range pairs {
		pair := pair
		t.Run(filepath.Base(pair), func(t *testing.T) {
			t.Parallel()
			rc, err := os.ReadFile(filepath.Join(pair, "procmailrc"))
			if err != nil {
				t.Fatal(err)
			}
			yml, err := os.ReadFile(filepath.Join(pair, "rules.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			pm := pairWorkDir(t)
			mf := pairWorkDir(t)
			rcPath := filepath.Join(pm, ".procmailrc")
			prelude := fmt.Sprintf("MAILDIR=%s\nDEFAULT=%s/inbox/\nLOGFILE=%s/.log\nSHELL=/bin/sh\nPATH=/usr/local/bin:/usr/bin:/bin\nLOCKSLEEP=1\n", pm, pm, pm)
			if err := os.WriteFile(rcPath, append([]byte(prelude), rc...), 0o644); err != nil {
				t.Fatal(err)
			}
			rulesPath := filepath.Join(mf, ".rules.yaml")
			if err := os.WriteFile(rulesPath, yml, 0o644); err != nil {
				t.Fatal(err)
			}
			args := []string{"deliver", "--rules", rulesPath, "--maildir", mf, "-f", "test@example.org"}
			if !bytes.Contains(yml, []byte("\ndefault:")) && !bytes.HasPrefix(yml, []byte("default:")) {
				args = append(args, "--default", "inbox/")
			}
			skip := pairDeviations(t, pair)
			pmSeen, mfSeen := map[string]int64{}, map[string]int64{}
			var mismatches []string
			left := 0
			for _, m := range msgs {
				if skip(m.data) {
					left++
					continue
				}
				cmd := exec.Command("procmail", "-f", "test@example.org", "-m", rcPath)
				cmd.Dir = pm
				cmd.Stdin = bytes.NewReader(m.data)
				if out, err := cmd.CombinedOutput(); err != nil {
					var ee *exec.ExitError
					if errors.As(err, &ee) && ee.ProcessState.Sys().(syscall.WaitStatus).Signaled() {
						// procmail itself crashed on this message: there is
						// no oracle for it, so it is left out of the pair.
						t.Logf("procmail crashed on %s (%v): left out", m.name, err)
						newDeliveries(t, pm, pmSeen)
						continue
					}
					t.Fatalf("procmail on %s: %v\n%s", m.name, err, out)
				}
				cmd = exec.Command(mfilterBin, args...)
				cmd.Dir = mf
				cmd.Stdin = bytes.NewReader(m.data)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("mfilter deliver on %s: %v\n%s", m.name, err, out)
				}
				want, got := newDeliveries(t, pm, pmSeen), newDeliveries(t, mf, mfSeen)
				if want != got && len(mismatches) < 100 {
					mismatches = append(mismatches, fmt.Sprintf("%s:\n  procmail: %s\n  mfilter:  %s", m.name, want, got))
				}
			}
			if left > 0 {
				t.Logf("%d messages left out as documented deviations", left)
			}
			if len(mismatches) > 0 {
				t.Errorf("messages filed differently (first %d):\n%s", len(mismatches), strings.Join(mismatches, "\n"))
			}
			want := folderDigest(t, pm)
			got := folderDigest(t, mf)
			if want != got {
				t.Errorf("folders differ\nprocmail:\n%s\nmfilter:\n%s", want, got)
			}
			if !regexp.MustCompile(`(?m)^(?:[^i]|i[^n]|in[^b])`).MatchString(want) {
				t.Errorf("procmail filed everything into the default folder: the pair tests nothing")
			}
		})
	}
}

// newDeliveries describes what appeared under dir since the last call:
// new files (by folder and content hash) and bytes appended to mbox files.
func newDeliveries(t *testing.T, dir string, seen map[string]int64) string {
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		name := filepath.Base(rel)
		if rel == "saver" || rel == "fakesendmail" || strings.HasPrefix(rel, ".") || strings.HasSuffix(name, ".lock") || strings.Contains(rel, "/tmp/") {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if prev, ok := seen[rel]; ok && prev == info.Size() {
			return nil // nothing new here
		}
		data, err := readNoAtime(p)
		if err != nil {
			return nil
		}
		folder := filepath.Dir(rel)
		isFile := !(filepath.Base(folder) == "new" || filepath.Base(folder) == "cur" || isMH(name) || strings.HasPrefix(name, "msg."))
		prev, ok := seen[rel]
		switch {
		case isFile && int64(len(data)) > prev:
			chunk := ctimeInFromLine.ReplaceAll(data[prev:], []byte("${1}DATE"))
			s := sha256.Sum256(chunk)
			out = append(out, fmt.Sprintf("%s+%x(%d)", rel, s[:4], len(chunk)))
		case !isFile && !ok:
			s := sha256.Sum256(ctimeInFromLine.ReplaceAll(data, []byte("${1}DATE")))
			out = append(out, fmt.Sprintf("%s/%x(%d)", folder, s[:4], len(data)))
		}
		seen[rel] = int64(len(data))
		return nil
	})
	sort.Strings(out)
	return strings.Join(out, " ")
}

// readNoAtime reads a file without updating its access time: procmail
// sleeps a second before appending to an mbox whose atime equals its mtime
// (an old NFS workaround), which reading it after every message would
// trigger each time.
func readNoAtime(p string) ([]byte, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOATIME, 0)
	if err != nil {
		f, err = os.Open(p)
		if err != nil {
			return nil, err
		}
	}
	defer f.Close()
	return io.ReadAll(f)
}

// pairDeviations reads the pair's deviations file: classes of messages on
// which mfilter knowingly differs from procmail for this pair.
func pairDeviations(t *testing.T, pair string) func([]byte) bool {
	data, err := os.ReadFile(filepath.Join(pair, "deviations"))
	if errors.Is(err, os.ErrNotExist) {
		return func([]byte) bool { return false }
	}
	if err != nil {
		t.Fatal(err)
	}
	var tests []func([]byte) bool
	for _, line := range strings.Split(string(data), "\n") {
		switch line = strings.TrimSpace(line); {
		case line == "" || strings.HasPrefix(line, "#"):
		case line == "crlf":
			tests = append(tests, func(m []byte) bool { return bytes.Contains(m, []byte("\r\n")) })
		case line == "no-blank-line":
			tests = append(tests, func(m []byte) bool { return !bytes.Contains(m, []byte("\n\n")) })
		default:
			t.Fatalf("%s/deviations: unknown class %q", pair, line)
		}
	}
	return func(m []byte) bool {
		for _, f := range tests {
			if f(m) {
				return true
			}
		}
		return false
	}
}

type testMessage struct {
	name string
	data []byte
}

// ruleTestMessages are the messages written for the pairs plus every
// message of the permissively licensed corpus.
func ruleTestMessages(t *testing.T) []testMessage {
	var out []testMessage
	for _, pat := range []string{
		filepath.Join("..", "..", "testdata", "rules", "messages", "*.eml"),
		filepath.Join("..", "..", "testdata", "corpus", "messages", "*", "*.eml"),
	} {
		files, err := filepath.Glob(pat)
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(files)
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, testMessage{f, data})
		}
	}
	if len(out) < 300 {
		t.Fatalf("only %d test messages", len(out))
	}
	return out
}

// pairWorkDir is a mail directory with the helper programs the pairs use:
// saver (a pipe target that keeps what it reads) and fakesendmail (keeps
// its arguments and what it reads).
func pairWorkDir(t *testing.T) string {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	saver := "#!/bin/sh\nd=\"$(dirname \"$0\")/$1\"\nmkdir -p \"$d\"\nf=$(mktemp \"$d/msg.XXXXXX\")\ncat > \"$f\"\n"
	fake := "#!/bin/sh\nd=\"$(dirname \"$0\")/sent\"\nmkdir -p \"$d\"\nf=$(mktemp \"$d/msg.XXXXXX\")\n{ printf 'ARGS:'; printf ' %s' \"$@\"; printf '\\n'; cat; } > \"$f\"\n"
	for name, text := range map[string]string{"saver": saver, "fakesendmail": fake} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

var ctimeInFromLine = regexp.MustCompile(`(?m)^(From \S+ +)[A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d \d{4}$`)

// folderDigest describes every folder under dir: for maildir, MH and
// plain directories the sorted hashes of the files, for mbox files the
// hash of the bytes with From_ dates blanked. Helper programs, logs and
// locks are left out.
func folderDigest(t *testing.T, dir string) string {
	var lines []string
	hash := func(b []byte) string {
		s := sha256.Sum256(b)
		return hex.EncodeToString(s[:8])
	}
	var walk func(rel string)
	walk = func(rel string) {
		entries, err := os.ReadDir(filepath.Join(dir, rel))
		if err != nil {
			t.Fatal(err)
		}
		var files []string
		for _, e := range entries {
			name := e.Name()
			p := filepath.Join(rel, name)
			switch {
			case rel == "" && (name == "saver" || name == "fakesendmail" || strings.HasPrefix(name, ".")):
				continue
			case strings.HasSuffix(name, ".lock"):
				continue
			case e.IsDir():
				walk(p)
				continue
			}
			data, err := os.ReadFile(filepath.Join(dir, p))
			if err != nil {
				t.Fatal(err)
			}
			data = ctimeInFromLine.ReplaceAll(data, []byte("${1}DATE"))
			if base := filepath.Base(rel); base == "new" || base == "cur" || base == "tmp" || isMH(name) || strings.HasPrefix(name, "msg.") {
				files = append(files, hash(data))
				continue
			}
			lines = append(lines, fmt.Sprintf("%s: file %s (%d bytes)", p, hash(data), len(data)))
		}
		if len(files) > 0 {
			sort.Strings(files)
			lines = append(lines, fmt.Sprintf("%s: %d files %s", rel, len(files), hash([]byte(strings.Join(files, ",")))))
		}
	}
	walk("")
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func isMH(name string) bool {
	for _, c := range name {
		if c < '0' || c > '9' {
			return false
		}
	}
	return name != ""
}
