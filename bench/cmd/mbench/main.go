// Command mbench runs mfilter side by side with the tools it replaces on
// the same input, in one run, and prints wall times, ratios, peak memory
// and whether the results agree. bench/run.sh builds it and mfilter and
// calls it; see bench/README.md.
//
// A scenario is a function that builds its input, lists its tools (each
// a command run into a fresh directory) and checks that their results
// agree; add one to scenarios.
//
//	mbench file [options]    formail -s procmail vs mfilter, one maildir
//	mbench rules [options]   formail -s procmail vs fdm vs mfilter, 15 rules
//	mbench mda [options]     procmail -m vs mfilter deliver, a process per message
//	mbench imap [options]    fetchmail + procmail vs fdm vs mfilter fetch-and-file, from Dovecot
package main

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/mfilter/mfilter/bench"
)

type scenario struct {
	name    string
	summary string
	run     func(args []string) error
}

var scenarios = []scenario{
	{"file", "split a 2,000-message mbox into one maildir: formail -s procmail vs mfilter", runFile},
	{"fetch", "fetch a spool over loopback SSH: ssh mv + scp -C (+ formail -s procmail) vs mfilter", runFetch},
	{"rules", "file a 2,000-message mbox with 15 rules: formail -s procmail vs fdm vs mfilter", runRules},
	{"refile", "refile a 2,000-message maildir with 15 rules: mfilter refile vs mfilter < mbox vs fdm (maildir account)", runRefile},
	{"imap", "file the SpamAssassin corpus from a private Dovecot with 15 rules: fetchmail + procmail vs fdm (imap account) vs mfilter fetch-and-file", runIMAP},
	{"mda", "deliver 300 messages with 15 rules, a process per message: procmail -m vs mfilter deliver", runMDA},
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "help" || os.Args[1] == "--help" {
		usage(os.Stdout)
		return
	}
	for _, s := range scenarios {
		if s.name == os.Args[1] {
			if err := s.run(os.Args[2:]); err != nil {
				fmt.Fprintf(os.Stderr, "mbench %s: %v\n", s.name, err)
				os.Exit(1)
			}
			return
		}
	}
	fmt.Fprintf(os.Stderr, "mbench: unknown scenario %q\n", os.Args[1])
	usage(os.Stderr)
	os.Exit(2)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: mbench SCENARIO [options]   (mbench SCENARIO -h lists the options)")
	for _, s := range scenarios {
		fmt.Fprintf(w, "  %-8s %s\n", s.name, s.summary)
	}
}

// common are the options every scenario takes.
type common struct {
	mfilter  string
	formail  string
	procmail string
	corpus   string
	work     string
	runsDir  string // the folders of this run, under work
	n        int
	runs     int
	all      bool
	keep     bool
	verbose  bool
	target   float64
	// build makes the mbox from the corpus messages kept, perhaps
	// leaving out more of them (and saying why); nil is bench.Build.
	build func(kept []bench.Message, n int) ([]byte, []bench.Message, []bench.Rejected, error)
	// rebuild makes an mbox of other size from the same messages
	// (bench.Build unless set).
	rebuild func(kept []bench.Message, n int) []byte
	kept    []bench.Message // what the mbox was built from
	memN    int             // messages of the memory check's larger mbox
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.mfilter, "mfilter", "mfilter", "the mfilter binary to measure")
	fs.StringVar(&c.formail, "formail", "formail", "the formail binary")
	fs.StringVar(&c.procmail, "procmail", "procmail", "the procmail binary")
	fs.StringVar(&c.corpus, "corpus", "testdata/corpus/messages", "directory of messages to build the mbox from")
	fs.StringVar(&c.work, "work", "", "directory for the mbox and the folders (default: a new temporary directory, removed afterwards)")
	fs.IntVar(&c.n, "n", bench.DefaultMessages, "messages in the mbox")
	fs.IntVar(&c.runs, "runs", 3, "runs of each tool; the table shows the best and the median")
	fs.BoolVar(&c.all, "all", false, "use every corpus message, also those formail splits differently")
	fs.BoolVar(&c.keep, "keep", false, "keep the folders every run filed into")
	fs.BoolVar(&c.verbose, "v", false, "list the corpus messages left out and each run's time")
	fs.Float64Var(&c.target, "target", 30, "speed-up that mfilter should reach")
	fs.IntVar(&c.memN, "mem-n", 10*bench.DefaultMessages, "messages of the larger mbox that mfilter files once more to show that its peak memory does not grow with the mbox (0: skip)")
}

