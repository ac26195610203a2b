package fetch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/filer"
	"github.com/mfilter/mfilter/internal/mailfmt"
	"github.com/mfilter/mfilter/internal/statelock"
	"github.com/mfilter/mfilter/remote"
)

// Fetcher claims, files and removes spool files.
type Fetcher struct {
	Spool    remote.Spool
	Filer    *filer.Filer
	Writer   *deliver.Writer // the Filer's, for recovery checks
	StateDir string          // where journals live
	Client   string          // this machine, in claim names
	Host     string          // for maildir file names
	Berkeley bool
	Warn     func(string)
	// LockWait is how long Run waits for another run that holds the
	// spool's state lock (<= 0: statelock.DefaultWait).
	LockWait time.Duration
	// Progress, when set, is called as bytes arrive and messages are
	// filed.
	Progress func(Progress)
	// afterRead is a test hook called with the number of bytes read from
	// the stream so far.
	afterRead func(int64)
}

// Progress is the state of a transfer.
type Progress struct {
	Claim    string
	Bytes    int64 // decompressed bytes read
	Wire     int64 // bytes over the connection
	Size     int64
	Messages int
}

// Report says what a run did.
type Report struct {
	Files    int   // claimed files finished (filed and removed)
	Messages int   // messages filed
	Bytes    int64 // spool bytes filed
	Wire     int64 // bytes that crossed the connection
	Codec    string
}

func (f *Fetcher) warn(format string, args ...any) {
	if f.Warn != nil {
		f.Warn(fmt.Sprintf(format, args...))
	}
}

// journalPath is where the journal of claim name lives: one file per
// claim, named after the spool and the claim.
func (f *Fetcher) journalPath(name string) string {
	return filepath.Join(f.StateDir, safeName(f.Spool.Describe())+"."+safeName(filepath.Base(name))+".journal")
}

// lockPath is the state lock of the spool: the journals' name, .lock.
func (f *Fetcher) lockPath() string {
	return filepath.Join(f.StateDir, safeName(f.Spool.Describe())+".lock")
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// Run finishes what earlier runs left (claimed files, journals), then
// claims the spool once and files it. It returns nil only when every byte
// it claimed is filed and its claimed file removed.
func (f *Fetcher) Run(ctx context.Context) (Report, error) {
	var rep Report
	if err := os.MkdirAll(f.StateDir, 0o700); err != nil {
		return rep, fmt.Errorf("state directory: %w", err)
	}
	// One run at a time per spool and state directory, from the
	// listing of the journals to the last removal: a second run that
	// listed them while the first was claiming would file the first's
	// claim again, and two runs recovering one claim would each file it.
	lock, err := statelock.Acquire(ctx, f.lockPath(), "fetch-and-file "+f.Spool.Describe(), f.LockWait)
	if err != nil {
		return rep, err
	}
	defer lock.Release()
	journals, err := filepath.Glob(filepath.Join(f.StateDir, safeName(f.Spool.Describe())+".*.journal"))
	if err != nil {
		return rep, err
	}
	claimed, err := f.Spool.Claimed(ctx)
	if err != nil {
		return rep, fmt.Errorf("list claimed files: %w", err)
	}
	handled, err := f.resume(ctx, journals, claimed, &rep)
	if err != nil {
		return rep, err
	}
	if err := f.adopt(ctx, claimed, handled, &rep); err != nil {
		return rep, err
	}
	return rep, f.claim(ctx, &rep)
}

// resume finishes the claims whose journals are in paths, as far as they
// are still on the server (claimed); it returns the claims it handled.
func (f *Fetcher) resume(ctx context.Context, paths []string, claimed []remote.ClaimedFile, rep *Report) (map[string]bool, error) {
	onServer := make(map[string]int64)
	for _, c := range claimed {
		onServer[c.Name] = c.Size
	}
	handled := make(map[string]bool)
	for _, jp := range paths {
		j, err := OpenJournal(jp, f.Writer, f.Host)
		if err != nil {
			return handled, err
		}
		if j.Claim == "" {
			j.Remove() // never got as far as naming a claim
			continue
		}
		handled[j.Claim] = true
		size, there := onServer[j.Claim]
		if !there {
			// Claimed file gone: either the claim's rename never
			// happened, or it was removed after being filed.
			if j.Filed > 0 && !j.Completed {
				f.warn("%s disappeared from the server before all of it was filed (filed up to byte %d); someone removed it", j.Claim, j.Filed)
			}
			j.Remove()
			continue
		}
		if err := f.finish(ctx, j, remote.ClaimedFile{Name: j.Claim, Size: size}, rep); err != nil {
			return handled, err
		}
	}
	return handled, nil
}

// adopt files this client's claimed files that have no journal here (the
// state directory was lost): from the start, with fresh names.
func (f *Fetcher) adopt(ctx context.Context, claimed []remote.ClaimedFile, handled map[string]bool, rep *Report) error {
	for _, c := range claimed {
		if handled[c.Name] {
			continue
		}
		if remote.ClaimClient(f.Spool.Path(), c.Name) != remote.SanitizeClient(f.Client) {
			f.warn("leaving %s alone: another client (%s) claimed it", c.Name, remote.ClaimClient(f.Spool.Path(), c.Name))
			continue
		}
		f.warn("%s has no journal here; filing it from the start", c.Name)
		j, err := OpenJournal(f.journalPath(c.Name), f.Writer, f.Host)
		if err != nil {
			return err
		}
		if err := j.Claiming(c.Name, newClaimID()); err != nil {
			return err
		}
		if err := j.Claimed(c.Size); err != nil {
			return err
		}
		if err := f.finish(ctx, j, c, rep); err != nil {
			return err
		}
	}
	return nil
}

// claim claims the spool anew and files the claim.
func (f *Fetcher) claim(ctx context.Context, rep *Report) error {
	name := remote.NewClaimName(f.Spool.Path(), f.Client)
	j, err := OpenJournal(f.journalPath(name), f.Writer, f.Host)
	if err != nil {
		return err
	}
	if err := j.Claiming(name, newClaimID()); err != nil {
		j.Close()
		return err
	}
	c, err := f.Spool.Claim(ctx, name)
	if err != nil {
		j.Close()
		return fmt.Errorf("claim %s: %w", f.Spool.Describe(), err)
	}
	if c == nil {
		j.Remove()
		return nil // no mail
	}
	if err := j.Claimed(c.Size); err != nil {
		j.Close()
		return err
	}
	return f.finish(ctx, j, *c, rep)
}

// newClaimID is the time and random part of a claim's maildir names.
func newClaimID() string {
	var b [8]byte
	rand.Read(b[:])
	return strconv.FormatInt(time.Now().Unix(), 10) + "R" + hex.EncodeToString(b[:])
}

// claimTime is when the claim was made, from its id: the date of the
// From_ lines generated for its messages, the same in every run.
func (j *Journal) claimTime() time.Time {
	sec, _, _ := strings.Cut(j.id, "R")
	n, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return time.Unix(0, 0)
	}
	return time.Unix(n, 0)
}

