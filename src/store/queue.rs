//! The outbound queue's durable state: messages accepted for remote recipients wait here,
//! in the meta log of the core that accepted them, until every recipient is delivered or
//! has failed for good.
//!
//! # Records (see [`record`](super::record))
//! - `QueueAdd` (type 15): id, blob, envelope (sender, recipients with their RFC 3461
//!   NOTIFY/ORCPT, SMTPUTF8, 8BITMIME, RET, ENVID), arrival time, authenticated user. It
//!   is committed concurrently with the message's blob, like a `MessageAppend`, and the
//!   message is acknowledged only once both are durable.
//! - `QueueUpdate` (type 16): per-recipient state after an attempt (pending, deferred,
//!   delivered, failed), attempts, next try, flags, last error text. `seq` is per entry and
//!   strictly increasing; recovery applies updates in `seq` order and skips those a
//!   checkpoint already holds (like modseqs).
//! - `QueueDone` (type 17): the entry leaves the queue (delivered, bounced, deleted by the
//!   operator, or lost because its blob never became durable). Terminal.
//!
//! # Ownership
//! An entry belongs to the core that created it (`id >> 48`), or, if the core count
//! shrank below that, to `creating core % ncores` ([`queue_owner`]); only the owner writes
//! its updates and its done record, so one entry's updates are in one log per run. A
//! queue entry references its blob exactly like a message does: a compactor must treat it
//! as live until the `QueueDone`, and recovery drops (and, where the position could be
//! handed out again, durably marks done) an entry whose blob is not durable — the same
//! rule as for messages (`store` "Ownership and ordering").
//!
//! # Delivery semantics (for the sender of issue 5)
//! An entry becomes visible in [`Store::queue_entries`] once its `QueueAdd` is durable,
//! which may be a moment before its blob is: a read of the blob then fails and the attempt
//! is simply deferred. After a crash between a successful remote delivery and the durable
//! `QueueUpdate` that records it, the recipient is attempted again (at-least-once).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::engine::Store;
use super::index::{CoreIndex, MAILBOX_SEQ_BITS};
use super::record::{
    MetaRecord, QueueAdd, QueueDone, QueueRecipient, QueueUpdate, RecipientUpdate,
    RECORD_HEADER_BYTES,
};
use super::segment::SEGMENT_HEADER_BYTES;
use super::{BlobRef, StoreError, USER_BYTES_MAX};

/// Recipients one queue entry may carry (the caller splits larger lists).
pub const QUEUE_RECIPIENTS_MAX: usize = 1000;
/// Entries one core's queue may hold; `enqueue` fails (a temporary failure) beyond.
pub const QUEUE_ENTRIES_MAX: usize = 100_000;
/// RFC 3461 §4.2: ORCPT is at most 500 characters.
pub const ORCPT_BYTES_MAX: usize = 500;
/// RFC 3461 §4.4: ENVID is at most 100 characters.
pub const ENVID_BYTES_MAX: usize = 100;
/// Longest SMTP transaction id kept with an entry.
pub const SMTP_ID_BYTES_MAX: usize = 64;
/// Error texts are cut to this many bytes (at a character boundary).
pub const QUEUE_ERROR_BYTES_MAX: usize = 512;

/// RFC 3461 NOTIFY bits ([`QueueRecipient::notify`]); `NOTIFY_NEVER` excludes the others.
pub const NOTIFY_NEVER: u8 = 1;
pub const NOTIFY_SUCCESS: u8 = 2;
pub const NOTIFY_FAILURE: u8 = 4;
pub const NOTIFY_DELAY: u8 = 8;
/// RFC 3461 RET values ([`QueueAdd::ret`]).
pub const RET_FULL: u8 = 1;
pub const RET_HDRS: u8 = 2;
/// Recipient flag: a delay notice was sent for it.
pub const FLAG_DELAY_NOTIFIED: u8 = 1;

/// Where one recipient of a queue entry stands.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
#[repr(u8)]
pub enum RecipientState {
    /// Not attempted yet.
    Pending = 0,
    /// Attempted, failed temporarily: retried at `next_try`.
    Deferred = 1,
    /// Accepted by the remote (or delivered locally): final.
    Delivered = 2,
    /// Failed permanently (5xx, expired, null MX): final, a bounce is due.
    Failed = 3,
}

