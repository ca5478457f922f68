//! The MIME structure parser: one forward pass over the message that splits
//! it into parts by boundary lines, records header and body ranges, counts
//! lines and bare LFs, and notes where the Content-* values are.
//!
//! It follows Dovecot's message parser in every decision imaptest can see:
//! - a boundary line is `--` + the boundary at the start of a line, matched
//!   as a prefix against every open boundary (newest first, longest wins);
//!   it closes every part opened since that boundary's multipart, also when
//!   it appears inside a header; the line end before it belongs to the
//!   boundary, not to the part it ends;
//! - Content-* headers count only in MIME parts (MIME-Version or
//!   Content-Type present, or any part of a multipart); only the first
//!   Content-Type counts; boundaries are cut to 80 bytes;
//! - a part without Content-Type is text/plain, or message/rfc822 inside
//!   multipart/digest; a multipart without boundary has no children;
//! - message/rfc822 always gets its embedded message, even an empty one;
//! - past [`Limits`], boundaries stop being recognised and deeper nesting
//!   is not entered.

use memchr::{memchr, memchr_iter, memmem};

use super::header::{is_lwsp, line_at, split_first_line};
use super::lex::{self, ContentType};
use super::{
    clamp, ContentField, Encoding, Limits, MessageStructure, Part, PartKind, Span, CONTENT_FIELDS,
    CONTENT_FIELD_NAMES, FLAG_DIGEST, FLAG_IN_DIGEST, FLAG_IS_MIME, MSG_BARE_LF, MSG_HAS_NUL,
};

/// Boundaries longer than this are cut (RFC 2046 allows 70).
const BOUNDARY_BYTES_MAX: usize = 80;

/// Per-part state while parsing.
struct Building {
    header_start: usize,
    header_end: usize,
    header_lines: u32,
    header_bare_lf: u32,
    body_start: usize,
    body_end: usize,
    body_lines: u32,
    body_bare_lf: u32,
    parent: usize,
    depth: u32,
    kind: PartKind,
    encoding: Encoding,
    flags: u8,
    content: [Span; CONTENT_FIELDS],
    /// A Content-Type was seen (only the first one counts).
    seen_content_type: bool,
    /// Dovecot's part flags, from the first Content-Type.
    multipart: bool,
    digest: bool,
    message: bool,
    text: bool,
    boundary: Option<Vec<u8>>,
}

struct Boundary {
    part: usize,
    text: Vec<u8>,
}

enum State {
    Header,
    BodyToBoundary,
    BodyToEnd,
    SkipBoundaryLine,
    Done,
}

struct Parser<'m> {
    msg: &'m [u8],
    limits: Limits,
    parts: Vec<Building>,
    /// Open parts, innermost last.
    open: Vec<usize>,
    /// Open boundaries, newest last.
    boundaries: Vec<Boundary>,
    pos: usize,
    /// Where the current part's header parse starts (a part whose header was
    /// cut by a boundary hands its empty child this position).
    next_header_start: usize,
    dash_finder: memmem::Finder<'static>,
}

pub(super) fn parse(bytes: &[u8], limits: Limits) -> MessageStructure {
    let msg = clamp(bytes);
    let limits = Limits {
        parts_max: limits.parts_max.max(1),
        depth_max: limits.depth_max.max(1),
    };
    let mut parser = Parser {
        msg,
        limits,
        parts: Vec::with_capacity(4),
        open: Vec::with_capacity(4),
        boundaries: Vec::new(),
        pos: 0,
        next_header_start: 0,
        dash_finder: memmem::Finder::new(b"\n--"),
    };
    parser.push_part(usize::MAX, false);
    let mut state = State::Header;
    loop {
        state = match state {
            State::Header => parser.header(),
            State::BodyToBoundary => parser.body_to_boundary(),
            State::BodyToEnd => parser.body_to_end(),
            State::SkipBoundaryLine => parser.skip_boundary_line(),
            State::Done => break,
        };
    }
    while parser.open.len() > 1 {
        parser.finish_innermost();
    }
    parser.into_structure()
}

