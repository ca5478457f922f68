# Shared by the tuning/ benchmark scripts (source it; it defines functions only).
# shellcheck shell=bash disable=SC2034 # ringmail_pid, dovecot_pid, postfix_pid: set for the caller

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# write_config FILE DATA_DIR PORT FSYNC [IMAP_PORT POP3_PORT [IMAPS_PORT CERT KEY]]: a ringmail
# config for local domain example.test, SMTP on 127.0.0.1:PORT (and IMAP and POP3 when their
# ports are given, with plaintext logins allowed, as the load tools log in without TLS; and
# IMAPS on 127.0.0.1:IMAPS_PORT with [tls] cert and key when those are given). No other listeners.
# FSYNC_WAIT (env) sets [store] fsync_wait (default "io_uring"); CPU_WAKEUP_US_MAX (env), when
# set, [server] cpu_wakeup_us_max.
write_config() {
  cat >"$1" <<TOML
[server]
hostname = "mx.example.test"
data_dir = "$2"
${CPU_WAKEUP_US_MAX:+cpu_wakeup_us_max = $CPU_WAKEUP_US_MAX}
[smtp]
listen = ["127.0.0.1:$3"]
[domains]
local = ["example.test"]
[store]
fsync = "$4"
fsync_wait = "${FSYNC_WAIT:-io_uring}"
[submission]
listen = []
listen_tls = []
TOML
  if [ $# -ge 6 ]; then
    cat >>"$1" <<TOML
[imap]
listen = ["127.0.0.1:$5"]
listen_tls = [${7:+"\"127.0.0.1:$7\""}]
allow_plaintext_auth = true
[pop3]
listen = ["127.0.0.1:$6"]
listen_tls = []
allow_plaintext_auth = true
TOML
    if [ $# -ge 9 ]; then
      cat >>"$1" <<TOML
[tls]
cert = "$8"
key = "$9"
TOML
    fi
  else
    cat >>"$1" <<TOML
[imap]
listen = []
listen_tls = []
[pop3]
listen = []
listen_tls = []
TOML
  fi
}

# hold_cpu_wakeup US: holds a PM QoS request of US µs on /dev/cpu_dma_latency (what ringmail's
# [server] cpu_wakeup_us_max does while it serves) in a background process, so that every
# server measured in a run sees the same idle states; sets $wakeup_pid (kill it to release).
# Needs root; returns 1 with the reason when the request cannot be made.
hold_cpu_wakeup() {
  local out="${TMPDIR:-/tmp}/hold_cpu_wakeup.$$"
  python3 -c '
import os, signal, struct, sys
fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
os.write(fd, struct.pack("i", int(sys.argv[1])))
print("held", flush=True)
signal.pause()' "$1" >"$out" 2>&1 &
  wakeup_pid=$!
  for _ in $(seq 50); do
    grep -q '^held' "$out" 2>/dev/null && { rm -f "$out"; return 0; }
    kill -0 "$wakeup_pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$out" >&2; rm -f "$out"
  echo "cannot hold /dev/cpu_dma_latency at $1 µs (needs root)" >&2
  return 1
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

# gen_mbox FILE COUNT: a deterministic mbox of COUNT messages (median ~2 KiB; 70 % text/plain,
# 20 % multipart/alternative, 10 % multipart/mixed with a base64 attachment).
gen_mbox() {
  python3 - "$2" >"$1" <<'PY'
import base64, email.utils, random, sys, time
rng = random.Random(1)
words = ("mail server store index segment ring core queue flag search fetch body header "
         "envelope mailbox literal append expunge select idle commit record log read write "
         "quarterly report meeting agenda invoice travel lunch project review draft").split()
def text(n):
    lines, line, size = [], [], 0
    while size < n:
        w = rng.choice(words)
        line.append(w)
        size += len(w) + 1
        if len(line) == 12:
            lines.append(" ".join(line))
            line = []
    lines.append(" ".join(line))
    return "\n".join(lines) + "\n"
for i in range(1, int(sys.argv[1]) + 1):
    t = 1767225600 + i * 3617
    frm = f"user{rng.randrange(1, 40)}@sender{rng.randrange(1, 5)}.test"
    subject = " ".join(rng.choice(words) for _ in range(rng.randrange(2, 7)))
    hdr = (f"From: Sender {i} <{frm}>\nTo: <u{rng.randrange(1, 51)}@example.test>\n"
           f"Subject: {subject}\nDate: {email.utils.formatdate(t)}\n"
           f"Message-ID: <{i}@gen.example.test>\nMIME-Version: 1.0\n")
    kind, size = rng.random(), int(rng.lognormvariate(7.6, 0.8))
    if kind < 0.7:
        msg = hdr + "Content-Type: text/plain; charset=us-ascii\n\n" + text(size)
    elif kind < 0.9:
        b = f"=_alt_{i}"
        msg = (hdr + f'Content-Type: multipart/alternative; boundary="{b}"\n\n'
               f"--{b}\nContent-Type: text/plain; charset=us-ascii\n\n{text(size // 2)}"
               f"--{b}\nContent-Type: text/html; charset=us-ascii\n\n<p>{text(size // 2)}</p>\n"
               f"--{b}--\n")
    else:
        b = f"=_mix_{i}"
        blob = base64.encodebytes(bytes(rng.randrange(256) for _ in range(size * 2))).decode()
        msg = (hdr + f'Content-Type: multipart/mixed; boundary="{b}"\n\n'
               f"--{b}\nContent-Type: text/plain; charset=us-ascii\n\n{text(400)}"
               f"--{b}\nContent-Type: application/octet-stream; name=\"a{i}.bin\"\n"
               "Content-Transfer-Encoding: base64\n"
               f"Content-Disposition: attachment; filename=\"a{i}.bin\"\n\n{blob}--{b}--\n")
    body = "\n".join(">" + l if l.startswith("From ") else l for l in msg.split("\n"))
    sys.stdout.write(f"From {frm} {time.asctime(time.gmtime(t))}\n{body}\n")
PY
}

# write_dovecot_config FILE DIR IMAP_PORT POP3_PORT [IMAPS_PORT CERT KEY [LOGIN]]: a private
# Dovecot on 127.0.0.1 only, plaintext logins, users from DIR/passwd, Maildir under DIR/mail;
# apt's defaults otherwise (mail_fsync = optimized, no auth cache). No TLS, unless IMAPS_PORT,
# CERT and KEY are given: then IMAPS on 127.0.0.1:IMAPS_PORT with that certificate (TLS 1.2
# minimum, OpenSSL's default ciphers, as rustls' defaults in ringmail). LOGIN: security (apt's
# default: one imap-login process per connection) | performance (service_count = 0: login
# processes serve many connections, one kept per CPU, Dovecot's documented high-performance mode).
write_dovecot_config() {
  local imaps_port=${5:-0} ssl=no login=
  [ $# -ge 7 ] && ssl=yes
  [ "${8:-security}" = performance ] && login="service_count = 0
  process_min_avail = $(nproc)"
  cat >"$1" <<CONF
base_dir = $2/run
state_dir = $2/state
instance_name = ringmail-bench-dovecot
protocols = imap pop3
listen = 127.0.0.1
ssl = $ssl
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = $2/dovecot.log
mail_location = maildir:$2/mail/%u/Maildir
mail_uid = 65534
mail_gid = 65534
first_valid_uid = 1
# imaptest opens several sessions per user from one address; the default limit is 10.
mail_max_userip_connections = 1000
passdb {
  driver = passwd-file
  args = username_format=%u $2/passwd
}
userdb {
  driver = static
  args = uid=65534 gid=65534 home=$2/mail/%u
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $3
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $imaps_port
  }
  $login
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $4
  }
  inet_listener pop3s {
    port = 0
  }
}
CONF
  if [ "$ssl" = yes ]; then
    cat >>"$1" <<CONF
ssl_cert = <$6
ssl_key = <$7
ssl_min_protocol = TLSv1.2
CONF
  fi
}

# dovecot_passwd FILE SCHEME USERS PASS [RINGMAIL_USERS]: Dovecot's passwd-file for u1..uUSERS
# @example.test. SCHEME argon2id: the very PHC strings ringmail stores (RINGMAIL_USERS, its
# data_dir/users file: address<TAB>PHC), so a LOGIN costs both servers the same; plain: {PLAIN}.
dovecot_passwd() {
  if [ "$2" = argon2id ]; then
    awk -F'\t' '{ print $1 ":{ARGON2ID}" $2 "::::::" }' "$5" >"$1"
  else
    for i in $(seq "$3"); do echo "u$i@example.test:{PLAIN}$4::::::"; done >"$1"
  fi
  chmod 644 "$1"
}

# start_dovecot CONF STDOUT_LOG LOG IMAP_PORT: starts `dovecot -F -c CONF` in the background
# (its output in STDOUT_LOG; LOG is the config's log_path), sets $dovecot_pid and waits (at most
# 15 s) for its IMAP greeting on 127.0.0.1:IMAP_PORT; on failure shows both logs and returns 1.
start_dovecot() {
  /usr/sbin/dovecot -F -c "$1" >"$2" 2>&1 &
  dovecot_pid=$!
  imap_ready 127.0.0.1 "$4" && return 0
  cat "$2" "$3" >&2 2>/dev/null
  echo "Dovecot did not answer IMAP on 127.0.0.1:$4" >&2
  return 1
}

# imaps_ready HOST PORT: waits (at most 15 s) for an IMAP greeting over implicit TLS on
# HOST:PORT (the certificate is not checked).
imaps_ready() {
  python3 - "$1" "$2" <<'PY'
import socket, ssl, sys, time
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
deadline = time.time() + 15
while time.time() < deadline:
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as raw:
            with ctx.wrap_socket(raw) as s:
                if s.recv(512).startswith(b"* OK"):
                    sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(1)
PY
}

# tree_cpu_seconds PID: CPU seconds (user + system) used so far by PID and all its live
# descendants, plus the children they have already reaped (Dovecot's per-connection login
# processes end up in the master's cutime/cstime). Take it before and after a load: the
# difference is what the server spent on it.
tree_cpu_seconds() {
  python3 - "$1" <<'PY'
import os, sys
root, parent, times = int(sys.argv[1]), {}, {}
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    parent[int(d)] = int(f[1])
    times[int(d)] = sum(int(x) for x in f[11:15])  # utime stime cutime cstime
def in_tree(p):
    for _ in range(64):
        if p == root:
            return True
        p = parent.get(p, 0)
        if p <= 1:
            return False
    return False
print(f"{sum(t for p, t in times.items() if in_tree(p)) / os.sysconf('SC_CLK_TCK'):.2f}")
PY
}

# imaptest_figures FILE SECS: "logins/s commands/s errors fetches/s" from an imaptest load
# run's output: the Totals row (every command, LOGIN and LOGOUT included) divided by SECS;
# errors = imaptest's Error:/Panic:/Fatal: lines (a run with errors is not a valid figure);
# fetches = FETCH + FETCH2 + UID FETCH. "nan nan ERRORS nan" when there is no Totals block.
imaptest_figures() {
  python3 - "$1" "$2" <<'PY'
import sys
lines = open(sys.argv[1], errors="replace").read().splitlines()
secs = float(sys.argv[2])
errors = sum(1 for l in lines if l.startswith(("Error:", "Panic:", "Fatal:")))
if "Totals:" not in lines:
    print("nan nan", errors, "nan")
    sys.exit()
rest = lines[lines.index("Totals:") + 1:]
names = rest[0].split()
counts = next(l.split() for l in rest[1:] if l.split() and all(t.isdigit() for t in l.split()))
total = dict(zip(names, map(int, counts)))
fetches = sum(total.get(k, 0) for k in ("Fetc", "Fet2", "UIDF"))
print(f"{total.get('Logi', 0) / secs:.0f} {sum(total.values()) / secs:.0f} {errors} {fetches / secs:.0f}")
PY
}

# write_postfix_config DIR SMTPD_PORT RELAYHOST: a private Postfix instance in DIR (main.cf and
# master.cf in DIR/etc; its own queue, data and log directories under DIR) with smtpd on
# 127.0.0.1:SMTPD_PORT only, relaying everything for 127.0.0.0/8 (mynetworks, no AUTH) to
# RELAYHOST (e.g. "[127.0.0.1]:2526"). No local delivery, no chroot, no pickup of the
# system's maildrop, no DNS (the relay host is an address literal). Postfix's defaults otherwise:
# queue files fsync'd before the 250, default_destination_concurrency_limit = 20, the
# destination concurrency slow start (initial 5), the SMTP connection cache on demand.
write_postfix_config() {
  mkdir -p "$1/etc" "$1/queue" "$1/data" "$1/log"
  chown postfix:postfix "$1/data"
  cat >"$1/etc/main.cf" <<CONF
compatibility_level = 3.6
queue_directory = $1/queue
data_directory = $1/data
maillog_file = $1/log/postfix.log
maillog_file_prefixes = $1/log
syslog_name = postfix-bench
myhostname = postfix.bench.test
mydomain = bench.test
mydestination =
local_recipient_maps =
local_transport = error:local delivery is disabled
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = $3
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
smtp_tls_security_level = none
smtpd_tls_security_level = none
alias_maps =
alias_database =
biff = no
CONF
  # The system's master.cf with smtpd moved to the benchmark port, every chroot off and the
  # pickup service removed (it would read nothing, but keep this instance self-contained).
  awk -v port="$2" '
    /^pickup[ \t]/ { next }
    /^[a-z]/ && NF >= 8 && $5 != "n" { $5 = "n" }
    /^smtp[ \t]+inet/ { $1 = "127.0.0.1:" port }
    { print }' /etc/postfix/master.cf >"$1/etc/master.cf"
}

# start_postfix DIR SMTPD_PORT: `postfix -c DIR/etc start`, waits (at most 30 s) for the SMTP
# greeting on 127.0.0.1:SMTPD_PORT and sets $postfix_pid to its master's pid (from
# DIR/queue/pid/master.pid); on failure shows its log and returns 1. Stop it with
# stop_postfix DIR (postfix -c DIR/etc stop, then the master's pid if it is still there).
start_postfix() {
  postfix -c "$1/etc" start >"$1/log/start.out" 2>&1 || { cat "$1/log/start.out" "$1/log/postfix.log" >&2 2>/dev/null; return 1; }
  smtp_ready 127.0.0.1 "$2" || { cat "$1/log/start.out" "$1/log/postfix.log" >&2 2>/dev/null; return 1; }
  postfix_pid=$(tr -d ' ' <"$1/queue/pid/master.pid")
}
stop_postfix() {
  local pid
  pid=$(tr -d ' ' <"$1/queue/pid/master.pid" 2>/dev/null) || return 0
  postfix -c "$1/etc" stop >/dev/null 2>&1 || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill "$pid" 2>/dev/null || true
}

# smtp_ready HOST PORT: waits (at most 30 s) for a 220 greeting on HOST:PORT.
smtp_ready() {
  python3 - "$1" "$2" <<'PY'
import socket, sys, time
deadline = time.time() + 30
while time.time() < deadline:
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as s:
            if s.recv(512).startswith(b"220"):
                s.sendall(b"QUIT\r\n")
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(1)
PY
}

# sink_count FILE: the last `mesg=` counter in the output of `smtp-sink -c` (0 when none yet):
# how many messages (end of DATA) the sink has received.
sink_count() {
  local n
  n=$(tail -c 200 "$1" 2>/dev/null | tr '\r' '\n' | grep -o 'mesg=[0-9]*' | tail -n 1 | cut -d= -f2)
  echo "${n:-0}"
}

# apt_install_missing PKG...: installs the packages that are not installed yet with apt-get,
# non-interactively (Postfix preseeded to "No configuration", as .ci/run does: no system
# instance is set up; the scripts run private ones). Needs root when something is missing.
apt_install_missing() {
  local missing=() p
  for p in "$@"; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == *"install ok installed"* ]] || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || { echo "missing packages (${missing[*]}): run as root or apt-get install them" >&2; return 1; }
  echo "installing with apt-get: ${missing[*]}" >&2
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
    { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; }
}

