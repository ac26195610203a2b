package mailfmt

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// splitNow is the Splitter's clock in these tests.
var splitNow = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

func split(t *testing.T, input string, opts SplitOptions) []string {
	t.Helper()
	opts.Now = func() time.Time { return splitNow }
	var out []string
	for _, m := range splitAll(t, []byte(input), opts) {
		out = append(out, string(m))
	}
	return out
}

// formailSplit runs the real formail -s and returns the messages it hands
// to its children (what procmail would get).
func formailSplit(t *testing.T, input string, args ...string) []string {
	t.Helper()
	formail, err := exec.LookPath("formail")
	if err != nil {
		t.Fatalf("formail is required (test.sh installs it): %v", err)
	}
	dir := t.TempDir()
	cmd := exec.Command(formail, append(args, "-s", "sh", "-c", `cat > "$0/$FILENO"`, dir)...)
	cmd.Stdin = strings.NewReader(input)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("formail: %v: %s", err, out)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(ents, func(i, j int) bool {
		a, _ := strconv.Atoi(ents[i].Name())
		b, _ := strconv.Atoi(ents[j].Name())
		return a < b
	})
	var msgs []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, string(b))
	}
	return msgs
}

// ctimeDate is the date formail and the Splitter put in a generated
// From_ line; the two clocks differ, so tests compare without it.
var ctimeDate = regexp.MustCompile(`(?m)^(From \S*  )[A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9][0-9] [0-9:]{8} [0-9]{4}`)

func undated(msgs []string) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = ctimeDate.ReplaceAllString(m, "${1}DATE")
	}
	return out
}

func equalMsgs(a, b []string) bool {
	a, b = undated(a), undated(b)
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestSplitterAgreesWithFormail: on inputs that are no deviation, the
// Splitter hands out exactly the messages formail -s does.
func TestSplitterAgreesWithFormail(t *testing.T) {
	const (
		pm1 = "From alice@example.com Mon Jan  1 00:00:00 2024\n"
		pm2 = "From bob@example.org Tue Jan  2 00:00:00 2024\n"
	)
	for _, c := range []struct{ name, input string }{
		{"two messages", pm1 + "Subject: one\n\nbody 1\n\n" + pm2 + "Subject: two\n\nbody 2\n"},
		{"leading blank lines", "\n\n\n" + pm1 + "Subject: one\n\nbody\n"},
		{"no From_ line: formail makes one", "From: Carol <carol@example.net>\nSubject: s\n\nbody\n"},
		{"Sender beats From, Reply-To loses", "Reply-To: r@example.com\nFrom: f@example.com\nSender: s@example.com\n\nb\n"},
		{"Return-Path <> is the null sender", "Return-Path: <>\nFrom: f@example.com\n\nb\n"},
		{"no sender at all: foo@bar", "Subject: nobody\n\nb\n"},
		{"garbage before the first From_ is a message", "garbage line\n\n" + pm1 + "Subject: s\n\nb\n"},
		{"unterminated header gets a blank line", pm1 + "Subject: s"},
		{"header ended by a non-field line", pm1 + "Subject: s\nnot a field\nmore\n"},
		{"body From lines escaped", pm1 + "Subject: s\n\ntext\nFrom here on\n\nFrom x\n>From quoted\n"},
		{"postmark after blank line but no header is left alone", pm1 + "Subject: s\n\ntext\n\nFrom a b c\nnot a header\n"},
		{"undated From line before a field formail does not know is body", pm1 + "Subject: s\n\nmovie:\n\nFrom Russia with love\nYear: 1963\n\nmore\n"},
		{"one-word From line in the body is escaped", pm1 + "Subject: s\n\ntext\n\nFrom word\nnot a header\n"},
		{"From line without a blank line before it is escaped", pm1 + "Subject: s\n\ntext\nFrom a@b c\nSubject: x\n"},
		{">From continuation after the From_ line", pm1 + ">From relay@example.com Sun Dec 31 00:00:00 2023\nSubject: s\n\nb\n"},
		{">quoted lines after a postmark, then a header: a split", pm1 + "Subject: s\n\ntext\n\n" + pm2 + ">quoted\nSubject: t\n\nb\n"},
		{">quoted lines after a postmark, then no header: no split", pm1 + "Subject: s\n\ntext\n\n" + pm2 + ">quoted\n\nb\n"},
		{"two postmarks in a row", pm1 + "Subject: s\n\ntext\n\nFrom a b\nFrom c d\nSubject: x\n"},
		{"From line right after a header", pm1 + "Subject: s\n" + "From a b\nSubject: t\n\nb\n"},
		{"From line right after a header, no header after it", pm1 + "Subject: s\n" + "From a b\n\nb\n"},
		{"message ending without newline", pm1 + "Subject: s\n\nlast"},
		{"message ending in one newline", pm1 + "Subject: s\n\nlast\n"},
		{"message ending in blank lines", pm1 + "Subject: s\n\nlast\n\n\n\n"},
		{"header only", pm1 + "Subject: s\n"},
		{"continuation lines", pm1 + "Subject: a\n  b\n\tc\nX: y\n\nbody\n"},
		{"valid Content-Length keeps From lines", pm1 + "Content-Length: 20\n\nFrom inside\nsecond\n\n" + pm2 + "Subject: s\n\nb\n"},
		{"Content-Length without the final newline", pm1 + "Content-Length: 19\n\nFrom inside\nsecond\n\n" + pm2 + "Subject: s\n\nb\n"},
		{"Content-Length of the last message", pm1 + "X: 1\n\n" + pm2 + "Content-Length: 12\n\nFrom inside\n"},
		{"Content-Length 0", pm1 + "Content-Length: 0\n\n\n" + pm2 + "Subject: s\n\nFrom b\n"},
		{"negative Content-Length", pm1 + "Content-Length: -5\n\nFrom x\n"},
		{"X- and Old- headers start a message", pm1 + "X-Foo: 1\n\nb\n\n" + pm2 + "Old-Subject: 2\n\nb\n\n" + pm1 + "x-lower: 3\n\nb\n"},
		{"8-bit bytes", pm1 + "Subject: caf\xe9\n\nK\xe4se\nFrom \xe4\n"},
		{"empty input", ""},
		{"only blank lines", "\n\n\n"},
		{"a single space", " "},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := formailSplit(t, c.input)
			got := split(t, c.input, SplitOptions{})
			if !equalMsgs(got, want) {
				t.Errorf("input %q\n\tformail  %q\n\tSplitter %q", c.input, want, got)
			}
		})
	}
}

