//! Sans-IO IMAP response reader (RFC 9051 §7, the client's side): finds the
//! next response line in the bytes received so far, without copying, and
//! skips the literals (`{n}\r\n` + n bytes) of untagged responses by count,
//! never scanning them for line ends. A load client only needs the first line
//! of each response (the tag and status, `* SEARCH` numbers, `* BYE`,
//! capabilities); the literal bytes and the lines that follow a literal are
//! consumed as they arrive, so a 64 MiB FETCH body never sits in a buffer.
//!
//! [`ResponseReader::next`] consumes a prefix of its input and may return one
//! [`Response`]; consuming nothing means "need more bytes". A line ends at LF
//! (a CR before it is dropped; a bare LF is tolerated, as servers do).

use memchr::{memchr, memrchr};

/// Longest response line, CRLF included: one `* SEARCH` line lists every UID
/// of a mailbox (a million UIDs fit).
pub const RESPONSE_LINE_BYTES_MAX: usize = 8 << 20;
/// Largest literal in a response (a FETCH body).
pub const LITERAL_BYTES_MAX: u64 = 64 << 20;
/// Bytes of a bad line quoted in an error.
const EXCERPT_BYTES: usize = 80;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResponseError {
    #[error("response line longer than {max} bytes")]
    LineTooLong { max: usize },
    #[error("literal of {len} bytes announced (at most {max})")]
    LiteralTooBig { len: u64, max: u64 },
    #[error("not an IMAP response line: {excerpt:?}")]
    Garbage { excerpt: String },
}

/// Limits, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseLimits {
    pub line_bytes_max: usize,
    pub literal_bytes_max: u64,
}

impl Default for ResponseLimits {
    fn default() -> Self {
        Self {
            line_bytes_max: RESPONSE_LINE_BYTES_MAX,
            literal_bytes_max: LITERAL_BYTES_MAX,
        }
    }
}

/// The status of a tagged response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
}

/// The first line of one response, borrowed from the input (CRLF removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response<'a> {
    /// `tag OK|NO|BAD text`.
    Tagged {
        tag: &'a [u8],
        status: Status,
        text: &'a [u8],
    },
    /// `* ...`: what follows `* ` on the first line (a trailing literal
    /// announcement included; the literal and the rest are skipped).
    Untagged(&'a [u8]),
    /// `+ ...`: the text after `+ `.
    Continuation(&'a [u8]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a response.
    Head,
    /// Inside a literal: this many bytes still to skip.
    Literal(u64),
    /// After a literal: the rest of the response's line, which may announce another.
    Tail,
}

/// Splits received bytes into responses; one per connection.
#[derive(Clone, Debug)]
pub struct ResponseReader {
    state: State,
    limits: ResponseLimits,
}

impl ResponseReader {
    pub fn new(limits: ResponseLimits) -> Self {
        Self {
            state: State::Head,
            limits,
        }
    }

    /// Back to the start of a response (a new connection).
    pub fn reset(&mut self) {
        self.state = State::Head;
    }

    pub fn limits(&self) -> ResponseLimits {
        self.limits
    }

    /// Consumes a prefix of `buf`: `(bytes used, a response head if one was
    /// completed)`. `(0, None)` means more bytes are needed.
    pub fn next<'a>(
        &mut self,
        buf: &'a [u8],
    ) -> Result<(usize, Option<Response<'a>>), ResponseError> {
        if let State::Literal(remaining) = self.state {
            let n = remaining.min(buf.len() as u64);
            let left = remaining - n;
            self.state = if left == 0 {
                State::Tail
            } else {
                State::Literal(left)
            };
            return Ok((n as usize, None));
        }
        let window = &buf[..buf.len().min(self.limits.line_bytes_max)];
        let Some(lf) = memchr(b'\n', window) else {
            if buf.len() >= self.limits.line_bytes_max {
                return Err(ResponseError::LineTooLong {
                    max: self.limits.line_bytes_max,
                });
            }
            return Ok((0, None));
        };
        let used = lf + 1;
        let line = &buf[..lf];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if self.state == State::Tail {
            self.after_line(line)?;
            return Ok((used, None));
        }
        let response = if let Some(rest) = line.strip_prefix(b"*") {
            self.after_line(line)?;
            Response::Untagged(rest.strip_prefix(b" ").unwrap_or(rest))
        } else if let Some(rest) = line.strip_prefix(b"+") {
            Response::Continuation(rest.strip_prefix(b" ").unwrap_or(rest))
        } else {
            tagged(line).ok_or_else(|| ResponseError::Garbage {
                excerpt: excerpt(line),
            })?
        };
        Ok((used, Some(response)))
    }

    /// Sets the state after a line of an untagged response: into a literal
    /// when it ends with one, else to the next response.
    fn after_line(&mut self, line: &[u8]) -> Result<(), ResponseError> {
        self.state = match literal_announced(line) {
            Some(len) if len > self.limits.literal_bytes_max => {
                return Err(ResponseError::LiteralTooBig {
                    len,
                    max: self.limits.literal_bytes_max,
                })
            }
            Some(0) => State::Tail,
            Some(len) => State::Literal(len),
            None => State::Head,
        };
        Ok(())
    }
}

