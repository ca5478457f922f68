//! The client against scripted servers: each test gives the server's replies (split into
//! segments at STARTTLS, where the driver drops what it had buffered), the transactions to
//! run, and checks the bytes the client wrote and the outcomes. Every script is also run
//! with the server's bytes split at every position and byte by byte: the result must not
//! change.

use std::collections::VecDeque;
use std::rc::Rc;

use super::*;

/// What one run of a script produced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    /// Everything the client wrote; `<TLS>` marks the handshake.
    written: String,
    /// One entry per transaction that ended (including one cut by the connection ending).
    results: Vec<Vec<Outcome>>,
    error: Option<Failure>,
    /// Writes the client asked for with `Step::Write`.
    write_steps: usize,
    /// How the run ended: the server ran out of bytes (`abort(Closed)`) or `Step::Close`.
    server_closed: bool,
    timeouts: Vec<(Stage, u64)>,
}

#[derive(Debug, Clone, Copy)]
enum Split {
    Whole,
    At(usize),
    Bytes,
}

fn chunks(segment: &[u8], split: Split) -> VecDeque<Vec<u8>> {
    match split {
        Split::Whole => VecDeque::from([segment.to_vec()]),
        Split::At(n) => {
            let n = n.min(segment.len());
            VecDeque::from([segment[..n].to_vec(), segment[n..].to_vec()])
        }
        Split::Bytes => segment.iter().map(|&b| vec![b]).collect(),
    }
}

fn run_split(
    config: &Config,
    segments: &[&str],
    txs: &[Transaction],
    split: Split,
    tls_active: bool,
) -> Run {
    let mut client = Client::new(Rc::new(config.clone()), tls_active);
    let mut txs: VecDeque<Transaction> = txs.iter().cloned().collect();
    let mut segment = 0;
    let mut pending = chunks(segments[0].as_bytes(), split);
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut run = Run {
        written: String::new(),
        results: Vec::new(),
        error: None,
        write_steps: 0,
        server_closed: false,
        timeouts: Vec::new(),
    };
    for _ in 0..1_000_000 {
        let (used, step) = client.advance(&buf, &mut out);
        buf.drain(..used);
        run.written.push_str(&String::from_utf8_lossy(&out));
        out.clear();
        let seen = (client.stage(), client.timeout_ms());
        if run.timeouts.last() != Some(&seen) {
            run.timeouts.push(seen);
        }
        match step {
            Step::NeedInput => match pending.pop_front() {
                Some(chunk) => buf.extend_from_slice(&chunk),
                None => {
                    assert_eq!(client.abort(Abort::Closed), Step::Close);
                    run.server_closed = true;
                    run.results.extend(client.take_results());
                    run.error = client.error().cloned();
                    return run;
                }
            },
            Step::Write => run.write_steps += 1,
            Step::StartTls => {
                // The driver drops whatever was buffered before the handshake.
                buf.clear();
                segment += 1;
                pending = chunks(
                    segments.get(segment).copied().unwrap_or("").as_bytes(),
                    split,
                );
                run.written.push_str("<TLS>\r\n");
                client.tls_started();
                assert!(client.tls_active());
            }
            Step::Ready | Step::TransactionDone => {
                if step == Step::TransactionDone {
                    run.results.push(client.take_results().unwrap());
                }
                assert_eq!(client.take_results(), None);
                match txs.pop_front() {
                    Some(tx) => client.start(tx).unwrap(),
                    None => client.quit().unwrap(),
                }
            }
            Step::Close => {
                run.results.extend(client.take_results());
                run.error = client.error().cloned();
                return run;
            }
        }
    }
    panic!("the client did not finish");
}

/// Runs the script whole, split at every position of every segment, and byte by byte;
/// all runs must agree. Returns the whole run.
fn run_with(config: &Config, segments: &[&str], txs: &[Transaction], tls_active: bool) -> Run {
    // What the driver saw between steps depends on the split; the rest must not.
    let run = |split| Run {
        timeouts: Vec::new(),
        ..run_split(config, segments, txs, split, tls_active)
    };
    let whole = run(Split::Whole);
    let longest = segments.iter().map(|s| s.len()).max().unwrap_or(0);
    for at in 0..=longest {
        assert_eq!(run(Split::At(at)), whole, "split at {at}");
    }
    assert_eq!(run(Split::Bytes), whole, "byte by byte");
    whole
}

fn run(segments: &[&str], txs: &[Transaction]) -> Run {
    run_with(&config(), segments, txs, false)
}

fn config() -> Config {
    let mut c = Config::new("relay.example.test");
    c.tls = TlsPolicy::Off;
    c
}

fn tx(sender: &str, recipients: &[&str], message: &str) -> Transaction {
    Transaction {
        sender: sender.into(),
        recipients: recipients
            .iter()
            .map(|r| Recipient {
                address: (*r).into(),
                notify: None,
                orcpt: None,
            })
            .collect(),
        smtputf8: false,
        ret: None,
        envid: None,
        message: message.as_bytes().to_vec(),
    }
}

/// `C:` lines joined with CRLF.
fn lines(text: &[&str]) -> String {
    text.iter().map(|l| format!("{l}\r\n")).collect()
}

