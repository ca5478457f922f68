//! The sans-IO POP3 server state machine (RFC 1939, RFC 2449 CAPA and response codes,
//! RFC 5034 SASL PLAIN, RFC 3206 `[AUTH]`/`[SYS/TEMP]`): bytes in, reply bytes and requests
//! out. No sockets, files, clocks or executors: the driver (`pop3::server`) reads into a
//! bounded buffer, calls [`Session::advance`], performs what the returned [`Step`] asks
//! (verify credentials, open the maildrop, read message *n*, commit the deletions) and
//! reports the outcome back, then writes what was appended to `out`.
//!
//! States: AUTHORIZATION (with the named sub-state "waiting for the SASL response line"),
//! waiting for the credential check, waiting for the maildrop (after the hand-over to the
//! owner core), TRANSACTION (with "waiting for a message read"), UPDATE (waiting for the
//! commit), closed. A connection is served by two `Session` values: the one on the accepting
//! core ends with [`Session::authenticated`], whose [`Resume`] travels with the socket to
//! the owner core, where [`Session::resume`] continues it.
//!
//! The maildrop is the INBOX snapshot taken at login: message numbers are 1-based over it
//! and never change during the session; later deliveries are not visible (RFC 1939 §5).
//! DELE only marks; the marked UIDs are expunged by the driver at QUIT ([`Step::Commit`])
//! and `+OK` is sent only once that is durable. A connection that ends any other way
//! deletes nothing.
//!
//! Sizes are those of the message as RETR sends it: lines end in CRLF (a bare LF is sent
//! as CRLF, a missing final line end is added), byte-stuffing not counted ([`served_size`],
//! [`write_message`]).
//!
//! One handler per command (`handle_user`, `handle_retr`, ...). Replies that say the client
//! did something wrong count toward `errors_max`; then `-ERR too many errors` and close.
//! Failed logins count toward `logins_failed_max` instead. Nothing said before login depends
//! on whether a user exists: USER always answers `+OK`, and every failed login gets the same
//! `-ERR [AUTH] invalid credentials` (the driver delays it, the session does not).

use std::io::Write;

use memchr::memchr;

use super::command::{self, Command, CommandError};
use crate::accounts::Secret;
use crate::line::{Frame, LineReader};
use crate::sasl::{self, SaslError};

/// Limits of one session (copied from the config on accept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Command line including CRLF (config `pop3.line_bytes_max`; RFC 2449 §4 says 255,
    /// ringmail takes 512 so long AUTH PLAIN responses fit). The driver's buffer must hold
    /// at least this many bytes.
    pub line_bytes_max: usize,
    /// Client errors (unknown commands, bad syntax, overlong lines) before the session
    /// says `-ERR too many errors` and closes, like Dovecot's bad-command limit.
    pub errors_max: usize,
    /// Failed logins on one connection before it is closed (config `auth.failures_max`).
    pub logins_failed_max: usize,
    /// A certificate is configured: STLS is offered while the connection is in the clear.
    pub tls_available: bool,
    /// USER/PASS and AUTH PLAIN without TLS (config `pop3.allow_plaintext_auth`).
    pub plaintext_auth: bool,
}

impl Limits {
    /// The given limits and [`ERRORS_MAX`] client errors.
    pub fn new(line_bytes_max: usize, logins_failed_max: usize) -> Limits {
        Limits {
            line_bytes_max,
            errors_max: ERRORS_MAX,
            logins_failed_max,
            tls_available: false,
            plaintext_auth: true,
        }
    }
}

/// Default client errors per session.
pub const ERRORS_MAX: usize = 20;

/// A login to verify, handed to the driver after [`Step::Authenticate`].
#[derive(Debug)]
pub struct Credentials {
    /// As the client wrote it (not normalized).
    pub user: String,
    pub password: Secret,
}

/// What travels with the connection to the owner core after a successful login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    errors: usize,
    lines: LineReader,
}

/// One message of the snapshot, as the driver supplies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageInfo {
    pub uid: u32,
    /// [`served_size`] of the stored message.
    pub size: u64,
}

/// The INBOX snapshot taken at login, in UID order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maildrop {
    pub uid_validity: u32,
    pub messages: Vec<MessageInfo>,
}

/// What the driver must do after [`Session::advance`]. In every case it first writes `out`
/// (it may defer the write until the next [`Step::NeedInput`] to batch pipelined replies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Read more, call `advance` again with the unconsumed bytes plus the new ones.
    NeedInput,
    /// [`Session::take_credentials`], verify them, then either [`Session::authenticated`]
    /// (and hand the connection over) or [`Session::login_failed`].
    Authenticate,
    /// (After [`Session::resume`].) Take the maildrop lock and snapshot INBOX, then
    /// [`Session::maildrop_opened`], [`Session::maildrop_in_use`] or
    /// [`Session::maildrop_failed`].
    OpenMaildrop,
    /// Read message `message` (1-based index into the snapshot), then
    /// [`Session::message_read`].
    Read { message: u32 },
    /// STLS was accepted (`+OK` is in `out`): write it, discard every buffered input byte
    /// (sent in the clear before the handshake), run the TLS handshake, then
    /// [`Session::tls_started`]; close if the handshake fails.
    StartTls,
    /// Expunge [`Session::deletions`] durably, then [`Session::committed`].
    Commit,
    /// Write `out`, then close the connection.
    Close,
}

/// Outcome of a [`Step::Read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome<'a> {
    /// The stored message, as stored.
    Read(&'a [u8]),
    Failed,
}

/// Outcome of a [`Step::Commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Every marked message is durably expunged (or was already gone).
    Committed,
    /// Nothing was deleted.
    Failed,
}

pub const GREETING: &str = "+OK ringmail POP3 ready";
const REPLY_BYE: &str = "+OK ringmail POP3 server signing off";
const REPLY_AUTH_FAILED: &str = "-ERR [AUTH] invalid credentials";
const REPLY_WRONG_STATE: &str = "-ERR command not valid in this state";
const REPLY_NO_SUCH_MESSAGE: &str = "-ERR no such message";
const REPLY_PLAINTEXT_DISALLOWED: &str =
    "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.";
/// RFC 2449 §6: what CAPA lists, in this order. `STLS` only while in the clear with TLS
/// available; `USER` and `SASL PLAIN` only where plaintext logins are allowed.
pub const CAPABILITIES: [&str; 9] = [
    "TOP",
    "UIDL",
    "STLS",
    "USER",
    "SASL PLAIN",
    "RESP-CODES",
    "AUTH-RESP-CODE",
    "PIPELINING",
    "IMPLEMENTATION ringmail",
];

/// What to send once a read message arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Retr,
    /// TOP: the header and this many body lines.
    Top(u32),
}

/// The named states of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// AUTHORIZATION; `user` is the name from the last USER, waiting for PASS.
    Authorization {
        user: Option<String>,
    },
    /// `+ ` was sent after `AUTH PLAIN`; the next line is the response (or `*`).
    SaslResponse,
    /// Step::Authenticate was returned.
    Authenticating,
    /// Step::OpenMaildrop was returned (on the owner core).
    OpeningMaildrop,
    Transaction,
    /// Step::Read was returned.
    Reading {
        message: u32,
        wanted: Wanted,
    },
    /// UPDATE: Step::Commit was returned.
    Committing,
    /// Step::StartTls was returned.
    StartingTls,
    Closed,
}

/// One message of the maildrop during the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Message {
    uid: u32,
    size: u64,
    deleted: bool,
}

/// One POP3 session (one connection, on one core).
#[derive(Debug)]
pub struct Session {
    limits: Limits,
    state: State,
    lines: LineReader,
    errors: usize,
    logins_failed: usize,
    credentials: Option<Credentials>,
    /// The connection is encrypted (implicit TLS or after STLS).
    tls_active: bool,
    uid_validity: u32,
    messages: Vec<Message>,
    /// Messages not marked deleted, and their total size.
    live_count: usize,
    live_octets: u64,
}

impl Session {
    /// A new connection, in AUTHORIZATION.
    pub fn new(limits: Limits) -> Session {
        Session::with_state(
            limits,
            State::Authorization { user: None },
            0,
            LineReader::new(),
        )
    }

    /// Continues a session that logged in on another core (or this one): the first
    /// [`Session::advance`] asks for the maildrop.
    pub fn resume(limits: Limits, resume: Resume) -> Session {
        Session::with_state(limits, State::OpeningMaildrop, resume.errors, resume.lines)
    }

