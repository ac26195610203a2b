package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"

	"github.com/mfilter/mfilter/bench"
	"github.com/mfilter/mfilter/internal/mailfmt"
)

// runRules is the rules scenario: the mbox, tagged so that each of the 15
// rules of bench-anchors.md fires, filed by formail -s procmail, by fdm
// (an mbox account) and by mfilter with the same rules in each one's
// language. All three must leave the same messages in the same folders.
func runRules(args []string) error {
	fs := flag.NewFlagSet("mbench rules", flag.ContinueOnError)
	var c common
	c.register(fs)
	fdm := fs.String("fdm", "fdm", "the fdm binary")
	targetFdm := fs.Float64("target-fdm", 20, "speed-up over fdm that mfilter should reach")
	fs.Lookup("target").Usage = "speed-up over formail -s procmail that mfilter should reach"
	fs.Lookup("target").DefValue = "60"
	c.target = 60
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
	c.rebuild = bench.BuildRules
	c.build = func(kept []bench.Message, n int) ([]byte, []bench.Message, []bench.Rejected, error) {
		kept, rejected, err := selectFdm(kept, *fdm, c.mfilter)
		if err != nil {
			return nil, nil, nil, err
		}
		return bench.BuildRules(kept, n), kept, rejected, nil
	}
	mbox, cleanup, err := c.setup()
	if err != nil {
		return err
	}
	defer cleanup()
	var fdmInputs []string
	defer func() {
		for _, d := range fdmInputs {
			os.RemoveAll(d)
		}
	}()

	tools := []tool{
		{
			label: "formail -s procmail -m rc",
			command: func(dir string) *exec.Cmd {
				return exec.Command(c.formail, "-s", c.procmail, "-m", dir+".rc")
			},
			prepare: func(dir string) error {
				return os.WriteFile(dir+".rc", []byte(bench.Procmailrc(dir)), 0o644)
			},
		},
		{
			label: "fdm -u root fetch (mbox account)",
			command: func(dir string) *exec.Cmd {
				return exec.Command(*fdm, "-q", "-u", "root", "-f", dir+".fdm.conf", "fetch")
			},
			prepare: func(dir string) error {
				// fdm run as root reads the mbox in a child that runs as
				// an unprivileged user and opens it for writing: a copy
				// of mode 0666 in a directory of mode 0777 that everyone
				// can reach (the work directory is private). Its
				// configuration must be mode 0600.
				inDir, err := os.MkdirTemp("", "mbench-fdm-")
				if err != nil {
					return err
				}
				fdmInputs = append(fdmInputs, inDir)
				in := filepath.Join(inDir, "in.mbox")
				if err := copyFile(mbox, in, 0o666); err != nil {
					return err
				}
				for _, p := range []struct {
					path string
					mode os.FileMode
				}{{in, 0o666}, {inDir, 0o777}} {
					if err := os.Chmod(p.path, p.mode); err != nil {
						return err
					}
				}
				return os.WriteFile(dir+".fdm.conf", []byte(bench.FdmConf(dir, in)), 0o600)
			},
		},
		{
			label: "mfilter --rules rules.yaml",
			command: func(dir string) *exec.Cmd {
				return exec.Command(c.mfilter, "--rules", dir+".rules.yaml")
			},
			prepare: func(dir string) error {
				return os.WriteFile(dir+".rules.yaml", []byte(bench.RulesYAML(dir)), 0o600)
			},
		},
	}
	fmt.Printf("rules: the 15 of bench-anchors.md; every 4th message carries one of 10 List-Ids, 1 in 10 each a boss Reply-To, an X-Priority-Tag, an X-Spam-Flag, the newsletter body line, 1 in 200 is padded past %d bytes\n", bench.BigSize)
	fmt.Printf("folders: %s on %s\n", c.runsDir, describeFS(c.runsDir))
	fmt.Printf("runs: %d of each tool, order rotated, each into a new directory after sync(2)\n", c.runs)
	fmt.Println("fsync: procmail and fdm fsync each maildir file before linking it; mfilter makes every file, mbox and directory durable (batched) before it exits")

	results := make([][]result, len(tools))
	var ref *ruleFolders // the first run of the first tool
	var counts []*ruleFolders
	failed := false
	for run := 0; run < c.runs; run++ {
		for j := range tools {
			k := (j + run) % len(tools)
			t := tools[k]
			dir := filepath.Join(c.runsDir, fmt.Sprintf("run%d-%s", run+1, strings.Fields(t.label)[0]))
			if err := os.Mkdir(dir, 0o700); err != nil {
				return err
			}
			if err := t.prepare(dir); err != nil {
				return err
			}
			syscall.Sync()
			r, err := measure(t.command(dir), mbox, dir+".time")
			if err != nil {
				return err
			}
			if c.verbose {
				fmt.Printf("  run %d %-34s %s\n", run+1, t.label, secs(r.wall))
			}
			results[k] = append(results[k], r)
			got, err := readRuleFolders(dir)
			if err != nil {
				return err
			}
			if run == 0 {
				counts = append(counts, nil)
				counts[k] = got
			}
			if ref == nil {
				ref = got
				continue
			}
			if diff := ref.diff(got); diff != "" {
				failed = true
				c.keep = true
				fmt.Printf("FAIL: run %d of %s: folder contents differ from %s's:\n%s", run+1, t.label, tools[0].label, diff)
			}
		}
	}

	fmt.Println()
	printFolderCounts(tools, counts)
	fmt.Println()
	var rows []stats
	for k, t := range tools {
		rows = append(rows, summarize(t.label, results[k], counts[k].total(), true))
	}
	// The floor rows write what mfilter's first run left, its maildir
	// files into the same maildirs and its mbox files, durably
	// in-process: no rules, no splitting, no locks, one write for each
	// mbox. They are not a strict
	// bound (writing while earlier batches sync can beat them), but they
	// show what a tool that did nothing else would reach here.
	files, mboxes, err := filedBytes(filepath.Join(c.runsDir, "run1-mfilter"))
	if err != nil {
		return err
	}
	floors, err := floorRows(c.runsDir, files, mboxes, c.runs)
	if err != nil {
		return err
	}
	printTable(append(rows, floors...))
	printSteal(rows)
	fmt.Println()
	floor := floors[0]
	for _, f := range floors[1:] {
		if f.median < floor.median {
			floor = f
		}
	}
	if total := ref.total(); total != c.n {
		fmt.Printf("FAIL: %d messages filed, the mbox holds %d\n", total, c.n)
		failed = true
	}
	for _, f := range append(bench.RulesMaildirs(), bench.RulesMboxes...) {
		if len(ref.folders[f]) == 0 {
			fmt.Printf("FAIL: no message went to %s: a rule never fired\n", f)
			failed = true
		}
	}
	ratio := func(a, b int, target float64) {
		med := float64(rows[a].median) / float64(rows[b].median)
		best := float64(rows[a].best) / float64(rows[b].best)
		verdict := ""
		if target > 0 {
			verdict = fmt.Sprintf(" (target %gx: met", target)
			if med < target {
				verdict = fmt.Sprintf(" (target %gx: MISSED", target)
			}
			// What a tool that only wrote the files would reach.
			verdict += fmt.Sprintf("; the floor reaches %.1fx)", float64(rows[a].median)/float64(floor.median))
		}
		fmt.Printf("ratio %s / %s: %.1fx median, %.1fx best%s\n", strings.Fields(tools[a].label)[0], strings.Fields(tools[b].label)[0], med, best, verdict)
	}
	ratio(0, 2, c.target)
	ratio(1, 2, *targetFdm)
	ratio(0, 1, 0)
	fmt.Printf("mfilter / floor (%s): %.2fx median\n", floor.label, float64(rows[2].median)/float64(floor.median))
	if err := c.memoryCheck(rows[2].maxRSS, tools[2].prepare, tools[2].command); err != nil {
		fmt.Printf("FAIL: %v\n", err)
		failed = true
	}
	if failed {
		return errors.New("the tools disagree (see FAIL above)")
	}
	fmt.Printf("check: all three leave the same %d messages in the same %d folders in every run (sha256 multisets; mbox messages without their From_ line)\n",
		ref.total(), len(ref.folders))
	return nil
}

