package mailfmt

import "bytes"

// A From_ line after a blank line starts a message (with a header field
// after it) when it is a postmark that the mbox readers accept, or one
// of the tolerant forms: hasPostmarkDate and oneWordPostmark.

// hasPostmarkDate reports whether a line starting with "From " carries a
// date that mutt's or Dovecot's mbox reader takes for a postmark's: mutt
// reads a From_ line after a blank line from its end, "[return-path]
// weekday month day time [zone [zone]] year"; Dovecot reads it from the
// start, "sender weekday month day time [zone] year ...", with its own
// tolerances (no seconds, an RFC 822-like "Thu, 9 Nov 2002 22:33:52").
// "From Russia with love" has neither.
func hasPostmarkDate(line []byte) bool {
	rest := bytes.TrimRight(line[len("From "):], " \t\r\n")
	if w := bytes.TrimLeft(rest, " \t"); len(w) == 0 || w[0] < 0x20 || w[0] == 0x7f {
		return false // no word: a NUL, a control character
	}
	// Dovecot's test first: it allocates nothing, and takes most postmarks.
	return dovecotDate(rest) || muttDate(rest)
}

// ReadablePostmark reports whether a From_ line (with or without its
// line end) is one that both mutt and Dovecot take for a postmark, so
// that an mbox written with it opens in either and splits there.
func ReadablePostmark(line []byte) bool {
	if !bytes.HasPrefix(line, []byte("From ")) || bytes.IndexByte(line, 0) >= 0 {
		return false
	}
	rest := bytes.TrimRight(line[len("From "):], " \t\r\n")
	if w := bytes.TrimLeft(rest, " \t"); len(w) == 0 || w[0] < 0x20 || w[0] == 0x7f {
		return false
	}
	return muttDate(rest) && dovecotDate(rest)
}

// oneWordPostmark reports whether a line starting with "From " holds one
// word and nothing after it but blanks: Gmail Takeout's "From
// 1844347792267117879@xxx", Netscape's and Thunderbird's "From -".
func oneWordPostmark(line []byte) bool {
	rest := bytes.TrimLeft(line[len("From "):], " \t")
	rest = bytes.TrimRight(rest, " \t\r\n")
	if len(rest) == 0 || rest[0] < 0x20 || rest[0] == 0x7f {
		return false
	}
	return bytes.IndexAny(rest, " \t") < 0
}

func isASCIISpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isAlpha(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

// words splits s at runs of ASCII white space.
func words(s []byte) [][]byte {
	var out [][]byte
	for i := 0; i < len(s); {
		for i < len(s) && isASCIISpace(s[i]) {
			i++
		}
		j := i
		for j < len(s) && !isASCIISpace(s[j]) {
			j++
		}
		if j > i {
			out = append(out, s[i:j])
		}
		i = j
	}
	return out
}

// scanInt is what C's sscanf("%d") reads from the start of w: an
// optional sign and at least one digit. It returns the value (capped)
// and how many bytes it read, 0 when there is no number.
func scanInt(w []byte) (int, int) {
	i, neg := 0, false
	if i < len(w) && (w[i] == '+' || w[i] == '-') {
		neg = w[i] == '-'
		i++
	}
	n, d := 0, 0
	for ; i < len(w) && isDigit(w[i]); i++ {
		if n < 1<<20 {
			n = n*10 + int(w[i]-'0')
		}
		d++
	}
	if neg {
		n = -n
	}
	if d == 0 {
		return 0, 0
	}
	return n, i
}

var (
	monthNames   = []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}
	weekdayNames = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}
)

func hasName(w []byte, names []string) bool {
	if len(w) < 3 {
		return false
	}
	for _, n := range names {
		if bytes.EqualFold(w[:3], []byte(n)) {
			return true
		}
	}
	return false
}

