//! The Prometheus endpoint of a real server (`[metrics] listen`), scraped with curl.
//!
//! Owns: what a scrape shows before and after real traffic (Python's smtplib delivering,
//! imaplib reading), checked by a small Python parser of the text format written here
//! independently of the server's renderer, and the endpoint's HTTP answers (404, 400).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::Command;

use common::{Server, ALICE, BOB};
use ringmail::runtime::placement::owner_core;

const METRICS: &str = "[metrics]\nlisten = [\"127.0.0.1:0\"]\n";

/// Validates exposition text (stdin) and prints, for each metric named on the command line,
/// `name total` summed over every series (`name:CLASS`: over the series with that `class`
/// label). Exits 1 with the reason on a malformed line, a
/// sample of an undeclared family, a family declared twice, non-cumulative buckets, or a
/// histogram whose `+Inf` bucket differs from its `_count`.
const PARSER: &str = r#"
import re, sys
NAME = r'[a-zA-Z_:][a-zA-Z0-9_:]*'
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(r'^(' + NAME + r')(\{(?:' + LABEL + r'(?:,' + LABEL + r')*)?\})? (\S+)$')
families, totals, buckets, counts = {}, {}, {}, {}
text = sys.stdin.read()
if not text.endswith('\n'):
    sys.exit('text does not end with a newline')
for line in text.split('\n')[:-1]:
    if line.startswith('# HELP '):
        continue
    if line.startswith('# TYPE '):
        parts = line.split(' ')
        if len(parts) != 4 or parts[3] not in ('counter', 'gauge', 'histogram', 'summary', 'untyped'):
            sys.exit('bad TYPE line: ' + line)
        if parts[2] in families:
            sys.exit('family declared twice: ' + parts[2])
        families[parts[2]] = parts[3]
        continue
    m = SAMPLE.match(line)
    if not m:
        sys.exit('malformed line: ' + repr(line))
    name, labels, value = m.group(1), m.group(2) or '', m.group(3)
    v = float(value)
    base = name
    for suffix in ('_bucket', '_sum', '_count'):
        if name.endswith(suffix) and families.get(name[:-len(suffix)]) == 'histogram':
            base = name[:-len(suffix)]
    if base not in families:
        sys.exit('sample of an undeclared family: ' + line)
    if families[base] == 'counter' and not name.endswith('_total'):
        sys.exit('counter without _total: ' + line)
    if name.endswith('_bucket') and base != name:
        le = re.search(r'le="([^"]*)"', labels).group(1)
        key = (base, re.sub(r',?le="[^"]*"', '', labels))
        prev = buckets.get(key, (float('-inf'), -1.0))
        bound = float('inf') if le == '+Inf' else float(le)
        if bound <= prev[0] or v < prev[1]:
            sys.exit('buckets out of order or not cumulative: ' + line)
        buckets[key] = (bound, v)
    if name.endswith('_count') and base != name:
        counts[(base, labels.replace('{}', ''))] = v
    totals[name] = totals.get(name, 0.0) + v
    cls = re.search(r'class="([^"]*)"', labels)
    if cls:
        totals[name + ':' + cls.group(1)] = totals.get(name + ':' + cls.group(1), 0.0) + v
for (base, labels), (bound, v) in buckets.items():
    clean = labels if labels not in ('{}',) else ''
    if bound != float('inf'):
        sys.exit('histogram without a +Inf bucket: ' + base + labels)
    if counts.get((base, clean)) != v:
        sys.exit('+Inf bucket differs from _count: ' + base + labels)
for want in sys.argv[1:]:
    if want not in totals:
        sys.exit('no samples of ' + want)
    print(want, repr(totals[want]))
"#;

/// What the scrape holds for the summed metrics we look at.
const WATCHED: &[&str] = &[
    "ringmail_smtp_messages_accepted_total",
    "ringmail_smtp_message_bytes_total",
    "ringmail_smtp_data_reply_seconds_count",
    "ringmail_store_fsync_seconds_count",
    "ringmail_store_batch_records_sum",
    "ringmail_connections_accepted_total",
    "ringmail_imap_commands_total",
    "ringmail_imap_command_seconds_count",
    "ringmail_smtp_replies_total:2xx",
    "ringmail_smtp_replies_total:5xx",
    "ringmail_smtp_sessions_moved_total",
];

/// `curl -sS -D - http://127.0.0.1:PORT/PATH`: (status line, headers, body).
fn curl(port: u16, path: &str) -> (String, String, String) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let r = common::run(
        Command::new("curl").args(["-sS", "--max-time", "10", "-D", "-", &url]),
        b"",
    );
    assert!(r.status.success(), "curl {url}: {}\n{}", r.status, r.stderr);
    let text = r.stdout_text();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("curl {url}: no header block in {text:?}"));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}

