//! Offline recovery: runs at start-up (synchronously, std::fs, before executors exist)
//! and, read-only, for `export`.
//!
//! 1. Load the newest complete checkpoint generation, if any and if every anchor still
//!    matches the logs (see [`super::checkpoint`]); otherwise start from nothing.
//! 2. Scan every `core-*` meta log (from the checkpoint positions, or from the start):
//!    CRC + rkyv validation of every record, once. A log stops at its first invalid
//!    record; for writable cores (index < ncores) the segment is truncated there and any
//!    later segment is set aside (renamed `*.seg.aside-<unix secs>`), all reported.
//! 3. Blob logs: sealed segments are valid up to their length (only the last segment of a
//!    log can have a torn tail, because a segment is sealed — cut to its durable end and
//!    synced — before the next one is created); the last segment is scanned from its
//!    start to find its valid end (a meta record does not prove its blob durable: blob and
//!    meta are committed concurrently), and truncated there if writable. The
//!    `MessageAppend` records of local deliveries, which follow their blob in the blob
//!    log, are read from the checkpoint's blob-log position on (sealed segments too) and
//!    join the meta records of step 2. A torn last batch loses its blob and its records
//!    together.
//! 4. Apply the records: creates first, then per mailbox in modseq order (messages,
//!    flags, expunges, keyword definitions, renames, special-use, deletes), then per user
//!    in sequence order (account init, subscriptions). Mailboxes are folded by id; the
//!    name map is built once every mailbox has its final name (see "Ownership and
//!    ordering" in `store`), so a deleted or renamed name can be reused by another
//!    mailbox whatever the order of the logs.
//! 5. Drop (and count) messages whose BlobRef is not inside a valid blob segment part.
//! 6. Make the drops permanent where they must be: for each dropped message whose blob
//!    position lies at or past where a writable blob log continues (so a new blob could
//!    land there), append a durable `Expunge` tombstone to the meta log of the mailbox's
//!    owner core, before any executor starts (see "Ownership and ordering" in `store`).
//! 7. Split the mailboxes by `owner(user)` into one [`CoreIndex`] per core.
//!
//! Outbound queue entries (`store::queue`) go through the same steps: step 4 applies their
//! adds, then their updates in per-entry sequence order, then their done records; step 5
//! drops an entry whose blob is not valid, and step 6 writes a durable `QueueDone` (reason
//! lost) for it when its blob position could be handed out again; step 7 gives each entry
//! to [`queue_owner`](super::queue::queue_owner) of its id.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rkyv::util::AlignedVec;

use super::checkpoint;
use super::index::{Applied, CoreIndex, LogPosition, LogTail, Mailbox, MAILBOX_SEQ_BITS};
use super::queue::{queue_owner, DoneReason, QueueEntry};
use super::record::{self, MetaRecord, RecordType};
use super::segment::{self, ScanItem, Scanner, SegmentHeader, SegmentKind, SEGMENT_HEADER_BYTES};
use super::{BlobRef, StoreError, SEGMENT_BYTES_LIMIT};

/// What recovery found and did.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    /// Messages in the recovered index (all cores).
    pub messages: u64,
    pub mailboxes: u64,
    /// Bytes of log records read and validated (checkpoints excluded).
    pub bytes_scanned: u64,
    /// Checkpoint bytes read.
    pub checkpoint_bytes: u64,
    /// Writable logs cut back or files set aside: (path, offset, why).
    pub truncated: Vec<(PathBuf, u64, String)>,
    /// Read-only logs that stop before their end (not modified): (path, offset, why).
    pub stopped: Vec<(PathBuf, u64, String)>,
    /// Messages dropped because their BlobRef is outside the valid part of a blob log.
    pub dropped_refs: u64,
    /// Expunge tombstones written for dropped messages whose blob position could be
    /// handed out again (a subset of `dropped_refs`).
    pub tombstones_written: u64,
    /// Valid records that do not apply (unknown mailbox, duplicate UID or mailbox).
    pub ignored_records: u64,
    /// Meta records read and validated.
    pub meta_records: u64,
    /// Outbound queue entries in the recovered index (all cores).
    pub queue_entries: u64,
    /// Queue entries dropped because their blob is outside the valid part of a blob log.
    pub dropped_queue_entries: u64,
    /// The checkpoint generation used, if any.
    pub checkpoint_generation: Option<u64>,
    /// Why no checkpoint was used (empty when one was).
    pub checkpoint_note: String,
    pub elapsed: Duration,
}

/// The result of [`recover`]: one index per core, in core order.
#[derive(Debug)]
pub struct Recovered {
    pub cores: Vec<CoreIndex>,
    pub report: RecoveryReport,
}

/// Knobs for [`recover_with`].
#[derive(Clone, Copy, Debug)]
pub struct RecoverOptions {
    /// Use a valid checkpoint to skip the meta records it covers (default true).
    pub use_checkpoints: bool,
}

