package rules

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
)

// Section is a top-level section kept as YAML for another package.
type Section struct {
	Path string
	Node *yaml.Node
}

// Load reads, parses and checks the rules file at path and the files it
// includes. It returns an ErrorList (exit 78) listing every problem with
// file:line:col, an *InsecureError (exit 77) for a file or directory others
// may write, or an I/O error.
func Load(path string) (*Config, error) {
	l := &loader{seen: make(map[string]bool)}
	cfg := &Config{Path: path, Sections: make(map[string]*Section)}
	if err := l.loadFile(cfg, path, true); err != nil {
		return nil, err
	}
	if l.insecure != nil {
		return nil, l.insecure
	}
	if len(l.errs) == 0 {
		check(cfg, &l.errs)
	}
	if len(l.errs) > 0 {
		sortErrors(l.errs)
		return nil, l.errs
	}
	return cfg, nil
}

// Parse parses and checks rules from data as if read from path. Includes
// are read from the file system relative to path.
func Parse(path string, data []byte) (*Config, error) {
	l := &loader{seen: map[string]bool{path: true}, skipSecurity: true}
	cfg := &Config{Path: path, Sections: make(map[string]*Section)}
	if err := l.parseData(cfg, path, data, true); err != nil {
		return nil, err
	}
	if len(l.errs) == 0 {
		check(cfg, &l.errs)
	}
	if len(l.errs) > 0 {
		sortErrors(l.errs)
		return nil, l.errs
	}
	return cfg, nil
}

