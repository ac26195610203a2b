package rules

import (
	"strconv"
	"strings"
	"time"
)

// strftime formats t as C's strftime(3) does for the codes procmail
// users write: %Y %y %m %d %e %H %M %S %j %a %A %b %B %Z %z %s %%. An
// unknown code is kept as written.
func strftime(t time.Time, format string) string {
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' || i+1 >= len(format) {
			b.WriteByte(c)
			continue
		}
		i++
		if s, ok := strftimeCode(t, format[i]); ok {
			b.WriteString(s)
		} else {
			b.WriteByte('%')
			b.WriteByte(format[i])
		}
	}
	return b.String()
}

func strftimeCode(t time.Time, c byte) (string, bool) {
	two := func(n int) string { return strconv.Itoa(n/10) + strconv.Itoa(n%10) }
	switch c {
	case 'Y':
		return strconv.Itoa(t.Year()), true
	case 'y':
		return two(t.Year() % 100), true
	case 'm':
		return two(int(t.Month())), true
	case 'd':
		return two(t.Day()), true
	case 'e':
		if t.Day() < 10 {
			return " " + strconv.Itoa(t.Day()), true
		}
		return strconv.Itoa(t.Day()), true
	case 'H':
		return two(t.Hour()), true
	case 'M':
		return two(t.Minute()), true
	case 'S':
		return two(t.Second()), true
	case 'j':
		d := t.YearDay()
		return strconv.Itoa(d/100) + two(d%100), true
	case 'a':
		return t.Format("Mon"), true
	case 'A':
		return t.Format("Monday"), true
	case 'b':
		return t.Format("Jan"), true
	case 'B':
		return t.Format("January"), true
	case 'Z':
		return t.Format("MST"), true
	case 'z':
		return t.Format("-0700"), true
	case 's':
		return strconv.FormatInt(t.Unix(), 10), true
	case '%':
		return "%", true
	}
	return "", false
}
