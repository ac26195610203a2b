// Package convert reads procmailrc files and translates them into mfilter
// rules (YAML text), keeping what it cannot translate as comments that say
// why.
package convert

import (
	"fmt"
	"strings"
)

// Item is one statement of a procmailrc: *Comment, *Assign, *Recipe,
// *Junk.
type Item interface{ line() int }

// Comment is a comment line (Text without the #) or, when Blank, an empty
// line.
type Comment struct {
	Line  int
	Text  string
	Blank bool
}

// Assign is VAR=value. Value holds the words as written (quotes kept).
type Assign struct {
	Line  int
	Name  string
	Value []Seg
	Unset bool // "VAR" or "VAR=" with nothing after
	End   int  // its last line (a quoted value may run over several)
}

// Junk is a line procmail would skip with an error.
type Junk struct {
	Line int
	Text string
}

// Recipe is one ":0 flags:lock" recipe.
type Recipe struct {
	Line    int
	Flags   string
	Lock    bool
	Conds   []Cond
	Action  Action
	Inside  []Item // comments between the conditions and the action
	Missing bool   // the file ended before the action
	End     int    // its last line
}

// Cond is one "*" condition line, continuation lines joined, with the
// text after the * and surrounding white space.
type Cond struct {
	Line int
	Text string
}

// ActionKind says what a recipe's action line is.
type ActionKind int

// The action kinds.
const (
	ActFolder ActionKind = iota
	ActPipe
	ActForward
	ActBlock
	ActCapture // VAR=|cmd
)

// Action is a recipe's action line.
type Action struct {
	Line  int
	Kind  ActionKind
	Text  string // the rest of the line after |, ! or the folder names
	Var   string // ActCapture
	Block []Item // ActBlock
}

// Seg is part of a word: plain text, "double-quoted", 'single-quoted' or
// `backquoted` (without the quotes).
type Seg struct {
	Kind byte // 0, '"', '\'', '`'
	Text string
}

// File is a parsed procmailrc.
type File struct {
	Name  string
	Items []Item
}

func (c *Comment) line() int { return c.Line }
func (a *Assign) line() int  { return a.Line }
func (j *Junk) line() int    { return j.Line }
func (r *Recipe) line() int  { return r.Line }

// maxDepth bounds the nesting of { } blocks.
const maxDepth = 64

type parser struct {
	lines []string
	i     int // next line index
	// closeAfter is the index of a line ending in the } of a one-line
	// block "{ VAR=x }": the block ends once it is read; -1: none.
	closeAfter int
}

// Parse parses a procmailrc. It never fails: what it cannot read becomes
// Junk, as procmail skips it.
func Parse(name string, data []byte) *File {
	text := strings.ReplaceAll(string(data), "\r\n", "\n")
	p := &parser{lines: strings.Split(text, "\n"), closeAfter: -1}
	if n := len(p.lines); n > 0 && p.lines[n-1] == "" {
		p.lines = p.lines[:n-1]
	}
	items, _ := p.items(0)
	return &File{Name: name, Items: items}
}

// items reads statements until the end or, nested, a closing brace.
func (p *parser) items(depth int) ([]Item, bool) {
	var out []Item
	for p.i < len(p.lines) {
		if depth > 0 && p.closeAfter >= 0 && p.i > p.closeAfter {
			p.closeAfter = -1
			return out, true
		}
		ln := p.i + 1
		s := strings.TrimSpace(p.lines[p.i])
		switch {
		case s == "":
			p.i++
			out = append(out, &Comment{Line: ln, Blank: true})
		case strings.HasPrefix(s, "#"):
			p.i++
			out = append(out, &Comment{Line: ln, Text: s[1:]})
		case strings.HasPrefix(s, "}"):
			if depth > 0 {
				p.i++
				return out, true
			}
			p.i++
			out = append(out, &Junk{Line: ln, Text: s})
		case isRecipeStart(s):
			out = append(out, p.recipe(depth))
		default:
			out = append(out, p.assignment())
		}
	}
	return out, depth == 0
}

func isRecipeStart(s string) bool {
	return strings.HasPrefix(s, ":") && len(s) > 1 && s[1] >= '0' && s[1] <= '9'
}

