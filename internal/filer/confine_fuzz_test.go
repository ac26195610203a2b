package filer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/confine"
	"github.com/mfilter/mfilter/internal/dupcache"
	"github.com/mfilter/mfilter/rules"
)

// FuzzConfinedFolder: whatever a header holds, a folder the rules build
// from it is inside the mail directory and names none of mfilter's own
// files, or the message is refused as a permanent failure; and a
// duplicate cache built from it, the same.
func FuzzConfinedFolder(f *testing.F) {
	for _, s := range []string{"golang", "../../etc/passwd", ".bashrc", "a.mbox.lock", ".msgid.cache", "mail.log",
		"mfilter-rescue.mbox", "..", ".", "", "a/b", "=?utf-8?q?=2E=2E=2Fx?=", "x\x00y", "\u2024\u2024/x", strings.Repeat("a", 300)} {
		f.Add(s)
	}
	base := f.TempDir()
	yaml := `maildir: ` + base + `
log: mail.log
rules:
  - if: {header: {X-Name: '^(?P<n>.*)$'}}
    then: [{copy: 'lists/${n}/'}, {copy: '${n}'}, {copy: '${n}/'}, {copy: 'mh/${n}/.'}, {folder: '.${n}/'}]
  - if: {all: [{header: {X-Dup: '^(?P<d>.*)$'}}, {duplicate: {cache: '${d}'}}]}
    then: discard
`
	cfg, err := rules.Parse(filepath.Join(base, "rules.yaml"), []byte(yaml))
	if err != nil {
		f.Fatal(err)
	}
	root, err := os.OpenRoot(base)
	if err != nil {
		f.Fatal(err)
	}
	guard := confine.New(base, filepath.Join(base, "mail.log"))
	r := &RulesRouter{
		Engine: rules.NewEngine(cfg, rules.Options{Default: "inbox/", Vars: map[string]string{"MAILDIR": base, "HOME": base}, Guard: guard, Dup: &dupcache.Store{ReadOnly: true}}),
		Base:   base,
		Root:   root,
		Guard:  guard,
	}
	f.Fuzz(func(t *testing.T, name string) {
		if strings.ContainsAny(name, "\r\n") {
			return
		}
		for _, field := range []string{"X-Name", "X-Dup"} {
			plan, err := r.Route(context.Background(), []byte(field+": "+name+"\nSubject: s\n\nbody\n"))
			if err != nil {
				if !Permanent(err) && !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("%s %q: %v is neither permanent nor a missing file", field, name, err)
				}
				continue
			}
			for _, st := range plan.Steps {
				if st.Kind != StepFolder || st.Folder.Kind == deliver.Discard {
					continue
				}
				p := st.Folder.Path
				if !filepath.IsAbs(p) {
					p = filepath.Join(base, p)
				}
				rel, err := filepath.Rel(base, p)
				if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
					t.Fatalf("%q: folder %s outside %s", name, p, base)
				}
				if _, err := guard.Rel(rel); err != nil {
					t.Fatalf("%q: folder %s passed, but the guard refuses it: %v", name, rel, err)
				}
				if strings.Contains(rel, "/.") && !strings.HasPrefix(rel, ".") {
					t.Fatalf("%q: folder %s has a hidden part below the one the rules wrote", name, rel)
				}
			}
		}
	})
}
