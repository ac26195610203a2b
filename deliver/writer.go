package deliver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Writer.
type Options struct {
	// Hostname goes into maildir file names; default os.Hostname.
	Hostname string
	// Now is the clock for file names and From_ lines; default time.Now.
	Now func() time.Time
	// Berkeley ignores Content-Length, like procmail -Y: the field is not
	// rewritten and every body "From " line is escaped.
	Berkeley bool
	// Mboxrd escapes ">From " lines too when writing mbox (mboxrd), so
	// that a reader can undo the escaping exactly. procmail writes plain
	// mboxo, which is the default.
	Mboxrd bool
	// Lock tunes lock waits; zero fields take DefaultLockOptions.
	Lock LockOptions
	// Warn receives non-fatal problems (a dotlock that could not be
	// made, for example); nil discards them.
	Warn func(string)
}

// Writer delivers messages into folders. It is safe for concurrent use;
// each Txn is not.
type Writer struct {
	opts    Options
	host    string // hostname made safe for maildir names
	pid     int
	counter atomic.Uint64

	mu       sync.Mutex
	maildirs map[string]bool // maildirs whose tmp/new/cur exist
}

// NewWriter returns a Writer with opts.
func NewWriter(opts Options) *Writer {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Hostname == "" {
		opts.Hostname, _ = os.Hostname()
		if opts.Hostname == "" {
			opts.Hostname = "localhost"
		}
	}
	return &Writer{
		opts:     opts,
		host:     maildirHost(opts.Hostname),
		pid:      os.Getpid(),
		maildirs: make(map[string]bool),
	}
}

func (w *Writer) warn(format string, args ...any) {
	if w.opts.Warn != nil {
		w.opts.Warn(fmt.Sprintf(format, args...))
	}
}

// Delivery is one message written into one folder. Its file is complete
// when Deliver returns and durable once the Txn commits without error for
// it; Path names the file, or the mbox appended to.
type Delivery struct {
	Folder Folder
	Path   string // known after Commit for MH folders
	Size   int    // bytes written, as procmail's log reports them
	Err    error  // set by Commit when this delivery could not be made durable

	fsys     fileSystem
	file     *os.File // maildir/MH/dir: the temporary file
	tmp      string   // temporary name to link from
	mboxID   fileID   // the mbox file appended to
	finalize func(*Delivery) error
	done     bool
}

// Txn groups deliveries so that their fsyncs can be batched: every file is
// written at Deliver, and Commit makes all of them durable, links them
// into place, and syncs each directory once.
type Txn struct {
	w     *Writer
	ctx   context.Context
	items []*Delivery
	mbox  map[fileID]*os.File // one open descriptor per mbox, for fsync
}

// Begin starts a transaction.
func (w *Writer) Begin(ctx context.Context) *Txn {
	return &Txn{w: w, ctx: ctx, mbox: make(map[fileID]*os.File)}
}

// Deliver writes msg into f. msg is the message as read (with its From_
// line if it has one); the folder's format decides the bytes written.
// An error means nothing of this message is left in f.
func (t *Txn) Deliver(f Folder, msg []byte) (*Delivery, error) {
	if err := t.ctx.Err(); err != nil {
		return nil, err
	}
	d := &Delivery{Folder: f, fsys: osFS{}}
	if f.root != nil {
		d.fsys = rootFS{f.root}
	}
	var err error
	switch f.Kind {
	case Maildir:
		err = t.w.writeMaildir(d, msg)
	case Mbox:
		err = t.writeMbox(d, msg)
	case MH, Dir:
		err = t.w.writeNumbered(d, msg)
	case Discard:
		d.Path = f.Path
		d.done = true
	default:
		err = fmt.Errorf("unknown folder kind %v", f.Kind)
	}
	if err != nil {
		return nil, fmt.Errorf("deliver to %s: %w", f.Path, err)
	}
	t.items = append(t.items, d)
	return d, nil
}

// Pending is the number of deliveries waiting for Commit.
func (t *Txn) Pending() int { return len(t.items) }

// Savepoint marks the current end of the transaction for RollbackTo.
func (t *Txn) Savepoint() int { return len(t.items) }

