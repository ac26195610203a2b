package mailfmt

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"regexp"
	"runtime/debug"
	"strconv"
	"sync"
	"time"
)

// SplitOptions configure a Splitter.
type SplitOptions struct {
	// Now stamps the From_ lines generated for messages that lack one.
	Now func() time.Time
	// Berkeley ignores Content-Length (formail -Y).
	Berkeley bool
	// Mboxrd reads an mboxrd file, such as mfilter --mboxrd writes: one
	// '>' is taken off every line after the From_ line that matches
	// ^>+From , and a "From " line that does not start a message is left
	// as it is rather than escaped.
	Mboxrd bool
	// MaxContentLength is the largest Content-Length trusted to skip over
	// a body unseen; larger values are ignored. Default 1 GiB.
	MaxContentLength int64
}

// Splitter reads an mbox stream one message at a time, in memory bounded
// by the largest message. Each message comes out the way formail -s hands
// it to procmail: with a From_ line (generated from the best sender field
// when missing), a blank line after the header, body lines that start with
// "From " but do not start a message escaped as ">From ", and ending in a
// blank line.
//
// Where formail is wrong, Splitter deliberately differs; each case is a
// subtest of TestSplitDeviations, which runs the real formail to show
// what it does:
//   - a From_ line is a separator when the next line is any header field,
//     not only one of the names formail knows ("Recieved:" is real);
//   - a one-word postmark ("From 1844347792267117879@xxx", Gmail Takeout)
//     or "From -" separates messages when a header follows;
//   - after a blank line, a From_ line with more than one word separates
//     only when it has a date that mutt or Dovecot accepts (see
//     hasPostmarkDate): "From Russia with love" followed by a field
//     formail knows stays in the body, as those readers keep it;
//   - CRLF: "\r\n" is a blank line (it ends a header and separates
//     messages), the lines Splitter adds end in CRLF too, and the CR is
//     not part of a generated From_ line's address (nor is a line break
//     inside a folded address: see EnvelopeSender);
//   - a From_ line with a full ctime date and a header after it separates
//     even without a blank line before it, which is how procmail writes a
//     message that lacks its final newline;
//   - a Content-Length is honoured only when it ends where the next
//     message (or the input) begins, give or take blank lines; a wrong
//     one is ignored instead of swallowing or merging messages, and a
//     right one separates even without a blank line (Netscape);
//   - input with bare CR line ends (classic Mac OS) is split at CRs and
//     handed out with LF line ends;
//   - a UTF-8 byte order mark before the first From_ line is dropped;
//   - header fields are never changed: formail deletes blanks before a
//     field's colon;
//   - a From line that ends a header (no blank line before it) is escaped
//     unless it separates as above; formail decides that case by reading
//     freed memory.
//
// TestSplitterAgreesWithFormail and the corpus differential in
// cmd/mfilter check that it agrees with formail everywhere else.
type Splitter struct {
	lr    *lineReader
	opts  SplitOptions
	start bool
	buf   []byte // the message being read, reused: Next returns a copy
	// start and end input offsets of the last message returned
	off, end int64
	// mem is the input mapped into memory (NewFileSplitter), or nil;
	// input offset 0 is mem.data[mem.base].
	mem *mappedInput
}

// NewSplitter returns a Splitter reading r.
func NewSplitter(r io.Reader, opts SplitOptions) *Splitter {
	return newSplitter(bufio.NewReaderSize(r, 64<<10), opts)
}

func newSplitter(r bufferedReader, opts SplitOptions) *Splitter {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxContentLength <= 0 {
		opts.MaxContentLength = 1 << 30
	}
	return &Splitter{lr: &lineReader{r: r, delim: '\n'}, opts: opts, start: true}
}

// Offsets returns the byte range of the input that the last message
// returned by Next was read from.
func (s *Splitter) Offsets() (start, end int64) { return s.off, s.end }

