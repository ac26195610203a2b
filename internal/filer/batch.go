package filer

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/fdtable"
)

// Source yields messages one at a time; mailfmt.Splitter is one.
type Source interface {
	Next() ([]byte, error)
}

// A Releaser is a Source that holds memory for the messages it returned
// until it hears that they are done with: a batch run calls Release with
// the last message of each batch once the batch is finished (filed or
// rescued, and logged). mailfmt.Splitter reading a mapped file is one.
type Releaser interface {
	Release(msg []byte)
}

// batchRun files the messages of a source in batches, for FileAll,
// FileAllJournaled and FileStream. Each message is read and routed
// (ahead, in a goroutine, or inline), delivered into the batch being
// written, and the full batch is committed in the background while the
// next is written, up to maxFlying at once. Batches land in order: their
// messages are counted and logged, and their failures handed to the
// policy, which rescues them or stops the run.
//
// A message that fails at its commit is taken back from its other
// folders, which for an mbox works only while nothing was appended after
// it: a message that goes to an mbox first lands the batches in flight
// that pinned that mbox (see pinSet).
type batchRun struct {
	f      *Filer
	ctx    context.Context
	src    Source
	j      Journal   // nil: not journaled
	prog   *progress // journaled FileAll runs
	policy batchPolicy
	inputs *inputCheck // nil: no check
	batch  int
	sum    Summary

	ahead  <-chan routedMsg // nil: read inline
	budget *byteBudget      // the bytes read ahead
	idle   *time.Timer

	txn          *deliver.Txn // the batch being written
	pending      []pendingMsg
	pendingBytes int
	pins         pinSet       // mboxes pending appended to along with other folders
	flying       []*commitJob // the batches being committed, oldest first
	flyingBytes  int
}

// batchPolicy is what differs between runs: FileAll rescues what cannot
// be filed and goes on, FileStream stops at it and tells its journal
// only how far every message is filed.
type batchPolicy interface {
	// stopped reports whether to read no further.
	stopped() bool
	// skip reports whether an earlier run already dealt with the
	// message at off.
	skip(msg []byte, off int64) bool
	// reject takes a message that could not be routed or delivered,
	// interrupted one that was read after ctx was cancelled. (Messages
	// go by value: a routedMsg behind a pointer would escape to the
	// heap.)
	reject(msg []byte, off int64, err error)
	interrupted(msg []byte, off int64, err error)
	// readFailed hears that the source failed; nothing more is read.
	readFailed(err error)
	// abandon takes a batch whose commit could not begin.
	abandon(job *commitJob, err error)
	// undelivered takes a message of a landed batch that failed at
	// its commit.
	undelivered(p pendingMsg, err error)
	// landed hears that a batch is finished.
	landed(job *commitJob, l landing)
	// settled hears that no batch is in flight any more.
	settled()
}

// landing is how a committed batch went.
type landing struct {
	end       int64 // the end of the messages filed before the first failure
	failed    error // the first message's failure
	commitErr error
}

// commitJob is a batch of messages being committed.
type commitJob struct {
	txn     *deliver.Txn
	pending []pendingMsg
	bytes   int        // the size of the messages
	pins    pinSet     // mboxes that messages went to along with other folders
	done    chan error // Commit's result, when it runs in the background
}

type pendingMsg struct {
	msg        []byte
	out        *outcome            // deliveries
	ds         []*deliver.Delivery // rescue appends
	start, end int64               // offsets in the source (journaled runs)
}

func deliveryErr(ds []*deliver.Delivery) error {
	for _, d := range ds {
		if d.Err != nil {
			return d.Err
		}
	}
	return nil
}

// maxFlying is how many batches commit at once while the next is
// written: a commit is mostly waiting for the disk, twice (syncfs for
// the data, then for the names), and a second one fills those waits.
const maxFlying = 3

// batchBytes bounds a batch's messages whatever their size: it is
// committed once they make batchBytes, even before BatchSize of them.
const batchBytes = 4 << 20

// reserveAfter is the message at which a batch run reserves descriptors:
// the table's first 64 hold a few messages' files without growing, and
// a process cannot exit before the grace period of a growth in progress
// ends, which would slow down a run of one message.
const reserveAfter = 16

func (f *Filer) newBatchRun(ctx context.Context, src Source, j Journal) *batchRun {
	return &batchRun{f: f, ctx: ctx, src: src, j: j, batch: f.batchSize(), txn: f.Writer.Begin(ctx)}
}

// run files every message until the source ends or the policy stops
// it, and commits the last batch.
func (b *batchRun) run() {
	for !b.policy.stopped() {
		rm, more := b.next()
		if !more {
			break
		}
		if rm.readErr != nil {
			b.policy.readFailed(rm.readErr)
			break
		}
		b.take(&rm)
	}
	b.flush(true)
}

// take files one message read from the source.
func (b *batchRun) take(rm *routedMsg) {
	b.sum.Messages++
	b.prog.read(rm.start, rm.end)
	if b.sum.Messages == reserveAfter {
		go reserveDescriptors(b.batch)
	}
	if cerr := b.ctx.Err(); cerr != nil {
		if rm.routed && rm.err == nil {
			rm.plan.failedHook()
		}
		b.policy.interrupted(rm.msg, rm.start, fmt.Errorf("interrupted: %w", cerr))
		return
	}
	if b.policy.skip(rm.msg, rm.start) {
		if rm.routed && rm.err == nil {
			rm.plan.failedHook()
		}
		return
	}
	b.deliver(rm)
}

