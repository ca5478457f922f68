//! The sans-IO SMTP client (RFC 5321) that delivers queued mail to a remote server: bytes
//! in, command bytes out, no sockets, clocks or TLS. One [`Client`] is one connection; it
//! carries one transaction or several in a row (connection reuse), each for a list of
//! recipients of one destination.
//!
//! # Driving it
//! The driver connects, then loops on [`Client::advance`] with the bytes it has read
//! (unconsumed ones first) and does what the [`Step`] says: write `out` and read
//! ([`Step::NeedInput`]), write `out` and call again ([`Step::Write`], message data goes out
//! in blocks of [`Config::data_chunk_bytes`]), run the TLS handshake ([`Step::StartTls`]),
//! hand over a transaction ([`Step::Ready`], [`Step::TransactionDone`]: [`Client::start`] or
//! [`Client::quit`]), or close ([`Step::Close`]). When the connection breaks or a read or
//! write times out ([`Client::timeout_ms`] says which RFC 5321 §4.5.3.2 timeout applies),
//! the driver calls [`Client::abort`]. After a transaction ends (or is cut by the connection
//! ending), [`Client::take_results`] gives one [`Outcome`] per recipient, in order.
//!
//! # The conversation
//! Greeting (220, else the connection fails with the server's reply and a QUIT), EHLO
//! (HELO when EHLO gets a 5xx, then no extensions), STARTTLS when offered and the
//! [`TlsPolicy`] wants it (then EHLO again), and per transaction: RSET (from the second
//! transaction on), MAIL FROM with SIZE, BODY=8BITMIME, SMTPUTF8, RET and ENVID as the
//! remote's extensions allow, one RCPT TO per recipient (NOTIFY and ORCPT when the remote
//! has DSN), DATA, the message (CRLF line ends, dot-stuffed, in one pass), and the final
//! reply, which applies to every accepted recipient. With PIPELINING the commands from RSET
//! to DATA go out in one write (RFC 2920); without, one at a time, and DATA is not sent when
//! no recipient was accepted. A 421 to any command ends the connection.
//!
//! Before a transaction starts, [`Client::start`] decides locally: a message needing
//! SMTPUTF8 (non-ASCII addresses, 8-bit header fields) for a remote without it fails for
//! every recipient (`553 5.6.7`, `550 5.6.9`, RFC 6531 §3.2); an 8-bit body for a remote
//! without 8BITMIME is re-encoded by [`super::downgrade`]; a message over the remote's SIZE
//! fails for every recipient (`552 5.3.4`).
//!
//! Replies are framed by [`crate::line::LineReader`] with a bound on the line
//! ([`Config::reply_line_bytes_max`]) and on the lines of one reply; a malformed or overlong
//! reply is a protocol error that ends the connection (a temporary failure).

use std::collections::VecDeque;
use std::fmt;
use std::io::Write;
use std::rc::Rc;

use thiserror::Error;

use super::downgrade;
use crate::line::{Frame, LineReader};
use crate::store::queue::{
    NOTIFY_DELAY, NOTIFY_FAILURE, NOTIFY_NEVER, NOTIFY_SUCCESS, RET_FULL, RET_HDRS,
};

/// RFC 5321 §4.5.3.1.5 allows 512 bytes per reply line; real servers send longer ones.
pub const REPLY_LINE_BYTES_MAX_DEFAULT: usize = 2048;
/// Lines of one reply (an EHLO reply has one per extension).
pub const REPLY_LINES_MAX_DEFAULT: usize = 100;
/// Reply text kept per reply (for logs and DSNs); the rest is read and dropped.
pub const REPLY_TEXT_BYTES_MAX: usize = 1024;
/// Message bytes encoded per [`Step::Write`].
pub const DATA_CHUNK_BYTES_DEFAULT: usize = 64 * 1024;
/// Recipients per transaction (like Postfix's `smtp_destination_recipient_limit`, 50).
pub const RECIPIENTS_MAX_DEFAULT: usize = 100;

/// RFC 5321 §4.5.3.2.1: waiting for the greeting.
pub const TIMEOUT_MS_GREETING: u64 = 5 * 60_000;
/// §4.5.3.2.2: the reply to MAIL.
pub const TIMEOUT_MS_MAIL: u64 = 5 * 60_000;
/// §4.5.3.2.3: the reply to RCPT.
pub const TIMEOUT_MS_RCPT: u64 = 5 * 60_000;
/// §4.5.3.2.4: the reply to DATA (the 354).
pub const TIMEOUT_MS_DATA_INIT: u64 = 2 * 60_000;
/// §4.5.3.2.5: each write of message data.
pub const TIMEOUT_MS_DATA_BLOCK: u64 = 3 * 60_000;
/// §4.5.3.2.6: the reply to the final dot.
pub const TIMEOUT_MS_DATA_END: u64 = 10 * 60_000;
/// EHLO, HELO, STARTTLS, RSET, QUIT and idle: not in the RFC; 5 minutes like Postfix.
pub const TIMEOUT_MS_COMMAND: u64 = 5 * 60_000;

/// When to use STARTTLS (RFC 3207).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Never, even when offered.
    Off,
    /// When offered; a refused STARTTLS (4xx/5xx) goes on in plain text.
    Opportunistic,
    /// Not offered or refused: the connection fails (temporary, `4.7.4`).
    Required,
}

/// What one delivery agent says and accepts. Shared by its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Our name in EHLO/HELO.
    pub helo_name: String,
    pub tls: TlsPolicy,
    /// Longest reply line, CRLF included; the driver's read buffer must hold this many
    /// bytes ([`Config::read_buffer_bytes_min`]).
    pub reply_line_bytes_max: usize,
    pub reply_lines_max: usize,
    pub data_chunk_bytes: usize,
    /// [`Client::start`] refuses more recipients (the caller splits).
    pub recipients_max: usize,
}

