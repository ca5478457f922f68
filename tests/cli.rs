//! The `ringmail` command line, run as a user would: check-config, user add/list/del,
//! serve's refusals (second instance, taken port), serve on the built-in defaults, and export
//! (while the server runs, and after a restart).

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use common::{make_message, ringmail, strip_trace, write_config, Proc, Server, ALICE, BOB};

/// How long a refused `serve` may take to exit.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(20);

fn config_in(dir: &tempfile::TempDir, overrides: &str) -> (String, std::path::PathBuf) {
    let data_dir = dir.path().join("data");
    let p = write_config(dir.path(), &data_dir, overrides);
    (p.to_str().unwrap().to_string(), data_dir)
}

#[test]
fn check_config_accepts_the_test_config() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = config_in(&dir, "");
    let r = ringmail(&["check-config", "--config", &cfg], b"");
    r.assert_ok("check-config");
    assert!(
        r.stdout_text().starts_with(&format!("{cfg}: ok")),
        "stdout: {}",
        r.stdout_text()
    );
    assert!(!r.stderr.contains("warning"), "stderr: {}", r.stderr);
}

#[test]
fn check_config_reports_every_error_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = config_in(
        &dir,
        "[server]\nhostname = \"bad host\"\ncores = \"some\"\n\
         [smtp]\nlisten = [\"nowhere\"]\nmax_recipients = 0\n\
         [store]\nfsync = \"sometimes\"\n",
    );
    let r = ringmail(&["check-config", "--config", &cfg], b"");
    assert!(
        !r.status.success(),
        "bad config accepted: {}",
        r.stdout_text()
    );
    assert!(r.stderr.contains("5 error(s):"), "stderr: {}", r.stderr);
    let problems: Vec<&str> = r.stderr.lines().filter(|l| l.starts_with("  - ")).collect();
    assert_eq!(problems.len(), 5, "stderr: {}", r.stderr);
    for key in [
        "server.hostname",
        "server.cores",
        "smtp.listen",
        "smtp.max_recipients",
        "store.fsync",
    ] {
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(&format!("  - {key}"))),
            "no `  - {key}...` line in:\n{}",
            r.stderr
        );
    }
}

#[test]
fn check_config_warns_on_unknown_keys_but_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = config_in(&dir, "[smtp]\nmax_recipientz = 5\n");
    let r = ringmail(&["check-config", "--config", &cfg], b"");
    r.assert_ok("check-config with an unknown key");
    assert!(
        r.stdout_text().contains(": ok"),
        "stdout: {}",
        r.stdout_text()
    );
    assert!(
        r.stderr.contains("warning") && r.stderr.contains("smtp.max_recipientz"),
        "no warning naming smtp.max_recipientz: {}",
        r.stderr
    );
}

#[test]
fn user_add_list_del() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, data_dir) = config_in(&dir, "");
    let list = || {
        let r = ringmail(&["user", "list", "--config", &cfg], b"");
        r.assert_ok("user list");
        r.stdout_text()
    };
    assert_eq!(list(), "", "a new data dir has users");

    let passwords = [
        (ALICE, "correct horse battery staple"),
        (BOB, "b0b's pa$$word"),
        ("Carol@Example.TEST", "carol-secret-0xC0FFEE"),
    ];
    for (addr, pw) in passwords {
        let r = ringmail(
            &["user", "add", addr, "--password-stdin", "--config", &cfg],
            format!("{pw}\nthis second line is not part of the password\n").as_bytes(),
        );
        r.assert_ok(&format!("user add {addr}"));
        assert!(
            !r.stdout_text().contains(pw) && !r.stderr.contains(pw),
            "user add printed the password"
        );
    }
    assert_eq!(
        list(),
        "alice@example.test\nbob@example.test\ncarol@example.test\n"
    );

    let users = std::fs::read_to_string(data_dir.join("users")).unwrap();
    assert_eq!(
        users.matches("$argon2id$").count(),
        3,
        "users file: {users}"
    );
    for (_, pw) in passwords {
        assert!(!users.contains(pw), "the users file contains a password");
    }
    assert!(!users.contains("second line"));

    // Refusals: duplicate, password on the command line, unknown user.
    let r = ringmail(
        &["user", "add", ALICE, "--password-stdin", "--config", &cfg],
        b"another\n",
    );
    assert!(!r.status.success(), "duplicate user add accepted");
    let r = ringmail(
        &["user", "add", "dave@example.test", "--config", &cfg],
        b"pw\n",
    );
    assert!(
        !r.status.success(),
        "user add without --password-stdin accepted"
    );

    let r = ringmail(&["user", "del", BOB, "--config", &cfg], b"");
    r.assert_ok("user del bob");
    assert_eq!(list(), "alice@example.test\ncarol@example.test\n");
    let r = ringmail(&["user", "del", BOB, "--config", &cfg], b"");
    assert!(!r.status.success(), "deleting a missing user succeeded");
    assert_eq!(list(), "alice@example.test\ncarol@example.test\n");
}

