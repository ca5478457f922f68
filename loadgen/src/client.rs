//! Sans-IO SMTP client for one connection slot: greeting, EHLO (HELO fallback),
//! then transactions (MAIL, RCPT × n, DATA, message, `.`), RSET after a failed
//! transaction, QUIT at the end of its share or of `--per-connection`. The
//! driver feeds it bytes and time and writes what it queues; the client keeps
//! the slot's message share, retry policy and counters across reconnects.
//!
//! With pipelining, MAIL + every RCPT + DATA go out in one write and the
//! replies are matched in order (RFC 2920); the message and the terminating
//! `.\r\n` go out in a second write. Latency is measured from the moment the
//! last byte of `\r\n.\r\n` was handed to the kernel to the final reply.

use std::fmt::Display;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::args::{PipeliningMode, SmtpConfig};
use crate::message::{MessageError, MessageTemplate};
use crate::reply::{ehlo_has_keyword, excerpt, parse_reply, Parsed, ReplyError};
use crate::stats::Stats;

/// A connection waiting this long for a reply (or to write) is dropped.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Unparsed reply bytes buffered at most (a reply without its end is bounded by the parser too).
pub const REPLY_BYTES_MAX: usize = 64 * 1024;
/// Failed connects / sessions in a row before a slot gives up, once it has connected.
pub const FAILURES_IN_A_ROW_MAX: u32 = 20;
/// Connect attempts before a slot that never connected gives up (target down).
pub const FIRST_CONNECT_ATTEMPTS_MAX: u32 = 3;
const RETRY_DELAY_MIN: Duration = Duration::from_millis(1);
const RETRY_DELAY_MAX: Duration = Duration::from_millis(500);

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
            State::Mail => "MAIL reply",
            State::Rcpt(_) => "RCPT reply",
            State::Data => "DATA reply",
            State::Dot => "end-of-data reply",
            State::Rset => "RSET reply",
            State::Quit => "QUIT reply",
            State::Closing => "close",
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
}

/// One connection slot: sends messages `seq_next..seq_end` over as many
/// sessions as `--per-connection` and failures require.
pub struct Client<'a> {
    cfg: &'a SmtpConfig,
    template: &'a MessageTemplate,
    seq_next: u64,
    seq_end: u64,
    session_messages: u64,
    state: State,
    pipelining: bool,
    txn: Option<Txn>,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    /// Offset in `out` just past the `.\r\n` of the message being written.
    dot_end: Option<usize>,
    dot_sent_at: Option<Instant>,
    last_progress: Instant,
    ever_connected: bool,
    failures_in_a_row: u32,
    connect_at: Instant,
    stopped: bool,
}

impl<'a> Client<'a> {
    /// A slot that will send `count` messages numbered from `seq_start`.
    pub fn new(
        cfg: &'a SmtpConfig,
        template: &'a MessageTemplate,
        seq_start: u64,
        count: u64,
        now: Instant,
    ) -> Self {
        Self {
            cfg,
            template,
            seq_next: seq_start,
            seq_end: seq_start + count,
            session_messages: 0,
            state: State::Idle,
            pipelining: false,
            txn: None,
            inbuf: Vec::with_capacity(1024),
            out: Vec::with_capacity(template.size_bytes + 1024),
            out_pos: 0,
            dot_end: None,
            dot_sent_at: None,
            last_progress: now,
            ever_connected: false,
            failures_in_a_row: 0,
            connect_at: now,
            stopped: false,
        }
    }

    /// When the driver should open the next connection (an instant in the past
    /// means now); `None` once the slot has finished or given up.
    pub fn next_connect_at(&self) -> Option<Instant> {
        let work_left = self.seq_next < self.seq_end;
        (self.state == State::Idle && !self.stopped && work_left).then_some(self.connect_at)
    }

    pub fn is_closing(&self) -> bool {
        self.state == State::Closing
    }

    /// True once the slot will never connect again.
    pub fn is_finished(&self) -> bool {
        self.state == State::Idle && self.next_connect_at().is_none()
    }

