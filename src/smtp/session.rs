//! The sans-IO SMTP receiver state machine: RFC 5321 for an MX on port 25, RFC 6409
//! submission (AUTH before MAIL, senders the user owns), RFC 3207 STARTTLS, RFC 4954
//! AUTH PLAIN/LOGIN and RFC 3461 DSN (RET/ENVID on MAIL, NOTIFY/ORCPT on RCPT, carried in
//! the [`Transaction`]). Bytes in, reply bytes and requests out. No sockets, files, clocks,
//! TLS or password checks: the driver (`smtp::server`) owns the connection, reads into a
//! bounded buffer, calls [`Session::advance`], writes what it appended to `out`, and does
//! what the [`Step`] asks: store a message ([`Step::Deliver`]), run the TLS handshake
//! ([`Step::StartTls`]) or check credentials ([`Step::Authenticate`]).
//!
//! One handler per command (`handle_mail`, `handle_rcpt`, `handle_auth`, ...). Most check
//! the command's sequence first, then its syntax, like Postfix's smtpd; every reply
//! carries an RFC 3463 enhanced status code and Postfix's wording. Replies with a 4xx/5xx
//! code (failed AUTHs included) count as errors; at `errors_max` the session says 421
//! and closes.
//!
//! Relay control happens at RCPT: a recipient in a local domain must be accepted by the
//! [`Directory`] (mailbox, alias or catch-all); any other recipient, address literals
//! included, is accepted only from an authenticated client (and then queued by the
//! driver), else `554 5.7.1 Relay access denied`.
//!
//! Input is consumed in named states (`Input`): command lines (with "discarding an
//! overlong line" inside [`LineReader`]), SASL response lines, DATA content
//! ([`DataDecoder`]), BDAT chunk octets, waiting for the delivery result, for the
//! credential check or for the TLS handshake, and closed. Every state makes progress on
//! any buffer holding [`Limits::read_buffer_bytes_min`] bytes (command lines stay limited
//! to `command_line_bytes_max`; only AUTH lines and SASL responses may be as long as
//! [`AUTH_LINE_BYTES_MAX`]), so the driver's buffer never has to grow.
//!
//! Credentials live only in an [`accounts::Secret`](crate::accounts::Secret) until the
//! driver takes them; no `Debug` output here shows a password or a SASL payload.

use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;

use super::command::{self, Body, CommandError, Mechanism, Notify, Ret, Verb};
use super::data::{DataDecoder, DataError, DataProgress};
use crate::accounts::Secret;
use crate::line::{Frame, LineReader};
use crate::sasl::{self, AuthFailure, SaslError};
use crate::time::DateTime;

/// Longest AUTH command line and SASL response line, CRLF included (RFC 4954 4: 12288).
/// Other command lines stay limited to [`Limits::command_line_bytes_max`].
pub const AUTH_LINE_BYTES_MAX: usize = 12_288;

/// Limits and identity of one listener. Shared by its sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Our name in the greeting, EHLO reply and Received header.
    pub hostname: String,
    /// Config `[smtp] max_message_bytes`; advertised as SIZE. Counts the
    /// message as received (after dot-unstuffing), not our added headers.
    pub message_bytes_max: usize,
    /// Config `[smtp] max_recipients`: accepted RCPT commands per transaction
    /// (duplicates count, as in Postfix `smtpd_recipient_limit`).
    pub recipients_max: usize,
    /// Command line including CRLF (RFC 5321 4.5.3.1.4: 512); AUTH lines may be
    /// longer ([`AUTH_LINE_BYTES_MAX`]). The driver's read buffer must hold
    /// [`Limits::read_buffer_bytes_min`] bytes.
    pub command_line_bytes_max: usize,
    /// Text line of message content including CRLF (RFC 5321 4.5.3.1.6: 1000).
    pub text_line_bytes_max: usize,
    /// Like Postfix `smtpd_hard_error_limit` (20): then 421 and close.
    pub errors_max: usize,
    /// An RFC 6409 submission listener: MAIL needs a successful AUTH first.
    pub submission: bool,
    /// Offer AUTH without TLS (an operator's explicit choice, for loopback tests).
    pub allow_plaintext_auth: bool,
    /// A certificate is configured: STARTTLS is offered until TLS is active.
    pub tls_available: bool,
}

impl Limits {
    /// RFC 5321 and Postfix defaults for everything but the message size and
    /// recipient count.
    pub fn new(hostname: &str, message_bytes_max: usize, recipients_max: usize) -> Limits {
        Limits {
            hostname: hostname.to_owned(),
            message_bytes_max,
            recipients_max,
            command_line_bytes_max: 512,
            text_line_bytes_max: 1000,
            errors_max: 20,
            submission: false,
            allow_plaintext_auth: false,
            tls_available: false,
        }
    }

    /// The smallest read buffer a driver may use: every input state makes progress on
    /// a full buffer of this size (an AUTH line may be [`AUTH_LINE_BYTES_MAX`] long).
    pub fn read_buffer_bytes_min(&self) -> usize {
        self.command_line_bytes_max.max(AUTH_LINE_BYTES_MAX)
    }
}

/// Who receives mail here and who may send as whom. Looked up for every RCPT, and for
/// MAIL from an authenticated client.
pub trait Directory {
    /// `domain` is ASCII-lowercased, without brackets, possibly with a trailing dot.
    /// (Address literals such as `[192.0.2.1]` are never local and are not looked up.)
    fn is_local_domain(&self, domain: &str) -> bool;
    /// A mailbox, an alias or a domain catch-all accepts `address` (normalized: local
    /// part and domain lowercased, `local@domain`).
    fn accepts(&self, address: &str) -> bool;
    /// May logged-in `user` use `sender` (normalized) as MAIL FROM: their own address or
    /// an alias that expands to them.
    fn may_send_as(&self, user: &str, sender: &str) -> bool;
}

/// What the driver supplies on each call.
pub struct Context<'a> {
    pub now_unix: i64,
    pub directory: &'a dyn Directory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    pub ip: IpAddr,
    pub port: u16,
}

/// What the driver must do after [`Session::advance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Write `out`, read more, call again with the unconsumed bytes plus the new.
    NeedInput,
    /// Write `out`; [`Session::take_transaction`], store it, then
    /// [`Session::delivered`], then call `advance` again with the rest.
    Deliver,
    /// `220 2.0.0 Ready to start TLS` is in `out`: flush it, DISCARD every byte still
    /// buffered (a client may not pipeline past STARTTLS, CVE-2011-0411), run the TLS
    /// handshake, then call [`Session::tls_started`] and `advance` with what arrives over
    /// TLS. If the handshake fails, close.
    StartTls,
    /// Write `out`; [`Session::take_credentials`], check them, then
    /// [`Session::auth_result`], then call `advance` again with the rest.
    Authenticate,
    /// Write `out`, then close the connection.
    Close,
}

/// Which timeout applies while waiting for input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Command,
    Data,
}

/// A complete message and its envelope, handed to the driver for storage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transaction {
    /// Short uppercase hex, unique per (session_id, transaction number).
    pub queue_id: String,
    /// Reverse-path without `<>` as the client wrote it; "" for the null sender.
    pub mail_from: String,
    /// Normalized addresses (lowercase), in RCPT order, deduplicated.
    pub recipients: Vec<String>,
    /// RFC 3461 NOTIFY/ORCPT of each recipient, parallel to `recipients` (a recipient
    /// given twice keeps the parameters of its first RCPT). May be shorter when a
    /// transaction is built by hand: a missing entry means no parameters.
    pub recipient_dsn: Vec<RecipientDsn>,
    /// RFC 3461 RET of MAIL.
    pub ret: Option<Ret>,
    /// RFC 3461 ENVID of MAIL, xtext as received (decode with
    /// [`command::xtext_decode`]).
    pub envid: Option<String>,
    pub smtputf8: bool,
    pub body_8bitmime: bool,
    /// The AUTH user (normalized) when the client authenticated.
    pub authenticated: Option<String>,
    /// The message came over TLS.
    pub tls: bool,
    /// `Return-Path:` + `Received:` + the message exactly as received (after
    /// dot-unstuffing), CRLF line ends as on the wire.
    pub message: Vec<u8>,
}

/// The RFC 3461 parameters of one RCPT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecipientDsn {
    pub notify: Option<Notify>,
    /// ORCPT as received: `addr-type;xtext`.
    pub orcpt: Option<String>,
}

/// The storage outcome the driver reports through [`Session::delivered`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryResult {
    Stored,
    DiskFull,
    /// Any other storage error.
    TempFail,
}

/// Service extensions, advertised in EHLO in this order (STARTTLS, AUTH and DSN where
/// Postfix puts them: DSN after 8BITMIME and ENHANCEDSTATUSCODES, before SMTPUTF8).
/// SIZE carries `message_bytes_max`, AUTH its mechanisms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extension {
    Pipelining,
    Size,
    /// Offered while a certificate is configured and TLS is not active yet.
    StartTls,
    /// Offered over TLS, or without it where `allow_plaintext_auth` is set.
    Auth,
    EightBitMime,
    EnhancedStatusCodes,
    /// RFC 3461 delivery status notifications.
    Dsn,
    SmtpUtf8,
    Chunking,
}

impl Extension {
    pub fn keyword(self) -> &'static str {
        match self {
            Extension::Pipelining => "PIPELINING",
            Extension::Size => "SIZE",
            Extension::StartTls => "STARTTLS",
            Extension::Auth => "AUTH",
            Extension::EightBitMime => "8BITMIME",
            Extension::EnhancedStatusCodes => "ENHANCEDSTATUSCODES",
            Extension::Dsn => "DSN",
            Extension::SmtpUtf8 => "SMTPUTF8",
            Extension::Chunking => "CHUNKING",
        }
    }
}

const EXTENSIONS: [Extension; 9] = [
    Extension::Pipelining,
    Extension::Size,
    Extension::StartTls,
    Extension::Auth,
    Extension::EightBitMime,
    Extension::EnhancedStatusCodes,
    Extension::Dsn,
    Extension::SmtpUtf8,
    Extension::Chunking,
];

/// Messages per connection. The queue id holds the transaction number in
/// four hex digits, which keeps ids unique per (session, transaction).
pub const TRANSACTIONS_MAX: u32 = 0xFFFF;

const REPLY_OK: &str = "250 2.0.0 Ok";
const REPLY_NEED_HELO: &str = "503 5.5.1 Error: send HELO/EHLO first";
const REPLY_NEED_MAIL: &str = "503 5.5.1 Error: need MAIL command";
const REPLY_NEED_RCPT: &str = "503 5.5.1 Error: need RCPT command";
const REPLY_TOO_BIG: &str = "552 5.3.4 Error: message file too big";
const REPLY_AUTH_FAILED: &str = "535 5.7.8 Error: authentication failed: authentication failure";
const REPLY_AUTH_CANNOT_DECODE: &str = "501 5.5.2 Cannot decode response";
/// The mechanisms of the EHLO AUTH line.
const AUTH_MECHANISMS: &str = "PLAIN LOGIN";

/// Which greeting the client used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hello {
    None,
    Helo,
    Ehlo,
}

/// What the bytes of a BDAT chunk are for, decided when its command is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Store,
    /// Read and drop; then answer this 503.
    Reject(&'static str),
    /// Read and drop; then 552 and reset the transaction.
    TooBig,
}

/// The named states of the input stream.
#[derive(Debug, Clone)]
enum Input {
    Commands,
    Data(DataDecoder),
    Bdat {
        size: u64,
        remaining: u64,
        last: bool,
        chunk: Chunk,
    },
    /// Step::Deliver was returned; waiting for `delivered`.
    AwaitingDelivery,
    /// A `334` challenge was sent; the next line is the client's SASL response.
    AuthResponse(AuthStage),
    /// Step::Authenticate was returned; waiting for `auth_result`.
    Authenticating,
    /// Step::StartTls was returned; waiting for `tls_started` (or the close).
    StartingTls,
    Closed,
}

/// Which SASL response an [`Input::AuthResponse`] line is.
#[derive(Debug, Clone)]
enum AuthStage {
    /// After `AUTH PLAIN` and `334 `: authzid NUL authcid NUL password, in base64.
    Plain,
    /// After `AUTH LOGIN` and `334 VXNlcm5hbWU6`: the user name.
    LoginUser,
    /// After `334 UGFzc3dvcmQ6`: the password.
    LoginPassword { user: String },
}

/// One SMTP server session (one connection).
#[derive(Debug)]
pub struct Session {
    limits: Arc<Limits>,
    peer: PeerInfo,
    session_id: u64,
    input: Input,
    lines: LineReader,
    hello: Hello,
    /// The EHLO/HELO argument (capacity reused across the session).
    hello_name: String,
    errors: usize,
    /// Transactions that reached DATA or a first BDAT in this session.
    transactions: u32,
    // The transaction: MAIL seen, its sender, the accepted recipients, the
    // message so far.
    in_mail: bool,
    mail_from: String,
    recipients: Vec<String>,
    /// NOTIFY/ORCPT per entry of `recipients`.
    recipient_dsn: Vec<RecipientDsn>,
    /// RET and ENVID of MAIL.
    ret: Option<Ret>,
    envid: Option<String>,
    /// Accepted RCPT commands, duplicates included (Postfix
    /// `smtpd_recipient_limit` counts the same way).
    rcpt_count: usize,
    smtputf8: bool,
    body_8bitmime: bool,
    /// BDAT chunks were accepted (DATA is then refused); message started.
    bdat_started: bool,
    /// Message bytes received in BDAT chunks (headers not counted).
    bdat_bytes: u64,
    message: Vec<u8>,
    /// Normalized RCPT address being looked up (capacity reused).
    scratch: String,
    /// The connection is encrypted (implicit TLS, or after STARTTLS).
    tls_active: bool,
    /// The user a successful AUTH logged in (normalized), for the rest of the session
    /// (or until STARTTLS resets it).
    authenticated: Option<String>,
    /// Complete credentials between Step::Authenticate and `take_credentials`.
    credentials: Option<(String, Secret)>,
}

impl Session {
    /// A new connection; `tls_active` on implicit-TLS listeners (the handshake is done).
    pub fn new(limits: Arc<Limits>, peer: PeerInfo, session_id: u64, tls_active: bool) -> Session {
        Session {
            limits,
            peer,
            session_id,
            input: Input::Commands,
            lines: LineReader::new(),
            hello: Hello::None,
            hello_name: String::new(),
            errors: 0,
            transactions: 0,
            in_mail: false,
            mail_from: String::new(),
            recipients: Vec::new(),
            recipient_dsn: Vec::new(),
            ret: None,
            envid: None,
            rcpt_count: 0,
            smtputf8: false,
            body_8bitmime: false,
            bdat_started: false,
            bdat_bytes: 0,
            message: Vec::new(),
            scratch: String::new(),
            tls_active,
            authenticated: None,
            credentials: None,
        }
    }

    /// `220 <hostname> ESMTP ringmail`
    /// The limits of the core now serving the session (after it moved to another core:
    /// the same configuration, that core's copy).
    pub fn set_limits(&mut self, limits: Arc<Limits>) {
        self.limits = limits;
    }

