//! Sans-IO POP3 load client for one connection slot: greeting, USER/PASS,
//! STAT, RETR of random message numbers (distinct ones with `--dele`, each
//! followed by its DELE), QUIT; then the next session, until the slot's share
//! of `--sessions` is used. One command in flight at a time; each is one
//! operation of the [`Outcome`](crate::outcome::Outcome): `+OK` = ok, `-ERR` =
//! tempfail. The login's latency runs from USER written to PASS's `+OK`.
//!
//! A failed login (wrong password, `-ERR [IN-USE]` when another session holds
//! the maildrop) closes the connection and retries after a backoff; it is not
//! a connection error.

use std::collections::HashSet;
use std::fmt::Display;
use std::io::Write;
use std::time::{Duration, Instant};

use super::args::Pop3Config;
use super::reply::{stat_count, Reply, ReplyError, ReplyLimits, ReplyReader};
use crate::mailrun::{
    feed, Class, Credentials, Outbox, Recorder, Retry, Rng, SlotClient, REPLY_TIMEOUT,
};

/// The operations, in report order; `Op as usize` indexes this.
pub const OPS: [&str; 5] = ["login", "stat", "retr", "dele", "quit"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Login = 0,
    Stat,
    Retr,
    Dele,
    Quit,
}

impl Op {
    pub fn name(self) -> &'static str {
        OPS[self as usize]
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Pop3ClientError {
    #[error("bad reply while waiting for {waiting}: {source}")]
    Reply {
        waiting: &'static str,
        #[source]
        source: ReplyError,
    },
    #[error("greeting is -ERR: {excerpt:?}")]
    Greeting { excerpt: String },
    #[error("unexpected reply while waiting for {waiting}")]
    Unexpected { waiting: &'static str },
    #[error("no reply within {timeout:?} while waiting for {waiting}")]
    Timeout {
        waiting: &'static str,
        timeout: Duration,
    },
}

/// What the client waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    /// No connection.
    Disconnected,
    Greeting,
    User,
    Pass,
    Stat,
    /// RETR's status line, then its body.
    Retr(u32),
    Dele(u32),
    Quit,
    /// The session is over: the driver closes the socket.
    Closing,
}

impl Waiting {
    fn name(self) -> &'static str {
        match self {
            Waiting::Disconnected => "connection",
            Waiting::Greeting => "greeting",
            Waiting::User => "USER reply",
            Waiting::Pass => "PASS reply",
            Waiting::Stat => "STAT reply",
            Waiting::Retr(_) => "RETR reply",
            Waiting::Dele(_) => "DELE reply",
            Waiting::Quit => "QUIT reply",
            Waiting::Closing => "close",
        }
    }

    /// The operation whose reply this is.
    fn op(self) -> Option<Op> {
        match self {
            Waiting::User | Waiting::Pass => Some(Op::Login),
            Waiting::Stat => Some(Op::Stat),
            Waiting::Retr(_) => Some(Op::Retr),
            Waiting::Dele(_) => Some(Op::Dele),
            Waiting::Quit => Some(Op::Quit),
            Waiting::Disconnected | Waiting::Greeting | Waiting::Closing => None,
        }
    }

    fn connected(self) -> bool {
        !matches!(self, Waiting::Disconnected | Waiting::Closing)
    }
}

/// One connection slot.
pub struct Pop3Client<'a> {
    cfg: &'a Pop3Config,
    user: &'a Credentials,
    /// Sessions this slot may still start.
    budget: u64,
    waiting: Waiting,
    reader: ReplyReader,
    carry: Vec<u8>,
    outbox: Outbox,
    /// When USER went out: the login's latency starts there.
    login_sent_at: Option<Instant>,
    /// Messages left to retrieve this session, last first.
    plan: Vec<u32>,
    /// With --dele: the numbers already in `plan` (kept to reuse its allocation).
    chosen: HashSet<u32>,
    retry: Retry,
    last_progress: Instant,
    rng: Rng,
}

impl<'a> Pop3Client<'a> {
    /// Slot `slot` (its user is `cfg.users[slot % n]`) with `budget` sessions.
    pub fn new(cfg: &'a Pop3Config, slot: usize, budget: u64, rng: Rng, now: Instant) -> Self {
        Self {
            cfg,
            user: &cfg.users[slot % cfg.users.len()],
            budget,
            waiting: Waiting::Disconnected,
            reader: ReplyReader::new(ReplyLimits::default()),
            carry: Vec::new(),
            outbox: Outbox::default(),
            login_sent_at: None,
            plan: Vec::new(),
            chosen: HashSet::new(),
            retry: Retry::new(now),
            last_progress: now,
            rng,
        }
    }

