// Package msgview gives rules a read-only, lazily parsed view of a raw
// message: header fields (raw, unfolded, or RFC 2047 + charset decoded),
// addresses, the RFC 2919 list id, and the body (raw or as decoded text).
// Nothing is parsed before it is asked for, so header-only rules never
// touch the body. Bad input never fails: what cannot be parsed is seen raw.
package msgview

import (
	"bytes"
	"io"
	"mime"
	"slices"
	"strings"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/charset"

	"github.com/mfilter/mfilter/internal/asciifold"
)

// Field is one header field.
type Field struct {
	name []byte // as written, without the colon
	Raw  []byte // value as written: after the colon, continuation lines included, final newline (and CR) excluded
	CR   bool   // the field's last line ended in CR LF

	beyondASCII bool // name has bytes beyond ASCII
}

// Name is the field's name as written, without the colon.
func (f *Field) Name() string { return string(f.name) }

// NameBytes is Name without a copy, to be read only.
func (f *Field) NameBytes() []byte { return f.name }

// Message is a view of raw message bytes, which it never modifies. It
// parses and decodes lazily and remembers what it did, so it is not safe
// for concurrent use.
type Message struct {
	raw      []byte
	fromLine []byte // the mbox From_ line, without its newline
	hdrStart int    // first byte of the header (after the From_ line)

	parsed  bool // fields and bodyOff are set
	fields  []Field
	bodyOff int // first byte of the body (len(raw) if none)

	decoded  map[*Field]string
	bodyText *string

	// The last Get: rules often ask for one field many times in a row
	// (a List-Id rule for each list).
	lastName string
	lastGet  []*Field
}

// New returns a view of raw.
func New(raw []byte) *Message {
	m := new(Message)
	m.Reset(raw)
	return m
}

// Reset makes m a view of raw instead of the message it viewed, keeping
// the memory it had for that one (its fields, its decoded values): a
// program that views one message after another then allocates that
// memory once. Nothing m returned before may be used afterwards.
func (m *Message) Reset(raw []byte) {
	fields, decoded := m.fields[:0], m.decoded
	clear(fields[:cap(fields)]) // no pointers into the old message
	clear(decoded)
	*m = Message{raw: raw, fields: fields, decoded: decoded}
	p := 0
	if bytes.HasPrefix(raw, []byte("From ")) {
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			m.fromLine = bytes.TrimSuffix(raw[:i], []byte("\r"))
			p = i + 1
		} else {
			m.fromLine = raw
			p = len(raw)
		}
	}
	m.hdrStart = p
}

// Raw is the whole message.
func (m *Message) Raw() []byte { return m.raw }

// Size is the message length in bytes, From_ line included (procmail's
// measure for size conditions).
func (m *Message) Size() int { return len(m.raw) }

// FromLine is the mbox From_ line without its newline, or nil.
func (m *Message) FromLine() []byte { return m.fromLine }

// Header is the raw header: From_ line, fields, and the blank line.
func (m *Message) Header() []byte {
	m.parseHeader()
	return m.raw[:m.bodyOff]
}

// Body is the raw body, after the blank line that ends the header.
func (m *Message) Body() []byte {
	m.parseHeader()
	return m.raw[m.bodyOff:]
}

// Fields returns the header fields in order. Lines inside the header that
// are not fields (no colon) are skipped.
func (m *Message) Fields() []Field {
	m.parseHeader()
	return m.fields
}

// parse reads the header in one pass: its fields, and where the body
// starts, after the first line that holds nothing but CRs before its
// newline (the blank line).
func (m *Message) parse() {
	// The fields go into the slice that Reset kept, else onto the stack
	// and then into a slice of their number: one allocation of the size
	// needed.
	if cap(m.fields) > 0 {
		m.fields, m.bodyOff = m.parseInto(m.fields[:0])
		return
	}
	var buf [48]Field
	fields, bodyOff := m.parseInto(buf[:0])
	m.fields, m.bodyOff = slices.Clip(slices.Clone(fields)), bodyOff
}

