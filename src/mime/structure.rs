//! BODY and BODYSTRUCTURE (RFC 9051 §7.5.2, RFC 3501 §7.4.2), written the
//! way Dovecot 2.3 writes them: type, subtype and parameter names in the
//! case the message uses; `("charset" "us-ascii")` added to text parts
//! without a charset; `"7bit"` when there is no transfer encoding; every
//! extension field present (NIL when absent); a multipart without parts
//! shows one empty text/plain part; a part cut off by the limits shows as
//! application/octet-stream.

use super::header::without_nuls;
use super::lex::{disposition, language, transfer_encoding, ContentType, Params};
use super::quote::{nstring_nolf, string};
use super::{envelope, ContentField, MessageStructure, Part, PartKind};
use std::io::Write;

const EMPTY_BODY: &[u8] = b"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)";
const EMPTY_BODYSTRUCTURE: &[u8] =
    b"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL)";

/// The Content-* values of one part, parsed.
struct PartData<'m> {
    content_type: Option<ContentType>,
    encoding: Option<Vec<u8>>,
    id: Option<&'m [u8]>,
    description: Option<&'m [u8]>,
    disposition: Option<(Vec<u8>, Params)>,
    language: Option<Vec<Vec<u8>>>,
    location: Option<&'m [u8]>,
    md5: Option<&'m [u8]>,
}

fn value<'m>(msg: &'m [u8], part: &Part, field: ContentField) -> Option<&'m [u8]> {
    part.content_value(field).map(|r| &msg[r])
}

impl<'m> PartData<'m> {
    fn read(msg: &'m [u8], part: &Part) -> PartData<'m> {
        PartData {
            content_type: value(msg, part, ContentField::Type).map(|v| ContentType::parse(v, true)),
            encoding: value(msg, part, ContentField::TransferEncoding).and_then(transfer_encoding),
            id: value(msg, part, ContentField::Id),
            description: value(msg, part, ContentField::Description),
            disposition: value(msg, part, ContentField::Disposition).and_then(disposition),
            language: value(msg, part, ContentField::Language).and_then(language),
            location: value(msg, part, ContentField::Location),
            md5: value(msg, part, ContentField::Md5),
        }
    }
}

fn write_params(out: &mut Vec<u8>, params: &Params, default_charset: bool) {
    if params.is_empty() && !default_charset {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    let mut seen_charset = false;
    for (i, (name, value)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        seen_charset |= name.eq_ignore_ascii_case(b"charset");
        string(out, name);
        out.push(b' ');
        string(out, value);
    }
    if default_charset && !seen_charset {
        if !params.is_empty() {
            out.push(b' ');
        }
        out.extend_from_slice(b"\"charset\" \"us-ascii\"");
    }
    out.push(b')');
}

/// Disposition, language, location: the extension fields every part has.
fn write_common_extensions(out: &mut Vec<u8>, data: &PartData<'_>) {
    out.push(b' ');
    match &data.disposition {
        None => out.extend_from_slice(b"NIL"),
        Some((kind, params)) => {
            out.push(b'(');
            string(out, kind);
            out.push(b' ');
            write_params(out, params, false);
            out.push(b')');
        }
    }
    out.push(b' ');
    match &data.language {
        None => out.extend_from_slice(b"NIL"),
        Some(tags) => {
            out.push(b'(');
            for (i, tag) in tags.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                string(out, tag);
            }
            out.push(b')');
        }
    }
    out.push(b' ');
    nstring_nolf(out, data.location.map(without_nuls).as_deref());
}

struct Writer<'a> {
    structure: &'a MessageStructure,
    msg: &'a [u8],
    extended: bool,
    /// The address budget of the embedded messages' envelopes.
    addresses_left: usize,
    out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    /// Writes part `index` without its enclosing parentheses.
    fn part(&mut self, index: usize) {
        let part = self.structure.parts[index];
        if part.kind == PartKind::Multipart {
            self.multipart(index, &part);
        } else {
            self.single(index, &part);
        }
    }

    fn children(&mut self, index: usize) -> bool {
        let mut any = false;
        for child in self.structure.children(index) {
            any = true;
            self.out.push(b'(');
            self.part(child);
            self.out.push(b')');
        }
        any
    }

    fn multipart(&mut self, index: usize, part: &Part) {
        let data = PartData::read(self.msg, part);
        if !self.children(index) {
            self.out.extend_from_slice(if self.extended {
                EMPTY_BODYSTRUCTURE
            } else {
                EMPTY_BODY
            });
        }
        self.out.push(b' ');
        let empty = ContentType::default();
        let ct = data.content_type.as_ref().unwrap_or(&empty);
        string(self.out, &ct.sub);
        if !self.extended {
            return;
        }
        self.out.push(b' ');
        write_params(self.out, &ct.params, false);
        write_common_extensions(self.out, &data);
    }

