// Package send submits mail to an SMTP relay the way a sendmail command
// does: it reads a message as sendmail reads it (-t, -i, Bcc removed,
// missing From:, Date: and Message-ID: added), speaks SMTP over a
// connection it is given (in mfilter, an SSH channel to the relay as the
// mail server sees it), keeps messages that could not go yet in a durable
// local queue, and forwards a local port for clients that want one.
package send

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
	"time"

	"github.com/emersion/go-message/charset"
)

// ReadMessage reads a message from a sendmail caller. Unless ignoreDots
// (-i, -oi), a line holding a lone dot ends the message, as sendmail
// reads it. A leading mbox "From " line is dropped: it is not part of the
// message.
func ReadMessage(r io.Reader, ignoreDots bool) ([]byte, error) {
	var msg []byte
	if ignoreDots {
		var err error
		msg, err = io.ReadAll(r)
		if err != nil {
			return nil, fmt.Errorf("read the message: %w", err)
		}
	} else {
		br := bufio.NewReaderSize(r, 64<<10)
		var buf bytes.Buffer
		for {
			line, err := br.ReadSlice('\n')
			if errors.Is(err, bufio.ErrBufferFull) {
				buf.Write(line)
				for errors.Is(err, bufio.ErrBufferFull) {
					line, err = br.ReadSlice('\n')
					buf.Write(line)
				}
			} else {
				if isLoneDot(line) {
					break
				}
				buf.Write(line)
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("read the message: %w", err)
			}
		}
		msg = buf.Bytes()
	}
	if bytes.HasPrefix(msg, []byte("From ")) {
		if i := bytes.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		} else {
			msg = nil
		}
	}
	return msg, nil
}

func isLoneDot(line []byte) bool {
	s := string(line)
	return s == ".\n" || s == ".\r\n" || s == "."
}

// field is one header field: its name and all of its bytes, continuation
// lines and line end included.
type field struct {
	name string
	raw  []byte
}

// value is the field body unfolded.
func (f field) value() string {
	v := f.raw[len(f.name)+1:]
	s := strings.ReplaceAll(string(v), "\r\n", "\n")
	s = strings.ReplaceAll(s, "\n ", " ")
	s = strings.ReplaceAll(s, "\n\t", " \t")
	return strings.TrimSpace(s)
}

// splitHeader cuts msg into its header fields and the rest (the blank
// line and the body). Lines of the header that are not fields (mangled
// mail) are kept with an empty name.
func splitHeader(msg []byte) ([]field, []byte) {
	var fields []field
	p := 0
	for p < len(msg) {
		end := bytes.IndexByte(msg[p:], '\n')
		var line []byte
		if end < 0 {
			line = msg[p:]
		} else {
			line = msg[p : p+end+1]
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 0 {
			break
		}
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			last := &fields[len(fields)-1]
			last.raw = append(last.raw, line...)
			p += len(line)
			continue
		}
		name := ""
		if i := bytes.IndexByte(trimmed, ':'); i > 0 && validName(trimmed[:i]) {
			name = string(trimmed[:i])
		}
		fields = append(fields, field{name: name, raw: append([]byte(nil), line...)})
		p += len(line)
	}
	return fields, msg[p:]
}

func validName(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

func get(fields []field, name string) []field {
	var out []field
	for _, f := range fields {
		if strings.EqualFold(f.name, name) {
			out = append(out, f)
		}
	}
	return out
}

var addrParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{CharsetReader: charset.Reader}}

// addresses reads the addresses of address fields. A field net/mail
// cannot read (a bare "root" from cron, a stray comma) is read leniently:
// what is in angle brackets, else each comma-separated word.
func addresses(fs []field) []string {
	var out []string
	for _, f := range fs {
		v := f.value()
		if l, err := addrParser.ParseList(v); err == nil {
			for _, a := range l {
				out = append(out, a.Address)
			}
			continue
		}
		for _, part := range strings.Split(v, ",") {
			part = strings.TrimSpace(part)
			if i := strings.LastIndexByte(part, '<'); i >= 0 {
				if j := strings.IndexByte(part[i:], '>'); j > 0 {
					part = part[i+1 : i+j]
				}
			}
			if part != "" && !strings.ContainsAny(part, " \t\"();:") {
				out = append(out, part)
			}
		}
	}
	return out
}

// HeaderRecipients are the recipients sendmail -t finds: To:, Cc: and
// Bcc:, or, when the message is being resent (it has Resent-To:,
// Resent-Cc: or Resent-Bcc:), those alone.
func HeaderRecipients(msg []byte) []string {
	fields, _ := splitHeader(msg)
	names := []string{"To", "Cc", "Bcc"}
	for _, n := range []string{"Resent-To", "Resent-Cc", "Resent-Bcc"} {
		if len(get(fields, n)) > 0 {
			names = []string{"Resent-To", "Resent-Cc", "Resent-Bcc"}
			break
		}
	}
	var out []string
	for _, n := range names {
		out = append(out, addresses(get(fields, n))...)
	}
	return out
}

