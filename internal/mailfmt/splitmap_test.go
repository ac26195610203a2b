package mailfmt

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// tempInput writes data to a new file and returns it opened for reading
// at offset skip.
func tempInput(t testing.TB, data []byte, skip int64) *os.File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "in.mbox")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := f.Seek(skip, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	return f
}

// splitFileAndReader splits data[skip:] from a mapped file and from a
// reader, fails unless both give the same messages from the same ranges,
// and returns how many messages were slices of the map.
func splitFileAndReader(t testing.TB, data []byte, skip int64, opts SplitOptions) (mapped, total int) {
	t.Helper()
	opts.Now = func() time.Time { return splitNow }
	s := NewFileSplitter(tempInput(t, data, skip), opts)
	defer s.Close()
	ref := NewSplitter(bytes.NewReader(data[skip:]), opts)
	sameSplits(t, s, ref, "from a reader", func(i int, m []byte) {
		total++
		if s.mem != nil && s.mem.holds(uintptr(unsafe.Pointer(unsafe.SliceData(m)))) {
			mapped++
			if cap(m) != len(m) {
				t.Fatalf("message %d: a slice of the map with room to append in place", i)
			}
		}
	})
	return mapped, total
}

// TestFileSplitterSameAsReader: splitting a mapped file gives the same
// messages as splitting the same bytes from a reader, for the corpus, the
// golden cases and inputs that make the Splitter change messages; the
// messages it leaves as they are come from the map.
func TestFileSplitterSameAsReader(t *testing.T) {
	seeds, all := corpusMbox(t)
	long := bytes.Repeat([]byte("x"), 150<<10)
	tests := []struct {
		name      string
		in        []byte
		opts      SplitOptions
		mapped    bool // every message should come from the map
		notMapped bool // none should
	}{
		{name: "plain", in: []byte("From a@b Mon Jan  1 00:00:00 2001\nX: 1\n\nbody\n\nFrom c@d Tue Jan  2 00:00:00 2001\nY: 2\n\nmore\n\n"), mapped: true},
		{name: "crlf", in: []byte("From a@b Mon Jan  1 00:00:00 2001\r\nX: 1\r\n\r\nbody\r\n\r\nFrom c@d Tue Jan  2 00:00:00 2001\r\nY: 2\r\n\r\n"), mapped: true},
		{name: "long lines", in: fmt.Appendf(nil, "From a@b Mon Jan  1 00:00:00 2001\nX: 1\n\n%s\n\nFrom c@d Tue Jan  2 00:00:00 2001\nY: 2\n\n%s\n\n", long, long), mapped: true},
		{name: "content-length", in: fmt.Appendf(nil, "From a@b Mon Jan  1 00:00:00 2001\nContent-Length: %d\n\n%s\n\nFrom c@d Tue Jan  2 00:00:00 2001\nY: 2\n\n", len(long)+2, long), mapped: true},
		{name: "quoted from", in: []byte("From a@b Mon Jan  1 00:00:00 2001\n>From c\nX: 1\n\nb\n\n"), mapped: true},
		{name: "escaped body line", in: []byte("From a@b Mon Jan  1 00:00:00 2001\nX: 1\n\nb\nFrom here on\n\n"), notMapped: true},
		{name: "no blank line at the end", in: []byte("From a@b Mon Jan  1 00:00:00 2001\nX: 1\n\nb\n"), notMapped: true},
		{name: "no line end at the end", in: []byte("From a@b Mon Jan  1 00:00:00 2001\nX: 1\n\nb"), notMapped: true},
		{name: "unterminated header", in: []byte("From a@b Mon Jan  1 00:00:00 2001\nX: 1"), notMapped: true},
		{name: "header ended by a non-field", in: []byte("From a@b Mon Jan  1 00:00:00 2001\nX: 1\nnot a field\n\n"), notMapped: true},
		{name: "no From_ line", in: []byte("From: a@example.com\nX: 1\n\nb\n\n"), notMapped: true},
		{name: "bare CR", in: []byte("From a@b Mon Jan  1 00:00:00 2001\rX: 1\r\rb\r\rFrom c@d Tue Jan  2 00:00:00 2001\rY: 2\r\r"), notMapped: true},
		{name: "mboxrd", in: []byte("From a@b Mon Jan  1 00:00:00 2001\nX: 1\n\n>From x\n\n"), opts: SplitOptions{Mboxrd: true}, notMapped: true},
		{name: "byte order mark", in: []byte("\xef\xbb\xbfFrom a@b Mon Jan  1 00:00:00 2001\nX: 1\n\nb\n\n"), mapped: true},
		{name: "blank lines first", in: []byte("\n\n\nFrom a@b Mon Jan  1 00:00:00 2001\nX: 1\n\nb\n\n"), mapped: true},
		{name: "corpus", in: all},
		{name: "corpus crlf", in: bytes.ReplaceAll(all, []byte("\n"), []byte("\r\n"))},
		{name: "corpus berkeley", in: all, opts: SplitOptions{Berkeley: true}},
	}
	for _, s := range seeds {
		tests = append(tests, struct {
			name              string
			in                []byte
			opts              SplitOptions
			mapped, notMapped bool
		}{name: "seed", in: s})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mapped, total := splitFileAndReader(t, tc.in, 0, tc.opts)
			switch {
			case tc.mapped && mapped != total:
				t.Errorf("%d of %d messages from the map, want all", mapped, total)
			case tc.notMapped && mapped != 0:
				t.Errorf("%d of %d messages from the map, want none", mapped, total)
			}
		})
	}
	t.Run("the corpus is mostly mapped", func(t *testing.T) {
		mapped, total := splitFileAndReader(t, all, 0, SplitOptions{})
		if total == 0 || mapped < total/2 {
			t.Errorf("%d of %d corpus messages from the map", mapped, total)
		}
	})
}

