package rules

import (
	"strings"

	"github.com/mfilter/mfilter/internal/msgview"
)

// The built-ins that describe the message and the run, worked out when
// first used: date, reply_address, last_folder (set by each delivery).
const (
	varDate         = "date"
	varReplyAddress = "reply_address"
	varLastFolder   = "last_folder"
)

// builtin returns the value of a lazily made built-in and whether name
// is one.
func (s *state) builtin(name string) (variable, bool) {
	switch name {
	case varDate:
		return variable{s.now.Format("2006-01-02"), false}, true
	case varReplyAddress:
		return variable{replyAddress(s.view, s.envelopeSender()), true}, true
	case varLastFolder:
		v := s.vars.get(varLastFolder)
		return v, true
	}
	return variable{}, false
}

// replyAddress is the address formail -rt replies to: the first of
// Reply-To, From, Sender and Return-Path that holds one, else the
// envelope sender (the From_ line).
func replyAddress(v *msgview.Message, envSender string) string {
	for _, name := range []string{"reply-to", "from", "sender", "return-path"} {
		for _, f := range v.Get(name) {
			if a := formailAddress(msgview.Unfold(f.Raw)); a != "" {
				return a
			}
		}
	}
	return envSender
}

// formailAddress picks the address out of a field's value as formail
// does: the text in the first <...>, else the first word outside
// comments ("Alice <a@x.org>", "a@x.org (Alice)", "a@x.org, b@y.org"
// give the first address). "<>" holds none.
func formailAddress(v string) string {
	if i := strings.IndexByte(v, '<'); i >= 0 {
		a := v[i+1:]
		if j := strings.IndexByte(a, '>'); j >= 0 {
			a = a[:j]
		}
		return strings.TrimSpace(a)
	}
	var b strings.Builder
	depth := 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth > 0:
		case c == ' ' || c == '\t' || c == ',' || c == '\r' || c == '\n':
			if b.Len() > 0 {
				return b.String()
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