impl Config {
    pub fn new(helo_name: &str) -> Config {
        Config {
            helo_name: helo_name.to_owned(),
            tls: TlsPolicy::Opportunistic,
            reply_line_bytes_max: REPLY_LINE_BYTES_MAX_DEFAULT,
            reply_lines_max: REPLY_LINES_MAX_DEFAULT,
            data_chunk_bytes: DATA_CHUNK_BYTES_DEFAULT,
            recipients_max: RECIPIENTS_MAX_DEFAULT,
        }
    }

    /// The smallest read buffer on which [`Client::advance`] always makes progress.
    pub fn read_buffer_bytes_min(&self) -> usize {
        self.reply_line_bytes_max
    }
}

/// The service extensions the remote's EHLO reply offered (all off after HELO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extensions {
    /// EHLO was accepted (else HELO was used).
    pub esmtp: bool,
    pub pipelining: bool,
    /// RFC 1870 SIZE: `Some(limit)` when offered, `Some(0)` without a fixed limit.
    pub size: Option<u64>,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub starttls: bool,
    pub dsn: bool,
    pub chunking: bool,
    pub enhanced_status_codes: bool,
}

impl Extensions {
    /// One line of an EHLO reply after the first: `KEYWORD [params]`.
    fn parse_line(&mut self, line: &[u8]) {
        let (keyword, params) = match line.iter().position(|&b| b == b' ') {
            Some(space) => (&line[..space], line[space + 1..].trim_ascii()),
            None => (line, &b""[..]),
        };
        let is = |name: &str| keyword.eq_ignore_ascii_case(name.as_bytes());
        if is("PIPELINING") {
            self.pipelining = true;
        } else if is("SIZE") {
            let digits = params.iter().take_while(|b| b.is_ascii_digit());
            self.size = Some(digits.fold(0u64, |n, &d| {
                n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
            }));
        } else if is("8BITMIME") {
            self.eight_bit_mime = true;
        } else if is("SMTPUTF8") {
            self.smtputf8 = true;
        } else if is("STARTTLS") {
            self.starttls = true;
        } else if is("DSN") {
            self.dsn = true;
        } else if is("CHUNKING") {
            self.chunking = true;
        } else if is("ENHANCEDSTATUSCODES") {
            self.enhanced_status_codes = true;
        }
    }
}

/// An RFC 3463 status code `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl EnhancedCode {
    pub const fn new(class: u8, subject: u16, detail: u16) -> EnhancedCode {
        EnhancedCode {
            class,
            subject,
            detail,
        }
    }

    /// `d.ddd.ddd` at the start of `text`, followed by a space or the end. Returns the
    /// code and the bytes it and its space take.
    fn parse(text: &[u8]) -> Option<(EnhancedCode, usize)> {
        let end = text.iter().position(|&b| b == b' ').unwrap_or(text.len());
        let mut fields = text[..end].split(|&b| b == b'.');
        let mut number = |digits_max: usize| -> Option<u16> {
            let f = fields.next()?;
            if f.is_empty() || f.len() > digits_max || !f.iter().all(u8::is_ascii_digit) {
                return None;
            }
            Some(f.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0')))
        };
        let class = number(1)?;
        let subject = number(3)?;
        let detail = number(3)?;
        if fields.next().is_some() || !matches!(class, 2 | 4 | 5) {
            return None;
        }
        let code = EnhancedCode::new(class as u8, subject, detail);
        Some((code, (end + 1).min(text.len())))
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// A server reply (or one made up locally, see [`Source`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The enhanced status code of the first line, when it carries one of the reply's class.
    pub enhanced: Option<EnhancedCode>,
    /// The text of every line without code and enhanced code, joined by spaces; control
    /// characters replaced by `?`; at most [`REPLY_TEXT_BYTES_MAX`] bytes.
    pub text: String,
}

impl Reply {
    fn local(code: u16, enhanced: EnhancedCode, text: &str) -> Reply {
        Reply {
            code,
            enhanced: Some(enhanced),
            text: text.to_owned(),
        }
    }

    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The enhanced code, or `class.0.0` from the basic code (RFC 3463 §3 for a DSN's
    /// Status field).
    pub fn status(&self) -> EnhancedCode {
        self.enhanced
            .unwrap_or(EnhancedCode::new((self.code / 100).clamp(2, 5) as u8, 0, 0))
    }
}

impl fmt::Display for Reply {
    /// `550 5.1.1 text`, as a DSN's `Diagnostic-Code: smtp;` wants it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(enhanced) = self.enhanced {
            write!(f, " {enhanced}")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}

/// Where in the conversation something failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Greeting,
    /// EHLO or HELO.
    Hello,
    StartTls,
    /// Connected, no transaction under way.
    Idle,
    Rset,
    Mail,
    Rcpt,
    /// The DATA command, or writing the message.
    Data,
    /// Waiting for the reply to the final dot.
    EndOfData,
    Quit,
}

impl Stage {
    pub fn describe(self) -> &'static str {
        match self {
            Stage::Greeting => "during the greeting",
            Stage::Hello => "during EHLO/HELO",
            Stage::StartTls => "during STARTTLS",
            Stage::Idle => "between transactions",
            Stage::Rset => "during RSET",
            Stage::Mail => "during MAIL",
            Stage::Rcpt => "during RCPT",
            Stage::Data => "during DATA",
            Stage::EndOfData => "after end of data",
            Stage::Quit => "during QUIT",
        }
    }
}

