package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/mfilter/mfilter/bench"
	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/mailfmt"
)

// runRefile is the refile scenario: the rules scenario's messages,
// already filed in one maildir (the rules' default folder, inbox/, some
// of them read and flagged in cur/), filed again by mfilter refile with
// the same 15 rules, against filing the same messages from an mbox
// (mfilter --rules rules.yaml < mbox) and against fdm with the maildir as
// its account. Every run starts from a fresh copy of the source maildir
// (the copy is not timed). mfilter refile and mfilter < mbox must leave
// the same messages in the same folders, and refile must keep each
// moved message's place (new/ or cur/) and flags.
func runRefile(args []string) error {
	fs := flag.NewFlagSet("mbench refile", flag.ContinueOnError)
	var c common
	c.register(fs)
	fdm := fs.String("fdm", "fdm", "the fdm binary")
	fs.Lookup("target").Usage = "largest refile / (mfilter < mbox) ratio of the medians that meets the target"
	fs.Lookup("target").DefValue = "2"
	c.target = 2
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.runs < 1 || c.n < 1 {
		return errors.New("-runs and -n must be at least 1")
	}
	path, err := exec.LookPath(*fdm)
	if err != nil {
		return err
	}
	if *fdm, err = filepath.Abs(path); err != nil {
		return err
	}
	c.build = func(kept []bench.Message, n int) ([]byte, []bench.Message, []bench.Rejected, error) {
		kept, rejected, err := selectFdm(kept, *fdm, c.mfilter)
		if err != nil {
			return nil, nil, nil, err
		}
		return buildRefile(kept, n), kept, rejected, nil
	}
	mbox, cleanup, err := c.setup()
	if err != nil {
		return err
	}
	defer cleanup()

	// The source: the mbox filed by mfilter into one maildir, every
	// message in new/, then some moved to cur/ with flags, as a mail
	// reader leaves them.
	src, err := makeRefileSource(c.mfilter, mbox, filepath.Join(c.runsDir, "source"))
	if err != nil {
		return err
	}
	if len(src.files) != c.n {
		return fmt.Errorf("the source maildir holds %d messages, the mbox %d", len(src.files), c.n)
	}
	if len(src.byHash) != c.n {
		return fmt.Errorf("the source maildir holds %d distinct messages of %d", len(src.byHash), c.n)
	}

	root := os.Geteuid() == 0
	var fdmDirs []string
	defer func() {
		for _, d := range fdmDirs {
			syscall.Unmount(filepath.Join(d, "inbox"), syscall.MNT_DETACH)
			os.RemoveAll(d)
		}
	}()
	type refileTool struct {
		label   string
		command func(dir string) *exec.Cmd
		prepare func(dir string) error
		after   func(dir string) error // untimed, after the run
		stdin   string
	}
	tools := []refileTool{
		{
			label: "mfilter refile --rules rules.yaml inbox",
			command: func(dir string) *exec.Cmd {
				return exec.Command(c.mfilter, "refile", "--rules", dir+".rules.yaml", "--state-dir", dir+".state", filepath.Join(dir, "inbox"))
			},
			prepare: func(dir string) error {
				if err := src.copyTo(filepath.Join(dir, "inbox"), 0o700, 0o600); err != nil {
					return err
				}
				return os.WriteFile(dir+".rules.yaml", []byte(bench.RulesYAML(dir)), 0o600)
			},
			after: func(dir string) error {
				// A finished refile leaves no state behind.
				names, err := readNames(dir + ".state")
				if err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
				if len(names) > 0 {
					return fmt.Errorf("refile left its state in %s.state: %s", dir, strings.Join(names, " "))
				}
				return nil
			},
			stdin: os.DevNull,
		},
		{
			label: "mfilter --rules rules.yaml < mbox",
			command: func(dir string) *exec.Cmd {
				return exec.Command(c.mfilter, "--rules", dir+".rules.yaml")
			},
			prepare: func(dir string) error {
				return os.WriteFile(dir+".rules.yaml", []byte(bench.RulesYAML(dir)), 0o600)
			},
			stdin: mbox,
		},
		{
			label: "fdm -u root fetch (maildir account)",
			command: func(dir string) *exec.Cmd {
				if root {
					return exec.Command(*fdm, "-q", "-u", "root", "-f", dir+".fdm.conf", "fetch")
				}
				return exec.Command(*fdm, "-q", "-f", dir+".fdm.conf", "fetch")
			},
			prepare: func(dir string) error {
				inbox := filepath.Join(dir, "inbox")
				account := inbox
				if root {
					// fdm run as root reads (and deletes from) the
					// account in a child that runs as an unprivileged
					// user, which cannot reach the private work
					// directory: the source maildir is bind-mounted at
					// a place it can reach, so that fdm works on the
					// same file system as mfilter. Its directories must
					// be writable by that user.
					if err := src.copyTo(inbox, 0o777, 0o644); err != nil {
						return err
					}
					d, err := os.MkdirTemp("", "mbench-fdm-")
					if err != nil {
						return err
					}
					fdmDirs = append(fdmDirs, d)
					if err := os.Chmod(d, 0o755); err != nil {
						return err
					}
					account = filepath.Join(d, "inbox")
					if err := os.Mkdir(account, 0o755); err != nil {
						return err
					}
					if err := syscall.Mount(inbox, account, "", syscall.MS_BIND, ""); err != nil {
						return fmt.Errorf("bind-mounting the source maildir for fdm's unprivileged child: %w", err)
					}
				} else if err := src.copyTo(inbox, 0o700, 0o600); err != nil {
					return err
				}
				return os.WriteFile(dir+".fdm.conf", []byte(fdmRefileConf(dir, account)), 0o600)
			},
			after: func(dir string) error {
				if !root {
					return nil
				}
				d := fdmDirs[len(fdmDirs)-1]
				if err := syscall.Unmount(filepath.Join(d, "inbox"), 0); err != nil {
					return err
				}
				fdmDirs = fdmDirs[:len(fdmDirs)-1]
				return os.RemoveAll(d)
			},
			stdin: os.DevNull,
		},
	}
	const iRefile, iMbox, iFdm = 0, 1, 2
	short := []string{"refile", "mbox", "fdm"}

	fmt.Printf("refile: the rules scenario's %d messages (each made distinct by an X-Bench-Seq field), filed into one maildir, inbox/ (the rules' default folder), %d of them moved to cur/ with flags; refiled there by the same 15 rules\n",
		c.n, src.inCur)
	fmt.Printf("folders: %s on %s\n", c.runsDir, describeFS(c.runsDir))
	fmt.Printf("runs: %d of each tool, order rotated, each into a new directory after a fresh (untimed) copy of the source and sync(2)\n", c.runs)
	fmt.Println("fsync: fdm fsyncs each maildir file before linking it; mfilter makes every file, mbox and directory durable (batched) before it exits, and refile removes a source file only once its copy is durable")
	if root {
		fmt.Println("fdm: its account is the source maildir, bind-mounted where its unprivileged fetching child can reach it; messages for inbox/ are kept there (action keep), the others delivered and deleted from it")
	}

	results := make([][]result, len(tools))
	got := make([][]*refileFolders, len(tools))
	var refileOut []byte
	for run := 0; run < c.runs; run++ {
		for j := range tools {
			k := (j + run) % len(tools)
			t := tools[k]
			dir := filepath.Join(c.runsDir, fmt.Sprintf("run%d-%s", run+1, short[k]))
			if err := os.Mkdir(dir, 0o700); err != nil {
				return err
			}
			if err := t.prepare(dir); err != nil {
				return err
			}
			syscall.Sync()
			r, out, err := measureOut(t.command(dir), t.stdin, dir+".time")
			if err != nil {
				return err
			}
			if t.after != nil {
				if err := t.after(dir); err != nil {
					return err
				}
			}
			if k == iRefile && refileOut == nil {
				refileOut = bytes.ReplaceAll(out, []byte(dir+"/"), nil)
			}
			if c.verbose {
				fmt.Printf("  run %d %-40s %s\n", run+1, t.label, secs(r.wall))
			}
			results[k] = append(results[k], r)
			f, err := readRefileFolders(dir)
			if err != nil {
				return err
			}
			got[k] = append(got[k], f)
		}
	}

	// The checks: against the first run of mfilter < mbox.
	failed := false
	fail := func(format string, args ...any) {
		failed = true
		c.keep = true
		fmt.Printf("FAIL: "+format+"\n", args...)
	}
	ref := got[iMbox][0]
	if total := ref.total(); total != c.n {
		fail("mfilter < mbox filed %d messages, the mbox holds %d", total, c.n)
	}
	for _, f := range append(bench.RulesMaildirs(), bench.RulesMboxes...) {
		if len(ref.folders[f]) == 0 {
			fail("no message went to %s: a rule never fired", f)
		}
	}
	fdmAgrees := true
	var fdmFlagsLost, fdmToMaildir, moved, movedCur int // of the first runs
	for k, t := range tools {
		for run, f := range got[k] {
			if diff := ref.diff(&f.ruleFolders); diff != "" {
				if k == iFdm {
					fdmAgrees = false
				}
				fail("run %d of %s: folder contents differ from mfilter < mbox's:\n%s", run+1, t.label, diff)
			}
			switch k {
			case iRefile:
				if msg := src.checkRefile(f); msg != "" {
					fail("run %d of %s: %s", run+1, t.label, msg)
				}
				if run == 0 {
					_, moved, movedCur, _ = src.flagsLost(f)
				}
			case iFdm:
				if run == 0 {
					fdmFlagsLost, _, _, fdmToMaildir = src.flagsLost(f)
				}
			}
		}
	}

	fmt.Println()
	fmt.Print("mfilter refile's report (run 1):\n", indent(string(refileOut)))
	fmt.Println()
	printFolderCounts([]tool{{label: short[iRefile]}, {label: short[iMbox]}, {label: short[iFdm]}},
		[]*ruleFolders{&got[iRefile][0].ruleFolders, &got[iMbox][0].ruleFolders, &got[iFdm][0].ruleFolders})
	fmt.Printf("moved out of inbox/: %d of %d messages (%d of them from cur/ with flags); %d stay\n",
		moved, c.n, movedCur, c.n-moved)
	fmt.Println()
	var rows []stats
	for k, t := range tools {
		rows = append(rows, summarize(t.label, results[k], got[k][0].total(), true))
	}
	printTable(rows)
	steal := slices.Clone(rows)
	for k := range steal {
		steal[k].label = short[k]
	}
	printSteal(steal)
	fmt.Println()
	med := float64(rows[iRefile].median) / float64(rows[iMbox].median)
	best := float64(rows[iRefile].best) / float64(rows[iMbox].best)
	verdict := "met"
	if med > c.target {
		verdict = "MISSED"
	}
	fmt.Printf("ratio refile / (mfilter < mbox): %.3fx median, %.3fx best (target at most %gx: %s)\n", med, best, c.target, verdict)
	fmt.Printf("ratio fdm / refile: %.1fx median, %.1fx best\n",
		float64(rows[iFdm].median)/float64(rows[iRefile].median), float64(rows[iFdm].best)/float64(rows[iRefile].best))
	if fdmAgrees {
		fmt.Printf("fdm: the same messages in the same folders; of the %d moved messages from cur/ with flags, %d went to maildirs, and fdm put %d of those in new/ without flags (refile: in cur/ with their flags); the other %d went to mboxes, fdm's without flags, refile's with Status and X-Status\n", movedCur, fdmToMaildir, fdmFlagsLost, movedCur-fdmToMaildir)
	}
	if failed {
		return errors.New("the tools disagree (see FAIL above)")
	}
	fmt.Printf("check: refile and mfilter < mbox (and fdm) leave the same %d messages in the same %d folders in every run (sha256 multisets of new/ and cur/; mbox messages without their From_ line and Status, X-Status, X-Keywords fields); refile left every staying message untouched (same file name) and gave every moved one its place and flags (in an mbox: its Status and X-Status)\n",
		ref.total(), len(ref.folders))
	return nil
}

