package mailfmt

import (
	"bytes"
	"errors"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// formailSender is the address the real formail picks for msg: from the
// From_ line it generates, or, when msg has a From_ line (formail then
// generates none), from the To: of formail -r, which weighs the fields
// the same way.
func formailSender(t *testing.T, msg string) string {
	t.Helper()
	formail, err := exec.LookPath("formail")
	if err != nil {
		t.Fatalf("formail is required (test.sh installs it): %v", err)
	}
	reply := strings.HasPrefix(msg, "From ")
	var args []string
	if reply {
		args = []string{"-r"}
	}
	cmd := exec.Command(formail, args...)
	cmd.Stdin = strings.NewReader(msg)
	out, err := cmd.Output()
	var ee *exec.ExitError
	if err != nil && !(reply && errors.As(err, &ee) && ee.ExitCode() == 67) { // 67: no sender
		t.Fatalf("formail: %v", err)
	}
	line := string(out)
	if reply {
		line = string(firstLineOf(out))
		if !strings.HasPrefix(line, "To: ") {
			t.Fatalf("formail -r printed %q", out)
		}
		return strings.TrimSuffix(strings.TrimPrefix(line, "To: "), "\n")
	}
	// "From " + address + two blanks + a ctime date + "\n"; the address
	// may hold blanks, and even line breaks.
	m := generatedDate.FindStringIndex(line)
	if !strings.HasPrefix(line, "From ") || m == nil {
		t.Fatalf("formail's From_ line %q", line)
	}
	return line[len("From "):m[0]]
}

var generatedDate = regexp.MustCompile(`  [A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9][0-9] [0-9:]{8} [0-9]{4}\n`)

func firstLineOf(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i+1]
	}
	return b
}

// TestEnvelopeSenderMatchesFormail: EnvelopeSender is a port of formail's
// getsender and skipwords; the real formail decides every case.
func TestEnvelopeSenderMatchesFormail(t *testing.T) {
	for _, c := range []struct{ name, msg string }{
		{"From", "From: alice@example.com\n\nb\n"},
		{"display name", "From: Alice Example <alice@example.com>\n\nb\n"},
		{"quoted display name", "From: \"Example, Alice\" <alice@example.com>\n\nb\n"},
		{"comment after", "From: alice@example.com (Alice)\n\nb\n"},
		{"comment before", "From: (Alice) alice@example.com\n\nb\n"},
		{"nested comment", "From: alice@example.com (Alice (the first))\n\nb\n"},
		{"spaces in address", "From: alice @ example . com\n\nb\n"},
		{"quoted local part", "From: \"a b\"@example.com\n\nb\n"},
		{"backslash", "From: a\\ b@example.com\n\nb\n"},
		{"domain literal", "From: alice@[192.0.2.1]\n\nb\n"},
		{"group", "From: friends: a@example.com, b@example.com;\n\nb\n"},
		{"empty group", "From: undisclosed-recipients:;\n\nb\n"},
		{"two addresses", "From: a@example.com, b@example.com\n\nb\n"},
		{"embedded comma in <>", "From: <a@example.com,b@example.com>\n\nb\n"},
		{"unclosed <", "From: <a@example.com\n\nb\n"},
		{"nested <", "From: <<a@example.com>>\n\nb\n"},
		{"continuation", "From: Alice\n  <alice@example.com>\n\nb\n"},
		{"empty From", "From:\nSubject: x\n\nb\n"},
		{"blank From", "From:   \n\nb\n"},
		{"blanks before colon", "From : alice@example.com\n\nb\n"},
		{"case-insensitive name", "FROM: alice@example.com\n\nb\n"},
		{"Sender beats From", "From: f@example.com\nSender: s@example.com\n\nb\n"},
		{"From beats Reply-To", "Reply-To: r@example.com\nFrom: f@example.com\n\nb\n"},
		{"Resent-From beats Sender", "Sender: s@example.com\nResent-From: rf@example.com\n\nb\n"},
		{"Resent-Sender beats Resent-From", "Resent-From: rf@example.com\nResent-Sender: rs@example.com\n\nb\n"},
		{"Path beats Resent-Sender", "Resent-Sender: rs@example.com\nPath: news.example.com!user\n\nb\n"},
		{"Return-Receipt-To", "Path: a!b\nReturn-Receipt-To: rr@example.com\n\nb\n"},
		{"Errors-To", "Return-Receipt-To: rr@example.com\nErrors-To: e@example.com\n\nb\n"},
		{"Return-Path beats all", "From: f@example.com\nErrors-To: e@example.com\nReturn-Path: <rp@example.com>\n\nb\n"},
		{"empty Return-Path", "Return-Path: <>\nFrom: f@example.com\n\nb\n"},
		{"Return-Path without <>", "Return-Path: rp@example.com\n\nb\n"},
		{"bare user loses to From", "Return-Path: <user>\nFrom: f@example.com\n\nb\n"},
		{"dotless domain loses", "Return-Path: <user@host>\nFrom: f@example.com\n\nb\n"},
		{"dotless domain beats bare user", "Return-Path: <user>\nFrom: f@host\n\nb\n"},
		{".UUCP loses", "Return-Path: <user@host.UUCP>\nFrom: f@example.com\n\nb\n"},
		{"bang path loses", "Return-Path: <a!b!c@example.com>\nFrom: f@example.com\n\nb\n"},
		{"bang path beats dotless", "Return-Path: <a!b!c>\nFrom: f@host\n\nb\n"},
		{"first of equals wins", "From: one@example.com\nFrom: two@example.com\n\nb\n"},
		{"later better one wins", "Reply-To: user\nFrom: f@example.com\nReply-To: r@example.com\n\nb\n"},
		{"no sender", "Subject: x\n\nb\n"},
		{"no header", "just text\n"},
		{"8-bit", "From: J\xc3\xbcrgen <j@example.de>\n\nb\n"},
		{"tab", "From:\talice@example.com\n\nb\n"},
		{"From_ line", "From alice@example.com Mon Jan  1 00:00:00 2024\nFrom: f@example.com\n\nb\n"},
		{"From_ line beats Return-Path", "From alice@example.com Mon Jan  1 00:00:00 2024\nReturn-Path: <rp@example.com>\n\nb\n"},
		{"From_ line, UUCP remote from", "From user Mon Jan  1 00:00:00 2024 remote from hosta\nFrom: f@example.com\n\nb\n"},
		{"From_ lines, forwarded by", "From user Mon Jan  1 00:00:00 2024 remote from hosta\n>From user Mon Jan  1 00:00:00 2024 forwarded by hostb\nX: 1\n\nb\n"},
		{"From_ line, two >From lines", "From a@example.com Mon Jan  1 00:00:00 2024\n>From b@example.com Mon Jan  1 00:00:00 2024\nReturn-Path: <rp@example.com>\n\nb\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := formailSender(t, c.msg)
			in := []byte(c.msg)
			if got := EnvelopeSender(in); got != want {
				t.Errorf("EnvelopeSender(%q) = %q, formail picks %q", c.msg, got, want)
			}
			if string(in) != c.msg {
				t.Errorf("EnvelopeSender changed its input to %q", in)
			}
		})
	}
}

