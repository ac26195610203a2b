// Package fdtable grows the process's file descriptor table ahead of
// need.
//
// Linux grows a process's descriptor table by doubling when an open
// needs a slot beyond it, and in a multi-threaded process (every Go
// program) each growth waits for an RCU grace period, about 10 ms on a
// small virtual machine, inside whatever open(2) crossed the boundary.
// A batch filer keeps a thousand message files open while their commit
// is in flight and would pay that wait four or five times, on the
// goroutine that writes the messages. Reserve pays it once, in advance.
package fdtable

import (
	"math"

	"golang.org/x/sys/unix"
)

// Limit is the soft RLIMIT_NOFILE: how many descriptors the process may
// have open (math.MaxInt when unlimited or unknown).
func Limit() int {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur == unix.RLIM_INFINITY || lim.Cur > math.MaxInt32 {
		return math.MaxInt
	}
	return int(lim.Cur)
}

// Reserve grows the descriptor table to hold at least n descriptors (or
// as many as RLIMIT_NOFILE allows) and returns the lowest descriptor
// number it reached. The table never shrinks, so the slots stay for the
// process's life; no descriptor is left open. Call it early, in its own
// goroutine, so that the wait overlaps other work: opens that fit in the
// table meanwhile do not wait for it.
func Reserve(n int) (int, error) {
	n = min(n, Limit())
	if n <= 1 {
		return 0, nil
	}
	// F_DUPFD takes the lowest free descriptor at or above its argument,
	// which makes the kernel grow the table to cover it.
	fd, err := unix.FcntlInt(0, unix.F_DUPFD_CLOEXEC, n-1)
	if err != nil {
		return 0, err
	}
	unix.Close(fd)
	return fd, nil
}
