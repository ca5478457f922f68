//! [`Store`]: one core's handle on the store, used inside that core's executor.
//!
//! It owns the core's two log writers (blob and meta, each with its group-commit task),
//! the core's [`CoreIndex`], and a cache of read handles for blob segments of any core.
//! Index records go into the meta log, except the `MessageAppend` records of
//! [`Store::store_message`], which follow their blob in the blob log (one fdatasync per
//! local delivery). Either commit task publishes records once their batch is durable, in
//! push order across both logs ([`publish`](super::publish)); the change hook
//! ([`Store::set_change_hook`]) then hears which mailboxes changed. This file holds the
//! SMTP path (blobs, `store_message`, `deliver`) and the plumbing; the IMAP/POP3
//! operations on mailboxes and messages are in [`ops`](super::ops).
//!
//! Namespace changes of one user (create, delete, rename, subscriptions, keyword
//! definitions, account init) run one at a time under a per-user lock (`UserLocks`),
//! held until their records are durable and published, so each sees the names the one
//! before it left. Message operations take no lock: they allocate UIDs and modseqs
//! synchronously right after waiting for batch room and push their records at once.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use rkyv::util::AlignedVec;

use super::checkpoint;
use super::commit::{self, BatchOutcome, Fault, LogPositions, LogStats, LogWriter, Ticket};
use super::index::{CoreIndex, LogPosition, MailboxStatus, MessageEntry, MAILBOX_SEQ_BITS};
use super::ops::{alloc_modseq, alloc_uid, check_blob, no_mailbox};
use super::publish::{Log, PublishOrder, Sequenced};
use super::record::{
    self, MailboxAttrs, MailboxCreate, MessageAppend, MetaRecord, RecordType, RECORD_HEADER_BYTES,
};
use super::segment::{self, SegmentKind, SEGMENT_HEADER_BYTES};
use super::{
    BlobRef, Delivery, Fsync, StoreConfig, StoreError, DELIVERIES_PER_CALL_MAX,
    MAILBOXES_PER_USER_MAX, MAILBOX_NAME_BYTES_MAX, MESSAGE_BYTES_MAX, USER_BYTES_MAX,
};

/// Open read handles kept for `read_blob` (any core's segments).
const READ_HANDLES_MAX: usize = 256;
/// Bytes of verified message bodies kept per core for IMAP/POP3 readers.
pub const BLOB_CACHE_BYTES_MAX: usize = 64 << 20;

/// Which log a fault is injected into.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogKind {
    Blob,
    Meta,
}

/// Counters for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub blob: LogStats,
    pub meta: LogStats,
    pub checkpoints_written: u64,
}

/// Called after each published meta batch with the ids of the mailboxes it changed
/// (see [`Store::set_change_hook`]).
pub type ChangeHookFn = Box<dyn Fn(&[u64])>;
type ChangeHook = Rc<dyn Fn(&[u64])>;

pub(super) struct Inner {
    pub(super) cfg: StoreConfig,
    core_dir: PathBuf,
    blob: Rc<LogWriter<Option<Sequenced>>>,
    pub(super) meta: Rc<LogWriter<Option<Sequenced>>>,
    pub(super) index: RefCell<CoreIndex>,
    /// Index records reach `index` in push order across both logs (see `publish`).
    order: PublishOrder,
    /// One namespace change per user at a time (see the module doc).
    pub(super) user_locks: UserLocks,
    change_hook: RefCell<Option<ChangeHook>>,
    scratch: RefCell<AlignedVec>,
    readers: RefCell<HashMap<(u16, u32), Rc<File>>>,
    /// Verified message bodies shared by this core's IMAP/POP3 sessions.
    blob_cache: RefCell<super::cache::BlobCache>,
    /// Serialized size of a MessageAppend, the largest fixed-size meta record (for
    /// `wait_room`; FlagsSet and Expunge records are smaller).
    pub(super) append_record_bytes: usize,
    /// One checkpoint at a time (periodic ones are skipped while another runs).
    checkpoint_lock: Rc<glommio::sync::Semaphore>,
    meta_bytes_since_checkpoint: Cell<u64>,
    blob_bytes_since_checkpoint: Cell<u64>,
    checkpoints_written: Cell<u64>,
    /// Generation recovery loaded (older files of this core are removed after a write).
    checkpoint_keep_from: u64,
}

/// Per core, inside the executor (Rc-shared, !Send).
pub struct Store {
    pub(super) inner: Rc<Inner>,
    /// The commit tasks; dropping the store cancels them.
    _tasks: Vec<glommio::Task<()>>,
}

/// Durability of a staged blob ([`Store::stage_blob`]).
pub struct BlobTicket {
    ticket: Ticket,
}

impl BlobTicket {
    /// Resolves when the blob's batch is durable (per `Fsync`), or failed.
    pub async fn durable(self) -> Result<(), StoreError> {
        self.ticket.wait().await.map(|_| ())
    }
}

