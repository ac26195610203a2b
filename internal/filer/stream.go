package filer

import (
	"context"
	"errors"
	"fmt"

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
// error; the source still holds that message and the rest. The journal
// hears of the batches as committed in order, up to the first failure:
// it finds the messages filed after that again.
func (f *Filer) FileStream(ctx context.Context, src OffsetSource, j Journal) (Summary, error) {
	b := f.newBatchRun(ctx, src, j)
	p := &stopPolicy{j: j}
	b.policy = p
	b.run()
	return b.sum, p.stop
}

// stopPolicy is FileStream's: the first failure stops the run, and the
// journal hears of no batch as committed after it.
type stopPolicy struct {
	j    Journal
	stop error // the failures: after the first nothing more is read
	gap  bool  // a message failed: Committed no longer advances
}

func (p *stopPolicy) fail(err error) { p.stop = errors.Join(p.stop, err) }

func (p *stopPolicy) stopped() bool { return p.stop != nil }

func (p *stopPolicy) skip([]byte, int64) bool { return false }

func (p *stopPolicy) reject(_ []byte, off int64, err error) {
	p.fail(fmt.Errorf("message at offset %d: %w", off, err))
}

func (p *stopPolicy) interrupted(_ []byte, _ int64, err error) { p.fail(err) }

func (p *stopPolicy) readFailed(err error) { p.fail(err) }

func (p *stopPolicy) abandon(_ *commitJob, err error) {
	p.gap = true
	p.fail(err)
}

func (p *stopPolicy) undelivered(pendingMsg, error) {}

func (p *stopPolicy) landed(_ *commitJob, l landing) {
	if p.gap {
		return
	}
	// Only a run of filed messages without a gap counts: a message
	// after a failed one was filed, and the journal finds it again.
	if err := p.j.Committed(l.end); err != nil {
		p.gap = true
		p.fail(err)
		return
	}
	failed := l.failed
	if failed == nil {
		failed = l.commitErr
	}
	if failed != nil {
		p.gap = true
		p.fail(failed)
	}
}

func (p *stopPolicy) settled() {}
