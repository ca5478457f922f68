#!/usr/bin/env bash
# Side-by-side SMTP ingest: ringmail (durable, fsync = "always") vs Postfix's smtp-sink (the
# protocol-only ceiling: it stores nothing) and vs `ringmail-loadgen sink` (the durable
# ceiling of this disk: one log, write + fdatasync per group of messages before each 250,
# nothing else), same load generator, same run, same machine.
#
#   tuning/bench-smtp-ingest.sh [connections=20] [messages=40000] [size=2048]
#   PLACEMENT='[1]' tuning/bench-smtp-ingest.sh ...   ringmail on the listed cores only
#       ([cores] placement; default: every core), to compare placements on a small VM that
#       also runs the load generator (tuning/results/2026-11-22-ingest-gap.md).
#   FSYNC_WAIT=inline tuning/bench-smtp-ingest.sh ...   ringmail with [store] fsync_wait =
#       "inline" (default io_uring; tuning/README.md).
#   CPU_WAKEUP_US_MAX=0 tuning/bench-smtp-ingest.sh ...   the whole run (all three servers)
#       under a PM QoS request of that many µs (idle CPUs poll instead of halting; needs root),
#       and ringmail with [server] cpu_wakeup_us_max set to it (tuning/README.md).
#   ROUNDS=3 tuning/bench-smtp-ingest.sh ...   the three runs interleaved 3 times, then the
#       median ratios (this VM's noise moves any one figure by ±15 %).
#   BENCH_DIR=/srv/mail tuning/bench-smtp-ingest.sh ...   put ringmail's data directory (and
#       the run's scratch files) under BENCH_DIR instead of /tmp: benchmark the disk the mail
#       will live on, since durable ingest is bound by that disk's flush latency.
#
# Needs: postfix installed (for /usr/sbin/smtp-sink; `apt-get install postfix`). Builds
# ringmail and ringmail-loadgen in release mode. Everything listens on 127.0.0.1 only, every
# process is stopped by pid, and every load run is bounded by --messages and --duration-secs.
set -euo pipefail
cd "$(dirname "$0")/.."
. tuning/lib.sh
conns=${1:-20}
msgs=${2:-40000}
size=${3:-2048}
[ -x /usr/sbin/smtp-sink ] || { echo "smtp-sink not found: apt-get install postfix" >&2; exit 2; }

cargo build --release -q -p ringmail -p ringmail-loadgen
bin=${CARGO_TARGET_DIR:-target}/release # where cargo build just put them
work=$(mktemp -d "${BENCH_DIR:-/tmp}/ringmail-bench.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
if [ -n "${CPU_WAKEUP_US_MAX:-}" ]; then
  hold_cpu_wakeup "$CPU_WAKEUP_US_MAX" || exit 2
  pids+=("$wakeup_pid")
  echo "idle CPUs held to a ${CPU_WAKEUP_US_MAX} µs wake-up for the whole run"
fi

load() { # target json
  "$bin/ringmail-loadgen" smtp --target "$1" --connections "$conns" --messages "$msgs" \
    --size "$size" --to alice@example.test --threads 1 --duration-secs 120 --quiet --json "$2"
}

rounds=${ROUNDS:-1}
: >"$work/figures"
for round in $(seq "$rounds"); do
  [ "$rounds" -gt 1 ] && echo "######## round $round of $rounds"

  echo "== smtp-sink (no storage) =="
  port=$(free_port)
  /usr/sbin/smtp-sink -c -u "$(id -un)" "127.0.0.1:$port" 1024 >/dev/null 2>&1 &
  pids+=($!); sleep 0.5
  load "127.0.0.1:$port" "$work/sink.json" | tee "$work/sink.txt"
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

  echo "== ringmail-loadgen sink (durable: one log, write + fdatasync per group) =="
  "$bin/ringmail-loadgen" sink --listen 127.0.0.1:0 --dir "$work/dsink" >"$work/dsink.out" 2>&1 &
  pids+=($!)
  for _ in $(seq 300); do grep -q '^listening on ' "$work/dsink.out" && break; sleep 0.1; done
  load "$(sed -n 's/^listening on //p' "$work/dsink.out")" "$work/dsink.json" | tee "$work/dsink.txt"
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; rm -rf "$work/dsink"

  echo "== ringmail (fsync = always) =="
  port=$(free_port)
  rm -rf "$work/data"
  write_config "$work/ringmail.toml" "$work/data" "$port" always
  if [ -n "${PLACEMENT:-}" ]; then printf '[cores]\nplacement = %s\n' "$PLACEMENT" >>"$work/ringmail.toml"; fi
  echo 'bench-password' | "$bin/ringmail" user add alice@example.test --password-stdin --config "$work/ringmail.toml" >/dev/null
  start_ringmail "$bin/ringmail" "$work/ringmail.toml" "$work/serve.log"
  pids+=("$ringmail_pid")
  load "127.0.0.1:$port" "$work/ringmail.json" | tee "$work/ringmail.txt"
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

  sink=$(grep -o 'throughput=[0-9.]*' "$work/sink.txt" | cut -d= -f2)
  ring=$(grep -o 'throughput=[0-9.]*' "$work/ringmail.txt" | cut -d= -f2)
  dsink=$(grep -o 'throughput=[0-9.]*' "$work/dsink.txt" | cut -d= -f2)
  echo "$sink $dsink $ring" >>"$work/figures"
  python3 -c "print(f'ratio ringmail(durable)/smtp-sink = {float($ring)/float($sink):.2f}  ({float($ring):.0f} vs {float($sink):.0f} msg/s, {$conns} connections, {$size} B)')"
  python3 -c "print(f'ratio durable sink/smtp-sink = {float($dsink)/float($sink):.2f}, ringmail/durable sink = {float($ring)/float($dsink):.2f}  ({float($dsink):.0f} msg/s)')"
done

if [ "$rounds" -gt 1 ]; then
  python3 - "$work/figures" <<'PY'
import statistics, sys
rows = [[float(x) for x in line.split()] for line in open(sys.argv[1]) if line.strip()]
med = lambda xs: statistics.median(xs)
print(f"median of {len(rows)} rounds: ringmail/smtp-sink = {med([r[2] / r[0] for r in rows]):.2f}"
      f" (per round: {', '.join(f'{r[2] / r[0]:.2f}' for r in rows)}),"
      f" durable sink/smtp-sink = {med([r[1] / r[0] for r in rows]):.2f},"
      f" ringmail/durable sink = {med([r[2] / r[1] for r in rows]):.2f}")
PY
fi
