//! The `ringmail` command line, run as a user would: check-config, user add/list/del,
//! alias add/list/del (and its refusals), serve's refusals (second instance, taken port), serve
//! on the built-in defaults, export (while the server runs, and after a restart), and a running
//! server picking up alias changes.

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

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

// ---------------------------------------------------------------------------------------------
// Aliases

/// How long a running server may take to notice a changed aliases file (it looks every
/// second on every core).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(15);

/// A config in `dir` whose data dir already has alice and bob.
fn config_with_users(dir: &tempfile::TempDir) -> (String, std::path::PathBuf) {
    let (cfg, data_dir) = config_in(dir, "");
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::write(data_dir.join("users"), common::users_file()).unwrap();
    (cfg, data_dir)
}

fn alias(cfg: &str, args: &[&str]) -> common::Run {
    let mut all = vec!["alias"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", cfg]);
    ringmail(&all, b"")
}

fn alias_list(cfg: &str) -> String {
    let r = alias(cfg, &["list"]);
    r.assert_ok("alias list");
    r.stdout_text()
}

/// Runs `alias ARGS`, asserts it failed and that stderr contains `why`.
fn alias_refused(cfg: &str, args: &[&str], why: &str) {
    let r = alias(cfg, args);
    assert!(
        !r.status.success(),
        "alias {args:?} accepted: {}",
        r.stdout_text()
    );
    assert!(
        r.stderr.contains(why),
        "alias {args:?}: no {why:?} in stderr: {}",
        r.stderr
    );
}

#[test]
fn alias_add_list_del() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, data_dir) = config_with_users(&dir);
    assert_eq!(alias_list(&cfg), "", "a new data dir has aliases");

    let r = alias(&cfg, &["add", "Info@Example.TEST", "Alice@example.test"]);
    r.assert_ok("alias add info");
    assert_eq!(
        r.stdout_text(),
        "added info@example.test -> alice@example.test\n"
    );
    assert!(!r.stderr.contains("warning"), "stderr: {}", r.stderr);
    // Several targets at once, one of them remote (forwarding).
    alias(
        &cfg,
        &[
            "add",
            "info@example.test",
            "x@remote.test",
            "bob@example.test",
        ],
    )
    .assert_ok("alias add info, two more");
    // The domain catch-all.
    alias(&cfg, &["add", "@example.test", "bob@example.test"]).assert_ok("alias add catch-all");
    assert_eq!(
        alias_list(&cfg),
        "@example.test\tbob@example.test\n\
         info@example.test\talice@example.test\n\
         info@example.test\tx@remote.test\n\
         info@example.test\tbob@example.test\n"
    );
    assert!(data_dir.join("aliases").is_file());
    assert!(!data_dir.join("aliases.tmp").exists());

    let r = alias(&cfg, &["del", "info@example.test", "X@Remote.test"]);
    r.assert_ok("alias del one target");
    assert_eq!(
        r.stdout_text(),
        "deleted info@example.test -> x@remote.test\n"
    );
    assert_eq!(
        alias_list(&cfg),
        "@example.test\tbob@example.test\n\
         info@example.test\talice@example.test\n\
         info@example.test\tbob@example.test\n"
    );
    let r = alias(&cfg, &["del", "info@example.test"]);
    r.assert_ok("alias del whole alias");
    assert_eq!(
        r.stdout_text(),
        "deleted info@example.test -> alice@example.test, bob@example.test\n"
    );
    alias_refused(
        &cfg,
        &["del", "info@example.test"],
        "no such alias info@example.test",
    );
    alias(&cfg, &["del", "@example.test"]).assert_ok("alias del catch-all");
    assert_eq!(alias_list(&cfg), "");
}

