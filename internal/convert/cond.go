package convert

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// conditions translates a recipe's conditions into one mfilter condition
// (nil when there are none): weighted ones form one score.
func (f *fileConv) conditions(cs []Cond, fl flags, capIdx int) (any, error) {
	var all seq
	var terms, either seq
	orForm := onlyOnce(cs)
	for i, c := range cs {
		text := c.Text
		var w, x string
		if m := weightRE.FindStringSubmatch(text); m != nil {
			w, x = m[1], m[2]
			text = text[len(m[0]):]
		}
		cond, err := f.condition(text, fl, i == capIdx, w != "" && !orForm)
		if err != nil {
			return nil, fmt.Errorf("condition at line %d: %v", c.Line, err)
		}
		if cond == nil {
			if w != "" && orForm {
				// An empty regex matches: the score is above 0.
				either = append(either, nil)
			}
			continue
		}
		if w == "" {
			all = append(all, cond)
			continue
		}
		if orForm {
			either = append(either, cond)
			continue
		}
		term := mapping{{"weight", plain(w)}}
		if x != "0" && x != "" {
			term = append(term, kv{"repeat", plain(x)})
		}
		term = append(term, cond.(mapping)...)
		terms = append(terms, term)
	}
	if len(terms) > 0 {
		all = append(all, mapping{{"score", mapping{{"terms", terms}}}})
	}
	if c, ok := anyOf(either); ok {
		all = append(all, c)
	}
	switch len(all) {
	case 0:
		return nil, nil
	case 1:
		return all[0], nil
	}
	return all, nil
}

// onlyOnce reports whether the recipe's weighted conditions all add a
// positive weight once (w^0): the score is then above 0 when any of them
// holds, negated ones included, and they translate as any:.
func onlyOnce(cs []Cond) bool {
	n := 0
	for _, c := range cs {
		m := weightRE.FindStringSubmatch(c.Text)
		if m == nil {
			continue
		}
		w, err := strconv.ParseFloat(m[1], 64)
		if err != nil || w <= 0 || m[2] != "0" {
			return false
		}
		n++
	}
	return n > 0
}

// anyOf is the any: of the conditions of an onlyOnce score; a nil one
// always holds, and so does the whole. ok is false without conditions or
// when one always holds.
func anyOf(cs seq) (any, bool) {
	if len(cs) == 0 {
		return nil, false
	}
	for _, c := range cs {
		if c == nil {
			return nil, false
		}
	}
	if len(cs) == 1 {
		return cs[0], true
	}
	return mapping{{"any", cs}}, true
}

// condition translates one condition line (without its * and weight).
func (f *fileConv) condition(text string, fl flags, capture, weighted bool) (any, error) {
	neg, dollar := false, false
	for {
		text = strings.TrimLeft(text, " \t")
		switch {
		case strings.HasPrefix(text, "!"):
			neg = !neg
			text = text[1:]
			continue
		case strings.HasPrefix(text, "$"):
			dollar = true
			text = text[1:]
			continue
		}
		break
	}
	if dollar {
		// procmail expands the line, then reads it again: the result
		// may start with ! or ? itself.
		ps, err := scanVars(text, true, true, f)
		if err != nil {
			return nil, err
		}
		if lit, ok := literalOf(ps); ok {
			c, err := f.condition(lit, fl, capture, weighted)
			if err == nil && c != nil && neg {
				c = mapping{{"not", c}}
			}
			return c, err
		}
	}
	var c any
	var err error
	switch {
	case strings.HasPrefix(text, "?"):
		if weighted {
			return nil, fmt.Errorf("a weighted program condition adds its exit status to the score; mfilter's score cannot")
		}
		c, err = f.programCond(strings.TrimSpace(text[1:]))
	case strings.HasPrefix(text, "<") || strings.HasPrefix(text, ">"):
		if weighted {
			return nil, fmt.Errorf("a weighted size condition scores by a ratio; mfilter's score cannot")
		}
		n := strings.TrimSpace(text[1:])
		if _, e := strconv.ParseUint(n, 10, 63); e != nil {
			return nil, fmt.Errorf("size %q is not a number", n)
		}
		c = mapping{{"size", text[:1] + " " + n}}
	default:
		c, err = f.regexCond(text, fl, capture && !neg, dollar)
	}
	if err != nil || c == nil {
		return c, err
	}
	if neg {
		if weighted {
			return nil, fmt.Errorf("a negated weighted condition has no mfilter equivalent")
		}
		c = mapping{{"not", c}}
	}
	return c, nil
}

