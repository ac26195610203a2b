package main

// Real pipelines around mfilter deliver as an MDA (issue 11, item 4):
// Postfix's local(8) with mailbox_command, fetchmail and getmail polling
// a private Dovecot over POP3, and the readers (Dovecot, mblaze,
// mailstat) of what mfilter wrote. Every tool is the real one; a
// missing tool fails the test (test.sh installs them).

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mfilter/mfilter/internal/mailfmt"
	"github.com/mfilter/mfilter/internal/mtatest"
)

// pipelineMsg is one message of the pipeline corpus.
type pipelineMsg struct {
	name   string // corpus file, or a made-up name
	sender string // envelope sender
	data   []byte // the message, LF line ends, no From_ line
	msgID  string
	folder string // where pipelineRules files it ("" = not known here)
}

// pipelineExampleFolders are the folders testdata/example-SOURCES.md
// lists for the ten messages of testdata/example.mbox, in order.
var pipelineExampleFolders = []string{"fables/", "inbox/", "lists/announce/", "spam.mbox",
	"lists/spamassassin-talk/", "lists/debian-chinese-gb/", "inbox/", "inbox/", "bounces/", "inbox/"}

// pipelineExtra are more corpus messages (LF line ends, one Message-ID
// each) for the polls of 20 messages and more.
var pipelineExtra = []string{"debian-examples-sample-spam", "nice-005", "nice-008",
	"nice-MultipleReceived_08", "nice-big5-base64.1", "nice-iso-2022-jp.2", "nice-mime2",
	"nice-mime3", "nice-mime4", "nice-mime7", "nice-mime8", "nice-noneok", "nice-orig_ip_hdr",
	"spam-004", "spam-010", "spam-011"}

var (
	pipelineMsgIDRe = regexp.MustCompile(`(?im)^Message-ID:[ \t]*(<[^>\n]+>)`)
	pipelineFromRe  = regexp.MustCompile(`^From (\S+)`)
	// pipelineStatusRe matches the header fields mbox readers take as
	// flags (only the header's, as the body starts after a blank line).
	pipelineStatusRe = regexp.MustCompile(`(?m)\A((?:[^\n]+\n)*?)(?:X-)?Status:[^\n]*\n`)
	pipelineRPathRe  = regexp.MustCompile(`(?im)^Return-Path:[ \t]*<([^>\n]*)>`)
)

// pipelineCorpus returns the ten messages of testdata/example.mbox (with
// the folders the rules below give them) and, with extra, the messages
// of pipelineExtra; every one has its own Message-ID.
func pipelineCorpus(t *testing.T, extra bool) []pipelineMsg {
	t.Helper()
	data, err := os.ReadFile("../../testdata/example.mbox")
	if err != nil {
		t.Fatal(err)
	}
	var msgs []pipelineMsg
	sp := mailfmt.NewSplitter(bytes.NewReader(data), mailfmt.SplitOptions{})
	for i := 0; ; i++ {
		m, err := sp.Next()
		if err != nil {
			break
		}
		m = slices.Clone(m)
		nl := bytes.IndexByte(m, '\n')
		sender := pipelineFromRe.FindSubmatch(m[:nl])
		if sender == nil || i >= len(pipelineExampleFolders) {
			t.Fatalf("example.mbox message %d: %q", i+1, m[:nl])
		}
		if string(sender[1]) == "MAILER-DAEMON" {
			sender[1] = nil // the null sender, <>
		}
		body := m[nl+1:]
		if bytes.HasSuffix(body, []byte("\n\n")) {
			body = body[:len(body)-1] // the blank line that ends an mbox message
		}
		msgs = append(msgs, pipelineMsg{name: fmt.Sprintf("example.mbox#%d", i+1), sender: string(sender[1]),
			data: body, folder: pipelineExampleFolders[i]})
	}
	if len(msgs) != len(pipelineExampleFolders) {
		t.Fatalf("example.mbox has %d messages, want %d", len(msgs), len(pipelineExampleFolders))
	}
	if extra {
		for _, n := range pipelineExtra {
			name := "../../testdata/corpus/messages/spamassassin/" + n + ".eml"
			m, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			sender := "sender@example.org"
			if from := pipelineFromRe.FindSubmatch(m); from != nil {
				// A From_ line: the envelope, not the message.
				sender = string(from[1])
				m = m[bytes.IndexByte(m, '\n')+1:]
			}
			if rp := pipelineRPathRe.FindSubmatch(m); rp != nil && len(rp[1]) > 0 {
				sender = string(rp[1])
			}
			msgs = append(msgs, pipelineMsg{name: name, sender: sender, data: m})
		}
	}
	seen := map[string]string{}
	for i := range msgs {
		id := pipelineMsgID(msgs[i].data)
		if id == "" {
			// Counting needs one: add it on top, as an MTA would.
			id = fmt.Sprintf("<corpus-%d@pipeline.test>", i)
			msgs[i].data = append([]byte("Message-ID: "+id+"\n"), msgs[i].data...)
		}
		if prev, dup := seen[id]; dup {
			t.Fatalf("%s and %s have the same Message-ID %s", prev, msgs[i].name, id)
		}
		seen[id] = msgs[i].name
		msgs[i].msgID = id
	}
	return msgs
}

