//! The SMTP receiver, sans-IO: bytes in, replies and delivery requests out.
//! Command lines are framed by the shared [`crate::line::LineReader`] (a bare
//! LF ends a command line, as in Postfix; the limit is RFC 5321 4.5.3.1.4's 512
//! including CRLF).
//!
//! - [`command`] — command types and the zero-copy argument parser.
//! - [`data`]    — DATA content: end-of-data detection (CRLF.CRLF only) and
//!   dot-unstuffing in one streaming pass, with size and line limits.
//! - [`session`] — the state machine: one handler per command, the named input
//!   states, the transaction handed to the driver for storage; STARTTLS (the
//!   driver does the handshake), AUTH PLAIN/LOGIN (the driver checks the
//!   credentials), submission rules and relay control.
//!
//! Nothing here touches sockets, files or executors; the driver that feeds a
//! [`Session`] from a TCP stream is [`server`], the one module here that does I/O.

pub mod command;
pub mod data;
pub mod server;
pub mod session;

pub use session::{
    Context, DeliveryResult, Directory, Extension, Limits, PeerInfo, Phase, Session, Step,
    Transaction, AUTH_LINE_BYTES_MAX,
};