func sortErrors(errs ErrorList) {
	sort.SliceStable(errs, func(i, j int) bool {
		a, b := errs[i].Pos, errs[j].Pos
		if a.File != b.File {
			return false
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
}

type loader struct {
	errs         ErrorList
	insecure     *InsecureError  // an included file others may write
	seen         map[string]bool // files being loaded, against include loops
	skipSecurity bool
	file         string
	// fallbackDepth is how deep in fallback: actions the loader reads.
	fallbackDepth int
}

func (l *loader) errorf(n *yaml.Node, format string, args ...any) {
	l.errs = append(l.errs, &Error{l.pos(n), fmt.Sprintf(format, args...)})
}

func (l *loader) pos(n *yaml.Node) Pos {
	if n == nil {
		return Pos{File: l.file}
	}
	return Pos{File: l.file, Line: n.Line, Col: n.Column}
}

// CheckSecurity refuses a rules file that someone else could modify: the
// file or its directory writable by others, or by a group other than its
// owner's private group (a sticky directory is fine for the directory),
// or owned by another user than the one running mfilter or root. procmail refuses such rcfiles too. A symbolic
// link is followed: the file it names and that file's directory count,
// and so does the directory of every link on the way, which could be
// made to point elsewhere.
func CheckSecurity(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if othersMayWrite(st) {
		return &InsecureError{path, fmt.Sprintf("it is writable by group or others (mode %04o); run chmod go-w %s", st.Mode().Perm(), path)}
	}
	if uid, ok := ownerOf(st); ok && uid != 0 && uid != os.Geteuid() {
		return &InsecureError{path, fmt.Sprintf("it is owned by uid %d, not by you (uid %d) or root", uid, os.Geteuid())}
	}
	dirs, err := linkDirs(path)
	if err != nil {
		return err
	}
	for _, dir := range dirs {
		dst, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if othersMayWrite(dst) && dst.Mode()&fs.ModeSticky == 0 {
			return &InsecureError{path, fmt.Sprintf("its directory %s is writable by group or others (mode %04o)", dir, dst.Mode().Perm())}
		}
	}
	return nil
}

// maxLinks bounds the symbolic links followed from a rules file's path.
const maxLinks = 40

// linkDirs lists the directory of path and, while path is a symbolic
// link, the directory of each file it leads to.
func linkDirs(path string) ([]string, error) {
	var dirs []string
	for range maxLinks {
		dirs = append(dirs, filepath.Dir(path))
		lst, err := os.Lstat(path)
		if err != nil {
			return nil, err
		}
		if lst.Mode()&fs.ModeSymlink == 0 {
			return dirs, nil
		}
		target, err := os.Readlink(path)
		if err != nil {
			return nil, err
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(path), target)
		}
		path = target
	}
	return nil, fmt.Errorf("%s: too many symbolic links", path)
}

func (l *loader) loadFile(cfg *Config, path string, top bool) error {
	if !l.skipSecurity {
		if err := CheckSecurity(path); err != nil {
			return err
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read rules: %w", err)
	}
	l.seen[path] = true
	defer delete(l.seen, path)
	return l.parseData(cfg, path, data, top)
}

// parseData parses one file's YAML. Top files hold settings and rules;
// included files hold vars and rules.
func (l *loader) parseData(cfg *Config, path string, data []byte, top bool) error {
	saved := l.file
	l.file = path
	defer func() { l.file = saved }()
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		l.errs = append(l.errs, yamlError(path, data, err))
		return nil
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		if top {
			l.errs = append(l.errs, &Error{Pos{path, 1, 1}, "the rules file is empty (it needs at least a rules: list or a default: folder)"})
		}
		return nil
	}
	root := doc.Content[0]
	l.duplicateKeys(root)
	rules, ok := l.topLevel(cfg, root, top)
	if ok {
		cfg.Rules = append(cfg.Rules, rules...)
	}
	return nil
}

// yamlLine is compiled on first use: only a rules file with an error
// needs it.
var yamlLine = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`) })

// scannerErrors are the YAML scanner's messages; the parser's line for
// them is already 1-based, for all others it is 0-based (go-yaml quirk).
var scannerErrors = map[string]bool{
	"block sequence entries are not allowed in this context":       true,
	"could not find expected ':'":                                  true,
	"did not find expected comment or line break":                  true,
	"did not find expected whitespace or line break":               true,
	"found a tab character that violates indentation":              true,
	"found a tab character where an indentation space is expected": true,
	"found character that cannot start any token":                  true,
	"found unexpected document indicator":                          true,
	"found unexpected end of stream":                               true,
	"found unknown escape character":                               true,
	"mapping keys are not allowed in this context":                 true,
	"mapping values are not allowed in this context":               true,
	"did not find expected hexdecimal number":                      true,
	"found invalid Unicode character escape code":                  true,
}

// yamlError turns a YAML syntax error into file:line:col form. go-yaml
// gives a line only, sometimes 0-based; the column is found on that line.
func yamlError(path string, data []byte, err error) *Error {
	msg := err.Error()
	m := yamlLine().FindStringSubmatch(msg)
	if m == nil {
		return &Error{Pos{path, 1, 1}, "YAML: " + msg}
	}
	text := m[2]
	line := 1
	if m[1] != "" {
		line, _ = strconv.Atoi(m[1])
		if !scannerErrors[text] {
			line++
		}
	}
	lines := strings.Split(string(data), "\n")
	if line > len(lines) {
		line = len(lines)
	}
	if line < 1 {
		line = 1
	}
	src := lines[line-1]
	col := 1
	switch {
	case strings.Contains(text, "'}'"):
		col = strings.LastIndexByte(src, '{') + 1
	case strings.Contains(text, "']'"):
		col = strings.LastIndexByte(src, '[') + 1
	case strings.Contains(text, "tab") || strings.Contains(text, "cannot start any token"):
		col = strings.IndexAny(src, "\t") + 1
	default:
		col = len(src) - len(strings.TrimLeft(src, " \t")) + 1
	}
	if col < 1 {
		col = 1
	}
	return &Error{Pos{path, line, col}, "YAML: " + text}
}

// duplicateKeys reports keys defined twice in one mapping, which YAML
// parsing into a node tree accepts silently.
func (l *loader) duplicateKeys(n *yaml.Node) {
	if n.Kind == yaml.MappingNode {
		seen := make(map[string]*yaml.Node)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind == yaml.ScalarNode {
				if prev, ok := seen[k.Value]; ok {
					l.errorf(k, "key %q is already defined at line %d", k.Value, prev.Line)
				}
				seen[k.Value] = k
			}
		}
	}
	for _, c := range n.Content {
		l.duplicateKeys(c)
	}
}

var topKeys = []string{"maildir", "default", "log", "log-format", "sendmail", "trusted-authserv-id", "vars", "rules", "fetch", "send"}
var includeKeys = []string{"vars", "rules"}

func (l *loader) topLevel(cfg *Config, root *yaml.Node, top bool) ([]*Rule, bool) {
	if root.Kind == yaml.SequenceNode {
		// A bare list of rules is allowed, in included files above all.
		return l.ruleList(root), true
	}
	if root.Kind != yaml.MappingNode {
		l.errorf(root, "expected a mapping with rules: and settings, found %s", kindName(root))
		return nil, false
	}
	allowed := topKeys
	if !top {
		allowed = includeKeys
	}
	var rules []*Rule
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if !l.known(k, allowed, "setting") {
			continue
		}
		switch k.Value {
		case "maildir":
			cfg.Maildir = l.plainPath(v, "maildir")
		case "default":
			cfg.Default = l.plainPath(v, "default")
			if cfg.Default != nil && namesRootDir(cfg.Default.Value) {
				l.errorf(v, "default %q names the root directory", cfg.Default.Value)
			}
		case "log":
			cfg.Log = l.plainPath(v, "log")
		case "log-format":
			if s := l.str(v, "log-format"); s != nil {
				if s.Value != "procmail" && s.Value != "json" {
					l.errorf(v, "log-format must be procmail or json, not %q", s.Value)
				}
				cfg.LogFormat = s
			}
		case "sendmail":
			cfg.Sendmail = l.templates(v, "sendmail")
		case "trusted-authserv-id":
			cfg.TrustedAuthServIDs = l.strList(v, "trusted-authserv-id")
		case "vars":
			cfg.Vars = append(cfg.Vars, l.vars(v)...)
		case "rules":
			if v.Kind != yaml.SequenceNode {
				l.errorf(v, "rules must be a list of rules, found %s", kindName(v))
				continue
			}
			rules = append(rules, l.ruleList(v)...)
		case "fetch", "send":
			// fetch: may list several sources.
			if v.Kind != yaml.MappingNode && (k.Value != "fetch" || v.Kind != yaml.SequenceNode) {
				l.errorf(v, "%s must be a mapping, found %s", k.Value, kindName(v))
				continue
			}
			cfg.Sections[k.Value] = &Section{Path: l.file, Node: v}
		}
	}
	return rules, true
}

// known reports whether key k is one of allowed; otherwise it records an
// error with a suggestion.
func (l *loader) known(k *yaml.Node, allowed []string, what string) bool {
	if k.Kind != yaml.ScalarNode {
		l.errorf(k, "expected a %s name, found %s", what, kindName(k))
		return false
	}
	for _, a := range allowed {
		if k.Value == a {
			return true
		}
	}
	msg := fmt.Sprintf("unknown %s %q", what, k.Value)
	if s := suggest(k.Value, allowed); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	} else {
		msg += " (known: " + strings.Join(allowed, ", ") + ")"
	}
	l.errorf(k, "%s", msg)
	return false
}

// suggest returns the allowed word closest to s, if it is close.
func suggest(s string, allowed []string) string {
	best, bestD := "", 3
	for _, a := range allowed {
		if d := editDistance(s, a); d < bestD {
			best, bestD = a, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}

// str reads a scalar string. Numbers and booleans are taken as written.
func (l *loader) str(n *yaml.Node, what string) *Str {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		l.errorf(n, "%s must be a string, found %s", what, kindName(n))
		return nil
	}
	return &Str{l.pos(n), n.Value}
}

// plainPath reads a setting that names a file or folder as written: no
// variables are expanded there, so that no message can name it.
func (l *loader) plainPath(n *yaml.Node, what string) *Str {
	s := l.str(n, what)
	if s != nil && strings.Contains(s.Value, "${") {
		l.errorf(n, "%s is a plain path: ${...} is not expanded there (only ~/ is); found %q", what, s.Value)
		return nil
	}
	if s != nil && strings.ContainsRune(s.Value, 0) {
		l.errorf(n, "%s contains a NUL byte", what)
		return nil
	}
	return s
}

// namesRootDir reports whether a folder name means the root directory,
// whatever its type suffix: "/", "/.", "/./", "/tmp/../".
func namesRootDir(spec string) bool {
	p := strings.TrimSuffix(spec, "/.")
	p = strings.TrimRight(p, "/")
	if p == "" {
		return strings.HasPrefix(spec, "/")
	}
	return filepath.IsAbs(p) && filepath.Clean(p) == "/"
}

// strList reads a string or a list of strings.
func (l *loader) strList(n *yaml.Node, what string) []Str {
	if n.Kind == yaml.SequenceNode {
		var out []Str
		for _, c := range n.Content {
			if s := l.str(c, what+" entry"); s != nil {
				out = append(out, *s)
			}
		}
		if len(out) == 0 && len(n.Content) == 0 {
			l.errorf(n, "%s is an empty list", what)
		}
		return out
	}
	if s := l.str(n, what); s != nil {
		return []Str{*s}
	}
	return nil
}

func (l *loader) template(n *yaml.Node, what string) *Template {
	s := l.str(n, what)
	if s == nil {
		return nil
	}
	pos := s.Pos
	if n.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle) != 0 {
		pos.Col++ // the opening quote
	}
	t, err := parseTemplate(pos, s.Value)
	if err != nil {
		l.errs = append(l.errs, err.(*Error))
		return nil
	}
	return t
}

func (l *loader) templates(n *yaml.Node, what string) []*Template {
	var out []*Template
	nodes := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		nodes = n.Content
		if len(nodes) == 0 {
			l.errorf(n, "%s is an empty list", what)
		}
	}
	for _, c := range nodes {
		if t := l.template(c, what); t != nil {
			out = append(out, t)
		}
	}
	return out
}

func (l *loader) boolean(n *yaml.Node, what string) bool {
	if n.Kind != yaml.ScalarNode {
		l.errorf(n, "%s must be true or false, found %s", what, kindName(n))
		return false
	}
	switch n.Value {
	case "true", "yes", "on":
		return true
	case "false", "no", "off":
		return false
	}
	l.errorf(n, "%s must be true or false, found %q", what, n.Value)
	return false
}

func (l *loader) duration(n *yaml.Node, what string) time.Duration {
	s := l.str(n, what)
	if s == nil {
		return 0
	}
	d, err := time.ParseDuration(s.Value)
	if err != nil {
		// Whole seconds, as long as they fit a Duration.
		if v, err2 := strconv.Atoi(s.Value); err2 == nil && v <= math.MaxInt64/int(time.Second) {
			d, err = time.Duration(v)*time.Second, nil
		}
	}
	if err != nil || d <= 0 {
		l.errorf(n, "%s must be a positive duration like 30s or 2m, found %q", what, s.Value)
		return 0
	}
	return d
}

func (l *loader) number(n *yaml.Node, what string) float64 {
	s := l.str(n, what)
	if s == nil {
		return 0
	}
	f, err := strconv.ParseFloat(s.Value, 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange):
		l.errorf(n, "%s must be a number, found %q", what, s.Value)
		return 0
	case err != nil || math.IsInf(f, 0) || math.IsNaN(f):
		l.errorf(n, "%s must be a finite number, found %q", what, s.Value)
		return 0
	}
	return f
}

func (l *loader) vars(n *yaml.Node) []VarDef {
	if n.Kind != yaml.MappingNode {
		l.errorf(n, "vars must be a mapping of names to values, found %s", kindName(n))
		return nil
	}
	var out []VarDef
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name := l.str(k, "variable name")
		if name == nil {
			continue
		}
		if !validName(name.Value) {
			l.errorf(k, "bad variable name %q (letters, digits, _, - and .)", name.Value)
			continue
		}
		if builtinVars[name.Value] {
			l.errorf(k, "%s is a built-in variable and cannot be redefined", name.Value)
			continue
		}
		if v.Kind == yaml.MappingNode {
			if prog := l.outputOf(v); prog != nil {
				out = append(out, VarDef{Name: *name, Program: prog})
			}
			continue
		}
		if t := l.template(v, "variable "+name.Value); t != nil {
			out = append(out, VarDef{Name: *name, Value: t})
		}
	}
	return out
}

// programInputs are what input: may give a program: the message as
// procmail pipes it, its header (with the From_ line and the blank line
// after it), its body, or nothing.
var programInputs = []string{"message", "header", "body", "none"}

// outputOf reads {output-of: [argv], input: I, timeout: T}.
func (l *loader) outputOf(n *yaml.Node) *OutputOf {
	o := &OutputOf{Pos: l.pos(n), Input: "message", Timeout: defaultProgramTimeout}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !l.known(k, []string{"output-of", "input", "timeout"}, "variable option") {
			continue
		}
		switch k.Value {
		case "output-of":
			o.Argv = l.argv(v, "output-of")
		case "input":
			o.Input = l.oneOf(v, "input", programInputs)
		case "timeout":
			o.Timeout = l.duration(v, "timeout")
		}
	}
	if len(o.Argv) == 0 {
		if !hasAnyKey(n, []string{"output-of"}) {
			l.errorf(n, "a variable's value is a string, or {output-of: [program, args...]}")
		}
		return nil
	}
	return o
}

// oneOf reads a string that must be one of allowed.
func (l *loader) oneOf(n *yaml.Node, what string, allowed []string) string {
	s := l.str(n, what)
	if s == nil {
		return allowed[0]
	}
	for _, a := range allowed {
		if s.Value == a {
			return a
		}
	}
	l.errorf(n, "%s must be one of %s, not %q", what, strings.Join(allowed, ", "), s.Value)
	return allowed[0]
}

var ruleKeys = []string{"name", "if", "then", "rules", "include"}

func (l *loader) ruleList(n *yaml.Node) []*Rule {
	var out []*Rule
	for _, c := range n.Content {
		out = append(out, l.rule(c)...)
	}
	return out
}

// rule reads one rule, or the rules of an include item.
func (l *loader) rule(n *yaml.Node) []*Rule {
	if n.Kind != yaml.MappingNode {
		l.errorf(n, "a rule must be a mapping (name, if, then, rules), found %s", kindName(n))
		return nil
	}
	r := &Rule{Pos: l.pos(n)}
	var include *yaml.Node
	seenThen := false
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !l.known(k, ruleKeys, "rule key") {
			continue
		}
		switch k.Value {
		case "name":
			if s := l.str(v, "name"); s != nil {
				r.Name = s.Value
			}
		case "if":
			r.If = l.cond(v)
		case "then":
			seenThen = true
			r.Then = l.actions(v)
		case "rules":
			if v.Kind != yaml.SequenceNode {
				l.errorf(v, "rules must be a list of rules, found %s", kindName(v))
				continue
			}
			r.Rules = l.ruleList(v)
		case "include":
			include = v
		}
	}
	if include != nil {
		if len(n.Content) > 2 {
			l.errorf(n, "an include item takes no other keys")
		}
		return l.include(include)
	}
	if !seenThen && r.Rules == nil {
		l.errorf(n, "rule %s has no then: and no rules: (nothing to do)", r.Label())
	}
	r.label = r.stepLabel()
	return []*Rule{r}
}

func (l *loader) include(v *yaml.Node) []*Rule {
	s := l.str(v, "include")
	if s == nil {
		return nil
	}
	path := s.Value
	if strings.HasPrefix(path, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			path = filepath.Join(home, path[2:])
		}
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(l.file), path)
	}
	if l.seen[path] {
		l.errorf(v, "include loop: %s includes itself", path)
		return nil
	}
	// Only a regular file: an include of /dev/stdin would eat the
	// message being filed, one of /dev/zero would never end.
	if st, err := os.Stat(path); err == nil && !st.Mode().IsRegular() {
		l.errorf(v, "include %s: not a regular file", s.Value)
		return nil
	}
	sub := &Config{Sections: map[string]*Section{}}
	if err := l.loadFile(sub, path, false); err != nil {
		var ie *InsecureError
		var pe *fs.PathError
		switch {
		case errors.As(err, &ie):
			// Refused like the top file (exit 77), not a mistake in
			// the rules (78).
			if l.insecure == nil {
				l.insecure = ie
			}
		case errors.As(err, &pe):
			l.errorf(v, "include %s: %v", s.Value, pe.Err)
		default:
			l.errorf(v, "include %s: %v", s.Value, err)
		}
		return nil
	}
	if len(sub.Vars) > 0 {
		// Included vars behave as if defined before the rules that follow.
		r := &Rule{Pos: l.pos(v), Then: []Action{&SetAction{Pos: l.pos(v), Vars: sub.Vars}}, Rules: sub.Rules}
		r.label = r.stepLabel()
		return []*Rule{r}
	}
	return sub.Rules
}