    fn with_state(limits: Limits, state: State, errors: usize, lines: LineReader) -> Session {
        Session {
            limits,
            state,
            lines,
            errors,
            logins_failed: 0,
            credentials: None,
            tls_active: false,
            uid_validity: 0,
            messages: Vec::new(),
            live_count: 0,
            live_octets: 0,
        }
    }

    /// `+OK ringmail POP3 ready` (no APOP timestamp: APOP is not offered).
    pub fn greeting(&self, out: &mut Vec<u8>) {
        line(out, GREETING);
    }

    /// Consumes as many complete command lines of `input` as it can and appends the
    /// replies to `out`. Returns (bytes consumed, next step). The driver keeps the rest of
    /// `input` and calls again (after reading more, or after reporting the step's outcome).
    /// Every state makes progress on a buffer of `line_bytes_max` bytes.
    pub fn advance(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Step) {
        let mut consumed = 0;
        loop {
            if self.errors >= self.limits.errors_max && self.state != State::Closed {
                self.close_with(out, "-ERR too many errors");
            }
            match self.state {
                State::Closed => return (consumed, Step::Close),
                State::Authenticating => return (consumed, Step::Authenticate),
                State::OpeningMaildrop => return (consumed, Step::OpenMaildrop),
                State::Reading { message, .. } => return (consumed, Step::Read { message }),
                State::Committing => return (consumed, Step::Commit),
                State::StartingTls => return (consumed, Step::StartTls),
                State::Authorization { .. } | State::SaslResponse | State::Transaction => {}
            }
            let frame = self
                .lines
                .next_line(&input[consumed..], self.limits.line_bytes_max);
            consumed += frame.consumed();
            match frame {
                Frame::Incomplete => return (consumed, Step::NeedInput),
                Frame::Discarded { .. } => {}
                Frame::TooLong { .. } => {
                    if self.state == State::SaslResponse {
                        self.state = State::Authorization { user: None };
                    }
                    self.reject(out, "-ERR line too long");
                }
                Frame::Line { line, .. } => {
                    if self.state == State::SaslResponse {
                        self.handle_sasl_response(line, out);
                    } else {
                        self.handle_command(line, out);
                    }
                }
            }
        }
    }

    /// The login to check after [`Step::Authenticate`] (None if called at another time).
    pub fn take_credentials(&mut self) -> Option<Credentials> {
        self.credentials.take()
    }

    /// The credentials were wrong (or the user unknown; the reply is the same). The driver
    /// has already waited the failure delay.
    pub fn login_failed(&mut self, out: &mut Vec<u8>) {
        self.credentials = None;
        self.state = State::Authorization { user: None };
        self.logins_failed += 1;
        line(out, REPLY_AUTH_FAILED);
        if self.logins_failed >= self.limits.logins_failed_max {
            self.state = State::Closed;
        }
    }

    /// The credentials are right: this session ends here; the connection continues on the
    /// owner core with [`Session::resume`] and the unconsumed input.
    pub fn authenticated(self) -> Resume {
        Resume {
            errors: self.errors,
            lines: self.lines,
        }
    }

    /// The maildrop is locked and snapshotted: `+OK logged in`, TRANSACTION.
    pub fn maildrop_opened(&mut self, maildrop: Maildrop, out: &mut Vec<u8>) {
        self.uid_validity = maildrop.uid_validity;
        self.messages = maildrop
            .messages
            .iter()
            .map(|m| Message {
                uid: m.uid,
                size: m.size,
                deleted: false,
            })
            .collect();
        self.recount();
        self.state = State::Transaction;
        line(out, "+OK logged in");
    }

    /// Another session holds the maildrop (RFC 2449 `[IN-USE]`): reply and close.
    pub fn maildrop_in_use(&mut self, out: &mut Vec<u8>) {
        self.close_with(out, "-ERR [IN-USE] mailbox in use by another POP3 session");
    }

    /// The maildrop could not be read: reply and close.
    pub fn maildrop_failed(&mut self, out: &mut Vec<u8>) {
        self.close_with(
            out,
            "-ERR [SYS/TEMP] cannot open the mailbox, try again later",
        );
    }

    /// The bytes of the message [`Step::Read`] asked for: sends the RETR or TOP reply.
    pub fn message_read(&mut self, outcome: ReadOutcome<'_>, out: &mut Vec<u8>) {
        let State::Reading { message, wanted } = self.state else {
            return;
        };
        self.state = State::Transaction;
        match (outcome, wanted) {
            (ReadOutcome::Read(bytes), Wanted::Retr) => {
                // The served size measured at login (the stored message does not change):
                // no second pass over the message.
                let size = self.messages[message as usize - 1].size;
                let _ = write!(out, "+OK {size} octets\r\n");
                write_message(bytes, None, out);
            }
            (ReadOutcome::Read(bytes), Wanted::Top(lines)) => {
                line(out, "+OK");
                write_message(bytes, Some(lines), out);
            }
            (ReadOutcome::Failed, _) => {
                let _ = write!(
                    out,
                    "-ERR [SYS/TEMP] cannot read message {message}, try again later\r\n"
                );
            }
        }
    }

    /// UIDs marked for deletion, ascending (what [`Step::Commit`] must expunge).
    pub fn deletions(&self) -> Vec<u32> {
        self.messages
            .iter()
            .filter(|m| m.deleted)
            .map(|m| m.uid)
            .collect()
    }

    /// The outcome of [`Step::Commit`]: `+OK` or `-ERR [SYS/TEMP]`; either way, close.
    pub fn committed(&mut self, outcome: CommitOutcome, out: &mut Vec<u8>) {
        if self.state != State::Committing {
            return;
        }
        match outcome {
            CommitOutcome::Committed => self.close_with(out, REPLY_BYE),
            CommitOutcome::Failed => self.close_with(
                out,
                "-ERR [SYS/TEMP] cannot delete the messages, none were deleted; try again later",
            ),
        }
    }

    /// The idle timeout passed (RFC 1939 §3): close without UPDATE.
    pub fn timeout(&mut self, out: &mut Vec<u8>) {
        self.close_with(out, "-ERR disconnected for inactivity");
    }

    /// The server is stopping: close without UPDATE.
    pub fn shutting_down(&mut self, out: &mut Vec<u8>) {
        self.close_with(out, "-ERR [SYS/TEMP] server shutting down");
    }

    /// The TLS handshake succeeded (after [`Step::StartTls`], or at once on an implicit-TLS
    /// listener, before the greeting): back to a fresh AUTHORIZATION state, encrypted.
    pub fn tls_started(&mut self) {
        self.tls_active = true;
        self.lines = LineReader::new();
        self.state = State::Authorization { user: None };
    }

    /// Plaintext logins are allowed here: over TLS, or where the operator said so.
    fn secure(&self) -> bool {
        self.tls_active || self.limits.plaintext_auth
    }

