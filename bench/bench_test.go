package bench

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/filer"
	"github.com/mfilter/mfilter/internal/maillog"
)

// The Go benchmarks measure mfilter's library alone on the mbox that
// bench/run.sh gives to formail and mfilter (same corpus, same selection,
// same 2,000 messages). They report ns/op for the whole mbox, and ns/msg.
//
//	go test -run '^$' -bench . -benchmem ./bench
//	go test -run '^$' -bench FileMaildir -cpuprofile cpu.out ./bench
//
// BENCH_MBOX=FILE benchmarks that mbox instead; BENCH_DIR=DIR files into
// DIR (a file system other than $TMPDIR's) instead of a test temp dir.

var (
	mboxOnce sync.Once
	mboxData []byte
	mboxMsgs int
	mboxErr  error
)

func benchMbox(b *testing.B) ([]byte, int) {
	b.Helper()
	mboxOnce.Do(func() {
		if path := os.Getenv("BENCH_MBOX"); path != "" {
			mboxData, mboxErr = os.ReadFile(path)
		} else {
			var formail string
			formail, mboxErr = exec.LookPath("formail")
			if mboxErr == nil {
				mboxData, _, _, mboxErr = Mbox(CorpusDir, formail, DefaultMessages, false)
			}
		}
		if mboxErr == nil {
			var msgs [][]byte
			msgs, mboxErr = Split(mboxData)
			mboxMsgs = len(msgs)
		}
	})
	if mboxErr != nil {
		b.Fatal(mboxErr)
	}
	return mboxData, mboxMsgs
}

func perMessage(b *testing.B, msgs int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(msgs), "ns/msg")
}

// BenchmarkSplit splits the mbox into messages, as mfilter < mbox does
// before filing.
func BenchmarkSplit(b *testing.B) {
	mbox, msgs := benchMbox(b)
	b.SetBytes(int64(len(mbox)))
	b.ReportAllocs()
	for b.Loop() {
		s := deliver.NewSplitter(bytes.NewReader(mbox), deliver.SplitOptions{})
		n := 0
		for {
			_, err := s.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		if n != msgs {
			b.Fatalf("split %d messages, want %d", n, msgs)
		}
	}
	perMessage(b, msgs)
}

// BenchmarkFileMaildir files the mbox into a new maildir through the
// library, as mfilter --default inbox/ < mbox does: split, route, write,
// fsync in batches, link into new/. Each iteration gets a new directory.
func BenchmarkFileMaildir(b *testing.B) {
	mbox, msgs := benchMbox(b)
	base := b.TempDir()
	if dir := os.Getenv("BENCH_DIR"); dir != "" {
		var err error
		if base, err = os.MkdirTemp(dir, "bench-"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(base) })
	}
	b.SetBytes(int64(len(mbox)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		dir := filepath.Join(base, strconv.Itoa(i))
		folder, err := deliver.ParseFolder(dir, "inbox/")
		if err != nil {
			b.Fatal(err)
		}
		f := &filer.Filer{
			Writer: deliver.NewWriter(deliver.Options{}),
			Router: filer.DefaultRouter{Folder: folder},
			Log:    maillog.New(nil),
			Rescue: filepath.Join(dir, "rescue.mbox"),
		}
		sum, err := f.FileAll(context.Background(), deliver.NewSplitter(bytes.NewReader(mbox), deliver.SplitOptions{}))
		if err != nil {
			b.Fatal(err)
		}
		if sum.Delivered != msgs {
			b.Fatalf("filed %d messages, want %d", sum.Delivered, msgs)
		}
	}
	perMessage(b, msgs)
}
