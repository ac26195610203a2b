package filer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/confine"
	"github.com/mfilter/mfilter/rules"
)

// RulesRouter routes messages by the rules.
type RulesRouter struct {
	Engine *rules.Engine
	Base   string   // the mail root: relative folders are below it
	Root   *os.Root // opened on Base, for folders built from message data
	// Guard keeps folders built from message data away from mfilter's
	// own files; nil refuses them all.
	Guard    *confine.Guard
	Envelope rules.Envelope

	// folders remembers what ParseFolder made of each folder name the
	// rules gave that is not built from message data: most messages go
	// to a few folders, and an mbox name costs a stat(2) to tell it from
	// a directory. What a name is stays fixed for the router's life.
	mu      sync.Mutex
	folders map[string]deliver.Folder
}

// maxCachedFolders bounds RulesRouter.folders; names past it are parsed
// every time.
const maxCachedFolders = 1024

// parseFolder is deliver.ParseFolder(r.Base, spec), remembered.
func (r *RulesRouter) parseFolder(spec string) (deliver.Folder, error) {
	r.mu.Lock()
	f, ok := r.folders[spec]
	r.mu.Unlock()
	if ok {
		return f, nil
	}
	f, err := deliver.ParseFolder(r.Base, spec)
	if err != nil {
		return f, err
	}
	r.mu.Lock()
	if r.folders == nil {
		r.folders = make(map[string]deliver.Folder)
	}
	if len(r.folders) < maxCachedFolders {
		r.folders[spec] = f
	}
	r.mu.Unlock()
	return f, nil
}

// Route implements Router: it evaluates the rules and turns their
// decision into steps.
func (r *RulesRouter) Route(ctx context.Context, msg []byte) (Plan, error) {
	dec, err := r.Engine.Evaluate(ctx, msg, rules.EvalOptions{Envelope: r.Envelope})
	if err != nil {
		return Plan{}, err
	}
	plan := Plan{
		Logs:        dec.Logs,
		Warnings:    dec.Warnings,
		OnDelivered: func(ctx context.Context) error { return r.Engine.DupStore().RecordAll(ctx, dec.Dups) },
		OnFailed:    dec.Abort,
	}
	var replies []rules.Step
	plan.Steps, replies, err = r.steps(dec.Steps)
	for _, rs := range replies {
		plan.Replies = append(plan.Replies, *rs.Reply)
	}
	if err != nil {
		dec.Abort()
		return Plan{}, err
	}
	return plan, nil
}

// steps turns the rules' steps, and their fallbacks, into the filer's;
// replies are sent after filing, not as steps.
func (r *RulesRouter) steps(in []rules.Step) (out []Step, replies []rules.Step, err error) {
	for _, s := range in {
		if s.Kind == rules.StepReply {
			replies = append(replies, s)
			continue
		}
		st := Step{Msg: s.Msg, Argv: s.Argv, Timeout: s.Timeout, IgnoreExit: s.IgnoreExit, Flags: stepFlags(s), Input: s.Input}
		switch s.Kind {
		case rules.StepFolder:
			f, err := r.folder(s)
			if err != nil {
				return nil, nil, err
			}
			st.Kind, st.Folder = StepFolder, f
		case rules.StepPipe:
			st.Kind = StepPipe
		case rules.StepForward:
			st.Kind = StepForward
		case rules.StepDiscard:
			st.Kind = StepDiscard
		}
		fb, _, err := r.steps(s.Fallback)
		if err != nil {
			return nil, nil, err
		}
		st.Fallback = fb
		out = append(out, st)
	}
	return out, replies, nil
}

// folder is the folder of step s.
func (r *RulesRouter) folder(s rules.Step) (deliver.Folder, error) {
	var f deliver.Folder
	var err error
	if s.Confined {
		if r.Root == nil {
			return f, fmt.Errorf("folder %q is built from message data, but the mail root %s cannot be opened", s.Folder, r.Base)
		}
		f, err = r.confinedFolder(s.Folder)
	} else {
		f, err = r.parseFolder(s.Folder)
	}
	if err != nil {
		return f, &PermanentError{fmt.Errorf("rule %s: %w", s.Rule, err)}
	}
	return f, nil
}

// confinedFolder parses a folder name built from message data: below the
// mail root, opened through it, naming none of mfilter's own files, and,
// for an mbox that exists, a file that is an mbox (a message must not
// append itself to ~/.profile or to a cache).
func (r *RulesRouter) confinedFolder(spec string) (deliver.Folder, error) {
	f, err := deliver.ParseConfinedFolder(r.Root, r.Base, spec)
	if err != nil || f.Kind == deliver.Discard {
		return f, err
	}
	if _, err := r.Guard.Rel(f.Path); err != nil {
		return deliver.Folder{}, fmt.Errorf("folder %w", err)
	}
	if f.Kind == deliver.Mbox {
		if err := deliver.CheckMboxFile(r.Root, f.Path); err != nil {
			return deliver.Folder{}, err
		}
	}
	return f, nil
}

// PermanentError is a failure that filing the same message again cannot
// fix, such as a folder name built from it that names no usable folder.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent reports whether err is a failure that a retry meets again:
// a PermanentError, a target the rules built that cannot be used, or a
// file name too long for the file system.
func Permanent(err error) bool {
	var pe *PermanentError
	var te *rules.TargetError
	return errors.As(err, &pe) || errors.As(err, &te) || errors.Is(err, syscall.ENAMETOOLONG)
}

// stepFlags turns the flags a rules step carries into the writer's.
func stepFlags(s rules.Step) deliver.Flags {
	f := deliver.Flags{Keywords: s.Keywords}
	for _, name := range s.Flags {
		switch name {
		case "seen":
			f.Seen = true
		case "answered":
			f.Answered = true
		case "flagged":
			f.Flagged = true
		case "deleted":
			f.Deleted = true
		case "draft":
			f.Draft = true
		}
	}
	return f
}
