//! The outbound queue end to end: an authenticated submission to local and remote
//! recipients files the local copy and queues the remote ones durably; `ringmail queue
//! list` shows the entry while the server runs, after a crash and after a restart.

mod common;

use std::net::SocketAddr;

use common::{make_message, ringmail, strip_trace, Server, SmtpClient, ALICE, BOB, USERS};

const REMOTES: [&str; 2] = ["dave@remote.test", "erin@other.test"];

/// Standard base64 (RFC 4648) of `bytes`, for AUTH PLAIN.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

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
    let token = base64(format!("\0{ALICE}\0{password}").as_bytes());
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
    // While the server runs (read-only view).
    let running = queue_list(&server);
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