/// A pushed index record ([`Store::push_meta`], [`Store::store_message`]): resolves once
/// its batch is durable *and* the record is published to the index, which happens in
/// push order across both logs (see `publish`).
pub struct MetaTicket {
    ticket: Ticket,
    /// The record's number in push order (None: no record, only a blob).
    seq: Option<u64>,
    inner: Rc<Inner>,
}

impl MetaTicket {
    /// Durable and published (per `Fsync`), or the batch's error.
    pub async fn wait(&self) -> Result<(), StoreError> {
        self.ticket.wait().await?;
        if let Some(seq) = self.seq {
            self.inner.order.published(seq).await;
        }
        Ok(())
    }
}

/// Who receives a copy of a message stored with [`Store::store_message`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filing {
    /// Normalized address of the recipient (a user this core owns).
    pub user: String,
    /// Mailbox name, usually "INBOX".
    pub mailbox: String,
}

impl Store {
    /// Opens this core's logs where recovery left them and spawns the commit tasks.
    pub async fn open(cfg: StoreConfig, index: CoreIndex) -> Result<Rc<Store>, StoreError> {
        cfg.validate()?;
        if index.core != cfg.core {
            return Err(StoreError::CoreMismatch {
                config: cfg.core,
                index: index.core,
            });
        }
        let core_dir = segment::core_dir(&cfg.data_dir, cfg.core);
        segment::ensure_dir(&core_dir)?;
        let blob = LogWriter::<Option<Sequenced>>::open(
            SegmentKind::Blob,
            cfg.core,
            core_dir.clone(),
            index.blob_tail,
            cfg.blob_segment_bytes_max,
            cfg.batch_bytes_max,
            (cfg.fsync, cfg.sync_wait),
            LogPositions::Exposed,
        )
        .await?;
        let meta = LogWriter::<Option<Sequenced>>::open(
            SegmentKind::Meta,
            cfg.core,
            core_dir.clone(),
            index.meta_tail,
            cfg.meta_segment_bytes_max,
            cfg.batch_bytes_max,
            (cfg.fsync, cfg.sync_wait),
            LogPositions::Private,
        )
        .await?;
        let mut scratch = AlignedVec::new();
        let sample = MetaRecord::MessageAppend(MessageAppend {
            mailbox_id: 0,
            uid: 0,
            modseq: 0,
            blob: BlobRef {
                core: 0,
                segment: 0,
                offset: 0,
                len: 0,
            },
            internal_date: 0,
            flags: 0,
        });
        let mut probe = Vec::new();
        sample
            .encode(&mut probe, &mut scratch)
            .map_err(|reason| StoreError::Encode {
                what: "MessageAppend",
                reason,
            })?;
        let checkpoint_keep_from = index.checkpoint_used;
        let order = PublishOrder::new(blob.tail(), meta.tail());
        let inner = Rc::new(Inner {
            cfg,
            core_dir,
            blob: blob.clone(),
            meta: meta.clone(),
            index: RefCell::new(index),
            order,
            user_locks: UserLocks::default(),
            change_hook: RefCell::new(None),
            scratch: RefCell::new(scratch),
            readers: RefCell::new(HashMap::new()),
            blob_cache: RefCell::new(super::cache::BlobCache::new(BLOB_CACHE_BYTES_MAX)),
            append_record_bytes: probe.len(),
            checkpoint_lock: Rc::new(glommio::sync::Semaphore::new(1)),
            meta_bytes_since_checkpoint: Cell::new(0),
            blob_bytes_since_checkpoint: Cell::new(0),
            checkpoints_written: Cell::new(0),
            checkpoint_keep_from,
        });
        let window = std::time::Duration::from_micros(inner.cfg.commit_window_us);
        let publisher = inner.clone();
        let blob_task = glommio::spawn_local(commit::run(blob, window, move |ops, outcome| {
            publisher.batch_done(Log::Blob, ops, outcome)
        }));
        let publisher = inner.clone();
        let meta_task = glommio::spawn_local(commit::run(meta, window, move |ops, outcome| {
            publisher.batch_done(Log::Meta, ops, outcome)
        }));
        Ok(Rc::new(Store {
            inner,
            _tasks: vec![blob_task, meta_task],
        }))
    }

    /// Appends one blob; resolves when it is durable (per `Fsync`).
    pub async fn append_blob(&self, message: &[u8]) -> Result<BlobRef, StoreError> {
        let (blob, ticket) = self.stage_blob(message).await?;
        ticket.durable().await?;
        Ok(blob)
    }

    /// Puts one blob into the blob log's pending batch and returns where it will be, at
    /// once (after back-pressure), with a ticket that resolves when it is durable.
    ///
    /// The `BlobRef` may be used in index records before the blob is durable (that is the
    /// point: both group commits then run concurrently), but nobody may be told the
    /// message is stored before `durable` returned Ok. If it fails, the position is never
    /// reused (see `commit`), so an index record already written for it can only point at
    /// nothing; recovery drops such records and tombstones them when needed.
    pub async fn stage_blob(&self, message: &[u8]) -> Result<(BlobRef, BlobTicket), StoreError> {
        check_len("message", message.len(), MESSAGE_BYTES_MAX)?;
        self.inner
            .blob
            .wait_room(RECORD_HEADER_BYTES + message.len())
            .await;
        let (ticket, blob) = self.push_blob(message);
        Ok((blob, BlobTicket { ticket }))
    }

