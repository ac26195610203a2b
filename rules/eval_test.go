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

	"github.com/mfilter/mfilter/internal/runprog"
)

// fakeRunner answers program runs from a table keyed by argv[0].
type fakeRunner struct {
	exit   map[string]int
	output map[string]func(stdin []byte) []byte
	err    map[string]error
	calls  []string
}

func (f *fakeRunner) Run(_ context.Context, argv []string, stdin []byte, _ runprog.Options) (runprog.Result, error) {
	f.calls = append(f.calls, strings.Join(argv, " "))
	if err := f.err[argv[0]]; err != nil {
		return runprog.Result{}, err
	}
	res := runprog.Result{Exit: f.exit[argv[0]]}
	if out := f.output[argv[0]]; out != nil {
		res.Stdout = out(stdin)
	}
	return res, nil
}

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	cfg, err := Parse("rules.yaml", []byte(src))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, src)
	}
	return cfg
}

// summary renders steps compactly: folder:X, copy:X, pipe:argv,
// forward:argv, discard, default:X.
func summary(d *Decision) string {
	var out []string
	for _, s := range d.Steps {
		switch s.Kind {
		case StepFolder:
			k := "folder"
			if s.Copy {
				k = "copy"
			}
			if s.Default {
				k = "default"
			}
			if s.Confined {
				k += "(confined)"
			}
			out = append(out, k+":"+s.Folder)
		case StepPipe:
			out = append(out, "pipe:"+strings.Join(s.Argv, " "))
		case StepForward:
			out = append(out, "forward:"+strings.Join(s.Argv, " "))
		case StepDiscard:
			out = append(out, "discard")
		}
	}
	return strings.Join(out, " ")
}

const (
	plainMsg = "From: Alice Example <alice@example.com>\nTo: Bob <bob@example.org>\nCc: carol@lists.example.net\nSubject: Hello there\nMessage-ID: <m1@example.com>\n\nHello Bob,\nthe meeting is at noon.\n"
	listMsg  = "From: dev@example.com\nTo: golang-nuts@googlegroups.com\nList-Id: Go Nuts <golang-nuts.googlegroups.com>\nSubject: [go-nuts] generics\n\nbody\n"
	encMsg   = "From: =?iso-8859-1?Q?Andr=E9?= <andre@example.fr>\nTo: me@example.org\nSubject: =?UTF-8?Q?R=C3=A9sum=C3=A9_for_review?=\n\nbody\n"
	spamMsg  = "From: win@spam.example\nTo: me@example.org\nX-Spam-Flag: YES\nX-Spam-Level: *****\nSubject: you won\n\nclick to unsubscribe here\nfree free free\n"
	b64Msg   = "From: a@b.example\nTo: me@example.org\nSubject: encoded body\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\ndW5zdWJzY3JpYmUgaGVyZQo=\n"
)

