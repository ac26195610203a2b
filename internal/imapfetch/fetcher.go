// Package imapfetch files the mail of an IMAP folder exactly once: each
// message fetched with BODY.PEEK[] in one pipelined UID FETCH, filed
// durably through the filer with internal/fetch's journal (a message's
// offset is its UID), and only then expunged, moved or remembered; a
// state file keeps the UIDVALIDITY and the UID below which all is done.
package imapfetch

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/fetch"
	"github.com/mfilter/mfilter/internal/filer"
	"github.com/mfilter/mfilter/internal/runprog"
	"github.com/mfilter/mfilter/internal/statelock"
)

// Fetcher files one IMAP folder.
type Fetcher struct {
	Settings *Settings
	Filer    *filer.Filer
	Writer   *deliver.Writer // the Filer's, for the journal's recovery checks
	StateDir string
	Host     string // this machine, in maildir names
	Runner   runprog.Runner
	Warn     func(string) // problems that do not stop the run
	Say      func(string) // what is happening (-v, --watch)
	// Serial, when set, is held while the fetcher files: sources
	// watched at once take turns with one filer.
	Serial sync.Locker
	// unilateral, when set, hears of the server's unilateral data (new
	// mail while idle).
	unilateral    *imapclient.UnilateralDataHandler
	warnedExpunge bool
}

// Report says what a run did.
type Report struct {
	Messages int   // filed
	Bytes    int64 // message bytes filed
	Wire     int64 // bytes over the connection, both ways
	Done     int   // expunged, moved or remembered
}

func (f *Fetcher) warn(format string, args ...any) {
	if f.Warn != nil {
		f.Warn(f.Settings.Describe() + ": " + fmt.Sprintf(format, args...))
	}
}

func (f *Fetcher) say(format string, args ...any) {
	if f.Say != nil {
		f.Say(f.Settings.Describe() + ": " + fmt.Sprintf(format, args...))
	}
}

// path is the state directory's file of this source with suffix.
func (f *Fetcher) path(suffix string) string {
	return filepath.Join(f.StateDir, "imap."+statelock.Name(f.Settings.Describe())+suffix)
}

// lock takes the source's state lock: one run at a time per source.
func (f *Fetcher) lock(ctx context.Context) (*statelock.Lock, error) {
	return statelock.Acquire(ctx, f.path(".lock"), "fetch-and-file "+f.Settings.Describe(), f.Settings.StateLock)
}

// Run connects, files what the folder holds, and acts on it as after:
// says. It returns nil only when every message it saw is filed and done
// with.
func (f *Fetcher) Run(ctx context.Context) (Report, error) {
	var rep Report
	lock, err := f.lock(ctx)
	if err != nil {
		return rep, err
	}
	defer lock.Release()
	conn, err := f.dial(ctx)
	if err != nil {
		return rep, err
	}
	defer conn.Close()
	err = f.cycle(ctx, conn, &rep)
	rep.Wire = conn.Wire()
	return rep, err
}

func (f *Fetcher) dial(ctx context.Context) (*Conn, error) {
	opts := imapclient.Options{UnilateralDataHandler: f.unilateral}
	f.say("connecting to %s", f.Settings.Host)
	conn, err := Dial(ctx, f.Settings, f.Runner, opts)
	if err == nil && conn.Compressed {
		f.say("the link is compressed (COMPRESS=DEFLATE)")
	}
	return conn, err
}

// claimName names a journal's UIDVALIDITY generation.
func claimName(validity uint32) string { return fmt.Sprintf("uidvalidity %d", validity) }

// claimValidity is the UIDVALIDITY a journal's claim names.
func claimValidity(claim string) (uint32, bool) {
	var v uint32
	if _, err := fmt.Sscanf(claim, "uidvalidity %d", &v); err != nil || v == 0 {
		return 0, false
	}
	return v, true
}

// cycle selects the folder and files what is new since the last cycle.
func (f *Fetcher) cycle(ctx context.Context, conn *Conn, rep *Report) error {
	if f.Serial != nil {
		f.Serial.Lock()
		defer f.Serial.Unlock()
	}
	s := f.Settings
	sel, err := conn.C.Select(s.Folder, &imap.SelectOptions{ReadOnly: s.After == AfterKeep}).Wait()
	if err != nil {
		return fmt.Errorf("select %s: %w", s.Folder, err)
	}
	g, err := f.openGeneration(sel.UIDValidity)
	if err != nil {
		return err
	}
	defer g.close()
	if g.st.Validity != sel.UIDValidity {
		if err := f.revalidate(ctx, conn, g, sel.UIDValidity); err != nil {
			return err
		}
	}
	ferr := f.fileNew(ctx, conn, g, sel, rep)
	if ferr != nil && conn.C.State() == imap.ConnStateLogout {
		return ferr // the link is gone: the next run finishes
	}
	return joinErr(ferr, f.finish(ctx, conn, g, rep))
}

func joinErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// generation is the state of one cycle: the state file, the key file
// and the journal of the messages being filed.
type generation struct {
	st   state
	keys *keyFile
	j    *fetch.Journal
}

func (g *generation) close() {
	if g.keys != nil {
		g.keys.close()
	}
	if g.j != nil {
		g.j.Close()
	}
}

// openGeneration reads the state, the keys and the journal an earlier
// run may have left.
func (f *Fetcher) openGeneration(validity uint32) (*generation, error) {
	g := &generation{}
	var err error
	if g.st, err = readState(f.path(".state")); err != nil {
		return nil, err
	}
	if g.keys, err = openKeys(f.path(".keys")); err != nil {
		return nil, err
	}
	if g.j, err = fetch.OpenJournal(f.path(".journal"), f.Writer, f.Host); err != nil {
		g.close()
		return nil, err
	}
	if g.st.Validity == 0 {
		// The first run, or one that a first run's kill left with a
		// journal: the UIDVALIDITY is recorded before anything is
		// filed, so that a renumbering before the next run is seen.
		if v, ok := claimValidity(g.j.Claim); ok {
			validity = v
		}
		g.st = state{Server: f.Settings.Host, Folder: f.Settings.Folder, Validity: validity, Next: 1}
		if err := writeState(f.path(".state"), g.st); err != nil {
			g.close()
			return nil, err
		}
	}
	if g.j.Claim != "" && g.j.Claim != claimName(g.st.Validity) {
		// Left by a run that recorded a new UIDVALIDITY after dealing
		// with the old one's messages (revalidate).
		if err := g.newJournal(f); err != nil {
			g.close()
			return nil, err
		}
	}
	if g.j.Claim == "" {
		if err := g.j.Claiming(claimName(g.st.Validity), fetch.NewClaimID()); err != nil {
			g.close()
			return nil, err
		}
	}
	return g, nil
}

// newJournal drops the journal and starts another for the state's
// UIDVALIDITY.
func (g *generation) newJournal(f *Fetcher) error {
	if err := g.j.Remove(); err != nil {
		return err
	}
	j, err := fetch.OpenJournal(f.path(".journal"), f.Writer, f.Host)
	if err != nil {
		return err
	}
	g.j = j
	return j.Claiming(claimName(g.st.Validity), fetch.NewClaimID())
}

// filedMark is the UID below which every message of the state's
// UIDVALIDITY is filed.
func (g *generation) filedMark() imap.UID {
	next := imap.UID(g.st.Next)
	if g.j.Claim == claimName(g.st.Validity) && imap.UID(g.j.Filed) > next {
		return imap.UID(g.j.Filed)
	}
	return next
}

// fileNew files the messages from the filed mark on, in one UID FETCH.
func (f *Fetcher) fileNew(ctx context.Context, conn *Conn, g *generation, sel *imap.SelectData, rep *Report) error {
	from := g.filedMark()
	if sel.NumMessages == 0 || (sel.UIDNext != 0 && sel.UIDNext <= from) {
		return nil
	}
	set := imap.UIDSet{{Start: from, Stop: 0}} // from:*
	cmd := conn.C.Fetch(set, fetchOptions(true))
	src := &stream{cmd: cmd, from: from, keys: g.keys, validity: g.st.Validity, skip: g.keys.found(g.st.Validity)}
	start := time.Now()
	sum, err := f.Filer.FileStream(ctx, src, &keyedJournal{Journal: g.j, keys: g.keys})
	cmd.Close()
	rep.Messages += sum.Delivered
	rep.Bytes += src.bytes
	if src.count > 0 {
		f.say("filed %d of %d messages (%d bytes) in %s", sum.Delivered, src.count, src.bytes, time.Since(start).Round(time.Millisecond))
	}
	return err
}

// keyedJournal makes the keys of a batch's messages durable before the
// batch: a key counts once its message is below the filed mark.
type keyedJournal struct {
	*fetch.Journal
	keys *keyFile
}

func (k *keyedJournal) Committing(start, end int64) error {
	if err := k.keys.sync(); err != nil {
		return err
	}
	return k.Journal.Committing(start, end)
}

// finish does the after: action to the messages filed but not yet done
// with, then records them done and drops the journal.
func (f *Fetcher) finish(ctx context.Context, conn *Conn, g *generation, rep *Report) error {
	mark := g.filedMark()
	if mark > imap.UID(g.st.Next) {
		set := imap.UIDSet{{Start: imap.UID(g.st.Next), Stop: mark - 1}}
		if err := f.after(conn, set); err != nil {
			return err
		}
		rep.Done += int(mark) - int(g.st.Next) // at most: UIDs have gaps
		g.st.Next = uint32(mark)
		if err := writeState(f.path(".state"), g.st); err != nil {
			return err
		}
	}
	if f.Settings.After != AfterKeep {
		if err := g.keys.reset(); err != nil {
			return err
		}
	}
	err := g.j.Remove()
	g.j = nil
	return err
}
