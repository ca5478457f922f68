//! MIME layer throughput (criterion) on a ~100 KiB message: multipart/mixed
//! with a multipart/alternative text+html body, a base64 attachment and an
//! attached message/rfc822 that is itself multipart.
//! - `mime/parse/100KiB`: `Message::parse` (bytes per second);
//! - `mime/render/envelope+bodystructure`: ENVELOPE and BODYSTRUCTURE of the
//!   parsed structure into one reused buffer (what FETCH of a mailbox costs
//!   per message once the structure is cached);
//! - `mime/section/attachment`: BODY[2] (a borrowed slice);
//! - `mime/search/body_miss`: SEARCH BODY for a word that is not there.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringmail::mime::{Message, SectionSpec};

/// Base64 lines of 76 characters, as mailers write them.
fn base64_lines(bytes: usize) -> String {
    let line = "TG9yZW0gaXBzdW0gZG9sb3Igc2l0IGFtZXQsIGNvbnNlY3RldHVyIGFkaXBpc2NpbmcgZWxpdC4g";
    let mut out = String::new();
    while out.len() < bytes {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

fn text_lines(bytes: usize, prefix: &str) -> String {
    let line = "The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs.";
    let mut out = String::new();
    while out.len() < bytes {
        out.push_str(prefix);
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

fn message() -> Vec<u8> {
    let mut m = String::new();
    m.push_str(
        "Return-Path: <alice@example.org>\r\n\
         Received: from mx.example.org (mx.example.org [192.0.2.1])\r\n\tby mail.example.com with ESMTPS; \
         Tue, 3 Nov 2026 10:15:02 +0100\r\n\
         From: Alice Example <alice@example.org>\r\n\
         To: Bob <bob@example.com>, \"Carol, C.\" <carol@example.com>, team: dave@example.net, eve@example.net;\r\n\
         Subject: =?UTF-8?Q?Quarterly_r=C3=A9sum=C3=A9?= and figures\r\n\
         Date: Tue, 3 Nov 2026 10:15:00 +0100\r\n\
         Message-ID: <20261103101500.1@example.org>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"=_outer_0123456789\"\r\n\r\n\
         This is a multi-part message in MIME format.\r\n\
         --=_outer_0123456789\r\n\
         Content-Type: multipart/alternative; boundary=\"=_alt_0123456789\"\r\n\r\n\
         --=_alt_0123456789\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\r\n",
    );
    m.push_str(&text_lines(8 << 10, ""));
    m.push_str(
        "--=_alt_0123456789\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body>\r\n",
    );
    m.push_str(&text_lines(12 << 10, "<p>"));
    m.push_str(
        "</body></html>\r\n--=_alt_0123456789--\r\n\r\n--=_outer_0123456789\r\n\
         Content-Type: application/pdf; name=\"report.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"report.pdf\"\r\n\r\n",
    );
    m.push_str(&base64_lines(64 << 10));
    m.push_str(
        "--=_outer_0123456789\r\nContent-Type: message/rfc822\r\n\r\n\
         From: \"Original Sender\" <orig@example.net>\r\nTo: bob@example.com\r\n\
         Subject: the original\r\nDate: 1 Nov 2026 12:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n\
         --inner\r\nContent-Type: text/plain\r\n\r\n",
    );
    m.push_str(&text_lines(8 << 10, "> "));
    m.push_str("--inner--\r\n\r\n--=_outer_0123456789--\r\n");
    m.into_bytes()
}

fn bench_mime(c: &mut Criterion) {
    let msg = message();
    let mut group = c.benchmark_group("mime");
    group.throughput(Throughput::Bytes(msg.len() as u64));
    group.bench_function("parse/100KiB", |b| {
        b.iter(|| black_box(Message::parse(black_box(&msg))));
    });
    let structure = Message::parse(&msg);
    assert_eq!(structure.parts().len(), 8);
    group.throughput(Throughput::Elements(1));
    group.bench_function("render/envelope+bodystructure", |b| {
        let mut out = Vec::with_capacity(4096);
        b.iter(|| {
            out.clear();
            structure.envelope(&msg, &mut out);
            structure.body_structure(&msg, true, &mut out);
            black_box(&out);
        });
    });
    group.bench_function("section/attachment", |b| {
        b.iter(|| black_box(structure.section(&msg, &[2], SectionSpec::Full)));
    });
    group.throughput(Throughput::Bytes(msg.len() as u64));
    group.bench_function("search/body_miss", |b| {
        b.iter(|| assert!(!structure.body_contains(&msg, black_box(b"nowhere to be found"))));
    });
    group.finish();
}

criterion_group!(benches, bench_mime);
criterion_main!(benches);