// dropReturnPath removes one-line Return-Path: fields from the header, as
// Postfix's cleanup does (message_drop_headers).
func dropReturnPath(m []byte) []byte {
	end := bytes.Index(m, []byte("\n\n"))
	if end < 0 {
		end = len(m)
	}
	var out []byte
	for _, line := range bytes.SplitAfter(m[:end+1], []byte("\n")) {
		if !bytes.HasPrefix(bytes.ToLower(line), []byte("return-path:")) {
			out = append(out, line...)
		}
	}
	return append(out, m[end+1:]...)
}

func pipelineMsgID(m []byte) string {
	hdr := m
	if i := bytes.Index(m, []byte("\n\n")); i >= 0 {
		hdr = m[:i+1]
	}
	if id := pipelineMsgIDRe.FindSubmatch(hdr); id != nil {
		return string(id[1])
	}
	return ""
}

// pipelineFaultMsg is a made-up message whose subject starts with
// "FAULT", which pipelineRules files into blocked/.
func pipelineFaultMsg(n int, what string) pipelineMsg {
	id := fmt.Sprintf("<fault-%d-%s@pipeline.test>", n, what)
	return pipelineMsg{
		name:   fmt.Sprintf("fault %d %s", n, what),
		sender: "fault@pipeline.test",
		msgID:  id,
		folder: "blocked/",
		data: []byte(fmt.Sprintf("From: Fault <fault@pipeline.test>\nTo: someone@pipeline.test\n"+
			"Subject: FAULT %d %s\nDate: Sun, 29 Nov 2026 10:00:0%d +0000\nMessage-ID: %s\n\nbody %d of %s\n",
			n, what, n%10, id, n, what)),
	}
}

// pipelineRules are testdata/example-rules.yaml's rules, below ~/Mail,
// with the log in ~/Mail/mfilter.log, and a first rule that files
// subjects starting with FAULT into blocked/ (which the fault tests make
// unwritable).
const pipelineRules = `maildir: ~/Mail
default: inbox/
log: mfilter.log

rules:
  - name: fault
    if: {subject: '^FAULT'}
    then: {folder: blocked/}
  - name: spam
    if: {header: {X-Spam-Flag: '^YES'}}
    then: {folder: spam.mbox}
  - name: mailing lists
    if: {list-id: '^(?P<list>[a-z0-9-]+)\.'}
    then: {folder: 'lists/${list|lower}/'}
  - name: mailing lists without List-Id
    if: {header: {X-Mailing-List: '<(?P<list>[a-z0-9-]+)@'}}
    then: {folder: 'lists/${list|lower}/'}
  - name: bounces
    if: {headers: '^FROM_MAILER'}
    then: {folder: bounces/}
  - name: fables
    if: {subject: 'Frösche'}
    then:
      - add-header: 'X-Filed-By: mfilter'
      - folder: fables/
`

