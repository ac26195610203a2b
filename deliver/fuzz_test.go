package deliver

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

// corpusSeeds returns the small corpus messages (testdata/corpus) and the
// golden cases as fuzz seeds.
func corpusSeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	for _, c := range goldenCases {
		seeds = append(seeds, []byte(c.msg))
	}
	root := filepath.Join("..", "testdata", "corpus", "messages")
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
	sp := NewSplitter(bytes.NewReader(data), opts)
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
		out := MboxBytes(msg, func() []byte { return GeneratedFromLine(msg, fixedNow) }, berkeley, mboxrd)
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