// buildRefile is bench.BuildRules with an X-Bench-Seq field at the end of
// every message's header, which makes the messages distinct, so that
// each one can be followed from the source to its folder.
func buildRefile(msgs []bench.Message, n int) []byte {
	var out []byte
	for i := range n {
		e := bench.Tag(msgs[i%len(msgs)].Entry, i)
		end := fieldsEnd(e)
		out = append(out, e[:end]...)
		out = append(out, fmt.Sprintf("X-Bench-Seq: %d\n", i)...)
		out = append(out, e[end:]...)
	}
	return out
}

// fieldsEnd is where the header of an mbox entry ends, as bench.Tag
// finds it: after its From_ line, the fields and their continuation
// lines.
func fieldsEnd(entry []byte) int {
	p := bytes.IndexByte(entry, '\n') + 1
	for p < len(entry) {
		line := entry[p:]
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			line = line[:i+1]
		}
		if line[0] != ' ' && line[0] != '\t' && !startsField(line) {
			break
		}
		p += len(line)
	}
	return p
}

func startsField(line []byte) bool {
	for i, c := range line {
		switch {
		case c == ':':
			return i > 0
		case c <= ' ' || c >= 0x7f:
			return false
		}
	}
	return false
}

// fdmRefileConf is bench.FdmConf with the maildir at account as the
// account: the messages the rules file into inbox/ are kept where they
// are, the others delivered and (fdm's default) deleted from it.
func fdmRefileConf(dir, account string) string {
	conf := bench.FdmConf(dir, "MBOX")
	conf = strings.Replace(conf, `account "bench" mbox "MBOX" keep`, fmt.Sprintf("account \"bench\" maildir \"%s\"", account), 1)
	conf = strings.Replace(conf, fmt.Sprintf("action \"inbox\" maildir \"%s/inbox\"", dir), `action "inbox" keep`, 1)
	return conf
}

