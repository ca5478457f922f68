//! The log-structured mailbox store: where every accepted message and every mailbox
//! change is made durable, and the in-memory index that finds them again.
//!
//! # Layout on disk
//! ```text
//! <data_dir>/store/core-00/blob-00000001.seg   message bodies, one record per message,
//!                                              each followed by the MessageAppend records
//!                                              of its deliveries to core 00's mailboxes
//!                         /blob-00000002.seg   (rolled past blob_segment_bytes_max)
//!                         /meta-00000001.seg   all other index records (rkyv payloads)
//!                         /checkpoint-<generation>.ckpt   rkyv snapshot of core 00's index
//!                                                        + the log positions it covers
//! <data_dir>/store/core-01/...                 the same for core 01, and so on
//! ```
//! Core *i* appends only to `core-<i>/`; nothing is shared between cores on the write
//! path. Every segment starts with a [`segment::SegmentHeader`] (magic `RINGMAIL`, format
//! version — 2 since blob segments may hold index records, 1 still read:
//! [`segment::FORMAT_VERSION`] — kind, core, sequence, a random nonce, CRC). Records are framed by
//! [`record`]: `[payload_len u32][crc32c u32][type u8][3 zero bytes]` + payload, the CRC
//! covering length, type, reserved bytes and payload, so a torn or corrupt record is
//! always detected. A record never spans segments; a record larger than a segment gets a
//! segment of its own. The active segment of a log on a disk usually has zeros past its
//! last record (written ahead by [`commit`], so that commits overwrite blocks instead of
//! growing the file): type 0 is never a valid record, so every reader stops there as at
//! the end of the log. Sealed segments end exactly at their last record.
//!
//! # Records
//! The type byte of every record ([`record::RecordType`]); types are only ever added, and
//! a payload's layout never changes once written:
//! ```text
//!  1 Blob            blob log: the message bytes
//!  2 MailboxCreate   mailbox_id, user, name, uid_validity           (modseq 0 of the mailbox)
//!  3 MessageAppend   mailbox_id, uid, modseq, blob, internal_date, flags
//!                    (meta log, or blob log right after its blob: see below)
//!  4 FlagsSet        mailbox_id, uid, modseq, flags                  (highest modseq wins)
//!  5 Expunge         mailbox_id, uid, modseq                         (tombstone)
//!  6 Checkpoint      checkpoint file, format version 1 (read only to say it is old)
//!  7 (reserved)      BlobRelocate, for the compactor
//!  8 KeywordDefine   mailbox_id, modseq, bit, name                   (flag bit 5..=31)
//!  9 MailboxDelete   mailbox_id, modseq                              (the mailbox's last)
//! 10 MailboxRename   mailbox_id, modseq, name                        (children: one each)
//! 11 MailboxAttrs    mailbox_id, modseq, special_use                 (SPECIAL-USE bits)
//! 12 AccountInit     user                                            (idempotent)
//! 13 Subscription    user, seq, name, subscribed                     (per-user seq)
//! 14 CheckpointV2    checkpoint file, format version 2 (read only to say it is old)
//! 15 QueueAdd        id, blob, envelope (sender, recipients + NOTIFY/ORCPT, SMTPUTF8,
//!                    8BITMIME, RET, ENVID), arrival, authenticated user   (outbound queue)
//! 16 QueueUpdate     id, seq, at, per-recipient state/attempts/next try/flags/error
//! 17 QueueDone       id, reason                                      (terminal)
//! 18 CheckpointV3    checkpoint file, format version 3 (+ the outbound queue; read only to
//!                    say it is old)
//! 19 CheckpointV4    checkpoint file, format version 4 (+ blob-log positions)
//! ```
//! Flags: bits 0..=4 are `\Seen \Answered \Flagged \Deleted \Draft`, bits 5..=31 are
//! keywords numbered per mailbox ([`flags`]).
//!
//! # Modules
//! - [`record`]     framing, record types, the rkyv meta payloads ([`record::MetaRecord`]).
//! - [`segment`]    segment headers, file names, listing, creation, sequential scanning.
//! - [`flags`]      flag bits, keyword bits, SPECIAL-USE bits.
//! - [`index`]      the compact in-memory index: mailbox → `Vec<MessageEntry>` sorted by
//!   UID (40 bytes per message), keywords, special-use, running counters (unseen,
//!   deleted, size); per-user accounts (initialised, subscriptions).
//! - [`recover`](mod@recover) the offline start-up scan: validates every record,
//!   truncates torn tails of writable logs, drops (and where needed tombstones) index
//!   entries whose blob is not durable, builds the index and splits it by owner core.
//! - [`checkpoint`] rkyv snapshots of one core's index + the log positions they cover, so
//!   recovery only scans the records written after them.
//! - [`publish`]    the order in which durable records of both logs reach the index (push
//!   order), and the log positions a checkpoint may claim.
//! - [`commit`]     group commit: one pending batch per log, placed (segment, offset) when
//!   its first record is pushed, one `write` + one `fdatasync` per batch, back-pressure
//!   past `batch_bytes_max`, undo on failure, zero-filled space kept ahead of the data.
//! - [`engine`]     [`Store`], the per-core handle used inside an executor: blobs,
//!   `deliver`, the per-user namespace lock, the change hook.
//! - [`ops`]        the IMAP/POP3 operations: accounts, mailboxes, subscriptions,
//!   keywords, append, flags (UNCHANGEDSINCE), expunge, copy/move.
//! - [`queue`]      the outbound queue's durable entries (per core, in the meta log):
//!   `enqueue`, `queue_update`, `queue_done`, `queue_entries`; recovered and
//!   checkpointed with the mailboxes.
//! - [`export`]     offline, read-only mboxrd export of one mailbox.
//!
//! # Ownership and ordering
//! Each user's mailboxes are owned by one core (`owner(user)`, decided by the caller); the
//! owner appends all of their index records to its own meta log. Recovery reads *every*
//! `core-*` directory (also those beyond the current core count, read-only), so changing
//! the core count only changes who appends from now on. Records of one mailbox may
//! therefore sit in several cores' meta logs; the per-mailbox `modseq` (strictly
//! increasing) orders them: every per-mailbox record carries one (messages, flags,
//! expunges, keyword definitions, renames, special-use, deletes), so a rename or delete
//! written by core 1 in one run and a rename written by core 0 in the next apply in the
//! order they happened, whichever log recovery reads first. Per-user records
//! (subscriptions) carry a per-user `seq` for the same reason; `AccountInit` is
//! idempotent.
//!
//! Names need no order across mailboxes: recovery folds each mailbox by id to its final
//! state (its last rename; a delete removes it and every later record of it is ignored)
//! and only then builds the name map. Live, the owner never lets two mailboxes hold one
//! name, so the final names are unique; "a" deleted (or renamed away) and a new "a"
//! created later are two ids, and the old one's records never reach the new one. (Two
//! mailboxes with one name can only come from a lost log; the lower id keeps it, as
//! before.) Deleted ids are remembered (in checkpoints too), so a create read again at
//! recovery cannot bring a deleted mailbox back; ids and UIDVALIDITYs are never reused
//! (a re-created name gets a greater UIDVALIDITY).
//!
//! One user's namespace changes (create, delete, rename, subscriptions, keyword
//! definitions, account init) run one at a time under a per-user lock held until their
//! records are durable and published. Message changes take no lock: their UIDs and
//! modseqs are allocated, and UNCHANGEDSINCE checked, with no await before the push;
//! flag changes build on changes still in flight, so concurrent STOREs never lose one
//! another. A mailbox being deleted accepts no new records.
//!
//! A message delivered to mailboxes of the core that stores it costs one write and one
//! fdatasync ([`Store::store_message`]): its `MessageAppend` records go into the *blob*
//! log's batch, right after the blob, so a valid record there implies a valid blob. The
//! session's core hands a message whose local recipients all belong to one other core to
//! that core whole (`runtime::mesh`), so the common single-recipient delivery always takes
//! this path. Records of one core reach its index in the order they were pushed, across
//! both logs ([`publish`]), and an appender is answered only once its records are
//! published: UIDs and modseqs appear in the order they were allocated.
//!
//! Otherwise (recipients on several cores, IMAP APPEND) a message's blob and its index
//! records are committed *concurrently*: the blob's position is fixed when it is staged
//! ([`Store::stage_blob`]), the caller writes the `MessageAppend` records (in the meta logs
//! of the owners) with it at once, and the message is acknowledged only when the blob *and*
//! every index record are durable. So after a crash a durable `MessageAppend` may reference
//! a blob that never became durable (torn, or never written). The rules that keep this
//! safe:
//! - a blob log is always a durable prefix plus at most one batch being written (batches
//!   are written one after the other, each only once the previous one is durable), and a
//!   sealed segment is valid up to its length (it is cut to its durable end and synced
//!   before the next one is created);
//! - recovery scans the last blob segment of every core to find its valid end, drops every
//!   index entry whose `BlobRef` is not inside valid blob data, and — before any executor
//!   may append — writes a durable `Expunge` tombstone (in the meta log of the mailbox's
//!   owner) for each dropped entry whose position the blob log could hand out again (at or
//!   past the point where it continues). Without it, a new blob written at the same offset
//!   after the truncation would be served for the old UID;
//! - while running, a blob position once handed out is never reused: after a failed blob
//!   batch the next one starts a new segment (see [`commit`]). An index record written for
//!   a blob whose batch failed points at nothing (reads fail, recovery drops it); the core
//!   that delivered it expunges it at once when it can.
//!
//! `read_blob` re-verifies the record CRC on every read. An index entry can be visible
//! (its meta batch is durable) a moment before its blob batch is written; the caller of
//! `deliver` does not acknowledge the message before both are durable.
//!
//! # Compaction (not implemented yet; the format allows it)
//! Blobs are reachable from `MessageAppend` records and from outbound queue entries
//! (`QueueAdd` until its `QueueDone`): a queued blob is live exactly like a message's. A compactor running on core *i*
//! picks sealed blob segments of its own log whose live fraction is low (live = referenced
//! by a message that is not expunged, known from the index of every core, asked over the
//! mesh), copies the live blobs to the head of its blob log with the normal group commit,
//! and then appends, in the owner's meta log, a relocation record (`BlobRelocate {
//! mailbox_id, uid, modseq, old: BlobRef, new: BlobRef }`, record type 7, reserved in
//! [`record::RecordType`]) for each moved message; recovery applies it like a FlagsSet
//! (highest modseq wins). Once every relocation is durable and a checkpoint no longer
//! needs the old meta records, the old blob segment is deleted. Meta logs are compacted by
//! writing a checkpoint and deleting the meta segments it fully covers in every core's
//! checkpoint. Expunge records are the tombstones that let a compactor see a blob is dead;
//! `QueueDone` is the same for a queued blob (a queued blob is simplest left in place until
//! its entry is done: queue entries live for minutes to days, unlike mailboxes).

