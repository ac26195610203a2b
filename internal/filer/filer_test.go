package filer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/mailfmt"
	"github.com/mfilter/mfilter/internal/maillock"
	"github.com/mfilter/mfilter/internal/maillog"
	"github.com/mfilter/mfilter/internal/runprog"
	"golang.org/x/sys/unix"
)

// routeFunc adapts a function to Router.
type routeFunc func(ctx context.Context, msg []byte) (Plan, error)

func (f routeFunc) Route(ctx context.Context, msg []byte) (Plan, error) { return f(ctx, msg) }

// msgs is a Source over a fixed list.
type msgs [][]byte

func (m *msgs) Next() ([]byte, error) {
	if len(*m) == 0 {
		return nil, io.EOF
	}
	msg := (*m)[0]
	*m = (*m)[1:]
	return msg, nil
}

func folder(t *testing.T, base, spec string) deliver.Folder {
	t.Helper()
	f, err := deliver.ParseFolder(base, spec)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func newFiler(t *testing.T, base string, r Router) (*Filer, *bytes.Buffer) {
	t.Helper()
	var log bytes.Buffer
	return &Filer{
		Writer: deliver.NewWriter(deliver.Options{Hostname: "h", Lock: maillock.LockOptions{Timeout: 5 * time.Second}}),
		Router: r,
		Log:    maillog.New(&log),
		Rescue: filepath.Join(base, "rescue.mbox"),
		Warn:   func(s string) { t.Log("warning: " + s) },
	}, &log
}

func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := make(map[string]string)
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if info.IsDir() {
			m[rel+"/"] = ""
			return nil
		}
		b, _ := os.ReadFile(p)
		m[rel] = string(b)
		return nil
	})
	return m
}

func countIn(m map[string]string, s string) int {
	n := 0
	for _, v := range m {
		n += strings.Count(v, s)
	}
	return n
}

// TestFileOneAllOrNothing: when one folder of a message's plan fails,
// FileOne reports an error and the message is in none of its folders,
// whichever kind and order; existing mail stays as it was.
func TestFileOneAllOrNothing(t *testing.T) {
	for _, plan := range [][]string{
		{"md/", "box", "f/bad"},
		{"box", "f/bad/", "mh/."},
		{"box", "other", "f/bad"},
		{"f/bad", "md/", "box"},
	} {
		t.Run(strings.Join(plan, ","), func(t *testing.T) {
			base := t.TempDir()
			os.WriteFile(filepath.Join(base, "f"), []byte("a file\n"), 0o600)
			var folders []deliver.Folder
			for _, s := range plan {
				folders = append(folders, folder(t, base, s))
			}
			fl, log := newFiler(t, base, routeFunc(func(context.Context, []byte) (Plan, error) { return Plan{Folders: folders}, nil }))
			// Folders that already hold mail.
			good := Plan{}
			for _, f := range folders {
				if !strings.HasPrefix(f.Name, "f/") {
					good.Folders = append(good.Folders, f)
				}
			}
			old := fl.Router
			fl.Router = routeFunc(func(context.Context, []byte) (Plan, error) { return good, nil })
			if err := fl.FileOne(context.Background(), []byte("From a@b  Tue Jan  2 03:04:05 2024\nSubject: old\n\nold\n")); err != nil {
				t.Fatal(err)
			}
			fl.Router = old
			before := tree(t, base)

			err := fl.FileOne(context.Background(), []byte("From a@b  Tue Jan  2 03:04:05 2024\nSubject: new\n\nnew\n"))
			if err == nil || !strings.Contains(err.Error(), "not a directory") {
				t.Fatalf("FileOne = %v, want the failure", err)
			}
			after := tree(t, base)
			if n := countIn(after, "Subject: new"); n != 0 {
				t.Errorf("the failed message is in %d places", n)
			}
			for k, v := range before {
				if after[k] != v {
					t.Errorf("%s changed", k)
				}
			}
			for k := range after {
				if _, ok := before[k]; !ok && !strings.HasSuffix(k, "/") {
					t.Errorf("%s left behind", k)
				}
			}
			if !strings.Contains(log.String(), "**Requeued**") {
				t.Errorf("log does not record the requeue:\n%s", log.String())
			}
		})
	}
}

