//! Real IMAP clients against the real binary: Python's imaplib (driven by
//! `tests/clients/imap_imaplib.py`), curl's `imap://` and, when it is installed, mbsync
//! (isync) syncing a mailbox to a local Maildir and back.
//!
//! Owns: one test per client behaviour, each with its own server (port 0 everywhere, so the
//! tests run in parallel). Mail arrives by SMTP (smtplib inside the script, or the harness'
//! [`SmtpClient`](common::SmtpClient) here); what the clients read back is compared byte for
//! byte with what was sent plus the trace headers the server prepends (`common::split_trace`).
//! The imaplib cases assert themselves and exit non-zero with the reason; this file runs
//! them and shows their output and the server's on failure. Every client runs under the
//! harness' deadline ([`common::run`]), and curl and mbsync have their own timeouts.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_same_bytes, split_trace, Server, ALICE, USERS};

const SENDER: &str = "sender@client.test";

fn alice_password() -> &'static str {
    USERS
        .iter()
        .find(|(u, _)| *u == ALICE)
        .map(|(_, p)| *p)
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// imaplib

/// Runs one case of `imap_imaplib.py` against `server`, with `outdir` for its files; panics
/// with the script's and the server's output unless it exits 0. Returns its stdout.
fn run_imaplib(server: &Server, outdir: &Path, case: &str) -> String {
    let script = common::manifest_dir().join("tests/clients/imap_imaplib.py");
    let r = common::run(
        Command::new("python3")
            .arg(&script)
            .arg("127.0.0.1")
            .arg(server.imap_port().to_string())
            .arg(server.port().to_string())
            .arg(outdir)
            .arg(case),
        b"",
    );
    assert!(
        r.status.success(),
        "imaplib case `{case}` failed ({}):\n--- script stdout ---\n{}--- script stderr ---\n{}\n--- server ---\n{}",
        r.status,
        r.stdout_text(),
        r.stderr,
        server.output()
    );
    let out = r.stdout_text();
    assert!(
        out.lines().any(|l| l == format!("{case}: ok")),
        "imaplib case `{case}` exited 0 without `{case}: ok`:\n{out}"
    );
    out
}

/// A fresh server, one imaplib case; returns the script's stdout.
fn imaplib(case: &str) -> String {
    let mut server = Server::start("");
    let outdir = tempfile::tempdir().unwrap();
    let out = run_imaplib(&server, outdir.path(), case);
    server.stop();
    out
}

#[test]
fn imaplib_login_and_capabilities() {
    imaplib("login");
}

#[test]
fn imaplib_failed_logins_same_reply_delayed_and_bye_after_three() {
    imaplib("login_failures");
}

#[test]
fn imaplib_authenticate_plain_with_continuation_and_sasl_ir() {
    imaplib("authenticate_plain");
}

#[test]
fn imaplib_select_after_three_deliveries_exists_3() {
    imaplib("select_exists");
}

#[test]
fn imaplib_fetch_flags_uid_rfc822_size() {
    imaplib("fetch_flags_uid_size");
}

#[test]
fn imaplib_fetch_body_is_byte_exact() {
    imaplib("fetch_body_exact");
}

#[test]
fn imaplib_fetch_body_sets_seen_and_peek_does_not() {
    imaplib("fetch_seen");
}

#[test]
fn imaplib_fetch_body_peek_header_and_header_fields() {
    imaplib("fetch_header_peek");
}

#[test]
fn imaplib_fetch_partial_ranges() {
    imaplib("fetch_partial");
}

#[test]
fn imaplib_envelope_and_bodystructure_of_multipart() {
    imaplib("fetch_envelope_bodystructure");
}

#[test]
fn imaplib_fetch_mime_sections() {
    imaplib("fetch_sections");
}

#[test]
fn imaplib_store_add_remove_replace_flags() {
    imaplib("store_flags");
}

#[test]
fn imaplib_store_silent_sends_no_fetch() {
    imaplib("store_silent");
}

#[test]
fn imaplib_keywords_stored_searched_and_announced() {
    imaplib("keywords");
}

#[test]
fn imaplib_search_criteria() {
    imaplib("search");
}

