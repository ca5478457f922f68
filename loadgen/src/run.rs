//! Runs an SMTP load ([`run_smtp`]): starts one worker thread per core (pinned
//! with core_affinity) and drives the sans-IO [`Client`]s with real sockets
//! (through a [`Transport`]: plain TCP or TLS) until the work is done or the
//! deadline passes. Each thread keeps its own [`Stats`]; they are merged at
//! the end into an [`Outcome`] (ops `message`, `session_setup`, and `auth`
//! with `--auth`). Live counts go to the shared [`Progress`] after each event.
//!
//! Closed loop (default): `--messages` is split into per-connection shares and
//! every connection sends its next message as soon as the previous one ends.
//! Open loop (`--rate`): each thread follows its part of the schedule in
//! [`crate::rate`] and hands each due message to one of its idle connections.
//!
//! Two drivers: `epoll` (default) runs all of a thread's connections from one
//! level-triggered event loop over non-blocking sockets; `blocking` gives every
//! connection its own thread with blocking reads, pinned round-robin to the
//! same cores (in open loop these threads take messages from one shared
//! counter). Connects are blocking in both (bounded by [`CONNECT_TIMEOUT`];
//! instant on loopback).

use std::collections::VecDeque;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::args::{IoMode, PipeliningMode, SmtpConfig};
use crate::client::{Client, Token};
use crate::message::MessageTemplate;
use crate::outcome::Outcome;
use crate::poller::{Event, Poller};
use crate::progress::Progress;
use crate::rate::{due_offset, Schedule};
use crate::stats::Stats;
use crate::tls::TlsContext;
use crate::transport::{Input, Transport};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a worker sleeps without checking deadlines, timeouts and retries.
const TICK: Duration = Duration::from_millis(50);
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Most `--to` addresses listed in [`Outcome::config`].
const CONFIG_TO_LISTED_MAX: usize = 10;

/// One connection slot's share of the messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    pub seq_start: u64,
    pub count: u64,
}

/// Splits `messages` over `connections` as evenly as possible; sequence numbers
/// are contiguous per slot and unique over the run. Slots with nothing to send
/// are left out.
pub fn shares(messages: u64, connections: u32) -> Vec<Share> {
    let connections = u64::from(connections.max(1));
    let (base, extra) = (messages / connections, messages % connections);
    let mut seq_start = 0;
    let mut out = Vec::with_capacity(connections as usize);
    for slot in 0..connections {
        let count = base + u64::from(slot < extra);
        if count > 0 {
            out.push(Share { seq_start, count });
        }
        seq_start += count;
    }
    out
}

/// What every worker of one run shares (read-only, but for the counter).
struct Shared<'a> {
    cfg: &'a SmtpConfig,
    template: &'a MessageTemplate,
    tls: Option<&'a TlsContext>,
    progress: &'a Progress,
    start: Instant,
    deadline: Instant,
    /// Open loop with blocking connections: the next message index to take,
    next_index: AtomicU64,
    /// and when the schedule started (the first session ready for MAIL).
    schedule_start: OnceLock<Instant>,
}