func TestConditions(t *testing.T) {
	tests := []struct {
		name  string
		rules string
		msg   string
		env   Envelope
		want  string
	}{
		{"subject regex", `[{if: {subject: '^hello'}, then: {folder: a/}}]`, plainMsg, Envelope{}, "folder:a/"},
		{"subject case-insensitive by default", `[{if: {subject: 'HELLO THERE'}, then: {folder: a/}}]`, plainMsg, Envelope{}, "folder:a/"},
		{"subject case-sensitive", `[{if: {subject: {regex: 'HELLO', case-sensitive: true}}, then: {folder: a/}}]`, plainMsg, Envelope{}, "default:inbox/"},
		{"subject decoded (utf-8 Q)", `[{if: {subject: 'résumé'}, then: {folder: jobs/}}]`, encMsg, Envelope{}, "folder:jobs/"},
		{"subject raw keeps the encoded word", `[{if: {subject: {regex: 'résumé', raw: true}}, then: {folder: jobs/}}]`, encMsg, Envelope{}, "default:inbox/"},
		{"subject raw matches encoded text", `[{if: {subject: {regex: '=\?UTF-8\?Q\?R=C3=A9sum', raw: true}}, then: {folder: raw/}}]`, encMsg, Envelope{}, "folder:raw/"},
		{"from decoded iso-8859-1", `[{if: {from: '^André <'}, then: {folder: fr/}}]`, encMsg, Envelope{}, "folder:fr/"},
		{"missing header", `[{if: {subject: '.'}, then: {folder: a/}}]`, "From: x\n\nbody\n", Envelope{}, "default:inbox/"},
		{"to-or-cc looks at cc", `[{if: {to-or-cc: 'carol@'}, then: {folder: a/}}]`, plainMsg, Envelope{}, "folder:a/"},
		{"header any field", `[{if: {header: {X-Spam-Flag: '^YES$'}}, then: {folder: spam/}}]`, spamMsg, Envelope{}, "folder:spam/"},
		{"header several fields all must hold", `[{if: {header: {X-Spam-Flag: YES, X-Spam-Level: '^\*{6}'}}, then: {folder: spam/}}]`, spamMsg, Envelope{}, "default:inbox/"},
		{"address domain", `[{if: {from: {domain: example.com}}, then: {folder: a/}}]`, plainMsg, Envelope{}, "folder:a/"},
		{"address domain matches subdomains", `[{if: {cc: {domain: example.net}}, then: {folder: a/}}]`, plainMsg, Envelope{}, "folder:a/"},
		{"address domain is not a substring match", `[{if: {from: {domain: ample.com}}, then: {folder: a/}}]`, plainMsg, Envelope{}, "default:inbox/"},
		{"address exact", `[{if: {to: {address: BOB@example.org}}, then: {folder: a/}}]`, plainMsg, Envelope{}, "folder:a/"},
		{"address local part", `[{if: {from: {local-part: [bob, alice]}}, then: {folder: a/}}]`, plainMsg, Envelope{}, "folder:a/"},
		{"address display name", `[{if: {from: {name: '^alice'}}, then: {folder: a/}}]`, plainMsg, Envelope{}, "folder:a/"},
		{"address with broken syntax still seen", `[{if: {from: {address: jd@example.com}}, then: {folder: a/}}]`, "From: Doe, John <jd@example.com>\n\nx\n", Envelope{}, "folder:a/"},
		{"list-id extracts the id", `[{if: {list-id: '^golang-nuts\.googlegroups\.com$'}, then: {folder: go/}}]`, listMsg, Envelope{}, "folder:go/"},
		{"list-id capture into folder", `[{if: {list-id: '^(?P<list>[^.]+)\.'}, then: {folder: 'lists/${list}/'}}]`, listMsg, Envelope{}, "folder(confined):lists/golang-nuts/"},
		{"headers procmail style", `[{if: {headers: '^Subject:.*generics'}, then: {folder: a/}}]`, listMsg, Envelope{}, "folder:a/"},
		{"headers ^TO_ macro", `[{if: {headers: '^TO_golang-nuts@googlegroups\.com'}, then: {folder: a/}}]`, listMsg, Envelope{}, "folder:a/"},
		{"headers ^TO_ does not match a longer local part", `[{if: {headers: '^TO_nuts@googlegroups\.com'}, then: {folder: a/}}]`, listMsg, Envelope{}, "default:inbox/"},
		{"headers ^FROM_DAEMON", `[{if: {headers: '^FROM_DAEMON'}, then: {folder: d/}}]`, "From: MAILER-DAEMON@mx.example.com\nSubject: bounce\n\nx\n", Envelope{}, "folder:d/"},
		{"headers ^FROM_DAEMON not for people", `[{if: {headers: '^FROM_DAEMON'}, then: {folder: d/}}]`, plainMsg, Envelope{}, "default:inbox/"},
		{"headers ^FROM_MAILER", `[{if: {headers: '^FROM_MAILER'}, then: {folder: d/}}]`, "From: postmaster@example.com\n\nx\n", Envelope{}, "folder:d/"},
		{"headers continuation reads as space", `[{if: {headers: '^X-Long: first part[ \t]+continued'}, then: {folder: a/}}]`, "X-Long: first part\n\tcontinued\n\nx\n", Envelope{}, "folder:a/"},
		{"body decoded base64", `[{if: {body: 'unsubscribe here'}, then: {folder: news/}}]`, b64Msg, Envelope{}, "folder:news/"},
		{"body raw does not see base64 text", `[{if: {body: {regex: 'unsubscribe here', raw: true}}, then: {folder: news/}}]`, b64Msg, Envelope{}, "default:inbox/"},
		{"body multiline anchors", `[{if: {body: '^the meeting'}, then: {folder: a/}}]`, plainMsg, Envelope{}, "folder:a/"},
		{"size greater", `[{if: {size: '> 100'}, then: {folder: big/}}]`, plainMsg, Envelope{}, "folder:big/"},
		{"size less with unit", `[{if: {size: '< 1k'}, then: {folder: small/}}]`, plainMsg, Envelope{}, "folder:small/"},
		{"size boundary is strict", fmt.Sprintf(`[{if: {size: '> %d'}, then: {folder: big/}}]`, len(plainMsg)), plainMsg, Envelope{}, "default:inbox/"},
		{"exists", `[{if: {exists: [List-Id, Subject]}, then: {folder: a/}}]`, listMsg, Envelope{}, "folder:a/"},
		{"not exists", `[{if: {not: {exists: List-Id}}, then: {folder: a/}}]`, listMsg, Envelope{}, "default:inbox/"},
		{"envelope-from from -f", `[{if: {envelope-from: '^bounce@'}, then: {folder: a/}}]`, plainMsg, Envelope{Sender: "bounce@example.com"}, "folder:a/"},
		{"envelope-from from the From_ line", `[{if: {envelope-from: '^owner-x@'}, then: {folder: a/}}]`, "From owner-x@example.com  Mon Jan  1 00:00:00 2024\n" + plainMsg, Envelope{}, "folder:a/"},
		{"envelope-to", `[{if: {envelope-to: '^bob\+lists@'}, then: {folder: a/}}]`, plainMsg, Envelope{Recipient: "bob+lists@example.org"}, "folder:a/"},
		{"any", `[{if: {any: [{subject: nomatch}, {from: alice}]}, then: {folder: a/}}]`, plainMsg, Envelope{}, "folder:a/"},
		{"all in one mapping", `[{if: {subject: hello, from: nobody}, then: {folder: a/}}]`, plainMsg, Envelope{}, "default:inbox/"},
		{"all as a list", `[{if: [{subject: hello}, {from: alice}], then: {folder: a/}}]`, plainMsg, Envelope{}, "folder:a/"},
		{"var condition", `[{then: {set: {kind: work}}}, {if: {var: {kind: '^work$'}}, then: {folder: w/}}]`, plainMsg, Envelope{}, "folder:w/"},
		{"score counts lines", `[{if: {score: {above: 2, terms: [{weight: 1, repeat: 1, body: '^.*$'}]}}, then: {folder: 'long-${score}/'}}]`, plainMsg, Envelope{}, "folder:long-3/"},
		{"score once per term without repeat", `[{if: {score: {terms: [{weight: 5, body: free}, {weight: -4, from: win}]}}, then: {folder: s/}}]`, spamMsg, Envelope{}, "folder:s/"},
		{"score not above threshold", `[{if: {score: {terms: [{weight: 5, body: free}, {weight: -5, from: win}]}}, then: {folder: s/}}]`, spamMsg, Envelope{}, "default:inbox/"},
		{"score geometric repeat", `[{if: {score: {above: 8, terms: [{weight: 4, repeat: 0.5, body: free}]}}, then: {folder: 's${score}/'}}]`, spamMsg, Envelope{}, "default:inbox/"},
		{"score geometric repeat sums", `[{if: {score: {above: 6, terms: [{weight: 4, repeat: 0.5, body: free}]}}, then: {folder: 's${score}/'}}]`, spamMsg, Envelope{}, "folder:s7/"},
		{"stop goes to default", `[{if: {subject: hello}, then: stop}, {then: {folder: never/}}]`, plainMsg, Envelope{}, "default:inbox/"},
		{"copy then default", `[{if: {subject: hello}, then: {copy: c/}}]`, plainMsg, Envelope{}, "copy:c/ default:inbox/"},
		{"nested rules", `[{if: {to: bob}, rules: [{if: {subject: nope}, then: {folder: x/}}, {if: {subject: hello}, then: {folder: bob/hello/}}]}]`, plainMsg, Envelope{}, "folder:bob/hello/"},
		{"nested rules fall through", `[{if: {to: bob}, rules: [{if: {subject: nope}, then: {folder: x/}}]}, {then: {folder: last/}}]`, plainMsg, Envelope{}, "folder:last/"},
		{"discard", `[{if: {header: {X-Spam-Flag: YES}}, then: discard}]`, spamMsg, Envelope{}, "discard"},
		{"pipe", `[{then: {pipe: [/usr/bin/cat, '${sender}']}}]`, plainMsg, Envelope{Sender: "a@b"}, "pipe:/usr/bin/cat a@b"},
		{"forward", `[{then: {forward: [me@example.net, 'x@${HOST}']}}]`, plainMsg, Envelope{}, "forward:/usr/sbin/sendmail -oi me@example.net x@testhost"},
		{"forward through another sendmail", `[{then: {forward: me@example.net, sendmail: [/usr/bin/msmtp, -t]}}]`, plainMsg, Envelope{}, "forward:/usr/bin/msmtp -t me@example.net"},
		{"capture cannot escape the folder tree", `[{if: {subject: '^(?P<s>.*)$'}, then: {folder: 'x/${s}/'}}]`, "Subject: ../../etc/passwd\n\nx\n", Envelope{}, "folder(confined):x/_._.._etc_passwd/"},
		{"capture of dot-dot alone", `[{if: {subject: '^(?P<s>.*)$'}, then: {folder: 'x/${s}'}}]`, "Subject: ..\n\nx\n", Envelope{}, "folder(confined):x/_."},
		{"template filters", `[{if: {list-id: '^(?P<l>[^ ]+)$'}, then: {folder: '.lists.${l|lower|replace . _}/'}}]`, "List-Id: <Golang-Nuts.GoogleGroups.com>\n\nx\n", Envelope{}, "folder(confined):.lists.golang-nuts_googlegroups_com/"},
		{"vars", `[{then: {folder: '${base}/x/'}}]`, plainMsg, Envelope{}, "folder:mail/x/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "vars: {base: mail}\nrules: " + tt.rules + "\n"
			e := NewEngine(mustParse(t, src), Options{Default: "inbox/", Vars: map[string]string{"HOST": "testhost"}})
			d, err := e.Evaluate(context.Background(), []byte(tt.msg), EvalOptions{Envelope: tt.env, Trace: true})
			if err != nil {
				t.Fatal(err)
			}
			if got := summary(d); got != tt.want {
				t.Errorf("got  %s\nwant %s\ntrace:\n%s", got, tt.want, strings.Join(d.Trace, "\n"))
			}
		})
	}
}