fn reply(code: u16, enhanced: Option<(u8, u16, u16)>, text: &str) -> Reply {
    Reply {
        code,
        enhanced: enhanced.map(|(c, s, d)| EnhancedCode::new(c, s, d)),
        text: text.into(),
    }
}

fn remote(stage: Stage, code: u16, enhanced: Option<(u8, u16, u16)>, text: &str) -> Failure {
    Failure {
        stage,
        source: Source::Remote,
        reply: reply(code, enhanced, text),
    }
}

const GREETING: &str = "220 mx.remote.test ESMTP\r\n";
const EHLO_FULL: &str = "250-mx.remote.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n\
    250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n250-CHUNKING\r\n250 ENHANCEDSTATUSCODES\r\n";
const EHLO_PLAIN: &str = "250-mx.remote.test\r\n250 SIZE\r\n";
const MESSAGE: &str = "Subject: t\r\n\r\n.hello\nline2\r\n..x\r\nend";
const MESSAGE_ON_WIRE: &str = "Subject: t\r\n\r\n..hello\r\nline2\r\n...x\r\nend\r\n.\r\n";

fn delivered() -> Outcome {
    Outcome::Delivered(reply(250, Some((2, 0, 0)), "Ok: queued as 1234"))
}

#[test]
fn pipelined_delivery_to_two_recipients() {
    let server = [
        GREETING,
        EHLO_FULL,
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
        "250 2.0.0 Ok: queued as 1234\r\n221 2.0.0 Bye\r\n",
    ]
    .concat();
    let r = run(
        &[&server],
        &[tx(
            "a@here.test",
            &["b@remote.test", "c@remote.test"],
            MESSAGE,
        )],
    );
    // Without the final dot and the two stuffed dots.
    let size = MESSAGE_ON_WIRE.len() - ".\r\n".len() - 2;
    assert_eq!(wire_size(MESSAGE.as_bytes()), size as u64);
    let want = lines(&["EHLO relay.example.test"])
        + &lines(&[
            &format!("MAIL FROM:<a@here.test> SIZE={size}"),
            "RCPT TO:<b@remote.test>",
            "RCPT TO:<c@remote.test>",
            "DATA",
        ])
        + MESSAGE_ON_WIRE
        + "QUIT\r\n";
    assert_eq!(r.written, want);
    assert_eq!(r.results, vec![vec![delivered(), delivered()]]);
    assert_eq!(r.error, None);
    assert!(!r.server_closed);
}

#[test]
fn extensions_are_parsed() {
    let mut client = Client::new(Rc::new(config()), false);
    let mut out = Vec::new();
    let input = [GREETING, EHLO_FULL].concat();
    assert_eq!(
        client.advance(input.as_bytes(), &mut out),
        (input.len(), Step::Ready)
    );
    assert_eq!(
        *client.extensions(),
        Extensions {
            esmtp: true,
            pipelining: true,
            size: Some(10_240_000),
            eight_bit_mime: true,
            smtputf8: true,
            starttls: false,
            dsn: true,
            chunking: true,
            enhanced_status_codes: true,
        }
    );
    let mut ext = Extensions::default();
    for line in [
        "size",
        "SIZE 99999999999999999999999",
        "starttls ",
        "auth PLAIN LOGIN",
    ] {
        ext.parse_line(line.as_bytes());
    }
    assert_eq!(ext.size, Some(u64::MAX));
    assert!(ext.starttls && !ext.pipelining);
    ext.parse_line(b"SIZE");
    assert_eq!(ext.size, Some(0));
}

#[test]
fn lock_step_with_a_rejected_recipient() {
    let server = [
        GREETING,
        EHLO_PLAIN,
        "250 Ok\r\n",
        "550-5.1.1 <b@remote.test>: Recipient address rejected:\r\n550 5.1.1 User unknown\r\n",
        "250 Ok\r\n354 go\r\n250 queued\r\n221 Bye\r\n",
    ]
    .concat();
    let r = run(
        &[&server],
        &[tx("", &["b@remote.test", "c@remote.test"], "x")],
    );
    let want = lines(&[
        "EHLO relay.example.test",
        "MAIL FROM:<> SIZE=3",
        "RCPT TO:<b@remote.test>",
        "RCPT TO:<c@remote.test>",
        "DATA",
        "x",
        ".",
        "QUIT",
    ]);
    assert_eq!(r.written, want);
    assert_eq!(
        r.results,
        vec![vec![
            Outcome::Failed(remote(
                Stage::Rcpt,
                550,
                Some((5, 1, 1)),
                "<b@remote.test>: Recipient address rejected: User unknown"
            )),
            Outcome::Delivered(reply(250, None, "queued")),
        ]]
    );
}

#[test]
fn lock_step_sends_no_data_when_every_recipient_fails() {
    let server = [
        GREETING,
        EHLO_PLAIN,
        "250 Ok\r\n550 no\r\n450 4.2.1 later\r\n221 Bye\r\n",
    ]
    .concat();
    let r = run(
        &[&server],
        &[tx("a@here.test", &["b@r.test", "c@r.test"], "x")],
    );
    assert_eq!(
        r.written,
        lines(&[
            "EHLO relay.example.test",
            "MAIL FROM:<a@here.test> SIZE=3",
            "RCPT TO:<b@r.test>",
            "RCPT TO:<c@r.test>",
            "QUIT",
        ])
    );
    assert_eq!(
        r.results,
        vec![vec![
            Outcome::Failed(remote(Stage::Rcpt, 550, None, "no")),
            Outcome::Deferred(remote(Stage::Rcpt, 450, Some((4, 2, 1)), "later")),
        ]]
    );
}

