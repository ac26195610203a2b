package deliver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The public sequences of an MH folder that hold flags, as nmh names
// them (Unseen-Sequence: unseen in the usual profile; mark -sequence
// flagged, replied).
const (
	mhUnseen  = "unseen"
	mhFlagged = "flagged"
	mhReplied = "replied"
)

// mhSeqFile is where an MH folder keeps its public sequences.
const mhSeqFile = ".mh_sequences"

// maxMHSeqSize bounds the .mh_sequences file read (nmh's are a few
// hundred bytes; one with a range per message of a huge folder stays far
// below this).
const maxMHSeqSize = 16 << 20

// MHSequences are the public sequences of an MH folder: name -> the
// ranges of message numbers in it.
type MHSequences map[string][][2]uint64

// ReadMHSequences reads the .mh_sequences of the MH folder dir; a
// missing file is no sequences.
func ReadMHSequences(dir string) (MHSequences, error) {
	data, err := readBounded(filepath.Join(dir, mhSeqFile), maxMHSeqSize)
	if errors.Is(err, fs.ErrNotExist) {
		return MHSequences{}, nil
	}
	if err != nil {
		return nil, err
	}
	return parseMHSequences(data), nil
}

func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(data)) > limit {
		err = fmt.Errorf("%s is over %d bytes", path, limit)
	}
	return data, err
}

// parseMHSequences reads "name: 1 3-5 8" lines; a line that starts with
// white space continues the one before (the file is read as a header).
func parseMHSequences(data []byte) MHSequences {
	out := MHSequences{}
	for _, l := range mhSeqLines(data) {
		name, list, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		name = strings.TrimSpace(name)
		for _, tok := range strings.Fields(list) {
			a, b, isRange := strings.Cut(tok, "-")
			lo, err1 := strconv.ParseUint(a, 10, 64)
			hi, err2 := lo, error(nil)
			if isRange {
				hi, err2 = strconv.ParseUint(b, 10, 64)
			}
			if err1 == nil && err2 == nil && lo <= hi {
				out[name] = append(out[name], [2]uint64{lo, hi})
			}
		}
	}
	return out
}

// mhSeqLines is data's logical lines, continuations joined.
func mhSeqLines(data []byte) []string {
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if l != "" && (l[0] == ' ' || l[0] == '\t') && len(out) > 0 {
			out[len(out)-1] += " " + l
			continue
		}
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// Has reports whether message num is in sequence seq.
func (s MHSequences) Has(seq string, num uint64) bool {
	for _, r := range s[seq] {
		if num >= r[0] && num <= r[1] {
			return true
		}
	}
	return false
}

// Flags are the flags of message num (its file name) as the sequences
// hold them: seen unless in unseen, flagged and answered when in
// flagged and replied. An MH folder has no "new" apart from unseen, so a
// seen message is old too. The flags are Exact: what is not set is not.
func (s MHSequences) Flags(num string) Flags {
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return Flags{Exact: true}
	}
	seen := !s.Has(mhUnseen, n)
	return Flags{
		Seen: seen, Old: seen, Exact: true,
		Flagged:  s.Has(mhFlagged, n),
		Answered: s.Has(mhReplied, n),
	}
}

// mhSeqAdds are the sequences the flags f put a new MH message in:
// unseen only when f are the message's whole state (Exact; procmail adds
// nothing to a sequence, and neither does a plain delivery).
func mhSeqAdds(f Flags) []string {
	var out []string
	if f.Exact && !f.Seen {
		out = append(out, mhUnseen)
	}
	if f.Flagged {
		out = append(out, mhFlagged)
	}
	if f.Answered {
		out = append(out, mhReplied)
	}
	return out
}

