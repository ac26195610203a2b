// Package rules loads mfilter's YAML rules, checks them before any mail is
// touched, and evaluates a message against them to a Decision: where the
// message goes, with a trace of why. It never writes mail itself.
//
// See mfilter-rules(5) for the language and its evaluation model.
package rules

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Pos is a place in a rules file.
type Pos struct {
	File      string
	Line, Col int
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col) }

// Error is one problem in a rules file.
type Error struct {
	Pos Pos
	Msg string
}

func (e *Error) Error() string { return e.Pos.String() + ": " + e.Msg }

// ErrorList is every problem found in a rules file, in file order.
type ErrorList []*Error

func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// InsecureError refuses a rules file that others could change (exit 77).
type InsecureError struct {
	Path   string
	Reason string
}

func (e *InsecureError) Error() string {
	return fmt.Sprintf("%s: refusing insecure rules file: %s", e.Path, e.Reason)
}

// TargetError is a folder name or forward address built while evaluating
// a message that cannot be used (empty, or not an address). Evaluating
// the same message again gives the same error: an MDA keeps the message
// in the default folder instead of asking for a retry.
type TargetError struct{ Msg string }

func (e *TargetError) Error() string { return e.Msg }

// Str is a string with the place it came from.
type Str struct {
	Pos
	Value string
}

// Config is a loaded rules file.
type Config struct {
	Path      string
	Maildir   *Str // base of relative folders
	Default   *Str // folder for mail no rule delivers
	Log       *Str
	LogFormat *Str        // "procmail" (default) or "json"
	Sendmail  []*Template // may use the environment built-ins
	// TrustedAuthServIDs are the authserv-ids whose Authentication-Results
	// fields auth-results conditions believe.
	TrustedAuthServIDs []Str
	Vars               []VarDef
	Rules              []*Rule
	// Sections holds the top-level sections other packages read (fetch,
	// send), still as YAML, with their positions.
	Sections map[string]*Section
}

// VarDef is an entry of the top-level vars mapping or of a set: action.
type VarDef struct {
	Name  Str
	Value *Template // nil when Program sets it
	// Program sets the variable from its output (procmail's VAR=|cmd
	// and backticks).
	Program *OutputOf
}

// OutputOf runs a program for a variable's value.
type OutputOf struct {
	Pos
	Argv    []*Template
	Input   string // message, header, body, none
	Timeout time.Duration
}

// templates lists the templates of v.
func (v VarDef) templates() []*Template {
	if v.Program != nil {
		return v.Program.Argv
	}
	return []*Template{v.Value}
}

// Rule is one rule: when If holds, Then runs, then the nested Rules.
type Rule struct {
	Pos
	Name  string
	If    Cond // nil: always
	Then  []Action
	Rules []*Rule

	label string // stepLabel, made when the rule is loaded
}

// stepLabel names the rule in the steps it makes: its name, else where
// it is.
func (r *Rule) stepLabel() string {
	switch {
	case r.label != "":
		return r.label
	case r.Name != "":
		return r.Name
	}
	return r.Pos.String()
}

// Label names a rule in traces and errors.
func (r *Rule) Label() string {
	if r.Name != "" {
		return fmt.Sprintf("%q", r.Name)
	}
	return fmt.Sprintf("at line %d", r.Line)
}

// Pattern is a checked regular expression with how to apply it. Loading
// parses it (which finds every error Go's regexp reports); the regexp
// itself is compiled when a message first needs it: an MDA starts once
// per message, and most patterns never get past their prefilter or
// their field's absence, so compiling them all up front was most of the
// rules' load time.
type Pattern struct {
	Pos
	Source        string
	Raw           bool // match the raw text (no RFC 2047/MIME decoding)
	CaseSensitive bool
	expr          string // what the regexp is compiled from: Source with flags and macros
	// tmpl is set when Source holds ${variables}: the regexp is then
	// made for each message (Engine.patterns caches them), from tmpl
	// expanded and opts.
	tmpl   *Template
	opts   patternOpts
	reOnce sync.Once
	re     *regexp.Regexp // set by compiled()
	pre    *prefilter     // a literal every match contains, or nil
	names  []string       // named capture groups
	// Where an empty match is possible, as procmail's scoring sees it
	// (see emptyMatches), set on first use by emptyMatch.
	emptyOnce                             sync.Once
	emptyAtStart, emptyInside, emptyAtEnd bool
}

