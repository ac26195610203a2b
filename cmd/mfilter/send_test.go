package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mfilter/mfilter/internal/mtatest"
	"github.com/mfilter/mfilter/internal/send"
	"github.com/mfilter/mfilter/internal/sshtest"
)

// The tests of mfilter send and mfilter tunnel run a real sshd
// (internal/sshtest, on 127.0.0.1) and a real Postfix (internal/mtatest)
// whose only smtpd listens on 127.0.0.2, on a port mfilter is told about
// only as the relay "as the server sees it": mfilter reaches it through
// the SSH channel alone. TestSendOnlyThroughChannel proves it: with
// forwarding off in sshd, nothing reaches Postfix.

// sendEnv is one test's world: sshd, Postfix, a rules file whose fetch:
// section holds the SSH login and whose send: section names the relay,
// and a queue directory.
type sendEnv struct {
	t     *testing.T
	srv   *sshtest.Server
	mta   *mtatest.Postfix
	dir   string
	rules string
	queue string
	env   []string
}

var sendUsers = []string{"to", "cc", "bcc", "alice", "tempfail", "cron", "other"}

func newSendEnv(t *testing.T, opts mtatest.Options, extraSend string) *sendEnv {
	t.Helper()
	if opts.Users == nil {
		opts.Users = sendUsers
	}
	srv := sshtest.Start(t, sshtest.Options{})
	mta := mtatest.Start(t, opts)
	dir := t.TempDir()
	e := &sendEnv{t: t, srv: srv, mta: mta, dir: dir, rules: filepath.Join(dir, "rules.yaml"), queue: filepath.Join(dir, "outbox"),
		env: []string{"HOME=" + dir, "SSH_AUTH_SOCK=", "USER=tester", "LOGNAME=tester", "XDG_CONFIG_HOME=" + filepath.Join(dir, "config")}}
	e.writeRules(extraSend)
	return e
}