var subjectRE = regexp.MustCompile(`(?m)^Subject: (\S+)`)

// TestFileAllRescue: in a batch, messages whose routing or delivery fails
// go to the rescue mbox, unchanged and once; the others are delivered
// once; the error is a *RescueError naming the rescue mbox; and filing
// the rescue mbox gives back exactly the failed messages.
func TestFileAllRescue(t *testing.T) {
	base := t.TempDir()
	os.WriteFile(filepath.Join(base, "f"), nil, 0o600)
	md, box, bad := folder(t, base, "md/"), folder(t, base, "box"), folder(t, base, "f/bad")
	route := routeFunc(func(_ context.Context, msg []byte) (Plan, error) {
		s := string(subjectRE.FindSubmatch(msg)[1])
		switch {
		case strings.HasPrefix(s, "route-error"):
			return Plan{}, errors.New("no route")
		case strings.HasPrefix(s, "bad"):
			return Plan{Folders: []deliver.Folder{md, bad, box}}, nil
		}
		return Plan{Folders: []deliver.Folder{md, box}}, nil
	})
	fl, _ := newFiler(t, base, route)
	fl.BatchSize = 4
	var in msgs
	var failed [][]byte
	for i := range 20 {
		kind := "ok"
		switch i % 5 {
		case 1:
			kind = "bad"
		case 3:
			kind = "route-error"
		}
		m := fmt.Appendf(nil, "From a@b  Tue Jan  2 03:04:05 2024\nSubject: %s-%d\n\nbody %d\n\n", kind, i, i)
		in = append(in, m)
		if kind != "ok" {
			failed = append(failed, m)
		}
	}
	sum, err := fl.FileAll(context.Background(), &in)
	var re *RescueError
	if !errors.As(err, &re) || re.Path != fl.Rescue || !strings.Contains(err.Error(), fl.Rescue) {
		t.Fatalf("FileAll = %v, want a RescueError naming %s", err, fl.Rescue)
	}
	want := Summary{Messages: 20, Delivered: 12, Rescued: 8}
	if sum != want || re.Summary != want {
		t.Errorf("Summary = %+v, want %+v", sum, want)
	}
	all := tree(t, base)
	for i := range 20 {
		for _, kind := range []string{"ok", "bad", "route-error"} {
			s := fmt.Sprintf("Subject: %s-%d\n", kind, i)
			n := countIn(all, s)
			switch {
			case n == 0:
			case kind == "ok" && n != 2, kind != "ok" && n != 1:
				t.Errorf("%q is in %d places", s, n)
			}
		}
	}
	rescued, _ := os.ReadFile(fl.Rescue)
	if !bytes.Equal(rescued, bytes.Join(failed, nil)) {
		t.Errorf("rescue mbox does not hold exactly the failed messages, in order")
	}
	// Filing the rescue mbox again, now that the folders work, gives them back.
	fl2, _ := newFiler(t, base, DefaultRouter{Folder: folder(t, base, "again/")})
	fl2.Rescue = filepath.Join(base, "rescue2.mbox")
	rf, _ := os.Open(fl.Rescue)
	defer rf.Close()
	sum, err = fl2.FileAll(context.Background(), mailfmt.NewSplitter(rf, mailfmt.SplitOptions{}))
	if err != nil || sum.Delivered != len(failed) {
		t.Fatalf("refiling the rescue mbox: %+v, %v", sum, err)
	}
}

// TestFileAllCancel: a cancelled run stops filing, and the messages it
// still reads are moved to the rescue mbox unfiled: every message ends up
// in exactly one place.
func TestFileAllCancel(t *testing.T) {
	base := t.TempDir()
	md := folder(t, base, "md/")
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	route := routeFunc(func(context.Context, []byte) (Plan, error) {
		if n++; n == 7 {
			cancel() // a SIGTERM arrives while message 7 is routed
		}
		return Plan{Folders: []deliver.Folder{md}}, nil
	})
	fl, _ := newFiler(t, base, route)
	fl.BatchSize = 3
	var in msgs
	for i := range 15 {
		in = append(in, fmt.Appendf(nil, "From a@b  Tue Jan  2 03:04:05 2024\nSubject: m%d\n\n", i))
	}
	sum, err := fl.FileAll(ctx, &in)
	var re *RescueError
	if !errors.As(err, &re) || !errors.Is(err, context.Canceled) {
		t.Fatalf("FileAll = %v, want a RescueError caused by the cancellation", err)
	}
	if sum.Messages != 15 || sum.Delivered+sum.Rescued != 15 || sum.Lost != 0 || sum.Rescued < 8 {
		t.Errorf("Summary %+v: want all 15 read, each delivered or rescued", sum)
	}
	all := tree(t, base)
	for i := range 15 {
		if c := countIn(all, fmt.Sprintf("Subject: m%d\n", i)); c != 1 {
			t.Errorf("message %d is in %d places", i, c)
		}
	}
}

