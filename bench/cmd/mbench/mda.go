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
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/mfilter/mfilter/bench"
)

// runMDA is the mda scenario: mfilter as an MDA, one process per
// message as Postfix or fetchmail start it, against procmail -m with the
// same 15 rules (those of the rules scenario) into the same kind of
// folders. Each tool files every message into folders of its own, first
// in a warm-up pass (which creates every folder, so that no timed
// delivery is a folder's first), then in the timed passes, the two tools
// in turn message by message so that the machine's drift weighs on both
// alike. Both must leave the same messages in the same folders.
func runMDA(args []string) error {
	fs := flag.NewFlagSet("mbench mda", flag.ContinueOnError)
	var c common
	c.register(fs)
	fs.Lookup("n").Usage = "messages, each delivered by a process of its own"
	fs.Lookup("n").DefValue = "300"
	c.n = 300
	fs.Lookup("runs").Usage = "timed passes over the messages (after one warm-up pass)"
	fs.Lookup("target").Usage = "largest mfilter / procmail ratio of the median times per message that meets the target"
	fs.Lookup("target").DefValue = "1.3"
	c.target = 1.3
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.runs < 1 || c.n < 1 {
		return errors.New("-runs and -n must be at least 1")
	}
	c.rebuild = bench.BuildRules
	c.build = func(kept []bench.Message, n int) ([]byte, []bench.Message, []bench.Rejected, error) {
		return bench.BuildRules(kept, n), kept, nil, nil
	}
	if _, cleanup, err := c.setup(); err != nil {
		return err
	} else {
		defer cleanup()
	}

	// The messages as an MTA hands them to an MDA: the tagged mbox entries
	// of the rules scenario, From_ line included (Postfix's local(8)
	// writes one), without the blank line that separates mbox entries.
	msgDir := filepath.Join(c.runsDir, "messages")
	if err := os.Mkdir(msgDir, 0o700); err != nil {
		return err
	}
	msgs := make([]string, c.n)
	for i := range msgs {
		entry := bench.Tag(c.kept[i%len(c.kept)].Entry, i)
		msgs[i] = filepath.Join(msgDir, fmt.Sprintf("%05d.eml", i))
		if err := os.WriteFile(msgs[i], entry[:len(entry)-1], 0o644); err != nil {
			return err
		}
	}

	pdir := filepath.Join(c.runsDir, "procmail")
	mdir := filepath.Join(c.runsDir, "mfilter")
	vdir := filepath.Join(c.runsDir, "version")
	for _, d := range []string{pdir, mdir, vdir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return err
		}
	}
	if err := os.WriteFile(pdir+".rc", []byte(bench.Procmailrc(pdir)), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(mdir+".rules.yaml", []byte(bench.RulesYAML(mdir)), 0o600); err != nil {
		return err
	}
	tools := []mdaTool{
		{label: "procmail -m rc", args: []string{c.procmail, "-m", pdir + ".rc"}},
		{label: "mfilter deliver --rules rules.yaml", args: []string{c.mfilter, "deliver", "--rules", mdir + ".rules.yaml"}},
		// What starting and ending the mfilter process costs, with
		// nothing read or filed (the message is on its stdin, unread).
		{label: "mfilter version (start, exit)", args: []string{c.mfilter, "version"}, startOnly: true},
	}
	fmt.Printf("mda: %d messages (the rules scenario's, tagged alike), each delivered by a process of its own, its standard input the message's file\n", c.n)
	fmt.Printf("folders: %s on %s\n", c.runsDir, describeFS(c.runsDir))
	passes := fmt.Sprintf("%d timed passes", c.runs)
	if c.runs == 1 {
		passes = "1 timed pass"
	}
	fmt.Printf("runs: a warm-up pass, then %s; in each, message by message, every tool in turn (order rotated)\n", passes)
	fmt.Println("fsync: procmail fsyncs each maildir file before linking it, and each mbox before unlocking it; mfilter fsyncs the file, links it and fsyncs new/ (mbox: the mbox before unlocking)")

	for i, m := range msgs { // warm-up
		for _, t := range tools {
			if _, err := t.run(m); err != nil {
				return fmt.Errorf("warm-up, message %d: %w", i, err)
			}
		}
	}
	syscall.Sync()

	times := make([][]mdaRun, len(tools))
	var steal float64
	steal = stealDuring(func() {
		for run := 0; run < c.runs; run++ {
			for i, m := range msgs {
				for j := range tools {
					k := (j + i + run) % len(tools)
					r, err := tools[k].run(m)
					if err != nil {
						steal = -1
						fmt.Fprintf(os.Stderr, "pass %d, message %d: %v\n", run+1, i, err)
						return
					}
					times[k] = append(times[k], r)
				}
			}
		}
	})
	if len(times[len(tools)-1]) != c.runs*c.n {
		return errors.New("a delivery failed")
	}

	ref, err := readRuleFolders(pdir)
	if err != nil {
		return err
	}
	got, err := readRuleFolders(mdir)
	if err != nil {
		return err
	}
	failed := false
	if diff := ref.diff(got); diff != "" {
		failed = true
		c.keep = true
		fmt.Printf("FAIL: mfilter's folders differ from procmail's:\n%s", diff)
	}
	want := (c.runs + 1) * c.n
	for name, r := range map[string]*ruleFolders{"procmail": ref, "mfilter": got} {
		if r.total() != want {
			failed = true
			fmt.Printf("FAIL: %s filed %d messages, %d were delivered\n", name, r.total(), want)
		}
	}
	for _, f := range append(bench.RulesMaildirs(), bench.RulesMboxes...) {
		if len(ref.folders[f]) == 0 {
			failed = true
			fmt.Printf("FAIL: no message went to %s: a rule never fired\n", f)
		}
	}

	fmt.Println()
	printFolderCounts([]tool{{label: tools[0].label}, {label: tools[1].label}}, []*ruleFolders{ref, got})
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "per message\tbest\tmedian\tmean\t90th pct\tCPU mean\truns\t")
	med := make([]time.Duration, len(tools))
	mean := make([]time.Duration, len(tools))
	for k, t := range tools {
		walls := make([]time.Duration, len(times[k]))
		var sum, cpu time.Duration
		for i, r := range times[k] {
			walls[i] = r.wall
			sum += r.wall
			cpu += r.cpu
		}
		slices.Sort(walls)
		n := time.Duration(len(walls))
		med[k], mean[k] = walls[(len(walls)-1)/2], sum/n
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t\n", t.label, ms(walls[0]), ms(med[k]), ms(mean[k]), ms(walls[len(walls)*9/10]), ms(cpu/n), len(walls))
	}
	tw.Flush()
	if steal >= 0 {
		fmt.Printf("CPU time stolen by the hypervisor during the timed passes: %.1f%%\n", 100*steal)
	}
	fmt.Println()
	// The pairs: the two tools on the same message in the same pass, one
	// right after the other.
	pairs := make([]float64, len(times[0]))
	for i := range pairs {
		pairs[i] = float64(times[1][i].wall) / float64(times[0][i].wall)
	}
	slices.Sort(pairs)
	ratio := float64(med[1]) / float64(med[0])
	verdict := "met"
	if ratio > c.target {
		verdict = "MISSED"
	}
	fmt.Printf("ratio mfilter / procmail per message: %.2fx of the medians (target at most %gx: %s), %.2fx of the means, %.2fx median of the %d pairs\n",
		ratio, c.target, verdict, float64(mean[1])/float64(mean[0]), pairs[(len(pairs)-1)/2], len(pairs))
	fmt.Printf("mfilter's start and exit alone (version): %.0f%% of its median delivery\n", 100*float64(med[2])/float64(med[1]))
	if failed {
		return errors.New("the tools disagree (see FAIL above)")
	}
	fmt.Printf("check: both leave the same %d messages in the same %d folders (sha256 multisets; mbox messages without their From_ line)\n",
		ref.total(), len(ref.folders))
	return nil
}

// mdaTool is one command of the mda scenario, started once per message.
type mdaTool struct {
	label     string
	args      []string
	startOnly bool // does not deliver: its output is not an error
}

type mdaRun struct{ wall, cpu time.Duration }

// run starts the tool with the message file at msg as its standard input
// and waits for it.
func (t mdaTool) run(msg string) (mdaRun, error) {
	in, err := os.Open(msg)
	if err != nil {
		return mdaRun{}, err
	}
	defer in.Close()
	cmd := exec.Command(t.args[0], t.args[1:]...)
	var out bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = in, &out, &out
	start := time.Now()
	err = cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return mdaRun{}, fmt.Errorf("%s: %v\n%s", strings.Join(t.args, " "), err, out.Bytes())
	}
	if out.Len() > 0 && !t.startOnly {
		return mdaRun{}, fmt.Errorf("%s says:\n%s", strings.Join(t.args, " "), out.Bytes())
	}
	return mdaRun{wall: wall, cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}, nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/1e6) }