func (e *sendEnv) writeRules(extraSend string) {
	rules := fmt.Sprintf(`default: inbox/
fetch:
  host: 127.0.0.1
  port: %d
  user: %s
  identity: %s
  known-hosts: %s
  timeout: 10s
send:
  relay: %s
  queue-dir: %s
  helo: client.test
%s`, e.srv.Port, e.srv.User, e.srv.ClientKey, e.srv.KnownHosts, e.mta.Addr, e.queue, extraSend)
	if err := os.WriteFile(e.rules, []byte(rules), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// send runs mfilter send with the message on stdin.
func (e *sendEnv) send(msg []byte, args ...string) (int, string) {
	e.t.Helper()
	cmd := exec.Command(mfilterBin, append([]string{"send", "--rules", e.rules}, args...)...)
	cmd.Env = append(os.Environ(), e.env...)
	cmd.Stdin = bytes.NewReader(msg)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return 0, string(out)
}

func (e *sendEnv) queued() []string {
	m, _ := filepath.Glob(filepath.Join(e.queue, "*.msg"))
	return m
}

// delivered waits for n messages to user and returns them without
// Postfix's trace fields, with the trace fields.
func (e *sendEnv) delivered(user string, n int) (msgs, traces []string) {
	e.t.Helper()
	for _, m := range e.mta.WaitMessages(e.t, user, n) {
		tr, rest := mtatest.StripTrace(m)
		msgs = append(msgs, string(rest))
		traces = append(traces, string(tr))
	}
	if len(msgs) != n {
		e.t.Fatalf("%s has %d messages, want %d", user, len(msgs), n)
	}
	return msgs, traces
}

// inSubmissionOrder sorts delivered messages into the order Postfix
// received them, which its cleanup logs with each one's Message-ID:
// delivery can swap two messages that arrive close together.
func (e *sendEnv) inSubmissionOrder(msgs []string) []string {
	e.t.Helper()
	log := e.mta.Log()
	at := make(map[string]int, len(msgs))
	for _, m := range msgs {
		id := messageIDRE.FindStringSubmatch(m)
		if id == nil {
			e.t.Fatalf("a delivered message without a Message-ID: %q", m)
		}
		i := strings.Index(log, "message-id="+id[1])
		if i < 0 {
			e.t.Fatalf("Postfix's log does not show %s", id[1])
		}
		at[m] = i
	}
	out := slices.Clone(msgs)
	slices.SortStableFunc(out, func(a, b string) int { return at[a] - at[b] })
	return out
}

var messageIDRE = regexp.MustCompile(`(?mi)^Message-ID:[ \t]*(<[^>\r\n]+>)`)

// exactMessage is a message that is hard to carry: raw UTF-8 in the
// header and the body, body lines that start with dots (a lone dot among
// them), a From line, a Bcc field, and a 10 MB attachment.
func exactMessage(t *testing.T, id string) (msg, withoutBcc []byte) {
	raw := make([]byte, 10<<20)
	rng := mrand.NewChaCha8([32]byte{1, 2, 3})
	rng.Read(raw)
	enc := base64.StdEncoding.EncodeToString(raw)
	var att strings.Builder
	for i := 0; i < len(enc); i += 76 {
		att.WriteString(enc[i:min(i+76, len(enc))])
		att.WriteByte('\n')
	}
	head := `From: Alice Émile <alice@example.test>
To: To Person <to@example.test>
Cc: cc@example.test
Subject: Grüße — 日本語 and dots
Date: Mon, 01 Jan 2024 10:00:00 +0100
Message-ID: <` + id + `@client.test>
X-Test-ID: ` + id + `
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"
`
	bcc := "Bcc: Hidden <bcc@example.test>\n"
	body := `
--b1
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Grüße aus Köln, naïve café, 日本語のテキスト.
.a line that starts with a dot
..two dots
.
the line above is a lone dot
From the start of a line
 a line with trailing blanks   
--b1
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="big.bin"

` + att.String() + `--b1--
.
`
	return []byte(head + bcc + body), []byte(head + body)
}

func TestSendExactMessage(t *testing.T) {
	// Postfix removes Bcc fields itself, after its header_checks: this
	// one makes a Bcc field that reaches it refuse the message.
	e := newSendEnv(t, mtatest.Options{HeaderChecks: []string{"/^(Resent-)?Bcc:/ REJECT 5.7.1 a Bcc field reached the relay"}}, "")
	msg, want := exactMessage(t, "exact-1")
	start := time.Now()
	code, out := e.send(msg, "-t", "-oi", "-v")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	t.Logf("sent %d MB in %s", len(msg)>>20, time.Since(start).Round(time.Millisecond))
	for _, u := range []string{"to", "cc", "bcc"} {
		got, trace := e.delivered(u, 1)
		if got[0] != string(want) {
			t.Errorf("%s got a different message: %s", u, firstDiff(want, []byte(got[0])))
		}
		if strings.Contains(got[0], "Hidden") || strings.Contains(strings.ToLower(got[0]), "\nbcc:") {
			t.Errorf("%s: the Bcc field was not removed", u)
		}
		if !strings.Contains(trace[0], "Return-Path: <alice@example.test>") {
			t.Errorf("%s: the envelope sender is not the From: address:\n%s", u, trace[0])
		}
		// Raw UTF-8 in the header: SMTPUTF8 was used.
		if !strings.Contains(trace[0], "with UTF8SMTP") {
			t.Errorf("%s: not sent with SMTPUTF8:\n%s", u, trace[0])
		}
		if !strings.Contains(trace[0], "(client.test") && !strings.Contains(trace[0], "from client.test") {
			t.Errorf("%s: the EHLO name is not send: helo:\n%s", u, trace[0])
		}
	}
	if q := e.queued(); len(q) != 0 {
		t.Errorf("a sent message was queued: %v", q)
	}
}

// TestSendLoneDotEndsMessage: without -i, a line with a lone dot ends the
// message (sendmail's rule); -f sets the envelope sender; recipients come
// from the command line.
func TestSendLoneDotEndsMessage(t *testing.T) {
	e := newSendEnv(t, mtatest.Options{}, "")
	msg := "From: alice@example.test\nTo: someone@elsewhere.test\nSubject: dots\nDate: Mon, 01 Jan 2024 10:00:00 +0100\nMessage-ID: <dots@client.test>\n\nbefore\n..kept as two dots\n.\nafter the dot: never sent\n"
	code, out := e.send([]byte(msg), "-f", "bounces@example.test", "--", "alice@example.test")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	got, trace := e.delivered("alice", 1)
	want := "From: alice@example.test\nTo: someone@elsewhere.test\nSubject: dots\nDate: Mon, 01 Jan 2024 10:00:00 +0100\nMessage-ID: <dots@client.test>\n\nbefore\n..kept as two dots\n"
	if got[0] != want {
		t.Errorf("got %q, want %q", got[0], want)
	}
	if !strings.Contains(trace[0], "Return-Path: <bounces@example.test>") {
		t.Errorf("-f did not set the envelope sender:\n%s", trace[0])
	}
	// The To: field was not a recipient (no -t): someone@elsewhere.test
	// would have been refused as relaying.
	if strings.Contains(e.mta.Log(), "someone@elsewhere.test") {
		t.Errorf("without -t, To: must not be read for recipients")
	}
}

// TestSendCronStyle: cron's invocation (-FCronDaemon -i -B8BITMIME -oem
// -oi -t) with a message that has no From:, Date: or Message-ID:, as
// cron writes it; mfilter adds them, and says which options it ignored.
func TestSendCronStyle(t *testing.T) {
	e := newSendEnv(t, mtatest.Options{}, "")
	msg := "To: cron@example.test\nSubject: Cron <tester@client> /usr/local/bin/backup\nContent-Type: text/plain; charset=UTF-8\n\nbackup done\n"
	code, out := e.send([]byte(msg), "-FCronDaemon", "-i", "-B8BITMIME", "-oem", "-oi", "-t", "-v")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	if !strings.Contains(out, "ignoring sendmail options -B8BITMIME -oem") {
		t.Errorf("-v must say which options were ignored: %s", out)
	}
	got, trace := e.delivered("cron", 1)
	if !strings.HasPrefix(got[0], msg[:strings.Index(msg, "\n\n")+1]) {
		t.Errorf("the original fields must come first, unchanged:\n%s", got[0])
	}
	for _, re := range []string{`(?m)^From: CronDaemon <tester@client\.test>$`, `(?m)^Date: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [-+]\d{4}$`, `(?m)^Message-ID: <\d{14}\.[0-9a-f]{16}@client\.test>$`} {
		if !regexp.MustCompile(re).MatchString(got[0]) {
			t.Errorf("no field matching %s:\n%s", re, got[0])
		}
	}
	if !strings.HasSuffix(got[0], "\n\nbackup done\n") {
		t.Errorf("body: %q", got[0])
	}
	if !strings.Contains(trace[0], "Return-Path: <tester@client.test>") {
		t.Errorf("the envelope sender must be user@host without -f and From::\n%s", trace[0])
	}
}

// TestSendTempFailQueueFlush: a 450 for the recipient exits 75; with
// --queue the message is kept (exit 75), with --queue=accept too (exit 0),
// --list shows them, and --flush delivers them once the server takes
// them, each exactly once.
func TestSendTempFailQueueFlush(t *testing.T) {
	e := newSendEnv(t, mtatest.Options{Access: map[string]string{"tempfail@example.test": "450 4.2.0 try later"}}, "")
	msg := []byte("From: alice@example.test\nTo: tempfail@example.test\nSubject: wait\nX-Test-ID: temp-1\n\nbody\n")
	// Without a queue: 75 and nothing kept.
	code, out := e.send(msg, "-oi", "tempfail@example.test")
	if code != 75 || !strings.Contains(out, "450 4.2.0") {
		t.Fatalf("a 450: exit %d (want 75), and the reply on stderr: %s", code, out)
	}
	if q := e.queued(); len(q) != 0 {
		t.Fatalf("queued without --queue: %v", q)
	}
	code, out = e.send(msg, "-oi", "--queue", "tempfail@example.test")
	if code != 75 || !strings.Contains(out, "queued as") {
		t.Fatalf("a 450 with --queue: exit %d (want 75): %s", code, out)
	}
	if q := e.queued(); len(q) != 1 {
		t.Fatalf("want 1 queued message, have %v", q)
	}
	second := bytes.Replace(msg, []byte("temp-1"), []byte("temp-2"), 1)
	code, out = e.send(second, "-oi", "--queue=accept", "tempfail@example.test")
	if code != 0 || !strings.Contains(out, "queued as") {
		t.Fatalf("a 450 with --queue=accept: exit %d (want 0): %s", code, out)
	}
	code, out = e.send(nil, "-bp")
	if code != 0 || strings.Count(out, "<alice@example.test> -> tempfail@example.test") != 2 || !strings.Contains(out, "2 message(s) queued in "+e.queue) {
		t.Fatalf("-bp: exit %d: %s", code, out)
	}
	// The server still says 450: the flush keeps them.
	if code, out := e.send(nil, "--flush"); code != 75 || len(e.queued()) != 2 || !strings.Contains(out, "450 4.2.0") {
		t.Fatalf("a flush meeting 450: exit %d (want 75), queue %v: %s", code, e.queued(), out)
	}
	e.mta.SetAccess(nil)
	if code, out := e.send(nil, "--flush", "-v"); code != 0 || strings.Count(out, ": sent to 1 recipient(s)") != 2 {
		t.Fatalf("flush: exit %d: %s", code, out)
	}
	if q := e.queued(); len(q) != 0 {
		t.Fatalf("still queued after a flush: %v", q)
	}
	if code, out := e.send(nil, "--flush"); code != 0 {
		t.Fatalf("flush of an empty queue: exit %d: %s", code, out)
	}
	got, _ := e.delivered("tempfail", 2)
	got = e.inSubmissionOrder(got)
	for i, m := range [][]byte{msg, second} {
		if !strings.HasPrefix(got[i], string(m[:bytes.Index(m, []byte("\n\n"))])) {
			t.Errorf("sent %d: %q", i, got[i])
		}
	}
	e.mta.WaitIdle(t)
	if n := len(e.mta.Messages("tempfail")); n != 2 {
		t.Fatalf("delivered %d messages, want 2, once each", n)
	}
}

// TestSendSectionNamesHost: the send: section names its own host, an ssh
// config alias resolved as fetch-and-file resolves it, while fetch:
// names a server that does not answer.
func TestSendSectionNamesHost(t *testing.T) {
	e := newSendEnv(t, mtatest.Options{}, "")
	cfg := filepath.Join(e.dir, "ssh_config")
	os.WriteFile(cfg, []byte(fmt.Sprintf("Host outgoing\n  HostName 127.0.0.1\n  Port %d\n  User %s\n  IdentityFile %s\n  UserKnownHostsFile %s\n",
		e.srv.Port, e.srv.User, e.srv.ClientKey, e.srv.KnownHosts)), 0o600)
	rules := fmt.Sprintf(`fetch:
  host: 127.0.0.1
  port: %d
  timeout: 2s
send:
  host: outgoing
  relay: %s
  queue-dir: %s
`, freeLocalPort(t), e.mta.Addr, e.queue)
	os.WriteFile(e.rules, []byte(rules), 0o600)
	e.env = append(e.env, "MFILTER_SSH_CONFIG="+cfg)
	msg := []byte("From: alice@example.test\nTo: to@example.test\nSubject: other host\n\nbody\n")
	if code, out := e.send(msg, "-oi", "-t", "-v"); code != 0 || !strings.Contains(out, fmt.Sprintf("connecting to 127.0.0.1:%d as %s", e.srv.Port, e.srv.User)) {
		t.Fatalf("exit %d: %s", code, out)
	}
	e.delivered("to", 1)
}

// TestSendPassword: the AUTH password comes from a file only its owner
// can read, or from a command's first line; the relay's AUTH itself is
// tested in internal/send.
func TestSendPassword(t *testing.T) {
	dir := t.TempDir()
	env := &environ{getenv: func(k string) string {
		if k == "HOME" {
			return dir
		}
		return ""
	}, stderr: io.Discard}
	pwFile := filepath.Join(dir, "pw")
	os.WriteFile(pwFile, []byte("s3cret\nsecond line\n"), 0o600)
	for _, c := range []struct {
		set  send.Settings
		want string
		code int
	}{
		{set: send.Settings{AuthUser: "alice", PasswordFile: "~/pw"}, want: "s3cret"},
		{set: send.Settings{AuthUser: "alice", PasswordCommand: []string{"printf", "from command\\nx\\n"}}, want: "from command"},
		{set: send.Settings{AuthUser: "alice", Password: "inline"}, want: "inline"},
		{set: send.Settings{AuthUser: "alice", PasswordCommand: []string{"false"}}, code: 75},
		{set: send.Settings{AuthUser: "alice", PasswordCommand: []string{"/nonexistent/pass"}}, code: 78},
		{set: send.Settings{AuthUser: "alice", PasswordFile: filepath.Join(dir, "missing")}, code: 78},
		{set: send.Settings{AuthUser: "alice", PasswordCommand: []string{"true"}}, code: 78},
	} {
		cfg := &sendConfig{set: c.set}
		var r send.Relay
		err := cfg.password(context.Background(), env, &r)
		if c.code != 0 {
			if send.ExitCode(err) != c.code {
				t.Errorf("%+v: %v (exit %d), want exit %d", c.set, err, send.ExitCode(err), c.code)
			}
			continue
		}
		if err != nil || r.Auth == nil || r.Auth.Password != c.want || r.Auth.User != "alice" {
			t.Errorf("%+v: %v %+v", c.set, err, r.Auth)
		}
	}
	// A password file others can read is refused (77).
	os.Chmod(pwFile, 0o644)
	cfg := &sendConfig{set: send.Settings{AuthUser: "alice", PasswordFile: pwFile}}
	var r send.Relay
	if err := cfg.password(context.Background(), env, &r); send.ExitCode(err) != 77 || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a readable password file: %v", err)
	}
}

// TestSendDroppedLink: the SSH link drops in the middle of DATA: exit 75,
// the message is queued, Postfix has nothing, and a flush delivers it
// once, whole. Then with sshd down altogether, a message is queued, and
// the next send delivers it too, before its own.
func TestSendDroppedLink(t *testing.T) {
	e := newSendEnv(t, mtatest.Options{}, "  queue: true\n")
	cut := newUploadCutter(t, e.srv)
	big := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789\n"), 40000)
	msg := append([]byte("From: alice@example.test\nTo: to@example.test\nSubject: cut\nDate: Mon, 01 Jan 2024 10:00:00 +0100\nMessage-ID: <cut@client.test>\nX-Test-ID: cut-1\n\n"), big...)
	cut.limit.Store(1 << 20) // well into DATA: the message is 3 MB
	code, out := e.send(msg, "-oi", "-t", "--port", fmt.Sprint(cut.port()))
	if code != 75 || !strings.Contains(out, "queued as") {
		t.Fatalf("a link cut in DATA: exit %d (want 75, queued): %s", code, out)
	}
	if q := e.queued(); len(q) != 1 {
		t.Fatalf("want 1 queued message, have %v", q)
	}
	e.mta.WaitIdle(t)
	if n := len(e.mta.Messages("to")); n != 0 {
		t.Fatalf("Postfix delivered %d message(s) from a cut DATA", n)
	}
	if code, out := e.send(nil, "--flush"); code != 0 {
		t.Fatalf("flush: exit %d: %s", code, out)
	}
	got, _ := e.delivered("to", 1)
	if got[0] != string(msg) {
		t.Errorf("the flushed message differs (%d bytes, want %d)", len(got[0]), len(msg))
	}
	if q := e.queued(); len(q) != 0 {
		t.Fatalf("still queued: %v", q)
	}

	// No link at all.
	e.srv.Stop()
	second := []byte("From: alice@example.test\nTo: cc@example.test\nSubject: no link\nX-Test-ID: nolink-1\n\nqueued while sshd was down\n")
	code, out = e.send(second, "-oi", "-t")
	if code != 75 || !strings.Contains(out, "queued as") {
		t.Fatalf("no link: exit %d (want 75, queued): %s", code, out)
	}
	e.srv.Restart(t)
	third := []byte("From: alice@example.test\nTo: cc@example.test\nSubject: next\nX-Test-ID: next-1\n\nthe next send\n")
	if code, out := e.send(third, "-oi", "-t"); code != 0 {
		t.Fatalf("the next send: exit %d: %s", code, out)
	}
	got, _ = e.delivered("cc", 2)
	got = e.inSubmissionOrder(got)
	if !strings.Contains(got[0], "X-Test-ID: nolink-1") || !strings.Contains(got[1], "X-Test-ID: next-1") {
		t.Errorf("the queued message must go first, then the new one:\n%s\n---\n%s", got[0], got[1])
	}
	if q := e.queued(); len(q) != 0 {
		t.Fatalf("still queued: %v", q)
	}
	e.mta.WaitIdle(t)
	if n := len(e.mta.Messages("to")); n != 1 {
		t.Fatalf("to@ has %d messages, want 1", n)
	}
}

// TestSendPermanentFailure: a 550 for a recipient exits 67 with the reply
// on stderr, sends nothing to the other recipients, and queues nothing
// even with --queue; a message refused after DATA exits 69.
func TestSendPermanentFailure(t *testing.T) {
	e := newSendEnv(t, mtatest.Options{HeaderChecks: []string{"/^Subject: refuse me/ REJECT 5.7.1 we do not want it"}}, "  queue: true\n")
	msg := []byte("From: alice@example.test\nTo: to@example.test, nobody@example.test\nSubject: hi\n\nbody\n")
	code, out := e.send(msg, "-oi", "-t")
	if code != 67 || !strings.Contains(out, "550 5.1.1") || !strings.Contains(out, "nobody@example.test") {
		t.Fatalf("an unknown recipient: exit %d (want 67) with the 550 reply: %s", code, out)
	}
	if q := e.queued(); len(q) != 0 {
		t.Fatalf("a refused message was queued: %v", q)
	}
	refused := []byte("From: alice@example.test\nTo: to@example.test\nSubject: refuse me\n\nbody\n")
	code, out = e.send(refused, "-oi", "-t")
	if code != 69 || !strings.Contains(out, "5.7.1") || !strings.Contains(out, "we do not want it") {
		t.Fatalf("a message refused after DATA: exit %d (want 69) with the reply: %s", code, out)
	}
	if q := e.queued(); len(q) != 0 {
		t.Fatalf("a refused message was queued: %v", q)
	}
	e.mta.WaitIdle(t)
	if n := len(e.mta.Messages("to")); n != 0 {
		t.Fatalf("to@ got %d message(s): a refused recipient must stop the whole message", n)
	}
}

// TestSendOnlyThroughChannel: with TCP forwarding off in sshd, mfilter
// send cannot reach Postfix (exit 75, and Postfix sees no connection);
// with it on again, the same command delivers. The relay is reached
// through the SSH channel and nothing else.
func TestSendOnlyThroughChannel(t *testing.T) {
	e := newSendEnv(t, mtatest.Options{}, "")
	e.srv.RestartWith(t, "AllowTcpForwarding no")
	before := e.mta.Connections()
	msg := []byte("From: alice@example.test\nTo: to@example.test\nSubject: channel\n\nbody\n")
	code, out := e.send(msg, "-oi", "-t")
	if code != 75 || !strings.Contains(out, "refuses to forward") {
		t.Fatalf("forwarding off: exit %d (want 75, the server refuses to forward): %s", code, out)
	}
	if n := e.mta.Connections(); n != before {
		t.Fatalf("Postfix saw %d connection(s) while forwarding was off", n-before)
	}
	e.srv.RestartWith(t, "")
	if code, out := e.send(msg, "-oi", "-t"); code != 0 {
		t.Fatalf("forwarding on: exit %d: %s", code, out)
	}
	e.delivered("to", 1)
	if n := e.mta.Connections(); n != before+1 {
		t.Fatalf("Postfix saw %d connections, want 1", n-before)
	}
}

// TestSendQueueLock: three flushes run at once over a queue of 15
// messages: each message is delivered exactly once.
func TestSendQueueLock(t *testing.T) {
	e := newSendEnv(t, mtatest.Options{}, "")
	const n = 15
	for i := 0; i < n; i++ {
		msg := fmt.Sprintf("From: alice@example.test\nTo: to@example.test\nSubject: queued %d\nX-Test-ID: lock-%d\n\nbody %d\n", i, i, i)
		if code, out := e.send([]byte(msg), "-oi", "-t", "-odq"); code != 0 {
			t.Fatalf("-odq: exit %d: %s", code, out)
		}
	}
	if q := e.queued(); len(q) != n {
		t.Fatalf("-odq queued %d, want %d", len(q), n)
	}
	var wg sync.WaitGroup
	codes := make([]int, 3)
	outs := make([]string, 3)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], outs[i] = e.send(nil, "--flush", "-v")
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != 0 {
			t.Errorf("flush %d: exit %d: %s", i, c, outs[i])
		}
	}
	got, _ := e.delivered("to", n)
	ids := map[string]int{}
	for _, m := range got {
		id := regexp.MustCompile(`X-Test-ID: (\S+)`).FindStringSubmatch(m)
		if id == nil {
			t.Fatalf("no X-Test-ID in %q", m)
		}
		ids[id[1]]++
	}
	for i := 0; i < n; i++ {
		if c := ids[fmt.Sprintf("lock-%d", i)]; c != 1 {
			t.Errorf("lock-%d delivered %d times", i, c)
		}
	}
	if q := e.queued(); len(q) != 0 {
		t.Fatalf("still queued: %v", q)
	}
	sent := 0
	for _, o := range outs {
		sent += strings.Count(o, ": sent to ")
	}
	if sent != n {
		t.Errorf("the flushes say they sent %d messages, want %d:\n%s", sent, n, strings.Join(outs, "\n"))
	}
}

