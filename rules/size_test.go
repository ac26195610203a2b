package rules

import (
	"regexp"
	"testing"
)

// sizeRe is what sizeSpec parses, as the regexp it replaced.
var sizeRe = regexp.MustCompile(`^\s*([<>])\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgG]?)[bB]?\s*$`)

func checkSizeSpec(t *testing.T, s string) {
	t.Helper()
	op, num, unit, ok := sizeSpec(s)
	m := sizeRe.FindStringSubmatch(s)
	if ok != (m != nil) || ok && (op != m[1] || num != m[2] || unit != m[3]) {
		t.Fatalf("sizeSpec(%q) = %q, %q, %q, %v; the regexp: %q", s, op, num, unit, ok, m)
	}
}

// TestSizeSpec holds sizeSpec to the regexp on every string of up to
// five bytes from the bytes that matter, and on some longer ones.
func TestSizeSpec(t *testing.T) {
	const alphabet = " \t\v<>09.kMgbBx"
	var gen func(prefix string, n int)
	gen = func(prefix string, n int) {
		checkSizeSpec(t, prefix)
		if n == 0 {
			return
		}
		for i := 0; i < len(alphabet); i++ {
			gen(prefix+alphabet[i:i+1], n-1)
		}
	}
	gen("", 5)
	for _, s := range []string{"> 100k", "< 2M", "<1.5M", "  >  12.25 gB \n", "> 1kb", "> 1 b", "> 1.k", "> .5k", "> 10000000000G", "\f>\r1\n", "> 1kk", "> 1bb", ">1\x00"} {
		checkSizeSpec(t, s)
	}
}

func FuzzSizeSpec(f *testing.F) {
	for _, s := range []string{"> 100k", "< 2.5 MB", "x"} {
		f.Add(s)
	}
	f.Fuzz(checkSizeSpec)
}