#[test]
fn serve_refuses_a_second_instance_on_the_same_data_dir() {
    let mut server = Server::start("");
    let mut second = Proc::spawn(
        Command::new(common::bin())
            .args(["serve", "--config", server.config_str()])
            .current_dir(server.dir.path()),
    );
    let status = second.wait_exit(REFUSAL_TIMEOUT);
    let out = second.output();
    drop(second);
    let status = status.unwrap_or_else(|| panic!("second serve still running\n{out}"));
    assert!(!status.success(), "second serve exited 0\n{out}");
    assert!(
        out.contains("already uses the data directory"),
        "second serve's output:\n{out}"
    );
    // The first one is unharmed.
    let mut c = server.connect();
    c.expect("EHLO client.test", 250);
    c.quit();
    server.stop();
}

#[test]
fn serve_refuses_a_taken_port() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = config_in(&dir, &format!("[smtp]\nlisten = [\"127.0.0.1:{port}\"]\n"));
    let mut p = Proc::spawn(
        Command::new(common::bin())
            .args(["serve", "--config", &cfg])
            .current_dir(dir.path()),
    );
    let status = p.wait_exit(REFUSAL_TIMEOUT);
    let out = p.output();
    drop(p);
    let status = status.unwrap_or_else(|| panic!("serve on a taken port still running\n{out}"));
    assert!(!status.success(), "serve on a taken port exited 0\n{out}");
    assert!(
        out.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "output:\n{out}"
    );
    drop(taken);
}

#[test]
fn serve_without_config_uses_the_defaults() {
    let cwd = tempfile::tempdir().unwrap();
    let mut p = Proc::spawn(
        Command::new(common::bin())
            .arg("serve")
            .current_dir(cwd.path()),
    );
    let ready = p.wait_stdout_line(0, common::READY_TIMEOUT, &|l| l.starts_with("ready"));
    if ready.is_none() {
        let status = p.wait_exit(Duration::from_secs(5));
        let out = p.output();
        assert!(
            matches!(status, Some(s) if !s.success()),
            "serve on the defaults neither became ready nor failed ({status:?})\n{out}"
        );
        assert!(
            p.stderr().contains("cannot listen on 127.0.0.1:2525"),
            "serve on the defaults failed without a clear port error:\n{out}"
        );
        eprintln!("note: 127.0.0.1:2525 is busy on this machine; checked the refusal instead");
        return;
    }
    let out = p.stdout();
    assert!(
        out.contains("smtp listening on 127.0.0.1:2525\n"),
        "stdout:\n{out}"
    );
    assert!(
        out.lines()
            .next()
            .is_some_and(|l| l.starts_with("ringmail 0.1.0: hostname ")
                && l.contains("data dir ./ringmail-data")
                && l.ends_with("local domains localhost")),
        "stdout:\n{out}"
    );
    assert!(
        cwd.path().join("ringmail-data").is_dir(),
        "no ./ringmail-data in the working directory"
    );
    let mut c = common::SmtpClient::connect("127.0.0.1:2525".parse().unwrap()).unwrap();
    let greeting = c.read_reply().unwrap();
    assert_eq!(greeting.code, 220, "{greeting:?}");
    c.quit();
    p.signal(libc::SIGTERM);
    let status = p.wait_exit(common::STOP_TIMEOUT);
    assert!(
        matches!(status, Some(s) if s.success()),
        "serve on the defaults: {status:?} after SIGTERM\n{}",
        p.output()
    );
}

fn send(server: &Server, to: &str, id: &str) -> Vec<u8> {
    let m = make_message(
        "cli@client.test",
        to,
        id,
        "exported by the cli test\n.with a dot",
    );
    server.deliver("cli@client.test", to, &[&m]);
    m
}

#[test]
fn export_while_the_server_runs() {
    let mut server = Server::start("");
    let m = send(&server, ALICE, "cli-export-1@client.test");
    let got = server.export(ALICE);
    assert_eq!(got.len(), 1);
    let t = common::split_trace(&got[0]).unwrap();
    assert_eq!(t.return_path, "cli@client.test");
    assert!(
        t.received.contains("for <alice@example.test>"),
        "{}",
        t.received
    );
    common::assert_same_bytes("exported message", t.body, &m);
    assert!(server.export(BOB).is_empty());
    assert!(server.is_running());
    server.stop();
}

#[test]
fn message_survives_a_restart() {
    let mut server = Server::start("");
    let m1 = send(&server, BOB, "cli-restart-1@client.test");
    server.stop();
    server.restart();
    let got = server.export(BOB);
    assert_eq!(got.len(), 1, "after restart");
    common::assert_same_bytes("after restart", strip_trace(&got[0]), &m1);
    let m2 = send(&server, BOB, "cli-restart-2@client.test");
    server.stop();
    let got = server.export(BOB);
    assert_eq!(got.len(), 2, "after the second message and a stop");
    common::assert_same_bytes("first", strip_trace(&got[0]), &m1);
    common::assert_same_bytes("second", strip_trace(&got[1]), &m2);
}
