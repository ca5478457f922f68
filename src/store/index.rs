//! The in-memory index of one core: the mailboxes it owns and, per mailbox, a `Vec` of
//! fixed-size [`MessageEntry`] (40 bytes) sorted by UID, plus per-user account state
//! (initialised or not, subscriptions).
//!
//! The same `apply` code folds meta records at recovery (in modseq order per mailbox) and
//! publishes them live once they are durable (in log order). Besides published state each
//! mailbox carries allocation counters (`uid_next`, `modseq_next`) that run ahead of what
//! is durable while batches are in flight, and `pending`: the newest flags (or expunge) of
//! each message whose change is pushed but not yet published, so that a flag change
//! computed while another is in flight builds on it instead of losing it.
//!
//! Running counters (`unseen`, `deleted`, `size`) are kept by every change, so a STATUS
//! is O(1); `Mailbox::recount` recomputes them (checkpoint loading checks the stored
//! ones against it).

use std::collections::{BTreeSet, HashMap, HashSet};

use super::flags::{self, special_use};
use super::queue::QueueIndex;
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
/// A mailbox's `pending` map keeps its allocation when it empties only up to this
/// capacity (a bulk change of a million messages would otherwise pin ~24 MB for good).
const PENDING_KEPT_MAX: usize = 1024;

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

/// A change pushed to the meta log but not published yet (live only, never persisted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pending {
    Flags { flags: u32, modseq: u64 },
    Expunged { modseq: u64 },
}

