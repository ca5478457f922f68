//! Which core owns a mailbox: a stable hash of the normalized address.
//!
//! All of one user's mailboxes live on one core, so moves and copies between them never
//! cross cores. Changing the core count changes owners; the store reads every core's logs at
//! start-up, so that is safe.

/// FNV-1a, 64-bit: stable across releases and platforms (unlike std's SipHash keys).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The owning core of `user` (a normalized address) among `cores` executors.
pub fn owner_core(user: &str, cores: usize) -> usize {
    if cores <= 1 {
        return 0;
    }
    (fnv1a64(user.as_bytes()) % cores as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_values() {
        // Known FNV-1a test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(owner_core("anyone@example.test", 1), 0);
    }

    #[test]
    fn spreads_users_over_cores() {
        let mut counts = [0usize; 2];
        for i in 0..1000 {
            counts[owner_core(&format!("user{i}@example.test"), 2)] += 1;
        }
        assert!(counts[0] > 400 && counts[1] > 400, "{counts:?}");
    }
}