// Next returns the next message, or io.EOF after the last one. The
// message is the caller's; when the Splitter reads a mapped file
// (NewFileSplitter), it may be a read-only slice of the map, valid until
// Close.
func (s *Splitter) Next() (msg []byte, err error) {
	if s.mem != nil {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer s.mem.recoverFault(&err)
	}
	return s.next()
}

func (s *Splitter) next() ([]byte, error) {
	if s.start {
		s.start = false
		if err := s.skipStart(); err != nil {
			return nil, err
		}
	}
	s.off = s.lr.pos
	m := splitMsg{b: s.buf[:0], verbatim: true, prevBlank: true}
	if err := s.readFromLine(&m); err != nil {
		return nil, err
	}
	clValue, err := s.readHeader(&m)
	if err != nil {
		return nil, err
	}
	if err := s.takeContentLength(&m, clValue); err != nil {
		return nil, err
	}
	if err := s.readBody(&m); err != nil {
		return nil, err
	}
	s.end = s.lr.pos
	s.endWithBlankLine(&m)
	s.convert(&m)
	return s.handOut(&m), nil
}

// splitMsg is the message that next is reading.
type splitMsg struct {
	b   []byte // the message so far
	eol string // the line end of its first line, for the lines added
	// verbatim: b is, so far, the input from s.off on as it is.
	verbatim bool
	// hasFrom: b starts with the input's From_ line.
	hasFrom bool
	// inMap: b is a read-only slice of the map, capped so that an
	// append copies it.
	inMap bool
	// prevBlank: the last line read is a blank line (or the header's).
	prevBlank bool
	// forceSplit: a trusted Content-Length body ended, and no line
	// after it but blank ones.
	forceSplit bool
}

// skipStart prepares the input's start: it picks the line end, drops a
// byte order mark and skips blank lines.
func (s *Splitter) skipStart() error {
	lr := s.lr
	if err := lr.detectCR(); err != nil {
		return err
	}
	lr.skipBOMBeforeFrom()
	for {
		line, err := lr.readLine()
		if err != nil {
			return err
		}
		if !lr.isBlank(line) {
			lr.unread(line)
			return nil
		}
	}
}

// readFromLine reads the message's From_ line, with its '>'
// continuation lines, into m, if it has one. io.EOF means no message
// is left.
func (s *Splitter) readFromLine(m *splitMsg) error {
	lr := s.lr
	first, err := lr.readLine()
	if err != nil {
		return err
	}
	m.eol = lr.eolOf(first)
	// "From :x" is a From: field with a blank before its colon.
	m.hasFrom = bytes.HasPrefix(first, []byte("From ")) && fieldNameLen(first) == 5
	if !m.hasFrom {
		lr.unread(first)
		return nil
	}
	m.b = append(m.b, first...)
	for lr.peekByte() == '>' {
		line, err := lr.readLine()
		if err != nil {
			return err
		}
		m.b = append(m.b, line...)
	}
	return nil
}

// readHeader reads the header's fields and their continuation lines
// into m, up to its blank line, and returns the value of its first
// Content-Length field, or nil. Lines are read straight into m.b.
func (s *Splitter) readHeader(m *splitMsg) (clValue []byte, err error) {
	lr := s.lr
	for {
		var line []byte
		m.b, line, err = lr.appendLine(m.b)
		if err == io.EOF {
			m.b = append(m.b, m.eol...) // formail closes an unterminated header
			m.verbatim = false
			return clValue, nil
		}
		if err != nil {
			return nil, err
		}
		if lr.isBlank(line) {
			return clValue, nil
		}
		n := fieldNameLen(line)
		if n <= 0 || (n == 5 && bytes.HasPrefix(line, []byte("From "))) {
			// Not a field: the header ends here without its blank line,
			// and formail adds one. It does not count as a blank line
			// before a From_ line here (formail then tests a stale
			// pointer into freed memory, and in practice escapes it).
			lr.unread(line) // a copy, before eol overwrites it in m.b
			m.b = append(m.b[:len(m.b)-len(line)], m.eol...)
			m.verbatim = false
			m.prevBlank = false
			return clValue, nil
		}
		if clValue == nil && isContentLengthField(line, n) {
			clValue = bytes.Clone(line[n:])
		}
		for c := lr.peekByte(); c == ' ' || c == '\t'; c = lr.peekByte() {
			if m.b, _, err = lr.appendLine(m.b); err != nil {
				return nil, err
			}
		}
	}
}

