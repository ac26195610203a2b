package sshtest

import (
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// NoMailUserName is the login user of the tests of a spool directory the
// user cannot write: outside group mail, as an ordinary user is on Debian
// and Ubuntu, where /var/mail is root:mail 2775.
const NoMailUserName = "mfilter-nomail"

// User is a unix user of the tests.
type User struct {
	Name     string
	UID, GID int
	Home     string
}

// NoMailUser returns the user mfilter-nomail, creating it (useradd, with a
// home directory under /home and a login shell, its password field "*":
// sshd refuses a locked "!" account even a key login) when it is missing.
// It fails when the user is in group mail. The home is shared by every
// test that uses the user; each keeps to its own files in it.
func NoMailUser(t testing.TB) *User {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("creating the user %s needs root: run the tests as root (CI does)", NoMailUserName)
	}
	u, err := user.Lookup(NoMailUserName)
	if err != nil {
		out, err := exec.Command("useradd", "--create-home", "--home-dir", "/home/"+NoMailUserName, "--shell", "/bin/sh",
			"--user-group", "--password", "*", "--comment", "mfilter tests, a user outside group mail", NoMailUserName).CombinedOutput()
		if u, err = user.Lookup(NoMailUserName); err != nil { // another test process may have made it
			t.Fatalf("useradd %s: %v\n%s", NoMailUserName, err, out)
		}
	}
	nu := &User{Name: u.Username, Home: u.HomeDir}
	nu.UID, _ = strconv.Atoi(u.Uid)
	nu.GID, _ = strconv.Atoi(u.Gid)
	groups, err := u.GroupIds()
	if err != nil {
		t.Fatal(err)
	}
	if mail, err := user.LookupGroup("mail"); err == nil && slices.Contains(groups, mail.Gid) {
		t.Fatalf("%s is in group mail: the tests need a user outside it", NoMailUserName)
	}
	if st, err := os.Stat(nu.Home); err != nil || !st.IsDir() {
		t.Fatalf("%s's home %s: %v", NoMailUserName, nu.Home, err)
	}
	return nu
}

// MailSpool makes a spool directory as Debian's /var/mail is, root:mail
// 2775, in a new directory that everyone may search, and in it the
// user's spool, u:mail 0660 and empty, as the MTA leaves it. It returns
// the spool's path; the directory, and the user's copies of claims of
// it, are removed at the end of the test.
func MailSpool(t testing.TB, u *User) string {
	t.Helper()
	mail, err := user.LookupGroup("mail")
	if err != nil {
		t.Fatalf("no group mail: %v", err)
	}
	gid, _ := strconv.Atoi(mail.Gid)
	top, err := os.MkdirTemp("", "mfilter-mailspool-")
	if err != nil {
		t.Fatal(err)
	}
	dir := top + "/mail"
	spool := dir + "/" + u.Name
	t.Cleanup(func() {
		os.RemoveAll(top)
		os.RemoveAll(ClaimsDir(u, spool))
	})
	if err := os.Chmod(top, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 0, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o2775); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(spool, nil, 0o660); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(spool, u.UID, gid); err != nil {
		t.Fatal(err)
	}
	return spool
}

// ClaimsDir is where the server keeps u's copied claims of spool
// (remote's copy claim): ~/.local/state/mfilter/claims/ and the spool's
// directory with % and / written %25 and %2F.
func ClaimsDir(u *User, spool string) string {
	d := spool[:strings.LastIndexByte(spool, '/')]
	d = strings.ReplaceAll(d, "%", "%25")
	d = strings.ReplaceAll(d, "/", "%2F")
	if d == "" {
		d = "%2F"
	}
	return u.Home + "/.local/state/mfilter/claims/" + d
}
