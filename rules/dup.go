package rules

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/msgview"
)

// DupStore remembers message keys in formail -D cache files, so that an
// existing ~/.msgid.cache keeps working after the switch. A key is written
// only once the message it belongs to was delivered (formail writes it
// first, so a message whose delivery fails is dropped as a duplicate when
// it comes again). Keys of messages still being delivered are held in
// memory, so that a second copy in the same batch is caught too.
type DupStore struct {
	mu      sync.Mutex
	pending map[string]map[string]bool // cache file -> keys awaiting Record
	Lock    deliver.LockOptions
}

// NewDupStore returns an empty store.
func NewDupStore() *DupStore {
	return &DupStore{pending: make(map[string]map[string]bool)}
}

// dupKey is formail's key: the value of the (last) Message-ID field with
// leading blanks removed, exactly as written. Without one, and when
// bodyHash is on, it is a hash of the body with line ends normalised.
func dupKey(m *msgview.Message, bodyHash bool) string {
	var id []byte
	for _, f := range deliver.HeaderFields(m.Raw()) {
		if bytes.EqualFold(bytes.TrimRight(bytes.TrimSuffix(f.Name, []byte(":")), " \t"), []byte("message-id")) {
			id = f.Value // the last one wins, as in formail
		}
	}
	if v := bytes.TrimLeft(id, " "); len(v) > 0 {
		return string(v) // a CRLF line keeps its CR, as in formail
	}
	if !bodyHash {
		return ""
	}
	body := bytes.ReplaceAll(m.Body(), []byte("\r\n"), []byte("\n"))
	body = bytes.TrimRight(body, "\n")
	sum := sha256.Sum256(body)
	return "<body-sha256-" + hex.EncodeToString(sum[:16]) + "@mfilter>"
}

// Seen reports whether key is in the cache file or pending; if not, key
// becomes pending until Record or Forget.
func (s *DupStore) Seen(path, key string, size int64) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending[path][key] {
		return true, nil
	}
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("duplicate cache %s: %w", path, err)
	}
	if _, dup := scanCache(data, key, size); dup {
		return true, nil
	}
	if s.pending[path] == nil {
		s.pending[path] = make(map[string]bool)
	}
	s.pending[path][key] = true
	return false, nil
}

// Forget drops a pending key (its message was not delivered).
func (s *DupStore) Forget(path, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pending[path], key)
}

// Record writes key into the cache file the way formail -D does: at the
// end marker (an empty key), followed by a new end marker, wrapping to the
// start once the file reaches size bytes. The file is locked with a
// dotlock and fcntl, like procmail's ":0 Wh: msgid.lock" recipe.
func (s *DupStore) Record(ctx context.Context, path, key string, size int64) error {
	defer s.Forget(path, key)
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("duplicate cache %s: %w", path, err)
		}
	}
	lock, err := deliver.AcquireDotlock(ctx, path+".lock", s.Lock)
	if err != nil {
		return fmt.Errorf("duplicate cache: %w", err)
	}
	defer lock.Release()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("duplicate cache %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return fmt.Errorf("duplicate cache %s: %w", path, err)
	}
	at, dup := scanCache(data, key, size)
	if dup {
		return nil
	}
	rec := append([]byte(key), 0, 0)
	if _, err := f.WriteAt(rec, at); err != nil {
		return fmt.Errorf("duplicate cache %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("duplicate cache %s: %w", path, err)
	}
	return nil
}

// scanCache looks for key among the NUL-terminated keys of a formail
// cache, reading no further than size bytes, and returns where a new key
// goes: at the first empty key (the end marker), else at 0.
func scanCache(data []byte, key string, size int64) (insertAt int64, dup bool) {
	insertAt = -1
	var off int64
	for off < size && off < int64(len(data)) {
		end := bytes.IndexByte(data[off:], 0)
		if end < 0 {
			break
		}
		word := data[off : off+int64(end)]
		if len(word) == 0 {
			if insertAt < 0 {
				insertAt = off
			}
		} else if string(word) == key {
			return 0, true
		}
		off += int64(end) + 1
	}
	if insertAt < 0 || insertAt >= size {
		insertAt = 0
	}
	return insertAt, false
}
