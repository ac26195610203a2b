package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mfilter/mfilter/internal/autoreply"
	"github.com/mfilter/mfilter/internal/msgview"
)

// maxReplyText bounds a reply's text read from a file.
const maxReplyText = 64 << 10

// reply makes the step of a reply action, unless the message must get
// no automatic reply (RFC 3834 §2; the trace says why). Sending it, and
// the once-per-period state, are the filer's, after the message is
// filed.
func (s *state) reply(r *Rule, a *ReplyAction, depth int) error {
	to := replyAddress(s.view, s.envelopeSender())
	from := s.replyFrom(a)
	own := []string{from}
	for _, t := range a.Addresses {
		v, _ := s.expand(t, cleanHeaderValue)
		own = append(own, strings.TrimSpace(v))
	}
	if why := autoreply.Suppressed(s.view, s.envelopeSender(), to, own, len(a.Addresses) > 0); why != "" {
		s.tracef(depth, "no reply: %s", why)
		return nil
	}
	if !autoreply.ValidAddress(to) {
		s.tracef(depth, "no reply: %q is not an address to reply to", to)
		return nil
	}
	text, err := s.replyText(a)
	if err != nil {
		s.warnf("%s: no reply: %v", a.Pos, err)
		return nil
	}
	subject := s.replySubject(a)
	msg := autoreply.Build(autoreply.Reply{
		From: from, To: to, Subject: subject, Text: text,
		InReplyTo:  strings.TrimSpace(s.firstField("message-id")),
		References: s.firstField("references"),
		Date:       s.now, Host: s.vars.get("HOST").value,
	})
	job := &autoreply.Job{To: to, Msg: msg, Argv: s.replyArgv(a, to), Dir: s.replyDir(a),
		Key: autoreply.Key(to, replyHandle(a, from)), Period: time.Duration(a.Days) * 24 * time.Hour}
	s.dec.Steps = append(s.dec.Steps, Step{Kind: StepReply, Copy: true, Rule: r.stepLabel(), Msg: s.msg, Reply: job})
	s.tracef(depth, "reply to %s (at most once in %d days)", to, a.Days)
	return nil
}

// firstField is the unfolded value of the first field called name.
func (s *state) firstField(name string) string {
	if fs := s.view.Get(name); len(fs) > 0 {
		return msgview.Unfold(fs[0].Raw)
	}
	return ""
}

// replyFrom is the reply's From: the from: option, else the envelope
// recipient, else USER@HOST.
func (s *state) replyFrom(a *ReplyAction) string {
	if a.From != nil {
		v, _ := s.expand(a.From, cleanHeaderValue)
		return strings.TrimSpace(v)
	}
	if s.env.Recipient != "" {
		return s.env.Recipient
	}
	return s.vars.get("USER").value + "@" + s.vars.get("HOST").value
}

// replySubject is the subject: option, where ${subject} is the
// original's subject, else "Auto: " and that subject.
func (s *state) replySubject(a *ReplyAction) string {
	orig := ""
	if fs := s.view.Get("subject"); len(fs) > 0 {
		orig = s.view.Decoded(fs[0])
	}
	if a.Subject == nil {
		return "Auto: " + orig
	}
	lookup := func(name string) (string, bool) {
		if name == "subject" {
			return orig, true
		}
		return s.lookup(name)
	}
	v, _ := a.Subject.expandAt(lookup, cleanHeaderValue, s.now)
	return v
}

// replyText is the text: option expanded, or the file: read (at most
// maxReplyText bytes).
func (s *state) replyText(a *ReplyAction) (string, error) {
	if a.Text != nil {
		lookup := func(name string) (string, bool) {
			if name == "subject" {
				if fs := s.view.Get("subject"); len(fs) > 0 {
					return s.view.Decoded(fs[0]), true
				}
				return "", true
			}
			return s.lookup(name)
		}
		v, _ := a.Text.expandAt(lookup, nil, s.now)
		return v, nil
	}
	f, err := os.Open(s.underMaildir(a.File.Value))
	if err != nil {
		return "", fmt.Errorf("reply text: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxReplyText))
	if err != nil {
		return "", fmt.Errorf("reply text: %w", err)
	}
	return string(b), nil
}

// underMaildir resolves a path the rules wrote: ~/ is the home, a
// relative path is below the mail directory.
func (s *state) underMaildir(p string) string {
	switch {
	case strings.HasPrefix(p, "~/"):
		return filepath.Join(s.vars.get("HOME").value, p[2:])
	case filepath.IsAbs(p):
		return p
	}
	return filepath.Join(s.vars.get("MAILDIR").value, p)
}

func (s *state) replyDir(a *ReplyAction) string { return s.underMaildir(a.State) }

// replyArgv is the command that sends the reply with an empty envelope
// sender (RFC 3834 §3.3): the sendmail: setting, or mfilter send (which
// may queue it: a reply is not retried with the message).
func (s *state) replyArgv(a *ReplyAction, to string) []string {
	if a.Via != "mfilter" {
		return append(slices.Clone(s.e.sendmail), "-f", "<>", to)
	}
	send := s.e.opts.MfilterSend
	if len(send) == 0 {
		send = DefaultMfilterSend
	}
	var argv []string
	for _, w := range send {
		if w != "--no-queue" && w != "--" {
			argv = append(argv, w)
		}
	}
	return append(argv, "-f", "<>", "--", to)
}

// replyHandle tells replies apart (RFC 5230 :handle): a new text,
// subject or sender starts a new period for everyone.
func replyHandle(a *ReplyAction, from string) string {
	h := sha256.New()
	for _, t := range []*Template{a.Text, a.Subject} {
		if t != nil {
			io.WriteString(h, t.Source)
		}
		h.Write([]byte{0})
	}
	if a.File != nil {
		io.WriteString(h, a.File.Value)
	}
	io.WriteString(h, "\x00"+strings.ToLower(from))
	return hex.EncodeToString(h.Sum(nil))
}
