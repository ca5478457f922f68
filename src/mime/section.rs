//! BODY[section] (RFC 9051 §6.4.5) and BINARY[section] (RFC 3516).
//!
//! Sections are byte ranges of the stored message and come back borrowed,
//! except when the message has bare LFs (converted to CRLF) or NULs (sent as
//! 0x80, as Dovecot does) and for HEADER.FIELDS[.NOT], which builds a small
//! buffer. A part number that names no part gives `None`: IMAP then sends
//! an empty string (Dovecot sends `{0}`), not NIL.

use std::borrow::Cow;

use memchr::{memchr, memchr_iter};

use super::decode;
use super::header::{fields, has_blank_line};
use super::{Encoding, MessageStructure, MimeError, Part, SectionSpec};

/// Appends `bytes` to `out` with every bare LF made CRLF.
fn to_crlf_into(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut start = 0;
    for lf in memchr_iter(b'\n', bytes) {
        out.extend_from_slice(&bytes[start..lf]);
        if lf == 0 || bytes[lf - 1] != b'\r' {
            out.push(b'\r');
        }
        out.push(b'\n');
        start = lf + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

impl MessageStructure {
    /// CRLF line ends (and, unless `binary`, NUL as 0x80) for a slice of
    /// this message; borrowed when nothing needs changing.
    fn clean<'m>(&self, bytes: &'m [u8], binary: bool) -> Cow<'m, [u8]> {
        let bare_lf = self.has_bare_lf()
            && memchr_iter(b'\n', bytes).any(|lf| lf == 0 || bytes[lf - 1] != b'\r');
        let nul = !binary && self.has_nul() && memchr(0, bytes).is_some();
        if !bare_lf && !nul {
            return Cow::Borrowed(bytes);
        }
        let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32 + 2);
        self.clean_into(&mut out, bytes, binary);
        Cow::Owned(out)
    }

    /// Appends what [`Self::clean`] returns to `out`, without a copy between.
    fn clean_into(&self, out: &mut Vec<u8>, bytes: &[u8], binary: bool) {
        let start = out.len();
        if self.has_bare_lf() {
            to_crlf_into(out, bytes);
        } else {
            out.extend_from_slice(bytes);
        }
        if !binary && self.has_nul() {
            for c in out[start..].iter_mut().filter(|c| **c == 0) {
                *c = 0x80;
            }
        }
    }

    /// The bytes of `BODY[<part>.<what>]`. `part` is the section's part
    /// number (`[]` for the message itself). `None` when the part does not
    /// exist, when HEADER/TEXT/HEADER.FIELDS name a part that is not
    /// message/rfc822, or for MIME without a part number. The caller applies
    /// `<origin.octets>` to the result.
    pub fn section<'m>(
        &self,
        msg: &'m [u8],
        part: &[u32],
        what: SectionSpec<'_>,
    ) -> Option<Cow<'m, [u8]>> {
        let msg = self.bytes(msg)?;
        let index = self.find(part)?;
        let p = &self.parts[index];
        let range = match what {
            SectionSpec::Full if part.is_empty() => 0..msg.len(),
            SectionSpec::Full => p.body.range(),
            SectionSpec::Mime if part.is_empty() => return None,
            SectionSpec::Mime => p.header.range(),
            SectionSpec::Header
            | SectionSpec::Text
            | SectionSpec::HeaderFields(_)
            | SectionSpec::HeaderFieldsNot(_) => {
                let message = if part.is_empty() {
                    index
                } else {
                    self.embedded(index)?
                };
                let m = &self.parts[message];
                match what {
                    SectionSpec::Text => m.body.range(),
                    SectionSpec::HeaderFields(names) => {
                        let blank = part.is_empty();
                        return Some(self.header_fields(msg, m.header.range(), names, true, blank));
                    }
                    SectionSpec::HeaderFieldsNot(names) => {
                        return Some(self.header_fields(
                            msg,
                            m.header.range(),
                            names,
                            false,
                            false,
                        ));
                    }
                    _ => m.header.range(),
                }
            }
        };
        Some(self.clean(&msg[range], false))
    }

    /// HEADER.FIELDS (`include`) or HEADER.FIELDS.NOT: the fields whose
    /// names match (case-insensitively), in message order, lines as stored
    /// but with CRLF ends, then the blank line if the header has one or
    /// `always_blank` (Dovecot always ends the top-level HEADER.FIELDS
    /// with one).
    fn header_fields(
        &self,
        msg: &[u8],
        header: std::ops::Range<usize>,
        names: &[String],
        include: bool,
        always_blank: bool,
    ) -> Cow<'static, [u8]> {
        let mut out = Vec::new();
        for field in fields(msg, header.clone()) {
            let listed = names.iter().any(|n| field.name_is(n));
            if listed == include {
                self.clean_into(&mut out, &msg[field.line_range.clone()], false);
            }
        }
        if always_blank || has_blank_line(&msg[header]) {
            out.extend_from_slice(b"\r\n");
        }
        Cow::Owned(out)
    }

    /// BINARY[part]: the part's body with its transfer encoding removed;
    /// `part = []` is the whole message with its header. Inside a multipart
    /// or message/rfc822, every base64 or quoted-printable body is decoded
    /// and its header says `Content-Transfer-Encoding: binary` instead
    /// (Dovecot's conversion); everything else is copied with CRLF ends.
    pub fn try_binary<'m>(&self, msg: &'m [u8], part: &[u32]) -> Result<Cow<'m, [u8]>, MimeError> {
        let no_such_part = || MimeError::NoSuchPart {
            path: part.to_vec(),
        };
        let msg = self.bytes(msg).ok_or_else(no_such_part)?;
        let index = self.find(part).ok_or_else(no_such_part)?;
        let p = &self.parts[index];
        let include_header = part.is_empty();
        let subtree = &self.parts[index..=index + p.descendants as usize];
        if subtree.iter().any(|q| q.encoding == Encoding::Unknown) {
            return Err(MimeError::UnknownEncoding {
                path: part.to_vec(),
            });
        }
        let range = if include_header {
            0..msg.len()
        } else {
            p.body.range()
        };
        if !include_header && p.descendants == 0 {
            return Ok(self.decoded_body(msg, index));
        }
        if !subtree.iter().any(converted) {
            return Ok(self.clean(&msg[range], true));
        }
        let mut binary = Binary {
            structure: self,
            msg,
            out: Vec::with_capacity(range.len()),
            copied_to: range.start,
        };
        binary.part(index, include_header);
        binary.copy_to(range.end);
        Ok(Cow::Owned(binary.out))
    }

    /// The body of a part without children, transfer encoding removed.
    fn decoded_body<'m>(&self, msg: &'m [u8], index: usize) -> Cow<'m, [u8]> {
        let p = &self.parts[index];
        let body = &msg[p.body.range()];
        match p.encoding {
            Encoding::Base64 | Encoding::QuotedPrintable => decode::body(p.encoding, body),
            Encoding::Identity | Encoding::Unknown => self.clean(body, true),
        }
    }

    /// BINARY[part] as an owned buffer; `None` when the part does not exist
    /// or cannot be decoded (see [`MessageStructure::try_binary`]).
    pub fn binary(&self, msg: &[u8], part: &[u32]) -> Option<Vec<u8>> {
        self.try_binary(msg, part).ok().map(Cow::into_owned)
    }

    /// BINARY.SIZE[part]: the size [`MessageStructure::binary`] would return.
    pub fn binary_size(&self, msg: &[u8], part: &[u32]) -> Option<u64> {
        let index = self.find(part)?;
        let p = &self.parts[index];
        if !part.is_empty() && p.encoding == Encoding::Base64 && p.descendants == 0 {
            return Some(decode::base64_len(&self.bytes(msg)?[p.body.range()]));
        }
        self.try_binary(msg, part).ok().map(|b| b.len() as u64)
    }
}