/// Who produced a [`Failure`]'s reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The remote server said it (a DSN shows it as `Diagnostic-Code`).
    Remote,
    /// Made up here: a local refusal (SIZE, SMTPUTF8), a lost connection, a timeout.
    Local,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub stage: Stage,
    pub source: Source,
    pub reply: Reply,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source {
            Source::Remote => write!(f, "{}: remote said: {}", self.stage.describe(), self.reply),
            Source::Local => write!(f, "{}: {}", self.stage.describe(), self.reply),
        }
    }
}

/// What became of one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The remote took the message (its reply to the final dot).
    Delivered(Reply),
    /// A temporary failure (4xx, connection trouble): try again later.
    Deferred(Failure),
    /// A permanent failure (5xx, local refusal): bounce.
    Failed(Failure),
}

impl Outcome {
    /// 5xx → failed, anything else → deferred.
    fn from_failure(failure: Failure) -> Outcome {
        if failure.reply.is_permanent() {
            Outcome::Failed(failure)
        } else {
            Outcome::Deferred(failure)
        }
    }

    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Outcome::Delivered(_) => None,
            Outcome::Deferred(f) | Outcome::Failed(f) => Some(f),
        }
    }
}

/// Why the driver gave up on the connection ([`Client::abort`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    /// [`Client::timeout_ms`] passed without the reply (or a write did not complete).
    Timeout,
    /// The remote closed the connection.
    Closed,
    /// A read or write failed.
    Io,
    /// The TLS handshake after STARTTLS failed.
    TlsHandshake,
}

/// One recipient of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub address: String,
    /// RFC 3461 NOTIFY bits as in `store::queue` (`NOTIFY_NEVER`, `_SUCCESS`, `_FAILURE`,
    /// `_DELAY`); None: not given.
    pub notify: Option<u8>,
    /// RFC 3461 ORCPT as received (`addr-type;xtext`).
    pub orcpt: Option<String>,
}

/// One message for recipients of one destination.
#[derive(Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Reverse-path without `<>`; "" for the null sender.
    pub sender: String,
    pub recipients: Vec<Recipient>,
    /// The original MAIL carried SMTPUTF8 (passed on where the remote has it).
    pub smtputf8: bool,
    /// RFC 3461 RET (`store::queue::RET_FULL` / `RET_HDRS`).
    pub ret: Option<u8>,
    /// RFC 3461 ENVID (xtext as received).
    pub envid: Option<String>,
    /// The message as it goes out (any line ends; CRLF on the wire).
    pub message: Vec<u8>,
}

impl fmt::Debug for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("sender", &self.sender)
            .field("recipients", &self.recipients)
            .field("smtputf8", &self.smtputf8)
            .field("ret", &self.ret)
            .field("envid", &self.envid)
            .field("message_bytes", &self.message.len())
            .finish()
    }
}

/// Misuse by the driver (never caused by the remote).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClientError {
    #[error("no transaction can start now: the connection is {state}")]
    NotReady { state: &'static str },
    #[error("a transaction needs at least one recipient")]
    NoRecipients,
    #[error("{recipients} recipients in one transaction, at most {recipients_max}")]
    TooManyRecipients {
        recipients: usize,
        recipients_max: usize,
    },
    #[error("address {address:?} is empty or contains a control character")]
    InvalidAddress { address: String },
}

/// What the driver does after [`Client::advance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Write `out`, read (within [`Client::timeout_ms`]), call again with the unconsumed
    /// bytes plus the new ones.
    NeedInput,
    /// Write `out` (within [`TIMEOUT_MS_DATA_BLOCK`]), call again: more message data follows.
    Write,
    /// The server said 220 to STARTTLS: write `out` (empty), DISCARD every byte still
    /// buffered, run the TLS handshake, call [`Client::tls_started`] (or
    /// [`Client::abort`] with [`Abort::TlsHandshake`]), then `advance` over TLS.
    StartTls,
    /// Connected and greeted: [`Client::start`] a transaction or [`Client::quit`], then
    /// call again.
    Ready,
    /// A transaction ended: [`Client::take_results`], then `start` the next or `quit`.
    TransactionDone,
    /// Write `out` (it may hold a QUIT), then close. [`Client::error`] says why when the
    /// connection failed; [`Client::take_results`] has the outcomes of a transaction the
    /// end cut short.
    Close,
}

/// A command whose reply is awaited (or that waits to be sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    Rset,
    Mail,
    Rcpt(usize),
    Data,
    /// The final dot after the message.
    DataEnd,
    /// A lone dot after a 354 when no recipient was accepted (RFC 2920 §3.1): its reply
    /// is read and ignored.
    DataEndEmpty,
    Quit,
}

impl Cmd {
    fn stage(self) -> Stage {
        match self {
            Cmd::Greeting => Stage::Greeting,
            Cmd::Ehlo | Cmd::Helo => Stage::Hello,
            Cmd::StartTls => Stage::StartTls,
            Cmd::Rset => Stage::Rset,
            Cmd::Mail => Stage::Mail,
            Cmd::Rcpt(_) => Stage::Rcpt,
            Cmd::Data => Stage::Data,
            Cmd::DataEnd | Cmd::DataEndEmpty => Stage::EndOfData,
            Cmd::Quit => Stage::Quit,
        }
    }

