//! Runs every `tests/transcripts/smtp/*.txt` and `tests/transcripts/imap/*.txt` transcript
//! against the real binary over TCP.
//!
//! The runner is `common::transcript`, shared with the POP3 transcripts of
//! `tests/pop3_clients.rs` (format: `tests/transcripts/README`): `C:` sends the text + CRLF,
//! `C~:` sends exact bytes with the escapes `\r \n \t \\ \xNN`, `S:` expects exactly one
//! line (`{*}` matches any run of bytes other than CR and LF), `S! close` expects the server
//! to close the connection, `C! starttls` starts TLS on the connection (a rustls client that
//! trusts the server's generated certificate, `Server::cert_path()`). Consecutive `C` lines
//! are sent in one write when the next `S` line or directive is reached, so a block of client
//! lines arrives pipelined, as written: commands pipelined after STARTTLS go out in the clear
//! with it, and any answer to them fails the file (the STARTTLS-injection tests).
//!
//! Each file gets its own fresh server (the test config of `common`: hostname
//! mx.example.test, local domain example.test, alice and bob, max_message_bytes 10000,
//! max_recipients 3). Files run on two threads; every failing file is reported by name at
//! the end, not just the first. A missing or empty transcript directory fails the test.
//! For the SMTP files that deliver after `C! starttls`, the stored `Received:` header is
//! checked too ([`expected_received`]).
//!
//! IMAP (the block marked `IMAP transcripts` at the end, added with the IMAP server): the
//! same runner against `server.imap_port()`; the first expectation is the `* OK` greeting.
//! Two directives serve IMAP files: `C! reconnect` (close this connection, open a new one to
//! the same server: its greeting is the next `S:` line) and the escape `\{N:text}` in `C~:`
//! lines (`text` repeated N times, for oversized lines and literals).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;

use common::transcript::{
    decode_escapes, line_matches, parse_lines, play_at, play_with_tls, run_files,
    transcript_files_of, Line,
};
use common::{split_trace, Server};

/// Parses an SMTP transcript file into its instructions.
fn parse_transcript(text: &str) -> Result<Vec<Line>, String> {
    let out = parse_lines(text)?;
    match out.iter().find(|l| !matches!(l, Line::Send { .. })) {
        Some(Line::Expect { pattern, .. }) if pattern.starts_with(b"220 ") => {}
        _ => return Err("the first expectation must be the 220 greeting (`S: 220 ...`)".into()),
    }
    Ok(out)
}

/// Plays one transcript against the SMTP listener of `server`.
fn play(lines: &[Line], server: &Server) -> Result<(), String> {
    play_with_tls(lines, server.addr(), &server.cert_path())
}

/// For the SMTP transcripts that store mail after `C! starttls`: the recipient and what
/// each of its stored `Received:` headers must contain, in order (the unit runner of
/// src/smtp/session.rs checks the whole stored message of every delivering transcript).
fn expected_received(name: &str) -> Option<(&'static str, &'static [&'static str])> {
    match name {
        "starttls_injection" => Some((
            "alice@example.test",
            &["Received: from client.test ([127.0.0.1])\r\n\tby mx.example.test (ringmail) with ESMTPS id "],
        )),
        "starttls_auth_plain" => Some((
            "bob@example.test",
            &["Received: from client.test ([127.0.0.1])\r\n\tby mx.example.test (ringmail) with ESMTPSA id "],
        )),
        _ => None,
    }
}

/// Checks the stored `Received:` headers [`expected_received`] names for `name`.
fn check_received(name: &str, server: &Server) -> Result<(), String> {
    let Some((recipient, wants)) = expected_received(name) else {
        return Ok(());
    };
    let stored = server.export(recipient);
    if stored.len() != wants.len() {
        return Err(format!(
            "{recipient} has {} stored message(s), want {}",
            stored.len(),
            wants.len()
        ));
    }
    for (message, want) in stored.iter().zip(wants.iter()) {
        let traced = split_trace(message)?;
        if !traced.received.starts_with(want) {
            return Err(format!(
                "stored Received header of {recipient}:\n    {:?}\n    does not start with {want:?}",
                traced.received
            ));
        }
    }
    Ok(())
}

/// Runs one file against its own fresh server.
fn run_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("read: {e}"))?;
    let lines = parse_transcript(&text)?;
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    play_on_fresh_server(&lines, Server::addr, |server| check_received(&name, server))
}

