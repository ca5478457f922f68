//! Sans-IO SMTP client for one connection slot: greeting, EHLO (HELO fallback),
//! STARTTLS and EHLO again (`--starttls`), AUTH PLAIN or LOGIN (`--auth`), then
//! transactions (MAIL, RCPT × n, DATA, message, `.`), RSET after a failed
//! transaction, QUIT at the end of its work or of `--per-connection`. The
//! driver feeds it bytes and time and writes what it queues; the client keeps
//! the slot's work, retry policy and counters across reconnects. TLS itself is
//! the driver's: after the `220` to STARTTLS the client waits
//! ([`Client::wants_tls`]) until the driver reports the handshake done
//! ([`Client::on_tls_established`]).
//!
//! Work comes either from a share of sequence numbers (closed loop: the next
//! transaction starts as soon as the previous one ends) or from the driver's
//! open-loop schedule (`--rate`: the client waits in `Ready` until the driver
//! hands it a due message with [`Client::begin`]).
//!
//! With pipelining, MAIL + every RCPT + DATA go out in one write and the
//! replies are matched in order (RFC 2920); the message and the terminating
//! `.\r\n` go out in a second write. Message latency is measured from the
//! moment the last byte of `\r\n.\r\n` was handed to the kernel to the final
//! reply (from the MAIL command when the transaction ended before DATA), plus,
//! in open loop, how late the transaction started.

use std::fmt::Display;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::args::{AuthMechanism, PipeliningMode, SmtpConfig};
use crate::mailrun::{Credentials, Retry};
use crate::message::{MessageError, MessageTemplate, SizeSpec};
use crate::rate::{is_late, lateness};
use crate::reply::{ehlo_has_keyword, excerpt, parse_reply, Parsed, ReplyError};
use crate::stats::{count_class, Stats};
use crate::tls::TlsMode;

/// A connection waiting this long for a reply (or to write) is dropped.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Unparsed reply bytes buffered at most (a reply without its end is bounded by the parser too).
pub const REPLY_BYTES_MAX: usize = 64 * 1024;
/// Largest message buffer kept allocated between messages.
const OUT_CAPACITY_MAX: usize = 1 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClientError {
    #[error("bad reply while waiting for {state}: {source}")]
    Reply {
        state: &'static str,
        #[source]
        source: ReplyError,
    },
    #[error("unexpected reply {code} while waiting for {state}: {excerpt:?}")]
    Unexpected {
        state: &'static str,
        code: u16,
        excerpt: String,
    },
    #[error("server closed the session ({code}) while waiting for {state}: {excerpt:?}")]
    ServerClosing {
        state: &'static str,
        code: u16,
        excerpt: String,
    },
    #[error("reply larger than {REPLY_BYTES_MAX} bytes while waiting for {state}")]
    ReplyTooLarge { state: &'static str },
    #[error("{bytes} plaintext bytes after the 220 to STARTTLS (injection?)")]
    PlaintextAfterStartTls { bytes: usize },
    #[error("cannot build message {seq}: {source}")]
    Message {
        seq: u64,
        #[source]
        source: MessageError,
    },
}

/// What the client waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No connection.
    Idle,
    Greeting,
    Ehlo,
    Helo,
    /// Reply to STARTTLS.
    StartTls,
    /// The driver is doing the TLS handshake.
    TlsHandshake,
    /// Reply to `AUTH PLAIN <response>`.
    AuthPlain,
    /// `334` to `AUTH LOGIN` (then the user name goes out).
    AuthLoginUser,
    /// `334` to the user name (then the password goes out).
    AuthLoginPassword,
    /// Final reply to AUTH LOGIN.
    AuthLoginResult,
    /// Open loop: in session, waiting for the driver to hand over a due message.
    Ready,
    Mail,
    /// Reply to the RCPT with this index.
    Rcpt(u32),
    Data,
    /// Final reply to the message.
    Dot,
    Rset,
    Quit,
    /// QUIT answered: the driver closes the socket.
    Closing,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Idle => "connection",
            State::Greeting => "greeting",
            State::Ehlo => "EHLO reply",
            State::Helo => "HELO reply",
            State::StartTls => "STARTTLS reply",
            State::TlsHandshake => "TLS handshake",
            State::AuthPlain | State::AuthLoginResult => "AUTH reply",
            State::AuthLoginUser => "AUTH LOGIN user name prompt",
            State::AuthLoginPassword => "AUTH LOGIN password prompt",
            State::Ready => "next message (idle)",
            State::Mail => "MAIL reply",
            State::Rcpt(_) => "RCPT reply",
            State::Data => "DATA reply",
            State::Dot => "end-of-data reply",
            State::Rset => "RSET reply",
            State::Quit => "QUIT reply",
            State::Closing => "close",
        }
    }

    fn is_auth(self) -> bool {
        matches!(
            self,
            State::AuthPlain
                | State::AuthLoginUser
                | State::AuthLoginPassword
                | State::AuthLoginResult
        )
    }
}

/// A message of the open-loop schedule: its sequence number and due time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub seq: u64,
    pub due: Instant,
}

/// Where the slot's messages come from.
#[derive(Clone, Copy, Debug)]
enum Work {
    /// Closed loop: sequence numbers `next..end`.
    Share { next: u64, end: u64 },
    /// Open loop: the driver hands over tokens; `more` until its schedule is exhausted.
    Paced { more: bool, token: Option<Token> },
}

impl Work {
    fn left(&self) -> bool {
        match *self {
            Work::Share { next, end } => next < end,
            Work::Paced { more, token } => more || token.is_some(),
        }
    }
}

/// The transaction in flight.
#[derive(Clone, Copy, Debug)]
struct Txn {
    seq: u64,
    /// First 4xx/5xx among MAIL and RCPT replies.
    first_failure: Option<u16>,
    rcpts_accepted: u32,
    /// When MAIL was queued.
    started_at: Instant,
    /// Open loop: how late it started.
    lateness: Duration,
}

/// One connection slot: sends its messages over as many sessions as
/// `--per-connection` and failures require.
pub struct Client<'a> {
    cfg: &'a SmtpConfig,
    template: &'a MessageTemplate,
    /// Connection slot number (picks the AUTH credentials).
    slot: usize,
    work: Work,
    session_messages: u64,
    state: State,
    pipelining: bool,
    /// STARTTLS done in this session.
    tls_active: bool,
    txn: Option<Txn>,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    /// Offset in `out` just past the `.\r\n` of the message being written.
    dot_end: Option<usize>,
    dot_sent_at: Option<Instant>,
    last_progress: Instant,
    /// When the connection attempt of the session being set up started.
    setup_started: Option<Instant>,
    auth_started: Option<Instant>,
    /// The session is closing because it failed (AUTH refused): retry with backoff.
    session_failed: bool,
    /// Reconnect backoff; "connected" once a session got ready for MAIL, so
    /// a slot that never did (target down, TLS or AUTH refused) gives up
    /// after [`FIRST_CONNECT_ATTEMPTS_MAX`](crate::mailrun::FIRST_CONNECT_ATTEMPTS_MAX) attempts.
    retry: Retry,
}