    /// Encodes `message` into the blob log's pending batch (synchronous: call right after
    /// `wait_room`); returns its ticket and where it will be.
    fn push_blob(&self, message: &[u8]) -> (Ticket, BlobRef) {
        let (ticket, (segment, offset)) = self.inner.blob.push(RecordType::Blob, message, None);
        let blob = BlobRef {
            core: self.inner.cfg.core,
            segment,
            offset,
            len: message.len() as u32,
        };
        (ticket, blob)
    }

    /// The `MessageAppend` of a new message in `user`'s `mailbox`: allocates its UID and
    /// modseq (synchronous: push it before the next await, so records enter the log in
    /// allocation order). A mailbox being deleted takes no new messages (they would vanish
    /// with it after being acknowledged).
    fn new_append(
        &self,
        user: &str,
        mailbox: &str,
        blob: BlobRef,
        internal_date: i64,
    ) -> Result<MessageAppend, StoreError> {
        let mut idx = self.inner.index.borrow_mut();
        let mb = idx
            .mailbox_mut(user, canonical_name(mailbox))
            .filter(|m| !m.deleting)
            .ok_or_else(|| no_mailbox(user, mailbox))?;
        Ok(MessageAppend {
            mailbox_id: mb.id,
            uid: alloc_uid(mb)?,
            modseq: alloc_modseq(mb),
            blob,
            internal_date,
            flags: 0,
        })
    }

    /// Creates mailboxes on first use, assigns UIDs (strictly ascending per mailbox, never
    /// reused) and modseqs, appends the MessageAppend records (group-committed), and
    /// returns once they are durable and published to the index. Returns the UIDs in the
    /// order of `deliveries`. The caller must send each user's deliveries to its owner core.
    pub async fn deliver(&self, deliveries: &[Delivery]) -> Result<Vec<u32>, StoreError> {
        check_len("delivery list", deliveries.len(), DELIVERIES_PER_CALL_MAX)?;
        for d in deliveries {
            check_names(&d.user, &d.mailbox)?;
            check_blob(&d.blob)?;
        }
        for d in deliveries {
            self.ensure_mailbox(&d.user, &d.mailbox).await?;
        }
        let per = self.inner.append_record_bytes;
        let chunk = (self.inner.cfg.batch_bytes_max / per).max(1);
        let mut tickets = Vec::with_capacity(deliveries.len());
        let mut uids = Vec::with_capacity(deliveries.len());
        for group in deliveries.chunks(chunk) {
            self.inner.meta.wait_room(per * group.len()).await;
            // From here to the end of the group: no await, so UIDs are assigned in the
            // same order as the records enter the batch.
            for d in group {
                let rec = self.new_append(&d.user, &d.mailbox, d.blob, d.internal_date)?;
                uids.push(rec.uid);
                tickets.push(self.push_meta(MetaRecord::MessageAppend(rec))?);
            }
        }
        wait_all(&tickets).await?;
        Ok(uids)
    }

    /// Stores a message and files it into mailboxes this core owns with **one** write and
    /// one fdatasync: the blob and its `MessageAppend` records go into the same blob-log
    /// batch, the records right after the blob (so a valid record implies a valid blob;
    /// recovery reads them from the blob log, see `recover`). Creates mailboxes on first
    /// use. Returns the blob's position and the UIDs (in `filings` order) at once, with a
    /// ticket that resolves when all of it is durable and published; nobody may be told
    /// the message is stored before that. On failure nothing of it is in the log.
    ///
    /// The caller must send each user's filings to its owner core. The `BlobRef` may be
    /// used in other records (queue entries, other cores' deliveries) at once, as with
    /// [`Store::stage_blob`].
    pub async fn store_message(
        &self,
        message: &[u8],
        filings: &[Filing],
        internal_date: i64,
    ) -> Result<(BlobRef, Vec<u32>, MetaTicket), StoreError> {
        check_len("message", message.len(), MESSAGE_BYTES_MAX)?;
        let per = self.inner.append_record_bytes;
        let records_max = (self.inner.cfg.batch_bytes_max / per).clamp(1, DELIVERIES_PER_CALL_MAX);
        check_len("filing list", filings.len(), records_max)?;
        for f in filings {
            check_names(&f.user, &f.mailbox)?;
        }
        for f in filings {
            self.ensure_mailbox(&f.user, &f.mailbox).await?;
        }
        let log = &self.inner.blob;
        log.wait_room(RECORD_HEADER_BYTES + message.len() + per * filings.len())
            .await;
        // From here to the last push: no await, so the records follow the blob in the
        // batch and UIDs are assigned in the order the records enter it. Every mailbox is
        // checked first, so a refusal leaves nothing in the batch.
        {
            let idx = self.inner.index.borrow();
            for f in filings {
                idx.mailbox(&f.user, canonical_name(&f.mailbox))
                    .filter(|m| !m.deleting)
                    .ok_or_else(|| no_mailbox(&f.user, &f.mailbox))?;
            }
        }
        let (blob_ticket, blob) = self.push_blob(message);
        let mut uids = Vec::with_capacity(filings.len());
        let mut last = None;
        for f in filings {
            let rec = self.new_append(&f.user, &f.mailbox, blob, internal_date)?;
            uids.push(rec.uid);
            last = Some(self.push_sequenced(log, MetaRecord::MessageAppend(rec))?);
        }
        let ticket = match last {
            // The records are in the blob's batch: their ticket covers the blob.
            Some((ticket, seq)) => MetaTicket {
                ticket,
                seq: Some(seq),
                inner: self.inner.clone(),
            },
            None => MetaTicket {
                ticket: blob_ticket,
                seq: None,
                inner: self.inner.clone(),
            },
        };
        Ok((blob, uids, ticket))
    }

