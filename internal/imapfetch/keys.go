package imapfetch

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
)

// A key identifies a message across a UIDVALIDITY change, when its UID
// means nothing any more: its INTERNALDATE, RFC822.SIZE and Message-ID
// field, which a server keeps when it renumbers a folder.
func messageKey(date time.Time, size int64, msgid []byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "%d %d\n", date.Unix(), size)
	h.Write(msgid)
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// keyFile is a source's append-only list of message keys, one line each:
// "uidvalidity uid key kind". Kind f: written as the message was fetched,
// so it counts only below the journal's or the state's filed mark; kind
// k: a message found filed after a UIDVALIDITY change (kept ones), which
// always counts.
type keyFile struct {
	mu      sync.Mutex // the filer's reader and committer both use it
	path    string
	f       *os.File
	w       *bufio.Writer
	entries []keyEntry
}

type keyEntry struct {
	validity uint32
	uid      imap.UID
	key      string
	kind     byte
}

func openKeys(path string) (*keyFile, error) {
	k := &keyFile{path: path}
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("keys: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 || len(f[3]) != 1 {
			continue // a torn last line: its message was not filed
		}
		v, err1 := strconv.ParseUint(f[0], 10, 32)
		u, err2 := strconv.ParseUint(f[1], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		k.entries = append(k.entries, keyEntry{uint32(v), imap.UID(u), f[2], f[3][0]})
	}
	k.f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		k.f.Write([]byte("\n")) // a torn line ends here, not glued to the next
	}
	k.w = bufio.NewWriter(k.f)
	return k, nil
}

func (k *keyFile) add(validity uint32, uid imap.UID, key string, kind byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	fmt.Fprintf(k.w, "%d %d %s %c\n", validity, uid, key, kind)
	k.entries = append(k.entries, keyEntry{validity, uid, key, kind})
}

// sync makes every key added so far durable.
func (k *keyFile) sync() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.w.Flush(); err != nil {
		return fmt.Errorf("keys %s: %w", k.path, err)
	}
	if err := k.f.Sync(); err != nil {
		return fmt.Errorf("keys %s: %w", k.path, err)
	}
	return nil
}

// filed is the multiset of the keys of the messages filed under
// validity: those fetched below mark, and those found filed.
func (k *keyFile) filed(validity uint32, mark imap.UID) map[string]int {
	m := make(map[string]int)
	for _, e := range k.entries {
		if e.validity == validity && (e.kind == 'k' || e.uid < mark) {
			m[e.key]++
		}
	}
	return m
}

// inFlight are the keys of the messages fetched under validity at or
// above mark, each with its UIDs in order: a killed run may have made
// their batch visible before it recorded the batch committed.
func (k *keyFile) inFlight(validity uint32, mark imap.UID) map[string][]imap.UID {
	m := make(map[string][]imap.UID)
	for _, e := range k.entries {
		if e.validity == validity && e.kind == 'f' && e.uid >= mark {
			m[e.key] = append(m[e.key], e.uid)
		}
	}
	for key, uids := range m {
		slices.Sort(uids)
		m[key] = slices.Compact(uids)
	}
	return m
}

// found are the UIDs under validity found filed after a UIDVALIDITY
// change.
func (k *keyFile) found(validity uint32) map[imap.UID]bool {
	m := make(map[imap.UID]bool)
	for _, e := range k.entries {
		if e.validity == validity && e.kind == 'k' {
			m[e.uid] = true
		}
	}
	return m
}

// reset empties the file: every message it names is gone from the
// server.
func (k *keyFile) reset() error {
	if err := k.w.Flush(); err != nil {
		return err
	}
	if err := k.f.Truncate(0); err != nil {
		return fmt.Errorf("keys %s: %w", k.path, err)
	}
	k.entries = nil
	return k.f.Sync()
}

func (k *keyFile) close() error {
	k.w.Flush()
	return k.f.Close()
}