impl<'a> Client<'a> {
    /// Closed loop: slot `slot` will send `count` messages numbered from `seq_start`.
    pub fn new(
        cfg: &'a SmtpConfig,
        template: &'a MessageTemplate,
        slot: usize,
        seq_start: u64,
        count: u64,
        now: Instant,
    ) -> Self {
        let work = Work::Share {
            next: seq_start,
            end: seq_start + count,
        };
        Self::with_work(cfg, template, slot, work, now)
    }

    /// Open loop: slot `slot` sends the messages the driver hands it with [`Client::begin`].
    pub fn new_paced(
        cfg: &'a SmtpConfig,
        template: &'a MessageTemplate,
        slot: usize,
        now: Instant,
    ) -> Self {
        let work = Work::Paced {
            more: true,
            token: None,
        };
        Self::with_work(cfg, template, slot, work, now)
    }

    fn with_work(
        cfg: &'a SmtpConfig,
        template: &'a MessageTemplate,
        slot: usize,
        work: Work,
        now: Instant,
    ) -> Self {
        let capacity = cfg.size.bounds().1.min(OUT_CAPACITY_MAX) + 1024;
        Self {
            cfg,
            template,
            slot,
            work,
            session_messages: 0,
            state: State::Idle,
            pipelining: false,
            tls_active: false,
            txn: None,
            inbuf: Vec::with_capacity(1024),
            out: Vec::with_capacity(capacity),
            out_pos: 0,
            dot_end: None,
            dot_sent_at: None,
            last_progress: now,
            setup_started: None,
            auth_started: None,
            session_failed: false,
            retry: Retry::new(now),
        }
    }

    /// When the driver should open the next connection (an instant in the past
    /// means now); `None` once the slot has finished or given up.
    pub fn next_connect_at(&self) -> Option<Instant> {
        (self.state == State::Idle && !self.retry.stopped && self.work.left())
            .then_some(self.retry.connect_at)
    }

    pub fn is_closing(&self) -> bool {
        self.state == State::Closing
    }

    /// True once the slot will never connect again.
    pub fn is_finished(&self) -> bool {
        self.state == State::Idle && self.next_connect_at().is_none()
    }

    /// Open loop: in session and waiting for [`Client::begin`].
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// The server said yes to STARTTLS: the driver must start the TLS
    /// handshake before writing anything else.
    pub fn wants_tls(&self) -> bool {
        self.state == State::TlsHandshake
    }

