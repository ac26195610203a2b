// Package autoreply makes the automatic replies of the rules' reply
// action, as RFC 3834 and Sieve's vacation extension (RFC 5230) define
// them: when not to reply, the reply's header, and at most one reply per
// sender in a period, remembered in a state directory under a lock.
package autoreply

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"mime"
	"net/mail"
	"strings"
	"time"

	"github.com/mfilter/mfilter/internal/msgview"
)

// listFields are the fields of mailing list mail (RFC 2369, RFC 2919).
var listFields = []string{"list-id", "list-help", "list-unsubscribe", "list-subscribe", "list-post", "list-owner", "list-archive"}

// Suppressed returns why msg must get no automatic reply, or "": an
// empty envelope sender, a reply address that is a list or daemon
// address or one of own, Auto-Submitted other than "no", Precedence
// bulk, list or junk, a List-* field, or (with addressed) a message not
// addressed to any of own in To, Cc, Bcc or their Resent- forms.
func Suppressed(v *msgview.Message, envSender, to string, own []string, addressed bool) string {
	es := strings.TrimSpace(envSender)
	if es == "" || es == "<>" {
		return "the envelope sender is empty (a bounce or a notification)"
	}
	if to == "" {
		return "no address to reply to"
	}
	for _, a := range []string{es, to} {
		if why := daemonAddress(a); why != "" {
			return why
		}
		if isOwn(a, own) {
			return fmt.Sprintf("%s is one of the user's own addresses", a)
		}
	}
	if why := bulkFields(v); why != "" {
		return why
	}
	if addressed && !addressedTo(v, own) {
		return "the message is not addressed to any of the user's addresses"
	}
	return ""
}

// bulkFields finds the fields that mark automatic or list mail.
func bulkFields(v *msgview.Message) string {
	for _, f := range v.Get("auto-submitted") {
		val := strings.ToLower(strings.TrimSpace(msgview.Unfold(f.Raw)))
		if i := strings.IndexByte(val, ';'); i >= 0 {
			val = strings.TrimSpace(val[:i])
		}
		if val != "no" {
			return "Auto-Submitted: " + val
		}
	}
	for _, f := range v.Get("precedence") {
		switch val := strings.ToLower(strings.TrimSpace(msgview.Unfold(f.Raw))); val {
		case "bulk", "list", "junk":
			return "Precedence: " + val
		}
	}
	for _, name := range listFields {
		if v.Has(name) {
			return "a " + name + " field (mailing list mail)"
		}
	}
	return ""
}

// daemonAddress says why addr is one that must not get a reply: a
// mailer daemon, a postmaster, a list's owner or request address.
func daemonAddress(addr string) string {
	local := strings.ToLower(addr)
	if i := strings.LastIndexByte(local, '@'); i >= 0 {
		local = local[:i]
	}
	switch {
	case local == "mailer-daemon", local == "postmaster", local == "listserv", local == "majordomo",
		strings.HasPrefix(local, "owner-"), strings.HasSuffix(local, "-request"),
		strings.HasPrefix(local, "bounce"), strings.HasSuffix(local, "-owner"):
		return fmt.Sprintf("%s is a daemon or list address", addr)
	}
	return ""
}

func isOwn(addr string, own []string) bool {
	for _, o := range own {
		if strings.EqualFold(strings.TrimSpace(o), addr) {
			return true
		}
	}
	return false
}

// addressedTo reports whether one of own is among the recipients.
func addressedTo(v *msgview.Message, own []string) bool {
	for _, name := range []string{"to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc"} {
		for _, a := range v.Addresses(name) {
			if isOwn(a.Addr(), own) {
				return true
			}
		}
	}
	return false
}

// Reply is what a reply says.
type Reply struct {
	From, To  string
	Subject   string // decoded text; encoded here when it is not ASCII
	Text      string
	InReplyTo string // the original's Message-ID, "" if none
	// References are the original's References, which the reply's
	// continue with its Message-ID.
	References string
	Date       time.Time
	Host       string // for the reply's Message-ID
}

// Build makes the reply message: a plain text message in UTF-8, marked
// Auto-Submitted: auto-replied (RFC 3834 §5), threaded to the original.
func Build(r Reply) []byte {
	var b strings.Builder
	field := func(name, value string) {
		if value != "" {
			b.WriteString(name + ": " + value + "\n")
		}
	}
	field("From", r.From)
	field("To", r.To)
	field("Subject", mime.QEncoding.Encode("utf-8", oneLine(r.Subject)))
	field("Date", r.Date.Format(time.RFC1123Z))
	field("Message-ID", "<"+uniqueID()+".mfilter-reply@"+hostOr(r.Host)+">")
	field("In-Reply-To", r.InReplyTo)
	refs := strings.TrimSpace(oneLine(r.References) + " " + r.InReplyTo)
	field("References", refs)
	field("Auto-Submitted", "auto-replied")
	field("MIME-Version", "1.0")
	field("Content-Type", "text/plain; charset=utf-8")
	field("Content-Transfer-Encoding", "8bit")
	b.WriteString("\n")
	text := strings.ReplaceAll(r.Text, "\r\n", "\n")
	b.WriteString(text)
	if text != "" && !strings.HasSuffix(text, "\n") {
		b.WriteString("\n")
	}
	return []byte(b.String())
}

// ValidAddress reports whether a is an address a reply can go to.
func ValidAddress(a string) bool {
	if a == "" || strings.HasPrefix(a, "-") || strings.ContainsAny(a, " \t\r\n<>") {
		return false
	}
	_, err := mail.ParseAddress(a)
	return err == nil
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func hostOr(h string) string {
	if h == "" || strings.ContainsAny(h, " <>@\r\n") {
		return "localhost"
	}
	return h
}

func uniqueID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
