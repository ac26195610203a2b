// Package refile runs mfilter refile: it files the messages already in a
// maildir, an MH folder or an mbox file again by the rules, and takes
// the ones that go elsewhere out of the source, exactly once across
// crashes. Messages whose only destination is the source stay
// untouched.
//
// The moved messages are delivered through the filer as mfilter file
// delivers them, with a fetch.Journal (delivery recovery) keyed by each
// message's place in the source: its index in the list of the folder
// made when the run began, or its byte offset in the mbox. Beside it a
// plan file records which messages leave the source. Only once a
// message's copies are durable (the journal's committed record) is it
// removed from a folder; an mbox is rewritten, under its locks, only
// once every moved message is durable, through a temporary file that
// replaces it.
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
	"strings"
	"sync"
	"time"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/fetch"
	"github.com/mfilter/mfilter/internal/filer"
	"github.com/mfilter/mfilter/internal/maillock"
	"github.com/mfilter/mfilter/internal/statelock"
)

// Options are what a refile runs with.
type Options struct {
	// Filer delivers; its Router (the rules) decides where each message
	// goes. Refile routes through it and leaves out the source.
	Filer *filer.Filer
	// StateDir holds the journals of unfinished runs.
	StateDir string
	Host     string
	// DryRun changes nothing: it only counts where messages would go.
	DryRun bool
	// Verbose lists each message with where it goes.
	Verbose bool
	// Programs lets the rules' pipes and forwards run; without it a
	// message the rules give to a program stays in the source.
	Programs bool
	// Out receives the listing of Verbose.
	Out  io.Writer
	Warn func(string)
	// Lock is how long to wait for an mbox source's locks.
	Lock maillock.LockOptions
	// StateLockWait is how long to wait for another run on the same
	// source.
	StateLockWait time.Duration
	// Berkeley and ReadMboxrd are how an mbox source is split.
	Berkeley, ReadMboxrd bool
}

// Kinds of sources.
const (
	KindMaildir = "maildir"
	KindMH      = "mh"
	KindMbox    = "mbox"
)

// Report is what a refile of one source did (or, dry, would do).
type Report struct {
	Source string // as named
	Kind   string
	// Moved messages left the source; Copied were copied elsewhere and
	// stay; Stayed stay untouched; Gone vanished from the source before
	// they were read (removed by another program).
	Moved, Copied, Stayed, Gone int
	// Resumed: an unfinished run was found and finished.
	Resumed bool
	// Table counts messages by destination: the folders (as the rules
	// name them) joined with ", ".
	Table map[string]int
}

// Detect says what kind of source path is: a regular file is an mbox, a
// directory with cur/ and new/ a maildir, another directory an MH folder.
func Detect(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	switch {
	case st.Mode().IsRegular():
		return KindMbox, nil
	case st.IsDir():
		c, errc := os.Stat(filepath.Join(path, "cur"))
		n, errn := os.Stat(filepath.Join(path, "new"))
		if errc == nil && errn == nil && c.IsDir() && n.IsDir() {
			return KindMaildir, nil
		}
		return KindMH, nil
	}
	return "", fmt.Errorf("%s is neither a file nor a directory", path)
}

// run is the refile of one source.
type run struct {
	o       *Options
	name    string // as named
	abs     string
	kind    string
	srcStat os.FileInfo
	ctx     context.Context
	rep     *Report
	j       *fetch.Journal
	plan    *planFile
	claimed time.Time

	mu      sync.Mutex
	same    map[string]bool     // folder path -> is the source
	stash   map[*byte]decision  // routed in Next, for Route
	pending map[int64]*movedMsg // moved, not yet recorded
	locate  map[string]string   // maildir: unique -> name now (nil: not listed)
	srcKW   map[byte]string     // maildir: the source's keyword letters
	mhSeqs  deliver.MHSequences // MH: the source's sequences
	finCh   chan int64          // batches durable up to an offset, to finish
	finDone chan struct{}
	finErr  error
	outMu   sync.Mutex
}

