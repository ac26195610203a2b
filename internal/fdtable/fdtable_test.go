package fdtable

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fdSize is the size of this process's descriptor table, from
// /proc/self/status.
func fdSize(t *testing.T) int {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "FDSize:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no FDSize in /proc/self/status")
	return 0
}

func TestReserveGrowsTable(t *testing.T) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	want := 3000
	if lim.Cur < uint64(want) {
		want = int(lim.Cur)
	}
	before := fdSize(t)
	if before >= want {
		t.Fatalf("the table already holds %d descriptors; the test needs one smaller than %d", before, want)
	}
	fd, err := Reserve(want)
	if err != nil {
		t.Fatal(err)
	}
	if fd < want-1 {
		t.Errorf("Reserve(%d) reached descriptor %d", want, fd)
	}
	if got := fdSize(t); got < want {
		t.Errorf("FDSize after Reserve(%d) = %d (before: %d)", want, got, before)
	}
	// Nothing is left open at the top.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
		t.Errorf("descriptor %d still open after Reserve (F_GETFD: %v)", fd, err)
	}
}

func TestReserveClampsToLimit(t *testing.T) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	// A known soft limit, whatever the machine's is.
	low := lim
	low.Cur = 4096
	if low.Max != unix.RLIM_INFINITY && low.Max < low.Cur {
		low.Cur = low.Max
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_NOFILE, &lim) })
	if got := Limit(); got != int(low.Cur) {
		t.Errorf("Limit() = %d, want %d", got, low.Cur)
	}
	fd, err := Reserve(int(low.Cur) + 1000)
	if err != nil {
		t.Fatalf("Reserve past RLIMIT_NOFILE (%d): %v", low.Cur, err)
	}
	if uint64(fd) != low.Cur-1 {
		t.Errorf("Reserve past RLIMIT_NOFILE (%d) reached descriptor %d, want %d", low.Cur, fd, low.Cur-1)
	}
}
