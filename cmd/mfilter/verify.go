package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/mfilter/mfilter/internal/convert"
	"github.com/mfilter/mfilter/internal/sysexits"
)

// Bounds of mfilter convert --verify.
const (
	maxVerifyMailbox = 256 << 20
	verifyTimeout    = 30 * time.Second // per message and side
	// maxTimeouts ends a run whose procmail side keeps timing out (a
	// regex it backtracks on for minutes): the rest is not compared.
	maxTimeouts       = 3
	verifyNobody      = "65534"
	verifySandboxPATH = "/usr/local/bin:/usr/bin:/bin"
)

// verifySide is one of the two scratch trees: procmail's or mfilter's.
type verifySide struct {
	root string // holds home/, var/mail/, bin/sendmail, sent
	name string
}

func (s *verifySide) home() string     { return filepath.Join(s.root, "home") }
func (s *verifySide) spool() string    { return filepath.Join(s.root, "var", "mail", "user") }
func (s *verifySide) sendmail() string { return filepath.Join(s.root, "bin", "sendmail") }

// runVerify files every message of mailbox with procmail and the rcfile,
// and with mfilter deliver and its conversion, each in a scratch tree of
// its own, and prints the messages whose folders differ.
func runVerify(ctx context.Context, env *environ, mailbox, rcfile string, opt verifyOptions) int {
	procmail, err := exec.LookPath("procmail")
	if err != nil {
		fmt.Fprintln(env.stderr, "mfilter convert --verify: procmail is not installed")
		return sysexits.Unavailable
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		fmt.Fprintln(env.stderr, "mfilter convert --verify: unshare(1) is needed for the sandbox")
		return sysexits.Unavailable
	}
	msgs, err := readMailbox(mailbox)
	if err != nil {
		fmt.Fprintf(env.stderr, "mfilter convert --verify: %v\n", err)
		return sysexits.IOErr
	}
	v, err := newVerifier(env, procmail, rcfile, opt)
	if err != nil {
		fmt.Fprintf(env.stderr, "mfilter convert --verify: %v\n", err)
		return sysexits.CantCreat
	}
	if opt.keep == "" {
		defer os.RemoveAll(v.dir)
	}
	if v.res == nil {
		return sysexits.IOErr
	}
	if missing := missingPrograms(v.res.Programs); len(missing) > 0 {
		fmt.Fprintf(env.stderr, "mfilter convert --verify: programs not found here (the messages that run them say little of the rules where they exist): %s\n", strings.Join(missing, ", "))
	}
	if inc := v.res.MissingIncludes; len(inc) > 0 {
		fmt.Fprintf(env.stderr, "mfilter convert --verify: included rcfiles not found here (what they set is unset on both sides): %s\n", strings.Join(inc, ", "))
	}
	differ, timeouts := 0, 0
	for i, m := range msgs {
		pm, mf, err := v.one(ctx, m)
		if err != nil {
			fmt.Fprintf(env.stderr, "mfilter convert --verify: message %d: %v\n", i+1, err)
			return sysexits.IOErr
		}
		if pm.key() != mf.key() {
			differ++
			fmt.Fprintf(env.stdout, "message %d (%s): procmail: %s; mfilter: %s\n", i+1, subjectOf(m), pm, mf)
		}
		if pm.timedOut || mf.timedOut {
			timeouts++
		}
		if timeouts >= maxTimeouts && i+1 < len(msgs) {
			fmt.Fprintf(env.stderr, "mfilter convert --verify: %d messages took longer than %v; the other %d are not compared (counted as filed differently)\n",
				timeouts, verifyTimeout, len(msgs)-i-1)
			differ += len(msgs) - i - 1
			break
		}
	}
	fmt.Fprintf(env.stderr, "mfilter convert --verify: %d of %d messages filed differently (converted %d of %d recipes)\n",
		differ, len(msgs), v.res.Converted, v.res.Recipes)
	if differ > 0 {
		return convertPartial
	}
	return sysexits.OK
}

// verifyOptions are mfilter convert --verify's options.
type verifyOptions struct {
	keep string // keep the scratch trees in this new directory
	home string // the home the rcfile was written for; the sandbox stands in for it
}

// verifier holds the scratch trees and the two programs.
type verifier struct {
	env      *environ
	dir      string
	procmail string
	mfilter  string
	rcfile   string // the copy procmail reads
	rules    string // the conversion mfilter reads
	pm, mf   *verifySide
	res      *convert.Result
	asNobody bool
}

