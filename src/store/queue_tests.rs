//! Store-level tests of the outbound queue (`store::queue`): the live API, recovery (plain,
//! torn tails, checkpoints, lost blobs, a change of the core count).

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use super::checkpoint;
use super::index::{CoreIndex, MAILBOX_SEQ_BITS};
use super::queue::{
    format_queue_id, DoneReason, NewQueueEntry, QueueEntry, RecipientChange, RecipientState,
};
use super::record::{self, MetaRecord, QueueRecipient, RecordType};
use super::segment::{self, SegmentKind};
use super::test_util::*;
use super::*;

fn recipients(n: usize) -> Vec<QueueRecipient> {
    (0..n)
        .map(|i| QueueRecipient {
            address: format!("user{i}@remote{}.test", i % 2),
            notify: None,
            orcpt: None,
        })
        .collect()
}

fn entry(blob: BlobRef, n: usize) -> NewQueueEntry {
    NewQueueEntry {
        blob,
        smtp_id: "A1".into(),
        sender: "alice@example.test".into(),
        recipients: recipients(n),
        smtputf8: false,
        body_8bitmime: true,
        arrival: 1_700_000_000,
        authenticated: Some("alice@example.test".into()),
        ret: None,
        envid: None,
    }
}

fn deferred(index: usize, attempts: u32, error: &str) -> RecipientChange {
    RecipientChange {
        index,
        state: RecipientState::Deferred,
        attempts,
        next_try: 1_700_000_300 * i64::from(attempts),
        flags: 0,
        error: error.into(),
    }
}

fn delivered(index: usize) -> RecipientChange {
    RecipientChange {
        index,
        state: RecipientState::Delivered,
        attempts: 1,
        next_try: 0,
        flags: 0,
        error: String::new(),
    }
}

/// Every core's queue entries, by id.
fn queue_of(cores: &[CoreIndex]) -> Vec<QueueEntry> {
    let mut v: Vec<QueueEntry> = cores
        .iter()
        .flat_map(|c| c.queue().entries().cloned())
        .collect();
    v.sort_by_key(|e| e.id);
    v
}

fn open_core(data: &Path, ncores: usize, core: usize) -> CoreIndex {
    recover(data, ncores, &owner0)
        .unwrap()
        .cores
        .swap_remove(core)
}

/// Enqueues three entries (one finished, one updated twice, one untouched) on a fresh
/// store of core 0; returns what the live index showed at the end.
fn workload(data: &Path, checkpoint_at_end: bool) -> Vec<QueueEntry> {
    let idx = open_core(data, 1, 0);
    let data = data.to_path_buf();
    run_local(move || async move {
        let store = Store::open(cfg(&data, 0), idx).await.unwrap();
        let mut ids = Vec::new();
        for (i, n) in [2usize, 3, 1].into_iter().enumerate() {
            let blob = store
                .append_blob(format!("Subject: q{i}\r\n\r\nbody\r\n").as_bytes())
                .await
                .unwrap();
            ids.push(store.enqueue(entry(blob, n)).await.unwrap());
        }
        assert_eq!(ids, vec![1, 2, 3], "ids ascend from 1 on core 0");
        store
            .queue_update(ids[0], 10, &[delivered(0), delivered(1)])
            .await
            .unwrap();
        store
            .queue_done(ids[0], DoneReason::Finished)
            .await
            .unwrap();
        let s1 = store
            .queue_update(
                ids[1],
                20,
                &[deferred(0, 1, "451 4.3.0 busy"), delivered(2)],
            )
            .await
            .unwrap();
        let s2 = store
            .queue_update(ids[1], 30, &[deferred(0, 2, "421 4.4.2 timeout")])
            .await
            .unwrap();
        assert_eq!((s1, s2), (1, 2));
        if checkpoint_at_end {
            store.flush().await.unwrap();
        }
        store.queue_entries()
    })
}

