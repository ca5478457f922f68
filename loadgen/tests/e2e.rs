//! End-to-end: ringmail-loadgen against a tiny SMTP sink on 127.0.0.1:0 (one
//! thread per connection, std::net, rustls for STARTTLS / implicit TLS with a
//! throwaway rcgen certificate, AUTH PLAIN/LOGIN against a user list). The sink
//! decides each message's fate, checks what it receives and counts; the tests
//! check that loadgen's counts match the sink's and add up, through the
//! library ([`run_smtp`] → [`Outcome`]) and through the binary.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringmail_loadgen::args::{parse_args, Command as Cli, SmtpConfig};
use ringmail_loadgen::client::base64;
use ringmail_loadgen::outcome::{OpOutcome, Outcome};
use ringmail_loadgen::progress::Progress;
use ringmail_loadgen::report;
use ringmail_loadgen::run::run_smtp;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use simd_json::prelude::*;

const SINK_CONNECTIONS_MAX: usize = 1_000;
const SINK_LINE_BYTES_MAX: usize = 1_000;
/// A sink connection silent this long is dropped (loadgen's own reply timeout is 30 s).
const SINK_READ_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq, Eq)]
enum SinkTls {
    StartTls,
    Implicit,
}

#[derive(Clone)]
struct SinkPlan {
    pipelining: bool,
    /// Final reply to message number n (in the order the sink received them).
    verdict: fn(u64) -> &'static str,
    /// Never answer the end of data (to test the deadline).
    stall_after_data: bool,
    /// Every Message-ID must be new (off for --eml-dir, which repeats files).
    unique_ids: bool,
    tls: Option<(SinkTls, Arc<ServerConfig>)>,
    /// Accepted `(login, password)`s; AUTH is required before MAIL when set.
    users: Option<Vec<(String, String)>>,
}

impl Default for SinkPlan {
    fn default() -> Self {
        SinkPlan {
            pipelining: true,
            verdict: |_| "250 2.0.0 queued\r\n",
            stall_after_data: false,
            unique_ids: true,
            tls: None,
            users: None,
        }
    }
}

#[derive(Default)]
struct SinkCounts {
    connections: AtomicU64,
    messages: AtomicU64,
    ok: AtomicU64,
    tempfail: AtomicU64,
    permfail: AtomicU64,
    rcpt_rejected: AtomicU64,
    tls_sessions: AtomicU64,
    auth_ok: AtomicU64,
    auth_failed: AtomicU64,
    sizes: Mutex<Vec<usize>>,
    bodies: Mutex<Vec<Vec<u8>>>,
    message_ids: Mutex<HashSet<String>>,
    problems: Mutex<Vec<String>>,
}

struct Sink {
    addr: SocketAddr,
    counts: Arc<SinkCounts>,
}

impl Sink {
    fn start(plan: SinkPlan) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(SinkCounts::default());
        let shared = counts.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(SINK_CONNECTIONS_MAX) {
                let Ok(stream) = stream else { continue };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let counts = shared.clone();
                let plan = plan.clone();
                std::thread::spawn(move || {
                    if let Err(e) = serve(stream, &plan, &counts) {
                        counts.problems.lock().unwrap().push(e);
                    }
                });
            }
        });
        Sink { addr, counts }
    }

    fn get(&self, counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }

    fn assert_clean(&self) {
        let problems = self.counts.problems.lock().unwrap();
        assert!(problems.is_empty(), "sink saw problems: {problems:?}");
    }

    /// Asserts the message op's counts are the sink's, and add up to `sent`.
    fn assert_counts_match(&self, o: &Outcome, sent: u64) {
        let m = message(o);
        assert_eq!(m.ok, self.get(&self.counts.ok), "ok");
        assert_eq!(m.tempfail, self.get(&self.counts.tempfail), "tempfail");
        assert_eq!(m.permfail, self.get(&self.counts.permfail), "permfail");
        assert_eq!(m.ok + m.tempfail + m.permfail + m.aborted, sent);
        assert_eq!(config(o, "sent"), sent.to_string());
    }
}