/// Runs the load described by `cfg`, reporting live counts to `progress`
/// (one completed per final reply to a message, one error per connection
/// error). Never starts a progress reporter nor calls `finish()`.
pub fn run_smtp(cfg: &SmtpConfig, progress: &Progress) -> Outcome {
    let started_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let start = Instant::now();
    let mut stats = Stats::new(start, cfg.duration);
    let tls = match cfg.tls.as_ref().map(TlsContext::new).transpose() {
        Ok(tls) => tls,
        Err(e) => {
            stats.count_error(|| e.to_string());
            progress.add_error();
            return outcome(cfg, stats, start.elapsed(), started_unix_ms);
        }
    };
    let template = MessageTemplate {
        from: cfg.from.clone(),
        id_domain: cfg.helo.clone(),
        run_id: run_id(),
    };
    let shared = Shared {
        cfg,
        template: &template,
        tls: tls.as_ref(),
        progress,
        start,
        deadline: start + cfg.duration,
        next_index: AtomicU64::new(0),
        schedule_start: OnceLock::new(),
    };
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let threads = cfg.threads.max(1);
    // (slot number, its share; `None` in open loop).
    let slots: Vec<(usize, Option<Share>)> = match cfg.rate_per_sec {
        Some(_) => (0..cfg.connections as usize).map(|s| (s, None)).collect(),
        None => shares(cfg.messages, cfg.connections)
            .into_iter()
            .map(Some)
            .enumerate()
            .collect(),
    };
    std::thread::scope(|scope| {
        let shared = &shared;
        let mut handles = Vec::new();
        match cfg.io {
            IoMode::Epoll => {
                for thread in 0..threads {
                    let mine: Vec<(usize, Option<Share>)> = slots
                        .iter()
                        .skip(thread)
                        .step_by(threads)
                        .copied()
                        .collect();
                    let core = cores.get(thread % cores.len().max(1)).copied();
                    handles.push(scope.spawn(move || {
                        if let Some(core) = core {
                            core_affinity::set_for_current(core);
                        }
                        epoll_worker(shared, thread, threads, &mine)
                    }));
                }
            }
            IoMode::Blocking => {
                for &(slot, share) in &slots {
                    let core = cores.get(slot % threads % cores.len().max(1)).copied();
                    handles.push(scope.spawn(move || {
                        if let Some(core) = core {
                            core_affinity::set_for_current(core);
                        }
                        blocking_connection(shared, slot, share)
                    }));
                }
            }
        }
        for handle in handles {
            match handle.join() {
                Ok(part) => stats.merge(&part),
                Err(_) => {
                    stats.count_error(|| "a worker thread panicked".into());
                    progress.add_error();
                }
            }
        }
    });
    outcome(cfg, stats, start.elapsed(), started_unix_ms)
}

/// The merged measurements as the common run result.
fn outcome(cfg: &SmtpConfig, stats: Stats, elapsed: Duration, started_unix_ms: u64) -> Outcome {
    let mut ops = vec![stats.message.clone(), stats.session_setup.clone()];
    if cfg.auth.is_some() {
        ops.push(stats.auth.clone());
    }
    if cfg.rate_per_sec.is_some() {
        ops.push(stats.data_reply.clone());
    }
    Outcome {
        protocol: "smtp".into(),
        label: cfg
            .output
            .label
            .clone()
            .unwrap_or_else(|| cfg.target_text.clone()),
        target: cfg.target_text.clone(),
        config: config_pairs(cfg, &stats),
        started_unix_ms,
        elapsed,
        headline: "message".into(),
        ops,
        timeline: stats.timeline,
        connects: stats.connects,
        errors: stats.errors,
        first_error: stats.first_error,
    }
}

/// `yes`, `no` or `mixed`: what the sessions actually did.
pub fn pipelining_used(stats: &Stats) -> &'static str {
    match (stats.sessions_pipelined, stats.sessions_unpipelined) {
        (0, _) => "no",
        (_, 0) => "yes",
        _ => "mixed",
    }
}

/// Every setting, then the SMTP-specific results, as text pairs.
fn config_pairs(cfg: &SmtpConfig, stats: &Stats) -> Vec<(String, String)> {
    let mut to: Vec<&str> = cfg
        .to
        .iter()
        .take(CONFIG_TO_LISTED_MAX)
        .map(String::as_str)
        .collect();
    let more = format!("... ({} in all)", cfg.to.len());
    if cfg.to.len() > CONFIG_TO_LISTED_MAX {
        to.push(&more);
    }
    let tls = cfg.tls.as_ref();
    let pairs: Vec<(&str, String)> = vec![
        ("target", cfg.target_text.clone()),
        ("target_addr", cfg.target.to_string()),
        ("connections", cfg.connections.to_string()),
        ("messages", cfg.messages.to_string()),
        (
            "per_connection",
            cfg.per_connection
                .map_or_else(|| "unlimited".into(), |n| n.to_string()),
        ),
        ("size", cfg.size.describe()),
        ("recipients", cfg.recipients.to_string()),
        ("from", cfg.from.clone()),
        ("to", to.join(",")),
        (
            "pipelining",
            match cfg.pipelining {
                PipeliningMode::Auto => "auto",
                PipeliningMode::Always => "always",
                PipeliningMode::Never => "never",
            }
            .into(),
        ),
        ("tls", tls.map_or("off", |t| t.mode.name()).into()),
        (
            "auth",
            cfg.auth
                .as_ref()
                .map_or("off", |a| a.mechanism.name())
                .into(),
        ),
        (
            "rate",
            cfg.rate_per_sec
                .map_or_else(|| "closed loop".into(), |r| format!("{r}/s")),
        ),
        ("duration_secs", cfg.duration.as_secs().to_string()),
        ("threads", cfg.threads.to_string()),
        ("io", cfg.io.name().into()),
        ("helo", cfg.helo.clone()),
        ("allow_remote", cfg.allow_remote.to_string()),
        (
            "latency_measured",
            if cfg.rate_per_sec.is_some() {
                "end of DATA -> final reply, + lateness of the start"
            } else {
                "end of DATA -> final reply"
            }
            .into(),
        ),
        ("sent", stats.sent.to_string()),
        ("late", stats.late.to_string()),
        ("pipelining_used", pipelining_used(stats).into()),
        ("message_bytes", stats.message_bytes.to_string()),
    ];
    let mut pairs: Vec<(String, String)> =
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    if let Some(t) = tls {
        let verify = t.ca_file.as_ref().map_or_else(
            || "any certificate".into(),
            |p| format!("ca {}", p.display()),
        );
        pairs.push(("tls_name".into(), t.server_name.clone()));
        pairs.push(("tls_verify".into(), verify));
    }
    if let Some(auth) = &cfg.auth {
        pairs.push(("auth_users".into(), auth.users.len().to_string()));
    }
    pairs
}

