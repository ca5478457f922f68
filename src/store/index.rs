//! The in-memory index of one core: the mailboxes it owns and, per mailbox, a `Vec` of
//! fixed-size [`MessageEntry`] (40 bytes) sorted by UID.
//!
//! The same `apply` code folds meta records at recovery (in modseq order per mailbox) and
//! publishes them live once they are durable (in log order, which is UID order). Besides
//! published state each mailbox carries allocation counters (`uid_next`, `modseq_next`)
//! that run ahead of what is durable while batches are in flight.

use std::collections::HashMap;

use super::record::{MailboxCreate, MetaRecord};
use super::BlobRef;

/// One message as the index keeps it. Fields are ordered for a 40-byte layout; the blob
/// offset is a u32 because segments are capped at 4 GiB (`SEGMENT_BYTES_LIMIT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MessageEntry {
    pub modseq: u64,
    /// Unix seconds.
    pub internal_date: i64,
    pub uid: u32,
    pub flags: u32,
    blob_len: u32,
    blob_segment: u32,
    blob_offset: u32,
    blob_core: u16,
}

/// Bytes per message in the index (not counting the Vec's spare capacity).
pub const MESSAGE_ENTRY_BYTES: usize = std::mem::size_of::<MessageEntry>();
const _: () = assert!(MESSAGE_ENTRY_BYTES == 40);

impl MessageEntry {
    /// None if the blob offset does not fit the compact form (never for segments written
    /// by this store, whose size is capped below 4 GiB).
    pub fn new(
        uid: u32,
        flags: u32,
        modseq: u64,
        internal_date: i64,
        blob: BlobRef,
    ) -> Option<MessageEntry> {
        Some(MessageEntry {
            modseq,
            internal_date,
            uid,
            flags,
            blob_len: blob.len,
            blob_segment: blob.segment,
            blob_offset: u32::try_from(blob.offset).ok()?,
            blob_core: blob.core,
        })
    }

    /// Converts a validated archived entry (from a checkpoint).
    pub fn from_archived(a: &ArchivedMessageEntry) -> MessageEntry {
        MessageEntry {
            modseq: a.modseq.to_native(),
            internal_date: a.internal_date.to_native(),
            uid: a.uid.to_native(),
            flags: a.flags.to_native(),
            blob_len: a.blob_len.to_native(),
            blob_segment: a.blob_segment.to_native(),
            blob_offset: a.blob_offset.to_native(),
            blob_core: a.blob_core.to_native(),
        }
    }

    pub fn blob(&self) -> BlobRef {
        BlobRef {
            core: self.blob_core,
            segment: self.blob_segment,
            offset: u64::from(self.blob_offset),
            len: self.blob_len,
        }
    }
}

/// One mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    pub(crate) id: u64,
    pub(crate) user: String,
    pub(crate) name: String,
    pub(crate) uid_validity: u32,
    /// Highest UID ever durable in this mailbox (expunged ones included).
    pub(crate) uid_max: u32,
    /// Next UID to hand out (≥ uid_max + 1; ahead of it while appends are in flight).
    pub(crate) uid_next: u32,
    /// Highest durable modseq.
    pub(crate) modseq_highest: u64,
    /// Next modseq to hand out.
    pub(crate) modseq_next: u64,
    pub(crate) messages: Vec<MessageEntry>,
}

