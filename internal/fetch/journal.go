// Package fetch runs mfilter fetch-and-file: it claims a spool through the
// remote package, files the claimed file's messages through the filer
// exactly once with a journal, and removes the claimed file only when every
// message in it is durably filed. A crash or a dropped link at any moment
// loses nothing, and the next run files nothing twice.
package fetch

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/filer"
)

// record is one line of a journal file.
type record struct {
	Op    string `json:"op"`
	Claim string `json:"claim,omitempty"`
	Size  int64  `json:"size,omitempty"`
	Off   int64  `json:"off,omitempty"`
	I     int    `json:"i,omitempty"`
	Path  string `json:"path,omitempty"`
	At    int64  `json:"at,omitempty"`
	Len   int64  `json:"len,omitempty"`
	Sum   string `json:"sha256,omitempty"`
	From  int64  `json:"from,omitempty"`
	To    int64  `json:"to,omitempty"`
	End   int64  `json:"end,omitempty"`
	ID    string `json:"id,omitempty"`
}

// Journal records the filing of one claimed spool file. Every record that
// a recovery depends on is fsynced before the step it describes, but
// for the write records of mbox, MH and directory deliveries: a run
// after a crash looks for the bytes of those without a record.
//
//	claiming  before the spool is renamed to the claim name
//	claimed   the rename happened; the file's size
//	write     before an mbox, MH or directory folder gets a message's
//	          bytes: where, how many, their hash
//	committing before a batch of deliveries becomes visible: the batch's
//	          range of offsets (maildir files are named from the offsets)
//	committed every message before this offset is durably filed
//	program / programdone  around a pipe or forward
//	complete  every message is filed; the claimed file may go
type Journal struct {
	path string
	f    *os.File
	mu   sync.Mutex
	w    *deliver.Writer

	Claim     string // claimed file name on the spool's machine
	Size      int64  // its size when claimed (0 before)
	Filed     int64  // every message before this offset is filed
	Completed bool
	id        string // random part of this claim's maildir names
	host      string
	// HeadLen and HeadSum identify a filed file by its first bytes
	// (mfilter file): a journal of another file by the same name is
	// not resumed.
	HeadLen int64
	HeadSum string
	// resumed: the journal holds records of an earlier run, whose
	// steps may have been made.
	resumed bool
	// maildirs lists, per maildir folder, the names in it, read at the
	// first look after a crash.
	maildirs map[string]map[string]bool
	// mboxes are where to look for appends an earlier run made to each
	// mbox; folderSums count the files of MH and directory folders made
	// since the claim, by content (both for records that were lost).
	mboxes     map[string]*mboxCursor
	folderSums map[string]map[string]int

	// From earlier runs: what may have been made before a crash.
	oldRanges [][2]int64
	oldWrites map[[2]int64]record // by (off, i)
	oldProgs  map[[2]int64]bool   // programs that finished
}

// OpenJournal reads the journal at path, or starts it.
func OpenJournal(path string, w *deliver.Writer, host string) (*Journal, error) {
	j := &Journal{path: path, w: w, host: host, oldWrites: map[[2]int64]record{}, oldProgs: map[[2]int64]bool{}}
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("journal %s: %w", path, err)
	}
	// A torn last record (a crash or a full disk while writing it) is
	// cut off before anything is appended: glued to the next record it
	// would make that one unreadable too. Its step had not started.
	torn := int64(-1)
	if n := len(data); n > 0 && data[n-1] != '\n' {
		torn = int64(strings.LastIndexByte(string(data), '\n') + 1)
		data = data[:torn]
	}
	j.resumed = len(data) > 0
	j.replay(data)
	if err := j.openAppend(torn, len(data) == 0); err != nil {
		return nil, err
	}
	return j, nil
}

