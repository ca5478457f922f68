//! BODY and BODYSTRUCTURE, and the part tree behind them.

use super::{body, bodystructure, crlf, parse, DIGEST, MIXED_ALTERNATIVE, RFC822_ATTACHMENT};
use crate::mime::{Limits, Message, PartKind};

#[test]
fn rfc3501_example_body() {
    // RFC 3501 §7.4.2 shows this BODY; a message with those parts gives it.
    let first = "a".repeat(46) + "\r\n";
    let second = "QUJD".repeat(15) + "\r\n";
    let msg = format!(
        "From: mrc@cac.washington.edu\r\nMIME-Version: 1.0\r\n\
         Content-Type: MULTIPART/MIXED; BOUNDARY=\"1\"\r\n\r\n--1\r\n\
         Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\nContent-Transfer-Encoding: 7BIT\r\n\r\n\
         {}{}\r\n--1\r\n\
         Content-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME=cc.diff\r\n\
         Content-ID: <960723163407.20117h@cac.washington.edu>\r\n\
         Content-Description: Compiled diff\r\nContent-Transfer-Encoding: BASE64\r\n\r\n\
         {}{}\r\n--1--\r\n",
        first.repeat(23),
        "b".repeat(48),
        second.repeat(73),
        "c".repeat(28)
    );
    assert_eq!(
        body(msg.as_bytes()),
        "((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 1152 23)\
         (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\" \"NAME\" \"cc.diff\") \
         \"<960723163407.20117h@cac.washington.edu>\" \"Compiled diff\" \"BASE64\" 4554 73) \"MIXED\")"
    );
}

#[test]
fn plain_text_message() {
    let msg = crlf("From: a@example.org\nSubject: hi\n\nbody\n");
    assert_eq!(
        bodystructure(&msg),
        "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 6 1 NIL NIL NIL NIL)"
    );
    assert_eq!(
        body(&msg),
        "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 6 1)"
    );
}

#[test]
fn plain_7bit_root_is_written_in_lower_case() {
    // Dovecot writes a lone text/plain us-ascii 7bit part from a flag.
    let msg = crlf("From: a@example.org\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII\n\nhello\n");
    assert_eq!(
        bodystructure(&msg),
        "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 7 1 NIL NIL NIL NIL)"
    );
    // Any other parameter keeps the message's spelling.
    let msg = crlf("Content-Type: TEXT/PLAIN; CHARSET=US-ASCII; FORMAT=flowed\n\nhello\n");
    assert_eq!(
        bodystructure(&msg),
        "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\" \"FORMAT\" \"flowed\") NIL NIL \"7bit\" 7 1 \
         NIL NIL NIL NIL)"
    );
}

#[test]
fn multipart_alternative_inside_mixed_with_attachments() {
    let msg = crlf(MIXED_ALTERNATIVE);
    assert_eq!(
        bodystructure(&msg),
        "(((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 54 1 NIL NIL NIL NIL)\
         (\"text\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"8bit\" 39 0 NIL NIL NIL NIL) \
         \"alternative\" (\"boundary\" \"inner-b\") NIL NIL NIL)\
         (\"application\" \"pdf\" (\"name\" \"report.pdf\") \"<part3@example.org>\" \"Quarterly report\" \
         \"base64\" 20 NIL (\"attachment\" (\"filename\" \"report.pdf\" \"size\" \"12\")) NIL NIL)\
         (\"image\" \"png\" NIL NIL NIL \"base64\" 12 \"Q2hlY2sgSW50ZWdyaXR5IQ==\" \
         (\"inline\" (\"filename*\" \"utf-8''%E2%82%AC.png\")) (\"en\" \"de\") \
         \"http://example.org/euro.png\") \"mixed\" (\"boundary\" \"outer-b\") NIL NIL NIL)"
    );
    assert_eq!(
        body(&msg),
        "(((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 54 1)\
         (\"text\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"8bit\" 39 0) \"alternative\")\
         (\"application\" \"pdf\" (\"name\" \"report.pdf\") \"<part3@example.org>\" \"Quarterly report\" \
         \"base64\" 20)(\"image\" \"png\" NIL NIL NIL \"base64\" 12) \"mixed\")"
    );
}

