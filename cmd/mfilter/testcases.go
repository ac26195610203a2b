package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mfilter/mfilter/deliver"
	"github.com/mfilter/mfilter/internal/mailfmt"
	"github.com/mfilter/mfilter/internal/sysexits"
	"github.com/mfilter/mfilter/rules"
)

// testCase is one entry of a cases file: a message and what the rules
// must do with it. Only the expectations given are checked.
type testCase struct {
	Message   string   `yaml:"message"`
	Name      string   `yaml:"name"`
	Folder    []string `yaml:"folder"`
	Discard   bool     `yaml:"discard"`
	Pipe      []string `yaml:"pipe"`
	Forward   []string `yaml:"forward"`
	Headers   []string `yaml:"headers"`
	Log       []string `yaml:"log"`
	Sender    string   `yaml:"sender"`
	Recipient string   `yaml:"recipient"`
	line      int
}

// caseEngine evaluates the cases of one cases file.
type caseEngine struct {
	eng  *rules.Engine
	base string // the mail directory
	home string
	dir  string // relative message paths are below it
}

// runCases runs every case of the cases file at path and prints a line
// for each, the failures with expected, actual and the trace; it returns
// 0 when all hold, 1 when any does not, 78 for a cases file that cannot
// be read.
func runCases(ctx context.Context, env *environ, ce *caseEngine, path string) int {
	cases, err := readCases(path)
	if err != nil {
		fmt.Fprintf(env.stderr, "mfilter test: %v\n", err)
		return sysexits.Config
	}
	ce.dir = filepath.Dir(path)
	failed := 0
	for _, c := range cases {
		problems, trace, err := ce.check(ctx, c)
		if err != nil {
			problems = append(problems, err.Error())
		}
		if len(problems) == 0 {
			fmt.Fprintf(env.stdout, "ok   %s\n", c.label(path))
			continue
		}
		failed++
		fmt.Fprintf(env.stdout, "FAIL %s\n", c.label(path))
		for _, p := range problems {
			fmt.Fprintf(env.stdout, "     %s\n", p)
		}
		for _, l := range trace {
			fmt.Fprintf(env.stdout, "     | %s\n", l)
		}
	}
	fmt.Fprintf(env.stdout, "cases: %d passed, %d failed\n", len(cases)-failed, failed)
	if failed > 0 {
		return 1
	}
	return sysexits.OK
}

func (c testCase) label(path string) string {
	name := c.Name
	if name == "" {
		name = c.Message
	}
	return fmt.Sprintf("%s:%d: %s", path, c.line, name)
}

// readCases parses a cases file: a list of mappings, each with at least
// message:. folder: may be one folder or a list (copies, then the
// final one, in any order).
func readCases(path string) ([]testCase, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("%s: a cases file is a list of {message: PATH, folder: FOLDER, ...}", path)
	}
	var cases []testCase
	for _, n := range doc.Content[0].Content {
		c, line, err := decodeCase(n)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, line, err)
		}
		cases = append(cases, c)
	}
	return cases, nil
}

// caseKeys are the keys a case may have; a list value may also be given
// as one string.
var caseKeys = []string{"message", "name", "folder", "discard", "pipe", "forward", "headers", "log", "sender", "recipient"}

// decodeCase reads one case; an error comes with the line it is about.
func decodeCase(n *yaml.Node) (testCase, int, error) {
	c := testCase{line: n.Line}
	if n.Kind != yaml.MappingNode {
		return c, n.Line, errors.New("a case is a mapping like {message: PATH, folder: FOLDER}")
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !slices.Contains(caseKeys, k.Value) {
			return c, k.Line, fmt.Errorf("unknown key %q (known: %s)", k.Value, strings.Join(caseKeys, ", "))
		}
		if v.Kind == yaml.ScalarNode && slices.Contains([]string{"folder", "pipe", "forward", "headers", "log"}, k.Value) {
			v = &yaml.Node{Kind: yaml.SequenceNode, Content: []*yaml.Node{v}}
		}
		wrapped := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{k, v}}
		if err := wrapped.Decode(&c); err != nil {
			return c, k.Line, fmt.Errorf("%s: %v", k.Value, err)
		}
	}
	if c.Message == "" {
		return c, n.Line, errors.New("a case needs message: PATH")
	}
	return c, n.Line, nil
}