// refileSource is the source maildir that every run copies.
type refileSource struct {
	dir        string
	files      []sourceFile
	byHash     map[string]*sourceFile
	byStripped map[string]*sourceFile // by strippedHash, for mbox copies
	inCur      int
}

type sourceFile struct {
	sub, name string // sub: new or cur
	flags     string // of a file in cur/
	data      []byte
}

// makeRefileSource files mbox with mfilter into the maildir base/inbox
// and moves some messages to cur/ with flags: of every 7 messages (by
// their X-Bench-Seq; 7 shares no factor with the periods of bench.Tag, so
// flagged messages go to every folder), one seen, one seen and answered,
// one seen and flagged; the rest stay in new/.
func makeRefileSource(mfilter, mbox, base string) (*refileSource, error) {
	if err := os.Mkdir(base, 0o700); err != nil {
		return nil, err
	}
	in, err := os.Open(mbox)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	cmd := exec.Command(mfilter, "--maildir", base, "--default", "inbox/")
	cmd.Stdin = in
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%s: %v: %s", mfilter, err, out)
	}
	s := &refileSource{dir: filepath.Join(base, "inbox"), byHash: make(map[string]*sourceFile)}
	names, err := readNames(filepath.Join(s.dir, "new"))
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	s.files = make([]sourceFile, 0, len(names))
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(s.dir, "new", name))
		if err != nil {
			return nil, err
		}
		f := sourceFile{sub: "new", name: name, data: data}
		var seq int
		if i := bytes.Index(data, []byte("\nX-Bench-Seq: ")); i < 0 {
			return nil, fmt.Errorf("%s/new/%s: no X-Bench-Seq field", s.dir, name)
		} else if _, err := fmt.Sscanf(string(data[i+len("\nX-Bench-Seq: "):]), "%d", &seq); err != nil {
			return nil, fmt.Errorf("%s/new/%s: X-Bench-Seq: %v", s.dir, name, err)
		}
		if flags := []string{"", "S", "", "RS", "", "FS", ""}[seq%7]; flags != "" {
			f.sub, f.flags, f.name = "cur", flags, name+":2,"+flags
			if err := os.Rename(filepath.Join(s.dir, "new", name), filepath.Join(s.dir, "cur", f.name)); err != nil {
				return nil, err
			}
			s.inCur++
		}
		s.files = append(s.files, f)
	}
	s.byStripped = make(map[string]*sourceFile, len(s.files))
	for i := range s.files {
		s.byHash[messageHash(s.files[i].data)] = &s.files[i]
		s.byStripped[strippedHash(s.files[i].data)] = &s.files[i]
	}
	return s, nil
}