func newVerifier(env *environ, procmail, rcfile string, opt verifyOptions) (*verifier, error) {
	dir, err := verifyDir(opt.keep)
	if err != nil {
		return nil, err
	}
	v := &verifier{env: env, dir: dir, procmail: procmail, asNobody: os.Geteuid() == 0}
	if v.asNobody {
		if err := reachable(dir); err != nil {
			return v, err
		}
	}
	v.pm = &verifySide{root: filepath.Join(dir, "procmail"), name: "procmail"}
	v.mf = &verifySide{root: filepath.Join(dir, "mfilter"), name: "mfilter"}
	if v.mfilter, err = selfPath(); err != nil {
		return v, err
	}
	for _, s := range []*verifySide{v.pm, v.mf} {
		if err := v.makeSide(s); err != nil {
			return v, err
		}
	}
	// Each side runs its sendmail recorder; the conversion names the
	// mfilter side's.
	res, code := convertFile(env, rcfile, convert.Options{Sendmail: []string{v.mf.sendmail(), "-oi"}, Home: opt.home})
	if code != sysexits.OK {
		return v, nil
	}
	v.res = res
	if err := v.makeMaildirs(res.Maildir); err != nil {
		return v, err
	}
	if err := v.makeParents(res); err != nil {
		return v, err
	}
	data, err := readBounded(rcfile)
	if err != nil {
		return v, err
	}
	v.rcfile = filepath.Join(dir, "procmailrc")
	v.rules = filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(v.rcfile, rehome(data, opt.home, v.pm.home()), 0o644); err != nil {
		return v, err
	}
	return v, os.WriteFile(v.rules, []byte(res.Files[0].Text), 0o644)
}

// rehome puts dir for every path under home in an rcfile's text, so that
// procmail writes into the sandbox where the rcfile names the home it was
// written for (as the conversion says ~/ there).
func rehome(text []byte, home, dir string) []byte {
	home = strings.TrimRight(home, "/")
	if home == "" {
		return text
	}
	var b bytes.Buffer
	for {
		k := bytes.Index(text, []byte(home))
		if k < 0 {
			b.Write(text)
			return b.Bytes()
		}
		end := k + len(home)
		b.Write(text[:k])
		if (k == 0 || !isNameByte(text[k-1])) && (end == len(text) || !isNameByte(text[end])) {
			b.WriteString(dir)
		} else {
			b.Write(text[k:end])
		}
		text = text[end:]
	}
}

// isNameByte reports whether c can be part of a file name's word: a path
// that goes on with it names another file.
func isNameByte(c byte) bool {
	return c == '.' || c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// makeMaildirs makes the maildir on both sides, as a user's exists:
// procmail does not create it (it stays in HOME and waits for locks).
func (v *verifier) makeMaildirs(maildir string) error {
	rel, ok := strings.CutPrefix(maildir, "~/")
	if !ok || rel == "" {
		return nil
	}
	for _, s := range []*verifySide{v.pm, v.mf} {
		d := filepath.Join(s.home(), filepath.Clean("/"+rel))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if v.asNobody {
			if err := chownTree(s.home()); err != nil {
				return err
			}
		}
	}
	return nil
}

// makeParents makes, on both sides, the parent directory of every folder
// the rules name inside HOME, and every MH folder, as a user's tree has
// them: procmail does
// not create a missing parent (it files the message further down),
// mfilter does, and that difference is not the conversion's.
func (v *verifier) makeParents(res *convert.Result) error {
	for _, s := range []*verifySide{v.pm, v.mf} {
		base := s.home()
		if rel, ok := strings.CutPrefix(res.Maildir, "~/"); ok {
			base = filepath.Join(base, filepath.Clean("/"+rel))
		}
		for _, f := range res.Folders {
			var p string
			switch {
			case strings.HasPrefix(f, "~/"):
				p = filepath.Join(s.home(), filepath.Clean("/"+f[2:]))
			case filepath.IsAbs(f):
				continue
			default:
				p = filepath.Join(base, filepath.Clean("/"+f))
			}
			dir := filepath.Dir(p)
			if strings.HasSuffix(f, "/.") {
				// An MH folder: a user's exists, and procmail's
				// lock in it waits for ever when it does not.
				dir = p
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
		}
		if v.asNobody {
			if err := chownTree(s.home()); err != nil {
				return err
			}
		}
	}
	return nil
}

func chownTree(root string) error {
	return filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, 65534, 65534)
	})
}

// verifyDir makes the directory of the scratch trees: traversable by
// nobody, who runs both sides when mfilter runs as root.
func verifyDir(keep string) (string, error) {
	var dir string
	var err error
	if keep != "" {
		dir, err = keep, os.Mkdir(keep, 0o755)
	} else {
		dir, err = os.MkdirTemp("", "mfilter-verify-")
	}
	if err != nil {
		return "", err
	}
	return dir, os.Chmod(dir, 0o755)
}

