//! Per-core counters, gauges and latency histograms, read by a Prometheus scrape.
//!
//! Each core owns one [`CoreMetrics`]: plain `AtomicU64`s that only that core writes and any
//! thread may read. One writer means no read-modify-write is needed: a hook is a relaxed
//! load and a relaxed store (no locked instruction, no contention, no lock), so counting
//! costs the hot path a few nanoseconds. The cores' `Arc<CoreMetrics>` are collected into a
//! [`MetricsRegistry`] before the executors start; a scrape ([`http`], served from core 0)
//! reads every core's atomics and renders Prometheus text ([`text`]) with a `core="N"` label.
//!
//! A scrape reads the atomics one by one while the cores keep counting: each value is exact,
//! the set is not a single instant (a histogram's `_count` is the sum of the buckets read,
//! so its own lines always agree).
//!
//! Hooks are one call in the drivers (`core.metrics.smtp_delivered(..)`), never in the
//! sans-IO sessions.

pub mod http;
pub mod text;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::net::Protocol;

/// Finite bucket bounds of every histogram (the `+Inf` bucket comes on top).
pub const BUCKETS: usize = 9;

/// Latency buckets in µs (DATA→250, IMAP commands).
pub const LATENCY_BUCKETS_US: [u64; BUCKETS] =
    [100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 100_000];
/// fdatasync latency buckets in µs (PLATFORM.md: ~125–200 µs median here).
pub const FSYNC_BUCKETS_US: [u64; BUCKETS] = [50, 100, 250, 500, 1000, 2500, 5000, 10_000, 50_000];
/// Records per group-commit batch.
pub const BATCH_RECORDS_BUCKETS: [u64; BUCKETS] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/// A counter (or gauge) written by one thread only.
#[derive(Debug, Default)]
pub struct Cell64(AtomicU64);

impl Cell64 {
    /// Adds `n` (wrapping). Only the owning core calls this: a load and a store, no RMW.
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Subtracts `n`, stopping at zero (a gauge).
    pub fn sub(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).saturating_sub(n),
            Ordering::Relaxed,
        );
    }

    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Any thread.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A fixed-bucket histogram written by one thread only.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64; BUCKETS],
    /// Per bucket (not cumulative); the last one is `+Inf`.
    counts: [Cell64; BUCKETS + 1],
    sum: Cell64,
}

impl Histogram {
    pub fn new(bounds: &'static [u64; BUCKETS]) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        Histogram {
            bounds,
            counts: Default::default(),
            sum: Cell64::default(),
        }
    }

    /// Counts `v` in the first bucket whose bound is ≥ `v` (Prometheus `le`).
    pub fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.counts[i].add(1);
        self.sum.add(v);
    }

    pub fn bounds(&self) -> &'static [u64; BUCKETS] {
        self.bounds
    }

    /// The per-bucket counts as they are now (not cumulative; `+Inf` last) and the sum.
    pub fn read(&self) -> ([u64; BUCKETS + 1], u64) {
        let mut counts = [0; BUCKETS + 1];
        for (c, a) in counts.iter_mut().zip(&self.counts) {
            *c = a.get();
        }
        (counts, self.sum.get())
    }
}

/// The IMAP commands counted by name; everything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImapOp {
    Login,
    Select,
    Fetch,
    Store,
    Search,
    Append,
    Idle,
    Other,
}

impl ImapOp {
    pub const ALL: [ImapOp; 8] = [
        ImapOp::Login,
        ImapOp::Select,
        ImapOp::Fetch,
        ImapOp::Store,
        ImapOp::Search,
        ImapOp::Append,
        ImapOp::Idle,
        ImapOp::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ImapOp::Login => "login",
            ImapOp::Select => "select",
            ImapOp::Fetch => "fetch",
            ImapOp::Store => "store",
            ImapOp::Search => "search",
            ImapOp::Append => "append",
            ImapOp::Idle => "idle",
            ImapOp::Other => "other",
        }
    }
}

/// The two logs of a core's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreLog {
    Blob,
    Meta,
}

impl StoreLog {
    pub const ALL: [StoreLog; 2] = [StoreLog::Blob, StoreLog::Meta];

