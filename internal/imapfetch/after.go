package imapfetch

import (
	"fmt"

	"github.com/emersion/go-imap/v2"
)

// after does the after: action to messages that are durably filed:
// UID EXPUNGE (plain EXPUNGE where the server lacks UIDPLUS), UID MOVE,
// or nothing (keep: the state remembers them).
func (f *Fetcher) after(conn *Conn, set imap.UIDSet) error {
	s := f.Settings
	switch s.After {
	case AfterKeep:
		return nil
	case AfterMove:
		if conn.Caps.Has(imap.CapMove) {
			if _, err := conn.C.Move(set, s.MoveTo).Wait(); err != nil {
				return fmt.Errorf("move %s to %s: %w", set, s.MoveTo, err)
			}
			return nil
		}
		if _, err := conn.C.Copy(set, s.MoveTo).Wait(); err != nil {
			return fmt.Errorf("copy %s to %s: %w", set, s.MoveTo, err)
		}
	}
	return f.expunge(conn, set)
}

// expunge marks set \Deleted and expunges it.
func (f *Fetcher) expunge(conn *Conn, set imap.UIDSet) error {
	store := &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}
	if err := conn.C.Store(set, store, nil).Close(); err != nil {
		return fmt.Errorf("mark %s deleted: %w", set, err)
	}
	if conn.Caps.Has(imap.CapUIDPlus) {
		if err := conn.C.UIDExpunge(set).Close(); err != nil {
			return fmt.Errorf("expunge %s: %w", set, err)
		}
		return nil
	}
	// Without UIDPLUS, EXPUNGE also removes what another client marked
	// \Deleted: what fetchmail and fdm do too.
	if !f.warnedExpunge {
		f.warn("the server lacks UIDPLUS: EXPUNGE also removes messages other clients marked \\Deleted")
		f.warnedExpunge = true
	}
	if err := conn.C.Expunge().Close(); err != nil {
		return fmt.Errorf("expunge: %w", err)
	}
	return nil
}
