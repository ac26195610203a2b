package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestJSONLogDeliver runs mfilter deliver with log-format: json and reads
// the log back: every line is one JSON object; a rule's log line comes
// with its time, and each delivery (a maildir copy, an mbox, a discard)
// with the envelope sender, decoded From and Subject, Message-ID, folder
// and size.
func TestJSONLogDeliver(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	rulesFile := filepath.Join(dir, "rules.yaml")
	rules := "maildir: " + filepath.Join(dir, "mail") + `
default: inbox/
log: mfilter.log
log-format: json
rules:
  - if: {subject: '^(?P<s>urgent.*)'}
    then: [{log: 'urgent: ${s}'}, {copy: urgent/}, {folder: inbox.mbox}]
  - if: {subject: spam}
    then: discard
`
	if err := os.WriteFile(rulesFile, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	msgs := []string{
		"From: =?iso-8859-1?Q?Andr=E9?= <andre@example.fr>\nSubject: urgent =?utf-8?q?r=C3=A9union?=\nMessage-ID: <u1@example.fr>\n\nbody\n",
		"From: spammer@example.net\nSubject: spam spam\n\nbuy\n",
	}
	start := time.Now().Add(-time.Second)
	for _, m := range msgs {
		cmd := exec.Command(mfilterBin, "deliver", "--rules", rulesFile, "-f", "sender@example.org")
		cmd.Dir = dir
		cmd.Stdin = strings.NewReader(m)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mfilter deliver: %v\n%s", err, out)
		}
	}
	log, err := os.ReadFile(filepath.Join(dir, "mail", "mfilter.log"))
	if err != nil {
		t.Fatal(err)
	}
	var entries []map[string]any
	for _, line := range strings.Split(strings.TrimSuffix(string(log), "\n"), "\n") {
		var e map[string]any
		d := json.NewDecoder(strings.NewReader(line))
		d.UseNumber()
		if err := d.Decode(&e); err != nil || d.More() {
			t.Fatalf("log line %q is not one JSON object: %v", line, err)
		}
		ts, err := time.Parse(time.RFC3339, e["time"].(string))
		if err != nil || ts.Before(start.Truncate(time.Second)) || ts.After(time.Now().Add(time.Second)) {
			t.Errorf("time %v of %q: %v", e["time"], line, err)
		}
		delete(e, "time")
		entries = append(entries, e)
	}
	wantDelivery := func(folder, subject, from, id string) map[string]any {
		e := map[string]any{"envelope_from": "sender@example.org", "from": from, "subject": subject, "folder": folder}
		if id != "" {
			e["message_id"] = id
		}
		return e
	}
	want := []map[string]any{
		{"log": "urgent: urgent réunion"},
		wantDelivery("urgent/new/*", "urgent réunion", "André <andre@example.fr>", "<u1@example.fr>"),
		wantDelivery("inbox.mbox", "urgent réunion", "André <andre@example.fr>", "<u1@example.fr>"),
		wantDelivery("/dev/null", "spam spam", "spammer@example.net", ""),
	}
	if len(entries) != len(want) {
		t.Fatalf("%d log entries, want %d:\n%s", len(entries), len(want), log)
	}
	for i, w := range want {
		e := entries[i]
		if _, ok := w["folder"]; ok {
			size, err := e["size"].(json.Number).Int64()
			if err != nil || size < int64(len(msgs[0])/2) {
				t.Errorf("entry %d: size %v", i+1, e["size"])
			}
			delete(e, "size")
			pat := "^" + strings.ReplaceAll(regexp.QuoteMeta(w["folder"].(string)), `\*`, `[^/]+`) + "$"
			if f, _ := e["folder"].(string); regexp.MustCompile(pat).MatchString(f) {
				e["folder"] = w["folder"]
			}
		}
		got, _ := json.Marshal(e)
		exp, _ := json.Marshal(w)
		if !bytes.Equal(got, exp) {
			t.Errorf("entry %d:\n got %s\nwant %s", i+1, got, exp)
		}
	}
}
