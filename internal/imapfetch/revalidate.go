package imapfetch

import (
	"context"
	"fmt"

	"github.com/emersion/go-imap/v2"
)

// revalidate deals with a UIDVALIDITY change: the server renumbered the
// folder, and the UIDs of the state and the journal mean nothing now.
// The messages filed under the old UIDVALIDITY that are still on the
// server (kept ones, or filed ones a killed run had not yet expunged)
// are found by their keys (date, size, Message-ID) and done with
// (expunged, moved, or remembered as kept), never filed again; the
// others are filed as new.
func (f *Fetcher) revalidate(ctx context.Context, conn *Conn, g *generation, validity uint32) error {
	filed := g.keys.filed(g.st.Validity, g.filedMark())
	var known imap.UIDSet
	n, total := 0, 0
	if len(filed) > 0 {
		cmd := conn.C.Fetch(imap.UIDSet{{Start: 1, Stop: 0}}, fetchOptions(false))
		for md := cmd.Next(); md != nil; md = cmd.Next() {
			m, err := readFetched(md)
			if err != nil {
				cmd.Close()
				return fmt.Errorf("list the renumbered folder: %w", err)
			}
			total++
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
		if err := cmd.Close(); err != nil {
			return fmt.Errorf("list the renumbered folder: %w", err)
		}
	}
	f.warn("UIDVALIDITY changed from %d to %d (the server renumbered the folder): %d of its %d messages were filed before (found by date, size and Message-ID) and are not filed again", g.st.Validity, validity, n, total)
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
	g.fresh = false
	return g.newJournal(f)
}
