package remote

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Settings are what the user asked for; empty fields are filled from the
// ssh config (through `ssh -G`, which evaluates Host, Match and Include
// exactly as OpenSSH does) and then from defaults.
type Settings struct {
	Host             string
	Port             int
	User             string
	Identity         []string
	KnownHosts       []string
	AcceptNewHostKey bool
	Timeout          time.Duration
	// SSHConfigFile is passed to ssh -G as -F (tests); "" for the user's.
	SSHConfigFile string
}

// Resolve turns Settings into an SSHConfig. home is the user's home
// directory and agent the SSH_AUTH_SOCK value.
func Resolve(ctx context.Context, s Settings, home, agentSock string) (SSHConfig, error) {
	if s.Host == "" {
		return SSHConfig{}, fmt.Errorf("no server: set fetch: host: in the rules or give --host")
	}
	g, err := sshG(ctx, s.Host, s.SSHConfigFile)
	if err != nil {
		// No ssh binary, or a config it rejects: go on with what we have.
		g = map[string][]string{}
	}
	first := func(k string) string {
		if v := g[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	host := first("hostname")
	if host == "" {
		host = s.Host
	}
	port := s.Port
	if port == 0 {
		port, _ = strconv.Atoi(first("port"))
	}
	if port == 0 {
		port = 22
	}
	user := s.User
	if user == "" {
		user = first("user")
	}
	if user == "" {
		user = os.Getenv("USER")
	}
	ids := expandAll(s.Identity, home)
	if len(ids) == 0 {
		ids = expandAll(g["identityfile"], home)
	}
	if len(ids) == 0 {
		for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			ids = append(ids, filepath.Join(home, ".ssh", n))
		}
	}
	kh := expandAll(s.KnownHosts, home)
	if len(kh) == 0 {
		for _, v := range g["userknownhostsfile"] {
			kh = append(kh, expandAll(strings.Fields(v), home)...)
		}
		for _, v := range g["globalknownhostsfile"] {
			kh = append(kh, expandAll(strings.Fields(v), home)...)
		}
	}
	if len(kh) == 0 {
		kh = []string{filepath.Join(home, ".ssh", "known_hosts"), "/etc/ssh/ssh_known_hosts"}
	}
	accept := s.AcceptNewHostKey || first("stricthostkeychecking") == "accept-new"
	timeout := s.Timeout
	if timeout == 0 {
		if v, err := strconv.Atoi(first("connecttimeout")); err == nil && v > 0 {
			timeout = time.Duration(v) * time.Second
		}
	}
	return SSHConfig{
		Host:             s.Host,
		Addr:             JoinHostPort(host, port),
		User:             user,
		Identity:         ids,
		KnownHosts:       kh,
		AcceptNewHostKey: accept,
		Agent:            agentSock,
		Timeout:          timeout,
	}, nil
}

// sshG runs `ssh -G host` and returns its keywords (lower-case) and values.
func sshG(ctx context.Context, host, configFile string) (map[string][]string, error) {
	path, err := exec.LookPath("ssh")
	if err != nil {
		return nil, err
	}
	args := []string{"-G"}
	if configFile != "" {
		args = append(args, "-F", configFile)
	}
	args = append(args, "--", host)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, args...).Output()
	if err != nil {
		return nil, fmt.Errorf("ssh -G %s: %w", host, err)
	}
	m := make(map[string][]string)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		k = strings.ToLower(k)
		m[k] = append(m[k], v)
	}
	return m, sc.Err()
}

func expandAll(paths []string, home string) []string {
	var out []string
	for _, p := range paths {
		if p == "" || p == "none" {
			continue
		}
		if p == "~" {
			p = home
		} else if strings.HasPrefix(p, "~/") {
			p = filepath.Join(home, p[2:])
		}
		out = append(out, p)
	}
	return out
}