// muttDate is mutt's test for a From_ line after a blank line (from.c,
// the reverse scan): counted from the end, a year (a number >= 0), one
// or two time zone words (the first starting with a letter, '+' or '-',
// the second with a letter), a time "H:M" or "H:M:S", a day number, a
// month whose first three letters name one, and a word of exactly three
// letters naming a weekday; anything before that is the return path.
// rest is the line after "From ", without its line end.
func muttDate(rest []byte) bool {
	w := words(rest)
	// i walks back over the words; each step but the weekday's needs a
	// word before it (the return path may be missing).
	i := len(w) - 1
	back := func() bool { i--; return i >= 1 }
	if i < 1 {
		return false
	}
	if y, n := scanInt(w[i]); n == 0 || y < 0 {
		return false
	}
	if !back() {
		return false
	}
	if c := w[i][0]; isAlpha(c) || c == '+' || c == '-' {
		if !back() {
			return false
		}
		if isAlpha(w[i][0]) && !back() {
			return false
		}
	}
	// The time, "%d:%d" at least.
	if _, n := scanInt(w[i]); n == 0 || n >= len(w[i]) || w[i][n] != ':' {
		return false
	} else if _, m := scanInt(w[i][n+1:]); m == 0 {
		return false
	}
	if !back() {
		return false
	}
	if _, n := scanInt(w[i]); n == 0 { // the day
		return false
	}
	if !back() || !hasName(w[i], monthNames) {
		return false
	}
	i--
	return len(w[i]) == 3 && hasName(w[i], weekdayNames)
}

// dovecotDate is Dovecot's test for a From_ line (lib-mail/mbox-from.c):
// a sender word (possibly starting with a quoted string), spaces, four
// bytes it does not check (the weekday), then "Mon DD HH:MM[:SS]
// [zone ]YYYY" or, after one more byte, "D Mon YYYY HH:MM[:SS]". What
// follows the year does not matter. rest is the line after "From ",
// without its line end.
func dovecotDate(rest []byte) bool {
	// at reads past the end as a line end, which fails every test
	// below that reads it, as it does in Dovecot's buffer.
	at := func(i int) byte {
		if i < len(rest) {
			return rest[i]
		}
		return '\n'
	}
	p := 0
	if at(p) == '"' {
		for p++; p < len(rest); p++ {
			if rest[p] == '"' && rest[p-1] != '\\' {
				break
			}
		}
		p++
	}
	for p < len(rest) && rest[p] != ' ' {
		p++
	}
	for p < len(rest) && rest[p] == ' ' {
		p++
	}
	p += 4 // the weekday
	month := func(p int) bool {
		return p+3 < len(rest) && hasName(rest[p:p+3], monthNames) && at(p+3) == ' '
	}
	year := func(p int) bool { return isDigit(at(p)) && isDigit(at(p+1)) && isDigit(at(p+2)) && isDigit(at(p+3)) }
	alt := false
	if !month(p) {
		// "Thu, 9 Nov 2002 22:33:52"
		alt = true
		p++
		if !isDigit(at(p)) {
			return false
		}
		p++
		if isDigit(at(p)) {
			p++
		}
		if at(p) != ' ' {
			return false
		}
		p++
		if !month(p) {
			return false
		}
		p += 4
		if !year(p) {
			return false
		}
		p += 5
	} else {
		p += 4
		if at(p) == ' ' {
			p++
		}
		if at(p+1) == ' ' {
			if !isDigit(at(p)) {
				return false
			}
			p += 2
		} else {
			if !isDigit(at(p)) || !isDigit(at(p+1)) || at(p+2) != ' ' {
				return false
			}
			p += 3
		}
	}
	if !isDigit(at(p)) || !isDigit(at(p+1)) || at(p+2) != ':' || !isDigit(at(p+3)) || !isDigit(at(p+4)) {
		return false
	}
	p += 5
	if alt {
		// Optional seconds; what follows is not checked.
		return at(p) != ':' || isDigit(at(p+1)) && isDigit(at(p+2))
	}
	if at(p) == ':' {
		if !isDigit(at(p+1)) || !isDigit(at(p+2)) {
			return false
		}
		p += 3
	}
	if at(p) != ' ' {
		return false
	}
	p++
	if !year(p) {
		// A zone ("MET", "+0300") before the year, up to a space.
		for at(p) != ' ' {
			if at(p) == '\n' || at(p) == '\r' {
				return false
			}
			p++
		}
		p++
	}
	return year(p)
}
