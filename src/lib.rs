//! ringmail: a thread-per-core mail appliance.
//!
//! # Module map
//! - [`config`]   — the TOML file in two stages: `RawConfig` (serde, unknown keys kept
//!   for warnings) → validated [`config::Config`], every error reported at once.
//! - [`runtime`]  — the only place that names glommio executors: one pinned executor per
//!   configured core, RLIMIT_MEMLOCK, the data-dir lock, signals and the cross-core mesh
//!   over which work moves to the core that owns a mailbox; `handoff` (logged-in
//!   connections move to their owner core), `auth` (password checks off the executor
//!   thread, per-core login cache), `watch` (mailbox change signals for IDLE), `idle`
//!   (the PM QoS request that keeps idle CPUs quick to wake, `server.cpu_wakeup_us_max`).
//! - [`net`]      — listeners (SO_REUSEPORT, one accept loop per core), connection read
//!   buffers, per-core connection limits; `tls` (rustls: certificates, SNI, reload on
//!   SIGHUP, the self-signed certificate of a fresh install) and `transport` (a connection
//!   plain or TLS, STARTTLS in place, taken apart and rebuilt for a hand-over).
//! - [`smtp`]     — `codec` (sans-IO command parser, dot-unstuffing), `command` (types),
//!   `session` (sans-IO state machine: bytes in, replies and delivery requests out; port 25
//!   and submission, STARTTLS, AUTH, relay control), `server` (drives a session over a
//!   plain or TLS transport).
//! - [`store`]    — the log-structured mailbox store: `record` (length + CRC32C + type
//!   framing), `segment` (versioned segment files), `index` (mailbox → UID → blob),
//!   `commit` (group commit: one write + one fdatasync per batch), `publish` (records of
//!   both logs reach the index in push order), `engine` (the per-core `Store`), `recover` (scan, truncate torn tails), `checkpoint` (index snapshots that
//!   bound recovery), `export` (mboxrd).
//! - [`imap`]     — IMAP4rev2/rev1: `codec` (sans-IO framer: lines + literals, limits),
//!   `command` (AST + parser), `session` (one `handle_<command>` per command), `selected`
//!   (one session's view of a mailbox and how it catches up), `fetch`, `search`, `list`,
//!   `server` (pre-login on the accepting core, then on the user's owner core).
//! - [`pop3`]     — POP3 (RFC 1939, CAPA, SASL PLAIN): sans-IO session + driver, same
//!   hand-over to the owner core after login.
//! - [`mime`]     — MIME structure of stored messages (byte ranges, parsed once, cached per
//!   core): ENVELOPE, BODYSTRUCTURE, sections, SEARCH text matching.
//! - [`outbound`] — delivery to other domains: `client` (sans-IO SMTP client: EHLO/HELO,
//!   STARTTLS, PIPELINING, SIZE, 8BITMIME, SMTPUTF8, DSN, per-recipient outcomes) and
//!   `downgrade` (8-bit bodies re-encoded for a remote without 8BITMIME).
//! - [`sasl`]     — base64 and the PLAIN and LOGIN mechanisms, shared by SMTP, IMAP, POP3.
//! - [`line`]     — CRLF line framing with a hard limit, shared by SMTP and POP3 (sans-IO).
//! - [`accounts`] — users and argon2id password hashes, written atomically.
//! - [`aliases`]  — aliases and domain catch-alls, and how a recipient expands into local
//!   mailboxes and remote addresses (bounded depth, loops refused).
//! - [`time`]     — RFC 5322 dates without a calendar crate.
//! - [`tune`]     — `ringmail tune --check`: memlock, io_uring, somaxconn, descriptors, CPU
//!   governor, idle states, NIC queues and IRQ affinity against the settings, with fixes.
//! - [`metrics`]  — per-core counters and latency histograms (atomics each core writes
//!   alone), rendered as Prometheus text and served at `[metrics] listen` from core 0.
//! - [`dns`]      — the outbound stub resolver: MX route (random among equal preferences,
//!   implicit MX, null MX), A/AAAA, per-core TTL cache, glommio UDP with TCP fallback.
//!
//! # The path of one message
//! 1. A client connects; the kernel hands the connection to one core's listener
//!    (SO_REUSEPORT). `net` accepts it, sets TCP_NODELAY (and runs the TLS handshake on an
//!    implicit-TLS listener), and `smtp::server` starts a session on that core.
//! 2. `smtp::server` reads into the connection buffer; `smtp::session` parses commands
//!    with memchr over that buffer, checks RCPT against `accounts`, and dot-unstuffs DATA
//!    (or collects BDAT chunks) into the transaction's message buffer, with `Return-Path:`
//!    and `Received:` prepended.
//! 3. At end of data the session asks for delivery. `runtime::core` finds each recipient's
//!    owning core (`runtime::placement`). When one core owns every local recipient (the
//!    usual case), the message goes to that core (over the bounded mesh channel if it is
//!    not this one), which appends the blob and, right after it, the index records
//!    (mailbox, UID, blob reference) to its blob log: `store::commit` batches every append
//!    waiting on a core into one write + one fdatasync (group commit), so one flush covers
//!    message and index. Recipients on several cores: this core stores the blob, and the
//!    other owners append their index records to their meta logs at the same time.
//! 4. Recovery reads index records from both logs (`store::publish` made them visible in
//!    push order); it drops, and tombstones durably, any index record whose blob did not
//!    survive a crash, so running two commits concurrently never serves the wrong bytes.
//! 5. Only when the blob and every index record are durable does the session send `250`.
//! 6. An IMAP client logs in on whichever core accepted it; `runtime::handoff` moves the
//!    connection (its descriptor and session state, over the mesh) to the core that owns the
//!    user, so SELECT, FETCH, STORE and IDLE work on local data. The delivery in step 3
//!    published the new UID in that core's index and fired `runtime::watch`, which wakes an
//!    IDLE session on the mailbox with `* n EXISTS`.
//! 7. FETCH finds the UID in the index, reads the blob back (verifying its checksum), parses
//!    its MIME structure once (cached per core) and writes the requested parts; `ringmail
//!    export` and POP3 RETR read the same blob.

pub mod accounts;
pub mod aliases;
pub mod config;
pub mod dns;
pub mod imap;
pub mod line;
pub mod metrics;
pub mod mime;
pub mod net;
pub mod outbound;
pub mod pop3;
pub mod runtime;
pub mod sasl;
pub mod smtp;
pub mod store;
pub mod time;
pub mod tune;
