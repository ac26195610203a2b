package filer

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/confine"
	"github.com/mfilter/mfilter/rules"
)

// TestRulesRouterFolders routes to fixed folders and to folders built
// from message data: fixed names are parsed once for the router's life
// (an mbox name stays an mbox even if a directory appears there later),
// names built from message data every time.
func TestRulesRouterFolders(t *testing.T) {
	dir := t.TempDir()
	yaml := `rules:
  - if: {subject: '^list (?P<name>[a-z]+)$'}
    then: {folder: 'lists/${name}/'}
  - if: {subject: '^archive$'}
    then: {folder: archive}
  - if: {subject: '^inbox$'}
    then: {folder: inbox/}
`
	cfg, err := rules.Parse(filepath.Join(dir, "rules.yaml"), []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	r := &RulesRouter{
		Engine: rules.NewEngine(cfg, rules.Options{Default: "inbox/", Vars: map[string]string{"MAILDIR": dir}}),
		Base:   dir,
		Root:   root,
		Guard:  confine.New(dir),
	}
	route := func(subject string) deliver.Folder {
		t.Helper()
		plan, err := r.Route(context.Background(), []byte("From: a@example.org\nSubject: "+subject+"\n\nbody\n"))
		if err != nil {
			t.Fatal(err)
		}
		var got []deliver.Folder
		for _, st := range plan.steps() {
			if st.Kind == StepFolder {
				got = append(got, st.Folder)
			}
		}
		if len(got) != 1 {
			t.Fatalf("%q: %d folders, want 1", subject, len(got))
		}
		return got[0]
	}
	for range 2 {
		if f := route("archive"); f.Kind != deliver.Mbox || f.Path != filepath.Join(dir, "archive") {
			t.Errorf("archive: %+v", f)
		}
		if f := route("inbox"); f.Kind != deliver.Maildir || f.Path != filepath.Join(dir, "inbox") {
			t.Errorf("inbox: %+v", f)
		}
		for _, name := range []string{"go", "rust"} {
			if f := route("list " + name); f.Kind != deliver.Maildir || f.Path != filepath.Join("lists", name) {
				t.Errorf("list %s: %+v", name, f)
			}
		}
	}
	// Parsed once: a directory made at the mbox's name later does not
	// turn it into a directory folder for this router.
	if err := os.Mkdir(filepath.Join(dir, "archive"), 0o700); err != nil {
		t.Fatal(err)
	}
	if f := route("archive"); f.Kind != deliver.Mbox {
		t.Errorf("archive after mkdir: kind %v, want the mbox it was", f.Kind)
	}
	// A new router sees the directory.
	r2 := &RulesRouter{Engine: r.Engine, Base: dir, Root: root}
	plan, err := r2.Route(context.Background(), []byte("Subject: archive\n\nbody\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f := plan.steps()[0].Folder; f.Kind != deliver.Dir {
		t.Errorf("archive for a new router: kind %v, want Dir", f.Kind)
	}
	if n := len(r.folders); n != 2 {
		t.Errorf("%d folder names remembered, want 2 (the fixed ones)", n)
	}
}
