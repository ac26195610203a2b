package deliver

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// TestDirCacheFolderMadeAgain: a maildir removed and made again between
// two deliveries gets the second one, though the Writer kept the old
// directories open (a descriptor of a removed directory creates and
// links nothing; the Writer then goes by the path).
func TestDirCacheFolderMadeAgain(t *testing.T) {
	base := t.TempDir()
	w := NewWriter(testOptions())
	md := mustFolder(t, base, "md/")
	deliverCommit(t, w, []byte("Subject: one\n\nbody\n"), md)
	if len(w.dirs.fds) == 0 {
		t.Fatal("the Writer kept no directory open: nothing to test")
	}
	if err := os.RemoveAll(md.Path); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"", "tmp", "new", "cur"} {
		if err := os.Mkdir(filepath.Join(md.Path, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	ds := deliverCommit(t, w, []byte("Subject: two\n\nbody\n"), md)
	b, err := os.ReadFile(ds[0].Path)
	if err != nil || string(b) != "Subject: two\n\nbody\n" {
		t.Fatalf("second delivery: %q, %v", b, err)
	}
	if got, _ := os.ReadDir(filepath.Join(md.Path, "new")); len(got) != 1 {
		t.Errorf("%d files in the new new/, want 1", len(got))
	}
}

// TestDirCacheBounded: the cache opens at most max directories and
// closes what it drops.
func TestDirCacheBounded(t *testing.T) {
	base := t.TempDir()
	c := &dirCache{fds: make(map[string]int), max: 2}
	defer c.close()
	var fds []int
	for _, d := range []string{"a", "b", "c"} {
		p := filepath.Join(base, d)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		fds = append(fds, c.get(p))
	}
	if fds[0] < 0 || fds[1] < 0 || fds[2] != -1 {
		t.Fatalf("descriptors %v, want two and then -1", fds)
	}
	if again := c.get(filepath.Join(base, "a")); again != fds[0] {
		t.Errorf("a again: %d, want the same %d", again, fds[0])
	}
	c.drop(filepath.Join(base, "a"), fds[0])
	if fd := c.get(filepath.Join(base, "c")); fd < 0 {
		t.Error("no room after a drop")
	}
	if c.get(filepath.Join(base, "missing")) != -1 {
		t.Error("a missing directory got a descriptor")
	}
}

// TestDirCacheClosedWithWriter: the directories a Writer kept open are
// closed once the Writer is gone, so that programs that make many
// Writers (tests) do not run out of descriptors.
func TestDirCacheClosedWithWriter(t *testing.T) {
	base := t.TempDir()
	md := mustFolder(t, base, "md/")
	before := openFDs(t)
	for range 50 {
		deliverCommit(t, NewWriter(testOptions()), []byte("Subject: x\n\nbody\n"), md)
	}
	if during := openFDs(t); during < before+50 {
		t.Fatalf("%d descriptors open, %d before: the Writers kept no directory open", during, before)
	}
	deadline := time.Now().Add(5 * time.Second)
	for openFDs(t) > before+4 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if after := openFDs(t); after > before+4 {
		t.Errorf("%d descriptors open after the Writers were collected, %d before", after, before)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// TestFolderIn: Folder.in is filepath.Join, for folders from ParseFolder
// (clean paths) and others.
func TestFolderIn(t *testing.T) {
	var folders []Folder
	for _, spec := range []string{"md/", "/home/u/Mail/md/", "a//b/", "../x/", "/a/./b/", "x"} {
		for _, base := range []string{"", "/home/u/Mail", ".", "/"} {
			f, err := ParseFolder(base, spec)
			if err != nil {
				t.Fatal(err)
			}
			folders = append(folders, f)
		}
	}
	for _, p := range []string{"a//b", "a/b/", ".", "/", ""} {
		folders = append(folders, Folder{Path: p, Kind: Maildir}) // made by hand: not known clean
	}
	for _, f := range folders {
		for _, name := range [][]string{nil, {"1795946209.M8P3Q1.vm,S=2855"}} {
			want := filepath.Join(append([]string{f.Path, "new"}, name...)...)
			if got := f.in("new", name...); got != want {
				t.Errorf("Folder{Path: %q}.in(new, %q) = %q, want %q", f.Path, name, got, want)
			}
		}
	}
}