// RollbackTo takes back the deliveries made since sp: their temporary
// files are removed. mbox appends are already in place and stay.
func (t *Txn) RollbackTo(sp int) {
	for _, d := range t.items[sp:] {
		d.abort()
	}
	t.items = t.items[:sp]
}

// Commit makes every delivery durable: files are fsynced (in parallel, so
// the file system can group them into few journal commits), linked into
// place, and every directory touched is fsynced once. Deliveries that
// fail get Err set; Commit returns their errors joined.
func (t *Txn) Commit() error {
	items := t.items
	t.items = nil
	var files []*os.File
	for _, d := range items {
		if d.file != nil {
			files = append(files, d.file)
		}
	}
	mboxIDs := make(map[*os.File]fileID, len(t.mbox))
	for id, f := range t.mbox {
		files = append(files, f)
		mboxIDs[f] = id
	}
	clear(t.mbox)
	syncErrs := syncFiles(files)
	mboxErr := make(map[fileID]error)
	for f, err := range syncErrs {
		if id, ok := mboxIDs[f]; ok {
			mboxErr[id] = err
		}
	}
	dirs := make(map[dirRef][]*Delivery)
	for _, d := range items {
		if d.Folder.Kind == Mbox {
			d.Err = mboxErr[d.mboxID]
		} else if d.file != nil {
			d.Err = syncErrs[d.file]
			d.file = nil
		}
		if d.done || d.Err != nil {
			if d.tmp != "" {
				d.fsys.Remove(d.tmp)
				d.tmp = ""
			}
			continue
		}
		if d.finalize != nil {
			if err := d.finalize(d); err != nil {
				d.Err = err
				continue
			}
		}
		if dir := d.syncTarget(); dir != "" {
			ref := dirRef{d.fsys, dir}
			dirs[ref] = append(dirs[ref], d)
		}
	}
	for ref, ds := range dirs {
		if err := syncDir(ref.fsys, ref.dir); err != nil {
			for _, d := range ds {
				d.Err = err
			}
		}
	}
	var errs []error
	for _, d := range items {
		d.done = true
		if d.Err != nil {
			errs = append(errs, fmt.Errorf("deliver to %s: %w", d.Folder.Path, d.Err))
		}
	}
	return errors.Join(errs...)
}

// Abort drops every uncommitted delivery that can still be taken back
// (temporary files are removed). mbox appends are already in place.
func (t *Txn) Abort() {
	for _, d := range t.items {
		d.abort()
	}
	t.items = nil
	for _, f := range t.mbox {
		f.Close()
	}
	clear(t.mbox)
}

func (d *Delivery) abort() {
	if d.file != nil {
		d.file.Close()
		d.file = nil
	}
	if d.tmp != "" {
		d.fsys.Remove(d.tmp)
		d.tmp = ""
	}
	d.done = true
}

type dirRef struct {
	fsys fileSystem
	dir  string
}

func (d *Delivery) syncTarget() string {
	switch d.Folder.Kind {
	case Maildir:
		return filepath.Join(d.Folder.Path, "new")
	case MH, Dir:
		return d.Folder.Path
	}
	return ""
}

// syncFiles fsyncs and closes files, several at a time: concurrent fsyncs
// share journal commits on ext4 and xfs. It returns the failures.
func syncFiles(files []*os.File) map[*os.File]error {
	const workers = 16
	errs := make(map[*os.File]error)
	var mu sync.Mutex
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	for _, f := range files {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			err := f.Sync()
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				mu.Lock()
				errs[f] = fmt.Errorf("fsync %s: %w", f.Name(), err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errs
}

// writeAll writes data to f; short writes are errors.
func writeAll(f *os.File, data []byte) error {
	for len(data) > 0 {
		n, err := f.Write(data)
		if err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// maildirHost makes a host name safe for a maildir file name: '/' and
// ':' (and '\', as procmail does) become \ooo octal escapes.
func maildirHost(h string) string {
	var b strings.Builder
	for i := 0; i < len(h); i++ {
		c := h[i]
		if c == '/' || c == ':' || c == '\\' || c < 0x20 || c == 0x7f {
			fmt.Fprintf(&b, "\\%03o", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
