package rules

import (
	"bytes"
	"strings"

	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"

	"github.com/mfilter/mfilter/internal/msgview"
)

// dkimResult is the outcome of verifying every DKIM signature once.
type dkimResult struct {
	sigs []*dkim.Verification
	err  error // the verification could not run (e.g. temporary DNS trouble)
}

func verifyDKIM(m *msgview.Message, lookup func(string) ([]string, error)) dkimResult {
	raw := m.Raw()
	if bytes.HasPrefix(raw, []byte("From ")) {
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			raw = raw[i+1:]
		} else {
			raw = nil
		}
	}
	sigs, err := dkim.VerifyWithOptions(bytes.NewReader(raw), &dkim.VerifyOptions{LookupTXT: lookup, MaxVerifications: 10})
	if err == dkim.ErrTooManySignatures {
		err = nil
	}
	return dkimResult{sigs: sigs, err: err}
}

// dkimMatches evaluates a dkim condition: pass holds when a signature (of
// domain, if given) verifies; fail when there are such signatures and none
// verifies; none when there are none.
func dkimMatches(r dkimResult, want, domain string) (bool, string) {
	var n, pass int
	var why []string
	for _, v := range r.sigs {
		d := strings.ToLower(v.Domain)
		if domain != "" && d != domain {
			continue
		}
		n++
		if v.Err == nil {
			pass++
			why = append(why, "d="+d+" pass")
		} else {
			why = append(why, "d="+d+" "+v.Err.Error())
		}
	}
	desc := "no DKIM signature"
	if domain != "" {
		desc += " for " + domain
	}
	if n > 0 {
		desc = strings.Join(why, "; ")
	}
	switch want {
	case "pass":
		return pass > 0, desc
	case "fail":
		return n > 0 && pass == 0, desc
	default: // none
		return n == 0, desc
	}
}

// authResults returns the results of method found in Authentication-Results
// fields whose authserv-id is trusted. Fields from other hosts are ignored:
// anyone can write an Authentication-Results field into a message.
func authResults(m *msgview.Message, trusted []string, method string) []string {
	var out []string
	for _, f := range m.Get("authentication-results") {
		v := stripComments(msgview.Unfold(f.Raw))
		id, results, err := authres.Parse(v)
		if err != nil && id == "" {
			continue
		}
		ok := false
		for _, t := range trusted {
			if strings.EqualFold(strings.TrimSpace(id), t) {
				ok = true
			}
		}
		if !ok {
			continue
		}
		for _, r := range results {
			switch r := r.(type) {
			case *authres.DKIMResult:
				if method == "dkim" {
					out = append(out, string(r.Value))
				}
			case *authres.SPFResult:
				if method == "spf" {
					out = append(out, string(r.Value))
				}
			case *authres.DMARCResult:
				if method == "dmarc" {
					out = append(out, string(r.Value))
				}
			}
		}
	}
	return out
}

// stripComments removes RFC 5322 comments, which go-msgauth's parser
// cannot read when they hold a ';' (go-msgauth#74).
func stripComments(s string) string {
	var b strings.Builder
	depth := 0
	inQuote := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			if depth == 0 {
				b.WriteByte(c)
				b.WriteByte(s[i+1])
			}
			i++
			continue
		case c == '"' && depth == 0:
			inQuote = !inQuote
		case c == '(' && !inQuote:
			depth++
			continue
		case c == ')' && !inQuote && depth > 0:
			depth--
			continue
		}
		if depth == 0 {
			b.WriteByte(c)
		}
	}
	return b.String()
}
