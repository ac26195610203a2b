package main

// fetch-and-file from IMAP, against a private Dovecot: kills, cut
// connections, --watch, TLS with a test CA, a list of sources.

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	cryptorand "crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mfilter/mfilter/internal/mailfmt"
	"github.com/mfilter/mfilter/internal/mtatest"
	"github.com/mfilter/mfilter/internal/sshtest"
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
		// Written in tmp/ and owned by the mail user before it
		// appears in new/, as a delivery does: a server session
		// running meanwhile must not see a file it cannot read.
		tmp := filepath.Join(md, "tmp", filepath.Base(p))
		if err := os.WriteFile(tmp, body, 0o600); err != nil {
			e.t.Fatal(err)
		}
		os.Chown(tmp, e.d.UID, e.d.GID)
		if err := os.Rename(tmp, p); err != nil {
			e.t.Fatal(err)
		}
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
	killed, midway := 0, 0
	for i := 0; i < 12 || ((killed < 8 || midway < 4) && i < 40); i++ {
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
		// A journal left behind: killed in the middle of filing.
		if j, _ := filepath.Glob(filepath.Join(e.state, "*.journal")); len(j) > 0 {
			midway++
		}
	}
	if code, out := e.run(e.args()...); code != 0 {
		t.Fatalf("clean run: %d %s", code, out)
	}
	t.Logf("%d runs killed, %d of them while filing; a whole run took %s", killed, midway, full)
	if killed < 8 || midway < 4 {
		t.Errorf("only %d runs were killed while running, %d while filing", killed, midway)
	}
	e.check(all)
}

// startTCPCutter is a cutProxy in front of any TCP server.
func startTCPCutter(t *testing.T, target string) *cutProxy {
	return startCutter(t, target, false)
}

// startCutter is a cutProxy in front of target that cuts what the server
// sends, or with upload what the client sends.
func startCutter(t *testing.T, target string, upload bool) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, upload: upload}
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
	// A compressed link (the server offers COMPRESS=DEFLATE): a cut then
	// lands inside a DEFLATE stream, the harder case.
	e := newIMAPEnv(t, zlibConf)
	proxy := startTCPCutter(t, e.d.IMAPAddr)
	e.setFetch(e.source("imap://"+proxy.ln.Addr().String()+"/INBOX", "tls: none"))
	rng := rand.New(rand.NewPCG(7, 8))
	all := e.deliver(400, "probe")
	if code, out := e.run(e.args("-v")...); code != 0 || !strings.Contains(out, "COMPRESS=DEFLATE") {
		t.Fatalf("probe run (compressed?): %d %s", code, out)
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

// watcher is a running mfilter fetch-and-file --watch and its log.
type watcher struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan string
	log   strings.Builder
}

func startWatch(t *testing.T, e *imapEnv) *watcher {
	w := &watcher{t: t, cmd: e.cmd(e.args("--watch")...), lines: make(chan string, 100)}
	stderr, err := w.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.cmd.Process.Kill() })
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			w.lines <- sc.Text()
		}
		close(w.lines)
	}()
	return w
}

// waitLine waits for a log line holding want.
func (w *watcher) waitLine(want string, within time.Duration) {
	w.t.Helper()
	deadline := time.After(within)
	for {
		select {
		case l, ok := <-w.lines:
			if !ok {
				w.t.Fatalf("mfilter ended before %q:\n%s", want, w.log.String())
			}
			w.log.WriteString(l + "\n")
			if strings.Contains(l, want) {
				return
			}
		case <-deadline:
			w.t.Fatalf("no %q within %s:\n%s", want, within, w.log.String())
		}
	}
}

// stop sends SIGTERM and expects a clean end.
func (w *watcher) stop() {
	w.t.Helper()
	w.cmd.Process.Signal(syscall.SIGTERM)
	w.waitLine("stopped watching", 5*time.Second)
	if err := w.cmd.Wait(); err != nil {
		w.t.Fatalf("after SIGTERM: %v\n%s", err, w.log.String())
	}
}

