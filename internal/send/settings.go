package send

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mfilter/mfilter/rules"
)

// QueueMode says what a temporary failure does with the message.
type QueueMode string

const (
	QueueUnset QueueMode = ""
	// QueueOff: nothing is kept; exit 75 and the caller keeps it.
	QueueOff QueueMode = "false"
	// QueueOn: the message is kept in the queue, and the exit status is
	// still 75 (the caller learns it has not gone yet).
	QueueOn QueueMode = "true"
	// QueueAccept: the message is kept and the exit status is 0, as
	// sendmail does once a message is queued: the caller must not retry.
	QueueAccept QueueMode = "accept"
)

// Settings are the send: section of the rules file; flags override them,
// and the SSH ones fall back to the fetch: section.
type Settings struct {
	// SSH login, as in fetch:.
	Host             string
	Port             int
	User             string
	Identity         []string
	KnownHosts       []string
	AcceptNewHostKey *bool
	Timeout          time.Duration

	// Relay is the SMTP server as the SSH server sees it (host:port).
	Relay         string
	Helo          string
	StartTLS      TLSMode
	TLSServerName string
	TLSCA         string
	TLSVerify     *bool

	AuthUser        string
	AuthMechanism   string
	PasswordFile    string
	PasswordCommand []string
	// Password is an inline password, read only with
	// allow-inline-password: true.
	Password string

	Queue    QueueMode
	QueueDir string
	// Domain qualifies addresses without one (cron's "root").
	Domain string
	// Listen is mfilter tunnel's local address.
	Listen string
}

var settingKeys = []string{"host", "port", "user", "identity", "known-hosts", "accept-new-host-key", "timeout",
	"relay", "helo", "starttls", "tls-server-name", "tls-ca", "tls-verify",
	"auth-user", "auth-mechanism", "password-file", "password-command", "password", "allow-inline-password",
	"queue", "queue-dir", "domain", "listen"}

// DefaultRelay is where the relay is unless send: relay: says otherwise:
// the SMTP port of the SSH server itself.
const DefaultRelay = "localhost:25"

// ParseSettings reads a send: section, reporting problems as
// file:line:col errors (mfilter check reports them too). A nil section
// gives zero Settings.
func ParseSettings(sec *rules.Section) (Settings, error) {
	var s Settings
	if sec == nil {
		return s, nil
	}
	r := sec.Reader("send")
	str, list, boolean, errf := r.Str, r.List, r.Bool, r.Errorf
	hostPort := func(n *yaml.Node, what string) string {
		v, ok := str(n, what)
		if !ok {
			return ""
		}
		if err := checkHostPort(v); err != nil {
			errf(n, "send %s must be host:port, like localhost:25 ([::1]:25 for IPv6): %v", what, err)
		}
		return v
	}
	var password, allowInline *yaml.Node
	var secrets []*yaml.Node
	n := sec.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "host":
			s.Host, _ = str(v, "host")
		case "port":
			s.Port = r.Port(v, "port")
		case "user":
			s.User, _ = str(v, "user")
		case "identity":
			s.Identity = list(v, "identity")
		case "known-hosts":
			s.KnownHosts = list(v, "known-hosts")
		case "accept-new-host-key":
			s.AcceptNewHostKey = boolean(v, "accept-new-host-key")
		case "timeout":
			s.Timeout = r.Duration(v, "timeout")
		case "relay":
			s.Relay = hostPort(v, "relay")
		case "helo":
			if h, ok := str(v, "helo"); ok {
				if h == "" || strings.ContainsAny(h, " \t\r\n") {
					errf(v, "send helo must be a host name, found %q", h)
				}
				s.Helo = h
			}
		case "starttls":
			if m, ok := str(v, "starttls"); ok {
				switch m {
				case "no", "false":
					s.StartTLS = TLSNo
				case "if-offered":
					s.StartTLS = TLSIfOffered
				case "required":
					s.StartTLS = TLSRequired
				default:
					errf(v, "send starttls must be no, if-offered or required, not %q", m)
				}
			}
		case "tls-server-name":
			s.TLSServerName, _ = str(v, "tls-server-name")
		case "tls-ca":
			s.TLSCA, _ = str(v, "tls-ca")
		case "tls-verify":
			s.TLSVerify = boolean(v, "tls-verify")
		case "auth-user":
			s.AuthUser, _ = str(v, "auth-user")
		case "auth-mechanism":
			if m, ok := str(v, "auth-mechanism"); ok {
				switch strings.ToUpper(m) {
				case "PLAIN", "LOGIN":
					s.AuthMechanism = strings.ToUpper(m)
				default:
					errf(v, "send auth-mechanism must be plain or login, not %q", m)
				}
			}
		case "password-file":
			s.PasswordFile, _ = str(v, "password-file")
			secrets = append(secrets, k)
		case "password-command":
			s.PasswordCommand = list(v, "password-command")
			if v.Kind == yaml.ScalarNode && strings.ContainsAny(v.Value, " \t") {
				errf(v, "send password-command is a program and its arguments as a list, like [pass, show, smtp]; it is not run by a shell")
			}
			if len(s.PasswordCommand) == 0 || s.PasswordCommand[0] == "" {
				errf(v, "send password-command names no program")
			}
			secrets = append(secrets, k)
		case "password":
			password = v
			s.Password, _ = str(v, "password")
			secrets = append(secrets, k)
		case "allow-inline-password":
			allowInline = v
			boolean(v, "allow-inline-password")
		case "queue":
			if q, ok := str(v, "queue"); ok {
				switch q {
				case "true", "false", "accept":
					s.Queue = QueueMode(q)
				default:
					errf(v, "send queue must be true, false or accept, not %q", q)
				}
			}
		case "queue-dir":
			s.QueueDir, _ = str(v, "queue-dir")
		case "domain":
			s.Domain, _ = str(v, "domain")
		case "listen":
			s.Listen = hostPort(v, "listen")
		default:
			r.Unknown(k, settingKeys)
		}
	}
	if password != nil && (allowInline == nil || allowInline.Value != "true") {
		errf(password, "a password in the rules file is read by everything that reads the rules: put it in a file only you can read (password-file:) or get it from a command (password-command: [pass, show, smtp]); if you insist, add allow-inline-password: true")
	}
	if len(secrets) > 1 {
		errf(secrets[1], "give one of password-file, password-command and password, not several")
	}
	if len(secrets) > 0 && s.AuthUser == "" {
		errf(secrets[0], "a password without auth-user: name the user to log in to the relay as")
	}
	if s.AuthUser != "" && len(secrets) == 0 {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "auth-user" {
				errf(n.Content[i], "auth-user without a password: add password-file: or password-command:")
			}
		}
	}
	return s, r.Err()
}

func checkHostPort(v string) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return err
	}
	if host == "" {
		return fmt.Errorf("no host in %q", v)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return nil
}

// CheckHostPort validates a host:port given on the command line.
func CheckHostPort(v string) error { return checkHostPort(v) }
