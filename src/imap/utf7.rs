//! Modified UTF-7 for mailbox names (RFC 3501 §5.1.3), spoken by IMAP4rev1
//! clients that have not enabled UTF-8.
//!
//! Printable US-ASCII (0x20..=0x7e) stands for itself except `&`, written `&-`.
//! Anything else is UTF-16, in base64 with `,` instead of `/`, no padding,
//! between `&` and `-`. [`decode`] accepts only the canonical form [`encode`]
//! produces, so every name has exactly one spelling on the wire.

use thiserror::Error;

/// Why a modified UTF-7 name was rejected; `at` is a byte offset in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Utf7Error {
    #[error("byte {at} is not printable US-ASCII")]
    NotPrintable { at: usize },
    #[error("invalid modified base64 at byte {at}")]
    InvalidBase64 { at: usize },
    #[error("shifted sequence at byte {at} is not terminated by '-'")]
    Unterminated { at: usize },
    #[error("shifted sequence at byte {at} is not canonical")]
    NotCanonical { at: usize },
    #[error("shifted sequence at byte {at} is not valid UTF-16")]
    InvalidUtf16 { at: usize },
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

fn is_direct(c: char) -> bool {
    (' '..='~').contains(&c)
}

/// Encodes a mailbox name for a client that has not enabled UTF-8.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut units: Vec<u16> = Vec::new();
    for c in name.chars() {
        if is_direct(c) {
            flush(&mut units, &mut out);
            out.push(c);
            if c == '&' {
                out.push('-');
            }
        } else {
            let mut buf = [0u16; 2];
            units.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut units, &mut out);
    out
}

/// Writes pending UTF-16 units as one `&...-` run.
fn flush(units: &mut Vec<u16>, out: &mut String) {
    if units.is_empty() {
        return;
    }
    out.push('&');
    let mut bits: u32 = 0;
    let mut nbits = 0;
    for &u in units.iter() {
        bits = (bits << 16) | u32::from(u);
        nbits += 16;
        while nbits >= 6 {
            nbits -= 6;
            out.push(char::from(ALPHABET[((bits >> nbits) & 0x3f) as usize]));
        }
    }
    if nbits > 0 {
        out.push(char::from(
            ALPHABET[((bits << (6 - nbits)) & 0x3f) as usize],
        ));
    }
    out.push('-');
    units.clear();
}

