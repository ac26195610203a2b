package mailfmt

import (
	"bytes"
	"strconv"
	"time"
)

// This file holds the edits procmail 3.22 makes to a message between
// reading it and writing it (mailfold.c readmail/dump, from.c). They are
// reproduced byte for byte because users compare folders across the
// switch; see ../shared/spec/procmail-behaviour.md §1-2.

// layout is where procmail's reader places the parts of a message.
type layout struct {
	realstart int // one past the first byte that is not a leading '\n'
	body      int // first byte after the header's blank line (len if none)
	restbody  int // >From escaping of the body starts at this offset
}

// prepare applies procmail's read-time edits: the Content-Length value is
// rewritten in place to the real body length (unless berkeley), which
// also decides where body escaping starts. The result never aliases raw.
func prepare(raw []byte, berkeley bool) ([]byte, layout) {
	data, l, copied := prepareMaybeCopy(raw, berkeley)
	if !copied {
		data = bytes.Clone(raw)
	}
	return data, l
}

// prepareView is prepare for callers that only read the result: when
// there is nothing to rewrite it is raw itself, with its capacity cut to
// its length so that appending to it copies.
func prepareView(raw []byte, berkeley bool) ([]byte, layout) {
	data, l, _ := prepareMaybeCopy(raw, berkeley)
	return data, l
}

func prepareMaybeCopy(raw []byte, berkeley bool) (data []byte, l layout, copied bool) {
	n := len(raw)
	p := 0
	for p < n {
		c := raw[p]
		p++
		if c != '\n' {
			break
		}
	}
	l.realstart = p
	var off int
	l.body, off = scanHeader(raw, p, !berkeley)
	l.restbody = l.body
	if l.body > 0 {
		l.restbody = l.body - 1
	}
	if off < 0 {
		return raw[:n:n], l, false
	}
	data = bytes.Clone(raw)
	cntlen := n - l.body
	if n > 1 && data[n-2] == '\n' { // procmail's "no phantom newline" test
		cntlen--
	}
	if cntlen < 0 {
		cntlen = 0
	}
	// Fill the field with 9s (up to 26 digits, then spaces), then put
	// the real number in if it fits, right-aligned. 26 is the size of
	// procmail's number buffer for a long (sizeNUM = 27) less its NUL.
	const maxPlaces = 26
	places, actual := 0, 0
	end := off
	for end < n && data[end] != '\n' && data[end] != 0 {
		if places < maxPlaces {
			data[end] = '9'
			places++
			if actual < 1e17 {
				actual = actual*10 + 9
			}
		} else {
			data[end] = ' '
		}
		end++
	}
	num := strconv.Itoa(cntlen)
	if len(num) <= places {
		copy(data[off:], bytes.Repeat([]byte{' '}, places-len(num)))
		copy(data[off+places-len(num):], num)
		actual = cntlen
	}
	l.restbody = l.body + actual
	return data, l, true
}

// findContentLength returns the offset just past the colon of the first
// header line matching ^Content-Length: (case-insensitively), or -1.
// scanHeader finds, in one pass over the lines of raw from p on (p is
// layout.realstart), where the body starts: past the first blank line, as
// procmail looks for "\n\n" from there (len(raw) if none); and, when
// wantCL, the offset just past the first
// "Content-Length:" that starts a line of the header (-1 if none).
func scanHeader(raw []byte, p int, wantCL bool) (body, cl int) {
	const name = "content-length:"
	n := len(raw)
	isCL := func(s int) bool {
		return wantCL && n-s >= len(name) && raw[s]|0x20 == 'c' && bytes.EqualFold(raw[s:s+len(name)], []byte(name))
	}
	body, cl = n, -1
	// Before p all lines are empty but the one that starts at p-1.
	if p > 0 && isCL(p-1) {
		cl = p - 1 + len(name)
	}
	for i := p; ; {
		j := bytes.IndexByte(raw[i:], '\n')
		if j < 0 {
			return body, cl
		}
		e := i + j
		if e+1 < n && raw[e+1] == '\n' {
			return e + 2, cl // just past the blank line
		}
		i = e + 1
		if cl < 0 && isCL(i) {
			cl = i + len(name)
		}
	}
}