/// `{123}` (or `~{123}`, `{123+}`) at the end of a line: the literal's length.
fn literal_announced(line: &[u8]) -> Option<u64> {
    let inner = line.strip_suffix(b"}")?;
    let open = memrchr(b'{', inner)?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// `tag SP (OK|NO|BAD) [SP text]`.
fn tagged(line: &[u8]) -> Option<Response<'_>> {
    let space = memchr(b' ', line)?;
    let tag = &line[..space];
    let tag_ok = !tag.is_empty()
        && tag
            .iter()
            .all(|&b| b.is_ascii_graphic() && !b"(){%*\"\\+".contains(&b));
    if !tag_ok {
        return None;
    }
    let rest = &line[space + 1..];
    let (word, text) = match memchr(b' ', rest) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    let status = if word.eq_ignore_ascii_case(b"OK") {
        Status::Ok
    } else if word.eq_ignore_ascii_case(b"NO") {
        Status::No
    } else if word.eq_ignore_ascii_case(b"BAD") {
        Status::Bad
    } else {
        return None;
    };
    Some(Response::Tagged { tag, status, text })
}

/// The start of a line, printable, for error messages.
pub fn excerpt(line: &[u8]) -> String {
    line[..line.len().min(EXCERPT_BYTES)]
        .escape_ascii()
        .to_string()
}

/// What an untagged response says, as far as the load client cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Untagged<'a> {
    /// `* BYE text`: the server is closing the connection.
    Bye(&'a [u8]),
    /// `* CAPABILITY list`, or the list of an `* OK [CAPABILITY list]` greeting.
    Capability(&'a [u8]),
    /// `* SEARCH n n n ...`: the numbers, space-separated.
    Search(&'a [u8]),
    Other,
}

/// Classifies the text after `* ` of an untagged response.
pub fn classify(line: &[u8]) -> Untagged<'_> {
    let (word, rest) = split_word(line);
    if word.eq_ignore_ascii_case(b"BYE") {
        Untagged::Bye(rest)
    } else if word.eq_ignore_ascii_case(b"CAPABILITY") {
        Untagged::Capability(rest)
    } else if word.eq_ignore_ascii_case(b"SEARCH") {
        Untagged::Search(rest)
    } else if word.eq_ignore_ascii_case(b"OK") || word.eq_ignore_ascii_case(b"PREAUTH") {
        capability_code(rest).map_or(Untagged::Other, Untagged::Capability)
    } else {
        Untagged::Other
    }
}

/// The list inside a `[CAPABILITY ...]` response code at the start of `text`.
pub fn capability_code(text: &[u8]) -> Option<&[u8]> {
    let code = text.strip_prefix(b"[")?;
    let (word, rest) = split_word(code);
    if !word.eq_ignore_ascii_case(b"CAPABILITY") {
        return None;
    }
    let end = memchr(b']', rest)?;
    Some(&rest[..end])
}

/// The UID in an `[APPENDUID validity uid]` response code (RFC 4315) at the start of `text`.
pub fn appended_uid(text: &[u8]) -> Option<u32> {
    let code = text.strip_prefix(b"[")?;
    let (word, rest) = split_word(code);
    if !word.eq_ignore_ascii_case(b"APPENDUID") {
        return None;
    }
    let (_validity, rest) = split_word(rest);
    let end = memchr(b']', rest)?;
    number(&rest[..end])
}

/// True when a capability list names `name` (case-insensitive).
pub fn has_capability(list: &[u8], name: &[u8]) -> bool {
    list.split(|&b| b == b' ')
        .any(|word| word.eq_ignore_ascii_case(name))
}

/// The numbers of a `* SEARCH` line (anything else, such as `(MODSEQ n)`, is skipped).
pub fn search_numbers(list: &[u8]) -> impl Iterator<Item = u32> + '_ {
    list.split(|&b| b == b' ').filter_map(number)
}