// copyTo makes a copy of the source maildir at dir.
func (s *refileSource) copyTo(dir string, dirMode, fileMode os.FileMode) error {
	for _, d := range []string{dir, filepath.Join(dir, "tmp"), filepath.Join(dir, "new"), filepath.Join(dir, "cur")} {
		if err := os.Mkdir(d, dirMode); err != nil {
			return err
		}
		if err := os.Chmod(d, dirMode); err != nil { // past the umask
			return err
		}
	}
	for _, f := range s.files {
		p := filepath.Join(dir, f.sub, f.name)
		if err := os.WriteFile(p, f.data, fileMode); err != nil {
			return err
		}
		if err := os.Chmod(p, fileMode); err != nil {
			return err
		}
	}
	return nil
}

// refileFolders is what a run left in the folders of the rules, maildir
// messages from new/ and cur/ alike, and, for each maildir message, where
// it is.
type refileFolders struct {
	ruleFolders
	where map[string]placedFile // by messageHash
	// mboxFlags are the flags (maildir letters) of each mbox message,
	// by its hash without the fields that hold them (strippedHash).
	mboxFlags map[string]string
}

type placedFile struct {
	folder, sub, name, flags string
}

func readRefileFolders(dir string) (*refileFolders, error) {
	r := &refileFolders{ruleFolders: ruleFolders{folders: make(map[string][]string)}, where: make(map[string]placedFile), mboxFlags: make(map[string]string)}
	for _, f := range bench.RulesMaildirs() {
		md := filepath.Join(dir, f)
		if _, err := os.Stat(md); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if names, err := readNames(filepath.Join(md, "tmp")); err != nil {
			return nil, err
		} else if len(names) > 0 {
			return nil, fmt.Errorf("%s/tmp holds %d files", md, len(names))
		}
		var hashes []string
		for _, sub := range []string{"new", "cur"} {
			names, err := readNames(filepath.Join(md, sub))
			if err != nil {
				return nil, err
			}
			for _, name := range names {
				b, err := os.ReadFile(filepath.Join(md, sub, name))
				if err != nil {
					return nil, err
				}
				h := messageHash(b)
				hashes = append(hashes, h)
				p := placedFile{folder: f, sub: sub, name: name}
				if _, info, ok := strings.Cut(name, ":2,"); ok {
					p.flags = info
				}
				r.where[h] = p
			}
		}
		sort.Strings(hashes)
		r.folders[f] = hashes
	}
	for _, f := range bench.RulesMboxes {
		hashes, err := r.readMbox(filepath.Join(dir, f))
		if err != nil {
			return nil, err
		}
		if hashes != nil {
			r.folders[f] = hashes
		}
	}
	return r, nil
}

