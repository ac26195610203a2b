package mailfmt

import (
	"bytes"
	"time"
)

// MboxBytes returns what is appended to an mbox for msg: a From_ line
// (kept, or generated as formail does when msg has none, or has one
// without a date that mbox readers accept: see ReadablePostmark), the
// message with procmail's Content-Length rewrite and ">From " escaping,
// and the trailing newline rule. With mboxrd, every line (after the first) that
// matches ^>*From gets one more '>', and a message without a final
// newline gets one before the blank line, so that reading it back
// (SplitOptions.Mboxrd) gives the message with only that newline and the
// blank line added.
func MboxBytes(msg []byte, now func() []byte, berkeley, mboxrd bool) []byte {
	owned := false // msg is a copy made here
	if gen, rest := fromLineToGenerate(msg, now); gen != nil {
		// One byte more, for the blank line forceBlank may add.
		m := make([]byte, 0, len(gen)+len(rest)+1)
		msg, owned = append(append(m, gen...), rest...), true
	}
	// A view: each edit below copies before it changes anything, so
	// msg's bytes are copied only when they must change.
	data, l := prepareView(msg, berkeley)
	if owned && len(data) == len(msg) && len(data) > 0 && &data[0] == &msg[0] {
		data = msg // the copy above: its spare byte takes the closing blank line
	}
	if mboxrd {
		data = escapeMboxrd(data)
		// mboxrd is mfilter's own format, not procmail's: every message
		// ends in a newline and a blank line, so that the next From_
		// line always follows a blank line and a reader can split at it.
		if len(data) > 0 && data[len(data)-1] != '\n' {
			data = append(data, '\n')
		}
	} else {
		data = escapeFrom(data, unescapedContentLength(data, l))
	}
	return forceBlank(data)
}

// unescapedContentLength returns l, with the Content-Length body that
// escapeFrom leaves unescaped taken back where readers cannot use the
// length. procmail leaves those bytes unescaped even then: when the
// length is wrong (the number did not fit the field, which procmail fills
// with 9s, or the field is empty), or when the header holds a line that
// is no field, where formail and the Splitter end the header and so count
// the body from elsewhere. A "From " line there would split the message;
// mfilter escapes it.
func unescapedContentLength(data []byte, l layout) layout {
	if l.restbody >= l.body && (l.restbody-l.body != bodyCount(data, l) || !plainHeader(data[:l.body])) {
		l.restbody = max(l.body-1, 0)
	}
	return l
}

// plainHeader reports whether header (up to and including its blank
// line) is what a reader takes for a header: after the From_ line and its
// '>' lines, only fields and their continuation lines.
func plainHeader(header []byte) bool {
	lines := bytes.SplitAfter(header, []byte("\n"))
	i := 0
	if len(lines) > 0 && HasFromLine(lines[0]) {
		for i = 1; i < len(lines) && bytes.HasPrefix(lines[i], []byte(">")); i++ {
		}
	}
	for ; i < len(lines); i++ {
		line := lines[i]
		if len(line) == 0 || line[0] == '\n' {
			return i >= len(lines)-2 // the blank line ends the header
		}
		if line[0] == ' ' || line[0] == '\t' {
			if i == 0 {
				return false
			}
			continue
		}
		if n := fieldNameLen(line); n <= 0 || n == len("From ") && bytes.HasPrefix(line, []byte("From ")) {
			return false
		}
	}
	return true
}

// bodyCount is the body length that procmail writes into Content-Length:
// the final newline of a message that ends in a blank line is the
// separator and does not count.
func bodyCount(data []byte, l layout) int {
	n := len(data)
	c := n - l.body
	if n > 1 && data[n-2] == '\n' {
		c--
	}
	return max(c, 0)
}

// escapeMboxrd adds '>' to every line after the first that matches
// ^>*From , so that readers can strip exactly one '>' back off.
func escapeMboxrd(data []byte) []byte {
	var out []byte
	last := 0
	for i := 0; ; {
		j := bytes.IndexByte(data[i:], '\n')
		if j < 0 {
			break
		}
		p := i + j + 1
		i = p
		q := p
		for q < len(data) && data[q] == '>' {
			q++
		}
		if !bytes.HasPrefix(data[q:], []byte("From ")) {
			continue
		}
		if out == nil {
			out = make([]byte, 0, len(data)+64)
		}
		out = append(out, data[last:p]...)
		out = append(out, '>')
		last = p
	}
	if out == nil {
		return data
	}
	return append(out, data[last:]...)
}

// MboxParts is MboxBytes in pieces, so that a large message that gets a
// From_ line is not copied to put it in front: the generated line, the
// message (a view of msg where nothing in it changes), and the closing
// blank line. Where the generated line could change how the rest is read
// (msg then starts with an empty line, a '>' line or another From_
// line), and in mboxrd, it is MboxBytes whole.
func MboxParts(msg []byte, now func() []byte, berkeley, mboxrd bool) [][]byte {
	gen, rest := fromLineToGenerate(msg, now)
	if gen == nil || mboxrd || len(rest) == 0 || rest[0] == '\n' || rest[0] == '>' || HasFromLine(rest) {
		return [][]byte{MboxBytes(msg, now, berkeley, mboxrd)}
	}
	data, l := prepareView(rest, berkeley)
	data = escapeFrom(data, unescapedContentLength(data, l))
	var tail []byte
	if n := len(data); n < 2 || data[n-1] != '\n' || data[n-2] != '\n' {
		tail = []byte{'\n'}
	}
	return [][]byte{gen, data, tail}
}

// fromLineToGenerate returns the From_ line MboxBytes puts in front of
// msg and the rest of msg after it, or nil when msg keeps its own: a
// message without a From_ line gets one, and so does one whose From_
// line has no date mbox readers accept ("From -", Gmail Takeout's "From
// 1844347792267117879@xxx": Dovecot refuses an mbox that starts with such
// a line, and neither it nor mutt splits at one later on).
func fromLineToGenerate(msg []byte, now func() []byte) (gen, rest []byte) {
	if !HasFromLine(msg) {
		return now(), msg
	}
	first, _ := cutLine(msg)
	if fieldNameLen(first) != len("From ") || ReadablePostmark(first) {
		return nil, msg
	}
	gen = now()
	if bytes.HasSuffix(first, []byte("\r\n")) {
		gen = append(gen[:len(gen)-1:len(gen)-1], '\r', '\n') // the line end it replaces
	}
	return gen, msg[len(first):]
}

// MboxFromLine is the From_ line written for a message that has none:
// GeneratedFromLine, unless the sender it finds would not read back as a
// From_ line: empty, with blanks or control characters in it, or one that
// makes the line look like a header field ("From :  Tue Jan ..." from a
// "From: :" field; formail and the Splitter take blanks before a colon as
// part of a field name). Then the sender is UnknownSender, as formail
// writes when it finds none.
func MboxFromLine(msg []byte, now time.Time) []byte {
	addr := EnvelopeSender(msg)
	line := FromLine(addr, now)
	ok := addr != "" && fieldNameLen(line) == len("From ")
	for i := 0; ok && i < len(addr); i++ {
		ok = addr[i] > ' ' && addr[i] != 0x7f
	}
	if !ok {
		line = FromLine(UnknownSender, now)
	}
	return line
}
