// Package sshtest starts a real OpenSSH sshd on 127.0.0.1 for tests, with
// a throwaway host key, a client key in authorized_keys, and a known_hosts
// file that trusts the host key. Tests that need sshd fail (never skip)
// when it cannot start: test.sh installs openssh-server.
package sshtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Server is a running sshd.
type Server struct {
	Dir        string // scratch directory of this server
	Addr       string // 127.0.0.1:port
	Port       int
	User       string // the user tests log in as (the one running them)
	ClientKey  string // private key file authorized to log in
	KnownHosts string // known_hosts holding this server's host key
	HostKeyPub string // the host key, "type base64"
	cmd        *exec.Cmd
	logs       *bytes.Buffer
}

// Options tune the server.
type Options struct {
	// PATH for sessions (sshd SetEnv), to hide tools such as zstd.
	Path string
	// HostKeyTypes to generate (default ed25519).
	HostKeyTypes []string
	// User to log in as instead of the one running the tests (sshd runs
	// as root, and so must the tests then): see NoMailUser.
	User string
}

// Start starts sshd and stops it when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	sshd := "/usr/sbin/sshd"
	if _, err := os.Stat(sshd); err != nil {
		p, lerr := exec.LookPath("sshd")
		if lerr != nil {
			t.Fatalf("sshd is not installed (test.sh installs openssh-server): %v", err)
		}
		sshd = p
	}
	dir := t.TempDir()
	if opts.User != "" {
		// The user reads authorized_keys: t.TempDir's parent is 0700.
		var err error
		if dir, err = os.MkdirTemp("", "sshtest-"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Dir: dir, User: u.Username, logs: &bytes.Buffer{}}
	if opts.User != "" {
		s.User = opts.User
	}
	types := opts.HostKeyTypes
	if len(types) == 0 {
		types = []string{"ed25519"}
	}
	var hostKeys []string
	for _, typ := range types {
		k := filepath.Join(dir, "host_"+typ)
		Keygen(t, typ, k)
		hostKeys = append(hostKeys, k)
	}
	pub, err := os.ReadFile(hostKeys[0] + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(pub))
	s.HostKeyPub = f[0] + " " + f[1]
	s.ClientKey = filepath.Join(dir, "client_ed25519")
	Keygen(t, "ed25519", s.ClientKey)
	cpub, err := os.ReadFile(s.ClientKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	// sshd reads authorized_keys as the user who logs in.
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), cpub, 0o644); err != nil {
		t.Fatal(err)
	}
	// sshd's privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatalf("sshd needs /run/sshd: %v", err)
	}
	for attempt := 0; ; attempt++ {
		s.Port = freePort(t)
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
		cfg := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
PidFile %s/sshd.pid
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
`, s.Port, dir, dir, s.User)
		for _, k := range hostKeys {
			cfg += "HostKey " + k + "\n"
		}
		if opts.Path != "" {
			cfg += "SetEnv PATH=" + opts.Path + "\n"
		}
		cfgPath := filepath.Join(dir, "sshd_config")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		s.logs.Reset()
		s.cmd = exec.Command(sshd, "-D", "-e", "-f", cfgPath)
		s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
		if err := s.cmd.Start(); err != nil {
			t.Fatalf("start sshd: %v", err)
		}
		if s.waitReady(5 * time.Second) {
			break
		}
		s.cmd.Process.Kill()
		s.cmd.Wait()
		if attempt >= 3 {
			t.Fatalf("sshd did not start: %s", s.logs.String())
		}
	}
	t.Cleanup(s.Stop)
	s.KnownHosts = filepath.Join(dir, "known_hosts")
	line := fmt.Sprintf("[127.0.0.1]:%d %s\n", s.Port, s.HostKeyPub)
	if err := os.WriteFile(s.KnownHosts, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *Server) waitReady(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if s.cmd.ProcessState != nil {
			return false
		}
		c, err := net.DialTimeout("tcp", s.Addr, 200*time.Millisecond)
		if err == nil {
			buf := make([]byte, 4)
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, rerr := c.Read(buf)
			c.Close()
			if rerr == nil && string(buf) == "SSH-" {
				return true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// Stop kills sshd (existing sessions end too).
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
}

// Logs is what sshd printed.
func (s *Server) Logs() string { return s.logs.String() }

// Keygen makes an unencrypted key pair at path (and path.pub).
func Keygen(t testing.TB, typ, path string) {
	t.Helper()
	args := []string{"-q", "-t", typ, "-N", "", "-C", "mfilter-test", "-f", path}
	if typ == "rsa" {
		args = append(args, "-b", "2048")
	}
	if out, err := exec.Command("ssh-keygen", args...).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Agent starts ssh-agent holding key, and returns its socket.
func Agent(t testing.TB, key string) string {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	cmd := exec.Command("ssh-agent", "-D", "-a", sock)
	if err := cmd.Start(); err != nil {
		t.Fatalf("ssh-agent: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	add := exec.Command("ssh-add", key)
	add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add: %v: %s", err, out)
	}
	return sock
}