impl Default for RecoverOptions {
    fn default() -> Self {
        RecoverOptions {
            use_checkpoints: true,
        }
    }
}

/// Offline recovery, sync, before executors start. Scans every core dir, validates every
/// record, truncates torn/corrupt tails of the logs of cores `0..ncores` (only those: they
/// will be appended to), builds the in-memory index and splits it by owner.
pub fn recover(
    data_dir: &Path,
    ncores: usize,
    owner: &dyn Fn(&str) -> usize,
) -> Result<Recovered, StoreError> {
    recover_with(data_dir, ncores, owner, RecoverOptions::default())
}

/// [`recover`] with options.
pub fn recover_with(
    data_dir: &Path,
    ncores: usize,
    owner: &dyn Fn(&str) -> usize,
    opts: RecoverOptions,
) -> Result<Recovered, StoreError> {
    if ncores == 0 || ncores > usize::from(u16::MAX) {
        return Err(StoreError::Config {
            reason: format!("ncores = {ncores}: must be in 1..=65535"),
        });
    }
    let loaded = load(data_dir, ncores, opts.use_checkpoints)?;
    let Loaded {
        mut global,
        mut report,
        mut tails,
        mut covered,
        covered_blob,
        mailbox_seq_max,
        generation,
        started,
        reusable_drops,
        reusable_queue_drops,
        queue_seq_max,
    } = loaded;
    write_tombstones(
        data_dir,
        ncores,
        owner,
        &reusable_drops,
        &reusable_queue_drops,
        &mut global,
        &mut tails,
        &mut covered,
        &mut report,
    )?;

    let mut seq_max_list: Vec<(u16, u64)> = mailbox_seq_max.iter().map(|(c, s)| (*c, *s)).collect();
    seq_max_list.sort_unstable();
    let mut queue_seq_list: Vec<(u16, u64)> = queue_seq_max.iter().map(|(c, s)| (*c, *s)).collect();
    queue_seq_list.sort_unstable();
    let mut cores: Vec<CoreIndex> = (0..ncores)
        .map(|i| {
            let core = i as u16;
            let (blob_tail, meta_tail) = tails.get(&core).copied().unwrap_or_default();
            CoreIndex {
                core,
                ncores: ncores as u16,
                mailbox_seq_next: mailbox_seq_max.get(&core).copied().unwrap_or(0) + 1,
                uid_validity_last: global.uid_validity_last,
                blob_tail: with_next_sequence(blob_tail),
                meta_tail: with_next_sequence(meta_tail),
                covered: covered.clone(),
                covered_blob: covered_blob.clone(),
                mailbox_seq_max: seq_max_list.clone(),
                generation,
                checkpoint_used: report.checkpoint_generation.unwrap_or(0),
                ..CoreIndex::default()
            }
        })
        .collect();
    for c in &mut cores {
        c.queue.seq_next = queue_seq_max.get(&c.core).copied().unwrap_or(0) + 1;
        c.queue.seq_max.clone_from(&queue_seq_list);
    }
    for (id, entry) in std::mem::take(&mut global.queue.entries) {
        cores[queue_owner(id, ncores)]
            .queue
            .entries
            .insert(id, entry);
    }
    for (_, mb) in global.mailboxes {
        let core = owner(&mb.user);
        if core >= ncores {
            return Err(StoreError::Owner {
                user: mb.user,
                core,
                ncores,
            });
        }
        cores[core].insert_mailbox(mb);
    }
    for (user, account) in global.accounts {
        let core = owner(&user);
        if core >= ncores {
            return Err(StoreError::Owner { user, core, ncores });
        }
        cores[core].accounts.insert(user, account);
    }
    for c in &mut cores {
        c.deleted_mailboxes.clone_from(&global.deleted_mailboxes);
    }
    report.elapsed = started.elapsed();
    Ok(Recovered { cores, report })
}

/// Step 6 (module doc): a durable `Expunge` for each dropped message whose blob position
/// could be handed out again, in the meta log of the mailbox's owner core. Updates the
/// mailboxes' modseqs, that log's tail and its covered position.
#[allow(clippy::too_many_arguments)]
fn write_tombstones(
    data_dir: &Path,
    ncores: usize,
    owner: &dyn Fn(&str) -> usize,
    drops: &[(u64, u32)],
    queue_drops: &[u64],
    global: &mut CoreIndex,
    tails: &mut HashMap<u16, (LogTail, LogTail)>,
    covered: &mut Vec<LogPosition>,
    report: &mut RecoveryReport,
) -> Result<(), StoreError> {
    let mut per_core: BTreeMap<u16, Vec<MetaRecord>> = BTreeMap::new();
    for &(mailbox_id, uid) in drops {
        let Some(mb) = global.mailboxes.get_mut(&mailbox_id) else {
            continue;
        };
        let core = owner(&mb.user);
        if core >= ncores {
            return Err(StoreError::Owner {
                user: mb.user.clone(),
                core,
                ncores,
            });
        }
        let modseq = mb.modseq_highest + 1;
        mb.modseq_highest = modseq;
        mb.reset_allocation();
        per_core
            .entry(core as u16)
            .or_default()
            .push(MetaRecord::Expunge(record::Expunge {
                mailbox_id,
                uid,
                modseq,
            }));
    }
    for &id in queue_drops {
        if global.queue.entries.remove(&id).is_none() {
            continue;
        }
        per_core
            .entry(queue_owner(id, ncores) as u16)
            .or_default()
            .push(MetaRecord::QueueDone(record::QueueDone {
                id,
                reason: DoneReason::Lost as u8,
            }));
    }
    for (core, records) in per_core {
        let dir = segment::core_dir(data_dir, core);
        let tail = &mut tails.entry(core).or_default().1;
        append_durably(&dir, core, tail, &records)?;
        report.tombstones_written += records.len() as u64;
        let pos = LogPosition::from_tail(core, tail);
        match covered.iter_mut().find(|p| p.core == core) {
            Some(p) => *p = pos,
            None => covered.push(pos),
        }
    }
    Ok(())
}

