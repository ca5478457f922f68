//! Checkpoints: an rkyv snapshot of one core's index plus the log positions it covers
//! (meta logs, and blob logs, which hold the `MessageAppend` records of local
//! deliveries), so recovery reads the snapshot (validated once) and scans only the
//! records after those positions.
//!
//! File: `core-<ii>/checkpoint-<generation, 20 digits>.ckpt`, a segment header (kind
//! checkpoint) followed by one framed record (CRC-checked) whose payload is a
//! [`CheckpointData`] archive. The record type is the checkpoint format version:
//! `CheckpointV4` (version 4: mailboxes with keywords, special-use and counters, accounts,
//! deleted mailbox ids, the outbound queue with its id counters, and the positions of
//! both kinds of log) is what this build writes; a version-1, -2 or -3 file
//! (`Checkpoint`, `CheckpointV2`, `CheckpointV3`: version 3 had no blob-log positions) is
//! not used (recovery notes why and scans the meta logs from their start, which rebuilds
//! everything), and an older build rejects a newer file the same way. Written to a `.tmp` file, fsynced, renamed, directory fsynced.
//!
//! Running counters (unseen, deleted, size) are stored and checked against a recount of
//! the messages on load: a checkpoint whose counters disagree is not used.
//!
//! Every run of the server has a *generation* (newest generation seen at recovery + 1);
//! core *c* of a run with *n* cores writes its checkpoint of that generation on `flush`
//! and every `checkpoint_meta_bytes_interval` meta bytes. A generation is usable only if
//! all *n* cores wrote one (together they cover every mailbox) and every position still
//! matches its log: each position carries the segment's nonce and the offset + CRC of the
//! record ending there (an anchor), so a log that was truncated and rewritten, or a
//! segment set aside and recreated, invalidates the checkpoint instead of fooling it.
//! Recovery tries generations from the newest down and falls back to a full scan.
//!
//! Why skipping is correct: log *j* before core *j*'s own position holds only records of
//! mailboxes core *j* owned (covered by its snapshot) or records from before the run
//! (covered by whichever snapshot owns the mailbox); records after the positions are
//! scanned and applied on top, skipping those with a modseq the snapshot already has.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::with::InlineAsBox;

use super::index::{
    counts, Account, ArchivedLogPosition, CoreIndex, LogPosition, Mailbox, MessageEntry,
};
use super::queue::{QueueEntry, QUEUE_RECIPIENTS_MAX};
use super::record::{self, RecordType, RECORD_HEADER_BYTES};
use super::segment::{self, SegmentHeader, SegmentKind, SEGMENT_HEADER_BYTES};
use super::StoreError;

/// A checkpoint file larger than this is rejected as corrupt (40 bytes per message:
/// this allows ~50 M messages per core).
pub const CHECKPOINT_BYTES_MAX: u64 = 2 << 30;

/// The archived root of a checkpoint (serialized from borrowed index data).
#[derive(rkyv::Archive, rkyv::Serialize)]
pub struct CheckpointData<'a> {
    pub generation: u64,
    pub core: u16,
    pub ncores: u16,
    /// Positions covered, one per meta log known to the writer.
    pub starts: Vec<LogPosition>,
    /// Positions covered, one per blob log known to the writer.
    pub blob_starts: Vec<LogPosition>,
    /// Highest mailbox-id sequence per creating core.
    pub mailbox_seq_max: Vec<SeqMax>,
    pub uid_validity_last: u32,
    pub mailboxes: Vec<MailboxSnapshot<'a>>,
    /// Accounts of the users this core owns.
    pub accounts: Vec<AccountSnapshot<'a>>,
    /// Ids of every deleted mailbox this core knows of, ascending.
    pub deleted_mailboxes: Vec<u64>,
    /// The outbound queue entries this core owns, ascending by id (published state).
    pub queue: Vec<QueueEntry>,
    /// Highest queue-id sequence per creating core.
    pub queue_seq_max: Vec<SeqMax>,
}

#[derive(rkyv::Archive, rkyv::Serialize)]
pub struct SeqMax {
    pub core: u16,
    pub seq: u64,
}

