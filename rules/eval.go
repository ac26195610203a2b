package rules

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/mfilter/mfilter/internal/autoreply"
	"github.com/mfilter/mfilter/internal/confine"
	"github.com/mfilter/mfilter/internal/dupcache"
	"github.com/mfilter/mfilter/internal/mailfmt"
	"github.com/mfilter/mfilter/internal/msgview"
	"github.com/mfilter/mfilter/internal/runprog"
)

// Options configure an Engine.
type Options struct {
	// Default is the folder for mail no rule delivers.
	Default string
	// Vars are the environment built-ins (HOME, USER, LOGNAME, HOST,
	// MAILDIR, DEFAULT).
	Vars map[string]string
	// Runner runs program conditions and filters (default runprog.Exec).
	Runner runprog.Runner
	// LookupTXT answers DNS TXT queries for DKIM (default net.LookupTXT).
	LookupTXT func(string) ([]string, error)
	// Dup is where duplicate conditions look keys up; the filer records
	// a decision's Dups in it once the message is delivered.
	Dup *dupcache.Store
	// Berkeley ignores Content-Length when preparing program input.
	Berkeley bool
	// MfilterSend is the command of forward via: mfilter; the recipients
	// follow it. Default DefaultMfilterSend.
	MfilterSend []string
	// Guard confines the paths built from message data that the engine
	// uses itself (duplicate caches); nil refuses them all.
	Guard *confine.Guard
	// Now is the clock of ${date} (default time.Now).
	Now func() time.Time
}

// DefaultMfilterSend forwards through mfilter send, the SSH relay of the
// fetch: or send: settings. --no-queue: a forward that fails is retried
// by the filer (exit 75), so a queued copy would go twice.
var DefaultMfilterSend = []string{"mfilter", "send", "-oi", "--no-queue", "--"}

// DefaultSendmail is the sendmail command forwards use unless the rules
// name another.
var DefaultSendmail = []string{"/usr/sbin/sendmail", "-oi"}

// Engine evaluates messages against loaded rules. It is safe for use by
// one goroutine at a time.
type Engine struct {
	cfg      *Config
	opts     Options
	trusted  []string
	sendmail []string
	// states are evaluation states to use again: their variables and
	// their view of the message keep their memory from one message to
	// the next.
	states sync.Pool
	// patterns are the regexps of patterns with variables.
	patterns patternCache
}

// Guard is what confines the paths built from message data.
func (e *Engine) Guard() *confine.Guard { return e.opts.Guard }

