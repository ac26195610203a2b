package imapfetch

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/filer"
	"github.com/mfilter/mfilter/internal/maillog"
	"github.com/mfilter/mfilter/internal/mtatest"
	"github.com/mfilter/mfilter/internal/runprog"
)

// world is a private Dovecot with user alice and a mail directory here.
type world struct {
	d        *mtatest.Dovecot
	mail     string
	state    string
	set      Settings
	warnings []string
	seq      int
}

func newWorld(t *testing.T, d *mtatest.Dovecot) *world {
	dir := t.TempDir()
	w := &world{d: d, mail: filepath.Join(dir, "Mail"), state: filepath.Join(dir, "state")}
	w.set = Settings{Host: d.IMAPAddr, Plain: true, ServerName: "127.0.0.3", Folder: "INBOX", User: "alice",
		PasswordCommand: []string{"echo", mtatest.Password("alice")}, Timeout: 10 * time.Second}
	return w
}

func (w *world) fetcher(t *testing.T) *Fetcher {
	wr := deliver.NewWriter(deliver.Options{Hostname: "test"})
	inbox, err := deliver.ParseFolder(w.mail, "inbox/")
	if err != nil {
		t.Fatal(err)
	}
	s := w.set
	return &Fetcher{
		Settings: &s,
		Filer:    &filer.Filer{Writer: wr, Router: filer.DefaultRouter{Folder: inbox}, Log: maillog.New(nil)},
		Writer:   wr,
		StateDir: w.state,
		Host:     "test",
		Runner:   runprog.Exec{},
		Warn:     func(s string) { w.warnings = append(w.warnings, s) },
	}
}

func (w *world) run(t *testing.T) Report {
	t.Helper()
	rep, err := w.fetcher(t).Run(context.Background())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return rep
}