# write_postfix_lmtp_config DIR SMTPD_PORT LMTP_PORT DOMAIN: like write_postfix_config (a private
# instance in DIR, smtpd on 127.0.0.1:SMTPD_PORT), but instead of relaying it delivers every
# recipient of DOMAIN (a virtual mailbox domain: any local part accepted, no recipient map) over
# LMTP to 127.0.0.1:LMTP_PORT (e.g. Dovecot's LMTP). Postfix's defaults otherwise (queue files
# fsync'd before the 250, lmtp destination concurrency 20 with slow start).
write_postfix_lmtp_config() {
  write_postfix_config "$1" "$2" ""
  postconf -c "$1/etc" -e \
    "virtual_mailbox_domains = $4" \
    "virtual_mailbox_maps =" \
    "virtual_transport = lmtp:inet:127.0.0.1:$3"
}

# write_dovecot_lmtp_config FILE DIR IMAP_PORT POP3_PORT LMTP_PORT: write_dovecot_config (IMAP and
# POP3, apt's defaults, users from DIR/passwd, Maildir under DIR/mail) plus LMTP on
# 127.0.0.1:LMTP_PORT, delivering into the same Maildirs (mail_fsync = optimized: each delivered
# message is fsync'd before LMTP's 250).
write_dovecot_lmtp_config() {
  write_dovecot_config "$1" "$2" "$3" "$4"
  sed -i 's/^protocols = imap pop3$/protocols = imap pop3 lmtp/' "$1"
  cat >>"$1" <<CONF
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $5
  }
}
CONF
}

