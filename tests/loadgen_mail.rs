//! The bundled load generator's IMAP and POP3 modes (`ringmail_loadgen::imap::run_imap`,
//! `ringmail_loadgen::pop3::run_pop3`) against a real ringmail started by the test: mailboxes
//! filled over SMTP first, then short bounded runs whose counts must add up and whose effects
//! (appended messages, deleted messages) must be visible afterwards through plain IMAP STATUS
//! and POP3 STAT sessions. Each test has its own server; every run is bounded by a command or
//! session count and by `--duration-secs`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use common::{make_message, Server, SmtpClient, ALICE, BOB, IO_TIMEOUT, USERS};
use ringmail_loadgen::imap::{parse_imap_args, run_imap};
use ringmail_loadgen::outcome::Outcome;
use ringmail_loadgen::pop3::{parse_pop3_args, run_pop3};
use ringmail_loadgen::progress::Progress;

/// Messages delivered to each of alice and bob before a run.
const SEEDED: u32 = 50;
/// Hard stop of the runs that are bounded by a count: they end within a second or two on an
/// idle machine, but a login (argon2 in a debug build) can take seconds on a loaded one.
const DURATION_CAP_SECS: u64 = 15;

fn password(user: &str) -> &'static str {
    USERS.iter().find(|(u, _)| *u == user).unwrap().1
}

/// Delivers `n` messages, each to both alice and bob, over one SMTP session.
fn deliver(server: &Server, n: u32) {
    let mut c = SmtpClient::connect(server.addr()).unwrap();
    assert_eq!(c.read_reply().unwrap().code, 220);
    c.expect("EHLO load.test", 250);
    for i in 0..n {
        let body = format!("message {i} for the loadgen test\r\n.leading dot line\r\nend");
        let m = make_message(
            "sender@load.test",
            ALICE,
            &format!("seed-{i}@load.test"),
            &body,
        );
        let r = c.send_mail("sender@load.test", &[ALICE, BOB], &m).unwrap();
        assert_eq!(r.code, 250, "message {i}: {r:?}");
    }
    c.quit();
}

/// A line-based client for the checks after a run.
struct Lines {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Lines {
    fn connect(port: u16) -> Lines {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        let mut l = Lines { stream, reader };
        let greeting = l.line();
        assert!(
            greeting.starts_with("* OK") || greeting.starts_with("+OK"),
            "{greeting}"
        );
        l
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.ends_with("\r\n"), "connection closed: {line:?}");
        line.trim_end().to_string()
    }

    /// Sends `command`, returns the reply lines up to the one starting with `last`.
    fn cmd(&mut self, command: &str, last: &str) -> Vec<String> {
        self.stream
            .write_all(format!("{command}\r\n").as_bytes())
            .unwrap();
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            let done = line.starts_with(last);
            lines.push(line);
            if done {
                return lines;
            }
        }
    }
}

/// MESSAGES of the user's INBOX, by IMAP STATUS.
fn imap_messages(server: &Server, user: &str) -> u32 {
    let mut c = Lines::connect(server.imap_port());
    let r = c.cmd(
        &format!("a1 LOGIN \"{user}\" \"{}\"", password(user)),
        "a1 ",
    );
    assert!(r.last().unwrap().starts_with("a1 OK"), "{r:?}");
    let r = c.cmd("a2 STATUS INBOX (MESSAGES)", "a2 ");
    assert!(r.last().unwrap().starts_with("a2 OK"), "{r:?}");
    let status = r.iter().find(|l| l.starts_with("* STATUS")).unwrap();
    let n = status
        .rsplit("MESSAGES ")
        .next()
        .unwrap()
        .trim_end_matches(')');
    c.cmd("a3 LOGOUT", "a3 ");
    n.parse()
        .unwrap_or_else(|_| panic!("STATUS reply {status:?}"))
}

/// The message count of the user's maildrop, by POP3 STAT.
fn pop3_messages(server: &Server, user: &str) -> u32 {
    let mut c = Lines::connect(server.pop3_port());
    assert!(c.cmd(&format!("USER {user}"), "")[0].starts_with("+OK"));
    let r = c.cmd(&format!("PASS {}", password(user)), "");
    assert!(r[0].starts_with("+OK"), "{r:?}");
    let stat = c.cmd("STAT", "").remove(0);
    let n = stat.split(' ').nth(1).unwrap().parse().unwrap();
    c.cmd("QUIT", "");
    n
}

fn args(list: &[String]) -> impl Iterator<Item = String> + '_ {
    list.iter().cloned()
}

fn user_args(users: &[(&str, &str)]) -> Vec<String> {
    users
        .iter()
        .flat_map(|(u, p)| ["--user".to_string(), format!("{u}:{p}")])
        .collect()
}

