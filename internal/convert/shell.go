package convert

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// shellMetas is procmail's SHELLMETAS default plus what would make a
// plain split wrong: a command holding one of these runs through sh -c.
const shellMetas = "&|<>~;?*[`()$\n"

// command is a procmail command line as mfilter runs it: an argv of
// templates. Shell is set when it needed sh -c. Optional[i] marks an
// argument that is only unquoted variables: procmail, like a shell,
// leaves it out when it expands to nothing.
type command struct {
	Argv     []string
	Optional []bool
	Shell    bool
}

// seq is the argument list as YAML, an optional argument written
// {optional: TEMPLATE}.
func (c command) seq() seq {
	out := make(seq, len(c.Argv))
	for i, a := range c.Argv {
		out[i] = a
		if i < len(c.Optional) && c.Optional[i] {
			out[i] = mapping{{"optional", a}}
		}
	}
	return out
}

// onlyVars matches an unquoted word made of variable references alone.
var onlyVars = regexp.MustCompile(`^(?:\$(?:\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*|[=-]))+$`)

// translateCommand turns a procmail action or condition command into an
// argv. Without shell syntax, procmail splits the words itself and so
// does this. With it, the command runs as sh -c SCRIPT sh ARGS...: every
// variable becomes a positional parameter "$N", so that no expanded value
// (a MATCH taken from the message, say) is ever read as shell code.
func translateCommand(text string, ex expander) (command, error) {
	text = stripComment(text)
	words, metas, err := shellWords(text)
	if err != nil {
		return command{}, err
	}
	if r, ok := ex.(programRecorder); ok {
		for _, name := range programNames(text) {
			r.sawProgram(name)
		}
	}
	if !metas {
		return splitCommand(words, ex)
	}
	return shellCommand(text, ex)
}

// splitCommand makes the argv of a command procmail splits itself. A word
// of unquoted variables alone is optional; one that is a constant empty
// string (${X:-}) is left out here.
func splitCommand(words [][]Seg, ex expander) (command, error) {
	var cmd command
	for _, w := range words {
		t, err := wordTemplate(w, ex)
		if err != nil {
			return command{}, err
		}
		opt := len(w) == 1 && w[0].Kind == 0 && onlyVars.MatchString(w[0].Text)
		if opt && t == "" {
			continue
		}
		if opt && len(cmd.Argv) == 0 {
			// The program itself: an empty one fails either way.
			opt = false
		}
		cmd.Argv = append(cmd.Argv, t)
		cmd.Optional = append(cmd.Optional, opt && strings.Contains(t, "${"))
	}
	if len(cmd.Argv) == 0 {
		return command{}, fmt.Errorf("empty command")
	}
	return cmd, nil
}

// wordTemplate expands one word's segments.
func wordTemplate(w []Seg, ex expander) (string, error) {
	var b strings.Builder
	for _, s := range w {
		switch s.Kind {
		case '\'':
			b.WriteString(literalTemplate(s.Text))
		default:
			ps, err := scanVars(s.Text, s.Kind == '"', false, ex)
			if err != nil {
				return "", err
			}
			b.WriteString(templateOf(ps))
		}
	}
	return b.String(), nil
}