/// The sink's side of one connection: plain, then maybe TLS.
enum Io {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
    Gone,
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Io::Plain(s) => s.read(buf),
            Io::Tls(s) => s.read(buf),
            Io::Gone => Ok(0),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Io::Plain(s) => s.write(buf),
            Io::Tls(s) => s.write(buf),
            Io::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Io::Plain(s) => s.flush(),
            Io::Tls(s) => s.flush(),
            Io::Gone => Ok(()),
        }
    }
}

/// A line reader over [`Io`] whose unread bytes can be checked before TLS starts.
struct Lines {
    io: Io,
    pending: Vec<u8>,
}

impl Lines {
    /// Reads one line (a longer one than [`SINK_LINE_BYTES_MAX`] comes back cut,
    /// without its LF) into `line`; false at EOF.
    fn read_line(&mut self, line: &mut Vec<u8>) -> Result<bool, String> {
        line.clear();
        loop {
            let newline = self.pending.as_slice().iter().position(|&b| b == b'\n');
            if let Some(end) = newline {
                line.extend_from_slice(&self.pending[..=end]);
                self.pending.drain(..=end);
                return Ok(true);
            }
            if self.pending.len() > SINK_LINE_BYTES_MAX {
                line.append(&mut self.pending);
                return Ok(true);
            }
            let mut chunk = [0u8; 4096];
            let n = self.io.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                line.append(&mut self.pending);
                return Ok(!line.is_empty());
            }
            self.pending.extend_from_slice(&chunk[..n]);
        }
    }

    fn say(&mut self, text: &str) -> Result<(), String> {
        self.io
            .write_all(text.as_bytes())
            .and_then(|()| self.io.flush())
            .map_err(|e| e.to_string())
    }

    fn start_tls(&mut self, config: &Arc<ServerConfig>) -> Result<(), String> {
        if !self.pending.is_empty() {
            return Err("client pipelined bytes after STARTTLS".into());
        }
        let Io::Plain(tcp) = std::mem::replace(&mut self.io, Io::Gone) else {
            return Err("TLS started twice".into());
        };
        let conn = ServerConnection::new(config.clone()).map_err(|e| e.to_string())?;
        self.io = Io::Tls(Box::new(StreamOwned::new(conn, tcp)));
        Ok(())
    }
}

