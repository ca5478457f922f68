//! End-to-end: ringmail-loadgen against a tiny SMTP sink on 127.0.0.1:0 (one
//! thread per connection, std::net). The sink decides each message's fate,
//! checks what it receives and counts; the tests check that loadgen's counts
//! match the sink's and add up, through the library and through the binary.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringmail_loadgen::args::{parse_args, Command as Cli, SmtpConfig};
use ringmail_loadgen::report;
use ringmail_loadgen::run::run;
use simd_json::prelude::*;

const SINK_CONNECTIONS_MAX: usize = 1_000;
const SINK_LINE_BYTES_MAX: usize = 1_000;
/// A sink connection silent this long is dropped (loadgen's own reply timeout is 30 s).
const SINK_READ_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy)]
struct SinkPlan {
    pipelining: bool,
    /// Final reply to message number n (in the order the sink received them).
    verdict: fn(u64) -> &'static str,
    /// Never answer the end of data (to test the deadline).
    stall_after_data: bool,
}

impl Default for SinkPlan {
    fn default() -> Self {
        SinkPlan {
            pipelining: true,
            verdict: |_| "250 2.0.0 queued\r\n",
            stall_after_data: false,
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
    sizes: Mutex<Vec<usize>>,
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
                std::thread::spawn(move || {
                    if let Err(e) = serve(stream, plan, &counts) {
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
}

fn serve(stream: TcpStream, plan: SinkPlan, counts: &SinkCounts) -> Result<(), String> {
    // Replies go out one write per line (split reads for the client); without
    // TCP_NODELAY, Nagle + delayed ACK would add 40 ms to pipelined batches.
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(SINK_READ_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut out = stream.try_clone().map_err(|e| e.to_string())?;
    let mut lines = BufReader::new(stream);
    let mut say = |text: &str| out.write_all(text.as_bytes()).map_err(|e| e.to_string());
    say("220 sink.test ESMTP\r\n")?;
    let mut line = Vec::new();
    let mut rcpts_ok = 0;
    loop {
        if !read_line(&mut lines, &mut line)? {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line).to_ascii_uppercase();
        if !text.ends_with("\r\n") {
            return Err(format!("command without CRLF: {text:?}"));
        }
        let verb = text.split([' ', '\r']).next().unwrap_or("");
        match verb {
            "EHLO" if plan.pipelining => {
                say("250-sink.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")?
            }
            "EHLO" => say("250-sink.test\r\n250 8BITMIME\r\n")?,
            "MAIL" => {
                rcpts_ok = 0;
                say("250 2.1.0 ok\r\n")?
            }
            "RCPT" if text.contains("<BAD@") => {
                counts.rcpt_rejected.fetch_add(1, Ordering::SeqCst);
                say("550 5.1.1 no such user\r\n")?
            }
            "RCPT" => {
                rcpts_ok += 1;
                say("250 2.1.5 ok\r\n")?
            }
            "DATA" if rcpts_ok == 0 => say("554 5.5.1 no valid recipients\r\n")?,
            "DATA" => {
                say("354 go ahead\r\n")?;
                let (size, message_id) = read_message(&mut lines)?;
                counts.sizes.lock().unwrap().push(size);
                if !counts
                    .message_ids
                    .lock()
                    .unwrap()
                    .insert(message_id.clone())
                {
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
                say(verdict)?
            }
            "RSET" => say("250 2.0.0 ok\r\n")?,
            "QUIT" => return say("221 2.0.0 bye\r\n"),
            _ => say("502 5.5.2 what\r\n")?,
        }
    }
}

/// Reads one line (at most [`SINK_LINE_BYTES_MAX`] + 1 bytes: a longer one comes back cut,
/// without its LF) into `line`; false at EOF.
fn read_line(lines: &mut BufReader<TcpStream>, line: &mut Vec<u8>) -> Result<bool, String> {
    line.clear();
    let n = lines
        .take(SINK_LINE_BYTES_MAX as u64 + 1)
        .read_until(b'\n', line)
        .map_err(|e| e.to_string())?;
    Ok(n > 0)
}

/// Reads a DATA payload up to `.\r\n`; returns its size and Message-ID.
fn read_message(lines: &mut BufReader<TcpStream>) -> Result<(usize, String), String> {
    let mut size = 0;
    let mut message_id = String::new();
    let mut line = Vec::new();
    loop {
        if !read_line(lines, &mut line)? {
            return Err("EOF inside DATA".into());
        }
        if line == b".\r\n" {
            return Ok((size, message_id));
        }
        if !line.ends_with(b"\r\n") || line.len() > SINK_LINE_BYTES_MAX {
            return Err(format!(
                "bad message line {:?}",
                String::from_utf8_lossy(&line)
            ));
        }
        if line.starts_with(b".") {
            return Err("line starts with a dot".into());
        }
        if let Some(id) = line.strip_prefix(b"Message-ID: ") {
            message_id = String::from_utf8_lossy(id).trim_end().to_string();
        }
        size += line.len();
    }
}

fn config(sink: &Sink, extra: &[&str]) -> SmtpConfig {
    let target = sink.addr.to_string();
    let mut args = vec!["smtp", "--target", &target, "--duration-secs", "20"];
    args.extend_from_slice(extra);
    match parse_args(args, 2).unwrap() {
        Cli::Smtp(c) => *c,
        Cli::Help => unreachable!(),
    }
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

#[test]
fn epoll_pipelined_counts_match_the_sink_and_add_up() {
    let sink = Sink::start(SinkPlan {
        verdict: mixed_verdict,
        ..SinkPlan::default()
    });
    let cfg = config(
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
    let result = run(&cfg);
    let s = &result.stats;
    sink.assert_clean();
    assert_eq!(s.sent, 300);
    assert_eq!(s.ok, sink.get(&sink.counts.ok));
    assert_eq!(s.tempfail, sink.get(&sink.counts.tempfail));
    assert_eq!(s.permfail, sink.get(&sink.counts.permfail));
    assert!(s.ok > 0 && s.tempfail > 0 && s.permfail > 0, "{s:?}");
    assert_eq!(s.ok + s.tempfail + s.permfail, 300);
    assert_eq!((s.errors, s.aborted), (0, 0), "{:?}", s.first_error);
    assert_eq!(s.latency.count(), 300);
    assert_eq!((s.connects, s.sessions_pipelined), (4, 4));
    assert_eq!(sink.get(&sink.counts.connections), 4);
    let sizes = sink.counts.sizes.lock().unwrap();
    assert_eq!(sizes.len(), 300);
    assert!(
        sizes.iter().all(|&n| n == 1000),
        "every message is exactly --size bytes"
    );
    assert_eq!(sink.counts.message_ids.lock().unwrap().len(), 300);

    let mut json = report::json(&cfg, &result).into_bytes();
    let doc = simd_json::to_owned_value(&mut json).unwrap();
    assert_eq!(doc.get_u64("sent"), Some(300));
    assert_eq!(doc.get_u64("ok_2xx"), Some(s.ok));
    assert_eq!(doc.get_u64("tempfail_4xx"), Some(s.tempfail));
    assert_eq!(doc.get_u64("permfail_5xx"), Some(s.permfail));
    assert_eq!(doc.get("latency_us").unwrap().get_u64("count"), Some(300));
}

#[test]
fn blocking_unpipelined_with_reconnects_matches_the_sink() {
    let sink = Sink::start(SinkPlan {
        pipelining: false,
        verdict: mixed_verdict,
        ..SinkPlan::default()
    });
    let cfg = config(
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
    let s = run(&cfg).stats;
    sink.assert_clean();
    assert_eq!(s.sent, 200);
    assert_eq!(
        (s.ok, s.tempfail, s.permfail),
        (
            sink.get(&sink.counts.ok),
            sink.get(&sink.counts.tempfail),
            sink.get(&sink.counts.permfail)
        )
    );
    assert_eq!(s.ok + s.tempfail + s.permfail, 200);
    assert_eq!((s.errors, s.aborted), (0, 0), "{:?}", s.first_error);
    // 4 slots × 50 messages, 10 per session.
    assert_eq!(s.connects, 20);
    assert_eq!(sink.get(&sink.counts.connections), 20);
    assert_eq!((s.sessions_pipelined, s.sessions_unpipelined), (0, 20));
}

#[test]
fn rejected_recipients_are_permanent_failures_without_data() {
    let sink = Sink::start(SinkPlan::default());
    let cfg = config(
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
    let s = run(&cfg).stats;
    sink.assert_clean();
    assert_eq!(
        (s.sent, s.ok, s.permfail, s.errors),
        (40, 20, 20, 0),
        "{:?}",
        s.first_error
    );
    assert_eq!(sink.get(&sink.counts.rcpt_rejected), 20);
    assert_eq!(
        sink.get(&sink.counts.messages),
        20,
        "no DATA for rejected messages"
    );
    assert_eq!(s.latency.count(), 20);
}

#[test]
fn deadline_stops_a_stalled_run_and_aborts_in_flight_messages() {
    let sink = Sink::start(SinkPlan {
        stall_after_data: true,
        ..SinkPlan::default()
    });
    let mut cfg = config(&sink, &["--connections", "3", "--messages", "100"]);
    cfg.duration = Duration::from_millis(600);
    let started = Instant::now();
    let s = run(&cfg).stats;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!((s.sent, s.aborted, s.ok), (3, 3, 0));
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
    let json_path =
        std::env::temp_dir().join(format!("ringmail-loadgen-e2e-{}.json", std::process::id()));
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
        .args(["--size", "2048", "--duration-secs", "20", "--json"])
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
    assert!(stdout.contains("pipelining=yes"), "{stdout}");
    let mut json = std::fs::read(&json_path).unwrap();
    let _ = std::fs::remove_file(&json_path);
    let doc = simd_json::to_owned_value(&mut json).unwrap();
    assert_eq!(doc.get_u64("sent"), Some(90));
    assert_eq!(doc.get_u64("ok_2xx"), Some(ok));
    assert_eq!(doc.get_u64("tempfail_4xx"), Some(tempfail));
    assert_eq!(doc.get_u64("permfail_5xx"), Some(permfail));
    assert_eq!(doc.get("config").unwrap().get_u64("size_bytes"), Some(2048));
    assert!(doc.get_f64("throughput_msgs_per_sec").unwrap() > 0.0);
}

#[test]
fn binary_exits_2_on_usage_errors() {
    for args in [
        &["smtp", "--target", "127.0.0.1:25", "--connections", "0"][..],
        &["smtp", "--target", "192.0.2.1:25"],
        &["smtp", "--bogus"],
        &["pop3"],
        &[],
    ] {
        let output = binary().args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("usage:"),
            "{args:?}"
        );
    }
    let help = binary().arg("--help").output().unwrap();
    assert_eq!(help.status.code(), Some(0));
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
        ])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("nothing sent"));
    assert!(String::from_utf8_lossy(&output.stdout).contains("sent=0 "));
    assert!(started.elapsed() < Duration::from_secs(3));
}
