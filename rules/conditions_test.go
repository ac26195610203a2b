package rules

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mfilter/mfilter/internal/dupcache"
	"github.com/mfilter/mfilter/internal/runprog"
)

// evalCase is one message evaluated against one rules file.
type evalCase struct {
	name  string
	rules string // the rules: list (YAML)
	msg   string
	env   Envelope
	want  string // summary(decision)
}

func runEvalCases(t *testing.T, opts Options, tests []evalCase) {
	t.Helper()
	if opts.Default == "" {
		opts.Default = "inbox/"
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEngine(mustParse(t, "vars: {base: mail}\nrules: "+tt.rules+"\n"), opts)
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

const headersMsg = "From: Alice <alice@example.com>\nSender: list-bounces@lists.example.net\nReply-To: Team <team@example.org>\n" +
	"To: bob@example.org\nTo: carol@example.org\nCc: dave@example.net\nSubject: a long subject\n that is folded\n" +
	"X-Empty:\nMessage-ID: <1@example.com>\n\nbody text\nX-In-Body: yes\n"

func TestFieldConditions(t *testing.T) {
	runEvalCases(t, Options{}, []evalCase{
		{"sender", `[{if: {sender: '^list-bounces@'}, then: {folder: s/}}]`, headersMsg, Envelope{}, "folder:s/"},
		{"sender address", `[{if: {sender: {domain: example.net}}, then: {folder: s/}}]`, headersMsg, Envelope{}, "folder:s/"},
		{"reply-to", `[{if: {reply-to: '^Team <team@'}, then: {folder: r/}}]`, headersMsg, Envelope{}, "folder:r/"},
		{"reply-to name", `[{if: {reply-to: {name: '^team$'}}, then: {folder: r/}}]`, headersMsg, Envelope{}, "folder:r/"},
		{"to: any of two fields", `[{if: {to: '^carol@'}, then: {folder: t/}}]`, headersMsg, Envelope{}, "folder:t/"},
		{"to address in second field", `[{if: {to: {address: carol@example.org}}, then: {folder: t/}}]`, headersMsg, Envelope{}, "folder:t/"},
		{"cc", `[{if: {cc: 'dave'}, then: {folder: c/}}]`, headersMsg, Envelope{}, "folder:c/"},
		{"to does not look at cc", `[{if: {to: 'dave'}, then: {folder: c/}}]`, headersMsg, Envelope{}, "default:inbox/"},
		{"to-or-cc address", `[{if: {to-or-cc: {address: [nobody@x.example, dave@example.net]}}, then: {folder: c/}}]`, headersMsg, Envelope{}, "folder:c/"},
		{"subject unfolded", `[{if: {subject: 'long subject that is folded$'}, then: {folder: f/}}]`, headersMsg, Envelope{}, "folder:f/"},
		{"header with an empty value", `[{if: {header: {X-Empty: '^$'}}, then: {folder: e/}}]`, headersMsg, Envelope{}, "folder:e/"},
		{"header field names ignore case", `[{if: {header: {message-id: '^<1@'}}, then: {folder: m/}}]`, headersMsg, Envelope{}, "folder:m/"},
		{"a field in the body is not a header", `[{if: {header: {X-In-Body: yes}}, then: {folder: b/}}]`, headersMsg, Envelope{}, "default:inbox/"},
		{"display name with an unquoted comma", `[{if: {from: {name: '^Doe, John$'}}, then: {folder: n/}}]`, "From: Doe, John <jd@example.com>\n\nb\n", Envelope{}, "folder:n/"},
		{"list-id without brackets", `[{if: {list-id: '^bare\.example$'}, then: {folder: l/}}]`, "List-Id: bare.example\n\nb\n", Envelope{}, "folder:l/"},
		{"list-id missing", `[{if: {not: {list-id: '.'}}, then: {folder: l/}}]`, headersMsg, Envelope{}, "folder:l/"},
	})
}

func TestExistsCondition(t *testing.T) {
	runEvalCases(t, Options{}, []evalCase{
		{"every field of the list", `[{if: {exists: [Sender, Reply-To, Message-ID]}, then: {folder: x/}}]`, headersMsg, Envelope{}, "folder:x/"},
		{"one missing", `[{if: {exists: [Sender, List-Id]}, then: {folder: x/}}]`, headersMsg, Envelope{}, "default:inbox/"},
		{"any case", `[{if: {exists: [REPLY-TO, message-id]}, then: {folder: x/}}]`, headersMsg, Envelope{}, "folder:x/"},
		{"an empty field exists", `[{if: {exists: X-Empty}, then: {folder: x/}}]`, headersMsg, Envelope{}, "folder:x/"},
		{"a field in the body does not", `[{if: {exists: X-In-Body}, then: {folder: x/}}]`, headersMsg, Envelope{}, "default:inbox/"},
		{"the From_ line is not a From field", `[{if: {exists: From}, then: {folder: x/}}]`, "From a@b  Mon Jan  1 00:00:00 2024\nSubject: s\n\nb\n", Envelope{}, "default:inbox/"},
	})
}

func TestSizeCondition(t *testing.T) {
	msg := strings.Repeat("x", 2000) // no header at all: size counts bytes
	runEvalCases(t, Options{}, []evalCase{
		{"above 1k", `[{if: {size: '> 1k'}, then: {folder: big/}}]`, msg, Envelope{}, "folder:big/"},
		{"not below 1k", `[{if: {size: '< 1k'}, then: {folder: small/}}]`, msg, Envelope{}, "default:inbox/"},
		{"below 1.5M", `[{if: {size: '<1.5M'}, then: {folder: small/}}]`, msg, Envelope{}, "folder:small/"},
		{"exact is neither", `[{if: {any: [{size: '> 2000'}, {size: '< 2000'}]}, then: {folder: x/}}]`, msg, Envelope{}, "default:inbox/"},
		{"one off", `[{if: [{size: '> 1999'}, {size: '< 2001'}], then: {folder: x/}}]`, msg, Envelope{}, "folder:x/"},
		{"the From_ line counts", `[{if: {size: '> 2000'}, then: {folder: x/}}]`, "From a@b  Mon Jan  1 00:00:00 2024\n" + msg, Envelope{}, "folder:x/"},
		{"bytes with a unit b", `[{if: {size: '> 1kb'}, then: {folder: x/}}]`, msg, Envelope{}, "folder:x/"},
	})
}

func TestEnvelopeConditions(t *testing.T) {
	fromLine := "From owner-list@lists.example.net  Mon Jan  1 00:00:00 2024\n"
	runEvalCases(t, Options{}, []evalCase{
		{"From_ line", `[{if: {envelope-from: '^owner-list@lists\.example\.net$'}, then: {folder: a/}}]`, fromLine + plainMsg, Envelope{}, "folder:a/"},
		{"-f wins over the From_ line", `[{if: {envelope-from: '^bounce@example\.com$'}, then: {folder: a/}}]`, fromLine + plainMsg, Envelope{Sender: "bounce@example.com"}, "folder:a/"},
		{"no From_ line, no -f: empty", `[{if: {envelope-from: '^$'}, then: {folder: a/}}]`, plainMsg, Envelope{}, "folder:a/"},
		{"From_ line without an address", `[{if: {envelope-from: '^$'}, then: {folder: a/}}]`, "From \nSubject: s\n\nb\n", Envelope{}, "folder:a/"},
		{"the header From is not the envelope", `[{if: {envelope-from: alice}, then: {folder: a/}}]`, plainMsg, Envelope{}, "default:inbox/"},
		{"envelope-to", `[{if: {envelope-to: '^bob\+(?P<ext>[a-z]+)@'}, then: {folder: 'ext-${ext}/'}}]`, plainMsg, Envelope{Recipient: "bob+lists@example.org"}, "folder(confined):ext-lists/"},
		{"envelope-to empty", `[{if: {envelope-to: '.'}, then: {folder: a/}}]`, plainMsg, Envelope{}, "default:inbox/"},
		{"${sender} is the From_ line address", `[{then: {folder: 'from-${sender}/'}}]`, fromLine + plainMsg, Envelope{Sender: "s@x.example"}, "folder(confined):from-s@x.example/"},
	})
}

func TestVarCondition(t *testing.T) {
	runEvalCases(t, Options{Vars: map[string]string{"HOME": "/home/bob", "USER": "bob"}}, []evalCase{
		{"a vars entry", `[{if: {var: {base: '^mail$'}}, then: {folder: v/}}]`, plainMsg, Envelope{}, "folder:v/"},
		{"a built-in", `[{if: {var: {USER: '^bob$'}}, then: {folder: v/}}]`, plainMsg, Envelope{}, "folder:v/"},
		{"an empty built-in", `[{if: {var: {recipient: '^$'}}, then: {folder: v/}}]`, plainMsg, Envelope{}, "folder:v/"},
		{"set by an earlier rule from a capture",
			`[{if: {subject: '^(?P<w>\w+)'}, then: {set: {first: '${w|lower}'}}}, {if: {var: {first: '^hello$'}}, then: {folder: v/}}]`,
			plainMsg, Envelope{}, "folder:v/"},
		{"captures of var", `[{if: {var: {HOME: '^/home/(?P<u>[^/]+)$'}}, then: {folder: 'u-${u}/'}}]`, plainMsg, Envelope{}, "folder(confined):u-bob/"},
		{"score of an earlier rule", `[{if: {score: {terms: [{weight: -3, from: alice}]}}, then: {copy: never/}}, {if: {var: {score: '^-3$'}}, then: {folder: neg/}}]`, plainMsg, Envelope{}, "folder:neg/"},
		{"size", `[{if: {var: {size: '^[0-9]+$'}}, then: {folder: 'n${size}/'}}]`, "Subject: s\n\nb\n", Envelope{}, "folder:n14/"},
	})
}

func TestScoreConditionEdges(t *testing.T) {
	runEvalCases(t, Options{}, []evalCase{
		{"negative total is not above 0", `[{if: {score: {terms: [{weight: 2, from: alice}, {weight: -5, to: bob}]}}, then: {folder: 's${score}/'}}]`, plainMsg, Envelope{}, "default:inbox/"},
		{"negative total above a negative threshold", `[{if: {score: {above: -4, terms: [{weight: 2, from: alice}, {weight: -5, to: bob}]}}, then: {folder: 's${score}/'}}]`, plainMsg, Envelope{}, "folder:s-3/"},
		{"a total of exactly above does not hold", `[{if: {score: {above: 5, terms: [{weight: 5, from: alice}]}}, then: {folder: s/}}]`, plainMsg, Envelope{}, "default:inbox/"},
		{"fractional above", `[{if: {score: {above: 4.5, terms: [{weight: 5, from: alice}]}}, then: {folder: 's${score}/'}}]`, plainMsg, Envelope{}, "folder:s5/"},
		{"a total of 0 does not hold", `[{if: {score: {terms: [{weight: 1, from: alice}, {weight: -1, to: bob}]}}, then: {folder: s/}}]`, plainMsg, Envelope{}, "default:inbox/"},
		{"no term holds", `[{if: {score: {above: -1, terms: [{weight: 9, from: nobody}]}}, then: {folder: 's${score}/'}}]`, plainMsg, Envelope{}, "folder:s0/"},
		{"repeat 0.5: 4+2+1 for three matches", `[{if: {score: {terms: [{weight: 4, repeat: 0.5, body: free}]}}, then: {folder: 's${score}/'}}]`, spamMsg, Envelope{}, "folder:s7/"},
		{"repeat 0 counts once", `[{if: {score: {terms: [{weight: 4, repeat: 0, body: free}]}}, then: {folder: 's${score}/'}}]`, spamMsg, Envelope{}, "folder:s4/"},
		{"repeat 2: 1+2+4", `[{if: {score: {terms: [{weight: 1, repeat: 2, body: free}]}}, then: {folder: 's${score}/'}}]`, spamMsg, Envelope{}, "folder:s7/"},
		{"repeat counts per field", `[{if: {score: {terms: [{weight: 1, repeat: 1, header: {X-Spam-Level: '\*'}}]}}, then: {folder: 's${score}/'}}]`, spamMsg, Envelope{}, "folder:s5/"},
		{"repeat on every occurrence of a field", `[{if: {score: {terms: [{weight: 1, repeat: 1, to: 'example\.org'}]}}, then: {folder: 's${score}/'}}]`, headersMsg, Envelope{}, "folder:s2/"},
		{"repeat on every field named", `[{if: {score: {terms: [{weight: 1, repeat: 1, to-or-cc: 'example'}]}}, then: {folder: 's${score}/'}}]`, plainMsg, Envelope{}, "folder:s2/"},
		{"repeat with headers", `[{if: {score: {terms: [{weight: 1, repeat: 1, headers: '^x-spam'}]}}, then: {folder: 's${score}/'}}]`, spamMsg, Envelope{}, "folder:s2/"},
		{"non-regex terms add once", `[{if: {score: {terms: [{weight: 2, repeat: 1, exists: Subject}, {weight: 3, repeat: 5, size: '> 10'}]}}, then: {folder: 's${score}/'}}]`, plainMsg, Envelope{}, "folder:s5/"},
		{"negative weights truncate toward 0", `[{if: {score: {above: -9, terms: [{weight: -1.7, from: alice}]}}, then: {folder: 's${score}/'}}]`, plainMsg, Envelope{}, "folder:s-1/"},
		{"a total in (0,1) is 1", `[{if: {score: {terms: [{weight: 0.25, from: alice}]}}, then: {folder: 's${score}/'}}]`, plainMsg, Envelope{}, "folder:s1/"},
		{"an empty match is infinite", `[{if: {score: {terms: [{weight: 1, repeat: 1, body: '^'}]}}, then: {folder: 's${score}/'}}]`, plainMsg, Envelope{}, "folder:s2147483647/"},
		{"saturated totals stop", `[{if: {score: {terms: [{weight: -1, repeat: 1, body: 'x*'}, {weight: 5, from: alice}], above: -2147483648}}, then: {folder: 's${score}/'}}]`, plainMsg, Envelope{}, "folder:s-2147483647/"},
		{"not and any in terms", `[{if: {score: {terms: [{weight: 2, not: {from: bob}}, {weight: 3, any: [{to: nobody}, {cc: carol}]}]}}, then: {folder: 's${score}/'}}]`, plainMsg, Envelope{}, "folder:s5/"},
	})
}

// TestScoreStopsAtSaturation: once the total saturates, the remaining
// terms are not evaluated (a program term does not run), as in procmail.
func TestScoreStopsAtSaturation(t *testing.T) {
	r := &fakeRunner{}
	cfg := mustParse(t, `rules: [{if: {score: {terms: [{weight: 1, repeat: 1, body: '^'}, {weight: 1, program: [check]}]}}, then: {folder: s/}}]`)
	if _, err := NewEngine(cfg, Options{Default: "inbox/", Runner: r}).Evaluate(context.Background(), []byte(plainMsg), EvalOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(r.calls) != 0 {
		t.Errorf("a term after saturation ran: %q", r.calls)
	}
}

// TestProgramConditionExec runs real programs: the whole message on
// standard input, exit 0 holds, other statuses do not, and a program that
// cannot run or outlives its timeout makes the message wait.
func TestProgramConditionExec(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "check")
	// Exits with the status named on its command line, after checking
	// that the body reached it.
	if err := os.WriteFile(script, []byte("#!/bin/sh\ngrep -q '^the meeting is at noon' || exit 9\nexit \"$1\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, cond string
		want       string // summary, or "error: <text>"
	}{
		{"exit 0 holds", fmt.Sprintf(`{program: [%s, '0']}`, script), "folder:hit/"},
		{"exit 1 does not", fmt.Sprintf(`{program: [%s, '1']}`, script), "default:inbox/"},
		{"exit 2 does not", fmt.Sprintf(`{program: {command: [%s, '2'], timeout: 10s}}`, script), "default:inbox/"},
		{"not: exit 1", fmt.Sprintf(`{not: {program: [%s, '1']}}`, script), "folder:hit/"},
		{"arguments from the envelope", fmt.Sprintf(`{program: [%s, '${recipient}']}`, script), "folder:hit/"},
		{"killed by a signal does not hold", `{program: [/bin/sh, -c, 'kill -9 $$']}`, "default:inbox/"},
		{"timeout", `{program: {command: [/bin/sleep, '10'], timeout: 200ms}}`, "error: timed out"},
		{"timeout of a child process too", `{program: {command: [/bin/sh, -c, 'sleep 10; exit 0'], timeout: 200ms}}`, "error: timed out"},
		{"missing program", `{program: [/nonexistent/prog]}`, "error: no such file or directory"},
		{"not executable", fmt.Sprintf(`{program: [%s]}`, filepath.Join(dir)), "error: permission denied"},
		{"input: body", fmt.Sprintf(`{program: {command: [%s, '0'], input: body}}`, script), "folder:hit/"},
		{"input: header lacks the body", fmt.Sprintf(`{program: {command: [%s, '0'], input: header}}`, script), "default:inbox/"},
		{"input: none", `{program: {command: [/bin/sh, -c, 'test "$$(cat)" = ""'], input: none}}`, "folder:hit/"},
		{"input: header has the header", `{program: {command: [/bin/sh, -c, 'grep -q "^Subject:" && ! grep -q "meeting is at noon"'], input: header}}`, "folder:hit/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustParse(t, "rules: [{if: "+tt.cond+", then: {folder: hit/}}]")
			start := time.Now()
			d, err := NewEngine(cfg, Options{Default: "inbox/"}).Evaluate(context.Background(), []byte(plainMsg), EvalOptions{Envelope: Envelope{Recipient: "0"}})
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Errorf("took %v: the timeout did not stop the program", elapsed)
			}
			if want, ok := strings.CutPrefix(tt.want, "error: "); ok {
				if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "rules.yaml:1:") {
					t.Fatalf("want an error with %q naming the rule, got %v (%v)", want, err, d)
				}
				if tt.name == "timeout" && !errors.Is(err, runprog.ErrTimeout) {
					t.Errorf("the error does not wrap runprog.ErrTimeout: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := summary(d); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

// TestConditionErrorsStopEvaluation: a condition that cannot be evaluated
// fails the whole evaluation, even inside not, any, all and score, and
// forgets the duplicate keys noted before it.
func TestConditionErrorsStopEvaluation(t *testing.T) {
	r := &fakeRunner{err: map[string]error{"broken": errors.New("exec: not found")}}
	cache := filepath.Join(t.TempDir(), "cache")
	for _, cond := range []string{
		"{not: {program: [broken]}}",
		"{any: [{subject: nomatch}, {program: [broken]}]}",
		"{all: [{subject: hello}, {program: [broken]}]}",
		"{score: {terms: [{weight: 1, program: [broken]}]}}",
	} {
		dup := dupcache.New()
		cfg := mustParse(t, fmt.Sprintf("rules: [{if: {duplicate: {cache: %s}}, then: discard}, {if: %s, then: {folder: x/}}]", cache, cond))
		_, err := NewEngine(cfg, Options{Default: "inbox/", Runner: r, Dup: dup}).Evaluate(context.Background(), []byte(plainMsg), EvalOptions{})
		if err == nil || !strings.Contains(err.Error(), "exec: not found") {
			t.Errorf("%s: want the program's error, got %v", cond, err)
		}
		// A key still pending would be reported as seen.
		if seen, err := dup.Seen(cache, "<m1@example.com>", 8192); err != nil || seen {
			t.Errorf("%s: the duplicate key stayed pending after the failure (seen %v, %v)", cond, seen, err)
		}
		dup.Forget(cache, "<m1@example.com>")
	}
}