// TestFileSplitterOffset: a file already read into (mfilter < mbox after
// a shell read a line of it) is split from where its offset is.
func TestFileSplitterOffset(t *testing.T) {
	in := []byte("junk line\nFrom a@b Mon Jan  1 00:00:00 2001\nX: 1\n\nb\n\nFrom c@d Tue Jan  2 00:00:00 2001\nY: 2\n\n")
	skip := int64(len("junk line\n"))
	mapped, total := splitFileAndReader(t, in, skip, SplitOptions{})
	if total != 2 || mapped != 2 {
		t.Errorf("%d messages, %d from the map; want 2 and 2", total, mapped)
	}
	// At the end of the file: nothing to map, nothing to split.
	s := NewFileSplitter(tempInput(t, in, int64(len(in))), SplitOptions{})
	if s.mem != nil {
		t.Error("mapped a file read to its end")
	}
	if _, err := s.Next(); err != io.EOF {
		t.Errorf("Next = %v, want EOF", err)
	}
}

// TestFileSplitterGrowing: what is appended to the file after it was
// mapped is split too, as formail reads on to the end.
func TestFileSplitterGrowing(t *testing.T) {
	first := "From a@b Mon Jan  1 00:00:00 2001\nX: 1\n\nb\n\n"
	f := tempInput(t, []byte(first), 0)
	s := NewFileSplitter(f, SplitOptions{})
	defer s.Close()
	if s.mem == nil {
		t.Fatal("a regular file was not mapped")
	}
	w, err := os.OpenFile(f.Name(), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	second := "From c@d Tue Jan  2 00:00:00 2001\nY: 2\n\nlater\n\n"
	if _, err := w.WriteString(second); err != nil {
		t.Fatal(err)
	}
	w.Close()
	var got []string
	for _, m := range nextAll(t, s) {
		got = append(got, string(m))
	}
	if want := []string{first, second}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("messages %q, want %q", got, want)
	}
}

// TestFileSplitterTruncated: a file truncated while it is split makes
// Next fail, where reading the map beyond the new end would otherwise
// crash the process (SIGBUS).
func TestFileSplitterTruncated(t *testing.T) {
	msg := "From a@b Mon Jan  1 00:00:00 2001\nX: 1\n\n" + strings.Repeat("body line\n", 100) + "\n"
	in := []byte(strings.Repeat(msg, 2000)) // 2 MB: far more than is read ahead
	f := tempInput(t, in, 0)
	s := NewFileSplitter(f, SplitOptions{})
	defer s.Close()
	if _, err := s.Next(); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(f.Name(), int64(len(msg))); err != nil {
		t.Fatal(err)
	}
	var err error
	for i := 0; err == nil && i < 2000; i++ {
		_, err = s.Next()
	}
	if err == nil || err == io.EOF || !strings.Contains(err.Error(), "changed while it was read") {
		t.Fatalf("Next after truncation = %v, want the input-changed error", err)
	}
}

// TestFileSplitterRelease: Release gives back the pages of the messages
// done with, so that the resident part of the map is the messages in
// flight however long the file, and a message read again after its
// release is intact.
func TestFileSplitterRelease(t *testing.T) {
	msg := "From a@b Mon Jan  1 00:00:00 2001\nX: 1\n\n" + strings.Repeat("body line\n", 400) + "\n"
	const n = 8000
	in := []byte(strings.Repeat(msg, n)) // 32 MB
	s := NewFileSplitter(tempInput(t, in, 0), SplitOptions{})
	defer s.Close()
	if s.mem == nil {
		t.Fatal("a regular file was not mapped")
	}
	var msgs [][]byte
	most := 0
	for len(msgs) < n {
		m, err := s.Next()
		if err != nil {
			t.Fatalf("message %d: %v", len(msgs), err)
		}
		msgs = append(msgs, m)
		if len(msgs)%250 == 0 { // a batch done
			most = max(most, mappedRSS(t, s.mem.data))
			s.Release(m)
		}
	}
	if rest := nextAll(t, s); len(rest) != 0 {
		t.Fatalf("%d messages more than the %d written", len(rest), n)
	}
	// A batch's messages, what was read ahead of them and what the
	// kernel maps around a fault (large folios): bounded, not the file.
	if limit := len(in) / 4; most > limit || most == 0 {
		t.Errorf("up to %d bytes of the map resident, want 1 to %d", most, limit)
	}
	if after := mappedRSS(t, s.mem.data); after > len(in)/8 {
		t.Errorf("%d bytes resident after the last release", after)
	}
	for i, m := range msgs {
		if string(m) != msg {
			t.Fatalf("message %d changed", i)
		}
	}
	s.Release(bytes.Clone(msgs[0])) // a copy: ignored
}

