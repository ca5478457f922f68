//! Outbound delivery end to end, with real parts on loopback: ringmail A takes an
//! authenticated submission and relays it to a remote — a second ringmail instance B (the
//! domain remote.test) or Postfix's `smtp-sink` (for a remote that answers 4xx or lacks
//! 8BITMIME) — through `[relay] smarthost`; bounces land in the sender's INBOX on A.
//!
//! Every wait is bounded ([`WAIT`]); retry schedules are shrunk to a second.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ringmail, Server, SmtpClient, ALICE, USERS};

const WAIT: Duration = Duration::from_secs(30);
const DAVE: &str = "dave@remote.test";
const DAVE_PW: &str = "dave-Pa55word-0b1d";
const SMTP_SINK: &str = "/usr/sbin/smtp-sink";

/// Ringmail A: relays through `smarthost`, retries every second.
fn sender_a(smarthost: &str, extra: &str) -> Server {
    Server::start(&format!(
        "[submission]\nallow_plaintext_auth = true\n\
         [relay]\nsmarthost = \"{smarthost}\"\nretry = [\"1s\"]\n{extra}"
    ))
}

/// Ringmail B: the remote domain remote.test with the mailbox dave.
fn remote_b() -> Server {
    let b = Server::start("[domains]\nlocal = [\"remote.test\"]\n");
    common::add_user(&b.config_path, DAVE, DAVE_PW);
    // Every core reloads the users file within a second.
    std::thread::sleep(Duration::from_millis(1500));
    b
}

/// Alice submits `message` on A's submission port to `to`; the reply to DATA is returned.
fn submit(a: &Server, to: &[&str], message: &[u8]) -> u16 {
    let addr = SocketAddr::from(([127, 0, 0, 1], a.listener_port("submission")));
    let mut c = SmtpClient::connect(addr).unwrap();
    assert_eq!(c.read_reply().unwrap().code, 220);
    c.expect("EHLO client.test", 250);
    let password = USERS.iter().find(|(u, _)| *u == ALICE).unwrap().1;
    let token = common::base64(format!("\0{ALICE}\0{password}").as_bytes());
    c.expect(&format!("AUTH PLAIN {token}"), 235);
    let r = c.send_mail(ALICE, to, message).unwrap();
    c.quit();
    r.code
}

fn message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: <{ALICE}>\r\nTo: <{DAVE}>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.test>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// Polls `check` until it returns Some, at most [`WAIT`]; panics with `what` and `context()`.
fn wait_for<T>(
    what: &str,
    mut check: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn queue_lines(server: &Server) -> Vec<String> {
    let r = ringmail(&["queue", "list", "--config", server.config_str()], b"");
    r.assert_ok("queue list");
    r.stdout_text().lines().map(str::to_owned).collect()
}

fn inbox_with(server: &Server, user: &str, needle: &str) -> Option<String> {
    server
        .export(user)
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m).into_owned())
        .find(|m| m.contains(needle))
}

