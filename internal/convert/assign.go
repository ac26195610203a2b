package convert

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
)

// mfilterBuiltins are mfilter's own variables: a procmail variable of the
// same name is renamed pm_NAME.
var mfilterBuiltins = map[string]bool{
	"sender": true, "recipient": true, "score": true, "size": true,
	"date": true, "reply_address": true, "last_folder": true, "match": true,
	"HOME": true, "USER": true, "LOGNAME": true, "HOST": true,
}

// procmailDefaults are the values procmail gives its variables when the
// rcfile does not set them (procmailrc(5), Environment variable defaults).
var procmailDefaults = map[string]string{
	"SHELL": "/bin/sh", "SHELLMETAS": "&|<>~;?*[", "SHELLFLAGS": "-c",
	"SENDMAIL": "/usr/sbin/sendmail", "SENDMAILFLAGS": "-oi", "MSGPREFIX": "msg.",
	"LOCKEXT": ".lock", "PROCMAIL_VERSION": "3.23pre", "COMSAT": "no",
}

// ignored are procmail settings that do not change where mail goes, or
// that mfilter does its own way.
var ignored = map[string]string{
	"VERBOSE": "mfilter test shows what the rules do", "LOGABSTRACT": "the log: setting always writes the abstract",
	"LINEBUF": "mfilter has no line buffer limit to set", "UMASK": "mfilter creates folders 0700 and files 0600",
	"COMSAT": "mfilter does not notify comsat", "LOCKFILE": "mfilter locks every mbox (dotlock and fcntl)",
	"LOCKEXT": "mfilter's dotlocks are NAME.lock", "LOCKTIMEOUT": "see --lock-timeout",
	"LOCKSLEEP": "see --lock-timeout", "TIMEOUT": "programs take timeout:", "NORESRETRY": "mfilter never retries in place",
	"SUSPEND": "mfilter never retries in place", "SHELLMETAS": "mfilter runs no shell of its own",
	"SHELLFLAGS": "mfilter runs no shell of its own", "SHELL": "mfilter runs no shell of its own",
	"PATH": "programs are looked up in mfilter's PATH", "DROPPRIVS": "mfilter never runs with others' privileges",
	"MSGPREFIX": "directory folders use msg.", "SENDMAILFLAGS": "forwards use the sendmail: setting",
	"ORGMAIL": "the default: setting is the last resort", "PROCMAIL_OVERFLOW": "procmail only",
	"SWITCHRC": "", "DELIVERED": "", "EXITCODE": "", "TRAP": "", "HOST": "",
}

// mfName is the mfilter name of a procmail variable.
func mfName(name string) string {
	if mfilterBuiltins[name] {
		return "pm_" + name
	}
	return name
}

// resolve implements expander for the file.
func (f *fileConv) resolve(name string, regex, quoted bool) ([]piece, error) {
	v := func(n string) []piece { return []piece{{isVar: true, name: n, raw: regex && !quoted}} }
	switch name {
	case "MATCH":
		if f.matchScope > 0 {
			return v("match"), nil
		}
		return v("MATCH"), nil
	case "LASTFOLDER":
		return v("last_folder"), nil
	case "HOME", "LOGNAME", "USER", "HOST", "MAILDIR", "DEFAULT":
		if f.counts[name] == 0 || name == "MAILDIR" || name == "DEFAULT" {
			return v(name), nil
		}
	}
	if c, ok := f.consts[name]; ok && regex {
		if quoted {
			return quoteRegexPieces([]piece{{text: c}}), nil
		}
		return []piece{{text: c}}, nil
	}
	if f.counts[name] == 0 {
		if d, ok := procmailDefaults[name]; ok {
			if regex && quoted {
				return quoteRegexPieces([]piece{{text: d}}), nil
			}
			return []piece{{text: d}}, nil
		}
		if name == "ORGMAIL" {
			return []piece{{text: "/var/mail/"}, {isVar: true, name: "LOGNAME", raw: false}}, nil
		}
		f.env[mfName(name)] = true
	}
	return v(mfName(name)), nil
}

// withDefault resolves ${NAME:-word} and ${NAME:+word}: a name the rcfile
// assigns is taken as set (a warning says so), one it never assigns as
// unset, as procmail sees it without such an environment variable.
func (f *fileConv) withDefault(name string, op byte, word string, regex bool) ([]piece, error) {
	// Set means assigned before this point of the file (or one of
	// procmail's own variables).
	c, isConst := f.consts[name]
	set := f.varSet[mfName(name)] || isConst || name == "HOME" || name == "LOGNAME" || name == "MAILDIR" || name == "DEFAULT"
	if op == '-' {
		switch {
		case isConst && c == "":
			return scanVars(word, true, regex, f)
		case !isConst && f.varSet[mfName(name)] && !regex && plainWord(word):
			// Assigned on some path only: decided when the rules run.
			return []piece{{isVar: true, name: mfName(name) + "|or " + word}}, nil
		case set:
			return f.resolve(name, regex, false)
		}
		return scanVars(word, true, regex, f)
	}
	if set {
		return scanVars(word, true, regex, f)
	}
	return nil, nil
}

