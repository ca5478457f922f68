//! Latency histogram: HDR-style log-linear buckets over microseconds.
//!
//! Values below 256 µs each have their own bucket (exact). Above that, every
//! power-of-two range `[2^k, 2^(k+1))` is split into 128 equal sub-buckets, so a
//! bucket is never wider than 1/128 of its lower bound: a reported percentile is
//! within 0.4 % of the true sample (midpoint of its bucket) and always within 1 %.
//! Resolution holds up to [`TRACKABLE_US_MAX`] (~67 s); larger samples land in
//! the top bucket while `max` stays exact. Each worker thread owns one histogram
//! and the runner merges them at the end (no sharing on the hot path).

/// log2 of the number of sub-buckets per power of two.
const SUB_BUCKET_BITS: u32 = 7;
/// Sub-buckets per power of two (128: bucket width ≤ lower bound / 128).
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;
/// Samples are resolved up to `2^VALUE_BITS_MAX - 1` µs.
const VALUE_BITS_MAX: u32 = 26;
/// Largest sample (µs) that keeps the ≤ 1 % error bound: 67.1 s, above the 60 s target.
pub const TRACKABLE_US_MAX: u64 = (1 << VALUE_BITS_MAX) - 1;
/// Exact buckets for 0..128, then 128 buckets per octave from 2^7 to 2^25.
const BUCKET_COUNT: usize = ((VALUE_BITS_MAX - SUB_BUCKET_BITS + 1) as u64 * SUB_BUCKETS) as usize;

const _: () = assert!(BUCKET_COUNT == 2560);
const _: () = assert!(TRACKABLE_US_MAX >= 60_000_000);

/// Quantiles are given in parts per million so rank arithmetic stays exact.
pub const PPM: u64 = 1_000_000;

/// Mergeable latency histogram in microseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Per-bucket counts: empty (no allocation) until the first sample, then
    /// [`BUCKET_COUNT`] long. Readers treat missing buckets as zeros, and a
    /// histogram holds buckets exactly when it holds samples, so the derived
    /// equality still compares contents.
    counts: Vec<u64>,
    count: u64,
    sum_us: u128,
    min_us: u64,
    max_us: u64,
}

/// The summary printed and written to JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Percentiles {
    pub count: u64,
    pub min_us: u64,
    pub mean_us: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p99_9_us: u64,
    pub max_us: u64,
}

/// One non-empty bucket: `count` samples with values in `low_us..=high_us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub low_us: u64,
    pub high_us: u64,
    pub count: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> Self {
        Self {
            counts: Vec::new(),
            count: 0,
            sum_us: 0,
            min_us: u64::MAX,
            max_us: 0,
        }
    }

    /// Records one sample.
    pub fn record(&mut self, value_us: u64) {
        let index = bucket_index(value_us.min(TRACKABLE_US_MAX));
        self.allocate();
        self.counts[index] += 1;
        self.count += 1;
        self.sum_us += u128::from(value_us);
        self.min_us = self.min_us.min(value_us);
        self.max_us = self.max_us.max(value_us);
    }

    /// Adds every sample of `other` to `self`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        if !other.counts.is_empty() {
            self.allocate();
        }
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += *theirs;
        }
        self.count += other.count;
        self.sum_us += other.sum_us;
        self.min_us = self.min_us.min(other.min_us);
        self.max_us = self.max_us.max(other.max_us);
    }

    /// Gives the histogram its buckets on first use.
    fn allocate(&mut self) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKET_COUNT];
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Smallest sample, 0 when empty.
    pub fn min_us(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            self.min_us
        }
    }

    /// Largest sample (exact), 0 when empty.
    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// Arithmetic mean (exact, from the running sum), 0 when empty.
    pub fn mean_us(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            (self.sum_us / u128::from(self.count)) as u64
        }
    }

    /// Nearest-rank quantile: the sample of rank `ceil(q * count)` (1-based),
    /// `q = quantile_ppm / 1e6`, reported as the midpoint of its bucket clamped
    /// to `[min, max]`. 0 when empty.
    pub fn value_at_ppm(&self, quantile_ppm: u64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = nearest_rank(quantile_ppm, self.count);
        let mut seen = 0u64;
        for (index, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (low, width) = bucket_bounds(index);
                let mid = low + (width - 1) / 2;
                return mid.clamp(self.min_us, self.max_us);
            }
        }
        self.max_us
    }

    /// The non-empty buckets in increasing order: the basis of a CDF. Bounds
    /// are clamped to the exact `[min, max]`, so the first bucket starts at the
    /// smallest sample and the last ends at the largest.
    pub fn buckets(&self) -> impl Iterator<Item = Bucket> + '_ {
        let (min_us, max_us) = (self.min_us, self.max_us);
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(move |(index, &count)| {
                let (low, width) = bucket_bounds(index);
                let high = if index + 1 == BUCKET_COUNT {
                    // The top bucket also holds every saturated sample.
                    max_us
                } else {
                    low + width - 1
                };
                Bucket {
                    low_us: low.clamp(min_us, max_us),
                    high_us: high.clamp(min_us, max_us),
                    count,
                }
            })
    }

    pub fn percentiles(&self) -> Percentiles {
        Percentiles {
            count: self.count,
            min_us: self.min_us(),
            mean_us: self.mean_us(),
            p50_us: self.value_at_ppm(500_000),
            p90_us: self.value_at_ppm(900_000),
            p99_us: self.value_at_ppm(990_000),
            p99_9_us: self.value_at_ppm(999_000),
            max_us: self.max_us(),
        }
    }
}

