#!/usr/bin/env bash
# Side by side (issue 6, point 2): the same SMTP ingest, IMAP and POP3 loads from the bundled
# ringmail-loadgen against ringmail and against Postfix / Dovecot from apt, one after the other in
# one run on this host, then one table of ratios against the issue's targets.
#
#   tuning/compare.sh                      # as root; installs what is missing with apt-get
#   MESSAGES=2000 SECS=5 OUT=/tmp/cmp tuning/compare.sh
#
# Stages (each bounded by a count and by time; everything on 127.0.0.1, ports picked free):
#   smtp  a) loadgen smtp -> Postfix's smtp-sink (protocol only, stores nothing: the ceiling)
#         b) loadgen smtp -> ringmail, store.fsync = "always" (a 250 means fdatasync'd); then
#            every accepted message must be in the users' INBOXes (IMAP STATUS, summed)
#         c) loadgen smtp -> Postfix smtpd -> queue -> LMTP -> Dovecot (Maildir): accepted/s as
#            the client sees it, and delivered/s end to end = messages delivered / time from the
#            start of the load until Postfix has logged the last LMTP 250 (polled in its log,
#            bounded by WAIT_SECS); the Maildirs are then counted to confirm
#         d) loadgen smtp --rate (half of b's rate) -> ringmail: p99 end of DATA -> 250
#         Recipients are spread over the users load1..loadUSERS@example.test (b and c), so both
#         servers then hold the same messages for the IMAP and POP3 stages; d) goes to
#         lat1..latUSERS (same spread, other mailboxes, so b's and c's stay alike).
#   imap  loadgen imap, persistent sessions, against ringmail and Dovecot (the load users)
#   pop3  loadgen pop3 (RETR, no DELE) against ringmail and Dovecot
# The table (markdown, on stdout and in OUT/table.md): stage, ringmail, peer, ratio, target,
# met / missed, plus server CPU seconds (process trees) for each side. Paste it into
# tuning/results/<date>-<machine>.md with the machine's description.
#
# Environment:
#   USERS           load users (default 20), one password, argon2id in ringmail
#   MESSAGES        messages per SMTP run (default 20000), 2 KiB each, CONNECTIONS sessions
#   CONNECTIONS     loadgen connections for every stage (default 20)
#   SECS            duration of each IMAP and POP3 run (default 20)
#   SMTP_SECS       time bound of each SMTP run (default 120)
#   WAIT_SECS       how long c) waits for Dovecot's deliveries after the last 250 (default 300)
#   ONLY            stages to run, comma-separated: smtp,imap,pop3 (default all). Without smtp,
#                   b) and c) still run to fill the mailboxes, but give no rows.
#   IMAP_MIX        loadgen imap --mix (default: loadgen's own)
#   DOVECOT_SCHEME  argon2id (default: Dovecot verifies the very hashes ringmail stores; it does so
#                   at every login, while ringmail remembers a verified login per core) | plain
#                   ({PLAIN} passwords: Dovecot's logins become cheap)
#   OUT             keep JSON files, loadgen outputs, compare HTML, configs and logs here
#                   (default: a temp dir, removed at the end)
#   CARGO_TARGET_DIR  where the release binaries are built (default: the repo's target/)
#   NO_BUILD        set: do not build, use the binaries already in $CARGO_TARGET_DIR/release
#
# Needs root (Postfix's master, Dovecot's privilege drop, apt-get). Every process is started
# here, its pid recorded and stopped by that pid on exit; nothing is stopped by name. The
# system's own ports (25, 143, 110, 24) are never used. loadgen runs with --threads 1: on a
# 2-core host a second pinned loadgen thread competes with a server core (loadgen/README.md).
# Lint: shellcheck -x tuning/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. tuning/lib.sh

users=${USERS:-20}
msgs=${MESSAGES:-20000}
conns=${CONNECTIONS:-20}
secs=${SECS:-20}
smtp_secs=${SMTP_SECS:-120}
wait_secs=${WAIT_SECS:-300}
only=,${ONLY:-smtp,imap,pop3},
scheme=${DOVECOT_SCHEME:-argon2id}
size=2048
pass=compare-pass
imap_commands_max=10000000 # the count bound of an IMAP run (SECS is the one that ends it)
pop3_sessions_max=1000000  # likewise for POP3 sessions (10 RETR each)
case $scheme in argon2id | plain) ;; *) echo "DOVECOT_SCHEME must be argon2id or plain" >&2; exit 2 ;; esac
for n in "$users" "$msgs" "$conns" "$secs" "$smtp_secs" "$wait_secs"; do
  case $n in '' | *[!0-9]* | 0) echo "USERS, MESSAGES, CONNECTIONS, SECS, SMTP_SECS, WAIT_SECS: positive integers" >&2; exit 2 ;; esac
