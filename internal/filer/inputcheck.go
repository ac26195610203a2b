package filer

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/mfilter/mfilter/deliver"
)

// inputCheck tells, per mbox folder path, whether it is the input being
// filed: appending to it would feed the reader its own output.
type inputCheck struct {
	open []os.FileInfo   // the regular files open read-only when filing began
	seen map[string]bool // the answer for each path asked about
}

// newInputCheck takes the files open for reading now as the input: none
// is opened later, and the look would be slower once the descriptors of
// the messages being written are open too.
func newInputCheck() *inputCheck {
	return &inputCheck{open: readOnlyFiles(), seen: make(map[string]bool)}
}

// check refuses a plan that appends to the input; a nil check refuses
// nothing.
func (c *inputCheck) check(plan Plan) error {
	if c == nil {
		return nil
	}
	for _, st := range plan.steps() {
		f := st.Folder
		if st.Kind != StepFolder || f.Kind != deliver.Mbox {
			continue
		}
		if c.is(f.Path) {
			return fmt.Errorf("folder %s is the mbox being filed: appending to it would be read again", f.Path)
		}
	}
	return nil
}

// is reports whether path is one of the files open for reading.
func (c *inputCheck) is(path string) bool {
	if is, ok := c.seen[path]; ok {
		return is
	}
	st, err := os.Stat(path)
	if err != nil {
		return false // not there yet, so not the input; ask again later
	}
	is := false
	for _, o := range c.open {
		is = is || os.SameFile(st, o)
	}
	c.seen[path] = is
	return is
}

// readOnlyFiles returns the regular files this process has open
// read-only: the input it files (stdin or a named mbox). Linux's
// /proc/self tells; elsewhere there are none.
func readOnlyFiles() []os.FileInfo {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil
	}
	var open []os.FileInfo
	for _, fd := range fds {
		st, err := os.Stat("/proc/self/fd/" + fd.Name())
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + fd.Name())
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				if flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64); err == nil && flags&uint64(os.O_WRONLY|os.O_RDWR) == 0 {
					open = append(open, st)
				}
			}
		}
	}
	return open
}
