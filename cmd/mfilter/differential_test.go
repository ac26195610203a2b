package main

// Differential tests against the real procmail 3.22 and formail: every
// message of the corpus is delivered by procmail -m and by mfilter
// deliver into the same kind of folder and the results are compared
// byte for byte; every mbox is split by formail -s procmail and by
// mfilter, likewise. Both tools log, and the logs must agree too.
//
// The deviations that mfilter makes on purpose are listed where they are
// allowed for, each with a focused test that shows what the real tool
// does (split_deviation_test.go and the deliver package's tests).

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// folderKind is one DEFAULT folder both tools deliver to; the name is
// relative to MAILDIR (procmail) and --maildir (mfilter), so that both
// log the same folder name.
type folderKind struct {
	name     string
	folder   string
	sender   string // -f SENDER for both tools, or ""
	berkeley bool   // -Y for both tools: ignore Content-Length
}

var deliverKinds = []folderKind{
	{name: "mbox", folder: "mbox"},
	{name: "mbox-f", folder: "mbox", sender: "bob@example.org"},
	{name: "mbox-Y", folder: "mbox", berkeley: true},
	{name: "maildir", folder: "md/"},
	{name: "mh", folder: "mh/."},
}

// folderState remembers what a folder held before a delivery, to find
// what the delivery added.
type folderState struct {
	kind  string // "mbox", "maildir" or "mh"
	path  string
	size  int64
	names map[string]bool
}

func newFolderState(t testing.TB, dir, folder string) *folderState {
	t.Helper()
	s := &folderState{names: make(map[string]bool)}
	switch {
	case strings.HasSuffix(folder, "/."):
		s.kind, s.path = "mh", filepath.Join(dir, strings.TrimSuffix(folder, "/."))
	case strings.HasSuffix(folder, "/"):
		s.kind, s.path = "maildir", filepath.Join(dir, folder, "new")
	default:
		s.kind, s.path = "mbox", filepath.Join(dir, folder)
	}
	// procmail dotlocks DEFAULT$LOCKEXT: "md/.lock", "mh/..lock". Their
	// directory must exist, or procmail retries the lock for a minute.
	if s.kind != "mbox" {
		if err := os.MkdirAll(filepath.Join(dir, strings.TrimSuffix(strings.TrimSuffix(folder, "."), "/")), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// delivery is what one delivery added to a folder.
type delivery struct {
	start, end int64  // mbox: the appended range
	name       string // maildir, MH: the new file
	data       []byte // maildir, MH: its content (mbox: see contents)
}

// added finds what the last delivery added: the range appended to an
// mbox, or the new file of a maildir or MH folder. An mbox is only
// stat'ed here: reading it would update its atime, and procmail's "NFS
// atime hack" then sleeps a second before every later delivery.
func (s *folderState) added(t testing.TB) delivery {
	t.Helper()
	if s.kind == "mbox" {
		st, err := os.Stat(s.path)
		if err != nil {
			t.Fatalf("stat mbox: %v", err)
		}
		if st.Size() < s.size {
			t.Fatalf("%s shrank from %d to %d bytes", s.path, s.size, st.Size())
		}
		d := delivery{start: s.size, end: st.Size()}
		s.size = st.Size()
		return d
	}
	ents, err := os.ReadDir(s.path)
	if err != nil {
		t.Fatalf("read folder: %v", err)
	}
	var fresh []string
	for _, e := range ents {
		if !s.names[e.Name()] && !strings.HasPrefix(e.Name(), ".") {
			fresh = append(fresh, e.Name())
		}
	}
	if len(fresh) != 1 {
		t.Fatalf("%s: want one new file, got %q", s.path, fresh)
	}
	s.names[fresh[0]] = true
	return delivery{name: fresh[0], data: readFile(t, filepath.Join(s.path, fresh[0]))}
}

// contents fills in the data of mbox deliveries, once all are made.
func (s *folderState) contents(t testing.TB, ds []delivery) {
	t.Helper()
	if s.kind != "mbox" {
		return
	}
	b := readFile(t, s.path)
	if int64(len(b)) != s.size {
		t.Fatalf("%s: %d bytes, deliveries account for %d", s.path, len(b), s.size)
	}
	for i := range ds {
		ds[i].data = b[ds[i].start:ds[i].end]
	}
}

func TestDeliverDifferential(t *testing.T) {
	msgs := corpusMessages(t)
	for _, k := range deliverKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			deliverDifferential(t, msgs, k)
		})
	}
}

