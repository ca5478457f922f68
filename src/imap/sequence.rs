//! IMAP sequence sets (RFC 9051 `sequence-set`, RFC 5182 `$`): parsing, membership,
//! resolution against the current largest number, and the compact text form used
//! in COPYUID, VANISHED and ESEARCH ALL.
//!
//! The same type serves message sequence numbers and UIDs: the caller passes the
//! largest number in use as `star`. A range may be written backwards (`5:2` is
//! `2:5`), `*` is the largest number in use, and numbers above it are clamped away
//! when a set is resolved. Parsing is bounded by [`RANGES_MAX`].

use std::fmt;
use std::ops::RangeInclusive;

use thiserror::Error;

/// The most ranges one set may hold; beyond it parsing fails (bounded memory).
pub const RANGES_MAX: usize = 100_000;

/// One end of a range: a number or `*` (the largest number in use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqNo {
    Value(u32),
    Star,
}

impl SeqNo {
    /// The number this end stands for when the largest number in use is `star`.
    pub fn resolve(self, star: u32) -> u32 {
        match self {
            SeqNo::Value(n) => n,
            SeqNo::Star => star,
        }
    }
}

/// `start:end` as written (`n` alone is `n:n`); the order of the ends is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqRange {
    pub start: SeqNo,
    pub end: SeqNo,
}

impl SeqRange {
    /// The inclusive bounds, low end first, once `*` is replaced by `star`.
    pub fn bounds(&self, star: u32) -> (u32, u32) {
        let a = self.start.resolve(star);
        let b = self.end.resolve(star);
        (a.min(b), a.max(b))
    }
}

/// A parsed sequence set, or `$`: the result saved by `SEARCH RETURN (SAVE)`
/// (RFC 5182), which the session substitutes with [`SequenceSet::or_saved`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SequenceSet {
    Ranges(Vec<SeqRange>),
    Saved,
}

/// Why a sequence set did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SequenceError {
    #[error("empty sequence set")]
    Empty,
    #[error("invalid character in sequence set at byte {at}")]
    InvalidChar { at: usize },
    #[error("sequence number 0 or with a leading zero at byte {at}")]
    Zero { at: usize },
    #[error("sequence number too large at byte {at}")]
    Overflow { at: usize },
    #[error("more than {RANGES_MAX} ranges in a sequence set")]
    TooManyRanges,
}

impl SequenceSet {
    /// Parses `1,3:5,7:*` or `$`. Numbers are `nz-number` (no 0, no leading
    /// zero, at most `u32::MAX`).
    pub fn parse(input: &[u8]) -> Result<SequenceSet, SequenceError> {
        if input.is_empty() {
            return Err(SequenceError::Empty);
        }
        if input == b"$" {
            return Ok(SequenceSet::Saved);
        }
        let mut ranges = Vec::new();
        let mut pos = 0;
        loop {
            if ranges.len() == RANGES_MAX {
                return Err(SequenceError::TooManyRanges);
            }
            let (start, next) = seq_no(input, pos)?;
            pos = next;
            let end = if input.get(pos) == Some(&b':') {
                let (end, next) = seq_no(input, pos + 1)?;
                pos = next;
                end
            } else {
                start
            };
            ranges.push(SeqRange { start, end });
            match input.get(pos) {
                None => return Ok(SequenceSet::Ranges(ranges)),
                Some(b',') => pos += 1,
                Some(_) => return Err(SequenceError::InvalidChar { at: pos }),
            }
        }
    }

    /// A single number.
    pub fn single(n: u32) -> SequenceSet {
        SequenceSet::Ranges(vec![SeqRange {
            start: SeqNo::Value(n),
            end: SeqNo::Value(n),
        }])
    }

    /// The compact form of a list of numbers: consecutive runs become `a:b`.
    /// Ascending input gives the shortest form; unsorted input stays correct
    /// (a new range starts wherever the run breaks). Zeros are skipped.
    pub fn from_sorted(numbers: &[u32]) -> SequenceSet {
        let mut ranges: Vec<SeqRange> = Vec::new();
        let mut run: Option<(u32, u32)> = None;
        for &n in numbers {
            if n == 0 {
                continue;
            }
            run = match run {
                Some((lo, hi)) if n == hi || Some(n) == hi.checked_add(1) => Some((lo, n)),
                Some((lo, hi)) => {
                    ranges.push(range(lo, hi));
                    Some((n, n))
                }
                None => Some((n, n)),
            };
        }
        if let Some((lo, hi)) = run {
            ranges.push(range(lo, hi));
        }
        SequenceSet::Ranges(ranges)
    }