// readMbox hashes the messages of the mbox at path without their From_
// lines and without the fields that hold flags (refile writes Status
// and X-Status for a message that had flags, mfilter < mbox and fdm
// write none), and notes each one's flags.
func (r *refileFolders) readMbox(path string) ([]string, error) {
	hashes := []string{}
	found, err := eachMboxMessage(path, func(m []byte) {
		h := strippedHash(m)
		hashes = append(hashes, h)
		r.mboxFlags[h] = flagLetters(deliver.ParseMboxFlags(m))
	})
	if err != nil || !found {
		return nil, err
	}
	sort.Strings(hashes)
	return hashes, nil
}

// strippedHash is the messageHash of m without its From_ line and its
// Status, X-Status and X-Keywords fields.
func strippedHash(m []byte) string {
	var out []byte
	last := 0
	for _, f := range mailfmt.HeaderFields(m) {
		fromLine := !bytes.HasSuffix(f.Name, []byte(":"))
		name := strings.TrimRight(strings.TrimSuffix(string(f.Name), ":"), " \t")
		if fromLine || slices.ContainsFunc([]string{"Status", "X-Status", "X-Keywords"}, func(s string) bool { return strings.EqualFold(s, name) }) {
			out = append(out, m[last:f.Start]...)
			last = f.End
		}
	}
	return messageHash(append(out, m[last:]...))
}

// flagLetters writes flags as a maildir's info does ("" for none).
func flagLetters(f deliver.Flags) string {
	var b []byte
	for _, c := range []struct {
		on bool
		l  byte
	}{{f.Draft, 'D'}, {f.Flagged, 'F'}, {f.Answered, 'R'}, {f.Seen, 'S'}, {f.Deleted, 'T'}} {
		if c.on {
			b = append(b, c.l)
		}
	}
	return string(b)
}

