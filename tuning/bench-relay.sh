#!/usr/bin/env bash
# Relay throughput, ringmail against Postfix (issue 5, point 8): messages/s from "submitted" to
# "delivered to the final destination", both relaying to the same Postfix `smtp-sink` (which
# stores nothing) in the same run, with the same client, message size, connections and count.
#
#   RINGMAIL_BIN=/tmp/t-relaybench/release/ringmail tuning/bench-relay.sh \
#       [connections=20] [messages=20000] [size=2048]
#
# (a) ringmail, `store.fsync = "always"`, submission listener with plaintext AUTH allowed
#     (loopback), `[relay] smarthost` = the sink: the client AUTHs (PLAIN) once per connection
#     as alice@example.test and sends from her address, as a submission client would.
# (b) a private Postfix (`postfix -c DIR/etc`, own queue), `relayhost = [127.0.0.1]:sink`,
#     `mynetworks = 127.0.0.0/8`: the same client, without AUTH (Postfix relays for loopback).
# Every message has one recipient at the remote domain relay.test (REMOTE_DOMAINS=K spreads
# them round-robin over K domains d1.relay.test ... dK.relay.test: ringmail's connection limit
# is per destination domain, Postfix's per relayhost). The client is an asyncio Python SMTP
# client in this file: ringmail-loadgen cannot AUTH, and Postfix's smtp-source cannot either.
# It pipelines MAIL/RCPT/DATA when offered, like loadgen, and polls the sink's `-c` counter
# until all messages have arrived (at most WAIT_SECS=300 after the last 250).
# First the client goes straight at the sink: its own ceiling, so a server figure close to it
# would be the client's limit, not the server's.
#
# Env: RINGMAIL_BIN (required: a release build, e.g. from CARGO_TARGET_DIR=/tmp/t-relaybench),
# RELAY_CONNS (ringmail's [relay] connections_per_domain_max, default 10: its default),
# REMOTE_DOMAINS (1), WAIT_SECS (300), ORDER (ringmail-first | postfix-first), RINGMAIL_FSYNC
# (always; "never" only to see what fsync costs: Postfix always syncs its queue files),
# RELAY_RETRY ('"1s"': ringmail's [relay] retry list; unset: its default, 5m first),
# OUT (a directory to keep configs and logs in).
# Needs root (smtp-sink -u nobody, Postfix's master) and postfix installed. Everything listens
# on 127.0.0.1; every process started here is stopped by pid; every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
. tuning/lib.sh
conns=${1:-20}
msgs=${2:-20000}
size=${3:-2048}
relay_conns=${RELAY_CONNS:-10}
domains=${REMOTE_DOMAINS:-1}
wait_secs=${WAIT_SECS:-300}
fsync=${RINGMAIL_FSYNC:-always}
retry=${RELAY_RETRY:-} # e.g. '"1s"': [relay] retry (unset: ringmail's default schedule, 5m first)
bin=${RINGMAIL_BIN:-}
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "RINGMAIL_BIN must name a ringmail release binary, e.g.:" >&2
  echo "  CARGO_TARGET_DIR=/tmp/t-relaybench cargo build --release -p ringmail" >&2
  echo "  RINGMAIL_BIN=/tmp/t-relaybench/release/ringmail $0" >&2
  exit 2
fi
if [ ! -x /usr/sbin/smtp-sink ] || ! command -v postfix >/dev/null; then
  echo "postfix not found: apt-get install postfix" >&2
  exit 2
fi
[ "$(id -u)" = 0 ] || { echo "run as root (Postfix's master, smtp-sink -u nobody)" >&2; exit 2; }

