package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mfilter/mfilter/internal/fetch"
	"github.com/mfilter/mfilter/internal/imapfetch"
	"github.com/mfilter/mfilter/internal/runprog"
	"github.com/mfilter/mfilter/internal/statelock"
	"github.com/mfilter/mfilter/internal/sysexits"
	"github.com/mfilter/mfilter/rules"
)

// fetchSource is one item of the fetch: section: an SSH spool or an IMAP
// folder.
type fetchSource struct {
	ssh  *fetch.Settings
	imap *imapfetch.Settings
}

// parseFetchSources reads the fetch: section: one source (a mapping) or a
// list of them, each the SSH spool form or the imap: form. A nil section
// gives none.
func parseFetchSources(sec *rules.Section) ([]fetchSource, error) {
	if sec == nil || sec.Node == nil {
		return nil, nil
	}
	items := []*yaml.Node{sec.Node}
	if sec.Node.Kind == yaml.SequenceNode {
		items = sec.Node.Content
	}
	var errs rules.ErrorList
	var out []fetchSource
	for _, n := range items {
		if n.Kind != yaml.MappingNode {
			errs = append(errs, &rules.Error{Pos: rules.Pos{File: sec.Path, Line: n.Line, Col: n.Column},
				Msg: "fetch: a source is a mapping (host: and spool:, or imap:), or fetch: is a list of them"})
			continue
		}
		one := &rules.Section{Path: sec.Path, Node: n}
		var err error
		if imapfetch.IsIMAP(n) {
			var s imapfetch.Settings
			s, err = imapfetch.ParseSettings(one)
			out = append(out, fetchSource{imap: &s})
		} else {
			var s fetch.Settings
			s, err = fetch.ParseSettings(one)
			out = append(out, fetchSource{ssh: &s})
		}
		var el rules.ErrorList
		if errors.As(err, &el) {
			errs = append(errs, el...)
		} else if err != nil {
			return out, err
		}
	}
	if len(errs) > 0 {
		return out, errs
	}
	return out, nil
}

// fetchSourceList reads the fetch: section of the rules, if any,
// reporting its errors.
func fetchSourceList(env *environ, prog string, cfg *rules.Config) ([]fetchSource, error) {
	if cfg == nil {
		return nil, nil
	}
	srcs, err := parseFetchSources(cfg.Sections["fetch"])
	if err != nil {
		reportRuleErrors(env, err)
		fmt.Fprintf(env.stderr, "%s: the fetch: section of %s has errors; no mail was touched\n", prog, cfg.Path)
		return nil, failed(sysexits.Config)
	}
	return srcs, nil
}

// firstSSH is the first SSH source's settings (zero without one): what
// the flags of a run without a fetch: list amend, and what send takes
// its login from.
func firstSSH(srcs []fetchSource) fetch.Settings {
	for _, s := range srcs {
		if s.ssh != nil {
			return *s.ssh
		}
	}
	return fetch.Settings{}
}

// runSources files each source in turn; every source is tried, and the
// first failure decides the exit status (the others are reported).
func (r *fetchRun) runSources(ctx context.Context, s *setup, srcs []fetchSource) error {
	var first error
	for _, src := range srcs {
		var err error
		if src.imap != nil {
			err = r.fetchIMAP(ctx, s, src.imap)
		} else {
			err = r.fetchSSH(ctx, s, *src.ssh)
		}
		if err == nil {
			continue
		}
		if first == nil {
			first = err
		} else if err.Error() != "" {
			fmt.Fprintf(r.env.stderr, "%s: %v\n", fetchProg, err)
		}
	}
	return first
}

// fetchSSH files one SSH (or local) spool.
func (r *fetchRun) fetchSSH(ctx context.Context, s *setup, set fetch.Settings) error {
	r.set = set
	if err := r.settle(); err != nil {
		return err
	}
	sp, closeSpool, err := r.openSpool(ctx)
	if err != nil {
		return err
	}
	defer closeSpool()
	return r.fetch(ctx, s, sp)
}

// imapFetcher builds the fetcher of an IMAP source; the flags win over
// its settings.
func (r *fetchRun) imapFetcher(s *setup, set *imapfetch.Settings) *imapfetch.Fetcher {
	if r.fl.timeout != 0 {
		set.Timeout = r.fl.timeout
	}
	if r.fl.stateLockTimeout != 0 {
		set.StateLock = r.fl.stateLockTimeout
	}
	if set.CA != "" {
		set.CA = expandHome(r.env, set.CA)
	}
	dir := r.fl.stateDir
	if dir == "" {
		dir = set.StateDir
	}
	if dir == "" {
		dir = defaultStateDir(r.env)
	}
	hostname, _ := os.Hostname()
	return &imapfetch.Fetcher{
		Settings: set, Filer: s.filer, Writer: s.filer.Writer,
		StateDir: expandHome(r.env, dir), Host: hostname, Runner: runprog.Exec{},
		Warn: r.warn, Say: func(m string) { r.say("%s", m) },
	}
}