// isContentLengthField reports whether line, a field whose name and
// colon are n bytes long, is a Content-Length field. formail ignores
// blanks before the colon (cleanheader).
func isContentLengthField(line []byte, n int) bool {
	return n > len("content-length") && line[0]|0x20 == 'c' &&
		bytes.EqualFold(bytes.TrimRight(line[:n-1], " \t"), []byte("content-length"))
}

// takeContentLength takes a trustworthy Content-Length body verbatim.
func (s *Splitter) takeContentLength(m *splitMsg, clValue []byte) error {
	cl := parseContentLength(clValue)
	if cl <= 0 || s.opts.Berkeley || cl > s.opts.MaxContentLength {
		return nil
	}
	body, ok, err := s.readContentLength(cl)
	if err != nil {
		return err
	}
	if !ok {
		s.lr.unread(body)
		return nil
	}
	m.b = append(m.b, body...)
	m.forceSplit = true
	m.prevBlank = s.lr.endsWithBlankLine(body)
	return nil
}

// readBody reads the rest of the body into m, up to the From_ line of
// the next message or the end of the input.
func (s *Splitter) readBody(m *splitMsg) error {
	lr := s.lr
	for {
		// Most of a body is lines that cannot end the message: they are
		// taken in bulk, up to the next line that starts with "From ".
		if piece, lastBlank, allBlank := lr.plainLines(m.forceSplit); len(piece) > 0 {
			s.grow(m, piece)
			if !allBlank {
				m.forceSplit = false
			}
			m.prevBlank = lastBlank
			continue
		}
		line, err := lr.readLine()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if bytes.HasPrefix(line, []byte("From ")) {
			// Right after a trusted Content-Length body, a postmark
			// separates even without a blank line (Netscape).
			if s.isSeparator(line, m.prevBlank || m.forceSplit) {
				lr.unread(line)
				return nil
			}
			if !s.opts.Mboxrd && (!m.prevBlank || !formailPostmark(line)) {
				m.b, m.inMap = append(m.b, '>'), false
				m.verbatim = false
			}
		}
		s.grow(m, line)
		blank := lr.isBlank(line)
		if !blank {
			m.forceSplit = false
		}
		m.prevBlank = blank
	}
}

// grow adds piece, just read up to lr.pos, to m: as a longer slice of
// the map while m is the input as it is, so that a large body is not
// copied out of the map.
func (s *Splitter) grow(m *splitMsg, piece []byte) {
	if s.mem != nil && m.verbatim && m.hasFrom && s.lr.delim == '\n' && !s.opts.Mboxrd {
		if whole := s.mem.slice(s.off, s.lr.pos); int64(len(whole)) == s.lr.pos-s.off {
			m.b, m.inMap = whole[:len(whole):len(whole)], true
			return
		}
	}
	m.b, m.inMap = append(m.b, piece...), false
}

// endWithBlankLine ends m with a blank line, as formail ends every
// message. A last line without its line end has text, whatever its
// bytes: it gets both.
func (s *Splitter) endWithBlankLine(m *splitMsg) {
	if len(m.b) == 0 || m.b[len(m.b)-1] != s.lr.delim {
		m.b, m.inMap = append(append(m.b, m.eol...), m.eol...), false
		m.verbatim = false
	} else if !endsBlank(m.b, s.lr) {
		m.b, m.inMap = append(m.b, m.eol...), false
		m.verbatim = false
	}
}

