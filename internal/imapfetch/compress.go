package imapfetch

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"

	"github.com/emersion/go-imap/v2"
	"github.com/klauspost/compress/flate"
)

// capCompress is RFC 4978's capability.
const capCompress = imap.Cap("COMPRESS=DEFLATE")

// compress sends COMPRESS DEFLATE; from the server's OK on, both
// directions are raw DEFLATE streams.
func (s *session) compress() error {
	r, err := s.command("COMPRESS DEFLATE")
	if err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	return r.err("COMPRESS DEFLATE")
}

// handoff is the session's connection as go-imap gets it: a PREAUTH
// greeting naming the capabilities, then the server's bytes (inflated
// when compressed), so that the client starts logged in. Deadlines and
// Close reach the underlying connection; a read or write error is
// final, as it is for go-imap's own reader and writer.
type handoff struct {
	net.Conn
	r io.Reader

	wmu sync.Mutex // go-imap writes from the IDLE goroutine too
	fw  *flate.Writer
}

// handoff ends the session: what the server said before go-imap takes
// over, and the connection, compressed or not.
func (s *session) handoff(compressed bool) net.Conn {
	greet := strings.NewReader("* PREAUTH [CAPABILITY " + capList(s.caps) + "] logged in by mfilter\r\n")
	h := &handoff{Conn: s.conn}
	if !compressed {
		h.r = io.MultiReader(greet, s.br)
		return h
	}
	// The reader reads on from s.br: the server may compress right
	// after its OK, into bytes already buffered. Its window is 32 KB:
	// memory stays bounded whatever the server sends.
	h.r = io.MultiReader(greet, flate.NewReader(s.br))
	// Commands are short: the fastest level compresses them as well.
	h.fw, _ = flate.NewWriter(s.conn, flate.BestSpeed)
	return h
}

func (h *handoff) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	switch {
	case err == nil || err == io.EOF || h.fw == nil:
	case errors.Is(err, io.ErrUnexpectedEOF):
		// A DEFLATE stream never ends, so the server's close
		// always cuts it: an end of the connection, as without
		// compression.
		err = io.EOF
	default:
		err = fmt.Errorf("inflate: %w", err)
	}
	return n, err
}

// Write compresses p and flushes it (a sync flush): a command, IDLE's
// DONE, a SASL response must reach the server now, not when a block
// fills.
func (h *handoff) Write(p []byte) (int, error) {
	if h.fw == nil {
		return h.Conn.Write(p)
	}
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if _, err := h.fw.Write(p); err != nil {
		return 0, err
	}
	if err := h.fw.Flush(); err != nil {
		return 0, err
	}
	return len(p), nil
}

// capList is the capabilities as an IMAP list; the COMPRESS ones are
// left out, as the link compresses already (RFC 4978 forbids a second
// COMPRESS).
func capList(caps imap.CapSet) string {
	var list []string
	for c := range caps {
		if !strings.HasPrefix(string(c), "COMPRESS=") {
			list = append(list, string(c))
		}
	}
	sort.Strings(list)
	return strings.Join(list, " ")
}
