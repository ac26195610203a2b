package remote

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"time"
)

// Spool is a mail spool that can be claimed, read and removed, on the
// server over SSH or on this machine.
type Spool interface {
	// Claimed lists files claimed earlier (by any client) and not removed:
	// name, then size.
	Claimed(ctx context.Context) ([]ClaimedFile, error)
	// Claim takes the spool's dotlock, renames the spool to claimName in
	// its own directory, and releases the lock; over SSH, where the
	// directory is not writable, it copies the spool under its locks and
	// truncates it instead (spoolScript), and the claim goes by the same
	// name. nil means there was no mail (no spool, or an empty one).
	Claim(ctx context.Context, claimName string) (*ClaimedFile, error)
	// Open streams a claimed file from offset on. Close reports transfer
	// errors; Codec names the compression used.
	Open(ctx context.Context, f ClaimedFile, offset int64) (*Stream, error)
	// Size returns the current size of a claimed file.
	Size(ctx context.Context, name string) (int64, bool, error)
	// Remove deletes a claimed file if its size is still size; otherwise
	// it reports the new size and keeps the file.
	Remove(ctx context.Context, name string, size int64) (grown int64, err error)
	// Describe names the spool for journals and messages (user@host:path).
	Describe() string
	// Path is the spool file.
	Path() string
}

// ClaimedFile is a spool renamed for fetching.
type ClaimedFile struct {
	Name string // full path on the spool's machine
	Size int64
}

// Stream is the byte stream of a claimed file, decompressed.
type Stream struct {
	io.Reader
	Codec string
	// Level is the zstd level chosen for the link after its first MiB
	// (0: not adapted; see adaptLevel).
	Level func() int
	// Wire counts the bytes that crossed the connection.
	Wire  func() int64
	close func() error
}

// Close waits for the transfer to end and reports how it ended.
func (s *Stream) Close() error { return s.close() }

// NewStream is a Stream reading r, for spools of other packages and for
// tests that cut a transfer short; closeFn reports how the transfer
// ended, wire counts the bytes that crossed the connection.
func NewStream(r io.Reader, codec string, wire func() int64, closeFn func() error) *Stream {
	return &Stream{Reader: r, Codec: codec, Wire: wire, close: closeFn}
}

// ClaimMarker separates the spool name from the claim part in claimed
// file names: "<spool>.mfilter-<client>-<time>-<random>".
const ClaimMarker = ".mfilter-"

// NewClaimName returns a claim file name for the spool at spoolPath, in
// the same directory (rename(2) is atomic only within a file system),
// carrying the client id so that clients sharing a spool keep apart.
func NewClaimName(spoolPath, client string) string {
	var b [6]byte
	rand.Read(b[:])
	return spoolPath + ClaimMarker + sanitizeID(client) + "-" + strconv.FormatInt(time.Now().Unix(), 10) + "-" + hex.EncodeToString(b[:])
}

// ClaimClient returns the client id inside a claim name, or "".
func ClaimClient(spoolPath, name string) string {
	rest, ok := strings.CutPrefix(name, spoolPath+ClaimMarker)
	if !ok {
		return ""
	}
	parts := strings.Split(rest, "-")
	if len(parts) < 3 {
		return ""
	}
	return strings.Join(parts[:len(parts)-2], "-")
}

// SanitizeClient is a client id as it appears in claim names.
func SanitizeClient(s string) string { return sanitizeID(s) }

