package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/mfilter/mfilter/internal/maillock"
)

// LocalSpool is a spool on this machine: the same claim, read and remove
// steps as over SSH, without the connection (--local-spool).
type LocalSpool struct {
	SpoolPath string
	Lock      maillock.LockOptions
}

// Describe implements Spool.
func (s *LocalSpool) Describe() string { return "local:" + s.SpoolPath }

// Path implements Spool.
func (s *LocalSpool) Path() string { return s.SpoolPath }

// Claimed implements Spool.
func (s *LocalSpool) Claimed(ctx context.Context) ([]ClaimedFile, error) {
	matches, err := filepath.Glob(globQuote(s.SpoolPath+ClaimMarker) + "*")
	if err != nil {
		return nil, err
	}
	var out []ClaimedFile
	for _, m := range matches {
		st, err := os.Stat(m)
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		out = append(out, ClaimedFile{Name: m, Size: st.Size()})
	}
	return out, nil
}

func globQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`)
	return r.Replace(s)
}

// Claim implements Spool.
func (s *LocalSpool) Claim(ctx context.Context, claimName string) (*ClaimedFile, error) {
	if filepath.Dir(claimName) != filepath.Dir(s.SpoolPath) {
		return nil, fmt.Errorf("claim name %s is not in the spool's directory", claimName)
	}
	if st, err := os.Stat(s.SpoolPath); errors.Is(err, fs.ErrNotExist) || err == nil && st.Size() == 0 {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	lock, err := maillock.AcquireDotlock(ctx, s.SpoolPath+".lock", s.Lock)
	if err != nil {
		return nil, fmt.Errorf("claim %s: %w", s.SpoolPath, err)
	}
	defer lock.Release()
	st, err := os.Stat(s.SpoolPath)
	if errors.Is(err, fs.ErrNotExist) || err == nil && st.Size() == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := os.Rename(s.SpoolPath, claimName); err != nil {
		return nil, fmt.Errorf("claim %s: %w", s.SpoolPath, err)
	}
	if err := syncDirOf(claimName); err != nil {
		return nil, err
	}
	st, err = os.Stat(claimName)
	if err != nil {
		return nil, err
	}
	return &ClaimedFile{Name: claimName, Size: st.Size()}, nil
}

func syncDirOf(p string) error {
	d, err := os.Open(filepath.Dir(p))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Open implements Spool.
func (s *LocalSpool) Open(ctx context.Context, f ClaimedFile, offset int64) (*Stream, error) {
	fh, err := os.Open(f.Name)
	if err != nil {
		return nil, err
	}
	if _, err := fh.Seek(offset, io.SeekStart); err != nil {
		fh.Close()
		return nil, err
	}
	c := &countReader{r: fh}
	return &Stream{Reader: c, Codec: "none", Wire: func() int64 { return c.n }, close: fh.Close}, nil
}

// Size implements Spool.
func (s *LocalSpool) Size(ctx context.Context, name string) (int64, bool, error) {
	st, err := os.Stat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	return st.Size(), true, nil
}

// Remove implements Spool.
func (s *LocalSpool) Remove(ctx context.Context, name string, size int64) (int64, error) {
	st, err := os.Stat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if st.Size() != size {
		return st.Size(), nil
	}
	if err := os.Remove(name); err != nil {
		return 0, err
	}
	return 0, syncDirOf(name)
}
