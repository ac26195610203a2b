package convert

import (
	"fmt"
	"path/filepath"
	"strings"
)

// action translates a recipe's action into res.
func (f *fileConv) action(r *Recipe, fl flags, res *recipeResult) error {
	a := r.Action
	switch a.Kind {
	case ActBlock:
		if fl.c {
			return fmt.Errorf("a c block runs in a copy of procmail (fork); mfilter has no equivalent")
		}
		res.rules = f.level(a.Block, r)
		return nil
	case ActCapture:
		return f.captureAction(a, fl, res)
	case ActForward:
		return f.forwardAction(a, fl, res)
	case ActPipe:
		return f.pipeAction(a, fl, res)
	}
	return f.folderAction(a, fl, res)
}

func inputOf(fl flags) string {
	switch {
	case fl.h && !fl.b:
		return "header"
	case fl.b && !fl.h:
		return "body"
	}
	return ""
}

func (f *fileConv) captureAction(a Action, fl flags, res *recipeResult) error {
	cmd, err := translateCommand(a.Text, f)
	if err != nil {
		return err
	}
	in := inputOf(fl)
	if in == "" {
		in = "message"
	}
	res.then = append(res.then, mapping{{"set", mapping{{mfName(a.Var), mapping{{"output-of", cmd.seq()}, {"input", plain(in)}}}}}})
	f.varSet[mfName(a.Var)] = true
	return nil
}

func (f *fileConv) forwardAction(a Action, fl flags, res *recipeResult) error {
	words, metas, err := shellWords(stripComment(a.Text))
	if err != nil {
		return err
	}
	if metas {
		return fmt.Errorf("the forward addresses hold shell syntax")
	}
	var addrs seq
	for _, w := range words {
		t, err := wordTemplate(w, f)
		if err != nil {
			return err
		}
		if strings.HasPrefix(t, "-") {
			return fmt.Errorf("forward with sendmail option %s", t)
		}
		addrs = append(addrs, t)
	}
	if len(addrs) == 0 {
		return fmt.Errorf("forward to no address")
	}
	if inputOf(fl) != "" {
		return fmt.Errorf("a forward of only the %s; mfilter forwards whole messages", inputOf(fl))
	}
	var v any = addrs
	if len(addrs) == 1 {
		v = addrs[0]
	}
	m := mapping{{"forward", v}}
	if fl.c {
		m = append(m, kv{"continue", plain("true")})
	} else {
		res.delivering = true
	}
	res.then = append(res.then, m)
	return nil
}

// stripComment drops a trailing "# comment" that follows white space.
func stripComment(s string) string {
	quote := byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '\\':
			i++
		case c == '#' && i > 0 && (s[i-1] == ' ' || s[i-1] == '\t'):
			return strings.TrimRight(s[:i], " \t")
		}
	}
	return s
}

// knownFolder is folder name n with ${HOME} as ~ and the variables whose
// values are known when converting put in; ok is false when n holds
// another variable.
func (f *fileConv) knownFolder(n string) (string, bool) {
	n = strings.Replace(n, "${HOME}", "~", 1)
	for range maxKnownVars {
		k := strings.Index(n, "${")
		if k < 0 {
			return n, true
		}
		e := strings.IndexByte(n[k:], '}')
		if e < 0 {
			return "", false
		}
		name := n[k+2 : k+e]
		v, ok := f.consts[name]
		if !ok {
			v, ok = f.plainVals[name]
		}
		if !ok || strings.Contains(v, "${") {
			return "", false
		}
		n = n[:k] + v + n[k+e+1:]
	}
	return "", false
}

// maxKnownVars bounds the references knownFolder puts in.
const maxKnownVars = 8

func (f *fileConv) folderAction(a Action, fl flags, res *recipeResult) error {
	folders, err := f.folderNames(a, res)
	if err != nil {
		return err
	}
	for _, name := range folders {
		if n, ok := f.knownFolder(name.(string)); ok {
			f.g.res.Folders = append(f.g.res.Folders, n)
		}
	}
	if len(folders) == 0 {
		return fmt.Errorf("empty folder name")
	}
	if in := inputOf(fl); in != "" {
		return fmt.Errorf("delivers only the %s of the message; mfilter folders get the whole message", in)
	}
	if len(folders) == 1 && filepath.Clean(folders[0].(string)) == "/dev/null" {
		if fl.c {
			return nil
		}
		res.then = append(res.then, plain("discard"))
		res.delivering = true
		return nil
	}
	var v any = folders
	if len(folders) == 1 {
		v = folders[0]
	}
	if fl.c {
		res.then = append(res.then, mapping{{"copy", v}})
		return nil
	}
	res.then = append(res.then, mapping{{"folder", v}})
	res.delivering = true
	return nil
}