    /// Replaces a message's flags; returns the message's modseq once durable and
    /// published (its current one if the flags were already these).
    pub async fn set_flags(
        &self,
        user: &str,
        mailbox: &str,
        uid: u32,
        flags: u32,
    ) -> Result<u64, StoreError> {
        let change = super::ops::FlagChange {
            uid,
            mode: super::ops::FlagMode::Replace,
            mask: flags,
            unchanged_since: None,
        };
        let outcome = self.update_flags(user, mailbox, &[change]).await?;
        match outcome.first() {
            Some(super::ops::FlagOutcome::Changed { modseq, .. })
            | Some(super::ops::FlagOutcome::Unchanged { modseq, .. }) => Ok(*modseq),
            _ => Err(StoreError::NoSuchMessage {
                user: user.to_owned(),
                mailbox: mailbox.to_owned(),
                uid,
            }),
        }
    }

    /// Expunges a message (writes a tombstone); returns the modseq once durable and
    /// removed from the index.
    pub async fn expunge(&self, user: &str, mailbox: &str, uid: u32) -> Result<u64, StoreError> {
        check_names(user, mailbox)?;
        let id = self.mailbox_id(user, mailbox)?;
        let done = self.expunge_ids(user, mailbox, id, &[uid]).await?;
        match done.first() {
            Some(&(_, modseq)) => Ok(modseq),
            None => Err(StoreError::NoSuchMessage {
                user: user.to_owned(),
                mailbox: mailbox.to_owned(),
                uid,
            }),
        }
    }

    /// Encodes `rec` into the meta log's pending batch (synchronous: call right after
    /// `wait_room`, with no await between the allocation of its ids and this).
    pub(super) fn push_meta(&self, rec: MetaRecord) -> Result<MetaTicket, StoreError> {
        let (ticket, seq) = self.push_sequenced(&self.inner.meta, rec)?;
        Ok(MetaTicket {
            ticket,
            seq: Some(seq),
            inner: self.inner.clone(),
        })
    }

    /// Numbers `rec` in push order and encodes it into `log`'s pending batch.
    fn push_sequenced(
        &self,
        log: &LogWriter<Option<Sequenced>>,
        rec: MetaRecord,
    ) -> Result<(Ticket, u64), StoreError> {
        let what = rec.type_name();
        let mut scratch = self.inner.scratch.borrow_mut();
        let order = &self.inner.order;
        let mut seq = 0;
        let op = Sequenced { seq: 0, rec };
        let ticket = log
            .push_with(Some(op), |op, buf| {
                let Some(op) = op else {
                    return Err("no record".to_string());
                };
                let crc = op.rec.encode(buf, &mut scratch)?;
                // Numbered only once it is in the batch: a number taken always reaches a
                // batch (a missing one would stop publication).
                op.seq = order.number();
                seq = op.seq;
                Ok(crc)
            })
            .map_err(|reason| StoreError::Encode { what, reason })?;
        Ok((ticket, seq))
    }

    /// The id of a mailbox that exists and is not being deleted.
    pub(super) fn mailbox_id(&self, user: &str, name: &str) -> Result<u64, StoreError> {
        self.inner
            .index
            .borrow()
            .mailbox(user, canonical_name(name))
            .filter(|m| !m.deleting)
            .map(|m| m.id())
            .ok_or_else(|| no_mailbox(user, name))
    }

    /// Returns the id of `user`'s mailbox `name`, creating it durably first if needed.
    async fn ensure_mailbox(&self, user: &str, name: &str) -> Result<u64, StoreError> {
        if let Ok(id) = self.mailbox_id(user, name) {
            return Ok(id);
        }
        // Concurrent first deliveries queue here; the first creates, the others find it.
        let _guard = self.inner.user_locks.lock(user).await;
        if let Ok(id) = self.mailbox_id(user, name) {
            return Ok(id);
        }
        let name = check_mailbox_name(name)?;
        self.check_mailbox_room(user, name, 1)?;
        self.inner
            .meta
            .wait_room(meta_record_bytes(user.len() + name.len()))
            .await;
        let (id, tickets) = self.push_create(user, name, 0)?;
        wait_all(&tickets).await?;
        Ok(id)
    }

