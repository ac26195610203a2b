package bench

import (
	"bytes"
	"fmt"
	"strings"
)

// The rules scenario: the 15 rules of the shared bench-anchors.md (10
// List-Id rules to 10 maildirs, a Reply-To rule, a header regex, an
// X-Spam-Flag rule to an mbox, a body regex to an mbox, a size rule, the
// rest to an inbox maildir), written for formail -s procmail, for fdm and
// for mfilter, and an mbox whose messages are tagged so that every rule
// fires.

// Lists is how many List-Id rules there are.
const Lists = 10

// BigSize is the size rule's threshold; tagged big messages are padded
// well past it, and no corpus message comes near it.
const BigSize = 100000

// RulesMaildirs are the maildir folders of the rules, relative to the
// mail directory.
func RulesMaildirs() []string {
	dirs := []string{"inbox", "boss", "urgent", "big"}
	for k := range Lists {
		dirs = append(dirs, fmt.Sprintf("lists.%d", k))
	}
	return dirs
}

// RulesMboxes are the mbox folders of the rules.
var RulesMboxes = []string{"spam.mbox", "newsletters.mbox"}

// What Tag adds.
const (
	tagReplyTo  = "Reply-To: The Boss <boss@corp.example>\n"
	tagUrgent   = "X-Priority-Tag: [URGENT] quarterly numbers\n"
	tagSpam     = "X-Spam-Flag: YES\n"
	tagBodyLine = "To stop these mails, unsubscribe here: https://news.example/u?id=42\n"
)

// Tag makes the k-th entry of the rules mbox fire one rule (or none,
// for the inbox): every 4th message gets one of the 10 List-Ids in
// turn; of the others, one in 10 each a Reply-To from the boss, an
// X-Priority-Tag, an X-Spam-Flag and the newsletter's body line, and one
// in 200 a body padded past BigSize. Fields go at the end of the header,
// body lines at the end of the body. A message with a Content-Length
// field gets no body line or padding, which would make the field wrong.
// Corpus messages that fire a rule by themselves (a real X-Spam-Flag:
// YES, say) do so for every tool alike.
func Tag(entry []byte, k int) []byte {
	var field, body string
	switch {
	case k%4 == 0:
		n := (k / 4) % Lists
		field = fmt.Sprintf("List-Id: Bench list %d <list%d.example.org>\n", n, n)
	case k%10 == 1:
		field = tagReplyTo
	case k%10 == 3:
		field = tagUrgent
	case k%10 == 5:
		field = tagSpam
	case k%10 == 7:
		body = tagBodyLine
	case k%200 == 9:
		var b strings.Builder
		for i := 0; b.Len() <= BigSize+20000; i++ {
			fmt.Fprintf(&b, "padding line %05d of a big attachment, quoted-printable perhaps\n", i)
		}
		body = b.String()
	}
	end := headerEnd(entry)
	if body != "" && hasContentLength(entry[:end]) {
		body = ""
	}
	if field == "" && body == "" {
		return entry
	}
	out := make([]byte, 0, len(entry)+len(field)+len(body))
	out = append(out, entry[:end]...)
	out = append(out, field...)
	out = append(out, entry[end:]...)
	if body != "" {
		// Before the blank line that ends every entry.
		out = append(out[:len(out)-1], body...)
		out = append(out, '\n')
	}
	return out
}

// headerEnd is where the header of an mbox entry ends: after its From_
// line, the fields and their continuation lines.
func headerEnd(entry []byte) int {
	p := bytes.IndexByte(entry, '\n') + 1 // the From_ line
	for p < len(entry) {
		line := entry[p:]
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			line = line[:i+1]
		}
		if !(line[0] == ' ' || line[0] == '\t') && !isField(line) {
			break
		}
		p += len(line)
	}
	return p
}

// isField reports whether line starts with a header field name and its
// colon.
func isField(line []byte) bool {
	for i, c := range line {
		switch {
		case c == ':':
			return i > 0
		case c <= ' ' || c >= 0x7f:
			return false
		}
	}
	return false
}

func hasContentLength(header []byte) bool {
	for _, line := range bytes.Split(header, []byte("\n")) {
		if len(line) >= 15 && bytes.EqualFold(line[:15], []byte("content-length:")) {
			return true
		}
	}
	return false
}

// BuildRules concatenates n tagged entries, cycling through msgs.
func BuildRules(msgs []Message, n int) []byte {
	var out []byte
	for i := range n {
		out = append(out, Tag(msgs[i%len(msgs)].Entry, i)...)
	}
	return out
}

