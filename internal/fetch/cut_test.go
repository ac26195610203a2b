package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/filer"
	"github.com/mfilter/mfilter/internal/maillog"
	"github.com/mfilter/mfilter/internal/mailtest"
	"github.com/mfilter/mfilter/remote"
)

// cutSpool is a local spool whose transfers end early: after cutAt bytes
// (none when negative) with an error, or, with eof, with a clean end of
// file, as a dropped connection can look.
type cutSpool struct {
	*remote.LocalSpool
	cutAt int64
	eof   bool
}

func (s *cutSpool) Open(ctx context.Context, c remote.ClaimedFile, off int64) (*remote.Stream, error) {
	st, err := s.LocalSpool.Open(ctx, c, off)
	if err != nil || s.cutAt < 0 {
		return st, err
	}
	return remote.NewStream(&cutReader{r: st, left: s.cutAt, eof: s.eof}, st.Codec, st.Wire, st.Close), nil
}

type cutReader struct {
	r    io.Reader
	left int64
	eof  bool
}

var errCut = errors.New("connection cut")

func (c *cutReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		if c.eof {
			return 0, io.EOF
		}
		return 0, errCut
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

// idRouter files by the last digit of X-Test-ID: 3 and 7 into an mbox,
// 8 into an MH folder, the rest into a maildir.
type idRouter struct{ inbox, mbox, mh deliver.Folder }

func (r idRouter) Route(_ context.Context, msg []byte) (filer.Plan, error) {
	id := testID(msg)
	f := r.inbox
	switch id[len(id)-1] {
	case '3', '7':
		f = r.mbox
	case '8':
		f = r.mh
	}
	return filer.Plan{Folders: []deliver.Folder{f}}, nil
}

func testID(m []byte) string {
	i := bytes.Index(m, []byte("X-Test-ID: "))
	if i < 0 {
		return "?"
	}
	return string(m[i+11 : i+11+bytes.IndexByte(m[i+11:], '\n')])
}

// TestCutTransfers cuts the transfer at random points, with an error or
// a clean early end, run after run with new mail arriving; after a last
// uncut run every message is filed exactly once, byte for byte.
func TestCutTransfers(t *testing.T) {
	w := newWorld(t)
	spool := &cutSpool{LocalSpool: w.f.Spool.(*remote.LocalSpool)}
	w.f.Spool = spool
	var r idRouter
	for _, p := range []struct {
		f    *deliver.Folder
		spec string
	}{{&r.inbox, "inbox/"}, {&r.mbox, "some.mbox"}, {&r.mh, "mh/."}} {
		f, err := deliver.ParseFolder(w.mail, p.spec)
		if err != nil {
			t.Fatal(err)
		}
		*p.f = f
	}
	w.f.Filer = &filer.Filer{Writer: w.f.Writer, Router: r, Log: maillog.New(nil)}
	rng := rand.New(rand.NewPCG(5, 6))
	var all [][]byte
	cut := 0
	for run := range 60 {
		msgs := mailtest.Messages(t, 40+rng.IntN(40), fmt.Sprintf("r%d", run))
		appendFile(t, w.spool, msgs)
		all = append(all, msgs...)
		size := int64(len(bytes.Join(msgs, nil)))
		spool.cutAt, spool.eof = rng.Int64N(size), run%2 == 1
		if _, err := w.f.Run(context.Background()); err != nil {
			cut++
		}
	}
	spool.cutAt = -1
	if _, err := w.f.Run(context.Background()); err != nil {
		t.Fatalf("uncut run: %v", err)
	}
	if cut < 30 {
		t.Errorf("only %d of 60 runs were cut short", cut)
	}
	got, want := mailtest.FiledIDs(t, w.mail), mailtest.WantIDs(all)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("filed %d messages, the spool had %d; difference: %s", len(got), len(want), mailtest.Mismatch(got, want))
	}
	w.clean(t)
}

func appendFile(t *testing.T, path string, msgs [][]byte) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(bytes.Join(msgs, nil)); err != nil {
		t.Fatal(err)
	}
}
