//! TLS with real clients against the real binary: Python's smtplib/imaplib/poplib/ssl (driven
//! by `tests/clients/tls_clients.py`), `openssl s_client` (implicit TLS and `-starttls
//! smtp|imap|pop3`), curl `smtps://`, `imaps://`, `pop3s://` with `--cacert`, and swaks
//! `--tls --auth` when it is installed. Also: the STARTTLS command-injection cases
//! (CVE-2011-0411), certificate reload on SIGHUP with a session kept open across it, SNI, and
//! that no password appears in the server's output.
//!
//! Each test starts its own server (port 0 everywhere). Unless a test configures `[tls]`, the
//! server serves the self-signed certificate it generated into its data dir at first start,
//! and the clients verify it (it names 127.0.0.1).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{make_message, Server, ALICE, BOB, USERS};

/// Test servers allow plaintext IMAP/POP3 logins (for the other test files); these turn that
/// off again, as in production.
const TLS_ONLY: &str =
    "[imap]\nallow_plaintext_auth = false\n[pop3]\nallow_plaintext_auth = false\n";

fn password(user: &str) -> &'static str {
    USERS
        .iter()
        .find(|(u, _)| *u == user)
        .map(|(_, p)| *p)
        .unwrap()
}

fn ports_json(server: &Server) -> String {
    let names = [
        "smtp",
        "submission",
        "submissions",
        "imap",
        "imaps",
        "pop3",
        "pop3s",
    ];
    let fields: Vec<String> = names
        .iter()
        .map(|n| format!("\"{n}\": {}", server.listener_port(n)))
        .collect();
    format!("{{{}}}", fields.join(", "))
}

/// Runs one case of `tls_clients.py`; panics with its and the server's output unless it
/// prints `CASE: ok`. Returns its stdout.
fn python_case(server: &Server, case: &str, extra: &[&str]) -> String {
    let script = common::manifest_dir().join("tests/clients/tls_clients.py");
    let r = common::run(
        Command::new("python3")
            .arg(&script)
            .arg(ports_json(server))
            .arg(server.cert_path())
            .arg(case)
            .args(extra),
        b"",
    );
    let out = r.stdout_text();
    assert!(
        r.status.success() && out.lines().any(|l| l == format!("{case}: ok")),
        "tls case `{case}` failed ({}):\n--- stdout ---\n{out}--- stderr ---\n{}\n--- server ---\n{}",
        r.status,
        r.stderr,
        server.output()
    );
    out
}

/// A server with one message (Subject: seed) in alice's and bob's INBOX.
fn seeded(overrides: &str) -> Server {
    let server = Server::start(overrides);
    for user in [ALICE, BOB] {
        server.deliver(
            "sender@client.test",
            user,
            &[make_message(
                "sender@client.test",
                user,
                "seed@client.test",
                "seed",
            )],
        );
    }
    server
}

fn with_server(overrides: &str, cases: &[&str]) {
    let mut server = seeded(overrides);
    for case in cases {
        python_case(&server, case, &[]);
    }
    server.stop();
}

#[test]
fn smtplib_starttls_then_auth_on_port_25() {
    with_server("", &["smtp_starttls_then_auth"]);
}

#[test]
fn smtplib_submission_requires_auth_and_owned_sender() {
    with_server("", &["submission_requires_auth", "submission_bad_password"]);
}

#[test]
fn smtplib_submissions_implicit_tls() {
    let mut server = seeded("");
    python_case(&server, "submissions_implicit_tls", &[]);
    let inbox = server.export(ALICE);
    assert!(
        inbox
            .iter()
            .any(|m| String::from_utf8_lossy(m).contains("Subject: submissions")),
        "the message sent over SMTPS is not in alice's INBOX"
    );
    server.stop();
}

/// A TLS session (STARTTLS on port 25, implicit TLS with a login on submissions) moves to
/// the core of each message's recipient with its TLS state and login, and goes on.
#[test]
fn smtp_tls_sessions_move_between_cores_and_go_on() {
    let mut server = seeded("[cores]\nplacement = [0, 1]\n");
    python_case(&server, "tls_sessions_move", &[]);
    for (user, subjects) in [
        (
            ALICE,
            ["move-25-0", "move-25-2", "move-465-0", "move-465-2"].as_slice(),
        ),
        (BOB, ["move-25-1", "move-465-1"].as_slice()),
    ] {
        let got: Vec<String> = server
            .export(user)
            .iter()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .filter(|m| m.contains("Subject: move-"))
            .collect();
        assert_eq!(got.len(), subjects.len(), "{user}: {got:?}");
        for (m, subject) in got.iter().zip(subjects) {
            assert!(
                m.contains(&format!("Subject: {subject}\r\n")),
                "{user}: {m:?}"
            );
        }
    }
    server.stop();
}

