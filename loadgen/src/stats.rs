//! Per-thread counters of one SMTP run; merged by the runner into an
//! [`Outcome`](crate::outcome::Outcome).
//!
//! Operations, each an [`OpOutcome`]:
//! - `message`: every transaction started (`MAIL FROM` issued) ends in exactly
//!   one of `ok`, `tempfail`, `permfail` or `aborted`, so `sent == ok +
//!   tempfail + permfail + aborted` once all clients have stopped.
//! - `session_setup`: connect → ready for `MAIL` (greeting, EHLO, STARTTLS and
//!   the second EHLO, AUTH); aborted when the connection failed on the way.
//! - `auth`: the AUTH exchange (235 ok, 4xx tempfail, 5xx permfail).
//! - `data_reply`: end of DATA written → final reply, for the transactions that
//!   got that far, *without* the open-loop lateness that `message` adds (so in
//!   open loop `message` is what a sender on schedule sees, `data_reply` is the
//!   server's own DATA→250 time). Reported for open-loop runs only; in closed
//!   loop it equals `message` for every transaction that reached DATA.
//!
//! `errors` counts connection-level failures (connect refused, reset,
//! unexpected EOF, protocol or TLS error, timeout, AUTH refused), which may or
//! may not have had a message in flight.

use std::time::{Duration, Instant};

use crate::outcome::{OpOutcome, Timeline};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// The run's start, for the timeline.
    pub start: Instant,
    /// Transactions started.
    pub sent: u64,
    /// Final replies to transactions, and their latency.
    pub message: OpOutcome,
    pub session_setup: OpOutcome,
    pub auth: OpOutcome,
    pub data_reply: OpOutcome,
    /// Accepted messages over time.
    pub timeline: Timeline,
    /// Open loop: transactions that started later than their due time.
    pub late: u64,
    /// Connection-level failures.
    pub errors: u64,
    /// TCP connections established.
    pub connects: u64,
    /// Sessions that pipelined MAIL+RCPT+DATA / that sent one command at a time.
    pub sessions_pipelined: u64,
    pub sessions_unpipelined: u64,
    /// Message bytes sent (DATA payloads, without the final `.\r\n`).
    pub message_bytes: u64,
    /// The first connection error seen, for the report.
    pub first_error: Option<String>,
}

impl Stats {
    /// Empty counters for a run that started at `start` and lasts at most `duration`.
    pub fn new(start: Instant, duration: Duration) -> Self {
        Self {
            start,
            sent: 0,
            message: OpOutcome::new("message"),
            session_setup: OpOutcome::new("session_setup"),
            auth: OpOutcome::new("auth"),
            data_reply: OpOutcome::new("data_reply"),
            timeline: Timeline::for_duration(duration),
            late: 0,
            errors: 0,
            connects: 0,
            sessions_pipelined: 0,
            sessions_unpipelined: 0,
            message_bytes: 0,
            first_error: None,
        }
    }

    /// Counts a transaction's final reply at `now` by its class, with its latency.
    pub fn count_message(&mut self, code: u16, latency: Duration, now: Instant) {
        if count_class(&mut self.message, code, latency) {
            self.timeline.record(self.start, now);
        }
    }

    /// A final reply to a transaction whose end of DATA went out `latency` before it.
    pub fn count_data_reply(&mut self, code: u16, latency: Duration) {
        count_class(&mut self.data_reply, code, latency);
    }

    pub fn count_error(&mut self, what: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }

    /// Transactions that got a final reply.
    pub fn completed(&self) -> u64 {
        self.message.completed()
    }

    pub fn merge(&mut self, other: &Stats) {
        self.sent += other.sent;
        self.message.merge(&other.message);
        self.session_setup.merge(&other.session_setup);
        self.auth.merge(&other.auth);
        self.data_reply.merge(&other.data_reply);
        self.timeline.merge(&other.timeline);
        self.late += other.late;
        self.errors += other.errors;
        self.connects += other.connects;
        self.sessions_pipelined += other.sessions_pipelined;
        self.sessions_unpipelined += other.sessions_unpipelined;
        self.message_bytes += other.message_bytes;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }
}

/// Counts a reply to `op` by its class (2xx ok, 4xx tempfail, 5xx permfail)
/// and records its latency; true for 2xx. Anything outside 2xx-5xx is the
/// caller's protocol error and is not counted.
pub fn count_class(op: &mut OpOutcome, code: u16, latency: Duration) -> bool {
    match code / 100 {
        2 => op.ok += 1,
        4 => op.tempfail += 1,
        5 => op.permfail += 1,
        _ => {
            debug_assert!(false, "final reply {code} is not 2xx/4xx/5xx");
            return false;
        }
    }
    op.latency
        .record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    code / 100 == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> Stats {
        Stats::new(Instant::now(), Duration::from_secs(10))
    }

    #[test]
    fn final_replies_are_counted_by_class_with_latency_and_timeline() {
        let mut s = stats();
        let now = s.start + Duration::from_millis(150);
        for code in [250, 251, 421, 451, 550, 554] {
            s.count_message(code, Duration::from_micros(u64::from(code)), now);
        }
        let m = &s.message;
        assert_eq!((m.ok, m.tempfail, m.permfail), (2, 2, 2));
        assert_eq!(s.completed(), 6);
        assert_eq!(m.latency.count(), 6);
        assert_eq!(m.latency.max_us(), 554);
        // Only the accepted ones are throughput.
        assert_eq!(s.timeline.counts, [0, 2]);
    }

    #[test]
    fn merge_adds_counts_and_keeps_the_first_error() {
        let mut a = stats();
        a.sent = 3;
        a.message.ok = 2;
        a.message.aborted = 1;
        a.message.latency.record(100);
        a.auth.ok = 1;
        let mut b = stats();
        b.sent = 5;
        b.message.permfail = 5;
        b.connects = 2;
        b.late = 4;
        b.count_error(|| "refused".into());
        b.count_error(|| "second".into());
        b.message.latency.record(300);
        b.session_setup.aborted = 2;
        a.merge(&b);
        assert_eq!(
            (a.sent, a.message.ok, a.message.permfail, a.message.aborted),
            (8, 2, 5, 1)
        );
        assert_eq!((a.errors, a.connects, a.late), (2, 2, 4));
        assert_eq!((a.auth.ok, a.session_setup.aborted), (1, 2));
        assert_eq!(a.first_error.as_deref(), Some("refused"));
        assert_eq!(a.message.latency.count(), 2);
        assert_eq!(a.message.latency.max_us(), 300);
    }
}