    /// Fails if `user` cannot have `more` mailboxes more.
    pub(super) fn check_mailbox_room(
        &self,
        user: &str,
        name: &str,
        more: usize,
    ) -> Result<(), StoreError> {
        let have = self.inner.index.borrow().user_mailbox_count(user);
        if have + more > MAILBOXES_PER_USER_MAX {
            return Err(StoreError::Exhausted {
                user: user.to_owned(),
                mailbox: name.to_owned(),
                what: "mailbox limit",
            });
        }
        Ok(())
    }

    /// Allocates a mailbox id and UIDVALIDITY and pushes the MailboxCreate (and, for
    /// special-use bits, a MailboxAttrs with modseq 1). Synchronous: call under the user's
    /// lock right after `wait_room`. Returns the new id and the tickets.
    pub(super) fn push_create(
        &self,
        user: &str,
        name: &str,
        special_use: u8,
    ) -> Result<(u64, Vec<MetaTicket>), StoreError> {
        let rec = {
            let mut idx = self.inner.index.borrow_mut();
            let seq = idx.mailbox_seq_next.max(1);
            if seq >= 1 << MAILBOX_SEQ_BITS {
                return Err(StoreError::Exhausted {
                    user: user.to_owned(),
                    mailbox: name.to_owned(),
                    what: "mailbox ids of this core",
                });
            }
            idx.mailbox_seq_next = seq + 1;
            let now = u32::try_from(crate::time::unix_now()).unwrap_or(u32::MAX);
            // Strictly above every UIDVALIDITY handed out before, deleted mailboxes'
            // included: a re-created name never repeats an old one.
            let uid_validity = now.max(idx.uid_validity_last.saturating_add(1)).max(1);
            idx.uid_validity_last = uid_validity;
            MailboxCreate {
                mailbox_id: (u64::from(idx.core) << MAILBOX_SEQ_BITS) | seq,
                user: user.to_owned(),
                name: name.to_owned(),
                uid_validity,
            }
        };
        let id = rec.mailbox_id;
        let mut tickets = vec![self.push_meta(MetaRecord::MailboxCreate(rec))?];
        if special_use != 0 {
            // Nobody can write to the mailbox before its create is published, and both
            // records are in the same batch: modseq 1 is free.
            tickets.push(self.push_meta(MetaRecord::MailboxAttrs(MailboxAttrs {
                mailbox_id: id,
                modseq: 1,
                special_use,
            }))?);
        }
        Ok((id, tickets))
    }

    /// Sets the hook called whenever durable records are published, with the ids of
    /// the mailboxes they changed (deduplicated, ascending): deliveries, appends,
    /// flag changes, expunges, copies, keyword definitions, special-use changes, creates,
    /// renames and deletes. Replaces any previous hook. The hook runs inside a commit
    /// task: it must not block; it may read the store.
    pub fn set_change_hook(&self, hook: ChangeHookFn) {
        *self.inner.change_hook.borrow_mut() = Some(Rc::from(hook));
    }

    /// Counts this store's group commits and fdatasyncs in `m` (set once; later calls are
    /// ignored).
    pub fn set_metrics(&self, m: std::sync::Arc<crate::metrics::CoreMetrics>) {
        self.inner.blob.set_metrics(m.clone());
        self.inner.meta.set_metrics(m);
    }

    /// A blob's bytes, verified, shared with every other reader on this core (see `cache`).
    pub fn read_blob_shared(&self, r: BlobRef) -> Result<Rc<[u8]>, StoreError> {
        let k = super::cache::key(r);
        if let Some(b) = self.inner.blob_cache.borrow().get(&k) {
            return Ok(b);
        }
        // Read straight into the shared allocation (no second copy of the message).
        let mut bytes: Rc<[u8]> = std::iter::repeat_n(0u8, r.len as usize).collect();
        let body = Rc::get_mut(&mut bytes).expect("a fresh Rc is unique");
        let file = self.reader(r)?;
        read_blob_record_into(&file, &self.blob_path(r), r, body)?;
        self.inner.blob_cache.borrow_mut().insert(k, bytes.clone());
        Ok(bytes)
    }

    /// [`Store::read_blob_shared`], waiting (up to [`BLOB_SETTLE_MS_MAX`]) for a blob whose
    /// batch is still being written: a message is published in its mailbox when its index
    /// record is durable, which may be a moment before its blob's batch is written.
    pub async fn read_blob_settled(&self, r: BlobRef) -> Result<Rc<[u8]>, StoreError> {
        let started = std::time::Instant::now();
        let mut wait_us = 200u64;
        loop {
            match self.read_blob_shared(r) {
                Err(e)
                    if e.is_unwritten()
                        && started.elapsed().as_millis() < u128::from(BLOB_SETTLE_MS_MAX) =>
                {
                    glommio::timer::sleep(std::time::Duration::from_micros(wait_us)).await;
                    wait_us = (wait_us * 2).min(20_000);
                }
                other => return other,
            }
        }
    }

