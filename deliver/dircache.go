package deliver

import (
	"sync"

	"golang.org/x/sys/unix"
)

// dirCache keeps directories open (O_PATH) for the unnamed files created
// in them and linked into them, so that each of those system calls
// resolves one name instead of the folder's whole path again: the path
// walks were a twentieth of the CPU time of filing an mbox. A Writer
// keeps one for its life; the directories are few (two for each
// folder), and at most max stay open, the others go by their paths.
type dirCache struct {
	mu  sync.Mutex
	fds map[string]int
	max int
}

// dirCacheMax is how many directories a dirCache keeps open at most: a
// sixteenth of the descriptor limit, at most 32, so that a low limit is
// left to the message files (see filer's batch size).
func dirCacheMax() int {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	return int(min(32, lim.Cur/16))
}

func newDirCache() *dirCache {
	return &dirCache{fds: make(map[string]int), max: dirCacheMax()}
}

// get returns a descriptor of directory dir, or -1 if it cannot be
// opened or the cache is full. It stays the cache's: the caller must
// not close it.
func (c *dirCache) get(dir string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if fd, ok := c.fds[dir]; ok {
		return fd
	}
	if len(c.fds) >= c.max {
		return -1
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	c.fds[dir] = fd
	return fd
}

// drop forgets dir's descriptor fd, after a call through it failed in a
// way that its path might not (the directory was removed, and maybe made
// again): the caller tries the path next.
func (c *dirCache) drop(dir string, fd int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.fds[dir]; ok && cur == fd {
		delete(c.fds, dir)
		unix.Close(fd)
	}
}

// close closes every descriptor.
func (c *dirCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for dir, fd := range c.fds {
		unix.Close(fd)
		delete(c.fds, dir)
	}
}