/// 1-based nearest rank for `quantile_ppm` of `count` samples, in `1..=count`.
pub fn nearest_rank(quantile_ppm: u64, count: u64) -> u64 {
    let ppm = u128::from(quantile_ppm.min(PPM));
    let rank = (ppm * u128::from(count)).div_ceil(u128::from(PPM)) as u64;
    rank.clamp(1, count.max(1))
}

fn bucket_index(value: u64) -> usize {
    if value < SUB_BUCKETS {
        return value as usize;
    }
    let log2 = 63 - value.leading_zeros();
    let shift = log2 - SUB_BUCKET_BITS;
    // `value >> shift` is in [128, 256): the index of the octave's first bucket
    // is `shift * 128 + 128`, and the offset inside it is `(value >> shift) - 128`.
    (u64::from(shift) * SUB_BUCKETS + (value >> shift)) as usize
}

/// Lower bound and width of bucket `index`.
fn bucket_bounds(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < SUB_BUCKETS {
        return (index, 1);
    }
    let shift = index / SUB_BUCKETS - 1;
    let sub = index % SUB_BUCKETS + SUB_BUCKETS;
    (sub << shift, 1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic test data without a rand dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    fn exact(sorted: &[u64], ppm: u64) -> u64 {
        sorted[(nearest_rank(ppm, sorted.len() as u64) - 1) as usize]
    }

    fn assert_close(estimate: u64, truth: u64, what: &str) {
        let error = estimate.abs_diff(truth) as f64;
        assert!(
            error <= truth as f64 * 0.01,
            "{what}: estimate {estimate} vs exact {truth} (error {error})"
        );
    }

    const QUANTILES_PPM: [u64; 9] = [
        1, 100_000, 250_000, 500_000, 900_000, 990_000, 999_000, 999_999, 1_000_000,
    ];

    fn check_against_sorted(samples: &[u64]) {
        let mut histogram = LatencyHistogram::new();
        for &s in samples {
            histogram.record(s);
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        for ppm in QUANTILES_PPM {
            assert_close(
                histogram.value_at_ppm(ppm),
                exact(&sorted, ppm),
                &format!("ppm {ppm} of {} samples", samples.len()),
            );
        }
        assert_eq!(histogram.max_us(), *sorted.last().unwrap());
        assert_eq!(histogram.min_us(), sorted[0]);
        assert_eq!(histogram.count(), samples.len() as u64);
    }

    #[test]
    fn nearest_rank_matches_definition() {
        assert_eq!(nearest_rank(500_000, 10), 5);
        assert_eq!(nearest_rank(500_001, 10), 6);
        assert_eq!(nearest_rank(999_000, 1000), 999);
        assert_eq!(nearest_rank(999_000, 1001), 1000);
        assert_eq!(nearest_rank(0, 7), 1);
        assert_eq!(nearest_rank(1_000_000, 7), 7);
        assert_eq!(nearest_rank(2_000_000, 7), 7);
    }

    #[test]
    fn bucket_index_and_bounds_agree_everywhere() {
        let mut previous = 0;
        // Every bucket's lower bound maps back to that bucket, as does its last value.
        for index in 0..BUCKET_COUNT {
            let (low, width) = bucket_bounds(index);
            assert_eq!(bucket_index(low), index, "low {low}");
            assert_eq!(bucket_index(low + width - 1), index, "high of {index}");
            assert!(
                index == 0 || low == previous,
                "buckets must be contiguous at {index}"
            );
            previous = low + width;
            assert!(
                width * 128 <= low.max(128),
                "bucket {index} too wide: {width} at {low}"
            );
        }
        assert_eq!(previous, TRACKABLE_US_MAX + 1);
    }

    #[test]
    fn small_values_are_exact() {
        let samples: Vec<u64> = (0..256).rev().collect();
        let mut histogram = LatencyHistogram::new();
        for &s in &samples {
            histogram.record(s);
        }
        let mut sorted = samples.clone();
        sorted.sort_unstable();
        for ppm in QUANTILES_PPM {
            assert_eq!(
                histogram.value_at_ppm(ppm),
                exact(&sorted, ppm),
                "ppm {ppm}"
            );
        }
    }

    #[test]
    fn uniform_random_matches_sorted_within_one_percent() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let samples: Vec<u64> = (0..20_000).map(|_| 1 + rng.next() % 60_000_000).collect();
        check_against_sorted(&samples);
    }

    #[test]
    fn log_spread_matches_sorted_within_one_percent() {
        // Spread over every octave from 1 µs to 60 s, like real latency tails.
        let mut rng = Rng(42);
        let samples: Vec<u64> = (0..20_000)
            .map(|_| {
                let octave = rng.next() % 26;
                ((1u64 << octave) + rng.next() % (1u64 << octave)).min(60_000_000)
            })
            .collect();
        check_against_sorted(&samples);
    }

    #[test]
    fn small_sets_match_sorted() {
        let mut rng = Rng(7);
        for len in 1..40 {
            let samples: Vec<u64> = (0..len).map(|_| rng.next() % 5_000_000).collect();
            check_against_sorted(&samples);
        }
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let mut rng = Rng(99);
        let mut all = LatencyHistogram::new();
        let mut parts = [
            LatencyHistogram::new(),
            LatencyHistogram::new(),
            LatencyHistogram::new(),
        ];
        for i in 0..9_000 {
            let v = rng.next() % 2_000_000;
            all.record(v);
            parts[i % 3].record(v);
        }
        let mut merged = LatencyHistogram::new();
        for part in &parts {
            merged.merge(part);
        }
        assert_eq!(merged, all);
        assert_eq!(merged.percentiles(), all.percentiles());
    }

    #[test]
    fn saturates_above_trackable_but_keeps_exact_max() {
        let mut histogram = LatencyHistogram::new();
        histogram.record(10);
        histogram.record(500_000_000);
        assert_eq!(histogram.max_us(), 500_000_000);
        assert_eq!(
            histogram.value_at_ppm(1_000_000),
            TRACKABLE_US_MAX - (1 << 18) / 2
        );
        assert_eq!(histogram.value_at_ppm(500_000), 10);
    }

    #[test]
    fn buckets_cover_every_sample_in_order_within_min_and_max() {
        let mut histogram = LatencyHistogram::new();
        assert_eq!(histogram.buckets().count(), 0);
        for v in [5, 5, 300, 301, 70_000, 90_000_000] {
            histogram.record(v);
        }
        let buckets: Vec<Bucket> = histogram.buckets().collect();
        assert_eq!(buckets.iter().map(|b| b.count).sum::<u64>(), 6);
        assert_eq!(
            buckets[0],
            Bucket {
                low_us: 5,
                high_us: 5,
                count: 2
            }
        );
        // 300 and 301 share a 2 µs wide bucket [300, 301].
        assert_eq!(
            buckets[1],
            Bucket {
                low_us: 300,
                high_us: 301,
                count: 2
            }
        );
        assert!(buckets[2].low_us <= 70_000 && 70_000 <= buckets[2].high_us);
        assert_eq!(buckets.last().map(|b| b.high_us), Some(90_000_000));
        assert!(buckets.windows(2).all(|w| w[0].high_us < w[1].low_us));
    }

    #[test]
    fn empty_histogram_reports_zeros() {
        let histogram = LatencyHistogram::new();
        assert_eq!(histogram.percentiles(), Percentiles::default());
    }

    #[test]
    fn buckets_are_allocated_on_first_sample_only() {
        let mut histogram = LatencyHistogram::new();
        histogram.merge(&LatencyHistogram::new());
        assert_eq!(histogram.counts.capacity(), 0);
        assert_eq!(histogram, LatencyHistogram::new());
        let mut one = LatencyHistogram::new();
        one.record(42);
        histogram.merge(&one);
        assert_eq!(histogram.counts.len(), BUCKET_COUNT);
        assert_eq!(histogram, one);
    }

    #[test]
    fn mean_is_exact() {
        let mut histogram = LatencyHistogram::new();
        for v in [100, 200, 300, 1_000_000] {
            histogram.record(v);
        }
        assert_eq!(histogram.mean_us(), 250_150);
    }
}
