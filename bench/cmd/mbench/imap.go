package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/mfilter/mfilter/bench"
	"github.com/mfilter/mfilter/internal/mtatest"
)

// imapOptions are the imap scenario's flags.
type imapOptions struct {
	mfilter, procmail, fetchmail, fdm string
	corpus                            string
	work                              string
	n, runs                           int
	keep, verbose                     bool
	target, targetFdm                 float64
}

// imapUser is the mail account of the private Dovecot.
const imapUser = "bench"

// runIMAP is the imap scenario: the SpamAssassin corpus, tagged as the
// rules scenario tags its messages, in the INBOX of a private Dovecot
// (internal/mtatest), filed with the 15 rules by fetchmail + procmail
// (mda), by fdm (an imap account) and by mfilter fetch-and-file, each
// into folders of its own, in rotated order, the INBOX loaded again
// before each run. Every connection goes through a counting proxy.
func runIMAP(args []string) error {
	o, err := parseIMAPFlags(args)
	if err != nil {
		return err
	}
	msgs, err := imapMessages(o.corpus, o.n)
	if err != nil {
		return err
	}
	if o.work != "" {
		if err := os.MkdirAll(o.work, 0o700); err != nil {
			return err
		}
	}
	if o.work, err = os.MkdirTemp(o.work, "mbench-imap-"); err != nil {
		return err
	}
	defer func() {
		if o.keep {
			fmt.Printf("kept: %s\n", o.work)
			return
		}
		os.RemoveAll(o.work)
	}()
	d, err := mtatest.LaunchDovecot(mtatest.DovecotOptions{Users: []string{imapUser}})
	if err != nil {
		return err
	}
	defer d.Stop()
	size, err := loadPristine(d, msgs)
	if err != nil {
		return err
	}
	proxy, err := newCountingProxy(d.IMAPAddr)
	if err != nil {
		return err
	}
	defer proxy.ln.Close()
	fmt.Printf("imap: %d messages (%.1f MB; %s, each once, tagged as in the rules scenario) in the INBOX of a private Dovecot %s, plain IMAP through a counting proxy on loopback\n",
		len(msgs), float64(size)/1e6, o.corpus, dovecotVersion())
	fmt.Printf("folders: %s on %s\n", o.work, describeFS(o.work))
	fmt.Printf("runs: %d of each tool, order rotated, each into a new directory after the INBOX is loaded again and sync(2)\n", o.runs)
	return o.compare(d, proxy, len(msgs))
}

