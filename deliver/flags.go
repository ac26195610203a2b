package deliver

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/mfilter/mfilter/internal/mailfmt"
)

// Flags are the state a mail reader keeps for a message (IMAP's system
// flags and keywords), set on delivery or kept by a re-file.
type Flags struct {
	Seen, Answered, Flagged, Deleted, Draft bool
	// Keywords are user keywords ($Junk, work); a maildir holds them as
	// Dovecot does (dovecot-keywords), an mbox in X-Keywords.
	Keywords []string
	// Old: a reader has seen that the message is there, though it may
	// not have read it (maildir cur/, mbox Status O). Any flag implies
	// it.
	Old bool
	// Exact: these are all of the message's flags (a refile carries
	// them), so that one not set is not: an MH message not Seen joins
	// the unseen sequence, which a plain delivery does not do.
	Exact bool
}

// IsZero reports whether f sets nothing: not even Old (Exact alone sets
// nothing).
func (f Flags) IsZero() bool {
	return !f.Old && !f.Seen && !f.Answered && !f.Flagged && !f.Deleted && !f.Draft && len(f.Keywords) == 0
}

// Join is f with the flags and keywords of g added: a message's own
// flags and those a rule sets.
func (f Flags) Join(g Flags) Flags {
	f.Seen, f.Answered, f.Flagged = f.Seen || g.Seen, f.Answered || g.Answered, f.Flagged || g.Flagged
	f.Deleted, f.Draft, f.Old = f.Deleted || g.Deleted, f.Draft || g.Draft, f.Old || g.Old
	f.Exact = f.Exact || g.Exact
	f.Keywords = append(slices.Clip(f.Keywords), g.Keywords...)
	f.Keywords = f.uniqueKeywords()
	return f
}

// uniqueKeywords is f's keywords, each once, in order.
func (f Flags) uniqueKeywords() []string {
	var out []string
	for _, k := range f.Keywords {
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// maildirInfo is the ":2," info of a maildir file name for f: the flag
// letters in ASCII order (D draft, F flagged, R replied, S seen, T
// trashed), then a letter for each keyword as kw maps it.
func (f Flags) maildirInfo(kw map[string]byte) string {
	var b []byte
	for _, c := range []struct {
		on     bool
		letter byte
	}{{f.Draft, 'D'}, {f.Flagged, 'F'}, {f.Answered, 'R'}, {f.Seen, 'S'}, {f.Deleted, 'T'}} {
		if c.on {
			b = append(b, c.letter)
		}
	}
	var kws []byte
	for _, k := range f.Keywords {
		if l, ok := kw[k]; ok && !slices.Contains(kws, l) {
			kws = append(kws, l)
		}
	}
	slices.Sort(kws)
	return ":2," + string(b) + string(kws)
}

// ParseMaildirInfo reads the flags of a maildir file name's ":2," info;
// keyword letters are looked up in kw (letter -> keyword), as a maildir's
// dovecot-keywords file gives them.
func ParseMaildirInfo(name string, kw map[byte]string) Flags {
	var f Flags
	i := strings.LastIndex(name, ":2,")
	if i < 0 {
		return f
	}
	for _, c := range []byte(name[i+3:]) {
		switch c {
		case 'D':
			f.Draft = true
		case 'F':
			f.Flagged = true
		case 'R':
			f.Answered = true
		case 'S':
			f.Seen = true
		case 'T':
			f.Deleted = true
		default:
			if k, ok := kw[c]; ok {
				f.Keywords = append(f.Keywords, k)
			}
		}
	}
	return f
}

// maxKeywords is how many keywords a maildir holds (letters a to z).
const maxKeywords = 26

// ReadMaildirKeywords reads a maildir's dovecot-keywords file: lines of
// "N keyword", where N from 0 to 25 is the letter 'a'+N in file names. A
// missing file is no keywords.
func ReadMaildirKeywords(dir string) (map[byte]string, error) {
	out := make(map[byte]string)
	f, err := os.Open(filepath.Join(dir, "dovecot-keywords"))
	if os.IsNotExist(err) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		num, kw, ok := strings.Cut(sc.Text(), " ")
		n, err := strconv.Atoi(num)
		if ok && err == nil && n >= 0 && n < maxKeywords && kw != "" {
			out[byte('a'+n)] = kw
		}
	}
	return out, sc.Err()
}

// maildirKeywordLetters maps keywords to their letters in the maildir
// dir, adding the ones it lacks to dovecot-keywords (replaced whole, by
// a rename: Dovecot rereads it when it changes). Keywords past the 26
// letters are left out.
func maildirKeywordLetters(dir string, keywords []string) (map[string]byte, error) {
	if len(keywords) == 0 {
		return nil, nil // no need to read the file
	}
	have, err := ReadMaildirKeywords(dir)
	if err != nil {
		return nil, err
	}
	letters := make(map[string]byte, len(have))
	for l, k := range have {
		letters[k] = l
	}
	added := false
	for _, k := range keywords {
		if _, ok := letters[k]; ok {
			continue
		}
		for l := byte('a'); l < 'a'+maxKeywords; l++ {
			if _, used := have[l]; !used {
				have[l], letters[k], added = k, l, true
				break
			}
		}
	}
	if added {
		if err := writeMaildirKeywords(dir, have); err != nil {
			return nil, err
		}
	}
	return letters, nil
}

func writeMaildirKeywords(dir string, kw map[byte]string) error {
	var b bytes.Buffer
	for l := byte('a'); l < 'a'+maxKeywords; l++ {
		if k, ok := kw[l]; ok {
			fmt.Fprintf(&b, "%d %s\n", l-'a', k)
		}
	}
	tmp := filepath.Join(dir, fmt.Sprintf(".dovecot-keywords.mfilter-%d", os.Getpid()))
	if err := os.WriteFile(tmp, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("keywords of %s: %w", dir, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "dovecot-keywords")); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("keywords of %s: %w", dir, err)
	}
	return nil
}

