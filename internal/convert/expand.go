package convert

import (
	"fmt"
	"regexp"
	"strings"
)

// piece is literal text or a variable reference, the result of reading
// procmail's $VAR expansions.
type piece struct {
	isVar bool
	text  string // literal text
	name  string // mfilter variable name
	raw   bool   // in a regex: the value is regex text (procmail's $VAR), not quoted ($\VAR)
}

func (p piece) template() string {
	if p.raw {
		return "${" + p.name + "|raw}"
	}
	return "${" + p.name + "}"
}

// literalTemplate writes literal text as an mfilter template: a dollar
// sign is $$.
func literalTemplate(s string) string {
	return strings.ReplaceAll(s, "$", "$$")
}

// templateOf joins pieces into a template.
func templateOf(ps []piece) string {
	var b strings.Builder
	for _, p := range ps {
		if p.isVar {
			b.WriteString(p.template())
		} else {
			b.WriteString(literalTemplate(p.text))
		}
	}
	return b.String()
}

// literalOf returns the text of pieces that hold no variable.
func literalOf(ps []piece) (string, bool) {
	var b strings.Builder
	for _, p := range ps {
		if p.isVar {
			return "", false
		}
		b.WriteString(p.text)
	}
	return b.String(), true
}

// expander resolves procmail variable names to mfilter ones.
type expander interface {
	// resolve returns the pieces a reference to name expands to: a
	// constant's text or a variable reference.
	resolve(name string, regex, quoted bool) ([]piece, error)
}

// scanVars reads procmail's $ expansions in s. dq says the text is inside
// double quotes (or a $ condition): backslash quotes ", \ and $ only.
// regex says the result is regex text ($VAR raw, $\VAR quoted).
func scanVars(s string, dq, regex bool, ex expander) ([]piece, error) {
	var out []piece
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			out = append(out, piece{text: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' && i+1 < len(s) {
			n := s[i+1]
			if !dq || n == '"' || n == '\\' || n == '$' {
				if regex && n != '"' {
					lit.WriteByte('\\') // the regex still needs it
				}
				lit.WriteByte(n)
			} else {
				lit.WriteByte(c)
				lit.WriteByte(n)
			}
			i++
			continue
		}
		if c != '$' || i+1 >= len(s) {
			lit.WriteByte(c)
			continue
		}
		ps, n, err := varRef(s[i+1:], regex, ex)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			lit.WriteByte('$')
			continue
		}
		flush()
		out = append(out, ps...)
		i += n
	}
	flush()
	return out, nil
}

// varRef reads the reference after a $ and returns its pieces and the
// number of bytes read; 0 bytes means the $ is literal.
func varRef(s string, regex bool, ex expander) ([]piece, int, error) {
	quoted := false
	off := 0
	if strings.HasPrefix(s, `\`) && nameLen(s[1:]) > 0 {
		quoted, off = true, 1
	}
	switch {
	case s[0] == '=':
		return []piece{{isVar: true, name: "score", raw: regex}}, 1, nil
	case s[0] == '-':
		return []piece{{isVar: true, name: "last_folder", raw: regex && !quoted}}, 1, nil
	case s[0] == '$' || s[0] == '_' && nameLen(s) == 1 || s[0] == '#' || s[0] == '@' || s[0] >= '0' && s[0] <= '9':
		return nil, 0, fmt.Errorf("$%c has no mfilter equivalent", s[0])
	case s[0] == '{':
		return braceRef(s, regex, ex)
	}
	n := nameLen(s[off:])
	if n == 0 {
		return nil, 0, nil
	}
	ps, err := ex.resolve(s[off:off+n], regex, quoted)
	return ps, off + n, err
}

// braceRef reads ${NAME}, ${NAME:-word}, ${NAME-word}, ${NAME:+word} and
// ${NAME+word}.
func braceRef(s string, regex bool, ex expander) ([]piece, int, error) {
	end := strings.IndexByte(s, '}')
	if end < 0 {
		return nil, 0, nil
	}
	inner := s[1:end]
	n := nameLen(inner)
	if n == 0 {
		return nil, 0, fmt.Errorf("${%s} is not a variable reference", inner)
	}
	name, op := inner[:n], inner[n:]
	if op == "" {
		ps, err := ex.resolve(name, regex, false)
		return ps, end + 1, err
	}
	op = strings.TrimPrefix(op, ":")
	if len(op) == 0 || op[0] != '-' && op[0] != '+' {
		return nil, 0, fmt.Errorf("${%s} is not a form mfilter knows", inner)
	}
	// A default or alternative depends on whether the variable is set,
	// which mfilter templates cannot test: the resolver decides.
	dr, ok := ex.(defaulter)
	if !ok {
		return nil, 0, fmt.Errorf("${%s}: defaults are not supported here", inner)
	}
	ps, err := dr.withDefault(name, op[0], op[1:], regex)
	return ps, end + 1, err
}

// defaulter resolves ${NAME:-word} and ${NAME:+word}.
type defaulter interface {
	withDefault(name string, op byte, word string, regex bool) ([]piece, error)
}

// quoteRegexPieces turns literal text that is to be matched literally into
// regex text.
func quoteRegexPieces(ps []piece) []piece {
	out := make([]piece, len(ps))
	for i, p := range ps {
		if !p.isVar {
			p.text = regexp.QuoteMeta(p.text)
		}
		out[i] = p
	}
	return out
}
