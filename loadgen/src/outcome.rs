//! What any run measured, whatever the protocol: the common result that the
//! JSON writer, the HTML report and `--compare` read. Each protocol runner
//! (SMTP, IMAP, POP3) fills one [`Outcome`] per worker thread and merges them.
//!
//! - [`OpOutcome`]: one operation kind (`message` for SMTP; `login`, `select`,
//!   `fetch`, ... for IMAP; `retr`, ... for POP3) with its reply classes and
//!   its latency histogram.
//! - [`Timeline`]: completed operations per fixed interval since the start,
//!   for throughput over time.

use std::time::{Duration, Instant};

use crate::histogram::LatencyHistogram;

/// Most intervals a timeline keeps; the interval widens for long runs.
pub const TIMELINE_BUCKETS_MAX: usize = 3_600;
/// Narrowest timeline interval.
pub const TIMELINE_INTERVAL_MS_MIN: u64 = 100;

/// One operation kind's counts and latency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpOutcome {
    /// Short lowercase name: `message`, `login`, `fetch`, `retr`, ...
    pub name: String,
    /// Completed with success (2xx, IMAP OK, POP3 +OK).
    pub ok: u64,
    /// Refused for now (4xx) or IMAP NO / POP3 -ERR.
    pub tempfail: u64,
    /// Refused for good (5xx) or IMAP BAD.
    pub permfail: u64,
    /// In flight when its connection failed or the deadline hit.
    pub aborted: u64,
    /// Request sent → final reply, for every completed operation (any outcome).
    pub latency: LatencyHistogram,
}

impl OpOutcome {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ok: 0,
            tempfail: 0,
            permfail: 0,
            aborted: 0,
            latency: LatencyHistogram::new(),
        }
    }

    /// Operations that got a final reply.
    pub fn completed(&self) -> u64 {
        self.ok + self.tempfail + self.permfail
    }

    /// Started: completed or aborted.
    pub fn started(&self) -> u64 {
        self.completed() + self.aborted
    }

    pub fn merge(&mut self, other: &OpOutcome) {
        self.ok += other.ok;
        self.tempfail += other.tempfail;
        self.permfail += other.permfail;
        self.aborted += other.aborted;
        self.latency.merge(&other.latency);
    }
}

/// Successful operations per interval since the run started (all kinds
/// together, or the headline kind only: the runner decides and says which in
/// [`Outcome::headline`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeline {
    pub interval_ms: u64,
    /// `counts[i]` = completions in `[i, i+1) * interval_ms` after the start.
    pub counts: Vec<u64>,
}

impl Timeline {
    /// A timeline for a run bounded by `duration`: intervals of 100 ms or
    /// wider, at most [`TIMELINE_BUCKETS_MAX`] of them.
    pub fn for_duration(duration: Duration) -> Self {
        let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let interval_ms = ms
            .div_ceil(TIMELINE_BUCKETS_MAX as u64)
            .max(TIMELINE_INTERVAL_MS_MIN);
        Self {
            interval_ms,
            counts: Vec::new(),
        }
    }

    /// Counts one completion at `now`; a time past the last interval lands in it.
    pub fn record(&mut self, start: Instant, now: Instant) {
        let ms =
            u64::try_from(now.saturating_duration_since(start).as_millis()).unwrap_or(u64::MAX);
        let index = usize::try_from(ms / self.interval_ms)
            .unwrap_or(usize::MAX)
            .min(TIMELINE_BUCKETS_MAX - 1);
        if self.counts.len() <= index {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] += 1;
    }

    /// Adds `other` (same interval) into `self`.
    pub fn merge(&mut self, other: &Timeline) {
        debug_assert_eq!(self.interval_ms, other.interval_ms);
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
    }

    /// Completions per second in each interval.
    pub fn rates_per_sec(&self) -> impl Iterator<Item = f64> + '_ {
        let scale = 1000.0 / self.interval_ms as f64;
        self.counts.iter().map(move |&n| n as f64 * scale)
    }
}

