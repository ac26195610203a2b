package main

// Helpers for the differential tests: the corpus and the real procmail,
// formail and mailstat. The mfilter binary (mfilterBin) is built once by
// TestMain in main_test.go.

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// tool returns the path of one of the real tools the differential tests
// compare against. They are never optional: test.sh installs them, and a
// missing one fails the test rather than skipping it.
func tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required for the differential tests (test.sh installs it): %v", name, err)
	}
	return p
}

// corpusFile is one file of the test corpus.
type corpusFile struct {
	name string // source/file, for messages
	data []byte
}

// corpusRoots are the corpora the differential tests read: the
// permissively licensed copy in the repository, always, and the full
// shared corpus when this checkout sits next to it (or where
// $MFILTER_SHARED_CORPUS points; set it empty to leave it out).
func corpusRoots(t testing.TB) []string {
	t.Helper()
	roots := []string{filepath.Join("..", "..", "testdata", "corpus")}
	if _, err := os.Stat(roots[0]); err != nil {
		t.Fatalf("the corpus copy is missing: %v", err)
	}
	shared := filepath.Join("..", "..", "..", "shared", "corpus")
	if p, ok := os.LookupEnv("MFILTER_SHARED_CORPUS"); ok {
		shared = p // another place, or "" for the repository's copy alone
	}
	if st, err := os.Stat(shared); shared != "" && err == nil && st.IsDir() {
		roots = append(roots, shared)
	}
	return roots
}

// corpus returns the files matching the globs (relative to each corpus
// root), each content once, sorted by name.
func corpus(t testing.TB, globs ...string) []corpusFile {
	t.Helper()
	seen := make(map[[32]byte]bool)
	var out []corpusFile
	for _, root := range corpusRoots(t) {
		for _, g := range globs {
			paths, err := filepath.Glob(filepath.Join(root, g))
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range paths {
				data, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				sum := sha256.Sum256(data)
				if seen[sum] {
					continue
				}
				seen[sum] = true
				rel, _ := filepath.Rel(root, p)
				out = append(out, corpusFile{name: rel, data: data})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	if len(out) == 0 {
		t.Fatalf("no corpus files match %v", globs)
	}
	return out
}

// corpusMessages is every single message of the corpus.
func corpusMessages(t testing.TB) []corpusFile {
	return corpus(t, "messages/*/*.eml", "dkim/*/*.eml")
}

// corpusMboxes is every mbox of the corpus.
func corpusMboxes(t testing.TB) []corpusFile {
	return corpus(t, "mbox/*/*.mbox")
}

// runTool runs a command with stdin and returns its stdout; a non-zero exit
// is an error that includes stderr.
func runTool(dir string, stdin []byte, env []string, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, errb.Bytes())
	}
	return out.Bytes(), nil
}

// writeRC writes a throwaway procmailrc that only sets the delivery
// variables (absolute MAILDIR and LOGFILE), so that procmail -m delivers
// every message to DEFAULT.
func writeRC(t testing.TB, dir, maildir, def, logfile string) string {
	t.Helper()
	rc := filepath.Join(dir, "rc")
	text := fmt.Sprintf("MAILDIR=%s\nDEFAULT=%s\nLOGFILE=%s\nLOCKSLEEP=1\n", maildir, def, logfile)
	if err := os.WriteFile(rc, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return rc
}

// formailSplit runs formail -s on input and returns what formail hands
// to each child: the messages procmail would receive.
func formailSplit(t testing.TB, input []byte, opts ...string) [][]byte {
	t.Helper()
	dir := t.TempDir()
	args := append(append([]string(nil), opts...), "-s", "sh", "-c", `cat > "$0/$FILENO"`, dir)
	_, err := runTool(dir, input, nil, tool(t, "formail"), args...)
	if err != nil {
		t.Fatalf("formail -s: %v", err)
	}
	return readNumbered(t, dir)
}

// readNumbered reads the all-digit files of dir in numeric order.
func readNumbered(t testing.TB, dir string) [][]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	type numbered struct {
		n    int
		name string
	}
	var files []numbered
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil || strings.Trim(e.Name(), "0123456789") != "" {
			continue
		}
		files = append(files, numbered{n, e.Name()})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].n < files[j].n })
	var out [][]byte
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// generatedFrom matches a From_ line as formail and mfilter generate it:
// an address, two blanks and a ctime(3) date.
var generatedFrom = regexp.MustCompile(`^From ([^\n]*)  (Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ 1-3][0-9] [0-2][0-9]:[0-5][0-9]:[0-6][0-9] [0-9]{4}\r?\n`)

// sameButDate reports whether a and b are equal once a generated From_
// line's date is ignored: both first lines must be generated From_ lines
// for the same address (the dates come from two clocks).
func sameButDate(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	ma, mb := generatedFrom.FindSubmatchIndex(a), generatedFrom.FindSubmatchIndex(b)
	if ma == nil || mb == nil {
		return false
	}
	if !bytes.Equal(a[ma[2]:ma[3]], b[mb[2]:mb[3]]) {
		return false
	}
	return bytes.Equal(a[ma[1]:], b[mb[1]:])
}

// dateless replaces the date of a generated From_ line, for failure
// messages.
func dateless(b []byte) []byte {
	if m := generatedFrom.FindSubmatchIndex(b); m != nil {
		return slices.Concat(b[:m[3]], []byte("  DATE"), b[m[1]-len(eolOf(b[:m[1]])):])
	}
	return b
}

// firstDiff describes where a and b first differ, for failure messages.
func firstDiff(a, b []byte) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	ctx := func(x []byte) string {
		lo, hi := max(0, i-40), min(len(x), i+40)
		return strconv.Quote(string(x[lo:hi]))
	}
	return fmt.Sprintf("lengths %d and %d, first difference at byte %d:\n\twant %s\n\tgot  %s", len(a), len(b), i, ctx(a), ctx(b))
}
