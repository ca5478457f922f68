//! The building blocks: header fields, lexer, quoting, decoders, dates.

use crate::mime::decode::{base64, base64_len, header_to_utf8, quoted_printable, to_utf8};
use crate::mime::header::{fields, first_value, unfold};
use crate::mime::lex::ContentType;
use crate::mime::{date, fold, quote};

fn decoded(value: &[u8]) -> String {
    let mut out = String::new();
    header_to_utf8(value, &mut out);
    out
}

#[test]
fn header_fields_and_unfolding() {
    let msg =
        b"Subject:   two\r\n  lines\r\nX-No-Space:v\r\nNo colon here\r\nName :\t \r\n\r\nbody";
    let all: Vec<_> = fields(msg, 0..msg.len()).collect();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].name, b"Subject");
    assert_eq!(all[0].value, b"two\r\n  lines");
    assert_eq!(
        &msg[all[0].line_range.clone()],
        b"Subject:   two\r\n  lines\r\n"
    );
    assert_eq!(all[1].value, b"v");
    assert_eq!(
        (all[2].name, all[2].value),
        (&b""[..], &b"No colon here"[..])
    );
    // A value of white space only keeps all but its first character.
    assert_eq!((all[3].name, all[3].value), (&b"Name"[..], &b" "[..]));
    assert_eq!(
        first_value(msg, 0..msg.len(), "x-no-space"),
        Some(&b"v"[..])
    );
    assert_eq!(&*unfold(b"a\r\n\tb\r\n c"), b"a b c");
}

#[test]
fn content_type_parameters() {
    let ct = ContentType::parse(
        b" Multipart/Mixed (c) ; Boundary = \"a \\\"q\\\" b\" ;x=1",
        true,
    );
    assert_eq!(
        (ct.main.as_slice(), ct.sub.as_slice()),
        (&b"Multipart"[..], &b"Mixed"[..])
    );
    assert_eq!(ct.param("boundary"), Some(&b"a \"q\" b"[..]));
    assert_eq!(ct.param("X"), Some(&b"1"[..]));
    // RFC 2231: continuations merged; a plain piece in an extended value
    // has its % escaped; gaps leave the pieces as they are.
    let ct = ContentType::parse(
        b"a/b; t*0*=us-ascii'en'x%20; t*1=\"y%\"; u*1=1; u*3=3",
        true,
    );
    assert_eq!(
        ct.params,
        vec![
            (b"t*".to_vec(), b"us-ascii'en'x%20y%25".to_vec()),
            (b"u*1".to_vec(), b"1".to_vec()),
            (b"u*3".to_vec(), b"3".to_vec()),
        ]
    );
    // Broken senders' unquoted encoded words.
    let ct = ContentType::parse(b"a/b; name==?utf-8?b?w6k=?=", true);
    assert_eq!(ct.param("name"), Some(&b"=?utf-8?b?w6k=?="[..]));
}

#[test]
fn imap_strings() {
    let q = |s: &[u8]| {
        let mut out = Vec::new();
        quote::string(&mut out, s);
        String::from_utf8_lossy(&out).into_owned()
    };
    assert_eq!(q(b"plain"), "\"plain\"");
    assert_eq!(q(b"a\"b\\c"), "\"a\\\"b\\\\c\"");
    assert_eq!(q(b"\"\"\"\"\""), "{5}\r\n\"\"\"\"\"");
    assert_eq!(q(b"line\r\nend"), "{9}\r\nline\r\nend");
    let h = |s: &[u8]| {
        let mut out = Vec::new();
        quote::string_for_humans(&mut out, s);
        String::from_utf8_lossy(&out).into_owned()
    };
    assert_eq!(h(b"hello world"), "\"hello world\"");
    assert_eq!(h(b"  "), "\"\"");
    assert_eq!(h(b""), "\"\"");
    assert_eq!(h(b" a \t b "), "{3}\r\na b");
    assert_eq!(h(b"say \"hi\""), "{8}\r\nsay \"hi\"");
    let n = |s: &[u8]| {
        let mut out = Vec::new();
        quote::nstring_nolf(&mut out, Some(s));
        String::from_utf8_lossy(&out).into_owned()
    };
    assert_eq!(n(b"<a\r\n b>"), "\"<a b>\"");
    assert_eq!(n(b"a\r\nb"), "\"a b\"");
}

