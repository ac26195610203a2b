package sshtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Restart kills sshd and every connection it serves (as a crash or a
// reboot of the server would end them: a plain restart of sshd keeps
// running sessions), then starts it again on the same port with the same
// keys and configuration.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.RestartWith(t, "")
}

// RestartWith is Restart with extra sshd_config lines (such as
// "AllowTcpForwarding no"); they come first, so that they win over the
// test server's own lines. Another RestartWith replaces them.
func (s *Server) RestartWith(t testing.TB, extra string) {
	t.Helper()
	cfgPath := filepath.Join(s.Dir, "sshd_config")
	basePath := cfgPath + ".base"
	base, err := os.ReadFile(basePath)
	if err != nil {
		base, err = os.ReadFile(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(basePath, base, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if extra != "" && !strings.HasSuffix(extra, "\n") {
		extra += "\n"
	}
	if err := os.WriteFile(cfgPath, append([]byte(extra), base...), 0o600); err != nil {
		t.Fatal(err)
	}
	s.kill()
	sshd := s.cmd.Path
	for attempt := 0; ; attempt++ {
		s.logs.Reset()
		s.cmd = exec.Command(sshd, "-D", "-e", "-f", cfgPath)
		s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
		if err := s.cmd.Start(); err != nil {
			t.Fatalf("restart sshd: %v", err)
		}
		if s.waitReady(5 * time.Second) {
			return
		}
		s.cmd.Process.Kill()
		s.cmd.Wait()
		if attempt >= 3 {
			t.Fatalf("sshd did not restart on port %d: %s", s.Port, s.logs.String())
		}
		// The port may still be held by a dying process.
		time.Sleep(200 * time.Millisecond)
	}
}

// kill ends the listening sshd and all of its descendants (the
// per-connection processes), so that every connection drops.
func (s *Server) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	pids := descendants(s.cmd.Process.Pid)
	s.cmd.Process.Kill()
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGKILL)
	}
	s.cmd.Wait()
}

// descendants lists the processes below pid, from /proc.
func descendants(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parens.
		s := string(data)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		ppid, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		children[ppid] = append(children[ppid], p)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}