// logical returns the current line with backslash-newline continuations
// joined; trim says whether the continued lines lose their leading white
// space (conditions) or keep it (actions, where the shell sees it).
func (p *parser) logical(trim bool) string {
	var b strings.Builder
	for p.i < len(p.lines) {
		l := p.lines[p.i]
		p.i++
		if b.Len() > 0 && trim {
			l = strings.TrimLeft(l, " \t")
		}
		if strings.HasSuffix(l, "\\") && !strings.HasSuffix(l, "\\\\") {
			b.WriteString(l[:len(l)-1])
			continue
		}
		b.WriteString(l)
		break
	}
	return b.String()
}

func (p *parser) recipe(depth int) *Recipe {
	ln := p.i + 1
	head := strings.TrimSpace(p.logical(true))
	r := &Recipe{Line: ln}
	// ":0", then flags, then an optional ":" and lock file; a # starts a
	// comment.
	rest := strings.TrimLeft(head[1:], "0123456789")
	if k := strings.Index(rest, "#"); k >= 0 {
		rest = rest[:k]
	}
	if k := strings.Index(rest, ":"); k >= 0 {
		r.Lock = true
		rest = rest[:k]
	}
	r.Flags = strings.Join(strings.Fields(rest), "")
	for p.i < len(p.lines) {
		cl := p.i + 1
		s := strings.TrimSpace(p.lines[p.i])
		switch {
		case s == "":
			p.i++
			r.Inside = append(r.Inside, &Comment{Line: cl, Blank: true})
		case strings.HasPrefix(s, "#"):
			p.i++
			r.Inside = append(r.Inside, &Comment{Line: cl, Text: s[1:]})
		case strings.HasPrefix(s, "*"):
			t := strings.TrimSpace(p.logical(true))
			r.Conds = append(r.Conds, Cond{Line: cl, Text: strings.TrimSpace(t[1:])})
		default:
			r.Action = p.action(depth)
			r.End = p.i
			return r
		}
	}
	r.Missing = true
	r.End = p.i
	return r
}

func (p *parser) action(depth int) Action {
	ln := p.i + 1
	s := strings.TrimLeft(p.lines[p.i], " \t")
	switch {
	case strings.HasPrefix(s, "{"):
		// Anything after the brace on the same line is read as the
		// block's first line.
		rest := strings.TrimSpace(s[1:])
		switch {
		case rest == "}":
			p.i++
			return Action{Line: ln, Kind: ActBlock}
		case strings.HasSuffix(rest, "}"):
			p.lines[p.i] = strings.TrimSpace(rest[:len(rest)-1])
			p.closeAfter = p.i
		case rest != "":
			p.lines[p.i] = rest
		default:
			p.i++
		}
		if depth+1 >= maxDepth {
			p.i = len(p.lines)
			return Action{Line: ln, Kind: ActBlock}
		}
		items, _ := p.items(depth + 1)
		return Action{Line: ln, Kind: ActBlock, Block: items}
	case strings.HasPrefix(s, "|"):
		t := p.logical(false)
		return Action{Line: ln, Kind: ActPipe, Text: strings.TrimSpace(strings.TrimLeft(t, " \t")[1:])}
	case strings.HasPrefix(s, "!"):
		t := p.logical(false)
		return Action{Line: ln, Kind: ActForward, Text: strings.TrimSpace(strings.TrimLeft(t, " \t")[1:])}
	}
	if name, rest, ok := captureAction(s); ok {
		p.i++
		t := rest
		if strings.HasSuffix(t, "\\") {
			p.i--
			t = p.logical(false)
			_, t, _ = captureAction(strings.TrimLeft(t, " \t"))
		}
		return Action{Line: ln, Kind: ActCapture, Var: name, Text: strings.TrimSpace(t)}
	}
	t := p.logical(false)
	return Action{Line: ln, Kind: ActFolder, Text: strings.TrimSpace(t)}
}

// captureAction recognizes "VAR=|cmd" (white space allowed around =).
func captureAction(s string) (string, string, bool) {
	n := nameLen(s)
	if n == 0 {
		return "", "", false
	}
	rest := strings.TrimLeft(s[n:], " \t")
	if !strings.HasPrefix(rest, "=") {
		return "", "", false
	}
	rest = strings.TrimLeft(rest[1:], " \t")
	if !strings.HasPrefix(rest, "|") {
		return "", "", false
	}
	return s[:n], rest[1:], true
}

// nameLen is the length of the variable name at the start of s.
func nameLen(s string) int {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9' {
			continue
		}
		return i
	}
	return len(s)
}

