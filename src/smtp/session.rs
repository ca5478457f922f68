//! The sans-IO SMTP receiver state machine (RFC 5321 for an MX on port 25):
//! bytes in, reply bytes and delivery requests out. No sockets, files, clocks
//! or executors: the driver (`smtp::server`) owns the connection, reads into a
//! bounded buffer, calls [`Session::advance`], writes what it appended to `out`,
//! and stores the message when asked ([`Step::Deliver`]).
//!
//! One handler per command (`handle_mail`, `handle_rcpt`, ...). Each checks
//! the command's sequence first, then its syntax, like Postfix's smtpd; every
//! reply carries an RFC 3463 enhanced status code. Replies with a 4xx/5xx
//! code count as errors; at `errors_max` the session says 421 and closes.
//!
//! Input is consumed in named states (`Input`): command lines (with
//! "discarding an overlong line" inside [`LineReader`]), DATA content
//! ([`DataDecoder`]), BDAT chunk octets, waiting for the delivery result, and
//! closed. Every state makes progress on any buffer holding at least
//! `command_line_bytes_max` bytes, so the driver's buffer never has to grow.
//!
//! Later extensions (DSN, STARTTLS, AUTH with an `authenticated` flag) slot in
//! as an [`Extension`] variant, a field here and a handler.

use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::rc::Rc;

use super::command::{self, Body, CommandError, Verb};
use super::data::{DataDecoder, DataError, DataProgress};
use crate::line::{Frame, LineReader};
use crate::time::DateTime;

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
    /// Command line including CRLF (RFC 5321 4.5.3.1.4: 512). The driver's
    /// read buffer must hold at least this many bytes.
    pub command_line_bytes_max: usize,
    /// Text line of message content including CRLF (RFC 5321 4.5.3.1.6: 1000).
    pub text_line_bytes_max: usize,
    /// Like Postfix `smtpd_hard_error_limit` (20): then 421 and close.
    pub errors_max: usize,
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
        }
    }
}

/// Who receives mail here. Looked up for every RCPT.
pub trait Directory {
    /// `domain` is ASCII-lowercased, without brackets. (Address literals such
    /// as `[192.0.2.1]` are never local and are not looked up.)
    fn is_local_domain(&self, domain: &str) -> bool;
    /// `address` is normalized: local part and domain lowercased, `local@domain`.
    fn has_mailbox(&self, address: &str) -> bool;
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
    pub smtputf8: bool,
    pub body_8bitmime: bool,
    /// `Return-Path:` + `Received:` + the message exactly as received (after
    /// dot-unstuffing), CRLF line ends as on the wire.
    pub message: Vec<u8>,
}

/// The storage outcome the driver reports through [`Session::delivered`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryResult {
    Stored,
    DiskFull,
    /// Any other storage error.
    TempFail,
}

/// Service extensions, advertised in EHLO in this order. SIZE carries
/// `message_bytes_max`. (DSN, AUTH and STARTTLS come later: add a variant and
/// a condition in [`Session::extensions`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extension {
    Pipelining,
    Size,
    EightBitMime,
    EnhancedStatusCodes,
    SmtpUtf8,
    Chunking,
}

impl Extension {
    pub fn keyword(self) -> &'static str {
        match self {
            Extension::Pipelining => "PIPELINING",
            Extension::Size => "SIZE",
            Extension::EightBitMime => "8BITMIME",
            Extension::EnhancedStatusCodes => "ENHANCEDSTATUSCODES",
            Extension::SmtpUtf8 => "SMTPUTF8",
            Extension::Chunking => "CHUNKING",
        }
    }
}

const EXTENSIONS: [Extension; 6] = [
    Extension::Pipelining,
    Extension::Size,
    Extension::EightBitMime,
    Extension::EnhancedStatusCodes,
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
    Closed,
}

/// One SMTP server session (one connection).
#[derive(Debug)]
pub struct Session {
    limits: Rc<Limits>,
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
}

