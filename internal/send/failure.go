package send

import (
	"errors"
	"fmt"

	"github.com/emersion/go-smtp"

	"github.com/mfilter/mfilter/internal/sysexits"
)

// Envelope is what goes into MAIL FROM and RCPT TO, with the DSN
// requests of sendmail's -N, -R and -V.
type Envelope struct {
	From       string   `json:"from"` // "" is the null sender <>
	To         []string `json:"to"`
	Notify     []string `json:"notify,omitempty"` // -N: NEVER, or SUCCESS, FAILURE, DELAY
	Return     string   `json:"ret,omitempty"`    // -R: FULL or HDRS
	EnvelopeID string   `json:"envid,omitempty"`  // -V
}

// Kind sorts failures by what the caller should do about them.
type Kind int

const (
	// Temporary: try again later (no link, a 4xx reply, a connection
	// lost before the server took the message). Exit 75.
	Temporary Kind = iota
	// Recipient: the server refused a recipient for good (5xx to RCPT).
	// Nothing was sent to anyone. Exit 67.
	Recipient
	// Refused: the server refused the message or the sender for good
	// (5xx to MAIL or DATA, too big). Exit 69.
	Refused
	// Denied: authentication was refused. Exit 77.
	Denied
	// Config: the settings cannot work (TLS required but not offered, a
	// certificate that does not verify, AUTH not offered). Exit 78.
	Config
)

// Failure is why a message was not sent.
type Failure struct {
	Kind Kind
	// Stage is the SMTP step that failed: connect, greeting, EHLO,
	// STARTTLS, AUTH, MAIL, RCPT, DATA.
	Stage string
	// Recipient is the refused recipient (RCPT failures).
	Recipient string
	// Code and Reply are the server's reply, when there was one.
	Code  int
	Reply string
	Err   error
}

func (f *Failure) Error() string {
	what := f.Stage
	if f.Recipient != "" {
		what += " <" + f.Recipient + ">"
	}
	if f.Code != 0 {
		return fmt.Sprintf("%s: the server replied %d %s", what, f.Code, f.Reply)
	}
	return fmt.Sprintf("%s: %v", what, f.Err)
}

func (f *Failure) Unwrap() error { return f.Err }

// ExitCode is the sysexits code for err: 0 for nil, 75 for anything that
// is not a *Failure of another kind.
func ExitCode(err error) int {
	if err == nil {
		return sysexits.OK
	}
	var f *Failure
	if !errors.As(err, &f) {
		return sysexits.TempFail
	}
	switch f.Kind {
	case Recipient:
		return sysexits.NoUser
	case Refused:
		return sysexits.Unavailable
	case Denied:
		return sysexits.NoPerm
	case Config:
		return sysexits.Config
	}
	return sysexits.TempFail
}

// IsTemporary says whether a later try may succeed.
func IsTemporary(err error) bool {
	var f *Failure
	return err != nil && (!errors.As(err, &f) || f.Kind == Temporary)
}

// classify turns an error of an SMTP step into a Failure: a 5xx reply is
// permanent (of the kind given), a 4xx reply or anything else (a broken
// connection, a timeout) temporary.
func classify(stage string, permanent Kind, err error) *Failure {
	var f *Failure
	if errors.As(err, &f) {
		return f
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		k := Temporary
		if se.Code >= 500 {
			k = permanent
		}
		reply := se.Message
		if se.EnhancedCode != (smtp.EnhancedCode{}) && se.EnhancedCode != smtp.NoEnhancedCode {
			reply = fmt.Sprintf("%d.%d.%d %s", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
		}
		return &Failure{Kind: k, Stage: stage, Code: se.Code, Reply: reply, Err: err}
	}
	return &Failure{Kind: Temporary, Stage: stage, Err: err}
}
