package rules

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
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
		{"size beyond int64", "rules:\n  - if: {size: '> 10000000000G'}\n    then: discard\n",
			`rules.yaml:2:16: size bound "> 10000000000G" is larger than any message can be (at most 4294967296G)`},
		{"size just beyond 2^62", "rules:\n  - if: {size: '< 4294967296.5G'}\n    then: discard\n",
			`rules.yaml:2:16: size bound "< 4294967296.5G" is larger than any message can be (at most 4294967296G)`},
		{"score bound not finite", "rules:\n  - if: {score: {terms: [{weight: 1, subject: x}], above: Inf}}\n    then: discard\n",
			`rules.yaml:2:59: above must be a finite number, found "Inf"`},
		{"weight NaN", "rules:\n  - if: {score: {terms: [{weight: NaN, subject: x}], above: 1}}\n    then: discard\n",
			`rules.yaml:2:35: weight must be a finite number, found "NaN"`},
		{"unknown variable", "rules:\n  - then: {folder: 'lists/${lst}/'}\n",
			`rules.yaml:2:27: unknown variable "lst" (define it under vars:, capture it with (?P<lst>...) in this rule's if:, or use one of DEFAULT, HOME, HOST, LOGNAME, MAILDIR, USER, date, last_folder, recipient, reply_address, score, sender, size)`},
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
			`rules.yaml:3:21: unknown filter "title" (known: lower, upper, trim, replace OLD NEW, sub /REGEX/REPLACEMENT/, or TEXT, strftime FORMAT)`},
		{"capture out of scope", "rules:\n  - if: {subject: '(?P<s>.*)'}\n    then: {copy: 'a/'}\n  - then: {folder: '${s}/'}\n",
			`rules.yaml:4:21: unknown variable "s" (define it under vars:, capture it with (?P<s>...) in this rule's if:, or use one of DEFAULT, HOME, HOST, LOGNAME, MAILDIR, USER, date, last_folder, recipient, reply_address, score, sender, size)`},
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
	if owner, ok := ownerOf(mustStat(t, path)); ok && groupIsOwners(uint32(owner), mustGroup(t, path)) {
		if _, err := Load(path); err != nil {
			t.Fatalf("a file writable by its owner's private group is fine: %v", err)
		}
	}
	os.Chown(path, -1, sharedGroup(t))
	var ie *InsecureError
	if _, err := Load(path); !errors.As(err, &ie) || !strings.Contains(err.Error(), "writable by group or others") {
		t.Fatalf("a rules file writable by a shared group must be refused, got %v", err)
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

// TestLoadErrorsPerKind gives each condition and action a mistake and
// checks the exact error line.
func TestLoadErrorsPerKind(t *testing.T) {
	// Each mistake is on line 3 (if:) or line 4 (then:).
	tests := []struct {
		cond, then, want string // cond: the if: value; then: the action
	}{
		{`{from: {adress: a@b}}`, "", `3:17: unknown address part "adress" (did you mean "address"?)`},
		{`{to: {}}`, "", `3:14: an empty mapping: write a regex, or an address test like {address: a@example.org}`},
		{`{cc: {address: []}}`, "", `3:24: address is an empty list`},
		{`{subject: {raw: true}}`, "", `3:19: subject needs a regex: key`},
		{`{subject: {regex: x, decoded: true}}`, "", `3:30: unknown subject option "decoded" (known: regex, case-sensitive, raw)`},
		{`{reply-to: {regex: x, raw: maybe}}`, "", `3:36: raw must be true or false, found "maybe"`},
		{`{list-id: {regex: x, raw: true}}`, "", `3:30: unknown list-id option "raw" (known: regex, case-sensitive)`},
		{`{header: [X-Spam]}`, "", `3:18: header must map field names to regexes, like {X-Spam-Flag: '^YES'}`},
		{`{header: {'X Spam': x}}`, "", `3:19: bad header field name "X Spam"`},
		{`{headers: {regex: x, raw: true}}`, "", `3:30: unknown headers option "raw" (known: regex, case-sensitive, decoded)`},
		{`{body: {regex: x, decoded: true}}`, "", `3:27: unknown body option "decoded" (known: regex, case-sensitive, raw)`},
		{`{size: '>'}`, "", `3:16: size must be like '> 100k' or '< 2M' (units k, M, G of 1024), found ">"`},
		{`{exists: []}`, "", `3:18: exists is an empty list`},
		{`{envelope-from: '('}`, "", "3:25: bad regex \"(\": missing closing ): `(`"},
		{`{envelope-to: '\>'}`, "", `3:23: bad regex "\\>": procmail's \> is not a word boundary here: write \b`},
		{`{var: {a: x, b: y}}`, "", `3:15: var takes one variable and a regex, like {var: {list: '^golang'}}`},
		{`{var: {lst: x}}`, "", `3:16: unknown variable "lst" (did you mean "list"?)`},
		{`{all: []}`, "", `3:15: all takes a non-empty list of conditions`},
		{`{any: {subject: x}}`, "", `3:15: any takes a non-empty list of conditions`},
		{`{not: []}`, "", `3:15: empty condition list`},
		{`{score: [1]}`, "", `3:17: score takes {terms: [...], above: N}`},
		{`{score: {above: 1}}`, "", `3:17: score has no terms: (write {terms: [{weight: W, <condition>}], above: N})`},
		{`{score: {terms: []}}`, "", `3:25: terms takes a non-empty list of {weight: W, <condition>}`},
		{`{score: {terms: [{subject: x}]}}`, "", `3:26: score term needs a weight`},
		{`{score: {terms: [{weight: 1}]}}`, "", `3:26: score term needs a condition`},
		{`{score: {terms: [{weight: x, subject: y}]}}`, "", `3:35: weight must be a number, found "x"`},
		{`{score: {above: high, terms: [{weight: 1, subject: y}]}}`, "", `3:25: above must be a number, found "high"`},
		{`{program: 'spamc -c'}`, "", `3:19: program must be a list of arguments like [spamc, -c]; mfilter runs no shell, so "spamc -c" cannot be split for you`},
		{`{program: {command: [x], timeout: -1s}}`, "", `3:43: timeout must be a positive duration like 30s or 2m, found "-1s"`},
		{`{program: {cmd: [x]}}`, "", `3:20: unknown program option "cmd" (known: command, timeout, input)`},
		{`{duplicate: false}`, "", `3:21: duplicate: false never holds; remove the condition instead`},
		{`{duplicate: {size: 10}}`, "", `3:28: size must be from 64 bytes to 67108864 (64 MiB)`},
		{`{duplicate: {size: 1e30}}`, "", `3:28: size must be from 64 bytes to 67108864 (64 MiB)`},
		{`{duplicate: {chache: x}}`, "", `3:22: unknown duplicate option "chache" (did you mean "cache"?)`},
		{`{dkim: maybe}`, "", `3:16: dkim result must be pass, fail or none, not "maybe"`},
		{`{dkim: {result: pass, domian: x}}`, "", `3:31: unknown dkim option "domian" (did you mean "domain"?)`},
		{`{auth-results: {dkim: good}}`, "", `3:31: unknown result "good" (known: pass, fail, none, neutral, softfail, temperror, permerror, policy)`},
		{`{auth-results: pass}`, "", `3:24: auth-results takes {dkim: pass}, {spf: pass} or {dmarc: pass}`},
		{`duplicat`, "", `3:9: a condition must be a mapping like {subject: regex}, found "duplicat"`},
		{`{}`, "", `3:9: empty condition`},
		{"", `{folder: []}`, `4:20: folder is an empty list`},
		{"", `{copy: ''}`, `4:19: the folder name is empty (write inbox/ for a maildir, inbox for an mbox)`},
		{"", `{pipe: [x], timeout: soon}`, `4:32: timeout must be a positive duration like 30s or 2m, found "soon"`},
		{"", `{pipe: [x], continue: perhaps}`, `4:33: continue must be true or false, found "perhaps"`},
		{"", `{pipe: [x], header-only: true}`, `4:23: unknown pipe option "header-only" (known: pipe, timeout, continue, ignore-exit, input, fallback)`},
		{"", `{forward: a@b, sendmail: []}`, `4:36: sendmail is an empty list`},
		{"", `{discard: false}`, `4:21: discard: false does nothing; remove it`},
		{"", `{stop: no}`, `4:18: stop: false does nothing; remove it`},
		{"", `dicsard`, `4:11: unknown action "dicsard" (did you mean "discard"?); to deliver to a folder write {folder: dicsard}`},
		{"", `{add-header: 'no colon'}`, `4:24: add-header takes a whole field like 'X-Label: work', found "no colon"`},
		{"", `{set-header: 'X Bad: x'}`, `4:24: bad header field name "X Bad"`},
		{"", `{supersede-header: 'bad name: y'}`, `4:30: bad header field name "bad name"`},
		{"", `{add-header-if-missing: ': y'}`, `4:35: add-header-if-missing takes a whole field like 'X-Label: work', found ": y"`},
		{"", `{remove-header: 'X Bad'}`, `4:27: bad header field name "X Bad"`},
		{"", `{rename-header: X-A}`, `4:27: rename-header takes {from: Old-Name, to: New-Name}`},
		{"", `{rename-header: {from: X-A}}`, `4:27: rename-header needs both from: and to:`},
		{"", `{filter: [x], on-failure: drop}`, `4:37: on-failure must be keep (go on with the unfiltered message), retry (exit 75) or use-output (take what the program printed, as procmail's f without w), not "drop"`},
		{"", `{filter: [x], continue: true}`, `4:25: unknown filter option "continue" (known: filter, timeout, header-only, on-failure, input)`},
		{"", `{set: {HOME: x}}`, `4:18: HOME is a built-in variable and cannot be redefined`},
		{"", `{set: {'a b': x}}`, `4:18: bad variable name "a b" (letters, digits, _, - and .)`},
		{"", `{log: [a]}`, `4:17: log must be a string, found a list`},
		{"", `{log: '${lst}'}`, `4:18: unknown variable "lst" (did you mean "list"?)`},
		{"", `[{}]`, `4:12: an empty action: write one like {folder: inbox/}`},
		{"", `{folder: a/, timeout: 5s}`, `4:24: unknown folder option "timeout" (known: folder, fallback)`},
	}
	for _, tt := range tests {
		cond, then := tt.cond, tt.then
		if cond == "" {
			cond = "{subject: x}"
		}
		if then == "" {
			then = "discard"
		}
		src := "vars: {list: l}\nrules:\n  - if: " + cond + "\n    then: " + then + "\n"
		_, err := Parse("rules.yaml", []byte(src))
		if err == nil || err.Error() != "rules.yaml:"+tt.want {
			t.Errorf("%s\ngot  %v\nwant rules.yaml:%s", src, err, tt.want)
		}
	}
}

// TestExampleUsesEveryKind loads rules.example.yaml, which claims to use
// every feature, and checks that every condition and action is in it and
// that the loader built each from its YAML.
func TestExampleUsesEveryKind(t *testing.T) {
	path := filepath.Join("..", "rules.example.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(path, data)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var cond func(Cond)
	cond = func(c Cond) {
		seen[fmt.Sprintf("%T", c)] = true
		switch c := c.(type) {
		case *AllCond:
			for _, cc := range c.Conds {
				cond(cc)
			}
		case *AnyCond:
			for _, cc := range c.Conds {
				cond(cc)
			}
		case *NotCond:
			cond(c.Cond)
		case *ScoreCond:
			for _, t := range c.Terms {
				cond(t.Cond)
			}
		case *AddressCond:
			seen["address:"+c.Part] = true
		}
	}
	var walk func([]*Rule)
	walk = func(rs []*Rule) {
		for _, r := range rs {
			if r.If != nil {
				cond(r.If)
			}
			for _, a := range r.Then {
				seen[fmt.Sprintf("%T", a)] = true
				switch a := a.(type) {
				case *HeaderAction:
					seen["header:"+a.Op] = true
				case *FolderAction:
					seen[fmt.Sprintf("folder copy=%v", a.Copy)] = true
					if len(a.Fallback) > 0 {
						seen["fallback"] = true
					}
				case *PipeAction:
					seen["pipe input:"+a.Input] = true
				case *SetAction:
					for _, v := range a.Vars {
						if v.Program != nil {
							seen["output-of"] = true
						}
					}
				}
			}
			walk(r.Rules)
		}
	}
	walk(cfg.Rules)
	for _, want := range []string{
		"*rules.HeaderCond", "*rules.AddressCond", "*rules.ListIDCond", "*rules.HeadersCond", "*rules.BodyCond",
		"*rules.SizeCond", "*rules.ExistsCond", "*rules.EnvelopeCond", "*rules.VarCond", "*rules.AllCond",
		"*rules.AnyCond", "*rules.NotCond", "*rules.ScoreCond", "*rules.ProgramCond", "*rules.DuplicateCond",
		"*rules.DKIMCond", "*rules.AuthResultsCond",
		"address:address", "address:domain",
		"*rules.FolderAction", "folder copy=true", "folder copy=false", "*rules.PipeAction", "*rules.ForwardAction",
		"*rules.DiscardAction", "*rules.StopAction", "*rules.HeaderAction", "*rules.FilterAction", "*rules.SetAction", "*rules.LogAction", "*rules.FlagsAction",
		"*rules.ReplyAction", "fallback", "pipe input:body", "output-of",
		"header:add", "header:add-if-missing", "header:set", "header:supersede", "header:remove", "header:rename",
	} {
		if !seen[want] {
			t.Errorf("rules.example.yaml has no %s", want)
		}
	}
	if cfg.LogFormat == nil || len(cfg.TrustedAuthServIDs) == 0 || len(cfg.Sendmail) == 0 || len(cfg.Vars) == 0 {
		t.Errorf("settings missing from the example: %+v", cfg)
	}
}

// TestIncludeNotRegular: an include must be a regular file; /dev/stdin
// would read the message being filed, /dev/zero would never end.
func TestIncludeNotRegular(t *testing.T) {
	dir := t.TempDir()
	for _, inc := range []string{"/dev/zero", "/dev/stdin", dir} {
		_, err := Parse("rules.yaml", []byte("rules:\n  - include: "+inc+"\n"))
		want := "rules.yaml:2:14: include " + inc + ": not a regular file"
		if err == nil || err.Error() != want {
			t.Errorf("got %v, want %s", err, want)
		}
	}
}

// TestIncludeSecurity: an included file that others could change is
// refused as the top file is (an InsecureError, exit 77), not reported as
// a mistake in the rules.
func TestIncludeSecurity(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	top := filepath.Join(dir, "rules.yaml")
	inc := filepath.Join(dir, "sub", "lists.yaml")
	os.MkdirAll(filepath.Dir(inc), 0o755)
	os.WriteFile(top, []byte("rules:\n  - include: sub/lists.yaml\n  - then: {folder: inbox/}\n"), 0o644)
	os.WriteFile(inc, []byte("rules:\n  - if: {list-id: x}\n    then: {folder: x/}\n"), 0o644)
	if _, err := Load(top); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path string
		mode os.FileMode
		want string
	}{
		{inc, 0o664, inc + ": refusing insecure rules file: it is writable by group or others (mode 0664); run chmod go-w " + inc},
		{filepath.Dir(inc), 0o777, inc + ": refusing insecure rules file: its directory " + filepath.Dir(inc) + " is writable by group or others (mode 0777)"},
	} {
		os.Chmod(tt.path, tt.mode)
		os.Chown(tt.path, -1, sharedGroup(t))
		_, err := Load(top)
		var ie *InsecureError
		if !errors.As(err, &ie) || err.Error() != tt.want {
			t.Errorf("mode %04o: got %T %v\nwant InsecureError %s", tt.mode, err, err, tt.want)
		}
		os.Chmod(tt.path, 0o755)
		os.Chmod(inc, 0o644)
	}
}

// TestCheckRefusesWhatDeliveryCannotDo: what check lets through must not
// fail or explode at delivery (issue 13, finding 12).
func TestCheckRefusesWhatDeliveryCannotDo(t *testing.T) {
	doubling := "vars:\n  v0: xxxxxxxxxxxxxxxx\n"
	for i := 1; i <= 40; i++ {
		doubling += fmt.Sprintf("  v%d: '${v%d}${v%d}'\n", i, i-1, i-1)
	}
	doubling += "rules:\n  - then: {folder: 'a/${v40}/'}\n"
	dataDoubling := "rules:\n  - if: {subject: '(?P<s>.*)'}\n    then:\n"
	for i := 0; i < 6; i++ {
		dataDoubling += "      - set: {s: '${s}${s}'}\n"
	}
	dataDoubling += "      - folder: 'a/'\n"
	tests := []struct{ name, src, want string }{
		{"header split by a newline", "rules:\n  - then: [{add-header: \"X-C: a\\n\\nbody\"}, {folder: a/}]\n",
			"would end the header there"},
		{"header with a bare newline", "rules:\n  - then: [{set-header: \"X-C: a\\nX-D: b\"}, {folder: a/}]\n",
			"a newline not followed by a space or tab"},
		{"header with a carriage return", "rules:\n  - then: [{add-header: \"X-C: a\\rb\"}, {folder: a/}]\n",
			"a carriage return"},
		{"log from message data", "log: '${sender}.log'\nrules: []\n", "log is a plain path"},
		{"default from message data", "default: 'by/${sender}/'\nrules: []\n", "default is a plain path"},
		{"maildir from a variable", "maildir: '${HOME}/Mail'\nrules: []\n", "maildir is a plain path"},
		{"default root", "default: /\nrules: []\n", "names the root directory"},
		{"default root maildir", "default: /tmp/../\nrules: []\n", "names the root directory"},
		{"default root MH", "default: /./.\nrules: []\n", "names the root directory"},
		{"folder root", "rules:\n  - then: {folder: /./}\n", "names the root directory"},
		{"doubling vars", doubling, "can expand to more than"},
		{"doubling message data", dataDoubling, "can expand to more than"},
		{"replace that grows", "rules:\n  - if: {subject: '(?P<s>.*)'}\n    then: {folder: 'a/${s|replace a aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa}/'}\n",
			"can expand to more than"},
		{"huge regex", "rules:\n  - if: {subject: '" + strings.Repeat("abcdefg|", 9000) + "x'}\n    then: discard\n",
			"longer than the 65536 a pattern may have"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("rules.yaml", []byte(tt.src))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
	for _, ok := range []string{
		"rules:\n  - then: [{add-header: \"X-C: a\\n\\tcontinued\"}, {folder: a/}]\n",
		"vars: {a: '${HOME}/x', b: '${a}/${a}'}\nrules:\n  - if: {subject: '(?P<s>.*)'}\n    then: {folder: 'a/${s}-${s}-${b}/'}\n",
		"default: ~/Maildir/\nlog: ~/mail.log\nmaildir: ~/Mail\nrules: []\n",
	} {
		if _, err := Parse("rules.yaml", []byte(ok)); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
}

// TestExpandIsBounded: message data that grows past what check can see
// is cut at MaxExpansion.
func TestExpandIsBounded(t *testing.T) {
	tmpl, err := parseTemplate(Pos{}, "a/${s}${s}/")
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", MaxExpansion)
	got, _ := tmpl.Expand(func(string) (string, bool) { return big, true }, nil)
	if len(got) != MaxExpansion {
		t.Errorf("expanded to %d bytes, want %d", len(got), MaxExpansion)
	}
}

// TestSecuritySymlink: a rules file that is a symbolic link counts with
// the file it names: a target in a directory others may write is refused
// (the check looked at the link's directory only), and so is a link in
// such a directory to a safe file (the link itself can be replaced).
func TestSecuritySymlink(t *testing.T) {
	safe := t.TempDir()
	os.Chmod(safe, 0o755)
	open := t.TempDir()
	os.Chmod(open, 0o777)
	sticky := t.TempDir()
	os.Chmod(sticky, 0o777|os.ModeSticky)
	write := func(dir string) string {
		p := filepath.Join(dir, "target.yaml")
		if err := os.WriteFile(p, []byte("default: inbox/\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	link := func(dir, name, target string) string {
		p := filepath.Join(dir, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var ie *InsecureError
	intoOpen := link(safe, "into-open.yaml", write(open))
	if _, err := Load(intoOpen); !errors.As(err, &ie) || !strings.Contains(err.Error(), open) {
		t.Errorf("a link to a file in a 0777 directory: got %v, want it refused naming %s", err, open)
	}
	// Two links: safe -> sticky (fine) -> open.
	hop := link(sticky, "hop.yaml", filepath.Join(open, "target.yaml"))
	if _, err := Load(link(safe, "two-hops.yaml", hop)); !errors.As(err, &ie) {
		t.Errorf("a chain of links ending in a 0777 directory: got %v, want it refused", err)
	}
	target := write(safe)
	if _, err := Load(link(open, "from-open.yaml", target)); !errors.As(err, &ie) {
		t.Errorf("a link in a 0777 directory: got %v, want it refused", err)
	}
	if _, err := Load(link(sticky, "relative.yaml", "../"+filepath.Base(safe)+"/target.yaml")); err != nil {
		t.Errorf("a relative link from a sticky directory to a safe file: %v", err)
	}
	if _, err := Load(link(safe, "safe.yaml", "target.yaml")); err != nil {
		t.Errorf("a link between safe places: %v", err)
	}
}

func mustStat(t *testing.T, path string) os.FileInfo {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func mustGroup(t *testing.T, path string) uint32 {
	t.Helper()
	gid, ok := groupOf(mustStat(t, path))
	if !ok {
		t.Fatal("no group")
	}
	return gid
}

// sharedGroup is a group that is not the test user's private group: the
// system's mail group, whose gid is user mail's primary group.
func sharedGroup(t *testing.T) int {
	t.Helper()
	g, err := user.LookupGroup("mail")
	if err != nil {
		t.Fatal(err)
	}
	gid, _ := strconv.Atoi(g.Gid)
	if groupIsOwners(uint32(os.Geteuid()), uint32(gid)) {
		t.Fatalf("group mail (%d) is the test user's private group", gid)
	}
	return gid
}

func TestPrivateGroup(t *testing.T) {
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	group := filepath.Join(dir, "group")
	os.WriteFile(passwd, []byte("root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nbob:x:1001:1001::/home/bob:/bin/sh\ncarol:x:1002:100::/home/carol:/bin/sh\ndave:x:1003:100::/home/dave:/bin/sh\nerin:x:1004:1004::/:/bin/sh\n"), 0o644)
	os.WriteFile(group, []byte("root:x:0:\nusers:x:100:\nalice:x:1000:\nbob:x:1001:alice\nerin:x:1004:erin\nstaff:x:50:alice\n"), 0o644)
	for _, tt := range []struct {
		uid, gid uint32
		want     bool
	}{
		{1000, 1000, true},  // alice's own group, no members
		{1004, 1004, true},  // erin's, with erin as its member
		{1001, 1001, false}, // bob's, but alice is a member
		{1000, 1001, false}, // not alice's primary group
		{1002, 100, false},  // carol's primary group, dave's too
		{1000, 50, false},   // a group alice is in
		{1000, 999, false},  // no such group
		{4242, 1000, false}, // no such user
	} {
		if got := privateGroup(passwd, group, tt.uid, tt.gid); got != tt.want {
			t.Errorf("privateGroup(uid %d, gid %d) = %v, want %v", tt.uid, tt.gid, got, tt.want)
		}
	}
	os.WriteFile(group, []byte("alice:x:1000:\n+::::\n"), 0o644)
	if privateGroup(passwd, group, 1000, 1000) {
		t.Error("a group file that includes NIS entries must not be trusted")
	}
}
