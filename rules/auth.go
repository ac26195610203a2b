package rules

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mfilter/mfilter/internal/msgview"
)

// dkimResult is the outcome of verifying every DKIM signature once.
type dkimResult struct {
	sigs []*dkim.Verification
	err  error // the verification could not run (e.g. temporary DNS trouble)
}

// verifyDKIM verifies every signature of the message (at most 10). The
// From_ line is not part of the message. A message without a blank line
// after its header (only a header, or nothing) has an empty body, which
// go-msgauth wants to see written as a blank line: else it fails with
// "failed to read header: EOF", and the message would wait forever. err
// is set only when the verification could not run at all.
func verifyDKIM(m *msgview.Message, lookup func(string) ([]string, error)) dkimResult {
	raw := m.Raw()
	if bytes.HasPrefix(raw, []byte("From ")) {
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			raw = raw[i+1:]
		} else {
			raw = nil
		}
	}
	if !hasHeaderEnd(raw) {
		fixed := make([]byte, 0, len(raw)+2)
		fixed = append(fixed, raw...)
		if len(fixed) > 0 && fixed[len(fixed)-1] != '\n' {
			fixed = append(fixed, '\n')
		}
		raw = append(fixed, '\n')
	}
	sigs, err := dkim.VerifyWithOptions(bytes.NewReader(raw), &dkim.VerifyOptions{LookupTXT: lookup, MaxVerifications: 10})
	if err == dkim.ErrTooManySignatures {
		err = nil
	}
	return dkimResult{sigs: sigs, err: err}
}

// hasHeaderEnd reports whether msg has the empty line that ends a header
// as go-msgauth reads lines (net/textproto): "\n" or "\r\n" alone; a line
// "\r\r\n" is not empty there.
func hasHeaderEnd(msg []byte) bool {
	for len(msg) > 0 {
		i := bytes.IndexByte(msg, '\n')
		if i < 0 {
			return false
		}
		if i == 0 || i == 1 && msg[0] == '\r' {
			return true
		}
		msg = msg[i+1:]
	}
	return false
}

// dkimMatches evaluates a dkim condition: pass holds when a signature (of
// domain, if given) verifies; fail when there are such signatures and none
// verifies; none when there are none. When no signature verifies and one
// could not be checked for now (a temporary DNS failure fetching its key),
// pass and fail cannot be decided: temp is that failure, and the message
// must wait for a later try.
func dkimMatches(r dkimResult, want, domain string) (bool, string, error) {
	var n, pass int
	var why []string
	var temp error
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
			if dkim.IsTempFail(v.Err) && temp == nil {
				temp = fmt.Errorf("d=%s: %w", d, v.Err)
			}
		}
	}
	if pass > 0 {
		temp = nil
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
		return pass > 0, desc, temp
	case "fail":
		return n > 0 && pass == 0, desc, temp
	default: // none
		return n == 0, desc, nil
	}
}

// authResults returns the results of method found in Authentication-Results
// fields whose authserv-id is trusted. Fields from other hosts are ignored:
// anyone can write an Authentication-Results field into a message.
//
// The field is read by RFC 8601's grammar here rather than with
// go-msgauth's authres.Parse, which splits on every ';' (also in quoted
// strings), gives up on the first result it cannot read (dropping the
// ones after it), and refuses blanks around '=' and method versions.
func authResults(m *msgview.Message, trusted []string, method string) []string {
	var out []string
	for _, f := range m.Get("authentication-results") {
		parts := splitUnquoted(stripComments(msgview.Unfold(f.Raw)), ';')
		id := strings.Fields(parts[0])
		if len(id) == 0 || len(id) > 2 || len(id) == 2 && id[1] != "1" {
			continue // no authserv-id, or a version this reader does not know
		}
		ok := false
		for _, t := range trusted {
			ok = ok || strings.EqualFold(id[0], t)
		}
		if !ok {
			continue
		}
		for _, p := range parts[1:] {
			name, value, found := strings.Cut(p, "=")
			if !found {
				continue // "none", or garbage
			}
			name, _, _ = strings.Cut(name, "/") // method-version
			if !strings.EqualFold(strings.TrimSpace(name), method) {
				continue
			}
			if r := strings.Fields(value); len(r) > 0 {
				out = append(out, strings.ToLower(r[0]))
			}
		}
	}
	return out
}

// splitUnquoted splits s at every sep outside double-quoted strings.
func splitUnquoted(s string, sep byte) []string {
	var out []string
	inQuote := false
	start := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && inQuote:
			i++
		case c == '"':
			inQuote = !inQuote
		case c == sep && !inQuote:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// stripComments removes RFC 5322 comments, which may hold ';' and
// '=' (go-msgauth#74 is the same trap in authres.Parse).
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
