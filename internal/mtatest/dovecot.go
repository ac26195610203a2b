package mtatest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// DovecotAddr is the loopback address the private Dovecot listens on:
// one that Postfix (127.0.0.2) and the other tests do not use.
const DovecotAddr = "127.0.0.3"

// Dovecot is a running private Dovecot: its own configuration file,
// base_dir (sockets, pid file) and state_dir in a scratch directory,
// POP3 and IMAP without TLS on DovecotAddr, plaintext logins allowed,
// and users from a passwd-file whose mail lives under the scratch
// directory, owned by user nobody (65534).
type Dovecot struct {
	Dir      string // scratch directory: dovecot.conf, passwd, run/, state/, home/
	Conf     string // Dir/dovecot.conf, for dovecot -c and doveadm -c
	POP3Addr string // 127.0.0.3:port
	IMAPAddr string // 127.0.0.3:port
	POP3Port int
	IMAPPort int
	UID, GID int // the owner of every user's mail
	cmd      *exec.Cmd
	out      bytes.Buffer
}

// DovecotOptions tune the instance.
type DovecotOptions struct {
	// Users are the login names; each one's password is Password(name)
	// and its home is Home(name).
	Users []string
	// MailLocation is dovecot's mail_location, which may use ~ (the
	// user's home) and %u; the default is "maildir:~/Maildir". A
	// mbox setup is, for example, "mbox:~/mail:INBOX=~/mbox".
	MailLocation string
	// Extra is appended to dovecot.conf.
	Extra string
}

// Password is the password of a user of the private Dovecot.
func Password(user string) string { return "pw-" + user }

// StartDovecot starts Dovecot (LaunchDovecot), and stops it and removes
// its directory when the test ends.
func StartDovecot(t testing.TB, opts DovecotOptions) *Dovecot {
	t.Helper()
	d, err := LaunchDovecot(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	return d
}

// LaunchDovecot starts Dovecot and waits until it accepts POP3 and IMAP
// connections; Stop ends it. It must run as root (Dovecot's master gives
// its processes to the users dovecot, dovenull and the mail owner). The
// benchmark (bench/cmd/mbench imap) runs one outside of go test.
func LaunchDovecot(opts DovecotOptions) (*Dovecot, error) {
	bin, err := dovecotBinary()
	if err != nil {
		return nil, err
	}
	// Reachable by dovecot, dovenull and nobody: not under t.TempDir.
	dir, err := os.MkdirTemp("", "mfilter-dovecot-")
	if err != nil {
		return nil, err
	}
	d := &Dovecot{Dir: dir, Conf: filepath.Join(dir, "dovecot.conf"), UID: 65534, GID: 65534}
	if err := d.makeDirs(opts.Users); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	loc := opts.MailLocation
	if loc == "" {
		loc = "maildir:~/Maildir"
	}
	for attempt := 0; ; attempt++ {
		if err := d.start(bin, loc, opts.Extra); err != nil {
			d.Stop()
			return nil, err
		}
		if d.waitReady(10 * time.Second) {
			return d, nil
		}
		d.stopMaster()
		if attempt >= 3 {
			err := fmt.Errorf("dovecot did not start: %s\n%s", d.out.String(), d.Log())
			d.Stop()
			return nil, err
		}
	}
}

// dovecotBinary checks that Dovecot, its servers and its users are there.
func dovecotBinary() (string, error) {
	bin, err := exec.LookPath("dovecot")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/dovecot"); serr != nil {
			return "", fmt.Errorf("dovecot is not installed (test.sh installs dovecot-core, dovecot-pop3d, dovecot-imapd): %v", err)
		}
		bin = "/usr/sbin/dovecot"
	}
	if _, err := exec.LookPath("doveadm"); err != nil {
		return "", fmt.Errorf("doveadm is not installed (test.sh installs dovecot-core): %v", err)
	}
	for _, m := range []string{"pop3", "imap"} {
		if _, err := os.Stat("/usr/lib/dovecot/" + m); err != nil {
			return "", fmt.Errorf("dovecot's %s server is missing (test.sh installs dovecot-pop3d and dovecot-imapd): %v", m, err)
		}
	}
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("the private Dovecot runs its master as root: run as root")
	}
	for _, u := range []string{"dovecot", "dovenull"} {
		if _, err := user.Lookup(u); err != nil {
			return "", fmt.Errorf("dovecot's user %s is missing (dovecot-core creates it): %v", u, err)
		}
	}
	return bin, nil
}