/// Starts a server, plays `lines` against the listener `addr_of` names (`C! starttls` trusts
/// the server's certificate), runs `check` on the server, stops it.
fn play_on_fresh_server(
    lines: &[Line],
    addr_of: fn(&Server) -> SocketAddr,
    check: impl FnOnce(&Server) -> Result<(), String>,
) -> Result<(), String> {
    let mut server = Server::start("");
    let played =
        play_with_tls(lines, addr_of(&server), &server.cert_path()).and_then(|()| check(&server));
    let stopped = server.try_stop();
    match (played, stopped) {
        (Ok(()), Ok(_)) => Ok(()),
        (Err(e), Ok(_)) => Err(e),
        (Ok(()), Err(e)) => Err(format!("transcript passed, but stopping the server: {e}")),
        (Err(e), Err(s)) => Err(format!("{e}\n  and stopping the server: {s}")),
    }
}

#[test]
fn smtp_transcripts_against_the_real_server() {
    run_files(&transcript_files_of("smtp"), run_file);
}

#[test]
fn runner_parses_and_matches() {
    assert_eq!(
        decode_escapes(r"a\r\n\t\\\x00\xff").unwrap(),
        b"a\r\n\t\\\x00\xff".to_vec()
    );
    assert!(decode_escapes(r"\q").is_err());
    assert!(decode_escapes(r"\x4").is_err());
    let t = parse_transcript(
        "# comment\nS: 220 mx.example.test ESMTP ringmail\nC: EHLO a\nC~: X\\r\\n\nS: 250 {*} as {*}\nS! close\n",
    )
    .unwrap();
    assert_eq!(t.len(), 5);
    assert_eq!(
        t[1],
        Line::Send {
            line: 3,
            bytes: b"EHLO a\r\n".to_vec()
        }
    );
    assert_eq!(
        t[2],
        Line::Send {
            line: 4,
            bytes: b"X\r\n".to_vec()
        }
    );
    assert_eq!(t[4], Line::Close { line: 6 });
    assert!(parse_transcript("C: EHLO a\nS: 250 x\n").is_err());
    assert!(parse_transcript("X: what\n").is_err());

    assert!(line_matches(
        b"250 2.0.0 Ok: queued as {*}",
        b"250 2.0.0 Ok: queued as 1A2B"
    ));
    assert!(line_matches(
        b"250 2.0.0 Ok: queued as {*}",
        b"250 2.0.0 Ok: queued as "
    ));
    assert!(!line_matches(
        b"250 2.0.0 Ok: queued as {*}",
        b"250 2.0.0 Ok: queued"
    ));
    assert!(line_matches(b"{*} x {*} y", b"a x b x c y"));
    assert!(!line_matches(b"{*} x {*} y", b"a x b y z"));
    assert!(!line_matches(b"a{*}b", b"a\rb"));
    assert!(line_matches(b"exact", b"exact"));
    assert!(!line_matches(b"exact", b"exact "));
}

#[test]
fn runner_reports_wrong_transcripts_against_the_real_server() {
    let mut server = Server::start("");
    let right = parse_transcript(
        "S: 220 mx.example.test ESMTP ringmail\nC: NOOP\nS: 250 {*}\nC: QUIT\nS: 221 2.0.0 Bye\nS! close\n",
    )
    .unwrap();
    assert_eq!(play(&right, &server), Ok(()));
    let wrong_reply = parse_transcript(
        "S: 220 mx.example.test ESMTP ringmail\nC: NOOP\nS: 250 2.0.0 Not what the server says\n",
    )
    .unwrap();
    let e = play(&wrong_reply, &server).unwrap_err();
    assert!(
        e.starts_with("line 3:") && e.contains("got      `250 "),
        "{e}"
    );
    let not_closed = parse_transcript(
        "S: 220 mx.example.test ESMTP ringmail\nC: NOOP\nC: NOOP\nS: 250 {*}\nS! close\n",
    )
    .unwrap();
    let e = play(&not_closed, &server).unwrap_err();
    assert!(e.contains("line 5: expected the server to close"), "{e}");
    let too_much = parse_transcript("S: 220 mx.example.test ESMTP ringmail\nC: NOOP\n").unwrap();
    let e = play(&too_much, &server).unwrap_err();
    assert!(e.contains("unexpected output"), "{e}");
    server.stop();
}

// =============================================================================================
// IMAP transcripts (tests/transcripts/imap; added with the IMAP server, issue 3). Same format
// and runner as SMTP, against the IMAP listener; `C! reconnect` and `\{N:text}` serve these.

