package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mfilter/mfilter/internal/sysexits"
)

// lockFilesUnder lists the dotlock files (NAME.lock) left under dir.
func lockFilesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() && strings.HasSuffix(p, ".lock") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// TestRescueFullLeavesNoLock files mboxes under RLIMIT_FSIZE (a full
// disk) where the folder and the rescue mbox both fail to grow: every
// run must end with 75 and leave no NAME.lock behind, whichever of them
// fails first and whether some rescues fit before the limit.
func TestRescueFullLeavesNoLock(t *testing.T) {
	for _, tc := range []struct {
		name       string
		rescueSize int // bytes already in the rescue mbox
		limit      int // RLIMIT_FSIZE
		folder     string
	}{
		{"all-fail-mbox", 5000, 4096, "box"},
		{"all-fail-maildir", 5000, 20, "md/"},
		{"some-rescued", 0, 600, "box"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			box := filepath.Join(base, "box")
			if err := os.WriteFile(box, e2eMbox(100), 0o600); err != nil {
				t.Fatal(err)
			}
			rescue := filepath.Join(base, "rescue.mbox")
			if err := os.WriteFile(rescue, []byte(strings.Repeat("x", tc.rescueSize)), 0o600); err != nil {
				t.Fatal(err)
			}
			input := filepath.Join(base, "in.mbox")
			if err := os.WriteFile(input, e2eMbox(20), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{
				{"file", "--maildir", base, "--default", tc.folder, "--rescue", rescue, input},
				{"--maildir", base, "--default", tc.folder, "--rescue", rescue},
			} {
				in, _ := os.ReadFile(input)
				code, stderr := e2eRun{args: args, stdin: in, home: base, fsize: uint64(tc.limit)}.run(t)
				if code != sysexits.TempFail {
					t.Errorf("%v: exit %d, want 75; stderr:\n%s", args[0], code, stderr)
				}
				if locks := lockFilesUnder(t, base); len(locks) > 0 {
					t.Errorf("%v: lock files left behind: %v\nstderr:\n%s", args[0], locks, stderr)
				}
			}
		})
	}
}
