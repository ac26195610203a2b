package rules

import (
	"bufio"
	"errors"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

// The account files a private group is looked up in.
const (
	passwdFile = "/etc/passwd"
	groupFile  = "/etc/group"
	// maxAccountFile bounds what is read of each.
	maxAccountFile = 16 << 20
)

// groupIsOwners reports whether gid is the user uid's private group: the
// user's primary group, with no other member and no other user's primary
// group. Debian and Ubuntu give every user such a group and a umask of
// 002, so a rules file a user writes is group-writable; that lets no one
// else write it, and is accepted (as Debian's OpenSSH accepts such
// ~/.ssh files). Users and groups that only a directory service knows are
// not looked up: such a file is refused.
func groupIsOwners(uid, gid uint32) bool {
	return privateGroup(passwdFile, groupFile, uid, gid)
}

func privateGroup(passwdPath, groupPath string, uid, gid uint32) bool {
	owner, ok := soleUserOfGroup(passwdPath, uid, gid)
	if !ok {
		return false
	}
	members, ok := groupMembers(groupPath, gid)
	if !ok {
		return false
	}
	return !slices.ContainsFunc(members, func(m string) bool { return m != owner })
}

// soleUserOfGroup returns the name of user uid if gid is its primary
// group and no other user's.
func soleUserOfGroup(path string, uid, gid uint32) (name string, ok bool) {
	found := false
	err := eachAccountLine(path, func(f []string) bool {
		if len(f) < 4 {
			return true
		}
		u, uerr := strconv.ParseUint(f[2], 10, 32)
		g, gerr := strconv.ParseUint(f[3], 10, 32)
		if uerr != nil || gerr != nil {
			return true
		}
		switch {
		case uint32(u) == uid:
			if uint32(g) != gid || found {
				ok = false
				return false
			}
			name, found, ok = f[0], true, true
		case uint32(g) == gid:
			ok = false
			return false // another user's primary group too
		}
		return true
	})
	return name, err == nil && found && ok
}

// groupMembers returns the member list of group gid.
func groupMembers(path string, gid uint32) (members []string, ok bool) {
	err := eachAccountLine(path, func(f []string) bool {
		if len(f) < 4 || f[2] != strconv.FormatUint(uint64(gid), 10) {
			return true
		}
		if ok {
			ok = false // two entries: trust neither
			return false
		}
		ok = true
		if f[3] != "" {
			members = strings.Split(f[3], ",")
		}
		return true
	})
	return members, err == nil && ok
}

var errCompatEntry = errors.New("the file includes entries from NIS")

// eachAccountLine calls fn with the colon-separated fields of each line
// of an /etc/passwd-style file until fn returns false.
func eachAccountLine(path string, fn func([]string) bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, maxAccountFile))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '+' || line[0] == '-' {
			return errCompatEntry // NIS entries: who else is in the group is unknown
		}
		if !fn(strings.Split(line, ":")) {
			return nil
		}
	}
	return sc.Err()
}
