// Package maillog writes procmail's LOGFILE abstract, byte for byte, so
// that procmail's mailstat and existing log watchers keep working.
package maillog

import (
	"bytes"
	"strconv"
)

// Abstract formats procmail's per-delivery abstract (mailfold.c
// logabstract): the From_ line, the Subject line cut to 78 bytes, and
// "  Folder: " with the folder cut to 60 bytes, tabs to column 72 and the
// size right-aligned in 7 columns. Unlike procmail, a Subject that is the
// first line of the message is shown correctly.
func Abstract(msg []byte, folder string, size int) []byte {
	const (
		maxSubject = 78
		maxFolder  = 60
		sizeCol    = 72
		tabWidth   = 8
		prefix     = "  Folder: "
	)
	var b bytes.Buffer
	header := msg
	if i := headerEnd(msg); i >= 0 {
		header = msg[:i]
	}
	rest := header
	if bytes.HasPrefix(msg, []byte("From ")) {
		line := msg
		if i := bytes.IndexByte(msg, '\n'); i >= 0 {
			line = msg[:i]
			rest = header[min(i, len(header)):]
		} else {
			rest = nil
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	if subj := subjectLine(rest); subj != nil {
		if len(subj) > maxSubject {
			subj = subj[:maxSubject]
		}
		if i := bytes.IndexByte(subj, 0); i >= 0 {
			subj = subj[:i] // procmail prints a C string
		}
		b.WriteByte(' ')
		b.Write(detab(subj))
		b.WriteByte('\n')
	}
	f := []byte(folder)
	if len(f) > maxFolder {
		f = f[:maxFolder]
	}
	if i := bytes.IndexByte(f, 0); i >= 0 {
		f = f[:i]
	}
	b.WriteString(prefix)
	b.Write(detab(f))
	i := len(f) + len(prefix)
	i -= i % tabWidth
	for {
		b.WriteByte('\t')
		i += tabWidth
		if i >= sizeCol {
			break
		}
	}
	n := strconv.Itoa(size)
	for k := len(n); k < 7; k++ {
		b.WriteByte(' ')
	}
	b.WriteString(n)
	b.WriteByte('\n')
	return b.Bytes()
}

// headerEnd is the offset of the blank line ending the header, or -1.
// Like procmail, it looks for it after any leading blank lines.
func headerEnd(msg []byte) int {
	start := len(msg) - len(bytes.TrimLeft(msg, "\n"))
	if i := bytes.Index(msg[start:], []byte("\n\n")); i >= 0 {
		return start + i + 1
	}
	return -1
}

// subjectLine returns the first header line that starts with "Subject:"
// (any case), without its newline.
func subjectLine(header []byte) []byte {
	for len(header) > 0 {
		line := header
		next := []byte(nil)
		if i := bytes.IndexByte(header, '\n'); i >= 0 {
			line, next = header[:i], header[i+1:]
		}
		if len(line) >= 8 && bytes.EqualFold(line[:8], []byte("subject:")) {
			return line
		}
		header = next
	}
	return nil
}

func detab(b []byte) []byte {
	out := bytes.Clone(b)
	for i, c := range out {
		switch c {
		case '\t', '\n', '\v', '\f', '\r':
			out[i] = ' '
		}
	}
	return out
}
