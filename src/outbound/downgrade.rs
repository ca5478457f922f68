//! 8BITMIME downgrade (RFC 6152 §3, RFC 1652 §3), sans-IO: when a message has 8-bit
//! content and the remote server does not offer 8BITMIME, every 8-bit leaf body is
//! re-encoded as quoted-printable (text parts with lines of at most 998 bytes and no NUL)
//! or base64 (anything else), its `Content-Transfer-Encoding` is replaced, and a multipart
//! or message/rfc822 labelled `8bit`/`binary` whose content became 7-bit is relabelled
//! `7bit`. Multiparts and embedded messages are entered (through [`crate::mime`]'s parse, so
//! the parts found are exactly the ones a reader will find).
//!
//! What is left alone (and reported by [`Downgraded::still_8bit`]): 8-bit header fields
//! (they need SMTPUTF8, which a downgrade cannot provide: the client then fails the
//! message as SMTPUTF8-needed), 8-bit preambles and epilogues, and bodies with a transfer
//! encoding we cannot decode. A quoted-printable or base64 body that carries raw 8-bit
//! bytes anyway is decoded (leniently, as readers do) and encoded again.
//!
//! A message root (the message, or one embedded in message/rfc822) that is not MIME gets
//! `MIME-Version: 1.0` (and, when it has none, `Content-Type: text/plain` with `utf-8` or
//! `unknown-8bit` as its charset) so that the new transfer encoding counts.
//!
//! Encoded output: every line at most 76 characters, CRLF line ends (a CRLF of the text is
//! a hard line break; a CR or LF on its own is encoded), white space before a line end
//! encoded, and a `-` starting an encoded line written as `=2D` so no line of the output
//! can become a boundary.

use std::ops::Range;

use thiserror::Error;

use crate::mime::decode;
use crate::mime::header::{self, has_blank_line};
use crate::mime::lex::{self, ContentType};
use crate::mime::{ContentField, Encoding, Message, MessageStructure, PartKind, MESSAGE_BYTES_MAX};

/// RFC 5322 §2.1.1: a line is at most 998 characters without its CRLF. Longer lines in a
/// text part make it base64.
pub const TEXT_LINE_BYTES_MAX: usize = 998;
/// RFC 2045 §6.7 (quoted-printable) and §6.8 (base64): encoded lines of at most 76.
pub const ENCODED_LINE_BYTES_MAX: usize = 76;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DowngradeError {
    /// The MIME parser addresses messages with 32-bit offsets.
    #[error(
        "message of {message_bytes} bytes is too large to re-encode (at most {message_bytes_max})"
    )]
    TooLarge {
        message_bytes: usize,
        message_bytes_max: usize,
    },
}

/// The result of [`downgrade`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downgraded {
    pub message: Vec<u8>,
    /// Leaf bodies that were re-encoded.
    pub parts_encoded: usize,
    /// 8-bit bytes remain (headers, preambles, bodies in unknown encodings).
    pub still_8bit: bool,
}

/// True when any byte has its high bit set. One OR over 64-byte blocks (vectorised by the
/// compiler), so about memory speed.
pub fn is_8bit(message: &[u8]) -> bool {
    let mut blocks = message.chunks_exact(64);
    for block in &mut blocks {
        if block.iter().fold(0u8, |acc, &b| acc | b) & 0x80 != 0 {
            return true;
        }
    }
    blocks.remainder().iter().any(|&b| b & 0x80 != 0)
}

/// True when a header block of the message (top level, a MIME part's, or an embedded
/// message's) holds 8-bit bytes: the message then needs SMTPUTF8 (RFC 6532), which no
/// downgrade can replace. Cheap when the message is 7-bit (no parse).
pub fn header_8bit(message: &[u8]) -> bool {
    if !is_8bit(message) {
        return false;
    }
    let structure = Message::parse(message);
    structure
        .parts()
        .iter()
        .any(|p| message.get(p.header.range()).is_some_and(is_8bit))
}

/// What happens to one part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Keep,
    /// Re-encode the leaf body (decoding it first when it is QP or base64).
    Encode {
        qp: bool,
    },
    /// A multipart or message/rfc822 labelled 8bit/binary whose content is now 7-bit.
    Relabel,
}