#[test]
fn pipelined_with_every_recipient_rejected() {
    // DATA refused: nothing more is sent.
    let server = [
        GREETING,
        EHLO_FULL,
        "250 ok\r\n550 5.1.1 no\r\n554 5.5.1 no valid recipients\r\n221 bye\r\n",
    ]
    .concat();
    let r = run(&[&server], &[tx("a@h.test", &["b@r.test"], "x")]);
    assert!(
        r.written
            .ends_with("RCPT TO:<b@r.test>\r\nDATA\r\nQUIT\r\n"),
        "{}",
        r.written
    );
    assert_eq!(
        r.results,
        vec![vec![Outcome::Failed(remote(
            Stage::Rcpt,
            550,
            Some((5, 1, 1)),
            "no"
        ))]]
    );
    // DATA accepted anyway (a broken server): a lone dot, its reply ignored (RFC 2920).
    let server = [
        GREETING,
        EHLO_FULL,
        "250 ok\r\n550 5.1.1 no\r\n354 go\r\n250 empty\r\n221 bye\r\n",
    ]
    .concat();
    let r = run(&[&server], &[tx("a@h.test", &["b@r.test"], "x")]);
    assert!(
        r.written.ends_with("DATA\r\n.\r\nQUIT\r\n"),
        "{}",
        r.written
    );
    assert_eq!(
        r.results,
        vec![vec![Outcome::Failed(remote(
            Stage::Rcpt,
            550,
            Some((5, 1, 1)),
            "no"
        ))]]
    );
}

#[test]
fn mail_refused() {
    // Pipelined: the RCPT and DATA replies are read and ignored.
    let server = [
        GREETING,
        EHLO_FULL,
        "553 5.7.1 sender rejected\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need RCPT\r\n",
        "221 bye\r\n",
    ]
    .concat();
    let r = run(
        &[&server],
        &[tx("a@h.test", &["b@r.test", "c@r.test"], "x")],
    );
    let failed = Outcome::Failed(remote(Stage::Mail, 553, Some((5, 7, 1)), "sender rejected"));
    assert_eq!(r.results, vec![vec![failed.clone(), failed]]);
    assert!(r.written.ends_with("DATA\r\nQUIT\r\n"));
    // Lock-step, temporary: no RCPT goes out.
    let server = [GREETING, EHLO_PLAIN, "451 4.3.0 try later\r\n221 bye\r\n"].concat();
    let r = run(&[&server], &[tx("a@h.test", &["b@r.test"], "x")]);
    assert_eq!(
        r.written,
        lines(&[
            "EHLO relay.example.test",
            "MAIL FROM:<a@h.test> SIZE=3",
            "QUIT"
        ])
    );
    assert_eq!(
        r.results,
        vec![vec![Outcome::Deferred(remote(
            Stage::Mail,
            451,
            Some((4, 3, 0)),
            "try later"
        ))]]
    );
}

#[test]
fn final_reply_applies_to_every_accepted_recipient() {
    for (code, text, temporary) in [
        ("451", "451 4.3.0 queue full", true),
        ("554", "554 5.6.0 spam", false),
    ] {
        let server = [
            GREETING,
            EHLO_FULL,
            "250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n250 ok\r\n354 go\r\n",
            text,
            "\r\n221 bye\r\n",
        ]
        .concat();
        let r = run(
            &[&server],
            &[tx(
                "a@h.test",
                &["b@r.test", "c@r.test", "d@r.test"],
                "x\r\n",
            )],
        );
        let (class, rest) = text.split_once(' ').unwrap();
        assert_eq!(class, code);
        let enhanced = if temporary { (4, 3, 0) } else { (5, 6, 0) };
        let failure = remote(
            Stage::EndOfData,
            code.parse().unwrap(),
            Some(enhanced),
            &rest[6..],
        );
        let outcome = if temporary {
            Outcome::Deferred(failure)
        } else {
            Outcome::Failed(failure)
        };
        let unknown = Outcome::Failed(remote(Stage::Rcpt, 550, Some((5, 1, 1)), "unknown"));
        assert_eq!(r.results, vec![vec![outcome.clone(), unknown, outcome]]);
        assert_eq!(
            r.results[0][0].failure().unwrap().stage.describe(),
            "after end of data"
        );
    }
}

#[test]
fn data_command_refused() {
    let server = [
        GREETING,
        EHLO_PLAIN,
        "250 ok\r\n250 ok\r\n451 4.3.2 not now\r\n221 bye\r\n",
    ]
    .concat();
    let r = run(&[&server], &[tx("a@h.test", &["b@r.test"], "x")]);
    assert!(r.written.ends_with("DATA\r\nQUIT\r\n"));
    assert_eq!(
        r.results,
        vec![vec![Outcome::Deferred(remote(
            Stage::Data,
            451,
            Some((4, 3, 2)),
            "not now"
        ))]]
    );
}

