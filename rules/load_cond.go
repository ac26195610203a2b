package rules

import (
	"fmt"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// headerShortcuts are condition keys that name one header field (or two,
// for to-or-cc); addressFields take address tests too.
var headerShortcuts = map[string][]string{
	"from":     {"from"},
	"to":       {"to"},
	"cc":       {"cc"},
	"to-or-cc": {"to", "cc"},
	"sender":   {"sender"},
	"reply-to": {"reply-to"},
	"subject":  {"subject"},
}

var addressFields = map[string]bool{"from": true, "to": true, "cc": true, "to-or-cc": true, "sender": true, "reply-to": true}

var condKeys = []string{
	"from", "to", "cc", "to-or-cc", "sender", "reply-to", "subject", "list-id",
	"header", "headers", "body", "size", "exists", "envelope-from", "envelope-to",
	"var", "all", "any", "not", "score", "program", "duplicate", "dkim", "auth-results",
}

// cond reads a condition: a mapping (all of its keys must hold), a list
// (all of its items must hold), or the word duplicate.
func (l *loader) cond(n *yaml.Node) Cond {
	switch n.Kind {
	case yaml.SequenceNode:
		all := &AllCond{Pos: l.pos(n)}
		for _, c := range n.Content {
			if cc := l.cond(c); cc != nil {
				all.Conds = append(all.Conds, cc)
			}
		}
		if len(n.Content) == 0 {
			l.errorf(n, "empty condition list")
		}
		return all
	case yaml.ScalarNode:
		if n.Value == "duplicate" {
			return &DuplicateCond{Pos: l.pos(n), Size: defaultDupSize, BodyHash: true}
		}
		l.errorf(n, "a condition must be a mapping like {subject: regex}, found %s", kindName(n))
		return nil
	case yaml.MappingNode:
	default:
		l.errorf(n, "a condition must be a mapping, found %s", kindName(n))
		return nil
	}
	var conds []Cond
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !l.known(k, condKeys, "condition") {
			continue
		}
		if c := l.condKey(k, v); c != nil {
			conds = append(conds, c)
		}
	}
	if len(n.Content) == 0 {
		l.errorf(n, "empty condition")
		return nil
	}
	if len(conds) == 1 {
		return conds[0]
	}
	return &AllCond{Pos: l.pos(n), Conds: conds}
}

// condKey reads the condition of key k with value v.
func (l *loader) condKey(k, v *yaml.Node) Cond {
	read := condReaders[k.Value]
	if read == nil {
		return nil
	}
	return read(l, l.pos(k), k.Value, v)
}

// condReader reads the value v of condition key (at p); it returns nil
// after reporting an error.
type condReader func(l *loader, p Pos, key string, v *yaml.Node) Cond

// condReaders holds a reader for every key of condKeys. It is filled in
// by init: all, any and not read conditions themselves.
var condReaders map[string]condReader

func init() {
	condReaders = map[string]condReader{
		"list-id":       (*loader).listIDCond,
		"header":        (*loader).headerMapCond,
		"headers":       (*loader).headersCond,
		"body":          (*loader).bodyCond,
		"size":          dropKey((*loader).sizeCond),
		"exists":        (*loader).existsCond,
		"envelope-from": (*loader).envelopeCond,
		"envelope-to":   (*loader).envelopeCond,
		"var":           (*loader).varCond,
		"all":           (*loader).listCond,
		"any":           (*loader).listCond,
		"not":           (*loader).notCond,
		"score":         dropKey((*loader).scoreCond),
		"program":       dropKey((*loader).programCond),
		"duplicate":     dropKey((*loader).dupCond),
		"dkim":          dropKey((*loader).dkimCond),
		"auth-results":  dropKey((*loader).authCond),
	}
	for key := range headerShortcuts {
		condReaders[key] = (*loader).shortcutCond
	}
}

// dropKey makes a condReader of a reader that needs no key.
func dropKey(read func(l *loader, p Pos, v *yaml.Node) Cond) condReader {
	return func(l *loader, p Pos, _ string, v *yaml.Node) Cond { return read(l, p, v) }
}

