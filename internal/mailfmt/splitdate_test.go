package mailfmt

import "testing"

// TestPostmarkDate: the From_ lines that start a message after a blank
// line, and those that mbox readers take for a postmark when mfilter
// writes one (ReadablePostmark: both mutt and Dovecot).
func TestPostmarkDate(t *testing.T) {
	for _, c := range []struct {
		line          string
		mutt, dovecot bool
	}{
		{"From alice@example.com Mon Jan  1 00:00:00 2001\n", true, true},
		{"From alice@example.com  Mon Jan  1 00:00:00 2001\r\n", true, true},
		{"From MAILER-DAEMON Fri Jul  8 12:08:34 2011", true, true},
		{"From - Mon Jan  1 00:00:00 2001", true, true},
		{"From 3bc1d5e8b4c3 Mon Sep 17 00:00:00 2001", true, true},
		{"From nsb Thu Oct  3 16:04:09 1991", true, true},
		// Without seconds, with a named zone (perl Mail::Box's mbox).
		{"From magick-list@wizards.dupont.com Tue Feb 29 22:17 MET 2000", true, true},
		{"From x@y Wed Aug  2 00:39:12 MET DST 1995", true, false},
		{"From x@y Thu Nov  9 22:33:52 2001 +0300", false, true},
		{"From x@y Thu, 9 Nov 2002 22:33:52", false, true},
		{"From Mon Jan  1 00:00:00 2001", true, false},
		{"From \"a b\"@c Mon Jan  1 00:00:00 2001", true, true},
		{"From mon jan 1 0:0 1", true, false},
		{"From x mon jan 1 0:0 1", true, false},
		{"From Russia with love", false, false},
		{"From here on, Monday Jan 1 12:00 we meet", false, false},
		{"From -", false, false},
		{"From 1844347792267117879@xxx", false, false},
		{"From x@y Monday Jan  1 00:00:00 2001", false, false},
		{"From x@y Mon Jan  1 00:00:00", false, false},
		{"From x@y Mon Jan  1 2001", false, false},
		{"From ", false, false},
	} {
		rest := []byte(c.line[len("From "):])
		for len(rest) > 0 && (rest[len(rest)-1] == '\n' || rest[len(rest)-1] == '\r') {
			rest = rest[:len(rest)-1]
		}
		if got := muttDate(rest); got != c.mutt {
			t.Errorf("muttDate(%q) = %v, want %v", c.line, got, c.mutt)
		}
		if got := dovecotDate(rest); got != c.dovecot {
			t.Errorf("dovecotDate(%q) = %v, want %v", c.line, got, c.dovecot)
		}
		if got := hasPostmarkDate([]byte(c.line)); got != (c.mutt || c.dovecot) {
			t.Errorf("hasPostmarkDate(%q) = %v", c.line, got)
		}
		if got := ReadablePostmark([]byte(c.line)); got != (c.mutt && c.dovecot) {
			t.Errorf("ReadablePostmark(%q) = %v", c.line, got)
		}
	}
	for line, want := range map[string]bool{
		"From -\n": true, "From - \r\n": true, "From 1844347792267117879@xxx\n": true,
		"From Russia with love\n": false, "From \n": false, "From \x00\n": false,
	} {
		if got := oneWordPostmark([]byte(line)); got != want {
			t.Errorf("oneWordPostmark(%q) = %v, want %v", line, got, want)
		}
	}
}
