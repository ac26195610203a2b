package maillog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// jsonLines parses every line of a JSON log; each must be one object.
func jsonLines(t *testing.T, log []byte) []map[string]any {
	t.Helper()
	if len(log) > 0 && log[len(log)-1] != '\n' {
		t.Fatalf("the log does not end in a newline: %q", log)
	}
	var out []map[string]any
	for _, line := range strings.SplitAfter(strings.TrimSuffix(string(log), "\n"), "\n") {
		var m map[string]any
		dec := json.NewDecoder(strings.NewReader(line))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("line %q is not a JSON object: %v", line, err)
		}
		if dec.More() {
			t.Fatalf("line %q holds more than one JSON value", line)
		}
		out = append(out, m)
	}
	return out
}

func TestJSONLog(t *testing.T) {
	var buf bytes.Buffer
	l := NewFormat(&buf, JSON)
	l.now = func() time.Time { return time.Date(2026, 3, 4, 5, 6, 7, 0, time.FixedZone("CET", 3600)) }
	msg := []byte("From bounce+x@lists.example.org  Wed Mar  4 05:06:07 2026\n" +
		"From: =?iso-8859-1?Q?Andr=E9?= <andre@example.fr>\n" +
		"Subject: =?UTF-8?B?5pel5pys6Kqe?= and\n =?utf-8?q?more_<b>?=\n" +
		"Message-ID:   <m1&2@example.fr>  \n\nbody\n")
	if err := l.Log(msg, "inbox/new/1700000000.M1P2.host,S=200", 200); err != nil {
		t.Fatal(err)
	}
	if err := l.Note("rule said: a \"quoted\"\nsecond line <tag>"); err != nil {
		t.Fatal(err)
	}
	if err := l.Log([]byte("no header at all"), " /usr/bin/archive --year 2026", 16); err != nil {
		t.Fatal(err)
	}
	if err := l.Log([]byte("Subject: bad \xff byte\n\n"), "/dev/null", 21); err != nil {
		t.Fatal(err)
	}
	lines := jsonLines(t, buf.Bytes())
	want := []map[string]any{
		{"time": "2026-03-04T04:06:07Z", "envelope_from": "bounce+x@lists.example.org", "from": "André <andre@example.fr>",
			"subject": "日本語 and more <b>", "message_id": "<m1&2@example.fr>", "folder": "inbox/new/1700000000.M1P2.host,S=200", "size": json.Number("200")},
		{"time": "2026-03-04T04:06:07Z", "log": "rule said: a \"quoted\"\nsecond line <tag>"},
		{"time": "2026-03-04T04:06:07Z", "folder": "/usr/bin/archive --year 2026", "size": json.Number("16")},
		{"time": "2026-03-04T04:06:07Z", "subject": "bad \uFFFD byte", "folder": "/dev/null", "size": json.Number("21")},
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), buf.Bytes())
	}
	for i := range want {
		if got, w := fmt.Sprint(lines[i]), fmt.Sprint(want[i]); got != w {
			t.Errorf("line %d:\n got %s\nwant %s", i+1, got, w)
		}
	}
	// Log readers grep for message ids: no \u003c escapes.
	if !bytes.Contains(buf.Bytes(), []byte(`"<m1&2@example.fr>"`)) || !bytes.Contains(buf.Bytes(), []byte(`<tag>`)) {
		t.Errorf("HTML-escaped JSON:\n%s", buf.Bytes())
	}
}

// TestLogEntriesAreSingleWrites: each entry is one write of whole lines,
// so that processes appending to the same log do not interleave.
func TestLogEntriesAreSingleWrites(t *testing.T) {
	for _, format := range []Format{Procmail, JSON} {
		w := &writeRecorder{}
		l := NewFormat(w, format)
		var wg sync.WaitGroup
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				msg := []byte(fmt.Sprintf("From a@b  Mon Jan  1 00:00:00 2024\nSubject: message %d\n\nbody\n", i))
				l.Log(msg, "inbox", len(msg))
				l.Note(fmt.Sprintf("note %d", i))
			}(i)
		}
		wg.Wait()
		if len(w.writes) != 40 {
			t.Fatalf("format %d: %d writes, want 40", format, len(w.writes))
		}
		for _, b := range w.writes {
			if len(b) == 0 || b[len(b)-1] != '\n' {
				t.Errorf("format %d: a write that is not whole lines: %q", format, b)
			}
			if format == JSON {
				jsonLines(t, b)
				if bytes.Count(b, []byte("\n")) != 1 {
					t.Errorf("a JSON entry of more than one line: %q", b)
				}
			}
		}
	}
}

type writeRecorder struct {
	mu     sync.Mutex
	writes [][]byte
}

func (w *writeRecorder) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, append([]byte(nil), p...))
	return len(p), nil
}

func TestProcmailNote(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf)
	l.Note("one")
	l.Note("two\n")
	if got := buf.String(); got != "one\ntwo\n" {
		t.Errorf("got %q", got)
	}
}

func TestNilLogger(t *testing.T) {
	var l *Logger
	if err := l.Log([]byte("x"), "f", 1); err != nil {
		t.Error(err)
	}
	if err := New(nil).Note("x"); err != nil {
		t.Error(err)
	}
}
