package rules

import (
	"fmt"
	"strings"
)

// Template is a string with ${variable} references, optionally filtered:
// ${list|lower}, ${list|upper}, ${list|replace . _}. "$$" is a literal $.
type Template struct {
	Pos
	Source string
	parts  []tmplPart
}

type tmplPart struct {
	lit string
	ref *varRef
}

type varRef struct {
	Pos
	name    string
	filters [][]string // each: filter name, then its arguments
}

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
	t := &Template{Pos: pos, Source: s}
	var lit strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if c != '$' {
			lit.WriteByte(c)
			i++
			continue
		}
		if i+1 < len(s) && s[i+1] == '$' {
			lit.WriteByte('$')
			i += 2
			continue
		}
		if i+1 >= len(s) || s[i+1] != '{' {
			return nil, &Error{colAt(pos, i), "a lone $ (write $$ for a dollar sign, ${name} for a variable)"}
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return nil, &Error{colAt(pos, i), "unterminated ${"}
		}
		body := s[i+2 : i+end]
		ref, err := parseRef(colAt(pos, i), body)
		if err != nil {
			return nil, err
		}
		if lit.Len() > 0 {
			t.parts = append(t.parts, tmplPart{lit: lit.String()})
			lit.Reset()
		}
		t.parts = append(t.parts, tmplPart{ref: ref})
		i += end + 1
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

func parseRef(pos Pos, body string) (*varRef, error) {
	fields := strings.Split(body, "|")
	name := strings.TrimSpace(fields[0])
	if !validName(name) {
		return nil, &Error{pos, fmt.Sprintf("bad variable name %q in ${%s}", name, body)}
	}
	r := &varRef{Pos: pos, name: name}
	for _, f := range fields[1:] {
		args := strings.Fields(f)
		if len(args) == 0 {
			return nil, &Error{pos, fmt.Sprintf("empty filter in ${%s}", body)}
		}
		switch args[0] {
		case "lower", "upper", "trim":
			if len(args) != 1 {
				return nil, &Error{pos, fmt.Sprintf("filter %s takes no arguments", args[0])}
			}
		case "replace":
			if len(args) != 3 {
				return nil, &Error{pos, "filter replace takes two arguments: replace OLD NEW"}
			}
		default:
			return nil, &Error{pos, fmt.Sprintf("unknown filter %q (known: lower, upper, trim, replace OLD NEW)", args[0])}
		}
		r.filters = append(r.filters, args)
	}
	return r, nil
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
func (t *Template) Expand(lookup func(string) (string, bool), clean func(string) string) (s string, tainted bool) {
	if len(t.parts) == 1 && t.parts[0].ref == nil {
		return t.parts[0].lit, false
	}
	var b strings.Builder
	for _, p := range t.parts {
		if p.ref == nil {
			b.WriteString(p.lit)
			continue
		}
		v, taint := lookup(p.ref.name)
		for _, f := range p.ref.filters {
			switch f[0] {
			case "lower":
				v = strings.ToLower(v)
			case "upper":
				v = strings.ToUpper(v)
			case "trim":
				v = strings.TrimSpace(v)
			case "replace":
				v = strings.ReplaceAll(v, f[1], f[2])
			}
		}
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