impl Mailbox {
    pub(crate) fn new(c: &MailboxCreate) -> Mailbox {
        Mailbox {
            id: c.mailbox_id,
            user: c.user.clone(),
            name: c.name.clone(),
            uid_validity: c.uid_validity,
            uid_max: 0,
            uid_next: 1,
            modseq_highest: 0,
            modseq_next: 1,
            messages: Vec::new(),
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }
    pub fn user(&self) -> &str {
        &self.user
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn messages(&self) -> &[MessageEntry] {
        &self.messages
    }
    pub fn status(&self) -> MailboxStatus {
        MailboxStatus {
            uid_validity: self.uid_validity,
            uid_next: self.uid_max.saturating_add(1),
            highest_modseq: self.modseq_highest,
            messages: self.messages.len(),
        }
    }

    fn find(&self, uid: u32) -> Result<usize, usize> {
        self.messages.binary_search_by_key(&uid, |m| m.uid)
    }

    pub(crate) fn get(&self, uid: u32) -> Option<&MessageEntry> {
        self.find(uid).ok().map(|i| &self.messages[i])
    }

    /// Makes the allocation counters consistent with what is durable (after recovery).
    pub(crate) fn reset_allocation(&mut self) {
        self.uid_next = self.uid_max.saturating_add(1).max(1);
        self.modseq_next = self.modseq_highest.saturating_add(1).max(1);
    }

    fn note_modseq(&mut self, modseq: u64) {
        self.modseq_highest = self.modseq_highest.max(modseq);
        self.modseq_next = self.modseq_next.max(modseq.saturating_add(1));
    }

    /// Applies one append/flags/expunge record. `defer_expunge` collects expunged UIDs
    /// instead of removing them one by one (recovery removes them in one pass).
    pub(crate) fn apply(
        &mut self,
        rec: &MetaRecord,
        defer_expunge: Option<&mut Vec<u32>>,
    ) -> Applied {
        match rec {
            MetaRecord::MailboxCreate(_) => Applied::Ignored,
            MetaRecord::MessageAppend(a) => {
                let Some(entry) =
                    MessageEntry::new(a.uid, a.flags, a.modseq, a.internal_date, a.blob)
                else {
                    return Applied::Ignored;
                };
                if a.uid == 0 {
                    return Applied::Ignored;
                }
                self.uid_max = self.uid_max.max(a.uid);
                self.uid_next = self.uid_next.max(a.uid.saturating_add(1));
                self.note_modseq(a.modseq);
                match self.messages.last() {
                    Some(last) if last.uid >= a.uid => match self.find(a.uid) {
                        Ok(_) => return Applied::Ignored,
                        Err(at) => self.messages.insert(at, entry),
                    },
                    _ => self.messages.push(entry),
                }
                Applied::Done
            }
            MetaRecord::FlagsSet(f) => {
                self.note_modseq(f.modseq);
                match self.find(f.uid) {
                    Ok(i) => {
                        let m = &mut self.messages[i];
                        if f.modseq > m.modseq {
                            m.flags = f.flags;
                            m.modseq = f.modseq;
                        }
                        Applied::Done
                    }
                    Err(_) => Applied::Ignored,
                }
            }
            MetaRecord::Expunge(x) => {
                self.note_modseq(x.modseq);
                self.uid_max = self.uid_max.max(x.uid);
                self.uid_next = self.uid_next.max(x.uid.saturating_add(1));
                if let Some(list) = defer_expunge {
                    list.push(x.uid);
                    return Applied::Done;
                }
                match self.find(x.uid) {
                    Ok(i) => {
                        self.messages.remove(i);
                        Applied::Done
                    }
                    Err(_) => Applied::Ignored,
                }
            }
        }
    }

    /// Removes every UID in `uids` in one pass.
    pub(crate) fn expunge_all(&mut self, uids: &mut [u32]) {
        if uids.is_empty() {
            return;
        }
        uids.sort_unstable();
        self.messages
            .retain(|m| uids.binary_search(&m.uid).is_err());
    }
}

/// What `apply` did with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    Done,
    /// Duplicate or dangling (flags for an unknown UID): counted, not an error.
    Ignored,
}

/// A mailbox's summary, as IMAP SELECT/STATUS needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailboxStatus {
    pub uid_validity: u32,
    /// Next UID that will be assigned (as durable; IMAP's UIDNEXT).
    pub uid_next: u32,
    pub highest_modseq: u64,
    pub messages: usize,
}

/// Where an appendable log continues, as recovery left it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogTail {
    /// Current (last) segment; 0 when the log has no segment yet.
    pub segment: u32,
    pub nonce: u64,
    /// Valid end of the current segment (the next record goes here).
    pub end: u64,
    /// Sequence for the next new segment (never reuses a set-aside name).
    pub next_sequence: u32,
    /// Offset and CRC of the last valid record of the current segment, if any.
    pub last_record: Option<(u64, u32)>,
}

/// A position in one core's meta log that a checkpoint covers, with an anchor that
/// proves the log still holds the same bytes there.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct LogPosition {
    pub core: u16,
    /// 0: the log had no segment (everything in it is after this position).
    pub segment: u32,
    pub nonce: u64,
    pub end: u64,
    /// Offset and CRC of the record ending at `end` (0, 0 when `end` is the header end).
    pub last_record_offset: u64,
    pub last_record_crc: u32,
}

impl LogPosition {
    pub(crate) fn from_tail(core: u16, t: &LogTail) -> LogPosition {
        let (off, crc) = t.last_record.unwrap_or((0, 0));
        LogPosition {
            core,
            segment: t.segment,
            nonce: t.nonce,
            end: t.end,
            last_record_offset: off,
            last_record_crc: crc,
        }
    }
}

