//! BODY[section] and BINARY[section].

use std::borrow::Cow;

use super::{crlf, parse, DIGEST, MIXED_ALTERNATIVE, RFC822_ATTACHMENT};
use crate::mime::{MimeError, SectionSpec};

fn section(msg: &[u8], path: &[u32], what: SectionSpec<'_>) -> Option<String> {
    parse(msg)
        .section(msg, path, what)
        .map(|c| String::from_utf8_lossy(&c).into_owned())
}

#[test]
fn every_part_of_a_message_with_an_attached_message() {
    let msg = crlf(RFC822_ATTACHMENT);
    let full = |path: &[u32]| section(&msg, path, SectionSpec::Full);
    let mime = |path: &[u32]| section(&msg, path, SectionSpec::Mime);
    assert_eq!(full(&[]).unwrap().as_bytes(), &msg[..]);
    assert_eq!(full(&[1]).unwrap(), "See the attached message.");
    assert_eq!(mime(&[1]).unwrap(), "Content-Type: text/plain\r\n\r\n");
    assert_eq!(
        mime(&[2]).unwrap(),
        "Content-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n"
    );
    let embedded_header =
        "From: \"Original Sender\" <orig@example.net>\r\nTo: undisclosed-recipients:;\r\n\
                           Subject: the original\r\nDate: 1 Nov 2026 12:00 +0000\r\n\
                           Message-ID: <orig@example.net>\r\nMIME-Version: 1.0\r\n\
                           Content-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n";
    let embedded_text =
        "--alt\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\noriginal text\r\n\
                         --alt\r\nContent-Type: text/html\r\n\r\n<b>original</b>\r\n--alt--\r\n";
    assert_eq!(
        full(&[2]).unwrap(),
        format!("{embedded_header}{embedded_text}")
    );
    assert_eq!(
        section(&msg, &[2], SectionSpec::Header).unwrap(),
        embedded_header
    );
    assert_eq!(
        section(&msg, &[2], SectionSpec::Text).unwrap(),
        embedded_text
    );
    assert_eq!(full(&[2, 1]).unwrap(), "original text");
    assert_eq!(
        mime(&[2, 1]).unwrap(),
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    );
    assert_eq!(full(&[2, 2]).unwrap(), "<b>original</b>");
    assert_eq!(mime(&[2, 2]).unwrap(), "Content-Type: text/html\r\n\r\n");
    // HEADER and TEXT exist only for the message and message/rfc822 parts.
    assert_eq!(section(&msg, &[1], SectionSpec::Header), None);
    assert_eq!(section(&msg, &[2, 1], SectionSpec::Text), None);
    // Parts that do not exist, and MIME of the message itself.
    assert_eq!(full(&[3]), None);
    assert_eq!(full(&[2, 3]), None);
    assert_eq!(mime(&[]), None);
}

#[test]
fn every_part_of_a_nested_multipart() {
    let msg = crlf(MIXED_ALTERNATIVE);
    let full = |path: &[u32]| section(&msg, path, SectionSpec::Full).unwrap();
    assert!(full(&[1]).starts_with("--inner-b\r\nContent-Type: text/plain"));
    assert!(full(&[1]).ends_with("--inner-b--\r\n"));
    assert_eq!(
        full(&[1, 1]),
        "Hello Bob,=0D=0Ahere is the r=C3=A9sum=C3=A9.\r\nRegards"
    );
    assert_eq!(full(&[1, 2]), "<p>Hello Bob, here is the résumé.</p>");
    assert_eq!(full(&[2]), "JVBERi0xLjQKJeLjz9MK");
    assert_eq!(full(&[3]), "iVBORw0KGgo=");
    assert_eq!(
        section(&msg, &[1], SectionSpec::Mime).unwrap(),
        "Content-Type: multipart/alternative;\r\n\tboundary=\"inner-b\"\r\n\r\n"
    );
    let text = section(&msg, &[], SectionSpec::Text).unwrap();
    assert!(text.starts_with("This is a multi-part message in MIME format.\r\n--outer-b\r\n"));
    assert!(text.ends_with("--outer-b--\r\nEpilogue.\r\n"));
}