// filedBytes returns the messages in the maildirs of the rules under dir,
// each with its folder, the folders' messages spread evenly through the
// list as they came in the mbox, and the contents of its mbox files.
func filedBytes(dir string) (files []floorFile, mboxes [][]byte, err error) {
	type placed struct {
		at float64 // where in the mbox, from 0 to 1
		f  floorFile
	}
	var all []placed
	for _, folder := range bench.RulesMaildirs() {
		hashes, contents, err := maildirContents(filepath.Join(dir, folder))
		if err != nil {
			return nil, nil, err
		}
		for k, h := range hashes {
			all = append(all, placed{float64(k) / float64(len(hashes)), floorFile{folder: folder, data: contents[h]}})
		}
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].at < all[j].at })
	for _, p := range all {
		files = append(files, p.f)
	}
	for _, f := range bench.RulesMboxes {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return nil, nil, err
		}
		mboxes = append(mboxes, b)
	}
	return files, mboxes, nil
}

// ruleFolders is what a run left in the folders of the rules: per
// folder, the sorted sha256 sums of its messages (see messageHash).
// Maildir messages are the files in new/ (tmp/ and cur/ must be empty);
// mbox messages are split as mfilter splits them, without their From_
// lines, which each tool writes its own way.
type ruleFolders struct {
	folders map[string][]string
}