pub mod cache;
pub mod checkpoint;
pub mod commit;
pub mod engine;
pub mod export;
pub mod flags;
pub mod index;
#[cfg(test)]
mod local_tests;
#[cfg(test)]
mod mailbox_tests;
pub mod ops;
pub mod publish;
pub mod queue;
#[cfg(test)]
mod queue_tests;
pub mod record;
pub mod recover;
pub mod segment;
#[cfg(test)]
mod test_util;
#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;

pub use engine::{BlobTicket, ChangeHookFn, Filing, MetaTicket, Store, StoreStats};
pub use export::export_mboxrd;
pub use flags::special_use;
pub use index::{Account, CoreIndex, Mailbox, MailboxInfo, MailboxStatus, MessageEntry};
pub use ops::{CopyOutcome, FlagChange, FlagMode, FlagOutcome, DEFAULT_MAILBOXES};
pub use queue::{
    format_queue_id, parse_queue_id, DoneReason, NewQueueEntry, QueueEntry, QueuedRecipient,
    RecipientChange, RecipientState,
};
pub use record::QueueRecipient;
pub use recover::{recover, recover_with, RecoverOptions, Recovered, RecoveryReport};

/// Whether a batch is fdatasync'ed before its appenders are told it is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// write + fdatasync for every batch (production).
    Always,
    /// write only: the data survives a process crash, not a power loss (benchmarks only).
    Never,
}