/// The index handed from recovery to one core's [`Store`](super::Store): the mailboxes
/// this core owns, the id/validity counters, and where its two logs continue.
#[derive(Clone, Debug, Default)]
pub struct CoreIndex {
    pub(crate) core: u16,
    pub(crate) ncores: u16,
    pub(crate) mailboxes: HashMap<u64, Mailbox>,
    pub(crate) by_name: HashMap<String, HashMap<String, u64>>,
    /// Next per-core sequence for new mailbox ids.
    pub(crate) mailbox_seq_next: u64,
    /// Highest mailbox-id sequence of every creating core, as recovered (checkpoints
    /// carry it so an id is never reused even if its mailbox was dropped).
    pub(crate) mailbox_seq_max: Vec<(u16, u64)>,
    /// Highest UIDVALIDITY handed out by anyone; new ones are above it.
    pub(crate) uid_validity_last: u32,
    pub(crate) blob_tail: LogTail,
    pub(crate) meta_tail: LogTail,
    /// Every meta log's position at recovery (this core's own log advances past it).
    pub(crate) covered: Vec<LogPosition>,
    /// Checkpoint generation this run writes.
    pub(crate) generation: u64,
    /// Checkpoint generation recovery loaded (0: none).
    pub(crate) checkpoint_used: u64,
}

/// Mailbox ids are `(creating core << 48) | sequence`.
pub const MAILBOX_SEQ_BITS: u32 = 48;

impl CoreIndex {
    pub fn core(&self) -> u16 {
        self.core
    }

    /// Every meta log's position at recovery (what a checkpoint of this index covers).
    pub fn covered(&self) -> &[LogPosition] {
        &self.covered
    }

