//! Runs every `tests/transcripts/smtp/*.txt` and `tests/transcripts/imap/*.txt` transcript
//! against the real binary over TCP.
//!
//! The runner is `common::transcript`, shared with the POP3 transcripts of
//! `tests/pop3_clients.rs` (format: `tests/transcripts/README`): `C:` sends the text + CRLF,
//! `C~:` sends exact bytes with the escapes `\r \n \t \\ \xNN`, `S:` expects exactly one
//! line (`{*}` matches any run of bytes other than CR and LF), `S! close` expects the server
//! to close the connection. Consecutive `C` lines are sent in one write when the next `S`
//! line is reached, so a block of client lines arrives pipelined, as written.
//!
//! Each file gets its own fresh server (the test config of `common`: hostname
//! mx.example.test, local domain example.test, alice and bob, max_message_bytes 10000,
//! max_recipients 3). Files run on two threads; every failing file is reported by name at
//! the end, not just the first. A missing or empty transcript directory fails the test.
//!
//! IMAP (the block marked `IMAP transcripts` at the end, added with the IMAP server): the
//! same runner against `server.imap_port()`; the first expectation is the `* OK` greeting.
//! Two directives serve IMAP files: `C! reconnect` (close this connection, open a new one to
//! the same server: its greeting is the next `S:` line) and the escape `\{N:text}` in `C~:`
//! lines (`text` repeated N times, for oversized lines and literals).

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::transcript::{
    decode_escapes, line_matches, parse_lines, play_at, run_files, transcript_files_of, Line,
};
use common::Server;

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
    play_at(lines, server.addr())
}

/// Runs one file against its own fresh server.
fn run_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("read: {e}"))?;
    let lines = parse_transcript(&text)?;
    play_on_fresh_server(&lines, Server::addr)
}

/// Starts a server, plays `lines` against the listener `addr_of` names, stops the server.
fn play_on_fresh_server(lines: &[Line], addr_of: fn(&Server) -> SocketAddr) -> Result<(), String> {
    let mut server = Server::start("");
    let played = play_at(lines, addr_of(&server));
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
    play_on_fresh_server(&lines, |server| {
        SocketAddr::from(([127, 0, 0, 1], server.imap_port()))
    })
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
