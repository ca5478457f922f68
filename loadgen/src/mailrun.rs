//! What the IMAP and POP3 load modes share: the `--user LOGIN:PASSWORD` list
//! (with `%` expansion), the raw option collector, the reconnect backoff, a
//! small seeded random generator, the per-thread [`Recorder`] that fills an
//! [`Outcome`] and the live [`Progress`], and the epoll driver that runs the
//! sans-IO [`SlotClient`]s of one protocol over real sockets.
//!
//! The driver mirrors `run.rs` (the SMTP one): one worker thread per core
//! (pinned with core_affinity), each with one level-triggered epoll loop over
//! non-blocking sockets, blocking connects bounded by [`CONNECT_TIMEOUT`]. On
//! top of it, clients may ask for a timer ([`SlotClient::timer_at`]): IMAP ends
//! an IDLE with it, both protocols use it for the reply timeout.

use std::fmt::{self, Display};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memchr::memchr;

use crate::args::number;
use crate::outcome::{Outcome, Timeline};
use crate::output::OutputOptions;
use crate::poller::{Event, Poller};
use crate::progress::Progress;

/// Longest blocking connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection whose server stays silent this long while a reply is due is dropped.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Failed connects, sessions or logins in a row before a slot gives up.
pub const FAILURES_IN_A_ROW_MAX: u32 = 20;
/// Connect attempts before a slot that never connected gives up (target down).
pub const FIRST_CONNECT_ATTEMPTS_MAX: u32 = 3;
const RETRY_DELAY_MIN: Duration = Duration::from_millis(1);
const RETRY_DELAY_MAX: Duration = Duration::from_millis(500);
/// Longest a worker sleeps without checking deadlines, timers and retries.
const TICK: Duration = Duration::from_millis(50);
/// One read buffer per worker thread.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Largest command buffer kept allocated between commands (an APPEND may be 64 MiB).
const OUTBOX_CAPACITY_MAX: usize = 1 << 20;

/// Most users after `%` expansion.
pub const USERS_MAX: u64 = 100_000;
pub const LOGIN_BYTES_MAX: usize = 255;
pub const PASSWORD_BYTES_MAX: usize = 1024;
pub const CONNECTIONS_MAX: u64 = 10_000;
pub const DURATION_SECS_MAX: u64 = 7 * 86_400;
pub const THREADS_MAX: u64 = 1_024;

// ---------------------------------------------------------------------------------------------
// Users

/// A password: `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// One account to log in with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub login: String,
    pub password: Secret,
}

/// Expands the `--user LOGIN:PASSWORD` options: with `--user-count N`, every
/// `%` in a LOGIN becomes 1..=N (one account per number). Problems are added
/// to `problems`.
pub(crate) fn parse_users(
    specs: &[String],
    user_count: Option<u64>,
    problems: &mut Vec<String>,
) -> Vec<Credentials> {
    let mut users = Vec::new();
    if specs.is_empty() {
        problems.push("--user LOGIN:PASSWORD is required".into());
        return users;
    }
    let mut any_percent = false;
    for spec in specs {
        let Some((login, password)) = spec.split_once(':') else {
            problems.push("--user: expected LOGIN:PASSWORD".into());
            continue;
        };
        let printable = login.bytes().all(|b| b.is_ascii_graphic());
        if login.is_empty() || login.len() > LOGIN_BYTES_MAX || !printable {
            problems.push(format!(
                "--user `{login}`: LOGIN must be 1-{LOGIN_BYTES_MAX} printable ASCII characters"
            ));
            continue;
        }
        if password.is_empty()
            || password.len() > PASSWORD_BYTES_MAX
            || password.bytes().any(|b| b == 0 || b == b'\r' || b == b'\n')
        {
            problems.push(format!(
                "--user `{login}`: PASSWORD must be 1-{PASSWORD_BYTES_MAX} bytes without NUL, CR or LF"
            ));
            continue;
        }
        if login.contains('%') {
            any_percent = true;
            let Some(n) = user_count else {
                problems.push(format!(
                    "--user `{login}`: `%` needs --user-count N (or drop the `%`)"
                ));
                continue;
            };
            if users.len() as u64 + n > USERS_MAX {
                problems.push(format!("more than {USERS_MAX} users"));
                return users;
            }
            for i in 1..=n {
                users.push(Credentials {
                    login: login.replace('%', &i.to_string()),
                    password: Secret::new(password),
                });
            }
        } else {
            if users.len() as u64 >= USERS_MAX {
                problems.push(format!("more than {USERS_MAX} users"));
                return users;
            }
            users.push(Credentials {
                login: login.to_string(),
                password: Secret::new(password),
            });
        }
    }
    if user_count.is_some() && !any_percent {
        problems.push("--user-count needs a `%` in a --user LOGIN".into());
    }
    users
}

