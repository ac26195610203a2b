package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// fetchServer is a throwaway OpenSSH sshd on 127.0.0.1 for the fetch
// scenario (the same configuration as internal/sshtest, plus the sftp
// subsystem that scp uses since OpenSSH 9.0), with a counting TCP proxy in
// front of it, through which the bytes each side sends over its SSH
// connections are counted.
type fetchServer struct {
	dir        string
	sshdAddr   string // where sshd listens
	sshdPort   int
	addr       string // the counting proxy in front of it
	port       int    // the proxy's port
	user       string
	key        string // private key in authorized_keys
	knownHosts string // trusts the host key at the proxy's address
	sshConfig  string // an empty ssh config, for ssh -F and MFILTER_SSH_CONFIG
	cmd        *exec.Cmd
	logs       bytes.Buffer
	proxy      *countingProxy
}

// loginRC false starts the sessions' shell without the user's rc files:
// bash reads ~/.bashrc for a command run by sshd only when it is the
// first shell (SHLVL < 2), and sshd's SetEnv SHLVL=1 makes it the second.
// A developer's ~/.bashrc (pyenv, say) can cost more than a whole
// transfer; a mail account's does not, and it is not what is measured.
func startFetchServer(sshd, dir string, loginRC bool) (*fetchServer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	u, err := user.Current()
	if err != nil {
		return nil, err
	}
	s := &fetchServer{dir: dir, user: u.Username}
	hostKey := filepath.Join(dir, "host_ed25519")
	s.key = filepath.Join(dir, "client_ed25519")
	for _, k := range []string{hostKey, s.key} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mbench", "-f", k).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ssh-keygen: %v: %s", err, out)
		}
	}
	cpub, err := os.ReadFile(s.key + ".pub")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), cpub, 0o600); err != nil {
		return nil, err
	}
	hpub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, fmt.Errorf("sshd needs /run/sshd: %v", err)
	}
	sftp := "internal-sftp"
	for _, p := range []string{"/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/libexec/sftp-server"} {
		if _, err := os.Stat(p); err == nil {
			sftp = p
			break
		}
	}
	for attempt := 0; ; attempt++ {
		port, err := freeLocalPort()
		if err != nil {
			return nil, err
		}
		s.sshdAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s.sshdPort = port
		cfg := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
PidFile %s/sshd.pid
HostKey %s
AuthorizedKeysFile %s/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowUsers %s
LogLevel ERROR
MaxStartups 100
MaxSessions 100
Subsystem sftp %s
`, port, dir, hostKey, dir, s.user, sftp)
		if !loginRC {
			cfg += "SetEnv SHLVL=1\n"
		}
		cfgPath := filepath.Join(dir, "sshd_config")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			return nil, err
		}
		s.logs.Reset()
		s.cmd = exec.Command(sshd, "-D", "-e", "-f", cfgPath)
		s.cmd.Stdout, s.cmd.Stderr = &s.logs, &s.logs
		if err := s.cmd.Start(); err != nil {
			return nil, fmt.Errorf("start sshd: %v", err)
		}
		exited := make(chan struct{})
		go func() { s.cmd.Wait(); close(exited) }()
		if sshReady(s.sshdAddr, exited, 5*time.Second) {
			break
		}
		s.cmd.Process.Kill()
		<-exited
		if attempt >= 3 {
			return nil, fmt.Errorf("sshd did not start: %s", s.logs.String())
		}
	}
	if s.proxy, err = newCountingProxy(s.sshdAddr); err != nil {
		s.stop()
		return nil, err
	}
	s.addr = s.proxy.ln.Addr().String()
	s.port = s.proxy.ln.Addr().(*net.TCPAddr).Port
	f := strings.Fields(string(hpub))
	s.knownHosts = filepath.Join(dir, "known_hosts")
	kh := fmt.Sprintf("[127.0.0.1]:%d %s %s\n[127.0.0.1]:%d %s %s\n", s.sshdPort, f[0], f[1], s.port, f[0], f[1])
	if err := os.WriteFile(s.knownHosts, []byte(kh), 0o600); err != nil {
		s.stop()
		return nil, err
	}
	s.sshConfig = filepath.Join(dir, "ssh_config")
	if err := os.WriteFile(s.sshConfig, nil, 0o600); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// sshArgs are the OpenSSH client options (for ssh and scp) that reach the
// server at port (sshd's or the proxy's) with the throwaway key, and
// nothing from the user's own configuration.
func (s *fetchServer) sshArgs(port int) []string {
	return []string{"-F", s.sshConfig, "-i", s.key, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
		"-o", "UserKnownHostsFile=" + s.knownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ControlMaster=no", "-o", "ControlPath=none",
		"-o", "User=" + s.user, "-o", "Port=" + strconv.Itoa(port)}
}

func (s *fetchServer) stop() {
	if s.proxy != nil {
		s.proxy.ln.Close()
	}
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
	}
}

func sshReady(addr string, exited chan struct{}, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			buf := make([]byte, 4)
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, rerr := io.ReadFull(c, buf)
			c.Close()
			if rerr == nil && string(buf) == "SSH-" {
				return true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func freeLocalPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// countingProxy relays TCP connections to target and counts the bytes
// that cross them, both ways: exactly what goes over the SSH connections
// (version strings, key exchange, every encrypted packet), nothing of the
// programs at either end. The relaying is io.Copy between two TCP
// connections, which Go does with splice(2): the proxy costs little CPU.
type countingProxy struct {
	ln     net.Listener
	target string
	up     atomic.Int64 // client to server
	down   atomic.Int64 // server to client
	conns  atomic.Int64 // connections accepted
	active atomic.Int64 // connections still open
}

func newCountingProxy(target string) (*countingProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &countingProxy{ln: ln, target: target}
	go p.serve()
	return p, nil
}

func (p *countingProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.conns.Add(1)
		p.active.Add(1)
		go p.relay(c.(*net.TCPConn))
	}
}

func (p *countingProxy) relay(client *net.TCPConn) {
	defer p.active.Add(-1)
	defer client.Close()
	sc, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	server := sc.(*net.TCPConn)
	defer server.Close()
	done := make(chan struct{})
	go func() {
		n, _ := io.Copy(server, client)
		p.up.Add(n)
		server.CloseWrite()
		close(done)
	}()
	n, _ := io.Copy(client, server)
	p.down.Add(n)
	client.CloseWrite()
	<-done
}

// wireCount is what crossed the proxy during one run.
type wireCount struct {
	up, down int64
	conns    int64
}

func (w wireCount) total() int64 { return w.up + w.down }

func (p *countingProxy) snapshot() wireCount {
	return wireCount{up: p.up.Load(), down: p.down.Load(), conns: p.conns.Load()}
}

// since waits until every connection has closed (the counts of a
// connection are added when it ends) and returns the traffic since before.
func (p *countingProxy) since(before wireCount) (wireCount, error) {
	deadline := time.Now().Add(10 * time.Second)
	for p.active.Load() > 0 {
		if time.Now().After(deadline) {
			return wireCount{}, fmt.Errorf("an SSH connection through the counting proxy is still open 10s after its client ended")
		}
		time.Sleep(2 * time.Millisecond)
	}
	now := p.snapshot()
	return wireCount{up: now.up - before.up, down: now.down - before.down, conns: now.conns - before.conns}, nil
}
