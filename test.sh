#!/usr/bin/env bash
# test.sh: run every mfilter test on this machine.
#
# Installs what the tests use when it is missing (Debian/Ubuntu packages,
# as root or through sudo): procmail and formail (the byte-compatibility
# oracle), openssh-server (the real sshd that fetch tests start on
# loopback), zstd, fdm (benchmark peer), mandoc (man page lint), GNU time
# (a child's peak memory), postfix
# (the SMTP relay mfilter send and tunnel tests run privately on 127.0.0.2,
# and the local delivery of the MDA tests; debconf is told "No
# configuration", so the system's own Postfix is not set up or started;
# installing it replaces exim4), dovecot-core, dovecot-pop3d and
# dovecot-imapd (a private POP3/IMAP server on 127.0.0.3 and doveadm, which
# reads what mfilter wrote), fetchmail, getmail6 and mblaze (the MDA
# pipeline tests; mailstat comes with procmail), liblockfile-bin (dotlockfile,
# setgid mail: the copy claim's dotlock in a spool directory the user cannot
# write). The MDA tests create a system user, mfilter-mda, for Postfix's
# local delivery; the copy-claim tests a login user outside group mail,
# mfilter-nomail. Then runs
# gofmt, go vet, mandoc -Tlint, the Go tests, and a short run of each fuzz
# target. Nothing is skipped: a missing tool makes the tests fail.
set -euo pipefail
cd "$(dirname "$0")"

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
for pair in procmail:procmail formail:procmail sshd:openssh-server ssh:openssh-client \
            ssh-keygen:openssh-client ssh-agent:openssh-client zstd:zstd fdm:fdm mandoc:mandoc \
            postfix:postfix dovecot:dovecot-core doveadm:dovecot-core fetchmail:fetchmail \
            getmail:getmail6 mlist:mblaze mshow:mblaze mdeliver:mblaze mailstat:procmail \
            dotlockfile:liblockfile-bin perl:perl-base; do
  have "${pair%%:*}" || need+=("${pair#*:}")
done
# GNU time measures a child's peak memory (time is also a shell word).
[ -x /usr/bin/time ] || need+=(time)
# Dovecot's POP3 and IMAP servers are not commands of their own.
[ -x /usr/lib/dovecot/pop3 ] || need+=(dovecot-pop3d)
[ -x /usr/lib/dovecot/imap ] || need+=(dovecot-imapd)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "test.sh: installing ${need[*]}" >&2
  if printf '%s\n' "${need[@]}" | grep -qx postfix; then
    echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
fi

echo "== gofmt"; bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
  if [ -n "$bad" ]; then echo "gofmt wants to change: $bad"; exit 1; fi
echo "== go vet"; go vet ./...
if ls man/*.[0-9] >/dev/null 2>&1; then echo "== mandoc -Tlint"; mandoc -Tlint -W warning man/*.[0-9]; fi
echo "== go test"; go test -count=1 -timeout 25m ./...
echo "== fuzz (short)"
# A count, not a duration: with -fuzztime 10s a loaded machine can hit the
# fuzzer's own deadline while a worker is busy, which go test reports as a
# failure ("context deadline exceeded") though no input failed.
# FUZZTIME overrides the count for every target (e.g. FUZZTIME=1m).
for pkg in $(go list ./...); do
  for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
    case $target in
      FuzzEvaluate) n=4000x ;;   # ~1,000 execs/s: each compiles and runs a rule set
      *) n=30000x ;;
    esac
    echo "-- $pkg $target"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "${FUZZTIME:-$n}" "$pkg"
  done
done
echo "== all tests passed"
