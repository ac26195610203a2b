package convert

import (
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mfilter/mfilter/rules"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func testEnv(k string) string {
	return map[string]string{"HOME": "/home/alice", "LOGNAME": "alice"}[k]
}

func TestTranslateRegex(t *testing.T) {
	tests := []struct {
		in, want string
		capture  bool
	}{
		{`^Subject:.*hello`, `^Subject:.*hello`, false},
		{`a{2}`, `a\{2\}`, false},
		{`[[:alpha:]]`, `[\[:alpha:]\]`, false},
		{`\<word\>`, `(?:^|[^a-zA-Z0-9_])word(?:$|[^a-zA-Z0-9_])`, false},
		{`^^From`, `\AFrom`, false},
		{`body^^`, `body\z`, false},
		{`\d\.x`, `d\.x`, false},
		{`*star`, `\*star`, false},
		{`a**`, `a*\*`, false},
		{`a+?`, `a+\?`, false},
		{`a***`, `a*\**`, false},
		{`(a|b`, `(a|b)`, false},
		{`a[\]]b`, `a[\\]\]b`, false},
		{`[^]x]`, `[^\]x]`, false},
		{`^Subject:[ ]*\/.*`, `(?:^Subject:[ ]*?)(?P<match>.*)`, true},
		{`^Subject:[ ]*\/.*`, `^Subject:[ ]*.*`, false},
		{`$`, `$`, false},
		{`${x`, `$\{x`, false},
		{"caf\xc3\xa9+", "café+", false},
		{"caf\xe9", "café", false},
	}
	for _, tt := range tests {
		got := translateRegex([]piece{{text: tt.in}}, tt.capture)
		if got != tt.want {
			t.Errorf("translateRegex(%q, %v) = %q, want %q", tt.in, tt.capture, got, tt.want)
		}
	}
}

