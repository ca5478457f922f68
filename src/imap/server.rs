//! Drives IMAP connections over glommio TCP streams.
//!
//! [`serve`] runs the not-authenticated state on the core that accepted the connection:
//! greeting, CAPABILITY, NOOP, ID, LOGOUT, LOGIN, AUTHENTICATE PLAIN. A successful login hands
//! the connection to the user's owner core ([`Core::hand_over`]), where [`serve_user`] answers
//! the login and runs the authenticated and selected states ([`Session`]).
//!
//! [`Conn`] owns the socket, one read buffer and one output buffer. Replies accumulate and are
//! written when the client's pipelined input is used up, before blocking on a read, or when
//! the output grows past `[cores] write_buffer_bytes` (a big FETCH streams out in pieces). The
//! read buffer holds `[cores] read_buffer_bytes`.

use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;

use crate::accounts::Secret;
use crate::metrics::ImapOp;
use crate::net::tls::TlsAcceptor;
use crate::net::transport::Transport;
use crate::runtime::core::Core;
use crate::runtime::handoff::{Handoff, Resume as HandoffResume};

use super::codec::{Frame, FrameErrorKind, Framer, FramerLimits, RawLine};
use super::command::{self, Command, CommandBody};
use super::session::{self, Session};

/// The not-authenticated state ends after this long without a command.
pub const TIMEOUT_MS_LOGIN: u64 = 60_000;
/// Commands that fail to parse before the connection is closed.
pub const BAD_COMMANDS_MAX: usize = 20;

/// What the login command carries to the owner core.
#[derive(Debug)]
pub struct Resume {
    /// Tag of the LOGIN / AUTHENTICATE command, answered by the owner.
    pub tag: String,
}

/// A connection: socket, input buffer and framer, output buffer.
pub struct Conn {
    pub stream: Transport,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    pub out: Vec<u8>,
    pub framer: Framer,
    pub core: Rc<Core>,
    /// The command being served and when it was parsed (for the metrics).
    command: Option<(ImapOp, Instant)>,
}

fn new_framer(core: &Core) -> Framer {
    Framer::new(FramerLimits {
        line_bytes_max: core.config.imap.line_bytes_max,
        literal_bytes_max: core.config.imap.literal_bytes_max,
        append_bytes_max: core.config.smtp.max_message_bytes,
        command_bytes_max: core.config.smtp.max_message_bytes + (1 << 20),
        // LITERAL+ is announced: any size, within the other limits.
        non_sync_literal_bytes_max: usize::MAX,
    })
}

/// What a read gave.
enum Fill {
    Read,
    Closed,
    TimedOut,
    Shutdown,
}

/// What waiting for the next command gave.
pub enum Next {
    Command(Vec<u8>),
    /// A framing error: reply with the tag (or `*`) and go on.
    Error {
        tag: Option<String>,
        kind: FrameErrorKind,
    },
    Closed,
    TimedOut,
    Shutdown,
}

impl Conn {
    fn new(stream: Transport, core: Rc<Core>, input: Vec<u8>) -> Conn {
        let mut buf = vec![0u8; core.config.cores.read_buffer_bytes];
        let n = input.len().min(buf.len());
        buf[..n].copy_from_slice(&input[..n]);
        Conn {
            stream,
            buf,
            start: 0,
            end: n,
            out: Vec::with_capacity(4096),
            framer: new_framer(&core),
            core,
            command: None,
        }
    }

    /// STARTTLS: the handshake, after the OK went out. Commands pipelined after STARTTLS
    /// came in the clear and are discarded (CVE-2011-0411). None: the handshake failed.
    async fn start_tls(self, tls: &TlsAcceptor) -> Option<Conn> {
        let Conn {
            stream,
            buf,
            out,
            core,
            ..
        } = self;
        let stream = stream.start_tls(tls).await.ok()?;
        Some(Conn {
            stream,
            buf,
            start: 0,
            end: 0,
            out,
            // The old framer may hold a partial plaintext command: start afresh.
            framer: new_framer(&core),
            core,
            command: None,
        })
    }

    /// Unconsumed input (handed to the owner core with the connection).
    fn pending_input(&self) -> Vec<u8> {
        self.buf[self.start..self.end].to_vec()
    }

