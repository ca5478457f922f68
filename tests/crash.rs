//! Durability under crashes and clean shutdown, against the real binary.
//!
//! Owns two tests:
//! - `kill9_during_load_loses_no_acknowledged_message`: 12 client threads send messages with
//!   unique Message-IDs over reused connections; the server (fsync = "always") is killed with
//!   SIGKILL while they send, restarted on the same data dir, and alice's and bob's mailboxes
//!   are exported. Every message whose final reply was 250 must be there exactly once per
//!   recipient and byte-identical; a message that was sent but not acknowledged may be there
//!   at most once; nothing that was never sent may be there. Three kill/restart rounds, the
//!   checks covering every round so far.
//! - `sigterm_lets_open_transactions_finish_and_exits_0`: sessions in the middle of a
//!   transaction get their 250 after SIGTERM, idle ones get `421 4.3.2`, the process exits 0.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::{dot_stuff, split_trace, Server, SmtpClient, ALICE, BOB};

const CLIENT_THREADS: usize = 12;
const ROUNDS: usize = 3;
/// Load before the kill (at least this long, and at least ACKS_MIN_PER_ROUND acks).
const LOAD_BEFORE_KILL: Duration = Duration::from_millis(1500);
const ACKS_MIN_PER_ROUND: usize = 12;
/// Upper bound on waiting for ACKS_MIN_PER_ROUND acknowledgements.
const ACKS_WAIT_MAX: Duration = Duration::from_secs(20);
/// Messages per connection before the client says QUIT and reconnects.
const MESSAGES_PER_CONNECTION: usize = 25;
const CONFIG: &str = "[smtp]\nmax_message_bytes = 1000000\n";

/// One message as a client sent it.
struct Sent {
    sender: String,
    rcpts: Vec<&'static str>,
    message: Vec<u8>,
}

#[derive(Default)]
struct Ledger {
    /// Every message whose MAIL command was sent, by Message-ID.
    attempted: HashMap<String, Sent>,
    /// Message-IDs whose final reply was 250.
    acked: HashSet<String>,
    /// Replies that are wrong whatever the crash timing (a 4xx/5xx before the kill).
    protocol_errors: Vec<String>,
}

fn message_for(id: &str, n: usize, rcpts: &[&str]) -> Vec<u8> {
    let mut m = format!(
        "From: <{id}@client.test>\r\nTo: {}\r\nSubject: crash test {id}\r\nMessage-ID: <{id}>\r\n\r\n",
        rcpts.join(", ")
    )
    .into_bytes();
    // 200 B to ~20 KB, so that some writes are in flight when the kill lands.
    let lines = 3 + (n * 37) % 250;
    for i in 0..lines {
        if i % 17 == 5 {
            m.extend_from_slice(format!(".dot-stuffed line {i} of {id}\r\n").as_bytes());
        } else {
            m.extend_from_slice(
                format!("line {i} of {id}: the quick brown fox jumps over the lazy dog\r\n")
                    .as_bytes(),
            );
        }
    }
    m
}

/// One client thread: connects (again and again), sends until `stop`.
fn client_loop(
    addr: SocketAddr,
    round: usize,
    t: usize,
    stop: &AtomicBool,
    ledger: &Mutex<Ledger>,
) {
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut c) = SmtpClient::connect(addr) else {
            thread::sleep(Duration::from_millis(5));
            continue;
        };
        match c.read_reply() {
            Ok(r) if r.code == 220 => {}
            _ => continue,
        }
        match c.cmd("EHLO client.test") {
            Ok(r) if r.code == 250 => {}
            _ => continue,
        }
        for _ in 0..MESSAGES_PER_CONNECTION {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            n += 1;
            let id = format!("r{round}-t{t}-n{n}@crash.test");
            let rcpts: Vec<&'static str> = match n % 3 {
                0 => vec![ALICE],
                1 => vec![BOB],
                _ => vec![ALICE, BOB],
            };
            let sender = format!("t{t}@client.test");
            let message = message_for(&id, n, &rcpts);
            let mut cmds = format!("MAIL FROM:<{sender}>\r\n");
            for r in &rcpts {
                cmds.push_str(&format!("RCPT TO:<{r}>\r\n"));
            }
            cmds.push_str("DATA\r\n");
            let stuffed = dot_stuff(&message);
            ledger.lock().unwrap().attempted.insert(
                id.clone(),
                Sent {
                    sender,
                    rcpts: rcpts.clone(),
                    message,
                },
            );
            match transaction(&mut c, cmds.as_bytes(), rcpts.len(), &stuffed) {
                Ok(Ok(())) => {
                    ledger.lock().unwrap().acked.insert(id);
                }
                Ok(Err(reply)) => {
                    if !stop.load(Ordering::Relaxed) {
                        ledger
                            .lock()
                            .unwrap()
                            .protocol_errors
                            .push(format!("{id}: {reply}"));
                    }
                    break;
                }
                Err(_) => break, // the connection died (the kill): reconnect
            }
        }
        if !stop.load(Ordering::Relaxed) {
            c.quit();
        }
    }
}