#[test]
fn enqueue_update_done_are_live_and_survive_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let live = workload(dir.path(), false);
    assert_eq!(live.iter().map(|e| e.id).collect::<Vec<_>>(), vec![2, 3]);
    let e = &live[0];
    assert_eq!(e.recipients[0].state, RecipientState::Deferred);
    assert_eq!(e.recipients[0].attempts, 2);
    assert_eq!(e.recipients[1].state, RecipientState::Pending);
    assert_eq!(e.recipients[2].state, RecipientState::Delivered);
    assert_eq!(e.last_error, "421 4.4.2 timeout");
    assert_eq!(e.last_try, 30);
    assert_eq!(e.seq_highest, 2);
    assert_eq!(e.authenticated.as_deref(), Some("alice@example.test"));
    assert!(e.body_8bitmime);
    // The blob is readable through the entry.
    let body = engine::read_blob_at(dir.path(), e.blob).unwrap();
    assert_eq!(body, b"Subject: q1\r\n\r\nbody\r\n");

    let rec = recover(dir.path(), 1, &owner0).unwrap();
    assert_eq!(queue_of(&rec.cores), live);
    assert_eq!(rec.report.queue_entries, 2);
    assert_eq!(rec.report.dropped_queue_entries, 0);
    // A new entry after the restart never reuses an id, not even the finished one's.
    assert_eq!(rec.cores[0].queue.seq_next, 4);
    // The read-only view (queue list, export) agrees.
    let ro = recover::load(dir.path(), 0, true).unwrap();
    let mut ro_entries: Vec<QueueEntry> = ro.global.queue().entries().cloned().collect();
    ro_entries.sort_by_key(|e| e.id);
    assert_eq!(ro_entries, live);
}

#[test]
fn checkpoint_holds_the_queue_and_matches_a_full_scan() {
    let dir = tempfile::tempdir().unwrap();
    let live = workload(dir.path(), true);
    assert_eq!(checkpoint::list(&segment::core_dir(dir.path(), 0)), vec![1]);
    let fast = recover(dir.path(), 1, &owner0).unwrap();
    assert_eq!(fast.report.checkpoint_generation, Some(1));
    assert_eq!(
        fast.report.meta_records, 0,
        "everything came from the checkpoint"
    );
    assert_eq!(queue_of(&fast.cores), live);
    assert_eq!(fast.cores[0].queue.seq_next, 4);
    let full = full_scan(dir.path(), 1, &owner0);
    assert_eq!(queue_of(&full.cores), live);

    // More work after the checkpoint: an update, a done and a new entry are scanned on top
    // of it; re-read updates the checkpoint holds are skipped by their sequence.
    let idx = fast.cores.into_iter().next().unwrap();
    let data = dir.path().to_path_buf();
    let live2 = run_local(move || async move {
        let store = Store::open(cfg(&data, 0), idx).await.unwrap();
        let s = store
            .queue_update(2, 40, &[delivered(0), delivered(1)])
            .await
            .unwrap();
        assert_eq!(s, 3, "the sequence continues after the checkpoint's");
        store.queue_done(3, DoneReason::Deleted).await.unwrap();
        let blob = store.append_blob(b"Subject: q4\r\n\r\n").await.unwrap();
        assert_eq!(store.enqueue(entry(blob, 1)).await.unwrap(), 4);
        store.queue_entries()
    });
    assert_eq!(live2.iter().map(|e| e.id).collect::<Vec<_>>(), vec![2, 4]);
    assert!(live2[0].is_complete());
    let fast = recover(dir.path(), 1, &owner0).unwrap();
    assert_eq!(fast.report.checkpoint_generation, Some(1));
    assert_eq!(fast.report.meta_records, 3);
    assert_eq!(queue_of(&fast.cores), live2);
    assert_eq!(queue_of(&full_scan(dir.path(), 1, &owner0).cores), live2);
}

