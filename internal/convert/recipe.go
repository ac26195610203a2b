package convert

import (
	"fmt"
	"regexp"
	"strings"
)

// flags are a recipe's flags.
type flags struct {
	H, B, D, A, a, E, e, h, b, c, f, w, W, i, r bool
}

func parseFlags(s string) (flags, error) {
	var fl flags
	for _, c := range s {
		switch c {
		case 'H':
			fl.H = true
		case 'B':
			fl.B = true
		case 'D':
			fl.D = true
		case 'A':
			fl.A = true
		case 'a':
			fl.a = true
		case 'E':
			fl.E = true
		case 'e':
			fl.e = true
		case 'h':
			fl.h = true
		case 'b':
			fl.b = true
		case 'c':
			fl.c = true
		case 'f':
			fl.f = true
		case 'w':
			fl.w = true
		case 'W':
			fl.W = true
		case 'i':
			fl.i = true
		case 'r':
			fl.r = true
		default:
			return fl, fmt.Errorf("unknown flag %q", c)
		}
	}
	if !fl.H && !fl.B {
		fl.H = true
	}
	if !fl.h && !fl.b {
		fl.h, fl.b = true, true
	}
	return fl, nil
}

// levelCtx remembers, within one nesting level, what the A, a, E and e
// flags refer to.
type levelCtx struct {
	anchor     *ruleOut // the last rule without A or a
	anchorLine int
	anchorDel  bool     // it always delivers
	prev       *ruleOut // the rule of the previous recipe
	prevLine   int
	elseVar    string // the marker variable of an E chain
	replyGate  bool   // the previous recipe is an auto-reply's cache check
}

// recipeResult is a translated recipe.
type recipeResult struct {
	cond       any // nil: no conditions
	then       seq
	rules      []*ruleOut
	delivering bool // then always ends processing
	comments   []string
	replyGate  bool // a formail -rD cache check before an auto-reply
}

func flattenComments(rules []*ruleOut) []string {
	var out []string
	for _, r := range rules {
		for _, c := range r.comments {
			out = append(out, "  "+c)
		}
	}
	return out
}

// recipeItem translates a recipe, using the level context for A, a, E and
// e. It returns the items to add to the level (none when the recipe went
// into an earlier rule).
func (f *fileConv) recipeItem(r *Recipe, lc *levelCtx, out *[]*ruleOut) []*ruleOut {
	fl, err := parseFlags(r.Flags)
	if err != nil {
		lc.prev = nil
		return []*ruleOut{f.notConverted(r.Line, r.End, err.Error())}
	}
	if r.Missing {
		return []*ruleOut{f.notConverted(r.Line, r.End, "the recipe has no action line")}
	}
	res, err := f.translateRecipe(r, fl)
	if err != nil {
		lc.prev = nil
		return []*ruleOut{f.notConverted(r.Line, r.End, err.Error())}
	}
	ro := &ruleOut{comments: f.recipeComments(r)}
	gate := lc.replyGate
	lc.replyGate = res.replyGate
	switch {
	case fl.e && gate:
		// The reply after "formail -rD": it runs when the conditions of
		// the cache check held, as a nested rule.
		return f.chained(r, fl, res, ro, lc)
	case fl.A || fl.a:
		return f.chained(r, fl, res, ro, lc)
	case fl.e:
		return f.onFailure(r, res, ro, lc)
	case fl.E:
		f.elseRule(r, res, lc)
	default:
		lc.elseVar = ""
	}
	ro.m = res.mapping()
	ro.comments = append(ro.comments, res.comments...)
	f.g.res.Converted++
	lc.anchor, lc.anchorLine, lc.anchorDel = ro, r.Line, res.delivering
	lc.prev, lc.prevLine = ro, r.Line
	return []*ruleOut{ro}
}

func (f *fileConv) recipeComments(r *Recipe) []string {
	c := []string{fmt.Sprintf("# %s: %s", f.where(r.Line), strings.TrimSpace(f.lines[r.Line-1]))}
	for _, it := range r.Inside {
		if cm, ok := it.(*Comment); ok && !cm.Blank {
			c = append(c, strings.TrimRight("#"+cm.Text, " \t"))
		}
	}
	return c
}