func sanitizeID(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// spoolScript is the server side of the protocol, a POSIX sh script given
// on stdin to `sh -s -- OP ARGS...` (on stdin, not in the command line,
// so that a csh or fish login shell does not have to parse it). It uses
// only POSIX tools (ln, mv, rm, tail, wc, date, sleep) plus zstd or gzip
// when present.
//
// Where the spool's directory is writable, a claim renames the spool
// under its dotlock, taken the way procmail and the MTAs take it: a
// unique file hard-linked to SPOOL.lock, which fails if the lock exists;
// a lock older than the stale time is removed.
//
// Where it is not (Debian's /var/mail is root:mail 2775, and users are not
// in group mail), a claim copies the spool and truncates it, as movemail
// does, under the spool's fcntl lock and, when the server has
// dotlockfile (setgid mail), its dotlock too: the pair Postfix and Exim
// take to append. sh cannot take an fcntl lock, so that part is perl
// (perl-base is Essential on Debian and Ubuntu: every such server has
// it): copyProgram. The copy goes to the user's own space on the server,
// ~/.local/state/mfilter/claims/DIR/, where DIR encodes the spool's
// directory; the claim keeps its name SPOOLDIR/NAME towards the client,
// which never sees the difference. A marker NAME.pending exists from
// before the copy until the spool is truncated and synced; a claim whose
// marker survived a crash is settled under the locks before it may be
// removed and before another claim copies the spool (settle in
// copyProgram).
const spoolScript = `set -u
op=$1; shift
size() { if [ -e "$1" ]; then s=$(wc -c < "$1") || return 1; echo $s; else echo missing; fi; }
now() { date +%s; }
have() { for c in zstd gzip; do command -v "$c" >/dev/null 2>&1 && echo "have $c"; done; }
# zstd by default has a worker thread compress jobs of several megabytes
# and sends nothing until the first is done; --single-thread (zstd 1.4
# and later) sends block by block: the first bytes leave in 5 ms instead
# of 25, with less CPU, and a spool that repeats itself compresses better.
zst() {
  if zstd -q --single-thread -c </dev/null >/dev/null 2>&1; then zstd -q -${1:-3} --single-thread -c
  else zstd -q -${1:-3} -T1 -c; fi
}
# zsta FILE OFF: the first MiB from OFF at level 3, then the rest at the
# level the client answers on stdin once it has seen how fast the link
# is (adaptLevel); zstd frames concatenate.
zsta() {
  { [ "$2" -gt 0 ] && dd bs=1 skip="$2" count=0 2>/dev/null
    dd bs=1048576 count=1 2>/dev/null | zst 3
    read -r lvl <&3 || lvl=3
    case $lvl in [1-9]|1[0-9]) ;; *) lvl=3 ;; esac
    zst "$lvl"; } 3<&0 < "$1"
}
mtime() { stat -c %Y -- "$1" 2>/dev/null || date -r "$1" +%s 2>/dev/null || now; }
lock() {
  lf=$1; timeout=$2; stale=$3
  tmp=$(dirname -- "$lf")/.mfilter-lock.$$.$(now)
  ( umask 222; printf 0 > "$tmp" ) 2>/dev/null || { echo "cannot create a lock file in $(dirname -- "$lf"): permission denied or read-only" >&2; return 3; }
  end=$(( $(now) + timeout ))
  while ! ln "$tmp" "$lf" 2>/dev/null; do
    t=$(now)
    if [ -e "$lf" ] && [ $(( t - $(mtime "$lf") )) -gt "$stale" ]; then
      rm -f -- "$lf"; sleep 1; continue
    fi
    if [ "$t" -ge "$end" ]; then rm -f -- "$tmp"; echo "lock $lf is still held after ${timeout}s" >&2; return 4; fi
    sleep 1
  done
  rm -f -- "$tmp"
}
# cdir SPOOL: the directory of copied claims of SPOOL's directory, in the
# user's own space: the directory's path with / and % written %2F and %25
# (builtins only: a readable name that no two directories share).
cdir() {
  s=${1%/*}; e=
  while [ -n "$s" ]; do
    c=${s%"${s#?}"}; s=${s#?}
    case $c in /) e="$e%2F" ;; %) e="$e%25" ;; *) e="$e$c" ;; esac
  done
  printf '%s/.local/state/mfilter/claims/%s' "${HOME:?HOME is not set}" "${e:-%2F}"
}
# phys NAME: where claim NAME is: itself (a renamed spool), else its copy.
phys() {
  if [ -e "$1" ]; then printf '%s' "$1"; else printf '%s/%s' "$(cdir "${1%` + ClaimMarker + `*}")" "${1##*/}"; fi
}
# locked SPOOL TIMEOUT ARGS: copyProgram ARGS under the spool's dotlock
# (through dotlockfile, when the server has it and it may lock this
# spool: it only locks the user's own /DIR/USER) and its fcntl lock.
locked() {
  spool=$1; timeout=$2; shift 2
  command -v perl >/dev/null 2>&1 || { echo "$(dirname -- "$spool") is not writable (not in group mail?) and the server has no perl for a locked copy of the spool" >&2; return 7; }
  if command -v dotlockfile >/dev/null 2>&1; then
    dotlockfile -q -p -P -r "$timeout" -i 1 -l "$spool.lock" perl -e "$copyprog" -- "$spool" "$timeout" "$@"
    rc=$?
    case $rc in
    2) ;; # dotlockfile may not make this lock: the fcntl lock alone
    4) echo "lock $spool.lock is still held after ${timeout}s" >&2; return 4 ;;
    *) return $rc ;;
    esac
  fi
  perl -e "$copyprog" -- "$spool" "$timeout" "$@"
}
copyprog='` + copyProgram + `'
case $op in
probe)
  for c in zstd gzip; do command -v "$c" >/dev/null 2>&1 && echo "$c"; done; echo end ;;
claimed)
  spool=$1
  have
  for f in "$spool"` + ClaimMarker + `*; do [ -f "$f" ] && printf '%s %s\n' "$(size "$f")" "$f"; done
  d=$(cdir "$spool")
  for f in "$d/${spool##*/}"` + ClaimMarker + `*; do
    case $f in *.pending|*.tmp) continue ;; esac
    [ -f "$f" ] && printf '%s %s\n' "$(size "$f")" "${spool%/*}/${f##*/}"
  done
  echo end ;;
claim)
  spool=$1; claim=$2; timeout=$3; stale=$4
  have
  if [ ! -w "$(dirname -- "$spool")" ]; then
    # The copy claim. Crashed claims leave a marker (and maybe a
    # partial copy): go under the locks to settle them, mail or not.
    trap '' HUP PIPE
    d=$(cdir "$spool"); left=
    for f in "$d"/*.pending "$d"/*.tmp; do [ -e "$f" ] && left=1; done
    if [ -z "$left" ] && [ ! -s "$spool" ]; then echo empty; exit 0; fi
    mkdir -p -m 700 -- "$d" || exit 5
    locked "$spool" "$timeout" claim "$d" "$(phys "$claim")"; exit $?
  fi
  if [ ! -s "$spool" ]; then echo empty; exit 0; fi
  lock "$spool.lock" "$timeout" "$stale" || exit $?
  if [ ! -s "$spool" ]; then rm -f -- "$spool.lock"; echo empty; exit 0; fi
  mv -- "$spool" "$claim" || { rm -f -- "$spool.lock"; exit 5; }
  rm -f -- "$spool.lock"
  echo "claimed $(size "$claim")" ;;
size)
  size "$(phys "$1")" ;;
cat)
  f=$(phys "$1"); off=$2; codec=$3
  [ -f "$f" ] || { echo "no such file: $1" >&2; exit 6; }
  if [ "$codec" = zstd-adapt ]; then zsta "$f" "$off"
  elif [ "$off" -eq 0 ]; then
    # The compressor reads the file itself, without a tail and a pipe in
    # between; through a redirect, so that it pledges no size and reads a
    # file that grows to its end.
    case $codec in
    zstd) zst < "$f" ;;
    gzip) gzip -1 -c < "$f" ;;
    *) cat < "$f" ;;
    esac
  else
    case $codec in
    zstd) tail -c +$((off + 1)) -- "$f" | zst ;;
    gzip) tail -c +$((off + 1)) -- "$f" | gzip -1 -c ;;
    *) tail -c +$((off + 1)) -- "$f" ;;
    esac
  fi ;;
remove)
  f=$(phys "$1"); want=$2; timeout=${3:-300}
  if [ -e "$f.pending" ]; then
    # A copied claim whose spool may still hold its bytes: settle it
    # (under the locks) before it may go.
    trap '' HUP PIPE
    spool=${1%` + ClaimMarker + `*}
    locked "$spool" "$timeout" settle "${f%/*}" "$f" >/dev/null || exit $?
  fi
  s=$(size "$f")
  if [ "$s" = missing ]; then echo removed; exit 0; fi
  if [ "$s" != "$want" ]; then echo "grown $s"; exit 0; fi
  rm -f -- "$f" && echo removed ;;
*) echo "unknown operation $op" >&2; exit 2 ;;
esac
`

// SSHSpool is a spool on the server, reached through an SSH Client.
type SSHSpool struct {
	C          *Client
	SpoolPath  string
	Who        string // user@host, for Describe
	Compress   string // auto, zstd, gzip, none
	LockWait   time.Duration
	StaleAfter time.Duration

	codec string          // chosen by probing
	have  map[string]bool // compressors on the server, once an answer listed them
}

// noteHave records the "have CODEC" lines of an answer (claimed and claim
// list the server's compressors, so that Open needs no probe of its own:
// a session less, and a login shell less, per fetch) and returns the
// other lines.
func (s *SSHSpool) noteHave(out string) []string {
	var rest []string
	for _, line := range strings.Split(out, "\n") {
		if c, ok := strings.CutPrefix(line, "have "); ok {
			if s.have == nil {
				s.have = map[string]bool{}
			}
			s.have[strings.TrimSpace(c)] = true
			continue
		}
		rest = append(rest, line)
	}
	if s.have == nil {
		s.have = map[string]bool{} // listed: the server has none
	}
	return rest
}

// Describe implements Spool.
func (s *SSHSpool) Describe() string { return s.Who + ":" + s.SpoolPath }

// Path implements Spool.
func (s *SSHSpool) Path() string { return s.SpoolPath }

func (s *SSHSpool) run(ctx context.Context, args ...string) (string, error) {
	cmd := "sh -s --"
	for _, a := range args {
		cmd += " " + shellQuote(a)
	}
	var out, errb strings.Builder
	err := s.C.Run(ctx, cmd, strings.NewReader(spoolScript), &out, &limitWriter{w: &errb, n: 4096})
	if err != nil {
		if msg := strings.TrimSpace(errb.String()); msg != "" {
			return out.String(), fmt.Errorf("%s on the server: %s", args[0], msg)
		}
		return out.String(), fmt.Errorf("%s on the server: %w", args[0], err)
	}
	return out.String(), nil
}

// Claimed implements Spool.
func (s *SSHSpool) Claimed(ctx context.Context) ([]ClaimedFile, error) {
	out, err := s.run(ctx, "claimed", s.SpoolPath)
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(out, "end\n") {
		return nil, fmt.Errorf("listing claimed files: truncated answer %q", out)
	}
	var files []ClaimedFile
	for _, line := range s.noteHave(strings.TrimSuffix(out, "end\n")) {
		if line == "" {
			continue
		}
		sz, name, ok := strings.Cut(line, " ")
		n, err := strconv.ParseInt(strings.TrimSpace(sz), 10, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("listing claimed files: bad line %q", line)
		}
		files = append(files, ClaimedFile{Name: name, Size: n})
	}
	return files, nil
}

// Claim implements Spool.
func (s *SSHSpool) Claim(ctx context.Context, claimName string) (*ClaimedFile, error) {
	if path.Dir(claimName) != path.Dir(s.SpoolPath) {
		return nil, fmt.Errorf("claim name %s is not in the spool's directory", claimName)
	}
	out, err := s.run(ctx, "claim", s.SpoolPath, claimName, secs(s.LockWait, 300), secs(s.StaleAfter, 1024))
	if err != nil {
		return nil, err
	}
	out = strings.TrimSpace(strings.Join(s.noteHave(out), "\n"))
	if out == "empty" {
		return nil, nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(out, "claimed ")), 10, 64)
	if !strings.HasPrefix(out, "claimed ") || err != nil {
		return nil, fmt.Errorf("claim: unexpected answer %q", out)
	}
	return &ClaimedFile{Name: claimName, Size: n}, nil
}

