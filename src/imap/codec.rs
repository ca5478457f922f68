//! Sans-IO framing of IMAP client input: splits the byte stream into complete
//! commands (every line and every literal) before [`super::command::parse`]
//! sees them, and reads raw lines for AUTHENTICATE continuations and IDLE's
//! `DONE`.
//!
//! Literals are announced at the end of a line: `{N}` (synchronizing: the
//! client waits for `+`), `{N+}` (LITERAL+/LITERAL-, RFC 7888) or `~{N}`
//! (literal8, RFC 3516); the framer does not care which, only the parser does.
//! Oversized input is a named state, never a crash and never buffered:
//! - a line longer than `line_bytes_max` is discarded to its end, then reported;
//! - a synchronizing literal over its limit is refused before it is read (the
//!   client abandons the command when it sees the tagged reply instead of `+`);
//! - a non-synchronizing literal over its limit is read and thrown away, with
//!   the rest of that command, then reported (RFC 7888 §4-5).
//!
//! Memory stays below `command_bytes_max + line_bytes_max` whatever the peer
//! sends. A line ends at LF; a CR before it is part of the terminator (a bare LF
//! is tolerated, as most servers do).

use memchr::memchr;

use super::command::tag_prefix;

/// RFC 7888 LITERAL-: the largest non-synchronizing literal a client may send.
pub const LITERAL_MINUS_BYTES_MAX: usize = 4096;

/// Bytes kept from the end of a line being discarded, to spot a literal
/// announcement there (`{` + 20 digits + `+}\r\n` fits).
const TAIL_BYTES: usize = 32;

/// Limits, all in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramerLimits {
    /// One line, CRLF included, literals excluded.
    pub line_bytes_max: usize,
    /// One literal in any command but APPEND.
    pub literal_bytes_max: usize,
    /// One literal in APPEND: the message size limit (APPENDLIMIT).
    pub append_bytes_max: usize,
    /// A whole command: lines and literals.
    pub command_bytes_max: usize,
    /// A non-synchronizing `{N+}` literal: `usize::MAX` (the default) when the
    /// server announces LITERAL+, [`LITERAL_MINUS_BYTES_MAX`] when it announces
    /// only LITERAL- (IMAP4rev2 alone). The other limits apply either way.
    pub non_sync_literal_bytes_max: usize,
}

impl Default for FramerLimits {
    fn default() -> FramerLimits {
        let append_bytes_max = 25 << 20;
        FramerLimits {
            line_bytes_max: 8192,
            literal_bytes_max: 64 << 10,
            append_bytes_max,
            command_bytes_max: append_bytes_max + (1 << 20),
            non_sync_literal_bytes_max: usize::MAX,
        }
    }
}

/// What [`Framer::push`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One complete command, exactly as received (lines, CRLFs and literal
    /// bytes), ready for [`super::command::parse`].
    Command(Vec<u8>),
    /// A synchronizing literal was accepted: send `+ Ready for literal data`.
    NeedContinuation,
    /// A command refused by size: reply `{tag} {kind.reply()}`, with `*` when
    /// the tag could not be read. The connection stays usable.
    Error {
        tag: Option<String>,
        kind: FrameErrorKind,
    },
}

/// Why a command was refused. [`FrameErrorKind::reply`] gives the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameErrorKind {
    /// A line over `line_bytes_max`.
    LineTooLong,
    /// A literal over `literal_bytes_max` outside APPEND.
    LiteralTooBig,
    /// A `{N+}` literal over `non_sync_literal_bytes_max` (LITERAL-).
    NonSyncLiteralTooBig,
    /// An APPEND literal over `append_bytes_max`.
    TooBig,
    /// The command as a whole over `command_bytes_max`.
    CommandTooBig,
}

impl FrameErrorKind {
    /// True when the reply should be `NO` (the message is too large for this
    /// server) rather than `BAD` (the client broke a limit it was told about).
    pub fn is_no(self) -> bool {
        matches!(self, FrameErrorKind::TooBig)
    }

