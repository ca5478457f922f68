//! Sans-IO IMAP load client for one connection slot: greeting, LOGIN, SELECT,
//! `UID SEARCH ALL` (to learn the UIDs), then commands drawn from the weighted
//! mix until the slot's share of `--commands` is used (or, with churn, the
//! session's), then LOGOUT. One command in flight at a time; each is one
//! operation of the [`Outcome`](crate::outcome::Outcome) with its latency
//! (first line written → tagged reply) and class (OK / NO / BAD).
//!
//! The driver (`mailrun`) feeds bytes, time and connection events and writes
//! [`ImapClient::output`]. Synchronizing literals (LOGIN arguments that cannot
//! be quoted, APPEND without LITERAL+) wait in the [`Outbox`] for the server's
//! `+`; an IDLE's `DONE` waits for the client's timer.

use std::fmt::Display;
use std::io::Write;
use std::time::{Duration, Instant};

use super::args::{ImapConfig, MixOp, SessionMode};
use super::message::{write_message, SEARCH_WORD};
use super::response::{
    appended_uid, capability_code, classify, excerpt, has_capability, search_numbers, Response,
    ResponseError, ResponseLimits, ResponseReader, Status, Untagged,
};
use crate::mailrun::{
    feed, Class, Credentials, Outbox, Recorder, Retry, Rng, SlotClient, REPLY_TIMEOUT,
};

/// The operations, in report order; `Op as usize` indexes this.
pub const OPS: [&str; 9] = [
    "login", "select", "fetch", "store", "search", "append", "idle", "noop", "logout",
];
/// How long an IDLE lasts before the client sends DONE.
pub const IDLE_DURATION: Duration = Duration::from_millis(100);
/// Most UIDs a connection remembers (the first ones `UID SEARCH ALL` returns).
pub const UIDS_MAX: usize = 65_536;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Login = 0,
    Select,
    Fetch,
    Store,
    Search,
    Append,
    Idle,
    Noop,
    Logout,
}

impl Op {
    pub fn name(self) -> &'static str {
        OPS[self as usize]
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImapClientError {
    #[error("bad response while waiting for {waiting}: {source}")]
    Response {
        waiting: &'static str,
        #[source]
        source: ResponseError,
    },
    #[error("server said BYE while waiting for {waiting}: {excerpt:?}")]
    Bye {
        waiting: &'static str,
        excerpt: String,
    },
    #[error("greeting is not OK: {excerpt:?}")]
    Greeting { excerpt: String },
    #[error("unexpected {what} while waiting for {waiting}: {excerpt:?}")]
    Unexpected {
        what: &'static str,
        waiting: &'static str,
        excerpt: String,
    },
    #[error("no reply within {timeout:?} while waiting for {waiting}")]
    Timeout {
        waiting: &'static str,
        timeout: Duration,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No connection.
    Disconnected,
    Greeting,
    /// A command is in flight (see `inflight`).
    Command,
    /// The session is over: the driver closes the socket.
    Closing,
}

/// Where a session is between commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Login,
    Select,
    LearnUids,
    Mix,
}

#[derive(Clone, Copy, Debug)]
struct Inflight {
    op: Op,
    tag: u64,
    /// `UID SEARCH ALL` after SELECT: its `* SEARCH` replaces the known UIDs.
    learn_uids: bool,
}

/// One connection slot.
pub struct ImapClient<'a> {
    cfg: &'a ImapConfig,
    user: &'a Credentials,
    /// Date header of appended messages (one per run).
    date: &'a str,
    run_id: u64,
    /// Commands this slot may still issue (LOGOUT not counted).
    budget: u64,
    session_commands: u64,
    /// A SELECT failed: LOGOUT, then reconnect with backoff.
    session_failed: bool,
    phase: Phase,
    stage: Stage,
    inflight: Option<Inflight>,
    reader: ResponseReader,
    /// An unfinished response line from the last read.
    carry: Vec<u8>,
    outbox: Outbox,
    retry: Retry,
    last_progress: Instant,
    next_tag: u64,
    literal_plus: bool,
    uids: Vec<u32>,
    store_add: bool,
    search_body: bool,
    idle_done_at: Option<Instant>,
    appends: u64,
    rng: Rng,
}