#[test]
fn digest_parts() {
    let msg = crlf(DIGEST);
    assert_eq!(
        section(&msg, &[1], SectionSpec::Full).unwrap(),
        "From: one@example.org\r\nSubject: first\r\n\r\nfirst body"
    );
    assert_eq!(section(&msg, &[1], SectionSpec::Mime).unwrap(), "\r\n");
    assert_eq!(
        section(&msg, &[1], SectionSpec::Header).unwrap(),
        "From: one@example.org\r\nSubject: first\r\n\r\n"
    );
    assert_eq!(
        section(&msg, &[1], SectionSpec::Text).unwrap(),
        "first body"
    );
    // 1.1 is the embedded message's body: part 1 of a non-multipart.
    assert_eq!(
        section(&msg, &[1, 1], SectionSpec::Full).unwrap(),
        "first body"
    );
    assert_eq!(
        section(&msg, &[2], SectionSpec::Full).unwrap(),
        "not a message"
    );
}

#[test]
fn message_rfc822_twice() {
    let msg = crlf(
        "From: user@domain.org\nMIME-Version: 1.0\nContent-Type: message/rfc822\n\n\
         From: user2@domain.org\nMIME-Version: 1.0\nContent-Type: message/rfc822\n\n\
         From: sub@domain.org\nSubject: submsg\n\nHello world\n",
    );
    let get = |path: &[u32], what| section(&msg, path, what).unwrap();
    let innermost = "From: sub@domain.org\r\nSubject: submsg\r\n\r\nHello world\r\n";
    assert_eq!(get(&[1, 1], SectionSpec::Full), innermost);
    assert_eq!(get(&[1], SectionSpec::Text), innermost);
    assert_eq!(
        get(&[1], SectionSpec::Header),
        "From: user2@domain.org\r\nMIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n"
    );
    assert_eq!(get(&[1, 1, 1], SectionSpec::Full), "Hello world\r\n");
    assert_eq!(
        get(&[1, 1], SectionSpec::Header),
        "From: sub@domain.org\r\nSubject: submsg\r\n\r\n"
    );
    assert_eq!(get(&[1, 1], SectionSpec::Text), "Hello world\r\n");
}

#[test]
fn header_fields_keep_message_order_and_bytes() {
    let msg = crlf(
        "From: User1 <user1@domain.org>\nDate: Sat, 24 Mar 2007 23:00:00 +0200\n\
         Subject: s1\n  continued\nX-Other: y\n\nbody1\n",
    );
    let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let fields = names(&["SUBJECT", "from", "from"]);
    assert_eq!(
        section(&msg, &[], SectionSpec::HeaderFields(&fields)).unwrap(),
        "From: User1 <user1@domain.org>\r\nSubject: s1\r\n  continued\r\n\r\n"
    );
    let fields = names(&["xyz"]);
    assert_eq!(
        section(&msg, &[], SectionSpec::HeaderFields(&fields)).unwrap(),
        "\r\n"
    );
    let fields = names(&["date", "X-OTHER"]);
    assert_eq!(
        section(&msg, &[], SectionSpec::HeaderFieldsNot(&fields)).unwrap(),
        "From: User1 <user1@domain.org>\r\nSubject: s1\r\n  continued\r\n\r\n"
    );
    // Of an attached message.
    let msg = crlf(RFC822_ATTACHMENT);
    let fields = names(&["subject", "message-id", "x-nope"]);
    assert_eq!(
        section(&msg, &[2], SectionSpec::HeaderFields(&fields)).unwrap(),
        "Subject: the original\r\nMessage-ID: <orig@example.net>\r\n\r\n"
    );
    assert_eq!(
        section(&msg, &[1], SectionSpec::HeaderFields(&fields)),
        None
    );
}

#[test]
fn header_fields_of_a_header_without_blank_line() {
    let msg = b"a:b\n";
    let fields = vec!["A".to_string()];
    // Top level always ends with the blank line (as Dovecot sends it);
    // HEADER.FIELDS.NOT only when the message has one.
    assert_eq!(
        section(msg, &[], SectionSpec::HeaderFields(&fields)).unwrap(),
        "a:b\r\n\r\n"
    );
    assert_eq!(
        section(msg, &[], SectionSpec::HeaderFieldsNot(&fields)).unwrap(),
        ""
    );
    assert_eq!(section(msg, &[], SectionSpec::Header).unwrap(), "a:b\r\n");
}

#[test]
fn sections_are_borrowed_for_crlf_messages() {
    let msg = crlf(MIXED_ALTERNATIVE);
    let s = parse(&msg);
    for path in [&[][..], &[1], &[1, 2], &[3]] {
        for what in [
            SectionSpec::Full,
            SectionSpec::Text,
            SectionSpec::Header,
            SectionSpec::Mime,
        ] {
            if let Some(bytes) = s.section(&msg, path, what) {
                assert!(matches!(bytes, Cow::Borrowed(_)), "{path:?} {what:?}");
            }
        }
    }
}

