package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/mfilter/mfilter/internal/fetch"
	"github.com/mfilter/mfilter/internal/filer"
	"github.com/mfilter/mfilter/internal/mailfmt"
	"github.com/mfilter/mfilter/internal/statelock"
	"github.com/mfilter/mfilter/internal/sysexits"
)

// fileHeadLen is how much of an mbox's start identifies it, with its
// device and inode, across runs: a journal of a file whose first bytes
// changed (rewritten by a mail reader, replaced by another file that got
// the same inode) is not resumed. Appending to the file changes nothing.
const fileHeadLen = 64 << 10

// defaultStateDir is $XDG_STATE_HOME/mfilter, else ~/.local/state/mfilter,
// or "" without either.
func defaultStateDir(env *environ) string {
	st := env.getenv("XDG_STATE_HOME")
	if st == "" {
		home := env.getenv("HOME")
		if home == "" {
			return ""
		}
		st = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(st, "mfilter")
}

// fileJournaled files the mbox file f (opened from path) with a journal
// in stateDir, as fetch-and-file files a claimed spool: a run killed at
// any moment and run again files every message exactly once. One run at
// a time works on a file: the next waits up to wait for it, then exits
// 75. The journal goes once every message is filed or rescued.
func fileJournaled(ctx context.Context, env *environ, s *setup, path string, f *os.File, ff *filingFlags, stateDir string, wait time.Duration) int {
	const prog = "mfilter file"
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || stateDir == "" {
		return fileMbox(ctx, env, s, path, f, ff)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fileMbox(ctx, env, s, path, f, ff)
	}
	key := "file-" + strconv.FormatUint(uint64(sys.Dev), 16) + "-" + strconv.FormatUint(sys.Ino, 16)
	lock, err := statelock.Acquire(ctx, filepath.Join(stateDir, key+".lock"), "mfilter file "+path, wait)
	var busy *statelock.BusyError
	if errors.As(err, &busy) {
		fmt.Fprintf(env.stderr, "%s: %s: %v; nothing was done (try again later)\n", prog, path, err)
		return sysexits.TempFail
	}
	if err != nil {
		fmt.Fprintf(env.stderr, "%s: %s: %v\n", prog, path, err)
		return sysexits.TempFail
	}
	defer lock.Release()
	jpath := filepath.Join(stateDir, key+".journal")
	if _, err := os.Stat(jpath); lock.Waited && errors.Is(err, os.ErrNotExist) {
		// Another run was filing this file and finished it while
		// this one waited: filing it again now would file every
		// message twice. (Run again later to file it again.)
		fmt.Fprintf(env.stderr, "%s: %s: another run filed it while this one waited; nothing to do\n", prog, path)
		return sysexits.OK
	}
	j, err := openFileJournal(env, s, jpath, path, f, st.Size())
	if err != nil {
		fmt.Fprintf(env.stderr, "%s: %s: %v\n", prog, path, err)
		return sysexits.TempFail
	}
	return fileFromJournal(ctx, env, s, path, f, ff, j)
}

// openFileJournal opens the journal at jpath for the mbox f (opened from
// path, size bytes long): the journal of an unfinished run if it is about
// this file, else a new one.
func openFileJournal(env *environ, s *setup, jpath, path string, f *os.File, size int64) (*fetch.Journal, error) {
	const prog = "mfilter file"
	j, err := fetch.OpenJournal(jpath, s.filer.Writer, hostname())
	if err != nil {
		return nil, err
	}
	if j.Claim != "" {
		sum, err := headSum(f, j.HeadLen)
		if err != nil {
			j.Close()
			return nil, err
		}
		if sum != j.HeadSum {
			// Another file now: what the journal says is not about it.
			fmt.Fprintf(env.stderr, "%s: warning: %s changed since an unfinished run (journal %s); filing it from the start\n", prog, path, jpath)
			if err := j.Remove(); err != nil {
				return nil, err
			}
			if j, err = fetch.OpenJournal(jpath, s.filer.Writer, hostname()); err != nil {
				return nil, err
			}
		} else if j.Filed > 0 {
			fmt.Fprintf(env.stderr, "%s: %s: resuming an unfinished run at byte %d\n", prog, path, j.Filed)
		}
	}
	if j.Claim == "" {
		n := min(size, fileHeadLen)
		sum, err := headSum(f, n)
		if err == nil {
			abs, _ := filepath.Abs(path)
			err = j.ClaimingFile(abs, fetch.NewClaimID(), n, sum)
		}
		if err != nil {
			j.Close()
			return nil, err
		}
	}
	return j, nil
}

// fileFromJournal files f from where the journal j says, and removes j
// once every message is filed or rescued.
func fileFromJournal(ctx context.Context, env *environ, s *setup, path string, f *os.File, ff *filingFlags, j *fetch.Journal) int {
	const prog = "mfilter file"
	base := j.Filed
	if _, err := f.Seek(base, io.SeekStart); err != nil {
		j.Close()
		fmt.Fprintf(env.stderr, "%s: %s: %v\n", prog, path, err)
		return sysexits.TempFail
	}
	opts := mailfmt.SplitOptions{Berkeley: ff.berkeley, Mboxrd: ff.readMboxrd, Now: j.ClaimTime}
	sp := mailfmt.NewFileSplitter(f, opts)
	if sp.Mapped() && env.mapped != nil {
		env.mapped()
	}
	src := &fileSource{s: sp, base: base}
	_, complete, ferr := s.filer.FileAllJournaled(ctx, src, j)
	if cerr := sp.Close(); cerr != nil && ferr == nil {
		fmt.Fprintf(env.stderr, "mfilter: %s: %v\n", path, cerr)
	}
	if complete {
		if err := j.Remove(); err != nil {
			fmt.Fprintf(env.stderr, "%s: %s: journal: %v\n", prog, path, err)
		}
	} else {
		j.Close()
	}
	if ferr != nil {
		fmt.Fprintf(env.stderr, "mfilter: %s: %v\n", path, ferr)
		return sysexits.TempFail
	}
	return sysexits.OK
}

// headSum is the hex sha256 of the first n bytes of f.
func headSum(f *os.File, n int64) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, n)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

// fileSource is a Splitter that started at offset base of its file.
type fileSource struct {
	s    *mailfmt.Splitter
	base int64
}

func (f *fileSource) Next() ([]byte, error) { return f.s.Next() }
func (f *fileSource) Offsets() (int64, int64) {
	a, b := f.s.Offsets()
	return f.base + a, f.base + b
}
func (f *fileSource) Release(msg []byte) { f.s.Release(msg) }

var (
	_ filer.OffsetSource = (*fileSource)(nil)
	_ filer.Releaser     = (*fileSource)(nil)
)
