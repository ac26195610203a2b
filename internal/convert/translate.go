package convert

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Options tell Convert about the machine the rules are for.
type Options struct {
	// Getenv gives HOME and LOGNAME, which procmail's defaults use.
	Getenv func(string) string
	// ReadFile reads an INCLUDERC target; nil: includes are not followed.
	ReadFile func(path string) ([]byte, error)
	// Sendmail, when set, replaces the sendmail: setting (mfilter
	// convert --verify points it at a recorder).
	Sendmail []string
	// Split writes every INCLUDERC target to a file of its own joined by
	// include:, instead of inlining it.
	Split bool
	// Home is the home directory the procmailrc was written for: the
	// settings and folders under it are written as ~/, so that they name
	// the same places under the HOME mfilter runs with. "": none.
	Home string
}

// OutFile is one YAML file written.
type OutFile struct {
	Name string // base name; the first file is the main one
	Text string
}

// Result is a conversion.
type Result struct {
	Files     []OutFile
	Recipes   int // every :0 seen, nested and included ones too
	Converted int
	Warnings  []string
	// Maildir is the maildir: setting ("" when the file sets none);
	// OrgmailDefault says the default: setting is procmail's $ORGMAIL
	// because the file sets no DEFAULT.
	Maildir        string
	OrgmailDefault bool
	// Log is the log: setting ("" when the file sets no LOGFILE).
	Log string
	// Folders are the folder names that hold no variable but ${HOME}
	// (relative ones are relative to Maildir).
	Folders []string
	// Programs are the programs the rcfile's commands run (the first
	// word of each simple command), sorted, without duplicates.
	Programs []string
	// MissingIncludes are the INCLUDERC lines whose files do not exist
	// (a fragment's including file would name them).
	MissingIncludes []string
}

// maxIncludes bounds the INCLUDERC depth.
const maxIncludes = 8

// Convert translates the procmailrc data (named name) into mfilter rules.
func Convert(name string, data []byte, opt Options) *Result {
	if opt.Getenv == nil {
		opt.Getenv = func(string) string { return "" }
	}
	g := &global{opt: opt, res: &Result{}, seenFiles: map[string]bool{}, outNames: map[string]bool{}, assigned: map[string]bool{}}
	main := g.newFile(name, data)
	main.top = true
	text := main.run()
	sort.Strings(g.res.Programs)
	g.res.Programs = slices.Compact(g.res.Programs)
	g.res.Files = append([]OutFile{{Name: outName(name, g.outNames), Text: text}}, g.res.Files...)
	return g.res
}

func (f *fileConv) sawProgram(name string) {
	if m := varProgram.FindStringSubmatch(name); m != nil {
		var ok bool
		if name, ok = f.programVar(m[1]+m[2], m[3]); !ok {
			return
		}
	}
	f.g.res.Programs = append(f.g.res.Programs, name)
}

// programVar is the program a variable names: its value when constant,
// the default when the rcfile never sets it, or "$NAME (not set in this
// file)" without a default: that program is not known here (a fragment
// whose including file sets it). ok is false when the value is only
// known when procmail runs.
func (f *fileConv) programVar(v, def string) (string, bool) {
	if c, ok := f.consts[v]; ok {
		return c, c != ""
	}
	switch {
	case v == "SENDMAIL" || v == "SHELL" || f.g.assigned[v]:
		return "", false
	case def != "":
		return def, true
	}
	return "$" + v + " (not set in this file)", true
}

// global is what the files of one conversion share.
type global struct {
	opt       Options
	res       *Result
	seenFiles map[string]bool
	outNames  map[string]bool
	assigned  map[string]bool // variables any file read so far assigns
	depth     int
}

func outName(name string, used map[string]bool) string {
	base := strings.TrimSuffix(filepath.Base(name), filepath.Ext(name))
	base = strings.TrimPrefix(base, ".")
	if base == "" {
		base = "procmailrc"
	}
	n := base + ".yaml"
	for i := 2; used[n]; i++ {
		n = fmt.Sprintf("%s-%d.yaml", base, i)
	}
	used[n] = true
	return n
}

// fileConv translates one procmailrc file.
type fileConv struct {
	g      *global
	name   string
	lines  []string
	ast    *File
	top    bool
	consts map[string]string // variables assigned once, to literal text, before any recipe
	counts map[string]int    // assignments per name
	env    map[string]bool   // referenced, never assigned: from the environment
	vars   mapping
	varSet map[string]bool // names assigned so far
	inVars map[string]bool // names in vars:
	// plainVals are the values, known when converting, of vars that
	// hold ${HOME} or other vars (for settings and INCLUDERC paths).
	plainVals map[string]string
	// settings
	maildir, def, log, sendmail string
	matchScope                  int  // > 0: inside a recipe that captures MATCH
	mentionsMatch               bool // the file uses $MATCH
	seenRecipe                  bool
}

func (g *global) newFile(name string, data []byte) *fileConv {
	f := &fileConv{g: g, name: name, ast: Parse(name, data), consts: map[string]string{},
		counts: map[string]int{}, env: map[string]bool{}, varSet: map[string]bool{}, inVars: map[string]bool{}, plainVals: map[string]string{}}
	f.lines = strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")
	f.mentionsMatch = regexp.MustCompile(`\$\{?MATCH\b`).Match(data)
	countAssigns(f.ast.Items, f.counts)
	for k := range f.counts {
		g.assigned[k] = true
	}
	return f
}

