//! Sans-IO SMTP reply parser (RFC 5321 §4.2): finds one complete, possibly
//! multi-line reply (`250-first`, `250-second`, `250 last`) at the start of a
//! buffer. Partial input is the normal `Incomplete` state; nothing is copied or
//! allocated on the success path. Bare LF line ends are tolerated.

use memchr::memchr;

/// Longest reply line accepted, CRLF included (RFC 5321 allows 512; be lenient).
pub const REPLY_LINE_BYTES_MAX: usize = 4096;
/// Most lines accepted in one multi-line reply (EHLO lists are ~10-20).
pub const REPLY_LINES_MAX: usize = 256;

/// Outcome of looking for one reply at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// `len` bytes at the start of the buffer form one reply with this code.
    Complete { code: u16, len: usize },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplyError {
    #[error("reply line {line} is not `DDD[ -]text`: {excerpt:?}")]
    Malformed { line: usize, excerpt: String },
    #[error("reply line {line} has code {found}, the reply started with {expected}")]
    CodeMismatch {
        line: usize,
        expected: u16,
        found: u16,
    },
    #[error("reply line {line} is longer than {max} bytes", max = REPLY_LINE_BYTES_MAX)]
    LineTooLong { line: usize },
    #[error("reply has more than {max} lines", max = REPLY_LINES_MAX)]
    TooManyLines,
}

/// Looks for one complete reply at the start of `buf`.
pub fn parse_reply(buf: &[u8]) -> Result<Parsed, ReplyError> {
    let mut pos = 0;
    let mut code = 0u16;
    for line in 1..=REPLY_LINES_MAX {
        let rest = &buf[pos..];
        let Some(newline) = memchr(b'\n', rest) else {
            if rest.len() >= REPLY_LINE_BYTES_MAX {
                return Err(ReplyError::LineTooLong { line });
            }
            return Ok(Parsed::Incomplete);
        };
        if newline + 1 > REPLY_LINE_BYTES_MAX {
            return Err(ReplyError::LineTooLong { line });
        }
        let text = strip_cr(&rest[..newline]);
        let (line_code, last) = parse_line_head(text).ok_or_else(|| ReplyError::Malformed {
            line,
            excerpt: excerpt(text),
        })?;
        if line == 1 {
            code = line_code;
        } else if line_code != code {
            return Err(ReplyError::CodeMismatch {
                line,
                expected: code,
                found: line_code,
            });
        }
        pos += newline + 1;
        if last {
            return Ok(Parsed::Complete { code, len: pos });
        }
    }
    Err(ReplyError::TooManyLines)
}

/// The text of every line of one complete reply (after `DDD-`/`DDD `, without
/// the line end). For EHLO the first is the server's name, then one keyword line each.
pub fn reply_texts(reply: &[u8]) -> impl Iterator<Item = &[u8]> {
    reply
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            let line = strip_cr(line);
            line.get(4..).unwrap_or(&[])
        })
}

/// True when an EHLO reply lists `keyword` (case-insensitive, parameters ignored).
pub fn ehlo_has_keyword(reply: &[u8], keyword: &[u8]) -> bool {
    reply_texts(reply).skip(1).any(|text| {
        let word = text.split(|&b| b == b' ').next().unwrap_or(&[]);
        word.eq_ignore_ascii_case(keyword)
    })
}

