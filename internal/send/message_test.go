package send

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestReadMessage(t *testing.T) {
	long := strings.Repeat("x", 200<<10)
	for _, c := range []struct {
		name, in   string
		ignoreDots bool
		want       string
	}{
		{"lone dot ends", "a\n.\nb\n", false, "a\n"},
		{"lone dot CRLF ends", "a\r\n.\r\nb\r\n", false, "a\r\n"},
		{"lone dot at EOF", "a\n.", false, "a\n"},
		{"-i keeps lone dots", "a\n.\nb\n", true, "a\n.\nb\n"},
		{"dotted lines stay", "a\n..\n.x\n", false, "a\n..\n.x\n"},
		{"From_ line dropped", "From me@x Mon Jan  1 00:00:00 2024\nSubject: s\n\nb\n", false, "Subject: s\n\nb\n"},
		{"From_ line dropped with -i", "From me@x Mon Jan  1 00:00:00 2024\nSubject: s\n", true, "Subject: s\n"},
		{"no newline at the end", "Subject: s\n\nb", false, "Subject: s\n\nb"},
		{"a line longer than the buffer", "a\n" + long + "\n.\nz\n", false, "a\n" + long + "\n"},
		{"a long line ending in a dot is no lone dot", "a\n" + long + ".\nz\n", false, "a\n" + long + ".\nz\n"},
		{"empty", "", false, ""},
	} {
		got, err := ReadMessage(strings.NewReader(c.in), c.ignoreDots)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if string(got) != c.want {
			t.Errorf("%s: got %.80q, want %.80q", c.name, got, c.want)
		}
	}
}

func TestHeaderRecipients(t *testing.T) {
	for _, c := range []struct {
		name, msg string
		want      []string
	}{
		{"to cc bcc", "From: a@x\nTo: B <b@x>, c@x\nCc: d@x\nBcc: e@x\nSubject: to: f@x\n\nTo: g@x\n", []string{"b@x", "c@x", "d@x", "e@x"}},
		{"folded", "To: b@x,\n\tc@x\nCC: \"Doe, J\" <d@x>\n\n", []string{"b@x", "c@x", "d@x"}},
		{"groups", "To: undisclosed-recipients:;\nCc: team: b@x, c@x;\n\n", []string{"b@x", "c@x"}},
		{"resent", "To: old@x\nResent-To: new@x\nResent-Bcc: hidden@x\n\n", []string{"new@x", "hidden@x"}},
		{"cron's bare name", "To: root\n\n", []string{"root"}},
		{"encoded name", "To: =?iso-8859-1?q?J=F6rg?= <j@x>\n\n", []string{"j@x"}},
		{"crlf", "To: b@x\r\nCc: c@x\r\n\r\nbody\r\n", []string{"b@x", "c@x"}},
		{"utf-8 address", "To: Jörg <jörg@exämple.test>\n\n", []string{"jörg@exämple.test"}},
	} {
		got := HeaderRecipients([]byte(c.msg))
		if strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
	if got := ParseRecipients([]string{"a@x", "B <b@x>, c@x", "root"}); strings.Join(got, " ") != "a@x b@x c@x root" {
		t.Errorf("ParseRecipients: %q", got)
	}
	if got := Dedupe(Qualify([]string{"a@x", "A@X", "root", "root@host"}, "host")); strings.Join(got, " ") != "a@x root@host" {
		t.Errorf("Dedupe(Qualify): %q", got)
	}
	if got := FromAddress([]byte("Sender: s@x\nFrom: \"Me\" <me@x>, other@x\n\n")); got != "me@x" {
		t.Errorf("FromAddress: %q", got)
	}
}

func TestPrepare(t *testing.T) {
	now := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	p := Prepare{Sender: "me@host", Fallback: "me@host", Host: "host", Now: now}
	// Complete messages keep every byte but Bcc.
	in := "From: a@x\nTo: b@x\nBcc: c@x,\n  d@x\nDate: x\nMessage-ID: <x@y>\nResent-Bcc: e@x\nSubject: s\n\nBcc: body@x\n"
	want := "From: a@x\nTo: b@x\nDate: x\nMessage-ID: <x@y>\nSubject: s\n\nBcc: body@x\n"
	if got := string(p.Apply([]byte(in))); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	// Missing fields are added at the end of the header, with its line
	// ending.
	got := string(p.Apply([]byte("Subject: s\r\nTo: b@x\r\n\r\nbody\r\n")))
	re := regexp.MustCompile(`^Subject: s\r\nTo: b@x\r\nFrom: me@host\r\nDate: Tue, 02 Jan 2024 03:04:05 \+0000\r\nMessage-ID: <20240102030405\.[0-9a-f]{16}@host>\r\n\r\nbody\r\n$`)
	if !re.MatchString(got) {
		t.Errorf("CRLF message: %q", got)
	}
	// -F names the sender in an added From:; <> falls back to user@host.
	for _, c := range []struct {
		p    Prepare
		want string
	}{
		{Prepare{Sender: "me@host", FullName: "Cron Daemon"}, "From: Cron Daemon <me@host>\n"},
		{Prepare{Sender: "me@host", FullName: "Jörg Ünal"}, "From: =?utf-8?q?J=C3=B6rg_=C3=9Cnal?= <me@host>\n"},
		{Prepare{Sender: "me@host", FullName: "Doe, John"}, "From: \"Doe, John\" <me@host>\n"},
		{Prepare{Sender: "", Fallback: "me@host"}, "From: me@host\n"},
	} {
		got := string(c.p.Apply([]byte("Subject: s\n\nb\n")))
		if !strings.Contains(got, "\n"+c.want) {
			t.Errorf("%+v: %q", c.p, got)
		}
	}
	// No body, no blank line: the header is ended.
	got = string(p.Apply([]byte("Subject: s")))
	if !strings.HasPrefix(got, "Subject: s\nFrom: me@host\nDate: ") || !strings.HasSuffix(got, ">\n\n") {
		t.Errorf("header only: %q", got)
	}
	// An empty message gets a header.
	if got := p.Apply(nil); !bytes.HasPrefix(got, []byte("From: me@host\n")) || !bytes.HasSuffix(got, []byte("\n\n")) {
		t.Errorf("empty: %q", got)
	}
}
