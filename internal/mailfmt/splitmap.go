package mailfmt

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// NewFileSplitter is NewSplitter reading f. A regular file is read
// through a read-only memory map, and a message that is the file's bytes
// as they are (most are: the splitter changes only messages it must
// escape, complete or give a From_ line) is handed out as a slice of the
// map rather than as a copy: such messages take no memory of the
// process's own, which spares it allocating, zeroing and copying all of
// them, a tenth of the time of filing an mbox. Bytes appended to f after
// it was mapped are read as from any file. Other files (pipes, terminals)
// are read as NewSplitter reads them.
//
// Messages from the map are valid until Close, which the caller calls
// once it is done with every message. The map's pages stay resident as
// the messages are read and filed, until Release says that the messages
// up to one are done with: a caller that files one batch after another
// and releases each keeps resident only the messages in flight, however
// long the file.
//
// A file that shrinks while it is mapped (another program truncating an
// mbox that mfilter reads) cannot be read beyond its new end: Next then
// fails instead of faulting.
func NewFileSplitter(f *os.File, opts SplitOptions) *Splitter {
	m := mapInput(f)
	if m == nil {
		return NewSplitter(f, opts)
	}
	s := newSplitter(&memReader{mem: m.data[m.base:], more: f}, opts)
	s.mem = m
	return s
}

// memReader is a bufio.Reader for a Splitter over mapped bytes: it hands
// out slices of them instead of copies in a buffer. Once a line or a
// look-ahead goes past their end (the file grew after it was mapped), it
// carries on as a bufio.Reader over what is left of them and then more.
type memReader struct {
	mem  []byte    // the bytes not yet consumed
	more io.Reader // what follows them
	rest *bufio.Reader
}

// memWindow is how much memReader says it has buffered: as much as a
// bufio.Reader of the Splitter's, so that the Splitter's scans of what
// is buffered stay as long.
const memWindow = 64 << 10

func (r *memReader) tail() *bufio.Reader {
	if r.rest == nil {
		r.rest = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(r.mem), r.more), memWindow)
		r.mem = nil
	}
	return r.rest
}

func (r *memReader) ReadSlice(delim byte) ([]byte, error) {
	if r.rest == nil {
		if i := bytes.IndexByte(r.mem, delim); i >= 0 {
			line := r.mem[: i+1 : i+1]
			r.mem = r.mem[i+1:]
			return line, nil
		}
	}
	return r.tail().ReadSlice(delim)
}

func (r *memReader) Peek(n int) ([]byte, error) {
	if r.rest == nil && n <= len(r.mem) {
		return r.mem[:n:n], nil
	}
	return r.tail().Peek(n)
}

func (r *memReader) Buffered() int {
	if r.rest == nil {
		return min(len(r.mem), memWindow)
	}
	return r.rest.Buffered()
}

func (r *memReader) Discard(n int) (int, error) {
	if r.rest == nil && n <= len(r.mem) {
		r.mem = r.mem[n:]
		return n, nil
	}
	return r.tail().Discard(n)
}

// Mapped reports whether the Splitter reads a mapped file.
func (s *Splitter) Mapped() bool { return s.mem != nil }

// Close unmaps the file, if NewFileSplitter mapped it: the messages that
// are slices of the map must not be used after it. It does not close the
// file.
func (s *Splitter) Close() error {
	m := s.mem
	if m == nil {
		return nil
	}
	s.mem = nil
	if err := unix.Munmap(m.data); err != nil {
		return fmt.Errorf("unmap the input: %w", err)
	}
	return nil
}

// mappedInput is a file mapped into memory for a Splitter.
type mappedInput struct {
	data     []byte // the file's bytes from offset 0 to its size when mapped
	base     int    // where the Splitter started reading: its input offset 0
	released int    // data[:released] was given back (MADV_DONTNEED)
}

// mapInput maps f from offset 0 to its size and moves f's offset to
// that size, where reading goes on after the map. It returns nil, and
// leaves f as it was, when f is not a regular file with bytes left after
// its offset, or cannot be mapped.
func mapInput(f *os.File) *mappedInput {
	if strconv.IntSize < 64 {
		return nil // a large mbox would not fit the address space
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() > math.MaxInt {
		return nil
	}
	base, err := f.Seek(0, io.SeekCurrent)
	if err != nil || base >= st.Size() {
		return nil
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		return nil
	}
	if _, err := f.Seek(st.Size(), io.SeekStart); err != nil {
		unix.Munmap(data)
		return nil
	}
	// The splitter reads the map once, front to back.
	unix.Madvise(data, unix.MADV_SEQUENTIAL)
	return &mappedInput{data: data, base: int(base)}
}

// slice returns the input from offset start to end as a slice of the
// map that cannot be appended to in place, or nil when the map does not
// hold it all (m may be nil).
func (m *mappedInput) slice(start, end int64) []byte {
	if m == nil || start < 0 || end < start || end > int64(len(m.data)-m.base) {
		return nil
	}
	lo, hi := m.base+int(start), m.base+int(end)
	return m.data[lo:hi:hi]
}

// Release says that the caller is done with msg, a message from Next,
// and with every message before it: the map's pages up to its end leave
// the process's resident memory. They stay mapped: a message that is
// read again after all (a rescue after a failed batch) is read from the
// file again, from the page cache. Release may be called from another
// goroutine than Next's, but not from two at once. It ignores messages
// that are not slices of the map.
func (s *Splitter) Release(msg []byte) {
	m := s.mem
	if m == nil || len(msg) == 0 {
		return
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(msg)))
	if !m.holds(p) {
		return // a copy
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(m.data)))
	end := int(p-start) + len(msg)
	end -= end % os.Getpagesize()
	if end <= m.released {
		return
	}
	// Only a hint: the pages are the file's, read again if touched.
	unix.Madvise(m.data[m.released:end], unix.MADV_DONTNEED)
	m.released = end
}

// recoverFault, deferred by Next, turns a fault reading the map (the
// file was truncated under it: the kernel sends SIGBUS) into an error
// instead of a crash.
// The goroutine must have debug.SetPanicOnFault set.
func (m *mappedInput) recoverFault(err *error) {
	r := recover()
	if r == nil {
		return
	}
	if f, ok := r.(interface{ Addr() uintptr }); ok && m.holds(f.Addr()) {
		*err = fmt.Errorf("the input file changed while it was read (truncated?): %v", r)
		return
	}
	panic(r)
}

func (m *mappedInput) holds(addr uintptr) bool {
	start := uintptr(unsafe.Pointer(unsafe.SliceData(m.data)))
	return addr >= start && addr-start < uintptr(len(m.data))
}