// makeDirs makes run/, state/, home/, each user's home and the passwd
// file.
func (d *Dovecot) makeDirs(users []string) error {
	if err := os.Chmod(d.Dir, 0o755); err != nil {
		return err
	}
	for _, sub := range []string{"run", "state", "home"} {
		if err := os.Mkdir(filepath.Join(d.Dir, sub), 0o755); err != nil {
			return err
		}
	}
	var pw strings.Builder
	for _, u := range users {
		home := d.Home(u)
		if err := os.Mkdir(home, 0o700); err != nil {
			return err
		}
		if err := os.Chown(home, d.UID, d.GID); err != nil {
			return err
		}
		fmt.Fprintf(&pw, "%s:{PLAIN}%s:%d:%d::%s::\n", u, Password(u), d.UID, d.GID, home)
	}
	return os.WriteFile(filepath.Join(d.Dir, "passwd"), []byte(pw.String()), 0o644)
}

// start writes the configuration with fresh ports and starts the master.
func (d *Dovecot) start(bin, loc, extra string) error {
	var err error
	if d.POP3Port, err = freePortOn(DovecotAddr); err != nil {
		return err
	}
	if d.IMAPPort, err = freePortOn(DovecotAddr); err != nil {
		return err
	}
	d.POP3Addr = net.JoinHostPort(DovecotAddr, strconv.Itoa(d.POP3Port))
	d.IMAPAddr = net.JoinHostPort(DovecotAddr, strconv.Itoa(d.IMAPPort))
	conf := fmt.Sprintf(dovecotConf, d.Dir, DovecotAddr, d.POP3Port, d.IMAPPort, loc, filepath.Base(d.Dir)) + extra
	if err := os.WriteFile(d.Conf, []byte(conf), 0o644); err != nil {
		return err
	}
	d.out.Reset()
	d.cmd = exec.Command(bin, "-F", "-c", d.Conf)
	d.cmd.Stdout, d.cmd.Stderr = &d.out, &d.out
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("start dovecot: %v", err)
	}
	go d.cmd.Wait()
	return nil
}

const dovecotConf = `# private Dovecot of a test (internal/mtatest)
instance_name = mfilter-test-%[6]s
base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
protocols = pop3 imap
listen = %[2]s
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = %[5]s
pop3_uidl_format = %%08Xu%%08Xv
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%u %[1]s/passwd
}
userdb {
  driver = passwd-file
  args = username_format=%%u %[1]s/passwd
}
service pop3-login {
  inet_listener pop3 {
    port = %[3]d
  }
  inet_listener pop3s {
    port = 0
  }
}
service imap-login {
  inet_listener imap {
    port = %[4]d
  }
  inet_listener imaps {
    port = 0
  }
}
`

