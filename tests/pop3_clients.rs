//! POP3 against the real binary: the transcripts of `tests/transcripts/pop3` over TCP, Python's
//! poplib (driven by `tests/clients/pop3_poplib.py`), curl's `pop3://`, fetchmail (skipped,
//! loudly, where it is not installed) and raw-socket scenarios for what clients do not show:
//! the maildrop lock, dropped connections, delays, timeouts, restarts.
//!
//! Owns: one test per behaviour, each on its own server (the test config of `common`, whose
//! `[pop3]` listens on port 0 and whose `[auth] failure_delay_ms` is 200). Mail is delivered by
//! SMTP first (EHLO client.test, MAIL FROM:<sender@remote.test>), so what POP3 serves is what
//! `ringmail export` shows: the message as sent plus the Return-Path and Received headers.
//!
//! The transcript environment (both runners, see src/pop3/session.rs): alice has the three
//! [`TRANSCRIPT_MESSAGES`], bob none; passwords as in `common::USERS`. Sizes, UIDLs, queue ids
//! and dates differ between the runners and are matched with `{*}`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::transcript::{
    decode_escapes, line_matches, parse_lines, play_with_tls, run_files, transcript_files_of, Line,
};
use common::{assert_same_bytes, split_trace, Server, SmtpClient, ALICE, BOB, USERS};

const SENDER: &str = "sender@remote.test";
const ALICE_PASSWORD: &str = USERS[0].1;
const BOB_PASSWORD: &str = USERS[1].1;
const GREETING: &str = "+OK ringmail POP3 ready";
const IN_USE: &str = "-ERR [IN-USE] mailbox in use by another POP3 session";
const AUTH_FAILED: &str = "-ERR [AUTH] invalid credentials";
/// `[auth] failure_delay_ms` of the test config.
const FAILURE_DELAY: Duration = Duration::from_millis(200);

/// Alice's INBOX in every transcript, as the client sends it (src/pop3/session.rs has the same).
const TRANSCRIPT_MESSAGES: [&str; 3] = [
    "From: <sender@remote.test>\r\nTo: <alice@example.test>\r\nSubject: one\r\n\r\nfirst message\r\n",
    "From: <sender@remote.test>\r\nSubject: two\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nlast\r\n",
    "From: <sender@remote.test>\r\nSubject: three\r\nX-Long: yes\r\n\r\nline 1\r\nline 2\r\n\r\nline 4\r\nline 5\r\n",
];

// ---------------------------------------------------------------------------------------------
// Helpers

fn transcript_messages() -> Vec<&'static [u8]> {
    TRANSCRIPT_MESSAGES.iter().map(|m| m.as_bytes()).collect()
}

/// Messages with what POP3 must get right: byte-stuffing, `From ` lines, 8-bit bytes, a
/// long message, a line of 998 octets.
fn tricky_messages() -> Vec<Vec<u8>> {
    let mut big = String::from("From: <sender@remote.test>\r\nSubject: big\r\n\r\n");
    for i in 0..80 {
        big.push_str(&format!("line {i:03} {}\r\n", "x".repeat(90)));
    }
    vec![
        b"From: <sender@remote.test>\r\nTo: <alice@example.test>\r\nSubject: hello\r\n\
          Message-ID: <pop3-1@client.test>\r\n\r\nHello Alice.\r\n"
            .to_vec(),
        [
            &b"From: <sender@remote.test>\r\nSubject: dots\r\nMessage-ID: <pop3-2@client.test>\r\n\
               Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
               .one dot\r\n..two dots\r\n.\r\nFrom the start of a line\r\n"[..],
            "Grüße, café, 日本語\r\n".as_bytes(),
            &[b'w'; 998],
            b"\r\n",
        ]
        .concat(),
        big.into_bytes(),
    ]
}

/// The POP3 listener of `server`.
fn pop3_addr(server: &Server) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.pop3_port()))
}

/// A blocking POP3 client: the bounded, timed line I/O of [`SmtpClient`].
struct Pop3 {
    c: SmtpClient,
}

