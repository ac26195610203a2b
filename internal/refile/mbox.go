package refile

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/fetch"
	"github.com/mfilter/mfilter/internal/mailfmt"
	"github.com/mfilter/mfilter/internal/maillock"
)

// mbox refiles an mbox file. It holds the mbox's locks (dotlock and
// fcntl, as deliveries to it take them) from start to end, files the
// messages that leave it, and once every one of them is durable writes
// what stays to a temporary file beside it that then replaces it.
func (r *run) mbox(ctx context.Context, jpath string) error {
	dl, err := maillock.AcquireDotlock(ctx, r.abs+".lock", r.o.Lock)
	if err != nil {
		r.plan.close()
		return fmt.Errorf("lock %s: %w", r.abs, err)
	}
	defer dl.Release()
	f, err := os.OpenFile(r.abs, os.O_RDWR, 0)
	if err != nil {
		r.plan.close()
		return err
	}
	defer f.Close()
	if err := fcntlLock(ctx, f, r.o.Lock); err != nil {
		r.plan.close()
		return err
	}
	tmp := filepath.Join(filepath.Dir(r.abs), "."+filepath.Base(r.abs)+".mfilter-refile")
	if r.plan.rewrite != nil && !r.plan.rewritten {
		r.warn("%s: finishing an unfinished run", r.name)
		if err := r.openJournal(jpath, 0, ""); err != nil {
			r.plan.close()
			return err
		}
		if err := r.replace(f, tmp, r.plan.rewrite.End); err != nil {
			return r.stop(err)
		}
		return r.finishState()
	}
	st, err := f.Stat()
	if err != nil {
		r.plan.close()
		return err
	}
	if !r.plan.began {
		sum, err := sumOf(f, st.Size())
		if err == nil {
			err = r.plan.add(&planRecord{Op: "begin", ID: fetch.NewClaimID(), Kind: r.kind, Source: r.abs, Size: st.Size(), Sum: sum})
		}
		if err != nil {
			r.plan.close()
			return err
		}
	} else {
		r.warn("%s: finishing an unfinished run", r.name)
		if r.plan.rewritten {
			if err := r.openJournal(jpath, 0, ""); err != nil {
				r.plan.close()
				return err
			}
			return r.finishState()
		}
		sum, err := "", error(nil)
		if st.Size() >= r.plan.Size {
			sum, err = sumOf(f, r.plan.Size)
		}
		if err != nil {
			r.plan.close()
			return err
		}
		if sum != r.plan.Sum {
			r.plan.close()
			return fmt.Errorf("%s changed since an unfinished refile of it (%s): not refiled; the messages that run filed may be in both places", r.name, r.plan.path)
		}
	}
	// Can the mbox be replaced? Known before anything is filed.
	if err := checkWritable(tmp, st.Mode().Perm()); err != nil {
		r.plan.close()
		return err
	}
	if err := r.openJournal(jpath, r.plan.Size, r.plan.Sum); err != nil {
		r.plan.close()
		return err
	}
	if err := r.finish(r.j.Filed); err != nil {
		return r.stop(err)
	}
	if err := r.fileMbox(ctx, f, st.Size()); err != nil {
		return r.stop(err)
	}
	// Every moved message is durable: what stays replaces the mbox.
	var cut [][2]int64
	for _, m := range r.plan.moved {
		if !m.Keep {
			cut = append(cut, [2]int64{m.K, min(m.End, r.plan.Size)})
		}
	}
	if len(cut) == 0 {
		return r.finishState()
	}
	sort.Slice(cut, func(a, b int) bool { return cut[a][0] < cut[b][0] })
	st, err = f.Stat()
	if err != nil {
		return r.stop(err)
	}
	if err := writeKept(f, tmp, st, r.plan.Size, cut); err != nil {
		return r.stop(err)
	}
	if err := r.plan.add(&planRecord{Op: "rewrite", Tmp: tmp, End: st.Size()}); err != nil {
		return r.stop(err)
	}
	if err := r.replace(f, tmp, st.Size()); err != nil {
		return r.stop(err)
	}
	return r.finishState()
}