    /// Whether complete input is already buffered (then replies wait to be batched).
    pub fn has_buffered_input(&self) -> bool {
        self.start < self.end
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self.stream.write_all(&self.out).await;
        self.out.clear();
        if self.out.capacity() > 4 * self.core.config.cores.write_buffer_bytes {
            self.out.shrink_to(4096);
        }
        r
    }

    /// Writes the output if it grew large.
    pub async fn flush_if_large(&mut self) -> io::Result<()> {
        if self.out.len() >= self.core.config.cores.write_buffer_bytes {
            self.flush().await
        } else {
            Ok(())
        }
    }

    /// Reads more input into the buffer. `interruptible`: shutdown ends the wait.
    async fn fill(&mut self, timeout_ms: u64, interruptible: bool) -> Fill {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // The framer consumes what it buffers; a full buffer means it made no progress.
            return Fill::Closed;
        }
        if self
            .stream
            .set_read_timeout(Some(Duration::from_millis(timeout_ms)))
            .is_err()
        {
            return Fill::Closed;
        }
        let (stream, buf, end) = (&mut self.stream, &mut self.buf, self.end);
        let read = async {
            match stream.read(&mut buf[end..]).await {
                Ok(0) => (Fill::Closed, 0),
                Ok(n) => (Fill::Read, n),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => (Fill::TimedOut, 0),
                Err(_) => (Fill::Closed, 0),
            }
        };
        let (got, n) = if interruptible {
            let core = self.core.clone();
            future::or(read, async move {
                let _ = core.shutdown.acquire(1).await;
                (Fill::Shutdown, 0)
            })
            .await
        } else {
            read.await
        };
        self.end += n;
        got
    }

    /// The next complete command (line plus literals). Sends `+` continuation requests for
    /// synchronizing literals; flushes pending output before blocking.
    pub async fn next_command(&mut self, timeout_ms: u64, interruptible: bool) -> Next {
        loop {
            let (consumed, frame) = self.framer.push(&self.buf[self.start..self.end]);
            self.start += consumed;
            match frame {
                Some(Frame::Command(bytes)) => return Next::Command(bytes),
                Some(Frame::NeedContinuation) => {
                    self.out.extend_from_slice(b"+ OK\r\n");
                    if self.flush().await.is_err() {
                        return Next::Closed;
                    }
                }
                Some(Frame::Error { tag, kind }) => return Next::Error { tag, kind },
                None => {
                    if self.flush().await.is_err() {
                        return Next::Closed;
                    }
                    if self.core.is_shutting_down() && interruptible {
                        return Next::Shutdown;
                    }
                    match self.fill(timeout_ms, interruptible).await {
                        Fill::Read => {}
                        Fill::Closed => return Next::Closed,
                        Fill::TimedOut => return Next::TimedOut,
                        Fill::Shutdown => return Next::Shutdown,
                    }
                }
            }
        }
    }

    /// The next command, parsed. Framing and syntax errors are answered here (BAD) and
    /// counted in `bad`; None when the session must end: its BYE (too many bad commands,
    /// inactivity, shutdown) is in the output, or the client is gone.
    pub async fn next_parsed(
        &mut self,
        timeout_ms: u64,
        bad: &mut usize,
        bad_max: usize,
    ) -> Option<Command> {
        self.command_done();
        loop {
            let bytes = match self.next_command(timeout_ms, true).await {
                Next::Command(b) => b,
                Next::Error { tag, kind } => {
                    session::frame_error(&mut self.out, tag.as_deref(), kind);
                    *bad += 1;
                    if *bad >= bad_max {
                        self.out
                            .extend_from_slice(b"* BYE Too many invalid IMAP commands.\r\n");
                        return None;
                    }
                    continue;
                }
                Next::TimedOut => {
                    self.out
                        .extend_from_slice(b"* BYE Disconnected for inactivity.\r\n");
                    return None;
                }
                Next::Shutdown => {
                    self.out
                        .extend_from_slice(b"* BYE Server shutting down.\r\n");
                    return None;
                }
                Next::Closed => return None,
            };
            match command::parse(&bytes) {
                Ok(c) => {
                    let op = imap_op(&c.body);
                    self.core.metrics.imap_command(op);
                    self.command = Some((op, Instant::now()));
                    return Some(c);
                }
                Err(e) => {
                    session::parse_error(&mut self.out, &e);
                    *bad += 1;
                    if *bad >= bad_max {
                        self.out
                            .extend_from_slice(b"* BYE Too many invalid IMAP commands.\r\n");
                        return None;
                    }
                }
            }
        }
    }

    /// The command parsed last is done: its time goes to the metrics (IDLE's, the client's
    /// time, does not).
    fn command_done(&mut self) {
        if let Some((op, parsed)) = self.command.take() {
            if op != ImapOp::Idle {
                self.core.metrics.imap_command_done(op, parsed.elapsed());
            }
        }
    }

    /// One raw line (SASL response, IDLE's DONE), without its CRLF.
    pub async fn next_line(&mut self, timeout_ms: u64) -> Option<Vec<u8>> {
        loop {
            let (consumed, line) = self.framer.next_line(&self.buf[self.start..self.end]);
            self.start += consumed;
            match line {
                Some(RawLine::Line(l)) => return Some(l),
                Some(RawLine::TooLong) => return None,
                None => {
                    if self.flush().await.is_err() {
                        return None;
                    }
                    match self.fill(timeout_ms, false).await {
                        Fill::Read => {}
                        _ => return None,
                    }
                }
            }
        }
    }

    /// Waits for input to arrive or `other` to resolve, whichever is first; true if input.
    /// Cancel-safe: glommio's non-buffered read only takes bytes when it completes.
    pub async fn input_or<F: std::future::Future<Output = ()>>(
        &mut self,
        timeout_ms: u64,
        other: F,
    ) -> Option<bool> {
        if self.has_buffered_input() {
            return Some(true);
        }
        let got = future::or(async { Some(self.fill(timeout_ms, true).await) }, async {
            other.await;
            None
        })
        .await;
        match got {
            None => Some(false),
            Some(Fill::Read) => Some(true),
            Some(_) => None,
        }
    }
}

