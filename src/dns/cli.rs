//! `ringmail dns DOMAIN`: the MX route of a domain and each host's addresses, exactly as the
//! sender would use them, on one small glommio executor of its own (not pinned, small ring
//! memory). One line per host, `pref host addr,addr`, or `pref host permanent: ...` /
//! `pref host temporary: ...` when that host has no address; a route error is a single
//! `permanent: ...` / `temporary: ...` line.
//!
//! Exit status: 0 when some host has an address, 2 when every failure is permanent (the sender
//! would bounce), 1 when something is temporary (the sender would retry).

use std::fmt::Write as _;

use glommio::{LocalExecutorBuilder, Placement};

use super::{MxHost, Resolver, RouteError};
use crate::config::DnsConfig;

/// glommio ring memory of the command's executor (it needs at least 3× this + 64 KiB locked).
pub const IO_MEMORY_BYTES: usize = 64 * 1024;

/// What the command prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub text: String,
    pub exit_code: u8,
}

pub const EXIT_OK: u8 = 0;
pub const EXIT_TEMPORARY: u8 = 1;
pub const EXIT_PERMANENT: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Setup(#[from] super::DnsError),
    #[error(transparent)]
    Memlock(#[from] crate::runtime::memlock::MemlockError),
    #[error("cannot start the DNS executor: {0}")]
    Executor(String),
}

/// Resolves `domain` and reports the route.
pub fn run(config: &DnsConfig, domain: &str) -> Result<Report, CliError> {
    let resolver = Resolver::new(config)?;
    crate::runtime::memlock::ensure(1, IO_MEMORY_BYTES)?;
    let domain = domain.to_string();
    // Built before the executor (reading resolv.conf can fail) and moved in: it is `Send`.
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name("ringmail-dns")
        .io_memory(IO_MEMORY_BYTES)
        .spawn(move || async move { report(&resolver, &domain).await })
        .map_err(|e| CliError::Executor(e.to_string()))?;
    handle.join().map_err(|e| CliError::Executor(e.to_string()))
}

/// The route and addresses of `domain`, formatted.
pub async fn report(resolver: &Resolver, domain: &str) -> Report {
    let route = match resolver.mx_route(domain).await {
        Ok(route) => route,
        Err(e) => {
            return Report {
                text: format!("{}\n", error_text(&e)),
                exit_code: exit_code(&e),
            }
        }
    };
    let mut text = String::new();
    let mut exit = EXIT_PERMANENT;
    for MxHost { preference, host } in &route {
        match resolver.addresses(host).await {
            Ok(addrs) => {
                let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                let _ = writeln!(text, "{preference} {host} {}", list.join(","));
                exit = EXIT_OK;
            }
            Err(e) => {
                let _ = writeln!(text, "{preference} {host} {}", error_text(&e));
                if exit == EXIT_PERMANENT && !e.is_permanent() {
                    exit = EXIT_TEMPORARY;
                }
            }
        }
    }
    Report {
        text,
        exit_code: exit,
    }
}

fn error_text(e: &RouteError) -> String {
    let kind = if e.is_permanent() {
        "permanent"
    } else {
        "temporary"
    };
    format!("{kind}: {e}")
}

fn exit_code(e: &RouteError) -> u8 {
    if e.is_permanent() {
        EXIT_PERMANENT
    } else {
        EXIT_TEMPORARY
    }
}
