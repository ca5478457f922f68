//! ringmail-loadgen: SMTP load against ringmail or any other SMTP server.
//!
//! Module map, in the order a message travels:
//! - [`args`]: command line → validated [`args::SmtpConfig`] (all problems at once).
//! - [`run`]: splits the messages over connections, one pinned worker thread per
//!   core, drives sockets (epoll event loop, or one blocking thread per connection).
//! - [`client`]: sans-IO SMTP client state machine per connection slot
//!   (EHLO, pipelined MAIL/RCPT/DATA, message, QUIT, retries).
//! - [`message`]: the test message (RFC 5322 headers, exact size, nothing to dot-stuff).
//! - [`reply`]: sans-IO SMTP reply parser (multi-line, split reads).
//! - [`stats`] + [`histogram`]: per-thread counters and a mergeable log-linear
//!   latency histogram; [`report`] prints them and writes JSON.
//! - [`poller`]: the epoll wrapper (the crate's only `unsafe`).
//!
//! One message: `Client::next_transaction` queues `MAIL FROM`, `RCPT TO`,
//! `DATA` → the driver writes them in one `write` → replies `250 250 354` →
//! the client queues the message and `.\r\n` → the driver writes it and stamps
//! the time → the final reply → its latency goes into the thread's histogram.

pub mod args;
pub mod client;
pub mod histogram;
pub mod message;
pub mod outcome;
pub mod output;
pub mod poller;
pub mod progress;
pub mod reply;
pub mod report;
pub mod run;
pub mod stats;
