package refile

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// planFile is the source side of a refile's state, next to the delivery
// journal (a fetch.Journal) in the state directory. It holds what the
// delivery journal cannot: which messages a run takes from the source,
// and the rewrite of an mbox. Every record is fsynced before the step it
// announces.
//
//	begin      the run's id, the source, its kind; for an mbox the size
//	           and sha256 of the part filed, for a maildir or MH folder
//	           the list of the messages in it (a message's offset in the
//	           delivery journal is its index in that list)
//	moving     before a batch of deliveries becomes visible: the
//	           messages of the batch that leave the source (or are kept
//	           there and copied)
//	rewrite    an mbox's new contents are durable in a temporary file:
//	           its name and the mbox's size when it was written
//	rewritten  the temporary file replaced the mbox
//	done       the source holds only what stays: the state may go
type planFile struct {
	path string
	f    *os.File

	ID     string   `json:"id,omitempty"`
	Kind   string   `json:"kind,omitempty"`
	Source string   `json:"source,omitempty"`
	Names  []string `json:"names,omitempty"`
	Size   int64    `json:"size,omitempty"`
	Sum    string   `json:"sum,omitempty"`

	began     bool
	moved     map[int64]*movedMsg
	rewrite   *planRecord
	rewritten bool
	done      bool
}

// movedMsg is a message that a run files elsewhere.
type movedMsg struct {
	K    int64  `json:"k"`           // offset: index in the list, or byte offset in an mbox
	End  int64  `json:"e,omitempty"` // mbox: where the message ends
	Name string `json:"n,omitempty"` // maildir, MH: its name in the list
	Keep bool   `json:"keep,omitempty"`

	finished bool // (unless Keep) gone from the source
	rel      string
}

type planRecord struct {
	Op     string      `json:"op"`
	ID     string      `json:"id,omitempty"`
	Kind   string      `json:"kind,omitempty"`
	Source string      `json:"source,omitempty"`
	Names  []string    `json:"names,omitempty"`
	Size   int64       `json:"size,omitempty"`
	Sum    string      `json:"sum,omitempty"`
	Msgs   []*movedMsg `json:"msgs,omitempty"`
	Tmp    string      `json:"tmp,omitempty"`
	End    int64       `json:"end,omitempty"`
}

// openPlan reads the plan file at path, or starts an empty one.
func openPlan(path string) (*planFile, error) {
	p := &planFile{path: path, moved: map[int64]*movedMsg{}}
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("refile state %s: %w", path, err)
	}
	torn := int64(-1)
	if n := len(data); n > 0 && data[n-1] != '\n' {
		torn = int64(bytes.LastIndexByte(data, '\n') + 1)
		data = data[:torn]
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<30)
	for sc.Scan() {
		var r planRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue
		}
		p.replay(&r)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("refile state: %w", err)
	}
	p.f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("refile state: %w", err)
	}
	if torn >= 0 {
		if err := p.f.Truncate(torn); err != nil {
			p.f.Close()
			return nil, fmt.Errorf("refile state %s: %w", path, err)
		}
	}
	if len(data) == 0 {
		if err := syncDir(filepath.Dir(path)); err != nil {
			p.f.Close()
			return nil, err
		}
	}
	return p, nil
}

func (p *planFile) replay(r *planRecord) {
	switch r.Op {
	case "begin":
		p.began = true
		p.ID, p.Kind, p.Source, p.Names, p.Size, p.Sum = r.ID, r.Kind, r.Source, r.Names, r.Size, r.Sum
	case "moving":
		for _, m := range r.Msgs {
			p.moved[m.K] = m
		}
	case "rewrite":
		p.rewrite = r
	case "rewritten":
		p.rewritten = true
	case "done":
		p.done = true
	}
}

// add appends r and makes it durable.
func (p *planFile) add(r *planRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := p.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("refile state %s: %w", p.path, err)
	}
	if err := p.f.Sync(); err != nil {
		return fmt.Errorf("refile state %s: %w", p.path, err)
	}
	p.replay(r)
	return nil
}

func (p *planFile) close() error { return p.f.Close() }

// remove deletes the plan file, durably.
func (p *planFile) remove() error {
	p.f.Close()
	if err := os.Remove(p.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return syncDir(filepath.Dir(p.path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