/// Appends meta records at `tail` (a new segment if the log has none) with std::fs and
/// fdatasyncs them; advances `tail`. On failure the file is cut back (best effort).
fn append_durably(
    dir: &Path,
    core: u16,
    tail: &mut LogTail,
    records: &[MetaRecord],
) -> Result<(), StoreError> {
    let mut buf = Vec::new();
    let mut scratch = AlignedVec::new();
    let mut last = None;
    for r in records {
        let off = buf.len() as u64;
        let crc = r
            .encode(&mut buf, &mut scratch)
            .map_err(|reason| StoreError::Encode {
                what: r.type_name(),
                reason,
            })?;
        last = Some((off, crc));
    }
    if tail.segment == 0 || tail.end + buf.len() as u64 > SEGMENT_BYTES_LIMIT {
        let seq = tail.next_sequence.max(tail.segment + 1).max(1);
        let (_, header) = segment::create_segment(dir, SegmentKind::Meta, core, seq, true)?;
        *tail = LogTail {
            segment: seq,
            nonce: header.nonce,
            end: SEGMENT_HEADER_BYTES as u64,
            next_sequence: seq + 1,
            last_record: None,
        };
    }
    let path = segment::segment_path(dir, SegmentKind::Meta, tail.segment);
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::io("open", &path, e))?;
    if let Err(e) = file
        .write_all_at(&buf, tail.end)
        .and_then(|()| file.sync_data())
    {
        let _ = file.set_len(tail.end);
        return Err(StoreError::io("write tombstones to", &path, e));
    }
    tail.last_record = last.map(|(off, crc)| (tail.end + off, crc));
    tail.end += buf.len() as u64;
    Ok(())
}

fn with_next_sequence(mut t: LogTail) -> LogTail {
    t.next_sequence = t.next_sequence.max(t.segment + 1).max(1);
    t
}

/// The whole store folded into one index (used by recovery and by export).
pub(crate) struct Loaded {
    pub(crate) global: CoreIndex,
    pub(crate) report: RecoveryReport,
    /// (blob, meta) tails of every core dir found.
    pub(crate) tails: HashMap<u16, (LogTail, LogTail)>,
    /// Every meta log's end position.
    pub(crate) covered: Vec<LogPosition>,
    /// Every blob log's end position.
    pub(crate) covered_blob: Vec<LogPosition>,
    /// Highest mailbox-id sequence per creating core.
    pub(crate) mailbox_seq_max: HashMap<u16, u64>,
    pub(crate) generation: u64,
    pub(crate) started: Instant,
    /// Dropped messages whose blob position a writable log could hand out again:
    /// (mailbox id, UID), in mailbox then UID order.
    pub(crate) reusable_drops: Vec<(u64, u32)>,
    /// Queue entries whose blob is not valid and whose position a writable log could
    /// hand out again (still in `global.queue`: `recover` marks them done and removes them).
    pub(crate) reusable_queue_drops: Vec<u64>,
    /// Highest queue id sequence per creating core (done entries included).
    pub(crate) queue_seq_max: HashMap<u16, u64>,
}

