package msgview

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// This file keeps the header parser as it was before it scanned field
// names byte by byte, to check the new one against.

func refParse(m *Message) (fields []Field, bodyOff int) {
	// The fields are gathered on the stack, then copied to a slice of
	// their number: one allocation of the size needed.
	bodyOff = len(m.raw)
	for h := m.raw[m.hdrStart:]; len(h) > 0; {
		line, rest := cutLine(h)
		if isBlank(line) {
			bodyOff = len(m.raw) - len(rest)
			break
		}
		end := len(line)
		for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
			l2, r2 := cutLine(rest)
			end += len(l2)
			rest = r2
		}
		text := h[:end]
		h = rest
		colon := bytes.IndexByte(text, ':')
		if colon <= 0 {
			continue
		}
		name := bytes.TrimRight(text[:colon], " \t")
		if !isFieldName(name) {
			continue
		}
		val := text[colon+1:]
		val = bytes.TrimSuffix(val, []byte("\n"))
		cr := bytes.HasSuffix(val, []byte("\r"))
		val = bytes.TrimSuffix(val, []byte("\r"))
		fields = append(fields, Field{name: name, Raw: val, CR: cr, beyondASCII: !isASCII(name)})
	}
	return fields, bodyOff
}

// isBlank reports whether line, with its newline if any, holds nothing
// else but CRs.
func isBlank(line []byte) bool {
	for _, c := range line {
		if c != '\r' && c != '\n' {
			return false
		}
	}
	return true // a newline can only be the last byte
}

// isFieldName: not empty, no white space or line ends inside.
func isFieldName(name []byte) bool {
	for _, c := range name {
		if c == ' ' || c == '\t' || c == '\r' || c == '\n' {
			return false
		}
	}
	return len(name) > 0
}

func cutLine(b []byte) (line, rest []byte) {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i+1], b[i+1:]
	}
	return b, nil
}

// parseBoth fails unless parse and refParse agree on raw.
func parseBoth(t *testing.T, raw []byte) {
	t.Helper()
	m := New(raw)
	got, gotOff := m.Fields(), m.bodyOff
	want, wantOff := refParse(New(raw))
	if gotOff != wantOff {
		t.Fatalf("%.80q: body at %d, before at %d", raw, gotOff, wantOff)
	}
	if len(got) != len(want) || (len(got) > 0 && !reflect.DeepEqual(got, want)) {
		t.Fatalf("%.80q: fields\n\tnow    %q\n\tbefore %q", raw, fieldList(got), fieldList(want))
	}
}

func fieldList(fs []Field) []string {
	var out []string
	for _, f := range fs {
		out = append(out, fmt.Sprintf("%s|%s|%v|%v", f.name, f.Raw, f.CR, f.beyondASCII))
	}
	return out
}

func parseSeeds(t testing.TB) [][]byte {
	seeds := [][]byte{
		[]byte("Subject: s\nnot a field\nName With Space: x\n: empty name\nTo: t\n\nb"),
		[]byte("Subject : s\n\t: x\nA\t:b\nA \t \n: c\nA\r: d\nA\r\n : e\n\nbody"),
		[]byte("From a@b\nX:\r\nY:\r\r\n\r\r\nb"),
		[]byte("Ünïcode-Name: v\nK\xe2\x84\xaa: kelvin\n\n"),
		[]byte("NoColonAtAll\nStill none\n"),
		[]byte("X: a\n continued: b\n\tmore\n\r"),
		[]byte("X: a\r"),
		[]byte(""),
		[]byte("\r\r\r"),
	}
	matches, err := filepath.Glob(filepath.Join("..", "..", "testdata", "corpus", "messages", "*", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range matches {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b, bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")))
	}
	return seeds
}

// TestParseSameAsBefore: the header parser finds the same fields and
// body as it did before it was made faster, on the corpus (also with
// CRLF line ends) and on headers made to be awkward.
func TestParseSameAsBefore(t *testing.T) {
	seeds := parseSeeds(t)
	if len(seeds) < 50 {
		t.Fatalf("only %d messages: is testdata/corpus there?", len(seeds))
	}
	for _, s := range seeds {
		parseBoth(t, s)
	}
}

func FuzzParseSameAsBefore(f *testing.F) {
	for _, s := range parseSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw []byte) { parseBoth(t, raw) })
}

func BenchmarkParse(b *testing.B) {
	seeds := parseSeeds(b)
	b.ResetTimer()
	for b.Loop() {
		for _, s := range seeds {
			New(s).Fields()
		}
	}
}
