//! Real SMTP clients against the real binary: Python's smtplib (driven by
//! `tests/clients/smtplib_send.py`) and curl.
//!
//! Owns: one test per client behaviour. Each starts its own server, lets the client send,
//! then exports alice's and bob's INBOX and checks that every message the client saw
//! acknowledged is stored exactly once per recipient, byte-identical to what the client
//! meant to send (after the Return-Path and Received headers the server prepends), in
//! sending order, and that nothing else is stored.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::{assert_same_bytes, split_trace, Server, ALICE, BOB};

const SENDER: &str = "sender@client.test";

/// What a client run says it had acknowledged: per recipient, the messages in order.
fn read_manifest(outdir: &Path) -> BTreeMap<String, Vec<Vec<u8>>> {
    let text = std::fs::read_to_string(outdir.join("manifest.txt")).unwrap();
    let mut per_user: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for line in text.lines() {
        let (file, rcpts) = line.split_once('\t').unwrap();
        let bytes = std::fs::read(outdir.join(file)).unwrap();
        for r in rcpts.split(',') {
            per_user
                .entry(r.to_string())
                .or_default()
                .push(bytes.clone());
        }
    }
    per_user
}

/// Exports alice and bob and compares with `expected` (users not named: empty mailbox).
/// Returns the stored messages (with trace headers) per user.
fn check_stored(
    server: &Server,
    expected: &BTreeMap<String, Vec<Vec<u8>>>,
) -> BTreeMap<String, Vec<Vec<u8>>> {
    for user in expected.keys() {
        assert!(
            user == ALICE || user == BOB,
            "the client reports a message acknowledged for {user}"
        );
    }
    let mut stored = BTreeMap::new();
    for user in [ALICE, BOB] {
        let got = server.export(user);
        let want = expected.get(user).cloned().unwrap_or_default();
        assert_eq!(
            got.len(),
            want.len(),
            "{user}: {} message(s) stored, {} acknowledged\nstored: {:#?}",
            got.len(),
            want.len(),
            got.iter().map(|m| common::show(m)).collect::<Vec<_>>()
        );
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let t = split_trace(g).unwrap_or_else(|e| panic!("{user} message {i}: {e}"));
            assert_eq!(t.return_path, SENDER, "{user} message {i}: Return-Path");
            assert!(
                t.received.contains("by mx.example.test"),
                "{user} message {i}: Received header {:?}",
                t.received
            );
            assert_same_bytes(&format!("{user} message {i}"), t.body, w);
        }
        stored.insert(user.to_string(), got);
    }
    stored
}

/// Runs one smtplib case against a fresh server; returns the server and the manifest.
fn smtplib_case(case: &str) -> (Server, BTreeMap<String, Vec<Vec<u8>>>) {
    let server = Server::start("");
    let outdir = tempfile::tempdir().unwrap();
    let script = common::manifest_dir().join("tests/clients/smtplib_send.py");
    let r = common::run(
        Command::new("python3")
            .arg(&script)
            .arg("127.0.0.1")
            .arg(server.port().to_string())
            .arg(outdir.path())
            .arg(case),
        b"",
    );
    assert!(
        r.status.success(),
        "smtplib case {case} failed ({}):\n{}{}\nserver:\n{}",
        r.status,
        r.stdout_text(),
        r.stderr,
        server.output()
    );
    let expected = read_manifest(outdir.path());
    check_stored(&server, &expected);
    (server, expected)
}

#[test]
fn smtplib_single_message() {
    let (_server, expected) = smtplib_case("single");
    assert_eq!(expected.get(ALICE).map(Vec::len), Some(1));
}

#[test]
fn smtplib_one_message_for_two_recipients_is_identical_in_both() {
    let (server, expected) = smtplib_case("two_rcpts");
    assert_eq!(expected.get(ALICE).map(Vec::len), Some(1));
    assert_eq!(expected.get(BOB).map(Vec::len), Some(1));
    // Stored once: the copies, trace headers included, are the same bytes.
    let a = server.export(ALICE);
    let b = server.export(BOB);
    assert_same_bytes("alice's copy vs bob's copy", &a[0], &b[0]);
}

#[test]
fn smtplib_pipelined_commands_and_next_transaction_after_the_dot() {
    let (_server, expected) = smtplib_case("pipelined");
    assert_eq!(expected.get(ALICE).map(Vec::len), Some(1));
    assert_eq!(expected.get(BOB).map(Vec::len), Some(2));
}

#[test]
fn smtplib_8bitmime_body_bytes_preserved() {
    let (_server, expected) = smtplib_case("eightbit");
    let m = &expected[ALICE][0];
    assert!(
        m.iter().any(|&b| b >= 0x80),
        "the test message has no 8-bit bytes"
    );
}

#[test]
fn smtplib_bdat_chunks_stored_verbatim() {
    let (_server, expected) = smtplib_case("bdat");
    assert!(expected[ALICE][0].windows(5).any(|w| w == b"\r\n.\r\n"));
    assert_eq!(expected.get(BOB).map(Vec::len), Some(1));
}

#[test]
fn smtplib_leading_dots_are_unstuffed() {
    let (_server, expected) = smtplib_case("dots");
    let m = &expected[ALICE][0];
    assert!(
        m.windows(4).any(|w| w == b"\n..t"),
        "no `..` line in the test"
    );
    assert!(
        m.windows(7).any(|w| w == b"\r\nFrom "),
        "no `From ` line in the test"
    );
}

#[test]
fn smtplib_unknown_user_refused_with_550() {
    let (_server, expected) = smtplib_case("unknown_user");
    assert_eq!(expected.get(ALICE).map(Vec::len), Some(1));
    assert!(!expected.contains_key(BOB));
}

#[test]
fn smtplib_remote_domain_refused_with_554() {
    let (_server, expected) = smtplib_case("remote_domain");
    assert!(expected.is_empty());
}

#[test]
fn curl_upload_file() {
    let server = Server::start("");
    let dir = tempfile::tempdir().unwrap();
    let message = b"From: <sender@client.test>\r\nTo: <alice@example.test>, <bob@example.test>\r\n\
Subject: curl upload\r\nMessage-ID: <curl-1@client.test>\r\n\r\n\
Sent by curl --upload-file.\r\n.a line curl must dot-stuff\r\n.\r\nlast line\r\n";
    let file = dir.path().join("message.eml");
    std::fs::write(&file, message).unwrap();
    let r = common::run(
        Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "20"])
            .arg(format!("smtp://127.0.0.1:{}/client.test", server.port()))
            .args(["--mail-from", SENDER])
            .args(["--mail-rcpt", ALICE, "--mail-rcpt", BOB])
            .arg("--upload-file")
            .arg(&file),
        b"",
    );
    r.assert_ok("curl smtp upload");
    let mut expected = BTreeMap::new();
    expected.insert(ALICE.to_string(), vec![message.to_vec()]);
    expected.insert(BOB.to_string(), vec![message.to_vec()]);
    check_stored(&server, &expected);
}
