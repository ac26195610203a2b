package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mfilter/mfilter/internal/sysexits"
)

// sendOpts are mfilter send's options: sendmail's single-letter ones,
// read as sendmail reads them (-oi, -FName, -f addr, bundled -ti), and
// mfilter's own, which are long (--flush, --rules FILE).
type sendOpts struct {
	extract    bool   // -t
	ignoreDots bool   // -i, -oi
	sender     string // -f, -r
	senderSet  bool
	fullName   string // -F
	verbose    bool   // -v
	queueOnly  bool   // -odq
	flush      bool   // -q, --flush
	list       bool   // -bp, --list
	notify     []string
	ret        string // -R
	envid      string // -V
	recipients []string
	ignored    []string // sendmail options accepted and ignored, for -v
	help       bool

	rules      string
	host       string
	port       int
	user       string
	identity   []string
	knownHosts []string
	acceptNew  bool
	timeout    time.Duration
	relay      string
	queue      string // "", "true", "false", "accept"
	queueDir   string
}

// sendLongOpts are mfilter's own options; true marks those that take a
// value.
var sendLongOpts = map[string]bool{
	"rules": true, "host": true, "port": true, "user": true, "identity": true, "known-hosts": true,
	"accept-new-host-key": false, "timeout": true, "relay": true, "queue": false, "no-queue": false,
	"queue-dir": true, "flush": false, "list": false, "verbose": false, "help": false,
}

// parseSendArgs reads a sendmail command line. Options that take a
// value take it attached (-fme@host, -oi) or as the next argument (-f
// me@host); boolean letters may be bundled (-ti). "--" ends the options.
// Its errors are usage errors.
func parseSendArgs(args []string) (*sendOpts, error) {
	p := &sendArgParser{o: &sendOpts{}, args: args}
	if err := p.parse(); err != nil {
		return nil, fail(sysexits.Usage, err)
	}
	return p.o, nil
}

// sendArgParser reads args into o; i is the argument being read.
type sendArgParser struct {
	o    *sendOpts
	args []string
	i    int
}

