#!/usr/bin/env bash
# TLS benchmark (issue 4, point 7): TLS handshakes/s and encrypted IMAP throughput, ringmail
# against a private Dovecot from apt, with ONE certificate (generated here with openssl) served
# by both, in the same run, on the same machine.
#
#   IMAPTEST=/tmp/imaptest-build/src/imaptest RINGMAIL_BIN=/tmp/t-tlsbench/release/ringmail \
#     tuning/bench-tls.sh [parallel=4] [handshake_secs=10] [users=50] [clients=20] [secs=20]
#
# 1. Negotiated parameters: `openssl s_client -brief` against each IMAPS port (TLS 1.3 by
#    default, and once more with -tls1_2); both servers must present the same certificate.
# 2. Handshakes: `parallel` copies of `openssl s_time -connect 127.0.0.1:PORT -new -time
#    handshake_secs` at once (-new: a full handshake per connection, no resumption);
#    handshakes/s = the connections they report, summed, / the wall time of the whole batch.
# 3. Encrypted IMAP: imaptest over implicit TLS (`ssl=any-cert`), persistent sessions
#    (logout=0), the profile and seed of bench-imap.sh ("default"), and a FETCH-heavy mix
#    ("fetch": FETCH=100,50 FETCH2=100,80, i.e. FETCH repeated with probability 50 % and FETCH2
#    -- one message's header, body or part -- with 80 %, the rest as default): commands/s and
#    fetches/s (FETCH + FETCH2 + UID FETCH) over secs.
# For each figure the CPU seconds the server used (its whole process tree, see
# tree_cpu_seconds in lib.sh) and the client's are shown: client and server share the CPUs,
# so the throughput figures are CPU-bound and "server CPU per unit of work" is the steadier
# comparison. The ratio column is ringmail / Dovecot.
#
# Environment:
#   IMAPTEST        imaptest binary (required; tuning/imaptest.md says how to build it)
#   RINGMAIL_BIN    ringmail binary (default target/release/ringmail; build it first with
#                   `cargo build --release`, this script does not build)
#   KEY             rsa (default: RSA 2048, self-signed) | ec (ECDSA P-256)
#   DOVECOT_LOGIN   security (default, apt's: one imap-login process per connection) |
#                   performance (service_count = 0, process_min_avail = nproc)
#   DOVECOT_SCHEME  argon2id (default: the very hashes ringmail stores) | plain
#   FSYNC           ringmail store.fsync: always (default) | never
#   SEED            imaptest's seed= (default 1, as bench-imap.sh; empty: random)
#   MIXES           imaptest mixes to run, "default fetch" (default), or one of them
#   MBOX            mbox imaptest APPENDs from (default: gen_mbox's 500 messages)
#   OUT             keep outputs, configs, logs and the certificate in this directory
#
# Needs dovecot-imapd, openssl and python3; run as root (Dovecot drops privileges). Loopback
# only: every server listens on 127.0.0.1 ports picked free; every process is stopped by pid on
# exit; every client run is bounded by `timeout` and every wait loop by a count.
set -euo pipefail
cd "$(dirname "$0")/.."
. tuning/lib.sh
parallel=${1:-4}
hs_secs=${2:-10}
users=${3:-50}
clients=${4:-20}
secs=${5:-20}
bin=${RINGMAIL_BIN:-target/release/ringmail}
key_type=${KEY:-rsa}
login=${DOVECOT_LOGIN:-security}
scheme=${DOVECOT_SCHEME:-argon2id}
fsync=${FSYNC:-always}
seed=${SEED-1}
mixes=${MIXES:-default fetch}
pass=bench-tls-pass