/// Unique per run: start time mixed with the process id.
fn run_id() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 40).rotate_left(7)
}

/// What a worker already reported to the shared progress counters.
#[derive(Default)]
struct Reported {
    completed: u64,
    errors: u64,
    /// When [`Reported::sync_throttled`] last synced.
    synced_at: Option<Instant>,
}

impl Reported {
    /// [`Reported::sync`] at most once per [`TICK`]: for loops that turn once
    /// per message, so the shared counters are not touched per message.
    fn sync_throttled(&mut self, stats: &Stats, progress: &Progress, now: Instant) {
        if self
            .synced_at
            .is_some_and(|at| now.saturating_duration_since(at) < TICK)
        {
            return;
        }
        self.synced_at = Some(now);
        self.sync(stats, progress);
    }

    fn sync(&mut self, stats: &Stats, progress: &Progress) {
        let completed = stats.completed();
        if completed > self.completed {
            progress.add_completed(completed - self.completed);
            self.completed = completed;
        }
        if stats.errors > self.errors {
            progress.add_errors(stats.errors - self.errors);
            self.errors = stats.errors;
        }
    }
}

struct Conn<'a> {
    client: Client<'a>,
    transport: Option<Transport>,
    /// EPOLLOUT is registered (a write would have blocked).
    want_write: bool,
    /// In the open-loop ready queue.
    queued: bool,
}