// TestSplitDeviations shows each place where the Splitter deliberately
// splits differently from formail -s, listed in the Splitter's doc
// comment: the real formail's behaviour is checked first, then what the
// Splitter does instead and why.
func TestSplitDeviations(t *testing.T) {
	for _, c := range []struct {
		name  string
		input string
		// formail checks what the real formail does with input.
		formail func(msgs []string) error
		want    []string
	}{
		{
			// formail only splits before a header name it knows (a
			// built-in list, X- and Old-), and then does not even escape
			// the From_ line. Misspelt but valid fields are real.
			name:    "unknown header after the From_ line",
			input:   "From a@b Mon Jan  1 00:00:00 2001\nX-A: 1\n\nbody\n\nFrom c@d Tue Jan  2 00:00:00 2001\nRecieved: from x\n\nbody2\n",
			formail: count(1, "\nFrom c@d Tue Jan  2 00:00:00 2001\nRecieved"),
			want: []string{
				"From a@b Mon Jan  1 00:00:00 2001\nX-A: 1\n\nbody\n\n",
				"From c@d Tue Jan  2 00:00:00 2001\nRecieved: from x\n\nbody2\n\n",
			},
		},
		{
			// formail wants a word and something after it; Gmail
			// Takeout writes "From <id>@xxx" and nothing else.
			name:    "one-word postmark (Gmail Takeout)",
			input:   "From 1844347792267117879@xxx\nX-GM-THRID: 1\nSubject: a\n\nbody\n\nFrom 1844347792267117880@xxx\nX-GM-THRID: 2\nSubject: b\n\nbody\n",
			formail: count(1, "\n>From 1844347792267117880@xxx\n"),
			want: []string{
				"From 1844347792267117879@xxx\nX-GM-THRID: 1\nSubject: a\n\nbody\n\n",
				"From 1844347792267117880@xxx\nX-GM-THRID: 2\nSubject: b\n\nbody\n\n",
			},
		},
		{
			// formail splits at any "From word more" after a blank line
			// when a field it knows follows; mutt and Dovecot split only
			// at a line with a postmark's date (or, here, the one-word
			// forms above), so a body line "From Russia with love" stays
			// in the body, unescaped as formail leaves such a line.
			name:    "From_ line without a date",
			input:   "From a@b Mon Jan  1 00:00:00 2001\nSubject: a\n\nmovie:\n\nFrom Russia with love\nSubject: 1963\n\nmore\n",
			formail: count(2, "From Russia with love\nSubject: 1963\n"),
			want: []string{
				"From a@b Mon Jan  1 00:00:00 2001\nSubject: a\n\nmovie:\n\nFrom Russia with love\nSubject: 1963\n\nmore\n\n",
			},
		},
		{
			// Netscape and Thunderbird write "From - " and, in some
			// versions, nothing after it.
			name:    "one-word postmark (From -)",
			input:   "From - \nSubject: a\n\nbody\n\nFrom -\nSubject: b\n\nbody\n",
			formail: count(1, "\n>From -\n"),
			want:    []string{"From - \nSubject: a\n\nbody\n\n", "From -\nSubject: b\n\nbody\n\n"},
		},
		{
			// formail takes "\r\n" for a line with text: it never splits
			// a CRLF mbox, puts a bare "\n" after each header (which
			// then has two blank lines, one LF, one CRLF), and ends the
			// message with a bare "\n". The Splitter reads "\r\n" as a
			// blank line and writes the lines it adds with CRLF.
			name:    "CRLF line ends",
			input:   "From a@b Mon Jan  1 00:00:00 2001\r\nSubject: 1\r\n\r\nbody\r\n\r\nFrom c@d Tue Jan  2 00:00:00 2001\r\nSubject: 2\r\n\r\nbody\r\n",
			formail: count(1, "Subject: 1\r\n\n\r\nbody\r\n\r\n>From c@d"),
			want: []string{
				"From a@b Mon Jan  1 00:00:00 2001\r\nSubject: 1\r\n\r\nbody\r\n\r\n",
				"From c@d Tue Jan  2 00:00:00 2001\r\nSubject: 2\r\n\r\nbody\r\n\r\n",
			},
		},
		{
			// formail copies the CR of the sender's line end into the
			// middle of the From_ line it makes.
			name:    "CRLF: no CR in a generated From_ line",
			input:   "From: a@example.com\r\nSubject: s\r\n\r\nbody\r\n",
			formail: count(1, "From a@example.com\r  "),
			want:    []string{"From a@example.com  Tue Jan  2 03:04:05 2024\r\nFrom: a@example.com\r\nSubject: s\r\n\r\nbody\r\n\r\n"},
		},
		{
			// procmail writes a message that lacks its final newline with
			// just one added, so the next From_ line follows without a
			// blank line; formail then merges the two messages. A From_
			// line with a full ctime date followed by a header field is
			// taken as a separator anyway.
			name:    "ctime From_ line without a blank line before it",
			input:   "From a@b Mon Jan  1 00:00:00 2001\nSubject: 1\n\nno final newline\nFrom c@d Tue Jan  2 00:00:00 2001\nSubject: 2\n\nbody\n",
			formail: count(1, "\n>From c@d Tue Jan  2"),
			want: []string{
				"From a@b Mon Jan  1 00:00:00 2001\nSubject: 1\n\nno final newline\n\n",
				"From c@d Tue Jan  2 00:00:00 2001\nSubject: 2\n\nbody\n\n",
			},
		},
		{
			// The same for a header-only message written without its
			// final newline.
			name:    "ctime From_ line right after a header",
			input:   "From a@b Mon Jan  1 00:00:00 2001\nSubject: 1\nFrom c@d Tue Jan  2 00:00:00 2001\nSubject: 2\n\nbody\n",
			formail: count(1, "\n\n>From c@d Tue Jan  2"),
			want: []string{
				"From a@b Mon Jan  1 00:00:00 2001\nSubject: 1\n\n",
				"From c@d Tue Jan  2 00:00:00 2001\nSubject: 2\n\nbody\n\n",
			},
		},
		{
			// When a From line ends a header, formail decides whether to
			// escape it with a stale pointer into freed memory (the
			// previous field's text): here it leaves it alone, after
			// "Subject: s" it escapes it. The Splitter always escapes a
			// From line that is not a separator.
			name:    "From line ending a header",
			input:   "From a@b Mon Jan  1 00:00:00 2001\nFrom x y : z\n\nb\n",
			formail: count(1, "\n\nFrom x y : z\n"),
			want:    []string{"From a@b Mon Jan  1 00:00:00 2001\n\n>From x y : z\n\nb\n\n"},
		},
		{
			// formail trusts any Content-Length: one that is too large
			// swallows the messages after it, unescaped.
			name:    "Content-Length too large",
			input:   "From a@b Mon Jan  1 00:00:00 2001\nContent-Length: 500\n\nshort\n\nFrom c@d Tue Jan  2 00:00:00 2001\nSubject: 2\n\nFrom inside\n",
			formail: count(1, "\nFrom c@d Tue Jan  2 00:00:00 2001\nSubject: 2\n\nFrom inside\n"),
			want: []string{
				"From a@b Mon Jan  1 00:00:00 2001\nContent-Length: 500\n\nshort\n\n",
				"From c@d Tue Jan  2 00:00:00 2001\nSubject: 2\n\n>From inside\n\n",
			},
		},
		{
			// One that ends inside the body keeps formail from splitting
			// (or escaping) within the bytes it counts; the Splitter
			// ignores it and reads the body as an mbox body.
			name:    "Content-Length ending inside the body",
			input:   "From a@b Mon Jan  1 00:00:00 2001\nContent-Length: 40\n\n\nFrom x@y Wed Jan  3 00:00:00 2001\nSubject: inner\n\nrest\n",
			formail: count(1, "\n\n\nFrom x@y Wed"),
			want: []string{
				"From a@b Mon Jan  1 00:00:00 2001\nContent-Length: 40\n\n\n",
				"From x@y Wed Jan  3 00:00:00 2001\nSubject: inner\n\nrest\n\n",
			},
		},
		{
			// A Content-Length that ends where the next From_ line
			// begins is honoured even when no blank line separates them
			// (Netscape's mailboxes); formail honours it but escapes the
			// From_ line after it and merges the messages.
			name:    "Content-Length ending right at the next From_ line",
			input:   "From - Mon Jan  1 00:00:00 2001\nContent-Length: 7\n\nbody 1\nFrom - Tue Jan  2 00:00:00 2001\nContent-Length: 7\n\nbody 2\n",
			formail: count(1, "\n>From - Tue"),
			want: []string{
				"From - Mon Jan  1 00:00:00 2001\nContent-Length: 7\n\nbody 1\n\n",
				"From - Tue Jan  2 00:00:00 2001\nContent-Length: 7\n\nbody 2\n\n",
			},
		},
		{
			// Classic Mac OS mailboxes end lines with a bare CR: to
			// formail the whole file is one line of garbage. The Splitter
			// splits at CRs and hands out LF messages, since every format
			// and edit downstream (procmail's too) knows only LF.
			name:    "bare CR line ends",
			input:   "From a@b Mon Jan  1 00:00:00 2001\rSubject: 1\r\rbody\r\rFrom c@d Tue Jan  2 00:00:00 2001\rSubject: 2\r\rbody\r",
			formail: count(1, "\rFrom c@d"),
			want: []string{
				"From a@b Mon Jan  1 00:00:00 2001\nSubject: 1\n\nbody\n\n",
				"From c@d Tue Jan  2 00:00:00 2001\nSubject: 2\n\nbody\n\n",
			},
		},
		{
			// A byte order mark makes formail see garbage before the
			// first From_ line and invent a message for it.
			name:    "UTF-8 byte order mark",
			input:   "\xef\xbb\xbfFrom a@b Mon Jan  1 00:00:00 2001\nSubject: 1\n\nbody\n",
			formail: count(1, "\n\xef\xbb\xbfFrom a@b"),
			want:    []string{"From a@b Mon Jan  1 00:00:00 2001\nSubject: 1\n\nbody\n\n"},
		},
		{
			// formail deletes blanks before a header field's colon; the
			// Splitter does not change header fields (a DKIM signature
			// with simple canonicalization covers those bytes).
			// (Such a Content-Length still counts, as for formail.)
			name:    "blanks before a colon",
			formail: count(1, "\nSubject: x\nFrom:<a@b>\nContent-Length: 12\n"),
			input:   "From a@b Mon Jan  1 00:00:00 2001\nSubject : x\nFrom  :<a@b>\nContent-Length\t: 12\n\nFrom inside\n",
			want:    []string{"From a@b Mon Jan  1 00:00:00 2001\nSubject : x\nFrom  :<a@b>\nContent-Length\t: 12\n\nFrom inside\n\n"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			fm := formailSplit(t, c.input)
			if err := c.formail(fm); err != nil {
				t.Fatalf("formail no longer behaves as documented: %v\n\tformail's messages: %q", err, fm)
			}
			got := split(t, c.input, SplitOptions{})
			if strings.Join(got, "\x00") != strings.Join(c.want, "\x00") {
				t.Errorf("Splitter:\n\tgot  %q\n\twant %q", got, c.want)
			}
			if equalMsgs(got, fm) {
				t.Errorf("the Splitter agrees with formail here: not a deviation")
			}
		})
	}
}

