package rules

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"

	"github.com/mfilter/mfilter/internal/mailfmt"
	"github.com/mfilter/mfilter/internal/msgview"
)

// dupKey is formail's key: the value of the (last) Message-ID field with
// leading blanks removed, exactly as written. Without one, and when
// bodyHash is on, it is a hash of the body with line ends normalised.
func dupKey(m *msgview.Message, bodyHash bool) string {
	var id []byte
	for _, f := range mailfmt.HeaderFields(m.Raw()) {
		if bytes.EqualFold(bytes.TrimRight(bytes.TrimSuffix(f.Name, []byte(":")), " \t"), []byte("message-id")) {
			id = f.Value // the last one wins, as in formail
		}
	}
	if v := bytes.TrimLeft(id, " "); len(v) > 0 {
		return string(v) // a CRLF line keeps its CR, as in formail
	}
	if !bodyHash {
		return ""
	}
	body := bytes.ReplaceAll(m.Body(), []byte("\r\n"), []byte("\n"))
	body = bytes.TrimRight(body, "\n")
	sum := sha256.Sum256(body)
	return "<body-sha256-" + hex.EncodeToString(sum[:16]) + "@mfilter>"
}

// ReadOnlyDuplicates makes the engine's duplicate conditions look
// without touching the cache files: for mfilter test, which writes
// nothing (a cache that does not exist is not created to be locked).
func (e *Engine) ReadOnlyDuplicates() {
	e.opts.Dup.ReadOnly = true
}
