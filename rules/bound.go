package rules

import (
	"fmt"
	"strings"
)

// MaxExpansion bounds what one template may expand to. check refuses
// variables and templates that could grow past it (a chain of variables
// that each double the last reaches gigabytes in 30 steps); Expand cuts
// a value that does anyway, built from message data.
const MaxExpansion = 1 << 20

// maxDataCopies is how many copies of message data (a capture, the
// sender) one template may hold: each may be as large as the message.
const maxDataCopies = 16

// sizeBound is an upper bound on an expansion: lit bytes of literal text
// and data copies of message data. Both saturate instead of overflowing.
type sizeBound struct{ lit, data int64 }

func (a sizeBound) plus(b sizeBound) sizeBound {
	return sizeBound{satAdd(a.lit, b.lit), satAdd(a.data, b.data)}
}

func (a sizeBound) max(b sizeBound) sizeBound {
	return sizeBound{max(a.lit, b.lit), max(a.data, b.data)}
}

func (a sizeBound) tooLarge() bool { return a.lit > MaxExpansion || a.data > maxDataCopies }

func satAdd(a, b int64) int64 {
	if a > 1<<60-b {
		return 1 << 60
	}
	return a + b
}

// envSize bounds an environment built-in (HOME, USER, ...): a path.
const envSize = 4096

// varBounds tracks the bound of every variable while check walks the
// rules in file order: vars: first, then each set: as it comes.
type varBounds map[string]sizeBound

func (vb varBounds) of(name string) sizeBound {
	if b, ok := vb[name]; ok {
		return b
	}
	switch name {
	case "HOME", "USER", "LOGNAME", "HOST", "MAILDIR", "DEFAULT":
		return sizeBound{lit: envSize}
	case "score", "size", varDate:
		return sizeBound{lit: 32}
	case varLastFolder: // a folder name, which may hold message data
		return sizeBound{lit: envSize, data: 1}
	}
	// The sender, the recipient, a capture: message data.
	return sizeBound{data: 1}
}

func (vb varBounds) template(t *Template) sizeBound {
	var b sizeBound
	for _, p := range t.parts {
		if p.ref == nil {
			b = b.plus(sizeBound{lit: int64(len(p.lit))})
			continue
		}
		v := vb.of(p.ref.name)
		for _, f := range p.ref.filters {
			v = f.bound(v)
		}
		b = b.plus(v)
	}
	return b
}

// bound is how large f may make a value of bound v.
func (f filter) bound(v sizeBound) sizeBound {
	switch f.name {
	case "replace":
		if len(f.args[1]) > len(f.args[0]) {
			// Each byte may become len(new) bytes.
			grow := int64(len(f.args[1]))
			return sizeBound{satMul(v.lit, grow), satMul(v.data, grow)}
		}
	case "sub":
		// One match is replaced by the replacement's text and one copy
		// of the value for each group it names.
		copies := int64(strings.Count(f.repl, "$")) + 1
		return sizeBound{satAdd(satMul(v.lit, copies), int64(len(f.repl))), satMul(v.data, copies)}
	case "or":
		return sizeBound{max(v.lit, int64(len(f.args[0]))), v.data}
	case "strftime":
		// Each byte of the format makes at most the 20 of %s or %B.
		return sizeBound{lit: 20 * int64(len(f.args[0]))}
	}
	return v
}

func satMul(a, b int64) int64 {
	if b != 0 && a > (1<<60)/b {
		return 1 << 60
	}
	return a * b
}

// checkTemplateSize reports t when it could expand past the bounds.
func (vb varBounds) checkTemplateSize(t *Template, errs *ErrorList) sizeBound {
	b := vb.template(t)
	if b.tooLarge() {
		*errs = append(*errs, &Error{t.Pos, fmt.Sprintf("this can expand to more than %d bytes, or to more than %d copies of message data: variables that repeat other variables grow without bound", MaxExpansion, maxDataCopies)})
	}
	return b
}

// checkVarSize checks the templates of v and returns the bound of its
// value: a program's output is cut at MaxOutputOf.
func (vb varBounds) checkVarSize(v VarDef, errs *ErrorList) sizeBound {
	if v.Program == nil {
		return vb.checkTemplateSize(v.Value, errs)
	}
	for _, t := range v.Program.Argv {
		vb.checkTemplateSize(t, errs)
	}
	return sizeBound{lit: MaxOutputOf}
}

// checkSizes walks the vars and the rules in order and reports every
// template that could expand past the bounds.
func checkSizes(cfg *Config, errs *ErrorList) {
	vb := varBounds{}
	for _, v := range cfg.Vars {
		vb[v.Name.Value] = vb.checkVarSize(v, errs)
	}
	vb.checkRules(cfg.Rules, errs)
}

func (vb varBounds) checkRules(rules []*Rule, errs *ErrorList) {
	for _, r := range rules {
		for _, a := range r.Then {
			if s, ok := a.(*SetAction); ok {
				for _, v := range s.Vars {
					// A set: may or may not run: the larger bound holds.
					b := vb.checkVarSize(v, errs)
					if old, ok := vb[v.Name.Value]; ok {
						b = b.max(old)
					}
					vb[v.Name.Value] = b
				}
				continue
			}
			for _, t := range actionTemplates(a) {
				vb.checkTemplateSize(t, errs)
			}
		}
		vb.checkRules(r.Rules, errs)
	}
}