fn serve(stream: TcpStream, plan: &SinkPlan, counts: &SinkCounts) -> Result<(), String> {
    // Replies go out one write per line (split reads for the client); without
    // TCP_NODELAY, Nagle + delayed ACK would add 40 ms to pipelined batches.
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(SINK_READ_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut lines = Lines {
        io: Io::Plain(stream),
        pending: Vec::new(),
    };
    let mut tls_on = false;
    if let Some((SinkTls::Implicit, config)) = &plan.tls {
        lines.start_tls(config)?;
        tls_on = true;
        counts.tls_sessions.fetch_add(1, Ordering::SeqCst);
    }
    lines.say("220 sink.test ESMTP\r\n")?;
    let mut line = Vec::new();
    let mut rcpts_ok = 0;
    let mut authenticated = false;
    loop {
        if !lines.read_line(&mut line)? {
            return Ok(());
        }
        let original = String::from_utf8_lossy(&line).to_string();
        let text = original.to_ascii_uppercase();
        if !text.ends_with("\r\n") {
            return Err(format!("command without CRLF: {text:?}"));
        }
        let verb = text.split([' ', '\r']).next().unwrap_or("");
        let needs_tls = plan.tls.is_some() && !tls_on;
        let needs_auth = plan.users.is_some() && !authenticated;
        match verb {
            "EHLO" => {
                let mut reply = String::from("250-sink.test\r\n");
                if plan.pipelining {
                    reply.push_str("250-PIPELINING\r\n");
                }
                if needs_tls {
                    reply.push_str("250-STARTTLS\r\n");
                }
                if plan.users.is_some() && !needs_tls {
                    reply.push_str("250-AUTH PLAIN LOGIN\r\n");
                }
                reply.push_str("250 8BITMIME\r\n");
                lines.say(&reply)?
            }
            "STARTTLS" => {
                let Some((SinkTls::StartTls, config)) = &plan.tls else {
                    return Err("STARTTLS not offered".into());
                };
                if tls_on {
                    return Err("STARTTLS twice".into());
                }
                lines.say("220 2.0.0 go ahead\r\n")?;
                lines.start_tls(config)?;
                tls_on = true;
                counts.tls_sessions.fetch_add(1, Ordering::SeqCst);
            }
            "AUTH" => {
                let users = plan.users.as_ref().ok_or("AUTH not offered")?;
                if needs_tls {
                    return Err("AUTH before TLS".into());
                }
                let words: Vec<&str> = original.split_whitespace().collect();
                let ok = match words.get(1).map(|m| m.to_ascii_uppercase()).as_deref() {
                    Some("PLAIN") => {
                        let response = words.get(2).copied().unwrap_or("");
                        users
                            .iter()
                            .any(|(u, p)| base64(format!("\0{u}\0{p}").as_bytes()) == response)
                    }
                    Some("LOGIN") => {
                        lines.say("334 VXNlcm5hbWU6\r\n")?;
                        lines.read_line(&mut line)?;
                        let user = String::from_utf8_lossy(&line).trim_end().to_string();
                        lines.say("334 UGFzc3dvcmQ6\r\n")?;
                        lines.read_line(&mut line)?;
                        let pass = String::from_utf8_lossy(&line).trim_end().to_string();
                        users.iter().any(|(u, p)| {
                            base64(u.as_bytes()) == user && base64(p.as_bytes()) == pass
                        })
                    }
                    _ => return Err(format!("bad AUTH {original:?}")),
                };
                if ok {
                    authenticated = true;
                    counts.auth_ok.fetch_add(1, Ordering::SeqCst);
                    lines.say("235 2.7.0 ok\r\n")?
                } else {
                    counts.auth_failed.fetch_add(1, Ordering::SeqCst);
                    lines.say("535 5.7.8 authentication failed\r\n")?
                }
            }
            "MAIL" if needs_tls || needs_auth => {
                return Err(format!("MAIL before TLS/AUTH: {original:?}"));
            }
            "MAIL" => {
                rcpts_ok = 0;
                lines.say("250 2.1.0 ok\r\n")?
            }
            "RCPT" if text.contains("<BAD@") => {
                counts.rcpt_rejected.fetch_add(1, Ordering::SeqCst);
                lines.say("550 5.1.1 no such user\r\n")?
            }
            "RCPT" => {
                rcpts_ok += 1;
                lines.say("250 2.1.5 ok\r\n")?
            }
            "DATA" if rcpts_ok == 0 => lines.say("554 5.5.1 no valid recipients\r\n")?,
            "DATA" => {
                lines.say("354 go ahead\r\n")?;
                let (body, message_id) = read_message(&mut lines)?;
                counts.sizes.lock().unwrap().push(body.len());
                counts.bodies.lock().unwrap().push(body);
                let new_id = counts
                    .message_ids
                    .lock()
                    .unwrap()
                    .insert(message_id.clone());
                if plan.unique_ids && !new_id {
                    return Err(format!("duplicate {message_id}"));
                }
                if plan.stall_after_data {
                    std::thread::sleep(Duration::from_secs(5));
                    return Ok(());
                }
                let n = counts.messages.fetch_add(1, Ordering::SeqCst);
                let verdict = (plan.verdict)(n);
                let counter = match verdict.as_bytes()[0] {
                    b'2' => &counts.ok,
                    b'4' => &counts.tempfail,
                    _ => &counts.permfail,
                };
                counter.fetch_add(1, Ordering::SeqCst);
                lines.say(verdict)?
            }
            "RSET" => lines.say("250 2.0.0 ok\r\n")?,
            "QUIT" => return lines.say("221 2.0.0 bye\r\n"),
            _ => lines.say("502 5.5.2 what\r\n")?,
        }
    }
}

/// Reads a DATA payload up to `.\r\n`; returns it (dot-stuffing undone) and its Message-ID.
fn read_message(lines: &mut Lines) -> Result<(Vec<u8>, String), String> {
    let mut body = Vec::new();
    let mut message_id = String::new();
    let mut line = Vec::new();
    loop {
        if !lines.read_line(&mut line)? {
            return Err("EOF inside DATA".into());
        }
        if line == b".\r\n" {
            return Ok((body, message_id));
        }
        if !line.ends_with(b"\r\n") || line.len() > SINK_LINE_BYTES_MAX {
            return Err(format!(
                "bad message line {:?}",
                String::from_utf8_lossy(&line)
            ));
        }
        if let Some(id) = line.strip_prefix(b"Message-ID: ") {
            message_id = String::from_utf8_lossy(id).trim_end().to_string();
        }
        let unstuffed = if line.starts_with(b"..") {
            &line[1..]
        } else if line.starts_with(b".") {
            return Err("line starts with a single dot".into());
        } else {
            &line[..]
        };
        body.extend_from_slice(unstuffed);
    }
}

fn cfg(sink: &Sink, extra: &[&str]) -> SmtpConfig {
    let target = sink.addr.to_string();
    let mut args = vec!["smtp", "--target", &target, "--duration-secs", "20"];
    args.extend_from_slice(extra);
    match parse_args(args, 2).unwrap() {
        Cli::Smtp(c) => *c,
        Cli::Help => unreachable!(),
    }
}

fn run(cfg: &SmtpConfig) -> (Outcome, Progress) {
    let progress = Progress::default();
    let outcome = run_smtp(cfg, &progress);
    (outcome, progress)
}

fn op<'o>(o: &'o Outcome, name: &str) -> &'o OpOutcome {
    o.op(name)
        .unwrap_or_else(|| panic!("no op {name} in {:?}", o.ops))
}