// shellWords splits a command as procmail does when it runs it without a
// shell, and reports whether it holds shell syntax.
func shellWords(text string) ([][]Seg, bool, error) {
	var words [][]Seg
	var cur []Seg
	var b strings.Builder
	var quote byte
	metas := false
	inWord := false
	flush := func(kind byte) {
		if b.Len() > 0 || kind != 0 {
			cur = append(cur, Seg{Kind: kind, Text: b.String()})
		}
		b.Reset()
	}
	for i := 0; i < len(text); i++ {
		c := text[i]
		switch {
		case quote != 0 && c == quote:
			flush(quote)
			quote = 0
		case quote == 0 && (c == '"' || c == '\''):
			flush(0)
			quote, inWord = c, true
		case c == '\\' && quote != '\'' && i+1 < len(text):
			b.WriteByte(c)
			b.WriteByte(text[i+1])
			i++
			inWord = true
		case quote == 0 && (c == ' ' || c == '\t'):
			if inWord {
				flush(0)
				words = append(words, cur)
				cur, inWord = nil, false
			}
		default:
			if quote == 0 && strings.IndexByte(shellMetas, c) >= 0 {
				if c != '$' || i+1 < len(text) && text[i+1] == '(' {
					metas = true
				}
			}
			b.WriteByte(c)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, false, fmt.Errorf("unterminated %c quote in command", quote)
	}
	if inWord {
		flush(0)
		words = append(words, cur)
	}
	return words, metas, nil
}

// shellCommand builds sh -c SCRIPT sh ARGS: procmail expands variables in
// the command before the shell sees it (not inside single quotes); here
// each reference becomes "$N" and its value an argument.
func shellCommand(text string, ex expander) (command, error) {
	var script strings.Builder
	var args []string
	var quote byte
	for i := 0; i < len(text); i++ {
		c := text[i]
		switch {
		case quote == '\'' && c == '\'':
			quote = 0
			script.WriteByte(c)
		case quote == '\'':
			script.WriteByte(c)
		case c == '\'' || c == '"':
			if quote == c {
				quote = 0
			} else if quote == 0 {
				quote = c
			}
			script.WriteByte(c)
		case c == '\\' && i+1 < len(text):
			script.WriteByte(c)
			script.WriteByte(text[i+1])
			i++
		case c == '$' && i+1 < len(text) && text[i+1] != '(':
			ps, n, err := varRef(text[i+1:], false, ex)
			if err != nil {
				return command{}, err
			}
			if n == 0 {
				script.WriteByte(c)
				continue
			}
			args = append(args, templateOf(ps))
			script.WriteString(positional(len(args), quote == 0, wordEnds(text, i-1) && wordEnds(text, i+1+n)))
			i += n
		default:
			script.WriteByte(c)
		}
	}
	argv := []string{"/bin/sh", "-c", literalTemplate(script.String())}
	if len(args) > 0 {
		argv = append(argv, "sh")
		argv = append(argv, args...)
	}
	return command{Argv: argv, Shell: true}, nil
}

// positional is the script's reference to argument n. Unquoted, it is
// quoted, so that the shell never splits or globs a value; a whole word
// becomes ${n:+"$n"}, which leaves the word out when the value is empty,
// as the shell does with procmail's text (cmd $EMPTY x runs cmd x).
func positional(n int, unquoted, word bool) string {
	ref := "$" + strconv.Itoa(n)
	if n > 9 {
		ref = "${" + strconv.Itoa(n) + "}"
	}
	switch {
	case unquoted && word:
		return "${" + strconv.Itoa(n) + `:+"` + ref + `"}`
	case unquoted:
		return `"` + ref + `"`
	}
	return ref
}

// wordEnds reports whether text[i] ends a shell word: outside the text,
// a blank or an operator.
func wordEnds(text string, i int) bool {
	return i < 0 || i >= len(text) || strings.IndexByte(" \t\n;|&()", text[i]) >= 0
}

// programRecorder hears the programs a command runs.
type programRecorder interface{ sawProgram(name string) }

var commandStart = regexp.MustCompile(`(?:^|[|;&(]|\$\()\s*(?:(?:then|else|do|!)\s+)?(?:(?:nice|exec|command)(?:\s+-n\s*-?[0-9]+)?\s+)?([^\s|;&()<>'"=]+)`)

var quotedText = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'[^']*'`)

// programNames finds the programs a command line runs: the first word of
// each simple command (after |, ;, &, ( and $( ), with nice and exec
// skipped. Words holding a variable other than a leading $HOME are left
// out.
func programNames(text string) []string {
	var out []string
	// Separators inside quotes separate nothing.
	text = quotedText.ReplaceAllString(text, "\x00")
	for _, m := range commandStart.FindAllStringSubmatch(text, -1) {
		name := m[1]
		if strings.HasPrefix(name, "${HOME}/") {
			name = "$HOME/" + name[8:]
		}
		home := strings.HasPrefix(name, "$HOME/")
		if varProgram.MatchString(name) {
			out = append(out, name) // the recorder knows its value
			continue
		}
		if name == "" || !home && strings.ContainsAny(name, "${}`\x00") || isShellWord(name) {
			continue
		}
		out = append(out, name)
	}
	return out
}

// varProgram is a program named by a variable alone: $NAME, ${NAME},
// or ${NAME:-default} with a default without variables.
var varProgram = regexp.MustCompile(`^\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^${}]*))?\})$`)

func isShellWord(s string) bool {
	switch s {
	case "if", "then", "else", "fi", "do", "done", "for", "while", "case", "esac", "test", "[", "echo", "cat", "true", "false", "read", "set", "export", "cd", "printf":
		return true
	}
	return false
}