/// The meta records of core 0's first segment, where each starts, and where the last ends
/// (the segment is zero-filled beyond).
fn meta_offsets(data: &Path) -> (PathBuf, Vec<(u64, MetaRecord)>, u64) {
    let path = segment::segment_path(&segment::core_dir(data, 0), SegmentKind::Meta, 1);
    let file = fs::File::open(&path).unwrap();
    let mut scanner =
        segment::Scanner::new(&file, &path, segment::SEGMENT_HEADER_BYTES as u64).unwrap();
    let mut out = Vec::new();
    let mut aligned = rkyv::util::AlignedVec::new();
    while let segment::ScanItem::Record {
        offset,
        header,
        payload,
    } = scanner.next_item().unwrap()
    {
        out.push((
            offset,
            record::decode_meta(header.kind, payload, &mut aligned).unwrap(),
        ));
    }
    let end = scanner.position();
    (path, out, end)
}

#[test]
fn a_torn_queue_record_is_cut_and_the_state_before_it_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let live = workload(dir.path(), false);
    let (path, records, end) = meta_offsets(dir.path());
    let (last_at, last) = records.last().cloned().unwrap();
    assert_eq!(last.record_type(), RecordType::QueueUpdate);
    let pristine = fs::read(&path).unwrap();
    for cut in last_at..end {
        fs::write(&path, &pristine).unwrap();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(cut).unwrap();
        let rec = recover(dir.path(), 1, &owner0).unwrap();
        let q = queue_of(&rec.cores);
        assert_eq!(q.len(), 2, "cut at {cut}");
        // Without its last update, entry 2 is as after its first one.
        let e = &q[0];
        assert_eq!(e.seq_highest, 1, "cut at {cut}");
        assert_eq!(e.recipients[0].attempts, 1);
        assert_eq!(e.last_error, "451 4.3.0 busy");
        assert_eq!(q[1], live[1]);
        if cut > last_at {
            assert_eq!(rec.report.truncated.len(), 1, "cut at {cut}");
        }
        assert_eq!(fs::metadata(&path).unwrap().len(), last_at);
    }
    // A zero tail (space written ahead) past the intact record is the end of the log.
    fs::write(&path, &pristine).unwrap();
    assert_eq!(
        queue_of(&recover(dir.path(), 1, &owner0).unwrap().cores),
        live
    );
    // A flipped byte in the record is cut the same way.
    for i in [last_at + 5, last_at + 13, end - 1] {
        let mut bad = pristine.clone();
        bad[i as usize] ^= 0x40;
        fs::write(&path, &bad).unwrap();
        let rec = recover(dir.path(), 1, &owner0).unwrap();
        assert_eq!(queue_of(&rec.cores)[0].seq_highest, 1, "flip at {i}");
    }
}

