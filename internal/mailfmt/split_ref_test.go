package mailfmt

// Generated from the old deliver/split.go; see refSplitter.

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"regexp"
	"strconv"
	"time"
)

// refSplitter is the Splitter as it was before it reused its buffers and
// took body lines in bulk (commit 092a760), kept to check that the two
// split every input alike.
type refSplitter struct {
	lr    *refLineReader
	opts  SplitOptions
	start bool
	// start and end input offsets of the last message returned
	off, end int64
}

// refNewSplitter returns a refSplitter reading r.
func refNewSplitter(r io.Reader, opts SplitOptions) *refSplitter {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxContentLength <= 0 {
		opts.MaxContentLength = 1 << 30
	}
	return &refSplitter{lr: refNewLineReader(r), opts: opts, start: true}
}

// Offsets returns the byte range of the input that the last message
// returned by Next was read from.
func (s *refSplitter) Offsets() (start, end int64) { return s.off, s.end }

// Next returns the next message, or io.EOF after the last one.
func (s *refSplitter) Next() ([]byte, error) {
	lr := s.lr
	if s.start {
		s.start = false
		if err := lr.detectCR(); err != nil {
			return nil, err
		}
		lr.skipBOMBeforeFrom()
		for {
			line, err := lr.readLine()
			if err != nil {
				return nil, err
			}
			if !lr.isBlank(line) {
				lr.unread(line)
				break
			}
		}
	}
	s.off = lr.pos
	first, err := lr.readLine()
	if err != nil {
		return nil, err
	}
	var msg []byte
	eol := lr.eolOf(first)
	// "From :x" is a From: field with a blank before its colon.
	hasFrom := bytes.HasPrefix(first, []byte("From ")) && fieldNameLen(first) == 5
	if hasFrom {
		msg = append(msg, first...)
		for lr.peekByte() == '>' {
			line, err := lr.readLine()
			if err != nil {
				return nil, err
			}
			msg = append(msg, line...)
		}
	} else {
		lr.unread(first)
	}

	// The header: fields and their continuation lines, up to a blank line.
	prevBlank := true // after the header's blank line
	var clValue []byte
	for {
		line, err := lr.readLine()
		if err == io.EOF {
			msg = append(msg, eol...) // formail closes an unterminated header
			break
		}
		if err != nil {
			return nil, err
		}
		if lr.isBlank(line) {
			msg = append(msg, line...)
			break
		}
		n := fieldNameLen(line)
		if n <= 0 || (n == 5 && bytes.HasPrefix(line, []byte("From "))) {
			// Not a field: the header ends here without its blank line,
			// and formail adds one. It does not count as a blank line
			// before a From_ line here (formail then tests a stale
			// pointer into freed memory, and in practice escapes it).
			msg = append(msg, eol...)
			lr.unread(line)
			prevBlank = false
			break
		}
		// formail ignores blanks before the colon (cleanheader).
		if clValue == nil && bytes.EqualFold(bytes.TrimRight(line[:n-1], " \t"), []byte("content-length")) {
			clValue = bytes.Clone(line[n:])
		}
		msg = append(msg, line...)
		for c := lr.peekByte(); c == ' ' || c == '\t'; c = lr.peekByte() {
			cont, err := lr.readLine()
			if err != nil {
				return nil, err
			}
			msg = append(msg, cont...)
		}
	}

	// A trustworthy Content-Length body is taken verbatim.
	forceSplit := false
	if cl := refParseContentLength(clValue); cl > 0 && !s.opts.Berkeley && cl <= s.opts.MaxContentLength {
		body, ok, err := s.readContentLength(cl)
		if err != nil {
			return nil, err
		}
		if ok {
			msg = append(msg, body...)
			forceSplit = true
			prevBlank = lr.endsWithBlankLine(body)
		} else {
			lr.unread(body)
		}
	}

	for {
		line, err := lr.readLine()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if bytes.HasPrefix(line, []byte("From ")) {
			// Right after a trusted Content-Length body, a postmark
			// separates even without a blank line (Netscape).
			if s.isSeparator(line, prevBlank || forceSplit) {
				lr.unread(line)
				break
			}
			if !s.opts.Mboxrd && (!prevBlank || !refFormailPostmark(line)) {
				msg = append(msg, '>')
			}
		}
		msg = append(msg, line...)
		blank := lr.isBlank(line)
		if !blank {
			forceSplit = false
		}
		prevBlank = blank
	}
	s.end = lr.pos

	// formail ends every message with a blank line. A last line without
	// its line end has text, whatever its bytes: it gets both.
	if len(msg) == 0 || msg[len(msg)-1] != lr.delim {
		msg = append(append(msg, eol...), eol...)
	} else if !refEndsBlank(msg, lr) {
		msg = append(msg, eol...)
	}
	if lr.delim == '\r' {
		// Every format and edit downstream (procmail's too) knows only
		// LF: a CR-only message would be one long line to them, and a
		// maildir would keep nothing of it once the From_ line is cut.
		msg = bytes.ReplaceAll(msg, []byte{'\r'}, []byte{'\n'})
		eol = []byte{'\n'}
	}
	if s.opts.Mboxrd {
		skip := 0
		if hasFrom {
			skip = bytes.IndexByte(msg, '\n') + 1
		}
		msg = append(msg[:skip:skip], refUnescapeMboxrd(msg[skip:])...)
	}
	if !hasFrom {
		gen := GeneratedFromLine(msg, s.opts.Now())
		if len(eol) == 2 {
			gen = append(gen[:len(gen)-1], eol...)
		}
		msg = append(gen, msg...)
	}
	return msg, nil
}

