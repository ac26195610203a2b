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
	"strings"
	"sync"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/charset"
)

// Field is one header field.
type Field struct {
	Name  string // as written, without the colon
	Lower string // lower-case name, for lookups
	Raw   []byte // value as written: after the colon, continuation lines included, final newline (and CR) excluded
	CR    bool   // the field's last line ended in CR LF

	foldable bool // Name has bytes that strings.EqualFold may match beyond ASCII case
}

// Message is a view of raw message bytes, which it never modifies.
type Message struct {
	raw      []byte
	fromLine []byte // the mbox From_ line, without its newline
	hdrStart int    // first byte of the header (after the From_ line)
	bodyOff  int    // first byte of the body (len(raw) if none)

	fieldsOnce sync.Once
	fields     []Field

	decoded  map[*Field]string
	bodyText *string
}

// New returns a view of raw.
func New(raw []byte) *Message {
	m := &Message{raw: raw}
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
	m.bodyOff = len(raw)
	for q := p; q < len(raw); {
		line := raw[q:]
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			line = line[:i+1]
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			m.bodyOff = q + len(line)
			break
		}
		q += len(line)
	}
	return m
}

// Raw is the whole message.
func (m *Message) Raw() []byte { return m.raw }

// Size is the message length in bytes, From_ line included (procmail's
// measure for size conditions).
func (m *Message) Size() int { return len(m.raw) }

// FromLine is the mbox From_ line without its newline, or nil.
func (m *Message) FromLine() []byte { return m.fromLine }

// Header is the raw header: From_ line, fields, and the blank line.
func (m *Message) Header() []byte { return m.raw[:m.bodyOff] }

// Body is the raw body, after the blank line that ends the header.
func (m *Message) Body() []byte { return m.raw[m.bodyOff:] }

// Fields returns the header fields in order. Lines inside the header that
// are not fields (no colon) are skipped.
func (m *Message) Fields() []Field {
	m.fieldsOnce.Do(m.parseFields)
	return m.fields
}

func (m *Message) parseFields() {
	h := m.raw[m.hdrStart:m.bodyOff]
	for len(h) > 0 {
		line, rest := cutLine(h)
		end := len(line)
		for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
			l2, r2 := cutLine(rest)
			end += len(l2)
			rest = r2
		}
		text := h[:end]
		h = rest
		colon := bytes.IndexByte(text, ':')
		if colon <= 0 {
			continue
		}
		name := bytes.TrimRight(text[:colon], " \t")
		if len(name) == 0 || bytes.ContainsAny(name, " \t\r\n") {
			continue
		}
		val := text[colon+1:]
		val = bytes.TrimSuffix(val, []byte("\n"))
		cr := bytes.HasSuffix(val, []byte("\r"))
		val = bytes.TrimSuffix(val, []byte("\r"))
		f := Field{Raw: val, CR: cr}
		if k, ok := knownNames[string(name)]; ok {
			f.Name, f.Lower = k.name, k.lower
		} else {
			f.Name = string(name)
			f.Lower = strings.ToLower(f.Name)
			f.foldable = !isASCII(name)
		}
		m.fields = append(m.fields, f)
	}
}

func cutLine(b []byte) (line, rest []byte) {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i+1], b[i+1:]
	}
	return b, nil
}

// Get returns the fields named name (any case), in order.
func (m *Message) Get(name string) []*Field {
	var out []*Field
	fs := m.Fields()
	lower := strings.ToLower(name)
	for i := range fs {
		if fs[i].is(name, lower) {
			out = append(out, &fs[i])
		}
	}
	return out
}

// Has reports whether a field named name exists.
func (m *Message) Has(name string) bool {
	fs := m.Fields()
	lower := strings.ToLower(name)
	for i := range fs {
		if fs[i].is(name, lower) {
			return true
		}
	}
	return false
}

// is reports whether f is named name (lower-cased: lower), as
// strings.EqualFold compares them.
func (f *Field) is(name, lower string) bool {
	if f.Lower == lower {
		return true
	}
	return (f.foldable || !isASCII([]byte(name))) && strings.EqualFold(f.Name, name)
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

// knownNames are the field names that most messages carry, as they are
// usually written, so that parsing a header allocates no name for them.
var knownNames = func() map[string]struct{ name, lower string } {
	m := make(map[string]struct{ name, lower string })
	for _, n := range []string{
		"Received", "From", "To", "Cc", "Bcc", "Subject", "Date", "Message-ID", "Message-Id",
		"Reply-To", "Sender", "Return-Path", "In-Reply-To", "References", "MIME-Version",
		"Mime-Version", "Content-Type", "Content-Transfer-Encoding", "Content-Disposition",
		"Content-Length", "Delivered-To", "X-Mailer", "User-Agent", "List-Id", "List-Unsubscribe",
		"List-Post", "List-Help", "List-Subscribe", "List-Archive", "Precedence", "X-Spam-Flag",
		"X-Spam-Status", "X-Spam-Level", "X-Spam-Checker-Version", "X-Original-To", "Errors-To",
		"DKIM-Signature", "Authentication-Results", "ARC-Seal", "ARC-Message-Signature",
		"ARC-Authentication-Results", "Received-SPF", "X-Priority", "Importance", "Status",
		"X-Status", "Lines", "X-Beenthere", "X-BeenThere", "X-Mailman-Version", "Thread-Topic",
		"Thread-Index", "Content-Language", "Organization", "X-Originating-IP", "Auto-Submitted",
		"X-Virus-Scanned", "X-Loop", "Resent-From", "Resent-To", "Resent-Date", "Mail-Followup-To",
	} {
		m[n] = struct{ name, lower string }{n, strings.ToLower(n)}
	}
	return m
}()

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
	walkErr := e.Walk(func(path []int, part *message.Entity, err error) error {
		if err != nil {
			return err
		}
		mt, _, _ := part.Header.ContentType()
		if mt == "" {
			mt = "text/plain"
		}
		if !strings.HasPrefix(mt, "text/") {
			return nil
		}
		if parts > 0 {
			b.WriteByte('\n')
		}
		parts++
		_, err = io.Copy(&b, part.Body)
		if err != nil && message.IsUnknownCharset(err) {
			err = nil
		}
		return nil
	})
	if walkErr != nil && parts == 0 {
		return string(m.Body())
	}
	return b.String()
}
