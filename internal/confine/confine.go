// Package confine keeps paths built from message data inside the mail
// directory and away from mfilter's own files: its log, its rescue mbox,
// its duplicate caches, its state, its rules, and the lock files of every
// mbox. A message that names one of them (List-Id: <.msgid.cache>) must
// not be able to append to it, forge its lines, or lock a folder forever.
package confine

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Reserved base names and name patterns: what mfilter itself writes in
// folders and in the mail directory.
const (
	lockSuffix   = ".lock"               // a dotlock, of any mbox or cache
	rescuePrefix = "mfilter-rescue.mbox" // the rescue mbox and its numbered siblings
	tempPrefix   = ".mfilter-tmp."       // a message being written into an MH folder
	msgidCache   = ".msgid.cache"        // formail's and mfilter's default duplicate cache
)

// Guard checks paths built from message data. The zero Guard refuses
// everything: a Guard is made by New.
type Guard struct {
	base     string
	reserved map[string]bool // absolute clean paths: files, or directories and all below
}

// New returns a Guard for the mail directory base (absolute) and the
// paths of mfilter's own files and directories; empty ones are ignored,
// relative ones are taken relative to base.
func New(base string, reserved ...string) *Guard {
	g := &Guard{base: filepath.Clean(base), reserved: make(map[string]bool)}
	g.Reserve(reserved...)
	return g
}

// Reserve adds the paths of more of mfilter's own files.
func (g *Guard) Reserve(paths ...string) {
	for _, r := range paths {
		if r == "" {
			continue
		}
		if !filepath.IsAbs(r) {
			r = filepath.Join(g.base, r)
		}
		g.reserved[filepath.Clean(r)] = true
	}
}

// Rel checks p, absolute or relative to the mail directory, and returns
// it relative to the mail directory, cleaned. It fails when p leaves the
// mail directory, is the mail directory itself, or names (or lies below)
// one of mfilter's own files.
func (g *Guard) Rel(p string) (string, error) {
	if g == nil || g.reserved == nil {
		return "", fmt.Errorf("%q is built from message data, and no mail directory confines it", p)
	}
	abs := p
	if !filepath.IsAbs(abs) {
		abs = filepath.Join(g.base, abs)
	}
	abs = filepath.Clean(abs)
	rel, err := filepath.Rel(g.base, abs)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("%q is built from message data and must stay inside %s", p, g.base)
	}
	for dir := abs; dir != g.base && len(dir) > len(g.base); dir = filepath.Dir(dir) {
		if g.reserved[dir] {
			return "", fmt.Errorf("%q is built from message data and names %s, one of mfilter's own files", p, dir)
		}
	}
	for _, part := range strings.Split(rel, "/") {
		if reservedName(part) {
			return "", fmt.Errorf("%q is built from message data and names %q, a name mfilter keeps for its own files", p, part)
		}
	}
	return rel, nil
}

// reservedName reports whether a path component is one of the names
// mfilter gives its own files.
func reservedName(name string) bool {
	return strings.HasSuffix(name, lockSuffix) || strings.HasPrefix(name, rescuePrefix) ||
		strings.HasPrefix(name, tempPrefix) || name == msgidCache
}
