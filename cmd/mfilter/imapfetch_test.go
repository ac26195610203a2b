package main

// fetch-and-file from IMAP, against a private Dovecot: kills, cut
// connections, --watch, TLS with a test CA, a list of sources.

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mfilter/mfilter/internal/mailfmt"
	"github.com/mfilter/mfilter/internal/mtatest"
)

// imapEnv is a private Dovecot with user alice, and here a mail
// directory, a state directory and rules whose fetch: section names the
// server.
type imapEnv struct {
	t     *testing.T
	d     *mtatest.Dovecot
	dir   string
	mail  string
	state string
	rules string
	seq   int
}

const imapRules = `default: inbox/
rules:
  - if: {headers: '^X-Test-ID: .*[37]$'}
    then: {folder: some.mbox}
  - if: {headers: '^X-Test-ID: .*8$'}
    then: {folder: mh/.}
`

func newIMAPEnv(t *testing.T, extra string) *imapEnv {
	d := mtatest.StartDovecot(t, mtatest.DovecotOptions{Users: []string{"alice"}, Extra: extra})
	dir := t.TempDir()
	e := &imapEnv{t: t, d: d, dir: dir, mail: filepath.Join(dir, "Mail"), state: filepath.Join(dir, "state"), rules: filepath.Join(dir, "rules.yaml")}
	e.setFetch(e.source("imap://"+d.IMAPAddr+"/INBOX", "tls: none"))
	return e
}

// source is one imap: item of a fetch: list.
func (e *imapEnv) source(url string, more ...string) string {
	s := fmt.Sprintf("  - imap: %s\n    user: alice\n    password-command: [echo, %s]\n", url, mtatest.Password("alice"))
	for _, m := range more {
		s += "    " + m + "\n"
	}
	return s
}