impl Pop3 {
    /// Connects and checks the greeting.
    fn connect(server: &Server) -> Pop3 {
        let addr = pop3_addr(server);
        let c = SmtpClient::connect(addr).unwrap_or_else(|e| panic!("connect to POP3 {addr}: {e}"));
        let mut c = Pop3 { c };
        assert_eq!(c.line(), GREETING);
        c
    }

    fn send(&mut self, bytes: &[u8]) {
        self.c.send(bytes).unwrap();
    }

    /// One CRLF-terminated line, without the CRLF; panics at EOF.
    fn line(&mut self) -> String {
        let raw = self.c.read_raw_line().unwrap();
        let Some(line) = raw.strip_suffix(b"\r\n") else {
            panic!("expected a CRLF line, got `{}`", common::show(&raw));
        };
        String::from_utf8(line.to_vec()).unwrap()
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.line()
    }

    /// The lines of a multi-line response up to `.`, byte-stuffing removed, CRLF kept.
    fn multi(&mut self) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        loop {
            let raw = self.c.read_raw_line().unwrap();
            assert!(
                raw.ends_with(b"\r\n"),
                "multi-line response: `{}`",
                common::show(&raw)
            );
            if raw == b".\r\n" {
                return lines;
            }
            lines.push(match raw.strip_prefix(b".") {
                Some(rest) => rest.to_vec(),
                None => raw,
            });
        }
    }

    /// USER + PASS; the PASS reply.
    fn login(&mut self, user: &str, password: &str) -> String {
        assert_eq!(self.cmd(&format!("USER {user}")), "+OK");
        self.cmd(&format!("PASS {password}"))
    }

    fn login_alice(server: &Server) -> Pop3 {
        let mut c = Pop3::connect(server);
        assert_eq!(c.login(ALICE, ALICE_PASSWORD), "+OK logged in");
        c
    }

    /// `UIDL` as (number, unique id) pairs.
    fn uidl(&mut self) -> Vec<(u32, String)> {
        assert_eq!(self.cmd("UIDL"), "+OK");
        self.multi()
            .iter()
            .map(|l| {
                let l = String::from_utf8(l.clone()).unwrap();
                let (n, id) = l.trim_end().split_once(' ').unwrap();
                (n.parse().unwrap(), id.to_string())
            })
            .collect()
    }

    /// True when the server closed the connection within the read timeout.
    fn closed(&mut self) -> bool {
        self.c.closed().unwrap_or(false)
    }

    fn quit(mut self) -> String {
        let reply = self.cmd("QUIT");
        assert!(self.closed(), "no close after QUIT");
        reply
    }
}

/// Messages in the exported INBOX without their trace headers (what was sent).
fn sent_bodies(server: &Server, user: &str) -> Vec<Vec<u8>> {
    server
        .export(user)
        .iter()
        .map(|m| common::strip_trace(m).to_vec())
        .collect()
}

/// Logs alice in, retrying while the previous session's lock may still be held (the server
/// notices a dropped connection only when its read returns).
fn login_alice_when_free(server: &Server) -> Pop3 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = Pop3::connect(server);
        match c.login(ALICE, ALICE_PASSWORD).as_str() {
            "+OK logged in" => return c,
            IN_USE if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => panic!("login: {other}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Transcripts

/// Parses a POP3 transcript: the first expectation must be the greeting.
fn parse_transcript(text: &str) -> Result<Vec<Line>, String> {
    let out = parse_lines(text)?;
    match out.iter().find(|l| !matches!(l, Line::Send { .. })) {
        Some(Line::Expect { pattern, .. }) if pattern == GREETING.as_bytes() => Ok(out),
        _ => Err(format!("the first expectation must be `S: {GREETING}`")),
    }
}

/// Which of alice's three messages (0-based) a transcript leaves in her INBOX.
fn expected_left(name: &str) -> &'static [usize] {
    match name {
        "dele_rset_quit" => &[0, 2],
        "pipelining" => &[1],
        _ => &[0, 1, 2],
    }
}

fn run_transcript_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("read: {e}"))?;
    let lines = parse_transcript(&text)?;
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    let mut server = Server::start("");
    server.deliver(SENDER, ALICE, &transcript_messages());
    play_with_tls(&lines, pop3_addr(&server), &server.cert_path())?;
    let left = sent_bodies(&server, ALICE);
    let want: Vec<Vec<u8>> = expected_left(&name)
        .iter()
        .map(|&i| TRANSCRIPT_MESSAGES[i].as_bytes().to_vec())
        .collect();
    if left != want {
        return Err(format!(
            "alice's INBOX afterwards: {} message(s) {:?}, want {:?}",
            left.len(),
            left.iter().map(|m| common::show(m)).collect::<Vec<_>>(),
            want.iter().map(|m| common::show(m)).collect::<Vec<_>>()
        ));
    }
    server.try_stop().map(|_| ())
}

