//! The binary's outputs end to end: `compare` over JSON files written from
//! test outcomes (table, ratios, HTML), and a real short `smtp` run against a
//! tiny SMTP sink on 127.0.0.1:0 whose JSON must validate, read back, and add
//! up to what the sink counted, with an HTML report beside it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringmail_loadgen::outcome::{Outcome, Timeline};
use ringmail_loadgen::report;
use simd_json::prelude::*;

const SINK_CONNECTIONS_MAX: usize = 100;
const SINK_LINE_BYTES_MAX: usize = 1_000;
const SINK_READ_TIMEOUT: Duration = Duration::from_secs(30);

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringmail-loadgen"))
}

fn run(args: &[&str]) -> (Output, String, String) {
    let output = binary().args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

/// A directory removed when the test ends (pass or fail).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "ringmail-loadgen-report-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An SMTP run of 2 s with `ok` accepted messages (so `ok / 2` msg/s).
fn outcome(label: &str, protocol: &str, ok: u64) -> Outcome {
    let mut o = Outcome {
        protocol: protocol.into(),
        label: label.into(),
        target: "127.0.0.1:2525".into(),
        config: vec![
            ("connections".into(), "20".into()),
            ("size_bytes".into(), "2048".into()),
        ],
        started_unix_ms: 1_795_000_000_000,
        elapsed: Duration::from_secs(2),
        headline: "message".into(),
        ops: Vec::new(),
        timeline: Timeline::for_duration(Duration::from_secs(10)),
        connects: 20,
        errors: 0,
        first_error: None,
    };
    let op = o.op_mut("message");
    op.ok = ok;
    for i in 0..ok {
        op.latency.record(100 + i * 7 % 5_000);
    }
    o.timeline.counts = vec![ok / 4; 4];
    o
}

fn cells<'a>(table: &'a str, row: &str) -> Vec<&'a str> {
    let line = table
        .lines()
        .find(|l| l.starts_with(row))
        .unwrap_or_else(|| panic!("no row {row} in\n{table}"));
    line[row.len()..].split_whitespace().collect()
}

fn assert_self_contained_html(path: &Path, labels: &[&str]) {
    let html = std::fs::read_to_string(path).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<svg"), "no plot");
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(!html.contains("<script"));
    for label in labels {
        assert!(html.contains(label), "{label} missing from the HTML");
    }
}

