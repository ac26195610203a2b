// Package filer runs the middle of mfilter's pipeline: for each message it
// asks a Router where the message goes, delivers it there through the
// deliver package, makes the deliveries durable in batches, logs them, and
// saves what could not be delivered to a rescue mbox. It is shared by every
// mode: one message on stdin, an mbox on stdin or on disk, a fetched spool.
package filer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/fdtable"
	"github.com/mfilter/mfilter/internal/maillog"
	"github.com/mfilter/mfilter/internal/runprog"
)

// Plan is what to do with one message.
type Plan struct {
	// Folders receive the message as read, in order (what DefaultRouter
	// plans); Steps may add folders, pipes, forwards and discards, each
	// with its own version of the message.
	Folders []deliver.Folder
	Steps   []Step
	// Logs are lines for the log (the rules' log actions).
	Logs []string
	// Warnings are problems that did not stop filing.
	Warnings []string
	// OnDelivered runs once the message is durably delivered everywhere;
	// OnFailed when it was not (the rules record and forget duplicate
	// keys with them).
	OnDelivered func(context.Context) error
	OnFailed    func()
}

// StepKind says what a Step does.
type StepKind int

const (
	StepFolder  StepKind = iota // deliver to Folder
	StepPipe                    // run Argv with the message on stdin
	StepForward                 // run the sendmail command Argv
	StepDiscard                 // drop the message (it counts as delivered)
)

// Step is one thing to do with the message.
type Step struct {
	Kind       StepKind
	Folder     deliver.Folder
	Argv       []string
	Timeout    time.Duration
	IgnoreExit bool
	// Msg is the message for this step; nil means the message as read.
	Msg []byte
}

// steps lists everything the plan does, Folders first.
func (p Plan) steps() []Step {
	if len(p.Folders) == 0 {
		return p.Steps
	}
	out := make([]Step, 0, len(p.Folders)+len(p.Steps))
	for _, f := range p.Folders {
		out = append(out, Step{Kind: StepFolder, Folder: f})
	}
	return append(out, p.Steps...)
}

// Router decides where a message goes. It must not write anything.
type Router interface {
	Route(ctx context.Context, msg []byte) (Plan, error)
}

// DefaultRouter files every message into one folder: what mfilter does
// when there are no rules.
type DefaultRouter struct{ Folder deliver.Folder }

// Route implements Router.
func (r DefaultRouter) Route(context.Context, []byte) (Plan, error) {
	return Plan{Folders: []deliver.Folder{r.Folder}}, nil
}

// Filer files messages.
type Filer struct {
	Writer *deliver.Writer
	Router Router
	Log    *maillog.Logger
	// Runner runs pipes and forwards (default runprog.Exec).
	Runner runprog.Runner
	// Berkeley ignores Content-Length when preparing program input.
	Berkeley bool
	// Rescue is the mbox that batch modes append undeliverable messages
	// to; the error returned names it.
	Rescue string
	// BatchSize is how many messages are made durable together in batch
	// modes (default 256).
	BatchSize int
	// Warn receives non-fatal problems.
	Warn func(string)
	// Hold, when set, hears as messages are read and written how many
	// bytes of messages the filer holds in memory: read ahead, in the
	// batch being written, in the batches being committed (the command
	// sizes the garbage collector's memory limit with it). It may be
	// called from more than one goroutine at a time.
	Hold func(bytes int)
}

func (f *Filer) hold(bytes int) {
	if f.Hold != nil {
		f.Hold(bytes)
	}
}

func (f *Filer) warn(format string, args ...any) {
	if f.Warn != nil {
		f.Warn(fmt.Sprintf(format, args...))
	}
}

// FileOne delivers exactly one message to every folder of its plan, or
// (as far as the file system allows) to none: maildir, MH and directory
// files become visible only after every write succeeded, and mbox appends
// are taken back. An error means the message must be retried later
// (exit 75), unless Permanent says a retry cannot help.
func (f *Filer) FileOne(ctx context.Context, msg []byte) error {
	f.hold(len(msg))
	txn := f.Writer.Begin(ctx)
	var out *outcome
	err := safely("filing the message", func() error {
		plan, err := f.Router.Route(ctx, msg)
		if err != nil {
			return err
		}
		out, err = f.deliverPlan(ctx, txn, plan, msg)
		return err
	})
	if err != nil {
		if aerr := txn.Abort(); aerr != nil {
			f.warn("%v", aerr)
		}
		if !Permanent(err) {
			// A permanent failure is the caller's to log: it keeps
			// the message elsewhere.
			f.logFailure(msg, "**Requeued**")
		}
		return err
	}
	if err := txn.Commit(); err != nil {
		out.failed()
		f.logFailure(msg, "**Requeued**")
		return err
	}
	f.delivered(ctx, msg, out)
	return nil
}