#[test]
fn relays_to_a_second_ringmail_and_bounces_a_5xx_into_the_senders_inbox() {
    let mut b = remote_b();
    let mut a = sender_a(&format!("127.0.0.1:{}", b.port()), "");
    let code = submit(
        &a,
        &[DAVE, "nosuch@remote.test"],
        &message("relayed", "to a remote ringmail"),
    );
    assert_eq!(code, 250);
    let got = wait_for(
        "the message in dave's INBOX on B",
        || inbox_with(&b, DAVE, "Subject: relayed"),
        || format!("A:\n{}\nB:\n{}", a.output(), b.output()),
    );
    assert!(got.contains("to a remote ringmail"), "{got}");
    assert_eq!(
        got.matches("Return-Path:").count(),
        1,
        "A's Return-Path must not travel:\n{got}"
    );
    let bounce = wait_for(
        "the bounce in alice's INBOX on A",
        || inbox_with(&a, ALICE, "Undelivered Mail Returned to Sender"),
        || a.output(),
    );
    for want in [
        "Return-Path: <>",
        "multipart/report; report-type=delivery-status",
        "Final-Recipient: rfc822; nosuch@remote.test",
        "Action: failed",
        "Status: 5.1.1",
        "Subject: relayed",
    ] {
        assert!(
            bounce.contains(want),
            "no {want:?} in the bounce:\n{bounce}"
        );
    }
    assert!(
        !bounce.contains(&format!("Final-Recipient: rfc822; {DAVE}")),
        "{bounce}"
    );
    // The bounce reads over IMAP like any message.
    let script = format!(
        "import imaplib\nm = imaplib.IMAP4('127.0.0.1', {})\nm.login('{ALICE}', '{}')\n\
         m.select('INBOX')\ntyp, data = m.search(None, 'SUBJECT', 'Undelivered')\n\
         n = data[0].split()[-1]\ntyp, data = m.fetch(n, '(BODYSTRUCTURE)')\nprint(data[0].decode())\n",
        a.imap_port(),
        USERS.iter().find(|(u, _)| *u == ALICE).unwrap().1
    );
    let r = common::run(Command::new("python3").arg("-c").arg(&script), b"");
    r.assert_ok("imaplib reading the bounce");
    let structure = r.stdout_text().to_ascii_lowercase();
    assert!(
        structure.contains("\"report\"") && structure.contains("\"delivery-status\""),
        "{structure}"
    );
    wait_for(
        "an empty queue on A",
        || queue_lines(&a).is_empty().then_some(()),
        || queue_lines(&a).join("\n"),
    );
    a.stop();
    b.stop();
}

#[test]
fn unreachable_until_max_age_gives_a_delay_notice_then_a_bounce() {
    // Nothing listens on port 9: every attempt is refused.
    let mut a = sender_a("127.0.0.1:9", "max_age = \"6s\"\ndelay_notice = \"2s\"\n");
    assert_eq!(
        submit(&a, &[DAVE], &message("doomed", "never arrives")),
        250
    );
    let delay = wait_for(
        "the delay notice",
        || inbox_with(&a, ALICE, "Delayed Mail (still being retried)"),
        || a.output(),
    );
    assert!(delay.contains("Action: delayed"), "{delay}");
    assert!(delay.contains("Will-Retry-Until:"), "{delay}");
    let bounce = wait_for(
        "the bounce after max_age",
        || inbox_with(&a, ALICE, "Undelivered Mail Returned to Sender"),
        || format!("{}\n{}", a.output(), queue_lines(&a).join("\n")),
    );
    assert!(bounce.contains("Status: 4.4.7"), "{bounce}");
    assert!(
        bounce.contains(&format!("Final-Recipient: rfc822; {DAVE}")),
        "{bounce}"
    );
    // One delay notice only, however many retries there were.
    let notices = a
        .export(ALICE)
        .iter()
        .filter(|m| String::from_utf8_lossy(m).contains("Delayed Mail"))
        .count();
    assert_eq!(notices, 1);
    wait_for(
        "an empty queue",
        || queue_lines(&a).is_empty().then_some(()),
        || queue_lines(&a).join("\n"),
    );
    a.stop();
}

#[test]
fn a_crash_mid_delivery_is_delivered_after_the_restart() {
    // A remote that accepts the connection and never says a word: A's first attempt hangs.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let mut b = remote_b();
    let mut a = sender_a(&format!("127.0.0.1:{silent_port}"), "");
    assert_eq!(submit(&a, &[DAVE], &message("survivor", "crash test")), 250);
    silent.set_nonblocking(false).unwrap();
    let (_held, _) = silent.accept().unwrap(); // A is now waiting for a greeting
    a.kill9();
    // Point A at B and start it again on the same data dir.
    let config = std::fs::read_to_string(&a.config_path).unwrap();
    let config = config.replace(
        &format!("127.0.0.1:{silent_port}"),
        &format!("127.0.0.1:{}", b.port()),
    );
    std::fs::write(&a.config_path, config).unwrap();
    a.restart();
    wait_for(
        "the message on B after A's restart",
        || inbox_with(&b, DAVE, "Subject: survivor"),
        || format!("A:\n{}\nB:\n{}", a.output(), b.output()),
    );
    a.stop();
    b.stop();
}

