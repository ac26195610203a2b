package mailfmt

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"testing/iotest"
	"time"
)

// splitBoth splits in with the Splitter and with refSplitter, the
// Splitter before it reused buffers and took body lines in bulk, reading
// through r (which may hand out the input in small pieces), and fails
// unless both give the same messages from the same input ranges.
func splitBoth(t *testing.T, in []byte, opts SplitOptions, wrap func(io.Reader) io.Reader) {
	t.Helper()
	opts.Now = func() time.Time { return splitNow }
	s := NewSplitter(wrap(bytes.NewReader(in)), opts)
	ref := refNewSplitter(wrap(bytes.NewReader(in)), opts)
	sameSplits(t, s, ref, "before", nil)
}

// splitSource is what the splitters compared have in common.
type splitSource interface {
	Next() ([]byte, error)
	Offsets() (start, end int64)
}

// sameSplits fails unless s and ref (named refName in failures) give the
// same messages from the same input ranges, and the same error at the
// end; each, when set, sees each message of s.
func sameSplits(t testing.TB, s, ref splitSource, refName string, each func(i int, m []byte)) {
	t.Helper()
	for i := 0; ; i++ {
		m, err := s.Next()
		rm, rerr := ref.Next()
		if (err == nil) != (rerr == nil) || err != nil && err.Error() != rerr.Error() {
			t.Fatalf("message %d: error %v, %s %v", i, err, refName, rerr)
		}
		if err != nil {
			return
		}
		if !bytes.Equal(m, rm) {
			t.Fatalf("message %d differs:\n\tgot %q\n\t%s %q", i, m, refName, rm)
		}
		a, b := s.Offsets()
		ra, rb := ref.Offsets()
		if a != ra || b != rb {
			t.Fatalf("message %d: range [%d,%d), %s [%d,%d)", i, a, b, refName, ra, rb)
		}
		if each != nil {
			each(i, m)
		}
	}
}

func sameSplitReaders() map[string]func(io.Reader) io.Reader {
	return map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"onebyte":  iotest.OneByteReader,
		"halfread": iotest.HalfReader,
	}
}

// TestSplitterSameAsBefore: the Splitter splits the corpus (every file
// alone, and all of them as one mbox) and the golden cases exactly as
// it did before it was made faster, however the input arrives.
func TestSplitterSameAsBefore(t *testing.T) {
	seeds, all := corpusMbox(t)
	long := bytes.Repeat([]byte("x"), 150<<10)
	synthetic := [][]byte{
		// Lines longer than the read buffer, before a From line that
		// separates and one that does not.
		fmt.Appendf(nil, "From a@b Mon Jan  1 00:00:00 2001\nX: 1\n\n%s\nFrom c@d Tue Jan  2 00:00:00 2001\nY: 2\n\n%s\n\nFrom e@f Wed Jan  3 00:00:00 2001\nZ: 3\n\nlast", long, long),
		// A Content-Length body that spans buffers, right and wrong.
		fmt.Appendf(nil, "From a@b Mon Jan  1 00:00:00 2001\nContent-Length: %d\n\n%s\nFrom c@d Tue Jan  2 00:00:00 2001\nY: 2\n\n", len(long)+1, long),
		fmt.Appendf(nil, "From a@b Mon Jan  1 00:00:00 2001\nContent-Length: %d\n\n%s\nFrom c@d Tue Jan  2 00:00:00 2001\nY: 2\n\n", len(long)-7, long),
		// Blank lines only after a Content-Length body, then a From line.
		[]byte("From a@b Mon Jan  1 00:00:00 2001\nContent-Length: 2\n\nab\n\n\n\nFrom c@d Tue Jan  2 00:00:00 2001\nY: 2\n\n"),
		[]byte("From a@b Mon Jan  1 00:00:00 2001\nContent-Length: 2\n\nab\n\nx\nFrom c@d Tue Jan  2 00:00:00 2001\nY: 2\n\n"),
		bytes.Repeat([]byte("From a@b Mon Jan  1 00:00:00 2001\nX: 1\n\nFrom me\n\nFrom x@y Thu Jan  4 00:00:00 2001\n>From z\nW: 1\n\n"), 5000),
		bytes.ReplaceAll(all, []byte("\n"), []byte("\r\n")),
		bytes.ReplaceAll(all, []byte("\n"), []byte("\r")),
	}
	inputs := append(append(seeds, all), synthetic...)
	for name, wrap := range sameSplitReaders() {
		for _, opts := range []SplitOptions{{}, {Berkeley: true}, {Mboxrd: true}} {
			t.Run(fmt.Sprintf("%s/berkeley=%v/mboxrd=%v", name, opts.Berkeley, opts.Mboxrd), func(t *testing.T) {
				for _, in := range inputs {
					splitBoth(t, in, opts, wrap)
				}
			})
		}
	}
}

// FuzzSplitterSameAsBefore: for any input, the Splitter gives what it
// gave before it was made faster.
func FuzzSplitterSameAsBefore(f *testing.F) {
	for _, s := range corpusSeeds(f) {
		f.Add(s, false, false, uint8(0))
	}
	f.Add([]byte("From a@b Mon Jan  1 00:00:00 2001\r\nX: 1\r\n\r\nb\r\n\r\nFrom c@d Tue Jan  2 00:00:00 2001\r\nY: 2\r\n\r\n"), false, false, uint8(1))
	f.Add([]byte("From a@b Mon Jan  1 00:00:00 2001\rX: 1\r\rb\r\rFrom c@d Tue Jan  2 00:00:00 2001\rY: 2\r\r"), false, false, uint8(2))
	f.Add([]byte("\xef\xbb\xbfFrom a@b Mon Jan  1 00:00:00 2001\n>From c\n>>From d\nContent-Length: 3\n\nabc\nFrom e@f Wed Jan  3 00:00:00 2001\nZ: 1\n"), true, true, uint8(0))
	f.Add([]byte("From a@b Mon Jan  1 00:00:00 2001\nX: 1\n\n\n\nFrom c\nFrom d e\nY: 2\n\nFrom x Tue Jan  2 03:04:05 2024\nZ: 3\n"), false, false, uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, berkeley, mboxrd bool, reader uint8) {
		wraps := []func(io.Reader) io.Reader{func(r io.Reader) io.Reader { return r }, iotest.OneByteReader, iotest.HalfReader}
		splitBoth(t, in, SplitOptions{Berkeley: berkeley, Mboxrd: mboxrd}, wraps[int(reader)%len(wraps)])
	})
}