// refUnescapeMboxrd takes one '>' off every line of b matching ^>+From .
func refUnescapeMboxrd(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line = b[:i+1]
		}
		b = b[len(line):]
		if q := bytes.TrimLeft(line, ">"); len(q) < len(line) && bytes.HasPrefix(q, []byte("From ")) {
			line = line[1:]
		}
		out = append(out, line...)
	}
	return out
}

// refEndsBlank reports whether msg's last line is an empty line.
func refEndsBlank(msg []byte, lr *refLineReader) bool {
	body := msg[:len(msg)-1] // without the final line end
	if lr.delim == '\n' && bytes.HasSuffix(body, []byte("\r")) {
		body = body[:len(body)-1]
	}
	return len(body) == 0 || body[len(body)-1] == lr.delim
}

// isSeparator decides whether a line starting with "From " begins a new
// message; the line after it must be a header field.
func (s *refSplitter) isSeparator(line []byte, prevBlank bool) bool {
	if prevBlank {
		// A postmark with a date that mbox readers accept, or a
		// tolerant one-word form; not "From Russia with love".
		if !oneWordPostmark(line) && !hasPostmarkDate(line) {
			return false
		}
	} else if !refCtimePostmark.Match(line) {
		return false
	}
	next, err := s.lr.peekPastQuoted()
	if err != nil {
		return false
	}
	n := fieldNameLen(next)
	return n > 0 && !(n == 5 && bytes.HasPrefix(next, []byte("From ")))
}

// refCtimePostmark matches a From_ line with an address and a ctime(3)-style
// date, which no body line starting with "From " plausibly has.
var refCtimePostmark = regexp.MustCompile(`^From \S+\s+(Mon|Tue|Wed|Thu|Fri|Sat|Sun)\s+(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s+\d{1,2}\s+\d{1,2}:\d\d(:\d\d)?\s`)

// refFormailPostmark is formail's test for a line that could be a postmark:
// "From", a word, blanks, and at least one more character.
func refFormailPostmark(line []byte) bool {
	// formail tests a C string: a NUL ends it, and is not a newline.
	p, nul := line[len("From "):], false
	if i := bytes.IndexByte(p, 0); i >= 0 {
		p, nul = p[:i], true
	}
	p = bytes.TrimLeft(p, " \t")
	k := bytes.IndexAny(p, " \t\n")
	if k < 0 {
		k = len(p)
	}
	if k == 0 {
		return false
	}
	p = bytes.TrimLeft(p[k:], " \t")
	if len(p) == 0 {
		return nul
	}
	return p[0] != '\n'
}