/// The user list for the report: the first few logins (never a password).
pub(crate) fn describe_users(users: &[Credentials]) -> String {
    const SHOWN: usize = 3;
    let mut text: Vec<&str> = users.iter().take(SHOWN).map(|u| u.login.as_str()).collect();
    let more = users.len().saturating_sub(SHOWN);
    let more_text = format!("(+{more} more)");
    if more > 0 {
        text.push(&more_text);
    }
    text.join(" ")
}

// ---------------------------------------------------------------------------------------------
// Raw options

/// Options as strings, before validation: `--name value`, `--name=value` or a flag.
#[derive(Debug, Default)]
pub(crate) struct RawArgs {
    values: Vec<(&'static str, String)>,
    flags: Vec<&'static str>,
    pub output: OutputOptions,
}

impl RawArgs {
    /// Sorts `args` into the options named in `value_names` (take a value) and
    /// `flag_names` (take none) and the output options; anything else is a problem.
    pub(crate) fn collect(
        args: impl Iterator<Item = String>,
        value_names: &[&'static str],
        flag_names: &[&'static str],
        problems: &mut Vec<String>,
    ) -> RawArgs {
        let mut raw = RawArgs::default();
        let mut args = args;
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            if let Some(&flag) = flag_names.iter().find(|&&f| f == name) {
                if inline.is_some() {
                    problems.push(format!("{name} takes no value"));
                }
                raw.flags.push(flag);
            } else if let Some(&known) = value_names.iter().find(|&&f| f == name) {
                match inline.or_else(|| args.next()) {
                    Some(value) => raw.values.push((known, value)),
                    None => problems.push(format!("{name} needs a value")),
                }
            } else if !raw.output.take(&name, inline, &mut args, problems) {
                problems.push(format!("unknown option `{arg}`"));
            }
        }
        raw
    }

    /// The value of an option given at most once.
    pub(crate) fn single(&self, name: &str, problems: &mut Vec<String>) -> Option<String> {
        let mut found = self.values.iter().filter(|(n, _)| *n == name);
        let first = found.next().map(|(_, v)| v.clone());
        if found.next().is_some() {
            problems.push(format!("{name} given more than once"));
        }
        first
    }

    /// Every value of a repeatable option, in order.
    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub(crate) fn flag(&self, name: &str) -> bool {
        self.flags.contains(&name)
    }

    /// The options `imap` and `pop3` share: target (`--allow-remote` respected), users,
    /// connections, duration and threads (at most one per connection), with their defaults.
    pub(crate) fn common(&self, cpus: usize, problems: &mut Vec<String>) -> CommonArgs {
        let allow_remote = self.flag("--allow-remote");
        let target_text = self.single("--target", problems);
        let target = target(&target_text, allow_remote, problems);
        let user_count = self.single("--user-count", problems);
        let user_count = user_count
            .is_some()
            .then(|| number(&user_count, "--user-count", 1, 1, USERS_MAX, problems));
        let users = parse_users(&self.all("--user"), user_count, problems);
        let connections = number(
            &self.single("--connections", problems),
            "--connections",
            20,
            1,
            CONNECTIONS_MAX,
            problems,
        ) as u32;
        let duration_secs = number(
            &self.single("--duration-secs", problems),
            "--duration-secs",
            60,
            1,
            DURATION_SECS_MAX,
            problems,
        );
        let threads = number(
            &self.single("--threads", problems),
            "--threads",
            cpus.clamp(1, THREADS_MAX as usize) as u64,
            1,
            THREADS_MAX,
            problems,
        ) as usize;
        CommonArgs {
            target_text: target_text.unwrap_or_default(),
            target,
            users,
            connections,
            duration: Duration::from_secs(duration_secs),
            threads: threads.min(connections as usize),
            allow_remote,
        }
    }
}

/// See [`RawArgs::common`]; `target` is `None` when a problem was recorded for it.
pub(crate) struct CommonArgs {
    pub target_text: String,
    pub target: Option<SocketAddr>,
    pub users: Vec<Credentials>,
    pub connections: u32,
    pub duration: Duration,
    pub threads: usize,
    pub allow_remote: bool,
}

/// The target, `--allow-remote` respected; `None` (and a problem) when missing or refused.
pub(crate) fn target(
    text: &Option<String>,
    allow_remote: bool,
    problems: &mut Vec<String>,
) -> Option<SocketAddr> {
    match text.as_deref() {
        None | Some("") => {
            problems.push("--target HOST:PORT is required".into());
            None
        }
        Some(text) => match crate::args::resolve_target(text, allow_remote) {
            Ok(addr) => Some(addr),
            Err(problem) => {
                problems.push(problem);
                None
            }
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Random choices and the retry policy

/// splitmix64: small, fast, seeded per slot so runs are varied but cheap.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        // `mix64` adds the golden-ratio increment itself; the state advances by it.
        let z = crate::message::mix64(self.0);
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is below 2^-32 for n < 2^32).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        self.next_u64() % n.max(1)
    }
}

/// A seed unique to this run and slot.
pub(crate) fn seed(slot: usize) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ (slot as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Reconnect policy of one slot: 1 ms doubling to 500 ms; gives up after
/// [`FAILURES_IN_A_ROW_MAX`] failures in a row ([`FIRST_CONNECT_ATTEMPTS_MAX`]
/// if it never connected).
#[derive(Clone, Debug)]
pub(crate) struct Retry {
    failures_in_a_row: u32,
    ever_connected: bool,
    pub(crate) connect_at: Instant,
    pub(crate) stopped: bool,
}

impl Retry {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            failures_in_a_row: 0,
            ever_connected: false,
            connect_at: now,
            stopped: false,
        }
    }

