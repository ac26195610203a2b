// Package mailtest holds what tests of several packages use to check
// that mail was filed exactly once: distinct test messages from the
// corpus, and the ids of what the folders hold.
package mailtest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/mfilter/mfilter/internal/mailfmt"
)

// corpus is the repository's testdata/corpus/messages.
func corpus() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "corpus", "messages")
}

// Messages returns n messages from the corpus, cycled, each a plain LF
// message with a From_ line and a unique "X-Test-ID: TAG-I" field first,
// so that every message splits the same way whatever the corpus file
// holds.
func Messages(t testing.TB, n int, tag string) [][]byte {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(corpus(), "*", "*.eml"))
	sort.Strings(files)
	if len(files) == 0 {
		t.Fatal("no corpus messages in " + corpus())
	}
	var out [][]byte
	for i := range n {
		data, err := os.ReadFile(files[i%len(files)])
		if err != nil {
			t.Fatal(err)
		}
		data = bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))
		data = bytes.ReplaceAll(data, []byte("\nFrom "), []byte("\n>From "))
		if bytes.HasPrefix(data, []byte("From ")) {
			data = data[bytes.IndexByte(data, '\n')+1:]
		}
		if !bytes.HasSuffix(data, []byte("\n")) {
			data = append(data, '\n')
		}
		out = append(out, fmt.Appendf(nil, "From sender@example.org Mon Jan  1 00:00:00 2024\nX-Test-ID: %s-%d\n%s\n", tag, i, data))
	}
	return out
}

// FiledIDs returns the ID of every message in the folders under mail:
// a file in a maildir's new/ or cur/ is one message, any other file an
// mbox (an MH message is an mbox of one). tmp/, dot files and logs are
// left out. Sorted.
func FiledIDs(t testing.TB, mail string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(mail, func(p string, d os.DirEntry, err error) error {
		rel, _ := filepath.Rel(mail, p)
		if err != nil || d.IsDir() || strings.Contains("/"+rel, "/tmp/") || strings.HasSuffix(p, ".log") || strings.HasPrefix(d.Name(), ".") {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if b := filepath.Base(filepath.Dir(p)); b == "new" || b == "cur" {
			out = append(out, ID(data))
			return nil
		}
		s := mailfmt.NewSplitter(bytes.NewReader(data), mailfmt.SplitOptions{})
		for {
			m, err := s.Next()
			if err != nil {
				return nil
			}
			out = append(out, ID(m))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// ID is a message's X-Test-ID and a hash of its bytes as every folder
// keeps them: procmail's Content-Length rewrite applied (it is
// idempotent), the From_ line and trailing newlines left out.
func ID(m []byte) string {
	id := "?"
	if i := bytes.Index(m, []byte("X-Test-ID: ")); i >= 0 {
		id = string(m[i+11 : i+11+bytes.IndexByte(m[i+11:], '\n')])
	}
	body := mailfmt.ContentLengthFixed(m, false)
	if bytes.HasPrefix(body, []byte("From ")) {
		body = body[bytes.IndexByte(body, '\n')+1:]
	}
	sum := sha256.Sum256(bytes.TrimRight(body, "\n"))
	return id + "/" + hex.EncodeToString(sum[:6])
}

// WantIDs are the IDs of msgs as the splitter hands them on (it adds a
// blank line after a header that lacks one, as formail does), sorted.
func WantIDs(msgs [][]byte) []string {
	var out []string
	for _, m := range msgs {
		split, err := mailfmt.NewSplitter(bytes.NewReader(m), mailfmt.SplitOptions{}).Next()
		if err != nil {
			split = m
		}
		out = append(out, ID(split))
	}
	sort.Strings(out)
	return out
}

// Mismatch describes the first few differences between two sorted id
// lists: each id with how many more times got has it than want.
func Mismatch(got, want []string) string {
	n := map[string]int{}
	for _, x := range got {
		n[x]++
	}
	for _, x := range want {
		n[x]--
	}
	var d []string
	for k, v := range n {
		if v != 0 {
			d = append(d, fmt.Sprintf("%s:%+d", k, v))
		}
	}
	sort.Strings(d)
	if len(d) > 5 {
		d = d[:5]
	}
	return strings.Join(d, " ")
}

// ListDir returns the names in dir.
func ListDir(t testing.TB, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}
