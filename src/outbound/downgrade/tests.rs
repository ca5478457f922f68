//! The downgrade checked through the MIME parser: the output has the same parts, every
//! leaf decodes to the same bytes as before, and only what cannot be re-encoded stays
//! 8-bit. Messages look like real ones (UTF-8 and Latin-1 text, multipart/alternative
//! with HTML, 8-bit attachments, nested message/rfc822); a generated-body test checks
//! decode(encode(x)) == x for both encodings.

use super::*;
use crate::mime::{Message, PartKind};

fn crlf(text: &str) -> Vec<u8> {
    text.replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

/// One part as a reader sees it: kind, Content-Type value, decoded body (leaves only).
type PartView = (PartKind, Option<Vec<u8>>, Option<Vec<u8>>);

fn decoded_parts(message: &[u8]) -> Vec<PartView> {
    let structure = Message::parse(message);
    structure
        .parts()
        .iter()
        .map(|p| {
            let content_type = p
                .content_value(ContentField::Type)
                .map(|r| message[r].to_vec());
            let body = matches!(p.kind, PartKind::Text | PartKind::Other)
                .then(|| decoded(message, p.body.range(), p.encoding));
            (p.kind, content_type, body)
        })
        .collect()
}

/// Downgrades, checks the invariants, returns the output.
fn check(original: &[u8]) -> Downgraded {
    let d = downgrade(original).unwrap();
    let before = decoded_parts(original);
    let after = decoded_parts(&d.message);
    assert_eq!(
        before.len(),
        after.len(),
        "{}",
        String::from_utf8_lossy(&d.message)
    );
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert_eq!(b.0, a.0, "part {i} kind");
        // A Content-Type is only ever added (to a non-MIME root), never changed.
        if b.1.is_some() {
            assert_eq!(b.1, a.1, "part {i} content type");
        }
        assert_eq!(b.2, a.2, "part {i} decoded body");
    }
    for line in d.message.split(|&b| b == b'\n') {
        assert!(
            line.len() <= TEXT_LINE_BYTES_MAX + 1,
            "line of {} bytes",
            line.len()
        );
    }
    assert_eq!(d.still_8bit, is_8bit(&d.message));
    d
}

fn text(d: &Downgraded) -> String {
    String::from_utf8(d.message.clone()).unwrap()
}

#[test]
fn is_8bit_finds_one_byte_anywhere() {
    assert!(!is_8bit(b""));
    for len in [1, 63, 64, 65, 200] {
        let mut m = vec![b'a'; len];
        assert!(!is_8bit(&m));
        for at in 0..len {
            m[at] = 0xe9;
            assert!(is_8bit(&m), "{len} {at}");
            m[at] = b'a';
        }
    }
    assert!(!header_8bit(&crlf("Subject: x\n\nBody \u{e9}\n")));
    assert!(header_8bit(&crlf("Subject: \u{e9}\n\nBody\n")));
    let nested = crlf(
        "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\nX-Name: J\u{f6}rg\n\nhi\n--b--\n",
    );
    assert!(header_8bit(&nested));
}

#[test]
fn seven_bit_message_is_unchanged() {
    let m = crlf("Subject: x\n\nplain\n");
    let d = downgrade(&m).unwrap();
    assert_eq!((d.message, d.parts_encoded, d.still_8bit), (m, 0, false));
}

#[test]
fn utf8_text_without_mime_headers() {
    let m = crlf("From: a@h.test\nSubject: hello\n\nGr\u{fc}\u{df}e aus K\u{f6}ln\n-- \nA = B.\n");
    let d = check(&m);
    assert_eq!(
        text(&d),
        "From: a@h.test\r\nSubject: hello\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\r\n\
         Gr=C3=BC=C3=9Fe aus K=C3=B6ln\r\n=2D-=20\r\nA =3D B.\r\n"
    );
    assert_eq!((d.parts_encoded, d.still_8bit), (1, false));
}

#[test]
fn latin1_text_keeps_its_content_type() {
    let m = crlf(
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=iso-8859-1\n\
         Content-Transfer-Encoding: 8bit\nSubject: x\n\n",
    );
    let mut m = m;
    m.extend_from_slice(b"Caf\xe9 cr\xe8me br\xfbl\xe9e\r\n");
    let d = check(&m);
    assert_eq!(
        text(&d),
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\nSubject: x\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\r\nCaf=E9 cr=E8me br=FBl=E9e\r\n"
    );
    // A non-MIME Latin-1 body is labelled unknown-8bit.
    let d = check(b"Subject: x\r\n\r\nCaf\xe9\r\n");
    assert!(text(&d).contains("charset=unknown-8bit\r\n"));
}

