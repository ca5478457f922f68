//! Robustness: deterministic random and truncated input never panics and
//! always gives a consistent structure.

use super::{crlf, DIGEST, MIXED_ALTERNATIVE, RFC822_ATTACHMENT};
use crate::mime::{Limits, Message, MessageStructure, PartKind, SectionSpec};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn lf_count(bytes: &[u8]) -> u32 {
    bytes.iter().filter(|&&c| c == b'\n').count() as u32
}

fn bare_lf_count(msg: &[u8], range: std::ops::Range<usize>) -> u32 {
    range
        .filter(|&i| msg[i] == b'\n' && (i == 0 || msg[i - 1] != b'\r'))
        .count() as u32
}

/// IMAP part paths of every part below `index`.
fn paths(s: &MessageStructure, index: usize, prefix: &[u32], out: &mut Vec<Vec<u32>>) {
    match s.parts()[index].kind {
        PartKind::Multipart => {
            for (n, child) in s.children(index).enumerate() {
                let mut path = prefix.to_vec();
                path.push(n as u32 + 1);
                out.push(path.clone());
                paths(s, child, &path, out);
            }
        }
        PartKind::Message => {
            if let Some(child) = s.children(index).next() {
                if s.parts()[child].kind == PartKind::Multipart {
                    paths(s, child, prefix, out);
                } else {
                    let mut path = prefix.to_vec();
                    path.push(1);
                    out.push(path.clone());
                    paths(s, child, &path, out);
                }
            }
        }
        _ => {}
    }
}

/// Checks the invariants of a parse and exercises every renderer.
fn check(msg: &[u8], limits: Limits) {
    let s = Message::parse_with_limits(msg, limits);
    let parts = s.parts();
    assert!(!parts.is_empty() && parts.len() <= limits.parts_max as usize);
    assert_eq!(parts[0].header.range().start, 0);
    assert_eq!(parts[0].descendants as usize, parts.len() - 1);
    for (i, p) in parts.iter().enumerate() {
        let (h, b) = (p.header.range(), p.body.range());
        assert!(h.start <= h.end && h.end == b.start && b.start <= b.end && b.end <= msg.len());
        assert_eq!(p.body_lines, lf_count(&msg[b.clone()]), "part {i}");
        assert_eq!(
            p.body_octets as usize,
            b.len() + bare_lf_count(msg, b.clone()) as usize,
            "part {i}"
        );
        let mut inner = 0;
        for child in s.children(i) {
            let c = &parts[child];
            assert!(c.header.range().start >= b.start && c.body.range().end <= b.end);
            inner += 1 + c.descendants;
        }
        assert_eq!(inner, p.descendants, "part {i}");
        if p.kind == PartKind::Message {
            assert_eq!(s.children(i).count(), 1);
        }
    }
    assert_eq!(
        s.size_octets(),
        (msg.len() + bare_lf_count(msg, 0..msg.len()) as usize) as u64
    );
    let mut out = Vec::new();
    s.body_structure(msg, true, &mut out);
    s.body_structure(msg, false, &mut out);
    s.envelope(msg, &mut out);
    let mut all = vec![vec![]];
    if parts[0].kind == PartKind::Multipart {
        paths(&s, 0, &[], &mut all);
    } else {
        // A non-multipart message is its own part 1.
        all.push(vec![1]);
        paths(&s, 0, &[1], &mut all);
    }
    let names = vec!["From".to_string(), "content-type".to_string()];
    for path in &all {
        assert!(
            s.find(path).is_some(),
            "{path:?} in {:?}",
            String::from_utf8_lossy(msg)
        );
        for what in [
            SectionSpec::Full,
            SectionSpec::Header,
            SectionSpec::Text,
            SectionSpec::Mime,
            SectionSpec::HeaderFields(&names),
            SectionSpec::HeaderFieldsNot(&names),
        ] {
            let _ = s.section(msg, path, what);
        }
        if let Ok(binary) = s.try_binary(msg, path) {
            assert_eq!(s.binary_size(msg, path), Some(binary.len() as u64));
        }
    }
    assert!(s.text_contains(msg, b"") && s.body_contains(msg, b""));
    let _ = s.text_contains(msg, b"zz\xc3\xa9");
    let _ = s.address_contains(msg, "To", b"@");
    let _ = s.subject_contains(msg, b"a b");
    let _ = s.sent_date(msg);
}