    pub(crate) fn connected(&mut self) {
        self.ever_connected = true;
    }

    /// A session did what it came for (logged in): the failure count starts over.
    pub(crate) fn succeeded(&mut self) {
        self.failures_in_a_row = 0;
    }

    /// The next connect after a failure, or stop.
    pub(crate) fn failed(&mut self, now: Instant) {
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

    /// Reconnect at once (a clean end of session).
    pub(crate) fn again(&mut self, now: Instant) {
        self.connect_at = now;
    }
}

// ---------------------------------------------------------------------------------------------
// Output buffer with release points

/// The command being written: bytes up to `released` may go out now; a
/// synchronizing literal or an IDLE's DONE waits behind a release point. The
/// moment the first segment is fully written is the command's send time.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    buf: Vec<u8>,
    pos: usize,
    released: usize,
    /// Further release points, in order (at most a few per command).
    holds: Vec<usize>,
    first_end: Option<usize>,
    pub(crate) sent_at: Option<Instant>,
}

impl Outbox {
    /// Bytes to write now.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.pos..self.released]
    }

    /// Starts a new command; the caller appends to [`Outbox::buf_mut`] and
    /// marks segments with [`Outbox::hold_here`], then calls [`Outbox::seal`].
    /// Whatever was not written yet is dropped (the server answered early).
    pub(crate) fn start(&mut self) -> &mut Vec<u8> {
        self.clear();
        self.sent_at = None;
        &mut self.buf
    }

    pub(crate) fn buf_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Everything appended so far ends a segment; what follows waits for [`Outbox::release`].
    pub(crate) fn hold_here(&mut self) {
        self.holds.push(self.buf.len());
    }

    /// The command is complete: its first segment may go out.
    pub(crate) fn seal(&mut self) {
        self.holds.push(self.buf.len());
        self.holds.reverse();
        self.released = self.holds.pop().unwrap_or(self.buf.len());
        self.first_end = Some(self.released);
    }

    /// Lets the next held segment go out; false when nothing was held.
    pub(crate) fn release(&mut self) -> bool {
        match self.holds.pop() {
            Some(end) => {
                self.released = end;
                true
            }
            None => false,
        }
    }

    /// True while a segment waits for a release.
    pub(crate) fn holding(&self) -> bool {
        !self.holds.is_empty()
    }