// writeUserRules writes the user's ~/.config/mfilter/rules.yaml with
// the given mode, owned by the user.
func writeUserRules(t *testing.T, u *mtatest.LocalUser, rules string, mode os.FileMode) {
	t.Helper()
	dir := filepath.Join(u.Home, ".config", "mfilter")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	u.Chown(t, filepath.Join(u.Home, ".config"))
	path := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(path, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, u.UID, u.GID); err != nil {
		t.Fatal(err)
	}
}

// filedMessages reads every message under root: maildir files (in new/
// or cur/) and mbox files (split as mfilter splits them). It maps each
// Message-ID to the folders (relative to root; maildirs with a trailing
// /) that hold it, once per copy, and also returns the messages by
// folder.
func filedMessages(t *testing.T, root string) (map[string][]string, map[string][][]byte) {
	t.Helper()
	where := map[string][]string{}
	byFolder := map[string][][]byte{}
	add := func(folder string, m []byte) {
		id := pipelineMsgID(m)
		if id == "" {
			id = "(no Message-ID)"
		}
		where[id] = append(where[id], folder)
		byFolder[folder] = append(byFolder[folder], m)
	}
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		dir, sub := filepath.Dir(filepath.Dir(rel)), filepath.Base(filepath.Dir(rel))
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		switch {
		case sub == "new" || sub == "cur":
			add(dir+"/", data)
		case sub == "tmp":
			t.Errorf("%s is left in a maildir's tmp/", rel)
		case strings.HasSuffix(rel, ".mbox"):
			sp := mailfmt.NewSplitter(bytes.NewReader(data), mailfmt.SplitOptions{})
			for {
				m, err := sp.Next()
				if err != nil {
					break
				}
				add(rel, slices.Clone(m))
			}
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return where, byFolder
}

// checkFiledOnce fails unless every message is in its folder (when the
// test knows it) exactly once, and in no other folder.
func checkFiledOnce(t *testing.T, root string, msgs []pipelineMsg) {
	t.Helper()
	where, _ := filedMessages(t, root)
	for _, m := range msgs {
		got := where[m.msgID]
		switch {
		case len(got) != 1:
			t.Errorf("%s (%s) is in %d folders %v, want exactly one", m.name, m.msgID, len(got), got)
		case m.folder != "" && got[0] != m.folder:
			t.Errorf("%s (%s) is in %s, want %s", m.name, m.msgID, got[0], m.folder)
		}
	}
}

// notFiled fails if any of msgs is anywhere under root.
func notFiled(t *testing.T, root string, msgs []pipelineMsg) {
	t.Helper()
	where, _ := filedMessages(t, root)
	for _, m := range msgs {
		if got := where[m.msgID]; len(got) > 0 {
			t.Errorf("%s (%s) is in %v, want it still on the server", m.name, m.msgID, got)
		}
	}
}

// TestMDAPostfixMailboxCommand: Postfix's local(8) runs mfilter deliver
// as mailbox_command for a real local user, with that user's rules
// file. Varied mail sent over SMTP lands in the rules' folders; a folder
// that cannot be written defers the message (never a bounce) and a
// flush after the fix delivers it once; a rules file with mistakes, or
// one that others can write, still gets the mail delivered.
func TestMDAPostfixMailboxCommand(t *testing.T) {
	start := time.Now()
	u := mtatest.MDAUser(t)
	p := mtatest.Start(t, mtatest.Options{MailboxCommand: mfilterBin + " deliver"})
	rcpt := u.Name + "@" + mtatest.LocalDomain
	writeUserRules(t, u, pipelineRules, 0o644)
	mail := filepath.Join(u.Home, "Mail")

	msgs := pipelineCorpus(t, false)
	for _, m := range msgs {
		p.Send(t, m.sender, m.data, rcpt)
	}
	p.WaitLog(t, len(msgs), "to=<"+rcpt+">", "status=sent")
	p.WaitIdle(t)
	checkFiledOnce(t, mail, msgs)
	// Postfix's smtpd and local(8) add trace fields on top and drop the
	// message's own Return-Path: (message_drop_headers); nothing else
	// changes, and mfilter's maildir files hold no From_ line.
	_, byFolder := filedMessages(t, mail)
	for _, m := range msgs {
		if !strings.HasSuffix(m.folder, "/") || m.folder == "fables/" {
			continue
		}
		found := false
		for _, f := range byFolder[m.folder] {
			trace, rest := mtatest.StripTrace(f)
			if bytes.Equal(rest, dropReturnPath(m.data)) {
				found = true
				if !bytes.HasPrefix(trace, []byte("Return-Path: <"+m.sender+">\n")) {
					t.Errorf("%s: trace fields %q, want Return-Path: <%s> first", m.name, trace, m.sender)
				}
			}
		}
		if !found {
			t.Errorf("%s: no file in %s holds the message as sent (plus trace fields)", m.name, m.folder)
			for _, f := range byFolder[m.folder] {
				if pipelineMsgID(f) == m.msgID {
					_, rest := mtatest.StripTrace(f)
					t.Logf("got:\n%.600s\nsent:\n%.600s", rest, m.data)
				}
			}
		}
	}
	if l := p.LogLines("status=bounced"); len(l) > 0 {
		t.Fatalf("postfix bounced mail:\n%s", strings.Join(l, "\n"))
	}

	// deliveredOnce waits until the queue id's delivery is final and
	// checks that it was sent and never bounced.
	sentOnce := func(t *testing.T, qid string) {
		t.Helper()
		p.WaitLog(t, 1, qid+": to=<"+rcpt+">", "status=sent")
		p.WaitIdle(t)
		if l := p.LogLines(qid+":", "status=bounced"); len(l) > 0 {
			t.Fatalf("postfix bounced %s:\n%s", qid, strings.Join(l, "\n"))
		}
	}
	inMaildir := func(t *testing.T, dir string, m pipelineMsg) {
		t.Helper()
		where, _ := filedMessages(t, u.Home)
		if got := where[m.msgID]; len(got) != 1 || got[0] != dir {
			t.Errorf("%s is in %v, want exactly once in ~/%s", m.msgID, got, dir)
		}
	}

	t.Run("unwritable folder defers", func(t *testing.T) {
		writeUserRules(t, u, pipelineRules, 0o644)
		// blocked/ must be a maildir: a file in its place makes it
		// impossible to write, whoever runs mfilter.
		blocked := filepath.Join(mail, "blocked")
		if err := os.WriteFile(blocked, []byte("in the way\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		m := pipelineFaultMsg(1, "postfix")
		qid := p.Send(t, m.sender, m.data, rcpt)
		lines := p.WaitLog(t, 1, qid+": to=<"+rcpt+">", "status=")
		if !strings.Contains(lines[0], "status=deferred") {
			t.Fatalf("with blocked/ unwritable, postfix logged %s, want status=deferred", lines[0])
		}
		notFiled(t, u.Home, []pipelineMsg{m})
		if err := os.Remove(blocked); err != nil {
			t.Fatal(err)
		}
		p.Flush(t)
		sentOnce(t, qid)
		inMaildir(t, "Mail/blocked/", m)
		if n := len(p.LogLines(qid+": to=<"+rcpt+">", "status=sent")); n != 1 {
			t.Errorf("postfix logged %d deliveries of %s, want 1", n, qid)
		}
	})

	// Rules files with mistakes: mfilter keeps the message (implicit
	// keep) and exits 0, so postfix never bounces it.
	for _, c := range []struct {
		name, rules string
		mode        os.FileMode
		want        string // maildir under the home
	}{
		// Nothing parses: the default of defaults.
		{"invalid YAML", "maildir: ~/Mail\ndefault: inbox/\nrules:\n  - if: {subject: 'x'\n    then: [\n", 0o644, "Maildir/"},
		// The settings parse; a rule has a misspelt key: the file's
		// own default folder.
		{"unknown key", strings.Replace(pipelineRules, "then: {folder: bounces/}", "thne: {folder: bounces/}", 1), 0o644, "Mail/inbox/"},
		// Writable by others: none of its settings are trusted.
		{"insecure rules file", "maildir: ~/Elsewhere\ndefault: trusted/\n", 0o666, "Maildir/"},
		// Writable by the user's private group (useradd --user-group,
		// umask 002): only the user can write it, so it is used.
		{"private group", "maildir: ~/Elsewhere\ndefault: trusted/\n", 0o664, "Elsewhere/trusted/"},
	} {
		t.Run(c.name, func(t *testing.T) {
			writeUserRules(t, u, c.rules, c.mode)
			defer writeUserRules(t, u, pipelineRules, 0o644)
			m := pipelineFaultMsg(2, strings.ReplaceAll(c.name, " ", "-"))
			m.data = bytes.Replace(m.data, []byte("Subject: FAULT"), []byte("Subject: Rules"), 1)
			qid := p.Send(t, m.sender, m.data, rcpt)
			lines := p.WaitLog(t, 1, qid+": to=<"+rcpt+">", "status=")
			if !strings.Contains(lines[0], "status=sent") {
				t.Fatalf("postfix logged %s, want status=sent (implicit keep)", lines[0])
			}
			sentOnce(t, qid)
			inMaildir(t, c.want, m)
		})
	}

	if l := p.LogLines("status=bounced"); len(l) > 0 {
		t.Errorf("postfix bounced mail:\n%s", strings.Join(l, "\n"))
	}
	t.Logf("postfix pipeline: %v", time.Since(start).Round(time.Millisecond))
}

// pipelinePoll is one run of a mail retriever as the local user.
func pipelinePoll(t *testing.T, u *mtatest.LocalUser, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = u.Home
	cmd.Env = []string{"HOME=" + u.Home, "USER=" + u.Name, "LOGNAME=" + u.Name,
		"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "TZ=UTC"}
	cmd.SysProcAttr = u.Credential()
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s did not end in 90s:\n%s", name, out)
	}
	t.Logf("%s %v: %v", name, args, err)
	return string(out)
}

// pipelineRetriever runs the same checks for fetchmail and getmail:
// poll writes the retriever's configuration (once) and polls the
// Dovecot POP3 server once.
//
// faultSign matches what the retriever prints once when the MDA exits 75: the
// first poll must show it, so that the faults are known to have come
// through mfilter's exit status.
func pipelineRetriever(t *testing.T, tool, faultSign string, poll func(t *testing.T, d *mtatest.Dovecot, u *mtatest.LocalUser) string) {
	if _, err := exec.LookPath(tool); err != nil {
		t.Fatalf("%s is not installed (test.sh installs it): %v", tool, err)
	}
	start := time.Now()
	u := mtatest.MDAUser(t)
	d := mtatest.StartDovecot(t, mtatest.DovecotOptions{Users: []string{"alice"}})
	writeUserRules(t, u, pipelineRules, 0o644)
	mail := filepath.Join(u.Home, "Mail")
	msgs := pipelineCorpus(t, true)
	var faults []pipelineMsg
	for i := 1; i <= 3; i++ {
		faults = append(faults, pipelineFaultMsg(i, tool))
	}
	// The faulted messages among the others: first, in the middle, last.
	all := append([]pipelineMsg{faults[0]}, msgs[:13]...)
	all = append(all, faults[1])
	all = append(all, msgs[13:]...)
	all = append(all, faults[2])
	for _, m := range all {
		d.Save(t, "alice", append([]byte("Return-Path: <"+m.sender+">\n"), m.data...))
	}
	if n := d.Count(t, "alice", "INBOX"); n != len(all) {
		t.Fatalf("INBOX has %d messages, want %d", n, len(all))
	}

	// blocked/ cannot be written: a file is where the maildir must be.
	if err := os.MkdirAll(mail, 0o700); err != nil {
		t.Fatal(err)
	}
	u.Chown(t, mail)
	blocked := filepath.Join(mail, "blocked")
	if err := os.WriteFile(blocked, []byte("in the way\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := poll(t, d, u)
	if got := len(regexp.MustCompile(faultSign).FindAllString(out, -1)); got != len(faults) {
		t.Errorf("%s printed %q %d times, want once per fault (%d)", tool, faultSign, got, len(faults))
	}
	if n := d.Count(t, "alice", "INBOX"); n != len(faults) {
		t.Fatalf("after the first poll INBOX has %d messages, want the %d that could not be filed; %s said:\n%s", n, len(faults), tool, out)
	}
	checkFiledOnce(t, mail, msgs)
	notFiled(t, mail, faults)
	if t.Failed() {
		t.Fatalf("%s said:\n%s", tool, out)
	}

	if err := os.Remove(blocked); err != nil {
		t.Fatal(err)
	}
	out = poll(t, d, u)
	if n := d.Count(t, "alice", "INBOX"); n != 0 {
		t.Fatalf("after the second poll INBOX has %d messages, want 0; %s said:\n%s", n, tool, out)
	}
	checkFiledOnce(t, mail, append(slices.Clone(msgs), faults...))
	if t.Failed() {
		t.Logf("%s said:\n%s", tool, out)
	}
	t.Logf("%s pipeline: %v", tool, time.Since(start).Round(time.Millisecond))
}

// TestMDAFetchmail: fetchmail polls Dovecot over POP3 and hands each
// message to mfilter deliver -f %F; what mfilter cannot file (exit 75)
// stays on the server and the poll goes on; a later poll files it.
func TestMDAFetchmail(t *testing.T) {
	// fetchmail leaves the message on the server, goes on with the
	// next one and exits 0 all the same.
	pipelineRetriever(t, "fetchmail", "MDA returned nonzero status 75", func(t *testing.T, d *mtatest.Dovecot, u *mtatest.LocalUser) string {
		rc := filepath.Join(u.Home, ".fetchmailrc")
		if _, err := os.Stat(rc); err != nil {
			conf := fmt.Sprintf(`set no syslog
poll %s service %d protocol pop3 auth password timeout 30
    user "alice" password "%s" sslproto '' fetchall
    mda "%s deliver -f %%F"
`, mtatest.DovecotAddr, d.POP3Port, mtatest.Password("alice"), mfilterBin)
			if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
				t.Fatal(err)
			}
			u.Chown(t, rc)
		}
		return pipelinePoll(t, u, "fetchmail", "-N", "--nosyslog", "-v", "-f", rc,
			"--pidfile", filepath.Join(u.Home, ".fetchmail.pid"), "--idfile", filepath.Join(u.Home, ".fetchids"))
	})
}

// TestMDAGetmail: the same with getmail's MDA_external.
func TestMDAGetmail(t *testing.T) {
	// getmail leaves the message on the server, goes on with the next
	// one and exits 127 at the end.
	pipelineRetriever(t, "getmail", `, delivery error \(command mfilter \d+ error \(75, `, func(t *testing.T, d *mtatest.Dovecot, u *mtatest.LocalUser) string {
		dir := filepath.Join(u.Home, ".getmail")
		if _, err := os.Stat(dir); err != nil {
			conf := fmt.Sprintf(`[retriever]
type = SimplePOP3Retriever
server = %s
port = %d
username = alice
password = %s

[destination]
type = MDA_external
path = %s
arguments = ("deliver", "-f", "%%(sender)")

[options]
delete = true
read_all = true
verbose = 2
`, mtatest.DovecotAddr, d.POP3Port, mtatest.Password("alice"), mfilterBin)
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "getmailrc"), []byte(conf), 0o600); err != nil {
				t.Fatal(err)
			}
			u.Chown(t, dir)
		}
		return pipelinePoll(t, u, "getmail", "--getmaildir", dir, "--rcfile", "getmailrc")
	})
}

// TestMDAReaders: Dovecot and mblaze read the maildir and the mbox that
// mfilter deliver wrote, finding the same messages with the same bytes
// as the input; mailstat reads mfilter's log and totals it per folder.
func TestMDAReaders(t *testing.T) {
	for _, tool := range []string{"doveadm", "mlist", "mshow", "mdeliver", "mailstat"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (test.sh installs dovecot-core, mblaze, procmail): %v", tool, err)
		}
	}
	start := time.Now()
	d := mtatest.StartDovecot(t, mtatest.DovecotOptions{Users: []string{"reader"}})
	home := e2eDir(t)
	rules := "maildir: ~/Mail\nlog: mfilter.log\nrules:\n  - then: [{copy: all/}, {copy: all.mbox}]\n" +
		pipelineRules[strings.Index(pipelineRules, "rules:\n")+len("rules:\n"):]
	if err := os.MkdirAll(filepath.Join(home, ".config", "mfilter"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".config", "mfilter", "rules.yaml"), []byte("default: inbox/\n"+rules), 0o644); err != nil {
		t.Fatal(err)
	}
	msgs := pipelineCorpus(t, true)
	for _, m := range msgs {
		code, stderr := e2eRun{args: []string{"deliver", "-f", m.sender}, stdin: m.data, home: home}.run(t)
		if code != 0 {
			t.Fatalf("mfilter deliver %s: exit %d\n%s", m.name, code, stderr)
		}
	}
	mail := filepath.Join(home, "Mail")
	want := make([]string, len(msgs))
	for i, m := range msgs {
		want[i] = string(m.data)
	}
	// An mbox cannot tell a blank line at the end of a message from the
	// one that separates messages, and its readers take Status: and
	// X-Status: fields as flags: for the mbox, both sides end in one
	// newline and the input loses those fields.
	mboxNorm := func(m string, input bool) string {
		m = strings.TrimRight(m, "\n") + "\n"
		if input {
			for {
				n := pipelineStatusRe.ReplaceAllString(m, "$1")
				if n == m {
					break
				}
				m = n
			}
		}
		return m
	}
	compare := func(t *testing.T, who string, got []string, mbox bool) {
		t.Helper()
		want := slices.Clone(want)
		if mbox {
			for i := range got {
				got[i] = mboxNorm(got[i], false)
			}
			for i := range want {
				want[i] = mboxNorm(want[i], true)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s: %d messages, want %d", who, len(got), len(want))
		}
		left := map[string]int{}
		for _, w := range want {
			left[w]++
		}
		var extra []string
		for _, g := range got {
			if left[g] == 0 {
				extra = append(extra, g)
				continue
			}
			left[g]--
		}
		for w, n := range left {
			if n > 0 {
				t.Errorf("%s: %s not found as it was given", who, pipelineMsgID([]byte(w)))
			}
		}
		for _, g := range extra {
			for _, w := range want {
				if pipelineMsgID([]byte(w)) == pipelineMsgID([]byte(g)) {
					i := 0
					for i < len(g) && i < len(w) && g[i] == w[i] {
						i++
					}
					lo := max(0, i-80)
					t.Errorf("%s: %s differs from the input at byte %d of %d (input: %d):\n got ...%q\nwant ...%q", who,
						pipelineMsgID([]byte(g)), i, len(g), len(w), g[lo:min(len(g), i+80)], w[lo:min(len(w), i+80)])
				}
			}
		}
	}
	// Dovecot wants to write its index and uidlist next to the mail:
	// give it to the mail owner.
	if out, err := exec.Command("chown", "-R", fmt.Sprintf("%d:%d", d.UID, d.GID), home).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v\n%s", err, out)
	}

	t.Run("mblaze", func(t *testing.T) {
		env := append(os.Environ(), "MBLAZE="+filepath.Join(t.TempDir(), "mblaze"))
		run := func(stdin []byte, name string, args ...string) []byte {
			t.Helper()
			cmd := exec.Command(name, args...)
			cmd.Env = env
			cmd.Stdin = bytes.NewReader(stdin)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%s %v: %v\n%s", name, args, err, stderr.String())
			}
			return out
		}
		read := func(maildir string) []string {
			var got []string
			for _, f := range strings.Fields(string(run(nil, "mlist", maildir))) {
				got = append(got, string(run(nil, "mshow", "-n", "-H", "-r", f)))
			}
			return got
		}
		compare(t, "mlist/mshow on the maildir", read(filepath.Join(mail, "all")), false)
		// mblaze reads an mbox by splitting it into a maildir.
		mbox, err := os.ReadFile(filepath.Join(mail, "all.mbox"))
		if err != nil {
			t.Fatal(err)
		}
		split := filepath.Join(t.TempDir(), "split")
		run(nil, "mmkdir", split)
		run(mbox, "mdeliver", "-M", split)
		compare(t, "mdeliver -M, mlist/mshow on the mbox", read(split), true)
	})

	t.Run("dovecot", func(t *testing.T) {
		for _, c := range []struct{ name, loc string }{
			{"maildir", "maildir:" + filepath.Join(mail, "all") + ":INDEX=MEMORY"},
			{"mbox", "mbox:" + filepath.Join(home, "dovecot-mbox") + ":INBOX=" + filepath.Join(mail, "all.mbox")},
		} {
			var got []string
			for _, m := range d.Fetch(t, "reader", "INBOX", "text", "-o", "mail_location="+c.loc) {
				got = append(got, string(m))
			}
			compare(t, "doveadm fetch text of the "+c.name, got, c.name == "mbox")
			if n := len(d.UIDs(t, "reader", "INBOX", "-o", "mail_location="+c.loc)); n != len(msgs) {
				t.Errorf("doveadm search of the %s: %d messages, want %d", c.name, n, len(msgs))
			}
		}
	})

	t.Run("mailstat", func(t *testing.T) {
		logFile := filepath.Join(mail, "mfilter.log")
		cmd := exec.Command("mailstat", "-k", logFile)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("mailstat: %v\n%s", err, out)
		}
		// mailstat -k: "  Total  Number Folder" and a line per folder
		// (maildirs with their trailing /), bytes and messages.
		counts, bytesIn := map[string]int{}, map[string]int{}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) == 3 && f[0] != "Total" && !strings.HasPrefix(f[0], "-") {
				var size, n int
				fmt.Sscan(f[0], &size)
				fmt.Sscan(f[1], &n)
				counts[f[2]] += n
				bytesIn[f[2]] += size
			}
		}
		wantCounts := map[string]int{}
		_, byFolder := filedMessages(t, mail)
		for folder, ms := range byFolder {
			wantCounts[folder] += len(ms)
		}
		if len(counts) != len(wantCounts) {
			t.Errorf("mailstat shows %d folders, want %d", len(counts), len(wantCounts))
		}
		for f, n := range wantCounts {
			if counts[f] != n {
				t.Errorf("mailstat counts %d messages in %s, want %d", counts[f], f, n)
			}
		}
		// The maildir holds the input as it was.
		total := 0
		for _, m := range msgs {
			total += len(m.data)
		}
		if bytesIn["all/"] != total {
			t.Errorf("mailstat counts %d bytes in all/, want %d", bytesIn["all/"], total)
		}
		if t.Failed() {
			t.Logf("mailstat said:\n%s", out)
		}
	})
	t.Logf("readers: %v", time.Since(start).Round(time.Millisecond))
}
