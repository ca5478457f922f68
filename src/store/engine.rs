//! [`Store`]: one core's handle on the store, used inside that core's executor.
//!
//! It owns the core's two log writers (blob and meta, each with its group-commit task),
//! the core's [`CoreIndex`], and a cache of read handles for blob segments of any core.
//! Index changes are published by the meta commit task once their batch is durable.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rkyv::util::AlignedVec;

use super::checkpoint;
use super::commit::{self, BatchDone, Fault, LogPositions, LogStats, LogWriter, Ticket};
use super::index::{CoreIndex, LogPosition, MailboxStatus, MessageEntry, MAILBOX_SEQ_BITS};
use super::record::{
    self, Expunge, FlagsSet, MailboxCreate, MessageAppend, MetaRecord, RecordType,
    RECORD_HEADER_BYTES,
};
use super::segment::{self, SegmentKind, SEGMENT_HEADER_BYTES};
use super::{
    unix_now_secs, BlobRef, Delivery, Fsync, StoreConfig, StoreError, DELIVERIES_PER_CALL_MAX,
    MAILBOX_NAME_BYTES_MAX, MESSAGE_BYTES_MAX, USER_BYTES_MAX,
};

/// Open read handles kept for `read_blob` (any core's segments).
const READ_HANDLES_MAX: usize = 256;

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

struct Inner {
    cfg: StoreConfig,
    core_dir: PathBuf,
    blob: Rc<LogWriter<()>>,
    meta: Rc<LogWriter<MetaRecord>>,
    index: RefCell<CoreIndex>,
    /// Mailbox creations in flight, so concurrent first deliveries create once.
    pending_creates: RefCell<HashMap<(String, String), Rc<BatchDone>>>,
    scratch: RefCell<AlignedVec>,
    readers: RefCell<HashMap<(u16, u32), Rc<File>>>,
    /// Serialized size of fixed-size meta records (for `wait_room`).
    append_record_bytes: usize,
    /// One checkpoint at a time (periodic ones are skipped while another runs).
    checkpoint_lock: Rc<glommio::sync::Semaphore>,
    meta_bytes_since_checkpoint: Cell<u64>,
    checkpoints_written: Cell<u64>,
    /// Generation recovery loaded (older files of this core are removed after a write).
    checkpoint_keep_from: u64,
}