// replay takes the state of an earlier run from its records, data.
func (j *Journal) replay(data []byte) {
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	sc.Buffer(nil, 1<<20)
	var ranges [][2]int64
	for sc.Scan() {
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			// A torn last line from a crash while writing it: the step it
			// announced had not started.
			continue
		}
		switch r.Op {
		case "claiming":
			j.Claim, j.id = r.Claim, r.ID
			j.HeadLen, j.HeadSum = r.Len, r.Sum
		case "claimed":
			j.Size = r.Size
		case "write":
			j.oldWrites[[2]int64{r.Off, int64(r.I)}] = r
			j.cursor(r.Path).advance(r.At + r.Len)
		case "committing":
			ranges = append(ranges, [2]int64{r.From, r.To})
		case "committed":
			j.Filed = max(j.Filed, r.End)
		case "programdone":
			j.oldProgs[[2]int64{r.Off, int64(r.I)}] = true
		case "complete":
			j.Completed = true
			j.Size = r.Size
		}
	}
	for _, rg := range ranges {
		if rg[1] > j.Filed {
			j.oldRanges = append(j.oldRanges, rg)
		}
	}
}

// openAppend opens the journal file for appending, cutting off a torn
// last record at offset torn (if >= 0); a new journal's name is made
// durable.
func (j *Journal) openAppend(torn int64, fresh bool) error {
	if err := os.MkdirAll(filepath.Dir(j.path), 0o700); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	var err error
	j.f, err = os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if torn >= 0 {
		if err := j.f.Truncate(torn); err != nil {
			j.f.Close()
			return fmt.Errorf("journal %s: cut a torn record: %w", j.path, err)
		}
		if err := j.f.Sync(); err != nil {
			j.f.Close()
			return fmt.Errorf("journal %s: %w", j.path, err)
		}
	}
	if fresh {
		if err := syncParent(j.path); err != nil {
			j.f.Close()
			return err
		}
	}
	return nil
}

func syncParent(p string) error {
	d, err := os.Open(filepath.Dir(p))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// add appends a record and makes it durable.
func (j *Journal) add(r record) error { return j.write(r, true) }

// write appends a record, made durable when sync is set (else with the
// next record that is).
func (j *Journal) write(r record, sync bool) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, err := j.f.Write(append(b, '\n')); err != nil {
		// Take the torn record back, so that the next one starts on
		// a line of its own (OpenJournal cuts it too, after a crash).
		if st, serr := j.f.Stat(); serr == nil {
			if i := lastNewline(j.f, st.Size()); i >= 0 {
				j.f.Truncate(i)
			}
		}
		return fmt.Errorf("journal %s: %w", j.path, err)
	}
	if !sync {
		return nil
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("journal %s: %w", j.path, err)
	}
	return nil
}

// lastNewline returns the offset just after the last newline in the
// first size bytes of f (0 when there is none), or -1 when f cannot be
// read.
func lastNewline(f *os.File, size int64) int64 {
	buf := make([]byte, 4096)
	for end := size; end > 0; {
		start := max(0, end-int64(len(buf)))
		r, err := os.Open(f.Name())
		if err != nil {
			return -1
		}
		n, _ := r.ReadAt(buf[:end-start], start)
		r.Close()
		if i := strings.LastIndexByte(string(buf[:n]), '\n'); i >= 0 {
			return start + int64(i) + 1
		}
		end = start
	}
	return 0
}

// Close closes the journal file.
func (j *Journal) Close() error { return j.f.Close() }