    /// Bytes queued for the server.
    pub fn output(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    /// True when the connection has waited longer than [`REPLY_TIMEOUT`].
    pub fn reply_overdue(&self, now: Instant) -> bool {
        !matches!(self.state, State::Idle | State::Closing)
            && now.saturating_duration_since(self.last_progress) > REPLY_TIMEOUT
    }

    pub fn on_connected(&mut self, now: Instant, stats: &mut Stats) {
        debug_assert_eq!(self.state, State::Idle);
        stats.connects += 1;
        self.ever_connected = true;
        self.state = State::Greeting;
        self.inbuf.clear();
        self.out.clear();
        self.out_pos = 0;
        self.dot_end = None;
        self.dot_sent_at = None;
        self.session_messages = 0;
        self.last_progress = now;
    }

    pub fn on_connect_failed(&mut self, error: &dyn Display, now: Instant, stats: &mut Stats) {
        let target = self.cfg.target;
        stats.count_error(|| format!("connect to {target}: {error}"));
        self.schedule_retry(now);
    }

    /// The connection failed (I/O error, protocol error, timeout): the message
    /// in flight is aborted and a reconnect is scheduled with backoff.
    pub fn on_connection_lost(&mut self, error: &dyn Display, now: Instant, stats: &mut Stats) {
        let (target, state) = (self.cfg.target, self.state.name());
        stats.count_error(|| {
            format!("connection to {target} lost while waiting for {state}: {error}")
        });
        if self.txn.take().is_some() {
            stats.aborted += 1;
        }
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
        self.state = State::Idle;
        self.connect_at = now;
    }

    /// The run is over: the message in flight is aborted, no more connections.
    pub fn on_deadline(&mut self, stats: &mut Stats) {
        if self.txn.take().is_some() {
            stats.aborted += 1;
        }
        self.state = State::Idle;
        self.stopped = true;
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
        // Anything after the QUIT reply is of no interest.
        while !matches!(self.state, State::Closing | State::Idle) {
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
            if self.txn.take().is_some() {
                stats.count_final(code);
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
                self.start_session(stats);
                self.next_transaction(stats);
            }
            State::Ehlo if class == 5 => {
                self.command(format_args!("HELO {}", self.cfg.helo));
                self.state = State::Helo;
            }
            State::Helo if class == 2 => {
                self.pipelining = self.cfg.pipelining == PipeliningMode::Always;
                self.start_session(stats);
                self.next_transaction(stats);
            }
            State::Mail if class == 2 || class == 4 || class == 5 => {
                let failed = class != 2;
                if failed {
                    self.txn_mut().first_failure.get_or_insert(code);
                }
                if self.pipelining {
                    self.state = State::Rcpt(0);
                } else if failed {
                    // No transaction was opened: nothing to reset.
                    self.finish(code, stats);
                    self.next_transaction(stats);
                } else {
                    self.rcpt(0);
                    self.state = State::Rcpt(0);
                }
            }
            State::Rcpt(index) if class == 2 || class == 4 || class == 5 => {
                let txn = self.txn_mut();
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
                    self.finish(first_failure.unwrap_or(code), stats);
                    self.reset();
                } else {
                    self.command(format_args!("DATA"));
                    self.state = State::Data;
                }
            }
            State::Data if code == 354 => {
                self.queue_message(stats)?;
                self.state = State::Dot;
            }
            State::Data if class == 4 || class == 5 => {
                // Pipelined DATA after a failed MAIL or no accepted RCPT gets 503/554:
                // the message's fate is the first failure.
                let outcome = self.txn_mut().first_failure.unwrap_or(code);
                self.finish(outcome, stats);
                self.reset();
            }
            State::Dot if class == 2 || class == 4 || class == 5 => {
                if let Some(sent_at) = self.dot_sent_at.take() {
                    let latency = now.saturating_duration_since(sent_at);
                    stats
                        .latency
                        .record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
                }
                self.finish(code, stats);
                self.next_transaction(stats);
            }
            State::Rset if class == 2 => self.next_transaction(stats),
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

    fn start_session(&mut self, stats: &mut Stats) {
        if self.pipelining {
            stats.sessions_pipelined += 1;
        } else {
            stats.sessions_unpipelined += 1;
        }
    }

    /// Starts the next message, or QUITs when the share or the per-session
    /// limit is used up.
    fn next_transaction(&mut self, stats: &mut Stats) {
        let session_full = self
            .cfg
            .per_connection
            .is_some_and(|n| self.session_messages >= n);
        if self.stopped || self.seq_next >= self.seq_end || session_full {
            self.command(format_args!("QUIT"));
            self.state = State::Quit;
            return;
        }
        let seq = self.seq_next;
        self.seq_next += 1;
        self.session_messages += 1;
        stats.sent += 1;
        self.txn = Some(Txn {
            seq,
            first_failure: None,
            rcpts_accepted: 0,
        });
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

    fn queue_message(&mut self, stats: &mut Stats) -> Result<(), ClientError> {
        let seq = self.txn_mut().seq;
        let unix_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let to = recipient(self.cfg, seq, 0);
        self.template
            .write(&mut self.out, seq, to, unix_secs)
            .map_err(|source| ClientError::Message { seq, source })?;
        stats.message_bytes += self.template.size_bytes as u64;
        self.out.extend_from_slice(b".\r\n");
        self.dot_end = Some(self.out.len());
        Ok(())
    }

    fn finish(&mut self, code: u16, stats: &mut Stats) {
        stats.count_final(code);
        self.txn = None;
        self.failures_in_a_row = 0;
    }

    fn txn_mut(&mut self) -> &mut Txn {
        // Every state from Mail to Dot has a transaction: set in `next_transaction`.
        self.txn.get_or_insert(Txn {
            seq: 0,
            first_failure: None,
            rcpts_accepted: 0,
        })
    }

    fn command(&mut self, line: std::fmt::Arguments<'_>) {
        // Writing into a Vec cannot fail.
        let _ = self.out.write_fmt(line);
        self.out.extend_from_slice(b"\r\n");
    }

    fn schedule_retry(&mut self, now: Instant) {
        self.state = State::Idle;
        self.out.clear();
        self.out_pos = 0;
        self.failures_in_a_row += 1;
        let attempts_max = if self.ever_connected {
            FAILURES_IN_A_ROW_MAX
        } else {
            FIRST_CONNECT_ATTEMPTS_MAX
        };
        if self.failures_in_a_row >= attempts_max {
            self.stopped = true;
            return;
        }
        let doublings = (self.failures_in_a_row - 1).min(16);
        self.connect_at = now + (RETRY_DELAY_MIN * (1 << doublings)).min(RETRY_DELAY_MAX);
    }
}

/// Recipient `index` of message `seq`: round-robin over `--to`.
fn recipient(cfg: &SmtpConfig, seq: u64, index: u32) -> &str {
    let n = cfg.to.len() as u64;
    let slot = (seq * u64::from(cfg.recipients) + u64::from(index)) % n.max(1);
    cfg.to.get(slot as usize).map_or("", String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{parse_args, Command};

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
            size_bytes: cfg.size_bytes,
        }
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
                client: Client::new(cfg, template, 0, count, now),
                stats: Stats::default(),
                written: Vec::new(),
                now,
            };
            h.client.on_connected(now, &mut h.stats);
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
        assert_eq!(
            (s.sent, s.ok, s.tempfail, s.permfail, s.aborted, s.errors),
            (2, 2, 0, 0, 0, 0)
        );
        assert_eq!(
            (s.sessions_pipelined, s.sessions_unpipelined, s.connects),
            (1, 0, 1)
        );
        assert_eq!(s.latency.count(), 2);
        // recv adds 250 µs after the flush that wrote the dot.
        assert_eq!(s.latency.max_us(), 250);
        assert_eq!(s.message_bytes, 1200);
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
            assert_eq!((h.stats.sent, h.stats.ok), (1, 1));
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
            (h.stats.sent, h.stats.tempfail, h.stats.sessions_unpipelined),
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
        assert_eq!((s.sent, s.ok, s.tempfail, s.permfail), (2, 0, 1, 1));
        assert_eq!(s.latency.count(), 0, "no DATA was sent");
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
                h.client.on_connected(h.now, &mut h.stats);
            }
        }
        assert!(h.client.is_finished());
        assert_eq!((h.stats.sent, h.stats.ok, h.stats.connects), (2, 2, 2));
    }

    #[test]
    fn lost_connection_aborts_the_message_and_retries_with_backoff() {
        let cfg = config(&[]);
        let t = template(&cfg);
        let mut h = Harness::new(&cfg, &t, 3);
        h.greet(EHLO_PIPELINING);
        h.client.on_eof(h.now, &mut h.stats);
        assert_eq!((h.stats.sent, h.stats.aborted, h.stats.errors), (1, 1, 1));
        assert!(h
            .stats
            .first_error
            .as_deref()
            .unwrap()
            .contains("MAIL reply"));
        let at = h.client.next_connect_at().unwrap();
        assert!(at > h.now, "reconnect is delayed");
        // The next session continues with the remaining messages.
        h.client.on_connected(at, &mut h.stats);
        h.greet(EHLO_PIPELINING);
        assert_eq!(h.stats.sent, 2);
    }

    #[test]
    fn unreachable_target_gives_up_after_a_few_attempts() {
        let cfg = config(&[]);
        let t = template(&cfg);
        let now = Instant::now();
        let mut client = Client::new(&cfg, &t, 0, 10, now);
        let mut stats = Stats::default();
        let mut attempts = 0;
        while let Some(at) = client.next_connect_at() {
            attempts += 1;
            client.on_connect_failed(&"refused", at, &mut stats);
        }
        assert_eq!(attempts, FIRST_CONNECT_ATTEMPTS_MAX);
        assert_eq!(
            (stats.errors, stats.sent),
            (u64::from(FIRST_CONNECT_ATTEMPTS_MAX), 0)
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
        assert_eq!((h.stats.tempfail, h.stats.errors), (1, 0));
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
        assert_eq!((h.stats.sent, h.stats.aborted), (1, 1));
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
}
