//! Keeping idle CPUs quick to wake (`[server] cpu_wakeup_us_max`).
//!
//! Durable ingest at low concurrency is a chain of short waits: a core writes a batch and
//! sleeps in fdatasync, the disk's interrupt wakes it, it answers, the client's next message
//! wakes it again. Each time a CPU has nothing to run, the cpuidle governor may put it in a
//! state that takes long to leave (on a VM, a halt that exits to the hypervisor), and that
//! exit is paid on every wake-up. A PM QoS request caps it: while `/dev/cpu_dma_latency` is
//! open with a value written (µs, as a native-endian `i32`), no CPU enters an idle state whose
//! exit latency is larger; 0 leaves only polling. The kernel drops the request when the
//! descriptor closes, also when the process dies. This is what tuned's `latency-performance`
//! profile does (`force_latency`). The cost: idle CPUs spin (power, and a VM's host sees them
//! busy), so it is for dedicated hosts.

use std::fs::File;
use std::io::{self, Read, Write};

/// The PM QoS device (root only by default).
pub const QOS_DEVICE: &str = "/dev/cpu_dma_latency";

#[derive(Debug, thiserror::Error)]
pub enum IdleError {
    #[error("cannot hold the CPU wake-up latency at {us} µs: {QOS_DEVICE}: {source}")]
    Hold { us: u32, source: io::Error },
}

/// A held request; dropping it releases it.
#[derive(Debug)]
pub struct WakeupLatency {
    _device: File,
    us: u32,
}

impl WakeupLatency {
    pub fn us(&self) -> u32 {
        self.us
    }
}

/// Asks that no CPU sleep in an idle state slower than `us` µs to leave, while the returned
/// value lives.
pub fn hold(us: u32) -> Result<WakeupLatency, IdleError> {
    let value = i32::try_from(us).map_err(|_| IdleError::Hold {
        us,
        source: io::Error::new(io::ErrorKind::InvalidInput, "larger than i32::MAX"),
    })?;
    let mut device = std::fs::OpenOptions::new()
        .write(true)
        .open(QOS_DEVICE)
        .map_err(|source| IdleError::Hold { us, source })?;
    device
        .write_all(&value.to_ne_bytes())
        .map_err(|source| IdleError::Hold { us, source })?;
    Ok(WakeupLatency {
        _device: device,
        us,
    })
}

/// Whether this process may hold a request (opens the device for writing and closes it:
/// a request at the kernel's default, which asks for nothing, for that instant).
pub fn may_hold() -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .open(QOS_DEVICE)
        .is_ok()
}

/// The latency every CPU is held to now (the smallest request of all processes), when the
/// device can be read.
pub fn current_us() -> Option<i32> {
    let mut value = [0u8; 4];
    File::open(QOS_DEVICE)
        .and_then(|mut f| f.read_exact(&mut value))
        .ok()?;
    Some(i32::from_ne_bytes(value))
}
