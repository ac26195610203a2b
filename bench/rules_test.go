package bench

import (
	"bytes"
	"context"
	"encoding/base64"
	"runtime"
	"strings"
	"testing"

	"github.com/mfilter/mfilter/rules"
)

// TestHeaderRulesLeaveTheBodyAlone proves that rules that only look at
// the header (and a raw body regex, and the size) never parse or decode
// the body: evaluating them on a message with a 4 MB base64 body
// allocates a few kilobytes, while one rule on the decoded body text
// (msgview's BodyText, through go-message) allocates more than the body.
// Allocation counts are exact, unlike a profile's samples, and the same
// on every machine.
func TestHeaderRulesLeaveTheBodyAlone(t *testing.T) {
	payload := bytes.Repeat([]byte("unsubscribe here, or there; "), 150000)
	body := base64.StdEncoding.EncodeToString(payload)
	var b strings.Builder
	b.WriteString("From bench@example.org  Thu Jan  1 00:00:00 2026\n" +
		"From: someone@example.net\nTo: me@example.org\nSubject: a big one\n" +
		"List-Id: Other list <other.example.org>\nX-Spam-Flag: NO\n" +
		"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n")
	for len(body) > 76 {
		b.WriteString(body[:76] + "\n")
		body = body[76:]
	}
	b.WriteString(body + "\n\n")
	msg := []byte(b.String())

	dir := t.TempDir()
	headerOnly := RulesYAML(dir)
	headerOnly = headerOnly[:strings.Index(headerOnly, "  - if: {body:")] // the 13 header rules
	decoded := headerOnly + "  - if: {body: 'unsubscribe here'}\n    then: {folder: newsletters.mbox}\n"
	for _, c := range []struct {
		name     string
		yaml     string
		parses   bool   // the body is decoded
		folder   string // where the message goes
		maxBytes int    // at most, when the body is not decoded
	}{
		{"header rules", headerOnly, false, "inbox/", 64 << 10},
		{"the scenario's rules (raw body regex, size)", RulesYAML(dir), false, "big/", 64 << 10}, // base64 hides the phrase from the raw regex
		{"a rule on the decoded body", decoded, true, "newsletters.mbox", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := rules.Parse(dir+"/rules.yaml", []byte(c.yaml))
			if err != nil {
				t.Fatal(err)
			}
			eng := rules.NewEngine(cfg, rules.Options{Default: "inbox/", Vars: map[string]string{"MAILDIR": dir}})
			var folder string
			allocated := allocatedBy(func() {
				dec, err := eng.Evaluate(context.Background(), msg, rules.EvalOptions{})
				if err != nil {
					t.Fatal(err)
				}
				folder = dec.Steps[0].Folder
			})
			if folder != c.folder {
				t.Errorf("filed to %s, want %s", folder, c.folder)
			}
			t.Logf("%d bytes allocated for a %d-byte message (%d-byte decoded body)", allocated, len(msg), len(payload))
			if c.parses && allocated < uint64(len(payload)) {
				t.Errorf("a rule on the decoded body allocated only %d bytes: the check cannot see decoding", allocated)
			}
			if !c.parses && allocated > uint64(c.maxBytes) {
				t.Errorf("%d bytes allocated: the body was parsed or decoded", allocated)
			}
		})
	}
}

// allocatedBy returns the bytes that fn allocates on the heap.
func allocatedBy(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}