// deliverDifferential delivers every message with procmail -m and with
// mfilter deliver, one process per message as an MTA would run them, all
// into one folder per tool (for an mbox, procmail's atime hack then
// sleeps only once), and compares what each delivery added.
func deliverDifferential(t *testing.T, msgs []corpusFile, k folderKind) {
	procmail := tool(t, "procmail")
	base := t.TempDir()
	pmDir, mfDir := filepath.Join(base, "procmail"), filepath.Join(base, "mfilter")
	for _, d := range []string{pmDir, mfDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	pmLogPath, mfLogPath := filepath.Join(base, "procmail.log"), filepath.Join(base, "mfilter.log")
	rc := writeRC(t, base, pmDir, k.folder, pmLogPath)
	pmState, mfState := newFolderState(t, pmDir, k.folder), newFolderState(t, mfDir, k.folder)

	pmArgs := []string{"-m", rc}
	mfArgs := []string{"deliver", "--maildir", mfDir, "--default", k.folder, "--log", mfLogPath}
	if k.sender != "" {
		pmArgs = append([]string{"-f", k.sender}, pmArgs...)
		mfArgs = append(mfArgs, "-f", k.sender)
	}
	if k.berkeley {
		pmArgs = append([]string{"-Y"}, pmArgs...)
		mfArgs = append(mfArgs, "-Y")
	}
	var pmDel, mfDel []delivery
	for _, m := range msgs {
		if _, err := runTool(pmDir, m.data, nil, procmail, pmArgs...); err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
		if _, err := runTool(mfDir, m.data, nil, mfilterBin, mfArgs...); err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
		pmDel, mfDel = append(pmDel, pmState.added(t)), append(mfDel, mfState.added(t))
	}
	pmState.contents(t, pmDel)
	mfState.contents(t, mfDel)

	var cases []logCase
	var generated, crAddr, mfTotal int
	for i, m := range msgs {
		pm, mf := pmDel[i].data, mfDel[i].data
		mfTotal += len(mf)
		c := logCase{name: m.name, pmMsg: m.data, mfMsg: m.data, pmWrote: len(pm), mfWrote: len(mf)}
		if k.kind() == "maildir" {
			c.pmFolder, c.mfFolder = k.folder+"new/"+pmDel[i].name, k.folder+"new/"+mfDel[i].name
		}
		if k.sender != "" {
			// Both replaced the From_ line; each logs its own.
			c.pmMsg, c.mfMsg = withFromLine(m.data, firstLine(pm)), withFromLine(m.data, firstLine(mf))
		}
		cases = append(cases, c)

		switch {
		case bytes.Equal(pm, mf):
		case k.kind() == "mbox" && k.sender != "" && sameButDate(pm, mf):
		case k.kind() == "mbox" && k.sender == "" && undatedFromReplaced(pm, mf):
			// Documented deviation: a From_ line without a date that
			// mbox readers accept is replaced by a generated one.
		case k.kind() == "mbox" && k.sender == "" && !bytes.HasPrefix(m.data, []byte("From ")):
			// Documented deviation: procmail -m without -f writes a
			// message without a From_ line as it is, which breaks the
			// mbox; mfilter adds the From_ line formail would generate.
			gen := firstLine(mf)
			if !bytes.Equal(mf[len(gen):], pm) {
				t.Errorf("%s: mfilter's mbox message is not procmail's with a From_ line added: %s", m.name, firstDiff(pm, mf[len(gen):]))
				continue
			}
			generated++
			want := formailFromLine(t, m.data)
			if sameButDate(want, gen) {
				continue
			}
			// Documented deviation (TestSplitDeviations/crlf): the CR of
			// a CRLF line end is not part of the address.
			if sameButDate(bytes.Replace(want, []byte("\r"), nil, 1), gen) {
				crAddr++
				continue
			}
			t.Errorf("%s: generated From_ line %q, formail generates %q", m.name, gen, want)
		default:
			t.Errorf("%s: %s differs: %s", m.name, k.kind(), firstDiff(pm, mf))
		}
	}
	pmLog, mfLog := readFile(t, pmLogPath), readFile(t, mfLogPath)
	bugs := compareLogs(t, pmLog, mfLog, cases)
	checkMailstat(t, pmLog, mfLog, len(msgs), mfTotal)
	t.Logf("%d messages into %s (%s) compared; documented deviations: %d generated From_ lines (%d with a CRLF address), %d log entries with procmail's Subject bug",
		len(msgs), k.folder, k.name, generated, crAddr, bugs)
}

func (k folderKind) kind() string {
	switch {
	case strings.HasSuffix(k.folder, "/."):
		return "mh"
	case strings.HasSuffix(k.folder, "/"):
		return "maildir"
	}
	return "mbox"
}

// formailFromLine is the From_ line formail (without -s) puts on msg.
func formailFromLine(t testing.TB, msg []byte) []byte {
	t.Helper()
	out, err := runTool(t.TempDir(), msg, nil, tool(t, "formail"))
	if err != nil {
		t.Fatalf("formail: %v", err)
	}
	return firstLine(out)
}

// firstLine returns b's first line with its newline.
func firstLine(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i+1]
	}
	return b
}

// withFromLine is msg with its From_ line (if any) replaced by from, as
// procmail -f does it (leading newlines dropped too).
func withFromLine(msg, from []byte) []byte {
	msg = bytes.TrimLeft(msg, "\n")
	if bytes.HasPrefix(msg, []byte("From ")) {
		msg = msg[len(firstLine(msg)):]
	}
	return slices.Concat(from, msg)
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