    /// Bytes queued for the server.
    pub fn output(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    /// True when the connection has waited longer than [`REPLY_TIMEOUT`].
    pub fn reply_overdue(&self, now: Instant) -> bool {
        !matches!(self.state, State::Idle | State::Closing | State::Ready)
            && now.saturating_duration_since(self.last_progress) > REPLY_TIMEOUT
    }

    /// The connection attempt that started at `started` succeeded at `now`.
    pub fn on_connected(&mut self, started: Instant, now: Instant, stats: &mut Stats) {
        debug_assert_eq!(self.state, State::Idle);
        stats.connects += 1;
        self.state = State::Greeting;
        self.tls_active = false;
        self.session_failed = false;
        self.inbuf.clear();
        self.clear_output();
        self.dot_end = None;
        self.dot_sent_at = None;
        self.session_messages = 0;
        self.setup_started = Some(started);
        self.auth_started = None;
        self.last_progress = now;
    }

    /// The TLS handshake after STARTTLS finished: EHLO again, over TLS.
    /// (Ignored for implicit TLS, where the greeting comes over TLS anyway.)
    pub fn on_tls_established(&mut self, now: Instant) {
        if self.state == State::TlsHandshake {
            self.tls_active = true;
            self.last_progress = now;
            self.command(format_args!("EHLO {}", self.cfg.helo));
            self.state = State::Ehlo;
        }
    }

    pub fn on_connect_failed(&mut self, error: &dyn Display, now: Instant, stats: &mut Stats) {
        let target = self.cfg.target;
        stats.count_error(|| format!("connect to {target}: {error}"));
        stats.session_setup.aborted += 1;
        self.schedule_retry(now);
    }

    /// The connection failed (I/O, TLS or protocol error, timeout): what was
    /// in flight is aborted and a reconnect is scheduled with backoff.
    pub fn on_connection_lost(&mut self, error: &dyn Display, now: Instant, stats: &mut Stats) {
        let (target, state) = (self.cfg.target, self.state.name());
        stats.count_error(|| {
            format!("connection to {target} lost while waiting for {state}: {error}")
        });
        self.abort_in_flight(stats);
        self.schedule_retry(now);
    }

    /// The server closed its side. Expected after QUIT; an error otherwise.
    pub fn on_eof(&mut self, now: Instant, stats: &mut Stats) {
        if matches!(self.state, State::Quit | State::Closing) {
            self.on_closed(now);
        } else {
            self.on_connection_lost(&"unexpected end of stream", now, stats);
        }
    }

    /// The driver closed the socket after QUIT.
    pub fn on_closed(&mut self, now: Instant) {
        if std::mem::take(&mut self.session_failed) {
            self.schedule_retry(now);
        } else {
            self.state = State::Idle;
            self.retry.again(now);
        }
    }

    /// The run is over: what is in flight is aborted, no more connections.
    pub fn on_deadline(&mut self, stats: &mut Stats) {
        self.abort_in_flight(stats);
        self.state = State::Idle;
        self.retry.stopped = true;
    }

    /// Open loop: the driver's schedule has no more messages. A waiting
    /// session QUITs now, a busy one after its transaction.
    pub fn on_work_exhausted(&mut self) {
        if let Work::Paced { more, .. } = &mut self.work {
            *more = false;
        }
        if self.state == State::Ready {
            self.command(format_args!("QUIT"));
            self.state = State::Quit;
        }
    }

    /// Open loop: starts the due message `token` (the client [`is_ready`](Client::is_ready)).
    pub fn begin(&mut self, token: Token, now: Instant, stats: &mut Stats) {
        debug_assert_eq!(self.state, State::Ready);
        if let Work::Paced { token: slot, .. } = &mut self.work {
            *slot = Some(token);
        }
        if self.state == State::Ready {
            self.next_transaction(now, stats);
        }
    }

    /// `n` bytes of [`Client::output`] were written at `now`.
    pub fn on_written(&mut self, n: usize, now: Instant) {
        self.out_pos += n;
        debug_assert!(self.out_pos <= self.out.len());
        self.last_progress = now;
        if self.dot_end.is_some_and(|end| self.out_pos >= end) {
            self.dot_end = None;
            self.dot_sent_at = Some(now);
        }
        if self.out_pos == self.out.len() {
            // The capacity stays for the session's next message.
            self.out.clear();
            self.out_pos = 0;
        }
    }

    /// Bytes read from the server at `now`. Queues whatever the replies call for.
    pub fn on_received(
        &mut self,
        data: &[u8],
        now: Instant,
        stats: &mut Stats,
    ) -> Result<(), ClientError> {
        self.last_progress = now;
        if self.inbuf.is_empty() {
            let used = self.process(data, now, stats)?;
            self.inbuf.extend_from_slice(&data[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.inbuf);
            buf.extend_from_slice(data);
            let used = self.process(&buf, now, stats);
            // After an error the connection is dropped: discard everything.
            let consumed = match &used {
                Ok(n) => *n,
                Err(_) => buf.len(),
            };
            buf.drain(..consumed);
            self.inbuf = buf;
            used?;
        }
        if self.state == State::TlsHandshake && !self.inbuf.is_empty() {
            // RFC 3207 §5: nothing may follow the 220 in plaintext.
            return Err(ClientError::PlaintextAfterStartTls {
                bytes: self.inbuf.len(),
            });
        }
        if self.inbuf.len() > REPLY_BYTES_MAX {
            return Err(ClientError::ReplyTooLarge {
                state: self.state.name(),
            });
        }
        Ok(())
    }

    /// Handles every complete reply at the start of `buf`; returns the bytes used.
    fn process(
        &mut self,
        buf: &[u8],
        now: Instant,
        stats: &mut Stats,
    ) -> Result<usize, ClientError> {
        let mut pos = 0;
        // Anything after the QUIT reply is of no interest; after the 220 to
        // STARTTLS the rest belongs to TLS.
        while !matches!(
            self.state,
            State::Closing | State::Idle | State::TlsHandshake
        ) {
            let parsed = parse_reply(&buf[pos..]).map_err(|source| ClientError::Reply {
                state: self.state.name(),
                source,
            })?;
            let Parsed::Complete { code, len } = parsed else {
                break;
            };
            let reply = &buf[pos..pos + len];
            pos += len;
            self.on_reply(code, reply, now, stats)?;
        }
        Ok(pos)
    }

    fn on_reply(
        &mut self,
        code: u16,
        reply: &[u8],
        now: Instant,
        stats: &mut Stats,
    ) -> Result<(), ClientError> {
        let class = code / 100;
        if code == 421 && self.state != State::Quit {
            // The server is shutting the session down (RFC 5321 §3.8).
            if self.txn.is_some() {
                self.finish(code, now, stats);
                self.state = State::Closing;
                return Ok(());
            }
            return Err(ClientError::ServerClosing {
                state: self.state.name(),
                code,
                excerpt: excerpt(reply),
            });
        }
        match self.state {
            State::Greeting if code == 220 => {
                self.command(format_args!("EHLO {}", self.cfg.helo));
                self.state = State::Ehlo;
            }
            State::Ehlo if class == 2 => {
                self.pipelining = match self.cfg.pipelining {
                    PipeliningMode::Auto => ehlo_has_keyword(reply, b"PIPELINING"),
                    PipeliningMode::Always => true,
                    PipeliningMode::Never => false,
                };
                self.after_hello(now, stats);
            }
            State::Ehlo if class == 5 => {
                self.command(format_args!("HELO {}", self.cfg.helo));
                self.state = State::Helo;
            }
            State::Helo if class == 2 => {
                self.pipelining = self.cfg.pipelining == PipeliningMode::Always;
                self.after_hello(now, stats);
            }
            State::StartTls if code == 220 => self.state = State::TlsHandshake,
            State::AuthPlain | State::AuthLoginResult if class == 2 => {
                self.auth_done(code, now, stats);
                self.session_ready(now, stats);
            }
            State::AuthLoginUser if code == 334 => {
                let login = self.credentials().map_or("", |c| c.login.as_str());
                let line = base64(login.as_bytes());
                self.command(format_args!("{line}"));
                self.state = State::AuthLoginPassword;
            }
            State::AuthLoginPassword if code == 334 => {
                let password = self.credentials().map_or("", |c| c.password.expose());
                let line = base64(password.as_bytes());
                self.command(format_args!("{line}"));
                self.state = State::AuthLoginResult;
            }
            state if state.is_auth() && (class == 4 || class == 5) => {
                self.auth_refused(code, reply, now, stats);
            }
            State::Mail if class == 2 || class == 4 || class == 5 => {
                let failed = class != 2;
                if failed {
                    self.txn_mut(now).first_failure.get_or_insert(code);
                }
                if self.pipelining {
                    self.state = State::Rcpt(0);
                } else if failed {
                    // No transaction was opened: nothing to reset.
                    self.finish(code, now, stats);
                    self.next_transaction(now, stats);
                } else {
                    self.rcpt(0);
                    self.state = State::Rcpt(0);
                }
            }
            State::Rcpt(index) if class == 2 || class == 4 || class == 5 => {
                let txn = self.txn_mut(now);
                if class == 2 {
                    txn.rcpts_accepted += 1;
                } else {
                    txn.first_failure.get_or_insert(code);
                }
                let (accepted, first_failure) = (txn.rcpts_accepted, txn.first_failure);
                let next = index + 1;
                if next < self.cfg.recipients {
                    if !self.pipelining {
                        self.rcpt(next);
                    }
                    self.state = State::Rcpt(next);
                } else if self.pipelining {
                    self.state = State::Data;
                } else if accepted == 0 {
                    self.finish(first_failure.unwrap_or(code), now, stats);
                    self.reset();
                } else {
                    self.command(format_args!("DATA"));
                    self.state = State::Data;
                }
            }
            State::Data if code == 354 => {
                self.queue_message(now, stats)?;
                self.state = State::Dot;
            }
            State::Data if class == 4 || class == 5 => {
                // Pipelined DATA after a failed MAIL or no accepted RCPT gets 503/554:
                // the message's fate is the first failure.
                let outcome = self.txn_mut(now).first_failure.unwrap_or(code);
                self.finish(outcome, now, stats);
                self.reset();
            }
            State::Dot if class == 2 || class == 4 || class == 5 => {
                self.finish(code, now, stats);
                self.next_transaction(now, stats);
            }
            State::Rset if class == 2 => self.next_transaction(now, stats),
            State::Quit => self.state = State::Closing,
            state => {
                return Err(ClientError::Unexpected {
                    state: state.name(),
                    code,
                    excerpt: excerpt(reply),
                })
            }
        }
        Ok(())
    }

    /// After a 2xx to EHLO/HELO: STARTTLS, AUTH, or ready for MAIL.
    fn after_hello(&mut self, now: Instant, stats: &mut Stats) {
        let starttls = self.cfg.tls.as_ref().map(|t| t.mode) == Some(TlsMode::StartTls);
        if starttls && !self.tls_active {
            self.command(format_args!("STARTTLS"));
            self.state = State::StartTls;
            return;
        }
        // Only EHLO/HELO replies lead here, and a session never says EHLO
        // again after AUTH: no need to remember that it authenticated.
        if let Some(auth) = &self.cfg.auth {
            self.auth_started = Some(now);
            match auth.mechanism {
                AuthMechanism::Plain => {
                    let (login, password) = self
                        .credentials()
                        .map_or(("", ""), |c| (c.login.as_str(), c.password.expose()));
                    let mut response = Vec::with_capacity(login.len() + password.len() + 2);
                    response.push(0);
                    response.extend_from_slice(login.as_bytes());
                    response.push(0);
                    response.extend_from_slice(password.as_bytes());
                    let line = base64(&response);
                    self.command(format_args!("AUTH PLAIN {line}"));
                    self.state = State::AuthPlain;
                }
                AuthMechanism::Login => {
                    self.command(format_args!("AUTH LOGIN"));
                    self.state = State::AuthLoginUser;
                }
            }
            return;
        }
        self.session_ready(now, stats);
    }

    fn credentials(&self) -> Option<&'a Credentials> {
        let users = &self.cfg.auth.as_ref()?.users;
        users.get(self.slot % users.len().max(1))
    }

    fn auth_done(&mut self, code: u16, now: Instant, stats: &mut Stats) {
        let started = self.auth_started.take().unwrap_or(now);
        count_class(
            &mut stats.auth,
            code,
            now.saturating_duration_since(started),
        );
    }

    /// AUTH got a 4xx/5xx: counted, the session QUITs and the slot retries with backoff.
    fn auth_refused(&mut self, code: u16, reply: &[u8], now: Instant, stats: &mut Stats) {
        let started = self.auth_started.take().unwrap_or(now);
        count_class(
            &mut stats.auth,
            code,
            now.saturating_duration_since(started),
        );
        if let Some(setup_started) = self.setup_started.take() {
            count_class(
                &mut stats.session_setup,
                code,
                now.saturating_duration_since(setup_started),
            );
        }
        let login = self.credentials().map_or("", |c| c.login.as_str());
        let mechanism = self.cfg.auth.as_ref().map_or("", |a| a.mechanism.name());
        stats.count_error(|| format!("AUTH {mechanism} as {login} refused: {:?}", excerpt(reply)));
        self.session_failed = true;
        self.command(format_args!("QUIT"));
        self.state = State::Quit;
    }

    /// The session is set up: count it and start sending.
    fn session_ready(&mut self, now: Instant, stats: &mut Stats) {
        if let Some(started) = self.setup_started.take() {
            count_class(
                &mut stats.session_setup,
                250,
                now.saturating_duration_since(started),
            );
        }
        self.retry.connected();
        if self.pipelining {
            stats.sessions_pipelined += 1;
        } else {
            stats.sessions_unpipelined += 1;
        }
        self.next_transaction(now, stats);
    }

    /// Counts what a failed connection or the deadline cut short.
    fn abort_in_flight(&mut self, stats: &mut Stats) {
        if self.txn.take().is_some() {
            stats.message.aborted += 1;
        }
        if self.setup_started.take().is_some() {
            stats.session_setup.aborted += 1;
        }
        if self.auth_started.take().is_some() {
            stats.auth.aborted += 1;
        }
    }

    /// Starts the next message, waits for one (open loop), or QUITs when the
    /// work or the per-session limit is used up.
    fn next_transaction(&mut self, now: Instant, stats: &mut Stats) {
        let session_full = self
            .cfg
            .per_connection
            .is_some_and(|n| self.session_messages >= n);
        let next = if self.retry.stopped || session_full {
            None
        } else {
            match &mut self.work {
                Work::Share { next, end } if *next < *end => {
                    *next += 1;
                    Some((*next - 1, Duration::ZERO))
                }
                Work::Share { .. } => None,
                Work::Paced { token, more } => match token.take() {
                    Some(token) => Some((token.seq, lateness(token.due, now))),
                    None if *more => {
                        self.state = State::Ready;
                        return;
                    }
                    None => None,
                },
            }
        };
        let Some((seq, late_by)) = next else {
            self.command(format_args!("QUIT"));
            self.state = State::Quit;
            return;
        };
        self.session_messages += 1;
        stats.sent += 1;
        if is_late(late_by) {
            stats.late += 1;
        }
        self.txn = Some(Txn {
            seq,
            first_failure: None,
            rcpts_accepted: 0,
            started_at: now,
            lateness: late_by,
        });
        self.dot_sent_at = None;
        self.command(format_args!("MAIL FROM:<{}>", self.cfg.from));
        if self.pipelining {
            for index in 0..self.cfg.recipients {
                self.rcpt(index);
            }
            self.command(format_args!("DATA"));
        }
        self.state = State::Mail;
    }

    fn rcpt(&mut self, index: u32) {
        let seq = self.txn.map_or(0, |t| t.seq);
        let to = recipient(self.cfg, seq, index);
        self.command(format_args!("RCPT TO:<{to}>"));
    }

    fn reset(&mut self) {
        self.command(format_args!("RSET"));
        self.state = State::Rset;
    }

    fn queue_message(&mut self, now: Instant, stats: &mut Stats) -> Result<(), ClientError> {
        let seq = self.txn_mut(now).seq;
        let start = self.out.len();
        if let SizeSpec::Eml(corpus) = &self.cfg.size {
            // Stored CRLF-normalised and dot-stuffed, ending in CRLF.
            let message = corpus.get(seq);
            // Room for the message and the final `.\r\n`.
            self.out.reserve(message.len() + 3);
            self.out.extend_from_slice(message);
        } else {
            let unix_secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let to = recipient(self.cfg, seq, 0);
            let size_bytes = self.cfg.size.size_for(seq);
            // Room for the message (exactly `size_bytes`) and the final `.\r\n`.
            self.out.reserve(size_bytes + 3);
            self.template
                .write(&mut self.out, seq, to, unix_secs, size_bytes)
                .map_err(|source| ClientError::Message { seq, source })?;
        }
        stats.message_bytes += (self.out.len() - start) as u64;
        self.out.extend_from_slice(b".\r\n");
        self.dot_end = Some(self.out.len());
        Ok(())
    }

    /// Counts the transaction's final reply (`code`) at `now`.
    fn finish(&mut self, code: u16, now: Instant, stats: &mut Stats) {
        if let Some(txn) = self.txn.take() {
            let dot_sent_at = self.dot_sent_at.take();
            if let Some(dot) = dot_sent_at {
                stats.count_data_reply(code, now.saturating_duration_since(dot));
            }
            let from = dot_sent_at.unwrap_or(txn.started_at);
            let latency = now.saturating_duration_since(from) + txn.lateness;
            stats.count_message(code, latency, now);
        }
        self.retry.succeeded();
    }

    fn txn_mut(&mut self, now: Instant) -> &mut Txn {
        // Every state from Mail to Dot has a transaction: set in `next_transaction`.
        self.txn.get_or_insert(Txn {
            seq: 0,
            first_failure: None,
            rcpts_accepted: 0,
            started_at: now,
            lateness: Duration::ZERO,
        })
    }

    fn command(&mut self, line: std::fmt::Arguments<'_>) {
        // Writing into a Vec cannot fail.
        let _ = self.out.write_fmt(line);
        self.out.extend_from_slice(b"\r\n");
    }

    fn schedule_retry(&mut self, now: Instant) {
        self.state = State::Idle;
        self.clear_output();
        self.session_failed = false;
        self.retry.failed(now);
    }

    /// Drops what is queued at the end of a session, and a buffer grown past
    /// [`OUT_CAPACITY_MAX`] by a large message.
    fn clear_output(&mut self) {
        self.out.clear();
        self.out_pos = 0;
        if self.out.capacity() > OUT_CAPACITY_MAX + 1024 {
            self.out.shrink_to(OUT_CAPACITY_MAX + 1024);
        }
    }
}

/// Recipient `index` of message `seq`: round-robin over `--to`.
fn recipient(cfg: &SmtpConfig, seq: u64, index: u32) -> &str {
    let n = cfg.to.len() as u64;
    let slot = (seq * u64::from(cfg.recipients) + u64::from(index)) % n.max(1);
    cfg.to.get(slot as usize).map_or("", String::as_str)
}

/// Standard base64 with padding (RFC 4648 §4), for SASL responses.
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{parse_args, Command};
    use crate::mailrun::FIRST_CONNECT_ATTEMPTS_MAX;