impl RecipientState {
    pub fn from_u8(v: u8) -> Option<RecipientState> {
        Some(match v {
            0 => RecipientState::Pending,
            1 => RecipientState::Deferred,
            2 => RecipientState::Delivered,
            3 => RecipientState::Failed,
            _ => return None,
        })
    }

    /// Delivered or failed: no more attempts.
    pub fn is_final(self) -> bool {
        matches!(self, RecipientState::Delivered | RecipientState::Failed)
    }

    pub fn name(self) -> &'static str {
        match self {
            RecipientState::Pending => "pending",
            RecipientState::Deferred => "deferred",
            RecipientState::Delivered => "delivered",
            RecipientState::Failed => "failed",
        }
    }
}

/// Why an entry left the queue ([`QueueDone::reason`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DoneReason {
    /// Every recipient is final and any bounce was queued.
    Finished = 1,
    /// The operator deleted it (`ringmail queue delete`).
    Deleted = 2,
    /// Its blob never became durable (the acceptance failed, or recovery dropped it).
    Lost = 3,
}

impl DoneReason {
    pub fn from_u8(v: u8) -> Option<DoneReason> {
        Some(match v {
            1 => DoneReason::Finished,
            2 => DoneReason::Deleted,
            3 => DoneReason::Lost,
            _ => return None,
        })
    }
}

/// One recipient of a queue entry with its delivery state.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct QueuedRecipient {
    pub address: String,
    pub notify: Option<u8>,
    pub orcpt: Option<String>,
    pub state: RecipientState,
    pub attempts: u32,
    /// Unix seconds of the next attempt (the arrival time until the first one).
    pub next_try: i64,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// The last error text for this recipient ("" if none).
    pub error: String,
}

/// One message in the outbound queue, as the index keeps it (published state).
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct QueueEntry {
    pub id: u64,
    pub blob: BlobRef,
    pub smtp_id: String,
    /// "" for the null sender.
    pub sender: String,
    pub recipients: Vec<QueuedRecipient>,
    pub smtputf8: bool,
    pub body_8bitmime: bool,
    /// Unix seconds.
    pub arrival: i64,
    pub authenticated: Option<String>,
    pub ret: Option<u8>,
    pub envid: Option<String>,
    /// Highest durable `QueueUpdate` sequence (0: never updated).
    pub seq_highest: u64,
    /// Unix seconds of the last attempt (0: none yet).
    pub last_try: i64,
    /// The newest non-empty error text of any recipient ("" if none).
    pub last_error: String,
}

impl QueueEntry {
    /// The entry a `QueueAdd` creates: every recipient pending, due at arrival.
    pub fn from_add(a: &QueueAdd) -> QueueEntry {
        QueueEntry {
            id: a.id,
            blob: a.blob,
            smtp_id: a.smtp_id.clone(),
            sender: a.sender.clone(),
            recipients: a
                .recipients
                .iter()
                .map(|r| QueuedRecipient {
                    address: r.address.clone(),
                    notify: r.notify,
                    orcpt: r.orcpt.clone(),
                    state: RecipientState::Pending,
                    attempts: 0,
                    next_try: a.arrival,
                    flags: 0,
                    error: String::new(),
                })
                .collect(),
            smtputf8: a.smtputf8,
            body_8bitmime: a.body_8bitmime,
            arrival: a.arrival,
            authenticated: a.authenticated.clone(),
            ret: a.ret,
            envid: a.envid.clone(),
            seq_highest: 0,
            last_try: 0,
            last_error: String::new(),
        }
    }

