package send

import (
	"testing"

	"github.com/mfilter/mfilter/rules"
)

func TestParseSettingsErrors(t *testing.T) {
	tests := []struct{ section, want string }{
		{"  port: 0\n", `rules.yaml:2:9: send port must be a number from 1 to 65535, found "0"`},
		{"  relay: nohost\n", `rules.yaml:2:10: send relay must be host:port`},
		{"  tls-verify: maybe\n", `rules.yaml:2:15: send tls-verify must be true or false, found "maybe"`},
		{"  timeout: 0s\n", `rules.yaml:2:12: send timeout must be a duration like 30s or 5m, found "0s"`},
		{"  queue: later\n", `rules.yaml:2:10: send queue must be true, false or accept, not "later"`},
		{"  password-command: pass show smtp\n  auth-user: me\n", `rules.yaml:2:21: send password-command is a program and its arguments as a list`},
		{"  password: hunter2\n  auth-user: me\n", `rules.yaml:2:13: a password in the rules file is read by everything that reads the rules`},
		{"  auth-user: me\n", `rules.yaml:2:3: auth-user without a password`},
		{"  relya: x\n", `rules.yaml:2:3: unknown send setting "relya" (known: host, port,`},
	}
	for _, tt := range tests {
		cfg, err := rules.Parse("rules.yaml", []byte("send:\n"+tt.section))
		if err != nil {
			t.Fatalf("rules.Parse: %v", err)
		}
		_, err = ParseSettings(cfg.Sections["send"])
		if err == nil || len(err.Error()) < len(tt.want) || err.Error()[:len(tt.want)] != tt.want {
			t.Errorf("%q: got %v\nwant it to start %s", tt.section, err, tt.want)
		}
	}
	cfg, _ := rules.Parse("rules.yaml", []byte("send:\n  relay: mail.example:587\n  tls-verify: false\n  timeout: 1m\n"))
	s, err := ParseSettings(cfg.Sections["send"])
	if err != nil || s.Relay != "mail.example:587" || s.TLSVerify == nil || *s.TLSVerify || s.Timeout.String() != "1m0s" {
		t.Errorf("ParseSettings = %+v, %v", s, err)
	}
}
