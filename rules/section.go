package rules

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// SectionReader reads the settings of a section other packages own
// (fetch:, send:), collecting file:line:col errors as the rules loader
// does, so that mfilter check reports them alike.
type SectionReader struct {
	sec  *Section
	name string // the section's name, in messages
	errs ErrorList
}

// Reader returns a SectionReader for s, whose name messages use.
func (s *Section) Reader(name string) *SectionReader {
	return &SectionReader{sec: s, name: name}
}

// Settings calls fn for each key and value of the section, in order.
func (r *SectionReader) Settings(fn func(key, value *yaml.Node)) {
	n := r.sec.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		fn(n.Content[i], n.Content[i+1])
	}
}

// Errorf records an error at n.
func (r *SectionReader) Errorf(n *yaml.Node, format string, args ...any) {
	r.errs = append(r.errs, &Error{Pos: Pos{File: r.sec.Path, Line: n.Line, Col: n.Column}, Msg: fmt.Sprintf(format, args...)})
}

// settingErrorf records an error about setting key at n: "fetch port
// must be ...".
func (r *SectionReader) settingErrorf(n *yaml.Node, key, format string, args ...any) {
	r.Errorf(n, "%s %s "+format, append([]any{r.name, key}, args...)...)
}

// Unknown records that key is not a setting of the section.
func (r *SectionReader) Unknown(key *yaml.Node, known []string) {
	r.errs = append(r.errs, &Error{Pos: Pos{File: r.sec.Path, Line: key.Line, Col: key.Column},
		Msg: fmt.Sprintf("unknown %s setting %q (known: %s)", r.name, key.Value, strings.Join(known, ", "))})
}

// Err is the errors recorded, as an ErrorList, or nil.
func (r *SectionReader) Err() error {
	if len(r.errs) == 0 {
		return nil
	}
	return r.errs
}

// Str reads a string setting.
func (r *SectionReader) Str(n *yaml.Node, key string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		r.settingErrorf(n, key, "must be a string")
		return "", false
	}
	return n.Value, true
}

// List reads a list of strings; a single string is a list of one.
func (r *SectionReader) List(n *yaml.Node, key string) []string {
	if n.Kind == yaml.SequenceNode {
		var out []string
		for _, c := range n.Content {
			if v, ok := r.Str(c, key); ok {
				out = append(out, v)
			}
		}
		return out
	}
	if v, ok := r.Str(n, key); ok {
		return []string{v}
	}
	return nil
}

// Bool reads true or false; nil when it is neither.
func (r *SectionReader) Bool(n *yaml.Node, key string) *bool {
	v, ok := r.Str(n, key)
	if !ok {
		return nil
	}
	if v != "true" && v != "false" {
		r.settingErrorf(n, key, "must be true or false, found %q", v)
		return nil
	}
	b := v == "true"
	return &b
}

// Duration reads a positive duration such as 30s.
func (r *SectionReader) Duration(n *yaml.Node, key string) time.Duration {
	v, ok := r.Str(n, key)
	if !ok {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		r.settingErrorf(n, key, "must be a duration like 30s or 5m, found %q", v)
	}
	return d
}

// Port reads a TCP port number.
func (r *SectionReader) Port(n *yaml.Node, key string) int {
	v, ok := r.Str(n, key)
	if !ok {
		return 0
	}
	p, err := strconv.Atoi(v)
	if err != nil || p < 1 || p > 65535 {
		r.settingErrorf(n, key, "must be a number from 1 to 65535, found %q", v)
	}
	return p
}