// refParseContentLength reads a Content-Length value like formail's strtol:
// leading white space, an optional sign, digits. It returns -1 when there
// is no positive number.
func refParseContentLength(v []byte) int64 {
	if v == nil {
		return -1
	}
	v = bytes.TrimLeft(v, " \t\n\v\f\r")
	if len(v) > 0 && v[0] == '+' {
		v = v[1:]
	}
	end := 0
	for end < len(v) && v[end] >= '0' && v[end] <= '9' {
		end++
	}
	if end == 0 {
		return -1
	}
	n, err := strconv.ParseInt(string(v[:end]), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// refLineReader reads lines with pushback and tracks the input offset.
type refLineReader struct {
	r     *bufio.Reader
	pre   []byte // pushed-back bytes, read before r
	pos   int64  // input offset of the next byte to be read
	delim byte   // '\n', or '\r' for a bare-CR mailbox
	buf   []byte // the line returned by readLine
	peek  []byte // scratch buffer for look-ahead
}

func refNewLineReader(r io.Reader) *refLineReader {
	return &refLineReader{r: bufio.NewReaderSize(r, 64<<10), delim: '\n'}
}

// detectCR switches to CR line ends when the input's first 64 KiB hold a
// CR and no LF at all.
func (lr *refLineReader) detectCR() error {
	head, err := lr.r.Peek(64 << 10)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return err
	}
	if bytes.IndexByte(head, '\n') < 0 && bytes.IndexByte(head, '\r') >= 0 {
		lr.delim = '\r'
	}
	return nil
}

func (lr *refLineReader) skipBOMBeforeFrom() {
	head, _ := lr.r.Peek(8)
	if bytes.HasPrefix(head, []byte("\xef\xbb\xbfFrom ")) {
		lr.r.Discard(3)
		lr.pos += 3
	}
}

func (lr *refLineReader) isBlank(line []byte) bool {
	switch len(line) {
	case 1:
		return line[0] == lr.delim
	case 2:
		return lr.delim == '\n' && line[0] == '\r' && line[1] == '\n'
	}
	return false
}

// endsWithBlankLine reports whether the last line of b (which follows
// a header's blank line) is blank, as formail's check after a
// Content-Length body does.
func (lr *refLineReader) endsWithBlankLine(b []byte) bool {
	if len(b) == 0 || b[len(b)-1] != lr.delim {
		return false
	}
	i := bytes.LastIndexByte(b[:len(b)-1], lr.delim)
	return lr.isBlank(b[i+1:])
}

func (lr *refLineReader) eolOf(line []byte) []byte {
	if lr.delim == '\r' {
		return []byte{'\r'}
	}
	if bytes.HasSuffix(line, []byte("\r\n")) {
		return []byte("\r\n")
	}
	return []byte{'\n'}
}

// readLine returns the next line including its line end (the last line
// may lack one). The slice is valid until the next call. io.EOF means no
// bytes were left.
func (lr *refLineReader) readLine() ([]byte, error) {
	lr.buf = lr.buf[:0]
	if len(lr.pre) > 0 {
		if i := bytes.IndexByte(lr.pre, lr.delim); i >= 0 {
			lr.buf = append(lr.buf, lr.pre[:i+1]...)
			lr.pre = lr.pre[i+1:]
			lr.pos += int64(i + 1)
			return lr.buf, nil
		}
		lr.buf = append(lr.buf, lr.pre...)
		lr.pos += int64(len(lr.pre))
		lr.pre = nil
	}
	for {
		chunk, err := lr.r.ReadSlice(lr.delim)
		lr.buf = append(lr.buf, chunk...)
		lr.pos += int64(len(chunk))
		if err == nil {
			return lr.buf, nil
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) {
			if len(lr.buf) == 0 {
				return nil, io.EOF
			}
			return lr.buf, nil
		}
		return nil, err
	}
}

// peekByte returns the next byte without consuming it, or 0 at the end.
func (lr *refLineReader) peekByte() byte {
	if len(lr.pre) > 0 {
		return lr.pre[0]
	}
	b, err := lr.r.Peek(1)
	if err != nil {
		return 0
	}
	return b[0]
}

// peekPastQuoted returns, without consuming anything, the first line
// after the lines that start with '>': formail reads those as part of
// a From_ line (">From" continuations) and checks the line after them.
func (lr *refLineReader) peekPastQuoted() ([]byte, error) {
	saved := lr.buf // the caller's line must stay intact
	lr.buf = lr.peek
	var seen []byte
	defer func() {
		lr.peek, lr.buf = lr.buf, saved
		lr.unread(seen)
	}()
	for {
		line, err := lr.readLine()
		if err != nil {
			return nil, err
		}
		if len(line) == 0 || line[0] != '>' {
			next := bytes.Clone(line)
			seen = append(seen, line...)
			return next, nil
		}
		seen = append(seen, line...)
	}
}

// unread pushes b back in front of the input.
func (lr *refLineReader) unread(b []byte) {
	if len(b) == 0 {
		return
	}
	pre := make([]byte, 0, len(b)+len(lr.pre))
	lr.pre = append(append(pre, b...), lr.pre...)
	lr.pos -= int64(len(b))
}

// readContentLength reads n body bytes and reports whether they end where
// the next message or the input begins: after them come only blank lines
// and then a separating From_ line or the end (a final line end left
// outside the count, as some writers do, is allowed too). The bytes are
// returned either way so that the caller can push them back.
func (s *refSplitter) readContentLength(n int64) ([]byte, bool, error) {
	lr := s.lr
	body := make([]byte, 0, min(n, 1<<20))
	for int64(len(body)) < n {
		line, err := lr.readLine()
		if err == io.EOF {
			return body, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		if need := n - int64(len(body)); int64(len(line)) > need {
			body = append(body, line[:need]...)
			lr.unread(line[need:])
			break
		}
		body = append(body, line...)
	}
	// Look ahead: blank lines, then a separator or EOF.
	var seen []byte
	ok := false
	loose := len(body) > 0 && body[len(body)-1] != lr.delim
	for {
		line, err := lr.readLine()
		if err == io.EOF {
			ok = !loose
			break
		}
		if err != nil {
			return nil, false, err
		}
		seen = append(seen, line...)
		if lr.isBlank(line) {
			loose = false
			continue
		}
		ok = !loose && bytes.HasPrefix(line, []byte("From ")) && s.isSeparator(line, true)
		break
	}
	lr.unread(seen)
	return body, ok, nil
}