// compiled returns p's regexp, compiling it on first use. The
// expression parsed when the rules were loaded, and compiling a parsed
// expression cannot fail.
func (p *Pattern) compiled() *regexp.Regexp {
	p.reOnce.Do(func() { p.re = regexp.MustCompile(p.expr) })
	return p.re
}

// Cond is a condition.
type Cond interface {
	pos() Pos
}

type (
	// HeaderCond matches a regex against the values of named fields.
	HeaderCond struct {
		Pos
		Fields  []string // lower-case field names; any may match
		Pattern *Pattern
	}
	// AddressCond tests one part of the addresses in fields.
	AddressCond struct {
		Pos
		Fields []string
		Part   string   // address, domain, local-part, name
		Values []string // literal, lower-cased (address, domain, local-part)
		Name   *Pattern // for part "name"
	}
	// ListIDCond matches the RFC 2919 list identifier.
	ListIDCond struct {
		Pos
		Pattern *Pattern
	}
	// HeadersCond matches procmail-style against the whole header.
	HeadersCond struct {
		Pos
		Pattern *Pattern
	}
	// BodyCond matches the body (decoded text, or raw).
	BodyCond struct {
		Pos
		Pattern *Pattern
	}
	// SizeCond compares the message size.
	SizeCond struct {
		Pos
		Op string // "<" or ">"
		N  int64
	}
	// ExistsCond holds when every named field is present.
	ExistsCond struct {
		Pos
		Names []string
	}
	// EnvelopeCond matches the envelope sender or recipient.
	EnvelopeCond struct {
		Pos
		Which   string // "from" or "to"
		Pattern *Pattern
	}
	// VarCond matches a variable's value (procmail VAR ?? regex).
	VarCond struct {
		Pos
		Var     string
		Pattern *Pattern
	}
	AllCond struct {
		Pos
		Conds []Cond
	}
	AnyCond struct {
		Pos
		Conds []Cond
	}
	NotCond struct {
		Pos
		Cond Cond
	}
	// ScoreCond adds weights (procmail w^x) and holds when the total is
	// above a threshold.
	ScoreCond struct {
		Pos
		Above float64
		Terms []ScoreTerm
	}
	// ProgramCond runs a program with the message on stdin; exit 0 holds.
	ProgramCond struct {
		Pos
		Argv    []*Template
		Timeout time.Duration
		Input   string // message (""), header, body or none
	}
	// DuplicateCond holds when the message was seen before (formail -D).
	DuplicateCond struct {
		Pos
		Cache    *Template
		Size     int64
		BodyHash bool // fall back to a body hash for messages without Message-ID
	}
	// DKIMCond verifies DKIM signatures.
	DKIMCond struct {
		Pos
		Result string // pass, fail, none
		Domain string // signing domain that must pass; "" any
	}
	// AuthResultsCond reads trusted Authentication-Results fields.
	AuthResultsCond struct {
		Pos
		Method string // dkim, spf, dmarc
		Result string
	}
)

// ScoreTerm is one weighted condition.
type ScoreTerm struct {
	Pos
	Weight float64
	Repeat float64 // procmail's x: later matches add Weight*Repeat^(k-1)
	Cond   Cond
}

func (c *HeaderCond) pos() Pos      { return c.Pos }
func (c *AddressCond) pos() Pos     { return c.Pos }
func (c *ListIDCond) pos() Pos      { return c.Pos }
func (c *HeadersCond) pos() Pos     { return c.Pos }
func (c *BodyCond) pos() Pos        { return c.Pos }
func (c *SizeCond) pos() Pos        { return c.Pos }
func (c *ExistsCond) pos() Pos      { return c.Pos }
func (c *EnvelopeCond) pos() Pos    { return c.Pos }
func (c *VarCond) pos() Pos         { return c.Pos }
func (c *AllCond) pos() Pos         { return c.Pos }
func (c *AnyCond) pos() Pos         { return c.Pos }
func (c *NotCond) pos() Pos         { return c.Pos }
func (c *ScoreCond) pos() Pos       { return c.Pos }
func (c *ProgramCond) pos() Pos     { return c.Pos }
func (c *DuplicateCond) pos() Pos   { return c.Pos }
func (c *DKIMCond) pos() Pos        { return c.Pos }
func (c *AuthResultsCond) pos() Pos { return c.Pos }