// check evaluates c and lists how the result differs from what c expects.
func (ce *caseEngine) check(ctx context.Context, c testCase) ([]string, []string, error) {
	msg, err := readCaseMessage(ce.dir, c.Message)
	if err != nil {
		return nil, nil, err
	}
	if c.Sender != "" {
		msg = mailfmt.SetEnvelopeSender(msg, c.Sender, time.Now())
	}
	env := rules.Envelope{Sender: c.Sender, Recipient: c.Recipient}
	dec, err := ce.eng.Evaluate(ctx, msg, rules.EvalOptions{Envelope: env, Trace: true})
	if err != nil {
		return nil, nil, fmt.Errorf("evaluation failed (the message would be kept for a later try): %v", err)
	}
	defer dec.Abort()
	var problems []string
	add := func(what string, want, got []string) {
		if want != nil && !sameSet(want, got) {
			problems = append(problems, fmt.Sprintf("%s: expected %s, got %s", what, listOrNone(want), listOrNone(got)))
		}
	}
	folders, pipes, forwards, discarded, final := ce.outcome(dec)
	add("folder", ce.canonical(c.Folder), folders)
	add("pipe", c.Pipe, pipes)
	add("forward", c.Forward, forwards)
	if c.Discard != discarded && (c.Discard || c.Folder != nil) {
		problems = append(problems, fmt.Sprintf("discard: expected %v, got %v", c.Discard, discarded))
	}
	if c.Headers != nil {
		problems = append(problems, missingHeaders(c.Headers, final)...)
	}
	add("log", c.Log, dec.Logs)
	return problems, dec.Trace, nil
}

// outcome sums up a decision: the folders (canonical), pipes and
// forwards (as command lines), whether it discards, and the message as
// its final step delivers it.
func (ce *caseEngine) outcome(dec *rules.Decision) (folders, pipes, forwards []string, discarded bool, final []byte) {
	for _, s := range dec.Steps {
		final = s.Msg
		switch s.Kind {
		case rules.StepFolder:
			folders = append(folders, ce.canonical([]string{s.Folder})...)
		case rules.StepPipe:
			pipes = append(pipes, strings.Join(s.Argv, " "))
		case rules.StepForward:
			forwards = append(forwards, strings.Join(s.Argv, " "))
		case rules.StepDiscard:
			discarded = true
		}
	}
	return folders, pipes, forwards, discarded, final
}

// canonical writes folder names the way the rules resolve them, so that
// "lists/go/" and "~/Mail/lists/go/" compare equal: the path below the
// mail directory (or absolute), with its type suffix.
func (ce *caseEngine) canonical(specs []string) []string {
	if specs == nil {
		return nil
	}
	out := []string{}
	for _, spec := range specs {
		if strings.HasPrefix(spec, "~/") && ce.home != "" {
			spec = strings.TrimRight(ce.home, "/") + spec[1:]
		}
		f, err := deliver.ParseFolder(ce.base, spec)
		if err != nil {
			out = append(out, spec)
			continue
		}
		p := f.Path
		if rel, err := filepath.Rel(ce.base, p); err == nil && !strings.HasPrefix(rel, "..") {
			p = rel
		}
		switch f.Kind {
		case deliver.Maildir:
			p += "/"
		case deliver.MH:
			p += "/."
		case deliver.Discard:
			p = "/dev/null"
		}
		out = append(out, p)
	}
	return out
}

func missingHeaders(want []string, msg []byte) []string {
	header := msg
	if i := bytes.Index(msg, []byte("\n\n")); i >= 0 {
		header = msg[:i+1]
	}
	var problems []string
	for _, h := range want {
		if !bytes.Contains(header, []byte(h+"\n")) {
			problems = append(problems, fmt.Sprintf("headers: expected %q in the delivered header, not there", h))
		}
	}
	return problems
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func listOrNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}