#[test]
fn compare_prints_both_labels_and_the_ratio_and_writes_the_html() {
    let dir = TempDir::new("compare");
    let (a, b, out) = (dir.file("a.json"), dir.file("b.json"), dir.file("out.html"));
    std::fs::write(&a, report::json(&outcome("ringmail <&>", "smtp", 400))).unwrap();
    std::fs::write(&b, report::json(&outcome("postfix", "smtp", 100))).unwrap();

    let (output, stdout, stderr) = run(&["compare", &a, &b, "--html", &out]);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(cells(&stdout, "run"), ["ringmail", "<&>", "postfix"]);
    assert_eq!(cells(&stdout, "rate"), ["200.0", "msg/s", "50.0", "msg/s"]);
    assert_eq!(cells(&stdout, "vs first"), ["1.00x", "0.25x"]);
    assert_eq!(cells(&stdout, "message ok"), ["400", "100"]);
    assert_self_contained_html(Path::new(&out), &["ringmail &lt;&amp;&gt;", "postfix"]);
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(!html.contains("ringmail <&>"), "label not escaped");
    assert!(html.contains("0.25×"));

    // The spelling is an alias.
    let (output, alias_stdout, _) = run(&["--compare", &a, &b]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(alias_stdout, stdout);
}

#[test]
fn compare_warns_on_mixed_protocols_and_fails_on_bad_input() {
    let dir = TempDir::new("compare-problems");
    let (smtp, imap) = (dir.file("smtp.json"), dir.file("imap.json"));
    std::fs::write(&smtp, report::json(&outcome("s", "smtp", 10))).unwrap();
    let mut other = outcome("i", "imap", 10);
    other.headline = "all".into();
    std::fs::write(&imap, report::json(&other)).unwrap();
    let (output, stdout, stderr) = run(&["compare", &smtp, &imap]);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("warning: different protocols"), "{stderr}");
    assert_eq!(cells(&stdout, "rate"), ["5.0", "msg/s", "5.0", "cmd/s"]);

    let missing = dir.file("missing.json");
    let garbage = dir.file("garbage.json");
    std::fs::write(&garbage, "{\"tool\":").unwrap();
    let (output, _, stderr) = run(&["compare", &smtp, &missing, &garbage]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("missing.json") && stderr.contains("garbage.json"),
        "{stderr}"
    );

    for args in [
        &["compare"][..],
        &["compare", &smtp, "--html"],
        &["compare", "--x", &smtp],
    ] {
        let (output, _, stderr) = run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(stderr.contains("usage:"), "{args:?}: {stderr}");
    }
    let (output, stdout, _) = run(&["compare", "--help"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout.contains("usage: ringmail-loadgen compare"));
}

#[test]
fn help_and_unknown_commands() {
    let (output, stdout, _) = run(&["help"]);
    assert_eq!(output.status.code(), Some(0));
    for command in ["smtp", "imap", "pop3", "compare"] {
        assert!(stdout.contains(command), "{command} missing from {stdout}");
    }
    let (output, stdout, _) = run(&["help", "smtp"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout.contains("--target"), "{stdout}");
    for args in [&["bogus"][..], &[], &["help", "bogus"]] {
        let (output, _, stderr) = run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(stderr.contains("usage:"), "{args:?}");
    }
}

/// What the sink saw, by final reply class after DATA.
#[derive(Default)]
struct SinkCounts {
    messages: AtomicU64,
    ok: AtomicU64,
    tempfail: AtomicU64,
    permfail: AtomicU64,
}

/// Accepts every message except every 7th (451) and every 11th (554).
fn start_sink() -> (SocketAddr, Arc<SinkCounts>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(SinkCounts::default());
    let shared = counts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(SINK_CONNECTIONS_MAX) {
            let Ok(stream) = stream else { continue };
            let counts = shared.clone();
            std::thread::spawn(move || {
                let _ = serve(stream, &counts);
            });
        }
    });
    (addr, counts)
}

fn serve(stream: TcpStream, counts: &SinkCounts) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(SINK_READ_TIMEOUT))?;
    let mut out = stream.try_clone()?;
    let mut lines = BufReader::new(stream);
    out.write_all(b"220 sink.test ESMTP\r\n")?;
    let mut line = Vec::new();
    loop {
        if !read_line(&mut lines, &mut line)? {
            return Ok(());
        }
        let verb = String::from_utf8_lossy(&line)
            .split([' ', '\r'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-sink.test\r\n250 PIPELINING\r\n",
            "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 ok\r\n",
            "DATA" => {
                out.write_all(b"354 go ahead\r\n")?;
                while read_line(&mut lines, &mut line)? && line != b".\r\n" {}
                let n = counts.messages.fetch_add(1, Ordering::SeqCst) + 1;
                let (reply, counter): (&[u8], _) = if n % 7 == 0 {
                    (b"451 4.3.0 later\r\n", &counts.tempfail)
                } else if n % 11 == 0 {
                    (b"554 5.7.1 no\r\n", &counts.permfail)
                } else {
                    (b"250 2.0.0 queued\r\n", &counts.ok)
                };
                counter.fetch_add(1, Ordering::SeqCst);
                reply
            }
            "QUIT" => return out.write_all(b"221 bye\r\n"),
            _ => b"502 5.5.2 what\r\n",
        };
        out.write_all(reply)?;
    }
}