usage="IMAPTEST=/tmp/imaptest-build/src/imaptest RINGMAIL_BIN=... tuning/bench-tls.sh [parallel=4] [handshake_secs=10] [users=50] [clients=20] [secs=20]"
in_range() { # NAME VALUE LO HI
  if ! [[ $2 =~ ^[0-9]+$ ]] || [ "$2" -lt "$3" ] || [ "$2" -gt "$4" ]; then echo "$1 = $2: must be $3..$4" >&2; exit 2; fi
}
in_range parallel "$parallel" 1 64
in_range handshake_secs "$hs_secs" 1 300
in_range users "$users" 1 1000
in_range clients "$clients" 1 1000
in_range secs "$secs" 1 600
case $key_type in rsa | ec) ;; *) echo "KEY must be rsa or ec" >&2; exit 2 ;; esac
case $login in security | performance) ;; *) echo "DOVECOT_LOGIN must be security or performance" >&2; exit 2 ;; esac
case $scheme in argon2id | plain) ;; *) echo "DOVECOT_SCHEME must be argon2id or plain" >&2; exit 2 ;; esac
for m in $mixes; do case $m in default | fetch) ;; *) echo "MIXES: $m is not default or fetch" >&2; exit 2 ;; esac; done
require_imaptest "$usage"
[ -x "$bin" ] || { echo "no ringmail binary at $bin: cargo build --release (or set RINGMAIL_BIN)" >&2; exit 2; }
[ -x /usr/sbin/dovecot ] || { echo "dovecot not found: apt-get install dovecot-imapd" >&2; exit 2; }
command -v openssl >/dev/null || { echo "openssl not found" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root: the private Dovecot drops privileges to nobody and dovenull" >&2; exit 2; }

work=$(mktemp -d /tmp/ringmail-bench-tls.XXXXXX)
chmod 755 "$work" # Dovecot's auth process (user dovecot) reads the passwd-file in here
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    cp "$work"/*.txt "$work"/*.log "$work"/*.conf "$work"/*.toml "$work"/*.pem "$OUT"/ 2>/dev/null || true
    cp "$work/dovecot/dovecot.log" "$OUT/dovecot-server.log" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# The one certificate both servers serve (the key is readable by Dovecot's login processes
# only through the config, which the master reads as root).
cert=$work/cert.pem
key=$work/key.pem
if [ "$key_type" = rsa ]; then newkey=(-newkey rsa:2048); else newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1); fi
openssl req -x509 "${newkey[@]}" -nodes -days 2 -subj "/CN=mx.example.test" \
  -addext "subjectAltName=DNS:mx.example.test" -keyout "$key" -out "$cert" 2>"$work/openssl-req.log" ||
  { cat "$work/openssl-req.log" >&2; exit 1; }
chmod 644 "$cert"
chmod 600 "$key"

mbox=${MBOX:-$work/bench.mbox}
[ -n "${MBOX:-}" ] || gen_mbox "$mbox" 500

# ringmail: SMTP and plaintext IMAP/POP3 (unused here) plus IMAPS; its users first, whose
# argon2id hashes Dovecot also verifies with DOVECOT_SCHEME=argon2id.
imaps=$(free_port)
write_config "$work/ringmail.toml" "$work/ringmail-data" "$(free_port)" "$fsync" \
  "$(free_port)" "$(free_port)" "$imaps" "$cert" "$key"
for i in $(seq "$users"); do
  echo "$pass" | "$bin" user add "u$i@example.test" --password-stdin --config "$work/ringmail.toml" \
    >/dev/null 2>>"$work/user-add.log" || { cat "$work/user-add.log" >&2; exit 1; }
done

d=$work/dovecot
mkdir -p "$d/mail"
chown 65534:65534 "$d/mail"
dovecot_passwd "$d/passwd" "$scheme" "$users" "$pass" "$work/ringmail-data/users"
dovecot_imap=$(free_port)
dovecot_imaps=$(free_port)
write_dovecot_config "$work/dovecot.conf" "$d" "$dovecot_imap" "$(free_port)" "$dovecot_imaps" \
  "$cert" "$key" "$login"
start_dovecot "$work/dovecot.conf" "$work/dovecot-stdout.log" "$d/dovecot.log" "$dovecot_imap" ||
  { pids+=("$dovecot_pid"); exit 1; }
pids+=("$dovecot_pid")
imaps_ready 127.0.0.1 "$dovecot_imaps" || { cat "$d/dovecot.log" >&2; echo "Dovecot: no IMAPS on $dovecot_imaps" >&2; exit 1; }

start_ringmail "$bin" "$work/ringmail.toml" "$work/ringmail.log" || { pids+=("$ringmail_pid"); exit 1; }
pids+=("$ringmail_pid")
imaps_ready 127.0.0.1 "$imaps" || { cat "$work/ringmail.log" >&2; echo "ringmail: no IMAPS on $imaps" >&2; exit 1; }

echo "Dovecot $(/usr/sbin/dovecot --version) IMAPS 127.0.0.1:$dovecot_imaps (login processes: $login, passwords: $scheme)"
echo "ringmail $("$bin" --version 2>/dev/null | head -1) IMAPS 127.0.0.1:$imaps (fsync = $fsync), binary $bin"
echo "certificate: $(openssl x509 -in "$cert" -noout -subject -fingerprint -sha256 | tr '\n' ' ')"
echo "key: $key_type; $(nproc) CPUs shared by servers and clients; load average $(cut -d' ' -f1-3 /proc/loadavg)"

# Negotiated parameters and the served certificate's fingerprint, per server and version.
declare -A port=([dovecot]=$dovecot_imaps [ringmail]=$imaps)
declare -A pid=([dovecot]=$dovecot_pid [ringmail]=$ringmail_pid)
tls_params() { # SERVER [-tls1_2]
  timeout 10 openssl s_client -connect "127.0.0.1:${port[$1]}" -brief ${2:+"$2"} </dev/null \
    >"$work/s_client-$1$2.txt" 2>&1 || true
  timeout 10 openssl s_client -connect "127.0.0.1:${port[$1]}" ${2:+"$2"} </dev/null 2>/dev/null |
    openssl x509 -noout -fingerprint -sha256 2>/dev/null | cut -d= -f2 | cut -c1-23 >>"$work/s_client-$1$2.txt" || true
  python3 - "$work/s_client-$1$2.txt" <<'PY'
import sys
want = ("Protocol version", "Ciphersuite", "Signature type", "Server Temp Key", "Negotiated TLS1.3 group")
lines = open(sys.argv[1], errors="replace").read().splitlines()
got = {k: v.strip() for k, _, v in (l.partition(":") for l in lines) if k in want}
fp = lines[-1] if lines and lines[-1].count(":") > 3 else "?"
print(" / ".join(got.get(k, "-") for k in want[:4]) + f" / cert {fp}..." if got else "no handshake: " + " | ".join(lines[:3]))
PY
}
echo "negotiated (protocol / cipher suite / signature / key exchange / certificate SHA-256):"
for v in "" -tls1_2; do
  for s in dovecot ringmail; do printf '  %-9s %-8s %s\n' "$s" "${v:-default}" "$(tls_params "$s" "$v")"; done
done

# handshakes SERVER: P parallel `s_time -new`; prints "handshakes/s connections wall_s client_cpu_s failed".
handshakes() {
  python3 - "${port[$1]}" "$parallel" "$hs_secs" "$work/s_time-$1" <<'PY'
import re, resource, subprocess, sys, time
port, parallel, secs, prefix = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cmd = ["timeout", str(secs + 30), "openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time", str(secs)]
before = resource.getrusage(resource.RUSAGE_CHILDREN)
t0 = time.monotonic()
procs = [subprocess.Popen(cmd, stdout=open(f"{prefix}-{i}.txt", "w"), stderr=subprocess.STDOUT) for i in range(parallel)]
codes = [p.wait() for p in procs]
wall = time.monotonic() - t0
after = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
total, failed = 0, 0
for i, code in enumerate(codes):
    text = open(f"{prefix}-{i}.txt", errors="replace").read()
    m = re.search(r"^(\d+) connections in [\d.]+s;", text, re.M)
    if m is None or code != 0:
        failed += 1
    total += int(m.group(1)) if m else 0
print(f"{total / wall:.0f} {total} {wall:.2f} {cpu:.2f} {failed}")
PY
}

# imaptest_run LABEL SERVER [args...]: one imaptest load over TLS, output in $work/LABEL.txt;
# prints "wall_s client_cpu_s client_read_bytes" (rchar of imaptest, sampled every 0.2 s until
# it exits: the TLS records it read, plus its mbox).
imaptest_run() {
  local label=$1 server=$2
  shift 2
  LD_LIBRARY_PATH=/usr/lib/dovecot${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} python3 - "$work/$label.txt" \
    "$((secs + 90))" timeout "$((secs + 90))" "$IMAPTEST" host=127.0.0.1 "port=${port[$server]}" \
    ssl=any-cert "user=u%d@example.test" "pass=$pass" "users=$users" "clients=$clients" \
    "secs=$secs" "mbox=$mbox" ${seed:+"seed=$seed"} logout=0 "$@" <<'PY'
import resource, subprocess, sys, time
out, limit, cmd = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
before = resource.getrusage(resource.RUSAGE_CHILDREN)
t0 = time.monotonic()
p = subprocess.Popen(cmd, stdout=open(out, "w"), stderr=subprocess.STDOUT)
rchar = 0
for _ in range(int(limit * 5) + 50):  # bounded: `timeout` ends imaptest within limit
    try:
        # timeout's child is imaptest: read the rchar of every process in the group
        kids = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
        for k in kids:
            for line in open(f"/proc/{k}/io"):
                if line.startswith("rchar:"):
                    rchar = max(rchar, int(line.split()[1]))
    except OSError:
        pass
    try:
        p.wait(timeout=0.2)
        break
    except subprocess.TimeoutExpired:
        pass
else:
    p.kill()
    p.wait()
wall = time.monotonic() - t0
after = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
if p.returncode != 0:
    print(f"imaptest exited with status {p.returncode}", file=sys.stderr)
print(f"{wall:.2f} {cpu:.2f} {rchar}")
PY
}

alive() { # SERVER: exits with the log when the server has died
  kill -0 "${pid[$1]}" 2>/dev/null && return 0
  echo "$1 (pid ${pid[$1]}) has died; its log:" >&2
  if [ "$1" = ringmail ]; then tail -50 "$work/ringmail.log" >&2; else tail -50 "$d/dovecot.log" >&2; fi
  exit 1
}

declare -A val
cpu_now() { tree_cpu_seconds "${pid[$1]}"; }
# busy_now: CPU seconds the whole machine has been busy (every process, other users' too).
busy_now() { python3 -c "import os; f = [int(x) for x in open('/proc/stat').readline().split()[1:8]]; print((sum(f) - f[3] - f[4]) / os.sysconf('SC_CLK_TCK'))"; }
per() { python3 -c "import sys; a, b, k = map(float, sys.argv[1:]); print(f'{k * a / b:.2f}' if b > 0 else 'nan')" "$@"; } # A B K: K*A/B
echo
echo "handshakes: $parallel x openssl s_time -new -time $hs_secs per server"
for s in dovecot ringmail; do
  c0=$(cpu_now "$s") b0=$(busy_now)
  read -r rate conns wall ccpu failed < <(handshakes "$s")
  c1=$(cpu_now "$s") b1=$(busy_now)
  alive "$s"
  scpu=$(python3 -c "print(f'{$c1 - $c0:.2f}')")
  val[$s-hs]=$rate
  val[$s-hs-ms]=$(per "$scpu" "$conns" 1000)
  val[$s-hs-cores]=$(per "$scpu" "$wall" 1)
  val[$s-hs-client-ms]=$(per "$ccpu" "$conns" 1000)
  val[$s-hs-client-cores]=$(per "$ccpu" "$wall" 1)
  val[$s-hs-busy]=$(python3 -c "print(f'{($b1 - $b0) / $wall:.2f}')")
  val[$s-hs-failed]=$failed
  echo "  $s: $conns handshakes in $wall s = $rate/s; server CPU $scpu s, clients CPU $ccpu s, failed s_time runs: $failed"
  [ "$failed" = 0 ] || sed -n '1,5p' "$work/s_time-$s-0.txt" | sed 's/^/    /' >&2
done

mix_args() {
  case $1 in
    default) ;;
    fetch) echo fetch=100,50 fetch2=100,80 ;;
  esac
}
for m in $mixes; do
  echo "imaptest $m: ssl=any-cert users=$users clients=$clients secs=$secs seed=${seed:-random} logout=0 $(mix_args "$m")"
  for s in dovecot ringmail; do
    c0=$(cpu_now "$s") b0=$(busy_now)
    # shellcheck disable=SC2046 # mix_args is a list of words
    read -r wall ccpu rbytes < <(imaptest_run "$s-$m" "$s" $(mix_args "$m"))
    c1=$(cpu_now "$s") b1=$(busy_now)
    alive "$s"
    scpu=$(python3 -c "print(f'{$c1 - $c0:.2f}')")
    read -r logins cmds errors fetches < <(imaptest_figures "$work/$s-$m.txt" "$secs")
    val[$s-$m-cmds]=$cmds
    val[$s-$m-fetches]=$fetches
    val[$s-$m-errors]=$errors
    val[$s-$m-cores]=$(per "$scpu" "$wall" 1)
    val[$s-$m-client-cores]=$(per "$ccpu" "$wall" 1)
    val[$s-$m-busy]=$(python3 -c "print(f'{($b1 - $b0) / $wall:.2f}')")
    val[$s-$m-us]=$(python3 -c "c = float('$cmds') * $secs; print(f'{1e6 * $scpu / c:.0f}' if c > 0 else 'nan')")
    val[$s-$m-mbs]=$(per "$rbytes" "$wall" 1e-6)
    echo "  $s: $cmds commands/s, $fetches fetches/s, $logins logins/s, errors $errors; server CPU $scpu s over $wall s wall, imaptest CPU $ccpu s, read $((rbytes / 1000000)) MB"
    if [ "$errors" != 0 ]; then
      grep -m 5 -E '^(Error|Panic|Fatal):' "$work/$s-$m.txt" | sed 's/^/    /' >&2
    fi
  done
done

ratio() { python3 -c "import sys; d, r = float(sys.argv[1]), float(sys.argv[2]); print(f'{r / d:.2f}' if d > 0 else 'nan')" "$1" "$2"; }
row() { printf '| %-52s | %10s | %10s | %6s |\n' "$1" "$2" "$3" "$(ratio "$2" "$3")"; }
echo
printf '| %-52s | %10s | %10s | %6s |\n' measure Dovecot ringmail ratio
printf '|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..54})" "-----------:" "-----------:" "-------:"
row "TLS handshakes/s (s_time -new, P=$parallel, ${hs_secs} s)" "${val[dovecot-hs]}" "${val[ringmail-hs]}"
row "  server CPU ms per handshake" "${val[dovecot-hs-ms]}" "${val[ringmail-hs-ms]}"
row "  client (s_time) CPU ms per handshake" "${val[dovecot-hs-client-ms]}" "${val[ringmail-hs-client-ms]}"
row "  CPUs busy: server" "${val[dovecot-hs-cores]}" "${val[ringmail-hs-cores]}"
row "  CPUs busy: clients" "${val[dovecot-hs-client-cores]}" "${val[ringmail-hs-client-cores]}"
row "  CPUs busy: whole machine (of $(nproc))" "${val[dovecot-hs-busy]}" "${val[ringmail-hs-busy]}"
for m in $mixes; do
  row "imaptest $m over TLS: commands/s" "${val[dovecot-$m-cmds]}" "${val[ringmail-$m-cmds]}"
  row "  fetches/s (FETCH+FETCH2)" "${val[dovecot-$m-fetches]}" "${val[ringmail-$m-fetches]}"
  row "  MB/s read by imaptest (TLS records)" "${val[dovecot-$m-mbs]}" "${val[ringmail-$m-mbs]}"
  row "  server CPU us per command" "${val[dovecot-$m-us]}" "${val[ringmail-$m-us]}"
  row "  CPUs busy: server" "${val[dovecot-$m-cores]}" "${val[ringmail-$m-cores]}"
  row "  CPUs busy: imaptest" "${val[dovecot-$m-client-cores]}" "${val[ringmail-$m-client-cores]}"
  row "  CPUs busy: whole machine (of $(nproc))" "${val[dovecot-$m-busy]}" "${val[ringmail-$m-busy]}"
  printf '| %-52s | %10s | %10s | %6s |\n' "  imaptest errors" "${val[dovecot-$m-errors]}" "${val[ringmail-$m-errors]}" ""
done
printf '| %-52s | %10s | %10s | %6s |\n' "failed s_time runs" "${val[dovecot-hs-failed]}" "${val[ringmail-hs-failed]}" ""
# Anything ringmail logged besides its start-up lines is reported (a read error, a panic...).
grep -vE '^(ready|ringmail [0-9.]+: hostname|ringmail: recovered|[a-z0-9]+ listening on)' "$work/ringmail.log" \
  >"$work/ringmail-unexpected.log" || true
n=$(grep -c . "$work/ringmail-unexpected.log" || true)
echo "ringmail log: $n unexpected lines"
sed -n '1,5p' "$work/ringmail-unexpected.log" | cut -c1-240 | sed 's/^/  /'
n=$(grep -cE ': (Error|Panic|Fatal):' "$d/dovecot.log" || true)
echo "Dovecot log: $n Error/Panic/Fatal lines"