    /// Drops whatever was not written (the server answered early, or the connection ended).
    /// A large command's buffer shrinks back to [`OUTBOX_CAPACITY_MAX`].
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        if self.buf.capacity() > OUTBOX_CAPACITY_MAX {
            self.buf.shrink_to(OUTBOX_CAPACITY_MAX);
        }
        self.pos = 0;
        self.released = 0;
        self.holds.clear();
        self.first_end = None;
    }

    pub(crate) fn on_written(&mut self, n: usize, now: Instant) {
        self.pos += n;
        debug_assert!(self.pos <= self.released);
        if self.first_end.is_some_and(|end| self.pos >= end) {
            self.first_end = None;
            self.sent_at = Some(now);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Received bytes

/// Feeds bytes from the server to `process`, which handles the complete
/// replies at the start of its input and returns the bytes it used; what it
/// leaves is an unfinished line (no LF, shorter than `line_bytes_max`), kept
/// in `carry` until the rest arrives. A line is scanned for its LF once: a
/// read without one only grows the carry, until it reaches `line_bytes_max`
/// (then `process` sees it and reports the line as too long).
pub(crate) fn feed<E>(
    carry: &mut Vec<u8>,
    data: &[u8],
    line_bytes_max: usize,
    mut process: impl FnMut(&[u8]) -> Result<usize, E>,
) -> Result<(), E> {
    let mut data = data;
    if !carry.is_empty() {
        let lf = memchr(b'\n', data);
        if lf.is_none() && carry.len() + data.len() < line_bytes_max {
            carry.extend_from_slice(data);
            return Ok(());
        }
        // Complete the unfinished line (a reader is never inside a literal or body then).
        let take = lf.map_or(data.len(), |i| i + 1);
        carry.extend_from_slice(&data[..take]);
        data = &data[take..];
        let used = process(carry)?;
        carry.drain(..used);
        if !carry.is_empty() {
            return Ok(());
        }
    }
    let used = process(data)?;
    carry.extend_from_slice(&data[used..]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Recording

/// How a final reply counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    Ok,
    TempFail,
    PermFail,
}

/// One worker thread's measurements and its share of the live progress.
pub(crate) struct Recorder<'p> {
    pub(crate) outcome: Outcome,
    progress: &'p Progress,
    start: Instant,
    /// The op whose successes the timeline counts; `None` = every op.
    headline: Option<usize>,
    /// Completions not yet added to the shared `progress` (added once per event-loop turn,
    /// not once per operation: the counter is shared by every worker thread).
    unreported: u64,
}

impl<'p> Recorder<'p> {
    /// `outcome` must already hold every op (in the protocol's stable order).
    pub(crate) fn new(
        outcome: Outcome,
        progress: &'p Progress,
        start: Instant,
        headline: Option<usize>,
    ) -> Self {
        Self {
            outcome,
            progress,
            start,
            headline,
            unreported: 0,
        }
    }

    /// Adds the completions since the last call to the shared progress counter.
    pub(crate) fn report_progress(&mut self) {
        if self.unreported > 0 {
            self.progress.add_completed(self.unreported);
            self.unreported = 0;
        }
    }

    /// Op `op` got its final reply at `now` (sent at `sent_at`).
    pub(crate) fn complete(
        &mut self,
        op: usize,
        class: Class,
        sent_at: Option<Instant>,
        now: Instant,
    ) {
        let entry = &mut self.outcome.ops[op];
        match class {
            Class::Ok => entry.ok += 1,
            Class::TempFail => entry.tempfail += 1,
            Class::PermFail => entry.permfail += 1,
        }
        let latency = now.saturating_duration_since(sent_at.unwrap_or(now));
        entry
            .latency
            .record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        if class == Class::Ok && self.headline.is_none_or(|h| h == op) {
            self.outcome.timeline.record(self.start, now);
        }
        self.unreported += 1;
    }

    /// Op `op` was in flight when its connection ended or the run did.
    pub(crate) fn abort(&mut self, op: usize) {
        self.outcome.ops[op].aborted += 1;
    }

    /// A connection-level failure.
    pub(crate) fn error(&mut self, what: impl FnOnce() -> String) {
        self.outcome.count_error(what);
        self.progress.add_error();
    }

    pub(crate) fn connected(&mut self) {
        self.outcome.connects += 1;
    }
}

/// An empty outcome with `ops` (in this order) and the run's identity.
pub(crate) fn empty_outcome(
    protocol: &str,
    output: &OutputOptions,
    target_text: &str,
    config: Vec<(String, String)>,
    headline: &str,
    ops: &[&str],
    duration: Duration,
) -> Outcome {
    let mut outcome = Outcome {
        protocol: protocol.into(),
        label: output.label.clone().unwrap_or_else(|| target_text.into()),
        target: target_text.into(),
        config,
        started_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        elapsed: Duration::ZERO,
        headline: headline.into(),
        ops: Vec::new(),
        timeline: Timeline::for_duration(duration),
        connects: 0,
        errors: 0,
        first_error: None,
    };
    for op in ops {
        outcome.op_mut(op);
    }
    outcome
}

// ---------------------------------------------------------------------------------------------
// The driver

/// A sans-IO client for one connection slot (IMAP or POP3). The driver feeds
/// it connection events, bytes and time, and writes what it queues.
pub(crate) trait SlotClient {
    type Error: Display;
    /// When to open the next connection; `None` once the slot is done.
    fn next_connect_at(&self) -> Option<Instant>;
    /// While connected: when [`SlotClient::on_timer`] must run next.
    fn timer_at(&self) -> Option<Instant>;
    fn on_connected(&mut self, now: Instant, rec: &mut Recorder);
    fn on_connect_failed(&mut self, error: &dyn Display, now: Instant, rec: &mut Recorder);
    /// Bytes from the server; an error ends the connection.
    fn on_received(
        &mut self,
        data: &[u8],
        now: Instant,
        rec: &mut Recorder,
    ) -> Result<(), Self::Error>;
    /// The timer came due; an error (reply timeout) ends the connection.
    fn on_timer(&mut self, now: Instant, rec: &mut Recorder) -> Result<(), Self::Error>;
    /// The server closed its side (expected only after LOGOUT/QUIT).
    fn on_eof(&mut self, now: Instant, rec: &mut Recorder);
    fn on_connection_lost(&mut self, error: &dyn Display, now: Instant, rec: &mut Recorder);
    /// The run is over: whatever is in flight is aborted; no more connections.
    fn on_deadline(&mut self, rec: &mut Recorder);
    /// Bytes to write now.
    fn output(&self) -> &[u8];
    fn on_written(&mut self, n: usize, now: Instant);
    /// The session is over: the driver closes the socket and calls [`SlotClient::on_closed`].
    fn is_closing(&self) -> bool;
    fn on_closed(&mut self, now: Instant);
}

/// Where and how long to run, for [`run_slots`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub(crate) target: SocketAddr,
    /// Worker threads (capped at the slot count).
    pub(crate) threads: usize,
    /// Connection slots.
    pub(crate) slots: usize,
    pub(crate) deadline: Instant,
    /// The op whose successes the timeline counts; `None` = every op.
    pub(crate) headline: Option<usize>,
}

/// Runs `plan.slots` clients (made by `make(slot, now)`) on pinned worker
/// threads until they are all done or the deadline passes; returns the merged
/// outcome (`template`'s identity and ops, elapsed set).
pub(crate) fn run_slots<C, F>(
    plan: Plan,
    template: &Outcome,
    progress: &Progress,
    make: F,
) -> Outcome
where
    C: SlotClient,
    F: Fn(usize, Instant) -> C + Sync,
{
    let start = Instant::now();
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (slots, deadline) = (plan.slots, plan.deadline);
    let threads = plan.threads.clamp(1, slots.max(1));
    let mut total = template.clone();
    std::thread::scope(|scope| {
        let make = &make;
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let core = cores.get(thread % cores.len().max(1)).copied();
                let outcome = template.clone();
                scope.spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    let now = Instant::now();
                    let clients: Vec<C> = (thread..slots)
                        .step_by(threads)
                        .map(|slot| make(slot, now))
                        .collect();
                    let mut rec = Recorder::new(outcome, progress, start, plan.headline);
                    worker(plan.target, clients, deadline, &mut rec);
                    rec.report_progress();
                    rec.outcome
                })
            })
            .collect();
        for handle in handles {
            match handle.join() {
                Ok(part) => total.merge(&part),
                Err(_) => {
                    total.count_error(|| "a worker thread panicked".into());
                    progress.add_error();
                }
            }
        }
    });
    total.elapsed = start.elapsed();
    total
}