impl Pending {
    fn modseq(self) -> u64 {
        match self {
            Pending::Flags { modseq, .. } | Pending::Expunged { modseq } => modseq,
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
    /// SPECIAL-USE bits ([`special_use`]).
    pub(crate) special_use: u8,
    /// Defined keywords as (bit, name), ascending by bit.
    pub(crate) keywords: Vec<(u8, String)>,
    /// Messages without `\Seen`.
    pub(crate) unseen: usize,
    /// Messages with `\Deleted`.
    pub(crate) deleted: usize,
    /// Sum of the messages' blob lengths.
    pub(crate) size: u64,
    /// Per UID: the newest change pushed but not published (see the module doc).
    pub(crate) pending: HashMap<u32, Pending>,
    /// A delete of this mailbox is in flight: no new records may be written for it.
    pub(crate) deleting: bool,
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
            special_use: 0,
            keywords: Vec::new(),
            unseen: 0,
            deleted: 0,
            size: 0,
            pending: HashMap::new(),
            deleting: false,
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
    pub fn uid_validity(&self) -> u32 {
        self.uid_validity
    }
    /// Highest durable (published) modseq: IMAP's HIGHESTMODSEQ.
    pub fn modseq_highest(&self) -> u64 {
        self.modseq_highest
    }
    /// SPECIAL-USE bits ([`special_use`]).
    pub fn special_use(&self) -> u8 {
        self.special_use
    }
    /// Defined keywords as (bit, name), ascending by bit (bit 5..=31 of the flags).
    pub fn keywords(&self) -> &[(u8, String)] {
        &self.keywords
    }
    /// The messages, ascending by UID (published state).
    pub fn messages(&self) -> &[MessageEntry] {
        &self.messages
    }
    pub fn status(&self) -> MailboxStatus {
        MailboxStatus {
            uid_validity: self.uid_validity,
            uid_next: self.uid_max.saturating_add(1),
            highest_modseq: self.modseq_highest,
            messages: self.messages.len(),
            unseen: self.unseen,
            deleted: self.deleted,
            size: self.size,
        }
    }

    /// The message with this UID (published state).
    pub fn message(&self, uid: u32) -> Option<&MessageEntry> {
        self.find(uid).ok().map(|i| &self.messages[i])
    }

    /// The keyword's bit, compared case-insensitively (keywords are ASCII atoms).
    pub fn keyword_bit(&self, name: &str) -> Option<u8> {
        self.keywords
            .iter()
            .find(|(_, k)| k.eq_ignore_ascii_case(name))
            .map(|(b, _)| *b)
    }

    /// The name of keyword bit `bit`, if defined.
    pub fn keyword_name(&self, bit: u8) -> Option<&str> {
        self.keywords
            .iter()
            .find(|(b, _)| *b == bit)
            .map(|(_, k)| k.as_str())
    }

    fn find(&self, uid: u32) -> Result<usize, usize> {
        self.messages.binary_search_by_key(&uid, |m| m.uid)
    }

    pub(crate) fn get(&self, uid: u32) -> Option<&MessageEntry> {
        self.message(uid)
    }

    /// The message's newest flags and modseq, counting changes in flight; None if it does
    /// not exist or its expunge is in flight.
    pub(crate) fn effective(&self, uid: u32) -> Option<(u32, u64)> {
        match self.pending.get(&uid) {
            Some(Pending::Expunged { .. }) => None,
            Some(Pending::Flags { flags, modseq }) => self.get(uid).map(|_| (*flags, *modseq)),
            None => self.get(uid).map(|m| (m.flags, m.modseq)),
        }
    }

    /// Forgets pending changes this caller made (its batch failed) unless a newer change
    /// replaced them.
    pub(crate) fn forget_pending(&mut self, made: &[(u32, u64)]) {
        for &(uid, modseq) in made {
            if self.pending.get(&uid).is_some_and(|p| p.modseq() == modseq) {
                self.pending.remove(&uid);
            }
        }
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

    fn count_in(&mut self, flags: u32, blob_len: u32) {
        self.unseen += usize::from(flags & flags::SEEN == 0);
        self.deleted += usize::from(flags & flags::DELETED != 0);
        self.size += u64::from(blob_len);
    }

    fn count_out(&mut self, flags: u32, blob_len: u32) {
        // Saturating: the counters are exact by construction, and a bug here must not
        // take the commit task down.
        self.unseen = self
            .unseen
            .saturating_sub(usize::from(flags & flags::SEEN == 0));
        self.deleted = self
            .deleted
            .saturating_sub(usize::from(flags & flags::DELETED != 0));
        self.size = self.size.saturating_sub(u64::from(blob_len));
    }

    /// Recomputes the running counters from the messages.
    pub(crate) fn recount(&mut self) {
        let (unseen, deleted, size) = counts(&self.messages);
        self.unseen = unseen;
        self.deleted = deleted;
        self.size = size;
    }

    /// Applies one per-mailbox record other than a create. `defer_expunge` collects
    /// expunged UIDs instead of removing them one by one (recovery removes them in one
    /// pass). A rename only changes `name` here: the caller keeps its name map.
    pub(crate) fn apply(
        &mut self,
        rec: &MetaRecord,
        defer_expunge: Option<&mut Vec<u32>>,
    ) -> Applied {
        match rec {
            MetaRecord::MailboxCreate(_)
            | MetaRecord::AccountInit(_)
            | MetaRecord::Subscription(_)
            | MetaRecord::QueueAdd(_)
            | MetaRecord::QueueUpdate(_)
            | MetaRecord::QueueDone(_) => Applied::Ignored,
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
                self.count_in(a.flags, a.blob.len);
                Applied::Done
            }
            MetaRecord::FlagsSet(f) => {
                self.note_modseq(f.modseq);
                match self.find(f.uid) {
                    Ok(i) => {
                        let m = self.messages[i];
                        if f.modseq > m.modseq {
                            self.count_out(m.flags, m.blob_len);
                            self.count_in(f.flags, m.blob_len);
                            let m = &mut self.messages[i];
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
                        let m = self.messages.remove(i);
                        self.count_out(m.flags, m.blob_len);
                        Applied::Done
                    }
                    Err(_) => Applied::Ignored,
                }
            }
            MetaRecord::KeywordDefine(k) => {
                self.note_modseq(k.modseq);
                let valid = flags::keyword_flag(k.bit) != 0;
                if !valid
                    || self.keyword_name(k.bit).is_some()
                    || self.keyword_bit(&k.name).is_some()
                {
                    return Applied::Ignored;
                }
                let at = self.keywords.partition_point(|(b, _)| *b < k.bit);
                self.keywords.insert(at, (k.bit, k.name.clone()));
                Applied::Done
            }
            MetaRecord::MailboxRename(r) => {
                self.note_modseq(r.modseq);
                self.name = r.name.clone();
                Applied::Done
            }
            MetaRecord::MailboxAttrs(a) => {
                self.note_modseq(a.modseq);
                self.special_use = a.special_use & special_use::MASK;
                Applied::Done
            }
            MetaRecord::MailboxDelete(d) => {
                self.note_modseq(d.modseq);
                Applied::Deleted
            }
        }
    }

    /// Removes every UID in `uids` in one pass.
    pub(crate) fn expunge_all(&mut self, uids: &mut [u32]) {
        if uids.is_empty() {
            return;
        }
        uids.sort_unstable();
        let before = self.messages.len();
        self.messages
            .retain(|m| uids.binary_search(&m.uid).is_err());
        if self.messages.len() != before {
            self.recount();
        }
    }
}

/// (unseen, deleted, size) of a message list.
pub(crate) fn counts(messages: &[MessageEntry]) -> (usize, usize, u64) {
    let mut unseen = 0;
    let mut deleted = 0;
    let mut size = 0;
    for m in messages {
        unseen += usize::from(m.flags & flags::SEEN == 0);
        deleted += usize::from(m.flags & flags::DELETED != 0);
        size += u64::from(m.blob_len);
    }
    (unseen, deleted, size)
}

/// What `apply` did with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    Done,
    /// Duplicate or dangling (flags for an unknown UID): counted, not an error.
    Ignored,
    /// A `MailboxDelete`: the caller removes the mailbox.
    Deleted,
}

/// A mailbox's summary, as IMAP SELECT/STATUS needs it (O(1): running counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailboxStatus {
    pub uid_validity: u32,
    /// Next UID that will be assigned (as durable; IMAP's UIDNEXT).
    pub uid_next: u32,
    pub highest_modseq: u64,
    pub messages: usize,
    /// Messages without `\Seen`.
    pub unseen: usize,
    /// Messages with `\Deleted`.
    pub deleted: usize,
    /// Sum of the message sizes in bytes.
    pub size: u64,
}

/// A mailbox as LIST needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxInfo {
    pub id: u64,
    pub name: String,
    /// SPECIAL-USE bits ([`special_use`]).
    pub special_use: u8,
    pub status: MailboxStatus,
}

