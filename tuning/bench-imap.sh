#!/usr/bin/env bash
# Side-by-side IMAP load (issue 3, point 9): the same imaptest load against ringmail and against
# a private Dovecot from apt, in the same run, on the same machine.
#
#   IMAPTEST=/tmp/imaptest-build/src/imaptest tuning/bench-imap.sh [users=50] [clients=20] [secs=20]
#
# Each server gets two runs of imaptest's default load profile (LOGIN, LIST, STATUS, SELECT,
# FETCH, STORE, EXPUNGE, APPEND, LOGOUT mixed by probability, mailboxes kept near 30 messages):
# "churn" (clients log out and new ones log in, the default) and "persistent" (logout=0). It
# prints logins/s and commands/s (all imaptest commands, LOGIN and LOGOUT included, divided by
# secs) and the ringmail/Dovecot ratio of commands/s. How to build imaptest: tuning/imaptest.md.
#
# Environment:
#   IMAPTEST        imaptest binary (required)
#   ONLY            both (default) | dovecot | ringmail
#   DOVECOT_SCHEME  argon2id (default): Dovecot verifies the very argon2id hashes ringmail stores,
#                   so a LOGIN costs both servers the same; plain: {PLAIN} passwords for Dovecot
#                   (cheap logins; PLATFORM.md's figures match this setting)
#   FSYNC           ringmail store.fsync: always (default; Dovecot's default mail_fsync=optimized
#                   also syncs every saved message before OK) | never
#   MBOX            mbox that imaptest APPENDs from (default: 500 generated messages, ~1.9 MB,
#                   plain text, multipart/alternative and base64 attachments, in the temp dir)
#   SEED            imaptest's seed=, the same for both servers (default 1; empty: a new random
#                   seed per run). It picks which users the clients log in as, hence how many
#                   sessions share a mailbox: Dovecot's persistent figure moved ~25 % with it.
#   OUT             keep the imaptest outputs, the server configs and logs in this directory
#
# Needs dovecot-imapd (apt) and python3; run as root (Dovecot's mail processes run as nobody).
# Every server listens on 127.0.0.1 ports picked free, every process is stopped by pid on exit,
# and each imaptest run is bounded by secs (+ its 30 s logout wait) and by `timeout`.
set -euo pipefail
cd "$(dirname "$0")/.."
. tuning/lib.sh
users=${1:-50}
clients=${2:-20}
secs=${3:-20}
only=${ONLY:-both}
scheme=${DOVECOT_SCHEME:-argon2id}
fsync=${FSYNC:-always}
seed=${SEED-1}
pass=bench-imap-pass
case $only in both | dovecot | ringmail) ;; *) echo "ONLY must be both, dovecot or ringmail" >&2; exit 2 ;; esac
case $scheme in argon2id | plain) ;; *) echo "DOVECOT_SCHEME must be argon2id or plain" >&2; exit 2 ;; esac

require_imaptest "IMAPTEST=/tmp/imaptest-build/src/imaptest tuning/bench-imap.sh"
if [ "$only" != ringmail ]; then
  [ -x /usr/sbin/dovecot ] || { echo "dovecot not found: apt-get install dovecot-imapd dovecot-pop3d" >&2; exit 2; }
  [ "$(id -u)" = 0 ] || { echo "run as root: the private Dovecot drops privileges to nobody and dovenull" >&2; exit 2; }
fi

