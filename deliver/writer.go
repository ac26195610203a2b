package deliver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mfilter/mfilter/internal/maillock"
	"golang.org/x/sys/unix"
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
	// Lock tunes lock waits; zero fields take maillock.DefaultLockOptions.
	Lock maillock.LockOptions
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
	maildirs map[string]bool       // maildirs whose tmp/new/cur exist
	named    map[string]bool       // directories where OpenTemp is unsupported
	pending  map[dirRef]pendingDir // see mkdirAllLater
	made     uint64                // mkdirAllLater's count of directory changes

	// syncfsMin is how many files on one file system make Commit use
	// one syncfs(2) instead of an fsync for each (0: never).
	syncfsMin int
	dirs      *dirCache // the directories of unnamed files, kept open

	// wrapFS, when set, wraps every folder's file system; tests use it
	// to inject faults.
	wrapFS func(fileSystem) fileSystem
}

// SyncfsMin is how many files (messages and mbox folders) a Commit must
// make durable on one file system for it to use one syncfs(2) for all
// of them instead of an fsync(2) for each. A syncfs costs about what one
// fsync costs, plus writing back whatever else is waiting on that file
// system; a single message (mfilter deliver) keeps its own fsync.
const SyncfsMin = 16

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
	w := &Writer{
		opts:      opts,
		host:      maildirHost(opts.Hostname),
		pid:       os.Getpid(),
		maildirs:  make(map[string]bool),
		named:     make(map[string]bool),
		pending:   make(map[dirRef]pendingDir),
		syncfsMin: SyncfsMin,
		dirs:      newDirCache(),
	}
	// A Writer has no Close: its directories close when it is gone.
	runtime.AddCleanup(w, (*dirCache).close, w.dirs)
	return w
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

	fsys   fileSystem
	group  int         // deliveries of one group commit or fail together
	file   file        // maildir/MH/dir: the message file, open until Commit makes it durable (or names it, when unnamed)
	tmp    string      // maildir/MH/dir: temporary name to link from ("" when unnamed)
	anon   bool        // maildir/MH/dir: file is unnamed (OpenTemp) until linked
	linked bool        // maildir/MH/dir: Path now names the message
	mbox   *mboxAppend // mbox: where the bytes went
	undone bool        // taken back (or never made)
	opts   DeliverOptions
}

// Txn groups deliveries so that their fsyncs can be batched: every file is
// written at Deliver, and Commit makes all of them durable, links them
// into place, and syncs each directory once.
//
// Deliveries belong to groups (one per message, see BeginMessage): Commit
// keeps every delivery of a group or, as far as the file system allows,
// none, so that a message is never half filed.
type Txn struct {
	w     *Writer
	ctx   context.Context
	items []*Delivery
	group int
	mbox  map[fileID]*openMbox // one open descriptor per mbox, for fsync
	held  map[string]*heldMbox // mboxes locked for the next appends, by path
}

// openMbox is an mbox appended to in this Txn, kept open for its fsync.
type openMbox struct {
	f       file
	fsys    fileSystem
	path    string
	created bool // its directory entry is new and must be synced too
}

// Begin starts a transaction.
func (w *Writer) Begin(ctx context.Context) *Txn {
	return &Txn{w: w, ctx: ctx, mbox: make(map[fileID]*openMbox)}
}

// BeginMessage starts a new group: the deliveries made from now until the
// next BeginMessage are one message's, and Commit keeps all of them or
// takes all of them back. Without BeginMessage every delivery of the Txn
// is in one group, which suits a Txn that files a single message.
func (t *Txn) BeginMessage() { t.group++ }

// fsFor is the file system that holds f.
func (w *Writer) fsFor(f Folder) fileSystem {
	var fsys fileSystem = osFS{dirs: w.dirs}
	if f.root != nil {
		fsys = rootFS{f.root}
	}
	if w.wrapFS != nil {
		fsys = w.wrapFS(fsys)
	}
	return fsys
}

func (t *Txn) add(d *Delivery) {
	d.group = t.group
	t.items = append(t.items, d)
}