/// A short printable rendering of a reply line for error messages.
pub fn excerpt(bytes: &[u8]) -> String {
    const EXCERPT_BYTES_MAX: usize = 80;
    let cut = &bytes[..bytes.len().min(EXCERPT_BYTES_MAX)];
    String::from_utf8_lossy(strip_cr(cut.split(|&b| b == b'\n').next().unwrap_or(&[]))).into_owned()
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `DDD` then end of line, space or hyphen. Returns the code and whether this
/// is the last line. The first digit must be 2-5 (RFC 5321 §4.2).
fn parse_line_head(line: &[u8]) -> Option<(u16, bool)> {
    let digits = line.get(..3)?;
    if !(b'2'..=b'5').contains(&digits[0]) || !digits[1..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    match line.get(3) {
        None | Some(b' ') => Some((code, true)),
        Some(b'-') => Some((code, false)),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EHLO: &[u8] =
        b"250-sink.test greets you\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n";

    #[test]
    fn single_line_reply() {
        assert_eq!(
            parse_reply(b"250 2.0.0 Ok: queued\r\n"),
            Ok(Parsed::Complete { code: 250, len: 22 })
        );
        assert_eq!(
            parse_reply(b"354\r\n"),
            Ok(Parsed::Complete { code: 354, len: 5 })
        );
        assert_eq!(
            parse_reply(b"221 bye\n"),
            Ok(Parsed::Complete { code: 221, len: 8 })
        );
    }

    #[test]
    fn multi_line_reply_is_one_reply() {
        assert_eq!(
            parse_reply(EHLO),
            Ok(Parsed::Complete {
                code: 250,
                len: EHLO.len()
            })
        );
    }

    #[test]
    fn only_the_first_of_several_pipelined_replies_is_taken() {
        let buf = b"250 ok\r\n250 ok rcpt\r\n354 go\r\n";
        assert_eq!(parse_reply(buf), Ok(Parsed::Complete { code: 250, len: 8 }));
        assert_eq!(
            parse_reply(&buf[8..]),
            Ok(Parsed::Complete { code: 250, len: 13 })
        );
        assert_eq!(
            parse_reply(&buf[21..]),
            Ok(Parsed::Complete { code: 354, len: 8 })
        );
    }

    #[test]
    fn every_split_of_a_multi_line_reply_is_incomplete_until_the_end() {
        for cut in 0..EHLO.len() {
            assert_eq!(
                parse_reply(&EHLO[..cut]),
                Ok(Parsed::Incomplete),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn split_reads_accumulated_byte_by_byte_give_each_reply_once() {
        let stream: &[u8] = b"220 hi\r\n250-a\r\n250 b\r\n451 4.3.0 later\r\n";
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for &b in stream {
            buf.push(b);
            if let Parsed::Complete { code, len } = parse_reply(&buf).unwrap() {
                got.push(code);
                buf.drain(..len);
            }
        }
        assert_eq!(got, [220, 250, 451]);
        assert!(buf.is_empty());
    }

    #[test]
    fn malformed_lines_are_errors() {
        for bad in [
            &b"25 x\r\n"[..],
            b"abc\r\n",
            b"250x\r\n",
            b"650 no\r\n",
            b"\r\n",
        ] {
            assert!(
                matches!(parse_reply(bad), Err(ReplyError::Malformed { line: 1, .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn code_change_inside_a_reply_is_an_error() {
        assert_eq!(
            parse_reply(b"250-a\r\n251 b\r\n"),
            Err(ReplyError::CodeMismatch {
                line: 2,
                expected: 250,
                found: 251
            })
        );
    }

    #[test]
    fn overlong_line_is_an_error_even_without_its_end() {
        let mut long = b"250 ".to_vec();
        long.resize(REPLY_LINE_BYTES_MAX, b'x');
        assert_eq!(parse_reply(&long), Err(ReplyError::LineTooLong { line: 1 }));
        long.truncate(REPLY_LINE_BYTES_MAX - 2);
        long.extend_from_slice(b"\r\n");
        assert!(matches!(parse_reply(&long), Ok(Parsed::Complete { .. })));
    }

    #[test]
    fn too_many_lines_is_an_error() {
        let reply = b"250-x\r\n".repeat(REPLY_LINES_MAX + 1);
        assert_eq!(parse_reply(&reply), Err(ReplyError::TooManyLines));
    }

    #[test]
    fn ehlo_keywords() {
        assert!(ehlo_has_keyword(EHLO, b"pipelining"));
        assert!(ehlo_has_keyword(EHLO, b"SIZE"));
        assert!(!ehlo_has_keyword(EHLO, b"CHUNKING"));
        // The greeting line is the server's name, never a keyword.
        assert!(!ehlo_has_keyword(
            b"250-PIPELINING\r\n250 SIZE\r\n",
            b"PIPELINING"
        ));
        let texts: Vec<&[u8]> = reply_texts(b"250-a b\r\n250 c\r\n").collect();
        assert_eq!(texts, [&b"a b"[..], b"c"]);
    }
}