    /// Applies an update unless an update at least as new was applied (returns whether it
    /// was). Recipient indexes out of range and unknown states are skipped (validated on
    /// write; a damaged record that passed its CRC must not take recovery down).
    pub fn apply_update(&mut self, u: &QueueUpdate) -> bool {
        if u.seq <= self.seq_highest {
            return false;
        }
        self.seq_highest = u.seq;
        self.last_try = self.last_try.max(u.at);
        for r in &u.recipients {
            let (Some(rcpt), Some(state)) = (
                self.recipients.get_mut(r.index as usize),
                RecipientState::from_u8(r.state),
            ) else {
                continue;
            };
            rcpt.state = state;
            rcpt.attempts = r.attempts;
            rcpt.next_try = r.next_try;
            rcpt.flags = r.flags;
            rcpt.error.clone_from(&r.error);
            if !r.error.is_empty() {
                self.last_error.clone_from(&r.error);
            }
        }
        true
    }

    /// The most attempts made for any recipient.
    pub fn attempts(&self) -> u32 {
        self.recipients
            .iter()
            .map(|r| r.attempts)
            .max()
            .unwrap_or(0)
    }

    /// When the next recipient is due (None: every recipient is final).
    pub fn next_try(&self) -> Option<i64> {
        self.recipients
            .iter()
            .filter(|r| !r.state.is_final())
            .map(|r| r.next_try)
            .min()
    }

    /// Every recipient is delivered or failed.
    pub fn is_complete(&self) -> bool {
        self.recipients.iter().all(|r| r.state.is_final())
    }

    /// The id as operators see it ([`format_queue_id`]).
    pub fn id_text(&self) -> String {
        format_queue_id(self.id)
    }
}

/// A queue id as text: the creating core and the sequence in uppercase hex, `C-SEQ`
/// (e.g. `0-1F`); [`parse_queue_id`] reads it back.
pub fn format_queue_id(id: u64) -> String {
    let core = id >> MAILBOX_SEQ_BITS;
    let seq = id & ((1u64 << MAILBOX_SEQ_BITS) - 1);
    format!("{core:X}-{seq:X}")
}

/// Reads an id written by [`format_queue_id`] (case-insensitive).
pub fn parse_queue_id(text: &str) -> Option<u64> {
    let (core, seq) = text.split_once('-')?;
    let core = u16::from_str_radix(core, 16).ok()?;
    let seq = u64::from_str_radix(seq, 16).ok()?;
    if seq >> MAILBOX_SEQ_BITS != 0 {
        return None;
    }
    Some((u64::from(core) << MAILBOX_SEQ_BITS) | seq)
}

/// The core that owns entry `id` when the server runs `ncores` cores.
pub fn queue_owner(id: u64, ncores: usize) -> usize {
    let core = (id >> MAILBOX_SEQ_BITS) as usize;
    if core < ncores {
        core
    } else {
        core % ncores.max(1)
    }
}

/// What [`Store::enqueue`] takes: a message whose blob is staged, and its envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewQueueEntry {
    pub blob: BlobRef,
    pub smtp_id: String,
    pub sender: String,
    pub recipients: Vec<QueueRecipient>,
    pub smtputf8: bool,
    pub body_8bitmime: bool,
    /// Unix seconds.
    pub arrival: i64,
    pub authenticated: Option<String>,
    pub ret: Option<u8>,
    pub envid: Option<String>,
}

/// A recipient's new state for [`Store::queue_update`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientChange {
    pub index: usize,
    pub state: RecipientState,
    pub attempts: u32,
    pub next_try: i64,
    pub flags: u8,
    /// Cut to [`QUEUE_ERROR_BYTES_MAX`] bytes.
    pub error: String,
}

/// The queue part of one core's index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueIndex {
    /// Entries this core owns, by id (ids ascend with creation per core).
    pub(crate) entries: BTreeMap<u64, QueueEntry>,
    /// Next per-core sequence for new ids.
    pub(crate) seq_next: u64,
    /// Highest id sequence of every creating core, as recovered (never reused).
    pub(crate) seq_max: Vec<(u16, u64)>,
    /// Per entry, the next update sequence to hand out (ahead of `seq_highest` while
    /// updates are in flight; only entries with one in flight).
    pub(crate) update_seq_next: BTreeMap<u64, u64>,
    /// Entries whose `QueueDone` is in flight: they take no more updates.
    pub(crate) done_in_flight: BTreeSet<u64>,
}

impl QueueIndex {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = &QueueEntry> {
        self.entries.values()
    }

