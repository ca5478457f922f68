//! CRLF line framing shared by the line-based protocols (SMTP commands, POP3), sans-IO: one
//! `memchr` per line over the caller's buffer, a hard line-length limit, and the named state
//! "discarding to end of line" for overlong lines (answered once their end arrives, the
//! connection kept, nothing buffered).
//!
//! A line ends at LF; one CR right before it is part of the terminator (a bare LF is accepted
//! as the end of a command line, as Postfix and Dovecot do). The limit counts the terminator.

use memchr::memchr;

/// What [`LineReader::next_line`] found at the start of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line, without its terminator; `consumed` includes the terminator.
    Line { line: &'a [u8], consumed: usize },
    /// The end of an overlong line arrived: reply "line too long". `consumed`
    /// covers the discarded bytes up to and including the LF.
    TooLong { consumed: usize },
    /// Inside an overlong line without its end yet: consume and wait for more.
    Discarded { consumed: usize },
    /// No complete line yet and still within the limit: consume nothing.
    Incomplete,
}

impl Frame<'_> {
    /// Bytes of input this frame accounts for.
    pub fn consumed(&self) -> usize {
        match *self {
            Frame::Line { consumed, .. }
            | Frame::TooLong { consumed }
            | Frame::Discarded { consumed } => consumed,
            Frame::Incomplete => 0,
        }
    }
}

/// Splits command lines. The only state is whether an overlong line is being
/// discarded, so a reader can be kept for the whole connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineReader {
    discarding: bool,
}

impl LineReader {
    pub fn new() -> LineReader {
        LineReader::default()
    }

