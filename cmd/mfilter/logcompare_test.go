package main

// Comparison of procmail's LOGFILE with mfilter's --log, and of what
// procmail's mailstat makes of each.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/maillog"
)

// logEntry is one abstract of a LOGFILE: the lines written for one
// delivery, ending with the "  Folder:" line.
type logEntry struct {
	raw    []byte // all its lines
	folder string // as logged (at most 60 bytes)
	size   int
}

var folderLine = regexp.MustCompile(`(?m)^  Folder: ([^\t\n]*)\t+ *([0-9]+)\n`)

// parseLog splits a LOGFILE into entries; anything after the last
// Folder line is an error.
func parseLog(t testing.TB, log []byte) []logEntry {
	t.Helper()
	var out []logEntry
	rest := log
	for len(rest) > 0 {
		m := folderLine.FindSubmatchIndex(rest)
		if m == nil {
			t.Fatalf("log ends in a partial entry: %q", rest)
		}
		size, err := strconv.Atoi(string(rest[m[4]:m[5]]))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, logEntry{raw: rest[:m[1]], folder: string(rest[m[2]:m[3]]), size: size})
		rest = rest[m[1]:]
	}
	return out
}

// logCase is what the two logs say about one message.
type logCase struct {
	name string
	// pmMsg is the message as procmail held it; mfMsg as mfilter did.
	pmMsg, mfMsg []byte
	// pmWrote and mfWrote are the bytes each tool delivered.
	pmWrote, mfWrote int
	// pmFolder and mfFolder are the maildir files each tool wrote, which
	// they log in place of the folder; "" when both log the same folder.
	pmFolder, mfFolder string
}

// maxFolder is how much of a folder name procmail logs.
const maxFolder = 60

func cut(s string) string { return s[:min(len(s), maxFolder)] }

// compareLogs checks mfilter's log against procmail's, entry by entry:
//   - procmail's entry is maillog.Abstract of its message, folder and
//     size, byte for byte (the dates of generated From_ lines, which
//     come from different clocks, aside), which proves the formatter against procmail
//     on the whole corpus (except procmail's bug with a Subject: on the
//     first line, see subjectFirst);
//   - mfilter's entry is maillog.Abstract of its message, its folder
//     and its size;
//   - both name the same folder (maildir files differ only in the
//     generated base name), both sizes are the bytes each wrote, and the
//     From_ and Subject lines agree (generated dates aside).
//
// It returns how many messages hit procmail's Subject bug.
func compareLogs(t *testing.T, pmLog, mfLog []byte, cases []logCase) int {
	t.Helper()
	pm, mf := parseLog(t, pmLog), parseLog(t, mfLog)
	if len(pm) != len(cases) || len(mf) != len(cases) {
		t.Fatalf("log entries: procmail %d, mfilter %d, messages %d", len(pm), len(mf), len(cases))
	}
	bugs := 0
	for i, c := range cases {
		p, m := pm[i], mf[i]
		want := maillog.Abstract(c.pmMsg, p.folder, p.size)
		if sameDateless(p.raw) != sameDateless(want) {
			if subjectFirst(c.pmMsg) && withoutSubject(p.raw) == withoutSubject(want) {
				bugs++ // procmail's bug, see TestLogSubjectFirstLine
			} else {
				t.Errorf("%s: maillog.Abstract does not reproduce procmail's entry:\n\tprocmail %q\n\tAbstract %q", c.name, p.raw, want)
			}
		}
		if got := maillog.Abstract(c.mfMsg, m.folder, m.size); sameDateless(m.raw) != sameDateless(got) {
			t.Errorf("%s: mfilter's entry is not the abstract of its message:\n\tlog      %q\n\tAbstract %q", c.name, m.raw, got)
		}
		if p.size != c.pmWrote || m.size != c.mfWrote {
			t.Errorf("%s: logged sizes %d (procmail) and %d (mfilter), but they wrote %d and %d bytes", c.name, p.size, m.size, c.pmWrote, c.mfWrote)
		}
		if c.pmFolder != "" {
			// A maildir file is logged by its unique part, without the
			// ",S=<size>" info, so that mailstat folds it like procmail's.
			if p.folder != cut(c.pmFolder) || m.folder != cut(deliver.MaildirUnique(c.mfFolder)) {
				t.Errorf("%s: folder logged as %q by procmail, %q by mfilter; they wrote %q and %q", c.name, p.folder, m.folder, c.pmFolder, c.mfFolder)
			}
		} else if p.folder != m.folder {
			t.Errorf("%s: folder logged as %q by procmail, %q by mfilter", c.name, p.folder, m.folder)
		}
		if a, b := sameDateless(headLines(p.raw)), sameDateless(headLines(m.raw)); a != b && !subjectFirst(c.pmMsg) {
			t.Errorf("%s: From_/Subject lines differ:\n\tprocmail %q\n\tmfilter  %q", c.name, a, b)
		}
	}
	return bugs
}