impl MailboxInfo {
    pub(crate) fn of(m: &Mailbox) -> MailboxInfo {
        MailboxInfo {
            id: m.id,
            name: m.name.clone(),
            special_use: m.special_use,
            status: m.status(),
        }
    }
}

/// One user's account state (owned by the user's core, like their mailboxes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Account {
    /// The default mailboxes were created once (`AccountInit`).
    pub(crate) initialized: bool,
    /// Subscribed mailbox names (they need not exist).
    pub(crate) subscriptions: BTreeSet<String>,
    /// Highest durable `Subscription` sequence.
    pub(crate) seq_highest: u64,
    /// Next sequence to hand out.
    pub(crate) seq_next: u64,
}

impl Account {
    pub fn initialized(&self) -> bool {
        self.initialized
    }
    pub fn subscriptions(&self) -> impl Iterator<Item = &str> {
        self.subscriptions.iter().map(String::as_str)
    }

    /// Applies an `AccountInit` or `Subscription`; other records are ignored.
    pub(crate) fn apply(&mut self, rec: &MetaRecord) -> Applied {
        match rec {
            MetaRecord::AccountInit(_) => {
                self.initialized = true;
                Applied::Done
            }
            MetaRecord::Subscription(s) => {
                self.seq_highest = self.seq_highest.max(s.seq);
                self.seq_next = self.seq_next.max(s.seq.saturating_add(1));
                if s.subscribed {
                    self.subscriptions.insert(s.name.clone());
                } else {
                    self.subscriptions.remove(&s.name);
                }
                Applied::Done
            }
            _ => Applied::Ignored,
        }
    }

