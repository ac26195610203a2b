package rules

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/mfilter/mfilter/internal/mailfmt"
	"github.com/mfilter/mfilter/internal/msgview"
	"github.com/mfilter/mfilter/internal/runprog"
)

// MaxOutputOf is how much of a program's output a variable keeps.
const MaxOutputOf = 64 << 10

// setVar assigns v: a template's expansion, or a program's output.
// The trace shows a set: action's (depth > 0), not the vars: of the
// rules file, which every message gets.
func (s *state) setVar(v VarDef, depth int) error {
	if v.Program == nil {
		val, t := s.expand(v.Value, nil)
		s.vars.set(v.Name.Value, variable{val, t})
		if depth > 0 {
			s.tracef(depth, "set %s=%q", v.Name.Value, val)
		}
		return nil
	}
	val, err := s.outputOf(v.Program)
	if err != nil {
		return err
	}
	// Program output may repeat message data: it is treated as such.
	s.vars.set(v.Name.Value, variable{val, true})
	s.tracef(depth, "set %s=%q (output of %s)", v.Name.Value, val, v.Program.Argv[0].Source)
	return nil
}

// outputOf runs o and returns its output, trailing newlines trimmed, at
// most MaxOutputOf bytes. A program that fails (cannot start, exits
// non-zero, times out, writes too much) gives what it printed, with a
// warning, as procmail's VAR=|cmd does; only the end of the run (ctx)
// is an error.
func (s *state) outputOf(o *OutputOf) (string, error) {
	argv := s.argv(o.Argv)
	res, err := s.e.opts.Runner.Run(s.ctx, argv, s.programInput(o.Input), runprog.Options{Timeout: o.Timeout, Stdout: true, MaxStdout: MaxOutputOf})
	if cerr := s.ctx.Err(); cerr != nil {
		return "", fmt.Errorf("output-of %s: %w", argv[0], cerr)
	}
	if err == nil && res.Exit != 0 {
		err = errors.New(runprog.Describe(argv, res))
	}
	if err != nil {
		s.warnf("%s: output-of %s failed, the variable keeps what it printed: %v", o.Pos, argv[0], err)
	}
	out := res.Stdout
	if len(out) > MaxOutputOf {
		out = out[:MaxOutputOf]
	}
	return string(bytes.TrimRight(out, "\n")), nil
}

// programInput is what a program reading part of the message gets: the
// message as procmail pipes it, its header (From_ line and blank line
// included), its body, or nothing.
func (s *state) programInput(input string) []byte {
	msg := mailfmt.PipeBytes(s.msg, s.e.opts.Berkeley)
	switch input {
	case "header":
		return msgview.New(msg).Header()
	case "body":
		return msgview.New(msg).Body()
	case "none":
		return nil
	}
	return msg
}
