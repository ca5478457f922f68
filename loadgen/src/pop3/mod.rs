//! `ringmail-loadgen pop3`: POP3 load (USER/PASS, STAT, RETR of random
//! messages, optional DELE, QUIT) against any POP3 server.
//!
//! - [`args`]: command line → [`Pop3Config`].
//! - [`reply`]: sans-IO reply reader (status lines, multi-line bodies skipped
//!   as they arrive, dot-stuffing).
//! - [`client`]: sans-IO client state machine of one connection slot.
//!
//! [`run_pop3`] splits `--sessions` over the connections and runs the clients
//! on the shared epoll driver of [`crate::mailrun`].

pub mod args;
pub mod client;
pub mod reply;

use std::time::Instant;

pub use args::{parse_pop3_args, Pop3Config, POP3_USAGE};

use crate::mailrun::{self, empty_outcome, share, Plan, Rng};
use crate::outcome::Outcome;
use crate::progress::Progress;

/// Runs the POP3 load described by `cfg`. Counts every completed command in
/// `progress` (the caller runs the reporter and calls `finish`). The headline
/// is `retr`: successful RETRs per second.
pub fn run_pop3(cfg: &Pop3Config, progress: &Progress) -> Outcome {
    let template = empty_outcome(
        "pop3",
        &cfg.output,
        &cfg.target_text,
        cfg.describe(),
        "retr",
        &client::OPS,
        cfg.duration,
    );
    let deadline = Instant::now() + cfg.duration;
    let slots = cfg.connections as usize;
    let plan = Plan {
        target: cfg.target,
        threads: cfg.threads,
        slots,
        deadline,
        headline: Some(client::Op::Retr as usize),
    };
    mailrun::run_slots(plan, &template, progress, |slot, now| {
        let budget = share(cfg.sessions, slots as u64, slot as u64);
        client::Pop3Client::new(cfg, slot, budget, Rng::new(mailrun::seed(slot)), now)
    })
}
