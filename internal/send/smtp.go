package send

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// TLSMode says whether to use STARTTLS.
type TLSMode string

const (
	TLSNo        TLSMode = "no"         // never: the SSH channel encrypts already
	TLSIfOffered TLSMode = "if-offered" // when the relay offers it
	TLSRequired  TLSMode = "required"   // refuse to send without it
)

// Auth is the SMTP AUTH login.
type Auth struct {
	User     string
	Password string
	// Mechanism is PLAIN or LOGIN; "" picks PLAIN, else LOGIN, by what
	// the relay offers.
	Mechanism string
}

// Relay says how to talk to the SMTP server.
type Relay struct {
	// Helo is the name given in EHLO.
	Helo     string
	StartTLS TLSMode
	// TLS is the configuration of STARTTLS (ServerName must be set
	// unless InsecureSkipVerify).
	TLS  *tls.Config
	Auth *Auth
	// Timeout bounds each command's reply (default 5 minutes, as RFC
	// 5321 recommends) and the reply to the final dot (default 10).
	Timeout time.Duration
	// Say receives notes on what happens (sendmail -v); nil: quiet.
	Say func(format string, args ...any)
}

// Session is an SMTP connection ready for messages.
type Session struct {
	c   *smtp.Client
	say func(string, ...any)
	tls bool
}