#[derive(rkyv::Archive, rkyv::Serialize)]
pub struct MailboxSnapshot<'a> {
    pub id: u64,
    #[rkyv(with = InlineAsBox)]
    pub user: &'a str,
    #[rkyv(with = InlineAsBox)]
    pub name: &'a str,
    pub uid_validity: u32,
    pub uid_max: u32,
    pub modseq_highest: u64,
    pub special_use: u8,
    pub unseen: u64,
    pub deleted: u64,
    pub size: u64,
    pub keywords: Vec<KeywordSnapshot<'a>>,
    #[rkyv(with = InlineAsBox)]
    pub messages: &'a [MessageEntry],
}

#[derive(rkyv::Archive, rkyv::Serialize)]
pub struct KeywordSnapshot<'a> {
    pub bit: u8,
    #[rkyv(with = InlineAsBox)]
    pub name: &'a str,
}

#[derive(rkyv::Archive, rkyv::Serialize)]
pub struct AccountSnapshot<'a> {
    #[rkyv(with = InlineAsBox)]
    pub user: &'a str,
    pub initialized: bool,
    pub seq_highest: u64,
    pub subscriptions: Vec<NameSnapshot<'a>>,
}

#[derive(rkyv::Archive, rkyv::Serialize)]
pub struct NameSnapshot<'a> {
    #[rkyv(with = InlineAsBox)]
    pub name: &'a str,
}

/// `checkpoint-00000000000000000007.ckpt`.
pub fn file_name(generation: u64) -> String {
    format!("checkpoint-{generation:020}.ckpt")
}

fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("checkpoint-")?.strip_suffix(".ckpt")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Checkpoint generations present in a core dir, ascending.
pub fn list(dir: &Path) -> Vec<u64> {
    let mut out: Vec<u64> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(parse_file_name))
        .collect();
    out.sort_unstable();
    out
}

/// Serializes `index` (published state only) with the given positions into the bytes of
/// a complete checkpoint file.
pub fn encode(
    index: &CoreIndex,
    generation: u64,
    starts: Vec<LogPosition>,
    blob_starts: Vec<LogPosition>,
) -> Result<Vec<u8>, StoreError> {
    let mut mailboxes: Vec<MailboxSnapshot<'_>> = index
        .mailboxes
        .values()
        .map(|m| MailboxSnapshot {
            id: m.id,
            user: &m.user,
            name: &m.name,
            uid_validity: m.uid_validity,
            uid_max: m.uid_max,
            modseq_highest: m.modseq_highest,
            special_use: m.special_use,
            unseen: m.unseen as u64,
            deleted: m.deleted as u64,
            size: m.size,
            keywords: m
                .keywords
                .iter()
                .map(|(bit, name)| KeywordSnapshot { bit: *bit, name })
                .collect(),
            messages: &m.messages,
        })
        .collect();
    mailboxes.sort_by_key(|m| m.id);
    let mut accounts: Vec<AccountSnapshot<'_>> = index
        .accounts
        .iter()
        .map(|(user, a)| AccountSnapshot {
            user,
            initialized: a.initialized,
            seq_highest: a.seq_highest,
            subscriptions: a
                .subscriptions
                .iter()
                .map(|name| NameSnapshot { name })
                .collect(),
        })
        .collect();
    accounts.sort_unstable_by_key(|a| a.user);
    let mut deleted_mailboxes: Vec<u64> = index.deleted_mailboxes.iter().copied().collect();
    deleted_mailboxes.sort_unstable();
    let mut seq_max: HashMap<u16, u64> = index.mailbox_seq_max.iter().copied().collect();
    let own = seq_max.entry(index.core).or_default();
    *own = (*own).max(index.mailbox_seq_next.saturating_sub(1));
    let mut mailbox_seq_max: Vec<SeqMax> = seq_max
        .into_iter()
        .map(|(core, seq)| SeqMax { core, seq })
        .collect();
    mailbox_seq_max.sort_unstable_by_key(|m| m.core);
    let mut queue_seq: HashMap<u16, u64> = index.queue.seq_max.iter().copied().collect();
    let own = queue_seq.entry(index.core).or_default();
    *own = (*own).max(index.queue.seq_next.saturating_sub(1));
    let mut queue_seq_max: Vec<SeqMax> = queue_seq
        .into_iter()
        .map(|(core, seq)| SeqMax { core, seq })
        .collect();
    queue_seq_max.sort_unstable_by_key(|m| m.core);
    let data = CheckpointData {
        generation,
        core: index.core,
        ncores: index.ncores,
        starts,
        blob_starts,
        mailbox_seq_max,
        uid_validity_last: index.uid_validity_last,
        mailboxes,
        accounts,
        deleted_mailboxes,
        queue: index.queue.entries().cloned().collect(),
        queue_seq_max,
    };
    let payload = rkyv::to_bytes::<rancor::Error>(&data).map_err(|e| StoreError::Encode {
        what: "checkpoint",
        reason: e.to_string(),
    })?;
    let header = SegmentHeader {
        kind: SegmentKind::Checkpoint,
        core: index.core,
        sequence: 1,
        nonce: segment::new_nonce(),
    };
    let mut out = Vec::with_capacity(SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + payload.len());
    out.extend_from_slice(&header.encode());
    record::encode_record(&mut out, RecordType::CheckpointV4, &payload);
    Ok(out)
}