    pub fn greeting(&mut self, out: &mut Vec<u8>) {
        self.reply(out, &["220 ", &self.limits.hostname, " ESMTP ringmail"]);
    }

    /// Consumes as much of `input` as forms complete commands / data and
    /// appends the replies to `out`. Returns (bytes consumed, next step). The
    /// driver keeps the unconsumed bytes and calls again after reading more
    /// (NeedInput) or after [`Session::delivered`] (Deliver).
    pub fn advance(&mut self, input: &[u8], out: &mut Vec<u8>, cx: &Context) -> (usize, Step) {
        let mut consumed = 0;
        loop {
            if self.errors >= self.limits.errors_max && !matches!(self.input, Input::Closed) {
                self.close_with(out, "421 4.7.0 ", " Error: too many errors");
                return (consumed, Step::Close);
            }
            let rest = &input[consumed..];
            match &mut self.input {
                Input::Closed => return (consumed, Step::Close),
                Input::AwaitingDelivery => return (consumed, Step::Deliver),
                Input::Authenticating => return (consumed, Step::Authenticate),
                // Nothing after the STARTTLS line is read: the driver drops it.
                Input::StartingTls => return (consumed, Step::StartTls),
                Input::Commands => {
                    let limit = self.line_bytes_max(rest);
                    let frame = self.lines.next_line(rest, limit);
                    consumed += frame.consumed();
                    match frame {
                        Frame::Incomplete => return (consumed, Step::NeedInput),
                        Frame::Discarded { .. } => {}
                        Frame::TooLong { .. } => self.reject(out, "500 5.5.2 Error: line too long"),
                        Frame::Line { line, .. } => self.handle_command(line, out, cx),
                    }
                }
                Input::AuthResponse(_) => {
                    let frame = self.lines.next_line(rest, AUTH_LINE_BYTES_MAX);
                    consumed += frame.consumed();
                    match frame {
                        Frame::Incomplete => return (consumed, Step::NeedInput),
                        Frame::Discarded { .. } => {}
                        Frame::TooLong { .. } => {
                            self.input = Input::Commands;
                            self.reject(out, "500 5.5.6 SASL response limit exceeded");
                        }
                        Frame::Line { line, .. } => self.handle_auth_response(line, out),
                    }
                }
                Input::Data(decoder) => {
                    let (used, progress) = decoder.decode(rest, &mut self.message);
                    consumed += used;
                    match progress {
                        DataProgress::NeedMore => return (consumed, Step::NeedInput),
                        DataProgress::End(Ok(())) => {
                            self.input = Input::AwaitingDelivery;
                            return (consumed, Step::Deliver);
                        }
                        DataProgress::End(Err(error)) => {
                            self.input = Input::Commands;
                            self.reset_transaction();
                            self.reject(out, data_error_reply(error));
                        }
                    }
                }
                Input::Bdat {
                    size,
                    remaining,
                    last,
                    chunk,
                } => {
                    let take = rest
                        .len()
                        .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    if *chunk == Chunk::Store {
                        self.message.extend_from_slice(&rest[..take]);
                    }
                    consumed += take;
                    *remaining -= take as u64;
                    if *remaining > 0 {
                        return (consumed, Step::NeedInput);
                    }
                    let (size, last, chunk) = (*size, *last, *chunk);
                    self.input = Input::Commands;
                    match chunk {
                        Chunk::Store if last => {
                            self.input = Input::AwaitingDelivery;
                            return (consumed, Step::Deliver);
                        }
                        Chunk::Store => {
                            let _ = write!(out, "250 2.0.0 {size} octets received\r\n");
                        }
                        Chunk::Reject(reply) => self.reject(out, reply),
                        Chunk::TooBig => {
                            self.reset_transaction();
                            self.reject(out, REPLY_TOO_BIG);
                        }
                    }
                }
            }
        }
    }

    /// The message and envelope after [`Step::Deliver`]. Leaves the session's
    /// transaction empty; call [`Session::delivered`] next.
    pub fn take_transaction(&mut self) -> Transaction {
        Transaction {
            queue_id: self.queue_id().to_string(),
            mail_from: std::mem::take(&mut self.mail_from),
            recipients: std::mem::take(&mut self.recipients),
            recipient_dsn: std::mem::take(&mut self.recipient_dsn),
            ret: self.ret,
            envid: self.envid.take(),
            smtputf8: self.smtputf8,
            body_8bitmime: self.body_8bitmime,
            authenticated: self.authenticated.clone(),
            tls: self.tls_active,
            message: std::mem::take(&mut self.message),
        }
    }

    /// The credentials after [`Step::Authenticate`]: (authentication identity as sent,
    /// password). `None` at any other time, or when already taken.
    pub fn take_credentials(&mut self) -> Option<(String, Secret)> {
        self.credentials.take()
    }

    /// Writes the outcome of the credential check after [`Step::Authenticate`]
    /// (`235 2.7.0 Authentication successful`, `535 5.7.8 ...` or `454 4.7.0 ...`);
    /// `Ok` carries the normalized user, who is then logged in for the session. Does
    /// nothing when no check was asked for.
    pub fn auth_result(&mut self, result: Result<String, AuthFailure>, out: &mut Vec<u8>) {
        if !matches!(self.input, Input::Authenticating) {
            return;
        }
        self.credentials = None;
        self.input = Input::Commands;
        match result {
            Ok(user) => {
                self.authenticated = Some(user);
                self.reply(out, &["235 2.7.0 Authentication successful"]);
            }
            Err(AuthFailure::Invalid) => self.reject(out, REPLY_AUTH_FAILED),
            Err(AuthFailure::Unavailable) => {
                self.reject(out, "454 4.7.0 Temporary authentication failure")
            }
        }
    }

    /// The TLS handshake after [`Step::StartTls`] succeeded. As RFC 3207 4.2 requires,
    /// everything learnt before is forgotten (EHLO name, transaction, authentication);
    /// there is no new greeting. Only the error count and the transaction numbering go on.
    pub fn tls_started(&mut self) {
        self.reset_transaction();
        self.hello = Hello::None;
        self.hello_name.clear();
        self.authenticated = None;
        self.credentials = None;
        self.tls_active = true;
        if matches!(self.input, Input::StartingTls) {
            self.input = Input::Commands;
        }
    }

    /// The user logged in by AUTH, if any.
    pub fn authenticated(&self) -> Option<&str> {
        self.authenticated.as_deref()
    }

    /// The connection is encrypted.
    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    /// Writes the final reply for the transaction taken (`250 2.0.0 Ok: queued
    /// as <id>`, `452 4.3.1 ...` or `451 4.3.0 ...`) and returns to the state
    /// after EHLO. `recycled` is the message Vec given back for reuse.
    pub fn delivered(&mut self, result: DeliveryResult, mut recycled: Vec<u8>, out: &mut Vec<u8>) {
        match result {
            DeliveryResult::Stored => {
                let id = self.queue_id();
                let _ = write!(out, "250 2.0.0 Ok: queued as {id}\r\n");
                // Like Postfix, count errors only between delivered messages.
                self.errors = 0;
            }
            DeliveryResult::DiskFull => {
                self.reply(out, &["452 4.3.1 Insufficient system storage"]);
            }
            DeliveryResult::TempFail => {
                self.reply(out, &["451 4.3.0 Error: queue file write error"]);
            }
        }
        recycled.clear();
        self.message = recycled;
        self.reset_transaction();
        if matches!(self.input, Input::AwaitingDelivery) {
            self.input = Input::Commands;
        }
    }

    /// True from an accepted MAIL until its transaction ends (delivered,
    /// refused, RSET, EHLO): a graceful shutdown lets it finish.
    pub fn in_transaction(&self) -> bool {
        self.in_mail || matches!(self.input, Input::AwaitingDelivery)
    }

    /// Which timeout applies while waiting for input.
    pub fn phase(&self) -> Phase {
        match self.input {
            Input::Data(_) | Input::Bdat { .. } => Phase::Data,
            Input::Commands
            | Input::AwaitingDelivery
            | Input::AuthResponse(_)
            | Input::Authenticating
            | Input::StartingTls
            | Input::Closed => Phase::Command,
        }
    }

    /// The read timed out: `421 4.4.2 <host> Error: timeout exceeded`; close.
    pub fn timeout(&mut self, out: &mut Vec<u8>) {
        self.close_with(out, "421 4.4.2 ", " Error: timeout exceeded");
    }

    /// The server is stopping: `421 4.3.2 <host> Service shutting down`; close.
    pub fn shutting_down(&mut self, out: &mut Vec<u8>) {
        self.close_with(out, "421 4.3.2 ", " Service shutting down");
    }

    /// The extensions this session advertises now, in EHLO order.
    pub fn extensions(&self) -> impl Iterator<Item = Extension> {
        let starttls = self.limits.tls_available && !self.tls_active;
        let auth = self.auth_offered();
        EXTENSIONS.into_iter().filter(move |e| match e {
            Extension::StartTls => starttls,
            Extension::Auth => auth,
            _ => true,
        })
    }

    /// AUTH is offered: over TLS, or where plaintext AUTH is explicitly allowed (RFC 4954 4).
    fn auth_offered(&self) -> bool {
        self.tls_active || self.limits.allow_plaintext_auth
    }

    /// The line limit for the command line at the start of `rest`: AUTH lines (while
    /// AUTH is offered) and SASL responses may be [`AUTH_LINE_BYTES_MAX`] long.
    fn line_bytes_max(&self, rest: &[u8]) -> usize {
        let command = self.limits.command_line_bytes_max;
        match self.input {
            Input::AuthResponse(_) => AUTH_LINE_BYTES_MAX,
            Input::Commands
                if self.auth_offered()
                    && rest
                        .get(..5)
                        .is_some_and(|v| v.eq_ignore_ascii_case(b"AUTH ")) =>
            {
                command.max(AUTH_LINE_BYTES_MAX)
            }
            _ => command,
        }
    }

    fn handle_command(&mut self, line: &[u8], out: &mut Vec<u8>, cx: &Context) {
        let Ok((verb, args)) = command::split_verb(line) else {
            return self.reject(out, "502 5.5.2 Error: command not recognized");
        };
        match verb {
            Verb::Ehlo | Verb::Helo => self.handle_hello(verb, args, out),
            Verb::StartTls => self.handle_starttls(args, out),
            Verb::Auth => self.handle_auth(args, out),
            Verb::Mail => self.handle_mail(args, out, cx),
            Verb::Rcpt => self.handle_rcpt(args, out, cx),
            Verb::Data => self.handle_data(args, out, cx),
            Verb::Bdat => self.handle_bdat(args, out, cx),
            Verb::Rset => self.handle_rset(args, out),
            Verb::Noop => self.reply(out, &[REPLY_OK]),
            Verb::Quit => self.handle_quit(args, out),
            Verb::Help => self.reply(
                out,
                &["214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY STARTTLS AUTH"],
            ),
            Verb::Vrfy => self.handle_vrfy(args, out),
            Verb::Forbidden => {
                // Postfix smtpd_forbidden_commands: a web or proxy client.
                self.reply(out, &["221 2.7.0 Error: I can break rules, too. Goodbye."]);
                self.input = Input::Closed;
            }
        }
    }

    fn handle_hello(&mut self, verb: Verb, args: &[u8], out: &mut Vec<u8>) {
        let usage = if verb == Verb::Ehlo {
            command::USAGE_EHLO
        } else {
            command::USAGE_HELO
        };
        let Ok(name) = command::parse_hello(args, usage) else {
            return self.reject_syntax(out, usage);
        };
        self.reset_transaction();
        self.hello_name.clear();
        self.hello_name.push_str(name);
        let limits = Arc::clone(&self.limits);
        if verb == Verb::Helo {
            self.hello = Hello::Helo;
            return self.reply(out, &["250 ", &limits.hostname]);
        }
        self.hello = Hello::Ehlo;
        self.reply(out, &["250-", &limits.hostname]);
        let mut extensions = self.extensions().peekable();
        while let Some(extension) = extensions.next() {
            let dash = if extensions.peek().is_some() {
                '-'
            } else {
                ' '
            };
            let keyword = extension.keyword();
            // Writing into a Vec never fails.
            let _ = match extension {
                Extension::Size => {
                    write!(out, "250{dash}{keyword} {}\r\n", limits.message_bytes_max)
                }
                Extension::Auth => write!(out, "250{dash}{keyword} {AUTH_MECHANISMS}\r\n"),
                _ => write!(out, "250{dash}{keyword}\r\n"),
            };
        }
    }

    /// STARTTLS (RFC 3207), with Postfix's checks in Postfix's order.
    fn handle_starttls(&mut self, args: &[u8], out: &mut Vec<u8>) {
        if !args.is_empty() {
            return self.reject_syntax(out, command::USAGE_STARTTLS);
        }
        if self.tls_active {
            return self.reject(out, "554 5.5.1 Error: TLS already active");
        }
        if !self.limits.tls_available {
            return self.reject(out, "502 5.5.1 Error: command not implemented");
        }
        if self.hello == Hello::None {
            return self.reject(out, REPLY_NEED_HELO);
        }
        self.reset_transaction();
        self.reply(out, &["220 2.0.0 Ready to start TLS"]);
        self.input = Input::StartingTls;
    }

    /// AUTH (RFC 4954): PLAIN or LOGIN, with or without an initial response.
    fn handle_auth(&mut self, args: &[u8], out: &mut Vec<u8>) {
        if !self.auth_offered() {
            return self.reject(out, "503 5.5.1 Error: authentication not enabled");
        }
        if self.hello == Hello::None {
            return self.reject(out, REPLY_NEED_HELO);
        }
        if self.in_mail {
            return self.reject(out, "503 5.5.1 Error: MAIL transaction in progress");
        }
        if self.authenticated.is_some() {
            return self.reject(out, "503 5.5.1 Error: already authenticated");
        }
        let Ok(auth) = command::parse_auth(args) else {
            return self.reject_syntax(out, command::USAGE_AUTH);
        };
        let Some(mechanism) = Mechanism::from_name(auth.mechanism) else {
            return self.reject(out, "504 5.5.4 Unsupported authentication mechanism");
        };
        // `=` is an empty initial response (RFC 4954 4).
        let initial = auth
            .initial_response
            .map(|r| if r == b"=" { &r[..0] } else { r });
        match (mechanism, initial) {
            (Mechanism::Plain, None) => {
                self.reply(out, &["334 "]);
                self.input = Input::AuthResponse(AuthStage::Plain);
            }
            (Mechanism::Login, None) => {
                self.reply(out, &["334 ", sasl::LOGIN_USERNAME_CHALLENGE]);
                self.input = Input::AuthResponse(AuthStage::LoginUser);
            }
            (Mechanism::Plain, Some(response)) => self.auth_step(AuthStage::Plain, response, out),
            (Mechanism::Login, Some(response)) => {
                self.auth_step(AuthStage::LoginUser, response, out)
            }
        }
    }