    /// A set of inclusive `(low, high)` ranges, as given (ascending and disjoint for the
    /// compact form).
    pub fn from_ranges(ranges: &[(u32, u32)]) -> SequenceSet {
        SequenceSet::Ranges(ranges.iter().map(|&(lo, hi)| range(lo, hi)).collect())
    }

    /// True for `$`.
    pub fn is_saved(&self) -> bool {
        matches!(self, SequenceSet::Saved)
    }

    /// `self`, or `saved` when `self` is `$`.
    pub fn or_saved<'a>(&'a self, saved: &'a SequenceSet) -> &'a SequenceSet {
        match self {
            SequenceSet::Saved => saved,
            ranges => ranges,
        }
    }

    /// True when `n` (1..=star) is in the set. `$` contains nothing: resolve it
    /// first with [`SequenceSet::or_saved`].
    pub fn contains(&self, n: u32, star: u32) -> bool {
        match self {
            SequenceSet::Saved => false,
            SequenceSet::Ranges(ranges) => {
                n >= 1
                    && n <= star
                    && ranges.iter().any(|r| {
                        let (lo, hi) = r.bounds(star);
                        lo <= n && n <= hi
                    })
            }
        }
    }

    /// The set as disjoint ascending inclusive ranges clamped to `1..=star`.
    /// Cheap to walk when the numbers are sparse UIDs: intersect each range
    /// with the sorted UID list instead of enumerating it.
    pub fn ranges_resolved(&self, star: u32) -> Vec<RangeInclusive<u32>> {
        let ranges = match self {
            SequenceSet::Saved => return Vec::new(),
            SequenceSet::Ranges(ranges) => ranges,
        };
        if star == 0 {
            return Vec::new();
        }
        let mut bounds: Vec<(u32, u32)> = ranges
            .iter()
            .filter_map(|r| {
                let (lo, hi) = r.bounds(star);
                (lo <= star).then_some((lo.max(1), hi.min(star)))
            })
            .collect();
        bounds.sort_unstable();
        let mut merged: Vec<RangeInclusive<u32>> = Vec::with_capacity(bounds.len());
        for (lo, hi) in bounds {
            match merged.last_mut() {
                Some(last) if lo <= last.end().saturating_add(1) => {
                    if hi > *last.end() {
                        *last = *last.start()..=hi;
                    }
                }
                _ => merged.push(lo..=hi),
            }
        }
        merged
    }

    /// Every number of the set in `1..=star`, ascending, each once.
    pub fn iter_resolved(&self, star: u32) -> impl Iterator<Item = u32> {
        self.ranges_resolved(star).into_iter().flatten()
    }
}

fn range(lo: u32, hi: u32) -> SeqRange {
    SeqRange {
        start: SeqNo::Value(lo),
        end: SeqNo::Value(hi),
    }
}

/// One `seq-number` at `pos`: `*` or an nz-number. Returns it and the next position.
fn seq_no(input: &[u8], pos: usize) -> Result<(SeqNo, usize), SequenceError> {
    match input.get(pos) {
        Some(b'*') => Ok((SeqNo::Star, pos + 1)),
        Some(b'0') => Err(SequenceError::Zero { at: pos }),
        Some(b'1'..=b'9') => {
            let mut value: u32 = 0;
            let mut end = pos;
            while let Some(&d) = input.get(end).filter(|d| d.is_ascii_digit()) {
                value = value
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(u32::from(d - b'0')))
                    .ok_or(SequenceError::Overflow { at: pos })?;
                end += 1;
            }
            Ok((SeqNo::Value(value), end))
        }
        _ => Err(SequenceError::InvalidChar { at: pos }),
    }
}

impl fmt::Display for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeqNo::Value(n) => write!(f, "{n}"),
            SeqNo::Star => f.write_str("*"),
        }
    }
}

impl fmt::Display for SeqRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}:{}", self.start, self.end)
        }
    }
}