    /// Makes the allocation counter consistent with what is durable (after recovery).
    pub(crate) fn reset_allocation(&mut self) {
        self.seq_next = self.seq_highest.saturating_add(1).max(1);
    }
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
/// and accounts this core owns, the id/validity counters, and where its two logs continue.
#[derive(Clone, Debug, Default)]
pub struct CoreIndex {
    pub(crate) core: u16,
    pub(crate) ncores: u16,
    pub(crate) mailboxes: HashMap<u64, Mailbox>,
    pub(crate) by_name: HashMap<String, HashMap<String, u64>>,
    /// Per-user state of the users this core owns (only users with one: an account
    /// initialised or a subscription ever written).
    pub(crate) accounts: HashMap<String, Account>,
    /// Ids of deleted mailboxes (all cores'): a create or change of one of them read again
    /// at recovery is ignored instead of bringing the mailbox back.
    pub(crate) deleted_mailboxes: HashSet<u64>,
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
    /// The same for every blob log.
    pub(crate) covered_blob: Vec<LogPosition>,
    /// Checkpoint generation this run writes.
    pub(crate) generation: u64,
    /// Checkpoint generation recovery loaded (0: none).
    pub(crate) checkpoint_used: u64,
    /// The outbound queue entries this core owns (`store::queue`).
    pub(crate) queue: QueueIndex,
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

    /// Every blob log's position at recovery.
    pub fn covered_blob(&self) -> &[LogPosition] {
        &self.covered_blob
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

    pub fn mailbox_by_id(&self, id: u64) -> Option<&Mailbox> {
        self.mailboxes.get(&id)
    }

    pub(crate) fn mailbox_mut(&mut self, user: &str, name: &str) -> Option<&mut Mailbox> {
        let id = *self.by_name.get(user)?.get(name)?;
        self.mailboxes.get_mut(&id)
    }

    pub fn mailboxes(&self) -> impl Iterator<Item = &Mailbox> {
        self.mailboxes.values()
    }

    /// The user's mailboxes, in no particular order.
    pub fn user_mailboxes<'a>(&'a self, user: &str) -> impl Iterator<Item = &'a Mailbox> + 'a {
        self.by_name
            .get(user)
            .into_iter()
            .flat_map(|names| names.values())
            .filter_map(|id| self.mailboxes.get(id))
    }

    /// Number of mailboxes of `user`.
    pub fn user_mailbox_count(&self, user: &str) -> usize {
        self.by_name.get(user).map_or(0, HashMap::len)
    }