    /// `range` of a blob (clamped to its length). Reads only that range when the blob was
    /// verified before and is no longer cached; otherwise reads (and verifies) it whole.
    pub fn read_blob_range(
        &self,
        r: BlobRef,
        range: std::ops::Range<usize>,
    ) -> Result<Vec<u8>, StoreError> {
        let len = r.len as usize;
        let (start, end) = (range.start.min(len), range.end.min(len));
        let k = super::cache::key(r);
        let verified = {
            let cache = self.inner.blob_cache.borrow();
            if let Some(b) = cache.get(&k) {
                return Ok(b[start..end.max(start)].to_vec());
            }
            cache.is_verified(&k)
        };
        if !verified || end <= start {
            let b = self.read_blob_shared(r)?;
            return Ok(b[start..end.max(start)].to_vec());
        }
        let file = self.reader(r)?;
        let mut buf = vec![0u8; end - start];
        let at = r.offset + (RECORD_HEADER_BYTES + start) as u64;
        let n = segment::read_up_to(&file, &mut buf, at)
            .map_err(|e| StoreError::io("read", self.blob_path(r), e))?;
        if n < buf.len() {
            return Err(StoreError::corrupt(
                self.blob_path(r),
                r.offset,
                "blob range past the end of its segment",
            ));
        }
        Ok(buf)
    }

    fn blob_path(&self, r: BlobRef) -> PathBuf {
        segment::segment_path(
            &segment::core_dir(&self.inner.cfg.data_dir, r.core),
            SegmentKind::Blob,
            r.segment,
        )
    }

    fn reader(&self, r: BlobRef) -> Result<Rc<File>, StoreError> {
        if let Some(f) = self.inner.readers.borrow().get(&(r.core, r.segment)) {
            return Ok(f.clone());
        }
        let path = self.blob_path(r);
        let f = Rc::new(File::open(&path).map_err(|e| StoreError::io("open", &path, e))?);
        let mut readers = self.inner.readers.borrow_mut();
        if readers.len() >= READ_HANDLES_MAX {
            readers.clear();
        }
        readers.insert((r.core, r.segment), f.clone());
        Ok(f)
    }

    /// Reads a blob of any core's log, verifying its CRC, length and type.
    pub fn read_blob(&self, r: BlobRef) -> Result<Vec<u8>, StoreError> {
        let file = self.reader(r)?;
        read_blob_record(&file, &self.blob_path(r), r)
    }

    /// The mailbox's messages as (UID, blob), ascending (empty if it does not exist).
    pub fn mailbox_uids(&self, user: &str, mailbox: &str) -> Vec<(u32, BlobRef)> {
        self.with_mailbox(user, mailbox, |m| {
            m.messages().iter().map(|e| (e.uid, e.blob())).collect()
        })
        .unwrap_or_default()
    }

    /// The mailbox's messages with flags and modseqs, ascending by UID.
    pub fn messages(&self, user: &str, mailbox: &str) -> Vec<MessageEntry> {
        self.with_mailbox(user, mailbox, |m| m.messages().to_vec())
            .unwrap_or_default()
    }

    pub fn mailbox_status(&self, user: &str, mailbox: &str) -> Option<MailboxStatus> {
        self.with_mailbox(user, mailbox, |m| m.status())
    }

    /// Runs `f` on this core's index (tests, metrics, IMAP listings).
    pub fn with_index<R>(&self, f: impl FnOnce(&CoreIndex) -> R) -> R {
        f(&self.inner.index.borrow())
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            blob: self.inner.blob.stats(),
            meta: self.inner.meta.stats(),
            checkpoints_written: self.inner.checkpoints_written.get(),
        }
    }

    /// Waits for everything pending on both logs (shutdown), then writes a checkpoint.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.inner.blob.flush().await;
        self.inner.meta.flush().await;
        self.settle().await;
        // Wait for a periodic checkpoint in progress, then write a fresh one.
        let _permit = self
            .inner
            .checkpoint_lock
            .acquire_permit(1)
            .await
            .map_err(|e| StoreError::Closed {
                path: PathBuf::from(format!("checkpoint lock: {e}")),
            })?;
        write_checkpoint(&self.inner).await
    }

    /// Waits until every index record pushed so far is published (or lost with a failed
    /// batch).
    pub(super) async fn settle(&self) {
        if let Some(last) = self.inner.order.pushed_below().checked_sub(1) {
            self.inner.order.published(last).await;
        }
    }

    /// Makes the next `fault.batches` batches of `log` fail (fault-injection tests).
    #[doc(hidden)]
    pub fn inject_fault(&self, log: LogKind, fault: Option<Fault>) {
        match log {
            LogKind::Blob => self.inner.blob.inject_fault(fault),
            LogKind::Meta => self.inner.meta.inject_fault(fault),
        }
    }

    /// Where this core's meta log continues.
    #[cfg(test)]
    pub(crate) fn meta_tail(&self) -> super::index::LogTail {
        self.inner.meta.tail()
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.cfg
    }
}