/// Scans and folds everything. Cores `< writable` get their torn tails truncated;
/// `writable = 0` is strictly read-only.
pub(crate) fn load(
    data_dir: &Path,
    writable: usize,
    use_checkpoints: bool,
) -> Result<Loaded, StoreError> {
    let started = Instant::now();
    let mut report = RecoveryReport::default();
    let core_dirs = segment::list_core_dirs(data_dir)?;

    // 1. Checkpoint.
    let mut global = CoreIndex::default();
    let mut starts: HashMap<u16, LogPosition> = HashMap::new();
    let mut blob_starts: HashMap<u16, LogPosition> = HashMap::new();
    let mut checkpoint_modseq: HashMap<u64, u64> = HashMap::new();
    let mut checkpoint_user_seq: HashMap<String, u64> = HashMap::new();
    let mut checkpoint_seq_max: HashMap<u16, u64> = HashMap::new();
    let mut queue_seq_max: HashMap<u16, u64> = HashMap::new();
    let (ckpt, generation_max) = if use_checkpoints {
        checkpoint::load_newest(&core_dirs)
    } else {
        (
            Err("checkpoints not used (disabled by the caller)".to_string()),
            0,
        )
    };
    match ckpt {
        Ok(set) => {
            report.checkpoint_generation = Some(set.generation);
            report.checkpoint_bytes = set.bytes;
            checkpoint_seq_max = set.mailbox_seq_max;
            global.uid_validity_last = global.uid_validity_last.max(set.uid_validity_last);
            for mb in set.mailboxes {
                checkpoint_modseq.insert(mb.id, mb.modseq_highest);
                global.uid_validity_last = global.uid_validity_last.max(mb.uid_validity);
                global.mailboxes.insert(mb.id, mb);
            }
            for (user, account) in set.accounts {
                checkpoint_user_seq.insert(user.clone(), account.seq_highest);
                global.accounts.insert(user, account);
            }
            global.deleted_mailboxes = set.deleted_mailboxes;
            for e in set.queue {
                global.queue.entries.insert(e.id, e);
            }
            queue_seq_max = set.queue_seq_max;
            starts = set.starts;
            blob_starts = set.blob_starts;
        }
        Err(note) => report.checkpoint_note = note,
    }
    let generation = generation_max + 1;

    // 2. Meta logs.
    let mut creates: Vec<record::MailboxCreate> = Vec::new();
    let mut ops: Vec<MetaRecord> = Vec::new();
    let mut user_ops: Vec<MetaRecord> = Vec::new();
    let mut queue_ops: Vec<MetaRecord> = Vec::new();
    let mut tails: HashMap<u16, (LogTail, LogTail)> = HashMap::new();
    let mut covered = Vec::new();
    let mut aligned = AlignedVec::new();
    for (core, dir) in &core_dirs {
        let writable_core = usize::from(*core) < writable;
        let start = starts.get(core).copied();
        let tail = scan_meta_log(
            dir,
            *core,
            writable_core,
            start,
            &mut report,
            &mut aligned,
            &mut |rec| match rec {
                MetaRecord::MailboxCreate(c) => creates.push(c),
                MetaRecord::AccountInit(_) | MetaRecord::Subscription(_) => user_ops.push(rec),
                MetaRecord::QueueAdd(_) | MetaRecord::QueueUpdate(_) | MetaRecord::QueueDone(_) => {
                    queue_ops.push(rec)
                }
                other => ops.push(other),
            },
        )?;
        covered.push(LogPosition::from_tail(*core, &tail));
        tails.entry(*core).or_default().1 = tail;
    }

    // 3. Blob logs: sealed segments valid by length, the last one scanned; the
    //    MessageAppend records of local deliveries read from the checkpoint positions.
    let mut valid_end: HashMap<(u16, u32), u64> = HashMap::new();
    let mut covered_blob = Vec::new();
    for (core, dir) in &core_dirs {
        let writable_core = usize::from(*core) < writable;
        let tail = scan_blob_log(
            dir,
            *core,
            writable_core,
            blob_starts.get(core).copied(),
            &mut valid_end,
            &mut report,
            &mut aligned,
            &mut |rec| ops.push(rec),
        )?;
        covered_blob.push(LogPosition::from_tail(*core, &tail));
        tails.entry(*core).or_default().0 = tail;
    }

    // 4. Apply.
    let mut mailbox_seq_max: HashMap<u16, u64> = checkpoint_seq_max;
    let seq_mask = (1u64 << MAILBOX_SEQ_BITS) - 1;
    for id in global.mailboxes.keys() {
        let e = mailbox_seq_max
            .entry((id >> MAILBOX_SEQ_BITS) as u16)
            .or_default();
        *e = (*e).max(id & seq_mask);
    }
    for c in &creates {
        let e = mailbox_seq_max
            .entry((c.mailbox_id >> MAILBOX_SEQ_BITS) as u16)
            .or_default();
        *e = (*e).max(c.mailbox_id & seq_mask);
        global.uid_validity_last = global.uid_validity_last.max(c.uid_validity);
        if global.deleted_mailboxes.contains(&c.mailbox_id) {
            report.ignored_records += 1; // deleted before the checkpoint
            continue;
        }
        if global.mailboxes.contains_key(&c.mailbox_id) {
            continue; // already in the checkpoint
        }
        // By id only: names are mapped once every rename and delete is applied.
        global.mailboxes.insert(c.mailbox_id, Mailbox::new(c));
    }
    ops.sort_by_key(|r| (r.mailbox_id().unwrap_or(0), r.modseq()));
    let mut deferred: Vec<u32> = Vec::new();
    let mut current: Option<u64> = None;
    for rec in &ops {
        let Some(id) = rec.mailbox_id() else {
            continue;
        };
        if current != Some(id) {
            if let Some(prev) = current {
                if let Some(mb) = global.mailboxes.get_mut(&prev) {
                    mb.expunge_all(&mut deferred);
                }
            }
            deferred.clear();
            current = Some(id);
        }
        if let Some(&covered_modseq) = checkpoint_modseq.get(&id) {
            if rec.modseq() <= covered_modseq {
                continue; // re-read record already reflected in the checkpoint
            }
        }
        match global.mailboxes.get_mut(&id) {
            Some(mb) => match mb.apply(rec, Some(&mut deferred)) {
                Applied::Done => {}
                Applied::Ignored => report.ignored_records += 1,
                Applied::Deleted => {
                    // Records after the delete (none are written live) find no mailbox.
                    global.remove_mailbox(id);
                    deferred.clear();
                }
            },
            None => report.ignored_records += 1,
        }
    }
    if let Some(prev) = current {
        if let Some(mb) = global.mailboxes.get_mut(&prev) {
            mb.expunge_all(&mut deferred);
        }
    }
    drop(ops);
    user_ops.sort_by(|a, b| (a.user(), a.modseq()).cmp(&(b.user(), b.modseq())));
    for rec in &user_ops {
        let Some(user) = rec.user() else {
            continue;
        };
        let seq = rec.modseq();
        if seq > 0 && checkpoint_user_seq.get(user).is_some_and(|&s| seq <= s) {
            continue; // re-read record already reflected in the checkpoint
        }
        if !global.accounts.contains_key(user) {
            global.accounts.insert(user.to_owned(), Default::default());
        }
        if let Some(account) = global.accounts.get_mut(user) {
            account.apply(rec);
        }
    }
    drop(user_ops);
    for account in global.accounts.values_mut() {
        account.reset_allocation();
    }

    apply_queue(&mut global, queue_ops, &mut queue_seq_max, &mut report);

    // 5. Drop references outside valid blob data; note those whose position could be
    //    handed out again (at or past where a writable blob log continues).
    let reusable = |b: &BlobRef| -> bool {
        if usize::from(b.core) >= writable {
            return false;
        }
        // The writer continues at (segment, end) and then creates `next_sequence`,
        // `next_sequence + 1`, ... (names of set-aside files are never reused).
        let t = tails.get(&b.core).map(|t| t.0).unwrap_or_default();
        let next_new = t.next_sequence.max(t.segment + 1).max(1);
        (t.segment != 0 && b.segment == t.segment && b.end() > t.end) || b.segment >= next_new
    };
    let mut reusable_drops = Vec::new();
    let mut ids: Vec<u64> = global.mailboxes.keys().copied().collect();
    ids.sort_unstable();
    for id in ids {
        let Some(mb) = global.mailboxes.get_mut(&id) else {
            continue;
        };
        let before = mb.messages.len();
        mb.messages.retain(|m| {
            let b = m.blob();
            let keep = b.offset >= SEGMENT_HEADER_BYTES as u64
                && valid_end
                    .get(&(b.core, b.segment))
                    .is_some_and(|&end| b.end() <= end);
            if !keep && reusable(&b) {
                reusable_drops.push((id, m.uid));
            }
            keep
        });
        report.dropped_refs += (before - mb.messages.len()) as u64;
        if mb.messages.len() != before {
            mb.recount();
        }
        mb.messages.shrink_to_fit();
        mb.reset_allocation();
    }
    let queue_ids: Vec<u64> = global.queue.entries.keys().copied().collect();
    let mut reusable_queue_drops = Vec::new();
    for id in queue_ids {
        let Some(b) = global.queue.entries.get(&id).map(|e| e.blob) else {
            continue;
        };
        let valid = b.offset >= SEGMENT_HEADER_BYTES as u64
            && valid_end
                .get(&(b.core, b.segment))
                .is_some_and(|&end| b.end() <= end);
        if valid {
            continue;
        }
        report.dropped_queue_entries += 1;
        if reusable(&b) {
            // Kept until `recover` has made the drop durable.
            reusable_queue_drops.push(id);
        } else {
            global.queue.entries.remove(&id);
        }
    }
    report.ignored_records += global.rebuild_names();
    report.mailboxes = global.mailboxes.len() as u64;
    report.messages = global.message_count() as u64;
    report.queue_entries = (global.queue.len() - reusable_queue_drops.len()) as u64;
    report.elapsed = started.elapsed();
    Ok(Loaded {
        global,
        report,
        tails,
        covered,
        covered_blob,
        mailbox_seq_max,
        generation,
        started,
        reusable_drops,
        reusable_queue_drops,
        queue_seq_max,
    })
}