func secs(d, def time.Duration) string {
	if d <= 0 {
		d = def * time.Second
	}
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}

// Size implements Spool.
func (s *SSHSpool) Size(ctx context.Context, name string) (int64, bool, error) {
	out, err := s.run(ctx, "size", name)
	if err != nil {
		return 0, false, err
	}
	out = strings.TrimSpace(out)
	if out == "missing" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(out, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("size: unexpected answer %q", out)
	}
	return n, true, nil
}

// Remove implements Spool.
func (s *SSHSpool) Remove(ctx context.Context, name string, size int64) (int64, error) {
	out, err := s.run(ctx, "remove", name, strconv.FormatInt(size, 10), secs(s.LockWait, 300))
	if err != nil {
		return 0, err
	}
	out = strings.TrimSpace(out)
	if out == "removed" {
		return 0, nil
	}
	if g, ok := strings.CutPrefix(out, "grown "); ok {
		n, err := strconv.ParseInt(g, 10, 64)
		if err == nil {
			return n, nil
		}
	}
	return 0, fmt.Errorf("remove: unexpected answer %q", out)
}

// Codec picks the compression: zstd, else gzip, else none, as far as the
// server has them and the user allows.
func (s *SSHSpool) Codec(ctx context.Context) (string, error) {
	if s.codec != "" {
		return s.codec, nil
	}
	want := s.Compress
	if want == "" {
		want = "auto"
	}
	if want == "none" {
		s.codec = "none"
		return s.codec, nil
	}
	have := s.have
	if have == nil {
		out, err := s.run(ctx, "probe")
		if err != nil {
			return "", err
		}
		have = map[string]bool{}
		for _, l := range strings.Fields(out) {
			have[l] = true
		}
	}
	switch want {
	case "auto":
		s.codec = "none"
		if have["gzip"] {
			s.codec = "gzip"
		}
		if have["zstd"] {
			s.codec = "zstd"
		}
	case "zstd", "gzip":
		if !have[want] {
			return "", fmt.Errorf("--compress %s: the server has no %s", want, want)
		}
		s.codec = want
	default:
		return "", fmt.Errorf("unknown compression %q (auto, zstd, gzip, none)", want)
	}
	return s.codec, nil
}

