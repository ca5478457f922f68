//! Drives POP3 [`Session`]s over glommio TCP streams: the only I/O of `pop3`.
//!
//! [`serve`] runs AUTHORIZATION on the core that accepted the connection. Once a login
//! verifies (`Core::authenticate`, which delays failures itself), it flushes the replies so
//! far and hands the socket, the unconsumed input and the session's [`Resume`] to the
//! user's owner core (`Core::hand_over`). There [`serve_user`] takes the maildrop lock,
//! snapshots INBOX from the local store and serves TRANSACTION and UPDATE: every store call
//! is local.
//!
//! One fixed read buffer per connection (`[cores] read_buffer_bytes`); the session parses in
//! place and says how much it consumed. Replies accumulate in one output buffer written once
//! per batch of pipelined commands (when the session needs more input), or as soon as it
//! holds `[cores] write_buffer_bytes` (a pipelined run of RETRs does not pile up in memory).
//!
//! Message sizes are measured at login: every blob of the snapshot is read once and its
//! served size (CRLF line ends, see [`served_size`]) computed, so STAT, LIST and RETR's
//! `+OK n octets` are exact even for stored messages with bare LFs.

use std::io;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;

use crate::net::transport::Transport;
use crate::runtime::core::{Core, INBOX};
use crate::runtime::handoff::{Handoff, Resume as HandoffResume};
use crate::store::{BlobRef, StoreError, UIDS_PER_CALL_MAX};

use super::session::{
    served_size, CommitOutcome, Limits, Maildrop, MessageInfo, ReadOutcome, Session, Step,
};

/// The state that travels with a logged-in connection to the owner core.
pub use super::session::Resume;

/// Initial capacity of a connection's output buffer (shrunk back to it after a big RETR).
const OUT_CAPACITY: usize = 1024;

/// Most messages one POP3 session sees (the oldest of INBOX): the store's limit on UIDs per
/// call, so the UPDATE state deletes everything marked in one all-or-nothing commit.
pub const MAILDROP_MESSAGES_MAX: usize = UIDS_PER_CALL_MAX;

/// Serves one POP3 connection's AUTHORIZATION state on the accepting core; after a
/// successful login the connection continues on the owner core ([`serve_user`]).
pub async fn serve(stream: Transport, core: Rc<Core>) {
    let mut session = Session::new(limits(&core));
    if stream.is_tls() {
        session.tls_started();
    }
    let mut conn = Connection::new(stream, Vec::new(), &core);
    session.greeting(&mut conn.out);
    if conn.flush().await.is_err() {
        return conn.close().await;
    }
    loop {
        let (consumed, step) = session.advance(&conn.buf[conn.start..conn.end], &mut conn.out);
        conn.start += consumed;
        match step {
            Step::NeedInput => {
                if !conn.wait_for_input(&mut session, &core).await {
                    break;
                }
            }
            Step::StartTls => {
                if conn.flush().await.is_err() {
                    break;
                }
                // Sent in the clear before the handshake: discarded (CVE-2011-0411).
                conn.start = 0;
                conn.end = 0;
                let Some(tls) = core.tls.as_ref() else {
                    break;
                };
                let Connection {
                    stream,
                    buf,
                    out,
                    write_buffer_bytes,
                    ..
                } = conn;
                let Ok(stream) = stream.start_tls(tls).await else {
                    return;
                };
                conn = Connection {
                    stream,
                    buf,
                    start: 0,
                    end: 0,
                    out,
                    write_buffer_bytes,
                };
                session.tls_started();
            }
            Step::Authenticate => {
                let peer_ip = conn.stream.peer_addr().map(|a| a.ip());
                let verified = match (session.take_credentials(), peer_ip) {
                    (Some(c), Ok(ip)) => core.authenticate(ip, &c.user, &c.password).await.ok(),
                    _ => None,
                };
                let Some(user) = verified else {
                    core.metrics.auth_failed(crate::net::Protocol::Pop3);
                    session.login_failed(&mut conn.out);
                    continue;
                };
                // Replies to commands before the login go out first; the owner core
                // answers the login itself once the maildrop is open.
                if conn.flush().await.is_err() {
                    break;
                }
                let handoff = Handoff {
                    user,
                    input: conn.pending().to_vec(),
                    resume: HandoffResume::Pop3(session.authenticated()),
                    tls: None,
                };
                core.hand_over(conn.stream, handoff).await;
                return;
            }
            Step::Close => {
                let _ = conn.flush().await;
                break;
            }
            // Only a session resumed on the owner core asks for these.
            Step::OpenMaildrop | Step::Read { .. } | Step::Commit => {
                eprintln!(
                    "ringmail: core {}: pop3: unexpected {step:?} before login",
                    core.index
                );
                break;
            }
        }
    }
    conn.close().await;
}

