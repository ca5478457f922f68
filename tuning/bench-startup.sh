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
msgs=${1:-1000000}
size=${2:-1024}
users=${3:-20}
cargo build --release -q -p ringmail -p ringmail-loadgen
bin=target/release
work=$(mktemp -d /tmp/ringmail-startup.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/r.toml" <<TOML
[server]
hostname = "mx.example.test"
data_dir = "$work/data"
[smtp]
listen = ["127.0.0.1:$port"]
[domains]
local = ["example.test"]
[store]
fsync = "never"     # the fill only; recovery reads the same files either way
TOML
to=()
for i in $(seq "$users"); do
  echo "pw-$i" | "$bin/ringmail" user add "u$i@example.test" --password-stdin --config "$work/r.toml" >/dev/null
  to+=(--to "u$i@example.test")
done

start() { # label -> prints recovery line and RSS
  "$bin/ringmail" serve --config "$work/r.toml" >"$work/serve.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do grep -q '^ready' "$work/serve.log" && break; sleep 0.1; done
  grep -q '^ready' "$work/serve.log" || { cat "$work/serve.log"; exit 1; }
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
stop
find "$work/data" -name '*.ckpt' -delete
start "restart, full scan (checkpoints removed)"
python3 -c "print(f'index RAM ≈ {($rss - $empty_rss) * 1024 / $msgs:.1f} bytes/message (RSS difference / messages)')"
du -sh "$work/data" | sed 's/^/on disk: /'
stop