#[test]
fn lf_only_sections_are_converted_to_crlf() {
    let msg = b"Subject: bare\n\nline one\nline two\n";
    let s = parse(msg);
    let full = s.section(msg, &[], SectionSpec::Full).unwrap();
    assert_eq!(&*full, b"Subject: bare\r\n\r\nline one\r\nline two\r\n");
    assert_eq!(full.len() as u64, s.size_octets());
    assert_eq!(
        &*s.section(msg, &[1], SectionSpec::Full).unwrap(),
        b"line one\r\nline two\r\n"
    );
    // A mixed message keeps its CRLFs and gains the missing CRs.
    let mixed = b"Subject: mixed\r\n\r\na\nb\r\n";
    assert_eq!(
        &*parse(mixed).section(mixed, &[], SectionSpec::Text).unwrap(),
        b"a\r\nb\r\n"
    );
}

#[test]
fn nul_bytes_are_sent_as_0x80_except_in_binary() {
    let msg = b"Subject: nul\r\n\r\nbefore\0after\r\n";
    let s = parse(msg);
    assert_eq!(
        &*s.section(msg, &[], SectionSpec::Text).unwrap(),
        b"before\x80after\r\n"
    );
    assert_eq!(s.binary(msg, &[1]).unwrap(), b"before\0after\r\n");
}

#[test]
fn binary_decodes_base64_and_quoted_printable() {
    let msg = crlf(
        "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"\n\n\
         --b\nContent-Type: text/x-myown\nContent-Transfer-Encoding: base64\n\n\n  aGVs  \n bG8gd29y\t\n  bGQ=\n\n\
         --b\nContent-Transfer-Encoding: base64\n\nYWJjZGVmZw1oaWprbA0KbW5vCnBxcnN0dXZxeHl6\n\
         --b\nContent-Transfer-Encoding: quoted-printable\n\n\
         hello  \nbar=\n\nfoo\t=\nbar\nfoo\t \t= \n=62\nfoo = \t\nbar\nfoo =\n=62\nfoo  \nbar=\n\nfoo_bar\n\n\
         --b\nContent-Transfer-Encoding: x-uuencode\n\nbegin 644 x\n\
         --b--\n",
    );
    let s = parse(&msg);
    assert_eq!(s.binary(&msg, &[1]).unwrap(), b"hello world");
    assert_eq!(s.binary_size(&msg, &[1]), Some(11));
    assert_eq!(
        s.binary(&msg, &[2]).unwrap(),
        b"abcdefg\rhijkl\r\nmno\npqrstuvqxyz"
    );
    assert_eq!(s.binary_size(&msg, &[2]), Some(30));
    let qp =
        b"hello\r\nbar\r\nfoo\tbar\r\nfoo\t \tb\r\nfoo bar\r\nfoo b\r\nfoo\r\nbar\r\nfoo_bar\r\n";
    assert_eq!(s.binary(&msg, &[3]).unwrap(), qp);
    assert_eq!(s.binary_size(&msg, &[3]), Some(qp.len() as u64));
    assert_eq!(
        s.try_binary(&msg, &[4]),
        Err(MimeError::UnknownEncoding { path: vec![4] })
    );
    assert_eq!(
        s.try_binary(&msg, &[5]),
        Err(MimeError::NoSuchPart { path: vec![5] })
    );
    assert_eq!(s.binary(&msg, &[5]), None);
}

#[test]
fn binary_of_a_multipart_rewrites_encoded_parts() {
    let msg = crlf(
        "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"\n\n--b\n\
         Content-Type: text/plain\nContent-Transfer-Encoding: base64\nX-Keep: 1\n\naGk=\n\
         --b\nContent-Type: text/plain\n\nplain\n--b--\n",
    );
    let s = parse(&msg);
    let binary = s.binary(&msg, &[]).unwrap();
    assert_eq!(
        String::from_utf8(binary).unwrap(),
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
         Content-Type: text/plain\r\nX-Keep: 1\r\nContent-Transfer-Encoding: binary\r\n\r\nhi\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nplain\r\n--b--\r\n"
    );
    // Nothing to convert: the bytes as stored.
    let plain = crlf(RFC822_ATTACHMENT);
    assert_eq!(parse(&plain).binary(&plain, &[]).unwrap(), plain);
}
