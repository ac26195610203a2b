package rules

import (
	"context"
	"encoding/base64"
	"runtime"
	"strings"
	"testing"
)

// TestHeaderRulesLeaveBodyAlone: rules that test only header fields do
// not parse or decode the body: what evaluating them allocates does not
// grow with a 4 MB base64 body. A decoded-body rule on the same message
// does read it, which shows the measurement would see it.
func TestHeaderRulesLeaveBodyAlone(t *testing.T) {
	body := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("unsubscribe elsewhere, please\n", 100000)))
	var b strings.Builder
	b.WriteString("From: Alice <alice@example.com>\nTo: bob@example.org\nSubject: =?UTF-8?Q?R=C3=A9sum=C3=A9?=\n")
	b.WriteString("List-Id: Dev <dev.lists.example.org>\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n")
	b.WriteString("--b\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n")
	for len(body) > 76 {
		b.WriteString(body[:76] + "\n")
		body = body[76:]
	}
	b.WriteString(body + "\n--b--\n")
	msg := []byte(b.String())

	header := NewEngine(mustParse(t, `rules:
  - if: {list-id: '^nothing\.example$'}
    then: {folder: a/}
  - if: {subject: 'résumé', from: {domain: example.net}}
    then: {folder: b/}
  - if: {header: {X-Spam-Flag: 'YES'}}
    then: {folder: c/}
  - if: {headers: '^To:.*carol'}
    then: {folder: d/}
`), Options{})
	bodyRule := NewEngine(mustParse(t, `rules:
  - if: {body: 'unsubscribe here'}
    then: {folder: e/}
`), Options{})

	allocated := func(e *Engine) uint64 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		const runs = 5
		for range runs {
			d, err := e.Evaluate(context.Background(), msg, EvalOptions{})
			if err != nil || summary(d) != "default:" {
				t.Fatalf("Evaluate = %s, %v", summary(d), err)
			}
		}
		runtime.ReadMemStats(&after)
		return (after.TotalAlloc - before.TotalAlloc) / runs
	}
	if n := allocated(header); n > 64<<10 {
		t.Errorf("header rules allocate %d bytes on a %d-byte message: the body was read", n, len(msg))
	}
	if n := allocated(bodyRule); n < 1<<20 {
		t.Errorf("a body rule allocates only %d bytes on a %d-byte message: the measurement sees nothing", n, len(msg))
	}
}
