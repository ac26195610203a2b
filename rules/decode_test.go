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

// corpusDir is the permissively licensed test corpus of the repository.
var corpusDir = filepath.Join("..", "testdata", "corpus")

// TestDecodedMatchingOnRealSubjects proves on real messages of the corpus
// that header conditions match the decoded text of RFC 2047 encoded words
// (iso-8859-1, utf-8 in Q and B, iso-2022-jp, gb2312), that raw: true
// sees the field as written, and that this raw view is exactly what the
// real procmail matches: procmail never finds the decoded words, and finds
// the encoded ones.
func TestDecodedMatchingOnRealSubjects(t *testing.T) {
	tests := []struct {
		file    string // under testdata/corpus/messages
		field   string // the condition key, and the field procmail searches
		decoded string // text of the decoded value, in UTF-8
		raw     string // text of the value as written
	}{
		{"mimekit/japanese.eml", "subject", "日本語メールテスト (testing Japanese emails)", "=?ISO-2022-JP?B?GyRCRnxLXDhsJWEhPCVrJUYlOSVIGyhCICh0ZXN0aW5nIEph?="},
		{"ruby-mail/rfc2822-example14.eml", "subject", "テストテスト", "=?ISO-2022-JP?B?GyRCJUYlOSVIGyhC?="},
		{"ruby-mail/attachment_emails-attachment_with_quoted_filename.eml", "subject", "Eelanalüüsi päring", "=?ISO-8859-1?Q?Eelanal=FC=FCsi_p=E4ring?="},
		{"ruby-mail/multi_charset-japanese.eml", "subject", "まみむめも", "=?UTF-8?B?44G+44G/44KA44KB44KC?="},
		{"ruby-mail/multi_charset-japanese.eml", "to", "みける <raasdnil@gmail.com>", "=?UTF-8?B?44G/44GR44KL?="},
		// Three folded encoded words: unfolded, and the white space
		// between adjacent words dropped, as RFC 2047 says.
		{"spamassassin/spam-unicode2.eml", "subject", "外贸客户开发，势在必行", "=?UTF-8?Q?=E5=A4=96=E8=B4=B8=E5=AE=A2=E6=88=B7=E5=BC=80?="},
		{"spamassassin/nice-gb2312.2.eml", "subject", "RE: 装硬碟问题", "=?GB2312?Q?=D7=B0=D3=B2=B5=FA=CE=CA=CC=E2?="},
		// An encoded word in a comment of an address field.
		{"spamassassin/nice-gb2312.2.eml", "from", "Jason Lee (李展锋)", "(=?GB2312?Q?=C0=EE=D5=B9=B7=E6?=)"},
	}
	procmailField := map[string]string{"subject": "Subject", "from": "From", "to": "To"}
	for _, tt := range tests {
		t.Run(tt.file+"/"+tt.field, func(t *testing.T) {
			t.Parallel()
			msg, err := os.ReadFile(filepath.Join(corpusDir, "messages", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(msg, []byte(tt.raw)) {
				t.Fatalf("the message does not hold %q: the table is wrong", tt.raw)
			}
			dec, raw := regexp.QuoteMeta(tt.decoded), regexp.QuoteMeta(tt.raw)
			fieldRe := "^" + procmailField[tt.field] + ":.*"
			conds := []struct {
				what string
				cond string // YAML condition
				want bool
			}{
				{"decoded text", fmt.Sprintf(`{%s: %s}`, tt.field, yamlQuote(dec)), true},
				{"decoded text, raw: true", fmt.Sprintf(`{%s: {regex: %s, raw: true}}`, tt.field, yamlQuote(dec)), false},
				{"encoded text, raw: true", fmt.Sprintf(`{%s: {regex: %s, raw: true}}`, tt.field, yamlQuote(raw)), true},
				{"encoded text, decoded", fmt.Sprintf(`{%s: %s}`, tt.field, yamlQuote(raw)), false},
				{"headers: decoded text", fmt.Sprintf(`{headers: %s}`, yamlQuote(fieldRe+dec)), false},
				{"headers: encoded text", fmt.Sprintf(`{headers: %s}`, yamlQuote(fieldRe+raw)), true},
				{"headers: decoded text, decoded: true", fmt.Sprintf(`{headers: {regex: %s, decoded: true}}`, yamlQuote(fieldRe+dec)), true},
			}
			for _, c := range conds {
				if got := ruleMatches(t, c.cond, msg); got != c.want {
					t.Errorf("%s: %s matched=%v, want %v", c.what, c.cond, got, c.want)
				}
			}
			// The real procmail: raw bytes only.
			if procmailMatches(t, fieldRe+dec, msg) {
				t.Errorf("procmail matched the decoded text %q: raw: true would not be procmail's behaviour", tt.decoded)
			}
			if !procmailMatches(t, fieldRe+raw, msg) {
				t.Errorf("procmail did not match the encoded text %q", tt.raw)
			}
		})
	}
}

// yamlQuote writes s as a single-quoted YAML scalar.
func yamlQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// ruleMatches reports whether the condition (YAML) holds for msg.
func ruleMatches(t *testing.T, cond string, msg []byte) bool {
	t.Helper()
	cfg, err := Parse("rules.yaml", []byte("rules: [{if: "+cond+", then: {folder: hit/}}]\n"))
	if err != nil {
		t.Fatalf("parse %s: %v", cond, err)
	}
	d, err := NewEngine(cfg, Options{Default: "inbox/"}).Evaluate(context.Background(), msg, EvalOptions{})
	if err != nil {
		t.Fatalf("evaluate %s: %v", cond, err)
	}
	return summary(d) == "folder:hit/"
}

// procmailMatches runs the real procmail with the single condition
// "* regex" on msg and reports whether the recipe delivered.
func procmailMatches(t *testing.T, regex string, msg []byte) bool {
	t.Helper()
	procmail, err := exec.LookPath("procmail")
	if err != nil {
		t.Fatalf("procmail is required (test.sh installs it): %v", err)
	}
	dir := procmailDir(t)
	rc := filepath.Join(dir, "rc")
	text := fmt.Sprintf("MAILDIR=%s\nDEFAULT=/dev/null\nSHELL=/bin/sh\n:0\n* %s\nhit/\n", dir, regex)
	if err := os.WriteFile(rc, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(procmail, "-m", rc)
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(msg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("procmail: %v: %s", err, out)
	}
	ents, err := os.ReadDir(filepath.Join(dir, "hit", "new"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return len(ents) > 0
}

// procmailDir is a fresh directory for a procmail run whose name holds
// nothing procmail would expand in an rcfile (t.TempDir uses the test
// name, which may hold a '$').
func procmailDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "procmail-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