// Run refiles source.
func Run(ctx context.Context, o *Options, source string) (*Report, error) {
	kind, err := Detect(source)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(source)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, err
	}
	r := &run{
		o: o, name: source, abs: abs, kind: kind, srcStat: st, ctx: ctx,
		rep:     &Report{Source: source, Kind: kind, Table: map[string]int{}},
		same:    map[string]bool{},
		stash:   map[*byte]decision{},
		pending: map[int64]*movedMsg{},
	}
	if o.DryRun {
		return r.rep, r.dryRun(ctx)
	}
	if o.StateDir == "" {
		return r.rep, errors.New("no state directory: set --state-dir, XDG_STATE_HOME or HOME")
	}
	sum := sha256.Sum256([]byte(abs))
	key := "refile-" + statelock.Name(filepath.Base(abs)) + "-" + hex.EncodeToString(sum[:6])
	lock, err := statelock.Acquire(ctx, filepath.Join(o.StateDir, key+".lock"), "mfilter refile "+abs, o.StateLockWait)
	if err != nil {
		return r.rep, err
	}
	defer lock.Release()
	jpath := filepath.Join(o.StateDir, key+".journal")
	if r.plan, err = openPlan(filepath.Join(o.StateDir, key+".plan")); err != nil {
		return r.rep, err
	}
	if r.plan.done || (r.plan.began && (r.plan.Source != abs || r.plan.Kind != kind)) {
		// A finished run that did not get to remove its state, or
		// the state of something else that had this name.
		if err := removeJournal(jpath); err != nil {
			r.plan.close()
			return r.rep, err
		}
		if err := r.plan.remove(); err != nil {
			return r.rep, err
		}
		if r.plan, err = openPlan(r.plan.path); err != nil {
			return r.rep, err
		}
	}
	if !r.plan.began {
		// The journal is only ever made after the plan: one without
		// a plan is left from state removed by hand.
		if err := removeJournal(jpath); err != nil {
			r.plan.close()
			return r.rep, err
		}
	} else {
		r.rep.Resumed = true
	}
	if kind == KindMbox {
		err = r.mbox(ctx, jpath)
	} else {
		err = r.folder(ctx, jpath)
	}
	return r.rep, err
}

