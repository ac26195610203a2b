package rules

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"unknown action key", "rules:\n  - name: x\n    then: {fodler: inbox/}\n",
			`rules.yaml:3:12: unknown action "fodler" (did you mean "folder"?)`},
		{"unknown condition", "rules:\n  - if: {subjet: x}\n    then: discard\n",
			`rules.yaml:2:10: unknown condition "subjet" (did you mean "subject"?)`},
		{"unknown setting", "maildri: ~/Mail\nrules: []\n",
			`rules.yaml:1:1: unknown setting "maildri" (did you mean "maildir"?)`},
		{"bad regex", "rules:\n  - if: {subject: 'a(b'}\n    then: discard\n",
			"rules.yaml:2:19: bad regex \"a(b\": missing closing ): `a(b`"},
		{"procmail word boundary", "rules:\n  - if: {body: '\\<free\\>'}\n    then: discard\n",
			"rules.yaml:2:16: bad regex \"\\\\<free\\\\>\": procmail's \\< is not a word boundary here: write \\b"},
		{"bad size", "rules:\n  - if: {size: 'big'}\n    then: discard\n",
			`rules.yaml:2:16: size must be like '> 100k' or '< 2M' (units k, M, G of 1024), found "big"`},
		{"unknown variable", "rules:\n  - then: {folder: 'lists/${lst}/'}\n",
			`rules.yaml:2:27: unknown variable "lst" (define it under vars:, capture it with (?P<lst>...) in this rule's if:, or use one of DEFAULT, HOME, HOST, LOGNAME, MAILDIR, USER, recipient, score, sender, size)`},
		{"unreachable rule", "rules:\n  - name: all\n    then: {folder: inbox/}\n  - name: never\n    if: {subject: x}\n    then: discard\n",
			`rules.yaml:4:5: rule "never" can never run: rule "all" at line 2 always delivers before it (make it a copy, or give it an if:)`},
		{"action after delivery", "rules:\n  - if: {subject: x}\n    then: [{folder: a/}, {add-header: 'X: y'}]\n",
			`rules.yaml:3:27: this action never runs: the folder at line 3 already delivered the message (use copy: to deliver and go on)`},
		{"shell string", "rules:\n  - then: {pipe: 'spamc -c'}\n",
			`rules.yaml:2:18: pipe must be a list of arguments like [spamc, -c]; mfilter runs no shell, so "spamc -c" cannot be split for you`},
		{"two actions in one item", "rules:\n  - then: {folder: a/, discard: true}\n",
			`rules.yaml:2:24: one action per item: folder and discard (write a list: then: [{folder: ...}, {discard: ...}])`},
		{"yaml syntax", "rules:\n  - then: {folder: a/\n",
			`rules.yaml:2:11: YAML: did not find expected ',' or '}'`},
		{"tab indentation", "rules:\n\t- then: discard\n",
			`rules.yaml:2:1: YAML: found character that cannot start any token`},
		{"rule without then", "rules:\n  - if: {subject: x}\n",
			`rules.yaml:2:5: rule at line 2 has no then: and no rules: (nothing to do)`},
		{"empty file", "",
			`rules.yaml:1:1: the rules file is empty (it needs at least a rules: list or a default: folder)`},
		{"bad log format", "log-format: xml\nrules: []\n",
			`rules.yaml:1:13: log-format must be procmail or json, not "xml"`},
		{"lone dollar", "rules:\n  - then: {folder: 'a$b/'}\n",
			`rules.yaml:2:22: a lone $ (write $$ for a dollar sign, ${name} for a variable)`},
		{"unknown filter", "rules:\n  - if: {subject: '(?P<s>.*)'}\n    then: {folder: '${s|title}/'}\n",
			`rules.yaml:3:21: unknown filter "title" (known: lower, upper, trim, replace OLD NEW)`},
		{"capture out of scope", "rules:\n  - if: {subject: '(?P<s>.*)'}\n    then: {copy: 'a/'}\n  - then: {folder: '${s}/'}\n",
			`rules.yaml:4:21: unknown variable "s" (define it under vars:, capture it with (?P<s>...) in this rule's if:, or use one of DEFAULT, HOME, HOST, LOGNAME, MAILDIR, USER, recipient, score, sender, size)`},
		{"duplicate key", "rules:\n  - then: discard\n    then: stop\n",
			`rules.yaml:3:5: key "then" is already defined at line 2`},
		{"several errors sorted", "rules:\n  - if: {size: x}\n    then: {fodler: a}\n",
			"rules.yaml:2:16: size must be like '> 100k' or '< 2M' (units k, M, G of 1024), found \"x\"\nrules.yaml:3:12: unknown action \"fodler\" (did you mean \"folder\"?)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("rules.yaml", []byte(tt.src))
			var el ErrorList
			if !errors.As(err, &el) {
				t.Fatalf("want an ErrorList, got %v", err)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestSecurity(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	path := filepath.Join(dir, "rules.yaml")
	os.WriteFile(path, []byte("default: inbox/\n"), 0o644)
	if _, err := Load(path); err != nil {
		t.Fatalf("a 0644 file in a 0755 directory is fine: %v", err)
	}
	os.Chmod(path, 0o664)
	var ie *InsecureError
	if _, err := Load(path); !errors.As(err, &ie) || !strings.Contains(err.Error(), "writable by group or others") {
		t.Fatalf("a group-writable rules file must be refused, got %v", err)
	}
	os.Chmod(path, 0o644)
	os.Chmod(dir, 0o777)
	if _, err := Load(path); !errors.As(err, &ie) {
		t.Fatalf("a rules file in a world-writable directory must be refused, got %v", err)
	}
	os.Chmod(dir, 0o777|os.ModeSticky)
	if _, err := Load(path); err != nil {
		t.Fatalf("a sticky directory like /tmp is fine: %v", err)
	}
}

func TestInclude(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "lists.yaml"), []byte("vars: {ld: lists}\nrules:\n  - if: {list-id: x}\n    then: {folder: '${ld}/x/'}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte("rules:\n  - include: lists.yaml\n  - then: {folder: inbox/}\n"), 0o644)
	cfg, err := Load(filepath.Join(dir, "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Rules) != 2 {
		t.Fatalf("got %d rules", len(cfg.Rules))
	}
	os.WriteFile(filepath.Join(dir, "loop.yaml"), []byte("rules:\n  - include: loop.yaml\n"), 0o644)
	_, err = Load(filepath.Join(dir, "loop.yaml"))
	if err == nil || !strings.Contains(err.Error(), "include loop") {
		t.Fatalf("want an include loop error, got %v", err)
	}
	os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("rules:\n  - include: broken.yaml\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "broken.yaml"), []byte("rules:\n  - then: {fodler: x}\n"), 0o644)
	_, err = Load(filepath.Join(dir, "bad.yaml"))
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "broken.yaml")+":2:12: unknown action") {
		t.Fatalf("errors in an included file must name that file, got %v", err)
	}
}
