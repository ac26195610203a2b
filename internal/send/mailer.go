package send

import (
	"context"
	"errors"
	"fmt"
	"net"
)

// Mailer sends messages over one SMTP session, opened on first use
// through Connect and opened again once if it breaks.
type Mailer struct {
	// Connect returns a connection to the relay. A *Failure it returns
	// keeps its kind; other errors are temporary.
	Connect func(ctx context.Context) (net.Conn, error)
	Relay   Relay

	sess *Session
}

func (m *Mailer) session(ctx context.Context) (*Session, error) {
	if m.sess != nil {
		return m.sess, nil
	}
	conn, err := m.Connect(ctx)
	if err != nil {
		var f *Failure
		if errors.As(err, &f) {
			return nil, f
		}
		return nil, &Failure{Kind: Temporary, Stage: "connect", Err: err}
	}
	s, err := Open(ctx, conn, m.Relay)
	if err != nil {
		return nil, err
	}
	m.sess = s
	return s, nil
}

// Send sends one message; see Session.Send.
func (m *Mailer) Send(ctx context.Context, env Envelope, msg []byte) (string, error) {
	s, err := m.session(ctx)
	if err != nil {
		return "", err
	}
	reply, err := s.Send(ctx, env, msg)
	if err != nil && linkLost(err) {
		// The session is unusable; the next message opens another.
		s.c.Close()
		m.sess = nil
	}
	return reply, err
}

// linkLost reports whether err left the session unusable: a temporary
// failure that is not a reply.
func linkLost(err error) bool {
	var f *Failure
	if !errors.As(err, &f) {
		return true
	}
	return f.Kind == Temporary && (f.Code == 0 || f.Code == 421)
}

// Close ends the session, if one is open.
func (m *Mailer) Close() {
	if m.sess != nil {
		m.sess.Close()
		m.sess = nil
	}
}

// FlushReport says what a flush did.
type FlushReport struct {
	Sent   int
	Left   int // still queued (a temporary failure, or sent by another flush in progress)
	Failed int // refused for good, moved to failed/
	// Err is the worst failure met (a permanent one over a temporary
	// one), nil if none.
	Err error
}

// Flush sends queued messages, oldest first. A message is removed only
// after the relay's 250 for its DATA, and moved to failed/ when refused
// for good. When the link is lost, the rest wait for the next flush.
// note receives a line per message.
func Flush(ctx context.Context, q *Queue, m *Mailer, note func(string)) FlushReport {
	var rep FlushReport
	if note == nil {
		note = func(string) {}
	}
	q.CleanTmp()
	names, err := q.List()
	if err != nil {
		rep.Err = err
		return rep
	}
	worse := func(err error) {
		if rep.Err == nil || (IsTemporary(rep.Err) && !IsTemporary(err)) {
			rep.Err = err
		}
	}
	for i, name := range names {
		if ctx.Err() != nil {
			rep.Left += len(names) - i
			worse(ctx.Err())
			break
		}
		e, err := q.Claim(name)
		if errors.Is(err, ErrGone) {
			continue
		}
		if errors.Is(err, ErrBusy) {
			rep.Left++
			continue
		}
		if err != nil {
			note(err.Error())
			rep.Failed++
			worse(&Failure{Kind: Refused, Stage: "queue", Err: err})
			continue
		}
		reply, err := m.Send(ctx, e.Env, e.Msg)
		switch {
		case err == nil:
			if derr := e.Done(); derr != nil {
				// Sent, but still in the queue: a later flush would
				// send it again. Say so loudly.
				note(fmt.Sprintf("%s: sent (%s) but could not be removed from the queue: %v; remove it by hand or it goes again", name, reply, derr))
				worse(derr)
				continue
			}
			rep.Sent++
			note(fmt.Sprintf("%s: sent to %d recipient(s): %s", name, len(e.Env.To), reply))
		case IsTemporary(err):
			e.Release()
			rep.Left++
			worse(err)
			note(fmt.Sprintf("%s: still queued: %v", name, err))
			if linkLost(err) {
				rep.Left += countLeft(names[i+1:], q)
				return rep
			}
		case !aboutMessage(err):
			// AUTH refused, TLS that cannot work, a relay refusing
			// service: no message is at fault, and none will go.
			e.Release()
			rep.Left += 1 + countLeft(names[i+1:], q)
			worse(err)
			return rep
		default:
			if ferr := e.Fail(err.Error()); ferr != nil {
				note(fmt.Sprintf("%s: refused for good (%v); moving it to failed/ failed too: %v", name, err, ferr))
			} else {
				note(fmt.Sprintf("%s: refused for good, moved to failed/: %v", name, err))
			}
			rep.Failed++
			worse(err)
		}
	}
	return rep
}

func countLeft(names []string, q *Queue) int {
	n := 0
	for _, name := range names {
		if _, _, _, err := q.Peek(name); err == nil {
			n++
		}
	}
	return n
}

// aboutMessage reports whether a permanent failure is about the message
// (its sender, a recipient, its content) rather than the session.
func aboutMessage(err error) bool {
	var f *Failure
	if !errors.As(err, &f) {
		return false
	}
	switch f.Stage {
	case "MAIL", "RCPT", "DATA":
		return f.Kind == Recipient || f.Kind == Refused
	}
	return false
}