    fn single(&mut self, index: usize, part: &Part) {
        let data = PartData::read(self.msg, part);
        let empty = ContentType::default();
        let ct = data.content_type.as_ref();
        let text;
        if part.kind == PartKind::Message {
            self.out.extend_from_slice(b"\"message\" \"rfc822\"");
            text = false;
        } else if is_truncated(part, ct) {
            self.out
                .extend_from_slice(b"\"application\" \"octet-stream\"");
            text = false;
        } else if let Some(ct) = ct {
            text = ct.main.eq_ignore_ascii_case(b"text");
            string(self.out, &ct.main);
            self.out.push(b' ');
            string(self.out, &ct.sub);
        } else {
            text = true;
            self.out.extend_from_slice(b"\"text\" \"plain\"");
        }
        self.out.push(b' ');
        write_params(self.out, &ct.unwrap_or(&empty).params, text);
        self.out.push(b' ');
        nstring_nolf(self.out, data.id.map(without_nuls).as_deref());
        self.out.push(b' ');
        nstring_nolf(self.out, data.description.map(without_nuls).as_deref());
        self.out.push(b' ');
        match &data.encoding {
            Some(e) => string(self.out, e),
            None => self.out.extend_from_slice(b"\"7bit\""),
        }
        let _ = write!(self.out, " {}", part.body_octets);
        if text {
            let _ = write!(self.out, " {}", part.body_lines);
        } else if part.kind == PartKind::Message {
            self.out.push(b' ');
            match self.structure.embedded(index) {
                Some(child) => {
                    let header = self.structure.parts[child].header.range();
                    envelope::write(self.msg, header, &mut self.addresses_left, self.out);
                    self.out.push(b' ');
                    self.children(index);
                }
                None => {
                    self.out
                        .extend_from_slice(b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) ");
                    self.out.extend_from_slice(if self.extended {
                        EMPTY_BODYSTRUCTURE
                    } else {
                        EMPTY_BODY
                    });
                }
            }
            let _ = write!(self.out, " {}", part.body_lines);
        }
        if !self.extended {
            return;
        }
        self.out.push(b' ');
        nstring_nolf(self.out, data.md5.map(without_nuls).as_deref());
        write_common_extensions(self.out, &data);
    }
}

/// A part whose Content-Type says multipart or message/rfc822 (or which
/// should have been message/rfc822 in a digest) but was not entered.
fn is_truncated(part: &Part, ct: Option<&ContentType>) -> bool {
    match ct {
        Some(ct) => {
            (ct.main.eq_ignore_ascii_case(b"message") && ct.sub.eq_ignore_ascii_case(b"rfc822"))
                || ct.main.eq_ignore_ascii_case(b"multipart")
        }
        None => part.in_digest(),
    }
}

/// True for a single text/plain part with at most `charset=us-ascii`, 7bit
/// and no other Content-* values. Dovecot writes these from a flag, in
/// lower case, whatever case the message used.
fn is_plain_7bit(part: &Part, data: &PartData<'_>) -> bool {
    if part.kind != PartKind::Text || part.descendants != 0 {
        return false;
    }
    if let Some(ct) = &data.content_type {
        let plain_params = match ct.params.as_slice() {
            [] => true,
            [(name, value)] => {
                name.eq_ignore_ascii_case(b"charset") && value.eq_ignore_ascii_case(b"us-ascii")
            }
            _ => false,
        };
        if !ct.sub.eq_ignore_ascii_case(b"plain") || !plain_params {
            return false;
        }
    }
    data.id.is_none()
        && data.description.is_none()
        && data
            .encoding
            .as_ref()
            .is_none_or(|e| e.eq_ignore_ascii_case(b"7bit"))
        && data.md5.is_none()
        && data.disposition.is_none()
        && data.language.is_none()
        && data.location.is_none()
}

impl MessageStructure {
    /// Appends BODYSTRUCTURE (`extensible`) or BODY (not) of the message,
    /// parenthesised, to `out`.
    pub fn body_structure(&self, msg: &[u8], extensible: bool, out: &mut Vec<u8>) {
        let empty;
        let (msg, structure) = match self.bytes(msg) {
            Some(msg) => (msg, self),
            None => {
                empty = super::Message::parse(b"");
                (&b""[..], &empty)
            }
        };
        let root = structure.root();
        if root.kind == PartKind::Text && is_plain_7bit(root, &PartData::read(msg, root)) {
            let _ = write!(
                out,
                "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" {} {}{})",
                root.body_octets,
                root.body_lines,
                if extensible { " NIL NIL NIL NIL" } else { "" }
            );
            return;
        }
        out.push(b'(');
        let mut writer = Writer {
            structure,
            msg,
            extended: extensible,
            addresses_left: envelope::ENVELOPE_ADDRESSES_MAX,
            out,
        };
        writer.part(0);
        out.push(b')');
    }
}