#[test]
fn message_rfc822_attachment() {
    let msg = crlf(RFC822_ATTACHMENT);
    assert_eq!(
        bodystructure(&msg),
        "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 25 0 NIL NIL NIL NIL)\
         (\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 361 (\"1 Nov 2026 12:00 +0000\" \"the original\" \
         ((\"Original Sender\" NIL \"orig\" \"example.net\")) ((\"Original Sender\" NIL \"orig\" \"example.net\")) \
         ((\"Original Sender\" NIL \"orig\" \"example.net\")) ((NIL NIL \"undisclosed-recipients\" NIL)\
         (NIL NIL NIL NIL)) NIL NIL NIL \"<orig@example.net>\") \
         ((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 13 0 NIL NIL NIL NIL)\
         (\"text\" \"html\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 15 0 NIL NIL NIL NIL) \
         \"alternative\" (\"boundary\" \"alt\") NIL NIL NIL) 17 NIL (\"attachment\" NIL) NIL NIL) \
         \"mixed\" (\"boundary\" \"frontier\") NIL NIL NIL)"
    );
}

#[test]
fn digest_parts_default_to_message_rfc822() {
    let msg = crlf(DIGEST);
    assert_eq!(
        body(&msg),
        "((\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 51 (NIL \"first\" ((NIL NIL \"one\" \"example.org\")) \
         ((NIL NIL \"one\" \"example.org\")) ((NIL NIL \"one\" \"example.org\")) NIL NIL NIL NIL NIL) \
         (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 10 0) 3)\
         (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 13 0) \"digest\")"
    );
}

#[test]
fn multipart_without_boundary_has_one_empty_part() {
    let msg = crlf(
        "From: a@example.org\nSubject: no boundary\nMIME-Version: 1.0\n\
         Content-Type: multipart/mixed\n\n--whatever\nContent-Type: text/plain\n\ntext\n",
    );
    assert_eq!(
        bodystructure(&msg),
        "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL) \
         \"mixed\" NIL NIL NIL NIL)"
    );
    assert_eq!(parse(&msg).find(&[1]), None);
}

#[test]
fn boundary_that_never_closes_ends_the_last_part_at_the_end() {
    let msg = crlf(
        "From: a@example.org\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"\n\n\
         --b\nContent-Type: text/plain\n\nfirst\n--b\nContent-Type: text/plain\n\n\
         second, never closed\nmore\n",
    );
    assert_eq!(
        body(&msg),
        "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 5 0)\
         (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 28 2) \"mixed\")"
    );
}

#[test]
fn header_without_body() {
    let msg = crlf("From: a@example.org\nSubject: just a header\n");
    assert_eq!(
        body(&msg),
        "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)"
    );
    let s = parse(&msg);
    assert_eq!(s.size_octets(), msg.len() as u64);
    assert_eq!(s.root().header.range(), 0..msg.len());
}

#[test]
fn lf_only_sizes_count_crlf() {
    let msg = b"From: Lf <lf@example.org>\nSubject: bare LF\nMIME-Version: 1.0\n\
                Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: text/plain\n\n\
                line one\nline two\n--x--\n";
    assert_eq!(
        bodystructure(msg),
        "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 18 1 NIL NIL NIL NIL) \
         \"mixed\" (\"boundary\" \"x\") NIL NIL NIL)"
    );
    let s = parse(msg);
    assert!(s.has_bare_lf());
    let lines = msg.iter().filter(|&&c| c == b'\n').count() as u64;
    assert_eq!(s.size_octets(), msg.len() as u64 + lines);
    // The same message with CRLF has the same structure and sizes.
    let crlf_msg = crlf(std::str::from_utf8(msg).unwrap());
    assert_eq!(bodystructure(&crlf_msg), bodystructure(msg));
    assert_eq!(parse(&crlf_msg).size_octets(), s.size_octets());
}

