package confine

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestRel(t *testing.T) {
	g := New("/home/u/Mail", "mail.log", "/home/u/Mail/.state", "/home/u/.config/mfilter/rules.yaml", "", "dups/lists.cache")
	ok := map[string]string{
		"lists/golang/":           "lists/golang",
		"/home/u/Mail/a/b":        "a/b",
		".lists.golang/":          ".lists.golang",
		"mail.log.d/x":            "mail.log.d/x",
		"a/../b":                  "b",
		"dups/lists.cache2":       "dups/lists.cache2",
		"lockbox":                 "lockbox",
		"x.locked":                "x.locked",
		"inbox/mfilter-rescue":    "inbox/mfilter-rescue",
		".msgid.cache.d/fine/box": ".msgid.cache.d/fine/box",
	}
	for in, want := range ok {
		if got, err := g.Rel(in); err != nil || got != want {
			t.Errorf("Rel(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{
		"", ".", "/home/u/Mail", "..", "../x", "a/../../x", "/home/u/.bashrc", "/etc/passwd",
		"mail.log", "./mail.log", "a/../mail.log", ".state", ".state/journal", "/home/u/Mail/.state/x/y",
		"a.mbox.lock", "lists/x.lock", ".msgid.cache", "sub/.msgid.cache", "mfilter-rescue.mbox",
		"mfilter-rescue.mbox.1", "mh/.mfilter-tmp.123", "dups/lists.cache",
	} {
		if got, err := g.Rel(in); err == nil {
			t.Errorf("Rel(%q) = %q, want it refused", in, got)
		}
	}
	if _, err := (*Guard)(nil).Rel("a"); err == nil {
		t.Error("a nil Guard must refuse")
	}
}

// FuzzRel: whatever p, an accepted path is clean, relative, inside the
// mail directory, and names none of the reserved files.
func FuzzRel(f *testing.F) {
	for _, s := range []string{"lists/a/", "../x", "a/./b/../../..", "x.lock", "/home/u/Mail/mail.log", ".state/j"} {
		f.Add(s)
	}
	g := New("/home/u/Mail", "mail.log", ".state")
	f.Fuzz(func(t *testing.T, p string) {
		rel, err := g.Rel(p)
		if err != nil {
			return
		}
		if rel != filepath.Clean(rel) || filepath.IsAbs(rel) || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
			t.Fatalf("Rel(%q) = %q: not clean and inside", p, rel)
		}
		abs := filepath.Join("/home/u/Mail", rel)
		for _, r := range []string{"/home/u/Mail/mail.log", "/home/u/Mail/.state"} {
			if abs == r || strings.HasPrefix(abs, r+"/") {
				t.Fatalf("Rel(%q) = %q names reserved %s", p, rel, r)
			}
		}
		for _, part := range strings.Split(rel, "/") {
			if strings.HasSuffix(part, ".lock") || part == ".msgid.cache" {
				t.Fatalf("Rel(%q) = %q has reserved name %q", p, rel, part)
			}
		}
	})
}