struct Conn<C> {
    client: C,
    stream: Option<TcpStream>,
    /// EPOLLOUT is registered (a write would have blocked).
    want_write: bool,
}

fn worker<C: SlotClient>(
    target: SocketAddr,
    clients: Vec<C>,
    deadline: Instant,
    rec: &mut Recorder,
) {
    let mut poller = match Poller::new() {
        Ok(p) => p,
        Err(e) => {
            rec.error(|| format!("epoll_create1: {e}"));
            return;
        }
    };
    let mut conns: Vec<Conn<C>> = clients
        .into_iter()
        .map(|client| Conn {
            client,
            stream: None,
            want_write: false,
        })
        .collect();
    let mut events = Vec::with_capacity(crate::poller::EVENTS_MAX);
    let mut buf = vec![0u8; READ_BUFFER_BYTES];
    // Connects, retries and timers are checked by a scan over all slots, done
    // when a slot closed, a timer or a retry came due, and at least every TICK.
    let mut scan_at = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline {
            for conn in &mut conns {
                conn.client.on_deadline(rec);
                conn.stream = None;
            }
            break;
        }
        if now >= scan_at {
            scan_at = now + TICK;
            let mut busy = false;
            for (token, conn) in conns.iter_mut().enumerate() {
                if conn.stream.is_some() {
                    busy = true;
                    if conn.client.timer_at().is_some_and(|at| at <= now) {
                        match conn.client.on_timer(now, rec) {
                            Ok(()) => flush(conn, token as u64, &poller, rec),
                            Err(e) => lose(conn, &e, rec),
                        }
                        close_if_done(conn);
                    }
                    if let Some(at) = conn.client.timer_at() {
                        scan_at = scan_at.min(at);
                    }
                    if conn.stream.is_some() {
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
                connect(conn, token as u64, &poller, target, deadline, rec);
                if let Some(retry_at) = conn.client.next_connect_at() {
                    scan_at = scan_at.min(retry_at);
                }
            }
            if !busy {
                break;
            }
        }
        rec.report_progress();
        let wait = scan_at
            .min(deadline)
            .saturating_duration_since(Instant::now());
        let timeout_ms = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        if let Err(e) = poller.wait(&mut events, timeout_ms) {
            rec.error(|| format!("epoll_wait: {e}"));
            for conn in &mut conns {
                conn.client.on_deadline(rec);
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
            handle_event(conn, event, &poller, &mut buf, rec);
            if close_if_done(conn) {
                scan_at = Instant::now();
            } else if let Some(at) = conn.client.timer_at() {
                scan_at = scan_at.min(at);
            }
        }
    }
}

/// Closes the socket of a finished session or a lost connection; true if closed.
fn close_if_done<C: SlotClient>(conn: &mut Conn<C>) -> bool {
    if conn.stream.is_some() && !conn.client.is_closing() {
        return false;
    }
    if conn.client.is_closing() {
        conn.client.on_closed(Instant::now());
    }
    conn.stream = None;
    conn.want_write = false;
    true
}

fn lose<C: SlotClient>(conn: &mut Conn<C>, error: &dyn Display, rec: &mut Recorder) {
    conn.stream = None;
    conn.want_write = false;
    conn.client.on_connection_lost(error, Instant::now(), rec);
}

fn connect<C: SlotClient>(
    conn: &mut Conn<C>,
    token: u64,
    poller: &Poller,
    target: SocketAddr,
    deadline: Instant,
    rec: &mut Recorder,
) {
    let now = Instant::now();
    let timeout = CONNECT_TIMEOUT
        .min(deadline.saturating_duration_since(now))
        .max(Duration::from_millis(1));
    let opened = TcpStream::connect_timeout(&target, timeout).and_then(|stream| {
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        poller.add(stream.as_raw_fd(), token, false)?;
        Ok(stream)
    });
    match opened {
        Ok(stream) => {
            conn.stream = Some(stream);
            conn.want_write = false;
            conn.client.on_connected(Instant::now(), rec);
            // A client speaks first only in protocols without a greeting; flush anyway.
            flush(conn, token, poller, rec);
        }
        Err(e) => conn.client.on_connect_failed(&e, now, rec),
    }
}

/// Reads once (level-triggered: more data re-reports), lets the client react,
/// then writes what it queued.
fn handle_event<C: SlotClient>(
    conn: &mut Conn<C>,
    event: &Event,
    poller: &Poller,
    buf: &mut [u8],
    rec: &mut Recorder,
) {
    let Some(stream) = conn.stream.as_mut() else {
        return;
    };
    if event.readable || event.failed {
        match stream.read(buf) {
            Ok(0) => {
                conn.stream = None;
                conn.want_write = false;
                conn.client.on_eof(Instant::now(), rec);
                return;
            }
            Ok(n) => {
                if let Err(e) = conn.client.on_received(&buf[..n], Instant::now(), rec) {
                    lose(conn, &e, rec);
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                lose(conn, &e, rec);
                return;
            }
        }
    }
    flush(conn, event.token, poller, rec);
}

fn flush<C: SlotClient>(conn: &mut Conn<C>, token: u64, poller: &Poller, rec: &mut Recorder) {
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
        lose(conn, &e, rec);
    }
}

/// Splits `total` over `slots` as evenly as possible (the first ones get the remainder).
pub(crate) fn share(total: u64, slots: u64, slot: u64) -> u64 {
    let slots = slots.max(1);
    total / slots + u64::from(slot < total % slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(specs: &[&str], count: Option<u64>) -> (Vec<Credentials>, Vec<String>) {
        let specs: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
        let mut problems = Vec::new();
        let users = parse_users(&specs, count, &mut problems);
        (users, problems)
    }

    #[test]
    fn percent_expands_to_one_user_per_number() {
        let (u, p) = users(&["load%@example.test:secret", "fixed@x.test:a:b"], Some(3));
        assert!(p.is_empty(), "{p:?}");
        let logins: Vec<&str> = u.iter().map(|u| u.login.as_str()).collect();
        assert_eq!(
            logins,
            [
                "load1@example.test",
                "load2@example.test",
                "load3@example.test",
                "fixed@x.test"
            ]
        );
        assert_eq!(u[0].password.expose(), "secret");
        assert_eq!(
            u[3].password.expose(),
            "a:b",
            "the password may hold colons"
        );
        assert_eq!(
            describe_users(&u),
            "load1@example.test load2@example.test load3@example.test (+1 more)"
        );
    }

    #[test]
    fn user_problems_are_all_reported() {
        let (_, p) = users(&["nocolon", "a%@x:pw", ":pw", "b@x:"], None);
        assert_eq!(p.len(), 4, "{p:?}");
        let (_, p) = users(&["a@x:pw"], Some(2));
        assert_eq!(p, ["--user-count needs a `%` in a --user LOGIN"]);
        let (_, p) = users(&[], None);
        assert_eq!(p, ["--user LOGIN:PASSWORD is required"]);
        let (_, p) = users(&["a%:pw"], Some(USERS_MAX + 1));
        assert_eq!(p, [format!("more than {USERS_MAX} users")]);
    }

    #[test]
    fn passwords_never_print() {
        let c = Credentials {
            login: "a@b".into(),
            password: Secret::new("hunter2"),
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }

    #[test]
    fn raw_args_sort_values_flags_and_output_options() {
        let mut problems = Vec::new();
        let args = [
            "--a", "1", "--b=2", "--f", "--a=3", "--quiet", "--zz", "--f=1", "--b",
        ];
        let raw = RawArgs::collect(
            args.iter().map(|s| s.to_string()),
            &["--a", "--b"],
            &["--f"],
            &mut problems,
        );
        assert_eq!(raw.all("--a"), ["1", "3"]);
        assert_eq!(raw.single("--b", &mut problems), Some("2".into()));
        assert!(raw.flag("--f") && raw.output.quiet);
        assert_eq!(raw.single("--a", &mut problems), Some("1".into()));
        assert_eq!(
            problems,
            [
                "unknown option `--zz`",
                "--f takes no value",
                "--b needs a value",
                "--a given more than once"
            ]
        );
    }

    #[test]
    fn outbox_releases_held_segments_in_order_and_stamps_the_first() {
        let mut o = Outbox::default();
        let t0 = Instant::now();
        o.start().extend_from_slice(b"a1 LOGIN {1}\r\n");
        o.hold_here();
        o.buf_mut().extend_from_slice(b"x {2}\r\n");
        o.hold_here();
        o.buf_mut().extend_from_slice(b"pw\r\n");
        o.seal();
        assert_eq!(o.pending(), b"a1 LOGIN {1}\r\n");
        o.on_written(3, t0);
        assert_eq!(o.sent_at, None);
        o.on_written(11, t0 + Duration::from_millis(1));
        assert_eq!(o.sent_at, Some(t0 + Duration::from_millis(1)));
        assert!(o.pending().is_empty() && o.holding());
        assert!(o.release());
        assert_eq!(o.pending(), b"x {2}\r\n");
        o.on_written(7, t0);
        assert!(o.release());
        assert_eq!(o.pending(), b"pw\r\n");
        assert!(!o.holding() && !o.release());
        assert_eq!(o.sent_at, Some(t0 + Duration::from_millis(1)));
    }

    #[test]
    fn outbox_shrinks_after_a_large_command() {
        let mut o = Outbox::default();
        o.start().resize(4 * OUTBOX_CAPACITY_MAX, b'x');
        o.seal();
        assert!(o.start().capacity() <= OUTBOX_CAPACITY_MAX);
        o.buf_mut().resize(OUTBOX_CAPACITY_MAX / 2, b'y');
        o.clear();
        assert!(
            o.buf_mut().capacity() >= OUTBOX_CAPACITY_MAX / 2,
            "a small one is kept"
        );
    }

    #[test]
    fn feed_carries_an_unfinished_line_and_scans_it_once() {
        // `process` takes whole lines, as the readers do, and logs what it was given.
        let mut seen: Vec<Vec<u8>> = Vec::new();
        let mut lines: Vec<Vec<u8>> = Vec::new();
        let mut carry = Vec::new();
        let mut step = |carry: &mut Vec<u8>, data: &[u8]| {
            feed(carry, data, 16, |bytes: &[u8]| {
                seen.push(bytes.to_vec());
                let window = &bytes[..bytes.len().min(16)];
                match window.iter().rposition(|&b| b == b'\n') {
                    Some(end) => {
                        lines.extend(
                            bytes[..=end]
                                .split_inclusive(|&b| b == b'\n')
                                .map(<[u8]>::to_vec),
                        );
                        Ok(end + 1)
                    }
                    None if bytes.len() >= 16 => Err("too long"),
                    None => Ok(0),
                }
            })
        };
        step(&mut carry, b"a1\nb").unwrap();
        step(&mut carry, b"cd").unwrap();
        step(&mut carry, b"ef").unwrap();
        assert_eq!(carry, b"bcdef");
        step(&mut carry, b"g\nh\n").unwrap();
        assert!(carry.is_empty());
        step(&mut carry, b"0123456").unwrap();
        step(&mut carry, b"789abcde").unwrap();
        assert_eq!(carry, b"0123456789abcde", "one byte short of the limit");
        assert_eq!(step(&mut carry, b"f"), Err("too long"));
        assert_eq!(lines, [&b"a1\n"[..], b"bcdefg\n", b"h\n"]);
        // Reads without LF reach `process` only at the limit.
        assert_eq!(
            seen,
            [
                &b"a1\nb"[..],
                b"bcdefg\n",
                b"h\n",
                b"0123456",
                b"0123456789abcdef"
            ]
        );
    }

    #[test]
    fn rng_is_uniform_enough_and_share_splits_evenly() {
        let mut rng = Rng::new(42);
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            counts[rng.below(4) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
        let parts: Vec<u64> = (0..3).map(|s| share(10, 3, s)).collect();
        assert_eq!(parts, [4, 3, 3]);
        assert_eq!((0..5).map(|s| share(2, 5, s)).sum::<u64>(), 2);
    }

    #[test]
    fn retry_backs_off_and_gives_up() {
        let t0 = Instant::now();
        let mut r = Retry::new(t0);
        r.failed(t0);
        r.failed(t0);
        assert!(!r.stopped);
        r.failed(t0);
        assert!(
            r.stopped,
            "never connected: gives up after {FIRST_CONNECT_ATTEMPTS_MAX}"
        );
        let mut r = Retry::new(t0);
        r.connected();
        r.failed(t0);
        assert_eq!(r.connect_at, t0 + Duration::from_millis(1));
        r.failed(t0);
        assert_eq!(r.connect_at, t0 + Duration::from_millis(2));
        for _ in 0..15 {
            r.failed(t0);
        }
        assert_eq!(r.connect_at, t0 + RETRY_DELAY_MAX);
        r.succeeded();
        for _ in 0..FAILURES_IN_A_ROW_MAX - 1 {
            r.failed(t0);
            assert!(!r.stopped);
        }
        r.failed(t0);
        assert!(r.stopped);
    }
}
