package mailfmt

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fixedNow is the time of generated From_ lines.
var fixedNow = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// corpusSeeds returns the small corpus messages (testdata/corpus) and
// deliver's golden cases (testdata/golden-cases) as fuzz seeds.
func corpusSeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	golden, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "golden-cases", "*.eml"))
	for _, p := range golden {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	if len(golden) == 0 {
		t.Fatal("no golden cases in testdata/golden-cases")
	}
	root := filepath.Join("..", "..", "testdata", "corpus", "messages")
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		if info, err := e.Info(); err == nil && info.Size() <= 16<<10 {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			seeds = append(seeds, b)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("corpus: %v", err)
	}
	return seeds
}

func splitAll(t *testing.T, data []byte, opts SplitOptions) [][]byte {
	t.Helper()
	return nextAll(t, NewSplitter(bytes.NewReader(data), opts))
}

// nextAll returns every message sp has left.
func nextAll(t *testing.T, sp *Splitter) [][]byte {
	t.Helper()
	var out [][]byte
	for {
		m, err := sp.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("split: %v", err)
		}
		out = append(out, m)
	}
}

// corpusMbox returns the corpus seeds and one mbox of all of them.
func corpusMbox(t testing.TB) (seeds [][]byte, all []byte) {
	seeds = corpusSeeds(t)
	for _, s := range seeds {
		all = append(all, s...)
		all = append(all, '\n')
	}
	return seeds, all
}

// FuzzMboxBytes: for any message, what the mbox writer appends starts with
// a From_ line, ends with a newline, and reads back (mfilter's splitter,
// same Berkeley and mboxrd setting) as exactly one message: no body line
// can pass for the start of another message.
func FuzzMboxBytes(f *testing.F) {
	for _, s := range corpusSeeds(f) {
		f.Add(s, false, false)
		f.Add(s, true, true)
	}
	f.Add([]byte("Content-Length: 1\n\nxx\n\nFrom b c\nX: y\n\n"+strings.Repeat("z", 120)+"\n"), false, false)
	f.Add([]byte("From: <a@b,\n\nbody\n"), false, false)
	f.Fuzz(func(t *testing.T, msg []byte, berkeley, mboxrd bool) {
		orig := bytes.Clone(msg)
		out := MboxBytes(msg, func() []byte { return MboxFromLine(msg, fixedNow) }, berkeley, mboxrd)
		if !bytes.Equal(msg, orig) {
			t.Fatalf("MboxBytes changed its input")
		}
		if !bytes.HasPrefix(out, []byte("From ")) {
			t.Fatalf("output does not start with a From_ line: %.80q", out)
		}
		if !bytes.HasSuffix(out, []byte("\n")) {
			t.Fatalf("output does not end with a newline: %q", out[max(0, len(out)-40):])
		}
		if (len(msg) == 0 || msg[len(msg)-1] == '\n') && !bytes.HasSuffix(out, []byte("\n\n")) {
			t.Fatalf("no blank line after a message that ends in a newline: %q", out[max(0, len(out)-40):])
		}
		msgs := splitAll(t, out, SplitOptions{Berkeley: berkeley, Now: func() time.Time { return fixedNow }})
		if len(msgs) != 1 {
			t.Fatalf("the written message reads back as %d messages:\nwritten %q", len(msgs), out)
		}
	})
}

// TestMboxFramingWrongContentLength: where procmail trusts a
// Content-Length that it knows is wrong (a number too wide for the field,
// or an empty field) and leaves "From " lines unescaped, mfilter escapes
// them, so the message reads back as one (found by reasoning about
// FuzzMboxBytes; procmail's bytes split here for every reader).
func TestMboxFramingWrongContentLength(t *testing.T) {
	for _, msg := range []string{
		"From a@b  Tue Jan  2 03:04:05 2024\nContent-Length: 1\n\nxx\n\nFrom b c\nX: y\n\n" + strings.Repeat("z", 120) + "\n",
		"From a@b  Tue Jan  2 03:04:05 2024\nContent-Length:\n\nFrom b c\nX: y\n\nbody\n",
	} {
		out := MboxBytes([]byte(msg), nil, false, false)
		if n := len(splitAll(t, out, SplitOptions{})); n != 1 {
			t.Errorf("reads back as %d messages: %q", n, out)
		}
		if !bytes.Contains(out, []byte("\n>From b c\n")) {
			t.Errorf("From line not escaped: %q", out)
		}
	}
}

