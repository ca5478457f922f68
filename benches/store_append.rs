//! Store benchmarks: record encoding + CRC, recovery (full scan and from a checkpoint)
//! with the index's bytes per message, recovery's scan of a full last blob segment, blob
//! append throughput inside a glommio executor (Fsync::Never, and Fsync::Always with group
//! commit), and whole deliveries as `Core::deliver` makes them (blob staged, blob and
//! index record committed concurrently).
//!
//! Run: `cargo bench --bench store_append`. Recovery and append benchmarks write to a
//! temporary directory on the same filesystem as `TMPDIR`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringmail::store::index::MESSAGE_ENTRY_BYTES;
use ringmail::store::record::{
    encode_record, MailboxCreate, MessageAppend, MetaRecord, RecordType,
};
use ringmail::store::segment::{self, SegmentKind};
use ringmail::store::{
    checkpoint, recover_with, BlobRef, Delivery, Filing, Fsync, RecoverOptions, Store, StoreConfig,
};
use rkyv::util::AlignedVec;

/// Counts live heap bytes, to measure what the recovered index really costs.
struct Counting;
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only adds counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("record");
    let msg = vec![b'x'; 2048];
    let mut out = Vec::with_capacity(4096);
    g.throughput(Throughput::Bytes(msg.len() as u64));
    g.bench_function("encode_crc_blob_2KiB", |b| {
        b.iter(|| {
            out.clear();
            black_box(encode_record(&mut out, RecordType::Blob, black_box(&msg)))
        })
    });
    let rec = MetaRecord::MessageAppend(MessageAppend {
        mailbox_id: 7,
        uid: 42,
        modseq: 43,
        blob: BlobRef {
            core: 1,
            segment: 2,
            offset: 4096,
            len: 2048,
        },
        internal_date: 1_700_000_000,
        flags: 0,
    });
    let mut scratch = AlignedVec::new();
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_crc_message_append", |b| {
        b.iter(|| {
            out.clear();
            black_box(rec.encode(&mut out, &mut scratch).unwrap())
        })
    });
    g.finish();
}

/// Writes `messages` MessageAppend records (100 per mailbox) into core 0's meta log,
/// all referencing one real blob, and returns the meta bytes written.
fn build_meta_log(data: &Path, messages: u32) -> u64 {
    let dir = segment::core_dir(data, 0);
    segment::create_segment(&dir, SegmentKind::Blob, 0, 1, false).unwrap();
    let blob_path = segment::segment_path(&dir, SegmentKind::Blob, 1);
    let mut blob = Vec::new();
    encode_record(&mut blob, RecordType::Blob, &[b'm'; 2048]);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&blob_path)
        .unwrap();
    std::io::Write::write_all(&mut f, &blob).unwrap();
    let blob_ref = BlobRef {
        core: 0,
        segment: 1,
        offset: segment::SEGMENT_HEADER_BYTES as u64,
        len: 2048,
    };
    segment::create_segment(&dir, SegmentKind::Meta, 0, 1, false).unwrap();
    let meta_path = segment::segment_path(&dir, SegmentKind::Meta, 1);
    let mut buf = Vec::with_capacity(messages as usize * 64);
    let mut scratch = AlignedVec::new();
    let per_mailbox = 100;
    for i in 0..messages {
        let mailbox_id = u64::from(i / per_mailbox) + 1;
        if i % per_mailbox == 0 {
            MetaRecord::MailboxCreate(MailboxCreate {
                mailbox_id,
                user: format!("user{mailbox_id}@example.org"),
                name: "INBOX".into(),
                uid_validity: 1,
            })
            .encode(&mut buf, &mut scratch)
            .unwrap();
        }
        let uid = i % per_mailbox + 1;
        MetaRecord::MessageAppend(MessageAppend {
            mailbox_id,
            uid,
            modseq: u64::from(uid),
            blob: blob_ref,
            internal_date: 1_700_000_000,
            flags: 0,
        })
        .encode(&mut buf, &mut scratch)
        .unwrap();
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&meta_path)
        .unwrap();
    std::io::Write::write_all(&mut f, &buf).unwrap();
    buf.len() as u64
}