// safely runs fn and turns a panic (a bug in the code below, tripped by
// some message) into an error: the message is then retried or rescued,
// where a crash's exit status 2 would make the MTA bounce it.
func safely(what string, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error while %s (a bug; please report it): %v\n%s", what, r, debug.Stack())
		}
	}()
	return fn()
}

// outcome is what deliverPlan did for one message.
type outcome struct {
	plan Plan
	ds   []*deliver.Delivery
	runs []programRun // pipes and forwards that ran
}

type programRun struct {
	argv []string
	size int
}

func (o *outcome) failed() {
	if o != nil && o.plan.OnFailed != nil {
		o.plan.OnFailed()
	}
}

// deliverPlan carries out the plan for msg as one group of the Txn:
// folder files first (visible only at Commit), then mbox appends (visible
// at once, but taken back while nobody appended after them), then pipes
// and forwards, which cannot be taken back: any failure before them leaves
// no trace, and a failing program takes the folder deliveries back.
func (f *Filer) deliverPlan(ctx context.Context, txn *deliver.Txn, plan Plan, msg []byte) (*outcome, error) {
	return f.deliverPlanJournaled(ctx, txn, plan, msg, 0, nil)
}

// deliverPlanJournaled is deliverPlan with a journal j (nil: none) for
// the message at offset off: steps an earlier run made are skipped, and
// the others are named and announced through j.
func (f *Filer) deliverPlanJournaled(ctx context.Context, txn *deliver.Txn, plan Plan, msg []byte, off int64, j Journal) (*outcome, error) {
	steps := plan.steps()
	if len(steps) == 0 {
		plan.failedHook()
		return nil, errors.New("no folder to deliver to")
	}
	out := &outcome{plan: plan}
	txn.BeginMessage()
	sp := txn.Savepoint()
	fail := func(err error) (*outcome, error) {
		if rerr := txn.RollbackTo(sp); rerr != nil {
			f.warn("%v", rerr)
		}
		plan.failedHook()
		return nil, err
	}
	for pass := 0; pass < 3; pass++ {
		for i, st := range steps {
			m := st.Msg
			if m == nil {
				m = msg
			}
			isFolder := st.Kind == StepFolder && pass < 2 && (st.Folder.Kind == deliver.Mbox) == (pass == 1)
			isProgram := (st.Kind == StepPipe || st.Kind == StepForward) && pass == 2
			if !isFolder && !isProgram {
				continue
			}
			var opts deliver.DeliverOptions
			if j != nil {
				if j.MayHave(off) {
					// Done may look into an mbox under its locks (after a crash).
					txn.ReleaseLocks()
					stm := st
					stm.Msg = m // what a lost record's step is found by
					done, err := j.Done(ctx, off, i, stm)
					if err != nil {
						return fail(err)
					}
					if done {
						continue
					}
				}
				opts = j.Options(off, i)
			}
			if isFolder {
				d, err := txn.DeliverWith(st.Folder, m, opts)
				if err != nil {
					return fail(err)
				}
				out.ds = append(out.ds, d)
				continue
			}
			txn.ReleaseLocks() // no one waits for an mbox while the program runs
			if j != nil {
				if err := j.ProgramStarting(off, i); err != nil {
					return fail(err)
				}
			}
			run, err := f.runProgram(ctx, st, m)
			if err != nil {
				return fail(err)
			}
			if j != nil {
				if err := j.ProgramDone(off, i); err != nil {
					return fail(err)
				}
			}
			out.runs = append(out.runs, run)
		}
	}
	return out, nil
}

func (p Plan) failedHook() {
	if p.OnFailed != nil {
		p.OnFailed()
	}
}

// runProgram runs a pipe or forward and waits for it. A pipe that exits
// non-zero failed (unless IgnoreExit), and so does a forward: the message
// then waits for a later try, as procmail's w flag makes it.
func (f *Filer) runProgram(ctx context.Context, st Step, msg []byte) (programRun, error) {
	var input []byte
	what := "pipe"
	if st.Kind == StepForward {
		input = deliver.ForwardBytes(msg, f.Berkeley)
		what = "forward"
	} else {
		input = deliver.PipeBytes(msg, f.Berkeley)
	}
	runner := f.Runner
	if runner == nil {
		runner = runprog.Exec{}
	}
	timeout := st.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	res, err := runner.Run(ctx, st.Argv, input, runprog.Options{Timeout: timeout})
	if err != nil {
		return programRun{}, fmt.Errorf("%s: %w", what, err)
	}
	if res.Exit != 0 && (st.Kind == StepForward || !st.IgnoreExit) {
		return programRun{}, fmt.Errorf("%s: %s", what, runprog.Describe(st.Argv, res))
	}
	return programRun{argv: st.Argv, size: len(input)}, nil
}

