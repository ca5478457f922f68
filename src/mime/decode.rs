//! Decoders: base64 and quoted-printable bodies (RFC 2045), RFC 2047 encoded
//! words in headers, and charsets to UTF-8. All lenient: invalid input is
//! skipped or kept, never an error.
//!
//! Charsets decoded by hand: UTF-8, US-ASCII, ISO-8859-1 (latin1),
//! windows-1252 and ISO-8859-15. Others are read as UTF-8 with invalid
//! sequences replaced, which keeps their ASCII searchable.

use std::borrow::Cow;

use memchr::{memchr, memmem};

use super::Encoding;

/// The value of a base64 alphabet character (RFC 4648 §4). `crate::sasl`'s
/// strict decoder has its own copy (`sextet`) and could call this instead.
pub(crate) fn base64_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decodes base64, skipping anything outside the alphabet and stopping at
/// the first `=`.
pub fn base64(input: &[u8], out: &mut Vec<u8>) {
    out.reserve(input.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for &c in input {
        if c == b'=' {
            break;
        }
        let Some(v) = base64_value(c) else {
            continue;
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
}

/// Size of [`base64`]'s output, without decoding.
pub fn base64_len(input: &[u8]) -> u64 {
    let end = memchr(b'=', input).unwrap_or(input.len());
    let symbols = input[..end]
        .iter()
        .filter(|&&c| base64_value(c).is_some())
        .count() as u64;
    symbols * 6 / 8
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The byte of a `=XX` escape (`XX` hex) starting at `input[i]`, if one does.
fn escape_at(input: &[u8], i: usize) -> Option<u8> {
    if input[i] != b'=' {
        return None;
    }
    let hi = hex(*input.get(i + 1)?)?;
    let lo = hex(*input.get(i + 2)?)?;
    Some(hi << 4 | lo)
}

/// Decodes a quoted-printable body: `=XX` escapes, soft line breaks (`=`
/// at the end of a line, white space after it allowed), trailing white space
/// of each line dropped, hard line breaks written as CRLF. A `=` that
/// starts no valid escape is kept.
pub fn quoted_printable(input: &[u8], out: &mut Vec<u8>) {
    out.reserve(input.len());
    let mut pos = 0;
    while pos < input.len() {
        let (line_end, next, hard_break) = match memchr(b'\n', &input[pos..]) {
            Some(offset) => {
                let lf = pos + offset;
                (lf, lf + 1, true)
            }
            None => (input.len(), input.len(), false),
        };
        let mut line = &input[pos..line_end];
        while let Some((&last, rest)) = line.split_last() {
            if matches!(last, b' ' | b'\t' | b'\r') {
                line = rest;
            } else {
                break;
            }
        }
        let soft = line.last() == Some(&b'=');
        if soft {
            line = &line[..line.len() - 1];
        }
        let mut i = 0;
        while i < line.len() {
            let c = line[i];
            if let Some(byte) = escape_at(line, i) {
                out.push(byte);
                i += 3;
                continue;
            }
            out.push(c);
            i += 1;
        }
        if hard_break && !soft {
            out.extend_from_slice(b"\r\n");
        }
        pos = next;
    }
}

/// A body with its transfer encoding removed: base64 and quoted-printable
/// decoded, anything else borrowed as it is.
pub(crate) fn body(encoding: Encoding, raw: &[u8]) -> Cow<'_, [u8]> {
    let mut out = Vec::new();
    match encoding {
        Encoding::Base64 => base64(raw, &mut out),
        Encoding::QuotedPrintable => quoted_printable(raw, &mut out),
        Encoding::Identity | Encoding::Unknown => return Cow::Borrowed(raw),
    }
    Cow::Owned(out)
}

/// Decodes the `Q` encoding of RFC 2047 (`_` is a space).
fn q_encoding(input: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < input.len() {
        let c = input[i];
        if let Some(byte) = escape_at(input, i) {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(if c == b'_' { b' ' } else { c });
        i += 1;
    }
}

/// Windows-1252 0x80..=0x9F (0 = undefined: kept as the C1 control).
const CP1252_HIGH: [u16; 32] = [
    0x20AC, 0, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0, 0x017D, 0, 0, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC,
    0x2122, 0x0161, 0x203A, 0x0153, 0, 0x017E, 0x0178,
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Charset {
    Utf8,
    Latin1,
    Windows1252,
    Latin9,
}

fn charset_of(name: &[u8]) -> Charset {
    let name = name.trim_ascii();
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    if is("iso-8859-1") || is("iso_8859-1") || is("latin1") || is("l1") || is("iso8859-1") {
        Charset::Latin1
    } else if is("windows-1252") || is("cp1252") {
        Charset::Windows1252
    } else if is("iso-8859-15") || is("latin9") || is("iso8859-15") {
        Charset::Latin9
    } else {
        Charset::Utf8
    }
}

/// True for charsets read as UTF-8 (UTF-8, US-ASCII and unknown ones).
pub fn is_utf8_charset(charset: &[u8]) -> bool {
    charset_of(charset) == Charset::Utf8
}

/// Appends `bytes` in `charset` to `out` as UTF-8.
pub fn to_utf8(charset: &[u8], bytes: &[u8], out: &mut String) {
    let charset = charset_of(charset);
    if charset == Charset::Utf8 || bytes.is_ascii() {
        out.push_str(&String::from_utf8_lossy(bytes));
        return;
    }
    out.reserve(bytes.len() + bytes.len() / 2);
    for &b in bytes {
        let code = match (charset, b) {
            (_, 0..=0x7F) => u32::from(b),
            (Charset::Windows1252, 0x80..=0x9F) => match CP1252_HIGH[usize::from(b - 0x80)] {
                0 => u32::from(b),
                c => u32::from(c),
            },
            (Charset::Latin9, 0xA4) => 0x20AC,
            (Charset::Latin9, 0xA6) => 0x0160,
            (Charset::Latin9, 0xA8) => 0x0161,
            (Charset::Latin9, 0xB4) => 0x017D,
            (Charset::Latin9, 0xB8) => 0x017E,
            (Charset::Latin9, 0xBC) => 0x0152,
            (Charset::Latin9, 0xBD) => 0x0153,
            (Charset::Latin9, 0xBE) => 0x0178,
            _ => u32::from(b),
        };
        out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
    }
}

/// Raw header bytes as text: UTF-8 when valid, else ISO-8859-1 (common for
/// 8-bit headers written by old mailers).
fn raw_header_to_utf8(bytes: &[u8], out: &mut String) {
    match std::str::from_utf8(bytes) {
        Ok(s) => out.push_str(s),
        Err(_) => to_utf8(b"iso-8859-1", bytes, out),
    }
}

/// Decodes RFC 2047 encoded words (`=?charset?B|Q?text?=`) in a header
/// value into UTF-8. White space between two encoded words is dropped;
/// words that do not parse are kept as they are.
pub fn header_to_utf8(value: &[u8], out: &mut String) {
    let finder = memmem::Finder::new(b"=?");
    let mut plain_start = 0;
    let mut pos = 0;
    let mut decoded = Vec::new();
    while let Some(offset) = finder.find(&value[pos..]) {
        let word_start = pos + offset;
        let Some(word) = encoded_word(value, word_start + 2) else {
            pos = word_start + 2;
            continue;
        };
        let between = &value[plain_start..word_start];
        if !between
            .iter()
            .all(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
        {
            raw_header_to_utf8(between, out);
        }
        decoded.clear();
        match word.encoding {
            b'b' | b'B' => base64(word.text, &mut decoded),
            _ => q_encoding(word.text, &mut decoded),
        }
        // RFC 2231 language suffix: `charset*lang`.
        let charset = match memchr(b'*', word.charset) {
            Some(star) => &word.charset[..star],
            None => word.charset,
        };
        to_utf8(charset, &decoded, out);
        let word_end = word.end;
        plain_start = word_end;
        pos = word_end;
    }
    if plain_start < value.len() {
        raw_header_to_utf8(&value[plain_start..], out);
    }
}

/// One `=?charset?E?text?=` word.
struct EncodedWord<'a> {
    charset: &'a [u8],
    encoding: u8,
    text: &'a [u8],
    /// Offset just past the closing `?=`.
    end: usize,
}

/// Parses `charset?E?text?=` at `pos` (just after `=?`).
fn encoded_word(value: &[u8], pos: usize) -> Option<EncodedWord<'_>> {
    let rest = &value[pos..];
    let q1 = memchr(b'?', rest)?;
    let encoding = *rest.get(q1 + 1)?;
    if rest.get(q1 + 2) != Some(&b'?') || !matches!(encoding, b'b' | b'B' | b'q' | b'Q') {
        return None;
    }
    let text_start = q1 + 3;
    let len = memmem::find(&rest[text_start..], b"?=")?;
    Some(EncodedWord {
        charset: &rest[..q1],
        encoding,
        text: &rest[text_start..text_start + len],
        end: pos + text_start + len + 2,
    })
}
