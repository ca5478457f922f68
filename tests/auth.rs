//! Failed logins against the real binary: progressively longer delays per client IP and per
//! account, and no password or SASL payload in anything the server prints.
//!
//! The failure table is per core, so these servers run on one core (`[cores] placement = [0]`) to make
//! the counts deterministic. Delays are asserted as lower bounds only (a loaded machine makes
//! them longer, never shorter).

mod common;

use std::process::Command;

use common::{Server, ALICE, BOB, USERS};

/// One core, 100 ms base delay, plaintext POP3 logins allowed (the base test config).
const ONE_CORE: &str = "[cores]\nplacement = [0]\n[auth]\nfailure_delay_ms = 100\n";

/// Logs in over POP3 with USER/PASS from `source_ip`, on a new connection each time; prints
/// one line per attempt: `<ms until the PASS reply> <first reply word>`.
const POP3_ATTEMPTS: &str = r#"
import socket, sys, time
port = int(sys.argv[1])
for spec in sys.argv[2:]:
    source, user, password = spec.split(",")
    s = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    f = s.makefile("rb")
    f.readline()
    s.sendall(f"USER {user}\r\n".encode())
    f.readline()
    start = time.monotonic()
    s.sendall(f"PASS {password}\r\n".encode())
    reply = f.readline().decode()
    ms = (time.monotonic() - start) * 1000
    print(f"{ms:.0f} {reply.split()[0]}", flush=True)
    s.close()
"#;

fn password(user: &str) -> &'static str {
    USERS
        .iter()
        .find(|(u, _)| *u == user)
        .map(|(_, p)| *p)
        .unwrap()
}

/// Runs the attempts; returns (ms, ok) per attempt.
fn attempts(server: &Server, specs: &[(&str, &str, &str)]) -> Vec<(u64, bool)> {
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(POP3_ATTEMPTS)
        .arg(server.pop3_port().to_string());
    for (ip, user, pw) in specs {
        cmd.arg(format!("{ip},{user},{pw}"));
    }
    let r = common::run(&mut cmd, b"");
    r.assert_ok("pop3 login attempts");
    r.stdout_text()
        .lines()
        .map(|l| {
            let (ms, word) = l.split_once(' ').unwrap();
            (ms.parse().unwrap(), word == "+OK")
        })
        .collect()
}

#[test]
fn failed_logins_are_delayed_longer_per_ip_and_per_account() {
    let mut server = Server::start(ONE_CORE);
    let got = attempts(
        &server,
        &[
            ("127.0.0.1", ALICE, "wrong-1"),
            ("127.0.0.1", ALICE, "wrong-2"),
            ("127.0.0.1", ALICE, "wrong-3"),
            // Another address, same account: the account's count applies.
            ("127.0.0.2", ALICE, "wrong-4"),
            // Another address, another account: nothing recorded against either.
            ("127.0.0.3", BOB, "wrong-5"),
            // The right password still works from there.
            ("127.0.0.3", BOB, password(BOB)),
        ],
    );
    assert_eq!(got.len(), 6, "{got:?}\n{}", server.output());
    let ms: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert!(got[..5].iter().all(|g| !g.1), "{got:?}");
    assert!(got[5].1, "bob's right password failed: {got:?}");
    // 100, 200, 400 ms for the first three failures from 127.0.0.1 on alice.
    for (i, min) in [(0, 100), (1, 200), (2, 400), (3, 800)] {
        assert!(
            ms[i] >= min,
            "attempt {i}: {} ms < {min} ms ({ms:?})",
            ms[i]
        );
    }
    // A fresh address and account starts again at the base delay: well below alice's.
    assert!(ms[4] >= 100, "{ms:?}");
    assert!(
        ms[4] < ms[3],
        "bob from a new address inherited alice's count: {ms:?}"
    );
    server.stop();
}

#[test]
fn passwords_and_sasl_payloads_never_appear_in_the_output() {
    let mut server = Server::start(ONE_CORE);
    let secret = "Sekr1t-never-logged";
    // POP3 USER/PASS and AUTH PLAIN, IMAP LOGIN, right and wrong, plus a malformed SASL blob.
    attempts(
        &server,
        &[
            ("127.0.0.1", ALICE, secret),
            ("127.0.0.1", ALICE, password(ALICE)),
        ],
    );
    let plain_b64 = "AGFsaWNlQGV4YW1wbGUudGVzdABTZWtyMXQtbmV2ZXItbG9nZ2Vk"; // \0alice@..\0secret
    let script = format!(
        r#"
import imaplib, poplib
m = imaplib.IMAP4("127.0.0.1", {imap})
try:
    m.login("{ALICE}", "{secret}")
except imaplib.IMAP4.error:
    pass
m.login("{ALICE}", "{alice_pw}")
m.logout()
p = poplib.POP3("127.0.0.1", {pop3})
try:
    p._shortcmd("AUTH PLAIN {plain_b64}")
except poplib.error_proto:
    pass
p.quit()
"#,
        imap = server.imap_port(),
        pop3 = server.pop3_port(),
        alice_pw = password(ALICE),
    );
    common::run(Command::new("python3").arg("-c").arg(&script), b"").assert_ok("logins");
    let before = server.output();
    let all = format!("{before}\n{}", server.stop());
    for s in [secret, password(ALICE), plain_b64] {
        assert!(
            !all.contains(s),
            "{s:?} appears in the server output:\n{all}"
        );
    }
}
