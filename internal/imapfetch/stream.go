package imapfetch

import (
	"bytes"
	"fmt"
	"io"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mfilter/mfilter/internal/mailfmt"
)

// maxMessage bounds one message held in memory: a larger one stops the
// run with an error, and stays on the server.
const maxMessage = 1 << 30

// fetchOptions ask for what filing a message needs, in one UID FETCH for
// a whole range: the server streams the messages back to back.
// BODY.PEEK leaves \Seen alone.
func fetchOptions(withBody bool) *imap.FetchOptions {
	o := &imap.FetchOptions{
		UID: true, RFC822Size: true, InternalDate: true,
		BodySection: []*imap.FetchItemBodySection{{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Message-ID"}, Peek: true}},
	}
	if withBody {
		o.BodySection = append(o.BodySection, &imap.FetchItemBodySection{Peek: true})
	}
	return o
}

// fetched is one message of a FETCH response.
type fetched struct {
	uid   imap.UID
	size  int64
	date  time.Time
	msgid []byte // the Message-ID field as the server gives it
	body  []byte // BODY[], when asked for
}

func (m *fetched) key() string { return messageKey(m.date, m.size, m.msgid) }

// readFetched reads the items of one message of a FETCH response.
func readFetched(md *imapclient.FetchMessageData) (*fetched, error) {
	var m fetched
	for {
		item := md.Next()
		if item == nil {
			break
		}
		switch it := item.(type) {
		case imapclient.FetchItemDataUID:
			m.uid = it.UID
		case imapclient.FetchItemDataRFC822Size:
			m.size = it.Size
		case imapclient.FetchItemDataInternalDate:
			m.date = it.Time
		case imapclient.FetchItemDataBodySection:
			if it.Literal == nil {
				continue // NIL: the server has no such part
			}
			if it.Literal.Size() > maxMessage {
				return nil, fmt.Errorf("a message of %d bytes: more than mfilter holds (%d)", it.Literal.Size(), maxMessage)
			}
			data, err := io.ReadAll(it.Literal)
			if err != nil {
				return nil, fmt.Errorf("read a message: %w", err)
			}
			if int64(len(data)) != it.Literal.Size() {
				return nil, fmt.Errorf("read a message: got %d of %d bytes", len(data), it.Literal.Size())
			}
			if len(it.Section.HeaderFields) > 0 {
				m.msgid = data
			} else {
				m.body = data
			}
		}
	}
	if m.uid == 0 {
		return nil, fmt.Errorf("the server sent a FETCH response without a UID")
	}
	return &m, nil
}

// stream is a filer.OffsetSource over a UID FETCH: each message in
// procmail's form (LF line ends, a From_ line from its sender and its
// INTERNALDATE, the same in every run), at offsets [uid, uid+1) so that
// the journal's filed mark is a UID.
type stream struct {
	cmd      *imapclient.FetchCommand
	from     imap.UID          // UIDs below are done (a "n:*" may give one)
	skip     map[imap.UID]bool // found filed after a UIDVALIDITY change
	keys     *keyFile
	validity uint32
	uid      imap.UID
	count    int
	bytes    int64
	onMsg    func(*fetched)
}

func (s *stream) Next() ([]byte, error) {
	for {
		md := s.cmd.Next()
		if md == nil {
			if err := s.cmd.Close(); err != nil {
				return nil, fmt.Errorf("fetch: %w", err)
			}
			return nil, io.EOF
		}
		m, err := readFetched(md)
		if err != nil {
			return nil, err
		}
		if m.uid < s.from || s.skip[m.uid] || m.body == nil {
			continue
		}
		if m.uid <= s.uid {
			return nil, fmt.Errorf("the server sent UID %d after UID %d", m.uid, s.uid)
		}
		s.uid = m.uid
		s.keys.add(s.validity, m.uid, m.key(), 'f')
		s.count++
		s.bytes += int64(len(m.body))
		if s.onMsg != nil {
			s.onMsg(m)
		}
		return mboxForm(m.body, m.date), nil
	}
}

func (s *stream) Offsets() (int64, int64) { return int64(s.uid), int64(s.uid) + 1 }

// mboxForm turns an RFC 5322 message as IMAP gives it (CRLF) into what
// procmail gets from fetchmail: LF line ends and a From_ line.
func mboxForm(body []byte, date time.Time) []byte {
	lf := bytes.ReplaceAll(body, []byte("\r\n"), []byte("\n"))
	if mailfmt.HasFromLine(lf) {
		return lf
	}
	from := mailfmt.GeneratedFromLine(lf, date)
	return append(from, lf...)
}