// selfSigned writes a certificate for name and its key.
func selfSigned(t *testing.T, dir, name string) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o644)
	return certFile, keyFile
}

// TestSendStartTLS: starttls: required with the relay's certificate
// verified against tls-ca and tls-server-name; a name the certificate
// does not hold is a configuration error (78), and nothing is sent.
func TestSendStartTLS(t *testing.T) {
	certDir, err := os.MkdirTemp("", "mfilter-cert-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(certDir) })
	os.Chmod(certDir, 0o755)
	cert, key := selfSigned(t, certDir, "mta.test")
	e := newSendEnv(t, mtatest.Options{TLSCert: cert, TLSKey: key}, fmt.Sprintf("  starttls: required\n  tls-ca: %s\n  tls-server-name: mta.test\n", cert))
	msg := []byte("From: alice@example.test\nTo: to@example.test\nSubject: tls\n\nover TLS\n")
	if code, out := e.send(msg, "-oi", "-t", "-v"); code != 0 || !strings.Contains(out, "STARTTLS: TLS 1.3") {
		t.Fatalf("exit %d (want 0, and -v naming the TLS version): %s", code, out)
	}
	_, trace := e.delivered("to", 1)
	if !strings.Contains(trace[0], "(using TLS") {
		t.Errorf("Postfix did not receive it over TLS:\n%s", trace[0])
	}
	e.writeRules(fmt.Sprintf("  starttls: required\n  tls-ca: %s\n  tls-server-name: wrong.test\n  queue: true\n", cert))
	code, out := e.send(msg, "-oi", "-t")
	if code != 78 || !strings.Contains(out, "certificate") {
		t.Fatalf("a certificate for another name: exit %d (want 78): %s", code, out)
	}
	if q := e.queued(); len(q) != 0 {
		t.Fatalf("queued on a configuration error: %v", q)
	}
	e.mta.WaitIdle(t)
	if n := len(e.mta.Messages("to")); n != 1 {
		t.Fatalf("to@ has %d messages, want 1", n)
	}
}

// TestSendThroughForwardRule: a rule's forward with sendmail: [mfilter,
// send, -oi] (mfilter deliver running the rules) sends through the SSH
// link: mfilter send is a plain sendmail replacement.
func TestSendThroughForwardRule(t *testing.T) {
	e := newSendEnv(t, mtatest.Options{}, "")
	sendRules, err := os.ReadFile(e.rules)
	if err != nil {
		t.Fatal(err)
	}
	rules := string(sendRules) + fmt.Sprintf(`rules:
  - if: {headers: '^Subject: forward me'}
    then: {forward: other@example.test, sendmail: [%s, send, -oi, --rules, %s]}
`, mfilterBin, e.rules)
	deliverRules := filepath.Join(e.dir, "deliver.yaml")
	os.WriteFile(deliverRules, []byte(rules), 0o600)
	msg := "From: alice@example.test\nTo: tester@client.test\nSubject: forward me\nMessage-ID: <fwd@client.test>\nDate: Mon, 01 Jan 2024 10:00:00 +0100\n\n.dot line\nbody\n"
	cmd := exec.Command(mfilterBin, "deliver", "--rules", deliverRules, "--maildir", filepath.Join(e.dir, "Mail"), "-f", "alice@example.test")
	cmd.Env = append(os.Environ(), e.env...)
	cmd.Stdin = strings.NewReader(msg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mfilter deliver: %v: %s", err, out)
	}
	got, _ := e.delivered("other", 1)
	// A forward ends the message with a blank line, as procmail's does.
	if got[0] != msg+"\n" {
		t.Errorf("forwarded %q, want %q", got[0], msg+"\n")
	}
}

// TestSendForwardViaMfilter: forward: {via: mfilter} sends through mfilter
// send with the rules file's own send: settings.
func TestSendForwardViaMfilter(t *testing.T) {
	e := newSendEnv(t, mtatest.Options{}, "")
	sendRules, err := os.ReadFile(e.rules)
	if err != nil {
		t.Fatal(err)
	}
	rules := string(sendRules) + `rules:
  - if: {headers: '^Subject: forward me'}
    then: {forward: other@example.test, via: mfilter}
`
	deliverRules := filepath.Join(e.dir, "deliver.yaml")
	os.WriteFile(deliverRules, []byte(rules), 0o600)
	msg := "From: alice@example.test\nTo: tester@client.test\nSubject: forward me\nMessage-ID: <via@client.test>\nDate: Mon, 01 Jan 2024 10:00:00 +0100\n\nbody\n"
	cmd := exec.Command(mfilterBin, "deliver", "--rules", deliverRules, "--maildir", filepath.Join(e.dir, "Mail"), "-f", "alice@example.test")
	cmd.Env = append(os.Environ(), e.env...)
	cmd.Stdin = strings.NewReader(msg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mfilter deliver: %v: %s", err, out)
	}
	got, _ := e.delivered("other", 1)
	if got[0] != msg+"\n" {
		t.Errorf("forwarded %q, want %q", got[0], msg+"\n")
	}
}

// TestTunnel: mfilter tunnel forwards a local port; Go's net/smtp client
// sends through it, then sshd is restarted (every connection killed)
// and the next client is served by a new link, without a retry.
func TestTunnel(t *testing.T) {
	e := newSendEnv(t, mtatest.Options{}, "")
	port := freeLocalPort(t)
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(mfilterBin, "tunnel", "--rules", e.rules, "--listen", listen, "-v")
	cmd.Env = append(os.Environ(), e.env...)
	var logs lockedBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "link up") {
		if time.Now().After(deadline) {
			t.Fatalf("the tunnel did not come up: %s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	sendVia := func(id string) error {
		body := fmt.Sprintf("From: alice@example.test\r\nTo: to@example.test\r\nSubject: tunnel\r\nX-Test-ID: %s\r\n\r\n.leading dot\r\nthrough the tunnel\r\n", id)
		return smtp.SendMail(listen, nil, "alice@example.test", []string{"to@example.test"}, []byte(body))
	}
	if err := sendVia("tunnel-1"); err != nil {
		t.Fatalf("net/smtp through the tunnel: %v\n%s", err, logs.String())
	}
	e.delivered("to", 1)
	e.srv.Restart(t)
	start := time.Now()
	if err := sendVia("tunnel-2"); err != nil {
		t.Fatalf("after an sshd restart: %v\n%s", err, logs.String())
	}
	t.Logf("the first message after the restart went in %s", time.Since(start).Round(time.Millisecond))
	got, _ := e.delivered("to", 2)
	if !strings.Contains(got[1], "X-Test-ID: tunnel-2") || !strings.Contains(got[1], "\n.leading dot\n") {
		t.Errorf("second message: %q", got[1])
	}
	if l := logs.String(); !strings.Contains(l, "link lost") || strings.Count(l, "link up") < 2 {
		t.Errorf("the tunnel must report the lost link and the new one:\n%s", l)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("SIGTERM: %v (want exit 0)\n%s", err, logs.String())
		}
		exited <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("the tunnel did not stop on SIGTERM")
	}
}

// TestTunnelRefusals: an address others can reach is refused without
// --listen-any (64); a server whose host key is unknown ends the tunnel
// at once (78) instead of being dialed forever.
func TestTunnelRefusals(t *testing.T) {
	srv := sshtest.Start(t, sshtest.Options{})
	dir := t.TempDir()
	empty := filepath.Join(dir, "known_hosts")
	os.WriteFile(empty, nil, 0o600)
	cmd := exec.Command(mfilterBin, "tunnel", "--host", "127.0.0.1", "--port", fmt.Sprint(srv.Port), "--user", srv.User,
		"--identity", srv.ClientKey, "--known-hosts", empty, "--listen", fmt.Sprintf("127.0.0.1:%d", freeLocalPort(t)))
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir, "SSH_AUTH_SOCK=")
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("an unknown host key did not end the tunnel")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 78 || !strings.Contains(string(out), srv.HostKeyPub) {
		t.Errorf("unknown host key: %v (want exit 78 with the line to add): %s", err, out)
	}
	for _, addr := range []string{"0.0.0.0:2525", ":2525", "[::]:2525"} {
		cmd := exec.Command(mfilterBin, "tunnel", "--host", "127.0.0.1", "--listen", addr)
		cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 64 || !strings.Contains(string(out), "--listen-any") {
			t.Errorf("--listen %s: %v (want exit 64 naming --listen-any): %s", addr, err, out)
		}
	}
}