fn message(o: &Outcome) -> &OpOutcome {
    op(o, "message")
}

fn config(o: &Outcome, key: &str) -> String {
    o.config
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no config {key}"))
}

fn mixed_verdict(n: u64) -> &'static str {
    if n % 5 == 3 {
        "451 4.3.0 try again later\r\n"
    } else if n % 7 == 6 {
        "554 5.7.1 rejected\r\n"
    } else {
        "250 2.0.0 queued\r\n"
    }
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "ringmail-loadgen-e2e-{}-{name}",
        std::process::id()
    ))
}

/// A throwaway certificate for localhost/127.0.0.1: the server config and the PEM file.
fn tls_server(name: &str) -> (Arc<ServerConfig>, PathBuf) {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let pem = temp_path(name);
    std::fs::write(&pem, generated.cert.pem()).unwrap();
    let cert: CertificateDer<'static> = generated.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    (Arc::new(config), pem)
}

#[test]
fn epoll_pipelined_counts_match_the_sink_and_add_up() {
    let sink = Sink::start(SinkPlan {
        verdict: mixed_verdict,
        ..SinkPlan::default()
    });
    let cfg = cfg(
        &sink,
        &[
            "--connections",
            "4",
            "--messages",
            "300",
            "--size",
            "1000",
            "--threads",
            "2",
        ],
    );
    let (o, progress) = run(&cfg);
    sink.assert_clean();
    sink.assert_counts_match(&o, 300);
    let m = message(&o);
    assert!(m.ok > 0 && m.tempfail > 0 && m.permfail > 0, "{m:?}");
    assert_eq!((o.errors, m.aborted), (0, 0), "{:?}", o.first_error);
    assert_eq!(m.latency.count(), 300);
    assert_eq!(o.timeline.counts.iter().sum::<u64>(), m.ok);
    assert_eq!((progress.completed(), progress.errors()), (300, 0));
    assert_eq!(o.connects, 4);
    assert_eq!(op(&o, "session_setup").ok, 4);
    // Closed loop: no lateness, so no separate DATA -> reply operation.
    assert!(o.ops.iter().all(|op| op.name != "data_reply"));
    assert_eq!(config(&o, "pipelining_used"), "yes");
    assert_eq!(config(&o, "message_bytes"), "300000");
    assert_eq!(sink.get(&sink.counts.connections), 4);
    let sizes = sink.counts.sizes.lock().unwrap();
    assert_eq!(sizes.len(), 300);
    assert!(
        sizes.iter().all(|&n| n == 1000),
        "every message is exactly --size bytes"
    );
    assert_eq!(sink.counts.message_ids.lock().unwrap().len(), 300);

    let mut json = report::json(&o).into_bytes();
    let doc = simd_json::to_owned_value(&mut json).unwrap();
    assert_eq!(doc.get_str("protocol"), Some("smtp"));
    assert_eq!(doc.get_u64("ok_2xx"), Some(m.ok));
}