#[test]
fn pop3_transcripts_against_the_real_server() {
    run_files(&transcript_files_of("pop3"), run_transcript_file);
}

#[test]
fn transcript_runner_matches_and_parses() {
    assert!(line_matches(b"+OK {*} octets", b"+OK 12 octets"));
    assert!(!line_matches(b"+OK {*} octets", b"+OK 12 octets!"));
    assert!(line_matches(b"{*}by mx {*}", b"\tby mx id 1"));
    assert!(line_matches(b"", b""));
    assert!(!line_matches(b"", b"x"));
    assert!(!line_matches(b"a{*}b", b"a\rb"));
    assert_eq!(decode_escapes(r"a\r\n\x00").unwrap(), b"a\r\n\x00".to_vec());
    assert!(decode_escapes(r"\q").is_err());
    let t = parse_transcript("S: +OK ringmail POP3 ready\nC: STAT\nS:\nS! close\n").unwrap();
    assert_eq!(
        t[2],
        Line::Expect {
            line: 3,
            pattern: Vec::new()
        }
    );
    assert!(parse_transcript("C: STAT\nS: +OK\n").is_err());
}

// ---------------------------------------------------------------------------------------------
// poplib

/// Runs one case of the poplib script; returns its summary (`key` → values in order).
fn poplib(
    server: &Server,
    case: &str,
    args: &[&str],
) -> (
    std::collections::BTreeMap<String, Vec<String>>,
    tempfile::TempDir,
) {
    let outdir = tempfile::tempdir().unwrap();
    let script = common::manifest_dir().join("tests/clients/pop3_poplib.py");
    let r = common::run(
        Command::new("python3")
            .arg(&script)
            .arg("127.0.0.1")
            .arg(server.pop3_port().to_string())
            .arg(outdir.path())
            .arg(case)
            .args(args),
        b"",
    );
    assert!(
        r.status.success(),
        "poplib case {case} failed ({}):\n{}{}\nserver:\n{}",
        r.status,
        r.stdout_text(),
        r.stderr,
        server.output()
    );
    let text = std::fs::read(outdir.path().join("summary.txt")).unwrap();
    // Latin-1, as the script wrote it.
    let text: String = text.iter().map(|&b| b as char).collect();
    let mut summary = std::collections::BTreeMap::<String, Vec<String>>::new();
    for line in text.lines() {
        let (key, value) = line.split_once('\t').unwrap_or((line, ""));
        summary
            .entry(key.to_string())
            .or_default()
            .push(value.to_string());
    }
    (summary, outdir)
}

fn one<'a>(summary: &'a std::collections::BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    match summary.get(key).map(Vec::as_slice) {
        Some([value]) => value,
        other => panic!("summary {key}: {other:?}"),
    }
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