// mboxStatusFields are the fields an mbox holds flags in, as mutt and
// Dovecot write them.
var mboxStatusFields = []string{"Status", "X-Status", "X-Keywords"}

// WithMboxFlags returns msg (with or without its From_ line) with its
// Status, X-Status and X-Keywords fields replaced by f's: Status "RO"
// when seen, "O" when old or flagged otherwise, none for a new message;
// X-Status A (answered), F (flagged), T (draft), D (deleted); X-Keywords
// the keywords. They go at the end of the header, where mutt puts them.
func WithMboxFlags(msg []byte, f Flags) []byte { return withMboxFlags(msg, f) }

func withMboxFlags(msg []byte, f Flags) []byte {
	fields := mailfmt.HeaderFields(msg)
	end := 0
	if len(fields) > 0 {
		end = fields[len(fields)-1].End
	}
	eol := "\n"
	if i := bytes.IndexByte(msg, '\n'); i > 0 && msg[i-1] == '\r' {
		eol = "\r\n"
	}
	var out bytes.Buffer
	out.Grow(len(msg) + 64)
	last := 0
	for _, fl := range fields {
		name := strings.TrimRight(strings.TrimSuffix(string(fl.Name), ":"), " \t")
		if slices.ContainsFunc(mboxStatusFields, func(s string) bool { return strings.EqualFold(s, name) }) {
			out.Write(msg[last:fl.Start])
			last = fl.End
		}
	}
	out.Write(msg[last:end])
	if b := out.Bytes(); len(b) > 0 && b[len(b)-1] != '\n' {
		out.WriteString(eol) // the last field lacked its newline
	}
	switch {
	case f.Seen:
		fmt.Fprintf(&out, "Status: RO%s", eol)
	case !f.IsZero():
		fmt.Fprintf(&out, "Status: O%s", eol)
	}
	var xs []byte
	for _, c := range []struct {
		on     bool
		letter byte
	}{{f.Answered, 'A'}, {f.Flagged, 'F'}, {f.Draft, 'T'}, {f.Deleted, 'D'}} {
		if c.on {
			xs = append(xs, c.letter)
		}
	}
	if len(xs) > 0 {
		fmt.Fprintf(&out, "X-Status: %s%s", xs, eol)
	}
	if kws := f.uniqueKeywords(); len(kws) > 0 {
		fmt.Fprintf(&out, "X-Keywords: %s%s", strings.Join(kws, " "), eol)
	}
	out.Write(msg[end:])
	return out.Bytes()
}

// ParseMboxFlags reads the flags of an mbox message (with or without its
// From_ line) from its Status, X-Status and X-Keywords fields, as mutt
// and Dovecot write them: Status R seen, O old; X-Status A answered, F
// flagged, T draft, D deleted; X-Keywords words apart by spaces or
// commas. The flags are Exact: the fields are the message's whole state.
func ParseMboxFlags(msg []byte) Flags {
	f := Flags{Exact: true}
	for _, h := range mailfmt.HeaderFields(msg) {
		name := strings.TrimRight(strings.TrimSuffix(string(h.Name), ":"), " \t")
		switch {
		case strings.EqualFold(name, "Status"):
			f.Seen = f.Seen || bytes.IndexByte(h.Value, 'R') >= 0
			f.Old = f.Old || bytes.IndexByte(h.Value, 'O') >= 0
		case strings.EqualFold(name, "X-Status"):
			f.Answered = f.Answered || bytes.IndexByte(h.Value, 'A') >= 0
			f.Flagged = f.Flagged || bytes.IndexByte(h.Value, 'F') >= 0
			f.Draft = f.Draft || bytes.IndexByte(h.Value, 'T') >= 0
			f.Deleted = f.Deleted || bytes.IndexByte(h.Value, 'D') >= 0
		case strings.EqualFold(name, "X-Keywords"):
			for _, k := range strings.FieldsFunc(string(h.Value), func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\r' || r == '\n' }) {
				if len(f.Keywords) < maxMboxKeywords {
					f.Keywords = append(f.Keywords, k)
				}
			}
		}
	}
	f.Keywords = f.uniqueKeywords()
	f.Old = f.Old || !f.IsZero()
	return f
}

// maxMboxKeywords bounds the keywords read from one message.
const maxMboxKeywords = 64
