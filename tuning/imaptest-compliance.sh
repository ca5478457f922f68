#!/usr/bin/env bash
# IMAP compliance (issue 3, point 8): runs imaptest's scripted tests (its src/tests directory:
# one file per command group, with the expected replies) and prints what failed and the summary.
#
#   IMAPTEST=/tmp/imaptest-build/src/imaptest tuning/imaptest-compliance.sh [HOST:PORT]
#
# Without HOST:PORT it builds ringmail (release), starts it in a temp dir with IMAP on a free
# 127.0.0.1 port and one user, u1@example.test, and stops it on exit. With HOST:PORT it tests
# that server as IMAP_USER / IMAP_PASS (default u1@example.test / bench-imap-pass).
# The tests DELETE the user's mailboxes named imaptest* and everything in them.
#
# Environment:
#   IMAPTEST      imaptest binary (required; how to build it: tuning/imaptest.md)
#   TESTS         a tests directory or a single test file (default: the tests/ directory next to
#                 the imaptest binary, i.e. src/tests in its build tree)
#   OUT           also keep the full imaptest output (and ringmail's log) in this directory
#   TIMEOUT_SECS  bound on the whole run (default 600)
#
# Exit status: 0 when nothing failed, 1 when a test failed, 2 on a usage or start-up problem.
set -euo pipefail
cd "$(dirname "$0")/.."
. tuning/lib.sh
user=${IMAP_USER:-u1@example.test}
pass=${IMAP_PASS:-bench-imap-pass}

require_imaptest "IMAPTEST=/tmp/imaptest-build/src/imaptest tuning/imaptest-compliance.sh [HOST:PORT]"
tests=${TESTS:-$(dirname "$IMAPTEST")/tests}
[ -e "$tests" ] || { echo "no imaptest tests at $tests: set TESTS" >&2; exit 2; }

work=$(mktemp -d /tmp/ringmail-imaptest.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    cp "$work"/*.txt "$work"/*.log "$OUT"/ 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ $# -ge 1 ]; then
  host=${1%:*}
  port=${1##*:}
  if [ "$host" = "$1" ] || [ -z "$port" ]; then echo "usage: $0 [HOST:PORT]" >&2; exit 2; fi
else
  cargo build --release -q -p ringmail
  bin=${CARGO_TARGET_DIR:-target}/release
  host=127.0.0.1
  port=$(free_port)
  write_config "$work/ringmail.toml" "$work/data" "$(free_port)" always "$port" "$(free_port)"
  echo "$pass" | "$bin/ringmail" user add "$user" --password-stdin --config "$work/ringmail.toml" \
    >/dev/null 2>"$work/user-add.log" || { cat "$work/user-add.log" >&2; exit 2; }
  start_ringmail "$bin/ringmail" "$work/ringmail.toml" "$work/ringmail.log" || exit 2
  pid=$ringmail_pid
fi

# Wait (at most 15 s) for the greeting, so a server that is not there fails fast and clearly.
imap_ready "$host" "$port" || {
  echo "no IMAP greeting from $host:$port" >&2
  [ -f "$work/ringmail.log" ] && cat "$work/ringmail.log" >&2
  exit 2
}

echo "imaptest scripted tests: $tests against $host:$port as $user"
status=0
LD_LIBRARY_PATH=/usr/lib/dovecot${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
  timeout "${TIMEOUT_SECS:-600}" "$IMAPTEST" "host=$host" "port=$port" "user=$user" "pass=$pass" \
  "test=$tests" >"$work/imaptest.txt" 2>&1 || status=$?
# Failures come first ("*** Test NAME command N/M (line L)" + expected/actual), then 3 summary lines.
grep -v -E '^([0-9]+ test groups:|base protocol:|extensions:)' "$work/imaptest.txt" || true
failed=$(sed -n 's/^\*\*\* Test \([^ ]*\) .*/\1/p' "$work/imaptest.txt" | sort | uniq -c | awk '{ printf "%s(%s) ", $2, $1 }')
echo "failed groups (failed commands): ${failed:-none}"
grep -E '^([0-9]+ test groups:|base protocol:|extensions:)' "$work/imaptest.txt" || {
  echo "imaptest printed no summary (exit status $status): it stopped early" >&2
  exit 1
}
if [ "$status" != 0 ] || [ -n "$failed" ]; then exit 1; fi