// fetchIMAP files one IMAP folder.
func (r *fetchRun) fetchIMAP(ctx context.Context, s *setup, set *imapfetch.Settings) error {
	f := r.imapFetcher(s, set)
	if err := os.MkdirAll(f.StateDir, 0o700); err != nil {
		return failf(sysexits.CantCreat, "state directory: %v", err)
	}
	start := time.Now()
	rep, err := f.Run(ctx)
	if err != nil {
		return imapFailure(set, err)
	}
	if rep.Messages > 0 && (r.fl.verbose || r.fl.watch) {
		r.reportIMAP(set, rep, time.Since(start))
	} else {
		r.say("%s: no mail", set.Describe())
	}
	return nil
}

// imapFailure turns a failed IMAP run into an exit status: 75 (try
// again: the server keeps what was not filed) unless the login was
// refused (77).
func imapFailure(set *imapfetch.Settings, err error) error {
	var busy *statelock.BusyError
	var auth *imapfetch.AuthError
	switch {
	case errors.As(err, &busy):
		return failf(sysexits.TempFail, "%s: %v; nothing was done (try again later)", set.Describe(), err)
	case errors.As(err, &auth):
		return failf(sysexits.NoPerm, "%v", err)
	}
	return failf(sysexits.TempFail, "%s: %v (the server keeps what was not filed; run again to finish)", set.Describe(), err)
}

func (r *fetchRun) reportIMAP(set *imapfetch.Settings, rep imapfetch.Report, d time.Duration) {
	fmt.Fprintf(r.env.stderr, "%s: filed %d messages (%s, %s over the link) from %s in %s\n",
		fetchProg, rep.Messages, size(rep.Bytes), size(rep.Wire), set.Describe(), d.Round(time.Millisecond))
}

// watch files every source, then stays with them: IMAP folders through
// IDLE, SSH spools polled every --poll, each in a goroutine of its own,
// until SIGTERM (ctx); then it exits 0.
func (r *fetchRun) watch(ctx context.Context, s *setup, srcs []fetchSource) error {
	var wg sync.WaitGroup
	var mu sync.Mutex // one source files at a time: the filer is not shared
	for _, src := range srcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if src.imap != nil {
				r.watchIMAP(ctx, s, src.imap, &mu)
			} else {
				r.pollSSH(ctx, s, *src.ssh, &mu)
			}
		}()
	}
	wg.Wait()
	fmt.Fprintf(r.env.stderr, "%s: stopped watching\n", fetchProg)
	return nil
}

// watchIMAP watches one IMAP folder until ctx ends, logging each look
// that filed something or failed.
func (r *fetchRun) watchIMAP(ctx context.Context, s *setup, set *imapfetch.Settings, mu *sync.Mutex) {
	f := r.imapFetcher(s, set)
	f.Serial = mu
	if err := os.MkdirAll(f.StateDir, 0o700); err != nil {
		r.warn(fmt.Sprintf("%s: state directory: %v", set.Describe(), err))
		return
	}
	r.say("%s: watching", set.Describe())
	err := f.Watch(ctx, imapfetch.WatchOptions{
		Poll: r.fl.poll,
		Cycle: func(rep imapfetch.Report, err error) {
			if err != nil {
				r.warn(fmt.Sprintf("%s: %v", set.Describe(), err))
			} else if rep.Messages > 0 {
				fmt.Fprintf(r.env.stderr, "%s: filed %d messages (%s, %s over the link) from %s\n",
					fetchProg, rep.Messages, size(rep.Bytes), size(rep.Wire), set.Describe())
			}
		},
	})
	if err != nil {
		r.warn(imapFailure(set, err).Error())
	}
}

// pollSSH files an SSH spool every --poll until ctx ends.
func (r *fetchRun) pollSSH(ctx context.Context, s *setup, set fetch.Settings, mu *sync.Mutex) {
	for {
		mu.Lock()
		err := r.fetchSSH(ctx, s, set)
		mu.Unlock()
		if err != nil && ctx.Err() == nil && err.Error() != "" {
			r.warn(err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.fl.poll):
		}
	}
}
