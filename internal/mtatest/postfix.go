// Package mtatest runs a private Postfix for tests: its own configuration
// directory, queue and maildirs in a scratch directory, and one smtpd
// listening on 127.0.0.2 (a loopback address nothing else in the tests
// uses) on a port of its own. It delivers mail for example.test into
// maildirs the test reads. With Options.MailboxCommand it also delivers
// mail for LocalDomain to a real local user (see MDAUser) through
// local(8) and that command, as Postfix does for an MDA. Tests that need
// it fail (never skip) when Postfix is missing: test.sh installs it.
//
// dovecot.go runs a private Dovecot (POP3, IMAP, doveadm) the same way.
package mtatest

import (
	"bytes"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Domain is the domain the test Postfix delivers for into its own
// virtual maildirs.
const Domain = "example.test"

// LocalDomain is the domain whose mail goes to local(8) and
// Options.MailboxCommand: user@mta.test for a real unix user.
const LocalDomain = "mta.test"

// Postfix is a running private Postfix.
type Postfix struct {
	Dir  string // configuration directory (main.cf, master.cf, maps)
	Addr string // 127.0.0.2:port of its smtpd
	Port int
	cmd  *exec.Cmd
	t    testing.TB
}

// Options tune the instance.
type Options struct {
	// Users are the local parts that have a mailbox (user@example.test).
	Users []string
	// Access maps recipients to an access(5) action, such as
	// "450 4.2.0 try later" or "550 5.1.1 no such user".
	Access map[string]string
	// HeaderChecks are header_checks(5) regexp lines, such as
	// "/^Subject: refuse me/ REJECT no thanks".
	HeaderChecks []string
	// TLSCert and TLSKey are PEM files: smtpd then offers STARTTLS.
	TLSCert, TLSKey string
	// MailboxCommand, when set, is main.cf's mailbox_command: mail for
	// a real unix user at LocalDomain (such as MDAUser's) goes through
	// local(8), which runs the command as that user with HOME set to
	// the user's home and the message (with a From_ line) on stdin, and
	// defers the message when it exits 75. An exit status other than 0
	// or a temporary one bounces the message.
	MailboxCommand string
}

// Start starts Postfix and stops it when the test ends.
func Start(t testing.TB, opts Options) *Postfix {
	t.Helper()
	daemonDir := "/usr/lib/postfix/sbin"
	if out, err := exec.Command("postconf", "-dh", "daemon_directory").Output(); err == nil {
		daemonDir = strings.TrimSpace(string(out))
	} else if _, err := exec.LookPath("postconf"); err != nil {
		t.Fatalf("postfix is not installed (test.sh installs it): %v", err)
	}
	master := filepath.Join(daemonDir, "master")
	if _, err := os.Stat(master); err != nil {
		t.Fatalf("postfix is not installed (test.sh installs it): %v", err)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("the private Postfix runs its master as root (it gives its daemons to the postfix user): run the tests as root")
	}
	pf, err := user.Lookup("postfix")
	if err != nil {
		t.Fatalf("postfix user: %v", err)
	}
	pfUID, _ := strconv.Atoi(pf.Uid)
	postdrop, err := user.LookupGroup("postdrop")
	if err != nil {
		t.Fatalf("postdrop group: %v", err)
	}
	pdGID, _ := strconv.Atoi(postdrop.Gid)
	// Postfix's daemons run as postfix and nobody: the directory must be
	// reachable by them, which t.TempDir's parent is not.
	dir, err := os.MkdirTemp("", "mfilter-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := &Postfix{Dir: dir, t: t}
	t.Cleanup(func() {
		p.stop()
		os.RemoveAll(dir)
	})
	mkdir := func(path string, mode os.FileMode, uid, gid int) {
		if err := os.MkdirAll(path, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(path, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	queue := filepath.Join(dir, "queue")
	mkdir(queue, 0o755, 0, 0)
	mkdir(filepath.Join(queue, "pid"), 0o755, 0, 0)
	for _, d := range []string{"active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private", "saved", "trace"} {
		mkdir(filepath.Join(queue, d), 0o700, pfUID, 0)
	}
	mkdir(filepath.Join(queue, "maildrop"), 0o730, pfUID, pdGID)
	mkdir(filepath.Join(queue, "public"), 0o710, pfUID, pdGID)
	mkdir(filepath.Join(dir, "data"), 0o700, pfUID, 0)
	mkdir(filepath.Join(dir, "mail"), 0o755, 65534, 65534)

	var vmail strings.Builder
	for _, u := range opts.Users {
		fmt.Fprintf(&vmail, "%s@%s %s/%s/\n", u, Domain, Domain, u)
	}
	p.write("vmailbox", vmail.String())
	p.SetAccess(opts.Access)
	p.write("header_checks", strings.Join(opts.HeaderChecks, "\n")+"\n")

	for attempt := 0; ; attempt++ {
		p.Port = freePort(t)
		p.Addr = net.JoinHostPort("127.0.0.2", strconv.Itoa(p.Port))
		p.write("main.cf", p.mainCf(opts))
		p.write("master.cf", p.masterCf(opts))
		p.cmd = exec.Command(master, "-c", dir, "-s")
		var out bytes.Buffer
		p.cmd.Stdout, p.cmd.Stderr = &out, &out
		if err := p.cmd.Start(); err != nil {
			t.Fatalf("start postfix master: %v", err)
		}
		if p.waitReady(10 * time.Second) {
			break
		}
		p.stop()
		if attempt >= 3 {
			t.Fatalf("postfix did not start: %s\n%s", out.String(), p.Log())
		}
	}
	return p
}

func (p *Postfix) mainCf(opts Options) string {
	d := p.Dir
	cf := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = mta.test
mydomain = test
myorigin = mta.test
mydestination =
mynetworks = 127.0.0.0/8
relay_domains =
virtual_mailbox_domains = %[2]s
virtual_mailbox_base = %[1]s/mail
virtual_mailbox_maps = texthash:%[1]s/vmailbox
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 100
virtual_mailbox_limit = 0
message_size_limit = 104857600
mailbox_size_limit = 0
smtpd_recipient_restrictions = check_recipient_access texthash:%[1]s/access, permit_mynetworks, reject_unauth_destination
header_checks = regexp:%[1]s/header_checks
local_header_rewrite_clients =
smtpd_peername_lookup = no
smtputf8_enable = yes
alias_maps =
alias_database =
biff = no
maillog_file = %[1]s/maillog
maillog_file_prefixes = %[1]s
`, d, Domain)
	if opts.MailboxCommand != "" {
		// local_recipient_maps: only real unix users; no aliases, no
		// .forward surprises beyond the user's own home.
		cf = strings.Replace(cf, "\nmydestination =\n", "\nmydestination = "+LocalDomain+"\n", 1)
		cf += fmt.Sprintf(`local_recipient_maps = proxy:unix:passwd.byname
local_transport = local
mailbox_command = %s
`, opts.MailboxCommand)
	}
	if opts.TLSCert != "" {
		cf += fmt.Sprintf(`smtpd_tls_security_level = may
smtpd_tls_cert_file = %s
smtpd_tls_key_file = %s
smtpd_tls_received_header = yes
`, opts.TLSCert, opts.TLSKey)
	}
	return cf
}

func (p *Postfix) masterCf(opts Options) string {
	// max_use=1: a new smtpd for each connection, so that it reads the
	// access map the test may just have changed.
	cf := fmt.Sprintf("%s inet n - n - - smtpd -o max_use=1\n", p.Addr) + `cleanup   unix  n  -  n  -  0  cleanup
qmgr      unix  n  -  n  1  1  qmgr
rewrite   unix  -  -  n  -  -  trivial-rewrite
bounce    unix  -  -  n  -  0  bounce
defer     unix  -  -  n  -  0  bounce
trace     unix  -  -  n  -  0  bounce
verify    unix  -  -  n  -  1  verify
proxymap  unix  -  -  n  -  -  proxymap
error     unix  -  -  n  -  -  error
retry     unix  -  -  n  -  -  error
discard   unix  -  -  n  -  -  discard
virtual   unix  -  n  n  -  -  virtual
anvil     unix  -  -  n  -  1  anvil
postlog   unix-dgram n  -  n  -  1  postlogd
flush     unix  n  -  n  1000?  0  flush
showq     unix  n  -  n  -  -  showq
pickup    unix  n  -  n  60  1  pickup
`
	if opts.MailboxCommand != "" {
		cf += "local     unix  -  n  n  -  -  local\n"
	}
	if opts.TLSCert != "" {
		cf += "tlsmgr    unix  -  -  n  1000?  1  tlsmgr\n"
	}
	return cf
}

// write writes a configuration file or map dated a minute ago: Postfix
// reads a file again and again while its time is the current second (it
// may be being written), which would cost a second or two per start.
func (p *Postfix) write(name, content string) {
	path := filepath.Join(p.Dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		p.t.Fatal(err)
	}
	past := time.Now().Add(-time.Minute)
	if err := os.Chtimes(path, past, past); err != nil {
		p.t.Fatal(err)
	}
}

// SetAccess replaces the recipient access map; the next connection reads
// it.
func (p *Postfix) SetAccess(access map[string]string) {
	var b strings.Builder
	keys := make([]string, 0, len(access))
	for k := range access {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s %s\n", k, access[k])
	}
	p.write("access", b.String())
}

func (p *Postfix) waitReady(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if p.cmd.ProcessState != nil {
			return false
		}
		c, err := net.DialTimeout("tcp", p.Addr, 200*time.Millisecond)
		if err == nil {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 4)
			_, rerr := c.Read(buf)
			c.Close()
			if rerr == nil && string(buf) == "220 " {
				return true
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func (p *Postfix) stop() {
	if p.cmd != nil && p.cmd.Process != nil && p.cmd.ProcessState == nil {
		// SIGTERM: the master passes it on to its children and exits.
		p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
	}
}

// Log is the Postfix log so far.
func (p *Postfix) Log() string {
	data, _ := os.ReadFile(filepath.Join(p.Dir, "maillog"))
	return string(data)
}

// Connections counts the SMTP connections smtpd took so far (Start's
// probe included).
func (p *Postfix) Connections() int {
	return strings.Count(p.Log(), "]: connect from ")
}

// Maildir is the maildir of user@example.test.
func (p *Postfix) Maildir(user string) string {
	return filepath.Join(p.Dir, "mail", Domain, user)
}

// Messages returns the messages in user's maildir, oldest first.
func (p *Postfix) Messages(user string) [][]byte {
	var files []string
	for _, sub := range []string{"new", "cur"} {
		m, _ := filepath.Glob(filepath.Join(p.Maildir(user), sub, "*"))
		files = append(files, m...)
	}
	type msg struct {
		mod  time.Time
		name string
		data []byte
	}
	var ms []msg
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		ms = append(ms, msg{st.ModTime(), filepath.Base(f), data})
	}
	sort.Slice(ms, func(i, j int) bool {
		if !ms[i].mod.Equal(ms[j].mod) {
			return ms[i].mod.Before(ms[j].mod)
		}
		return ms[i].name < ms[j].name
	})
	out := make([][]byte, len(ms))
	for i, m := range ms {
		out[i] = m.data
	}
	return out
}

// WaitIdle waits until Postfix's queue is empty (everything it took is
// delivered or bounced), so that counting messages is final.
func (p *Postfix) WaitIdle(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		n := 0
		for _, d := range []string{"incoming", "active", "deferred", "maildrop", "hold"} {
			filepath.WalkDir(filepath.Join(p.Dir, "queue", d), func(path string, e os.DirEntry, err error) error {
				if err == nil && !e.IsDir() {
					n++
				}
				return nil
			})
		}
		if n == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("postfix's queue did not empty in 30s:\n%s", p.Log())
}

// WaitMessages waits until user has n messages and returns them.
func (p *Postfix) WaitMessages(t testing.TB, user string, n int) [][]byte {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ms := p.Messages(user)
		if len(ms) >= n {
			p.WaitIdle(t)
			return p.Messages(user)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s@%s has %d message(s), want %d; postfix log:\n%s", user, Domain, len(ms), n, p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StripTrace removes what Postfix put above the message on delivery:
// Return-Path:, X-Original-To:, Delivered-To: and its own Received:
// field. It returns them too.
func StripTrace(m []byte) (trace, rest []byte) {
	p := 0
	seenReceived := false
	for p < len(m) {
		end := bytes.IndexByte(m[p:], '\n')
		if end < 0 {
			break
		}
		line := m[p : p+end+1]
		cont := line[0] == ' ' || line[0] == '\t'
		switch {
		case cont && p > 0:
		case !seenReceived && (bytes.HasPrefix(line, []byte("Return-Path:")) || bytes.HasPrefix(line, []byte("X-Original-To:")) || bytes.HasPrefix(line, []byte("Delivered-To:"))):
		case !seenReceived && bytes.HasPrefix(line, []byte("Received:")):
			seenReceived = true
		default:
			return m[:p], m[p:]
		}
		p += len(line)
	}
	return m[:p], m[p:]
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatalf("listen on 127.0.0.2: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// LogLines returns the lines of the Postfix log that contain every one
// of the given strings (a queue id, "to=<user@mta.test>",
// "status=deferred", ...).
func (p *Postfix) LogLines(match ...string) []string {
	var out []string
	for _, line := range strings.Split(p.Log(), "\n") {
		ok := line != ""
		for _, m := range match {
			if !strings.Contains(line, m) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// Statuses returns the delivery results the log shows for recipient
// (user@domain), oldest first: "sent", "deferred", "bounced",
// "expired".
func (p *Postfix) Statuses(recipient string) []string {
	var out []string
	for _, line := range p.LogLines("to=<"+recipient+">", " status=") {
		s := line[strings.Index(line, " status=")+len(" status="):]
		if i := strings.IndexByte(s, ' '); i >= 0 {
			s = s[:i]
		}
		out = append(out, s)
	}
	return out
}

// WaitLog waits until the log has n lines that contain every one of the
// given strings and returns them.
func (p *Postfix) WaitLog(t testing.TB, n int, match ...string) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		lines := p.LogLines(match...)
		if len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("the postfix log has %d line(s) with %q after 30s, want %d:\n%s", len(lines), match, n, p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Flush asks Postfix to try every deferred message again now
// (postqueue -f), instead of after its backoff of minutes.
func (p *Postfix) Flush(t testing.TB) {
	t.Helper()
	if out, err := exec.Command("postqueue", "-c", p.Dir, "-f").CombinedOutput(); err != nil {
		t.Fatalf("postqueue -f: %v\n%s", err, out)
	}
}

// Send sends msg over SMTP from the envelope sender from to the given
// recipients, and returns the queue id Postfix gave it. msg may have LF
// line ends; they go out as CRLF, with dot-stuffing.
func (p *Postfix) Send(t testing.TB, from string, msg []byte, to ...string) string {
	t.Helper()
	nc, err := net.DialTimeout("tcp", p.Addr, 10*time.Second)
	if err != nil {
		t.Fatalf("smtp dial %s: %v", p.Addr, err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(60 * time.Second))
	c := textproto.NewConn(nc)
	step := func(want int, format string, args ...any) string {
		t.Helper()
		if format != "" {
			if err := c.PrintfLine(format, args...); err != nil {
				t.Fatalf("smtp %s: %v", fmt.Sprintf(format, args...), err)
			}
		}
		_, text, err := c.ReadResponse(want)
		if err != nil {
			t.Fatalf("smtp %q: %v", fmt.Sprintf(format, args...), err)
		}
		return text
	}
	step(220, "")
	step(250, "EHLO client.test")
	step(250, "MAIL FROM:<%s>", from)
	for _, rcpt := range to {
		step(250, "RCPT TO:<%s>", rcpt)
	}
	step(354, "DATA")
	w := c.DotWriter()
	if _, err := w.Write(msg); err != nil {
		t.Fatalf("smtp DATA: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("smtp end of DATA: %v", err)
	}
	text := step(250, "")
	step(221, "QUIT")
	const queued = "queued as "
	i := strings.Index(text, queued)
	if i < 0 {
		t.Fatalf("smtp: no queue id in the reply to DATA: %q", text)
	}
	return strings.Fields(text[i+len(queued):])[0]
}

// MDAUserName is the unix user that MDAUser creates: a system user with
// no password and no login shell, whose home MDAUser points at a
// scratch directory for each test.
const MDAUserName = "mfilter-mda"

// LocalUser is a real unix user for local delivery.
type LocalUser struct {
	Name     string
	UID, GID int
	Home     string // a scratch directory owned by the user, mode 0755
}

var mdaUserMu sync.Mutex

// MDAUser returns the unix user mfilter-mda, creating it (useradd, as a
// system user with its own group, no login shell) when it is missing,
// with its home set (usermod -d) to a new scratch directory that the
// user owns and everyone may search; the home is removed at the end of
// the test. local(8) looks the home up in the passwd database at
// delivery time and sets HOME to it. As the passwd entry is shared,
// the tests that use it run one at a time: a second caller waits until
// the first test ends.
func MDAUser(t testing.TB) *LocalUser {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("creating the local user %s needs root: run the tests as root", MDAUserName)
	}
	mdaUserMu.Lock()
	t.Cleanup(mdaUserMu.Unlock)
	if _, err := user.Lookup(MDAUserName); err != nil {
		out, err := exec.Command("useradd", "--system", "--user-group", "--no-create-home",
			"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
			"--comment", "mfilter tests local delivery", MDAUserName).CombinedOutput()
		if err != nil {
			t.Fatalf("useradd %s: %v\n%s", MDAUserName, err, out)
		}
	}
	home, err := os.MkdirTemp("", "mfilter-mda-home-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	if out, err := exec.Command("usermod", "--home", home, MDAUserName).CombinedOutput(); err != nil {
		t.Fatalf("usermod --home %s %s: %v\n%s", home, MDAUserName, err, out)
	}
	u, err := user.Lookup(MDAUserName)
	if err != nil {
		t.Fatal(err)
	}
	if u.HomeDir != home {
		t.Fatalf("%s's home is %s after usermod, want %s", MDAUserName, u.HomeDir, home)
	}
	lu := &LocalUser{Name: u.Username, Home: home}
	lu.UID, _ = strconv.Atoi(u.Uid)
	lu.GID, _ = strconv.Atoi(u.Gid)
	if err := os.Chmod(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, lu.UID, lu.GID); err != nil {
		t.Fatal(err)
	}
	return lu
}

// Credential is the user's uid and gid for exec.Cmd.SysProcAttr, with no
// supplementary groups.
func (u *LocalUser) Credential() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(u.UID), Gid: uint32(u.GID), Groups: []uint32{}}}
}

// Chown gives path and everything under it to the user.
func (u *LocalUser) Chown(t testing.TB, path string) {
	t.Helper()
	err := filepath.WalkDir(path, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, u.UID, u.GID)
	})
	if err != nil {
		t.Fatal(err)
	}
}