#[test]
fn helo_fallback_has_no_extensions_and_downgrades_8bit() {
    let message = "Subject: caf\u{e9}?\r\n\r\nCaf\u{e9} cr\u{e8}me\r\n";
    // The header is 8-bit: SMTPUTF8 would be needed. Use a 7-bit header.
    let message = message.replace("caf\u{e9}?", "cafe");
    let server = [
        GREETING,
        "502 5.5.2 Error: command not recognized\r\n",
        "250 mx.remote.test\r\n",
        "250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n",
    ]
    .concat();
    let r = run(&[&server], &[tx("a@h.test", &["b@r.test"], &message)]);
    let want = lines(&[
        "EHLO relay.example.test",
        "HELO relay.example.test",
        "MAIL FROM:<a@h.test>",
        "RCPT TO:<b@r.test>",
        "DATA",
        "Subject: cafe",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable",
        "",
        "Caf=C3=A9 cr=C3=A8me",
        ".",
        "QUIT",
    ]);
    assert_eq!(r.written, want);
    assert_eq!(
        r.results,
        vec![vec![Outcome::Delivered(reply(250, None, "ok"))]]
    );
}

#[test]
fn eight_bit_goes_as_8bitmime_when_offered() {
    let message = "Subject: x\r\n\r\nCaf\u{e9}\r\n";
    let server = [
        GREETING,
        EHLO_FULL,
        "250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n",
    ]
    .concat();
    let r = run(&[&server], &[tx("a@h.test", &["b@r.test"], message)]);
    let size = message.len();
    assert!(r.written.contains(&format!(
        "MAIL FROM:<a@h.test> SIZE={size} BODY=8BITMIME\r\n"
    )));
    assert!(r.written.contains(message));
}

#[test]
fn hello_failures_end_the_connection() {
    // EHLO 5xx, HELO 5xx: the connection fails with HELO's reply, politely.
    let server = [GREETING, "502 no\r\n", "550 5.7.1 go away\r\n"].concat();
    let r = run(&[&server], &[tx("a@h.test", &["b@r.test"], "x")]);
    assert_eq!(
        r.written,
        lines(&["EHLO relay.example.test", "HELO relay.example.test", "QUIT"])
    );
    assert_eq!(
        r.error,
        Some(remote(Stage::Hello, 550, Some((5, 7, 1)), "go away"))
    );
    assert!(r.results.is_empty());
    // EHLO 4xx: no HELO.
    let server = [GREETING, "454 4.7.0 busy\r\n"].concat();
    let r = run(&[&server], &[]);
    assert_eq!(r.written, lines(&["EHLO relay.example.test", "QUIT"]));
    assert_eq!(
        r.error,
        Some(remote(Stage::Hello, 454, Some((4, 7, 0)), "busy"))
    );
}

#[test]
fn greeting_refused() {
    let r = run(&["554 5.7.1 no service here\r\n"], &[]);
    assert_eq!(r.written, "QUIT\r\n");
    assert_eq!(
        r.error,
        Some(remote(
            Stage::Greeting,
            554,
            Some((5, 7, 1)),
            "no service here"
        ))
    );
    assert!(!r.server_closed);
    // 421: the server is closing; no QUIT.
    let r = run(&["421 4.3.2 shutting down\r\n"], &[]);
    assert_eq!(r.written, "");
    assert_eq!(
        r.error,
        Some(remote(
            Stage::Greeting,
            421,
            Some((4, 3, 2)),
            "shutting down"
        ))
    );
    // A multi-line greeting.
    let r = run(
        &["220-mx.remote.test\r\n220-more\r\n220 ok\r\n250 x\r\n221 bye\r\n"],
        &[],
    );
    assert_eq!(r.written, lines(&["EHLO relay.example.test", "QUIT"]));
    assert_eq!(r.error, None);
}

#[test]
fn starttls_when_offered() {
    let mut c = config();
    c.tls = TlsPolicy::Opportunistic;
    // Bytes after the 220 are dropped by the driver (they came before the handshake).
    let before = [
        GREETING,
        "250-mx\r\n250-STARTTLS\r\n250 SIZE 100\r\n",
        "220 2.0.0 Ready\r\n250 injected\r\n",
    ]
    .concat();
    let after = "250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n";
    let r = run_with(
        &c,
        &[&before, after],
        &[tx("a@h.test", &["b@r.test"], "x")],
        false,
    );
    let want = lines(&[
        "EHLO relay.example.test",
        "STARTTLS",
        "<TLS>",
        "EHLO relay.example.test",
        "MAIL FROM:<a@h.test>",
        "RCPT TO:<b@r.test>",
        "DATA",
        "x",
        ".",
        "QUIT",
    ]);
    assert_eq!(r.written, want);
    assert_eq!(
        r.results,
        vec![vec![Outcome::Delivered(reply(250, None, "ok"))]]
    );
    // Already on TLS (implicit): no STARTTLS even if offered.
    let server = [GREETING, "250-mx\r\n250 STARTTLS\r\n221 bye\r\n"].concat();
    let r = run_with(&c, &[&server], &[], true);
    assert_eq!(r.written, lines(&["EHLO relay.example.test", "QUIT"]));
    // Policy off: not used.
    let r = run(&[&server], &[]);
    assert_eq!(r.written, lines(&["EHLO relay.example.test", "QUIT"]));
}

