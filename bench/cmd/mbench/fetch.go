package main

import (
	"bytes"
	"cmp"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
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

// The fetch scenario: a spool on a mail server, fetched over SSH. The
// server is a throwaway sshd on 127.0.0.1 (see fetchsshd.go); the spools
// are built from the test corpus. Two stages:
//
//   - transfer, on a 100 MB spool: mfilter's claim, compressed stream and
//     decompression (fetchTransferMain, the remote package that
//     fetch-and-file uses, without filing) against
//     ssh mv + scp -C + ssh rm;
//   - end to end, on a 20 MB spool: mfilter fetch-and-file into one
//     maildir against ssh mv + scp -C + ssh rm + formail -s procmail.
//
// Each side first runs once through a counting TCP proxy in front of sshd,
// which counts the bytes of every connection (the table's bytes), then
// -runs times straight to sshd, timed (the table's times): a proxy is a
// TCP endpoint of its own, whose delayed ACKs and buffering would be
// timed too. The runs are interleaved, each on a fresh copy of the spool
// and into fresh directories, after sync(2). -proxy-all times the runs
// through the proxy as well.

type fetchOptions struct {
	mfilter, formail, procmail string
	sshd, ssh, scp             string
	corpus, work               string
	runs                       int
	transferMB, e2eMB          float64
	transferFile               string
	spoolCorpus                string // distinct messages, never cycled (fetchcorpus.go)
	transferTarget, e2eTarget  float64
	only                       string
	keep, verbose, all, trace  bool
	loginRC, proxyAll          bool
	compress                   string
	runsDir                    string
	transferSpool, e2eSpool    []byte
	transferCRC                uint32
	e2eMessages                int
	srv                        *fetchServer
	serverDir, clientDir       string
	selfExe                    string
	transferRows, e2eRows      []fetchRow
	slow                       slowLink // fetchslow.go
}

// fetchSide is one contender of a stage.
type fetchSide struct {
	label string
	// command runs the side on spool (the server's path) into dir,
	// reaching sshd at port.
	command func(spool, dir string, port int) *exec.Cmd
	// check verifies what the run left; out is what it printed.
	check func(spool, dir string, out []byte) error
}

// fetchRun is one timed run of one side.
type fetchRun struct {
	result
	wire    wireCount
	counted bool // through the proxy: wire holds its bytes
}

// fetchRow sums up the runs of one side.
type fetchRow struct {
	stage, label string
	spool        int64
	runs         []fetchRun // timed
	wire         wireCount  // of the counted run
	best, median fetchRun
}

func runFetch(args []string) error {
	fs := flag.NewFlagSet("mbench fetch", flag.ContinueOnError)
	var o fetchOptions
	fs.StringVar(&o.mfilter, "mfilter", "mfilter", "the mfilter binary to measure")
	fs.StringVar(&o.formail, "formail", "formail", "the formail binary")
	fs.StringVar(&o.procmail, "procmail", "procmail", "the procmail binary")
	fs.StringVar(&o.sshd, "sshd", "/usr/sbin/sshd", "the OpenSSH server to fetch from")
	fs.StringVar(&o.ssh, "ssh", "ssh", "the OpenSSH client of the hand pipeline")
	fs.StringVar(&o.scp, "scp", "scp", "the scp of the hand pipeline")
	fs.StringVar(&o.corpus, "corpus", "testdata/corpus/messages", "directory of messages to build the spools from (cycled through: see -spool-corpus)")
	fs.StringVar(&o.spoolCorpus, "spool-corpus", "", "directory of distinct messages to build the spools from, each used once (bench/run.sh fetch passes the SpamAssassin public corpus)")
	fs.StringVar(&o.work, "work", "", "directory for the spools and the folders (default: a new temporary directory, removed afterwards)")
	fs.IntVar(&o.runs, "runs", 3, "runs of each side; the table shows the best and the median")
	fs.Float64Var(&o.transferMB, "transfer-mb", 100, "size of the transfer stage's spool, in MB (10^6 bytes)")
	fs.StringVar(&o.transferFile, "transfer-spool", "", "a file to use as the transfer stage's spool instead of one built from the corpus (a real spool, say)")
	fs.Float64Var(&o.e2eMB, "e2e-mb", 20, "size of the end-to-end stage's spool, in MB")
	fs.Float64Var(&o.transferTarget, "transfer-target", 3, "speed-up over ssh mv + scp -C + ssh rm that mfilter's transfer should reach")
	fs.Float64Var(&o.e2eTarget, "e2e-target", 30, "speed-up over the hand pipeline that mfilter fetch-and-file should reach")
	fs.StringVar(&o.only, "only", "", "run one stage only: transfer, slow or e2e")
	fs.StringVar(&o.compress, "compress", "auto", "mfilter's --compress (auto, zstd, gzip, none)")
	fs.BoolVar(&o.trace, "trace", false, "have mfilter's transfer print how long each of its steps took")
	fs.BoolVar(&o.loginRC, "login-rc", false, "let the sessions' login shell read the user's ~/.bashrc (by default sshd sets SHLVL=1 so that bash skips it)")
	fs.BoolVar(&o.proxyAll, "proxy-all", false, "time the runs through the counting proxy too (by default they go straight to sshd, after one counted run)")
	fs.BoolVar(&o.keep, "keep", false, "keep the folders every run filed into")
	fs.BoolVar(&o.verbose, "v", false, "print each run")
	fs.BoolVar(&o.all, "all", false, "use every corpus message, also those formail splits differently (the end-to-end check then fails)")
	o.slow.flags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.runs < 1 || o.transferMB <= 0 || o.e2eMB <= 0 {
		return errors.New("-runs, -transfer-mb and -e2e-mb must be positive")
	}
	switch o.only {
	case "", "transfer", "e2e", "slow":
	default:
		return fmt.Errorf("-only %s: transfer, slow or e2e", o.only)
	}
	for _, p := range []*string{&o.mfilter, &o.formail, &o.procmail, &o.sshd, &o.ssh, &o.scp} {
		path, err := exec.LookPath(*p)
		if err != nil {
			return err
		}
		if *p, err = filepath.Abs(path); err != nil {
			return err
		}
	}
	var err error
	if o.selfExe, err = os.Executable(); err != nil {
		return err
	}
	cleanup, err := o.setup()
	if err != nil {
		return err
	}
	defer cleanup()
	srv, err := startFetchServer(o.sshd, filepath.Join(o.runsDir, "sshd"), o.loginRC)
	if err != nil {
		return err
	}
	defer srv.stop()
	o.srv = srv
	fmt.Printf("server: %s at %s (a counting TCP proxy in front of it at %s); spools in %s\n", o.sshd, srv.sshdAddr, srv.addr, o.serverDir)
	fmt.Printf("folders: %s on %s\n", o.runsDir, describeFS(o.runsDir))
	if o.proxyAll {
		fmt.Printf("runs: %d of each side through the proxy, interleaved, each on a fresh copy of the spool and into new directories, after sync(2)\n", o.runs)
		fmt.Println("bytes over SSH: counted by the proxy on every TCP connection of a run, both ways (SSH version lines, key exchange, encrypted packets, as TCP payload); the median run's")
	} else {
		fmt.Printf("runs: 1 counted run of each side through the proxy, then %d timed of each straight to sshd, interleaved, each on a fresh copy of the spool and into new directories, after sync(2)\n", o.runs)
		fmt.Println("bytes over SSH: counted by the proxy on every TCP connection of the counted run, both ways (SSH version lines, key exchange, encrypted packets, as TCP payload)")
	}

	if err := o.loginCost(); err != nil {
		return err
	}
	if o.only == "" || o.only == "transfer" || o.only == "slow" {
		if err := o.transferStage(); err != nil {
			return err
		}
	}
	if o.only == "" || o.only == "slow" {
		if err := o.slowStage(); err != nil {
			return err
		}
	}
	if o.only == "" || o.only == "e2e" {
		if err := o.e2eStage(); err != nil {
			return err
		}
	}
	return o.report()
}

// loginCost prints what one OpenSSH login running true costs here (best of
// 5), the part of every session that neither side can avoid, and the
// load of the machine (others' work on its CPUs shows in every time).
func (o *fetchOptions) loginCost() error {
	best := time.Duration(1 << 62)
	for range 5 {
		cmd := exec.Command(o.ssh, append(o.srv.sshArgs(o.srv.sshdPort), "127.0.0.1", "true")...)
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("ssh 127.0.0.1 true: %v: %s", err, out)
		}
		best = min(best, time.Since(start))
	}
	rc := "without the user's ~/.bashrc (SHLVL=1; -login-rc to keep it)"
	if o.loginRC {
		rc = "with the user's ~/.bashrc"
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("one ssh login running true: %s, %s; load average %s\n", secs(best), rc, strings.Join(strings.Fields(string(load))[:3], " "))
	return nil
}

// setup makes the work directory and the spools.
func (o *fetchOptions) setup() (func(), error) {
	temp := o.work == ""
	var err error
	if temp {
		if o.work, err = os.MkdirTemp("", "mbench-"); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(o.work, 0o700); err != nil {
		return nil, err
	}
	if o.work, err = filepath.Abs(o.work); err != nil {
		return nil, err
	}
	if o.runsDir, err = os.MkdirTemp(o.work, "fetch-"); err != nil {
		return nil, err
	}
	// sshd runs the sessions as this user; the key and the spools must be
	// reachable.
	os.Chmod(o.runsDir, 0o755)
	cleanup := func() {
		switch {
		case o.keep:
			fmt.Printf("kept: %s\n", o.runsDir)
		case temp:
			os.RemoveAll(o.work)
		default:
			os.RemoveAll(o.runsDir)
		}
	}
	o.serverDir = filepath.Join(o.runsDir, "server")
	o.clientDir = filepath.Join(o.runsDir, "client")
	for _, d := range []string{o.serverDir, o.clientDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			cleanup()
			return nil, err
		}
	}
	corpus := o.corpus
	if o.spoolCorpus != "" {
		corpus = o.spoolCorpus
	}
	msgs, err := bench.LoadCorpus(corpus)
	if err != nil {
		cleanup()
		return nil, err
	}
	kept, rejected := msgs, []bench.Rejected(nil)
	if !o.all {
		if kept, rejected, err = bench.Select(msgs, o.formail); err != nil {
			cleanup()
			return nil, err
		}
	}
	var n int
	if o.transferFile != "" {
		if o.transferSpool, err = os.ReadFile(o.transferFile); err != nil {
			cleanup()
			return nil, err
		}
		if len(o.transferSpool) == 0 {
			cleanup()
			return nil, fmt.Errorf("%s is empty", o.transferFile)
		}
		fmt.Printf("transfer spool: %s, %.1f MB\n", o.transferFile, float64(len(o.transferSpool))/1e6)
	} else {
		o.transferSpool, n = o.buildSpool(kept, int64(o.transferMB*1e6))
		fmt.Printf("transfer spool: %d messages, %.1f MB\n", n, float64(len(o.transferSpool))/1e6)
	}
	o.transferCRC = crc32.Checksum(o.transferSpool, crcTable)
	o.e2eSpool, o.e2eMessages = o.buildSpool(kept, int64(o.e2eMB*1e6))
	fmt.Printf("end-to-end spool: %d messages, %.1f MB\n", o.e2eMessages, float64(len(o.e2eSpool))/1e6)
	spools := "both spools cycle"
	if o.transferFile != "" {
		spools = "it cycles"
	}
	if o.spoolCorpus != "" {
		spools = "both spools take, each once, from the first"
		if o.transferFile != "" {
			spools = "it takes, each once, from the first"
		}
	}
	fmt.Printf("%s through %d of %d corpus messages (%s), each with a From_ line", spools, len(kept), len(msgs), corpus)
	if len(rejected) > 0 {
		fmt.Printf(" (%d left out: formail splits them differently)", len(rejected))
	}
	fmt.Println()
	return cleanup, nil
}

// fetchBuildSpool cycles through msgs in order until the spool holds at
// least size bytes.
func fetchBuildSpool(msgs []bench.Message, size int64) ([]byte, int) {
	out := make([]byte, 0, size+64<<10)
	n := 0
	for int64(len(out)) < size {
		out = append(out, msgs[n%len(msgs)].Entry...)
		n++
	}
	return out, n
}

// runSides runs every side of a stage: once through the counting proxy,
// then o.runs times timed, interleaved (the order alternates from run to
// run).
func (o *fetchOptions) runSides(stage string, spool []byte, sides []fetchSide) ([]fetchRow, error) {
	rows := make([]fetchRow, len(sides))
	for k, s := range sides {
		rows[k] = fetchRow{stage: stage, label: s.label, spool: int64(len(spool))}
	}
	first := 0
	if o.proxyAll {
		first = 1
	}
	for run := first; run <= o.runs; run++ {
		counted := run == 0 || o.proxyAll
		port := o.srv.sshdPort
		if counted {
			port = o.srv.port
		}
		for i := range sides {
			k := i
			if run%2 == 1 {
				k = len(sides) - 1 - i
			}
			s := sides[k]
			name := fmt.Sprintf("%s-run%d-%d", stage, run, k)
			spoolPath := filepath.Join(o.serverDir, name)
			if err := os.WriteFile(spoolPath, spool, 0o600); err != nil {
				return nil, err
			}
			dir := filepath.Join(o.clientDir, name)
			if err := os.Mkdir(dir, 0o755); err != nil {
				return nil, err
			}
			cmd := s.command(spoolPath, dir, port)
			syscall.Sync()
			before := o.srv.proxy.snapshot()
			r, out, err := fetchMeasure(cmd, dir+".time")
			if err != nil {
				return nil, fmt.Errorf("%s, run %d: %v", s.label, run, err)
			}
			w, err := o.srv.proxy.since(before)
			if err != nil {
				return nil, err
			}
			if err := s.check(spoolPath, dir, out); err != nil {
				return nil, fmt.Errorf("%s, run %d: %v", s.label, run, err)
			}
			what := "timed"
			switch {
			case counted && o.proxyAll:
				what = "timed and counted"
			case counted:
				what = "counted"
			}
			if counted {
				rows[k].wire = w
			} else if w.conns != 0 {
				return nil, fmt.Errorf("%s, run %d: %d connections went through the proxy, none should have", s.label, run, w.conns)
			}
			if run > 0 {
				rows[k].runs = append(rows[k].runs, fetchRun{result: r, wire: w, counted: counted})
			}
			if o.verbose {
				fmt.Printf("  %s run %d %-19s %-44s %s", stage, run, "("+what+")", s.label, secs(r.wall))
				if counted {
					fmt.Printf("  %d connection(s), %d bytes up, %d down", w.conns, w.up, w.down)
				}
				fmt.Println()
			}
		}
	}
	for k := range rows {
		sorted := slices.Clone(rows[k].runs)
		slices.SortFunc(sorted, func(a, b fetchRun) int { return cmp.Compare(a.wall, b.wall) })
		rows[k].best = sorted[0]
		rows[k].median = sorted[(len(sorted)-1)/2] // the lower middle: a run that happened
		if o.proxyAll {
			rows[k].wire = rows[k].median.wire
		}
	}
	return rows, nil
}

// fetchMeasure runs cmd and returns its wall time (and with GNU time its
// CPU times and peak RSS: of the client side only, sshd and what it runs
// are not counted) and its standard output.
func fetchMeasure(cmd *exec.Cmd, scratch string) (result, []byte, error) {
	args := cmd.Args
	if gnuTime != "" {
		timed := exec.Command(gnuTime, append([]string{"-f", "%M %U %S", "-o", scratch, "--"}, args...)...)
		timed.Env, timed.Dir = cmd.Env, cmd.Dir
		cmd = timed
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return result{}, nil, fmt.Errorf("%s: %v\n%s%s", strings.Join(args, " "), err, out.Bytes(), errb.Bytes())
	}
	if errb.Len() > 0 {
		fmt.Fprintf(os.Stderr, "%s says:\n%s", filepath.Base(args[0]), errb.Bytes())
	}
	r := result{wall: wall, maxRSS: -1, steal: -1}
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

// handCommands is the hand pipeline's fetch: claim the spool by renaming
// it, copy it with scp -C (zlib in the SSH transport), remove it.
func (o *fetchOptions) handCommands(spool, local string, port int) string {
	ssh := o.ssh + " " + fetchQuoteAll(o.srv.sshArgs(port))
	x := spool + ".x"
	return fmt.Sprintf("set -e\n%s 127.0.0.1 %s\n%s -q -C %s %s %s\n%s 127.0.0.1 %s\n",
		ssh, fetchShellQuote("mv -- "+fetchShellQuote(spool)+" "+fetchShellQuote(x)),
		o.scp, fetchQuoteAll(o.srv.sshArgs(port)), fetchShellQuote("127.0.0.1:"+x), fetchShellQuote(local),
		ssh, fetchShellQuote("rm -- "+fetchShellQuote(x)))
}

// checkServerEmpty fails if anything of spool is left on the server: the
// spool, its lock, a claimed or renamed copy.
func checkServerEmpty(spool string) error {
	left, _ := filepath.Glob(spool + "*")
	if len(left) > 0 {
		return fmt.Errorf("left on the server: %s", strings.Join(left, ", "))
	}
	return nil
}

func (o *fetchOptions) transferStage() error {
	fmt.Printf("\ntransfer stage: %.1f MB spool, claim + stream + decompress (+ remove), no filing\n", float64(len(o.transferSpool))/1e6)
	sides := []fetchSide{
		{
			label: "ssh mv; scp -C; ssh rm",
			command: func(spool, dir string, port int) *exec.Cmd {
				return exec.Command("/bin/sh", "-c", o.handCommands(spool, filepath.Join(dir, "spool"), port))
			},
			check: func(spool, dir string, _ []byte) error {
				if err := checkServerEmpty(spool); err != nil {
					return err
				}
				local := filepath.Join(dir, "spool")
				b, err := os.ReadFile(local)
				if err != nil {
					return err
				}
				if len(b) != len(o.transferSpool) || crc32.Checksum(b, crcTable) != o.transferCRC {
					return fmt.Errorf("scp copied %d bytes that differ from the spool's %d", len(b), len(o.transferSpool))
				}
				return os.Remove(local)
			},
		},
		{
			label: "mfilter transfer (remote pkg)",
			command: func(spool, dir string, port int) *exec.Cmd {
				cmd := exec.Command(o.selfExe, "-addr", fmt.Sprintf("127.0.0.1:%d", port), "-user", o.srv.user, "-identity", o.srv.key,
					"-known-hosts", o.srv.knownHosts, "-spool", spool, "-compress", o.compress)
				if o.trace {
					cmd.Args = append(cmd.Args, "-trace")
				}
				cmd.Env = append(os.Environ(), fetchHelperEnv+"=1")
				return cmd
			},
			check: func(spool, dir string, out []byte) error {
				if err := checkServerEmpty(spool); err != nil {
					return err
				}
				want := fmt.Sprintf("%d %08x ", len(o.transferSpool), o.transferCRC)
				if !strings.HasPrefix(string(out), want) {
					return fmt.Errorf("received %q, want %q (bytes, CRC-32C)", strings.TrimSpace(string(out)), want)
				}
				return nil
			},
		},
	}
	o.slow.sides = sides
	if o.only == "slow" {
		return nil
	}
	rows, err := o.runSides("transfer", o.transferSpool, sides)
	if err != nil {
		return err
	}
	o.transferRows = rows
	return nil
}

func (o *fetchOptions) e2eStage() error {
	fmt.Printf("\nend to end: %.1f MB spool, %d messages, fetched and filed into one maildir\n", float64(len(o.e2eSpool))/1e6, o.e2eMessages)
	var ref []string
	refLabel := ""
	compare := func(label, dir string) error {
		hashes, _, err := maildirContents(filepath.Join(dir, "inbox"))
		if err != nil {
			return err
		}
		if len(hashes) != o.e2eMessages {
			return fmt.Errorf("%d files in the maildir, the spool held %d messages (kept in %s)", len(hashes), o.e2eMessages, dir)
		}
		if ref == nil {
			ref, refLabel = hashes, label
			return nil
		}
		if onlyRef, onlyThis := diffMultisets(ref, hashes); len(onlyRef)+len(onlyThis) > 0 {
			o.keep = true
			return fmt.Errorf("the maildir differs from %s's: %d files only there, %d only here (kept in %s)", refLabel, len(onlyRef), len(onlyThis), dir)
		}
		return nil
	}
	sides := []fetchSide{
		{
			label: "ssh mv; scp -C; ssh rm; formail -s procmail",
			command: func(spool, dir string, port int) *exec.Cmd {
				local := dir + ".mbox"
				rc := fmt.Sprintf("MAILDIR=%s\nDEFAULT=%s/inbox/\n", dir, dir)
				script := o.handCommands(spool, local, port) + fmt.Sprintf("%s -s %s -m %s < %s\n",
					o.formail, o.procmail, fetchShellQuote(dir+".rc"), fetchShellQuote(local))
				// Written before the clock starts: the rc is part of the setup.
				os.WriteFile(dir+".rc", []byte(rc), 0o644)
				return exec.Command("/bin/sh", "-c", script)
			},
			check: func(spool, dir string, _ []byte) error {
				if err := checkServerEmpty(spool); err != nil {
					return err
				}
				os.Remove(dir + ".mbox")
				return compare("formail -s procmail", dir)
			},
		},
		{
			label: "mfilter fetch-and-file",
			command: func(spool, dir string, port int) *exec.Cmd {
				home := dir + ".home"
				os.Mkdir(home, 0o700)
				cmd := exec.Command(o.mfilter, "fetch-and-file", "--host", "127.0.0.1", "--port", fmt.Sprint(port),
					"--user", o.srv.user, "--identity", o.srv.key, "--known-hosts", o.srv.knownHosts,
					"--spool", spool, "--state-dir", filepath.Join(home, "state"), "--compress", o.compress,
					"--maildir", dir, "--default", "inbox/")
				cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
					"XDG_STATE_HOME="+filepath.Join(home, ".state"), "SSH_AUTH_SOCK=", "MFILTER_SSH_CONFIG="+o.srv.sshConfig)
				return cmd
			},
			check: func(spool, dir string, _ []byte) error {
				if err := checkServerEmpty(spool); err != nil {
					return err
				}
				return compare("mfilter", dir)
			},
		},
	}
	rows, err := o.runSides("e2e", o.e2eSpool, sides)
	if err != nil {
		return err
	}
	o.e2eRows = rows
	return nil
}

// report prints the table and the verdicts.
func (o *fetchOptions) report() error {
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "stage\tside\tspool\tbest\tmedian\tuser\tsys\tmax RSS\tconns\tto server\tfrom server\tover SSH\t")
	for _, r := range slices.Concat(o.transferRows, o.slow.rows, o.e2eRows) {
		m := r.median
		user, sys, rss := "-", "-", "-"
		if gnuTime != "" {
			user, sys = secs(m.user), secs(m.sys)
			rss = fmt.Sprintf("%.1f MB", float64(m.maxRSS)/1e6)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f MB\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t\n", r.stage, r.label, float64(r.spool)/1e6,
			secs(r.best.wall), secs(m.wall), user, sys, rss, r.wire.conns, fetchBytes(r.wire.up), fetchBytes(r.wire.down), fetchBytes(r.wire.total()))
	}
	tw.Flush()
	if o.proxyAll {
		fmt.Println("(user, sys, max RSS and bytes are those of the median run; CPU is the client side's only)")
	} else {
		fmt.Println("(user, sys and max RSS are those of the median run, CPU the client side's only; connections and bytes those of the counted run)")
	}
	fmt.Println()
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	if len(o.transferRows) == 2 {
		h, m := o.transferRows[0], o.transferRows[1]
		med := h.median.wall.Seconds() / m.median.wall.Seconds()
		best := h.best.wall.Seconds() / m.best.wall.Seconds()
		fmt.Printf("transfer: scp -C / mfilter %.1fx median, %.1fx best (target %gx: %s)\n", med, best, o.transferTarget, verdict(med >= o.transferTarget))
		fmt.Printf("transfer: bytes over SSH mfilter / scp -C %.3f (%d and %d bytes; target no more: %s)\n",
			float64(m.wire.total())/float64(h.wire.total()), m.wire.total(), h.wire.total(), verdict(m.wire.total() <= h.wire.total()))
	}
	if len(o.e2eRows) == 2 {
		h, m := o.e2eRows[0], o.e2eRows[1]
		med := h.median.wall.Seconds() / m.median.wall.Seconds()
		best := h.best.wall.Seconds() / m.best.wall.Seconds()
		fmt.Printf("end to end: hand pipeline / mfilter %.1fx median, %.1fx best (target %gx: %s)\n", med, best, o.e2eTarget, verdict(med >= o.e2eTarget))
		fmt.Printf("end to end: bytes over SSH mfilter / hand pipeline %.3f (%d and %d bytes)\n", float64(m.wire.total())/float64(h.wire.total()), m.wire.total(), h.wire.total())
		fmt.Printf("check: both maildirs hold the same %d file contents (sha256 multiset) in every run, counted and timed; every spool was emptied\n", o.e2eMessages)
	}
	o.slowReport()
	if len(o.transferRows) == 2 {
		fmt.Println("check: every transfer delivered the spool's bytes (CRC-32C) and left nothing on the server")
	}
	return nil
}

func fetchBytes(n int64) string {
	return fmt.Sprintf("%.2f MB", float64(n)/1e6)
}

func fetchShellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func fetchQuoteAll(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = fetchShellQuote(a)
	}
	return strings.Join(q, " ")
}
