//! The bundled load generator's SMTP mode (`ringmail_loadgen::run::run_smtp`) against a real
//! ringmail started by the test, through TLS and AUTH: `--starttls --auth PLAIN` on the
//! submission listener, implicit `--tls --auth LOGIN` on the submissions listener, and
//! `--starttls --tls-ca` (the server's generated certificate, verified) on port 25. Every
//! run's counts must add up, and the messages must be in the mailboxes afterwards
//! (`ringmail export`). Each run is bounded by `--messages` and `--duration-secs`.

mod common;

use common::{Server, ALICE, BOB, USERS};
use ringmail_loadgen::args::{parse_args, Command};
use ringmail_loadgen::outcome::{OpOutcome, Outcome};
use ringmail_loadgen::progress::Progress;
use ringmail_loadgen::run::run_smtp;

fn password(user: &str) -> &'static str {
    USERS.iter().find(|(u, _)| *u == user).unwrap().1
}

/// Runs `ringmail-loadgen smtp ARGS` (as a library) to completion.
fn load(args: &[&str]) -> Outcome {
    let mut all = vec!["smtp", "--duration-secs", "60", "--threads", "2", "--quiet"];
    all.extend_from_slice(args);
    let cfg = match parse_args(all, 2) {
        Ok(Command::Smtp(cfg)) => cfg,
        other => panic!("{args:?}: {other:?}"),
    };
    let progress = Progress::default();
    let outcome = run_smtp(&cfg, &progress);
    assert_eq!(progress.completed(), op(&outcome, "message").completed());
    outcome
}

fn op<'o>(o: &'o Outcome, name: &str) -> &'o OpOutcome {
    o.op(name)
        .unwrap_or_else(|| panic!("no op {name} in {:?}", o.ops))
}

/// Asserts every one of `messages` was accepted and nothing failed.
fn assert_all_accepted(o: &Outcome, messages: u64) {
    let m = op(o, "message");
    assert_eq!(
        (m.ok, m.tempfail, m.permfail, m.aborted, o.errors),
        (messages, 0, 0, 0, 0),
        "first error: {:?}",
        o.first_error
    );
    assert_eq!(op(o, "session_setup").ok, o.connects);
}

#[test]
fn tls_and_auth_runs_deliver_every_message() {
    let server = Server::start("");
    let submission = format!("127.0.0.1:{}", server.listener_port("submission"));
    let submissions = format!("127.0.0.1:{}", server.listener_port("submissions"));
    let smtp = format!("127.0.0.1:{}", server.port());
    let cert = server.cert_path().display().to_string();
    let alice_login = format!("{ALICE}:{}", password(ALICE));
    let bob_login = format!("{BOB}:{}", password(BOB));

    // Submission: EHLO, STARTTLS, EHLO, AUTH PLAIN, then MAIL as the authenticated user.
    let o = load(&[
        "--target",
        &submission,
        "--starttls",
        "--auth",
        "PLAIN",
        "--auth-user",
        &alice_login,
        "--from",
        ALICE,
        "--to",
        BOB,
        "--connections",
        "4",
        "--messages",
        "100",
        "--per-connection",
        "10",
        "--size",
        "2048",
    ]);
    assert_all_accepted(&o, 100);
    assert_eq!(o.connects, 12, "25 messages per connection, 10 per session");
    assert_eq!(op(&o, "auth").ok, 12);

    // Implicit TLS (port 465 style) with AUTH LOGIN.
    let o = load(&[
        "--target",
        &submissions,
        "--tls",
        "--auth",
        "LOGIN",
        "--auth-user",
        &bob_login,
        "--from",
        BOB,
        "--to",
        ALICE,
        "--connections",
        "2",
        "--messages",
        "30",
        "--size",
        "1000-4000",
    ]);
    assert_all_accepted(&o, 30);
    assert_eq!(op(&o, "auth").ok, o.connects);

    // Port 25, STARTTLS with the server's certificate verified (it names 127.0.0.1).
    let o = load(&[
        "--target",
        &smtp,
        "--starttls",
        "--tls-ca",
        &cert,
        "--to",
        ALICE,
        "--connections",
        "3",
        "--messages",
        "60",
        "--rate",
        "300",
    ]);
    assert_all_accepted(&o, 60);

    assert_eq!(server.export(BOB).len(), 100);
    assert_eq!(server.export(ALICE).len(), 30 + 60);
}

#[test]
fn a_certificate_that_does_not_name_the_server_is_refused() {
    let server = Server::start("");
    let o = load(&[
        "--target",
        &format!("127.0.0.1:{}", server.port()),
        "--starttls",
        "--tls-ca",
        &server.cert_path().display().to_string(),
        "--tls-name",
        "not-this-server.test",
        "--to",
        ALICE,
        "--connections",
        "1",
        "--messages",
        "5",
    ]);
    let m = op(&o, "message");
    assert_eq!(
        (m.ok, o.connects),
        (0, 3),
        "three attempts, then the slot gives up"
    );
    let error = o.first_error.unwrap_or_default();
    assert!(error.contains("certificate"), "{error}");
    assert_eq!(server.export(ALICE).len(), 0);
}
