package convert

import (
	"regexp"
	"strings"
	"unicode/utf8"
)

// procmail 3.22's regex macros (regexp.c), as ../spec measured them. The
// mfilter headers: condition knows them itself; other areas get them
// expanded here.
var macros = []struct{ name, expansion string }{
	{"^FROM_DAEMON", `(?i:(^(Mailing-List:|Precedence:.*(junk|bulk|list)|To: Multiple recipients of |(((Resent-)?(From|Sender)|X-Envelope-From):|>?From )([^>]*[^(.%@a-z0-9])?(Post(ma?(st(e?r)?|n)|office)|(send)?Mail(er)?|daemon|m(mdf|ajordomo)|n?uucp|LIST(SERV|proc)|NETSERV|o(wner|ps)|r(e(quest|sponse)|oot)|b(ounce|bs\.smtp)|echo|mirror|s(erv(ices?|er)|mtp(error)?|ystem)|A(dmin(istrator)?|MMGR|utoanswer))(([^).!:a-z0-9][-_a-z0-9]*)?[%@>	 ][^<)]*(\(.*\).*)?)?$([^>]|$))))`},
	{"^FROM_MAILER", `(?i:(^(((Resent-)?(From|Sender)|X-Envelope-From):|>?From )([^>]*[^(.%@a-z0-9])?(Post(ma(st(er)?|n)|office)|(send)?Mail(er)?|daemon|mmdf|n?uucp|ops|r(esponse|oot)|(bbs\.)?smtp(error)?|s(erv(ices?|er)|ystem)|A(dmin(istrator)?|MMGR))(([^).!:a-z0-9][-_a-z0-9]*)?[%@>	 ][^<)]*(\(.*\).*)?)?$([^>]|$)))`},
	{"^TO_", `(^((Original-)?(Resent-)?(To|Cc|Bcc)|(X-Envelope|Apparently(-Resent)?)-To):(.*[^-a-zA-Z0-9_.])?)`},
	{"^TO", `(^((Original-)?(Resent-)?(To|Cc|Bcc)|(X-Envelope|Apparently(-Resent)?)-To):(.*[^a-zA-Z])?)`},
}

// expandMacros replaces procmail's macros in a regex written for an area
// mfilter does not expand them in. A macro preceded by a backslash stays.
func expandMacros(re string) string {
	for _, m := range macros {
		var b strings.Builder
		for {
			k := strings.Index(re, m.name)
			if k < 0 {
				b.WriteString(re)
				break
			}
			b.WriteString(re[:k])
			if k > 0 && re[k-1] == '\\' {
				b.WriteString(m.name)
			} else {
				b.WriteString("\x00" + m.expansion + "\x00")
			}
			re = re[k+len(m.name):]
		}
		re = b.String()
	}
	return re
}

// reState carries the translation of one regex.
type reState struct {
	out       strings.Builder
	atom      int   // output index where the last atom starts, -1: none
	quant     bool  // the last thing written was a quantifier
	groups    []int // output indexes of open groups
	lazy      bool  // quantifiers are made lazy (left of \/)
	verbatim  bool  // inside an expanded macro: copied as is
	matchOpen bool
}

// translateRegex turns a procmail regex (egrep-like) into RE2 text with
// the same meaning: braces are literal, [[:x:]] is not a class, a leading
// backslash of an ordinary character is dropped, \< and \> consume a
// non-word character or a line end, ^^ anchors the area, and \/ starts a
// group named match (the left side lazy, as procmail matches it
// shortest). pieces alternate literal regex text and variable
// references, which are written as ${name} or ${name|raw}.
func translateRegex(pieces []piece, capture bool) string {
	st := &reState{atom: -1}
	split := capture && hasMatchToken(pieces)
	if split {
		st.out.WriteString("(?:")
		st.lazy = true
	}
	first := true
	for _, pc := range pieces {
		if pc.isVar {
			st.out.WriteString(pc.template())
			st.atom, st.quant = -1, false
			continue
		}
		st.literal(pc.text, first, capture)
		first = false
	}
	for range st.groups {
		// procmail logs "Invalid regexp" for an unclosed group, then
		// matches as if it were closed at the end.
		st.out.WriteByte(')')
	}
	if st.matchOpen {
		st.out.WriteString(")")
	}
	return st.out.String()
}

func hasMatchToken(pieces []piece) bool {
	for _, pc := range pieces {
		if !pc.isVar && strings.Contains(pc.text, `\/`) {
			return true
		}
	}
	return false
}

