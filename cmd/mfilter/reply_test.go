package main

// The reply action (issue 15) against a real MTA: messages go through
// mfilter deliver, and the replies it sends go through mfilter send (SSH
// to the private Postfix) or the sendmail: setting (Postfix's own
// sendmail, -C the private instance) into the senders' maildirs there.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mfilter/mfilter/internal/mtatest"
)

// replyCase is one message delivered to tester@example.test.
type replyCase struct {
	name    string
	sender  string // envelope sender (mfilter deliver -f)
	header  string // fields besides To, Subject, Message-ID, Date
	replied bool   // whether the sender gets a reply
}

// replyCases are delivered in order: a reply, none to the same sender
// within the period, none to list, bulk, automatic, daemon or own mail,
// then a reply to a new sender, which shows the ones before had their
// chance to arrive.
var replyCases = []replyCase{
	{"first message", "alice@example.test", "From: Alice <alice@example.test>\nReferences: <m0@example.test>\n", true},
	{"same sender again", "alice@example.test", "From: Alice <alice@example.test>\n", false},
	{"mailing list", "carol@example.test", "From: carol@example.test\nList-Id: Talk <talk.lists.example.test>\n", false},
	{"precedence bulk", "bob@example.test", "From: bob@example.test\nPrecedence: bulk\n", false},
	{"auto-generated", "dave@example.test", "From: dave@example.test\nAuto-Submitted: auto-generated\n", false},
	{"mailer-daemon", "MAILER-DAEMON@example.test", "From: Mail Delivery System <MAILER-DAEMON@example.test>\n", false},
	{"own address", "tester@example.test", "From: Tester <tester@example.test>\n", false},
	{"a new sender", "erin@example.test", "From: erin@example.test\n", true},
}

var replyUsers = []string{"alice", "bob", "carol", "dave", "erin", "mailer-daemon", "tester"}

func TestReplyViaPostfix(t *testing.T) {
	for _, via := range []string{"mfilter", "sendmail"} {
		t.Run(via, func(t *testing.T) { testReplyVia(t, via) })
	}
}

func testReplyVia(t *testing.T, via string) {
	e := newSendEnv(t, mtatest.Options{Users: replyUsers}, "")
	rulesFile := writeReplyRules(t, e, via)
	mail := filepath.Join(e.dir, "Mail")
	var replies []string // recipients of the replies so far
	for i, c := range replyCases {
		msg := fmt.Sprintf("%sTo: Tester <tester@example.test>\nSubject: message %d\nMessage-ID: <m%d@example.test>\nDate: Mon, 01 Jan 2024 10:00:00 +0100\n\nbody %d\n", c.header, i+1, i+1, i+1)
		cmd := exec.Command(mfilterBin, "deliver", "--rules", rulesFile, "--maildir", mail, "-f", c.sender)
		cmd.Env = append(os.Environ(), e.env...)
		cmd.Stdin = strings.NewReader(msg)
		if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
			t.Fatalf("%s: mfilter deliver: %v: %s", c.name, err, out)
		}
		if c.replied {
			replies = append(replies, strings.ToLower(c.sender))
		}
		e.mta.WaitIdle(t)
		checkReplies(t, e, c.name, replies)
	}
	if n := len(maildirFiles(t, filepath.Join(mail, "inbox"))); n != len(replyCases) {
		t.Errorf("inbox/ holds %d messages, want all %d", n, len(replyCases))
	}
	got, traces := e.delivered("alice", 1)
	checkReplyMessage(t, got[0], traces[0], "alice@example.test", "<m1@example.test>", "<m0@example.test> <m1@example.test>", "message 1")
	got, traces = e.delivered("erin", 1)
	checkReplyMessage(t, got[0], traces[0], "erin@example.test", "<m8@example.test>", "<m8@example.test>", "message 8")
	state, err := os.ReadFile(filepath.Join(mail, ".mfilter-reply", "state"))
	if err != nil || len(strings.Split(strings.TrimSpace(string(state)), "\n")) != 2 {
		t.Errorf("reply state: %v: %q, want two senders", err, state)
	}
	logged, _ := os.ReadFile(filepath.Join(mail, "mfilter.log"))
	for _, to := range []string{"alice@example.test", "erin@example.test"} {
		if n := strings.Count(string(logged), "mfilter: replied to "+to+"\n"); n != 1 {
			t.Errorf("the log says %d times that %s got a reply, want once:\n%s", n, to, logged)
		}
	}
}

