package rules

import (
	"fmt"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

var actionKeys = []string{
	"folder", "copy", "pipe", "forward", "discard", "stop",
	"add-header", "add-header-if-missing", "set-header", "supersede-header", "remove-header", "rename-header",
	"filter", "set", "log", "flags", "reply",
}

// modifiers each action takes besides its own key.
var actionModifiers = map[string][]string{
	"folder":  {"fallback"},
	"copy":    {"fallback"},
	"pipe":    {"timeout", "continue", "ignore-exit", "input", "fallback"},
	"forward": {"continue", "sendmail", "via", "fallback"},
	"filter":  {"timeout", "header-only", "on-failure", "input"},
}

// actions reads a then: value: an action, or a list of them. An action is
// a mapping with one action key, or the word discard or stop.
func (l *loader) actions(n *yaml.Node) []Action {
	nodes := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		nodes = n.Content
		if len(nodes) == 0 {
			l.errorf(n, "then: is an empty list")
		}
	}
	var out []Action
	for _, c := range nodes {
		if a := l.action(c); a != nil {
			out = append(out, a)
		}
	}
	return out
}

// action reads one item of a then: list.
func (l *loader) action(n *yaml.Node) Action {
	if n.Kind == yaml.ScalarNode {
		return l.wordAction(n)
	}
	if n.Kind != yaml.MappingNode {
		l.errorf(n, "an action must be a mapping like {folder: inbox/}, found %s", kindName(n))
		return nil
	}
	if len(n.Content) == 0 {
		l.errorf(n, "an empty action: write one like {folder: inbox/}")
		return nil
	}
	key, val, ok := l.actionKey(n)
	if !ok {
		return nil
	}
	if key == nil {
		l.known(n.Content[0], actionKeys, "action")
		return nil
	}
	mods := l.actionMods(n, key)
	return actionReaders[key.Value](l, l.pos(key), key, val, mods)
}

// wordAction reads an action written as a bare word: discard or stop.
func (l *loader) wordAction(n *yaml.Node) Action {
	p := l.pos(n)
	switch n.Value {
	case "discard":
		return &DiscardAction{p}
	case "stop":
		return &StopAction{p}
	}
	msg := fmt.Sprintf("unknown action %q", n.Value)
	if s := suggest(n.Value, []string{"discard", "stop"}); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	l.errorf(n, "%s; to deliver to a folder write {folder: %s}", msg, n.Value)
	return nil
}

// actionKey finds the action key of mapping n and its value, first, so
// that the modifiers can be checked against it. key is nil when n has
// none; ok is false when it has two, which is reported.
func (l *loader) actionKey(n *yaml.Node) (key, val *yaml.Node, ok bool) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		for _, a := range actionKeys {
			if k.Value == a {
				if key != nil {
					l.errorf(k, "one action per item: %s and %s (write a list: then: [{%s: ...}, {%s: ...}])", key.Value, k.Value, key.Value, k.Value)
					return nil, nil, false
				}
				key, val = k, n.Content[i+1]
			}
		}
	}
	return key, val, true
}

// actionMods returns the modifiers of mapping n besides its action key,
// by name, reporting those that key does not take.
func (l *loader) actionMods(n, key *yaml.Node) map[string]*yaml.Node {
	mods := map[string]*yaml.Node{}
	allowed := append([]string{key.Value}, actionModifiers[key.Value]...)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if k == key {
			continue
		}
		if l.known(k, allowed, key.Value+" option") {
			mods[k.Value] = n.Content[i+1]
		}
	}
	return mods
}

// actionReader reads the value val of action key (at p) and its
// modifiers; it returns nil after reporting an error.
type actionReader func(l *loader, p Pos, key, val *yaml.Node, mods map[string]*yaml.Node) Action

// actionReaders holds a reader for every key of actionKeys. It is
// filled in by init: fallbacks read actions themselves.
var actionReaders map[string]actionReader

func init() {
	actionReaders = actionReaderTable()
}

func actionReaderTable() map[string]actionReader {
	return map[string]actionReader{
		"folder":                (*loader).folderAction,
		"copy":                  (*loader).folderAction,
		"pipe":                  (*loader).pipeAction,
		"forward":               (*loader).forwardAction,
		"discard":               (*loader).flagAction,
		"stop":                  (*loader).flagAction,
		"add-header":            (*loader).addHeaderAction,
		"add-header-if-missing": (*loader).addHeaderAction,
		"set-header":            (*loader).addHeaderAction,
		"supersede-header":      (*loader).addHeaderAction,
		"remove-header":         (*loader).removeHeaderAction,
		"rename-header":         (*loader).renameHeaderAction,
		"filter":                (*loader).filterAction,
		"set":                   (*loader).setAction,
		"log":                   (*loader).logAction,
		"flags":                 (*loader).flagsAction,
		"reply":                 (*loader).replyAction,
	}
}