/// Serves a logged-in POP3 connection on `handoff.user`'s owner core: takes the maildrop
/// lock (`-ERR [IN-USE]` and close if another session holds it), snapshots INBOX, answers
/// the login, then serves TRANSACTION and UPDATE until QUIT, EOF, timeout or shutdown.
pub async fn serve_user(stream: Transport, core: Rc<Core>, handoff: Handoff) {
    let Handoff {
        user,
        input,
        resume,
        ..
    } = handoff;
    let HandoffResume::Pop3(resume) = resume else {
        eprintln!(
            "ringmail: core {}: pop3: handed a connection of another protocol",
            core.index
        );
        return;
    };
    let mut session = Session::resume(limits(&core), resume);
    let mut conn = Connection::new(stream, input, &core);
    // Held until the connection ends; dropping it releases the maildrop.
    let mut _lock = None;
    let mut blobs: Vec<BlobRef> = Vec::new();
    loop {
        let (consumed, step) = session.advance(&conn.buf[conn.start..conn.end], &mut conn.out);
        conn.start += consumed;
        match step {
            Step::NeedInput => {
                if !conn.wait_for_input(&mut session, &core).await {
                    break;
                }
            }
            Step::OpenMaildrop => match core.lock_maildrop(&user) {
                None => session.maildrop_in_use(&mut conn.out),
                Some(lock) => match snapshot(&core, &user).await {
                    Ok((maildrop, refs)) => {
                        _lock = Some(lock);
                        blobs = refs;
                        session.maildrop_opened(maildrop, &mut conn.out);
                    }
                    Err(e) => {
                        eprintln!(
                            "ringmail: core {}: pop3: cannot open the maildrop of {user}: {e}",
                            core.index
                        );
                        session.maildrop_failed(&mut conn.out);
                    }
                },
            },
            Step::Read { message } => {
                core.metrics.pop3_retrieved();
                let read = match (message as usize).checked_sub(1).and_then(|i| blobs.get(i)) {
                    Some(blob) => Some(core.store.read_blob_settled(*blob).await),
                    None => None,
                };
                match read {
                    Some(Ok(bytes)) => {
                        session.message_read(ReadOutcome::Read(&bytes), &mut conn.out)
                    }
                    Some(Err(e)) => {
                        eprintln!(
                            "ringmail: core {}: pop3: cannot read message {message} of {user}: {e}",
                            core.index
                        );
                        session.message_read(ReadOutcome::Failed, &mut conn.out);
                    }
                    None => session.message_read(ReadOutcome::Failed, &mut conn.out),
                }
                if conn.out.len() >= conn.write_buffer_bytes && conn.flush().await.is_err() {
                    break;
                }
            }
            Step::Commit => {
                let uids = session.deletions();
                let outcome = match core.store.expunge_uids(&user, INBOX, &uids).await {
                    Ok(_) => {
                        core.metrics.pop3_deleted(uids.len());
                        CommitOutcome::Committed
                    }
                    Err(e) => {
                        eprintln!(
                            "ringmail: core {}: pop3: deleting {} message(s) of {user} failed: {e}",
                            core.index,
                            uids.len()
                        );
                        CommitOutcome::Failed
                    }
                };
                session.committed(outcome, &mut conn.out);
            }
            Step::Close => {
                let _ = conn.flush().await;
                break;
            }
            Step::Authenticate | Step::StartTls => {
                eprintln!(
                    "ringmail: core {}: pop3: unexpected login after the hand-over",
                    core.index
                );
                break;
            }
        }
    }
    conn.close().await;
}

fn limits(core: &Core) -> Limits {
    let mut limits = Limits::new(
        core.config.pop3.line_bytes_max,
        core.config.auth.failures_max,
    );
    limits.tls_available = core.tls.is_some();
    limits.plaintext_auth = core.config.pop3.allow_plaintext_auth;
    limits
}

