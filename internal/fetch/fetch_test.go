package fetch

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/filer"
	"github.com/mfilter/mfilter/internal/maillog"
	"github.com/mfilter/mfilter/remote"
)

type world struct {
	dir, spool, mail, state string
	f                       *Fetcher
	warnings                []string
}

func newWorld(t *testing.T) *world {
	dir := t.TempDir()
	w := &world{dir: dir, spool: filepath.Join(dir, "spool"), mail: filepath.Join(dir, "Mail"), state: filepath.Join(dir, "state")}
	wr := deliver.NewWriter(deliver.Options{Hostname: "test"})
	inbox, err := deliver.ParseFolder(w.mail, "inbox/")
	if err != nil {
		t.Fatal(err)
	}
	w.f = &Fetcher{
		Spool:    &remote.LocalSpool{SpoolPath: w.spool},
		Filer:    &filer.Filer{Writer: wr, Router: filer.DefaultRouter{Folder: inbox}, Log: maillog.New(nil)},
		Writer:   wr,
		StateDir: w.state,
		Client:   "client1",
		Host:     "test",
		Warn:     func(s string) { w.warnings = append(w.warnings, s) },
	}
	return w
}

func (w *world) inbox(t *testing.T) int {
	names, _ := filepath.Glob(filepath.Join(w.mail, "inbox", "new", "*"))
	return len(names)
}

func (w *world) clean(t *testing.T) {
	t.Helper()
	if m, _ := filepath.Glob(w.spool + ".mfilter-*"); len(m) > 0 {
		t.Fatalf("claimed files left: %v", m)
	}
	if m, _ := filepath.Glob(filepath.Join(w.state, "*")); len(m) > 0 {
		t.Fatalf("journals left: %v", m)
	}
}

const twoMessages = "From a@b Mon Jan  1 00:00:00 2024\nSubject: 1\n\none\n\nFrom a@b Mon Jan  1 00:00:00 2024\nSubject: 2\n\ntwo\n"

func TestBlankOnlySpool(t *testing.T) {
	w := newWorld(t)
	os.WriteFile(w.spool, []byte("\n\n\n"), 0o600)
	if _, err := w.f.Run(context.Background()); err != nil {
		t.Fatalf("a spool of blank lines must be claimed and removed, got %v", err)
	}
	w.clean(t)
}

func TestLeftoverWithoutJournalIsFiled(t *testing.T) {
	w := newWorld(t)
	// Our claim, but the state directory was lost.
	name := remote.NewClaimName(w.spool, "client1")
	os.WriteFile(name, []byte(twoMessages), 0o600)
	// Another client's claim: not ours to take.
	other := remote.NewClaimName(w.spool, "elsewhere")
	os.WriteFile(other, []byte(twoMessages), 0o600)
	rep, err := w.f.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Messages != 2 || w.inbox(t) != 2 {
		t.Fatalf("filed %d (inbox %d), want 2", rep.Messages, w.inbox(t))
	}
	if _, err := os.Stat(other); err != nil {
		t.Fatal("another client's claimed file must be left alone")
	}
	if !strings.Contains(strings.Join(w.warnings, "\n"), "another client") {
		t.Errorf("warnings %q", w.warnings)
	}
	os.Remove(other)
	w.clean(t)
}

// TestResumeFromJournal: a journal that recorded the first message as
// filed makes the next run start after it.
func TestResumeFromJournal(t *testing.T) {
	w := newWorld(t)
	name := remote.NewClaimName(w.spool, "client1")
	os.WriteFile(name, []byte(twoMessages), 0o600)
	j, err := OpenJournal(w.f.journalPath(name), w.f.Writer, "test")
	if err != nil {
		t.Fatal(err)
	}
	j.Claiming(name, newClaimID())
	j.Claimed(int64(len(twoMessages)))
	first := int64(strings.Index(twoMessages[1:], "From ") + 1)
	j.Committed(first)
	j.Close()
	rep, err := w.f.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Messages != 1 || w.inbox(t) != 1 {
		t.Fatalf("filed %d, want only the second message", rep.Messages)
	}
	w.clean(t)
}

// TestGrownClaimedFile: bytes appended to the claimed file after the
// claim (by a writer that still had the old spool open) are filed before
// the file is removed.
func TestGrownClaimedFile(t *testing.T) {
	w := newWorld(t)
	os.WriteFile(w.spool, []byte(twoMessages), 0o600)
	grown := false
	w.f.afterRead = func(n int64) {
		if grown {
			return
		}
		grown = true
		m, _ := filepath.Glob(w.spool + ".mfilter-*")
		f, _ := os.OpenFile(m[0], os.O_WRONLY|os.O_APPEND, 0)
		f.WriteString("\nFrom late@b Mon Jan  1 00:00:00 2024\nSubject: 3\n\nthree\n")
		f.Close()
	}
	rep, err := w.f.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if w.inbox(t) != 3 {
		t.Fatalf("inbox holds %d messages (report %+v), want 3", w.inbox(t), rep)
	}
	w.clean(t)
}
