package autoreply

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// MaxEntries bounds the senders a state directory remembers: past it,
// the entries that expire first are dropped.
const MaxEntries = 10000

// lockWait bounds the wait for another run's hold on the state.
const lockWait = 30 * time.Second

// Key names one sender for one reply: the reply address (case folded)
// and a handle for the reply (RFC 5230 :handle), hashed so that the
// state holds no addresses.
func Key(to, handle string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(to) + "\x00" + handle))
	return hex.EncodeToString(sum[:16])
}

// Once calls send unless the state in dir says key got a reply within
// its period; when send succeeds, key is remembered until now+period.
// The state is a file in dir, replaced durably (fsync, rename, fsync of
// dir) under an flock(2) on dir's lock file, so that concurrent runs
// reply once. sent reports whether send ran and succeeded.
func Once(dir, key string, period time.Duration, now time.Time, send func() error) (sent bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("reply state: %w", err)
	}
	unlock, err := lock(filepath.Join(dir, "lock"))
	if err != nil {
		return false, err
	}
	defer unlock()
	path := filepath.Join(dir, "state")
	entries, err := readState(path)
	if err != nil {
		return false, err
	}
	entries = slices.DeleteFunc(entries, func(e entry) bool { return !e.until.After(now) })
	if slices.ContainsFunc(entries, func(e entry) bool { return e.key == key }) {
		return false, nil
	}
	if err := send(); err != nil {
		return false, err
	}
	entries = append(entries, entry{now.Add(period), key})
	if len(entries) > MaxEntries {
		slices.SortFunc(entries, func(a, b entry) int { return a.until.Compare(b.until) })
		entries = entries[len(entries)-MaxEntries:]
	}
	if err := writeState(path, entries); err != nil {
		return true, err
	}
	return true, nil
}

type entry struct {
	until time.Time
	key   string
}

// readState reads "UNIX-TIME KEY" lines; lines that are not are skipped.
func readState(path string) ([]entry, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reply state: %w", err)
	}
	var out []entry
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		t, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		out = append(out, entry{time.Unix(t, 0), f[1]})
	}
	return out, nil
}

func writeState(path string, entries []entry) error {
	var b bytes.Buffer
	for _, e := range entries {
		fmt.Fprintf(&b, "%d %s\n", e.until.Unix(), e.key)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".state-*")
	if err != nil {
		return fmt.Errorf("reply state: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(b.Bytes())
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		return fmt.Errorf("reply state: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// lock takes an exclusive flock(2) on path, waiting at most lockWait.
func lock(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("reply state lock: %w", err)
	}
	deadline := time.Now().Add(lockWait)
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("reply state lock %s: %w", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