    /// True once the session has closed (after [`Step::Close`]).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    fn handle_command(&mut self, text: &[u8], out: &mut Vec<u8>) {
        let command = match command::parse(text) {
            Ok(command) => command,
            Err(error) => return self.reject_parse_error(error, out),
        };
        let authorization = matches!(self.state, State::Authorization { .. });
        match command {
            Command::Capa => self.handle_capa(out),
            Command::Quit if authorization => self.close_with(out, REPLY_BYE),
            Command::Quit => self.handle_quit(out),
            Command::Stls if authorization => self.handle_stls(out),
            Command::User(_) | Command::Pass(_) | Command::Auth { .. }
                if authorization && !self.secure() =>
            {
                self.reject(out, REPLY_PLAINTEXT_DISALLOWED)
            }
            Command::User(name) if authorization => self.handle_user(name, out),
            Command::Pass(password) if authorization => self.handle_pass(password, out),
            Command::Apop if authorization => self.reject(out, "-ERR APOP not supported"),
            Command::Auth { mechanism, initial } if authorization => {
                self.handle_auth(mechanism, initial, out)
            }
            Command::User(_)
            | Command::Pass(_)
            | Command::Apop
            | Command::Auth { .. }
            | Command::Stls => self.reject(out, REPLY_WRONG_STATE),
            _ if authorization => self.reject(out, REPLY_WRONG_STATE),
            Command::Stat => self.handle_stat(out),
            Command::List(message) => self.handle_list(message, out),
            Command::Retr(message) => self.handle_read(message, Wanted::Retr, out),
            Command::Dele(message) => self.handle_dele(message, out),
            Command::Noop => line(out, "+OK"),
            Command::Rset => self.handle_rset(out),
            Command::Top { message, lines } => self.handle_read(message, Wanted::Top(lines), out),
            Command::Uidl(message) => self.handle_uidl(message, out),
        }
    }

    fn handle_capa(&self, out: &mut Vec<u8>) {
        line(out, "+OK capability list follows");
        for capability in CAPABILITIES {
            let shown = match capability {
                // RFC 2595 §4: STLS only in the AUTHORIZATION state.
                "STLS" => {
                    !self.tls_active
                        && self.limits.tls_available
                        && matches!(self.state, State::Authorization { .. })
                }
                "USER" | "SASL PLAIN" => self.secure(),
                _ => true,
            };
            if shown {
                line(out, capability);
            }
        }
        line(out, ".");
    }

    fn handle_stls(&mut self, out: &mut Vec<u8>) {
        if self.tls_active {
            return self.reject(out, "-ERR TLS already active");
        }
        if !self.limits.tls_available {
            return self.reject(out, "-ERR STLS not available");
        }
        if matches!(self.state, State::Authorization { user: Some(_) }) {
            return self.reject(out, "-ERR STLS not allowed after USER");
        }
        line(out, "+OK Begin TLS negotiation now.");
        self.state = State::StartingTls;
    }

    fn handle_user(&mut self, name: &[u8], out: &mut Vec<u8>) {
        // Always +OK: whether the user exists is revealed by nothing before login.
        self.state = State::Authorization {
            user: Some(String::from_utf8_lossy(name).into_owned()),
        };
        line(out, "+OK");
    }

    fn handle_pass(&mut self, password: &[u8], out: &mut Vec<u8>) {
        let State::Authorization { user } = &mut self.state else {
            return;
        };
        let Some(user) = user.take() else {
            return self.reject(out, "-ERR no USER given");
        };
        // A password that is not UTF-8 matches no stored one; it is still checked (and
        // delayed) like any other, so it cannot be used to probe without the delay.
        let password = Secret::new(String::from_utf8_lossy(password).into_owned());
        self.credentials = Some(Credentials { user, password });
        self.state = State::Authenticating;
    }

    fn handle_auth(&mut self, mechanism: Option<&[u8]>, initial: Option<&[u8]>, out: &mut Vec<u8>) {
        self.state = State::Authorization { user: None };
        let Some(mechanism) = mechanism else {
            // No mechanism: list them (as Dovecot and most servers do).
            line(out, "+OK");
            line(out, "PLAIN");
            return line(out, ".");
        };
        if !command::is_plain(mechanism) {
            return self.reject(out, "-ERR unsupported authentication mechanism");
        }
        match initial {
            // RFC 5034 §4: "=" is an empty initial response.
            Some(b"=") => self.handle_plain(b"", out),
            Some(response) => self.handle_plain(response, out),
            None => {
                self.state = State::SaslResponse;
                line(out, "+ ");
            }
        }
    }

    fn handle_sasl_response(&mut self, response: &[u8], out: &mut Vec<u8>) {
        self.state = State::Authorization { user: None };
        if response == b"*" {
            return line(out, "-ERR authentication cancelled");
        }
        self.handle_plain(response, out);
    }

    fn handle_plain(&mut self, response: &[u8], out: &mut Vec<u8>) {
        let (user, password) = match sasl::decode_plain(response) {
            Ok(plain) => plain,
            Err(SaslError::Base64 { .. }) => return self.reject(out, "-ERR invalid base64"),
            Err(SaslError::Malformed | SaslError::TooLong { .. }) => {
                return self.reject(out, "-ERR invalid SASL PLAIN message")
            }
            // Acting as another user is not offered: an authorization identity other than
            // the login name fails like wrong credentials.
            Err(SaslError::Authzid(_)) => return self.login_failed(out),
        };
        self.credentials = Some(Credentials { user, password });
        self.state = State::Authenticating;
    }

    fn handle_stat(&mut self, out: &mut Vec<u8>) {
        let _ = write!(out, "+OK {} {}\r\n", self.live_count, self.live_octets);
    }

    fn handle_list(&mut self, message: Option<u32>, out: &mut Vec<u8>) {
        let Some(n) = message else {
            let _ = write!(
                out,
                "+OK {} messages ({} octets)\r\n",
                self.live_count, self.live_octets
            );
            for (i, m) in self.messages.iter().enumerate() {
                if !m.deleted {
                    let _ = write!(out, "{} {}\r\n", i + 1, m.size);
                }
            }
            return line(out, ".");
        };
        match self.lookup(n) {
            Ok(m) => {
                let _ = write!(out, "+OK {n} {}\r\n", m.size);
            }
            Err(()) => self.no_such_message(n, out),
        }
    }

    fn handle_uidl(&mut self, message: Option<u32>, out: &mut Vec<u8>) {
        let validity = self.uid_validity;
        let Some(n) = message else {
            line(out, "+OK");
            for (i, m) in self.messages.iter().enumerate() {
                if !m.deleted {
                    let _ = write!(out, "{} {}\r\n", i + 1, Uidl(validity, m.uid));
                }
            }
            return line(out, ".");
        };
        match self.lookup(n) {
            Ok(m) => {
                let _ = write!(out, "+OK {n} {}\r\n", Uidl(validity, m.uid));
            }
            Err(()) => self.no_such_message(n, out),
        }
    }

    /// RETR and TOP: ask the driver for the message.
    fn handle_read(&mut self, message: u32, wanted: Wanted, out: &mut Vec<u8>) {
        match self.lookup(message) {
            Ok(_) => self.state = State::Reading { message, wanted },
            Err(()) => self.no_such_message(message, out),
        }
    }

    fn handle_dele(&mut self, message: u32, out: &mut Vec<u8>) {
        if self.lookup(message).is_err() {
            return self.no_such_message(message, out);
        }
        let m = &mut self.messages[message as usize - 1];
        m.deleted = true;
        self.live_count -= 1;
        self.live_octets -= m.size;
        let _ = write!(out, "+OK message {message} deleted\r\n");
    }

    fn handle_rset(&mut self, out: &mut Vec<u8>) {
        for m in &mut self.messages {
            m.deleted = false;
        }
        self.recount();
        let _ = write!(
            out,
            "+OK maildrop has {} messages ({} octets)\r\n",
            self.live_count, self.live_octets
        );
    }

    fn handle_quit(&mut self, out: &mut Vec<u8>) {
        if self.messages.iter().any(|m| m.deleted) {
            // UPDATE: the reply waits for the commit.
            self.state = State::Committing;
        } else {
            self.close_with(out, REPLY_BYE);
        }
    }

    /// The message numbered `n`, if it exists and is not marked deleted.
    fn lookup(&self, n: u32) -> Result<Message, ()> {
        let index = (n as usize).checked_sub(1).ok_or(())?;
        match self.messages.get(index) {
            Some(m) if !m.deleted => Ok(*m),
            _ => Err(()),
        }
    }

    /// `-ERR` for a number that is out of range or marked deleted (not a client error:
    /// another client may have the same view of a changing maildrop).
    fn no_such_message(&self, n: u32, out: &mut Vec<u8>) {
        let deleted = (n as usize)
            .checked_sub(1)
            .and_then(|i| self.messages.get(i))
            .is_some_and(|m| m.deleted);
        if deleted {
            let _ = write!(out, "-ERR message {n} already deleted\r\n");
        } else {
            line(out, REPLY_NO_SUCH_MESSAGE);
        }
    }

    fn recount(&mut self) {
        self.live_count = self.messages.iter().filter(|m| !m.deleted).count();
        self.live_octets = self
            .messages
            .iter()
            .filter(|m| !m.deleted)
            .map(|m| m.size)
            .sum();
    }

    fn close_with(&mut self, out: &mut Vec<u8>, reply: &str) {
        line(out, reply);
        self.credentials = None;
        self.state = State::Closed;
    }

    /// A `-ERR` for a client mistake: counts toward `errors_max`.
    fn reject(&mut self, out: &mut Vec<u8>, reply: &str) {
        self.errors += 1;
        line(out, reply);
    }

    fn reject_parse_error(&mut self, error: CommandError, out: &mut Vec<u8>) {
        match error {
            CommandError::Unknown => self.reject(out, "-ERR unknown command"),
            CommandError::BadNumber => self.reject(out, "-ERR invalid message number"),
            CommandError::Syntax { usage } => {
                self.errors += 1;
                let _ = write!(out, "-ERR syntax error, usage: {usage}\r\n");
            }
        }
    }
}

/// The UIDL of a message: UIDVALIDITY then UID, 8 uppercase hex digits each (Dovecot's
/// `%08Xv%08Xu`). Stable across sessions and restarts because both numbers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uidl(pub u32, pub u32);