#[test]
fn multipart_alternative_with_8bit_html() {
    let m = crlf(
        "MIME-Version: 1.0\n\
         Content-Type: multipart/alternative; boundary=\"=_alt\"\n\
         Content-Transfer-Encoding: 8bit\n\
         \n\
         preamble\n\
         --=_alt\n\
         Content-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: 8bit\n\
         \n\
         Bonjour \u{e0} tous,\n\
         ligne deux\n\
         --=_alt\n\
         Content-Type: text/html; charset=utf-8\n\
         Content-Transfer-Encoding: 8bit\n\
         \n\
         <p style=\"color: red\">Bonjour \u{e0} tous</p>\n\
         --=_alt--\n\
         epilogue\n",
    );
    let d = check(&m);
    let t = text(&d);
    assert_eq!(d.parts_encoded, 2);
    assert!(!d.still_8bit);
    assert!(t.contains("Content-Type: multipart/alternative; boundary=\"=_alt\"\r\nContent-Transfer-Encoding: 7bit\r\n\r\npreamble\r\n--=_alt\r\n"), "{t}");
    assert!(
        t.contains("Bonjour =C3=A0 tous,\r\nligne deux\r\n--=_alt\r\n"),
        "{t}"
    );
    assert!(
        t.contains(
            "<p style=3D\"color: red\">Bonjour =C3=A0 tous</p>\r\n--=_alt--\r\nepilogue\r\n"
        ),
        "{t}"
    );
    assert_eq!(
        t.matches("Content-Transfer-Encoding: quoted-printable\r\n")
            .count(),
        2
    );
}

#[test]
fn attachment_with_8bit_content_becomes_base64() {
    let mut m = crlf(
        "MIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=mix\n\
         \n\
         --mix\n\
         Content-Type: text/plain\n\
         \n\
         see attached\n\
         --mix\n\
         Content-Type: application/octet-stream; name=\"blob.bin\"\n\
         Content-Disposition: attachment; filename=\"blob.bin\"\n\
         Content-Transfer-Encoding: binary\n\
         \n",
    );
    let blob: Vec<u8> = (0..=255u8)
        .cycle()
        .take(700)
        .filter(|&b| b != b'\n')
        .collect();
    m.extend_from_slice(&blob);
    m.extend_from_slice(b"\r\n--mix--\r\n");
    let d = check(&m);
    assert_eq!((d.parts_encoded, d.still_8bit), (1, false));
    let t = text(&d);
    assert!(
        t.contains(
            "filename=\"blob.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgcICQ"
        ),
        "{t}"
    );
    // The 7-bit text part is untouched.
    assert!(t.contains("Content-Type: text/plain\r\n\r\nsee attached\r\n"));
}

#[test]
fn text_with_long_lines_or_nul_becomes_base64() {
    let long = format!(
        "Subject: x\r\nContent-Type: text/plain\r\n\r\n{}\u{e9}\r\n",
        "a".repeat(1200)
    );
    let d = check(long.as_bytes());
    assert!(text(&d).contains("Content-Transfer-Encoding: base64\r\n"));
    let d = check(b"Subject: x\r\nContent-Type: text/plain\r\n\r\nnul \0 and \xe9\r\n");
    assert!(text(&d).contains("Content-Transfer-Encoding: base64\r\n"));
    // 998 bytes is still a line.
    let edge = format!(
        "Subject: x\r\nContent-Type: text/plain\r\n\r\n{}\u{e9}\r\n",
        "a".repeat(996)
    );
    let d = check(edge.as_bytes());
    assert!(text(&d).contains("Content-Transfer-Encoding: quoted-printable\r\n"));
}

#[test]
fn nested_message_rfc822() {
    let m = crlf(
        "MIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=outer\n\
         \n\
         --outer\n\
         Content-Type: text/plain; charset=utf-8\n\
         \n\
         Forwarded message below \u{2193}\n\
         --outer\n\
         Content-Type: message/rfc822\n\
         Content-Transfer-Encoding: 8bit\n\
         \n\
         From: b@r.test\n\
         Subject: inner\n\
         \n\
         Inner body: na\u{ef}ve caf\u{e9}\n\
         --outer--\n",
    );
    let d = check(&m);
    assert_eq!((d.parts_encoded, d.still_8bit), (2, false));
    let t = text(&d);
    assert!(
        t.contains("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"),
        "{t}"
    );
    assert!(t.contains("Subject: inner\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nInner body: na=C3=AFve caf=C3=A9\r\n--outer--"), "{t}");
}