#[test]
fn boundaries_match_as_prefixes_and_close_inner_parts() {
    // "--ab" is the outer boundary "ab", not the inner "a" it starts with;
    // the blank line before it belongs to the boundary, so part 1 has an
    // empty body and its MIME header no blank line.
    let msg = crlf(
        "Content-Type: multipart/mixed; boundary=\"ab\"\n\n--ab\n\
         Content-Type: multipart/mixed; boundary=\"a\"\n\n--ab\nContent-Type: text/plain\n\n--a\n\n",
    );
    let s = parse(&msg);
    assert_eq!(s.parts().len(), 3);
    assert_eq!(s.parts()[1].kind, PartKind::Multipart);
    assert_eq!(s.parts()[1].descendants, 0);
    assert_eq!(
        &*s.section(&msg, &[1], crate::mime::SectionSpec::Mime)
            .unwrap(),
        b"Content-Type: multipart/mixed; boundary=\"a\"\r\n"
    );
    assert_eq!(
        &*s.section(&msg, &[2], crate::mime::SectionSpec::Full)
            .unwrap(),
        b"--a\r\n\r\n"
    );
}

#[test]
fn boundary_in_a_header_ends_it() {
    let msg = crlf(
        "Content-Type: multipart/mixed; boundary=\"a\"\n\n--a\n\
         Content-Type: multipart/mixed; boundary=\"ab\"\nMIME-Version: 1.0\n--ab\n\
         Content-Type: text/plain\n\n--ab--\n--a--\n\n",
    );
    let s = parse(&msg);
    let mime = |path: &[u32]| {
        s.section(&msg, path, crate::mime::SectionSpec::Mime)
            .unwrap()
            .into_owned()
    };
    assert_eq!(
        mime(&[1]),
        b"Content-Type: multipart/mixed; boundary=\"ab\"\r\nMIME-Version: 1.0"
    );
    assert_eq!(mime(&[2]), b"Content-Type: text/plain\r\n");
    // "--ab--" is boundary "a" (not closing), so an empty part 3 follows.
    assert_eq!(s.parts().len(), 4);
    assert_eq!(mime(&[3]), b"");
}

#[test]
fn content_headers_need_mime() {
    // Without MIME-Version or Content-Type, Content-* headers do not count.
    let msg = crlf("Content-Transfer-Encoding: base64\nContent-ID: <x@y>\n\naGVsbG8=\n");
    assert_eq!(
        body(&msg),
        "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 10 1)"
    );
    let msg = crlf(
        "MIME-Version: 1.0\nContent-Transfer-Encoding: base64\nContent-ID: <x@y>\n\naGVsbG8=\n",
    );
    assert_eq!(
        body(&msg),
        "(\"text\" \"plain\" (\"charset\" \"us-ascii\") \"<x@y>\" NIL \"base64\" 10 1)"
    );
}

#[test]
fn broken_content_types() {
    let one = |ct: &str| body(&crlf(&format!("Content-Type: {ct}\n\nx\n")));
    assert_eq!(
        one("text"),
        "(\"text\" \"\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 3 1)"
    );
    assert_eq!(
        one("text/plain garbage"),
        "(\"\" \"\" NIL NIL NIL \"7bit\" 3)"
    );
    assert_eq!(
        one("Text/Plain; charset=\"UTF-8\"; Format=flowed"),
        "(\"Text\" \"Plain\" (\"charset\" \"UTF-8\" \"Format\" \"flowed\") NIL NIL \"7bit\" 3 1)"
    );
    assert_eq!(
        one("application/x; name*=utf-8''%E2%82%AC; a*0=x; a*1=y; b*1=z"),
        "(\"application\" \"x\" (\"a\" \"xy\" \"b*1\" \"z\" \"name*\" \"utf-8''%E2%82%AC\") NIL NIL \"7bit\" 3)"
    );
}

#[test]
fn first_valid_encoding_disposition_and_language_count() {
    let msg = crlf(
        "MIME-Version: 1.0\nContent-Transfer-Encoding: ?invalid\nContent-Transfer-Encoding: BASE64\n\
         Content-Disposition: inline\nContent-Disposition: attachment; filename=a\n\
         Content-Language: ,\nContent-Language: fi\nContent-ID: <first>\nContent-ID: <second>\n\nx\n",
    );
    assert_eq!(
        bodystructure(&msg),
        "(\"text\" \"plain\" (\"charset\" \"us-ascii\") \"<first>\" NIL \"BASE64\" 3 1 NIL \
         (\"attachment\" (\"filename\" \"a\")) (\"fi\") NIL)"
    );
}