    fn timeout_ms(self) -> u64 {
        match self {
            Cmd::Greeting => TIMEOUT_MS_GREETING,
            Cmd::Mail => TIMEOUT_MS_MAIL,
            Cmd::Rcpt(_) => TIMEOUT_MS_RCPT,
            Cmd::Data => TIMEOUT_MS_DATA_INIT,
            Cmd::DataEnd | Cmd::DataEndEmpty => TIMEOUT_MS_DATA_END,
            Cmd::Ehlo | Cmd::Helo | Cmd::StartTls | Cmd::Rset | Cmd::Quit => TIMEOUT_MS_COMMAND,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Commands in flight or queued; replies are read.
    Busy,
    /// Writing message data.
    SendingData,
    /// [`Step::StartTls`] returned; waiting for [`Client::tls_started`].
    TlsHandshake,
    /// Greeted, no transaction.
    Idle,
    Closed,
}

/// Where one recipient of the current transaction stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RcptState {
    Waiting,
    Accepted,
    Done(Outcome),
}

/// The transaction under way.
#[derive(Debug)]
struct Active {
    tx: Transaction,
    rcpts: Vec<RcptState>,
    /// The MAIL FROM line's parameters, decided at start.
    mail_params: String,
    /// SMTPUTF8 goes out, so ORCPT/ENVID may carry UTF-8.
    utf8: bool,
    mail_failed: bool,
    /// Message bytes encoded so far, and the line state at that point.
    data_pos: usize,
    at_line_start: bool,
    after_cr: bool,
}

impl Active {
    fn accepted(&self) -> usize {
        self.rcpts
            .iter()
            .filter(|r| **r == RcptState::Accepted)
            .count()
    }

    /// Sets every recipient without an outcome yet (accepted ones included).
    fn settle(&mut self, outcome: &Outcome) {
        for r in &mut self.rcpts {
            if !matches!(r, RcptState::Done(_)) {
                *r = RcptState::Done(outcome.clone());
            }
        }
    }
}

/// A reply being collected line by line.
#[derive(Debug, Default)]
struct ReplyBuilder {
    lines: usize,
    code: u16,
    enhanced: Option<EnhancedCode>,
    text: Vec<u8>,
    /// Extensions read from the lines of an EHLO reply.
    ehlo: Extensions,
}

/// A reply the client cannot read: the connection is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProtocolError {
    Malformed,
    LineTooLong,
    TooManyLines,
    Unexpected,
}

impl ProtocolError {
    fn text(self) -> &'static str {
        match self {
            ProtocolError::Malformed => "protocol error: malformed reply from the remote server",
            ProtocolError::LineTooLong => "protocol error: reply line too long",
            ProtocolError::TooManyLines => "protocol error: reply has too many lines",
            ProtocolError::Unexpected => "protocol error: reply to no command",
        }
    }
}

/// One SMTP client connection. See the module documentation.
#[derive(Debug)]
pub struct Client {
    config: Rc<Config>,
    state: State,
    reader: LineReader,
    reply: ReplyBuilder,
    /// Commands written whose replies are awaited, oldest first.
    in_flight: VecDeque<Cmd>,
    /// Commands of this transaction not written yet (lock-step without PIPELINING).
    to_send: VecDeque<Cmd>,
    extensions: Extensions,
    tls_active: bool,
    /// A MAIL was sent on this connection: the next transaction starts with RSET.
    mail_sent: bool,
    active: Option<Active>,
    results: Option<Vec<Outcome>>,
    /// The connection failed in a way that still allows a polite QUIT.
    quit_pending: bool,
    error: Option<Failure>,
}

impl Client {
    /// A client for a connection just opened; `tls_active` for implicit TLS (port 465).
    pub fn new(config: Rc<Config>, tls_active: bool) -> Client {
        Client {
            config,
            state: State::Busy,
            reader: LineReader::new(),
            reply: ReplyBuilder::default(),
            in_flight: VecDeque::from([Cmd::Greeting]),
            to_send: VecDeque::new(),
            extensions: Extensions::default(),
            tls_active,
            mail_sent: false,
            active: None,
            results: None,
            quit_pending: false,
            error: None,
        }
    }

    /// The extensions of the last EHLO reply (all off before it and after HELO).
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    /// Why the connection failed, once it has (None after a normal QUIT).
    pub fn error(&self) -> Option<&Failure> {
        self.error.as_ref()
    }

    /// The outcomes of the transaction that just ended, one per recipient in order.
    pub fn take_results(&mut self) -> Option<Vec<Outcome>> {
        self.results.take()
    }

    /// Where the conversation stands now.
    pub fn stage(&self) -> Stage {
        match self.state {
            State::Busy => self
                .in_flight
                .front()
                .or(self.to_send.front())
                .map_or(Stage::Idle, |c| c.stage()),
            State::SendingData => Stage::Data,
            State::TlsHandshake => Stage::StartTls,
            State::Idle => Stage::Idle,
            State::Closed => Stage::Quit,
        }
    }

    /// The RFC 5321 §4.5.3.2 timeout for what the client waits for now: the reply to the
    /// oldest command in flight, or a data block being written.
    pub fn timeout_ms(&self) -> u64 {
        match self.state {
            State::Busy => self
                .in_flight
                .front()
                .map_or(TIMEOUT_MS_COMMAND, |c| c.timeout_ms()),
            State::SendingData => TIMEOUT_MS_DATA_BLOCK,
            State::TlsHandshake | State::Idle | State::Closed => TIMEOUT_MS_COMMAND,
        }
    }

