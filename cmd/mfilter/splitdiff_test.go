package main

// The split differential: formail -s (procmail) against mfilter's
// Splitter and mfilter < mbox.
//
// Where the Splitter deviates from formail on purpose (the list is in
// the Splitter's doc comment, each deviation has its own test in
// split_deviation_test.go), the comparison edits the input at exactly
// the places the deviation applies so that formail decides as the
// Splitter does, makes the same edit to the Splitter's messages, and
// then requires formail's messages and the Splitter's to be identical.
// An edit is only made where the Splitter's decision is explained by a
// documented deviation; any other difference fails the test.

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/mailfmt"
)

// Names of the deviations, as counted in the test logs.
const (
	devCtime          = "ctime From_ line without a blank line before it"
	devOneWord        = "one-word postmark"
	devUnknownHdr     = "header formail does not know after a From_ line"
	devCLIgnored      = "Content-Length not ending at a message boundary"
	devCRLF           = "CRLF line ends"
	devBareCR         = "bare CR line ends"
	devBOM            = "UTF-8 byte order mark"
	devCLNoBlank      = "split right after a Content-Length body"
	devCLCRLFValue    = "Content-Length counted over CRLF"
	devBlankColon     = "blanks before a header field's colon"
	devFromEndsHeader = "From line ending a header"
	devUndated        = "From_ line without a date"
)

// splitMsg is one message of the Splitter and where it came from.
type splitMsg struct {
	data       []byte
	start, end int64
}

// splitterNow is the clock for in-process splitting; generated dates
// are compared without their date anyway.
func splitterNow() time.Time { return time.Date(2001, 9, 9, 1, 46, 40, 0, time.UTC) }

func splitterSplit(t testing.TB, input []byte, berkeley bool) []splitMsg {
	t.Helper()
	s := mailfmt.NewSplitter(bytes.NewReader(input), mailfmt.SplitOptions{Now: splitterNow, Berkeley: berkeley})
	var out []splitMsg
	for {
		m, err := s.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("Splitter: %v", err)
		}
		a, b := s.Offsets()
		out = append(out, splitMsg{m, a, b})
	}
}

// edit is a change at one offset: delete del bytes, insert ins.
type edit struct {
	at  int
	del int
	ins []byte
}

// applyEdits applies edits (at distinct, non-overlapping offsets).
func applyEdits(b []byte, edits []edit) []byte {
	sort.SliceStable(edits, func(i, j int) bool { return edits[i].at < edits[j].at })
	var out []byte
	last := 0
	for _, e := range edits {
		out = append(out, b[last:e.at]...)
		out = append(out, e.ins...)
		last = e.at + e.del
	}
	return append(out, b[last:]...)
}

// lineAt returns the line starting at off (with its line end).
func lineAt(b []byte, off int) []byte {
	if i := bytes.IndexByte(b[off:], '\n'); i >= 0 {
		return b[off : off+i+1]
	}
	return b[off:]
}

// lineBefore returns the line that ends at off.
func lineBefore(b []byte, off int) []byte {
	if off == 0 {
		return nil
	}
	i := bytes.LastIndexByte(b[:off-1], '\n')
	return b[i+1 : off]
}

func isBlankLine(l []byte) bool { return string(l) == "\n" || string(l) == "\r\n" }

// eolOf is the line end of l.
func eolOf(l []byte) []byte {
	if bytes.HasSuffix(l, []byte("\r\n")) {
		return []byte("\r\n")
	}
	return []byte("\n")
}

// formailPostmark is formail's test for a From_ line that may start a
// message (formail.c): "From ", blanks, a word up to a blank or newline,
// blanks, and then not the end of the line.
func formailPostmark(line []byte) bool {
	// A C string: a NUL ends it (and is not a newline).
	p, nul := line[len("From "):], false
	if i := bytes.IndexByte(p, 0); i >= 0 {
		p, nul = p[:i], true
	}
	p = bytes.TrimLeft(p, " \t")
	k := bytes.IndexAny(p, " \t\n")
	if k < 0 {
		k = len(p)
	}
	if k == 0 {
		return false
	}
	p = bytes.TrimLeft(p[k:], " \t")
	if len(p) == 0 {
		return nul
	}
	return p[0] != '\n'
}