/// How a log's commit task waits for its batch's fdatasync (`Fsync::Always`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncWait {
    /// Through io_uring (a kernel worker runs it): the executor serves other tasks
    /// meanwhile, and is woken when it completes.
    IoUring,
    /// fdatasync(2) on the executor thread: the core pauses for the flush (0.1-0.5 ms on
    /// an SSD, more on a disk) and saves the hand-off to the worker and the wake-up.
    /// Zero-filling ahead and truncation still go through io_uring.
    Inline,
}

/// The largest message the store accepts (a backstop: SMTP enforces the real limit).
pub const MESSAGE_BYTES_MAX: usize = 1 << 30;
/// The longest user name (normalized address) the store accepts.
pub const USER_BYTES_MAX: usize = 320;
/// The longest mailbox name the store accepts.
pub const MAILBOX_NAME_BYTES_MAX: usize = 1024;
/// The most deliveries one `deliver` call may carry.
pub const DELIVERIES_PER_CALL_MAX: usize = 10_000;
/// The most mailboxes one user may have.
pub const MAILBOXES_PER_USER_MAX: usize = 10_000;
/// The most subscriptions one user may have.
pub const SUBSCRIPTIONS_PER_USER_MAX: usize = 10_000;
/// The most UIDs (or flag changes) one `update_flags`, `expunge_uids` or `copy` call may
/// carry (a mailbox can hold more: callers split; records are committed in batches of
/// `batch_bytes_max`).
pub const UIDS_PER_CALL_MAX: usize = 1 << 20;
/// The most keyword names one `keyword_bits` call may carry.
pub const KEYWORDS_PER_CALL_MAX: usize = 64;
/// Segments may not exceed this: offsets inside a segment are kept as u32 in the index.
pub const SEGMENT_BYTES_LIMIT: u64 = u32::MAX as u64;
/// The smallest segment size accepted (tests use tiny segments to exercise rollover).
pub const SEGMENT_BYTES_MIN: u64 = 1024;