    pub fn account(&self, user: &str) -> Option<&Account> {
        self.accounts.get(user)
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

    /// Removes a deleted mailbox (and remembers its id).
    pub(crate) fn remove_mailbox(&mut self, id: u64) -> Option<Mailbox> {
        self.deleted_mailboxes.insert(id);
        let m = self.mailboxes.remove(&id)?;
        self.unmap_name(&m.user, &m.name, id);
        Some(m)
    }

    fn unmap_name(&mut self, user: &str, name: &str, id: u64) {
        if let Some(names) = self.by_name.get_mut(user) {
            if names.get(name) == Some(&id) {
                names.remove(name);
            }
            if names.is_empty() {
                self.by_name.remove(user);
            }
        }
    }

    /// Rebuilds the name map from the mailboxes (recovery folds by id, so renames and
    /// deletes need no order across mailboxes). Two mailboxes with one name (only after a
    /// lost or damaged log): the lower id keeps it, the other is dropped. Returns how many
    /// were dropped.
    pub(crate) fn rebuild_names(&mut self) -> u64 {
        self.by_name.clear();
        let mut ids: Vec<u64> = self.mailboxes.keys().copied().collect();
        ids.sort_unstable();
        let mut dropped = 0;
        for id in ids {
            let Some(m) = self.mailboxes.get(&id) else {
                continue;
            };
            let names = self.by_name.entry(m.user.clone()).or_default();
            if names.contains_key(&m.name) {
                self.mailboxes.remove(&id);
                dropped += 1;
            } else {
                names.insert(m.name.clone(), id);
            }
        }
        dropped
    }

    /// Publishes one durable record (live path, after its batch was synced). Returns the
    /// mailbox it changed, if any.
    pub(crate) fn publish(&mut self, rec: &MetaRecord) -> Option<u64> {
        match rec {
            MetaRecord::MailboxCreate(c) => {
                if self.deleted_mailboxes.contains(&c.mailbox_id) {
                    return None;
                }
                self.insert_mailbox(Mailbox::new(c));
                Some(c.mailbox_id)
            }
            MetaRecord::MailboxDelete(d) => self.remove_mailbox(d.mailbox_id).map(|m| m.id),
            MetaRecord::MailboxRename(r) => {
                let mb = self.mailboxes.get_mut(&r.mailbox_id)?;
                let old = std::mem::replace(&mut mb.name, r.name.clone());
                mb.apply(rec, None);
                let user = mb.user.clone();
                self.unmap_name(&user, &old, r.mailbox_id);
                self.by_name
                    .entry(user)
                    .or_default()
                    .insert(r.name.clone(), r.mailbox_id);
                Some(r.mailbox_id)
            }
            MetaRecord::AccountInit(_) | MetaRecord::Subscription(_) => {
                let user = rec.user()?;
                match self.accounts.get_mut(user) {
                    Some(a) => a.apply(rec),
                    None => {
                        let mut a = Account::default();
                        a.apply(rec);
                        self.accounts.insert(user.to_owned(), a);
                        Applied::Done
                    }
                };
                None
            }
            MetaRecord::QueueAdd(_) | MetaRecord::QueueUpdate(_) | MetaRecord::QueueDone(_) => {
                self.queue.apply(rec);
                None
            }
            other => {
                let id = other.mailbox_id()?;
                let mb = self.mailboxes.get_mut(&id)?;
                mb.apply(other, None);
                // The newest pending change of the message is durable now (or was
                // overtaken by this one): forget it.
                let (uid, modseq) = match other {
                    MetaRecord::FlagsSet(f) => (f.uid, f.modseq),
                    MetaRecord::Expunge(x) => (x.uid, x.modseq),
                    _ => return Some(id),
                };
                if mb.pending.get(&uid).is_some_and(|p| p.modseq() <= modseq) {
                    mb.pending.remove(&uid);
                    // A bulk STORE/EXPUNGE grew it: give the memory back once it drained.
                    if mb.pending.is_empty() && mb.pending.capacity() > PENDING_KEPT_MAX {
                        mb.pending = HashMap::new();
                    }
                }
                Some(id)
            }
        }
    }

    /// Heap bytes held by the index, computed from capacities (an estimate of the
    /// allocator's view: hash table control bytes are approximated).
    pub fn heap_bytes(&self) -> usize {
        let mut total = self.mailboxes.capacity() * (std::mem::size_of::<(u64, Mailbox)>() + 1)
            + self.by_name.capacity() * (std::mem::size_of::<(String, HashMap<String, u64>)>() + 1)
            + self.accounts.capacity() * (std::mem::size_of::<(String, Account)>() + 1)
            + self.deleted_mailboxes.capacity() * (std::mem::size_of::<u64>() + 1);
        for mb in self.mailboxes.values() {
            total += mb.messages.capacity() * MESSAGE_ENTRY_BYTES
                + mb.user.capacity()
                + mb.name.capacity()
                + mb.keywords.capacity() * std::mem::size_of::<(u8, String)>()
                + mb.keywords.iter().map(|(_, k)| k.capacity()).sum::<usize>()
                + mb.pending.capacity() * (std::mem::size_of::<(u32, Pending)>() + 1);
        }
        for (user, names) in &self.by_name {
            total += user.capacity()
                + names.capacity() * (std::mem::size_of::<(String, u64)>() + 1)
                + names.keys().map(String::capacity).sum::<usize>();
        }
        for (user, a) in &self.accounts {
            total += user.capacity()
                + a.subscriptions
                    .iter()
                    .map(|s| s.capacity() + 3 * std::mem::size_of::<usize>())
                    .sum::<usize>();
        }
        total + self.queue.heap_bytes()
    }

    /// A canonical, comparable view: (user, mailbox) → (status, messages).
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

    /// What [`canonical`](Self::canonical) leaves out: (user, mailbox) → (id,
    /// special-use, keywords), and user → (initialised, subscriptions).
    #[allow(clippy::type_complexity)]
    pub fn canonical_attrs(
        &self,
    ) -> (
        std::collections::BTreeMap<(String, String), (u64, u8, Vec<(u8, String)>)>,
        std::collections::BTreeMap<String, (bool, Vec<String>)>,
    ) {
        let mailboxes = self
            .mailboxes
            .values()
            .map(|m| {
                (
                    (m.user.clone(), m.name.clone()),
                    (m.id, m.special_use, m.keywords.clone()),
                )
            })
            .collect();
        let accounts = self
            .accounts
            .iter()
            .map(|(u, a)| {
                (
                    u.clone(),
                    (a.initialized, a.subscriptions.iter().cloned().collect()),
                )
            })
            .collect();
        (mailboxes, accounts)
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