// delivered finishes a message that is durably delivered: the plan's
// hook (duplicate keys), then the log.
func (f *Filer) delivered(ctx context.Context, msg []byte, out *outcome) {
	if out.plan.OnDelivered != nil {
		if err := out.plan.OnDelivered(ctx); err != nil {
			f.warn("%v", err)
		}
	}
	for _, w := range out.plan.Warnings {
		f.warn("%s", w)
	}
	for _, l := range out.plan.Logs {
		if err := f.Log.Note(l); err != nil {
			f.warn("log: %v", err)
		}
	}
	f.logDeliveries(msg, out.ds)
	for _, r := range out.runs {
		// procmail logs a program as the text after its | or !.
		if err := f.Log.Log(msg, " "+strings.Join(r.argv, " "), r.size); err != nil {
			f.warn("log: %v", err)
		}
	}
	for _, st := range out.plan.steps() {
		if st.Kind == StepDiscard {
			m := st.Msg
			if m == nil {
				m = msg
			}
			if err := f.Log.Log(msg, "/dev/null", len(m)); err != nil {
				f.warn("log: %v", err)
			}
		}
	}
}

func (f *Filer) logDeliveries(msg []byte, ds []*deliver.Delivery) {
	if !f.Log.Enabled() {
		return // LogName costs an allocation each
	}
	for _, d := range ds {
		if err := f.Log.Log(msg, LogName(d), d.Size); err != nil {
			f.warn("log: %v", err)
		}
	}
}

func (f *Filer) logFailure(msg []byte, what string) {
	if err := f.Log.Log(msg, what, 0); err != nil {
		f.warn("log: %v", err)
	}
}

// LogName is the folder as procmail logs it: the file written inside a
// maildir, MH or directory folder, else the folder as the user named it.
func LogName(d *deliver.Delivery) string {
	switch d.Folder.Kind {
	case deliver.Maildir:
		// Without the ",S=" info, as procmail's names are, so that
		// mailstat folds the deliveries into their folder.
		return d.Folder.Name + "/new/" + deliver.MaildirUnique(filepath.Base(d.Path))
	case deliver.MH, deliver.Dir:
		return strings.TrimSuffix(d.Folder.Name, "/") + "/" + filepath.Base(d.Path)
	}
	return d.Folder.Name
}

// Source yields messages one at a time; deliver.Splitter is one.
type Source interface {
	Next() ([]byte, error)
}

// A Releaser is a Source that holds memory for the messages it returned
// until it hears that they are done with: FileAll calls Release with
// the last message of each batch once the batch is finished (filed or
// rescued, and logged). deliver.Splitter reading a mapped file is one.
type Releaser interface {
	Release(msg []byte)
}

// Summary counts what a batch run did.
type Summary struct {
	Messages  int // messages read
	Delivered int // messages delivered to every folder of their plan
	Rescued   int // messages appended to the rescue mbox
	Lost      int // messages neither delivered nor rescued (still in the source)
}

// RescueError reports messages that were not delivered. When Lost is 0
// they are all in Path.
type RescueError struct {
	Path    string
	Summary Summary
	Cause   error
}

func (e *RescueError) Error() string {
	s := e.Summary
	if s.Lost == 0 {
		return fmt.Sprintf("%d of %d messages could not be delivered and were saved to %s (file them again with: mfilter file %s): %v",
			s.Rescued, s.Messages, e.Path, e.Path, e.Cause)
	}
	return fmt.Sprintf("%d of %d messages could not be delivered and %d could not be saved to %s either; the input still holds them: %v",
		s.Rescued+s.Lost, s.Messages, s.Lost, e.Path, e.Cause)
}

func (e *RescueError) Unwrap() error { return e.Cause }

