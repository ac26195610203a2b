package refile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/mfilter/mfilter/internal/mailfmt"
)

// dryRun routes every message of the source and counts where it would
// go, changing nothing.
func (r *run) dryRun(ctx context.Context) error {
	r.claimed = time.Now()
	if r.kind == KindMbox {
		f, err := os.Open(r.abs)
		if err != nil {
			return err
		}
		defer f.Close()
		sp := mailfmt.NewFileSplitter(f, mailfmt.SplitOptions{Berkeley: r.o.Berkeley, Mboxrd: r.o.ReadMboxrd})
		defer sp.Close()
		for {
			msg, err := sp.Next()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			a, _ := sp.Offsets()
			r.dryOne(ctx, msg, fmt.Sprintf("%s@%d", r.name, a))
		}
	}
	names, err := listFolder(r.abs, r.kind)
	if err != nil {
		return err
	}
	for _, rel := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := os.ReadFile(filepath.Join(r.abs, rel))
		if errors.Is(err, fs.ErrNotExist) {
			r.rep.Gone++
			continue
		}
		if err != nil {
			return err
		}
		msg := data
		if !mailfmt.HasFromLine(data) {
			msg = append(mailfmt.GeneratedFromLine(data, r.claimed), data...)
		}
		r.dryOne(ctx, msg, filepath.Join(r.name, rel))
	}
	return nil
}

func (r *run) dryOne(ctx context.Context, msg []byte, what string) {
	d := r.classify(ctx, msg)
	if d.err != nil {
		d.to = "(error: " + d.err.Error() + ")"
	} else if !d.stays && d.plan.OnFailed != nil {
		d.plan.OnFailed() // nothing is delivered
	}
	r.decided(d, what)
}

func timeAfterMs(ms int) <-chan time.Time { return time.After(time.Duration(ms) * time.Millisecond) }