func removeJournal(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// openJournal opens the delivery journal and starts it for the plan's
// run when it is new; headLen and headSum identify an mbox.
func (r *run) openJournal(jpath string, headLen int64, headSum string) error {
	j, err := fetch.OpenJournal(jpath, r.o.Filer.Writer, r.o.Host)
	if err != nil {
		return err
	}
	if j.Claim == "" {
		if err := j.ClaimingFile(r.abs, r.plan.ID, headLen, headSum); err != nil {
			j.Close()
			return err
		}
	}
	r.j = j
	r.claimed = j.ClaimTime()
	return nil
}

// finishState removes the state once the source holds only what stays.
func (r *run) finishState() error {
	if err := r.plan.add(&planRecord{Op: "done"}); err != nil {
		return err
	}
	if err := r.j.Remove(); err != nil {
		return err
	}
	return r.plan.remove()
}

// fileRest files the messages of src through the filer, routed by r.
func (r *run) fileRest(ctx context.Context, src filer.OffsetSource) error {
	f := *r.o.Filer
	f.Router = r
	f.LocalInput = true
	r.startFinisher()
	_, err := f.FileStream(ctx, src, &journal{Journal: r.j, r: r})
	return errors.Join(err, r.waitFinisher())
}

// decision is where one message goes.
type decision struct {
	plan  filer.Plan
	err   error
	stays bool
	keep  bool
	to    string
}

// classify routes msg (the message at offset k, named rel in a folder)
// and leaves the source out of its plan.
func (r *run) classify(ctx context.Context, msg []byte) decision {
	p, err := r.o.Filer.Router.Route(ctx, msg)
	if err != nil {
		return decision{err: err, to: "(error)"}
	}
	var steps []filer.Step
	for _, f := range p.Folders {
		steps = append(steps, filer.Step{Kind: filer.StepFolder, Folder: f})
	}
	steps = append(steps, p.Steps...)
	var d decision
	var out []filer.Step
	var labels []string
	program, moves := false, false
	for _, st := range steps {
		switch st.Kind {
		case filer.StepFolder:
			if st.Folder.Kind != deliver.Discard && r.isSource(st.Folder.Path) {
				d.keep = true
				labels = append(labels, r.name)
				continue
			}
			labels = append(labels, st.Folder.Name)
			moves = true
		case filer.StepPipe, filer.StepForward:
			program = true
			mark := "| "
			if st.Kind == filer.StepForward {
				mark = "! "
			}
			labels = append(labels, mark+strings.Join(st.Argv, " "))
			moves = true
		case filer.StepDiscard:
			labels = append(labels, "(discard)")
		}
		out = append(out, st)
	}
	d.to = strings.Join(labels, ", ")
	switch {
	case program && !r.o.Programs:
		d.stays = true
		d.to = r.name + " (the rules run a program: --programs)"
	case len(out) == 0:
		d.stays = true
		if d.to == "" {
			d.to = r.name
		}
	case d.keep && !moves:
		d.stays = true // kept, and otherwise only discarded
	}
	if d.stays {
		if p.OnFailed != nil {
			p.OnFailed()
		}
		return d
	}
	d.plan = filer.Plan{Steps: out, Logs: p.Logs, Warnings: p.Warnings, OnDelivered: p.OnDelivered, OnFailed: p.OnFailed}
	return d
}

// isSource reports whether the folder at path is the source.
func (r *run) isSource(path string) bool {
	r.mu.Lock()
	same, ok := r.same[path]
	r.mu.Unlock()
	if ok {
		return same
	}
	st, err := os.Stat(path)
	same = err == nil && os.SameFile(st, r.srcStat)
	r.mu.Lock()
	r.same[path] = same
	r.mu.Unlock()
	return same
}

// decided counts d for the report and the listing.
func (r *run) decided(d decision, what string) {
	r.mu.Lock()
	switch {
	case d.stays:
		r.rep.Stayed++
	case d.keep:
		r.rep.Copied++
	case d.err == nil:
		r.rep.Moved++
	}
	r.rep.Table[d.to]++
	r.mu.Unlock()
	if r.o.Verbose && r.o.Out != nil {
		r.outMu.Lock()
		fmt.Fprintf(r.o.Out, "%s -> %s\n", what, d.to)
		r.outMu.Unlock()
	}
}

// note keeps d for Route, and the moved message m for the next
// committing record.
func (r *run) note(msg []byte, d decision, m *movedMsg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stash[&msg[0]] = d
	if d.err == nil {
		m.Keep = d.keep
		r.pending[m.K] = m
	}
}

// carryFlags gives the folder steps of d the flags the message has in
// the source (src), joined with those the rules set, so that each copy
// is written once, in its final place, with them: a maildir copy in
// cur/ with its info (or new/), an MH copy in its sequences, an mbox
// copy with Status, X-Status and X-Keywords fields. Those fields are put
// in the message here rather than left to the writer, so that a rerun
// after a crash looks for the bytes that were written. An mbox message
// that goes to an mbox keeps its bytes, fields and all, unless the rules
// set flags.
func (r *run) carryFlags(d *decision, msg []byte, src deliver.Flags) {
	for i := range d.plan.Steps {
		st := &d.plan.Steps[i]
		if st.Kind != filer.StepFolder {
			continue
		}
		switch st.Folder.Kind {
		case deliver.Maildir, deliver.MH:
			st.Flags = src.Join(st.Flags)
		case deliver.Mbox:
			if r.kind == KindMbox && st.Flags.IsZero() {
				continue
			}
			body := st.Msg
			if body == nil {
				body = msg
			}
			st.Msg, st.Flags = deliver.WithMboxFlags(body, src.Join(st.Flags)), deliver.Flags{}
		}
	}
}

// Route implements filer.Router: the plan classify made in Next.
func (r *run) Route(ctx context.Context, msg []byte) (filer.Plan, error) {
	if len(msg) > 0 {
		r.mu.Lock()
		d, ok := r.stash[&msg[0]]
		delete(r.stash, &msg[0])
		r.mu.Unlock()
		if ok {
			return d.plan, d.err
		}
	}
	// Not read through the source (never, today): route it again.
	d := r.classify(ctx, msg)
	if d.err == nil && d.stays {
		return filer.Plan{Steps: []filer.Step{{Kind: filer.StepDiscard}}}, errors.New("refile: a message read elsewhere")
	}
	return d.plan, d.err
}

// journal is the delivery journal with the source's records added: the
// messages of a batch that leave the source are recorded before the
// batch becomes visible, and once it is durable (maildir, MH) the source
// loses them.
type journal struct {
	*fetch.Journal
	r *run
}

func (j *journal) Committing(start, end int64) error {
	r := j.r
	r.mu.Lock()
	var msgs []*movedMsg
	for k, m := range r.pending {
		if k >= start && k < end {
			msgs = append(msgs, m)
			delete(r.pending, k)
		}
	}
	r.mu.Unlock()
	if len(msgs) > 0 {
		sort.Slice(msgs, func(a, b int) bool { return msgs[a].K < msgs[b].K })
		r.mu.Lock()
		err := r.plan.add(&planRecord{Op: "moving", Msgs: msgs})
		r.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return j.Journal.Committing(start, end)
}

// Committed hands the messages before end, now durably filed, to the
// finisher: removing them from the source goes on beside the filing of
// the next batches.
func (j *journal) Committed(end int64) error {
	if err := j.Journal.Committed(end); err != nil {
		return err
	}
	r := j.r
	r.mu.Lock()
	err := r.finErr
	r.mu.Unlock()
	if err != nil {
		return err
	}
	r.finCh <- end
	return nil
}

// startFinisher starts the goroutine that finishes the messages of the
// batches as they become durable, in order; waitFinisher waits for it
// to be done with every batch handed to it.
func (r *run) startFinisher() {
	r.finCh = make(chan int64, 16)
	r.finDone = make(chan struct{})
	go func() {
		defer close(r.finDone)
		for end := range r.finCh {
			r.mu.Lock()
			failed := r.finErr != nil
			r.mu.Unlock()
			if failed {
				continue
			}
			if err := r.finish(end); err != nil {
				r.mu.Lock()
				r.finErr = err
				r.mu.Unlock()
			}
		}
	}()
}

func (r *run) waitFinisher() error {
	close(r.finCh)
	<-r.finDone
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.finErr
}

// finish completes the moved messages before end, whose copies are
// durable: (maildir, MH) the source's file goes.
func (r *run) finish(end int64) error {
	r.mu.Lock()
	var msgs []*movedMsg
	for k, m := range r.plan.moved {
		if k < end && !m.finished {
			msgs = append(msgs, m)
		}
	}
	r.mu.Unlock()
	if len(msgs) == 0 {
		return nil
	}
	sort.Slice(msgs, func(a, b int) bool { return msgs[a].K < msgs[b].K })
	if r.kind != KindMbox {
		for _, m := range msgs {
			if m.Keep {
				continue
			}
			if err := r.unlink(m); err != nil {
				return err
			}
		}
	}
	r.mu.Lock()
	for _, m := range msgs {
		m.finished = true
	}
	r.mu.Unlock()
	return nil
}

// unlink removes the source file of the moved message m.
func (r *run) unlink(m *movedMsg) error {
	rel := m.rel
	if rel == "" {
		var err error
		if rel, err = r.find(m.Name, false); err != nil || rel == "" {
			return err
		}
	}
	err := os.Remove(filepath.Join(r.abs, rel))
	if errors.Is(err, fs.ErrNotExist) && r.kind == KindMaildir {
		// A reader renamed it since (new/ to cur/, its flags): look
		// again.
		if rel, err = r.find(m.Name, true); err != nil || rel == "" {
			return err
		}
		err = os.Remove(filepath.Join(r.abs, rel))
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// maildirUnique is the unique part of a maildir file name: before the
// info.
func maildirUnique(name string) string {
	if i := strings.IndexByte(name, ':'); i >= 0 {
		return name[:i]
	}
	return name
}

// readNames lists the names in dir but dot files.
func readNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	out := names[:0]
	for _, n := range names {
		if !strings.HasPrefix(n, ".") {
			out = append(out, n)
		}
	}
	return out, nil
}

// Format writes rep's table: one line "from -> to: count" per
// destination, sorted.
func Format(w io.Writer, rep *Report) {
	keys := make([]string, 0, len(rep.Table))
	for k := range rep.Table {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "%s -> %s: %d\n", rep.Source, k, rep.Table[k])
	}
}