func readRuleFolders(dir string) (*ruleFolders, error) {
	return readRuleFoldersWith(dir, func(m []byte) []byte { return m })
}

// readRuleFoldersWith is readRuleFolders with each message passed
// through norm before it is hashed (mbox messages without their From_
// line).
func readRuleFoldersWith(dir string, norm func([]byte) []byte) (*ruleFolders, error) {
	r := &ruleFolders{folders: make(map[string][]string)}
	for _, f := range bench.RulesMaildirs() {
		md := filepath.Join(dir, f)
		if _, err := os.Stat(md); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if _, _, err := maildirContents(md); err != nil { // tmp/ and cur/ empty
			return nil, err
		}
		names, err := readNames(filepath.Join(md, "new"))
		if err != nil {
			return nil, err
		}
		var hashes []string
		for _, name := range names {
			b, err := os.ReadFile(filepath.Join(md, "new", name))
			if err != nil {
				return nil, err
			}
			hashes = append(hashes, messageHash(norm(b)))
		}
		sort.Strings(hashes)
		r.folders[f] = hashes
	}
	for _, f := range bench.RulesMboxes {
		hashes, err := mboxHashes(filepath.Join(dir, f), norm)
		if err != nil {
			return nil, err
		}
		if hashes != nil {
			r.folders[f] = hashes
		}
	}
	return r, nil
}

// messageHash is the sha256 of a message without the line ends at its
// end: procmail and mfilter keep the blank line that ends an mbox entry,
// fdm drops it and the message's last newline too.
func messageHash(m []byte) string {
	return fmt.Sprintf("%x", sha256.Sum256(bytes.TrimRight(m, "\r\n")))
}

func (r *ruleFolders) total() int {
	n := 0
	for _, h := range r.folders {
		n += len(h)
	}
	return n
}

// count is how many of other's messages r does not hold, over all
// folders.
func (r *ruleFolders) count(other *ruleFolders) int {
	n := 0
	for f, hashes := range other.folders {
		_, onlyO := diffMultisets(r.folders[f], hashes)
		n += len(onlyO)
	}
	return n
}

// diff describes how other differs from r, folder by folder.
func (r *ruleFolders) diff(other *ruleFolders) string {
	var b strings.Builder
	names := append(bench.RulesMaildirs(), bench.RulesMboxes...)
	for _, f := range names {
		onlyR, onlyO := diffMultisets(r.folders[f], other.folders[f])
		if len(onlyR)+len(onlyO) > 0 {
			fmt.Fprintf(&b, "  %s: %d messages, %d here; %d only there, %d only here\n",
				f, len(r.folders[f]), len(other.folders[f]), len(onlyR), len(onlyO))
		}
	}
	return b.String()
}