// shortcutCond reads a condition on the field(s) a key names, such as
// subject: or to-or-cc:.
func (l *loader) shortcutCond(p Pos, key string, v *yaml.Node) Cond {
	// A mapping is an address test unless it has pattern options
	// only, so that a misspelt address part gets a suggestion.
	if v.Kind == yaml.MappingNode && addressFields[key] && (hasAnyKey(v, addressParts) || !hasAnyKey(v, patternKeys)) {
		return l.addressCond(p, headerShortcuts[key], v)
	}
	pat := l.pattern(v, key, patternOpts{raw: true})
	if pat == nil {
		return nil
	}
	return &HeaderCond{Pos: p, Fields: headerShortcuts[key], Pattern: pat}
}

func (l *loader) listIDCond(p Pos, key string, v *yaml.Node) Cond {
	pat := l.pattern(v, key, patternOpts{})
	if pat == nil {
		return nil
	}
	return &ListIDCond{Pos: p, Pattern: pat}
}

// headerMapCond reads header:, a mapping of field names to patterns.
func (l *loader) headerMapCond(p Pos, _ string, v *yaml.Node) Cond {
	if v.Kind != yaml.MappingNode || len(v.Content) == 0 {
		l.errorf(v, "header must map field names to regexes, like {X-Spam-Flag: '^YES'}")
		return nil
	}
	var conds []Cond
	for i := 0; i+1 < len(v.Content); i += 2 {
		if c := l.fieldCond(v.Content[i], v.Content[i+1]); c != nil {
			conds = append(conds, c)
		}
	}
	if len(conds) == 1 {
		return conds[0]
	}
	return &AllCond{Pos: p, Conds: conds}
}

// fieldCond reads one item of header:, field name fk and pattern fv.
func (l *loader) fieldCond(fk, fv *yaml.Node) Cond {
	name := l.str(fk, "field name")
	if name == nil {
		return nil
	}
	if !validFieldName(name.Value) {
		l.errorf(fk, "bad header field name %q", name.Value)
		return nil
	}
	pat := l.pattern(fv, "header "+name.Value, patternOpts{raw: true})
	if pat == nil {
		return nil
	}
	return &HeaderCond{Pos: l.pos(fk), Fields: []string{strings.ToLower(name.Value)}, Pattern: pat}
}

func (l *loader) headersCond(p Pos, key string, v *yaml.Node) Cond {
	pat := l.pattern(v, key, patternOpts{decoded: true, headers: true})
	if pat == nil {
		return nil
	}
	return &HeadersCond{Pos: p, Pattern: pat}
}

func (l *loader) bodyCond(p Pos, key string, v *yaml.Node) Cond {
	pat := l.pattern(v, key, patternOpts{raw: true, multiline: true})
	if pat == nil {
		return nil
	}
	return &BodyCond{Pos: p, Pattern: pat}
}

func (l *loader) existsCond(p Pos, _ string, v *yaml.Node) Cond {
	c := &ExistsCond{Pos: p}
	for _, s := range l.strList(v, "exists") {
		if !validFieldName(s.Value) {
			l.errs = append(l.errs, &Error{s.Pos, fmt.Sprintf("bad header field name %q", s.Value)})
			continue
		}
		c.Names = append(c.Names, s.Value)
	}
	if len(c.Names) == 0 {
		return nil
	}
	return c
}

func (l *loader) envelopeCond(p Pos, key string, v *yaml.Node) Cond {
	pat := l.pattern(v, key, patternOpts{})
	if pat == nil {
		return nil
	}
	return &EnvelopeCond{Pos: p, Which: strings.TrimPrefix(key, "envelope-"), Pattern: pat}
}