#[test]
fn imaplib_copy_with_copyuid() {
    imaplib("copy");
}

#[test]
fn imaplib_uid_copy_with_copyuid() {
    imaplib("uid_copy");
}

#[test]
fn imaplib_move_and_uid_move() {
    imaplib("move");
}

#[test]
fn imaplib_expunge_removes_deleted_only() {
    imaplib("expunge");
}

#[test]
fn imaplib_uid_expunge_removes_only_named_uids() {
    imaplib("uid_expunge");
}

#[test]
fn imaplib_append_with_flags_and_date_appenduid() {
    imaplib("append");
}

#[test]
fn imaplib_default_mailboxes_special_use_and_subscribed() {
    imaplib("list_default_mailboxes");
}

#[test]
fn imaplib_list_patterns() {
    imaplib("list_patterns");
}

#[test]
fn imaplib_rename_moves_children_and_messages() {
    imaplib("rename_with_children");
}

#[test]
fn imaplib_rename_inbox_moves_messages_and_keeps_inbox() {
    imaplib("rename_inbox");
}

#[test]
fn imaplib_delete_and_recreate_does_not_reuse_uids() {
    imaplib("delete");
}

#[test]
fn imaplib_subscribe_unsubscribe_lsub() {
    imaplib("subscribe_lsub");
}

#[test]
fn imaplib_recent_only_in_the_first_session_told() {
    imaplib("recent_once");
}

#[test]
fn imaplib_list_return_special_use_status() {
    imaplib("list_return_status");
}

#[test]
fn imaplib_status_items() {
    imaplib("status");
}

#[test]
fn imaplib_examine_is_read_only() {
    imaplib("examine_read_only");
}

#[test]
fn imaplib_close_expunges_deleted() {
    imaplib("close_expunges");
}

#[test]
fn imaplib_unselect_does_not_expunge() {
    imaplib("unselect_keeps");
}

#[test]
fn imaplib_namespace_and_id() {
    imaplib("namespace_id");
}

#[test]
fn imaplib_condstore_modseq_unchangedsince_changedsince() {
    imaplib("condstore");
}

#[test]
fn imaplib_enable_imap4rev2_esearch_no_recent() {
    imaplib("enable_imap4rev2");
}

#[test]
fn imaplib_idle_woken_by_smtp_delivery() {
    let out = imaplib("idle");
    // The measured delay, for the test log (`cargo test -- --nocapture`).
    for l in out.lines().filter(|l| l.starts_with("IDLE:")) {
        eprintln!("{l}");
    }
}

#[test]
fn imaplib_idle_sees_other_sessions_expunge() {
    imaplib("idle_expunge");
}

#[test]
fn imaplib_two_sessions_see_flags_expunges_and_new_mail() {
    imaplib("two_sessions");
}

#[test]
fn imaplib_uidvalidity_and_uids_survive_restart() {
    let mut server = Server::start("");
    let outdir = tempfile::tempdir().unwrap();
    run_imaplib(&server, outdir.path(), "restart_before");
    server.stop();
    server.restart();
    run_imaplib(&server, outdir.path(), "restart_after");
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// curl

/// Three messages delivered to alice over SMTP; returns them as sent.
fn deliver_three(server: &Server) -> Vec<Vec<u8>> {
    let sent: Vec<Vec<u8>> = (1..=3)
        .map(|i| {
            common::make_message(
                SENDER,
                ALICE,
                &format!("curl-{i}@client.test"),
                &format!("Message {i} for curl.\n.a dotted line\nFrom the test\nend {i}"),
            )
        })
        .collect();
    server.deliver(SENDER, ALICE, &sent);
    sent
}

/// curl with a deadline and the given arguments; panics unless it exits 0.
fn curl(args: &[&str]) -> Vec<u8> {
    let r = common::run(
        Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "20"])
            .args(args),
        b"",
    );
    r.assert_ok(&format!("curl {args:?}"));
    r.stdout
}

fn alice_userpass() -> String {
    format!("{ALICE}:{}", alice_password())
}