/// Capabilities before login: STARTTLS while the connection is in the clear (and TLS is
/// available); the plaintext mechanisms only over TLS, else LOGINDISABLED (RFC 9051 §6.2.3),
/// unless the operator allowed plaintext logins.
pub fn capabilities_pre_auth(tls_active: bool, tls_available: bool, plaintext_ok: bool) -> String {
    let mut caps =
        String::from("IMAP4rev1 IMAP4rev2 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+");
    if !tls_active && tls_available {
        caps.push_str(" STARTTLS");
    }
    if tls_active || plaintext_ok {
        caps.push_str(" AUTH=PLAIN AUTH=LOGIN");
    } else {
        caps.push_str(" LOGINDISABLED");
    }
    caps
}

/// Reads one SASL response line after a `+` challenge; None: the client went away.
async fn sasl_response(conn: &mut Conn, challenge: &str, timeout_ms: u64) -> Option<Vec<u8>> {
    put!(conn.out, "+ {challenge}\r\n");
    conn.next_line(timeout_ms).await
}

/// What an AUTHENTICATE exchange gave.
enum Sasl {
    Credentials(String, Secret),
    /// Answered already (aborted, bad base64, unknown mechanism): next command.
    Answered,
    Gone,
}

async fn authenticate(
    conn: &mut Conn,
    tag: &str,
    mechanism: &str,
    initial_response: Option<Vec<u8>>,
    timeout_ms: u64,
) -> Sasl {
    let mut responses = Vec::with_capacity(2);
    let challenges: &[&str] = match mechanism {
        "PLAIN" => &[""],
        // draft-murchison-sasl-login: "Username:" and "Password:".
        "LOGIN" => &[
            crate::sasl::LOGIN_USERNAME_CHALLENGE,
            crate::sasl::LOGIN_PASSWORD_CHALLENGE,
        ],
        _ => {
            put!(
                conn.out,
                "{tag} NO Unsupported authentication mechanism.\r\n"
            );
            return Sasl::Answered;
        }
    };
    let mut initial = initial_response;
    for challenge in challenges {
        let response = match initial.take() {
            Some(r) => r,
            None => match sasl_response(conn, challenge, timeout_ms).await {
                Some(l) => l,
                None => return Sasl::Gone,
            },
        };
        if response == b"*" {
            put!(conn.out, "{tag} BAD Authentication aborted by client.\r\n");
            return Sasl::Answered;
        }
        responses.push(response);
    }
    let decoded = if mechanism == "PLAIN" {
        crate::sasl::decode_plain(&responses[0])
    } else {
        crate::sasl::decode_login(&responses[0]).and_then(|user| {
            let password = crate::sasl::decode_login(&responses[1])?;
            Ok((user, Secret::new(password)))
        })
    };
    match decoded {
        Ok((u, p)) => Sasl::Credentials(u, p),
        Err(_) => {
            put!(
                conn.out,
                "{tag} BAD Invalid base64 data in continued response.\r\n"
            );
            Sasl::Answered
        }
    }
}