/// The set as written (`$` for the saved result). An empty set prints as
/// nothing; callers do not send empty sets (RFC 9051 has no syntax for one).
impl fmt::Display for SequenceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SequenceSet::Saved => f.write_str("$"),
            SequenceSet::Ranges(ranges) => {
                for (i, r) in ranges.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{r}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> SequenceSet {
        SequenceSet::parse(s.as_bytes()).unwrap()
    }

    fn resolved(s: &str, star: u32) -> Vec<u32> {
        set(s).iter_resolved(star).collect()
    }

    #[test]
    fn parses_rfc_forms() {
        assert_eq!(
            set("1,3:5,7:*"),
            SequenceSet::Ranges(vec![
                range(1, 1),
                range(3, 5),
                SeqRange {
                    start: SeqNo::Value(7),
                    end: SeqNo::Star
                },
            ])
        );
        assert_eq!(set("$"), SequenceSet::Saved);
        assert_eq!(set("4294967295").to_string(), "4294967295");
        assert_eq!(set("*:4").to_string(), "*:4");
        assert_eq!(set("2,4:7,9,12:*").to_string(), "2,4:7,9,12:*");
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in [
            "",
            "0",
            "1:0",
            "01",
            "1,",
            ",1",
            "1::2",
            "1:",
            ":1",
            "a",
            "1 2",
            "$,1",
            "1,$",
            "4294967296",
            "99999999999",
            "1:*:2",
            "**",
        ] {
            assert!(
                SequenceSet::parse(bad.as_bytes()).is_err(),
                "{bad:?} parsed"
            );
        }
        assert_eq!(
            SequenceSet::parse(b"3:0"),
            Err(SequenceError::Zero { at: 2 })
        );
    }

    #[test]
    fn range_count_is_bounded() {
        let mut s = String::new();
        for i in 1..=RANGES_MAX as u32 {
            s.push_str(&format!("{i},"));
        }
        s.push('1');
        assert_eq!(
            SequenceSet::parse(s.as_bytes()),
            Err(SequenceError::TooManyRanges)
        );
        s.truncate(s.len() - 2);
        assert!(SequenceSet::parse(s.as_bytes()).is_ok());
    }

    #[test]
    fn resolves_star_reversed_and_clamped() {
        assert_eq!(resolved("1:*", 4), vec![1, 2, 3, 4]);
        assert_eq!(resolved("5:2", 10), vec![2, 3, 4, 5]);
        assert_eq!(resolved("*", 7), vec![7]);
        // RFC 9051 6.4.8: "UID FETCH 5:*" with largest UID 3 includes 3.
        assert_eq!(resolved("5:*", 3), vec![3]);
        assert_eq!(resolved("9:12", 5), Vec::<u32>::new());
        assert_eq!(resolved("3,1:2,2,5:4,10", 6), vec![1, 2, 3, 4, 5]);
        assert_eq!(resolved("1:*", 0), Vec::<u32>::new());
        assert_eq!(
            set("4294967295:4294967294").ranges_resolved(u32::MAX),
            vec![4294967294..=4294967295]
        );
    }

    #[test]
    fn contains_matches_iter_resolved() {
        for s in ["1", "2:4,9", "*", "7:*", "5:2,8", "1:3,2:6,10:*"] {
            for star in 0..12 {
                let all: Vec<u32> = resolved(s, star);
                for n in 0..14 {
                    assert_eq!(
                        set(s).contains(n, star),
                        all.contains(&n),
                        "{s} n={n} star={star}"
                    );
                }
            }
        }
        assert!(!SequenceSet::Saved.contains(1, 10));
    }

    #[test]
    fn from_sorted_builds_compact_form() {
        assert_eq!(
            SequenceSet::from_sorted(&[1, 2, 3, 5, 7, 8]).to_string(),
            "1:3,5,7:8"
        );
        assert_eq!(SequenceSet::from_sorted(&[4]).to_string(), "4");
        assert_eq!(SequenceSet::from_sorted(&[]).to_string(), "");
        assert_eq!(SequenceSet::from_sorted(&[2, 2, 3]).to_string(), "2:3");
        assert_eq!(
            SequenceSet::from_sorted(&[u32::MAX - 1, u32::MAX]).to_string(),
            "4294967294:4294967295"
        );
        assert_eq!(SequenceSet::from_sorted(&[5, 1, 2]).to_string(), "5,1:2");
        let numbers = [3, 4, 9, 10, 11, 20];
        let compact = SequenceSet::from_sorted(&numbers);
        assert_eq!(
            compact.iter_resolved(100).collect::<Vec<_>>(),
            numbers.to_vec()
        );
    }

    #[test]
    fn saved_resolves_through_or_saved() {
        let saved = SequenceSet::from_sorted(&[2, 4]);
        let dollar = set("$");
        assert!(dollar.is_saved());
        assert_eq!(dollar.or_saved(&saved), &saved);
        assert_eq!(dollar.to_string(), "$");
        assert_eq!(dollar.iter_resolved(10).count(), 0);
    }
}