func (l *loader) varCond(_ Pos, _ string, v *yaml.Node) Cond {
	if v.Kind != yaml.MappingNode || len(v.Content) != 2 {
		l.errorf(v, "var takes one variable and a regex, like {var: {list: '^golang'}}")
		return nil
	}
	name := l.str(v.Content[0], "variable name")
	pat := l.pattern(v.Content[1], "var", patternOpts{})
	if name == nil || pat == nil {
		return nil
	}
	return &VarCond{Pos: l.pos(v.Content[0]), Var: name.Value, Pattern: pat}
}

// listCond reads all: and any:, lists of conditions.
func (l *loader) listCond(p Pos, key string, v *yaml.Node) Cond {
	if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
		l.errorf(v, "%s takes a non-empty list of conditions", key)
		return nil
	}
	var conds []Cond
	for _, c := range v.Content {
		if cc := l.cond(c); cc != nil {
			conds = append(conds, cc)
		}
	}
	if key == "all" {
		return &AllCond{Pos: p, Conds: conds}
	}
	return &AnyCond{Pos: p, Conds: conds}
}

func (l *loader) notCond(p Pos, _ string, v *yaml.Node) Cond {
	c := l.cond(v)
	if c == nil {
		return nil
	}
	return &NotCond{Pos: p, Cond: c}
}

func hasAnyKey(n *yaml.Node, keys []string) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		for _, k := range keys {
			if n.Content[i].Value == k {
				return true
			}
		}
	}
	return false
}

var (
	addressParts = []string{"address", "domain", "local-part", "name"}
	patternKeys  = []string{"regex", "raw", "case-sensitive"}
)

func (l *loader) addressCond(p Pos, fields []string, v *yaml.Node) Cond {
	if len(v.Content) == 0 {
		l.errorf(v, "an empty mapping: write a regex, or an address test like {address: a@example.org}")
		return nil
	}
	var conds []Cond
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		if !l.known(k, addressParts, "address part") {
			continue
		}
		c := &AddressCond{Pos: l.pos(k), Fields: fields, Part: k.Value}
		if k.Value == "name" {
			c.Name = l.pattern(val, "name", patternOpts{})
			if c.Name == nil {
				continue
			}
		} else {
			for _, s := range l.strList(val, k.Value) {
				c.Values = append(c.Values, strings.ToLower(strings.TrimSpace(s.Value)))
			}
			if len(c.Values) == 0 {
				continue
			}
		}
		conds = append(conds, c)
	}
	switch len(conds) {
	case 0:
		return nil // the errors are reported
	case 1:
		return conds[0]
	}
	return &AllCond{Pos: p, Conds: conds}
}

func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f || s[i] == ':' {
			return false
		}
	}
	return true
}

// patternOpts says which options a pattern of this kind takes.
type patternOpts struct {
	raw       bool // takes raw: true
	decoded   bool // takes decoded: true (raw is the default)
	headers   bool // procmail's whole-header search: macros, multi-line
	multiline bool // ^ and $ match at line ends
}

// pattern reads a regex: a string, or {regex: R, raw: B, case-sensitive: B}.
// MaxPatternSize bounds a regex's source: loading and compiling one
// takes time in proportion to its size at every run of an MDA.
const MaxPatternSize = 64 << 10