// ctimeFrom matches a From_ line with a ctime(3) date after the address,
// as the Splitter's deviation for a missing blank line requires.
var ctimeFrom = regexp.MustCompile(`^From \S+\s+(Mon|Tue|Wed|Thu|Fri|Sat|Sun)\s+(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s+\d{1,2}\s+\d{1,2}:\d\d(:\d\d)?\s`)

// isFromLine reports whether b starts with a From_ line, as formail
// reads one: "From :" is a From: field with a blank before its colon.
func isFromLine(b []byte) bool {
	return bytes.HasPrefix(b, []byte("From ")) && !fieldName.Match(lineAt(b, 0))
}

// fieldName matches the name of a header field as formail reads one:
// no control characters, blanks allowed only before the colon.
var fieldName = regexp.MustCompile(`^([^\x00-\x20\x7f:]+)[ \t]*:`)

var (
	knownMu     sync.Mutex
	knownHeader = map[string]bool{}
)

// formailKnows asks formail whether it accepts a field named name
// (without the colon) as the line after a postmark: it splits a
// two-message mbox in two only then.
func formailKnows(t testing.TB, name string) bool {
	t.Helper()
	key := strings.ToLower(name)
	knownMu.Lock()
	defer knownMu.Unlock()
	if v, ok := knownHeader[key]; ok {
		return v
	}
	m := "From a@b Mon Jan  1 00:00:00 2001\n" + name + ": x\n\nbody\n\n"
	v := len(formailSplit(t, []byte(m+m))) == 2
	knownHeader[key] = v
	return v
}

// headerEnd returns the offset where the body of msg starts (after the
// blank line, or at the first line that is not a header field) and the
// offset and name length of its first Content-Length field (-1 if none).
func headerEnd(msg []byte) (body, clAt, clName int) {
	body, clAt, clName, _ = parseHeader(msg)
	return
}

// parseHeader is headerEnd that also returns the blanks before a
// field's colon, which formail deletes, as edits.
func parseHeader(msg []byte) (body, clAt, clName int, blanks []edit) {
	clAt = -1
	p := 0
	if isFromLine(msg) {
		p = len(lineAt(msg, 0))
		for p < len(msg) && msg[p] == '>' {
			p += len(lineAt(msg, p))
		}
	}
	for p < len(msg) {
		l := lineAt(msg, p)
		if isBlankLine(l) {
			return p + len(l), clAt, clName, blanks
		}
		m := fieldName.FindSubmatchIndex(l)
		if m == nil {
			return p, clAt, clName, blanks
		}
		if m[1]-1 > m[3] {
			blanks = append(blanks, edit{at: p + m[3], del: m[1] - 1 - m[3]})
		}
		if clAt < 0 && strings.EqualFold(string(l[:m[3]]), "content-length") {
			clAt, clName = p, m[1]
		}
		p += len(l)
		for p < len(msg) && (msg[p] == ' ' || msg[p] == '\t') {
			p += len(lineAt(msg, p))
		}
	}
	return p, clAt, clName, blanks
}

