// Package mtatest runs a private Postfix for tests: its own configuration
// directory, queue and maildirs in a scratch directory, and one smtpd
// listening on 127.0.0.2 (a loopback address nothing else in the tests
// uses) on a port of its own. It delivers mail for example.test into
// maildirs the test reads. Tests that need it fail (never skip) when
// Postfix is missing: test.sh installs it.
package mtatest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Domain is the domain the test Postfix delivers for.
const Domain = "example.test"

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
`
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