/// Parses an IMAP transcript: the first expectation, and the first after every
/// `C! reconnect`, is the `* OK` greeting.
fn parse_imap_transcript(text: &str) -> Result<Vec<Line>, String> {
    let out = parse_lines(text)?;
    let mut want_greeting = true;
    for l in &out {
        match l {
            Line::Reconnect { .. } => want_greeting = true,
            Line::Expect { line, pattern } if want_greeting => {
                if !pattern.starts_with(b"* OK ") {
                    return Err(format!(
                        "line {line}: the first expectation of a connection must be the \
                         greeting (`S: * OK ...`)"
                    ));
                }
                want_greeting = false;
            }
            Line::Close { line } if want_greeting => {
                return Err(format!("line {line}: `S! close` before the greeting"));
            }
            _ => {}
        }
    }
    if want_greeting {
        return Err("no greeting expectation (`S: * OK ...`)".into());
    }
    Ok(out)
}

/// Runs one IMAP file against its own fresh server (alice's mailboxes start empty).
fn run_imap_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("read: {e}"))?;
    let lines = parse_imap_transcript(&text)?;
    play_on_fresh_server(
        &lines,
        |server| SocketAddr::from(([127, 0, 0, 1], server.imap_port())),
        |_| Ok(()),
    )
}

#[test]
fn imap_transcripts_against_the_real_server() {
    run_files(&transcript_files_of("imap"), run_imap_file);
}

#[test]
fn imap_runner_repeat_escape_and_reconnect() {
    assert_eq!(
        decode_escapes(r"a\{3:xy}b\r\n").unwrap(),
        b"axyxyxyb\r\n".to_vec()
    );
    assert_eq!(decode_escapes(r"\{0:x}").unwrap(), Vec::<u8>::new());
    assert!(decode_escapes(r"\{3x}").is_err());
    assert!(decode_escapes(r"\{3:x").is_err());
    assert!(decode_escapes(r"\{q:x}").is_err());
    assert!(decode_escapes(r"\{3:}").is_err());
    assert!(decode_escapes(r"\{99999999:xy}").is_err());
    let t = parse_imap_transcript(
        "S: * OK hi\nC: a LOGOUT\nS: * BYE x\nS! close\nC! reconnect\nS: * OK again\n",
    )
    .unwrap();
    assert_eq!(t[4], Line::Reconnect { line: 5 });
    assert!(parse_imap_transcript("S: * OK hi\nC! reconnect\nC: a NOOP\nS: a OK\n").is_err());
    assert!(parse_imap_transcript("S: 220 smtp\n").is_err());
    assert!(parse_imap_transcript("# nothing\n").is_err());
    // SMTP files still need their 220 greeting.
    assert!(parse_transcript("S: * OK imap\n").is_err());
}

// =============================================================================================
// `C! starttls` (issue 4): the runner against small fake servers, so that it is shown to
// fail when a server answers commands injected after STARTTLS, either way.

/// How the fake server treats the bytes pipelined after its STARTTLS line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FakeTls {
    /// Drops them and starts TLS (what ringmail does).
    Discards,
    /// Keeps them and answers them over TLS (CVE-2011-0411).
    AnswersOverTls,
    /// Answers them in the clear before the handshake.
    AnswersInTheClear,
}

/// The fake's answer to one command line.
fn fake_reply(line: &[u8]) -> &'static [u8] {
    match line {
        b"NOOP\r\n" => b"250 noop\r\n",
        b"QUIT\r\n" => b"221 bye\r\n",
        _ => b"500 what\r\n",
    }
}

