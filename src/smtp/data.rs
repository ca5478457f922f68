//! Sans-IO decoder for the DATA phase: finds the end of data and removes
//! dot-stuffing in one streaming pass (RFC 5321 4.5.2), with limits on the
//! message size and on the text line length.
//!
//! Lines are delimited by CRLF only. Exactly `CRLF . CRLF` ends the data (the
//! DATA command's own line end counts as the first CRLF); the bare-newline
//! variants (`LF . LF`, `LF . CRLF`, `CR . CRLF`) are ordinary data bytes, so a
//! message cannot smuggle a second one past this server (SMTP smuggling). A line
//! starting with `.` loses that one dot. The input may be split at any byte
//! between calls; the result does not depend on where.
//!
//! One `memchr` per line; whole runs of the line are copied with one
//! `extend_from_slice`. On a limit violation the decoder keeps scanning for the
//! end of data but stores nothing more, so memory stays bounded.

use memchr::memchr;
use thiserror::Error;

/// Why a message was refused after its data was read to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DataError {
    #[error("message exceeds {message_bytes_max} bytes")]
    TooBig { message_bytes_max: usize },
    #[error("text line exceeds {text_line_bytes_max} bytes including CRLF")]
    LineTooLong { text_line_bytes_max: usize },
}

/// Result of one [`DataDecoder::decode`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataProgress {
    /// All input was consumed; the end of data has not been seen yet.
    NeedMore,
    /// The end-of-data line was consumed (it is not part of the message).
    /// `Err` means the message was read to its end but not stored completely.
    End(Result<(), DataError>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (after CRLF, or at the start of data).
    LineStart,
    /// After CRLF and a dot, which has been dropped.
    Dot,
    /// After CRLF, a dropped dot and CR: LF here ends the data.
    DotCr,
    /// Inside a line; `after_cr` when the previous byte was CR.
    Text { after_cr: bool },
}

/// Streaming end-of-data finder and dot-unstuffer for one message.
#[derive(Debug, Clone)]
pub struct DataDecoder {
    state: State,
    message_bytes_max: usize,
    text_line_bytes_max: usize,
    /// Unstuffed bytes of this message stored so far.
    message_bytes: usize,
    /// Unstuffed bytes of the current line so far, CRLF included once it arrives.
    line_bytes: usize,
    error: Option<DataError>,
}

impl DataDecoder {
    /// A decoder positioned right after the DATA command's line end.
    pub fn new(message_bytes_max: usize, text_line_bytes_max: usize) -> DataDecoder {
        DataDecoder {
            state: State::LineStart,
            message_bytes_max,
            text_line_bytes_max,
            message_bytes: 0,
            line_bytes: 0,
            error: None,
        }
    }

    /// Unstuffed message bytes stored so far.
    pub fn message_bytes(&self) -> usize {
        self.message_bytes
    }

