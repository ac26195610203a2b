package imapfetch

import (
	"context"
	"fmt"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// WatchOptions tune Watch.
type WatchOptions struct {
	// Poll is how often a server without IDLE is asked for new mail,
	// and how long an IDLE lasts before a check that the link still
	// works (a link that died without a word is found then).
	Poll time.Duration
	// MaxBackoff bounds the wait between reconnections (it doubles
	// from a second).
	MaxBackoff time.Duration
	// Cycle hears what each look at the folder did.
	Cycle func(Report, error)
}

// Watch files the folder's mail, then stays connected and files new mail
// as it arrives (IDLE, or a poll where the server lacks it), reconnecting
// with backoff (a fresh password or token each time), until ctx ends;
// then it returns nil. It holds the source's state lock throughout.
func (f *Fetcher) Watch(ctx context.Context, o WatchOptions) error {
	if o.Poll <= 0 {
		o.Poll = 5 * time.Minute
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Minute
	}
	lock, err := f.lock(ctx)
	if err != nil {
		return err
	}
	defer lock.Release()
	backoff := time.Second
	for ctx.Err() == nil {
		worked, err := f.watchConn(ctx, o)
		if ctx.Err() != nil {
			break
		}
		if worked {
			backoff = time.Second
		}
		f.warn("%v; connecting again in %s", err, backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, o.MaxBackoff)
	}
	f.say("stopped")
	return nil
}

// watchConn files and waits on one connection until it fails or ctx
// ends; worked says whether a look at the folder succeeded.
func (f *Fetcher) watchConn(ctx context.Context, o WatchOptions) (worked bool, err error) {
	wake := make(chan struct{}, 1)
	f.unilateral = &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		},
	}
	conn, err := f.dial(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	idle := conn.Caps.Has(imap.CapIdle)
	if !idle {
		f.say("the server lacks IDLE: looking for new mail every %s", o.Poll)
	}
	for {
		var rep Report
		before := conn.Wire()
		err := f.cycle(ctx, conn, &rep)
		rep.Wire = conn.Wire() - before
		if o.Cycle != nil {
			o.Cycle(rep, err)
		}
		if err != nil || ctx.Err() != nil {
			return worked, err
		}
		worked = true
		if err := f.wait(ctx, conn, wake, idle, o.Poll); err != nil {
			return worked, err
		}
		if ctx.Err() != nil {
			return worked, nil
		}
	}
}

// wait returns when new mail may have arrived, after poll, or when ctx
// ends.
func (f *Fetcher) wait(ctx context.Context, conn *Conn, wake <-chan struct{}, idle bool, poll time.Duration) error {
	timer := time.NewTimer(poll)
	defer timer.Stop()
	if !idle {
		select {
		case <-ctx.Done():
		case <-timer.C:
		}
		return nil
	}
	cmd, err := conn.C.Idle()
	if err != nil {
		return fmt.Errorf("idle: %w", err)
	}
	select {
	case <-wake:
	case <-timer.C:
	case <-ctx.Done():
	case <-conn.C.Closed():
	}
	if err := cmd.Close(); err != nil {
		return fmt.Errorf("idle: %w", err)
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("idle: %w", err)
	}
	return nil
}
