package imapfetch

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-sasl"
)

// maxLine bounds a line of the server before login: a greeting, a
// capability list, a SASL challenge.
const maxLine = 64 << 10

var literalHead = regexp.MustCompile(`\{[0-9]+\+?\}$`)

// session is the part of an IMAP session before go-imap takes over:
// greeting, STARTTLS, login, COMPRESS (RFC 4978), which go-imap v2
// cannot start on a connection it owns.
type session struct {
	conn  net.Conn
	br    *bufio.Reader
	tag   int
	caps  imap.CapSet
	authd bool // PREAUTH
}

// reply is a tagged response.
type reply struct {
	status, code, text string
}

func (r reply) err(cmd string) error {
	if r.status == "OK" {
		return nil
	}
	return &imap.Error{Type: imap.StatusResponseType(r.status), Code: imap.ResponseCode(r.code), Text: cmd + ": " + r.text}
}

func newSession(conn net.Conn) *session {
	return &session{conn: conn, br: bufio.NewReaderSize(conn, 4096)}
}

// readLine reads one line without its CRLF. A literal is refused: no
// server sends one before login unless asked.
func (s *session) readLine() (string, error) {
	var b []byte
	for {
		frag, err := s.br.ReadSlice('\n')
		b = append(b, frag...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return "", err
		}
		if len(b) > maxLine {
			return "", fmt.Errorf("a line of the server longer than %d bytes", maxLine)
		}
	}
	line := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if literalHead.MatchString(line) {
		return "", fmt.Errorf("unexpected literal from the server: %.100q", line)
	}
	return line, nil
}

// greeting reads the server's greeting; PREAUTH is refused where
// STARTTLS is to come (RFC 9051 7.1.4).
func (s *session) greeting(startTLS bool) error {
	line, err := s.readLine()
	if err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	st, ok := strings.CutPrefix(line, "* ")
	if !ok {
		return fmt.Errorf("greeting: %.100q", line)
	}
	status, rest, _ := strings.Cut(st, " ")
	switch strings.ToUpper(status) {
	case "OK":
	case "PREAUTH":
		if startTLS {
			return errors.New("the server sent PREAUTH on an unencrypted connection")
		}
		s.authd = true
	default:
		return fmt.Errorf("greeting: %.200s", line)
	}
	s.respCode(rest)
	return nil
}

// respCode takes the capabilities from a [CAPABILITY ...] response code
// and returns the code's name.
func (s *session) respCode(text string) string {
	code, ok := strings.CutPrefix(text, "[")
	if !ok {
		return ""
	}
	code, _, _ = strings.Cut(code, "]")
	name, args, _ := strings.Cut(code, " ")
	name = strings.ToUpper(name)
	if name == "CAPABILITY" {
		s.setCaps(args)
	}
	return name
}

func (s *session) setCaps(list string) {
	s.caps = make(imap.CapSet)
	for _, c := range strings.Fields(list) {
		s.caps[imap.Cap(strings.ToUpper(c))] = struct{}{}
	}
}

// send writes a command and returns its tag.
func (s *session) send(cmd string) (string, error) {
	s.tag++
	tag := "m" + strconv.Itoa(s.tag)
	if _, err := io.WriteString(s.conn, tag+" "+cmd+"\r\n"); err != nil {
		return "", err
	}
	return tag, nil
}

// await reads until the tagged reply of tag, taking capabilities from
// untagged ones; a continuation request ("+ ...") is returned as
// status "+" when cont is set.
func (s *session) await(tag string, cont bool) (reply, error) {
	for {
		line, err := s.readLine()
		if err != nil {
			return reply{}, err
		}
		if cont && (line == "+" || strings.HasPrefix(line, "+ ")) {
			return reply{status: "+", text: strings.TrimPrefix(strings.TrimPrefix(line, "+"), " ")}, nil
		}
		if rest, ok := strings.CutPrefix(line, "* "); ok {
			name, args, _ := strings.Cut(rest, " ")
			switch strings.ToUpper(name) {
			case "CAPABILITY":
				s.setCaps(args)
			case "BYE":
				return reply{}, fmt.Errorf("the server closed the connection: %.200s", args)
			}
			continue
		}
		t, rest, _ := strings.Cut(line, " ")
		if t != tag {
			return reply{}, fmt.Errorf("unexpected line from the server: %.100q", line)
		}
		status, text, _ := strings.Cut(rest, " ")
		r := reply{status: strings.ToUpper(status), text: text}
		r.code = s.respCode(text)
		return r, nil
	}
}

// command sends a command without literals and waits for its reply.
func (s *session) command(cmd string) (reply, error) {
	tag, err := s.send(cmd)
	if err != nil {
		return reply{}, err
	}
	return s.await(tag, false)
}

// capability asks for the capabilities unless they are known.
func (s *session) capability() error {
	if s.caps != nil {
		return nil
	}
	r, err := s.command("CAPABILITY")
	if err != nil {
		return fmt.Errorf("capabilities: %w", err)
	}
	if err := r.err("CAPABILITY"); err != nil {
		return err
	}
	if s.caps == nil {
		return errors.New("capabilities: the server listed none")
	}
	return nil
}

