package main

// mfilter refile end to end: real folders, the mfilter binary as a child
// process, SIGKILL at random moments, and Dovecot reading the result.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/mailfmt"
)

// refileRules send [dev] mail to a maildir, [ops] to an mbox, [mh] to an
// MH folder; the rest goes to the default folder, which each test makes
// the source, so that it stays.
const refileRules = `maildir: %s
default: %s
rules:
  - if: {subject: '^\[dev\]'}
    then: {folder: dev/}
  - if: {subject: '^\[ops\]'}
    then: {folder: ops.mbox}
  - if: {subject: '^\[mh\]'}
    then: {folder: mh/.}
`

// refileMsg is message i of a test corpus: where the rules send it by
// i%5 (dev twice as often), and its flags by i%4: new (new/), seen (cur/
// :2,S), flagged and answered but not seen (:2,FR), seen with the
// keyword $Work (:2,Sa). An mbox message has them in Status, X-Status
// and X-Keywords, an MH message in .mh_sequences (unseen, flagged,
// replied; MH has no keywords).
type refileMsg struct {
	id, subject, dest string
	flags             string // maildir info of the source; "-" for new/
}

// refileKeyword is the keyword of the letter a in the corpus' flags.
const refileKeyword = "$Work"

func refileCorpus(n int) []refileMsg {
	var msgs []refileMsg
	for i := 1; i <= n; i++ {
		m := refileMsg{id: fmt.Sprintf("%d@refile.test", i)}
		switch i % 5 {
		case 0, 4:
			m.subject, m.dest = fmt.Sprintf("[dev] message %d", i), "dev"
		case 1:
			m.subject, m.dest = fmt.Sprintf("[ops] message %d", i), "ops.mbox"
		case 2:
			m.subject, m.dest = fmt.Sprintf("[mh] message %d", i), "mh"
		case 3:
			m.subject, m.dest = fmt.Sprintf("keep message %d", i), "src"
		}
		m.flags = []string{"-", "S", "FR", "Sa"}[i%4]
		msgs = append(msgs, m)
	}
	return msgs
}

func (m refileMsg) text() string {
	return fmt.Sprintf("From: sender%s\nTo: me@example.org\nSubject: %s\nMessage-ID: <%s>\n\nThe body of %s.\nFrom the start to the end.\n", strings.TrimSuffix(m.id, ".test"), m.subject, m.id, m.id)
}

