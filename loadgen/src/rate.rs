//! Open-loop scheduling for `--rate N` (messages per second in total).
//!
//! Message `i` of the run (0-based, over all threads) is due `i / N` seconds
//! after the schedule's start; worker thread `t` of `T` owns the messages with
//! `i % T == t`, so the threads together keep the total rate and each thread's
//! schedule is evenly spaced (`T / N` apart). A due message starts at once on
//! a free connection of its thread; when none is free it waits for the next
//! one and counts as *late*. Its latency then includes the wait
//! (coordinated-omission-safe: a stalled server cannot hide the messages it
//! delayed). Pure functions, no clock reads.

use std::time::{Duration, Instant};

/// Largest `--rate`.
pub const RATE_PER_SEC_MAX: u64 = 10_000_000;
/// A message that starts more than this after its due time counts as late
/// (event-loop wake-ups are not more precise than about a millisecond).
pub const LATE_TOLERANCE: Duration = Duration::from_millis(1);

/// When message `index` of the run is due, after the start.
pub fn due_offset(index: u64, rate_per_sec: u64) -> Duration {
    let nanos = u128::from(index) * 1_000_000_000 / u128::from(rate_per_sec.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// How many of `messages` thread `thread` of `threads` owns.
pub fn thread_message_count(messages: u64, thread: u64, threads: u64) -> u64 {
    let threads = threads.max(1);
    if thread >= messages {
        return 0;
    }
    (messages - thread - 1) / threads + 1
}

/// How long after its due time a message started (zero when on time or early).
pub fn lateness(due: Instant, started: Instant) -> Duration {
    started.saturating_duration_since(due)
}

/// True when a start `lateness` after the due time counts as late.
pub fn is_late(lateness: Duration) -> bool {
    lateness > LATE_TOLERANCE
}

/// One thread's schedule: the next message it owns and when it is due.
#[derive(Clone, Debug)]
pub struct Schedule {
    start: Instant,
    rate_per_sec: u64,
    thread: u64,
    threads: u64,
    /// How many of this thread's messages were handed out.
    issued: u64,
    count: u64,
}

impl Schedule {
    pub fn new(
        start: Instant,
        rate_per_sec: u64,
        messages: u64,
        thread: u64,
        threads: u64,
    ) -> Self {
        Self {
            start,
            rate_per_sec,
            thread,
            threads: threads.max(1),
            issued: 0,
            count: thread_message_count(messages, thread, threads),
        }
    }

    /// Moves the schedule's start (the due time of message 0) to `start`;
    /// ignored once a message was handed out. The drivers start the schedule
    /// when the first session is ready for MAIL, so connection set-up does not
    /// make the first messages late.
    pub fn start_at(&mut self, start: Instant) {
        if self.issued == 0 {
            self.start = start;
        }
    }

    /// The next message: its run-wide index (also its sequence number) and due time.
    pub fn peek(&self) -> Option<(u64, Instant)> {
        if self.issued >= self.count {
            return None;
        }
        let index = self.issued * self.threads + self.thread;
        Some((index, self.start + due_offset(index, self.rate_per_sec)))
    }

    /// Marks the message from [`Schedule::peek`] as started.
    pub fn advance(&mut self) {
        self.issued = (self.issued + 1).min(self.count);
    }

    /// Every message of this thread has been handed out.
    pub fn is_exhausted(&self) -> bool {
        self.issued >= self.count
    }

    #[cfg(test)]
    pub fn issued(&self) -> u64 {
        self.issued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_are_evenly_spaced_at_the_total_rate() {
        assert_eq!(due_offset(0, 1000), Duration::ZERO);
        assert_eq!(due_offset(1, 1000), Duration::from_millis(1));
        assert_eq!(due_offset(3, 3), Duration::from_secs(1));
        assert_eq!(due_offset(1, 3), Duration::from_nanos(333_333_333));
        // Saturates instead of overflowing.
        assert_eq!(due_offset(u64::MAX, 1), Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn threads_split_the_messages_and_interleave_their_due_times() {
        for (messages, threads) in [(10, 3), (2, 4), (0, 2), (9, 3), (1, 1)] {
            let total: u64 = (0..threads)
                .map(|t| thread_message_count(messages, t, threads))
                .sum();
            assert_eq!(total, messages, "{messages} over {threads}");
        }
        let start = Instant::now();
        let mut all = Vec::new();
        for t in 0..3 {
            let mut s = Schedule::new(start, 100, 10, t, 3);
            let mut last = None;
            while let Some((index, due)) = s.peek() {
                assert_eq!(index % 3, t);
                assert_eq!(due - start, due_offset(index, 100));
                if let Some(last) = last {
                    // Each thread's messages are T / N = 30 ms apart.
                    assert_eq!(due - last, Duration::from_millis(30));
                }
                last = Some(due);
                all.push(index);
                s.advance();
            }
            assert!(s.is_exhausted());
            s.advance();
            assert_eq!(s.issued(), thread_message_count(10, t, 3));
        }
        all.sort_unstable();
        assert_eq!(
            all,
            (0..10).collect::<Vec<_>>(),
            "each message exactly once"
        );
    }

    #[test]
    fn the_start_moves_only_before_the_first_message() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 10, 5, 0, 1);
        let later = t0 + Duration::from_secs(3);
        s.start_at(later);
        assert_eq!(s.peek(), Some((0, later)));
        s.advance();
        s.start_at(t0);
        assert_eq!(s.peek(), Some((1, later + Duration::from_millis(100))));
    }

    #[test]
    fn lateness_is_the_delay_past_the_due_time() {
        let due = Instant::now();
        assert_eq!(lateness(due, due), Duration::ZERO);
        assert_eq!(
            lateness(due + Duration::from_millis(5), due),
            Duration::ZERO
        );
        let late = lateness(due, due + Duration::from_millis(7));
        assert_eq!(late, Duration::from_millis(7));
        assert!(is_late(late));
        assert!(!is_late(LATE_TOLERANCE));
        assert!(is_late(LATE_TOLERANCE + Duration::from_nanos(1)));
    }
}