func (l *loader) pattern(n *yaml.Node, what string, o patternOpts) *Pattern {
	var src *Str
	raw := o.headers // whole-header matching is raw unless decoded: true
	cs := false
	if n.Kind == yaml.MappingNode {
		allowed := []string{"regex", "case-sensitive"}
		if o.raw {
			allowed = append(allowed, "raw")
		}
		if o.decoded {
			allowed = append(allowed, "decoded")
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if !l.known(k, allowed, what+" option") {
				continue
			}
			switch k.Value {
			case "regex":
				src = l.str(v, "regex")
			case "raw":
				raw = l.boolean(v, "raw")
			case "decoded":
				raw = !l.boolean(v, "decoded")
			case "case-sensitive":
				cs = l.boolean(v, "case-sensitive")
			}
		}
		if src == nil {
			l.errorf(n, "%s needs a regex: key", what)
			return nil
		}
	} else {
		src = l.str(n, what)
		if src == nil {
			return nil
		}
	}
	pos := src.Pos
	if len(src.Value) > MaxPatternSize {
		l.errs = append(l.errs, &Error{pos, fmt.Sprintf("regex of %d bytes is longer than the %d a pattern may have (split it, or match a list file with a program condition)", len(src.Value), MaxPatternSize)})
		return nil
	}
	if bad := procmailEscape(src.Value); bad != "" {
		l.errs = append(l.errs, &Error{pos, fmt.Sprintf("bad regex %q: %s", src.Value, bad)})
		return nil
	}
	p := &Pattern{Pos: pos, Source: src.Value, Raw: raw, CaseSensitive: cs, opts: o}
	text := src.Value
	if strings.Contains(text, "${") {
		t, err := parseTmpl(pos, text, true)
		if err != nil {
			l.errs = append(l.errs, err.(*Error))
			return nil
		}
		if !t.Literal() {
			// Checked with each variable as a plain word (or an empty
			// group for a raw one): what the rules wrote must be a regex
			// whatever the variables hold.
			p.tmpl = t
			text = t.placeholder()
		}
	}
	expr := patternExpr(text, o, cs)
	// Parsing finds every error that compiling would (regexp.Compile
	// parses with syntax.Perl and then cannot fail); the regexp is
	// compiled when first used (Pattern.compiled).
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		if _, err2 := syntax.Parse(text, syntax.Perl); err2 != nil {
			err = err2 // the message then quotes the user's regex, not ours
		}
		l.errs = append(l.errs, &Error{pos, fmt.Sprintf("bad regex %q: %s", src.Value, strings.TrimPrefix(err.Error(), "error parsing regexp: "))})
		return nil
	}
	p.expr = expr
	if p.tmpl == nil {
		p.pre = prefilterOf(re)
	}
	for _, name := range re.CapNames() {
		if name != "" {
			p.names = append(p.names, name)
		}
	}
	return p
}

// patternExpr is the regexp a pattern's text compiles to: procmail's
// macros and negated classes for multi-line text, and the flags.
func patternExpr(text string, o patternOpts, cs bool) string {
	expr := text
	if o.headers {
		expr = expandProcmailMacros(expr)
	}
	if o.headers || o.multiline {
		expr = negatedClassesSkipNewline(expr)
	}
	flags := ""
	if !cs {
		flags += "i"
	}
	if o.headers || o.multiline {
		flags += "m"
	}
	if flags != "" {
		expr = "(?" + flags + ")" + expr
	}
	return expr
}

// procmailEscape finds procmail regex escapes that Go reads differently
// (as a literal character), so that a ported rule fails loudly instead of
// silently matching something else.
func procmailEscape(s string) string {
	for i := 0; i+1 < len(s); i++ {
		if s[i] != '\\' {
			continue
		}
		switch s[i+1] {
		case '<', '>':
			return fmt.Sprintf(`procmail's \%c is not a word boundary here: write \b`, s[i+1])
		case '/':
			return `procmail's \/ does not set MATCH here: capture with a named group, (?P<match>...), and use ${match}`
		}
		i++
	}
	return ""
}

// negatedClassesSkipNewline makes every negated class [^...] also refuse
// a newline, as procmail's do, so that in multi-line text (the whole
// header, the body) "^From:[^>]*x" stays on its line as it does there.
func negatedClassesSkipNewline(expr string) string {
	var b strings.Builder
	for i := 0; i < len(expr); i++ {
		c := expr[i]
		if c == '\\' && i+1 < len(expr) {
			b.WriteString(expr[i : i+2])
			i++
			continue
		}
		if c != '[' {
			b.WriteByte(c)
			continue
		}
		// A class: copy it to its closing bracket, adding \n after [^.
		neg := i+1 < len(expr) && expr[i+1] == '^'
		j := classEnd(expr, i)
		if j < 0 { // unterminated: let the compiler report it
			b.WriteString(expr[i:])
			break
		}
		if neg {
			// After a leading literal ] or -, so that the \n cannot
			// become one end of a range.
			k := i + 2
			if expr[k] == ']' || expr[k] == '-' {
				k++
			}
			b.WriteString(expr[i:k])
			b.WriteString("\\n")
			b.WriteString(expr[k : j+1])
		} else {
			b.WriteString(expr[i : j+1])
		}
		i = j
	}
	return b.String()
}

