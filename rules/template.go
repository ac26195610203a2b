package rules

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Template is a string with ${variable} references, optionally filtered:
// ${list|lower}, ${list|upper}, ${list|replace . _},
// ${list|sub /REGEX/REPLACEMENT/}, ${date|strftime %Y-%m}. "$$" is a
// literal $.
type Template struct {
	Pos
	Source string
	// Optional marks an argument of a program, {optional: TEMPLATE}, that
	// is left out when it expands to the empty string.
	Optional bool
	parts    []tmplPart
}

type tmplPart struct {
	lit string
	ref *varRef
}

type varRef struct {
	Pos
	name    string
	filters []filter
	// raw inserts the value into a pattern as regex text (${name|raw});
	// without it the value is matched literally.
	raw bool
}

// filter is one |filter of a reference.
type filter struct {
	name string   // lower, upper, trim, replace, sub, strftime
	args []string // replace: OLD NEW; strftime: FORMAT
	re   *regexp.Regexp
	repl string // sub: the replacement, in regexp.Expand's syntax
}

// maxSubRegex bounds the regex of a sub filter, as a pattern's is.
const maxSubRegex = MaxPatternSize

// Literal reports whether t has no variable references.
func (t *Template) Literal() bool {
	for _, p := range t.parts {
		if p.ref != nil {
			return false
		}
	}
	return true
}

// refs lists the variable references in t.
func (t *Template) refs() []*varRef {
	var out []*varRef
	for _, p := range t.parts {
		if p.ref != nil {
			out = append(out, p.ref)
		}
	}
	return out
}

// parseTemplate parses s found at pos; the column of a reference is
// reported when s is on one line.
func parseTemplate(pos Pos, s string) (*Template, error) {
	return parseTmpl(pos, s, false)
}

// parseTmpl parses a template, or with pattern set the text of a regex:
// there only "${" starts a reference (a lone $ is the anchor, "\$" and
// every other escape stay regex text) and ${name|raw} is allowed.
func parseTmpl(pos Pos, s string, pattern bool) (*Template, error) {
	t := &Template{Pos: pos, Source: s}
	var lit strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if pattern && c == '\\' && i+1 < len(s) {
			lit.WriteString(s[i : i+2])
			i += 2
			continue
		}
		if c != '$' || pattern && (i+1 >= len(s) || s[i+1] != '{') {
			lit.WriteByte(c)
			i++
			continue
		}
		if !pattern && i+1 < len(s) && s[i+1] == '$' {
			lit.WriteByte('$')
			i += 2
			continue
		}
		if i+1 >= len(s) || s[i+1] != '{' {
			return nil, &Error{colAt(pos, i), "a lone $ (write $$ for a dollar sign, ${name} for a variable)"}
		}
		ref, end, err := scanRef(colAt(pos, i), s, i+2, pattern)
		if err != nil {
			return nil, err
		}
		if lit.Len() > 0 {
			t.parts = append(t.parts, tmplPart{lit: lit.String()})
			lit.Reset()
		}
		t.parts = append(t.parts, tmplPart{ref: ref})
		i = end
	}
	if lit.Len() > 0 || len(t.parts) == 0 {
		t.parts = append(t.parts, tmplPart{lit: lit.String()})
	}
	return t, nil
}

func colAt(p Pos, off int) Pos {
	p.Col += off
	return p
}

// scanRef reads the reference whose body starts at s[i] (after "${") up
// to its closing brace; end is the index after it. A sub filter's regex
// and replacement run to their delimiters, so they may hold | and }.
func scanRef(pos Pos, s string, i int, pattern bool) (ref *varRef, end int, err error) {
	j := i
	for j < len(s) && s[j] != '|' && s[j] != '}' {
		j++
	}
	if j >= len(s) {
		return nil, 0, &Error{pos, "unterminated ${"}
	}
	name := strings.TrimSpace(s[i:j])
	if !validName(name) {
		return nil, 0, &Error{pos, fmt.Sprintf("bad variable name %q in ${%s}", name, refBody(s, i))}
	}
	ref = &varRef{Pos: pos, name: name}
	for s[j] == '|' {
		var f filter
		f, j, err = scanFilter(pos, s, j+1, pattern)
		if err != nil {
			return nil, 0, err
		}
		if f.name == "raw" {
			ref.raw = true
			continue
		}
		if f.name == "strftime" && (name != "date" || len(ref.filters) > 0) {
			return nil, 0, &Error{pos, "filter strftime formats the date: write ${date|strftime FORMAT}"}
		}
		ref.filters = append(ref.filters, f)
	}
	return ref, j + 1, nil
}