// FileAll files every message of src, committing every BatchSize
// messages. Messages that cannot be delivered go to the rescue mbox as
// they fail, so memory stays bounded by the batch; the returned error is
// then a *RescueError. When ctx is cancelled the messages not yet read
// are moved to the rescue mbox unfiled, so that every message read ends
// up in exactly one place. A read error of src stops the run after
// filing what was read.
//
// Messages are read and routed (see routeAhead) while earlier ones are
// written, and up to maxFlying batches are committed (made durable,
// which is mostly waiting for the disk) while the next one is read,
// routed and written; each batch is still logged, and its failures
// rescued, in order, and every batch is committed before FileAll
// returns. A message that fails at its commit is taken back from its
// other folders, which for an mbox only works while nothing was appended
// after it: so a message that goes to an mbox waits for the commits in
// flight of batches whose messages went to that mbox and elsewhere too
// (a copy). A message that went to one mbox alone fails at its commit
// only when that mbox does (an I/O error), and is then rescued even if
// its bytes cannot be taken back.
func (f *Filer) FileAll(ctx context.Context, src Source) (Summary, error) {
	sum, _, err := f.fileAll(ctx, src, nil)
	return sum, err
}

// RescueStep is the step number under which a Journal hears of a
// message's append to the rescue mbox.
const RescueStep = -1

// FileAllJournaled is FileAll with a journal, so that a run killed at
// any moment can be run again without filing anything twice or losing
// anything (mfilter file): messages are known by their offsets in src;
// deliveries and rescue appends are named and announced through j as in
// FileStream, steps and rescues an earlier run made are not made again,
// and j hears as committed the offset before which every message is
// durably filed or rescued. complete reports that every message read is
// (none was lost, and the input was read to its end).
func (f *Filer) FileAllJournaled(ctx context.Context, src OffsetSource, j Journal) (sum Summary, complete bool, err error) {
	return f.fileAll(ctx, src, j)
}

// progress tracks, for a journaled run, which messages are finished
// (durably filed or rescued) to tell the journal the offset before which
// all are.
type progress struct {
	j       Journal
	queue   []int64 // starts of the messages read, oldest first, until finished
	done    map[int64]bool
	lastEnd int64 // the end of the last message read
	told    int64
}

func (p *progress) read(start, end int64) {
	if p == nil {
		return
	}
	p.queue = append(p.queue, start)
	p.lastEnd = end
}

func (p *progress) finished(start int64) {
	if p != nil {
		p.done[start] = true
	}
}

// commit tells the journal how far every message is finished.
func (p *progress) commit() error {
	if p == nil {
		return nil
	}
	for len(p.queue) > 0 && p.done[p.queue[0]] {
		delete(p.done, p.queue[0])
		p.queue = p.queue[1:]
	}
	mark := p.lastEnd
	if len(p.queue) > 0 {
		mark = p.queue[0]
	}
	if mark <= p.told {
		return nil
	}
	p.told = mark
	return p.j.Committed(mark)
}

