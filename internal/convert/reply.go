package convert

import (
	"regexp"
	"strings"
)

// Auto-replies: "| (formail -r ...; echo ...; cat FILE) | $SENDMAIL -t",
// the recipe of procmailex(5), become a reply action, which also keeps
// procmail's usual once-per-sender cache (formail -rD) and never answers
// lists, daemons or bulk mail (RFC 3834).
var (
	replyFormail  = regexp.MustCompile(`\bformail\s+(?:[^|;)]*\s)?-[a-zA-Z]*r`)
	replySendmail = regexp.MustCompile(`\|\s*(?:\$\{?SENDMAIL\}?|\S*sendmail)\b`)
	replyEcho     = regexp.MustCompile(`\becho\s+(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|([^;|)"']*))`)
	replyCat      = regexp.MustCompile(`\bcat\s+("[^"]+"|'[^']+'|[^\s;|)]+)`)
	replySubject  = regexp.MustCompile(`-[iI]\s*"Subject:\s*((?:[^"\\]|\\.)*)"`)
)

// autoReply translates an auto-reply pipe, or reports false.
func (f *fileConv) autoReply(text string, fl flags, res *recipeResult) (bool, error) {
	if !replyFormail.MatchString(text) || !replySendmail.MatchString(text) {
		return false, nil
	}
	reply := mapping{}
	var lines []string
	for _, m := range replyEcho.FindAllStringSubmatch(text, -1) {
		lines = append(lines, m[1]+m[2]+strings.TrimSpace(m[3]))
	}
	cats := replyCat.FindAllStringSubmatch(text, -1)
	switch {
	case len(cats) == 1 && len(lines) == 0:
		file := strings.Trim(cats[0][1], `"'`)
		ps, err := scanVars(file, true, false, f)
		if err != nil {
			return false, err
		}
		p, ok := f.plainOf(ps)
		if !ok {
			return false, nil
		}
		reply = append(reply, kv{"file", p})
	case len(cats) == 0 && len(lines) > 0:
		ps, err := scanVars(strings.Join(lines, "\n")+"\n", true, false, f)
		if err != nil {
			return false, err
		}
		reply = append(reply, kv{"text", templateOf(ps)})
	default:
		return false, nil
	}
	if m := replySubject.FindStringSubmatch(text); m != nil {
		ps, err := scanVars(m[1], true, false, f)
		if err != nil {
			return false, err
		}
		reply = append(reply, kv{"subject", templateOf(ps)})
	}
	res.then = append(res.then, mapping{{"reply", reply}})
	if !fl.c {
		// procmail's pipe took the message: it is delivered.
		res.then = append(res.then, plain("discard"))
		res.delivering = true
	}
	return true, nil
}

// plainOf expands pieces into a path known when converting.
func (f *fileConv) plainOf(ps []piece) (string, bool) {
	var b strings.Builder
	for _, p := range ps {
		switch {
		case !p.isVar:
			b.WriteString(p.text)
		case p.name == "HOME" && b.Len() == 0:
			b.WriteString("~")
		default:
			c, ok := f.consts[p.name]
			if !ok {
				return "", false
			}
			b.WriteString(c)
		}
	}
	return b.String(), true
}