// folderNames reads the folder names of an action line. A name with a
// backquoted command (.lists.`echo $MATCH | tr A-Z a-z`/) gets the
// command's output through a set action before the delivery, as procmail
// runs it (with the message on its standard input).
func (f *fileConv) folderNames(a Action, res *recipeResult) (seq, error) {
	text := stripComment(a.Text)
	if strings.Contains(text, "`") {
		p := &parser{lines: []string{text}, closeAfter: -1, i: 1}
		segs, err := p.word(text)
		if err != nil {
			return nil, err
		}
		ps, pre, err := f.segsValue(segs, a.Line, "")
		if err != nil {
			return nil, err
		}
		res.then = append(res.then, pre...)
		return seq{f.underHome(templateOf(ps))}, nil
	}
	words, _, err := shellWords(text)
	if err != nil {
		return nil, err
	}
	var folders seq
	for _, w := range words {
		t, err := wordTemplate(w, f)
		if err != nil {
			return nil, err
		}
		folders = append(folders, f.underHome(t))
	}
	return folders, nil
}

// pipeAction translates | cmd: formail's header edits and duplicate
// check, auto-replies, filters and pipes.
func (f *fileConv) pipeAction(a Action, fl flags, res *recipeResult) error {
	if !fl.f {
		if done, err := f.autoReply(a.Text, fl, res); done || err != nil {
			return err
		}
	}
	cmd, err := translateCommand(a.Text, f)
	if err != nil {
		return err
	}
	if !cmd.Shell && isFormail(f.programOf(cmd.Argv[0])) {
		done, err := f.formail(cmd.Argv[1:], fl, res)
		if done || err != nil {
			return err
		}
	}
	if fl.f {
		return f.filterAction(cmd, fl, res)
	}
	if !fl.c && (fl.w || fl.W) {
		checkedPipe(cmd, fl, res)
		return nil
	}
	m := mapping{{"pipe", cmd.seq()}}
	if in := inputOf(fl); in != "" {
		m = append(m, kv{"input", plain(in)})
	}
	if fl.c || !fl.w && !fl.W {
		// procmail neither waits for nor checks a pipe without w, and a
		// copy that fails changes nothing but the a recipes after it.
		// (i only ignores the program's not reading all its input,
		// which mfilter always ignores.)
		m = append(m, kv{"ignore-exit", plain("true")})
	}
	if fl.c {
		m = append(m, kv{"continue", plain("true")})
	} else {
		res.delivering = true
	}
	res.then = append(res.then, m)
	return nil
}

// checkedPipe translates a pipe whose exit status procmail checks (w or
// W, not c): when the program fails, procmail goes on with the next
// recipe. The program becomes the recipe's last condition, and its
// success delivers: the message goes nowhere else.
func checkedPipe(cmd command, fl flags, res *recipeResult) {
	pc := mapping{{"command", cmd.seq()}}
	if in := inputOf(fl); in != "" {
		pc = append(pc, kv{"input", plain(in)})
	}
	prog := mapping{{"program", pc}}
	switch c := res.cond.(type) {
	case nil:
		res.cond = prog
	case seq:
		res.cond = append(c, prog)
	default:
		res.cond = seq{c, prog}
	}
	res.then = append(res.then, plain("discard"))
	res.delivering = true
}

func (f *fileConv) filterAction(cmd command, fl flags, res *recipeResult) error {
	m := mapping{{"filter", cmd.seq()}}
	if in := inputOf(fl); in != "" {
		m = append(m, kv{"input", plain(in)})
	}
	if !fl.w && !fl.W {
		// Without w procmail takes the output even of a failed filter
		// (checked with procmail 3.22: an exit 3 that printed a message).
		m = append(m, kv{"on-failure", plain("use-output")})
	}
	res.then = append(res.then, m)
	return nil
}

// programOf is a command's program name with a constant variable
// ($FORMAIL=/usr/bin/formail) replaced by its value.
func (f *fileConv) programOf(arg string) string {
	if name, ok := strings.CutPrefix(arg, "${"); ok && strings.HasSuffix(name, "}") {
		if c, ok := f.consts[strings.TrimSuffix(name, "}")]; ok {
			return c
		}
	}
	return arg
}

func isFormail(s string) bool {
	return s == "formail" || strings.HasSuffix(s, "/formail")
}