    pub fn entry(&self, id: u64) -> Option<&QueueEntry> {
        self.entries.get(&id)
    }

    /// Publishes (live) or applies (recovery, in order) one queue record; returns false if
    /// it did not apply (duplicate add, unknown entry, stale update).
    pub(crate) fn apply(&mut self, rec: &MetaRecord) -> bool {
        match rec {
            MetaRecord::QueueAdd(a) => {
                if self.entries.contains_key(&a.id) {
                    return false;
                }
                self.entries.insert(a.id, QueueEntry::from_add(a));
                true
            }
            MetaRecord::QueueUpdate(u) => match self.entries.get_mut(&u.id) {
                Some(e) => {
                    let applied = e.apply_update(u);
                    if self
                        .update_seq_next
                        .get(&u.id)
                        .is_some_and(|&n| n <= u.seq + 1)
                    {
                        self.update_seq_next.remove(&u.id);
                    }
                    applied
                }
                None => false,
            },
            MetaRecord::QueueDone(d) => {
                self.update_seq_next.remove(&d.id);
                self.done_in_flight.remove(&d.id);
                self.entries.remove(&d.id).is_some()
            }
            _ => false,
        }
    }

    /// Heap bytes held (an estimate from capacities).
    pub fn heap_bytes(&self) -> usize {
        let per = std::mem::size_of::<(u64, QueueEntry)>() + 16;
        self.entries
            .values()
            .map(|e| {
                per + e.smtp_id.capacity()
                    + e.sender.capacity()
                    + e.last_error.capacity()
                    + e.recipients.capacity() * std::mem::size_of::<QueuedRecipient>()
                    + e.recipients
                        .iter()
                        .map(|r| {
                            r.address.capacity()
                                + r.error.capacity()
                                + r.orcpt.as_ref().map_or(0, String::capacity)
                        })
                        .sum::<usize>()
            })
            .sum()
    }
}

/// Cuts `text` to at most `max` bytes at a character boundary.
pub fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn invalid(id: u64, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidQueueEntry {
        id: format_queue_id(id),
        reason: reason.into(),
    }
}

/// Checks a new entry against every limit (before anything is allocated or written).
fn check_new(e: &NewQueueEntry) -> Result<(), StoreError> {
    let bad = |reason: String| Err(invalid(0, reason));
    if e.recipients.is_empty() {
        return bad("no recipients".into());
    }
    if e.recipients.len() > QUEUE_RECIPIENTS_MAX {
        return Err(StoreError::TooLarge {
            what: "queue entry recipient list",
            bytes: e.recipients.len(),
            max: QUEUE_RECIPIENTS_MAX,
        });
    }
    let strings = [
        ("sender", e.sender.len(), USER_BYTES_MAX),
        ("SMTP id", e.smtp_id.len(), SMTP_ID_BYTES_MAX),
        (
            "authenticated user",
            e.authenticated.as_ref().map_or(0, String::len),
            USER_BYTES_MAX,
        ),
        (
            "ENVID",
            e.envid.as_ref().map_or(0, String::len),
            ENVID_BYTES_MAX,
        ),
    ];
    for (what, len, max) in strings {
        if len > max {
            return bad(format!("{what} of {len} bytes exceeds {max}"));
        }
    }
    for r in &e.recipients {
        if r.address.is_empty() || r.address.len() > USER_BYTES_MAX {
            return bad(format!(
                "recipient address of {} bytes (1..={USER_BYTES_MAX})",
                r.address.len()
            ));
        }
        if r.orcpt.as_ref().is_some_and(|o| o.len() > ORCPT_BYTES_MAX) {
            return bad(format!("ORCPT longer than {ORCPT_BYTES_MAX} bytes"));
        }
    }
    let has_nul = |s: &str| s.bytes().any(|b| matches!(b, 0 | b'\r' | b'\n'));
    if has_nul(&e.sender) || e.recipients.iter().any(|r| has_nul(&r.address)) {
        return bad("an address contains NUL, CR or LF".into());
    }
    Ok(())
}

