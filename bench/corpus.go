// Package bench builds the inputs of mfilter's speed comparisons and holds
// its Go benchmarks. The side-by-side runs against procmail (and later fdm)
// are made by cmd/mbench, which bench/run.sh builds and drives.
package bench

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/mfilter/mfilter/internal/mailfmt"
)

// DefaultMessages is how many messages the benchmark mbox holds.
const DefaultMessages = 2000

// Postmark is the date of every From_ line of a built mbox, fixed so that
// the mbox is the same byte for byte on every run.
const Postmark = "Thu Jan  1 00:00:00 2026"

// DefaultSender is the From_ address of corpus messages that have none.
const DefaultSender = "bench@example.org"

// CorpusDir is the test corpus, relative to the bench directory.
const CorpusDir = "../testdata/corpus/messages"

// Message is one corpus file made into an mbox entry.
type Message struct {
	Name  string // path relative to the corpus directory
	Entry []byte // From_ line, message with "From " lines quoted, blank line
}

// LoadCorpus reads every file under dir, in name order, and makes each an
// mbox entry.
func LoadCorpus(dir string) ([]Message, error) {
	var msgs []Message
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		msgs = append(msgs, Message{Name: rel, Entry: Entry(raw)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return nil, fmt.Errorf("no messages under %s", dir)
	}
	sort.Slice(msgs, func(i, j int) bool { return msgs[i].Name < msgs[j].Name })
	return msgs, nil
}

// Entry makes raw into an mbox entry the way an MTA appends it to a
// mailbox: a From_ line "From SENDER  Postmark" (SENDER taken from an
// existing From_ line, which is replaced, else DefaultSender), every later
// line that starts with "From " quoted as ">From ", a final newline, and a
// blank line.
func Entry(raw []byte) []byte {
	sender := DefaultSender
	if bytes.HasPrefix(raw, []byte("From ")) {
		line, rest, _ := bytes.Cut(raw, []byte("\n"))
		if f := strings.Fields(string(line[len("From "):])); len(f) > 0 {
			sender = f[0]
		}
		raw = rest
	}
	var b bytes.Buffer
	b.Grow(len(raw) + 100)
	b.WriteString("From " + sender + "  " + Postmark + "\n")
	if bytes.HasPrefix(raw, []byte("From ")) {
		b.WriteByte('>')
	}
	b.Write(bytes.ReplaceAll(raw, []byte("\nFrom "), []byte("\n>From ")))
	if len(raw) > 0 && raw[len(raw)-1] != '\n' {
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	return b.Bytes()
}

// Build concatenates n entries, cycling through msgs in order.
func Build(msgs []Message, n int) []byte {
	size := 0
	for i := range n {
		size += len(msgs[i%len(msgs)].Entry)
	}
	out := make([]byte, 0, size)
	for i := range n {
		out = append(out, msgs[i%len(msgs)].Entry...)
	}
	return out
}

// Rejected is a corpus message left out of the benchmark mbox.
type Rejected struct {
	Name   string
	Reason string
}

// refEntry surrounds each message under test in Select.
var refEntry = Entry([]byte("From: ref@example.org\nSubject: ref\n\nref\n"))

// Select keeps the messages that formail and mfilter's splitter both
// split identically: each message is put between two plain messages, and
// it is kept when formail -s and mailfmt.Splitter both find three
// messages and hand on the same bytes for it. formail glues a message
// whose first header name it does not know (Recieved:, for one) to the
// message before it; such messages would make the two tools file
// different numbers of files, which says nothing about speed.
func Select(msgs []Message, formail string) (kept []Message, rejected []Rejected, err error) {
	// In memory if possible: thousands of short-lived files on the disk
	// under test would slow the file creation that is being measured
	// (ext4 without a journal skips recently freed inodes).
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	tmp, err := os.MkdirTemp(base, "mbench-select-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(tmp)
	reasons := make([]string, len(msgs))
	errs := make([]error, len(msgs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2*runtime.NumCPU())
	for i := range msgs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			dir := filepath.Join(tmp, fmt.Sprint(i))
			reasons[i], errs[i] = compareSplit(formail, dir, msgs[i].Entry)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	for i, m := range msgs {
		if reasons[i] == "" {
			kept = append(kept, m)
		} else {
			rejected = append(rejected, Rejected{m.Name, reasons[i]})
		}
	}
	if len(kept) == 0 {
		return nil, rejected, errors.New("formail and mfilter split no corpus message alike")
	}
	return kept, rejected, nil
}

// compareSplit returns why formail and Splitter disagree on entry, or "".
func compareSplit(formail, dir string, entry []byte) (string, error) {
	mbox := slices.Concat(refEntry, entry, refEntry)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", err
	}
	got, err := FormailSplit(formail, dir, mbox)
	if err != nil {
		return "", err
	}
	want, err := Split(mbox)
	if err != nil {
		return "", err
	}
	switch {
	case len(got) != 3 || len(want) != 3:
		return fmt.Sprintf("formail splits it into %d messages, mfilter into %d", len(got)-2, len(want)-2), nil
	case !bytes.Equal(got[1], want[1]):
		return "formail and mfilter hand on different bytes", nil
	}
	return "", nil
}

// FormailSplit runs formail -s on mbox and returns the messages it hands
// to its command. dir must be an empty directory.
func FormailSplit(formail, dir string, mbox []byte) ([][]byte, error) {
	cmd := exec.Command(formail, "-s", "sh", "-c", `cat > "$1/$FILENO"`, "sh", dir)
	cmd.Env = append(os.Environ(), "FILENO=000000")
	cmd.Stdin = bytes.NewReader(mbox)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%s -s: %v: %s", formail, err, out)
	}
	names, err := filepath.Glob(filepath.Join(dir, "[0-9]*"))
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var msgs [][]byte
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, b)
	}
	return msgs, nil
}

// Split returns the messages of mbox as mfilter's splitter hands them on.
func Split(mbox []byte) ([][]byte, error) {
	s := mailfmt.NewSplitter(bytes.NewReader(mbox), mailfmt.SplitOptions{})
	var msgs [][]byte
	for {
		m, err := s.Next()
		if err != nil {
			if err == io.EOF {
				return msgs, nil
			}
			return nil, err
		}
		msgs = append(msgs, bytes.Clone(m))
	}
}

// Mbox loads the corpus at dir, keeps what formail and mfilter split alike
// (all of it when all is set), and builds an n-message mbox from it.
func Mbox(dir, formail string, n int, all bool) (mbox []byte, kept []Message, rejected []Rejected, err error) {
	msgs, err := LoadCorpus(dir)
	if err != nil {
		return nil, nil, nil, err
	}
	kept = msgs
	if !all {
		kept, rejected, err = Select(msgs, formail)
		if err != nil {
			return nil, nil, nil, err
		}
	}
	return Build(kept, n), kept, rejected, nil
}