    /// A line after a `334` challenge: `*` aborts, anything else is base64.
    fn handle_auth_response(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let Input::AuthResponse(stage) = std::mem::replace(&mut self.input, Input::Commands) else {
            return;
        };
        if line == b"*" {
            return self.reject(out, "501 5.7.0 Authentication aborted");
        }
        self.auth_step(stage, line, out);
    }

    /// Decodes one SASL response for `stage`: the next challenge, the credentials
    /// (Step::Authenticate) or the failure. `self.input` is `Commands` on entry.
    fn auth_step(&mut self, stage: AuthStage, response: &[u8], out: &mut Vec<u8>) {
        let decoded = match stage {
            AuthStage::Plain => sasl::decode_plain(response),
            AuthStage::LoginUser => match sasl::decode_login(response) {
                Ok(user) => {
                    self.reply(out, &["334 ", sasl::LOGIN_PASSWORD_CHALLENGE]);
                    self.input = Input::AuthResponse(AuthStage::LoginPassword { user });
                    return;
                }
                Err(error) => Err(error),
            },
            AuthStage::LoginPassword { user } => {
                sasl::decode_login(response).map(|password| (user, Secret::new(password)))
            }
        };
        match decoded {
            Ok(credentials) => {
                self.credentials = Some(credentials);
                self.input = Input::Authenticating;
            }
            Err(SaslError::Base64 { .. }) => self.reject(out, REPLY_AUTH_CANNOT_DECODE),
            // Malformed, too long, or a proxy authorization identity.
            Err(_) => self.reject(out, REPLY_AUTH_FAILED),
        }
    }

    fn handle_mail(&mut self, args: &[u8], out: &mut Vec<u8>, cx: &Context) {
        if self.hello == Hello::None {
            return self.reject(out, REPLY_NEED_HELO);
        }
        if self.in_mail {
            return self.reject(out, "503 5.5.1 Error: nested MAIL command");
        }
        if self.limits.submission && self.authenticated.is_none() {
            return self.reject(out, "530 5.7.0 Authentication required");
        }
        if self.transactions >= TRANSACTIONS_MAX {
            return self.close_with(
                out,
                "421 4.7.0 ",
                " Error: too many messages in one session",
            );
        }
        let mail = match command::parse_mail(args) {
            Ok(mail) => mail,
            Err(error) => return self.reject_command_error(error, out),
        };
        if mail.sender.is_some_and(|s| !s.is_ascii()) && !mail.smtputf8 {
            return self.reject(
                out,
                "553 5.6.7 Must declare SMTPUTF8 to send unicode address",
            );
        }
        if mail
            .size
            .is_some_and(|size| size > self.limits.message_bytes_max as u64)
        {
            return self.reject(out, "552 5.3.4 Message size exceeds fixed limit");
        }
        // An authenticated client may only use its own addresses (or aliases to them).
        if let (Some(user), Some(sender)) = (&self.authenticated, mail.sender) {
            sender.normalize_into(&mut self.scratch);
            if !cx.directory.may_send_as(user, &self.scratch) {
                let user = user.clone();
                let reply = [
                    "553 5.7.1 <",
                    sender.address,
                    ">: Sender address rejected: not owned by user ",
                    &user,
                ];
                return self.reject_parts(out, &reply);
            }
        }
        self.in_mail = true;
        self.mail_from.clear();
        if let Some(sender) = mail.sender {
            self.mail_from.push_str(sender.address);
        }
        self.smtputf8 = mail.smtputf8;
        self.body_8bitmime = mail.body == Some(Body::EightBitMime);
        self.ret = mail.ret;
        self.envid = mail.envid.map(str::to_owned);
        self.reply(out, &["250 2.1.0 Ok"]);
    }

    fn handle_rcpt(&mut self, args: &[u8], out: &mut Vec<u8>, cx: &Context) {
        if !self.in_mail {
            return self.reject(out, REPLY_NEED_MAIL);
        }
        if self.bdat_started {
            return self.reject(out, "503 5.5.1 Error: RCPT after BDAT");
        }
        let (recipient, dsn) = match command::parse_rcpt(args) {
            Ok(rcpt) => (rcpt.recipient, (rcpt.notify, rcpt.orcpt)),
            Err(error) => return self.reject_command_error(error, out),
        };
        if !recipient.is_ascii() && !self.smtputf8 {
            return self.reject(
                out,
                "553 5.6.7 Must declare SMTPUTF8 to send unicode address",
            );
        }
        if self.rcpt_count >= self.limits.recipients_max {
            return self.reject(out, "452 4.5.3 Error: too many recipients");
        }
        let at = recipient.normalize_into(&mut self.scratch);
        let domain = &self.scratch[at + 1..];
        let local = !recipient.literal && cx.directory.is_local_domain(domain);
        if !local {
            // Relay: only for authenticated clients (the driver queues the message).
            if self.authenticated.is_none() {
                let reply = ["554 5.7.1 <", recipient.address, ">: Relay access denied"];
                return self.reject_parts(out, &reply);
            }
        } else if !cx.directory.accepts(&self.scratch) {
            let reply = [
                "550 5.1.1 <",
                recipient.address,
                ">: Recipient address rejected: User unknown in local recipient table",
            ];
            return self.reject_parts(out, &reply);
        }
        self.rcpt_count += 1;
        if !self.recipients.contains(&self.scratch) {
            self.recipients.push(self.scratch.clone());
            self.recipient_dsn.push(RecipientDsn {
                notify: dsn.0,
                orcpt: dsn.1.map(str::to_owned),
            });
        }
        self.reply(out, &["250 2.1.5 Ok"]);
    }

    fn handle_data(&mut self, args: &[u8], out: &mut Vec<u8>, cx: &Context) {
        if !self.in_mail {
            return self.reject(out, REPLY_NEED_MAIL);
        }
        if self.bdat_started {
            return self.reject(out, "503 5.5.1 Error: DATA after BDAT");
        }
        if self.recipients.is_empty() {
            return self.reject(out, REPLY_NEED_RCPT);
        }
        if !args.is_empty() {
            return self.reject_syntax(out, command::USAGE_DATA);
        }
        self.start_message(cx);
        self.input = Input::Data(DataDecoder::new(
            self.limits.message_bytes_max,
            self.limits.text_line_bytes_max,
        ));
        self.reply(out, &["354 End data with <CR><LF>.<CR><LF>"]);
    }

    fn handle_bdat(&mut self, args: &[u8], out: &mut Vec<u8>, cx: &Context) {
        let (size, last) = match command::parse_bdat(args) {
            Ok(parsed) => parsed,
            Err(error) => return self.reject_command_error(error, out),
        };
        let chunk = if self.hello == Hello::None {
            Chunk::Reject(REPLY_NEED_HELO)
        } else if !self.in_mail {
            Chunk::Reject(REPLY_NEED_MAIL)
        } else if self.recipients.is_empty() {
            Chunk::Reject(REPLY_NEED_RCPT)
        } else {
            if !self.bdat_started {
                self.bdat_started = true;
                self.bdat_bytes = 0;
                self.start_message(cx);
            }
            let room = (self.limits.message_bytes_max as u64).saturating_sub(self.bdat_bytes);
            if size > room {
                Chunk::TooBig
            } else {
                self.bdat_bytes += size;
                Chunk::Store
            }
        };
        self.input = Input::Bdat {
            size,
            remaining: size,
            last,
            chunk,
        };
    }

    fn handle_rset(&mut self, args: &[u8], out: &mut Vec<u8>) {
        if !args.is_empty() {
            return self.reject_syntax(out, command::USAGE_RSET);
        }
        self.reset_transaction();
        self.reply(out, &[REPLY_OK]);
    }

    fn handle_quit(&mut self, args: &[u8], out: &mut Vec<u8>) {
        if !args.is_empty() {
            return self.reject_syntax(out, command::USAGE_QUIT);
        }
        self.reset_transaction();
        self.reply(out, &["221 2.0.0 Bye"]);
        self.input = Input::Closed;
    }

    fn handle_vrfy(&mut self, args: &[u8], out: &mut Vec<u8>) {
        if args.is_empty() {
            return self.reject_syntax(out, command::USAGE_VRFY);
        }
        // Never reveals whether a user exists.
        self.reply(
            out,
            &["252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"],
        );
    }

    /// Starts the message of the current transaction: assigns the queue id and
    /// writes `Return-Path:` and `Received:`.
    fn start_message(&mut self, cx: &Context) {
        self.transactions += 1;
        let (tls, auth) = (self.tls_active, self.authenticated.is_some());
        // RFC 3848 (ESMTPS, ESMTPA, ESMTPSA) and RFC 6531 (UTF8SMTPS, ...).
        let protocol = if self.smtputf8 {
            "UTF8SMTP"
        } else if self.hello == Hello::Ehlo || tls || auth {
            "ESMTP"
        } else {
            "SMTP"
        };
        let suffix = match (tls, auth) {
            (true, true) => "SA",
            (true, false) => "S",
            (false, true) => "A",
            (false, false) => "",
        };
        let id = self.queue_id();
        self.message.clear();
        let _ = write!(
            self.message,
            "Return-Path: <{}>\r\nReceived: from {} ([{}])\r\n\tby {} (ringmail) with {}{} id {}",
            self.mail_from,
            self.hello_name,
            self.peer.ip,
            self.limits.hostname,
            protocol,
            suffix,
            id,
        );
        let date = DateTime::from_unix(cx.now_unix);
        let _ = match self.recipients.as_slice() {
            [recipient] => write!(self.message, "\r\n\tfor <{recipient}>; {date}\r\n"),
            _ => write!(self.message, ";\r\n\t{date}\r\n"),
        };
    }

    /// The id of the current transaction.
    fn queue_id(&self) -> QueueId {
        QueueId {
            session_id: self.session_id,
            transaction: self.transactions,
        }
    }

    /// Ends the transaction (keeps the greeting).
    fn reset_transaction(&mut self) {
        self.in_mail = false;
        self.mail_from.clear();
        self.recipients.clear();
        self.recipient_dsn.clear();
        self.ret = None;
        self.envid = None;
        self.rcpt_count = 0;
        self.smtputf8 = false;
        self.body_8bitmime = false;
        self.bdat_started = false;
        self.bdat_bytes = 0;
        self.message.clear();
    }

    fn close_with(&mut self, out: &mut Vec<u8>, code: &str, text: &str) {
        let limits = Arc::clone(&self.limits);
        self.reply(out, &[code, &limits.hostname, text]);
        self.reset_transaction();
        self.credentials = None;
        self.input = Input::Closed;
    }