// Remove deletes the journal: the claimed file is gone.
func (j *Journal) Remove() error {
	j.f.Close()
	if err := os.Remove(j.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return syncParent(j.path)
}

// Claiming records the claim name before the spool is renamed to it.
func (j *Journal) Claiming(name, id string) error {
	j.Claim, j.id = name, id
	return j.add(record{Op: "claiming", Claim: name, ID: id})
}

// ClaimingFile starts the journal of a file filed in place (mfilter
// file): name is the file, id the random part of its maildir names, and
// its first headLen bytes have the sha256 sum headSum.
func (j *Journal) ClaimingFile(name, id string, headLen int64, headSum string) error {
	j.Claim, j.id, j.HeadLen, j.HeadSum = name, id, headLen, headSum
	return j.add(record{Op: "claiming", Claim: name, ID: id, Len: headLen, Sum: headSum})
}

// Claimed records the claimed file's size.
func (j *Journal) Claimed(size int64) error {
	j.Size = size
	return j.add(record{Op: "claimed", Size: size})
}

// Complete records that every message is filed.
func (j *Journal) Complete(size int64) error {
	j.Completed, j.Size = true, size
	return j.add(record{Op: "complete", Size: size})
}

// maildirName is the unique part of the maildir file of step i of the
// message at off: fixed by the claim and the offset, so that a later run
// finds it.
func (j *Journal) maildirName(off int64, i int) string {
	return j.id + ".M" + strconv.FormatInt(off, 10) + "F" + strconv.Itoa(i) + "." + j.host
}

// MayHave implements filer.Journal: a journal of an earlier run may
// have made any message's steps, also beyond what its records say (a
// journal whose tail was lost).
func (j *Journal) MayHave(off int64) bool { return j.resumed }

// ClaimTime is when the claim was made: the date of the From_ lines
// generated for its messages, the same in every run.
func (j *Journal) ClaimTime() time.Time { return j.claimTime() }

// maildirHas reports whether maildir folder f holds the message named
// unique, from one listing of the folder per run.
func (j *Journal) maildirHas(f deliver.Folder, unique string) (bool, error) {
	names, ok := j.maildirs[f.Path]
	if !ok {
		var err error
		if names, err = deliver.MaildirUniques(f); err != nil {
			return false, err
		}
		if j.maildirs == nil {
			j.maildirs = make(map[string]map[string]bool)
		}
		j.maildirs[f.Path] = names
	}
	return names[unique], nil
}

// Done implements filer.Journal.
func (j *Journal) Done(ctx context.Context, off int64, i int, st filer.Step) (bool, error) {
	key := [2]int64{off, int64(i)}
	switch st.Kind {
	case filer.StepFolder:
		switch st.Folder.Kind {
		case deliver.Maildir:
			// Looked for whatever the records say: the names are
			// fixed by the claim and the offset, so a message is found
			// even when the record of its batch was lost.
			return j.maildirHas(st.Folder, j.maildirName(off, i))
		case deliver.Mbox:
			data := st.Msg
			if i != filer.RescueStep {
				data = j.w.DeliveryBytes(st.Folder, st.Msg, st.Flags)
			}
			c := j.cursor(st.Folder.Path)
			r, ok := j.oldWrites[key]
			if !ok || r.Path != st.Folder.Path {
				// No record: none was made, or it was lost with the
				// journal's tail. The bytes tell.
				return c.find(ctx, j.w, st.Folder, data)
			}
			sum, err := hex.DecodeString(r.Sum)
			if err != nil || len(sum) != sha256.Size {
				return false, fmt.Errorf("journal %s: bad hash %q", j.path, r.Sum)
			}
			found, err := j.w.RecoverMboxAppend(ctx, st.Folder, r.At, r.Len, [sha256.Size]byte(sum))
			if err == nil && !found {
				c.exhausted = true // appends go in order: none after it either
			}
			return found, err
		case deliver.MH, deliver.Dir:
			// By content among the files made since the claim, with
			// or without a record: each file stands for one delivery.
			sums, ok := j.folderSums[st.Folder.Path]
			if !ok {
				var err error
				if sums, err = j.w.FolderSums(st.Folder, j.claimTime().Add(-2*time.Second)); err != nil {
					return false, err
				}
				if j.folderSums == nil {
					j.folderSums = make(map[string]map[string]int)
				}
				j.folderSums[st.Folder.Path] = sums
			}
			k := deliver.SumKey(j.w.DeliveryBytes(st.Folder, st.Msg, st.Flags))
			if sums[k] > 0 {
				sums[k]--
				return true, nil
			}
			return false, nil
		}
	case filer.StepPipe, filer.StepForward:
		return j.oldProgs[key], nil
	}
	return false, nil
}

// mboxCursor is where, in one mbox, the appends of an earlier run are
// looked for: they were made in the order of the messages, so each is
// looked for after the one found before it.
type mboxCursor struct {
	pos       int64  // where the next append may start
	base      int64  // the offset of buf
	buf       []byte // the mbox from base, read at the first search
	loaded    bool
	exhausted bool // an append was not found: none after it was made
}

func (j *Journal) cursor(path string) *mboxCursor {
	c := j.mboxes[path]
	if c == nil {
		if j.mboxes == nil {
			j.mboxes = make(map[string]*mboxCursor)
		}
		c = &mboxCursor{}
		j.mboxes[path] = c
	}
	return c
}

func (c *mboxCursor) advance(end int64) { c.pos = max(c.pos, end) }

// find looks for data appended at a message boundary at or after the
// cursor, and moves the cursor past it.
func (c *mboxCursor) find(ctx context.Context, w *deliver.Writer, f deliver.Folder, data []byte) (bool, error) {
	if c.exhausted || len(data) == 0 {
		return false, nil
	}
	if !c.loaded {
		buf, err := w.ReadMboxFrom(f, c.pos)
		if err != nil {
			return false, fmt.Errorf("recover %s: %w", f.Path, err)
		}
		c.buf, c.base, c.loaded = buf, c.pos, true
	}
	for rel := max(0, c.pos-c.base); rel <= int64(len(c.buf)); {
		i := bytes.Index(c.buf[rel:], data)
		if i < 0 {
			break
		}
		at := rel + int64(i)
		if at == 0 || c.buf[at-1] == '\n' {
			c.pos = c.base + at + int64(len(data))
			return true, nil
		}
		rel = at + 1
	}
	c.exhausted = true
	// A crash in the middle of the append leaves a part of it at the
	// end: that goes, so that the message is appended whole after what
	// was before it. Only a proper prefix of data, at the end and at
	// the start of a line, is taken for ours.
	rest := c.buf[min(int64(len(c.buf)), max(0, c.pos-c.base)):]
	for p := max(0, len(rest)-len(data)+1); p < len(rest); p++ {
		if (p > 0 && rest[p-1] != '\n') || !bytes.HasPrefix(data, rest[p:]) {
			continue
		}
		at := c.base + int64(len(c.buf)-len(rest)+p)
		if _, err := w.RecoverMboxAppend(ctx, f, at, int64(len(data)), sha256.Sum256(data)); err != nil {
			return false, err
		}
		break
	}
	return false, nil
}

// Options implements filer.Journal.
func (j *Journal) Options(off int64, i int) deliver.DeliverOptions {
	return deliver.DeliverOptions{
		MaildirName: j.maildirName(off, i),
		BeforeWrite: func(f deliver.Folder, at int64, data deliver.Bytes) error {
			h := sha256.New()
			for _, p := range data {
				h.Write(p)
			}
			sum := h.Sum(nil)
			// Not synced: an fsync for each append would cost more
			// than the rest of filing into an mbox. The record goes to
			// disk with the batch's committing record, before the
			// batch is made durable; if a crash loses it, the next run
			// finds the bytes by looking for them (Done).
			return j.write(record{Op: "write", Off: off, I: i, Path: f.Path, At: at, Len: int64(data.Len()), Sum: hex.EncodeToString(sum)}, false)
		},
	}
}

// ProgramStarting implements filer.Journal. A program that ran but whose
// end was not recorded runs again after a crash: pipes and forwards get a
// message at least once, never not at all.
func (j *Journal) ProgramStarting(off int64, i int) error {
	return j.add(record{Op: "program", Off: off, I: i})
}

// ProgramDone implements filer.Journal.
func (j *Journal) ProgramDone(off int64, i int) error {
	return j.add(record{Op: "programdone", Off: off, I: i})
}

// Committing implements filer.Journal.
func (j *Journal) Committing(start, end int64) error {
	return j.add(record{Op: "committing", From: start, To: end})
}

// Committed implements filer.Journal.
func (j *Journal) Committed(end int64) error {
	if end <= j.Filed {
		return nil
	}
	j.Filed = end
	return j.add(record{Op: "committed", End: end})
}

var _ filer.Journal = (*Journal)(nil)