// fileMbox files the messages of f from the journal's offset to the size
// the run began with (size is f's now).
func (r *run) fileMbox(ctx context.Context, f *os.File, size int64) error {
	base := r.j.Filed
	if base >= r.plan.Size {
		return nil
	}
	opts := mailfmt.SplitOptions{Berkeley: r.o.Berkeley, Mboxrd: r.o.ReadMboxrd, Now: r.j.ClaimTime}
	var sp *mailfmt.Splitter
	if size == r.plan.Size {
		if _, err := f.Seek(base, io.SeekStart); err != nil {
			return err
		}
		sp = mailfmt.NewFileSplitter(f, opts)
	} else {
		// Mail was appended while no run held the locks: it is not
		// this run's.
		sp = mailfmt.NewSplitter(io.NewSectionReader(f, base, r.plan.Size-base), opts)
	}
	src := &mboxSource{r: r, sp: sp, base: base}
	err := r.fileRest(ctx, src)
	if cerr := sp.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// mboxSource reads the messages of an mbox and passes on only those
// that leave it or are copied.
type mboxSource struct {
	r          *run
	sp         *mailfmt.Splitter
	base       int64
	start, end int64
}

func (s *mboxSource) Next() ([]byte, error) {
	r := s.r
	for {
		msg, err := s.sp.Next()
		if err != nil {
			return nil, err
		}
		a, b := s.sp.Offsets()
		a, b = s.base+a, s.base+b
		d := r.classify(r.ctx, msg)
		r.decided(d, fmt.Sprintf("%s@%d", r.name, a))
		if d.stays {
			continue
		}
		r.carryFlags(&d, msg, deliver.ParseMboxFlags(msg))
		r.note(msg, d, &movedMsg{K: a, End: b})
		s.start, s.end = a, b
		return msg, nil
	}
}

func (s *mboxSource) Offsets() (int64, int64) { return s.start, s.end }
func (s *mboxSource) Release(msg []byte)      { s.sp.Release(msg) }

// sumOf is the hex sha256 of f's first n bytes.
func sumOf(f *os.File, n int64) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, n)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// checkWritable makes sure that the temporary file can be made beside
// the mbox.
func checkWritable(tmp string, perm fs.FileMode) error {
	t, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return fmt.Errorf("cannot rewrite the mbox: %w", err)
	}
	t.Close()
	return os.Remove(tmp)
}

// writeKept writes to tmp, durably, the mbox f (st) without the byte
// ranges cut (sorted, within its first size bytes), then what follows
// size.
func writeKept(f *os.File, tmp string, st os.FileInfo, size int64, cut [][2]int64) error {
	t, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return err
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		t.Chown(int(sys.Uid), int(sys.Gid)) // as far as allowed
	}
	var pos int64
	copyRange := func(from, to int64) error {
		if to <= from {
			return nil
		}
		_, err := io.Copy(t, io.NewSectionReader(f, from, to-from))
		return err
	}
	for _, c := range cut {
		if err = copyRange(pos, c[0]); err != nil {
			break
		}
		pos = max(pos, c[1])
	}
	if err == nil {
		err = copyRange(pos, st.Size())
	}
	if err == nil {
		err = t.Sync()
	}
	if cerr := t.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("rewrite %s: %w", f.Name(), err)
	}
	return nil
}

// replace puts the temporary file in the mbox's place. The mbox was end
// bytes long when tmp was written: what was appended since (a crashed
// run released the locks) is appended to tmp first. A tmp that is gone
// replaced the mbox already.
func (r *run) replace(f *os.File, tmp string, end int64) error {
	t, err := os.OpenFile(tmp, os.O_WRONLY|os.O_APPEND, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return r.plan.add(&planRecord{Op: "rewritten"})
	}
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err == nil && st.Size() > end {
		_, err = io.Copy(t, io.NewSectionReader(f, end, st.Size()-end))
		if err == nil {
			err = t.Sync()
		}
	}
	if cerr := t.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, r.abs); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(r.abs)); err != nil {
		return err
	}
	return r.plan.add(&planRecord{Op: "rewritten"})
}

// fcntlLock takes a write lock on the whole of f, as deliveries to an
// mbox take it (an open file description lock where the kernel has
// them), waiting up to opts.Timeout.
func fcntlLock(ctx context.Context, f *os.File, opts maillock.LockOptions) error {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = maillock.DefaultLockOptions.Timeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	sleep := 1
	for {
		lk := unix.Flock_t{Type: unix.F_WRLCK}
		err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
		if errors.Is(err, unix.EINVAL) {
			lk = unix.Flock_t{Type: unix.F_WRLCK}
			err = unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("fcntl lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("fcntl lock %s: %w", f.Name(), maillock.ErrLockTimeout)
		case <-timeAfterMs(sleep):
		}
		if sleep < 1000 {
			sleep *= 2
		}
	}
}