work=$(mktemp -d /tmp/ringmail-bench-imap.XXXXXX)
chmod 755 "$work" # Dovecot's auth process (user dovecot) reads the passwd-file in here
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    cp "$work"/*.txt "$work"/*.log "$work"/*.conf "$work"/*.toml "$OUT"/ 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# load LABEL PORT [imaptest args...]: one imaptest load run, output in $work/LABEL.txt.
load() {
  local label=$1 port=$2
  shift 2
  LD_LIBRARY_PATH=/usr/lib/dovecot${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
    timeout $((secs + 90)) "$IMAPTEST" host=127.0.0.1 "port=$port" "user=u%d@example.test" \
    "pass=$pass" "users=$users" "clients=$clients" "secs=$secs" "mbox=$mbox" \
    ${seed:+"seed=$seed"} "$@" \
    >"$work/$label.txt" 2>&1 || echo "imaptest ($label) exited with status $?" >&2
}

# figures LABEL: "logins/s commands/s errors fetches/s" from imaptest's output in $work/LABEL.txt.
figures() { imaptest_figures "$work/$1.txt" "$secs"; }

mbox=${MBOX:-$work/bench.mbox}
[ -n "${MBOX:-}" ] || gen_mbox "$mbox" 500

# ringmail is given the users in every mode: its stored argon2id hashes are also what Dovecot
# verifies with DOVECOT_SCHEME=argon2id (ONLY=dovecot reuses an existing release binary).
bin=${CARGO_TARGET_DIR:-target}/release # where cargo build just put them
if [ "$only" != dovecot ] || { [ "$scheme" = argon2id ] && [ ! -x "$bin/ringmail" ]; }; then
  cargo build --release -q -p ringmail
fi
smtp_port=$(free_port)
imap_port=$(free_port)
pop3_port=$(free_port)
write_config "$work/ringmail.toml" "$work/ringmail-data" "$smtp_port" "$fsync" "$imap_port" "$pop3_port"
if [ "$only" != dovecot ] || [ "$scheme" = argon2id ]; then
  for i in $(seq "$users"); do
    echo "$pass" | "$bin/ringmail" user add "u$i@example.test" --password-stdin \
      --config "$work/ringmail.toml" >/dev/null 2>>"$work/user-add.log" ||
      { cat "$work/user-add.log" >&2; exit 1; }
  done
fi

if [ "$only" != ringmail ]; then
  d=$work/dovecot
  mkdir -p "$d/mail"
  chown 65534:65534 "$d/mail"
  dovecot_passwd "$d/passwd" "$scheme" "$users" "$pass" "$work/ringmail-data/users"
  dovecot_imap=$(free_port)
  write_dovecot_config "$work/dovecot.conf" "$d" "$dovecot_imap" "$(free_port)"
  start_dovecot "$work/dovecot.conf" "$work/dovecot-stdout.log" "$d/dovecot.log" "$dovecot_imap" ||
    { pids+=("$dovecot_pid"); exit 1; }
  pids+=("$dovecot_pid")
  echo "Dovecot $(/usr/sbin/dovecot --version) on 127.0.0.1:$dovecot_imap (passwords: $scheme)"
fi

if [ "$only" != dovecot ]; then
  start_ringmail "$bin/ringmail" "$work/ringmail.toml" "$work/ringmail.log"
  pids+=("$ringmail_pid")
  imap_ready 127.0.0.1 "$imap_port" || {
    cat "$work/ringmail.log" >&2
    echo "ringmail is not answering IMAP on 127.0.0.1:$imap_port ([imap] listen)" >&2
    exit 1
  }
  echo "ringmail $("$bin/ringmail" --version 2>/dev/null | head -1) on 127.0.0.1:$imap_port (fsync = $fsync)"
fi

echo "imaptest: users=$users clients=$clients secs=$secs seed=${seed:-random} mbox=$mbox ($(grep -c '^From ' "$mbox") messages)"
printf '%-22s %10s %12s %7s\n' run logins/s commands/s errors
declare -A cmds
for mode in churn persistent; do
  extra=()
  [ "$mode" = persistent ] && extra=(logout=0)
  for server in dovecot ringmail; do
    [ "$only" = both ] || [ "$only" = "$server" ] || continue
    port=$imap_port
    [ "$server" = dovecot ] && port=$dovecot_imap
    load "$server-$mode" "$port" "${extra[@]}"
    read -r logins commands errors _ < <(figures "$server-$mode")
    cmds[$server-$mode]=$commands
    printf '%-22s %10s %12s %7s\n' "$server $mode" "$logins" "$commands" "$errors"
    if [ "$errors" != 0 ]; then
      grep -m 5 -E '^(Error|Panic|Fatal):' "$work/$server-$mode.txt" | sed 's/^/    /' >&2
    fi
  done
done
if [ "$only" = both ]; then
  for mode in churn persistent; do
    python3 - "${cmds[ringmail-$mode]}" "${cmds[dovecot-$mode]}" "$mode" <<'PY'
import sys
r, d = float(sys.argv[1]), float(sys.argv[2])
print(f"ratio ringmail/Dovecot ({sys.argv[3]}) = {r / d:.2f}  ({r:.0f} vs {d:.0f} commands/s)")
PY
  done
fi