    /// Reply text, response code included, without the status.
    pub fn text(self) -> &'static str {
        match self {
            FrameErrorKind::LineTooLong => "Command line too long",
            FrameErrorKind::LiteralTooBig => "[TOOBIG] Literal too big",
            FrameErrorKind::NonSyncLiteralTooBig => {
                "[TOOBIG] Non-synchronizing literal too big, use a synchronizing one"
            }
            FrameErrorKind::TooBig => "[TOOBIG] Message too big",
            FrameErrorKind::CommandTooBig => "[TOOBIG] Command too long",
        }
    }

    /// The reply after the tag, status included.
    pub fn reply(self) -> &'static str {
        match self {
            FrameErrorKind::LineTooLong => "BAD Command line too long",
            FrameErrorKind::LiteralTooBig => "BAD [TOOBIG] Literal too big",
            FrameErrorKind::NonSyncLiteralTooBig => {
                "BAD [TOOBIG] Non-synchronizing literal too big, use a synchronizing one"
            }
            FrameErrorKind::TooBig => "NO [TOOBIG] Message too big",
            FrameErrorKind::CommandTooBig => "BAD [TOOBIG] Command too long",
        }
    }
}

/// What [`Framer::next_line`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawLine {
    /// One line without its CRLF.
    Line(Vec<u8>),
    /// A line over `line_bytes_max` ended; its bytes were discarded.
    TooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Line,
    /// Inside a literal: this many bytes still to come.
    Literal {
        remaining: u64,
    },
}

/// A command being thrown away, and how it will be reported.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    tag: Option<String>,
    kind: FrameErrorKind,
}

/// One connection's framing state. Feed it with [`Framer::push`] (commands)
/// or [`Framer::next_line`] (raw lines after a `+` sent for AUTHENTICATE or
/// IDLE), always from the start of the unconsumed input.
#[derive(Debug, Clone)]
pub struct Framer {
    limits: FramerLimits,
    /// The command so far (empty while refusing).
    buf: Vec<u8>,
    /// Where the current line starts in `buf`.
    line_start: usize,
    state: State,
    refusing: Option<Refusal>,
    /// While refusing: the last bytes of the current line.
    tail: Vec<u8>,
    raw: Vec<u8>,
    raw_discarding: bool,
}

/// A literal announcement at the end of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Announce {
    len: u64,
    sync: bool,
}

