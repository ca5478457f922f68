//! Tests of local deliveries ([`Store::store_message`]): the blob and its `MessageAppend`
//! records in one blob-log batch (one write, one fdatasync), recovered from the blob log
//! with and without a checkpoint, and after a crash at every byte of the last batch.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use super::segment::{self, ScanItem, SegmentKind, SEGMENT_HEADER_BYTES};
use super::test_util::*;
use super::*;

const DATE: i64 = 1_700_000_000;

fn filing(user: &str) -> Filing {
    Filing {
        user: user.into(),
        mailbox: "INBOX".into(),
    }
}

fn message(i: usize) -> Vec<u8> {
    format!("Subject: m{i}\r\n\r\nbody {i}\r\n").into_bytes()
}

fn blob_path(data: &Path) -> PathBuf {
    segment::segment_path(&segment::core_dir(data, 0), SegmentKind::Blob, 1)
}

/// (offset, type) of every valid record of a segment.
fn records(path: &Path) -> Vec<(u64, record::RecordType)> {
    let f = File::open(path).unwrap();
    let mut s = segment::Scanner::new(&f, path, SEGMENT_HEADER_BYTES as u64).unwrap();
    let mut out = Vec::new();
    loop {
        match s.next_item().unwrap() {
            ScanItem::Record { offset, header, .. } => out.push((offset, header.kind)),
            ScanItem::End => return out,
            ScanItem::Invalid { offset, reason } => panic!("{path:?} at {offset}: {reason}"),
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).unwrap();
        }
    }
}

fn inbox(cores: &[CoreIndex], user: &str) -> Vec<u32> {
    cores[0]
        .mailbox(user, "INBOX")
        .map(|m| m.messages().iter().map(|e| e.uid).collect())
        .unwrap_or_default()
}

/// Stores `n` messages one at a time (each its own batch) for alice, the second also for
/// bob; `flush` (a checkpoint) after `checkpoint_after` of them if given. Returns the
/// live index and the blob log's record end after each message.
fn workload(data: &Path, n: usize, checkpoint_after: Option<usize>) -> (Canon, Vec<u64>) {
    let data = data.to_path_buf();
    run_local(move || async move {
        let store = open_one(&data, cfg(&data, 0)).await;
        let mut ends = Vec::new();
        for i in 0..n {
            let filings = if i == 1 {
                vec![filing("alice"), filing("bob")]
            } else {
                vec![filing("alice")]
            };
            let meta_syncs = store.stats().meta.syncs;
            let blob_batches = store.stats().blob.batches;
            let (blob, uids, ticket) = store
                .store_message(&message(i), &filings, DATE)
                .await
                .unwrap();
            ticket.wait().await.unwrap();
            // Published when the ticket resolves, and readable.
            let got: Vec<u32> = store
                .mailbox_uids("alice", "INBOX")
                .iter()
                .map(|m| m.0)
                .collect();
            assert_eq!(got.last(), Some(&uids[0]));
            assert_eq!(store.read_blob(blob).unwrap(), message(i));
            if i > 1 {
                // Mailboxes exist: the blob log's one batch is the whole delivery.
                assert_eq!(store.stats().meta.syncs, meta_syncs, "message {i}");
                assert_eq!(store.stats().blob.batches, blob_batches + 1);
            }
            ends.push(records_end(&blob_path(&data)));
            if checkpoint_after == Some(i + 1) {
                store.flush().await.unwrap();
            }
        }
        (store.with_index(|i| i.canonical()), ends)
    })
}

fn records_end(path: &Path) -> u64 {
    records(path)
        .last()
        .map(|&(offset, _)| {
            let f = File::open(path).unwrap();
            let mut s = segment::Scanner::new(&f, path, offset).unwrap();
            match s.next_item().unwrap() {
                ScanItem::Record { .. } => s.position(),
                _ => unreachable!(),
            }
        })
        .unwrap_or(SEGMENT_HEADER_BYTES as u64)
}

#[test]
fn a_local_delivery_is_one_batch_and_recovers_from_the_blob_log() {
    let dir = tempfile::tempdir().unwrap();
    let (live, _) = workload(dir.path(), 4, None);
    // Blob, then its index records, in the blob log.
    let kinds: Vec<_> = records(&blob_path(dir.path()))
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    use record::RecordType::{Blob, MessageAppend};
    assert_eq!(
        kinds,
        vec![
            Blob,
            MessageAppend,
            Blob,
            MessageAppend,
            MessageAppend,
            Blob,
            MessageAppend,
            Blob,
            MessageAppend
        ]
    );
    let rec = recover(dir.path(), 1, &owner0).unwrap();
    assert_eq!(rec.cores[0].canonical(), live);
    assert_eq!(inbox(&rec.cores, "alice"), vec![1, 2, 3, 4]);
    assert_eq!(inbox(&rec.cores, "bob"), vec![1]);
    assert_eq!(rec.report.dropped_refs, 0);
    assert!(
        rec.report.truncated.is_empty(),
        "{:?}",
        rec.report.truncated
    );
}