#[test]
fn poplib_reads_every_message_byte_exact() {
    let server = Server::start("");
    let sent = tricky_messages();
    server.deliver(SENDER, ALICE, &sent);
    let stored = server.export(ALICE);
    assert_eq!(stored.len(), 3);
    let (s, outdir) = poplib(&server, "read", &[]);
    assert_eq!(one(&s, "welcome"), GREETING);
    for capability in [
        "TOP",
        "UIDL",
        "USER",
        "SASL PLAIN",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "PIPELINING",
        "IMPLEMENTATION ringmail",
    ] {
        assert!(
            s["capa"].iter().any(|c| c == capability),
            "CAPA {capability}: {:?}",
            s["capa"]
        );
    }
    // Sizes are those of the stored messages, which SMTP stored with CRLF throughout.
    let total: usize = stored.iter().map(Vec::len).sum();
    assert_eq!(one(&s, "stat"), format!("3 {total}"));
    assert_eq!(
        one(&s, "list_resp"),
        format!("+OK 3 messages ({total} octets)")
    );
    let want_list: Vec<String> = stored
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{} {}", i + 1, m.len()))
        .collect();
    assert_eq!(s["list"], want_list);
    assert_eq!(one(&s, "list_1"), format!("+OK 1 {}", stored[0].len()));
    // UIDL: UIDVALIDITY + UID, 8 uppercase hex digits each; UIDs ascending.
    let uidls: Vec<(String, String)> = s["uidl"]
        .iter()
        .map(|l| {
            let (n, id) = l.split_once(' ').unwrap();
            (n.to_string(), id.to_string())
        })
        .collect();
    assert_eq!(uidls.len(), 3);
    for (i, (n, id)) in uidls.iter().enumerate() {
        assert_eq!(n, &(i + 1).to_string());
        assert_eq!(id.len(), 16, "{id}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)),
            "{id}"
        );
        assert_eq!(id[..8], uidls[0].1[..8], "one UIDVALIDITY");
    }
    let uids: Vec<u32> = uidls
        .iter()
        .map(|(_, id)| u32::from_str_radix(&id[8..], 16).unwrap())
        .collect();
    assert!(uids.windows(2).all(|w| w[0] < w[1]), "{uids:?}");
    assert_eq!(one(&s, "uidl_1"), format!("+OK 1 {}", uidls[0].1));
    // RETR: byte-exact, the message as sent behind the trace headers.
    for (i, m) in stored.iter().enumerate() {
        let got = std::fs::read(outdir.path().join(format!("retr-{}.eml", i + 1))).unwrap();
        assert_same_bytes(&format!("RETR {}", i + 1), &got, m);
        assert_same_bytes(
            &format!("RETR {} without trace headers", i + 1),
            split_trace(&got).unwrap().body,
            &sent[i],
        );
        assert_eq!(s["retr"][i], format!("{} +OK {} octets", i + 1, m.len()));
    }
    // TOP: the header, the empty line, n body lines (poplib undoes the byte-stuffing).
    let top = |message: &[u8], n: usize| -> Vec<String> {
        let text = latin1(message);
        let (header, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines: Vec<String> = header.split("\r\n").map(String::from).collect();
        lines.push(String::new());
        lines.extend(body.lines().take(n).map(String::from));
        lines
    };
    assert_eq!(s["top_1_0"], top(&stored[0], 0));
    let top_2_3 = top(&stored[1], 3);
    assert_eq!(
        top_2_3[top_2_3.len() - 3..],
        [".one dot", "..two dots", "."]
    );
    assert_eq!(s["top_2_3"], top_2_3);
    assert_eq!(one(&s, "noop"), "+OK");
    assert_eq!(one(&s, "quit"), "+OK ringmail POP3 server signing off");
    // Reading deletes nothing.
    assert_eq!(server.export(ALICE), stored);
}

#[test]
fn poplib_apop_is_refused() {
    let server = Server::start("");
    let (s, _dir) = poplib(&server, "apop", &[]);
    assert!(one(&s, "apop").starts_with("refused"), "{s:?}");
    assert_eq!(one(&s, "apop_sent"), "-ERR APOP not supported");
    assert_eq!(one(&s, "quit"), "+OK ringmail POP3 server signing off");
}

#[test]
fn poplib_auth_plain_logs_in() {
    let server = Server::start("");
    server.deliver(SENDER, ALICE, &transcript_messages()[..2]);
    let size: usize = server.export(ALICE).iter().map(Vec::len).sum();
    let (s, _dir) = poplib(&server, "auth_plain", &[]);
    assert_eq!(one(&s, "auth"), "+OK logged in");
    assert_eq!(one(&s, "stat"), format!("2 {size}"));
}

#[test]
fn poplib_dele_quit_expunges_durably() {
    let mut server = Server::start("");
    server.deliver(SENDER, ALICE, &transcript_messages());
    let stored = server.export(ALICE);
    let (s, _dir) = poplib(&server, "dele_quit", &["1", "3"]);
    assert_eq!(
        s["dele"],
        vec!["+OK message 1 deleted", "+OK message 3 deleted"]
    );
    assert_eq!(one(&s, "stat_after_dele"), format!("1 {}", stored[1].len()));
    assert_eq!(one(&s, "quit"), "+OK ringmail POP3 server signing off");
    let want = vec![TRANSCRIPT_MESSAGES[1].as_bytes().to_vec()];
    assert_eq!(sent_bodies(&server, ALICE), want);
    // Durable: still gone after a restart, and the survivor keeps its UIDL.
    server.stop();
    server.restart();
    assert_eq!(sent_bodies(&server, ALICE), want);
    let mut c = Pop3::login_alice(&server);
    let uidl = c.uidl();
    assert_eq!(uidl.len(), 1);
    assert_eq!(u32::from_str_radix(&uidl[0].1[8..], 16).unwrap(), 2);
    c.quit();
}

#[test]
fn poplib_dele_rset_quit_deletes_nothing() {
    let server = Server::start("");
    server.deliver(SENDER, ALICE, &transcript_messages());
    let before = server.export(ALICE);
    let (s, _dir) = poplib(&server, "dele_rset_quit", &[]);
    assert_eq!(s["dele"].len(), 3);
    assert!(one(&s, "rset").starts_with("+OK maildrop has 3 messages"));
    assert!(one(&s, "stat").starts_with("3 "));
    assert_eq!(server.export(ALICE), before);
}

// ---------------------------------------------------------------------------------------------
// Raw-socket scenarios

#[test]
fn dele_then_dropped_connection_deletes_nothing() {
    let server = Server::start("");
    server.deliver(SENDER, ALICE, &transcript_messages());
    let before = server.export(ALICE);
    let mut c = Pop3::login_alice(&server);
    assert_eq!(c.cmd("DELE 1"), "+OK message 1 deleted");
    assert_eq!(c.cmd("DELE 2"), "+OK message 2 deleted");
    c.c.shutdown().unwrap();
    drop(c);
    // The next session sees everything (and gets the lock once the server saw the drop).
    let mut c = login_alice_when_free(&server);
    assert!(c.cmd("STAT").starts_with("+OK 3 "));
    assert_eq!(c.quit(), "+OK ringmail POP3 server signing off");
    assert_eq!(server.export(ALICE), before);
}

#[test]
fn second_concurrent_session_gets_in_use() {
    let server = Server::start("");
    server.deliver(SENDER, ALICE, &transcript_messages());
    let mut first = Pop3::login_alice(&server);
    assert_eq!(first.cmd("DELE 1"), "+OK message 1 deleted");
    // Several tries: the kernel spreads connections over the cores, and each must find
    // the lock on alice's owner core.
    for _ in 0..4 {
        let mut second = Pop3::connect(&server);
        assert_eq!(second.login(ALICE, ALICE_PASSWORD), IN_USE);
        assert!(second.closed(), "the server must close after [IN-USE]");
    }
    // Another user is not affected.
    let mut bob = Pop3::connect(&server);
    assert_eq!(bob.login(BOB, BOB_PASSWORD), "+OK logged in");
    assert_eq!(bob.cmd("STAT"), "+OK 0 0");
    // The first session is untouched by the refused ones.
    assert!(first.cmd("STAT").starts_with("+OK 2 "));
    assert_eq!(first.quit(), "+OK ringmail POP3 server signing off");
    let mut third = Pop3::login_alice(&server);
    assert!(third.cmd("STAT").starts_with("+OK 2 "));
    third.quit();
    bob.quit();
}

#[test]
fn wrong_password_and_unknown_user_get_the_same_delayed_reply() {
    let server = Server::start("");
    let mut c = Pop3::connect(&server);
    // USER says nothing about whether the user exists.
    assert_eq!(c.cmd("USER nobody@example.test"), "+OK");
    let t = Instant::now();
    let unknown = c.cmd(&format!("PASS {ALICE_PASSWORD}"));
    let unknown_delay = t.elapsed();
    assert_eq!(c.cmd(&format!("USER {ALICE}")), "+OK");
    let t = Instant::now();
    let wrong = c.cmd("PASS not-the-password");
    let wrong_delay = t.elapsed();
    assert_eq!(unknown, AUTH_FAILED);
    assert_eq!(wrong, AUTH_FAILED);
    for delay in [unknown_delay, wrong_delay] {
        assert!(
            delay >= FAILURE_DELAY - Duration::from_millis(20),
            "{delay:?}"
        );
    }
    // The connection survives two failures; a right login then works.
    assert_eq!(c.login(ALICE, ALICE_PASSWORD), "+OK logged in");
    c.quit();
    // AUTH PLAIN fails the same way ("\0alice@example.test\0wrong").
    let mut c = Pop3::connect(&server);
    assert_eq!(
        c.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdAB3cm9uZw=="),
        AUTH_FAILED
    );
}

#[test]
fn uidl_is_stable_across_a_restart() {
    let mut server = Server::start("");
    server.deliver(SENDER, ALICE, &transcript_messages()[..2]);
    let mut c = Pop3::login_alice(&server);
    let before = c.uidl();
    c.quit();
    assert_eq!(before.len(), 2);
    server.stop();
    server.restart();
    let mut c = Pop3::login_alice(&server);
    assert_eq!(c.uidl(), before);
    c.quit();
    // A new message gets a new, greater UID under the same UIDVALIDITY.
    server.deliver(SENDER, ALICE, &transcript_messages()[2..]);
    let mut c = Pop3::login_alice(&server);
    let after = c.uidl();
    c.quit();
    assert_eq!(after[..2], before[..]);
    assert_eq!(after[2].1[..8], before[0].1[..8]);
    assert!(after[2].1[8..] > before[1].1[8..], "{after:?}");
}

#[test]
fn messages_delivered_after_login_are_not_in_the_session() {
    let server = Server::start("");
    server.deliver(SENDER, ALICE, &transcript_messages()[..1]);
    let mut c = Pop3::login_alice(&server);
    assert!(c.cmd("STAT").starts_with("+OK 1 "));
    server.deliver(SENDER, ALICE, &transcript_messages()[1..]);
    assert!(c.cmd("STAT").starts_with("+OK 1 "));
    assert_eq!(c.cmd("RETR 2"), "-ERR no such message");
    c.quit();
    let mut c = Pop3::login_alice(&server);
    assert!(c.cmd("STAT").starts_with("+OK 3 "));
    c.quit();
}

#[test]
fn long_line_is_refused_and_the_session_goes_on() {
    let server = Server::start("");
    server.deliver(SENDER, ALICE, &transcript_messages());
    let mut c = Pop3::connect(&server);
    let long = format!("USER {}\r\n", "a".repeat(5000));
    c.send(long.as_bytes());
    assert_eq!(c.line(), "-ERR line too long");
    assert_eq!(c.login(ALICE, ALICE_PASSWORD), "+OK logged in");
    // 100 KiB without a line end, sent in pieces, then the end: one reply.
    for _ in 0..100 {
        c.send(&[b'x'; 1024]);
    }
    c.send(b"\r\nSTAT\r\n");
    assert_eq!(c.line(), "-ERR line too long");
    assert!(c.line().starts_with("+OK 3 "));
    assert_eq!(c.quit(), "+OK ringmail POP3 server signing off");
}

#[test]
fn idle_timeout_closes_without_deleting() {
    let server = Server::start("[pop3]\ntimeout_ms_idle = 500");
    server.deliver(SENDER, ALICE, &transcript_messages());
    let mut c = Pop3::login_alice(&server);
    assert_eq!(c.cmd("DELE 1"), "+OK message 1 deleted");
    let t = Instant::now();
    assert_eq!(c.line(), "-ERR disconnected for inactivity");
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    assert!(c.closed());
    assert_eq!(server.export(ALICE).len(), 3);
}

// ---------------------------------------------------------------------------------------------
// curl and fetchmail

#[test]
fn curl_lists_and_retrieves() {
    let server = Server::start("");
    server.deliver(SENDER, ALICE, &transcript_messages());
    let stored = server.export(ALICE);
    let curl = |path: &str| {
        let r = common::run(
            Command::new("curl")
                .args(["--silent", "--show-error", "--max-time", "20"])
                .args(["--user", &format!("{ALICE}:{ALICE_PASSWORD}")])
                .arg(format!("pop3://127.0.0.1:{}/{path}", server.pop3_port())),
            b"",
        );
        r.assert_ok(&format!("curl pop3:// /{path}"));
        r.stdout
    };
    let list = curl("");
    let want: String = stored
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{} {}\r\n", i + 1, m.len()))
        .collect();
    assert_eq!(latin1(&list), want);
    for (i, m) in stored.iter().enumerate() {
        assert_same_bytes(
            &format!("curl RETR {}", i + 1),
            &curl(&(i + 1).to_string()),
            m,
        );
    }
    // curl's RETR deletes nothing.
    assert_eq!(server.export(ALICE), stored);
}

/// fetchmail hands each message to an MDA with LF line ends.
fn lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        if !(b == b'\r' && bytes.get(i + 1) == Some(&b'\n')) {
            out.push(b);
        }
    }
    out
}