func TestHeaderActions(t *testing.T) {
	msg := "From x@y  Mon Jan  1 00:00:00 2024\nSubject: hi\nX-Tag: one\nx-tag: two\nX-Other: keep\n\nbody\nX-Tag: not a header\n"
	tests := []struct {
		action string
		want   string
	}{
		{`{add-header: 'X-Tag: three'}`, "From x@y  Mon Jan  1 00:00:00 2024\nSubject: hi\nX-Tag: one\nx-tag: two\nX-Other: keep\nX-Tag: three\n\nbody\nX-Tag: not a header\n"},
		{`{add-header-if-missing: 'X-Tag: three'}`, msg},
		{`{add-header-if-missing: 'X-New: v'}`, "From x@y  Mon Jan  1 00:00:00 2024\nSubject: hi\nX-Tag: one\nx-tag: two\nX-Other: keep\nX-New: v\n\nbody\nX-Tag: not a header\n"},
		{`{set-header: 'X-Tag: only'}`, "From x@y  Mon Jan  1 00:00:00 2024\nSubject: hi\nX-Other: keep\nX-Tag: only\n\nbody\nX-Tag: not a header\n"},
		{`{supersede-header: 'X-Tag: new'}`, "From x@y  Mon Jan  1 00:00:00 2024\nSubject: hi\nOld-X-Tag: one\nOld-x-tag: two\nX-Other: keep\nX-Tag: new\n\nbody\nX-Tag: not a header\n"},
		{`{remove-header: X-Tag}`, "From x@y  Mon Jan  1 00:00:00 2024\nSubject: hi\nX-Other: keep\n\nbody\nX-Tag: not a header\n"},
		{`{remove-header: 'X-*'}`, "From x@y  Mon Jan  1 00:00:00 2024\nSubject: hi\n\nbody\nX-Tag: not a header\n"},
		{`{rename-header: {from: X-Tag, to: X-Label}}`, "From x@y  Mon Jan  1 00:00:00 2024\nSubject: hi\nX-Label: one\nX-Label: two\nX-Other: keep\n\nbody\nX-Tag: not a header\n"},
	}
	for _, tt := range tests {
		t.Run(tt.action, func(t *testing.T) {
			e := NewEngine(mustParse(t, "rules: [{then: ["+tt.action+", {folder: out/}]}]"), Options{Default: "inbox/"})
			d, err := e.Evaluate(context.Background(), []byte(msg), EvalOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := string(d.Steps[0].Msg); got != tt.want {
				t.Errorf("got\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestHeaderValueCannotInjectFields(t *testing.T) {
	e := NewEngine(mustParse(t, `rules: [{if: {subject: '^(?P<s>.*)$'}, then: [{add-header: 'X-Was: ${s}'}, {folder: a/}]}]`), Options{Default: "inbox/"})
	d, err := e.Evaluate(context.Background(), []byte("Subject: =?utf-8?Q?a=0D=0ABcc:_evil@example.com?=\n\nx\n"), EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(d.Steps[0].Msg, []byte("\nBcc:")) {
		t.Fatalf("a decoded CR LF in a capture started a new field:\n%s", d.Steps[0].Msg)
	}
}

func TestCopyKeepsEarlierVersion(t *testing.T) {
	e := NewEngine(mustParse(t, `rules: [{then: [{copy: before/}, {add-header: 'X-A: 1'}, {folder: after/}]}]`), Options{Default: "inbox/"})
	d, err := e.Evaluate(context.Background(), []byte("Subject: s\n\nb\n"), EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(d.Steps[0].Msg, []byte("X-A")) || !bytes.Contains(d.Steps[1].Msg, []byte("X-A: 1")) {
		t.Fatalf("copy got %q, folder got %q", d.Steps[0].Msg, d.Steps[1].Msg)
	}
}

func TestProgramCondition(t *testing.T) {
	r := &fakeRunner{exit: map[string]int{"yes": 0, "no": 1}, err: map[string]error{"broken": errors.New("exec: not found")}}
	cfg := mustParse(t, `rules:
  - {if: {program: [no]}, then: {folder: no/}}
  - {if: {program: {command: [yes, '${sender}'], timeout: 5s}}, then: {folder: yes/}}
`)
	e := NewEngine(cfg, Options{Default: "inbox/", Runner: r})
	d, err := e.Evaluate(context.Background(), []byte("Subject: s\n\nb\n"), EvalOptions{Envelope: Envelope{Sender: "s@x"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := summary(d); got != "folder:yes/" {
		t.Errorf("got %s", got)
	}
	if strings.Join(r.calls, ",") != "no,yes s@x" {
		t.Errorf("calls %q", r.calls)
	}
	e = NewEngine(mustParse(t, `rules: [{if: {program: [broken]}, then: {folder: x/}}]`), Options{Default: "inbox/", Runner: r})
	if _, err := e.Evaluate(context.Background(), []byte("Subject: s\n\nb\n"), EvalOptions{}); err == nil {
		t.Error("a program that cannot run must make evaluation fail (try again later), not count as false")
	}
}

func TestFilter(t *testing.T) {
	upper := func(in []byte) []byte { return bytes.ToUpper(in) }
	r := &fakeRunner{
		exit:   map[string]int{"up": 0, "fail": 3, "failup": 3},
		output: map[string]func([]byte) []byte{"up": upper, "failup": upper, "hdr": func(in []byte) []byte { return append(bytes.Clone(in[:len(in)-1]), "X-Filtered: yes\n\n"...) }},
		err:    map[string]error{"missing": errors.New("exec: not found")},
	}
	msg := "Subject: s\n\nbody\n"
	tests := []struct {
		rules, want string
		warn        bool
		fail        bool
	}{
		{`[{then: [{filter: [up]}, {folder: a/}]}]`, "SUBJECT: S\n\nBODY\n\n", false, false},
		{`[{then: [{filter: [hdr], header-only: true}, {folder: a/}]}]`, "Subject: s\nX-Filtered: yes\n\nbody\n", false, false},
		{`[{then: [{filter: [fail]}, {folder: a/}]}]`, msg, true, false},
		{`[{then: [{filter: [fail], on-failure: retry}, {folder: a/}]}]`, "", false, true},
		// use-output: a failed filter's output is the message, as
		// procmail's f without w has it (even when it printed nothing);
		// a program that did not run leaves the message as it was.
		{`[{then: [{filter: [failup], on-failure: use-output}, {folder: a/}]}]`, "SUBJECT: S\n\nBODY\n\n", true, false},
		{`[{then: [{filter: [fail], on-failure: use-output}, {folder: a/}]}]`, "", true, false},
		{`[{then: [{filter: [failup], on-failure: use-output, input: body}, {folder: a/}]}]`, "Subject: s\n\nBODY\n", true, false},
		{`[{then: [{filter: [missing], on-failure: use-output}, {folder: a/}]}]`, msg, true, false},
		{`[{then: [{filter: [up], on-failure: use-output}, {folder: a/}]}]`, "SUBJECT: S\n\nBODY\n\n", false, false},
	}
	for _, tt := range tests {
		e := NewEngine(mustParse(t, "rules: "+tt.rules), Options{Default: "inbox/", Runner: r})
		d, err := e.Evaluate(context.Background(), []byte(msg), EvalOptions{})
		if tt.fail {
			if err == nil {
				t.Errorf("%s: want an error", tt.rules)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := string(d.Steps[0].Msg); got != tt.want {
			t.Errorf("%s: got %q want %q", tt.rules, got, tt.want)
		}
		if (len(d.Warnings) > 0) != tt.warn {
			t.Errorf("%s: warnings %q", tt.rules, d.Warnings)
		}
	}
}

// TestOptionalArgument: {optional: T} is left out of the argument list
// when T expands to nothing, as procmail leaves out an unquoted empty
// variable; a plain empty template stays an empty argument.
func TestOptionalArgument(t *testing.T) {
	tests := []struct{ rules, want string }{
		{`[{then: {pipe: [p, a, {optional: '${none}'}, b]}}]`, "p a b"},
		{`[{then: {pipe: [p, a, {optional: '${x}'}, b]}}]`, "p a X b"},
		{`[{then: {pipe: [p, a, '${none}', b]}}]`, "p a  b"},
		{`[{then: {pipe: [p, {optional: '${none}${none}'}]}}]`, "p"},
		{`[{if: {program: [p, {optional: '${none}'}, c]}, then: {folder: a/}}]`, "p c"},
		{`[{then: [{filter: [p, {optional: '${none}'}, f]}, {folder: a/}]}]`, "p f"},
		{`[{then: [{set: {v: {output-of: [p, {optional: '${none}'}, o]}}}, {folder: a/}]}]`, "p o"},
	}
	for _, tt := range tests {
		r := &fakeRunner{}
		e := NewEngine(mustParse(t, "vars: {x: X, none: ''}\nrules: "+tt.rules), Options{Default: "inbox/", Runner: r})
		d, err := e.Evaluate(context.Background(), []byte(plainMsg), EvalOptions{})
		if err != nil {
			t.Fatalf("%s: %v", tt.rules, err)
		}
		got := strings.Join(r.calls, "|")
		if len(d.Steps) > 0 && d.Steps[0].Kind == StepPipe {
			got = strings.Join(d.Steps[0].Argv, " ")
		}
		if got != tt.want {
			t.Errorf("%s: ran %q, want %q", tt.rules, got, tt.want)
		}
	}
	for _, bad := range []string{
		`[{then: {pipe: [{optional: '${x}'}, a]}}]`,
		`[{then: {pipe: [p, {optional: a, other: b}]}}]`,
		`[{then: {pipe: [p, {maybe: a}]}}]`,
	} {
		if _, err := Parse("rules.yaml", []byte("vars: {x: X}\nrules: "+bad)); err == nil {
			t.Errorf("%s: loaded, want an error", bad)
		}
	}
}

func TestDuplicate(t *testing.T) {
	dir := t.TempDir()
	cache := filepath.Join(dir, "msgid.cache")
	cfg := mustParse(t, fmt.Sprintf(`rules: [{if: {duplicate: {cache: %s}}, then: {folder: dups/}}]`, cache))
	e := NewEngine(cfg, Options{Default: "inbox/"})
	ctx := context.Background()
	m1 := "Message-ID: <a@x>\nSubject: 1\n\nb\n"
	m2 := "Message-ID: <b@x>\nSubject: 2\n\nb\n"
	noID := "Subject: 3\n\nsame body\n"
	var got []string
	for _, m := range []string{m1, m2, m1, noID, noID, m2} {
		d, err := e.Evaluate(ctx, []byte(m), EvalOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.DupStore().RecordAll(ctx, d.Dups); err != nil {
			t.Fatal(err)
		}
		got = append(got, summary(d))
	}
	want := "default:inbox/ default:inbox/ folder:dups/ default:inbox/ folder:dups/ folder:dups/"
	if strings.Join(got, " ") != want {
		t.Errorf("got  %s\nwant %s", strings.Join(got, " "), want)
	}
	data, _ := os.ReadFile(cache)
	if !bytes.HasPrefix(data, []byte("<a@x>\x00<b@x>\x00<body-sha256-")) || !bytes.HasSuffix(data, []byte("\x00\x00")) {
		t.Errorf("cache not in formail's format: %q", data)
	}
}

func TestDuplicateNotRecordedWhenNotDelivered(t *testing.T) {
	cache := filepath.Join(t.TempDir(), "c")
	e := NewEngine(mustParse(t, fmt.Sprintf(`rules: [{if: {duplicate: {cache: %s}}, then: discard}]`, cache)), Options{Default: "inbox/"})
	ctx := context.Background()
	m := []byte("Message-ID: <a@x>\n\nb\n")
	d, _ := e.Evaluate(ctx, m, EvalOptions{})
	d.Abort() // delivery failed
	d, _ = e.Evaluate(ctx, m, EvalOptions{})
	if got := summary(d); got != "default:inbox/" {
		t.Fatalf("a message whose delivery failed must not be a duplicate when it comes again; got %s", got)
	}
}

func TestDuplicateWithinBatch(t *testing.T) {
	cache := filepath.Join(t.TempDir(), "c")
	e := NewEngine(mustParse(t, fmt.Sprintf(`rules: [{if: {duplicate: {cache: %s}}, then: discard}]`, cache)), Options{Default: "inbox/"})
	ctx := context.Background()
	m := []byte("Message-ID: <a@x>\n\nb\n")
	d1, _ := e.Evaluate(ctx, m, EvalOptions{})
	d2, _ := e.Evaluate(ctx, m, EvalOptions{}) // before d1 commits
	if summary(d1) != "default:inbox/" || summary(d2) != "discard" {
		t.Fatalf("got %s, %s", summary(d1), summary(d2))
	}
}

func TestAuthResultsTrustsOnlyConfiguredServer(t *testing.T) {
	msg := "Authentication-Results: evil.example; dkim=pass header.d=bank.example\n" +
		"Authentication-Results: mx.example.org; dkim=fail (bad sig; really) header.d=bank.example; spf=pass smtp.mailfrom=bank.example\n" +
		"Subject: x\n\nb\n"
	cfg := mustParse(t, `trusted-authserv-id: mx.example.org
rules:
  - {if: {auth-results: {dkim: pass}}, then: {folder: dkimpass/}}
  - {if: {auth-results: {spf: pass, dkim: fail}}, then: {folder: spfpass/}}
`)
	d, err := NewEngine(cfg, Options{Default: "inbox/"}).Evaluate(context.Background(), []byte(msg), EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := summary(d); got != "folder:spfpass/" {
		t.Errorf("got %s: a forged result from an untrusted server was believed, or a comment with ';' broke parsing", got)
	}
}

func TestNegatedClassesStayOnTheirLine(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{`^From:[^>]*x`, `^From:[^\n>]*x`},
		{`[^]a]`, `[^]\na]`},
		{`[^-a-z0-9_.]`, `[^-\na-z0-9_.]`},
		{`[^[:alpha:]]+`, `[^\n[:alpha:]]+`},
		{`\[^x]`, `\[^x]`},
		{`[a^b]`, `[a^b]`},
		{`[^\]]`, `[^\n\]]`},
	} {
		if got := negatedClassesSkipNewline(tt.in); got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.in, got, tt.want)
		}
	}
	e := NewEngine(mustParse(t, `rules: [{if: {headers: '^Subject:[^>]*xyz'}, then: {folder: hit/}}]`), Options{Default: "inbox/"})
	d, _ := e.Evaluate(context.Background(), []byte("Subject: abc\nX-Foo: xyz\n\nbody\n"), EvalOptions{})
	if got := summary(d); got != "default:inbox/" {
		t.Errorf("[^>]* crossed a line end, which procmail's does not: %s", got)
	}
}

func TestHeaderEditFormailShape(t *testing.T) {
	for _, tt := range []struct{ name, in, want string }{
		{"ends at a non-field line: blank line added",
			"From: a\nSubject: s\nnot a field\nbody\n",
			"From: a\nSubject: s\nX-A: 1\n\nnot a field\nbody\n"},
		{"blanks before a colon removed",
			"Fro :x\nSubject: s\n\nbody\n",
			"Fro:x\nSubject: s\nX-A: 1\n\nbody\n"},
		{"header only, no blank line",
			"Subject: s\n",
			"Subject: s\nX-A: 1\n\n"},
		{"last field without newline",
			"Subject: s",
			"Subject: s\nX-A: 1\n\n"},
		{"CRLF keeps CRLF",
			"Subject: s\r\n\r\nbody\r\n",
			"Subject: s\r\nX-A: 1\r\n\r\nbody\r\n"},
	} {
		if got := string(editHeader([]byte(tt.in), "add", "X-A", "X-A: 1", "")); got != tt.want {
			t.Errorf("%s:\n got %q\nwant %q", tt.name, got, tt.want)
		}
	}
	in := []byte("Fro :x\n\nb\n")
	editHeader(in, "add", "X", "X: 1", "")
	if string(in) != "Fro :x\n\nb\n" {
		t.Errorf("the input was modified: %q", in)
	}
}

func TestSenderFallsBackToFromLine(t *testing.T) {
	e := NewEngine(mustParse(t, `rules: [{then: {folder: 'by-sender/${sender}/'}}]`), Options{Default: "inbox/"})
	d, err := e.Evaluate(context.Background(), []byte("From owner-list@example.com  Mon Jan  1 00:00:00 2024\nSubject: s\n\nb\n"), EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := summary(d); got != "folder(confined):by-sender/owner-list@example.com/" {
		t.Errorf("${sender} without -f must be the From_ line's address, as envelope-from sees it: %s", got)
	}
	d, _ = e.Evaluate(context.Background(), []byte("From owner-list@example.com  Mon Jan  1 00:00:00 2024\n\nb\n"), EvalOptions{Envelope: Envelope{Sender: "bounce@x"}})
	if got := summary(d); got != "folder(confined):by-sender/bounce@x/" {
		t.Errorf("-f wins: %s", got)
	}
}

func TestForwardViaMfilter(t *testing.T) {
	e := NewEngine(mustParse(t, `rules: [{then: {forward: me@example.net, via: mfilter}}]`), Options{Default: "inbox/", MfilterSend: []string{"/bin/mfilter", "send", "-oi", "--"}})
	d, err := e.Evaluate(context.Background(), []byte("Subject: s\n\nb\n"), EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := summary(d); got != "forward:/bin/mfilter send -oi -- me@example.net" {
		t.Errorf("got %s", got)
	}
	for _, bad := range []string{
		`rules: [{then: {forward: x@y, via: smtp}}]`,
		`rules: [{then: {forward: x@y, via: mfilter, sendmail: [/usr/sbin/sendmail]}}]`,
	} {
		if _, err := Parse("r.yaml", []byte(bad)); err == nil {
			t.Errorf("%s: want an error", bad)
		}
	}
}

// TestEvaluateReusesNothingOfTheLastMessage: an Engine keeps its
// evaluation states (variables, the view of the message) for the next
// message; evaluating messages one after another on one Engine decides
// exactly what a new Engine decides for each, captures, variables,
// header edits, scores and logs included.
func TestEvaluateReusesNothingOfTheLastMessage(t *testing.T) {
	src := `
vars: {tag: plain}
rules:
  - if: {list-id: '(?P<list>[a-z-]+)\.googlegroups\.com'}
    then: [{add-header: 'X-List: ${list}'}, {log: 'list ${list} size ${size}'}, {folder: 'lists/${list}/'}]
  - if: {subject: '(?P<word>r.sum.)'}
    then: [{set-header: 'X-Word: ${word}'}, {copy: words/}]
  - if:
      score:
        above: 1
        terms:
          - {weight: 2, header: {X-Spam-Flag: YES}}
          - {weight: 1, repeat: 1, body: {regex: free}}
    then: [{set-header: 'X-Score: ${score}'}, {folder: spam/}]
  - if: {from: {domain: example.com}}
    then: [{log: 'from example.com: ${sender} ${tag}'}, {folder: example/}]
`
	cfg := mustParse(t, src)
	msgs := []string{listMsg, encMsg, spamMsg, plainMsg, b64Msg, listMsg, "From x@y  Mon Jan  1 00:00:00 2024\nSubject: bare\n\n", spamMsg, encMsg}
	render := func(d *Decision) string {
		var b strings.Builder
		b.WriteString(summary(d))
		for _, s := range d.Steps {
			fmt.Fprintf(&b, "\n%q", s.Msg)
		}
		fmt.Fprintf(&b, "\nlogs %q warnings %q", d.Logs, d.Warnings)
		return b.String()
	}
	shared := NewEngine(cfg, Options{Default: "inbox/"})
	for round := range 3 {
		for i, m := range msgs {
			got, err := shared.Evaluate(context.Background(), []byte(m), EvalOptions{})
			if err != nil {
				t.Fatal(err)
			}
			want, err := NewEngine(cfg, Options{Default: "inbox/"}).Evaluate(context.Background(), []byte(m), EvalOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if g, w := render(got), render(want); g != w {
				t.Errorf("round %d, message %d: on a used Engine\n%s\nwant\n%s", round, i, g, w)
			}
		}
	}
}