#[test]
fn alias_refusals_are_clear_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, data_dir) = config_with_users(&dir);
    alias(&cfg, &["add", "a@example.test", "x@remote.test"]).assert_ok("alias add a");
    let before = std::fs::read(data_dir.join("aliases")).unwrap();

    alias_refused(
        &cfg,
        &["add", "a@elsewhere.test", "alice@example.test"],
        "elsewhere.test is not a local domain",
    );
    alias_refused(
        &cfg,
        &["add", "@elsewhere.test", "alice@example.test"],
        "elsewhere.test is not a local domain",
    );
    alias_refused(
        &cfg,
        &["add", "Alice@example.test", "x@remote.test"],
        "alice@example.test is a user: an alias of the same name would hide its mailbox",
    );
    alias_refused(
        &cfg,
        &["add", "no-at-sign", "x@remote.test"],
        "is not a valid alias",
    );
    alias_refused(
        &cfg,
        &["add", "@bad_domain!", "x@remote.test"],
        "is not a valid alias",
    );
    alias_refused(
        &cfg,
        &["add", "b@example.test", "not an address"],
        "is not a valid target",
    );
    alias_refused(
        &cfg,
        &["add", "b@example.test", "@example.test"],
        "is not a valid target",
    );
    alias_refused(
        &cfg,
        &["add", "b@example.test", "B@example.test"],
        "cannot have itself",
    );
    alias_refused(&cfg, &["add", "b@example.test"], "unknown command");
    alias_refused(
        &cfg,
        &["add", "a@example.test", "x@remote.test"],
        "alias a@example.test already has target x@remote.test",
    );
    alias_refused(
        &cfg,
        &["del", "a@example.test", "y@remote.test"],
        "alias a@example.test has no target y@remote.test",
    );
    // A loop, direct or through the catch-all, would make the alias undeliverable.
    alias(&cfg, &["add", "b@example.test", "c@example.test"]).assert_ok("alias add b -> c");
    let before_loop = std::fs::read(data_dir.join("aliases")).unwrap();
    alias_refused(
        &cfg,
        &["add", "c@example.test", "b@example.test"],
        "alias loop: c@example.test -> b@example.test -> c@example.test",
    );
    alias_refused(
        &cfg,
        &["add", "@example.test", "stray@example.test"],
        "alias loop",
    );
    assert_eq!(
        std::fs::read(data_dir.join("aliases")).unwrap(),
        before_loop
    );
    alias(&cfg, &["del", "b@example.test"]).assert_ok("alias del b");
    assert_eq!(std::fs::read(data_dir.join("aliases")).unwrap(), before);

    // A user cannot be added under an alias's address either.
    let r = ringmail(
        &[
            "user",
            "add",
            "A@example.test",
            "--password-stdin",
            "--config",
            &cfg,
        ],
        b"pw\n",
    );
    assert!(!r.status.success(), "user add of an alias accepted");
    assert!(
        r.stderr.contains("a@example.test is an alias"),
        "stderr: {}",
        r.stderr
    );
}

#[test]
fn alias_warnings_for_targets_that_do_not_exist_yet() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = config_with_users(&dir);
    let r = alias(
        &cfg,
        &[
            "add",
            "team@example.test",
            "carol@example.test",
            "bob@example.test",
        ],
    );
    r.assert_ok("alias add with an unknown local target");
    assert!(
        r.stderr.contains("warning: carol@example.test")
            && r.stderr.contains("neither a user nor an alias"),
        "stderr: {}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("bob@example.test"),
        "stderr: {}",
        r.stderr
    );
    // Deleting an alias that another alias names says so.
    alias(&cfg, &["add", "all@example.test", "team@example.test"]).assert_ok("alias add all");
    let r = alias(&cfg, &["del", "team@example.test"]);
    r.assert_ok("alias del team");
    assert!(
        r.stderr
            .contains("warning: alias all@example.test still names team@example.test"),
        "stderr: {}",
        r.stderr
    );
}

/// The reply to `RCPT TO:<rcpt>` on a new connection.
fn rcpt_reply(server: &Server, rcpt: &str) -> u16 {
    let mut c = server.connect();
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<sender@remote.test>", 250);
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>")).unwrap();
    c.quit();
    r.code
}

