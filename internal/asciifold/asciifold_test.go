package asciifold

import "testing"

func TestEqual(t *testing.T) {
	tests := []struct {
		b, lower string
		want     bool
	}{
		{"List-Id", "list-id", true},
		{"LIST-ID", "list-id", true},
		{"list-id", "list-id", true},
		{"List-Ix", "list-id", false},
		{"[URGENT]", "[urgent]", true},
		{"@", "`", false}, // '@'+0x20 is '`': only letters fold
		{"\xc3\x89", "\xc3\xa9", false},
		{"", "", true},
	}
	for _, tt := range tests {
		if got := Equal([]byte(tt.b), []byte(tt.lower)); got != tt.want {
			t.Errorf("Equal(%q, %q) = %v, want %v", tt.b, tt.lower, got, tt.want)
		}
	}
}
