//! ENVELOPE.

use super::{bodystructure, crlf, envelope, MIXED_ALTERNATIVE};

#[test]
fn all_fields() {
    let msg = crlf(
        "Message-ID: <msg@id>\nIn-Reply-To: <reply@to.id>\nDate: Thu, 15 Feb 2007 01:02:03 +0200\n\
         Subject: subject header\nFrom: From Real <fromuser@fromdomain.org>\n\
         To: To Real <touser@todomain.org>\nCc: Cc Real <ccuser@ccdomain.org>\n\
         Bcc: Bcc Real <bccuser@bccdomain.org>\nSender: Sender Real <senderuser@senderdomain.org>\n\
         Reply-To: ReplyTo Real <replytouser@replytodomain.org>\n\nbody\n",
    );
    assert_eq!(
        envelope(&msg),
        "(\"Thu, 15 Feb 2007 01:02:03 +0200\" \"subject header\" \
         ((\"From Real\" NIL \"fromuser\" \"fromdomain.org\")) \
         ((\"Sender Real\" NIL \"senderuser\" \"senderdomain.org\")) \
         ((\"ReplyTo Real\" NIL \"replytouser\" \"replytodomain.org\")) \
         ((\"To Real\" NIL \"touser\" \"todomain.org\")) ((\"Cc Real\" NIL \"ccuser\" \"ccdomain.org\")) \
         ((\"Bcc Real\" NIL \"bccuser\" \"bccdomain.org\")) \"<reply@to.id>\" \"<msg@id>\")"
    );
}

#[test]
fn sender_and_reply_to_default_to_from() {
    let msg = crlf("Date: Thu, 15 Feb 2007 01:02:03 +0200\nFrom: user@domain (Real Name)\nSender: \nReply-To: \n\nbody\n");
    assert_eq!(
        envelope(&msg),
        "(\"Thu, 15 Feb 2007 01:02:03 +0200\" NIL ((\"Real Name\" NIL \"user\" \"domain\")) \
         ((\"Real Name\" NIL \"user\" \"domain\")) ((\"Real Name\" NIL \"user\" \"domain\")) NIL NIL NIL NIL NIL)"
    );
}

#[test]
fn groups_are_marked() {
    let msg = crlf(
        "From: a@b\nTo: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;\nCc: group:;, group2: (foo) ;\n\nx\n",
    );
    assert_eq!(
        envelope(&msg),
        "(NIL NIL ((NIL NIL \"a\" \"b\")) ((NIL NIL \"a\" \"b\")) ((NIL NIL \"a\" \"b\")) \
         ((NIL NIL \"group\" NIL)(NIL NIL \"g1\" \"d1.org\")(NIL NIL \"g2\" \"d2.org\")(NIL NIL NIL NIL)\
         (NIL NIL \"group2\" NIL)(NIL NIL \"g3\" \"d3.org\")(NIL NIL NIL NIL)) \
         ((NIL NIL \"group\" NIL)(NIL NIL NIL NIL)(NIL NIL \"group2\" NIL)(NIL NIL NIL NIL)) NIL NIL NIL)"
    );
}

#[test]
fn routes_quoted_local_parts_comments_and_broken_addresses() {
    let msg = crlf(
        "From: =?ISO-8859-1?Q?Andr=E9?= Pirard <PIRARD@vm1.ulg.ac.be>\n\
         Sender: \"Joe Q. Public\" <john.q.public@example.com>\n\
         To: \"quoted local\"@example.com, \"a\\\"b\"@example.com, Mary Smith <@node.test:mary@example.net>\n\
         Cc: A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;, Undisclosed recipients:;\n\
         Bcc: (empty comment) user@example.com (Real Name)\n\
         Reply-To: broken <no-at-sign>, just-local, <>\n\
         Subject: caf\u{e9} 8-bit \"quoted\"\n\
         Date: Thu, 13 Feb 1969 23:32:54 -0330\n\
         Message-ID:\n <multi@line>\n\nbody\n",
    );
    assert_eq!(
        envelope(&msg),
        "(\"Thu, 13 Feb 1969 23:32:54 -0330\" {20}\r\ncaf\u{e9} 8-bit \"quoted\" \
         ((\"=?ISO-8859-1?Q?Andr=E9?= Pirard\" NIL \"PIRARD\" \"vm1.ulg.ac.be\")) \
         ((\"Joe Q. Public\" NIL \"john.q.public\" \"example.com\")) \
         ((\"broken\" NIL \"no-at-sign\" \"MISSING_DOMAIN\")(NIL NIL \"just-local\" \"MISSING_DOMAIN\")\
         (NIL NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")) \
         ((NIL NIL \"quoted local\" \"example.com\")(NIL NIL \"a\\\"b\" \"example.com\")\
         (\"Mary Smith\" \"@node.test\" \"mary\" \"example.net\")) \
         ((NIL NIL \"A Group\" NIL)(\"Ed Jones\" NIL \"c\" \"a.test\")(NIL NIL \"joe\" \"where.test\")\
         (\"John\" NIL \"jdoe\" \"one.test\")(NIL NIL NIL NIL)(NIL NIL \"Undisclosed recipients\" NIL)\
         (NIL NIL NIL NIL)) ((\"Real Name\" NIL \"user\" \"example.com\")) NIL \" <multi@line>\")"
    );
}

