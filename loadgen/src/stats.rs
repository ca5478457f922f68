//! Per-thread counters and latency histogram for one run; merged by the runner.
//!
//! Every message started (`MAIL FROM` issued) ends in exactly one of `ok`,
//! `tempfail`, `permfail` or `aborted`, so `sent == ok + tempfail + permfail +
//! aborted` once all clients have stopped. `errors` counts connection-level
//! failures (connect refused, reset, unexpected EOF, protocol error, timeout),
//! which may or may not have had a message in flight.

use crate::histogram::LatencyHistogram;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Transactions started.
    pub sent: u64,
    /// Final reply 2xx.
    pub ok: u64,
    /// Final reply 4xx (including a 421 that closed the connection mid-transaction).
    pub tempfail: u64,
    /// Final reply 5xx.
    pub permfail: u64,
    /// In flight when the connection failed or the run hit its deadline.
    pub aborted: u64,
    /// Connection-level failures.
    pub errors: u64,
    /// TCP connections established.
    pub connects: u64,
    /// Sessions that pipelined MAIL+RCPT+DATA / that sent one command at a time.
    pub sessions_pipelined: u64,
    pub sessions_unpipelined: u64,
    /// Message bytes sent (DATA payloads, without the final `.\r\n`).
    pub message_bytes: u64,
    /// From the end of DATA (`\r\n.\r\n` written) to its final reply, any code.
    pub latency: LatencyHistogram,
    /// The first connection error seen, for the report.
    pub first_error: Option<String>,
}

impl Stats {
    /// Counts a final reply by its class; anything outside 2xx-5xx is the
    /// caller's protocol error and is not counted here.
    pub fn count_final(&mut self, code: u16) {
        match code / 100 {
            2 => self.ok += 1,
            4 => self.tempfail += 1,
            5 => self.permfail += 1,
            _ => debug_assert!(false, "final reply {code} is not 2xx/4xx/5xx"),
        }
    }

    pub fn count_error(&mut self, what: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }

    /// Messages that got a final reply.
    pub fn completed(&self) -> u64 {
        self.ok + self.tempfail + self.permfail
    }

    pub fn merge(&mut self, other: &Stats) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.tempfail += other.tempfail;
        self.permfail += other.permfail;
        self.aborted += other.aborted;
        self.errors += other.errors;
        self.connects += other.connects;
        self.sessions_pipelined += other.sessions_pipelined;
        self.sessions_unpipelined += other.sessions_unpipelined;
        self.message_bytes += other.message_bytes;
        self.latency.merge(&other.latency);
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_replies_are_counted_by_class() {
        let mut s = Stats::default();
        for code in [250, 251, 421, 451, 550, 554] {
            s.count_final(code);
        }
        assert_eq!((s.ok, s.tempfail, s.permfail), (2, 2, 2));
        assert_eq!(s.completed(), 6);
    }

    #[test]
    fn merge_adds_counts_and_keeps_the_first_error() {
        let mut a = Stats {
            sent: 3,
            ok: 2,
            aborted: 1,
            ..Stats::default()
        };
        a.latency.record(100);
        let mut b = Stats {
            sent: 5,
            permfail: 5,
            connects: 2,
            ..Stats::default()
        };
        b.count_error(|| "refused".into());
        b.count_error(|| "second".into());
        b.latency.record(300);
        a.merge(&b);
        assert_eq!(
            (a.sent, a.ok, a.permfail, a.aborted, a.errors, a.connects),
            (8, 2, 5, 1, 2, 2)
        );
        assert_eq!(a.first_error.as_deref(), Some("refused"));
        assert_eq!(a.latency.count(), 2);
        assert_eq!(a.latency.max_us(), 300);
    }
}