    fn process(
        &mut self,
        buf: &[u8],
        now: Instant,
        rec: &mut Recorder,
    ) -> Result<usize, Pop3ClientError> {
        let mut pos = 0;
        while pos < buf.len() && self.waiting.connected() {
            let multi_line = matches!(self.waiting, Waiting::Retr(_));
            let (used, reply) = self
                .reader
                .next(&buf[pos..], multi_line)
                .map_err(|source| Pop3ClientError::Reply {
                    waiting: self.waiting.name(),
                    source,
                })?;
            pos += used;
            if let Some(reply) = reply {
                self.on_reply(reply, now, rec)?;
            }
            if used == 0 {
                break;
            }
        }
        Ok(pos)
    }

    fn on_reply(
        &mut self,
        reply: Reply<'_>,
        now: Instant,
        rec: &mut Recorder,
    ) -> Result<(), Pop3ClientError> {
        let (ok, text) = match reply {
            // RETR's +OK: the operation completes with its body.
            Reply::Status {
                body_follows: true, ..
            } => return Ok(()),
            Reply::Status { ok, text, .. } => (ok, text),
            Reply::BodyEnd { .. } => (true, &b""[..]),
        };
        let class = if ok { Class::Ok } else { Class::TempFail };
        match self.waiting {
            Waiting::Greeting => {
                if !ok {
                    return Err(Pop3ClientError::Greeting {
                        excerpt: text.escape_ascii().to_string(),
                    });
                }
                self.budget -= 1;
                self.send(Waiting::User);
            }
            Waiting::User if ok => {
                self.login_sent_at = self.outbox.sent_at;
                self.send(Waiting::Pass);
            }
            Waiting::User | Waiting::Pass => {
                let sent_at = self.login_sent_at.take().or(self.outbox.sent_at);
                rec.complete(Op::Login as usize, class, sent_at, now);
                if ok {
                    self.retry.succeeded();
                    self.send(Waiting::Stat);
                } else {
                    // Nothing else is sent: close, then log in again after a backoff.
                    self.waiting = Waiting::Closing;
                    self.retry.failed(now);
                }
            }
            Waiting::Stat => {
                rec.complete(Op::Stat as usize, class, self.outbox.sent_at, now);
                let count = if ok { stat_count(text).unwrap_or(0) } else { 0 };
                self.plan_session(count);
                self.next_command();
            }
            Waiting::Retr(number) => {
                rec.complete(Op::Retr as usize, class, self.outbox.sent_at, now);
                if ok && self.cfg.dele {
                    self.send(Waiting::Dele(number));
                } else {
                    self.next_command();
                }
            }
            Waiting::Dele(_) => {
                rec.complete(Op::Dele as usize, class, self.outbox.sent_at, now);
                self.next_command();
            }
            Waiting::Quit => {
                rec.complete(Op::Quit as usize, class, self.outbox.sent_at, now);
                self.waiting = Waiting::Closing;
                self.retry.again(now);
            }
            Waiting::Disconnected | Waiting::Closing => {
                return Err(Pop3ClientError::Unexpected {
                    waiting: self.waiting.name(),
                })
            }
        }
        Ok(())
    }

    /// Chooses the messages to RETR: random numbers in 1..=count, distinct with --dele.
    fn plan_session(&mut self, count: u32) {
        self.plan.clear();
        if count == 0 {
            return;
        }
        let wanted = self.cfg.retr_per_session;
        if self.cfg.dele {
            let k = wanted.min(count);
            // Floyd's algorithm: k distinct numbers without a list of all `count`.
            self.chosen.clear();
            self.chosen.reserve(k as usize);
            for j in (count - k + 1)..=count {
                let t = 1 + self.rng.below(u64::from(j)) as u32;
                let pick = if self.chosen.contains(&t) { j } else { t };
                self.chosen.insert(pick);
                self.plan.push(pick);
            }
        } else {
            for _ in 0..wanted {
                self.plan.push(1 + self.rng.below(u64::from(count)) as u32);
            }
        }
    }

    fn next_command(&mut self) {
        match self.plan.pop() {
            Some(number) => self.send(Waiting::Retr(number)),
            None => self.send(Waiting::Quit),
        }
    }

