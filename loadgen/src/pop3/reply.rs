//! Sans-IO POP3 reply reader (RFC 1939 §3, the client's side): a status line
//! (`+OK text` / `-ERR text`) and, after `+OK` to a multi-line command (RETR),
//! the message lines up to the terminating `.\r\n`. The message is consumed as
//! it arrives, never buffered: a byte-level state machine tracks only whether
//! the current line could still be the terminator, jumping to the next LF with
//! memchr. Dot-stuffed lines (`..x`) are message data, not the end.
//!
//! [`ReplyReader::next`] consumes a prefix of its input and may return one
//! [`Reply`] event; consuming nothing means "need more bytes".

use memchr::memchr;

/// Longest status line, CRLF included (RFC 2449 says 512; be lenient).
pub const STATUS_LINE_BYTES_MAX: usize = 8192;
/// Largest multi-line body (a message).
pub const BODY_BYTES_MAX: u64 = 64 << 20;
/// Bytes of a bad line quoted in an error.
const EXCERPT_BYTES: usize = 80;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplyError {
    #[error("status line longer than {max} bytes")]
    LineTooLong { max: usize },
    #[error("not a POP3 status line: {excerpt:?}")]
    Malformed { excerpt: String },
    #[error("multi-line reply longer than {max} bytes")]
    BodyTooBig { max: u64 },
}

/// Limits, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyLimits {
    pub line_bytes_max: usize,
    pub body_bytes_max: u64,
}

impl Default for ReplyLimits {
    fn default() -> Self {
        Self {
            line_bytes_max: STATUS_LINE_BYTES_MAX,
            body_bytes_max: BODY_BYTES_MAX,
        }
    }
}

/// What the reader found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// A status line (CRLF removed). With `body_follows`, a [`Reply::BodyEnd`] comes next.
    Status {
        ok: bool,
        text: &'a [u8],
        body_follows: bool,
    },
    /// The `.\r\n` after a multi-line body of `body_bytes` (as sent, stuffing included).
    BodyEnd { body_bytes: u64 },
}

/// Where the reader is inside a multi-line body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    /// At the start of a line.
    LineStart,
    /// `.` at the start of a line.
    Dot,
    /// `.\r` at the start of a line.
    DotCr,
    /// Inside a line that is not the terminator.
    Mid,
}

#[derive(Clone, Debug)]
pub struct ReplyReader {
    body: Option<Body>,
    body_bytes: u64,
    limits: ReplyLimits,
}

impl ReplyReader {
    pub fn new(limits: ReplyLimits) -> Self {
        Self {
            body: None,
            body_bytes: 0,
            limits,
        }
    }

    /// Back to the start of a reply (a new connection).
    pub fn reset(&mut self) {
        self.body = None;
        self.body_bytes = 0;
    }

    pub fn limits(&self) -> ReplyLimits {
        self.limits
    }

    /// Consumes a prefix of `buf`. `multi_line`: the command in flight
    /// answers `+OK` with a body (RETR); `-ERR` never has one.
    pub fn next<'a>(
        &mut self,
        buf: &'a [u8],
        multi_line: bool,
    ) -> Result<(usize, Option<Reply<'a>>), ReplyError> {
        if let Some(state) = self.body {
            return self.body(buf, state);
        }
        let window = &buf[..buf.len().min(self.limits.line_bytes_max)];
        let Some(lf) = memchr(b'\n', window) else {
            if buf.len() >= self.limits.line_bytes_max {
                return Err(ReplyError::LineTooLong {
                    max: self.limits.line_bytes_max,
                });
            }
            return Ok((0, None));
        };
        let line = &buf[..lf];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (word, text) = match memchr(b' ', line) {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &line[line.len()..]),
        };
        let ok = if word.eq_ignore_ascii_case(b"+OK") {
            true
        } else if word.eq_ignore_ascii_case(b"-ERR") {
            false
        } else {
            return Err(ReplyError::Malformed {
                excerpt: line[..line.len().min(EXCERPT_BYTES)]
                    .escape_ascii()
                    .to_string(),
            });
        };
        let body_follows = ok && multi_line;
        if body_follows {
            self.body = Some(Body::LineStart);
            self.body_bytes = 0;
        }
        Ok((
            lf + 1,
            Some(Reply::Status {
                ok,
                text,
                body_follows,
            }),
        ))
    }

    /// Skips body bytes up to and including the terminator.
    fn body<'a>(
        &mut self,
        buf: &'a [u8],
        mut state: Body,
    ) -> Result<(usize, Option<Reply<'a>>), ReplyError> {
        let mut pos = 0;
        let mut end = false;
        while pos < buf.len() {
            let b = buf[pos];
            match state {
                Body::Mid => match memchr(b'\n', &buf[pos..]) {
                    Some(i) => {
                        pos += i + 1;
                        state = Body::LineStart;
                    }
                    None => pos = buf.len(),
                },
                Body::LineStart => {
                    state = match b {
                        b'.' => Body::Dot,
                        b'\n' => Body::LineStart,
                        _ => Body::Mid,
                    };
                    pos += 1;
                }
                Body::Dot => {
                    state = match b {
                        b'\r' => Body::DotCr,
                        b'\n' => Body::LineStart,
                        _ => Body::Mid,
                    };
                    pos += 1;
                }
                Body::DotCr => {
                    if b == b'\n' {
                        pos += 1;
                        end = true;
                        break;
                    }
                    // `.\r` and more on the line: data; look at this byte again.
                    state = Body::Mid;
                }
            }
        }
        self.body_bytes += pos as u64;
        if self.body_bytes > self.limits.body_bytes_max.saturating_add(3) {
            return Err(ReplyError::BodyTooBig {
                max: self.limits.body_bytes_max,
            });
        }
        if end {
            self.body = None;
            let body_bytes = self.body_bytes - 3;
            self.body_bytes = 0;
            return Ok((pos, Some(Reply::BodyEnd { body_bytes })));
        }
        self.body = Some(state);
        Ok((pos, None))
    }
}