// Open implements Spool.
func (s *SSHSpool) Open(ctx context.Context, f ClaimedFile, offset int64) (*Stream, error) {
	codec, err := s.Codec(ctx)
	if err != nil {
		return nil, err
	}
	wireCodec, stdin, counted := codec, io.Reader(strings.NewReader(spoolScript)), &countReader{}
	var ad *adapter
	if codec == "zstd" && f.Size-offset > adaptChunk {
		ad = newAdapter(counted)
		wireCodec, stdin = "zstd-adapt", io.MultiReader(stdin, ad.answer)
	}
	cmd := "sh -s -- cat " + shellQuote(f.Name) + " " + strconv.FormatInt(offset, 10) + " " + wireCodec
	out, wait, err := s.C.Stream(ctx, cmd, stdin)
	if err != nil {
		if ad != nil {
			ad.stop()
		}
		return nil, err
	}
	counted.r = out
	if ad != nil {
		counted.onRead = ad.observe
		defer func() {
			if err != nil {
				ad.stop()
			}
		}()
	}
	dec, closeDec, err := decompress(codec, counted)
	if err != nil {
		io.Copy(io.Discard, out)
		wait()
		return nil, err
	}
	st := &Stream{Reader: dec, Codec: codec, Wire: func() int64 { return counted.n }}
	if ad != nil {
		st.Level = ad.chosen
	}
	st.close = func() error {
		if ad != nil {
			ad.stop()
		}
		closeDec()
		io.Copy(io.Discard, out)
		if err := wait(); err != nil {
			return fmt.Errorf("transfer of %s: %w", f.Name, err)
		}
		return nil
	}
	return st, nil
}

