package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"os/user"
	"path/filepath"

	"github.com/mfilter/mfilter/internal/convert"
	"github.com/mfilter/mfilter/internal/sysexits"
	"github.com/mfilter/mfilter/rules"
)

// maxRcfile bounds a procmailrc (and each file it includes) read by
// mfilter convert.
const maxRcfile = 4 << 20

// convertPartial is the exit status of mfilter convert when some recipes
// stayed comments, and of --verify when some messages are filed
// differently.
const convertPartial = 1

// runConvert is mfilter convert [-o DIR] PROCMAILRC and mfilter convert
// --verify MAILBOX PROCMAILRC.
func runConvert(ctx context.Context, env *environ, args []string) int {
	fs := flag.NewFlagSet("mfilter convert", flag.ContinueOnError)
	outDir := fs.String("o", "", "write one YAML file per INCLUDERC target into this directory")
	verify := fs.Bool("verify", false, "file MAILBOX with procmail and with the conversion and print every message filed differently")
	keep := fs.String("keep", "", "with --verify: keep the two scratch trees in this new directory")
	home := fs.String("home", env.getenv("HOME"), "the home directory the procmailrc was written for: paths under it become ~/")
	if err := parseFlags(env, fs, args); err != nil {
		return usageExit(err)
	}
	if *verify {
		if fs.NArg() != 2 {
			fmt.Fprintln(env.stderr, "usage: mfilter convert --verify MAILBOX PROCMAILRC")
			return sysexits.Usage
		}
		return runVerify(ctx, env, fs.Arg(0), fs.Arg(1), verifyOptions{keep: *keep, home: *home})
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(env.stderr, "usage: mfilter convert [-o DIR] PROCMAILRC")
		return sysexits.Usage
	}
	res, code := convertFile(env, fs.Arg(0), convert.Options{Split: *outDir != "", Home: *home})
	if res == nil {
		return code
	}
	var err error
	if *outDir != "" {
		err = writeConverted(*outDir, res)
	} else {
		err = checkConverted(res)
		if err == nil {
			_, err = io.WriteString(env.stdout, res.Files[0].Text)
		}
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(env.stderr, "mfilter convert: %s\n", w)
	}
	if m := res.Maildir; filepath.IsAbs(m) {
		if _, err := os.Stat(m); errors.Is(err, iofs.ErrNotExist) {
			fmt.Fprintf(env.stderr, "mfilter convert: MAILDIR %s does not exist here: if the procmailrc was written for another home directory, give it with --home\n", m)
		}
	}
	if err != nil {
		fmt.Fprintf(env.stderr, "mfilter convert: %v\n", err)
	}
	fmt.Fprintf(env.stderr, "mfilter convert: converted %d of %d recipes\n", res.Converted, res.Recipes)
	var ce *checkError
	switch {
	case errors.As(err, &ce):
		return sysexits.Software
	case err != nil:
		return sysexits.CantCreat
	case res.Converted < res.Recipes:
		return convertPartial
	}
	return sysexits.OK
}

// convertFile reads and converts a procmailrc.
func convertFile(env *environ, path string, opt convert.Options) (*convert.Result, int) {
	data, err := readBounded(path)
	if err != nil {
		fmt.Fprintf(env.stderr, "mfilter convert: %v\n", err)
		return nil, sysexits.IOErr
	}
	opt.Getenv = func(k string) string {
		if k == "LOGNAME" {
			return firstNonEmpty(env.getenv("LOGNAME"), env.getenv("USER"), currentUser())
		}
		return env.getenv(k)
	}
	opt.ReadFile = readBounded
	return convert.Convert(path, data, opt), sysexits.OK
}

// currentUser is the login name of the user running mfilter, for
// procmail's /var/mail/$LOGNAME when the environment does not say.
func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return ""
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxRcfile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxRcfile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxRcfile)
	}
	return data, nil
}

// checkError says the conversion did not pass mfilter check: a bug of the
// converter.
type checkError struct{ err error }

func (e *checkError) Error() string {
	return fmt.Sprintf("the converted rules do not pass mfilter check (please report this): %v", e.err)
}

// checkConverted checks a conversion written to standard output.
func checkConverted(res *convert.Result) error {
	if _, err := rules.Parse("converted.yaml", []byte(res.Files[0].Text)); err != nil {
		return &checkError{err}
	}
	return nil
}

// writeConverted writes the files into dir (made if missing), each
// through a temporary file renamed into place, then checks them.
func writeConverted(dir string, res *convert.Result) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range res.Files {
		path := filepath.Join(dir, f.Name)
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(f.Text), 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			os.Remove(tmp)
			return err
		}
	}
	if _, err := rules.Load(filepath.Join(dir, res.Files[0].Name)); err != nil {
		var insecure *rules.InsecureError
		if errors.As(err, &insecure) {
			return fmt.Errorf("written, but mfilter check refuses the directory: %w", err)
		}
		return &checkError{err}
	}
	return nil
}