// setup resolves the binaries and makes the work directory and the mbox.
func (c *common) setup() (mboxPath string, cleanup func(), err error) {
	for _, p := range []*string{&c.mfilter, &c.formail, &c.procmail} {
		path, err := exec.LookPath(*p)
		if err != nil {
			return "", nil, err
		}
		if path, err = filepath.Abs(path); err != nil {
			return "", nil, err
		}
		*p = path
	}
	temp := c.work == ""
	if temp {
		if c.work, err = os.MkdirTemp("", "mbench-"); err != nil {
			return "", nil, err
		}
	} else if err := os.MkdirAll(c.work, 0o700); err != nil {
		return "", nil, err
	}
	if c.work, err = filepath.Abs(c.work); err != nil {
		return "", nil, err
	}
	if c.runsDir, err = os.MkdirTemp(c.work, "runs-"); err != nil {
		return "", nil, err
	}
	cleanup = func() {
		switch {
		case c.keep:
			fmt.Printf("kept: %s\n", c.runsDir)
		case temp:
			os.RemoveAll(c.work)
		default:
			os.RemoveAll(c.runsDir)
		}
	}
	mbox, kept, rejected, err := bench.Mbox(c.corpus, c.formail, c.n, c.all)
	if err != nil {
		cleanup()
		return "", nil, err
	}
	if c.build != nil {
		var more []bench.Rejected
		mbox, kept, more, err = c.build(kept, c.n)
		if err != nil {
			cleanup()
			return "", nil, err
		}
		rejected = append(rejected, more...)
	}
	mboxPath = filepath.Join(c.work, "bench.mbox")
	if err := os.WriteFile(mboxPath, mbox, 0o644); err != nil {
		cleanup()
		return "", nil, err
	}
	c.kept = kept
	total := len(kept) + len(rejected)
	fmt.Printf("mbox: %d messages, %.1f MB, cycling through %d of %d corpus messages",
		c.n, float64(len(mbox))/1e6, len(kept), total)
	if len(rejected) > 0 {
		fmt.Printf(" (%d left out: formail (or another tool compared) handles them differently", len(rejected))
		if !c.verbose {
			fmt.Print("; -v lists them")
		}
		fmt.Print(")")
	}
	fmt.Println()
	if c.verbose {
		for _, r := range rejected {
			fmt.Printf("  left out %s: %s\n", r.Name, r.Reason)
		}
	}
	return mboxPath, cleanup, nil
}

// tool is one contender: how to run it into a fresh directory, and the
// maildir it leaves its result in.
type tool struct {
	label   string
	command func(dir string) *exec.Cmd // stdin is set by the caller
	prepare func(dir string) error     // optional, before the clock starts
	maildir func(dir string) string
}

// result is one run of one tool.
type result struct {
	wall, user, sys time.Duration
	maxRSS          int64   // bytes: the largest process of the run
	steal           float64 // share of the machine's CPU time the hypervisor took during the run; -1: unknown
}

// cpuTimes reads the machine's CPU time from /proc/stat: all of it and
// the steal (time a hypervisor gave the virtual CPUs to others), in
// clock ticks.
func cpuTimes() (total, steal uint64, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, false
	}
	for i, v := range f[1:] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, 0, false
		}
		total += n
		if i == 7 {
			steal = n
		}
	}
	return total, steal, true
}

// stealDuring runs fn and returns the share of CPU time stolen meanwhile.
func stealDuring(fn func()) float64 {
	t0, s0, ok0 := cpuTimes()
	fn()
	t1, s1, ok1 := cpuTimes()
	if !ok0 || !ok1 || t1 <= t0 {
		return -1
	}
	return float64(s1-s0) / float64(t1-t0)
}

// gnuTime is GNU time(1), used for each tool's peak RSS and CPU times:
// the rusage that wait4 returns to this process is no good for that,
// because Go starts children with vfork semantics, so a child's maximum
// RSS starts at this process's own.
var gnuTime = func() string {
	for _, p := range []string{"/usr/bin/time", "/bin/time"} {
		if out, err := exec.Command(p, "--version").CombinedOutput(); err == nil && bytes.Contains(out, []byte("GNU")) {
			return p
		}
	}
	return ""
}()