func (res *recipeResult) mapping() mapping {
	var m mapping
	if res.cond != nil {
		m = append(m, kv{"if", res.cond})
	}
	if len(res.then) == 1 {
		m = append(m, kv{"then", res.then[0]})
	} else if len(res.then) > 1 {
		m = append(m, kv{"then", res.then})
	}
	if hasRule(res.rules) {
		m = append(m, kv{"rules", res.rules})
	} else if len(res.rules) > 0 {
		// Only comments inside: they go before the rule.
		res.comments = flattenComments(res.rules)
	}
	if len(m) == 0 || len(res.then) == 0 && !hasRule(res.rules) {
		// A recipe that does nothing mfilter sees (a copy to /dev/null,
		// a duplicate check that only marks): a no-op keeps its place
		// for A and E recipes after it.
		m = append(m, kv{"then", noop()})
	}
	return m
}

// chained puts an A or a recipe into the rules of the recipe it depends
// on, which run only when that recipe's conditions held.
func (f *fileConv) chained(r *Recipe, fl flags, res *recipeResult, ro *ruleOut, lc *levelCtx) []*ruleOut {
	if lc.anchor == nil || lc.anchor.m == nil {
		return []*ruleOut{f.notConverted(r.Line, r.End, "the A or a flag refers to no converted recipe before it")}
	}
	if lc.anchorDel {
		return []*ruleOut{f.notConverted(r.Line, r.End, fmt.Sprintf("runs only when the delivery of line %d failed, and a failed delivery never falls through in mfilter", lc.anchorLine))}
	}
	if fl.a && lc.prev != lc.anchor && lc.prev != nil && lc.prev.m == nil {
		return []*ruleOut{f.notConverted(r.Line, r.End, "the a flag depends on a recipe that was not converted")}
	}
	ro.m = res.mapping()
	ro.comments = append(ro.comments, res.comments...)
	f.g.res.Converted++
	for i, e := range lc.anchor.m {
		if e.k == "rules" {
			lc.anchor.m[i].v = append(e.v.([]*ruleOut), ro)
			lc.prev = ro
			return nil
		}
	}
	lc.anchor.m = append(dropNoop(lc.anchor.m), kv{"rules", []*ruleOut{ro}})
	lc.prev = ro
	return nil
}

// noop is the action of a rule that does nothing mfilter sees.
func noop() mapping { return mapping{{"set", mapping{{"pm_noop", ""}}}} }

// dropNoop removes the no-op then: of a rule that now has nested rules.
func dropNoop(m mapping) mapping {
	for i, e := range m {
		if e.k == "then" && isNoop(e.v) {
			return append(m[:i:i], m[i+1:]...)
		}
	}
	return m
}

func isNoop(v any) bool {
	set, ok := v.(mapping)
	if !ok || len(set) != 1 || set[0].k != "set" {
		return false
	}
	inner, ok := set[0].v.(mapping)
	return ok && len(inner) == 1 && inner[0].k == "pm_noop"
}

// onFailure makes an e recipe the fallback of the previous recipe's
// delivery.
func (f *fileConv) onFailure(r *Recipe, res *recipeResult, ro *ruleOut, lc *levelCtx) []*ruleOut {
	if lc.prev == nil || lc.prev.m == nil {
		return []*ruleOut{f.notConverted(r.Line, r.End, "the e flag refers to no converted recipe before it")}
	}
	if res.cond != nil || len(res.rules) > 0 {
		return []*ruleOut{f.notConverted(r.Line, r.End, "an e recipe with conditions or nested recipes has no mfilter equivalent (fallback: takes actions only)")}
	}
	var fb any = res.then
	if len(res.then) == 1 {
		fb = res.then[0]
	}
	if !attachFallback(lc.prev.m, fb) {
		return []*ruleOut{f.notConverted(r.Line, r.End, fmt.Sprintf("line %d has no delivery that could fail", lc.prevLine))}
	}
	f.g.res.Converted++
	lc.prev.comments = append(lc.prev.comments, ro.comments...)
	return nil
}

