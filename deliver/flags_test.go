package deliver

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/mfilter/mfilter/internal/mailtest"
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
	cur := mailtest.ListDir(t, filepath.Join(dir, "md", "cur"))
	if len(cur) != 1 || !strings.HasSuffix(cur[0], ":2,FRSab") {
		t.Errorf("cur/ holds %v, want one message with info :2,FRSab", cur)
	}
	if n := mailtest.ListDir(t, filepath.Join(dir, "md", "new")); len(n) != 1 {
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
	for _, n := range mailtest.ListDir(t, filepath.Join(dir, "md", "cur")) {
		found = found || strings.HasSuffix(n, ":2,DTbc")
	}
	if !found {
		t.Errorf("no message with :2,DTbc in cur/: %v", mailtest.ListDir(t, filepath.Join(dir, "md", "cur")))
	}
}

// TestMboxFlagsRoundTrip: the flags of an mbox message's fields, as mutt
// and Dovecot write them, and the fields written for flags, read back
// the same.
func TestMboxFlagsRoundTrip(t *testing.T) {
	for _, c := range []struct {
		name, fields string
		want         Flags
		written      string // the fields WithMboxFlags writes for want
	}{
		{"new", "", Flags{}, ""},
		{"old", "Status: O\n", Flags{Old: true}, "Status: O\n"},
		{"seen", "Status: RO\n", Flags{Old: true, Seen: true}, "Status: RO\n"},
		{"seen without O", "Status: R\n", Flags{Old: true, Seen: true}, "Status: RO\n"},
		{"all", "Status: RO\nX-Status: AFTD\n", Flags{Old: true, Seen: true, Answered: true, Flagged: true, Draft: true, Deleted: true}, "Status: RO\nX-Status: AFTD\n"},
		{"flagged, unread", "X-Status: F\n", Flags{Old: true, Flagged: true}, "Status: O\nX-Status: F\n"},
		{"keywords", "Status: O\nX-Keywords: $Label1, work  work\n", Flags{Old: true, Keywords: []string{"$Label1", "work"}}, "Status: O\nX-Keywords: $Label1 work\n"},
		{"lower case names", "status: RO\nx-status: A\n", Flags{Old: true, Seen: true, Answered: true}, "Status: RO\nX-Status: A\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			msg := "From a@b  Mon Jan  1 00:00:00 2024\nSubject: s\n" + c.fields + "\nbody\n"
			got := ParseMboxFlags([]byte(msg))
			c.want.Exact = true
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("ParseMboxFlags = %+v, want %+v", got, c.want)
			}
			out := string(WithMboxFlags([]byte(msg), got))
			if want := "From a@b  Mon Jan  1 00:00:00 2024\nSubject: s\n" + c.written + "\nbody\n"; out != want {
				t.Errorf("WithMboxFlags wrote\n%q\nwant\n%q", out, want)
			}
			if back := ParseMboxFlags([]byte(out)); !reflect.DeepEqual(back, got) {
				t.Errorf("read back %+v, want %+v", back, got)
			}
		})
	}
}

// TestFlagsJoin: a message's own flags joined with a rule's.
func TestFlagsJoin(t *testing.T) {
	a := Flags{Seen: true, Exact: true, Keywords: []string{"a", "b"}}
	b := Flags{Flagged: true, Keywords: []string{"b", "c"}}
	want := Flags{Seen: true, Flagged: true, Exact: true, Keywords: []string{"a", "b", "c"}}
	if got := a.Join(b); !reflect.DeepEqual(got, want) {
		t.Errorf("Join = %+v, want %+v", got, want)
	}
	if len(a.Keywords) != 2 {
		t.Errorf("Join changed its receiver's keywords: %v", a.Keywords)
	}
	if !(Flags{Exact: true}).IsZero() || (Flags{Old: true}).IsZero() {
		t.Error("IsZero: Exact alone sets nothing, Old does")
	}
}