fn split_word(text: &[u8]) -> (&[u8], &[u8]) {
    match memchr(b' ', text) {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => (text, &text[text.len()..]),
    }
}

/// A decimal u32 without sign or spaces.
fn number(text: &[u8]) -> Option<u32> {
    if text.is_empty() || text.len() > 10 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response as owned data, to compare across feeds.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Owned {
        Tagged(String, Status, String),
        Untagged(String),
        Continuation(String),
    }

    fn own(r: Response<'_>) -> Owned {
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match r {
            Response::Tagged { tag, status, text } => Owned::Tagged(s(tag), status, s(text)),
            Response::Untagged(t) => Owned::Untagged(s(t)),
            Response::Continuation(t) => Owned::Continuation(s(t)),
        }
    }

    /// Feeds `chunks` the way the client does: parse straight from the new
    /// bytes, keep only an unfinished line. Returns the responses and the
    /// most bytes ever kept.
    fn feed(
        limits: ResponseLimits,
        chunks: &[&[u8]],
    ) -> Result<(Vec<Owned>, usize), ResponseError> {
        let mut reader = ResponseReader::new(limits);
        let mut kept: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        let mut peak = 0;
        for chunk in chunks {
            kept.extend_from_slice(chunk);
            let mut pos = 0;
            loop {
                let (used, response) = reader.next(&kept[pos..])?;
                if let Some(r) = response {
                    out.push(own(r));
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

    fn all_splits(input: &[u8]) -> Vec<Owned> {
        let (whole, _) = feed(ResponseLimits::default(), &[input]).unwrap();
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            let (split, _) = feed(ResponseLimits::default(), &[a, b]).unwrap();
            assert_eq!(split, whole, "split at {at}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        let (single, peak) = feed(ResponseLimits::default(), &bytes).unwrap();
        assert_eq!(single, whole, "byte by byte");
        assert!(peak < 100, "a literal was buffered: {peak} bytes kept");
        whole
    }

    #[test]
    fn session_split_at_every_byte() {
        let input = b"* OK [CAPABILITY IMAP4rev1 LITERAL+ IDLE] ready\r\n\
a1 OK [CAPABILITY IMAP4rev1 UIDPLUS] Logged in\r\n\
* 3 EXISTS\r\n\
* SEARCH 1 2 7\r\n\
* 2 FETCH (UID 7 FLAGS (\\Seen) BODY[] {20}\r\nline one\r\n) {5}\r\n}\r\n)\r\n\
* 2 FETCH (UID 7 BODY[HEADER] {0}\r\n FLAGS ())\r\n\
a2 OK Fetch completed.\r\n\
+ idling\r\n\
+\r\n\
a3 NO [TRYCREATE] no such mailbox\n\
* BYE Logging out\r\n\
a4 bad\r\n";
        let got = all_splits(input);
        let t = |tag: &str, st, text: &str| Owned::Tagged(tag.into(), st, text.into());
        let u = |text: &str| Owned::Untagged(text.into());
        assert_eq!(
            got,
            vec![
                u("OK [CAPABILITY IMAP4rev1 LITERAL+ IDLE] ready"),
                t("a1", Status::Ok, "[CAPABILITY IMAP4rev1 UIDPLUS] Logged in"),
                u("3 EXISTS"),
                u("SEARCH 1 2 7"),
                u("2 FETCH (UID 7 FLAGS (\\Seen) BODY[] {20}"),
                u("2 FETCH (UID 7 BODY[HEADER] {0}"),
                t("a2", Status::Ok, "Fetch completed."),
                Owned::Continuation("idling".into()),
                Owned::Continuation("".into()),
                t("a3", Status::No, "[TRYCREATE] no such mailbox"),
                u("BYE Logging out"),
                t("a4", Status::Bad, ""),
            ]
        );
    }

    #[test]
    fn a_literal_that_looks_like_responses_is_skipped_by_count() {
        // The literal holds CRLFs, a fake tagged OK, `)` and a fake literal announcement.
        let body = b"a9 OK fake\r\n* BYE fake\r\n) {99}\r\n";
        let mut input = format!("* 1 FETCH (BODY[] {{{}}}\r\n", body.len()).into_bytes();
        input.extend_from_slice(body);
        input.extend_from_slice(b")\r\na9 OK real\r\n");
        let got = all_splits(&input);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            got[1],
            Owned::Tagged("a9".into(), Status::Ok, "real".into())
        );
    }

    #[test]
    fn limits_and_garbage_are_errors() {
        let small = ResponseLimits {
            line_bytes_max: 16,
            literal_bytes_max: 10,
        };
        assert_eq!(
            feed(small, &[b"* 0123456789012345"]),
            Err(ResponseError::LineTooLong { max: 16 })
        );
        assert_eq!(
            feed(small, &[b"* 1 FETCH {11}\r\n"]),
            Err(ResponseError::LiteralTooBig { len: 11, max: 10 })
        );
        assert!(feed(small, &[b"* 1 FETCH {10}\r\n0123456789)\r\n"]).is_ok());
        for garbage in [
            &b"hello\r\n"[..],
            b"a1 MAYBE so\r\n",
            b" a1 OK\r\n",
            b"a(1 OK x\r\n",
        ] {
            assert!(
                matches!(feed(small, &[garbage]), Err(ResponseError::Garbage { .. })),
                "{garbage:?}"
            );
        }
        // A brace that is not a literal announcement is just text.
        assert_eq!(literal_announced(b"* OK {abc}"), None);
        assert_eq!(literal_announced(b"* OK {99999999999999999999}"), None);
        assert_eq!(literal_announced(b"* X ~{12}"), Some(12));
    }

    #[test]
    fn untagged_classification() {
        assert_eq!(classify(b"BYE Logging out"), Untagged::Bye(b"Logging out"));
        assert_eq!(classify(b"bye"), Untagged::Bye(b""));
        assert_eq!(
            classify(b"OK [CAPABILITY IMAP4rev1 LITERAL+] hi"),
            Untagged::Capability(b"IMAP4rev1 LITERAL+")
        );
        assert_eq!(classify(b"CAPABILITY A B"), Untagged::Capability(b"A B"));
        assert_eq!(classify(b"OK [UIDNEXT 5] x"), Untagged::Other);
        assert_eq!(classify(b"12 EXISTS"), Untagged::Other);
        assert_eq!(classify(b"12 RECENT"), Untagged::Other);
        assert_eq!(classify(b"SEARCH"), Untagged::Search(b""));
        let nums: Vec<u32> = search_numbers(b"1 5 x 4294967295 4294967296 (MODSEQ 9)").collect();
        assert_eq!(nums, [1, 5, 4294967295]);
        assert!(has_capability(b"IMAP4rev1 literal+ IDLE", b"LITERAL+"));
        assert!(!has_capability(b"IMAP4rev1 LITERAL-", b"LITERAL+"));
        assert_eq!(appended_uid(b"[APPENDUID 38505 3955] done"), Some(3955));
        assert_eq!(appended_uid(b"[APPENDUID 38505 1:3] multi"), None);
        assert_eq!(appended_uid(b"Append completed."), None);
        assert_eq!(capability_code(b"[CAPABILITY A] x"), Some(&b"A"[..]));
    }
}
