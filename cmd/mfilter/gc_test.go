package main

import (
	"math"
	"runtime/debug"
	"testing"
)

func TestTuneGC(t *testing.T) {
	pct := debug.SetGCPercent(100)
	lim := debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() {
		debug.SetGCPercent(pct)
		debug.SetMemoryLimit(lim)
	})
	tests := []struct {
		name    string
		env     map[string]string
		wantPct int
		wantLim int64
	}{
		{"defaults", nil, gcPercent, gcMemoryLimit},
		{"GOGC set", map[string]string{"GOGC": "100"}, 100, gcMemoryLimit},
		{"GOMEMLIMIT set", map[string]string{"GOMEMLIMIT": "1GiB"}, gcPercent, math.MaxInt64},
		{"both set", map[string]string{"GOGC": "100", "GOMEMLIMIT": "1GiB"}, 100, math.MaxInt64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The runtime read the variables at start: here they stay
			// unset and the test's values stand for what it read.
			debug.SetGCPercent(100)
			debug.SetMemoryLimit(math.MaxInt64)
			tuneGC(func(k string) string { return tt.env[k] })
			if got := debug.SetGCPercent(100); got != tt.wantPct {
				t.Errorf("GC percent = %d, want %d", got, tt.wantPct)
			}
			if got := debug.SetMemoryLimit(-1); got != tt.wantLim {
				t.Errorf("memory limit = %d, want %d", got, tt.wantLim)
			}
		})
	}
}
