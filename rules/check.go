package rules

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
)

// builtinVars are always defined. Upper-case ones come from the
// environment and settings (as in procmail); lower-case ones describe the
// message being filed.
var builtinVars = map[string]bool{
	"HOME": true, "USER": true, "LOGNAME": true, "HOST": true, "MAILDIR": true, "DEFAULT": true,
	"sender": true, "recipient": true, "score": true, "size": true,
	varDate: true, varReplyAddress: true, varLastFolder: true,
}

// check finds what the loader cannot see in one node: variables used but
// never defined, and rules or actions that can never run.
func check(cfg *Config, errs *ErrorList) {
	known := make(map[string]bool)
	for k := range builtinVars {
		known[k] = true
	}
	env := make(map[string]bool)
	for k := range builtinVars {
		if strings.ToUpper(k) == k {
			env[k] = true
		}
	}
	for _, t := range cfg.Sendmail {
		checkTemplate(t, env, errs)
	}
	for _, v := range cfg.Vars {
		for _, t := range v.templates() {
			checkTemplate(t, known, errs)
		}
		known[v.Name.Value] = true
	}
	// set: may run in any rule, so its names are known everywhere.
	collectSets(cfg.Rules, known)
	checkRules(cfg.Rules, known, errs)
	if len(*errs) == 0 {
		checkSizes(cfg, errs)
	}
}

func collectSets(rules []*Rule, known map[string]bool) {
	for _, r := range rules {
		for _, a := range r.Then {
			if s, ok := a.(*SetAction); ok {
				for _, v := range s.Vars {
					known[v.Name.Value] = true
				}
			}
		}
		collectSets(r.Rules, known)
	}
}

func checkRules(rules []*Rule, known map[string]bool, errs *ErrorList) {
	var always *Rule
	for _, r := range rules {
		if always != nil {
			*errs = append(*errs, &Error{r.Pos, fmt.Sprintf("rule %s can never run: %s always delivers before it (make it a copy, or give it an if:)", r.Label(), ruleAt(always))})
			// Report each unreachable rule once, not its contents.
			continue
		}
		scope := known
		if caps := captures(r.If); len(caps) > 0 {
			scope = make(map[string]bool, len(known)+len(caps))
			for k := range known {
				scope[k] = true
			}
			for _, c := range caps {
				scope[c] = true
			}
		}
		checkCond(r.If, scope, errs)
		final := checkActions(r.Then, scope, errs)
		if final != nil && len(r.Rules) > 0 {
			*errs = append(*errs, &Error{r.Rules[0].Pos, fmt.Sprintf("nested rules of rule %s can never run: its then: always delivers first (line %d)", r.Label(), final.pos().Line)})
		} else {
			checkRules(r.Rules, scope, errs)
		}
		if r.If == nil && final != nil {
			always = r
		}
	}
}

// checkActions checks the variables of actions and that nothing follows a
// final delivery; it returns that delivery, if any.
func checkActions(acts []Action, scope map[string]bool, errs *ErrorList) Action {
	var final Action
	for _, a := range acts {
		if final != nil {
			*errs = append(*errs, &Error{a.pos(), fmt.Sprintf("this action never runs: the %s at line %d already delivered the message (use copy: to deliver and go on)", actionName(final), final.pos().Line)})
			break
		}
		tscope := scope
		if _, ok := a.(*ReplyAction); ok {
			// A reply's templates may name the original's subject.
			tscope = maps.Clone(scope)
			tscope["subject"] = true
		}
		for _, t := range actionTemplates(a) {
			checkTemplate(t, tscope, errs)
		}
		if f, ok := a.(*FolderAction); ok {
			for _, t := range f.Folders {
				if t.Literal() && namesRootDir(t.Source) {
					*errs = append(*errs, &Error{t.Pos, fmt.Sprintf("folder %q names the root directory", t.Source)})
				}
			}
		}
		if delivers(a) {
			final = a
		}
	}
	return final
}

func actionName(a Action) string {
	switch a.(type) {
	case *FolderAction:
		return "folder"
	case *PipeAction:
		return "pipe"
	case *ForwardAction:
		return "forward"
	case *DiscardAction:
		return "discard"
	}
	return "action"
}

// actionTemplates lists the templates of a and of its fallbacks.
func actionTemplates(a Action) []*Template {
	switch a := a.(type) {
	case *FolderAction:
		return withFallback(a.Folders, a.Fallback)
	case *PipeAction:
		return withFallback(a.Argv, a.Fallback)
	case *ForwardAction:
		return withFallback(a.To, a.Fallback)
	case *HeaderAction:
		var ts []*Template
		for _, t := range []*Template{a.Field, a.NameT, a.ToT} {
			if t != nil {
				ts = append(ts, t)
			}
		}
		return ts
	case *FilterAction:
		return a.Argv
	case *SetAction:
		var ts []*Template
		for _, v := range a.Vars {
			ts = append(ts, v.templates()...)
		}
		return ts
	case *LogAction:
		return []*Template{a.Text}
	case *ReplyAction:
		ts := slices.Clone(a.Addresses)
		for _, t := range []*Template{a.Text, a.Subject, a.From} {
			if t != nil {
				ts = append(ts, t)
			}
		}
		return ts
	}
	return nil
}