work=$(mktemp -d /tmp/ringmail-relay.XXXXXX)
chmod 711 "$work" # Postfix's daemons (user postfix) open files below it
sink_pid='' ringmail_pid='' postfix_dir=''
cleanup() {
  [ -n "$postfix_dir" ] && stop_postfix "$postfix_dir"
  for p in $ringmail_pid $sink_pid; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    cp -r "$work"/*.toml "$work"/*.log "$work"/*.json "$work"/queue-* "$OUT"/ 2>/dev/null || true
    cp -r "$work/postfix/etc/main.cf" "$work/postfix/etc/master.cf" "$work/postfix/log" "$OUT"/ 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# load TARGET JSON [USER PASS]: the client below; prints one summary line, writes JSON.
load() {
  python3 - "$1" "$conns" "$msgs" "$size" "$domains" "$work/sink.out" "$wait_secs" "$2" \
    "${3:-}" "${4:-}" <<'PY'
import asyncio, base64, json, os, sys, time
target, conns, total, size, domains, sink_file, wait_secs, json_file, user, password = sys.argv[1:]
conns, total, size, domains, wait_secs = int(conns), int(total), int(size), int(domains), float(wait_secs)
host, port = target.rsplit(":", 1)
sender = user or "sender@load.test"
rcpts = (["rcpt@relay.test"] if domains == 1
         else [f"rcpt@d{i}.relay.test" for i in range(1, domains + 1)])

def sink_counters():
    """(sessions, messages) so far: the last `sess=S quit=Q mesg=M` line of smtp-sink -c."""
    try:
        with open(sink_file, "rb") as f:
            f.seek(max(0, os.path.getsize(sink_file) - 200))
            tail = f.read().replace(b"\r", b"\n").split(b"\n")
    except OSError:
        return 0, 0
    for line in reversed(tail):
        if b"mesg=" in line and line.startswith(b"sess="):
            fields = dict(kv.split(b"=") for kv in line.split())
            return int(fields[b"sess"]), int(fields[b"mesg"])
    return 0, 0

def sink_count():
    return sink_counters()[1]

def message(seq, rcpt):
    # Exactly `size` bytes before the final ".\r\n", CRLF lines, nothing to dot-stuff.
    head = (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: relay bench {seq:010d}\r\n"
            f"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n"
            f"Message-ID: <{seq:010d}.{run_id}@bench.test>\r\n\r\n").encode()
    left = size - len(head)
    line = (b"abcdefghijklmnopqrstuvwxyz0123456789" * 3)[:76] + b"\r\n"
    body = line * (left // len(line))
    rest = left - len(body)
    if rest >= 2:
        body += b"x" * (rest - 2) + b"\r\n"
    return head + body + b".\r\n"

run_id = f"{os.getpid()}{int(time.time())}"
next_seq, accepted, rejected, errors = 0, 0, 0, []

async def reply(reader):
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        lines.append(line)
        if line[3:4] != b"-":
            return int(line[:3]), b"".join(lines)

async def session():
    global next_seq, accepted, rejected
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        code, _ = await reply(reader)
        writer.write(b"EHLO bench.test\r\n")
        code, ehlo = await reply(reader)
        pipelining = b"PIPELINING" in ehlo.upper()
        if user:
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            writer.write(f"AUTH PLAIN {token}\r\n".encode())
            code, text = await reply(reader)
            if code != 235:
                raise ConnectionError(f"AUTH: {text!r}")
        while next_seq < total:
            seq = next_seq
            next_seq += 1
            rcpt = rcpts[seq % len(rcpts)]
            cmds = [f"MAIL FROM:<{sender}>\r\n".encode(), f"RCPT TO:<{rcpt}>\r\n".encode(), b"DATA\r\n"]
            codes = []
            if pipelining:
                writer.write(b"".join(cmds))
                for _ in cmds:
                    codes.append((await reply(reader)))
            else:
                for c in cmds:
                    writer.write(c)
                    codes.append(await reply(reader))
                    if codes[-1][0] >= 400:
                        break
            if codes[-1][0] == 354:
                writer.write(message(seq, rcpt))
                codes.append(await reply(reader))
            if codes[-1][0] == 250 and len(codes) == 4:
                accepted += 1
            else:
                rejected += 1
                if len(errors) < 5:
                    errors.append(b" | ".join(t.strip() for _, t in codes).decode(errors="replace"))
                if codes[-1][0] != 250 or len(codes) < 4:
                    writer.write(b"RSET\r\n")
                    await reply(reader)
        writer.write(b"QUIT\r\n")
        await reply(reader)
    finally:
        writer.close()

reached = {}  # fraction of the messages -> seconds after the start when the sink had them

async def watch(base, t0, stop):
    # Every 20 ms while the load runs: when the sink reached 50/90/99 % of the messages.
    while not stop.is_set():
        n = sink_count() - base
        for q in (0.5, 0.9, 0.99):
            if q not in reached and n >= q * total:
                reached[q] = time.monotonic() - t0
        try:
            await asyncio.wait_for(stop.wait(), 0.02)
        except asyncio.TimeoutError:
            pass

async def main():
    base_sessions, base = sink_counters()
    t0 = time.monotonic()
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(base, t0, stop))
    results = await asyncio.wait_for(
        asyncio.gather(*(session() for _ in range(conns)), return_exceptions=True),
        timeout=600)
    t_submitted = time.monotonic()
    at_last_250 = sink_count() - base
    for r in results:
        if isinstance(r, Exception) and len(errors) < 5:
            errors.append(f"session: {r!r}")
    delivered, t_delivered = sink_count() - base, None
    deadline = t_submitted + wait_secs
    while delivered < accepted and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        delivered = sink_count() - base
    if delivered >= accepted:
        t_delivered = time.monotonic()
    await asyncio.sleep(0.05)
    stop.set()
    await watcher
    sub_secs = t_submitted - t0
    out = {"messages": total, "accepted": accepted, "rejected": rejected,
           "submitted_secs": round(sub_secs, 3), "submitted_per_sec": round(accepted / sub_secs, 1),
           "delivered": delivered, "sink_sessions": sink_counters()[0] - base_sessions,
           "delivered_at_last_250": at_last_250,
           "secs_to_50_90_99_pct": [None if q not in reached else round(reached[q], 3)
                                     for q in (0.5, 0.9, 0.99)],
           "delivered_secs": None if t_delivered is None else round(t_delivered - t0, 3),
           "delivered_per_sec": None if t_delivered is None else round(delivered / (t_delivered - t0), 1),
           "errors": errors}
    json.dump(out, open(json_file, "w"))
    print(f"accepted={accepted}/{total} rejected={rejected} submitted in {sub_secs:.2f} s "
          f"({out['submitted_per_sec']}/s); delivered={delivered} "
          + (f"all in {out['delivered_secs']} s ({out['delivered_per_sec']}/s)" if t_delivered
             else f"NOT all within {wait_secs:.0f} s after the last 250"))
    for e in errors:
        print("  error:", e)

asyncio.run(main())
PY
}

# The final destination for both.
sink_port=$(free_port)
/usr/sbin/smtp-sink -c -u nobody "127.0.0.1:$sink_port" 1024 >"$work/sink.out" 2>&1 &
sink_pid=$!
smtp_ready 127.0.0.1 "$sink_port" || { echo "smtp-sink did not start" >&2; exit 1; }

echo "== (0) the client straight at smtp-sink: the client's own ceiling on this machine now =="
load "127.0.0.1:$sink_port" "$work/direct.json" | tee "$work/direct.txt"

cpu_ring=0 cpu_pf=0 queued='?' pf_queued='?' postfix_dir_done=''
run_ringmail() {
  echo "== (a) ringmail: submission + AUTH PLAIN -> queue (fsync $fsync) -> smarthost smtp-sink =="
  port=$(free_port)
  dead_dns=$(free_port) # nothing listens there: nothing may query the system resolver
  cat >"$work/ringmail.toml" <<TOML
[server]
hostname = "mx.example.test"
data_dir = "$work/data"
[smtp]
listen = []
[submission]
listen = ["127.0.0.1:$port"]
listen_tls = []
allow_plaintext_auth = true
[imap]
listen = []
listen_tls = []
[pop3]
listen = []
listen_tls = []
[domains]
local = ["example.test"]
[store]
fsync = "$fsync"
[relay]
smarthost = "127.0.0.1:$sink_port"
connections_per_domain_max = $relay_conns
${retry:+retry = [$retry]}
[dns]
servers = ["127.0.0.1:$dead_dns"]
TOML
  echo 'bench-password' | "$bin" user add alice@example.test --password-stdin \
    --config "$work/ringmail.toml" >/dev/null
  start_ringmail "$bin" "$work/ringmail.toml" "$work/ringmail.log"
  before=$(tree_cpu_seconds "$ringmail_pid")
  load "127.0.0.1:$port" "$work/ringmail.json" alice@example.test bench-password |
    tee "$work/ringmail.txt"
  cpu_ring=$(python3 -c "print(f'{$(tree_cpu_seconds "$ringmail_pid") - $before:.2f}')")
  # What is left in the queue after the run (the server keeps running: the list is read offline).
  sleep 1.5
  "$bin" queue list --config "$work/ringmail.toml" >"$work/queue-list.txt" 2>"$work/queue-list.err" || true
  queued=$(grep -oE '^[0-9]+' "$work/queue-list.err" || echo '?')
  kill "$ringmail_pid"
  wait "$ringmail_pid" 2>/dev/null || true
  ringmail_pid=
}

run_postfix() {
  echo "== (b) Postfix: smtpd (mynetworks, no AUTH) -> queue -> relayhost smtp-sink =="
  port=$(free_port)
  postfix_dir="$work/postfix"
  mkdir -p "$postfix_dir"
  write_postfix_config "$postfix_dir" "$port" "[127.0.0.1]:$sink_port"
  start_postfix "$postfix_dir" "$port"
  before=$(tree_cpu_seconds "$postfix_pid")
  load "127.0.0.1:$port" "$work/postfix.json" | tee "$work/postfix.txt"
  cpu_pf=$(python3 -c "print(f'{$(tree_cpu_seconds "$postfix_pid") - $before:.2f}')")
  sleep 1.5
  pf_queued=$(find "$postfix_dir/queue/"{incoming,active,deferred,hold,maildrop} -type f 2>/dev/null | wc -l)
  stop_postfix "$postfix_dir"
  postfix_dir_done=$postfix_dir
  postfix_dir=
}

if [ "${ORDER:-ringmail-first}" = postfix-first ]; then run_postfix; run_ringmail; else run_ringmail; run_postfix; fi

echo "== results: $conns connections, $msgs messages of $size B, $domains remote domain(s), ringmail fsync=$fsync relay connections_per_domain_max=$relay_conns retry=[${retry:-default}] =="
python3 - "$work/ringmail.json" "$work/postfix.json" "$work/direct.json" "$cpu_ring" "$cpu_pf" "$queued" "$pf_queued" <<'PY'
import json, sys
r, p, d = (json.load(open(f)) for f in sys.argv[1:4])
cpu = [float(sys.argv[4]), float(sys.argv[5])]
left = sys.argv[6:8]
def f(v, fmt="{:.0f}"):
    return "n/a" if v is None else fmt.format(v)
def tail(x):
    return None if x["delivered_secs"] is None else x["delivered_secs"] - x["submitted_secs"]
def pct(x):
    return " / ".join("-" if v is None else f"{v:.1f}" for v in x["secs_to_50_90_99_pct"])
def ratio(a, b):
    return "n/a" if a is None or not b else f"{a / b:.2f}"
rows = [
    ("accepted (250) / rejected", f"{r['accepted']} / {r['rejected']}", f"{p['accepted']} / {p['rejected']}", ""),
    ("submitted msgs/s (client: all 250s)", f(r["submitted_per_sec"]), f(p["submitted_per_sec"]), ratio(r["submitted_per_sec"], p["submitted_per_sec"])),
    ("delivered to the sink", str(r["delivered"]), str(p["delivered"]), ""),
    ("wall s until all delivered", f(r["delivered_secs"], "{:.2f}"), f(p["delivered_secs"], "{:.2f}"), ""),
    ("  of which after the last 250", f(tail(r), "{:.2f}"), f(tail(p), "{:.2f}"), ""),
    ("submitted -> delivered msgs/s", f(r["delivered_per_sec"]), f(p["delivered_per_sec"]), ratio(r["delivered_per_sec"], p["delivered_per_sec"])),
    ("delivered when the last 250 came", str(r["delivered_at_last_250"]), str(p["delivered_at_last_250"]), ""),
    ("s until 50 / 90 / 99 % delivered", pct(r), pct(p), ""),
    ("SMTP sessions ended at the sink", str(r["sink_sessions"]), str(p["sink_sessions"]), ""),
    ("server CPU s (process tree)", f"{cpu[0]:.2f}", f"{cpu[1]:.2f}", ratio(cpu[0], cpu[1])),
    ("server CPU ms per message", f(1000 * cpu[0] / max(1, r["delivered"]), "{:.3f}"), f(1000 * cpu[1] / max(1, p["delivered"]), "{:.3f}"), ratio(cpu[0] / max(1, r["delivered"]), cpu[1] / max(1, p["delivered"]))),
    ("left in the queue afterwards", left[0], left[1], ""),
]
print(f"| {'':38} | {'ringmail':>16} | {'Postfix':>16} | {'R / P':>6} |")
print(f"|{'-' * 40}|{'-' * 17}:|{'-' * 17}:|{'-' * 7}:|")
for name, a, b, c in rows:
    print(f"| {name:38} | {a:>16} | {b:>16} | {c:>6} |")
print(f"client straight at the sink (its ceiling): {d['submitted_per_sec']:.0f} msgs/s, "
      f"{d['accepted']}/{d['messages']} accepted")
for who, x in (("ringmail", r), ("Postfix", p), ("direct", d)):
    for e in x["errors"]:
        print(f"{who} client error: {e}")
PY
echo "== ringmail log lines other than startup and shutdown (count; queue ids as ID, numbers as N) =="
grep -v -e '^ready' -e '^ringmail [0-9.]*: hostname' -e '^ringmail: generated a self-signed' \
  -e '^ringmail: recovered' -e ' listening on ' -e '^ringmail: shutting down' "$work/ringmail.log" |
  sed -E 's/[0-9]+-[0-9A-F]+/ID/g; s/[0-9]+/N/g' | sort | uniq -c | sort -rn | head -10 || true
echo "== ringmail queue list after the run: entries by last error, then the first lines =="
cut -f6 "$work/queue-list.txt" | sort | uniq -c | sort -rn | head -5
head -3 "$work/queue-list.txt"
echo "== Postfix warnings/errors =="
grep -E 'warning|error|fatal|panic' "$postfix_dir_done/log/postfix.log" | head -10 || true