/// Pipelined MAIL/RCPT/DATA, then the message: `Ok(Ok)` on a final 250, `Ok(Err(reply))`
/// on a wrong reply, `Err` on a dead connection.
fn transaction(
    c: &mut SmtpClient,
    cmds: &[u8],
    nrcpt: usize,
    stuffed: &[u8],
) -> std::io::Result<Result<(), String>> {
    c.send(cmds)?;
    for (i, want) in std::iter::once(250)
        .chain(std::iter::repeat_n(250, nrcpt))
        .chain(std::iter::once(354))
        .enumerate()
    {
        let r = c.read_reply()?;
        if r.code != want {
            return Ok(Err(format!("reply {i} to MAIL/RCPT/DATA: {:?}", r.lines)));
        }
    }
    c.send(stuffed)?;
    let r = c.read_reply()?;
    if r.code != 250 {
        return Ok(Err(format!("end of data: {:?}", r.lines)));
    }
    Ok(Ok(()))
}

/// Exports alice and bob and checks them against the ledger; returns the problems found.
fn verify(server: &Server, ledger: &Ledger) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen: HashMap<(&str, String), usize> = HashMap::new();
    for user in [ALICE, BOB] {
        for (i, stored) in server.export(user).iter().enumerate() {
            let t = match split_trace(stored) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(format!("{user} message {i}: {e}"));
                    continue;
                }
            };
            let Some(id) = common::message_id(t.body) else {
                problems.push(format!(
                    "{user} message {i}: no Message-ID: {}",
                    common::show(&t.body[..t.body.len().min(200)])
                ));
                continue;
            };
            let Some(sent) = ledger.attempted.get(&id) else {
                problems.push(format!("{user} message {i}: {id} was never sent"));
                continue;
            };
            if !sent.rcpts.contains(&user) {
                problems.push(format!("{user} message {i}: {id} was not sent to {user}"));
            }
            if t.body != sent.message.as_slice() {
                problems.push(format!(
                    "{user} message {i}: {id} differs from what was sent ({} vs {} bytes)",
                    t.body.len(),
                    sent.message.len()
                ));
            }
            if t.return_path != sent.sender {
                problems.push(format!(
                    "{user} message {i}: {id} Return-Path <{}>, sent as <{}>",
                    t.return_path, sent.sender
                ));
            }
            *seen.entry((user, id)).or_default() += 1;
        }
    }
    for ((user, id), n) in &seen {
        if *n > 1 {
            problems.push(format!("{user}: {id} stored {n} times"));
        }
    }
    let mut lost = 0;
    for id in &ledger.acked {
        for &user in &ledger.attempted[id].rcpts {
            if !seen.contains_key(&(user, id.clone())) {
                lost += 1;
                if lost <= 20 {
                    problems.push(format!("{user}: acknowledged {id} is missing"));
                }
            }
        }
    }
    if lost > 20 {
        problems.push(format!("... {lost} acknowledged deliveries missing in all"));
    }
    problems
}