// deliverN puts n new messages into alice's INBOX as maildir files,
// which Dovecot numbers at its next look; it returns their test ids.
func (w *world) deliverN(t *testing.T, n int) []string {
	t.Helper()
	md := w.d.Maildir("alice")
	for _, sub := range []string{"", "cur", "new", "tmp"} {
		os.MkdirAll(filepath.Join(md, sub), 0o700)
		os.Chown(filepath.Join(md, sub), w.d.UID, w.d.GID)
	}
	var ids []string
	for i := 0; i < n; i++ {
		w.seq++
		id := fmt.Sprintf("t%05d", w.seq)
		ids = append(ids, id)
		p := filepath.Join(md, "new", msgFile(w.seq))
		// Owned by the mail user before it appears in new/.
		tmp := filepath.Join(md, "tmp", filepath.Base(p))
		if err := os.WriteFile(tmp, testMessage(id), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chown(tmp, w.d.UID, w.d.GID)
		if err := os.Rename(tmp, p); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// msgFile is the maildir file name of the nth message delivered.
func msgFile(n int) string { return fmt.Sprintf("1%09d.M%dP1.test", n, n) }

func testMessage(id string) []byte {
	body := strings.Repeat("a line of the body of message "+id+"\n", 1+len(id)%7)
	return []byte("Return-Path: <sender@example.org>\nFrom: Sender <sender@example.org>\nTo: alice@example.org\n" +
		"Subject: test " + id + "\nMessage-ID: <" + id + "@example.org>\nX-Test-ID: " + id + "\n\n" + body)
}

// filed counts the test ids in the inbox maildir's files, and checks
// that each file is the message as delivered.
func (w *world) filed(t *testing.T) map[string]int {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(w.mail, "inbox", "new", "*"))
	got := make(map[string]int)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(data, []byte("X-Test-ID: "))
		if i < 0 {
			t.Fatalf("%s has no X-Test-ID: %q", f, data)
		}
		id := string(data[i+11 : i+17])
		if want := testMessage(id); !bytes.Equal(data, want) {
			t.Fatalf("%s:\n%q\nwant\n%q", f, data, want)
		}
		got[id]++
	}
	return got
}

func checkOnce(t *testing.T, got map[string]int, ids []string) {
	t.Helper()
	for _, id := range ids {
		if got[id] != 1 {
			t.Errorf("message %s filed %d times", id, got[id])
		}
	}
	if len(got) != len(ids) {
		t.Errorf("%d distinct messages filed, want %d", len(got), len(ids))
	}
}

func TestFetch300(t *testing.T) {
	d := mtatest.StartDovecot(t, mtatest.DovecotOptions{Users: []string{"alice"}})
	w := newWorld(t, d)
	ids := w.deliverN(t, 300)
	rep := w.run(t)
	if rep.Messages != 300 {
		t.Errorf("filed %d, want 300", rep.Messages)
	}
	checkOnce(t, w.filed(t), ids)
	if n := d.Count(t, "alice", "INBOX"); n != 0 {
		t.Errorf("INBOX holds %d messages after the run, want 0", n)
	}
	if rep := w.run(t); rep.Messages != 0 {
		t.Errorf("a second run filed %d", rep.Messages)
	}
	more := w.deliverN(t, 7)
	if rep := w.run(t); rep.Messages != 7 {
		t.Errorf("a third run filed %d, want 7", rep.Messages)
	}
	checkOnce(t, w.filed(t), append(ids, more...))
	t.Logf("300 messages: %d bytes over the link", rep.Wire)
}

// seenFlags returns the flags of every message in alice's mailbox.
func seenCount(t *testing.T, d *mtatest.Dovecot, mailbox string) int {
	t.Helper()
	out, err := d.Doveadm("search", "-u", "alice", "mailbox", mailbox, "SEEN")
	if err != nil {
		t.Fatal(err)
	}
	return len(strings.Fields(string(out))) / 2
}

// TestKeepAndUIDValidityReset keeps the mail on the server, unread;
// after the server renumbers the folder (a new UIDVALIDITY), only the
// messages that arrived since are filed.
func TestKeepAndUIDValidityReset(t *testing.T) {
	d := mtatest.StartDovecot(t, mtatest.DovecotOptions{Users: []string{"alice"}})
	w := newWorld(t, d)
	w.set.After = AfterKeep
	ids := w.deliverN(t, 20)
	if rep := w.run(t); rep.Messages != 20 {
		t.Fatalf("filed %d, want 20", rep.Messages)
	}
	if n, seen := d.Count(t, "alice", "INBOX"), seenCount(t, d, "INBOX"); n != 20 || seen != 0 {
		t.Fatalf("keep: INBOX holds %d messages, %d of them seen; want 20, 0", n, seen)
	}
	ids = append(ids, w.deliverN(t, 3)...)
	if rep := w.run(t); rep.Messages != 3 {
		t.Fatalf("second run filed %d, want 3", rep.Messages)
	}
	// Renumber: Dovecot makes a new UIDVALIDITY when its uidlist and
	// indexes are gone.
	md := d.Maildir("alice")
	old, _ := filepath.Glob(filepath.Join(md, "dovecot*"))
	for _, p := range old {
		os.Remove(p)
	}
	// New mail first in the maildir's order: the new numbering mixes
	// old and new messages.
	fresh := w.deliverN(t, 4)
	for i, id := range fresh {
		os.Rename(filepath.Join(md, "new", msgFile(w.seq-3+i)), filepath.Join(md, "new", "0000"+id))
	}
	ids = append(ids, fresh...)
	if _, err := d.Doveadm("mailbox", "update", "-u", "alice", "--uid-validity", "7", "INBOX"); err != nil {
		t.Fatal(err)
	}
	if rep := w.run(t); rep.Messages != 4 {
		t.Fatalf("after the renumbering: filed %d, want 4 (warnings %q)", rep.Messages, w.warnings)
	}
	if len(w.warnings) == 0 || !strings.Contains(w.warnings[len(w.warnings)-1], "23 of its 27 messages were filed before") {
		t.Errorf("no warning of the UIDVALIDITY change: %q", w.warnings)
	}
	if rep := w.run(t); rep.Messages != 0 {
		t.Fatalf("a run after that filed %d", rep.Messages)
	}
	checkOnce(t, w.filed(t), ids)
	if seen := seenCount(t, d, "INBOX"); seen != 0 {
		t.Errorf("%d messages marked seen", seen)
	}
}

// TestMove moves what it filed to another folder.
func TestMove(t *testing.T) {
	d := mtatest.StartDovecot(t, mtatest.DovecotOptions{Users: []string{"alice"}})
	w := newWorld(t, d)
	w.set.After, w.set.MoveTo = AfterMove, "Archive"
	ids := w.deliverN(t, 15)
	if _, err := d.Doveadm("mailbox", "create", "-u", "alice", "Archive"); err != nil {
		t.Fatal(err)
	}
	w.run(t)
	checkOnce(t, w.filed(t), ids)
	if in, arch := d.Count(t, "alice", "INBOX"), d.Count(t, "alice", "Archive"); in != 0 || arch != 15 {
		t.Errorf("INBOX %d, Archive %d; want 0, 15", in, arch)
	}
}

// killedRun leaves what a run killed while its batch was becoming
// visible leaves: the batch's maildir files linked (all but the first
// unlinked of them), its keys and committing record durable, its
// committed record never written, nothing expunged.
func (w *world) killedRun(t *testing.T, unlinked int) {
	t.Helper()
	ctx := context.Background()
	f := w.fetcher(t)
	if err := os.MkdirAll(w.state, 0o700); err != nil {
		t.Fatal(err)
	}
	conn, err := f.dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sel, err := conn.C.Select(w.set.Folder, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	g, err := f.openGeneration(sel.UIDValidity)
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := f.fileNew(ctx, conn, g, sel, &rep); err != nil {
		t.Fatal(err)
	}
	g.close()
	conn.Close()
	data, err := os.ReadFile(f.path(".journal"))
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	committing := 0
	for _, line := range strings.SplitAfter(string(data), "\n") {
		if strings.Contains(line, `"op":"committing"`) {
			committing++
		}
		if !strings.Contains(line, `"op":"committed"`) {
			kept = append(kept, line)
		}
	}
	if committing == 0 || len(kept) == len(strings.SplitAfter(string(data), "\n")) {
		t.Fatalf("the journal has no committing or committed record: %q", data)
	}
	if err := os.WriteFile(f.path(".journal"), []byte(strings.Join(kept, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(w.mail, "inbox", "new", "*"))
	for _, p := range files[:unlinked] {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
}

// renumber makes Dovecot renumber alice's INBOX under UIDVALIDITY v.
func renumber(t *testing.T, d *mtatest.Dovecot, v int) {
	t.Helper()
	old, _ := filepath.Glob(filepath.Join(d.Maildir("alice"), "dovecot*"))
	for _, p := range old {
		os.Remove(p)
	}
	if _, err := d.Doveadm("mailbox", "update", "-u", "alice", "--uid-validity", fmt.Sprint(v), "INBOX"); err != nil {
		t.Fatal(err)
	}
}

// TestKillThenRenumber is the double fault: a run is killed between its
// batch's files appearing and its commit record, and the server
// renumbers the folder before the next run. The next run files each
// message exactly once: those whose files appeared are not filed again,
// the others are filed, and the INBOX is emptied.
func TestKillThenRenumber(t *testing.T) {
	d := mtatest.StartDovecot(t, mtatest.DovecotOptions{Users: []string{"alice"}})
	for _, tc := range []struct {
		name     string
		after    After
		unlinked int
	}{
		{"all visible", AfterDelete, 0},
		{"some visible", AfterDelete, 5},
		{"keep, some visible", AfterKeep, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d.Doveadm("expunge", "-u", "alice", "mailbox", "INBOX", "all")
			w := newWorld(t, d)
			w.seq = 1000 * (1 + int(tc.after)*10 + tc.unlinked)
			w.set.After = tc.after
			ids := w.deliverN(t, 12)
			w.killedRun(t, tc.unlinked)
			if got := w.filed(t); len(got) != 12-tc.unlinked {
				t.Fatalf("the killed run left %d files, want %d", len(got), 12-tc.unlinked)
			}
			fresh := w.deliverN(t, 2)
			renumber(t, d, 100+w.seq)
			rep := w.run(t)
			if rep.Messages != 2 {
				t.Errorf("filed %d new messages after the renumbering, want 2 (warnings %q)", rep.Messages, w.warnings)
			}
			if !strings.Contains(strings.Join(w.warnings, "\n"), "12 messages of the old UIDVALIDITY") {
				t.Errorf("warnings %q do not name the 12 messages of the killed batch", w.warnings)
			}
			if rep := w.run(t); rep.Messages != 0 {
				t.Errorf("a run after that filed %d", rep.Messages)
			}
			checkOnce(t, w.filed(t), append(ids, fresh...))
			wantLeft := 0
			if tc.after == AfterKeep {
				wantLeft = 14
			}
			if n := d.Count(t, "alice", "INBOX"); n != wantLeft {
				t.Errorf("INBOX holds %d messages, want %d", n, wantLeft)
			}
		})
	}
}

// TestWithoutUIDPlus: a server that offers neither UIDPLUS nor MOVE
// (Dovecot's imap_capability) gets STORE \Deleted and EXPUNGE, or COPY
// then those; every message is filed once and leaves the INBOX.
func TestWithoutUIDPlus(t *testing.T) {
	d := mtatest.StartDovecot(t, mtatest.DovecotOptions{Users: []string{"alice"},
		Extra: "imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ NAMESPACE UNSELECT CHILDREN\n"})
	for _, tc := range []struct {
		name   string
		after  After
		moveTo string
	}{
		{"delete", AfterDelete, ""},
		{"move", AfterMove, "Archive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, d)
			w.seq = 1000 * (1 + int(tc.after))
			w.set.After, w.set.MoveTo = tc.after, tc.moveTo
			conn, err := Dial(context.Background(), &w.set, runprog.Exec{}, imapclient.Options{})
			if err != nil {
				t.Fatal(err)
			}
			caps := conn.Caps
			conn.Close()
			if caps.Has(imap.CapUIDPlus) || caps.Has(imap.CapMove) || !caps.Has(imap.CapIdle) {
				t.Fatalf("the server's capabilities %v: want IDLE without UIDPLUS and MOVE", caps)
			}
			if tc.moveTo != "" {
				d.Doveadm("mailbox", "create", "-u", "alice", tc.moveTo)
			}
			ids := w.deliverN(t, 25)
			if rep := w.run(t); rep.Messages != 25 {
				t.Errorf("filed %d, want 25", rep.Messages)
			}
			more := w.deliverN(t, 4)
			if rep := w.run(t); rep.Messages != 4 {
				t.Errorf("second run filed %d, want 4", rep.Messages)
			}
			checkOnce(t, w.filed(t), append(ids, more...))
			if n := d.Count(t, "alice", "INBOX"); n != 0 {
				t.Errorf("INBOX holds %d messages, want 0", n)
			}
			if tc.moveTo != "" {
				if n := d.Count(t, "alice", tc.moveTo); n != 29 {
					t.Errorf("%s holds %d messages, want 29", tc.moveTo, n)
				}
			}
			if !strings.Contains(strings.Join(w.warnings, "\n"), "lacks UIDPLUS") {
				t.Errorf("no warning that the server lacks UIDPLUS: %q", w.warnings)
			}
		})
	}
}