func (f *Filer) fileAll(ctx context.Context, src Source, j Journal) (Summary, bool, error) {
	batch := f.batchSize()
	var prog *progress
	if j != nil {
		prog = &progress{j: j, done: make(map[int64]bool)}
	}
	var (
		sum          Summary
		firstEr      error
		pending      []pendingMsg
		pendingBytes int          // the size of the pending messages
		pins         pinSet       // mboxes pending appended to along with other folders
		flying       []*commitJob // the batches being committed meanwhile, oldest first
		flyingBytes  int          // the size of their messages
		later        []pendingMsg // failed while batches were flying: rescued after their failures
	)
	fail := func(err error) {
		if firstEr == nil {
			firstEr = err
		}
	}
	// The files open for reading now are the input: none is opened
	// later, while the descriptors of the messages being written would
	// make the look slower.
	inputs := inputCheck{open: readOnlyFiles(), seen: make(map[string]bool)}
	// The rescue must be written even when ctx was cancelled; the lock
	// timeout still bounds it.
	r := &rescuer{f: f, txn: f.Writer.Begin(context.WithoutCancel(ctx)), batch: batch, inputs: &inputs, j: j, prog: prog}
	txn := f.Writer.Begin(ctx)
	rescue := func(msg []byte, off int64) {
		if len(flying) > 0 {
			later = append(later, pendingMsg{msg: msg, start: off})
			return
		}
		txn.ReleaseLocks() // the rescue mbox may be one of them
		r.save(msg, off)
	}
	tell := func() {
		if err := prog.commit(); err != nil {
			fail(err)
		}
	}
	// finish logs the committed batch and rescues its failures.
	finish := func(job *commitJob, err error) {
		for _, p := range job.pending {
			if perr := deliveryErr(p.out.ds); perr != nil {
				p.out.failed()
				fail(perr)
				r.save(p.msg, p.start)
				continue
			}
			sum.Delivered++
			prog.finished(p.start)
			f.delivered(ctx, p.msg, p.out)
		}
		if err != nil {
			fail(err)
		}
		r.commit()
		tell()
		if rel, ok := src.(Releaser); ok && len(job.pending) > 0 {
			rel.Release(job.pending[len(job.pending)-1].msg)
		}
	}
	// land waits for the oldest flying batch and finishes it; the
	// messages rescued meanwhile follow once none is left in flight.
	land := func() {
		if len(flying) == 0 {
			return
		}
		// A failed delivery of the batch may need an mbox lock back.
		txn.ReleaseLocks()
		job := flying[0]
		err := <-job.done
		flying = flying[1:]
		flyingBytes -= job.bytes
		finish(job, err)
		if len(flying) > 0 {
			return
		}
		for _, p := range later {
			r.save(p.msg, p.start)
		}
		later = later[:0]
		r.commit()
		tell()
	}
	// flush commits the pending batch: in the background when background
	// is set, with at most maxFlying batches in flight, else before it
	// returns, after those in flight.
	flush := func(background bool) {
		for len(flying) > 0 && (!background || len(flying) >= maxFlying) {
			land()
		}
		if len(pending) == 0 {
			return
		}
		job := &commitJob{txn: txn, pending: pending, pins: pins, bytes: pendingBytes}
		txn, pending, pins, pendingBytes = f.Writer.Begin(ctx), nil, nil, 0
		if j != nil {
			// The maildir names of the batch are found again after a
			// crash only inside the ranges announced here.
			if err := j.Committing(job.pending[0].start, job.pending[len(job.pending)-1].end); err != nil {
				if aerr := job.txn.Abort(); aerr != nil {
					f.warn("%v", aerr)
				}
				fail(err)
				for _, p := range job.pending {
					p.out.failed()
					rescue(p.msg, p.start)
				}
				return
			}
		}
		if background {
			job.done = make(chan error, 1)
			// Its mbox locks go now, not when the goroutine gets to run:
			// the next batch's first append may want them.
			job.txn.ReleaseLocks()
			go func() { job.done <- job.txn.Commit() }()
			flying = append(flying, job)
			flyingBytes += job.bytes
		} else {
			finish(job, job.txn.Commit())
		}
	}
	// unpin lands the flying batches up to the last one that must be
	// able to take a message back from an mbox of plan.
	unpin := func(plan Plan) {
		last := -1
		for i, job := range flying {
			if job.pins.holds(plan) {
				last = i
			}
		}
		for range last + 1 {
			land()
		}
	}
	var readErr error
	idle := time.NewTimer(lockIdleGrace)
	idle.Stop()
	ahead, budget := f.routeAhead(ctx, src)
	for {
		var rm routedMsg
		var more bool
		select {
		case rm, more = <-ahead:
		default:
			// Hold no mbox lock while waiting for input, unless the
			// next message comes within lockIdleGrace: the router
			// is usually only busy, and each release costs a lock
			// cycle of four directory changes.
			idle.Reset(lockIdleGrace)
			select {
			case rm, more = <-ahead:
				idle.Stop()
			case <-idle.C:
				txn.ReleaseLocks()
				rm, more = <-ahead
			}
		}
		if !more {
			break
		}
		budget.release(len(rm.msg))
		if rm.readErr != nil {
			readErr = rm.readErr
			break
		}
		msg := rm.msg
		sum.Messages++
		prog.read(rm.start, rm.end)
		if sum.Messages == reserveAfter {
			go reserveDescriptors(batch)
		}
		if cerr := ctx.Err(); cerr != nil {
			if rm.routed && rm.err == nil {
				rm.plan.failedHook()
			}
			fail(fmt.Errorf("interrupted: %w", cerr))
			rescue(msg, rm.start)
			continue
		}
		if j != nil && j.MayHave(rm.start) {
			// Rescued by a run that crashed: it stays where it is.
			if done, err := r.rescuedBefore(ctx, rm.start, msg); err != nil || done {
				if rm.routed && rm.err == nil {
					rm.plan.failedHook()
				}
				if err != nil {
					fail(err)
					rescue(msg, rm.start) // a copy too many there rather than none
					continue
				}
				r.rescued++
				prog.finished(rm.start)
				fail(fmt.Errorf("the message at offset %d was saved to %s by an earlier run", rm.start, r.target()))
				continue
			}
		}
		sp := txn.Savepoint()
		var out *outcome
		err := rm.err
		if err == nil {
			err = safely("filing a message", func() error {
				if err := inputs.check(rm.plan); err != nil {
					rm.plan.failedHook()
					return err
				}
				unpin(rm.plan)
				var err error
				out, err = f.deliverPlanJournaled(ctx, txn, rm.plan, msg, rm.start, j)
				return err
			})
		}
		if err == nil {
			pending = append(pending, pendingMsg{msg: msg, out: out, start: rm.start, end: rm.end})
			pendingBytes += len(msg)
			f.hold(budget.held() + pendingBytes + flyingBytes)
			pins.add(out.ds)
			if len(pending) >= batch || pendingBytes >= batchBytes {
				flush(true)
			}
			continue
		}
		if rerr := txn.RollbackTo(sp); rerr != nil { // after a panic
			f.warn("%v", rerr)
		}
		fail(err)
		rescue(msg, rm.start)
	}
	flush(false)
	for len(flying) > 0 {
		land()
	}
	r.commit()
	tell()
	sum.Rescued, sum.Lost = r.rescued, r.lost
	if r.err != nil {
		fail(fmt.Errorf("rescue: %w", r.err))
	}
	complete := sum.Lost == 0 && readErr == nil && (prog == nil || len(prog.queue) == 0)
	if readErr != nil {
		// The messages after a read error were never read: say so even
		// when others failed too.
		firstEr = errors.Join(firstEr, readErr)
	}
	if sum.Rescued+sum.Lost > 0 {
		return sum, complete, &RescueError{Path: r.target(), Summary: sum, Cause: firstEr}
	}
	if j != nil && readErr == nil && firstEr != nil {
		// A journal that could not be written: nothing is lost, but
		// the run is not done.
		return sum, false, firstEr
	}
	return sum, complete, readErr
}