// count checks that formail gave n messages and that one contains sub.
func count(n int, sub string) func([]string) error {
	return func(msgs []string) error {
		if len(msgs) != n {
			return fmt.Errorf("%d messages, want %d", len(msgs), n)
		}
		for _, m := range msgs {
			if strings.Contains(m, sub) {
				return nil
			}
		}
		return fmt.Errorf("no message contains %q", sub)
	}
}

// TestSplitOffsets: each message's input range covers the input without
// gaps, apart from what precedes the first message.
func TestSplitOffsets(t *testing.T) {
	in := "\n\xef\xbb\xbfFrom a@b Mon Jan  1 00:00:00 2001\nS: 1\n\nb\n\nFrom c@d Tue Jan  2 00:00:00 2001\nS: 2\n\nb"
	in = strings.TrimPrefix(in, "\n") // the BOM must come first
	s := NewSplitter(strings.NewReader(in), SplitOptions{Now: func() time.Time { return splitNow }})
	var ranges [][2]int64
	for {
		_, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		a, b := s.Offsets()
		ranges = append(ranges, [2]int64{a, b})
	}
	second := int64(strings.Index(in, "From c@d"))
	want := [][2]int64{{3, second}, {second, int64(len(in))}}
	if fmt.Sprint(ranges) != fmt.Sprint(want) {
		t.Errorf("offsets %v, want %v", ranges, want)
	}
}