// DeliverOptions adjust one delivery for a caller that must find it again
// after a crash (fetch-and-file's journal).
type DeliverOptions struct {
	// MaildirName is the unique part of the file name in a maildir
	// folder (",S=<size>" is added); "" picks a fresh one.
	MaildirName string
	// BeforeWrite runs just before the bytes go into an mbox (under both
	// locks; at is where they will start), an MH or a directory folder
	// (at is 0). An error cancels the delivery.
	BeforeWrite func(f Folder, at int64, data Bytes) error
	// Flags are set on the message: a maildir message goes into cur/
	// with them in its name's info, an mbox message gets Status,
	// X-Status and X-Keywords fields; MH and directory folders have no
	// place for them.
	Flags Flags
}

// Deliver writes msg into f. msg is the message as read (with its From_
// line if it has one); the folder's format decides the bytes written.
// An error means nothing of this message is left in f.
func (t *Txn) Deliver(f Folder, msg []byte) (*Delivery, error) {
	return t.DeliverWith(f, msg, DeliverOptions{})
}

// DeliverWith is Deliver with options.
func (t *Txn) DeliverWith(f Folder, msg []byte, o DeliverOptions) (*Delivery, error) {
	if err := t.ctx.Err(); err != nil {
		return nil, fmt.Errorf("deliver to %s: %w", f.Path, err)
	}
	d := &Delivery{Folder: f, fsys: t.w.fsFor(f), opts: o}
	var err error
	switch f.Kind {
	case Maildir:
		err = t.w.writeMaildir(d, msg)
	case Mbox:
		err = t.writeMbox(d, msg)
	case MH, Dir:
		err = t.w.writeNumbered(d, msg)
	case Discard:
		// Logged with the message's size, as procmail logs /dev/null.
		d.Path, d.Size = f.Path, len(msg)
	default:
		err = fmt.Errorf("unknown folder kind %v", f.Kind)
	}
	if err != nil {
		return nil, fmt.Errorf("deliver to %s: %w", f.Path, err)
	}
	t.add(d)
	return d, nil
}

// Pending is the number of deliveries waiting for Commit.
func (t *Txn) Pending() int { return len(t.items) }

// Savepoint marks the current end of the transaction for RollbackTo.
func (t *Txn) Savepoint() int { return len(t.items) }

// RollbackTo takes back the deliveries made since sp, newest first:
// temporary files are removed and mbox appends are truncated away. An
// mbox append that others have appended after cannot be taken back; the
// error says so, and that copy stays.
func (t *Txn) RollbackTo(sp int) error {
	t.ReleaseLocks() // unappend takes them again
	var errs []error
	for i := len(t.items) - 1; i >= sp; i-- {
		if err := t.undo(t.items[i]); err != nil {
			errs = append(errs, err)
		}
	}
	t.items = t.items[:sp]
	return errors.Join(errs...)
}

// Abort takes back every uncommitted delivery, like RollbackTo(0), and
// ends the transaction.
func (t *Txn) Abort() error {
	err := t.RollbackTo(0)
	for _, m := range t.mbox {
		m.f.Close()
	}
	clear(t.mbox)
	return err
}