// TestFileAllNoRescue: without a rescue mbox, failed messages are counted
// as lost (still in the input) and the error says so.
func TestFileAllNoRescue(t *testing.T) {
	base := t.TempDir()
	os.WriteFile(filepath.Join(base, "f"), nil, 0o600)
	fl, _ := newFiler(t, base, DefaultRouter{Folder: folder(t, base, "f/md/")})
	fl.Rescue = ""
	in := msgs{[]byte("Subject: a\n\n"), []byte("Subject: b\n\n")}
	sum, err := fl.FileAll(context.Background(), &in)
	if sum.Lost != 2 || err == nil || !strings.Contains(err.Error(), "the input still holds them") {
		t.Errorf("FileAll = %+v, %v", sum, err)
	}
}

// TestFileAllCommitFailure: a message whose delivery fails only at
// Commit (here: its maildir's new/ vanished before the link) is taken
// back from its other folders, mbox included, and rescued; the other
// messages are delivered. Batches commit while later ones are written,
// but a message for an mbox waits for the commit of a batch that
// appended there along with another folder: the take-back works only
// while nothing was appended after it.
func TestFileAllCommitFailure(t *testing.T) {
	for _, c := range []struct {
		name     string
		n, batch int
		pipeAt   int  // the message whose pipe removes mdA/new
		toBox    bool // the other messages go to the mbox, not mdB
	}{
		{"same batch", 4, 4, 3, false},
		{"later batches append to the mbox", 10, 2, 2, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			base := t.TempDir()
			mdA, mdB, box := folder(t, base, "mdA/"), folder(t, base, "mdB/"), folder(t, base, "box")
			n := 0
			route := routeFunc(func(context.Context, []byte) (Plan, error) {
				n++
				switch {
				case n == 1:
					return Plan{Folders: []deliver.Folder{mdA, box}}, nil
				case n == c.pipeAt:
					// Message 1 is written but not committed yet when
					// this pipe runs: messages are routed ahead, but
					// written (and their pipes run) in turn.
					return Plan{Folders: []deliver.Folder{mdB}, Steps: []Step{{Kind: StepPipe, Argv: []string{"rm-new"}}}}, nil
				case c.toBox:
					return Plan{Folders: []deliver.Folder{box}}, nil
				}
				return Plan{Folders: []deliver.Folder{mdB}}, nil
			})
			fl, _ := newFiler(t, base, route)
			fl.Runner = hook(t, "rm-new", filepath.Join(mdA.Path, "new"))
			fl.BatchSize = c.batch
			var in msgs
			for i := range c.n {
				in = append(in, fmt.Appendf(nil, "From a@b  Tue Jan  2 03:04:05 2024\nSubject: m%d\n\n", i))
			}
			first := in[0]
			sum, err := fl.FileAll(context.Background(), &in)
			if want := (Summary{Messages: c.n, Delivered: c.n - 1, Rescued: 1}); sum != want || err == nil {
				t.Fatalf("FileAll = %+v, %v; want %+v and a RescueError", sum, err, want)
			}
			b, _ := os.ReadFile(box.Path)
			if bytes.Contains(b, []byte("Subject: m0\n")) {
				t.Errorf("the failed message stayed in the mbox: %q", b)
			}
			if r, _ := os.ReadFile(fl.Rescue); !bytes.Equal(r, first) {
				t.Errorf("rescue mbox holds %q", r)
			}
			all := tree(t, base)
			for i := range c.n {
				if c := countIn(all, fmt.Sprintf("Subject: m%d\n", i)); c != 1 {
					t.Errorf("message %d is in %d places", i, c)
				}
			}
		})
	}
}

