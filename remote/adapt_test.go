package remote

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/mfilter/mfilter/internal/sshtest"
)

// TestAdaptiveStream: a claim larger than the first MiB streams as two
// zstd frames, the second at the level the client answered; the bytes
// are the file's, from any offset.
func TestAdaptiveStream(t *testing.T) {
	srv := sshtest.Start(t, sshtest.Options{})
	spool := filepath.Join(t.TempDir(), "dave")
	data := mbox(40000) // about 4 MB
	os.WriteFile(spool, data, 0o600)
	sp := sshSpool(t, srv, spool, "zstd")
	ctx := context.Background()
	cf, err := sp.Claim(ctx, NewClaimName(spool, "c"))
	if err != nil || cf == nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 1234, cf.Size - adaptChunk - 1, cf.Size - 10} {
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
		adapted := cf.Size-off > adaptChunk
		if lv := 0; st.Level != nil {
			lv = st.Level()
			if adapted && lv == 0 {
				t.Errorf("offset %d: no level was chosen", off)
			}
		} else if adapted {
			t.Errorf("offset %d: the stream did not adapt", off)
		}
	}
	for rate, want := range map[float64]int{1.25e6: 12, 5e6: 6, 50e6: 3} {
		if got := adaptLevel(rate); got != want {
			t.Errorf("adaptLevel(%g) = %d, want %d", rate, got, want)
		}
	}
}