#[test]
fn encoded_words_are_sent_raw() {
    let msg = crlf(MIXED_ALTERNATIVE);
    assert_eq!(
        envelope(&msg),
        "(\"Tue, 3 Nov 2026 10:15:00 +0100\" \
         \"=?UTF-8?Q?Quarterly_r=C3=A9sum=C3=A9?= and =?UTF-8?B?w6TDtsO8?=\" \
         ((\"Alice Example\" NIL \"alice\" \"example.org\")) ((\"Alice Example\" NIL \"alice\" \"example.org\")) \
         ((\"Alice Example\" NIL \"alice\" \"example.org\")) ((\"Bob\" NIL \"bob\" \"example.com\")\
         (\"Carol, C.\" NIL \"carol\" \"example.com\")) ((NIL NIL \"team\" NIL)(NIL NIL \"dave\" \"example.net\")\
         (\"Eve\" NIL \"eve\" \"example.net\")(NIL NIL NIL NIL)) NIL \"<prev@example.com>\" \
         \"<20261103101500.1@example.org>\")"
    );
}

#[test]
fn subject_white_space_and_repeated_fields() {
    // Folding and runs of white space collapse; leading and trailing white
    // space make a literal; the last Subject wins; From fields are joined.
    let msg =
        crlf("Subject: first\nSubject:   multi\n line\n\tfold  \nFrom: a@b\nFrom: c@d\n\nx\n");
    assert_eq!(
        envelope(&msg),
        "(NIL {15}\r\nmulti line fold ((NIL NIL \"a\" \"b\")(NIL NIL \"c\" \"d\")) \
         ((NIL NIL \"a\" \"b\")(NIL NIL \"c\" \"d\")) ((NIL NIL \"a\" \"b\")(NIL NIL \"c\" \"d\")) \
         NIL NIL NIL NIL NIL)"
    );
    let msg = crlf("Subject:\nX: y\n\nx\n");
    assert_eq!(envelope(&msg), "(NIL \"\" NIL NIL NIL NIL NIL NIL NIL NIL)");
}

#[test]
fn header_only_and_empty_messages() {
    assert_eq!(envelope(b""), "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
    assert_eq!(
        bodystructure(b""),
        "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL)"
    );
    assert_eq!(
        envelope(b"Subject: x"),
        "(NIL \"x\" NIL NIL NIL NIL NIL NIL NIL NIL)"
    );
}

#[test]
fn broken_address_lists_cannot_blow_up_the_reply() {
    // `To: ,,,` makes a MISSING_MAILBOX@MISSING_DOMAIN entry (44 bytes) per
    // comma: repeated fields and embedded messages share one budget.
    let entry = "(NIL NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")";
    let field = format!("To: {}\r\n", ",".repeat(999));
    let one = format!("{field}\r\nbody\r\n");
    assert_eq!(envelope(one.as_bytes()).matches(entry).count(), 999);
    let header = field.repeat(100);
    let flat = format!("{header}\r\nbody\r\n");
    let count = envelope(flat.as_bytes()).matches(entry).count();
    assert_eq!(count, crate::mime::envelope::ENVELOPE_ADDRESSES_MAX);
    let mut nested = String::from("Content-Type: multipart/mixed; boundary=b\r\n\r\n");
    for _ in 0..50 {
        nested.push_str("--b\r\nContent-Type: message/rfc822\r\n\r\n");
        nested.push_str(&field.repeat(2));
        nested.push_str("\r\nbody\r\n");
    }
    nested.push_str("--b--\r\n");
    let count = bodystructure(nested.as_bytes()).matches(entry).count();
    assert_eq!(count, crate::mime::envelope::ENVELOPE_ADDRESSES_MAX);
}
