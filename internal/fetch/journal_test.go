package fetch

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/filer"
)

// A journal whose last record is torn (a crash or a full disk while
// writing it) is cut back to its last whole record before anything is
// appended: glued to the torn bytes, the next record would be unreadable
// at the next recovery.
func TestJournalTornRecordCut(t *testing.T) {
	wr := deliver.NewWriter(deliver.Options{Hostname: "test"})
	path := filepath.Join(t.TempDir(), "x.journal")
	j, err := OpenJournal(path, wr, "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Claiming("claim", "1R00"); err != nil {
		t.Fatal(err)
	}
	if err := j.Committed(100); err != nil {
		t.Fatal(err)
	}
	j.Close()
	whole, _ := os.ReadFile(path)
	for cut := len(whole) - 1; cut > len(whole)-len(`{"op":"committed","end":100}`)-1; cut-- {
		if err := os.WriteFile(path, whole[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		j, err := OpenJournal(path, wr, "test")
		if err != nil {
			t.Fatal(err)
		}
		if j.Filed != 0 || j.Claim != "claim" {
			t.Fatalf("cut at %d: Filed %d, Claim %q", cut, j.Filed, j.Claim)
		}
		if err := j.Committed(200); err != nil {
			t.Fatal(err)
		}
		j.Close()
		j, err = OpenJournal(path, wr, "test")
		if err != nil {
			t.Fatal(err)
		}
		if j.Filed != 200 {
			t.Fatalf("cut at %d: the record after the torn one was lost (Filed %d)", cut, j.Filed)
		}
		j.Close()
	}
}

// After a crash whose journal lost the write record of an mbox append,
// Done finds a whole append by its bytes, and truncates away an append
// that the crash cut short, but never bytes that are not a piece of the
// message (another program's mail appended since).
func TestJournalMboxWithoutRecord(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	wr := deliver.NewWriter(deliver.Options{Hostname: "test"})
	box, err := deliver.ParseFolder(dir, "box")
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("From a@b  Mon Jan  1 00:00:00 2024\nSubject: x\n\nbody\n")
	data := wr.DeliveryBytes(box, msg, deliver.Flags{})
	prior := []byte("From c@d  Mon Jan  1 00:00:00 2024\nSubject: before\n\nold\n\n")
	other := []byte("From e@f  Mon Jan  1 00:00:00 2024\n\nx\n\n")
	for _, tc := range []struct {
		name  string
		mbox  []byte
		found bool
		after []byte
	}{
		{"whole", append(append([]byte{}, prior...), data...), true, nil},
		{"cut-short", append(append([]byte{}, prior...), data[:len(data)/2]...), false, prior},
		{"not-there", prior, false, prior},
		{"someone-else", append(append([]byte{}, prior...), other...), false, append(append([]byte{}, prior...), other...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(box.Path, tc.mbox, 0o600); err != nil {
				t.Fatal(err)
			}
			j := resumedJournal(t, wr)
			defer j.Close()
			found, err := j.Done(ctx, 500, 0, filer.Step{Kind: filer.StepFolder, Folder: box, Msg: msg})
			if err != nil || found != tc.found {
				t.Fatalf("Done = %v, %v; want %v", found, err, tc.found)
			}
			got, _ := os.ReadFile(box.Path)
			if tc.after != nil && string(got) != string(tc.after) {
				t.Errorf("mbox is %q, want %q", got, tc.after)
			}
		})
	}
}

// TestJournalFindsFlaggedMboxAppend: an mbox append made with flags (a
// flags: rule) holds Status and X-Status fields; after a crash that lost
// its record, Done looks for those bytes, not the message without them,
// and so does not append it a second time.
func TestJournalFindsFlaggedMboxAppend(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	wr := deliver.NewWriter(deliver.Options{Hostname: "test"})
	box, err := deliver.ParseFolder(dir, "box")
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("From a@b  Mon Jan  1 00:00:00 2024\nSubject: x\n\nbody\n")
	flags := deliver.Flags{Seen: true, Flagged: true}
	txn := wr.Begin(ctx)
	if _, err := txn.DeliverWith(box, msg, deliver.DeliverOptions{Flags: flags}); err != nil {
		t.Fatal(err)
	}
	if err := txn.Commit(); err != nil {
		t.Fatal(err)
	}
	j := resumedJournal(t, wr)
	defer j.Close()
	found, err := j.Done(ctx, 500, 0, filer.Step{Kind: filer.StepFolder, Folder: box, Msg: msg, Flags: flags})
	if err != nil || !found {
		t.Fatalf("Done = %v, %v: the flagged append was not found", found, err)
	}
}

// resumedJournal is the journal of a claim as a run that resumes it
// opens it: no record of any write.
func resumedJournal(t *testing.T, wr *deliver.Writer) *Journal {
	t.Helper()
	path := filepath.Join(t.TempDir(), "j.journal")
	j, err := OpenJournal(path, wr, "test")
	if err != nil {
		t.Fatal(err)
	}
	j.Claiming("x", "1R00")
	j.Close()
	if j, err = OpenJournal(path, wr, "test"); err != nil {
		t.Fatal(err)
	}
	return j
}