// TestSendCheckValidatesSend: mfilter check reports every mistake of the
// send: section with its position.
func TestSendCheckValidatesSend(t *testing.T) {
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.yaml")
	os.WriteFile(rules, []byte(`default: inbox/
send:
  relay: localhost
  starttls: maybe
  auth-user: me
  password: hunter2
  queue: sometimes
  colour: blue
`), 0o600)
	cmd := exec.Command(mfilterBin, "check", "--rules", rules)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 78 {
		t.Fatalf("exit %v, want 78: %s", err, out)
	}
	for _, want := range []string{
		rules + ":3:10: send relay must be host:port",
		rules + ":4:13: send starttls must be no, if-offered or required",
		rules + ":6:13: a password in the rules file",
		rules + ":7:10: send queue must be true, false or accept",
		rules + `:8:3: unknown send setting "colour"`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	// And mfilter send refuses to run with it.
	cmd = exec.Command(mfilterBin, "send", "--rules", rules, "to@example.test")
	cmd.Env = append(os.Environ(), "HOME="+dir)
	cmd.Stdin = strings.NewReader("Subject: x\n\nx\n")
	out, err = cmd.CombinedOutput()
	if !errors.As(err, &ee) || ee.ExitCode() != 78 {
		t.Fatalf("send with a broken send: section: %v, want 78: %s", err, out)
	}
}

// TestSendUsage: no recipients is a usage error (64) found before the
// message is read; -t that finds none in the message is 65; an
// unsupported sendmail mode is 64. None of them connects anywhere.
func TestSendUsage(t *testing.T) {
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.yaml")
	os.WriteFile(rules, []byte("fetch:\n  host: 192.0.2.1\n  timeout: 1s\n"), 0o600)
	for _, c := range []struct {
		args []string
		msg  string
		code int
		want string
	}{
		{[]string{"-oi"}, "Subject: x\n\nx\n", 64, "no recipients"},
		{[]string{"-oi", "-t"}, "Subject: x\nBcc: undisclosed-recipients:;\n\nTo: body@example.test\n", 65, "no recipient in the message"},
		{[]string{"-bs"}, "", 64, "-bs is not supported"},
		{[]string{"--flush", "a@example.test"}, "", 64, "takes no message"},
	} {
		cmd := exec.Command(mfilterBin, append([]string{"send", "--rules", rules}, c.args...)...)
		cmd.Env = append(os.Environ(), "HOME="+dir)
		cmd.Stdin = strings.NewReader(c.msg)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != c.code || !strings.Contains(string(out), c.want) {
			t.Errorf("%q: %v (want exit %d, %q): %s", c.args, err, c.code, c.want, out)
		}
		if time.Since(start) > 900*time.Millisecond {
			t.Errorf("%q took %s: it must not try to connect", c.args, time.Since(start))
		}
	}
}

func TestSendArgs(t *testing.T) {
	for _, c := range []struct {
		args []string
		want sendOpts
		err  string
	}{
		{args: []string{"-oi", "--", "a@b", "-c@d"}, want: sendOpts{ignoreDots: true, recipients: []string{"a@b", "-c@d"}}},
		{args: []string{"-FCronDaemon", "-i", "-B8BITMIME", "-oem", "-oi", "-t"}, want: sendOpts{fullName: "CronDaemon", ignoreDots: true, extract: true, ignored: []string{"-B8BITMIME", "-oem"}}},
		{args: []string{"-ti", "-f", "me@x", "-v", "b@c"}, want: sendOpts{extract: true, ignoreDots: true, sender: "me@x", senderSet: true, verbose: true, recipients: []string{"b@c"}}},
		{args: []string{"-fme@x", "-F", "Me Myself", "-odi", "-odb", "-G", "-U"}, want: sendOpts{sender: "me@x", senderSet: true, fullName: "Me Myself", ignored: []string{"-odi", "-odb", "-G", "-U"}}},
		{args: []string{"-r", "", "x@y"}, want: sendOpts{sender: "", senderSet: true, recipients: []string{"x@y"}}},
		{args: []string{"-odq", "-N", "success,failure", "-R", "hdrs", "-V", "id1", "x@y"}, want: sendOpts{queueOnly: true, notify: []string{"SUCCESS", "FAILURE"}, ret: "HDRS", envid: "id1", recipients: []string{"x@y"}}},
		{args: []string{"-q"}, want: sendOpts{flush: true}},
		{args: []string{"-q30m"}, want: sendOpts{flush: true, ignored: []string{"-q30m"}}},
		{args: []string{"-bp"}, want: sendOpts{list: true}},
		{args: []string{"-O", "IgnoreDots=true", "x@y"}, want: sendOpts{ignoreDots: true, recipients: []string{"x@y"}}},
		{args: []string{"--rules=/r", "--queue=accept", "--relay", "mx:25", "--identity", "k1", "--identity=k2", "--flush"}, want: sendOpts{rules: "/r", queue: "accept", relay: "mx:25", identity: []string{"k1", "k2"}, flush: true}},
		{args: []string{"--queue", "x@y"}, want: sendOpts{queue: "true", recipients: []string{"x@y"}}},
		{args: []string{"-bs"}, err: "-bs is not supported"},
		{args: []string{"-C", "/etc/mail/sendmail.cf"}, err: "not supported"},
		{args: []string{"-f"}, err: "-f needs a value"},
		{args: []string{"-k"}, err: "unknown option -k"},
		{args: []string{"--frobnicate"}, err: "unknown option --frobnicate"},
		{args: []string{"-N", "sometimes"}, err: "-N takes"},
		{args: []string{"--queue=maybe"}, err: "--queue takes"},
	} {
		got, err := parseSendArgs(c.args)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: error %v, want %q", c.args, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.args, err)
			continue
		}
		if fmt.Sprintf("%+v", *got) != fmt.Sprintf("%+v", c.want) {
			t.Errorf("%q:\n got %+v\nwant %+v", c.args, *got, c.want)
		}
	}
}

func freeLocalPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