// deliver carries out rm's plan in the batch being written.
func (b *batchRun) deliver(rm *routedMsg) {
	sp := b.txn.Savepoint()
	var out *outcome
	err := rm.err
	if err == nil {
		err = safely("filing a message", func() error {
			if err := b.inputs.check(rm.plan); err != nil {
				rm.plan.failedHook()
				return err
			}
			b.unpin(rm.plan)
			var err error
			out, err = b.f.deliverPlanJournaled(b.ctx, b.txn, rm.plan, rm.msg, rm.start, b.j)
			return err
		})
	}
	if err != nil {
		if rerr := b.txn.RollbackTo(sp); rerr != nil { // after a panic
			b.f.warn("%v", rerr)
		}
		b.policy.reject(rm.msg, rm.start, err)
		return
	}
	b.pending = append(b.pending, pendingMsg{msg: rm.msg, out: out, start: rm.start, end: rm.end})
	b.pendingBytes += len(rm.msg)
	b.f.hold(b.budget.held() + b.pendingBytes + b.flyingBytes)
	b.pins.add(out.ds)
	if len(b.pending) >= b.batch || b.pendingBytes >= batchBytes {
		b.flush(false)
	}
}

// unpin lands the batches in flight up to the last one that must be
// able to take a message back from an mbox of plan.
func (b *batchRun) unpin(plan Plan) {
	last := -1
	for i, job := range b.flying {
		if job.pins.holds(plan) {
			last = i
		}
	}
	for range last + 1 {
		b.land()
	}
}

// flush commits the pending batch: with wait, after landing every batch
// in flight, before it returns; else in the background, after landing
// batches until fewer than maxFlying are in flight.
func (b *batchRun) flush(wait bool) {
	for len(b.flying) > 0 && (wait || len(b.flying) >= maxFlying) {
		b.land()
	}
	if len(b.pending) == 0 {
		return
	}
	job := &commitJob{txn: b.txn, pending: b.pending, pins: b.pins, bytes: b.pendingBytes}
	b.txn, b.pending, b.pins, b.pendingBytes = b.f.Writer.Begin(b.ctx), nil, nil, 0
	if err := b.committing(job); err != nil {
		if aerr := job.txn.Abort(); aerr != nil {
			b.f.warn("%v", aerr)
		}
		for _, p := range job.pending {
			p.out.failed()
		}
		b.policy.abandon(job, err)
		return
	}
	if wait {
		b.finish(job, job.txn.Commit())
		return
	}
	job.done = make(chan error, 1)
	// Its mbox locks go now, not when the goroutine gets to run: the
	// next batch's first append may want them.
	job.txn.ReleaseLocks()
	go func() { job.done <- job.txn.Commit() }()
	b.flying = append(b.flying, job)
	b.flyingBytes += job.bytes
}

// committing announces the batch's range to the journal: a crashed
// run's maildir names are looked for only inside the ranges announced.
func (b *batchRun) committing(job *commitJob) error {
	if b.j == nil {
		return nil
	}
	return b.j.Committing(job.pending[0].start, job.pending[len(job.pending)-1].end)
}

// land waits for the oldest batch in flight and finishes it.
func (b *batchRun) land() {
	// A failed delivery of the batch may need an mbox lock back.
	b.txn.ReleaseLocks()
	job := b.flying[0]
	err := <-job.done
	b.flying = b.flying[1:]
	b.flyingBytes -= job.bytes
	b.finish(job, err)
	if len(b.flying) == 0 {
		b.policy.settled()
	}
}

// finish counts and logs a committed batch, hands its failures to the
// policy, and releases its messages.
func (b *batchRun) finish(job *commitJob, cerr error) {
	l := landing{end: job.pending[0].start, commitErr: cerr}
	for _, p := range job.pending {
		if err := deliveryErr(p.out.ds); err != nil {
			p.out.failed()
			if l.failed == nil {
				l.failed = err
			}
			b.policy.undelivered(p, err)
			continue
		}
		b.sum.Delivered++
		b.prog.finished(p.start)
		b.f.delivered(b.ctx, p.msg, p.out)
		if l.failed == nil {
			l.end = p.end
		}
	}
	b.policy.landed(job, l)
	if rel, ok := b.src.(Releaser); ok {
		rel.Release(job.pending[len(job.pending)-1].msg)
	}
}

// batchSize is BatchSize (default 256), made smaller where the
// descriptor limit is too low for the message files that a batch being
// written and maxFlying batches committing keep open until their commit
// links them: a delivery that found no descriptor would be rescued
// instead of filed. A quarter of the limit (at least 64) stays for the
// rest: mboxes, locks, programs' pipes.
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

// reserveDescriptors grows the descriptor table ahead of the message
// files of a batch being written and maxFlying batches committing:
// growing it at need would stall the writer at each doubling. It is only
// a head start, so its failure is ignored.
func reserveDescriptors(batch int) {
	fdtable.Reserve(batch*(maxFlying+1) + 64)
}
