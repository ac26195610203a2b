package fetch

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mfilter/mfilter/rules"
)

// Settings are the fetch: section of the rules file; flags override them.
type Settings struct {
	Host             string
	Port             int
	User             string
	Identity         []string
	KnownHosts       []string
	Spool            string
	Compress         string // auto, zstd, gzip, none
	LockTimeout      time.Duration
	AcceptNewHostKey bool
	StateDir         string
	Timeout          time.Duration
}

var settingKeys = []string{"host", "port", "user", "identity", "known-hosts", "spool", "compress", "lock-timeout", "accept-new-host-key", "state-dir", "timeout"}

// ParseSettings reads a fetch: section, reporting problems as
// file:line:col errors (mfilter check reports them too). A nil section
// gives zero Settings.
func ParseSettings(sec *rules.Section) (Settings, error) {
	var s Settings
	if sec == nil {
		return s, nil
	}
	var errs rules.ErrorList
	errf := func(n *yaml.Node, format string, args ...any) {
		errs = append(errs, &rules.Error{Pos: rules.Pos{File: sec.Path, Line: n.Line, Col: n.Column}, Msg: fmt.Sprintf(format, args...)})
	}
	str := func(n *yaml.Node, what string) (string, bool) {
		if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
			errf(n, "fetch %s must be a string", what)
			return "", false
		}
		return n.Value, true
	}
	list := func(n *yaml.Node, what string) []string {
		if n.Kind == yaml.SequenceNode {
			var out []string
			for _, c := range n.Content {
				if v, ok := str(c, what); ok {
					out = append(out, v)
				}
			}
			return out
		}
		if v, ok := str(n, what); ok {
			return []string{v}
		}
		return nil
	}
	dur := func(n *yaml.Node, what string) time.Duration {
		v, ok := str(n, what)
		if !ok {
			return 0
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			errf(n, "fetch %s must be a duration like 30s or 5m, found %q", what, v)
		}
		return d
	}
	n := sec.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "host":
			s.Host, _ = str(v, "host")
		case "port":
			if p, ok := str(v, "port"); ok {
				port, err := strconv.Atoi(p)
				if err != nil || port < 1 || port > 65535 {
					errf(v, "fetch port must be a number from 1 to 65535, found %q", p)
				}
				s.Port = port
			}
		case "user":
			s.User, _ = str(v, "user")
		case "identity":
			s.Identity = list(v, "identity")
		case "known-hosts":
			s.KnownHosts = list(v, "known-hosts")
		case "spool":
			s.Spool, _ = str(v, "spool")
		case "compress":
			if c, ok := str(v, "compress"); ok {
				switch c {
				case "auto", "zstd", "gzip", "none":
				default:
					errf(v, "fetch compress must be auto, zstd, gzip or none, not %q", c)
				}
				s.Compress = c
			}
		case "lock-timeout":
			s.LockTimeout = dur(v, "lock-timeout")
		case "timeout":
			s.Timeout = dur(v, "timeout")
		case "accept-new-host-key":
			b, ok := str(v, "accept-new-host-key")
			if ok && b != "true" && b != "false" {
				errf(v, "fetch accept-new-host-key must be true or false")
			}
			s.AcceptNewHostKey = b == "true"
		case "state-dir":
			s.StateDir, _ = str(v, "state-dir")
		default:
			errf(k, "unknown fetch setting %q (known: %s)", k.Value, strings.Join(settingKeys, ", "))
		}
	}
	if len(errs) > 0 {
		return s, errs
	}
	return s, nil
}
