package rules

import (
	"os"
	"syscall"
)

func ownerOf(st os.FileInfo) (int, bool) {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(sys.Uid), true
}

func groupOf(st os.FileInfo) (uint32, bool) {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return sys.Gid, true
}

// othersMayWrite reports whether someone other than st's owner may write
// it: it is writable by others, or by a group that is not the owner's
// private group (groupIsOwners).
func othersMayWrite(st os.FileInfo) bool {
	perm := st.Mode().Perm()
	if perm&0o002 != 0 {
		return true
	}
	if perm&0o020 == 0 {
		return false
	}
	uid, uok := ownerOf(st)
	gid, gok := groupOf(st)
	return !uok || !gok || !groupIsOwners(uint32(uid), gid)
}
