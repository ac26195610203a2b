package dupcache

import "testing"

func TestScanCacheWraps(t *testing.T) {
	// formail writes at the end marker and wraps to 0 past the size.
	data := []byte("<a>\x00<b>\x00\x00<old>\x00")
	at, dup := scanCache(data, "<old>", 64)
	if !dup {
		t.Error("keys after the end marker still count")
	}
	at, dup = scanCache(data, "<new>", 64)
	if dup || at != 8 {
		t.Errorf("insert at %d (want 8), dup %v", at, dup)
	}
	at, _ = scanCache(data, "<new>", 8)
	if at != 0 {
		t.Errorf("past the size the cache wraps to 0, got %d", at)
	}
}
