//! CRLF line framing shared by the line-based protocols (SMTP commands, POP3), sans-IO: one
//! `memchr` per line over the caller's buffer, a hard line-length limit, and the named state
//! "discarding to end of line" for overlong lines (answered once their end arrives, the
//! connection kept, nothing buffered).
//!
//! A line ends at LF; one CR right before it is part of the terminator (a bare LF is accepted
//! as the end of a command line, as Postfix and Dovecot do). The limit counts the terminator.
//! Tested through `smtp::codec` and `pop3::command`, which re-export these types.

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
