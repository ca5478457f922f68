//! Drives one sans-IO [`Session`] over a glommio TCP stream.
//!
//! Work moves to the data: when a message's local recipients all belong to another core
//! (and nobody is remote), the connection itself moves there before the delivery
//! ([`Resume`], through `runtime::handoff`): the owner stores the message with one log
//! write and serves the connection from then on, so a client that keeps sending to the
//! same mailboxes costs no cross-core request per message.
//!
//! One fixed read buffer per connection (`[cores] read_buffer_bytes`); the session parses in place
//! and says how much it consumed. Replies accumulate in one output buffer that is written
//! once per batch of pipelined commands (when the session needs more input), or once after a
//! delivery: never one write per reply line.

use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;

use crate::metrics::CoreMetrics;
use crate::net::transport::Transport;
use crate::net::Protocol;
use crate::runtime::core::{Core, DeliveryPlan};
use crate::runtime::handoff::{Handoff, Resume as HandoffResume};
use crate::smtp::{Context, PeerInfo, Phase, Session, Step, Transaction};
use crate::time::unix_now;

enum Input {
    Bytes(usize),
    Eof,
    TimedOut,
    Shutdown,
    Failed,
}

/// A session on its way to the core that owns its transaction's recipients: the owner
/// delivers `txn` and goes on serving the connection (see the module doc).
pub struct Resume {
    protocol: Protocol,
    session: Session,
    txn: Transaction,
    /// Its recipients, expanded where the session was (every core has the same directory).
    plan: DeliveryPlan,
    /// Replies not written yet (those of pipelined commands before the delivery).
    out: Vec<u8>,
    /// When the message's data ended (for the delivery metric).
    data_end: Instant,
}

impl Resume {
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
}

impl std::fmt::Debug for Resume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resume")
            .field("protocol", &self.protocol)
            .field("queue_id", &self.txn.queue_id)
            .finish_non_exhaustive()
    }
}

const _: () = {
    const fn crosses_cores<T: Send>() {}
    crosses_cores::<Resume>();
};

/// The connection's read buffer and its unread part.
struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// Serves one SMTP connection (port 25 or submission) until QUIT, EOF, timeout, error or
/// shutdown.
pub async fn serve(mut stream: Transport, core: &Rc<Core>, protocol: Protocol) {
    let peer = match stream.peer_addr() {
        Ok(p) => p,
        Err(_) => return,
    };
    let limits = match protocol {
        Protocol::Submission => core.submission_limits.clone(),
        _ => core.smtp_limits.clone(),
    };
    let mut session = Session::new(
        limits,
        PeerInfo {
            ip: peer.ip(),
            port: peer.port(),
        },
        core.next_session_id(),
        stream.is_tls(),
    );
    let mut out = Vec::with_capacity(1024);
    session.greeting(&mut out);
    if flush(&mut stream, &mut out, &core.metrics).await.is_err() {
        return;
    }
    // At least `Limits::read_buffer_bytes_min` (checked when the config is loaded).
    let input = ReadBuf {
        buf: vec![0u8; core.config.cores.read_buffer_bytes],
        start: 0,
        end: 0,
    };
    run(stream, core, protocol, session, input, out, None).await;
}

/// Goes on serving a connection another core handed over: delivers its transaction
/// here, then reads on.
pub async fn resume(stream: Transport, core: Rc<Core>, unread: Vec<u8>, r: Resume) {
    let mut buf = vec![0u8; core.config.cores.read_buffer_bytes.max(unread.len())];
    buf[..unread.len()].copy_from_slice(&unread);
    let input = ReadBuf {
        buf,
        start: 0,
        end: unread.len(),
    };
    let Resume {
        protocol,
        mut session,
        txn,
        plan,
        out,
        data_end,
    } = r;
    session.set_limits(match protocol {
        Protocol::Submission => core.submission_limits.clone(),
        _ => core.smtp_limits.clone(),
    });
    run(
        stream,
        &core,
        protocol,
        session,
        input,
        out,
        Some((txn, plan, data_end)),
    )
    .await;
}