/// (ok, tempfail, permfail, aborted) of `op`.
fn counts(out: &Outcome, op: &str) -> (u64, u64, u64, u64) {
    let o = out
        .op(op)
        .unwrap_or_else(|| panic!("no op {op} in {:?}", out.ops));
    (o.ok, o.tempfail, o.permfail, o.aborted)
}

fn issued(out: &Outcome, op: &str) -> u64 {
    let (ok, temp, perm, aborted) = counts(out, op);
    ok + temp + perm + aborted
}

fn show(out: &Outcome) -> String {
    let ops: Vec<String> = out
        .ops
        .iter()
        .map(|o| {
            format!(
                "{}={}/{}/{}/{}",
                o.name, o.ok, o.tempfail, o.permfail, o.aborted
            )
        })
        .collect();
    format!(
        "{} errors={} first_error={:?} elapsed={:?}",
        ops.join(" "),
        out.errors,
        out.first_error,
        out.elapsed
    )
}

#[test]
fn imap_mix_counts_add_up_and_appended_messages_land() {
    let server = Server::start("");
    deliver(&server, SEEDED);
    let commands = 1_200u64;
    let mut list: Vec<String> = [
        "--target",
        &format!("127.0.0.1:{}", server.imap_port()),
        "--connections",
        "4",
        "--threads",
        "2",
        "--commands",
        &commands.to_string(),
        "--duration-secs",
        &DURATION_CAP_SECS.to_string(),
        "--mix",
        "select=1,fetch=10,store=2,search=2,append=2,idle=1,noop=1",
        "--append-size",
        "1500",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    list.extend(user_args(&USERS));
    let cfg = parse_imap_args(args(&list), 2).unwrap();
    let progress = Progress::default();
    let out = run_imap(&cfg, &progress);
    let shown = show(&out);

    assert_eq!(out.protocol, "imap");
    assert_eq!(out.headline, "all");
    assert_eq!(out.label, cfg.target_text);
    assert!(out
        .config
        .iter()
        .any(|(k, v)| k == "connections" && v == "4"));
    assert_eq!(out.errors, 0, "{shown}");
    assert_eq!(out.connects, 4, "persistent sessions: {shown}");
    // Every command but LOGOUT counts against --commands; each ended one way.
    let mix_ops = [
        "login", "select", "fetch", "store", "search", "append", "idle", "noop",
    ];
    let total: u64 = mix_ops.iter().map(|op| issued(&out, op)).sum();
    let ended_by_count = out.elapsed < cfg.duration;
    if ended_by_count {
        assert_eq!(total, commands, "{shown}");
        assert_eq!(counts(&out, "login"), (4, 0, 0, 0), "{shown}");
        assert_eq!(counts(&out, "logout").0, 4, "{shown}");
        for op in mix_ops {
            assert_eq!(
                counts(&out, op).3,
                0,
                "{op} aborted without a deadline: {shown}"
            );
        }
    } else {
        assert!(total <= commands, "{shown}");
    }
    for op in ["fetch", "store", "search", "append", "idle", "noop"] {
        assert!(counts(&out, op).0 > 0, "no successful {op}: {shown}");
    }
    for op in mix_ops {
        let (_, temp, perm, _) = counts(&out, op);
        assert_eq!((temp, perm), (0, 0), "{op} refused: {shown}");
    }
    let completed: u64 = out.ops.iter().map(|o| o.completed()).sum();
    assert_eq!(progress.completed(), completed);
    assert_eq!(progress.errors(), 0);
    assert_eq!(
        out.timeline.counts.iter().sum::<u64>(),
        out.ops.iter().map(|o| o.ok).sum::<u64>()
    );
    for o in &out.ops {
        assert_eq!(o.latency.count(), o.completed(), "{}", o.name);
    }

    // Every appended message is in a mailbox now.
    let appended = counts(&out, "append").0;
    let stored = imap_messages(&server, ALICE) + imap_messages(&server, BOB);
    assert_eq!(
        u64::from(stored),
        u64::from(2 * SEEDED) + appended,
        "{shown}"
    );
}

#[test]
fn pop3_retrieves_and_dele_removes_exactly_what_it_reports() {
    let server = Server::start("");
    deliver(&server, SEEDED);
    let target = format!("127.0.0.1:{}", server.pop3_port());
    let cap = DURATION_CAP_SECS.to_string();
    let run = |extra: &[&str]| {
        let mut list: Vec<String> = [
            "--target",
            target.as_str(),
            "--connections",
            "2",
            "--sessions",
            "4",
            "--retr-per-session",
            "3",
            "--duration-secs",
            &cap,
            "--quiet",
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
        // One connection per user: a maildrop is locked while a session holds it.
        list.extend(user_args(&USERS));
        let cfg = parse_pop3_args(args(&list), 2).unwrap();
        let progress = Progress::default();
        let out = run_pop3(&cfg, &progress);
        assert_eq!(
            progress.completed(),
            out.ops.iter().map(|o| o.completed()).sum::<u64>()
        );
        (cfg, out)
    };

    let (cfg, out) = run(&[]);
    let shown = show(&out);
    assert_eq!(
        (out.protocol.as_str(), out.headline.as_str()),
        ("pop3", "retr")
    );
    assert_eq!(out.errors, 0, "{shown}");
    let logins = counts(&out, "login");
    assert!(logins.0 > 0, "{shown}");
    assert!(issued(&out, "login") <= 4, "{shown}");
    assert_eq!(
        counts(&out, "stat").0,
        logins.0,
        "one STAT per session: {shown}"
    );
    if out.elapsed < cfg.duration {
        assert_eq!(issued(&out, "login"), 4, "{shown}");
        assert_eq!(counts(&out, "retr"), (3 * logins.0, 0, 0, 0), "{shown}");
        assert_eq!(counts(&out, "quit"), (logins.0, 0, 0, 0), "{shown}");
    }
    assert_eq!(issued(&out, "dele"), 0, "{shown}");
    assert_eq!(
        out.timeline.counts.iter().sum::<u64>(),
        counts(&out, "retr").0
    );
    assert_eq!(
        pop3_messages(&server, ALICE),
        SEEDED,
        "nothing deleted without --dele"
    );
    assert_eq!(pop3_messages(&server, BOB), SEEDED);

    let (_, out) = run(&["--dele"]);
    let shown = show(&out);
    assert_eq!(out.errors, 0, "{shown}");
    let (retr_ok, ..) = counts(&out, "retr");
    let (dele_ok, dele_temp, _, _) = counts(&out, "dele");
    assert!(dele_ok > 0, "{shown}");
    assert_eq!(
        (dele_ok, dele_temp),
        (retr_ok, 0),
        "every retrieved message deleted: {shown}"
    );
    // Deletions are committed at QUIT: every session that logged in must have quit.
    assert_eq!(counts(&out, "quit").0, counts(&out, "login").0, "{shown}");
    let left = pop3_messages(&server, ALICE) + pop3_messages(&server, BOB);
    assert_eq!(u64::from(2 * SEEDED - left), dele_ok, "{shown}");
}

/// `--user` options with wrong passwords for both test users.
const WRONG_USERS: [&str; 4] = [
    "--user",
    "alice@example.test:wrong",
    "--user",
    "bob@example.test:wrong",
];

/// Every login a tempfail (the server delays failures: 200 ms, doubling), nothing else
/// issued, no connection errors.
fn assert_only_failed_logins(out: &Outcome) {
    let shown = show(out);
    let (ok, temp, perm, _) = counts(out, "login");
    assert_eq!((ok, perm), (0, 0), "{shown}");
    assert!(temp >= 1, "{shown}");
    assert_eq!(out.errors, 0, "{shown}");
    for o in out.ops.iter().filter(|o| o.name != "login") {
        assert_eq!(issued(out, &o.name), 0, "{} issued: {shown}", o.name);
    }
    assert_eq!(out.timeline.counts.iter().sum::<u64>(), 0, "{shown}");
}

#[test]
fn imap_wrong_password_logins_are_tempfails_and_nothing_else_is_sent() {
    let server = Server::start("");
    let target = format!("127.0.0.1:{}", server.imap_port());
    let list: Vec<String> = ["--target", target.as_str(), "--commands", "1000"]
        .iter()
        .chain(&WRONG_USERS)
        .chain(&["--connections", "2", "--duration-secs", "5", "--quiet"])
        .map(|s| s.to_string())
        .collect();
    let cfg = parse_imap_args(args(&list), 2).unwrap();
    assert_only_failed_logins(&run_imap(&cfg, &Progress::default()));
}

#[test]
fn pop3_wrong_password_logins_are_tempfails_and_nothing_else_is_sent() {
    let server = Server::start("");
    let target = format!("127.0.0.1:{}", server.pop3_port());
    let list: Vec<String> = ["--target", target.as_str(), "--sessions", "1000"]
        .iter()
        .chain(&WRONG_USERS)
        .chain(&["--connections", "2", "--duration-secs", "5", "--quiet"])
        .map(|s| s.to_string())
        .collect();
    let cfg = parse_pop3_args(args(&list), 2).unwrap();
    assert_only_failed_logins(&run_pop3(&cfg, &Progress::default()));
}