# wait_maildir_count MAIL_DIR TARGET T0 WAIT_SECS: how many messages are in the Maildirs under
# MAIL_DIR (files in MAIL_DIR/*/Maildir/new and .../cur: INBOX only), waiting until there are
# TARGET or WAIT_SECS have passed; prints "COUNT SECS", SECS from T0 (a `date +%s.%N`) to the
# last count. Listing 20 000 files costs ~30 ms of CPU, so it counts at most every 0.25 s or
# every 4 listings' time: during a load, prefer wait_postfix_sent.
wait_maildir_count() {
  python3 - "$@" <<'PY'
import os, sys, time
mail, target, t0, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
def count():
    n = 0
    for user in os.listdir(mail):
        for sub in ("new", "cur"):
            try:
                n += sum(1 for _ in os.scandir(os.path.join(mail, user, "Maildir", sub)))
            except OSError:
                pass
    return n
deadline = time.time() + wait
while True:
    began = time.time()
    n = count()
    if n >= target or time.time() >= deadline:
        break
    time.sleep(max(0.25, 4 * (time.time() - began)))
print(n, f"{time.time() - t0:.3f}")
PY
}

# wait_postfix_sent LOG OFFSET TARGET T0 WAIT_SECS: counts Postfix's `status=sent` lines (one per
# recipient delivered, logged after the next hop's 250) in its maillog_file LOG after byte
# OFFSET, every 20 ms, reading only what was appended, until there are TARGET or WAIT_SECS have
# passed; prints "COUNT SECS", SECS from T0 (a `date +%s.%N`) to the poll that saw the count.
wait_postfix_sent() {
  python3 - "$@" <<'PY'
import sys, time
log, offset, target, t0, wait = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
deadline, n, rest = time.time() + wait, 0, b""
with open(log, "rb") as f:
    f.seek(offset)
    while True:
        chunk = rest + f.read()
        lines = chunk.split(b"\n")
        rest = lines.pop()  # an unfinished last line waits for its end
        n += sum(1 for line in lines if b" status=sent " in line)
        now = time.time()
        if n >= target or now >= deadline:
            break
        time.sleep(0.02)
print(n, f"{now - t0:.3f}")
PY
}

