package main

// Dovecot's own mbox reader against mfilter: the mboxes mfilter writes
// open in Dovecot with every message filed, and the corpus mboxes that
// Dovecot opens split into the messages Dovecot sees.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// dovecot is a private Dovecot configuration over one mbox directory,
// read with doveadm without a running server.
type dovecot struct {
	conf, dir, user string
}

func newDovecot(t *testing.T) *dovecot {
	t.Helper()
	tool(t, "doveadm")
	base := t.TempDir()
	// Dovecot will not open mail as root: use nobody then.
	name, uid, gid := "", os.Getuid(), os.Getgid()
	if uid == 0 {
		u, err := user.Lookup("nobody")
		if err != nil {
			t.Fatalf("doveadm as root needs the user nobody: %v", err)
		}
		name = u.Username
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
	} else {
		u, err := user.Current()
		if err != nil {
			t.Fatal(err)
		}
		name = u.Username
	}
	d := &dovecot{dir: filepath.Join(base, "mail"), conf: filepath.Join(base, "dovecot.conf"), user: name}
	for _, sub := range []string{"mail", "run", "state"} {
		if err := os.Mkdir(filepath.Join(base, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Dir(base), 0o755) // t.TempDir makes it 0700
	os.Chmod(base, 0o755)
	os.Chown(d.dir, uid, gid)
	conf := fmt.Sprintf(`log_path = /dev/stderr
base_dir = %[1]s/run
state_dir = %[1]s/state
mail_location = mbox:%[2]s:INBOX=%[2]s/inbox:INDEX=MEMORY
mail_uid = %[3]d
mail_gid = %[4]d
first_valid_uid = 1
first_valid_gid = 1
`, base, d.dir, uid, gid)
	if err := os.WriteFile(d.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

// put copies data into the mbox directory as name.
func (d *dovecot) put(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(d.dir, name)
	if err := os.WriteFile(p, data, 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, 0o666)
	return p
}

// doveadm runs doveadm on the configuration; stderr is part of the error.
func (d *dovecot) doveadm(args ...string) ([]byte, error) {
	cmd := exec.Command("doveadm", append([]string{"-c", d.conf}, args...)...)
	cmd.Env = append(os.Environ(), "USER="+d.user, "HOME="+filepath.Dir(d.dir))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err == nil && stderr.Len() > 0 && bytes.Contains(stderr.Bytes(), []byte("Error")) {
		err = fmt.Errorf("doveadm reported errors")
	}
	if err != nil {
		return out, fmt.Errorf("doveadm %s: %v: %s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out, nil
}

// messages returns the text (header and body, without the From_ line)
// of every message Dovecot reads in mailbox name.
func (d *dovecot) messages(name string) ([]string, error) {
	out, err := d.doveadm("-f", "json", "fetch", "text", "mailbox", name, "all")
	if err != nil {
		return nil, err
	}
	var res []struct {
		Text string `json:"text"`
	}
	if len(bytes.TrimSpace(out)) == 0 {
		return nil, nil
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("doveadm fetch output: %v", err)
	}
	var msgs []string
	for _, r := range res {
		msgs = append(msgs, r.Text)
	}
	return msgs, nil
}

// count is what doveadm mailbox status says the mailbox holds.
func (d *dovecot) count(name string) (int, error) {
	out, err := d.doveadm("-f", "flow", "mailbox", "status", "messages", name)
	if err != nil {
		return 0, err
	}
	m := regexp.MustCompile(`messages=(\d+)`).FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("doveadm mailbox status: %q", out)
	}
	return strconv.Atoi(string(m[1]))
}

// TestDovecotOpensFiledMboxes: every corpus mbox filed into an mbox
// folder with mfilter file, and messages whose From_ line has no date
// delivered with mfilter deliver, give an mbox that Dovecot opens with
// as many messages as mfilter filed. Before mfilter replaced From_ lines
// without a date, Dovecot refused the mboxes filed from
// issue1189-gmail-takeout, simple, unmunged-bom and content-length
// ("Mailbox isn't a valid mbox file").
func TestDovecotOpensFiledMboxes(t *testing.T) {
	d := newDovecot(t)
	for i, f := range corpusMboxes(t) {
		name := fmt.Sprintf("filed%d", i)
		in := filepath.Join(t.TempDir(), "in.mbox")
		if err := os.WriteFile(in, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := runTool(d.dir, nil, nil, mfilterBin, "file", "--maildir", d.dir, "--default", name, in); err != nil {
			t.Fatalf("%s: mfilter file: %v", f.name, err)
		}
		want := len(splitterSplit(t, f.data, false))
		if want == 0 {
			continue
		}
		os.Chmod(filepath.Join(d.dir, name), 0o666)
		n, err := d.count(name)
		if err != nil {
			t.Errorf("%s filed by mfilter: %v", f.name, err)
			continue
		}
		if n != want {
			t.Errorf("%s: mfilter filed %d messages, Dovecot reads %d", f.name, want, n)
		}
	}
	msgs := []string{
		"From -\nFrom: a@example.com\nSubject: 1\n\nbody\n",
		"From 1844347792267117879@xxx\nFrom: b@example.com\nSubject: 2\n\nFrom here\n",
		"From - \r\nFrom: c@example.com\r\nSubject: 3\r\n\r\nbody\r\n",
		"From daemon@example.org Sun, 11 Nov 2007 06:58:35 +0200\nSubject: 4\n\nbody\n",
	}
	for _, m := range msgs {
		if _, err := runTool(d.dir, []byte(m), nil, mfilterBin, "deliver", "--maildir", d.dir, "--default", "delivered"); err != nil {
			t.Fatalf("mfilter deliver: %v", err)
		}
	}
	os.Chmod(filepath.Join(d.dir, "delivered"), 0o666)
	got, err := d.messages("delivered")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(msgs) {
		t.Fatalf("delivered %d messages, Dovecot reads %d: %q", len(msgs), len(got), got)
	}
	for i, m := range msgs {
		if want := strings.ReplaceAll(m[strings.IndexByte(m, '\n')+1:], "\nFrom here", "\n>From here"); dovecotText(got[i], false) != dovecotText(want, false) {
			t.Errorf("message %d: Dovecot reads %q, want %q", i, got[i], want)
		}
	}
}

// dovecotRefuses are the corpus mboxes Dovecot will not open ("Mailbox
// isn't a valid mbox file": it wants a From_ line with a date at the
// very start), which mfilter splits; the man page lists them.
var dovecotRefuses = map[string]string{
	"mbox/git-t5100/sample.mbox":                  "blank lines before the first From_ line",
	"mbox/mimekit/content-length.mbox":            "starts with \"From - \" (no date)",
	"mbox/mimekit/issue1189-gmail-takeout.mbox":   "starts with a one-word postmark (Gmail Takeout)",
	"mbox/mimekit/simple.mbox":                    "starts with \"From - \" (no date)",
	"mbox/mimekit/unmunged-bom.mbox":              "starts with a byte order mark and \"From -\"",
	"mbox/perl-email-folder/testmbox-mac-cr.mbox": "bare CR line ends: no line starts with From_",
	"mbox/sisimai/size-1.mbox":                    "a single space, no From_ line",
	"mbox/sisimai/size-2.mbox":                    "\"22\", no From_ line",
}

// dovecotText is a Splitter message as Dovecot shows its text: without
// the From_ line, and both without the line ends at the end (Dovecot
// takes the last one for the separator's). The '>' the Splitter puts
// before a body "From " line that does not start a message (as formail
// does; procmail and Dovecot escape them when they write) is taken off
// both.
func dovecotText(s string, dropFrom bool) string {
	if dropFrom {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
	}
	s = strings.ReplaceAll(s, "\r\n", "\n") // doveadm shows LF
	s = perByteUTF8(s)                      // as JSON gives a byte that is no UTF-8
	// Dovecot hides the status fields of an mbox header, which it keeps
	// for itself, and Content-Length.
	if i := strings.Index(s, "\n\n"); i >= 0 {
		s = dovecotHidden.ReplaceAllString(s[:i+1], "") + s[i+1:]
	}
	s = strings.TrimRight(s, "\n")
	return unquoteFrom.ReplaceAllString(s, "${1}From ")
}

var dovecotHidden = regexp.MustCompile(`(?im)^(status|x-status|x-keywords|x-uid|x-imap|x-imapbase|content-length):.*\n`)

var unquoteFrom = regexp.MustCompile(`(?m)^(>*)>From `)

// TestDovecotSplitsAsMfilter: every corpus mbox that Dovecot opens splits
// into as many messages in mfilter as in Dovecot, with the same text;
// the ones it refuses are listed in dovecotRefuses.
func TestDovecotSplitsAsMfilter(t *testing.T) {
	d := newDovecot(t)
	for i, f := range corpusMboxes(t) {
		name := fmt.Sprintf("raw%d", i)
		d.put(t, name, f.data)
		S := splitterSplit(t, f.data, false)
		dv, err := d.messages(name)
		if reason, ok := dovecotRefuses[f.name]; ok {
			if err == nil {
				t.Errorf("%s: Dovecot opens it now (%d messages); it was listed as refused: %s", f.name, len(dv), reason)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", f.name, err)
			continue
		}
		if len(dv) != len(S) {
			t.Errorf("%s: Dovecot reads %d messages, mfilter %d", f.name, len(dv), len(S))
			continue
		}
		for k := range S {
			got, want := dovecotText(string(S[k].data), true), dovecotText(dv[k], false)
			if got != want {
				t.Errorf("%s: message %d: %s", f.name, k, firstDiff([]byte(want), []byte(got)))
			}
		}
		t.Logf("%s: %d messages, as Dovecot reads them", f.name, len(S))
	}
}

// perByteUTF8 replaces each byte that is not part of UTF-8 with U+FFFD.
func perByteUTF8(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteString("\uFFFD")
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}
