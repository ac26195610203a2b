package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mfilter/mfilter/internal/sshtest"
)

func dialTest(t *testing.T, srv *sshtest.Server, mod func(*SSHConfig)) (*Client, error) {
	t.Helper()
	cfg := SSHConfig{
		Host:       "127.0.0.1",
		Addr:       srv.Addr,
		User:       srv.User,
		Identity:   []string{srv.ClientKey},
		KnownHosts: []string{srv.KnownHosts},
		Timeout:    10 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return Dial(ctx, cfg)
}

func TestDialAndRun(t *testing.T) {
	srv := sshtest.Start(t, sshtest.Options{})
	c, err := dialTest(t, srv, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out bytes.Buffer
	if err := c.Run(context.Background(), "echo hello; exit 0", nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if out.String() != "hello\n" {
		t.Errorf("got %q", out.String())
	}
	if err := c.Run(context.Background(), "exit 3", nil, io.Discard, io.Discard); err == nil {
		t.Error("a failing remote command must report its exit status")
	}
}

func TestUnknownHostRefusedWithLine(t *testing.T) {
	srv := sshtest.Start(t, sshtest.Options{})
	empty := filepath.Join(t.TempDir(), "known_hosts")
	_, err := dialTest(t, srv, func(c *SSHConfig) { c.KnownHosts = []string{empty} })
	var hk *HostKeyError
	if !errors.As(err, &hk) || hk.Changed {
		t.Fatalf("want an unknown-host error, got %v", err)
	}
	want := fmt.Sprintf("[127.0.0.1]:%d %s", srv.Port, srv.HostKeyPub)
	if hk.Line != want || !strings.Contains(err.Error(), want) {
		t.Fatalf("the error must give the exact known_hosts line\n got %q\nwant %q", hk.Line, want)
	}
	// accept-new records it, and the next connection is checked against it.
	c, err := dialTest(t, srv, func(c *SSHConfig) { c.KnownHosts = []string{empty}; c.AcceptNewHostKey = true })
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	data, _ := os.ReadFile(empty)
	if strings.TrimSpace(string(data)) != want {
		t.Fatalf("recorded %q", data)
	}
	c, err = dialTest(t, srv, func(c *SSHConfig) { c.KnownHosts = []string{empty} })
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestChangedHostKeyRefused(t *testing.T) {
	srv := sshtest.Start(t, sshtest.Options{})
	other := filepath.Join(t.TempDir(), "other")
	sshtest.Keygen(t, "ed25519", other)
	pub, _ := os.ReadFile(other + ".pub")
	f := strings.Fields(string(pub))
	kh := filepath.Join(t.TempDir(), "known_hosts")
	os.WriteFile(kh, []byte(fmt.Sprintf("[127.0.0.1]:%d %s %s\n", srv.Port, f[0], f[1])), 0o600)
	for _, accept := range []bool{false, true} {
		_, err := dialTest(t, srv, func(c *SSHConfig) { c.KnownHosts = []string{kh}; c.AcceptNewHostKey = accept })
		var hk *HostKeyError
		if !errors.As(err, &hk) || !hk.Changed {
			t.Fatalf("accept-new=%v: a changed host key must be refused, got %v", accept, err)
		}
	}
	data, _ := os.ReadFile(kh)
	if strings.Count(string(data), "\n") != 1 {
		t.Fatalf("known_hosts must not be changed: %q", data)
	}
}

// TestHostKeyAlgorithmOrder: the server offers RSA and ed25519 keys and
// known_hosts has only the ed25519 one; Go's default preference (RSA
// first) would report a false key mismatch (golang/go#29286).
func TestHostKeyAlgorithmOrder(t *testing.T) {
	srv := sshtest.Start(t, sshtest.Options{HostKeyTypes: []string{"ed25519", "rsa", "ecdsa"}})
	c, err := dialTest(t, srv, nil)
	if err != nil {
		t.Fatalf("known_hosts with the ed25519 key only: %v", err)
	}
	c.Close()
}

func TestAgentAuth(t *testing.T) {
	srv := sshtest.Start(t, sshtest.Options{})
	sock := sshtest.Agent(t, srv.ClientKey)
	c, err := dialTest(t, srv, func(c *SSHConfig) { c.Identity = nil; c.Agent = sock })
	if err != nil {
		t.Fatalf("agent auth: %v", err)
	}
	c.Close()
	_, err = dialTest(t, srv, func(c *SSHConfig) { c.Identity = nil })
	if err == nil {
		t.Fatal("with neither agent nor key, login must fail")
	}
}

func TestSSHConfigAlias(t *testing.T) {
	srv := sshtest.Start(t, sshtest.Options{})
	cfgFile := filepath.Join(t.TempDir(), "config")
	os.WriteFile(cfgFile, []byte(fmt.Sprintf("Host mailhost\n  HostName 127.0.0.1\n  Port %d\n  User %s\n  IdentityFile %s\n  UserKnownHostsFile %s\n", srv.Port, srv.User, srv.ClientKey, srv.KnownHosts)), 0o600)
	cfg, err := Resolve(context.Background(), Settings{Host: "mailhost", SSHConfigFile: cfgFile}, os.Getenv("HOME"), "")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != srv.Addr || cfg.User != srv.User {
		t.Fatalf("resolved %+v", cfg)
	}
	cfg.Timeout = 10 * time.Second
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatalf("dial through the alias: %v", err)
	}
	c.Close()
}

// mbox is a small spool with n messages.
func mbox(n int) []byte {
	var b bytes.Buffer
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "From sender@example.org Mon Jan  1 00:00:%02d 2024\nSubject: message %d\nMessage-ID: <%d@example.org>\n\nbody %d\nFrom the body, escaped by nobody\n\n", i%60, i, i, i)
	}
	return b.Bytes()
}

func sshSpool(t *testing.T, srv *sshtest.Server, spoolPath, compress string) *SSHSpool {
	c, err := dialTest(t, srv, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &SSHSpool{C: c, SpoolPath: spoolPath, Who: srv.User + "@127.0.0.1", Compress: compress, LockWait: 20 * time.Second}
}

func TestSpoolProtocol(t *testing.T) {
	srv := sshtest.Start(t, sshtest.Options{})
	for _, codec := range []string{"zstd", "gzip", "none"} {
		t.Run(codec, func(t *testing.T) {
			dir := t.TempDir()
			spool := filepath.Join(dir, "alice")
			data := mbox(500)
			os.WriteFile(spool, data, 0o600)
			sp := sshSpool(t, srv, spool, codec)
			ctx := context.Background()
			name := NewClaimName(spool, "client1")
			cf, err := sp.Claim(ctx, name)
			if err != nil || cf == nil {
				t.Fatalf("claim: %v %v", cf, err)
			}
			if cf.Size != int64(len(data)) {
				t.Fatalf("claimed %d bytes, want %d", cf.Size, len(data))
			}
			if _, err := os.Stat(spool); !errors.Is(err, os.ErrNotExist) {
				t.Fatal("the spool must be renamed away")
			}
			if ClaimClient(spool, name) != "client1" {
				t.Fatalf("client of %s = %q", name, ClaimClient(spool, name))
			}
			list, err := sp.Claimed(ctx)
			if err != nil || len(list) != 1 || list[0].Name != name {
				t.Fatalf("claimed list %v %v", list, err)
			}
			for _, off := range []int64{0, 1234} {
				st, err := sp.Open(ctx, *cf, off)
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
				if !bytes.Equal(got, data[off:]) {
					t.Fatalf("offset %d: got %d bytes, want %d", off, len(got), len(data)-int(off))
				}
				if st.Codec != codec {
					t.Errorf("codec %s, want %s", st.Codec, codec)
				}
				if codec != "none" && st.Wire() >= int64(len(got)) {
					t.Errorf("%s sent %d bytes for %d", codec, st.Wire(), len(got))
				}
			}
			// A writer that still had the old file open appends: Remove
			// keeps it and says so.
			f, _ := os.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
			f.Write([]byte("From late@example.org Mon Jan  1 00:00:00 2024\n\nlate\n"))
			f.Close()
			grown, err := sp.Remove(ctx, name, cf.Size)
			if err != nil || grown <= cf.Size {
				t.Fatalf("remove of a grown file: %d %v", grown, err)
			}
			if grown, err := sp.Remove(ctx, name, grown); err != nil || grown != 0 {
				t.Fatalf("remove: %d %v", grown, err)
			}
			if _, err := os.Stat(name); !errors.Is(err, os.ErrNotExist) {
				t.Fatal("claimed file not removed")
			}
			if cf, err := sp.Claim(ctx, NewClaimName(spool, "client1")); err != nil || cf != nil {
				t.Fatalf("no spool: want no claim, got %v %v", cf, err)
			}
		})
	}
}

// TestZstdMissingUsesGzip: a server without zstd is read with gzip.
func TestZstdMissingUsesGzip(t *testing.T) {
	bin := t.TempDir()
	for _, tool := range []string{"sh", "tail", "wc", "date", "stat", "ln", "mv", "rm", "sleep", "dirname", "gzip", "cat"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatal(err)
		}
		os.Symlink(p, filepath.Join(bin, tool))
	}
	srv := sshtest.Start(t, sshtest.Options{Path: bin})
	dir := t.TempDir()
	spool := filepath.Join(dir, "bob")
	os.WriteFile(spool, mbox(10), 0o600)
	sp := sshSpool(t, srv, spool, "auto")
	codec, err := sp.Codec(context.Background())
	if err != nil || codec != "gzip" {
		t.Fatalf("codec %q %v, want gzip", codec, err)
	}
	sp2 := sshSpool(t, srv, spool, "zstd")
	if _, err := sp2.Codec(context.Background()); err == nil {
		t.Fatal("--compress zstd on a server without zstd must fail")
	}
	// Claimed and Claim list the compressors, so that Open needs no probe
	// session of its own.
	for _, op := range []string{"claimed", "claim"} {
		sp3 := sshSpool(t, srv, spool, "auto")
		var err error
		if op == "claimed" {
			_, err = sp3.Claimed(context.Background())
		} else {
			_, err = sp3.Claim(context.Background(), NewClaimName(spool, "c"))
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(sp3.have) != 1 || !sp3.have["gzip"] {
			t.Fatalf("after %s: compressors %v, want gzip only", op, sp3.have)
		}
		if codec, err := sp3.Codec(context.Background()); err != nil || codec != "gzip" {
			t.Fatalf("after %s: codec %q %v, want gzip", op, codec, err)
		}
	}
}

// TestClaimWaitsForDotlock: a held SPOOL.lock delays the claim until it
// is released; a stale one is removed.
func TestClaimWaitsForDotlock(t *testing.T) {
	srv := sshtest.Start(t, sshtest.Options{})
	dir := t.TempDir()
	spool := filepath.Join(dir, "carol")
	os.WriteFile(spool, mbox(3), 0o600)
	os.WriteFile(spool+".lock", []byte("0"), 0o444)
	go func() { time.Sleep(2 * time.Second); os.Remove(spool + ".lock") }()
	sp := sshSpool(t, srv, spool, "none")
	start := time.Now()
	cf, err := sp.Claim(context.Background(), NewClaimName(spool, "c"))
	if err != nil || cf == nil {
		t.Fatal(err)
	}
	if time.Since(start) < 1500*time.Millisecond {
		t.Fatal("the claim did not wait for the dotlock")
	}
	os.WriteFile(spool, mbox(2), 0o600)
	os.WriteFile(spool+".lock", []byte("0"), 0o444)
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(spool+".lock", old, old)
	sp.StaleAfter = 60 * time.Second
	if cf, err := sp.Claim(context.Background(), NewClaimName(spool, "c")); err != nil || cf == nil {
		t.Fatalf("a stale lock must be broken: %v %v", cf, err)
	}
	os.WriteFile(spool, mbox(2), 0o600)
	os.WriteFile(spool+".lock", []byte("0"), 0o444)
	sp.LockWait = 2 * time.Second
	if _, err := sp.Claim(context.Background(), NewClaimName(spool, "c")); err == nil || !strings.Contains(err.Error(), "still held") {
		t.Fatalf("a lock held too long must fail the claim: %v", err)
	}
}