// contentLength parses a Content-Length value as formail does (strtol).
func contentLength(v []byte) int64 {
	v = bytes.TrimLeft(v, " \t\n\v\f\r")
	v = bytes.TrimPrefix(v, []byte("+"))
	end := 0
	for end < len(v) && v[end] >= '0' && v[end] <= '9' {
		end++
	}
	n, err := strconv.ParseInt(string(v[:end]), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// clHonoured applies the Splitter's documented rule to one of its
// chunks: a Content-Length is trusted only when its body ends where the
// next message (or the input) begins, give or take blank lines and one
// line end left out of the count.
func clHonoured(chunk []byte, body int, n int64) bool {
	rest := int64(len(chunk) - body)
	if n <= 0 || n > rest {
		return false
	}
	after := chunk[int64(body)+n:]
	if len(bytes.Trim(after, "\r\n")) != 0 {
		return false
	}
	return len(after) > 0 || chunk[int64(body)+n-1] == '\n'
}

// splitComparison is the outcome of comparing one input.
type splitComparison struct {
	splitter   []splitMsg
	formail    [][]byte
	deviations map[string]int
}

// compareSplit compares formail -s and the Splitter on input, allowing
// for the documented deviations as described at the top of this file.
func compareSplit(t *testing.T, name string, input []byte) splitComparison {
	t.Helper()
	S := splitterSplit(t, input, false)
	res := splitComparison{splitter: S, deviations: map[string]int{}}
	dev := func(d string) { res.deviations[d]++ }
	var tEdits []edit                // edits to the input
	uEdits := make([][]edit, len(S)) // edits to each Splitter message

	crlf := bytes.Contains(input, []byte("\r\n"))
	bareCR := !bytes.Contains(input[:min(len(input), 64<<10)], []byte("\n")) && bytes.Contains(input, []byte("\r"))
	if bareCR {
		// The rest of the analysis reads LF lines; the Splitter converts
		// a bare-CR input to LF, and formail is shown the same.
		input = bytes.ReplaceAll(input, []byte("\r"), []byte("\n"))
		crlf = false
		dev(devBareCR)
	}

	for i, m := range S {
		chunk := input[m.start:m.end]
		// The Splitter's message is the chunk with a From_ line put in
		// front when it had none: map chunk offsets into the message.
		shift := 0
		if !isFromLine(chunk) {
			shift = len(firstLine(m.data))
		}
		if i == 0 && m.start > 0 {
			pre := input[:m.start]
			if bytes.HasPrefix(pre, []byte("\xef\xbb\xbf")) {
				tEdits = append(tEdits, edit{at: 0, del: 3})
				dev(devBOM)
				pre = pre[3:]
			}
			if len(bytes.Trim(pre, "\r\n")) != 0 {
				t.Errorf("%s: the first message starts after %q", name, pre)
			}
		}
		if i > 0 {
			off := int(m.start)
			from := lineAt(input, off)
			if !bytes.HasPrefix(from, []byte("From ")) {
				t.Errorf("%s: message %d starts with %q, not a From_ line", name, i, from)
				continue
			}
			prevCL := false
			pc := input[S[i-1].start:S[i-1].end]
			if body, clAt, clName := headerEnd(pc); clAt >= 0 {
				prevCL = clHonoured(pc, body, contentLength(lineAt(pc, clAt)[clName:]))
			}
			if !isBlankLine(lineBefore(input, off)) {
				switch {
				case prevCL:
					dev(devCLNoBlank)
				case ctimeFrom.Match(from):
					dev(devCtime)
				default:
					t.Errorf("%s: message %d split without a blank line before %q", name, i, from)
				}
				// formail needs the blank line; the Splitter ends the
				// previous message with one anyway.
				tEdits = append(tEdits, edit{at: off, ins: eolOf(from)})
			}
			if !formailPostmark(from) {
				dev(devOneWord)
				at := len(from) - len(eolOf(from))
				tEdits = append(tEdits, edit{at: off + at, ins: []byte(" mfilter-test")})
				uEdits[i] = append(uEdits[i], edit{at: at, ins: []byte(" mfilter-test")})
			}
			q := len(from)
			for off+q < len(input) && input[off+q] == '>' {
				q += len(lineAt(input, off+q))
			}
			next := lineAt(input, off+q)
			fm := fieldName.FindSubmatch(next)
			switch {
			case fm == nil:
				t.Errorf("%s: message %d split before %q, which is not a header field", name, i, next)
			case !formailKnows(t, string(fm[1])):
				dev(devUnknownHdr)
				tEdits = append(tEdits, edit{at: off + q, ins: []byte("X-")})
				uEdits[i] = append(uEdits[i], edit{at: q, ins: []byte("X-")})
			}
		}
		body, clAt, clName, blanks := parseHeader(chunk)
		if body > 0 && body < len(chunk) && bytes.HasPrefix(chunk[body:], []byte("From ")) && !isBlankLine(lineBefore(chunk, body)) {
			// A From line ends the header. formail then tests a stale
			// pointer to decide whether to escape it; a line with no
			// colon before it makes formail decide on the From line
			// itself (and escape it, as the Splitter does).
			dev(devFromEndsHeader)
			// The Splitter ends the header with the line end of the
			// message's first line; the X line goes after it.
			eol := eolOf(lineAt(chunk, 0))
			x := append([]byte("X"), eol...)
			tEdits = append(tEdits, edit{at: int(m.start) + body, ins: x})
			uEdits[i] = append(uEdits[i], edit{at: shift + body + len(eol), ins: x})
		}
		for _, e := range blanks {
			dev(devBlankColon)
			tEdits = append(tEdits, edit{at: int(m.start) + e.at, del: e.del})
			uEdits[i] = append(uEdits[i], edit{at: shift + e.at, del: e.del})
		}
		// Content-Length: formail trusts any; the Splitter only one that
		// ends at a message boundary. Where it did not, neither may
		// formail: the field is renamed in both.
		if clAt >= 0 {
			line := lineAt(chunk, clAt)
			n := contentLength(line[clName:])
			switch {
			case n <= 0:
			case !clHonoured(chunk, body, n):
				dev(devCLIgnored)
				tEdits = append(tEdits, edit{at: int(m.start) + clAt, del: 1, ins: []byte("X")})
				uEdits[i] = append(uEdits[i], edit{at: shift + clAt, del: 1, ins: []byte("X")})
			case crlf:
				// Honoured over CRLF bytes; formail counts the LF-only
				// text it is shown, so the number must be too.
				counted := chunk[body : int64(body)+n]
				lf := n - int64(bytes.Count(counted, []byte("\r\n")))
				if bytes.HasSuffix(counted, []byte("\r")) && int64(body)+n < int64(len(chunk)) && chunk[int64(body)+n] == '\n' {
					lf--
				}
				if lf != n {
					dev(devCLCRLFValue)
					v := line[clName:]
					digits := bytes.IndexAny(v, "0123456789")
					num := []byte(strconv.FormatInt(n, 10))
					at := clAt + clName + digits
					repl := []byte(strconv.FormatInt(lf, 10))
					tEdits = append(tEdits, edit{at: int(m.start) + at, del: len(num), ins: repl})
					uEdits[i] = append(uEdits[i], edit{at: shift + at, del: len(num), ins: repl})
				}
			}
		}
		// A From line after a blank line that formail would split at (a
		// postmark to it, a field it knows after it) but the Splitter
		// did not, having found no date in it: shown to formail, and
		// in the Splitter's message, with a '>' so that formail keeps
		// it in the body too. Content-Length bodies are split by
		// neither.
		skipFrom, skipTo := -1, -1
		if clAt >= 0 {
			if n := contentLength(lineAt(chunk, clAt)[clName:]); n > 0 && clHonoured(chunk, body, n) {
				skipFrom, skipTo = body, body+int(n)
			}
		}
		for p := body; p < len(chunk); p += len(lineAt(chunk, p)) {
			if p >= skipFrom && p < skipTo || !bytes.HasPrefix(chunk[p:], []byte("From ")) ||
				!isBlankLine(lineBefore(chunk, p)) || !formailPostmark(lineAt(chunk, p)) {
				continue
			}
			q := p + len(lineAt(chunk, p))
			for q < len(chunk) && chunk[q] == '>' {
				q += len(lineAt(chunk, q))
			}
			fm := fieldName.FindSubmatch(lineAt(chunk, q))
			if q >= len(chunk) || fm == nil || !formailKnows(t, string(fm[1])) {
				continue
			}
			if ctimeFrom.Match(lineAt(chunk, p)) {
				t.Errorf("%s: message %d: no split before the dated %q", name, i, lineAt(chunk, p))
				continue
			}
			dev(devUndated)
			tEdits = append(tEdits, edit{at: int(m.start) + p, ins: []byte(">")})
			uEdits[i] = append(uEdits[i], edit{at: shift + p, ins: []byte(">")})
		}
		// CRLF: a pure-CRLF chunk must give a pure-CRLF message (the
		// lines the Splitter adds end in CRLF too).
		if n := bytes.Count(chunk, []byte("\r\n")); n > 0 && bytes.Count(chunk, []byte("\n")) == n &&
			bytes.Count(m.data, []byte("\n")) != bytes.Count(m.data, []byte("\r\n")) {
			t.Errorf("%s: message %d: a CRLF message came out with bare LF line ends", name, i)
		}
	}

	tin := applyEdits(input, tEdits)
	var want [][]byte
	for i, m := range S {
		u := applyEdits(m.data, uEdits[i])
		if crlf {
			u = bytes.ReplaceAll(u, []byte("\r\n"), []byte("\n"))
		}
		want = append(want, u)
	}
	if crlf {
		tin = bytes.ReplaceAll(tin, []byte("\r\n"), []byte("\n"))
		dev(devCRLF)
	}
	F := formailSplit(t, tin)
	res.formail = F
	if len(F) != len(want) {
		t.Errorf("%s: formail split into %d messages, the Splitter into %d", name, len(F), len(want))
		for i := range min(len(F), len(want)) {
			if !sameButDate(F[i], want[i]) {
				t.Errorf("%s: first different message is #%d: %s", name, i, firstDiff(dateless(F[i]), dateless(want[i])))
				break
			}
		}
		return res
	}
	for i := range F {
		if !sameButDate(F[i], want[i]) {
			t.Errorf("%s: message %d: %s", name, i, firstDiff(dateless(F[i]), dateless(want[i])))
		}
	}
	return res
}

// summary formats a deviation count map for the test log.
func summary(devs map[string]int) string {
	if len(devs) == 0 {
		return "no deviations"
	}
	var parts []string
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range devs {
			if !yield(k) {
				return
			}
		}
	}) {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, devs[k]))
	}
	return strings.Join(parts, ", ")
}