func (p *parser) assignment() Item {
	ln := p.i + 1
	s := strings.TrimLeft(p.lines[p.i], " \t")
	n := nameLen(s)
	rest := strings.TrimLeft(s[n:], " \t")
	if n == 0 || rest != "" && rest[0] != '=' && rest[0] != '#' {
		p.i++
		return &Junk{Line: ln, Text: strings.TrimSpace(s)}
	}
	a := &Assign{Line: ln, Name: s[:n]}
	if rest == "" || rest[0] == '#' {
		p.i++
		a.Unset = true
		return a
	}
	rest = strings.TrimLeft(rest[1:], " \t")
	p.i++
	segs, err := p.word(rest)
	if err != nil {
		return &Junk{Line: ln, Text: fmt.Sprintf("%s (%v)", strings.TrimSpace(s), err)}
	}
	a.Value = segs
	a.Unset = len(segs) == 0
	a.End = max(p.i, ln)
	return a
}

// word reads one shell-like word starting at s, reading more lines while a
// quote is open or a line ends in a backslash. What follows the word on
// its last line (a comment) is dropped.
func (p *parser) word(s string) ([]Seg, error) {
	var segs []Seg
	var cur strings.Builder
	var quote byte
	flush := func(kind byte) {
		if cur.Len() > 0 || kind != 0 {
			segs = append(segs, Seg{Kind: kind, Text: cur.String()})
		}
		cur.Reset()
	}
	for {
		for i := 0; i < len(s); i++ {
			c := s[i]
			switch {
			case quote != 0 && c == quote:
				flush(quote)
				quote = 0
			case quote == 0 && c == '$' && i+1 < len(s) && s[i+1] == '{':
				// sh removes the quotes of a default word: ${V:-'x y'}.
				ref, n := braceWord(s[i:])
				cur.WriteString(ref)
				i += n - 1
			case quote == '"' && c == '`':
				cmd, n, ok := backquoted(s[i:])
				if !ok {
					cur.WriteByte(c)
					continue
				}
				if cur.Len() > 0 {
					flush('"')
				}
				segs = append(segs, Seg{Kind: '`', Text: cmd})
				i += n - 1
			case quote == 0 && (c == '"' || c == '\'' || c == '`'):
				flush(0)
				quote = c
			case c == '\\' && i+1 < len(s) && quote != '\'':
				cur.WriteByte(c)
				cur.WriteByte(s[i+1])
				i++
			case c == '\\' && i+1 == len(s):
				// continuation: the word goes on at the next line
			case quote == 0 && (c == ' ' || c == '\t'):
				flush(0)
				p.rest(s[i+1:])
				return segs, nil
			default:
				cur.WriteByte(c)
			}
		}
		cont := strings.HasSuffix(s, "\\") && !strings.HasSuffix(s, "\\\\")
		if quote == 0 && !cont {
			flush(0)
			return segs, nil
		}
		if p.i >= len(p.lines) {
			return nil, fmt.Errorf("unterminated %c quote", quote)
		}
		if quote != 0 && !cont {
			cur.WriteByte('\n')
		}
		s = p.lines[p.i]
		p.i++
	}
}

// rest hands what follows a word on its line back to the statement
// reader, as procmail reads it: "V=x }" closes a block, "V=x W" unsets W.
// A comment is dropped.
func (p *parser) rest(s string) {
	s = strings.TrimSpace(s)
	if s == "" || s[0] == '#' || p.i == 0 {
		return
	}
	p.i--
	p.lines[p.i] = s
}

// braceWord reads the ${...} reference at the start of s, up to its
// closing brace, without the quote characters inside it, and returns it
// and the bytes read. Without a closing brace it reads only the $.
func braceWord(s string) (string, int) {
	var b strings.Builder
	var quote byte
	depth := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
			b.WriteByte(c)
		case c == '\'' || c == '"':
			quote = c
		case c == '\\' && i+1 < len(s):
			b.WriteByte(c)
			b.WriteByte(s[i+1])
			i++
		case c == '{':
			depth++
			b.WriteByte(c)
		case c == '}':
			b.WriteByte(c)
			if depth--; depth == 0 {
				return b.String(), i + 1
			}
		default:
			b.WriteByte(c)
		}
	}
	return "$", 1
}

// backquoted reads the `command` at the start of s, inside double quotes,
// and returns the command as the shell runs it (\", \\, \$ and \` lose
// their backslash) and the bytes read; ok is false without a closing `.
func backquoted(s string) (cmd string, n int, ok bool) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '`':
			return b.String(), i + 1, true
		case c == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0:
			b.WriteByte(s[i+1])
			i++
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, false
}