#[test]
fn curl_fetch_by_uid_is_byte_exact() {
    let mut server = Server::start("");
    let sent = deliver_three(&server);
    let stored = server.export(ALICE);
    assert_eq!(stored.len(), 3);
    // The user in the URL, as a user would type it (`@` percent-encoded).
    let url = format!(
        "imap://alice%40example.test:{}@127.0.0.1:{}/INBOX;UID=1",
        alice_password(),
        server.imap_port()
    );
    let got = curl(&[&url]);
    assert_same_bytes("curl INBOX;UID=1 vs the stored message", &got, &stored[0]);
    let t = split_trace(&got).unwrap();
    assert_eq!(t.return_path, SENDER);
    assert_same_bytes("curl INBOX;UID=1 without trace vs sent", t.body, &sent[0]);
    // By sequence number, with --user.
    let url = format!("imap://127.0.0.1:{}/INBOX;MAILINDEX=3", server.imap_port());
    let got = curl(&["--user", &alice_userpass(), &url]);
    assert_same_bytes("curl INBOX;MAILINDEX=3", &got, &stored[2]);
    server.stop();
}

#[test]
fn curl_lists_mailboxes() {
    let mut server = Server::start("");
    let url = format!("imap://127.0.0.1:{}/", server.imap_port());
    let out = String::from_utf8(curl(&["--user", &alice_userpass(), &url])).unwrap();
    let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
    let mut names: Vec<&str> = lines
        .iter()
        .map(|l| {
            assert!(l.starts_with("* LIST ("), "not a LIST line: {l:?}\n{out}");
            l.rsplit(' ').next().unwrap().trim_matches('"')
        })
        .collect();
    names.sort();
    assert_eq!(names, ["Drafts", "INBOX", "Junk", "Sent", "Trash"], "{out}");
    for (name, attr) in [
        ("Drafts", "\\Drafts"),
        ("Sent", "\\Sent"),
        ("Trash", "\\Trash"),
        ("Junk", "\\Junk"),
    ] {
        let line = lines
            .iter()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap();
        assert!(
            line[..line.find(')').unwrap()]
                .split(' ')
                .any(|a| a.trim_start_matches('(') == attr),
            "{name} without {attr}: {out}"
        );
    }
    server.stop();
}

