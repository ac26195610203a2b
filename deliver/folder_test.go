package deliver

import (
	"strings"
	"testing"
)

// TestParseFolderRefusesRoot: every spelling of the root directory is
// refused, whatever the folder type, so that no delivery creates /new,
// /cur or an MH message in /.
func TestParseFolderRefusesRoot(t *testing.T) {
	for _, c := range []struct{ base, spec string }{
		{"/home/u", "/"}, {"/home/u", "/."}, {"/home/u", "/./"}, {"/home/u", "/../"},
		{"/home/u", "/tmp/../"}, {"/home/u", "/tmp/.."}, {"/home/u", "//"}, {"/home/u", "/./."},
		{"/home/u", "/tmp/../."}, {"/home/u", "/tmp/../../../"}, {"/home/u", "../../"},
		{"/home/u", "../../../../."}, {"/", "./"}, {"/", "x/../"},
	} {
		if f, err := ParseFolder(c.base, c.spec); err == nil || !strings.Contains(err.Error(), "root directory") {
			t.Errorf("ParseFolder(%q, %q) = %+v, %v; want the root refused", c.base, c.spec, f, err)
		}
	}
	for _, c := range []struct{ base, spec, path string }{
		{"/home/u", "/tmp/md/", "/tmp/md"}, {"/home/u", "../v/box", "/home/v/box"}, {"/", "var/mail/u", "/var/mail/u"},
	} {
		f, err := ParseFolder(c.base, c.spec)
		if err != nil || f.Path != c.path {
			t.Errorf("ParseFolder(%q, %q) = %q, %v; want %q", c.base, c.spec, f.Path, err, c.path)
		}
	}
}
