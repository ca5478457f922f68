//! The outbound queue end to end: an authenticated submission to local and remote
//! recipients files the local copy and queues the remote ones durably; `ringmail queue
//! list` shows the entry while the server runs, after a crash and after a restart.

mod common;

use std::net::SocketAddr;

use common::{make_message, ringmail, strip_trace, Server, SmtpClient, ALICE, BOB, USERS};

const REMOTES: [&str; 2] = ["dave@remote.test", "erin@other.test"];

/// Remote delivery goes to a smarthost port where nothing listens: every attempt is
/// deferred (connection refused) and retried an hour later, so the entry stays queued.
fn submission_server() -> Server {
    Server::start(
        "[submission]\nallow_plaintext_auth = true\n\
         [relay]\nsmarthost = \"127.0.0.1:9\"\nretry = [\"1h\"]\n",
    )
}

/// Logs in as alice on the submission port and sends one message to bob and the remotes.
fn submit(server: &Server, message: &[u8]) {
    let addr = SocketAddr::from(([127, 0, 0, 1], server.listener_port("submission")));
    let mut c = SmtpClient::connect(addr).unwrap();
    assert_eq!(c.read_reply().unwrap().code, 220);
    c.expect("EHLO client.test", 250);
    let password = USERS.iter().find(|(u, _)| *u == ALICE).unwrap().1;
    let token = common::base64(format!("\0{ALICE}\0{password}").as_bytes());
    c.expect(&format!("AUTH PLAIN {token}"), 235);
    let mut to = vec![BOB];
    to.extend(REMOTES);
    let r = c.send_mail(ALICE, &to, message).unwrap();
    assert_eq!(r.code, 250, "{r:?}");
    c.quit();
}

/// `ringmail queue list` lines (stdout), asserting success.
fn queue_list(server: &Server) -> Vec<String> {
    let r = ringmail(&["queue", "list", "--config", server.config_str()], b"");
    r.assert_ok("queue list");
    r.stdout_text().lines().map(str::to_owned).collect()
}

/// Checks the one entry the submission made: id, sender, both remote recipients (and no
/// local one), and either no attempt yet (due now, no error) or the first one, deferred
/// because the smarthost refused the connection.
fn assert_one_fresh_entry(lines: &[String]) {
    assert_eq!(lines.len(), 1, "{lines:?}");
    let fields: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(fields.len(), 6, "{fields:?}");
    let (core, seq) = fields[0].split_once('-').expect("id is CORE-SEQ");
    assert!(u16::from_str_radix(core, 16).is_ok(), "{fields:?}");
    assert_eq!(seq, "1", "the first entry of its core");
    assert_eq!(fields[1], format!("<{ALICE}>"));
    let recipients: Vec<&str> = fields[2]
        .split(',')
        .map(|r| r.split_once('(').map_or(r, |(address, _state)| address))
        .collect();
    assert_eq!(recipients, REMOTES, "{fields:?}");
    assert!(
        fields[4].ends_with('Z') && fields[4].len() == 20,
        "{fields:?}"
    );
    match fields[3] {
        "0" => assert_eq!(fields[5], "-"),
        "1" => assert!(fields[5].contains("127.0.0.1"), "{fields:?}"),
        other => panic!("attempts {other}: {fields:?}"),
    }
}