// attachFallback gives the last delivering action of a rule's then: a
// fallback.
func attachFallback(m mapping, fb any) bool {
	for i := range m {
		if m[i].k != "then" {
			continue
		}
		acts, ok := m[i].v.(seq)
		if !ok {
			acts = seq{m[i].v}
		}
		for j := len(acts) - 1; j >= 0; j-- {
			am, ok := acts[j].(mapping)
			if !ok || len(am) == 0 {
				continue
			}
			switch am[0].k {
			case "folder", "copy", "pipe", "forward":
				acts[j] = withFallback(am, fb)
				m[i].v = acts
				return true
			}
		}
	}
	return false
}

// withFallback adds fb as the fallback of action am, or of its fallback
// when it has one already (e after e).
func withFallback(am mapping, fb any) mapping {
	for k, e := range am {
		if e.k != "fallback" {
			continue
		}
		if inner, ok := e.v.(mapping); ok && len(inner) > 0 {
			am[k].v = withFallback(inner, fb)
			return am
		}
		return am
	}
	return append(am, kv{"fallback", fb})
}

// elseRule makes an E recipe run only when the recipes of its chain did
// not: the first of the chain sets a marker variable that the others test.
func (f *fileConv) elseRule(r *Recipe, res *recipeResult, lc *levelCtx) {
	if lc.elseVar == "" && lc.prev != nil && lc.prev.m != nil {
		lc.elseVar = fmt.Sprintf("pm_ran_%d", lc.prevLine)
		f.vars = append(f.vars, kv{lc.elseVar, ""})
		f.varSet[lc.elseVar] = true
		setMarker(lc.prev, lc.elseVar)
	}
	if lc.elseVar == "" {
		return
	}
	test := mapping{{"not", mapping{{"var", mapping{{lc.elseVar, "."}}}}}}
	res.cond = andCond(test, res.cond)
	res.then = append(seq{mapping{{"set", mapping{{lc.elseVar, "1"}}}}}, res.then...)
}

// setMarker makes a rule set name to 1 first thing when it runs.
func setMarker(ro *ruleOut, name string) {
	set := mapping{{"set", mapping{{name, "1"}}}}
	for i, e := range ro.m {
		if e.k == "then" {
			if s, ok := e.v.(seq); ok {
				ro.m[i].v = append(seq{set}, s...)
			} else {
				ro.m[i].v = seq{set, e.v}
			}
			return
		}
	}
	// A rule without then: gets one before its nested rules.
	var m mapping
	for _, e := range ro.m {
		if e.k == "rules" {
			m = append(m, kv{"then", set})
		}
		m = append(m, e)
	}
	if len(m) == len(ro.m) {
		m = append(m, kv{"then", set})
	}
	ro.m = m
}

// andCond joins two conditions.
func andCond(a, b any) any {
	if b == nil {
		return a
	}
	if l, ok := b.(seq); ok {
		return append(seq{a}, l...)
	}
	return seq{a, b}
}

// translateRecipe translates a recipe's conditions and action.
func (f *fileConv) translateRecipe(r *Recipe, fl flags) (*recipeResult, error) {
	capIdx := captureIndex(r.Conds)
	if capIdx >= 0 {
		f.matchScope++
		defer func() { f.matchScope-- }()
	}
	res := &recipeResult{}
	conds, err := f.conditions(r.Conds, fl, capIdx)
	if err != nil {
		return nil, err
	}
	res.cond = conds
	if capIdx >= 0 && f.mentionsMatch {
		res.then = append(res.then, mapping{{"set", mapping{{"MATCH", "${match}"}}}})
		f.varSet["MATCH"] = true
	}
	if err := f.action(r, fl, res); err != nil {
		return nil, err
	}
	return res, nil
}

// captureIndex is the index of the last condition that sets MATCH (a
// regex with \/ that is not negated), or -1.
func captureIndex(cs []Cond) int {
	idx := -1
	for i, c := range cs {
		t := strings.TrimLeft(c.Text, " \t")
		t = weightRE.ReplaceAllString(t, "")
		if strings.HasPrefix(t, "!") || strings.HasPrefix(t, "?") {
			continue
		}
		if strings.Contains(t, `\/`) {
			idx = i
		}
	}
	return idx
}

var weightRE = regexp.MustCompile(`^\s*(-?[0-9]*\.?[0-9]+)\s*\^\s*(-?[0-9]*\.?[0-9]+)\s*`)