    /// Consumes replies from `input`, appends commands and message data to `out`.
    /// Returns the bytes consumed and what to do next.
    pub fn advance(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Step) {
        let mut consumed = 0;
        loop {
            match self.state {
                State::Closed => {
                    if std::mem::take(&mut self.quit_pending) {
                        out.extend_from_slice(b"QUIT\r\n");
                    }
                    return (consumed, Step::Close);
                }
                State::TlsHandshake => return (consumed, Step::StartTls),
                State::Idle if self.results.is_some() => return (consumed, Step::TransactionDone),
                State::Idle => return (consumed, Step::Ready),
                State::SendingData => {
                    if !self.write_data(out) {
                        return (consumed, Step::Write);
                    }
                }
                State::Busy => {
                    self.send_queued(out);
                    if self.state != State::Busy {
                        continue;
                    }
                    match self.read_reply(&input[consumed..]) {
                        (used, Ok(Some(reply))) => {
                            consumed += used;
                            self.handle(reply, out);
                        }
                        (used, Ok(None)) => {
                            consumed += used;
                            return (consumed, Step::NeedInput);
                        }
                        (used, Err(error)) => {
                            consumed += used;
                            let reply = Reply::local(421, EnhancedCode::new(4, 5, 0), error.text());
                            self.fail_connection(Source::Local, reply, false);
                        }
                    }
                }
            }
        }
    }

    /// The TLS handshake after [`Step::StartTls`] succeeded: EHLO again.
    pub fn tls_started(&mut self) {
        if self.state != State::TlsHandshake {
            return;
        }
        self.tls_active = true;
        self.extensions = Extensions::default();
        self.reader = LineReader::new();
        self.reply = ReplyBuilder::default();
        self.in_flight.clear();
        self.to_send.push_back(Cmd::Ehlo);
        self.state = State::Busy;
    }

    /// The connection is unusable: every recipient of the transaction under way without
    /// an outcome is deferred. Returns [`Step::Close`]. Nothing happens once closed or
    /// while only the reply to QUIT was awaited.
    pub fn abort(&mut self, why: Abort) -> Step {
        let quitting = self.state == State::Busy && self.in_flight.front() == Some(&Cmd::Quit);
        if self.state == State::Closed || quitting {
            self.state = State::Closed;
            return Step::Close;
        }
        let reply = match why {
            Abort::Timeout => Reply::local(421, EnhancedCode::new(4, 4, 2), "timed out"),
            Abort::Closed => Reply::local(
                421,
                EnhancedCode::new(4, 4, 2),
                "connection closed by the remote server",
            ),
            Abort::Io => Reply::local(421, EnhancedCode::new(4, 4, 2), "connection error"),
            Abort::TlsHandshake => {
                Reply::local(421, EnhancedCode::new(4, 7, 5), "TLS handshake failed")
            }
        };
        self.fail_connection(Source::Local, reply, false);
        Step::Close
    }

    /// Starts a transaction on an idle connection. Local refusals (SMTPUTF8, SIZE) end it
    /// at once: the next `advance` then says [`Step::TransactionDone`].
    pub fn start(&mut self, tx: Transaction) -> Result<(), ClientError> {
        if self.state != State::Idle || self.results.is_some() {
            return Err(ClientError::NotReady {
                state: self.state_name(),
            });
        }
        if tx.recipients.is_empty() {
            return Err(ClientError::NoRecipients);
        }
        if tx.recipients.len() > self.config.recipients_max {
            return Err(ClientError::TooManyRecipients {
                recipients: tx.recipients.len(),
                recipients_max: self.config.recipients_max,
            });
        }
        let bad = |a: &str| a.bytes().any(|b| b < 0x20 || b == 0x7f);
        if let Some(address) = std::iter::once(&tx.sender)
            .chain(tx.recipients.iter().map(|r| &r.address))
            .enumerate()
            .find(|(i, a)| bad(a) || (*i > 0 && a.is_empty()))
            .map(|(_, a)| a.clone())
        {
            return Err(ClientError::InvalidAddress { address });
        }
        let recipients = tx.recipients.len();
        let mut active = Active {
            tx,
            rcpts: vec![RcptState::Waiting; recipients],
            mail_params: String::new(),
            utf8: false,
            mail_failed: false,
            data_pos: 0,
            at_line_start: true,
            after_cr: false,
        };
        if let Err(failure) = self.prepare(&mut active) {
            active.settle(&Outcome::Failed(failure));
            self.active = Some(active);
            self.finish_transaction();
            return Ok(());
        }
        if self.mail_sent {
            self.to_send.push_back(Cmd::Rset);
        }
        self.to_send.push_back(Cmd::Mail);
        self.to_send.extend((0..recipients).map(Cmd::Rcpt));
        self.to_send.push_back(Cmd::Data);
        self.active = Some(active);
        self.state = State::Busy;
        Ok(())
    }

    /// Ends an idle connection politely: QUIT, then [`Step::Close`] after its reply.
    pub fn quit(&mut self) -> Result<(), ClientError> {
        if self.state != State::Idle {
            return Err(ClientError::NotReady {
                state: self.state_name(),
            });
        }
        self.results = None;
        self.to_send.push_back(Cmd::Quit);
        self.state = State::Busy;
        Ok(())
    }

