//! Test message generator: RFC 5322 headers (From, To, Subject with the
//! sequence number, Date, Message-ID unique per message and per run) and a body
//! of printable ASCII lines of at most 78 characters, padded so the whole
//! message is exactly the requested size. Lines end in CRLF and never start
//! with '.', so the DATA payload needs no dot-stuffing.
//!
//! [`SizeSpec`] says which size message number `seq` has: fixed, uniform in a
//! range, weighted choices, or a real .eml file from a [`crate::corpus`];
//! always a pure function of `seq`, so runs are repeatable.

use std::io::Write;
use std::sync::Arc;

use crate::corpus::EmlCorpus;

/// Longest body line, without its CRLF (RFC 5322 §2.1.1 "SHOULD" limit).
pub const BODY_LINE_CHARS_MAX: usize = 78;
/// Decimal digits of the sequence number in Subject and Message-ID (fixed width).
pub const SEQUENCE_DIGITS: usize = 10;
/// Largest sequence number that fits in [`SEQUENCE_DIGITS`].
pub const SEQUENCE_MAX: u64 = 9_999_999_999;
/// Smallest body the padding can produce besides an empty one: one empty line.
const BODY_BYTES_MIN: usize = 2;

const LINE_BYTES: usize = BODY_LINE_CHARS_MAX + 2;
const ALPHANUMERIC: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("message size {size_bytes} B is too small: headers alone take {header_bytes} B (need at least {} B)", header_bytes + BODY_BYTES_MIN)]
    TooSmall {
        size_bytes: usize,
        header_bytes: usize,
    },
    #[error("sequence number {seq} does not fit in {SEQUENCE_DIGITS} digits")]
    SequenceTooLarge { seq: u64 },
}

/// Most entries in a `--size-dist` list.
pub const SIZE_CHOICES_MAX: usize = 64;
/// Largest weight of one `--size-dist` entry.
pub const SIZE_WEIGHT_MAX: u32 = 1_000_000;

/// The size of each message of a run (before the terminating `.\r\n`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SizeSpec {
    /// Every message has this size (`--size N`).
    Fixed(usize),
    /// Uniform in `min..=max` (`--size MIN-MAX`).
    Uniform { min: usize, max: usize },
    /// `(size, weight)` choices (`--size-dist 1024:50,4096:30`); weights > 0.
    Weighted(Vec<(usize, u32)>),
    /// Real messages, cycled by sequence number (`--eml-dir DIR`).
    Eml(Arc<EmlCorpus>),
}

impl SizeSpec {
    /// The generated size of message `seq` (for [`SizeSpec::Eml`]: the stored
    /// file's size as sent, dot-stuffed).
    pub fn size_for(&self, seq: u64) -> usize {
        match self {
            SizeSpec::Fixed(n) => *n,
            SizeSpec::Uniform { min, max } => {
                let span = (max - min) as u64 + 1;
                min + (mix64(seq) % span) as usize
            }
            SizeSpec::Weighted(choices) => {
                let total: u64 = choices.iter().map(|&(_, w)| u64::from(w)).sum();
                let mut pick = mix64(seq) % total.max(1);
                for &(size, weight) in choices {
                    if pick < u64::from(weight) {
                        return size;
                    }
                    pick -= u64::from(weight);
                }
                choices.last().map_or(0, |&(size, _)| size)
            }
            SizeSpec::Eml(corpus) => corpus.get(seq).len(),
        }
    }

    /// Smallest and largest size a message can have.
    pub fn bounds(&self) -> (usize, usize) {
        match self {
            SizeSpec::Fixed(n) => (*n, *n),
            SizeSpec::Uniform { min, max } => (*min, *max),
            SizeSpec::Weighted(choices) => (
                choices.iter().map(|c| c.0).min().unwrap_or(0),
                choices.iter().map(|c| c.0).max().unwrap_or(0),
            ),
            SizeSpec::Eml(corpus) => corpus.size_bounds(),
        }
    }