fn epoll_worker(
    sh: &Shared,
    thread: usize,
    threads: usize,
    slots: &[(usize, Option<Share>)],
) -> Stats {
    let cfg = sh.cfg;
    let mut stats = Stats::new(sh.start, cfg.duration);
    let mut reported = Reported::default();
    let mut poller = match Poller::new() {
        Ok(p) => p,
        Err(e) => {
            stats.count_error(|| format!("epoll_create1: {e}"));
            reported.sync(&stats, sh.progress);
            return stats;
        }
    };
    let now = Instant::now();
    let mut conns: Vec<Conn> = slots
        .iter()
        .map(|&(slot, share)| Conn {
            client: match share {
                Some(s) => Client::new(cfg, sh.template, slot, s.seq_start, s.count, now),
                None => Client::new_paced(cfg, sh.template, slot, now),
            },
            transport: None,
            want_write: false,
            queued: false,
        })
        .collect();
    let mut schedule = cfg
        .rate_per_sec
        .map(|rate| Schedule::new(sh.start, rate, cfg.messages, thread as u64, threads as u64));
    let mut exhausted_told = false;
    let mut schedule_started = false;
    let mut ready: VecDeque<usize> = VecDeque::new();
    let mut events = Vec::with_capacity(crate::poller::EVENTS_MAX);
    let mut buf = vec![0u8; READ_BUFFER_BYTES];
    // Connects, retries and timeouts are checked by a scan over all slots, done
    // when a slot disconnected or its retry time came, and at least every TICK.
    let mut scan_at = now;
    loop {
        let now = Instant::now();
        if now >= sh.deadline {
            for conn in &mut conns {
                conn.client.on_deadline(&mut stats);
                conn.transport = None;
            }
            break;
        }
        // Open loop: hand due messages to idle connections, oldest first;
        // wake up for the next one when a connection is waiting for it.
        let mut next_due = None;
        if let Some(schedule) = schedule.as_mut() {
            if !schedule_started && !ready.is_empty() {
                schedule.start_at(now);
                schedule_started = true;
            }
            while let Some((seq, due)) = schedule.peek() {
                if due > now {
                    if !ready.is_empty() {
                        next_due = Some(due);
                    }
                    break;
                }
                let Some(token) = ready.pop_front() else {
                    break;
                };
                let conn = &mut conns[token];
                conn.queued = false;
                if conn.transport.is_none() || !conn.client.is_ready() {
                    continue;
                }
                conn.client.begin(Token { seq, due }, now, &mut stats);
                schedule.advance();
                flush(conn, token as u64, &poller, &mut stats);
                if conn.transport.is_none() {
                    scan_at = now;
                }
            }
            if schedule.is_exhausted() && !exhausted_told {
                exhausted_told = true;
                for (token, conn) in conns.iter_mut().enumerate() {
                    conn.client.on_work_exhausted();
                    flush(conn, token as u64, &poller, &mut stats);
                }
                scan_at = now;
            }
        }
        if now >= scan_at {
            let mut busy = false;
            scan_at = now + TICK;
            for (token, conn) in conns.iter_mut().enumerate() {
                if conn.transport.is_some() {
                    busy = true;
                    if conn.client.reply_overdue(now) {
                        conn.transport = None;
                        conn.client.on_connection_lost(
                            &"no reply within the reply timeout",
                            now,
                            &mut stats,
                        );
                    } else {
                        continue;
                    }
                }
                let Some(at) = conn.client.next_connect_at() else {
                    continue;
                };
                busy = true;
                if at > now {
                    scan_at = scan_at.min(at);
                    continue;
                }
                connect(conn, token as u64, &poller, sh, &mut stats);
                if let Some(retry_at) = conn.client.next_connect_at() {
                    scan_at = scan_at.min(retry_at);
                }
            }
            if !busy {
                break;
            }
        }
        reported.sync(&stats, sh.progress);
        let wake_at = next_due.map_or(scan_at, |due| due.min(scan_at));
        let wait = wake_at.min(sh.deadline).saturating_duration_since(now);
        // A nanosecond timeout: a due message starts on time without spinning
        // (spinning would take CPU from a server on the same host).
        if let Err(e) = poller.wait_precise(&mut events, wait) {
            stats.count_error(|| format!("epoll_wait: {e}"));
            for conn in &mut conns {
                conn.client.on_deadline(&mut stats);
            }
            break;
        }
        for event in &events {
            let Some(conn) = conns.get_mut(event.token as usize) else {
                continue;
            };
            if conn.transport.is_none() {
                continue;
            }
            handle_event(conn, event, &poller, &mut buf, sh.tls, &mut stats);
            if conn.transport.is_none() || conn.client.is_closing() {
                if conn.client.is_closing() {
                    conn.client.on_closed(Instant::now());
                }
                conn.transport = None;
                conn.want_write = false;
                scan_at = Instant::now();
            } else if conn.client.is_ready() && !conn.queued {
                conn.queued = true;
                ready.push_back(event.token as usize);
            }
        }
        reported.sync(&stats, sh.progress);
    }
    reported.sync(&stats, sh.progress);
    stats
}

fn connect(conn: &mut Conn, token: u64, poller: &Poller, sh: &Shared, stats: &mut Stats) {
    let started = Instant::now();
    let transport = open(sh, started).and_then(|t| {
        t.stream().set_nonblocking(true)?;
        poller.add(t.stream().as_raw_fd(), token, false)?;
        Ok(t)
    });
    match transport {
        Ok(t) => {
            conn.transport = Some(t);
            conn.want_write = false;
            conn.queued = false;
            conn.client.on_connected(started, Instant::now(), stats);
            // Implicit TLS: the ClientHello goes out now.
            flush(conn, token, poller, stats);
        }
        Err(e) => conn.client.on_connect_failed(&e, started, stats),
    }
}

/// Connects (blocking, bounded by [`CONNECT_TIMEOUT`] and the deadline) and
/// starts TLS at once for `--tls`.
fn open(sh: &Shared, now: Instant) -> std::io::Result<Transport> {
    let timeout = CONNECT_TIMEOUT
        .min(sh.deadline.saturating_duration_since(now))
        .max(Duration::from_millis(1));
    let stream = TcpStream::connect_timeout(&sh.cfg.target, timeout)?;
    stream.set_nodelay(true)?;
    let mut transport = Transport::new(stream);
    let implicit = sh.cfg.tls.as_ref().map(|t| t.mode) == Some(crate::tls::TlsMode::Implicit);
    if implicit {
        if let Some(ctx) = sh.tls {
            transport.start_tls(ctx).map_err(std::io::Error::other)?;
        }
    }
    Ok(transport)
}

