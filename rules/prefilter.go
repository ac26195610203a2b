package rules

import (
	"bytes"
	"regexp/syntax"
	"unicode"
	"unicode/utf8"
	"unsafe"
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
	var best *prefilter
	for _, p := range requiredLiterals(re.Simplify()) {
		if best == nil || len(p.lit) > len(best.lit) {
			best = p
		}
	}
	if best == nil || len(best.lit) < minPrefilter {
		return nil
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
	flush := func() {
		if len(cur.lit) > 0 {
			out = append(out, cur)
		}
		cur = &prefilter{fold: fold}
	}
	for _, r := range runes {
		switch {
		case r == utf8.RuneError:
			flush()
		case !fold:
			cur.lit = utf8.AppendRune(cur.lit, r)
		case asciiFoldSafe(r):
			cur.lit = append(cur.lit, byte(unicode.ToLower(r)))
		default:
			flush()
		}
	}
	flush()
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
	if !p.fold {
		return bytes.Contains(text, p.lit)
	}
	return indexFoldASCII(text, p.lit) >= 0
}

// mayMatchString is mayMatch for a string. The bytes are only read.
func (p *prefilter) mayMatchString(s string) bool {
	return p.mayMatch(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// indexFoldASCII finds lower, a lower-case ASCII needle, in text without
// regard to ASCII case. It scans for the needle's first byte in both cases
// with bytes.IndexByte and compares the rest at each candidate.
func indexFoldASCII(text, lower []byte) int {
	first := lower[0]
	upper := first
	if 'a' <= first && first <= 'z' {
		upper -= 'a' - 'A'
	}
	n := len(lower)
	nextLo, nextUp := -1, -1 // next candidate of each case at or after i; -2: none left
	for i := 0; i+n <= len(text); {
		if nextLo != -2 && nextLo < i {
			nextLo = indexFrom(text, first, i)
		}
		if upper != first && nextUp != -2 && nextUp < i {
			nextUp = indexFrom(text, upper, i)
		}
		j := nextLo
		if upper != first && nextUp != -2 && (j == -2 || nextUp < j) {
			j = nextUp
		}
		if j == -2 || j+n > len(text) {
			return -1
		}
		if equalFoldASCII(text[j+1:j+n], lower[1:]) {
			return j
		}
		i = j + 1
	}
	return -1
}

// indexFrom is bytes.IndexByte from i on, or -2.
func indexFrom(text []byte, c byte, i int) int {
	k := bytes.IndexByte(text[i:], c)
	if k < 0 {
		return -2
	}
	return i + k
}

// equalFoldASCII compares text with lower, lower-case ASCII, ignoring the
// case of ASCII letters in text.
func equalFoldASCII(text, lower []byte) bool {
	for i, c := range text {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