func TestProgramNames(t *testing.T) {
	tests := []struct{ in, want string }{
		{`formail -A "X: y"`, "formail"},
		{`(formail -r; cat msg) | $SENDMAIL -t`, "formail $SENDMAIL"},
		{`nice -n 15 /usr/bin/spamc | sed -e 1d; exec lpr`, "/usr/bin/spamc sed lpr"},
		{`$HOME/bin/mimencode -u -b`, "$HOME/bin/mimencode"},
		{`$SPAMC -f`, "$SPAMC"},
		{`nice -n 15 ${SPAMBIN}`, "${SPAMBIN}"},
		{`${MD5SUM:-md5sum} # x`, "${MD5SUM:-md5sum}"},
		{`formail -a "Content-Type: a; format=text" | tr 'a;b' x`, "formail tr"},
		{`if test -f x; then mail bob; fi`, "mail"},
	}
	for _, tt := range tests {
		if got := strings.Join(programNames(tt.in), " "); got != tt.want {
			t.Errorf("programNames(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestMatchSemantics checks the translation against what procmail does
// (../shared/spec/procmail-behaviour.md §7): MATCH of ^Subject:[ ]*\/.*
// keeps the leading space, as the left side matches shortest.
func TestMatchSemantics(t *testing.T) {
	re := regexp.MustCompile("(?im)" + translateRegex([]piece{{text: `^Subject:[ ]*\/.*`}}, true))
	m := re.FindStringSubmatch("From: a\nSubject: Hello World\n\n")
	if m == nil || m[re.SubexpIndex("match")] != " Hello World" {
		t.Fatalf("MATCH = %q, want %q", m, " Hello World")
	}
}

func TestParse(t *testing.T) {
	src := "A=1\n:0 Bc: lock # comment\n* ^x \\\n  y\n* ! z\n| cmd \\\n  arg\n:0\n{ V=yes }\n:0\n{\n  :0\n  inner\n}\nX=\"two\nlines\"\n:0\n{ A=1\n  B=x }\nC=2 D # c\n"
	f := Parse("rc", []byte(src))
	var kinds []string
	for _, it := range f.Items {
		switch x := it.(type) {
		case *Assign:
			kinds = append(kinds, fmt.Sprintf("assign %s@%d-%d", x.Name, x.Line, x.End))
		case *Recipe:
			kinds = append(kinds, fmt.Sprintf("recipe %q lock=%v conds=%d kind=%d text=%q block=%d @%d-%d",
				x.Flags, x.Lock, len(x.Conds), x.Action.Kind, x.Action.Text, len(x.Action.Block), x.Line, x.End))
			for _, c := range x.Conds {
				kinds = append(kinds, "cond "+c.Text)
			}
		default:
			kinds = append(kinds, fmt.Sprintf("%T", it))
		}
	}
	want := []string{
		"assign A@1-1",
		`recipe "Bc" lock=true conds=2 kind=1 text="cmd   arg" block=0 @2-7`,
		"cond ^x y",
		"cond ! z",
		`recipe "" lock=false conds=0 kind=3 text="" block=1 @8-9`,
		`recipe "" lock=false conds=0 kind=3 text="" block=1 @10-14`,
		"assign X@15-16",
		`recipe "" lock=false conds=0 kind=3 text="" block=2 @17-19`,
		"assign C@20-20",
		"assign D@20-0",
	}
	if strings.Join(kinds, "\n") != strings.Join(want, "\n") {
		t.Errorf("parsed:\n%s\nwant:\n%s", strings.Join(kinds, "\n"), strings.Join(want, "\n"))
	}
}

// TestGolden converts each testdata procmailrc and compares the YAML and
// the warnings with the golden files (go test -update rewrites them).
func TestGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.procmailrc")
	corpus, _ := filepath.Glob("testdata/corpus/*.procmailrc")
	files = append(files, corpus...)
	if len(files) == 0 {
		t.Fatal("no testdata")
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			res := Convert(path, data, Options{Getenv: testEnv})
			got := res.Files[0].Text
			report := fmt.Sprintf("%s\nconverted %d of %d recipes\n", strings.Join(res.Warnings, "\n"), res.Converted, res.Recipes)
			golden(t, strings.TrimSuffix(path, ".procmailrc")+".yaml", got)
			golden(t, strings.TrimSuffix(path, ".procmailrc")+".report", report)
			if _, err := rules.Parse(filepath.Join(t.TempDir(), "rules.yaml"), []byte(got)); err != nil {
				t.Errorf("mfilter check: %v", err)
			}
		})
	}
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != got {
		t.Errorf("%s differs; got:\n%s", path, got)
	}
}

var recipeLine = regexp.MustCompile(`(?m)^[ \t]*(\{[ \t]*)?:[0-9]`)

// TestCorpus converts the corpus procmailrc files: every output passes
// mfilter check, the recipe count agrees with a count of :0 lines, and
// at least 95 % are converted. It reads testdata/corpus, and also the
// directory in MFILTER_CONVERT_CORPUS when set (the 56 files of
// ../shared/corpus/procmailrc, not all of which may be copied here).
func TestCorpus(t *testing.T) {
	dirs := []string{"testdata/corpus"}
	if d := os.Getenv("MFILTER_CONVERT_CORPUS"); d != "" {
		dirs = append(dirs, d)
	}
	for _, dir := range dirs {
		files, _ := filepath.Glob(filepath.Join(dir, "*.procmailrc"))
		if len(files) == 0 {
			t.Fatalf("%s: no procmailrc files", dir)
		}
		total, converted := 0, 0
		for _, path := range files {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			res := Convert(path, data, Options{Getenv: testEnv})
			if n := len(recipeLine.FindAll(data, -1)); n != res.Recipes {
				t.Errorf("%s: %d recipes counted, %d :0 lines", path, res.Recipes, n)
			}
			total += res.Recipes
			converted += res.Converted
			if _, err := rules.Parse(filepath.Join(t.TempDir(), "rules.yaml"), []byte(res.Files[0].Text)); err != nil {
				t.Errorf("%s: mfilter check: %v", path, err)
			}
		}
		pct := 100 * float64(converted) / float64(total)
		t.Logf("%s: %d files, converted %d of %d recipes (%.1f %%)", dir, len(files), converted, total, pct)
		if pct < 95 {
			t.Errorf("%s: converted %.1f %% of the recipes, want at least 95 %%", dir, pct)
		}
	}
}

// TestRegexAgainstProcmail runs real procmail on header conditions and
// checks that the translated regex (macros expanded, as mfilter's
// headers: condition does) matches the same headers.
func TestRegexAgainstProcmail(t *testing.T) {
	procmail, err := exec.LookPath("procmail")
	if err != nil {
		t.Fatal("procmail is needed (test.sh installs it):", err)
	}
	headers := []string{
		"From: Bob <bob@x.org>\nSubject: a word here\n",
		"From: bob@x.org.evil\nTo: <bob@x.org>\nSubject: aa{2}\n",
		"From: MAILER-DAEMON@example.com\nSubject: ]x \\]x\n",
		"Subject: wordy\nTo: notbob@x.org\nX-Tag: d1\n",
		"Subject: café\nPrecedence: bulk\n",
	}
	regexes := []string{
		`^Subject:.*\<word\>`, `a{2}`, `\]x`, `[\]]x`, `^^From:`, `^^Subject`, `^TO_bob@x\.org`,
		`^FROM_DAEMON`, `^FROM_MAILER`, `^TObob`, `here$`, `(word|nothing`, `^X-Tag: \d1`,
		`^Subject: [^]a]x`, `café`, `^Subject:.*\/wor.*`, `BOB@X`, `a+?`, `^(From|To):.*bob`,
		`a**`, `^Subject: a?+$`, `\]x*+`,
	}
	dir := t.TempDir()
	for _, h := range headers {
		for _, re := range regexes {
			got := procmailMatches(t, procmail, dir, re, h)
			tr := translateRegex([]piece{{text: expandMacros(re)}}, false)
			want := regexp.MustCompile("(?im)" + tr).MatchString(h + "\n")
			if got != want {
				t.Errorf("regex %q (RE2 %q) on %q: procmail %v, translation %v", re, tr, h, got, want)
			}
		}
	}
}

func procmailMatches(t *testing.T, procmail, dir, re, header string) bool {
	t.Helper()
	rc := filepath.Join(dir, "rc")
	hit := filepath.Join(dir, "hit")
	os.RemoveAll(hit)
	// A maildir: procmail sleeps a second after creating an mbox.
	text := fmt.Sprintf("MAILDIR=%s\nDEFAULT=/dev/null\n:0\n* %s\n%s/\n", dir, re, hit)
	if err := os.WriteFile(rc, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(procmail, "-m", rc)
	cmd.Stdin = strings.NewReader(header + "\nbody\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("procmail: %v: %s", err, out)
	}
	_, err := os.Stat(hit)
	return err == nil
}

// varsOnly resolves every name to a variable of the same name.
type varsOnly struct{}

func (varsOnly) resolve(name string, regex, quoted bool) ([]piece, error) {
	return []piece{{isVar: true, name: name}}, nil
}

// TestCommandArgv: an argument of unquoted variables alone is optional,
// as procmail leaves it out when it expands to nothing (checked against
// procmail by cmd/mfilter's convert_verify_procmail_words script); in a
// shell script such a word is ${N:+"$N"}.
func TestCommandArgv(t *testing.T) {
	tests := []struct{ in, want string }{
		{`prog a $X b`, `[prog a {optional: ${X}} b]`},
		{`prog ${X}$Y "$Z" x$X '$X'`, `[prog {optional: ${X}${Y}} ${Z} x${X} $$X]`},
		{`$PROG $X`, `[${PROG} {optional: ${X}}]`},
		{`prog $X | cat "$Y" $Z`, `[/bin/sh -c prog $${1:+"$$1"} | cat "$$2" $${3:+"$$3"} sh ${X} ${Y} ${Z}]`},
		{`echo x$X;echo $Y`, `[/bin/sh -c echo x"$$1";echo $${2:+"$$2"} sh ${X} ${Y}]`},
	}
	for _, tt := range tests {
		cmd, err := translateCommand(tt.in, varsOnly{})
		if err != nil {
			t.Fatalf("%s: %v", tt.in, err)
		}
		var parts []string
		for _, e := range cmd.seq() {
			switch e := e.(type) {
			case string:
				parts = append(parts, e)
			case mapping:
				parts = append(parts, fmt.Sprintf("{%s: %s}", e[0].k, e[0].v))
			}
		}
		if got := "[" + strings.Join(parts, " ") + "]"; got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.in, got, tt.want)
		}
	}
}