/// Per core, inside the executor (Rc-shared, !Send).
pub struct Store {
    inner: Rc<Inner>,
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
        let blob = LogWriter::<()>::open(
            SegmentKind::Blob,
            cfg.core,
            core_dir.clone(),
            index.blob_tail,
            cfg.blob_segment_bytes_max,
            cfg.batch_bytes_max,
            cfg.fsync,
            LogPositions::Exposed,
        )
        .await?;
        let meta = LogWriter::<MetaRecord>::open(
            SegmentKind::Meta,
            cfg.core,
            core_dir.clone(),
            index.meta_tail,
            cfg.meta_segment_bytes_max,
            cfg.batch_bytes_max,
            cfg.fsync,
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
        let inner = Rc::new(Inner {
            cfg,
            core_dir,
            blob: blob.clone(),
            meta: meta.clone(),
            index: RefCell::new(index),
            pending_creates: RefCell::new(HashMap::new()),
            scratch: RefCell::new(scratch),
            readers: RefCell::new(HashMap::new()),
            append_record_bytes: probe.len(),
            checkpoint_lock: Rc::new(glommio::sync::Semaphore::new(1)),
            meta_bytes_since_checkpoint: Cell::new(0),
            checkpoints_written: Cell::new(0),
            checkpoint_keep_from,
        });
        let blob_task = glommio::spawn_local(commit::run(blob, |_, _| {}));
        let publisher = inner.clone();
        let meta_task = glommio::spawn_local(commit::run(meta, move |ops, bytes| {
            publisher.publish(ops, bytes)
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
        if message.len() > MESSAGE_BYTES_MAX {
            return Err(StoreError::TooLarge {
                what: "message",
                bytes: message.len(),
                max: MESSAGE_BYTES_MAX,
            });
        }
        let log = &self.inner.blob;
        log.wait_room(RECORD_HEADER_BYTES + message.len()).await;
        let (ticket, (segment, offset)) = log.push(RecordType::Blob, message, ());
        let blob = BlobRef {
            core: self.inner.cfg.core,
            segment,
            offset,
            len: message.len() as u32,
        };
        Ok((blob, BlobTicket { ticket }))
    }

    /// Creates mailboxes on first use, assigns UIDs (strictly ascending per mailbox, never
    /// reused) and modseqs, appends the MessageAppend records (group-committed), and
    /// returns once they are durable and published to the index. Returns the UIDs in the
    /// order of `deliveries`. The caller must send each user's deliveries to its owner core.
    pub async fn deliver(&self, deliveries: &[Delivery]) -> Result<Vec<u32>, StoreError> {
        if deliveries.len() > DELIVERIES_PER_CALL_MAX {
            return Err(StoreError::TooLarge {
                what: "delivery list",
                bytes: deliveries.len(),
                max: DELIVERIES_PER_CALL_MAX,
            });
        }
        for d in deliveries {
            check_names(&d.user, &d.mailbox)?;
            if d.blob.offset > u64::from(u32::MAX) {
                return Err(StoreError::TooLarge {
                    what: "blob offset",
                    bytes: usize::try_from(d.blob.offset).unwrap_or(usize::MAX),
                    max: u32::MAX as usize,
                });
            }
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
                let rec = {
                    let mut idx = self.inner.index.borrow_mut();
                    let mb = idx.mailbox_mut(&d.user, &d.mailbox).ok_or_else(|| {
                        StoreError::NoSuchMailbox {
                            user: d.user.clone(),
                            mailbox: d.mailbox.clone(),
                        }
                    })?;
                    if mb.uid_next == u32::MAX || mb.uid_next == 0 {
                        return Err(StoreError::Exhausted {
                            user: d.user.clone(),
                            mailbox: d.mailbox.clone(),
                            what: "UIDs",
                        });
                    }
                    let uid = mb.uid_next;
                    mb.uid_next += 1;
                    let modseq = mb.modseq_next;
                    mb.modseq_next += 1;
                    MessageAppend {
                        mailbox_id: mb.id,
                        uid,
                        modseq,
                        blob: d.blob,
                        internal_date: d.internal_date,
                        flags: 0,
                    }
                };
                uids.push(rec.uid);
                tickets.push(self.push_meta(MetaRecord::MessageAppend(rec))?);
            }
        }
        for t in &tickets {
            t.wait().await?;
        }
        Ok(uids)
    }

    /// Replaces a message's flags; returns the new modseq once durable and published.
    pub async fn set_flags(
        &self,
        user: &str,
        mailbox: &str,
        uid: u32,
        flags: u32,
    ) -> Result<u64, StoreError> {
        self.change(user, mailbox, uid, |mailbox_id, modseq| {
            MetaRecord::FlagsSet(FlagsSet {
                mailbox_id,
                uid,
                modseq,
                flags,
            })
        })
        .await
    }

    /// Expunges a message (writes a tombstone); returns the modseq once durable and
    /// removed from the index.
    pub async fn expunge(&self, user: &str, mailbox: &str, uid: u32) -> Result<u64, StoreError> {
        self.change(user, mailbox, uid, |mailbox_id, modseq| {
            MetaRecord::Expunge(Expunge {
                mailbox_id,
                uid,
                modseq,
            })
        })
        .await
    }

    async fn change(
        &self,
        user: &str,
        mailbox: &str,
        uid: u32,
        make: impl FnOnce(u64, u64) -> MetaRecord,
    ) -> Result<u64, StoreError> {
        check_names(user, mailbox)?;
        self.inner
            .meta
            .wait_room(self.inner.append_record_bytes)
            .await;
        let rec = {
            let mut idx = self.inner.index.borrow_mut();
            let mb = idx
                .mailbox_mut(user, mailbox)
                .ok_or_else(|| StoreError::NoSuchMailbox {
                    user: user.to_owned(),
                    mailbox: mailbox.to_owned(),
                })?;
            if mb.get(uid).is_none() {
                return Err(StoreError::NoSuchMessage {
                    user: user.to_owned(),
                    mailbox: mailbox.to_owned(),
                    uid,
                });
            }
            let modseq = mb.modseq_next;
            mb.modseq_next += 1;
            make(mb.id, modseq)
        };
        let modseq = rec.modseq();
        let ticket = self.push_meta(rec)?;
        ticket.wait().await?;
        Ok(modseq)
    }

    fn push_meta(&self, rec: MetaRecord) -> Result<Ticket, StoreError> {
        let what = match rec.record_type() {
            RecordType::MailboxCreate => "MailboxCreate",
            RecordType::MessageAppend => "MessageAppend",
            RecordType::FlagsSet => "FlagsSet",
            _ => "Expunge",
        };
        let mut scratch = self.inner.scratch.borrow_mut();
        let encoded = rec.clone();
        self.inner
            .meta
            .push_with(rec, |buf| encoded.encode(buf, &mut scratch))
            .map_err(|reason| StoreError::Encode { what, reason })
    }

    /// Returns the id of `user`'s mailbox `name`, creating it durably first if needed.
    async fn ensure_mailbox(&self, user: &str, name: &str) -> Result<u64, StoreError> {
        loop {
            if let Some(mb) = self.inner.index.borrow().mailbox(user, name) {
                return Ok(mb.id());
            }
            let key = (user.to_owned(), name.to_owned());
            let in_flight = self.inner.pending_creates.borrow().get(&key).cloned();
            if let Some(done) = in_flight {
                // Someone else is creating it: wait, then look again (if that create
                // failed, this caller makes its own attempt).
                let _ = done.wait().await;
                continue;
            }
            let size = RECORD_HEADER_BYTES + 64 + user.len() + name.len();
            self.inner.meta.wait_room(size).await;
            if self.inner.index.borrow().mailbox(user, name).is_some()
                || self.inner.pending_creates.borrow().contains_key(&key)
            {
                continue;
            }
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
                let now = u32::try_from(unix_now_secs()).unwrap_or(u32::MAX);
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
            let ticket = self.push_meta(MetaRecord::MailboxCreate(rec))?;
            self.inner
                .pending_creates
                .borrow_mut()
                .insert(key.clone(), ticket.done.clone());
            let result = ticket.wait().await;
            self.inner.pending_creates.borrow_mut().remove(&key);
            result?;
            return Ok(id);
        }
    }

    /// Reads a blob of any core's log, verifying its CRC, length and type.
    pub fn read_blob(&self, r: BlobRef) -> Result<Vec<u8>, StoreError> {
        let path = segment::segment_path(
            &segment::core_dir(&self.inner.cfg.data_dir, r.core),
            SegmentKind::Blob,
            r.segment,
        );
        let cached = self
            .inner
            .readers
            .borrow()
            .get(&(r.core, r.segment))
            .cloned();
        let file = match cached {
            Some(f) => f,
            None => {
                let f = Rc::new(File::open(&path).map_err(|e| StoreError::io("open", &path, e))?);
                let mut readers = self.inner.readers.borrow_mut();
                if readers.len() >= READ_HANDLES_MAX {
                    readers.clear();
                }
                readers.insert((r.core, r.segment), f.clone());
                f
            }
        };
        read_blob_record(&file, &path, r)
    }

    /// The mailbox's messages as (UID, blob), ascending (empty if it does not exist).
    pub fn mailbox_uids(&self, user: &str, mailbox: &str) -> Vec<(u32, BlobRef)> {
        self.inner
            .index
            .borrow()
            .mailbox(user, mailbox)
            .map(|m| m.messages().iter().map(|e| (e.uid, e.blob())).collect())
            .unwrap_or_default()
    }

    /// The mailbox's messages with flags and modseqs, ascending by UID.
    pub fn messages(&self, user: &str, mailbox: &str) -> Vec<MessageEntry> {
        self.inner
            .index
            .borrow()
            .mailbox(user, mailbox)
            .map(|m| m.messages().to_vec())
            .unwrap_or_default()
    }

    pub fn mailbox_status(&self, user: &str, mailbox: &str) -> Option<MailboxStatus> {
        self.inner
            .index
            .borrow()
            .mailbox(user, mailbox)
            .map(|m| m.status())
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
    /// Publishes a durable meta batch (called by the meta commit task).
    fn publish(self: &Rc<Self>, ops: Vec<MetaRecord>, bytes: u64) {
        {
            let mut idx = self.index.borrow_mut();
            for op in &ops {
                idx.publish(op);
            }
        }
        let since = self.meta_bytes_since_checkpoint.get() + bytes;
        self.meta_bytes_since_checkpoint.set(since);
        let interval = self.cfg.checkpoint_meta_bytes_interval;
        if interval == 0 || since < interval {
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

/// Snapshots the index and this core's meta position synchronously (consistent: both
/// change together in the commit task), then writes the file asynchronously.
async fn write_checkpoint(inner: &Rc<Inner>) -> Result<(), StoreError> {
    let (bytes, generation) = {
        let idx = inner.index.borrow();
        let own = LogPosition::from_tail(idx.core, &inner.meta.tail());
        let mut starts: Vec<LogPosition> = idx
            .covered
            .iter()
            .filter(|p| p.core != idx.core)
            .copied()
            .collect();
        starts.push(own);
        (
            checkpoint::encode(&idx, idx.generation, starts)?,
            idx.generation,
        )
    };
    inner.meta_bytes_since_checkpoint.set(0);
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

fn check_names(user: &str, mailbox: &str) -> Result<(), StoreError> {
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
pub fn read_blob_record(file: &File, path: &Path, r: BlobRef) -> Result<Vec<u8>, StoreError> {
    if r.offset < SEGMENT_HEADER_BYTES as u64 {
        return Err(StoreError::corrupt(
            path,
            r.offset,
            "blob reference inside the segment header",
        ));
    }
    let total = RECORD_HEADER_BYTES + r.len as usize;
    let mut buf = vec![0u8; total];
    let n = segment::read_up_to(file, &mut buf, r.offset)
        .map_err(|e| StoreError::io("read", path, e))?;
    if n < total {
        return Err(StoreError::corrupt(
            path,
            r.offset,
            format!("blob record needs {total} bytes, the segment has {n} there"),
        ));
    }
    let (h, _) = record::decode_record(&buf)
        .map_err(|e| StoreError::corrupt(path, r.offset, e.to_string()))?;
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
    buf.drain(..RECORD_HEADER_BYTES);
    Ok(buf)
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
