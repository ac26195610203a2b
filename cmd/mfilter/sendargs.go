package main

import (
	"errors"
	"fmt"
	"strings"
	"time"
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
func parseSendArgs(args []string) (*sendOpts, error) {
	o := &sendOpts{}
	i := 0
	next := func(flag string) (string, error) {
		if i+1 >= len(args) {
			return "", fmt.Errorf("%s needs a value", flag)
		}
		i++
		return args[i], nil
	}
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			o.recipients = append(o.recipients, args[i+1:]...)
			break
		}
		if strings.HasPrefix(a, "--") {
			name, val, hasVal := strings.Cut(a[2:], "=")
			takes, known := sendLongOpts[name]
			if !known {
				return nil, fmt.Errorf("unknown option --%s", name)
			}
			if takes && !hasVal {
				v, err := next("--" + name)
				if err != nil {
					return nil, err
				}
				val = v
			}
			if !takes && hasVal && name != "queue" {
				return nil, fmt.Errorf("--%s takes no value", name)
			}
			if err := o.long(name, val, hasVal); err != nil {
				return nil, err
			}
			continue
		}
		if len(a) < 2 || a[0] != '-' {
			o.recipients = append(o.recipients, a)
			continue
		}
		// One word of single-letter options.
		for j := 1; j < len(a); j++ {
			c := a[j]
			rest := a[j+1:]
			value := func() (string, error) {
				if rest != "" {
					j = len(a)
					return rest, nil
				}
				j = len(a)
				return next("-" + string(c))
			}
			switch c {
			case 't':
				o.extract = true
			case 'i':
				o.ignoreDots = true
			case 'v':
				o.verbose = true
			case 'G', 'U', 'm', 'n', 'x':
				o.ignored = append(o.ignored, "-"+string(c))
			case 'f', 'r':
				v, err := value()
				if err != nil {
					return nil, err
				}
				o.sender, o.senderSet = v, true
			case 'F':
				v, err := value()
				if err != nil {
					return nil, err
				}
				o.fullName = v
			case 'N':
				v, err := value()
				if err != nil {
					return nil, err
				}
				if err := o.setNotify(v); err != nil {
					return nil, err
				}
			case 'R':
				v, err := value()
				if err != nil {
					return nil, err
				}
				switch strings.ToLower(v) {
				case "full", "hdrs":
					o.ret = strings.ToUpper(v)
				default:
					return nil, fmt.Errorf("-R takes full or hdrs, not %q", v)
				}
			case 'V':
				v, err := value()
				if err != nil {
					return nil, err
				}
				o.envid = v
			case 'B', 'h', 'L', 'X', 'd', 'p', 'A':
				// Body type (8BITMIME is used whenever the relay
				// offers it), hop count, syslog tag, traffic log,
				// debug, protocol, sendmail.cf choice.
				v, err := value()
				if err != nil {
					return nil, err
				}
				o.ignored = append(o.ignored, "-"+string(c)+v)
			case 'o', 'O':
				v, err := value()
				if err != nil {
					return nil, err
				}
				if err := o.option(string(c), v); err != nil {
					return nil, err
				}
			case 'b':
				v, err := value()
				if err != nil {
					return nil, err
				}
				switch v {
				case "m":
				case "p":
					o.list = true
				default:
					return nil, fmt.Errorf("-b%s is not supported (mfilter send delivers messages: -bm; lists its queue: -bp)", v)
				}
			case 'q':
				// -q, -q30m: run the queue now (the interval is a
				// daemon's; mfilter runs it once).
				o.flush = true
				if rest != "" {
					o.ignored = append(o.ignored, "-q"+rest)
				}
				j = len(a)
			case 'C':
				return nil, errors.New("-C (another configuration file) is not supported; use --rules FILE")
			default:
				return nil, fmt.Errorf("unknown option -%c", c)
			}
		}
	}
	return o, nil
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
