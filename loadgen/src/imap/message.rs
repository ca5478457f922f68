//! The message an IMAP APPEND uploads: RFC 5322 headers and a plain-text
//! body of exactly the requested size, CRLF line ends, lines of at most 78
//! bytes. The body holds the word `loadgen`, which `search` looks for.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// The word every generated body contains (the `search` op's BODY key).
pub const SEARCH_WORD: &str = "loadgen";
/// Longest the headers get (sequence numbers of 20 digits included).
pub const HEADER_BYTES_MAX: usize = 220;
/// Body text, repeated.
const FILLER: &[u8] = b"loadgen ringmail lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor ";
/// Body line content before CRLF.
const LINE_BYTES: usize = 76;

/// Appends one message of exactly `size_bytes` (≥ `HEADER_BYTES_MAX + 2`) to `out`.
pub fn write_message(out: &mut Vec<u8>, size_bytes: usize, date: &str, run: u64, seq: u64) {
    let start = out.len();
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "From: <loadgen@load.test>\r\nTo: <loadgen@load.test>\r\nSubject: loadgen append {seq}\r\n\
Date: {date}\r\nMessage-ID: <{seq}.{run:x}@loadgen.test>\r\n\r\n"
    );
    debug_assert!(out.len() - start <= HEADER_BYTES_MAX);
    let mut remaining = size_bytes.saturating_sub(out.len() - start);
    let mut offset = (seq as usize) % FILLER.len();
    while remaining > 0 {
        // Every line, the last included, needs its CRLF.
        let content = match remaining {
            // The last line.
            r if r <= LINE_BYTES + 2 => r.saturating_sub(2),
            // One byte too many for a full line and a CRLF-only last line.
            r if r == LINE_BYTES + 3 => LINE_BYTES - 1,
            _ => LINE_BYTES,
        };
        for i in 0..content {
            out.push(FILLER[(offset + i) % FILLER.len()]);
        }
        offset = (offset + content) % FILLER.len();
        out.extend_from_slice(b"\r\n");
        remaining -= (content + 2).min(remaining);
    }
}

/// Now as an RFC 5322 date (`Sun, 22 Nov 2026 10:52:05 +0000`).
pub fn rfc5322_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc5322_date(secs)
}

/// `secs` since the Unix epoch as an RFC 5322 date in UTC.
pub fn rfc5322_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (H. Hinnant's algorithm), for days ≥ 0.
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_sizes_crlf_lines_and_the_search_word() {
        let date = rfc5322_date(0);
        for size in (HEADER_BYTES_MAX + 2..HEADER_BYTES_MAX + 400).chain([2048, 65_536, 100_003]) {
            let mut out = b"prefix".to_vec();
            write_message(&mut out, size, &date, u64::MAX, u64::MAX - 1);
            let m = &out[6..];
            assert_eq!(m.len(), size, "size {size}");
            assert!(m.ends_with(b"\r\n"));
            for line in m.split(|&b| b == b'\n') {
                assert!(line.len() <= 77, "line too long at size {size}");
                if !line.is_empty() {
                    assert!(line.ends_with(b"\r"), "bare LF at size {size}");
                }
            }
            let text = String::from_utf8(m.to_vec()).unwrap();
            let body = text.split_once("\r\n\r\n").unwrap().1;
            assert!(size < 300 || body.contains(SEARCH_WORD), "size {size}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_795_344_725),
            "Sun, 22 Nov 2026 10:52:05 +0000"
        );
    }
}