impl Parser<'_> {
    fn current(&self) -> usize {
        self.open.last().copied().unwrap_or(0)
    }

    fn push_part(&mut self, parent: usize, mime: bool) {
        let start = self.next_header_start;
        let (depth, in_digest) = match self.parts.get(parent) {
            Some(p) => (p.depth + 1, p.digest),
            None => (0, false),
        };
        let mut flags = 0;
        if mime {
            flags |= FLAG_IS_MIME;
        }
        if in_digest {
            flags |= FLAG_IN_DIGEST;
        }
        self.parts.push(Building {
            header_start: start,
            header_end: start,
            header_lines: 0,
            header_bare_lf: 0,
            body_start: start,
            body_end: start,
            body_lines: 0,
            body_bare_lf: 0,
            parent,
            depth,
            kind: PartKind::Text,
            encoding: Encoding::Identity,
            flags,
            content: [Span::NONE; CONTENT_FIELDS],
            seen_content_type: false,
            multipart: false,
            digest: false,
            message: false,
            text: false,
            boundary: None,
        });
        self.open.push(self.parts.len() - 1);
    }

    fn is_bare_lf(&self, lf: usize) -> bool {
        lf == 0 || self.msg[lf - 1] != b'\r'
    }

    /// Adds `msg[start..end]` to the body of part `index`.
    fn add_body(&mut self, index: usize, start: usize, end: usize) {
        if end <= start {
            return;
        }
        let mut lines = 0u32;
        let mut bare = 0u32;
        for offset in memchr_iter(b'\n', &self.msg[start..end]) {
            lines += 1;
            if self.is_bare_lf(start + offset) {
                bare += 1;
            }
        }
        let part = &mut self.parts[index];
        part.body_lines += lines;
        part.body_bare_lf += bare;
        part.body_end = end;
    }

    /// Closes the innermost part, adding its sizes to its parent's body.
    fn finish_innermost(&mut self) {
        let Some(child) = self.open.pop() else {
            return;
        };
        let parent = self.current();
        let (lines, bare, end) = {
            let c = &self.parts[child];
            (
                c.header_lines + c.body_lines,
                c.header_bare_lf + c.body_bare_lf,
                c.body_end,
            )
        };
        let p = &mut self.parts[parent];
        p.body_lines += lines;
        p.body_bare_lf += bare;
        p.body_end = p.body_end.max(end);
    }

    /// The open boundary that the line at `pos` is, if any.
    fn boundary_at(&mut self, pos: usize) -> Option<(usize, bool)> {
        let msg = self.msg;
        if self.boundaries.is_empty() || pos + 2 > msg.len() || &msg[pos..pos + 2] != b"--" {
            return None;
        }
        if self.parts.len() as u64 >= u64::from(self.limits.parts_max) {
            return None;
        }
        let rest = &msg[pos + 2..];
        let (line, trailing_dashes) = match memchr(b'\n', rest) {
            Some(lf) => {
                let mut len = lf;
                if len > 0 && rest[len - 1] == b'\r' {
                    len -= 1;
                }
                let dashes = len > 2 && rest[len - 2..len] == *b"--";
                (&rest[..len], dashes)
            }
            None => (&rest[..rest.len().min(BOUNDARY_BYTES_MAX + 4)], false),
        };
        let mut best: Option<usize> = None;
        for (i, b) in self.boundaries.iter().enumerate().rev() {
            let len = b.text.len();
            if len <= line.len()
                && line[..len] == b.text[..]
                && best.is_none_or(|k| self.boundaries[k].text.len() < len)
            {
                best = Some(i);
                if len == line.len() || (trailing_dashes && len + 2 == line.len()) {
                    break;
                }
            }
        }
        let index = best?;
        let len = self.boundaries[index].text.len();
        let closing = rest.len() >= len + 2 && rest[len..len + 2] == *b"--";
        Some((index, closing))
    }

    /// Parses the header of the innermost part, line by line.
    fn header(&mut self) -> State {
        let msg = self.msg;
        let index = self.current();
        let mut pos = self.pos;
        let mut prev_newline = 0usize;
        // The field being collected: (first line start, first line content end, last content end).
        let mut field: Option<(usize, usize, usize)> = None;
        loop {
            if pos >= msg.len() {
                self.flush_field(index, field.take());
                self.parts[index].header_end = msg.len();
                self.pos = msg.len();
                self.next_header_start = msg.len();
                return self.end_of_header(index, false);
            }
            let line = line_at(msg, pos, msg.len());
            let blank = line.content_end == pos && line.newline_bytes > 0;
            let continuation = !blank && field.is_some() && is_lwsp(msg[pos]);
            if !continuation {
                // The previous field is complete: act on it before this line.
                self.flush_field(index, field.take());
            }
            let mut boundary_started = false;
            if blank
                && self.parts[index].boundary.is_some()
                && self.parts[index].flags & FLAG_IS_MIME != 0
            {
                if self.parts[index].depth + 1 < self.limits.depth_max {
                    let text = self.parts[index].boundary.take().unwrap_or_default();
                    self.boundaries.push(Boundary { part: index, text });
                    boundary_started = true;
                } else {
                    self.parts[index].multipart = false;
                }
            }
            if let Some((b, _)) = self.boundary_at(pos) {
                if self.boundaries[b].part != index {
                    // A boundary line ends this header; the line end before
                    // it belongs to the enclosing body.
                    self.flush_field(index, field.take());
                    let mut end = self.parts[index].header_start;
                    if prev_newline > 0 {
                        end = pos - prev_newline;
                        self.move_line_end_to_parent(index, prev_newline, pos);
                    }
                    let part = &mut self.parts[index];
                    part.header_end = end;
                    self.next_header_start = part.header_end;
                    self.pos = pos;
                    return self.end_of_header(index, false);
                }
            }
            if line.newline_bytes > 0 {
                let part = &mut self.parts[index];
                part.header_lines += 1;
                if line.newline_bytes == 1 {
                    part.header_bare_lf += 1;
                }
            }
            if blank {
                let mut end = line.next;
                // A boundary of an enclosing multipart right after the blank
                // line claims the blank line's line end (Dovecot checks for
                // boundaries once more before it ends the header).
                if let Some((b, _)) = self.boundary_at(line.next) {
                    if self.boundaries[b].part != index {
                        end = pos;
                        self.move_line_end_to_parent(index, line.newline_bytes, line.next);
                    }
                }
                self.parts[index].header_end = end;
                self.pos = line.next;
                self.next_header_start = end;
                return self.end_of_header(index, boundary_started);
            }
            match field.as_mut() {
                Some(f) if continuation => f.2 = line.content_end,
                _ => field = Some((pos, line.content_end, line.content_end)),
            }
            prev_newline = line.newline_bytes;
            pos = line.next;
        }
    }

    /// Moves the last header line end of part `index` (`newline` bytes) to
    /// its parent's body, where the boundary that follows it belongs.
    /// The line end ends at `end`.
    fn move_line_end_to_parent(&mut self, index: usize, newline: usize, end: usize) {
        let bare = newline == 1;
        let part = &mut self.parts[index];
        part.header_lines = part.header_lines.saturating_sub(1);
        if bare {
            part.header_bare_lf = part.header_bare_lf.saturating_sub(1);
        }
        let parent = part.parent;
        if let Some(p) = self.parts.get_mut(parent) {
            p.body_lines += 1;
            p.body_bare_lf += u32::from(bare);
            p.body_end = p.body_end.max(end);
        }
    }

    /// Records one complete header field of part `index`.
    fn flush_field(&mut self, index: usize, field: Option<(usize, usize, usize)>) {
        let Some((start, first_end, last_end)) = field else {
            return;
        };
        let msg = self.msg;
        let (name_range, value_start) = split_first_line(msg, start, first_end);
        let name = &msg[name_range];
        let value_end = last_end.max(value_start);
        let part = &mut self.parts[index];
        if name.eq_ignore_ascii_case(b"Mime-Version") {
            part.flags |= FLAG_IS_MIME;
            return;
        }
        if name.len() < 8 || !name[..8].eq_ignore_ascii_case(b"Content-") {
            return;
        }
        let suffix = &name[8..];
        let Some(slot) = CONTENT_FIELD_NAMES
            .iter()
            .position(|n| suffix.eq_ignore_ascii_case(n.as_bytes()))
        else {
            return;
        };
        let value = &msg[value_start..value_end];
        if slot == ContentField::Type as usize {
            part.flags |= FLAG_IS_MIME;
            if !part.seen_content_type {
                part.seen_content_type = true;
                classify(part, value);
            }
        }
        if slot == ContentField::TransferEncoding as usize {
            // The decoder goes by the last one (BODYSTRUCTURE by the first).
            part.encoding = encoding_of(value);
        }
        // The first value counts, except that Dovecot keeps looking past a
        // transfer encoding that is not one token, a disposition without
        // parameters and a language without tags.
        let replace = match part.content[slot].get() {
            None => true,
            Some(old) => {
                let old = &msg[old];
                match slot {
                    s if s == ContentField::TransferEncoding as usize => {
                        lex::transfer_encoding(old).is_none()
                    }
                    s if s == ContentField::Disposition as usize => {
                        lex::disposition(old).is_none_or(|(_, params)| params.is_empty())
                    }
                    s if s == ContentField::Language as usize => lex::language(old).is_none(),
                    _ => false,
                }
            }
        };
        if replace {
            part.content[slot] = Span::new(value_start, value_end);
        }
    }

    /// Decides what the part is once its header is complete.
    fn end_of_header(&mut self, index: usize, multipart_started: bool) -> State {
        let depth_max = self.limits.depth_max;
        let parts_max = u64::from(self.limits.parts_max);
        let part_count = self.parts.len() as u64;
        let part = &mut self.parts[index];
        part.body_start = part.header_end;
        part.body_end = part.header_end;
        part.boundary = None;
        if part.flags & FLAG_IS_MIME == 0 {
            // Not MIME: Content-* headers do not count.
            part.content = [Span::NONE; CONTENT_FIELDS];
            part.multipart = false;
            part.digest = false;
            part.message = false;
            part.text = false;
        }
        if !part.seen_content_type || part.flags & FLAG_IS_MIME == 0 {
            if part.flags & FLAG_IN_DIGEST != 0 {
                part.message = true;
            } else {
                part.text = true;
            }
        }
        if part.digest && part.multipart {
            part.flags |= FLAG_DIGEST;
        }
        part.kind = if part.multipart {
            PartKind::Multipart
        } else if part.message {
            PartKind::Message
        } else if part.text {
            PartKind::Text
        } else {
            PartKind::Other
        };
        let has_boundaries = !self.boundaries.is_empty();
        if multipart_started {
            return State::BodyToBoundary;
        }
        if part.kind != PartKind::Message {
            return if has_boundaries {
                State::BodyToBoundary
            } else {
                State::BodyToEnd
            };
        }
        if part.depth + 1 < depth_max && part_count < parts_max {
            // The embedded message starts where this header ended.
            self.push_part(index, false);
            return State::Header;
        }
        // Too deep or too many parts: keep the message opaque.
        part.kind = PartKind::Other;
        if has_boundaries {
            State::BodyToBoundary
        } else {
            State::BodyToEnd
        }
    }

    /// Body up to the next boundary line of any open multipart.
    fn body_to_boundary(&mut self) -> State {
        let msg = self.msg;
        let index = self.current();
        let start = self.pos;
        let mut found = None;
        if let Some(hit) = self.boundary_at(start) {
            found = Some((start, hit));
        } else {
            let mut from = start;
            while let Some(offset) = self.dash_finder.find(&msg[from..]) {
                let line_start = from + offset + 1;
                if let Some(hit) = self.boundary_at(line_start) {
                    found = Some((line_start, hit));
                    break;
                }
                from = line_start;
            }
        }
        let Some((line_start, (b, closing))) = found else {
            self.add_body(index, start, msg.len());
            self.pos = msg.len();
            return State::Done;
        };
        let first_line = line_start == start;
        let newline = if first_line {
            0
        } else if line_start >= start + 2 && msg[line_start - 2] == b'\r' {
            2
        } else {
            1
        };
        self.add_body(index, start, line_start - newline);
        // Close every part opened inside the boundary's multipart.
        let owner = self.boundaries[b].part;
        while self.current() != owner && self.open.len() > 1 {
            self.finish_innermost();
        }
        let len = self.boundaries[b].text.len();
        self.boundaries.truncate(if closing { b } else { b + 1 });
        let end = line_start + 2 + len + if closing { 2 } else { 0 };
        let owner = self.current();
        self.add_body(owner, line_start - newline, end);
        self.pos = end;
        State::SkipBoundaryLine
    }

    /// Body to the end of the message (no open boundaries).
    fn body_to_end(&mut self) -> State {
        let index = self.current();
        self.add_body(index, self.pos, self.msg.len());
        self.pos = self.msg.len();
        State::Done
    }

    /// The rest of a boundary line; then a new part, or the epilogue.
    fn skip_boundary_line(&mut self) -> State {
        let msg = self.msg;
        let index = self.current();
        let Some(offset) = memchr(b'\n', &msg[self.pos..]) else {
            self.add_body(index, self.pos, msg.len());
            self.pos = msg.len();
            return State::Done;
        };
        let end = self.pos + offset + 1;
        self.add_body(index, self.pos, end);
        self.pos = end;
        self.next_header_start = end;
        match self.boundaries.last() {
            Some(b) if b.part == index => {
                self.push_part(index, true);
                State::Header
            }
            Some(_) => State::BodyToBoundary,
            None => State::BodyToEnd,
        }
    }

    fn into_structure(self) -> MessageStructure {
        let msg = self.msg;
        let count = self.parts.len();
        let mut descendants = vec![0u32; count];
        for i in (1..count).rev() {
            let parent = self.parts[i].parent;
            if parent < count {
                descendants[parent] += 1 + descendants[i];
            }
        }
        let mut flags = 0;
        if memchr_iter(b'\n', msg).any(|lf| lf == 0 || msg[lf - 1] != b'\r') {
            flags |= MSG_BARE_LF;
        }
        if memchr(0, msg).is_some() {
            flags |= MSG_HAS_NUL;
        }
        let root = &self.parts[0];
        let size_octets = (root.header_end - root.header_start) as u64
            + u64::from(root.header_bare_lf)
            + (root.body_end - root.body_start) as u64
            + u64::from(root.body_bare_lf);
        let parts = self
            .parts
            .iter()
            .zip(descendants)
            .map(|(b, descendants)| {
                let body_len = b.body_end - b.body_start;
                Part {
                    header: Span::new(b.header_start, b.header_end),
                    body: Span::new(b.body_start, b.body_end),
                    body_octets: u32::try_from(body_len as u64 + u64::from(b.body_bare_lf))
                        .unwrap_or(u32::MAX),
                    body_lines: b.body_lines,
                    descendants,
                    content: b.content,
                    kind: b.kind,
                    encoding: b.encoding,
                    flags: b.flags,
                }
            })
            .collect();
        MessageStructure {
            parts,
            size_octets,
            len: msg.len() as u32,
            flags,
        }
    }
}