// classEnd returns the index of the ']' that closes the character class
// opened at expr[i] ('['), or -1 if it is not closed.
func classEnd(expr string, i int) int {
	j := i + 1
	if j < len(expr) && expr[j] == '^' {
		j++
	}
	if j < len(expr) && expr[j] == ']' {
		j++ // a ] right after [ or [^ is a literal
	}
	for j < len(expr) && expr[j] != ']' {
		switch {
		case expr[j] == '\\' && j+1 < len(expr):
			j += 2
		case expr[j] == '[' && j+1 < len(expr) && expr[j+1] == ':':
			if k := strings.Index(expr[j+2:], ":]"); k >= 0 {
				j += k + 4
			} else {
				j++
			}
		default:
			j++
		}
	}
	if j >= len(expr) {
		return -1
	}
	return j
}

// emptyMatches reports where procmail's scoring loop would find an empty
// match of expr: at the start of the search area, inside it, or at its
// end. procmail's ^ and $ consume the newline they match, so they are
// zero-width only at the start and at the end of the area; a pattern that
// can match the empty string there (^, $, x*, .*$) scores infinity with
// repeat, while ^.*$ or ^$, which always consume a newline inside the
// area, count lines. RE2's multi-line ^ and $ are zero-width everywhere,
// so this is decided on variants of expr with ^ and $ true or never true.
func emptyMatches(expr string) (atStart, inside, atEnd bool) {
	const always, never = `(?:)`, `(?:\b\B)`
	try := func(caret, dollar string) bool {
		re, err := regexp.Compile(replaceAnchors(expr, caret, dollar))
		return err == nil && re.MatchString("")
	}
	return try(always, never), try(never, never), try(never, always)
}