/// Per-core store settings.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    /// This executor's core index: the store appends to `store/core-<core>/`.
    pub core: u16,
    pub fsync: Fsync,
    /// How commits wait for fdatasync (default io_uring).
    pub sync_wait: SyncWait,
    /// Roll the blob log to a new segment past this size (default 256 MiB).
    pub blob_segment_bytes_max: u64,
    /// Roll the meta log to a new segment past this size (default 64 MiB).
    pub meta_segment_bytes_max: u64,
    /// One batch (one write) holds at most this many bytes, unless a single record is
    /// larger; appenders wait while the pending batch is full (default 4 MiB).
    pub batch_bytes_max: usize,
    /// Write a checkpoint each time this many meta bytes were appended since the last one
    /// (0: only on `flush`). Default 64 MiB.
    pub checkpoint_meta_bytes_interval: u64,
    /// ...and each time this many blob-log bytes were (recovery scans the blob log from
    /// the last checkpoint too, for the `MessageAppend` records it holds; 0: only on
    /// `flush`). Default 1 GiB.
    pub checkpoint_blob_bytes_interval: u64,
    /// Group-commit window: a commit task that finds work waits this long before taking
    /// the batch, so more appenders join one write + fdatasync (fewer syncs per message,
    /// more latency). 0 (default): take the batch at once.
    pub commit_window_us: u64,
}

impl StoreConfig {
    /// The defaults above for `core` under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>, core: u16) -> StoreConfig {
        StoreConfig {
            data_dir: data_dir.into(),
            core,
            fsync: Fsync::Always,
            sync_wait: SyncWait::IoUring,
            blob_segment_bytes_max: 256 << 20,
            meta_segment_bytes_max: 64 << 20,
            batch_bytes_max: 4 << 20,
            checkpoint_meta_bytes_interval: 64 << 20,
            checkpoint_blob_bytes_interval: 1 << 30,
            commit_window_us: 0,
        }
    }

    /// Checks every limit and reports all problems at once.
    pub fn validate(&self) -> Result<(), StoreError> {
        let mut problems = Vec::new();
        for (name, v) in [
            ("blob_segment_bytes_max", self.blob_segment_bytes_max),
            ("meta_segment_bytes_max", self.meta_segment_bytes_max),
        ] {
            if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_LIMIT).contains(&v) {
                problems.push(format!(
                    "{name} = {v}: must be in {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_LIMIT}"
                ));
            }
        }
        if !(4096..=(64 << 20)).contains(&self.batch_bytes_max) {
            problems.push(format!(
                "batch_bytes_max = {}: must be in 4096..=67108864",
                self.batch_bytes_max
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Config {
                reason: problems.join("; "),
            })
        }
    }
}

/// Where a message body lives: the blob record's header in `core`'s blob log.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct BlobRef {
    pub core: u16,
    pub segment: u32,
    /// Offset of the record header inside the segment file.
    pub offset: u64,
    /// Payload (message) length in bytes.
    pub len: u32,
}