// refBody is the text of a reference from i for error messages: up to
// its first closing brace.
func refBody(s string, i int) string {
	if k := strings.IndexByte(s[i:], '}'); k >= 0 {
		return s[i : i+k]
	}
	return s[i:]
}

// scanFilter reads the filter starting at s[i] (after its "|"); j is
// the index of the "|" or "}" after it.
func scanFilter(pos Pos, s string, i int, pattern bool) (f filter, j int, err error) {
	for i < len(s) && s[i] == ' ' {
		i++
	}
	j = i
	for j < len(s) && s[j] != ' ' && s[j] != '\t' && s[j] != '|' && s[j] != '}' {
		j++
	}
	f.name = s[i:j]
	if f.name == "sub" {
		return scanSub(pos, s, j)
	}
	k := j
	for k < len(s) && s[k] != '|' && s[k] != '}' {
		k++
	}
	if k >= len(s) {
		return f, 0, &Error{pos, "unterminated ${"}
	}
	rest := s[j:k]
	args := strings.Fields(rest)
	switch f.name {
	case "":
		return f, 0, &Error{pos, fmt.Sprintf("empty filter in ${%s}", refBody(s, i))}
	case "lower", "upper", "trim", "raw":
		if len(args) != 0 {
			return f, 0, &Error{pos, fmt.Sprintf("filter %s takes no arguments", f.name)}
		}
		if f.name == "raw" && !pattern {
			return f, 0, &Error{pos, "filter raw is for variables in a regex only (${name|raw} inserts the value as regex text)"}
		}
	case "replace":
		if len(args) != 2 {
			return f, 0, &Error{pos, "filter replace takes two arguments: replace OLD NEW"}
		}
		f.args = args
	case "or":
		// The text is kept as written, inner blanks included: it is
		// what procmail's ${name:-text} gives.
		f.args = []string{strings.TrimPrefix(rest, " ")}
	case "strftime":
		format := strings.TrimSpace(rest)
		if format == "" {
			return f, 0, &Error{pos, "filter strftime takes a format: strftime %Y-%m-%d"}
		}
		f.args = []string{format}
	default:
		return f, 0, &Error{pos, fmt.Sprintf("unknown filter %q (known: lower, upper, trim, replace OLD NEW, sub /REGEX/REPLACEMENT/, or TEXT, strftime FORMAT)", f.name)}
	}
	return f, k, nil
}

// scanSub reads the rest of a sub filter from s[i] (after "sub"): a
// blank, a punctuation delimiter, the regex, the replacement, the
// delimiter again. A backslash before the delimiter makes it part of
// the text.
func scanSub(pos Pos, s string, i int) (f filter, j int, err error) {
	f.name = "sub"
	bad := &Error{pos, "filter sub is written sub /REGEX/REPLACEMENT/ (any punctuation may stand for /)"}
	if i >= len(s) || s[i] != ' ' {
		return f, 0, bad
	}
	for i < len(s) && s[i] == ' ' {
		i++
	}
	if i >= len(s) || !isDelim(s[i]) {
		return f, 0, bad
	}
	d := s[i]
	expr, i, ok := untilDelim(s, i+1, d)
	if !ok {
		return f, 0, bad
	}
	repl, i, ok := untilDelim(s, i, d)
	if !ok {
		return f, 0, bad
	}
	for i < len(s) && s[i] == ' ' {
		i++
	}
	if i >= len(s) || s[i] != '|' && s[i] != '}' {
		return f, 0, bad
	}
	if len(expr) > maxSubRegex {
		return f, 0, &Error{pos, fmt.Sprintf("the regex of filter sub is longer than %d bytes", maxSubRegex)}
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return f, 0, &Error{pos, fmt.Sprintf("bad regex %q in filter sub: %s", expr, strings.TrimPrefix(err.Error(), "error parsing regexp: "))}
	}
	f.re, f.repl, f.args = re, repl, []string{expr, repl}
	return f, i, nil
}

