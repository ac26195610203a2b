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
func (f *Filer) FileStream(ctx context.Context, src OffsetSource, j Journal) (Summary, error) {
	batch := f.BatchSize
	if batch <= 0 {
		batch = 256
	}
	var (
		sum     Summary
		pending []streamMsg
		first   int64 = -1
	)
	txn := f.Writer.Begin(ctx)
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		if err := j.Committing(pending[0].start, pending[len(pending)-1].end); err != nil {
			for _, p := range pending {
				p.out.failed()
			}
			if aerr := txn.Abort(); aerr != nil {
				f.warn("%v", aerr)
			}
			return err
		}
		cerr := txn.Commit()
		var failed error
		end := pending[0].start
		for _, p := range pending {
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
		pending = pending[:0]
		// Only a run of filed messages without a gap counts: a message
		// after a failed one was filed, and the journal finds it again.
		if err := j.Committed(end); err != nil {
			return err
		}
		if failed != nil {
			return failed
		}
		return cerr
	}
	for {
		var msg []byte
		err := safely("reading the input", func() (err error) {
			msg, err = src.Next()
			return err
		})
		if err == io.EOF {
			break
		}
		if err != nil {
			ferr := flush()
			return sum, errors.Join(fmt.Errorf("read input: %w", err), ferr)
		}
		start, end := src.Offsets()
		if first < 0 {
			first = start
		}
		sum.Messages++
		if cerr := ctx.Err(); cerr != nil {
			ferr := flush()
			return sum, errors.Join(fmt.Errorf("interrupted: %w", cerr), ferr)
		}
		var out *outcome
		err = safely("filing a message", func() error {
			plan, err := f.Router.Route(ctx, msg)
			if err != nil {
				return err
			}
			out, err = f.deliverPlanJournaled(ctx, txn, plan, msg, start, j)
			return err
		})
		if err != nil {
			ferr := flush()
			return sum, errors.Join(fmt.Errorf("message at offset %d: %w", start, err), ferr)
		}
		pending = append(pending, streamMsg{msg: msg, out: out, start: start, end: end})
		if len(pending) >= batch {
			if err := flush(); err != nil {
				return sum, err
			}
		}
	}
	return sum, flush()
}

type streamMsg struct {
	msg        []byte
	out        *outcome
	start, end int64
}

// deliverPlanJournaled is deliverPlan with a journal: steps an earlier run
// made are skipped, and the others are named and announced through j.
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
			done, err := j.Done(ctx, off, i, st)
			if err != nil {
				return fail(err)
			}
			if done {
				continue
			}
			if isFolder {
				d, err := txn.DeliverWith(st.Folder, m, j.Options(off, i))
				if err != nil {
					return fail(err)
				}
				out.ds = append(out.ds, d)
				continue
			}
			if err := j.ProgramStarting(off, i); err != nil {
				return fail(err)
			}
			run, err := f.runProgram(ctx, st, m)
			if err != nil {
				return fail(err)
			}
			if err := j.ProgramDone(off, i); err != nil {
				return fail(err)
			}
			out.runs = append(out.runs, run)
		}
	}
	return out, nil
}