#[test]
fn blocking_unpipelined_with_reconnects_matches_the_sink() {
    let sink = Sink::start(SinkPlan {
        pipelining: false,
        verdict: mixed_verdict,
        ..SinkPlan::default()
    });
    let cfg = cfg(
        &sink,
        &[
            "--io",
            "blocking",
            "--connections",
            "4",
            "--messages",
            "200",
            "--per-connection",
            "10",
            "--size",
            "700",
        ],
    );
    let (o, _) = run(&cfg);
    sink.assert_clean();
    sink.assert_counts_match(&o, 200);
    assert_eq!(
        (o.errors, message(&o).aborted),
        (0, 0),
        "{:?}",
        o.first_error
    );
    // 4 slots × 50 messages, 10 per session.
    assert_eq!(o.connects, 20);
    assert_eq!(sink.get(&sink.counts.connections), 20);
    assert_eq!(config(&o, "pipelining_used"), "no");
}

#[test]
fn rejected_recipients_are_permanent_failures_without_data() {
    let sink = Sink::start(SinkPlan::default());
    let cfg = cfg(
        &sink,
        &[
            "--connections",
            "2",
            "--messages",
            "40",
            "--to",
            "good@x.test",
            "--to",
            "bad@x.test",
        ],
    );
    let (o, _) = run(&cfg);
    sink.assert_clean();
    let m = message(&o);
    assert_eq!(
        (m.ok, m.permfail, o.errors),
        (20, 20, 0),
        "{:?}",
        o.first_error
    );
    assert_eq!(sink.get(&sink.counts.rcpt_rejected), 20);
    assert_eq!(
        sink.get(&sink.counts.messages),
        20,
        "no DATA for rejected messages"
    );
}

#[test]
fn deadline_stops_a_stalled_run_and_aborts_in_flight_messages() {
    let sink = Sink::start(SinkPlan {
        stall_after_data: true,
        ..SinkPlan::default()
    });
    let mut cfg = cfg(&sink, &["--connections", "3", "--messages", "100"]);
    cfg.duration = Duration::from_millis(600);
    let started = Instant::now();
    let (o, _) = run(&cfg);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by the deadline"
    );
    let m = message(&o);
    assert_eq!((config(&o, "sent").as_str(), m.aborted, m.ok), ("3", 3, 0));
}

#[test]
fn open_loop_rate_counts_add_up_in_both_drivers() {
    for io in ["epoll", "blocking"] {
        let sink = Sink::start(SinkPlan {
            verdict: mixed_verdict,
            ..SinkPlan::default()
        });
        let cfg = cfg(
            &sink,
            &[
                "--connections",
                "3",
                "--messages",
                "60",
                "--rate",
                "400",
                "--threads",
                "2",
                "--io",
                io,
                "--size-dist",
                "800:3,1500:1",
            ],
        );
        let (o, progress) = run(&cfg);
        sink.assert_clean();
        sink.assert_counts_match(&o, 60);
        assert_eq!(
            (o.errors, message(&o).aborted),
            (0, 0),
            "{io}: {:?}",
            o.first_error
        );
        assert_eq!(progress.completed(), 60);
        assert_eq!(config(&o, "rate"), "400/s");
        // Every transaction reached the end of DATA (the sink decides there), so the
        // server's own DATA -> reply times count the same replies, each no longer than the
        // message's latency from its scheduled start.
        let d = o
            .ops
            .iter()
            .find(|op| op.name == "data_reply")
            .expect("an open-loop run reports data_reply");
        let m = message(&o);
        assert_eq!(
            (d.ok, d.tempfail, d.permfail),
            (m.ok, m.tempfail, m.permfail),
            "{io}"
        );
        assert!(d.latency.max_us() <= m.latency.max_us(), "{io}");
        let late: u64 = config(&o, "late").parse().unwrap();
        assert!(late <= 60);
        // Every connection opened once, stayed open and QUIT at the end.
        assert_eq!(o.connects, 3, "{io}");
        let sizes = sink.counts.sizes.lock().unwrap();
        assert!(sizes.iter().all(|&n| n == 800 || n == 1500), "{io}");
        assert!(sizes.contains(&800) && sizes.contains(&1500), "{io}");
    }
}