impl Inner {
    /// A batch of `log` finished (called by its commit task before its waiters wake):
    /// publishes every record that is now next in push order (see `publish`), tells the
    /// change hook, and starts a periodic checkpoint when one is due.
    fn batch_done(self: &Rc<Self>, log: Log, ops: Vec<Option<Sequenced>>, outcome: BatchOutcome) {
        let mut changed: Vec<u64> = Vec::new();
        {
            let mut idx = self.index.borrow_mut();
            self.order.batch_done(log, ops, outcome, |rec| {
                if let Some(id) = idx.publish(&rec) {
                    changed.push(id);
                }
            });
        }
        if !changed.is_empty() {
            changed.sort_unstable();
            changed.dedup();
            // Cloned out first: the hook may read the store or even replace itself.
            let hook = self.change_hook.borrow().clone();
            if let Some(hook) = hook {
                hook(&changed);
            }
        }
        let BatchOutcome::Durable { bytes, .. } = outcome else {
            return;
        };
        let (since, interval) = match log {
            Log::Meta => (
                &self.meta_bytes_since_checkpoint,
                self.cfg.checkpoint_meta_bytes_interval,
            ),
            Log::Blob => (
                &self.blob_bytes_since_checkpoint,
                self.cfg.checkpoint_blob_bytes_interval,
            ),
        };
        since.set(since.get() + bytes);
        if interval == 0 || since.get() < interval {
            return;
        }
        if let Ok(permit) = self.checkpoint_lock.try_acquire_static_permit(1) {
            let me = self.clone();
            glommio::spawn_local(async move {
                // A failed periodic checkpoint only costs a longer scan at the next start.
                let _ = write_checkpoint(&me).await;
                drop(permit);
            })
            .detach();
        }
    }
}

/// Snapshots the index and the positions of this core's two logs up to which every
/// record is published, synchronously (consistent: both change together when a batch
/// is published), then writes the file asynchronously.
async fn write_checkpoint(inner: &Rc<Inner>) -> Result<(), StoreError> {
    let (bytes, generation) = {
        let idx = inner.index.borrow();
        let core = idx.core;
        let others = |covered: &[LogPosition], own: LogPosition| -> Vec<LogPosition> {
            let mut v: Vec<LogPosition> =
                covered.iter().filter(|p| p.core != core).copied().collect();
            v.push(own);
            v
        };
        let starts = others(
            &idx.covered,
            LogPosition::from_tail(core, &inner.order.published_tail(Log::Meta)),
        );
        let blob_starts = others(
            &idx.covered_blob,
            LogPosition::from_tail(core, &inner.order.published_tail(Log::Blob)),
        );
        (
            checkpoint::encode(&idx, idx.generation, starts, blob_starts)?,
            idx.generation,
        )
    };
    inner.meta_bytes_since_checkpoint.set(0);
    inner.blob_bytes_since_checkpoint.set(0);
    checkpoint::write(
        &inner.core_dir,
        generation,
        bytes,
        inner.cfg.fsync == Fsync::Always,
    )
    .await?;
    checkpoint::remove_except(&inner.core_dir, &[inner.checkpoint_keep_from, generation]);
    inner
        .checkpoints_written
        .set(inner.checkpoints_written.get() + 1);
    Ok(())
}

/// Bytes to wait for before pushing a variable-size meta record whose strings total
/// `strings_bytes` (header + a generous bound on the rkyv framing and fixed fields).
pub(super) fn meta_record_bytes(strings_bytes: usize) -> usize {
    RECORD_HEADER_BYTES + 64 + strings_bytes
}

/// Waits for every batch the tickets belong to (once per batch), then for the records
/// to be published.
pub(super) async fn wait_all(tickets: &[MetaTicket]) -> Result<(), StoreError> {
    let mut last: Option<&MetaTicket> = None;
    for t in tickets {
        if last.is_some_and(|l| Rc::ptr_eq(&l.ticket.done, &t.ticket.done)) {
            continue;
        }
        t.ticket.wait().await?;
        last = Some(t);
    }
    if let (Some(t), Some(seq)) = (tickets.first(), tickets.iter().filter_map(|t| t.seq).max()) {
        t.inner.order.published(seq).await;
    }
    Ok(())
}

/// "INBOX" for any case of it (RFC 9051 §5.1), else the name as given.
pub(super) fn canonical_name(name: &str) -> &str {
    if name.eq_ignore_ascii_case("INBOX") {
        "INBOX"
    } else {
        name
    }
}

/// Checks a mailbox name for a write and returns its canonical form. The IMAP layer
/// checks the grammar (and the `/` hierarchy); the store refuses what would break its
/// records: empty names, names over [`MAILBOX_NAME_BYTES_MAX`], NUL, CR and LF.
pub(super) fn check_mailbox_name(name: &str) -> Result<&str, StoreError> {
    let problem = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAILBOX_NAME_BYTES_MAX {
        Some("too long")
    } else if name.bytes().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
        Some("contains NUL, CR or LF")
    } else {
        None
    };
    match problem {
        Some(reason) => Err(StoreError::InvalidName {
            what: "mailbox name",
            name: name.chars().take(64).collect(),
            reason,
        }),
        None => Ok(canonical_name(name)),
    }
}

