package rules

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mfilter/mfilter/internal/runprog"
)

// TestPatternVariables: ${name} in a regex is matched as literal text,
// ${name|raw} as regex text; an expansion that is not a regex makes the
// condition false with a warning, never an error.
func TestPatternVariables(t *testing.T) {
	msg := "From: a.b@example.com\nTo: x@example.org\nSubject: [a.b] price $5 (x\nX-Who: a.b@example.com\n\nbody\n"
	runEvalCases(t, Options{}, []evalCase{
		{"literal value", `[{then: {set: {who: a.b}}}, {if: {subject: '^\[${who}\]'}, then: {folder: hit/}}]`, msg, Envelope{}, "folder:hit/"},
		{"a dot in the value is no wildcard", `[{then: {set: {who: axb}}}, {if: {subject: '^\[${who}'}, then: {folder: hit/}}]`, msg, Envelope{}, "default:inbox/"},
		{"raw value is regex text", `[{then: {set: {who: 'a.b|zzz'}}}, {if: {subject: '^\[(${who|raw})\]'}, then: {folder: hit/}}]`, msg, Envelope{}, "folder:hit/"},
		{"value with regex characters", `[{then: {set: {p: '$$5 (x'}}}, {if: {subject: 'price ${p}$'}, then: {folder: hit/}}]`, msg, Envelope{}, "folder:hit/"},
		{"a lone $ stays an anchor", `[{if: {subject: '\(x$'}, then: {folder: hit/}}]`, msg, Envelope{}, "folder:hit/"},
		{"escaped \\$\\{ is literal", `[{if: {body: '\$\{'}, then: {folder: hit/}}]`, "Subject: s\n\nsee ${x}\n", Envelope{}, "folder:hit/"},
		{"capture in the same rule set earlier", `[{if: {header: {X-Who: '^(?P<who>[^@]+)@'}}, rules: [{if: {from: '^${who}@'}, then: {folder: same/}}]}]`, msg, Envelope{}, "folder:same/"},
		{"headers pattern with a variable", `[{then: {set: {dom: example.org}}}, {if: {headers: '^To:.*@${dom}'}, then: {folder: hit/}}]`, msg, Envelope{}, "folder:hit/"},
		{"built-in in a pattern", `[{if: {header: {X-Who: '^${reply_address}$'}}, then: {folder: hit/}}]`, msg, Envelope{}, "folder:hit/"},
		{"invalid raw expansion is false", `[{then: {set: {bad: '(unclosed'}}}, {if: {subject: '${bad|raw}'}, then: {folder: hit/}}]`, msg, Envelope{}, "default:inbox/"},
		{"not of an invalid one is true", `[{then: {set: {bad: '(unclosed'}}}, {if: {not: {subject: '${bad|raw}'}}, then: {folder: hit/}}]`, msg, Envelope{}, "folder:hit/"},
	})
}

func TestPatternVariableInvalidWarns(t *testing.T) {
	cfg := mustParse(t, "rules: [{then: {set: {bad: 'a{2,1}'}}}, {if: {subject: '${bad|raw}'}, then: {folder: hit/}}]")
	d, err := NewEngine(cfg, Options{Default: "inbox/"}).Evaluate(context.Background(), []byte("Subject: a\n\nb\n"), EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Warnings) != 1 || !strings.Contains(d.Warnings[0], "is not a regex") {
		t.Errorf("warnings %q, want one saying the regex is not one", d.Warnings)
	}
}