// Procmailrc is the procmailrc of bench-anchors.md for mail directory
// dir.
func Procmailrc(dir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "MAILDIR=%s\nDEFAULT=%s/inbox/\n", dir, dir)
	for k := range Lists {
		fmt.Fprintf(&b, ":0\n* ^List-Id:.*<list%d\\.example\\.org>\nlists.%d/\n", k, k)
	}
	b.WriteString(":0\n* ^Reply-To:.*boss@corp\\.example\nboss/\n")
	b.WriteString(":0\n* ^X-Priority-Tag:.*\\[URGENT\\]\nurgent/\n")
	b.WriteString(":0:\n* ^X-Spam-Flag: YES\nspam.mbox\n")
	b.WriteString(":0 B:\n* unsubscribe here\nnewsletters.mbox\n")
	fmt.Fprintf(&b, ":0\n* > %d\nbig/\n", BigSize)
	fmt.Fprintf(&b, ":0\n%s/inbox/\n", dir)
	return b.String()
}

// FdmConf is the fdm.conf of bench-anchors.md, plus no-received: it
// reads the mbox at mbox (and keeps it) and delivers below dir.
func FdmConf(dir, mbox string) string {
	var b strings.Builder
	// no-received: fdm would add a Received: field of its own to every
	// message, which procmail and mfilter do not.
	b.WriteString("set lock-types flock\nset no-received\n")
	fmt.Fprintf(&b, "account \"bench\" mbox \"%s\" keep\n", mbox)
	return b.String() + fdmRules(dir)
}

// FdmIMAPConf is FdmConf's rules for the messages of an imap account
// (plain IMAP on host:port), which fdm deletes once delivered.
func FdmIMAPConf(dir, host, port, user, pass, folder string) string {
	var b strings.Builder
	b.WriteString("set lock-types flock\nset no-received\n")
	fmt.Fprintf(&b, "account \"bench\" imap server \"%s\" port %s user \"%s\" pass \"%s\" folder \"%s\"\n", host, port, user, pass, folder)
	return b.String() + fdmRules(dir)
}

// fdmRules are the actions and match rules of bench-anchors.md for fdm.
func fdmRules(dir string) string {
	var b strings.Builder
	for k := range Lists {
		fmt.Fprintf(&b, "action \"l%d\" maildir \"%s/lists.%d\"\n", k, dir, k)
		fmt.Fprintf(&b, "match \"^List-Id:.*<list%d\\\\.example\\\\.org>\" in headers action \"l%d\"\n", k, k)
	}
	fmt.Fprintf(&b, "action \"boss\" maildir \"%s/boss\"\n", dir)
	b.WriteString("match \"^Reply-To:.*boss@corp\\\\.example\" in headers action \"boss\"\n")
	fmt.Fprintf(&b, "action \"urgent\" maildir \"%s/urgent\"\n", dir)
	b.WriteString("match \"^X-Priority-Tag:.*\\\\[URGENT\\\\]\" in headers action \"urgent\"\n")
	fmt.Fprintf(&b, "action \"spam\" mbox \"%s/spam.mbox\"\n", dir)
	b.WriteString("match \"^X-Spam-Flag: YES\" in headers action \"spam\"\n")
	fmt.Fprintf(&b, "action \"news\" mbox \"%s/newsletters.mbox\"\n", dir)
	b.WriteString("match \"unsubscribe here\" in body action \"news\"\n")
	fmt.Fprintf(&b, "action \"big\" maildir \"%s/big\"\n", dir)
	fmt.Fprintf(&b, "match size > %d action \"big\"\n", BigSize)
	fmt.Fprintf(&b, "action \"inbox\" maildir \"%s/inbox\"\n", dir)
	b.WriteString("match all action \"inbox\"\n")
	return b.String()
}

// RulesYAML is the same rules for mfilter, written as an mfilter user
// would: the Reply-To address and single fields are tested as such (not
// by a regex over the whole header), and the body regex reads the raw
// body, as procmail's B and fdm's "in body" do. The List-Id rules test
// every List-Id field, as the regexes of procmail and fdm do (some
// corpus messages have a List-Id of their own before the one Tag adds;
// list-id: reads the first).
func RulesYAML(dir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "maildir: %s\ndefault: inbox/\nrules:\n", dir)
	for k := range Lists {
		fmt.Fprintf(&b, "  - if: {header: {List-Id: '<list%d\\.example\\.org>'}}\n    then: {folder: lists.%d/}\n", k, k)
	}
	b.WriteString("  - if: {reply-to: {address: boss@corp.example}}\n    then: {folder: boss/}\n")
	b.WriteString("  - if: {header: {X-Priority-Tag: '\\[URGENT\\]'}}\n    then: {folder: urgent/}\n")
	b.WriteString("  - if: {header: {X-Spam-Flag: '^YES'}}\n    then: {folder: spam.mbox}\n")
	b.WriteString("  - if: {body: {regex: 'unsubscribe here', raw: true}}\n    then: {folder: newsletters.mbox}\n")
	fmt.Fprintf(&b, "  - if: {size: '> %d'}\n    then: {folder: big/}\n", BigSize)
	return b.String()
}