// Open greets the relay on conn: EHLO, STARTTLS, AUTH as configured. It
// takes over conn (Close closes it).
func Open(ctx context.Context, conn net.Conn, r Relay) (*Session, error) {
	say := r.Say
	if say == nil {
		say = func(string, ...any) {}
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	helo := r.Helo
	if helo == "" {
		helo = "localhost"
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	s := &Session{say: say}
	mode := r.StartTLS
	if mode == "" {
		mode = TLSNo
	}
	if mode != TLSNo {
		c, usedTLS, err := startTLS(conn, helo, mode, r.TLS, timeout, say)
		if err != nil {
			conn.Close()
			return nil, ctxErr(ctx, err)
		}
		conn, s.tls = c, usedTLS
	}
	s.c = smtp.NewClient(conn)
	s.c.CommandTimeout = timeout
	s.c.SubmissionTimeout = 2 * timeout
	if err := s.c.Hello(helo); err != nil {
		s.c.Close()
		return nil, ctxErr(ctx, classify("EHLO", Refused, err))
	}
	if r.Auth != nil {
		if err := s.auth(r.Auth); err != nil {
			s.c.Close()
			return nil, ctxErr(ctx, err)
		}
	}
	return s, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return &Failure{Kind: Temporary, Stage: "connection", Err: fmt.Errorf("%w (%v)", ctx.Err(), err)}
	}
	return err
}

// TLS reports whether the session is encrypted by STARTTLS.
func (s *Session) TLS() bool { return s.tls }

func (s *Session) auth(a *Auth) error {
	if ok, _ := s.c.Extension("AUTH"); !ok {
		return &Failure{Kind: Config, Stage: "AUTH", Err: errors.New("the relay does not offer AUTH (is it the submission port, and does it want STARTTLS first?)")}
	}
	mech := strings.ToUpper(a.Mechanism)
	if mech == "" {
		switch {
		case s.c.SupportsAuth("PLAIN"):
			mech = "PLAIN"
		case s.c.SupportsAuth("LOGIN"):
			mech = "LOGIN"
		default:
			_, offered := s.c.Extension("AUTH")
			return &Failure{Kind: Config, Stage: "AUTH", Err: fmt.Errorf("the relay offers AUTH %s, not PLAIN or LOGIN", offered)}
		}
	} else if !s.c.SupportsAuth(mech) {
		_, offered := s.c.Extension("AUTH")
		return &Failure{Kind: Config, Stage: "AUTH", Err: fmt.Errorf("the relay does not offer AUTH %s (it offers %s)", mech, offered)}
	}
	var client sasl.Client
	switch mech {
	case "PLAIN":
		client = sasl.NewPlainClient("", a.User, a.Password)
	case "LOGIN":
		client = sasl.NewLoginClient(a.User, a.Password)
	default:
		return &Failure{Kind: Config, Stage: "AUTH", Err: fmt.Errorf("unknown mechanism %s (PLAIN or LOGIN)", mech)}
	}
	if err := s.c.Auth(client); err != nil {
		return classify("AUTH", Denied, err)
	}
	s.say("authenticated as %s (%s)", a.User, mech)
	return nil
}

// Send runs one mail transaction and returns the server's reply to the
// final dot. It is all or nothing: when any recipient is refused, the
// transaction is reset and nothing goes to anyone (a recipient refused
// for good makes a Recipient failure; otherwise a temporary one).
func (s *Session) Send(ctx context.Context, env Envelope, msg []byte) (string, error) {
	stop := context.AfterFunc(ctx, func() { s.c.Close() })
	defer stop()
	reply, err := s.send(env, msg)
	if err != nil {
		return "", ctxErr(ctx, err)
	}
	return reply, nil
}

func (s *Session) send(env Envelope, msg []byte) (string, error) {
	if len(env.To) == 0 {
		return "", &Failure{Kind: Refused, Stage: "RCPT", Err: errors.New("no recipients")}
	}
	if max, ok := s.c.MaxMessageSize(); ok && max > 0 && len(msg) > max {
		return "", &Failure{Kind: Refused, Stage: "MAIL", Err: fmt.Errorf("the message is %d bytes; the relay takes at most %d", len(msg), max)}
	}
	opts := &smtp.MailOptions{Size: int64(len(msg)), EnvelopeID: env.EnvelopeID}
	switch strings.ToUpper(env.Return) {
	case "FULL":
		opts.Return = smtp.DSNReturnFull
	case "HDRS":
		opts.Return = smtp.DSNReturnHeaders
	}
	if needsUTF8(env, msg) {
		if ok, _ := s.c.Extension("SMTPUTF8"); ok {
			opts.UTF8 = true
		} else if !isASCII(env.From) || !isASCII(strings.Join(env.To, "")) {
			return "", &Failure{Kind: Refused, Stage: "MAIL", Err: errors.New("the relay does not offer SMTPUTF8, which a non-ASCII address needs")}
		}
	}
	if ok, _ := s.c.Extension("8BITMIME"); !ok && !isASCII(string(msg)) {
		s.say("warning: the relay does not offer 8BITMIME; sending 8-bit text as it is")
	}
	if ok, _ := s.c.Extension("DSN"); !ok {
		opts.Return, opts.EnvelopeID = "", ""
	}
	if err := s.c.Mail(env.From, opts); err != nil {
		s.c.Reset()
		return "", classify("MAIL", Refused, err)
	}
	s.say("MAIL FROM:<%s> accepted", env.From)
	var ropts *smtp.RcptOptions
	if len(env.Notify) > 0 {
		if ok, _ := s.c.Extension("DSN"); ok {
			ropts = &smtp.RcptOptions{}
			for _, n := range env.Notify {
				ropts.Notify = append(ropts.Notify, smtp.DSNNotify(strings.ToUpper(n)))
			}
		}
	}
	var refused []*Failure
	for _, to := range env.To {
		err := s.c.Rcpt(to, ropts)
		if err == nil {
			s.say("RCPT TO:<%s> accepted", to)
			continue
		}
		f := classify("RCPT", Recipient, err)
		f.Recipient = to
		if f.Code == 0 {
			// Not a reply: the connection is gone.
			return "", f
		}
		refused = append(refused, f)
	}
	if len(refused) > 0 {
		s.c.Reset()
		return "", rcptFailure(refused, len(env.To))
	}
	w, err := s.c.Data()
	if err != nil {
		s.c.Reset()
		return "", classify("DATA", Refused, err)
	}
	if _, err := io.Copy(w, bytes.NewReader(msg)); err != nil {
		return "", classify("DATA", Refused, fmt.Errorf("sending the message: %w", err))
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", classify("DATA", Refused, err)
	}
	s.say("the relay took the message: 250 %s", resp.StatusText)
	return resp.StatusText, nil
}

// rcptFailure sums up refused recipients: permanent if any was refused
// for good.
func rcptFailure(refused []*Failure, total int) *Failure {
	first := refused[0]
	for _, f := range refused {
		if f.Kind == Recipient {
			first = f
			break
		}
	}
	if len(refused) == 1 {
		return first
	}
	var b strings.Builder
	for i, f := range refused {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "<%s>: %d %s", f.Recipient, f.Code, f.Reply)
	}
	return &Failure{Kind: first.Kind, Stage: "RCPT", Code: first.Code,
		Reply: fmt.Sprintf("%d of %d recipients refused: %s", len(refused), total, b.String()), Err: first.Err}
}

// Close says QUIT and closes the connection.
func (s *Session) Close() error {
	err := s.c.Quit()
	s.c.Close()
	return err
}

