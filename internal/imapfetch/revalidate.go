package imapfetch

import (
	"context"
	"fmt"
	"io"
	"slices"

	"github.com/emersion/go-imap/v2"
)

// revalidate deals with a UIDVALIDITY change: the server renumbered the
// folder, and the UIDs of the state and the journal mean nothing now.
// The messages filed under the old UIDVALIDITY that are still on the
// server (kept ones, or filed ones a killed run had not yet expunged)
// are found by their keys (date, size, Message-ID) and done with
// (expunged, moved, or remembered as kept), never filed again; the
// others are filed as new. Messages a killed run was filing when it died
// (their batch may or may not have become visible) are first filed
// under their old UIDs with the old journal, which finds what is there.
func (f *Fetcher) revalidate(ctx context.Context, conn *Conn, g *generation, validity uint32) error {
	inFlight := g.keys.inFlight(g.st.Validity, g.filedMark())
	filed := g.keys.filed(g.st.Validity, g.filedMark())
	var list []*fetched
	if len(filed) > 0 || len(inFlight) > 0 {
		var err error
		if list, err = listFolder(conn); err != nil {
			return err
		}
	}
	if len(inFlight) > 0 {
		if err := f.refileInFlight(ctx, conn, g, inFlight, list); err != nil {
			return err
		}
		filed = g.keys.filed(g.st.Validity, g.filedMark())
	}
	var known imap.UIDSet
	n := 0
	for _, m := range list {
		k := m.key()
		if filed[k] == 0 {
			continue
		}
		filed[k]--
		n++
		known.AddNum(m.uid)
		if f.Settings.After == AfterKeep {
			g.keys.add(validity, m.uid, k, 'k')
		}
	}
	f.warn("UIDVALIDITY changed from %d to %d (the server renumbered the folder): %d of its %d messages were filed before (found by date, size and Message-ID) and are not filed again", g.st.Validity, validity, n, len(list))
	if err := g.keys.sync(); err != nil {
		return err
	}
	if n > 0 {
		if err := f.after(conn, known); err != nil {
			return err
		}
	}
	g.st = state{Server: f.Settings.Host, Folder: f.Settings.Folder, Validity: validity, Next: 1}
	if err := writeState(f.path(".state"), g.st); err != nil {
		return err
	}
	return g.newJournal(f)
}

// listFolder fetches the UID and key items of every message in the
// selected folder (no bodies).
func listFolder(conn *Conn) ([]*fetched, error) {
	var list []*fetched
	cmd := conn.C.Fetch(imap.UIDSet{{Start: 1, Stop: 0}}, fetchOptions(false))
	for md := cmd.Next(); md != nil; md = cmd.Next() {
		m, err := readFetched(md)
		if err != nil {
			cmd.Close()
			return nil, fmt.Errorf("list the renumbered folder: %w", err)
		}
		list = append(list, m)
	}
	if err := cmd.Close(); err != nil {
		return nil, fmt.Errorf("list the renumbered folder: %w", err)
	}
	return list, nil
}

// renumbered is a message of a killed run's last batches: its UID then
// and now.
type renumbered struct{ old, now imap.UID }

// refileInFlight files again, with the old journal and at their old
// UIDs, the messages of the old UIDVALIDITY a killed run had fetched
// beyond its filed mark and that the renumbered folder still holds. The
// journal's checks skip every delivery the killed run made (maildir
// files by their names, mbox appends by their bytes), so each is filed
// once; then they are below the filed mark, and done with as filed.
func (f *Fetcher) refileInFlight(ctx context.Context, conn *Conn, g *generation, inFlight map[string][]imap.UID, list []*fetched) error {
	var todo []renumbered
	for _, m := range list {
		if olds := inFlight[m.key()]; len(olds) > 0 {
			todo = append(todo, renumbered{old: olds[0], now: m.uid})
			inFlight[m.key()] = olds[1:]
		}
	}
	if len(todo) == 0 {
		return nil
	}
	slices.SortFunc(todo, func(a, b renumbered) int { return int(a.old) - int(b.old) })
	src := &replayStream{conn: conn, todo: todo}
	if _, err := f.Filer.FileStream(ctx, src, g.j); err != nil {
		return fmt.Errorf("finish the batches of the old UIDVALIDITY %d: %w", g.st.Validity, err)
	}
	f.warn("%d messages of the old UIDVALIDITY %d were being filed when a run stopped: each is now filed where it was not yet", len(todo), g.st.Validity)
	return nil
}

// replayStream is a filer.OffsetSource of renumbered messages, fetched
// one at a time by their new UIDs and given at their old ones.
type replayStream struct {
	conn *Conn
	todo []renumbered
	cur  renumbered
}

func (s *replayStream) Next() ([]byte, error) {
	for len(s.todo) > 0 {
		s.cur, s.todo = s.todo[0], s.todo[1:]
		cmd := s.conn.C.Fetch(imap.UIDSetNum(s.cur.now), fetchOptions(true))
		var m *fetched
		var err error
		for md := cmd.Next(); md != nil; md = cmd.Next() {
			if m == nil && err == nil {
				m, err = readFetched(md)
			}
		}
		if cerr := cmd.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("fetch UID %d: %w", s.cur.now, cerr)
		}
		if err != nil {
			return nil, err
		}
		if m == nil || m.body == nil {
			continue // expunged meanwhile: filed or not, it is gone
		}
		return mboxForm(m.body, m.date), nil
	}
	return nil, io.EOF
}

func (s *replayStream) Offsets() (int64, int64) { return int64(s.cur.old), int64(s.cur.old) + 1 }