// TestSplitMboxrd reads mboxrd: one '>' comes off ^>+From lines, and
// what mfilter's mbox writer writes with mboxrd reads back unchanged.
func TestSplitMboxrd(t *testing.T) {
	in := "From a@b Mon Jan  1 00:00:00 2001\n>From relay Sun Dec 31 00:00:00 2000\nSubject: s\n\n>From quoted\n>>From twice\nFrom not a separator\n>Fromage\n> From spaced\n\nFrom c@d Tue Jan  2 00:00:00 2001\nSubject: t\n\nb\n"
	want := []string{
		"From a@b Mon Jan  1 00:00:00 2001\nFrom relay Sun Dec 31 00:00:00 2000\nSubject: s\n\nFrom quoted\n>From twice\nFrom not a separator\n>Fromage\n> From spaced\n\n",
		"From c@d Tue Jan  2 00:00:00 2001\nSubject: t\n\nb\n\n",
	}
	if got := split(t, in, SplitOptions{Mboxrd: true}); strings.Join(got, "\x00") != strings.Join(want, "\x00") {
		t.Errorf("mboxrd:\n\tgot  %q\n\twant %q", got, want)
	}
	// Without the option the same file reads as formail reads it.
	if got, fm := split(t, in, SplitOptions{}), formailSplit(t, in); !equalMsgs(got, fm) {
		t.Errorf("mboxo reading differs from formail:\n\tgot     %q\n\tformail %q", got, fm)
	}

	// Round trip through the writer's mboxrd escaping.
	msgs := []string{
		"From a@b Mon Jan  1 00:00:00 2001\nSubject: s\n\nFrom x\n>From y\n>>From z\n\n",
		"From c@d Tue Jan  2 00:00:00 2001\nContent-Length: 5\n\nFrom \n\n",
	}
	var mbox []byte
	for _, m := range msgs {
		mbox = append(mbox, MboxBytes([]byte(m), nil, false, true)...)
	}
	got := split(t, string(mbox), SplitOptions{Mboxrd: true, Berkeley: true})
	var wantRT []string
	for _, m := range msgs {
		// The writer fixes the Content-Length to the real body length.
		d, _ := prepare([]byte(m), false)
		wantRT = append(wantRT, string(d))
	}
	if strings.Join(got, "\x00") != strings.Join(wantRT, "\x00") {
		t.Errorf("mboxrd round trip:\n\tgot  %q\n\twant %q", got, wantRT)
	}
	if !bytes.Contains(mbox, []byte("\n>>>From z")) {
		t.Errorf("the writer did not write mboxrd: %q", mbox)
	}
}

