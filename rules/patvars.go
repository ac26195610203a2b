package rules

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
)

// maxCachedPatterns bounds the regexps an engine keeps of patterns with
// variables: a new value (the sender, a capture) may make a new regexp
// for every message.
const maxCachedPatterns = 256

// patternCache holds the regexps compiled from patterns with variables,
// by their expanded text, and the errors of those that did not compile.
type patternCache struct {
	mu sync.Mutex
	m  map[string]cachedPattern
}

type cachedPattern struct {
	re  *regexp.Regexp
	err error
}

// get compiles expr, or finds it compiled.
func (c *patternCache) get(expr string) (*regexp.Regexp, error) {
	c.mu.Lock()
	e, ok := c.m[expr]
	c.mu.Unlock()
	if ok {
		return e.re, e.err
	}
	re, err := regexp.Compile(expr)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]cachedPattern)
	}
	if len(c.m) >= maxCachedPatterns {
		for k := range c.m { // any one: a map's order is random
			delete(c.m, k)
			break
		}
	}
	c.m[expr] = cachedPattern{re, err}
	return re, err
}

// placeholder is the text of a pattern template with each variable as a
// word (literal variables) or an empty group (raw ones), for checking the
// regex when the rules are loaded.
func (t *Template) placeholder() string {
	var b strings.Builder
	for _, p := range t.parts {
		switch {
		case p.ref == nil:
			b.WriteString(p.lit)
		case p.ref.raw:
			b.WriteString("(?:)")
		default:
			b.WriteString("v")
		}
	}
	return b.String()
}

// patternText expands a pattern template: each variable's value is
// quoted as literal text unless its reference says raw.
func (s *state) patternText(t *Template) string {
	var b strings.Builder
	for _, p := range t.parts {
		if p.ref == nil {
			b.WriteString(p.lit)
			continue
		}
		v, _ := p.ref.value(s.lookup, s.now)
		if !p.ref.raw {
			v = regexp.QuoteMeta(v)
		}
		if b.Len()+len(v) > MaxPatternSize {
			return b.String() + v // too long: refused by the caller
		}
		b.WriteString(v)
	}
	return b.String()
}

// regexp returns p's regexp, for a pattern with variables the one its
// expansion for this message makes; nil when that is too long or not a
// regex (the condition is then false, with a warning, and filing goes
// on: the same message would make the same regex again).
func (s *state) regexp(p *Pattern) *regexp.Regexp {
	if p.tmpl == nil {
		return p.compiled()
	}
	text := s.patternText(p.tmpl)
	if len(text) > MaxPatternSize {
		s.warnf("%s: regex with variables expands to more than %d bytes: the condition is false", p.Pos, MaxPatternSize)
		return nil
	}
	re, err := s.e.patterns.get(patternExpr(text, p.opts, p.CaseSensitive))
	if err != nil {
		s.warnf("%s: regex with variables %q is not a regex: %s: the condition is false", p.Pos, text, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
		return nil
	}
	return re
}

// warnf records a problem that does not stop filing.
func (s *state) warnf(format string, args ...any) {
	w := fmt.Sprintf(format, args...)
	s.dec.Warnings = append(s.dec.Warnings, w)
	if s.trace {
		s.dec.Trace = append(s.dec.Trace, "warning: "+w)
	}
}