// measure runs cmd with stdin read from the file at input. The wall time
// is taken here; CPU times and peak RSS come from GNU time when it is
// installed.
func measure(cmd *exec.Cmd, input, scratch string) (result, error) {
	in, err := os.Open(input)
	if err != nil {
		return result{}, err
	}
	defer in.Close()
	args := cmd.Args
	if gnuTime != "" {
		cmd = exec.Command(gnuTime, append([]string{"-f", "%M %U %S", "-o", scratch, "--"}, args...)...)
	}
	var out bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = in, &out, &out
	var wall time.Duration
	steal := stealDuring(func() {
		start := time.Now()
		err = cmd.Run()
		wall = time.Since(start)
	})
	if err != nil {
		return result{}, fmt.Errorf("%s: %v\n%s", strings.Join(args, " "), err, out.Bytes())
	}
	if out.Len() > 0 {
		fmt.Fprintf(os.Stderr, "%s says:\n%s", filepath.Base(args[0]), out.Bytes())
	}
	r := result{wall: wall, maxRSS: -1, steal: steal}
	if gnuTime == "" {
		return r, nil
	}
	b, err := os.ReadFile(scratch)
	if err != nil {
		return result{}, err
	}
	var kb int64
	var user, sys float64
	if _, err := fmt.Sscanf(string(b), "%d %f %f", &kb, &user, &sys); err != nil {
		return result{}, fmt.Errorf("%s: cannot read %q: %v", gnuTime, b, err)
	}
	r.maxRSS = kb * 1024
	r.user = time.Duration(user * float64(time.Second))
	r.sys = time.Duration(sys * float64(time.Second))
	return r, nil
}

// maildirContents hashes every file of a maildir's new/ and fails if tmp/
// or cur/ hold anything.
func maildirContents(dir string) (hashes []string, contents map[string][]byte, err error) {
	for _, sub := range []string{"tmp", "cur"} {
		names, err := readNames(filepath.Join(dir, sub))
		if err != nil {
			return nil, nil, err
		}
		if len(names) > 0 {
			return nil, nil, fmt.Errorf("%s/%s holds %d files", dir, sub, len(names))
		}
	}
	names, err := readNames(filepath.Join(dir, "new"))
	if err != nil {
		return nil, nil, err
	}
	contents = make(map[string][]byte, len(names))
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(dir, "new", name))
		if err != nil {
			return nil, nil, err
		}
		h := fmt.Sprintf("%x", sha256.Sum256(b))
		hashes = append(hashes, h)
		contents[h] = b
	}
	sort.Strings(hashes)
	return hashes, contents, nil
}

func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// diffMultisets describes how two sorted hash lists differ.
func diffMultisets(a, b []string) (onlyA, onlyB []string) {
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || i < len(a) && a[i] < b[j]:
			onlyA = append(onlyA, a[i])
			i++
		case i == len(a) || b[j] < a[i]:
			onlyB = append(onlyB, b[j])
			j++
		default:
			i++
			j++
		}
	}
	return onlyA, onlyB
}

// stats sums up the runs of one row of the table.
type stats struct {
	label        string
	best, median time.Duration
	user, sys    time.Duration // of the median run
	maxRSS       int64
	files        int
	hasUsage     bool    // user, sys and maxRSS are known
	steal        float64 // median steal of the runs (-1: unknown)
}

func summarize(label string, rs []result, files int, usage bool) stats {
	sorted := slices.Clone(rs)
	slices.SortFunc(sorted, func(a, b result) int { return cmp.Compare(a.wall, b.wall) })
	med := sorted[len(sorted)/2]
	if len(sorted)%2 == 0 {
		med = sorted[len(sorted)/2-1] // the lower middle: a run that happened
	}
	s := stats{label: label, best: sorted[0].wall, median: med.wall, user: med.user, sys: med.sys, files: files, hasUsage: usage && gnuTime != "", steal: -1}
	var steals []float64
	for _, r := range rs {
		s.maxRSS = max(s.maxRSS, r.maxRSS)
		if r.steal >= 0 {
			steals = append(steals, r.steal)
		}
	}
	if len(steals) == len(rs) && len(steals) > 0 {
		slices.Sort(steals)
		s.steal = steals[(len(steals)-1)/2]
	}
	return s
}

