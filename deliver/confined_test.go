package deliver

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mfilter/mfilter/internal/mailtest"
)

// TestConfinedFolders: folders built from message data are written
// through an os.Root, unnamed temporary files and their links included,
// and a symbolic link out of the mail root is not followed.
func TestConfinedFolders(t *testing.T) {
	base := t.TempDir()
	outside := t.TempDir()
	root, err := os.OpenRoot(base)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	os.Mkdir(filepath.Join(base, "plain"), 0o700)
	w := NewWriter(testOptions())
	msg := []byte("From a@b  Tue Jan  2 03:04:05 2024\nSubject: confined\n\nbody\n")
	for _, spec := range []string{"lists/a/", "mh/.", "plain", "box"} {
		f, err := ParseConfinedFolder(root, base, spec)
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		ds := deliverCommit(t, w, msg, f)
		p := ds[0].Path
		if !filepath.IsAbs(p) {
			p = filepath.Join(base, p)
		}
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), "Subject: confined") {
			t.Errorf("%s: %s holds %q (%v)", spec, p, b, err)
		}
	}
	if names := mailtest.ListDir(t, filepath.Join(base, "lists/a/tmp")); len(names) != 0 {
		t.Errorf("tmp/ holds %v", names)
	}

	// A maildir whose new/ is a link out of the root.
	for _, sub := range []string{"tmp", "cur"} {
		os.MkdirAll(filepath.Join(base, "evil", sub), 0o700)
	}
	if err := os.Symlink(outside, filepath.Join(base, "evil", "new")); err != nil {
		t.Fatal(err)
	}
	f, err := ParseConfinedFolder(root, base, "evil/")
	if err != nil {
		t.Fatal(err)
	}
	txn := w.Begin(context.Background())
	_, derr := txn.Deliver(f, msg)
	cerr := txn.Commit()
	if derr == nil && cerr == nil {
		t.Error("delivered through a symbolic link out of the mail root")
	}
	if names := mailtest.ListDir(t, outside); len(names) != 0 {
		t.Errorf("the folder outside the root got %v", names)
	}
}