func countAssigns(items []Item, counts map[string]int) {
	for _, it := range items {
		switch x := it.(type) {
		case *Assign:
			counts[x.Name]++
		case *Recipe:
			if x.Action.Kind == ActCapture {
				counts[x.Action.Var]++
			}
			countAssigns(x.Action.Block, counts)
		}
	}
}

// countRecipes counts every recipe, nested ones too.
func countRecipes(items []Item) int {
	n := 0
	for _, it := range items {
		if r, ok := it.(*Recipe); ok {
			n += 1 + countRecipes(r.Action.Block)
		}
	}
	return n
}

func (f *fileConv) where(line int) string {
	return fmt.Sprintf("%s:%d", filepath.Base(f.name), line)
}

func (f *fileConv) warn(line int, format string, args ...any) {
	f.g.res.Warnings = append(f.g.res.Warnings, f.where(line)+": "+fmt.Sprintf(format, args...))
}

// run translates the file and returns its YAML text.
func (f *fileConv) run() string {
	f.g.res.Recipes += countRecipes(f.ast.Items)
	rules := f.level(f.ast.Items, nil)
	if f.top && f.def == "" {
		// procmail's DEFAULT is $ORGMAIL, /var/mail/$LOGNAME, when the
		// rcfile sets none.
		f.def = "/var/mail/" + f.g.opt.Getenv("LOGNAME")
		f.g.res.OrgmailDefault = true
	}
	if f.top {
		f.g.res.Maildir, f.g.res.Log = f.maildir, f.log
	}
	return f.render(rules)
}

func (f *fileConv) render(rules []*ruleOut) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Converted from %s by mfilter convert. Check it with mfilter check\n", filepath.Base(f.name))
	b.WriteString("# and compare with mfilter convert --verify before you switch.\n")
	if f.top {
		for _, s := range []struct{ k, v string }{{"maildir", f.maildir}, {"default", f.def}, {"log", f.log}} {
			if s.v != "" {
				b.WriteString(s.k + ": " + quote(s.v) + "\n")
			}
		}
		if s := f.g.opt.Sendmail; len(s) > 0 {
			b.WriteString("sendmail:")
			block(&b, argvSeq(s), 0)
		} else if f.sendmail != "" {
			b.WriteString("sendmail: [" + quote(f.sendmail) + ", '-oi']\n")
		}
	}
	vars := f.envVars()
	if f.mentionsMatch && !f.inVars["MATCH"] {
		// procmail's MATCH is empty until a \/ condition sets it.
		vars = append(vars, kv{"MATCH", ""})
	}
	vars = append(vars, f.vars...)
	if len(vars) > 0 {
		b.WriteString("vars:")
		block(&b, vars, 0)
	}
	if hasRule(rules) {
		b.WriteString("rules:\n")
	} else {
		b.WriteString("rules: []\n")
	}
	writeRules(&b, rules, 2)
	return b.String()
}

func hasRule(rules []*ruleOut) bool {
	for _, r := range rules {
		if r.m != nil {
			return true
		}
	}
	return false
}

// envVars defines the variables a procmailrc takes from its environment:
// procmail sees them empty unless set; mfilter needs them defined.
func (f *fileConv) envVars() mapping {
	var names []string
	for n := range f.env {
		if !f.varSet[n] {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var m mapping
	for _, n := range names {
		m = append(m, kv{n, ""})
	}
	return m
}

// level translates the statements of one nesting level.
func (f *fileConv) level(items []Item, parent *Recipe) []*ruleOut {
	var out []*ruleOut
	var pending []string
	lc := &levelCtx{}
	emit := func(r *ruleOut) {
		r.comments = append(pending, r.comments...)
		pending = nil
		out = append(out, r)
	}
	for _, it := range items {
		switch x := it.(type) {
		case *Comment:
			if x.Blank {
				if len(pending) > 0 || len(out) > 0 {
					pending = append(pending, "")
				}
				continue
			}
			pending = append(pending, strings.TrimRight("#"+strings.ToValidUTF8(x.Text, "?"), " \t"))
		case *Junk:
			f.warn(x.Line, "skipped (procmail skips it too): %s", x.Text)
			pending = append(pending, fmt.Sprintf("# not converted (%s): procmail skips this line: %s", f.where(x.Line), oneLine(x.Text)))
		case *Assign:
			if r := f.assign(x, parent); r != nil {
				emit(r)
			}
		case *Recipe:
			f.seenRecipe = true
			for _, r := range f.recipeItem(x, lc, &out) {
				emit(r)
			}
		}
	}
	if len(pending) > 0 {
		for len(pending) > 0 && pending[len(pending)-1] == "" {
			pending = pending[:len(pending)-1]
		}
		if len(pending) > 0 {
			out = append(out, &ruleOut{comments: pending})
		}
	}
	return out
}

func oneLine(s string) string {
	return strings.ReplaceAll(s, "\n", `\n`)
}

// source returns the recipe's lines as comments, for what is not
// converted.
func (f *fileConv) source(from, to int) []string {
	var out []string
	for l := from; l <= to && l <= len(f.lines); l++ {
		out = append(out, strings.TrimRight("#   "+f.lines[l-1], " \t"))
	}
	return out
}

// notConverted keeps a recipe as comments with the reason.
func (f *fileConv) notConverted(line, end int, reason string) *ruleOut {
	f.warn(line, "not converted: %s", reason)
	c := []string{fmt.Sprintf("# not converted (%s): %s", f.where(line), oneLine(reason))}
	return &ruleOut{comments: append(c, f.source(line, end)...)}
}

var errUnsupported = errors.New("unsupported")