// writeRefileMaildir makes the maildir dir holding msgs.
func writeRefileMaildir(t testing.TB, dir string, msgs []refileMsg) {
	t.Helper()
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "dovecot-keywords"), []byte("0 "+refileKeyword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		name := fmt.Sprintf("new/17000%05d.M%dP1.refile.test", i, i)
		if m.flags != "-" {
			name = fmt.Sprintf("cur/17000%05d.M%dP1.refile.test:2,%s", i, i, m.flags)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(m.text()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// writeRefileMbox makes the mbox path holding msgs, flags as Status and
// X-Status fields.
func writeRefileMbox(t testing.TB, path string, msgs []refileMsg) {
	t.Helper()
	var b bytes.Buffer
	for _, m := range msgs {
		b.WriteString("From sender@example.org  Sun Nov 29 10:00:00 2026\n")
		text := m.text()
		switch m.flags {
		case "S":
			text = strings.Replace(text, "\n\n", "\nStatus: RO\n\n", 1)
		case "FR":
			text = strings.Replace(text, "\n\n", "\nStatus: RO\nX-Status: AF\n\n", 1)
		case "Sa":
			text = strings.Replace(text, "\n\n", "\nStatus: RO\nX-Keywords: "+refileKeyword+"\n\n", 1)
		}
		b.WriteString(text)
		b.WriteString("\n")
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeRefileMH makes the MH folder dir holding msgs (1, 2, ...), flags
// in .mh_sequences as nmh keeps them.
func writeRefileMH(t testing.TB, dir string, msgs []refileMsg) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	seqs := map[string][]string{}
	for i, m := range msgs {
		n := strconv.Itoa(i + 1)
		if err := os.WriteFile(filepath.Join(dir, n), []byte(m.text()), 0o600); err != nil {
			t.Fatal(err)
		}
		if m.flags == "-" || m.flags == "FR" {
			seqs["unseen"] = append(seqs["unseen"], n)
		}
		if m.flags == "FR" {
			seqs["flagged"] = append(seqs["flagged"], n)
			seqs["replied"] = append(seqs["replied"], n)
		}
	}
	var b strings.Builder
	for _, name := range []string{"unseen", "flagged", "replied"} {
		fmt.Fprintf(&b, "%s: %s\n", name, strings.Join(seqs[name], " "))
	}
	if err := os.WriteFile(filepath.Join(dir, ".mh_sequences"), []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// refileFlags writes flags as the corpus does: "-" for a new message,
// else the maildir letters with a for the keyword.
func refileFlags(f deliver.Flags) string {
	if f.IsZero() {
		return "-"
	}
	var b []byte
	for _, c := range []struct {
		on bool
		l  byte
	}{{f.Draft, 'D'}, {f.Flagged, 'F'}, {f.Answered, 'R'}, {f.Seen, 'S'}, {f.Deleted, 'T'}} {
		if c.on {
			b = append(b, c.l)
		}
	}
	for _, k := range f.Keywords {
		if k == refileKeyword {
			b = append(b, 'a')
		} else {
			b = append(b, []byte("("+k+")")...)
		}
	}
	return string(b)
}

var refileMsgID = regexp.MustCompile(`(?mi)^Message-ID: <([^>]+)>`)

// refileFound is where one copy of a message is: folder (dev, mh,
// ops.mbox, src) and its flags (refileFlags; a maildir copy in new/ is
// "-", as is one in cur/ without flags: "(cur, no info)").
type refileFound struct{ folder, flags string }

// refileCensus finds every message under root: maildir files in cur/ and
// new/, MH files, mbox messages; dot files (locks, an mbox's rewrite in
// progress) and tmp/ are not mail.
func refileCensus(t testing.TB, root string) map[string][]refileFound {
	t.Helper()
	found := map[string][]refileFound{}
	add := func(data []byte, f refileFound) {
		m := refileMsgID.FindSubmatch(data)
		id := "(no Message-ID)"
		if m != nil {
			id = string(m[1])
		}
		found[id] = append(found[id], f)
	}
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		base := filepath.Base(p)
		if info.IsDir() {
			if base == "tmp" {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasPrefix(base, ".") || strings.HasPrefix(base, "dovecot") {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		parts := strings.Split(rel, string(filepath.Separator))
		switch {
		case len(parts) == 1: // an mbox
			sp := mailfmt.NewSplitter(bytes.NewReader(data), mailfmt.SplitOptions{})
			for {
				msg, err := sp.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					return err
				}
				add(msg, refileFound{folder: parts[0], flags: refileFlags(deliver.ParseMboxFlags(msg))})
			}
		case len(parts) == 3 && (parts[1] == "cur" || parts[1] == "new"):
			kw, err := deliver.ReadMaildirKeywords(filepath.Join(root, parts[0]))
			if err != nil {
				return err
			}
			f := deliver.ParseMaildirInfo(parts[2], kw)
			f.Old = parts[1] == "cur"
			flags := refileFlags(f)
			if parts[1] == "cur" && !strings.Contains(parts[2], ":2,") {
				flags = "(cur, no info)"
			}
			add(data, refileFound{folder: parts[0], flags: flags})
		case len(parts) == 2:
			seqs, err := deliver.ReadMHSequences(filepath.Join(root, parts[0]))
			if err != nil {
				return err
			}
			add(data, refileFound{folder: parts[0], flags: refileFlags(seqs.Flags(parts[1]))})
		default:
			t.Errorf("unexpected file %s", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// checkRefiled requires that every message of msgs is under root exactly
// once, where the rules send it, with the flags it had in the source
// (the source's kind: maildir, mbox or mh), as far as the folder where
// it is can hold them (an MH folder has no keywords).
func checkRefiled(t testing.TB, root string, msgs []refileMsg, srcKind string) {
	t.Helper()
	found := refileCensus(t, root)
	bad := 0
	for _, m := range msgs {
		fs := found[m.id]
		delete(found, m.id)
		if len(fs) != 1 {
			bad++
			if bad <= 10 {
				t.Errorf("%s: %d copies: %v", m.id, len(fs), fs)
			}
			continue
		}
		f := fs[0]
		want := m.dest
		if want == "src" && srcKind == "mbox" {
			want = "src.mbox"
		}
		wantFlags := m.flags
		if srcKind == "mbox" && m.flags == "FR" {
			wantFlags = "FRS" // Status: RO and X-Status: AF
		}
		if srcKind == "mh" || m.dest == "mh" {
			wantFlags = strings.TrimSuffix(wantFlags, "a")
		}
		if f.folder != want {
			bad++
			if bad <= 10 {
				t.Errorf("%s: in %s, want %s", m.id, f.folder, want)
			}
			continue
		}
		if f.flags != wantFlags {
			bad++
			if bad <= 10 {
				t.Errorf("%s: in %s with flags %q, want %q", m.id, f.folder, f.flags, wantFlags)
			}
		}
	}
	for id, fs := range found {
		t.Errorf("a message that is not in the corpus: %s in %v", id, fs)
	}
	if bad > 10 {
		t.Errorf("... %d messages wrong in all", bad)
	}
}

// refileSetup makes a mail root with the rules and the source (a maildir
// or an MH folder "src", or an mbox "src.mbox") of msgs; it returns the root, the rules
// file, the source and the state directory (outside the root).
func refileSetup(t testing.TB, msgs []refileMsg, kind string) (root, rules, src, state string) {
	t.Helper()
	base := t.TempDir()
	root = filepath.Join(base, "mail")
	state = filepath.Join(base, "state")
	if err := os.MkdirAll(root, 0o700); err != nil {
		t.Fatal(err)
	}
	def := "src/"
	src = filepath.Join(root, "src")
	switch kind {
	case "mbox":
		def, src = "src.mbox", filepath.Join(root, "src.mbox")
		writeRefileMbox(t, src, msgs)
	case "mh":
		def = "src/."
		writeRefileMH(t, src, msgs)
	default:
		writeRefileMaildir(t, src, msgs)
	}
	rules = filepath.Join(base, "rules.yaml")
	if err := os.WriteFile(rules, []byte(fmt.Sprintf(refileRules, root, def)), 0o600); err != nil {
		t.Fatal(err)
	}
	return root, rules, src, state
}

func refileCmd(rules, state, src string, extra ...string) *exec.Cmd {
	args := append([]string{"refile", "--rules", rules, "--state-dir", state}, extra...)
	cmd := exec.Command(mfilterBin, append(args, src)...)
	cmd.Env = append(os.Environ(), "HOME="+filepath.Dir(state))
	return cmd
}

func runRefileOK(t testing.TB, rules, state, src string, extra ...string) string {
	t.Helper()
	cmd := refileCmd(rules, state, src, extra...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("mfilter refile: %v\nstdout:\n%s\nstderr:\n%s", err, out.Bytes(), errb.Bytes())
	}
	return out.String()
}

func checkNoState(t testing.TB, state string) {
	t.Helper()
	ents, _ := os.ReadDir(state)
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".lock") {
			t.Errorf("state left behind: %s", e.Name())
		}
	}
}

// TestRefileMaildir: a 300-message maildir (a quarter in new/, the rest
// in cur/ with :2,S, :2,FR or :2,Sa, a a keyword of dovecot-keywords),
// and the same messages in an MH folder (flags in .mh_sequences),
// refiled by the rules into a maildir, an mbox and an MH folder: every
// message once, where the rules say, each copy with the flags it had as
// far as its folder holds them (maildir info and keywords, mbox Status,
// X-Status and X-Keywords, MH sequences); --dry-run before changes
// nothing and prints the same table.
func TestRefileMaildir(t *testing.T) {
	for _, kind := range []string{"maildir", "mh"} {
		t.Run(kind, func(t *testing.T) {
			msgs := refileCorpus(300)
			root, rules, src, state := refileSetup(t, msgs, kind)
			want := fmt.Sprintf("%[1]s -> %[1]s: 60\n%[1]s -> dev: 120\n%[1]s -> mh: 60\n%[1]s -> ops.mbox: 60\n", src)
			dry := runRefileOK(t, rules, state, src, "--dry-run")
			if dry != want {
				t.Errorf("dry run prints\n%s\nwant\n%s", dry, want)
			}
			if _, err := os.Stat(filepath.Join(root, "dev")); err == nil {
				t.Fatal("the dry run made dev/")
			}
			if got := runRefileOK(t, rules, state, src); got != want {
				t.Errorf("refile prints\n%s\nwant\n%s", got, want)
			}
			checkRefiled(t, root, msgs, kind)
			checkNoState(t, state)
			// Again: everything left stays.
			if got := runRefileOK(t, rules, state, src); got != fmt.Sprintf("%[1]s -> %[1]s: 60\n", src) {
				t.Errorf("second refile prints %q", got)
			}
			checkRefiled(t, root, msgs, kind)
		})
	}
}

// TestRefileMbox: the same corpus in an mbox: the mbox keeps the
// messages that stay, byte for byte as they were, and the moved ones
// leave it; maildir copies get the flags of Status and X-Status.
func TestRefileMbox(t *testing.T) {
	msgs := refileCorpus(300)
	root, rules, src, state := refileSetup(t, msgs, "mbox")
	var stays []refileMsg
	for _, m := range msgs {
		if m.dest == "src" {
			stays = append(stays, m)
		}
	}
	wantMbox := filepath.Join(t.TempDir(), "want.mbox")
	writeRefileMbox(t, wantMbox, stays)
	before, _ := os.ReadFile(src)
	want := fmt.Sprintf("%[1]s -> %[1]s: 60\n%[1]s -> dev: 120\n%[1]s -> mh: 60\n%[1]s -> ops.mbox: 60\n", src)
	if got := runRefileOK(t, rules, state, src, "-n"); got != want {
		t.Errorf("dry run prints\n%s\nwant\n%s", got, want)
	}
	if after, _ := os.ReadFile(src); !bytes.Equal(before, after) {
		t.Fatal("the dry run changed the mbox")
	}
	if got := runRefileOK(t, rules, state, src); got != want {
		t.Errorf("refile prints\n%s\nwant\n%s", got, want)
	}
	checkRefiled(t, root, msgs, "mbox")
	checkNoState(t, state)
	got, _ := os.ReadFile(src)
	wantData, _ := os.ReadFile(wantMbox)
	if !bytes.Equal(got, wantData) {
		t.Errorf("the mbox after refile is not its messages that stay, as they were")
	}
}

// TestRefileKilled: 21 trials, in turn of a maildir, an mbox and an MH
// folder of 500 messages (300 of them move: two batches), in which SIGKILL ends
// mfilter refile at a random moment before it is done, up to three
// times in a row (a killed run finishing a killed run); then it runs to
// its end. Every message is then in exactly one place (counted by
// Message-ID over every folder, the source included), where the rules
// send it, with its flags; the state directory is empty and the mbox
// holds only what stays. A kill that comes after the run ended does not
// make a trial: the trials go on until 21 were killed midway (seven of each kind).
func TestRefileKilled(t *testing.T) {
	msgs := refileCorpus(500)
	// How long a whole run takes here (the slowest of three), to kill
	// within it.
	var full time.Duration
	for i := 0; i < 3; i++ {
		_, rules, src, state := refileSetup(t, msgs, []string{"maildir", "mbox", "mh"}[i%3])
		start := time.Now()
		runRefileOK(t, rules, state, src)
		full = max(full, time.Since(start))
	}
	seed := time.Now().UnixNano()
	t.Logf("a whole run takes up to %v; seed %d", full, seed)
	rng := rand.New(rand.NewSource(seed))
	trials, kills, resumed := 0, 0, 0
	for attempt := 0; trials < 21; attempt++ {
		if attempt == 100 {
			t.Fatalf("only %d of %d attempts killed a run before it ended", trials, attempt)
		}
		kind := []string{"maildir", "mbox", "mh"}[attempt%3]
		root, rules, src, state := refileSetup(t, msgs, kind)
		n := 1 + rng.Intn(3)
		killed := 0
		for k := 0; k < n; k++ {
			cmd := refileCmd(rules, state, src)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Duration(rng.Int63n(int64(full) + 1)))
			cmd.Process.Signal(syscall.SIGKILL)
			err := cmd.Wait()
			var ee *exec.ExitError
			if errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled() {
				killed++
			}
		}
		if killed > 0 {
			trials++
			kills += killed
		}
		cmd := refileCmd(rules, state, src)
		var outb, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &outb, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("attempt %d: the rerun: %v: %s", attempt, err, errb.Bytes())
		}
		if strings.Contains(errb.String(), "finishing an unfinished run") {
			resumed++
		}
		checkRefiled(t, root, msgs, kind)
		checkNoState(t, state)
		if kind == "mbox" {
			if _, err := os.Stat(filepath.Join(root, ".src.mbox.mfilter-refile")); err == nil {
				t.Errorf("attempt %d: the rewrite's temporary file is left", attempt)
			}
		}
		if t.Failed() {
			t.Fatalf("attempt %d (%s, %d of %d runs killed): the rerun printed\n%s%s", attempt, kind, killed, n, outb.Bytes(), errb.Bytes())
		}
	}
	t.Logf("%d trials, %d runs killed midway; %d reruns finished an unfinished run", trials, kills, resumed)
	if resumed < 3 {
		t.Errorf("only %d reruns found an unfinished run: the trials prove little", resumed)
	}
}

// TestRefileDovecot: Dovecot's doveadm reads the maildir that refile
// filed into with the flags the messages had: \Seen for :2,S, \Flagged
// \Answered \Seen for an mbox message with Status: RO and X-Status: AF,
// the keyword $Work for :2,Sa (a in the source's dovecot-keywords) and
// for X-Keywords: $Work, and none for those that were in new/ (or
// unread in the mbox).
func TestRefileDovecot(t *testing.T) {
	tool(t, "doveadm")
	for _, kind := range []string{"maildir", "mbox"} {
		t.Run(kind, func(t *testing.T) {
			msgs := refileCorpus(60)
			root, rules, src, state := refileSetup(t, msgs, kind)
			runRefileOK(t, rules, state, src)
			d := newMaildirDoveadm(t, root)
			out, err := d.doveadm("-f", "flow", "fetch", "flags hdr.message-id", "mailbox", "dev", "all")
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				m := regexp.MustCompile(`^flags=(.*?) hdr\.message-id=<([^>]+)>`).FindStringSubmatch(line)
				if m == nil {
					t.Fatalf("doveadm fetch: %q", line)
				}
				// \Recent is the session's (every message is new to an
				// index in memory), not a flag of the file.
				got[m[2]] = strings.Join(strings.Fields(strings.ReplaceAll(m[1], `\Recent`, "")), " ")
			}
			n := 0
			for _, m := range msgs {
				if m.dest != "dev" {
					continue
				}
				n++
				want := map[string]string{
					"-":  ``,
					"S":  `\Seen`,
					"FR": `\Answered \Flagged`,
					"Sa": `\Seen ` + refileKeyword,
				}[m.flags]
				if kind == "mbox" && m.flags == "FR" {
					want = `\Answered \Flagged \Seen`
				}
				if got[m.id] != want {
					t.Errorf("%s: Dovecot sees flags %q, want %q", m.id, got[m.id], want)
				}
			}
			if len(got) != n {
				t.Errorf("Dovecot sees %d messages in dev, want %d", len(got), n)
			}
		})
	}
}

// newMaildirDoveadm is a doveadm configuration over the maildirs below
// root (dev/ is the mailbox "dev"), owned by the user Dovecot reads as.
func newMaildirDoveadm(t *testing.T, root string) *dovecot {
	t.Helper()
	d := newDovecot(t)
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		out, err := exec.Command("id", "-u", d.user).Output()
		if err != nil {
			t.Fatal(err)
		}
		uid, _ = strconv.Atoi(strings.TrimSpace(string(out)))
		out, err = exec.Command("id", "-g", d.user).Output()
		if err != nil {
			t.Fatal(err)
		}
		gid, _ = strconv.Atoi(strings.TrimSpace(string(out)))
	}
	for p := root; p != "/" && uid != os.Getuid(); p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
		if p == filepath.Dir(filepath.Dir(root)) {
			break
		}
	}
	filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err == nil {
			os.Lchown(p, uid, gid)
		}
		return nil
	})
	conf, err := os.ReadFile(d.conf)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(conf), "\n") {
		if strings.HasPrefix(l, "mail_location") {
			l = "mail_location = maildir:" + root + ":LAYOUT=fs:INDEX=MEMORY"
		}
		lines = append(lines, l)
	}
	if err := os.WriteFile(d.conf, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}