/// Writes a checkpoint file durably: `.tmp`, (fsync), rename, (directory fsync). Uses
/// the executor's io_uring for the data; the rename and directory sync are short
/// metadata operations done synchronously.
pub async fn write(
    dir: &Path,
    generation: u64,
    bytes: Vec<u8>,
    durable: bool,
) -> Result<PathBuf, StoreError> {
    segment::ensure_dir(dir)?;
    let path = dir.join(file_name(generation));
    let tmp = dir.join(format!("{}.tmp", file_name(generation)));
    File::create(&tmp).map_err(|e| StoreError::io("create", &tmp, e))?;
    let file = crate::runtime::file::AppendFile::open(&tmp)
        .await
        .map_err(|e| StoreError::io("open", &tmp, e))?;
    let mut pos = 0u64;
    let mut rest = bytes;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(super::commit::WRITE_BYTES_MAX));
        let n = rest.len() as u64;
        file.write_all_at(rest, pos)
            .await
            .map_err(|e| StoreError::io("write", &tmp, e))?;
        pos += n;
        rest = tail;
    }
    if durable {
        file.sync_data()
            .await
            .map_err(|e| StoreError::io("fdatasync", &tmp, e))?;
    }
    drop(file);
    fs::rename(&tmp, &path).map_err(|e| StoreError::io("rename", &tmp, e))?;
    if durable {
        segment::sync_dir(dir)?;
    }
    Ok(path)
}

/// Removes this dir's checkpoints of every generation not in `keep` (best effort): the
/// generation recovery used stays until the new one is complete on every core.
pub fn remove_except(dir: &Path, keep: &[u64]) {
    for g in list(dir) {
        if !keep.contains(&g) {
            let _ = fs::remove_file(dir.join(file_name(g)));
        }
    }
}

/// A validated checkpoint file, converted to owned values.
struct Parsed {
    ncores: u16,
    seq_max: Vec<(u16, u64)>,
    uid_validity_last: u32,
    starts: Vec<LogPosition>,
    blob_starts: Vec<LogPosition>,
    mailboxes: Vec<Mailbox>,
    accounts: Vec<(String, Account)>,
    deleted_mailboxes: Vec<u64>,
    queue: Vec<QueueEntry>,
    queue_seq_max: Vec<(u16, u64)>,
    bytes: u64,
}

fn position(s: &ArchivedLogPosition) -> LogPosition {
    LogPosition {
        core: s.core.to_native(),
        segment: s.segment.to_native(),
        nonce: s.nonce.to_native(),
        end: s.end.to_native(),
        last_record_offset: s.last_record_offset.to_native(),
        last_record_crc: s.last_record_crc.to_native(),
    }
}

