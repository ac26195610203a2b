package refile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/fetch"
	"github.com/mfilter/mfilter/internal/mailfmt"
)

// listFolder lists the messages of a maildir (as "cur/NAME" and
// "new/NAME") or an MH folder (numbers, in order).
func listFolder(abs, kind string) ([]string, error) {
	if kind == KindMH {
		names, err := readNames(abs)
		if err != nil {
			return nil, err
		}
		var nums []int
		for _, n := range names {
			if v, err := strconv.Atoi(n); err == nil && v > 0 && strconv.Itoa(v) == n {
				nums = append(nums, v)
			}
		}
		sort.Ints(nums)
		out := make([]string, len(nums))
		for i, v := range nums {
			out[i] = strconv.Itoa(v)
		}
		return out, nil
	}
	var out []string
	for _, sub := range []string{"cur", "new"} {
		names, err := readNames(filepath.Join(abs, sub))
		if err != nil {
			return nil, err
		}
		sort.Strings(names)
		for _, n := range names {
			out = append(out, sub+"/"+n)
		}
	}
	return out, nil
}

// find is where the message listed as name is now ("" when it is gone).
// A maildir message is found by its unique name wherever a reader moved
// it (new/ to cur/, other flags); relist makes a fresh listing.
func (r *run) find(name string, relist bool) (string, error) {
	if r.kind == KindMH {
		if _, err := os.Lstat(filepath.Join(r.abs, name)); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return "", nil
			}
			return "", err
		}
		return name, nil
	}
	r.mu.Lock()
	loc := r.locate
	r.mu.Unlock()
	if loc == nil || relist {
		names, err := listFolder(r.abs, r.kind)
		if err != nil {
			return "", err
		}
		loc = make(map[string]string, len(names))
		for _, n := range names {
			loc[maildirUnique(filepath.Base(n))] = n
		}
		r.mu.Lock()
		r.locate = loc
		r.mu.Unlock()
	}
	return loc[maildirUnique(filepath.Base(name))], nil
}

// folderFlags reads what the source folder keeps of its messages' flags
// beside their files: a maildir's keyword letters (dovecot-keywords), an
// MH folder's sequences.
func (r *run) folderFlags() error {
	var err error
	if r.kind == KindMH {
		r.mhSeqs, err = deliver.ReadMHSequences(r.abs)
	} else {
		r.srcKW, err = deliver.ReadMaildirKeywords(r.abs)
	}
	if err != nil {
		return fmt.Errorf("the flags of %s: %w", r.name, err)
	}
	return nil
}

// sourceFlags are the flags of the message listed as name, found at
// rel: a maildir message's info (in cur/: seen by a reader, Old), an MH
// message's sequences.
func (r *run) sourceFlags(name, rel string) deliver.Flags {
	if r.kind == KindMH {
		return r.mhSeqs.Flags(name)
	}
	base := filepath.Base(rel)
	f := deliver.Flags{}
	if _, info, ok := strings.Cut(base, ":"); ok && strings.HasPrefix(info, "2,") {
		f = deliver.ParseMaildirInfo(base, r.srcKW)
	}
	f.Old = strings.HasPrefix(rel, "cur/")
	f.Exact = true
	return f
}

// folder refiles a maildir or MH folder.
func (r *run) folder(ctx context.Context, jpath string) error {
	if !r.plan.began {
		names, err := listFolder(r.abs, r.kind)
		if err != nil {
			r.plan.close()
			return err
		}
		err = r.plan.add(&planRecord{Op: "begin", ID: fetch.NewClaimID(), Kind: r.kind, Source: r.abs, Names: names})
		if err != nil {
			r.plan.close()
			return err
		}
	} else {
		r.warn("%s: finishing an unfinished run", r.name)
	}
	if err := r.folderFlags(); err != nil {
		r.plan.close()
		return err
	}
	if err := r.openJournal(jpath, 0, ""); err != nil {
		r.plan.close()
		return err
	}
	if err := r.finish(r.j.Filed); err != nil {
		return r.stop(err)
	}
	src := &folderSource{r: r, next: r.j.Filed}
	src.startPrefetch()
	err := r.fileRest(ctx, src)
	src.stopPrefetch()
	if err != nil {
		return r.stop(err)
	}
	if src.err != nil {
		return r.stop(src.err)
	}
	// The unlinks must be durable before the journal that would redo
	// them goes.
	dirs := []string{r.abs}
	if r.kind == KindMaildir {
		dirs = []string{filepath.Join(r.abs, "cur"), filepath.Join(r.abs, "new")}
	}
	for _, d := range dirs {
		if err := syncDir(d); err != nil {
			return r.stop(err)
		}
	}
	if err := r.pruneSequences(ctx); err != nil {
		return r.stop(err)
	}
	return r.finishState()
}

// pruneSequences takes the messages that left an MH source out of its
// sequences (a rerun does it again: removing is idempotent), so that a
// new message given a freed number does not inherit their flags.
func (r *run) pruneSequences(ctx context.Context) error {
	if r.kind != KindMH {
		return nil
	}
	var nums []uint64
	for _, m := range r.plan.moved {
		if n, err := strconv.ParseUint(m.Name, 10, 64); err == nil && !m.Keep {
			nums = append(nums, n)
		}
	}
	if err := deliver.RemoveFromMHSequences(ctx, r.abs, nums, r.o.Lock.Timeout); err != nil {
		return fmt.Errorf("the sequences of %s: %w", r.name, err)
	}
	return nil
}