// reachable checks that user nobody can reach dir: otherwise both sides
// would fail alike and seem to agree.
func reachable(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("the scratch directory %s is not reachable by user nobody (%s is mode %#o): set TMPDIR or --keep elsewhere", dir, d, fi.Mode().Perm())
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// selfPath is the mfilter binary to run as mfilter deliver.
func selfPath() (string, error) {
	if strings.Contains(os.Args[0], "/") {
		return filepath.Abs(os.Args[0])
	}
	if p, err := exec.LookPath(os.Args[0]); err == nil {
		return p, nil
	}
	return os.Executable()
}

// sendmailRecorder stands in for sendmail: it records its arguments and
// sends nothing.
const sendmailRecorder = "#!/bin/sh\nprintf '%s\\n' \"$*\" >> \"$(dirname \"$0\")/../sent\"\ncat > /dev/null\n"

func (v *verifier) makeSide(s *verifySide) error {
	for _, d := range []string{s.home(), filepath.Dir(s.spool()), filepath.Dir(s.sendmail())} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(s.sendmail(), []byte(sendmailRecorder), 0o755); err != nil {
		return err
	}
	if !v.asNobody {
		return nil
	}
	// nobody writes the tree and nothing else: an absolute folder outside
	// it fails on both sides alike.
	return chownTree(s.root)
}

// decision is where one side filed a message.
type decision struct {
	folders  []string
	sent     []string
	status   int
	why      string // the last line of its standard error, when it failed
	timedOut bool
}

// boundedWriter keeps the first max bytes written to it.
type boundedWriter struct {
	buf *bytes.Buffer
	max int
}

func (w *boundedWriter) Write(p []byte) (int, error) {
	if room := w.max - w.buf.Len(); room > 0 {
		w.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if k := strings.LastIndexByte(s, '\n'); k >= 0 {
		s = s[k+1:]
	}
	return s
}

func (d decision) key() string {
	return fmt.Sprint(d.folders, d.sent, d.status == 0)
}

func (d decision) String() string {
	var parts []string
	parts = append(parts, d.folders...)
	for _, s := range d.sent {
		parts = append(parts, "sendmail "+s)
	}
	if len(parts) == 0 {
		parts = append(parts, "nothing written")
	}
	s := strings.Join(parts, ", ")
	if d.status != 0 {
		s += fmt.Sprintf(" (exit %d", d.status)
		if d.why != "" {
			s += ": " + d.why
		}
		s += ")"
	}
	return s
}

// one files a message on both sides.
func (v *verifier) one(ctx context.Context, msg []byte) (decision, decision, error) {
	// procmail -m takes HOME, LOGNAME and SHELL from the password file
	// (nobody's shell is nologin, which fails every command with shell
	// syntax): they are given as assignments, which come after its
	// defaults.
	pm, err := v.run(ctx, v.pm, msg, v.procmail, "-m", "HOME="+v.pm.home(), "LOGNAME=user", "USER=user", "SHELL=/bin/sh",
		"DEFAULT="+v.pm.spool(), "SENDMAIL="+v.pm.sendmail(), v.rcfile)
	if err != nil {
		return pm, pm, err
	}
	args := []string{v.mfilter, "deliver", "--rules", v.rules}
	if v.res.OrgmailDefault {
		args = append(args, "--default", v.mf.spool())
	}
	mf, err := v.run(ctx, v.mf, msg, args...)
	return pm, mf, err
}

// run runs one side's program on msg and returns what changed in its tree.
func (v *verifier) run(ctx context.Context, s *verifySide, msg []byte, argv ...string) (decision, error) {
	before, err := snapshot(s.root)
	if err != nil {
		return decision{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	argv = v.sandboxed(s, argv)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = s.home()
	cmd.Env = []string{"HOME=" + s.home(), "LOGNAME=user", "USER=user", "SHELL=/bin/sh",
		"PATH=" + filepath.Dir(s.sendmail()) + ":" + verifySandboxPATH}
	cmd.Stdin = bytes.NewReader(msg)
	var stderr bytes.Buffer
	cmd.Stderr = &boundedWriter{buf: &stderr, max: 4096}
	cmd.Stdout = io.Discard
	runErr := cmd.Run()
	d := decision{timedOut: ctx.Err() != nil}
	if d.timedOut {
		d.why = fmt.Sprintf("killed after %v", verifyTimeout)
	}
	if ee, ok := runErr.(*exec.ExitError); ok {
		d.status = ee.ExitCode()
		if !d.timedOut {
			d.why = lastLine(stderr.String())
		}
	} else if runErr != nil {
		return d, runErr
	}
	after, err := snapshot(s.root)
	if err != nil {
		return d, err
	}
	d.folders, d.sent = changes(s, before, after, v.logPath(s), msg)
	return d, nil
}

// missingPrograms are the programs the rcfile runs that the sandbox's
// PATH does not hold.
func missingPrograms(progs []string) []string {
	var out []string
	for _, p := range progs {
		if strings.HasPrefix(p, "$HOME/") {
			// The sandbox's HOME is empty.
			out = append(out, p)
			continue
		}
		if strings.Contains(p, "/") {
			if _, err := os.Stat(p); err != nil {
				out = append(out, p)
			}
			continue
		}
		found := false
		for _, dir := range filepath.SplitList(verifySandboxPATH) {
			if fi, err := os.Stat(filepath.Join(dir, p)); err == nil && fi.Mode()&0o111 != 0 {
				found = true
				break
			}
		}
		if !found && p != "sendmail" {
			out = append(out, p)
		}
	}
	return out
}

// maskSendmail runs in a private mount namespace: it puts the side's
// recorder over the system's sendmail, so that an rcfile that sets
// SENDMAIL=/usr/sbin/sendmail sends nothing either, and refuses to go on
// if it cannot. Its arguments are file names only; the message is on
// standard input, untouched.
const maskSendmail = `rec=$1; shift
for t in /usr/sbin/sendmail /usr/lib/sendmail; do
	if [ -e "$t" ]; then mount --bind "$rec" "$t" || exit 71; fi
done
exec "$@"`

// sandboxed wraps argv: a mount namespace with sendmail masked, and as
// nobody when mfilter runs as root (a user namespace otherwise).
func (v *verifier) sandboxed(s *verifySide, argv []string) []string {
	out := []string{"unshare", "--mount", "--propagation", "private"}
	if !v.asNobody {
		out = append(out, "--user", "--map-root-user")
	}
	out = append(out, "--", "/bin/sh", "-c", maskSendmail, "sh", s.sendmail())
	if v.asNobody {
		out = append(out, "setpriv", "--reuid="+verifyNobody, "--regid="+verifyNobody, "--clear-groups", "--")
	}
	return append(out, argv...)
}

// snapshot maps every regular file below root to its size.
func snapshot(root string) (map[string]int64, error) {
	m := make(map[string]int64)
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			m[p] = fi.Size()
		}
		return nil
	})
	return m, err
}

// changes names the folders a message went to: a new file in a maildir's
// new/ or cur/ is the maildir, a new file elsewhere its directory (MH or
// plain), a grown file an mbox; lines added to sent are forwards.
func changes(s *verifySide, before, after map[string]int64, logFile string, msg []byte) ([]string, []string) {
	set := map[string]bool{}
	var sent []string
	for p, size := range after {
		old, existed := before[p]
		if existed && old == size || strings.HasSuffix(p, ".lock") || p == logFile {
			continue
		}
		rel, _ := filepath.Rel(s.root, p)
		switch {
		case p == filepath.Join(s.root, "sent"):
			data, _ := os.ReadFile(p)
			for _, l := range strings.Split(strings.TrimSpace(string(data[old:])), "\n") {
				sent = append(sent, l)
			}
		case !holdsMessage(p, old, msg):
			// A log file, a duplicate cache: not a folder.
		case existed:
			set[rel] = true
		default:
			set[newFileFolder(rel)] = true
		}
	}
	var out []string
	for f := range set {
		out = append(out, f)
	}
	sort.Strings(out)
	sort.Strings(sent)
	return out, sent
}

// logPath is the side's log file (LOGFILE, the log: setting), where
// programs write their errors too; "" when unknown.
func (v *verifier) logPath(s *verifySide) string {
	l := v.res.Log
	if rel, ok := strings.CutPrefix(l, "~/"); ok {
		return filepath.Join(s.home(), rel)
	}
	if l == "" || filepath.IsAbs(l) {
		return ""
	}
	base := s.home()
	if rel, ok := strings.CutPrefix(v.res.Maildir, "~/"); ok {
		base = filepath.Join(base, rel)
	}
	return filepath.Join(base, l)
}

// holdsMessage reports whether the bytes of file p after offset are a
// message (whole, or its header or body) rather than lines of a log
// (procmail's abstract, or mfilter's JSON), keys of a formail -D cache, or
// lines of a program's own.
func holdsMessage(p string, offset int64, msg []byte) bool {
	// Without O_NOATIME, reading an mbox right after a delivery makes
	// procmail's next delivery see atime == mtime and sleep a second
	// (its "NFS atime hack").
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOATIME, 0)
	if err != nil {
		f, err = os.Open(p)
	}
	if err != nil {
		return false
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(io.NewSectionReader(f, offset, 1<<62), maxVerifyMailbox))
	if err != nil || len(data) == 0 {
		return false
	}
	if !bytes.Contains(data, []byte("\n")) && bytes.Contains(data, []byte{0}) {
		return false // duplicate cache keys
	}
	if bytes.HasPrefix(data, []byte("  Folder: ")) || bytes.Contains(data, []byte("\n  Folder: ")) {
		// A log abstract, whatever else is around it: its Subject line
		// may hold garbage (procmail's bug when Subject: is the first
		// line), and programs procmail did not wait for write their
		// errors to the log after it.
		return false
	}
	return looksLikeMessage(data, msg)
}