// TestPanicIsAnError: a bug that panics on some message (in the router,
// the writer or the splitter) must not crash mfilter, whose exit status
// 2 would make the MTA bounce the message: the message is retried (exit
// 75) or rescued, and nothing of it stays in a folder.
func TestPanicIsAnError(t *testing.T) {
	base := t.TempDir()
	md, box := folder(t, base, "md/"), folder(t, base, "box")
	panicky := routeFunc(func(ctx context.Context, msg []byte) (Plan, error) {
		if bytes.Contains(msg, []byte("boom")) {
			var m map[string]int
			m["x"]++ // nil map write: a runtime panic, like an index out of range
		}
		return Plan{Folders: []deliver.Folder{md, box}}, nil
	})
	fl, _ := newFiler(t, base, panicky)
	err := fl.FileOne(context.Background(), []byte("Subject: boom\n\n"))
	if err == nil || !strings.Contains(err.Error(), "internal error") {
		t.Fatalf("FileOne = %v, want an internal error", err)
	}
	in := msgs{[]byte("From a@b  Tue Jan  2 03:04:05 2024\nSubject: ok1\n\n"), []byte("From a@b  Tue Jan  2 03:04:05 2024\nSubject: boom\n\n"), []byte("From a@b  Tue Jan  2 03:04:05 2024\nSubject: ok2\n\n")}
	sum, err := fl.FileAll(context.Background(), &in)
	if want := (Summary{Messages: 3, Delivered: 2, Rescued: 1}); sum != want || err == nil {
		t.Errorf("FileAll = %+v, %v; want %+v", sum, err, want)
	}
	if c := countIn(tree(t, base), "Subject: boom"); c != 1 {
		t.Errorf("the panicking message is in %d places, want only the rescue mbox", c)
	}

	// A splitter that panics stops the run like a read error.
	sum, err = fl.FileAll(context.Background(), panicSource{})
	if err == nil || !strings.Contains(err.Error(), "internal error") {
		t.Errorf("FileAll(panicking source) = %+v, %v", sum, err)
	}
}

type panicSource struct{}

func (panicSource) Next() ([]byte, error) { panic("splitter bug") }