func (l *loader) folderAction(p Pos, key, val *yaml.Node, mods map[string]*yaml.Node) Action {
	fs := l.templates(val, key.Value)
	if len(fs) == 0 {
		return nil
	}
	for _, f := range fs {
		if f.Literal() && strings.TrimSpace(f.Source) == "" {
			l.errs = append(l.errs, &Error{f.Pos, "the folder name is empty (write inbox/ for a maildir, inbox for an mbox)"})
			return nil
		}
	}
	return &FolderAction{Pos: p, Folders: fs, Copy: key.Value == "copy", Fallback: l.fallback(mods)}
}

func (l *loader) pipeAction(p Pos, _, val *yaml.Node, mods map[string]*yaml.Node) Action {
	a := &PipeAction{Pos: p, Argv: l.argv(val, "pipe"), Timeout: defaultProgramTimeout, Input: "message"}
	if m := mods["timeout"]; m != nil {
		a.Timeout = l.duration(m, "timeout")
	}
	if m := mods["continue"]; m != nil {
		a.Continue = l.boolean(m, "continue")
	}
	if m := mods["ignore-exit"]; m != nil {
		a.IgnoreExit = l.boolean(m, "ignore-exit")
	}
	if m := mods["input"]; m != nil {
		a.Input = l.oneOf(m, "input", programInputs[:3])
	}
	a.Fallback = l.fallback(mods)
	if len(a.Argv) == 0 {
		return nil
	}
	return a
}

func (l *loader) forwardAction(p Pos, _, val *yaml.Node, mods map[string]*yaml.Node) Action {
	a := &ForwardAction{Pos: p, To: l.templates(val, "forward")}
	if m := mods["continue"]; m != nil {
		a.Continue = l.boolean(m, "continue")
	}
	if m := mods["sendmail"]; m != nil {
		for _, s := range l.strList(m, "sendmail") {
			a.Sendmail = append(a.Sendmail, s.Value)
		}
	}
	if m := mods["via"]; m != nil {
		l.forwardVia(a, m)
	}
	a.Fallback = l.fallback(mods)
	if len(a.To) == 0 {
		return nil
	}
	return a
}

// maxFallbackDepth bounds fallbacks of fallbacks.
const maxFallbackDepth = 4

// fallbackActions are the actions a fallback: may hold: deliveries.
var fallbackActions = []string{"folder", "copy", "pipe", "forward", "discard"}

// fallback reads the fallback: modifier of a delivery, an action or a
// list of them, run when the delivery fails.
func (l *loader) fallback(mods map[string]*yaml.Node) []Action {
	m := mods["fallback"]
	if m == nil {
		return nil
	}
	if l.fallbackDepth >= maxFallbackDepth {
		l.errorf(m, "fallbacks may nest only %d deep", maxFallbackDepth)
		return nil
	}
	l.fallbackDepth++
	defer func() { l.fallbackDepth-- }()
	nodes := []*yaml.Node{m}
	if m.Kind == yaml.SequenceNode {
		nodes = m.Content
	}
	if len(nodes) == 0 {
		l.errorf(m, "fallback: is an empty list")
	}
	var out []Action
	for _, n := range nodes {
		key, _, ok := l.actionKey(n)
		if !ok {
			continue // reported
		}
		if key != nil && !slices.Contains(fallbackActions, key.Value) {
			l.errorf(key, "a fallback delivers: %s is not allowed there (only %s)", key.Value, strings.Join(fallbackActions, ", "))
			continue
		}
		if a := l.action(n); a != nil {
			out = append(out, a)
		}
	}
	return out
}

// forwardVia reads forward's via: modifier m into a.
func (l *loader) forwardVia(a *ForwardAction, m *yaml.Node) {
	s := l.str(m, "via")
	if s == nil {
		return
	}
	switch s.Value {
	case "mfilter":
		if len(a.Sendmail) > 0 {
			l.errorf(m, "forward takes via: mfilter or a sendmail: command, not both")
		}
		a.Via = "mfilter"
	case "sendmail":
	default:
		l.errorf(m, "forward via must be mfilter (mfilter send, through the SSH relay) or sendmail, not %q", s.Value)
	}
}

