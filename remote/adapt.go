package remote

import (
	"io"
	"strconv"
	"sync"
	"time"
)

// The zstd level adapts to the link. The server sends the first MiB at
// level 3 (fast: on loopback the server's zstd, not the link, is the
// limit), then waits for a line on its stdin with the level for the rest.
// The client answers once it has seen adaptProbe bytes arrive, from their
// rate: a slow link leaves the server's CPU idle, and a higher level
// trades it for fewer bytes. The server never sends bytes that are then
// thrown away (as restarting the stream at another level would: up to an
// SSH window of them would still have to cross the link).
const (
	adaptChunk = 1 << 20   // bytes sent at level 3 before the answer
	adaptProbe = 128 << 10 // wire bytes the rate is taken over
	// adaptWait: when the first MiB compressed to less than adaptProbe,
	// the stream stalls waiting for the answer; this long after the
	// first byte the client answers from what it saw.
	adaptWait = 100 * time.Millisecond
)

// adaptLevel is the zstd level for a link that carried rate bytes a
// second at level 3. On the SpamAssassin corpus (bench/FETCH.md) level 3
// gives 20% of the input at 170 MB/s, 6 17% at 49 MB/s, 12 17% at
// 21 MB/s, 19 15% at 0.9 MB/s: each level is chosen where the server's
// compression stays well ahead of what the link takes (a slow server
// halves these speeds and is still ahead).
func adaptLevel(rate float64) int {
	switch {
	case rate < 3e6: // below about 24 Mbit/s
		return 12
	case rate < 12e6: // below about 100 Mbit/s
		return 6
	}
	return 3
}

type adapter struct {
	answer *io.PipeReader // after the script on the session's stdin
	w      *io.PipeWriter

	mu          sync.Mutex
	first, last time.Time
	firstN      int64
	total       int64
	sent        bool
	level       int
	timer       *time.Timer
}

func newAdapter(*countReader) *adapter {
	pr, pw := io.Pipe()
	return &adapter{answer: pr, w: pw}
}

// observe is called with the wire bytes received so far.
func (a *adapter) observe(total int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sent {
		return
	}
	now := time.Now()
	a.last, a.total = now, total
	if a.first.IsZero() {
		a.first, a.firstN = now, total
		a.timer = time.AfterFunc(adaptWait, a.timeout)
		return
	}
	if total-a.firstN >= adaptProbe {
		a.sendLocked(adaptLevel(float64(total-a.firstN) / now.Sub(a.first).Seconds()))
	}
}

// timeout answers when adaptProbe bytes did not come within adaptWait:
// a stream that has stalled is the server waiting for the answer (the
// first MiB compressed well), not a slow link.
func (a *adapter) timeout() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sent {
		return
	}
	now := time.Now()
	if now.Sub(a.last) > 30*time.Millisecond || a.total == a.firstN {
		a.sendLocked(3)
		return
	}
	a.sendLocked(adaptLevel(float64(a.total-a.firstN) / a.last.Sub(a.first).Seconds()))
}

func (a *adapter) sendLocked(level int) {
	a.sent, a.level = true, level
	if a.timer != nil {
		a.timer.Stop()
	}
	go func() {
		a.w.Write([]byte(strconv.Itoa(level) + "\n"))
		a.w.Close()
	}()
}

// stop ends the answer (the server then keeps level 3).
func (a *adapter) stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.timer != nil {
		a.timer.Stop()
	}
	if !a.sent {
		a.sent = true
		a.w.Close()
	}
}

// chosen is the level answered, 0 before.
func (a *adapter) chosen() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.level
}