#[test]
fn imaplib_starttls_logindisabled_and_imaps() {
    with_server(
        TLS_ONLY,
        &[
            "imap_starttls_logindisabled",
            "imaps_login_fetch",
            "imaps_authenticate_login",
        ],
    );
}

#[test]
fn poplib_stls_and_pop3s() {
    with_server(TLS_ONLY, &["pop3_stls", "pop3s_retr"]);
}

#[test]
fn starttls_injection_is_discarded_in_smtp_imap_and_pop3() {
    with_server(
        TLS_ONLY,
        &[
            "smtp_starttls_injection",
            "imap_starttls_injection",
            "pop3_stls_injection",
        ],
    );
}

#[test]
fn only_tls_1_2_and_1_3() {
    with_server("", &["tls_versions"]);
}

// ---------------------------------------------------------------------------------------------
// openssl s_client

/// `openssl s_client` with `args`, `input` on stdin, verifying the server's certificate.
/// Returns stdout; asserts the verification succeeded.
fn s_client(server: &Server, args: &[&str], input: &str) -> String {
    let ca = server.cert_path();
    let r = common::run(
        Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-crlf",
                "-ign_eof",
                "-verify_return_error",
            ])
            .arg("-CAfile")
            .arg(&ca)
            .args(args),
        input.as_bytes(),
    );
    let out = r.stdout_text();
    assert!(
        r.status.success(),
        "openssl s_client {args:?} failed ({}):\n{out}\n{}\n--- server ---\n{}",
        r.status,
        r.stderr,
        server.output()
    );
    assert!(
        !r.stderr.contains("verify error"),
        "certificate not verified: {}",
        r.stderr
    );
    out
}

#[test]
fn openssl_s_client_implicit_tls_and_starttls() {
    let mut server = seeded(TLS_ONLY);
    let connect = |name: &str| format!("127.0.0.1:{}", server.listener_port(name));

    let out = s_client(
        &server,
        &["-connect", &connect("imaps")],
        &format!(
            "a LOGIN {ALICE} {}\na SELECT INBOX\na LOGOUT\n",
            password(ALICE)
        ),
    );
    assert!(out.contains("a OK [CAPABILITY"), "IMAPS login:\n{out}");
    assert!(out.contains("* 1 EXISTS"), "IMAPS select:\n{out}");

    let out = s_client(
        &server,
        &["-connect", &connect("imap"), "-starttls", "imap"],
        &format!("a LOGIN {ALICE} {}\na LOGOUT\n", password(ALICE)),
    );
    assert!(
        out.contains("a OK [CAPABILITY"),
        "IMAP STARTTLS login:\n{out}"
    );

    let out = s_client(
        &server,
        &["-connect", &connect("pop3s")],
        &format!("USER {BOB}\nPASS {}\nSTAT\nQUIT\n", password(BOB)),
    );
    assert!(out.contains("+OK 1 "), "POP3S STAT:\n{out}");

    let out = s_client(
        &server,
        &["-connect", &connect("pop3"), "-starttls", "pop3"],
        &format!("USER {BOB}\nPASS {}\nQUIT\n", password(BOB)),
    );
    assert!(out.contains("+OK logged in"), "POP3 STLS login:\n{out}");

    for (name, args) in [
        ("smtp", vec!["-starttls", "smtp"]),
        ("submission", vec!["-starttls", "smtp"]),
        ("submissions", vec![]),
    ] {
        let mut a = vec!["-connect".to_string(), connect(name)];
        a.extend(args.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = s_client(&server, &a, "EHLO client.test\nQUIT\n");
        assert!(
            out.contains("250-AUTH PLAIN LOGIN") || out.contains("250 AUTH PLAIN LOGIN"),
            "{name}: no AUTH over TLS:\n{out}"
        );
        assert!(
            !out.contains("STARTTLS"),
            "{name}: STARTTLS over TLS:\n{out}"
        );
        assert!(out.contains("221 2.0.0"), "{name}: QUIT:\n{out}");
    }
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// curl

fn curl(server: &Server, args: &[&str]) -> Vec<u8> {
    let r = common::run(
        Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "20", "--cacert"])
            .arg(server.cert_path())
            .args(args),
        b"",
    );
    assert!(
        r.status.success(),
        "curl {args:?} failed ({}): {}\n--- server ---\n{}",
        r.status,
        r.stderr,
        server.output()
    );
    r.stdout
}