// FuzzSplitter: for any input the Splitter hands out messages that start
// with a From_ line and end in a blank line, from input ranges that follow
// each other without gaps or overlaps and end at the end of the input.
func FuzzSplitter(f *testing.F) {
	for _, s := range corpusSeeds(f) {
		f.Add(s, false, false)
	}
	f.Add([]byte("From a b\r\nX: 1\r\n\r\nb\r\n\r\nFrom c d\r\nY: 2\r\n\r\n"), false, false)
	f.Add([]byte("From a b\rX: 1\r\rb\r\rFrom c d\rY: 2\r\r"), false, false)
	f.Add([]byte("\xef\xbb\xbfFrom a b\n>From c\n>>From d\nContent-Length: 3\n\nabc\nFrom e f\nZ: 1\n"), true, true)
	f.Fuzz(func(t *testing.T, in []byte, berkeley, mboxrd bool) {
		s := NewSplitter(bytes.NewReader(in), SplitOptions{Berkeley: berkeley, Mboxrd: mboxrd, Now: func() time.Time { return splitNow }})
		var prevEnd int64 = -1
		for {
			m, err := s.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			a, b := s.Offsets()
			if a > b || (prevEnd >= 0 && a != prevEnd) {
				t.Fatalf("range [%d,%d) after one ending at %d", a, b, prevEnd)
			}
			prevEnd = b
			if !bytes.HasPrefix(m, []byte("From ")) {
				t.Fatalf("message does not start with a From_ line: %.60q", m)
			}
			// The last line is empty: "\n" or, in CRLF text, "\r\n".
			if !bytes.HasSuffix(m, []byte("\n\n")) && !bytes.HasSuffix(m, []byte("\n\r\n")) {
				t.Fatalf("message does not end in a blank line: %q", m[max(0, len(m)-20):])
			}
		}
		if prevEnd >= 0 && prevEnd != int64(len(in)) {
			t.Fatalf("the last message ends at %d of %d bytes", prevEnd, len(in))
		}
	})
}

func TestIndexLineStart(t *testing.T) {
	for _, tt := range []struct {
		in    string
		delim byte
		want  int
	}{
		{"", '\n', -1},
		{"From x\n", '\n', -1}, // only after the first byte
		{"a\nFrom x\n", '\n', 2},
		{"aFrom x\nFrom y\n", '\n', 8},
		{"a\n>From x\nFrom", '\n', -1},
		{"a\nFrom", '\n', -1},
		{"a\nFrom ", '\n', 2},
		{"a\r\nFrom x", '\n', 3},
		{"a\rFrom x", '\r', 2},
		{"a\nFrom x", '\r', -1},
		{"FFrom From \nFrom ", '\n', 12},
	} {
		if got := indexLineStart([]byte(tt.in), []byte("From "), tt.delim); got != tt.want {
			t.Errorf("indexLineStart(%q, %q) = %d, want %d", tt.in, tt.delim, got, tt.want)
		}
	}
}