// convert gives a CR-only message LF line ends, and takes the mboxrd
// escapes off.
func (s *Splitter) convert(m *splitMsg) {
	if s.lr.delim == '\r' {
		// Every format and edit downstream (procmail's too) knows only
		// LF: a CR-only message would be one long line to them, and a
		// maildir would keep nothing of it once the From_ line is cut.
		m.b = bytes.ReplaceAll(m.b, []byte{'\r'}, []byte{'\n'})
		m.eol = "\n"
	}
	if s.opts.Mboxrd {
		skip := 0
		if m.hasFrom {
			skip = bytes.IndexByte(m.b, '\n') + 1
		}
		m.b = append(m.b[:skip:skip], unescapeMboxrd(m.b[skip:])...)
	}
}

// handOut returns the message m for the caller to keep, with a From_
// line generated when it has none.
func (s *Splitter) handOut(m *splitMsg) []byte {
	if m.verbatim && m.hasFrom && s.lr.delim == '\n' && !s.opts.Mboxrd {
		if out := s.mem.slice(s.off, s.end); len(out) == len(m.b) {
			// The message is the input's bytes: hand out the map's,
			// which cost no memory of the process's own.
			if !m.inMap {
				s.keep(m.b)
			}
			return out
		}
	}
	msg := m.b
	if m.inMap {
		// The map's bytes, but not handed out as they are: copied, and
		// the map is no buffer to keep.
		msg = bytes.Clone(msg)
	}
	var gen []byte
	if !m.hasFrom {
		gen = GeneratedFromLine(msg, s.opts.Now())
		if len(m.eol) == 2 {
			gen = append(gen[:len(gen)-1], m.eol...)
		}
	}
	// One allocation of the exact size for the caller to keep; the
	// buffer it was read into serves the next message, unless it is
	// too big to keep around.
	// append, not make and copy: the copy is not zeroed first.
	out := append(gen[:len(gen):len(gen)], msg...)
	s.keep(msg)
	return out
}

// keep keeps msg's buffer for the next message unless it is too big. A
// Splitter over a map keeps it whatever its size: its messages take no
// memory of their own, so one buffer as large as the largest message is
// all it holds, where growing a new one for each large message made
// garbage of several times its size (a mapped mbox of 2 MB messages was
// filed 40% slower than one from a pipe).
func (s *Splitter) keep(msg []byte) {
	if cap(msg) <= maxKeptBuffer || s.mem != nil {
		s.buf = msg[:0]
	} else {
		s.buf = nil
	}
}

// maxKeptBuffer is the largest buffer the Splitter keeps for reuse.
const maxKeptBuffer = 1 << 20

