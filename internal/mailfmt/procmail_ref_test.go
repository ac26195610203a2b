package mailfmt

import (
	"bytes"
	"testing"
)

// The header scan as it was before it was one pass: "\n\n" looked for
// from realstart, then the lines of the header for Content-Length.

func refScanHeader(raw []byte, p int, wantCL bool) (body, cl int) {
	body = len(raw)
	if i := bytes.Index(raw[p:], []byte("\n\n")); i >= 0 {
		body = p + i + 2
	}
	cl = -1
	if wantCL {
		cl = findContentLength(raw[:body])
	}
	return body, cl
}

func findContentLength(header []byte) int {
	const name = "content-length:"
	for i := 0; i < len(header); {
		// The first byte first: few lines start with a C.
		if len(header)-i >= len(name) && header[i]|0x20 == 'c' && bytes.EqualFold(header[i:i+len(name)], []byte(name)) {
			return i + len(name)
		}
		j := bytes.IndexByte(header[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
	}
	return -1
}

func realStart(raw []byte) int {
	p := 0
	for p < len(raw) {
		c := raw[p]
		p++
		if c != '\n' {
			break
		}
	}
	return p
}

func scanBoth(t *testing.T, raw []byte) {
	t.Helper()
	p := realStart(raw)
	for _, want := range []bool{true, false} {
		b, c := scanHeader(raw, p, want)
		rb, rc := refScanHeader(raw, p, want)
		if b != rb || c != rc {
			t.Fatalf("%.80q (CL %v): body %d, Content-Length at %d; before %d, %d", raw, want, b, c, rb, rc)
		}
	}
}

// TestScanHeaderSameAsBefore: the one-pass header scan finds the body
// and the Content-Length where the two scans before it did.
func TestScanHeaderSameAsBefore(t *testing.T) {
	cases := []string{
		"", "\n", "\n\n\n", "C", "Content-Length: 3\n\nabc",
		"\n\nContent-Length: 3\n\nabc", "\nContent-Length: 3", "From a b\nContent-length: 9\nX: 1\n\nbody\nContent-Length: 1\n",
		"From a b\nX: 1\n\n\nContent-Length: 2\n", "content-length:", "content-length", "X\n\n", "X\nY\n", "\nC\n\ncontent-length: 1",
	}
	for _, c := range cases {
		scanBoth(t, []byte(c))
	}
	for _, s := range corpusSeeds(t) {
		scanBoth(t, s)
		scanBoth(t, bytes.ReplaceAll(s, []byte("Content-Type"), []byte("Content-Length: 12")))
	}
}

func FuzzScanHeader(f *testing.F) {
	f.Add([]byte("\nContent-Length: 3\n\nabc"))
	for _, s := range corpusSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(scanBoth)
}