// startTLS upgrades the connection and forgets what was said before.
func (s *session) startTLS(ctx context.Context, cfg *tls.Config) error {
	if err := s.capability(); err != nil {
		return err
	}
	if !s.caps.Has(imap.CapStartTLS) {
		return errors.New("the server does not offer STARTTLS")
	}
	r, err := s.command("STARTTLS")
	if err != nil {
		return fmt.Errorf("starttls: %w", err)
	}
	if err := r.err("STARTTLS"); err != nil {
		return err
	}
	// Bytes after the OK were sent in clear text before TLS: an
	// injection (CVE-2011-0411 and kin), never read as the server's.
	if s.br.Buffered() > 0 {
		return errors.New("starttls: the server sent data before the TLS handshake")
	}
	tc := tls.Client(s.conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	s.conn, s.br, s.caps = tc, bufio.NewReaderSize(tc, 4096), nil
	return nil
}

// login sends LOGIN, the user and password each a quoted string or a
// literal.
func (s *session) login(user, pw string) error {
	if s.caps.Has(imap.CapLoginDisabled) {
		return errors.New("the server refuses LOGIN (LOGINDISABLED)")
	}
	s.tag++
	tag := "m" + strconv.Itoa(s.tag)
	buf := []byte(tag + " LOGIN")
	for _, v := range []string{user, pw} {
		head, lit, err := s.astring(v)
		if err != nil {
			return err
		}
		buf = append(buf, ' ')
		buf = append(buf, head...)
		if !lit {
			continue
		}
		buf = append(buf, "\r\n"...)
		if !strings.HasSuffix(head, "+}") {
			// A synchronizing literal: the server's go-ahead first.
			if _, err := s.conn.Write(buf); err != nil {
				return fmt.Errorf("login: %w", err)
			}
			buf = buf[:0]
			r, err := s.await(tag, true)
			if err != nil {
				return fmt.Errorf("login: %w", err)
			}
			if r.status != "+" {
				return r.err("LOGIN")
			}
		}
		buf = append(buf, v...)
	}
	if _, err := s.conn.Write(append(buf, "\r\n"...)); err != nil {
		return fmt.Errorf("login: %w", err)
	}
	s.caps = nil // those of the logged-in session come with the OK, or are asked for
	r, err := s.await(tag, false)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	return r.err("LOGIN")
}

// astring is v as a quoted string, or the head of a literal ({n} or
// {n+}) when v holds a CR, an LF or 8-bit bytes. A NUL is refused.
func (s *session) astring(v string) (string, bool, error) {
	if strings.IndexByte(v, 0) >= 0 {
		return "", false, errors.New("a user or password with a NUL byte")
	}
	quotable := true
	for i := 0; i < len(v); i++ {
		if v[i] == '\r' || v[i] == '\n' || v[i] >= 0x80 {
			quotable = false
		}
	}
	if quotable {
		r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
		return `"` + r.Replace(v) + `"`, false, nil
	}
	plus := ""
	if s.caps.Has(imap.CapLiteralPlus) || (s.caps.Has(imap.CapLiteralMinus) && len(v) <= 4096) {
		plus = "+"
	}
	return "{" + strconv.Itoa(len(v)) + plus + "}", true, nil
}

// authenticate runs a SASL exchange (RFC 4959's initial response where
// the server has SASL-IR).
func (s *session) authenticate(sc sasl.Client) error {
	mech, ir, err := sc.Start()
	if err != nil {
		return err
	}
	cmd := "AUTHENTICATE " + mech
	if ir != nil && s.caps.Has(imap.CapSASLIR) {
		cmd += " " + encodeSASL(ir)
		ir = nil
	}
	tag, err := s.send(cmd)
	if err != nil {
		return fmt.Errorf("authenticate: %w", err)
	}
	s.caps = nil // those of the logged-in session come with the OK, or are asked for
	for {
		r, err := s.await(tag, true)
		if err != nil {
			return fmt.Errorf("authenticate: %w", err)
		}
		if r.status != "+" {
			return r.err("AUTHENTICATE")
		}
		var resp []byte
		if r.text == "" && ir != nil {
			resp, ir = ir, nil
		} else {
			if r.text == "=" {
				r.text = ""
			}
			challenge, err := base64.StdEncoding.DecodeString(r.text)
			if err != nil {
				return fmt.Errorf("authenticate: a challenge not in base64: %.100q", r.text)
			}
			if resp, err = sc.Next(challenge); err != nil {
				return fmt.Errorf("authenticate: %w", err)
			}
		}
		// An empty response is an empty line (RFC 3501 6.2.2); "="
		// only stands for an empty initial response.
		if _, err := io.WriteString(s.conn, base64.StdEncoding.EncodeToString(resp)+"\r\n"); err != nil {
			return fmt.Errorf("authenticate: %w", err)
		}
	}
}

// encodeSASL is a SASL response as IMAP sends it: "=" when empty.
func encodeSASL(b []byte) string {
	if len(b) == 0 {
		return "="
	}
	return base64.StdEncoding.EncodeToString(b)
}