/// `message` without the header field (a line and its continuation lines) that fetchmail
/// adds, `Received: from ... by ... with POP3 (fetchmail-...)`; None if it has none.
fn without_fetchmail_received(message: &[u8]) -> Option<Vec<u8>> {
    let mut lines: Vec<&[u8]> = message.split_inclusive(|&b| b == b'\n').collect();
    let start = lines.iter().position(|l| l.starts_with(b"Received: "))?;
    let end = start
        + 1
        + lines[start + 1..]
            .iter()
            .take_while(|l| l.starts_with(b"\t") || l.starts_with(b" "))
            .count();
    let field = lines[start..end].concat();
    if !field.windows(11).any(|w| w == b"(fetchmail-") {
        return None;
    }
    lines.drain(start..end);
    Some(lines.concat())
}

#[test]
fn fetchmail_downloads_every_message() {
    let have = Command::new("sh")
        .args(["-c", "command -v fetchmail"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        eprintln!("SKIPPED fetchmail_downloads_every_message: fetchmail is not installed");
        return;
    }
    let server = Server::start("");
    let sent = tricky_messages();
    server.deliver(SENDER, ALICE, &sent);
    let stored = server.export(ALICE);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let rc = dir.path().join("fetchmailrc");
    std::fs::write(
        &rc,
        format!(
            "poll 127.0.0.1 service {} protocol POP3 auth password no envelope\n\
             \x20 user \"{ALICE}\" there with password \"{ALICE_PASSWORD}\" is \"tester\" here\n\
             \x20 sslproto '' fetchall nokeep\n\
             \x20 mda \"/bin/sh -c 'cat > {}/msg.$$'\"\n",
            server.pop3_port(),
            out.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = common::run(
        Command::new("fetchmail")
            .env("HOME", dir.path())
            .env("FETCHMAILHOME", dir.path())
            .args(["--fetchmailrc"])
            .arg(&rc)
            .args(["--nodetach", "--nosyslog", "--verbose"])
            .args(["--pidfile"])
            .arg(dir.path().join("pid"))
            .args(["--idfile"])
            .arg(dir.path().join("ids")),
        b"",
    );
    let log = format!("{}{}", r.stdout_text(), r.stderr);
    assert!(
        r.status.success(),
        "fetchmail failed ({}):\n{log}",
        r.status
    );
    let fetched: Vec<Vec<u8>> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(fetched.len(), stored.len(), "fetchmail log:\n{log}");
    // Each delivered message is the stored one (LF line ends) plus fetchmail's own trace
    // header, which it puts right after Return-Path.
    let mut fetched: Vec<Vec<u8>> = fetched
        .iter()
        .map(|f| without_fetchmail_received(f).unwrap_or_else(|| f.clone()))
        .collect();
    for m in &stored {
        let want = lf(m);
        let Some(at) = fetched.iter().position(|f| *f == want) else {
            panic!(
                "no fetched message is `{}`\nfetched:\n{}\nlog:\n{log}",
                common::show(&want),
                fetched
                    .iter()
                    .map(|f| common::show(f))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        };
        fetched.remove(at);
    }
    // nokeep: fetchmail deleted what it downloaded.
    assert!(server.export(ALICE).is_empty(), "fetchmail log:\n{log}");
}
