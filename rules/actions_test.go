package rules

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSetAction(t *testing.T) {
	runEvalCases(t, Options{}, []evalCase{
		{"set then use", `[{then: [{set: {box: work}}, {folder: '${base}/${box}/'}]}]`, plainMsg, Envelope{}, "folder:mail/work/"},
		{"set overrides vars", `[{then: [{set: {base: other}}, {folder: '${base}/'}]}]`, plainMsg, Envelope{}, "folder:other/"},
		{"several names, later ones see earlier ones", `[{then: [{set: {a: x, b: '${a}y'}}, {folder: '${b}/'}]}]`, plainMsg, Envelope{}, "folder:xy/"},
		{"set in a nested rule is seen by later rules", `[{if: {from: alice}, rules: [{then: {set: {who: alice}}}]}, {then: {folder: 'who-${who}/'}}]`, plainMsg, Envelope{}, "folder:who-alice/"},
		{"a rule that did not match sets nothing", `[{then: {set: {who: nobody}}}, {if: {from: bob}, then: {set: {who: bob}}}, {then: {folder: 'who-${who}/'}}]`, plainMsg, Envelope{}, "folder:who-nobody/"},
		// A set: value that holds message data is message data as a
		// whole: its own '/' is cleaned too.
		{"a capture stays message data through set", `[{if: {subject: '^(?P<s>.*)$'}, then: [{set: {box: 'x/${s}'}}, {folder: '${box}/'}]}]`, "Subject: ../../etc\n\nb\n", Envelope{}, "folder(confined):x_.._.._etc/"},
	})
}

// TestFolderNamesFromMessageData: values taken from the message lose
// every '/' and control character (C0, DEL and C1, also when they come
// from an encoded word), a whole "." or ".." becomes "_", other Unicode is
// kept, and the folder is marked Confined to the mail directory.
// Values from vars are the user's own and are kept as written.
func TestFolderNamesFromMessageData(t *testing.T) {
	tests := []struct {
		name, subject, want string
	}{
		{"slash", "a/b", "x/a_b/"},
		{"dot-dot path", "../../etc/passwd", "x/_._.._etc_passwd/"},
		{"dot", ".", "x/_/"},
		{"dot-dot", "..", "x/_./"},
		{"three dots", "...", "x/_../"},
		{"hidden file", ".bashrc", "x/_bashrc/"},
		{"the duplicate cache", ".msgid.cache", "x/_msgid.cache/"},
		{"a dot inside is kept", "a.b", "x/a.b/"},
		{"unicode kept", "日本語 Résumé", "x/日本語 Résumé/"},
		{"encoded slash", "=?utf-8?q?a=2Fb?=", "x/a_b/"},
		{"tab and C0 controls", "=?utf-8?q?a=09b=01c=1Bd?=", "x/a_b_c_d/"},
		{"DEL", "=?utf-8?q?a=7Fb?=", "x/a_b/"},
		{"C1 controls", "=?utf-8?q?a=C2=85b=C2=9Bc?=", "x/a_b_c/"},
		{"CR LF from an encoded word", "=?utf-8?q?a=0D=0Ab?=", "x/a__b/"},
		{"NUL", "=?utf-8?q?a=00b?=", "x/a_b/"},
		{"invalid UTF-8", "a\xffb", "x/a\uFFFDb/"},
		{"filters run before cleaning", "a_b", "x/a_b/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			folder := "'x/${s}/'"
			if strings.HasPrefix(tt.name, "filters") {
				folder = "'x/${s|replace _ /}/'"
			}
			cfg := mustParse(t, "rules: [{if: {subject: '(?s)^(?P<s>.*)$'}, then: {folder: "+folder+"}}]")
			d, err := NewEngine(cfg, Options{Default: "inbox/"}).Evaluate(context.Background(), []byte("Subject: "+tt.subject+"\n\nb\n"), EvalOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := summary(d); got != "folder(confined):"+tt.want {
				t.Errorf("got %q, want %q", got, "folder(confined):"+tt.want)
			}
		})
	}
	cfg := mustParse(t, "vars: {box: 'a/../b'}\nrules: [{then: {folder: '${box}/'}}]")
	d, err := NewEngine(cfg, Options{Default: "inbox/"}).Evaluate(context.Background(), []byte(plainMsg), EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := summary(d); got != "folder:a/../b/" {
		t.Errorf("a folder from the user's own vars: got %s", got)
	}
	cfg = mustParse(t, "rules: [{if: {subject: '^(?P<s>x*)'}, then: {folder: '${s}'}}]")
	_, err = NewEngine(cfg, Options{Default: "inbox/"}).Evaluate(context.Background(), []byte(plainMsg), EvalOptions{})
	var te *TargetError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "expands to an empty name") {
		t.Errorf("an empty folder name must fail the message with a TargetError, got %v", err)
	}
}

