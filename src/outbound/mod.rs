//! Outbound delivery (issue 5): mail queued for remote recipients leaves through here.
//!
//! - [`client`]    — the sans-IO SMTP client: one connection, one or several transactions
//!   (EHLO/HELO, STARTTLS, SIZE, 8BITMIME, SMTPUTF8, DSN, PIPELINING), per-recipient
//!   outcomes for retry and bounce decisions, RFC 5321 §4.5.3.2 timeouts.
//! - [`downgrade`] — 8-bit bodies re-encoded as quoted-printable or base64 for a remote
//!   without 8BITMIME (RFC 6152).
//! - [`dsn`]       — RFC 3464 delivery status notifications (bounces, delay and success
//!   notices).
//! - [`schedule`]  — pure decisions: what is due, retry times with jitter, expiry, delay
//!   notices.
//! - [`sender`]    — the per-core queue runner that ties them together over glommio.
//! - [`admin`]     — what `ringmail queue` prints (JSON).

pub mod admin;
pub mod client;
pub mod downgrade;
pub mod dsn;
pub mod schedule;
pub mod sender;
