//! The per-core cache of message bodies read for IMAP and POP3.
//!
//! A blob never changes once written, so a verified copy can be shared: every session on the
//! core that FETCHes the same message (a mailing-list post opened by many users, a client that
//! fetches ENVELOPE, then BODYSTRUCTURE, then BODY[]) uses one `Rc<[u8]>` instead of reading
//! and copying the record again. The cache also remembers which blobs passed their CRC check,
//! so a partial fetch (`BODY[]<0.2048>`) of a verified blob reads only its range.
//!
//! Eviction is FIFO by insertion, bounded in bytes and in entries.

use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;

use super::BlobRef;

/// A blob's identity: its position (never reused for different bytes) and its length (so a
/// reference that disagrees with the record about the length never hits the cache).
pub type BlobKey = (u16, u32, u64, u32);

pub fn key(r: BlobRef) -> BlobKey {
    (r.core, r.segment, r.offset, r.len)
}

/// Bodies larger than this are not kept (they would evict everything else).
pub const CACHED_BLOB_BYTES_MAX: usize = 4 << 20;
/// Bodies kept at once (a bound on the maps' overhead however small the bodies are).
pub const CACHED_BLOBS_MAX: usize = 16_384;
/// Blobs remembered as verified (8-byte keys plus hash overhead: ~3 MB at the limit).
pub const VERIFIED_ENTRIES_MAX: usize = 100_000;

pub struct BlobCache {
    bytes_max: usize,
    bytes: usize,
    blobs: HashMap<BlobKey, Rc<[u8]>>,
    order: VecDeque<BlobKey>,
    verified: HashSet<BlobKey>,
}

impl BlobCache {
    pub fn new(bytes_max: usize) -> BlobCache {
        BlobCache {
            bytes_max,
            bytes: 0,
            blobs: HashMap::new(),
            order: VecDeque::new(),
            verified: HashSet::new(),
        }
    }

    pub fn get(&self, k: &BlobKey) -> Option<Rc<[u8]>> {
        self.blobs.get(k).cloned()
    }

    pub fn is_verified(&self, k: &BlobKey) -> bool {
        self.verified.contains(k)
    }

    /// Records a blob that passed its CRC check, keeping its bytes if they fit.
    pub fn insert(&mut self, k: BlobKey, bytes: Rc<[u8]>) {
        if self.verified.len() >= VERIFIED_ENTRIES_MAX {
            self.verified.clear();
        }
        self.verified.insert(k);
        if bytes.len() > CACHED_BLOB_BYTES_MAX || bytes.len() > self.bytes_max {
            return;
        }
        if self.blobs.contains_key(&k) {
            return;
        }
        while self.bytes + bytes.len() > self.bytes_max || self.blobs.len() >= CACHED_BLOBS_MAX {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(b) = self.blobs.remove(&old) {
                self.bytes -= b.len();
            }
        }
        self.bytes += bytes.len();
        self.order.push_back(k);
        self.blobs.insert(k, bytes);
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: usize, fill: u8) -> Rc<[u8]> {
        Rc::from(vec![fill; n])
    }

    #[test]
    fn evicts_oldest_first_within_the_byte_bound() {
        let mut c = BlobCache::new(100);
        c.insert((0, 1, 0, 40), blob(40, 1));
        c.insert((0, 1, 40, 40), blob(40, 2));
        c.insert((0, 1, 80, 40), blob(40, 3));
        assert!(c.bytes() <= 100);
        assert!(c.get(&(0, 1, 0, 40)).is_none(), "oldest evicted");
        assert_eq!(c.get(&(0, 1, 80, 40)).unwrap()[0], 3);
        // Evicted bytes are still known to be verified.
        assert!(c.is_verified(&(0, 1, 0, 40)));
    }

    #[test]
    fn empty_blobs_are_bounded_by_count() {
        let mut c = BlobCache::new(100);
        for i in 0..CACHED_BLOBS_MAX as u64 + 10 {
            c.insert((0, 1, i, 0), blob(0, 0));
        }
        assert_eq!(c.len(), CACHED_BLOBS_MAX);
        assert!(c.get(&(0, 1, 0, 0)).is_none(), "oldest evicted");
    }

    #[test]
    fn oversized_blobs_are_verified_but_not_kept() {
        let mut c = BlobCache::new(1 << 30);
        c.insert((1, 2, 3, 9), blob(CACHED_BLOB_BYTES_MAX + 1, 0));
        assert!(c.is_empty());
        assert!(c.is_verified(&(1, 2, 3, 9)));
    }

    #[test]
    fn the_same_blob_is_counted_once() {
        let mut c = BlobCache::new(100);
        c.insert((0, 1, 0, 40), blob(30, 1));
        c.insert((0, 1, 0, 40), blob(30, 1));
        assert_eq!(c.bytes(), 30);
        assert_eq!(c.len(), 1);
    }
}