    fn state_name(&self) -> &'static str {
        match self.state {
            State::Busy => "busy",
            State::SendingData => "sending data",
            State::TlsHandshake => "starting TLS",
            State::Idle if self.results.is_some() => "holding results not taken",
            State::Idle => "idle",
            State::Closed => "closed",
        }
    }

    /// The local decisions before MAIL: SMTPUTF8, downgrade, SIZE; the MAIL parameters.
    fn prepare(&self, active: &mut Active) -> Result<(), Failure> {
        let ext = self.extensions;
        let tx = &mut active.tx;
        let addresses_ascii =
            tx.sender.is_ascii() && tx.recipients.iter().all(|r| r.address.is_ascii());
        let mut eight_bit = downgrade::is_8bit(&tx.message);
        let header_8bit = eight_bit && downgrade::header_8bit(&tx.message);
        let local = |code, enhanced, text: String| Failure {
            stage: Stage::Mail,
            source: Source::Local,
            reply: Reply {
                code,
                enhanced: Some(enhanced),
                text,
            },
        };
        if !ext.smtputf8 && !addresses_ascii {
            return Err(local(
                553,
                EnhancedCode::new(5, 6, 7),
                "non-ASCII addresses need SMTPUTF8, which the remote server does not offer".into(),
            ));
        }
        if !ext.smtputf8 && header_8bit {
            return Err(local(
                550,
                EnhancedCode::new(5, 6, 9),
                "UTF-8 header fields need SMTPUTF8, which the remote server does not offer".into(),
            ));
        }
        if eight_bit && !ext.eight_bit_mime {
            match downgrade::downgrade(&tx.message) {
                Ok(d) => {
                    tx.message = d.message;
                    eight_bit = d.still_8bit;
                }
                Err(e) => return Err(local(552, EnhancedCode::new(5, 3, 4), e.to_string())),
            }
        }
        let size = wire_size(&tx.message);
        if let Some(limit) = ext.size.filter(|&l| l > 0 && size > l) {
            return Err(local(
                552,
                EnhancedCode::new(5, 3, 4),
                format!("message of {size} bytes exceeds the remote server's limit of {limit}"),
            ));
        }
        active.utf8 = ext.smtputf8 && (tx.smtputf8 || !addresses_ascii || header_8bit);
        let params = &mut active.mail_params;
        if ext.size.is_some() {
            params.push_str(&format!(" SIZE={size}"));
        }
        if eight_bit && ext.eight_bit_mime {
            params.push_str(" BODY=8BITMIME");
        }
        if active.utf8 {
            params.push_str(" SMTPUTF8");
        }
        if ext.dsn {
            match tx.ret {
                Some(RET_FULL) => params.push_str(" RET=FULL"),
                Some(RET_HDRS) => params.push_str(" RET=HDRS"),
                _ => {}
            }
            if let Some(envid) = tx.envid.as_deref().filter(|v| xtext_ok(v, active.utf8)) {
                params.push_str(" ENVID=");
                params.push_str(envid);
            }
        }
        Ok(())
    }

    /// Writes queued commands: all of them with PIPELINING, else one when nothing is in
    /// flight. Without PIPELINING, DATA is dropped when no recipient was accepted.
    fn send_queued(&mut self, out: &mut Vec<u8>) {
        while let Some(&cmd) = self.to_send.front() {
            if !self.extensions.pipelining && !self.in_flight.is_empty() {
                break;
            }
            if cmd == Cmd::Data && self.in_flight.is_empty() {
                if let Some(active) = &self.active {
                    if active.accepted() == 0 {
                        self.to_send.clear();
                        break;
                    }
                }
            }
            self.to_send.pop_front();
            self.write_command(cmd, out);
            self.in_flight.push_back(cmd);
        }
        self.maybe_finish();
    }

    fn write_command(&mut self, cmd: Cmd, out: &mut Vec<u8>) {
        let helo_name = &self.config.helo_name;
        match cmd {
            Cmd::Ehlo => {
                let _ = write!(out, "EHLO {helo_name}\r\n");
            }
            Cmd::Helo => {
                let _ = write!(out, "HELO {helo_name}\r\n");
            }
            Cmd::StartTls => out.extend_from_slice(b"STARTTLS\r\n"),
            Cmd::Rset => out.extend_from_slice(b"RSET\r\n"),
            Cmd::Data => out.extend_from_slice(b"DATA\r\n"),
            Cmd::Quit => out.extend_from_slice(b"QUIT\r\n"),
            Cmd::DataEndEmpty => out.extend_from_slice(b".\r\n"),
            Cmd::Mail => {
                if let Some(a) = &self.active {
                    let _ = write!(out, "MAIL FROM:<{}>{}\r\n", a.tx.sender, a.mail_params);
                    self.mail_sent = true;
                }
            }
            Cmd::Rcpt(i) => {
                let Some(a) = &self.active else { return };
                let Some(r) = a.tx.recipients.get(i) else {
                    return;
                };
                let _ = write!(out, "RCPT TO:<{}>", r.address);
                if self.extensions.dsn {
                    if let Some(notify) = r.notify.and_then(notify_value) {
                        let _ = write!(out, " NOTIFY={notify}");
                    }
                    if let Some(orcpt) = r.orcpt.as_deref().filter(|v| xtext_ok(v, a.utf8)) {
                        let _ = write!(out, " ORCPT={orcpt}");
                    }
                }
                out.extend_from_slice(b"\r\n");
            }
            Cmd::Greeting | Cmd::DataEnd => {}
        }
    }

    /// Ends the transaction when nothing of it is queued or awaited any more.
    fn maybe_finish(&mut self) {
        if self.state == State::Busy
            && self.active.is_some()
            && self.in_flight.is_empty()
            && self.to_send.is_empty()
        {
            self.finish_transaction();
        }
    }

    fn finish_transaction(&mut self) {
        self.to_send.clear();
        if let Some(active) = self.active.take() {
            // Defensive: a recipient without an outcome here is retried later.
            let early = Outcome::Deferred(Failure {
                stage: Stage::Data,
                source: Source::Local,
                reply: Reply::local(451, EnhancedCode::new(4, 4, 0), "transaction ended early"),
            });
            let outcomes = active
                .rcpts
                .into_iter()
                .map(|r| match r {
                    RcptState::Done(o) => o,
                    RcptState::Waiting | RcptState::Accepted => early.clone(),
                })
                .collect();
            self.results = Some(outcomes);
        }
        if self.state != State::Closed {
            self.state = State::Idle;
        }
    }

    /// The connection is over: the transaction's open recipients are deferred with
    /// `reply`, which becomes [`Client::error`].
    fn fail_connection(&mut self, source: Source, reply: Reply, send_quit: bool) {
        let failure = Failure {
            stage: self.stage(),
            source,
            reply,
        };
        self.state = State::Closed;
        if let Some(active) = &mut self.active {
            active.settle(&Outcome::Deferred(failure.clone()));
        }
        self.finish_transaction();
        self.in_flight.clear();
        self.to_send.clear();
        self.quit_pending = send_quit;
        self.error = Some(failure);
    }

    /// Frames reply lines from `input` until a reply is complete, the input ends, or the
    /// reply cannot be read.
    fn read_reply(&mut self, input: &[u8]) -> (usize, Result<Option<Reply>, ProtocolError>) {
        let mut consumed = 0;
        loop {
            let frame = self
                .reader
                .next_line(&input[consumed..], self.config.reply_line_bytes_max);
            consumed += frame.consumed();
            match frame {
                Frame::Line { line, .. } => match self.reply_line(line) {
                    Ok(Some(reply)) => return (consumed, Ok(Some(reply))),
                    Ok(None) => {}
                    Err(e) => return (consumed, Err(e)),
                },
                Frame::TooLong { .. } => return (consumed, Err(ProtocolError::LineTooLong)),
                Frame::Discarded { .. } => {}
                Frame::Incomplete => return (consumed, Ok(None)),
            }
        }
    }

    /// One reply line: `ddd`, `ddd text` (last line) or `ddd-text` (more follow).
    fn reply_line(&mut self, line: &[u8]) -> Result<Option<Reply>, ProtocolError> {
        let Some(&front) = self.in_flight.front() else {
            return Err(ProtocolError::Unexpected);
        };
        let digits = line.get(..3).ok_or(ProtocolError::Malformed)?;
        if !digits.iter().all(u8::is_ascii_digit) || !(b'2'..=b'5').contains(&digits[0]) {
            return Err(ProtocolError::Malformed);
        }
        let code = digits
            .iter()
            .fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
        let last = match line.get(3) {
            None | Some(b' ') => true,
            Some(b'-') => false,
            Some(_) => return Err(ProtocolError::Malformed),
        };
        let mut text = line.get(4..).unwrap_or(b"");
        let r = &mut self.reply;
        r.lines += 1;
        if r.lines > self.config.reply_lines_max {
            return Err(ProtocolError::TooManyLines);
        }
        if r.lines == 1 {
            r.code = code;
        }
        if let Some((enhanced, len)) = EnhancedCode::parse(text) {
            if u16::from(enhanced.class) == r.code / 100 {
                if r.lines == 1 {
                    r.enhanced = Some(enhanced);
                }
                if r.enhanced == Some(enhanced) {
                    text = &text[len..];
                }
            }
        }
        if front == Cmd::Ehlo && r.lines > 1 {
            r.ehlo.parse_line(text);
        }
        let text = text.trim_ascii();
        let room = REPLY_TEXT_BYTES_MAX.saturating_sub(r.text.len());
        if !text.is_empty() && room > 1 {
            if !r.text.is_empty() {
                r.text.push(b' ');
            }
            let take = text.len().min(room - 1);
            r.text.extend(
                text[..take]
                    .iter()
                    .map(|&b| if b < 0x20 || b == 0x7f { b'?' } else { b }),
            );
        }
        if !last {
            return Ok(None);
        }
        let r = std::mem::take(&mut self.reply);
        if front == Cmd::Ehlo && (200..300).contains(&r.code) {
            self.extensions = Extensions {
                esmtp: true,
                ..r.ehlo
            };
        }
        Ok(Some(Reply {
            code: r.code,
            enhanced: r.enhanced,
            text: String::from_utf8_lossy(&r.text).into_owned(),
        }))
    }

    /// Acts on the reply to the oldest command in flight.
    fn handle(&mut self, reply: Reply, out: &mut Vec<u8>) {
        let Some(cmd) = self.in_flight.pop_front() else {
            return;
        };
        let failure = |reply: &Reply| Failure {
            stage: cmd.stage(),
            source: Source::Remote,
            reply: reply.clone(),
        };
        if reply.code == 421 && cmd != Cmd::Quit {
            self.in_flight.push_front(cmd);
            self.fail_connection(Source::Remote, reply, false);
            return;
        }
        match cmd {
            Cmd::Greeting if reply.code == 220 => self.to_send.push_back(Cmd::Ehlo),
            Cmd::Greeting => {
                self.in_flight.push_front(cmd);
                self.fail_connection(Source::Remote, reply, true);
            }
            Cmd::Ehlo if reply.is_positive() => self.after_hello(),
            Cmd::Ehlo if reply.is_permanent() => self.to_send.push_back(Cmd::Helo),
            Cmd::Helo if reply.is_positive() => {
                self.extensions = Extensions::default();
                self.after_hello();
            }
            Cmd::Ehlo | Cmd::Helo => {
                self.in_flight.push_front(cmd);
                self.fail_connection(Source::Remote, reply, true);
            }
            Cmd::StartTls if reply.code == 220 => self.state = State::TlsHandshake,
            Cmd::StartTls if self.config.tls == TlsPolicy::Required => {
                self.in_flight.push_front(cmd);
                self.fail_connection(Source::Remote, reply, true);
            }
            // Opportunistic: the server is still in its state after EHLO (RFC 3207 §4).
            Cmd::StartTls => self.state = State::Idle,
            Cmd::Rset if reply.is_positive() => {}
            Cmd::Rset => {
                self.in_flight.push_front(cmd);
                self.fail_connection(Source::Remote, reply, true);
            }
            Cmd::Mail if reply.is_positive() => {}
            Cmd::Mail => {
                if let Some(active) = &mut self.active {
                    active.mail_failed = true;
                    active.settle(&Outcome::from_failure(failure(&reply)));
                }
                // Lock-step: nothing more of this transaction goes out.
                self.to_send.clear();
            }
            Cmd::Rcpt(i) => {
                if let Some(active) = self.active.as_mut().filter(|a| !a.mail_failed) {
                    if let Some(r) = active.rcpts.get_mut(i) {
                        *r = if reply.is_positive() {
                            RcptState::Accepted
                        } else {
                            RcptState::Done(Outcome::from_failure(failure(&reply)))
                        };
                    }
                }
            }
            Cmd::Data if reply.code == 354 => {
                let go = self
                    .active
                    .as_ref()
                    .is_some_and(|a| !a.mail_failed && a.accepted() > 0);
                if go {
                    self.state = State::SendingData;
                } else {
                    self.write_command(Cmd::DataEndEmpty, out);
                    self.in_flight.push_back(Cmd::DataEndEmpty);
                }
            }
            Cmd::Data => {
                if let Some(active) = self.active.as_mut().filter(|a| !a.mail_failed) {
                    active.settle(&Outcome::from_failure(failure(&reply)));
                }
            }
            Cmd::DataEnd => {
                if let Some(active) = &mut self.active {
                    let outcome = if reply.is_positive() {
                        Outcome::Delivered(reply)
                    } else {
                        Outcome::from_failure(failure(&reply))
                    };
                    active.settle(&outcome);
                }
            }
            Cmd::DataEndEmpty => {}
            Cmd::Quit => {
                self.state = State::Closed;
                return;
            }
        }
        if self.state == State::Busy {
            self.maybe_finish();
        }
    }

    /// EHLO/HELO accepted: STARTTLS if wanted, else ready.
    fn after_hello(&mut self) {
        let policy = self.config.tls;
        if self.tls_active || policy == TlsPolicy::Off {
            self.state = State::Idle;
        } else if self.extensions.starttls {
            self.to_send.push_back(Cmd::StartTls);
        } else if policy == TlsPolicy::Required {
            self.in_flight.push_front(Cmd::StartTls);
            let reply = Reply::local(
                421,
                EnhancedCode::new(4, 7, 4),
                "TLS is required, but the remote server does not offer STARTTLS",
            );
            self.fail_connection(Source::Local, reply, true);
        } else {
            self.state = State::Idle;
        }
    }

    /// Appends the next block of message data (CRLF line ends, dot-stuffed); after the last
    /// one, the final dot. Returns true when the message is complete.
    fn write_data(&mut self, out: &mut Vec<u8>) -> bool {
        let chunk_bytes = self.config.data_chunk_bytes.max(1);
        let Some(a) = &mut self.active else {
            self.state = State::Busy;
            return true;
        };
        let message = &a.tx.message;
        let end = message.len().min(a.data_pos.saturating_add(chunk_bytes));
        out.reserve(end - a.data_pos + 64);
        let mut pos = a.data_pos;
        while pos < end {
            if a.at_line_start && message[pos] == b'.' {
                out.push(b'.');
            }
            a.at_line_start = false;
            match memchr::memchr(b'\n', &message[pos..end]) {
                Some(offset) => {
                    let lf = pos + offset;
                    out.extend_from_slice(&message[pos..lf]);
                    let cr = if lf > pos {
                        message[lf - 1] == b'\r'
                    } else {
                        a.after_cr
                    };
                    if !cr {
                        out.push(b'\r');
                    }
                    out.push(b'\n');
                    pos = lf + 1;
                    a.at_line_start = true;
                    a.after_cr = false;
                }
                None => {
                    out.extend_from_slice(&message[pos..end]);
                    a.after_cr = message[end - 1] == b'\r';
                    pos = end;
                }
            }
        }
        a.data_pos = pos;
        if pos < message.len() {
            return false;
        }
        if !a.at_line_start {
            out.extend_from_slice(if a.after_cr { b"\n" } else { b"\r\n" });
        }
        out.extend_from_slice(b".\r\n");
        self.in_flight.push_back(Cmd::DataEnd);
        self.state = State::Busy;
        true
    }
}