#[test]
fn a_checkpoint_covers_the_blob_log_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let (live, _) = workload(dir.path(), 5, Some(3));
    let fast = recover(dir.path(), 1, &owner0).unwrap();
    let full = full_scan(dir.path(), 1, &owner0);
    assert_eq!(fast.report.checkpoint_generation, Some(1));
    assert_eq!(fast.cores[0].canonical(), live);
    assert_eq!(full.cores[0].canonical(), live);
    // Only messages 4 and 5 were read from the blob log (plus nothing from the meta log,
    // which holds only the two creates, before the checkpoint).
    assert_eq!(fast.report.meta_records, 2);
    assert_eq!(full.report.meta_records, 2 + 6);
    // A version-3 checkpoint (no blob-log positions) is refused with a reason.
    let ckpt = segment::core_dir(dir.path(), 0).join(checkpoint::file_name(1));
    let bytes = fs::read(&ckpt).unwrap();
    assert_eq!(
        bytes[SEGMENT_HEADER_BYTES + 8],
        record::RecordType::CheckpointV4 as u8
    );
    let mut old_format = bytes[..SEGMENT_HEADER_BYTES].to_vec();
    record::encode_record(
        &mut old_format,
        record::RecordType::CheckpointV3,
        &bytes[SEGMENT_HEADER_BYTES + record::RECORD_HEADER_BYTES..],
    );
    fs::write(&ckpt, old_format).unwrap();
    let old = recover(dir.path(), 1, &owner0).unwrap();
    assert_eq!(old.report.checkpoint_generation, None);
    assert!(
        old.report.checkpoint_note.contains("version 3"),
        "{}",
        old.report.checkpoint_note
    );
    assert_eq!(old.cores[0].canonical(), live);
}

#[test]
fn a_crash_at_every_byte_of_the_last_batch_loses_only_that_message() {
    for checkpoint_after in [None, Some(2)] {
        let built = tempfile::tempdir().unwrap();
        let (_, ends) = workload(built.path(), 3, checkpoint_after);
        let (start, end) = (ends[1], ends[2]);
        // Record boundaries of the last batch: blob, index record, end.
        let boundaries: Vec<u64> = records(&blob_path(built.path()))
            .into_iter()
            .map(|(offset, _)| offset)
            .filter(|&o| o >= start)
            .chain([end])
            .collect();
        assert_eq!(boundaries.len(), 3);
        for cut in start..=end {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(built.path(), dir.path());
            OpenOptions::new()
                .write(true)
                .open(blob_path(dir.path()))
                .unwrap()
                .set_len(cut)
                .unwrap();
            let rec = recover(dir.path(), 1, &owner0).unwrap();
            let what = format!("cut at {cut} of {start}..={end}, checkpoint {checkpoint_after:?}");
            let expect: &[u32] = if cut == end { &[1, 2, 3] } else { &[1, 2] };
            assert_eq!(inbox(&rec.cores, "alice"), expect, "{what}");
            assert_eq!(inbox(&rec.cores, "bob"), vec![1], "{what}");
            assert_eq!(rec.report.dropped_refs, 0, "{what}");
            assert_eq!(
                rec.report.checkpoint_generation,
                checkpoint_after.map(|_| 1),
                "{what}: {}",
                rec.report.checkpoint_note
            );
            let torn = usize::from(!boundaries.contains(&cut));
            assert_eq!(rec.report.truncated.len(), torn, "{what}");
            // The log goes on where it was cut: the next message gets UID 3 or 4, and
            // everything reads back.
            let data = dir.path().to_path_buf();
            let next = run_local(move || async move {
                let idx = rec.cores.into_iter().next().unwrap();
                let store = Store::open(cfg(&data, 0), idx).await.unwrap();
                let (_, uids, t) = store
                    .store_message(b"after\r\n", &[filing("alice")], DATE)
                    .await
                    .unwrap();
                t.wait().await.unwrap();
                for (_, blob) in store.mailbox_uids("alice", "INBOX") {
                    store.read_blob(blob).unwrap();
                }
                uids[0]
            });
            assert_eq!(next, expect.len() as u32 + 1, "{what}");
        }
    }
}