// subjectFirst reports whether msg starts with a Subject: line and no
// From_ line, which procmail logs wrongly.
func subjectFirst(msg []byte) bool {
	return len(msg) >= 8 && strings.EqualFold(string(msg[:8]), "subject:")
}

// withoutSubject drops an entry's Subject line (the one starting with a
// space) so that the rest can be compared.
func withoutSubject(raw []byte) string {
	var keep []string
	for _, l := range strings.SplitAfter(string(raw), "\n") {
		if !strings.HasPrefix(l, " ") || strings.HasPrefix(l, "  Folder: ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "")
}

// headLines is an entry without its Folder line.
func headLines(raw []byte) []byte {
	i := bytes.LastIndex(raw, []byte("  Folder: "))
	return raw[:i]
}

var ctimeInFrom = regexp.MustCompile(`(?m)^(From \S*  )(Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ 1-3][0-9] [0-2][0-9]:[0-5][0-9]:[0-6][0-9] [0-9]{4}$`)

// sameDateless replaces the dates of generated From_ lines.
func sameDateless(b []byte) string {
	return ctimeInFrom.ReplaceAllString(string(b), "${1}DATE")
}

// mailstatRows runs procmail's mailstat on a copy of log (mailstat -k
// still rewrites nothing, but the copy keeps the test's log intact) and
// returns its per-folder rows and its total row.
func mailstatRows(t *testing.T, log []byte) (rows []string, total string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "log")
	if err := os.WriteFile(path, log, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runTool(dir, nil, nil, tool(t, "mailstat"), "-kl", path)
	if err != nil {
		t.Fatalf("mailstat: %v", err)
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	// A blank line, two heading lines, the rows, a rule, the totals.
	if len(lines) < 5 {
		t.Fatalf("mailstat printed %q", out)
	}
	return lines[3 : len(lines)-2], lines[len(lines)-1]
}

// checkMailstat checks that mailstat reads mfilter's log as one folder,
// named as mailstat names procmail's, with mfilter's byte and message
// counts; procmail's rows for its garbled Subject lines ("##") are the
// only rows mfilter's log must not have.
func checkMailstat(t *testing.T, pmLog, mfLog []byte, messages, mfBytes int) {
	t.Helper()
	pmRows, _ := mailstatRows(t, pmLog)
	mfRows, mfTotal := mailstatRows(t, mfLog)
	var pmFolders []string
	for _, r := range pmRows {
		if strings.Contains(r, " ## ") {
			continue
		}
		f := strings.Fields(r)
		pmFolders = append(pmFolders, f[len(f)-1])
	}
	if len(pmFolders) != 1 {
		t.Fatalf("mailstat on procmail's log: want one folder, got rows %q", pmRows)
	}
	avg := 0
	if messages > 0 {
		avg = mfBytes / messages
	}
	want := fmt.Sprintf("%7d %7d %7d %s", mfBytes, avg, messages, pmFolders[0])
	if len(mfRows) != 1 || mfRows[0] != want {
		t.Errorf("mailstat on mfilter's log: got %d rows, want one; the first: %q; want %q (see TestMailstatMaildirNames)", len(mfRows), mfRows[:min(3, len(mfRows))], want)
	}
	if wantTotal := fmt.Sprintf("%7d %7d %7d", mfBytes, avg, messages); mfTotal != wantTotal {
		t.Errorf("mailstat total on mfilter's log: got %q, want %q", mfTotal, wantTotal)
	}
}