/// Step 3 for the outbound queue: adds, then updates in per-entry sequence order (those a
/// checkpoint already holds are skipped by their sequence), then done records.
fn apply_queue(
    global: &mut CoreIndex,
    mut ops: Vec<MetaRecord>,
    seq_max: &mut HashMap<u16, u64>,
    report: &mut RecoveryReport,
) {
    let seq_mask = (1u64 << MAILBOX_SEQ_BITS) - 1;
    for e in global.queue.entries.values() {
        let m = seq_max
            .entry((e.id >> MAILBOX_SEQ_BITS) as u16)
            .or_default();
        *m = (*m).max(e.id & seq_mask);
    }
    let rank = |r: &MetaRecord| match r {
        MetaRecord::QueueAdd(a) => (0u8, a.id, 0u64),
        MetaRecord::QueueUpdate(u) => (1, u.id, u.seq),
        MetaRecord::QueueDone(d) => (2, d.id, 0),
        _ => (3, 0, 0),
    };
    ops.sort_by_key(rank);
    for rec in &ops {
        match rec {
            MetaRecord::QueueAdd(a) => {
                let m = seq_max
                    .entry((a.id >> MAILBOX_SEQ_BITS) as u16)
                    .or_default();
                *m = (*m).max(a.id & seq_mask);
                if global.queue.entries.contains_key(&a.id) {
                    continue; // in the checkpoint already (or a duplicate)
                }
                global.queue.entries.insert(a.id, QueueEntry::from_add(a));
            }
            MetaRecord::QueueUpdate(u) => match global.queue.entries.get_mut(&u.id) {
                // A stale sequence is one the checkpoint holds: not an error.
                Some(e) => {
                    e.apply_update(u);
                }
                None => report.ignored_records += 1,
            },
            MetaRecord::QueueDone(d) if global.queue.entries.remove(&d.id).is_none() => {
                report.ignored_records += 1;
            }
            _ => {}
        }
    }
}