// TestGeneratedFromLineUnclosedAngle: a sender field whose address is an
// unclosed "<...," (a truncated header) must give a From_ line, not a
// panic: the mbox writer and the splitter generate From_ lines with
// GeneratedFromLine, and a crash (exit 2) makes the MTA bounce the mail.
// (sender.go skipWords writes one byte past its buffer in this case.)
func TestGeneratedFromLineUnclosedAngle(t *testing.T) {
	for _, msg := range []string{"From:<,", "From: <a@b,\n\nbody\n", "Reply-To: <x,\nSubject: s\n\n"} {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("GeneratedFromLine(%q) panics: %v", msg, r)
				}
			}()
			if l := GeneratedFromLine([]byte(msg), fixedNow); !bytes.HasPrefix(l, []byte("From ")) {
				t.Errorf("GeneratedFromLine(%q) = %q", msg, l)
			}
		}()
	}
}

// fuzzMessage turns fuzz bytes into a message with a well-formed header
// (the Splitter, like formail, must see header fields after a From_ line
// to know a message starts there: fields named from a letter, without CR
// or NUL) and an arbitrary body: raw's first line
// becomes the From_ line if it starts with "From ", the lines up to the
// first blank line become header fields (lines that are not fields are
// dropped), and the rest is the body, byte for byte.
func fuzzMessage(raw []byte) []byte {
	var from, header, body []byte
	if bytes.HasPrefix(raw, []byte("From ")) {
		i := bytes.IndexByte(raw, '\n')
		if i < 0 {
			i = len(raw)
		}
		from = bytes.ReplaceAll(raw[:i], []byte("\r"), nil)
		// A From_ line as MTAs write them: no control characters, and
		// not a "From :" header field (formail reads blanks before the
		// colon as part of a field name).
		if len(bytes.TrimSpace(from[5:])) > 0 && fieldNameLen(from) == 5 && !hasControl(from) {
			from = append(from, '\n')
		} else {
			from = nil
		}
		raw = raw[min(i+1, len(raw)):]
	}
	h := raw
	if i := bytes.Index(raw, []byte("\n\n")); i >= 0 {
		h, body = raw[:i+1], raw[i+2:]
	}
	for _, line := range bytes.SplitAfter(h, []byte("\n")) {
		line = bytes.TrimSuffix(line, []byte("\n"))
		if bytes.ContainsAny(line, "\r\x00") || bytes.HasPrefix(line, []byte("From ")) {
			continue
		}
		// A field name starts with a letter here: a '>' line right after
		// a From_ line belongs to the From_ line (procmail's skipFrom_).
		isField := fieldNameLen(line) > 0 && (line[0]|0x20 >= 'a' && line[0]|0x20 <= 'z')
		if isField || len(header) > 0 && len(line) > 1 && (line[0] == ' ' || line[0] == '\t') {
			header = append(append(header, line...), '\n')
		}
	}
	if len(header) == 0 {
		header = []byte("X-Fuzz: 1\n")
	}
	msg := append(append(from, header...), '\n')
	return append(msg, body...)
}