fn base64_value(b: u8) -> Option<u32> {
    let v = match b {
        b'A'..=b'Z' => b - b'A',
        b'a'..=b'z' => b - b'a' + 26,
        b'0'..=b'9' => b - b'0' + 52,
        b'+' => 62,
        b',' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Decodes a name sent by a client that has not enabled UTF-8. Rejects
/// 8-bit and control bytes, a bare `&` run left open, padding bits that are
/// not zero, base64 for characters that could be sent directly, adjacent
/// shifted runs (`&AOQ-&AOQ-` is `&AOQA5A-`) and unpaired surrogates.
pub fn decode(input: &[u8]) -> Result<String, Utf7Error> {
    let mut out = String::with_capacity(input.len());
    let mut pos = 0;
    // End of the previous shifted run, to refuse `&...-&...-`.
    let mut last_run_end: Option<usize> = None;
    while pos < input.len() {
        let b = input[pos];
        if !(0x20..=0x7e).contains(&b) {
            return Err(Utf7Error::NotPrintable { at: pos });
        }
        if b != b'&' {
            out.push(char::from(b));
            pos += 1;
            continue;
        }
        let run_start = pos;
        if input.get(pos + 1) == Some(&b'-') {
            out.push('&');
            pos += 2;
            continue;
        }
        if last_run_end == Some(run_start) {
            return Err(Utf7Error::NotCanonical { at: run_start });
        }
        pos += 1;
        let mut bits: u32 = 0;
        let mut nbits = 0;
        let mut units: Vec<u16> = Vec::new();
        loop {
            match input.get(pos) {
                None => return Err(Utf7Error::Unterminated { at: run_start }),
                Some(b'-') => break,
                Some(&c) => {
                    let v = base64_value(c).ok_or(Utf7Error::InvalidBase64 { at: pos })?;
                    bits = ((bits << 6) | v) & 0x3f_ffff;
                    nbits += 6;
                    if nbits >= 16 {
                        nbits -= 16;
                        units.push(((bits >> nbits) & 0xffff) as u16);
                    }
                    pos += 1;
                }
            }
        }
        // Leftover bits must be padding: fewer than 6 and all zero.
        if nbits >= 6 || bits & ((1 << nbits) - 1) != 0 {
            return Err(Utf7Error::NotCanonical { at: run_start });
        }
        // Only whole UTF-16 units were taken, so a run that yielded none
        // (`&A-`) is as non-canonical as one carrying direct characters.
        if units.is_empty() {
            return Err(Utf7Error::NotCanonical { at: run_start });
        }
        for c in char::decode_utf16(units.iter().copied()) {
            let c = c.map_err(|_| Utf7Error::InvalidUtf16 { at: run_start })?;
            if is_direct(c) {
                return Err(Utf7Error::NotCanonical { at: run_start });
            }
            out.push(c);
        }
        pos += 1; // the '-'
        last_run_end = Some(pos);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3501_example() {
        let wire = "~peter/mail/&U,BTFw-/&ZeVnLIqe-";
        let name = "~peter/mail/\u{53f0}\u{5317}/\u{65e5}\u{672c}\u{8a9e}";
        assert_eq!(decode(wire.as_bytes()).unwrap(), name);
        assert_eq!(encode(name), wire);
    }

    #[test]
    fn ampersand() {
        assert_eq!(encode("&"), "&-");
        assert_eq!(decode(b"&-").unwrap(), "&");
        assert_eq!(encode("Tom & Jerry"), "Tom &- Jerry");
        assert_eq!(decode(b"Tom &- Jerry").unwrap(), "Tom & Jerry");
        assert_eq!(decode(b"&-&-").unwrap(), "&&");
    }

    #[test]
    fn round_trips() {
        for name in [
            "",
            "INBOX",
            "Entw\u{fc}rfe",
            "\u{c4}\u{d6}\u{dc}",
            "Gel\u{f6}schte Elemente",
            "\u{1f600} emoji",
            "a\u{1f600}\u{1f601}b",
            "&\u{e9}&",
            "\u{7f}\u{1}tab\there",
            "\u{444}\u{43e}\u{442}\u{43e}",
        ] {
            let wire = encode(name);
            assert!(wire.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{wire}");
            assert_eq!(decode(wire.as_bytes()).unwrap(), name, "{wire}");
        }
        assert_eq!(encode("Entw\u{fc}rfe"), "Entw&APw-rfe");
        assert_eq!(encode("\u{1f600}"), "&2D3eAA-");
    }

    #[test]
    fn rejects_non_canonical_and_invalid() {
        let cases: &[(&[u8], Utf7Error)] = &[
            (b"&", Utf7Error::Unterminated { at: 0 }),
            (b"a&U,BTFw", Utf7Error::Unterminated { at: 1 }),
            (b"&U,BTFw-&ZeVnLIqe-", Utf7Error::NotCanonical { at: 8 }),
            // "A" in base64: a directly printable character.
            (b"&AEE-", Utf7Error::NotCanonical { at: 0 }),
            // Padding bits not zero (U+00FC with the last bits set).
            (b"&APx-", Utf7Error::NotCanonical { at: 0 }),
            (b"&A-", Utf7Error::NotCanonical { at: 0 }),
            // An extra base64 character beyond the last whole unit.
            (b"&APwA-", Utf7Error::NotCanonical { at: 0 }),
            (b"&AP/-", Utf7Error::InvalidBase64 { at: 3 }),
            (b"&AP=-", Utf7Error::InvalidBase64 { at: 3 }),
            // A lone high surrogate.
            (b"&2D0-", Utf7Error::InvalidUtf16 { at: 0 }),
            (b"caf\xc3\xa9", Utf7Error::NotPrintable { at: 3 }),
            (b"a\tb", Utf7Error::NotPrintable { at: 1 }),
        ];
        for (input, want) in cases {
            assert_eq!(
                decode(input),
                Err(*want),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