    /// Queues the command of `waiting`.
    fn send(&mut self, waiting: Waiting) {
        self.waiting = waiting;
        let out = self.outbox.start();
        // Writing into a Vec cannot fail.
        let _ = match waiting {
            Waiting::User => write!(out, "USER {}\r\n", self.user.login),
            Waiting::Pass => write!(out, "PASS {}\r\n", self.user.password.expose()),
            Waiting::Stat => write!(out, "STAT\r\n"),
            Waiting::Retr(number) => write!(out, "RETR {number}\r\n"),
            Waiting::Dele(number) => write!(out, "DELE {number}\r\n"),
            Waiting::Quit => write!(out, "QUIT\r\n"),
            Waiting::Disconnected | Waiting::Greeting | Waiting::Closing => Ok(()),
        };
        self.outbox.seal();
    }

    fn reset_connection(&mut self) {
        self.reader.reset();
        self.carry.clear();
        self.outbox.clear();
        self.login_sent_at = None;
        self.plan.clear();
    }

    fn abort_inflight(&mut self, rec: &mut Recorder) {
        if let Some(op) = self.waiting.op() {
            rec.abort(op as usize);
        }
    }
}

impl SlotClient for Pop3Client<'_> {
    type Error = Pop3ClientError;

    fn next_connect_at(&self) -> Option<Instant> {
        (self.waiting == Waiting::Disconnected && !self.retry.stopped && self.budget > 0)
            .then_some(self.retry.connect_at)
    }

    fn timer_at(&self) -> Option<Instant> {
        self.waiting
            .connected()
            .then(|| self.last_progress + REPLY_TIMEOUT)
    }

    fn on_connected(&mut self, now: Instant, rec: &mut Recorder) {
        rec.connected();
        self.retry.connected();
        self.reset_connection();
        self.waiting = Waiting::Greeting;
        self.last_progress = now;
    }

    fn on_connect_failed(&mut self, error: &dyn Display, now: Instant, rec: &mut Recorder) {
        let target = self.cfg.target;
        rec.error(|| format!("connect to {target}: {error}"));
        self.retry.failed(now);
    }

    fn on_received(
        &mut self,
        data: &[u8],
        now: Instant,
        rec: &mut Recorder,
    ) -> Result<(), Pop3ClientError> {
        self.last_progress = now;
        let mut carry = std::mem::take(&mut self.carry);
        let line_bytes_max = self.reader.limits().line_bytes_max;
        let result = feed(&mut carry, data, line_bytes_max, |bytes| {
            let used = self.process(bytes, now, rec)?;
            // Once the session stops reading, nothing is carried (bodies never are).
            Ok(if self.waiting.connected() {
                used
            } else {
                bytes.len()
            })
        });
        self.carry = carry;
        result
    }

    fn on_timer(&mut self, now: Instant, _rec: &mut Recorder) -> Result<(), Pop3ClientError> {
        if now.saturating_duration_since(self.last_progress) >= REPLY_TIMEOUT {
            return Err(Pop3ClientError::Timeout {
                waiting: self.waiting.name(),
                timeout: REPLY_TIMEOUT,
            });
        }
        Ok(())
    }

    fn on_eof(&mut self, now: Instant, rec: &mut Recorder) {
        if self.waiting == Waiting::Closing {
            self.on_closed(now);
        } else {
            self.on_connection_lost(&"unexpected end of stream", now, rec);
        }
    }

    fn on_connection_lost(&mut self, error: &dyn Display, now: Instant, rec: &mut Recorder) {
        let (target, waiting) = (self.cfg.target, self.waiting.name());
        rec.error(|| format!("connection to {target} lost while waiting for {waiting}: {error}"));
        self.abort_inflight(rec);
        self.reset_connection();
        self.waiting = Waiting::Disconnected;
        self.retry.failed(now);
    }

    fn on_deadline(&mut self, rec: &mut Recorder) {
        self.abort_inflight(rec);
        self.reset_connection();
        self.waiting = Waiting::Disconnected;
        self.retry.stopped = true;
    }

    fn output(&self) -> &[u8] {
        self.outbox.pending()
    }

    fn on_written(&mut self, n: usize, now: Instant) {
        self.outbox.on_written(n, now);
        self.last_progress = now;
    }

    fn is_closing(&self) -> bool {
        self.waiting == Waiting::Closing
    }

    fn on_closed(&mut self, _now: Instant) {
        self.reset_connection();
        self.waiting = Waiting::Disconnected;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailrun::empty_outcome;
    use crate::pop3::args::parse_pop3_args;
    use crate::progress::Progress;

    fn config(extra: &[&str]) -> Pop3Config {
        let mut args = vec!["--target", "127.0.0.1:110", "--user", "bob@x.test:s3cret"];
        args.extend_from_slice(extra);
        parse_pop3_args(args.iter().map(|s| s.to_string()), 1).unwrap()
    }

    struct Harness<'a> {
        client: Pop3Client<'a>,
        rec: Recorder<'a>,
        now: Instant,
    }

    impl<'a> Harness<'a> {
        fn new(cfg: &'a Pop3Config, progress: &'a Progress, budget: u64) -> Self {
            let now = Instant::now();
            let outcome = empty_outcome(
                "pop3",
                &cfg.output,
                &cfg.target_text,
                cfg.describe(),
                "retr",
                &OPS,
                cfg.duration,
            );
            let mut h = Harness {
                client: Pop3Client::new(cfg, 0, budget, Rng::new(11), now),
                rec: Recorder::new(outcome, progress, now, Some(Op::Retr as usize)),
                now,
            };
            h.client.on_connected(now, &mut h.rec);
            h
        }

        fn sent(&mut self) -> String {
            let out = String::from_utf8_lossy(self.client.output()).into_owned();
            self.client.on_written(out.len(), self.now);
            out
        }

        fn recv(&mut self, data: &[u8]) -> Result<(), Pop3ClientError> {
            self.client.on_received(data, self.now, &mut self.rec)
        }

        fn op(&self, op: Op) -> (u64, u64, u64, u64) {
            let o = &self.rec.outcome.ops[op as usize];
            (o.ok, o.tempfail, o.permfail, o.aborted)
        }

        fn login(&mut self, stat: &str) {
            self.recv(b"+OK POP3 ready\r\n").unwrap();
            assert_eq!(self.sent(), "USER bob@x.test\r\n");
            self.now += Duration::from_millis(2);
            self.recv(b"+OK\r\n").unwrap();
            assert_eq!(self.sent(), "PASS s3cret\r\n");
            self.now += Duration::from_millis(3);
            self.recv(b"+OK logged in\r\n").unwrap();
            assert_eq!(self.sent(), "STAT\r\n");
            self.recv(format!("+OK {stat}\r\n").as_bytes()).unwrap();
        }
    }

    #[test]
    fn session_retrieves_random_messages_and_quits() {
        let cfg = config(&["--retr-per-session", "3"]);
        let progress = Progress::default();
        let mut h = Harness::new(&cfg, &progress, 1);
        h.login("4 1000");
        assert_eq!(h.op(Op::Login), (1, 0, 0, 0));
        assert_eq!(
            h.rec.outcome.ops[Op::Login as usize].latency.max_us(),
            5_000,
            "USER written -> PASS +OK"
        );
        for _ in 0..3 {
            let cmd = h.sent();
            let n: u32 = cmd
                .strip_prefix("RETR ")
                .unwrap()
                .trim_end()
                .parse()
                .unwrap();
            assert!((1..=4).contains(&n), "{cmd}");
            h.recv(b"+OK 12 octets\r\nSubject: a\r\n\r\n..\r\nx\r\n.\r\n")
                .unwrap();
        }
        assert_eq!(h.sent(), "QUIT\r\n");
        h.recv(b"+OK bye\r\n").unwrap();
        assert!(h.client.is_closing());
        h.client.on_closed(h.now);
        assert!(h.client.next_connect_at().is_none(), "budget spent");
        assert_eq!(h.op(Op::Retr), (3, 0, 0, 0));
        assert_eq!(h.op(Op::Quit), (1, 0, 0, 0));
        assert_eq!(
            h.rec.outcome.timeline.counts.iter().sum::<u64>(),
            3,
            "retr only"
        );
        // The worker loop reports once per turn; the test drives the client alone.
        h.rec.report_progress();
        assert_eq!(progress.completed(), 6);
    }

    #[test]
    fn split_at_every_byte_gives_the_same_session() {
        let cfg = config(&["--retr-per-session", "1", "--dele"]);
        let server: [&[u8]; 7] = [
            b"+OK hi\r\n",
            b"+OK\r\n",
            b"+OK in\r\n",
            b"+OK 1 30\r\n",
            b"+OK\r\nA: b\r\n\r\n..\r\n.x\r\n.\r\n",
            b"+OK deleted\r\n",
            b"+OK bye\r\n",
        ];
        let total: usize = server.iter().map(|step| step.len()).sum();
        for at in 0..total {
            let progress = Progress::default();
            let mut h = Harness::new(&cfg, &progress, 1);
            let mut transcript = String::new();
            let mut offset = 0;
            for step in server {
                let pieces: Vec<&[u8]> = if (offset..offset + step.len()).contains(&at) {
                    if at % 2 == 0 {
                        step.chunks(1).collect()
                    } else {
                        let (a, b) = step.split_at(at - offset);
                        vec![a, b]
                    }
                } else {
                    vec![step]
                };
                for piece in pieces {
                    h.recv(piece).unwrap();
                }
                transcript.push_str(&h.sent());
                offset += step.len();
            }
            assert_eq!(
                transcript,
                "USER bob@x.test\r\nPASS s3cret\r\nSTAT\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n",
                "split at {at}"
            );
            assert_eq!(h.op(Op::Dele), (1, 0, 0, 0), "split at {at}");
            assert_eq!(h.op(Op::Retr), (1, 0, 0, 0), "split at {at}");
            assert!(h.client.is_closing());
        }
    }

    #[test]
    fn dele_picks_distinct_messages() {
        let cfg = config(&["--retr-per-session", "5", "--dele"]);
        let progress = Progress::default();
        let mut h = Harness::new(&cfg, &progress, 1);
        h.login("5 100");
        let mut seen = Vec::new();
        for _ in 0..5 {
            let n = h.sent();
            seen.push(n.clone());
            h.recv(b"+OK\r\n.\r\n").unwrap();
            assert_eq!(h.sent(), n.replace("RETR", "DELE"));
            h.recv(b"+OK\r\n").unwrap();
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "RETR 1\r\n",
                "RETR 2\r\n",
                "RETR 3\r\n",
                "RETR 4\r\n",
                "RETR 5\r\n"
            ]
        );
        assert_eq!(h.sent(), "QUIT\r\n");
        // More wanted than there are: each message once.
        let mut h = Harness::new(&cfg, &progress, 1);
        h.login("2 10");
        let mut n = 0;
        while h.sent().starts_with("RETR") {
            n += 1;
            h.recv(b"+OK\r\n.\r\n").unwrap();
            h.sent();
            h.recv(b"+OK\r\n").unwrap();
        }
        assert_eq!(n, 2);
    }

    #[test]
    fn failed_login_and_err_replies_are_tempfails() {
        let cfg = config(&[]);
        let progress = Progress::default();
        let mut h = Harness::new(&cfg, &progress, 5);
        h.recv(b"+OK hi\r\n").unwrap();
        h.sent();
        h.recv(b"+OK\r\n").unwrap();
        h.sent();
        h.recv(b"-ERR [AUTH] invalid credentials\r\n").unwrap();
        assert_eq!(h.sent(), "", "nothing after a failed login");
        assert!(h.client.is_closing());
        assert_eq!(h.op(Op::Login), (0, 1, 0, 0));
        h.client.on_eof(h.now, &mut h.rec);
        assert_eq!(h.rec.outcome.errors, 0);
        assert!(h.client.next_connect_at().unwrap() > h.now);
        // RETR -ERR: no DELE, next RETR.
        let cfg = config(&["--retr-per-session", "2", "--dele"]);
        let mut h = Harness::new(&cfg, &progress, 5);
        h.login("3 9");
        assert!(h.sent().starts_with("RETR "));
        h.recv(b"-ERR no such message\r\n").unwrap();
        assert!(h.sent().starts_with("RETR "));
        assert_eq!(h.op(Op::Retr), (0, 1, 0, 0));
    }

    #[test]
    fn empty_maildrop_quits_after_stat() {
        let cfg = config(&[]);
        let progress = Progress::default();
        let mut h = Harness::new(&cfg, &progress, 5);
        h.login("0 0");
        assert_eq!(h.sent(), "QUIT\r\n");
    }

    #[test]
    fn lost_connection_and_deadline_abort_the_op_in_flight() {
        let cfg = config(&[]);
        let progress = Progress::default();
        let mut h = Harness::new(&cfg, &progress, 5);
        h.login("3 9");
        h.sent();
        h.recv(b"+OK\r\npartial body").unwrap();
        h.client.on_eof(h.now, &mut h.rec);
        assert_eq!(h.op(Op::Retr), (0, 0, 0, 1));
        assert_eq!(h.rec.outcome.errors, 1);
        assert!(matches!(
            Harness::new(&cfg, &progress, 1).recv(b"-ERR busy\r\n"),
            Err(Pop3ClientError::Greeting { .. })
        ));
        let mut h = Harness::new(&cfg, &progress, 5);
        h.login("3 9");
        h.client.on_deadline(&mut h.rec);
        assert_eq!(h.op(Op::Retr), (0, 0, 0, 1));
        assert!(h.client.next_connect_at().is_none());
        assert!(matches!(
            Harness::new(&cfg, &progress, 1).recv(b"garbage\r\n"),
            Err(Pop3ClientError::Reply { .. })
        ));
    }
}
