//! The message an IMAP APPEND uploads: RFC 5322 headers and a plain-text
//! body of exactly the requested size, CRLF line ends, lines of at most 78
//! bytes. The body holds the word `loadgen`, which `search` looks for.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::message::write_rfc5322_date;

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
        let mut left = content;
        while left > 0 {
            let take = left.min(FILLER.len() - offset);
            out.extend_from_slice(&FILLER[offset..offset + take]);
            offset = (offset + take) % FILLER.len();
            left -= take;
        }
        out.extend_from_slice(b"\r\n");
        remaining -= (content + 2).min(remaining);
    }
}

/// Now as an RFC 5322 date (`Sun, 22 Nov 2026 10:52:05 +0000`).
pub fn rfc5322_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut date = Vec::new();
    write_rfc5322_date(&mut date, secs);
    // The date is ASCII.
    String::from_utf8_lossy(&date).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_sizes_crlf_lines_and_the_search_word() {
        let date = "Thu, 01 Jan 1970 00:00:00 +0000";
        for size in (HEADER_BYTES_MAX + 2..HEADER_BYTES_MAX + 400).chain([2048, 65_536, 100_003]) {
            let mut out = b"prefix".to_vec();
            write_message(&mut out, size, date, u64::MAX, u64::MAX - 1);
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
    fn body_lines_cycle_the_filler() {
        let mut out = Vec::new();
        write_message(&mut out, 1_000, "d", 1, 5);
        let body = &out[out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
        let text: Vec<u8> = body
            .split(|&b| b == b'\n')
            .flat_map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .copied()
            .collect();
        let expected: Vec<u8> = (0..text.len())
            .map(|i| FILLER[(5 + i) % FILLER.len()])
            .collect();
        assert_eq!(text, expected);
    }

    #[test]
    fn now_is_an_rfc5322_date() {
        // The format itself is tested with `crate::message::write_rfc5322_date`.
        let now = rfc5322_now();
        assert_eq!(now.len(), "Sun, 22 Nov 2026 10:52:05 +0000".len(), "{now}");
        assert!(now.ends_with(" +0000"), "{now}");
    }
}