// replaceAnchors replaces the ^ and $ of expr that are neither escaped nor
// inside a character class.
func replaceAnchors(expr, caret, dollar string) string {
	var b strings.Builder
	for i := 0; i < len(expr); i++ {
		switch c := expr[i]; {
		case c == '\\' && i+1 < len(expr):
			b.WriteString(expr[i : i+2])
			i++
		case c == '[':
			j := classEnd(expr, i)
			if j < 0 {
				b.WriteString(expr[i:])
				return b.String()
			}
			b.WriteString(expr[i : j+1])
			i = j
		case c == '^':
			b.WriteString(caret)
		case c == '$':
			b.WriteString(dollar)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// procmail's header macros, expanded exactly as procmail 3.22 does
// (procmailrc(5); procmail-behaviour.md §7).
const (
	macroTO_ = `(^((Original-)?(Resent-)?(To|Cc|Bcc)|(X-Envelope|Apparently(-Resent)?)-To):(.*[^-a-zA-Z0-9_.])?)`
	macroTO  = `(^((Original-)?(Resent-)?(To|Cc|Bcc)|(X-Envelope|Apparently(-Resent)?)-To):(.*[^a-zA-Z])?)`
	// The two FROM_ macros end in procmail's "$([^>]|$)"; procmail's $
	// matches (and consumes) a newline or the end of the text, which RE2's
	// (?m)$ does not, so that tail is written out as such.
	macroFROM_DAEMON = `(^(Mailing-List:|Precedence:.*(junk|bulk|list)|To: Multiple recipients of |(((Resent-)?(From|Sender)|X-Envelope-From):|>?From )([^>]*[^(.%@a-z0-9])?(Post(ma?(st(e?r)?|n)|office)|(send)?Mail(er)?|daemon|m(mdf|ajordomo)|n?uucp|LIST(SERV|proc)|NETSERV|o(wner|ps)|r(e(quest|sponse)|oot)|b(ounce|bs\.smtp)|echo|mirror|s(erv(ices?|er)|mtp(error)?|ystem)|A(dmin(istrator)?|MMGR|utoanswer))(([^).!:a-z0-9][-_a-z0-9]*)?[%@>\t ][^<)]*(\(.*\).*)?)?(\n([^>]|\n|\z)|\z)))`
	macroFROM_MAILER = `(^(((Resent-)?(From|Sender)|X-Envelope-From):|>?From )([^>]*[^(.%@a-z0-9])?(Post(ma(st(er)?|n)|office)|(send)?Mail(er)?|daemon|mmdf|n?uucp|ops|r(esponse|oot)|(bbs\.)?smtp(error)?|s(erv(ices?|er)|ystem)|A(dmin(istrator)?|MMGR))(([^).!:a-z0-9][-_a-z0-9]*)?[%@>\t ][^<)]*(\(.*\).*)?)?(\n([^>]|\n|\z)|\z))`
)

// expandProcmailMacros replaces ^TO_, ^TO, ^FROM_DAEMON and ^FROM_MAILER
// where they are not preceded by a backslash, as procmail does.
func expandProcmailMacros(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		if s[i] == '\\' && i+1 < len(s) {
			b.WriteString(s[i : i+2])
			i += 2
			continue
		}
		if s[i] == '^' {
			switch {
			case strings.HasPrefix(s[i:], "^FROM_DAEMON"):
				b.WriteString(macroFROM_DAEMON)
				i += len("^FROM_DAEMON")
				continue
			case strings.HasPrefix(s[i:], "^FROM_MAILER"):
				b.WriteString(macroFROM_MAILER)
				i += len("^FROM_MAILER")
				continue
			case strings.HasPrefix(s[i:], "^TO_"):
				b.WriteString(macroTO_)
				i += len("^TO_")
				continue
			case strings.HasPrefix(s[i:], "^TO"):
				b.WriteString(macroTO)
				i += len("^TO")
				continue
			}
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String()
}

// sizeSpec parses the value of a size condition: blanks, < or >,
// blanks, a number with an optional fraction, blanks, an optional unit
// k, M or G (any case), an optional b or B, blanks; in a regexp,
// ^\s*([<>])\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgG]?)[bB]?\s*$ (which
// sizeSpec's test holds it to). Written out because compiling that
// regexp was a measurable part of an MDA's start-up.
func sizeSpec(s string) (op, num, unit string, ok bool) {
	i := 0
	blanks := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\f' || s[i] == '\r') {
			i++
		}
	}
	digits := func() bool {
		from := i
		for i < len(s) && '0' <= s[i] && s[i] <= '9' {
			i++
		}
		return i > from
	}
	blanks()
	if i == len(s) || s[i] != '<' && s[i] != '>' {
		return "", "", "", false
	}
	op = s[i : i+1]
	i++
	blanks()
	from := i
	if !digits() {
		return "", "", "", false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if !digits() {
			return "", "", "", false
		}
	}
	num = s[from:i]
	blanks()
	if i < len(s) && strings.IndexByte("kKmMgG", s[i]) >= 0 {
		unit = s[i : i+1]
		i++
	}
	if i < len(s) && (s[i] == 'b' || s[i] == 'B') {
		i++
	}
	blanks()
	if i != len(s) {
		return "", "", "", false
	}
	return op, num, unit, true
}

// maxSizeBound is the largest size a size condition may name: 2^62 bytes.
const maxSizeBound = 1 << 62

func (l *loader) sizeCond(p Pos, v *yaml.Node) Cond {
	s := l.str(v, "size")
	if s == nil {
		return nil
	}
	op, num, unit, ok := sizeSpec(s.Value)
	if !ok {
		l.errorf(v, "size must be like '> 100k' or '< 2M' (units k, M, G of 1024), found %q", s.Value)
		return nil
	}
	f, _ := strconv.ParseFloat(num, 64)
	switch strings.ToLower(unit) {
	case "k":
		f *= 1 << 10
	case "m":
		f *= 1 << 20
	case "g":
		f *= 1 << 30
	}
	if f > maxSizeBound {
		// Beyond int64, the bound would wrap around to a negative number
		// that every message is larger than.
		l.errorf(v, "size bound %q is larger than any message can be (at most %dG)", s.Value, maxSizeBound>>30)
		return nil
	}
	return &SizeCond{Pos: p, Op: op, N: int64(f)}
}

func (l *loader) scoreCond(p Pos, v *yaml.Node) Cond {
	if v.Kind != yaml.MappingNode {
		l.errorf(v, "score takes {terms: [...], above: N}")
		return nil
	}
	c := &ScoreCond{Pos: p}
	sawTerms := false
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		if !l.known(k, []string{"terms", "above"}, "score option") {
			continue
		}
		if k.Value == "above" {
			c.Above = l.number(val, "above")
			continue
		}
		sawTerms = true
		if val.Kind != yaml.SequenceNode || len(val.Content) == 0 {
			l.errorf(val, "terms takes a non-empty list of {weight: W, <condition>}")
			continue
		}
		for _, t := range val.Content {
			if term, ok := l.scoreTerm(t); ok {
				c.Terms = append(c.Terms, term)
			}
		}
	}
	if !sawTerms {
		l.errorf(v, "score has no terms: (write {terms: [{weight: W, <condition>}], above: N})")
	}
	if len(c.Terms) == 0 {
		return nil
	}
	return c
}

func (l *loader) scoreTerm(n *yaml.Node) (ScoreTerm, bool) {
	t := ScoreTerm{Pos: l.pos(n)}
	if n.Kind != yaml.MappingNode {
		l.errorf(n, "a score term is a mapping {weight: W, repeat: X, <condition>}")
		return t, false
	}
	cond := &yaml.Node{Kind: yaml.MappingNode, Line: n.Line, Column: n.Column}
	hasWeight := false
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "weight":
			t.Weight = l.number(v, "weight")
			hasWeight = true
		case "repeat":
			t.Repeat = l.number(v, "repeat")
		default:
			cond.Content = append(cond.Content, k, v)
		}
	}
	if !hasWeight {
		l.errorf(n, "score term needs a weight")
		return t, false
	}
	if len(cond.Content) == 0 {
		l.errorf(n, "score term needs a condition")
		return t, false
	}
	t.Cond = l.cond(cond)
	return t, t.Cond != nil
}