#[test]
fn eight_bit_headers_are_left_alone() {
    let m = crlf("Subject: R\u{e9}sum\u{e9}\n\nBody \u{e9}\n");
    let d = check(&m);
    assert!(d.still_8bit);
    assert_eq!(d.parts_encoded, 1);
    assert!(text(&d).starts_with("Subject: R\u{e9}sum\u{e9}\r\n"));
    // A multipart relabelled only when nothing 8-bit is left inside it.
    let m = crlf(
        "Content-Type: multipart/mixed; boundary=b\nContent-Transfer-Encoding: 8bit\n\n\
         --b\nContent-Type: text/plain\nContent-Description: caf\u{e9}\n\nx \u{e9}\n--b--\n",
    );
    let d = check(&m);
    assert!(text(&d).contains("Content-Transfer-Encoding: 8bit\r\n"));
    assert!(d.still_8bit);
}

#[test]
fn broken_encodings() {
    // Raw 8-bit inside a quoted-printable body: decoded and encoded again.
    let m = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf\xc3\xa9 =C3=A9=\r\n more\r\n";
    let d = check(m);
    assert_eq!(
        text(&d).split("\r\n\r\n").nth(1),
        Some("caf=C3=A9 =C3=A9 more\r\n")
    );
    // An encoding we cannot decode: left alone.
    let m = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\ncaf\xe9\r\n";
    let d = check(m);
    assert_eq!(
        (d.message.as_slice(), d.parts_encoded, d.still_8bit),
        (&m[..], 0, true)
    );
}

/// xorshift64*: deterministic, no crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Bodies rich in what quoted-printable must get right: white space before line ends,
/// `=`, `-` and `.` at line starts, lone CR and LF, 8-bit bytes, long lines.
fn generated_body(rng: &mut Rng) -> Vec<u8> {
    const PIECES: &[&[u8]] = &[
        b" ",
        b"\t",
        b"\r\n",
        b"\r\n",
        b"\r",
        b"\n",
        b"=",
        b"-",
        b"--b",
        b".",
        b"From ",
        b"abc",
        b"x",
        b"\xc3\xa9",
        b"\xe9",
        b"\xff",
        b"=41",
        b"  \r\n",
        b"\t\r\n",
    ];
    let len = rng.below(400);
    let mut body = Vec::new();
    for _ in 0..len {
        if rng.below(20) == 0 {
            body.extend(std::iter::repeat_n(b'y', rng.below(200) as usize));
        } else {
            body.extend_from_slice(PIECES[rng.below(PIECES.len() as u64) as usize]);
        }
    }
    body
}

#[test]
fn generated_bodies_round_trip() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..2000 {
        let body = generated_body(&mut rng);
        let mut qp = Vec::new();
        encode_quoted_printable(&body, &mut qp);
        assert!(!is_8bit(&qp));
        for line in qp.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            assert!(
                line.len() <= ENCODED_LINE_BYTES_MAX,
                "{:?}",
                String::from_utf8_lossy(line)
            );
            assert!(!line.contains(&b'\r'));
            assert!(!line.starts_with(b"-"), "a line could become a boundary");
            assert!(!line.ends_with(b" ") && !line.ends_with(b"\t"));
        }
        let mut back = Vec::new();
        crate::mime::decode::quoted_printable(&qp, &mut back);
        assert_eq!(back, body, "{:?}", String::from_utf8_lossy(&qp));

        let mut b64 = Vec::new();
        encode_base64(&body, &mut b64);
        assert!(b64
            .split(|&b| b == b'\n')
            .all(|l| l.len() <= ENCODED_LINE_BYTES_MAX + 1));
        let mut back = Vec::new();
        crate::mime::decode::base64(&b64, &mut back);
        assert_eq!(back, body);

        // The same body inside a real message, checked through the parser.
        let mut m = crlf(
            "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=Q_b\n\n--Q_b\n\
             Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n",
        );
        m.extend_from_slice(&body);
        m.extend_from_slice(b"\r\n--Q_b--\r\n");
        // (Unless the body holds something the parser takes for the boundary.)
        let parts = Message::parse(&m);
        if is_8bit(&body) && parts.parts()[1].body.range().len() == body.len() {
            let d = check(&m);
            assert_eq!((d.parts_encoded, d.still_8bit), (1, false));
        }
    }
}