async fn run(
    mut stream: Transport,
    core: &Rc<Core>,
    protocol: Protocol,
    mut session: Session,
    input: ReadBuf,
    mut out: Vec<u8>,
    mut pending: Option<(Transaction, DeliveryPlan, Instant)>,
) {
    let peer = match stream.peer_addr() {
        Ok(p) => p,
        Err(_) => return,
    };
    let ReadBuf {
        mut buf,
        mut start,
        mut end,
    } = input;
    loop {
        if let Some((txn, plan, data_end)) = pending.take() {
            let result = core.deliver_planned(&txn, plan).await;
            let stored = result == crate::smtp::DeliveryResult::Stored;
            core.metrics
                .smtp_delivered(stored, txn.message.len(), data_end.elapsed());
            session.delivered(result, txn.message, &mut out);
        }
        let cx = Context {
            now_unix: unix_now(),
            directory: &core.directory,
        };
        let (consumed, step) = session.advance(&buf[start..end], &mut out, &cx);
        start += consumed;
        match step {
            Step::Deliver => {
                let data_end = Instant::now();
                let txn = session.take_transaction();
                let plan = core.plan(&txn);
                let Some(user) = core.moves_to_owner(&plan) else {
                    pending = Some((txn, plan, data_end));
                    continue;
                };
                let handoff = Handoff {
                    user,
                    input: buf[start..end].to_vec(),
                    resume: HandoffResume::Smtp(Box::new(Resume {
                        protocol,
                        session,
                        txn,
                        plan,
                        out,
                        data_end,
                    })),
                    tls: None,
                };
                core.metrics.smtp_session_moved();
                core.hand_over(stream, handoff).await;
                return;
            }
            Step::StartTls => {
                if flush(&mut stream, &mut out, &core.metrics).await.is_err() {
                    break;
                }
                // Whatever the client pipelined after STARTTLS was sent in the clear and
                // is thrown away (CVE-2011-0411); the handshake reads from the socket.
                start = 0;
                end = 0;
                let Some(tls) = core.tls.as_ref() else {
                    break;
                };
                stream = match stream.start_tls(tls).await {
                    Ok(s) => s,
                    Err(_) => return,
                };
                session.tls_started();
            }
            Step::Authenticate => {
                let result = match session.take_credentials() {
                    Some((user, password)) => core.authenticate(peer.ip(), &user, &password).await,
                    None => Err(crate::runtime::auth::AuthFailure::Invalid),
                };
                if result.is_err() {
                    core.metrics.auth_failed(protocol);
                }
                session.auth_result(result, &mut out);
            }
            Step::Close => {
                let _ = flush(&mut stream, &mut out, &core.metrics).await;
                break;
            }
            Step::NeedInput => {
                if flush(&mut stream, &mut out, &core.metrics).await.is_err() {
                    break;
                }
                let idle = matches!(session.phase(), Phase::Command) && !session.in_transaction();
                if idle && core.is_shutting_down() {
                    session.shutting_down(&mut out);
                    let _ = flush(&mut stream, &mut out, &core.metrics).await;
                    break;
                }
                // Make room: move the unconsumed tail to the front.
                if start == end {
                    start = 0;
                    end = 0;
                } else if end == buf.len() {
                    if start == 0 {
                        // The session promised progress on a full buffer; never spin.
                        eprintln!(
                            "ringmail: core {}: session stalled on a full buffer",
                            core.index
                        );
                        break;
                    }
                    buf.copy_within(start..end, 0);
                    end -= start;
                    start = 0;
                }
                let timeout_ms = match session.phase() {
                    Phase::Command => core.config.smtp.timeout_ms_command,
                    Phase::Data => core.config.smtp.timeout_ms_data,
                };
                match read(&mut stream, &mut buf[end..], timeout_ms, idle, core).await {
                    Input::Bytes(n) => end += n,
                    Input::Eof | Input::Failed => break,
                    Input::TimedOut => {
                        session.timeout(&mut out);
                        let _ = flush(&mut stream, &mut out, &core.metrics).await;
                        break;
                    }
                    Input::Shutdown => {
                        session.shutting_down(&mut out);
                        let _ = flush(&mut stream, &mut out, &core.metrics).await;
                        break;
                    }
                }
            }
        }
    }
    stream.close().await;
}

async fn read(
    stream: &mut Transport,
    into: &mut [u8],
    timeout_ms: u64,
    interruptible: bool,
    core: &Core,
) -> Input {
    if stream
        .set_read_timeout(Some(Duration::from_millis(timeout_ms)))
        .is_err()
    {
        return Input::Failed;
    }
    let read = async {
        match stream.read(into).await {
            Ok(0) => Input::Eof,
            Ok(n) => Input::Bytes(n),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Input::TimedOut,
            Err(_) => Input::Failed,
        }
    };
    if !interruptible {
        return read.await;
    }
    future::or(read, async {
        let _ = core.shutdown.acquire(1).await;
        Input::Shutdown
    })
    .await
}

async fn flush(stream: &mut Transport, out: &mut Vec<u8>, metrics: &CoreMetrics) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    metrics.smtp_replies(out);
    let r = stream.write_all(out).await;
    out.clear();
    r
}