// TestMHSequences: .mh_sequences as nmh writes it (continuation lines,
// ranges) read into flags, and numbers added: ranges merged, other
// sequences and lines kept.
func TestMHSequences(t *testing.T) {
	old := "cur: 4\nunseen: 2-4 9\n 11\nflagged: 3\nreplied: 1-2\nmine: 1 5\n"
	seqs := parseMHSequences([]byte(old))
	for _, c := range []struct {
		num  string
		want Flags
	}{
		{"1", Flags{Seen: true, Old: true, Answered: true, Exact: true}},
		{"2", Flags{Answered: true, Exact: true}},
		{"3", Flags{Flagged: true, Exact: true}},
		{"5", Flags{Seen: true, Old: true, Exact: true}},
		{"11", Flags{Exact: true}},
		{"x", Flags{Exact: true}},
	} {
		if got := seqs.Flags(c.num); !reflect.DeepEqual(got, c.want) {
			t.Errorf("Flags(%s) = %+v, want %+v", c.num, got, c.want)
		}
	}
	got := string(mhSeqAdd([]byte(old), map[string][]uint64{"unseen": {5, 10, 12}, "flagged": {4}, "new": {7}}))
	want := "cur: 4\nunseen: 2-5 9-12\nflagged: 3-4\nreplied: 1-2\nmine: 1 5\nnew: 7\n"
	if got != want {
		t.Errorf("mhSeqAdd wrote\n%s\nwant\n%s", got, want)
	}
	got = string(mhSeqRemove([]byte(want), []uint64{10, 3, 4, 7}))
	want = "unseen: 2 5 9 11-12\nreplied: 1-2\nmine: 1 5\n" // cur was 4
	if got != want {
		t.Errorf("mhSeqRemove wrote\n%s\nwant\n%s", got, want)
	}
}

// TestDeliverMHWithFlags: MH messages with flags join the folder's
// sequences at commit: unseen only for Exact flags (a refile), never for
// a plain delivery (procmail's bytes, no .mh_sequences).
func TestDeliverMHWithFlags(t *testing.T) {
	dir := t.TempDir()
	w := NewWriter(testOptions())
	mh := mustFolder(t, dir, "mh/.")
	msg := []byte("From a@b  Mon Jan  1 00:00:00 2024\nSubject: s\n\nbody\n")
	txn := w.Begin(context.Background())
	for _, f := range []Flags{{}, {Exact: true}, {Seen: true, Flagged: true, Exact: true}, {Answered: true}, {Flagged: true, Exact: true}} {
		txn.BeginMessage()
		if _, err := txn.DeliverWith(mh, msg, DeliverOptions{Flags: f}); err != nil {
			t.Fatal(err)
		}
		if f.IsZero() && !f.Exact {
			if err := txn.Commit(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(dir, "mh", ".mh_sequences")); err == nil {
				t.Fatal("a delivery without flags made .mh_sequences")
			}
		}
	}
	if err := txn.Commit(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "mh", ".mh_sequences"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "flagged: 3 5\nreplied: 4\nunseen: 2 5\n"; string(b) != want {
		t.Errorf(".mh_sequences holds\n%s\nwant\n%s", b, want)
	}
}

// TestMHSeqAfter: a message that got another number than the one its
// flags were announced under (another process took it) has them moved
// to its number; one that was not linked loses them.
func TestMHSeqAfter(t *testing.T) {
	dir := t.TempDir()
	mh := mustFolder(t, dir, "mh/.")
	if err := os.MkdirAll(mh.Path, 0o700); err != nil {
		t.Fatal(err)
	}
	seq := filepath.Join(mh.Path, ".mh_sequences")
	if err := os.WriteFile(seq, []byte("unseen: 1 7-8\nflagged: 7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w := NewWriter(testOptions())
	txn := w.Begin(context.Background())
	moved := &Delivery{Folder: mh, fsys: osFS{}, Path: filepath.Join(mh.Path, "9"), linked: true, opts: DeliverOptions{Flags: Flags{Flagged: true, Exact: true}}}
	failed := &Delivery{Folder: mh, fsys: osFS{}, opts: DeliverOptions{Flags: Flags{Exact: true}}}
	txn.mhSeqAfter(map[*Delivery]uint64{moved: 7, failed: 8})
	b, _ := os.ReadFile(seq)
	if want := "unseen: 1 9\nflagged: 9\n"; string(b) != want {
		t.Errorf(".mh_sequences holds\n%s\nwant\n%s", b, want)
	}
}
