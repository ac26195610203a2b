package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// deliverBoth delivers msg with procmail -m and with mfilter deliver
// (no -f) into folder, and returns what each wrote there: the mbox, or
// the single file of the maildir.
func deliverBoth(t *testing.T, msg, folder string) (pm, mf []byte) {
	t.Helper()
	base := t.TempDir()
	var out [2][]byte
	for i, who := range []string{"procmail", "mfilter"} {
		dir := filepath.Join(base, who)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		st := newFolderState(t, dir, folder)
		var err error
		if who == "procmail" {
			rc := writeRC(t, base, dir, folder, filepath.Join(base, "procmail.log"))
			_, err = runTool(dir, []byte(msg), nil, tool(t, "procmail"), "-m", rc)
		} else {
			_, err = runTool(dir, []byte(msg), nil, mfilterBin, "deliver", "--maildir", dir, "--default", folder)
		}
		if err != nil {
			t.Fatal(err)
		}
		ds := []delivery{st.added(t)}
		st.contents(t, ds)
		out[i] = ds[0].data
	}
	return out[0], out[1]
}

// TestDeliverDeviations shows where mfilter deliver deliberately writes
// other bytes than procmail -m (without -f), running both.
func TestDeliverDeviations(t *testing.T) {
	t.Run("mbox message without a From_ line", func(t *testing.T) {
		// procmail -m writes the message as it is, so the mbox no
		// longer starts with a From_ line; mfilter puts the From_ line
		// formail would generate in front.
		msg := "From: Bob <bob@example.org>\nSubject: s\n\nbody\n"
		pm, mf := deliverBoth(t, msg, "mbox")
		if !bytes.HasPrefix(pm, []byte(msg)) {
			t.Fatalf("procmail wrote %q", pm)
		}
		gen := firstLine(mf)
		if !bytes.Equal(mf[len(gen):], pm) {
			t.Errorf("mfilter wrote %q, want a From_ line and then procmail's %q", mf, pm)
		}
		if want := formailFromLine(t, []byte(msg)); !sameButDate(want, gen) {
			t.Errorf("mfilter's From_ line %q, formail's %q", gen, want)
		}
	})
	t.Run("leading blank lines", func(t *testing.T) {
		// procmail -m keeps them (procmail -f and -d drop them); they
		// would end the header before it starts, so mfilter drops them.
		msg := "\n\nFrom a@example.org Mon Jan  1 00:00:00 2024\nSubject: s\n\nbody\n"
		for _, folder := range []string{"mbox", "md/"} {
			pm, mf := deliverBoth(t, msg, folder)
			if !bytes.HasPrefix(pm, []byte(msg)) {
				t.Fatalf("%s: procmail wrote %q", folder, pm)
			}
			want := strings.TrimLeft(string(pm), "\n")
			if folder == "md/" {
				// Now a From_ line comes first: maildir drops it.
				want = want[len(firstLine([]byte(want))):]
			}
			if string(mf) != want {
				t.Errorf("%s: mfilter wrote %q, want %q", folder, mf, want)
			}
		}
	})
}

// TestMailstatMaildirNames checks that procmail's mailstat counts
// mfilter's maildir deliveries under their folder, as it does
// procmail's.
//
// KNOWN BUG (deliver/maildir.go, not fixed here): Writer.MaildirName ends
// the name in ",S=<size>", and mailstat only folds "/new/<name>" into its
// folder when the name is made of [-[:alnum:]_.,+:%@]: every delivery then
// shows as a folder of its own. The log names the file as written (as
// procmail does), so the fix is in the name: drop the ",S=" part, or use
// a character mailstat accepts.
func TestMailstatMaildirNames(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	for range 2 {
		if _, err := runTool(dir, []byte("Subject: s\n\nbody\n"), nil, mfilterBin, "deliver", "--maildir", dir, "--default", "md/", "--log", log); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	rows, _ := mailstatRows(t, b)
	if len(rows) != 1 || !strings.HasSuffix(rows[0], " 2 md/") {
		t.Errorf("mailstat reads mfilter's log as %q, want one row for md/ with 2 messages; log:\n%s", rows, b)
	}
}