func parseIMAPFlags(args []string) (*imapOptions, error) {
	fs := flag.NewFlagSet("mbench imap", flag.ContinueOnError)
	o := &imapOptions{}
	fs.StringVar(&o.mfilter, "mfilter", "mfilter", "the mfilter binary to measure")
	fs.StringVar(&o.procmail, "procmail", "procmail", "the procmail binary")
	fs.StringVar(&o.fetchmail, "fetchmail", "fetchmail", "the fetchmail binary")
	fs.StringVar(&o.fdm, "fdm", "fdm", "the fdm binary")
	fs.StringVar(&o.corpus, "spool-corpus", "", "directory of distinct messages for the INBOX, each used once (bench/run.sh imap passes the SpamAssassin public corpus)")
	fs.String("corpus", "", "ignored (the INBOX is -spool-corpus)")
	fs.StringVar(&o.work, "work", "", "directory for the folders (default $TMPDIR)")
	fs.IntVar(&o.n, "n", 0, "messages in the INBOX (0: the whole corpus)")
	fs.IntVar(&o.runs, "runs", 3, "runs of each tool; the table shows the best and the median")
	fs.BoolVar(&o.keep, "keep", false, "keep the folders every run filed into")
	fs.BoolVar(&o.verbose, "v", false, "print each run's time")
	fs.Float64Var(&o.target, "target", 5, "speed-up over fetchmail + procmail that mfilter should reach")
	fs.Float64Var(&o.targetFdm, "target-fdm", 2, "speed-up over fdm that mfilter should reach")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.corpus == "" {
		return nil, errors.New("-spool-corpus is needed (bench/run.sh imap downloads the SpamAssassin corpus)")
	}
	if o.runs < 1 || o.n < 0 {
		return nil, errors.New("-runs must be at least 1, -n at least 0")
	}
	for _, p := range []*string{&o.mfilter, &o.procmail, &o.fetchmail, &o.fdm} {
		path, err := exec.LookPath(*p)
		if err != nil {
			return nil, err
		}
		if *p, err = filepath.Abs(path); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// imapMessages are the corpus messages as a server holds them: tagged,
// without the From_ line and the blank line of the mbox entry.
func imapMessages(dir string, n int) ([][]byte, error) {
	corpus, err := bench.LoadCorpus(dir)
	if err != nil {
		return nil, err
	}
	if n == 0 || n > len(corpus) {
		n = len(corpus)
	}
	msgs := make([][]byte, n)
	for i := range msgs {
		e := bench.Tag(corpus[i].Entry, i)
		_, e, _ = bytes.Cut(e, []byte("\n"))
		msgs[i] = e[:len(e)-1]
	}
	return msgs, nil
}

// loadPristine puts the messages into the user's folder Pristine, as
// files in its maildir (owned by the mail user), from which each run's
// INBOX is copied (doveadm copy: hard links). It returns their size.
func loadPristine(d *mtatest.Dovecot, msgs [][]byte) (int64, error) {
	md := filepath.Join(d.Maildir(imapUser), ".Pristine")
	var size int64
	for _, sub := range []string{"", "/cur", "/new", "/tmp"} {
		if err := os.MkdirAll(md+sub, 0o700); err != nil {
			return 0, err
		}
	}
	when := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, m := range msgs {
		p := filepath.Join(md, "cur", fmt.Sprintf("%d.M%dP1.bench,S=%d:2,", 1767225600+i, i, len(m)))
		if err := os.WriteFile(p, m, 0o600); err != nil {
			return 0, err
		}
		// Distinct INTERNALDATEs, in the corpus's order.
		t := when.Add(time.Duration(i) * time.Second)
		if err := os.Chtimes(p, t, t); err != nil {
			return 0, err
		}
		size += int64(len(m))
	}
	err := filepath.Walk(d.Home(imapUser), func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, d.UID, d.GID)
	})
	if err != nil {
		return 0, err
	}
	if n, err := mailboxCount(d, "Pristine"); err != nil || n != len(msgs) {
		return 0, fmt.Errorf("the Pristine folder holds %d messages, not %d (%v)", n, len(msgs), err)
	}
	return size, nil
}

// reloadInbox empties the INBOX and copies Pristine into it.
func reloadInbox(d *mtatest.Dovecot, want int) error {
	if _, err := d.Doveadm("expunge", "-u", imapUser, "mailbox", "INBOX", "all"); err != nil {
		return err
	}
	if _, err := d.Doveadm("copy", "-u", imapUser, "INBOX", "mailbox", "Pristine", "all"); err != nil {
		return err
	}
	if n, err := mailboxCount(d, "INBOX"); err != nil || n != want {
		return fmt.Errorf("the INBOX holds %d messages after loading, not %d (%v)", n, want, err)
	}
	return nil
}

func mailboxCount(d *mtatest.Dovecot, mailbox string) (int, error) {
	out, err := d.Doveadm("mailbox", "status", "-u", imapUser, "messages", mailbox)
	if err != nil {
		return 0, err
	}
	_, v, ok := strings.Cut(strings.TrimSpace(string(out)), "messages=")
	if !ok {
		return 0, fmt.Errorf("doveadm mailbox status: %q", out)
	}
	return strconv.Atoi(v)
}

func dovecotVersion() string {
	out, err := exec.Command("dovecot", "--version").Output()
	if err != nil {
		return "(version unknown)"
	}
	return strings.Fields(string(out))[0]
}