impl<'a> ImapClient<'a> {
    /// Slot `slot` (its user is `cfg.users[slot % n]`) with `budget` commands.
    pub fn new(
        cfg: &'a ImapConfig,
        slot: usize,
        budget: u64,
        date: &'a str,
        run_id: u64,
        rng: Rng,
        now: Instant,
    ) -> Self {
        Self {
            cfg,
            user: &cfg.users[slot % cfg.users.len()],
            date,
            run_id,
            budget,
            session_commands: 0,
            session_failed: false,
            phase: Phase::Disconnected,
            stage: Stage::Login,
            inflight: None,
            reader: ResponseReader::new(ResponseLimits::default()),
            carry: Vec::new(),
            outbox: Outbox::default(),
            retry: Retry::new(now),
            last_progress: now,
            next_tag: 0,
            literal_plus: false,
            uids: Vec::new(),
            store_add: true,
            search_body: true,
            idle_done_at: None,
            appends: 0,
            rng,
        }
    }

    fn waiting(&self) -> &'static str {
        match (self.phase, self.inflight) {
            (Phase::Greeting, _) => "greeting",
            (_, Some(inflight)) => inflight.op.name(),
            (Phase::Closing, None) => "close",
            _ => "connection",
        }
    }

    // -----------------------------------------------------------------------------------------
    // Responses

    /// Handles every complete response at the start of `buf`; returns the bytes used.
    fn process(
        &mut self,
        buf: &[u8],
        now: Instant,
        rec: &mut Recorder,
    ) -> Result<usize, ImapClientError> {
        let mut pos = 0;
        while pos < buf.len() && matches!(self.phase, Phase::Greeting | Phase::Command) {
            let (used, response) =
                self.reader
                    .next(&buf[pos..])
                    .map_err(|source| ImapClientError::Response {
                        waiting: self.waiting(),
                        source,
                    })?;
            pos += used;
            if let Some(response) = response {
                self.on_response(response, now, rec)?;
            }
            if used == 0 {
                break;
            }
        }
        Ok(pos)
    }

    fn on_response(
        &mut self,
        response: Response<'_>,
        now: Instant,
        rec: &mut Recorder,
    ) -> Result<(), ImapClientError> {
        let unexpected = |what, waiting, line: &[u8]| ImapClientError::Unexpected {
            what,
            waiting,
            excerpt: excerpt(line),
        };
        match response {
            Response::Untagged(line) => match classify(line) {
                Untagged::Bye(_) if self.inflight.is_some_and(|i| i.op == Op::Logout) => Ok(()),
                Untagged::Bye(text) => Err(ImapClientError::Bye {
                    waiting: self.waiting(),
                    excerpt: excerpt(text),
                }),
                untagged if self.phase == Phase::Greeting => {
                    if let Untagged::Capability(list) = untagged {
                        self.literal_plus = has_capability(list, b"LITERAL+");
                    }
                    let ok = line.len() >= 2 && line[..2].eq_ignore_ascii_case(b"OK");
                    if !ok {
                        return Err(ImapClientError::Greeting {
                            excerpt: excerpt(line),
                        });
                    }
                    self.next_command(now);
                    Ok(())
                }
                Untagged::Capability(list) => {
                    self.literal_plus = has_capability(list, b"LITERAL+");
                    Ok(())
                }
                Untagged::Search(list) if self.inflight.is_some_and(|i| i.learn_uids) => {
                    let room = UIDS_MAX.saturating_sub(self.uids.len());
                    self.uids.extend(search_numbers(list).take(room));
                    Ok(())
                }
                _ => Ok(()),
            },
            Response::Continuation(text) => {
                let Some(inflight) = self.inflight else {
                    return Err(unexpected("continuation", self.waiting(), text));
                };
                if inflight.op == Op::Idle && self.idle_done_at.is_none() && self.outbox.holding() {
                    self.idle_done_at = Some(now + IDLE_DURATION);
                    Ok(())
                } else if inflight.op != Op::Idle && self.outbox.release() {
                    Ok(())
                } else {
                    Err(unexpected("continuation", self.waiting(), text))
                }
            }
            Response::Tagged { tag, status, text } => {
                let Some(inflight) = self.inflight else {
                    return Err(unexpected("tagged reply", self.waiting(), tag));
                };
                if !tag_matches(tag, inflight.tag) {
                    return Err(unexpected("tag", self.waiting(), tag));
                }
                self.inflight = None;
                self.idle_done_at = None;
                let class = match status {
                    Status::Ok => Class::Ok,
                    Status::No => Class::TempFail,
                    Status::Bad => Class::PermFail,
                };
                rec.complete(inflight.op as usize, class, self.outbox.sent_at, now);
                // A refused synchronizing literal or an IDLE ended by the server: drop the rest.
                self.outbox.clear();
                if status == Status::Ok {
                    if let Some(list) = capability_code(text) {
                        self.literal_plus = has_capability(list, b"LITERAL+");
                    }
                    if inflight.op == Op::Append && self.uids.len() < UIDS_MAX {
                        self.uids.extend(appended_uid(text));
                    }
                }
                self.after(inflight.op, status, now);
                Ok(())
            }
        }
    }

    /// The next step after `op` completed with `status`.
    fn after(&mut self, op: Op, status: Status, now: Instant) {
        match (op, status) {
            (Op::Logout, _) => {
                self.phase = Phase::Closing;
                if self.session_failed {
                    self.retry.failed(now);
                } else {
                    self.retry.again(now);
                }
            }
            (Op::Login, Status::Ok) => {
                self.retry.succeeded();
                self.stage = Stage::Select;
                self.next_command(now);
            }
            (Op::Login, _) => {
                // Nothing else is sent: close, then log in again after a backoff.
                self.phase = Phase::Closing;
                self.retry.failed(now);
            }
            (Op::Select, Status::Ok) if self.stage == Stage::Select => {
                self.stage = Stage::LearnUids;
                self.next_command(now);
            }
            (Op::Select, _) if self.stage == Stage::Select => {
                self.session_failed = true;
                self.logout();
            }
            (Op::Search, _) if self.stage == Stage::LearnUids => {
                self.stage = Stage::Mix;
                self.next_command(now);
            }
            _ => self.next_command(now),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Commands

    /// Issues the session's next command, or LOGOUT when the budget (or the
    /// churn session length) is used up.
    fn next_command(&mut self, now: Instant) {
        let session_over = self.cfg.sessions == SessionMode::Churn
            && self.session_commands >= self.cfg.commands_per_session;
        if self.budget == 0 || session_over {
            if self.stage == Stage::Login {
                // Not logged in: nothing to log out of.
                self.phase = Phase::Closing;
                self.retry.again(now);
            } else {
                self.logout();
            }
            return;
        }
        let op = match self.stage {
            Stage::Login => Op::Login,
            Stage::Select => Op::Select,
            Stage::LearnUids => Op::Search,
            Stage::Mix => match self.cfg.mix.choose(&mut self.rng) {
                MixOp::Select => Op::Select,
                MixOp::Fetch | MixOp::Store if self.uids.is_empty() => Op::Noop,
                MixOp::Fetch => Op::Fetch,
                MixOp::Store => Op::Store,
                MixOp::Search => Op::Search,
                MixOp::Append => Op::Append,
                MixOp::Idle => Op::Idle,
                MixOp::Noop => Op::Noop,
            },
        };
        self.budget -= 1;
        self.session_commands += 1;
        self.issue(op);
    }

    fn logout(&mut self) {
        self.issue(Op::Logout);
    }

    /// Writes `op`'s command into the outbox and marks it in flight.
    fn issue(&mut self, op: Op) {
        self.next_tag += 1;
        let tag = self.next_tag;
        let learn_uids = op == Op::Search && self.stage == Stage::LearnUids;
        if learn_uids {
            self.uids.clear();
        }
        let literal_plus = self.literal_plus;
        let uid = if self.uids.is_empty() {
            0
        } else {
            self.uids[self.rng.below(self.uids.len() as u64) as usize]
        };
        let out = self.outbox.start();
        // Writing into a Vec cannot fail.
        let _ = write!(out, "a{tag} ");
        match op {
            Op::Login => {
                out.extend_from_slice(b"LOGIN ");
                let (login, password) = (self.user.login.as_bytes(), self.user.password.expose());
                astring(&mut self.outbox, login, literal_plus);
                self.outbox.buf_mut().push(b' ');
                astring(&mut self.outbox, password.as_bytes(), literal_plus);
                self.outbox.buf_mut().extend_from_slice(b"\r\n");
            }
            Op::Select => {
                out.extend_from_slice(b"SELECT ");
                astring(&mut self.outbox, self.cfg.mailbox.as_bytes(), literal_plus);
                self.outbox.buf_mut().extend_from_slice(b"\r\n");
            }
            Op::Search if learn_uids => out.extend_from_slice(b"UID SEARCH ALL\r\n"),
            Op::Search => {
                if self.search_body {
                    let _ = write!(out, "UID SEARCH BODY \"{SEARCH_WORD}\"\r\n");
                } else {
                    out.extend_from_slice(b"UID SEARCH UNSEEN\r\n");
                }
                self.search_body = !self.search_body;
            }
            Op::Fetch => {
                let _ = write!(out, "UID FETCH {uid} (FLAGS BODY.PEEK[])\r\n");
            }
            Op::Store => {
                let sign = if self.store_add { '+' } else { '-' };
                let _ = write!(out, "UID STORE {uid} {sign}FLAGS (\\Flagged)\r\n");
                self.store_add = !self.store_add;
            }
            Op::Append => {
                out.extend_from_slice(b"APPEND ");
                astring(&mut self.outbox, self.cfg.mailbox.as_bytes(), literal_plus);
                let size = self.cfg.append_size_bytes;
                let out = self.outbox.buf_mut();
                if literal_plus {
                    let _ = write!(out, " {{{size}+}}\r\n");
                } else {
                    let _ = write!(out, " {{{size}}}\r\n");
                    self.outbox.hold_here();
                }
                self.appends += 1;
                let seq = self.appends;
                let out = self.outbox.buf_mut();
                write_message(out, size, self.date, self.run_id, seq);
                out.extend_from_slice(b"\r\n");
            }
            Op::Idle => {
                out.extend_from_slice(b"IDLE\r\n");
                self.outbox.hold_here();
                self.outbox.buf_mut().extend_from_slice(b"DONE\r\n");
            }
            Op::Noop => out.extend_from_slice(b"NOOP\r\n"),
            Op::Logout => out.extend_from_slice(b"LOGOUT\r\n"),
        }
        self.outbox.seal();
        self.inflight = Some(Inflight {
            op,
            tag,
            learn_uids,
        });
        self.phase = Phase::Command;
    }

    fn reset_connection(&mut self) {
        self.reader.reset();
        self.carry.clear();
        self.outbox.clear();
        self.inflight = None;
        self.idle_done_at = None;
    }

    /// Ends the connection after a failure: the command in flight is aborted.
    fn fail(&mut self, now: Instant, rec: &mut Recorder) {
        if let Some(inflight) = self.inflight {
            rec.abort(inflight.op as usize);
        }
        self.reset_connection();
        self.phase = Phase::Disconnected;
        self.retry.failed(now);
    }
}

/// `aN` with N = `expected`.
fn tag_matches(tag: &[u8], expected: u64) -> bool {
    let Some(digits) = tag.strip_prefix(b"a") else {
        return false;
    };
    !digits.is_empty()
        && digits.len() <= 20
        && digits.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse::<u64>().ok())
            == Some(expected)
}