#[test]
fn eight_bit_and_escaped_values_become_literals() {
    // Up to four `"`/`\` are escaped in a quoted string, more make a
    // literal, as does any 8-bit byte.
    let msg = crlf(
        "MIME-Version: 1.0\nContent-Description: caf\u{e9}\nContent-ID: \"a\\\"b\"\n\
         Content-Location: \"\\\\\\\\\\\\\\\\\\\\\n\
         Content-Type: text/plain; name=\"x\\\\\\\\\\\\y\"\n\nx\n",
    );
    assert_eq!(
        bodystructure(&msg),
        "(\"text\" \"plain\" (\"name\" \"x\\\\\\\\\\\\y\" \"charset\" \"us-ascii\") \
         \"\\\"a\\\\\\\"b\\\"\" {5}\r\ncaf\u{e9} \"7bit\" 3 1 NIL NIL NIL {11}\r\n\"\\\\\\\\\\\\\\\\\\\\)"
    );
}

#[test]
fn depth_limit_keeps_deep_parts_opaque() {
    let mut msg = String::new();
    for level in 0..5 {
        msg.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{level}\"\n\n--b{level}\n"
        ));
    }
    msg.push_str("Content-Type: text/plain\n\ndeep\n");
    let msg = crlf(&msg);
    let limits = Limits {
        parts_max: 100,
        depth_max: 3,
    };
    let s = Message::parse_with_limits(&msg, limits);
    assert_eq!(s.parts().len(), 3);
    assert_eq!(s.parts()[2].kind, PartKind::Other);
    let mut out = Vec::new();
    s.body_structure(&msg, false, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "(((\"application\" \"octet-stream\" (\"boundary\" \"b2\") NIL NIL \"7bit\" 148) \"mixed\") \"mixed\")"
    );
    // The defaults allow 49 levels below the root.
    assert_eq!(Message::parse(&msg).parts().len(), 6);
}

#[test]
fn parts_limit_stops_recognising_boundaries() {
    let mut msg = String::from("Content-Type: multipart/mixed; boundary=\"b\"\n\n");
    for i in 0..10 {
        msg.push_str(&format!("--b\nContent-Type: text/plain\n\npart {i}\n"));
    }
    msg.push_str("--b--\n");
    let msg = crlf(&msg);
    let limits = Limits {
        parts_max: 4,
        depth_max: 50,
    };
    let s = Message::parse_with_limits(&msg, limits);
    assert_eq!(s.parts().len(), 4);
    assert_eq!(s.children(0).count(), 3);
    // The last part runs to the end of the message.
    let last = s.parts()[3];
    assert_eq!(last.body.range().end, msg.len());
    assert_eq!(Message::parse(&msg).children(0).count(), 10);
}

#[test]
fn structure_is_compact() {
    assert_eq!(std::mem::size_of::<crate::mime::Part>(), 96);
    assert_eq!(std::mem::size_of::<crate::mime::MessageStructure>(), 40);
    let msg = crlf(MIXED_ALTERNATIVE);
    let s = parse(&msg);
    assert_eq!(s.parts().len(), 6);
    assert!(s.heap_bytes() <= std::mem::size_of::<crate::mime::MessageStructure>() + 8 * 96);
}

#[test]
fn find_follows_rfc9051_part_numbers() {
    let msg = crlf(RFC822_ATTACHMENT);
    let s = parse(&msg);
    // 1 = text, 2 = message/rfc822, 2.1/2.2 = the embedded alternative's parts.
    assert_eq!(s.find(&[]), Some(0));
    assert_eq!(s.find(&[1]), Some(1));
    assert_eq!(s.find(&[2]), Some(2));
    assert_eq!(s.find(&[2, 1]), Some(4));
    assert_eq!(s.find(&[2, 2]), Some(5));
    assert_eq!(s.find(&[3]), None);
    // Number 1 of a non-multipart part is the part itself.
    assert_eq!(s.find(&[1, 1]), Some(1));
    assert_eq!(s.find(&[1, 1, 1]), None);
    assert_eq!(s.find(&[0]), None);
    // A non-multipart message has exactly part 1: itself.
    let plain = crlf("Subject: x\n\nbody\n");
    assert_eq!(parse(&plain).find(&[1]), Some(0));
    assert_eq!(parse(&plain).find(&[2]), None);
    assert_eq!(parse(&plain).find(&[1, 1]), None);
}