/// Serves the not-authenticated state of a new connection on the accepting core.
pub async fn serve(stream: Transport, core: Rc<Core>) {
    let mut conn = Conn::new(stream, core.clone(), Vec::new());
    let tls_available = core.tls.is_some();
    let plaintext_ok = core.config.imap.allow_plaintext_auth;
    put!(
        conn.out,
        "* OK [CAPABILITY {}] ringmail ready.\r\n",
        capabilities_pre_auth(conn.stream.is_tls(), tls_available, plaintext_ok)
    );
    let timeout_ms = TIMEOUT_MS_LOGIN.min(core.config.imap.timeout_ms_idle);
    let mut failures = 0usize;
    let mut bad = 0usize;
    loop {
        let Some(cmd) = conn
            .next_parsed(timeout_ms, &mut bad, BAD_COMMANDS_MAX)
            .await
        else {
            break;
        };
        let Command { tag, body } = cmd;
        let secure = conn.stream.is_tls() || plaintext_ok;
        let login = match body {
            CommandBody::Capability => {
                put!(
                    conn.out,
                    "* CAPABILITY {}\r\n{tag} OK Capability completed.\r\n",
                    capabilities_pre_auth(conn.stream.is_tls(), tls_available, plaintext_ok)
                );
                continue;
            }
            CommandBody::Noop => {
                put!(conn.out, "{tag} OK NOOP completed.\r\n");
                continue;
            }
            CommandBody::Id { .. } => {
                session::write_id(&mut conn.out, &tag);
                continue;
            }
            CommandBody::Logout => {
                put!(
                    conn.out,
                    "* BYE Logging out\r\n{tag} OK Logout completed.\r\n"
                );
                break;
            }
            CommandBody::StartTls => {
                if conn.stream.is_tls() {
                    put!(conn.out, "{tag} BAD TLS is already active.\r\n");
                    continue;
                }
                let Some(tls) = core.tls.as_ref() else {
                    put!(conn.out, "{tag} BAD TLS support isn't enabled.\r\n");
                    continue;
                };
                put!(conn.out, "{tag} OK Begin TLS negotiation now.\r\n");
                if conn.flush().await.is_err() {
                    return;
                }
                match conn.start_tls(tls).await {
                    Some(c) => conn = c,
                    None => return,
                }
                continue;
            }
            CommandBody::Login { .. } | CommandBody::Authenticate { .. } if !secure => {
                put!(
                    conn.out,
                    "{tag} NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n"
                );
                continue;
            }
            CommandBody::Login { username, password } => match String::from_utf8(username) {
                Ok(u) => Some((u, password_secret(password))),
                Err(_) => None,
            },
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } => {
                match authenticate(&mut conn, &tag, &mechanism, initial_response, timeout_ms).await
                {
                    Sasl::Credentials(u, p) => Some((u, p)),
                    Sasl::Answered => continue,
                    Sasl::Gone => return,
                }
            }
            _ => {
                put!(
                    conn.out,
                    "{tag} BAD Command not permitted before authentication.\r\n"
                );
                continue;
            }
        };
        let peer_ip = conn.stream.peer_addr().map(|a| a.ip()).ok();
        let verified = match (&login, peer_ip) {
            (Some((u, p)), Some(ip)) => core.authenticate(ip, u, p).await.ok(),
            _ => {
                crate::runtime::auth::failure_delay(core.config.auth.failure_delay_ms).await;
                None
            }
        };
        match verified {
            Some(user) => {
                conn.command_done();
                // Nothing of ours may be left in the output: the owner answers the login.
                if conn.flush().await.is_err() {
                    return;
                }
                let input = conn.pending_input();
                let Conn { stream, .. } = conn;
                core.hand_over(
                    stream,
                    Handoff {
                        user,
                        input,
                        resume: HandoffResume::Imap(Resume { tag }),
                        tls: None,
                    },
                )
                .await;
                return;
            }
            None => {
                failures += 1;
                core.metrics.auth_failed(crate::net::Protocol::Imap);
                put!(
                    conn.out,
                    "{tag} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
                );
                if failures >= core.config.auth.failures_max {
                    conn.out
                        .extend_from_slice(b"* BYE Too many invalid authentication attempts.\r\n");
                    break;
                }
            }
        }
    }
    let _ = conn.flush().await;
    conn.stream.close().await;
}