#[test]
fn a_queue_entry_whose_blob_was_lost_is_marked_done_and_never_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let idx = open_core(&data, 1, 0);
    let lost = run_local({
        let data = data.clone();
        move || async move {
            let store = Store::open(cfg(&data, 0), idx).await.unwrap();
            let kept = store.append_blob(b"Subject: kept\r\n\r\n").await.unwrap();
            store.enqueue(entry(kept, 1)).await.unwrap();
            let lost = store.append_blob(b"Subject: lost\r\n\r\n").await.unwrap();
            store.enqueue(entry(lost, 2)).await.unwrap();
            lost
        }
    });
    // The crash tore the second blob (its QueueAdd was durable).
    let blob_path = segment::segment_path(
        &segment::core_dir(&data, 0),
        SegmentKind::Blob,
        lost.segment,
    );
    let f = OpenOptions::new().write(true).open(&blob_path).unwrap();
    f.set_len(lost.offset + 7).unwrap();
    drop(f);
    // The read-only view drops it without writing anything.
    let ro = recover::load(&data, 0, true).unwrap();
    assert_eq!(ro.global.queue().len(), 1);
    let rec = recover(&data, 1, &owner0).unwrap();
    assert_eq!(rec.report.dropped_queue_entries, 1);
    assert_eq!(rec.report.tombstones_written, 1);
    assert_eq!(rec.report.queue_entries, 1);
    assert_eq!(
        queue_of(&rec.cores)
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        vec![1]
    );
    let (_, records, _) = meta_offsets(&data);
    assert!(matches!(
        records.last().map(|r| &r.1),
        Some(MetaRecord::QueueDone(d)) if d.id == 2 && d.reason == DoneReason::Lost as u8
    ));
    // A new blob at the very same position: entry 2 must not come back with its bytes.
    let idx = rec.cores.into_iter().next().unwrap();
    let reused = run_local({
        let data = data.clone();
        move || async move {
            let store = Store::open(cfg(&data, 0), idx).await.unwrap();
            let r = store
                .append_blob(&vec![b'N'; lost.len as usize])
                .await
                .unwrap();
            assert_eq!(store.enqueue(entry(r, 1)).await.unwrap(), 3);
            r
        }
    });
    assert_eq!((reused.segment, reused.offset), (lost.segment, lost.offset));
    for use_checkpoints in [true, false] {
        let again = recover_with(&data, 1, &owner0, RecoverOptions { use_checkpoints }).unwrap();
        assert_eq!(
            queue_of(&again.cores)
                .iter()
                .map(|e| e.id)
                .collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(again.report.tombstones_written, 0);
    }
}

#[test]
fn entries_of_a_removed_core_are_adopted_and_return_home() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    // Core 1 of 2 enqueues.
    let idx = open_core(&data, 2, 1);
    let id = run_local({
        let data = data.clone();
        move || async move {
            let store = Store::open(cfg(&data, 1), idx).await.unwrap();
            let blob = store.append_blob(b"Subject: c1\r\n\r\n").await.unwrap();
            store.enqueue(entry(blob, 2)).await.unwrap()
        }
    });
    assert_eq!(id, (1 << MAILBOX_SEQ_BITS) | 1);
    assert_eq!(format_queue_id(id), "1-1");
    // One core now: core 0 owns it and updates it in its own log.
    let rec = recover(&data, 1, &owner0).unwrap();
    assert_eq!(queue_of(&rec.cores).len(), 1);
    let idx = rec.cores.into_iter().next().unwrap();
    run_local({
        let data = data.clone();
        move || async move {
            let store = Store::open(cfg(&data, 0), idx).await.unwrap();
            store
                .queue_update(id, 5, &[deferred(1, 1, "450 mailbox busy")])
                .await
                .unwrap();
            // Core 0 allocates its own ids; they never collide with core 1's.
            let blob = store.append_blob(b"Subject: c0\r\n\r\n").await.unwrap();
            assert_eq!(store.enqueue(entry(blob, 1)).await.unwrap(), 1);
        }
    });
    // Two cores again: the entry is back on core 1 with core 0's update applied, and core
    // 1's next id follows its old one.
    let rec = recover(&data, 2, &owner0).unwrap();
    let on1: Vec<QueueEntry> = rec.cores[1].queue().entries().cloned().collect();
    assert_eq!(on1.len(), 1);
    assert_eq!(on1[0].id, id);
    assert_eq!(on1[0].recipients[1].state, RecipientState::Deferred);
    assert_eq!(on1[0].last_error, "450 mailbox busy");
    assert_eq!(rec.cores[1].queue.seq_next, 2);
    assert_eq!(rec.cores[0].queue.seq_next, 2);
    assert_eq!(rec.cores[0].queue().len(), 1);
}

