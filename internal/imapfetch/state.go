package imapfetch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// state is what a source's state file says: under UIDVALIDITY
// Validity, every message below UID Next is done with (filed, and
// expunged, moved or remembered as kept).
type state struct {
	Server   string `json:"server"`
	Folder   string `json:"folder"`
	Validity uint32 `json:"uidvalidity"`
	Next     uint32 `json:"next"`
}

// readState reads the state file at path; a missing one is the zero
// state.
func readState(path string) (state, error) {
	var st state
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("state: %w", err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("state %s: %w", path, err)
	}
	return st, nil
}

// writeState replaces the state file durably: a new file, fsynced,
// renamed over the old one, the directory fsynced.
func writeState(path string, st state) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return replaceFile(path, append(data, '\n'))
}

// replaceFile puts data at path durably and atomically.
func replaceFile(path string, data []byte) error {
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("state %s: %w", tmp, werr)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