    /// The spec as the user would type it, for reports.
    pub fn describe(&self) -> String {
        match self {
            SizeSpec::Fixed(n) => n.to_string(),
            SizeSpec::Uniform { min, max } => format!("{min}-{max}"),
            SizeSpec::Weighted(choices) => choices
                .iter()
                .map(|(size, weight)| format!("{size}:{weight}"))
                .collect::<Vec<_>>()
                .join(","),
            SizeSpec::Eml(corpus) => format!(
                "eml:{} ({} files, {} bytes)",
                corpus.dir().display(),
                corpus.len(),
                corpus.total_bytes()
            ),
        }
    }
}

/// SplitMix64's finaliser: a well-mixed 64-bit hash of the sequence number.
pub fn mix64(seq: u64) -> u64 {
    let mut z = seq.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What stays the same for every message of a run.
#[derive(Clone, Debug)]
pub struct MessageTemplate {
    pub from: String,
    /// Right-hand side of Message-ID.
    pub id_domain: String,
    /// Makes Message-IDs unique across runs (e.g. start time mixed with the pid).
    pub run_id: u64,
}

impl MessageTemplate {
    /// Size of the header block (blank separator line included) for a recipient.
    pub fn header_bytes(&self, to: &str) -> usize {
        let mut scratch = Vec::with_capacity(512);
        self.write_headers(&mut scratch, 0, to, 0);
        scratch.len()
    }

    /// Smallest `size_bytes` that fits the headers for the longest recipient.
    pub fn size_bytes_min(&self, to_longest: &str) -> usize {
        self.header_bytes(to_longest) + BODY_BYTES_MIN
    }

    /// Appends message `seq` for `to` (exactly `size_bytes` bytes) to `out`.
    pub fn write(
        &self,
        out: &mut Vec<u8>,
        seq: u64,
        to: &str,
        unix_secs: u64,
        size_bytes: usize,
    ) -> Result<(), MessageError> {
        if seq > SEQUENCE_MAX {
            return Err(MessageError::SequenceTooLarge { seq });
        }
        let start = out.len();
        self.write_headers(out, seq, to, unix_secs);
        let header_bytes = out.len() - start;
        let body_bytes = size_bytes
            .checked_sub(header_bytes)
            .filter(|&b| b >= BODY_BYTES_MIN);
        let Some(body_bytes) = body_bytes else {
            out.truncate(start);
            return Err(MessageError::TooSmall {
                size_bytes,
                header_bytes,
            });
        };
        write_body(out, body_bytes);
        debug_assert_eq!(out.len() - start, size_bytes);
        Ok(())
    }

    fn write_headers(&self, out: &mut Vec<u8>, seq: u64, to: &str, unix_secs: u64) {
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "From: <{from}>\r\nTo: <{to}>\r\nSubject: ringmail-loadgen message {seq:0width$}\r\nDate: ",
            from = self.from,
            width = SEQUENCE_DIGITS,
        );
        write_rfc5322_date(out, unix_secs);
        let _ = write!(
            out,
            "\r\nMessage-ID: <{seq:0width$}.{run:016x}@{domain}>\r\n\r\n",
            width = SEQUENCE_DIGITS,
            run = self.run_id,
            domain = self.id_domain,
        );
    }
}

/// Appends exactly `body_bytes` (0 or ≥ 2) of CRLF-terminated lines of at most
/// [`BODY_LINE_CHARS_MAX`] alphanumerics.
fn write_body(out: &mut Vec<u8>, body_bytes: usize) {
    debug_assert!(body_bytes != 1);
    let mut full_lines = body_bytes / LINE_BYTES;
    let remainder = body_bytes % LINE_BYTES;
    // A 1-byte line cannot exist (CRLF is 2): turn the last full line and the
    // extra byte (81 bytes) into two lines of 41 and 40 bytes instead.
    let tail: [usize; 2] = match remainder {
        0 => [0, 0],
        1 => {
            full_lines -= 1;
            [41, LINE_BYTES + 1 - 41]
        }
        r => [r, 0],
    };
    let mut line_no = 0;
    for _ in 0..full_lines {
        push_line(out, line_no, BODY_LINE_CHARS_MAX);
        line_no += 1;
    }
    for bytes in tail.into_iter().filter(|&b| b > 0) {
        push_line(out, line_no, bytes - 2);
        line_no += 1;
    }
}