// Commit makes every delivery durable: files are made durable (with one
// syncfs(2) for each file system that holds many of them, else with
// fsyncs in parallel, so the file system can group them into few journal
// commits), then linked into place, and every directory touched is
// fsynced once. When a delivery fails, the other deliveries of its group
// are taken back; every delivery of a failed group gets Err set, and
// Commit returns their errors joined. The Txn can be used again
// afterwards.
func (t *Txn) Commit() error {
	t.ReleaseLocks()
	items, mboxes := t.items, t.mbox
	t.items, t.mbox = nil, make(map[fileID]*openMbox)

	// 1. Data: every message file and every mbox once, in the order
	// they were opened, and the directory of an mbox file that this Txn
	// created.
	var files []syncFile
	seen := make(map[*openMbox]bool, len(mboxes))
	for _, d := range items {
		switch {
		case d.file != nil:
			files = append(files, syncFile{f: d.file, fsys: d.fsys, folder: d.Folder.Path, keepOpen: d.anon})
		case d.mbox != nil:
			if m := mboxes[d.mbox.id]; m != nil && !seen[m] {
				seen[m] = true
				files = append(files, syncFile{f: m.f, fsys: m.fsys, folder: m.path})
			}
		}
	}
	for _, m := range mboxes {
		if !seen[m] { // its appends were all taken back
			files = append(files, syncFile{f: m.f, fsys: m.fsys, folder: m.path})
		}
	}
	res := t.w.syncData(files)
	for _, d := range items {
		if d.file != nil {
			d.Err = res.errs[d.file]
			if !d.anon {
				d.file = nil // closed by syncData
			}
		}
		if d.mbox != nil {
			if m := mboxes[d.mbox.id]; m != nil {
				d.Err = res.errs[m.f]
			}
		}
	}

	// 2. Names: link the durable files into place, group by group.
	groups := groupsOf(items)
	mh := make(map[dirRef]string)
	announced := t.mhSeqBefore(items, mh)
	for _, g := range groups {
		if bad := failedIn(g); bad != nil {
			t.failGroup(g, bad)
			continue
		}
		for _, d := range g {
			if err := t.link(d, mh); err != nil {
				d.Err = err
				t.failGroup(g, d)
				break
			}
		}
	}

	t.mhSeqAfter(announced)

	// 3. Directories: each one that got names, the directory of each
	// mbox file this Txn created, and those whose entries were changed
	// by making folders (mkdirAllLater) since the last Commit.
	t.syncDirs(items, mboxes, res)
	for _, g := range groups {
		if bad := failedIn(g); bad != nil {
			t.failGroup(g, bad)
		}
	}

	var errs []error
	for _, d := range items {
		if d.Err != nil {
			errs = append(errs, fmt.Errorf("deliver to %s: %w", d.Folder.Path, d.Err))
		}
	}
	return errors.Join(errs...)
}

// groupsOf splits items into runs of the same group.
func groupsOf(items []*Delivery) [][]*Delivery {
	var gs [][]*Delivery
	for i := 0; i < len(items); {
		j := i + 1
		for j < len(items) && items[j].group == items[i].group {
			j++
		}
		gs = append(gs, items[i:j])
		i = j
	}
	return gs
}

func failedIn(g []*Delivery) *Delivery {
	for _, d := range g {
		if d.Err != nil {
			return d
		}
	}
	return nil
}

// failGroup takes back every delivery of g, newest first, because bad
// failed; each gets an Err.
func (t *Txn) failGroup(g []*Delivery, bad *Delivery) {
	for i := len(g) - 1; i >= 0; i-- {
		d := g[i]
		if d.undone {
			continue
		}
		if d.Err == nil {
			d.Err = fmt.Errorf("taken back because delivery to %s failed: %w", bad.Folder.Path, bad.Err)
		}
		if err := t.undo(d); err != nil {
			t.w.warn("%v", err)
			d.Err = fmt.Errorf("%w (%v)", d.Err, err)
		}
	}
}

// link gives a synced maildir, MH or directory message its final name.
func (t *Txn) link(d *Delivery, mh map[dirRef]string) error {
	if d.tmp == "" && !d.anon {
		return nil
	}
	var err error
	switch d.Folder.Kind {
	case Maildir:
		err = t.w.linkMaildir(d)
	case MH:
		err = linkMH(d, mh)
	case Dir:
		err = linkDir(d)
	}
	if err != nil {
		return err
	}
	d.linked = true
	if d.anon {
		// Durable already; the name is what the directory sync is for.
		if err := d.file.Close(); err != nil {
			t.w.warn("close %s: %v", d.Path, err)
		}
		d.file = nil
		return nil
	}
	if err := d.fsys.Remove(d.tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.w.warn("remove %s: %v", d.tmp, err)
	}
	d.tmp = ""
	return nil
}

// linkTo gives d's durable file the name newname, never replacing one.
func (d *Delivery) linkTo(newname string) error {
	if d.anon {
		return d.fsys.LinkTemp(d.file, newname)
	}
	return linkNoReplace(d.fsys, d.tmp, newname)
}