/// INBOX as it is now: UIDVALIDITY, every message's UID and served size, and where each
/// blob is. At most [`MAILDROP_MESSAGES_MAX`] messages (the oldest), so that QUIT's deletions
/// always fit one atomic `expunge_uids` call. Sets the account up first if this is the
/// user's first login ever (`Store::ensure_account`, as on every login).
async fn snapshot(core: &Core, user: &str) -> Result<(Maildrop, Vec<BlobRef>), StoreError> {
    core.store.ensure_account(user).await?;
    let uid_validity = core
        .store
        .mailbox_status(user, INBOX)
        .map_or(0, |s| s.uid_validity);
    let mut entries = core.store.messages(user, INBOX);
    entries.truncate(MAILDROP_MESSAGES_MAX);
    let mut messages = Vec::with_capacity(entries.len());
    let mut blobs = Vec::with_capacity(entries.len());
    for entry in &entries {
        let blob = entry.blob();
        let bytes = core.store.read_blob_settled(blob).await?;
        messages.push(MessageInfo {
            uid: entry.uid,
            size: served_size(&bytes),
        });
        blobs.push(blob);
        // A big maildrop must not hold up the core's other sessions.
        glommio::yield_if_needed().await;
    }
    Ok((
        Maildrop {
            uid_validity,
            messages,
        },
        blobs,
    ))
}

/// One connection's stream, its fixed read buffer and its pending output.
struct Connection {
    stream: Transport,
    buf: Vec<u8>,
    /// Unconsumed input is `buf[start..end]`.
    start: usize,
    end: usize,
    out: Vec<u8>,
    /// Pending output above which the driver writes before serving the next command.
    write_buffer_bytes: usize,
}

enum Input {
    Bytes(usize),
    Eof,
    TimedOut,
    Shutdown,
    Failed,
}

impl Connection {
    /// `input`: bytes already read (handed over with the connection).
    fn new(stream: Transport, input: Vec<u8>, core: &Core) -> Connection {
        let mut buf = input;
        let end = buf.len();
        buf.resize(end.max(core.config.cores.read_buffer_bytes), 0);
        Connection {
            stream,
            buf,
            start: 0,
            end,
            out: Vec::with_capacity(OUT_CAPACITY),
            write_buffer_bytes: core.config.cores.write_buffer_bytes,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Writes the pending replies, then reads more input. False when the connection must
    /// end (EOF, error, idle timeout or shutdown; the session's goodbye already written).
    async fn wait_for_input(&mut self, session: &mut Session, core: &Core) -> bool {
        if self.flush().await.is_err() {
            return false;
        }
        if core.is_shutting_down() {
            session.shutting_down(&mut self.out);
            let _ = self.flush().await;
            return false;
        }
        // Make room: move the unconsumed tail to the front.
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start == 0 {
                // The session promised progress on a full buffer; never spin.
                eprintln!(
                    "ringmail: core {}: pop3 session stalled on a full buffer",
                    core.index
                );
                return false;
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let timeout = Duration::from_millis(core.config.pop3.timeout_ms_idle);
        match self.read(timeout, core).await {
            Input::Bytes(n) => {
                self.end += n;
                true
            }
            Input::Eof | Input::Failed => false,
            Input::TimedOut => {
                session.timeout(&mut self.out);
                let _ = self.flush().await;
                false
            }
            Input::Shutdown => {
                session.shutting_down(&mut self.out);
                let _ = self.flush().await;
                false
            }
        }
    }

    /// One read into the free end of the buffer; shutdown interrupts it (POP3 keeps no
    /// state worth finishing: without QUIT nothing is deleted).
    async fn read(&mut self, timeout: Duration, core: &Core) -> Input {
        if self.stream.set_read_timeout(Some(timeout)).is_err() {
            return Input::Failed;
        }
        let (stream, into) = (&mut self.stream, &mut self.buf[self.end..]);
        let read = async {
            match stream.read(into).await {
                Ok(0) => Input::Eof,
                Ok(n) => Input::Bytes(n),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => Input::TimedOut,
                Err(_) => Input::Failed,
            }
        };
        future::or(read, async {
            // The semaphore never has permits: this resolves only when it is closed.
            let _ = core.shutdown.acquire(1).await;
            Input::Shutdown
        })
        .await
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(&self.out).await;
        self.out.clear();
        // A RETR of a big message grew the buffer to its size: do not keep that for the
        // rest of the connection.
        if self.out.capacity() > 4 * self.write_buffer_bytes {
            self.out.shrink_to(OUT_CAPACITY);
        }
        result
    }

    async fn close(self) {
        self.stream.close().await;
    }
}