// plainWord reports whether a default word is plain text the or filter
// can hold.
func plainWord(w string) bool {
	return w != "" && !strings.ContainsAny(w, "${}|`\\\"'")
}

// valueOf expands an assignment's value into pieces; backquoted commands
// become set actions of their own (returned) on variables named after the
// line.
func (f *fileConv) valueOf(a *Assign) ([]piece, []any, error) {
	return f.segsValue(a.Value, a.Line, a.Name)
}

// segsValue expands a word's segments; name, when the word is one
// backquoted command, is the variable its output goes to.
func (f *fileConv) segsValue(segs []Seg, line int, name string) ([]piece, []any, error) {
	var ps []piece
	var pre []any
	for i, s := range segs {
		switch s.Kind {
		case '\'':
			ps = append(ps, piece{text: s.Text})
		case '`':
			cmd, err := translateCommand(s.Text, f)
			if err != nil {
				return nil, nil, err
			}
			if format, ok := dateFormat(cmd); ok {
				ps = append(ps, piece{isVar: true, name: "date|strftime " + format})
				continue
			}
			if isReplyAddress(cmd) {
				ps = append(ps, piece{isVar: true, name: "reply_address"})
				continue
			}
			tmp := fmt.Sprintf("pm_output_%d_%d", line, i)
			if len(segs) == 1 && name != "" {
				tmp = mfName(name)
			}
			f.varSet[tmp] = true
			pre = append(pre, mapping{{"set", mapping{{tmp, mapping{{"output-of", cmd.seq()}, {"input", plain("message")}}}}}})
			ps = append(ps, piece{isVar: true, name: tmp})
		default:
			p, err := scanVars(s.Text, s.Kind == '"', false, f)
			if err != nil {
				return nil, nil, err
			}
			ps = append(ps, p...)
		}
	}
	return ps, pre, nil
}

// strftimeCodes are the codes mfilter's strftime filter knows.
const strftimeCodes = "YymdeHMSjaAbBZzs%"

// dateFormat recognizes `date +FORMAT` (a format mfilter's ${date|strftime}
// knows): the built-in date variable, without running a program.
func dateFormat(cmd command) (string, bool) {
	if cmd.Shell || len(cmd.Argv) != 2 || cmd.Argv[0] != "date" || !strings.HasPrefix(cmd.Argv[1], "+") {
		return "", false
	}
	format := cmd.Argv[1][1:]
	if strings.ContainsAny(format, "${}|") {
		return "", false
	}
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			continue
		}
		if i+1 >= len(format) || !strings.ContainsRune(strftimeCodes, rune(format[i+1])) {
			return "", false
		}
		i++
	}
	return format, true
}

// isReplyAddress recognizes `formail -rtzxTo:`, the address formail -rt
// would reply to: mfilter's reply_address.
func isReplyAddress(cmd command) bool {
	if cmd.Shell || len(cmd.Argv) < 2 || !isFormail(cmd.Argv[0]) {
		return false
	}
	args := strings.Join(cmd.Argv[1:], " ")
	return args == "-rtzxTo:" || args == "-rtzx To:" || args == "-rt -zxTo:" || args == "-rtzx To: " || args == "-rtzxTo: "
}

func argvSeq(argv []string) seq {
	out := make(seq, len(argv))
	for i, a := range argv {
		out[i] = a
	}
	return out
}

// assign translates VAR=value: a setting, a var, or a set rule.
func (f *fileConv) assign(a *Assign, parent *Recipe) *ruleOut {
	where := f.where(a.Line)
	src := fmt.Sprintf("# %s: %s", where, strings.TrimSpace(f.lines[a.Line-1]))
	if r, done := f.special(a, src, parent); done {
		return r
	}
	if a.Unset {
		return f.setRule(a, src, []piece{}, nil)
	}
	f.swallowed(a)
	ps, pre, err := f.valueOf(a)
	if err != nil {
		return f.skipAssign(a, err.Error())
	}
	if len(pre) == 0 && f.top && parent == nil && !f.seenRecipe && f.counts[a.Name] == 1 && f.varsReady(ps) {
		if lit, ok := literalOf(ps); ok {
			f.consts[a.Name] = lit
		} else if p, err := f.plainPath(a); err == nil {
			f.plainVals[mfName(a.Name)] = p
		}
		f.vars = append(f.vars, kv{mfName(a.Name), templateOf(ps)})
		f.varSet[mfName(a.Name)] = true
		f.inVars[mfName(a.Name)] = true
		return nil
	}
	return f.setRule(a, src, ps, pre)
}

