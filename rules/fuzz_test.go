package rules

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"

	"github.com/rogpeppe/go-internal/txtar"

	"github.com/mfilter/mfilter/internal/dupcache"
	"github.com/mfilter/mfilter/internal/runprog"
)

// FuzzParse: any bytes given as a rules file load to a Config or to an
// ErrorList whose every entry has a position and a message; never a
// panic, and the same answer twice.
func FuzzParse(f *testing.F) {
	seeds := []string{filepath.Join("..", "rules.example.yaml")}
	pairs, _ := filepath.Glob(filepath.Join("..", "testdata", "rules", "pairs", "*", "rules.yaml"))
	seeds = append(seeds, pairs...)
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	ar, err := txtar.ParseFile(filepath.Join("..", "cmd", "mfilter", "testdata", "script", "check_broken.txtar"))
	if err != nil {
		f.Fatal(err)
	}
	n := 0
	for _, file := range ar.Files {
		if strings.HasSuffix(file.Name, ".yaml") {
			f.Add(file.Data)
			n++
		}
	}
	if n < 10 {
		f.Fatalf("check_broken.txtar holds %d rules files, want at least 10", n)
	}
	f.Add([]byte("rules:\n  - include: /dev/zero\n"))
	f.Add([]byte("a: &x [*x]\nrules: *x\n"))
	dir := f.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(path, data)
		if err == nil {
			if cfg == nil {
				t.Fatal("no Config and no error")
			}
			return
		}
		if cfg != nil {
			t.Fatal("a Config and an error")
		}
		var el ErrorList
		if !errors.As(err, &el) || len(el) == 0 {
			t.Fatalf("want a non-empty ErrorList, got %T %v", err, err)
		}
		// YAML's line breaks: LF, CR, CR LF, NEL, LS and PS.
		lines := 1 + bytes.Count(data, []byte("\n")) + bytes.Count(data, []byte("\r")) +
			bytes.Count(data, []byte("\u0085")) + bytes.Count(data, []byte("\u2028")) + bytes.Count(data, []byte("\u2029"))
		for _, e := range el {
			if e.Msg == "" || e.Pos.Line < 1 || e.Pos.Col < 1 || e.Pos.File == path && e.Pos.Line > lines {
				t.Fatalf("bad error entry %q at %+v (%d lines)", e.Msg, e.Pos, lines)
			}
		}
		_, err2 := Parse(path, data)
		if err2 == nil || err2.Error() != err.Error() {
			t.Fatalf("not deterministic:\n%v\n---\n%v", err, err2)
		}
	})
}

// fuzzRules uses every condition kind, and actions of every kind, with
// captures flowing into folders, header fields and logs.
const fuzzRules = `trusted-authserv-id: mx.example.org
vars: {lists: lists}
rules:
  - name: duplicates
    if: duplicate
    then: {copy: dups/}
  - name: tag the subject
    if: {subject: '(?P<subj>.+)'}
    then: [{add-header: 'X-Subject-Copy: ${subj}'}, {log: 'subject ${subj}'}]
  - name: filters
    if: {size: '< 200k'}
    then: [{filter: [tagger]}, {filter: [hdr], header-only: true}]
  - name: lists
    if: {list-id: '^(?P<list>[^.]*)'}
    then: {folder: '${lists}/${list|lower|replace . _}/'}
  - name: people
    if:
      any:
        - from: {domain: example.com}
        - to-or-cc: {address: [bob@example.org]}
        - from: {name: '(?P<who>\w+)'}
        - sender: {local-part: owner}
        - reply-to: '@'
    then: {copy: 'people/${who}/'}
  - name: authentication
    if: {any: [{auth-results: {dkim: pass, spf: pass}}, {auth-results: {dmarc: fail}}, {dkim: pass}, {dkim: {result: fail, domain: gmail.com}}, {dkim: none}]}
    rules:
      - if: {headers: '^FROM_DAEMON'}
        then: {folder: robots/}
      - if: {any: [{body: 'unsubscribe'}, {body: {regex: '^List-', raw: true}}, {headers: {regex: '^Subject:.*news', decoded: true}}]}
        then: {set: {kind: news}}
  - name: score
    if:
      score:
        above: 3
        terms:
          - {weight: 1, repeat: 1, body: {regex: '^.*$', raw: true}}
          - {weight: 2, repeat: 0.5, headers: '^Received:'}
          - {weight: 1, repeat: 2, subject: 'a*'}
          - {weight: -1, exists: [List-Id]}
          - {weight: 1, program: [checker]}
          - {weight: 0.5, not: {size: '> 10k'}}
    then: {set-header: 'X-Score: ${score}'}
  - name: envelope
    if: [{envelope-from: '^(?P<env>[^@]*)'}, {envelope-to: '.'}]
    then:
      - supersede-header: 'X-Env: ${env}'
      - remove-header: 'X-Spam-*'
      - rename-header: {from: X-Original-To, to: X-Was-To}
      - add-header-if-missing: 'X-Checked: 1'
  - if: {var: {kind: '^news$'}}
    then: {folder: news.mbox}
  - if: {not: {exists: Message-ID}}
    then: [{pipe: [archiver], continue: true}, {forward: a@example.org, continue: true}]
  - if: {cc: me, to: me}
    then: stop
  - if: {header: {X-Spam-Flag: YES}}
    then: discard
  - if: {program: {command: [checker, '${sender}'], timeout: 5s}}
    then: {folder: 'checked/'}
`

