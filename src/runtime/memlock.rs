//! RLIMIT_MEMLOCK: glommio's io_uring rings and registered buffers are locked memory.
//!
//! Measured here (PLATFORM.md): each executor needs about 3 × io_memory + 64 KiB of
//! locked memory at the default ring depth (128), and glommio refuses to start below 512 KiB.
//! The 64 KiB are the executor's three io_uring rings; they grow with `ring_depth`
//! ([`ring_bytes`]). We raise the soft limit to the hard limit and, if that is still not enough
//! for the configured executors (each with its own `[cores]` / `[[cores.override]]` values),
//! refuse to start with a message that names the fixes.

use std::io;

use crate::config::ExecutorSettings;

/// glommio refuses to start with a soft RLIMIT_MEMLOCK below this.
pub const GLOMMIO_MEMLOCK_BYTES_MIN: u64 = 512 * 1024;
const PAGE_BYTES: u64 = 4096;

/// Locked bytes of one executor's three io_uring rings (main, latency, poll) of `ring_depth`
/// entries: per ring, 64-byte submission entries, twice as many 16-byte completion entries,
/// a 4-byte index per entry and a page of ring headers, rounded up to pages; plus one page.
/// At the default depth (128) this is the measured 64 KiB.
pub fn ring_bytes(ring_depth: usize) -> u64 {
    let per_ring = ring_depth as u64 * (64 + 2 * 16 + 4) + PAGE_BYTES;
    3 * per_ring.div_ceil(PAGE_BYTES) * PAGE_BYTES + PAGE_BYTES
}

/// Locked bytes one executor needs.
pub fn bytes_per_executor(e: &ExecutorSettings) -> u64 {
    3 * e.io_memory_bytes as u64 + ring_bytes(e.ring_depth)
}

/// Locked bytes every executor together needs (at least glommio's minimum).
pub fn bytes_needed(executors: &[ExecutorSettings]) -> u64 {
    executors
        .iter()
        .map(bytes_per_executor)
        .sum::<u64>()
        .max(GLOMMIO_MEMLOCK_BYTES_MIN)
}

#[derive(Debug, thiserror::Error)]
pub enum MemlockError {
    #[error("getrlimit(RLIMIT_MEMLOCK): {0}")]
    Get(io::Error),
    #[error(
        "locked memory too small: {cores} executor(s) (io_memory {io_memory_bytes} bytes, ring \
         depth {ring_depth} on the first) need {needed} bytes of RLIMIT_MEMLOCK ({why}), but the \
         hard limit is {hard} bytes. Fix one of: run with a larger limit (systemd \
         `LimitMEMLOCK=infinity`, or `ulimit -l unlimited` as root), grant CAP_IPC_LOCK to the \
         binary (`setcap cap_ipc_lock+ep ringmail`), use fewer cores (`[cores] placement`), or \
         lower `[cores] io_memory_bytes` (at least 65536) or `ring_depth`"
    )]
    TooSmall {
        cores: usize,
        io_memory_bytes: usize,
        ring_depth: usize,
        needed: u64,
        hard: u64,
        why: &'static str,
    },
}

/// The resource limits ringmail reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// RLIMIT_MEMLOCK.
    Memlock,
    /// RLIMIT_NOFILE.
    Nofile,
}

/// getrlimit(2): the soft and hard limit of `resource` (`u64::MAX`: unlimited).
pub fn getrlimit(resource: Resource) -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let rc = unsafe {
        match resource {
            Resource::Memlock => libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim),
            Resource::Nofile => libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim),
        }
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// The soft and hard RLIMIT_MEMLOCK (`u64::MAX`: unlimited).
pub fn limits() -> Result<(u64, u64), MemlockError> {
    getrlimit(Resource::Memlock).map_err(MemlockError::Get)
}

/// Whether a locked-memory limit lets the executors start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The limit covers what the executors need.
    Enough,
    /// The limit is short, but CAP_IPC_LOCK exempts io_uring memory and the limit meets
    /// glommio's own floor.
    CapIpcLock,
    /// Too small: `needed` bytes are required, for the reason `why`.
    TooSmall { needed: u64, why: &'static str },
}

/// The verdict on a soft RLIMIT_MEMLOCK of `limit` bytes (`u64::MAX`: unlimited) for
/// executors that need `needed` bytes (from [`bytes_needed`]). Pure: `ensure_executors`
/// decides by it, `ringmail tune` reports it.
pub fn verdict(limit: u64, needed: u64, cap_ipc_lock: bool) -> Verdict {
    if limit >= needed || cap_ipc_lock {
        // With CAP_IPC_LOCK the kernel does not charge io_uring memory against the limit,
        // but glommio still checks the soft limit is at least 512 KiB.
        if limit < GLOMMIO_MEMLOCK_BYTES_MIN {
            Verdict::TooSmall {
                needed: GLOMMIO_MEMLOCK_BYTES_MIN,
                why: "glommio refuses to start below 512 KiB",
            }
        } else if limit >= needed {
            Verdict::Enough
        } else {
            Verdict::CapIpcLock
        }
    } else {
        Verdict::TooSmall {
            needed,
            why: "3 × io_memory + the rings (64 KiB at depth 128) per executor, at least 512 KiB",
        }
    }
}

