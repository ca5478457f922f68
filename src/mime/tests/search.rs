//! SEARCH helpers, as a mailbox of six messages answered by Dovecot.

use super::crlf;
use crate::mime::{Message, MessageStructure};

const MAILBOX: [&str; 6] = [
    "From: sender@example.org\nTo: rcpt@example.com\nCc: copy@example.com\nBcc: blind@example.com\n\
     Subject: plain ascii\nDate: Sat, 24 Mar 2007 23:00:00 +0200\n\nfirst body\n",
    "From: Real Sender <sender@example.org>\nTo: Real Rcpt <rcpt@example.com>\n\
     Subject: =?utf-8?q?caf=C3=A9_au_lait?=\nDate: Sun, 25 Mar 2007 00:00:00 +0200\n\nsecond\n",
    "From: <sender (comment)@ (comment) example.org>\n\
     To: team: one@example.com, two@example.com;, other: three@example.com;\n\
     Subject: =?ISO-8859-1?B?SvxyZ2Vu?= wrote\n  about\tthings\nDate: 25 Mar 07 01:00 EST\n\nthird\n",
    "From: sender@example.org (Real Sender)\nTo: undisclosed-recipients:;\n\
     X-Extra: hello beautiful header\nX-Extra: another one\nDate: Mon, 26 Mar 2007 00:00:00 +0300\n\
     MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\
     Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n\
     na=EFve r=E9sum=E9 line\n--b\nContent-Type: application/octet-stream\n\
     Content-Transfer-Encoding: base64\n\nc2VjcmV0IGJpbmFyeSB3b3Jk\n--b\n\
     Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n\
     YmFzZTY0IHRleHQgd29yZA==\n--b--\n",
    "From: a@example.org, b@example.org\nSubject: no date here\n\nzxcvbnm\n",
    "Subject: Re: =?utf-8?b?w6TDtsO8?=\n\
     From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <jm@example.de>\nDate: garbage\nMIME-Version: 1.0\n\
     Content-Type: message/rfc822\n\nFrom: inner@example.net\nSubject: inner subject\n\ninner body word\n",
];

/// Sequence numbers (1-based) of the messages matching `matches`.
fn search(matches: impl Fn(&MessageStructure, &[u8]) -> bool) -> Vec<usize> {
    MAILBOX
        .iter()
        .enumerate()
        .filter(|(_, text)| {
            let msg = crlf(text);
            matches(&Message::parse(&msg), &msg)
        })
        .map(|(i, _)| i + 1)
        .collect()
}

#[test]
fn address_searches_match_the_normalised_list() {
    let from = |needle: &str| search(|s, m| s.address_contains(m, "From", needle.as_bytes()));
    let to = |needle: &str| search(|s, m| s.address_contains(m, "To", needle.as_bytes()));
    assert_eq!(from("sender@example.org"), [1, 2, 3, 4]);
    assert_eq!(from("real sender"), [2, 4]);
    assert_eq!(from("REAL"), [2, 4]);
    assert_eq!(from("jürgen müller"), [6]);
    assert_eq!(from("jm@example.de"), [6]);
    assert_eq!(from(""), [1, 2, 3, 4, 5, 6]);
    assert_eq!(to("rcpt"), [1, 2]);
    assert_eq!(to("team"), [3]);
    assert_eq!(to("three@"), [3]);
    assert_eq!(to("undisclosed"), [4]);
    assert_eq!(to(""), [1, 2, 3, 4]);
    assert_eq!(search(|s, m| s.address_contains(m, "Cc", b"copy")), [1]);
    assert_eq!(search(|s, m| s.address_contains(m, "Bcc", b"blind")), [1]);
}

#[test]
fn subject_searches_decode_and_fold() {
    let subject = |needle: &str| search(|s, m| s.subject_contains(m, needle.as_bytes()));
    assert_eq!(subject("café"), [2]);
    assert_eq!(subject("CAFE"), [2]);
    assert_eq!(subject("jürgen wrote about things"), [3]);
    assert_eq!(subject("äöü"), [6]);
    assert_eq!(subject("inner"), Vec::<usize>::new());
    assert_eq!(subject(""), [1, 2, 3, 5, 6]);
}

#[test]
fn header_searches() {
    let header =
        |name: &str, needle: &str| search(|s, m| s.header_contains(m, name, needle.as_bytes()));
    assert_eq!(header("X-Extra", ""), [4]);
    assert_eq!(header("x-extra", "another"), [4]);
    assert_eq!(header("X-Extra", "beautiful head"), [4]);
    assert_eq!(header("Subject", "=?utf"), Vec::<usize>::new());
}

#[test]
fn body_and_text_searches() {
    let body = |needle: &str| search(|s, m| s.body_contains(m, needle.as_bytes()));
    let text = |needle: &str| search(|s, m| s.text_contains(m, needle.as_bytes()));
    assert_eq!(body("first"), [1]);
    assert_eq!(body("naïve résumé"), [4]);
    assert_eq!(body("NAIVE"), Vec::<usize>::new());
    assert_eq!(body("secret"), Vec::<usize>::new());
    assert_eq!(body("base64 text"), [4]);
    assert_eq!(body("inner body"), [6]);
    assert_eq!(body("inner subject"), Vec::<usize>::new());
    assert_eq!(text("inner subject"), [6]);
    assert_eq!(text("X-EXTRA: hello"), [4]);
    assert_eq!(text("secret"), Vec::<usize>::new());
    assert_eq!(text("zxcvbnm"), [5]);
}

#[test]
fn sent_dates() {
    // SENTON day d matches when unix + offset lies in d (RFC 3501 compares
    // the date as written). A missing or broken Date is None, which Dovecot
    // treats as 1970-01-01.
    let day = |y, m, d| crate::time::days_from_civil(y, m, d);
    let sent_on = |d: i64| {
        search(|s, m| {
            s.sent_date(m)
                .is_some_and(|(t, off)| (t + i64::from(off) * 60).div_euclid(86_400) == d)
        })
    };
    assert_eq!(sent_on(day(2007, 3, 24)), [1]);
    assert_eq!(sent_on(day(2007, 3, 25)), [2, 3]);
    assert_eq!(sent_on(day(2007, 3, 26)), [4]);
    assert_eq!(search(|s, m| s.sent_date(m).is_none()), [5, 6]);
}