/// A generous bound on the encoded size of a queue record with these strings and
/// `recipients` list elements (for `wait_room`; the real record is pushed whatever its
/// size).
fn queue_record_bytes(strings_bytes: usize, recipients: usize) -> usize {
    RECORD_HEADER_BYTES + 256 + strings_bytes + recipients * 64
}

impl Store {
    /// Appends a `QueueAdd` (group-committed with the other meta records of this core) and
    /// returns the new entry's id once it is durable and published. The entry's blob may
    /// still be in flight (see the module doc): the caller acknowledges the message only
    /// when the blob is durable too, and marks the entry done (`DoneReason::Lost`) if the
    /// blob fails.
    pub async fn enqueue(&self, entry: NewQueueEntry) -> Result<u64, StoreError> {
        check_new(&entry)?;
        super::ops::check_blob(&entry.blob)?;
        if entry.blob.offset < SEGMENT_HEADER_BYTES as u64 {
            return Err(invalid(0, "blob reference inside a segment header"));
        }
        let strings = entry.sender.len()
            + entry.smtp_id.len()
            + entry.authenticated.as_ref().map_or(0, String::len)
            + entry.envid.as_ref().map_or(0, String::len)
            + entry
                .recipients
                .iter()
                .map(|r| r.address.len() + r.orcpt.as_ref().map_or(0, String::len))
                .sum::<usize>();
        self.inner
            .meta
            .wait_room(queue_record_bytes(strings, entry.recipients.len()))
            .await;
        // No await from here to the push: ids enter the log in allocation order.
        let id = {
            let mut idx = self.inner.index.borrow_mut();
            let q = &mut idx.queue;
            let in_flight = q.done_in_flight.len();
            if q.entries.len().saturating_sub(in_flight) >= QUEUE_ENTRIES_MAX {
                return Err(StoreError::QueueFull {
                    max: QUEUE_ENTRIES_MAX,
                });
            }
            let seq = q.seq_next.max(1);
            if seq >> MAILBOX_SEQ_BITS != 0 {
                return Err(StoreError::Exhausted {
                    user: String::new(),
                    mailbox: "outbound queue".into(),
                    what: "queue ids",
                });
            }
            q.seq_next = seq + 1;
            (u64::from(idx.core) << MAILBOX_SEQ_BITS) | seq
        };
        let rec = QueueAdd {
            id,
            blob: entry.blob,
            smtp_id: entry.smtp_id,
            sender: entry.sender,
            recipients: entry.recipients,
            smtputf8: entry.smtputf8,
            body_8bitmime: entry.body_8bitmime,
            arrival: entry.arrival,
            authenticated: entry.authenticated,
            ret: entry.ret,
            envid: entry.envid,
        };
        let ticket = self.push_meta(MetaRecord::QueueAdd(rec))?;
        ticket.wait().await?;
        Ok(id)
    }

    /// Every entry in this core's queue (published state), ascending by id.
    pub fn queue_entries(&self) -> Vec<QueueEntry> {
        self.inner.index.borrow().queue.entries().cloned().collect()
    }

    /// One entry of this core's queue.
    pub fn queue_entry(&self, id: u64) -> Option<QueueEntry> {
        self.inner.index.borrow().queue.entry(id).cloned()
    }

    /// Entries in this core's queue.
    pub fn queue_len(&self) -> usize {
        self.inner.index.borrow().queue.len()
    }

