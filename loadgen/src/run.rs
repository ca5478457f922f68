//! Runs an SMTP load: splits `--messages` into per-connection shares, starts one
//! worker thread per core (pinned with core_affinity) and drives the sans-IO
//! [`Client`]s with real sockets until every share is done or the deadline
//! passes. Each thread keeps its own [`Stats`]; they are merged at the end.
//!
//! Two drivers: `epoll` (default) runs all of a thread's connections from one
//! level-triggered event loop over non-blocking sockets; `blocking` gives every
//! connection its own thread with blocking reads, pinned round-robin to the
//! same cores. Connects are blocking in both (bounded by [`CONNECT_TIMEOUT`];
//! instant on loopback).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::args::{IoMode, SmtpConfig};
use crate::client::Client;
use crate::message::MessageTemplate;
use crate::poller::{Event, Poller};
use crate::stats::Stats;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a worker sleeps without checking deadlines, timeouts and retries.
const TICK: Duration = Duration::from_millis(50);
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// What one run measured.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub stats: Stats,
    /// From start to the moment the last worker finished.
    pub elapsed: Duration,
}

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

/// Runs the load described by `cfg` and returns the merged measurements.
pub fn run(cfg: &SmtpConfig) -> RunResult {
    let template = MessageTemplate {
        from: cfg.from.clone(),
        id_domain: cfg.helo.clone(),
        run_id: run_id(),
        size_bytes: cfg.size_bytes,
    };
    let shares = shares(cfg.messages, cfg.connections);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let threads = cfg.threads.max(1);
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let mut stats = Stats::default();
    std::thread::scope(|scope| {
        let template = &template;
        let mut handles = Vec::new();
        match cfg.io {
            IoMode::Epoll => {
                for thread in 0..threads {
                    let mine: Vec<Share> = shares
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
                        epoll_worker(cfg, template, &mine, deadline)
                    }));
                }
            }
            IoMode::Blocking => {
                for (slot, share) in shares.iter().copied().enumerate() {
                    let core = cores.get(slot % threads % cores.len().max(1)).copied();
                    handles.push(scope.spawn(move || {
                        if let Some(core) = core {
                            core_affinity::set_for_current(core);
                        }
                        blocking_connection(cfg, template, share, deadline)
                    }));
                }
            }
        }
        for handle in handles {
            match handle.join() {
                Ok(part) => stats.merge(&part),
                Err(_) => stats.count_error(|| "a worker thread panicked".into()),
            }
        }
    });
    RunResult {
        stats,
        elapsed: start.elapsed(),
    }
}

/// Unique per run: start time mixed with the process id.
fn run_id() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 40).rotate_left(7)
}

struct Conn<'a> {
    client: Client<'a>,
    stream: Option<TcpStream>,
    /// EPOLLOUT is registered (a write would have blocked).
    want_write: bool,
}