// parseInto appends the header's fields to fields and returns them with
// the offset of the body.
func (m *Message) parseInto(fields []Field) ([]Field, int) {
	raw := m.raw
	bodyOff := len(raw)
	for i := m.hdrStart; i < len(raw); {
		// A line of nothing but CRs before its newline (or the end)
		// is the blank line.
		j := i
		for j < len(raw) && raw[j] == '\r' {
			j++
		}
		if j == len(raw) || raw[j] == '\n' {
			bodyOff = min(j+1, len(raw))
			break
		}
		// The field: its line and the continuation lines after it.
		end := lineEnd(raw, i)
		for end < len(raw) && (raw[end] == ' ' || raw[end] == '\t') {
			end = lineEnd(raw, end)
		}
		text := raw[i:end]
		i = end
		if f, ok := parseField(text); ok {
			fields = append(fields, f)
		}
	}
	return fields, bodyOff
}

// parseHeader parses the header unless it was (a Message is used by one
// goroutine at a time: no sync.Once).
func (m *Message) parseHeader() {
	if !m.parsed {
		m.parse()
		m.parsed = true
	}
}

// lineEnd returns the index just after the newline that ends the line
// starting at i, or len(b).
func lineEnd(b []byte, i int) int {
	if k := bytes.IndexByte(b[i:], '\n'); k >= 0 {
		return i + k + 1
	}
	return len(b)
}

// parseField splits a field's text (its lines, newlines included) at
// the colon. The name is what comes before the colon less the blanks
// right before it, and must be neither empty nor hold blanks or line
// ends; else the text is no field.
func parseField(text []byte) (Field, bool) {
	k := 0
	beyondASCII := false
	for ; k < len(text); k++ {
		c := text[k]
		if c == ':' || c == ' ' || c == '\t' || c == '\r' || c == '\n' {
			break
		}
		if c >= 0x80 {
			beyondASCII = true
		}
	}
	colon := k
	for colon < len(text) && (text[colon] == ' ' || text[colon] == '\t') {
		colon++
	}
	if k == 0 || colon == len(text) || text[colon] != ':' {
		return Field{}, false
	}
	val := text[colon+1:]
	val = bytes.TrimSuffix(val, []byte("\n"))
	cr := bytes.HasSuffix(val, []byte("\r"))
	val = bytes.TrimSuffix(val, []byte("\r"))
	return Field{name: text[:k], Raw: val, CR: cr, beyondASCII: beyondASCII}, true
}

// Get returns the fields named name (any case), in order. The slice is
// not to be modified.
func (m *Message) Get(name string) []*Field {
	fs := m.Fields()
	if name == m.lastName && m.lastName != "" {
		return m.lastGet
	}
	var out []*Field
	var buf [64]byte
	n := newFieldName(name, buf[:0])
	for i := range fs {
		if fs[i].is(n) {
			out = append(out, &fs[i])
		}
	}
	m.lastName, m.lastGet = name, out
	return out
}

// Has reports whether a field named name exists.
func (m *Message) Has(name string) bool {
	fs := m.Fields()
	var buf [64]byte
	n := newFieldName(name, buf[:0])
	for i := range fs {
		if fs[i].is(n) {
			return true
		}
	}
	return false
}

// fieldName is a name looked for, prepared once for a whole header
// without allocating.
type fieldName struct {
	name  string
	lower []byte // strings.ToLower(name)
	fold  bool   // name has bytes beyond ASCII: compare with strings.EqualFold
}

// newFieldName prepares name, lower-casing it into buf when it is ASCII.
func newFieldName(name string, buf []byte) fieldName {
	if !isASCII([]byte(name)) {
		return fieldName{name: name, lower: []byte(strings.ToLower(name)), fold: true}
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf = append(buf, c)
	}
	return fieldName{name: name, lower: buf}
}