#[test]
fn updates_and_done_refuse_unknown_entries_and_bad_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let idx = open_core(dir.path(), 1, 0);
    let data = dir.path().to_path_buf();
    run_local(move || async move {
        let store = Store::open(cfg(&data, 0), idx).await.unwrap();
        let blob = store.append_blob(b"Subject: x\r\n\r\n").await.unwrap();
        let id = store.enqueue(entry(blob, 2)).await.unwrap();
        assert!(matches!(
            store.queue_update(99, 1, &[delivered(0)]).await,
            Err(StoreError::NoSuchQueueEntry { .. })
        ));
        assert!(matches!(
            store.queue_update(id, 1, &[delivered(2)]).await,
            Err(StoreError::InvalidQueueEntry { .. })
        ));
        assert!(store.queue_update(id, 1, &[]).await.is_err());
        // Error texts are bounded.
        let long = "5".repeat(10_000);
        store
            .queue_update(id, 1, &[deferred(0, 1, &long)])
            .await
            .unwrap();
        let e = store.queue_entry(id).unwrap();
        assert_eq!(e.recipients[0].error.len(), queue::QUEUE_ERROR_BYTES_MAX);
        // Nothing goes in that has no recipient or no valid blob.
        let mut none = entry(blob, 1);
        none.recipients.clear();
        assert!(store.enqueue(none).await.is_err());
        let mut bad_blob = entry(blob, 1);
        bad_blob.blob.offset = 0;
        assert!(store.enqueue(bad_blob).await.is_err());
        store.queue_done(id, DoneReason::Deleted).await.unwrap();
        assert_eq!(store.queue_len(), 0);
        assert!(matches!(
            store.queue_done(id, DoneReason::Deleted).await,
            Err(StoreError::NoSuchQueueEntry { .. })
        ));
        assert!(store.queue_update(id, 1, &[delivered(0)]).await.is_err());
    });
}

#[test]
fn concurrent_updates_of_one_entry_get_distinct_ascending_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let idx = open_core(dir.path(), 1, 0);
    let data = dir.path().to_path_buf();
    let live = run_local(move || async move {
        let store = Store::open(cfg(&data, 0), idx).await.unwrap();
        let blob = store.append_blob(b"Subject: x\r\n\r\n").await.unwrap();
        let id = store.enqueue(entry(blob, 3)).await.unwrap();
        let (a, (b, c)) = futures_lite::future::zip(
            store.queue_update(id, 1, &[deferred(0, 1, "a")]),
            futures_lite::future::zip(
                store.queue_update(id, 2, &[deferred(1, 1, "b")]),
                store.queue_update(id, 3, &[deferred(2, 1, "c")]),
            ),
        )
        .await;
        assert_eq!((a.unwrap(), b.unwrap(), c.unwrap()), (1, 2, 3));
        store.queue_entries()
    });
    let e = &live[0];
    assert_eq!(e.seq_highest, 3);
    assert!(e
        .recipients
        .iter()
        .all(|r| r.state == RecipientState::Deferred));
    assert_eq!(e.last_error, "c");
    let rec = recover(dir.path(), 1, &owner0).unwrap();
    assert_eq!(queue_of(&rec.cores), live);
}

#[test]
fn an_older_checkpoint_format_is_not_used_and_queues_come_back_from_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let live = workload(dir.path(), true);
    // Rewrite the checkpoint's record type as version 2 (with a valid CRC).
    let path = segment::core_dir(dir.path(), 0).join(checkpoint::file_name(1));
    let bytes = fs::read(&path).unwrap();
    let (_, payload) = record::decode_record(&bytes[segment::SEGMENT_HEADER_BYTES..]).unwrap();
    let mut v2 = bytes[..segment::SEGMENT_HEADER_BYTES].to_vec();
    record::encode_record(&mut v2, RecordType::CheckpointV2, payload);
    fs::write(&path, v2).unwrap();
    let rec = recover(dir.path(), 1, &owner0).unwrap();
    assert_eq!(rec.report.checkpoint_generation, None);
    assert!(
        rec.report.checkpoint_note.contains("version 2"),
        "{}",
        rec.report.checkpoint_note
    );
    assert_eq!(queue_of(&rec.cores), live);
}