// TestRescueIsTheInput: filing the rescue mbox itself while the folder
// still fails (what the error advises, a little early) must not append
// to the file being read, which fed the reader its own output without
// end (and SIGTERM's drain too): the messages go to a fresh rescue mbox
// that the error names, and the input stays as it was.
func TestRescueIsTheInput(t *testing.T) {
	base := t.TempDir()
	os.WriteFile(filepath.Join(base, "f"), nil, 0o600)
	fl, _ := newFiler(t, base, DefaultRouter{Folder: folder(t, base, "f/md/")})
	var orig []byte
	for i := range 5 {
		orig = fmt.Appendf(orig, "From a@b  Tue Jan  2 03:04:05 2024\nSubject: %d\n\nbody\n\n", i)
	}
	if err := os.WriteFile(fl.Rescue, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(fl.Rescue)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	done := make(chan struct{})
	var sum Summary
	go func() {
		defer close(done)
		sum, err = fl.FileAll(context.Background(), mailfmt.NewSplitter(in, mailfmt.SplitOptions{}))
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("FileAll does not end: it reads what it appends")
	}
	var re *RescueError
	if !errors.As(err, &re) || re.Path == fl.Rescue || sum.Rescued != 5 {
		t.Fatalf("FileAll = %+v, %v; want 5 rescued to another file", sum, err)
	}
	if b, _ := os.ReadFile(fl.Rescue); !bytes.Equal(b, orig) {
		t.Errorf("the input changed: %d bytes, had %d", len(b), len(orig))
	}
	if b, _ := os.ReadFile(re.Path); !bytes.Equal(b, orig) {
		t.Errorf("the new rescue mbox %s does not hold the messages", re.Path)
	}
}

// TestFolderIsTheInput: filing an mbox into itself (a rule or --default
// naming the mbox being read) must end, with the messages rescued rather
// than appended to the input, where they would be read again.
func TestFolderIsTheInput(t *testing.T) {
	base := t.TempDir()
	box := folder(t, base, "box")
	fl, _ := newFiler(t, base, DefaultRouter{Folder: box})
	var orig []byte
	for i := range 5 {
		orig = fmt.Appendf(orig, "From a@b  Tue Jan  2 03:04:05 2024\nSubject: %d\n\nbody\n\n", i)
	}
	os.WriteFile(box.Path, orig, 0o600)
	in, err := os.Open(box.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	done := make(chan struct{})
	var sum Summary
	go func() {
		defer close(done)
		sum, err = fl.FileAll(context.Background(), mailfmt.NewSplitter(in, mailfmt.SplitOptions{}))
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("FileAll does not end: it reads what it appends")
	}
	if sum.Rescued != 5 || err == nil || !strings.Contains(err.Error(), "is the mbox being filed") {
		t.Errorf("FileAll = %+v, %v", sum, err)
	}
	if b, _ := os.ReadFile(box.Path); !bytes.Equal(b, orig) {
		t.Errorf("the input changed")
	}
}

// TestFileAllOverlap: batches without mbox appends are committed while
// the next batch is filed. Each message is still delivered or rescued
// exactly once, the log keeps the input order, a message that fails at
// its (background) commit is rescued before a later message that failed
// while that commit ran, and every file is in place when FileAll returns.
func TestFileAllOverlap(t *testing.T) {
	base := t.TempDir()
	mdA, mdB := folder(t, base, "mdA/"), folder(t, base, "mdB/")
	n := 0
	route := routeFunc(func(_ context.Context, msg []byte) (Plan, error) {
		n++
		switch {
		case n == 1:
			return Plan{Folders: []deliver.Folder{mdA}}, nil
		case n == 2:
			// Message 1 is written, its batch not committed yet, when
			// this pipe runs.
			return Plan{Folders: []deliver.Folder{mdB}, Steps: []Step{{Kind: StepPipe, Argv: []string{"rm-new"}}}}, nil
		case n == 3:
			return Plan{}, errors.New("no route")
		}
		return Plan{Folders: []deliver.Folder{mdB}}, nil
	})
	fl, log := newFiler(t, base, route)
	fl.Runner = hook(t, "rm-new", filepath.Join(mdA.Path, "new"))
	fl.BatchSize = 2
	var in msgs
	const total = 21
	for i := range total {
		in = append(in, fmt.Appendf(nil, "From a@b  Tue Jan  2 03:04:05 2024\nSubject: m%d\n\n", i))
	}
	want := slices.Concat(in[0], in[2])
	sum, err := fl.FileAll(context.Background(), &in)
	if w := (Summary{Messages: total, Delivered: total - 2, Rescued: 2}); sum != w || err == nil {
		t.Fatalf("FileAll = %+v, %v; want %+v and a RescueError", sum, err, w)
	}
	if r, _ := os.ReadFile(fl.Rescue); !bytes.Equal(r, want) {
		t.Errorf("rescue mbox holds %q, want messages 0 and 2 in order", r)
	}
	all := tree(t, base)
	for i := range total {
		if c := countIn(all, fmt.Sprintf("Subject: m%d\n", i)); c != 1 {
			t.Errorf("message %d is in %d places", i, c)
		}
	}
	if names, _ := os.ReadDir(filepath.Join(mdB.Path, "new")); len(names) != total-2 {
		t.Errorf("mdB/new holds %d messages, want %d", len(names), total-2)
	}
	// Deliveries are logged in input order (a rescue when it is made).
	var subjects []string
	for _, m := range regexp.MustCompile(`Subject: (m\d+)`).FindAllStringSubmatch(log.String(), -1) {
		if m[1] != "m0" && m[1] != "m2" && (len(subjects) == 0 || subjects[len(subjects)-1] != m[1]) {
			subjects = append(subjects, m[1]) // m1's pipe is logged too
		}
	}
	var wantLog []string
	for i := 3; i < total; i++ {
		wantLog = append(wantLog, fmt.Sprintf("m%d", i))
	}
	wantLog = append([]string{"m1"}, wantLog...)
	if !slices.Equal(subjects, wantLog) {
		t.Errorf("log order %v, want %v", subjects, wantLog)
	}
}

// hook is a Runner whose program name removes path, for tests that must
// change the folders at a given point of the writing.
func hook(t *testing.T, name, path string) runprog.Runner {
	return runnerFunc(func(_ context.Context, argv []string, _ []byte, _ runprog.Options) (runprog.Result, error) {
		if argv[0] != name {
			return runprog.Result{}, fmt.Errorf("unexpected program %q", argv)
		}
		return runprog.Result{}, os.RemoveAll(path)
	})
}

type runnerFunc func(ctx context.Context, argv []string, stdin []byte, opts runprog.Options) (runprog.Result, error)

func (f runnerFunc) Run(ctx context.Context, argv []string, stdin []byte, opts runprog.Options) (runprog.Result, error) {
	return f(ctx, argv, stdin, opts)
}

// TestFileAllLowDescriptorLimit files many messages into maildirs and an
// mbox under a low RLIMIT_NOFILE: batches shrink to fit the descriptors
// that their message files keep open until the commit, so that no
// message is rescued for want of one (with 256-message batches, a limit
// of 200 made a third of them fail with EMFILE).
func TestFileAllLowDescriptorLimit(t *testing.T) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	low := lim
	low.Cur = 200
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_NOFILE, &lim) })

	base := t.TempDir()
	folders := []deliver.Folder{folder(t, base, "a/"), folder(t, base, "b/"), folder(t, base, "c.mbox")}
	n := 0
	route := routeFunc(func(context.Context, []byte) (Plan, error) {
		n++
		return Plan{Folders: []deliver.Folder{folders[n%len(folders)]}}, nil
	})
	fl, _ := newFiler(t, base, route)
	var in msgs
	const total = 1500
	for i := range total {
		in = append(in, fmt.Appendf(nil, "From a@b  Tue Jan  2 03:04:05 2024\nSubject: m%d\n\nbody\n\n", i))
	}
	sum, err := fl.FileAll(context.Background(), &in)
	if w := (Summary{Messages: total, Delivered: total}); sum != w || err != nil {
		t.Fatalf("FileAll under a limit of %d descriptors = %+v, %v; want %+v", low.Cur, sum, err, w)
	}
	all := tree(t, base)
	for _, i := range []int{0, 1, 2, total / 2, total - 1} {
		if c := countIn(all, fmt.Sprintf("Subject: m%d\n", i)); c != 1 {
			t.Errorf("message %d is in %d places", i, c)
		}
	}
}

