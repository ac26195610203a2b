package mailfmt

import (
	"bytes"
	"strings"
	"time"
)

// UnknownSender is what formail writes in a From_ line when a message
// names no sender at all.
const UnknownSender = "foo@bar"

// senderFields lists the header fields formail weighs when it picks the
// envelope sender for a From_ line, least trusted first: the index is the
// weight (formail.c, table sest).
var senderFields = []string{
	"reply-to:", "from:", "sender:", "resent-reply-to:", "resent-from:",
	"resent-sender:", "path:", "return-receipt-to:", "errors-to:",
	"return-path:", "from ",
}

// GeneratedFromLine is the From_ line formail puts on a message that has
// none: "From <best sender>  <ctime>".
func GeneratedFromLine(msg []byte, t time.Time) []byte {
	return FromLine(EnvelopeSender(msg), t)
}

// EnvelopeSender picks the sender address the way formail does for a
// generated From_ line: the most trusted of From_, Return-Path, Errors-To,
// Return-Receipt-To, Path, Resent-Sender, Resent-From, Resent-Reply-To,
// Sender, From and Reply-To, reduced to a bare address; bare user names,
// .UUCP, dotless domains and bang paths rank lower; an empty Return-Path
// gives "<>"; with nothing usable it is UnknownSender. Unlike formail,
// the address never holds a line break: the CR of a CRLF line end is
// dropped, and a folded quoted string is unfolded.
func EnvelopeSender(msg []byte) string {
	var (
		best   string
		have   bool
		bestWt int
	)
	const top = 10 // index of the From_ entry
	for i, f := range headerFieldsOf(msg) {
		idx := -1
		fname := f.name
		if n := len(fname); n > 1 && fname[n-1] == ':' {
			// formail deletes blanks before the colon (cleanheader).
			fname = append(bytes.Clone(bytes.TrimRight(fname[:n-1], " \t")), ':')
		}
		for k, name := range senderFields {
			if len(fname) == len(name) && bytes.EqualFold(fname, []byte(name)) {
				idx = k
				break
			}
		}
		if idx < 0 || (idx == top && i != 0) {
			continue
		}
		weight := idx
		// A CR of a CRLF line end is not part of the address (formail
		// keeps it, writing it into the middle of the From_ line).
		val := bytes.TrimSuffix(bytes.ReplaceAll(f.value, []byte("\r\n"), []byte("\n")), []byte("\r"))
		if idx == top {
			val, weight = fromLineAddress(val, weight)
		}
		addr, ok := firstAddress(val)
		if !ok {
			continue
		}
		if addr == "" {
			if idx == top-1 { // Return-Path: <> means the null sender
				best, have, bestWt = "<>", true, top+2
			}
			continue
		}
		const step = top + 2
		switch {
		case !containsAny(addr, "@!/"):
			weight -= step * 4
		case bytes.Contains([]byte(addr), []byte(".UUCP")):
			weight -= step * 3
		case containsAny(addr, "@") && !containsAny(addr, "."):
			weight -= step * 2
		case containsAny(addr, "!"):
			weight -= step
		}
		if !have || weight > bestWt {
			best, have, bestWt = addr, true, weight
		}
	}
	if !have {
		return UnknownSender
	}
	// A quoted string or domain literal may be folded; formail keeps
	// the line break, which breaks the From_ line in two. Unfold it.
	return strings.ReplaceAll(best, "\n", "")
}

func containsAny(s, chars string) bool {
	for i := 0; i < len(s); i++ {
		for j := 0; j < len(chars); j++ {
			if s[i] == chars[j] {
				return true
			}
		}
	}
	return false
}

// fromLineAddress extracts the address of a From_ line value (the text
// after "From "), following the last ">From" continuation and turning
// UUCP "remote from" chains into a bang path, and marks it as a machine
// address by prefixing '<' (formail.c getsender).
func fromLineAddress(val []byte, weight int) ([]byte, int) {
	s := val
	if bytes.IndexByte(s, '\n') >= 0 {
		weight -= 2 // several From_ lines are less trustworthy
	}
	if len(s) > 0 && s[0] == '\n' {
		if sp := bytes.IndexByte(s, ' '); sp >= 0 {
			s = s[sp+1:]
		}
	}
	cur := s
	for {
		nl := bytes.IndexByte(cur, '\n')
		if nl < 0 {
			break
		}
		sp := bytes.IndexByte(cur[nl:], ' ')
		if sp < 0 {
			break
		}
		cur = cur[nl+sp+1:]
	}
	sp := bytes.IndexByte(cur, ' ')
	if sp < 0 {
		return cur, weight
	}
	user := cur[:sp]
	var addr []byte
	if bytes.IndexByte(user, '@') >= 0 {
		addr = bytes.Clone(user)
	} else {
		const remf, fwdb = " remote from ", " forwarded by "
		rest := s
		for {
			p1 := bytes.Index(rest, []byte(remf))
			p2 := bytes.Index(rest, []byte(fwdb))
			if p1 < 0 && p2 < 0 {
				break
			}
			var from int
			if p1 < 0 || (p2 >= 0 && p2 < p1) {
				from = p2 + len(fwdb)
			} else {
				from = p1 + len(remf)
			}
			end := from
			for end < len(rest) && rest[end] != '\n' {
				end++
			}
			addr = append(addr, rest[from:end]...)
			addr = append(addr, '!')
			if end < len(rest) {
				end++
			}
			rest = rest[end:]
		}
		addr = append(addr, user...)
	}
	return append([]byte{'<'}, addr...), weight
}