// mhSeqBefore writes the MH messages of items that carry flags into
// their folders' sequences under the numbers they are about to get,
// before they get them: a crash right after a link must not leave a
// message without its flags (a rerun finds the message and does not
// deliver it again). The numbers are counted as linkMH counts them, from
// the highest number now, which seeds mh for linkMH. It returns the
// numbers announced; mhSeqAfter corrects those that came out otherwise.
// A sequence that cannot be written costs the messages their flags, not
// their delivery: a warning.
func (t *Txn) mhSeqBefore(items []*Delivery, mh map[dirRef]string) map[*Delivery]uint64 {
	flagged := map[dirRef]bool{}
	for _, d := range items {
		if d.Folder.Kind == MH && d.Err == nil && len(mhSeqAdds(d.opts.Flags)) > 0 {
			flagged[dirRef{d.fsys, d.Folder.Path}] = true
		}
	}
	if len(flagged) == 0 {
		return nil
	}
	announced := map[*Delivery]uint64{}
	adds := map[dirRef]map[string][]uint64{}
	next := map[dirRef]string{}
	for _, d := range items {
		ref := dirRef{d.fsys, d.Folder.Path}
		if d.Folder.Kind != MH || d.Err != nil || !flagged[ref] || (d.tmp == "" && !d.anon) {
			continue
		}
		n, ok := next[ref]
		if !ok {
			high, err := highestMH(d.fsys, d.Folder.Path)
			if err != nil {
				t.w.warn("sequences of %s: %v", d.Folder.Path, err)
				flagged[ref] = false
				continue
			}
			mh[ref], n = high, high
		}
		n = incDecimal(n)
		next[ref] = n
		num, err := strconv.ParseUint(n, 10, 64)
		seqs := mhSeqAdds(d.opts.Flags)
		if err != nil || len(seqs) == 0 {
			continue // a number past 2^64 is left out of sequences
		}
		announced[d] = num
		if adds[ref] == nil {
			adds[ref] = map[string][]uint64{}
		}
		for _, s := range seqs {
			adds[ref][s] = append(adds[ref][s], num)
		}
	}
	for ref, a := range adds {
		err := updateMHSequences(t.ctx, ref.fsys, ref.dir, t.w.opts.Lock.Timeout, func(old []byte) []byte { return mhSeqAdd(old, a) })
		if err != nil {
			t.w.warn("sequences of %s: %v", ref.dir, err)
		}
	}
	return announced
}

// mhSeqAfter moves the messages that did not get the number mhSeqBefore
// announced (another process took it, or their group failed) to their
// real numbers in the sequences, or out of them.
func (t *Txn) mhSeqAfter(announced map[*Delivery]uint64) {
	type fix struct {
		drop []uint64
		adds map[string][]uint64
	}
	fixes := map[dirRef]*fix{}
	for d, num := range announced {
		actual, err := strconv.ParseUint(filepath.Base(d.Path), 10, 64)
		ok := d.linked && d.Err == nil && err == nil
		if ok && actual == num {
			continue
		}
		ref := dirRef{d.fsys, d.Folder.Path}
		fx := fixes[ref]
		if fx == nil {
			fx = &fix{adds: map[string][]uint64{}}
			fixes[ref] = fx
		}
		fx.drop = append(fx.drop, num)
		if ok {
			for _, s := range mhSeqAdds(d.opts.Flags) {
				fx.adds[s] = append(fx.adds[s], actual)
			}
		}
	}
	for ref, fx := range fixes {
		err := updateMHSequences(t.ctx, ref.fsys, ref.dir, t.w.opts.Lock.Timeout, func(old []byte) []byte {
			return mhSeqAdd(mhSeqRemove(old, fx.drop), fx.adds)
		})
		if err != nil {
			t.w.warn("sequences of %s: %v", ref.dir, err)
		}
	}
}

// RemoveFromMHSequences takes the messages nums, gone from the MH folder
// dir, out of its sequences, so that a message that gets one of their
// numbers later does not inherit their flags. A folder without
// .mh_sequences is left without one.
func RemoveFromMHSequences(ctx context.Context, dir string, nums []uint64, wait time.Duration) error {
	if _, err := os.Lstat(filepath.Join(dir, mhSeqFile)); errors.Is(err, fs.ErrNotExist) || len(nums) == 0 {
		return nil
	}
	return updateMHSequences(ctx, osFS{}, dir, wait, func(old []byte) []byte { return mhSeqRemove(old, nums) })
}

