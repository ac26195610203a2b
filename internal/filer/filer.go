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
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/autoreply"
	"github.com/mfilter/mfilter/internal/mailfmt"
	"github.com/mfilter/mfilter/internal/maillog"
	"github.com/mfilter/mfilter/internal/msgview"
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
	// Replies are sent once the message is filed (a failure to send
	// one is a warning, never a reason to file the message again).
	Replies []autoreply.Job
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
	// Flags are set on the message where the folder can hold them.
	Flags deliver.Flags
	// Input is what a pipe reads of the message: "" (all of it),
	// "header" (From_ line and blank line included) or "body".
	Input string
	// Fallback are made instead of the step when it fails (procmail's
	// e flag): the step is taken back, and the message waits or is
	// rescued only if a fallback fails too.
	Fallback []Step
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
	// LocalInput says that FileStream's sources are files on this
	// machine (refile): reading one never waits for a network, so the
	// batch's mbox locks are kept while the next message is read rather
	// than released and taken again for every message.
	LocalInput bool
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
	d := stepRun{f: f, ctx: ctx, txn: txn, off: off, j: j, out: &outcome{plan: plan}, next: len(steps), msg: msg}
	txn.BeginMessage()
	sp := txn.Savepoint()
	for pass := range 3 {
		for i, st := range steps {
			if !inPass(st, pass) {
				continue
			}
			if st.Msg == nil {
				// Also what Done finds a lost record's step by.
				st.Msg = msg
			}
			if err := d.stepOrFallback(i, st); err != nil {
				if rerr := txn.RollbackTo(sp); rerr != nil {
					f.warn("%v", rerr)
				}
				plan.failedHook()
				return nil, err
			}
		}
	}
	return d.out, nil
}

// inPass reports whether st is made in pass: folder files, then mbox
// appends, then programs.
func inPass(st Step, pass int) bool {
	switch st.Kind {
	case StepFolder:
		return pass < 2 && (st.Folder.Kind == deliver.Mbox) == (pass == 1)
	case StepPipe, StepForward:
		return pass == 2
	}
	return false
}

// stepRun makes the steps of one message's plan.
type stepRun struct {
	f   *Filer
	ctx context.Context
	txn *deliver.Txn
	off int64
	j   Journal
	out *outcome
	// next is the journal index of the next fallback step made: after
	// the plan's own.
	next int
	msg  []byte // the message as read
}

// stepOrFallback makes step i, st, or when it fails and has fallbacks,
// takes back what it did and makes them instead. A fallback that fails
// fails the message as the step would have.
func (d *stepRun) stepOrFallback(i int, st Step) error {
	sp := d.txn.Savepoint()
	err := d.step(i, st)
	if err == nil || len(st.Fallback) == 0 || d.ctx.Err() != nil {
		return err
	}
	if rerr := d.txn.RollbackTo(sp); rerr != nil {
		return errors.Join(err, rerr)
	}
	d.f.warn("%v; its fallback is made instead", err)
	for _, fb := range st.Fallback {
		if fb.Msg == nil {
			fb.Msg = d.msg
		}
		k := d.next
		d.next++
		if ferr := d.stepOrFallback(k, fb); ferr != nil {
			return fmt.Errorf("fallback: %w (after: %v)", ferr, err)
		}
	}
	return nil
}

// step makes step i, st, unless an earlier run made it.
func (d *stepRun) step(i int, st Step) error {
	var opts deliver.DeliverOptions
	if d.j != nil {
		if d.j.MayHave(d.off) {
			// Done may look into an mbox under its locks (after a crash).
			d.txn.ReleaseLocks()
			done, err := d.j.Done(d.ctx, d.off, i, st)
			if err != nil || done {
				return err
			}
		}
		opts = d.j.Options(d.off, i)
	}
	opts.Flags = st.Flags
	if st.Kind == StepFolder {
		dl, err := d.txn.DeliverWith(st.Folder, st.Msg, opts)
		if err != nil {
			return err
		}
		d.out.ds = append(d.out.ds, dl)
		return nil
	}
	return d.program(i, st)
}

// program runs a pipe or forward, announced through the journal.
func (d *stepRun) program(i int, st Step) error {
	d.txn.ReleaseLocks() // no one waits for an mbox while the program runs
	if d.j != nil {
		if err := d.j.ProgramStarting(d.off, i); err != nil {
			return err
		}
	}
	run, err := d.f.runProgram(d.ctx, st, st.Msg)
	if err != nil {
		return err
	}
	if d.j != nil {
		if err := d.j.ProgramDone(d.off, i); err != nil {
			return err
		}
	}
	d.out.runs = append(d.out.runs, run)
	return nil
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
		input = mailfmt.ForwardBytes(msg, f.Berkeley)
		what = "forward"
	} else {
		input = pipeInput(mailfmt.PipeBytes(msg, f.Berkeley), st.Input)
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

// sendReplies sends the automatic replies of a filed message, each at
// most once per its period.
func (f *Filer) sendReplies(ctx context.Context, jobs []autoreply.Job) {
	runner := f.Runner
	if runner == nil {
		runner = runprog.Exec{}
	}
	for _, j := range jobs {
		sent, err := autoreply.Send(ctx, runner, j, time.Now())
		switch {
		case err != nil:
			f.warn("%v", err)
		case sent:
			if err := f.Log.Note("mfilter: replied to " + j.To); err != nil {
				f.warn("log: %v", err)
			}
		}
	}
}

// pipeInput is the part of a pipe's input, in (the message as procmail
// pipes it), that a step reads: procmail's h and b flags.
func pipeInput(in []byte, part string) []byte {
	switch part {
	case "header":
		return msgview.New(in).Header()
	case "body":
		return msgview.New(in).Body()
	}
	return in
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
	f.sendReplies(ctx, out.plan.Replies)
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