// firstAddress reduces a header value to one address the way formail's
// skipwords does: the first word, unless a <machine address> follows.
// ok is false when the value holds no word at all.
func firstAddress(val []byte) (string, bool) {
	// NUL-terminated as in C, plus room for the two bytes skipWords adds
	// when it wraps an address with an embedded ',' in <> (formail
	// writes them past its buffer).
	buf := append(bytes.Clone(val), 0, 0, 0)
	p := skipSpace(buf, 0)
	for buf[p] == '\n' {
		p = skipSpace(buf, p+1)
	}
	saddr := -1
	for {
		c := buf[p]
		if c == 0 {
			break
		}
		if c == '<' {
			saddr = p
			skipWords(buf, p)
			break
		}
		if saddr < 0 {
			saddr = p
		}
		p = skipWords(buf, p)
	}
	if saddr < 0 {
		return "", false
	}
	end := bytes.IndexByte(buf[saddr:], 0)
	return string(buf[saddr : saddr+end]), true
}

func skipSpace(buf []byte, p int) int {
	for buf[p] == ' ' || buf[p] == '\t' {
		p++
	}
	return p
}

func skipComment(buf []byte, p int) int {
	for {
		p++
		switch buf[p] {
		case 0:
			return p - 1
		case ')':
			return p
		case '\\':
			p++
		case '(':
			p = skipComment(buf, p)
		}
	}
}

// skipWords compacts one RFC 822 address in place starting at p, NUL
// terminates it where formail does, and returns where parsing stopped.
func skipWords(buf []byte, p int) int {
	w := wordSkipper{buf: buf, group: 1, target: p, oldstart: p, start: p}
	if buf[p] == '<' {
		w.start++
		w.machref = 1
	}
	for {
		if end, done := w.step(); done {
			return end
		}
	}
}

// wordSkipper is the state of formail's skipwords: it reads buf at
// start and writes the compacted address at target.
type wordSkipper struct {
	buf              []byte
	target, oldstart int
	start            int
	// group is 1 before the first word ends, 2 inside a group
	// ("name: a, b;"), else 0.
	group int
	// hitspc is 1 after white space or a comment, 2 after a word, 3
	// after a word and then white space.
	hitspc int
	// machref is 1 inside <>, 2 when a ',' or ';' is inside them, else 0.
	machref int
}

// step reads the next byte or token; done says parsing stopped at end.
func (w *wordSkipper) step() (end int, done bool) {
	c := w.buf[w.start]
	switch c {
	case '<':
		if w.machref == 0 {
			return w.start, true
		}
		w.target, w.hitspc = w.oldstart, 0
		w.start++
	case '(':
		w.start = skipComment(w.buf, w.start)
		w.hitspc |= 1
		w.start++
	case ' ', '\t', '\n':
		w.hitspc |= 1
		w.start++
	case ';', ',':
		return w.separator(c)
	case 0, '>':
		return w.terminate(), true
	case ':', '@', '.':
		if c == ':' && w.group == 1 {
			w.group = 2
		}
		if w.group == 1 {
			w.group = 0
		}
		w.hitspc = 0
		w.take()
	case '[', '"':
		w.quoted(c)
	default:
		return w.word(c)
	}
	return 0, false
}

// take copies the byte at start to target.
func (w *wordSkipper) take() {
	w.buf[w.target] = w.buf[w.start]
	w.target++
	w.start++
}

// separator handles a ',' or ';': part of a group or of a <> address,
// else the end of the address.
func (w *wordSkipper) separator(c byte) (end int, done bool) {
	if c == ';' && w.group == 2 {
		w.buf[w.start+1] = 0
	}
	if w.group == 2 {
		w.hitspc = 0
		w.take()
		return 0, false
	}
	if w.machref != 0 {
		w.machref = 2
		w.hitspc = 0
		w.take()
		return 0, false
	}
	w.buf[w.target] = 0
	return w.start, true
}