// TestSplitterMatchesFormail compares the Splitter with formail -s on
// every mbox of the corpus, and on every single message (a one-message
// mbox, which exercises the generated From_ line on all of them).
func TestSplitterMatchesFormail(t *testing.T) {
	tool(t, "formail")
	for _, set := range []struct {
		name  string
		files []corpusFile
	}{{"mbox", corpusMboxes(t)}, {"message", corpusMessages(t)}} {
		t.Run(set.name, func(t *testing.T) {
			t.Parallel()
			total := map[string]int{}
			same, msgs := 0, 0
			for _, f := range set.files {
				r := compareSplit(t, f.name, f.data)
				msgs += len(r.splitter)
				if len(r.deviations) == 0 {
					same++
				}
				for k, v := range r.deviations {
					total[k] += v
				}
				if set.name == "mbox" {
					t.Logf("%s: %d messages, %s", f.name, len(r.splitter), summary(r.deviations))
				}
			}
			t.Logf("%d inputs, %d messages; %d inputs identical to formail without any deviation; deviations: %s", len(set.files), msgs, same, summary(total))
		})
	}
}

// TestSplitDifferential files every mbox of the corpus with mfilter and
// with formail -s procmail, into an mbox, a maildir and an MH folder, and
// compares the folders and the logs message by message. For an mbox on
// which the Splitter deviates from formail (TestSplitterMatchesFormail
// shows each deviation is a documented one), procmail -m gets the
// Splitter's messages one by one instead: mfilter must then file
// exactly what procmail files for the messages formail would have handed
// it, had formail split as the Splitter does.
func TestSplitDifferential(t *testing.T) {
	mboxes := corpusMboxes(t)
	for _, k := range []folderKind{
		{name: "mbox", folder: "mbox"},
		{name: "mbox-Y", folder: "mbox", berkeley: true},
		{name: "maildir", folder: "md/"},
		{name: "mh", folder: "mh/."},
	} {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			splitDifferential(t, mboxes, k)
		})
	}
}