/// Where a log stops and why.
struct Stop {
    segment_index: usize,
    path: PathBuf,
    offset: u64,
    why: String,
}

/// Scans one core's meta log from `start` (or its beginning), feeding every valid record
/// to `sink`; handles the tail as described in the module doc. Returns where it continues.
fn scan_meta_log(
    dir: &Path,
    core: u16,
    writable: bool,
    start: Option<LogPosition>,
    report: &mut RecoveryReport,
    aligned: &mut AlignedVec,
    sink: &mut dyn FnMut(MetaRecord),
) -> Result<LogTail, StoreError> {
    let (seqs, highest) = segment::list_segments(dir, SegmentKind::Meta)?;
    let mut tail = LogTail {
        next_sequence: highest + 1,
        ..LogTail::default()
    };
    let first = match start {
        Some(p) if p.segment > 0 => seqs.iter().position(|&s| s == p.segment).ok_or_else(|| {
            StoreError::corrupt(dir, 0, format!("checkpoint segment {} vanished", p.segment))
        })?,
        _ => 0,
    };
    let mut stop: Option<Stop> = None;
    let mut prev_seq: Option<u32> = None;
    for (i, &seq) in seqs.iter().enumerate().skip(first) {
        let path = segment::segment_path(dir, SegmentKind::Meta, seq);
        if let Some(p) = prev_seq {
            if seq != p + 1 {
                report.stopped.push((
                    path.clone(),
                    0,
                    format!("meta segments {} to {} are missing", p + 1, seq - 1),
                ));
            }
        }
        prev_seq = Some(seq);
        let file = File::open(&path).map_err(|e| StoreError::io("open", &path, e))?;
        let header = match SegmentHeader::read_expect(&file, &path, SegmentKind::Meta, core, seq) {
            Ok(h) => h,
            Err(e @ StoreError::Version { .. }) => return Err(e),
            Err(StoreError::Corrupt { reason, .. }) => {
                stop = Some(Stop {
                    segment_index: i,
                    path,
                    offset: 0,
                    why: format!("bad segment header: {reason}"),
                });
                break;
            }
            Err(e) => return Err(e),
        };
        let from = match start {
            Some(p) if p.segment == seq => p.end,
            _ => SEGMENT_HEADER_BYTES as u64,
        };
        tail.segment = seq;
        tail.nonce = header.nonce;
        tail.end = from;
        tail.last_record = match start {
            Some(p) if p.segment == seq && p.last_record_offset > 0 => {
                Some((p.last_record_offset, p.last_record_crc))
            }
            _ => None,
        };
        let mut scanner = Scanner::new(&file, &path, from)?;
        let mut bad: Option<(u64, String)> = None;
        loop {
            match scanner.next_item()? {
                ScanItem::Record {
                    offset,
                    header,
                    payload,
                } => match record::decode_meta(header.kind, payload, aligned) {
                    Ok(rec) => {
                        report.meta_records += 1;
                        tail.last_record = Some((offset, header.crc));
                        sink(rec);
                    }
                    Err(why) => {
                        bad = Some((offset, why));
                        break;
                    }
                },
                ScanItem::End => break,
                ScanItem::Invalid { offset, reason } => {
                    bad = Some((offset, reason.to_string()));
                    break;
                }
            }
        }
        report.bytes_scanned += scanner.bytes_read;
        match bad {
            None => tail.end = scanner.position(),
            Some((offset, why)) => {
                tail.end = offset;
                stop = Some(Stop {
                    segment_index: i,
                    path,
                    offset,
                    why,
                });
                break;
            }
        }
    }
    if let Some(stop) = stop {
        let later: Vec<u32> = seqs[stop.segment_index + 1..].to_vec();
        let header_bad = stop.offset == 0;
        if writable {
            if header_bad {
                set_aside_or_remove(dir, &stop.path, &stop.why, report)?;
                // The log continues in a new segment after the last good one.
                tail = LogTail {
                    next_sequence: tail.next_sequence,
                    ..LogTail::default()
                };
                if stop.segment_index > 0 {
                    // Continue in the previous (good) segment.
                    let prev = seqs[stop.segment_index - 1];
                    tail = reopen_tail(dir, SegmentKind::Meta, core, prev, tail.next_sequence)?;
                }
            } else {
                truncate_file(&stop.path, stop.offset)?;
                report
                    .truncated
                    .push((stop.path.clone(), stop.offset, stop.why.clone()));
            }
            for seq in later {
                let p = segment::segment_path(dir, SegmentKind::Meta, seq);
                set_aside(
                    &p,
                    &format!(
                        "follows the invalid record at {}:{}",
                        stop.path.display(),
                        stop.offset
                    ),
                    report,
                )?;
            }
            segment::sync_dir(dir)?;
        } else {
            report.stopped.push((stop.path, stop.offset, stop.why));
        }
    }
    Ok(tail)
}