// ---------------------------------------------------------------------------------------------
// MX lookups against a real DNS server (unbound on loopback)

/// remote.test's MX is 127.0.0.1 (where B listens, on `[relay] port`); null.test has a null
/// MX; anything else under test. does not exist.
const ZONE: &str = r#"
  local-zone: "test." static
  local-data: "test. 3600 IN SOA ns.test. admin.test. 1 3600 600 86400 300"
  local-data: "remote.test. 300 IN MX 10 mx.remote.test."
  local-data: "mx.remote.test. 300 IN A 127.0.0.1"
  local-data: "null.test. 300 IN MX 0 ."
  local-data: "dead.test. 300 IN MX 10 mx.dead.test."
  local-data: "mx.dead.test. 300 IN A 127.0.0.3"
"#;

#[test]
fn mx_from_dns_delivers_and_null_mx_and_nxdomain_bounce_at_once() {
    let Some(dns) = common::unbound::Unbound::start(ZONE) else {
        return;
    };
    let mut b = remote_b();
    let mut a = Server::start(&format!(
        "[submission]\nallow_plaintext_auth = true\n[smtp]\nmax_recipients = 10\n\
         [dns]\nservers = [\"{}\"]\n\
         [relay]\nport = {}\nretry = [\"1h\"]\n",
        dns.addr,
        b.port()
    ));
    let code = submit(
        &a,
        &[
            DAVE,
            "nobody@null.test",
            "ghost@nxdomain.test",
            "zed@dead.test",
        ],
        &message("via-mx", "found through DNS"),
    );
    assert_eq!(code, 250);
    wait_for(
        "the message on B, found by MX lookup",
        || inbox_with(&b, DAVE, "Subject: via-mx"),
        || {
            format!(
                "A:\n{}\nB:\n{}\nunbound:\n{}",
                a.output(),
                b.output(),
                dns.log()
            )
        },
    );
    // Both permanent routing failures bounce on the first attempt (retry is an hour).
    let bounces = wait_for(
        "bounces for the null MX and the missing domain",
        || {
            let texts: Vec<String> = a
                .export(ALICE)
                .into_iter()
                .map(|m| String::from_utf8_lossy(&m).into_owned())
                .filter(|m| m.contains("Undelivered Mail Returned to Sender"))
                .collect();
            let all = texts.join("\n");
            (all.contains("rfc822; nobody@null.test")
                && all.contains("rfc822; ghost@nxdomain.test"))
            .then_some(all)
        },
        || format!("{}\n{}", a.output(), queue_lines(&a).join("\n")),
    );
    assert!(
        bounces.contains("Status: 5.1.10"),
        "null MX (RFC 7505):\n{bounces}"
    );
    assert!(bounces.contains("Status: 5.1.2"), "NXDOMAIN:\n{bounces}");
    assert!(!bounces.contains(&format!("rfc822; {DAVE}")), "{bounces}");
    // The unreachable MX (nothing listens on 127.0.0.3) is deferred, not bounced: what is
    // left in the queue is that recipient alone.
    let left = wait_for(
        "only the unreachable recipient left, deferred",
        || {
            let lines = queue_lines(&a);
            (lines.len() == 1
                && lines[0].contains("zed@dead.test(deferred)")
                && !lines[0].contains("nobody@null.test(deferred)"))
            .then(|| lines[0].clone())
        },
        || queue_lines(&a).join("\n"),
    );
    let r = ringmail(
        &["queue", "list", "--json", "--config", a.config_str()],
        b"",
    );
    r.assert_ok("queue list --json");
    let zed = common::run(
        Command::new("python3").args([
            "-c",
            "import json,sys; e=json.load(sys.stdin)[0]; \
             print([r['error'] for r in e['recipients'] if r['address']=='zed@dead.test'][0])",
        ]),
        &r.stdout,
    );
    zed.assert_ok("json");
    assert!(
        zed.stdout_text().contains("127.0.0.3"),
        "{left}\n{}",
        zed.stdout_text()
    );
    assert!(!bounces.contains("zed@dead.test"), "{bounces}");
    a.stop();
    b.stop();
}

