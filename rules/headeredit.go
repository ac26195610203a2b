package rules

import (
	"bytes"
	"strings"
)

// editHeader applies one header edit to a raw message the way formail's
// options do, leaving every other byte alone:
//
//	add             formail -A 'F: v'  append the field at the end of the header
//	add-if-missing  formail -a 'F: v'  append only if no F field exists
//	set             formail -I 'F: v'  delete every F field, then append
//	supersede       formail -i 'F: v'  rename every F field to Old-F, then append
//	remove          formail -I 'F:'    delete every F field
//	rename          formail -R F: G:   rename every F field to G in place
//
// Field names match case-insensitively; a name ending in '*' matches
// every field starting with the rest (formail's prefix match).
func editHeader(msg []byte, op, name, field, to string) []byte {
	hdrStart := 0
	if bytes.HasPrefix(msg, []byte("From ")) {
		if i := bytes.IndexByte(msg, '\n'); i >= 0 {
			hdrStart = i + 1
		} else {
			hdrStart = len(msg)
		}
	}
	eol := "\n"
	if i := bytes.IndexByte(msg, '\n'); i > 0 && msg[i-1] == '\r' {
		eol = "\r\n"
	}
	// Split the header into fields (with continuation lines) up to the
	// blank line; anything that is not a field is kept as it is.
	type span struct {
		start, end int
		name       string
	}
	var fields []span
	p := hdrStart
	bodyAt := len(msg)
	blank := false
	for p < len(msg) {
		line := lineAt(msg, p)
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			bodyAt, blank = p, true
			break
		}
		end := p + len(line)
		for end < len(msg) && (msg[end] == ' ' || msg[end] == '\t') {
			end += len(lineAt(msg, end))
		}
		n := ""
		if c := bytes.IndexByte(line, ':'); c > 0 {
			n = strings.TrimRight(string(line[:c]), " \t")
		}
		fields = append(fields, span{p, end, n})
		p = end
	}
	if !blank {
		bodyAt = len(msg)
	}
	match := func(n string) bool {
		if strings.HasSuffix(name, "*") {
			pre := strings.TrimSuffix(name, "*")
			return len(n) >= len(pre) && strings.EqualFold(n[:len(pre)], pre)
		}
		return strings.EqualFold(n, name)
	}
	exists := false
	for _, f := range fields {
		if f.name != "" && match(f.name) {
			exists = true
		}
	}
	if op == "add-if-missing" && exists {
		return msg
	}
	var out bytes.Buffer
	out.Grow(len(msg) + len(field) + 16)
	out.Write(msg[:hdrStart])
	for _, f := range fields {
		text := msg[f.start:f.end]
		if f.name == "" || !match(f.name) {
			out.Write(text)
			continue
		}
		switch op {
		case "set", "remove":
			// dropped
		case "supersede":
			out.WriteString("Old-")
			out.Write(text)
		case "rename":
			out.WriteString(to)
			out.Write(text[len(f.name):])
		default:
			out.Write(text)
		}
	}
	tail := msg[bodyAt:]
	if op != "remove" && op != "rename" {
		if last := out.Bytes(); len(last) > hdrStart && last[len(last)-1] != '\n' {
			out.WriteString(eol) // the header's last line lacked its newline
		}
		out.WriteString(field)
		out.WriteString(eol)
		if !blank && len(tail) == 0 {
			// formail always ends a header with a blank line.
			out.WriteString(eol)
		}
	}
	out.Write(tail)
	return out.Bytes()
}

func lineAt(b []byte, p int) []byte {
	if i := bytes.IndexByte(b[p:], '\n'); i >= 0 {
		return b[p : p+i+1]
	}
	return b[p:]
}