type countReader struct {
	r      io.Reader
	n      int64
	onRead func(total int64)
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.onRead != nil && n > 0 {
		c.onRead(c.n)
	}
	return n, err
}

// ErrShortTransfer is returned when a stream ends before the bytes the
// spool holds: the connection dropped or the server side failed.
var ErrShortTransfer = errors.New("transfer ended early")

// copyProgram is the copy claim's locked part, in perl (sh cannot take an
// fcntl lock), run as `perl -e copyProgram -- SPOOL TIMEOUT OP DIR CLAIM`
// where CLAIM is the copy's path in DIR:
//
//	claim   settle this spool's crashed claims in DIR, remove their
//	        partial copies, then copy the spool to CLAIM and truncate it
//	settle  settle CLAIM
//
// A claim goes: CLAIM.pending (the marker), synced; the copy in
// CLAIM.tmp, synced, renamed to CLAIM, synced; the spool truncated,
// synced; the marker removed, synced. Settling a claim that still has its
// marker tells the two crashes apart by the spool's bytes: if the spool
// still starts with the claim's bytes, the truncation did not happen, and
// the claim takes the whole spool (mail that came after the crash too, as
// late mail grows a renamed spool) before the spool is truncated; if not,
// the spool was truncated. Either way no byte is in the spool and the
// claim both, and none is in neither. Without a CLAIM the copy never
// finished and the spool was not touched.
//
// The fcntl lock is a whole-file write lock, F_SETLK retried every 50 ms
// up to TIMEOUT: struct flock begins with l_type and l_whence on every
// system, and zeros after them mean the whole file, so the packing needs
// no layout. No single quotes: it sits in sh single quotes.
const copyProgram = `use strict; use Fcntl; use IO::Handle;
my ($spool, $timeout, $op, $dir, $x) = @ARGV;
my $base = $spool; $base =~ s{.*/}{}s;
sub fail { die "$_[0]\n" }
sub dsync { my $h; open($h, "<", $_[0]) or fail("open $_[0]: $!"); $h->sync or fail("fsync $_[0]: $!"); close $h }
sub readn {
  my ($h, $n, $what) = @_; my $b = "";
  while (length($b) < $n) { my $r = sysread($h, $b, $n - length($b), length($b)); defined $r or fail("read $what: $!"); last if $r == 0 }
  return $b;
}
sub lockspool {
  my $end = time + $timeout;
  for (;;) {
    my $s;
    if (!open($s, "+<", $spool)) { return undef if $!{ENOENT}; fail("open $spool: $!") }
    my $fl = pack("ss", F_WRLCK, 0) . ("\0" x 256);
    until (fcntl($s, F_SETLK, $fl)) {
      fail("fcntl lock of $spool: $!") unless $!{EAGAIN} || $!{EACCES} || $!{EINTR};
      fail("the fcntl lock of $spool is still held after ${timeout}s") if time >= $end;
      select(undef, undef, undef, 0.05);
    }
    my @a = stat($s); my @b = stat($spool);
    return $s if @b && $a[0] == $b[0] && $a[1] == $b[1];
    close $s;
  }
}
sub copyto {
  my ($s, $n, $to) = @_; my $o;
  sysopen($o, $to, O_WRONLY|O_CREAT|O_TRUNC, 0600) or fail("create $to: $!");
  sysseek($s, 0, 0) or fail("seek $spool: $!");
  my $left = $n;
  while ($left > 0) {
    my $b = readn($s, $left < 1048576 ? $left : 1048576, $spool);
    length($b) or fail("$spool shrank under its lock");
    my $off = 0;
    while ($off < length($b)) { my $w = syswrite($o, $b, length($b) - $off, $off); defined $w or fail("write $to: $!"); $off += $w }
    $left -= length($b);
  }
  $o->sync or fail("fsync $to: $!"); close($o) or fail("close $to: $!");
}
sub starts {
  my ($s, $x) = @_; my $n = (-s $x) || 0; my $c;
  return 0 if !$n || ((-s $s) || 0) < $n;
  open($c, "<", $x) or fail("open $x: $!");
  sysseek($s, 0, 0) or fail("seek $spool: $!");
  while ($n > 0) {
    my $k = $n < 1048576 ? $n : 1048576;
    my $a = readn($s, $k, $spool); my $b = readn($c, $k, $x);
    return 0 if length($a) != $k || $a ne $b;
    $n -= $k;
  }
  return 1;
}
sub truncspool { my $s = shift; truncate($s, 0) or fail("truncate $spool: $!"); $s->sync or fail("fsync $spool: $!") }
sub settle {
  my ($s, $x) = @_;
  if ($s && -e $x && starts($s, $x)) {
    my $l = (-s $s) || 0;
    if ($l > ((-s $x) || 0)) { copyto($s, $l, "$x.tmp"); rename("$x.tmp", $x) or fail("rename $x.tmp: $!"); dsync($dir) }
    truncspool($s);
  }
  unlink("$x.tmp");
  unlink("$x.pending") or $!{ENOENT} or fail("remove $x.pending: $!");
  dsync($dir);
}
sub main {
  my $s = lockspool();
  if ($op eq "settle") { settle($s, $x) if -e "$x.pending"; print "settled\n"; return }
  my $dh; opendir($dh, $dir) or fail("open $dir: $!");
  my @left = grep { index($_, "$base.mfilter-") == 0 && /\.(pending|tmp)$/ } readdir($dh);
  closedir($dh);
  for my $f (@left) { settle($s, "$dir/$1") if $f =~ /^(.*)\.pending$/s }
  for my $f (@left) { unlink("$dir/$f") if $f =~ /\.tmp$/ }
  dsync($dir) if @left;
  my $l = $s ? ((-s $s) || 0) : 0;
  if (!$l) { print "empty\n"; return }
  my $m; sysopen($m, "$x.pending", O_WRONLY|O_CREAT|O_EXCL, 0600) or fail("create $x.pending: $!"); close($m); dsync($dir);
  copyto($s, $l, "$x.tmp"); rename("$x.tmp", $x) or fail("rename $x.tmp: $!"); dsync($dir);
  truncspool($s);
  unlink("$x.pending") or fail("remove $x.pending: $!"); dsync($dir);
  print "claimed $l\n";
}
if (!eval { main(); 1 }) { my $e = $@; chomp $e; print STDERR "$e\n"; exit 90 }
`
