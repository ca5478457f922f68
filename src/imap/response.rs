//! Writers for IMAP response syntax into one `Vec<u8>` per reply: strings
//! (atom, quoted or literal, whichever is valid and shortest), NIL, mailbox
//! names (modified UTF-7 unless UTF-8 is enabled), flags, dates, sections and
//! status lines. Nothing here can emit a CR or LF outside a literal, so peer
//! data cannot forge a response line.

use std::io::Write;

use super::command::{Flag, Section, SectionText};
use super::utf7;
use crate::time::{civil_from_days, MONTHS};

/// Strings longer than this are sent as literals even when they could be quoted.
pub const QUOTED_BYTES_MAX: usize = 1024;

/// The status of a status response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
    PreAuth,
    Bye,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::No => "NO",
            Status::Bad => "BAD",
            Status::PreAuth => "PREAUTH",
            Status::Bye => "BYE",
        }
    }
}

fn is_astring_char(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\')
}

/// Writes `text` with CR, LF and NUL replaced by spaces.
fn text_line(out: &mut Vec<u8>, text: &[u8]) {
    out.extend(text.iter().map(|&b| {
        if matches!(b, b'\r' | b'\n' | 0) {
            b' '
        } else {
            b
        }
    }));
}

/// `"..."` with `"` and `\` escaped. The caller has checked that `s` may be quoted.
fn quoted(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &b in s {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// `{n}` CRLF and the bytes.
pub fn literal(out: &mut Vec<u8>, s: &[u8]) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{{{}}}\r\n", s.len());
    out.extend_from_slice(s);
}

/// True when `s` can travel in a quoted string: short, no CR/LF/NUL, and
/// 8-bit only as valid UTF-8 for a client that enabled it (rev2 / UTF8=ACCEPT).
fn quotable(s: &[u8], utf8: bool) -> bool {
    s.len() <= QUOTED_BYTES_MAX
        && if s.is_ascii() {
            !s.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0))
        } else {
            utf8 && std::str::from_utf8(s).is_ok() && !s.iter().any(|&b| b < 0x20)
        }
}

/// A `string`: quoted when possible, else a literal.
pub fn string(out: &mut Vec<u8>, s: &[u8], utf8: bool) {
    if quotable(s, utf8) {
        quoted(out, s);
    } else {
        literal(out, s);
    }
}

/// An `astring`: a bare atom when safe, else as [`string`]. `NIL` is quoted
/// so that no client mistakes it for the NIL of an nstring.
pub fn astring(out: &mut Vec<u8>, s: &[u8], utf8: bool) {
    if !s.is_empty() && s.iter().all(|&b| is_astring_char(b)) && !s.eq_ignore_ascii_case(b"NIL") {
        out.extend_from_slice(s);
    } else {
        string(out, s, utf8);
    }
}

/// An `nstring`: `NIL` for `None`, else a string.
pub fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>, utf8: bool) {
    match s {
        None => out.extend_from_slice(b"NIL"),
        Some(s) => string(out, s, utf8),
    }
}

/// A mailbox name: modified UTF-7 for a client that has not enabled UTF-8.
pub fn mailbox_name(out: &mut Vec<u8>, name: &str, utf8: bool) {
    if utf8 {
        astring(out, name.as_bytes(), true);
    } else {
        astring(out, utf7::encode(name).as_bytes(), false);
    }
}

pub fn flag(out: &mut Vec<u8>, flag: &Flag) {
    out.extend_from_slice(flag.as_str().as_bytes());
}

/// `(\Seen $Forwarded)`.
pub fn flag_list(out: &mut Vec<u8>, flags: &[Flag]) {
    out.push(b'(');
    for (i, f) in flags.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        flag(out, f);
    }
    out.push(b')');
}

/// `"dd-Mon-yyyy hh:mm:ss +zzzz"` for INTERNALDATE, in the zone `offset_minutes`
/// east of UTC. Instants outside years 0..=9999 are clamped to that range.
pub fn date_time(out: &mut Vec<u8>, unix: i64, offset_minutes: i16) {
    const FIRST: i64 = -62_167_219_200; // 0000-01-01T00:00:00Z
    const LAST: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let local = unix
        .saturating_add(i64::from(offset_minutes) * 60)
        .clamp(FIRST, LAST);
    let (year, month, day) = civil_from_days(local.div_euclid(86_400));
    let secs = local.rem_euclid(86_400);
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let zone = offset_minutes.unsigned_abs();
    let _ = write!(
        out,
        "\"{:02}-{}-{:04} {:02}:{:02}:{:02} {}{:02}{:02}\"",
        day,
        MONTHS[(month as usize).clamp(1, 12) - 1],
        year,
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        sign,
        zone / 60 % 100,
        zone % 60
    );
}