/// True for a part whose body BINARY decodes: base64 or quoted-printable
/// without children (a multipart or message/rfc822 that claims an encoding
/// is copied as it is, as Dovecot does).
fn converted(part: &Part) -> bool {
    part.descendants == 0 && matches!(part.encoding, Encoding::Base64 | Encoding::QuotedPrintable)
}

/// Dovecot's BINARY conversion of a multipart or message/rfc822 subtree.
struct Binary<'a> {
    structure: &'a MessageStructure,
    msg: &'a [u8],
    out: Vec<u8>,
    /// Message bytes before this offset are written (or skipped).
    copied_to: usize,
}

impl Binary<'_> {
    fn copy_to(&mut self, end: usize) {
        if end > self.copied_to {
            let bytes = &self.msg[self.copied_to..end];
            self.structure.clean_into(&mut self.out, bytes, true);
            self.copied_to = end;
        }
    }

    fn part(&mut self, index: usize, include_header: bool) {
        let p = self.structure.parts[index];
        let header = p.header.range();
        if include_header && matches!(p.encoding, Encoding::Base64 | Encoding::QuotedPrintable) {
            self.copy_to(header.start);
            for field in fields(self.msg, header.clone()) {
                if !field.name_is("Content-Transfer-Encoding") {
                    let line = &self.msg[field.line_range.clone()];
                    self.structure.clean_into(&mut self.out, line, true);
                }
            }
            if has_blank_line(&self.msg[header.clone()]) {
                self.out
                    .extend_from_slice(b"Content-Transfer-Encoding: binary\r\n\r\n");
            }
        } else if include_header {
            self.copy_to(header.end);
        }
        self.copied_to = header.end;
        let body = p.body.range();
        if p.descendants > 0 {
            let children: Vec<usize> = self.structure.children(index).collect();
            for child in children {
                self.part(child, true);
            }
            self.copy_to(body.end);
            return;
        }
        if !body.is_empty() {
            let decoded = self.structure.decoded_body(self.msg, index);
            self.out.extend_from_slice(&decoded);
        }
        self.copied_to = body.end;
    }
}