// lockIdleGrace is how long FileAll keeps its mbox locks while it waits
// for the next message: long enough for the router's work on a message,
// short enough that mail delivered by other programs to the same mboxes
// meanwhile hardly notices.
const lockIdleGrace = time.Millisecond

// maxFlying is how many batches FileAll lets commit at once while it
// writes the next: a commit is mostly waiting for the disk, twice
// (syncfs for the data, then for the names), and a second one in flight
// fills those waits.
const maxFlying = 3

// batchSize is BatchSize (default 256), made smaller where the
// descriptor limit is too low for the message files that a batch being
// written and maxFlying batches committing keep open until their commit
// links them: a delivery that found no descriptor would be rescued
// instead of filed. A quarter of the limit (at least 64) stays for the
// rest: mboxes, which every batch in flight keeps open too, locks,
// programs' pipes.
func (f *Filer) batchSize() int {
	batch := f.BatchSize
	if batch <= 0 {
		batch = 256
	}
	limit := fdtable.Limit()
	if limit == math.MaxInt {
		return batch
	}
	spare := max(64, limit/4)
	return max(1, min(batch, (limit-spare)/(maxFlying+1)))
}

// reserveDescriptors grows the descriptor table to hold the message
// files of a batch being written and of maxFlying batches committing,
// which stay open until their commit links them: growing it at need
// would stall the writing goroutine at each doubling (see fdtable). It
// is only a head start, so its failure is ignored.
func reserveDescriptors(batch int) {
	fdtable.Reserve(batch*(maxFlying+1) + 64)
}

// reserveAfter is the message at which a batch run reserves descriptors:
// the table's first 64 hold a few messages' files without growing, and
// a process cannot exit before the grace period of a growth in progress
// ends, which would make a run of one message 10 ms slower.
const reserveAfter = 16

// routedMsg is a message read from the source and, unless ctx was
// cancelled by then, routed.
type routedMsg struct {
	msg        []byte
	start, end int64 // where msg is in the source, when it tells
	routed     bool
	plan       Plan
	err        error // from routing
	readErr    error // the source failed: the last item
}