    /// Records new states for some recipients of entry `id` (owned by this core); returns
    /// the update's sequence once it is durable and published.
    pub async fn queue_update(
        &self,
        id: u64,
        at: i64,
        changes: &[RecipientChange],
    ) -> Result<u64, StoreError> {
        if changes.is_empty() {
            return Err(invalid(id, "an update needs at least one recipient"));
        }
        let count = self.live_entry(id)?;
        let mut recipients = Vec::with_capacity(changes.len());
        for c in changes {
            if c.index >= count {
                return Err(invalid(
                    id,
                    format!("recipient index {} of {count}", c.index),
                ));
            }
            recipients.push(RecipientUpdate {
                index: c.index as u32,
                state: c.state as u8,
                attempts: c.attempts,
                next_try: c.next_try,
                flags: c.flags,
                error: clip(&c.error, QUEUE_ERROR_BYTES_MAX).to_owned(),
            });
        }
        let strings = recipients.iter().map(|r| r.error.len()).sum();
        self.inner
            .meta
            .wait_room(queue_record_bytes(strings, recipients.len()))
            .await;
        // Checked again after the wait: the entry may have been finished meanwhile.
        self.live_entry(id)?;
        let seq = {
            let mut idx = self.inner.index.borrow_mut();
            let q = &mut idx.queue;
            let highest = q.entries.get(&id).map_or(0, |e| e.seq_highest);
            let next = q.update_seq_next.entry(id).or_insert(highest + 1);
            let seq = (*next).max(highest + 1);
            *next = seq + 1;
            seq
        };
        let ticket = self.push_meta(MetaRecord::QueueUpdate(QueueUpdate {
            id,
            seq,
            at,
            recipients,
        }))?;
        ticket.wait().await?;
        Ok(seq)
    }