#[test]
fn starttls_refused_or_missing() {
    let mut c = config();
    c.tls = TlsPolicy::Opportunistic;
    let server = [
        GREETING,
        "250-mx\r\n250 STARTTLS\r\n",
        "454 4.7.0 TLS not available\r\n221 bye\r\n",
    ]
    .concat();
    let r = run_with(&c, &[&server], &[], false);
    assert_eq!(
        r.written,
        lines(&["EHLO relay.example.test", "STARTTLS", "QUIT"])
    );
    assert_eq!(r.error, None);
    c.tls = TlsPolicy::Required;
    let r = run_with(&c, &[&server], &[], false);
    assert_eq!(
        r.written,
        lines(&["EHLO relay.example.test", "STARTTLS", "QUIT"])
    );
    assert_eq!(
        r.error,
        Some(remote(
            Stage::StartTls,
            454,
            Some((4, 7, 0)),
            "TLS not available"
        ))
    );
    let server = [GREETING, EHLO_PLAIN].concat();
    let r = run_with(&c, &[&server], &[], false);
    assert_eq!(r.written, lines(&["EHLO relay.example.test", "QUIT"]));
    let error = r.error.unwrap();
    assert_eq!(
        (error.stage, error.source, error.reply.code),
        (Stage::StartTls, Source::Local, 421)
    );
    assert_eq!(error.reply.status(), EnhancedCode::new(4, 7, 4));
}

#[test]
fn tls_handshake_failure_is_a_connection_error() {
    let mut c = config();
    c.tls = TlsPolicy::Opportunistic;
    let mut client = Client::new(Rc::new(c), false);
    let mut out = Vec::new();
    let input = [GREETING, "250-mx\r\n250 STARTTLS\r\n220 go\r\n"].concat();
    assert_eq!(
        client.advance(input.as_bytes(), &mut out),
        (input.len(), Step::StartTls)
    );
    assert_eq!(client.stage(), Stage::StartTls);
    assert_eq!(client.abort(Abort::TlsHandshake), Step::Close);
    assert_eq!(
        client.error().unwrap().reply.status(),
        EnhancedCode::new(4, 7, 5)
    );
    assert_eq!(client.advance(b"", &mut out).1, Step::Close);
}

#[test]
fn size_limit_refused_locally() {
    let server = [GREETING, "250-mx\r\n250 SIZE 10\r\n221 bye\r\n"].concat();
    let r = run(
        &[&server],
        &[tx("a@h.test", &["b@r.test", "c@r.test"], "0123456789")],
    );
    assert_eq!(r.written, lines(&["EHLO relay.example.test", "QUIT"]));
    let failure = Failure {
        stage: Stage::Mail,
        source: Source::Local,
        reply: reply(
            552,
            Some((5, 3, 4)),
            "message of 12 bytes exceeds the remote server's limit of 10",
        ),
    };
    assert_eq!(
        r.results,
        vec![vec![
            Outcome::Failed(failure.clone()),
            Outcome::Failed(failure)
        ]]
    );
    // At the limit: sent.
    let server = [
        GREETING,
        "250-mx\r\n250 SIZE 12\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n",
    ]
    .concat();
    let r = run(&[&server], &[tx("a@h.test", &["b@r.test"], "0123456789")]);
    assert!(r.written.contains("MAIL FROM:<a@h.test> SIZE=12\r\n"));
    assert!(matches!(r.results[0][0], Outcome::Delivered(_)));
}

#[test]
fn smtputf8_when_needed() {
    // Non-ASCII recipient, remote without SMTPUTF8: 553 5.6.7 for everyone.
    let server = [GREETING, EHLO_PLAIN, "221 bye\r\n"].concat();
    let r = run(
        &[&server],
        &[tx("a@h.test", &["j\u{f6}rg@r.test", "b@r.test"], "x")],
    );
    assert_eq!(r.written, lines(&["EHLO relay.example.test", "QUIT"]));
    let f = r.results[0][1].failure().unwrap();
    assert!(matches!(r.results[0][0], Outcome::Failed(_)));
    assert_eq!(
        (f.source, f.reply.code, f.reply.status()),
        (Source::Local, 553, EnhancedCode::new(5, 6, 7))
    );
    // 8-bit header field: 550 5.6.9.
    let r = run(
        &[&server],
        &[tx(
            "a@h.test",
            &["b@r.test"],
            "Subject: \u{e9}t\u{e9}\r\n\r\nx\r\n",
        )],
    );
    let f = r.results[0][0].failure().unwrap();
    assert_eq!(
        (f.reply.code, f.reply.status()),
        (550, EnhancedCode::new(5, 6, 9))
    );
    // Remote with SMTPUTF8: the parameter goes out.
    let server = [
        GREETING,
        EHLO_FULL,
        "250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n",
    ]
    .concat();
    let r = run(
        &[&server],
        &[tx("\u{e9}@h.test", &["j\u{f6}rg@r.test"], "x")],
    );
    assert!(r
        .written
        .contains("MAIL FROM:<\u{e9}@h.test> SIZE=3 SMTPUTF8\r\nRCPT TO:<j\u{f6}rg@r.test>\r\n"));
    // The original MAIL said SMTPUTF8: passed on even for ASCII.
    let mut t = tx("a@h.test", &["b@r.test"], "x");
    t.smtputf8 = true;
    let r = run(&[&server], &[t]);
    assert!(r
        .written
        .contains("MAIL FROM:<a@h.test> SIZE=3 SMTPUTF8\r\n"));
}

