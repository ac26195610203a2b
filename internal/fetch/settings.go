package fetch

import (
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
	StateLockTimeout time.Duration
	Timeout          time.Duration
}

var settingKeys = []string{"host", "port", "user", "identity", "known-hosts", "spool", "compress", "lock-timeout", "accept-new-host-key", "state-dir", "state-lock-timeout", "timeout"}

// ParseSettings reads a fetch: section, reporting problems as
// file:line:col errors (mfilter check reports them too). A nil section
// gives zero Settings.
func ParseSettings(sec *rules.Section) (Settings, error) {
	var s Settings
	if sec == nil {
		return s, nil
	}
	r := sec.Reader("fetch")
	r.Settings(func(k, v *yaml.Node) {
		switch k.Value {
		case "host":
			s.Host, _ = r.Str(v, "host")
		case "port":
			s.Port = r.Port(v, "port")
		case "user":
			s.User, _ = r.Str(v, "user")
		case "identity":
			s.Identity = r.List(v, "identity")
		case "known-hosts":
			s.KnownHosts = r.List(v, "known-hosts")
		case "spool":
			s.Spool, _ = r.Str(v, "spool")
		case "compress":
			if c, ok := r.Str(v, "compress"); ok {
				switch c {
				case "auto", "zstd", "gzip", "none":
				default:
					r.Errorf(v, "fetch compress must be auto, zstd, gzip or none, not %q", c)
				}
				s.Compress = c
			}
		case "lock-timeout":
			s.LockTimeout = r.Duration(v, "lock-timeout")
		case "state-lock-timeout":
			s.StateLockTimeout = r.Duration(v, "state-lock-timeout")
		case "timeout":
			s.Timeout = r.Duration(v, "timeout")
		case "accept-new-host-key":
			if b := r.Bool(v, "accept-new-host-key"); b != nil {
				s.AcceptNewHostKey = *b
			}
		case "state-dir":
			s.StateDir, _ = r.Str(v, "state-dir")
		default:
			r.Unknown(k, settingKeys)
		}
	})
	return s, r.Err()
}
