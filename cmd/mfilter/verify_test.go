package main

import "testing"

// TestLooksLikeMessage: what a delivery appends is a message or a part of
// it; what a program appends of its own (ids, checksums) is not.
func TestLooksLikeMessage(t *testing.T) {
	msg := []byte("From: a@example.org\r\nSubject: hi\r\nMessage-ID: <1@x>\r\n\r\nthe body line\r\n")
	tests := []struct {
		name string
		data string
		want bool
	}{
		{"a whole message", "From a@example.org Mon Dec  7 10:00:00 2026\nFrom: a@example.org\n\nthe body line\n\n", true},
		{"a filtered header", "X-Tag: new\nSubject: hi\n", true},
		{"the body only", "the body line\n", true},
		{"message ids", "<1@x>\n", false},
		{"checksums", "d41d8cd98f00b204e9800998ecf8427e  -\n", false},
		{"a log abstract", "From a@example.org Mon Dec  7 10:00:00 2026\n Subject: hi\n", false},
	}
	for _, tt := range tests {
		if got := looksLikeMessage([]byte(tt.data), msg); got != tt.want {
			t.Errorf("%s: looksLikeMessage = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestRehome: a path under the home becomes the sandbox's, a longer name
// or a path that only ends in it does not.
func TestRehome(t *testing.T) {
	in := "MAILDIR=/home/bob/mail\nA=/home/bob\nB=/home/bobby/x\nC=/x/home/bob/y\nD=\"/home/bob/\"\n"
	want := "MAILDIR=/s/home/mail\nA=/s/home\nB=/home/bobby/x\nC=/x/home/bob/y\nD=\"/s/home/\"\n"
	if got := string(rehome([]byte(in), "/home/bob/", "/s/home")); got != want {
		t.Errorf("rehome:\n%s\nwant:\n%s", got, want)
	}
}