    /// The checkpoint generation this run writes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn mailbox_count(&self) -> usize {
        self.mailboxes.len()
    }

    pub fn message_count(&self) -> usize {
        self.mailboxes.values().map(|m| m.messages.len()).sum()
    }

    pub fn mailbox(&self, user: &str, name: &str) -> Option<&Mailbox> {
        let id = self.by_name.get(user)?.get(name)?;
        self.mailboxes.get(id)
    }

    pub(crate) fn mailbox_mut(&mut self, user: &str, name: &str) -> Option<&mut Mailbox> {
        let id = *self.by_name.get(user)?.get(name)?;
        self.mailboxes.get_mut(&id)
    }

    pub fn mailboxes(&self) -> impl Iterator<Item = &Mailbox> {
        self.mailboxes.values()
    }

    /// Adds a mailbox. If another mailbox already has the same user and name (possible
    /// only after a lost or damaged log), the lower id wins deterministically; returns
    /// false if `m` was not the winner.
    pub(crate) fn insert_mailbox(&mut self, m: Mailbox) -> bool {
        let names = self.by_name.entry(m.user.clone()).or_default();
        if let Some(&other) = names.get(&m.name) {
            if other <= m.id {
                return false;
            }
            self.mailboxes.remove(&other);
        }
        names.insert(m.name.clone(), m.id);
        self.uid_validity_last = self.uid_validity_last.max(m.uid_validity);
        self.mailboxes.insert(m.id, m);
        true
    }

    /// Publishes one durable record (live path, after its batch was synced).
    pub(crate) fn publish(&mut self, rec: &MetaRecord) {
        match rec {
            MetaRecord::MailboxCreate(c) => {
                self.insert_mailbox(Mailbox::new(c));
            }
            other => {
                if let Some(mb) = self.mailboxes.get_mut(&other.mailbox_id()) {
                    mb.apply(other, None);
                }
            }
        }
    }

    /// Heap bytes held by the index, computed from capacities (an estimate of the
    /// allocator's view: hash table control bytes are approximated).
    pub fn heap_bytes(&self) -> usize {
        let mut total = self.mailboxes.capacity() * (std::mem::size_of::<(u64, Mailbox)>() + 1)
            + self.by_name.capacity() * (std::mem::size_of::<(String, HashMap<String, u64>)>() + 1);
        for mb in self.mailboxes.values() {
            total += mb.messages.capacity() * MESSAGE_ENTRY_BYTES
                + mb.user.capacity()
                + mb.name.capacity();
        }
        for (user, names) in &self.by_name {
            total += user.capacity()
                + names.capacity() * (std::mem::size_of::<(String, u64)>() + 1)
                + names.keys().map(String::capacity).sum::<usize>();
        }
        total
    }

    /// A canonical, comparable view: (user, mailbox) → (uid_validity, status, messages).
    pub fn canonical(
        &self,
    ) -> std::collections::BTreeMap<(String, String), (MailboxStatus, Vec<MessageEntry>)> {
        self.mailboxes
            .values()
            .map(|m| {
                (
                    (m.user.clone(), m.name.clone()),
                    (m.status(), m.messages.clone()),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::{Expunge, FlagsSet, MessageAppend};

    fn blob(n: u64) -> BlobRef {
        BlobRef {
            core: 1,
            segment: 2,
            offset: 40 + n * 100,
            len: 88,
        }
    }

    fn append(uid: u32, modseq: u64) -> MetaRecord {
        MetaRecord::MessageAppend(MessageAppend {
            mailbox_id: 1,
            uid,
            modseq,
            blob: blob(uid as u64),
            internal_date: 1000 + uid as i64,
            flags: 0,
        })
    }

    fn mailbox() -> Mailbox {
        Mailbox::new(&MailboxCreate {
            mailbox_id: 1,
            user: "u".into(),
            name: "INBOX".into(),
            uid_validity: 7,
        })
    }

    #[test]
    fn entry_round_trips_blob_ref() {
        let b = BlobRef {
            core: 513,
            segment: 99_999_999,
            offset: u32::MAX as u64,
            len: 123_456,
        };
        let e = MessageEntry::new(9, 3, 77, -1, b).unwrap();
        assert_eq!(e.blob(), b);
        assert!(MessageEntry::new(
            9,
            3,
            77,
            -1,
            BlobRef {
                offset: 1 << 32,
                ..b
            }
        )
        .is_none());
    }

    #[test]
    fn apply_keeps_uid_order_and_counters() {
        let mut m = mailbox();
        for (uid, ms) in [(1, 1), (2, 2), (5, 3)] {
            assert_eq!(m.apply(&append(uid, ms), None), Applied::Done);
        }
        // Out of order append is inserted in place; a duplicate is ignored.
        assert_eq!(m.apply(&append(3, 4), None), Applied::Done);
        assert_eq!(m.apply(&append(3, 5), None), Applied::Ignored);
        let uids: Vec<u32> = m.messages.iter().map(|e| e.uid).collect();
        assert_eq!(uids, vec![1, 2, 3, 5]);
        let flags = MetaRecord::FlagsSet(FlagsSet {
            mailbox_id: 1,
            uid: 2,
            modseq: 6,
            flags: 4,
        });
        assert_eq!(m.apply(&flags, None), Applied::Done);
        // An older flags record does not override a newer one.
        let stale = MetaRecord::FlagsSet(FlagsSet {
            mailbox_id: 1,
            uid: 2,
            modseq: 2,
            flags: 8,
        });
        m.apply(&stale, None);
        assert_eq!(m.get(2).unwrap().flags, 4);
        let gone = MetaRecord::Expunge(Expunge {
            mailbox_id: 1,
            uid: 5,
            modseq: 7,
        });
        assert_eq!(m.apply(&gone, None), Applied::Done);
        assert!(m.get(5).is_none());
        m.reset_allocation();
        assert_eq!((m.uid_max, m.uid_next), (5, 6));
        assert_eq!((m.modseq_highest, m.modseq_next), (7, 8));
        assert_eq!(m.status().messages, 3);
    }

    #[test]
    fn deferred_expunge_matches_immediate() {
        let mut a = mailbox();
        let mut b = mailbox();
        let mut deferred = Vec::new();
        for uid in 1..=10 {
            a.apply(&append(uid, uid as u64), None);
            b.apply(&append(uid, uid as u64), None);
        }
        for (i, uid) in [3u32, 7, 1].into_iter().enumerate() {
            let x = MetaRecord::Expunge(Expunge {
                mailbox_id: 1,
                uid,
                modseq: 20 + i as u64,
            });
            a.apply(&x, None);
            b.apply(&x, Some(&mut deferred));
        }
        b.expunge_all(&mut deferred);
        assert_eq!(a, b);
    }

    #[test]
    fn duplicate_names_keep_the_lowest_id() {
        let mut idx = CoreIndex::default();
        let mk = |id| {
            Mailbox::new(&MailboxCreate {
                mailbox_id: id,
                user: "u".into(),
                name: "INBOX".into(),
                uid_validity: id as u32,
            })
        };
        assert!(idx.insert_mailbox(mk(5)));
        assert!(!idx.insert_mailbox(mk(9)));
        assert!(idx.insert_mailbox(mk(2)));
        assert_eq!(idx.mailbox("u", "INBOX").unwrap().id, 2);
        assert_eq!(idx.mailbox_count(), 1);
    }
}