done
wants() { [[ $only == *,$1,* ]]; }
for stage in ${only//,/ }; do
  case $stage in smtp | imap | pop3) ;; *) echo "ONLY: unknown stage '$stage' (smtp, imap, pop3)" >&2; exit 2 ;; esac
done
[ "$(id -u)" = 0 ] || { echo "run as root (apt-get, Postfix's master, Dovecot)" >&2; exit 2; }
if wants pop3 && [ "$users" -lt "$conns" ]; then
  echo "note: USERS < CONNECTIONS: POP3 sessions of one user wait for each other's maildrop lock" >&2
fi

echo "== install and build =="
apt_install_missing postfix dovecot-imapd dovecot-pop3d dovecot-lmtpd python3
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p ringmail -p ringmail-loadgen
bin=${CARGO_TARGET_DIR:-target}/release
loadgen=$bin/ringmail-loadgen

work=$(mktemp -d /tmp/ringmail-compare.XXXXXX)
chmod 711 "$work" # Postfix's daemons and Dovecot's processes open files below it
ringmail_pid='' dovecot_pid='' sink_pid='' postfix_dir=''
cleanup() {
  [ -n "$postfix_dir" ] && stop_postfix "$postfix_dir"
  for p in $sink_pid $ringmail_pid $dovecot_pid; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    cp "$work"/*.json "$work"/*.txt "$work"/*.md "$work"/*.html "$work"/*.toml "$work"/*.conf \
      "$work"/*.log "$OUT"/ 2>/dev/null || true
    cp "$work/postfix/etc/main.cf" "$work/postfix/etc/master.cf" "$work/postfix/log/postfix.log" \
      "$work/dovecot/dovecot.log" "$OUT"/ 2>/dev/null || true
    echo "kept in $OUT" >&2
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM # so that cleanup runs on ^C too

# loadgen LABEL MODE ARGS...: one bounded loadgen run, JSON in $work/LABEL.json, output in
# $work/LABEL.txt; prints its summary line(s); returns loadgen's status.
loadgen() {
  local label=$1 mode=$2 status=0
  shift 2
  "$loadgen" "$mode" "$@" --json "$work/$label.json" --label "$label" --quiet >"$work/$label.txt" 2>&1 || status=$?
  tail -n +2 "$work/$label.txt" | head -n 16 | sed 's/^/    /' # line 1: the run's settings
  return "$status"
}

# smtp_load LABEL PORT [loadgen smtp args]: the SMTP ingest load, recipients spread over the
# load users (or what the extra args add).
smtp_load() {
  local label=$1 port=$2 to=() i
  shift 2
  for i in $(seq "$users"); do to+=(--to "${rcpt_prefix:-load}$i@example.test"); done
  loadgen "$label" smtp --target "127.0.0.1:$port" --connections "$conns" --messages "$msgs" \
    --size "$size" "${to[@]}" --threads 1 --duration-secs "$smtp_secs" "$@"
}

# Figures per stage, filled as the stages run: fig[NAME] = loadgen_figures' "RATE OK P99_US
# ERRORS REFUSED ABORTED P50_US", cpu[NAME] = server CPU seconds, note[NAME] = other facts, or
# "failed: why" when a stage could not run.
declare -A fig cpu note
cpu_of() { tree_cpu_seconds "$1"; }
minus() { python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):.2f}')" "$1" "$2"; }

echo "== users: load1..load$users@example.test (and lat1..lat$users for the latency run) =="
smtp_port=$(free_port) imap_port=$(free_port) pop3_port=$(free_port)
write_config "$work/ringmail.toml" "$work/ringmail-data" "$smtp_port" always "$imap_port" "$pop3_port"
for i in $(seq "$users"); do
  for who in load lat; do
    echo "$pass" | "$bin/ringmail" user add "$who$i@example.test" --password-stdin \
      --config "$work/ringmail.toml" >/dev/null 2>>"$work/user-add.log" ||
      { cat "$work/user-add.log" >&2; exit 1; }
  done
done
load_users=()
for i in $(seq "$users"); do load_users+=("load$i@example.test"); done

d=$work/dovecot
mkdir -p "$d/mail"
chown 65534:65534 "$d/mail"
if [ "$scheme" = argon2id ]; then
  dovecot_passwd "$d/passwd" argon2id "$users" "$pass" "$work/ringmail-data/users"
else
  for u in "${load_users[@]}"; do echo "$u:{PLAIN}$pass::::::"; done >"$d/passwd"
  chmod 644 "$d/passwd"
fi
dovecot_imap=$(free_port) dovecot_pop3=$(free_port) dovecot_lmtp=$(free_port)
write_dovecot_lmtp_config "$work/dovecot.conf" "$d" "$dovecot_imap" "$dovecot_pop3" "$dovecot_lmtp"
start_dovecot "$work/dovecot.conf" "$work/dovecot-stdout.log" "$d/dovecot.log" "$dovecot_imap"
echo "Dovecot $(/usr/sbin/dovecot --version) on 127.0.0.1: IMAP $dovecot_imap, POP3 $dovecot_pop3, LMTP $dovecot_lmtp (passwords: $scheme)"

start_ringmail "$bin/ringmail" "$work/ringmail.toml" "$work/ringmail.log"
imap_ready 127.0.0.1 "$imap_port" || { cat "$work/ringmail.log" >&2; echo "ringmail: no IMAP on $imap_port" >&2; exit 1; }
echo "ringmail on 127.0.0.1: SMTP $smtp_port, IMAP $imap_port, POP3 $pop3_port (store.fsync = always)"

# settle PID...: waits (at most 15 s) until the process trees use < 10 % of a CPU over 0.5 s.
# Right after start ringmail zero-fills the space ahead of its logs and Dovecot forks its
# services; measured here, a load started in that moment ran at half speed (smtp-sink too).
settle() {
  local i before after
  for i in $(seq 30); do
    before=0 after=0
    for p in "$@"; do before=$(python3 -c "print($before + $(cpu_of "$p"))"); done
    sleep 0.5
    for p in "$@"; do after=$(python3 -c "print($after + $(cpu_of "$p"))"); done
    python3 -c "import sys; sys.exit(0 if $after - $before < 0.05 else 1)" && return 0
  done
  echo "    (servers still busy after 15 s; measuring anyway)"
}
settle "$ringmail_pid" "$dovecot_pid"

# ---- SMTP ----------------------------------------------------------------------------------
stage_sink() {
  echo "== smtp a) smtp-sink (the protocol ceiling: stores nothing) =="
  local port
  port=$(free_port)
  /usr/sbin/smtp-sink -c -u nobody "127.0.0.1:$port" 1024 >"$work/sink.out" 2>&1 &
  sink_pid=$!
  smtp_ready 127.0.0.1 "$port" || { note[sink]="failed: smtp-sink did not start"; return 1; }
  local before
  before=$(cpu_of "$sink_pid")
  smtp_load smtp-sink "$port" || { note[sink]="failed: loadgen exited $?"; }
  cpu[sink]=$(minus "$(cpu_of "$sink_pid")" "$before")
  fig[sink]=$(loadgen_figures "$work/smtp-sink.json" message)
  kill "$sink_pid" 2>/dev/null || true
  wait "$sink_pid" 2>/dev/null || true
  sink_pid=
}

stage_ringmail_smtp() {
  echo "== smtp b) ringmail, fsync = always =="
  local before landed
  before=$(cpu_of "$ringmail_pid")
  smtp_load smtp-ringmail "$smtp_port" || { note[ringmail]="failed: loadgen exited $?"; }
  cpu[ringmail]=$(minus "$(cpu_of "$ringmail_pid")" "$before")
  fig[ringmail]=$(loadgen_figures "$work/smtp-ringmail.json" message)
  landed=$(imap_messages_total 127.0.0.1 "$imap_port" "$pass" "${load_users[@]}") || landed=nan
  note[landed]=$landed
  echo "    stored (IMAP STATUS over the load users): $landed; accepted: $(cut -d' ' -f2 <<<"${fig[ringmail]}")"
}

stage_postfix() {
  echo "== smtp c) Postfix -> LMTP -> Dovecot, end to end =="
  local port t0 before_p before_d accepted
  port=$(free_port)
  postfix_dir=$work/postfix
  mkdir -p "$postfix_dir"
  write_postfix_lmtp_config "$postfix_dir" "$port" "$dovecot_lmtp" example.test
  start_postfix "$postfix_dir" "$port" || { note[postfix]="failed: Postfix did not start"; return 1; }
  before_p=$(cpu_of "$postfix_pid")
  before_d=$(cpu_of "$dovecot_pid")
  local base log=$postfix_dir/log/postfix.log offset sent secs n
  base=$(wait_maildir_count "$d/mail" 0 0 0 | cut -d' ' -f1)
  offset=$(stat -c %s "$log")
  t0=$(date +%s.%N)
  smtp_load smtp-postfix "$port" || { note[postfix]="failed: loadgen exited $?"; }
  fig[postfix]=$(loadgen_figures "$work/smtp-postfix.json" message)
  accepted=$(cut -d' ' -f2 <<<"${fig[postfix]}")
  case $accepted in '' | *[!0-9]*) accepted=0 ;; esac
  # Delivered = Postfix logged the LMTP 250 (Dovecot has fsync'd the message); then the
  # Maildirs are counted once to confirm.
  read -r sent secs < <(wait_postfix_sent "$log" "$offset" "$accepted" "$t0" "$wait_secs")
  cpu[postfix]=$(minus "$(cpu_of "$postfix_pid")" "$before_p")
  cpu[postfix_dovecot]=$(minus "$(cpu_of "$dovecot_pid")" "$before_d")
  n=$(($(wait_maildir_count "$d/mail" $((base + sent)) 0 10 | cut -d' ' -f1) - base))
  note[delivered]="$n $secs $accepted"
  # As after b): one login and STATUS per user (Dovecot indexes each INBOX now, as ringmail
  # indexed on delivery), so both servers start the IMAP and POP3 stages alike.
  note[dovecot_landed]=$(imap_messages_total 127.0.0.1 "$dovecot_imap" "$pass" "${load_users[@]}") ||
    note[dovecot_landed]=nan
  echo "    delivered: Postfix logged $sent of $accepted accepted as sent, $secs s after the first" \
    "message ($(python3 -c "import sys; print(f'{int(sys.argv[1]) / float(sys.argv[2]):.1f}')" "$sent" "$secs")/s);" \
    "in the Maildirs: $n; IMAP STATUS: ${note[dovecot_landed]}"
  stop_postfix "$postfix_dir"
  postfix_dir=
}

stage_latency() {
  echo "== smtp d) ringmail at half of b)'s rate: DATA -> 250 latency =="
  local rate half before
  rate=$(cut -d' ' -f1 <<<"${fig[ringmail]:-nan}")
  case $rate in nan | 0.0 | '') note[latency]="failed: no rate from b)"; return 1 ;; esac
  half=$(python3 -c "import sys; print(max(1, round(float(sys.argv[1]) / 2)))" "$rate")
  note[half]=$half
  before=$(cpu_of "$ringmail_pid")
  rcpt_prefix=lat smtp_load smtp-ringmail-half "$smtp_port" --rate "$half" ||
    { note[latency]="failed: loadgen exited $?"; }
  cpu[latency]=$(minus "$(cpu_of "$ringmail_pid")" "$before")
  # The target is the server's own end of DATA -> 250 (`data_reply`); `message` adds how late
  # each message started when all connections were busy (no coordinated omission), shown too.
  fig[latency]=$(loadgen_figures "$work/smtp-ringmail-half.json" data_reply)
  fig[latency_sched]=$(loadgen_figures "$work/smtp-ringmail-half.json" message)
}

if wants smtp; then
  stage_sink || true
  stage_ringmail_smtp || true
  stage_postfix || true
  stage_latency || true
elif wants imap || wants pop3; then
  echo "== filling the mailboxes (ONLY has no smtp: SMTP stages b and c, not reported) =="
  stage_ringmail_smtp || true
  stage_postfix || true
fi

# ---- IMAP and POP3 --------------------------------------------------------------------------
# proto_pair PROTO ARGS...: the same loadgen PROTO run against ringmail, then Dovecot.
proto_pair() {
  local proto=$1 server port pid before
  shift
  for server in ringmail dovecot; do
    if [ "$server" = ringmail ]; then
      pid=$ringmail_pid
      port=$([ "$proto" = imap ] && echo "$imap_port" || echo "$pop3_port")
    else
      pid=$dovecot_pid
      port=$([ "$proto" = imap ] && echo "$dovecot_imap" || echo "$dovecot_pop3")
    fi
    echo "== $proto: $server =="
    before=$(cpu_of "$pid")
    loadgen "$proto-$server" "$proto" --target "127.0.0.1:$port" \
      --user "load%@example.test:$pass" --user-count "$users" --connections "$conns" \
      --duration-secs "$secs" --threads 1 "$@" || note[$proto-$server]="failed: loadgen exited $?"
    cpu[$proto-$server]=$(minus "$(cpu_of "$pid")" "$before")
    fig[$proto-$server]=$(loadgen_figures "$work/$proto-$server.json")
    fig[$proto-$server-login]=$(loadgen_figures "$work/$proto-$server.json" login)
  done
}

for proto in imap pop3; do
  wants "$proto" || continue
  if [ "$proto" = imap ]; then
    proto_pair imap --commands "$imap_commands_max" --sessions persistent ${IMAP_MIX:+--mix "$IMAP_MIX"}
  else
    proto_pair pop3 --sessions "$pop3_sessions_max" --retr-per-session 10
  fi
done

# ---- the table ------------------------------------------------------------------------------
for pair in smtp-ringmail:smtp-sink smtp-ringmail:smtp-postfix imap-ringmail:imap-dovecot pop3-ringmail:pop3-dovecot; do
  a=$work/${pair%%:*}.json b=$work/${pair##*:}.json
  if [ ! -s "$a" ] || [ ! -s "$b" ]; then continue; fi
  "$loadgen" compare "$a" "$b" --html "$work/compare-${pair%%:*}-vs-${pair##*:}.html" \
    >"$work/compare-${pair%%:*}-vs-${pair##*:}.txt" 2>&1 || true
done

{
  for k in "${!fig[@]}"; do echo "fig $k ${fig[$k]}"; done
  for k in "${!cpu[@]}"; do echo "cpu $k ${cpu[$k]}"; done
  for k in "${!note[@]}"; do echo "note $k ${note[$k]}"; done
} >"$work/figures.txt"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
git diff --quiet HEAD 2>/dev/null || commit="$commit + uncommitted changes"
{
  echo
  echo "tuning/compare.sh, $(date -u '+%F %H:%M') UTC, $(hostname), $(nproc) CPUs; ringmail $commit;" \
    "Postfix $(postconf -h mail_version 2>/dev/null), Dovecot $(/usr/sbin/dovecot --version | cut -d' ' -f1)." \
    "$conns connections, $msgs messages of $size B over $users users; IMAP and POP3 runs $secs s;" \
    "loadgen --threads 1; Dovecot passwords $scheme."
  echo
} | tee "$work/table.md"
python3 - "$work/figures.txt" "$only" "$scheme" <<'PY' | tee -a "$work/table.md"
import math, sys
fig, cpu, note = {}, {}, {}
for line in open(sys.argv[1]):
    kind, key, *rest = line.split()
    {"fig": fig, "cpu": cpu, "note": note}[kind][key] = rest
only = f",{sys.argv[2]},"

def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan

def figure(key, i):
    """Field i of loadgen_figures for a stage: 0 rate, 1 ok, 2 p99 µs, 3 errors."""
    return num(fig[key][i]) if key in fig else math.nan

def failed(*keys):
    """Why one of these stages could not give a figure ("" if they all could)."""
    for k in keys:
        if note.get(k, [""])[0] == "failed:":
            return " ".join(note[k])
    return ""

def fmt(v, spec="{:,.0f}"):
    return "n/a" if math.isnan(v) else spec.format(v)

def c(*keys):
    return " + ".join(fmt(num(cpu[k][0]), "{:.1f}") if k in cpu else "n/a" for k in keys)

rows = []
def ratio_row(stage, r, p, target, why, cpu_r, cpu_p):
    ratio = r / p if p and not math.isnan(r) and not math.isnan(p) else math.nan
    result = why or ("n/a" if math.isnan(ratio) else "met" if ratio >= target else "missed")
    rows.append((stage, fmt(r), fmt(p), fmt(ratio, "{:.2f}"), f">= {target:g}x", result,
                 f"{cpu_r} / {cpu_p}"))

if ",smtp," in only:
    r = figure("ringmail", 0)
    ratio_row("SMTP ingest msgs/s: ringmail (fsync always) vs smtp-sink", r, figure("sink", 0),
              0.8, failed("ringmail", "sink"), c("ringmail"), c("sink"))
    n, s, acc = (num(x) for x in note.get("delivered", ["nan"] * 3))
    short = "" if math.isnan(n) or n >= acc else f"missed: Dovecot delivered {n:.0f} of {acc:.0f} in time"
    ratio_row("SMTP ingest msgs/s: ringmail vs Postfix→LMTP→Dovecot delivered, end to end", r,
              n / s if s else math.nan, 10, failed("ringmail", "postfix") or short, c("ringmail"),
              c("postfix", "postfix_dovecot"))
    p = figure("postfix", 0)
    rows.append(("  (Postfix accepted msgs/s, as the client saw it)", fmt(r), fmt(p),
                 fmt(r / p if p else math.nan, "{:.2f}"), "", failed("postfix"), ""))
    landed, ok = num(note.get("landed", ["nan"])[0]), figure("ringmail", 1)
    peer_landed, peer_ok = num(note.get("dovecot_landed", ["nan"])[0]), figure("postfix", 1)
    rows.append(("accepted messages found stored afterwards (IMAP STATUS)",
                 f"{fmt(landed)} of {fmt(ok)}", f"{fmt(peer_landed)} of {fmt(peer_ok)}", "", "all",
                 failed("ringmail") or ("met" if landed == ok and ok > 0 else "missed"), ""))
    p99_ms = figure("latency", 2) / 1000
    half = note.get("half", ["?"])[0]
    rows.append((f"p99 DATA→250 ms, ringmail at half b)'s rate ({half} msgs/s offered)",
                 fmt(p99_ms, "{:.2f}"), "", "", "<= 5 ms",
                 failed("latency") or ("n/a" if math.isnan(p99_ms) else "met" if p99_ms <= 5 else "missed"),
                 c("latency")))
    sched_ms = figure("latency_sched", 2) / 1000
    rows.append(("  (p99 ms from each message's scheduled start: + waiting for a free connection)",
                 fmt(sched_ms, "{:.2f}"), "", "", "", "", ""))
if ",imap," in only:
    ratio_row("IMAP commands/s, persistent sessions: ringmail vs Dovecot", figure("imap-ringmail", 0),
              figure("imap-dovecot", 0), 2, failed("imap-ringmail", "imap-dovecot"),
              c("imap-ringmail"), c("imap-dovecot"))
if ",pop3," in only:
    ratio_row("POP3 RETR/s: ringmail vs Dovecot", figure("pop3-ringmail", 0), figure("pop3-dovecot", 0),
              2, failed("pop3-ringmail", "pop3-dovecot"), c("pop3-ringmail"), c("pop3-dovecot"))
    lat = [fmt(figure(k, i) / 1000, "{:.1f}") for k in ("pop3-ringmail-login", "pop3-dovecot-login") for i in (6, 2)]
    rows.append(("  (POP3 login latency ms, p50 / p99: one login per 10 RETRs)", f"{lat[0]} / {lat[1]}",
                 f"{lat[2]} / {lat[3]}", "", "", "", ""))

print("| stage | ringmail | peer | ratio | target | result | server CPU s (ringmail / peer) |")
print("|---|---:|---:|---:|---|---|---:|")
for row in rows:
    print("| " + " | ".join(row) + " |")
problems, aborted = [], []
for key, name in (("sink", "smtp-sink"), ("ringmail", "ringmail SMTP"), ("postfix", "Postfix SMTP"),
                  ("latency", "ringmail SMTP at half rate"), ("imap-ringmail", "ringmail IMAP"),
                  ("imap-dovecot", "Dovecot IMAP"), ("pop3-ringmail", "ringmail POP3"),
                  ("pop3-dovecot", "Dovecot POP3")):
    e, r, a = figure(key, 3), figure(key, 4), figure(key, 5)
    if e > 0 or r > 0:
        problems.append(f"{name} {e:.0f} / {r:.0f}")
    if a > 0:
        aborted.append(f"{name} {a:.0f}")
print()
print("Connection errors / refused operations: " + ("; ".join(problems) if problems else "none") + ". "
      "Operations in flight when a run ended or its connection failed (not counted): "
      + ("; ".join(aborted) if aborted else "none") + ".")
if sys.argv[3] == "argon2id" and (",imap," in only or ",pop3," in only):
    print("Both servers verify the same argon2id hashes. Dovecot (apt defaults: no auth cache, and its "
          "cache would keep the hash, not the verification) hashes in its single auth process at every "
          "login; ringmail remembers a verified login per core. DOVECOT_SCHEME=plain gives Dovecot "
          "cheap logins instead.")
PY
