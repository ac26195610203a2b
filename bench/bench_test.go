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
	"github.com/mfilter/mfilter/internal/mailfmt"
	"github.com/mfilter/mfilter/internal/maillog"
	"github.com/mfilter/mfilter/rules"
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
		s := mailfmt.NewSplitter(bytes.NewReader(mbox), mailfmt.SplitOptions{})
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
		sum, err := f.FileAll(context.Background(), mailfmt.NewSplitter(bytes.NewReader(mbox), mailfmt.SplitOptions{}))
		if err != nil {
			b.Fatal(err)
		}
		if sum.Delivered != msgs {
			b.Fatalf("filed %d messages, want %d", sum.Delivered, msgs)
		}
	}
	perMessage(b, msgs)
}

var (
	rulesOnce sync.Once
	rulesData []byte
	rulesMsgs [][]byte
	rulesErr  error
)

// rulesMbox is the tagged mbox of the rules scenario (bench/run.sh rules
// also leaves out the messages that fdm files differently; the Go
// benchmarks, which do not run fdm, keep them). BENCH_RULES_MBOX=FILE
// benchmarks that mbox instead.
func rulesMbox(b *testing.B) ([]byte, [][]byte) {
	b.Helper()
	rulesOnce.Do(func() {
		if path := os.Getenv("BENCH_RULES_MBOX"); path != "" {
			rulesData, rulesErr = os.ReadFile(path)
		} else {
			var formail string
			formail, rulesErr = exec.LookPath("formail")
			if rulesErr == nil {
				var kept []Message
				_, kept, _, rulesErr = Mbox(CorpusDir, formail, 1, false)
				rulesData = BuildRules(kept, DefaultMessages)
			}
		}
		if rulesErr == nil {
			rulesMsgs, rulesErr = Split(rulesData)
		}
	})
	if rulesErr != nil {
		b.Fatal(rulesErr)
	}
	return rulesData, rulesMsgs
}

func rulesEngine(b *testing.B, dir, yaml string) *rules.Engine {
	b.Helper()
	cfg, err := rules.Parse(filepath.Join(dir, "rules.yaml"), []byte(yaml))
	if err != nil {
		b.Fatal(err)
	}
	return rules.NewEngine(cfg, rules.Options{Default: "inbox/", Vars: map[string]string{"MAILDIR": dir}})
}

// BenchmarkRules evaluates the 15 rules of the rules scenario on each
// message of its mbox (split beforehand): routing alone, nothing written.
func BenchmarkRules(b *testing.B) {
	mbox, msgs := rulesMbox(b)
	eng := rulesEngine(b, b.TempDir(), RulesYAML(b.TempDir()))
	b.SetBytes(int64(len(mbox)))
	b.ReportAllocs()
	for b.Loop() {
		for _, m := range msgs {
			if _, err := eng.Evaluate(context.Background(), m, rules.EvalOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	}
	perMessage(b, len(msgs))
}

// BenchmarkFileRules files the rules mbox as mfilter --rules does: split,
// evaluate the 15 rules, write into 14 maildirs and 2 mboxes, commit in
// batches. Each iteration gets a new directory.
func BenchmarkFileRules(b *testing.B) {
	mbox, msgs := rulesMbox(b)
	base := benchBase(b)
	b.SetBytes(int64(len(mbox)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		dir := filepath.Join(base, strconv.Itoa(i))
		if err := os.Mkdir(dir, 0o700); err != nil {
			b.Fatal(err)
		}
		root, err := os.OpenRoot(dir)
		if err != nil {
			b.Fatal(err)
		}
		f := &filer.Filer{
			Writer: deliver.NewWriter(deliver.Options{}),
			Router: &filer.RulesRouter{Engine: rulesEngine(b, dir, RulesYAML(dir)), Base: dir, Root: root},
			Log:    maillog.New(nil),
			Rescue: filepath.Join(dir, "rescue.mbox"),
		}
		sum, err := f.FileAll(context.Background(), mailfmt.NewSplitter(bytes.NewReader(mbox), mailfmt.SplitOptions{}))
		root.Close()
		if err != nil {
			b.Fatal(err)
		}
		if sum.Delivered != len(msgs) {
			b.Fatalf("filed %d messages, want %d", sum.Delivered, len(msgs))
		}
	}
	perMessage(b, len(msgs))
}

// benchBase is where the filing benchmarks make their folders: a test
// temporary directory, or a new one under BENCH_DIR.
func benchBase(b *testing.B) string {
	b.Helper()
	dir := os.Getenv("BENCH_DIR")
	if dir == "" {
		return b.TempDir()
	}
	base, err := os.MkdirTemp(dir, "bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(base) })
	return base
}