/// Dovecot's reading of the first Content-Type: sets the part's kind flags
/// and its boundary.
fn classify(part: &mut Building, value: &[u8]) {
    let ct = ContentType::parse(value, false);
    if ct.main.eq_ignore_ascii_case(b"message") && ct.sub.eq_ignore_ascii_case(b"rfc822") {
        part.message = true;
    } else if ct.main.eq_ignore_ascii_case(b"text") {
        part.text = true;
    } else if ct.main.eq_ignore_ascii_case(b"multipart") && !ct.sub.is_empty() {
        part.multipart = true;
        part.digest = ct.sub.eq_ignore_ascii_case(b"digest");
        let with_params = ContentType::parse(value, true);
        if let Some(boundary) = with_params.param("boundary") {
            part.boundary = Some(boundary[..boundary.len().min(BOUNDARY_BYTES_MAX)].to_vec());
        }
    }
}

/// The transfer encoding named by a Content-Transfer-Encoding value: one
/// token, optionally followed by `;` (an empty value is unknown).
pub(super) fn encoding_of(value: &[u8]) -> Encoding {
    let mut lexer = super::lex::Lexer::new(value);
    lexer.skip_cfws();
    let mut token = Vec::new();
    if lexer.token(&mut token) == super::lex::Lex::More {
        lexer.skip_cfws();
        if lexer.peek() != Some(b';') {
            return Encoding::Unknown;
        }
    }
    let is = |name: &[u8]| token.eq_ignore_ascii_case(name);
    if is(b"7bit") || is(b"8bit") || is(b"binary") {
        Encoding::Identity
    } else if is(b"base64") {
        Encoding::Base64
    } else if is(b"quoted-printable") {
        Encoding::QuotedPrintable
    } else {
        Encoding::Unknown
    }
}
