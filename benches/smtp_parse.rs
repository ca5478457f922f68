//! SMTP parser throughput (criterion, bytes per second):
//! - `session/pipelined_mail_rcpt10_data`: one pipelined batch (MAIL, RCPT x10,
//!   DATA, a 1 KiB body, the end of data) through `Session::advance`, including
//!   the delivery hand-off;
//! - `data/unstuff/2KiB` and `data/unstuff/1MiB`: end-of-data search and
//!   dot-unstuffing of a whole message by `DataDecoder`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringmail::smtp::data::{DataDecoder, DataProgress};
use ringmail::smtp::{
    Context, DeliveryResult, Directory, Limits, PeerInfo, Session, Step, Transaction,
};

/// Every address in example.test exists.
struct AllLocal;

impl Directory for AllLocal {
    fn is_local_domain(&self, domain: &str) -> bool {
        domain == "example.test"
    }
    fn accepts(&self, _address: &str) -> bool {
        true
    }
    fn may_send_as(&self, _user: &str, _sender: &str) -> bool {
        true
    }
}

const RECIPIENTS: usize = 10;
/// Sessions are renewed before they reach their per-session message limit.
const TRANSACTIONS_PER_SESSION: u32 = 10_000;

fn limits() -> Arc<Limits> {
    Arc::new(Limits::new("mx.example.test", 64 << 20, 100))
}

/// A dot-stuffed message body of about `bytes` bytes in 76-byte lines, every
/// tenth line starting with a (stuffed) dot, then the end of data.
fn stuffed_message(bytes: usize) -> Vec<u8> {
    let mut wire = b"From: sender@remote.test\r\nSubject: benchmark\r\n\r\n".to_vec();
    let mut line = 0usize;
    while wire.len() < bytes {
        if line.is_multiple_of(10) {
            wire.extend_from_slice(b"..");
        }
        let text = b"The quick brown fox jumps over the lazy dog; pack my box with five dozen.";
        wire.extend_from_slice(text);
        wire.extend_from_slice(b"\r\n");
        line += 1;
    }
    wire.extend_from_slice(b".\r\n");
    wire
}

fn pipelined_batch() -> Vec<u8> {
    let mut batch = b"MAIL FROM:<sender@remote.test> SIZE=1200 BODY=8BITMIME\r\n".to_vec();
    for i in 0..RECIPIENTS {
        batch.extend_from_slice(format!("RCPT TO:<user{i}@example.test>\r\n").as_bytes());
    }
    batch.extend_from_slice(b"DATA\r\n");
    batch.extend_from_slice(&stuffed_message(1024));
    batch
}

fn new_session() -> Session {
    let peer = PeerInfo {
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 40_000,
    };
    let mut session = Session::new(limits(), peer, 1, false);
    let cx = Context {
        now_unix: 1_795_319_116,
        directory: &AllLocal,
    };
    let mut out = Vec::new();
    session.greeting(&mut out);
    let (_, step) = session.advance(b"EHLO client.test\r\n", &mut out, &cx);
    assert_eq!(step, Step::NeedInput);
    session
}

fn bench_session(c: &mut Criterion) {
    let batch = pipelined_batch();
    let cx = Context {
        now_unix: 1_795_319_116,
        directory: &AllLocal,
    };
    let mut group = c.benchmark_group("session");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.bench_function("pipelined_mail_rcpt10_data", |b| {
        let mut session = new_session();
        let mut transactions = 0u32;
        let mut out = Vec::with_capacity(4096);
        b.iter(|| {
            if transactions == TRANSACTIONS_PER_SESSION {
                session = new_session();
                transactions = 0;
            }
            out.clear();
            let (consumed, step) = session.advance(black_box(&batch), &mut out, &cx);
            assert_eq!((consumed, step), (batch.len(), Step::Deliver));
            let transaction: Transaction = session.take_transaction();
            assert_eq!(transaction.recipients.len(), RECIPIENTS);
            black_box(&transaction);
            // The message Vec goes back to the session, as the driver does.
            session.delivered(DeliveryResult::Stored, transaction.message, &mut out);
            transactions += 1;
            black_box(&out);
        });
    });
    group.finish();
}

fn bench_unstuff(c: &mut Criterion) {
    let mut group = c.benchmark_group("data/unstuff");
    for (name, bytes) in [("2KiB", 2 << 10), ("1MiB", 1 << 20)] {
        let wire = stuffed_message(bytes);
        let mut message = Vec::with_capacity(wire.len());
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                message.clear();
                let mut decoder = DataDecoder::new(64 << 20, 1000);
                let (consumed, progress) = decoder.decode(black_box(&wire), &mut message);
                assert_eq!(consumed, wire.len());
                assert_eq!(progress, DataProgress::End(Ok(())));
                black_box(&message);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_session, bench_unstuff);
criterion_main!(benches);