func (l *loader) programCond(p Pos, v *yaml.Node) Cond {
	c := &ProgramCond{Pos: p, Timeout: defaultProgramTimeout}
	if v.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(v.Content); i += 2 {
			k, val := v.Content[i], v.Content[i+1]
			if !l.known(k, []string{"command", "timeout", "input"}, "program option") {
				continue
			}
			switch k.Value {
			case "timeout":
				c.Timeout = l.duration(val, "timeout")
			case "input":
				c.Input = l.oneOf(val, "input", programInputs)
			default:
				c.Argv = l.argv(val, "command")
			}
		}
	} else {
		c.Argv = l.argv(v, "program")
	}
	if len(c.Argv) == 0 {
		return nil
	}
	return c
}

// argv reads a command as a list of arguments. A single string is refused
// unless it is one word: mfilter never runs a shell.
func (l *loader) argv(v *yaml.Node, what string) []*Template {
	if v.Kind == yaml.ScalarNode && strings.ContainsAny(v.Value, " \t") {
		l.errorf(v, "%s must be a list of arguments like [spamc, -c]; mfilter runs no shell, so %q cannot be split for you", what, v.Value)
		return nil
	}
	if v.Kind != yaml.SequenceNode {
		return l.templates(v, what)
	}
	if len(v.Content) == 0 {
		l.errorf(v, "%s is an empty list", what)
		return nil
	}
	var out []*Template
	for i, c := range v.Content {
		if t := l.argument(c, what, i == 0); t != nil {
			out = append(out, t)
		}
	}
	return out
}