// FromAddress is the first address of the From: field ("" if none).
func FromAddress(msg []byte) string {
	fields, _ := splitHeader(msg)
	if l := addresses(get(fields, "From")); len(l) > 0 {
		return l[0]
	}
	return ""
}

// ParseRecipients reads recipients given as arguments: bare addresses,
// "Name <addr>" or comma-separated lists of them, as sendmail takes them.
func ParseRecipients(args []string) []string {
	var out []string
	for _, a := range args {
		out = append(out, addresses([]field{{name: "To", raw: []byte("To: " + a)}})...)
	}
	return out
}

// Prepare makes the message ready to go: Bcc: and Resent-Bcc: fields are
// removed (always: they are never meant to reach a recipient), and a
// missing From: (with the full name of -F), Date: and Message-ID: are
// added at the end of the header, as a sendmail command adds them. The
// line ending of added fields follows the message's.
type Prepare struct {
	Sender   string // the envelope sender ("" for <>)
	FullName string // sendmail -F
	Fallback string // user@host, for From: when the sender is <>
	Host     string // the domain of a new Message-ID
	Now      time.Time
}

// Apply returns the prepared message (msg is not modified).
func (p Prepare) Apply(msg []byte) []byte {
	fields, rest := splitHeader(msg)
	eol := "\n"
	if len(fields) > 0 && bytes.HasSuffix(fields[0].raw, []byte("\r\n")) {
		eol = "\r\n"
	}
	var out bytes.Buffer
	out.Grow(len(msg) + 256)
	for _, f := range fields {
		if strings.EqualFold(f.name, "Bcc") || strings.EqualFold(f.name, "Resent-Bcc") {
			continue
		}
		out.Write(f.raw)
		if !bytes.HasSuffix(f.raw, []byte("\n")) {
			out.WriteString(eol)
		}
	}
	if len(get(fields, "From")) == 0 {
		addr := p.Sender
		if addr == "" {
			addr = p.Fallback
		}
		fmt.Fprintf(&out, "From: %s%s", formatAddress(p.FullName, addr), eol)
	}
	now := p.Now
	if now.IsZero() {
		now = time.Now()
	}
	if len(get(fields, "Date")) == 0 {
		fmt.Fprintf(&out, "Date: %s%s", now.Format(time.RFC1123Z), eol)
	}
	if len(get(fields, "Message-ID")) == 0 {
		var b [8]byte
		rand.Read(b[:])
		host := p.Host
		if host == "" {
			host = "localhost"
		}
		fmt.Fprintf(&out, "Message-ID: <%s.%s@%s>%s", now.UTC().Format("20060102150405"), hex.EncodeToString(b[:]), host, eol)
	}
	if len(rest) == 0 {
		// No body: end the header all the same.
		out.WriteString(eol)
	}
	out.Write(rest)
	return out.Bytes()
}

// Dedupe drops repeated recipients (compared without case), keeping the
// first spelling and the order.
func Dedupe(addrs []string) []string {
	seen := make(map[string]bool)
	var out []string
	for _, a := range addrs {
		k := strings.ToLower(a)
		if a == "" || seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, a)
	}
	return out
}

// Qualify adds @domain to addresses without a domain (cron's "root"),
// when domain is set.
func Qualify(addrs []string, domain string) []string {
	if domain == "" {
		return addrs
	}
	out := make([]string, len(addrs))
	for i, a := range addrs {
		if a != "" && !strings.Contains(a, "@") {
			a += "@" + domain
		}
		out[i] = a
	}
	return out
}

// needsUTF8 reports whether the envelope or the header holds non-ASCII
// bytes, which SMTPUTF8 is for.
func needsUTF8(env Envelope, msg []byte) bool {
	if !isASCII(env.From) {
		return true
	}
	for _, t := range env.To {
		if !isASCII(t) {
			return true
		}
	}
	fields, _ := splitHeader(msg)
	for _, f := range fields {
		if !isASCII(string(f.raw)) {
			return true
		}
	}
	return false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// formatAddress writes a mailbox: a bare address without a name, a name
// made of plain words as it is, anything else quoted or encoded by
// net/mail.
func formatAddress(name, addr string) string {
	if name == "" {
		return addr
	}
	plain := strings.TrimSpace(name) == name && !strings.Contains(name, "  ")
	for _, c := range name {
		if !(c == ' ' || c < 0x80 && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("!#$%&'*+-/=?^_`{|}~", c))) {
			plain = false
			break
		}
	}
	if plain {
		return name + " <" + addr + ">"
	}
	return (&mail.Address{Name: name, Address: addr}).String()
}