// unescapeMboxrd takes one '>' off every line of b matching ^>+From .
func unescapeMboxrd(b []byte) []byte {
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

// endsBlank reports whether msg's last line is an empty line.
func endsBlank(msg []byte, lr *lineReader) bool {
	body := msg[:len(msg)-1] // without the final line end
	if lr.delim == '\n' && bytes.HasSuffix(body, []byte("\r")) {
		body = body[:len(body)-1]
	}
	return len(body) == 0 || body[len(body)-1] == lr.delim
}

// isSeparator decides whether a line starting with "From " begins a new
// message; the line after it must be a header field.
func (s *Splitter) isSeparator(line []byte, prevBlank bool) bool {
	if prevBlank {
		// A postmark with a date that mbox readers accept, or a
		// tolerant one-word form; not "From Russia with love".
		if !oneWordPostmark(line) && !hasPostmarkDate(line) {
			return false
		}
	} else if !ctimePostmark().Match(line) {
		return false
	}
	next, err := s.lr.peekPastQuoted()
	if err != nil {
		return false
	}
	n := fieldNameLen(next)
	return n > 0 && !(n == 5 && bytes.HasPrefix(next, []byte("From ")))
}

// ctimePostmark matches a From_ line with an address and a ctime(3)-style
// date, which no body line starting with "From " plausibly has. It is
// compiled on first use, not at start-up: most runs (an MDA's) never
// need it.
var ctimePostmark = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^From \S+\s+(Mon|Tue|Wed|Thu|Fri|Sat|Sun)\s+(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s+\d{1,2}\s+\d{1,2}:\d\d(:\d\d)?\s`)
})

// formailPostmark is formail's test for a line that could be a postmark:
// "From", a word, blanks, and at least one more character.
func formailPostmark(line []byte) bool {
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

// parseContentLength reads a Content-Length value like formail's strtol:
// leading white space, an optional sign, digits. It returns -1 when there
// is no positive number.
func parseContentLength(v []byte) int64 {
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

// lineReader reads lines with pushback and tracks the input offset.
type lineReader struct {
	r     bufferedReader
	pre   []byte // pushed-back bytes, read before r: always the end of pb
	pb    []byte // room for pushed-back bytes, reused
	seen  []byte // scratch buffer for peekPastQuoted
	pos   int64  // input offset of the next byte to be read
	delim byte   // '\n', or '\r' for a bare-CR mailbox
	buf   []byte // the line returned by readLine
	peek  []byte // scratch buffer for look-ahead
}

// bufferedReader is what lineReader needs of a *bufio.Reader; a
// memReader serves a mapped file without copying it into a buffer.
type bufferedReader interface {
	ReadSlice(delim byte) ([]byte, error)
	Peek(n int) ([]byte, error)
	Buffered() int
	Discard(n int) (int, error)
}

// detectCR switches to CR line ends when the input's first 64 KiB hold a
// CR and no LF at all.
func (lr *lineReader) detectCR() error {
	head, err := lr.r.Peek(64 << 10)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return err
	}
	if bytes.IndexByte(head, '\n') < 0 && bytes.IndexByte(head, '\r') >= 0 {
		lr.delim = '\r'
	}
	return nil
}

func (lr *lineReader) skipBOMBeforeFrom() {
	head, _ := lr.r.Peek(8)
	if bytes.HasPrefix(head, []byte("\xef\xbb\xbfFrom ")) {
		lr.r.Discard(3)
		lr.pos += 3
	}
}

func (lr *lineReader) isBlank(line []byte) bool {
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
func (lr *lineReader) endsWithBlankLine(b []byte) bool {
	if len(b) == 0 || b[len(b)-1] != lr.delim {
		return false
	}
	i := bytes.LastIndexByte(b[:len(b)-1], lr.delim)
	return lr.isBlank(b[i+1:])
}

func (lr *lineReader) eolOf(line []byte) string {
	if lr.delim == '\r' {
		return "\r"
	}
	if bytes.HasSuffix(line, []byte("\r\n")) {
		return "\r\n"
	}
	return "\n"
}

// readLine returns the next line including its line end (the last line
// may lack one). The slice is valid until the next call. io.EOF means no
// bytes were left.
func (lr *lineReader) readLine() ([]byte, error) {
	var line []byte
	var err error
	lr.buf, line, err = lr.appendLine(lr.buf[:0])
	return line, err
}

// appendLine is readLine appending the line to dst: it returns dst
// extended and the line, which is its tail. io.EOF means no bytes were
// left.
func (lr *lineReader) appendLine(dst []byte) (out, line []byte, err error) {
	start := len(dst)
	if len(lr.pre) > 0 {
		if i := bytes.IndexByte(lr.pre, lr.delim); i >= 0 {
			dst = append(dst, lr.pre[:i+1]...)
			lr.pre = lr.pre[i+1:]
			lr.pos += int64(i + 1)
			return dst, dst[start:], nil
		}
		dst = append(dst, lr.pre...)
		lr.pos += int64(len(lr.pre))
		lr.pre = lr.pre[len(lr.pre):]
		if len(lr.pb) > maxKeptBuffer {
			lr.pb, lr.pre = nil, nil
		}
	}
	for {
		chunk, err := lr.r.ReadSlice(lr.delim)
		dst = append(dst, chunk...)
		lr.pos += int64(len(chunk))
		if err == nil {
			return dst, dst[start:], nil
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) {
			if len(dst) == start {
				return dst, nil, io.EOF
			}
			return dst, dst[start:], nil
		}
		return dst[:start], nil, err
	}
}

// indexLineStart returns the index of the first occurrence of pat in b
// that starts a line (follows delim) after b's first byte, or -1. It
// looks for pat itself rather than for the line end before it: in text
// a line starts with 'F' far less often than a line ends.
func indexLineStart(b, pat []byte, delim byte) int {
	for off := 1; off < len(b); {
		k := bytes.Index(b[off:], pat)
		if k < 0 {
			return -1
		}
		if i := off + k; b[i-1] == delim {
			return i
		}
		off += k + 1
	}
	return -1
}

// plainLines returns, and consumes, the complete lines that the input
// holds in its buffer up to (not including) the first line that starts
// with "From ": what readLine would return one by one, valid until the
// next read. They are none when the next line starts with "From ", is
// not buffered whole, or pushed-back bytes come first. It reports
// whether the last of those lines is blank, and, when checkAll is set,
// whether all are.
func (lr *lineReader) plainLines(checkAll bool) (lines []byte, lastBlank, allBlank bool) {
	if len(lr.pre) > 0 {
		return nil, false, false
	}
	if lr.r.Buffered() == 0 {
		lr.r.Peek(1) // fill the buffer; an error shows at readLine
	}
	buf, _ := lr.r.Peek(lr.r.Buffered())
	end := bytes.LastIndexByte(buf, lr.delim) + 1
	buf = buf[:end]
	if end == 0 || bytes.HasPrefix(buf, []byte("From ")) {
		return nil, false, false
	}
	if i := indexLineStart(buf, []byte("From "), lr.delim); i >= 0 {
		buf = buf[:i]
	}
	last := bytes.LastIndexByte(buf[:len(buf)-1], lr.delim) + 1
	lastBlank = lr.isBlank(buf[last:])
	if checkAll {
		allBlank = true
		for rest := buf; len(rest) > 0 && allBlank; {
			i := bytes.IndexByte(rest, lr.delim)
			allBlank = lr.isBlank(rest[:i+1])
			rest = rest[i+1:]
		}
	}
	lr.r.Discard(len(buf))
	lr.pos += int64(len(buf))
	return buf, lastBlank, allBlank
}

// peekByte returns the next byte without consuming it, or 0 at the end.
func (lr *lineReader) peekByte() byte {
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
func (lr *lineReader) peekPastQuoted() ([]byte, error) {
	saved := lr.buf // the caller's line must stay intact
	lr.buf = lr.peek
	seen := lr.seen[:0]
	defer func() {
		lr.peek, lr.buf = lr.buf, saved
		lr.unread(seen)
		if cap(seen) <= maxKeptBuffer {
			lr.seen = seen[:0]
		}
	}()
	for {
		line, err := lr.readLine()
		if err != nil {
			return nil, err
		}
		seen = append(seen, line...)
		if len(line) == 0 || line[0] != '>' {
			// Valid until the next peekPastQuoted: lr.peek is only
			// written here.
			return line, nil
		}
	}
}

// unread pushes b back in front of the input.
// b must not share memory with lr.pb.
func (lr *lineReader) unread(b []byte) {
	n := len(b)
	if n == 0 {
		return
	}
	if head := len(lr.pb) - len(lr.pre); n <= head {
		start := head - n
		copy(lr.pb[start:], b)
		lr.pre = lr.pb[start:]
	} else {
		size := max(2*(n+len(lr.pre)), 4096)
		pb := make([]byte, size)
		start := size - n - len(lr.pre)
		copy(pb[start:], b)
		copy(pb[start+n:], lr.pre)
		lr.pb, lr.pre = pb, pb[start:]
	}
	lr.pos -= int64(n)
}

// readContentLength reads n body bytes and reports whether they end where
// the next message or the input begins: after them come only blank lines
// and then a separating From_ line or the end (a final line end left
// outside the count, as some writers do, is allowed too). The bytes are
// returned either way so that the caller can push them back.
func (s *Splitter) readContentLength(n int64) ([]byte, bool, error) {
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