func (p *sendArgParser) parse() error {
	for ; p.i < len(p.args); p.i++ {
		a := p.args[p.i]
		if a == "--" {
			p.o.recipients = append(p.o.recipients, p.args[p.i+1:]...)
			return nil
		}
		var err error
		switch {
		case strings.HasPrefix(a, "--"):
			err = p.longOption(a)
		case len(a) < 2 || a[0] != '-':
			p.o.recipients = append(p.o.recipients, a)
		default:
			err = p.letters(a)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// next consumes and returns the argument after the current one, the
// value of flag.
func (p *sendArgParser) next(flag string) (string, error) {
	if p.i+1 >= len(p.args) {
		return "", fmt.Errorf("%s needs a value", flag)
	}
	p.i++
	return p.args[p.i], nil
}

// longOption reads one of mfilter's own options, --name or --name=value.
func (p *sendArgParser) longOption(a string) error {
	name, val, hasVal := strings.Cut(a[2:], "=")
	takes, known := sendLongOpts[name]
	if !known {
		return fmt.Errorf("unknown option --%s", name)
	}
	if takes && !hasVal {
		v, err := p.next("--" + name)
		if err != nil {
			return err
		}
		val = v
	}
	if !takes && hasVal && name != "queue" {
		return fmt.Errorf("--%s takes no value", name)
	}
	return p.o.long(name, val, hasVal)
}

// letters reads a word of single-letter options. A letter that takes a
// value takes the rest of the word, or else the next argument.
func (p *sendArgParser) letters(a string) error {
	for j := 1; j < len(a); j++ {
		c := a[j]
		rest := a[j+1:]
		set := sendValueLetters[c]
		if set == nil {
			if done, err := p.o.letter(c, rest); done || err != nil {
				return err
			}
			continue
		}
		v := rest
		if v == "" {
			var err error
			if v, err = p.next("-" + string(c)); err != nil {
				return err
			}
		}
		return set(p.o, c, v)
	}
	return nil
}

// letter reads single-letter option c that takes no value; done says
// that it took rest, the rest of its word, too.
func (o *sendOpts) letter(c byte, rest string) (done bool, err error) {
	switch c {
	case 't':
		o.extract = true
	case 'i':
		o.ignoreDots = true
	case 'v':
		o.verbose = true
	case 'G', 'U', 'm', 'n', 'x':
		o.ignored = append(o.ignored, "-"+string(c))
	case 'q':
		// -q, -q30m: run the queue now (the interval is a
		// daemon's; mfilter runs it once).
		o.flush = true
		if rest != "" {
			o.ignored = append(o.ignored, "-q"+rest)
		}
		return true, nil
	case 'C':
		return true, errors.New("-C (another configuration file) is not supported; use --rules FILE")
	default:
		return true, fmt.Errorf("unknown option -%c", c)
	}
	return false, nil
}

// sendValueLetters set the single-letter options that take a value,
// from letter c and value v.
var sendValueLetters = map[byte]func(o *sendOpts, c byte, v string) error{
	'f': setSender,
	'r': setSender,
	'F': func(o *sendOpts, _ byte, v string) error { o.fullName = v; return nil },
	'N': func(o *sendOpts, _ byte, v string) error { return o.setNotify(v) },
	'R': func(o *sendOpts, _ byte, v string) error { return o.setReturn(v) },
	'V': func(o *sendOpts, _ byte, v string) error { o.envid = v; return nil },
	// Body type (8BITMIME is used whenever the relay offers it), hop
	// count, syslog tag, traffic log, debug, protocol, sendmail.cf
	// choice.
	'B': ignoreValue,
	'h': ignoreValue,
	'L': ignoreValue,
	'X': ignoreValue,
	'd': ignoreValue,
	'p': ignoreValue,
	'A': ignoreValue,
	'o': func(o *sendOpts, c byte, v string) error { return o.option(string(c), v) },
	'O': func(o *sendOpts, c byte, v string) error { return o.option(string(c), v) },
	'b': func(o *sendOpts, _ byte, v string) error { return o.setMode(v) },
}

func setSender(o *sendOpts, _ byte, v string) error {
	o.sender, o.senderSet = v, true
	return nil
}

func ignoreValue(o *sendOpts, c byte, v string) error {
	o.ignored = append(o.ignored, "-"+string(c)+v)
	return nil
}

// setReturn reads -R: what a bounce returns of the message.
func (o *sendOpts) setReturn(v string) error {
	switch strings.ToLower(v) {
	case "full", "hdrs":
		o.ret = strings.ToUpper(v)
		return nil
	}
	return fmt.Errorf("-R takes full or hdrs, not %q", v)
}

// setMode reads -b: only -bm (deliver) and -bp (list the queue).
func (o *sendOpts) setMode(v string) error {
	switch v {
	case "m":
	case "p":
		o.list = true
	default:
		return fmt.Errorf("-b%s is not supported (mfilter send delivers messages: -bm; lists its queue: -bp)", v)
	}
	return nil
}

func (o *sendOpts) setNotify(v string) error {
	for _, n := range strings.Split(v, ",") {
		n = strings.ToUpper(strings.TrimSpace(n))
		switch n {
		case "NEVER", "SUCCESS", "FAILURE", "DELAY":
			o.notify = append(o.notify, n)
		default:
			return fmt.Errorf("-N takes never, or success, failure and delay separated by commas, not %q", v)
		}
	}
	for _, n := range o.notify {
		if n == "NEVER" && len(o.notify) > 1 {
			return errors.New("-N never cannot be combined with other values")
		}
	}
	return nil
}

// option reads -oX and -O Name=value. Only -oi/IgnoreDots and -odq mean
// something here; the others (error modes -oe*, delivery modes -odb,
// -odi, -odf, -om, -oL, ...) are accepted and ignored: mfilter send
// always delivers at once and reports errors by its exit status and on
// stderr.
func (o *sendOpts) option(letter, v string) error {
	if letter == "O" {
		name, val, _ := strings.Cut(v, "=")
		if strings.EqualFold(name, "IgnoreDots") && (val == "" || strings.EqualFold(val, "true")) {
			o.ignoreDots = true
			return nil
		}
		o.ignored = append(o.ignored, "-O"+v)
		return nil
	}
	switch {
	case v == "i":
		o.ignoreDots = true
	case v == "dq":
		o.queueOnly = true
	case v == "":
		return errors.New("-o needs an option letter")
	default:
		o.ignored = append(o.ignored, "-o"+v)
	}
	return nil
}

func (o *sendOpts) long(name, val string, hasVal bool) error {
	switch name {
	case "rules":
		o.rules = val
	case "host":
		o.host = val
	case "port":
		var p int
		if _, err := fmt.Sscan(val, &p); err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("--port must be a number from 1 to 65535, not %q", val)
		}
		o.port = p
	case "user":
		o.user = val
	case "identity":
		o.identity = append(o.identity, val)
	case "known-hosts":
		o.knownHosts = append(o.knownHosts, val)
	case "accept-new-host-key":
		o.acceptNew = true
	case "timeout":
		d, err := time.ParseDuration(val)
		if err != nil || d <= 0 {
			return fmt.Errorf("--timeout must be a duration like 30s, not %q", val)
		}
		o.timeout = d
	case "relay":
		o.relay = val
	case "queue":
		if !hasVal {
			val = "true"
		}
		switch val {
		case "true", "false", "accept":
			o.queue = val
		default:
			return fmt.Errorf("--queue takes true, false or accept, not %q", val)
		}
	case "no-queue":
		o.queue = "false"
	case "queue-dir":
		o.queueDir = val
	case "flush":
		o.flush = true
	case "list":
		o.list = true
	case "verbose":
		o.verbose = true
	case "help":
		o.help = true
	}
	return nil
}