    const EHLO_PIPELINING: &[u8] = b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n";
    const EHLO_PLAIN: &[u8] = b"250-sink\r\n250 8BITMIME\r\n";

    fn config(extra: &[&str]) -> SmtpConfig {
        let mut args = vec!["smtp", "--target", "127.0.0.1:2525", "--size", "600"];
        args.extend_from_slice(extra);
        match parse_args(args, 1).unwrap() {
            Command::Smtp(c) => *c,
            Command::Help => unreachable!(),
        }
    }

    fn template(cfg: &SmtpConfig) -> MessageTemplate {
        MessageTemplate {
            from: cfg.from.clone(),
            id_domain: cfg.helo.clone(),
            run_id: 1,
        }
    }

    fn stats() -> Stats {
        Stats::new(Instant::now(), Duration::from_secs(60))
    }

    /// Drives a client like a driver would, recording what it wrote.
    struct Harness<'a> {
        client: Client<'a>,
        stats: Stats,
        written: Vec<u8>,
        now: Instant,
    }

    impl<'a> Harness<'a> {
        fn new(cfg: &'a SmtpConfig, template: &'a MessageTemplate, count: u64) -> Self {
            let now = Instant::now();
            let mut h = Harness {
                client: Client::new(cfg, template, 0, 0, count, now),
                stats: stats(),
                written: Vec::new(),
                now,
            };
            h.client.on_connected(now, now, &mut h.stats);
            h
        }

        /// Like `new`, for an open-loop client.
        fn paced(cfg: &'a SmtpConfig, template: &'a MessageTemplate) -> Self {
            let now = Instant::now();
            let mut h = Harness {
                client: Client::new_paced(cfg, template, 0, now),
                stats: stats(),
                written: Vec::new(),
                now,
            };
            h.client.on_connected(now, now, &mut h.stats);
            h
        }

        /// Writes everything queued; returns it as text.
        fn flush(&mut self) -> String {
            let out = self.client.output().to_vec();
            self.now += Duration::from_micros(10);
            self.client.on_written(out.len(), self.now);
            self.written.extend_from_slice(&out);
            String::from_utf8(out).unwrap()
        }

        fn recv(&mut self, data: &[u8]) -> Result<(), ClientError> {
            self.now += Duration::from_micros(250);
            self.client.on_received(data, self.now, &mut self.stats)
        }

        /// Greeting and `ehlo` (flushing the EHLO); returns what the EHLO reply queued.
        fn greet(&mut self, ehlo: &[u8]) -> String {
            self.recv(b"220 hi\r\n").unwrap();
            self.flush();
            self.recv(ehlo).unwrap();
            self.flush()
        }
    }

    #[test]
    fn pipelined_session_sends_envelope_in_one_write_and_measures_latency() {
        let cfg = config(&[
            "--recipients",
            "2",
            "--to",
            "a@x.test",
            "--to",
            "b@x.test",
            "--to",
            "c@x.test",
        ]);
        let t = template(&cfg);
        let mut h = Harness::new(&cfg, &t, 2);
        assert_eq!(h.flush(), "");
        h.recv(b"220 sink ESMTP\r\n").unwrap();
        assert_eq!(h.flush(), "EHLO loadgen.test\r\n");
        h.recv(EHLO_PIPELINING).unwrap();
        assert_eq!(
            h.flush(),
            "MAIL FROM:<sender@load.test>\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"
        );
        h.recv(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n").unwrap();
        let message = h.flush();
        assert_eq!(message.len(), 600 + 3);
        assert!(message.ends_with("\r\n.\r\n"));
        h.recv(b"250 queued\r\n").unwrap();
        // Second message: recipients continue round-robin.
        assert_eq!(
            h.flush(),
            "MAIL FROM:<sender@load.test>\r\nRCPT TO:<c@x.test>\r\nRCPT TO:<a@x.test>\r\nDATA\r\n"
        );
        h.recv(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n").unwrap();
        h.flush();
        h.recv(b"250 queued\r\n").unwrap();
        assert_eq!(h.flush(), "QUIT\r\n");
        h.recv(b"221 bye\r\n").unwrap();
        assert!(h.client.is_closing());
        h.client.on_closed(h.now);
        assert!(h.client.is_finished());
        let s = &h.stats;
        let m = &s.message;
        assert_eq!(
            (s.sent, m.ok, m.tempfail, m.permfail, m.aborted, s.errors),
            (2, 2, 0, 0, 0, 0)
        );
        assert_eq!(
            (s.sessions_pipelined, s.sessions_unpipelined, s.connects),
            (1, 0, 1)
        );
        assert_eq!(m.latency.count(), 2);
        // recv adds 250 µs after the flush that wrote the dot.
        assert_eq!(m.latency.max_us(), 250);
        assert_eq!(s.message_bytes, 1200);
        assert_eq!(s.timeline.counts.iter().sum::<u64>(), 2);
        // Connect → ready for MAIL: two replies of 250 µs + two flushes of 10 µs.
        assert_eq!(s.session_setup.ok, 1);
        assert_eq!(s.session_setup.latency.max_us(), 520);
        assert_eq!(s.auth.completed(), 0);
    }

    #[test]
    fn replies_split_at_every_byte_give_the_same_session() {
        let cfg = config(&[]);
        let t = template(&cfg);
        let server: &[&[u8]] = &[
            b"220 hi\r\n",
            EHLO_PIPELINING,
            b"250 a\r\n250 b\r\n354 c\r\n",
            b"250 d\r\n",
            b"221 e\r\n",
        ];
        for cut in 1..8 {
            let mut h = Harness::new(&cfg, &t, 1);
            for reply in server {
                for chunk in reply.chunks(cut) {
                    h.recv(chunk).unwrap();
                }
                h.flush();
            }
            assert!(h.client.is_closing(), "chunk size {cut}");
            assert_eq!((h.stats.sent, h.stats.message.ok), (1, 1));
        }
    }

    #[test]
    fn without_pipelining_commands_go_one_at_a_time() {
        let cfg = config(&["--recipients", "2"]);
        let t = template(&cfg);
        let mut h = Harness::new(&cfg, &t, 1);
        assert_eq!(h.greet(EHLO_PLAIN), "MAIL FROM:<sender@load.test>\r\n");
        h.recv(b"250 ok\r\n").unwrap();
        assert_eq!(h.flush(), "RCPT TO:<rcpt@example.test>\r\n");
        h.recv(b"550 no such user\r\n").unwrap();
        assert_eq!(h.flush(), "RCPT TO:<rcpt@example.test>\r\n");
        h.recv(b"250 ok\r\n").unwrap();
        assert_eq!(h.flush(), "DATA\r\n");
        h.recv(b"354 go\r\n").unwrap();
        assert!(h.flush().ends_with("\r\n.\r\n"));
        h.recv(b"451 try later\r\n").unwrap();
        assert_eq!(h.flush(), "QUIT\r\n");
        assert_eq!(
            (
                h.stats.sent,
                h.stats.message.tempfail,
                h.stats.sessions_unpipelined
            ),
            (1, 1, 1)
        );
    }

    #[test]
    fn forced_pipelining_ignores_the_ehlo_list_and_no_pipelining_ignores_it_too() {
        let cfg = config(&["--pipelining"]);
        let t = template(&cfg);
        let mut h = Harness::new(&cfg, &t, 1);
        assert!(h.greet(EHLO_PLAIN).ends_with("DATA\r\n"));
        let cfg = config(&["--no-pipelining"]);
        let mut h = Harness::new(&cfg, &t, 1);
        assert_eq!(h.greet(EHLO_PIPELINING), "MAIL FROM:<sender@load.test>\r\n");
    }

    #[test]
    fn pipelined_rejections_count_the_first_failure_and_reset() {
        let cfg = config(&[]);
        let t = template(&cfg);
        let mut h = Harness::new(&cfg, &t, 2);
        h.greet(EHLO_PIPELINING);
        // Recipient refused, so DATA is refused too: the message is a 5xx.
        h.recv(b"250 ok\r\n550 5.1.1 unknown\r\n554 5.5.1 no valid recipients\r\n")
            .unwrap();
        assert_eq!(h.flush(), "RSET\r\n");
        h.recv(b"250 reset\r\n").unwrap();
        assert!(h.flush().starts_with("MAIL FROM"));
        // Sender temporarily refused: 4xx.
        h.recv(b"451 4.3.0 later\r\n503 5.5.1 no sender\r\n503 5.5.1 no sender\r\n")
            .unwrap();
        assert_eq!(h.flush(), "RSET\r\n");
        h.recv(b"250 reset\r\n").unwrap();
        assert_eq!(h.flush(), "QUIT\r\n");
        let s = &h.stats;
        let m = &s.message;
        assert_eq!((s.sent, m.ok, m.tempfail, m.permfail), (2, 0, 1, 1));
        // Measured from MAIL: no DATA was sent.
        assert_eq!(m.latency.count(), 2);
        assert_eq!(s.message_bytes, 0);
    }

    #[test]
    fn ehlo_refused_falls_back_to_helo_without_pipelining() {
        let cfg = config(&[]);
        let t = template(&cfg);
        let mut h = Harness::new(&cfg, &t, 1);
        h.recv(b"220 hi\r\n").unwrap();
        h.flush();
        h.recv(b"502 5.5.2 what\r\n").unwrap();
        assert_eq!(h.flush(), "HELO loadgen.test\r\n");
        h.recv(b"250 hello\r\n").unwrap();
        assert_eq!(h.flush(), "MAIL FROM:<sender@load.test>\r\n");
    }

    #[test]
    fn per_connection_limit_quits_and_reconnects() {
        let cfg = config(&["--per-connection", "1"]);
        let t = template(&cfg);
        let mut h = Harness::new(&cfg, &t, 2);
        for round in 0..2 {
            h.greet(EHLO_PIPELINING);
            h.recv(b"250 a\r\n250 b\r\n354 c\r\n").unwrap();
            h.flush();
            h.recv(b"250 d\r\n").unwrap();
            assert_eq!(h.flush(), "QUIT\r\n", "round {round}");
            h.recv(b"221 bye\r\n").unwrap();
            h.client.on_closed(h.now);
            if round == 0 {
                assert!(h.client.next_connect_at().is_some_and(|at| at <= h.now));
                h.client.on_connected(h.now, h.now, &mut h.stats);
            }
        }
        assert!(h.client.is_finished());
        assert_eq!(
            (h.stats.sent, h.stats.message.ok, h.stats.connects),
            (2, 2, 2)
        );
        assert_eq!(h.stats.session_setup.ok, 2);
    }

    #[test]
    fn lost_connection_aborts_the_message_and_retries_with_backoff() {
        let cfg = config(&[]);
        let t = template(&cfg);
        let mut h = Harness::new(&cfg, &t, 3);
        h.greet(EHLO_PIPELINING);
        h.client.on_eof(h.now, &mut h.stats);
        assert_eq!(
            (h.stats.sent, h.stats.message.aborted, h.stats.errors),
            (1, 1, 1)
        );
        assert!(h
            .stats
            .first_error
            .as_deref()
            .unwrap()
            .contains("MAIL reply"));
        let at = h.client.next_connect_at().unwrap();
        assert!(at > h.now, "reconnect is delayed");
        // The next session continues with the remaining messages.
        h.client.on_connected(at, at, &mut h.stats);
        h.greet(EHLO_PIPELINING);
        assert_eq!(h.stats.sent, 2);
    }

    #[test]
    fn unreachable_target_gives_up_after_a_few_attempts() {
        let cfg = config(&[]);
        let t = template(&cfg);
        let now = Instant::now();
        let mut client = Client::new(&cfg, &t, 0, 0, 10, now);
        let mut stats = stats();
        let mut attempts = 0;
        while let Some(at) = client.next_connect_at() {
            attempts += 1;
            client.on_connect_failed(&"refused", at, &mut stats);
        }
        assert_eq!(attempts, FIRST_CONNECT_ATTEMPTS_MAX);
        assert_eq!(
            (stats.errors, stats.sent, stats.session_setup.aborted),
            (
                u64::from(FIRST_CONNECT_ATTEMPTS_MAX),
                0,
                u64::from(FIRST_CONNECT_ATTEMPTS_MAX)
            )
        );
        assert!(stats.first_error.unwrap().contains("refused"));
    }

    #[test]
    fn server_421_mid_transaction_is_a_tempfail_and_closes() {
        let cfg = config(&[]);
        let t = template(&cfg);
        let mut h = Harness::new(&cfg, &t, 5);
        h.greet(EHLO_PIPELINING);
        h.recv(b"421 4.3.2 shutting down\r\n").unwrap();
        assert!(h.client.is_closing());
        assert_eq!((h.stats.message.tempfail, h.stats.errors), (1, 0));
        let mut h = Harness::new(&cfg, &t, 5);
        let err = h.recv(b"421 busy\r\n").unwrap_err();
        assert!(
            matches!(err, ClientError::ServerClosing { code: 421, .. }),
            "{err}"
        );
    }

    #[test]
    fn protocol_violations_are_errors() {
        let cfg = config(&[]);
        let t = template(&cfg);
        let mut h = Harness::new(&cfg, &t, 1);
        let err = h.recv(b"554 go away\r\n").unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Unexpected {
                    code: 554,
                    state: "greeting",
                    ..
                }
            ),
            "{err}"
        );
        let mut h = Harness::new(&cfg, &t, 1);
        let err = h.recv(b"hello\r\n").unwrap_err();
        assert!(matches!(err, ClientError::Reply { .. }), "{err}");
        let mut h = Harness::new(&cfg, &t, 1);
        h.greet(EHLO_PIPELINING);
        let err = h
            .recv(b"250 a\r\n250 b\r\n250 DATA is not 250\r\n")
            .unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Unexpected {
                    code: 250,
                    state: "DATA reply",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn deadline_aborts_the_message_in_flight() {
        let cfg = config(&[]);
        let t = template(&cfg);
        let mut h = Harness::new(&cfg, &t, 5);
        h.greet(EHLO_PIPELINING);
        h.client.on_deadline(&mut h.stats);
        assert!(h.client.is_finished());
        assert_eq!((h.stats.sent, h.stats.message.aborted), (1, 1));
    }

    #[test]
    fn silence_is_overdue_after_the_reply_timeout() {
        let cfg = config(&[]);
        let t = template(&cfg);
        let h = Harness::new(&cfg, &t, 1);
        assert!(!h.client.reply_overdue(h.now + REPLY_TIMEOUT));
        assert!(h
            .client
            .reply_overdue(h.now + REPLY_TIMEOUT + Duration::from_millis(1)));
    }

    #[test]
    fn endless_reply_is_bounded() {
        let cfg = config(&[]);
        let t = template(&cfg);
        let mut h = Harness::new(&cfg, &t, 1);
        let line = b"220-"
            .iter()
            .chain(b"x".repeat(1000).iter())
            .chain(b"\r\n")
            .copied()
            .collect::<Vec<u8>>();
        let mut result = Ok(());
        for _ in 0..200 {
            result = h.recv(&line);
            if result.is_err() {
                break;
            }
        }
        assert!(
            matches!(result, Err(ClientError::ReplyTooLarge { .. })),
            "{result:?}"
        );
    }

    /// A server script: each step is what the server sends, then what the
    /// client must have queued in answer (`None`: the driver does the TLS
    /// handshake here).
    type Script<'s> = &'s [(&'s [u8], Option<&'s str>)];

    /// Plays `script` with every reply split into pieces of `cut` bytes.
    fn play<'a>(h: &mut Harness<'a>, script: Script<'_>, cut: usize) {
        for (step, (server, expect)) in script.iter().enumerate() {
            for chunk in server.chunks(cut) {
                h.recv(chunk).unwrap();
            }
            match expect {
                Some(expect) => assert_eq!(h.flush(), *expect, "step {step}, cut {cut}"),
                None => {
                    assert!(h.client.wants_tls(), "step {step}, cut {cut}");
                    assert_eq!(h.flush(), "", "nothing in plaintext after STARTTLS");
                    h.client.on_tls_established(h.now);
                    assert!(!h.client.wants_tls());
                    assert_eq!(h.flush(), "EHLO loadgen.test\r\n");
                }
            }
        }
    }

    const MAIL_BATCH: &str =
        "MAIL FROM:<sender@load.test>\r\nRCPT TO:<rcpt@example.test>\r\nDATA\r\n";

    #[test]
    fn starttls_then_auth_plain_split_at_every_byte() {
        let cfg = config(&["--starttls", "--auth-user", "alice@x.test:pw"]);
        let t = template(&cfg);
        // "\0alice@x.test\0pw" in base64.
        let auth = "AUTH PLAIN AGFsaWNlQHgudGVzdABwdw==\r\n";
        let script: Script = &[
            (b"220 hi\r\n", Some("EHLO loadgen.test\r\n")),
            (b"250-sink\r\n250 STARTTLS\r\n", Some("STARTTLS\r\n")),
            (b"220 2.0.0 go ahead\r\n", None),
            (
                b"250-sink\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n",
                Some(auth),
            ),
            (b"235 2.7.0 ok\r\n", Some(MAIL_BATCH)),
        ];
        for cut in 1..=12 {
            let mut h = Harness::new(&cfg, &t, 1);
            play(&mut h, script, cut);
            let s = &h.stats;
            assert_eq!(
                (s.auth.ok, s.session_setup.ok, s.sent),
                (1, 1, 1),
                "cut {cut}"
            );
            assert_eq!(
                s.sessions_pipelined, 1,
                "PIPELINING from the EHLO after TLS"
            );
        }
    }

    #[test]
    fn auth_login_sends_user_and_password_split_at_every_byte() {
        let cfg = config(&[
            "--auth",
            "LOGIN",
            "--auth-user",
            "bob:secret",
            "--no-pipelining",
        ]);
        let t = template(&cfg);
        let script: Script = &[
            (b"220 hi\r\n", Some("EHLO loadgen.test\r\n")),
            (b"250-sink\r\n250 AUTH LOGIN\r\n", Some("AUTH LOGIN\r\n")),
            (b"334 VXNlcm5hbWU6\r\n", Some("Ym9i\r\n")),
            (b"334 UGFzc3dvcmQ6\r\n", Some("c2VjcmV0\r\n")),
            (b"235 ok\r\n", Some("MAIL FROM:<sender@load.test>\r\n")),
        ];
        for cut in 1..=10 {
            let mut h = Harness::new(&cfg, &t, 1);
            play(&mut h, script, cut);
            assert_eq!(h.stats.auth.ok, 1, "cut {cut}");
        }
    }

    #[test]
    fn users_are_picked_round_robin_by_slot() {
        let cfg = config(&["--auth-user", "a:1", "--auth-user", "b:2"]);
        let t = template(&cfg);
        for (slot, expect) in [(0, "AGEAMQ=="), (1, "AGIAMg=="), (2, "AGEAMQ==")] {
            let now = Instant::now();
            let mut s = stats();
            let mut client = Client::new(&cfg, &t, slot, 0, 1, now);
            client.on_connected(now, now, &mut s);
            client.on_received(b"220 hi\r\n", now, &mut s).unwrap();
            let n = client.output().len();
            client.on_written(n, now);
            client.on_received(b"250 ok\r\n", now, &mut s).unwrap();
            let out = String::from_utf8(client.output().to_vec()).unwrap();
            assert_eq!(out, format!("AUTH PLAIN {expect}\r\n"), "slot {slot}");
        }
    }

    #[test]
    fn refused_auth_is_counted_quits_and_retries_with_backoff() {
        let cfg = config(&["--auth-user", "alice:wrong"]);
        let t = template(&cfg);
        let mut h = Harness::new(&cfg, &t, 3);
        assert!(h.greet(b"250 AUTH PLAIN\r\n").starts_with("AUTH PLAIN "));
        h.recv(b"535 5.7.8 authentication failed\r\n").unwrap();
        assert_eq!(h.flush(), "QUIT\r\n");
        h.recv(b"221 bye\r\n").unwrap();
        assert!(h.client.is_closing());
        h.client.on_closed(h.now);
        let s = &h.stats;
        assert_eq!(
            (s.auth.permfail, s.session_setup.permfail, s.sent),
            (1, 1, 0)
        );
        assert_eq!(s.errors, 1);
        let error = s.first_error.as_deref().unwrap();
        assert!(error.contains("AUTH PLAIN as alice refused"), "{error}");
        assert!(!error.contains("wrong"), "no password in errors: {error}");
        let at = h.client.next_connect_at().unwrap();
        assert!(at > h.now, "a refused session is retried with backoff");
        // A temporary refusal is a tempfail.
        h.client.on_connected(at, at, &mut h.stats);
        h.now = at;
        h.greet(b"250 AUTH PLAIN\r\n");
        h.recv(b"454 4.7.0 try later\r\n").unwrap();
        assert_eq!(h.stats.auth.tempfail, 1);
    }

    #[test]
    fn plaintext_after_the_starttls_go_ahead_is_refused() {
        let cfg = config(&["--starttls"]);
        let t = template(&cfg);
        let mut h = Harness::new(&cfg, &t, 1);
        h.recv(b"220 hi\r\n").unwrap();
        h.flush();
        h.recv(b"250 STARTTLS\r\n").unwrap();
        assert_eq!(h.flush(), "STARTTLS\r\n");
        let err = h.recv(b"220 go ahead\r\n250 injected\r\n").unwrap_err();
        assert_eq!(err, ClientError::PlaintextAfterStartTls { bytes: 14 });
        // A refused STARTTLS is a protocol error (the run asked for TLS).
        let mut h = Harness::new(&cfg, &t, 1);
        h.greet(b"250 sink\r\n");
        let err = h.recv(b"454 4.7.0 TLS not available\r\n").unwrap_err();
        assert!(
            matches!(err, ClientError::Unexpected { code: 454, .. }),
            "{err}"
        );
    }

    #[test]
    fn implicit_tls_does_not_send_starttls() {
        let cfg = config(&["--tls"]);
        let t = template(&cfg);
        let mut h = Harness::new(&cfg, &t, 1);
        h.client.on_tls_established(h.now);
        assert_eq!(h.greet(EHLO_PIPELINING), MAIL_BATCH);
    }

    #[test]
    fn paced_client_waits_for_tokens_and_counts_late_starts() {
        let cfg = config(&["--rate", "100"]);
        let t = template(&cfg);
        let mut h = Harness::paced(&cfg, &t);
        assert_eq!(
            h.greet(EHLO_PIPELINING),
            "",
            "nothing to send before a token"
        );
        assert!(h.client.is_ready());
        assert!(
            !h.client.reply_overdue(h.now + REPLY_TIMEOUT * 2),
            "idle is not overdue"
        );
        // On time.
        h.client
            .begin(Token { seq: 7, due: h.now }, h.now, &mut h.stats);
        assert_eq!(h.flush(), MAIL_BATCH);
        h.recv(b"250 a\r\n250 b\r\n354 c\r\n").unwrap();
        assert!(h
            .flush()
            .contains("Subject: ringmail-loadgen message 0000000007\r\n"));
        h.recv(b"250 d\r\n").unwrap();
        assert!(h.client.is_ready());
        // 40 ms late: counted, and the latency includes the wait.
        let due = h.now - Duration::from_millis(40);
        h.client.begin(Token { seq: 9, due }, h.now, &mut h.stats);
        h.flush();
        h.recv(b"250 a\r\n250 b\r\n354 c\r\n").unwrap();
        h.flush();
        h.recv(b"250 d\r\n").unwrap();
        let s = &h.stats;
        assert_eq!((s.sent, s.late, s.message.ok), (2, 1, 2));
        assert_eq!(s.message.latency.min_us(), 250);
        assert_eq!(s.message.latency.max_us(), 40_250);
        h.client.on_work_exhausted();
        assert_eq!(h.flush(), "QUIT\r\n");
        h.recv(b"221 bye\r\n").unwrap();
        h.client.on_closed(h.now);
        assert!(h.client.is_finished());
    }

    #[test]
    fn exhausted_schedule_quits_after_the_transaction_in_flight() {
        let cfg = config(&["--rate", "100"]);
        let t = template(&cfg);
        let mut h = Harness::paced(&cfg, &t);
        h.greet(EHLO_PIPELINING);
        h.client
            .begin(Token { seq: 0, due: h.now }, h.now, &mut h.stats);
        h.flush();
        h.client.on_work_exhausted();
        assert_eq!(h.flush(), "", "busy: QUIT waits");
        h.recv(b"250 a\r\n250 b\r\n354 c\r\n").unwrap();
        h.flush();
        h.recv(b"250 d\r\n").unwrap();
        assert_eq!(h.flush(), "QUIT\r\n");
    }

    #[test]
    fn sizes_follow_the_spec_per_sequence_number() {
        let cfg = SmtpConfig {
            size: SizeSpec::Uniform { min: 700, max: 900 },
            ..config(&[])
        };
        let t = template(&cfg);
        let mut h = Harness::new(&cfg, &t, 3);
        h.greet(EHLO_PIPELINING);
        for seq in 0..3 {
            h.recv(b"250 a\r\n250 b\r\n354 c\r\n").unwrap();
            let message = h.flush();
            assert_eq!(message.len(), cfg.size.size_for(seq) + 3, "seq {seq}");
            h.recv(b"250 d\r\n").unwrap();
            h.flush();
        }
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), output);
        }
    }
}