    /// Decodes from the start of `input`, appending unstuffed bytes to `out`.
    /// Returns the bytes consumed: all of `input` for [`DataProgress::NeedMore`],
    /// up to and including the end-of-data line for [`DataProgress::End`]. After
    /// `End` the decoder is spent; make a new one for the next message.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, DataProgress) {
        let mut pos = 0;
        while let Some(&byte) = input.get(pos) {
            match self.state {
                State::LineStart => {
                    if byte == b'.' {
                        self.state = State::Dot;
                        pos += 1;
                    } else {
                        self.state = State::Text { after_cr: false };
                    }
                }
                State::Dot => {
                    if byte == b'\r' {
                        self.state = State::DotCr;
                        pos += 1;
                    } else {
                        self.state = State::Text { after_cr: false };
                    }
                }
                State::DotCr => {
                    if byte == b'\n' {
                        return (pos + 1, DataProgress::End(self.error.map_or(Ok(()), Err)));
                    }
                    // ". CR x": the dot was stuffing, the CR is data.
                    self.store(b"\r", out);
                    self.state = State::Text { after_cr: true };
                }
                State::Text { after_cr } => {
                    let rest = &input[pos..];
                    match memchr(b'\n', rest) {
                        Some(lf) => {
                            let crlf = if lf == 0 {
                                after_cr
                            } else {
                                rest[lf - 1] == b'\r'
                            };
                            self.store(&rest[..=lf], out);
                            pos += lf + 1;
                            if crlf {
                                self.line_bytes = 0;
                                self.state = State::LineStart;
                            } else {
                                self.state = State::Text { after_cr: false };
                            }
                        }
                        None => {
                            self.store(rest, out);
                            let after_cr = rest.last() == Some(&b'\r');
                            self.state = State::Text { after_cr };
                            pos = input.len();
                        }
                    }
                }
            }
        }
        (pos, DataProgress::NeedMore)
    }

    /// Appends a run of unstuffed bytes within one line (it may end with the
    /// line's CRLF), unless a limit is or becomes exceeded. Which limit is
    /// reported does not depend on how the runs were split: it is the one the
    /// earliest byte crosses (the size limit on a tie).
    fn store(&mut self, run: &[u8], out: &mut Vec<u8>) {
        if self.error.is_some() {
            return;
        }
        let message_room = self.message_bytes_max.saturating_sub(self.message_bytes);
        let line_room = self.text_line_bytes_max.saturating_sub(self.line_bytes);
        if run.len() > message_room || run.len() > line_room {
            self.error = Some(if message_room <= line_room {
                DataError::TooBig {
                    message_bytes_max: self.message_bytes_max,
                }
            } else {
                DataError::LineTooLong {
                    text_line_bytes_max: self.text_line_bytes_max,
                }
            });
            return;
        }
        out.extend_from_slice(run);
        self.message_bytes += run.len();
        self.line_bytes += run.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    struct Outcome {
        message: Vec<u8>,
        /// Input bytes consumed through the end of data, or None if not seen.
        end: Option<(usize, Result<(), DataError>)>,
    }

    fn run(chunks: &[&[u8]], message_max: usize, line_max: usize) -> Outcome {
        let mut decoder = DataDecoder::new(message_max, line_max);
        let mut message = Vec::new();
        let mut offset = 0;
        for chunk in chunks {
            let (consumed, progress) = decoder.decode(chunk, &mut message);
            offset += consumed;
            match progress {
                DataProgress::NeedMore => assert_eq!(consumed, chunk.len()),
                DataProgress::End(result) => {
                    assert_eq!(decoder.message_bytes(), message.len());
                    assert!(message.len() <= message_max);
                    if result.is_err() {
                        // What was stored before the limit depends on the
                        // splits; the session throws it away.
                        message.clear();
                    }
                    return Outcome {
                        message,
                        end: Some((offset, result)),
                    };
                }
            }
        }
        Outcome { message, end: None }
    }

    /// Decodes `input` whole, split at every position, at every pair of
    /// positions (for short inputs) and byte by byte; all must agree.
    fn decode_all_splits(input: &[u8], message_max: usize, line_max: usize) -> Outcome {
        let whole = run(&[input], message_max, line_max);
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(run(&[a, b], message_max, line_max), whole, "split at {cut}");
        }
        if input.len() <= 64 {
            for a in 0..=input.len() {
                for b in a..=input.len() {
                    let chunks = [&input[..a], &input[a..b], &input[b..]];
                    assert_eq!(run(&chunks, message_max, line_max), whole, "split {a},{b}");
                }
            }
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&bytes, message_max, line_max), whole, "byte by byte");
        whole
    }

    fn ok(input: &[u8], message: &[u8], consumed: usize) {
        let outcome = decode_all_splits(input, 100_000, 1000);
        assert_eq!(
            outcome,
            Outcome {
                message: message.to_vec(),
                end: Some((consumed, Ok(())))
            },
            "input {:?}",
            String::from_utf8_lossy(input)
        );
    }

    /// RFC 5321 4.5.2 transparency, the way a client applies it.
    fn stuff(message: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut line_start = true;
        for (i, &byte) in message.iter().enumerate() {
            if line_start && byte == b'.' {
                wire.push(b'.');
            }
            wire.push(byte);
            line_start = byte == b'\n' && i > 0 && message[i - 1] == b'\r';
        }
        wire.extend_from_slice(b".\r\n");
        wire
    }

    #[test]
    fn empty_message() {
        ok(b".\r\n", b"", 3);
        ok(b".\r\nMAIL FROM:<>\r\n", b"", 3);
    }

    #[test]
    fn simple_message_stops_at_terminator() {
        let input = b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n";
        ok(input, b"Subject: x\r\n\r\nhello\r\n", input.len() - 6);
    }

    #[test]
    fn dot_stuffing_is_removed_once() {
        ok(b"..\r\n.\r\n", b".\r\n", 7);
        ok(b"...x\r\n.\r\n", b"..x\r\n", 9);
        ok(b"a\r\n..b\r\n.c\r\n.\r\n", b"a\r\n.b\r\nc\r\n", 15);
        // A dot not at the start of a line stays.
        ok(b"a.b\r\n x.\r\n.\r\n", b"a.b\r\n x.\r\n", 13);
    }

    #[test]
    fn dot_then_cr_not_followed_by_lf() {
        // ". CR x" is a stuffed line whose content begins with CR.
        ok(b".\rx\r\n.\r\n", b"\rx\r\n", 8);
        ok(b".\r\r\n.\r\n", b"\r\r\n", 7);
        ok(b"a\r\n.\r.\r\n.\r\n", b"a\r\n\r.\r\n", 11);
    }

    #[test]
    fn bare_newline_sequences_do_not_end_data() {
        let input = b"a\n.\nb\n.\r\nc\r.\r\nd\r\n.\r\nMAIL";
        let message = b"a\n.\nb\n.\r\nc\r.\r\nd\r\n";
        ok(input, message, input.len() - 4);
        // After a bare LF there is no line start: the dot is not unstuffed.
        ok(b"x\n..\r\n.\r\n", b"x\n..\r\n", 9);
    }

    #[test]
    fn crlf_split_across_chunks() {
        let outcome = run(&[b"a\r", b"\n.", b"\r", b"\n"], 100, 100);
        assert_eq!(outcome.message, b"a\r\n");
        assert_eq!(outcome.end, Some((6, Ok(()))));
    }

    #[test]
    fn incomplete_data_consumes_everything() {
        let outcome = decode_all_splits(b"a\r\n.\r", 100, 100);
        assert_eq!(outcome.end, None);
        assert_eq!(outcome.message, b"a\r\n");
    }

    #[test]
    fn round_trips_stuffed_messages() {
        let messages: &[&[u8]] = &[
            b"",
            b".\r\n",
            b"..\r\n.\r\n",
            b"From: a\r\n\r\n.hidden\r\n\n.\n\r\n.\r\n",
            b"x\r\n.\r.\r\n",
        ];
        for &message in messages {
            let wire = stuff(message);
            ok(&wire, message, wire.len());
        }
    }

    #[test]
    fn random_messages_round_trip_under_random_splits() {
        // Messages over a tiny alphabet hit every state transition; each is
        // stuffed as a client would, then decoded in random pieces.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2_000 {
            let len = (next() % 40) as usize;
            let mut message: Vec<u8> = (0..len).map(|_| b".\r\na"[(next() % 4) as usize]).collect();
            if !message.is_empty() {
                message.extend_from_slice(b"\r\n");
            }
            let wire = stuff(&message);
            let mut chunks = Vec::new();
            let mut rest = &wire[..];
            while !rest.is_empty() {
                let take = 1 + (next() as usize) % rest.len().min(8);
                chunks.push(&rest[..take]);
                rest = &rest[take..];
            }
            let outcome = run(&chunks, 1_000, 1_000);
            assert_eq!(outcome.message, message, "wire {wire:?}");
            assert_eq!(outcome.end, Some((wire.len(), Ok(()))), "wire {wire:?}");
        }
    }

    #[test]
    fn message_size_limit() {
        // Exactly at the limit is fine.
        let outcome = decode_all_splits(b"abc\r\n.\r\n", 5, 1000);
        assert_eq!(outcome.end, Some((8, Ok(()))));
        // One byte more: read to the end, store nothing past the limit.
        let input = b"abcd\r\nefgh\r\n.\r\nNOOP\r\n";
        let outcome = decode_all_splits(input, 5, 1000);
        let error = DataError::TooBig {
            message_bytes_max: 5,
        };
        assert_eq!(outcome.end, Some((15, Err(error))));
    }

    #[test]
    fn line_length_limit() {
        // 8 bytes including CRLF fits in 8.
        let outcome = decode_all_splits(b"123456\r\n.\r\n", 1000, 8);
        assert_eq!(outcome.end, Some((11, Ok(()))));
        // A stuffed dot does not count: the stored line is 8 bytes.
        let outcome = decode_all_splits(b"..23456\r\n.\r\n", 1000, 8);
        assert_eq!(outcome.end, Some((12, Ok(()))));
        let input = b"ok\r\n1234567\r\nmore\r\n.\r\n";
        let outcome = decode_all_splits(input, 1000, 8);
        let error = DataError::LineTooLong {
            text_line_bytes_max: 8,
        };
        assert_eq!(outcome.end, Some((input.len(), Err(error))));
        // Bare LFs do not split a line for counting.
        let outcome = decode_all_splits(b"1234\n678\r\n.\r\n", 1000, 8);
        assert_eq!(outcome.end, Some((13, Err(error))));
    }

    #[test]
    fn first_limit_crossed_wins_regardless_of_splits() {
        // Line limit crossed first.
        let outcome = decode_all_splits(b"123456789012\r\n.\r\n", 11, 8);
        assert_eq!(
            outcome.end.map(|e| e.1),
            Some(Err(DataError::LineTooLong {
                text_line_bytes_max: 8
            }))
        );
        // Size limit crossed first.
        let outcome = decode_all_splits(b"12345\r\n123456789\r\n.\r\n", 10, 8);
        assert_eq!(
            outcome.end.map(|e| e.1),
            Some(Err(DataError::TooBig {
                message_bytes_max: 10
            }))
        );
        // Both at the same byte: size wins.
        let outcome = decode_all_splits(b"12\r\n1234567\r\n.\r\n", 12, 8);
        assert_eq!(
            outcome.end.map(|e| e.1),
            Some(Err(DataError::TooBig {
                message_bytes_max: 12
            }))
        );
    }

    #[test]
    fn large_message_streams_with_bounded_output() {
        let mut wire = Vec::new();
        for i in 0..10_000 {
            wire.extend_from_slice(if i % 3 == 0 {
                b"..dotted line\r\n"
            } else {
                b"plain text\r\n"
            });
        }
        wire.extend_from_slice(b".\r\n");
        let outcome = run(&wire.chunks(4096).collect::<Vec<_>>(), 1_000_000, 1000);
        assert_eq!(outcome.end.map(|e| e.0), Some(wire.len()));
        assert_eq!(outcome.message.len(), wire.len() - 3 - 3334);
        // Over the limit: `run` checks at most 1000 bytes were ever stored.
        let outcome = run(&wire.chunks(4096).collect::<Vec<_>>(), 1000, 1000);
        assert_eq!(
            outcome.end,
            Some((
                wire.len(),
                Err(DataError::TooBig {
                    message_bytes_max: 1000
                })
            ))
        );
    }
}
