// Package deliver writes messages into maildir, mbox, MH and plain
// directory folders with the bytes, names and locks that procmail 3.22
// uses, made durable (fsync of file and directory) before success is
// reported. It also splits mbox files the way formail -s does, minus
// formail's known mistakes.
//
// The package never decides where mail goes; callers name a Folder.
package deliver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Kind is the storage format of a folder.
type Kind int

const (
	Mbox    Kind = iota // a single file holding many messages
	Maildir             // name/ with tmp, new, cur
	MH                  // name/. with numbered files
	Dir                 // an existing directory: msg.<inode> files
	Discard             // /dev/null: accepted and dropped
)

func (k Kind) String() string {
	switch k {
	case Mbox:
		return "mbox"
	case Maildir:
		return "maildir"
	case MH:
		return "mh"
	case Dir:
		return "dir"
	case Discard:
		return "discard"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Folder is a delivery target.
type Folder struct {
	// Name is the folder as the user wrote it, relative or absolute; it is
	// what the log shows (procmail logs relative names as given).
	Name string
	// Path is the file system path: Name resolved against the mail base.
	Path string
	Kind Kind

	root *os.Root // non-nil: Path is relative to this confined root
	// clean: Path is filepath.Clean's and names below it can be put
	// together without cleaning them again (see in).
	clean bool
}

// in is filepath.Join(f.Path, sub[, name]) for a sub and a name that need
// no cleaning, in one allocation when f.Path is clean already (ParseFolder
// makes it so): a message's names are made for every message.
func (f Folder) in(sub string, name ...string) string {
	if !f.clean || len(name) > 1 {
		return filepath.Join(append([]string{f.Path, sub}, name...)...)
	}
	if len(name) == 1 {
		return f.Path + "/" + sub + "/" + name[0]
	}
	return f.Path + "/" + sub
}

// ParseFolder applies procmail's folder typing to spec: a trailing "/"
// means maildir, a trailing "/." means MH, an existing directory is a
// plain directory folder, "/dev/null" discards, and anything else is an
// mbox file (created when missing). Relative specs are resolved against
// base. Extra trailing slashes are dropped, as procmail does.
func ParseFolder(base, spec string) (Folder, error) {
	if spec == "" {
		return Folder{}, errors.New("empty folder name")
	}
	if strings.IndexByte(spec, 0) >= 0 {
		return Folder{}, fmt.Errorf("folder name %q contains a NUL byte", spec)
	}
	f := Folder{Name: spec}
	name := spec
	switch {
	case name == "/dev/null":
		f.Kind = Discard
		f.Path = name
		return f, nil
	case strings.HasSuffix(name, "/."):
		f.Kind = MH
		name = strings.TrimSuffix(name, "/.")
	case strings.HasSuffix(name, "/"):
		f.Kind = Maildir
	default:
		f.Kind = Mbox
	}
	trimmed := strings.TrimRight(name, "/")
	if trimmed == "" {
		return Folder{}, fmt.Errorf("folder %q names the root directory", spec)
	}
	f.Path = resolve(base, trimmed)
	if f.Path == "/" {
		// "/./", "/tmp/../" and the like: new/ and cur/ in / are
		// nobody's mail folder.
		return Folder{}, fmt.Errorf("folder %q names the root directory", spec)
	}
	f.clean = f.Path != "."
	if f.Kind == Maildir || f.Kind == MH {
		f.Name = trimmedName(spec, f.Kind)
	}
	// Any other stat failure (EACCES on the way there, EIO) leaves it an
	// mbox: it is no mistake in the name, and delivering will fail with
	// the real error as a temporary failure (exit 75) rather than a
	// configuration error whose exit status makes MTAs bounce the mail.
	if f.Kind == Mbox {
		if st, err := os.Stat(f.Path); err == nil && st.IsDir() {
			f.Kind = Dir
		}
	}
	return f, nil
}

// trimmedName is the name procmail shows for a maildir or MH folder:
// without the type suffix, so that "md/" logs as "md/new/<file>".
func trimmedName(spec string, k Kind) string {
	if k == MH {
		spec = strings.TrimSuffix(spec, "/.")
	}
	s := strings.TrimRight(spec, "/")
	if s == "" {
		return spec
	}
	return s
}

func resolve(base, p string) string {
	if filepath.IsAbs(p) || base == "" {
		return filepath.Clean(p)
	}
	return filepath.Join(base, p)
}