#[test]
fn tls_to_the_remote_is_verified_where_configured() {
    let mut b = remote_b();
    // B's certificate (self-signed, names 127.0.0.1) as the trusted root: verified delivery.
    let mut a = sender_a(
        &format!("127.0.0.1:{}", b.port()),
        &format!(
            "tls_verify_domains = [\"remote.test\"]\ntls_ca_file = {:?}\n",
            b.cert_path()
        ),
    );
    assert_eq!(
        submit(&a, &[DAVE], &message("verified", "over verified TLS")),
        250
    );
    let got = wait_for(
        "the message on B",
        || inbox_with(&b, DAVE, "Subject: verified"),
        || format!("A:\n{}\nB:\n{}", a.output(), b.output()),
    );
    assert!(
        got.contains("with ESMTPS id"),
        "not received over TLS:\n{got}"
    );
    a.stop();
    // Another root: the certificate does not verify and the message waits.
    let other = remote_b();
    let mut a2 = sender_a(
        &format!("127.0.0.1:{}", b.port()),
        &format!(
            "tls_verify_domains = [\"remote.test\"]\ntls_ca_file = {:?}\n",
            other.cert_path()
        ),
    );
    assert_eq!(
        submit(&a2, &[DAVE], &message("unverified", "must not go")),
        250
    );
    let line = wait_for(
        "a deferred attempt",
        || {
            queue_lines(&a2)
                .into_iter()
                .find(|l| l.contains("(deferred)"))
        },
        || a2.output(),
    );
    assert!(
        inbox_with(&b, DAVE, "Subject: unverified").is_none(),
        "{line}"
    );
    a2.stop();
    b.stop();
    drop(other);
}

#[test]
fn opportunistic_tls_is_used_when_offered() {
    let mut b = remote_b();
    let mut a = sender_a(&format!("127.0.0.1:{}", b.port()), "");
    assert_eq!(
        submit(&a, &[DAVE], &message("opportunistic", "encrypted anyway")),
        250
    );
    let got = wait_for(
        "the message on B",
        || inbox_with(&b, DAVE, "Subject: opportunistic"),
        || format!("A:\n{}\nB:\n{}", a.output(), b.output()),
    );
    assert!(got.contains("with ESMTPS id"), "STARTTLS not used:\n{got}");
    a.stop();
    b.stop();
}

// ---------------------------------------------------------------------------------------------
// Postfix's smtp-sink as the remote

