package rules

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestScoreAgainstProcmail scores raw bodies with weighted regex terms in
// mfilter and in the real procmail (":0 B" with "* w^x regex") and
// requires the same $= and the same verdict (total > 0). It covers
// procmail's infinite score for patterns that match the empty string (^,
// $, x*, .*$), line counting with ^.*$ and ^$ (which never match empty
// inside the area, since procmail's ^ and $ consume a newline there),
// repeat < 1 summing the rest of the geometric series, repeat > 1, negative
// weights and totals, and truncation toward zero.
//
// Not covered, as documented deviations (RE2 takes the longest match where
// procmail takes the shortest): ".*" and "^.*", which procmail matches
// empty and so scores as infinite.
func TestScoreAgainstProcmail(t *testing.T) {
	bodies := []string{"a\n\nb\n", "a\n", "", "a", "line one\nline two\n\nexample example example\nexample, example example example\n"}
	terms := [][]string{
		{"1^1 ^"}, {"1^1 $"}, {"1^1 x*"}, {"1^1 a?"}, {"1^1 b*$"}, {"1^1 c*$"}, {"1^1 ^c*"}, {"1^1 .*$"},
		{"1^1 ^$"}, {"1^1 ^.*$"}, {"1^1 ^b*$"}, {"1^1 ^[ab]*$"}, {"1^1 ^a"}, {"1^1 e"},
		{"2^0.5 ^"}, {"2^0.5 example"}, {"3^0.5 ^.*$"}, {"1^2 e"}, {"1^2 ^$"}, {"5^3 $"},
		{"-1^1 a", "-2^0.5 ^.*$"}, {"-3^1 ^"}, {"-1^1 ^.*$", "1^1 e"}, {"0.7^1 ^a"}, {"-0.7^1 ^a", "0.1^1 b"},
		{"1^1 ^.*$", "-1^1 ^"}, {"0^1 ^"}, {"2^0.25 example"},
		// Saturation at ±2147483647 is final; an infinite term adds ±2^31.
		{"-2^1 ^a", "1^1 ^", "-1^1 b"}, {"2^1 ^a", "-1^1 ^", "1^1 b"}, {"-1^1 ^a", "1^1 ^", "-5^1 b"},
		{"2147483647^1 a", "-1^1 b"}, {"-3000000000^1 a", "1^1 b"}, {"1000000000^1 a", "1000000000^1 b", "1000000000^1 ^a", "-1000000000^1 ^a"},
	}
	for _, body := range bodies {
		msg := []byte("Subject: s\n\n" + body)
		for _, term := range terms {
			name := fmt.Sprintf("%q/%s", body, strings.Join(term, ","))
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				wantScore, wantHit := procmailScore(t, term, msg)
				var yterms []string
				for _, tm := range term {
					w, rest, _ := strings.Cut(tm, "^")
					x, re, _ := strings.Cut(rest, " ")
					yterms = append(yterms, fmt.Sprintf("{weight: %s, repeat: %s, body: {regex: %s, raw: true}}", w, x, yamlQuote(re)))
				}
				src := fmt.Sprintf("rules:\n  - if: {score: {terms: [%s]}}\n    then: {copy: hit/}\n  - then: {folder: 's${score}/'}\n", strings.Join(yterms, ", "))
				cfg := mustParse(t, src)
				d, err := NewEngine(cfg, Options{Default: "inbox/"}).Evaluate(context.Background(), msg, EvalOptions{Trace: true})
				if err != nil {
					t.Fatal(err)
				}
				gotHit := strings.HasPrefix(summary(d), "copy:hit/ ")
				gotScore := strings.TrimSuffix(strings.TrimPrefix(d.Steps[len(d.Steps)-1].Folder, "s"), "/")
				if gotScore != wantScore || gotHit != wantHit {
					t.Errorf("mfilter: score %s, matched %v; procmail: score %s, matched %v\ntrace:\n%s", gotScore, gotHit, wantScore, wantHit, strings.Join(d.Trace, "\n"))
				}
			})
		}
	}
}

var procmailScoreLine = regexp.MustCompile(`(?m)^score=(-?[0-9]+) hit=(yes|no)$`)

// procmailScore runs the real procmail on msg with one ":0 B" recipe of
// the weighted conditions and returns $= and whether the recipe matched.
func procmailScore(t *testing.T, conds []string, msg []byte) (string, bool) {
	t.Helper()
	procmail, err := exec.LookPath("procmail")
	if err != nil {
		t.Fatalf("procmail is required (test.sh installs it): %v", err)
	}
	dir := procmailDir(t)
	var rc strings.Builder
	fmt.Fprintf(&rc, "MAILDIR=%s\nDEFAULT=/dev/null\nLOGFILE=%s/log\nHIT=no\n:0 B\n", dir, dir)
	for _, c := range conds {
		fmt.Fprintf(&rc, "* %s\n", c)
	}
	rc.WriteString("{ HIT=yes }\nLOG=\"score=$= hit=$HIT\n\"\n")
	if err := os.WriteFile(filepath.Join(dir, "rc"), []byte(rc.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(procmail, "-m", filepath.Join(dir, "rc"))
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(msg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("procmail: %v: %s", err, out)
	}
	log, err := os.ReadFile(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	m := procmailScoreLine.FindSubmatch(log)
	if m == nil {
		t.Fatalf("no score in procmail's log:\n%s", log)
	}
	return string(m[1]), string(m[2]) == "yes"
}
