package rules

import (
	"bytes"
	"strings"

	"github.com/mfilter/mfilter/internal/mailfmt"
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
// every field starting with the rest (formail's prefix match). The header
// is what formail reads as one: the fields from the top up to the first
// line that is not a field; like formail, the result always has a blank
// line after it (one is added when the header ended at a non-field line),
// and no blanks between a field name and its colon ("Name :" becomes
// "Name:", formail's cleanheader).
// Unlike formail, a CRLF message gets CRLF lines and keeps its own blank
// line "\r\n" instead of getting a bare "\n" added.
func editHeader(msg []byte, op, name, field, to string) []byte {
	fields := mailfmt.HeaderFields(msg)
	eol := "\n"
	if i := bytes.IndexByte(msg, '\n'); i > 0 && msg[i-1] == '\r' {
		eol = "\r\n"
	}
	match := func(n string) bool {
		if strings.HasSuffix(name, "*") {
			pre := strings.TrimSuffix(name, "*")
			return len(n) >= len(pre) && strings.EqualFold(n[:len(pre)], pre)
		}
		return strings.EqualFold(n, name)
	}
	fieldName := func(f mailfmt.HeaderField) string {
		if bytes.HasPrefix(f.Name, []byte("From ")) && len(f.Name) == 5 {
			return "" // the From_ line is not a field
		}
		return strings.TrimRight(strings.TrimSuffix(string(f.Name), ":"), " \t")
	}
	if op == "add-if-missing" {
		for _, f := range fields {
			if n := fieldName(f); n != "" && match(n) {
				return msg
			}
		}
	}
	hdrEnd := 0
	if len(fields) > 0 {
		hdrEnd = fields[len(fields)-1].End
	}
	var out bytes.Buffer
	out.Grow(len(msg) + len(field) + 16)
	for _, f := range fields {
		text := msg[f.Start:f.End]
		if bytes.HasSuffix(f.Name, []byte(":")) && bytes.ContainsAny(f.Name, " \t") {
			// formail's cleanheader: no blanks between name and colon.
			clean := append([]byte(nil), bytes.TrimRight(f.Name[:len(f.Name)-1], " \t")...)
			text = append(append(clean, ':'), text[len(f.Name):]...)
		}
		n := fieldName(f)
		if n == "" || !match(n) {
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
			out.Write(text[len(n):])
		default:
			out.Write(text)
		}
	}
	if out.Len() > 0 && out.Bytes()[out.Len()-1] != '\n' {
		out.WriteString(eol) // the last field lacked its newline
	}
	if op != "remove" && op != "rename" {
		out.WriteString(field)
		out.WriteString(eol)
	}
	rest := msg[hdrEnd:]
	if !bytes.HasPrefix(rest, []byte("\n")) && !bytes.HasPrefix(rest, []byte("\r\n")) {
		out.WriteString(eol)
	}
	out.Write(rest)
	return out.Bytes()
}