// startTLS greets the relay, and upgrades conn with STARTTLS when it is
// offered (or fails when mode requires it). go-smtp's client cannot
// start TLS in the middle of a session it began, so this part is done
// here; the client then gets the connection with the greeting replayed,
// and says EHLO again as RFC 3207 wants after TLS.
func startTLS(conn net.Conn, helo string, mode TLSMode, cfg *tls.Config, timeout time.Duration, say func(string, ...any)) (net.Conn, bool, error) {
	conn.SetDeadline(time.Now().Add(timeout))
	defer conn.SetDeadline(time.Time{})
	tp := textproto.NewReader(bufioReader(conn))
	_, greeting, err := tp.ReadResponse(220)
	if err != nil {
		return nil, false, classify("greeting", Refused, protoErr(err))
	}
	replay := func(c net.Conn) net.Conn { return &replayConn{Conn: c, pending: greetingBytes(greeting)} }
	if _, err := fmt.Fprintf(conn, "EHLO %s\r\n", helo); err != nil {
		return nil, false, classify("EHLO", Refused, err)
	}
	_, ehlo, err := tp.ReadResponse(250)
	if err != nil {
		var pe *textproto.Error
		if errors.As(err, &pe) && (pe.Code == 500 || pe.Code == 502) && mode != TLSRequired {
			// No EHLO, so no STARTTLS: go-smtp falls back to HELO.
			return replay(conn), false, nil
		}
		if mode == TLSRequired && errors.As(err, &pe) && (pe.Code == 500 || pe.Code == 502) {
			return nil, false, &Failure{Kind: Config, Stage: "STARTTLS", Err: errors.New("the relay does not speak ESMTP, so it cannot offer STARTTLS (starttls: required)")}
		}
		return nil, false, classify("EHLO", Refused, protoErr(err))
	}
	offered := false
	for _, l := range strings.Split(ehlo, "\n")[1:] {
		if strings.EqualFold(strings.TrimSpace(l), "STARTTLS") {
			offered = true
		}
	}
	if !offered {
		if mode == TLSRequired {
			return nil, false, &Failure{Kind: Config, Stage: "STARTTLS", Err: errors.New("the relay does not offer STARTTLS (starttls: required)")}
		}
		say("the relay does not offer STARTTLS; going on without it")
		return replay(conn), false, nil
	}
	if _, err := fmt.Fprintf(conn, "STARTTLS\r\n"); err != nil {
		return nil, false, classify("STARTTLS", Refused, err)
	}
	if _, _, err := tp.ReadResponse(220); err != nil {
		f := classify("STARTTLS", Config, protoErr(err))
		return nil, false, f
	}
	if cfg == nil {
		cfg = &tls.Config{}
	}
	tc := tls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		var cv *tls.CertificateVerificationError
		var hn x509.HostnameError
		var ua x509.UnknownAuthorityError
		if errors.As(err, &cv) || errors.As(err, &hn) || errors.As(err, &ua) {
			return nil, false, &Failure{Kind: Config, Stage: "STARTTLS", Err: fmt.Errorf("the relay's certificate does not verify for %q: %w (set tls-server-name or tls-ca, or tls-verify: false)", cfg.ServerName, err)}
		}
		return nil, false, &Failure{Kind: Temporary, Stage: "STARTTLS", Err: fmt.Errorf("TLS handshake: %w", err)}
	}
	st := tc.ConnectionState()
	say("STARTTLS: %s, %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
	return replay(tc), true, nil
}

// protoErr makes textproto's reply errors look like go-smtp's, so that
// classify reads their codes.
func protoErr(err error) error {
	var pe *textproto.Error
	if errors.As(err, &pe) {
		return &smtp.SMTPError{Code: pe.Code, Message: pe.Msg}
	}
	return err
}

// greetingBytes rebuilds a 220 greeting from its text.
func greetingBytes(text string) []byte {
	lines := strings.Split(text, "\n")
	var b bytes.Buffer
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		fmt.Fprintf(&b, "220%s%s\r\n", sep, l)
	}
	return b.Bytes()
}

// replayConn reads pending before the connection.
type replayConn struct {
	net.Conn
	pending []byte
}

func (r *replayConn) Read(p []byte) (int, error) {
	if len(r.pending) > 0 {
		n := copy(p, r.pending)
		r.pending = r.pending[n:]
		return n, nil
	}
	return r.Conn.Read(p)
}

// oneByteReader reads one byte at a time, so that reading replies never
// takes bytes past them (the TLS handshake comes next on the same
// connection).
type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return o.r.Read(p)
}

func bufioReader(c net.Conn) *bufio.Reader {
	return bufio.NewReaderSize(oneByteReader{c}, 16)
}