// escapeFrom inserts '>' before every "From " that starts a line where
// procmail escapes it: anywhere in the header after the first line, and
// in the body from l.restbody on (which skips a valid Content-Length
// body). procmail stops looking at a NUL byte (it uses strstr); mfilter
// does not, so a NUL cannot smuggle an unescaped separator into an mbox.
func escapeFrom(data []byte, l layout) []byte {
	const pat = "\nFrom "
	var out []byte
	last := 0
	for i := 0; ; {
		j := bytes.Index(data[i:], []byte(pat))
		if j < 0 {
			break
		}
		p := i + j
		i = p + 1
		inHeader := p >= l.realstart && p+len(pat) <= l.body
		inBody := p >= l.restbody
		if !inHeader && !inBody {
			continue
		}
		if out == nil {
			// Room for every escape and the closing blank line: the
			// message is copied once, whatever its size.
			out = make([]byte, 0, len(data)+bytes.Count(data[p:], []byte(pat))+1)
		}
		out = append(out, data[last:p+1]...)
		out = append(out, '>')
		last = p + 1
	}
	if out == nil {
		return data
	}
	return append(out, data[last:]...)
}

// forceBlank is procmail's rule for files, MH, directories and pipes: one
// '\n' is appended unless the data already ends in "\n\n".
func forceBlank(data []byte) []byte {
	n := len(data)
	if n >= 2 && data[n-1] == '\n' && data[n-2] == '\n' {
		return data
	}
	return append(data, '\n')
}

// skipFromLine drops a leading From_ line and the '>' lines after it, as
// procmail does for maildir (from.c skipFrom_).
func skipFromLine(data []byte) []byte {
	if !bytes.HasPrefix(data, []byte("From ")) {
		return data
	}
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return data[len(data):]
		}
		data = data[i+1:]
		if len(data) == 0 || data[0] != '>' {
			return data
		}
	}
}

// HasFromLine reports whether msg starts with an mbox From_ line.
func HasFromLine(msg []byte) bool { return bytes.HasPrefix(msg, []byte("From ")) }

// Ctime formats t like C's ctime(3), without the trailing newline.
func Ctime(t time.Time) string { return t.Format("Mon Jan _2 15:04:05 2006") }

// FromLine is the From_ line procmail writes for an envelope sender:
// "From " + sender + two spaces + ctime, with its newline.
func FromLine(sender string, t time.Time) []byte {
	return []byte("From " + sender + "  " + Ctime(t) + "\n")
}

// SetEnvelopeSender does what procmail -f SENDER does to a message: leading
// blank lines are dropped and the From_ line is replaced, or created, as
// FromLine(sender, t).
func SetEnvelopeSender(msg []byte, sender string, t time.Time) []byte {
	for len(msg) > 0 && msg[0] == '\n' {
		msg = msg[1:]
	}
	if HasFromLine(msg) {
		if i := bytes.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		} else {
			msg = nil
		}
	}
	line := FromLine(sender, t)
	out := make([]byte, 0, len(line)+len(msg))
	return append(append(out, line...), msg...)
}

// MaildirBytes is what procmail writes into a maildir file for msg: the
// From_ line and its '>' continuation lines are dropped, nothing is
// escaped and nothing is appended. It is msg itself where nothing
// changes.
func MaildirBytes(msg []byte, berkeley bool) []byte {
	data, _ := prepareView(msg, berkeley)
	return skipFromLine(data)
}

// FileBytes is what procmail writes into an MH or directory folder's
// file for msg: the From_ line is kept, nothing is escaped, and the
// message ends with a blank line.
func FileBytes(msg []byte, berkeley bool) []byte {
	data, _ := prepareView(msg, berkeley)
	return forceBlank(data)
}