// fuzzRunner is a deterministic stand-in for the programs of fuzzRules.
type fuzzRunner struct{}

func (fuzzRunner) Run(_ context.Context, argv []string, stdin []byte, _ runprog.Options) (runprog.Result, error) {
	switch argv[0] {
	case "checker":
		return runprog.Result{Exit: len(stdin) % 2}, nil
	case "tagger":
		return runprog.Result{Stdout: append([]byte("X-Tagged: yes\n"), stdin...)}, nil
	case "hdr":
		if len(stdin) > 0 && len(stdin)%3 == 0 {
			return runprog.Result{Exit: 1}, nil // a failing filter: message kept
		}
		return runprog.Result{Stdout: stdin}, nil
	}
	return runprog.Result{}, nil
}

// FuzzEvaluate: any bytes given as a message are filed somewhere. With
// programs, DNS and the duplicate cache that always answer, evaluation
// never fails; it ends in exactly one final delivery (the last step),
// folder names built from message data stay below the mail directory, log
// lines are single lines, and the same message gives the same decision
// and trace.
func FuzzEvaluate(f *testing.F) {
	for _, glob := range []string{
		filepath.Join(corpusDir, "messages", "*", "*"),
		filepath.Join(corpusDir, "dkim", "*", "*.eml"),
		filepath.Join("..", "testdata", "rules", "messages", "*"),
	} {
		files, _ := filepath.Glob(glob)
		if len(files) == 0 {
			f.Fatalf("no seeds in %s", glob)
		}
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	for _, s := range []string{"", "\n", "From \n", "Subject: =?utf-8?q?a=0D=0Ab?=\n", "List-Id: ..\n\n", "From: =?x?q??=\n\n"} {
		f.Add([]byte(s))
	}
	cfg, err := Parse("rules.yaml", []byte(fuzzRules))
	if err != nil {
		f.Fatal(err)
	}
	keys := dkimKeys(f)
	dir := f.TempDir()
	evaluate := func(msg []byte) (*Decision, error) {
		e := NewEngine(cfg, Options{
			Default:   "inbox/",
			Vars:      map[string]string{"HOME": dir, "MAILDIR": dir},
			Runner:    fuzzRunner{},
			LookupTXT: resolver(keys),
			Dup:       dupcache.New(),
		})
		d, err := e.Evaluate(context.Background(), msg, EvalOptions{Envelope: Envelope{Recipient: "me@example.org"}, Trace: true})
		if d != nil {
			// As the filer does when it is done with a message: a
			// pending duplicate key keeps its cache locked.
			d.Abort()
		}
		return d, err
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		d, err := evaluate(msg)
		if err != nil {
			t.Fatalf("evaluation failed: %v", err)
		}
		if len(d.Steps) == 0 {
			t.Fatal("no step: the message would be lost")
		}
		for i, s := range d.Steps {
			if final := i == len(d.Steps)-1; s.Copy == final {
				t.Fatalf("step %d of %d has Copy=%v: %s", i+1, len(d.Steps), s.Copy, summary(d))
			}
			if s.Kind == StepFolder && s.Folder == "" {
				t.Fatalf("step %d: empty folder", i+1)
			}
			if s.Confined {
				for _, part := range strings.Split(s.Folder, "/") {
					if part == ".." || part == "." || strings.IndexFunc(part, unicode.IsControl) >= 0 {
						t.Fatalf("folder %q from message data has a bad component %q", s.Folder, part)
					}
				}
			}
		}
		for _, l := range d.Logs {
			if strings.ContainsAny(l, "\r\n") {
				t.Fatalf("log line with a line break: %q", l)
			}
		}
		d2, err := evaluate(msg)
		if err != nil {
			t.Fatalf("second evaluation failed: %v", err)
		}
		if summary(d) != summary(d2) || strings.Join(d.Trace, "\n") != strings.Join(d2.Trace, "\n") {
			t.Fatalf("not deterministic:\n%s\n%s\n---\n%s\n%s", summary(d), strings.Join(d.Trace, "\n"), summary(d2), strings.Join(d2.Trace, "\n"))
		}
	})
}
