package main

import (
	"context"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"time"

	"github.com/mfilter/mfilter/remote"
)

// fetchHelperEnv makes mbench run as the transfer stage of mfilter
// fetch-and-file instead (see fetchTransferMain): the fetch scenario runs
// its own binary this way, so that the stage is timed as a process of its
// own, as the OpenSSH commands it is compared with are.
const fetchHelperEnv = "MBENCH_FETCH_TRANSFER"

func init() {
	if os.Getenv(fetchHelperEnv) != "" {
		os.Exit(fetchTransferMain(os.Args[1:]))
	}
}

// crcTable checks the bytes that arrive (hardware CRC-32C: a few
// milliseconds for 100 MB).
var crcTable = crc32.MakeTable(crc32.Castagnoli)

// fetchTransferMain is mfilter's transfer stage alone, with the remote
// package that fetch-and-file uses: log in, claim the spool (dotlock,
// rename), stream the claimed file compressed and decompress it (to a
// CRC, not to folders), remove the claimed file. It prints the bytes
// received, their CRC-32C and the codec.
func fetchTransferMain(args []string) int {
	fs := flag.NewFlagSet("mbench fetch transfer", flag.ContinueOnError)
	addr := fs.String("addr", "", "host:port")
	user := fs.String("user", "", "user")
	key := fs.String("identity", "", "private key")
	kh := fs.String("known-hosts", "", "known_hosts")
	spool := fs.String("spool", "", "spool on the server")
	compress := fs.String("compress", "auto", "auto, zstd, gzip, none")
	trace := fs.Bool("trace", false, "print how long each step took, on stderr")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "mbench fetch transfer: %v\n", err)
		return 1
	}
	ctx := context.Background()
	start, last := time.Now(), time.Now()
	step := func(what string) {
		if *trace {
			now := time.Now()
			fmt.Fprintf(os.Stderr, "%-8s %7.1f ms (at %7.1f ms)\n", what, float64(now.Sub(last).Microseconds())/1000, float64(now.Sub(start).Microseconds())/1000)
			last = now
		}
	}
	c, err := remote.Dial(ctx, remote.SSHConfig{Host: "127.0.0.1", Addr: *addr, User: *user,
		Identity: []string{*key}, KnownHosts: []string{*kh}, Timeout: 30 * time.Second})
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	step("dial")
	sp := &remote.SSHSpool{C: c, SpoolPath: *spool, Who: *user + "@127.0.0.1", Compress: *compress}
	cf, err := sp.Claim(ctx, remote.NewClaimName(*spool, "mbench"))
	if err != nil {
		return fail(err)
	}
	if cf == nil {
		return fail(fmt.Errorf("%s is empty", *spool))
	}
	step("claim")
	if _, err := sp.Codec(ctx); err != nil {
		return fail(err)
	}
	step("probe")
	st, err := sp.Open(ctx, *cf, 0)
	if err != nil {
		return fail(err)
	}
	step("open")
	h := crc32.New(crcTable)
	n, err := io.Copy(h, st)
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fail(err)
	}
	step("stream")
	if n != cf.Size {
		return fail(fmt.Errorf("got %d bytes of %d", n, cf.Size))
	}
	if grown, err := sp.Remove(ctx, cf.Name, cf.Size); err != nil || grown != 0 {
		return fail(fmt.Errorf("remove %s: grown %d, %v", cf.Name, grown, err))
	}
	step("remove")
	codec := st.Codec
	if st.Level != nil && st.Level() > 0 {
		codec += "-" + fmt.Sprint(st.Level())
	}
	fmt.Printf("%d %08x %s %d\n", n, h.Sum32(), codec, st.Wire())
	return 0
}
