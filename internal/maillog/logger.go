package maillog

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/mfilter/mfilter/internal/msgview"
)

// Format is a log format.
type Format int

const (
	Procmail Format = iota // procmail's abstract, which mailstat reads
	JSON                   // one JSON object per line
)

// Logger appends one entry per delivery to a log file. Each entry is one
// write, so concurrent mfilter and procmail processes do not interleave
// lines.
type Logger struct {
	mu     sync.Mutex
	w      io.Writer
	format Format
	now    func() time.Time
}

// Enabled reports whether the Logger writes anything.
func (l *Logger) Enabled() bool { return l != nil && l.w != nil }

// New returns a Logger writing procmail abstracts to w (nil: log nothing).
func New(w io.Writer) *Logger { return &Logger{w: w, now: time.Now} }

// NewFormat returns a Logger writing format to w.
func NewFormat(w io.Writer, format Format) *Logger {
	return &Logger{w: w, format: format, now: time.Now}
}

// Log writes the entry of one delivery: the message, the folder as
// procmail names it, and the bytes written.
func (l *Logger) Log(msg []byte, folder string, size int) error {
	if l == nil || l.w == nil {
		return nil
	}
	var entry []byte
	if l.format == JSON {
		entry = jsonEntry(l.now(), msg, folder, size)
	} else {
		entry = Abstract(msg, folder, size)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err := l.w.Write(entry)
	return err
}

// Note writes a line of text (a rule's log action), like procmail's LOG.
func (l *Logger) Note(text string) error {
	if l == nil || l.w == nil {
		return nil
	}
	var entry []byte
	if l.format == JSON {
		entry = jsonLine(struct {
			Time string `json:"time"`
			Log  string `json:"log"`
		}{l.now().UTC().Format(time.RFC3339), text})
	} else {
		entry = []byte(strings.TrimSuffix(text, "\n") + "\n")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err := l.w.Write(entry)
	return err
}

// jsonEntry describes a delivery for log processors: when, the envelope
// sender of the From_ line, the decoded From and Subject, the Message-ID,
// the folder and the bytes written.
func jsonEntry(t time.Time, msg []byte, folder string, size int) []byte {
	v := msgview.New(msg)
	field := func(name string) string {
		if fs := v.Get(name); len(fs) > 0 {
			return v.Decoded(fs[0])
		}
		return ""
	}
	envelope := ""
	if fl := v.FromLine(); fl != nil {
		if f := strings.Fields(string(fl[len("From "):])); len(f) > 0 {
			envelope = f[0]
		}
	}
	e := struct {
		Time      string `json:"time"`
		Envelope  string `json:"envelope_from,omitempty"`
		From      string `json:"from,omitempty"`
		Subject   string `json:"subject,omitempty"`
		MessageID string `json:"message_id,omitempty"`
		Folder    string `json:"folder"`
		Size      int    `json:"size"`
	}{t.UTC().Format(time.RFC3339), envelope, field("from"), field("subject"), strings.TrimSpace(field("message-id")), strings.TrimSpace(folder), size}
	return jsonLine(e)
}

// jsonLine encodes v as one line of JSON, without HTML escapes (so that
// "<id@host>" stays greppable). Invalid UTF-8 becomes U+FFFD.
func jsonLine(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(v) // strings and ints only: cannot fail
	return b.Bytes()
}
