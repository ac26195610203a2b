package send

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Queue is a directory of messages waiting to be sent, one file per
// message with its envelope. A file is written durably (a temporary
// file in tmp/, fsync, rename into the queue, fsync of the directory),
// sent under an exclusive lock on it, and removed only after the relay's
// 250 for its DATA, so that a message is never lost and two flushes never
// both send it. Messages the relay refused for good go to failed/, with
// the reason beside them.
type Queue struct {
	Dir string
}

const queueMagic = "mfilter-queue 1\n"

// queuedEnvelope is the JSON line after the magic line.
type queuedEnvelope struct {
	Envelope
	Queued time.Time `json:"queued"`
}

// Entry is a claimed queued message; it stays locked until Done, Fail or
// Release.
type Entry struct {
	Name   string
	Env    Envelope
	Msg    []byte
	Queued time.Time
	q      *Queue
	f      *os.File
}

// Put stores a message durably and returns its name.
func (q *Queue) Put(env Envelope, msg []byte) (string, error) {
	tmpDir := filepath.Join(q.Dir, "tmp")
	if err := mkdirDurable(tmpDir); err != nil {
		return "", fmt.Errorf("queue: %w", err)
	}
	var rnd [4]byte
	rand.Read(rnd[:])
	name := fmt.Sprintf("%019d.%d.%s.msg", time.Now().UnixNano(), os.Getpid(), hex.EncodeToString(rnd[:]))
	head, err := json.Marshal(queuedEnvelope{Envelope: env, Queued: time.Now().UTC()})
	if err != nil {
		return "", fmt.Errorf("queue: %w", err)
	}
	tmp := filepath.Join(tmpDir, name)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("queue: %w", err)
	}
	var buf bytes.Buffer
	buf.Grow(len(queueMagic) + len(head) + 1 + len(msg))
	buf.WriteString(queueMagic)
	buf.Write(head)
	buf.WriteByte('\n')
	buf.Write(msg)
	_, err = f.Write(buf.Bytes())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("queue: write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, filepath.Join(q.Dir, name)); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("queue: %w", err)
	}
	if err := syncDir(q.Dir); err != nil {
		// The rename may not survive a crash: say so, the caller keeps
		// the message.
		os.Remove(filepath.Join(q.Dir, name))
		return "", fmt.Errorf("queue: %w", err)
	}
	return name, nil
}

// List returns the names of queued messages, oldest first.
func (q *Queue) List() ([]string, error) {
	ents, err := os.ReadDir(q.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".msg") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// Failed returns the names of messages in failed/.
func (q *Queue) Failed() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(q.Dir, "failed"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".msg") {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// CleanTmp removes temporary files older than a day: a Put that died
// before its rename, whose caller never heard that the message was kept.
func (q *Queue) CleanTmp() {
	dir := filepath.Join(q.Dir, "tmp")
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > 24*time.Hour {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// ErrBusy means another process holds the message (it is being sent).
var ErrBusy = errors.New("queued message is being sent by another process")

// ErrGone means the message left the queue (another process sent it).
var ErrGone = errors.New("queued message is gone")

// Claim locks a queued message and reads it. It fails with ErrBusy or
// ErrGone when another process has it or has sent it.
func (q *Queue) Claim(name string) (*Entry, error) {
	path := filepath.Join(q.Dir, name)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrGone
	}
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, ErrBusy
		}
		return nil, fmt.Errorf("queue: lock %s: %w", path, err)
	}
	// The file may have been sent and removed between our open and our
	// lock: only the file still at path counts.
	held, err1 := f.Stat()
	now, err2 := os.Stat(path)
	if err1 != nil || err2 != nil || !os.SameFile(held, now) {
		f.Close()
		return nil, ErrGone
	}
	data, err := os.ReadFile(path)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("queue: %w", err)
	}
	e := &Entry{Name: name, q: q, f: f}
	env, msg, queued, err := parseQueued(data)
	if err != nil {
		e.Fail(fmt.Sprintf("unreadable queue file: %v", err))
		return nil, fmt.Errorf("queue: %s: %w (moved to %s)", name, err, filepath.Join(q.Dir, "failed"))
	}
	e.Env, e.Msg, e.Queued = env, msg, queued
	return e, nil
}

// Peek reads a queued message without locking it (for listing).
func (q *Queue) Peek(name string) (Envelope, time.Time, int, error) {
	data, err := os.ReadFile(filepath.Join(q.Dir, name))
	if err != nil {
		return Envelope{}, time.Time{}, 0, err
	}
	env, msg, queued, err := parseQueued(data)
	return env, queued, len(msg), err
}

func parseQueued(data []byte) (Envelope, []byte, time.Time, error) {
	if !bytes.HasPrefix(data, []byte(queueMagic)) {
		return Envelope{}, nil, time.Time{}, errors.New("not an mfilter queue file")
	}
	data = data[len(queueMagic):]
	i := bytes.IndexByte(data, '\n')
	if i < 0 {
		return Envelope{}, nil, time.Time{}, errors.New("truncated envelope")
	}
	var qe queuedEnvelope
	if err := json.Unmarshal(data[:i], &qe); err != nil {
		return Envelope{}, nil, time.Time{}, fmt.Errorf("envelope: %w", err)
	}
	if len(qe.To) == 0 {
		return Envelope{}, nil, time.Time{}, errors.New("envelope without recipients")
	}
	return qe.Envelope, data[i+1:], qe.Queued, nil
}

// Done removes a message the relay took, durably, and unlocks it.
func (e *Entry) Done() error {
	defer e.f.Close()
	if err := os.Remove(filepath.Join(e.q.Dir, e.Name)); err != nil {
		return fmt.Errorf("queue: remove sent message: %w", err)
	}
	if err := syncDir(e.q.Dir); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	return nil
}

// Release unlocks a message that stays queued.
func (e *Entry) Release() {
	e.f.Close()
}

// Fail moves a message the relay refused for good to failed/, with the
// reason in NAME.reason beside it, and unlocks it.
func (e *Entry) Fail(reason string) error {
	defer e.f.Close()
	dir := filepath.Join(e.q.Dir, "failed")
	if err := mkdirDurable(dir); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	if err := writeDurable(filepath.Join(dir, e.Name+".reason"), []byte(reason+"\n")); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	if err := os.Rename(filepath.Join(e.q.Dir, e.Name), filepath.Join(dir, e.Name)); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	return syncDir(e.q.Dir)
}

func writeDurable(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// mkdirDurable creates dir (0700) and its missing parents, syncing each
// parent so that the new directories survive a crash.
func mkdirDurable(dir string) error {
	if st, err := os.Stat(dir); err == nil {
		if !st.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirDurable(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return syncDir(parent)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