#[test]
fn a_failed_batch_files_nothing_and_service_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    run_local(move || async move {
        let store = open_one(&data, cfg(&data, 0)).await;
        let (_, _, t) = store
            .store_message(&message(0), &[filing("alice")], DATE)
            .await
            .unwrap();
        t.wait().await.unwrap();
        store.inject_fault(
            engine::LogKind::Blob,
            Some(commit::Fault {
                stage: commit::FaultStage::Sync,
                errno: libc::ENOSPC,
                batches: 1,
            }),
        );
        let (_, _, t) = store
            .store_message(&message(1), &[filing("alice")], DATE)
            .await
            .unwrap();
        assert!(t.wait().await.unwrap_err().is_disk_full());
        // A flag change pushed after the lost record is published (its number is skipped).
        store
            .set_flags("alice", "INBOX", 1, flags::SEEN)
            .await
            .unwrap();
        let (_, uids, t) = store
            .store_message(&message(2), &[filing("alice")], DATE)
            .await
            .unwrap();
        t.wait().await.unwrap();
        assert_eq!(uids, vec![3]);
        let got: Vec<u32> = store
            .mailbox_uids("alice", "INBOX")
            .iter()
            .map(|m| m.0)
            .collect();
        assert_eq!(got, vec![1, 3]);
        store.flush().await.unwrap();
    });
    let rec = recover(dir.path(), 1, &owner0).unwrap();
    assert_eq!(inbox(&rec.cores, "alice"), vec![1, 3]);
    assert_eq!(rec.report.checkpoint_generation, Some(1));
}

#[test]
fn inline_fdatasync_commits_and_recovers_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let live = run_local(move || async move {
        let mut c = cfg(&data, 0);
        c.sync_wait = SyncWait::Inline;
        let store = open_one(&data, c).await;
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let s = store.clone();
                glommio::spawn_local(async move {
                    let (_, _, t) = s
                        .store_message(&message(i), &[filing("alice")], DATE)
                        .await
                        .unwrap();
                    t.wait().await.unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        let st = store.stats();
        // Fsync::Always: every batch synced, and concurrent messages shared batches.
        assert_eq!(st.blob.syncs, st.blob.batches);
        assert!(st.blob.batches < 20, "{st:?}");
        store.with_index(|i| i.canonical())
    });
    let rec = recover(dir.path(), 1, &owner0).unwrap();
    assert_eq!(rec.cores[0].canonical(), live);
    assert_eq!(inbox(&rec.cores, "alice"), (1..=20).collect::<Vec<u32>>());
}

#[test]
fn a_version_1_blob_segment_gets_no_index_records_the_log_goes_on_in_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    // A store written by a build of format version 1: blobs only in the blob log.
    let old_blob = run_local({
        let data = data.clone();
        move || async move {
            let store = open_one(&data, cfg(&data, 0)).await;
            let blob = store.append_blob(&message(0)).await.unwrap();
            store
                .deliver(&[Delivery {
                    user: "alice".into(),
                    mailbox: "INBOX".into(),
                    blob,
                    internal_date: DATE,
                }])
                .await
                .unwrap();
            blob
        }
    });
    let seg1 = blob_path(&data);
    let mut bytes = fs::read(&seg1).unwrap();
    bytes[8..10].copy_from_slice(&1u16.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[0..36]);
    bytes[36..40].copy_from_slice(&crc.to_le_bytes());
    fs::write(&seg1, &bytes).unwrap();
    let before = records(&seg1);
    run_local({
        let data = data.clone();
        move || async move {
            let store = open_one(&data, cfg(&data, 0)).await;
            let (blob, uids, t) = store
                .store_message(&message(1), &[filing("alice")], DATE)
                .await
                .unwrap();
            t.wait().await.unwrap();
            assert_eq!(uids, vec![2]);
            assert_eq!(blob.segment, 2, "a new segment, not the version-1 one");
            assert_eq!(store.read_blob(old_blob).unwrap(), message(0));
        }
    });
    // The version-1 segment kept its records (cut to its end when sealed); the index
    // record is in segment 2, behind its blob.
    assert_eq!(records(&seg1), before);
    let seg2 = segment::segment_path(&segment::core_dir(&data, 0), SegmentKind::Blob, 2);
    let kinds: Vec<_> = records(&seg2).into_iter().map(|(_, k)| k).collect();
    assert_eq!(
        kinds,
        vec![record::RecordType::Blob, record::RecordType::MessageAppend]
    );
    let rec = recover(&data, 1, &owner0).unwrap();
    assert_eq!(inbox(&rec.cores, "alice"), vec![1, 2]);
}
