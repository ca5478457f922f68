//! The per-core answer cache, pure: `now` is passed in. Keyed by (lowercase name, type); holds
//! positive answers, CNAMEs and negative answers (NXDOMAIN, NODATA with the SOA minimum,
//! RFC 2308) for their TTL, clamped to [`TTL_S_MIN`]..=[`TTL_S_MAX`] (negative answers to at
//! most [`NEGATIVE_TTL_S_MAX`]). At most `entries_max` entries: expired entries go first, then
//! the oldest insertion that was not used since it was last passed over (CLOCK, "second
//! chance"), so a hot entry survives a stream of one-off lookups. O(1) amortized per operation.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::message::{Answer, RecordKind};

/// Shortest time an answer is kept (a TTL of 0 still saves the retry loop a query or two).
pub const TTL_S_MIN: u32 = 5;
/// Longest time an answer is kept, whatever its TTL says.
pub const TTL_S_MAX: u32 = 86_400;
/// Longest time a negative answer is kept (RFC 2308 §5 suggests 1–3 hours).
pub const NEGATIVE_TTL_S_MAX: u32 = 3_600;

type Key = (String, RecordKind);

#[derive(Debug)]
struct Entry {
    answer: Answer,
    expires: Instant,
    /// Which insertion of this key the queue item refers to.
    generation: u64,
    /// Used since the clock hand last passed it.
    referenced: bool,
}

#[derive(Debug)]
pub struct Cache {
    entries: HashMap<Key, Entry>,
    /// Insertion order for eviction; items whose generation no longer matches are stale.
    order: VecDeque<(Key, u64)>,
    entries_max: usize,
    generation: u64,
}

