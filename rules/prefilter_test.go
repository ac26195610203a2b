package rules

import (
	"regexp"
	"testing"
)

func TestPrefilterLiteral(t *testing.T) {
	tests := []struct {
		expr string
		lit  string // "" for no prefilter
		fold bool
	}{
		{`(?i)unsubscribe here`, "cribe here", true}, // 's' also matches the long s
		{`unsubscribe here`, "unsubscribe here", false},
		{`(?im)^List-Id:.*<list0\.example\.org>`, "t0.example.org>", true},
		{`(?i)\[URGENT\]`, "[urgent]", true},
		{`(?i)^YES`, "", false}, // too short
		{`(?i)(foo|barbaz)`, "", false},
		{`(?i)(?P<list>[a-z]+)\.lists\.example\.org$`, ".example.org", true},
		{`(?i)x(abcdef)+y`, "abcdef", true},
		{`(?i)x(abcdef)*y`, "", false},
		{`(?i)x(abcdef){2,3}y`, "abcdef", true},
		{`Résumé`, "Résumé", false},
		{`(?i)résumé`, "", false}, // é folds outside ASCII; "r" and "um" are too short
		{`a\x{FFFD}bcdefg`, "bcdefg", false},
	}
	for _, tt := range tests {
		p := newPrefilter(tt.expr)
		switch {
		case tt.lit == "" && p != nil:
			t.Errorf("%s: prefilter %q, want none", tt.expr, p.lit)
		case tt.lit != "" && p == nil:
			t.Errorf("%s: no prefilter, want %q", tt.expr, tt.lit)
		case p != nil && (string(p.lit) != tt.lit || p.fold != tt.fold):
			t.Errorf("%s: prefilter %q fold %v, want %q fold %v", tt.expr, p.lit, p.fold, tt.lit, tt.fold)
		}
	}
}

func TestIndexFoldASCII(t *testing.T) {
	tests := []struct {
		text, lower string
		want        int
	}{
		{"Unsubscribe HERE", "here", 12},
		{"hhhhere", "here", 3},
		{"HhHeRe", "here", 2},
		{"her", "here", -1},
		{"", "abc", -1},
		{"xx[URGENT]", "[urgent]", 2},
		{"\xffHERE", "here", 1},
		{"ab", "abc", -1},
		{"aB", "ab", 0},
	}
	for _, tt := range tests {
		if got := indexFoldASCII([]byte(tt.text), []byte(tt.lower)); got != tt.want {
			t.Errorf("indexFoldASCII(%q, %q) = %d, want %d", tt.text, tt.lower, got, tt.want)
		}
	}
}

// A prefilter may only rule out texts the regex does not match.
func FuzzPrefilter(f *testing.F) {
	seeds := []struct{ expr, text string }{
		{`(?i)unsubscribe here`, "UNSUBSCRIBE HERE"},
		{`(?i)unsubscribe here`, "unſubscribe here"}, // long s
		{`(?i)kelvin scale`, "\u212Aelvin scale"},    // Kelvin sign
		{`(?i)abc.def`, "ABC\xffDEF"},                // . matches an invalid byte
		{`(?im)^List-Id:.*<list0\.example\.org>`, "List-Id: x <LIST0.example.ORG>"},
		{`a\x{FFFD}bcdefg`, "a\xffbcdefg"},
		{`(?i)résumé`, "RÉSUMÉ"},
	}
	for _, s := range seeds {
		f.Add(s.expr, []byte(s.text))
	}
	f.Fuzz(func(t *testing.T, expr string, text []byte) {
		re, err := regexp.Compile(expr)
		if err != nil {
			return
		}
		p := newPrefilter(expr)
		if p == nil || !re.Match(text) {
			return
		}
		if !p.mayMatch(text) || !p.mayMatchString(string(text)) {
			t.Fatalf("%q matches %q but the prefilter %q (fold %v) rules it out", expr, text, p.lit, p.fold)
		}
	})
}
