package fetch

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/mfilter/mfilter/deliver"
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
