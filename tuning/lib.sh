# Shared by the tuning/ benchmark scripts (source it; it defines functions only).

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# write_config FILE DATA_DIR PORT FSYNC: a ringmail config for local domain example.test.
write_config() {
  cat >"$1" <<TOML
[server]
hostname = "mx.example.test"
data_dir = "$2"
[smtp]
listen = ["127.0.0.1:$3"]
[domains]
local = ["example.test"]
[store]
fsync = "$4"
TOML
}

# start_ringmail BIN CONFIG LOG: starts serve in the background, sets $ringmail_pid, and waits
# (at most 60 s) for it to print `ready`; on failure shows the log and returns 1.
start_ringmail() {
  "$1" serve --config "$2" >"$3" 2>&1 &
  ringmail_pid=$!
  for _ in $(seq 600); do grep -q '^ready' "$3" && return 0; sleep 0.1; done
  cat "$3" >&2
  return 1
}