// quoted copies a domain literal ([...]) or a quoted string, up to and
// including its closing delimiter.
func (w *wordSkipper) quoted(c byte) {
	delim := byte(']')
	if c == '"' {
		delim = '"'
		w.take()
	}
	for w.buf[w.start] != 0 {
		ch := w.buf[w.start]
		w.take()
		if ch == delim {
			break
		}
		if ch == '\\' && w.buf[w.start] != 0 {
			w.take()
		}
	}
	w.hitspc = 2
}

// word copies one byte of a word (two for a quoted pair); a second word
// after white space ends an address outside <>.
func (w *wordSkipper) word(c byte) (end int, done bool) {
	if w.machref == 0 && w.hitspc == 3 && w.target > w.oldstart {
		return w.terminate(), true
	}
	if c == '\\' && w.buf[w.start+1] != 0 {
		w.buf[w.target] = '\\'
		w.target++
		w.start++
	}
	w.hitspc = 2
	w.take()
	return 0, false
}

// terminate NUL terminates the address, wrapping it in <> when it holds
// a ',' or ';' that must stay inside them.
func (w *wordSkipper) terminate() int {
	if w.machref == 2 {
		w.buf[w.target] = '>'
		w.target++
		copy(w.buf[w.oldstart+1:], w.buf[w.oldstart:w.target])
		w.target++
		w.buf[w.oldstart] = '<'
	}
	w.buf[w.target] = 0
	return w.start
}

// field is one header field as formail reads it: name includes the colon
// (or is "From " for the From_ line); value runs to the end of the field,
// continuation lines included, without the final newline.
type field struct {
	name  []byte
	value []byte
}

// HeaderField is one header field as formail reads it. Name includes the
// colon ("From " for a From_ line); Value runs to the end of the field,
// continuation lines included, without the final newline; Start and End
// are the offsets of the field's text in the message.
type HeaderField struct {
	Name, Value []byte
	Start, End  int
}

// HeaderFields splits the header of msg into fields with formail's rules
// (fields.c readhead, formail.c breakfield): a From_ line only as the first
// field, with '>' continuation lines; a field name is free of control
// characters and may have blanks before its colon; the header ends at the
// first line that is not a field (for a CRLF message that is the "\r\n"
// line, whose CR is a control character).
func HeaderFields(msg []byte) []HeaderField {
	var out []HeaderField
	off := 0
	for off < len(msg) {
		line, next := cutLine(msg[off:])
		n := fieldNameLen(line)
		if n <= 0 {
			break
		}
		isFrom := n == 5 && bytes.HasPrefix(line, []byte("From "))
		if isFrom && len(out) > 0 {
			break
		}
		end := off + len(line)
		for len(next) > 0 && ((isFrom && next[0] == '>') || (!isFrom && (next[0] == ' ' || next[0] == '\t'))) {
			l2, n2 := cutLine(next)
			end += len(l2)
			next = n2
		}
		text := msg[off:end]
		val := text[n:]
		if len(val) > 0 && val[len(val)-1] == '\n' {
			val = val[:len(val)-1]
		}
		out = append(out, HeaderField{Name: text[:n], Value: val, Start: off, End: end})
		off = end
	}
	return out
}

// FieldNameLen is formail's breakfield: the length of the field name of
// line including its colon (5 for a From_ line), or <= 0 if line does not
// start a header field.
func FieldNameLen(line []byte) int { return fieldNameLen(line) }

func headerFieldsOf(msg []byte) []field {
	hf := HeaderFields(msg)
	out := make([]field, len(hf))
	for i, f := range hf {
		out[i] = field{name: f.Name, value: f.Value}
	}
	return out
}

// cutLine returns the first line of b (with its '\n') and the rest.
func cutLine(b []byte) (line, rest []byte) {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i+1], b[i+1:]
	}
	return b, nil
}

// fieldNameLen is formail's breakfield: the length of the field name
// including its colon (5 for a From_ line), or <= 0 if line is not the
// start of a header field.
func fieldNameLen(line []byte) int {
	for p := 0; p < len(line); p++ {
		switch c := line[p]; c {
		case ':':
			if p == 0 {
				return 0
			}
			return p + 1
		case ' ', '\t':
			if p == 0 {
				return -1
			}
			q := p + 1
			for q < len(line) && (line[q] == ' ' || line[q] == '\t') {
				q++
			}
			if q < len(line) && line[q] == ':' {
				return q + 1
			}
			if bytes.HasPrefix(line, []byte("From ")) {
				return 5
			}
			return -1
		default:
			if c < 0x20 || c == 0x7f {
				return -1
			}
		}
	}
	return -1
}