#[test]
fn curl_custom_search_all() {
    let mut server = Server::start("");
    deliver_three(&server);
    let url = format!("imap://127.0.0.1:{}/INBOX", server.imap_port());
    let out = curl(&["--user", &alice_userpass(), &url, "-X", "SEARCH ALL"]);
    assert_eq!(String::from_utf8_lossy(&out), "* SEARCH 1 2 3\r\n");
    let out = curl(&[
        "--user",
        &alice_userpass(),
        &url,
        "-X",
        "SEARCH HEADER Message-ID curl-2@client.test",
    ]);
    assert_eq!(String::from_utf8_lossy(&out), "* SEARCH 2\r\n");
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// mbsync (isync)

/// The mbsync binary, or None (then the test prints a loud SKIPPED line).
fn mbsync() -> Option<PathBuf> {
    let r = common::run(Command::new("sh").args(["-c", "command -v mbsync"]), b"");
    if !r.status.success() {
        return None;
    }
    let path = r.stdout_text().trim().to_string();
    (!path.is_empty()).then(|| PathBuf::from(path))
}

fn write_mbsyncrc(path: &Path, port: u16, maildir: &Path, sync: &str) {
    let text = format!(
        "IMAPAccount ringmail\nHost 127.0.0.1\nPort {port}\nUser {ALICE}\nPass {}\n\
         SSLType None\nAuthMechs LOGIN\nTimeout 20\n\n\
         IMAPStore remote\nAccount ringmail\n\n\
         MaildirStore local\nPath {}/\nInbox {}/INBOX\n\n\
         Channel inbox\nFar :remote:INBOX\nNear :local:INBOX\nSync {sync}\nCreate Near\n\
         Expunge None\nSyncState *\n",
        alice_password(),
        maildir.display(),
        maildir.display()
    );
    std::fs::write(path, text).unwrap();
}

fn run_mbsync(bin: &Path, rc: &Path, server: &Server) {
    let r = common::run(Command::new(bin).arg("-c").arg(rc).arg("inbox"), b"");
    assert!(
        r.status.success(),
        "mbsync failed ({}):\n{}{}\n--- server ---\n{}",
        r.status,
        r.stdout_text(),
        r.stderr,
        server.output()
    );
}

/// The messages of a Maildir folder (`cur` and `new`), ordered by mbsync's `U=` number:
/// (path, bytes).
fn maildir_messages(folder: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v = Vec::new();
    for sub in ["cur", "new"] {
        let Ok(entries) = std::fs::read_dir(folder.join(sub)) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            v.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    let uid = |p: &Path| -> u32 {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let at = name
            .find(",U=")
            .unwrap_or_else(|| panic!("mbsync file without U=: {name}"));
        name[at + 3..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    v.sort_by_key(|(p, _)| uid(p));
    v
}

/// The message without the `X-TUID:` header line mbsync adds to the header of every message
/// it stores (its own bookkeeping, Dovecot gets the same).
fn without_tuid(message: &[u8]) -> Vec<u8> {
    let header_end = message
        .windows(2)
        .position(|w| w == b"\n\n")
        .map_or(message.len(), |i| i + 1);
    let mut out = Vec::with_capacity(message.len());
    let mut rest = message;
    let mut at = 0;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let line = &rest[..end];
        if !(at < header_end && line.starts_with(b"X-TUID: ")) {
            out.extend_from_slice(line);
        }
        at += end;
        rest = &rest[end..];
    }
    out
}

#[test]
fn mbsync_pulls_inbox_to_maildir_and_pushes_seen_back() {
    let Some(bin) = mbsync() else {
        eprintln!(
            "\n*** SKIPPED mbsync_pulls_inbox_to_maildir_and_pushes_seen_back: mbsync is not \
             installed (apt package `isync`) ***\n"
        );
        return;
    };
    let mut server = Server::start("");
    let sent = deliver_three(&server);
    let stored = server.export(ALICE);
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("mail");
    std::fs::create_dir_all(&maildir).unwrap();
    let rc = dir.path().join("mbsyncrc");
    write_mbsyncrc(&rc, server.imap_port(), &maildir, "Pull");
    run_mbsync(&bin, &rc, &server);

    let got = maildir_messages(&maildir.join("INBOX"));
    assert_eq!(got.len(), 3, "messages in the Maildir: {got:?}");
    for (i, (path, bytes)) in got.iter().enumerate() {
        let bytes = &without_tuid(bytes);
        // mbsync stores Maildir files with LF line ends.
        let want: Vec<u8> = String::from_utf8(stored[i].clone())
            .unwrap()
            .replace("\r\n", "\n")
            .into_bytes();
        assert_same_bytes(&format!("Maildir file {}", path.display()), bytes, &want);
        let crlf = String::from_utf8(bytes.to_vec())
            .unwrap()
            .replace('\n', "\r\n")
            .into_bytes();
        assert_same_bytes(
            &format!("Maildir file {} without trace", path.display()),
            split_trace(&crlf).unwrap().body,
            &sent[i],
        );
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.ends_with(":2,"),
            "message {i} arrived with flags (it was never read): {name}"
        );
    }

    // Read the second one locally (Maildir flag S), push the flag back.
    let (path, _) = &got[1];
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let seen = maildir.join("INBOX/cur").join(format!("{name}S"));
    std::fs::rename(path, &seen).unwrap();
    write_mbsyncrc(&rc, server.imap_port(), &maildir, "All");
    run_mbsync(&bin, &rc, &server);

    let outdir = tempfile::tempdir().unwrap();
    let out = run_imaplib(&server, outdir.path(), "dump_flags");
    let flags: Vec<&str> = out.lines().filter(|l| l.starts_with("uid ")).collect();
    assert_eq!(flags.len(), 3, "{out}");
    for (i, line) in flags.iter().enumerate() {
        let has_seen = line.split(' ').any(|f| f == "\\Seen");
        assert_eq!(
            has_seen,
            i == 1,
            "message {} after mbsync pushed \\Seen of message 2: {line}",
            i + 1
        );
    }
    server.stop();
}