// TestIMAPWatch: with --watch, a message delivered after the start is
// filed within 3 seconds, and SIGTERM ends the run cleanly.
func TestIMAPWatch(t *testing.T) {
	e := newIMAPEnv(t, "")
	all := e.deliver(5, "before")
	w := startWatch(t, e)
	w.waitLine("filed 5 messages", 10*time.Second)
	time.Sleep(300 * time.Millisecond) // into IDLE
	for i := 0; i < 3; i++ {
		m := spoolMessages(t, 1, fmt.Sprintf("late%d", i))[0]
		all = append(all, m)
		start := time.Now()
		e.d.Save(t, "alice", m[bytes.IndexByte(m, '\n')+1:])
		w.waitLine("filed 1 messages", 3*time.Second)
		t.Logf("message %d filed %s after its delivery", i, time.Since(start).Round(time.Millisecond))
	}
	w.stop()
	e.check(all)
}

// testCA makes a CA and a server certificate for 127.0.0.3 signed by it,
// in dir: ca.pem, cert.pem, key.pem.
func testCA(t *testing.T, dir string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), cryptorand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mfilter test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(cryptorand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), cryptorand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: mtatest.DovecotAddr},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IPAddresses: []net.IP{net.ParseIP(mtatest.DovecotAddr)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(cryptorand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	for name, b := range map[string]*pem.Block{
		"ca.pem":   {Type: "CERTIFICATE", Bytes: caDER},
		"cert.pem": {Type: "CERTIFICATE", Bytes: der},
		"key.pem":  {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestIMAPTLS: STARTTLS verified against the ca: file files the mail;
// without it (the system's roots do not know the test CA) the run fails
// with 75 and touches nothing.
func TestIMAPTLS(t *testing.T) {
	certs := t.TempDir()
	os.Chmod(certs, 0o755)
	testCA(t, certs)
	e := newIMAPEnv(t, fmt.Sprintf("ssl = required\nssl_cert = <%[1]s/cert.pem\nssl_key = <%[1]s/key.pem\n", certs))
	msgs := e.deliver(20, "tls")
	url := "imap://" + e.d.IMAPAddr + "/INBOX"
	e.setFetch(e.source(url))
	code, out := e.run(e.args()...)
	if code != 75 || !strings.Contains(out, "certificate") {
		t.Fatalf("an unknown CA: exit %d, want 75 and a word on the certificate: %s", code, out)
	}
	if n := e.d.Count(t, "alice", "INBOX"); n != 20 {
		t.Fatalf("INBOX holds %d after a refused certificate, want 20", n)
	}
	e.setFetch(e.source(url, "ca: "+filepath.Join(certs, "ca.pem")))
	if code, out := e.run(e.args()...); code != 0 {
		t.Fatalf("with ca: exit %d: %s", code, out)
	}
	e.check(msgs)
}

// TestIMAPAndSpoolSources: a fetch: list of an IMAP folder and an SSH
// spool, end to end. Each run files both; a source that fails (a
// refused login) does not stop the other, and the run exits with its
// status (77).
func TestIMAPAndSpoolSources(t *testing.T) {
	e := newIMAPEnv(t, "")
	srv := sshtest.Start(t, sshtest.Options{})
	spool := filepath.Join(e.dir, "spool", "alice")
	os.MkdirAll(filepath.Dir(spool), 0o755)
	sshItem := fmt.Sprintf("  - host: 127.0.0.1\n    port: %d\n    user: %s\n    identity: %s\n    known-hosts: %s\n    spool: %s\n",
		srv.Port, srv.User, srv.ClientKey, srv.KnownHosts, spool)
	imapURL := "imap://" + e.d.IMAPAddr + "/INBOX"
	e.setFetch(e.source(imapURL, "tls: none"), sshItem)
	fe := &fetchEnv{t: t, srv: srv, spool: spool}
	all := e.deliver(120, "mixed-imap")
	m := spoolMessages(t, 150, "mixed-spool")
	fe.appendSpool(m)
	all = append(all, m...)
	if code, out := e.run(e.args("-v")...); code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	e.check(all)
	checkSpoolEmpty(t, fe)

	// The IMAP login refused: the spool is still filed, the IMAP mail
	// stays on the server, and the run says so with 77.
	e.setFetch(strings.Replace(e.source(imapURL, "tls: none"), mtatest.Password("alice"), "wrong", 1), sshItem)
	late := e.deliver(10, "mixed-imap-late")
	m = spoolMessages(t, 20, "mixed-spool-late")
	fe.appendSpool(m)
	all = append(all, m...)
	code, out := e.run(e.args()...)
	if code != 77 || !strings.Contains(out, "refused the login") {
		t.Fatalf("a refused IMAP login: exit %d, want 77 and the refusal: %s", code, out)
	}
	checkSpoolEmpty(t, fe)
	if n := e.d.Count(t, "alice", "INBOX"); n != 10 {
		t.Fatalf("INBOX holds %d after a refused login, want 10", n)
	}
	e.setFetch(e.source(imapURL, "tls: none"), sshItem)
	if code, out := e.run(e.args()...); code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	e.check(append(all, late...))
}

// checkSpoolEmpty fails unless the spool is empty and no claim is left.
func checkSpoolEmpty(t *testing.T, fe *fetchEnv) {
	t.Helper()
	if st, err := os.Stat(fe.spool); err == nil && st.Size() != 0 {
		t.Fatalf("the spool still holds %d bytes", st.Size())
	}
	if l := fe.leftovers(); len(l) > 0 {
		t.Fatalf("claims left on the server: %v", l)
	}
}

// killerProxy relays TCP connections to target and can cut every open
// one at once, as a NAT box or a server restart does.
type killerProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	count  int // connections accepted
}

func startKillerProxy(t *testing.T, target string) *killerProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &killerProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.kill() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.count++
			p.mu.Unlock()
			go func() { io.Copy(s, c); s.Close() }()
			go func() { io.Copy(c, s); c.Close() }()
		}
	}()
	return p
}