// headerLine is a header field's first line, or a From_ line.
var headerLine = regexp.MustCompile(`^(From |[!-9;-~]+:)`)

// looksLikeMessage reports whether data, appended to a file, is a message
// or a part of msg: it begins as a header does, or it holds a line of
// msg. Lines a program appends of its own (message ids for a pending
// list, checksums) are neither.
func looksLikeMessage(data, msg []byte) bool {
	lines := make(map[string]bool)
	for _, l := range bytes.Split(msg, []byte("\n")) {
		if l = bytes.TrimSuffix(l, []byte("\r")); len(l) > 1 {
			lines[string(l)] = true
		}
	}
	for i, l := range bytes.Split(data, []byte("\n")) {
		if len(l) == 0 || isLogLine(l) {
			continue
		}
		if i == 0 && headerLine.Match(l) || lines[string(bytes.TrimSuffix(l, []byte("\r")))] {
			return true
		}
	}
	return false
}

// isLogLine reports whether l is a line of procmail's log abstract, one
// of its error lines, or a JSON log record.
func isLogLine(l []byte) bool {
	for _, p := range []string{"From ", " Subject: ", "  Folder: ", "procmail: ", "{\""} {
		if bytes.HasPrefix(l, []byte(p)) {
			return true
		}
	}
	return false
}