    pub fn name(self) -> &'static str {
        match self {
            StoreLog::Blob => "blob",
            StoreLog::Meta => "meta",
        }
    }
}

impl From<crate::store::segment::SegmentKind> for StoreLog {
    fn from(kind: crate::store::segment::SegmentKind) -> StoreLog {
        match kind {
            crate::store::segment::SegmentKind::Blob => StoreLog::Blob,
            _ => StoreLog::Meta,
        }
    }
}

/// What one outbound attempt did to one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundResult {
    Delivered,
    Deferred,
    /// Failed permanently (or expired): the sender gets a bounce.
    Bounced,
}

impl OutboundResult {
    pub const ALL: [OutboundResult; 3] = [
        OutboundResult::Delivered,
        OutboundResult::Deferred,
        OutboundResult::Bounced,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OutboundResult::Delivered => "delivered",
            OutboundResult::Deferred => "deferred",
            OutboundResult::Bounced => "bounced",
        }
    }

    /// From the state an attempt left a queue recipient in (None: not an outcome).
    pub fn from_state(state: crate::store::RecipientState) -> Option<OutboundResult> {
        use crate::store::RecipientState;
        match state {
            RecipientState::Delivered => Some(OutboundResult::Delivered),
            RecipientState::Deferred => Some(OutboundResult::Deferred),
            RecipientState::Failed => Some(OutboundResult::Bounced),
            _ => None,
        }
    }
}

/// Counters of one store log.
#[derive(Debug)]
pub struct LogMetrics {
    /// Records per durable batch (its count is the number of group commits).
    pub batch_records: Histogram,
    pub bytes_written: Cell64,
    /// fdatasync latency in µs (its count is the number of syncs).
    pub fsync_us: Histogram,
}

impl Default for LogMetrics {
    fn default() -> LogMetrics {
        LogMetrics {
            batch_records: Histogram::new(&BATCH_RECORDS_BUCKETS),
            bytes_written: Cell64::default(),
            fsync_us: Histogram::new(&FSYNC_BUCKETS_US),
        }
    }
}

/// Everything one core counts. Written only by its core (see the module doc). Aligned so
/// that no cache line holds counters of two cores (no false sharing between them).
#[derive(Debug)]
#[repr(align(128))]
pub struct CoreMetrics {
    /// Indexed by `Protocol::index`.
    pub connections_accepted: [Cell64; 4],
    pub connections_open: [Cell64; 4],
    pub connections_refused: [Cell64; 4],
    pub auth_failures: [Cell64; 4],
    /// Transactions answered 250 after DATA/BDAT (messages stored).
    pub smtp_accepted: Cell64,
    /// Transactions refused after DATA (storage full or failed).
    pub smtp_rejected: Cell64,
    pub smtp_bytes: Cell64,
    /// Final SMTP reply lines sent, by class: 2xx, 3xx, 4xx, 5xx (RCPT and MAIL refusals,
    /// syntax errors, relay denials: every refusal a client saw).
    pub smtp_replies: [Cell64; 4],
    /// End of data → 250, µs.
    pub smtp_data_us: Histogram,
    /// Indexed like [`StoreLog::ALL`].
    pub store: [LogMetrics; 2],
    /// Indexed like [`ImapOp::ALL`].
    pub imap_commands: [Cell64; 8],
    /// Command parsed → the session asks for the next one, µs (IDLE's stays empty).
    pub imap_command_us: [Histogram; 8],
    /// RETR and TOP.
    pub pop3_retrieved: Cell64,
    /// Messages deleted at QUIT (UPDATE state).
    pub pop3_deleted: Cell64,
    pub outbound_queue_entries: Cell64,
    /// Indexed like [`OutboundResult::ALL`].
    pub outbound_recipients: [Cell64; 3],
    /// Deliveries sent to another core's store over the mesh.
    pub mesh_deliveries_sent: Cell64,
    pub smtp_sessions_moved: Cell64,
}

impl Default for CoreMetrics {
    fn default() -> CoreMetrics {
        CoreMetrics::new()
    }
}