// imapTools are the three contenders; each reaches the server at addr
// (the proxy), port port.
func (o *imapOptions) imapTools(port int) []tool {
	pw := mtatest.Password(imapUser)
	return []tool{
		{
			label: "fetchmail + procmail (mda)",
			command: func(dir string) *exec.Cmd {
				cmd := exec.Command(o.fetchmail, "-N", "-s", "-f", dir+".fetchmailrc", "--pidfile", dir+".fetchmail.pid", "-i", dir+".fetchids")
				cmd.Env = append(os.Environ(), "FETCHMAILHOME="+filepath.Dir(dir))
				return cmd
			},
			prepare: func(dir string) error {
				if err := os.WriteFile(dir+".rc", []byte(bench.Procmailrc(dir)), 0o644); err != nil {
					return err
				}
				return os.WriteFile(dir+".fetchmailrc", []byte(fetchmailrc(port, pw, o.procmail, dir+".rc")), 0o600)
			},
		},
		{
			label: "fdm (imap account)",
			command: func(dir string) *exec.Cmd {
				return exec.Command(o.fdm, "-q", "-m", "-u", "root", "-f", dir+".fdm.conf", "fetch")
			},
			prepare: func(dir string) error {
				return os.WriteFile(dir+".fdm.conf", []byte(bench.FdmIMAPConf(dir, "127.0.0.1", strconv.Itoa(port), imapUser, pw, "INBOX")), 0o600)
			},
		},
		{
			label: "mfilter fetch-and-file",
			command: func(dir string) *exec.Cmd {
				return exec.Command(o.mfilter, "fetch-and-file", "--rules", dir+".rules.yaml", "--state-dir", dir+".state")
			},
			prepare: func(dir string) error {
				fetch := fmt.Sprintf("fetch:\n  imap: imap://127.0.0.1:%d/INBOX\n  user: %s\n  password-command: [/bin/echo, %s]\n  tls: none\n", port, imapUser, pw)
				return os.WriteFile(dir+".rules.yaml", []byte(fetch+bench.RulesYAML(dir)), 0o600)
			},
		},
	}
}

// fetchmailrc fetches every message of the INBOX and deletes it once the
// mda exited 0; invisible: no Received: field of its own (fdm's
// no-received), norewrite: addresses left as they are. procmail -m
// writes no From_ line of its own (its mboxes would hold one message):
// -f %F makes one from the envelope sender fetchmail found.
func fetchmailrc(port int, pw, procmail, rc string) string {
	return fmt.Sprintf(`set invisible
set no syslog
poll 127.0.0.1 protocol IMAP port %d auth password timeout 120
  user "%s" there with password "%s" is "root" here
  folder "INBOX" fetchall nokeep norewrite sslproto ""
  mda "%s -f %%F -m %s"
`, port, imapUser, pw, procmail, rc)
}

// imapRun is one run of one tool.
type imapRun struct {
	result
	wire wireCount
}

// imapFiled is what one run filed, hashed two ways (see imapNorm and
// imapHeader).
type imapFiled struct{ whole, header *ruleFolders }

// compare runs the tools, checks what they filed, and prints the table
// and the ratios. Every run of every tool must leave the same messages
// (by their headers) in the same folders; mfilter's runs and fdm's must
// hold the same bytes (as imapNorm reads them); how many of fetchmail +
// procmail's messages differ is printed.
func (o *imapOptions) compare(d *mtatest.Dovecot, proxy *countingProxy, n int) error {
	tools := o.imapTools(proxy.ln.Addr().(*net.TCPAddr).Port)
	runs := make([][]imapRun, len(tools))
	first := make([]imapFiled, len(tools))
	m := len(tools) - 1 // mfilter
	failed := false
	fail := func(format string, args ...any) {
		failed, o.keep = true, true
		fmt.Printf("FAIL: "+format+"\n", args...)
	}
	for run := 0; run < o.runs; run++ {
		for j := range tools {
			k := (j + run) % len(tools)
			r, got, err := o.runOne(d, proxy, tools[k], run, n)
			if err != nil {
				return err
			}
			runs[k] = append(runs[k], r)
			if run == 0 {
				first[k] = got
			} else if diff := first[k].whole.diff(got.whole); diff != "" {
				fail("run %d of %s differs from its first run:\n%s", run+1, tools[k].label, diff)
			}
			if got.header.total() != n {
				fail("run %d of %s filed %d messages, the INBOX held %d", run+1, tools[k].label, got.header.total(), n)
			}
		}
	}
	for k := range m {
		if diff := first[m].header.diff(first[k].header); diff != "" {
			fail("%s and mfilter filed different messages (by their headers):\n%s", tools[k].label, diff)
		}
	}
	if diff := first[m].whole.diff(first[1].whole); diff != "" {
		fail("fdm and mfilter filed different bytes:\n%s", diff)
	}
	fmt.Println()
	printFolderCounts(tools, []*ruleFolders{first[0].header, first[1].header, first[2].header})
	fmt.Println()
	o.report(tools, runs)
	if failed {
		return errors.New("the tools disagree (see FAIL above)")
	}
	fmt.Printf("check: all three leave the same %d messages in the same %d folders in every run (sha256 of their headers), and the INBOX empty; fdm's and mfilter's hold the same bytes\n",
		first[m].header.total(), len(first[m].header.folders))
	if bad := first[m].whole.count(first[0].whole); bad > 0 {
		fmt.Printf("fetchmail + procmail: %d messages hold other bytes than mfilter's and fdm's (bench/README.md: fetchmail breaks lines longer than 8 KB)\n", bad)
	}
	return nil
}

