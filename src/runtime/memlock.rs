//! RLIMIT_MEMLOCK: glommio's io_uring rings and registered buffers are locked memory.
//!
//! Measured here (PLATFORM.md): each executor needs about 3 × io_memory + 64 KiB of
//! locked memory, and glommio refuses to start below 512 KiB. We raise the soft limit to the
//! hard limit and, if that is still not enough for the configured executors, refuse to start
//! with a message that names the fixes.

use std::io;

/// Locked bytes one executor needs for a given `io_memory`.
pub fn bytes_per_executor(io_memory_bytes: usize) -> u64 {
    3 * io_memory_bytes as u64 + 64 * 1024
}

#[derive(Debug, thiserror::Error)]
pub enum MemlockError {
    #[error("getrlimit(RLIMIT_MEMLOCK): {0}")]
    Get(io::Error),
    #[error(
        "locked memory too small: {cores} executor(s) with io_memory {io_memory_bytes} bytes need \
         {needed} bytes of RLIMIT_MEMLOCK ({why}), but the hard limit is {hard} bytes. Fix one \
         of: run with a larger limit (systemd `LimitMEMLOCK=infinity`, or `ulimit -l unlimited` \
         as root), grant CAP_IPC_LOCK to the binary (`setcap cap_ipc_lock+ep ringmail`), use \
         fewer cores (`[server] cores`), or lower `[server] io_memory_bytes` (at least 65536)"
    )]
    TooSmall {
        cores: usize,
        io_memory_bytes: usize,
        needed: u64,
        hard: u64,
        why: &'static str,
    },
}

fn get() -> Result<libc::rlimit, MemlockError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return Err(MemlockError::Get(io::Error::last_os_error()));
    }
    Ok(lim)
}

fn has_cap_ipc_lock() -> bool {
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

/// Raises the soft limit to the hard limit and checks it covers `cores` executors.
/// Returns the soft limit now in force (`u64::MAX` for unlimited).
pub fn ensure(cores: usize, io_memory_bytes: usize) -> Result<u64, MemlockError> {
    let mut lim = get()?;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the struct we own. Failure leaves the old limit, checked below.
        unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
        lim = get()?;
    }
    let needed = bytes_per_executor(io_memory_bytes) * cores as u64;
    let soft = lim.rlim_cur;
    if soft == libc::RLIM_INFINITY || soft >= needed.max(512 * 1024) || has_cap_ipc_lock() {
        // With CAP_IPC_LOCK the kernel does not charge io_uring memory against the limit,
        // but glommio still checks the soft limit is at least 512 KiB.
        if soft != libc::RLIM_INFINITY && soft < 512 * 1024 {
            return Err(MemlockError::TooSmall {
                cores,
                io_memory_bytes,
                needed: 512 * 1024,
                hard: lim.rlim_max,
                why: "glommio refuses to start below 512 KiB",
            });
        }
        return Ok(soft);
    }
    Err(MemlockError::TooSmall {
        cores,
        io_memory_bytes,
        needed: needed.max(512 * 1024),
        hard: lim.rlim_max,
        why: "3 × io_memory + 64 KiB per executor, at least 512 KiB",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_formula() {
        assert_eq!(bytes_per_executor(512 * 1024), 3 * 512 * 1024 + 65536);
    }

    #[test]
    fn absurd_request_names_the_fixes_unless_unlimited_or_capable() {
        // 10 000 executors with 64 MiB each cannot fit any real hard limit on this machine.
        match ensure(10_000, 64 << 20) {
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
