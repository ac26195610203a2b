package imapfetch

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mfilter/mfilter/rules"
)

// After is what becomes of a message on the server once it is filed.
type After int

const (
	AfterDelete After = iota // UID EXPUNGE (the default)
	AfterKeep                // left alone, remembered, never marked \Seen
	AfterMove                // UID MOVE to MoveTo
)

// Settings are one imap source of the fetch: section.
type Settings struct {
	URL             string
	TLS             bool   // imaps: TLS from the start
	StartTLS        bool   // imap: STARTTLS (unless Plain)
	Plain           bool   // tls: none: no TLS at all (loopback only)
	Host            string // host:port
	ServerName      string // for the certificate
	Folder          string
	User            string
	PasswordCommand []string
	TokenCommand    []string
	After           After
	MoveTo          string
	CA              string // PEM file of the roots to trust instead of the system's
	StateDir        string
	Timeout         time.Duration
	StateLock       time.Duration
	NoCompress      bool // compress: none: never COMPRESS=DEFLATE, go-imap logs in
}

var settingKeys = []string{"imap", "user", "password-command", "token-command", "after", "tls", "ca", "state-dir", "state-lock-timeout", "timeout", "compress"}

// IsIMAP reports whether a fetch: item is an imap source (it has an
// imap: key).
func IsIMAP(n *yaml.Node) bool {
	for i := 0; n != nil && n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "imap" {
			return true
		}
	}
	return false
}

// ParseSettings reads one imap source, reporting problems as
// file:line:col errors (mfilter check reports them too).
func ParseSettings(sec *rules.Section) (Settings, error) {
	var s Settings
	r := sec.Reader("fetch")
	var tlsMode string
	r.Settings(func(k, v *yaml.Node) {
		switch k.Value {
		case "imap":
			s.URL = "(given)" // a bad one is reported here, not as missing
			if u, ok := r.Str(v, "imap"); ok {
				if err := s.setURL(u); err != nil {
					r.Errorf(v, "fetch imap: %v", err)
				}
			}
		case "user":
			s.User, _ = r.Str(v, "user")
		case "password-command":
			s.PasswordCommand = r.List(v, "password-command")
		case "token-command":
			s.TokenCommand = r.List(v, "token-command")
		case "after":
			if a, ok := r.Str(v, "after"); ok {
				if err := s.setAfter(a); err != nil {
					r.Errorf(v, "fetch after: %v", err)
				}
			}
		case "tls":
			tlsMode, _ = r.Str(v, "tls")
			if tlsMode != "none" && tlsMode != "verify" {
				r.Errorf(v, "fetch tls must be verify or none, not %q", tlsMode)
			}
		case "ca":
			s.CA, _ = r.Str(v, "ca")
		case "state-dir":
			s.StateDir, _ = r.Str(v, "state-dir")
		case "state-lock-timeout":
			s.StateLock = r.Duration(v, "state-lock-timeout")
		case "timeout":
			s.Timeout = r.Duration(v, "timeout")
		case "compress":
			if c, ok := r.Str(v, "compress"); ok {
				if c != "auto" && c != "none" {
					r.Errorf(v, "fetch compress must be auto or none, not %q", c)
				}
				s.NoCompress = c == "none"
			}
		default:
			r.Unknown(k, settingKeys)
		}
	})
	if err := s.check(tlsMode); err != nil {
		r.Errorf(sec.Node, "%v", err)
	}
	return s, r.Err()
}

// setURL takes imaps://host[:port]/folder or imap://host[:port]/folder.
func (s *Settings) setURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	port := ""
	switch u.Scheme {
	case "imaps":
		s.TLS, port = true, "993"
	case "imap":
		s.StartTLS, port = true, "143"
	default:
		return fmt.Errorf("%q: the scheme must be imaps:// or imap://", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q: only imap[s]://host[:port]/folder (the user and password are settings of their own)", raw)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("%q has no host", raw)
	}
	if u.Port() != "" {
		port = u.Port()
	}
	s.URL, s.ServerName = raw, u.Hostname()
	s.Host = net.JoinHostPort(u.Hostname(), port)
	s.Folder = strings.TrimPrefix(u.Path, "/")
	if s.Folder == "" {
		s.Folder = "INBOX"
	}
	return nil
}

func (s *Settings) setAfter(a string) error {
	switch {
	case a == "delete":
		s.After = AfterDelete
	case a == "keep":
		s.After = AfterKeep
	case strings.HasPrefix(a, "move:") && len(a) > len("move:"):
		s.After, s.MoveTo = AfterMove, strings.TrimPrefix(a, "move:")
	default:
		return fmt.Errorf("must be delete, keep or move:FOLDER, not %q", a)
	}
	return nil
}

// check checks the settings together.
func (s *Settings) check(tlsMode string) error {
	var errs []string
	if s.URL == "" {
		errs = append(errs, "an imap source needs imap: imaps://host/folder")
	}
	if s.User == "" {
		errs = append(errs, "an imap source needs user:")
	}
	if (len(s.PasswordCommand) == 0) == (len(s.TokenCommand) == 0) {
		errs = append(errs, "an imap source needs one of password-command: or token-command:")
	}
	if tlsMode == "none" {
		if s.TLS {
			errs = append(errs, "tls: none with an imaps:// URL")
		} else if !loopback(s.ServerName) {
			errs = append(errs, fmt.Sprintf("tls: none is only allowed for a server on loopback, not %s", s.ServerName))
		}
		s.Plain, s.StartTLS = true, false
		if s.CA != "" {
			errs = append(errs, "ca: with tls: none")
		}
	}
	if s.After == AfterMove && s.MoveTo == s.Folder {
		errs = append(errs, "after: move: to the folder fetched from")
	}
	if len(errs) > 0 {
		return fmt.Errorf("fetch: %s", strings.Join(errs, "; "))
	}
	return nil
}

// loopback reports whether host is this machine: localhost or a
// loopback address.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Describe names the source in messages and state file names:
// user@host:port/folder.
func (s *Settings) Describe() string {
	return s.User + "@" + s.Host + "/" + s.Folder
}