#[test]
fn base64_and_quoted_printable() {
    let mut out = Vec::new();
    base64(b" aGVs\r\nbG8g d29y\tbGQ=\r\ntrailing", &mut out);
    assert_eq!(out, b"hello world");
    assert_eq!(base64_len(b" aGVs\r\nbG8g d29y\tbGQ=\r\n"), 11);
    out.clear();
    quoted_printable(b"caf=C3=A9 =\r\nsoft=3d \r\n=zz=4", &mut out);
    assert_eq!(out, "café soft=\r\n=zz=4".as_bytes());
}

#[test]
fn encoded_words() {
    assert_eq!(decoded(b"=?utf-8?q?caf=C3=A9_au_lait?="), "café au lait");
    assert_eq!(decoded(b"=?ISO-8859-1?B?SvxyZ2Vu?= wrote"), "Jürgen wrote");
    // White space between encoded words goes, around plain text it stays.
    assert_eq!(decoded(b"=?utf-8?q?a?= \t =?utf-8?q?b?= c"), "ab c");
    // Not encoded words: kept.
    assert_eq!(decoded(b"=?utf-8?x?a?= =?broken"), "=?utf-8?x?a?= =?broken");
    assert_eq!(decoded(b"=?utf-8*en?Q?x?="), "x");
    // 8-bit headers: UTF-8, else ISO-8859-1.
    assert_eq!(decoded("café".as_bytes()), "café");
    assert_eq!(decoded(b"caf\xe9"), "café");
}

#[test]
fn charsets() {
    let convert = |charset: &[u8], bytes: &[u8]| {
        let mut out = String::new();
        to_utf8(charset, bytes, &mut out);
        out
    };
    assert_eq!(convert(b"ISO-8859-1", b"na\xefve"), "naïve");
    assert_eq!(convert(b"windows-1252", b"\x80 \x93q\x94"), "€ “q”");
    assert_eq!(convert(b"iso-8859-15", b"\xa4"), "€");
    assert_eq!(convert(b"x-unknown", b"ascii \xff"), "ascii \u{fffd}");
}

#[test]
fn folding_is_case_and_accent_decomposing() {
    let f = |s: &str| {
        let mut out = Vec::new();
        fold::fold(s, &mut out);
        String::from_utf8(out).unwrap()
    };
    assert_eq!(f("HeLLo"), "hello");
    assert_eq!(f("CAFÉ"), "cafe\u{301}");
    assert_eq!(f("Ǖ"), "u\u{308}\u{304}");
    assert_eq!(f("ΣΑΣ"), "σασ");
}

#[test]
fn dates() {
    let day = crate::time::days_from_civil;
    let at = |y, m, d, secs: i64| day(y, m, d) * 86_400 + secs;
    assert_eq!(
        date::parse(b"Sat, 24 Mar 2007 23:00:00 +0200"),
        Some((at(2007, 3, 24, 21 * 3600), 120))
    );
    assert_eq!(
        date::parse(b"25 Mar 07 01:00 EST"),
        Some((at(2007, 3, 25, 6 * 3600), -300))
    );
    assert_eq!(
        date::parse(b" Mon, 1 Jan 2024 1.02.03 -0000 (UTC)"),
        Some((at(2024, 1, 1, 3723), 0))
    );
    assert_eq!(
        date::parse(b"1 jan 99 00:00 PDT"),
        Some((at(1999, 1, 1, 7 * 3600), -420))
    );
    assert_eq!(
        date::parse(b"1 Jan 2000 00:00 Z"),
        Some((at(2000, 1, 1, 0), 0))
    );
    assert_eq!(
        date::parse(b"1 Jan 2000 00:00 B"),
        Some((at(2000, 1, 1, -7200), 120))
    );
    assert_eq!(
        date::parse(b"1 Jan 2000 00:00 XYZ"),
        Some((at(2000, 1, 1, 0), 0))
    );
    assert_eq!(
        date::parse(b"31 Feb 2001 12:00:00 +0000"),
        Some((at(2001, 3, 3, 43_200), 0))
    );
    assert_eq!(date::parse(b"garbage"), None);
    assert_eq!(date::parse(b"Sat 24 Mar 2007 23:00:00 +0200"), None);
    assert_eq!(date::parse(b"24 Mar 1807 23:00 +0000"), None);
    assert_eq!(date::parse(b""), None);
}
