package rules

import (
	"bytes"
	"regexp"
	"regexp/syntax"
	"strings"
	"unicode"
	"unicode/utf8"
	"unsafe"

	"github.com/mfilter/mfilter/internal/asciifold"
)

// A prefilter is a literal that every match of a pattern contains. Most
// conditions do not match most messages, and looking for a literal with
// bytes.IndexByte is many times faster than running Go's regexp, which
// falls back to its NFA for case-insensitive patterns (procmail's
// default) and scans the whole text: a body regex went through every
// byte of every message. When the literal is absent the regex cannot
// match and is not run; when it is present the regex decides.
type prefilter struct {
	lit  []byte // lower-cased ASCII when fold
	fold bool
	// anchor is the byte of lit that a case-insensitive search scans
	// for: the one least common in mail text, so that it stops at few
	// places that are not a match.
	anchor int
	// lit is the runes [runeStart, runeStart+runes) of its literal.
	runeStart, runes int
	// When the whole pattern is one literal (a body or subject search
	// for a phrase, say), a match is lit with at most before bytes
	// before it and after bytes after it: the regex then only runs on
	// that window around each place lit is found, not on the whole text.
	exact         bool
	before, after int
}

// minPrefilter is the shortest literal worth a scan of its own.
const minPrefilter = 3

// newPrefilter finds the longest literal every match of expr must
// contain, or nil.
func newPrefilter(expr string) *prefilter {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil
	}
	return prefilterOf(re)
}

// prefilterOf is newPrefilter of an expression already parsed with
// syntax.Perl (which it does not change).
func prefilterOf(re *syntax.Regexp) *prefilter {
	re = re.Simplify()
	var best *prefilter
	for _, p := range requiredLiterals(re) {
		if best == nil || len(p.lit) > len(best.lit) {
			best = p
		}
	}
	if best == nil || len(best.lit) < minPrefilter {
		return nil
	}
	best.anchor = rarestByte(best.lit)
	if re.Op == syntax.OpLiteral {
		// utf8.UTFMax bytes for each rune of the literal outside best
		// (a 'k' matches the three-byte Kelvin sign).
		best.exact = true
		best.before, best.after = utf8.UTFMax*best.runeStart, utf8.UTFMax*(len(re.Rune)-best.runeStart-best.runes)
	}
	return best
}

// requiredLiterals lists literals each of which any match of re
// contains. It looks only where a literal is certain to be matched:
// concatenations, captures and repetitions of at least one.
func requiredLiterals(re *syntax.Regexp) []*prefilter {
	switch re.Op {
	case syntax.OpLiteral:
		return literalRuns(re.Rune, re.Flags&syntax.FoldCase != 0)
	case syntax.OpCapture, syntax.OpPlus:
		return requiredLiterals(re.Sub[0])
	case syntax.OpRepeat:
		if re.Min >= 1 {
			return requiredLiterals(re.Sub[0])
		}
	case syntax.OpConcat:
		var out []*prefilter
		for _, sub := range re.Sub {
			out = append(out, requiredLiterals(sub)...)
		}
		return out
	}
	return nil
}

// literalRuns splits a literal into the runs that can be searched for as
// bytes. Case-sensitive: any rune but U+FFFD, which Go's regexp also
// matches on an invalid byte. Case-insensitive: ASCII runes whose case
// folds stay in ASCII; 'k' and 's' also match the Kelvin sign and the
// long s, so they end a run as any other rune does.
func literalRuns(runes []rune, fold bool) []*prefilter {
	var out []*prefilter
	cur := &prefilter{fold: fold}
	flush := func(next int) {
		if len(cur.lit) > 0 {
			out = append(out, cur)
		}
		cur = &prefilter{fold: fold, runeStart: next}
	}
	for i, r := range runes {
		switch {
		case r == utf8.RuneError:
			flush(i + 1)
			continue
		case !fold:
			cur.lit = utf8.AppendRune(cur.lit, r)
		case asciiFoldSafe(r):
			cur.lit = append(cur.lit, byte(unicode.ToLower(r)))
		default:
			flush(i + 1)
			continue
		}
		cur.runes++
	}
	flush(len(runes))
	return out
}

// asciiFoldSafe reports whether r and every rune it folds to are ASCII.
func asciiFoldSafe(r rune) bool {
	if r >= utf8.RuneSelf {
		return false
	}
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// mayMatch reports whether text contains the literal.
func (p *prefilter) mayMatch(text []byte) bool {
	return p.index(text) >= 0
}

// index is where the literal first is in text, or -1.
func (p *prefilter) index(text []byte) int {
	if !p.fold {
		return bytes.Index(text, p.lit)
	}
	return indexFoldASCII(text, p.lit, p.anchor)
}

// matchAround runs re, the pattern that an exact p was made for, on the
// window around each place p's literal is in text.
func (p *prefilter) matchAround(re *regexp.Regexp, text []byte) bool {
	for from := 0; ; {
		j := p.index(text[from:])
		if j < 0 {
			return false
		}
		j += from
		if re.Match(text[max(0, j-p.before):min(len(text), j+len(p.lit)+p.after)]) {
			return true
		}
		from = j + 1
	}
}

// bytesOf is s as bytes, only to be read.
func bytesOf(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// indexFoldASCII finds lower, a lower-case ASCII needle, in text without
// regard to ASCII case. It scans for the needle's byte at anchor in both
// cases with bytes.IndexByte and compares the whole needle at each
// candidate.
func indexFoldASCII(text, lower []byte, anchor int) int {
	c := lower[anchor]
	upper := c
	if 'a' <= c && c <= 'z' {
		upper -= 'a' - 'A'
	}
	n := len(lower)
	last := len(text) - n + anchor // the last place the anchor can be
	nextLo, nextUp := -1, -1       // next candidate of each case at or after i; -2: none left
	for i := anchor; i <= last; {
		if nextLo != -2 && nextLo < i {
			nextLo = indexFrom(text, c, i)
		}
		if upper != c && nextUp != -2 && nextUp < i {
			nextUp = indexFrom(text, upper, i)
		}
		j := nextLo
		if upper != c && nextUp != -2 && (j == -2 || nextUp < j) {
			j = nextUp
		}
		if j == -2 || j > last {
			return -1
		}
		if start := j - anchor; asciifold.Equal(text[start:start+n], lower) {
			return start
		}
		i = j + 1
	}
	return -1
}

// rarestByte is the index of the byte of lit (lower-case ASCII) that is
// least common in mail (mostly English text, HTML and base64), by a
// rough ranking; the first of equals.
func rarestByte(lit []byte) int {
	best := 0
	for i := range lit {
		if byteCommonness(lit[i]) < byteCommonness(lit[best]) {
			best = i
		}
	}
	return best
}

// byteCommonness ranks a lower-case ASCII byte (with its upper case)
// by how often it occurs in mail: higher is more common.
func byteCommonness(c byte) int {
	const byFrequency = " etaoinsrhldcumfpgwybvkxjqz" // most common first
	if i := strings.IndexByte(byFrequency, c); i >= 0 {
		return 100 - i
	}
	switch {
	case c == '\n' || c == '\r':
		return 98
	case '0' <= c && c <= '9', c == '.', c == ',', c == '-', c == '=', c == '/', c == ':':
		return 80 // about as common as g or w
	case c < 0x80 && c > ' ':
		return 70 // other punctuation
	}
	return 0
}

// indexFrom is bytes.IndexByte from i on, or -2.
func indexFrom(text []byte, c byte, i int) int {
	k := bytes.IndexByte(text[i:], c)
	if k < 0 {
		return -2
	}
	return i + k
}