// swallowed reports the recipes inside a quoted value that runs over
// several lines (an unterminated quote): procmail reads them as text, and
// so does the conversion, but they count among the recipes.
func (f *fileConv) swallowed(a *Assign) {
	for l := a.Line + 1; l <= a.End && l <= len(f.lines); l++ {
		s := strings.TrimLeft(f.lines[l-1], " \t{")
		if isRecipeStart(s) {
			f.g.res.Recipes++
			f.warn(l, "not converted: this recipe is inside the quoted value of %s (line %d), as procmail reads it too", a.Name, a.Line)
		}
	}
}

// varsReady reports whether a value can go into vars:, which may use only
// built-ins and the vars before it.
func (f *fileConv) varsReady(ps []piece) bool {
	for _, p := range ps {
		if p.isVar && !f.inVars[p.name] && !f.env[p.name] && !map[string]bool{"HOME": true, "USER": true, "LOGNAME": true, "HOST": true, "MAILDIR": true, "DEFAULT": true}[p.name] {
			return false
		}
	}
	return true
}

func (f *fileConv) setRule(a *Assign, src string, ps []piece, pre []any) *ruleOut {
	then := seq(pre)
	if len(pre) != 1 || len(a.Value) != 1 {
		then = append(then, mapping{{"set", mapping{{mfName(a.Name), templateOf(ps)}}}})
	}
	f.varSet[mfName(a.Name)] = true
	var v any = then
	if len(then) == 1 {
		v = then[0]
	}
	return &ruleOut{comments: []string{src}, m: mapping{{"then", v}}}
}

func (f *fileConv) skipAssign(a *Assign, reason string) *ruleOut {
	f.warn(a.Line, "not converted: %s", reason)
	return &ruleOut{comments: []string{fmt.Sprintf("# not converted (%s): %s", f.where(a.Line), oneLine(reason)), "#   " + strings.TrimSpace(f.lines[a.Line-1])}}
}

// special handles the variables that are procmail settings.
func (f *fileConv) special(a *Assign, src string, parent *Recipe) (*ruleOut, bool) {
	switch a.Name {
	case "MAILDIR", "DEFAULT", "LOGFILE":
		return f.setting(a, parent), true
	case "SENDMAIL":
		if p, err := f.plainPath(a); err == nil && f.top && parent == nil && f.counts[a.Name] == 1 {
			f.sendmail = p
			f.consts[a.Name] = p
			return nil, true
		}
	case "LOG":
		ps, pre, err := f.valueOf(a)
		if err != nil {
			return f.skipAssign(a, err.Error()), true
		}
		then := append(seq(pre), mapping{{"log", templateOf(ps)}})
		return &ruleOut{comments: []string{src}, m: mapping{{"then", then}}}, true
	case "INCLUDERC", "SWITCHRC":
		return f.include(a, parent), true
	}
	why, ok := ignored[a.Name]
	if !ok {
		return nil, false
	}
	if why == "" {
		return f.skipAssign(a, fmt.Sprintf("%s changes how procmail runs; mfilter has no equivalent", a.Name)), true
	}
	if a.Name == "HOST" || f.referenced(a.Name) {
		return nil, false
	}
	return &ruleOut{comments: []string{src + " (dropped: " + why + ")"}}, true
}

// referenced reports whether the file uses $NAME.
func (f *fileConv) referenced(name string) bool {
	for _, l := range f.lines {
		if strings.Contains(l, "$"+name) || strings.Contains(l, "${"+name) {
			return true
		}
	}
	return false
}

// plainPath expands a value that must be known when converting: a
// setting's path.
func (f *fileConv) plainPath(a *Assign) (string, error) {
	ps, pre, err := f.valueOf(a)
	if err != nil {
		return "", err
	}
	if len(pre) > 0 {
		return "", fmt.Errorf("%s is set from a program's output", a.Name)
	}
	var b strings.Builder
	for _, p := range ps {
		if !p.isVar {
			b.WriteString(p.text)
			continue
		}
		switch p.name {
		case "HOME":
			if b.Len() == 0 {
				b.WriteString("~")
				continue
			}
			b.WriteString(f.g.opt.Getenv("HOME"))
		case "LOGNAME", "USER":
			b.WriteString(f.g.opt.Getenv("LOGNAME"))
		case "MAILDIR":
			b.WriteString(f.maildir)
		default:
			c, ok := f.consts[p.name]
			if !ok {
				c, ok = f.plainVals[p.name]
			}
			if !ok && f.env[p.name] {
				// Never assigned here: empty, as procmail sees it
				// without such an environment variable.
				c, ok = "", true
				switch a.Name {
				case "MAILDIR", "DEFAULT", "LOGFILE", "INCLUDERC", "SENDMAIL":
					f.warn(a.Line, "$%s in %s is taken as empty (it is not set in this file)", p.name, a.Name)
				}
			}
			if !ok {
				name, _, _ := strings.Cut(p.name, "|")
				return "", fmt.Errorf("%s uses $%s, which is not known when converting", a.Name, name)
			}
			b.WriteString(c)
		}
	}
	return f.underHome(b.String()), nil
}

