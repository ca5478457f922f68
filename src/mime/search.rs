//! SEARCH helpers (RFC 9051 §6.4.4): case-insensitive substring matches on
//! decoded text, as Dovecot does them:
//! - HEADER: each field of that name in the message header, unfolded and with
//!   encoded words decoded; an empty key matches when the field exists;
//! - FROM/TO/CC/BCC: each such field's address list re-written in normal
//!   form (`Name <user@host>`, groups as `group: a@b;`) then decoded;
//! - SUBJECT: runs of white space collapsed first;
//! - BODY: the bodies of text/* and message/* leaf parts (a part without
//!   Content-Type counts as text), transfer encoding and charset decoded;
//! - TEXT: every part's header fields (`Name: value`) and BODY.
//!
//! Comparison is in UTF-8 after folding both sides (lower case, canonical
//! decomposition of Latin letters: see `fold`).

use memchr::memmem;

use super::address::{parse_list, write_list};
use super::decode::{self, header_to_utf8};
use super::fold::fold;
use super::header::{fields, unfold, Field};
use super::lex::ContentType;
use super::{date, ContentField, Encoding, MessageStructure, PartKind};
use std::borrow::Cow;

/// A folded search key.
struct Key {
    folded: Vec<u8>,
}

impl Key {
    fn new(needle: &[u8]) -> Key {
        let mut folded = Vec::with_capacity(needle.len());
        fold(&String::from_utf8_lossy(needle), &mut folded);
        Key { folded }
    }

    fn is_empty(&self) -> bool {
        self.folded.is_empty()
    }

    /// True when the key occurs in `text` (already UTF-8).
    fn in_text(&self, text: &str, scratch: &mut Vec<u8>) -> bool {
        scratch.clear();
        fold(text, scratch);
        memmem::find(scratch, &self.folded).is_some()
    }

    /// True when the key occurs in a header value after decoding.
    fn in_header_value(&self, value: &[u8], scratch: &mut Vec<u8>) -> bool {
        let mut text = String::with_capacity(value.len());
        header_to_utf8(value, &mut text);
        self.in_text(&text, scratch)
    }
}

/// Collapses runs of SP/HTAB to one space and drops leading ones.
fn compress_lwsp(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut prev_lwsp = true;
    for &c in value {
        if c == b' ' || c == b'\t' {
            if !prev_lwsp {
                out.push(b' ');
                prev_lwsp = true;
            }
        } else {
            out.push(c);
            prev_lwsp = false;
        }
    }
    out
}

/// A field value as SEARCH HEADER sees it: from after the colon and one
/// white space character (the ENVELOPE value skips all of them).
fn search_value<'m>(msg: &'m [u8], field: &Field<'m>) -> Cow<'m, [u8]> {
    let middle = &msg[field.line_range.start + field.name.len()..field.value_range.start];
    let Some(colon) = middle.iter().position(|&c| c == b':') else {
        return Cow::Borrowed(field.value);
    };
    let mut extra = &middle[colon + 1..];
    if let [b' ' | b'\t', rest @ ..] = extra {
        extra = rest;
    }
    if extra.is_empty() {
        return Cow::Borrowed(field.value);
    }
    let mut value = extra.to_vec();
    value.extend_from_slice(field.value);
    Cow::Owned(value)
}

