package rules

import (
	"fmt"
	"strings"
)

// Lint finds what is legal but almost surely not meant: rules that can
// never fire because an earlier rule with the same condition always
// delivers first, and conditions that hold for every message. check
// already refuses rules after an unconditional delivery; these are
// warnings, for mfilter check to print.
func Lint(cfg *Config) []*Error {
	var warns []*Error
	lintRules(cfg.Rules, &warns)
	return warns
}

func lintRules(rules []*Rule, warns *[]*Error) {
	delivering := make(map[string]*Rule) // condition key -> a rule that always delivers on it
	for _, r := range rules {
		key := condKey(r.If)
		if prev := delivering[key]; prev != nil && key != "" {
			*warns = append(*warns, &Error{r.Pos, fmt.Sprintf("rule %s can never run: %s has the same condition and always delivers first", r.Label(), ruleAt(prev))})
		}
		if why := alwaysTrue(r.If); why != "" {
			*warns = append(*warns, &Error{r.If.pos(), "this condition holds for every message: " + why})
		}
		if key != "" && finalDelivery(r.Then) && delivering[key] == nil {
			delivering[key] = r
		}
		lintRules(r.Rules, warns)
	}
}

func finalDelivery(acts []Action) bool {
	for _, a := range acts {
		if delivers(a) {
			return true
		}
	}
	return false
}

// condKey is a canonical text for c, equal for conditions that test the
// same thing the same way; "" for none or one it cannot compare.
func condKey(c Cond) string {
	pat := func(p *Pattern) string {
		if p == nil {
			return ""
		}
		return fmt.Sprintf("%q raw=%v cs=%v", p.Source, p.Raw, p.CaseSensitive)
	}
	switch c := c.(type) {
	case *HeaderCond:
		return "header " + strings.Join(c.Fields, ",") + " " + pat(c.Pattern)
	case *AddressCond:
		return fmt.Sprintf("address %s %s %q %s", strings.Join(c.Fields, ","), c.Part, c.Values, pat(c.Name))
	case *ListIDCond:
		return "list-id " + pat(c.Pattern)
	case *HeadersCond:
		return "headers " + pat(c.Pattern)
	case *BodyCond:
		return "body " + pat(c.Pattern)
	case *SizeCond:
		return fmt.Sprintf("size %s %d", c.Op, c.N)
	case *ExistsCond:
		return "exists " + strings.Join(c.Names, ",")
	case *EnvelopeCond:
		return "envelope " + c.Which + " " + pat(c.Pattern)
	case *AllCond, *AnyCond:
		return listKey(c)
	case *NotCond:
		if k := condKey(c.Cond); k != "" {
			return "not (" + k + ")"
		}
	}
	return ""
}

func listKey(c Cond) string {
	op, conds := "all", []Cond(nil)
	switch c := c.(type) {
	case *AllCond:
		conds = c.Conds
	case *AnyCond:
		op, conds = "any", c.Conds
	}
	parts := make([]string, len(conds))
	for i, cc := range conds {
		if parts[i] = condKey(cc); parts[i] == "" {
			return ""
		}
	}
	return op + " [" + strings.Join(parts, "; ") + "]"
}

// alwaysTrue says why c holds for every message, or "".
func alwaysTrue(c Cond) string {
	switch c := c.(type) {
	case *HeadersCond:
		if c.Pattern.matchesEmpty() {
			return fmt.Sprintf("the regex %q matches the empty string", c.Pattern.Source)
		}
	case *BodyCond:
		if c.Pattern.matchesEmpty() {
			return fmt.Sprintf("the regex %q matches the empty string", c.Pattern.Source)
		}
	case *SizeCond:
		if c.Op == ">" && c.N < 1 || c.Op == "<" && c.N >= maxSizeBound {
			return "every message's size is within it"
		}
	case *AnyCond:
		for _, cc := range c.Conds {
			if why := alwaysTrue(cc); why != "" {
				return why
			}
		}
	}
	return ""
}

// matchesEmpty reports whether p matches an empty text.
func (p *Pattern) matchesEmpty() bool {
	return p != nil && p.compiled().MatchString("")
}

// ruleAt names r with its line: `rule "spam" at line 4`, or `rule at
// line 4` when it has no name.
func ruleAt(r *Rule) string {
	if r.Name != "" {
		return fmt.Sprintf("rule %q at line %d", r.Name, r.Line)
	}
	return fmt.Sprintf("rule at line %d", r.Line)
}