func isDelim(c byte) bool {
	return c > ' ' && c < 0x7f && c != '\\' && c != '|' && c != '}' &&
		!(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9')
}

// untilDelim reads from s[i] to the next delimiter d not escaped by a
// backslash; it returns the text (escaped delimiters unescaped) and the
// index after the delimiter.
func untilDelim(s string, i int, d byte) (string, int, bool) {
	var b strings.Builder
	for ; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s) && s[i+1] == d:
			b.WriteByte(d)
			i++
		case s[i] == '\\' && i+1 < len(s):
			b.WriteString(s[i : i+2])
			i++
		case s[i] == d:
			return b.String(), i + 1, true
		default:
			b.WriteByte(s[i])
		}
	}
	return "", 0, false
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || c == '-' || c == '.' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9' {
			continue
		}
		return false
	}
	return true
}

// Expand substitutes variables. lookup returns a variable's value and
// whether it comes from the message (a capture, the envelope, or a set:
// that may hold either); such values pass through clean (when non-nil)
// after their filters, so that message data cannot inject path separators
// or line breaks where they do harm. tainted reports whether any did.
// ${date|strftime ...} formats the current time.
func (t *Template) Expand(lookup func(string) (string, bool), clean func(string) string) (s string, tainted bool) {
	return t.expandAt(lookup, clean, time.Now())
}

// expandAt is Expand with now as the time strftime formats.
func (t *Template) expandAt(lookup func(string) (string, bool), clean func(string) string, now time.Time) (s string, tainted bool) {
	if len(t.parts) == 1 && t.parts[0].ref == nil {
		return t.parts[0].lit, false
	}
	var b strings.Builder
	for _, p := range t.parts {
		if p.ref == nil {
			b.WriteString(p.lit)
			continue
		}
		v, taint := p.ref.value(lookup, now)
		if taint {
			tainted = true
			if clean != nil {
				v = clean(v)
			}
		}
		if b.Len()+len(v) > MaxExpansion {
			// check bounds what it can see; message data that still
			// grows past the bound is cut there.
			b.WriteString(v[:max(0, MaxExpansion-b.Len())])
			break
		}
		b.WriteString(v)
	}
	return b.String(), tainted
}

// value is r's variable with r's filters applied.
func (r *varRef) value(lookup func(string) (string, bool), now time.Time) (string, bool) {
	v, taint := lookup(r.name)
	for _, f := range r.filters {
		switch f.name {
		case "lower":
			v = strings.ToLower(v)
		case "upper":
			v = strings.ToUpper(v)
		case "trim":
			v = strings.TrimSpace(v)
		case "replace":
			v = strings.ReplaceAll(v, f.args[0], f.args[1])
		case "sub":
			v = subFirst(f.re, f.repl, v)
		case "strftime":
			v = strftime(now, f.args[0])
		case "or":
			if v == "" {
				v, taint = f.args[0], false
			}
		}
	}
	return v, taint
}

// subFirst replaces the first match of re in v by repl, expanded as
// regexp.Expand does ($1, ${1}, ${name}).
func subFirst(re *regexp.Regexp, repl, v string) string {
	m := re.FindStringSubmatchIndex(v)
	if m == nil {
		return v
	}
	var b []byte
	b = append(b, v[:m[0]]...)
	b = re.ExpandString(b, repl, v, m)
	if len(b) > MaxExpansion {
		b = b[:MaxExpansion]
	}
	return string(b) + v[m[1]:]
}