#[test]
fn curl_smtps_imaps_pop3s() {
    let mut server = seeded(TLS_ONLY);
    let user = format!("{ALICE}:{}", password(ALICE));
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail.eml");
    std::fs::write(
        &mail,
        make_message(
            ALICE,
            BOB,
            "curl-smtps@client.test",
            "sent by curl over smtps",
        ),
    )
    .unwrap();
    curl(
        &server,
        &[
            &format!("smtps://127.0.0.1:{}", server.listener_port("submissions")),
            "--user",
            &user,
            "--mail-from",
            ALICE,
            "--mail-rcpt",
            BOB,
            "--upload-file",
            mail.to_str().unwrap(),
        ],
    );
    // STARTTLS on submission, required by --ssl-reqd.
    curl(
        &server,
        &[
            &format!("smtp://127.0.0.1:{}", server.listener_port("submission")),
            "--ssl-reqd",
            "--user",
            &user,
            "--mail-from",
            ALICE,
            "--mail-rcpt",
            BOB,
            "--upload-file",
            mail.to_str().unwrap(),
        ],
    );
    let bob = format!("{BOB}:{}", password(BOB));
    let got = curl(
        &server,
        &[
            &format!(
                "imaps://127.0.0.1:{}/INBOX;UID=2",
                server.listener_port("imaps")
            ),
            "--user",
            &bob,
        ],
    );
    assert!(
        String::from_utf8_lossy(&got).contains("sent by curl over smtps"),
        "imaps UID 2:\n{}",
        String::from_utf8_lossy(&got)
    );
    let got = curl(
        &server,
        &[
            &format!("pop3s://127.0.0.1:{}/3", server.listener_port("pop3s")),
            "--user",
            &bob,
        ],
    );
    assert!(
        String::from_utf8_lossy(&got).contains("sent by curl over smtps"),
        "pop3s message 3:\n{}",
        String::from_utf8_lossy(&got)
    );
    // Plain IMAP with --ssl-reqd upgrades with STARTTLS.
    let got = curl(
        &server,
        &[
            &format!("imap://127.0.0.1:{}/INBOX;UID=1", server.imap_port()),
            "--ssl-reqd",
            "--user",
            &bob,
        ],
    );
    assert!(String::from_utf8_lossy(&got).contains("seed@client.test"));
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// swaks

#[test]
fn swaks_starttls_auth_submission() {
    if Command::new("swaks").arg("--version").output().is_err() {
        eprintln!("SKIPPED: swaks is not installed (.ci/run installs it)");
        return;
    }
    let mut server = seeded("");
    let r = common::run(
        Command::new("swaks")
            .args(["--server", "127.0.0.1", "--port"])
            .arg(server.listener_port("submission").to_string())
            .args([
                "--tls",
                "--auth",
                "PLAIN",
                "--auth-user",
                ALICE,
                "--auth-password",
            ])
            .arg(password(ALICE))
            .args([
                "--from",
                ALICE,
                "--to",
                BOB,
                "--header",
                "Subject: swaks-tls",
            ])
            .args(["--timeout", "20"]),
        b"",
    );
    let out = r.stdout_text();
    assert!(r.status.success(), "swaks failed:\n{out}\n{}", r.stderr);
    assert!(out.contains("<-  220 2.0.0 Ready to start TLS"), "{out}");
    assert!(out.contains("235 2.7.0 Authentication successful"), "{out}");
    // swaks shows the AUTH exchange; the server must not log it.
    let log = server.output();
    assert!(
        !log.contains(password(ALICE)),
        "password in the server output:\n{log}"
    );
    let inbox = server.export(BOB);
    assert!(inbox
        .iter()
        .any(|m| String::from_utf8_lossy(m).contains("Subject: swaks-tls")));
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// certificates: SNI, reload, secrets

/// Writes a fresh self-signed certificate and key for `names` to `dir/name.{crt,key}`.
fn make_cert(dir: &Path, name: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    let g =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    // Replace atomically: a running server may read these at any moment (SIGHUP).
    for (path, text) in [(&key, g.signing_key.serialize_pem()), (&cert, g.cert.pem())] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
    (cert, key)
}

/// The certificates (base64 DER) served without SNI and for `names`, by name.
fn served_certs(server: &Server, names: &[&str]) -> Vec<(String, String)> {
    python_case(server, "print_certs", names)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

fn pem_der_base64(cert: &Path) -> String {
    let pem = std::fs::read_to_string(cert).unwrap();
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

#[test]
fn sni_chooses_the_certificate_by_name() {
    let certs = tempfile::tempdir().unwrap();
    let (dc, dk) = make_cert(certs.path(), "default", &["mx.example.test", "127.0.0.1"]);
    let (oc, ok) = make_cert(certs.path(), "other", &["mail.other.test"]);
    let (wc, wk) = make_cert(certs.path(), "wild", &["*.wild.test"]);
    let overrides = format!(
        "[tls]\ncert = {dc:?}\nkey = {dk:?}\n\
         [[tls.sni]]\nnames = [\"mail.other.test\"]\ncert = {oc:?}\nkey = {ok:?}\n\
         [[tls.sni]]\nnames = [\"*.wild.test\"]\ncert = {wc:?}\nkey = {wk:?}\n"
    );
    let mut server = Server::start(&overrides);
    let got = served_certs(
        &server,
        &["mail.other.test", "imap.wild.test", "unknown.test"],
    );
    let find = |k: &str| got.iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert_eq!(find("default"), pem_der_base64(&dc));
    assert_eq!(find("mail.other.test"), pem_der_base64(&oc));
    assert_eq!(find("imap.wild.test"), pem_der_base64(&wc));
    assert_eq!(find("unknown.test"), pem_der_base64(&dc));
    assert!(
        !server.data_dir.join("tls").exists(),
        "no self-signed certificate is generated when [tls] is configured"
    );
    server.stop();
}

#[test]
fn sighup_reloads_certificates_and_keeps_open_sessions() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(certs.path(), "mx", &["127.0.0.1"]);
    let first = pem_der_base64(&cert);
    let mut server = seeded(&format!("[tls]\ncert = {cert:?}\nkey = {key:?}\n"));
    assert_eq!(served_certs(&server, &[])[0].1, first);

    // A session that stays open across the reload.
    let script = common::manifest_dir().join("tests/clients/tls_clients.py");
    let mut holder = std::process::Command::new("python3")
        .arg(&script)
        .arg(ports_json(&server))
        .arg(&cert)
        .arg("hold_open")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line.trim(), "open", "the holding session did not log in");

    make_cert(certs.path(), "mx", &["127.0.0.1"]);
    let second = pem_der_base64(&cert);
    assert_ne!(first, second);
    let pid = server.proc().pid();
    // SAFETY: kill(2) on the server we started.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.output().contains("TLS certificates reloaded") {
        assert!(Instant::now() < deadline, "no reload:\n{}", server.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(served_certs(&server, &[])[0].1, second);

    use std::io::Write;
    holder.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = holder.wait_with_output().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(
        out.status.success() && rest.contains("hold_open: ok"),
        "the session opened before the reload broke: {rest}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A broken file on reload: the old certificates stay in use.
    std::fs::write(&cert, "not a certificate").unwrap();
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.output().contains("keeping the certificates in use") {
        assert!(
            Instant::now() < deadline,
            "no refusal:\n{}",
            server.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(served_certs(&server, &[])[0].1, second);
    server.stop();
}

#[test]
fn a_missing_certificate_file_stops_serve_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let missing = dir.path().join("nope.crt");
    let config = common::write_config(
        dir.path(),
        &data,
        &format!("[tls]\ncert = {missing:?}\nkey = {missing:?}\n"),
    );
    let r = common::ringmail(&["serve", "--config", config.to_str().unwrap()], b"");
    assert!(!r.status.success());
    assert!(
        r.stderr.contains("nope.crt"),
        "the error does not name the file: {}",
        r.stderr
    );
}

#[test]
fn first_start_generates_and_announces_a_self_signed_certificate() {
    let mut server = Server::start("");
    let out = server.output();
    assert!(
        out.contains("generated a self-signed TLS certificate"),
        "not announced:\n{out}"
    );
    let first = std::fs::read(server.cert_path()).unwrap();
    server.stop();
    server.restart();
    assert!(
        !server.output().contains("generated a self-signed"),
        "generated again on restart"
    );
    assert_eq!(std::fs::read(server.cert_path()).unwrap(), first);
    server.stop();
}
