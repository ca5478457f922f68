//! Sans-IO framing of SMTP command lines: one `memchr` per line over the
//! caller's buffer, a hard line-length limit, and the named state "discarding
//! to end of line" for overlong lines (answered once their end arrives, the
//! connection kept, nothing buffered).
//!
//! A command line ends at LF; one CR right before it is part of the terminator.
//! Like Postfix, a bare LF is accepted as the end of a *command* line. (Message
//! content is framed by [`super::data`], where only CRLF counts.) The limit is
//! on the whole line including its terminator (RFC 5321 4.5.3.1.4: 512).

pub use crate::line::{Frame, LineReader};

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
        let mut input = vec![b'a'; 100];
        input.extend_from_slice(b"\r\nNOOP\r\n");
        input.extend_from_slice(&[b'b'; 40]);
        input.extend_from_slice(b"\nQUIT\r\n");
        check_all_splits(
            &input,
            16,
            &[Event::TooLong, line("NOOP"), Event::TooLong, line("QUIT")],
        );
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
    }
}