/// Re-derives the tail of a segment known to be valid up to its end (the segment before a
/// set-aside one): scans it completely.
fn reopen_tail(
    dir: &Path,
    kind: SegmentKind,
    core: u16,
    seq: u32,
    next_sequence: u32,
) -> Result<LogTail, StoreError> {
    let path = segment::segment_path(dir, kind, seq);
    let file = File::open(&path).map_err(|e| StoreError::io("open", &path, e))?;
    let header = SegmentHeader::read_expect(&file, &path, kind, core, seq)?;
    let mut scanner = Scanner::new(&file, &path, SEGMENT_HEADER_BYTES as u64)?;
    let mut last = None;
    while let ScanItem::Record { offset, header, .. } = scanner.next_item()? {
        last = Some((offset, header.crc));
    }
    Ok(LogTail {
        segment: seq,
        nonce: header.nonce,
        end: scanner.position(),
        next_sequence,
        last_record: last,
    })
}

/// Blob log of one core: records each segment's valid end in `valid_end`, feeds the
/// `MessageAppend` records at or after `start` (the checkpoint's position; None: from the
/// beginning) to `sink`; returns where the log continues.
#[allow(clippy::too_many_arguments)]
fn scan_blob_log(
    dir: &Path,
    core: u16,
    writable: bool,
    start: Option<LogPosition>,
    valid_end: &mut HashMap<(u16, u32), u64>,
    report: &mut RecoveryReport,
    aligned: &mut AlignedVec,
    sink: &mut dyn FnMut(MetaRecord),
) -> Result<LogTail, StoreError> {
    let (mut seqs, highest) = segment::list_segments(dir, SegmentKind::Blob)?;
    let mut tail = LogTail {
        next_sequence: highest + 1,
        ..LogTail::default()
    };
    // A last segment holding no more than a (torn) header was being created at a crash.
    if let (true, Some(&last)) = (writable, seqs.last()) {
        let path = segment::segment_path(dir, SegmentKind::Blob, last);
        let len = fs::metadata(&path)
            .map_err(|e| StoreError::io("stat", &path, e))?
            .len();
        if len <= SEGMENT_HEADER_BYTES as u64 {
            let file = File::open(&path).map_err(|e| StoreError::io("open", &path, e))?;
            match SegmentHeader::read_expect(&file, &path, SegmentKind::Blob, core, last) {
                Ok(_) => {}
                Err(e @ StoreError::Version { .. }) => return Err(e),
                Err(e) => {
                    set_aside_or_remove(dir, &path, &e.to_string(), report)?;
                    seqs.pop();
                }
            }
        }
    }
    let Some(&last) = seqs.last() else {
        return Ok(tail);
    };
    for &seq in &seqs {
        let path = segment::segment_path(dir, SegmentKind::Blob, seq);
        let file = File::open(&path).map_err(|e| StoreError::io("open", &path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| StoreError::io("stat", &path, e))?
            .len();
        let header = match SegmentHeader::read_expect(&file, &path, SegmentKind::Blob, core, seq) {
            Ok(h) => h,
            Err(e @ StoreError::Version { .. }) => return Err(e),
            Err(StoreError::Corrupt { reason, .. }) => {
                let why = format!("bad segment header: {reason}");
                if writable && seq == last {
                    // Damaged header on the active segment: appends go to a new one.
                    set_aside(&path, &why, report)?;
                    segment::sync_dir(dir)?;
                } else {
                    report.stopped.push((path, 0, why));
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        // Index records before this offset are in the checkpoint.
        let records_from = match start {
            Some(p) if p.segment > seq => u64::MAX,
            Some(p) if p.segment == seq => p.end,
            _ => SEGMENT_HEADER_BYTES as u64,
        };
        if seq != last {
            // Sealed: valid up to its length; read only for its index records.
            valid_end.insert((core, seq), file_len);
            if records_from < file_len {
                let mut scanner = Scanner::new(&file, &path, records_from)?;
                loop {
                    let (offset, why) = match scanner.next_item()? {
                        ScanItem::Record {
                            offset,
                            header,
                            payload,
                        } => match blob_log_record(header.kind, payload, aligned) {
                            Ok(Some(rec)) => {
                                report.meta_records += 1;
                                sink(rec);
                                continue;
                            }
                            Ok(None) => continue,
                            Err(why) => (offset, why),
                        },
                        ScanItem::End => break,
                        ScanItem::Invalid { offset, reason } => (offset, reason.to_string()),
                    };
                    // Damage inside a sealed segment: what follows is not read (and
                    // not cut: its blobs are served as long as they verify).
                    report.stopped.push((path.clone(), offset, why));
                    break;
                }
                report.bytes_scanned += scanner.bytes_read;
            }
            continue;
        }
        // The last segment: scanned from its start (an index record in another log does
        // not prove a blob durable, see the module doc).
        let from = SEGMENT_HEADER_BYTES as u64;
        let mut scanner = Scanner::new(&file, &path, from)?;
        let mut last_record = None;
        let stop = loop {
            match scanner.next_item()? {
                ScanItem::Record {
                    offset,
                    header,
                    payload,
                } => match blob_log_record(header.kind, payload, aligned) {
                    Ok(rec) => {
                        if let Some(rec) = rec.filter(|_| offset >= records_from) {
                            report.meta_records += 1;
                            sink(rec);
                        }
                        last_record = Some((offset, header.crc));
                    }
                    Err(why) => break Some((offset, why)),
                },
                ScanItem::End => break None,
                ScanItem::Invalid { offset, reason } => break Some((offset, reason.to_string())),
            }
        };
        report.bytes_scanned += scanner.bytes_read;
        let end = match stop {
            None => scanner.position(),
            Some((offset, why)) => {
                if writable {
                    truncate_file(&path, offset)?;
                    report.truncated.push((path.clone(), offset, why));
                } else {
                    report.stopped.push((path.clone(), offset, why));
                }
                offset
            }
        };
        valid_end.insert((core, seq), end);
        tail.segment = seq;
        tail.nonce = header.nonce;
        tail.end = end;
        tail.last_record = last_record;
    }
    Ok(tail)
}

/// A record of a blob log: a blob (None) or the `MessageAppend` of a local delivery.
fn blob_log_record(
    kind: RecordType,
    payload: &[u8],
    aligned: &mut AlignedVec,
) -> Result<Option<MetaRecord>, String> {
    match kind {
        RecordType::Blob => Ok(None),
        RecordType::MessageAppend => record::decode_meta(kind, payload, aligned).map(Some),
        other => Err(format!("{other:?} record in a blob log")),
    }
}

fn truncate_file(path: &Path, len: u64) -> Result<(), StoreError> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| StoreError::io("open for truncation", path, e))?;
    f.set_len(len)
        .map_err(|e| StoreError::io("truncate", path, e))?;
    f.sync_all().map_err(|e| StoreError::io("fsync", path, e))
}

/// Renames a damaged segment out of the way (keeping it for inspection).
fn set_aside(path: &Path, why: &str, report: &mut RecoveryReport) -> Result<(), StoreError> {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".aside-{}", crate::time::unix_now()));
    let to = PathBuf::from(name);
    fs::rename(path, &to).map_err(|e| StoreError::io("rename", path, e))?;
    report.truncated.push((
        path.to_path_buf(),
        0,
        format!("set aside as {}: {why}", to.display()),
    ));
    Ok(())
}

/// A segment whose header is torn: removed if it holds nothing but the torn header,
/// otherwise set aside.
fn set_aside_or_remove(
    dir: &Path,
    path: &Path,
    why: &str,
    report: &mut RecoveryReport,
) -> Result<(), StoreError> {
    let len = fs::metadata(path)
        .map_err(|e| StoreError::io("stat", path, e))?
        .len();
    if len <= SEGMENT_HEADER_BYTES as u64 {
        fs::remove_file(path).map_err(|e| StoreError::io("remove", path, e))?;
        report.truncated.push((
            path.to_path_buf(),
            0,
            format!("removed torn new segment: {why}"),
        ));
    } else {
        set_aside(path, why, report)?;
    }
    segment::sync_dir(dir)
}