// stop closes the state of an interrupted run and returns err.
func (r *run) stop(err error) error {
	r.j.Close()
	r.plan.close()
	return err
}

func (r *run) warn(format string, args ...any) {
	if r.o.Warn != nil {
		r.o.Warn(fmt.Sprintf(format, args...))
	}
}

// folderSource reads the listed messages of a folder from index next on,
// each with a From_ line (the same in every run) when it has none, and
// passes on only those that leave the source or are copied. Reading and
// routing go on in a goroutine of their own (prefetch), up to
// prefetchMax messages and prefetchBytes ahead, so that they run beside
// the writing of the filer on another core.
type folderSource struct {
	r          *run
	next       int64
	start, end int64
	err        error
	ch         chan fetched
	quit       chan struct{}
	budget     *budget
}

// fetched is one listed message, read and routed ahead.
type fetched struct {
	k         int64
	name, rel string
	msg       []byte
	d         decision
	gone      bool
	err       error
}

const (
	prefetchMax   = 64
	prefetchBytes = 4 << 20
)

// startPrefetch starts reading ahead; stopPrefetch ends it (after the
// filer is done with the source, at its end or not).
func (s *folderSource) startPrefetch() {
	s.ch = make(chan fetched, prefetchMax)
	s.quit = make(chan struct{})
	s.budget = newBudget(prefetchBytes)
	go func() {
		defer close(s.ch)
		for k := s.next; k < int64(len(s.r.plan.Names)); k++ {
			f := s.fetch(k)
			s.budget.acquire(len(f.msg))
			select {
			case s.ch <- f:
			case <-s.quit:
				return
			}
			if f.err != nil {
				return
			}
		}
	}()
}

func (s *folderSource) stopPrefetch() {
	close(s.quit)
	s.budget.close()
	for range s.ch {
	}
}

// fetch reads and routes the listed message k.
func (s *folderSource) fetch(k int64) fetched {
	r := s.r
	f := fetched{k: k, name: r.plan.Names[k], rel: r.plan.Names[k]}
	var err error
	if r.rep.Resumed {
		if f.rel, err = r.find(f.name, false); err != nil || f.rel == "" {
			f.err, f.gone = err, f.rel == ""
			return f
		}
	}
	data, err := readFile(filepath.Join(r.abs, f.rel))
	if errors.Is(err, fs.ErrNotExist) && r.kind == KindMaildir {
		// A reader renamed it since (new/ to cur/, its flags).
		if f.rel, err = r.find(f.name, true); err == nil && f.rel != "" {
			data, err = readFile(filepath.Join(r.abs, f.rel))
		} else if err == nil {
			err = fs.ErrNotExist
		}
	}
	if errors.Is(err, fs.ErrNotExist) {
		f.gone = true
		return f
	}
	if err != nil {
		f.err = err
		return f
	}
	f.msg = data
	if !mailfmt.HasFromLine(data) {
		f.msg = append(mailfmt.GeneratedFromLine(data, r.claimed), data...)
	}
	f.d = r.classify(r.ctx, f.msg)
	return f
}

func (s *folderSource) Next() ([]byte, error) {
	r := s.r
	for f := range s.ch {
		s.budget.release(len(f.msg))
		switch {
		case f.err != nil:
			s.err = f.err
			return nil, f.err
		case f.gone:
			r.mu.Lock()
			r.rep.Gone++
			r.mu.Unlock()
			continue
		}
		r.decided(f.d, filepath.Join(r.name, f.rel))
		if f.d.stays {
			continue
		}
		r.carryFlags(&f.d, f.msg, r.sourceFlags(f.name, f.rel))
		r.note(f.msg, f.d, &movedMsg{K: f.k, Name: f.name, rel: f.rel})
		s.start, s.end = f.k, f.k+1
		return f.msg, nil
	}
	return nil, io.EOF
}

// readFile reads the file at path with plain system calls: os.ReadFile
// also asks the runtime's poller about each file (fcntl, epoll_ctl),
// which for the thousands of small files of a folder costs more than
// the reading.
func readFile(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	buf := make([]byte, 0, st.Size+1)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}

// budget bounds the bytes read ahead: acquire waits until n more fit
// (or nothing is held), release gives them back, close ends every wait.
type budget struct {
	mu     sync.Mutex
	cond   *sync.Cond
	held   int
	limit  int
	closed bool
}

func newBudget(limit int) *budget {
	b := &budget{limit: limit}
	b.cond = sync.NewCond(&b.mu)
	return b
}

func (b *budget) acquire(n int) {
	b.mu.Lock()
	for !b.closed && b.held > 0 && b.held+n > b.limit {
		b.cond.Wait()
	}
	b.held += n
	b.mu.Unlock()
}

func (b *budget) release(n int) {
	b.mu.Lock()
	b.held -= n
	b.cond.Broadcast()
	b.mu.Unlock()
}

func (b *budget) close() {
	b.mu.Lock()
	b.closed = true
	b.cond.Broadcast()
	b.mu.Unlock()
}

func (s *folderSource) Offsets() (int64, int64) { return s.start, s.end }