// routeAhead reads and routes the messages of src in a goroutine of its
// own, up to routeAheadMax messages and routeAheadBytes ahead of the
// caller, who writes them: on more than one core, routing (rules can be
// most of the work) and writing run at the same time. The caller
// releases each message's size from the budget once it takes it.
// Messages read after ctx is cancelled are not routed. The sequence ends
// at the end of src or after an item with readErr; the caller must read
// it to its end.
func (f *Filer) routeAhead(ctx context.Context, src Source) (<-chan routedMsg, *byteBudget) {
	ch := make(chan routedMsg, routeAheadMax)
	budget := newByteBudget(routeAheadBytes)
	go func() {
		defer close(ch)
		for {
			var rm routedMsg
			err := safely("reading the input", func() (err error) {
				rm.msg, err = src.Next()
				return err
			})
			if err == io.EOF {
				return
			}
			if err != nil {
				ch <- routedMsg{readErr: fmt.Errorf("read input: %w", err)}
				return
			}
			if o, ok := src.(OffsetSource); ok {
				rm.start, rm.end = o.Offsets()
			}
			// Heard before routing, so that a large message's copies
			// find the collector's limit raised.
			f.hold(budget.held() + len(rm.msg))
			if ctx.Err() == nil {
				rm.routed = true
				rm.err = safely("filing a message", func() (err error) {
					rm.plan, err = f.Router.Route(ctx, rm.msg)
					return err
				})
			}
			budget.acquire(len(rm.msg))
			ch <- rm
		}
	}()
	return ch, budget
}

// routeAheadMax is how many messages routeAhead reads ahead at most.
const routeAheadMax = 64

// routeAheadBytes and batchBytes bound the memory that messages take
// whatever their size: a batch is committed once its messages make
// batchBytes, even before it has BatchSize of them, and routeAhead
// reads no further while routeAheadBytes wait for the writer. With
// maxFlying batches in flight, the messages held are then at most about
// (maxFlying+1)*batchBytes + routeAheadBytes, plus a message for each.
const (
	routeAheadBytes = 4 << 20
	batchBytes      = 4 << 20
)

// byteBudget counts the bytes handed from one goroutine to another and
// makes the giver wait while they pass a limit. A single item larger
// than the limit passes alone.
type byteBudget struct {
	mu    sync.Mutex
	freed sync.Cond
	limit int
	used  int
}

func newByteBudget(limit int) *byteBudget {
	b := &byteBudget{limit: limit}
	b.freed.L = &b.mu
	return b
}

// acquire waits until n more bytes fit (or nothing is held) and takes them.
func (b *byteBudget) acquire(n int) {
	b.mu.Lock()
	for b.used > 0 && b.used+n > b.limit {
		b.freed.Wait()
	}
	b.used += n
	b.mu.Unlock()
}

// held is how many bytes are taken.
func (b *byteBudget) held() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// release gives back n bytes taken with acquire.
func (b *byteBudget) release(n int) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
	b.freed.Signal()
}

// commitJob is a batch of messages being committed.
type commitJob struct {
	txn     *deliver.Txn
	pending []pendingMsg
	bytes   int        // the size of the messages
	pins    pinSet     // mboxes that messages went to along with other folders
	done    chan error // Commit's result, when it runs in the background
}

// pinSet holds the mboxes that a batch appended messages to along with
// other folders: if such a message fails at the batch's commit, its
// append must be taken back, which only works while nothing was appended
// after it, so later appends to these mboxes wait for the commit.
type pinSet map[string]bool

// add pins the mboxes of ds, one message's deliveries, if there are
// others.
func (p *pinSet) add(ds []*deliver.Delivery) {
	if len(ds) < 2 {
		return
	}
	for _, d := range ds {
		if d.Folder.Kind == deliver.Mbox {
			if *p == nil {
				*p = make(pinSet)
			}
			(*p)[d.Folder.Path] = true
		}
	}
}

// holds reports whether plan appends to a pinned mbox.
func (p pinSet) holds(plan Plan) bool {
	if len(p) == 0 {
		return false
	}
	for _, st := range plan.steps() {
		if st.Kind == StepFolder && st.Folder.Kind == deliver.Mbox && p[st.Folder.Path] {
			return true
		}
	}
	return false
}

func deliveryErr(ds []*deliver.Delivery) error {
	for _, d := range ds {
		if d.Err != nil {
			return d.Err
		}
	}
	return nil
}

type pendingMsg struct {
	msg        []byte
	out        *outcome            // deliveries
	ds         []*deliver.Delivery // rescue appends
	start, end int64               // offsets in the source (journaled runs)
}

// rescuer appends messages, unchanged, to the rescue mbox so that filing
// that mbox later gives back the same messages. It commits in batches
// like the deliveries.
type rescuer struct {
	f       *Filer
	txn     *deliver.Txn
	batch   int
	pending []pendingMsg
	path    string // the rescue mbox, once decided
	inputs  *inputCheck
	rescued int
	lost    int
	err     error     // the first failure
	j       Journal   // journaled runs: announces the appends
	prog    *progress // journaled runs: hears of the rescued messages
}

