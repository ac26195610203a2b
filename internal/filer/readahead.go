package filer

import (
	"context"
	"fmt"
	"io"
	"time"
)

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

// lockIdleGrace is how long a run reading ahead keeps its mbox locks
// while it waits for the next message: long enough for the router's work
// on a message, short enough that mail delivered by other programs to the
// same mboxes meanwhile hardly notices.
const lockIdleGrace = time.Millisecond

// routeAheadMax and routeAheadBytes bound how far routeAhead reads ahead
// of the writer, in messages and in bytes. With maxFlying batches in
// flight, the messages held are then at most about
// (maxFlying+1)*batchBytes + routeAheadBytes, plus a message for each.
const (
	routeAheadMax   = 64
	routeAheadBytes = 4 << 20
)

// readAhead makes the run read and route in a goroutine of its own
// (routeAhead): on more than one core, routing (rules can be most of the
// work) and writing run at the same time.
func (b *batchRun) readAhead() {
	b.ahead, b.budget = b.f.routeAhead(b.ctx, b.src)
	b.idle = time.NewTimer(lockIdleGrace)
	b.idle.Stop()
}

// next returns the next message; more is false at the end of the source.
func (b *batchRun) next() (rm routedMsg, more bool) {
	if b.ahead == nil {
		return b.nextInline()
	}
	select {
	case rm, more = <-b.ahead:
	default:
		// Hold no mbox lock while waiting for input, unless the next
		// message comes within lockIdleGrace: the router is usually
		// only busy, and each release costs a lock cycle of four
		// directory changes.
		b.idle.Reset(lockIdleGrace)
		select {
		case rm, more = <-b.ahead:
			b.idle.Stop()
		case <-b.idle.C:
			b.txn.ReleaseLocks()
			rm, more = <-b.ahead
		}
	}
	if more {
		b.budget.release(len(rm.msg))
	}
	return rm, more
}

// nextInline reads and routes the next message itself.
func (b *batchRun) nextInline() (routedMsg, bool) {
	// The source may wait for the network: hold no mbox lock.
	if !b.f.LocalInput {
		b.txn.ReleaseLocks()
	}
	return b.f.readRouted(b.ctx, b.src, nil)
}

// readRouted reads the next message of src and routes it unless ctx is
// cancelled; heard, if set, hears of the message before it is routed.
// It returns false at the end of src, and an item with readErr when src
// fails.
func (f *Filer) readRouted(ctx context.Context, src Source, heard func(msg []byte)) (routedMsg, bool) {
	var rm routedMsg
	err := safely("reading the input", func() (err error) {
		rm.msg, err = src.Next()
		return err
	})
	if err == io.EOF {
		return rm, false
	}
	if err != nil {
		return routedMsg{readErr: fmt.Errorf("read input: %w", err)}, true
	}
	if o, ok := src.(OffsetSource); ok {
		rm.start, rm.end = o.Offsets()
	}
	if heard != nil {
		heard(rm.msg)
	}
	if ctx.Err() == nil {
		rm.routed = true
		rm.err = safely("filing a message", func() (err error) {
			rm.plan, err = f.Router.Route(ctx, rm.msg)
			return err
		})
	}
	return rm, true
}

// routeAhead reads and routes the messages of src in a goroutine of its
// own, up to routeAheadMax messages and routeAheadBytes ahead of the
// caller, who releases each message's size from the budget once it
// takes it. The sequence ends at the end of src or after an item with
// readErr; the caller must read it to its end.
func (f *Filer) routeAhead(ctx context.Context, src Source) (<-chan routedMsg, *byteBudget) {
	ch := make(chan routedMsg, routeAheadMax)
	budget := newByteBudget(routeAheadBytes)
	// Heard before routing, so that a large message's copies find the
	// collector's limit raised.
	heard := func(msg []byte) { f.hold(budget.held() + len(msg)) }
	go func() {
		defer close(ch)
		for {
			rm, more := f.readRouted(ctx, src, heard)
			if !more {
				return
			}
			if rm.readErr != nil {
				ch <- rm
				return
			}
			budget.acquire(len(rm.msg))
			ch <- rm
		}
	}()
	return ch, budget
}