#[test]
fn dsn_parameters_only_when_offered() {
    let mut t = tx("a@h.test", &["b@r.test", "c@r.test", "d@r.test"], "x");
    t.ret = Some(RET_HDRS);
    t.envid = Some("QQ314159".into());
    t.recipients[0].notify = Some(NOTIFY_SUCCESS | NOTIFY_FAILURE | NOTIFY_DELAY);
    t.recipients[0].orcpt = Some("rfc822;b+2B@r.test".into());
    t.recipients[1].notify = Some(NOTIFY_NEVER);
    t.recipients[2].orcpt = Some("bad value".into());
    let server = [
        GREETING,
        EHLO_FULL,
        "250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n",
    ]
    .concat();
    let r = run(&[&server], &[t.clone()]);
    assert!(
        r.written.contains(
            "MAIL FROM:<a@h.test> SIZE=3 RET=HDRS ENVID=QQ314159\r\n\
         RCPT TO:<b@r.test> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;b+2B@r.test\r\n\
         RCPT TO:<c@r.test> NOTIFY=NEVER\r\n\
         RCPT TO:<d@r.test>\r\n"
        ),
        "{}",
        r.written
    );
    let server = [
        GREETING,
        EHLO_PLAIN,
        "250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n",
    ]
    .concat();
    let r = run(&[&server], &[t]);
    assert!(r
        .written
        .contains("MAIL FROM:<a@h.test> SIZE=3\r\nRCPT TO:<b@r.test>\r\nRCPT TO:<c@r.test>\r\n"));
}

#[test]
fn connection_reuse_sends_rset_between_transactions() {
    // Lock-step: RSET waits for its reply.
    let server = [
        GREETING,
        EHLO_PLAIN,
        "250 ok\r\n250 ok\r\n354 go\r\n250 one\r\n",
        "250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n250 two\r\n221 bye\r\n",
    ]
    .concat();
    let txs = [
        tx("a@h.test", &["b@r.test"], "1"),
        tx("a@h.test", &["c@r.test"], "2"),
    ];
    let r = run(&[&server], &txs);
    let want = lines(&[
        "EHLO relay.example.test",
        "MAIL FROM:<a@h.test> SIZE=3",
        "RCPT TO:<b@r.test>",
        "DATA",
        "1",
        ".",
        "RSET",
        "MAIL FROM:<a@h.test> SIZE=3",
        "RCPT TO:<c@r.test>",
        "DATA",
        "2",
        ".",
        "QUIT",
    ]);
    assert_eq!(r.written, want);
    assert_eq!(
        r.results,
        vec![
            vec![Outcome::Delivered(reply(250, None, "one"))],
            vec![Outcome::Delivered(reply(250, None, "two"))]
        ]
    );
    // Pipelined: RSET goes with MAIL; a refused RSET ends the connection.
    let server = [
        GREETING,
        EHLO_FULL,
        "250 ok\r\n250 ok\r\n354 go\r\n250 one\r\n",
        "500 5.5.1 what\r\n",
    ]
    .concat();
    let r = run(&[&server], &txs);
    assert!(
        r.written.ends_with(
            ".\r\nRSET\r\nMAIL FROM:<a@h.test> SIZE=3\r\nRCPT TO:<c@r.test>\r\nDATA\r\nQUIT\r\n"
        ),
        "{}",
        r.written
    );
    let rset = remote(Stage::Rset, 500, Some((5, 5, 1)), "what");
    assert_eq!(r.results[1], vec![Outcome::Deferred(rset.clone())]);
    assert_eq!(r.error, Some(rset));
}

#[test]
fn reply_421_ends_the_connection() {
    let server = [
        GREETING,
        EHLO_FULL,
        "250 ok\r\n250 ok\r\n421 4.4.2 closing\r\n",
    ]
    .concat();
    let r = run(
        &[&server],
        &[tx("a@h.test", &["b@r.test", "c@r.test"], "x")],
    );
    let closing = remote(Stage::Rcpt, 421, Some((4, 4, 2)), "closing");
    assert_eq!(
        r.results,
        vec![vec![
            Outcome::Deferred(closing.clone()),
            Outcome::Deferred(closing.clone())
        ]]
    );
    assert_eq!(r.error, Some(closing));
    assert!(!r.written.ends_with("QUIT\r\n"));
    assert!(!r.server_closed);
}

#[test]
fn connection_lost_defers_the_open_recipients() {
    // Lost while waiting for the reply to the final dot.
    let server = [
        GREETING,
        EHLO_FULL,
        "250 ok\r\n250 ok\r\n550 no\r\n354 go\r\n",
    ]
    .concat();
    let r = run(
        &[&server],
        &[tx("a@h.test", &["b@r.test", "c@r.test"], "x")],
    );
    assert!(r.server_closed);
    let lost = Failure {
        stage: Stage::EndOfData,
        source: Source::Local,
        reply: reply(
            421,
            Some((4, 4, 2)),
            "connection closed by the remote server",
        ),
    };
    assert_eq!(
        r.results,
        vec![vec![
            Outcome::Deferred(lost.clone()),
            Outcome::Failed(remote(Stage::Rcpt, 550, None, "no"))
        ]]
    );
    assert_eq!(r.error, Some(lost));
    // Lost before the greeting: a connection error, no results.
    let r = run(&[""], &[]);
    assert_eq!(r.error.unwrap().stage, Stage::Greeting);
    assert!(r.results.is_empty());
}

