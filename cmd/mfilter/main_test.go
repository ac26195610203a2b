package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// mfilterBin is the mfilter binary built from this package by TestMain;
// end-to-end tests run it as a child process, the way an MTA would.
var mfilterBin string

// TestMain builds mfilterBin and runs the tests. The test binary is also
// the "mfilter" command of the testscript scripts (script_test.go):
// testscript.Main installs a copy of it named mfilter in $PATH, and when
// run under that name it is mfilter itself (mainExit), so that the scripts
// run the real main code path in this package's binary and count in its
// coverage. It builds nothing then.
func TestMain(m *testing.M) {
	testscript.Main(testsM{m}, map[string]func(){"mfilter": mainExit})
}

// testsM runs the tests after building mfilterBin (runTests).
type testsM struct{ m *testing.M }

func (t testsM) Run() int { return runTests(t.m) }

// mainExit is mfilter's main, run by the test binary when it is run as
// the scripts' mfilter command: main ends with os.Exit of run's status.
func mainExit() {
	main()
}

func runTests(m *testing.M) int {
	// 0755 and outside any 0700 test directory, so that tests can run
	// the binary as user nobody too.
	dir, err := os.MkdirTemp("", "mfilter-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "TestMain: the go tool is needed to build mfilter:", err)
		return 1
	}
	mfilterBin = filepath.Join(dir, "mfilter")
	// Static, as README says to build it: a binary linked with the C
	// library may fail to start under an address-space limit (its
	// threads reserve RLIMIT_STACK each).
	build := exec.Command(goTool, "build", "-o", mfilterBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "TestMain: go build:", err)
		return 1
	}
	return m.Run()
}
