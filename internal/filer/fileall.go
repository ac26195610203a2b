package filer

import (
	"context"
	"errors"
	"fmt"
)

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
// messages, and returns once every batch is committed. Messages that
// cannot be delivered go to the rescue mbox as they fail; the error is
// then a *RescueError. When ctx is cancelled, the messages read from
// then on go to the rescue mbox unfiled, so that every message read ends
// up in exactly one place. A read error of src stops the run after
// filing what was read.
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

// fileAll is FileAll, journaled when j is not nil.
func (f *Filer) fileAll(ctx context.Context, src Source, j Journal) (Summary, bool, error) {
	inputs := newInputCheck()
	b := f.newBatchRun(ctx, src, j)
	b.inputs = inputs
	if j != nil {
		b.prog = &progress{j: j, done: make(map[int64]bool)}
	}
	p := &rescuePolicy{b: b, r: &rescuer{
		f: f,
		// The rescue must be written even when ctx was cancelled; the
		// lock timeout still bounds it.
		txn:    f.Writer.Begin(context.WithoutCancel(ctx)),
		batch:  b.batch,
		inputs: inputs,
		j:      j,
		prog:   b.prog,
	}}
	b.policy = p
	b.readAhead()
	b.run()
	return p.result()
}

// rescuePolicy is FileAll's: a message that cannot be filed goes to the
// rescue mbox, and the run goes on.
type rescuePolicy struct {
	b       *batchRun
	r       *rescuer
	later   []pendingMsg // failed while batches were in flight: rescued after their failures
	firstEr error
	readErr error
}

func (p *rescuePolicy) fail(err error) {
	if p.firstEr == nil {
		p.firstEr = err
	}
}

// rescue saves msg, or keeps it for later while batches are in flight:
// the rescue mbox keeps the input's order, and their failures are
// earlier messages.
func (p *rescuePolicy) rescue(msg []byte, off int64) {
	if len(p.b.flying) > 0 {
		p.later = append(p.later, pendingMsg{msg: msg, start: off})
		return
	}
	p.b.txn.ReleaseLocks() // the rescue mbox may be one of them
	p.r.save(msg, off)
}

// tell tells the journal how far every message is finished.
func (p *rescuePolicy) tell() {
	if err := p.b.prog.commit(); err != nil {
		p.fail(err)
	}
}

func (p *rescuePolicy) stopped() bool { return false }

// skip leaves a message where a run that crashed rescued it.
func (p *rescuePolicy) skip(msg []byte, off int64) bool {
	if p.b.j == nil || !p.b.j.MayHave(off) {
		return false
	}
	done, err := p.r.rescuedBefore(p.b.ctx, off, msg)
	if err != nil {
		p.fail(err)
		p.rescue(msg, off) // a copy too many there rather than none
		return true
	}
	if !done {
		return false
	}
	p.r.rescued++
	p.b.prog.finished(off)
	p.fail(fmt.Errorf("the message at offset %d was saved to %s by an earlier run", off, p.r.target()))
	return true
}

func (p *rescuePolicy) reject(msg []byte, off int64, err error) {
	p.fail(err)
	p.rescue(msg, off)
}

func (p *rescuePolicy) interrupted(msg []byte, off int64, err error) { p.reject(msg, off, err) }

func (p *rescuePolicy) readFailed(err error) { p.readErr = err }

func (p *rescuePolicy) abandon(job *commitJob, err error) {
	p.fail(err)
	for _, m := range job.pending {
		p.rescue(m.msg, m.start)
	}
}

func (p *rescuePolicy) undelivered(m pendingMsg, err error) {
	p.fail(err)
	p.r.save(m.msg, m.start)
}

func (p *rescuePolicy) landed(_ *commitJob, l landing) {
	if l.commitErr != nil {
		p.fail(l.commitErr)
	}
	p.r.commit()
	p.tell()
}

// settled rescues the messages that failed while batches were in flight.
func (p *rescuePolicy) settled() {
	for _, m := range p.later {
		p.r.save(m.msg, m.start)
	}
	p.later = p.later[:0]
	p.r.commit()
	p.tell()
}

// result finishes the rescues and sums the run up; complete reports that
// every message read is filed or rescued and the source was read to its
// end.
func (p *rescuePolicy) result() (Summary, bool, error) {
	p.r.commit()
	p.tell()
	sum := p.b.sum
	sum.Rescued, sum.Lost = p.r.rescued, p.r.lost
	if p.r.err != nil {
		p.fail(fmt.Errorf("rescue: %w", p.r.err))
	}
	prog := p.b.prog
	complete := sum.Lost == 0 && p.readErr == nil && (prog == nil || len(prog.queue) == 0)
	if p.readErr != nil {
		// The messages after a read error were never read: say so even
		// when others failed too.
		p.firstEr = errors.Join(p.firstEr, p.readErr)
	}
	if sum.Rescued+sum.Lost > 0 {
		return sum, complete, &RescueError{Path: p.r.target(), Summary: sum, Cause: p.firstEr}
	}
	if p.b.j != nil && p.readErr == nil && p.firstEr != nil {
		// A journal that could not be written: nothing is lost, but
		// the run is not done.
		return sum, false, p.firstEr
	}
	return sum, complete, p.readErr
}