#[test]
fn bad_replies_are_protocol_errors() {
    let too_long = format!("220 {}\r\n", "x".repeat(REPLY_LINE_BYTES_MAX_DEFAULT));
    let too_many = "220-x\r\n".repeat(REPLY_LINES_MAX_DEFAULT + 1);
    for (server, text) in [
        ("22O hi\r\n", "malformed"),
        ("120 hi\r\n", "malformed"),
        ("220+hi\r\n", "malformed"),
        ("22\r\n", "malformed"),
        (too_long.as_str(), "too long"),
        (too_many.as_str(), "too many lines"),
    ] {
        let r = run(&[server], &[]);
        let error = r.error.unwrap_or_else(|| panic!("{server:?}"));
        assert_eq!(
            (error.source, error.reply.code),
            (Source::Local, 421),
            "{server:?}"
        );
        assert!(
            error.reply.text.contains(text),
            "{server:?}: {}",
            error.reply.text
        );
    }
}

#[test]
fn reply_text_and_enhanced_codes() {
    let server = [
        GREETING,
        EHLO_FULL,
        "250 ok\r\n",
        "550-5.1.1 The email account that you tried to reach does not exist.\r\n",
        "550-5.1.1 Please check\tthe address\r\n",
        "550 5.1.1 https://support.example/answer\r\n",
        "554 5.5.1 no recipients\r\n221 bye\r\n",
    ]
    .concat();
    let r = run(&[&server], &[tx("a@h.test", &["b@r.test"], "x")]);
    let f = r.results[0][0].failure().unwrap();
    assert_eq!(
        f.reply.text,
        "The email account that you tried to reach does not exist. Please check?the address https://support.example/answer"
    );
    assert_eq!(
        f.to_string(),
        "during RCPT: remote said: 550 5.1.1 The email account that you tried to reach does not exist. Please check?the address https://support.example/answer"
    );
    // Enhanced codes only count with the reply's class; a bare code has no text.
    for (line, enhanced, text) in [
        ("550 5.1.0 Ok", Some((5, 1, 0)), "Ok"),
        ("550 2.1.0 Ok", None, "2.1.0 Ok"),
        ("550 5.1 Ok", None, "5.1 Ok"),
        ("550 5.1.0.1 Ok", None, "5.1.0.1 Ok"),
        ("550 5.1000.0 Ok", None, "5.1000.0 Ok"),
        ("550 5.1.0", Some((5, 1, 0)), ""),
        ("550", None, ""),
        ("550 ", None, ""),
        (
            "550-5.1.0 a\r\n550-4.1.0 b\r\n550 5.1.0 c",
            Some((5, 1, 0)),
            "a 4.1.0 b c",
        ),
        ("550-a\r\n550 5.1.0 b", None, "a 5.1.0 b"),
    ] {
        let server = format!("{GREETING}{EHLO_PLAIN}250 ok\r\n{line}\r\n221 bye\r\n");
        let r = run(&[&server], &[tx("a@h.test", &["b@r.test"], "x")]);
        assert_eq!(
            r.results,
            vec![vec![Outcome::Failed(remote(
                Stage::Rcpt,
                550,
                enhanced,
                text
            ))]],
            "{line}"
        );
    }
    // The Reply type itself.
    let r = reply(250, None, "");
    assert_eq!(
        (r.to_string(), r.status()),
        ("250".into(), EnhancedCode::new(2, 0, 0))
    );
    let r = reply(451, Some((4, 3, 0)), "later");
    assert_eq!(r.to_string(), "451 4.3.0 later");
}

#[test]
fn enhanced_code_parsing() {
    for (text, want) in [
        ("2.1.0 Ok", Some(((2, 1, 0), 6))),
        ("5.7.1", Some(((5, 7, 1), 5))),
        ("4.999.999 x", Some(((4, 999, 999), 10))),
        ("3.1.0 x", None),
        ("2.1 x", None),
        ("2..0 x", None),
        ("2.1.0.0 x", None),
        ("2.1.0x y", None),
        ("x", None),
        ("", None),
    ] {
        let got =
            EnhancedCode::parse(text.as_bytes()).map(|(c, n)| ((c.class, c.subject, c.detail), n));
        assert_eq!(got, want, "{text:?}");
    }
}