// kill closes every connection open now and returns how many there were.
func (p *killerProxy) kill() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	n := len(p.conns) / 2
	p.conns = nil
	return n
}

func (p *killerProxy) accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count
}

// TestIMAPWatchReconnects: the connection of --watch is cut while it
// idles; a message delivered while it is down, and one delivered after
// it is back, are both filed, each once.
func TestIMAPWatchReconnects(t *testing.T) {
	e := newIMAPEnv(t, "")
	proxy := startKillerProxy(t, e.d.IMAPAddr)
	e.setFetch(e.source("imap://"+proxy.ln.Addr().String()+"/INBOX", "tls: none"))
	all := e.deliver(5, "before")
	w := startWatch(t, e)
	w.waitLine("filed 5 messages", 10*time.Second)
	for round := 0; round < 2; round++ {
		time.Sleep(300 * time.Millisecond) // into IDLE
		if n := proxy.kill(); n != 1 {
			t.Fatalf("round %d: %d connections open, want 1", round, n)
		}
		w.waitLine("connecting again", 5*time.Second)
		m := spoolMessages(t, 1, fmt.Sprintf("down%d", round))[0]
		all = append(all, m)
		e.d.Save(t, "alice", m[bytes.IndexByte(m, '\n')+1:])
		w.waitLine("filed 1 messages", 10*time.Second)
		time.Sleep(300 * time.Millisecond)
		m = spoolMessages(t, 1, fmt.Sprintf("up%d", round))[0]
		all = append(all, m)
		e.d.Save(t, "alice", m[bytes.IndexByte(m, '\n')+1:])
		w.waitLine("filed 1 messages", 3*time.Second)
	}
	if n := proxy.accepted(); n != 3 {
		t.Errorf("%d connections made, want 3 (one, and one after each cut)", n)
	}
	w.stop()
	e.check(all)
}
