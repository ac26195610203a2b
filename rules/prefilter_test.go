package rules

import (
	"regexp"
	"testing"
)

func TestPrefilterLiteral(t *testing.T) {
	tests := []struct {
		expr  string
		lit   string // "" for no prefilter
		fold  bool
		exact bool // the pattern is the literal: the regex runs only around it
	}{
		{`(?i)unsubscribe here`, "cribe here", true, true}, // 's' also matches the long s
		{`unsubscribe here`, "unsubscribe here", false, true},
		{`(?im)^List-Id:.*<list0\.example\.org>`, "t0.example.org>", true, false},
		{`(?i)\[URGENT\]`, "[urgent]", true, true},
		{`(?i)^YES`, "", false, false}, // too short
		{`(?i)(foo|barbaz)`, "", false, false},
		{`(?i)(?P<list>[a-z]+)\.lists\.example\.org$`, ".example.org", true, false},
		{`(?i)x(abcdef)+y`, "abcdef", true, false},
		{`(?i)x(abcdef)*y`, "", false, false},
		{`(?i)x(abcdef){2,3}y`, "abcdef", true, false},
		{`Résumé`, "Résumé", false, true},
		{`(?i)résumé`, "", false, false}, // é folds outside ASCII; "r" and "um" are too short
		{`a\x{FFFD}bcdefg`, "bcdefg", false, true},
	}
	for _, tt := range tests {
		p := newPrefilter(tt.expr)
		switch {
		case tt.lit == "" && p != nil:
			t.Errorf("%s: prefilter %q, want none", tt.expr, p.lit)
		case tt.lit != "" && p == nil:
			t.Errorf("%s: no prefilter, want %q", tt.expr, tt.lit)
		case p != nil && (string(p.lit) != tt.lit || p.fold != tt.fold || p.exact != tt.exact):
			t.Errorf("%s: prefilter %q fold %v exact %v, want %q fold %v exact %v", tt.expr, p.lit, p.fold, p.exact, tt.lit, tt.fold, tt.exact)
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
		{"xHERe", "here", 1},
		{"heRE", "here", 0},
		{"her here", "here", 4},
		{"zz", "z", 0},
	}
	for _, tt := range tests {
		// Whatever byte the scan is anchored on, the answer is the same.
		for anchor := range len(tt.lower) {
			if got := indexFoldASCII([]byte(tt.text), []byte(tt.lower), anchor); got != tt.want {
				t.Errorf("indexFoldASCII(%q, %q, %d) = %d, want %d", tt.text, tt.lower, anchor, got, tt.want)
			}
		}
	}
}

func TestRarestByte(t *testing.T) {
	tests := []struct {
		lit  string
		want byte
	}{
		{"cribe here", 'b'},
		{"[urgent]", '['},
		{"list0.example.org", 'x'},
		{"eee", 'e'},
	}
	for _, tt := range tests {
		if got := tt.lit[rarestByte([]byte(tt.lit))]; got != tt.want {
			t.Errorf("rarestByte(%q) is %q, want %q", tt.lit, got, tt.want)
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
		{`(?i)unsubscribe here`, "xx subscribe here, or unsubscribe\u212A here ... UNſUBSCRIBE HERE"},
		{`(?i)ask me`, "\u212Ask me"},
		{`ab\x{FFFD}cdefgh`, "zzab\xffcdefgh"},
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
		if p == nil {
			return
		}
		want := re.Match(text)
		if p.exact {
			if got := p.matchAround(re, text); got != want {
				t.Fatalf("%q on %q: %v around the literal %q, %v on the whole text", expr, text, got, p.lit, want)
			}
		}
		if want && (!p.mayMatch(text) || !p.mayMatch(bytesOf(string(text)))) {
			t.Fatalf("%q matches %q but the prefilter %q (fold %v) rules it out", expr, text, p.lit, p.fold)
		}
	})
}