#[test]
fn data_in_blocks_matches_one_pass() {
    let messages = [
        "a\r\n.b\r\n..c\n.\n\r\n.",
        ".",
        "",
        "x\r",
        "no line end",
        "\n\n.\r\r\n.x",
        "line\r\n.\r\nafter a lone dot\r\n",
    ];
    for message in messages {
        let mut want = None;
        for chunk in 1..=message.len() + 1 {
            let mut c = config();
            c.data_chunk_bytes = chunk;
            let server = [
                GREETING,
                EHLO_FULL,
                "250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n",
            ]
            .concat();
            let r = run_split(
                &c,
                &[&server],
                &[tx("a@h.test", &["b@r.test"], message)],
                Split::Whole,
                false,
            );
            let data = r.written.split_once("DATA\r\n").unwrap().1.to_owned();
            let blocks = message.len().div_ceil(chunk).max(1);
            assert_eq!(r.write_steps, blocks - 1, "{message:?} in {chunk}");
            match &want {
                None => want = Some(data),
                Some(w) => assert_eq!(&data, w, "{message:?} in blocks of {chunk}"),
            }
        }
        let data = want.unwrap();
        let data = data.strip_suffix(".\r\nQUIT\r\n").unwrap();
        // CRLF only, every line starting with a dot stuffed, ends with CRLF.
        assert!(data.is_empty() || data.ends_with("\r\n"), "{data:?}");
        assert!(
            !data.contains("\r\n.\r\n") && !data.starts_with(".\r\n"),
            "{data:?}"
        );
        let unstuffed: String = data
            .split_inclusive("\r\n")
            .map(|l| l.strip_prefix('.').unwrap_or(l))
            .collect();
        let normalised = message.replace("\r\n", "\n").replace('\n', "\r\n");
        let normalised = if normalised.is_empty() || normalised.ends_with("\r\n") {
            normalised
        } else if normalised.ends_with('\r') {
            normalised + "\n"
        } else {
            normalised + "\r\n"
        };
        assert_eq!(unstuffed, normalised, "{message:?}");
        assert_eq!(
            wire_size(message.as_bytes()),
            normalised.len() as u64,
            "{message:?}"
        );
    }
}

#[test]
fn timeouts_follow_rfc_5321() {
    let server = [
        GREETING,
        EHLO_PLAIN,
        "250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n",
    ]
    .concat();
    let mut c = config();
    c.data_chunk_bytes = 2;
    let r = run_split(
        &c,
        &[&server],
        &[tx("a@h.test", &["b@r.test"], "xyzw")],
        Split::Bytes,
        false,
    );
    let seen: Vec<(Stage, u64)> = r.timeouts;
    for want in [
        (Stage::Greeting, TIMEOUT_MS_GREETING),
        (Stage::Hello, TIMEOUT_MS_COMMAND),
        (Stage::Mail, TIMEOUT_MS_MAIL),
        (Stage::Rcpt, TIMEOUT_MS_RCPT),
        (Stage::Data, TIMEOUT_MS_DATA_INIT),
        (Stage::Data, TIMEOUT_MS_DATA_BLOCK),
        (Stage::EndOfData, TIMEOUT_MS_DATA_END),
        (Stage::Quit, TIMEOUT_MS_COMMAND),
    ] {
        assert!(seen.contains(&want), "{want:?} not in {seen:?}");
    }
    assert_eq!(
        (TIMEOUT_MS_DATA_INIT, TIMEOUT_MS_DATA_END),
        (120_000, 600_000)
    );
}

#[test]
fn start_is_checked() {
    let mut client = Client::new(Rc::new(config()), false);
    let t = tx("a@h.test", &["b@r.test"], "x");
    assert_eq!(
        client.start(t.clone()),
        Err(ClientError::NotReady { state: "busy" })
    );
    let mut out = Vec::new();
    let input = [GREETING, EHLO_PLAIN].concat();
    assert_eq!(client.advance(input.as_bytes(), &mut out).1, Step::Ready);
    assert_eq!(out, b"EHLO relay.example.test\r\n");
    out.clear();
    assert_eq!(
        client.start(tx("a@h.test", &[], "x")),
        Err(ClientError::NoRecipients)
    );
    let many: Vec<String> = (0..=RECIPIENTS_MAX_DEFAULT)
        .map(|i| format!("u{i}@r.test"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(
        client.start(tx("a@h.test", &many, "x")),
        Err(ClientError::TooManyRecipients {
            recipients: RECIPIENTS_MAX_DEFAULT + 1,
            recipients_max: RECIPIENTS_MAX_DEFAULT
        })
    );
    for (sender, rcpt) in [
        ("a@h\r\nRSET", "b@r.test"),
        ("a@h.test", "b@r\n.test"),
        ("a@h.test", ""),
    ] {
        assert!(matches!(
            client.start(tx(sender, &[rcpt], "x")),
            Err(ClientError::InvalidAddress { .. })
        ));
    }
    assert_eq!(client.advance(b"", &mut out), (0, Step::Ready));
    assert!(out.is_empty());
    // A local refusal holds its results until they are taken.
    let mut big = t.clone();
    big.recipients[0].address = "j\u{f6}rg@r.test".into();
    client.start(big).unwrap();
    assert_eq!(client.advance(b"", &mut out), (0, Step::TransactionDone));
    assert!(matches!(
        client.start(t.clone()),
        Err(ClientError::NotReady { .. })
    ));
    assert_eq!(client.take_results().map(|r| r.len()), Some(1));
    client.start(t).unwrap();
    assert_eq!(client.advance(b"", &mut out), (0, Step::NeedInput));
    // No MAIL was sent for the refused one: no RSET.
    assert_eq!(out, b"MAIL FROM:<a@h.test> SIZE=3\r\n");
    assert_eq!(client.quit(), Err(ClientError::NotReady { state: "busy" }));
}