/// Scrapes /metrics, validates the text with [`PARSER`] and returns the [`WATCHED`] totals.
fn scrape(server: &Server) -> BTreeMap<String, f64> {
    let (status, headers, body) = curl(server.listener_port("metrics"), "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{headers}\n{body}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    let r = common::run(
        Command::new("python3").arg("-c").arg(PARSER).args(WATCHED),
        body.as_bytes(),
    );
    assert!(
        r.status.success(),
        "the scrape does not parse: {}\n{body}",
        r.stderr
    );
    r.stdout_text()
        .lines()
        .map(|l| {
            let (name, v) = l.split_once(' ').unwrap();
            (name.to_string(), v.parse::<f64>().unwrap())
        })
        .collect()
}

/// Runs a Python client `script` with `args`; it must exit 0 (else the failure shows its
/// stderr and stdout and the server's output).
fn python_client(server: &Server, script: &str, args: &[&str]) -> common::Run {
    let r = common::run(
        Command::new("python3").arg("-c").arg(script).args(args),
        b"",
    );
    assert!(
        r.status.success(),
        "client: {}\n{}\n{}\nserver:\n{}",
        r.status,
        r.stderr,
        r.stdout_text(),
        server.output()
    );
    r
}

/// Sends `n` messages to alice over one smtplib connection; every one must be accepted.
fn smtplib_send(server: &Server, n: usize) {
    let script = r#"
import smtplib, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
s = smtplib.SMTP('127.0.0.1', port, local_hostname='client.test', timeout=10)
for i in range(n):
    msg = ('Subject: metrics %d\r\nMessage-ID: <m%d@client.test>\r\n\r\nbody %d\r\n' % (i, i, i)).encode()
    refused = s.sendmail('sender@client.test', ['alice@example.test'], msg)
    if refused:
        sys.exit('refused: %r' % refused)
s.quit()
"#;
    python_client(
        server,
        script,
        &[&server.port().to_string(), &n.to_string()],
    );
}

fn rose(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, name: &str) -> f64 {
    after[name] - before[name]
}

#[test]
fn five_smtplib_messages_show_in_the_counters_and_histograms() {
    let server = Server::start(METRICS);
    let before = scrape(&server);
    smtplib_send(&server, 5);
    let after = scrape(&server);
    assert_eq!(
        rose(&before, &after, "ringmail_smtp_messages_accepted_total"),
        5.0,
        "{before:?}\n{after:?}"
    );
    assert_eq!(
        rose(&before, &after, "ringmail_smtp_data_reply_seconds_count"),
        5.0
    );
    // Each stored message carries its body plus the trace headers the server prepends.
    assert!(rose(&before, &after, "ringmail_smtp_message_bytes_total") > 5.0 * 40.0);
    // fsync = "always" in the test config: every durable batch synced.
    assert!(rose(&before, &after, "ringmail_store_fsync_seconds_count") >= 1.0);
    // Each message is one blob record and one index record at least.
    assert!(rose(&before, &after, "ringmail_store_batch_records_sum") >= 10.0);
    assert!(rose(&before, &after, "ringmail_connections_accepted_total") >= 1.0);
    // Greeting, EHLO, 5 × (MAIL, RCPT, DATA end), QUIT at least; no refusal.
    assert!(rose(&before, &after, "ringmail_smtp_replies_total:2xx") >= 18.0);
    assert_eq!(
        rose(&before, &after, "ringmail_smtp_replies_total:5xx"),
        0.0
    );
    assert_eq!(server.export(ALICE).len(), 5);
}

#[test]
fn refusals_at_rcpt_are_counted_as_5xx_replies() {
    let server = Server::start(METRICS);
    let before = scrape(&server);
    // Two unknown local users and one relay attempt: three 5xx refusals at RCPT, and
    // smtplib's sendmail raises once every recipient was refused.
    let script = r#"
import smtplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), local_hostname='client.test', timeout=10)
try:
    s.sendmail('sender@client.test', ['nobody@example.test', 'ghost@example.test',
                                      'someone@elsewhere.test'], b'Subject: x\r\n\r\nx\r\n')
    sys.exit('accepted')
except smtplib.SMTPRecipientsRefused as e:
    codes = sorted(code for code, _ in e.recipients.values())
    print(codes)
s.quit()
"#;
    let r = python_client(&server, script, &[&server.port().to_string()]);
    assert_eq!(r.stdout_text().trim(), "[550, 550, 554]");
    let after = scrape(&server);
    assert_eq!(
        rose(&before, &after, "ringmail_smtp_replies_total:5xx"),
        3.0
    );
    assert_eq!(
        rose(&before, &after, "ringmail_smtp_messages_accepted_total"),
        0.0
    );
}