// writeReplyRules writes the rules of mfilter deliver: the send: section
// of e, a log, and a reply to everything, through via.
func writeReplyRules(t *testing.T, e *sendEnv, via string) string {
	t.Helper()
	base, err := os.ReadFile(e.rules)
	if err != nil {
		t.Fatal(err)
	}
	// Postfix's sendmail, told to drop the message in the private
	// instance's queue.
	sendmail := fmt.Sprintf("sendmail: [/usr/sbin/sendmail, -C, %s, -oi]\n", e.mta.Dir)
	rules := string(base) + sendmail + `log: mfilter.log
rules:
  - name: holiday
    then:
      - reply:
          text: |
            I am away until Monday.
          subject: 'Away: ${subject}'
          from: tester@example.test
          addresses: [tester@example.test]
          days: 7
          via: ` + via + `
`
	path := filepath.Join(e.dir, "deliver.yaml")
	if err := os.WriteFile(path, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

var qmgrFromRe = regexp.MustCompile(`qmgr\[\d+\]: ([0-9A-F]+): from=<([^>]*)>`)

// checkReplies checks, with Postfix idle, that exactly the senders in
// want got a reply each: in their maildirs, in Postfix's log (a message
// from <> delivered to them) and not queued by mfilter send.
func checkReplies(t *testing.T, e *sendEnv, after string, want []string) {
	t.Helper()
	for _, u := range replyUsers {
		wantN := 0
		if slices.Contains(want, u+"@example.test") {
			wantN = 1
		}
		if n := len(e.mta.Messages(u)); n != wantN {
			t.Fatalf("after %q: %s@example.test has %d messages, want %d; postfix log:\n%s", after, u, n, wantN, e.mta.Log())
		}
	}
	var got []string
	for _, line := range e.mta.LogLines("qmgr[", ": from=<") {
		m := qmgrFromRe.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("qmgr line %q", line)
		}
		if m[2] != "" {
			t.Errorf("after %q: postfix took a message from <%s>, want only replies from <>: %s", after, m[2], line)
			continue
		}
		for _, d := range e.mta.LogLines(m[1]+": to=<", " status=sent") {
			got = append(got, d[strings.Index(d, "to=<")+4:strings.Index(d, ">,")])
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("after %q: postfix delivered replies (from <>) to %q, want %q; log:\n%s", after, got, want, e.mta.Log())
	}
	if q := e.queued(); len(q) > 0 {
		t.Fatalf("after %q: mfilter send queued %q instead of sending", after, q)
	}
}

// checkReplyMessage checks a reply as delivered: empty envelope sender,
// threaded to the original, marked auto-replied.
func checkReplyMessage(t *testing.T, msg, trace, to, inReplyTo, refs, subject string) {
	t.Helper()
	if !strings.Contains(trace, "Return-Path: <>\n") {
		t.Errorf("reply to %s: the envelope sender is not empty: %q", to, trace)
	}
	header, body, _ := strings.Cut(msg, "\n\n")
	for _, f := range []string{
		"From: tester@example.test", "To: " + to, "Subject: Away: " + subject,
		"In-Reply-To: " + inReplyTo, "References: " + refs, "Auto-Submitted: auto-replied",
	} {
		if !slices.Contains(strings.Split(header, "\n"), f) {
			t.Errorf("reply to %s has no %q:\n%s", to, f, header)
		}
	}
	if !strings.Contains(header, "\nMessage-ID: <") || !strings.Contains(header, "\nDate: ") {
		t.Errorf("reply to %s has no Message-ID or Date:\n%s", to, header)
	}
	if body != "I am away until Monday.\n" {
		t.Errorf("reply to %s: body %q", to, body)
	}
}

// maildirFiles lists the messages of a maildir.
func maildirFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, sub := range []string{"new", "cur"} {
		m, err := filepath.Glob(filepath.Join(dir, sub, "*"))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m...)
	}
	return out
}
