package rules

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// dkimKeys reads every testdata/corpus/dkim/*/keys.txt into a map from
// the DNS name to its TXT record.
func dkimKeys(t testing.TB) map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(corpusDir, "dkim", "*", "keys.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no keys.txt under %s/dkim: %v", corpusDir, err)
	}
	keys := make(map[string]string)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			line := sc.Text()
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			name, txt, ok := strings.Cut(line, "\t")
			if !ok {
				t.Fatalf("%s: bad line %q", f, line)
			}
			keys[strings.ToLower(name)] = txt
		}
	}
	return keys
}

// resolver answers TXT queries from keys, like a DNS server holding only
// them (NXDOMAIN for anything else).
func resolver(keys map[string]string) func(string) ([]string, error) {
	return func(name string) ([]string, error) {
		if txt, ok := keys[strings.ToLower(strings.TrimSuffix(name, "."))]; ok {
			return []string{txt}, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
}

// dkimExpectations reads the results table of testdata/corpus/SOURCES.md:
// for each signed message, the domains whose signatures pass.
func dkimExpectations(t *testing.T) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(corpusDir, "SOURCES.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile(`(?m)^\| (dkim/[^ |]+\.eml) \|.*\| ([^|]*PASS[^|]*) \|$`)
	pass := regexp.MustCompile(`PASS d=([^ ;]+)`)
	out := make(map[string][]string)
	for _, m := range row.FindAllStringSubmatch(string(data), -1) {
		for _, d := range pass.FindAllStringSubmatch(m[2], -1) {
			out[m[1]] = append(out[m[1]], strings.ToLower(d[1]))
		}
	}
	if len(out) < 9 {
		t.Fatalf("found %d signed messages in the SOURCES.md table, want 9", len(out))
	}
	return out
}

// dkimVerdicts evaluates every form of the dkim condition on msg and
// returns the ones that held, sorted, like "pass", "fail", "none",
// "pass:example.com", "none:other.example".
func dkimVerdicts(t *testing.T, msg []byte, lookup func(string) ([]string, error), domains []string) ([]string, error) {
	t.Helper()
	conds := []string{"pass", "fail", "none"}
	seen := map[string]bool{}
	for _, d := range append(append([]string(nil), domains...), "other.example") {
		if seen[d] {
			continue
		}
		seen[d] = true
		for _, r := range []string{"pass", "fail", "none"} {
			conds = append(conds, r+":"+d)
		}
	}
	var held []string
	for _, c := range conds {
		r, d, _ := strings.Cut(c, ":")
		cond := "{dkim: " + r + "}"
		if d != "" {
			cond = "{dkim: {result: " + r + ", domain: " + d + "}}"
		}
		cfg := mustParse(t, "rules: [{if: "+cond+", then: {folder: hit/}}]")
		dec, err := NewEngine(cfg, Options{Default: "inbox/", LookupTXT: lookup}).Evaluate(context.Background(), msg, EvalOptions{})
		if err != nil {
			return nil, err
		}
		if summary(dec) == "folder:hit/" {
			held = append(held, c)
		}
	}
	sort.Strings(held)
	return held, nil
}

// want lists the verdicts expected when the signatures of domains
// verify (pass) or all fail (fail).
func wantVerdicts(result string, domains []string) []string {
	out := []string{result, "none:other.example"}
	seen := map[string]bool{}
	for _, d := range domains {
		if !seen[d] {
			out = append(out, result+":"+d)
			seen[d] = true
		}
	}
	sort.Strings(out)
	return out
}

// TestDKIMCorpus verifies the signed messages of the corpus with their
// keys (testdata/corpus/dkim/*/keys.txt as the resolver) and checks every
// form of the dkim condition against the results table of SOURCES.md:
// as received, in an mbox with a From_ line, with the body altered, and
// with no key published.
func TestDKIMCorpus(t *testing.T) {
	keys := dkimKeys(t)
	expect := dkimExpectations(t)
	for file, domains := range expect {
		t.Run(file, func(t *testing.T) {
			msg, err := os.ReadFile(filepath.Join(corpusDir, file))
			if err != nil {
				t.Fatal(err)
			}
			sep := bytes.Index(msg, []byte("\n\n"))
			if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 && (sep < 0 || i < sep) {
				sep = i + 2
			}
			if sep < 0 {
				t.Fatal("no body")
			}
			tampered := append(append(append([]byte(nil), msg[:sep+2]...), "Altered. "...), msg[sep+2:]...)
			cases := []struct {
				name   string
				msg    []byte
				lookup func(string) ([]string, error)
				want   []string
			}{
				{"as received", msg, resolver(keys), wantVerdicts("pass", domains)},
				{"with a From_ line", append([]byte("From sender@example.net  Mon Jan  1 00:00:00 2024\n"), msg...), resolver(keys), wantVerdicts("pass", domains)},
				{"body altered", tampered, resolver(keys), wantVerdicts("fail", domains)},
				{"no key published", msg, resolver(nil), wantVerdicts("fail", domains)},
			}
			for _, c := range cases {
				got, err := dkimVerdicts(t, c.msg, c.lookup, domains)
				if err != nil {
					t.Errorf("%s: %v", c.name, err)
					continue
				}
				if strings.Join(got, " ") != strings.Join(c.want, " ") {
					t.Errorf("%s: held %v, want %v", c.name, got, c.want)
				}
			}
		})
	}
}

// TestDKIMUnsigned: a message without signatures is dkim none, whatever
// its shape, and is never a reason to try again later.
func TestDKIMUnsigned(t *testing.T) {
	for _, msg := range []string{
		plainMsg,
		"Subject: header only, no body\n",
		"Subject: no newline at all",
		"Subject: a line of two CRs is not empty to go-msgauth\n\r\r\n",
		"From someone@example.com  Mon Jan  1 00:00:00 2024\nSubject: s\n\nbody\n",
		"",
	} {
		got, err := dkimVerdicts(t, []byte(msg), resolver(nil), []string{"example.com"})
		if err != nil {
			t.Errorf("%q: %v", msg, err)
			continue
		}
		if want := "none none:example.com none:other.example"; strings.Join(got, " ") != want {
			t.Errorf("%q: held %v, want %s", msg, got, want)
		}
	}
}

// TestDKIMTemporaryDNSFailure: when the key cannot be fetched for now,
// neither pass nor fail can be decided, and a rule like
// {not: {dkim: pass}} must not discard a good message: the message waits
// for a later try. A signature that passes still decides pass.
func TestDKIMTemporaryDNSFailure(t *testing.T) {
	keys := dkimKeys(t)
	temp := func(name string) ([]string, error) {
		return nil, &net.DNSError{Err: "server misbehaving", Name: name, IsTemporary: true}
	}
	msg, err := os.ReadFile(filepath.Join(corpusDir, "dkim", "go-msgauth", "rfc8463-ed25519-and-rsa.eml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, cond := range []string{"{dkim: pass}", "{dkim: fail}", "{not: {dkim: pass}}", "{dkim: {result: pass, domain: football.example.com}}"} {
		cfg := mustParse(t, "rules: [{if: "+cond+", then: discard}]")
		_, err := NewEngine(cfg, Options{Default: "inbox/", LookupTXT: temp}).Evaluate(context.Background(), msg, EvalOptions{})
		if err == nil || !strings.Contains(err.Error(), "server misbehaving") {
			t.Errorf("%s with DNS down: want an error naming the DNS failure (try later), got %v", cond, err)
		}
	}
	// One key fetched (ed25519), one lookup failing for now (rsa): the
	// passing signature decides.
	half := func(name string) ([]string, error) {
		if strings.HasPrefix(name, "brisbane.") {
			return resolver(keys)(name)
		}
		return temp(name)
	}
	got, err := dkimVerdicts(t, msg, half, []string{"football.example.com"})
	if err != nil {
		t.Fatalf("a passing signature decides, whatever the other's DNS: %v", err)
	}
	if want := wantVerdicts("pass", []string{"football.example.com"}); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("held %v, want %v", got, want)
	}
	// dkim none is decided without DNS.
	cfg := mustParse(t, "rules: [{if: {dkim: none}, then: {folder: unsigned/}}]")
	d, err := NewEngine(cfg, Options{Default: "inbox/", LookupTXT: temp}).Evaluate(context.Background(), msg, EvalOptions{})
	if err != nil || summary(d) != "default:inbox/" {
		t.Errorf("dkim none on a signed message with DNS down: %v, %v", d, err)
	}
}
