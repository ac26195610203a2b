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
	if err := r.fileRest(ctx, src); err != nil {
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
// passes on only those that leave the source or are copied.
type folderSource struct {
	r          *run
	next       int64
	start, end int64
	err        error
}

func (s *folderSource) Next() ([]byte, error) {
	r := s.r
	for s.next < int64(len(r.plan.Names)) {
		k := s.next
		s.next++
		name := r.plan.Names[k]
		rel := name
		if r.rep.Resumed {
			var err error
			if rel, err = r.find(name, false); err != nil {
				s.err = err
				return nil, err
			}
		}
		if rel == "" {
			r.rep.Gone++
			continue
		}
		data, err := os.ReadFile(filepath.Join(r.abs, rel))
		if errors.Is(err, fs.ErrNotExist) && r.kind == KindMaildir {
			if rel, err = r.find(name, true); err == nil && rel != "" {
				data, err = os.ReadFile(filepath.Join(r.abs, rel))
			} else if err == nil {
				err = fs.ErrNotExist
			}
		}
		if errors.Is(err, fs.ErrNotExist) {
			r.rep.Gone++
			continue
		}
		if err != nil {
			s.err = err
			return nil, err
		}
		msg := data
		if !mailfmt.HasFromLine(data) {
			msg = append(mailfmt.GeneratedFromLine(data, r.claimed), data...)
		}
		d := r.classify(r.ctx, msg)
		r.decided(d, filepath.Join(r.name, rel))
		if d.stays {
			continue
		}
		r.carryFlags(&d, msg, r.sourceFlags(name, rel))
		r.note(msg, d, &movedMsg{K: k, Name: name, rel: rel})
		s.start, s.end = k, k+1
		return msg, nil
	}
	return nil, io.EOF
}

func (s *folderSource) Offsets() (int64, int64) { return s.start, s.end }