#[test]
fn imaplib_commands_are_counted_and_timed() {
    let server = Server::start(METRICS);
    server.deliver(
        "sender@client.test",
        ALICE,
        &[b"Subject: a\r\n\r\nx\r\n".as_slice()],
    );
    let before = scrape(&server);
    let script = r#"
import imaplib, sys
c = imaplib.IMAP4('127.0.0.1', int(sys.argv[1]), timeout=10)
c.login('alice@example.test', sys.argv[2])
c.select('INBOX')
typ, data = c.fetch('1', '(RFC822)')
if typ != 'OK':
    sys.exit('fetch: %r' % data)
c.logout()
"#;
    python_client(
        &server,
        script,
        &[&server.imap_port().to_string(), common::USERS[0].1],
    );
    let after = scrape(&server);
    // CAPABILITY (imaplib asks first), LOGIN, SELECT, FETCH, LOGOUT.
    assert!(
        rose(&before, &after, "ringmail_imap_commands_total") >= 4.0,
        "{before:?}\n{after:?}"
    );
    // LOGIN, SELECT and FETCH at least were timed (LOGOUT ends the connection).
    assert!(rose(&before, &after, "ringmail_imap_command_seconds_count") >= 3.0);
}

#[test]
fn other_paths_are_404_and_garbage_is_400() {
    let server = Server::start(METRICS);
    let port = server.listener_port("metrics");
    let (status, _, body) = curl(port, "/other");
    assert_eq!(status, "HTTP/1.1 404 Not Found", "{body}");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
    s.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
    // The endpoint still serves after a bad request.
    let (status, _, _) = curl(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
}

/// One write of pipelined transactions (MAIL, RCPT, `BDAT n LAST` + body each, then
/// QUIT) after EHLO; prints the code of every reply after EHLO, one per line.
const PIPELINED_BDAT: &str = r#"
import socket, sys
port, users = int(sys.argv[1]), sys.argv[2:]
s = socket.create_connection(('127.0.0.1', port), timeout=20)
f = s.makefile('rb')
def reply():
    lines = []
    while True:
        line = f.readline()
        if not line:
            sys.exit('connection closed after %r' % lines)
        lines.append(line)
        if line[3:4] == b' ':
            return b''.join(lines)
reply()
s.sendall(b'EHLO client.test\r\n')
if b'CHUNKING' not in reply():
    sys.exit('no CHUNKING')
batch = b''
for i, user in enumerate(users):
    body = b'Subject: move %d\r\n\r\nbody %d\r\n' % (i, i)
    batch += b'MAIL FROM:<s@client.test>\r\nRCPT TO:<%s>\r\nBDAT %d LAST\r\n' % (user.encode(), len(body))
    batch += body
s.sendall(batch + b'QUIT\r\n')
for _ in range(3 * len(users) + 1):
    print(reply()[:3].decode())
"#;

/// Work moves to the data: a session whose messages alternate between users of the two
/// cores moves to each message's owner in turn, carrying the input it has not read yet
/// (the pipelined transactions that follow); every message is answered in order and
/// stored once, in its owner's mailbox.
#[test]
fn a_session_moves_to_each_messages_core_with_its_pipelined_input() {
    assert_ne!(
        owner_core(ALICE, 2),
        owner_core(BOB, 2),
        "the test needs users on both cores"
    );
    let server = Server::start(&format!("{METRICS}[cores]\nplacement = [0, 1]\n"));
    let before = scrape(&server);
    let users = [ALICE, BOB, ALICE, BOB];
    let port = server.port().to_string();
    let args: Vec<&str> = std::iter::once(port.as_str()).chain(users).collect();
    let r = python_client(&server, PIPELINED_BDAT, &args);
    assert_eq!(
        r.stdout_text(),
        "250\n".repeat(3 * users.len()) + "221\n",
        "server:\n{}",
        server.output()
    );
    let after = scrape(&server);
    // Wherever the connection landed, at least three of the four messages were for the
    // other core.
    assert!(
        rose(&before, &after, "ringmail_smtp_sessions_moved_total") >= 3.0,
        "{before:?}\n{after:?}"
    );
    assert_eq!(
        rose(&before, &after, "ringmail_smtp_messages_accepted_total"),
        4.0
    );
    for (user, bodies) in [(ALICE, ["body 0", "body 2"]), (BOB, ["body 1", "body 3"])] {
        let got = server.export(user);
        assert_eq!(got.len(), 2, "{user}: {got:?}");
        for (m, body) in got.iter().zip(bodies) {
            let text = String::from_utf8_lossy(m);
            assert!(
                text.ends_with(&format!("\r\n\r\n{body}\r\n")),
                "{user}: {text:?}"
            );
        }
    }
}