/// The message count of a STAT reply's text (`2 320`).
pub fn stat_count(text: &[u8]) -> Option<u32> {
    let digits = text.split(|&b| b == b' ').next()?;
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Owned {
        Status(bool, String, bool),
        BodyEnd(u64),
    }

    /// Feeds `chunks`, keeping only unfinished status lines; `multi` says
    /// which replies (by index) are to multi-line commands.
    fn feed(
        limits: ReplyLimits,
        chunks: &[&[u8]],
        multi: &[usize],
    ) -> Result<(Vec<Owned>, usize), ReplyError> {
        let mut reader = ReplyReader::new(limits);
        let mut kept: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        let mut statuses = 0;
        let mut peak = 0;
        for chunk in chunks {
            kept.extend_from_slice(chunk);
            let mut pos = 0;
            loop {
                let (used, reply) = reader.next(&kept[pos..], multi.contains(&statuses))?;
                match reply {
                    Some(Reply::Status {
                        ok,
                        text,
                        body_follows,
                    }) => {
                        statuses += 1;
                        out.push(Owned::Status(
                            ok,
                            String::from_utf8_lossy(text).into_owned(),
                            body_follows,
                        ));
                    }
                    Some(Reply::BodyEnd { body_bytes }) => out.push(Owned::BodyEnd(body_bytes)),
                    None => {}
                }
                if used == 0 {
                    break;
                }
                pos += used;
            }
            kept.drain(..pos);
            peak = peak.max(kept.len());
        }
        Ok((out, peak))
    }

    #[test]
    fn session_split_at_every_byte() {
        let body: &[u8] = b"Subject: x\r\n\r\n..leading dot\r\n..\r\n.x\r\n.\rx\r\n\r\nend\r\n";
        let mut input = b"+OK ready\r\n+OK 2 320\r\n+OK message follows\r\n".to_vec();
        input.extend_from_slice(body);
        input.extend_from_slice(b".\r\n-ERR no such message\r\n+OK\r\n.\r\n+OK bye\n");
        // Replies 2 and 3 (RETR) and 4 (RETR of an empty message) are multi-line.
        let multi = [2, 3, 4];
        let (whole, _) = feed(ReplyLimits::default(), &[&input], &multi).unwrap();
        let s = |ok, t: &str, b| Owned::Status(ok, t.into(), b);
        assert_eq!(
            whole,
            vec![
                s(true, "ready", false),
                s(true, "2 320", false),
                s(true, "message follows", true),
                Owned::BodyEnd(body.len() as u64),
                s(false, "no such message", false),
                s(true, "", true),
                Owned::BodyEnd(0),
                s(true, "bye", false),
            ]
        );
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            let (split, _) = feed(ReplyLimits::default(), &[a, b], &multi).unwrap();
            assert_eq!(split, whole, "split at {at}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        let (single, peak) = feed(ReplyLimits::default(), &bytes, &multi).unwrap();
        assert_eq!(single, whole);
        assert!(peak < 30, "the body was buffered: {peak}");
    }

    #[test]
    fn limits_and_garbage() {
        let small = ReplyLimits {
            line_bytes_max: 16,
            body_bytes_max: 8,
        };
        assert_eq!(
            feed(small, &[b"+OK 01234567890123"], &[]),
            Err(ReplyError::LineTooLong { max: 16 })
        );
        assert_eq!(
            feed(small, &[b"+OK\r\n123456789\r\n.\r\n"], &[0]),
            Err(ReplyError::BodyTooBig { max: 8 })
        );
        assert!(feed(small, &[b"+OK\r\n123456\r\n.\r\n"], &[0]).is_ok());
        for bad in [&b"OK\r\n"[..], b"+OKAY\r\n", b"* OK\r\n", b"\r\n"] {
            assert!(
                matches!(feed(small, &[bad], &[]), Err(ReplyError::Malformed { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn stat_counts() {
        assert_eq!(stat_count(b"2 320"), Some(2));
        assert_eq!(stat_count(b"0 0"), Some(0));
        assert_eq!(stat_count(b"x 1"), None);
        assert_eq!(stat_count(b""), None);
        assert_eq!(stat_count(b"99999999999 1"), None);
    }
}