    /// Takes entry `id` out of the queue for good; returns once that is durable.
    pub async fn queue_done(&self, id: u64, reason: DoneReason) -> Result<(), StoreError> {
        self.live_entry(id)?;
        self.inner.meta.wait_room(queue_record_bytes(0, 0)).await;
        self.live_entry(id)?;
        self.inner
            .index
            .borrow_mut()
            .queue
            .done_in_flight
            .insert(id);
        let pushed = self.push_meta(MetaRecord::QueueDone(QueueDone {
            id,
            reason: reason as u8,
        }));
        let result = match pushed {
            Ok(ticket) => ticket.wait().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if result.is_err() {
            // Not durable: the entry stays (a later attempt may finish it again).
            let mut idx = self.inner.index.borrow_mut();
            idx.queue.done_in_flight.remove(&id);
        }
        result
    }

    /// The recipient count of a published entry that is not being finished.
    fn live_entry(&self, id: u64) -> Result<usize, StoreError> {
        let idx = self.inner.index.borrow();
        match idx.queue.entries.get(&id) {
            Some(e) if !idx.queue.done_in_flight.contains(&id) => Ok(e.recipients.len()),
            _ => Err(StoreError::NoSuchQueueEntry {
                id: format_queue_id(id),
            }),
        }
    }
}

impl CoreIndex {
    /// This core's outbound queue.
    pub fn queue(&self) -> &QueueIndex {
        &self.queue
    }
}

/// Every queue entry of every core, ascending by id, read offline (`ringmail queue list`).
///
/// Read-only and safe while the server runs, like `export`: nothing in the store is
/// written or truncated, and each log is read up to its first invalid record (a running
/// server may be writing the tail). So the list is the queue as of the last durable batch;
/// an entry whose blob is not (yet) in the valid part of a blob log is left out.
pub fn list_offline(data_dir: &Path) -> Result<Vec<QueueEntry>, StoreError> {
    let loaded = super::recover::load(data_dir, 0, true)?;
    Ok(loaded.global.queue.entries.into_values().collect())
}

/// One line of `ringmail queue list`, tab-separated: id, `<sender>`, recipients (comma
/// separated, each with `(state)` once attempted), attempts, next try (RFC 3339 UTC, `-`
/// when every recipient is final), last error (`-` if none). Control characters of
/// remote texts are shown as `?`.
pub fn list_line(e: &QueueEntry) -> String {
    let mut rcpts = String::new();
    for (i, r) in e.recipients.iter().enumerate() {
        if i > 0 {
            rcpts.push(',');
        }
        rcpts.push_str(&r.address);
        if r.state != RecipientState::Pending {
            rcpts.push('(');
            rcpts.push_str(r.state.name());
            rcpts.push(')');
        }
    }
    let next = e.next_try().map_or_else(|| "-".to_string(), rfc3339);
    let error = if e.last_error.is_empty() {
        "-".to_string()
    } else {
        e.last_error
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect()
    };
    format!(
        "{}\t<{}>\t{}\t{}\t{}\t{}",
        e.id_text(),
        e.sender
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect::<String>(),
        rcpts,
        e.attempts(),
        next,
        error
    )
}

/// `2026-11-22T08:38:31Z`.
pub fn rfc3339(unix: i64) -> String {
    let t = crate::time::DateTime::from_unix(unix);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(id: u64, n: usize) -> QueueAdd {
        QueueAdd {
            id,
            blob: BlobRef {
                core: 0,
                segment: 1,
                offset: 64,
                len: 10,
            },
            smtp_id: "1A2B".into(),
            sender: "alice@example.test".into(),
            recipients: (0..n)
                .map(|i| QueueRecipient {
                    address: format!("r{i}@remote.test"),
                    notify: None,
                    orcpt: None,
                })
                .collect(),
            smtputf8: false,
            body_8bitmime: true,
            arrival: 1000,
            authenticated: Some("alice@example.test".into()),
            ret: None,
            envid: None,
        }
    }

    fn update(id: u64, seq: u64, index: u32, state: RecipientState, error: &str) -> QueueUpdate {
        QueueUpdate {
            id,
            seq,
            at: 2000 + seq as i64,
            recipients: vec![RecipientUpdate {
                index,
                state: state as u8,
                attempts: seq as u32,
                next_try: 3000 + seq as i64,
                flags: 0,
                error: error.into(),
            }],
        }
    }

    #[test]
    fn queue_ids_round_trip_as_text() {
        for (core, seq) in [(0u64, 1u64), (1, 0x1F), (255, (1 << 48) - 1), (0xFFFF, 7)] {
            let id = (core << MAILBOX_SEQ_BITS) | seq;
            let text = format_queue_id(id);
            assert_eq!(parse_queue_id(&text), Some(id), "{text}");
            assert_eq!(parse_queue_id(&text.to_lowercase()), Some(id));
        }
        assert_eq!(format_queue_id((1 << 48) | 0x1F), "1-1F");
        for bad in [
            "",
            "1",
            "-1",
            "1-",
            "x-1",
            "1-1000000000000",
            "10000-1",
            "1-1-1",
        ] {
            assert_eq!(parse_queue_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn owner_is_the_creating_core_while_it_exists() {
        let id = |core: u64| (core << MAILBOX_SEQ_BITS) | 5;
        assert_eq!(queue_owner(id(0), 1), 0);
        assert_eq!(queue_owner(id(1), 2), 1);
        assert_eq!(queue_owner(id(3), 2), 1);
        assert_eq!(queue_owner(id(4), 2), 0);
    }

    #[test]
    fn updates_apply_in_seq_order_and_stale_ones_are_skipped() {
        let mut q = QueueIndex::default();
        assert!(q.apply(&MetaRecord::QueueAdd(add(7, 3))));
        assert!(!q.apply(&MetaRecord::QueueAdd(add(7, 1))), "duplicate add");
        let e = q.entry(7).unwrap();
        assert_eq!(e.next_try(), Some(1000));
        assert_eq!(e.attempts(), 0);
        assert!(!e.is_complete());
        assert!(q.apply(&MetaRecord::QueueUpdate(update(
            7,
            1,
            0,
            RecipientState::Deferred,
            "451 4.3.0 try later"
        ))));
        assert!(q.apply(&MetaRecord::QueueUpdate(update(
            7,
            2,
            1,
            RecipientState::Delivered,
            ""
        ))));
        // Re-reading seq 1 (a checkpoint already holds it) changes nothing.
        let before = q.entry(7).cloned();
        assert!(!q.apply(&MetaRecord::QueueUpdate(update(
            7,
            1,
            0,
            RecipientState::Failed,
            "x"
        ))));
        assert_eq!(q.entry(7).cloned(), before);
        let e = q.entry(7).unwrap();
        assert_eq!(e.recipients[0].state, RecipientState::Deferred);
        assert_eq!(e.recipients[0].next_try, 3001);
        assert_eq!(e.recipients[1].state, RecipientState::Delivered);
        assert_eq!(e.recipients[2].state, RecipientState::Pending);
        assert_eq!(e.last_error, "451 4.3.0 try later");
        assert_eq!(e.attempts(), 2);
        assert_eq!(e.last_try, 2002);
        // Pending recipient 2 is due at arrival, before recipient 0's retry.
        assert_eq!(e.next_try(), Some(1000));
        assert!(q.apply(&MetaRecord::QueueUpdate(update(
            7,
            3,
            2,
            RecipientState::Failed,
            "550 5.1.1 no such user"
        ))));
        assert_eq!(q.entry(7).unwrap().next_try(), Some(3001));
        assert!(q.apply(&MetaRecord::QueueUpdate(update(
            7,
            4,
            0,
            RecipientState::Delivered,
            ""
        ))));
        let e = q.entry(7).unwrap();
        assert!(e.is_complete());
        assert_eq!(e.next_try(), None);
        assert_eq!(e.last_error, "550 5.1.1 no such user");
        // An update for an unknown entry or recipient does not apply or panic.
        assert!(!q.apply(&MetaRecord::QueueUpdate(update(
            8,
            1,
            0,
            RecipientState::Failed,
            ""
        ))));
        assert!(q.apply(&MetaRecord::QueueUpdate(update(
            7,
            5,
            99,
            RecipientState::Failed,
            ""
        ))));
        assert!(q.apply(&MetaRecord::QueueDone(QueueDone {
            id: 7,
            reason: DoneReason::Finished as u8
        })));
        assert!(q.is_empty());
        assert!(!q.apply(&MetaRecord::QueueDone(QueueDone { id: 7, reason: 1 })));
    }

    #[test]
    fn list_lines_show_state_attempts_next_try_and_error() {
        let mut q = QueueIndex::default();
        q.apply(&MetaRecord::QueueAdd(add((1 << 48) | 0x2A, 2)));
        let e = q.entry((1 << 48) | 0x2A).unwrap();
        assert_eq!(
            list_line(e),
            "1-2A\t<alice@example.test>\tr0@remote.test,r1@remote.test\t0\t1970-01-01T00:16:40Z\t-"
        );
        q.apply(&MetaRecord::QueueUpdate(update(
            (1 << 48) | 0x2A,
            3,
            1,
            RecipientState::Deferred,
            "451 4.4.1 no answer\r\nfrom host",
        )));
        q.apply(&MetaRecord::QueueUpdate(update(
            (1 << 48) | 0x2A,
            4,
            0,
            RecipientState::Failed,
            "",
        )));
        let e = q.entry((1 << 48) | 0x2A).unwrap();
        assert_eq!(
            list_line(e),
            "1-2A\t<alice@example.test>\tr0@remote.test(failed),r1@remote.test(deferred)\t4\t\
             1970-01-01T00:50:03Z\t451 4.4.1 no answer??from host"
        );
        assert_eq!(rfc3339(1_763_800_711), "2025-11-22T08:38:31Z");
    }

    #[test]
    fn clip_cuts_at_a_character_boundary() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("abc", 2), "ab");
        assert_eq!(clip("aé", 2), "a");
        assert_eq!(clip("aé", 3), "aé");
        assert_eq!(clip("", 0), "");
    }

    #[test]
    fn new_entries_are_checked_against_the_limits() {
        let ok = NewQueueEntry {
            blob: add(1, 1).blob,
            smtp_id: "1".into(),
            sender: "".into(),
            recipients: add(1, 2).recipients,
            smtputf8: false,
            body_8bitmime: false,
            arrival: 0,
            authenticated: None,
            ret: None,
            envid: None,
        };
        assert!(check_new(&ok).is_ok());
        let mut e = ok.clone();
        e.recipients.clear();
        assert!(check_new(&e).is_err());
        let mut e = ok.clone();
        e.recipients = add(1, QUEUE_RECIPIENTS_MAX + 1).recipients;
        assert!(matches!(check_new(&e), Err(StoreError::TooLarge { .. })));
        let mut e = ok.clone();
        e.recipients[1].orcpt = Some("x".repeat(ORCPT_BYTES_MAX + 1));
        assert!(check_new(&e).is_err());
        let mut e = ok.clone();
        e.sender = "a\r\nb@x".into();
        assert!(check_new(&e).is_err());
        let mut e = ok.clone();
        e.envid = Some("e".repeat(ENVID_BYTES_MAX + 1));
        assert!(check_new(&e).is_err());
    }
}