// TestPatternCacheBounded: a new value for every message never keeps
// more than maxCachedPatterns regexps.
func TestPatternCacheBounded(t *testing.T) {
	cfg := mustParse(t, "rules: [{if: {subject: '^(?P<s>.*)$'}, rules: [{if: {body: '${s}'}, then: {folder: hit/}}]}]")
	e := NewEngine(cfg, Options{Default: "inbox/"})
	for i := range 3 * maxCachedPatterns {
		msg := "Subject: s" + strings.Repeat("x", i) + "\n\nbody\n"
		if _, err := e.Evaluate(context.Background(), []byte(msg), EvalOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(e.patterns.m); n > maxCachedPatterns {
		t.Errorf("%d regexps cached, bound %d", n, maxCachedPatterns)
	}
}

func TestPatternVariableLoadErrors(t *testing.T) {
	for _, tt := range []struct{ rules, want string }{
		{`[{if: {subject: '${nope}'}, then: {folder: a/}}]`, `unknown variable "nope"`},
		{`[{if: {subject: '(${date}'}, then: {folder: a/}}]`, `bad regex`},
		{`[{then: {folder: '${date|raw}/'}}]`, `filter raw is for variables in a regex only`},
	} {
		_, err := Parse("rules.yaml", []byte("rules: "+tt.rules+"\n"))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want %q", tt.rules, err, tt.want)
		}
	}
}

// TestSubFilter: the first match only, groups by number and name, any
// punctuation as delimiter, an escaped delimiter, | and } inside.
func TestSubFilter(t *testing.T) {
	runEvalCases(t, Options{}, []evalCase{
		{"first match", `[{then: [{set: {v: a.b.c}}, {folder: '${v|sub /\./_/}/'}]}]`, plainMsg, Envelope{}, "folder:a_b.c/"},
		{"groups", `[{then: [{set: {v: user@host}}, {folder: '${v|sub /^(\w+)@(?P<h>\w+)$/${h}-$1/}/'}]}]`, plainMsg, Envelope{}, "folder:host-user/"},
		{"other delimiter, | and } inside", `[{then: [{set: {v: aa12}}, {folder: '${v|sub #a{2}|b#X#}/'}]}]`, plainMsg, Envelope{}, "folder:X12/"},
		{"escaped delimiter", `[{then: [{set: {v: a/b}}, {folder: 'x-${v|sub /\//-/}/'}]}]`, plainMsg, Envelope{}, "folder:x-a-b/"},
		{"no match keeps the value", `[{then: [{set: {v: abc}}, {folder: '${v|sub /z/y/|upper}/'}]}]`, plainMsg, Envelope{}, "folder:ABC/"},
		{"or: an empty value", `[{then: [{set: {v: ''}}, {folder: '${v|or md5 sum}/'}]}]`, plainMsg, Envelope{}, "folder:md5 sum/"},
		{"or: a value", `[{then: [{set: {v: x}}, {folder: '${v|or md5sum}/'}]}]`, plainMsg, Envelope{}, "folder:x/"},
		{"or, then upper", `[{then: [{set: {v: ''}}, {folder: '${v|or abc|upper}/'}]}]`, plainMsg, Envelope{}, "folder:ABC/"},
		{"procmail's echo $MATCH | sed s/\\./@/", `[{if: {subject: '^(?P<m>\w+) there'}, then: {forward: '${m|sub /^H/h/}@example.org'}}]`, plainMsg, Envelope{}, "forward:/usr/sbin/sendmail -oi hello@example.org"},
	})
	for _, bad := range []string{`${v|sub /a/b}`, `${v|sub a/b/}`, `${v|sub /(/b/}`, `${v|sub/a/b/}`} {
		if _, err := Parse("r.yaml", []byte("vars: {v: x}\nrules: [{then: {folder: '"+bad+"/'}}]\n")); err == nil {
			t.Errorf("%s: loaded, want an error", bad)
		}
	}
}

// TestDateBuiltin: ${date} and ${date|strftime ...} against the C
// library's strftime (date(1)) for the same instant.
func TestDateBuiltin(t *testing.T) {
	now := time.Date(2026, 3, 5, 7, 8, 9, 0, time.Local)
	format := "%Y %y %m %d %e %H %M %S %j %a %A %b %B %Z %z %s %%"
	out, err := exec.Command("date", "-d", "@"+strconv.FormatInt(now.Unix(), 10), "+"+format).Output()
	if err != nil {
		t.Fatal(err)
	}
	want := strings.TrimSuffix(string(out), "\n")
	cfg := mustParse(t, "rules: [{then: [{log: '${date} ${date|strftime "+format+"}'}, discard]}]")
	d, err := NewEngine(cfg, Options{Now: func() time.Time { return now }}).Evaluate(context.Background(), []byte("Subject: x\n\nb\n"), EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Logs[0]; got != "2026-03-05 "+want {
		t.Errorf("got  %q\nwant %q", got, "2026-03-05 "+want)
	}
}

// TestReplyAddressAgainstFormail: ${reply_address} is what formail -rt
// replies to (formail -rtzxTo:), for the fields it chooses between.
func TestReplyAddressAgainstFormail(t *testing.T) {
	formail, err := exec.LookPath("formail")
	if err != nil {
		t.Fatalf("formail is not installed (test.sh installs procmail): %v", err)
	}
	msgs := []string{
		"From env@x.org  Mon Dec  7 04:00:00 2026\nFrom: Alice <alice@a.org>\nReply-To: \"Bob B\" <bob@b.org>\nSender: s@s.org\nSubject: hi\n\nbody\n",
		"From env@x.org  Mon Dec  7 04:00:00 2026\nFrom: Alice <alice@a.org>\nSender: s@s.org\n\nbody\n",
		"From env@x.org  Mon Dec  7 04:00:00 2026\nSender: s@s.org\n\nbody\n",
		"From env@x.org  Mon Dec  7 04:00:00 2026\nSubject: hi\n\nbody\n",
		"From env@x.org  Mon Dec  7 04:00:00 2026\nReturn-Path: <rp@x.org>\nSubject: hi\n\nbody\n",
		"From env@x.org  Mon Dec  7 04:00:00 2026\nReturn-Path: <rp@x.org>\nSender: s@s.org\n\nbody\n",
		"From env@x.org  Mon Dec  7 04:00:00 2026\nResent-From: rf@x.org\nResent-Reply-To: rr@x.org\n\nbody\n",
		"From: alice@a.org (Alice)\nReply-To: \nSubject: hi\n\nbody\n",
		"From: a@a.org,\n  b@b.org\nSubject: hi\n\nbody\n",
		"From: Alice <alice@a.org>\nReply-To: r1@r.org, r2@r.org\n\nbody\n",
		"from: Alice <alice@a.org>\nREPLY-TO: R <r@r.org>\n\nbody\n",
		"From: <>\nSender: s@s.org\n\nbody\n",
		"From: \"Smith, J\" <js@a.org>\n\nbody\n",
		"From: Alice <alice@a.org\n\nbody\n",
		"From: alice\n\nbody\n",
		"From: =?utf-8?q?J=C3=B6rg?= <j@a.org>\n\nbody\n",
		"From: Alice <alice@a.org> (comment)\nErrors-To: e@r.org\n\nbody\n",
	}
	cfg := mustParse(t, "rules: [{then: [{log: '${reply_address}'}, discard]}]")
	e := NewEngine(cfg, Options{})
	for _, m := range msgs {
		cmd := exec.Command(formail, "-rtzxTo:")
		cmd.Stdin = strings.NewReader(m)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("formail: %v", err)
		}
		d, err := e.Evaluate(context.Background(), []byte(m), EvalOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if want := strings.TrimSuffix(string(out), "\n"); d.Logs[0] != want {
			t.Errorf("%q: reply_address %q, formail -rt %q", m, d.Logs[0], want)
		}
	}
}

// TestLastFolder: the folder (or the command, after a space, as
// procmail's LASTFOLDER) of the last delivery made so far.
func TestLastFolder(t *testing.T) {
	cfg := mustParse(t, `rules: [{then: [{log: 'a=${last_folder}'}, {copy: mb1}, {log: 'b=${last_folder}'}, {pipe: [cat], continue: true}, {log: 'c=${last_folder}'}, {copy: /abs.mbox, fallback: {folder: fb/}}, {log: 'd=${last_folder}'}, discard]}]`)
	d, err := NewEngine(cfg, Options{}).Evaluate(context.Background(), []byte("Subject: x\n\nb\n"), EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(d.Logs, "|"), "a=|b=mb1|c= cat|d=/abs.mbox"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestBuiltinsAreReadOnly(t *testing.T) {
	for _, name := range []string{"date", "reply_address", "last_folder"} {
		for _, src := range []string{"vars: {" + name + ": x}\nrules: [{then: discard}]\n", "rules: [{then: [{set: {" + name + ": x}}, discard]}]\n"} {
			if _, err := Parse("r.yaml", []byte(src)); err == nil || !strings.Contains(err.Error(), "built-in") {
				t.Errorf("%s: got %v, want a built-in error", src, err)
			}
		}
	}
}

// TestOutputOf: the program's output, trailing newlines trimmed, with
// the input asked for; a failing program leaves what it printed.
func TestOutputOf(t *testing.T) {
	msg := "From x  Mon Dec  7 04:00:00 2026\nSubject: s\n\nthe body\n"
	run := func(rules string, r runprog.Runner) *Decision {
		t.Helper()
		d, err := NewEngine(mustParse(t, "rules: "+rules+"\n"), Options{Runner: r}).Evaluate(context.Background(), []byte(msg), EvalOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for _, tt := range []struct{ input, want string }{
		{"body", "the body"},
		{"header", "From x  Mon Dec  7 04:00:00 2026\nSubject: s"},
		{"none", ""},
		{"message", "From x  Mon Dec  7 04:00:00 2026\nSubject: s\n\nthe body"},
	} {
		d := run(`[{then: [{set: {v: {output-of: [cat], input: `+tt.input+`}}}, {log: '${v}'}, discard]}]`, runprog.Exec{})
		if got := d.Logs[0]; got != strings.ReplaceAll(tt.want, "\n", " ") {
			t.Errorf("input %s: %q, want %q", tt.input, got, tt.want)
		}
	}
	d := run(`[{then: [{set: {v: {output-of: [sh, -c, 'printf partial; exit 3'], input: none}}}, {log: '${v}'}, discard]}]`, runprog.Exec{})
	if d.Logs[0] != "partial" || len(d.Warnings) != 1 {
		t.Errorf("failing program: %q, warnings %q", d.Logs[0], d.Warnings)
	}
	d = run(`[{then: [{set: {v: {output-of: [nonexistent-program-x]}}}, {log: 'v=${v}'}, discard]}]`, &fakeRunner{err: map[string]error{"nonexistent-program-x": errors.New("not found")}})
	if d.Logs[0] != "v=" || len(d.Warnings) != 1 {
		t.Errorf("missing program: %q, warnings %q", d.Logs[0], d.Warnings)
	}
	d = run(`[{then: [{set: {v: {output-of: [head, -c, 200000, /dev/zero], input: none}}}, {log: '${v}'}, discard]}]`, runprog.Exec{})
	if len(d.Logs[0]) != MaxOutputOf {
		t.Errorf("large output kept %d bytes, want %d", len(d.Logs[0]), MaxOutputOf)
	}
	d = run(`[{then: [{set: {v: {output-of: [sleep, 5], timeout: 100ms}}}, discard]}]`, runprog.Exec{})
	if len(d.Warnings) != 1 || !strings.Contains(d.Warnings[0], "timed out") {
		t.Errorf("timeout: warnings %q", d.Warnings)
	}
}

// TestFilterBody: input: body filters the body only (procmail fbw), the
// header stays.
func TestFilterBody(t *testing.T) {
	cfg := mustParse(t, "rules: [{then: [{filter: [tr, a-z, A-Z], input: body}, {folder: x/}]}]")
	d, err := NewEngine(cfg, Options{}).Evaluate(context.Background(), []byte("From: a@b\nSubject: low\n\nthe body\n"), EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(d.Steps[0].Msg); got != "From: a@b\nSubject: low\n\nTHE BODY\n" {
		t.Errorf("got %q", got)
	}
}

func TestPipeInputAndFallbackSteps(t *testing.T) {
	cfg := mustParse(t, `rules: [{then: [{pipe: [a], input: header, continue: true, fallback: [{folder: f1/, fallback: {folder: f2/}}]}, {folder: '/no/such/dir/mbox', fallback: {pipe: [b], input: body}}]}]`)
	d, err := NewEngine(cfg, Options{}).Evaluate(context.Background(), []byte("Subject: x\n\nb\n"), EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Steps) != 2 || d.Steps[0].Input != "header" || len(d.Steps[0].Fallback) != 1 || d.Steps[0].Fallback[0].Folder != "f1/" ||
		d.Steps[0].Fallback[0].Fallback[0].Folder != "f2/" || d.Steps[1].Fallback[0].Kind != StepPipe || d.Steps[1].Fallback[0].Input != "body" {
		t.Errorf("steps %+v", d.Steps)
	}
	deep := "{folder: a/}"
	for range maxFallbackDepth + 1 {
		deep = "{folder: a/, fallback: " + deep + "}"
	}
	if _, err := Parse("r.yaml", []byte("rules: [{then: "+deep+"}]\n")); err == nil || !strings.Contains(err.Error(), "nest only") {
		t.Errorf("deep fallbacks: %v", err)
	}
	if _, err := Parse("r.yaml", []byte("rules: [{then: {folder: a/, fallback: {set: {x: y}}}}]\n")); err == nil || !strings.Contains(err.Error(), "fallback delivers") {
		t.Errorf("set in a fallback: %v", err)
	}
	if _, err := Parse("r.yaml", []byte("rules: [{then: {forward: a@b.c, input: body}}]\n")); err == nil {
		t.Errorf("input on forward loaded")
	}
}

// TestHeaderNamesFromVariables: the expanded name is checked; a bad one
// skips the edit with a warning.
func TestHeaderNamesFromVariables(t *testing.T) {
	msg := "From: a@b\nX-Old: 1\nSubject: s\n\nbody\n"
	for _, tt := range []struct{ name, action, want string }{
		{"set", `{set-header: '${n}: x'}`, "From: a@b\nX-Old: 1\nSubject: s\nX-List: x\n\nbody\n"},
		{"add with value var", `{add-header: '${n}-${n}: ${n}'}`, "From: a@b\nX-Old: 1\nSubject: s\nX-List-X-List: X-List\n\nbody\n"},
		{"remove", `{remove-header: '${o}'}`, "From: a@b\nSubject: s\n\nbody\n"},
		{"rename", `{rename-header: {from: '${o}', to: '${n}'}}`, "From: a@b\nX-List: 1\nSubject: s\n\nbody\n"},
		{"bad name skipped", `{set-header: '${bad}: x'}`, msg},
		{"long name skipped", `{set-header: '${long}: x'}`, msg},
	} {
		cfg := mustParse(t, "vars: {n: X-List, o: X-Old, bad: 'a b', long: '"+strings.Repeat("x", 77)+"'}\nrules: [{then: ["+tt.action+", {folder: x/}]}]\n")
		d, err := NewEngine(cfg, Options{}).Evaluate(context.Background(), []byte(msg), EvalOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := string(d.Steps[0].Msg); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
		if strings.Contains(tt.name, "skipped") != (len(d.Warnings) == 1) {
			t.Errorf("%s: warnings %q", tt.name, d.Warnings)
		}
	}
}

// TestReplySuppressed: the never-reply rules of RFC 3834 and RFC 5230.
func TestReplySuppressed(t *testing.T) {
	base := "From: Bob <bob@example.org>\nTo: alice@example.org\nSubject: hi\nMessage-ID: <m1@example.org>\n"
	rules := "rules: [{then: [{reply: {text: away, addresses: [alice@example.org]}}, {folder: x/}]}]\n"
	e := NewEngine(mustParse(t, rules), Options{Vars: map[string]string{"MAILDIR": t.TempDir()}})
	for _, tt := range []struct {
		name, msg, sender string
		reply             bool
	}{
		{"personal mail", base, "bob@example.org", true},
		{"auto-submitted: no", base + "Auto-Submitted: no\n", "bob@example.org", true},
		{"auto-replied", base + "Auto-Submitted: auto-replied\n", "bob@example.org", false},
		{"auto-generated", base + "Auto-Submitted: Auto-Generated; x\n", "bob@example.org", false},
		{"precedence bulk", base + "Precedence: bulk\n", "bob@example.org", false},
		{"precedence list", base + "Precedence: list\n", "bob@example.org", false},
		{"precedence junk", base + "Precedence: Junk\n", "bob@example.org", false},
		{"list-id", base + "List-Id: <x.example.org>\n", "bob@example.org", false},
		{"list-unsubscribe", base + "List-Unsubscribe: <mailto:u@x>\n", "bob@example.org", false},
		{"empty envelope sender", base, "<>", false},
		{"no envelope sender", base, "", false},
		{"mailer-daemon", strings.Replace(base, "bob@", "MAILER-DAEMON@", 1), "MAILER-DAEMON@example.org", false},
		{"owner-", base, "owner-list@example.org", false},
		{"-request", base, "list-request@example.org", false},
		{"postmaster reply address", strings.Replace(base, "bob@", "postmaster@", 1), "bob@example.org", false},
		{"from the user", strings.Replace(base, "bob@", "alice@", 1), "alice@example.org", false},
		{"not addressed to the user", strings.Replace(base, "To: alice@", "To: carol@", 1), "bob@example.org", false},
		{"addressed in Cc", strings.Replace(base, "To: alice@example.org", "To: carol@example.org\nCc: Alice <ALICE@example.org>", 1), "bob@example.org", true},
	} {
		d, err := e.Evaluate(context.Background(), []byte(tt.msg+"\nbody\n"), EvalOptions{Envelope: Envelope{Sender: tt.sender}, Trace: true})
		if err != nil {
			t.Fatal(err)
		}
		got := len(d.Steps) == 2 && d.Steps[0].Kind == StepReply
		if got != tt.reply {
			t.Errorf("%s: reply %v, want %v\n%s", tt.name, got, tt.reply, strings.Join(d.Trace, "\n"))
		}
	}
}

// TestReplyMessage: the reply's fields, its command, and its key.
func TestReplyMessage(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "away.txt"), []byte("Back on Monday.\n"), 0o600)
	cfg := mustParse(t, "sendmail: [/bin/sm, -oi]\nrules: [{then: [{reply: {file: away.txt, subject: 'Re: ${subject}', from: alice@example.org, days: 3, state: st}}, {folder: x/}]}]\n")
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	e := NewEngine(cfg, Options{Now: func() time.Time { return now }, Vars: map[string]string{"MAILDIR": dir, "HOST": "h.example"}})
	msg := "From: Bob <bob@example.org>\nReply-To: b2@example.org\nTo: alice@example.org\nSubject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\nMessage-ID: <m1@example.org>\nReferences: <m0@example.org>\n\nbody\n"
	d, err := e.Evaluate(context.Background(), []byte(msg), EvalOptions{Envelope: Envelope{Sender: "bob@example.org"}})
	if err != nil {
		t.Fatal(err)
	}
	j := d.Steps[0].Reply
	if got := strings.Join(j.Argv, " "); got != "/bin/sm -oi -f <> b2@example.org" {
		t.Errorf("argv %q", got)
	}
	if j.Dir != filepath.Join(dir, "st") || j.Period != 72*time.Hour || j.To != "b2@example.org" {
		t.Errorf("job %+v", j)
	}
	for _, want := range []string{"From: alice@example.org\n", "To: b2@example.org\n", "Subject: =?utf-8?q?Re:_gr=C3=BC=C3=9Fe?=\n",
		"In-Reply-To: <m1@example.org>\n", "References: <m0@example.org> <m1@example.org>\n", "Auto-Submitted: auto-replied\n",
		"Date: Mon, 07 Dec 2026 10:00:00 +0000\n", "Message-ID: <", "\n\nBack on Monday.\n"} {
		if !strings.Contains(string(j.Msg), want) {
			t.Errorf("reply lacks %q:\n%s", want, j.Msg)
		}
	}
}