/// After input: start TLS when the client asked for it (STARTTLS accepted),
/// tell the client when the handshake finished.
fn tls_step(
    transport: &mut Transport,
    client: &mut Client,
    tls: Option<&TlsContext>,
    now: Instant,
) -> Result<(), String> {
    if client.wants_tls() && !transport.is_tls() {
        let ctx = tls.ok_or("STARTTLS accepted but no TLS configured")?;
        transport
            .start_tls(ctx)
            .map_err(|e| format!("TLS setup: {e}"))?;
    }
    if transport.take_handshake_done() {
        client.on_tls_established(now);
    }
    Ok(())
}

/// Reads once (level-triggered: more data re-reports; with TLS, until rustls
/// holds no more decrypted bytes), lets the client react, then writes what
/// it queued. Drops the transport on failure.
fn handle_event(
    conn: &mut Conn,
    event: &Event,
    poller: &Poller,
    buf: &mut [u8],
    tls: Option<&TlsContext>,
    stats: &mut Stats,
) {
    let Some(transport) = conn.transport.as_mut() else {
        return;
    };
    if event.readable || event.failed {
        loop {
            let input = transport.read(buf);
            let now = Instant::now();
            let drained = matches!(input, Ok(Input::Nothing));
            let result = match input {
                Ok(Input::Data(n)) => conn
                    .client
                    .on_received(&buf[..n], now, stats)
                    .map_err(|e| e.to_string()),
                Ok(Input::Nothing) => Ok(()),
                Ok(Input::Eof) => {
                    conn.transport = None;
                    conn.client.on_eof(now, stats);
                    return;
                }
                Err(e) => Err(e.to_string()),
            };
            let result = result.and_then(|()| tls_step(transport, &mut conn.client, tls, now));
            if let Err(e) = result {
                conn.transport = None;
                conn.client.on_connection_lost(&e, now, stats);
                return;
            }
            if drained || !transport.has_buffered_input() {
                break;
            }
        }
    }
    flush(conn, event.token, poller, stats);
}

fn flush(conn: &mut Conn, token: u64, poller: &Poller, stats: &mut Stats) {
    let Some(transport) = conn.transport.as_mut() else {
        return;
    };
    let result = transport.flush(&mut conn.client).and_then(|want_write| {
        if want_write != conn.want_write {
            poller.modify(transport.stream().as_raw_fd(), token, want_write)?;
            conn.want_write = want_write;
        }
        Ok(())
    });
    if let Err(e) = result {
        conn.transport = None;
        conn.client.on_connection_lost(&e, Instant::now(), stats);
    }
}

/// One connection slot on its own thread with blocking sockets.
fn blocking_connection(sh: &Shared, slot: usize, share: Option<Share>) -> Stats {
    let cfg = sh.cfg;
    let mut stats = Stats::new(sh.start, cfg.duration);
    let mut reported = Reported::default();
    let mut client = match share {
        Some(s) => Client::new(cfg, sh.template, slot, s.seq_start, s.count, Instant::now()),
        None => Client::new_paced(cfg, sh.template, slot, Instant::now()),
    };
    let mut buf = vec![0u8; READ_BUFFER_BYTES];
    while let Some(at) = client.next_connect_at() {
        let now = Instant::now();
        if now >= sh.deadline {
            client.on_deadline(&mut stats);
            break;
        }
        if at > now {
            std::thread::sleep(at.min(sh.deadline) - now);
            continue;
        }
        let transport = open(sh, now).and_then(|t| {
            t.stream().set_read_timeout(Some(TICK))?;
            Ok(t)
        });
        match transport {
            Ok(mut transport) => {
                client.on_connected(now, Instant::now(), &mut stats);
                blocking_session(
                    sh,
                    &mut client,
                    &mut transport,
                    &mut buf,
                    &mut stats,
                    &mut reported,
                );
            }
            Err(e) => client.on_connect_failed(&e, now, &mut stats),
        }
        reported.sync(&stats, sh.progress);
    }
    reported.sync(&stats, sh.progress);
    stats
}