fn epoll_worker(
    cfg: &SmtpConfig,
    template: &MessageTemplate,
    shares: &[Share],
    deadline: Instant,
) -> Stats {
    let mut stats = Stats::default();
    let mut poller = match Poller::new() {
        Ok(p) => p,
        Err(e) => {
            stats.count_error(|| format!("epoll_create1: {e}"));
            return stats;
        }
    };
    let now = Instant::now();
    let mut conns: Vec<Conn> = shares
        .iter()
        .map(|s| Conn {
            client: Client::new(cfg, template, s.seq_start, s.count, now),
            stream: None,
            want_write: false,
        })
        .collect();
    let mut events = Vec::with_capacity(crate::poller::EVENTS_MAX);
    let mut buf = vec![0u8; READ_BUFFER_BYTES];
    // Connects, retries and timeouts are checked by a scan over all slots, done
    // when a slot disconnected or its retry time came, and at least every TICK.
    let mut scan_at = now;
    loop {
        let now = Instant::now();
        if now >= deadline {
            for conn in &mut conns {
                conn.client.on_deadline(&mut stats);
                conn.stream = None;
            }
            break;
        }
        if now >= scan_at {
            let mut busy = false;
            scan_at = now + TICK;
            for (token, conn) in conns.iter_mut().enumerate() {
                if conn.stream.is_some() {
                    busy = true;
                    if conn.client.reply_overdue(now) {
                        conn.stream = None;
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
                connect(conn, token as u64, &poller, cfg, deadline, &mut stats);
                if let Some(retry_at) = conn.client.next_connect_at() {
                    scan_at = scan_at.min(retry_at);
                }
            }
            if !busy {
                break;
            }
        }
        let wait = scan_at.min(deadline).saturating_duration_since(now);
        let timeout_ms = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        if let Err(e) = poller.wait(&mut events, timeout_ms) {
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
            if conn.stream.is_none() {
                continue;
            }
            handle_event(conn, event, &poller, &mut buf, &mut stats);
            if conn.stream.is_none() || conn.client.is_closing() {
                if conn.client.is_closing() {
                    conn.client.on_closed(Instant::now());
                }
                conn.stream = None;
                conn.want_write = false;
                scan_at = Instant::now();
            }
        }
    }
    stats
}

fn connect(
    conn: &mut Conn,
    token: u64,
    poller: &Poller,
    cfg: &SmtpConfig,
    deadline: Instant,
    stats: &mut Stats,
) {
    let now = Instant::now();
    let stream = match open(cfg, deadline, now) {
        Ok(s) => s,
        Err(e) => {
            conn.client.on_connect_failed(&e, now, stats);
            return;
        }
    };
    let registered = stream
        .set_nonblocking(true)
        .and_then(|()| poller.add(stream.as_raw_fd(), token, false));
    if let Err(e) = registered {
        conn.client.on_connect_failed(&e, now, stats);
        return;
    }
    conn.stream = Some(stream);
    conn.want_write = false;
    conn.client.on_connected(Instant::now(), stats);
}

fn open(cfg: &SmtpConfig, deadline: Instant, now: Instant) -> io::Result<TcpStream> {
    let timeout = CONNECT_TIMEOUT
        .min(deadline.saturating_duration_since(now))
        .max(Duration::from_millis(1));
    let stream = TcpStream::connect_timeout(&cfg.target, timeout)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads once (level-triggered: more data re-reports), lets the client react,
/// then writes what it queued. Drops the stream on failure.
fn handle_event(
    conn: &mut Conn,
    event: &Event,
    poller: &Poller,
    buf: &mut [u8],
    stats: &mut Stats,
) {
    let Some(stream) = conn.stream.as_mut() else {
        return;
    };
    if event.readable || event.failed {
        match stream.read(buf) {
            Ok(0) => {
                conn.stream = None;
                conn.client.on_eof(Instant::now(), stats);
                return;
            }
            Ok(n) => {
                if let Err(e) = conn.client.on_received(&buf[..n], Instant::now(), stats) {
                    conn.stream = None;
                    conn.client.on_connection_lost(&e, Instant::now(), stats);
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                conn.stream = None;
                conn.client.on_connection_lost(&e, Instant::now(), stats);
                return;
            }
        }
    }
    flush(conn, event.token, poller, stats);
}

fn flush(conn: &mut Conn, token: u64, poller: &Poller, stats: &mut Stats) {
    let Some(stream) = conn.stream.as_mut() else {
        return;
    };
    let mut result = Ok(());
    while !conn.client.output().is_empty() {
        match stream.write(conn.client.output()) {
            Ok(0) => {
                result = Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0"));
                break;
            }
            Ok(n) => conn.client.on_written(n, Instant::now()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let want_write = !conn.client.output().is_empty();
    if result.is_ok() && want_write != conn.want_write {
        result = poller.modify(stream.as_raw_fd(), token, want_write);
        conn.want_write = want_write;
    }
    if let Err(e) = result {
        conn.stream = None;
        conn.client.on_connection_lost(&e, Instant::now(), stats);
    }
}

/// One connection slot on its own thread with blocking sockets.
fn blocking_connection(
    cfg: &SmtpConfig,
    template: &MessageTemplate,
    share: Share,
    deadline: Instant,
) -> Stats {
    let mut stats = Stats::default();
    let mut client = Client::new(cfg, template, share.seq_start, share.count, Instant::now());
    let mut buf = vec![0u8; READ_BUFFER_BYTES];
    while let Some(at) = client.next_connect_at() {
        let now = Instant::now();
        if now >= deadline {
            client.on_deadline(&mut stats);
            break;
        }
        if at > now {
            std::thread::sleep(at.min(deadline) - now);
            continue;
        }
        let stream =
            open(cfg, deadline, now).and_then(|s| s.set_read_timeout(Some(TICK)).map(|()| s));
        match stream {
            Ok(mut stream) => {
                client.on_connected(Instant::now(), &mut stats);
                blocking_session(&mut client, &mut stream, &mut buf, deadline, &mut stats);
            }
            Err(e) => client.on_connect_failed(&e, now, &mut stats),
        }
    }
    stats
}

/// Runs one session until QUIT, failure or the deadline.
fn blocking_session(
    client: &mut Client,
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
    stats: &mut Stats,
) {
    loop {
        while !client.output().is_empty() {
            match stream.write(client.output()) {
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::WriteZero, "write returned 0");
                    client.on_connection_lost(&e, Instant::now(), stats);
                    return;
                }
                Ok(n) => client.on_written(n, Instant::now()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    client.on_connection_lost(&e, Instant::now(), stats);
                    return;
                }
            }
        }
        if client.is_closing() {
            client.on_closed(Instant::now());
            return;
        }
        let result = stream.read(buf);
        let now = Instant::now();
        match result {
            Ok(0) => {
                client.on_eof(now, stats);
                return;
            }
            Ok(n) => {
                if let Err(e) = client.on_received(&buf[..n], now, stats) {
                    client.on_connection_lost(&e, now, stats);
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                if client.reply_overdue(now) {
                    client.on_connection_lost(&"no reply within the reply timeout", now, stats);
                    return;
                }
            }
            Err(e) => {
                client.on_connection_lost(&e, now, stats);
                return;
            }
        }
        if now >= deadline {
            client.on_deadline(stats);
            return;
        }
    }
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
}