#[test]
fn kill9_during_load_loses_no_acknowledged_message() {
    let mut server = Server::start(CONFIG);
    let ledger = Mutex::new(Ledger::default());
    for round in 1..=ROUNDS {
        let addr = server.addr();
        let stop = AtomicBool::new(false);
        let acked_before = ledger.lock().unwrap().acked.len();
        thread::scope(|s| {
            for t in 0..CLIENT_THREADS {
                let (stop, ledger) = (&stop, &ledger);
                s.spawn(move || client_loop(addr, round, t, stop, ledger));
            }
            let started = Instant::now();
            loop {
                thread::sleep(Duration::from_millis(20));
                let acked = ledger.lock().unwrap().acked.len() - acked_before;
                let waited = started.elapsed();
                if (waited >= LOAD_BEFORE_KILL && acked >= ACKS_MIN_PER_ROUND)
                    || waited >= ACKS_WAIT_MAX
                {
                    break;
                }
            }
            // Kill first, then stop the clients: the kill lands mid-transaction.
            server.kill9();
            stop.store(true, Ordering::Relaxed);
        });
        let l = ledger.lock().unwrap();
        let acked = l.acked.len() - acked_before;
        assert!(
            l.protocol_errors.is_empty(),
            "round {round}: wrong replies before the kill: {:#?}",
            l.protocol_errors
        );
        assert!(
            acked >= ACKS_MIN_PER_ROUND,
            "round {round}: only {acked} messages acknowledged in {ACKS_WAIT_MAX:?}"
        );
        eprintln!(
            "round {round}: {acked} acknowledged, {} attempted in all",
            l.attempted.len()
        );
        drop(l);

        server.restart();
        let l = ledger.lock().unwrap();
        let problems = verify(&server, &l);
        assert!(
            problems.is_empty(),
            "after kill -9 round {round} and restart, {} problem(s):\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
    server.stop();
    let problems = verify(&server, &ledger.lock().unwrap());
    assert!(
        problems.is_empty(),
        "after the final clean stop:\n{}",
        problems.join("\n")
    );
}

#[test]
fn sigterm_lets_open_transactions_finish_and_exits_0() {
    let mut server = Server::start("");
    let addr = server.addr();
    let half = |m: &[u8]| m.len() / 2;

    // Three sessions inside DATA, with half of their message sent.
    let mut in_data = Vec::new();
    for i in 0..3 {
        let mut c = server.connect();
        c.expect("EHLO client.test", 250);
        c.expect(&format!("MAIL FROM:<data{i}@client.test>"), 250);
        c.expect(&format!("RCPT TO:<{ALICE}>"), 250);
        c.expect("DATA", 354);
        let m = common::make_message(
            &format!("data{i}@client.test"),
            ALICE,
            &format!("term-data-{i}@client.test"),
            "first line\nsecond line\nthird line of the SIGTERM test",
        );
        let stuffed = dot_stuff(&m);
        c.send(&stuffed[..half(&stuffed)]).unwrap();
        in_data.push((c, m, stuffed));
    }
    // One session between RCPT and DATA.
    let mut before_data = server.connect();
    before_data.expect("EHLO client.test", 250);
    before_data.expect("MAIL FROM:<rcpt@client.test>", 250);
    before_data.expect(&format!("RCPT TO:<{BOB}>"), 250);
    // Two idle sessions.
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut c = server.connect();
        c.expect("EHLO client.test", 250);
        idle.push(c);
    }

    server.proc().signal(libc::SIGTERM);

    // Idle sessions are told at once, and closed.
    for (i, c) in idle.iter_mut().enumerate() {
        let r = c
            .read_reply()
            .unwrap_or_else(|e| panic!("idle session {i}: no 421: {e}\n{}", server.output()));
        assert_eq!(r.code, 421, "idle session {i}: {r:?}");
        assert!(r.text().starts_with("4.3.2 "), "idle session {i}: {r:?}");
        assert!(c.closed().unwrap(), "idle session {i} not closed after 421");
    }
    // No new session is served while draining (give every core a few of its 20 ms
    // housekeeping ticks to notice the signal first).
    thread::sleep(Duration::from_millis(200));
    // (A refused connection, or one closed without a greeting, is fine too.)
    if let Ok(mut c) = SmtpClient::connect(addr) {
        if let Ok(r) = c.read_reply() {
            assert_eq!(r.code, 421, "a new connection during drain got {r:?}");
        }
    }
    // The open transactions finish.
    for (i, (c, _, stuffed)) in in_data.iter_mut().enumerate() {
        c.send(&stuffed[half(stuffed)..]).unwrap();
        let r = c
            .read_reply()
            .unwrap_or_else(|e| panic!("session {i} in DATA: no final reply: {e}"));
        assert_eq!(r.code, 250, "session {i} in DATA: {r:?}");
    }
    let m_bob = common::make_message(
        "rcpt@client.test",
        BOB,
        "term-rcpt@client.test",
        "after SIGTERM",
    );
    before_data.expect("DATA", 354);
    before_data.send(&dot_stuff(&m_bob)).unwrap();
    let r = before_data.read_reply().unwrap();
    assert_eq!(r.code, 250, "session between RCPT and DATA: {r:?}");

    // Then the sessions are closed (a 421 first is fine) and the process exits 0.
    for (i, c) in in_data
        .iter_mut()
        .map(|(c, _, _)| c)
        .chain(std::iter::once(&mut before_data))
        .enumerate()
    {
        match c.read_reply() {
            Ok(r) => {
                assert_eq!(r.code, 421, "session {i} after its 250: {r:?}");
                assert!(c.closed().unwrap(), "session {i} not closed after 421");
            }
            Err(e) => assert_eq!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof,
                "session {i} after its 250: {e}"
            ),
        }
    }
    if let Err(e) = server.wait_for_exit() {
        panic!("{e}");
    }

    // Everything acknowledged is stored, once (read offline).
    let alice = server.export(ALICE);
    assert_eq!(alice.len(), 3, "alice's messages after SIGTERM");
    let mut ids = HashSet::new();
    for stored in &alice {
        let body = common::strip_trace(stored);
        let id = common::message_id(body).unwrap();
        let want = in_data
            .iter()
            .find(|(_, m, _)| common::message_id(m).as_deref() == Some(id.as_str()))
            .map(|(_, m, _)| m)
            .unwrap_or_else(|| panic!("unexpected message {id}"));
        common::assert_same_bytes(&id, body, want);
        assert!(ids.insert(id.clone()), "{id} stored twice");
    }
    let bob = server.export(BOB);
    assert_eq!(bob.len(), 1, "bob's messages after SIGTERM");
    common::assert_same_bytes("bob's message", common::strip_trace(&bob[0]), &m_bob);
}
