package main

import (
	"errors"
	"fmt"

	"github.com/mfilter/mfilter/internal/sysexits"
)

// cmdError is how a step of a command fails: the exit status the command
// ends with, and what it says on stderr after "prog: ". A nil err says
// nothing: the step has reported the failure itself (rules errors, which
// take several lines).
type cmdError struct {
	code int
	err  error
}

func (e *cmdError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *cmdError) Unwrap() error { return e.err }

// failf returns a cmdError with exit status code and a message formatted
// as by fmt.Errorf.
func failf(code int, format string, args ...any) *cmdError {
	return &cmdError{code: code, err: fmt.Errorf(format, args...)}
}

// fail returns a cmdError with exit status code whose message is err's.
func fail(code int, err error) *cmdError {
	return &cmdError{code: code, err: err}
}

// failed returns a cmdError with exit status code for a failure that is
// reported already.
func failed(code int) *cmdError {
	return &cmdError{code: code}
}

// exitCode says err on env.stderr as prog's and returns the command's
// exit status: 0 for nil, a cmdError's own, else EX_SOFTWARE.
func (env *environ) exitCode(prog string, err error) int {
	if err == nil {
		return sysexits.OK
	}
	var ce *cmdError
	if !errors.As(err, &ce) {
		ce = fail(sysexits.Software, err)
	}
	if ce.err != nil {
		fmt.Fprintf(env.stderr, "%s: %v\n", prog, ce.err)
	}
	return ce.code
}