// countingSource hands out n messages of size bytes and counts them.
type countingSource struct {
	n, size int
	read    atomic.Int64
}

func (s *countingSource) Next() ([]byte, error) {
	i := int(s.read.Load())
	if i == s.n {
		return nil, io.EOF
	}
	msg := fmt.Appendf(nil, "From a@b  Tue Jan  2 03:04:05 2024\nSubject: m%d\n\n", i)
	msg = append(msg, bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n"), s.size/64)...)
	s.read.Add(1)
	return msg, nil
}

// TestFileAllReadsAheadBounded holds the writer on the first message
// (its pipe waits) and checks how far the input was read meanwhile:
// messages of 1 MiB stop the read-ahead at routeAheadBytes, not at
// routeAheadMax messages, so that large mail does not pile up in memory.
func TestFileAllReadsAheadBounded(t *testing.T) {
	base := t.TempDir()
	md := folder(t, base, "md/")
	route := routeFunc(func(_ context.Context, msg []byte) (Plan, error) {
		if bytes.Contains(msg, []byte("Subject: m0\n")) {
			return Plan{Folders: []deliver.Folder{md}, Steps: []Step{{Kind: StepPipe, Argv: []string{"wait"}}}}, nil
		}
		return Plan{Folders: []deliver.Folder{md}}, nil
	})
	src := &countingSource{n: 40, size: 1 << 20}
	fl, _ := newFiler(t, base, route)
	var readWhileHeld int64
	fl.Runner = runnerFunc(func(context.Context, []string, []byte, runprog.Options) (runprog.Result, error) {
		time.Sleep(300 * time.Millisecond) // the router runs ahead as far as it may
		readWhileHeld = src.read.Load()
		return runprog.Result{}, nil
	})
	sum, err := fl.FileAll(context.Background(), src)
	if w := (Summary{Messages: src.n, Delivered: src.n}); sum != w || err != nil {
		t.Fatalf("FileAll = %+v, %v; want %+v", sum, err, w)
	}
	// The message held, those in the budget, the one waiting for room:
	// far fewer than routeAheadMax.
	most := int64(1 + routeAheadBytes/src.size + 1)
	if most >= routeAheadMax/2 {
		t.Fatalf("routeAheadBytes (%d) lets %d messages of 1 MiB wait: not a bound on large mail", routeAheadBytes, most)
	}
	if readWhileHeld > most || readWhileHeld < 2 {
		t.Errorf("%d messages of 1 MiB read while the first was held; want 2 to %d", readWhileHeld, most)
	}
}

// journalRanges is a Journal that records the ranges committed.
type journalRanges struct{ ranges [][2]int64 }

func (j *journalRanges) MayHave(int64) bool                                   { return false }
func (j *journalRanges) Done(context.Context, int64, int, Step) (bool, error) { return false, nil }
func (j *journalRanges) Options(int64, int) deliver.DeliverOptions            { return deliver.DeliverOptions{} }
func (j *journalRanges) ProgramStarting(int64, int) error                     { return nil }
func (j *journalRanges) ProgramDone(int64, int) error                         { return nil }
func (j *journalRanges) Committed(int64) error                                { return nil }
func (j *journalRanges) Committing(start, end int64) error {
	j.ranges = append(j.ranges, [2]int64{start, end})
	return nil
}

// TestFileStreamBatchBytes files messages of 1 MiB: batches end once they
// hold batchBytes, long before BatchSize messages.
func TestFileStreamBatchBytes(t *testing.T) {
	base := t.TempDir()
	md := folder(t, base, "md/")
	fl, _ := newFiler(t, base, DefaultRouter{Folder: md})
	src := &countingSource{n: 30, size: 1 << 20}
	var mbox []byte
	for {
		msg, err := src.Next()
		if err == io.EOF {
			break
		}
		mbox = append(append(mbox, msg...), '\n')
	}
	var j journalRanges
	sum, err := fl.FileStream(context.Background(), mailfmt.NewSplitter(bytes.NewReader(mbox), mailfmt.SplitOptions{}), &j)
	if w := (Summary{Messages: src.n, Delivered: src.n}); sum != w || err != nil {
		t.Fatalf("FileStream = %+v, %v; want %+v", sum, err, w)
	}
	if len(j.ranges) < src.n/5 {
		t.Errorf("%d batches for %d messages of 1 MiB; want at least %d", len(j.ranges), src.n, src.n/5)
	}
	for _, r := range j.ranges {
		if n := r[1] - r[0]; n > batchBytes+(2<<20) {
			t.Errorf("a batch of %d bytes, past batchBytes (%d) and a message", n, batchBytes)
		}
	}
}

// TestFileAllHoldsBounded checks what Hold hears: the bytes held grow
// with the batches in flight, and shrink as they land, so that they stay
// within the bounds of the batches and the read-ahead however long the
// input.
func TestFileAllHoldsBounded(t *testing.T) {
	base := t.TempDir()
	md := folder(t, base, "md/")
	fl, _ := newFiler(t, base, DefaultRouter{Folder: md})
	var most atomic.Int64
	fl.Hold = func(n int) {
		for {
			cur := most.Load()
			if int64(n) <= cur || most.CompareAndSwap(cur, int64(n)) {
				return
			}
		}
	}
	src := &countingSource{n: 60, size: 1 << 20}
	sum, err := fl.FileAll(context.Background(), src)
	if w := (Summary{Messages: src.n, Delivered: src.n}); sum != w || err != nil {
		t.Fatalf("FileAll = %+v, %v; want %+v", sum, err, w)
	}
	size := int64(1<<20 + 64)
	bound := (maxFlying+1)*(batchBytes+size) + routeAheadBytes + 2*size
	if m := most.Load(); m < batchBytes || m > bound {
		t.Errorf("Hold heard at most %d bytes for %d messages of 1 MiB; want %d to %d", m, src.n, batchBytes, bound)
	}
}

// slowSource hands out its messages, but before each after the first it
// waits (up to a deadline) until check(the number handed out) says yes:
// the test's view of what FileAll does while it waits for input.
type slowSource struct {
	msgs  msgs
	check func(n int) bool
	saw   []bool // check's answer before each message after the first
	n     int
}

func (s *slowSource) Next() ([]byte, error) {
	if s.n > 0 && len(s.msgs) > 0 {
		ok := false
		for end := time.Now().Add(5 * time.Second); !ok && time.Now().Before(end); {
			if ok = s.check(s.n); !ok {
				time.Sleep(time.Millisecond)
			}
		}
		s.saw = append(s.saw, ok)
	}
	s.n++
	return s.msgs.Next()
}

// TestFileAllReleasesLocksWhileWaiting: FileAll holds no mbox lock for
// long while the input is slow to come, so that other programs can
// deliver to the mbox meanwhile.
func TestFileAllReleasesLocksWhileWaiting(t *testing.T) {
	base := t.TempDir()
	mb := folder(t, base, "box")
	lock := mb.Path + ".lock"
	// The last message handed out is in the mbox (FileAll took the
	// locks for it) and the lock is gone.
	src := &slowSource{check: func(n int) bool {
		b, _ := os.ReadFile(mb.Path)
		_, err := os.Lstat(lock)
		return bytes.Contains(b, fmt.Appendf(nil, "Subject: m%d\n", n-1)) && errors.Is(err, os.ErrNotExist)
	}}
	for i := range 3 {
		src.msgs = append(src.msgs, fmt.Appendf(nil, "From a@b  Tue Jan  2 03:04:05 2024\nSubject: m%d\n\nbody\n\n", i))
	}
	fl, _ := newFiler(t, base, routeFunc(func(context.Context, []byte) (Plan, error) {
		return Plan{Folders: []deliver.Folder{mb}}, nil
	}))
	sum, err := fl.FileAll(context.Background(), src)
	if w := (Summary{Messages: 3, Delivered: 3}); sum != w || err != nil {
		t.Fatalf("FileAll = %+v, %v; want %+v", sum, err, w)
	}
	if !slices.Equal(src.saw, []bool{true, true}) {
		t.Errorf("lock released while waiting for input: %v, want it each time", src.saw)
	}
}

// releasingSource is a Source that records, at each Release, the message
// released and the messages up to it that were not filed by then.
type releasingSource struct {
	msgs     msgs
	dir      string // the maildir the messages go to
	released []string
	missing  []string
}

func (s *releasingSource) Next() ([]byte, error) { return s.msgs.Next() }

func (s *releasingSource) Release(msg []byte) {
	subject := func(b []byte) string {
		_, rest, _ := bytes.Cut(b, []byte("Subject: "))
		line, _, _ := bytes.Cut(rest, []byte("\n"))
		return string(line)
	}
	s.released = append(s.released, subject(msg))
	filed := make(map[string]bool)
	entries, _ := os.ReadDir(filepath.Join(s.dir, "new"))
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(s.dir, "new", e.Name()))
		filed[subject(b)] = true
	}
	var n int
	fmt.Sscanf(subject(msg), "m%d", &n)
	for i := 0; i <= n; i++ {
		if subj := fmt.Sprintf("m%d", i); !filed[subj] {
			s.missing = append(s.missing, subj)
		}
	}
}

// TestFileAllReleases: a Source that is a Releaser hears of the last
// message of each batch once the batch is filed, and of no message
// before it is filed.
func TestFileAllReleases(t *testing.T) {
	base := t.TempDir()
	md := folder(t, base, "md/")
	src := &releasingSource{dir: md.Path}
	for i := range 10 {
		src.msgs = append(src.msgs, fmt.Appendf(nil, "From a@b  Tue Jan  2 03:04:05 2024\nSubject: m%d\n\nbody\n\n", i))
	}
	fl, _ := newFiler(t, base, routeFunc(func(context.Context, []byte) (Plan, error) {
		return Plan{Folders: []deliver.Folder{md}}, nil
	}))
	fl.BatchSize = 4
	sum, err := fl.FileAll(context.Background(), src)
	if w := (Summary{Messages: 10, Delivered: 10}); sum != w || err != nil {
		t.Fatalf("FileAll = %+v, %v; want %+v", sum, err, w)
	}
	if want := []string{"m3", "m7", "m9"}; !slices.Equal(src.released, want) {
		t.Errorf("released %q, want %q", src.released, want)
	}
	if len(src.missing) > 0 {
		t.Errorf("released before they were filed: %q", src.missing)
	}
}
