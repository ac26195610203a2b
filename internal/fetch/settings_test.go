package fetch

import (
	"reflect"
	"testing"
	"time"

	"github.com/mfilter/mfilter/rules"
)

func parseFetch(t *testing.T, section string) (Settings, error) {
	t.Helper()
	cfg, err := rules.Parse("rules.yaml", []byte("fetch:\n"+section))
	if err != nil {
		t.Fatalf("rules.Parse: %v", err)
	}
	return ParseSettings(cfg.Sections["fetch"])
}

func TestParseSettings(t *testing.T) {
	s, err := parseFetch(t, "  host: mail.example\n  port: 2222\n  user: me\n  identity: [~/.ssh/a, ~/.ssh/b]\n"+
		"  known-hosts: ~/.ssh/kh\n  spool: /var/mail/me\n  compress: gzip\n  lock-timeout: 2m\n"+
		"  timeout: 30s\n  accept-new-host-key: true\n  state-dir: ~/.mfstate\n")
	if err != nil {
		t.Fatal(err)
	}
	want := Settings{Host: "mail.example", Port: 2222, User: "me", Identity: []string{"~/.ssh/a", "~/.ssh/b"},
		KnownHosts: []string{"~/.ssh/kh"}, Spool: "/var/mail/me", Compress: "gzip", LockTimeout: 2 * time.Minute,
		Timeout: 30 * time.Second, AcceptNewHostKey: true, StateDir: "~/.mfstate"}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("got %+v\nwant %+v", s, want)
	}
}

func TestParseSettingsErrors(t *testing.T) {
	tests := []struct{ section, want string }{
		{"  port: 70000\n", `rules.yaml:2:9: fetch port must be a number from 1 to 65535, found "70000"`},
		{"  host: [a, b]\n", `rules.yaml:2:9: fetch host must be a string`},
		{"  timeout: soon\n", `rules.yaml:2:12: fetch timeout must be a duration like 30s or 5m, found "soon"`},
		{"  accept-new-host-key: yes please\n", `rules.yaml:2:24: fetch accept-new-host-key must be true or false, found "yes please"`},
		{"  compress: lz4\n", `rules.yaml:2:13: fetch compress must be auto, zstd, gzip or none, not "lz4"`},
		{"  hots: x\n", `rules.yaml:2:3: unknown fetch setting "hots" (known: host, port, user, identity, known-hosts, spool, compress, lock-timeout, accept-new-host-key, state-dir, state-lock-timeout, timeout)`},
	}
	for _, tt := range tests {
		_, err := parseFetch(t, tt.section)
		if err == nil || err.Error() != tt.want {
			t.Errorf("%q: got %v\nwant %s", tt.section, err, tt.want)
		}
	}
}