#[test]
fn auth_plain_and_login_round_robin_over_users() {
    for mechanism in ["PLAIN", "LOGIN"] {
        let sink = Sink::start(SinkPlan {
            users: Some(vec![
                ("alice@x.test".into(), "pw1".into()),
                ("bob".into(), "p:w 2".into()),
            ]),
            ..SinkPlan::default()
        });
        let cfg = cfg(
            &sink,
            &[
                "--connections",
                "4",
                "--messages",
                "80",
                "--per-connection",
                "10",
                "--auth",
                mechanism,
                "--auth-user",
                "alice@x.test:pw1",
                "--auth-user",
                "bob:p:w 2",
            ],
        );
        let (o, _) = run(&cfg);
        sink.assert_clean();
        sink.assert_counts_match(&o, 80);
        assert_eq!(o.errors, 0, "{mechanism}: {:?}", o.first_error);
        let auth = op(&o, "auth");
        assert_eq!((auth.ok, auth.permfail), (8, 0), "{mechanism}");
        assert_eq!(sink.get(&sink.counts.auth_ok), 8);
        assert_eq!(op(&o, "session_setup").ok, 8);
    }
}

#[test]
fn refused_auth_is_counted_and_the_run_gives_up() {
    let sink = Sink::start(SinkPlan {
        users: Some(vec![("alice".into(), "right".into())]),
        ..SinkPlan::default()
    });
    let cfg = cfg(
        &sink,
        &[
            "--connections",
            "2",
            "--messages",
            "10",
            "--auth-user",
            "alice:wrong",
        ],
    );
    let (o, progress) = run(&cfg);
    sink.assert_clean();
    let auth = op(&o, "auth");
    assert!(auth.permfail > 0 && auth.ok == 0, "{auth:?}");
    assert_eq!(auth.permfail, sink.get(&sink.counts.auth_failed));
    assert_eq!(o.errors, auth.permfail);
    assert_eq!(progress.errors(), o.errors);
    assert_eq!(config(&o, "sent"), "0");
    assert!(o.first_error.as_deref().unwrap().contains("refused"));
    assert!(!o.first_error.as_deref().unwrap().contains("wrong"));
}

#[test]
fn starttls_and_implicit_tls_with_and_without_verification() {
    let (server, pem) = tls_server("ca.pem");
    let pem_text = pem.display().to_string();
    // Sizes above rustls' 64 KiB send buffer make the writes partial.
    let cases: [(SinkTls, &str, &[&str]); 5] = [
        (
            SinkTls::StartTls,
            "epoll",
            &["--starttls", "--size-dist", "20000:1,300000:1"],
        ),
        (
            SinkTls::StartTls,
            "blocking",
            &["--starttls", "--size-dist", "20000:1,300000:1"],
        ),
        (
            SinkTls::StartTls,
            "epoll",
            &[
                "--starttls",
                "--tls-ca",
                &pem_text,
                "--tls-name",
                "localhost",
                "--size",
                "20000",
            ],
        ),
        (
            SinkTls::Implicit,
            "epoll",
            &["--tls", "--tls-ca", &pem_text, "--size", "20000"],
        ),
        (SinkTls::Implicit, "blocking", &["--tls", "--size", "20000"]),
    ];
    for (mode, io, tls_args) in cases {
        let sink = Sink::start(SinkPlan {
            tls: Some((mode, server.clone())),
            users: Some(vec![("alice".into(), "pw".into())]),
            verdict: mixed_verdict,
            ..SinkPlan::default()
        });
        let mut args = vec![
            "--connections",
            "3",
            "--messages",
            "90",
            "--per-connection",
            "15",
            "--auth-user",
            "alice:pw",
            "--io",
            io,
        ];
        args.extend_from_slice(tls_args);
        let cfg = cfg(&sink, &args);
        let (o, _) = run(&cfg);
        sink.assert_clean();
        sink.assert_counts_match(&o, 90);
        assert_eq!(o.errors, 0, "{tls_args:?}: {:?}", o.first_error);
        assert_eq!(sink.get(&sink.counts.tls_sessions), 6, "{tls_args:?}");
        assert_eq!(op(&o, "auth").ok, 6);
        let sizes = sink.counts.sizes.lock().unwrap();
        assert!(
            sizes.iter().all(|&n| n == 20000 || n == 300000),
            "{tls_args:?}"
        );
        assert!(sizes.contains(&20000), "{tls_args:?}");
    }
    // A certificate that does not name --tls-name is refused with --tls-ca.
    let sink = Sink::start(SinkPlan {
        tls: Some((SinkTls::Implicit, server.clone())),
        ..SinkPlan::default()
    });
    let cfg = cfg(
        &sink,
        &[
            "--tls",
            "--tls-ca",
            &pem_text,
            "--tls-name",
            "other.test",
            "--messages",
            "5",
        ],
    );
    let (o, _) = run(&cfg);
    std::fs::remove_file(&pem).unwrap();
    assert_eq!(message(&o).ok, 0);
    assert!(o.errors > 0);
    let error = o.first_error.unwrap();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
}