// flagAction reads discard: true and stop: true.
func (l *loader) flagAction(p Pos, key, val *yaml.Node, _ map[string]*yaml.Node) Action {
	if !l.boolean(val, key.Value) {
		l.errorf(val, "%s: false does nothing; remove it", key.Value)
		return nil
	}
	if key.Value == "discard" {
		return &DiscardAction{p}
	}
	return &StopAction{p}
}

// addHeaderAction reads the actions that take a whole field:
// add-header, add-header-if-missing, set-header and supersede-header.
func (l *loader) addHeaderAction(p Pos, key, val *yaml.Node, _ map[string]*yaml.Node) Action {
	t := l.template(val, key.Value)
	if t == nil {
		return nil
	}
	op := strings.TrimSuffix(key.Value, "-header")
	op = strings.Replace(op, "-header", "", 1)
	a := &HeaderAction{Pos: p, Op: op, Field: t}
	nameT, rest, ok := t.splitField()
	if !ok {
		l.errorf(val, "%s takes a whole field like 'X-Label: work', found %q", key.Value, t.Source)
		return nil
	}
	if nameT.Literal() {
		a.Name = strings.TrimRight(nameT.Source, " \t")
		if !validFieldName(a.Name) {
			l.errorf(val, "bad header field name %q", a.Name)
			return nil
		}
	} else {
		// Checked when expanded, for each message.
		a.NameT, a.Field = nameT, rest
	}
	if bad := badFieldBreak(t.Source); bad != "" {
		l.errorf(val, "%s: %s would end the header there (continue a long field with a newline and a space or tab)", key.Value, bad)
		return nil
	}
	return a
}

// headerName reads the field name of remove-header or rename-header: a
// name, or a template (with variables, checked when expanded).
func (l *loader) headerName(n *yaml.Node, what string) (string, *Template, bool) {
	t := l.template(n, what)
	if t == nil {
		return "", nil, false
	}
	if !t.Literal() {
		return "", t, true
	}
	name := strings.TrimSuffix(strings.TrimSpace(t.Source), ":")
	if !validFieldName(name) {
		l.errorf(n, "bad header field name %q", t.Source)
		return "", nil, false
	}
	return name, nil, true
}

func (l *loader) removeHeaderAction(p Pos, _, val *yaml.Node, _ map[string]*yaml.Node) Action {
	name, nameT, ok := l.headerName(val, "remove-header")
	if !ok {
		return nil
	}
	return &HeaderAction{Pos: p, Op: "remove", Name: name, NameT: nameT}
}

func (l *loader) renameHeaderAction(p Pos, _, val *yaml.Node, _ map[string]*yaml.Node) Action {
	if val.Kind != yaml.MappingNode {
		l.errorf(val, "rename-header takes {from: Old-Name, to: New-Name}")
		return nil
	}
	a := &HeaderAction{Pos: p, Op: "rename"}
	for i := 0; i+1 < len(val.Content); i += 2 {
		k, v := val.Content[i], val.Content[i+1]
		if !l.known(k, []string{"from", "to"}, "rename-header key") {
			continue
		}
		name, nameT, ok := l.headerName(v, k.Value)
		if !ok {
			continue
		}
		if k.Value == "from" {
			a.Name, a.NameT = name, nameT
		} else {
			a.To, a.ToT = name, nameT
		}
	}
	if a.Name == "" && a.NameT == nil || a.To == "" && a.ToT == nil {
		l.errorf(val, "rename-header needs both from: and to:")
		return nil
	}
	return a
}

func (l *loader) filterAction(p Pos, _, val *yaml.Node, mods map[string]*yaml.Node) Action {
	a := &FilterAction{Pos: p, Argv: l.argv(val, "filter"), Timeout: defaultProgramTimeout, OnFailure: "keep", Input: "message"}
	if m := mods["timeout"]; m != nil {
		a.Timeout = l.duration(m, "timeout")
	}
	if m := mods["header-only"]; m != nil {
		if l.boolean(m, "header-only") {
			a.Input = "header"
		}
	}
	if m := mods["input"]; m != nil {
		if mods["header-only"] != nil {
			l.errorf(m, "filter takes input: or header-only:, not both (header-only: true is input: header)")
		}
		a.Input = l.oneOf(m, "input", programInputs[:3])
	}
	if m := mods["on-failure"]; m != nil {
		if s := l.str(m, "on-failure"); s != nil {
			if s.Value != "keep" && s.Value != "retry" && s.Value != "use-output" {
				l.errorf(m, "on-failure must be keep (go on with the unfiltered message), retry (exit 75) or use-output (take what the program printed, as procmail's f without w), not %q", s.Value)
			}
			a.OnFailure = s.Value
		}
	}
	if len(a.Argv) == 0 {
		return nil
	}
	return a
}

