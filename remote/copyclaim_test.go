package remote

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mfilter/mfilter/internal/sshtest"
)

// copyClaimEnv: a login user outside group mail, its spool in a
// directory root:mail 2775, and a spool client for it.
func copyClaimEnv(t *testing.T, opts sshtest.Options) (*sshtest.User, string, *SSHSpool) {
	u := sshtest.NoMailUser(t)
	if _, err := exec.LookPath("dotlockfile"); err != nil && opts.Path == "" {
		t.Fatalf("dotlockfile is not installed (test.sh installs liblockfile-bin): %v", err)
	}
	opts.User = u.Name
	srv := sshtest.Start(t, opts)
	spool := sshtest.MailSpool(t, u)
	return u, spool, sshSpool(t, srv, spool, "none")
}

// spoolDirEntries lists the spool's directory: the spool and nothing
// else must be there (no lock, no lock's temporary file, no claim).
func spoolDirEntries(t *testing.T, spool string) []string {
	ents, err := os.ReadDir(filepath.Dir(spool))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func writeAs(t *testing.T, u *sshtest.User, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, u.UID, u.GID); err != nil {
		t.Fatal(err)
	}
}

func readAll(t *testing.T, sp *SSHSpool, cf ClaimedFile) []byte {
	t.Helper()
	st, err := sp.Open(context.Background(), cf, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestCopyClaim: where the spool's directory is not writable, a claim
// copies the spool to the user's own space and truncates it; the claim
// keeps its name in the spool's directory towards the client.
func TestCopyClaim(t *testing.T) {
	u, spool, sp := copyClaimEnv(t, sshtest.Options{})
	ctx := context.Background()
	data := mbox(300)
	writeAs(t, u, spool, data)
	name := NewClaimName(spool, "client1")
	cf, err := sp.Claim(ctx, name)
	if err != nil || cf == nil {
		t.Fatalf("claim: %v %v", cf, err)
	}
	if cf.Name != name || cf.Size != int64(len(data)) {
		t.Fatalf("claimed %s %d, want %s %d", cf.Name, cf.Size, name, len(data))
	}
	if st, err := os.Stat(spool); err != nil || st.Size() != 0 {
		t.Fatalf("the spool must stay, empty: %v %v", st, err)
	}
	if got := spoolDirEntries(t, spool); len(got) != 1 {
		t.Fatalf("the spool's directory holds %v, want the spool alone", got)
	}
	copyPath := filepath.Join(sshtest.ClaimsDir(u, spool), filepath.Base(name))
	if b, err := os.ReadFile(copyPath); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("the copy %s: %d bytes, %v", copyPath, len(b), err)
	}
	list, err := sp.Claimed(ctx)
	if err != nil || len(list) != 1 || list[0] != *cf {
		t.Fatalf("claimed list %v %v, want %v", list, err, *cf)
	}
	if n, ok, err := sp.Size(ctx, name); err != nil || !ok || n != cf.Size {
		t.Fatalf("size %d %v %v", n, ok, err)
	}
	if got := readAll(t, sp, *cf); !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, want %d", len(got), len(data))
	}
	if grown, err := sp.Remove(ctx, name, cf.Size); err != nil || grown != 0 {
		t.Fatalf("remove: %d %v", grown, err)
	}
	if ents, _ := os.ReadDir(sshtest.ClaimsDir(u, spool)); len(ents) != 0 {
		t.Fatalf("left in the claims directory: %v", ents)
	}
	if cf, err := sp.Claim(ctx, NewClaimName(spool, "client1")); err != nil || cf != nil {
		t.Fatalf("an empty spool: want no claim, got %v %v", cf, err)
	}
}

// TestCopyClaimWaitsForLocks: the copy claim waits for the spool's fcntl
// lock and for its dotlock, as an MTA's append holds them.
func TestCopyClaimWaitsForLocks(t *testing.T) {
	u, spool, sp := copyClaimEnv(t, sshtest.Options{})
	sp.LockWait = 20 * time.Second
	for _, lock := range []string{"fcntl", "dotlock"} {
		t.Run(lock, func(t *testing.T) {
			writeAs(t, u, spool, mbox(3))
			release := func() {}
			switch lock {
			case "fcntl":
				f, err := os.OpenFile(spool, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				lk := syscall.Flock_t{Type: syscall.F_WRLCK}
				if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLKW, &lk); err != nil {
					t.Fatal(err)
				}
				release = func() { f.Close() }
			case "dotlock":
				// As Postfix makes it: an empty file, SPOOL.lock.
				if err := os.WriteFile(spool+".lock", nil, 0o444); err != nil {
					t.Fatal(err)
				}
				release = func() { os.Remove(spool + ".lock") }
			}
			go func() { time.Sleep(2 * time.Second); release() }()
			start := time.Now()
			cf, err := sp.Claim(context.Background(), NewClaimName(spool, "c"))
			if err != nil || cf == nil {
				t.Fatalf("claim: %v %v", cf, err)
			}
			if d := time.Since(start); d < 1500*time.Millisecond {
				t.Fatalf("the claim took %v: it did not wait for the %s lock", d, lock)
			}
			if grown, err := sp.Remove(context.Background(), cf.Name, cf.Size); err != nil || grown != 0 {
				t.Fatalf("remove: %d %v", grown, err)
			}
		})
	}
	// A lock held too long fails the claim and leaves the spool alone.
	writeAs(t, u, spool, mbox(3))
	f, _ := os.OpenFile(spool, os.O_RDWR, 0)
	defer f.Close()
	lk := syscall.Flock_t{Type: syscall.F_WRLCK}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLKW, &lk); err != nil {
		t.Fatal(err)
	}
	sp.LockWait = 2 * time.Second
	if _, err := sp.Claim(context.Background(), NewClaimName(spool, "c")); err == nil || !strings.Contains(err.Error(), "still held") {
		t.Fatalf("a lock held too long must fail the claim: %v", err)
	}
	if st, _ := os.Stat(spool); st.Size() != int64(len(mbox(3))) {
		t.Fatalf("a failed claim changed the spool: %d bytes", st.Size())
	}
}