// finish files claimed file c from where its journal says, then removes
// it, looping while it grows (a writer that opened the spool before the
// rename may still append to it).
func (f *Fetcher) finish(ctx context.Context, j *Journal, c remote.ClaimedFile, rep *Report) error {
	defer j.Close()
	size := max(c.Size, j.Size)
	if j.Completed && size > j.Size {
		// It grew after its completion was recorded, and the run that
		// saw it grow was killed: late mail, or a copied claim settled
		// with the rest of its spool. The rest is still to be filed.
		j.Completed = false
	}
	for {
		if !j.Completed && j.Filed < size {
			n, err := f.file(ctx, j, c, size, rep)
			rep.Bytes += n
			if err != nil {
				return err
			}
		}
		if j.Filed < size {
			return fmt.Errorf("%s: filed %d of %d bytes", c.Name, j.Filed, size)
		}
		if !j.Completed {
			if err := j.Complete(size); err != nil {
				return err
			}
		}
		grown, err := f.Spool.Remove(ctx, c.Name, size)
		if err != nil {
			return fmt.Errorf("remove %s: %w", c.Name, err)
		}
		if grown == 0 {
			rep.Files++
			return j.Remove()
		}
		// Late bytes: file them too.
		f.warn("%s grew from %d to %d bytes after it was claimed; filing the rest", c.Name, size, grown)
		j.Completed = false
		size = grown
	}
}

// file streams c from the journal's committed offset and files what
// arrives; it returns the bytes read.
func (f *Fetcher) file(ctx context.Context, j *Journal, c remote.ClaimedFile, size int64, rep *Report) (int64, error) {
	base := j.Filed
	st, err := f.Spool.Open(ctx, c, base)
	if err != nil {
		return 0, err
	}
	rep.Codec = st.Codec
	r := &verifyReader{r: st, want: size - base, f: f, j: j, st: st, c: c, size: size}
	src := &offsetSplitter{
		s:         mailfmt.NewSplitter(r, mailfmt.SplitOptions{Now: j.claimTime, Berkeley: f.Berkeley}),
		base:      base,
		onMessage: func() { r.msgs++ },
	}
	sum, ferr := f.Filer.FileStream(ctx, src, j)
	rep.Messages += sum.Delivered
	cerr := st.Close()
	rep.Wire += st.Wire()
	if ferr != nil {
		return r.n, ferr
	}
	if cerr != nil {
		return r.n, cerr
	}
	// The whole stream was read and every message in it filed: what is
	// left after the last message (blank lines, or nothing but blank
	// lines) is done too.
	if err := j.Committed(base + r.n); err != nil {
		return r.n, err
	}
	return r.n, nil
}

// offsetSplitter gives the Splitter's offsets in the claimed file.
type offsetSplitter struct {
	s         *mailfmt.Splitter
	base      int64
	onMessage func()
}

func (o *offsetSplitter) Next() ([]byte, error) {
	m, err := o.s.Next()
	if err == nil && o.onMessage != nil {
		o.onMessage()
	}
	return m, err
}
func (o *offsetSplitter) Offsets() (int64, int64) {
	a, b := o.s.Offsets()
	return o.base + a, o.base + b
}

// verifyReader turns an early end of the stream into an error, so that a
// message cut short by a dropped link is never filed as if it were whole.
type verifyReader struct {
	r    io.Reader
	want int64
	n    int64
	f    *Fetcher
	j    *Journal
	st   *remote.Stream
	c    remote.ClaimedFile
	size int64
	msgs int
}

// ErrShortTransfer is returned when the stream ends before the file does.
var ErrShortTransfer = errors.New("the transfer ended before the end of the file")

func (v *verifyReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.n += int64(n)
	if v.f.afterRead != nil {
		v.f.afterRead(v.n)
	}
	if v.f.Progress != nil && n > 0 {
		v.f.Progress(Progress{Claim: v.c.Name, Bytes: v.j.Filed + v.n, Wire: v.st.Wire(), Size: v.size, Messages: v.msgs})
	}
	if err == io.EOF && v.n < v.want {
		return n, fmt.Errorf("%w: got %d of %d bytes", ErrShortTransfer, v.n, v.want)
	}
	if err != nil && err != io.EOF {
		return n, fmt.Errorf("transfer: %w", err)
	}
	return n, err
}

// NewClaimID is a fresh random part for a journal's maildir names.
func NewClaimID() string { return newClaimID() }
