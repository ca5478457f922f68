//! ringmail-loadgen: SMTP, IMAP and POP3 load against ringmail or any other mail server.
//!
//! Module map, in the order a message travels:
//! - [`args`]: command line → validated [`args::SmtpConfig`] (all problems at once).
//! - [`run`]: splits the messages over connections, one pinned worker thread per
//!   core, drives sockets (epoll event loop, or one blocking thread per connection).
//! - [`client`]: sans-IO SMTP client state machine per connection slot
//!   (EHLO, pipelined MAIL/RCPT/DATA, message, QUIT, retries).
//! - [`message`]: the test message (RFC 5322 headers, exact size, nothing to dot-stuff)
//!   and the size distributions (`--size N`, `MIN-MAX`, `--size-dist`).
//! - [`corpus`]: real `.eml` files (`--eml-dir`), CRLF-normalised and dot-stuffed once.
//! - [`rate`]: the open-loop schedule (`--rate`): due times, lateness.
//! - [`tls`] + [`transport`]: the rustls client configuration (STARTTLS, implicit
//!   TLS, `--tls-ca`) and a connection that is plain TCP or TLS over the same socket.
//! - [`reply`]: sans-IO SMTP reply parser (multi-line, split reads).
//! - [`outcome`]: the common result of any run (per-operation counts and latency,
//!   throughput timeline); [`progress`]: the live progress line; [`output`]: the
//!   `--json/--html/--label/--quiet` options every command takes.
//! - [`stats`] + [`histogram`]: per-thread counters and a mergeable log-linear
//!   latency histogram (its non-empty buckets give the latency CDF).
//! - [`report`]: an `Outcome` as text (`human`) and as JSON encoded with
//!   simd-json (`json`), read back by `parse_json` into a `RunSummary`.
//! - [`html`]: one self-contained HTML report (inline CSS + SVG plots:
//!   throughput over time, latency CDF per operation) of one run or several.
//! - [`compare`]: `compare a.json b.json ...`: runs side by side, ratios to the
//!   first, optional HTML.
//! - [`imap`]: `imap` load (LOGIN, SELECT, weighted FETCH/STORE/SEARCH/APPEND/
//!   IDLE/NOOP mix, persistent or churning sessions): args, sans-IO response
//!   reader (literals skipped by count) and client, `run_imap`.
//! - [`pop3`]: `pop3` load (USER/PASS, STAT, RETR, optional DELE, QUIT): args,
//!   sans-IO reply reader (multi-line, dot-stuffing) and client, `run_pop3`.
//! - [`mailrun`]: what IMAP and POP3 share: `--user` lists, backoff, the
//!   per-thread recorder and the epoll driver with timers.
//! - [`sink`]: `sink`, a durable SMTP sink (write + fdatasync per group of messages
//!   before each 250): the reference for durable ingest on a given disk.
//! - [`poller`]: the epoll wrapper (the crate's only `unsafe`).
//!
//! One message: `Client::next_transaction` queues `MAIL FROM`, `RCPT TO`,
//! `DATA` → the driver writes them in one `write` → replies `250 250 354` →
//! the client queues the message and `.\r\n` → the driver writes it and stamps
//! the time → the final reply → its latency goes into the thread's histogram.

pub mod args;
pub mod client;
pub mod compare;
pub mod corpus;
pub mod histogram;
pub mod html;
pub mod imap;
pub mod mailrun;
pub mod message;
pub mod outcome;
pub mod output;
pub mod poller;
pub mod pop3;
pub mod progress;
pub mod rate;
pub mod reply;
pub mod report;
pub mod run;
pub mod sink;
pub mod stats;
pub mod tls;
pub mod transport;