// TestHome checks that the paths of an rcfile written for another home
// (an old server's) are written under ~/, and only those.
func TestHome(t *testing.T) {
	src := "MAILDIR=/home/bob/mail\nDEFAULT=$MAILDIR/\nLOGFILE=/home/bob/mail/log\n" +
		":0\n* ^Subject: a\n/home/bob/mail/lists/\n:0\n* ^Subject: b\n/home/bobby/x\n"
	res := Convert("rc", []byte(src), Options{Getenv: testEnv, Home: "/home/bob/"})
	got := res.Files[0].Text
	for _, want := range []string{"maildir: '~/mail'", "default: '~/mail/'", "log: '~/mail/log'", "{folder: '~/mail/lists/'}", "{folder: '/home/bobby/x'}"} {
		if !strings.Contains(got, want) {
			t.Errorf("conversion lacks %s:\n%s", want, got)
		}
	}
}

// TestProgramsOfVariables: a program named by a variable is its constant
// value, or its default, or, never set in the rcfile (a fragment whose
// including file sets it), a name that says so; one set at run time is
// not known.
func TestProgramsOfVariables(t *testing.T) {
	src := "FORMAIL=/usr/bin/formail\nLATER=`which x`\n" +
		":0 fw\n| $FORMAIL -A X:y\n:0 fw\n| nice -n 15 ${SPAMBIN}\n:0 b\nSUM=|${MD5:-md5sum}\n" +
		":0\n* ? $LATER\n/dev/null\n:0 w\n| $SENDMAIL -t\n"
	res := Convert("rc", []byte(src), Options{Getenv: testEnv})
	got := strings.Join(res.Programs, ",")
	if want := "$SPAMBIN (not set in this file),/usr/bin/formail,md5sum,which"; got != want {
		t.Errorf("programs %q, want %q", got, want)
	}
}

// TestMissingIncludes: an INCLUDERC whose file does not exist is listed.
func TestMissingIncludes(t *testing.T) {
	src := "INCLUDERC=$PMSRC/pm-javar.rc\n:0\n/dev/null\n"
	read := func(string) ([]byte, error) { return nil, fs.ErrNotExist }
	res := Convert("rc", []byte(src), Options{Getenv: testEnv, ReadFile: read})
	if got := strings.Join(res.MissingIncludes, ","); got != "INCLUDERC=$PMSRC/pm-javar.rc" {
		t.Errorf("missing includes %q", got)
	}
}