// undo takes d back: its temporary file or final name is removed, or its
// mbox append truncated away. It reports what could not be taken back.
func (t *Txn) undo(d *Delivery) error {
	if d.undone {
		return nil
	}
	d.undone = true
	var errs []error
	if d.file != nil {
		d.file.Close()
		d.file = nil
	}
	if d.tmp != "" {
		if err := d.fsys.Remove(d.tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.w.warn("remove %s: %v", d.tmp, err)
		}
		d.tmp = ""
	}
	if d.linked {
		// A reader may have moved the message already (new/ to cur/);
		// then it stays delivered.
		if err := d.fsys.Remove(d.Path); err != nil {
			errs = append(errs, fmt.Errorf("could not take back %s: %w", d.Path, err))
		}
		d.linked = false
	}
	if d.mbox != nil {
		if err := t.w.unappend(context.WithoutCancel(t.ctx), d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

type dirRef struct {
	fsys fileSystem
	dir  string
}

func (d *Delivery) syncTarget() string {
	if d.Folder.Kind == Maildir {
		return d.Folder.in("new")
	}
	return d.Folder.Path
}

// syncFile is a file that Commit makes durable.
type syncFile struct {
	f        file
	fsys     fileSystem
	folder   string // the files of a folder share a file system
	keepOpen bool   // an unnamed file, closed once it is linked
}

// syncResult is what syncData did.
type syncResult struct {
	errs    map[file]error
	folders map[dirRef]fsInfo // the file system of each folder
	syncfs  map[uint64]bool   // file systems made durable with syncfs
}

// syncData makes files durable and closes them (except those to keep
// open), and returns the failures. The files of a file system that holds
// at least syncfsMin of them, and whose syncfs(2) can be trusted, are
// made durable with one syncfs; if that fails, each of its files is
// fsynced to learn which ones failed. The others are fsynced each, several
// at a time. files must be in the order they were opened: syncfs reports
// the write-back errors since the file it is called on was opened, so it
// is called on the first.
func (w *Writer) syncData(files []syncFile) syncResult {
	res := syncResult{errs: make(map[file]error), folders: make(map[dirRef]fsInfo), syncfs: make(map[uint64]bool)}
	var perFile []syncFile
	if w.syncfsMin > 0 && len(files) >= w.syncfsMin {
		type group struct {
			fsys  fileSystem
			files []syncFile
		}
		var order []uint64
		groups := make(map[uint64]*group)
		for _, sf := range files {
			ref := dirRef{sf.fsys, sf.folder}
			info, ok := res.folders[ref]
			if !ok {
				var err error
				if info, err = sf.fsys.FSInfo(sf.f); err != nil {
					info = fsInfo{}
				}
				res.folders[ref] = info
			}
			if !info.syncfs {
				perFile = append(perFile, sf)
				continue
			}
			g := groups[info.dev]
			if g == nil {
				g = &group{fsys: sf.fsys}
				groups[info.dev] = g
				order = append(order, info.dev)
			}
			g.files = append(g.files, sf)
		}
		for _, dev := range order {
			g := groups[dev]
			if len(g.files) < w.syncfsMin {
				perFile = append(perFile, g.files...)
				continue
			}
			if err := g.fsys.SyncFS(g.files[0].f); err != nil {
				w.warn("%v; fsyncing each file instead", err)
				perFile = append(perFile, g.files...)
				continue
			}
			res.syncfs[dev] = true
			for _, sf := range g.files {
				if sf.keepOpen {
					continue
				}
				if err := sf.f.Close(); err != nil {
					res.errs[sf.f] = fmt.Errorf("close %s: %w", sf.f.Name(), err)
				}
			}
		}
	} else {
		perFile = files
	}
	for f, err := range syncFiles(perFile) {
		res.errs[f] = err
	}
	return res
}

// dirSync is a directory that Commit makes durable, and the deliveries
// that fail if it cannot.
type dirSync struct {
	ref     dirRef
	folder  string // a folder that it is or holds: its file system
	ds      []*Delivery
	pending bool   // from pendingDirs: ds are the deliveries below it
	gen     uint64 // of the pending entry
}

// syncDirs is step 3 of Commit: it makes durable the directories that got
// names, the directories of mbox files this Txn created, and the pending
// ones of mkdirAllLater. On a file system whose files step 1 made durable
// with syncfs, one syncfs does it for all of them (and for their
// parents' entries); else each is fsynced. A delivery whose directory
// failed gets Err.
func (t *Txn) syncDirs(items []*Delivery, mboxes map[fileID]*openMbox, res syncResult) {
	var order []*dirSync
	byRef := make(map[dirRef]*dirSync)
	add := func(ref dirRef, folder string) *dirSync {
		ds := byRef[ref]
		if ds == nil {
			ds = &dirSync{ref: ref, folder: folder}
			byRef[ref] = ds
			order = append(order, ds)
		}
		return ds
	}
	for _, d := range items {
		if d.linked && !d.undone {
			ds := add(dirRef{d.fsys, d.syncTarget()}, d.Folder.Path)
			ds.ds = append(ds.ds, d)
		}
	}
	for _, m := range mboxes {
		if !m.created || res.errs[m.f] != nil {
			continue
		}
		ds := add(dirRef{m.fsys, filepath.Dir(m.path)}, m.path)
		for _, d := range items {
			if d.mbox != nil && mboxes[d.mbox.id] == m {
				ds.ds = append(ds.ds, d)
			}
		}
	}
	pending := t.w.pendingDirs()
	for _, ref := range slices.SortedFunc(maps.Keys(pending), func(a, b dirRef) int { return strings.Compare(a.dir, b.dir) }) {
		ds := add(ref, pending[ref].folder)
		ds.pending, ds.gen = true, pending[ref].gen
		for _, d := range items {
			if d.fsys == ref.fsys && under(ref.dir, d.Folder.Path) {
				ds.ds = append(ds.ds, d)
			}
		}
	}

	var perDir []*dirSync
	var devs []uint64
	groups := make(map[uint64][]*dirSync)
	for _, ds := range order {
		info, ok := res.folders[dirRef{ds.ref.fsys, ds.folder}]
		if !ok || !res.syncfs[info.dev] {
			perDir = append(perDir, ds)
			continue
		}
		if groups[info.dev] == nil {
			devs = append(devs, info.dev)
		}
		groups[info.dev] = append(groups[info.dev], ds)
	}
	for _, dev := range devs {
		g := groups[dev]
		if err := syncFSAt(g[0].ref.fsys, g[0].ref.dir); err != nil {
			t.w.warn("%v; fsyncing each directory instead", err)
			perDir = append(perDir, g...)
			continue
		}
		for _, ds := range g {
			if ds.pending {
				t.w.pendingDone(ds.ref, ds.gen)
			}
		}
	}
	for _, ds := range perDir {
		if err := syncDir(ds.ref.fsys, ds.ref.dir); err != nil {
			for _, d := range ds.ds {
				if d.Err == nil {
					d.Err = err
				}
			}
			continue
		}
		if ds.pending {
			t.w.pendingDone(ds.ref, ds.gen)
		}
	}
}

// under reports whether path is dir or inside it.
func under(dir, path string) bool {
	if dir == "." {
		return !filepath.IsAbs(path)
	}
	dir = strings.TrimSuffix(dir, "/")
	return strings.HasPrefix(path, dir) && (len(path) == len(dir) || path[len(dir)] == '/')
}

// syncFSAt makes the file system that holds directory dir durable with
// syncfs(2) on the directory.
func syncFSAt(fsys fileSystem, dir string) error {
	d, err := fsys.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("open directory %s for syncfs: %w", dir, err)
	}
	err = fsys.SyncFS(d)
	if cerr := d.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return err
}

// syncFiles fsyncs files, several at a time: concurrent fsyncs share
// journal commits on ext4 and xfs, and closes those not to keep open. It
// returns the failures.
func syncFiles(files []syncFile) map[file]error {
	const workers = 16
	errs := make(map[file]error)
	if len(files) == 1 {
		// One file (an MDA's delivery): no goroutine to start and wait
		// for, which costs a thread in a process that has just started.
		if err := files[0].sync(); err != nil {
			errs[files[0].f] = err
		}
		return errs
	}
	var mu sync.Mutex
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	for _, sf := range files {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := sf.sync(); err != nil {
				mu.Lock()
				errs[sf.f] = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errs
}

// sync fsyncs the file and closes it unless it is to be kept open.
func (sf syncFile) sync() error {
	f := sf.f
	err := f.Sync()
	if err != nil {
		err = fmt.Errorf("fsync %s: %w", f.Name(), err)
	}
	if !sf.keepOpen {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close %s: %w", f.Name(), cerr)
		}
	}
	return err
}

// writeAll writes data to f; short writes are errors.
func writeAll(f file, data []byte) error {
	for len(data) > 0 {
		n, err := f.Write(data)
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
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