/// Appends `value` as a quoted string, or as a literal when it holds bytes a
/// quoted string cannot (CR, LF, NUL, 8-bit): `{n+}` with LITERAL+, else a
/// synchronizing `{n}` whose bytes wait for the server's `+`.
fn astring(outbox: &mut Outbox, value: &[u8], literal_plus: bool) {
    let quotable = value
        .iter()
        .all(|&b| (1..0x80).contains(&b) && b != b'\r' && b != b'\n');
    let out = outbox.buf_mut();
    if quotable {
        out.push(b'"');
        for &b in value {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else if literal_plus {
        let _ = write!(out, "{{{}+}}\r\n", value.len());
        out.extend_from_slice(value);
    } else {
        let _ = write!(out, "{{{}}}\r\n", value.len());
        outbox.hold_here();
        outbox.buf_mut().extend_from_slice(value);
    }
}

impl SlotClient for ImapClient<'_> {
    type Error = ImapClientError;

    fn next_connect_at(&self) -> Option<Instant> {
        (self.phase == Phase::Disconnected && !self.retry.stopped && self.budget > 0)
            .then_some(self.retry.connect_at)
    }

    fn timer_at(&self) -> Option<Instant> {
        if !matches!(self.phase, Phase::Greeting | Phase::Command) {
            return None;
        }
        let overdue_at = self.last_progress + REPLY_TIMEOUT;
        Some(
            self.idle_done_at
                .map_or(overdue_at, |at| at.min(overdue_at)),
        )
    }

    fn on_connected(&mut self, now: Instant, rec: &mut Recorder) {
        rec.connected();
        self.retry.connected();
        self.reset_connection();
        self.phase = Phase::Greeting;
        self.stage = Stage::Login;
        self.session_commands = 0;
        self.session_failed = false;
        self.literal_plus = false;
        self.uids.clear();
        self.next_tag = 0;
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
    ) -> Result<(), ImapClientError> {
        self.last_progress = now;
        let mut carry = std::mem::take(&mut self.carry);
        let line_bytes_max = self.reader.limits().line_bytes_max;
        let result = feed(&mut carry, data, line_bytes_max, |bytes| {
            let used = self.process(bytes, now, rec)?;
            // Once the session stops reading, nothing is carried.
            let reading = matches!(self.phase, Phase::Greeting | Phase::Command);
            Ok(if reading { used } else { bytes.len() })
        });
        self.carry = carry;
        result
    }

    fn on_timer(&mut self, now: Instant, _rec: &mut Recorder) -> Result<(), ImapClientError> {
        if self.idle_done_at.is_some_and(|at| at <= now) {
            self.idle_done_at = None;
            self.outbox.release();
        }
        if now.saturating_duration_since(self.last_progress) >= REPLY_TIMEOUT {
            return Err(ImapClientError::Timeout {
                waiting: self.waiting(),
                timeout: REPLY_TIMEOUT,
            });
        }
        Ok(())
    }

    fn on_eof(&mut self, now: Instant, rec: &mut Recorder) {
        if self.inflight.is_some_and(|i| i.op == Op::Logout) {
            // BYE, then the close before the tagged OK: a clean end all the same.
            rec.abort(Op::Logout as usize);
            self.reset_connection();
            self.phase = Phase::Disconnected;
            if self.session_failed {
                self.retry.failed(now);
            } else {
                self.retry.again(now);
            }
        } else if self.phase == Phase::Closing {
            self.on_closed(now);
        } else {
            self.on_connection_lost(&"unexpected end of stream", now, rec);
        }
    }

    fn on_connection_lost(&mut self, error: &dyn Display, now: Instant, rec: &mut Recorder) {
        let (target, waiting) = (self.cfg.target, self.waiting());
        rec.error(|| format!("connection to {target} lost while waiting for {waiting}: {error}"));
        self.fail(now, rec);
    }

    fn on_deadline(&mut self, rec: &mut Recorder) {
        if let Some(inflight) = self.inflight {
            rec.abort(inflight.op as usize);
        }
        self.reset_connection();
        self.phase = Phase::Disconnected;
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
        self.phase == Phase::Closing
    }

    fn on_closed(&mut self, _now: Instant) {
        self.reset_connection();
        self.phase = Phase::Disconnected;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::args::parse_imap_args;
    use crate::mailrun::empty_outcome;
    use crate::outcome::Outcome;
    use crate::progress::Progress;

    fn config(extra: &[&str]) -> ImapConfig {
        let mut args = vec![
            "--target",
            "127.0.0.1:143",
            "--user",
            "alice@x.test:pass\"word",
        ];
        args.extend_from_slice(extra);
        parse_imap_args(args.iter().map(|s| s.to_string()), 1).unwrap()
    }

    fn template(cfg: &ImapConfig) -> Outcome {
        empty_outcome(
            "imap",
            &cfg.output,
            &cfg.target_text,
            cfg.describe(),
            "all",
            &OPS,
            cfg.duration,
        )
    }

    /// A client and its recorder, driven by hand.
    struct Harness<'a> {
        client: ImapClient<'a>,
        rec: Recorder<'a>,
        now: Instant,
    }

    impl<'a> Harness<'a> {
        fn new(cfg: &'a ImapConfig, progress: &'a Progress, budget: u64) -> Self {
            let now = Instant::now();
            let mut h = Harness {
                client: ImapClient::new(
                    cfg,
                    0,
                    budget,
                    "Thu, 01 Jan 1970 00:00:00 +0000",
                    1,
                    Rng::new(3),
                    now,
                ),
                rec: Recorder::new(template(cfg), progress, now, None),
                now,
            };
            h.connect();
            h
        }

        fn connect(&mut self) {
            assert!(self.client.next_connect_at().is_some());
            self.client.on_connected(self.now, &mut self.rec);
        }

        fn tick(&mut self, ms: u64) {
            self.now += Duration::from_millis(ms);
        }

        /// Everything the client wants written, marked written.
        fn sent(&mut self) -> String {
            let out = String::from_utf8_lossy(self.client.output()).into_owned();
            let n = out.len();
            self.client.on_written(n, self.now);
            out
        }

        fn recv(&mut self, data: &[u8]) -> Result<(), ImapClientError> {
            self.client.on_received(data, self.now, &mut self.rec)
        }

        fn op(&self, op: Op) -> (u64, u64, u64, u64) {
            let o = &self.rec.outcome.ops[op as usize];
            (o.ok, o.tempfail, o.permfail, o.aborted)
        }

        /// LOGIN, SELECT and UID SEARCH ALL answered; the mailbox holds `uids`.
        fn start_session(&mut self, uids: &str) {
            self.recv(b"* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n")
                .unwrap();
            assert_eq!(
                self.sent(),
                "a1 LOGIN \"alice@x.test\" \"pass\\\"word\"\r\n"
            );
            self.recv(b"a1 OK [CAPABILITY IMAP4rev1 IDLE UIDPLUS] Logged in\r\n")
                .unwrap();
            assert_eq!(self.sent(), "a2 SELECT \"INBOX\"\r\n");
            self.recv(b"* 3 EXISTS\r\n* OK [UIDNEXT 9] x\r\na2 OK [READ-WRITE] done\r\n")
                .unwrap();
            assert_eq!(self.sent(), "a3 UID SEARCH ALL\r\n");
            self.recv(format!("* SEARCH {uids}\r\na3 OK done\r\n").as_bytes())
                .unwrap();
        }
    }

    #[test]
    fn session_learns_uids_runs_the_mix_and_logs_out_at_the_budget() {
        let cfg = config(&["--mix", "fetch=1,store=1,search=1,noop=1"]);
        let progress = Progress::default();
        let mut h = Harness::new(&cfg, &progress, 9);
        h.start_session("4 7 9");
        assert_eq!(h.client.uids, [4, 7, 9]);
        let mut seen = Vec::new();
        for n in 4..=9 {
            let line = h.sent();
            let (tag, command) = line.split_once(' ').unwrap();
            assert_eq!(tag, format!("a{n}"));
            seen.push(command.to_string());
            if command.starts_with("UID FETCH") {
                let uid: u32 = command.split(' ').nth(2).unwrap().parse().unwrap();
                assert!([4, 7, 9].contains(&uid), "{command}");
                assert!(command.ends_with(" (FLAGS BODY.PEEK[])\r\n"), "{command}");
                h.recv(
                    format!("* 2 FETCH (UID {uid} BODY[] {{7}}\r\na9 OK\r\n)\r\n{tag} OK done\r\n")
                        .as_bytes(),
                )
                .unwrap();
            } else {
                h.recv(format!("{tag} OK done\r\n").as_bytes()).unwrap();
            }
        }
        assert_eq!(h.sent(), "a10 LOGOUT\r\n");
        assert!(h.client.next_connect_at().is_none(), "budget spent");
        h.recv(b"* BYE bye\r\na10 OK done\r\n").unwrap();
        assert!(h.client.is_closing());
        let completed: u64 = h.rec.outcome.ops.iter().map(|o| o.ok).sum();
        assert_eq!(completed, 10);
        // The worker loop reports once per turn; the test drives the client alone.
        h.rec.report_progress();
        assert_eq!(progress.completed(), 10);
        assert_eq!(h.op(Op::Login), (1, 0, 0, 0));
        assert_eq!(h.op(Op::Logout), (1, 0, 0, 0));
        // Every mix op showed up with the right shape.
        let stores: Vec<&String> = seen.iter().filter(|c| c.starts_with("UID STORE")).collect();
        for (i, s) in stores.iter().enumerate() {
            let sign = if i % 2 == 0 { "+FLAGS" } else { "-FLAGS" };
            assert!(s.contains(sign) && s.ends_with("(\\Flagged)\r\n"), "{s}");
        }
        let searches: Vec<&String> = seen
            .iter()
            .filter(|c| c.starts_with("UID SEARCH"))
            .collect();
        for (i, s) in searches.iter().enumerate() {
            let want = if i % 2 == 0 {
                "UID SEARCH BODY \"loadgen\"\r\n"
            } else {
                "UID SEARCH UNSEEN\r\n"
            };
            assert_eq!(s.as_str(), want);
        }
        assert_eq!(h.rec.outcome.timeline.counts.iter().sum::<u64>(), 10);
        assert_eq!(h.rec.outcome.errors, 0);
    }

    #[test]
    fn responses_split_at_every_byte_give_the_same_outcome() {
        let cfg = config(&["--mix", "fetch=1"]);
        let server: &[&[u8]] = &[
            b"* OK [CAPABILITY IMAP4rev1] hi\r\n",
            b"a1 OK in\r\n",
            b"* 1 EXISTS\r\na2 OK sel\r\n",
            b"* SEARCH 5\r\na3 OK s\r\n",
            b"* 1 FETCH (UID 5 BODY[] {12}\r\na4 OK fake\r\n FLAGS ())\r\na4 OK f\r\n",
            b"* BYE x\r\na5 OK out\r\n",
        ];
        let total: usize = server.iter().map(|step| step.len()).sum();
        for at in 0..total {
            let progress = Progress::default();
            let mut h = Harness::new(&cfg, &progress, 4);
            let mut transcript = String::new();
            let mut offset = 0;
            for step in server {
                // The step holding byte `at` arrives in two reads (or byte by byte).
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
                "a1 LOGIN \"alice@x.test\" \"pass\\\"word\"\r\na2 SELECT \"INBOX\"\r\na3 UID SEARCH ALL\r\na4 UID FETCH 5 (FLAGS BODY.PEEK[])\r\na5 LOGOUT\r\n",
                "split at {at}"
            );
            assert!(h.client.is_closing(), "split at {at}");
            assert_eq!(h.op(Op::Fetch), (1, 0, 0, 0), "split at {at}");
        }
    }

    #[test]
    fn wrong_password_is_a_tempfail_and_nothing_else_is_sent() {
        let cfg = config(&[]);
        let progress = Progress::default();
        let mut h = Harness::new(&cfg, &progress, 100);
        h.recv(b"* OK hi\r\n").unwrap();
        assert!(h.sent().starts_with("a1 LOGIN "));
        h.recv(b"a1 NO [AUTHENTICATIONFAILED] no\r\n").unwrap();
        assert_eq!(h.sent(), "");
        assert!(h.client.is_closing());
        h.client.on_closed(h.now);
        assert_eq!(h.op(Op::Login), (0, 1, 0, 0));
        assert_eq!(h.rec.outcome.errors, 0);
        let at = h.client.next_connect_at().unwrap();
        assert!(at > h.now, "reconnects after a backoff");
        assert_eq!(h.rec.outcome.timeline.counts.iter().sum::<u64>(), 0);
    }

    #[test]
    fn empty_mailbox_sends_noop_for_fetch_and_store() {
        let cfg = config(&["--mix", "fetch=1,store=1"]);
        let progress = Progress::default();
        let mut h = Harness::new(&cfg, &progress, 6);
        h.start_session("");
        assert!(h.client.uids.is_empty());
        for n in 4..=6 {
            assert_eq!(h.sent(), format!("a{n} NOOP\r\n"));
            h.recv(format!("a{n} OK\r\n").as_bytes()).unwrap();
        }
        assert_eq!(h.op(Op::Noop), (3, 0, 0, 0));
        assert_eq!(h.op(Op::Fetch), (0, 0, 0, 0));
    }

    #[test]
    fn append_waits_for_the_continuation_without_literal_plus() {
        let cfg = config(&["--mix", "append=1", "--append-size", "300"]);
        let progress = Progress::default();
        let mut h = Harness::new(&cfg, &progress, 5);
        h.start_session("1");
        h.tick(1);
        assert_eq!(h.sent(), "a4 APPEND \"INBOX\" {300}\r\n");
        let sent_at = h.now;
        assert_eq!(h.sent(), "", "the message waits for +");
        h.tick(2);
        h.recv(b"+ go ahead\r\n").unwrap();
        let message = h.sent();
        assert_eq!(message.len(), 302);
        assert!(message.ends_with("\r\n"));
        h.tick(3);
        h.recv(b"a4 OK [APPENDUID 1 77] done\r\n").unwrap();
        assert_eq!(h.client.uids, [1, 77]);
        assert_eq!(h.op(Op::Append), (1, 0, 0, 0));
        let latency = h.rec.outcome.ops[Op::Append as usize].latency.max_us();
        assert_eq!(latency, (h.now - sent_at).as_micros() as u64);
        // A refused literal: NO instead of +, the message is never sent.
        assert_eq!(h.sent(), "a5 APPEND \"INBOX\" {300}\r\n");
        h.recv(b"a5 NO [TOOBIG] too big\r\n").unwrap();
        assert_eq!(h.op(Op::Append), (1, 1, 0, 0));
        assert_eq!(h.sent(), "a6 LOGOUT\r\n");
    }

    #[test]
    fn append_with_literal_plus_goes_in_one_write() {
        let cfg = config(&["--mix", "append=1", "--append-size", "256"]);
        let progress = Progress::default();
        let mut h = Harness::new(&cfg, &progress, 4);
        h.recv(b"* OK [CAPABILITY IMAP4rev1 LITERAL+] hi\r\na1 OK in\r\n")
            .unwrap();
        h.sent();
        h.recv(b"a2 OK sel\r\n").unwrap();
        h.sent();
        h.recv(b"a3 OK s\r\n").unwrap();
        let out = h.sent();
        assert!(
            out.starts_with("a4 APPEND \"INBOX\" {256+}\r\nFrom: "),
            "{out}"
        );
        assert_eq!(out.len(), "a4 APPEND \"INBOX\" {256+}\r\n".len() + 256 + 2);
        assert!(out.contains("Subject: loadgen append 1\r\n"));
    }

    #[test]
    fn login_literals_when_the_password_cannot_be_quoted() {
        let mut cfg = config(&[]);
        cfg.users[0].password = crate::mailrun::Secret::new("p\u{e9}w");
        let progress = Progress::default();
        let mut h = Harness::new(&cfg, &progress, 2);
        h.recv(b"* OK hi\r\n").unwrap();
        assert_eq!(h.sent(), "a1 LOGIN \"alice@x.test\" {4}\r\n");
        h.recv(b"+ ok\r\n").unwrap();
        assert_eq!(h.sent(), "p\u{e9}w\r\n");
        assert!(h.recv(b"+ again\r\n").is_err(), "a second + is unexpected");
    }

    #[test]
    fn idle_sends_done_after_its_timer() {
        let cfg = config(&["--mix", "idle=1"]);
        let progress = Progress::default();
        let mut h = Harness::new(&cfg, &progress, 4);
        h.start_session("");
        assert_eq!(h.sent(), "a4 IDLE\r\n");
        h.recv(b"+ idling\r\n").unwrap();
        assert_eq!(h.sent(), "");
        assert_eq!(h.client.timer_at(), Some(h.now + IDLE_DURATION));
        h.recv(b"* 4 EXISTS\r\n").unwrap();
        h.tick(100);
        h.client.on_timer(h.now, &mut h.rec).unwrap();
        assert_eq!(h.sent(), "DONE\r\n");
        h.recv(b"a4 OK idle done\r\n").unwrap();
        assert_eq!(h.op(Op::Idle), (1, 0, 0, 0));
        assert!(h.rec.outcome.ops[Op::Idle as usize].latency.max_us() >= 100_000);
    }

    #[test]
    fn bye_mid_session_aborts_and_reconnects_with_backoff() {
        let cfg = config(&["--mix", "noop=1"]);
        let progress = Progress::default();
        let mut h = Harness::new(&cfg, &progress, 50);
        h.start_session("1");
        assert_eq!(h.sent(), "a4 NOOP\r\n");
        let e = h.recv(b"* BYE shutting down\r\n").unwrap_err();
        assert!(
            matches!(
                e,
                ImapClientError::Bye {
                    waiting: "noop",
                    ..
                }
            ),
            "{e}"
        );
        h.client.on_connection_lost(&e, h.now, &mut h.rec);
        assert_eq!(h.op(Op::Noop), (0, 0, 0, 1));
        assert_eq!((h.rec.outcome.errors, progress.errors()), (1, 1));
        assert!(h
            .rec
            .outcome
            .first_error
            .as_deref()
            .unwrap()
            .contains("BYE"));
        assert_eq!(
            h.client.next_connect_at(),
            Some(h.now + Duration::from_millis(1))
        );
        // The next session starts from LOGIN again.
        h.connect();
        h.start_session("1");
        assert_eq!(h.op(Op::Login), (2, 0, 0, 0));
    }

    #[test]
    fn protocol_violations_are_errors() {
        let cfg = config(&[]);
        let progress = Progress::default();
        for bad in [
            &b"* BYE go away\r\n"[..],
            b"* NO busy\r\n",
            b"a1 OK early\r\n",
            b"+ what\r\n",
            b"garbage\r\n",
        ] {
            let mut h = Harness::new(&cfg, &progress, 5);
            assert!(h.recv(bad).is_err(), "{bad:?} as greeting");
        }
        let mut h = Harness::new(&cfg, &progress, 5);
        h.recv(b"* OK hi\r\n").unwrap();
        h.sent();
        assert!(h.recv(b"a7 OK wrong tag\r\n").is_err());
    }

    #[test]
    fn churn_logs_out_after_the_session_length_and_reconnects_at_once() {
        let cfg = config(&[
            "--sessions",
            "churn",
            "--commands-per-session",
            "4",
            "--mix",
            "noop=1",
        ]);
        let progress = Progress::default();
        let mut h = Harness::new(&cfg, &progress, 100);
        h.start_session("");
        assert_eq!(h.sent(), "a4 NOOP\r\n");
        h.recv(b"a4 OK\r\n").unwrap();
        assert_eq!(h.sent(), "a5 LOGOUT\r\n");
        h.recv(b"* BYE\r\na5 OK\r\n").unwrap();
        assert!(h.client.is_closing());
        h.client.on_closed(h.now);
        assert_eq!(h.client.next_connect_at(), Some(h.now));
        assert_eq!(h.client.budget, 96);
    }

    #[test]
    fn deadline_and_silence() {
        let cfg = config(&[]);
        let progress = Progress::default();
        let mut h = Harness::new(&cfg, &progress, 5);
        h.recv(b"* OK hi\r\n").unwrap();
        h.sent();
        h.tick(29_999);
        assert!(h.client.on_timer(h.now, &mut h.rec).is_ok());
        h.tick(1);
        assert!(matches!(
            h.client.on_timer(h.now, &mut h.rec),
            Err(ImapClientError::Timeout {
                waiting: "login",
                ..
            })
        ));
        h.client.on_deadline(&mut h.rec);
        assert_eq!(h.op(Op::Login), (0, 0, 0, 1));
        assert!(h.client.next_connect_at().is_none());
    }
}