// readCaseMessage reads a case's message: a file (relative to the cases
// file), or MBOX#N for the Nth message of an mbox.
func readCaseMessage(dir, name string) ([]byte, error) {
	path, nth := name, 0
	if i := strings.LastIndexByte(name, '#'); i > 0 {
		if n, err := strconv.Atoi(name[i+1:]); err == nil && n > 0 {
			path, nth = name[:i], n
		}
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	if nth == 0 {
		msg, err := os.ReadFile(path)
		return bytes.TrimLeft(msg, "\n"), err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sp := mailfmt.NewSplitter(f, mailfmt.SplitOptions{})
	for i := 1; ; i++ {
		msg, err := sp.Next()
		if err == io.EOF {
			return nil, fmt.Errorf("%s has %d messages, not %d", path, i-1, nth)
		}
		if err != nil || i == nth {
			return msg, err
		}
	}
}

// writeCases prints a cases file for every message in the folder tree
// at root (maildirs, MH folders, mboxes), each with the folders it is in
// now (a message in several, as copies leave it, is one case), named as
// the rules name folders below the mail directory root: today's filing,
// frozen before a change of the rules.
func writeCases(w io.Writer, root string) error {
	root, err := filepath.Abs(root)
	if err != nil {
		return err
	}
	var found foundMessages
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case d.IsDir() && isMaildir(p):
			return found.maildir(p, rel)
		case d.IsDir() && (d.Name() == "tmp" || d.Name() == "new" || d.Name() == "cur"):
			return filepath.SkipDir
		case d.IsDir():
			return found.mh(p, rel)
		case d.Type().IsRegular() && !ownFileName(d.Name()):
			return found.mbox(p, rel)
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "# Cases written by mfilter test --write-cases %s\n", root)
	found.write(w)
	return nil
}

func isMaildir(dir string) bool {
	for _, sub := range []string{"new", "cur"} {
		if st, err := os.Stat(filepath.Join(dir, sub)); err != nil || !st.IsDir() {
			return false
		}
	}
	return true
}

// ownFileName reports the files of mail programs that are no messages.
func ownFileName(name string) bool {
	return strings.HasSuffix(name, ".lock") || strings.HasPrefix(name, ".") ||
		strings.HasPrefix(name, "dovecot") || strings.HasPrefix(name, "mfilter") || name == "subscriptions"
}

// foundMessages collects messages and the folders each is in.
type foundMessages struct {
	order []string            // message keys, in the order first found
	path  map[string]string   // key -> the first file (or MBOX#N) holding it
	in    map[string][]string // key -> folders
}

func (fm *foundMessages) add(path, folder string, msg []byte) {
	if fm.path == nil {
		fm.path, fm.in = make(map[string]string), make(map[string][]string)
	}
	key := string(messageKey(msg))
	if _, ok := fm.path[key]; !ok {
		fm.order = append(fm.order, key)
		fm.path[key] = path
	}
	if !slices.Contains(fm.in[key], folder) {
		fm.in[key] = append(fm.in[key], folder)
	}
}

// messageKey is a message as every folder type holds it: without a
// From_ line (maildir files have none).
func messageKey(msg []byte) []byte {
	if bytes.HasPrefix(msg, []byte("From ")) {
		if i := bytes.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
	}
	return bytes.TrimRight(msg, "\n")
}

func (fm *foundMessages) write(w io.Writer) {
	for _, k := range fm.order {
		fmt.Fprintf(w, "- message: %s\n", yamlString(fm.path[k]))
		if f := fm.in[k]; len(f) == 1 {
			fmt.Fprintf(w, "  folder: %s\n", yamlString(f[0]))
			continue
		}
		fmt.Fprintf(w, "  folder:\n")
		for _, f := range fm.in[k] {
			fmt.Fprintf(w, "    - %s\n", yamlString(f))
		}
	}
}

func yamlString(s string) string {
	b, _ := yaml.Marshal(s)
	return strings.TrimSuffix(string(b), "\n")
}

func (fm *foundMessages) maildir(dir, rel string) error {
	for _, sub := range []string{"new", "cur"} {
		names, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			return err
		}
		for _, n := range names {
			if !n.Type().IsRegular() || strings.HasPrefix(n.Name(), ".") {
				continue
			}
			p := filepath.Join(dir, sub, n.Name())
			msg, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fm.add(p, rel+"/", msg)
		}
	}
	return filepath.SkipDir
}

// mh adds the numbered messages of dir, when it has any, as an MH
// folder's.
func (fm *foundMessages) mh(dir, rel string) error {
	names, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var nums []int
	for _, n := range names {
		if v, err := strconv.Atoi(n.Name()); err == nil && v > 0 && n.Type().IsRegular() {
			nums = append(nums, v)
		}
	}
	slices.Sort(nums)
	for _, v := range nums {
		p := filepath.Join(dir, strconv.Itoa(v))
		msg, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fm.add(p, rel+"/.", msg)
	}
	return nil
}

// mbox adds each message of the file at p, when it is an mbox: it
// starts with a From_ line and a header field (a procmail log, which
// starts with a From_ line too, does not).
func (fm *foundMessages) mbox(p, rel string) error {
	if v, err := strconv.Atoi(filepath.Base(p)); err == nil && v > 0 {
		return nil // an MH message, added with its folder
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	head := make([]byte, 4096)
	n, _ := io.ReadFull(f, head)
	if !looksLikeMbox(head[:n]) {
		return nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	sp := mailfmt.NewSplitter(f, mailfmt.SplitOptions{})
	for i := 1; ; i++ {
		msg, err := sp.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		fm.add(p+"#"+strconv.Itoa(i), rel, msg)
	}
}

func looksLikeMbox(head []byte) bool {
	first, rest, ok := bytes.Cut(head, []byte("\n"))
	if !ok || !bytes.HasPrefix(first, []byte("From ")) {
		return false
	}
	second, _, _ := bytes.Cut(rest, []byte("\n"))
	name, _, ok := bytes.Cut(second, []byte(":"))
	return ok && len(name) > 0 && !bytes.ContainsAny(name, " \t")
}