    /// True while the rest of an overlong line is being thrown away.
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }

    /// Frames the next line at the start of `input`. `line_bytes_max` counts the
    /// terminator. Never asks to keep more than `line_bytes_max - 1` bytes.
    pub fn next_line<'a>(&mut self, input: &'a [u8], line_bytes_max: usize) -> Frame<'a> {
        if self.discarding {
            return match memchr(b'\n', input) {
                Some(lf) => {
                    self.discarding = false;
                    Frame::TooLong { consumed: lf + 1 }
                }
                None if input.is_empty() => Frame::Incomplete,
                None => Frame::Discarded {
                    consumed: input.len(),
                },
            };
        }
        let window = &input[..input.len().min(line_bytes_max)];
        match memchr(b'\n', window) {
            Some(lf) => {
                let end = if lf > 0 && input[lf - 1] == b'\r' {
                    lf - 1
                } else {
                    lf
                };
                Frame::Line {
                    line: &input[..end],
                    consumed: lf + 1,
                }
            }
            // `line_bytes_max` bytes without LF: the line is at least one byte too long.
            None if input.len() >= line_bytes_max => {
                self.discarding = true;
                // Re-enter in discarding mode: the LF may be right after the window.
                self.next_line(input, line_bytes_max)
            }
            None => Frame::Incomplete,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Event {
        Line(Vec<u8>),
        TooLong,
    }

    /// Runs `input` through a reader the way a driver does: a buffer keeps the
    /// unconsumed bytes, each chunk is appended, frames are taken until none.
    fn run(chunks: &[&[u8]], max: usize) -> (Vec<Event>, usize) {
        let mut reader = LineReader::new();
        let mut buffer = Vec::new();
        let mut events = Vec::new();
        let mut buffered_max = 0;
        for chunk in chunks {
            buffer.extend_from_slice(chunk);
            buffered_max = buffered_max.max(buffer.len());
            loop {
                let frame = reader.next_line(&buffer, max);
                let consumed = frame.consumed();
                match frame {
                    Frame::Line { line, .. } => events.push(Event::Line(line.to_vec())),
                    Frame::TooLong { .. } => events.push(Event::TooLong),
                    Frame::Discarded { .. } => {}
                    Frame::Incomplete => break,
                }
                buffer.drain(..consumed);
            }
            // What stays buffered is always less than one line.
            assert!(buffer.len() < max, "buffer grew to {}", buffer.len());
        }
        (events, buffered_max)
    }

    fn check_all_splits(input: &[u8], max: usize, want: &[Event]) {
        let (whole, _) = run(&[input], max);
        assert_eq!(whole, want, "whole input");
        for cut in 0..=input.len() {
            let (left, right) = input.split_at(cut);
            let (events, _) = run(&[left, right], max);
            assert_eq!(events, want, "split at {cut}");
        }
        for a in 0..=input.len() {
            for b in a..=input.len() {
                let (events, _) = run(&[&input[..a], &input[a..b], &input[b..]], max);
                assert_eq!(events, want, "split at {a} and {b}");
            }
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        let (events, buffered_max) = run(&bytes, max);
        assert_eq!(events, want, "byte by byte");
        assert!(buffered_max <= max);
    }

    fn line(s: &str) -> Event {
        Event::Line(s.as_bytes().to_vec())
    }

    #[test]
    fn crlf_and_bare_lf_lines() {
        check_all_splits(
            b"EHLO a\r\nNOOP\nQUIT\r\n\r\n",
            16,
            &[line("EHLO a"), line("NOOP"), line("QUIT"), line("")],
        );
        check_all_splits(
            b"USER a\r\nSTAT\nQUIT\r\n\r\n",
            16,
            &[line("USER a"), line("STAT"), line("QUIT"), line("")],
        );
    }

    #[test]
    fn cr_inside_a_line_is_kept() {
        check_all_splits(b"A\rB\r\r\n", 16, &[line("A\rB\r")]);
    }

    #[test]
    fn partial_line_consumes_nothing() {
        let mut reader = LineReader::new();
        assert_eq!(reader.next_line(b"MAIL FROM:<a@b>", 512), Frame::Incomplete);
        assert_eq!(
            reader.next_line(b"MAIL FROM:<a@b>\r", 512),
            Frame::Incomplete
        );
        assert_eq!(reader.next_line(b"", 512), Frame::Incomplete);
        assert!(!reader.is_discarding());
    }

    #[test]
    fn limit_counts_the_terminator() {
        // 8 bytes including CRLF fits in 8; 9 does not.
        check_all_splits(b"123456\r\nX\r\n", 8, &[line("123456"), line("X")]);
        check_all_splits(b"1234567\r\nX\r\n", 8, &[Event::TooLong, line("X")]);
        // Bare LF: 7 bytes + LF = 8 fits.
        check_all_splits(b"1234567\nX\n", 8, &[line("1234567"), line("X")]);
        check_all_splits(b"12345678\nX\n", 8, &[Event::TooLong, line("X")]);
    }

    #[test]
    fn overlong_line_is_discarded_then_reader_recovers() {
        for (a_len, b_len) in [(100, 40), (40, 20)] {
            let mut input = vec![b'a'; a_len];
            input.extend_from_slice(b"\r\nNOOP\r\n");
            input.extend_from_slice(&vec![b'b'; b_len]);
            input.extend_from_slice(b"\nQUIT\r\n");
            check_all_splits(
                &input,
                16,
                &[Event::TooLong, line("NOOP"), Event::TooLong, line("QUIT")],
            );
        }
    }

    #[test]
    fn full_buffer_always_makes_progress() {
        let mut reader = LineReader::new();
        let input = [b'x'; 64];
        // A buffer holding `max` bytes without LF switches to discarding at once.
        assert_eq!(
            reader.next_line(&input, 64),
            Frame::Discarded { consumed: 64 }
        );
        assert!(reader.is_discarding());
        assert_eq!(reader.next_line(b"", 64), Frame::Incomplete);
        assert_eq!(
            reader.next_line(b"yy\r\nZ", 64),
            Frame::TooLong { consumed: 4 }
        );
        assert!(!reader.is_discarding());
        assert_eq!(reader.next_line(b"Z", 64), Frame::Incomplete);

        let mut reader = LineReader::new();
        assert_eq!(
            reader.next_line(&[b'x'; 32], 32),
            Frame::Discarded { consumed: 32 }
        );
        assert!(reader.is_discarding());
        assert_eq!(reader.next_line(b"", 32), Frame::Incomplete);
        assert_eq!(
            reader.next_line(b"y\r\nZ", 32),
            Frame::TooLong { consumed: 3 }
        );
        assert_eq!(reader.next_line(b"Z", 32), Frame::Incomplete);
    }
}

/// Test support for the session tests of the line protocols (SMTP, POP3): the transcript
/// format of `tests/transcripts/README` (`C:` text sent with CRLF, `C~:` exact bytes with
/// the escapes `\r \n \t \\ \xNN`, `S:` one expected line where `{*}` matches any run of
/// bytes other than CR and LF, `S! close`, `C! starttls`), parsed into blocks and checked.
/// A block ends at `C! starttls`: the runner then checks that the session asked for TLS,
/// drops what the driver had buffered and calls the session's `tls_started`.
#[cfg(test)]
pub(crate) mod transcript {
    /// One block: bytes the client sends, then the lines the server answers; then maybe
    /// the server's close, or the client starting TLS (`C! starttls`).
    #[derive(Debug, Default)]
    pub(crate) struct Block {
        pub send: Vec<u8>,
        pub expect: Vec<String>,
        pub close: bool,
        pub starttls: bool,
    }

    impl Block {
        /// Asserts that `output` is exactly this block's lines and `closed` its close.
        pub fn check(&self, output: &str, closed: bool, context: &str) {
            let lines: Vec<&str> = output.split_terminator("\r\n").collect();
            assert_eq!(lines.len(), self.expect.len(), "{context}: got {lines:#?}");
            for (got, want) in lines.iter().zip(&self.expect) {
                assert!(matches(want, got), "{context}: want {want:?}, got {got:?}");
            }
            assert_eq!(closed, self.close, "{context}: close");
        }
    }

    pub(crate) fn unescape(text: &str) -> Vec<u8> {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'\\' {
                out.push(bytes[i]);
                i += 1;
                continue;
            }
            match bytes[i + 1] {
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'\\' => out.push(b'\\'),
                b'x' => {
                    let hex = std::str::from_utf8(&bytes[i + 2..i + 4]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                other => panic!("bad escape \\{}", other as char),
            }
            i += 2;
        }
        out
    }

    /// Blocks of client bytes followed by the server lines they must produce.
    pub(crate) fn parse(text: &str) -> Vec<Block> {
        let mut blocks = vec![Block::default()];
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let current = blocks.last_mut().unwrap();
            let client = if let Some(rest) = line.strip_prefix("C: ") {
                Some([rest.as_bytes(), b"\r\n"].concat())
            } else {
                line.strip_prefix("C~: ").map(unescape)
            };
            if let Some(bytes) = client {
                assert!(!current.close, "client sends after close");
                if !current.expect.is_empty() || current.starttls {
                    blocks.push(Block::default());
                }
                blocks.last_mut().unwrap().send.extend_from_slice(&bytes);
            } else if line == "S:" || line.starts_with("S: ") {
                assert!(!current.close, "server line after close");
                if current.starttls {
                    blocks.push(Block::default());
                }
                let current = blocks.last_mut().unwrap();
                current.expect.push(line.get(3..).unwrap_or("").to_owned());
            } else if line == "S! close" {
                assert!(!current.starttls, "S! close right after C! starttls");
                current.close = true;
            } else if line.trim_end() == "C! starttls" {
                assert!(!current.close, "C! starttls after close");
                assert!(!current.starttls, "C! starttls twice in a row");
                current.starttls = true;
            } else {
                panic!("bad transcript line {line:?}");
            }
        }
        blocks
    }

    /// `pattern` with `{*}` matching any run of bytes other than CR/LF.
    pub(crate) fn matches(pattern: &str, line: &str) -> bool {
        match pattern.split_once("{*}") {
            None => pattern == line,
            Some((head, tail)) => {
                let Some(rest) = line.strip_prefix(head) else {
                    return false;
                };
                (0..=rest.len())
                    .filter(|&i| rest.is_char_boundary(i))
                    .any(|i| !rest[..i].contains(['\r', '\n']) && matches(tail, &rest[i..]))
            }
        }
    }

    #[test]
    fn starttls_ends_a_block() {
        let blocks = parse(
            "S: 220 x\nC~: STARTTLS\\r\\nRSET\\r\\n\nS: 220 go\nC! starttls\n\
             C: NOOP\nS: 250 ok\nC: STARTTLS\nC! starttls\nS: 250 late\nS! close\n",
        );
        let summary: Vec<(&[u8], usize, bool, bool)> = blocks
            .iter()
            .map(|b| (&b.send[..], b.expect.len(), b.starttls, b.close))
            .collect();
        assert_eq!(
            summary,
            [
                (&b""[..], 1, false, false),
                (&b"STARTTLS\r\nRSET\r\n"[..], 1, true, false),
                (&b"NOOP\r\n"[..], 1, false, false),
                (&b"STARTTLS\r\n"[..], 0, true, false),
                (&b""[..], 1, false, true),
            ]
        );
    }

    #[test]
    #[should_panic(expected = "C! starttls after close")]
    fn starttls_after_close_is_refused() {
        parse("S: 220 x\nS! close\nC! starttls\n");
    }

    /// Every `tests/transcripts/<protocol>/*.txt` as (name, text), sorted by name; asserts
    /// that each of `required` is there.
    pub(crate) fn load(protocol: &str, required: &[&str]) -> Vec<(String, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/transcripts")
            .join(protocol);
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "txt") {
                let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
                files.push((name, std::fs::read_to_string(&path).unwrap()));
            }
        }
        files.sort();
        for required in required {
            assert!(
                files.iter().any(|(n, _)| n == required),
                "missing {required}.txt"
            );
        }
        files
    }
}