/// Whole µs of `d`, saturating.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl CoreMetrics {
    pub fn new() -> CoreMetrics {
        CoreMetrics {
            connections_accepted: Default::default(),
            connections_open: Default::default(),
            connections_refused: Default::default(),
            auth_failures: Default::default(),
            smtp_accepted: Cell64::default(),
            smtp_rejected: Cell64::default(),
            smtp_bytes: Cell64::default(),
            smtp_replies: Default::default(),
            smtp_data_us: Histogram::new(&LATENCY_BUCKETS_US),
            store: Default::default(),
            imap_commands: Default::default(),
            imap_command_us: std::array::from_fn(|_| Histogram::new(&LATENCY_BUCKETS_US)),
            pop3_retrieved: Cell64::default(),
            pop3_deleted: Cell64::default(),
            outbound_queue_entries: Cell64::default(),
            outbound_recipients: Default::default(),
            mesh_deliveries_sent: Cell64::default(),
            smtp_sessions_moved: Cell64::default(),
        }
    }

    pub fn connection_accepted(&self, p: Protocol) {
        self.connections_accepted[p.index()].add(1);
    }

    pub fn connection_opened(&self, p: Protocol) {
        self.connections_open[p.index()].add(1);
    }

    pub fn connection_closed(&self, p: Protocol) {
        self.connections_open[p.index()].sub(1);
    }

    pub fn connection_refused(&self, p: Protocol) {
        self.connections_refused[p.index()].add(1);
    }

    pub fn auth_failed(&self, p: Protocol) {
        self.auth_failures[p.index()].add(1);
    }

    /// A transaction's end of data was answered: `stored` (250, `bytes` stored, `elapsed`
    /// since the end of data) or refused.
    pub fn smtp_delivered(&self, stored: bool, bytes: usize, elapsed: Duration) {
        if stored {
            self.smtp_accepted.add(1);
            self.smtp_bytes.add(bytes as u64);
            self.smtp_data_us.observe(micros(elapsed));
        } else {
            self.smtp_rejected.add(1);
        }
    }

    /// Counts the final reply lines (`NNN ` + text) in `out`, the bytes an SMTP session is
    /// about to send; continuation lines (`NNN-`) are not replies of their own.
    pub fn smtp_replies(&self, out: &[u8]) {
        for line in out.split(|&b| b == b'\n') {
            if let [class @ b'2'..=b'5', d1, d2, b' ', ..] = line {
                if d1.is_ascii_digit() && d2.is_ascii_digit() {
                    self.smtp_replies[usize::from(class - b'2')].add(1);
                }
            }
        }
    }

    /// A group commit of `records` records and `bytes` bytes became durable.
    pub fn store_batch(&self, log: StoreLog, records: u64, bytes: u64) {
        let m = &self.store[log as usize];
        m.batch_records.observe(records);
        m.bytes_written.add(bytes);
    }

    /// One fdatasync took `elapsed`.
    pub fn store_sync(&self, log: StoreLog, elapsed: Duration) {
        self.store[log as usize].fsync_us.observe(micros(elapsed));
    }

    pub fn imap_command(&self, op: ImapOp) {
        self.imap_commands[op as usize].add(1);
    }

    /// A command of `op` took `elapsed` (not called for IDLE: its time is the client's).
    pub fn imap_command_done(&self, op: ImapOp, elapsed: Duration) {
        self.imap_command_us[op as usize].observe(micros(elapsed));
    }

    pub fn pop3_retrieved(&self) {
        self.pop3_retrieved.add(1);
    }

    pub fn pop3_deleted(&self, messages: usize) {
        self.pop3_deleted.add(messages as u64);
    }

    pub fn outbound_queue(&self, entries: usize) {
        self.outbound_queue_entries.set(entries as u64);
    }

    pub fn outbound_recipient(&self, state: crate::store::RecipientState) {
        if let Some(r) = OutboundResult::from_state(state) {
            self.outbound_recipients[r as usize].add(1);
        }
    }

    pub fn mesh_delivery_sent(&self) {
        self.mesh_deliveries_sent.add(1);
    }

    pub fn smtp_session_moved(&self) {
        self.smtp_sessions_moved.add(1);
    }
}

/// Every core's metrics, in core order; built before the executors start.
#[derive(Debug)]
pub struct MetricsRegistry {
    cores: Vec<Arc<CoreMetrics>>,
}

