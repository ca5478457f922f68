//! ringmail: a thread-per-core mail appliance.
//!
//! # Module map
//! - [`config`]   — the TOML file in two stages: `RawConfig` (serde, unknown keys kept
//!   for warnings) → validated [`config::Config`], every error reported at once.
//! - [`runtime`]  — the only place that names glommio executors: one pinned executor per
//!   configured core, RLIMIT_MEMLOCK, the data-dir lock, signals and the cross-core mesh
//!   over which work moves to the core that owns a mailbox.
//! - [`net`]      — listeners (SO_REUSEPORT, one accept loop per core), connection read
//!   buffers, per-core connection limits.
//! - [`smtp`]     — `codec` (sans-IO command parser, dot-unstuffing), `command` (types),
//!   `session` (sans-IO state machine: bytes in, replies and delivery requests out),
//!   `server` (drives a session over a glommio TCP stream).
//! - [`store`]    — the log-structured mailbox store: `record` (length + CRC32C + type
//!   framing), `segment` (versioned segment files), `index` (mailbox → UID → blob),
//!   `commit` (group commit: one write + one fdatasync per batch), `engine` (the per-core
//!   `Store`), `recover` (scan, truncate torn tails), `checkpoint` (index snapshots that
//!   bound recovery), `export` (mboxrd).
//! - [`accounts`] — users and argon2id password hashes, written atomically.
//! - [`time`]     — RFC 5322 dates without a calendar crate.
//!
//! # The path of one message
//! 1. A client connects; the kernel hands the connection to one core's listener
//!    (SO_REUSEPORT). `net` accepts it, sets TCP_NODELAY, and `smtp::server` starts a
//!    session on that core.
//! 2. `smtp::server` reads into the connection buffer; `smtp::session` parses commands
//!    with memchr over that buffer, checks RCPT against `accounts`, and dot-unstuffs DATA
//!    (or collects BDAT chunks) into the transaction's message buffer, with `Return-Path:`
//!    and `Received:` prepended.
//! 3. At end of data the session asks for delivery. `runtime::core` stages the message once
//!    in this core's blob log (its position is fixed at staging) and, at the same time, asks
//!    each recipient's owning core (`runtime::placement`) to append the index records
//!    (mailbox, UID, blob reference) to its meta log: locally, or over the bounded mesh
//!    channel. `store::commit` batches every append waiting on a core into one write + one
//!    fdatasync per log (group commit).
//! 4. Recovery drops, and tombstones durably, any index record whose blob did not survive a
//!    crash, so running the two commits concurrently never serves the wrong bytes.
//! 5. Only when the blob and every index record are durable does the session send `250`.
//! 6. `ringmail export` (or, later, IMAP FETCH) finds the UID in the index and reads the
//!    blob back, verifying its checksum.

pub mod accounts;
pub mod config;
pub mod net;
pub mod runtime;
pub mod smtp;
pub mod store;
pub mod time;