// ReplyStates lists the state directories of the reply actions, as
// written (relative ones are below the mail directory).
func (cfg *Config) ReplyStates() []string {
	var out []string
	var walk func([]*Rule)
	walk = func(rs []*Rule) {
		for _, r := range rs {
			for _, a := range r.Then {
				if ra, ok := a.(*ReplyAction); ok {
					out = append(out, ra.State)
				}
			}
			walk(r.Rules)
		}
	}
	walk(cfg.Rules)
	return out
}

func withFallback(ts []*Template, fb []Action) []*Template {
	for _, a := range fb {
		ts = append(slices.Clip(ts), actionTemplates(a)...)
	}
	return ts
}

func checkCond(c Cond, scope map[string]bool, errs *ErrorList) {
	for _, p := range condPatterns(c) {
		if p != nil && p.tmpl != nil {
			checkTemplate(p.tmpl, scope, errs)
		}
	}
	switch c := c.(type) {
	case *AllCond:
		for _, cc := range c.Conds {
			checkCond(cc, scope, errs)
		}
	case *AnyCond:
		for _, cc := range c.Conds {
			checkCond(cc, scope, errs)
		}
	case *NotCond:
		checkCond(c.Cond, scope, errs)
	case *ScoreCond:
		for _, t := range c.Terms {
			checkCond(t.Cond, scope, errs)
		}
	case *ProgramCond:
		for _, t := range c.Argv {
			checkTemplate(t, scope, errs)
		}
	case *DuplicateCond:
		if c.Cache != nil {
			checkTemplate(c.Cache, scope, errs)
		}
	case *VarCond:
		if !scope[c.Var] {
			*errs = append(*errs, unknownVar(c.Pos, c.Var, scope))
		}
	}
}

func checkTemplate(t *Template, scope map[string]bool, errs *ErrorList) {
	if t == nil {
		return
	}
	for _, r := range t.refs() {
		if !scope[r.name] {
			*errs = append(*errs, unknownVar(r.Pos, r.name, scope))
		}
	}
}

func unknownVar(p Pos, name string, scope map[string]bool) *Error {
	var names []string
	for k := range scope {
		names = append(names, k)
	}
	sort.Strings(names)
	msg := fmt.Sprintf("unknown variable %q", name)
	if s := suggest(name, names); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	} else {
		msg += " (define it under vars:, capture it with (?P<" + name + ">...) in this rule's if:, or use one of " + strings.Join(names, ", ") + ")"
	}
	return &Error{p, msg}
}

// condPatterns lists the patterns of c itself (not of the conditions
// inside it).
func condPatterns(c Cond) []*Pattern {
	switch c := c.(type) {
	case *HeaderCond:
		return []*Pattern{c.Pattern}
	case *ListIDCond:
		return []*Pattern{c.Pattern}
	case *HeadersCond:
		return []*Pattern{c.Pattern}
	case *BodyCond:
		return []*Pattern{c.Pattern}
	case *EnvelopeCond:
		return []*Pattern{c.Pattern}
	case *VarCond:
		return []*Pattern{c.Pattern}
	case *AddressCond:
		return []*Pattern{c.Name}
	}
	return nil
}

// captures lists the named groups of the patterns in c.
func captures(c Cond) []string {
	var out []string
	var walk func(Cond)
	walk = func(c Cond) {
		switch c := c.(type) {
		case *HeaderCond:
			out = append(out, c.Pattern.names...)
		case *ListIDCond:
			out = append(out, c.Pattern.names...)
		case *HeadersCond:
			out = append(out, c.Pattern.names...)
		case *BodyCond:
			out = append(out, c.Pattern.names...)
		case *EnvelopeCond:
			out = append(out, c.Pattern.names...)
		case *VarCond:
			out = append(out, c.Pattern.names...)
		case *AddressCond:
			if c.Name != nil {
				out = append(out, c.Name.names...)
			}
		case *AllCond:
			for _, cc := range c.Conds {
				walk(cc)
			}
		case *AnyCond:
			for _, cc := range c.Conds {
				walk(cc)
			}
		case *NotCond:
			// A negated condition that holds matched nothing to capture.
		case *ScoreCond:
			for _, t := range c.Terms {
				walk(t.Cond)
			}
		}
	}
	walk(c)
	return out
}

// DuplicateCaches lists the duplicate cache files the rules name without
// message data, as written (relative ones are below the mail directory),
// and the default one when a duplicate condition names none.
func (cfg *Config) DuplicateCaches() []string {
	var out []string
	var walk func([]*Rule)
	walk = func(rs []*Rule) {
		for _, r := range rs {
			walkConds(r.If, func(c Cond) {
				d, ok := c.(*DuplicateCond)
				switch {
				case !ok:
				case d.Cache == nil:
					out = append(out, ".msgid.cache")
				case d.Cache.Literal():
					out = append(out, d.Cache.Source)
				}
			})
			walk(r.Rules)
		}
	}
	walk(cfg.Rules)
	return out
}

// walkConds calls fn for c and every condition inside it.
func walkConds(c Cond, fn func(Cond)) {
	if c == nil {
		return
	}
	fn(c)
	switch c := c.(type) {
	case *AllCond:
		for _, cc := range c.Conds {
			walkConds(cc, fn)
		}
	case *AnyCond:
		for _, cc := range c.Conds {
			walkConds(cc, fn)
		}
	case *NotCond:
		walkConds(c.Cond, fn)
	case *ScoreCond:
		for _, t := range c.Terms {
			walkConds(t.Cond, fn)
		}
	}
}