/// Reads, checks (header, CRC, rkyv validation: once) and converts one checkpoint file.
fn read(path: &Path, core: u16, generation: u64) -> Result<Parsed, String> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let bytes = fs::read(path).map_err(|e| at(&e))?;
    let len = bytes.len() as u64;
    if len > CHECKPOINT_BYTES_MAX {
        return Err(at(&format_args!("{len} bytes is too large")));
    }
    let header = SegmentHeader::decode(&bytes, path).map_err(|e| e.to_string())?;
    if header.kind != SegmentKind::Checkpoint || header.core != core {
        return Err(at(&format_args!(
            "header names {:?} of core {}",
            header.kind, header.core
        )));
    }
    let (rh, payload) =
        record::decode_record(&bytes[SEGMENT_HEADER_BYTES..]).map_err(|e| at(&e))?;
    let old = match rh.kind {
        RecordType::Checkpoint => Some(1),
        RecordType::CheckpointV2 => Some(2),
        RecordType::CheckpointV3 => Some(3),
        _ => None,
    };
    if let Some(version) = old {
        return Err(at(&format_args!(
            "checkpoint format version {version}, this build uses version {}",
            record::CHECKPOINT_VERSION
        )));
    }
    if rh.kind != RecordType::CheckpointV4 || SEGMENT_HEADER_BYTES as u64 + rh.record_bytes() != len
    {
        return Err(at(&"not a single checkpoint record"));
    }
    let mut aligned: AlignedVec = AlignedVec::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    drop(bytes);
    let data = rkyv::access::<ArchivedCheckpointData<'static>, rancor::Error>(&aligned)
        .map_err(|e| at(&format_args!("invalid archive: {e}")))?;
    if data.generation.to_native() != generation || data.core.to_native() != core {
        return Err(at(&"content does not match the file name"));
    }
    let mut mailboxes = Vec::with_capacity(data.mailboxes.len());
    for m in data.mailboxes.iter() {
        let messages: Vec<MessageEntry> = m
            .messages
            .as_ref()
            .iter()
            .map(MessageEntry::from_archived)
            .collect();
        let (unseen, deleted, size) = counts(&messages);
        let id = m.id.to_native();
        if (unseen as u64, deleted as u64, size)
            != (
                m.unseen.to_native(),
                m.deleted.to_native(),
                m.size.to_native(),
            )
        {
            return Err(at(&format_args!(
                "mailbox {id}: stored counters do not match its messages"
            )));
        }
        mailboxes.push(Mailbox {
            id,
            user: m.user.as_ref().to_owned(),
            name: m.name.as_ref().to_owned(),
            uid_validity: m.uid_validity.to_native(),
            uid_max: m.uid_max.to_native(),
            uid_next: 0,
            modseq_highest: m.modseq_highest.to_native(),
            modseq_next: 0,
            messages,
            special_use: m.special_use,
            keywords: m
                .keywords
                .iter()
                .map(|k| (k.bit, k.name.as_ref().to_owned()))
                .collect(),
            unseen,
            deleted,
            size,
            pending: HashMap::new(),
            deleting: false,
        });
    }
    let accounts = data
        .accounts
        .iter()
        .map(|a| {
            let account = Account {
                initialized: a.initialized,
                subscriptions: a
                    .subscriptions
                    .iter()
                    .map(|s| s.name.as_ref().to_owned())
                    .collect(),
                seq_highest: a.seq_highest.to_native(),
                seq_next: 0,
            };
            (a.user.as_ref().to_owned(), account)
        })
        .collect();
    let queue = rkyv::deserialize::<Vec<QueueEntry>, rancor::Error>(&data.queue)
        .map_err(|e| at(&format_args!("invalid queue: {e}")))?;
    for e in &queue {
        if e.recipients.is_empty() || e.recipients.len() > QUEUE_RECIPIENTS_MAX {
            return Err(at(&format_args!(
                "queue entry {:#x} has {} recipients",
                e.id,
                e.recipients.len()
            )));
        }
    }
    Ok(Parsed {
        ncores: data.ncores.to_native(),
        seq_max: data
            .mailbox_seq_max
            .iter()
            .map(|m| (m.core.to_native(), m.seq.to_native()))
            .collect(),
        uid_validity_last: data.uid_validity_last.to_native(),
        starts: data.starts.iter().map(position).collect(),
        blob_starts: data.blob_starts.iter().map(position).collect(),
        mailboxes,
        accounts,
        deleted_mailboxes: data
            .deleted_mailboxes
            .iter()
            .map(|id| id.to_native())
            .collect(),
        queue,
        queue_seq_max: data
            .queue_seq_max
            .iter()
            .map(|m| (m.core.to_native(), m.seq.to_native()))
            .collect(),
        bytes: len,
    })
}