// printSteal says how much CPU time the hypervisor took during each
// tool's runs: on a shared virtual machine it explains much of the
// spread from run to run, and it weighs most on the shortest runs.
func printSteal(rows []stats) {
	var parts []string
	for _, r := range rows {
		if r.steal >= 0 {
			parts = append(parts, fmt.Sprintf("%s %.1f%%", strings.Fields(r.label)[0], 100*r.steal))
		}
	}
	if len(parts) > 0 {
		fmt.Printf("CPU time stolen by the hypervisor during the runs (median): %s\n", strings.Join(parts, ", "))
	}
}

func printTable(rows []stats) {
	tw := tabwriter.NewWriter(os.Stdout, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "tool\tbest\tmedian\tuser\tsys\tmax RSS\tfiles\t")
	for _, r := range rows {
		user, sys, rss := "-", "-", "-"
		if r.hasUsage {
			user, sys = secs(r.user), secs(r.sys)
			rss = fmt.Sprintf("%.1f MB", float64(r.maxRSS)/1e6)
		}
		files := "-"
		if r.files >= 0 {
			files = fmt.Sprint(r.files)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.label, secs(r.best), secs(r.median), user, sys, rss, files)
	}
	tw.Flush()
}

func secs(d time.Duration) string { return fmt.Sprintf("%.3fs", d.Seconds()) }

// runFile is the file scenario: the whole mbox into one maildir.
func runFile(args []string) error {
	fs := flag.NewFlagSet("mbench file", flag.ContinueOnError)
	var c common
	c.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.runs < 1 || c.n < 1 {
		return errors.New("-runs and -n must be at least 1")
	}
	mbox, cleanup, err := c.setup()
	if err != nil {
		return err
	}
	defer cleanup()

	tools := []tool{
		{
			label: "formail -s procmail -m rc",
			command: func(dir string) *exec.Cmd {
				return exec.Command(c.formail, "-s", c.procmail, "-m", dir+".rc")
			},
			prepare: func(dir string) error {
				rc := fmt.Sprintf("MAILDIR=%s\nDEFAULT=%s/inbox/\n", dir, dir)
				return os.WriteFile(dir+".rc", []byte(rc), 0o644)
			},
			maildir: func(dir string) string { return filepath.Join(dir, "inbox") },
		},
		{
			label: "mfilter --default inbox/",
			command: func(dir string) *exec.Cmd {
				return exec.Command(c.mfilter, "--maildir", dir, "--default", "inbox/")
			},
			maildir: func(dir string) string { return filepath.Join(dir, "inbox") },
		},
	}
	fmt.Printf("folders: %s on %s\n", c.runsDir, describeFS(c.runsDir))
	fmt.Printf("runs: %d of each tool, interleaved, each into a new directory after sync(2); nothing is deleted until the end\n", c.runs)
	fmt.Println("fsync: procmail fsyncs each file before linking it into new/; mfilter fsyncs every file and new/ (batched) before it exits")

	results := make([][]result, len(tools))
	files := make([]int, len(tools))
	var ref []string         // the hashes of the first run of the first tool
	var refContents [][]byte // its files, for the floor rows
	failed := false
	for run := 0; run < c.runs; run++ {
		order := []int{0, 1}
		if run%2 == 1 {
			order = []int{1, 0}
		}
		for _, k := range order {
			t := tools[k]
			dir := filepath.Join(c.runsDir, fmt.Sprintf("run%d-%s", run+1, strings.Fields(t.label)[0]))
			if err := os.Mkdir(dir, 0o700); err != nil {
				return err
			}
			if t.prepare != nil {
				if err := t.prepare(dir); err != nil {
					return err
				}
			}
			syscall.Sync()
			r, err := measure(t.command(dir), mbox, dir+".time")
			if err != nil {
				return err
			}
			if c.verbose {
				fmt.Printf("  run %d %-28s %s\n", run+1, t.label, secs(r.wall))
			}
			results[k] = append(results[k], r)
			hashes, contents, err := maildirContents(t.maildir(dir))
			if err != nil {
				return err
			}
			if run > 0 && len(hashes) != files[k] {
				fmt.Printf("FAIL: %s filed %d files in run %d, %d in run 1\n", t.label, len(hashes), run+1, files[k])
				failed = true
			}
			files[k] = len(hashes)
			if ref == nil {
				ref = hashes
				for _, h := range hashes {
					refContents = append(refContents, contents[h])
				}
			} else if onlyRef, onlyThis := diffMultisets(ref, hashes); len(onlyRef)+len(onlyThis) > 0 {
				failed = true
				fmt.Printf("FAIL: run %d of %s: %d files differ from %s's (%d only there, %d only here); kept in %s\n",
					run+1, t.label, max(len(onlyRef), len(onlyThis)), tools[0].label, len(onlyRef), len(onlyThis), dir)
				c.keep = true
			}
		}
	}

	rows := make([]stats, 0, len(tools)+2)
	for k, t := range tools {
		rows = append(rows, summarize(t.label, results[k], files[k], true))
	}
	floorFiles := make([]floorFile, len(refContents))
	for i, b := range refContents {
		floorFiles[i] = floorFile{data: b}
	}
	floors, err := floorRows(c.runsDir, floorFiles, nil, c.runs)
	if err != nil {
		return err
	}
	rows = append(rows, floors...)
	fmt.Println()
	printTable(rows)
	printSteal(rows)
	fmt.Println()

	for k, t := range tools {
		if files[k] != c.n {
			fmt.Printf("FAIL: %s filed %d files, the mbox holds %d messages\n", t.label, files[k], c.n)
			failed = true
		}
	}
	if files[0] != files[1] {
		fmt.Printf("FAIL: file counts differ: %d and %d\n", files[0], files[1])
		failed = true
	}
	med := float64(rows[0].median) / float64(rows[1].median)
	best := float64(rows[0].best) / float64(rows[1].best)
	verdict := "met"
	if med < c.target {
		verdict = "MISSED"
	}
	fmt.Printf("ratio formail+procmail / mfilter: %.1fx median, %.1fx best (target %gx: %s)\n", med, best, c.target, verdict)
	if err := c.memoryCheck(rows[1].maxRSS, nil, func(dir string) *exec.Cmd {
		return exec.Command(c.mfilter, "--maildir", dir, "--default", "inbox/")
	}); err != nil {
		fmt.Printf("FAIL: %v\n", err)
		failed = true
	}
	if !failed {
		fmt.Printf("check: both maildirs hold the same %d file contents (sha256 multiset) in every run\n", len(ref))
	}
	if failed {
		return errors.New("the tools disagree (see FAIL above)")
	}
	return nil
}

