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
	"path/filepath"
	"strings"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/maillog"
)

// Plan is where one message goes.
type Plan struct {
	// Folders receive the message, in order; the rule engine adds pipes,
	// forwards and edits on top of this.
	Folders []deliver.Folder
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
	// Rescue is the mbox that batch modes append undeliverable messages
	// to; the error returned names it.
	Rescue string
	// BatchSize is how many messages are made durable together in batch
	// modes (default 256).
	BatchSize int
	// Warn receives non-fatal problems.
	Warn func(string)
}

func (f *Filer) warn(format string, args ...any) {
	if f.Warn != nil {
		f.Warn(fmt.Sprintf(format, args...))
	}
}

// FileOne delivers exactly one message to every folder of its plan, or
// (as far as the file system allows) to none: maildir, MH and directory
// files become visible only after every write succeeded. An error means
// the message must be retried later (exit 75).
func (f *Filer) FileOne(ctx context.Context, msg []byte) error {
	plan, err := f.Router.Route(ctx, msg)
	if err != nil {
		return err
	}
	txn := f.Writer.Begin(ctx)
	ds, err := f.deliverPlan(txn, plan, msg)
	if err != nil {
		txn.Abort()
		f.logFailure(msg, "**Requeued**")
		return err
	}
	if err := txn.Commit(); err != nil {
		f.logFailure(msg, "**Requeued**")
		return err
	}
	f.logDeliveries(msg, ds)
	return nil
}

// deliverPlan writes msg to each folder of plan. mbox appends cannot be
// taken back, so they come last: a failure before them leaves no trace.
func (f *Filer) deliverPlan(txn *deliver.Txn, plan Plan, msg []byte) ([]*deliver.Delivery, error) {
	if len(plan.Folders) == 0 {
		return nil, errors.New("no folder to deliver to")
	}
	sp := txn.Savepoint()
	var ds []*deliver.Delivery
	for pass := 0; pass < 2; pass++ {
		for _, folder := range plan.Folders {
			if (folder.Kind == deliver.Mbox) != (pass == 1) {
				continue
			}
			d, err := txn.Deliver(folder, msg)
			if err != nil {
				txn.RollbackTo(sp)
				return nil, err
			}
			ds = append(ds, d)
		}
	}
	return ds, nil
}

func (f *Filer) logDeliveries(msg []byte, ds []*deliver.Delivery) {
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
		return d.Folder.Name + "/new/" + filepath.Base(d.Path)
	case deliver.MH, deliver.Dir:
		return strings.TrimSuffix(d.Folder.Name, "/") + "/" + filepath.Base(d.Path)
	}
	return d.Folder.Name
}

// Source yields messages one at a time; deliver.Splitter is one.
type Source interface {
	Next() ([]byte, error)
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
// messages. Messages that cannot be delivered go to the rescue mbox; the
// returned error is then a *RescueError. A read error of src stops the
// run after filing what was read.
func (f *Filer) FileAll(ctx context.Context, src Source) (Summary, error) {
	batch := f.BatchSize
	if batch <= 0 {
		batch = 256
	}
	var (
		sum     Summary
		failed  [][]byte
		firstEr error
		pending []pendingMsg
	)
	txn := f.Writer.Begin(ctx)
	flush := func() {
		if len(pending) == 0 {
			return
		}
		err := txn.Commit()
		for _, p := range pending {
			var perr error
			for _, d := range p.ds {
				if d.Err != nil {
					perr = d.Err
					break
				}
			}
			if perr != nil {
				failed = append(failed, p.msg)
				if firstEr == nil {
					firstEr = perr
				}
				continue
			}
			sum.Delivered++
			f.logDeliveries(p.msg, p.ds)
		}
		if err != nil && firstEr == nil {
			firstEr = err
		}
		pending = pending[:0]
	}
	var readErr error
	for {
		if err := ctx.Err(); err != nil {
			readErr = err
			break
		}
		msg, err := src.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = fmt.Errorf("read input: %w", err)
			break
		}
		sum.Messages++
		plan, err := f.Router.Route(ctx, msg)
		if err == nil {
			var ds []*deliver.Delivery
			ds, err = f.deliverPlan(txn, plan, msg)
			if err == nil {
				pending = append(pending, pendingMsg{msg, ds})
				if len(pending) >= batch {
					flush()
				}
				continue
			}
		}
		failed = append(failed, msg)
		if firstEr == nil {
			firstEr = err
		}
	}
	flush()
	if len(failed) > 0 {
		rescued, err := f.rescue(ctx, failed)
		sum.Rescued = rescued
		sum.Lost = len(failed) - rescued
		if err != nil {
			firstEr = fmt.Errorf("%w; rescue: %v", firstEr, err)
		}
		return sum, &RescueError{Path: f.Rescue, Summary: sum, Cause: firstEr}
	}
	return sum, readErr
}

type pendingMsg struct {
	msg []byte
	ds  []*deliver.Delivery
}

// rescue appends msgs, unchanged, to the rescue mbox so that filing that
// mbox later gives back the same messages.
func (f *Filer) rescue(ctx context.Context, msgs [][]byte) (int, error) {
	if f.Rescue == "" {
		return 0, errors.New("no rescue mbox configured")
	}
	txn := f.Writer.Begin(ctx)
	type saved struct {
		msg []byte
		d   *deliver.Delivery
	}
	var ok []saved
	var firstErr error
	for _, m := range msgs {
		d, err := txn.AppendRaw(f.Rescue, m)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		ok = append(ok, saved{m, d})
	}
	if err := txn.Commit(); err != nil {
		return 0, err
	}
	for _, s := range ok {
		if err := f.Log.Log(s.msg, s.d.Path, s.d.Size); err != nil {
			f.warn("log: %v", err)
		}
	}
	return len(ok), firstErr
}