// mappedRSS reads from /proc/self/smaps how much of the mapping that
// holds data is resident.
func mappedRSS(t *testing.T, data []byte) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	start := strconv.FormatUint(uint64(uintptr(unsafe.Pointer(unsafe.SliceData(data)))), 16)
	sc := bufio.NewScanner(f)
	in := false
	for sc.Scan() {
		line := sc.Text()
		if addr, _, ok := strings.Cut(line, "-"); ok && !strings.Contains(addr, " ") && !strings.HasSuffix(line, ":") {
			in = strings.TrimLeft(addr, "0") == start
			continue
		}
		if v, ok := strings.CutPrefix(line, "Rss:"); in && ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatalf("smaps: %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no mapping at %s in /proc/self/smaps", start)
	return 0
}

// FuzzFileSplitter: for any input, a mapped file splits as a reader does.
func FuzzFileSplitter(f *testing.F) {
	for _, s := range corpusSeeds(f) {
		f.Add(s, false, false)
	}
	f.Add([]byte("From a@b Mon Jan  1 00:00:00 2001\r\nX: 1\r\n\r\nb\r\n\r\nFrom c@d Tue Jan  2 00:00:00 2001\r\nY: 2\r\n\r\n"), false, false)
	f.Add([]byte("\xef\xbb\xbfFrom a@b Mon Jan  1 00:00:00 2001\n>From c\n>>From d\nContent-Length: 3\n\nabc\nFrom e@f Wed Jan  3 00:00:00 2001\nZ: 1\n"), true, true)
	f.Fuzz(func(t *testing.T, in []byte, berkeley, mboxrd bool) {
		if len(in) == 0 {
			return
		}
		splitFileAndReader(t, in, 0, SplitOptions{Berkeley: berkeley, Mboxrd: mboxrd})
	})
}

// TestFileSplitterKeepsLargeBuffer: over a map the Splitter hands out a
// large message that it leaves as it is as a slice of the map, with no
// copy of it made on the way (a 200 MB message took 985 MB of
// allocations); one it changes is read into the same buffer as the last.
// From a reader it lets a buffer larger than maxKeptBuffer go, as its
// messages are copies held by the caller.
func TestFileSplitterKeepsLargeBuffer(t *testing.T) {
	body := strings.Repeat("0123456789abcdef0123456789abcdef\n", 3*maxKeptBuffer/33)
	big := "From a@b Mon Jan  1 00:00:00 2001\nX: 1\n\n" + body + "\n"
	quoted := "From a@b Mon Jan  1 00:00:00 2001\nX: 1\n\n" + body + "From here\n" + body + "\n"
	for _, tc := range []struct {
		name   string
		in     string
		mapped bool
		kept   bool
	}{
		{"map, as it is", big + big, true, false},
		{"map, changed", quoted + quoted, true, true},
		{"reader", big + big, false, false},
	} {
		var s *Splitter
		if tc.mapped {
			s = NewFileSplitter(tempInput(t, []byte(tc.in), 0), SplitOptions{})
		} else {
			s = NewSplitter(strings.NewReader(tc.in), SplitOptions{})
		}
		defer s.Close()
		var allocs runtime.MemStats
		runtime.ReadMemStats(&allocs)
		before := allocs.TotalAlloc
		m, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&allocs)
		if tc.mapped && !tc.kept && allocs.TotalAlloc-before > uint64(len(m))/4 {
			t.Errorf("%s: %d bytes allocated for a message of %d handed out from the map", tc.name, allocs.TotalAlloc-before, len(m))
		}
		if kept := cap(s.buf) >= len(m)/2; kept != tc.kept {
			t.Errorf("%s: buffer of %d bytes kept after a message of %d; want kept: %v", tc.name, cap(s.buf), len(m), tc.kept)
		}
		want := tc.in[:len(tc.in)/2]
		if tc.kept {
			want = strings.Replace(want, "\nFrom here", "\n>From here", 1)
		}
		if string(m) != want {
			t.Errorf("%s: first message %d bytes, want %d", tc.name, len(m), len(want))
		}
		if m, err := s.Next(); err != nil || string(m) != want {
			t.Errorf("%s: second message %d bytes, %v", tc.name, len(m), err)
		}
	}
}