# imap_messages_total HOST PORT PASS USER...: the sum of STATUS INBOX (MESSAGES) over the users
# (each logs in with PASS, plaintext LOGIN); exits 1 when a login or STATUS fails.
imap_messages_total() {
  python3 - "$@" <<'PY'
import imaplib, re, sys
host, port, password, users = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
total = 0
for user in users:
    try:
        c = imaplib.IMAP4(host, port, timeout=30)
        c.login(user, password)
        typ, data = c.status("INBOX", "(MESSAGES)")
        c.logout()
    except (OSError, imaplib.IMAP4.error) as e:
        sys.exit(f"IMAP STATUS for {user}: {e}")
    m = re.search(rb"MESSAGES (\d+)", data[0] if typ == "OK" and data else b"")
    if not m:
        sys.exit(f"IMAP STATUS for {user}: {typ} {data!r}")
    total += int(m.group(1))
print(total)
PY
}

# loadgen_figures JSON [OP]: "RATE OK P99_US ERRORS REFUSED ABORTED P50_US" from a
# ringmail-loadgen --json file: the rate (successes per second), the successes, and the p99 and
# p50 latency in µs of operation OP (default: the run's headline operation, e.g. `message` for
# SMTP, `retr` for POP3; `all` = every operation: rate and successes summed, no percentiles),
# the connection-level errors, and over all operations those refused (4xx/5xx, NO/BAD, -ERR) and
# those aborted (in flight when a connection failed or the run's deadline hit), from the JSON's
# `headline`, `headline_rate` and `ops`. Every field "nan" when the file is missing or is not
# such a JSON.
loadgen_figures() {
  python3 - "$@" <<'PY'
import json, math, sys
try:
    j = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    j = None
if not isinstance(j, dict) or not isinstance(j.get("ops"), list):
    print(" ".join(["nan"] * 7))
    sys.exit()
name = sys.argv[2] if len(sys.argv) > 2 else j.get("headline", "message")
ops = j["ops"]
chosen = [o for o in ops if name == "all" or o.get("name") == name]
ok = sum(o.get("ok", 0) for o in chosen)
refused = sum(o.get("tempfail", 0) + o.get("permfail", 0) for o in ops)
aborted = sum(o.get("aborted", 0) for o in ops)
rate = j.get("headline_rate")
if rate is None or name != j.get("headline"):
    rate = ok / j["elapsed_secs"] if j.get("elapsed_secs") else math.nan
latency = chosen[0].get("latency_us", {}) if len(chosen) == 1 else {}
p99, p50 = latency.get("p99"), latency.get("p50")
print(f"{rate:.1f}", ok, "nan" if p99 is None else p99, j.get("errors", 0), refused, aborted,
      "nan" if p50 is None else p50)
PY
}