impl Cache {
    /// `entries_max == 0` turns caching off.
    pub fn new(entries_max: usize) -> Cache {
        Cache {
            entries: HashMap::with_capacity(entries_max.min(1024)),
            order: VecDeque::new(),
            entries_max,
            generation: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cached answer for `name` (lowercase, no trailing dot) if it has not expired.
    pub fn get(&mut self, name: &str, kind: RecordKind, now: Instant) -> Option<Answer> {
        let key = (name.to_string(), kind);
        let entry = self.entries.get_mut(&key)?;
        if now >= entry.expires {
            self.entries.remove(&key);
            return None;
        }
        entry.referenced = true;
        Some(entry.answer.clone())
    }

    /// Stores `answer` for `ttl_s` seconds (clamped); replaces any previous answer.
    pub fn insert(
        &mut self,
        name: &str,
        kind: RecordKind,
        answer: Answer,
        ttl_s: u32,
        now: Instant,
    ) {
        if self.entries_max == 0 {
            return;
        }
        let max = match answer {
            Answer::NxDomain | Answer::NoData => NEGATIVE_TTL_S_MAX,
            Answer::Records(_) | Answer::Cname(_) => TTL_S_MAX,
        };
        let ttl_s = ttl_s.clamp(TTL_S_MIN, max);
        let key = (name.to_string(), kind);
        self.generation += 1;
        let generation = self.generation;
        let replaced = self
            .entries
            .insert(
                key.clone(),
                Entry {
                    answer,
                    expires: now + Duration::from_secs(u64::from(ttl_s)),
                    generation,
                    referenced: false,
                },
            )
            .is_some();
        self.order.push_back((key, generation));
        if !replaced {
            while self.entries.len() > self.entries_max && self.evict_one(now) {}
        }
        // Re-inserted keys leave stale queue items behind: keep the queue proportional.
        if self.order.len() > 2 * self.entries_max.max(16) {
            let entries = &self.entries;
            self.order
                .retain(|(k, g)| entries.get(k).is_some_and(|e| e.generation == *g));
        }
    }

    /// Removes one entry: the first expired or unreferenced one from the front of the queue.
    /// False when the queue ran dry (it cannot while entries exceed the bound; a safety stop).
    fn evict_one(&mut self, now: Instant) -> bool {
        // Each live item is passed over at most once with its bit set, so two laps end it.
        let mut budget = 2 * self.order.len() + 1;
        while let Some((key, generation)) = self.order.pop_front() {
            budget -= 1;
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            if entry.generation != generation {
                continue;
            }
            if entry.referenced && now < entry.expires && budget > 0 {
                entry.referenced = false;
                self.order.push_back((key, generation));
                continue;
            }
            self.entries.remove(&key);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::message::Rdata;

    fn addr(last: u8) -> Answer {
        Answer::Records(vec![Rdata::A([192, 0, 2, last].into())])
    }

    #[test]
    fn answers_live_for_their_ttl() {
        let t0 = Instant::now();
        let mut c = Cache::new(10);
        c.insert("a.example", RecordKind::A, addr(1), 60, t0);
        assert_eq!(c.get("a.example", RecordKind::A, t0), Some(addr(1)));
        assert_eq!(
            c.get("a.example", RecordKind::A, t0 + Duration::from_secs(59)),
            Some(addr(1))
        );
        // Another type of the same name is another entry.
        assert_eq!(c.get("a.example", RecordKind::Aaaa, t0), None);
        assert_eq!(
            c.get("a.example", RecordKind::A, t0 + Duration::from_secs(60)),
            None
        );
        assert!(c.is_empty(), "an expired entry is dropped when seen");
    }

    #[test]
    fn ttls_are_clamped() {
        let t0 = Instant::now();
        let mut c = Cache::new(10);
        c.insert("zero.example", RecordKind::A, addr(1), 0, t0);
        let just_before_min = t0 + Duration::from_secs(u64::from(TTL_S_MIN) - 1);
        assert!(c
            .get("zero.example", RecordKind::A, just_before_min)
            .is_some());
        assert!(c
            .get(
                "zero.example",
                RecordKind::A,
                t0 + Duration::from_secs(u64::from(TTL_S_MIN))
            )
            .is_none());

        c.insert("big.example", RecordKind::A, addr(2), u32::MAX, t0);
        let at_max = t0 + Duration::from_secs(u64::from(TTL_S_MAX));
        assert!(c
            .get(
                "big.example",
                RecordKind::A,
                at_max - Duration::from_secs(1)
            )
            .is_some());
        assert!(c.get("big.example", RecordKind::A, at_max).is_none());
    }

    #[test]
    fn negative_answers_are_cached_with_their_own_cap() {
        let t0 = Instant::now();
        let mut c = Cache::new(10);
        c.insert("gone.example", RecordKind::Mx, Answer::NxDomain, 300, t0);
        c.insert("host.example", RecordKind::Mx, Answer::NoData, 86_400, t0);
        assert_eq!(
            c.get(
                "gone.example",
                RecordKind::Mx,
                t0 + Duration::from_secs(299)
            ),
            Some(Answer::NxDomain)
        );
        assert_eq!(
            c.get(
                "gone.example",
                RecordKind::Mx,
                t0 + Duration::from_secs(300)
            ),
            None
        );
        let cap = Duration::from_secs(u64::from(NEGATIVE_TTL_S_MAX));
        assert_eq!(
            c.get(
                "host.example",
                RecordKind::Mx,
                t0 + cap - Duration::from_secs(1)
            ),
            Some(Answer::NoData)
        );
        assert_eq!(c.get("host.example", RecordKind::Mx, t0 + cap), None);
    }

    #[test]
    fn size_is_bounded_and_the_oldest_unused_goes_first() {
        let t0 = Instant::now();
        let mut c = Cache::new(3);
        c.insert("one", RecordKind::A, addr(1), 600, t0);
        c.insert("two", RecordKind::A, addr(2), 600, t0);
        c.insert("three", RecordKind::A, addr(3), 600, t0);
        // "one" is used, so it gets a second chance; "two" is the oldest unused.
        assert!(c.get("one", RecordKind::A, t0).is_some());
        c.insert("four", RecordKind::A, addr(4), 600, t0);
        assert_eq!(c.len(), 3);
        assert!(c.get("two", RecordKind::A, t0).is_none());
        for k in ["one", "three", "four"] {
            assert!(c.get(k, RecordKind::A, t0).is_some(), "{k}");
        }
        // Many one-off names never grow the cache past its bound.
        for i in 0..1000 {
            c.insert(&format!("n{i}"), RecordKind::A, addr(5), 600, t0);
            assert!(c.len() <= 3);
            assert!(c.order.len() <= 2 * 16 + 1);
        }
    }

    #[test]
    fn expired_entries_are_evicted_before_live_ones() {
        let t0 = Instant::now();
        let mut c = Cache::new(2);
        c.insert("old", RecordKind::A, addr(1), 600, t0);
        c.insert("short", RecordKind::A, addr(2), 10, t0);
        let later = t0 + Duration::from_secs(20);
        assert!(c.get("old", RecordKind::A, later).is_some());
        c.insert("new", RecordKind::A, addr(3), 600, later);
        assert!(c.get("old", RecordKind::A, later).is_some());
        assert!(c.get("new", RecordKind::A, later).is_some());
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn reinserting_a_key_replaces_it_and_keeps_the_queue_bounded() {
        let t0 = Instant::now();
        let mut c = Cache::new(4);
        for i in 0..500u32 {
            c.insert("same", RecordKind::Mx, addr((i % 250) as u8), 600, t0);
        }
        assert_eq!(c.len(), 1);
        assert_eq!(c.get("same", RecordKind::Mx, t0), Some(addr(249)));
        assert!(c.order.len() <= 2 * 16 + 1, "{}", c.order.len());
        // The stale queue items do not evict the live entry.
        for k in ["b", "c", "d"] {
            c.insert(k, RecordKind::A, addr(9), 600, t0);
        }
        assert_eq!(c.len(), 4);
        assert!(c.get("same", RecordKind::Mx, t0).is_some());
    }

    #[test]
    fn zero_entries_disables_the_cache() {
        let t0 = Instant::now();
        let mut c = Cache::new(0);
        c.insert("a", RecordKind::A, addr(1), 600, t0);
        assert!(c.get("a", RecordKind::A, t0).is_none());
        assert!(c.is_empty());
    }
}