#[test]
fn eml_files_are_sent_as_stored_and_cycled() {
    let dir = temp_path("eml");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("1.eml"), "Subject: one\n\n.\nbody\n").unwrap();
    std::fs::write(dir.join("2.eml"), "Subject: two\r\n\r\n..x\r\n").unwrap();
    let sink = Sink::start(SinkPlan {
        unique_ids: false,
        ..SinkPlan::default()
    });
    let dir_text = dir.display().to_string();
    let cfg = cfg(
        &sink,
        &[
            "--connections",
            "1",
            "--messages",
            "4",
            "--eml-dir",
            &dir_text,
        ],
    );
    let (o, _) = run(&cfg);
    std::fs::remove_dir_all(&dir).unwrap();
    sink.assert_clean();
    sink.assert_counts_match(&o, 4);
    let bodies = sink.counts.bodies.lock().unwrap();
    let one: &[u8] = b"Subject: one\r\n\r\n.\r\nbody\r\n";
    let two: &[u8] = b"Subject: two\r\n\r\n..x\r\n";
    assert_eq!(
        *bodies,
        [one, two, one, two],
        "unstuffed by the sink: as stored"
    );
}

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringmail-loadgen"))
}

#[test]
fn binary_writes_json_that_matches_the_sink() {
    let sink = Sink::start(SinkPlan {
        verdict: mixed_verdict,
        ..SinkPlan::default()
    });
    let json_path = temp_path("run.json");
    let output = binary()
        .args([
            "smtp",
            "--target",
            &sink.addr.to_string(),
            "--connections",
            "3",
            "--messages",
            "90",
        ])
        .args([
            "--size",
            "2048",
            "--duration-secs",
            "20",
            "--quiet",
            "--json",
        ])
        .arg(&json_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    sink.assert_clean();
    let (ok, tempfail, permfail) = (
        sink.get(&sink.counts.ok),
        sink.get(&sink.counts.tempfail),
        sink.get(&sink.counts.permfail),
    );
    let line =
        format!("sent=90 ok(2xx)={ok} tempfail(4xx)={tempfail} permfail(5xx)={permfail} errors=0 ");
    assert!(stdout.contains(&line), "{stdout}");
    let mut json = std::fs::read(&json_path).unwrap();
    let _ = std::fs::remove_file(&json_path);
    let doc = simd_json::to_owned_value(&mut json).unwrap();
    assert_eq!(doc.get_u64("ok_2xx"), Some(ok));
    assert_eq!(doc.get_u64("tempfail_4xx"), Some(tempfail));
    assert_eq!(doc.get_u64("permfail_5xx"), Some(permfail));
}

#[test]
fn binary_exits_2_on_usage_errors() {
    for args in [
        &["smtp", "--target", "127.0.0.1:25", "--connections", "0"][..],
        &["smtp", "--target", "192.0.2.1:25"],
        &["smtp", "--bogus"],
        &["smtp", "--target", "127.0.0.1:25", "--tls", "--starttls"],
        &[
            "smtp",
            "--target",
            "127.0.0.1:25",
            "--eml-dir",
            "/nonexistent/dir",
        ],
    ] {
        let output = binary().args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("usage:"),
            "{args:?}"
        );
    }
    let help = binary().args(["smtp", "--help"]).output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--starttls"));
}

#[test]
fn binary_exits_1_when_the_target_refuses_connections() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let output = binary()
        .args([
            "smtp",
            "--target",
            &format!("127.0.0.1:{port}"),
            "--connections",
            "4",
            "--messages",
            "10",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("sent=0 "));
    assert!(started.elapsed() < Duration::from_secs(3));
}