/// One line of at most [`SINK_LINE_BYTES_MAX`] + 1 bytes; false at EOF.
fn read_line(lines: &mut BufReader<TcpStream>, line: &mut Vec<u8>) -> std::io::Result<bool> {
    line.clear();
    let n = lines
        .take(SINK_LINE_BYTES_MAX as u64 + 1)
        .read_until(b'\n', line)?;
    Ok(n > 0)
}

#[test]
fn a_real_smtp_run_writes_json_and_html_that_match_the_sink() {
    let (addr, sink) = start_sink();
    let dir = TempDir::new("real");
    let (json, html) = (dir.file("run.json"), dir.file("run.html"));
    let target = addr.to_string();
    let (output, stdout, stderr) = run(&[
        "smtp",
        "--target",
        &target,
        "--connections",
        "3",
        "--messages",
        "77",
        "--size",
        "1000",
        "--duration-secs",
        "20",
        "--threads",
        "1",
        "--json",
        &json,
        "--html",
        &html,
        "--label",
        "real sink",
        "--quiet",
    ]);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    let (ok, tempfail, permfail) = (
        sink.ok.load(Ordering::SeqCst),
        sink.tempfail.load(Ordering::SeqCst),
        sink.permfail.load(Ordering::SeqCst),
    );
    assert_eq!(
        (tempfail, permfail),
        (11, 6),
        "77 messages: 11 × 451, 6 × 554"
    );
    assert!(
        stdout.contains(&format!(
            "sent=77 ok(2xx)={ok} tempfail(4xx)={tempfail} permfail(5xx)={permfail} errors=0 "
        )),
        "{stdout}"
    );
    assert!(stdout.contains("data->250 latency us: p50="), "{stdout}");

    // Valid JSON for simd-json, with the keys scripts read.
    let mut bytes = std::fs::read(&json).unwrap();
    let doc = simd_json::to_owned_value(&mut bytes.clone()).unwrap();
    assert_eq!(doc.get_u64("ok_2xx"), Some(ok));
    assert_eq!(doc.get_u64("sent"), Some(77));
    assert!(doc.get_f64("throughput_msgs_per_sec").unwrap() > 0.0);

    // Read back: the counts add up to what the sink counted.
    let summary = report::parse_json(&mut bytes).unwrap();
    assert_eq!(summary.label, "real sink");
    assert_eq!(summary.protocol, "smtp");
    assert_eq!(summary.headline, "message");
    let message = summary.op("message").expect("a message op");
    assert_eq!(
        (
            message.ok,
            message.tempfail,
            message.permfail,
            message.aborted
        ),
        (ok, tempfail, permfail, 0)
    );
    assert_eq!(
        message.completed(),
        sink.messages.load(Ordering::SeqCst),
        "every final reply the sink sent was counted once"
    );
    assert_eq!(message.latency.count, 77);
    assert_eq!(message.cdf.last().map(|p| p.fraction), Some(1.0));
    assert_eq!(summary.timeline.counts.iter().sum::<u64>(), ok);
    assert_eq!(summary.errors, 0);
    assert!(summary.headline_rate > 0.0);

    assert_self_contained_html(Path::new(&html), &["real sink"]);

    // And it compares with itself: ratio 1.
    let (output, stdout, stderr) = run(&["compare", &json, &json]);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(cells(&stdout, "vs first"), ["1.00x", "1.00x"]);
    assert!(stderr.contains("same label"), "{stderr}");
}

#[test]
fn an_unwritable_output_exits_1_after_printing_the_summary() {
    let (addr, _sink) = start_sink();
    let target = addr.to_string();
    let (output, stdout, stderr) = run(&[
        "smtp",
        "--target",
        &target,
        "--connections",
        "1",
        "--messages",
        "3",
        "--threads",
        "1",
        "--duration-secs",
        "20",
        "--quiet",
        "--html",
        "/nonexistent-dir/for/sure/out.html",
    ]);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("sent=3 "), "{stdout}");
    assert!(stderr.contains("cannot write"), "{stderr}");
}