fn no_checkpoint() -> RecoverOptions {
    RecoverOptions {
        use_checkpoints: false,
    }
}

/// Writes a checkpoint of the recovered index (as `flush` would) with std::fs.
fn write_checkpoint(data: &Path) {
    let rec = recover_with(data, 1, &|_| 0, no_checkpoint()).unwrap();
    let idx = &rec.cores[0];
    let bytes = checkpoint::encode(
        idx,
        idx.generation(),
        idx.covered().to_vec(),
        idx.covered_blob().to_vec(),
    )
    .unwrap();
    let dir = segment::core_dir(data, 0);
    std::fs::write(dir.join(checkpoint::file_name(idx.generation())), bytes).unwrap();
}

/// Live heap bytes held by a recovered index of `messages` messages, and recovery time.
fn measure_index(data: &Path, messages: u32, opts: RecoverOptions) -> (f64, Duration, u64) {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let start = Instant::now();
    let rec = recover_with(data, 1, &|_| 0, opts).unwrap();
    let took = start.elapsed();
    assert_eq!(rec.report.messages, u64::from(messages));
    let after = LIVE_BYTES.load(Ordering::Relaxed);
    let per = (after - before) as f64 / f64::from(messages);
    let scanned = rec.report.bytes_scanned + rec.report.checkpoint_bytes;
    drop(rec);
    (per, took, scanned)
}

fn bench_recovery(c: &mut Criterion) {
    const N: u32 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let meta_bytes = build_meta_log(data, N);
    let (per, took, _) = measure_index(data, N, no_checkpoint());
    println!(
        "index: size_of::<MessageEntry>() = {MESSAGE_ENTRY_BYTES} B; {N} messages in 1000 \
         mailboxes: {per:.1} heap B/message (all maps and names included); full scan of \
         {meta_bytes} meta bytes took {took:?}"
    );
    let mut g = c.benchmark_group("recovery_100k");
    g.sample_size(10);
    g.throughput(Throughput::Elements(u64::from(N)));
    g.bench_function("full_scan", |b| {
        b.iter(|| black_box(recover_with(data, 1, &|_| 0, no_checkpoint()).unwrap()))
    });
    write_checkpoint(data);
    let (_, took_ckpt, ckpt_bytes) = measure_index(data, N, RecoverOptions::default());
    println!("from checkpoint: {ckpt_bytes} bytes read, took {took_ckpt:?}");
    g.bench_function("from_checkpoint", |b| {
        b.iter(|| black_box(recover_with(data, 1, &|_| 0, RecoverOptions::default()).unwrap()))
    });
    g.finish();
    println!(
        "1M extrapolation: full scan ~{:?}, index ~{:.0} MiB",
        took * 10,
        per * 1e6 / (1 << 20) as f64
    );

    // The real 1M-message measurement (once; not a criterion loop).
    let big = tempfile::tempdir().unwrap();
    let big_meta = build_meta_log(big.path(), 1_000_000);
    let (per, took, _) = measure_index(big.path(), 1_000_000, no_checkpoint());
    write_checkpoint(big.path());
    let (_, took_ckpt, ckpt_bytes) =
        measure_index(big.path(), 1_000_000, RecoverOptions::default());
    println!(
        "1M messages measured: {per:.1} heap B/message ({:.0} MiB); full scan of {big_meta} \
         meta bytes {took:?}; from a {ckpt_bytes}-byte checkpoint {took_ckpt:?}",
        per * 1e6 / (1 << 20) as f64
    );
}