// argument reads one element of an argument list: a template, or
// {optional: TEMPLATE}, left out when it expands to nothing, as a shell
// (and procmail) leaves out an unquoted empty variable.
func (l *loader) argument(n *yaml.Node, what string, first bool) *Template {
	if n.Kind != yaml.MappingNode {
		return l.template(n, what)
	}
	if len(n.Content) != 2 || n.Content[0].Value != "optional" {
		l.errorf(n, "an argument of %s is a string or {optional: TEMPLATE}", what)
		return nil
	}
	if first {
		l.errorf(n, "the program of %s cannot be optional", what)
		return nil
	}
	t := l.template(n.Content[1], what)
	if t != nil {
		t.Optional = true
	}
	return t
}

const (
	defaultDupSize        = 8192
	maxDupSize            = 64 << 20
	defaultProgramTimeout = 60 * time.Second
)

func (l *loader) dupCond(p Pos, v *yaml.Node) Cond {
	c := &DuplicateCond{Pos: p, Size: defaultDupSize, BodyHash: true}
	if v.Kind == yaml.ScalarNode {
		if !l.boolean(v, "duplicate") {
			l.errorf(v, "duplicate: false never holds; remove the condition instead")
			return nil
		}
		return c
	}
	if v.Kind != yaml.MappingNode {
		l.errorf(v, "duplicate takes true or {cache: FILE, size: N, body-hash: B}")
		return nil
	}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		if !l.known(k, []string{"cache", "size", "body-hash"}, "duplicate option") {
			continue
		}
		switch k.Value {
		case "cache":
			c.Cache = l.template(val, "cache")
		case "size":
			n := l.number(val, "size")
			if n < 64 || n > maxDupSize {
				l.errorf(val, "size must be from 64 bytes to %d (64 MiB)", maxDupSize)
				n = defaultDupSize
			}
			c.Size = int64(n)
		case "body-hash":
			c.BodyHash = l.boolean(val, "body-hash")
		}
	}
	return c
}

var results = []string{"pass", "fail", "none", "neutral", "softfail", "temperror", "permerror", "policy"}

func (l *loader) dkimCond(p Pos, v *yaml.Node) Cond {
	c := &DKIMCond{Pos: p, Result: "pass"}
	if v.Kind == yaml.ScalarNode {
		c.Result = v.Value
	} else if v.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(v.Content); i += 2 {
			k, val := v.Content[i], v.Content[i+1]
			if !l.known(k, []string{"result", "domain"}, "dkim option") {
				continue
			}
			if s := l.str(val, k.Value); s != nil {
				if k.Value == "result" {
					c.Result = s.Value
				} else {
					c.Domain = strings.ToLower(s.Value)
				}
			}
		}
	} else {
		l.errorf(v, "dkim takes pass, fail, none or {result: R, domain: D}")
		return nil
	}
	switch c.Result {
	case "pass", "fail", "none":
	default:
		l.errorf(v, "dkim result must be pass, fail or none, not %q", c.Result)
		return nil
	}
	return c
}

func (l *loader) authCond(p Pos, v *yaml.Node) Cond {
	if v.Kind != yaml.MappingNode || len(v.Content) == 0 {
		l.errorf(v, "auth-results takes {dkim: pass}, {spf: pass} or {dmarc: pass}")
		return nil
	}
	var conds []Cond
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		if !l.known(k, []string{"dkim", "spf", "dmarc"}, "auth-results method") {
			continue
		}
		s := l.str(val, k.Value)
		if s == nil {
			continue
		}
		ok := false
		for _, r := range results {
			ok = ok || r == s.Value
		}
		if !ok {
			l.errorf(val, "unknown result %q (known: %s)", s.Value, strings.Join(results, ", "))
			continue
		}
		conds = append(conds, &AuthResultsCond{Pos: l.pos(k), Method: k.Value, Result: s.Value})
	}
	if len(conds) == 1 {
		return conds[0]
	}
	return &AllCond{Pos: p, Conds: conds}
}
