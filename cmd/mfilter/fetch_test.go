package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mfilter/mfilter/internal/maillock"
	"github.com/mfilter/mfilter/internal/mailtest"
	"github.com/mfilter/mfilter/internal/sshtest"
)

// fetchEnv is one test's world: a real sshd, a spool directory on "the
// server" (this machine), a mail directory and a state directory.
type fetchEnv struct {
	t        *testing.T
	srv      *sshtest.Server
	dir      string
	spool    string
	mail     string
	state    string
	rules    string
	extraEnv []string
}

func newFetchEnv(t *testing.T, srv *sshtest.Server, rules string) *fetchEnv {
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	e := &fetchEnv{t: t, srv: srv, dir: dir, spool: filepath.Join(dir, "spool", "alice"),
		mail: filepath.Join(dir, "Mail"), state: filepath.Join(dir, "state"), rules: filepath.Join(dir, "rules.yaml")}
	os.MkdirAll(filepath.Dir(e.spool), 0o755)
	if rules == "" {
		rules = "default: inbox/\n"
	}
	if err := os.WriteFile(e.rules, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// args are the fetch-and-file arguments reaching the server at addr.
func (e *fetchEnv) args(addr string, extra ...string) []string {
	host, port, _ := net.SplitHostPort(addr)
	a := []string{"fetch-and-file", "--rules", e.rules, "--maildir", e.mail, "--state-dir", e.state,
		"--spool", e.spool, "--user", e.srv.User, "--identity", e.srv.ClientKey,
		"--host", host, "--port", port, "--known-hosts", e.srv.KnownHosts, "--timeout", "10s"}
	return append(a, extra...)
}

func (e *fetchEnv) cmd(args ...string) *exec.Cmd {
	cmd := exec.Command(mfilterBin, args...)
	cmd.Env = append(os.Environ(), "HOME="+e.dir, "SSH_AUTH_SOCK=")
	cmd.Env = append(cmd.Env, e.extraEnv...)
	return cmd
}

func (e *fetchEnv) run(args ...string) (int, string) {
	cmd := e.cmd(args...)
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

// appendSpool adds messages to the spool under its dotlock, as an MTA
// would.
func (e *fetchEnv) appendSpool(msgs [][]byte) {
	lock, err := maillock.AcquireDotlock(e.t.Context(), e.spool+".lock", maillock.LockOptions{Timeout: 30 * time.Second})
	if err != nil {
		e.t.Fatal(err)
	}
	defer lock.Release()
	f, err := os.OpenFile(e.spool, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, m := range msgs {
		f.Write(m)
	}
	f.Close()
}

// leftovers lists claimed files still on the server.
func (e *fetchEnv) leftovers() []string {
	m, _ := filepath.Glob(e.spool + ".mfilter-*")
	return m
}

// spoolMessages returns n distinct corpus messages (mailtest.Messages).
func spoolMessages(t *testing.T, n int, tag string) [][]byte { return mailtest.Messages(t, n, tag) }

// filedIDs returns the ids of the messages under mail (mailtest.FiledIDs).
func filedIDs(t *testing.T, mail string) []string { return mailtest.FiledIDs(t, mail) }

// wantIDs are the ids of msgs as filed (mailtest.WantIDs).
func wantIDs(msgs [][]byte) []string { return mailtest.WantIDs(msgs) }

func checkFiled(t *testing.T, e *fetchEnv, all [][]byte) {
	t.Helper()
	got, want := filedIDs(t, e.mail), wantIDs(all)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("filed %d messages, the spool had %d; first difference: %s", len(got), len(want), firstMismatch(got, want))
	}
	if l := e.leftovers(); len(l) > 0 {
		t.Fatalf("claimed files left on the server: %v", l)
	}
	if st, err := os.Stat(e.spool); err == nil && st.Size() > 0 {
		t.Fatalf("the spool still holds %d bytes", st.Size())
	}
	if j, _ := filepath.Glob(filepath.Join(e.state, "*.journal")); len(j) > 0 {
		t.Fatalf("journals left: %v", j)
	}
}

func firstMismatch(got, want []string) string { return mailtest.Mismatch(got, want) }

func TestFetchBasic(t *testing.T) {
	srv := sshtest.Start(t, sshtest.Options{})
	rules := `default: inbox/
rules:
  - if: {headers: '^X-Test-ID: basic-[0-9]*[05]$'}
    then: {folder: fives.mbox}
  - if: {headers: '^List-Id:'}
    then: {folder: lists/}
`
	e := newFetchEnv(t, srv, rules)
	msgs := spoolMessages(t, 200, "basic")
	e.appendSpool(msgs)
	code, out := e.run(e.args(srv.Addr, "-v")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	if !strings.Contains(out, "filed 200 messages") || !strings.Contains(out, "with zstd") {
		t.Errorf("summary: %s", out)
	}
	checkFiled(t, e, msgs)
	for _, f := range []string{"inbox/new", "lists/new", "fives.mbox"} {
		if _, err := os.Stat(filepath.Join(e.mail, f)); err != nil {
			t.Errorf("the rules did not file into %s: %v", f, err)
		}
	}
	// No mail: exit 0, nothing changes.
	if code, out := e.run(e.args(srv.Addr)...); code != 0 {
		t.Fatalf("an empty spool: exit %d: %s", code, out)
	}
	checkFiled(t, e, msgs)
}

func TestFetchGzipWhenNoZstd(t *testing.T) {
	bin := t.TempDir()
	for _, tool := range []string{"sh", "tail", "wc", "date", "stat", "ln", "mv", "rm", "sleep", "dirname", "gzip"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatal(err)
		}
		os.Symlink(p, filepath.Join(bin, tool))
	}
	srv := sshtest.Start(t, sshtest.Options{Path: bin})
	e := newFetchEnv(t, srv, "")
	msgs := spoolMessages(t, 50, "gz")
	e.appendSpool(msgs)
	code, out := e.run(e.args(srv.Addr, "-v")...)
	if code != 0 || !strings.Contains(out, "with gzip") {
		t.Fatalf("exit %d, want gzip: %s", code, out)
	}
	checkFiled(t, e, msgs)
}

func TestFetchHostKeys(t *testing.T) {
	srv := sshtest.Start(t, sshtest.Options{})
	e := newFetchEnv(t, srv, "")
	msgs := spoolMessages(t, 5, "hk")
	e.appendSpool(msgs)
	empty := filepath.Join(e.dir, "empty_known_hosts")
	os.WriteFile(empty, nil, 0o600)
	args := e.args(srv.Addr)
	for i := range args {
		if args[i] == srv.KnownHosts {
			args[i] = empty
		}
	}
	code, out := e.run(args...)
	line := fmt.Sprintf("[127.0.0.1]:%d %s", srv.Port, srv.HostKeyPub)
	if code != 78 || !strings.Contains(out, line) {
		t.Fatalf("unknown host: exit %d (want 78), and the message must give the line to add %q:\n%s", code, line, out)
	}
	if _, err := os.Stat(e.spool); err != nil {
		t.Fatal("a refused host must not touch the spool")
	}
	// A changed key: known_hosts holds another key for this host.
	other := filepath.Join(e.dir, "otherkey")
	sshtest.Keygen(t, "ed25519", other)
	pub, _ := os.ReadFile(other + ".pub")
	f := strings.Fields(string(pub))
	os.WriteFile(empty, []byte(fmt.Sprintf("[127.0.0.1]:%d %s %s\n", srv.Port, f[0], f[1])), 0o600)
	code, out = e.run(append(args, "--accept-new-host-key")...)
	if code != 78 || !strings.Contains(out, "CHANGED") {
		t.Fatalf("changed host key: exit %d (want 78):\n%s", code, out)
	}
	// accept-new on an unknown host records the key and fetches.
	os.WriteFile(empty, nil, 0o600)
	if code, out := e.run(append(args, "--accept-new-host-key")...); code != 0 {
		t.Fatalf("accept-new: exit %d: %s", code, out)
	}
	checkFiled(t, e, msgs)
}

// TestFetchHostKeysShown: an unknown host is refused with every key the
// server offers shown as ssh-keygen -lf shows it, and the known_hosts
// line for its ed25519 key, the type the documentation's ssh-keyscan -t
// ed25519 records; a known_hosts file that cannot be used is a
// configuration error naming FILE:LINE.
func TestFetchHostKeysShown(t *testing.T) {
	srv := sshtest.Start(t, sshtest.Options{HostKeyTypes: []string{"rsa", "ecdsa", "ed25519"}})
	e := newFetchEnv(t, srv, "")
	e.appendSpool(spoolMessages(t, 2, "hks"))
	kh := filepath.Join(e.dir, "kh")
	os.WriteFile(kh, nil, 0o600)
	args := e.args(srv.Addr)
	for i := range args {
		if args[i] == srv.KnownHosts {
			args[i] = kh
		}
	}
	code, out := e.run(args...)
	if code != 78 {
		t.Fatalf("unknown host: exit %d, want 78:\n%s", code, out)
	}
	for _, typ := range []string{"rsa", "ecdsa", "ed25519"} {
		lf, err := exec.Command("ssh-keygen", "-lf", filepath.Join(srv.Dir, "host_"+typ+".pub")).Output()
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(lf)) // bits SHA256:... comment (TYPE)
		want := f[0] + " " + f[1] + " " + f[len(f)-1]
		if !strings.Contains(out, want) {
			t.Errorf("the message does not show the %s key as ssh-keygen -lf does (%q):\n%s", typ, want, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(srv.Dir, "host_ed25519.pub"))
	if err != nil {
		t.Fatal(err)
	}
	pf := strings.Fields(string(pub))
	line := fmt.Sprintf("[127.0.0.1]:%d %s %s\n", srv.Port, pf[0], pf[1])
	if !strings.Contains(out, line) {
		t.Errorf("the message does not give the ed25519 line %q:\n%s", line, out)
	}
	// The line given is the one that lets the fetch through.
	os.WriteFile(kh, []byte(line), 0o600)
	if code, out := e.run(args...); code != 0 {
		t.Fatalf("with the line given: exit %d:\n%s", code, out)
	}

	// A known_hosts file with nothing usable in it: exit 78, FILE:LINE.
	os.WriteFile(kh, []byte("# comment\n[127.0.0.1]:1 ssh-ed25519 not-base64!\n"), 0o600)
	code, out = e.run(args...)
	if code != 78 || !strings.Contains(out, kh+":2") {
		t.Fatalf("malformed known_hosts: exit %d (want 78), and the message must name %s:2:\n%s", code, kh, out)
	}
	// A bad line among good ones is skipped, as OpenSSH does, with a note.
	os.WriteFile(kh, []byte("garbage\n"+line), 0o600)
	e.appendSpool(spoolMessages(t, 1, "hks2"))
	code, out = e.run(args...)
	if code != 0 || !strings.Contains(out, kh+":1") {
		t.Fatalf("a bad line among good ones: exit %d (want 0), and a note naming %s:1:\n%s", code, kh, out)
	}
}

func TestFetchAgentAndSSHConfig(t *testing.T) {
	srv := sshtest.Start(t, sshtest.Options{})
	e := newFetchEnv(t, srv, "")
	msgs := spoolMessages(t, 10, "agent")
	e.appendSpool(msgs)
	sock := sshtest.Agent(t, srv.ClientKey)
	cfg := filepath.Join(e.dir, "ssh_config")
	os.WriteFile(cfg, []byte(fmt.Sprintf("Host mailserver\n  HostName 127.0.0.1\n  Port %d\n  User %s\n  UserKnownHostsFile %s\n", srv.Port, srv.User, srv.KnownHosts)), 0o600)
	e.extraEnv = []string{"SSH_AUTH_SOCK=" + sock, "MFILTER_SSH_CONFIG=" + cfg}
	// Only the alias: host, port, user and known_hosts come from the
	// ssh config, the key from the agent.
	code, out := e.run("fetch-and-file", "--rules", e.rules, "--maildir", e.mail, "--state-dir", e.state, "--spool", e.spool, "--host", "mailserver")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	checkFiled(t, e, msgs)
}

// TestFetchWhileMailArrives appends to the spool, under its dotlock, while
// fetches run: every message is filed, in this run or the next.
func TestFetchWhileMailArrives(t *testing.T) {
	srv := sshtest.Start(t, sshtest.Options{})
	e := newFetchEnv(t, srv, "")
	var all [][]byte
	var mu sync.Mutex
	first := spoolMessages(t, 300, "first")
	e.appendSpool(first)
	all = append(all, first...)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			m := spoolMessages(t, 3, fmt.Sprintf("late%d", i))
			e.appendSpool(m)
			mu.Lock()
			all = append(all, m...)
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	for i := 0; i < 5; i++ {
		if code, out := e.run(e.args(srv.Addr)...); code != 0 {
			t.Fatalf("run %d: exit %d: %s", i, code, out)
		}
	}
	close(stop)
	<-done
	if code, out := e.run(e.args(srv.Addr)...); code != 0 {
		t.Fatalf("last run: exit %d: %s", code, out)
	}
	checkFiled(t, e, all)
}

// cutProxy forwards TCP to an sshd and cuts every connection after limit
// bytes (limit < 0: never) in one direction: from the server (what a
// fetch downloads), or with upload from the client (what a send
// uploads).
type cutProxy struct {
	ln     net.Listener
	target string
	upload bool
	limit  atomic.Int64
	wire   atomic.Int64 // bytes the last connection forwarded in the cut direction
}

// newCutProxy starts a proxy in front of srv that cuts what the server
// sends; newUploadCutter one that cuts what the client sends.
func newCutProxy(t *testing.T, srv *sshtest.Server) *cutProxy {
	return startCutProxy(t, srv, false)
}

func newUploadCutter(t *testing.T, srv *sshtest.Server) *cutProxy {
	return startCutProxy(t, srv, true)
}

func startCutProxy(t *testing.T, srv *sshtest.Server, upload bool) *cutProxy {
	p := startCutter(t, srv.Addr, upload)
	// The proxy's address needs its own known_hosts line.
	kh, err := os.ReadFile(srv.KnownHosts)
	if err != nil {
		t.Fatal(err)
	}
	line := fmt.Sprintf("[127.0.0.1]:%d %s\n", p.port(), srv.HostKeyPub)
	os.WriteFile(srv.KnownHosts, append(kh, line...), 0o600)
	return p
}

func (p *cutProxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

func (p *cutProxy) serve(c net.Conn) {
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	limit := p.limit.Load()
	from, to := s, c // the direction that is cut
	if p.upload {
		from, to = c, s
	}
	go func() { io.Copy(from, to); from.Close() }()
	var n int64
	buf := make([]byte, 32<<10)
	for {
		k, err := from.Read(buf)
		if k > 0 {
			if limit >= 0 && n+int64(k) > limit {
				to.Write(buf[:limit-n])
				break
			}
			if _, werr := to.Write(buf[:k]); werr != nil {
				break
			}
			n += int64(k)
		}
		if err != nil {
			break
		}
	}
	p.wire.Store(n)
	c.Close()
	s.Close()
}

// TestFetchSurvivesCuts cuts the connection at 20 random byte offsets,
// each time with new mail in the spool; after a last clean run every
// message is filed exactly once and nothing is left on the server.
func TestFetchSurvivesCuts(t *testing.T) {
	srv := sshtest.Start(t, sshtest.Options{})
	e := newFetchEnv(t, srv, "default: inbox/\nrules:\n  - if: {headers: '^X-Test-ID: .*[37]$'}\n    then: {folder: some.mbox}\n")
	proxy := newCutProxy(t, srv)
	rng := rand.New(rand.NewPCG(1, 2))
	var all [][]byte
	// Measure a whole run's server bytes to pick cuts inside it.
	m := spoolMessages(t, 400, "probe")
	e.appendSpool(m)
	all = append(all, m...)
	if code, out := e.run(e.args(proxy.ln.Addr().String(), "--compress", "none")...); code != 0 {
		t.Fatalf("probe run: %d %s", code, out)
	}
	// The proxy counts a connection's bytes when both of its sides
	// have closed, which may come just after mfilter exits.
	full := proxy.wire.Load()
	for deadline := time.Now().Add(10 * time.Second); full == 0 && time.Now().Before(deadline); full = proxy.wire.Load() {
		time.Sleep(10 * time.Millisecond)
	}
	if full == 0 {
		t.Fatal("the probe run sent nothing through the proxy")
	}
	fails := 0
	for i := 0; i < 20; i++ {
		m := spoolMessages(t, 400, fmt.Sprintf("cut%d", i))
		e.appendSpool(m)
		all = append(all, m...)
		proxy.limit.Store(rng.Int64N(full))
		code, _ := e.run(e.args(proxy.ln.Addr().String(), "--compress", "none")...)
		if code != 0 && code != 75 {
			t.Fatalf("cut %d: exit %d, want 0 or 75", i, code)
		}
		if code == 75 {
			fails++
		}
	}
	proxy.limit.Store(-1)
	if code, out := e.run(e.args(proxy.ln.Addr().String())...); code != 0 {
		t.Fatalf("clean run: %d %s", code, out)
	}
	if fails < 10 {
		t.Errorf("only %d of 20 cut runs failed: the cuts did not land in the transfers", fails)
	}
	checkFiled(t, e, all)
}

// TestFetchSurvivesKills kills mfilter with SIGKILL at 20 random moments
// of a fetch, with new mail each time; after a last clean run every
// message is filed exactly once and nothing is left on the server.
func TestFetchSurvivesKills(t *testing.T) {
	srv := sshtest.Start(t, sshtest.Options{})
	e := newFetchEnv(t, srv, "default: inbox/\nrules:\n  - if: {headers: '^X-Test-ID: .*[19]$'}\n    then: {folder: some.mbox}\n  - if: {headers: '^X-Test-ID: .*8$'}\n    then: {folder: mh/.}\n")
	rng := rand.New(rand.NewPCG(3, 4))
	var all [][]byte
	m := spoolMessages(t, 600, "probe")
	e.appendSpool(m)
	all = append(all, m...)
	start := time.Now()
	if code, out := e.run(e.args(srv.Addr)...); code != 0 {
		t.Fatalf("probe run: %d %s", code, out)
	}
	full := time.Since(start)
	killed := 0
	for i := 0; i < 20; i++ {
		m := spoolMessages(t, 600, fmt.Sprintf("kill%d", i))
		e.appendSpool(m)
		all = append(all, m...)
		cmd := e.cmd(e.args(srv.Addr)...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.Int64N(int64(full))))
		if cmd.Process.Signal(syscall.SIGKILL) == nil {
			killed++
		}
		cmd.Wait()
	}
	if code, out := e.run(e.args(srv.Addr)...); code != 0 {
		t.Fatalf("clean run: %d %s", code, out)
	}
	if killed < 10 {
		t.Errorf("only %d of 20 runs were killed while running", killed)
	}
	checkFiled(t, e, all)
}

// TestFetchFullTargetKeepsSpool: a folder that cannot be written (file
// size limit) leaves the claimed file on the server, exits 75, and the
// next run files everything.
func TestFetchFullTargetKeepsSpool(t *testing.T) {
	srv := sshtest.Start(t, sshtest.Options{})
	e := newFetchEnv(t, srv, "default: all.mbox\n")
	msgs := spoolMessages(t, 100, "full")
	e.appendSpool(msgs)
	cmd := e.cmd(e.args(srv.Addr)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// prlimit(1) sets RLIMIT_FSIZE for the child alone: its mbox writes
	// fail with EFBIG after 20 kB.
	cmd.Path, _ = exec.LookPath("prlimit")
	cmd.Args = append([]string{"prlimit", "--fsize=20000", mfilterBin}, cmd.Args[1:]...)
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 75 {
		t.Fatalf("a full target: %v, want exit 75: %s", err, out.String())
	}
	if len(e.leftovers()) != 1 {
		t.Fatalf("the claimed file must stay on the server: %v", e.leftovers())
	}
	if st, err := os.Stat(filepath.Join(e.mail, "all.mbox")); err != nil || st.Size() > 20000 {
		t.Fatalf("mbox: %v", err)
	}
	if code, out := e.run(e.args(srv.Addr)...); code != 0 {
		t.Fatalf("second run: %d %s", code, out)
	}
	checkFiled(t, e, msgs)
}
