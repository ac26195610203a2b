package convert

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// The YAML written is built from these: a mapping keeps its order.
type (
	kv struct {
		k string
		v any
	}
	mapping []kv
	seq     []any
	plain   string // written without quotes: true, 3, discard
)

// ruleOut is one item of a rules list, with the comment lines before it;
// m is nil for a comment-only item.
type ruleOut struct {
	comments []string
	m        mapping
}

// flowLimit is the width under which a mapping or list is written on one
// line.
const flowLimit = 72

func quote(s string) string {
	simple := utf8.ValidString(s)
	for _, r := range s {
		if r < ' ' || r == 0x7f || r == '\u2028' || r == '\u2029' || r == 0xfeff {
			simple = false
		}
	}
	if simple {
		return "'" + strings.ReplaceAll(s, "'", "''") + "'"
	}
	return strconv.Quote(s)
}

// flow writes v on one line, or reports that it does not fit.
func flow(v any) (string, bool) {
	switch x := v.(type) {
	case plain:
		return string(x), true
	case string:
		return quote(x), true
	case seq:
		var parts []string
		for _, e := range x {
			s, ok := flow(e)
			if !ok {
				return "", false
			}
			parts = append(parts, s)
		}
		s := "[" + strings.Join(parts, ", ") + "]"
		return s, len(s) <= flowLimit
	case mapping:
		var parts []string
		for _, e := range x {
			s, ok := flow(e.v)
			if !ok {
				return "", false
			}
			parts = append(parts, e.k+": "+s)
		}
		s := "{" + strings.Join(parts, ", ") + "}"
		return s, len(s) <= flowLimit
	}
	return "", false
}

// block writes v as the value of a key (after "key:") at indent.
func block(b *strings.Builder, v any, indent int) {
	if s, ok := flow(v); ok && len(s)+indent <= 100 {
		b.WriteString(" " + s + "\n")
		return
	}
	b.WriteString("\n")
	pad := strings.Repeat(" ", indent+2)
	switch x := v.(type) {
	case seq:
		for _, e := range x {
			b.WriteString(pad + "-")
			item(b, e, indent+2)
		}
	case mapping:
		writeMapping(b, x, indent+2, pad)
	default:
		s, _ := flow(v)
		b.WriteString(pad + s + "\n")
	}
}

// item writes a list item's value after its "-".
func item(b *strings.Builder, v any, indent int) {
	m, ok := v.(mapping)
	if !ok {
		block(b, v, indent)
		return
	}
	if s, ok := flow(m); ok && len(s)+indent <= 100 {
		b.WriteString(" " + s + "\n")
		return
	}
	pad := strings.Repeat(" ", indent+2)
	b.WriteString(" ")
	writeMapping(b, m, indent+2, pad)
}

// writeMapping writes the pairs; the first is on the current line when
// the caller already wrote the indentation.
func writeMapping(b *strings.Builder, m mapping, indent int, pad string) {
	for i, e := range m {
		if i > 0 || !strings.HasSuffix(b.String(), " ") {
			b.WriteString(pad)
		}
		b.WriteString(e.k + ":")
		block(b, e.v, indent)
	}
}

// writeRules writes a rules list at indent.
func writeRules(b *strings.Builder, rules []*ruleOut, indent int) {
	pad := strings.Repeat(" ", indent)
	for _, r := range rules {
		for _, c := range r.comments {
			if c == "" {
				b.WriteString("\n")
				continue
			}
			// YAML must be UTF-8; a Latin-1 comment byte becomes "?".
			b.WriteString(pad + strings.ToValidUTF8(c, "?") + "\n")
		}
		if r.m == nil {
			continue
		}
		b.WriteString(pad + "- ")
		for i, e := range r.m {
			if i > 0 {
				b.WriteString(pad + "  ")
			}
			b.WriteString(e.k + ":")
			if sub, ok := e.v.([]*ruleOut); ok {
				b.WriteString("\n")
				writeRules(b, sub, indent+4)
				continue
			}
			block(b, e.v, indent+2)
		}
	}
}

// comment turns text into YAML comment lines.
func comment(text string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		out = append(out, strings.TrimRight("# "+l, " "))
	}
	return out
}