func splitDifferential(t *testing.T, mboxes []corpusFile, k folderKind) {
	procmail, formail := tool(t, "procmail"), tool(t, "formail")
	base := t.TempDir()
	pmDir, mfDir := filepath.Join(base, "procmail"), filepath.Join(base, "mfilter")
	for _, d := range []string{pmDir, mfDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	pmLogPath, mfLogPath := filepath.Join(base, "procmail.log"), filepath.Join(base, "mfilter.log")
	rc := writeRC(t, base, pmDir, k.folder, pmLogPath)
	newFolderState(t, pmDir, k.folder)
	newFolderState(t, mfDir, k.folder)

	type fed struct {
		name   string
		pmMsgs [][]byte // what procmail was given, message by message
		mfMsgs [][]byte // what mfilter's Splitter gives
	}
	var runs []fed
	direct, perMessage := 0, 0
	var yArg, mfArgs []string
	if k.berkeley {
		yArg = []string{"-Y"}
	}
	mfArgs = append(append(mfArgs, yArg...), "--maildir", mfDir, "--default", k.folder, "--log", mfLogPath)
	pmArgs := append(append([]string(nil), yArg...), "-m", rc)
	for _, f := range mboxes {
		S := splitterSplit(t, f.data, k.berkeley)
		var mf [][]byte
		for _, m := range S {
			mf = append(mf, m.data)
		}
		F := formailSplit(t, f.data, yArg...)
		same := len(F) == len(S)
		for i := 0; same && i < len(F); i++ {
			same = sameButDate(F[i], S[i].data)
		}
		if same {
			// No deviation: the real pipeline, formail -s procmail.
			direct++
			if _, err := runTool(pmDir, f.data, nil, formail, append(append(append([]string(nil), yArg...), "-s", procmail), pmArgs...)...); err != nil {
				t.Fatalf("%s: %v", f.name, err)
			}
			runs = append(runs, fed{f.name, F, mf})
		} else {
			perMessage++
			for _, m := range mf {
				if _, err := runTool(pmDir, m, nil, procmail, pmArgs...); err != nil {
					t.Fatalf("%s: %v", f.name, err)
				}
			}
			runs = append(runs, fed{f.name, mf, mf})
		}
		if err := runMfilterOn(t, mfDir, f.data, k.folder != "mbox" || k.berkeley, mfArgs); err != nil {
			t.Fatalf("%s: mfilter: %v", f.name, err)
		}
	}

	pmLog, mfLog := readFile(t, pmLogPath), readFile(t, mfLogPath)
	pmEntries, mfEntries := parseLog(t, pmLog), parseLog(t, mfLog)
	pmDel := loggedDeliveries(t, pmDir, k, pmEntries)
	mfDel := loggedDeliveries(t, mfDir, k, mfEntries)
	var cases []logCase
	n, mfTotal, replaced := 0, 0, 0
	for _, r := range runs {
		for i := range r.mfMsgs {
			if n >= len(pmDel) || n >= len(mfDel) {
				t.Fatalf("%s: procmail delivered %d messages, mfilter %d, expected more", r.name, len(pmDel), len(mfDel))
			}
			pm, mf := pmDel[n], mfDel[n]
			n++
			mfTotal += len(mf.data)
			name := fmt.Sprintf("%s #%d", r.name, i)
			c := logCase{name: name, pmMsg: r.pmMsgs[i], mfMsg: r.mfMsgs[i], pmWrote: len(pm.data), mfWrote: len(mf.data)}
			switch {
			case sameButDate(pm.data, mf.data):
			case k.kind() == "mbox" && undatedFromReplaced(pm.data, mf.data):
				// The log shows the message's own From_ line, as
				// procmail's does.
				replaced++
			default:
				t.Errorf("%s: %s differs: %s", name, k.kind(), firstDiff(pm.data, mf.data))
			}
			if k.kind() == "maildir" {
				c.pmFolder, c.mfFolder = k.folder+"new/"+pm.name, k.folder+"new/"+mf.name
			}
			cases = append(cases, c)
		}
	}
	if n != len(pmDel) || n != len(mfDel) {
		t.Fatalf("procmail delivered %d messages, mfilter %d, the Splitter gave %d", len(pmDel), len(mfDel), n)
	}
	compareLogs(t, pmLog, mfLog, cases)
	checkMailstat(t, pmLog, mfLog, n, mfTotal)
	t.Logf("%d mboxes, %d messages into %s (%s): %d compared with formail -s procmail, %d (with documented deviations) with procmail -m message by message; %d From_ lines without a date replaced",
		len(mboxes), n, k.folder, k.name, direct, perMessage, replaced)
}

// undatedFromReplaced reports whether mf, what mfilter wrote to an mbox,
// is pm, what procmail wrote, with the documented deviation: pm's From_
// line has no date that mbox readers accept (mailfmt.ReadablePostmark),
// and mfilter wrote a generated From_ line in its place.
func undatedFromReplaced(pm, mf []byte) bool {
	pf, mfl := firstLine(pm), firstLine(mf)
	return isFromLine(pm) && !mailfmt.ReadablePostmark(pf) &&
		generatedFrom.Match(mf) && mailfmt.ReadablePostmark(mfl) &&
		bytes.Equal(pm[len(pf):], mf[len(mfl):])
}

// runMfilterOn runs mfilter in dir on the mbox data: from a regular
// file when fromFile is set (mfilter < mbox, which maps the file), else
// through a pipe.
func runMfilterOn(t *testing.T, dir string, data []byte, fromFile bool, args []string) error {
	if !fromFile {
		_, err := runTool(dir, data, nil, mfilterBin, args...)
		return err
	}
	path := filepath.Join(t.TempDir(), "in.mbox")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return err
	}
	in, err := os.Open(path)
	if err != nil {
		return err
	}
	defer in.Close()
	cmd := exec.Command(mfilterBin, args...)
	cmd.Dir = dir
	cmd.Stdin = in // the file itself, not a pipe
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

// loggedDeliveries reads what each logged delivery wrote, in log order:
// mbox ranges by the logged sizes (which must add up to the file), and
// the maildir or MH file each entry names.
func loggedDeliveries(t *testing.T, dir string, k folderKind, entries []logEntry) []delivery {
	t.Helper()
	var out []delivery
	switch k.kind() {
	case "mbox":
		b := readFile(t, filepath.Join(dir, k.folder))
		off := 0
		for _, e := range entries {
			if off+e.size > len(b) {
				t.Fatalf("%s: logged sizes exceed its %d bytes", k.folder, len(b))
			}
			out = append(out, delivery{data: b[off : off+e.size]})
			off += e.size
		}
		if off != len(b) {
			t.Fatalf("%s: logged sizes add up to %d, the file has %d bytes", k.folder, off, len(b))
		}
	default:
		sub := strings.TrimSuffix(strings.TrimSuffix(k.folder, "."), "/")
		if k.kind() == "maildir" {
			sub += "/new"
		}
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			// The log shows the file's path, cut to 60 bytes.
			var match []string
			for _, f := range ents {
				// (a maildir file by its unique part, without ",S=").
				if p := sub + "/" + f.Name(); cut(p) == e.folder || cut(deliver.MaildirUnique(p)) == e.folder {
					match = append(match, f.Name())
				}
			}
			if len(match) != 1 {
				t.Fatalf("log entry %q matches files %q", e.folder, match)
			}
			out = append(out, delivery{name: match[0], data: readFile(t, filepath.Join(dir, sub, match[0]))})
		}
		if len(out) != len(ents) {
			t.Fatalf("%s: %d files, %d log entries", sub, len(ents), len(out))
		}
	}
	return out
}

