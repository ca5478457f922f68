//! The POP3 server (RFC 1939, RFC 2449 CAPA and response codes, RFC 5034 SASL PLAIN),
//! serving each user's INBOX from the store.
//!
//! - [`command`] — sans-IO: the zero-copy command parser (lines framed by
//!   [`crate::line::LineReader`], SASL PLAIN decoded by `crate::sasl`).
//! - [`session`] — sans-IO: the state machine (AUTHORIZATION → TRANSACTION → UPDATE), one
//!   handler per command, the INBOX snapshot with DELE marks, RETR/TOP byte-stuffing, and
//!   the requests the driver performs (check a login, open the maildrop, read a message,
//!   commit the deletions).
//! - [`server`]  — the driver, the one module here that does I/O: [`server::serve`] runs the
//!   AUTHORIZATION dialogue on the accepting core and hands the connection to the user's
//!   owner core, where [`server::serve_user`] takes the maildrop lock, snapshots INBOX and
//!   serves TRANSACTION and UPDATE from the local store.

pub mod command;
pub mod server;
pub mod session;

pub use session::{
    CommitOutcome, Credentials, Limits, Maildrop, MessageInfo, ReadOutcome, Resume, Session, Step,
};