struct Sink {
    child: Child,
    port: u16,
    dump: tempfile::TempDir,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `smtp-sink` on a free port with `flags`, dumping each message into its own file.
fn smtp_sink(flags: &[&str]) -> Option<Sink> {
    if !Path::new(SMTP_SINK).exists() {
        eprintln!("SKIPPED: {SMTP_SINK} not installed (.ci/run installs postfix)");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    Some(wait_for(
        "smtp-sink to listen",
        || smtp_sink_on(port, flags),
        String::new,
    ))
}

/// `smtp-sink` on `port`, once it accepts connections (None: not yet, e.g. the port is
/// still held by a sink that is going away).
fn smtp_sink_on(port: u16, flags: &[&str]) -> Option<Sink> {
    let dump = tempfile::tempdir().ok()?;
    // smtp-sink drops privileges to nobody before it writes the dumps.
    std::fs::set_permissions(
        dump.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .ok()?;
    let mut cmd = Command::new(SMTP_SINK);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.args(["-u", "nobody"]);
    }
    let child = cmd
        .args(flags)
        .arg("-d")
        .arg(dump.path().join("%Y%m%d%H%M%S."))
        .arg(format!("127.0.0.1:{port}"))
        .arg("10")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut sink = Sink { child, port, dump };
    for _ in 0..50 {
        if sink.child.try_wait().ok().flatten().is_some() {
            return None;
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(sink);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn dumps(sink: &Sink) -> Vec<Vec<u8>> {
    std::fs::read_dir(sink.dump.path())
        .map(|d| {
            d.filter_map(|e| std::fs::read(e.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_4xx_is_retried_and_delivered_once_the_remote_accepts() {
    let Some(refusing) = smtp_sink(&["-r", "RCPT"]) else {
        return;
    };
    let port = refusing.port;
    let mut a = sender_a(&format!("127.0.0.1:{port}"), "");
    assert_eq!(
        submit(&a, &[DAVE], &message("retried", "second time lucky")),
        250
    );
    let line = wait_for(
        "a deferred attempt",
        || {
            queue_lines(&a)
                .into_iter()
                .find(|l| l.contains("(deferred)") && l.contains("\t4"))
        },
        || queue_lines(&a).join("\n"),
    );
    assert!(line.contains(DAVE), "{line}");
    drop(refusing);
    // The same port, now accepting.
    let accepting = wait_for(
        "a new smtp-sink on the same port",
        || smtp_sink_on(port, &[]),
        String::new,
    );
    let got = wait_for(
        "the message at the sink",
        || {
            dumps(&accepting)
                .into_iter()
                .find(|d| String::from_utf8_lossy(d).contains("Subject: retried"))
        },
        || format!("{}\n{}", a.output(), queue_lines(&a).join("\n")),
    );
    assert!(String::from_utf8_lossy(&got).contains("second time lucky"));
    wait_for(
        "an empty queue",
        || queue_lines(&a).is_empty().then_some(()),
        || queue_lines(&a).join("\n"),
    );
    a.stop();
}

#[test]
fn eight_bit_to_a_remote_without_8bitmime_is_downgraded_and_intact() {
    let Some(sink) = smtp_sink(&["-8"]) else {
        return;
    };
    let mut a = sender_a(&format!("127.0.0.1:{}", sink.port), "");
    let text = "Grüße aus Köln – naïve café, 日本語のテキスト.";
    let msg = format!(
        "From: <{ALICE}>\r\nTo: <{DAVE}>\r\nSubject: eightbit\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{text}\r\n"
    );
    assert_eq!(submit(&a, &[DAVE], msg.as_bytes()), 250);
    let got = wait_for(
        "the message at the sink",
        || {
            dumps(&sink)
                .into_iter()
                .find(|d| String::from_utf8_lossy(d).contains("Subject: eightbit"))
        },
        || format!("{}\n{}", a.output(), queue_lines(&a).join("\n")),
    );
    assert!(
        got.iter().all(|&b| b < 0x80),
        "8-bit bytes reached a 7-bit remote"
    );
    let got = String::from_utf8(got).unwrap();
    assert!(
        got.contains("Content-Transfer-Encoding: quoted-printable"),
        "{got}"
    );
    // Decode the body with Python's quopri: it must be the original text.
    let body = got
        .split("\r\n\r\n")
        .nth(1)
        .or_else(|| got.split("\n\n").nth(1))
        .unwrap();
    let r = common::run(
        Command::new("python3").args([
            "-c",
            "import quopri,sys; sys.stdout.buffer.write(quopri.decodestring(sys.stdin.buffer.read()))",
        ]),
        body.as_bytes(),
    );
    r.assert_ok("quopri");
    assert!(
        String::from_utf8_lossy(&r.stdout).contains(text),
        "decoded: {}",
        String::from_utf8_lossy(&r.stdout)
    );
    a.stop();
}