impl BlobRef {
    /// Offset just past the record (header + payload).
    pub fn end(&self) -> u64 {
        self.offset + record::RECORD_HEADER_BYTES as u64 + u64::from(self.len)
    }
}

/// One recipient's copy of an accepted message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Normalized address of the recipient (the mailbox owner).
    pub user: String,
    /// Mailbox name, usually "INBOX".
    pub mailbox: String,
    pub blob: BlobRef,
    /// Unix seconds.
    pub internal_date: i64,
}

/// Everything the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("disk full while trying to {op} {path}: {source}")]
    DiskFull {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("corrupt data in {segment} at offset {offset}: {reason}")]
    Corrupt {
        segment: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A blob referenced by a published index record whose bytes are not in its segment yet:
    /// its batch is still being written (the index and blob commits run concurrently).
    /// [`Store::read_blob_settled`] waits for it.
    #[error("blob in {segment} at offset {offset} is not written yet")]
    Unwritten { segment: PathBuf, offset: u64 },
    #[error("{path} has format version {found}, this build reads versions 1 to {expected}")]
    Version {
        path: PathBuf,
        found: u16,
        expected: u16,
    },
    #[error("invalid store configuration: {reason}")]
    Config { reason: String },
    #[error("owner({user:?}) returned core {core}, but there are only {ncores} cores")]
    Owner {
        user: String,
        core: usize,
        ncores: usize,
    },
    #[error(
        "the index was recovered for core {index}, but the store is configured as core {config}"
    )]
    CoreMismatch { config: u16, index: u16 },
    #[error("{what} is {bytes} bytes, the limit is {max}")]
    TooLarge {
        what: &'static str,
        bytes: usize,
        max: usize,
    },
    #[error("no mailbox {mailbox:?} for user {user:?}")]
    NoSuchMailbox { user: String, mailbox: String },
    #[error("no message with UID {uid} in mailbox {mailbox:?} of {user:?}")]
    NoSuchMessage {
        user: String,
        mailbox: String,
        uid: u32,
    },
    #[error("mailbox {mailbox:?} of {user:?} has used up its {what}")]
    Exhausted {
        user: String,
        mailbox: String,
        what: &'static str,
    },
    #[error("mailbox {mailbox:?} of {user:?} already exists")]
    AlreadyExists { user: String, mailbox: String },
    #[error("cannot {op} mailbox {mailbox:?} of {user:?}: {reason}")]
    Forbidden {
        op: &'static str,
        user: String,
        mailbox: String,
        reason: &'static str,
    },
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    #[error("cannot encode a {what} record: {reason}")]
    Encode { what: &'static str, reason: String },
    #[error("the commit task of {path} is gone")]
    Closed { path: PathBuf },
    #[error("no queue entry {id} on this core")]
    NoSuchQueueEntry { id: String },
    #[error("invalid queue entry {id}: {reason}")]
    InvalidQueueEntry { id: String, reason: String },
    #[error("the outbound queue of this core holds its maximum of {max} entries")]
    QueueFull { max: usize },
}

impl StoreError {
    /// True for ENOSPC, EDQUOT and short writes: the operation can succeed once space
    /// returns, so callers answer with a temporary failure (SMTP 452) instead of 5xx.
    /// See [`StoreError::Unwritten`].
    pub fn is_unwritten(&self) -> bool {
        matches!(self, StoreError::Unwritten { .. })
    }

    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::DiskFull { .. } => true,
            StoreError::Io { source, .. } => io_is_disk_full(source),
            _ => false,
        }
    }

    /// Wraps an io::Error, classifying disk-full conditions as [`StoreError::DiskFull`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> StoreError {
        let path = path.into();
        if io_is_disk_full(&source) {
            StoreError::DiskFull { op, path, source }
        } else {
            StoreError::Io { op, path, source }
        }
    }

    pub(crate) fn corrupt(
        segment: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> StoreError {
        StoreError::Corrupt {
            segment: segment.into(),
            offset,
            reason: reason.into(),
        }
    }
}

// What crosses threads: recovery runs before the executors and hands each one its index.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<CoreIndex>();
    send::<Recovered>();
    send::<StoreError>();
    send::<BlobRef>();
};

fn io_is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == io::ErrorKind::StorageFull
}