/// Checks that `pos` still describes the same bytes of core `pos.core`'s `kind` log.
fn anchor_ok(dir: &Path, kind: SegmentKind, pos: &LogPosition) -> Result<(), String> {
    if pos.segment == 0 {
        return Ok(());
    }
    let path = segment::segment_path(dir, kind, pos.segment);
    let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let h = SegmentHeader::read_expect(&file, &path, kind, pos.core, pos.segment)
        .map_err(|e| e.to_string())?;
    if h.nonce != pos.nonce {
        return Err(format!("{} was recreated", path.display()));
    }
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if pos.end > len {
        return Err(format!(
            "{} is shorter than the checkpoint position {}",
            path.display(),
            pos.end
        ));
    }
    if pos.last_record_offset == 0 {
        return if pos.end == SEGMENT_HEADER_BYTES as u64 {
            Ok(())
        } else {
            Err(format!(
                "{}: position {} has no anchor",
                path.display(),
                pos.end
            ))
        };
    }
    let mut head = [0u8; RECORD_HEADER_BYTES];
    let n =
        segment::read_up_to(&file, &mut head, pos.last_record_offset).map_err(|e| e.to_string())?;
    if n != RECORD_HEADER_BYTES {
        return Err(format!("{}: anchor record missing", path.display()));
    }
    let rh = record::parse_header(&head, u64::MAX)
        .map_err(|e| format!("{}: anchor: {e}", path.display()))?;
    if rh.crc != pos.last_record_crc || pos.last_record_offset + rh.record_bytes() != pos.end {
        return Err(format!(
            "{}: anchor record at {} differs",
            path.display(),
            pos.last_record_offset
        ));
    }
    Ok(())
}

/// What recovery takes from a usable generation.
pub(crate) struct LoadedSet {
    pub(crate) generation: u64,
    pub(crate) bytes: u64,
    pub(crate) mailboxes: Vec<Mailbox>,
    pub(crate) accounts: Vec<(String, Account)>,
    pub(crate) deleted_mailboxes: HashSet<u64>,
    /// Highest mailbox-id sequence per creating core.
    pub(crate) mailbox_seq_max: HashMap<u16, u64>,
    pub(crate) uid_validity_last: u32,
    /// Where to start scanning each meta log (logs not listed: from the beginning).
    pub(crate) starts: HashMap<u16, LogPosition>,
    /// The same for each blob log.
    pub(crate) blob_starts: HashMap<u16, LogPosition>,
    /// Queue entries of every core (one per id).
    pub(crate) queue: Vec<QueueEntry>,
    /// Highest queue-id sequence per creating core.
    pub(crate) queue_seq_max: HashMap<u16, u64>,
}

/// Finds the newest complete, valid generation. Returns it (or why none is usable) and
/// the highest generation number seen in any file name.
pub(crate) fn load_newest(core_dirs: &[(u16, PathBuf)]) -> (Result<LoadedSet, String>, u64) {
    let dirs: HashMap<u16, &PathBuf> = core_dirs.iter().map(|(c, p)| (*c, p)).collect();
    let mut by_gen: HashMap<u64, Vec<u16>> = HashMap::new();
    for (core, dir) in core_dirs {
        for g in list(dir) {
            by_gen.entry(g).or_default().push(*core);
        }
    }
    let mut gens: Vec<u64> = by_gen.keys().copied().collect();
    gens.sort_unstable_by(|a, b| b.cmp(a));
    let max = gens.first().copied().unwrap_or(0);
    let mut notes = Vec::new();
    for g in gens {
        match load_generation(g, &by_gen[&g], &dirs) {
            Ok(set) => return (Ok(set), max),
            Err(why) => notes.push(format!("generation {g}: {why}")),
        }
    }
    if notes.is_empty() {
        notes.push("no checkpoint".to_string());
    }
    (Err(notes.join("; ")), max)
}