// TestEnvelopeSenderCRLF is the one deliberate difference: formail keeps
// the CR of a CRLF line end in the address.
func TestEnvelopeSenderCRLF(t *testing.T) {
	msg := "From: alice@example.com\r\nSubject: s\r\n\r\nb\r\n"
	if f := formailSender(t, msg); f != "alice@example.com\r" {
		t.Fatalf("formail now picks %q: the deviation is gone", f)
	}
	if got := EnvelopeSender([]byte(msg)); got != "alice@example.com" {
		t.Errorf("EnvelopeSender = %q, want the address without the CR", got)
	}
}

// TestEnvelopeSenderUnfolds is a deliberate difference: formail copies a
// folded quoted string into the From_ line with its line break.
func TestEnvelopeSenderUnfolds(t *testing.T) {
	msg := "From: \"Alice\n Example\"@example.com\n\nb\n"
	if f := formailSender(t, msg); f != "\"Alice\n Example\"@example.com" {
		t.Fatalf("formail now picks %q: the deviation is gone", f)
	}
	if got := EnvelopeSender([]byte(msg)); got != "\"Alice Example\"@example.com" {
		t.Errorf("EnvelopeSender = %q, want it unfolded", got)
	}
}

// TestGeneratedFromLine: "From " + sender + two spaces + ctime, as
// formail writes it.
func TestGeneratedFromLine(t *testing.T) {
	got := string(GeneratedFromLine([]byte("From: a@example.com\n\nb\n"), splitNow))
	if want := "From a@example.com  Tue Jan  2 03:04:05 2024\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// FuzzEnvelopeSenderVsFormail compares EnvelopeSender with the real
// formail on any header (without the documented CR deviation, without
// NULs, which C strings cannot hold, and without a From_ line, for which
// formail generates nothing). formail's address may hold a line break,
// which EnvelopeSender unfolds (TestEnvelopeSenderUnfolds).
func FuzzEnvelopeSenderVsFormail(f *testing.F) {
	f.Add([]byte("From: a@b.c\n\n"))
	f.Add([]byte("Return-Path: <x@y>\nFrom: \"q\" <a@b.c> (c)\nSender: s\n\n"))
	f.Add([]byte("From: g: a@b.c, d@e.f;\nReply-To: <a,b>\nResent-From: a!b\n\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		if bytes.ContainsAny(msg, "\r\x00") || bytes.HasPrefix(msg, []byte("From ")) || bytes.HasPrefix(msg, []byte("\n")) {
			return
		}
		if got, want := EnvelopeSender(msg), strings.ReplaceAll(formailSender(t, string(msg)), "\n", ""); got != want {
			t.Fatalf("EnvelopeSender(%q) = %q, formail picks %q", msg, got, want)
		}
	})
}