/// One connection of a fake line server: `220 fake`, answers [`fake_reply`] until
/// STARTTLS (`220 go`, then TLS with `config`), then over TLS until QUIT.
fn fake_server(listener: TcpListener, config: Arc<rustls::ServerConfig>, mode: FakeTls) {
    let Ok((tcp, _)) = listener.accept() else {
        return;
    };
    let mut reader = BufReader::new(tcp);
    if reader.get_mut().write_all(b"220 fake\r\n").is_err() {
        return;
    }
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            return;
        }
        if line != b"STARTTLS\r\n" {
            let _ = reader.get_mut().write_all(fake_reply(&line));
            continue;
        }
        break;
    }
    let injected = reader.buffer().to_vec();
    let mut tcp: TcpStream = reader.into_inner();
    let mut clear = b"220 go\r\n".to_vec();
    if mode == FakeTls::AnswersInTheClear {
        for line in injected.split_inclusive(|&b| b == b'\n') {
            clear.extend_from_slice(fake_reply(line));
        }
    }
    if tcp.write_all(&clear).is_err() {
        return;
    }
    let Ok(connection) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = BufReader::new(rustls::StreamOwned::new(connection, tcp));
    if mode == FakeTls::AnswersOverTls {
        for line in injected.split_inclusive(|&b| b == b'\n') {
            let _ = tls.get_mut().write_all(fake_reply(line));
        }
    }
    loop {
        let mut line = Vec::new();
        if tls.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            return;
        }
        let _ = tls.get_mut().write_all(fake_reply(&line));
        if line == b"QUIT\r\n" {
            tls.get_mut().conn.send_close_notify();
            let _ = tls.get_mut().flush();
            return;
        }
    }
}

/// A self-signed certificate for 127.0.0.1 as a server config, and its PEM in `dir`.
fn fake_tls_config(dir: &Path) -> (Arc<rustls::ServerConfig>, std::path::PathBuf) {
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let pem = dir.join("fake-cert.pem");
    std::fs::write(&pem, generated.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![generated.cert.der().clone()], key.into())
    .unwrap();
    (Arc::new(config), pem)
}

/// Plays `transcript` against a fake server in `mode`; `trusted` is the PEM the runner trusts
/// (None: the fake's own certificate).
fn play_against_fake(
    transcript: &str,
    mode: FakeTls,
    trusted: Option<&Path>,
) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let (config, pem) = fake_tls_config(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = std::thread::spawn(move || fake_server(listener, config, mode));
    let lines = parse_transcript(transcript).unwrap();
    let result = play_with_tls(&lines, addr, trusted.unwrap_or(&pem));
    fake.join().unwrap();
    result
}

const FAKE_INJECTION: &str = "S: 220 fake\nC: NOOP\nS: 250 noop\nC~: STARTTLS\\r\\nNOOP\\r\\n\n\
    S: 220 go\nC! starttls\nC: QUIT\nS: 221 bye\nS! close\n";

#[test]
fn starttls_runner_passes_a_server_that_discards_injected_commands() {
    assert_eq!(
        play_against_fake(FAKE_INJECTION, FakeTls::Discards, None),
        Ok(())
    );
}

#[test]
fn starttls_runner_fails_a_server_that_answers_injected_commands_over_tls() {
    let e = play_against_fake(FAKE_INJECTION, FakeTls::AnswersOverTls, None).unwrap_err();
    assert!(
        e.starts_with("line 8:") && e.contains("got      `250 noop`"),
        "{e}"
    );
}

#[test]
fn starttls_runner_fails_a_server_that_answers_injected_commands_in_the_clear() {
    let e = play_against_fake(FAKE_INJECTION, FakeTls::AnswersInTheClear, None).unwrap_err();
    // Either still buffered in the clear, or read by the handshake as a bad record.
    assert!(
        (e.contains("line 6: before C! starttls, the server sent in the clear output")
            && e.contains("250 noop"))
            || e.contains("line 6: TLS handshake failed"),
        "{e}"
    );
}

#[test]
fn starttls_runner_checks_the_certificate() {
    let other = tempfile::tempdir().unwrap();
    let (_, untrusted) = fake_tls_config(other.path());
    let e = play_against_fake(FAKE_INJECTION, FakeTls::Discards, Some(&untrusted)).unwrap_err();
    assert!(
        e.contains("line 6: TLS handshake failed") && e.contains("certificate"),
        "{e}"
    );
}

#[test]
fn starttls_directive_parses_and_needs_a_certificate() {
    let t = parse_transcript(FAKE_INJECTION).unwrap();
    assert_eq!(t[5], Line::StartTls { line: 6 });
    assert_eq!(
        t[4],
        Line::Expect {
            line: 5,
            pattern: b"220 go".to_vec()
        }
    );
    assert!(parse_transcript("S: 220 x\nC! starttls now\n").is_err());
    // Without a certificate the runner refuses the directive (after sending what precedes).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        tcp.write_all(b"220 fake\r\n").unwrap();
    });
    let e = play_at(
        &parse_transcript("S: 220 fake\nC! starttls\n").unwrap(),
        addr,
    )
    .unwrap_err();
    assert!(
        e.contains("line 2: C! starttls needs the server's certificate"),
        "{e}"
    );
    fake.join().unwrap();
}