// runOne loads the INBOX and times one run of t into a new directory.
func (o *imapOptions) runOne(d *mtatest.Dovecot, proxy *countingProxy, t tool, run, n int) (imapRun, imapFiled, error) {
	var none imapFiled
	dir := filepath.Join(o.work, fmt.Sprintf("run%d-%s", run+1, strings.Fields(t.label)[0]))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return imapRun{}, none, err
	}
	if err := t.prepare(dir); err != nil {
		return imapRun{}, none, err
	}
	if err := reloadInbox(d, n); err != nil {
		return imapRun{}, none, err
	}
	syscall.Sync()
	before := proxy.snapshot()
	r, err := measure(t.command(dir), os.DevNull, dir+".time")
	if err != nil {
		return imapRun{}, none, err
	}
	w, err := proxy.since(before)
	if err != nil {
		return imapRun{}, none, err
	}
	if o.verbose {
		fmt.Printf("  run %d %-28s %s, %.1f MB over the link\n", run+1, t.label, secs(r.wall), float64(w.total())/1e6)
	}
	if left, err := mailboxCount(d, "INBOX"); err != nil || left != 0 {
		return imapRun{}, none, fmt.Errorf("run %d of %s left %d messages in the INBOX (%v)", run+1, t.label, left, err)
	}
	var got imapFiled
	if got.whole, err = readRuleFoldersWith(dir, imapNorm); err != nil {
		return imapRun{}, none, err
	}
	got.header, err = readRuleFoldersWith(dir, imapHeader)
	return imapRun{r, w}, got, err
}

// imapNorm is a filed message as compared: without the From_ line that
// procmail writes into maildir files from what fetchmail gives it (fdm
// and mfilter write none there), without bare CRs and NULs, which
// fetchmail drops and mfilter and fdm keep, and with every quoted
// ">...From " line read as "From ": procmail and mfilter quote mboxo
// style, fdm mboxrd style.
func imapNorm(m []byte) []byte {
	if bytes.HasPrefix(m, []byte("From ")) {
		if i := bytes.IndexByte(m, '\n'); i >= 0 {
			m = m[i+1:]
		}
	}
	m = bytes.ReplaceAll(m, []byte("\r"), nil)
	m = bytes.ReplaceAll(m, []byte("\x00"), nil)
	return quotedFrom.ReplaceAll(m, []byte("From "))
}

var quotedFrom = regexp.MustCompile(`(?m)^>+From `)

// imapHeader is the header of imapNorm's message: what tells which
// message it is.
func imapHeader(m []byte) []byte {
	m = imapNorm(m)
	if i := bytes.Index(m, []byte("\n\n")); i >= 0 {
		return m[:i]
	}
	return m
}

// report prints the table of times and bytes and the ratios.
func (o *imapOptions) report(tools []tool, runs [][]imapRun) {
	rows := make([]stats, len(tools))
	wires := make([]wireCount, len(tools))
	for k, t := range tools {
		rs := make([]result, len(runs[k]))
		for i, r := range runs[k] {
			rs[i] = r.result
		}
		rows[k] = summarize(t.label, rs, -1, true)
		wires[k] = runs[k][0].wire
	}
	printTable(rows)
	printSteal(rows)
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "over the link (first run)\tclient to server\tserver to client\ttotal\tconnections\t")
	for k, t := range tools {
		w := wires[k]
		fmt.Fprintf(tw, "%s\t%.1f kB\t%.2f MB\t%.2f MB\t%d\t\n", t.label, float64(w.up)/1e3, float64(w.down)/1e6, float64(w.total())/1e6, w.conns)
	}
	tw.Flush()
	fmt.Println()
	m := len(tools) - 1
	for k, target := range []float64{o.target, o.targetFdm} {
		med := float64(rows[k].median) / float64(rows[m].median)
		best := float64(rows[k].best) / float64(rows[m].best)
		verdict := "met"
		if med < target {
			verdict = "MISSED"
		}
		fmt.Printf("ratio %s / mfilter: %.1fx median, %.1fx best (target %gx: %s); bytes over the link %.2fx\n",
			strings.Fields(tools[k].label)[0], med, best, target, verdict, float64(wires[k].total())/float64(wires[m].total()))
	}
}
