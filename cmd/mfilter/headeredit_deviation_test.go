package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestHeaderEditDeviations shows, with the real procmail and formail, the
// two cases where add-header deliberately differs from a
// ":0 fhw | formail -A" recipe (testdata/rules/pairs/09-formail-add).
func TestHeaderEditDeviations(t *testing.T) {
	for _, tt := range []struct {
		name, msg            string
		procmailWant, mfWant string
	}{
		{
			name:         "crlf",
			msg:          "Subject: s\r\n\r\nbody\r\n",
			procmailWant: "Subject: s\r\nX-A: 1\n\n\r\nbody\r\n\n", // a bare LF blank line, and the filter's added newline
			mfWant:       "Subject: s\r\nX-A: 1\r\n\r\nbody\r\n",
		},
		{
			name:         "no-blank-line",
			msg:          "Subject: s\nnot a field\n",
			procmailWant: "Subject: s\nX-A: 1\n\nnot a field\n\n", // the filter input's added newline, passed through
			mfWant:       "Subject: s\nX-A: 1\n\nnot a field\n",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			os.Chmod(dir, 0o755)
			rc := filepath.Join(dir, "rc")
			os.WriteFile(rc, []byte("MAILDIR="+dir+"\nDEFAULT="+dir+"/pm/\nSHELL=/bin/sh\n:0 fhw\n| formail -A 'X-A: 1'\n"), 0o644)
			cmd := exec.Command("procmail", "-m", rc)
			cmd.Stdin = strings.NewReader(tt.msg)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("procmail: %v %s", err, out)
			}
			rules := filepath.Join(dir, "rules.yaml")
			os.WriteFile(rules, []byte("rules: [{then: {add-header: 'X-A: 1'}}]\n"), 0o644)
			cmd = exec.Command(mfilterBin, "deliver", "--rules", rules, "--maildir", dir, "--default", "mf/")
			cmd.Stdin = strings.NewReader(tt.msg)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("mfilter: %v %s", err, out)
			}
			got := func(folder string) string {
				files, _ := filepath.Glob(filepath.Join(dir, folder, "new", "*"))
				if len(files) != 1 {
					t.Fatalf("%s: %d files", folder, len(files))
				}
				b, _ := os.ReadFile(files[0])
				return string(b)
			}
			if p := got("pm"); p != tt.procmailWant {
				t.Errorf("procmail+formail wrote %q, the documented %q", p, tt.procmailWant)
			}
			if m := got("mf"); m != tt.mfWant {
				t.Errorf("mfilter wrote %q, want %q", m, tt.mfWant)
			}
			if bytes.Equal([]byte(tt.procmailWant), []byte(tt.mfWant)) {
				t.Error("not a deviation")
			}
		})
	}
}