func (e *imapEnv) setFetch(items ...string) {
	rules := "fetch:\n" + strings.Join(items, "") + imapRules
	if err := os.WriteFile(e.rules, []byte(rules), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *imapEnv) args(extra ...string) []string {
	return append([]string{"fetch-and-file", "--rules", e.rules, "--maildir", e.mail, "--state-dir", e.state, "--timeout", "10s"}, extra...)
}

func (e *imapEnv) cmd(args ...string) *exec.Cmd {
	cmd := exec.Command(mfilterBin, args...)
	cmd.Env = append(os.Environ(), "HOME="+e.dir)
	return cmd
}

func (e *imapEnv) run(args ...string) (int, string) {
	out, err := e.cmd(args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return 0, string(out)
}

// deliver puts n corpus messages into alice's INBOX as maildir files
// (Dovecot numbers them at its next look) and returns them in mbox form.
func (e *imapEnv) deliver(n int, tag string) [][]byte {
	md := e.d.Maildir("alice")
	for _, sub := range []string{"", "cur", "new", "tmp"} {
		os.MkdirAll(filepath.Join(md, sub), 0o700)
		os.Chown(filepath.Join(md, sub), e.d.UID, e.d.GID)
	}
	msgs := spoolMessages(e.t, n, tag)
	for i, m := range msgs {
		// IMAP cannot carry a NUL or a bare CR: Dovecot rewrites them
		// on the wire (NUL as 0x80), so the corpus goes without.
		m = bytes.ReplaceAll(bytes.ReplaceAll(m, []byte("\r"), nil), []byte("\x00"), nil)
		msgs[i] = m
		e.seq++
		p := filepath.Join(md, "new", fmt.Sprintf("1%09d.M%dP1.test", e.seq, e.seq))
		// As the splitter hands it on (a blank line after the
		// header), which is how an mbox folder reads back, and
		// without a From_ line, as in a maildir.
		split, err := mailfmt.NewSplitter(bytes.NewReader(m), mailfmt.SplitOptions{}).Next()
		if err != nil {
			e.t.Fatal(err)
		}
		body := split[bytes.IndexByte(split, '\n')+1:]
		if err := os.WriteFile(p, body, 0o600); err != nil {
			e.t.Fatal(err)
		}
		os.Chown(p, e.d.UID, e.d.GID)
	}
	return msgs
}

// check: every message filed exactly once, the INBOX empty, no journal.
func (e *imapEnv) check(all [][]byte) {
	e.t.Helper()
	got, want := filedIDs(e.t, e.mail), wantIDs(all)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		e.t.Fatalf("filed %d messages, the server had %d; first difference: %s", len(got), len(want), firstMismatch(got, want))
	}
	if n := e.d.Count(e.t, "alice", "INBOX"); n != 0 {
		e.t.Fatalf("INBOX still holds %d messages", n)
	}
	if j, _ := filepath.Glob(filepath.Join(e.state, "*.journal")); len(j) > 0 {
		e.t.Fatalf("journals left: %v", j)
	}
}

func TestIMAPFetch(t *testing.T) {
	e := newIMAPEnv(t, "")
	msgs := e.deliver(300, "imap")
	code, out := e.run(e.args("-v")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	if !strings.Contains(out, "filed 300 messages") {
		t.Errorf("no report of 300 messages filed: %s", out)
	}
	e.check(msgs)
	if code, out := e.run(e.args()...); code != 0 {
		t.Fatalf("second run: exit %d: %s", code, out)
	}
	e.check(msgs)
}

// TestIMAPSurvivesKills kills mfilter with SIGKILL at random moments of
// a fetch, with new mail each time; after a last clean run every message
// is filed exactly once and the INBOX is empty.
func TestIMAPSurvivesKills(t *testing.T) {
	e := newIMAPEnv(t, "")
	rng := rand.New(rand.NewPCG(5, 6))
	all := e.deliver(600, "probe")
	start := time.Now()
	if code, out := e.run(e.args()...); code != 0 {
		t.Fatalf("probe run: %d %s", code, out)
	}
	full := time.Since(start)
	killed := 0
	for i := 0; i < 12 || (killed < 8 && i < 40); i++ {
		all = append(all, e.deliver(600, fmt.Sprintf("kill%d", i))...)
		cmd := e.cmd(e.args()...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.Int64N(int64(full))))
		if cmd.Process.Signal(syscall.SIGKILL) == nil {
			killed++
		}
		cmd.Wait()
	}
	if code, out := e.run(e.args()...); code != 0 {
		t.Fatalf("clean run: %d %s", code, out)
	}
	t.Logf("%d runs killed; a whole run took %s", killed, full)
	if killed < 8 {
		t.Errorf("only %d runs were killed while running", killed)
	}
	e.check(all)
}

// startTCPCutter is a cutProxy in front of any TCP server.
func startTCPCutter(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	p.limit.Store(-1)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

// TestIMAPSurvivesCuts cuts the connection at random byte offsets of
// what the server sends, each time with new mail.
func TestIMAPSurvivesCuts(t *testing.T) {
	e := newIMAPEnv(t, "")
	proxy := startTCPCutter(t, e.d.IMAPAddr)
	e.setFetch(e.source("imap://"+proxy.ln.Addr().String()+"/INBOX", "tls: none"))
	rng := rand.New(rand.NewPCG(7, 8))
	all := e.deliver(400, "probe")
	if code, out := e.run(e.args()...); code != 0 {
		t.Fatalf("probe run: %d %s", code, out)
	}
	full := proxy.wire.Load()
	for deadline := time.Now().Add(10 * time.Second); full == 0 && time.Now().Before(deadline); full = proxy.wire.Load() {
		time.Sleep(10 * time.Millisecond)
	}
	if full == 0 {
		t.Fatal("the probe run sent nothing through the proxy")
	}
	fails := 0
	for i := 0; i < 15; i++ {
		all = append(all, e.deliver(400, fmt.Sprintf("cut%d", i))...)
		proxy.limit.Store(rng.Int64N(full))
		code, out := e.run(e.args()...)
		if code != 0 && code != 75 {
			t.Fatalf("cut %d: exit %d, want 0 or 75: %s", i, code, out)
		}
		if code == 75 {
			fails++
		}
	}
	proxy.limit.Store(-1)
	if code, out := e.run(e.args()...); code != 0 {
		t.Fatalf("clean run: %d %s", code, out)
	}
	if fails < 8 {
		t.Errorf("only %d of 15 cut runs failed: the cuts did not land in the transfers", fails)
	}
	e.check(all)
}

// TestIMAPWatch: with --watch, a message delivered after the start is
// filed within 3 seconds, and SIGTERM ends the run cleanly.
func TestIMAPWatch(t *testing.T) {
	e := newIMAPEnv(t, "")
	all := e.deliver(5, "before")
	cmd := e.cmd(e.args("--watch")...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 100)
	var log strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	waitLine := func(want string, within time.Duration) {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("mfilter ended before %q:\n%s", want, log.String())
				}
				log.WriteString(l + "\n")
				if strings.Contains(l, want) {
					return
				}
			case <-deadline:
				t.Fatalf("no %q within %s:\n%s", want, within, log.String())
			}
		}
	}
	waitLine("filed 5 messages", 10*time.Second)
	time.Sleep(300 * time.Millisecond) // into IDLE
	for i := 0; i < 3; i++ {
		m := spoolMessages(t, 1, fmt.Sprintf("late%d", i))[0]
		all = append(all, m)
		start := time.Now()
		e.d.Save(t, "alice", m[bytes.IndexByte(m, '\n')+1:])
		waitLine("filed 1 messages", 3*time.Second)
		t.Logf("message %d filed %s after its delivery", i, time.Since(start).Round(time.Millisecond))
	}
	cmd.Process.Signal(syscall.SIGTERM)
	waitLine("stopped watching", 5*time.Second)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v\n%s", err, log.String())
	}
	e.check(all)
}