// TestCopyClaimCrashes sets up what a claim killed at each step leaves,
// and checks that the next claim or remove settles it: no byte both in
// the spool and a claim, none in neither.
func TestCopyClaimCrashes(t *testing.T) {
	u, spool, sp := copyClaimEnv(t, sshtest.Options{})
	ctx := context.Background()
	dir := sshtest.ClaimsDir(u, spool)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chown(dir, u.UID, u.GID)
	claimed, late := mbox(20), []byte("From late@example.org Mon Jan  1 00:00:00 2024\n\nlate\n")

	// Killed between the copy and the truncation, and mail came after:
	// removing the claim first gives it the rest of the spool.
	name := NewClaimName(spool, "c")
	cp := filepath.Join(dir, filepath.Base(name))
	writeAs(t, u, cp, claimed)
	writeAs(t, u, cp+".pending", nil)
	writeAs(t, u, spool, append(append([]byte{}, claimed...), late...))
	grown, err := sp.Remove(ctx, name, int64(len(claimed)))
	if err != nil || grown != int64(len(claimed)+len(late)) {
		t.Fatalf("remove of an unsettled claim: grown %d %v, want %d", grown, err, len(claimed)+len(late))
	}
	if b, _ := os.ReadFile(cp); !bytes.Equal(b, append(append([]byte{}, claimed...), late...)) {
		t.Fatalf("the claim holds %d bytes", len(b))
	}
	if st, _ := os.Stat(spool); st.Size() != 0 {
		t.Fatalf("the spool holds %d bytes", st.Size())
	}
	if _, err := os.Stat(cp + ".pending"); err == nil {
		t.Fatal("the marker is still there")
	}
	if grown, err := sp.Remove(ctx, name, grown); err != nil || grown != 0 {
		t.Fatalf("remove: %d %v", grown, err)
	}

	// Killed after the truncation, and mail came after: the next claim
	// leaves the old claim as it is and claims the new mail only.
	old := NewClaimName(spool, "c")
	cp = filepath.Join(dir, filepath.Base(old))
	writeAs(t, u, cp, claimed)
	writeAs(t, u, cp+".pending", nil)
	writeAs(t, u, spool, late)
	// Killed during a copy: a marker and a partial copy, no claim.
	partial := filepath.Join(dir, filepath.Base(NewClaimName(spool, "c")))
	writeAs(t, u, partial+".pending", nil)
	writeAs(t, u, partial+".tmp", late[:10])
	cf, err := sp.Claim(ctx, NewClaimName(spool, "c"))
	if err != nil || cf == nil || cf.Size != int64(len(late)) {
		t.Fatalf("claim after crashes: %v %v, want %d bytes", cf, err, len(late))
	}
	if b, _ := os.ReadFile(cp); !bytes.Equal(b, claimed) {
		t.Fatalf("the truncated claim changed: %d bytes", len(b))
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 2 {
		t.Fatalf("the claims directory holds %v, want the two claims", names)
	}
	list, err := sp.Claimed(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("claimed: %v %v", list, err)
	}
	for _, c := range list {
		if grown, err := sp.Remove(ctx, c.Name, c.Size); err != nil || grown != 0 {
			t.Fatalf("remove %s: %d %v", c.Name, grown, err)
		}
	}
	if got := spoolDirEntries(t, spool); len(got) != 1 {
		t.Fatalf("the spool's directory holds %v", got)
	}
}

// TestCopyClaimNeedsPerl: without perl there is no fcntl lock to take;
// the claim fails saying why and leaves the spool alone.
func TestCopyClaimNeedsPerl(t *testing.T) {
	bin := t.TempDir()
	os.Chmod(filepath.Dir(bin), 0o755)
	os.Chmod(bin, 0o755)
	for _, tool := range []string{"sh", "tail", "wc", "date", "stat", "ln", "mv", "rm", "sleep", "dirname", "cat", "mkdir"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatal(err)
		}
		os.Symlink(p, filepath.Join(bin, tool))
	}
	u, spool, sp := copyClaimEnv(t, sshtest.Options{Path: bin})
	writeAs(t, u, spool, mbox(3))
	_, err := sp.Claim(context.Background(), NewClaimName(spool, "c"))
	if err == nil || !strings.Contains(err.Error(), "no perl") {
		t.Fatalf("want a claim error naming perl, got %v", err)
	}
	if st, _ := os.Stat(spool); st.Size() != int64(len(mbox(3))) {
		t.Fatalf("the spool changed: %d bytes", st.Size())
	}
}