/// Where to start scanning each log of `kind`: its own core's position if that core
/// wrote a checkpoint (it covers everything its core appended), else the lowest position
/// any file names. Every position's anchor must still match its log.
fn start_positions(
    parsed: &[(u16, Parsed)],
    dirs: &HashMap<u16, &PathBuf>,
    kind: SegmentKind,
    positions: impl Fn(&Parsed) -> &[LogPosition],
) -> Result<HashMap<u16, LogPosition>, String> {
    let mut own: HashMap<u16, LogPosition> = HashMap::new();
    let mut others: HashMap<u16, LogPosition> = HashMap::new();
    for (core, p) in parsed {
        for pos in positions(p) {
            let Some(dir) = dirs.get(&pos.core) else {
                if pos.segment == 0 {
                    continue;
                }
                return Err(format!("core dir {} is gone", pos.core));
            };
            anchor_ok(dir, kind, pos)?;
            if pos.core == *core {
                own.insert(pos.core, *pos);
            } else {
                others
                    .entry(pos.core)
                    .and_modify(|cur| {
                        if (pos.segment, pos.end) < (cur.segment, cur.end) {
                            *cur = *pos;
                        }
                    })
                    .or_insert(*pos);
            }
        }
    }
    others.extend(own);
    Ok(others)
}

fn load_generation(
    generation: u64,
    cores: &[u16],
    dirs: &HashMap<u16, &PathBuf>,
) -> Result<LoadedSet, String> {
    let mut sorted = cores.to_vec();
    sorted.sort_unstable();
    let first = *sorted.first().ok_or("no files")?;
    let mut parsed = vec![(
        first,
        read(&dirs[&first].join(file_name(generation)), first, generation)?,
    )];
    let n = parsed[0].1.ncores;
    let expected: Vec<u16> = (0..n).collect();
    if sorted != expected {
        return Err(format!("incomplete: cores {sorted:?} of {n} wrote one"));
    }
    for &core in &sorted[1..] {
        let p = read(&dirs[&core].join(file_name(generation)), core, generation)?;
        if p.ncores != n {
            return Err("files disagree on the core count".into());
        }
        parsed.push((core, p));
    }
    let starts = start_positions(&parsed, dirs, SegmentKind::Meta, |p| &p.starts)?;
    let blob_starts = start_positions(&parsed, dirs, SegmentKind::Blob, |p| &p.blob_starts)?;
    let mut bytes = 0;
    let mut mailboxes: HashMap<u64, Mailbox> = HashMap::new();
    let mut accounts: HashMap<String, Account> = HashMap::new();
    let mut deleted_mailboxes: HashSet<u64> = HashSet::new();
    let mut mailbox_seq_max: HashMap<u16, u64> = HashMap::new();
    let mut uid_validity_last = 0;
    let mut queue: HashMap<u64, QueueEntry> = HashMap::new();
    let mut queue_seq_max: HashMap<u16, u64> = HashMap::new();
    for (_, p) in parsed {
        bytes += p.bytes;
        uid_validity_last = uid_validity_last.max(p.uid_validity_last);
        for (core, seq) in p.seq_max {
            let e = mailbox_seq_max.entry(core).or_default();
            *e = (*e).max(seq);
        }
        for mb in p.mailboxes {
            match mailboxes.get(&mb.id) {
                Some(old) if old.modseq_highest >= mb.modseq_highest => {}
                _ => {
                    mailboxes.insert(mb.id, mb);
                }
            }
        }
        for (user, a) in p.accounts {
            match accounts.get_mut(&user) {
                Some(old) => {
                    // Two files with one user (an owner change): the newer sequence
                    // carries the newer subscriptions; initialised is never undone.
                    let initialized = old.initialized || a.initialized;
                    if a.seq_highest > old.seq_highest {
                        *old = a;
                    }
                    old.initialized = initialized;
                }
                None => {
                    accounts.insert(user, a);
                }
            }
        }
        deleted_mailboxes.extend(p.deleted_mailboxes);
        for (core, seq) in p.queue_seq_max {
            let e = queue_seq_max.entry(core).or_default();
            *e = (*e).max(seq);
        }
        for e in p.queue {
            // Two files with one entry (an owner change): the newer updates win.
            match queue.get(&e.id) {
                Some(old) if old.seq_highest >= e.seq_highest => {}
                _ => {
                    queue.insert(e.id, e);
                }
            }
        }
    }
    mailboxes.retain(|id, _| !deleted_mailboxes.contains(id));
    Ok(LoadedSet {
        generation,
        bytes,
        mailboxes: mailboxes.into_values().collect(),
        accounts: accounts.into_iter().collect(),
        deleted_mailboxes,
        mailbox_seq_max,
        uid_validity_last,
        starts,
        blob_starts,
        queue: queue.into_values().collect(),
        queue_seq_max,
    })
}