// NewEngine returns an engine for cfg.
func NewEngine(cfg *Config, opts Options) *Engine {
	if opts.Runner == nil {
		opts.Runner = runprog.Exec{}
	}
	if opts.Dup == nil {
		opts.Dup = dupcache.New()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	e := &Engine{cfg: cfg, opts: opts, sendmail: DefaultSendmail}
	for _, s := range cfg.TrustedAuthServIDs {
		e.trusted = append(e.trusted, s.Value)
	}
	if len(cfg.Sendmail) > 0 {
		e.sendmail = nil
		for _, t := range cfg.Sendmail {
			v, _ := t.Expand(func(name string) (string, bool) { return opts.Vars[name], false }, nil)
			e.sendmail = append(e.sendmail, v)
		}
	}
	return e
}

// Envelope is what the transport says about a message.
type Envelope struct {
	Sender    string // deliver -f, or the From_ line
	Recipient string // deliver -a
}

// StepKind is what a Step does.
type StepKind int

const (
	StepFolder StepKind = iota
	StepPipe
	StepForward
	StepDiscard
	// StepReply sends an automatic reply once the message is filed.
	StepReply
)

// Step is one thing to do with the message.
type Step struct {
	Kind StepKind
	// Folder is the folder spec (StepFolder), relative to the mail root
	// or absolute.
	Folder string
	// Confined is set when the folder name holds message data: it must
	// stay inside the mail root whatever it says.
	Confined bool
	// Argv is the program (StepPipe) or sendmail command with recipients
	// (StepForward).
	Argv       []string
	Timeout    time.Duration
	IgnoreExit bool
	// Copy: processing went on after this step.
	Copy bool
	// Msg is the message as this step delivers it (edits and filters
	// before the step applied).
	Msg []byte
	// Rule names the rule that made the step ("" for the default).
	Rule    string
	Default bool
	// Flags (seen, answered, flagged, deleted, draft) and Keywords are
	// set on the message where the folder can hold them.
	Flags, Keywords []string
	// Input is what a pipe reads: "" or "message", "header", "body".
	Input string
	// Fallback are the steps to make instead when this one fails.
	Fallback []Step
	// Reply is the reply a StepReply sends.
	Reply *autoreply.Job
}

// Decision is the outcome of evaluating one message.
type Decision struct {
	Steps []Step
	// Logs are the lines of log actions, in order.
	Logs []string
	// Warnings are problems that did not stop filing (a filter that
	// failed and was skipped, for example).
	Warnings []string
	// Trace explains the evaluation, when asked for.
	Trace []string

	// Dups are the keys that duplicate conditions found new: to be
	// recorded in DupStore once the message is delivered
	// (dupcache.Store.RecordAll), or let go if it is not (Abort).
	Dups []dupcache.Entry

	engine *Engine
}

// Abort lets go of the keys the evaluation holds (Dups): the message
// will not be delivered.
func (d *Decision) Abort() {
	d.engine.opts.Dup.ForgetAll(d.Dups)
	d.Dups = nil
}

// DupStore is the store the engine's duplicate conditions look in.
func (e *Engine) DupStore() *dupcache.Store { return e.opts.Dup }

// EvalOptions are per-call options.
type EvalOptions struct {
	Envelope Envelope
	// Trace asks for Decision.Trace.
	Trace bool
}

// Evaluate runs the rules on msg. An error means the message cannot be
// filed now (a program condition failed to run, the duplicate cache is
// unreadable, a filter failed with on-failure: retry): try again later.
func (e *Engine) Evaluate(ctx context.Context, msg []byte, o EvalOptions) (*Decision, error) {
	s, _ := e.states.Get().(*state)
	if s == nil {
		s = &state{vars: newVarTable(len(e.opts.Vars) + len(e.cfg.Vars) + 8)}
	}
	defer e.putState(s)
	s.e, s.ctx, s.env, s.trace, s.now = e, ctx, o.Envelope, o.Trace, e.opts.Now()
	s.dec = &Decision{engine: e}
	for k, v := range e.opts.Vars {
		s.vars.set(k, variable{v, false})
	}
	s.vars.set("sender", variable{o.Envelope.Sender, true})
	s.vars.set("recipient", variable{o.Envelope.Recipient, true})
	s.vars.set("score", variable{"0", false})
	s.setMsg(msg)
	if o.Envelope.Sender == "" {
		// As envelope-from: conditions see it: the From_ line's address.
		s.vars.set("sender", variable{s.envelopeSender(), true})
	}
	for _, v := range e.cfg.Vars {
		if err := s.setVar(v, 0); err != nil {
			s.dec.Abort()
			return nil, err
		}
	}
	if err := s.rules(e.cfg.Rules, 0); err != nil {
		s.dec.Abort()
		return nil, err
	}
	if !s.done {
		s.dec.Steps = append(s.dec.Steps, Step{Kind: StepFolder, Folder: e.opts.Default, Msg: s.msg, Default: true, Flags: s.flags, Keywords: s.keywords})
		s.tracef(0, "=> no rule delivered: default folder %s", e.opts.Default)
	}
	return s.dec, nil
}

type variable struct {
	value   string
	tainted bool // holds message data
}

// varTable holds a message's variables: a few built-ins, the rules'
// own and the named captures. A list searched in order costs less than a
// map made for every message; past maxVarList names (rules with many
// captures) they move to a map.
type varTable struct {
	list []namedVar
	m    map[string]variable
}

const maxVarList = 32

type namedVar struct {
	name string
	variable
}

func newVarTable(n int) varTable {
	return varTable{list: make([]namedVar, 0, min(n, maxVarList))}
}

func (t *varTable) get(name string) variable {
	if t.m != nil {
		return t.m[name]
	}
	for i := range t.list {
		if t.list[i].name == name {
			return t.list[i].variable
		}
	}
	return variable{}
}

func (t *varTable) set(name string, v variable) {
	if t.m != nil {
		t.m[name] = v
		return
	}
	for i := range t.list {
		if t.list[i].name == name {
			t.list[i].variable = v
			return
		}
	}
	if len(t.list) < maxVarList {
		t.list = append(t.list, namedVar{name, v})
		return
	}
	t.m = make(map[string]variable, 2*maxVarList)
	for _, nv := range t.list {
		t.m[nv.name] = nv.variable
	}
	t.m[name] = v
	t.list = nil
}

type state struct {
	e     *Engine
	ctx   context.Context
	env   Envelope
	trace bool
	now   time.Time // what ${date} says
	dec   *Decision
	vars  varTable
	done  bool // a final delivery or stop happened
	// flags and keywords go on the folder deliveries that follow the
	// flags actions that set them.
	flags, keywords []string

	msg  []byte
	view *msgview.Message // page, once a message is set
	page msgview.Message
	hdr  map[bool][]byte // whole-header text, raw and decoded
	dkim *dkimResult
}

// putState clears s of the message it evaluated, keeping its memory,
// and keeps it for the next Evaluate.
func (e *Engine) putState(s *state) {
	vars := s.vars
	if vars.m != nil { // grown into a map: start again small
		vars = newVarTable(len(e.opts.Vars) + len(e.cfg.Vars) + 8)
	}
	clear(vars.list[:cap(vars.list)]) // no strings of the message kept
	vars.list = vars.list[:0]
	s.page.Reset(nil)
	*s = state{vars: vars, page: s.page}
	e.states.Put(s)
}

func (s *state) setMsg(msg []byte) {
	s.msg = msg
	s.page.Reset(msg)
	s.view = &s.page
	s.hdr = nil
	s.dkim = nil
	s.vars.set("size", variable{strconv.Itoa(len(msg)), false})
}

// expand expands t with the message's variables.
func (s *state) expand(t *Template, clean func(string) string) (string, bool) {
	return t.expandAt(s.lookup, clean, s.now)
}

func (s *state) lookup(name string) (string, bool) {
	v := s.get(name)
	return v.value, v.tainted
}

// get is a variable's value: a built-in made when first used, or one
// in the table.
func (s *state) get(name string) variable {
	if v, ok := s.builtin(name); ok {
		return v
	}
	return s.vars.get(name)
}

func (s *state) tracef(depth int, format string, args ...any) {
	if s.trace {
		s.dec.Trace = append(s.dec.Trace, strings.Repeat("  ", depth)+fmt.Sprintf(format, args...))
	}
}

func (s *state) rules(rules []*Rule, depth int) error {
	for _, r := range rules {
		if s.done {
			return nil
		}
		if err := s.ctx.Err(); err != nil {
			return err
		}
		ok := true
		why := "no conditions"
		if r.If != nil {
			var err error
			ok, why, err = s.cond(r.If)
			if err != nil {
				return fmt.Errorf("rule %s (%s): %w", r.Label(), r.Pos, err)
			}
		}
		if !ok {
			if s.trace { // Label formats: only when tracing
				s.tracef(depth, "rule %s (%s): no match: %s", r.Label(), r.Pos, why)
			}
			continue
		}
		if s.trace {
			s.tracef(depth, "rule %s (%s): matched: %s", r.Label(), r.Pos, why)
		}
		if s.trace {
			if caps := captures(r.If); len(caps) > 0 {
				var kv []string
				for _, c := range caps {
					kv = append(kv, fmt.Sprintf("%s=%q", c, s.vars.get(c).value))
				}
				s.tracef(depth+1, "captures: %s", strings.Join(kv, " "))
			}
		}
		for _, a := range r.Then {
			if err := s.action(r, a, depth+1); err != nil {
				return fmt.Errorf("rule %s (%s): %w", r.Label(), a.pos(), err)
			}
			if s.done {
				return nil
			}
		}
		if err := s.rules(r.Rules, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// cond evaluates c; why says what decided, for traces.
func (s *state) cond(c Cond) (bool, string, error) {
	switch c := c.(type) {
	case *AllCond:
		return s.allCond(c)
	case *AnyCond:
		return s.anyCond(c)
	case *NotCond:
		ok, why, err := s.cond(c.Cond)
		if !s.trace {
			return !ok, "", err
		}
		return !ok, "not (" + why + ")", err
	case *HeaderCond:
		return s.headerCond(c)
	case *AddressCond:
		return s.addressCond(c), s.whyAddress(c), nil
	case *ListIDCond:
		return s.listIDCond(c)
	case *HeadersCond:
		text := s.headerText(!c.Pattern.Raw)
		ok := s.matchBytes(c.Pattern, text)
		return ok, s.whyBool("headers", c.Pattern.Source, ok), nil
	case *BodyCond:
		return s.bodyCond(c)
	case *SizeCond:
		return s.sizeCond(c)
	case *ExistsCond:
		return s.existsCond(c)
	case *EnvelopeCond:
		return s.envelopeCond(c)
	case *VarCond:
		v := s.get(c.Var).value
		ok := s.match(c.Pattern, v)
		return ok, s.matchWhy("${"+c.Var+"}", c.Pattern, v, ok), nil
	case *ScoreCond:
		return s.scoreCond(c)
	case *ProgramCond:
		return s.programCond(c)
	case *DuplicateCond:
		return s.dupCond(c)
	case *DKIMCond:
		return s.dkimCond(c)
	case *AuthResultsCond:
		return s.authResultsCond(c)
	}
	return false, "", fmt.Errorf("unknown condition %T", c)
}

func (s *state) allCond(c *AllCond) (bool, string, error) {
	var whys []string
	for _, cc := range c.Conds {
		ok, why, err := s.cond(cc)
		if err != nil || !ok {
			return false, why, err
		}
		if s.trace {
			whys = append(whys, why)
		}
	}
	return true, strings.Join(whys, "; "), nil
}

func (s *state) anyCond(c *AnyCond) (bool, string, error) {
	var whys []string
	for _, cc := range c.Conds {
		ok, why, err := s.cond(cc)
		if err != nil || ok {
			return ok, why, err
		}
		if s.trace {
			whys = append(whys, why)
		}
	}
	if !s.trace {
		return false, "", nil
	}
	return false, "none of: " + strings.Join(whys, "; "), nil
}

func (s *state) listIDCond(c *ListIDCond) (bool, string, error) {
	id := s.view.ListID()
	if id == "" && len(s.view.Get("list-id")) == 0 {
		return false, "no List-Id field", nil
	}
	ok := s.match(c.Pattern, id)
	return ok, s.matchWhy("list-id", c.Pattern, id, ok), nil
}

func (s *state) bodyCond(c *BodyCond) (bool, string, error) {
	var ok bool
	if c.Pattern.Raw {
		_, body := procmailAreas(s.msg)
		ok = s.matchBytes(c.Pattern, body)
	} else {
		ok = s.match(c.Pattern, s.view.BodyText())
	}
	return ok, s.whyBool("body", c.Pattern.Source, ok), nil
}

func (s *state) sizeCond(c *SizeCond) (bool, string, error) {
	n := int64(len(s.msg))
	ok := c.Op == ">" && n > c.N || c.Op == "<" && n < c.N
	if !s.trace {
		return ok, "", nil
	}
	return ok, fmt.Sprintf("size %d %s %d: %v", n, c.Op, c.N, ok), nil
}

func (s *state) existsCond(c *ExistsCond) (bool, string, error) {
	for _, n := range c.Names {
		if !s.view.Has(n) {
			return false, "no " + n + " field", nil
		}
	}
	return true, "has " + strings.Join(c.Names, ", "), nil
}

func (s *state) envelopeCond(c *EnvelopeCond) (bool, string, error) {
	v := s.env.Recipient
	if c.Which == "from" {
		v = s.envelopeSender()
	}
	ok := s.match(c.Pattern, v)
	return ok, s.matchWhy("envelope-"+c.Which, c.Pattern, v, ok), nil
}

// dkimCond verifies the message's DKIM signatures once, on the first
// dkim: condition it meets.
func (s *state) dkimCond(c *DKIMCond) (bool, string, error) {
	if s.dkim == nil {
		r := verifyDKIM(s.view, s.e.opts.LookupTXT)
		s.dkim = &r
	}
	if s.dkim.err != nil {
		return false, "", fmt.Errorf("dkim: %w", s.dkim.err)
	}
	ok, why, temp := dkimMatches(*s.dkim, c.Result, c.Domain)
	if temp != nil {
		return false, "", fmt.Errorf("dkim: %w", temp)
	}
	return ok, fmt.Sprintf("dkim %s: %v (%s)", c.Result, ok, why), nil
}

func (s *state) authResultsCond(c *AuthResultsCond) (bool, string, error) {
	got := authResults(s.view, s.e.trusted, c.Method)
	ok := false
	for _, r := range got {
		ok = ok || r == c.Result
	}
	why := fmt.Sprintf("auth-results %s=%s: %v", c.Method, c.Result, ok)
	if len(got) == 0 {
		why += " (no trusted Authentication-Results with " + c.Method + ")"
	}
	return ok, why, nil
}

// envelopeSender is -f, else the address of the From_ line.
func (s *state) envelopeSender() string {
	if s.env.Sender != "" {
		return s.env.Sender
	}
	if fl := s.view.FromLine(); fl != nil {
		// The first word after "From ", as strings.Fields splits.
		w := bytes.TrimLeftFunc(fl[len("From "):], unicode.IsSpace)
		if i := bytes.IndexFunc(w, unicode.IsSpace); i >= 0 {
			w = w[:i]
		}
		return string(w)
	}
	return ""
}

func (s *state) headerCond(c *HeaderCond) (bool, string, error) {
	seen := false
	var last string
	for _, name := range c.Fields {
		for _, f := range s.view.Get(name) {
			seen = true
			v := s.fieldValue(f, c.Pattern.Raw)
			if s.match(c.Pattern, v) {
				return true, s.matchWhy(f.Name(), c.Pattern, v, true), nil
			}
			last = v
		}
	}
	if !seen {
		if !s.trace {
			return false, "", nil
		}
		return false, "no " + strings.Join(c.Fields, "/") + " field", nil
	}
	return false, s.matchWhy(c.Fields[0], c.Pattern, last, false), nil
}

func (s *state) fieldValue(f *msgview.Field, raw bool) string {
	if raw {
		return msgview.Unfold(f.Raw)
	}
	return s.view.Decoded(f)
}

// match runs p on v and, on a match, sets p's named groups as variables.
func (s *state) match(p *Pattern, v string) bool {
	if p.pre != nil {
		switch {
		case p.pre.exact:
			return p.pre.matchAround(p.compiled(), bytesOf(v))
		case !p.pre.mayMatch(bytesOf(v)):
			return false
		}
	}
	re := s.regexp(p)
	if re == nil {
		return false
	}
	if len(p.names) == 0 && p.tmpl == nil {
		return re.MatchString(v)
	}
	m := re.FindStringSubmatchIndex(v)
	if m == nil {
		return false
	}
	for i, name := range re.SubexpNames() {
		if name == "" {
			continue
		}
		val := ""
		if m[2*i] >= 0 {
			val = v[m[2*i]:m[2*i+1]]
		}
		s.vars.set(name, variable{val, true})
	}
	return true
}

func (s *state) matchBytes(p *Pattern, b []byte) bool {
	if p.pre != nil {
		switch {
		case p.pre.exact:
			return p.pre.matchAround(p.compiled(), b)
		case !p.pre.mayMatch(b):
			return false
		}
	}
	re := s.regexp(p)
	if re == nil {
		return false
	}
	if len(p.names) == 0 && p.tmpl == nil {
		return re.Match(b)
	}
	m := re.FindSubmatchIndex(b)
	if m == nil {
		return false
	}
	for i, name := range re.SubexpNames() {
		if name == "" {
			continue
		}
		val := ""
		if m[2*i] >= 0 {
			val = string(b[m[2*i]:m[2*i+1]])
		}
		s.vars.set(name, variable{val, true})
	}
	return true
}

func (s *state) matchWhy(what string, p *Pattern, v string, ok bool) string {
	if !s.trace {
		return ""
	}
	verb := "did not match"
	if ok {
		verb = "matched"
	}
	if len(v) > 80 {
		v = v[:77] + "..."
	}
	return fmt.Sprintf("%s %q %s %q", what, p.Source, verb, v)
}

func (s *state) whyBool(what, src string, ok bool) string {
	if !s.trace {
		return ""
	}
	if ok {
		return fmt.Sprintf("%s %q matched", what, src)
	}
	return fmt.Sprintf("%s %q did not match", what, src)
}

// procmailAreas splits msg where procmail does: the header runs to the
// first empty line, and only "\n\n" makes one, so that in a message with
// CRLF line ends ("\r\n\r\n") procmail reads the body as header too.
// The procmail-style conditions (headers, raw body) keep that view, so
// that a ported rule files every message where procmail would; the other
// conditions parse the message properly.
func procmailAreas(msg []byte) (header, body []byte) {
	p := 0
	for p < len(msg) && msg[p] == '\n' {
		p++
	}
	if p < len(msg) {
		p++
	}
	for q := p; ; {
		i := bytes.IndexByte(msg[q:], '\n')
		if i < 0 {
			return msg, msg[len(msg):]
		}
		q += i + 1
		if q < len(msg) && msg[q] == '\n' {
			return msg[:q+1], msg[q+1:]
		}
	}
}

// headerText is procmail's header search area: the From_ line, the fields
// and the blank line, with the newline before a continuation line read as
// a space. decoded replaces each field's value by its decoded form.
func (s *state) headerText(decoded bool) []byte {
	if t, ok := s.hdr[decoded]; ok {
		return t
	}
	var t []byte
	if !decoded {
		h, _ := procmailAreas(s.msg)
		t = make([]byte, len(h))
		copy(t, h)
		for i := 0; i+1 < len(t); i++ {
			if t[i] == '\n' && (t[i+1] == ' ' || t[i+1] == '\t') {
				t[i] = ' '
				if i > 0 && t[i-1] == '\r' {
					t[i-1] = ' '
				}
			}
		}
	} else {
		var b bytes.Buffer
		if fl := s.view.FromLine(); fl != nil {
			b.Write(fl)
			b.WriteByte('\n')
		}
		fs := s.view.Fields()
		for i := range fs {
			b.Write(fs[i].NameBytes())
			b.WriteString(": ")
			b.WriteString(s.view.Decoded(&fs[i]))
			b.WriteByte('\n')
		}
		b.WriteByte('\n')
		t = b.Bytes()
	}
	if s.hdr == nil {
		s.hdr = make(map[bool][]byte, 2)
	}
	s.hdr[decoded] = t
	return t
}

func (s *state) addressCond(c *AddressCond) bool {
	for _, name := range c.Fields {
		for _, a := range s.view.Addresses(name) {
			switch c.Part {
			case "name":
				if s.match(c.Name, a.Name) {
					return true
				}
			case "address":
				if containsFold(c.Values, a.Addr()) {
					return true
				}
			case "local-part":
				if containsFold(c.Values, a.Local) {
					return true
				}
			case "domain":
				d := strings.ToLower(a.Domain)
				for _, want := range c.Values {
					if d == want || strings.HasSuffix(d, "."+want) {
						return true
					}
				}
			}
		}
	}
	return false
}

func (s *state) whyAddress(c *AddressCond) string {
	if !s.trace {
		return ""
	}
	var got []string
	for _, name := range c.Fields {
		for _, a := range s.view.Addresses(name) {
			got = append(got, a.Addr())
		}
	}
	want := strings.Join(c.Values, ", ")
	if c.Name != nil {
		want = c.Name.Source
	}
	return fmt.Sprintf("%s %s %s in %v", strings.Join(c.Fields, "/"), c.Part, want, got)
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// scoreCond adds each term's weight the way procmail's w^x does: the first
// match adds w, the k-th adds w*x^(k-1); conditions that are not regexes
// count once. As in procmail, an empty match with x >= 1 (infinitely many
// matches) adds ±2^31, and the total saturates at ±2147483647: once there,
// the remaining terms are not evaluated. ${score} is the total
// truncated toward zero, except that a total between 0 and 1 gives 1.
func (s *state) scoreCond(c *ScoreCond) (bool, string, error) {
	const limit = math.MaxInt32
	total := 0.0
	var parts []string
	for _, t := range c.Terms {
		k, err := s.count(t.Cond, t.Repeat != 0)
		if err != nil {
			return false, "", err
		}
		if k == 0 {
			continue
		}
		add := t.Weight
		if t.Repeat != 0 {
			switch {
			case t.Weight == 0:
				add = 0
			case k < 0: // an empty match repeats forever
				if t.Repeat >= 1 {
					// procmail adds 2^31: the total saturates unless
					// earlier terms pulled it the other way.
					add = math.Copysign(limit+1, t.Weight)
				} else {
					add = t.Weight / (1 - t.Repeat)
				}
			case t.Repeat == 1:
				add = t.Weight * float64(k)
			default:
				add = t.Weight * (1 - math.Pow(t.Repeat, float64(k))) / (1 - t.Repeat)
			}
		}
		if math.IsNaN(add) {
			add = 0
		}
		total += add
		if s.trace {
			times := strconv.Itoa(max(k, 1))
			if k < 0 {
				times = "∞"
			}
			parts = append(parts, fmt.Sprintf("%+g (line %d, %s×)", add, t.Line, times))
		}
		if total >= limit || total <= -limit {
			total = math.Copysign(limit, total)
			break
		}
	}
	n := int64(total)
	if total > 0 && total < 1 {
		n = 1
	}
	s.vars.set("score", variable{strconv.FormatInt(n, 10), false})
	ok := total > c.Above
	why := ""
	if s.trace {
		why = fmt.Sprintf("score %g > %g: %v [%s]", total, c.Above, ok, strings.Join(parts, " "))
	}
	return ok, why, nil
}

// count returns how many times c matches (regex conditions, when repeat
// is wanted), 1 or 0 otherwise, and -1 for a pattern that matches the
// empty string at the same place forever (procmail scores that as
// infinite).
func (s *state) count(c Cond, repeat bool) (int, error) {
	if repeat {
		var p *Pattern
		var texts []string
		var text []byte
		switch c := c.(type) {
		case *HeaderCond:
			p = c.Pattern
			for _, name := range c.Fields {
				for _, f := range s.view.Get(name) {
					texts = append(texts, s.fieldValue(f, c.Pattern.Raw))
				}
			}
		case *HeadersCond:
			p, text = c.Pattern, s.headerText(!c.Pattern.Raw)
		case *BodyCond:
			p = c.Pattern
			if c.Pattern.Raw {
				_, text = procmailAreas(s.msg)
			} else {
				texts = []string{s.view.BodyText()}
			}
		}
		if p != nil {
			return s.countMatches(p, text, texts), nil
		}
	}
	ok, _, err := s.cond(c)
	if err != nil || !ok {
		return 0, err
	}
	return 1, nil
}

// countMatches counts the matches of p in text and texts, -1 for
// infinitely many (see count).
func (s *state) countMatches(p *Pattern, text []byte, texts []string) int {
	re := s.regexp(p)
	if re == nil {
		return 0
	}
	n := 0
	if text != nil {
		if s.emptyMatch(p, re, len(text)) {
			return -1
		}
		n = len(re.FindAllIndex(text, -1))
	}
	for _, t := range texts {
		if s.emptyMatch(p, re, len(t)) {
			return -1
		}
		n += len(re.FindAllStringIndex(t, -1))
	}
	return n
}

// emptyMatch is p.emptyMatch, worked out again for a pattern with
// variables (re is this message's regexp).
func (s *state) emptyMatch(p *Pattern, re *regexp.Regexp, n int) bool {
	if p.tmpl == nil {
		return p.emptyMatch(n)
	}
	start, inside, end := emptyMatches(re.String())
	return start || end || n >= 2 && inside
}

// emptyMatch reports whether procmail's scoring loop finds an empty match
// of p in a search area of n bytes (and so scores it as infinite).
func (p *Pattern) emptyMatch(n int) bool {
	p.emptyOnce.Do(func() {
		p.emptyAtStart, p.emptyInside, p.emptyAtEnd = emptyMatches(p.expr)
	})
	return p.emptyAtStart || p.emptyAtEnd || n >= 2 && p.emptyInside
}

func (s *state) programCond(c *ProgramCond) (bool, string, error) {
	argv := s.argv(c.Argv)
	res, err := s.e.opts.Runner.Run(s.ctx, argv, s.programInput(c.Input), runprog.Options{Timeout: c.Timeout})
	if err != nil {
		return false, "", fmt.Errorf("program condition: %w", err)
	}
	return res.Exit == 0, fmt.Sprintf("program %s exited %d", argv[0], res.Exit), nil
}

func (s *state) dupCond(c *DuplicateCond) (bool, string, error) {
	key := dupKey(s.view, c.BodyHash)
	if key == "" {
		return false, "no Message-ID: not a duplicate", nil
	}
	path, err := s.dupPath(c)
	if err != nil {
		return false, "", err
	}
	dup, err := s.e.opts.Dup.Seen(path, key, c.Size)
	if err != nil {
		return false, "", err
	}
	if !dup {
		s.dec.Dups = append(s.dec.Dups, dupcache.Entry{Path: path, Key: key, Size: c.Size})
	}
	return dup, fmt.Sprintf("key %s in %s: duplicate=%v", key, path, dup), nil
}

// dupPath is the cache file of c. One named from message data is made
// safe as a folder name is, and must stay inside the mail directory and
// away from mfilter's own files.
func (s *state) dupPath(c *DuplicateCond) (string, error) {
	path, tainted := ".msgid.cache", false
	if c.Cache != nil {
		path, tainted = s.expand(c.Cache, cleanFolderPart)
	}
	if strings.HasPrefix(path, "~/") && strings.HasPrefix(c.Cache.Source, "~/") {
		path = s.vars.get("HOME").value + path[1:]
	}
	if !strings.HasPrefix(path, "/") {
		if base := s.vars.get("MAILDIR").value; base != "" {
			path = base + "/" + path
		}
	}
	if !tainted {
		return path, nil
	}
	rel, err := s.e.opts.Guard.Rel(path)
	if err != nil {
		return "", &TargetError{"duplicate cache " + err.Error()}
	}
	return filepath.Join(s.vars.get("MAILDIR").value, rel), nil
}

// homeFolder puts $HOME for the leading ~ of folder f, expanded from t,
// when the rules file wrote the ~ (message data never makes a home
// reference). The rest stays as written, trailing / or /. included.
func (s *state) homeFolder(t *Template, f string) string {
	if !strings.HasPrefix(t.Source, "~/") || !strings.HasPrefix(f, "~/") {
		return f
	}
	home := strings.TrimRight(s.vars.get("HOME").value, "/")
	if home == "" && s.vars.get("HOME").value == "" {
		return f
	}
	return home + f[1:]
}

// argv expands a command; message data in arguments is fine (no shell),
// but a NUL byte cannot be passed and is dropped. An optional argument
// that expands to nothing is left out.
func (s *state) argv(ts []*Template) []string {
	out := make([]string, 0, len(ts))
	for _, t := range ts {
		v, _ := s.expand(t, func(v string) string { return strings.ReplaceAll(v, "\x00", "") })
		if v == "" && t.Optional {
			continue
		}
		out = append(out, v)
	}
	return out
}

// cleanFolderPart makes message data safe inside a folder name: no path
// separators, no control characters (C0, DEL and C1: U+0085 and U+009B
// are line and escape controls too), and no leading dot, so that no
// message names ".", ".." or a hidden file such as ~/.bashrc.
func cleanFolderPart(v string) string {
	v = strings.Map(func(r rune) rune {
		if r == '/' || unicode.IsControl(r) {
			return '_'
		}
		return r
	}, v)
	if strings.HasPrefix(v, ".") {
		return "_" + v[1:]
	}
	return v
}

// cleanHeaderValue keeps message data from breaking out of a header field.
func cleanHeaderValue(v string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == 0 {
			return ' '
		}
		return r
	}, v)
}

func (s *state) action(r *Rule, a Action, depth int) error {
	label := r.stepLabel()
	switch a := a.(type) {
	case *FolderAction:
		return s.folderAction(r, a, depth)
	case *PipeAction:
		argv := s.argv(a.Argv)
		fb, err := s.fallbackSteps(r, a.Fallback, depth)
		if err != nil {
			return err
		}
		s.dec.Steps = append(s.dec.Steps, Step{Kind: StepPipe, Argv: argv, Timeout: a.Timeout, IgnoreExit: a.IgnoreExit, Copy: a.Continue, Msg: s.msg, Rule: label, Input: a.Input, Fallback: fb})
		s.tracef(depth, "pipe %q", argv)
		// As procmail's LASTFOLDER: the command after its |.
		s.vars.set(varLastFolder, variable{" " + strings.Join(argv, " "), true})
		if !a.Continue {
			s.done = true
		}
	case *ForwardAction:
		argv := append([]string(nil), s.e.sendmail...)
		if len(a.Sendmail) > 0 {
			argv = append([]string(nil), a.Sendmail...)
		}
		if a.Via == "mfilter" {
			argv = append([]string(nil), s.e.opts.MfilterSend...)
			if len(argv) == 0 {
				argv = append(argv, DefaultMfilterSend...)
			}
		}
		for _, t := range a.To {
			to, _ := s.expand(t, cleanHeaderValue)
			to = strings.TrimSpace(to)
			if to == "" || strings.HasPrefix(to, "-") {
				return &TargetError{fmt.Sprintf("forward: bad recipient %q", to)}
			}
			argv = append(argv, to)
		}
		fb, err := s.fallbackSteps(r, a.Fallback, depth)
		if err != nil {
			return err
		}
		s.dec.Steps = append(s.dec.Steps, Step{Kind: StepForward, Argv: argv, Copy: a.Continue, Msg: s.msg, Rule: label, Fallback: fb})
		s.tracef(depth, "forward %q", argv)
		if !a.Continue {
			s.done = true
		}
	case *DiscardAction:
		s.dec.Steps = append(s.dec.Steps, Step{Kind: StepDiscard, Msg: s.msg, Rule: label})
		s.tracef(depth, "discard")
		s.done = true
	case *StopAction:
		s.tracef(depth, "stop")
		if !s.delivered() {
			s.dec.Steps = append(s.dec.Steps, Step{Kind: StepFolder, Folder: s.e.opts.Default, Msg: s.msg, Rule: label, Default: true, Flags: s.flags, Keywords: s.keywords})
			s.tracef(depth, "=> default folder %s", s.e.opts.Default)
		}
		s.done = true
	case *HeaderAction:
		s.headerAction(a, depth)
	case *FilterAction:
		return s.filter(a, depth)
	case *ReplyAction:
		return s.reply(r, a, depth)
	case *SetAction:
		for _, v := range a.Vars {
			if err := s.setVar(v, depth); err != nil {
				return err
			}
		}
	case *LogAction:
		text, _ := s.expand(a.Text, cleanHeaderValue)
		s.dec.Logs = append(s.dec.Logs, text)
		s.tracef(depth, "log %q", text)
	case *FlagsAction:
		// Copies, so that a step made earlier keeps its own.
		s.flags = appendNew(slices.Clip(s.flags), a.Flags)
		s.keywords = appendNew(slices.Clip(s.keywords), a.Keywords)
		s.tracef(depth, "flags %s", strings.Join(append(append([]string(nil), s.flags...), s.keywords...), " "))
	default:
		return fmt.Errorf("unknown action %T", a)
	}
	return nil
}

// folderAction makes the steps of a folder: or copy: action.
func (s *state) folderAction(r *Rule, a *FolderAction, depth int) error {
	label := r.stepLabel()
	fb, err := s.fallbackSteps(r, a.Fallback, depth)
	if err != nil {
		return err
	}
	for _, t := range a.Folders {
		f, tainted := s.expand(t, cleanFolderPart)
		if f == "" {
			return &TargetError{fmt.Sprintf("folder %q expands to an empty name", t.Source)}
		}
		f = s.homeFolder(t, f)
		s.dec.Steps = append(s.dec.Steps, Step{Kind: StepFolder, Folder: f, Confined: tainted, Copy: a.Copy, Msg: s.msg, Rule: label, Flags: s.flags, Keywords: s.keywords, Fallback: fb})
		verb := "folder"
		if a.Copy {
			verb = "copy to"
		}
		s.tracef(depth, "%s %s", verb, f)
		s.vars.set(varLastFolder, variable{f, tainted})
	}
	if !a.Copy {
		s.done = true
	}
	return nil
}

// fallbackSteps makes the steps of a delivery's fallback actions, as
// they would be made in its place, without making them the message's.
func (s *state) fallbackSteps(r *Rule, acts []Action, depth int) ([]Step, error) {
	if len(acts) == 0 {
		return nil, nil
	}
	steps, done, last := s.dec.Steps, s.done, s.vars.get(varLastFolder)
	s.dec.Steps = nil
	s.tracef(depth, "if it fails:")
	var err error
	for _, a := range acts {
		if err = s.action(r, a, depth+1); err != nil {
			break
		}
	}
	fb := s.dec.Steps
	s.dec.Steps, s.done = steps, done
	s.vars.set(varLastFolder, last)
	return fb, err
}

// appendNew appends to list the words of add it does not hold yet.
func appendNew(list, add []string) []string {
	for _, w := range add {
		if !slices.Contains(list, w) {
			list = append(list, w)
		}
	}
	return list
}

// headerAction makes a header edit. A field name built from variables
// that is not one (RFC 5322: 1 to 76 printable characters but the
// colon) skips the edit, with a warning.
func (s *state) headerAction(a *HeaderAction, depth int) {
	name, ok := s.fieldName(a.Name, a.NameT)
	to, ok2 := s.fieldName(a.To, a.ToT)
	if !ok || !ok2 {
		return
	}
	field := ""
	if a.Field != nil {
		field, _ = s.expand(a.Field, cleanHeaderValue)
		if a.NameT != nil {
			field = name + field
		}
	}
	s.setMsg(editHeader(s.msg, a.Op, name, field, to))
	switch a.Op {
	case "remove":
		s.tracef(depth, "remove-header %s", name)
	case "rename":
		s.tracef(depth, "rename-header %s to %s", name, to)
	default:
		s.tracef(depth, "%s %q", headerActionName(a.Op), field)
	}
}

// maxFieldName is RFC 5322's bound on a field name (a line of 78
// characters holds the name, a colon and a blank).
const maxFieldName = 76

// fieldName is name, or t expanded and checked when the name is built
// from variables.
func (s *state) fieldName(name string, t *Template) (string, bool) {
	if t == nil {
		return name, true
	}
	n, _ := s.expand(t, nil)
	n = strings.TrimSuffix(strings.TrimRight(n, " \t"), ":")
	if len(n) > maxFieldName || !validFieldName(n) {
		s.warnf("%s: header field name %q from %q is not a field name: the edit is skipped", t.Pos, n, t.Source)
		return "", false
	}
	return n, true
}

// headerActionName is the rules' keyword for a header edit's Op.
func headerActionName(op string) string {
	if op == "add-if-missing" {
		return "add-header-if-missing"
	}
	return op + "-header"
}

// delivered reports whether a final delivery step exists.
func (s *state) delivered() bool {
	for _, st := range s.dec.Steps {
		if !st.Copy {
			return true
		}
	}
	return false
}

// filter replaces the message (or its header) by a program's output, as
// procmail's f flag does. A failure keeps the message as it was, or, with
// on-failure: retry, stops filing so that the message is tried again.
// With on-failure: use-output a program that ran to its end is taken at
// its word whatever its exit status, as procmail takes a filter's output
// without the w flag; one that could not start, timed out or printed too
// much still leaves the message as it was.
func (s *state) filter(a *FilterAction, depth int) error {
	argv := s.argv(a.Argv)
	prepared := mailfmt.ContentLengthFixed(s.msg, s.e.opts.Berkeley)
	v := msgview.New(prepared)
	input := mailfmt.PipeBytes(prepared, true)
	switch a.Input {
	case "header":
		input = v.Header()
	case "body":
		input = v.Body()
	}
	res, err := s.e.opts.Runner.Run(s.ctx, argv, input, runprog.Options{Timeout: a.Timeout, Stdout: true})
	if err == nil && res.Exit != 0 {
		if a.OnFailure == "use-output" {
			w := fmt.Sprintf("filter %s: its output is used (on-failure: use-output)", runprog.Describe(argv, res))
			s.dec.Warnings = append(s.dec.Warnings, w)
			s.tracef(depth, "%s", w)
		} else {
			err = errors.New(runprog.Describe(argv, res))
		}
	}
	if err != nil {
		if a.OnFailure == "retry" {
			return fmt.Errorf("filter: %w", err)
		}
		w := fmt.Sprintf("filter %s failed, message kept unfiltered: %v", argv[0], err)
		s.dec.Warnings = append(s.dec.Warnings, w)
		s.tracef(depth, "%s", w)
		return nil
	}
	out := res.Stdout
	switch a.Input {
	case "header":
		out = append(append([]byte(nil), out...), v.Body()...)
	case "body":
		out = append(append([]byte(nil), v.Header()...), out...)
	}
	s.setMsg(out)
	s.tracef(depth, "filter %q: message now %d bytes", argv, len(out))
	return nil
}