/// The whole run, as reported.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// `smtp`, `imap` or `pop3`.
    pub protocol: String,
    /// Free-form name for comparisons (`--label`; default: the target).
    pub label: String,
    /// The target as typed.
    pub target: String,
    /// The run's settings, as (key, value) text pairs in a stable order.
    pub config: Vec<(String, String)>,
    /// Wall-clock start, Unix milliseconds.
    pub started_unix_ms: u64,
    /// From start to the moment the last worker finished.
    pub elapsed: Duration,
    /// Name of the operation whose rate is the run's headline figure
    /// (`message` for SMTP, `retr` for POP3, `all` = every IMAP command).
    pub headline: String,
    /// Per operation kind, in a stable order.
    pub ops: Vec<OpOutcome>,
    /// Throughput over time (of the headline operation).
    pub timeline: Timeline,
    /// TCP connections established.
    pub connects: u64,
    /// Connection-level failures (refused, reset, EOF, protocol error, timeout).
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Outcome {
    /// The operation named `name`, created (appended) when it is not there yet.
    pub fn op_mut(&mut self, name: &str) -> &mut OpOutcome {
        let index = match self.ops.iter().position(|op| op.name == name) {
            Some(index) => index,
            None => {
                self.ops.push(OpOutcome::new(name));
                self.ops.len() - 1
            }
        };
        &mut self.ops[index]
    }

    pub fn op(&self, name: &str) -> Option<&OpOutcome> {
        self.ops.iter().find(|op| op.name == name)
    }

    /// Successful headline operations per second of elapsed time
    /// (`all`: every operation's successes together).
    pub fn headline_rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        let ok: u64 = self.headline_ops().map(|op| op.ok).sum();
        ok as f64 / secs
    }

    /// The operations counted in the headline: the one named [`Outcome::headline`],
    /// or every operation for `all`.
    pub fn headline_ops(&self) -> impl Iterator<Item = &OpOutcome> + '_ {
        self.ops
            .iter()
            .filter(|op| self.headline == "all" || op.name == self.headline)
    }

    pub fn count_error(&mut self, what: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }

    /// Adds another worker's measurements (same protocol and timeline interval).
    pub fn merge(&mut self, other: &Outcome) {
        for op in &other.ops {
            self.op_mut(&op.name).merge(op);
        }
        self.timeline.merge(&other.timeline);
        self.connects += other.connects;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        self.elapsed = self.elapsed.max(other.elapsed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(headline: &str) -> Outcome {
        Outcome {
            protocol: "imap".into(),
            label: "x".into(),
            target: "127.0.0.1:1".into(),
            config: Vec::new(),
            started_unix_ms: 0,
            elapsed: Duration::from_secs(2),
            headline: headline.into(),
            ops: Vec::new(),
            timeline: Timeline::for_duration(Duration::from_secs(10)),
            connects: 0,
            errors: 0,
            first_error: None,
        }
    }

    #[test]
    fn timeline_interval_widens_for_long_runs() {
        assert_eq!(
            Timeline::for_duration(Duration::from_secs(10)).interval_ms,
            100
        );
        assert_eq!(
            Timeline::for_duration(Duration::from_secs(360)).interval_ms,
            100
        );
        assert_eq!(
            Timeline::for_duration(Duration::from_secs(3_600)).interval_ms,
            1_000
        );
        let week = Timeline::for_duration(Duration::from_secs(7 * 86_400));
        assert!(week.interval_ms * TIMELINE_BUCKETS_MAX as u64 >= 7 * 86_400_000);
    }

    #[test]
    fn timeline_records_merges_and_clamps() {
        let start = Instant::now();
        let mut a = Timeline::for_duration(Duration::from_secs(10));
        a.record(start, start + Duration::from_millis(50));
        a.record(start, start + Duration::from_millis(250));
        let mut b = Timeline::for_duration(Duration::from_secs(10));
        b.record(start, start + Duration::from_millis(99));
        b.record(start, start + Duration::from_secs(100_000));
        a.merge(&b);
        assert_eq!(a.counts[0], 2);
        assert_eq!(a.counts[2], 1);
        assert_eq!(a.counts.len(), TIMELINE_BUCKETS_MAX);
        assert_eq!(a.counts[TIMELINE_BUCKETS_MAX - 1], 1);
        assert_eq!(a.rates_per_sec().next(), Some(20.0));
    }

    #[test]
    fn headline_rate_counts_successes_of_the_named_op_or_all() {
        let mut o = outcome("fetch");
        o.op_mut("fetch").ok = 10;
        o.op_mut("fetch").tempfail = 4;
        o.op_mut("login").ok = 6;
        assert_eq!(o.headline_rate(), 5.0);
        o.headline = "all".into();
        assert_eq!(o.headline_rate(), 8.0);
        o.headline = "retr".into();
        assert_eq!(o.headline_rate(), 0.0);
    }

    #[test]
    fn merge_adds_ops_by_name_and_keeps_the_first_error() {
        let mut a = outcome("all");
        a.op_mut("login").ok = 1;
        a.op_mut("login").latency.record(10);
        a.count_error(|| "first".into());
        let mut b = outcome("all");
        b.op_mut("fetch").ok = 2;
        b.op_mut("login").permfail = 3;
        b.count_error(|| "second".into());
        b.connects = 4;
        b.elapsed = Duration::from_secs(3);
        a.merge(&b);
        let names: Vec<&str> = a.ops.iter().map(|op| op.name.as_str()).collect();
        assert_eq!(names, ["login", "fetch"]);
        assert_eq!(a.op("login").map(OpOutcome::completed), Some(4));
        assert_eq!((a.errors, a.connects), (2, 4));
        assert_eq!(a.first_error.as_deref(), Some("first"));
        assert_eq!(a.elapsed, Duration::from_secs(3));
    }
}