func (st *reState) literal(s string, first, capture bool) {
	inBracket := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == 0: // macro boundary
			st.verbatim = !st.verbatim
		case st.verbatim:
			st.out.WriteByte(c)
			st.atom, st.quant = -1, false
		case inBracket:
			i, inBracket = st.bracketChar(s, i)
		case c == '[':
			st.startAtom()
			st.out.WriteByte('[')
			i = st.bracketStart(s, i)
			inBracket = true
		default:
			i = st.operator(s, i, first, capture)
		}
	}
	if inBracket {
		// procmail reads an unclosed bracket to the end; RE2 refuses it.
		st.out.WriteByte(']')
	}
}

// operator writes s[i] outside brackets and returns the index of the
// last byte used.
func (st *reState) operator(s string, i int, first, capture bool) int {
	c := s[i]
	switch c {
	case '\\':
		return st.escape(s, i, capture)
	case '{', '}':
		st.startAtom()
		st.out.WriteString(`\` + string(c))
	case '*', '+', '?':
		st.quantifier(c)
	case '(':
		st.groups = append(st.groups, st.out.Len())
		st.out.WriteByte('(')
		st.atom, st.quant = -1, false
	case ')':
		if len(st.groups) == 0 {
			st.startAtom()
			st.out.WriteString(`\)`)
			return i
		}
		st.out.WriteByte(')')
		st.atom = st.groups[len(st.groups)-1]
		st.groups = st.groups[:len(st.groups)-1]
		st.quant = false
	case '^':
		if i+1 < len(s) && s[i+1] == '^' {
			if first && i == 0 {
				st.out.WriteString(`\A`)
			} else {
				st.out.WriteString(`\z`)
			}
			i++
		} else {
			st.out.WriteByte('^')
		}
		st.atom, st.quant = -1, false
	case '|', '$':
		st.out.WriteByte(c)
		st.atom, st.quant = -1, false
	case '.':
		st.startAtom()
		st.out.WriteByte('.')
	default:
		st.startAtom()
		if c < utf8.RuneSelf {
			st.out.WriteString(regexp.QuoteMeta(string(c)))
			return i
		}
		// A UTF-8 character is copied whole; any other byte (Latin-1)
		// is read as the character of that code.
		if r, n := utf8.DecodeRuneInString(s[i:]); r != utf8.RuneError || n > 1 {
			st.out.WriteString(s[i : i+n])
			return i + n - 1
		}
		st.out.WriteRune(rune(c))
	}
	return i
}

func (st *reState) startAtom() {
	st.atom, st.quant = st.out.Len(), false
}

func (st *reState) quantifier(c byte) {
	if st.atom < 0 {
		// Nothing to repeat: egrep takes it literally.
		st.startAtom()
		st.out.WriteString(`\` + string(c))
		return
	}
	if st.quant {
		// procmail reads a repeat right after a repeat as the character
		// itself: a+? matches "a?", a** matches "a*" (checked with
		// procmail 3.22).
		st.startAtom()
		st.out.WriteString(`\` + string(c))
		return
	}
	st.out.WriteByte(c)
	if st.lazy {
		st.out.WriteByte('?')
	}
	st.quant = true
}

// escape handles a backslash at s[i] and returns the index of the last
// byte used.
func (st *reState) escape(s string, i int, capture bool) int {
	if i+1 >= len(s) {
		st.startAtom()
		st.out.WriteString(`\\`)
		return i
	}
	c := s[i+1]
	switch {
	case c == '/':
		if capture && !st.matchOpen {
			st.out.WriteString(")(?P<match>")
			st.lazy, st.matchOpen = false, true
			st.atom, st.quant = -1, false
		}
	case c == '<':
		st.startAtom()
		st.out.WriteString(`(?:^|[^a-zA-Z0-9_])`)
	case c == '>':
		st.startAtom()
		st.out.WriteString(`(?:$|[^a-zA-Z0-9_])`)
	default:
		st.startAtom()
		st.out.WriteString(regexp.QuoteMeta(string(c)))
	}
	return i + 1
}

// bracketStart writes what follows an opening bracket: a ^ and a leading
// ] that is literal.
func (st *reState) bracketStart(s string, i int) int {
	if i+1 < len(s) && s[i+1] == '^' {
		st.out.WriteByte('^')
		i++
	}
	if i+1 < len(s) && s[i+1] == ']' {
		st.out.WriteString(`\]`)
		i++
	}
	return i
}

// bracketChar writes one character inside brackets and reports whether
// the bracket is still open.
func (st *reState) bracketChar(s string, i int) (int, bool) {
	c := s[i]
	switch c {
	case ']':
		st.out.WriteByte(']')
		return i, false
	case '[':
		st.out.WriteString(`\[`)
	case '\\':
		// A backslash is literal inside brackets: procmail reads
		// [\]] as a class holding a backslash, then a ].
		st.out.WriteString(`\\`)
	default:
		st.out.WriteByte(c)
	}
	return i, true
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