func (f *fileConv) programCond(cmdText string) (any, error) {
	cmd, err := translateCommand(cmdText, f)
	if err != nil {
		return nil, err
	}
	return mapping{{"program", cmd.seq()}}, nil
}

// regexCond translates a regex condition, VAR ?? regex included.
func (f *fileConv) regexCond(text string, fl flags, capture, dollar bool) (any, error) {
	area := ""
	if k := strings.Index(text, "??"); k > 0 && nameLen(strings.TrimSpace(text[:k])) == len(strings.TrimSpace(text[:k])) {
		area = strings.TrimSpace(text[:k])
		text = strings.TrimLeft(text[k+2:], " \t")
	}
	text = strings.TrimRight(text, " \t")
	if area == "" && strings.HasPrefix(text, `\`) {
		// procmail always drops a leading backslash (it quotes ! $ ? < >).
		text = text[1:]
	}
	var pieces []piece
	if dollar {
		var err error
		if pieces, err = scanVars(text, true, true, f); err != nil {
			return nil, err
		}
	} else {
		pieces = []piece{{text: text}}
	}
	if len(pieces) == 0 || len(pieces) == 1 && !pieces[0].isVar && pieces[0].text == "" {
		return nil, nil // an empty regex always matches
	}
	inH, inB := fl.H, fl.B
	switch area {
	case "":
	case "H":
		inH, inB = true, false
	case "B":
		inH, inB = false, true
	case "HB", "BH":
		inH, inB = true, true
	default:
		p, err := f.pattern(pieces, fl, capture, true, false)
		if err != nil {
			return nil, err
		}
		return mapping{{"var", mapping{{f.varName(area), p}}}}, nil
	}
	var cs seq
	if inH {
		p, err := f.pattern(pieces, fl, capture, false, false)
		if err != nil {
			return nil, err
		}
		cs = append(cs, mapping{{"headers", p}})
	}
	if inB {
		p, err := f.pattern(pieces, fl, capture, true, true)
		if err != nil {
			return nil, err
		}
		cs = append(cs, mapping{{"body", p}})
	}
	if len(cs) == 1 {
		return cs[0], nil
	}
	return mapping{{"any", cs}}, nil
}

// varName is the mfilter name of a variable a condition tests.
func (f *fileConv) varName(name string) string {
	ps, _ := f.resolve(name, false, false)
	if len(ps) == 1 && ps[0].isVar {
		return ps[0].name
	}
	f.env[name] = true
	return mfName(name)
}

// pattern builds the pattern value: the regex, with case-sensitive: and
// raw: when they apply.
func (f *fileConv) pattern(pieces []piece, fl flags, capture, expand, raw bool) (any, error) {
	if expand {
		ps := make([]piece, len(pieces))
		for i, p := range pieces {
			if !p.isVar {
				p.text = expandMacros(p.text)
			}
			ps[i] = p
		}
		pieces = ps
	}
	re := translateRegex(pieces, capture)
	if err := checkRegex(re); err != nil {
		return nil, err
	}
	if !fl.D && !raw {
		return re, nil
	}
	m := mapping{{"regex", re}}
	if raw {
		m = append(m, kv{"raw", plain("true")})
	}
	if fl.D {
		m = append(m, kv{"case-sensitive", plain("true")})
	}
	return m, nil
}

var templateRef = regexp.MustCompile(`\$\{[^}]*\}`)

// checkRegex compiles the translated regex (variables stand for an empty
// group), so that what mfilter check would refuse is reported here.
func checkRegex(re string) error {
	for _, m := range macros {
		re = strings.ReplaceAll(re, m.name, m.expansion)
	}
	re = templateRef.ReplaceAllString(re, "()")
	if _, err := regexp.Compile(re); err != nil {
		return fmt.Errorf("regex: %v", err)
	}
	return nil
}