const PIECES: [&str; 30] = [
    "--b\r\n",
    "--b--\r\n",
    "--bb\n",
    "--b",
    "\r\n",
    "\n",
    "\r\n\r\n",
    "Content-Type: multipart/mixed; boundary=b\r\n",
    "Content-Type: multipart/digest; boundary=\"bb\"\r\n",
    "Content-Type: message/rfc822\r\n",
    "Content-Type: text/plain; charset=iso-8859-1\r\n",
    "Content-Type: text\r\n",
    "Content-Transfer-Encoding: base64\r\n",
    "Content-Transfer-Encoding: quoted-printable\r\n",
    "MIME-Version: 1.0\r\n",
    "Content-Disposition: attachment; filename*0*=utf-8''%E2; filename*1=x\r\n",
    "From: \"a\\\"b\" <c@d>, group: e@f;, (x) g@h (Name)\r\n",
    "To: <@r:u@[1.2.3.4]>, broken <, ;\r\n",
    "Subject: =?utf-8?q?=C3=A9?= =?utf-8?b?w6k=?=\r\n",
    "Date: Sun, 25 Mar 2007 01:00:00 +0200\r\n",
    " folded continuation\r\n",
    "\tfolded\r\n",
    "aGVsbG8gd29ybGQ=\r\n",
    "=3D=\r\n",
    "body text\r\n",
    "(",
    "\"",
    "\0",
    "\u{e9}",
    ":",
];

#[test]
fn random_messages_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let limits = Limits {
        parts_max: 40,
        depth_max: 6,
    };
    for _ in 0..3_000 {
        let mut msg = Vec::new();
        for _ in 0..rng.below(60) {
            if rng.below(8) == 0 {
                msg.push(rng.next() as u8);
            } else {
                msg.extend_from_slice(PIECES[rng.below(PIECES.len())].as_bytes());
            }
        }
        check(&msg, limits);
        check(&msg, Limits::default());
    }
}

#[test]
fn every_prefix_of_real_messages_parses() {
    for text in [MIXED_ALTERNATIVE, RFC822_ATTACHMENT, DIGEST] {
        let msg = crlf(text);
        for end in 0..=msg.len() {
            check(&msg[..end], Limits::default());
        }
        // And with bare LFs.
        let lf = text.as_bytes();
        for end in (0..=lf.len()).step_by(7) {
            check(&lf[..end], Limits::default());
        }
    }
}

#[test]
fn deep_nesting_is_bounded() {
    let mut msg = String::new();
    for _ in 0..10_000 {
        msg.push_str("Content-Type: message/rfc822\r\n\r\n");
    }
    let s = Message::parse(msg.as_bytes());
    assert_eq!(s.parts().len(), 50);
    check(msg.as_bytes(), Limits::default());
    let mut msg = String::new();
    for i in 0..5_000 {
        msg.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"{i}\"\r\n\r\n--{i}\r\n"
        ));
    }
    check(msg.as_bytes(), Limits::default());
}

#[test]
fn a_shorter_message_than_parsed_is_treated_as_empty() {
    let msg = crlf(MIXED_ALTERNATIVE);
    let s = Message::parse(&msg);
    let short = &msg[..100];
    let mut out = Vec::new();
    s.envelope(short, &mut out);
    assert_eq!(out, b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
    out.clear();
    s.body_structure(short, false, &mut out);
    assert_eq!(
        out,
        b"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)"
    );
    assert_eq!(s.section(short, &[1], SectionSpec::Full), None);
    assert_eq!(s.binary(short, &[2]), None);
    assert!(!s.text_contains(short, b"bob"));
    assert_eq!(s.sent_date(short), None);
    // Longer input (say, a padded buffer) is cut to the parsed length.
    let mut padded = msg.clone();
    padded.extend_from_slice(b"padding");
    assert_eq!(
        s.section(&padded, &[], SectionSpec::Text),
        s.section(&msg, &[], SectionSpec::Text)
    );
}