// checkRefile says how refile's result breaks its promises ("" if it does
// not): a message that stays in inbox/ keeps its file name; a moved one
// keeps its place, new/ or cur/, and its flags in a maildir, and its
// flags in an mbox (Status, X-Status).
func (s *refileSource) checkRefile(f *refileFolders) string {
	var renamed, misplaced int
	var example string
	for h, flags := range f.mboxFlags {
		if sf := s.byStripped[h]; sf != nil && flags != sf.flags {
			misplaced++
			example = fmt.Sprintf("%s/%s went to an mbox with flags %q", sf.sub, sf.name, flags)
		}
	}
	for h, p := range f.where {
		sf := s.byHash[h]
		if sf == nil {
			continue // the folder comparison reports it
		}
		switch {
		case p.folder == "inbox":
			if p.sub != sf.sub || p.name != sf.name {
				renamed++
				example = fmt.Sprintf("%s/%s became inbox/%s/%s", sf.sub, sf.name, p.sub, p.name)
			}
		case p.sub != sf.sub || p.flags != sf.flags:
			misplaced++
			example = fmt.Sprintf("%s/%s became %s/%s/%s", sf.sub, sf.name, p.folder, p.sub, p.name)
		}
	}
	if renamed+misplaced == 0 {
		return ""
	}
	return fmt.Sprintf("%d messages that stay were renamed, %d moved ones lost their place or flags (%s)", renamed, misplaced, example)
}

// flagsLost counts, in a run's result, the moved messages: all of them,
// those that came from cur/, those of the latter that went to a maildir,
// and of these the ones that went to its new/ or lost their flags there.
func (s *refileSource) flagsLost(f *refileFolders) (lost, moved, movedCur, toMaildir int) {
	inInbox := make(map[string]bool)
	for h, p := range f.where {
		if p.folder == "inbox" {
			inInbox[h] = true
		}
	}
	for h, sf := range s.byHash {
		if inInbox[h] {
			continue
		}
		moved++
		if sf.sub != "cur" {
			continue
		}
		movedCur++
		if p, ok := f.where[h]; ok {
			toMaildir++
			if p.sub != "cur" || p.flags != sf.flags {
				lost++
			}
		}
	}
	return lost, moved, movedCur, toMaildir
}

// measureOut is measure with the tool's standard output kept apart and
// returned (mfilter refile prints what it did), and stdin from the file
// at input.
func measureOut(cmd *exec.Cmd, input, scratch string) (result, []byte, error) {
	in, err := os.Open(input)
	if err != nil {
		return result{}, nil, err
	}
	defer in.Close()
	args := cmd.Args
	if gnuTime != "" {
		cmd = exec.Command(gnuTime, append([]string{"-f", "%M %U %S", "-o", scratch, "--"}, args...)...)
	}
	var out, errOut bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = in, &out, &errOut
	var wall time.Duration
	steal := stealDuring(func() {
		start := time.Now()
		err = cmd.Run()
		wall = time.Since(start)
	})
	if err != nil {
		return result{}, nil, fmt.Errorf("%s: %v\n%s%s", strings.Join(args, " "), err, out.Bytes(), errOut.Bytes())
	}
	if errOut.Len() > 0 {
		fmt.Fprintf(os.Stderr, "%s says:\n%s", filepath.Base(args[0]), errOut.Bytes())
	}
	r := result{wall: wall, maxRSS: -1, steal: steal}
	if gnuTime == "" {
		return r, out.Bytes(), nil
	}
	b, err := os.ReadFile(scratch)
	if err != nil {
		return result{}, nil, err
	}
	var kb int64
	var user, sys float64
	if _, err := fmt.Sscanf(string(b), "%d %f %f", &kb, &user, &sys); err != nil {
		return result{}, nil, fmt.Errorf("%s: cannot read %q: %v", gnuTime, b, err)
	}
	r.maxRSS = kb * 1024
	r.user = time.Duration(user * float64(time.Second))
	r.sys = time.Duration(sys * float64(time.Second))
	return r, out.Bytes(), nil
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ") + "\n"
}
