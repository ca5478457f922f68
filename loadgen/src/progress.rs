//! The live progress line: worker threads fold their counts into shared
//! counters (relaxed atomics, added in batches: per event-loop turn or at most
//! every 50 ms, not per operation), one reporter thread prints them
//! once per interval to stderr: rewritten in place (`\r`) on a terminal, one
//! plain line per interval otherwise (logs, CI). The line has a fixed shape:
//! `progress 3.0s done=45210 rate=15070/s errors=0` (`/TOTAL` after `done`
//! when the total is known).

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the reporter prints.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// How often the reporter checks whether the run is over.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Counters shared by the workers of one run.
#[derive(Debug, Default)]
pub struct Progress {
    completed: AtomicU64,
    errors: AtomicU64,
    done: AtomicBool,
}

impl Progress {
    pub fn add_completed(&self, n: u64) {
        self.completed.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_error(&self) {
        self.add_errors(1);
    }

    pub fn add_errors(&self, n: u64) {
        self.errors.fetch_add(n, Ordering::Relaxed);
    }

    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Tells the reporter to print its last line and return.
    pub fn finish(&self) {
        self.done.store(true, Ordering::Release);
    }

    pub fn is_finished(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

/// One progress line (without line end).
pub fn line(
    elapsed: Duration,
    completed: u64,
    total: Option<u64>,
    rate: f64,
    errors: u64,
) -> String {
    let mut out = format!("progress {:.1}s done={completed}", elapsed.as_secs_f64());
    if let Some(total) = total {
        let _ = write!(out, "/{total}");
    }
    let _ = write!(out, " rate={rate:.0}/s errors={errors}");
    out
}

/// Prints progress to stderr every [`PROGRESS_INTERVAL`] until
/// [`Progress::finish`] is called; run it on its own (scoped) thread. The rate
/// is that of the last interval.
pub fn report_until_finished(progress: &Progress, start: Instant, total: Option<u64>) {
    let tty = std::io::stderr().is_terminal();
    let mut last = (start, 0u64);
    let mut printed = false;
    loop {
        let finished = progress.is_finished();
        let now = Instant::now();
        if finished || now.duration_since(last.0) >= PROGRESS_INTERVAL {
            let completed = progress.completed();
            let secs = now.duration_since(last.0).as_secs_f64();
            let rate = if secs > 0.0 {
                completed.saturating_sub(last.1) as f64 / secs
            } else {
                0.0
            };
            if printed || !finished {
                let text = line(
                    now.duration_since(start),
                    completed,
                    total,
                    rate,
                    progress.errors(),
                );
                let mut err = std::io::stderr().lock();
                let _ = if tty {
                    let end = if finished { "\n" } else { "" };
                    write!(err, "\r\x1b[K{text}{end}")
                } else {
                    writeln!(err, "{text}")
                };
                let _ = err.flush();
                printed = true;
            }
            last = (now, completed);
        }
        if finished {
            return;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_a_fixed_shape() {
        assert_eq!(
            line(
                Duration::from_millis(3_040),
                45_210,
                Some(90_000),
                15_070.4,
                2
            ),
            "progress 3.0s done=45210/90000 rate=15070/s errors=2"
        );
        assert_eq!(
            line(Duration::ZERO, 0, None, 0.0, 0),
            "progress 0.0s done=0 rate=0/s errors=0"
        );
    }

    #[test]
    fn counters_add_up_across_threads_and_the_reporter_returns() {
        let progress = Progress::default();
        std::thread::scope(|scope| {
            // Normally finished before its first interval, so it prints nothing.
            let reporter = scope.spawn(|| report_until_finished(&progress, Instant::now(), None));
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        for _ in 0..1_000 {
                            progress.add_completed(1);
                        }
                        progress.add_error();
                    })
                })
                .collect();
            for w in workers {
                w.join().unwrap();
            }
            progress.finish();
            reporter.join().unwrap();
        });
        assert_eq!((progress.completed(), progress.errors()), (4_000, 4));
    }
}