fn password_secret(p: command::Secret) -> Secret {
    Secret::new(String::from_utf8_lossy(p.expose()).into_owned())
}

/// Serves an authenticated connection on the owner core of `user`.
pub async fn serve_user(
    stream: Transport,
    core: Rc<Core>,
    user: String,
    input: Vec<u8>,
    resume: Resume,
) {
    let mut conn = Conn::new(stream, core.clone(), input);
    if core.is_shutting_down() {
        conn.out
            .extend_from_slice(b"* BYE Server shutting down.\r\n");
        let _ = conn.flush().await;
        return;
    }
    if let Err(e) = core.store.ensure_account(&user).await {
        eprintln!("ringmail: imap: cannot prepare the mailboxes of {user}: {e}");
        put!(
            conn.out,
            "{} NO [UNAVAILABLE] Mailbox storage is unavailable, try again later.\r\n",
            resume.tag
        );
        let _ = conn.flush().await;
        return;
    }
    put!(
        conn.out,
        "{} OK [CAPABILITY {}] Logged in\r\n",
        resume.tag,
        session::capabilities()
    );
    let mut session = Session::new(core.clone(), user);
    session.run(&mut conn).await;
    let _ = conn.flush().await;
    conn.stream.close().await;
}

/// The metrics bucket of a parsed command (UID variants count with their command).
fn imap_op(body: &CommandBody) -> ImapOp {
    match body {
        CommandBody::Login { .. } | CommandBody::Authenticate { .. } => ImapOp::Login,
        CommandBody::Select { .. } | CommandBody::Examine { .. } => ImapOp::Select,
        CommandBody::Fetch { .. } => ImapOp::Fetch,
        CommandBody::Store { .. } => ImapOp::Store,
        CommandBody::Search { .. } => ImapOp::Search,
        CommandBody::Append { .. } => ImapOp::Append,
        CommandBody::Idle => ImapOp::Idle,
        _ => ImapOp::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imap_commands_map_to_their_op() {
        for (line, op) in [
            ("a LOGIN u p\r\n", ImapOp::Login),
            ("a AUTHENTICATE PLAIN\r\n", ImapOp::Login),
            ("a SELECT INBOX\r\n", ImapOp::Select),
            ("a EXAMINE INBOX\r\n", ImapOp::Select),
            ("a FETCH 1 FLAGS\r\n", ImapOp::Fetch),
            ("a UID FETCH 1 FLAGS\r\n", ImapOp::Fetch),
            ("a STORE 1 +FLAGS (\\Seen)\r\n", ImapOp::Store),
            ("a UID STORE 1 +FLAGS (\\Seen)\r\n", ImapOp::Store),
            ("a SEARCH ALL\r\n", ImapOp::Search),
            ("a UID SEARCH ALL\r\n", ImapOp::Search),
            ("a APPEND INBOX {1}\r\nm\r\n", ImapOp::Append),
            ("a IDLE\r\n", ImapOp::Idle),
            ("a NOOP\r\n", ImapOp::Other),
            ("a UID COPY 1 x\r\n", ImapOp::Other),
        ] {
            let c = command::parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e:?}"));
            assert_eq!(imap_op(&c.body), op, "{line}");
        }
    }
}