impl MetricsRegistry {
    pub fn new(ncores: usize) -> Arc<MetricsRegistry> {
        Arc::new(MetricsRegistry {
            cores: (0..ncores).map(|_| Arc::new(CoreMetrics::new())).collect(),
        })
    }

    pub fn cores(&self) -> &[Arc<CoreMetrics>] {
        &self.cores
    }

    /// The Prometheus text of every core now.
    pub fn render(&self) -> String {
        text::render(&self.cores)
    }
}

/// What one core needs of the metrics: its own counters, and (core 0) the registry and the
/// addresses to serve it on.
#[derive(Debug, Clone)]
pub struct CoreWiring {
    pub core: usize,
    pub registry: Arc<MetricsRegistry>,
    /// `[metrics] listen`, port 0 already resolved; served by core 0 only.
    pub listen: Arc<Vec<SocketAddr>>,
}

impl CoreWiring {
    /// This core's counters (a fresh unregistered set if `core` is out of range, which
    /// `serve` never builds).
    pub fn own(&self) -> Arc<CoreMetrics> {
        self.registry
            .cores()
            .get(self.core)
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_lands_in_the_first_bucket_whose_bound_is_not_below_it() {
        let h = Histogram::new(&LATENCY_BUCKETS_US);
        for v in [0, 100, 101, 250, 99_999, 100_000, 100_001, u64::MAX / 2] {
            h.observe(v);
        }
        let (counts, sum) = h.read();
        // le=100: 0, 100; le=250: 101, 250; le=100000: 99999, 100000; +Inf: the rest.
        assert_eq!(counts, [2, 2, 0, 0, 0, 0, 0, 0, 2, 2]);
        assert_eq!(
            sum,
            100 + 101 + 250 + 99_999 + 100_000 + 100_001 + u64::MAX / 2
        );
    }

    #[test]
    fn every_bucket_bound_is_inclusive() {
        let h = Histogram::new(&BATCH_RECORDS_BUCKETS);
        for &b in &BATCH_RECORDS_BUCKETS {
            h.observe(b);
        }
        let (counts, _) = h.read();
        assert_eq!(counts, [1, 1, 1, 1, 1, 1, 1, 1, 1, 0]);
    }

    #[test]
    fn a_gauge_stops_at_zero() {
        let m = CoreMetrics::new();
        m.connection_opened(Protocol::Imap);
        m.connection_closed(Protocol::Imap);
        m.connection_closed(Protocol::Imap);
        assert_eq!(m.connections_open[Protocol::Imap.index()].get(), 0);
    }

    #[test]
    fn smtp_replies_are_counted_by_class_once_per_reply() {
        let m = CoreMetrics::new();
        // A multi-line EHLO reply is one reply; a pipelined batch is several; text that
        // only looks like a code (inside a line, or without its space) is not a reply.
        m.smtp_replies(b"250-mx.example.test\r\n250-PIPELINING\r\n250 SIZE 1000\r\n");
        m.smtp_replies(b"250 2.1.0 Ok\r\n550 5.1.1 <x@y>: unknown\r\n354 go\r\n");
        m.smtp_replies(b"452 4.5.3 Too many recipients\r\n554 5.7.1 Relay access denied\r\n");
        m.smtp_replies(b"221 2.0.0 Bye 550 \r\n5501 x\r\n600 no\r\n25 x\r\n");
        let counts: Vec<u64> = m.smtp_replies.iter().map(Cell64::get).collect();
        assert_eq!(counts, [3, 1, 1, 2]);
    }

    #[test]
    fn refused_transactions_are_counted_but_not_timed() {
        let m = CoreMetrics::new();
        m.smtp_delivered(true, 10, Duration::from_micros(300));
        m.smtp_delivered(false, 99, Duration::from_micros(300));
        assert_eq!(
            (
                m.smtp_accepted.get(),
                m.smtp_rejected.get(),
                m.smtp_bytes.get()
            ),
            (1, 1, 10)
        );
        let (counts, sum) = m.smtp_data_us.read();
        assert_eq!(counts.iter().sum::<u64>(), 1);
        assert_eq!(sum, 300);
    }

    #[test]
    fn imap_ops_are_indexed_in_order() {
        for (i, op) in ImapOp::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i);
        }
    }
}