/// A section part path: `1.2.3` (nothing for the whole message).
pub fn part(out: &mut Vec<u8>, part: &[u32]) {
    for (i, n) in part.iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        let _ = write!(out, "{n}");
    }
}

/// `[1.2.HEADER.FIELDS (From To)]`, as a FETCH response names the section.
pub fn section(out: &mut Vec<u8>, section: &Section) {
    out.push(b'[');
    part(out, &section.part);
    if let Some(text) = &section.text {
        if !section.part.is_empty() {
            out.push(b'.');
        }
        let (name, fields) = match text {
            SectionText::Header => ("HEADER", None),
            SectionText::Text => ("TEXT", None),
            SectionText::Mime => ("MIME", None),
            SectionText::HeaderFields(f) => ("HEADER.FIELDS", Some(f)),
            SectionText::HeaderFieldsNot(f) => ("HEADER.FIELDS.NOT", Some(f)),
        };
        out.extend_from_slice(name.as_bytes());
        if let Some(fields) = fields {
            out.extend_from_slice(b" (");
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                astring(out, f.as_bytes(), false);
            }
            out.push(b')');
        }
    }
    out.push(b']');
}

fn status_rest(out: &mut Vec<u8>, status: Status, code: Option<&str>, text: &str) {
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    if let Some(code) = code {
        out.push(b'[');
        text_line(out, code.as_bytes());
        out.extend_from_slice(b"] ");
    }
    text_line(out, text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `TAG OK [CODE] text` CRLF. `code` is the text between the brackets, e.g.
/// `"APPENDUID 38505 3955"`.
pub fn tagged(out: &mut Vec<u8>, tag: &str, status: Status, code: Option<&str>, text: &str) {
    text_line(out, tag.as_bytes());
    out.push(b' ');
    status_rest(out, status, code, text);
}

/// `* OK [CODE] text` CRLF.
pub fn untagged(out: &mut Vec<u8>, status: Status, code: Option<&str>, text: &str) {
    out.extend_from_slice(b"* ");
    status_rest(out, status, code, text);
}

/// `+ text` CRLF (a command continuation request).
pub fn continuation(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"+ ");
    text_line(out, text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::super::command::parse;
    use super::*;

    fn w(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn astring_picks_atom_quoted_or_literal() {
        assert_eq!(w(|o| astring(o, b"INBOX", false)), "INBOX");
        assert_eq!(w(|o| astring(o, b"a]b", false)), "a]b");
        assert_eq!(w(|o| astring(o, b"", false)), "\"\"");
        assert_eq!(w(|o| astring(o, b"two words", false)), "\"two words\"");
        assert_eq!(w(|o| astring(o, b"a\"b\\c", false)), "\"a\\\"b\\\\c\"");
        assert_eq!(w(|o| astring(o, b"50%", false)), "\"50%\"");
        assert_eq!(w(|o| astring(o, b"nil", false)), "\"nil\"");
        assert_eq!(w(|o| astring(o, b"a\r\nb", false)), "{4}\r\na\r\nb");
        assert_eq!(
            w(|o| astring(o, "caf\u{e9}".as_bytes(), false)),
            "{5}\r\ncaf\u{e9}"
        );
        assert_eq!(
            w(|o| astring(o, "caf\u{e9}".as_bytes(), true)),
            "\"caf\u{e9}\""
        );
        let long = vec![b'a'; QUOTED_BYTES_MAX + 1];
        assert!(w(|o| string(o, &long, false)).starts_with("{1025}\r\naaa"));
        assert_eq!(w(|o| astring(o, &long, false)).len(), QUOTED_BYTES_MAX + 1);
        let long_quoted = vec![b' '; QUOTED_BYTES_MAX];
        assert!(w(|o| string(o, &long_quoted, false)).starts_with("\" "));
        // Invalid UTF-8 is never quoted, even when UTF-8 is enabled.
        let mut out = Vec::new();
        string(&mut out, b"\xff", true);
        assert_eq!(out, b"{1}\r\n\xff");
    }

    #[test]
    fn written_strings_parse_back() {
        for s in [&b"INBOX"[..], b"", b"a b", b"q\"uo\\te", b"x\r\ny", b"]"] {
            let mut line = b"t LOGIN ".to_vec();
            astring(&mut line, s, false);
            line.extend_from_slice(b" p\r\n");
            let cmd = parse(&line).unwrap();
            match cmd.body {
                super::super::command::CommandBody::Login { username, .. } => {
                    assert_eq!(username, s)
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn nstring_nil() {
        assert_eq!(w(|o| nstring(o, None, false)), "NIL");
        assert_eq!(w(|o| nstring(o, Some(b"NIL"), false)), "\"NIL\"");
        assert_eq!(w(|o| nstring(o, Some(b""), false)), "\"\"");
    }

    #[test]
    fn mailbox_names() {
        let name = "~peter/mail/\u{53f0}\u{5317}/\u{65e5}\u{672c}\u{8a9e}";
        assert_eq!(
            w(|o| mailbox_name(o, name, false)),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(w(|o| mailbox_name(o, name, true)), format!("\"{name}\""));
        assert_eq!(
            w(|o| mailbox_name(o, "Sent Items", false)),
            "\"Sent Items\""
        );
        assert_eq!(w(|o| mailbox_name(o, "A&B", false)), "A&-B");
    }

    #[test]
    fn flags() {
        let flags = [
            Flag::Seen,
            Flag::Answered,
            Flag::Keyword("$Forwarded".into()),
            Flag::Extension("\\Foo".into()),
        ];
        assert_eq!(
            w(|o| flag_list(o, &flags)),
            "(\\Seen \\Answered $Forwarded \\Foo)"
        );
        assert_eq!(w(|o| flag_list(o, &[])), "()");
    }

    #[test]
    fn date_times() {
        // RFC 3501 example INTERNALDATE "17-Jul-1996 02:44:25 -0700".
        assert_eq!(
            w(|o| date_time(o, 837_596_665, -420)),
            "\"17-Jul-1996 02:44:25 -0700\""
        );
        assert_eq!(w(|o| date_time(o, 0, 0)), "\"01-Jan-1970 00:00:00 +0000\"");
        assert_eq!(
            w(|o| date_time(o, 951_782_400, 330)),
            "\"29-Feb-2000 05:30:00 +0530\""
        );
        assert_eq!(
            w(|o| date_time(o, i64::MAX, 0)),
            "\"31-Dec-9999 23:59:59 +0000\""
        );
        // What the writer produces, the parser reads back to the same instant.
        for (unix, offset) in [(837_596_665, -420), (1_700_000_000, 60), (86_399, -1)] {
            let mut line = b"t APPEND x ".to_vec();
            date_time(&mut line, unix, offset);
            line.extend_from_slice(b" {1+}\r\nm\r\n");
            match parse(&line).unwrap().body {
                super::super::command::CommandBody::Append { messages, .. } => {
                    let date = messages[0].date.unwrap();
                    assert_eq!((date.unix, date.offset_minutes), (unix, offset));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn sections() {
        let cmd = parse(b"t FETCH 1 BODY[1.2.HEADER.FIELDS (From \"X Y\")]<0.100>\r\n").unwrap();
        let super::super::command::CommandBody::Fetch { items, .. } = cmd.body else {
            panic!()
        };
        let super::super::command::FetchItem::BodySection { section: s, .. } = &items[0] else {
            panic!()
        };
        assert_eq!(w(|o| section(o, s)), "[1.2.HEADER.FIELDS (From \"X Y\")]");
        assert_eq!(w(|o| section(o, &Section::default())), "[]");
        let mime = Section {
            part: vec![3],
            text: Some(SectionText::Mime),
        };
        assert_eq!(w(|o| section(o, &mime)), "[3.MIME]");
        let text = Section {
            part: vec![],
            text: Some(SectionText::Text),
        };
        assert_eq!(w(|o| section(o, &text)), "[TEXT]");
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            w(|o| tagged(o, "A1", Status::Ok, Some("READ-WRITE"), "SELECT completed")),
            "A1 OK [READ-WRITE] SELECT completed\r\n"
        );
        assert_eq!(
            w(|o| untagged(o, Status::Bye, None, "Logging out")),
            "* BYE Logging out\r\n"
        );
        assert_eq!(
            w(|o| tagged(o, "a", Status::No, Some("TOOBIG"), "evil\r\n* OK injected")),
            "a NO [TOOBIG] evil  * OK injected\r\n"
        );
        assert_eq!(
            w(|o| continuation(o, "Ready for literal data")),
            "+ Ready for literal data\r\n"
        );
        assert_eq!(w(|o| literal(o, b"")), "{0}\r\n");
    }
}