/// Appends 2 KiB blobs from `concurrency` tasks inside one glommio executor, driven by
/// criterion's `iter_custom` through channels (the executor lives across samples).
fn bench_append(c: &mut Criterion) {
    for (name, fsync, concurrency) in [
        ("fsync_never_32_tasks", Fsync::Never, 32usize),
        ("fsync_always_64_tasks", Fsync::Always, 64usize),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        let (req_tx, req_rx) = std::sync::mpsc::channel::<u64>();
        let (resp_tx, resp_rx) = std::sync::mpsc::channel::<(Duration, u64)>();
        let exec = glommio::LocalExecutorBuilder::default()
            .io_memory(512 << 10)
            .spawn(move || async move {
                let rec = recover_with(&data, 1, &|_| 0, no_checkpoint()).unwrap();
                let mut cfg = StoreConfig::new(&data, 0);
                cfg.fsync = fsync;
                cfg.blob_segment_bytes_max = 64 << 20;
                cfg.checkpoint_meta_bytes_interval = 0;
                let store = Store::open(cfg, rec.cores.into_iter().next().unwrap())
                    .await
                    .unwrap();
                let msg = std::rc::Rc::new(vec![b'x'; 2048]);
                // Blocking recv between samples is fine: nothing is pending then.
                while let Ok(iters) = req_rx.recv() {
                    let start = Instant::now();
                    let per_task = iters.div_ceil(concurrency as u64);
                    let tasks: Vec<_> = (0..concurrency)
                        .map(|_| {
                            let s = store.clone();
                            let m = msg.clone();
                            glommio::spawn_local(async move {
                                for _ in 0..per_task {
                                    s.append_blob(&m).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await;
                    }
                    let took = start.elapsed();
                    // Keep the disk bounded: drop sealed segments (never read here).
                    let dir = segment::core_dir(&data, 0);
                    let (seqs, _) = segment::list_segments(&dir, SegmentKind::Blob).unwrap();
                    for s in seqs.iter().take(seqs.len().saturating_sub(1)) {
                        let _ = std::fs::remove_file(segment::segment_path(
                            &dir,
                            SegmentKind::Blob,
                            *s,
                        ));
                    }
                    let _ = resp_tx.send((took, store.stats().blob.syncs));
                }
            })
            .unwrap();
        let mut g = c.benchmark_group("append_blob_2KiB");
        g.sample_size(10);
        g.measurement_time(Duration::from_secs(3));
        g.throughput(Throughput::Bytes(2048));
        let mut last_syncs = 0;
        let mut appends = 0;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                req_tx.send(iters).unwrap();
                let (took, syncs) = resp_rx.recv().unwrap();
                appends += iters;
                last_syncs = syncs;
                took
            })
        });
        g.finish();
        if fsync == Fsync::Always {
            println!(
                "{name}: {appends} appends, {last_syncs} fdatasyncs ({:.1} appends per sync)",
                appends as f64 / last_syncs.max(1) as f64
            );
        }
        drop(req_tx);
        exec.join().unwrap();
    }
}

/// Recovery scans the last blob segment of every core from its start (a durable index
/// record does not prove its blob durable): the cost for a full 256 MiB segment of 2 KiB
/// blobs, from the page cache.
fn bench_recovery_blob_scan(c: &mut Criterion) {
    const SEGMENT_BYTES: usize = 256 << 20;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let core_dir = segment::core_dir(data, 0);
    segment::create_segment(&core_dir, SegmentKind::Blob, 0, 1, false).unwrap();
    let mut chunk = Vec::with_capacity(4 << 20);
    let mut written = segment::SEGMENT_HEADER_BYTES;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(segment::segment_path(&core_dir, SegmentKind::Blob, 1))
        .unwrap();
    let mut blobs = 0u64;
    while written + 2060 <= SEGMENT_BYTES {
        encode_record(&mut chunk, RecordType::Blob, &[b'b'; 2048]);
        written += 2060;
        blobs += 1;
        if chunk.len() >= 4 << 20 {
            std::io::Write::write_all(&mut f, &chunk).unwrap();
            chunk.clear();
        }
    }
    std::io::Write::write_all(&mut f, &chunk).unwrap();
    drop(f);
    let start = Instant::now();
    let rec = recover_with(data, 1, &|_| 0, no_checkpoint()).unwrap();
    println!(
        "last blob segment of {written} bytes ({blobs} blobs): recovery scanned {} bytes in {:?}",
        rec.report.bytes_scanned,
        start.elapsed()
    );
    let mut g = c.benchmark_group("recovery_blob_scan");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(written as u64));
    g.bench_function("last_segment_256MiB", |b| {
        b.iter(|| black_box(recover_with(data, 1, &|_| 0, no_checkpoint()).unwrap()))
    });
    g.finish();
}