// newFileFolder names the folder a new file belongs to: a maildir for a
// file in new/ or cur/, an MH or directory folder for a numbered or msg.
// file, else a new mbox.
func newFileFolder(rel string) string {
	dir, base := filepath.Dir(rel), filepath.Base(rel)
	switch b := filepath.Base(dir); {
	case b == "new" || b == "cur":
		return filepath.Dir(dir) + "/"
	case strings.Trim(base, "0123456789") == "" || strings.HasPrefix(base, "msg."):
		return dir + "/."
	}
	return rel
}

// readMailbox returns the messages of an mbox file, or of the regular
// files of a directory (a maildir's new/ and cur/ too).
func readMailbox(path string) ([][]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return readMessageDir(path)
	}
	if fi.Size() > maxVerifyMailbox {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxVerifyMailbox)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return splitMbox(data), nil
}

func readMessageDir(dir string) ([][]byte, error) {
	var out [][]byte
	var total int64
	for _, sub := range []string{"", "new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			continue
		}
		for _, e := range ents {
			if !e.Type().IsRegular() {
				continue
			}
			data, err := os.ReadFile(filepath.Join(dir, sub, e.Name()))
			if err != nil {
				return nil, err
			}
			if total += int64(len(data)); total > maxVerifyMailbox {
				return nil, fmt.Errorf("%s: more than %d bytes of messages", dir, maxVerifyMailbox)
			}
			out = append(out, data)
		}
	}
	return out, nil
}

// splitMbox splits at From_ lines that follow a blank line (or start the
// file), as formail -s does; a file without one is one message.
func splitMbox(data []byte) [][]byte {
	if !bytes.HasPrefix(data, []byte("From ")) {
		return [][]byte{data}
	}
	var out [][]byte
	start := 0
	for i := 0; ; {
		k := bytes.Index(data[i:], []byte("\n\nFrom "))
		if k < 0 {
			break
		}
		end := i + k + 2
		out = append(out, data[start:end])
		start, i = end, end
	}
	return append(out, data[start:])
}

// subjectOf is a message's Subject, for the report.
func subjectOf(msg []byte) string {
	for _, l := range strings.Split(string(msg), "\n") {
		if l == "" {
			break
		}
		if len(l) > 8 && strings.EqualFold(l[:8], "subject:") {
			s := strings.TrimSpace(l[8:])
			if len(s) > 60 {
				s = s[:60]
			}
			return fmt.Sprintf("%q", s)
		}
	}
	return "no subject"
}
