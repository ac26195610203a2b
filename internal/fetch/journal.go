// Package fetch runs mfilter fetch-and-file: it claims a spool through the
// remote package, files the claimed file's messages through the filer
// exactly once with a journal, and removes the claimed file only when every
// message in it is durably filed. A crash or a dropped link at any moment
// loses nothing, and the next run files nothing twice.
package fetch

import (
	"bufio"
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
// a recovery depends on is fsynced before the step it describes.
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
		case "claimed":
			j.Size = r.Size
		case "write":
			j.oldWrites[[2]int64{r.Off, int64(r.I)}] = r
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
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	j.f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	if len(data) == 0 {
		if err := syncParent(path); err != nil {
			j.f.Close()
			return nil, err
		}
	}
	return j, nil
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
func (j *Journal) add(r record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, err := j.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("journal %s: %w", j.path, err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("journal %s: %w", j.path, err)
	}
	return nil
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

// Done implements filer.Journal.
func (j *Journal) Done(ctx context.Context, off int64, i int, st filer.Step) (bool, error) {
	key := [2]int64{off, int64(i)}
	switch st.Kind {
	case filer.StepFolder:
		switch st.Folder.Kind {
		case deliver.Maildir:
			if !j.inOldRange(off) {
				return false, nil
			}
			return deliver.MaildirHas(st.Folder, j.maildirName(off, i))
		case deliver.Mbox, deliver.MH, deliver.Dir:
			r, ok := j.oldWrites[key]
			if !ok || r.Path != st.Folder.Path {
				return false, nil
			}
			sum, err := hex.DecodeString(r.Sum)
			if err != nil || len(sum) != sha256.Size {
				return false, fmt.Errorf("journal %s: bad hash %q", j.path, r.Sum)
			}
			if st.Folder.Kind == deliver.Mbox {
				return j.w.RecoverMboxAppend(ctx, st.Folder, r.At, r.Len, [sha256.Size]byte(sum))
			}
			return j.w.FolderHolds(st.Folder, r.Len, [sha256.Size]byte(sum))
		}
	case filer.StepPipe, filer.StepForward:
		return j.oldProgs[key], nil
	}
	return false, nil
}

func (j *Journal) inOldRange(off int64) bool {
	for _, rg := range j.oldRanges {
		if off >= rg[0] && off < rg[1] {
			return true
		}
	}
	return false
}

// Options implements filer.Journal.
func (j *Journal) Options(off int64, i int) deliver.DeliverOptions {
	return deliver.DeliverOptions{
		MaildirName: j.maildirName(off, i),
		BeforeWrite: func(f deliver.Folder, at int64, data []byte) error {
			sum := sha256.Sum256(data)
			return j.add(record{Op: "write", Off: off, I: i, Path: f.Path, At: at, Len: int64(len(data)), Sum: hex.EncodeToString(sum[:])})
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