// updateMHSequences rewrites the .mh_sequences of dir through edit. Like
// nmh it writes the file in place under an fcntl lock (a rename would
// lose what nmh writes to the file it has open), and fsyncs it.
func updateMHSequences(ctx context.Context, fsys fileSystem, dir string, wait time.Duration, edit func([]byte) []byte) error {
	f, err := fsys.OpenFile(filepath.Join(dir, mhSeqFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := lockWait(ctx, f, wait); err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() > maxMHSeqSize {
		return fmt.Errorf("%s is over %d bytes", f.Name(), maxMHSeqSize)
	}
	old := make([]byte, st.Size())
	if _, err := f.ReadAt(old, 0); err != nil && err != io.EOF {
		return err
	}
	data := edit(old)
	if bytes.Equal(data, old) {
		return nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := writeAll(f, data); err != nil {
		return err
	}
	if err := f.Truncate(int64(len(data))); err != nil {
		return err
	}
	return f.Sync()
}

// lockWait takes an fcntl write lock on the whole of f (nmh's data
// locking), retrying until wait (10s when 0) has passed.
func lockWait(ctx context.Context, f file, wait time.Duration) error {
	if wait <= 0 {
		wait = 10 * time.Second
	}
	deadline := time.Now().Add(wait)
	sleep := time.Millisecond
	for {
		lk := unix.Flock_t{Type: unix.F_WRLCK}
		err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lock %s: timed out", f.Name())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lock %s: canceled", f.Name())
		case <-time.After(sleep):
		}
		sleep = min(2*sleep, 500*time.Millisecond)
	}
}

// mhSeqAdd is the sequences file old with numbers added: the lines of
// the sequences changed are written anew (ranges merged), the others
// kept as they were, new sequences appended.
func mhSeqAdd(old []byte, adds map[string][]uint64) []byte {
	seqs := parseMHSequences(old)
	var b bytes.Buffer
	done := map[string]bool{}
	for _, l := range mhSeqLines(old) {
		name, _, ok := strings.Cut(l, ":")
		name = strings.TrimSpace(name)
		if ns, add := adds[name]; ok && add && !done[name] {
			done[name] = true
			writeMHSeq(&b, name, seqs[name], ns)
			continue
		}
		if ok && done[name] {
			continue // a second line of the same name, merged into the first
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	names := make([]string, 0, len(adds))
	for name := range adds {
		if !done[name] {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		writeMHSeq(&b, name, nil, adds[name])
	}
	return b.Bytes()
}

// writeMHSeq writes the line of sequence name: its ranges with ns added,
// merged and in order, as nmh writes them ("1-3 5").
func writeMHSeq(b *bytes.Buffer, name string, ranges [][2]uint64, ns []uint64) {
	for _, n := range ns {
		ranges = append(ranges, [2]uint64{n, n})
	}
	slices.SortFunc(ranges, func(x, y [2]uint64) int {
		switch {
		case x[0] < y[0]:
			return -1
		case x[0] > y[0]:
			return 1
		}
		return 0
	})
	var merged [][2]uint64
	for _, r := range ranges {
		if k := len(merged) - 1; k >= 0 && r[0] <= merged[k][1]+1 {
			merged[k][1] = max(merged[k][1], r[1])
			continue
		}
		merged = append(merged, r)
	}
	b.WriteString(name + ":")
	for _, r := range merged {
		b.WriteString(" " + strconv.FormatUint(r[0], 10))
		if r[1] != r[0] {
			b.WriteString("-" + strconv.FormatUint(r[1], 10))
		}
	}
	b.WriteByte('\n')
}

// mhSeqRemove is the sequences file old without the numbers nums: the
// lines that held one are written anew (dropped when they are left
// empty), the others kept as they were.
func mhSeqRemove(old []byte, nums []uint64) []byte {
	nums = slices.Clone(nums)
	slices.Sort(nums)
	var b bytes.Buffer
	for _, l := range mhSeqLines(old) {
		name, _, ok := strings.Cut(l, ":")
		if !ok {
			b.WriteString(l + "\n")
			continue
		}
		var kept [][2]uint64
		changed := false
		for _, r := range parseMHSequences([]byte(l))[strings.TrimSpace(name)] {
			i, _ := slices.BinarySearch(nums, r[0])
			for ; i < len(nums) && nums[i] <= r[1]; i++ {
				changed = true
				if nums[i] > r[0] {
					kept = append(kept, [2]uint64{r[0], nums[i] - 1})
				}
				if nums[i] == r[1] {
					r[0] = 1 // the range is used up
					r[1] = 0
					break
				}
				r[0] = nums[i] + 1
			}
			if r[0] <= r[1] {
				kept = append(kept, r)
			}
		}
		switch {
		case !changed:
			b.WriteString(l + "\n")
		case len(kept) > 0:
			writeMHSeq(&b, strings.TrimSpace(name), kept, nil)
		}
	}
	return b.Bytes()
}