// Action is a step of a rule's then list.
type Action interface {
	pos() Pos
}

type (
	// FolderAction delivers to folders; Copy carries on afterwards.
	FolderAction struct {
		Pos
		Folders  []*Template
		Copy     bool
		Fallback []Action // run when the delivery fails (procmail's e flag)
	}
	// PipeAction runs a program with the message on stdin and waits.
	PipeAction struct {
		Pos
		Argv       []*Template
		Timeout    time.Duration
		Continue   bool
		IgnoreExit bool
		Input      string // message, header or body
		Fallback   []Action
	}
	// ForwardAction resends the message through a sendmail program.
	ForwardAction struct {
		Pos
		To       []*Template
		Sendmail []string
		Via      string // "mfilter": through mfilter send, the SSH relay
		Continue bool
		Fallback []Action
	}
	// DiscardAction drops the message; it counts as delivered.
	DiscardAction struct{ Pos }
	// StopAction ends rule processing; undelivered mail goes to default.
	StopAction struct{ Pos }
	// HeaderAction edits the header the way formail does.
	HeaderAction struct {
		Pos
		Op    string    // add, add-if-missing, set, supersede, remove, rename
		Field *Template // "Name: value" (add, add-if-missing, set, supersede)
		Name  string    // the field name
		To    string    // rename: the new name
		// NameT and ToT are set instead of Name and To when the name is
		// built from variables: checked when expanded. Field is then the
		// colon and the value only.
		NameT, ToT *Template
	}
	// FilterAction replaces the message with a program's output.
	FilterAction struct {
		Pos
		Argv    []*Template
		Timeout time.Duration
		// Input is what the program reads and its output replaces:
		// message, header (header-only: true) or body.
		Input     string
		OnFailure string // "keep" (default), "retry" or "use-output"
	}
	// SetAction assigns variables.
	SetAction struct {
		Pos
		Vars []VarDef
	}
	// LogAction writes a line to the log.
	LogAction struct {
		Pos
		Text *Template
	}
	// FlagsAction sets flags (seen, answered, flagged, deleted, draft)
	// and keywords on the deliveries that follow it.
	FlagsAction struct {
		Pos
		Flags    []string
		Keywords []string
	}
)

// ReplyAction sends an automatic reply (RFC 3834, Sieve vacation);
// processing goes on.
type ReplyAction struct {
	Pos
	Text      *Template // or File
	File      *Str
	Subject   *Template // nil: "Auto: " and the original subject
	From      *Template // nil: the envelope recipient, else USER@HOST
	Addresses []*Template
	Days      int
	State     string // the state directory, below the mail directory unless absolute
	Via       string // sendmail or mfilter
}

func (a *ReplyAction) pos() Pos { return a.Pos }

func (a *FolderAction) pos() Pos  { return a.Pos }
func (a *PipeAction) pos() Pos    { return a.Pos }
func (a *ForwardAction) pos() Pos { return a.Pos }
func (a *DiscardAction) pos() Pos { return a.Pos }
func (a *StopAction) pos() Pos    { return a.Pos }
func (a *HeaderAction) pos() Pos  { return a.Pos }
func (a *FilterAction) pos() Pos  { return a.Pos }
func (a *SetAction) pos() Pos     { return a.Pos }
func (a *LogAction) pos() Pos     { return a.Pos }
func (a *FlagsAction) pos() Pos   { return a.Pos }

// delivers reports whether an action ends processing when it succeeds.
func delivers(a Action) bool {
	switch a := a.(type) {
	case *FolderAction:
		return !a.Copy
	case *PipeAction:
		return !a.Continue
	case *ForwardAction:
		return !a.Continue
	case *DiscardAction:
		return true
	}
	return false
}