/// `{N}` / `{N+}` (with or without `~`) right before the line's LF (or CRLF).
fn announcement(line: &[u8]) -> Option<Announce> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut body = line.strip_suffix(b"}")?;
    let sync = match body.strip_suffix(b"+") {
        Some(rest) => {
            body = rest;
            false
        }
        None => true,
    };
    let open = body.iter().rposition(|&b| !b.is_ascii_digit())?;
    let digits = &body[open + 1..];
    if body[open] != b'{' || digits.is_empty() {
        return None;
    }
    let len = digits.iter().fold(0u64, |v, &d| {
        v.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    Some(Announce { len, sync })
}

/// True when the command's first line is `tag SP APPEND SP ...`.
fn is_append(command: &[u8]) -> bool {
    let Some(sp) = memchr(b' ', command) else {
        return false;
    };
    command
        .get(sp + 1..sp + 8)
        .is_some_and(|w| w[..6].eq_ignore_ascii_case(b"APPEND") && w[6] == b' ')
}

impl Framer {
    pub fn new(limits: FramerLimits) -> Framer {
        Framer {
            limits,
            buf: Vec::new(),
            line_start: 0,
            state: State::Line,
            refusing: None,
            tail: Vec::with_capacity(2 * TAIL_BYTES),
            raw: Vec::new(),
            raw_discarding: false,
        }
    }

    pub fn limits(&self) -> &FramerLimits {
        &self.limits
    }

    /// Changes the limits (e.g. APPENDLIMIT after login); applies to the next
    /// line or literal.
    pub fn set_limits(&mut self, limits: FramerLimits) {
        self.limits = limits;
    }

    /// True when part of a command has been read (or is being discarded).
    pub fn is_mid_command(&self) -> bool {
        !self.buf.is_empty() || self.refusing.is_some() || self.state != State::Line
    }

    /// Bytes held for the command and raw line in progress.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len() + self.raw.len() + self.tail.len()
    }

    /// Forgets everything read so far (after STARTTLS, or on a protocol reset).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.line_start = 0;
        self.state = State::Line;
        self.refusing = None;
        self.tail.clear();
        self.raw.clear();
        self.raw_discarding = false;
    }

    /// Frames `input` (the unconsumed bytes, oldest first). Returns how many
    /// bytes it took and at most one event. Without an event it has taken all
    /// of `input` and wants more; after an event, call again with the rest.
    pub fn push(&mut self, input: &[u8]) -> (usize, Option<Frame>) {
        let mut consumed = 0;
        loop {
            let rest = &input[consumed..];
            if let State::Literal { remaining } = self.state {
                if remaining == 0 {
                    self.state = State::Line;
                    self.line_start = self.buf.len();
                    self.tail.clear();
                    continue;
                }
                if rest.is_empty() {
                    return (consumed, None);
                }
                let take = usize::try_from(remaining).map_or(rest.len(), |r| r.min(rest.len()));
                if self.refusing.is_none() {
                    self.buf.extend_from_slice(&rest[..take]);
                }
                consumed += take;
                self.state = State::Literal {
                    remaining: remaining - take as u64,
                };
                continue;
            }
            if rest.is_empty() {
                return (consumed, None);
            }
            if self.refusing.is_some() {
                match memchr(b'\n', rest) {
                    None => {
                        self.keep_tail(rest);
                        return (consumed + rest.len(), None);
                    }
                    Some(lf) => {
                        self.keep_tail(&rest[..=lf]);
                        consumed += lf + 1;
                        if let Some(frame) = self.refused_line_end() {
                            return (consumed, Some(frame));
                        }
                    }
                }
                continue;
            }
            let line_bytes = self.buf.len() - self.line_start;
            let budget = self.limits.line_bytes_max.saturating_sub(line_bytes);
            let window = &rest[..rest.len().min(budget)];
            match memchr(b'\n', window) {
                Some(lf) => {
                    self.buf.extend_from_slice(&rest[..=lf]);
                    consumed += lf + 1;
                    if let Some(frame) = self.line_end() {
                        return (consumed, Some(frame));
                    }
                }
                None if window.len() < budget => {
                    self.buf.extend_from_slice(rest);
                    return (consumed + rest.len(), None);
                }
                None => {
                    // The line reached its limit without an end: keep only
                    // what names the command, then discard to the end.
                    self.buf.extend_from_slice(window);
                    consumed += window.len();
                    let tag = tag_prefix(&self.buf);
                    self.refuse(tag, FrameErrorKind::LineTooLong);
                    self.keep_tail(window);
                }
            }
        }
    }

    /// A line of the command was buffered, LF included.
    fn line_end(&mut self) -> Option<Frame> {
        let line = &self.buf[self.line_start..];
        if self.line_start == 0 && (line == b"\r\n" || line == b"\n") {
            // Stray empty lines between commands are ignored.
            self.buf.clear();
            return None;
        }
        if self.buf.len() > self.limits.command_bytes_max {
            let tag = tag_prefix(&self.buf);
            let start = self
                .line_start
                .max(self.buf.len().saturating_sub(TAIL_BYTES));
            let tail = self.buf[start..].to_vec();
            self.refuse(tag, FrameErrorKind::CommandTooBig);
            self.keep_tail(&tail);
            return self.refused_line_end();
        }
        let Some(announce) = announcement(line) else {
            self.line_start = 0;
            return Some(Frame::Command(std::mem::take(&mut self.buf)));
        };
        let (limit, over) = if is_append(&self.buf) {
            (self.limits.append_bytes_max, FrameErrorKind::TooBig)
        } else {
            (self.limits.literal_bytes_max, FrameErrorKind::LiteralTooBig)
        };
        let total = (self.buf.len() as u64).saturating_add(announce.len);
        let refusal = if announce.len > limit as u64 {
            Some(over)
        } else if total > self.limits.command_bytes_max as u64 {
            Some(FrameErrorKind::CommandTooBig)
        } else if !announce.sync && announce.len > self.limits.non_sync_literal_bytes_max as u64 {
            Some(FrameErrorKind::NonSyncLiteralTooBig)
        } else {
            None
        };
        self.state = State::Literal {
            remaining: announce.len,
        };
        if let Some(kind) = refusal {
            let tag = tag_prefix(&self.buf);
            self.refuse(tag, kind);
            if announce.sync {
                // Refused before it is read: the client sends nothing more.
                return Some(self.finish_refusal());
            }
            // Non-synchronizing: the bytes are coming; discard them.
            return None;
        }
        // Within limits, so the reservation is bounded; capped anyway so an
        // announced-but-never-sent literal costs little.
        self.buf
            .reserve(usize::try_from(announce.len).map_or(0, |n| n.min(64 << 10)));
        announce.sync.then_some(Frame::NeedContinuation)
    }

    fn refuse(&mut self, tag: Option<String>, kind: FrameErrorKind) {
        self.buf.clear();
        self.line_start = 0;
        self.tail.clear();
        self.refusing = Some(Refusal { tag, kind });
    }

    /// A line of a refused command ended: go on discarding through a
    /// non-synchronizing literal, or report at the end of the command.
    fn refused_line_end(&mut self) -> Option<Frame> {
        match announcement(&self.tail) {
            Some(announce) if !announce.sync => {
                self.state = State::Literal {
                    remaining: announce.len,
                };
                self.tail.clear();
                None
            }
            _ => Some(self.finish_refusal()),
        }
    }

    fn finish_refusal(&mut self) -> Frame {
        let refusal = self.refusing.take();
        self.buf.clear();
        self.line_start = 0;
        self.tail.clear();
        self.state = State::Line;
        match refusal {
            Some(Refusal { tag, kind }) => Frame::Error { tag, kind },
            // Not reachable: callers refuse first. Report something sane.
            None => Frame::Error {
                tag: None,
                kind: FrameErrorKind::LineTooLong,
            },
        }
    }

    fn keep_tail(&mut self, bytes: &[u8]) {
        let bytes = &bytes[bytes.len().saturating_sub(TAIL_BYTES)..];
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > TAIL_BYTES {
            let excess = self.tail.len() - TAIL_BYTES;
            self.tail.drain(..excess);
        }
    }

    /// Reads one raw line (a SASL response, IDLE's `DONE`): the line without
    /// its CRLF, or [`RawLine::TooLong`] once an overlong line has ended.
    /// Without an event it has taken all of `input` and wants more.
    pub fn next_line(&mut self, input: &[u8]) -> (usize, Option<RawLine>) {
        let mut consumed = 0;
        loop {
            let rest = &input[consumed..];
            if self.raw_discarding {
                return match memchr(b'\n', rest) {
                    Some(lf) => {
                        self.raw_discarding = false;
                        (consumed + lf + 1, Some(RawLine::TooLong))
                    }
                    None => (consumed + rest.len(), None),
                };
            }
            let budget = self.limits.line_bytes_max.saturating_sub(self.raw.len());
            let window = &rest[..rest.len().min(budget)];
            match memchr(b'\n', window) {
                Some(lf) => {
                    self.raw.extend_from_slice(&rest[..lf]);
                    if self.raw.last() == Some(&b'\r') {
                        self.raw.pop();
                    }
                    return (
                        consumed + lf + 1,
                        Some(RawLine::Line(std::mem::take(&mut self.raw))),
                    );
                }
                None if window.len() < budget => {
                    self.raw.extend_from_slice(rest);
                    return (consumed + rest.len(), None);
                }
                None => {
                    self.raw.clear();
                    self.raw_discarding = true;
                    consumed += window.len();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> FramerLimits {
        FramerLimits {
            line_bytes_max: 64,
            literal_bytes_max: 100,
            append_bytes_max: 1000,
            command_bytes_max: 1200,
            non_sync_literal_bytes_max: 4096,
        }
    }

    /// Feeds `chunks` in order like a driver would, returning every event
    /// and the framer's largest buffer along the way.
    fn feed_chunks(limits: FramerLimits, chunks: &[&[u8]]) -> (Vec<Frame>, usize) {
        let mut framer = Framer::new(limits);
        let mut pending: Vec<u8> = Vec::new();
        let mut events = Vec::new();
        let mut peak = 0;
        for chunk in chunks {
            pending.extend_from_slice(chunk);
            loop {
                let (n, frame) = framer.push(&pending);
                peak = peak.max(framer.buffered_bytes());
                pending.drain(..n);
                match frame {
                    Some(frame) => events.push(frame),
                    None => {
                        assert!(pending.is_empty(), "no event but input left");
                        break;
                    }
                }
            }
        }
        (events, peak)
    }

    /// The events for `input`, checked to be the same for every split into
    /// two pieces and for byte-by-byte delivery.
    fn frames_with(limits: FramerLimits, input: &[u8]) -> Vec<Frame> {
        let (whole, _) = feed_chunks(limits, &[input]);
        for i in 0..=input.len() {
            let (split, _) = feed_chunks(limits, &[&input[..i], &input[i..]]);
            assert_eq!(split, whole, "split at {i}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        let (single, _) = feed_chunks(limits, &bytes);
        assert_eq!(single, whole, "byte by byte");
        whole
    }

    fn frames(input: &[u8]) -> Vec<Frame> {
        frames_with(limits(), input)
    }

    fn cmd(s: &[u8]) -> Frame {
        Frame::Command(s.to_vec())
    }

    fn err(tag: Option<&str>, kind: FrameErrorKind) -> Frame {
        Frame::Error {
            tag: tag.map(str::to_string),
            kind,
        }
    }

    #[test]
    fn pipelined_lines() {
        assert_eq!(
            frames(b"a NOOP\r\nb CAPABILITY\r\nc LOGOUT\n"),
            vec![
                cmd(b"a NOOP\r\n"),
                cmd(b"b CAPABILITY\r\n"),
                cmd(b"c LOGOUT\n")
            ]
        );
    }

    #[test]
    fn incomplete_line_waits() {
        assert_eq!(frames(b"a NOOP\r"), vec![]);
        let mut framer = Framer::new(limits());
        assert_eq!(framer.push(b"a NO"), (4, None));
        assert!(framer.is_mid_command());
        assert_eq!(framer.push(b"OP\r\nb"), (4, Some(cmd(b"a NOOP\r\n"))));
        assert!(!framer.is_mid_command());
    }

    #[test]
    fn empty_lines_between_commands_are_skipped() {
        assert_eq!(frames(b"\r\n\na NOOP\r\n\r\n"), vec![cmd(b"a NOOP\r\n")]);
    }

    #[test]
    fn synchronizing_literals_ask_for_continuation() {
        // RFC 3501 6.2.3 with literals.
        let input = b"A001 LOGIN {11}\r\nFRED FOOBAR {7}\r\nfat man\r\n";
        assert_eq!(
            frames(input),
            vec![Frame::NeedContinuation, Frame::NeedContinuation, cmd(input)]
        );
    }

    #[test]
    fn non_synchronizing_literals_do_not() {
        let input = b"A001 LOGIN {11+}\r\nFRED FOOBAR {7+}\r\nfat man\r\nA002 NOOP\r\n";
        assert_eq!(
            frames(input),
            vec![cmd(&input[..input.len() - 11]), cmd(b"A002 NOOP\r\n")]
        );
    }

    #[test]
    fn zero_length_and_binary_literals() {
        let input = b"a LOGIN {0}\r\n {0+}\r\n\r\n";
        assert_eq!(frames(input), vec![Frame::NeedContinuation, cmd(input)]);
        let input = b"a APPEND INBOX ~{5}\r\nab\r\0c\r\n";
        assert_eq!(frames(input), vec![Frame::NeedContinuation, cmd(input)]);
    }

    #[test]
    fn literal_bytes_are_not_scanned_for_lines() {
        // The literal holds CRLF and a fake announcement.
        let input = b"a SEARCH TEXT {12}\r\nx\r\nb {3}\r\nyz SUBJECT q\r\n";
        assert_eq!(frames(input), vec![Frame::NeedContinuation, cmd(input)]);
    }

    #[test]
    fn overlong_line_is_discarded_then_reported_with_tag() {
        let mut input = b"a7 SEARCH TEXT ".to_vec();
        input.extend(std::iter::repeat_n(b'x', 200));
        input.extend_from_slice(b"\r\nb NOOP\r\n");
        let (events, peak) = feed_chunks(limits(), &[&input]);
        assert_eq!(
            events,
            vec![
                err(Some("a7"), FrameErrorKind::LineTooLong),
                cmd(b"b NOOP\r\n")
            ]
        );
        assert!(peak <= 64 + TAIL_BYTES, "peak {peak}");
        assert_eq!(frames(&input), events);
    }

    #[test]
    fn overlong_line_without_readable_tag() {
        let mut input = vec![b'x'; 100];
        input.extend_from_slice(b"\r\n");
        assert_eq!(frames(&input), vec![err(None, FrameErrorKind::LineTooLong)]);
    }

    #[test]
    fn line_limit_counts_crlf() {
        let mut exact = b"a NOOP ".to_vec();
        exact.resize(62, b'x');
        exact.extend_from_slice(b"\r\n");
        assert_eq!(exact.len(), 64);
        assert_eq!(frames(&exact), vec![cmd(&exact)]);
        let mut over = exact.clone();
        over.insert(10, b'x');
        assert_eq!(
            frames(&over),
            vec![err(Some("a"), FrameErrorKind::LineTooLong)]
        );
    }

    #[test]
    fn overlong_line_ending_in_non_sync_literal_discards_it() {
        let mut input = b"a APPEND INBOX ".to_vec();
        input.extend(std::iter::repeat_n(b'(', 100));
        input.extend_from_slice(b" {5+}\r\n{1}\r\n\r\nb NOOP\r\n");
        assert_eq!(
            frames(&input),
            vec![
                err(Some("a"), FrameErrorKind::LineTooLong),
                cmd(b"b NOOP\r\n")
            ]
        );
    }

    #[test]
    fn sync_literal_over_limit_is_refused_before_reading() {
        let input = b"a LOGIN {101}\r\nb NOOP\r\n";
        assert_eq!(
            frames(input),
            vec![
                err(Some("a"), FrameErrorKind::LiteralTooBig),
                cmd(b"b NOOP\r\n")
            ]
        );
        let input = b"a append INBOX (\\Seen) {1001}\r\nb NOOP\r\n";
        assert_eq!(
            frames(input),
            vec![err(Some("a"), FrameErrorKind::TooBig), cmd(b"b NOOP\r\n")]
        );
        // An absurd announcement is refused the same way.
        let input = b"a APPEND INBOX {99999999999999999999999}\r\n";
        assert_eq!(frames(input), vec![err(Some("a"), FrameErrorKind::TooBig)]);
    }

    #[test]
    fn append_limit_applies_only_to_append() {
        let body = vec![b'm'; 500];
        let mut input = b"a APPEND INBOX {500}\r\n".to_vec();
        input.extend_from_slice(&body);
        input.extend_from_slice(b"\r\n");
        assert_eq!(frames(&input), vec![Frame::NeedContinuation, cmd(&input)]);
        let mut input = b"a XAPPEND INBOX {500}\r\n".to_vec();
        input.extend_from_slice(b"b NOOP\r\n");
        assert_eq!(
            frames(&input),
            vec![
                err(Some("a"), FrameErrorKind::LiteralTooBig),
                cmd(b"b NOOP\r\n")
            ]
        );
    }

    #[test]
    fn non_sync_literal_over_limit_is_read_and_discarded() {
        let mut input = b"a APPEND INBOX {1500+}\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'z', 1500));
        // More of the same command: another literal, then the end.
        input.extend_from_slice(b" {3+}\r\nabc\r\nb NOOP\r\n");
        let (events, peak) = feed_chunks(limits(), &[&input]);
        assert_eq!(
            events,
            vec![err(Some("a"), FrameErrorKind::TooBig), cmd(b"b NOOP\r\n")]
        );
        assert!(peak < 100, "discarded bytes were buffered: {peak}");
        assert_eq!(frames(&input), events);
    }

    #[test]
    fn literal_minus_limit() {
        let limits = FramerLimits {
            literal_bytes_max: 10_000,
            non_sync_literal_bytes_max: LITERAL_MINUS_BYTES_MAX,
            command_bytes_max: 20_000,
            ..limits()
        };
        let mut input = b"a LOGIN {4097+}\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'p', 4097));
        input.extend_from_slice(b" x\r\nb NOOP\r\n");
        assert_eq!(
            frames_with(limits, &input),
            vec![
                err(Some("a"), FrameErrorKind::NonSyncLiteralTooBig),
                cmd(b"b NOOP\r\n")
            ]
        );
        let mut input = b"a LOGIN {4096+}\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'p', 4096));
        input.extend_from_slice(b" x\r\n");
        assert_eq!(frames_with(limits, &input), vec![cmd(&input)]);
        // A synchronizing literal of the same size is fine.
        let mut input = b"a LOGIN {4097}\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'p', 4097));
        input.extend_from_slice(b" x\r\n");
        assert_eq!(
            frames_with(limits, &input),
            vec![Frame::NeedContinuation, cmd(&input)]
        );
    }

    #[test]
    fn command_limit_counts_all_literals() {
        let limits = FramerLimits {
            command_bytes_max: 120,
            ..limits()
        };
        // Three 50-byte literals: the third would exceed 120 bytes.
        let mut input = Vec::new();
        input.extend_from_slice(b"a SEARCH TEXT {50+}\r\n");
        input.extend(std::iter::repeat_n(b'1', 50));
        input.extend_from_slice(b" TEXT {50+}\r\n");
        input.extend(std::iter::repeat_n(b'2', 50));
        input.extend_from_slice(b" TEXT {50+}\r\n");
        input.extend(std::iter::repeat_n(b'3', 50));
        input.extend_from_slice(b"\r\nb NOOP\r\n");
        assert_eq!(
            frames_with(limits, &input),
            vec![
                err(Some("a"), FrameErrorKind::CommandTooBig),
                cmd(b"b NOOP\r\n")
            ]
        );
    }

    #[test]
    fn replies_match_kinds() {
        use FrameErrorKind as K;
        for kind in [
            K::LineTooLong,
            K::LiteralTooBig,
            K::NonSyncLiteralTooBig,
            K::TooBig,
            K::CommandTooBig,
        ] {
            let status = if kind.is_no() { "NO " } else { "BAD " };
            assert_eq!(kind.reply(), format!("{status}{}", kind.text()));
            assert!(!kind.reply().contains(['\r', '\n']));
        }
        assert_eq!(K::TooBig.reply(), "NO [TOOBIG] Message too big");
        assert!(!K::LineTooLong.is_no());
        // The default limits accept what LITERAL+ lets a client send.
        let mut input = b"a APPEND INBOX {5000+}\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'm', 5000));
        input.extend_from_slice(b"\r\n");
        let (events, _) = feed_chunks(FramerLimits::default(), &[&input]);
        assert_eq!(events, vec![cmd(&input)]);
    }

    #[test]
    fn malformed_announcements_end_the_line() {
        for line in [
            &b"a X {}\r\n"[..],
            b"a X {1a}\r\n",
            b"a X 5}\r\n",
            b"a X {+}\r\n",
        ] {
            assert_eq!(frames(line), vec![cmd(line)]);
        }
    }

    #[test]
    fn raw_lines() {
        let mut framer = Framer::new(limits());
        let input = b"dGVzdA==\r\nDONE\nnext";
        let (n, line) = framer.next_line(input);
        assert_eq!((n, line), (10, Some(RawLine::Line(b"dGVzdA==".to_vec()))));
        let (m, line) = framer.next_line(&input[n..]);
        assert_eq!((m, line), (5, Some(RawLine::Line(b"DONE".to_vec()))));
        assert_eq!(framer.next_line(&input[n + m..]), (4, None));
        assert_eq!(
            framer.next_line(b"\r\n"),
            (2, Some(RawLine::Line(b"next".to_vec())))
        );
        // Overlong: discarded, then reported once its end arrives.
        let mut long = vec![b'A'; 300];
        long.extend_from_slice(b"\r\nDONE\r\n");
        let mut events = Vec::new();
        for chunk in long.chunks(7) {
            let mut pos = 0;
            while pos < chunk.len() {
                let (n, line) = framer.next_line(&chunk[pos..]);
                pos += n;
                events.extend(line);
                assert!(framer.buffered_bytes() <= 64);
            }
        }
        assert_eq!(
            events,
            vec![RawLine::TooLong, RawLine::Line(b"DONE".to_vec())]
        );
    }

    #[test]
    fn reset_forgets_partial_input() {
        let mut framer = Framer::new(limits());
        assert_eq!(
            framer.push(b"a LOGIN {5}\r\nab"),
            (13, Some(Frame::NeedContinuation))
        );
        assert_eq!(framer.push(b"ab"), (2, None));
        assert!(framer.is_mid_command());
        framer.reset();
        assert!(!framer.is_mid_command());
        assert_eq!(framer.push(b"b NOOP\r\n"), (8, Some(cmd(b"b NOOP\r\n"))));
    }

    /// Random streams with literals sprinkled in never grow the buffer past
    /// the limits, and every byte is eventually consumed.
    #[test]
    fn memory_stays_bounded_on_random_input() {
        let limits = limits();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let pieces: [&[u8]; 10] = [
            b"a APPEND x {900}\r\n",
            b"{5000+}\r\n",
            b"{50}\r\n",
            b"\r\n",
            b"\n",
            b"b LOGIN ",
            b"~{3+}\r\n",
            b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            b"{",
            b"}",
        ];
        for _ in 0..200 {
            let mut stream = Vec::new();
            for _ in 0..200 {
                let r = next();
                if r % 3 == 0 {
                    stream.push((r >> 8) as u8);
                } else {
                    stream.extend_from_slice(pieces[(r >> 8) as usize % pieces.len()]);
                }
            }
            let cut = (next() % 97 + 1) as usize;
            let chunks: Vec<&[u8]> = stream.chunks(cut).collect();
            let (events, peak) = feed_chunks(limits, &chunks);
            assert!(peak <= limits.command_bytes_max + limits.line_bytes_max + TAIL_BYTES);
            for e in events {
                if let Frame::Command(c) = e {
                    assert!(c.len() <= limits.command_bytes_max + limits.line_bytes_max);
                }
            }
        }
    }
}