func (l *loader) setAction(p Pos, _, val *yaml.Node, _ map[string]*yaml.Node) Action {
	vs := l.vars(val)
	if len(vs) == 0 {
		return nil
	}
	return &SetAction{Pos: p, Vars: vs}
}

func (l *loader) logAction(p Pos, _, val *yaml.Node, _ map[string]*yaml.Node) Action {
	t := l.template(val, "log")
	if t == nil {
		return nil
	}
	return &LogAction{Pos: p, Text: t}
}

// splitField splits a "Name: value" template at the first colon of its
// literal text: name is the part before it (blanks and all), rest the
// colon and what follows.
func (t *Template) splitField() (name, rest *Template, ok bool) {
	for i, p := range t.parts {
		if p.ref != nil {
			continue
		}
		j := strings.IndexByte(p.lit, ':')
		if j < 0 {
			continue
		}
		name = &Template{Pos: t.Pos, parts: append(slices.Clip(t.parts[:i]), tmplPart{lit: p.lit[:j]})}
		rest = &Template{Pos: t.Pos, parts: append([]tmplPart{{lit: p.lit[j:]}}, t.parts[i+1:]...)}
		name.Source = name.text()
		rest.Source = rest.text()
		if strings.TrimSpace(name.Source) == "" {
			return nil, nil, false
		}
		return name, rest, true
	}
	return nil, nil, false
}

// text is the source a template's parts stand for, as far as needed to
// name it in messages.
func (t *Template) text() string {
	var b strings.Builder
	for _, p := range t.parts {
		if p.ref != nil {
			b.WriteString("${" + p.ref.name + "}")
		} else {
			b.WriteString(p.lit)
		}
	}
	return b.String()
}

// badFieldBreak describes a line break in a header field's text that
// does not continue the field (RFC 5322 folding: a newline followed by a
// space or tab), or returns "". Such a break ends the field, and an empty
// line ends the header: the rest would become the body.
func badFieldBreak(field string) string {
	for i := 0; i < len(field); i++ {
		switch field[i] {
		case '\r':
			if i+1 < len(field) && field[i+1] == '\n' {
				continue
			}
			return "a carriage return"
		case '\n':
			if i+1 == len(field) {
				return "a newline at the end"
			}
			if c := field[i+1]; c != ' ' && c != '\t' {
				return "a newline not followed by a space or tab"
			}
			if strings.TrimLeft(field[i+1:], " \t") == "" || strings.HasPrefix(strings.TrimLeft(field[i+1:], " \t"), "\n") {
				return "a line of only spaces"
			}
		}
	}
	return ""
}

// systemFlags are the flags every folder type can hold (IMAP's system
// flags, but \Recent).
var systemFlags = []string{"seen", "answered", "flagged", "deleted", "draft"}

// flagsAction reads flags: a flag or a list: the system flags, or
// keywords (a word of letters, digits and $-_.).
func (l *loader) flagsAction(p Pos, key, val *yaml.Node, _ map[string]*yaml.Node) Action {
	words := l.strList(val, "flags")
	if len(words) == 0 {
		l.errorf(val, "flags takes a flag or a list: %s, or keywords", strings.Join(systemFlags, ", "))
		return nil
	}
	a := &FlagsAction{Pos: p}
	for _, w := range words {
		switch {
		case slices.Contains(systemFlags, strings.ToLower(w.Value)):
			a.Flags = append(a.Flags, strings.ToLower(w.Value))
		case validKeyword(w.Value):
			a.Keywords = append(a.Keywords, w.Value)
		default:
			l.errs = append(l.errs, &Error{w.Pos, fmt.Sprintf("flag %q is neither %s nor a keyword (letters, digits, $, -, _, ., at most 64)", w.Value, strings.Join(systemFlags, ", "))})
			return nil
		}
	}
	return a
}

func validKeyword(k string) bool {
	if k == "" || len(k) > 64 {
		return false
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("$-_.", c)) {
			return false
		}
	}
	return true
}