func TestLogAction(t *testing.T) {
	cfg := mustParse(t, `rules:
  - if: {subject: '(?s)^(?P<s>.*)$'}
    then:
      - log: 'first ${s}'
      - log: 'size ${size} from ${sender}'
      - discard
`)
	msg := "Subject: =?utf-8?q?two=0D=0Alines?=\n\nb\n"
	d, err := NewEngine(cfg, Options{Default: "inbox/"}).Evaluate(context.Background(), []byte(msg), EvalOptions{Envelope: Envelope{Sender: "a@b.example"}, Trace: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"first two  lines", fmt.Sprintf("size %d from a@b.example", len(msg))}
	if strings.Join(d.Logs, "|") != strings.Join(want, "|") {
		t.Errorf("logs %q, want %q (a line break from the message must not start a log line)", d.Logs, want)
	}
	if got := summary(d); got != "discard" {
		t.Errorf("got %s", got)
	}
	if !strings.Contains(strings.Join(d.Trace, "\n"), "discard") {
		t.Errorf("trace does not show the discard:\n%s", strings.Join(d.Trace, "\n"))
	}
}

func TestDiscardAndStop(t *testing.T) {
	runEvalCases(t, Options{}, []evalCase{
		{"discard counts as delivered", `[{if: {from: alice}, then: discard}, {then: {folder: never/}}]`, plainMsg, Envelope{}, "discard"},
		{"discard written as a mapping", `[{then: {discard: true}}]`, plainMsg, Envelope{}, "discard"},
		{"copy then discard", `[{then: [{copy: kept/}, discard]}]`, plainMsg, Envelope{}, "copy:kept/ discard"},
		{"stop after a copy: the default folder still gets it", `[{then: [{copy: c/}, stop]}, {then: {folder: never/}}]`, plainMsg, Envelope{}, "copy:c/ default:inbox/"},
		{"stop after a continued pipe", `[{then: [{pipe: [/bin/cat], continue: true}, stop]}]`, plainMsg, Envelope{}, "pipe:/bin/cat default:inbox/"},
		{"stop after a continued forward", `[{then: [{forward: a@b.example, continue: true}, {stop: true}]}]`, plainMsg, Envelope{}, "forward:/usr/sbin/sendmail -oi a@b.example default:inbox/"},
		{"stop in a nested rule ends everything", `[{if: {from: alice}, rules: [{then: stop}, {then: {folder: never/}}]}, {then: {folder: never2/}}]`, plainMsg, Envelope{}, "default:inbox/"},
		{"stop skips the rest of the actions", `[{then: [stop, {copy: never/}]}]`, plainMsg, Envelope{}, "default:inbox/"},
		{"several folders in one action", `[{then: {folder: [a/, b.mbox, c/.]}}]`, plainMsg, Envelope{}, "folder:a/ folder:b.mbox folder:c/."},
		{"several copies", `[{then: [{copy: [a/, b/]}, {folder: c/}]}]`, plainMsg, Envelope{}, "copy:a/ copy:b/ folder:c/"},
	})
}

func TestForwardAction(t *testing.T) {
	tests := []struct {
		name, rules, subject string
		want                 string // summary, or "error: <text>"
	}{
		{"captured recipient", `[{if: {subject: '^to (?P<r>\S+)$'}, then: {forward: '${r}'}}]`, "to bob@example.net", "forward:/usr/sbin/sendmail -oi bob@example.net"},
		{"captured option is refused", `[{if: {subject: '^to (?P<r>\S+)$'}, then: {forward: '${r}'}}]`, "to -oQ/tmp/evil", `error: forward: bad recipient "-oQ/tmp/evil"`},
		{"captured blanks before an option", `[{if: {subject: '^to (?P<r>.+)$'}, then: {forward: '${r}'}}]`, "to   -bs", `error: forward: bad recipient "-bs"`},
		{"empty recipient is refused", `[{if: {subject: '^to (?P<r>.*)$'}, then: {forward: '${r}'}}]`, "to ", `error: forward: bad recipient ""`},
		{"line breaks in a captured recipient", `[{if: {subject: '(?s)^to (?P<r>.*)$'}, then: {forward: '${r}'}}]`, "to =?utf-8?q?a@b.example=0D=0A-oX?=", "forward:/usr/sbin/sendmail -oi a@b.example  -oX"},
		{"continue", `[{then: [{forward: [a@b.example, c@d.example], continue: true}, {folder: kept/}]}]`, "s", "forward:/usr/sbin/sendmail -oi a@b.example c@d.example folder:kept/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustParse(t, "rules: "+tt.rules)
			d, err := NewEngine(cfg, Options{Default: "inbox/"}).Evaluate(context.Background(), []byte("Subject: "+tt.subject+"\n\nb\n"), EvalOptions{})
			if want, ok := strings.CutPrefix(tt.want, "error: "); ok {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("want an error with %s, got %v", want, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := summary(d); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	// The rules' sendmail setting, expanded from the environment.
	cfg := mustParse(t, "sendmail: ['${HOME}/bin/msmtp', --read-envelope-from]\nrules: [{then: {forward: a@b.example}}]")
	d, err := NewEngine(cfg, Options{Default: "inbox/", Vars: map[string]string{"HOME": "/home/u"}}).Evaluate(context.Background(), []byte(plainMsg), EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := summary(d); got != "forward:/home/u/bin/msmtp --read-envelope-from a@b.example" {
		t.Errorf("sendmail setting: got %s", got)
	}
}

// TestFilterHeaderOnly: with header-only, the program gets the header
// (with its blank line) and its output replaces the header; the body is
// kept. Output without a blank line glues the body on, as procmail's fh.
func TestFilterHeaderOnly(t *testing.T) {
	var got []byte
	r := &fakeRunner{output: map[string]func([]byte) []byte{
		"tag": func(in []byte) []byte {
			got = append([]byte(nil), in...)
			return bytes.Replace(in, []byte("Subject: s\n"), []byte("Subject: [tagged] s\n"), 1)
		},
		"noblank": func(in []byte) []byte { return []byte("X-Only: 1\n") },
	}}
	msg := "From a@b.example  Mon Jan  1 00:00:00 2024\nSubject: s\nX-A: 1\n\nbody line\nSubject: not a header\n"
	tests := []struct {
		prog, want string
	}{
		{"tag", "From a@b.example  Mon Jan  1 00:00:00 2024\nSubject: [tagged] s\nX-A: 1\n\nbody line\nSubject: not a header\n"},
		{"noblank", "X-Only: 1\nbody line\nSubject: not a header\n"},
	}
	for _, tt := range tests {
		cfg := mustParse(t, "rules: [{then: [{filter: ["+tt.prog+"], header-only: true}, {folder: out/}]}]")
		d, err := NewEngine(cfg, Options{Default: "inbox/", Runner: r}).Evaluate(context.Background(), []byte(msg), EvalOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if s := string(d.Steps[0].Msg); s != tt.want {
			t.Errorf("%s: message\n%q\nwant\n%q", tt.prog, s, tt.want)
		}
	}
	if want := "From a@b.example  Mon Jan  1 00:00:00 2024\nSubject: s\nX-A: 1\n\n"; string(got) != want {
		t.Errorf("the filter got\n%q\nwant only the header\n%q", got, want)
	}
}

// TestFilterChangesLaterRules: a filter's output is what later rules see
// and what later deliveries write; a copy before it keeps the old one.
func TestFilterChangesLaterRules(t *testing.T) {
	r := &fakeRunner{output: map[string]func([]byte) []byte{
		"spam": func(in []byte) []byte { return append([]byte("X-Spam-Flag: YES\n"), in...) },
	}}
	cfg := mustParse(t, `rules:
  - then: [{copy: before/}, {filter: [spam]}]
  - if: {header: {X-Spam-Flag: YES}}
    then: {folder: spam/}
`)
	d, err := NewEngine(cfg, Options{Default: "inbox/", Runner: r}).Evaluate(context.Background(), []byte(plainMsg), EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := summary(d); got != "copy:before/ folder:spam/" {
		t.Fatalf("got %s", got)
	}
	if bytes.Contains(d.Steps[0].Msg, []byte("X-Spam")) || !bytes.HasPrefix(d.Steps[1].Msg, []byte("X-Spam-Flag: YES\n")) {
		t.Errorf("copy %q, folder %q", d.Steps[0].Msg, d.Steps[1].Msg)
	}
}

// TestIncludeVars: the vars of an included file are defined from where
// the include stands, can use the including file's vars, and are seen by
// its rules and by the rules after the include.
func TestIncludeVars(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"rules.yaml": `vars: {base: mail}
rules:
  - if: {subject: early}
    then: {folder: 'early-${ld}/'}
  - include: lists.yaml
  - if: {subject: late}
    then: {folder: '${ld}/late/'}
  - if: {subject: nested}
    rules:
      - include: sub/more.yaml
`,
		"lists.yaml": `vars: {ld: '${base}/lists'}
rules:
  - if: {list-id: '^(?P<l>[a-z]+)\.'}
    then: {folder: '${ld}/${l}/'}
`,
		"sub/more.yaml": `vars: {deep: '${ld}/deep'}
rules:
  - then: {folder: '${deep}/'}
`,
	}
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := Load(filepath.Join(dir, "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for msg, want := range map[string]string{
		"List-Id: <golang.example.org>\nSubject: s\n\nb\n": "folder(confined):mail/lists/golang/",
		"Subject: late\n\nb\n":                             "folder:mail/lists/late/",
		"Subject: nested\n\nb\n":                           "folder:mail/lists/deep/",
		// Before the include ran, ${ld} is still empty.
		"Subject: early\n\nb\n": "folder:early-/",
		"Subject: none\n\nb\n":  "default:inbox/",
	} {
		d, err := NewEngine(cfg, Options{Default: "inbox/"}).Evaluate(context.Background(), []byte(msg), EvalOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := summary(d); got != want {
			t.Errorf("%q: got %s, want %s", msg, got, want)
		}
	}
}
