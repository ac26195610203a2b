package deliver

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDeliverWithFlags(t *testing.T) {
	dir := t.TempDir()
	w := NewWriter(testOptions())
	md := mustFolder(t, dir, "md/")
	box := mustFolder(t, dir, "box")
	msg := []byte("From a@b  Mon Jan  1 00:00:00 2024\nSubject: s\nStatus: O\nX-Keywords: old\n\nbody\n")
	flags := Flags{Seen: true, Flagged: true, Answered: true, Keywords: []string{"work", "$Junk", "work"}}
	txn := w.Begin(context.Background())
	if _, err := txn.DeliverWith(md, msg, DeliverOptions{Flags: flags}); err != nil {
		t.Fatal(err)
	}
	if _, err := txn.DeliverWith(box, msg, DeliverOptions{Flags: flags}); err != nil {
		t.Fatal(err)
	}
	if _, err := txn.DeliverWith(md, msg, DeliverOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := txn.Commit(); err != nil {
		t.Fatal(err)
	}
	cur := listDir(t, filepath.Join(dir, "md", "cur"))
	if len(cur) != 1 || !strings.HasSuffix(cur[0], ":2,FRSab") {
		t.Errorf("cur/ holds %v, want one message with info :2,FRSab", cur)
	}
	if n := listDir(t, filepath.Join(dir, "md", "new")); len(n) != 1 {
		t.Errorf("new/ holds %v, want the message without flags", n)
	}
	kw, err := ReadMaildirKeywords(filepath.Join(dir, "md"))
	if err != nil || kw['a'] != "work" || kw['b'] != "$Junk" || len(kw) != 2 {
		t.Errorf("dovecot-keywords: %v %v", kw, err)
	}
	if got := ParseMaildirInfo(cur[0], kw); !got.Seen || !got.Flagged || !got.Answered || got.Deleted || len(got.Keywords) != 2 {
		t.Errorf("ParseMaildirInfo(%q) = %+v", cur[0], got)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "box"))
	want := "From a@b  Mon Jan  1 00:00:00 2024\nSubject: s\nStatus: RO\nX-Status: AF\nX-Keywords: work $Junk\n\nbody\n\n"
	if string(b) != want {
		t.Errorf("mbox holds\n%q\nwant\n%q", b, want)
	}
	// A second keyword set reuses the letters and adds the new one.
	txn = w.Begin(context.Background())
	if _, err := txn.DeliverWith(md, msg, DeliverOptions{Flags: Flags{Deleted: true, Draft: true, Keywords: []string{"$Junk", "later"}}}); err != nil {
		t.Fatal(err)
	}
	if err := txn.Commit(); err != nil {
		t.Fatal(err)
	}
	kw, _ = ReadMaildirKeywords(filepath.Join(dir, "md"))
	if kw['c'] != "later" {
		t.Errorf("dovecot-keywords after a new keyword: %v", kw)
	}
	found := false
	for _, n := range listDir(t, filepath.Join(dir, "md", "cur")) {
		found = found || strings.HasSuffix(n, ":2,DTbc")
	}
	if !found {
		t.Errorf("no message with :2,DTbc in cur/: %v", listDir(t, filepath.Join(dir, "md", "cur")))
	}
}