/// Runs one session until QUIT, failure or the deadline.
fn blocking_session(
    sh: &Shared,
    client: &mut Client,
    transport: &mut Transport,
    buf: &mut [u8],
    stats: &mut Stats,
    reported: &mut Reported,
) {
    loop {
        if client.is_ready() && !take_shared_token(sh, client, stats) {
            client.on_deadline(stats);
            return;
        }
        if let Err(e) = transport.flush(client) {
            client.on_connection_lost(&e, Instant::now(), stats);
            return;
        }
        if client.is_closing() {
            client.on_closed(Instant::now());
            return;
        }
        loop {
            let input = transport.read(buf);
            let now = Instant::now();
            let drained = matches!(input, Ok(Input::Nothing));
            let result = match input {
                Ok(Input::Data(n)) => client
                    .on_received(&buf[..n], now, stats)
                    .map_err(|e| e.to_string()),
                Ok(Input::Nothing) => {
                    if client.reply_overdue(now) {
                        Err("no reply within the reply timeout".to_string())
                    } else {
                        Ok(())
                    }
                }
                Ok(Input::Eof) => {
                    client.on_eof(now, stats);
                    return;
                }
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = result.and_then(|()| tls_step(transport, client, sh.tls, now)) {
                client.on_connection_lost(&e, now, stats);
                return;
            }
            if drained || !transport.has_buffered_input() {
                break;
            }
        }
        let now = Instant::now();
        reported.sync_throttled(stats, sh.progress, now);
        if now >= sh.deadline {
            client.on_deadline(stats);
            return;
        }
    }
}

/// Open loop, blocking driver: takes the run's next message from the shared
/// counter, waits for its due time and starts it; or tells the client the
/// schedule is exhausted. False when the deadline came first.
fn take_shared_token(sh: &Shared, client: &mut Client, stats: &mut Stats) -> bool {
    let Some(rate) = sh.cfg.rate_per_sec else {
        return true;
    };
    let index = sh.next_index.fetch_add(1, Ordering::Relaxed);
    if index >= sh.cfg.messages {
        client.on_work_exhausted();
        return true;
    }
    let start = *sh.schedule_start.get_or_init(Instant::now);
    let due = start + due_offset(index, rate);
    let now = Instant::now();
    if due > now {
        if due >= sh.deadline {
            return false;
        }
        std::thread::sleep(due - now);
    }
    client.begin(Token { seq: index, due }, Instant::now(), stats);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_message_once() {
        for (messages, connections) in [(20_000, 20), (10, 3), (2, 5), (1, 1), (7, 7)] {
            let s = shares(messages, connections);
            assert_eq!(s.iter().map(|s| s.count).sum::<u64>(), messages);
            assert!(s.len() <= connections as usize);
            let mut next = 0;
            for share in &s {
                assert_eq!(share.seq_start, next, "contiguous");
                assert!(share.count > 0);
                next += share.count;
            }
            let (min, max) = (
                s.iter().map(|s| s.count).min().unwrap(),
                s.iter().map(|s| s.count).max().unwrap(),
            );
            assert!(max - min <= 1, "even split");
        }
    }

    #[test]
    fn config_pairs_name_every_setting_and_no_password() {
        let cfg = match crate::args::parse_args(
            [
                "smtp",
                "--target",
                "127.0.0.1:25",
                "--starttls",
                "--auth",
                "LOGIN",
                "--auth-user",
                "u:topsecret",
                "--rate",
                "50",
                "--size",
                "1000-2000",
            ],
            1,
        )
        .unwrap()
        {
            crate::args::Command::Smtp(c) => *c,
            crate::args::Command::Help => unreachable!(),
        };
        let stats = Stats::new(Instant::now(), Duration::from_secs(1));
        let o = outcome(&cfg, stats, Duration::from_secs(1), 0);
        let get = |k: &str| {
            o.config
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("tls"), Some("starttls"));
        assert_eq!(get("tls_verify"), Some("any certificate"));
        assert_eq!(get("auth"), Some("LOGIN"));
        assert_eq!(get("rate"), Some("50/s"));
        assert_eq!(get("size"), Some("1000-2000"));
        assert_eq!(get("per_connection"), Some("unlimited"));
        assert!(!o.config.iter().any(|(_, v)| v.contains("topsecret")));
        let names: Vec<&str> = o.ops.iter().map(|op| op.name.as_str()).collect();
        assert_eq!(names, ["message", "session_setup", "auth", "data_reply"]);
        assert_eq!(
            (o.protocol.as_str(), o.headline.as_str()),
            ("smtp", "message")
        );
        assert_eq!(o.label, "127.0.0.1:25");
    }
}