func (d *Dovecot) waitReady(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for _, a := range []struct{ addr, greeting string }{{d.POP3Addr, "+OK"}, {d.IMAPAddr, "* OK"}} {
		for {
			if time.Now().After(deadline) {
				return false
			}
			c, err := net.DialTimeout("tcp", a.addr, 200*time.Millisecond)
			if err == nil {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, len(a.greeting))
				_, rerr := io.ReadFull(c, buf)
				c.Close()
				if rerr == nil && string(buf) == a.greeting {
					break
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return true
}

// Stop stops the master and removes the instance's directory.
func (d *Dovecot) Stop() {
	d.stopMaster()
	os.RemoveAll(d.Dir)
}

func (d *Dovecot) stopMaster() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	// SIGTERM: the master stops its children and exits.
	d.cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if d.cmd.Process.Signal(syscall.Signal(0)) != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.cmd.Process.Kill()
}

// Home is a user's home directory.
func (d *Dovecot) Home(user string) string { return filepath.Join(d.Dir, "home", user) }

// Maildir is a user's INBOX with the default mail_location.
func (d *Dovecot) Maildir(user string) string { return filepath.Join(d.Home(user), "Maildir") }

// Log is Dovecot's log so far.
func (d *Dovecot) Log() string {
	data, _ := os.ReadFile(filepath.Join(d.Dir, "dovecot.log"))
	return d.out.String() + string(data)
}

// Doveadm runs doveadm with this instance's configuration and returns
// its standard output; standard error goes into the error.
func (d *Dovecot) Doveadm(args ...string) ([]byte, error) {
	cmd := exec.Command("doveadm", append([]string{"-c", d.Conf}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("doveadm %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// Save puts each message into the user's INBOX (doveadm save), as a
// delivery would.
func (d *Dovecot) Save(t testing.TB, user string, msgs ...[]byte) {
	t.Helper()
	for _, m := range msgs {
		cmd := exec.Command("doveadm", "-c", d.Conf, "save", "-u", user, "-m", "INBOX")
		cmd.Stdin = bytes.NewReader(m)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("doveadm save -u %s: %v\n%s", user, err, out)
		}
	}
}

var statusMessages = regexp.MustCompile(`messages=(\d+)`)

// Count is the number of messages in a user's mailbox (doveadm mailbox
// status), such as "INBOX".
func (d *Dovecot) Count(t testing.TB, user, mailbox string) int {
	t.Helper()
	out, err := d.Doveadm("mailbox", "status", "-u", user, "messages", mailbox)
	if err != nil {
		t.Fatal(err)
	}
	m := statusMessages.FindSubmatch(out)
	if m == nil {
		t.Fatalf("doveadm mailbox status -u %s messages %s: %q", user, mailbox, out)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// Fetch returns one field (doveadm-fetch(1): "text" for the whole
// message, "body", "hdr", "hdr.message-id", "guid", ...) of each
// message in a user's mailbox, in the mailbox's order. Further doveadm
// options, such as -o mail_location=..., come first in opts. It runs
// doveadm once per message: its output of several messages has no
// separator that a message cannot contain.
func (d *Dovecot) Fetch(t testing.TB, user, mailbox, field string, opts ...string) [][]byte {
	t.Helper()
	var msgs [][]byte
	for _, uid := range d.UIDs(t, user, mailbox, opts...) {
		args := append(append([]string{}, opts...), "-f", "pager", "fetch", "-u", user, field, "mailbox", mailbox, "uid", uid)
		out, err := d.Doveadm(args...)
		if err != nil {
			t.Fatal(err)
		}
		head := []byte(field + ":\n")
		if !bytes.HasPrefix(out, head) {
			t.Fatalf("doveadm fetch %s of uid %s: %.200q", field, uid, out)
		}
		msgs = append(msgs, out[len(head):])
	}
	return msgs
}

// UIDs are the IMAP UIDs of the messages in a user's mailbox, in order
// (doveadm search ALL).
func (d *Dovecot) UIDs(t testing.TB, user, mailbox string, opts ...string) []string {
	t.Helper()
	args := append(append([]string{}, opts...), "search", "-u", user, "mailbox", mailbox, "ALL")
	out, err := d.Doveadm(args...)
	if err != nil {
		t.Fatal(err)
	}
	var uids []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			uids = append(uids, f[1])
		}
	}
	return uids
}

func freePortOn(addr string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return 0, fmt.Errorf("listen on %s: %v", addr, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
