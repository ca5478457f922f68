#!/usr/bin/env bash
# Start-up time and index memory at scale: fill a store with N messages through SMTP, then
# restart ringmail (a) from its checkpoint and (b) with the checkpoints removed (full meta-log
# scan), reading the recovery time ringmail prints and the process RSS once it is ready.
#
#   tuning/bench-startup.sh [messages=1000000] [size=1024] [users=20]
#
# Disk: about messages × (size + 300) bytes under a temp dir. Loopback only; every process is
# stopped by pid; the fill is bounded by --messages and --duration-secs.
set -euo pipefail
cd "$(dirname "$0")/.."
. tuning/lib.sh
msgs=${1:-1000000}
size=${2:-1024}
users=${3:-20}
cargo build --release -q -p ringmail -p ringmail-loadgen
bin=${CARGO_TARGET_DIR:-target}/release # where cargo build just put them
work=$(mktemp -d /tmp/ringmail-startup.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
port=$(free_port)
# fsync never for the fill only; recovery reads the same files either way.
write_config "$work/r.toml" "$work/data" "$port" never
to=()
for i in $(seq "$users"); do
  echo "pw-$i" | "$bin/ringmail" user add "u$i@example.test" --password-stdin --config "$work/r.toml" >/dev/null
  to+=(--to "u$i@example.test")
done

start() { # label -> prints recovery line and RSS
  start_ringmail "$bin/ringmail" "$work/r.toml" "$work/serve.log"
  pid=$ringmail_pid
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  echo "$1: $(grep 'recovered' "$work/serve.log" | sed 's/^ringmail: //'); RSS ${rss} kB"
}
stop() { kill "$pid"; wait "$pid" || true; pid=; }

start "empty store"
empty_rss=$rss
"$bin/ringmail-loadgen" smtp --target "127.0.0.1:$port" --connections 20 --messages "$msgs" \
  --size "$size" "${to[@]}" --threads 1 --duration-secs 1200 | grep -E 'sent=|throughput'
stop
start "restart from checkpoint"
ready_rss=$rss   # steady state: the full-scan start below also holds scan buffers the allocator keeps
stop
find "$work/data" -name '*.ckpt' -delete
start "restart, full scan (checkpoints removed)"
python3 -c "print(f'index RAM ≈ {($ready_rss - $empty_rss) * 1024 / $msgs:.1f} bytes/message (RSS after the checkpoint start minus empty, / messages)')"
du -sh "$work/data" | sed 's/^/on disk: /'
stop