/// Re-encodes the 8-bit bodies of `message` for a 7-bit transport. A 7-bit message comes
/// back unchanged (copied).
pub fn downgrade(message: &[u8]) -> Result<Downgraded, DowngradeError> {
    if message.len() > MESSAGE_BYTES_MAX {
        return Err(DowngradeError::TooLarge {
            message_bytes: message.len(),
            message_bytes_max: MESSAGE_BYTES_MAX,
        });
    }
    if !is_8bit(message) {
        return Ok(Downgraded {
            message: message.to_vec(),
            parts_encoded: 0,
            still_8bit: false,
        });
    }
    let structure = Message::parse(message);
    let parts = structure.parts();
    let mut actions = vec![Action::Keep; parts.len()];
    for (index, part) in parts.iter().enumerate() {
        let body = part.body.range();
        let leaf = matches!(part.kind, PartKind::Text | PartKind::Other);
        if !leaf
            || !is_8bit(&message[body.clone()])
            || !rewritable(message, &structure, index)
            || (part.kind == PartKind::Other && cut_container(message, &structure, index))
        {
            continue;
        }
        let content = match part.encoding {
            Encoding::Identity => std::borrow::Cow::Borrowed(&message[body]),
            Encoding::QuotedPrintable | Encoding::Base64 => {
                std::borrow::Cow::Owned(decoded(message, body, part.encoding))
            }
            Encoding::Unknown => continue,
        };
        actions[index] = Action::Encode {
            qp: part.kind == PartKind::Text && is_text(&content),
        };
    }
    // Containers: relabel when nothing 8-bit is left in them once the leaves are encoded.
    let encoded: Vec<Range<usize>> = parts
        .iter()
        .zip(&actions)
        .filter(|(_, a)| matches!(a, Action::Encode { .. }))
        .map(|(p, _)| p.body.range())
        .collect();
    for (index, part) in parts.iter().enumerate() {
        if matches!(part.kind, PartKind::Multipart | PartKind::Message)
            && labelled_8bit(message, &structure, index)
            && rewritable(message, &structure, index)
            && !is_8bit_outside(message, part.body.range(), &encoded)
        {
            actions[index] = Action::Relabel;
        }
    }

    let mut out = Vec::with_capacity(message.len() + message.len() / 4);
    let mut cursor = 0;
    let mut parts_encoded = 0;
    for (index, part) in parts.iter().enumerate() {
        let header = part.header.range();
        let body = part.body.range();
        if actions[index] == Action::Keep || header.start < cursor {
            continue;
        }
        out.extend_from_slice(&message[cursor..header.start]);
        let root = is_message_root(&structure, index);
        match actions[index] {
            Action::Encode { qp } => {
                let content = match part.encoding {
                    Encoding::Identity => std::borrow::Cow::Borrowed(&message[body.clone()]),
                    encoding => std::borrow::Cow::Owned(decoded(message, body.clone(), encoding)),
                };
                let fix = HeaderFix {
                    transfer_encoding: if qp { "quoted-printable" } else { "base64" },
                    mime_version: root && !has_field(message, header.clone(), "MIME-Version"),
                    content_type: (root
                        && part.kind == PartKind::Text
                        && !has_field(message, header.clone(), "Content-Type"))
                    .then(|| default_content_type(&content)),
                };
                write_header(&mut out, message, header, &fix);
                if qp {
                    encode_quoted_printable(&content, &mut out);
                } else {
                    encode_base64(&content, &mut out);
                    if content.ends_with(b"\n") {
                        out.extend_from_slice(b"\r\n");
                    }
                }
                cursor = body.end;
                parts_encoded += 1;
            }
            Action::Relabel => {
                let fix = HeaderFix {
                    transfer_encoding: "7bit",
                    mime_version: false,
                    content_type: None,
                };
                write_header(&mut out, message, header.clone(), &fix);
                cursor = header.end;
            }
            Action::Keep => {}
        }
    }
    out.extend_from_slice(&message[cursor..]);
    let still_8bit = is_8bit(&out);
    Ok(Downgraded {
        message: out,
        parts_encoded,
        still_8bit,
    })
}

/// The part's header ends with its blank line right where its body starts, so it can be
/// rewritten as a whole.
fn rewritable(message: &[u8], structure: &MessageStructure, index: usize) -> bool {
    let part = &structure.parts()[index];
    let (header, body) = (part.header.range(), part.body.range());
    header.end == body.start && has_blank_line(&message[header])
}

/// A part the parser kept opaque (past its depth or part limits) although its
/// Content-Type says multipart or message: encoding it would break RFC 2045 §6.4.
fn cut_container(message: &[u8], structure: &MessageStructure, index: usize) -> bool {
    let part = &structure.parts()[index];
    let Some(range) = part.content_value(ContentField::Type) else {
        return false;
    };
    let ct = ContentType::parse(&message[range], false);
    ct.main.eq_ignore_ascii_case(b"multipart") || ct.main.eq_ignore_ascii_case(b"message")
}

/// Content-Transfer-Encoding says 8bit or binary.
fn labelled_8bit(message: &[u8], structure: &MessageStructure, index: usize) -> bool {
    let part = &structure.parts()[index];
    let Some(range) = part.content_value(ContentField::TransferEncoding) else {
        return false;
    };
    lex::transfer_encoding(&message[range]).is_some_and(|token| {
        token.eq_ignore_ascii_case(b"8bit") || token.eq_ignore_ascii_case(b"binary")
    })
}

/// 8-bit bytes in `range` outside the (sorted, disjoint or nested-free) `skip` ranges.
fn is_8bit_outside(message: &[u8], range: Range<usize>, skip: &[Range<usize>]) -> bool {
    let mut at = range.start;
    for s in skip
        .iter()
        .filter(|s| s.start >= range.start && s.end <= range.end)
    {
        if s.start > at && is_8bit(&message[at..s.start]) {
            return true;
        }
        at = at.max(s.end);
    }
    at < range.end && is_8bit(&message[at..range.end])
}

