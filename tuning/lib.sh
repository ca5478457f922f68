# Shared by the tuning/ benchmark scripts (source it; it defines functions only).

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# write_config FILE DATA_DIR PORT FSYNC [IMAP_PORT POP3_PORT]: a ringmail config for local
# domain example.test, SMTP on 127.0.0.1:PORT (and IMAP and POP3 when their ports are given).
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
  if [ $# -ge 6 ]; then
    cat >>"$1" <<TOML
[imap]
listen = ["127.0.0.1:$5"]
[pop3]
listen = ["127.0.0.1:$6"]
TOML
  fi
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

# imap_ready HOST PORT: waits (at most 15 s) for an IMAP greeting on HOST:PORT.
imap_ready() {
  python3 - "$1" "$2" <<'PY'
import socket, sys, time
deadline = time.time() + 15
while time.time() < deadline:
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as s:
            if s.recv(512).startswith(b"* OK"):
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(1)
PY
}

# require_imaptest USAGE: exits 2 with how to build imaptest unless $IMAPTEST is executable;
# USAGE is the command line shown at the end.
require_imaptest() {
  [ -n "${IMAPTEST:-}" ] && [ -x "$IMAPTEST" ] && return 0
  cat >&2 <<TEXT
IMAPTEST must name an imaptest binary. Dovecot's imaptest is not packaged: build it outside the
repository (never commit it) from github.com/dovecot/imaptest, branch release-2.3, against apt's
dovecot-dev 2.3.19, with a one-line fix at each imap_parser_create() call (2.3.19 takes a fourth
argument, the parser params: pass NULL); it runs with LD_LIBRARY_PATH=/usr/lib/dovecot.
The exact steps are in tuning/imaptest.md (and the imaptest notes in PLATFORM.md). Then:
  $1
TEXT
  exit 2
}
