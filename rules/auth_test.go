package rules

import (
	"context"
	"sort"
	"strings"
	"testing"
)

// TestAuthResults checks auth-results against Authentication-Results
// fields as MTAs write them (RFC 8601): several fields, several results
// per field, comments holding ';' and '=', folded lines, versions, blanks
// around '=', quoted values, and fields from servers that are not trusted.
func TestAuthResults(t *testing.T) {
	const trusted = "trusted-authserv-id: [mx.example.org, mx2.example.org]\n"
	tests := []struct {
		name   string
		fields string
		held   string // the conditions that hold, sorted
	}{
		{"opendkim, spf and dmarc, folded, comments with ; and =",
			"Authentication-Results: mx.example.org;\n" +
				"\tdkim=pass (2048-bit key; unprotected) header.d=bank.example header.i=@bank.example header.b=\"Xk9+a0bC\";\n" +
				"\tspf=pass (mx.example.org: domain of bounce@bank.example designates 192.0.2.1 as permitted sender) smtp.mailfrom=bounce@bank.example;\n" +
				"\tdmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=bank.example\n",
			"dkim=pass dmarc=pass spf=pass"},
		{"forged field of another server ignored",
			"Authentication-Results: evil.example; dkim=pass header.d=bank.example; dmarc=pass\n" +
				"Authentication-Results: mx.example.org; dkim=fail (bad signature) header.d=bank.example; dmarc=fail\n",
			"dkim=fail dmarc=fail"},
		{"only untrusted fields", "Authentication-Results: evil.example; dkim=pass; spf=pass; dmarc=pass\n", ""},
		{"second trusted id, case-insensitive, CRLF folding",
			"Authentication-Results: MX2.Example.ORG;\r\n spf=softfail smtp.mailfrom=x@y.example\r\n", "spf=softfail"},
		{"version 1", "Authentication-Results: mx.example.org 1; dkim=neutral (no key)\n", "dkim=neutral"},
		{"unknown version ignored", "Authentication-Results: mx.example.org 2; dkim=pass\n", ""},
		{"comment after the authserv-id", "Authentication-Results: mx.example.org (Postfix; amavis) ; spf=temperror\n", "spf=temperror"},
		{"blanks around =", "Authentication-Results: mx.example.org; dkim = permerror (no key for signature) header.d=x.example; spf =fail\n", "dkim=permerror spf=fail"},
		{"a result that cannot be parsed does not hide the next", "Authentication-Results: mx.example.org; garbage; iprev=pass policy.iprev=192.0.2.1; dkim=pass header.d=a.example\n", "dkim=pass"},
		{"quoted ; in a property", "Authentication-Results: mx.example.org; dkim=fail header.b=\"a;b\" reason=\"bad; really\"; dmarc=pass header.from=a.example\n", "dkim=fail dmarc=pass"},
		{"upper case", "Authentication-Results: mx.example.org; DKIM=PASS header.d=A.example; SPF=None\n", "dkim=pass spf=none"},
		{"method version", "Authentication-Results: mx.example.org; dkim/1=policy policy.dkim-rules=x\n", "dkim=policy"},
		{"no results", "Authentication-Results: mx.example.org; none\n", ""},
		{"several results of one method, several fields",
			"Authentication-Results: mx.example.org; dkim=fail header.d=a.example; dkim=pass header.d=b.example\n" +
				"Authentication-Results: mx2.example.org; dmarc=none\n",
			"dkim=fail dkim=pass dmarc=none"},
		{"no field", "", ""},
	}
	var conds []string
	for _, m := range []string{"dkim", "spf", "dmarc"} {
		for _, r := range results {
			conds = append(conds, m+"="+r)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := []byte(tt.fields + "From: a@bank.example\nSubject: s\n\nbody\n")
			var held []string
			for _, c := range conds {
				m, r, _ := strings.Cut(c, "=")
				cfg := mustParse(t, trusted+"rules: [{if: {auth-results: {"+m+": "+r+"}}, then: {folder: hit/}}]")
				d, err := NewEngine(cfg, Options{Default: "inbox/"}).Evaluate(context.Background(), msg, EvalOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if summary(d) == "folder:hit/" {
					held = append(held, c)
				}
			}
			sort.Strings(held)
			if got := strings.Join(held, " "); got != tt.held {
				t.Errorf("held %q, want %q", got, tt.held)
			}
		})
	}
}

// TestAuthResultsAllMethods: one auth-results mapping with several
// methods holds only when every one of them does.
func TestAuthResultsAllMethods(t *testing.T) {
	msg := []byte("Authentication-Results: mx.example.org; dkim=pass; spf=fail; dmarc=pass\n\nb\n")
	for cond, want := range map[string]bool{
		"{dkim: pass, dmarc: pass}":            true,
		"{dkim: pass, spf: pass}":              false,
		"{dkim: pass, spf: fail, dmarc: pass}": true,
	} {
		cfg := mustParse(t, "trusted-authserv-id: mx.example.org\nrules: [{if: {auth-results: "+cond+"}, then: {folder: hit/}}]")
		d, err := NewEngine(cfg, Options{Default: "inbox/"}).Evaluate(context.Background(), msg, EvalOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := summary(d) == "folder:hit/"; got != want {
			t.Errorf("%s: %v, want %v", cond, got, want)
		}
	}
}

func TestStripComments(t *testing.T) {
	for in, want := range map[string]string{
		`a (b; c) d`:              `a  d`,
		`a (b (nested; x) c) d`:   `a  d`,
		`a "q (not a comment)" d`: `a "q (not a comment)" d`,
		`a (esc \) still) d`:      `a  d`,
		`a \(not) d`:              `a \(not) d`,
		`unclosed (x; y`:          `unclosed `,
	} {
		if got := stripComments(in); got != want {
			t.Errorf("stripComments(%q) = %q, want %q", in, got, want)
		}
	}
}