impl Session {
    pub fn new(limits: Rc<Limits>, peer: PeerInfo, session_id: u64) -> Session {
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
            rcpt_count: 0,
            smtputf8: false,
            body_8bitmime: false,
            bdat_started: false,
            bdat_bytes: 0,
            message: Vec::new(),
            scratch: String::new(),
        }
    }

    /// `220 <hostname> ESMTP ringmail`
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
                Input::Commands => {
                    let frame = self
                        .lines
                        .next_line(rest, self.limits.command_line_bytes_max);
                    consumed += frame.consumed();
                    match frame {
                        Frame::Incomplete => return (consumed, Step::NeedInput),
                        Frame::Discarded { .. } => {}
                        Frame::TooLong { .. } => self.reject(out, "500 5.5.2 Error: line too long"),
                        Frame::Line { line, .. } => self.handle_command(line, out, cx),
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
            smtputf8: self.smtputf8,
            body_8bitmime: self.body_8bitmime,
            message: std::mem::take(&mut self.message),
        }
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
            Input::Commands | Input::AwaitingDelivery | Input::Closed => Phase::Command,
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

    /// The extensions this session advertises, in EHLO order.
    pub fn extensions(&self) -> impl Iterator<Item = Extension> {
        EXTENSIONS.into_iter()
    }

    fn handle_command(&mut self, line: &[u8], out: &mut Vec<u8>, cx: &Context) {
        let Ok((verb, args)) = command::split_verb(line) else {
            return self.reject(out, "502 5.5.2 Error: command not recognized");
        };
        match verb {
            Verb::Ehlo | Verb::Helo => self.handle_hello(verb, args, out),
            Verb::Mail => self.handle_mail(args, out),
            Verb::Rcpt => self.handle_rcpt(args, out, cx),
            Verb::Data => self.handle_data(args, out, cx),
            Verb::Bdat => self.handle_bdat(args, out, cx),
            Verb::Rset => self.handle_rset(args, out),
            Verb::Noop => self.reply(out, &[REPLY_OK]),
            Verb::Quit => self.handle_quit(args, out),
            Verb::Help => self.reply(
                out,
                &["214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY"],
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
        let limits = Rc::clone(&self.limits);
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
                _ => write!(out, "250{dash}{keyword}\r\n"),
            };
        }
    }

    fn handle_mail(&mut self, args: &[u8], out: &mut Vec<u8>) {
        if self.hello == Hello::None {
            return self.reject(out, REPLY_NEED_HELO);
        }
        if self.in_mail {
            return self.reject(out, "503 5.5.1 Error: nested MAIL command");
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
        self.in_mail = true;
        self.mail_from.clear();
        if let Some(sender) = mail.sender {
            self.mail_from.push_str(sender.address);
        }
        self.smtputf8 = mail.smtputf8;
        self.body_8bitmime = mail.body == Some(Body::EightBitMime);
        self.reply(out, &["250 2.1.0 Ok"]);
    }

    fn handle_rcpt(&mut self, args: &[u8], out: &mut Vec<u8>, cx: &Context) {
        if !self.in_mail {
            return self.reject(out, REPLY_NEED_MAIL);
        }
        if self.bdat_started {
            return self.reject(out, "503 5.5.1 Error: RCPT after BDAT");
        }
        let recipient = match command::parse_rcpt(args) {
            Ok(rcpt) => rcpt.recipient,
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
        if recipient.literal || !cx.directory.is_local_domain(domain) {
            let reply = ["554 5.7.1 <", recipient.address, ">: Relay access denied"];
            return self.reject_parts(out, &reply);
        }
        if !cx.directory.has_mailbox(&self.scratch) {
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
        let protocol = if self.smtputf8 {
            "UTF8SMTP"
        } else if self.hello == Hello::Ehlo {
            "ESMTP"
        } else {
            "SMTP"
        };
        let id = self.queue_id();
        self.message.clear();
        let _ = write!(
            self.message,
            "Return-Path: <{}>\r\nReceived: from {} ([{}])\r\n\tby {} (ringmail) with {} id {}",
            self.mail_from, self.hello_name, self.peer.ip, self.limits.hostname, protocol, id,
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
        self.rcpt_count = 0;
        self.smtputf8 = false;
        self.body_8bitmime = false;
        self.bdat_started = false;
        self.bdat_bytes = 0;
        self.message.clear();
    }

    fn close_with(&mut self, out: &mut Vec<u8>, code: &str, text: &str) {
        let limits = Rc::clone(&self.limits);
        self.reply(out, &[code, &limits.hostname, text]);
        self.reset_transaction();
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

    /// The environment of tests/transcripts/README.
    struct TestDirectory;

    impl Directory for TestDirectory {
        fn is_local_domain(&self, domain: &str) -> bool {
            domain == "example.test"
        }
        fn has_mailbox(&self, address: &str) -> bool {
            address == "alice@example.test" || address == "bob@example.test"
        }
    }

    fn limits() -> Rc<Limits> {
        Rc::new(Limits::new("mx.example.test", 10_000, 3))
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
    }

    impl Harness {
        fn new(limits: Rc<Limits>, peer: PeerInfo, buffer_bytes_max: usize) -> Harness {
            let mut session = Session::new(limits, peer, 0x2A);
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
            while !self.closed {
                let (consumed, step) = self.session.advance(&self.buffer, &mut self.out, &cx);
                assert!(consumed <= self.buffer.len());
                self.buffer.drain(..consumed);
                match step {
                    Step::NeedInput => {
                        assert!(
                            self.buffer.len() < self.session.limits.command_line_bytes_max,
                            "NeedInput while holding {} bytes",
                            self.buffer.len()
                        );
                        break;
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
        250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";

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
        assert_eq!(h.send(b"AUTH PLAIN\r\n"), reply);
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
            h.send(b"RCPT TO:<alice@example.test> ORCPT=rfc822;x@y\r\n"),
            "555 5.5.4 Unsupported option: ORCPT=rfc822;x@y\r\n"
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
            let mut s = Session::new(limits(), localhost(), session_id);
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

    // ---- Transcripts ----

    /// Runs a transcript; returns the delivered transactions. Panics with the
    /// transcript name, the way of splitting and the block on any mismatch.
    fn run_transcript(
        name: &str,
        text: &str,
        chunk_bytes: usize,
        buffer: usize,
    ) -> Vec<Transaction> {
        let blocks = transcript::parse(text);
        assert_eq!(
            blocks[0].expect.first().map(String::as_str),
            Some("220 mx.example.test ESMTP ringmail"),
            "{name}: first line must be the greeting"
        );
        let mut h = Harness::new(limits(), localhost(), buffer);
        for (index, block) in blocks.iter().enumerate() {
            assert!(
                !h.closed || block.send.is_empty(),
                "{name}: send after close"
            );
            h.send_chunked(&block.send, chunk_bytes);
            let context =
                format!("{name} (chunks of {chunk_bytes}, buffer {buffer}), block {index}");
            block.check(&h.take_output(), h.closed, &context);
        }
        h.delivered
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
            "smtputf8" => vec![delivery(
                "jörg@bücher.test",
                ALICE,
                "UTF8SMTP",
                "Subject: grüße\r\n\r\n你好\r\n".as_bytes(),
            )],
            "bare_lf_commands" => vec![delivery(S, ALICE, "ESMTP", b"bare\n.\nstill data\r\n")],
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

    const REQUIRED_TRANSCRIPTS: [&str; 25] = [
        "greeting_ehlo",
        "helo",
        "pipelining",
        "size_at_mail",
        "size_during_data",
        "size_during_bdat",
        "unknown_user",
        "relay_denied",
        "relay_tricks",
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
                let delivered = run_transcript(name, text, chunk_bytes, buffer);
                check_deliveries(name, &delivered);
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