/// The message itself, or the message embedded in a message/rfc822 part.
fn is_message_root(structure: &MessageStructure, index: usize) -> bool {
    if index == 0 {
        return true;
    }
    let parts = structure.parts();
    // The parent is the nearest earlier part whose subtree contains `index`.
    (0..index)
        .rev()
        .find(|&p| p + parts[p].descendants as usize >= index)
        .is_some_and(|p| parts[p].kind == PartKind::Message)
}

fn has_field(message: &[u8], header: Range<usize>, name: &str) -> bool {
    header::fields(message, header).any(|f| f.name_is(name))
}

fn default_content_type(content: &[u8]) -> &'static str {
    if std::str::from_utf8(content).is_ok() {
        "text/plain; charset=utf-8"
    } else {
        "text/plain; charset=unknown-8bit"
    }
}

fn decoded(message: &[u8], body: Range<usize>, encoding: Encoding) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    match encoding {
        Encoding::Base64 => decode::base64(&message[body], &mut out),
        Encoding::QuotedPrintable => decode::quoted_printable(&message[body], &mut out),
        Encoding::Identity | Encoding::Unknown => out.extend_from_slice(&message[body]),
    }
    out
}

/// Fit for quoted-printable: no NUL and no line longer than [`TEXT_LINE_BYTES_MAX`].
fn is_text(content: &[u8]) -> bool {
    memchr::memchr(0, content).is_none()
        && content
            .split(|&b| b == b'\n')
            .all(|line| line.strip_suffix(b"\r").unwrap_or(line).len() <= TEXT_LINE_BYTES_MAX)
}

struct HeaderFix {
    transfer_encoding: &'static str,
    mime_version: bool,
    content_type: Option<&'static str>,
}

/// The part's header without its Content-Transfer-Encoding fields, then the added fields,
/// then the blank line.
fn write_header(out: &mut Vec<u8>, message: &[u8], header: Range<usize>, fix: &HeaderFix) {
    for field in header::fields(message, header) {
        if field.name_is("Content-Transfer-Encoding") {
            continue;
        }
        let line = &message[field.line_range];
        out.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
    if fix.mime_version {
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    }
    if let Some(content_type) = fix.content_type {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(content_type.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Transfer-Encoding: ");
    out.extend_from_slice(fix.transfer_encoding.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// RFC 2045 §6.7 quoted-printable. CRLF is a hard line break; soft breaks keep every
/// output line at most [`ENCODED_LINE_BYTES_MAX`] characters including the `=`.
pub fn encode_quoted_printable(input: &[u8], out: &mut Vec<u8>) {
    out.reserve(input.len() + input.len() / 8);
    let mut line_bytes = 0usize;
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == b'\r' && input.get(i + 1) == Some(&b'\n') {
            out.extend_from_slice(b"\r\n");
            line_bytes = 0;
            i += 2;
            continue;
        }
        let before_line_end = match input.get(i + 1) {
            None => true,
            Some(&b'\r') => input.get(i + 2) == Some(&b'\n'),
            Some(_) => false,
        };
        let literal = |line_bytes: usize| match b {
            b' ' | b'\t' => !before_line_end,
            b'=' => false,
            b'-' => line_bytes > 0,
            33..=126 => true,
            _ => false,
        };
        let mut width = if literal(line_bytes) { 1 } else { 3 };
        // Room for the character and a soft break's `=` after it, unless it ends the line.
        let room = if before_line_end {
            ENCODED_LINE_BYTES_MAX
        } else {
            ENCODED_LINE_BYTES_MAX - 1
        };
        if line_bytes + width > room {
            out.extend_from_slice(b"=\r\n");
            line_bytes = 0;
            width = if literal(0) { 1 } else { 3 };
        }
        if width == 1 {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
        line_bytes += width;
        i += 1;
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// RFC 2045 §6.8 base64, lines of [`ENCODED_LINE_BYTES_MAX`] joined by CRLF (no line end
/// after the last).
pub fn encode_base64(input: &[u8], out: &mut Vec<u8>) {
    const GROUPS_PER_LINE: usize = ENCODED_LINE_BYTES_MAX / 4;
    out.reserve(input.len() / 3 * 4 + input.len() / 38 + 4);
    for (n, chunk) in input.chunks(3).enumerate() {
        if n > 0 && n % GROUPS_PER_LINE == 0 {
            out.extend_from_slice(b"\r\n");
        }
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let v = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        out.push(BASE64[(v >> 18) as usize & 63]);
        out.push(BASE64[(v >> 12) as usize & 63]);
        out.push(if chunk.len() > 1 {
            BASE64[(v >> 6) as usize & 63]
        } else {
            b'='
        });
        out.push(if chunk.len() > 2 {
            BASE64[v as usize & 63]
        } else {
            b'='
        });
    }
}

#[cfg(test)]
mod tests;