/// Waits until `rcpt` gets `code` on 8 new connections in a row (connections land on any
/// core, and each core reloads the aliases on its own).
fn wait_for_rcpt(server: &Server, rcpt: &str, code: u16) {
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    let mut in_a_row = 0;
    while in_a_row < 8 {
        let last = rcpt_reply(server, rcpt);
        in_a_row = if last == code { in_a_row + 1 } else { 0 };
        if Instant::now() > deadline {
            panic!(
                "RCPT TO:<{rcpt}> still answers {last}, not {code}\n{}",
                server.output()
            );
        }
        if in_a_row == 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn running_server_picks_up_alias_changes() {
    let server = Server::start("");
    let cfg = server.config_str().to_string();
    assert_eq!(rcpt_reply(&server, "sales@example.test"), 550);

    alias(&cfg, &["add", "sales@example.test", "alice@example.test"]).assert_ok("alias add");
    wait_for_rcpt(&server, "sales@example.test", 250);
    assert_eq!(rcpt_reply(&server, "other@example.test"), 550);

    alias(&cfg, &["add", "@example.test", "bob@example.test"]).assert_ok("catch-all add");
    wait_for_rcpt(&server, "other@example.test", 250);
    // Aliases never open a relay.
    assert_eq!(rcpt_reply(&server, "sales@remote.test"), 554);

    alias(&cfg, &["del", "@example.test"]).assert_ok("catch-all del");
    alias(&cfg, &["del", "sales@example.test"]).assert_ok("alias del");
    wait_for_rcpt(&server, "other@example.test", 550);
    wait_for_rcpt(&server, "sales@example.test", 550);
    assert_eq!(rcpt_reply(&server, ALICE), 250);
}

/// Python's smtplib sends one message to `rcpts`; returns the message bytes as sent.
fn smtplib_send(server: &Server, rcpts: &[&str], message_id: &str) -> Vec<u8> {
    let m = make_message(
        "sender@remote.test",
        rcpts[0],
        message_id,
        "sent to an alias",
    );
    let script = "import smtplib, sys\n\
        s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=10)\n\
        refused = s.sendmail('sender@remote.test', sys.argv[3].split(','), sys.stdin.buffer.read())\n\
        s.quit()\n\
        sys.exit(1 if refused else 0)\n";
    let r = common::run(
        Command::new("python3")
            .args(["-c", script, "127.0.0.1"])
            .arg(server.port().to_string())
            .arg(rcpts.join(",")),
        &m,
    );
    assert!(
        r.status.success(),
        "smtplib to {rcpts:?} failed: {}{}\nserver:\n{}",
        r.stdout_text(),
        r.stderr,
        server.output()
    );
    m
}

#[test]
fn mail_to_an_alias_and_the_catch_all_lands_in_the_targets_inboxes() {
    let server = Server::start("");
    let cfg = server.config_str().to_string();
    alias(&cfg, &["add", "sales@example.test", "team@example.test"]).assert_ok("sales");
    alias(
        &cfg,
        &[
            "add",
            "team@example.test",
            "alice@example.test",
            "bob@example.test",
        ],
    )
    .assert_ok("team");
    alias(&cfg, &["add", "@example.test", "alice@example.test"]).assert_ok("catch-all");
    wait_for_rcpt(&server, "stray@example.test", 250);

    // To the alias and, in the same transaction, to alice herself: one copy each.
    let m1 = smtplib_send(
        &server,
        &["Sales@example.test", ALICE],
        "alias-1@client.test",
    );
    let m2 = smtplib_send(&server, &["stray@example.test"], "alias-2@client.test");
    let alice = server.export(ALICE);
    let bob = server.export(BOB);
    assert_eq!(
        (alice.len(), bob.len()),
        (2, 1),
        "alice and bob message counts"
    );
    common::assert_same_bytes("alice 1", strip_trace(&alice[0]), &m1);
    common::assert_same_bytes("alice 2 (catch-all)", strip_trace(&alice[1]), &m2);
    common::assert_same_bytes("bob 1", strip_trace(&bob[0]), &m1);
    // Nothing was stored under the alias names.
    for name in [
        "sales@example.test",
        "team@example.test",
        "stray@example.test",
    ] {
        let r = ringmail(&["export", name, "--config", &cfg], b"");
        assert!(
            r.stdout.is_empty(),
            "{name} has a mailbox: {}",
            r.stdout_text()
        );
    }
}
