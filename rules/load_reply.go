package rules

import (
	"go.yaml.in/yaml/v3"
)

// defaultReplyDays is Sieve vacation's default period (RFC 5230 §4.1).
const (
	defaultReplyDays = 7
	maxReplyDays     = 365
	defaultReplyDir  = ".mfilter-reply"
)

var replyKeys = []string{"text", "file", "subject", "from", "addresses", "days", "state", "via"}

// replyAction reads reply: {text|file, subject, from, addresses, days,
// state, via}.
func (l *loader) replyAction(p Pos, _, val *yaml.Node, _ map[string]*yaml.Node) Action {
	if val.Kind != yaml.MappingNode {
		l.errorf(val, "reply takes a mapping: {text: ..., days: 7, addresses: [...]}")
		return nil
	}
	a := &ReplyAction{Pos: p, Days: defaultReplyDays, State: defaultReplyDir, Via: "sendmail"}
	for i := 0; i+1 < len(val.Content); i += 2 {
		k, v := val.Content[i], val.Content[i+1]
		if !l.known(k, replyKeys, "reply option") {
			continue
		}
		l.replyOption(a, k.Value, v)
	}
	if (a.Text == nil) == (a.File == nil) {
		l.errorf(val, "reply needs its text: text: or file: (one of them)")
		return nil
	}
	return a
}

func (l *loader) replyOption(a *ReplyAction, key string, v *yaml.Node) {
	switch key {
	case "text":
		a.Text = l.template(v, "text")
	case "file":
		a.File = l.plainPath(v, "file")
	case "subject":
		a.Subject = l.template(v, "subject")
	case "from":
		a.From = l.template(v, "from")
	case "addresses":
		a.Addresses = l.templates(v, "addresses")
	case "days":
		n := l.number(v, "days")
		if n < 1 || n > maxReplyDays || n != float64(int(n)) {
			l.errorf(v, "days must be a whole number from 1 to %d", maxReplyDays)
			return
		}
		a.Days = int(n)
	case "state":
		if s := l.plainPath(v, "state"); s != nil {
			a.State = s.Value
		}
	case "via":
		a.Via = l.oneOf(v, "via", []string{"sendmail", "mfilter"})
	}
}