// memoryCheck files an mbox of c.memN messages, built like the one of the
// timed runs, with the mfilter command cmd (into a new directory) and
// compares its peak RSS with rss, the largest of the timed runs: mfilter
// holds at most a batch of messages, so it should not grow.
func (c *common) memoryCheck(rss int64, prepare func(dir string) error, cmd func(dir string) *exec.Cmd) error {
	if c.memN <= 0 || gnuTime == "" || rss <= 0 {
		return nil
	}
	rebuild := c.rebuild
	if rebuild == nil {
		rebuild = bench.Build
	}
	path := filepath.Join(c.work, "memory.mbox")
	if err := os.WriteFile(path, rebuild(c.kept, c.memN), 0o644); err != nil {
		return err
	}
	defer os.Remove(path)
	dir := filepath.Join(c.runsDir, "memory")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if prepare != nil {
		if err := prepare(dir); err != nil {
			return err
		}
	}
	r, err := measure(cmd(dir), path, dir+".time")
	if err != nil {
		return err
	}
	ratio := float64(r.maxRSS) / float64(rss)
	fmt.Printf("peak RSS of mfilter: %.1f MB for %d messages, %.1f MB for %d (%.2fx; %s)\n",
		float64(rss)/1e6, c.n, float64(r.maxRSS)/1e6, c.memN, ratio, secs(r.wall))
	// Some slack: the Go heap's pacing and larger messages met by chance.
	if c.memN > c.n && ratio > 1.3 {
		return fmt.Errorf("mfilter's peak memory grows with the mbox: %.1f MB for %d messages, %.1f MB for %d",
			float64(rss)/1e6, c.n, float64(r.maxRSS)/1e6, c.memN)
	}
	return nil
}