// TestSplitterMatchesFormailEdgeCases runs the comparison above on inputs
// that a fuzzer (compareSplit on random input, against the real formail)
// found to differ; each one led to a fix in the Splitter or in this
// comparison.
func TestSplitterMatchesFormailEdgeCases(t *testing.T) {
	tool(t, "formail")
	for _, in := range []string{
		"From :0",                             // a From: field with a blank before the colon, not a From_ line
		"0000000\n\nFrom \x00\n0:",            // no word after "From ": not a separator
		"0\n\nFrom 0\x00",                     // formail's postmark test stops at the NUL
		"Content-Length:5\n0000\nFrom ",       // a Content-Length ending at a From line that separates nothing
		"Content-Length:5\nFrom \nFrom ",      // the same, with a From line ending the header
		"00000000000000:\nFrom ",              // a From line ending a header
		"0000000:00000000000000\r\nFrom ",     // the same in CRLF
		"From:0000000000[00000000 00",         // a blank inside a generated address
		"\n\r",                                // a last line holding only a CR
		"\r\n0",                               // a CRLF blank line before an LF message
		"\r",                                  // a bare-CR input holding only a line end
		"00000000YYYY0M0000000",               // garbage without a line end
		"From a b\n>x\n\nFrom c d\n>y\nTo: z", // '>' lines after a postmark, then a header
	} {
		compareSplit(t, fmt.Sprintf("%q", in), []byte(in))
	}
}
