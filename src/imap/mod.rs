//! IMAP4rev2 (RFC 9051) with IMAP4rev1 (RFC 3501) compatibility.
//!
//! Layers, bottom up:
//! - [`codec`]: the framer (sans-IO): splits input into complete commands, line plus
//!   literals, with limits; asks for `+` continuations; refuses oversized literals before
//!   reading them.
//! - [`command`]: the command AST and its parser (sans-IO); [`sequence`]: sequence sets;
//!   [`utf7`]: modified UTF-7 mailbox names; [`response`]: IMAP syntax writers.
//! - [`flags`], [`selected`]: flag bits ↔ IMAP flags; one session's view of the selected
//!   mailbox and how it catches up with the store (EXISTS/EXPUNGE/VANISHED/FETCH).
//! - [`session`]: one `handle_<command>` per command of the authenticated and selected
//!   states; [`fetch`], [`search`], [`list`] for the bigger ones.
//! - [`server`]: the glommio driver. Pre-login runs on the accepting core; after login the
//!   connection moves to the core that owns the user (`runtime::handoff`), so every mailbox
//!   operation is local to the data.

/// `put!(out, "fmt", args..)`: formats straight into an output `Vec<u8>` (no `String` per
/// reply line, as `format!` would allocate). Writing to a `Vec` cannot fail.
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!($out, $($arg)*);
    }};
}

pub mod codec;
pub mod command;
pub mod fetch;
pub mod flags;
pub mod list;
pub mod response;
pub mod search;
pub mod selected;
pub mod sequence;
pub mod server;
pub mod session;
pub mod utf7;