    fn reply(&self, out: &mut Vec<u8>, parts: &[&str]) {
        for part in parts {
            out.extend_from_slice(part.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }

    /// A 4xx/5xx reply: counts toward `errors_max`.
    fn reject(&mut self, out: &mut Vec<u8>, reply: &str) {
        self.reject_parts(out, &[reply]);
    }

    fn reject_parts(&mut self, out: &mut Vec<u8>, parts: &[&str]) {
        self.errors += 1;
        self.reply(out, parts);
    }

    fn reject_syntax(&mut self, out: &mut Vec<u8>, usage: &str) {
        self.reject_parts(out, &["501 5.5.4 Syntax: ", usage]);
    }

    fn reject_command_error(&mut self, error: CommandError, out: &mut Vec<u8>) {
        match error {
            CommandError::Unrecognized => {
                self.reject(out, "502 5.5.2 Error: command not recognized")
            }
            CommandError::Syntax { usage } => self.reject_syntax(out, usage),
            CommandError::BadSender => self.reject(out, "501 5.1.7 Bad sender address syntax"),
            CommandError::BadRecipient => {
                self.reject(out, "501 5.1.3 Bad recipient address syntax")
            }
            CommandError::BadSize => self.reject(out, "501 5.5.4 Bad message size syntax"),
            // Postfix's wording, "Error: " on the RCPT ones only.
            CommandError::BadRet => self.reject(out, "501 5.5.4 Bad RET parameter syntax"),
            CommandError::BadEnvid => self.reject(out, "501 5.5.4 Bad ENVID parameter syntax"),
            CommandError::BadNotify => {
                self.reject(out, "501 5.5.4 Error: Bad NOTIFY parameter syntax")
            }
            CommandError::BadOrcpt => {
                self.reject(out, "501 5.5.4 Error: Bad ORCPT parameter syntax")
            }
            CommandError::UnsupportedParameter { parameter } => {
                self.errors += 1;
                out.extend_from_slice(b"555 5.5.4 Unsupported option: ");
                // Echo only printable ASCII of what the client sent.
                out.extend(parameter.iter().map(|&b| match b {
                    0x21..=0x7E => b,
                    _ => b'?',
                }));
                out.extend_from_slice(b"\r\n");
            }
        }
    }
}

fn data_error_reply(error: DataError) -> &'static str {
    match error {
        DataError::TooBig { .. } => REPLY_TOO_BIG,
        DataError::LineTooLong { .. } => "500 5.5.2 Error: message line too long",
    }
}

/// Queue id: the session id, then the transaction number in four digits,
/// uppercase hex (`2A0001`). Unique per (session_id, transaction number) as
/// long as the number stays within [`TRANSACTIONS_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct QueueId {
    session_id: u64,
    transaction: u32,
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}{:04X}", self.session_id, self.transaction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::transcript::{self, matches, unescape};
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Sun, 22 Nov 2026 03:45:16 +0000
    const NOW_UNIX: i64 = 1_795_319_116;
    const DATE: &str = "Sun, 22 Nov 2026 03:45:16 +0000";

    /// The environment of tests/transcripts/README. For the AUTH tests, alice may also
    /// send as sales@example.test (an alias of hers; it receives nothing here).
    struct TestDirectory;

    impl Directory for TestDirectory {
        fn is_local_domain(&self, domain: &str) -> bool {
            domain == "example.test"
        }
        fn accepts(&self, address: &str) -> bool {
            address == "alice@example.test" || address == "bob@example.test"
        }
        fn may_send_as(&self, user: &str, sender: &str) -> bool {
            user == sender || (user == "alice@example.test" && sender == "sales@example.test")
        }
    }

    const ALICE_PASSWORD: &str = "alice-Pa55word-7f3a";

    /// The credential check of the harness's driver: alice with her password; the user
    /// "down@example.test" finds the check unavailable.
    fn check_credentials(user: &str, password: &Secret) -> Result<String, AuthFailure> {
        let user = user.to_ascii_lowercase();
        match (user.as_str(), password.expose()) {
            ("alice@example.test", ALICE_PASSWORD) => Ok(user),
            ("down@example.test", _) => Err(AuthFailure::Unavailable),
            _ => Err(AuthFailure::Invalid),
        }
    }

    fn limits() -> Arc<Limits> {
        Arc::new(Limits::new("mx.example.test", 10_000, 3))
    }

    fn localhost() -> PeerInfo {
        PeerInfo {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 40_000,
        }
    }

    /// A driver like `smtp::server`: a bounded read buffer, bytes arriving in
    /// chunks, every delivery answered with `result`.
    struct Harness {
        session: Session,
        buffer: Vec<u8>,
        buffer_bytes_max: usize,
        out: Vec<u8>,
        closed: bool,
        delivered: Vec<Transaction>,
        result: DeliveryResult,
        /// User names the driver checked, in order.
        auth_checks: Vec<String>,
        /// Bytes dropped at each STARTTLS (one entry per handshake).
        discarded_at_starttls: Vec<Vec<u8>>,
        /// Transcripts: at Step::StartTls, stop and drop all input until the transcript's
        /// `C! starttls` (instead of handshaking at once).
        hold_tls: bool,
        /// Step::StartTls was returned and `hold_tls` holds the handshake back.
        tls_pending: bool,
    }

    impl Harness {
        fn new(limits: Arc<Limits>, peer: PeerInfo, buffer_bytes_max: usize) -> Harness {
            Harness::with_tls(limits, peer, buffer_bytes_max, false)
        }

        fn with_tls(
            limits: Arc<Limits>,
            peer: PeerInfo,
            buffer_bytes_max: usize,
            tls_active: bool,
        ) -> Harness {
            let mut session = Session::new(limits, peer, 0x2A, tls_active);
            let mut out = Vec::new();
            session.greeting(&mut out);
            Harness {
                session,
                buffer: Vec::new(),
                buffer_bytes_max,
                out,
                closed: false,
                delivered: Vec::new(),
                result: DeliveryResult::Stored,
                auth_checks: Vec::new(),
                discarded_at_starttls: Vec::new(),
                hold_tls: false,
                tls_pending: false,
            }
        }

        fn standard() -> Harness {
            let mut h = Harness::new(limits(), localhost(), 65_536);
            h.take_output();
            h
        }

        /// Sends `bytes` in pieces of `chunk_bytes`, never holding more than
        /// `buffer_bytes_max` unconsumed bytes.
        fn send_chunked(&mut self, bytes: &[u8], chunk_bytes: usize) {
            for piece in bytes.chunks(chunk_bytes.max(1)) {
                let mut piece = piece;
                while !piece.is_empty() && !self.closed {
                    if self.tls_pending {
                        // Plaintext sent before the handshake: the driver never reads it.
                        if let Some(discarded) = self.discarded_at_starttls.last_mut() {
                            discarded.extend_from_slice(piece);
                        }
                        break;
                    }
                    let room = self.buffer_bytes_max - self.buffer.len();
                    assert!(
                        room > 0,
                        "stuck: full buffer of {} bytes not consumed",
                        self.buffer.len()
                    );
                    let take = room.min(piece.len());
                    self.buffer.extend_from_slice(&piece[..take]);
                    piece = &piece[take..];
                    self.drive();
                }
            }
        }

        fn drive(&mut self) {
            let cx = Context {
                now_unix: NOW_UNIX,
                directory: &TestDirectory,
            };
            while !self.closed && !self.tls_pending {
                let (consumed, step) = self.session.advance(&self.buffer, &mut self.out, &cx);
                assert!(consumed <= self.buffer.len());
                self.buffer.drain(..consumed);
                match step {
                    Step::NeedInput => {
                        assert!(
                            self.buffer.len() < self.session.line_bytes_max(&self.buffer),
                            "NeedInput while holding {} bytes",
                            self.buffer.len()
                        );
                        assert!(
                            self.buffer.len() < self.session.limits.read_buffer_bytes_min(),
                            "NeedInput while holding {} bytes",
                            self.buffer.len()
                        );
                        break;
                    }
                    Step::Authenticate => {
                        let (user, password) = self.session.take_credentials().unwrap();
                        assert!(self.session.take_credentials().is_none());
                        let result = check_credentials(&user, &password);
                        self.auth_checks.push(user);
                        self.session.auth_result(result, &mut self.out);
                    }
                    Step::StartTls => {
                        // Flush, drop everything buffered, handshake.
                        self.discarded_at_starttls
                            .push(std::mem::take(&mut self.buffer));
                        if self.hold_tls {
                            self.tls_pending = true;
                        } else {
                            self.session.tls_started();
                        }
                    }
                    Step::Deliver => {
                        let mut transaction = self.session.take_transaction();
                        let recycled = std::mem::take(&mut transaction.message);
                        transaction.message = recycled.clone();
                        self.delivered.push(transaction);
                        self.session.delivered(self.result, recycled, &mut self.out);
                    }
                    Step::Close => self.closed = true,
                }
            }
        }

        fn send(&mut self, bytes: &[u8]) -> String {
            self.send_chunked(bytes, usize::MAX);
            self.take_output()
        }

        fn take_output(&mut self) -> String {
            let out = String::from_utf8(std::mem::take(&mut self.out)).unwrap();
            assert!(out.is_empty() || out.ends_with("\r\n"), "{out:?}");
            out
        }
    }

    const EHLO_REPLY: &str = "250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 10000\r\n\
        250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";

    fn ready() -> Harness {
        let mut h = Harness::standard();
        assert_eq!(h.send(b"EHLO client.test\r\n"), EHLO_REPLY);
        h
    }

    fn in_transaction() -> Harness {
        let mut h = ready();
        let reply = h.send(b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\n");
        assert_eq!(reply, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
        h
    }

    /// The message bytes after our Return-Path and Received headers.
    fn body(transaction: &Transaction) -> &[u8] {
        let m = &transaction.message;
        let received = m.windows(11).position(|w| w == b"\r\nReceived:").unwrap();
        let mut end = received + 2;
        loop {
            let lf = end + m[end..].iter().position(|&b| b == b'\n').unwrap();
            end = lf + 1;
            if m.get(end) != Some(&b'\t') {
                return &m[end..];
            }
        }
    }

    // ---- Rules, one test each ----

    #[test]
    fn greeting_and_ehlo_extensions_in_order() {
        let mut h = Harness::new(limits(), localhost(), 65_536);
        assert_eq!(h.take_output(), "220 mx.example.test ESMTP ringmail\r\n");
        assert_eq!(h.send(b"EHLO c\r\n"), EHLO_REPLY);
        assert_eq!(h.send(b"HELO c\r\n"), "250 mx.example.test\r\n");
        assert_eq!(h.send(b"EHLO\r\n"), "501 5.5.4 Syntax: EHLO hostname\r\n");
        assert_eq!(h.send(b"HELO \r\n"), "501 5.5.4 Syntax: HELO hostname\r\n");
    }

    #[test]
    fn sequence_errors_are_503() {
        let mut h = Harness::standard();
        let need_helo = "503 5.5.1 Error: send HELO/EHLO first\r\n";
        let need_mail = "503 5.5.1 Error: need MAIL command\r\n";
        assert_eq!(h.send(b"MAIL FROM:<a@b>\r\n"), need_helo);
        assert_eq!(h.send(b"RCPT TO:<alice@example.test>\r\n"), need_mail);
        assert_eq!(h.send(b"DATA\r\n"), need_mail);
        h.send(b"EHLO c\r\n");
        assert_eq!(h.send(b"MAIL FROM:<a@b>\r\n"), "250 2.1.0 Ok\r\n");
        assert_eq!(
            h.send(b"MAIL FROM:<a@b>\r\n"),
            "503 5.5.1 Error: nested MAIL command\r\n"
        );
        assert_eq!(
            h.send(b"DATA\r\n"),
            "503 5.5.1 Error: need RCPT command\r\n"
        );
        // Sequence is checked before syntax, as in Postfix.
        assert_eq!(
            h.send(b"MAIL garbage\r\n"),
            "503 5.5.1 Error: nested MAIL command\r\n"
        );
    }

    #[test]
    fn ehlo_and_helo_reset_the_transaction() {
        let mut h = in_transaction();
        assert_eq!(h.send(b"HELO again\r\n"), "250 mx.example.test\r\n");
        assert_eq!(
            h.send(b"DATA\r\n"),
            "503 5.5.1 Error: need MAIL command\r\n"
        );
        assert_eq!(h.send(b"MAIL FROM:<a@b>\r\n"), "250 2.1.0 Ok\r\n");
    }

    #[test]
    fn unknown_command_is_502() {
        let mut h = Harness::standard();
        let reply = "502 5.5.2 Error: command not recognized\r\n";
        assert_eq!(h.send(b"XYZZY\r\n"), reply);
        assert_eq!(h.send(b"EXPN staff\r\n"), reply);
        assert_eq!(h.send(b"\r\n"), reply);
    }

    #[test]
    fn syntax_errors_are_501_and_parameters_555() {
        let mut h = ready();
        assert_eq!(
            h.send(b"MAIL FROM:<a@b\r\n"),
            "501 5.1.7 Bad sender address syntax\r\n"
        );
        assert_eq!(
            h.send(b"MAIL FROM:<a@b> SIZE=x\r\n"),
            "501 5.5.4 Bad message size syntax\r\n"
        );
        assert_eq!(
            h.send(b"MAIL FROM:<a@b> BODY=BINARYMIME\r\n"),
            "555 5.5.4 Unsupported option: BODY=BINARYMIME\r\n"
        );
        // The echoed parameter is sanitized.
        assert_eq!(
            h.send(b"MAIL FROM:<a@b> X=\x1b[1m\xff\r\n"),
            "555 5.5.4 Unsupported option: X=?[1m?\r\n"
        );
        h.send(b"MAIL FROM:<a@b>\r\n");
        assert_eq!(
            h.send(b"RCPT TO:alice\r\n"),
            "501 5.1.3 Bad recipient address syntax\r\n"
        );
        assert_eq!(
            h.send(b"RCPT TO:\r\n"),
            "501 5.5.4 Syntax: RCPT TO:<address>\r\n"
        );
        assert_eq!(
            h.send(b"RCPT TO:<alice@example.test> ORCPT=rfc822;x@y X=1\r\n"),
            "555 5.5.4 Unsupported option: X=1\r\n"
        );
    }

    #[test]
    fn dsn_parameters_reach_the_transaction() {
        let mut h = ready();
        assert_eq!(
            h.send(b"MAIL FROM:<s@remote.test> RET=HDRS ENVID=QQ+2B314\r\n"),
            "250 2.1.0 Ok\r\n"
        );
        for line in [
            &b"RCPT TO:<alice@example.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;Alice+40example.test\r\n"[..],
            b"RCPT TO:<bob@example.test>\r\n",
            // A duplicate keeps the parameters of its first RCPT.
            b"RCPT TO:<ALICE@example.test> NOTIFY=NEVER\r\n",
        ] {
            assert_eq!(h.send(line), "250 2.1.5 Ok\r\n");
        }
        h.send(b"DATA\r\n");
        assert!(h
            .send(b"x\r\n.\r\n")
            .starts_with("250 2.0.0 Ok: queued as "));
        let t = h.delivered.pop().unwrap();
        assert_eq!(t.recipients, ["alice@example.test", "bob@example.test"]);
        assert_eq!(t.ret, Some(Ret::Hdrs));
        assert_eq!(t.envid.as_deref(), Some("QQ+2B314"));
        let alice = RecipientDsn {
            notify: Notify::from_bits(Notify::SUCCESS | Notify::DELAY),
            orcpt: Some("rfc822;Alice+40example.test".into()),
        };
        assert_eq!(t.recipient_dsn, [alice, RecipientDsn::default()]);
        // The next transaction starts without them.
        h.send(b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n.\r\n");
        let t = h.delivered.pop().unwrap();
        assert_eq!((t.ret, t.envid), (None, None));
        assert_eq!(t.recipient_dsn, [RecipientDsn::default()]);
        // So does a transaction after RSET.
        h.send(b"MAIL FROM:<s@remote.test> RET=FULL ENVID=1\r\nRSET\r\n");
        h.send(b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<bob@example.test> NOTIFY=NEVER\r\n");
        h.send(b"DATA\r\n.\r\n");
        let t = h.delivered.pop().unwrap();
        assert_eq!((t.ret, t.envid), (None, None));
        assert_eq!(t.recipient_dsn[0].notify, Notify::from_bits(Notify::NEVER));
    }

    #[test]
    fn bad_dsn_parameters_get_postfix_replies() {
        let mut h = ready();
        for (line, reply) in [
            (
                &b"MAIL FROM:<a@b> RET=NONE\r\n"[..],
                "501 5.5.4 Bad RET parameter syntax\r\n",
            ),
            (
                b"MAIL FROM:<a@b> RET=FULL RET=FULL\r\n",
                "501 5.5.4 Bad RET parameter syntax\r\n",
            ),
            (
                b"MAIL FROM:<a@b> ENVID=a+0D+0A\r\n",
                "501 5.5.4 Bad ENVID parameter syntax\r\n",
            ),
            (
                b"MAIL FROM:<a@b> ENVID=a ENVID=b\r\n",
                "501 5.5.4 Bad ENVID parameter syntax\r\n",
            ),
        ] {
            assert_eq!(h.send(line), reply);
        }
        h.send(b"MAIL FROM:<a@b>\r\n");
        for (line, reply) in [
            (
                &b"RCPT TO:<bob@example.test> NOTIFY=NEVER,DELAY\r\n"[..],
                "501 5.5.4 Error: Bad NOTIFY parameter syntax\r\n",
            ),
            (
                b"RCPT TO:<bob@example.test> NOTIFY=DELAY NOTIFY=DELAY\r\n",
                "501 5.5.4 Error: Bad NOTIFY parameter syntax\r\n",
            ),
            (
                b"RCPT TO:<bob@example.test> ORCPT=bob@example.test\r\n",
                "501 5.5.4 Error: Bad ORCPT parameter syntax\r\n",
            ),
        ] {
            assert_eq!(h.send(line), reply);
        }
        // Refused recipients were not added: DATA needs one.
        assert_eq!(
            h.send(b"DATA\r\n"),
            "503 5.5.1 Error: need RCPT command\r\n"
        );
    }

    #[test]
    fn size_parameter_over_limit_is_552() {
        let mut h = ready();
        let reply = "552 5.3.4 Message size exceeds fixed limit\r\n";
        assert_eq!(h.send(b"MAIL FROM:<a@b> SIZE=10001\r\n"), reply);
        assert_eq!(
            h.send(b"MAIL FROM:<a@b> SIZE=10000\r\n"),
            "250 2.1.0 Ok\r\n"
        );
    }

    #[test]
    fn non_ascii_address_needs_smtputf8() {
        let mut h = ready();
        let reply = "553 5.6.7 Must declare SMTPUTF8 to send unicode address\r\n";
        assert_eq!(h.send("MAIL FROM:<ü@x.test>\r\n".as_bytes()), reply);
        h.send(b"MAIL FROM:<a@x.test>\r\n");
        assert_eq!(h.send("RCPT TO:<ü@example.test>\r\n".as_bytes()), reply);
        h.send(b"RSET\r\n");
        assert_eq!(
            h.send("MAIL FROM:<ü@x.test> SMTPUTF8\r\n".as_bytes()),
            "250 2.1.0 Ok\r\n"
        );
        assert!(h
            .send("RCPT TO:<ü@example.test>\r\n".as_bytes())
            .starts_with("550 5.1.1 <ü@"));
    }

    #[test]
    fn rcpt_outcomes() {
        let mut h = ready();
        h.send(b"MAIL FROM:<a@b>\r\n");
        assert_eq!(
            h.send(b"RCPT TO:<Bob@EXAMPLE.test>\r\n"),
            "250 2.1.5 Ok\r\n"
        );
        assert_eq!(
            h.send(b"RCPT TO:<carol@example.test>\r\n"),
            "550 5.1.1 <carol@example.test>: Recipient address rejected: User unknown in local recipient table\r\n"
        );
        assert_eq!(
            h.send(b"RCPT TO:<bob@elsewhere.test>\r\n"),
            "554 5.7.1 <bob@elsewhere.test>: Relay access denied\r\n"
        );
        assert_eq!(
            h.send(b"RCPT TO:<bob@[192.0.2.1]>\r\n"),
            "554 5.7.1 <bob@[192.0.2.1]>: Relay access denied\r\n"
        );
        assert_eq!(
            h.send(b"RCPT TO:<bob@example.test.>\r\n"),
            "554 5.7.1 <bob@example.test.>: Relay access denied\r\n"
        );
        assert_eq!(
            h.send(b"RCPT TO:<@example.test:bob@elsewhere.test>\r\n"),
            "554 5.7.1 <bob@elsewhere.test>: Relay access denied\r\n"
        );
        assert!(h
            .send(b"RCPT TO:<bob%elsewhere.test@example.test>\r\n")
            .starts_with("550 5.1.1"));
        assert!(h
            .send(b"RCPT TO:<elsewhere.test!bob@example.test>\r\n")
            .starts_with("550 5.1.1"));
        assert_eq!(
            h.send(b"RCPT TO:<\"BOB\"@example.test>\r\n"),
            "250 2.1.5 Ok\r\n"
        );
        h.send(b"DATA\r\n.\r\n");
        assert_eq!(h.delivered[0].recipients, ["bob@example.test"]);
    }

    #[test]
    fn too_many_recipients_is_452_and_duplicates_are_stored_once() {
        let mut h = ready();
        h.send(b"MAIL FROM:<a@b>\r\n");
        let ok = "250 2.1.5 Ok\r\n";
        assert_eq!(h.send(b"RCPT TO:<bob@example.test>\r\n"), ok);
        assert_eq!(h.send(b"RCPT TO:<alice@example.test>\r\n"), ok);
        assert_eq!(h.send(b"RCPT TO:<BOB@example.test>\r\n"), ok);
        let too_many = "452 4.5.3 Error: too many recipients\r\n";
        assert_eq!(h.send(b"RCPT TO:<alice@example.test>\r\n"), too_many);
        // Rejected RCPTs do not count toward the limit.
        let mut h2 = ready();
        h2.send(b"MAIL FROM:<a@b>\r\n");
        for _ in 0..5 {
            assert!(h2.send(b"RCPT TO:<x@remote.test>\r\n").starts_with("554"));
        }
        assert_eq!(h2.send(b"RCPT TO:<bob@example.test>\r\n"), ok);
        h.send(b"DATA\r\n.\r\n");
        assert_eq!(
            h.delivered[0].recipients,
            ["bob@example.test", "alice@example.test"]
        );
    }

    #[test]
    fn data_delivers_with_trace_headers_one_recipient() {
        let mut h = in_transaction();
        assert_eq!(
            h.send(b"DATA\r\n"),
            "354 End data with <CR><LF>.<CR><LF>\r\n"
        );
        assert_eq!(h.session.phase(), Phase::Data);
        assert_eq!(
            h.send(b"Subject: t\r\n\r\nbody\r\n.\r\n"),
            "250 2.0.0 Ok: queued as 2A0001\r\n"
        );
        assert_eq!(h.session.phase(), Phase::Command);
        let t = &h.delivered[0];
        assert_eq!(t.queue_id, "2A0001");
        assert_eq!(t.mail_from, "s@remote.test");
        assert_eq!(t.recipients, ["alice@example.test"]);
        assert!(!t.smtputf8 && !t.body_8bitmime);
        let want = format!(
            "Return-Path: <s@remote.test>\r\n\
             Received: from client.test ([127.0.0.1])\r\n\
             \tby mx.example.test (ringmail) with ESMTP id 2A0001\r\n\
             \tfor <alice@example.test>; {DATE}\r\n\
             Subject: t\r\n\r\nbody\r\n"
        );
        assert_eq!(String::from_utf8_lossy(&t.message), want);
    }

    #[test]
    fn trace_headers_several_recipients_helo_ipv6_null_sender() {
        let peer = PeerInfo {
            ip: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            port: 1,
        };
        let mut h = Harness::new(limits(), peer, 65_536);
        h.take_output();
        h.send(b"HELO [192.0.2.9]\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\n");
        h.send(b"RCPT TO:<bob@example.test>\r\nDATA\r\nx\r\n.\r\n");
        let want = format!(
            "Return-Path: <>\r\n\
             Received: from [192.0.2.9] ([2001:db8::1])\r\n\
             \tby mx.example.test (ringmail) with SMTP id 2A0001;\r\n\
             \t{DATE}\r\n\
             x\r\n"
        );
        assert_eq!(String::from_utf8_lossy(&h.delivered[0].message), want);
        assert_eq!(h.delivered[0].mail_from, "");
    }

    #[test]
    fn smtputf8_and_8bitmime_flags_reach_the_transaction() {
        let mut h = ready();
        h.send("MAIL FROM:<ü@x.test> SMTPUTF8 BODY=8BITMIME\r\n".as_bytes());
        h.send(b"RCPT TO:<bob@example.test>\r\nDATA\r\n.\r\n");
        let t = &h.delivered[0];
        assert!(t.smtputf8 && t.body_8bitmime);
        assert_eq!(t.mail_from, "ü@x.test");
        assert!(String::from_utf8_lossy(&t.message).contains(" with UTF8SMTP id "));
    }

    #[test]
    fn data_refused_after_limits_and_session_stays_usable() {
        let mut h = in_transaction();
        h.send(b"DATA\r\n");
        let mut big = b"x".repeat(998);
        big.extend_from_slice(b"\r\n");
        let wire: Vec<u8> = big.repeat(11).into_iter().chain(*b".\r\n").collect();
        assert_eq!(h.send(&wire), "552 5.3.4 Error: message file too big\r\n");
        // At most the limit (plus headers) was ever stored: Vec doubling
        // bounds the capacity by twice that.
        assert!(h.session.message.capacity() <= 2 * (10_000 + 1_000));
        h.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n");
        let long: Vec<u8> = b"y"
            .repeat(1_001)
            .into_iter()
            .chain(*b"\r\n.\r\n")
            .collect();
        assert_eq!(h.send(&long), "500 5.5.2 Error: message line too long\r\n");
        assert_eq!(h.send(b"MAIL FROM:<a@b>\r\n"), "250 2.1.0 Ok\r\n");
        assert!(h.delivered.is_empty());
    }

    #[test]
    fn dot_unstuffing_and_only_crlf_dot_crlf_ends_data() {
        let mut h = in_transaction();
        h.send(b"DATA\r\n");
        let reply = h.send(b"..a\r\nb\n.\nc\n.\r\nd\r.\r\n.\r\n");
        assert_eq!(reply, "250 2.0.0 Ok: queued as 2A0001\r\n");
        assert_eq!(body(&h.delivered[0]), b".a\r\nb\n.\nc\n.\r\nd\r.\r\n");
    }

    #[test]
    fn data_end_split_across_calls() {
        let mut h = in_transaction();
        h.send(b"DATA\r\nhi\r");
        assert_eq!(h.send(b"\n."), "");
        assert_eq!(h.send(b"\r"), "");
        assert_eq!(
            h.send(b"\nNOOP\r\n"),
            "250 2.0.0 Ok: queued as 2A0001\r\n250 2.0.0 Ok\r\n"
        );
        assert_eq!(body(&h.delivered[0]), b"hi\r\n");
    }

    #[test]
    fn bdat_chunks_are_binary_and_last_delivers() {
        let mut h = in_transaction();
        assert_eq!(
            h.send(b"BDAT 5\r\n.\r\n\0x"),
            "250 2.0.0 5 octets received\r\n"
        );
        assert_eq!(h.session.phase(), Phase::Command);
        h.send(b"BDAT 4 LAST\r\n");
        assert_eq!(h.session.phase(), Phase::Data);
        assert_eq!(h.send(b"..\r\n"), "250 2.0.0 Ok: queued as 2A0001\r\n");
        assert_eq!(body(&h.delivered[0]), b".\r\n\0x..\r\n");
        // BDAT 0 LAST: an empty message.
        h.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<bob@example.test>\r\n");
        assert_eq!(
            h.send(b"BDAT 0 LAST\r\n"),
            "250 2.0.0 Ok: queued as 2A0002\r\n"
        );
        assert_eq!(body(&h.delivered[1]), b"");
    }

    #[test]
    fn bdat_out_of_sequence_consumes_then_503() {
        let mut h = ready();
        assert_eq!(
            h.send(b"BDAT 6\r\nQUIT\r\n"),
            "503 5.5.1 Error: need MAIL command\r\n"
        );
        h.send(b"MAIL FROM:<a@b>\r\n");
        assert_eq!(
            h.send(b"BDAT 2 LAST\r\nxx"),
            "503 5.5.1 Error: need RCPT command\r\n"
        );
        // Garbage size: 501 and the next bytes are commands.
        assert_eq!(
            h.send(b"BDAT 1x\r\nNOOP\r\n"),
            "501 5.5.4 Syntax: BDAT chunk-size [LAST]\r\n250 2.0.0 Ok\r\n"
        );
        h.send(b"RCPT TO:<bob@example.test>\r\nBDAT 1\r\nx");
        assert_eq!(h.send(b"DATA\r\n"), "503 5.5.1 Error: DATA after BDAT\r\n");
    }

    #[test]
    fn bdat_size_limit_across_chunks() {
        let mut h = in_transaction();
        let chunk = b"z".repeat(6_000);
        let mut wire = b"BDAT 6000\r\n".to_vec();
        wire.extend_from_slice(&chunk);
        assert_eq!(h.send(&wire), "250 2.0.0 6000 octets received\r\n");
        // A huge chunk is refused at once, read through, never stored.
        h.send(b"BDAT 18446744073709551615 LAST\r\n");
        for _ in 0..100 {
            h.send(&[b'q'; 65_536]);
        }
        assert!(h.session.message.len() <= 10_000);
        assert_eq!(h.session.phase(), Phase::Data);
    }

    #[test]
    fn bdat_overflow_resets_transaction() {
        let mut h = in_transaction();
        let mut wire = b"BDAT 10001 LAST\r\n".to_vec();
        wire.extend_from_slice(&[b'a'; 10_001]);
        assert_eq!(h.send(&wire), "552 5.3.4 Error: message file too big\r\n");
        assert_eq!(
            h.send(b"DATA\r\n"),
            "503 5.5.1 Error: need MAIL command\r\n"
        );
    }

    #[test]
    fn rset_noop_help_vrfy_quit() {
        let mut h = in_transaction();
        assert_eq!(h.send(b"RSET\r\n"), "250 2.0.0 Ok\r\n");
        assert_eq!(
            h.send(b"DATA\r\n"),
            "503 5.5.1 Error: need MAIL command\r\n"
        );
        assert_eq!(h.send(b"RSET x\r\n"), "501 5.5.4 Syntax: RSET\r\n");
        assert_eq!(h.send(b"NOOP\r\n"), "250 2.0.0 Ok\r\n");
        assert!(h.send(b"HELP\r\n").starts_with("214 2.0.0 "));
        let vrfy = h.send(b"VRFY alice\r\n");
        assert!(vrfy.starts_with("252 2.0.0 "));
        assert_eq!(h.send(b"VRFY nobody@nowhere\r\n"), vrfy);
        assert!(!h.closed);
        assert_eq!(h.send(b"QUIT\r\nNOOP\r\n"), "221 2.0.0 Bye\r\n");
        assert!(h.closed);
        // After close, advance consumes nothing and keeps saying Close.
        let cx = Context {
            now_unix: 0,
            directory: &TestDirectory,
        };
        let mut out = Vec::new();
        assert_eq!(
            h.session.advance(b"NOOP\r\n", &mut out, &cx),
            (0, Step::Close)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn forbidden_web_commands_close() {
        let mut h = Harness::standard();
        assert_eq!(
            h.send(b"POST /x HTTP/1.1\r\n"),
            "221 2.7.0 Error: I can break rules, too. Goodbye.\r\n"
        );
        assert!(h.closed);
    }

    #[test]
    fn too_many_errors_then_421_and_close() {
        let mut h = ready();
        for _ in 0..19 {
            h.send(b"BAD\r\n");
        }
        assert!(!h.closed);
        assert_eq!(
            h.send(b"BAD\r\nNOOP\r\n"),
            "502 5.5.2 Error: command not recognized\r\n\
             421 4.7.0 mx.example.test Error: too many errors\r\n"
        );
        assert!(h.closed);
    }

    #[test]
    fn delivery_resets_the_error_count() {
        let mut h = ready();
        for _ in 0..19 {
            h.send(b"BAD\r\n");
        }
        h.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n.\r\n");
        for _ in 0..19 {
            h.send(b"BAD\r\n");
        }
        assert!(!h.closed);
        h.send(b"BAD\r\n");
        assert!(h.closed);
    }

    #[test]
    fn overlong_command_line_is_discarded_without_buffering() {
        let mut h = Harness::new(limits(), localhost(), 512);
        h.take_output();
        let mut line = b"MAIL FROM:<".to_vec();
        line.extend_from_slice(&[b'a'; 100_000]);
        line.extend_from_slice(b"@b>\r\nNOOP\r\n");
        h.send_chunked(&line, 1_000);
        assert_eq!(
            h.take_output(),
            "500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n"
        );
        assert!(h.buffer.is_empty());
        // A partial line within the limit consumes nothing.
        let cx = Context {
            now_unix: 0,
            directory: &TestDirectory,
        };
        let mut out = Vec::new();
        assert_eq!(
            h.session.advance(b"NOOP", &mut out, &cx),
            (0, Step::NeedInput)
        );
    }

    #[test]
    fn storage_failures_give_4xx_and_reset() {
        let mut h = in_transaction();
        h.result = DeliveryResult::DiskFull;
        assert_eq!(
            h.send(b"DATA\r\n.\r\n"),
            "354 End data with <CR><LF>.<CR><LF>\r\n452 4.3.1 Insufficient system storage\r\n"
        );
        h.result = DeliveryResult::TempFail;
        h.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n");
        assert_eq!(
            h.send(b".\r\n"),
            "451 4.3.0 Error: queue file write error\r\n"
        );
        assert_eq!(
            h.send(b"DATA\r\n"),
            "503 5.5.1 Error: need MAIL command\r\n"
        );
        assert_eq!(h.send(b"MAIL FROM:<a@b>\r\n"), "250 2.1.0 Ok\r\n");
    }

    #[test]
    fn recycled_buffer_is_reused() {
        let mut h = in_transaction();
        h.send(b"DATA\r\n");
        let cx = Context {
            now_unix: NOW_UNIX,
            directory: &TestDirectory,
        };
        let mut out = Vec::new();
        assert_eq!(
            h.session.advance(b"x\r\n.\r\n", &mut out, &cx),
            (6, Step::Deliver)
        );
        // Until `delivered`, advance keeps asking for delivery and consumes nothing.
        assert_eq!(
            h.session.advance(b"NOOP\r\n", &mut out, &cx),
            (0, Step::Deliver)
        );
        let transaction = h.session.take_transaction();
        let mut recycled = transaction.message;
        recycled.reserve(1 << 16);
        let capacity = recycled.capacity();
        h.session
            .delivered(DeliveryResult::Stored, recycled, &mut out);
        assert_eq!(h.session.message.capacity(), capacity);
        assert!(h.session.message.is_empty());
    }

    #[test]
    fn in_transaction_spans_mail_to_the_end_of_the_transaction() {
        let mut h = ready();
        assert!(!h.session.in_transaction());
        h.send(b"MAIL FROM:<a@b>\r\n");
        assert!(h.session.in_transaction());
        h.send(b"RSET\r\n");
        assert!(!h.session.in_transaction());
        h.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nx");
        assert!(h.session.in_transaction());
        h.send(b"\r\n.\r\n");
        assert!(!h.session.in_transaction());
        h.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<bob@example.test>\r\nBDAT 1 LAST\r\n");
        assert!(h.session.in_transaction());
        let cx = Context {
            now_unix: 0,
            directory: &TestDirectory,
        };
        let mut out = Vec::new();
        assert_eq!(h.session.advance(b"x", &mut out, &cx), (1, Step::Deliver));
        assert!(h.session.in_transaction());
        let transaction = h.session.take_transaction();
        h.session
            .delivered(DeliveryResult::Stored, transaction.message, &mut out);
        assert!(!h.session.in_transaction());
    }

    #[test]
    fn timeout_and_shutdown_replies_close() {
        let mut h = in_transaction();
        h.send(b"DATA\r\n");
        let mut out = Vec::new();
        h.session.timeout(&mut out);
        assert_eq!(
            out,
            b"421 4.4.2 mx.example.test Error: timeout exceeded\r\n"
        );
        assert_eq!(h.session.phase(), Phase::Command);
        let mut h = ready();
        let mut out = Vec::new();
        h.session.shutting_down(&mut out);
        assert_eq!(out, b"421 4.3.2 mx.example.test Service shutting down\r\n");
        h.drive();
        assert!(h.closed);
    }

    #[test]
    fn queue_ids_are_unique_per_session_and_transaction() {
        let mut seen = std::collections::HashSet::new();
        for session_id in [0u64, 1, 0x10, 0x100, 0xFFFF, 0x1_0000, u64::MAX] {
            let mut s = Session::new(limits(), localhost(), session_id, false);
            for transactions in [0u32, 1, 0x10, 0xFFFF] {
                s.transactions = transactions;
                let id = s.queue_id().to_string();
                assert!(id.len() <= 20 && id.bytes().all(|b| b.is_ascii_hexdigit()));
                assert_eq!(id, id.to_ascii_uppercase());
                assert!(seen.insert(id.clone()), "duplicate {id}");
            }
        }
    }

    #[test]
    fn transactions_per_session_are_limited() {
        let mut h = ready();
        h.session.transactions = TRANSACTIONS_MAX - 1;
        h.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n.\r\n");
        assert_eq!(h.delivered[0].queue_id, "2AFFFF");
        assert_eq!(
            h.send(b"MAIL FROM:<a@b>\r\n"),
            "421 4.7.0 mx.example.test Error: too many messages in one session\r\n"
        );
        assert!(h.closed);
    }

    #[test]
    fn command_case_and_space_before_angle() {
        let mut h = ready();
        assert_eq!(h.send(b"mail from: <a@b>\r\n"), "250 2.1.0 Ok\r\n");
        assert_eq!(
            h.send(b"rcpt to: <ALICE@example.test>\r\n"),
            "250 2.1.5 Ok\r\n"
        );
        assert_eq!(
            h.send(b"data\r\n"),
            "354 End data with <CR><LF>.<CR><LF>\r\n"
        );
    }

    #[test]
    fn random_token_soup_never_panics_or_stalls() {
        // Pieces of commands, paths and data glued at random: every input must
        // be handled without a panic, and a full buffer always makes progress
        // (the harness asserts that).
        const TOKENS: [&[u8]; 24] = [
            b"EHLO x\r\n",
            b"MAIL FROM:<",
            b"RCPT TO:<",
            b"DATA\r\n",
            b"BDAT ",
            b"1",
            b"0",
            b" LAST",
            b"\r\n",
            b"\n",
            b"\r",
            b".",
            b"@",
            b">",
            b"<",
            b"\"",
            b"\\",
            b"[",
            b"]",
            b":",
            b",",
            b"\xff",
            b" SIZE=9",
            b"alice@example.test",
        ];
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..500 {
            let mut input = Vec::new();
            for _ in 0..(next() % 200) {
                input.extend_from_slice(TOKENS[(next() % TOKENS.len() as u64) as usize]);
            }
            let mut h = Harness::new(limits(), localhost(), 512);
            h.send_chunked(&input, 1 + (next() % 64) as usize);
            let out = h.take_output();
            assert!(out
                .lines()
                .all(|l| l.len() >= 3 && l.as_bytes()[..3].iter().all(u8::is_ascii_digit)));
        }
    }

    // ---- STARTTLS, AUTH, submission, relay (issue 4) ----

    fn limits_with(configure: impl FnOnce(&mut Limits)) -> Arc<Limits> {
        let mut limits = Limits::new("mx.example.test", 10_000, 3);
        configure(&mut limits);
        Arc::new(limits)
    }

    /// A session on a listener with a certificate (STARTTLS offered), not yet on TLS.
    fn starttls_listener() -> Harness {
        let mut h = Harness::new(limits_with(|l| l.tls_available = true), localhost(), 65_536);
        h.take_output();
        h
    }

    /// An implicit-TLS (or post-STARTTLS) session: AUTH offered.
    fn tls_session(configure: impl FnOnce(&mut Limits)) -> Harness {
        let mut h = Harness::with_tls(limits_with(configure), localhost(), 65_536, true);
        h.take_output();
        h
    }

    fn ehlo_reply(extra: &[&str]) -> String {
        let mut lines = vec!["250-mx.example.test", "250-PIPELINING", "250-SIZE 10000"];
        lines.extend_from_slice(extra);
        lines.extend_from_slice(&[
            "250-8BITMIME",
            "250-ENHANCEDSTATUSCODES",
            "250-DSN",
            "250-SMTPUTF8",
            "250 CHUNKING",
        ]);
        lines.iter().map(|l| format!("{l}\r\n")).collect()
    }

    fn plain(authzid: &str, user: &str, password: &str) -> String {
        sasl::base64_encode(format!("{authzid}\0{user}\0{password}").as_bytes())
    }

    fn b64(text: &str) -> String {
        sasl::base64_encode(text.as_bytes())
    }

    /// EHLO, then AUTH PLAIN as alice with an initial response.
    fn logged_in(configure: impl FnOnce(&mut Limits)) -> Harness {
        let mut h = tls_session(configure);
        h.send(b"EHLO client.test\r\n");
        let line = format!(
            "AUTH PLAIN {}\r\n",
            plain("", "alice@example.test", ALICE_PASSWORD)
        );
        assert_eq!(
            h.send(line.as_bytes()),
            "235 2.7.0 Authentication successful\r\n"
        );
        assert_eq!(h.session.authenticated(), Some("alice@example.test"));
        h
    }

    #[test]
    fn ehlo_offers_starttls_and_auth_by_listener() {
        let cases: [(bool, bool, bool, &[&str]); 6] = [
            // (tls_available, allow_plaintext_auth, tls_active, extra lines)
            (false, false, false, &[]),
            (true, false, false, &["250-STARTTLS"]),
            (true, false, true, &["250-AUTH PLAIN LOGIN"]),
            (false, false, true, &["250-AUTH PLAIN LOGIN"]),
            (false, true, false, &["250-AUTH PLAIN LOGIN"]),
            (true, true, false, &["250-STARTTLS", "250-AUTH PLAIN LOGIN"]),
        ];
        for (tls_available, plaintext, tls_active, extra) in cases {
            let limits = limits_with(|l| {
                l.tls_available = tls_available;
                l.allow_plaintext_auth = plaintext;
            });
            let mut h = Harness::with_tls(limits, localhost(), 65_536, tls_active);
            h.take_output();
            assert_eq!(
                h.send(b"EHLO c\r\n"),
                ehlo_reply(extra),
                "{tls_available} {plaintext} {tls_active}"
            );
            // HELO lists nothing either way.
            assert_eq!(h.send(b"HELO c\r\n"), "250 mx.example.test\r\n");
        }
        assert_eq!(ehlo_reply(&[]), EHLO_REPLY);
    }

    #[test]
    fn starttls_replies_follow_postfix() {
        let mut h = Harness::standard();
        h.send(b"EHLO c\r\n");
        assert_eq!(
            h.send(b"STARTTLS\r\n"),
            "502 5.5.1 Error: command not implemented\r\n"
        );
        let mut h = starttls_listener();
        assert_eq!(
            h.send(b"STARTTLS\r\n"),
            "503 5.5.1 Error: send HELO/EHLO first\r\n"
        );
        h.send(b"EHLO c\r\n");
        assert_eq!(
            h.send(b"STARTTLS now\r\n"),
            "501 5.5.4 Syntax: STARTTLS\r\n"
        );
        assert_eq!(h.session.errors, 2);
        assert!(h.discarded_at_starttls.is_empty());
        assert_eq!(h.send(b"starttls\r\n"), "220 2.0.0 Ready to start TLS\r\n");
        assert_eq!(h.discarded_at_starttls, [b"".to_vec()]);
        assert!(h.session.tls_active());
        // After the handshake: EHLO again, STARTTLS no longer offered nor accepted.
        assert_eq!(h.send(b"EHLO c\r\n"), ehlo_reply(&["250-AUTH PLAIN LOGIN"]));
        assert_eq!(
            h.send(b"STARTTLS\r\n"),
            "554 5.5.1 Error: TLS already active\r\n"
        );
        // Implicit TLS: already active from the start.
        let mut h = tls_session(|l| l.tls_available = true);
        assert_eq!(
            h.send(b"STARTTLS\r\n"),
            "554 5.5.1 Error: TLS already active\r\n"
        );
    }

    #[test]
    fn starttls_stops_reading_at_its_line_and_waits_for_the_handshake() {
        let mut h = starttls_listener();
        h.send(b"EHLO c\r\n");
        let cx = Context {
            now_unix: NOW_UNIX,
            directory: &TestDirectory,
        };
        let mut out = Vec::new();
        let input = b"STARTTLS\r\nMAIL FROM:<evil@remote.test>\r\n";
        assert_eq!(
            h.session.advance(input, &mut out, &cx),
            (10, Step::StartTls)
        );
        assert_eq!(out, b"220 2.0.0 Ready to start TLS\r\n");
        // Until the handshake is reported nothing more is read.
        assert_eq!(
            h.session.advance(&input[10..], &mut out, &cx),
            (0, Step::StartTls)
        );
        assert_eq!(h.session.phase(), Phase::Command);
        h.session.tls_started();
        let mut out = Vec::new();
        assert_eq!(
            h.session.advance(b"NOOP\r\n", &mut out, &cx),
            (6, Step::NeedInput)
        );
        assert_eq!(out, b"250 2.0.0 Ok\r\n");
    }

    /// CVE-2011-0411: commands pipelined after STARTTLS in plaintext must not be
    /// executed after the handshake.
    #[test]
    fn regression_cve_2011_0411_starttls_command_injection() {
        let mut h = starttls_listener();
        let injected = b"MAIL FROM:<evil@remote.test>\r\nRCPT TO:<alice@example.test>\r\n";
        let input = [
            b"EHLO c\r\nMAIL FROM:<a@remote.test>\r\nSTARTTLS\r\n".as_slice(),
            injected,
        ]
        .concat();
        let reply = h.send(&input);
        assert_eq!(
            reply,
            [
                ehlo_reply(&["250-STARTTLS"]).as_str(),
                "250 2.1.0 Ok\r\n",
                "220 2.0.0 Ready to start TLS\r\n"
            ]
            .concat()
        );
        assert_eq!(h.discarded_at_starttls, [injected.to_vec()]);
        // Everything was forgotten: the EHLO name and the transaction.
        assert_eq!(
            h.send(b"RCPT TO:<alice@example.test>\r\n"),
            "503 5.5.1 Error: need MAIL command\r\n"
        );
        assert_eq!(
            h.send(b"MAIL FROM:<a@remote.test>\r\n"),
            "503 5.5.1 Error: send HELO/EHLO first\r\n"
        );
        h.send(b"EHLO after.tls\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<bob@example.test>\r\n");
        h.send(b"DATA\r\nx\r\n.\r\n");
        let message = String::from_utf8(h.delivered[0].message.clone()).unwrap();
        assert!(
            message.contains("from after.tls ([127.0.0.1])"),
            "{message}"
        );
        assert!(message.contains("with ESMTPS id"), "{message}");
        assert!(h.delivered[0].tls);
        assert_eq!(h.delivered[0].authenticated, None);
    }

    #[test]
    fn starttls_split_at_every_byte_gives_one_handshake() {
        let input = b"EHLO c\r\nSTARTTLS\r\n";
        let want = [
            ehlo_reply(&["250-STARTTLS"]).as_str(),
            "220 2.0.0 Ready to start TLS\r\n",
        ]
        .concat();
        for cut in 0..=input.len() {
            let mut h = starttls_listener();
            h.send_chunked(&input[..cut], usize::MAX);
            h.send_chunked(&input[cut..], usize::MAX);
            assert_eq!(h.take_output(), want, "split at {cut}");
            assert_eq!(h.discarded_at_starttls.len(), 1, "split at {cut}");
            assert!(h.session.tls_active());
        }
    }

    #[test]
    fn starttls_forgets_a_plaintext_login() {
        let mut h = Harness::new(
            limits_with(|l| {
                l.tls_available = true;
                l.allow_plaintext_auth = true;
            }),
            localhost(),
            65_536,
        );
        h.take_output();
        h.send(b"EHLO c\r\n");
        let line = format!(
            "AUTH PLAIN {}\r\n",
            plain("", "alice@example.test", ALICE_PASSWORD)
        );
        assert!(h.send(line.as_bytes()).starts_with("235 "));
        assert_eq!(h.send(b"STARTTLS\r\n"), "220 2.0.0 Ready to start TLS\r\n");
        assert_eq!(h.session.authenticated(), None);
        h.send(b"EHLO c\r\nMAIL FROM:<a@remote.test>\r\n");
        assert_eq!(
            h.send(b"RCPT TO:<x@remote.test>\r\n"),
            "554 5.7.1 <x@remote.test>: Relay access denied\r\n"
        );
    }

    #[test]
    fn auth_plain_with_initial_response() {
        let mut h = logged_in(|_| {});
        assert_eq!(h.auth_checks, ["alice@example.test"]);
        h.send(b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n");
        h.send(b"DATA\r\nSubject: hi\r\n\r\n.\r\n");
        let t = &h.delivered[0];
        assert_eq!(t.authenticated.as_deref(), Some("alice@example.test"));
        assert!(t.tls);
        let message = String::from_utf8(t.message.clone()).unwrap();
        assert!(message.contains(") with ESMTPSA id "), "{message}");
        assert!(!message.contains(ALICE_PASSWORD));
    }

    #[test]
    fn auth_plain_with_challenge_and_authzid() {
        let mut h = tls_session(|_| {});
        h.send(b"EHLO c\r\n");
        assert_eq!(h.send(b"AUTH PLAIN\r\n"), "334 \r\n");
        let response = format!(
            "{}\r\n",
            plain("alice@example.test", "Alice@Example.TEST", ALICE_PASSWORD)
        );
        assert_eq!(
            h.send(response.as_bytes()),
            "235 2.7.0 Authentication successful\r\n"
        );
        assert_eq!(h.auth_checks, ["Alice@Example.TEST"]);
        assert_eq!(h.session.authenticated(), Some("alice@example.test"));
        // A different authorization identity (proxy login) is refused.
        let mut h = tls_session(|_| {});
        h.send(b"EHLO c\r\n");
        let line = format!(
            "AUTH PLAIN {}\r\n",
            plain("bob@example.test", "alice@example.test", ALICE_PASSWORD)
        );
        assert_eq!(
            h.send(line.as_bytes()),
            "535 5.7.8 Error: authentication failed: authentication failure\r\n"
        );
        assert!(h.auth_checks.is_empty());
    }

    #[test]
    fn auth_login_with_and_without_initial_response() {
        let mut h = tls_session(|_| {});
        h.send(b"EHLO c\r\n");
        assert_eq!(h.send(b"AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
        assert_eq!(
            h.send(format!("{}\r\n", b64("alice@example.test")).as_bytes()),
            "334 UGFzc3dvcmQ6\r\n"
        );
        assert_eq!(
            h.send(format!("{}\r\n", b64(ALICE_PASSWORD)).as_bytes()),
            "235 2.7.0 Authentication successful\r\n"
        );
        let mut h = tls_session(|_| {});
        h.send(b"EHLO c\r\n");
        let line = format!("auth login {}\r\n", b64("alice@example.test"));
        assert_eq!(h.send(line.as_bytes()), "334 UGFzc3dvcmQ6\r\n");
        assert_eq!(
            h.send(format!("{}\r\n", b64("wrong")).as_bytes()),
            "535 5.7.8 Error: authentication failed: authentication failure\r\n"
        );
        assert_eq!(h.session.authenticated(), None);
        // `=` is an empty user name: checked (and refused) like any other.
        assert_eq!(h.send(b"AUTH LOGIN =\r\n"), "334 UGFzc3dvcmQ6\r\n");
        assert!(h.send(b"\r\n").starts_with("535 5.7.8 "));
        assert_eq!(h.auth_checks, ["alice@example.test", ""]);
    }

    #[test]
    fn auth_errors_follow_postfix() {
        let failed = "535 5.7.8 Error: authentication failed: authentication failure\r\n";
        // Not offered without TLS (and plaintext not allowed).
        let mut h = ready();
        assert_eq!(
            h.send(b"AUTH PLAIN\r\n"),
            "503 5.5.1 Error: authentication not enabled\r\n"
        );
        let mut h = tls_session(|_| {});
        assert_eq!(
            h.send(b"AUTH PLAIN\r\n"),
            "503 5.5.1 Error: send HELO/EHLO first\r\n"
        );
        h.send(b"EHLO c\r\n");
        assert_eq!(h.send(b"AUTH\r\n"), "501 5.5.4 Syntax: AUTH mechanism\r\n");
        assert_eq!(
            h.send(b"AUTH PLAIN a b\r\n"),
            "501 5.5.4 Syntax: AUTH mechanism\r\n"
        );
        assert_eq!(
            h.send(b"AUTH CRAM-MD5\r\n"),
            "504 5.5.4 Unsupported authentication mechanism\r\n"
        );
        assert_eq!(h.send(b"AUTH PLAIN\r\n"), "334 \r\n");
        assert_eq!(h.send(b"*\r\n"), "501 5.7.0 Authentication aborted\r\n");
        assert_eq!(h.send(b"AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
        assert_eq!(h.send(b"YWxpY2U=\r\n"), "334 UGFzc3dvcmQ6\r\n");
        assert_eq!(h.send(b"*\r\n"), "501 5.7.0 Authentication aborted\r\n");
        assert_eq!(
            h.send(b"AUTH PLAIN !!!!\r\n"),
            "501 5.5.2 Cannot decode response\r\n"
        );
        assert_eq!(h.send(b"AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
        assert_eq!(h.send(b"YWxp\r\n"), "334 UGFzc3dvcmQ6\r\n");
        assert_eq!(h.send(b"YWx\r\n"), "501 5.5.2 Cannot decode response\r\n");
        // `=` is an empty PLAIN response: malformed, refused without a check.
        assert_eq!(h.send(b"AUTH PLAIN =\r\n"), failed);
        assert!(h.auth_checks.is_empty());
        let wrong = format!(
            "AUTH PLAIN {}\r\n",
            plain("", "alice@example.test", "guess")
        );
        assert_eq!(h.send(wrong.as_bytes()), failed);
        let down = format!("AUTH PLAIN {}\r\n", plain("", "down@example.test", "x"));
        assert_eq!(
            h.send(down.as_bytes()),
            "454 4.7.0 Temporary authentication failure\r\n"
        );
        // After the commands above, back to normal command handling.
        assert_eq!(h.send(b"NOOP\r\n"), "250 2.0.0 Ok\r\n");
        assert_eq!(h.session.errors, 11);
        // In a transaction, and once logged in.
        let mut h = tls_session(|_| {});
        h.send(b"EHLO c\r\nMAIL FROM:<a@remote.test>\r\n");
        assert_eq!(
            h.send(b"AUTH PLAIN\r\n"),
            "503 5.5.1 Error: MAIL transaction in progress\r\n"
        );
        let mut h = logged_in(|_| {});
        assert_eq!(
            h.send(b"AUTH LOGIN\r\n"),
            "503 5.5.1 Error: already authenticated\r\n"
        );
        // auth_result without a pending check changes nothing.
        let mut out = Vec::new();
        h.session
            .auth_result(Ok("bob@example.test".into()), &mut out);
        assert!(out.is_empty());
        assert_eq!(h.session.authenticated(), Some("alice@example.test"));
    }

    #[test]
    fn failed_auths_count_toward_errors_max() {
        let mut h = tls_session(|_| {});
        h.send(b"EHLO c\r\n");
        let wrong = format!(
            "AUTH PLAIN {}\r\n",
            plain("", "alice@example.test", "guess")
        );
        for _ in 0..19 {
            assert!(h.send(wrong.as_bytes()).starts_with("535 5.7.8"));
        }
        assert!(!h.closed);
        assert_eq!(
            h.send(wrong.as_bytes()),
            "535 5.7.8 Error: authentication failed: authentication failure\r\n\
             421 4.7.0 mx.example.test Error: too many errors\r\n"
        );
        assert!(h.closed);
        assert_eq!(h.auth_checks.len(), 20);
    }

    #[test]
    fn auth_split_at_every_byte() {
        let input = format!(
            "EHLO c\r\nAUTH LOGIN\r\n{}\r\n{}\r\nAUTH PLAIN\r\n*\r\nMAIL FROM:<sales@example.test>\r\n",
            b64("alice@example.test"),
            b64(ALICE_PASSWORD)
        );
        let input = input.as_bytes();
        let want = [
            ehlo_reply(&["250-AUTH PLAIN LOGIN"]).as_str(),
            "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 2.7.0 Authentication successful\r\n",
            "503 5.5.1 Error: already authenticated\r\n",
            "502 5.5.2 Error: command not recognized\r\n",
            "250 2.1.0 Ok\r\n",
        ]
        .concat();
        for cut in 0..=input.len() {
            let mut h = tls_session(|_| {});
            h.send_chunked(&input[..cut], usize::MAX);
            h.send_chunked(&input[cut..], usize::MAX);
            assert_eq!(h.take_output(), want, "split at {cut}");
            assert_eq!(h.auth_checks, ["alice@example.test"], "split at {cut}");
        }
        for chunk_bytes in [1, 2, 3, 7] {
            let mut h = tls_session(|_| {});
            h.send_chunked(input, chunk_bytes);
            assert_eq!(h.take_output(), want, "chunks of {chunk_bytes}");
        }
    }

    #[test]
    fn auth_lines_may_be_long_other_commands_may_not() {
        // A 1000-byte password: the AUTH line is far beyond 512 bytes.
        let password = "p".repeat(1000);
        let line = format!(
            "AUTH PLAIN {}\r\n",
            plain("", "alice@example.test", &password)
        );
        assert!(line.len() > 1300);
        for (chunk_bytes, buffer) in [
            (usize::MAX, 65_536),
            (1, AUTH_LINE_BYTES_MAX),
            (97, AUTH_LINE_BYTES_MAX),
        ] {
            let mut h = Harness::with_tls(limits(), localhost(), buffer, true);
            h.send_chunked(b"EHLO c\r\n", chunk_bytes);
            h.take_output();
            h.send_chunked(line.as_bytes(), chunk_bytes);
            assert_eq!(
                h.take_output(),
                "535 5.7.8 Error: authentication failed: authentication failure\r\n"
            );
            assert_eq!(h.auth_checks, ["alice@example.test"]);
            // The longest AUTH line fits exactly; one more byte is too long.
            let longest = format!("AUTH PLAIN {}\r\n", "A".repeat(AUTH_LINE_BYTES_MAX - 13));
            assert_eq!(longest.len(), AUTH_LINE_BYTES_MAX);
            h.send_chunked(longest.as_bytes(), chunk_bytes);
            assert!(h.take_output().starts_with("535 5.7.8"));
            let too_long = format!("AUTH PLAIN {}\r\n", "A".repeat(AUTH_LINE_BYTES_MAX - 12));
            h.send_chunked(too_long.as_bytes(), chunk_bytes);
            assert_eq!(h.take_output(), "500 5.5.2 Error: line too long\r\n");
            // A SASL response line has the same limit.
            h.send_chunked(b"AUTH LOGIN\r\n", chunk_bytes);
            h.take_output();
            let response = format!("{}\r\n", "A".repeat(AUTH_LINE_BYTES_MAX - 1));
            h.send_chunked(response.as_bytes(), chunk_bytes);
            assert_eq!(
                h.take_output(),
                "500 5.5.6 SASL response limit exceeded\r\n"
            );
            // Other commands keep the 512-byte limit.
            let noop = format!("NOOP {}\r\n", "x".repeat(600));
            h.send_chunked(noop.as_bytes(), chunk_bytes);
            assert_eq!(h.take_output(), "500 5.5.2 Error: line too long\r\n");
            h.send_chunked(b"NOOP\r\n", chunk_bytes);
            assert_eq!(h.take_output(), "250 2.0.0 Ok\r\n");
        }
        // Where AUTH is not offered, an AUTH line is an ordinary command line.
        let mut h = ready();
        assert_eq!(
            h.send(line.as_bytes()),
            "500 5.5.2 Error: line too long\r\n"
        );
        assert!(h.auth_checks.is_empty());
    }

    #[test]
    fn submission_requires_auth_before_mail() {
        let mut h = tls_session(|l| l.submission = true);
        h.send(b"EHLO c\r\n");
        assert_eq!(
            h.send(b"MAIL FROM:<alice@example.test>\r\n"),
            "530 5.7.0 Authentication required\r\n"
        );
        assert_eq!(
            h.send(b"RCPT TO:<bob@example.test>\r\n"),
            "503 5.5.1 Error: need MAIL command\r\n"
        );
        // Port 25 takes mail without AUTH.
        let mut h = tls_session(|_| {});
        h.send(b"EHLO c\r\n");
        assert_eq!(
            h.send(b"MAIL FROM:<alice@example.test>\r\n"),
            "250 2.1.0 Ok\r\n"
        );
    }

    #[test]
    fn authenticated_senders_must_be_owned() {
        let mut h = logged_in(|l| l.submission = true);
        assert_eq!(
            h.send(b"MAIL FROM:<bob@example.test>\r\n"),
            "553 5.7.1 <bob@example.test>: Sender address rejected: not owned by user alice@example.test\r\n"
        );
        assert_eq!(
            h.send(b"MAIL FROM:<ceo@remote.test>\r\n"),
            "553 5.7.1 <ceo@remote.test>: Sender address rejected: not owned by user alice@example.test\r\n"
        );
        for sender in [
            "<alice@example.test>",
            "<Alice@EXAMPLE.test>",
            "<sales@example.test>",
            "<>",
        ] {
            let line = format!("MAIL FROM:{sender}\r\n");
            assert_eq!(h.send(line.as_bytes()), "250 2.1.0 Ok\r\n", "{sender}");
            h.send(b"RSET\r\n");
        }
        // A quoted form of her own address is hers too.
        assert_eq!(
            h.send(b"MAIL FROM:<\"alice\"@example.test>\r\n"),
            "250 2.1.0 Ok\r\n"
        );
    }

    #[test]
    fn authenticated_clients_may_relay_others_may_not() {
        let remote = [
            "user@remote.test",
            "User@REMOTE.test",
            "user@[192.0.2.1]",
            "user@[IPv6:::1]",
            "user@remote.test.",
            "alice@example.test.",
        ];
        let mut h = tls_session(|_| {});
        h.send(b"EHLO c\r\nMAIL FROM:<a@remote.test>\r\n");
        for address in remote {
            let line = format!("RCPT TO:<{address}>\r\n");
            assert_eq!(
                h.send(line.as_bytes()),
                format!("554 5.7.1 <{address}>: Relay access denied\r\n")
            );
        }
        let mut h = logged_in(|l| l.recipients_max = 10);
        h.send(b"MAIL FROM:<alice@example.test>\r\n");
        for address in remote {
            let line = format!("RCPT TO:<{address}>\r\n");
            assert_eq!(h.send(line.as_bytes()), "250 2.1.5 Ok\r\n", "{address}");
        }
        // Local recipients still have to exist, whoever sends.
        assert!(h
            .send(b"RCPT TO:<nobody@example.test>\r\n")
            .starts_with("550 5.1.1 <nobody@example.test>"));
        assert_eq!(
            h.send(b"RCPT TO:<Bob@example.test>\r\n"),
            "250 2.1.5 Ok\r\n"
        );
        h.send(b"DATA\r\n.\r\n");
        assert_eq!(
            h.delivered[0].recipients,
            [
                "user@remote.test",
                "user@[192.0.2.1]",
                "user@[ipv6:::1]",
                "user@remote.test.",
                "alice@example.test.",
                "bob@example.test"
            ]
        );
    }

    #[test]
    fn received_protocol_names_tls_and_auth() {
        let protocol = |h: &mut Harness, helo: &str, utf8: bool| -> String {
            let parameter = if utf8 { " SMTPUTF8" } else { "" };
            let from = if h.session.authenticated().is_some() {
                "alice@example.test"
            } else {
                "a@remote.test"
            };
            h.send(format!("{helo} c\r\nMAIL FROM:<{from}>{parameter}\r\n").as_bytes());
            h.send(b"RCPT TO:<bob@example.test>\r\nDATA\r\n.\r\n");
            let message = String::from_utf8(h.delivered.pop().unwrap().message).unwrap();
            let start = message.find(" with ").unwrap() + 6;
            let end = message[start..].find(' ').unwrap() + start;
            message[start..end].to_owned()
        };
        let mut h = ready();
        assert_eq!(protocol(&mut h, "EHLO", false), "ESMTP");
        assert_eq!(protocol(&mut h, "HELO", false), "SMTP");
        let mut h = tls_session(|_| {});
        assert_eq!(protocol(&mut h, "EHLO", false), "ESMTPS");
        assert_eq!(protocol(&mut h, "HELO", false), "ESMTPS");
        assert_eq!(protocol(&mut h, "EHLO", true), "UTF8SMTPS");
        let mut h = logged_in(|_| {});
        assert_eq!(protocol(&mut h, "EHLO", false), "ESMTPSA");
        assert_eq!(protocol(&mut h, "EHLO", true), "UTF8SMTPSA");
        let mut h = Harness::new(
            limits_with(|l| l.allow_plaintext_auth = true),
            localhost(),
            65_536,
        );
        h.take_output();
        h.send(b"EHLO c\r\n");
        let line = format!(
            "AUTH PLAIN {}\r\n",
            plain("", "alice@example.test", ALICE_PASSWORD)
        );
        assert!(h.send(line.as_bytes()).starts_with("235 "));
        assert_eq!(protocol(&mut h, "EHLO", false), "ESMTPA");
        assert_eq!(protocol(&mut h, "HELO", false), "ESMTPA");
    }

    #[test]
    fn debug_output_never_shows_credentials() {
        let password = "Sup3r-Secret-Passw0rd";
        let blob = plain("", "alice@example.test", password);
        let secrets = [password.to_owned(), blob.clone(), b64(password)];
        let check = |shown: &str, at: &str| {
            for secret in &secrets {
                assert!(!shown.contains(secret.as_str()), "{at}: {shown}");
            }
            let bytes = format!("{:?}", password.as_bytes());
            assert!(!shown.contains(&bytes[1..bytes.len() - 1]), "{at}: {shown}");
        };
        let cx = Context {
            now_unix: NOW_UNIX,
            directory: &TestDirectory,
        };
        // PLAIN with an initial response, stopped while the check is pending.
        let mut s = Session::new(limits(), localhost(), 1, true);
        let mut out = Vec::new();
        let input = format!("EHLO c\r\nAUTH PLAIN {blob}\r\n");
        let (_, step) = s.advance(input.as_bytes(), &mut out, &cx);
        assert_eq!(step, Step::Authenticate);
        check(&format!("{s:?} {step:?}"), "PLAIN pending");
        let credentials = s.take_credentials().unwrap();
        assert_eq!(credentials.1.expose(), password);
        check(&format!("{credentials:?}"), "credentials");
        s.auth_result(Err(AuthFailure::Invalid), &mut out);
        check(&format!("{s:?}"), "PLAIN failed");
        // LOGIN, at each stage.
        let (_, step) = s.advance(b"AUTH LOGIN\r\n", &mut out, &cx);
        assert_eq!(step, Step::NeedInput);
        let user = format!("{}\r\n", b64("alice@example.test"));
        s.advance(user.as_bytes(), &mut out, &cx);
        check(&format!("{s:?}"), "LOGIN user");
        let pass = format!("{}\r\n", b64(password));
        let (_, step) = s.advance(pass.as_bytes(), &mut out, &cx);
        assert_eq!(step, Step::Authenticate);
        check(&format!("{s:?}"), "LOGIN pending");
        s.auth_result(Ok("alice@example.test".into()), &mut out);
        check(&format!("{s:?}"), "LOGIN done");
        // Nothing of it in the replies or the stored message either.
        s.advance(
            b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n.\r\n",
            &mut out,
            &cx,
        );
        let transaction = s.take_transaction();
        check(&format!("{transaction:?}"), "transaction");
        check(&String::from_utf8_lossy(&transaction.message), "message");
        check(&String::from_utf8_lossy(&out), "replies");
        let line = format!("AUTH PLAIN {blob}");
        let command = command::parse(line.as_bytes());
        check(&format!("{command:?}"), "command");
    }

    // ---- Transcripts ----

    /// What a transcript run produced: the delivered transactions and, per `C! starttls`,
    /// the plaintext bytes the driver dropped (those buffered behind the STARTTLS line and
    /// the rest of that client block).
    struct TranscriptRun {
        delivered: Vec<Transaction>,
        discarded_at_starttls: Vec<Vec<u8>>,
    }

    /// Runs a transcript. Panics with the transcript name, the way of splitting and the
    /// block on any mismatch. `C! starttls` does what the driver does after Step::StartTls:
    /// the session must be waiting for the handshake there; every byte the client sent
    /// before (still buffered, or later in the same block) is dropped; `tls_started`.
    fn run_transcript(name: &str, text: &str, chunk_bytes: usize, buffer: usize) -> TranscriptRun {
        let blocks = transcript::parse(text);
        assert_eq!(
            blocks[0].expect.first().map(String::as_str),
            Some("220 mx.example.test ESMTP ringmail"),
            "{name}: first line must be the greeting"
        );
        // The test server has a certificate: STARTTLS is offered on port 25, AUTH is not
        // (it is after `C! starttls`).
        let limits = limits_with(|l| l.tls_available = true);
        let mut h = Harness::new(limits, localhost(), buffer);
        h.hold_tls = true;
        for (index, block) in blocks.iter().enumerate() {
            assert!(
                !h.closed || block.send.is_empty(),
                "{name}: send after close"
            );
            h.send_chunked(&block.send, chunk_bytes);
            let context =
                format!("{name} (chunks of {chunk_bytes}, buffer {buffer}), block {index}");
            block.check(&h.take_output(), h.closed, &context);
            if !block.starttls {
                assert!(!h.tls_pending, "{context}: STARTTLS without C! starttls");
                continue;
            }
            assert!(
                h.tls_pending,
                "{context}: C! starttls, but no Step::StartTls"
            );
            let mut out = Vec::new();
            let cx = Context {
                now_unix: NOW_UNIX,
                directory: &TestDirectory,
            };
            assert_eq!(
                h.session.advance(b"NOOP\r\n", &mut out, &cx),
                (0, Step::StartTls),
                "{context}: the session must wait for the handshake"
            );
            assert!(out.is_empty(), "{context}: {out:?}");
            h.buffer.clear();
            h.session.tls_started();
            h.tls_pending = false;
            assert!(h.session.tls_active(), "{context}");
        }
        TranscriptRun {
            delivered: h.delivered,
            discarded_at_starttls: h.discarded_at_starttls,
        }
    }

    /// The plaintext each STARTTLS of a transcript must drop (one entry per handshake).
    fn expected_discarded_at_starttls(name: &str) -> Vec<&'static [u8]> {
        match name {
            "starttls_injection" => vec![b"RSET\r\nMAIL FROM:<evil@attacker.test>\r\n"],
            "starttls_auth_plain" => vec![b""],
            _ => Vec::new(),
        }
    }

    struct Delivery<'a> {
        mail_from: &'a str,
        recipients: &'a [&'a str],
        protocol: &'a str,
        body: Vec<u8>,
    }

    fn delivery<'a>(
        from: &'a str,
        to: &'a [&'a str],
        protocol: &'a str,
        body: &[u8],
    ) -> Delivery<'a> {
        Delivery {
            mail_from: from,
            recipients: to,
            protocol,
            body: body.to_vec(),
        }
    }

    /// What each delivering transcript must store; every other transcript
    /// must store nothing.
    fn expected_deliveries(name: &str) -> Vec<Delivery<'static>> {
        const S: &str = "sender@remote.test";
        const ALICE: &[&str] = &["alice@example.test"];
        const BOB: &[&str] = &["bob@example.test"];
        let lines = |line: &[u8], n: usize| -> Vec<u8> { [line, b"\r\n"].concat().repeat(n) };
        match name {
            "helo" => vec![delivery(S, ALICE, "SMTP", b"Subject: helo\r\n\r\nhi\r\n")],
            "pipelining" => vec![delivery(
                S,
                &["alice@example.test", "bob@example.test"],
                "ESMTP",
                b"Subject: pipelined\r\n\r\nhello\r\n",
            )],
            "size_during_data" => vec![delivery(S, ALICE, "ESMTP", &lines(&[b'x'; 998], 10))],
            "size_during_bdat" => {
                let body = [b"c".repeat(6000), b"d".repeat(4000)].concat();
                vec![delivery(S, ALICE, "ESMTP", &body)]
            }
            "relay_tricks" => vec![delivery(
                S,
                &["bob@example.test", "alice@example.test"],
                "ESMTP",
                b"Subject: tricks\r\n\r\n",
            )],
            "too_many_recipients" => vec![delivery(
                S,
                &["alice@example.test", "bob@example.test"],
                "ESMTP",
                b"Subject: three\r\n\r\n",
            )],
            "data_line_too_long" => vec![delivery(S, ALICE, "ESMTP", &lines(&[b'w'; 998], 1))],
            "bare_lf_does_not_end_data" => vec![delivery(
                S,
                ALICE,
                "ESMTP",
                b"Subject: one\r\n\r\nfirst\n.\nMAIL FROM:<evil@remote.test>\r\n\
                  RCPT TO:<bob@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\n\
                  second\n.\r\nthird\r.\r\nend\r\n",
            )],
            "dot_stuffing" => vec![delivery(
                S,
                ALICE,
                "ESMTP",
                b"Subject: dots\r\n\r\n.one\r\n..two\r\n three\r\nmid.dle.\r\n.\r\n",
            )],
            "bdat_basic" => vec![
                delivery(
                    S,
                    ALICE,
                    "ESMTP",
                    b"Subject: chunks\r\n\r\n..x\r\n.\r\nbin\0\r\n",
                ),
                delivery("", BOB, "ESMTP", b""),
            ],
            "data_before_rcpt" => vec![delivery(S, ALICE, "ESMTP", b"")],
            "empty_message" => vec![delivery("", BOB, "ESMTP", b"")],
            "dsn_parameters" => vec![delivery(
                "",
                ALICE,
                "ESMTP",
                b"Subject: dsn\r\n\r\nwith parameters\r\n",
            )],
            "smtputf8" => vec![delivery(
                "jörg@bücher.test",
                ALICE,
                "UTF8SMTP",
                "Subject: grüße\r\n\r\n你好\r\n".as_bytes(),
            )],
            "bare_lf_commands" => vec![delivery(S, ALICE, "ESMTP", b"bare\n.\nstill data\r\n")],
            "starttls_injection" => vec![delivery(
                S,
                ALICE,
                "ESMTPS",
                b"Subject: after STARTTLS\r\n\r\nencrypted\r\n",
            )],
            "starttls_auth_plain" => vec![delivery(
                "alice@example.test",
                BOB,
                "ESMTPSA",
                b"Subject: authenticated\r\n\r\nhi bob\r\n",
            )],
            _ => Vec::new(),
        }
    }

    fn check_deliveries(name: &str, got: &[Transaction]) {
        let want = expected_deliveries(name);
        assert_eq!(got.len(), want.len(), "{name}: number of deliveries");
        let mut previous_id = String::new();
        for (n, (t, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(t.mail_from, w.mail_from, "{name}");
            assert_eq!(t.recipients, w.recipients, "{name}");
            // Session 0x2A; refused messages use up transaction numbers too.
            assert!(
                t.queue_id.starts_with("2A") && t.queue_id.len() == 6,
                "{name}"
            );
            assert!(t.queue_id > previous_id, "{name}: queue ids must increase");
            previous_id.clone_from(&t.queue_id);
            let for_clause = match w.recipients {
                [one] => format!("\r\n\tfor <{one}>; "),
                _ => ";\r\n\t".to_owned(),
            };
            let headers = format!(
                "Return-Path: <{}>\r\nReceived: from client.test ([127.0.0.1])\r\n\
                 \tby mx.example.test (ringmail) with {} id {}{for_clause}{DATE}\r\n",
                w.mail_from, w.protocol, t.queue_id
            );
            let message = [headers.as_bytes(), &w.body].concat();
            assert!(
                t.message == message,
                "{name}: message {n}\n got: {:?}\nwant: {:?}",
                String::from_utf8_lossy(&t.message),
                String::from_utf8_lossy(&message)
            );
        }
    }

    const REQUIRED_TRANSCRIPTS: [&str; 38] = [
        "greeting_ehlo",
        "helo",
        "pipelining",
        "size_at_mail",
        "size_during_data",
        "size_during_bdat",
        "unknown_user",
        "relay_denied",
        "relay_tricks",
        "relay_percent_hack",
        "relay_source_route",
        "relay_quoted_local_part",
        "relay_bang_path",
        "relay_address_literal",
        "relay_trailing_dot",
        "relay_mixed_case",
        "starttls_sequence_and_syntax",
        "starttls_injection",
        "starttls_auth_plain",
        "auth_needs_tls",
        "too_many_recipients",
        "command_line_too_long",
        "data_line_too_long",
        "bare_lf_does_not_end_data",
        "dot_stuffing",
        "bdat_basic",
        "bdat_without_mail",
        "data_before_rcpt",
        "sequence_errors",
        "unknown_command",
        "vrfy",
        "rset",
        "noop_help_quit",
        "too_many_errors",
        "empty_message",
        "smtputf8",
        "dsn_parameters",
        "dsn_parameters_refused",
    ];

    #[test]
    fn transcripts() {
        let names = transcript::load("smtp", &REQUIRED_TRANSCRIPTS);
        // (chunk size, driver buffer): whole sends, byte by byte, odd sizes,
        // and a buffer exactly one command line long.
        let ways = [
            (usize::MAX, 1 << 20),
            (1, 512),
            (2, 4096),
            (3, 512),
            (7, 1000),
            (64, 512),
            (511, 512),
            (1500, 65_536),
        ];
        for (name, text) in &names {
            for (chunk_bytes, buffer) in ways {
                let run = run_transcript(name, text, chunk_bytes, buffer);
                check_deliveries(name, &run.delivered);
                assert_eq!(
                    run.discarded_at_starttls,
                    expected_discarded_at_starttls(name),
                    "{name} (chunks of {chunk_bytes}, buffer {buffer}): dropped at STARTTLS"
                );
            }
        }
    }

    #[test]
    fn transcript_matcher() {
        assert!(matches(
            "250 2.0.0 Ok: queued as {*}",
            "250 2.0.0 Ok: queued as 2A0001"
        ));
        assert!(matches("a{*}", "a"));
        assert!(!matches(
            "250 2.0.0 Ok: queued as {*}",
            "250 2.0.0 Ok: queued"
        ));
        assert!(!matches("a{*}b", "a\rb"));
        assert!(!matches("250 Ok", "250 Ok "));
        assert_eq!(unescape(r"a\r\n\t\\\x00\xff"), b"a\r\n\t\\\x00\xff");
    }
}