impl MessageStructure {
    /// Whether a `name` field of the message header exists (empty needle)
    /// or `hit` finds the key in one.
    fn root_field_contains<'m>(
        &self,
        msg: &'m [u8],
        name: &str,
        needle: &[u8],
        mut hit: impl FnMut(&'m [u8], &Field<'m>, &Key, &mut Vec<u8>) -> bool,
    ) -> bool {
        let Some(msg) = self.bytes(msg) else {
            return false;
        };
        let key = Key::new(needle);
        let mut scratch = Vec::new();
        fields(msg, self.root().header.range())
            .filter(|f| f.name_is(name))
            .any(|f| key.is_empty() || hit(msg, &f, &key, &mut scratch))
    }

    /// SEARCH HEADER: does a `name` field of the message header contain
    /// `needle`? An empty needle asks whether the field exists.
    pub fn header_contains(&self, msg: &[u8], name: &str, needle: &[u8]) -> bool {
        self.root_field_contains(msg, name, needle, |msg, f, key, scratch| {
            key.in_header_value(&unfold(&search_value(msg, f)), scratch)
        })
    }

    /// SEARCH FROM/TO/CC/BCC (any address header name works): matches the
    /// address list written in normal form. An empty needle asks whether
    /// the field exists.
    pub fn address_contains(&self, msg: &[u8], field: &str, needle: &[u8]) -> bool {
        let mut normal = Vec::new();
        self.root_field_contains(msg, field, needle, |_, f, key, scratch| {
            normal.clear();
            write_list(&mut normal, &parse_list(&unfold(f.value)));
            key.in_header_value(&normal, scratch)
        })
    }

    /// SEARCH SUBJECT. An empty needle asks whether there is a Subject.
    pub fn subject_contains(&self, msg: &[u8], needle: &[u8]) -> bool {
        self.root_field_contains(msg, "Subject", needle, |_, f, key, scratch| {
            key.in_header_value(&compress_lwsp(&unfold(f.value)), scratch)
        })
    }

    /// SEARCH BODY: the decoded text of the message's text parts.
    pub fn body_contains(&self, msg: &[u8], needle: &[u8]) -> bool {
        let Some(msg) = self.bytes(msg) else {
            return false;
        };
        let key = Key::new(needle);
        if key.is_empty() {
            return true;
        }
        let mut scratch = Vec::new();
        (0..self.parts.len()).any(|i| self.part_body_contains(msg, i, &key, &mut scratch))
    }

    /// SEARCH TEXT: header fields of every part, and BODY.
    pub fn text_contains(&self, msg: &[u8], needle: &[u8]) -> bool {
        let Some(msg) = self.bytes(msg) else {
            return false;
        };
        let key = Key::new(needle);
        if key.is_empty() {
            return true;
        }
        let mut scratch = Vec::new();
        (0..self.parts.len()).any(|i| {
            self.part_header_contains(msg, i, &key, &mut scratch)
                || self.part_body_contains(msg, i, &key, &mut scratch)
        })
    }

    /// SENTBEFORE/SENTON/SENTSINCE: the first Date field as
    /// `(unix seconds UTC, zone offset in minutes)`. RFC 3501 compares the
    /// date as written, so callers compare `unix + offset * 60` with the day.
    pub fn sent_date(&self, msg: &[u8]) -> Option<(i64, i16)> {
        let msg = self.bytes(msg)?;
        let value = fields(msg, self.root().header.range()).find(|f| f.name_is("Date"))?;
        date::parse(value.value)
    }

    fn part_header_contains(
        &self,
        msg: &[u8],
        index: usize,
        key: &Key,
        scratch: &mut Vec<u8>,
    ) -> bool {
        let mut text = String::new();
        for f in fields(msg, self.parts[index].header.range()) {
            // Name and separator as written, then the decoded value.
            let middle = &msg[f.line_range.start + f.name.len()..f.value_range.start];
            text.push_str(&String::from_utf8_lossy(f.name));
            text.push_str(&String::from_utf8_lossy(middle));
            header_to_utf8(&unfold(f.value), &mut text);
            text.push_str("\r\n");
        }
        key.in_text(&text, scratch)
    }

    fn part_body_contains(
        &self,
        msg: &[u8],
        index: usize,
        key: &Key,
        scratch: &mut Vec<u8>,
    ) -> bool {
        let part = &self.parts[index];
        if matches!(part.kind, PartKind::Multipart | PartKind::Message) {
            return false;
        }
        let ct = part
            .content_value(ContentField::Type)
            .map(|r| ContentType::parse(&msg[r], true));
        // Dovecot: no Content-Type, or one that parses as text/* or message/*.
        let textual = ct.as_ref().is_none_or(|ct| {
            !ct.sub.is_empty()
                && (ct.main.eq_ignore_ascii_case(b"text")
                    || ct.main.eq_ignore_ascii_case(b"message"))
        });
        if !textual {
            return false;
        }
        // Dovecot does not search a body it cannot decode.
        if part.encoding == Encoding::Unknown {
            return false;
        }
        let body = decode::body(part.encoding, &msg[part.body.range()]);
        let body = &body[..];
        let charset = ct
            .as_ref()
            .and_then(|ct| ct.param("charset"))
            .unwrap_or(b"utf-8");
        // UTF-8 text (and ASCII in any charset) is folded without a copy.
        if let Ok(text) = std::str::from_utf8(body) {
            if body.is_ascii() || decode::is_utf8_charset(charset) {
                return key.in_text(text, scratch);
            }
        }
        let mut text = String::with_capacity(body.len());
        decode::to_utf8(charset, body, &mut text);
        key.in_text(&text, scratch)
    }
}