// underHome writes a path under Options.Home as ~/.
func (f *fileConv) underHome(p string) string {
	h := strings.TrimRight(f.g.opt.Home, "/")
	if h == "" {
		return p
	}
	if p == h {
		return "~/"
	}
	if rest, ok := strings.CutPrefix(p, h+"/"); ok {
		return "~/" + rest
	}
	return p
}

// setting reads MAILDIR, DEFAULT and LOGFILE into the settings.
func (f *fileConv) setting(a *Assign, parent *Recipe) *ruleOut {
	p, err := f.plainPath(a)
	if err != nil {
		return f.skipAssign(a, err.Error())
	}
	// Assignments before the first recipe set the setting (the last one
	// wins, as it would in procmail); later ones cannot change it.
	if !f.top || parent != nil || f.seenRecipe {
		r := f.skipAssign(a, fmt.Sprintf("%s is changed between recipes; mfilter has one %s setting", a.Name, strings.ToLower(a.Name)))
		if a.Name == "LOGFILE" && f.referenced(a.Name) {
			// The variable is still used: set it.
			ps, pre, err := f.valueOf(a)
			if err == nil {
				set := f.setRule(a, "", ps, pre)
				set.comments = r.comments
				return set
			}
		}
		return r
	}
	f.consts[a.Name] = p
	if a.Name == "LOGFILE" && f.referenced(a.Name) {
		f.vars = append(f.vars, kv{"LOGFILE", literalTemplate(p)})
		f.varSet["LOGFILE"] = true
		f.inVars["LOGFILE"] = true
	}
	switch a.Name {
	case "MAILDIR":
		f.maildir = p
	case "DEFAULT":
		f.def = p
	case "LOGFILE":
		f.log = p
	}
	return nil
}

// include translates INCLUDERC: the file inline, or with Split, a file of
// its own joined by include:.
func (f *fileConv) include(a *Assign, parent *Recipe) *ruleOut {
	if a.Name == "SWITCHRC" {
		return f.skipAssign(a, "SWITCHRC abandons the rest of this file; mfilter has no equivalent")
	}
	p, err := f.plainPath(a)
	if err != nil {
		return f.skipAssign(a, "INCLUDERC: "+err.Error())
	}
	if strings.HasPrefix(p, "~/") {
		p = filepath.Join(f.g.opt.Getenv("HOME"), p[2:])
	} else if !filepath.IsAbs(p) && f.maildir != "" {
		p = filepath.Join(strings.Replace(f.maildir, "~", f.g.opt.Getenv("HOME"), 1), p)
	}
	if f.g.opt.ReadFile == nil || f.g.depth >= maxIncludes || f.g.seenFiles[p] {
		return f.skipAssign(a, "INCLUDERC="+p+" is not followed")
	}
	data, err := f.g.opt.ReadFile(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			f.g.res.MissingIncludes = append(f.g.res.MissingIncludes, strings.TrimSpace(f.lines[a.Line-1]))
		}
		return f.skipAssign(a, fmt.Sprintf("INCLUDERC: %v", err))
	}
	f.g.seenFiles[p] = true
	f.g.depth++
	defer func() { f.g.depth-- }()
	sub := f.g.newFile(p, data)
	sub.maildir = f.maildir
	src := fmt.Sprintf("# %s: %s", f.where(a.Line), strings.TrimSpace(f.lines[a.Line-1]))
	if f.g.opt.Split {
		name := outName(p, f.g.outNames)
		f.g.res.Files = append(f.g.res.Files, OutFile{Name: name, Text: sub.run()})
		return &ruleOut{comments: []string{src}, m: mapping{{"include", name}}}
	}
	f.g.res.Recipes += countRecipes(sub.ast.Items)
	rules := sub.level(sub.ast.Items, nil)
	for k := range sub.env {
		f.env[k] = true
	}
	f.vars = append(f.vars, sub.vars...)
	for k := range sub.varSet {
		f.varSet[k] = true
	}
	return &ruleOut{comments: []string{src}, m: mapping{{"rules", rules}}}
}