fn push_line(out: &mut Vec<u8>, line_no: usize, chars: usize) {
    let offset = line_no % ALPHANUMERIC.len();
    let mut left = chars;
    let mut at = offset;
    while left > 0 {
        let take = left.min(ALPHANUMERIC.len() - at);
        out.extend_from_slice(&ALPHANUMERIC[at..at + take]);
        left -= take;
        at = 0;
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends an RFC 5322 date in UTC, fixed width: `Thu, 01 Jan 1970 00:00:00 +0000`.
pub fn write_rfc5322_date(out: &mut Vec<u8>, unix_secs: u64) {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_secs / 86_400;
    let secs_of_day = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let _ = write!(
        out,
        "{weekday}, {day:02} {month} {year:04} {h:02}:{m:02}:{s:02} +0000",
        weekday = WEEKDAYS[(days % 7) as usize],
        month = MONTHS[(month - 1) as usize],
        h = secs_of_day / 3600,
        m = secs_of_day / 60 % 60,
        s = secs_of_day % 60,
    );
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> MessageTemplate {
        MessageTemplate {
            from: "sender@load.test".into(),
            id_domain: "loadgen.test".into(),
            run_id: 0x0123_4567_89ab_cdef,
        }
    }

    fn lines(message: &[u8]) -> Vec<&[u8]> {
        assert!(message.ends_with(b"\r\n"), "message must end with CRLF");
        let mut all: Vec<&[u8]> = message.split(|&b| b == b'\n').collect();
        assert_eq!(all.pop(), Some(&b""[..]));
        all.into_iter()
            .map(|l| l.strip_suffix(b"\r").expect("every LF is preceded by CR"))
            .collect()
    }

    fn check_message(message: &[u8], size: usize) {
        assert_eq!(message.len(), size);
        let all = lines(message);
        for line in &all {
            assert!(!line.contains(&b'\r'), "bare CR in {line:?}");
            assert!(!line.starts_with(b"."), "line starts with a dot: {line:?}");
            assert!(
                line.iter().all(|&b| (0x20..0x7f).contains(&b)),
                "non-printable in {line:?}"
            );
        }
        let blank = all
            .iter()
            .position(|l| l.is_empty())
            .expect("header/body separator");
        for line in &all[blank + 1..] {
            assert!(
                line.len() <= BODY_LINE_CHARS_MAX,
                "body line of {} chars",
                line.len()
            );
        }
        let headers = &all[..blank];
        for name in ["From: ", "To: ", "Subject: ", "Date: ", "Message-ID: "] {
            assert_eq!(
                headers
                    .iter()
                    .filter(|h| h.starts_with(name.as_bytes()))
                    .count(),
                1,
                "header {name}"
            );
        }
    }

    #[test]
    fn exact_size_for_every_size_across_line_boundaries() {
        let t = template();
        let min = t.size_bytes_min("rcpt@example.test");
        for size in min..min + 3 * LINE_BYTES + 3 {
            let mut out = Vec::new();
            t.write(&mut out, 42, "rcpt@example.test", 1_763_782_000, size)
                .unwrap();
            check_message(&out, size);
        }
    }

    #[test]
    fn large_message_is_exact_and_well_formed() {
        let mut out = Vec::new();
        template()
            .write(&mut out, SEQUENCE_MAX, "r@x.test", 0, 1 << 20)
            .unwrap();
        check_message(&out, 1 << 20);
    }

    #[test]
    fn headers_carry_sequence_recipient_and_unique_id() {
        let t = template();
        let mut a = Vec::new();
        let mut b = Vec::new();
        t.write(&mut a, 7, "one@example.test", 0, 2048).unwrap();
        t.write(&mut b, 8, "two@example.test", 0, 2048).unwrap();
        let a = String::from_utf8(a).unwrap();
        let b = String::from_utf8(b).unwrap();
        assert!(
            a.contains("\r\nSubject: ringmail-loadgen message 0000000007\r\n"),
            "{a}"
        );
        assert!(a.contains("\r\nTo: <one@example.test>\r\n"));
        assert!(a.starts_with("From: <sender@load.test>\r\n"));
        assert!(a.contains("\r\nDate: Thu, 01 Jan 1970 00:00:00 +0000\r\n"));
        let id = |m: &str| {
            m.lines()
                .find(|l| l.starts_with("Message-ID: "))
                .unwrap()
                .to_string()
        };
        assert_eq!(
            id(&a),
            "Message-ID: <0000000007.0123456789abcdef@loadgen.test>"
        );
        assert_ne!(id(&a), id(&b));
    }

    #[test]
    fn too_small_is_an_error_and_writes_nothing() {
        let t = template();
        let min = t.size_bytes_min("rcpt@example.test");
        let mut out = b"keep".to_vec();
        let err = t
            .write(&mut out, 1, "rcpt@example.test", 0, min - 1)
            .unwrap_err();
        assert_eq!(
            err,
            MessageError::TooSmall {
                size_bytes: min - 1,
                header_bytes: min - 2
            }
        );
        assert_eq!(out, b"keep");
        assert!(t.write(&mut out, 1, "rcpt@example.test", 0, min).is_ok());
    }

    #[test]
    fn sequence_over_the_fixed_width_is_an_error() {
        let mut out = Vec::new();
        assert_eq!(
            template().write(&mut out, SEQUENCE_MAX + 1, "r@x.test", 0, 4096),
            Err(MessageError::SequenceTooLarge {
                seq: SEQUENCE_MAX + 1
            })
        );
    }

    #[test]
    fn fixed_and_uniform_sizes_are_deterministic_and_within_bounds() {
        assert_eq!(SizeSpec::Fixed(777).size_for(12345), 777);
        let spec = SizeSpec::Uniform {
            min: 1000,
            max: 1009,
        };
        let mut seen = [0u32; 10];
        for seq in 0..10_000 {
            let size = spec.size_for(seq);
            assert!((1000..=1009).contains(&size), "{size}");
            assert_eq!(size, spec.size_for(seq), "same seq, same size");
            seen[size - 1000] += 1;
        }
        // Uniform: each of the 10 sizes about 1000 times.
        assert!(seen.iter().all(|&n| (850..1150).contains(&n)), "{seen:?}");
        let single = SizeSpec::Uniform { min: 5, max: 5 };
        assert_eq!(single.size_for(99), 5);
        assert_eq!(spec.bounds(), (1000, 1009));
        assert_eq!(spec.describe(), "1000-1009");
    }

    #[test]
    fn weighted_sizes_respect_the_weights_over_many_draws() {
        let spec = SizeSpec::Weighted(vec![(1024, 50), (4096, 30), (65536, 20)]);
        let draws = 100_000u64;
        let mut counts = [0u64; 3];
        for seq in 0..draws {
            let size = spec.size_for(seq);
            assert_eq!(size, spec.size_for(seq));
            let i = [1024, 4096, 65536].iter().position(|&s| s == size).unwrap();
            counts[i] += 1;
        }
        for (count, weight) in counts.iter().zip([50u64, 30, 20]) {
            let expected = draws * weight / 100;
            assert!(
                count.abs_diff(expected) < expected / 20,
                "{counts:?} vs weights 50/30/20"
            );
        }
        assert_eq!(spec.bounds(), (1024, 65536));
        assert_eq!(spec.describe(), "1024:50,4096:30,65536:20");
        let one = SizeSpec::Weighted(vec![(300, 1)]);
        assert!((0..100).all(|seq| one.size_for(seq) == 300));
    }

    #[test]
    fn dates_match_known_calendar_days() {
        // Checked with `date -u -R -d @SECS`.
        for (secs, text) in [
            (0, "Thu, 01 Jan 1970 00:00:00 +0000"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 +0000"),
            (1_763_782_000, "Sat, 22 Nov 2025 03:26:40 +0000"),
            (1_795_344_725, "Sun, 22 Nov 2026 10:52:05 +0000"),
            (4_102_444_799, "Thu, 31 Dec 2099 23:59:59 +0000"),
        ] {
            let mut out = Vec::new();
            write_rfc5322_date(&mut out, secs);
            assert_eq!(String::from_utf8(out).unwrap(), text, "{secs}");
        }
    }
}