/// Whether this process may lock memory beyond the limit (the kernel then does not charge
/// io_uring memory against RLIMIT_MEMLOCK).
pub fn has_cap_ipc_lock() -> bool {
    // CapEff in /proc/self/status; bit 14 is CAP_IPC_LOCK.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 14) != 0)
}

/// [`ensure_executors`] for `cores` executors of the default ring depth with `io_memory_bytes`
/// each (the DNS command's single executor).
pub fn ensure(cores: usize, io_memory_bytes: usize) -> Result<u64, MemlockError> {
    let e = ExecutorSettings {
        io_memory_bytes,
        ..ExecutorSettings::DEFAULT
    };
    ensure_executors(&vec![e; cores])
}

/// Raises the soft limit to the hard limit and checks it covers `executors`.
/// Returns the soft limit now in force (`u64::MAX` for unlimited).
pub fn ensure_executors(executors: &[ExecutorSettings]) -> Result<u64, MemlockError> {
    let cores = executors.len();
    let first = executors
        .first()
        .copied()
        .unwrap_or(ExecutorSettings::DEFAULT);
    let (io_memory_bytes, ring_depth) = (first.io_memory_bytes, first.ring_depth);
    let (mut soft, mut hard) = limits()?;
    if soft < hard {
        let lim = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads the struct we own. Failure leaves the old limit, checked below.
        unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
        (soft, hard) = limits()?;
    }
    let needed = bytes_needed(executors);
    // CAP_IPC_LOCK is looked up only when the limit alone is short.
    let cap_ipc_lock = soft < needed && has_cap_ipc_lock();
    match verdict(soft, needed, cap_ipc_lock) {
        Verdict::Enough | Verdict::CapIpcLock => Ok(soft),
        Verdict::TooSmall { needed, why } => Err(MemlockError::TooSmall {
            cores,
            io_memory_bytes,
            ring_depth,
            needed,
            hard,
            why,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(io_memory_bytes: usize, ring_depth: usize) -> ExecutorSettings {
        ExecutorSettings {
            io_memory_bytes,
            ring_depth,
            ..ExecutorSettings::DEFAULT
        }
    }

    #[test]
    fn budget_formula() {
        // The measured figure at the default depth.
        assert_eq!(ring_bytes(128), 65536);
        assert_eq!(
            bytes_per_executor(&settings(512 * 1024, 128)),
            3 * 512 * 1024 + 65536
        );
        // Deeper rings cost more, page by page.
        assert!(ring_bytes(1024) > ring_bytes(128));
        assert_eq!(ring_bytes(1024) % PAGE_BYTES, 0);
        // Every executor counts with its own values; the total has glommio's floor.
        let two = [settings(512 * 1024, 128), settings(1 << 20, 4096)];
        assert_eq!(
            bytes_needed(&two),
            3 * (512 * 1024 + (1 << 20)) + ring_bytes(128) + ring_bytes(4096)
        );
        assert_eq!(
            bytes_needed(&[settings(64 * 1024, 16)]),
            GLOMMIO_MEMLOCK_BYTES_MIN
        );
    }

    #[test]
    fn verdict_needs_the_budget_or_the_capability_and_the_floor() {
        let mib = 1 << 20;
        assert_eq!(verdict(8 * mib, 2 * mib, false), Verdict::Enough);
        assert_eq!(verdict(u64::MAX, 100 * mib, false), Verdict::Enough);
        assert_eq!(verdict(mib, 100 * mib, true), Verdict::CapIpcLock);
        assert!(matches!(
            verdict(mib, 100 * mib, false),
            Verdict::TooSmall { needed, .. } if needed == 100 * mib
        ));
        assert!(matches!(
            verdict(64, 100 * mib, true),
            Verdict::TooSmall {
                needed: GLOMMIO_MEMLOCK_BYTES_MIN,
                ..
            }
        ));
    }

    #[test]
    fn absurd_request_names_the_fixes_unless_unlimited_or_capable() {
        // 10 000 executors with 64 MiB each cannot fit any real hard limit on this machine.
        match ensure_executors(&vec![settings(64 << 20, 128); 10_000]) {
            Err(e) => {
                let msg = e.to_string();
                for fix in ["LimitMEMLOCK", "CAP_IPC_LOCK", "io_memory_bytes", "cores"] {
                    assert!(msg.contains(fix), "{fix} missing in {msg}");
                }
            }
            // Only possible with an unlimited hard limit or CAP_IPC_LOCK.
            Ok(soft) => assert!(soft == libc::RLIM_INFINITY || has_cap_ipc_lock()),
        }
    }
}
