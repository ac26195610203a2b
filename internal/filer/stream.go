package filer

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/mfilter/mfilter/deliver"
)

// Journal lets FileStream file every message of a source exactly once
// across crashes: it names the deliveries so that they can be found
// again, records what is about to become visible, and says which
// deliveries a crashed run already made. Messages are identified by
// their offset in the source.
type Journal interface {
	// MayHave reports whether an earlier run may have made steps of the
	// message at off: only then is Done asked.
	MayHave(off int64) bool
	// Done reports whether step i of the message at off was already
	// made by an earlier run.
	Done(ctx context.Context, off int64, i int, st Step) (bool, error)
	// Options are the delivery options of step i of the message at off.
	Options(off int64, i int) deliver.DeliverOptions
	// ProgramStarting and ProgramDone bracket a pipe or a forward.
	ProgramStarting(off int64, i int) error
	ProgramDone(off int64, i int) error
	// Committing is called before the deliveries of the messages in
	// [start, end) become visible; Committed once every message before
	// end is durably filed.
	Committing(start, end int64) error
	Committed(end int64) error
}

// OffsetSource is a Source that tells where the last message came from.
type OffsetSource interface {
	Source
	Offsets() (start, end int64)
}

// FileStream files the messages of src exactly once with the help of j.
// Unlike FileAll it rescues nothing: at the first message that cannot be
// delivered it stops, keeps every message before it, and returns the
// error; the source still holds that message and the rest.
//
// As in FileAll, up to maxFlying batches commit while the next one is
// read and written; the journal has each batch's range before its
// commit starts, and hears of them as committed in order. Batches that
// commit after one that failed are filed but not counted as committed:
// the journal finds their messages again (as it finds the messages
// after a failed one within a batch).
func (f *Filer) FileStream(ctx context.Context, src OffsetSource, j Journal) (Summary, error) {
	batch := f.batchSize()
	var (
		sum          Summary
		pending      []streamMsg
		pendingBytes int          // the size of the pending messages
		pins         pinSet       // mboxes pending appended to along with other folders
		flying       []*streamJob // oldest first
		flyingBytes  int          // the size of their messages
		stop         error        // the failures: after the first nothing more is read
		gap          bool         // a message failed: Committed no longer advances
	)
	txn := f.Writer.Begin(ctx)
	fail := func(err error) { stop = errors.Join(stop, err) }
	// finish counts and logs a committed batch and tells the journal.
	finish := func(job *streamJob, cerr error) {
		end := job.pending[0].start
		var failed error
		for _, p := range job.pending {
			if perr := deliveryErr(p.out.ds); perr != nil {
				p.out.failed()
				if failed == nil {
					failed = perr
				}
				continue
			}
			sum.Delivered++
			f.delivered(ctx, p.msg, p.out)
			if failed == nil {
				end = p.end
			}
		}
		if gap {
			return
		}
		// Only a run of filed messages without a gap counts: a message
		// after a failed one was filed, and the journal finds it again.
		if err := j.Committed(end); err != nil {
			gap = true
			fail(err)
			return
		}
		if failed == nil && cerr != nil {
			failed = cerr
		}
		if failed != nil {
			gap = true
			fail(failed)
		}
	}
	land := func() {
		job := flying[0]
		err := <-job.done
		flying = flying[1:]
		flyingBytes -= job.bytes
		finish(job, err)
	}
	// flush commits the pending batch, in the background unless wait is
	// set; it returns with at most maxFlying-1 batches in flight, or none
	// with wait.
	flush := func(wait bool) {
		for len(flying) > 0 && (wait || len(flying) >= maxFlying) {
			land()
		}
		if len(pending) == 0 {
			return
		}
		job := &streamJob{txn: txn, pending: pending, pins: pins, bytes: pendingBytes}
		txn, pending, pins, pendingBytes = f.Writer.Begin(ctx), nil, nil, 0
		if err := j.Committing(job.pending[0].start, job.pending[len(job.pending)-1].end); err != nil {
			for _, p := range job.pending {
				p.out.failed()
			}
			if aerr := job.txn.Abort(); aerr != nil {
				f.warn("%v", aerr)
			}
			gap = true
			fail(err)
			return
		}
		if wait {
			finish(job, job.txn.Commit())
			return
		}
		job.done = make(chan error, 1)
		// Its mbox locks go now, not when the goroutine gets to run:
		// the next batch's first append may want them.
		job.txn.ReleaseLocks()
		go func() { job.done <- job.txn.Commit() }()
		flying = append(flying, job)
		flyingBytes += job.bytes
	}
	// unpin lands the batches in flight up to the last one that must be
	// able to take a message back from an mbox of plan (see FileAll).
	unpin := func(plan Plan) {
		last := -1
		for i, job := range flying {
			if job.pins.holds(plan) {
				last = i
			}
		}
		if last >= 0 {
			txn.ReleaseLocks() // a take-back may need them
		}
		for range last + 1 {
			land()
		}
	}
	for stop == nil {
		// The source may wait for the network: hold no mbox lock.
		txn.ReleaseLocks()
		var msg []byte
		err := safely("reading the input", func() (err error) {
			msg, err = src.Next()
			return err
		})
		if err == io.EOF {
			break
		}
		if err != nil {
			fail(fmt.Errorf("read input: %w", err))
			break
		}
		start, end := src.Offsets()
		sum.Messages++
		if sum.Messages == reserveAfter {
			go reserveDescriptors(batch)
		}
		if cerr := ctx.Err(); cerr != nil {
			fail(fmt.Errorf("interrupted: %w", cerr))
			break
		}
		var out *outcome
		err = safely("filing a message", func() error {
			plan, err := f.Router.Route(ctx, msg)
			if err != nil {
				return err
			}
			unpin(plan)
			out, err = f.deliverPlanJournaled(ctx, txn, plan, msg, start, j)
			return err
		})
		if err != nil {
			fail(fmt.Errorf("message at offset %d: %w", start, err))
			break
		}
		pending = append(pending, streamMsg{msg: msg, out: out, start: start, end: end})
		pendingBytes += len(msg)
		f.hold(pendingBytes + flyingBytes)
		pins.add(out.ds)
		if len(pending) >= batch || pendingBytes >= batchBytes {
			flush(false)
		}
	}
	flush(true)
	return sum, stop
}

// streamJob is a batch of FileStream being committed.
type streamJob struct {
	txn     *deliver.Txn
	pending []streamMsg
	bytes   int // the size of the messages
	pins    pinSet
	done    chan error
}

type streamMsg struct {
	msg        []byte
	out        *outcome
	start, end int64
}