/// The message's size as sent (RFC 1870 §2: CRLF line ends, before dot-stuffing).
pub fn wire_size(message: &[u8]) -> u64 {
    let bare_lf = memchr::memchr_iter(b'\n', message)
        .filter(|&lf| lf == 0 || message[lf - 1] != b'\r')
        .count();
    let tail = match message.last() {
        None | Some(b'\n') => 0,
        Some(b'\r') => 1,
        Some(_) => 2,
    };
    (message.len() + bare_lf + tail) as u64
}

/// RFC 3461 NOTIFY: `NEVER` or a list of SUCCESS, FAILURE, DELAY.
fn notify_value(bits: u8) -> Option<String> {
    if bits & NOTIFY_NEVER != 0 {
        return Some("NEVER".to_owned());
    }
    let names: Vec<&str> = [
        (NOTIFY_SUCCESS, "SUCCESS"),
        (NOTIFY_FAILURE, "FAILURE"),
        (NOTIFY_DELAY, "DELAY"),
    ]
    .iter()
    .filter(|(bit, _)| bits & bit != 0)
    .map(|(_, name)| *name)
    .collect();
    (!names.is_empty()).then(|| names.join(","))
}

/// A parameter value that can go on a command line: no space or control character, and
/// ASCII unless SMTPUTF8 is in use (RFC 6533). Others are left out rather than sent.
fn xtext_ok(value: &str, utf8: bool) -> bool {
    !value.is_empty() && value.bytes().all(|b| b > 0x20 && b != 0x7f) && (utf8 || value.is_ascii())
}

#[cfg(test)]
mod tests;
