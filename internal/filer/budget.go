package filer

import "sync"

// byteBudget counts the bytes handed from one goroutine to another and
// makes the giver wait while they pass a limit. A single item larger
// than the limit passes alone.
type byteBudget struct {
	mu    sync.Mutex
	freed sync.Cond
	limit int
	used  int
}

func newByteBudget(limit int) *byteBudget {
	b := &byteBudget{limit: limit}
	b.freed.L = &b.mu
	return b
}

// acquire waits until n more bytes fit (or nothing is held) and takes them.
func (b *byteBudget) acquire(n int) {
	b.mu.Lock()
	for b.used > 0 && b.used+n > b.limit {
		b.freed.Wait()
	}
	b.used += n
	b.mu.Unlock()
}

// held is how many bytes are taken; none without a budget.
func (b *byteBudget) held() int {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// release gives back n bytes taken with acquire.
func (b *byteBudget) release(n int) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
	b.freed.Signal()
}