/// The queue list once its one entry has had its first (refused) attempt.
fn wait_attempted(server: &Server) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let lines = queue_list(server);
        if lines.len() == 1 && lines[0].split('\t').nth(3) == Some("1") {
            return lines;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no attempt recorded: {lines:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn ringmail_ok(server: &Server, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["--config", server.config_str()]);
    let r = ringmail(&all, b"");
    r.assert_ok(&format!("ringmail {args:?}"));
    r.stdout_text()
}

#[test]
fn queue_tools_json_flush_bounce_and_delete() {
    let mut server = submission_server();
    submit(
        &server,
        &make_message(ALICE, BOB, "q2@example.test", "bounce me"),
    );
    let first = wait_attempted(&server);
    let id = first[0].split('\t').next().unwrap().to_string();
    // JSON, parsed by Python's json module.
    let json = ringmail_ok(&server, &["queue", "list", "--json"]);
    let r = common::run(
        std::process::Command::new("python3").args([
            "-c",
            "import json,sys; e=json.load(sys.stdin)[0]; \
             print(e['id'], e['attempts'], ' '.join(r['state'] for r in e['recipients']))",
        ]),
        json.as_bytes(),
    );
    r.assert_ok("json.load");
    assert_eq!(
        r.stdout_text().trim(),
        format!("{id} 1 deferred deferred"),
        "{json}"
    );
    // flush: due now, so a second (refused) attempt follows at once.
    let answer = ringmail_ok(&server, &["queue", "flush"]);
    assert!(answer.contains("recipient(s) due now"), "{answer}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while queue_list(&server)[0].split('\t').nth(3) != Some("2") {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            queue_list(&server)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // bounce: the entry leaves the queue and alice gets the notice.
    let answer = ringmail_ok(&server, &["queue", "bounce", &id]);
    assert!(answer.contains("bounced 2 recipient(s)"), "{answer}");
    assert!(queue_list(&server).is_empty());
    let bounces: Vec<String> = server
        .export(ALICE)
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .filter(|m| m.contains("Undelivered Mail Returned to Sender"))
        .collect();
    assert_eq!(bounces.len(), 1);
    assert!(
        bounces[0].contains("returned to the sender by the postmaster"),
        "{}",
        bounces[0]
    );
    // delete: gone, and nobody is told.
    submit(
        &server,
        &make_message(ALICE, BOB, "q3@example.test", "delete me"),
    );
    let second = wait_attempted(&server);
    let id2 = second[0].split('\t').next().unwrap().to_string();
    assert_ne!(id2, id);
    let answer = ringmail_ok(&server, &["queue", "delete", &id2]);
    assert_eq!(answer.trim(), format!("deleted {id2}"));
    assert!(queue_list(&server).is_empty());
    let r = ringmail(
        &["queue", "delete", &id2, "--config", server.config_str()],
        b"",
    );
    assert!(
        !r.status.success() && r.stderr.contains("no such queue entry"),
        "{}",
        r.stderr
    );
    let notices = server
        .export(ALICE)
        .iter()
        .filter(|m| String::from_utf8_lossy(m).contains("Undelivered Mail"))
        .count();
    assert_eq!(notices, 1, "a deleted message bounced");
    server.stop();
    // Without a running server the operations say so.
    let r = ringmail(&["queue", "flush", "--config", server.config_str()], b"");
    assert!(
        !r.status.success() && r.stderr.contains("not running"),
        "{}",
        r.stderr
    );
}

#[test]
fn queue_list_is_empty_on_a_fresh_server() {
    let mut server = submission_server();
    assert!(queue_list(&server).is_empty());
    server.stop();
}

#[test]
fn a_submission_to_remote_recipients_is_queued_and_survives_a_crash() {
    let mut server = submission_server();
    let msg = make_message(ALICE, BOB, "q1@example.test", "to be relayed");
    submit(&server, &msg);
    // While the server runs (read-only view), once the first attempt is recorded (the next
    // one is an hour away, so nothing changes the entry after this).
    let running = wait_attempted(&server);
    assert_one_fresh_entry(&running);
    // The local recipient got its copy.
    let inbox = server.export(BOB);
    assert_eq!(inbox.len(), 1);
    assert_eq!(strip_trace(&inbox[0]), &msg[..]);
    // A crash: the entry is durable, the offline list and the next run agree.
    server.kill9();
    assert_eq!(queue_list(&server), running);
    server.restart();
    assert_eq!(queue_list(&server), running);
    server.stop();
    assert_eq!(
        queue_list(&server),
        running,
        "after a clean stop (checkpoint)"
    );
    assert_eq!(server.export(BOB).len(), 1);
}
