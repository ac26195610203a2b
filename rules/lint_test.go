package rules

import (
	"strings"
	"testing"
)

func TestLint(t *testing.T) {
	tests := []struct{ name, src, want string }{
		{"shadowed", "rules:\n  - name: a\n    if: {subject: x}\n    then: {folder: a/}\n  - name: b\n    if: {subject: x}\n    then: {folder: b/}\n",
			`rules.yaml:5:5: rule "b" can never run: rule "a" at line 2 has the same condition and always delivers first`},
		{"shadowed all", "rules:\n  - if: {all: [{subject: x}, {size: '> 1k'}]}\n    then: discard\n  - if: {all: [{subject: x}, {size: '> 1k'}]}\n    then: {folder: b/}\n",
			`rules.yaml:4:5: rule at line 4 can never run: rule at line 2 has the same condition and always delivers first`},
		{"body always", "rules:\n  - if: {body: '.*'}\n    then: {folder: a/}\n",
			`rules.yaml:2:10: this condition holds for every message: the regex ".*" matches the empty string`},
		{"headers always in any", "rules:\n  - if: {any: [{subject: x}, {headers: '^'}]}\n    then: {folder: a/}\n",
			`this condition holds for every message: the regex "^" matches the empty string`},
		{"size always", "rules:\n  - if: {size: '> 0'}\n    then: {folder: a/}\n",
			`this condition holds for every message: every message's size is within it`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("rules.yaml", []byte(tt.src))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, w := range Lint(cfg) {
				got = append(got, w.Error())
			}
			if !strings.Contains(strings.Join(got, "\n"), tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	for _, ok := range []string{
		"rules:\n  - if: {subject: x}\n    then: {copy: a/}\n  - if: {subject: x}\n    then: {folder: b/}\n",
		"rules:\n  - if: {subject: x}\n    then: {folder: a/}\n  - if: {subject: y}\n    then: {folder: b/}\n",
		"rules:\n  - if: {subject: '.*'}\n    then: {folder: a/}\n",
		"rules:\n  - if: {body: 'x'}\n    then: {folder: a/}\n",
	} {
		cfg, err := Parse("rules.yaml", []byte(ok))
		if err != nil {
			t.Fatal(err)
		}
		if w := Lint(cfg); len(w) > 0 {
			t.Errorf("%q: unexpected warnings %v", ok, w)
		}
	}
}