/// `TooLarge` when `n` (bytes or items) is over `max`.
pub(super) fn check_len(what: &'static str, n: usize, max: usize) -> Result<(), StoreError> {
    if n > max {
        return Err(StoreError::TooLarge {
            what,
            bytes: n,
            max,
        });
    }
    Ok(())
}

pub(super) fn check_names(user: &str, mailbox: &str) -> Result<(), StoreError> {
    if user.len() > USER_BYTES_MAX {
        return Err(StoreError::TooLarge {
            what: "user name",
            bytes: user.len(),
            max: USER_BYTES_MAX,
        });
    }
    if mailbox.len() > MAILBOX_NAME_BYTES_MAX {
        return Err(StoreError::TooLarge {
            what: "mailbox name",
            bytes: mailbox.len(),
            max: MAILBOX_NAME_BYTES_MAX,
        });
    }
    Ok(())
}

/// Reads and verifies the blob record `r` from an open segment file.
/// How long [`Store::read_blob_settled`] waits for a blob still being written.
pub const BLOB_SETTLE_MS_MAX: u64 = 5000;

pub fn read_blob_record(file: &File, path: &Path, r: BlobRef) -> Result<Vec<u8>, StoreError> {
    let mut body = vec![0u8; r.len as usize];
    read_blob_record_into(file, path, r, &mut body)?;
    Ok(body)
}

/// Reads the blob record `r` (its payload straight into `body`, `r.len` bytes) and
/// verifies its CRC, length and type.
fn read_blob_record_into(
    file: &File,
    path: &Path,
    r: BlobRef,
    body: &mut [u8],
) -> Result<(), StoreError> {
    if r.offset < SEGMENT_HEADER_BYTES as u64 {
        return Err(StoreError::corrupt(
            path,
            r.offset,
            "blob reference inside the segment header",
        ));
    }
    let total = RECORD_HEADER_BYTES + body.len();
    let mut head = [0u8; RECORD_HEADER_BYTES];
    let n = segment::read_up_to_split(file, &mut head, body, r.offset)
        .map_err(|e| StoreError::io("read", path, e))?;
    // Segments are zero-filled ahead of the write position: a zero header (or a segment that
    // ends before the record) is a blob whose batch is still in flight. Recovery removes
    // references to blobs that never became durable, so at run time this only means "soon".
    if n < total || head.iter().all(|&b| b == 0) {
        return Err(StoreError::Unwritten {
            segment: path.to_path_buf(),
            offset: r.offset,
        });
    }
    let corrupt = |e: record::RecordError| StoreError::corrupt(path, r.offset, e.to_string());
    let h = record::parse_header(&head, body.len() as u64).map_err(corrupt)?;
    record::verify(&head, &h, &body[..h.payload_len as usize]).map_err(corrupt)?;
    if h.kind != RecordType::Blob || h.payload_len != r.len {
        return Err(StoreError::corrupt(
            path,
            r.offset,
            format!(
                "expected a blob of {} bytes, found a {:?} record of {}",
                r.len, h.kind, h.payload_len
            ),
        ));
    }
    Ok(())
}

/// Reads one blob without a `Store` (export, tools).
pub fn read_blob_at(data_dir: &Path, r: BlobRef) -> Result<Vec<u8>, StoreError> {
    let path = segment::segment_path(
        &segment::core_dir(data_dir, r.core),
        SegmentKind::Blob,
        r.segment,
    );
    let file = File::open(&path).map_err(|e| StoreError::io("open", &path, e))?;
    read_blob_record(&file, &path, r)
}

/// Per-user exclusive locks for namespace changes (see the module doc). Only users with a
/// holder have an entry: the map stays as small as the number of changes in flight.
#[derive(Default)]
pub(super) struct UserLocks {
    held: RefCell<HashMap<String, Vec<Waker>>>,
}

impl UserLocks {
    /// Resolves once `user`'s lock is ours; the guard releases it when dropped.
    pub(super) fn lock<'a>(&'a self, user: &'a str) -> LockUser<'a> {
        LockUser { locks: self, user }
    }

    #[cfg(test)]
    pub(super) fn held_count(&self) -> usize {
        self.held.borrow().len()
    }
}

/// Future of [`UserLocks::lock`].
pub(super) struct LockUser<'a> {
    locks: &'a UserLocks,
    user: &'a str,
}

impl<'a> Future for LockUser<'a> {
    type Output = UserGuard<'a>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<UserGuard<'a>> {
        let mut held = self.locks.held.borrow_mut();
        match held.get_mut(self.user) {
            None => {
                held.insert(self.user.to_owned(), Vec::new());
                Poll::Ready(UserGuard {
                    locks: self.locks,
                    user: self.user.to_owned(),
                })
            }
            Some(waiters) => {
                if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    waiters.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

/// Holds a user's lock; dropping it wakes every waiter (one of them gets it next).
pub(super) struct UserGuard<'a> {
    locks: &'a UserLocks,
    user: String,
}

impl Drop for UserGuard<'_> {
    fn drop(&mut self) {
        let waiters = self.locks.held.borrow_mut().remove(&self.user);
        for w in waiters.into_iter().flatten() {
            w.wake();
        }
    }
}