// FuzzMboxrdRoundTrip writes up to three arbitrary messages with mboxrd
// escaping (MboxBytes(..., mboxrd=true)) into one mbox and reads them back
// with the Splitter in mboxrd mode: each comes back as it went in, with
// the documented edits only: a generated From_ line where it had none
// or one without a date that mbox readers accept, procmail's Content-Length rewrite (unless Berkeley), a final newline
// where missing and a blank line at the end.
func FuzzMboxrdRoundTrip(f *testing.F) {
	seeds := corpusSeeds(f)
	for i, s := range seeds {
		f.Add(s, seeds[(i+1)%len(seeds)], []byte(nil), i%2 == 0)
	}
	f.Add([]byte("From a b\nX: 1\n\nFrom c\n>From d\n>>From e\nlast"), []byte("From b c\nY: 2\n\n\n\n"), []byte("Z: 3\n\n>From\nFrom \n"), false)
	f.Add([]byte("Content-Length: 3\n\nFrom x\nbody\n"), []byte("From q r\r\nX: 1\r\n\r\nFrom crlf\r\n"), []byte("X: \x00\n\n\x00From \x00\n"), false)
	f.Fuzz(func(t *testing.T, a, b, c []byte, berkeley bool) {
		var mbox []byte
		var want [][]byte
		for _, raw := range [][]byte{a, b, c} {
			if raw == nil {
				continue
			}
			msg := fuzzMessage(raw)
			gen := MboxFromLine(msg, fixedNow)
			mbox = append(mbox, MboxBytes(msg, func() []byte { return gen }, berkeley, true)...)
			full := msg
			if first, rest := cutLine(msg); !HasFromLine(msg) {
				full = append(bytes.Clone(gen), msg...)
			} else if fieldNameLen(first) == len("From ") && !ReadablePostmark(first) {
				full = append(bytes.Clone(gen), rest...)
			}
			w, _ := prepare(full, berkeley)
			if w[len(w)-1] != '\n' {
				w = append(w, '\n')
			}
			want = append(want, forceBlank(w))
		}
		got := splitAll(t, mbox, SplitOptions{Mboxrd: true, Berkeley: berkeley, Now: func() time.Time { return fixedNow }})
		if len(got) != len(want) {
			t.Fatalf("wrote %d messages, read back %d\nmbox: %q", len(want), len(got), mbox)
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("message %d:\nread  %q\nwant  %q\nmbox: %q", i, got[i], want[i], mbox)
			}
		}
	})
}

func hasControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return true
		}
	}
	return false
}

// TestMboxFromLineSanitised: a generated From_ line must read back as a
// From_ line (FuzzMboxrdRoundTrip found these senders).
func TestMboxFromLineSanitised(t *testing.T) {
	for _, c := range []struct{ msg, want string }{
		{"From: :\n\n", "From foo@bar  Tue Jan  2 03:04:05 2024\n"},
		{"From:\v\n\n", "From foo@bar  Tue Jan  2 03:04:05 2024\n"},
		{"From: Alice <alice@example.com>\n\n", "From alice@example.com  Tue Jan  2 03:04:05 2024\n"},
	} {
		if got := string(MboxFromLine([]byte(c.msg), fixedNow)); got != c.want {
			t.Errorf("MboxFromLine(%q) = %q, want %q", c.msg, got, c.want)
		}
	}
}

// FuzzMboxParts: the pieces an mbox append writes are MboxBytes's bytes,
// whatever the message, and the message body is not copied where only a
// From_ line is put in front of it.
func FuzzMboxParts(f *testing.F) {
	for _, s := range corpusSeeds(f) {
		f.Add(s, false, false)
		f.Add(s, true, false)
	}
	for _, s := range []string{"Subject: s\n\nbody\n", "From -\nX: 1\n\nb\nFrom x\n", "\nX: 1\n\n", "Content-Length: 3\nX: y\n\nabc\nFrom z\n",
		"From 123@xxx\r\nX: 1\r\n\r\nb\r\n", "X: 1\n\n", "X", "From -\n>From a\nY: 2\n\n", "From -\nFrom b c\n\n", "X: 1\nContent-Length: 99\n\nshort\n\nFrom a\n"} {
		f.Add([]byte(s), false, false)
	}
	f.Fuzz(func(t *testing.T, msg []byte, berkeley, mboxrd bool) {
		now := func() []byte { return MboxFromLine(msg, fixedNow) }
		want := MboxBytes(msg, now, berkeley, mboxrd)
		parts := MboxParts(msg, now, berkeley, mboxrd)
		if got := bytes.Join(parts, nil); !bytes.Equal(got, want) {
			t.Fatalf("MboxParts(%q) = %q, MboxBytes %q", msg, got, want)
		}
	})
}

// TestMboxPartsNoCopy: a large message without a From_ line goes into an
// mbox as the generated line, the message itself and a newline.
func TestMboxPartsNoCopy(t *testing.T) {
	msg := []byte("Subject: big\n\n" + strings.Repeat("a line of the body\n", 100000))
	parts := MboxParts(msg, func() []byte { return MboxFromLine(msg, fixedNow) }, false, false)
	if len(parts) != 3 || &parts[1][0] != &msg[0] || string(parts[2]) != "\n" {
		t.Fatalf("%d parts; the body is a copy or the closing blank line is missing", len(parts))
	}
}