// is reports whether f is named n, as strings.EqualFold compares them.
func (f *Field) is(n fieldName) bool {
	switch {
	case n.fold:
		return strings.EqualFold(string(f.name), n.name)
	case len(f.name) == len(n.lower):
		return asciifold.Equal(f.name, n.lower)
	}
	// An ASCII name matches a longer one only through the two letters
	// beyond ASCII that fold to ASCII ones: the Kelvin sign (k) and the
	// long s (s), both more than one byte long.
	return f.beyondASCII && len(f.name) > len(n.lower) && strings.EqualFold(string(f.name), n.name)
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

// Unfold returns a raw value with its line breaks removed (RFC 5322
// unfolding: the CRLF before a continuation's white space goes) and the
// leading white space trimmed.
func Unfold(raw []byte) string {
	if bytes.IndexByte(raw, '\n') < 0 {
		return strings.TrimLeft(string(raw), " \t")
	}
	var b strings.Builder
	b.Grow(len(raw))
	for _, c := range raw {
		if c == '\r' || c == '\n' {
			continue
		}
		b.WriteByte(c)
	}
	return strings.TrimLeft(b.String(), " \t")
}

// Decoded returns f's value unfolded, with RFC 2047 encoded words decoded
// to UTF-8 through their charset. A value that cannot be decoded is
// returned unfolded but otherwise raw.
func (m *Message) Decoded(f *Field) string {
	if s, ok := m.decoded[f]; ok {
		return s
	}
	s := Unfold(f.Raw)
	if strings.Contains(s, "=?") {
		s = DecodeWords(s)
	}
	if m.decoded == nil {
		m.decoded = make(map[*Field]string)
	}
	m.decoded[f] = s
	return s
}

var wordDecoder = &mime.WordDecoder{CharsetReader: charsetReader}

func charsetReader(cs string, r io.Reader) (io.Reader, error) {
	return charset.Reader(strings.ToLower(cs), r)
}

// DecodeWords decodes the RFC 2047 encoded words in s. Words in unknown
// charsets or with bad encodings are left as they are.
func DecodeWords(s string) string {
	if dec, err := wordDecoder.DecodeHeader(s); err == nil {
		return dec
	}
	// One bad word must not hide the others: decode word by word,
	// dropping the white space between two decoded words (RFC 2047 6.2).
	var b strings.Builder
	prevDecoded := false
	for len(s) > 0 {
		i := strings.Index(s, "=?")
		if i < 0 {
			b.WriteString(s)
			break
		}
		gap := s[:i]
		s = s[i:]
		end := encodedWordEnd(s)
		if end < 0 {
			b.WriteString(gap)
			b.WriteString(s)
			break
		}
		dec, err := wordDecoder.Decode(s[:end])
		if !(err == nil && prevDecoded && strings.Trim(gap, " \t") == "") {
			b.WriteString(gap)
		}
		if err == nil {
			b.WriteString(dec)
		} else {
			b.WriteString(s[:end])
		}
		prevDecoded = err == nil
		s = s[end:]
	}
	return b.String()
}

// encodedWordEnd returns the length of the encoded word at the start of s
// (=?charset?enc?text?=), or -1.
func encodedWordEnd(s string) int {
	q := 0
	for i := 2; i < len(s); i++ {
		if s[i] == ' ' || s[i] == '\t' {
			return -1
		}
		if s[i] == '?' {
			q++
			if q == 3 && i+1 < len(s) && s[i+1] == '=' {
				return i + 2
			}
		}
	}
	return -1
}

// BodyText returns the text of the message for body rules: every text/*
// part (or the whole body of a non-MIME message) with its transfer
// encoding undone and its charset converted to UTF-8, parts joined by a
// newline. If the MIME structure is broken, what was read so far is kept
// and the raw body stands in for the rest.
func (m *Message) BodyText() string {
	if m.bodyText != nil {
		return *m.bodyText
	}
	s := m.bodyText0()
	m.bodyText = &s
	return s
}

func (m *Message) bodyText0() string {
	e, err := message.Read(bytes.NewReader(m.raw[m.hdrStart:]))
	if err != nil && e == nil {
		return string(m.Body())
	}
	var b strings.Builder
	parts := 0
	walkErr := walkText(e, 0, func(part *message.Entity) {
		if parts > 0 {
			b.WriteByte('\n')
		}
		parts++
		io.Copy(&b, part.Body)
	})
	if walkErr != nil && parts == 0 {
		return string(m.Body())
	}
	return b.String()
}

// MaxMIMEDepth is how deep body rules look into nested multiparts. Each
// level reads the whole of the level above it again, so that unbounded
// nesting (10,000 levels in 600 KB) takes minutes; mail nests a few.
const MaxMIMEDepth = 32

// walkText calls text for every text/* part of e (e itself when it is
// not multipart), depth levels down, going no deeper than MaxMIMEDepth.
func walkText(e *message.Entity, depth int, text func(*message.Entity)) error {
	if mr := e.MultipartReader(); mr != nil {
		if depth >= MaxMIMEDepth {
			return nil
		}
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			if err := walkText(p, depth+1, text); err != nil {
				return err
			}
		}
	}
	mt, _, _ := e.Header.ContentType()
	if mt == "" || strings.HasPrefix(mt, "text/") {
		text(e)
	}
	return nil
}