impl std::fmt::Display for Uidl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08X}{:08X}", self.0, self.1)
    }
}

fn line(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Calls `each(content)` for every line of `message`, in order: the bytes before LF, without
/// one CR right before the LF; a last line without LF counts as a line.
fn for_each_line(message: &[u8], mut each: impl FnMut(&[u8]) -> bool) {
    let mut rest = message;
    while !rest.is_empty() {
        let (line, next) = match memchr(b'\n', rest) {
            Some(lf) => (&rest[..lf], &rest[lf + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let content = line.strip_suffix(b"\r").unwrap_or(line);
        if !each(content) {
            return;
        }
        rest = next;
    }
}

/// The size of `message` as RETR sends it (RFC 1939 §11): every line ending in CRLF, the
/// byte-stuffing and the terminating `.` line not counted. Equal to the stored length for
/// messages that already use CRLF throughout and end with one (everything SMTP stores).
pub fn served_size(message: &[u8]) -> u64 {
    let mut size = 0u64;
    for_each_line(message, |content| {
        size += content.len() as u64 + 2;
        true
    });
    size
}

/// Appends `message` as a POP3 multi-line response body: CRLF line ends, lines starting
/// with `.` byte-stuffed, then `.` CRLF. With `body_lines` (TOP), only the header, the
/// empty line after it and that many body lines are sent.
pub fn write_message(message: &[u8], body_lines: Option<u32>, out: &mut Vec<u8>) {
    if body_lines.is_none() {
        // RETR sends it all (TOP, often `TOP n 0` of a big message, sends a little).
        out.reserve(message.len() + message.len() / 64 + 3);
    }
    let mut in_body = false;
    let mut body_sent = 0u32;
    for_each_line(message, |content| {
        if in_body {
            if body_lines.is_some_and(|max| body_sent >= max) {
                return false;
            }
            body_sent += 1;
        } else if content.is_empty() {
            in_body = true;
        }
        if content.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
        true
    });
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::transcript::{self, matches, unescape};
    use std::collections::{HashMap, HashSet};

    // ---- The test environment (tests/transcripts/README, section POP3) ----

    const ALICE: &str = "alice@example.test";
    const BOB: &str = "bob@example.test";
    const USERS: [(&str, &str); 2] = [(ALICE, "alice-Pa55word-7f3a"), (BOB, "bob-Pa55word-c91e")];
    const UID_VALIDITY: u32 = 0x6A1F_0C2B;

    /// Alice's INBOX in the transcript environment, as the client sent the messages.
    const TRANSCRIPT_MESSAGES: [&str; 3] = [
        "From: <sender@remote.test>\r\nTo: <alice@example.test>\r\nSubject: one\r\n\r\nfirst message\r\n",
        "From: <sender@remote.test>\r\nSubject: two\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nlast\r\n",
        "From: <sender@remote.test>\r\nSubject: three\r\nX-Long: yes\r\n\r\nline 1\r\nline 2\r\n\r\nline 4\r\nline 5\r\n",
    ];

    /// What the SMTP server prepends (shape of the real header; id and date differ).
    fn stored(n: usize, body: &str) -> Vec<u8> {
        format!(
            "Return-Path: <sender@remote.test>\r\nReceived: from client.test ([127.0.0.1])\r\n\
             \tby mx.example.test (ringmail) with ESMTP id 1A0{n:03X}\r\n\
             \tfor <alice@example.test>; Sun, 22 Nov 2026 03:45:16 +0000\r\n{body}"
        )
        .into_bytes()
    }

    fn limits() -> Limits {
        Limits::new(512, 3)
    }

    /// A user's INBOX in the fake store: UIDVALIDITY and (UID, stored bytes).
    type FakeMaildrop = (u32, Vec<(u32, Vec<u8>)>);

    /// A driver with a fixed-size read buffer, a fake user table and fake maildrops.
    struct Harness {
        limits: Limits,
        session: Session,
        buffer: Vec<u8>,
        buffer_bytes_max: usize,
        output: Vec<u8>,
        closed: bool,
        maildrops: HashMap<String, FakeMaildrop>,
        /// The maildrop this connection opened.
        user: Option<String>,
        locked: HashSet<String>,
        commits: Vec<Vec<u32>>,
        commit_fails: bool,
        read_fails: bool,
        logins: usize,
        tls_handshakes: usize,
        /// Transcripts: at Step::StartTls, stop and drop all input until the transcript's
        /// `C! starttls` (instead of handshaking at once).
        hold_tls: bool,
        /// Step::StartTls was returned and `hold_tls` holds the handshake back.
        tls_pending: bool,
        /// With `hold_tls`: the plaintext dropped at each STLS (one entry per handshake).
        discarded_at_stls: Vec<Vec<u8>>,
    }

    impl Harness {
        fn new(limits: Limits, buffer_bytes_max: usize) -> Harness {
            assert!(buffer_bytes_max >= limits.line_bytes_max);
            let session = Session::new(limits);
            let mut output = Vec::new();
            session.greeting(&mut output);
            let alice = TRANSCRIPT_MESSAGES
                .iter()
                .enumerate()
                .map(|(i, m)| (i as u32 * 2 + 1, stored(i + 1, m)))
                .collect();
            let mut maildrops = HashMap::new();
            maildrops.insert(ALICE.to_string(), (UID_VALIDITY, alice));
            Harness {
                limits,
                session,
                buffer: Vec::new(),
                buffer_bytes_max,
                output,
                closed: false,
                maildrops,
                user: None,
                locked: HashSet::new(),
                commits: Vec::new(),
                commit_fails: false,
                read_fails: false,
                logins: 0,
                tls_handshakes: 0,
                hold_tls: false,
                tls_pending: false,
                discarded_at_stls: Vec::new(),
            }
        }

        fn with_messages(messages: &[&[u8]]) -> Harness {
            let mut h = Harness::new(limits(), 512);
            let list = messages
                .iter()
                .enumerate()
                .map(|(i, m)| (i as u32 + 1, m.to_vec()))
                .collect();
            h.maildrops.insert(ALICE.to_string(), (7, list));
            h
        }

        fn take_output(&mut self) -> String {
            String::from_utf8(std::mem::take(&mut self.output)).unwrap()
        }

        /// Sends `bytes` in one piece (split only to fit the buffer); returns the output.
        fn send(&mut self, bytes: &[u8]) -> String {
            self.send_chunked(bytes, usize::MAX);
            self.take_output()
        }

        fn send_chunked(&mut self, bytes: &[u8], chunk_bytes: usize) {
            self.feed(bytes, chunk_bytes, false);
        }

        /// Appends `bytes` to the buffer (at most `chunk_bytes` at a time) and drives the
        /// session after each piece. After a close, further bytes are an error unless
        /// `stop_at_close`, which drops them as a closed socket would.
        fn feed(&mut self, bytes: &[u8], chunk_bytes: usize, stop_at_close: bool) {
            let mut rest = bytes;
            while !rest.is_empty() {
                if stop_at_close && self.closed {
                    return;
                }
                assert!(!self.closed, "client sends after close");
                if self.tls_pending {
                    // Plaintext sent before the handshake: the driver never reads it.
                    if let Some(discarded) = self.discarded_at_stls.last_mut() {
                        discarded.extend_from_slice(rest);
                    }
                    return;
                }
                let room = self.buffer_bytes_max - self.buffer.len();
                assert!(room > 0, "the session stalled on a full buffer");
                let take = rest.len().min(chunk_bytes).min(room);
                self.buffer.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                self.drive();
            }
        }

        fn drive(&mut self) {
            loop {
                let (used, step) = self.session.advance(&self.buffer, &mut self.output);
                self.buffer.drain(..used);
                match step {
                    Step::NeedInput => return,
                    Step::Close => {
                        self.closed = true;
                        self.buffer.clear();
                        return;
                    }
                    Step::StartTls if self.hold_tls => {
                        self.discarded_at_stls
                            .push(std::mem::take(&mut self.buffer));
                        self.tls_pending = true;
                        return;
                    }
                    Step::StartTls => {
                        // What the driver does: drop the plaintext after STLS, handshake.
                        self.buffer.clear();
                        self.tls_handshakes += 1;
                        self.session.tls_started();
                        return;
                    }
                    Step::Authenticate => {
                        let credentials = self.session.take_credentials().unwrap();
                        let user = credentials.user.to_ascii_lowercase();
                        let ok = USERS
                            .iter()
                            .any(|(u, p)| *u == user && *p == credentials.password.expose());
                        if ok {
                            self.logins += 1;
                            // The hand-over: a new session continues from the Resume.
                            let old =
                                std::mem::replace(&mut self.session, Session::new(self.limits));
                            self.session = Session::resume(self.limits, old.authenticated());
                            self.user = Some(user);
                        } else {
                            self.session.login_failed(&mut self.output);
                        }
                    }
                    Step::OpenMaildrop => {
                        let user = self.user.clone().unwrap();
                        if !self.locked.insert(user.clone()) {
                            self.session.maildrop_in_use(&mut self.output);
                            continue;
                        }
                        let (uid_validity, messages) = self
                            .maildrops
                            .get(&user)
                            .cloned()
                            .unwrap_or((1, Vec::new()));
                        let maildrop = Maildrop {
                            uid_validity,
                            messages: messages
                                .iter()
                                .map(|(uid, m)| MessageInfo {
                                    uid: *uid,
                                    size: served_size(m),
                                })
                                .collect(),
                        };
                        self.session.maildrop_opened(maildrop, &mut self.output);
                    }
                    Step::Read { message } => {
                        let user = self.user.clone().unwrap();
                        let bytes = self.maildrops[&user].1[message as usize - 1].1.clone();
                        let outcome = if self.read_fails {
                            ReadOutcome::Failed
                        } else {
                            ReadOutcome::Read(&bytes)
                        };
                        self.session.message_read(outcome, &mut self.output);
                    }
                    Step::Commit => {
                        let uids = self.session.deletions();
                        let outcome = if self.commit_fails {
                            CommitOutcome::Failed
                        } else {
                            let user = self.user.clone().unwrap();
                            let drop = &mut self.maildrops.get_mut(&user).unwrap().1;
                            drop.retain(|(uid, _)| !uids.contains(uid));
                            self.commits.push(uids);
                            CommitOutcome::Committed
                        };
                        self.session.committed(outcome, &mut self.output);
                    }
                }
            }
        }
    }

    fn logged_in() -> Harness {
        let mut h = Harness::new(limits(), 512);
        h.take_output();
        assert_eq!(
            h.send(b"USER alice@example.test\r\nPASS alice-Pa55word-7f3a\r\n"),
            "+OK\r\n+OK logged in\r\n"
        );
        h
    }

    fn logged_in_with(messages: &[&[u8]]) -> Harness {
        let mut h = Harness::with_messages(messages);
        h.take_output();
        assert_eq!(
            h.send(b"USER alice@example.test\r\nPASS alice-Pa55word-7f3a\r\n"),
            "+OK\r\n+OK logged in\r\n"
        );
        h
    }

    // ---- Encoding ----

    #[test]
    fn served_size_counts_crlf_lines() {
        assert_eq!(served_size(b""), 0);
        assert_eq!(served_size(b"a\r\nb\r\n"), 6);
        assert_eq!(served_size(b"a\nb\n"), 6);
        assert_eq!(served_size(b"a\r\nb"), 6);
        assert_eq!(served_size(b"a\r\nb\r"), 6);
        assert_eq!(served_size(b"\n"), 2);
        assert_eq!(served_size(b"a\rb\r\n"), 5);
        assert_eq!(served_size(b".\r\n..x\r\n"), 8);
    }

    #[test]
    fn write_message_stuffs_dots_and_ends_lines_with_crlf() {
        let mut out = Vec::new();
        write_message(b".a\r\nb.\r\n.\r\n..\nmid\rdle\nend", None, &mut out);
        assert_eq!(
            out,
            b"..a\r\nb.\r\n..\r\n...\r\nmid\rdle\r\nend\r\n.\r\n".to_vec()
        );
        let mut out = Vec::new();
        write_message(b"", None, &mut out);
        assert_eq!(out, b".\r\n".to_vec());
    }

    #[test]
    fn written_size_minus_stuffing_is_served_size() {
        let samples: [&[u8]; 6] = [
            b"Subject: x\r\n\r\nbody\r\n",
            b"a\nb\n.c\n",
            b"no final newline",
            b"\r\n\r\n.\r\n",
            b"x\r\r\n\ry\n",
            b"",
        ];
        for sample in samples {
            let mut out = Vec::new();
            write_message(sample, None, &mut out);
            let body = &out[..out.len() - 3];
            let stuffed = body
                .split(|&b| b == b'\n')
                .filter(|l| l.starts_with(b".."))
                .count();
            assert_eq!(
                (body.len() - stuffed) as u64,
                served_size(sample),
                "{}",
                sample.escape_ascii()
            );
            // Undoing the stuffing gives every line back.
            let unstuffed: Vec<u8> = body
                .split_inclusive(|&b| b == b'\n')
                .flat_map(|l| if l.starts_with(b"..") { &l[1..] } else { l })
                .copied()
                .collect();
            let mut normalized = Vec::new();
            for_each_line(sample, |c| {
                normalized.extend_from_slice(c);
                normalized.extend_from_slice(b"\r\n");
                true
            });
            assert_eq!(unstuffed, normalized);
        }
    }

    #[test]
    fn top_sends_header_blank_line_and_n_body_lines() {
        let m = b"A: 1\r\nB: 2\r\n\r\nl1\r\n.l2\r\nl3\r\n";
        let top = |n| {
            let mut out = Vec::new();
            write_message(m, Some(n), &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(top(0), "A: 1\r\nB: 2\r\n\r\n.\r\n");
        assert_eq!(top(2), "A: 1\r\nB: 2\r\n\r\nl1\r\n..l2\r\n.\r\n");
        assert_eq!(top(3), "A: 1\r\nB: 2\r\n\r\nl1\r\n..l2\r\nl3\r\n.\r\n");
        assert_eq!(top(99), top(3));
        // No body separator: the whole message is header.
        let mut out = Vec::new();
        write_message(b"A: 1\nB: 2", Some(0), &mut out);
        assert_eq!(out, b"A: 1\r\nB: 2\r\n.\r\n".to_vec());
    }

    // ---- AUTHORIZATION ----

    #[test]
    fn greeting_has_no_apop_timestamp() {
        let mut h = Harness::new(limits(), 512);
        assert_eq!(h.take_output(), "+OK ringmail POP3 ready\r\n");
    }

    #[test]
    fn capa_lists_the_capabilities_in_both_states() {
        let want = "+OK capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nSASL PLAIN\r\n\
                    RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nIMPLEMENTATION ringmail\r\n.\r\n";
        let mut h = Harness::new(limits(), 512);
        h.take_output();
        assert_eq!(h.send(b"CAPA\r\n"), want);
        let mut h = logged_in();
        assert_eq!(h.send(b"capa\r\n"), want);
    }

    #[test]
    fn user_pass_login_opens_the_snapshot() {
        let mut h = logged_in();
        assert_eq!(h.logins, 1);
        let sizes: Vec<u64> = TRANSCRIPT_MESSAGES
            .iter()
            .enumerate()
            .map(|(i, m)| stored(i + 1, m).len() as u64)
            .collect();
        let total: u64 = sizes.iter().sum();
        assert_eq!(h.send(b"STAT\r\n"), format!("+OK 3 {total}\r\n"));
    }

    #[test]
    fn wrong_password_and_unknown_user_get_the_same_reply() {
        let mut h = Harness::new(limits(), 512);
        h.take_output();
        let wrong = h.send(b"USER alice@example.test\r\nPASS nope\r\n");
        let unknown = h.send(b"USER nobody@example.test\r\nPASS alice-Pa55word-7f3a\r\n");
        assert_eq!(wrong, "+OK\r\n-ERR [AUTH] invalid credentials\r\n");
        assert_eq!(unknown, wrong);
        // Still in AUTHORIZATION, and a right login works after two failures.
        assert_eq!(
            h.send(b"STAT\r\n"),
            "-ERR command not valid in this state\r\n"
        );
        assert_eq!(
            h.send(b"USER ALICE@example.test\r\nPASS alice-Pa55word-7f3a\r\n"),
            "+OK\r\n+OK logged in\r\n"
        );
    }

    #[test]
    fn too_many_failed_logins_close_the_connection() {
        let mut h = Harness::new(limits(), 512);
        h.take_output();
        for _ in 0..2 {
            assert_eq!(
                h.send(b"USER bob@example.test\r\nPASS x\r\n"),
                "+OK\r\n-ERR [AUTH] invalid credentials\r\n"
            );
            assert!(!h.closed);
        }
        assert_eq!(
            h.send(b"USER bob@example.test\r\nPASS x\r\nUSER bob@example.test\r\n"),
            "+OK\r\n-ERR [AUTH] invalid credentials\r\n"
        );
        assert!(h.closed);
    }

    #[test]
    fn pass_needs_user_and_user_is_used_once() {
        let mut h = Harness::new(limits(), 512);
        h.take_output();
        assert_eq!(
            h.send(b"PASS alice-Pa55word-7f3a\r\n"),
            "-ERR no USER given\r\n"
        );
        assert_eq!(
            h.send(b"USER alice@example.test\r\nPASS x\r\nPASS alice-Pa55word-7f3a\r\n"),
            "+OK\r\n-ERR [AUTH] invalid credentials\r\n-ERR no USER given\r\n"
        );
        // A second USER replaces the first.
        assert_eq!(
            h.send(
                b"USER bob@example.test\r\nUSER alice@example.test\r\nPASS alice-Pa55word-7f3a\r\n"
            ),
            "+OK\r\n+OK\r\n+OK logged in\r\n"
        );
    }

    #[test]
    fn passwords_with_spaces_are_taken_verbatim() {
        let mut h = Harness::new(limits(), 512);
        h.take_output();
        assert_eq!(
            h.send(b"USER alice@example.test\r\nPASS  alice-Pa55word-7f3a\r\n"),
            "+OK\r\n-ERR [AUTH] invalid credentials\r\n"
        );
    }

    #[test]
    fn auth_plain_with_initial_response() {
        let mut h = Harness::new(limits(), 512);
        h.take_output();
        // "\0alice@example.test\0alice-Pa55word-7f3a"
        assert_eq!(
            h.send(b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1QYTU1d29yZC03ZjNh\r\nSTAT\r\n"),
            format!("+OK logged in\r\n+OK 3 {}\r\n", h_total())
        );
    }

    fn h_total() -> u64 {
        TRANSCRIPT_MESSAGES
            .iter()
            .enumerate()
            .map(|(i, m)| stored(i + 1, m).len() as u64)
            .sum()
    }

    #[test]
    fn auth_plain_with_continuation_and_cancel() {
        let mut h = Harness::new(limits(), 512);
        h.take_output();
        assert_eq!(h.send(b"AUTH PLAIN\r\n"), "+ \r\n");
        assert_eq!(h.send(b"*\r\n"), "-ERR authentication cancelled\r\n");
        assert_eq!(h.send(b"auth plain\r\n"), "+ \r\n");
        // "alice@example.test\0alice@example.test\0alice-Pa55word-7f3a": authzid = authcid.
        assert_eq!(
            h.send(
                b"YWxpY2VAZXhhbXBsZS50ZXN0AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1QYTU1d29yZC03ZjNh\r\n"
            ),
            "+OK logged in\r\n"
        );
    }

    #[test]
    fn auth_plain_refusals() {
        let mut h = Harness::new(limits(), 512);
        h.take_output();
        assert_eq!(
            h.send(b"AUTH LOGIN\r\n"),
            "-ERR unsupported authentication mechanism\r\n"
        );
        assert_eq!(h.send(b"AUTH\r\n"), "+OK\r\nPLAIN\r\n.\r\n");
        assert_eq!(
            h.send(b"AUTH PLAIN =\r\n"),
            "-ERR invalid SASL PLAIN message\r\n"
        );
        assert_eq!(h.send(b"AUTH PLAIN !!!!\r\n"), "-ERR invalid base64\r\n");
        assert_eq!(h.send(b"AUTH PLAIN\r\n"), "+ \r\n");
        assert_eq!(h.send(b"AGE=\r\n"), "-ERR invalid SASL PLAIN message\r\n");
        // "bob@example.test\0alice@example.test\0alice-Pa55word-7f3a": acting as bob.
        assert_eq!(
            h.send(b"AUTH PLAIN Ym9iQGV4YW1wbGUudGVzdABhbGljZUBleGFtcGxlLnRlc3QAYWxpY2UtUGE1NXdvcmQtN2YzYQ==\r\n"),
            "-ERR [AUTH] invalid credentials\r\n"
        );
        assert_eq!(h.logins, 0);
        // An overlong response line ends the exchange.
        assert_eq!(h.send(b"AUTH PLAIN\r\n"), "+ \r\n");
        let mut long = vec![b'A'; 600];
        long.extend_from_slice(b"\r\nSTAT\r\n");
        assert_eq!(
            h.send(&long),
            "-ERR line too long\r\n-ERR command not valid in this state\r\n"
        );
    }

    #[test]
    fn apop_is_refused_and_transaction_commands_need_login() {
        let mut h = Harness::new(limits(), 512);
        h.take_output();
        assert_eq!(
            h.send(b"APOP alice@example.test c4c9334bac560ecc979e58001b3e22fb\r\n"),
            "-ERR APOP not supported\r\n"
        );
        for command in [
            "STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1", "UIDL",
        ] {
            assert_eq!(
                h.send(format!("{command}\r\n").as_bytes()),
                "-ERR command not valid in this state\r\n",
                "{command}"
            );
        }
        assert_eq!(
            h.send(b"QUIT\r\n"),
            "+OK ringmail POP3 server signing off\r\n"
        );
        assert!(h.closed);
        assert!(h.commits.is_empty());
    }

    #[test]
    fn login_commands_are_refused_after_login() {
        let mut h = logged_in();
        for command in ["USER bob@example.test", "PASS x", "AUTH PLAIN", "APOP a b"] {
            assert_eq!(
                h.send(format!("{command}\r\n").as_bytes()),
                "-ERR command not valid in this state\r\n",
                "{command}"
            );
        }
    }

    #[test]
    fn a_second_session_on_a_locked_maildrop_gets_in_use() {
        let mut h = Harness::new(limits(), 512);
        h.take_output();
        h.locked.insert(ALICE.to_string());
        assert_eq!(
            h.send(b"USER alice@example.test\r\nPASS alice-Pa55word-7f3a\r\nSTAT\r\n"),
            "+OK\r\n-ERR [IN-USE] mailbox in use by another POP3 session\r\n"
        );
        assert!(h.closed);
    }

    #[test]
    fn maildrop_failure_closes() {
        let mut s = Session::resume(limits(), Session::new(limits()).authenticated());
        let mut out = Vec::new();
        assert_eq!(s.advance(b"STAT\r\n", &mut out), (0, Step::OpenMaildrop));
        s.maildrop_failed(&mut out);
        assert_eq!(
            out,
            b"-ERR [SYS/TEMP] cannot open the mailbox, try again later\r\n".to_vec()
        );
        assert_eq!(s.advance(b"STAT\r\n", &mut out), (0, Step::Close));
    }

    // ---- TRANSACTION ----

    #[test]
    fn stat_list_uidl_over_the_snapshot() {
        let mut h = logged_in_with(&[b"a\r\n", b"bb\r\n", b"ccc\n"]);
        // "ccc\n" is served as "ccc\r\n": 5 octets.
        assert_eq!(h.send(b"STAT\r\n"), "+OK 3 12\r\n");
        assert_eq!(
            h.send(b"LIST\r\n"),
            "+OK 3 messages (12 octets)\r\n1 3\r\n2 4\r\n3 5\r\n.\r\n"
        );
        assert_eq!(h.send(b"LIST 2\r\n"), "+OK 2 4\r\n");
        assert_eq!(
            h.send(b"UIDL\r\n"),
            "+OK\r\n1 0000000700000001\r\n2 0000000700000002\r\n3 0000000700000003\r\n.\r\n"
        );
        assert_eq!(h.send(b"UIDL 3\r\n"), "+OK 3 0000000700000003\r\n");
        assert_eq!(h.send(b"LIST 4\r\n"), "-ERR no such message\r\n");
        assert_eq!(h.send(b"LIST 0\r\n"), "-ERR no such message\r\n");
        assert_eq!(h.send(b"UIDL 4294967295\r\n"), "-ERR no such message\r\n");
        assert_eq!(h.send(b"LIST x\r\n"), "-ERR invalid message number\r\n");
        assert_eq!(h.send(b"NOOP\r\n"), "+OK\r\n");
    }

    #[test]
    fn uidl_is_validity_then_uid_in_uppercase_hex() {
        assert_eq!(Uidl(0x6A1F_0C2B, 0xBEEF).to_string(), "6A1F0C2B0000BEEF");
        assert_eq!(Uidl(1, u32::MAX).to_string(), "00000001FFFFFFFF");
    }

    #[test]
    fn retr_sends_the_message_byte_stuffed() {
        let message = b"Subject: x\r\n\r\n.one\r\ntwo\r\n.\r\n";
        let mut h = logged_in_with(&[message]);
        assert_eq!(
            h.send(b"RETR 1\r\n"),
            "+OK 28 octets\r\nSubject: x\r\n\r\n..one\r\ntwo\r\n..\r\n.\r\n"
        );
        assert_eq!(message.len(), 28);
        assert_eq!(h.send(b"RETR 2\r\n"), "-ERR no such message\r\n");
    }

    #[test]
    fn retr_of_bare_lf_message_matches_its_listed_size() {
        let mut h = logged_in_with(&[b"Subject: x\n\nbody\nno end"]);
        assert_eq!(h.send(b"LIST 1\r\n"), "+OK 1 28\r\n");
        assert_eq!(
            h.send(b"RETR 1\r\n"),
            "+OK 28 octets\r\nSubject: x\r\n\r\nbody\r\nno end\r\n.\r\n"
        );
    }

    #[test]
    fn top_with_and_without_body_lines() {
        let mut h = logged_in_with(&[b"A: 1\r\n\r\nl1\r\nl2\r\n"]);
        assert_eq!(h.send(b"TOP 1 0\r\n"), "+OK\r\nA: 1\r\n\r\n.\r\n");
        assert_eq!(h.send(b"TOP 1 1\r\n"), "+OK\r\nA: 1\r\n\r\nl1\r\n.\r\n");
        assert_eq!(h.send(b"TOP 2 1\r\n"), "-ERR no such message\r\n");
        assert_eq!(
            h.send(b"TOP 1\r\n"),
            "-ERR syntax error, usage: TOP message lines\r\n"
        );
    }

    #[test]
    fn a_failed_read_is_a_temporary_error_and_the_session_goes_on() {
        let mut h = logged_in_with(&[b"a\r\n"]);
        h.read_fails = true;
        assert_eq!(
            h.send(b"RETR 1\r\nNOOP\r\n"),
            "-ERR [SYS/TEMP] cannot read message 1, try again later\r\n+OK\r\n"
        );
    }

    #[test]
    fn dele_marks_rset_unmarks_and_numbers_stay() {
        let mut h = logged_in_with(&[b"a\r\n", b"bb\r\n", b"ccc\r\n"]);
        assert_eq!(h.send(b"DELE 2\r\n"), "+OK message 2 deleted\r\n");
        assert_eq!(h.send(b"DELE 2\r\n"), "-ERR message 2 already deleted\r\n");
        assert_eq!(h.send(b"RETR 2\r\n"), "-ERR message 2 already deleted\r\n");
        assert_eq!(h.send(b"LIST 2\r\n"), "-ERR message 2 already deleted\r\n");
        assert_eq!(h.send(b"STAT\r\n"), "+OK 2 8\r\n");
        assert_eq!(
            h.send(b"LIST\r\n"),
            "+OK 2 messages (8 octets)\r\n1 3\r\n3 5\r\n.\r\n"
        );
        assert_eq!(
            h.send(b"UIDL\r\n"),
            "+OK\r\n1 0000000700000001\r\n3 0000000700000003\r\n.\r\n"
        );
        assert_eq!(h.send(b"RETR 3\r\n"), "+OK 5 octets\r\nccc\r\n.\r\n");
        assert_eq!(
            h.send(b"RSET\r\n"),
            "+OK maildrop has 3 messages (12 octets)\r\n"
        );
        assert_eq!(h.send(b"STAT\r\n"), "+OK 3 12\r\n");
        assert_eq!(
            h.send(b"DELE 1\r\nDELE 3\r\n"),
            "+OK message 1 deleted\r\n+OK message 3 deleted\r\n"
        );
        assert_eq!(
            h.send(b"QUIT\r\n"),
            "+OK ringmail POP3 server signing off\r\n"
        );
        assert!(h.closed);
        assert_eq!(h.commits, vec![vec![1, 3]]);
        let left: Vec<u32> = h.maildrops[ALICE].1.iter().map(|m| m.0).collect();
        assert_eq!(left, vec![2]);
    }

    #[test]
    fn quit_without_deletions_commits_nothing() {
        let mut h = logged_in();
        assert_eq!(
            h.send(b"DELE 1\r\nRSET\r\nQUIT\r\n").lines().last(),
            Some("+OK ringmail POP3 server signing off")
        );
        assert!(h.closed);
        assert!(h.commits.is_empty());
    }

    #[test]
    fn a_failed_commit_says_sys_temp_and_deletes_nothing() {
        let mut h = logged_in();
        h.commit_fails = true;
        assert_eq!(
            h.send(b"DELE 1\r\nQUIT\r\n"),
            "+OK message 1 deleted\r\n-ERR [SYS/TEMP] cannot delete the messages, none were deleted; try again later\r\n"
        );
        assert!(h.closed);
        assert_eq!(h.maildrops[ALICE].1.len(), 3);
    }

    #[test]
    fn a_dropped_connection_or_timeout_deletes_nothing() {
        let mut h = logged_in();
        h.send(b"DELE 1\r\nDELE 2\r\n");
        h.session.timeout(&mut h.output);
        assert_eq!(h.take_output(), "-ERR disconnected for inactivity\r\n");
        h.drive();
        assert!(h.closed);
        assert!(h.commits.is_empty());
        let mut h = logged_in();
        h.send(b"DELE 1\r\n");
        h.session.shutting_down(&mut h.output);
        assert_eq!(h.take_output(), "-ERR [SYS/TEMP] server shutting down\r\n");
        assert!(h.session.is_closed());
        assert!(h.commits.is_empty());
    }

    // ---- Limits and bad input ----

    #[test]
    fn unknown_commands_and_syntax_errors() {
        let mut h = logged_in();
        assert_eq!(h.send(b"XTND\r\n"), "-ERR unknown command\r\n");
        assert_eq!(h.send(b"LAST\r\n"), "-ERR unknown command\r\n");
        assert_eq!(h.send(b"\r\n"), "-ERR unknown command\r\n");
        assert_eq!(
            h.send(b"STAT now\r\n"),
            "-ERR syntax error, usage: no arguments expected\r\n"
        );
        assert_eq!(
            h.send(b"RETR\r\n"),
            "-ERR syntax error, usage: command message\r\n"
        );
    }

    #[test]
    fn an_overlong_line_is_refused_and_the_session_goes_on() {
        let mut h = logged_in();
        let mut input = b"NOOP ".to_vec();
        input.extend_from_slice(&[b'x'; 2000]);
        input.extend_from_slice(b"\r\nNOOP\r\n");
        // Byte by byte and in one go, through a buffer exactly one line long.
        for chunk in [1, 7, 511, usize::MAX] {
            h.send_chunked(&input, chunk);
            assert_eq!(
                h.take_output(),
                "-ERR line too long\r\n+OK\r\n",
                "chunk {chunk}"
            );
        }
        // 512 bytes with CRLF fit.
        let mut fits = b"LIST ".to_vec();
        fits.extend_from_slice(&[b'1'; 505]);
        fits.extend_from_slice(b"\r\n");
        assert_eq!(fits.len(), 512);
        assert_eq!(h.send(&fits), "-ERR invalid message number\r\n");
        fits.insert(6, b'1');
        assert_eq!(h.send(&fits), "-ERR line too long\r\n");
    }

    #[test]
    fn too_many_errors_close_the_connection() {
        let mut h = logged_in();
        h.send(&b"BOGUS\r\n".repeat(ERRORS_MAX - 1));
        assert!(!h.closed);
        assert_eq!(
            h.send(b"BOGUS\r\nNOOP\r\n"),
            "-ERR unknown command\r\n-ERR too many errors\r\n"
        );
        assert!(h.closed);
        assert!(h.commits.is_empty());
    }

    #[test]
    fn errors_before_login_carry_over_to_the_owner_core() {
        let mut h = Harness::new(limits(), 512);
        h.take_output();
        h.send(&b"BOGUS\r\n".repeat(ERRORS_MAX - 1));
        h.send(b"USER alice@example.test\r\nPASS alice-Pa55word-7f3a\r\n");
        assert_eq!(
            h.send(b"BOGUS\r\n"),
            "-ERR unknown command\r\n-ERR too many errors\r\n"
        );
        assert!(h.closed);
    }

    #[test]
    fn pipelined_commands_are_all_answered_in_order() {
        let mut h = Harness::new(limits(), 512);
        h.take_output();
        let out = h.send(
            b"CAPA\r\nUSER alice@example.test\r\nPASS alice-Pa55word-7f3a\r\nSTAT\r\nTOP 1 0\r\nDELE 1\r\nLIST 1\r\nQUIT\r\n",
        );
        let lines: Vec<&str> = out.split_terminator("\r\n").collect();
        assert_eq!(lines[0], "+OK capability list follows");
        assert_eq!(lines[10], "+OK");
        assert_eq!(lines[11], "+OK logged in");
        assert!(lines[12].starts_with("+OK 3 "));
        assert_eq!(lines[13], "+OK");
        assert!(lines.contains(&"+OK message 1 deleted"));
        assert!(lines.contains(&"-ERR message 1 already deleted"));
        assert_eq!(lines.last(), Some(&"+OK ringmail POP3 server signing off"));
        assert_eq!(h.commits, vec![vec![1]]);
    }

    #[test]
    fn random_token_soup_never_panics_or_stalls() {
        const TOKENS: [&[u8]; 22] = [
            b"USER alice@example.test\r\n",
            b"PASS alice-Pa55word-7f3a\r\n",
            b"AUTH PLAIN",
            b" AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1QYTU1d29yZC03ZjNh",
            b"RETR ",
            b"TOP ",
            b"DELE ",
            b"LIST",
            b"UIDL",
            b"STAT",
            b"RSET",
            b"1",
            b"0",
            b" ",
            b"\r\n",
            b"\n",
            b"\r",
            b"*",
            b".",
            b"\xff",
            b"QUIT",
            b"CAPA",
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
            let mut h = Harness::new(limits(), 512);
            h.feed(&input, 1 + (next() % 64) as usize, true);
            assert!(h.take_output().starts_with("+OK ringmail POP3 ready\r\n"));
        }
    }

    // ---- Transcripts (tests/transcripts/pop3) ----

    /// Runs one transcript; returns the commits it made.
    fn run_transcript(name: &str, text: &str, chunk_bytes: usize, buffer: usize) -> Vec<Vec<u32>> {
        let blocks = transcript::parse(text);
        assert_eq!(
            blocks[0].expect.first().map(String::as_str),
            Some(GREETING),
            "{name}: the first line must be the greeting"
        );
        // The transcript environment: a certificate is configured (STLS offered) and, as in
        // the test servers, plaintext logins are allowed.
        let transcript_limits = Limits {
            tls_available: true,
            ..limits()
        };
        let mut h = Harness::new(transcript_limits, buffer);
        h.hold_tls = true;
        for (index, block) in blocks.iter().enumerate() {
            h.send_chunked(&block.send, chunk_bytes);
            let context =
                format!("{name} (chunks of {chunk_bytes}, buffer {buffer}), block {index}");
            block.check(&h.take_output(), h.closed, &context);
            if !block.starttls {
                assert!(!h.tls_pending, "{context}: STLS without C! starttls");
                continue;
            }
            // `C! starttls`: what the driver does after Step::StartTls.
            assert!(
                h.tls_pending,
                "{context}: C! starttls, but no Step::StartTls"
            );
            let mut out = Vec::new();
            assert_eq!(
                h.session.advance(b"NOOP\r\n", &mut out),
                (0, Step::StartTls),
                "{context}: the session must wait for the handshake"
            );
            assert!(out.is_empty(), "{context}: {out:?}");
            h.buffer.clear();
            h.session.tls_started();
            h.tls_pending = false;
            h.tls_handshakes += 1;
        }
        assert_eq!(
            h.discarded_at_stls,
            expected_discarded_at_stls(name),
            "{name} (chunks of {chunk_bytes}, buffer {buffer}): dropped at STLS"
        );
        h.commits
    }

    /// The plaintext each STLS of a transcript must drop (one entry per handshake).
    fn expected_discarded_at_stls(name: &str) -> Vec<&'static [u8]> {
        match name {
            "stls_injection" => vec![b"USER alice@example.test\r\n"],
            _ => Vec::new(),
        }
    }

    /// The UIDs each transcript must expunge (in its one QUIT); the rest expunge nothing.
    fn expected_commits(name: &str) -> Vec<Vec<u32>> {
        match name {
            "dele_rset_quit" => vec![vec![3]],
            "pipelining" => vec![vec![1, 5]],
            _ => Vec::new(),
        }
    }

    const REQUIRED_TRANSCRIPTS: [&str; 13] = [
        "greeting_capa_quit",
        "user_pass",
        "auth_plain",
        "failed_login",
        "stat_list_uidl",
        "retr_dot_stuffing",
        "top",
        "dele_rset_quit",
        "no_such_message",
        "line_too_long",
        "pipelining",
        "wrong_state",
        "stls_injection",
    ];

    #[test]
    fn transcripts() {
        let files = transcript::load("pop3", &REQUIRED_TRANSCRIPTS);
        let ways = [
            (usize::MAX, 1 << 20),
            (1, 512),
            (2, 4096),
            (3, 512),
            (7, 1000),
            (511, 512),
        ];
        for (name, text) in &files {
            for (chunk_bytes, buffer) in ways {
                let commits = run_transcript(name, text, chunk_bytes, buffer);
                assert_eq!(commits, expected_commits(name), "{name}: commits");
            }
        }
    }

    #[test]
    fn transcript_matcher() {
        assert!(matches("+OK {*} octets", "+OK 123 octets"));
        assert!(!matches("+OK {*} octets", "+OK 123 octets!"));
        assert!(matches("{*}by mx", "\tby mx"));
        assert!(!matches("a{*}b", "a\rb"));
        assert_eq!(unescape(r"a\r\n\t\\\x00\xff"), b"a\r\n\t\\\x00\xff");
    }

    fn tls_limits() -> Limits {
        let mut l = limits();
        l.tls_available = true;
        l.plaintext_auth = false;
        l
    }

    #[test]
    fn in_the_clear_capa_offers_stls_and_hides_plaintext_logins() {
        let mut h = Harness::new(tls_limits(), 512);
        h.take_output();
        let out = h.send(b"CAPA\r\n");
        assert!(out.contains("\r\nSTLS\r\n"), "{out}");
        assert!(!out.contains("USER") && !out.contains("SASL"), "{out}");
        for cmd in [
            "USER alice@example.test",
            "PASS x",
            "AUTH PLAIN AGFsaWNlAHg=",
        ] {
            let out = h.send(format!("{cmd}\r\n").as_bytes());
            assert_eq!(
                out,
                format!("{REPLY_PLAINTEXT_DISALLOWED}\r\n"),
                "{cmd} in the clear"
            );
        }
        assert_eq!(h.logins, 0);
    }

    #[test]
    fn stls_discards_pipelined_plaintext_and_resets_authorization() {
        let mut h = Harness::new(tls_limits(), 512);
        h.take_output();
        // USER sent in the clear behind STLS must not survive the handshake.
        let out = h.send(b"STLS\r\nUSER alice@example.test\r\n");
        assert_eq!(out, "+OK Begin TLS negotiation now.\r\n");
        assert_eq!(h.tls_handshakes, 1);
        let out = h.send(b"PASS alice-Pa55word-7f3a\r\n");
        assert_eq!(out, "-ERR no USER given\r\n");
        let out = h.send(b"CAPA\r\n");
        assert!(
            out.contains("\r\nUSER\r\n") && out.contains("SASL PLAIN"),
            "{out}"
        );
        assert!(!out.contains("STLS"), "{out}");
        assert_eq!(h.send(b"STLS\r\n"), "-ERR TLS already active\r\n");
        let out = h.send(b"USER alice@example.test\r\nPASS alice-Pa55word-7f3a\r\n");
        assert!(out.starts_with("+OK\r\n+OK logged in"), "{out}");
        assert_eq!(h.logins, 1);
    }

    #[test]
    fn stls_refused_when_unavailable_after_user_and_after_login() {
        let mut h = Harness::new(limits(), 512);
        h.take_output();
        assert_eq!(h.send(b"STLS\r\n"), "-ERR STLS not available\r\n");
        let mut h = Harness::new(
            Limits {
                plaintext_auth: true,
                ..tls_limits()
            },
            512,
        );
        h.take_output();
        assert!(h.send(b"USER alice@example.test\r\n").starts_with("+OK"));
        assert_eq!(h.send(b"STLS\r\n"), "-ERR STLS not allowed after USER\r\n");
        let out = h.send(b"USER alice@example.test\r\nPASS alice-Pa55word-7f3a\r\n");
        assert!(out.contains("+OK logged in"), "{out}");
        assert_eq!(h.send(b"STLS\r\n"), format!("{REPLY_WRONG_STATE}\r\n"));
        assert_eq!(h.tls_handshakes, 0);
    }
}