// rescuedBefore reports whether an earlier run appended the message at
// off to the rescue mbox.
func (r *rescuer) rescuedBefore(ctx context.Context, off int64, msg []byte) (bool, error) {
	path := r.path
	if path == "" {
		// Not decided yet: the rescue mbox, unless it is the input
		// (then a run uses a name of its own, which the next cannot
		// know, and is not looked into).
		if r.f.Rescue == "" || r.inputs.is(r.f.Rescue) {
			return false, nil
		}
		path = r.f.Rescue
	}
	return r.j.Done(ctx, off, RescueStep, Step{Kind: StepFolder, Folder: deliver.Folder{Name: path, Path: path, Kind: deliver.Mbox}, Msg: msg})
}

// target is the rescue mbox, decided at the first rescue: Filer.Rescue,
// unless that is the very file being filed (mfilter file RESCUE, as the
// error advises, when the folder still fails): appending to it would feed
// the reader its own output without end, so a fresh name next to it is
// used instead.
func (r *rescuer) target() string {
	if r.path != "" || r.f.Rescue == "" {
		return r.path
	}
	r.path = r.f.Rescue
	if r.inputs.is(r.path) {
		r.path = fmt.Sprintf("%s.%s.%d", r.f.Rescue, time.Now().Format("20060102T150405"), os.Getpid())
		r.f.warn("%s is being filed; saving the messages that fail to %s instead", r.f.Rescue, r.path)
	}
	return r.path
}

// inputCheck tells, per mbox folder path, whether it is the input being
// filed: appending to it would feed the reader its own output.
type inputCheck struct {
	open []os.FileInfo   // the regular files open read-only when filing began
	seen map[string]bool // the answer for each path asked about
}

func (c *inputCheck) check(plan Plan) error {
	for _, st := range plan.steps() {
		f := st.Folder
		if st.Kind != StepFolder || f.Kind != deliver.Mbox {
			continue
		}
		if c.is(f.Path) {
			return fmt.Errorf("folder %s is the mbox being filed: appending to it would be read again", f.Path)
		}
	}
	return nil
}

// is reports whether path is one of the files open for reading.
func (c *inputCheck) is(path string) bool {
	if is, ok := c.seen[path]; ok {
		return is
	}
	st, err := os.Stat(path)
	if err != nil {
		return false // not there yet, so not the input; ask again later
	}
	is := false
	for _, o := range c.open {
		is = is || os.SameFile(st, o)
	}
	c.seen[path] = is
	return is
}

// readOnlyFiles returns the regular files this process has open
// read-only: the input it files (stdin or a named mbox). Linux's
// /proc/self tells; elsewhere there are none.
func readOnlyFiles() []os.FileInfo {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil
	}
	var open []os.FileInfo
	for _, fd := range fds {
		st, err := os.Stat("/proc/self/fd/" + fd.Name())
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + fd.Name())
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				if flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64); err == nil && flags&uint64(os.O_WRONLY|os.O_RDWR) == 0 {
					open = append(open, st)
				}
			}
		}
	}
	return open
}

func (r *rescuer) save(msg []byte, off int64) {
	path := r.target()
	if path == "" {
		r.lost++
		r.setErr(errors.New("no rescue mbox configured"))
		return
	}
	r.txn.BeginMessage()
	var opts deliver.DeliverOptions
	if r.j != nil {
		opts = r.j.Options(off, RescueStep)
	}
	d, err := r.txn.AppendRawWith(path, msg, opts)
	if err != nil {
		// The failed append keeps the rescue mbox's locks for the next
		// one; nothing may be pending to commit, and so nothing would
		// release them before the process exits, leaving NAME.lock.
		r.txn.ReleaseLocks()
		r.lost++
		r.setErr(err)
		return
	}
	r.pending = append(r.pending, pendingMsg{msg: msg, ds: []*deliver.Delivery{d}, start: off})
	if len(r.pending) >= r.batch {
		r.commit()
	}
}

func (r *rescuer) commit() {
	if len(r.pending) == 0 {
		r.txn.ReleaseLocks() // a failed append's, if any
		return
	}
	if err := r.txn.Commit(); err != nil {
		r.setErr(err)
	}
	for _, p := range r.pending {
		if err := deliveryErr(p.ds); err != nil {
			r.lost++
			continue
		}
		r.rescued++
		r.prog.finished(p.start)
		d := p.ds[0]
		if err := r.f.Log.Log(p.msg, d.Path, d.Size); err != nil {
			r.f.warn("log: %v", err)
		}
	}
	r.pending = r.pending[:0]
}

func (r *rescuer) setErr(err error) {
	if r.err == nil {
		r.err = err
	}
}