/// Whole deliveries of 2 KiB messages from 64 tasks, as `Core::deliver` makes them. For
/// a recipient another core owns (`two_logs`): the blob staged, then its durability and
/// the MessageAppend's commit awaited together (two fdatasyncs per batch, one per log).
/// For a recipient this core owns (`one_log`): blob and MessageAppend in one blob-log
/// batch (`Store::store_message`, one fdatasync).
fn bench_deliver(c: &mut Criterion) {
    const CONCURRENCY: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    // (iterations, one log)
    let (req_tx, req_rx) = std::sync::mpsc::channel::<(u64, bool)>();
    let (resp_tx, resp_rx) = std::sync::mpsc::channel::<(Duration, u64, u64)>();
    let exec = glommio::LocalExecutorBuilder::default()
        .io_memory(512 << 10)
        .spawn(move || async move {
            let rec = recover_with(&data, 1, &|_| 0, no_checkpoint()).unwrap();
            let mut cfg = StoreConfig::new(&data, 0);
            cfg.checkpoint_meta_bytes_interval = 0;
            cfg.checkpoint_blob_bytes_interval = 0;
            let store = Store::open(cfg, rec.cores.into_iter().next().unwrap())
                .await
                .unwrap();
            let msg = std::rc::Rc::new(vec![b'x'; 2048]);
            while let Ok((iters, one_log)) = req_rx.recv() {
                let before = store.stats();
                let start = Instant::now();
                let per_task = iters.div_ceil(CONCURRENCY as u64);
                let tasks: Vec<_> = (0..CONCURRENCY)
                    .map(|t| {
                        let s = store.clone();
                        let m = msg.clone();
                        glommio::spawn_local(async move {
                            let user = format!("user{t}@example.org");
                            for _ in 0..per_task {
                                if one_log {
                                    let filing = [Filing {
                                        user: user.clone(),
                                        mailbox: "INBOX".into(),
                                    }];
                                    let (_, _, stored) =
                                        s.store_message(&m, &filing, 1_700_000_000).await.unwrap();
                                    stored.wait().await.unwrap();
                                    continue;
                                }
                                let (blob, durable) = s.stage_blob(&m).await.unwrap();
                                let d = [Delivery {
                                    user: user.clone(),
                                    mailbox: "INBOX".into(),
                                    blob,
                                    internal_date: 1_700_000_000,
                                }];
                                let (b, u) =
                                    futures_lite::future::zip(durable.durable(), s.deliver(&d))
                                        .await;
                                b.unwrap();
                                u.unwrap();
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await;
                }
                let took = start.elapsed();
                let st = store.stats();
                let _ = resp_tx.send((
                    took,
                    st.blob.syncs - before.blob.syncs,
                    st.meta.syncs - before.meta.syncs,
                ));
            }
        })
        .unwrap();
    let mut g = c.benchmark_group("deliver_2KiB");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));
    for (name, one_log) in [
        ("fsync_always_64_tasks_two_logs", false),
        ("fsync_always_64_tasks_one_log", true),
    ] {
        let mut delivered = 0;
        let mut syncs = (0, 0);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                req_tx.send((iters, one_log)).unwrap();
                let (took, blob, meta) = resp_rx.recv().unwrap();
                delivered += iters;
                syncs.0 += blob;
                syncs.1 += meta;
                took
            })
        });
        println!(
            "{name}: {delivered} messages, {} blob and {} meta fdatasyncs ({:.1} messages per \
             sync)",
            syncs.0,
            syncs.1,
            delivered as f64 / (syncs.0 + syncs.1).max(1) as f64
        );
    }
    g.finish();
    drop(req_tx);
    exec.join().unwrap();
}

criterion_group!(
    benches,
    bench_encode,
    bench_recovery,
    bench_recovery_blob_scan,
    bench_append,
    bench_deliver
);
criterion_main!(benches);