func printFolderCounts(tools []tool, counts []*ruleFolders) {
	tw := tabwriter.NewWriter(os.Stdout, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "messages per folder\t")
	for _, t := range tools {
		fmt.Fprintf(tw, "%s\t", strings.Fields(t.label)[0])
	}
	fmt.Fprintln(tw)
	names := append(bench.RulesMaildirs(), bench.RulesMboxes...)
	for _, f := range names {
		fmt.Fprintf(tw, "%s\t", f)
		for _, c := range counts {
			fmt.Fprintf(tw, "%d\t", len(c.folders[f]))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

// selectFdm keeps the messages that fdm files as mfilter (and so
// procmail) does: each message is put between two plain ones, filed into
// a maildir by fdm and by mfilter, and kept when both leave the same
// three messages. fdm leaves the From_ line in a message whose lines end
// in a bare CR, for one, and takes a ">From " line of some bodies as the
// end of the header.
func selectFdm(msgs []bench.Message, fdm, mfilter string) (kept []bench.Message, rejected []bench.Rejected, err error) {
	base, err := os.MkdirTemp("", "mbench-fdm-select-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(base)
	if err := os.Chmod(base, 0o777); err != nil {
		return nil, nil, err
	}
	ref := bench.Entry([]byte("From: ref@example.org\nSubject: ref\n\nref\n"))
	reasons := make([]string, len(msgs))
	errs := make([]error, len(msgs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2*runtime.NumCPU())
	for i, m := range msgs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			reasons[i], errs[i] = compareFdm(filepath.Join(base, strconv.Itoa(i)), fdm, mfilter, slices.Concat(ref, m.Entry, ref))
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	for i, m := range msgs {
		if reasons[i] == "" {
			kept = append(kept, m)
		} else {
			rejected = append(rejected, bench.Rejected{Name: m.Name, Reason: reasons[i]})
		}
	}
	if len(kept) == 0 {
		return nil, rejected, errors.New("fdm and mfilter file no corpus message alike")
	}
	return kept, rejected, nil
}

// compareFdm files mbox into a maildir with fdm and with mfilter, in
// dir, and says how the results differ ("" if they do not).
func compareFdm(dir, fdm, mfilter string, mbox []byte) (string, error) {
	if err := os.Mkdir(dir, 0o777); err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		return "", err
	}
	in := filepath.Join(dir, "in.mbox")
	if err := os.WriteFile(in, mbox, 0o666); err != nil {
		return "", err
	}
	if err := os.Chmod(in, 0o666); err != nil {
		return "", err
	}
	conf := filepath.Join(dir, "fdm.conf")
	text := fmt.Sprintf("set lock-types flock\nset no-received\naccount \"a\" mbox \"%s\" keep\naction \"i\" maildir \"%s/fdm\"\nmatch all action \"i\"\n", in, dir)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return "", err
	}
	args := []string{"-m", "-q", "-f", conf, "fetch"} // -m: no global lock file
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "root"}, args...)
	}
	if out, err := exec.Command(fdm, args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", fdm, strings.Join(args, " "), err, out)
	}
	cmd := exec.Command(mfilter, "--maildir", dir, "--default", "mfilter/")
	cmd.Stdin = bytes.NewReader(mbox)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s: %v: %s", mfilter, err, out)
	}
	var got [2][]string
	for k, sub := range []string{"fdm", "mfilter"} {
		names, err := readNames(filepath.Join(dir, sub, "new"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		for _, name := range names {
			b, err := os.ReadFile(filepath.Join(dir, sub, "new", name))
			if err != nil {
				return "", err
			}
			got[k] = append(got[k], messageHash(b))
		}
		sort.Strings(got[k])
	}
	switch {
	case len(got[0]) != len(got[1]):
		return fmt.Sprintf("fdm splits it into %d messages, mfilter into %d", len(got[0])-2, len(got[1])-2), nil
	case !slices.Equal(got[0], got[1]):
		return "fdm and mfilter write different bytes", nil
	}
	return "", nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, mode)
}

// mboxHashes returns the sorted hashes of the messages in the mbox at
// path, without their From_ lines, or nil when there is no such file.
func mboxHashes(path string, norm func([]byte) []byte) ([]string, error) {
	hashes := []string{}
	found, err := eachMboxMessage(path, func(m []byte) {
		if i := bytes.IndexByte(m, '\n'); i >= 0 {
			m = m[i+1:]
		}
		hashes = append(hashes, messageHash(norm(m)))
	})
	if err != nil || !found {
		return nil, err
	}
	sort.Strings(hashes)
	return hashes, nil
}

// eachMboxMessage calls fn with each message of the mbox at path, as
// mfilter splits it; found is false when there is no such file.
func eachMboxMessage(path string, fn func(m []byte)) (found bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	s := mailfmt.NewSplitter(bytes.NewReader(data), mailfmt.SplitOptions{})
	for {
		m, err := s.Next()
		if err == io.EOF {
			return true, nil
		}
		if err != nil {
			return true, fmt.Errorf("%s: %w", filepath.Base(path), err)
		}
		fn(m)
	}
}
