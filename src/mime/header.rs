//! Header fields: splitting a header block into fields (name, value range,
//! line range), unfolding values, and lookups by name. Shared by the parser,
//! ENVELOPE, HEADER.FIELDS and SEARCH.
//!
//! The rules are those of Dovecot's header parser: a field runs to the end of
//! its last continuation line (lines starting with SP or HTAB); the name is
//! what precedes the first `:` without trailing white space (a line without
//! `:`, or with a name over [`FIELD_NAME_BYTES_MAX`], has the empty name and
//! is all value); the value starts after the colon and any white space after
//! it (if the first line holds only white space, after one character of it);
//! an empty line ends the header.

use memchr::memchr;
use std::borrow::Cow;
use std::ops::Range;

/// Longer names make the whole line a nameless value.
pub const FIELD_NAME_BYTES_MAX: usize = 1_000;

/// One physical line: `content` excludes the line end, `next` is where the
/// following line starts, `newline_bytes` is 0 (end of input), 1 (LF) or 2 (CRLF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Line {
    pub content_end: usize,
    pub next: usize,
    pub newline_bytes: usize,
}

/// The line starting at `pos`, looking no further than `end`.
pub(crate) fn line_at(msg: &[u8], pos: usize, end: usize) -> Line {
    match memchr(b'\n', &msg[pos..end]) {
        Some(offset) => {
            let lf = pos + offset;
            let cr = lf > pos && msg[lf - 1] == b'\r';
            Line {
                content_end: if cr { lf - 1 } else { lf },
                next: lf + 1,
                newline_bytes: if cr { 2 } else { 1 },
            }
        }
        None => Line {
            content_end: end,
            next: end,
            newline_bytes: 0,
        },
    }
}

pub(crate) fn is_lwsp(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// Name and value start of a field whose first line is `msg[start..content_end]`.
pub(crate) fn split_first_line(
    msg: &[u8],
    start: usize,
    content_end: usize,
) -> (Range<usize>, usize) {
    let line = &msg[start..content_end];
    let Some(colon) = memchr(b':', line) else {
        return (start..start, start);
    };
    let mut name_end = colon;
    while name_end > 0 && is_lwsp(line[name_end - 1]) {
        name_end -= 1;
    }
    if name_end > FIELD_NAME_BYTES_MAX {
        return (start..start, start);
    }
    let value = &line[colon + 1..];
    let lwsp = value.iter().take_while(|&&c| is_lwsp(c)).count();
    let skip = if lwsp == value.len() {
        usize::from(!value.is_empty())
    } else {
        lwsp
    };
    (start..start + name_end, start + colon + 1 + skip)
}

/// One header field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    /// The field name as written (compare case-insensitively).
    pub name: &'a [u8],
    /// The raw value, folding line ends included, final line end excluded.
    pub value: &'a [u8],
    /// Absolute range of the value in the message.
    pub value_range: Range<usize>,
    /// Absolute range of the whole field, final line end included.
    pub line_range: Range<usize>,
}

impl Field<'_> {
    pub fn name_is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// Iterator over the fields of `msg[range]` (a header block).
pub struct Fields<'a> {
    msg: &'a [u8],
    pos: usize,
    end: usize,
}

/// The fields of the header block `msg[range]`.
pub fn fields(msg: &[u8], range: Range<usize>) -> Fields<'_> {
    let end = range.end.min(msg.len());
    Fields {
        msg,
        pos: range.start.min(end),
        end,
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        let msg = self.msg;
        if self.pos >= self.end {
            return None;
        }
        let start = self.pos;
        let first = line_at(msg, start, self.end);
        if first.content_end == start && first.newline_bytes > 0 {
            // The empty line that ends the header.
            self.pos = self.end;
            return None;
        }
        let (name, value_start) = split_first_line(msg, start, first.content_end);
        let mut value_end = first.content_end;
        let mut next = first.next;
        while next < self.end && is_lwsp(msg[next]) {
            let line = line_at(msg, next, self.end);
            value_end = line.content_end;
            next = line.next;
        }
        self.pos = next;
        Some(Field {
            name: &msg[name],
            value: &msg[value_start..value_end.max(value_start)],
            value_range: value_start..value_end.max(value_start),
            line_range: start..next,
        })
    }
}

/// The value of the first field called `name` in the header block `range`.
pub fn first_value<'a>(msg: &'a [u8], range: Range<usize>, name: &str) -> Option<&'a [u8]> {
    fields(msg, range)
        .find(|f| f.name_is(name))
        .map(|f| f.value)
}

/// Unfolds a value to one line the way Dovecot's search does: every line
/// end (CRLF or LF) is removed, and a TAB that starts a continuation line
/// becomes a space.
pub fn unfold(value: &[u8]) -> Cow<'_, [u8]> {
    if memchr(b'\n', value).is_none() {
        return Cow::Borrowed(value);
    }
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let c = value[i];
        if c == b'\r' && value.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        if c == b'\n' {
            if value.get(i + 1) == Some(&b'\t') {
                out.push(b' ');
                i += 2;
            } else {
                i += 1;
            }
            continue;
        }
        out.push(c);
        i += 1;
    }
    Cow::Owned(out)
}

/// Replaces NUL bytes by U+FFFD, as Dovecot does for stored header strings.
pub(crate) fn without_nuls(value: &[u8]) -> Cow<'_, [u8]> {
    if memchr(0, value).is_none() {
        return Cow::Borrowed(value);
    }
    let mut out = Vec::with_capacity(value.len() + 8);
    for &c in value {
        if c == 0 {
            out.extend_from_slice("\u{FFFD}".as_bytes());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// True when the header block ends with its blank line.
pub(crate) fn has_blank_line(block: &[u8]) -> bool {
    block == b"\n" || block == b"\r\n" || block.ends_with(b"\n\n") || block.ends_with(b"\n\r\n")
}
