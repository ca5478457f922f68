//! `ringmail-loadgen imap`: IMAP load (LOGIN, SELECT, then a weighted mix of
//! FETCH, STORE, SEARCH, APPEND, IDLE and NOOP; persistent or churning
//! sessions) against any IMAP server.
//!
//! - [`args`]: command line → [`ImapConfig`], the weighted [`args::Mix`].
//! - [`response`]: sans-IO response reader (literals skipped by count).
//! - [`client`]: sans-IO client state machine of one connection slot.
//! - [`message`]: the messages APPEND uploads.
//!
//! [`run_imap`] splits `--commands` over the connections and runs the clients
//! on the shared epoll driver of [`crate::mailrun`].

pub mod args;
pub mod client;
pub mod message;
pub mod response;

use std::time::Instant;

pub use args::{parse_imap_args, ImapConfig, IMAP_USAGE};

use crate::mailrun::{self, empty_outcome, share, Plan, Rng};
use crate::outcome::Outcome;
use crate::progress::Progress;

/// Runs the IMAP load described by `cfg`. Counts every completed command in
/// `progress` (the caller runs the reporter and calls `finish`). The headline
/// is `all`: successful commands of every kind per second.
pub fn run_imap(cfg: &ImapConfig, progress: &Progress) -> Outcome {
    let template = empty_outcome(
        "imap",
        &cfg.output,
        &cfg.target_text,
        cfg.describe(),
        "all",
        &client::OPS,
        cfg.duration,
    );
    let deadline = Instant::now() + cfg.duration;
    let date = message::rfc5322_now();
    let run_id = mailrun::seed(usize::MAX);
    let slots = cfg.connections as usize;
    let plan = Plan {
        target: cfg.target,
        threads: cfg.threads,
        slots,
        deadline,
        headline: None,
    };
    mailrun::run_slots(plan, &template, progress, |slot, now| {
        let budget = share(cfg.commands, slots as u64, slot as u64);
        let rng = Rng::new(mailrun::seed(slot));
        client::ImapClient::new(cfg, slot, budget, &date, run_id, rng, now)
    })
}
