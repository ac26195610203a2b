package filer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/mfilter/mfilter/deliver"
)

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
