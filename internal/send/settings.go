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
	if sec == nil {
		return Settings{}, nil
	}
	r := &settingsReader{SectionReader: sec.Reader("send")}
	n := sec.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if read := settingReaders[k.Value]; read != nil {
			read(r, k, v)
		} else {
			r.Unknown(k, settingKeys)
		}
	}
	r.checkPassword(n)
	return r.s, r.Err()
}

// settingsReader reads one send: section into s, keeping what the checks
// across settings need.
type settingsReader struct {
	*rules.SectionReader
	s                     Settings
	password, allowInline *yaml.Node
	// secrets are the keys of the settings that give a password.
	secrets []*yaml.Node
}

// settingReader reads setting k with value v.
type settingReader func(r *settingsReader, k, v *yaml.Node)

// settingReaders holds a reader for every key of settingKeys.
var settingReaders = map[string]settingReader{
	"host":                strSetting(func(s *Settings) *string { return &s.Host }),
	"port":                func(r *settingsReader, k, v *yaml.Node) { r.s.Port = r.Port(v, k.Value) },
	"user":                strSetting(func(s *Settings) *string { return &s.User }),
	"identity":            func(r *settingsReader, k, v *yaml.Node) { r.s.Identity = r.List(v, k.Value) },
	"known-hosts":         func(r *settingsReader, k, v *yaml.Node) { r.s.KnownHosts = r.List(v, k.Value) },
	"accept-new-host-key": func(r *settingsReader, k, v *yaml.Node) { r.s.AcceptNewHostKey = r.Bool(v, k.Value) },
	"timeout":             func(r *settingsReader, k, v *yaml.Node) { r.s.Timeout = r.Duration(v, k.Value) },
	"relay":               func(r *settingsReader, k, v *yaml.Node) { r.s.Relay = r.hostPort(v, k.Value) },
	"helo":                (*settingsReader).helo,
	"starttls":            (*settingsReader).startTLS,
	"tls-server-name":     strSetting(func(s *Settings) *string { return &s.TLSServerName }),
	"tls-ca":              strSetting(func(s *Settings) *string { return &s.TLSCA }),
	"tls-verify":          func(r *settingsReader, k, v *yaml.Node) { r.s.TLSVerify = r.Bool(v, k.Value) },
	"auth-user":           strSetting(func(s *Settings) *string { return &s.AuthUser }),
	"auth-mechanism":      (*settingsReader).authMechanism,
	"password-file":       (*settingsReader).passwordFile,
	"password-command":    (*settingsReader).passwordCommand,
	"password":            (*settingsReader).inlinePassword,
	"allow-inline-password": func(r *settingsReader, k, v *yaml.Node) {
		r.allowInline = v
		r.Bool(v, k.Value)
	},
	"queue":     (*settingsReader).queue,
	"queue-dir": strSetting(func(s *Settings) *string { return &s.QueueDir }),
	"domain":    strSetting(func(s *Settings) *string { return &s.Domain }),
	"listen":    func(r *settingsReader, k, v *yaml.Node) { r.s.Listen = r.hostPort(v, k.Value) },
}

// strSetting reads a string setting into the field that field returns.
func strSetting(field func(*Settings) *string) settingReader {
	return func(r *settingsReader, k, v *yaml.Node) { *field(&r.s), _ = r.Str(v, k.Value) }
}

func (r *settingsReader) hostPort(n *yaml.Node, what string) string {
	v, ok := r.Str(n, what)
	if !ok {
		return ""
	}
	if err := checkHostPort(v); err != nil {
		r.Errorf(n, "send %s must be host:port, like localhost:25 ([::1]:25 for IPv6): %v", what, err)
	}
	return v
}

func (r *settingsReader) helo(_, v *yaml.Node) {
	h, ok := r.Str(v, "helo")
	if !ok {
		return
	}
	if h == "" || strings.ContainsAny(h, " \t\r\n") {
		r.Errorf(v, "send helo must be a host name, found %q", h)
	}
	r.s.Helo = h
}

func (r *settingsReader) startTLS(_, v *yaml.Node) {
	m, ok := r.Str(v, "starttls")
	if !ok {
		return
	}
	switch m {
	case "no", "false":
		r.s.StartTLS = TLSNo
	case "if-offered":
		r.s.StartTLS = TLSIfOffered
	case "required":
		r.s.StartTLS = TLSRequired
	default:
		r.Errorf(v, "send starttls must be no, if-offered or required, not %q", m)
	}
}

func (r *settingsReader) authMechanism(_, v *yaml.Node) {
	m, ok := r.Str(v, "auth-mechanism")
	if !ok {
		return
	}
	switch strings.ToUpper(m) {
	case "PLAIN", "LOGIN":
		r.s.AuthMechanism = strings.ToUpper(m)
	default:
		r.Errorf(v, "send auth-mechanism must be plain or login, not %q", m)
	}
}

func (r *settingsReader) passwordFile(k, v *yaml.Node) {
	r.s.PasswordFile, _ = r.Str(v, "password-file")
	r.secrets = append(r.secrets, k)
}

func (r *settingsReader) passwordCommand(k, v *yaml.Node) {
	r.s.PasswordCommand = r.List(v, "password-command")
	if v.Kind == yaml.ScalarNode && strings.ContainsAny(v.Value, " \t") {
		r.Errorf(v, "send password-command is a program and its arguments as a list, like [pass, show, smtp]; it is not run by a shell")
	}
	if len(r.s.PasswordCommand) == 0 || r.s.PasswordCommand[0] == "" {
		r.Errorf(v, "send password-command names no program")
	}
	r.secrets = append(r.secrets, k)
}

func (r *settingsReader) inlinePassword(k, v *yaml.Node) {
	r.password = v
	r.s.Password, _ = r.Str(v, "password")
	r.secrets = append(r.secrets, k)
}

func (r *settingsReader) queue(_, v *yaml.Node) {
	q, ok := r.Str(v, "queue")
	if !ok {
		return
	}
	switch q {
	case "true", "false", "accept":
		r.s.Queue = QueueMode(q)
	default:
		r.Errorf(v, "send queue must be true, false or accept, not %q", q)
	}
}

// checkPassword checks the AUTH settings together, once section n is
// read: one way to get a password, with a user to log in as.
func (r *settingsReader) checkPassword(n *yaml.Node) {
	if r.password != nil && (r.allowInline == nil || r.allowInline.Value != "true") {
		r.Errorf(r.password, "a password in the rules file is read by everything that reads the rules: put it in a file only you can read (password-file:) or get it from a command (password-command: [pass, show, smtp]); if you insist, add allow-inline-password: true")
	}
	if len(r.secrets) > 1 {
		r.Errorf(r.secrets[1], "give one of password-file, password-command and password, not several")
	}
	if len(r.secrets) > 0 && r.s.AuthUser == "" {
		r.Errorf(r.secrets[0], "a password without auth-user: name the user to log in to the relay as")
	}
	if r.s.AuthUser != "" && len(r.secrets) == 0 {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "auth-user" {
				r.Errorf(n.Content[i], "auth-user without a password: add password-file: or password-command:")
			}
		}
	}
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
