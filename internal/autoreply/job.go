package autoreply

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mfilter/mfilter/internal/runprog"
)

// Job is one reply to send once the message it answers is filed.
type Job struct {
	To     string
	Msg    []byte   // the reply
	Argv   []string // the sendmail command, recipient included
	Dir    string   // the state directory
	Key    string
	Period time.Duration
}

// sendTimeout bounds the sendmail command.
const sendTimeout = 2 * time.Minute

// Send sends j's reply through its command unless its sender got one in
// the period. sent reports whether it went.
func Send(ctx context.Context, runner runprog.Runner, j Job, now time.Time) (sent bool, err error) {
	return Once(j.Dir, j.Key, j.Period, now, func() error {
		res, err := runner.Run(ctx, j.Argv, j.Msg, runprog.Options{Timeout: sendTimeout})
		if err == nil && res.Exit != 0 {
			err = errors.New(runprog.Describe(j.Argv, res))
		}
		if err != nil {
			return fmt.Errorf("reply to %s: %w", j.To, err)
		}
		return nil
	})
}
