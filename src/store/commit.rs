//! Group commit for one append-only log (a core's blob log or meta log).
//!
//! Appenders encode their record into the log's single *pending* batch (synchronously, so
//! record order is the order of the `push` calls) and await the batch's completion. One
//! commit task per log takes the pending batch whenever it is not empty and no batch is in
//! flight, and writes it with one `write_all_at` (chunks of at most 4 MiB only for a record
//! larger than that) and one `fdatasync`. Everything pushed while a batch is in flight
//! goes into the next one. An appender whose record would overflow `batch_bytes_max` waits
//! until the pending batch is taken (back-pressure).
//!
//! The segment and offset of a record are fixed when the batch is written (the commit
//! task rolls to a new segment when the batch does not fit), so a record's position is
//! `batch base + offset in batch`, handed back through [`Placement`].
//!
//! On a failed write or sync, every waiter of the batch gets the error (DiskFull for
//! ENOSPC/EDQUOT/short writes), the file is truncated back to the batch start and the
//! write position stays there; if even the truncation fails, it is retried before the next
//! batch, which fails too until it succeeds. Service resumes when space returns.
//!
//! This is the only place in the store that touches glommio I/O (through
//! `runtime::file::AppendFile`).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::index::LogTail;
use super::record::{self, RecordType};
use super::segment::{self, SegmentKind, SEGMENT_HEADER_BYTES};
use super::{Fsync, StoreError};
use crate::runtime::file::AppendFile;

/// Largest single write submitted to the kernel.
pub const WRITE_BYTES_MAX: usize = 4 << 20;

/// Where a batch landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub segment: u32,
    /// Offset of the batch's first byte in the segment.
    pub base: u64,
}

/// Completion of one batch, shared by all of its waiters.
pub(crate) struct BatchDone {
    result: RefCell<Option<Result<Placement, StoreError>>>,
    wakers: RefCell<Vec<Waker>>,
}

impl BatchDone {
    fn new() -> Rc<BatchDone> {
        Rc::new(BatchDone {
            result: RefCell::new(None),
            wakers: RefCell::new(Vec::new()),
        })
    }

    fn complete(&self, r: Result<Placement, StoreError>) {
        *self.result.borrow_mut() = Some(r);
        for w in self.wakers.take() {
            w.wake();
        }
    }

    /// Resolves when the batch is durable (or failed).
    pub(crate) fn wait(self: &Rc<Self>) -> WaitDone {
        WaitDone(self.clone())
    }
}

pub(crate) struct WaitDone(Rc<BatchDone>);

impl Future for WaitDone {
    type Output = Result<Placement, StoreError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &*self.0.result.borrow() {
            Some(Ok(p)) => Poll::Ready(Ok(*p)),
            Some(Err(e)) => Poll::Ready(Err(duplicate_error(e))),
            None => {
                self.0.wakers.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Gives every waiter of a failed batch its own copy of the error.
pub(crate) fn duplicate_error(e: &StoreError) -> StoreError {
    fn io_copy(e: &io::Error) -> io::Error {
        match e.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(e.kind(), e.to_string()),
        }
    }
    match e {
        StoreError::DiskFull { op, path, source } => StoreError::DiskFull {
            op,
            path: path.clone(),
            source: io_copy(source),
        },
        StoreError::Io { op, path, source } => StoreError::Io {
            op,
            path: path.clone(),
            source: io_copy(source),
        },
        StoreError::Corrupt {
            segment,
            offset,
            reason,
        } => StoreError::Corrupt {
            segment: segment.clone(),
            offset: *offset,
            reason: reason.clone(),
        },
        StoreError::Closed { path } => StoreError::Closed { path: path.clone() },
        other => StoreError::Encode {
            what: "batch",
            reason: other.to_string(),
        },
    }
}

/// A pushed record: await `done`, then its offset is `base + offset_in_batch`.
pub(crate) struct Ticket {
    pub(crate) done: Rc<BatchDone>,
    pub(crate) offset_in_batch: u64,
}

impl Ticket {
    pub(crate) async fn wait(&self) -> Result<(u32, u64), StoreError> {
        let p = self.done.wait().await?;
        Ok((p.segment, p.base + self.offset_in_batch))
    }
}

struct Batch<T> {
    buf: Vec<u8>,
    ops: Vec<T>,
    done: Rc<BatchDone>,
    /// Offset in batch and CRC of the last record.
    last_record: Option<(u64, u32)>,
}

impl<T> Batch<T> {
    fn new() -> Batch<T> {
        Batch {
            buf: Vec::new(),
            ops: Vec::new(),
            done: BatchDone::new(),
            last_record: None,
        }
    }
}

/// Which stage a test-injected failure hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultStage {
    /// Half the batch is written, then the write fails (a torn write).
    Write,
    /// The whole batch is written, then fdatasync fails.
    Sync,
}

/// A failure injected into the next `batches` batches (fault-injection tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub stage: FaultStage,
    /// errno reported, e.g. `libc::ENOSPC`.
    pub errno: i32,
    pub batches: u32,
}

/// Counters of one log (exact: one core, `Cell`s).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    pub batches: u64,
    pub records: u64,
    pub bytes: u64,
    pub syncs: u64,
    pub failed_batches: u64,
    pub segments_created: u64,
}

struct State<T> {
    file: Option<Rc<AppendFile>>,
    tail: LogTail,
    pending: Batch<T>,
    in_flight: Option<Rc<BatchDone>>,
    work_waker: Option<Waker>,
    /// Appenders waiting for room, first come first served (a large record is not
    /// starved by a stream of small ones).
    room_queue: VecDeque<(u64, Waker)>,
    room_next_id: u64,
    /// A failed batch left bytes past this offset that could not be truncated yet.
    dirty_tail: Option<u64>,
    fault: Option<Fault>,
}

/// One log's writer; shared (Rc) by appenders and its commit task.
pub(crate) struct LogWriter<T> {
    kind: SegmentKind,
    core: u16,
    dir: PathBuf,
    segment_bytes_max: u64,
    batch_bytes_max: usize,
    fsync: Fsync,
    state: RefCell<State<T>>,
    stats: Cell<LogStats>,
}

impl<T: 'static> LogWriter<T> {
    /// Opens the log where recovery left it (creating its first segment if needed).
    pub(crate) async fn open(
        kind: SegmentKind,
        core: u16,
        dir: PathBuf,
        mut tail: LogTail,
        segment_bytes_max: u64,
        batch_bytes_max: usize,
        fsync: Fsync,
    ) -> Result<Rc<LogWriter<T>>, StoreError> {
        let mut stats = LogStats::default();
        if tail.segment == 0 {
            let seq = tail.next_sequence.max(1);
            let (_, header) =
                segment::create_segment(&dir, kind, core, seq, fsync == Fsync::Always)?;
            stats.segments_created += 1;
            tail = LogTail {
                segment: seq,
                nonce: header.nonce,
                end: SEGMENT_HEADER_BYTES as u64,
                next_sequence: seq + 1,
                last_record: None,
            };
        }
        let path = segment::segment_path(&dir, kind, tail.segment);
        let file = AppendFile::open(&path)
            .await
            .map_err(|e| StoreError::io("open", &path, e))?;
        Ok(Rc::new(LogWriter {
            kind,
            core,
            dir,
            segment_bytes_max,
            batch_bytes_max,
            fsync,
            state: RefCell::new(State {
                file: Some(Rc::new(file)),
                tail,
                pending: Batch::new(),
                in_flight: None,
                work_waker: None,
                room_queue: VecDeque::new(),
                room_next_id: 0,
                dirty_tail: None,
                fault: None,
            }),
            stats: Cell::new(stats),
        }))
    }

    /// The most a batch may hold (unless a single record is larger).
    fn batch_limit(&self) -> usize {
        let seg_room = self
            .segment_bytes_max
            .saturating_sub(SEGMENT_HEADER_BYTES as u64);
        self.batch_bytes_max
            .min(usize::try_from(seg_room).unwrap_or(usize::MAX))
    }

    /// Waits until a record of `record_bytes` fits the pending batch (or the batch is
    /// empty: a large record then travels alone).
    pub(crate) fn wait_room(&self, record_bytes: usize) -> WaitRoom<'_, T> {
        WaitRoom {
            log: self,
            record_bytes,
            queued: None,
        }
    }

    /// Appends one record to the pending batch. `encode` appends header + payload to the
    /// buffer and returns the CRC. Synchronous: call right after `wait_room`.
    pub(crate) fn push_with(
        &self,
        op: T,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<u32, String>,
    ) -> Result<Ticket, String> {
        let mut st = self.state.borrow_mut();
        let off = st.pending.buf.len();
        match encode(&mut st.pending.buf) {
            Ok(crc) => {
                st.pending.ops.push(op);
                st.pending.last_record = Some((off as u64, crc));
                if let Some(w) = st.work_waker.take() {
                    w.wake();
                }
                Ok(Ticket {
                    done: st.pending.done.clone(),
                    offset_in_batch: off as u64,
                })
            }
            Err(e) => {
                st.pending.buf.truncate(off);
                Err(e)
            }
        }
    }

    /// Appends one framed record with a raw payload.
    pub(crate) fn push(&self, kind: RecordType, payload: &[u8], op: T) -> Ticket {
        let mut st = self.state.borrow_mut();
        let off = st.pending.buf.len();
        let crc = record::encode_record(&mut st.pending.buf, kind, payload);
        st.pending.ops.push(op);
        st.pending.last_record = Some((off as u64, crc));
        if let Some(w) = st.work_waker.take() {
            w.wake();
        }
        Ticket {
            done: st.pending.done.clone(),
            offset_in_batch: off as u64,
        }
    }

    /// Waits until everything pushed so far is durable (or failed).
    pub(crate) async fn flush(&self) {
        let target = {
            let st = self.state.borrow();
            if st.pending.buf.is_empty() {
                st.in_flight.clone()
            } else {
                Some(st.pending.done.clone())
            }
        };
        if let Some(done) = target {
            let _ = done.wait().await;
        }
    }

    pub(crate) fn tail(&self) -> LogTail {
        self.state.borrow().tail
    }

    pub(crate) fn stats(&self) -> LogStats {
        self.stats.get()
    }

    pub(crate) fn inject_fault(&self, fault: Option<Fault>) {
        self.state.borrow_mut().fault = fault;
    }

    fn bump(&self, f: impl FnOnce(&mut LogStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    fn current_path(&self, segment: u32) -> PathBuf {
        segment::segment_path(&self.dir, self.kind, segment)
    }

    /// Writes one batch; on success the tail has advanced past it.
    async fn write_batch(&self, buf: Vec<u8>) -> Result<Placement, StoreError> {
        let len = buf.len() as u64;
        // Undo an earlier failed batch whose truncation failed.
        let (dirty, file, segment) = {
            let st = self.state.borrow();
            (st.dirty_tail, st.file.clone(), st.tail.segment)
        };
        let Some(mut file) = file else {
            return Err(StoreError::Closed {
                path: self.current_path(segment),
            });
        };
        if let Some(at) = dirty {
            file.truncate(at)
                .await
                .map_err(|e| StoreError::io("truncate", self.current_path(segment), e))?;
            self.state.borrow_mut().dirty_tail = None;
        }
        // Roll when the batch does not fit and the segment already holds records.
        let (end, seq_next) = {
            let st = self.state.borrow();
            (st.tail.end, st.tail.next_sequence)
        };
        if end > SEGMENT_HEADER_BYTES as u64 && end + len > self.segment_bytes_max {
            // A roll that failed after creating the file (e.g. the open failed) left a
            // header-only segment behind: replace it.
            let leftover = segment::segment_path(&self.dir, self.kind, seq_next);
            if std::fs::metadata(&leftover).is_ok_and(|m| m.len() <= SEGMENT_HEADER_BYTES as u64) {
                std::fs::remove_file(&leftover)
                    .map_err(|e| StoreError::io("remove", &leftover, e))?;
            }
            let (path, header) = segment::create_segment(
                &self.dir,
                self.kind,
                self.core,
                seq_next,
                self.fsync == Fsync::Always,
            )?;
            let new_file = AppendFile::open(&path)
                .await
                .map_err(|e| StoreError::io("open", &path, e))?;
            file = Rc::new(new_file);
            let mut st = self.state.borrow_mut();
            st.file = Some(file.clone());
            st.tail = LogTail {
                segment: seq_next,
                nonce: header.nonce,
                end: SEGMENT_HEADER_BYTES as u64,
                next_sequence: seq_next + 1,
                last_record: None,
            };
            drop(st);
            self.bump(|s| s.segments_created += 1);
        }
        let (base, segment) = {
            let st = self.state.borrow();
            (st.tail.end, st.tail.segment)
        };
        let fault = {
            let mut st = self.state.borrow_mut();
            match st.fault.as_mut() {
                Some(f) if f.batches > 0 => {
                    f.batches -= 1;
                    Some(*f)
                }
                _ => None,
            }
        };
        let path = self.current_path(segment);
        let result = self.write_and_sync(&file, buf, base, fault).await;
        match result {
            Ok(()) => {
                let mut st = self.state.borrow_mut();
                st.tail.end = base + len;
                Ok(Placement { segment, base })
            }
            Err((op, e)) => {
                // No half batch may ever be read back: cut the file to the batch start.
                if file.truncate(base).await.is_err() {
                    self.state.borrow_mut().dirty_tail = Some(base);
                }
                Err(StoreError::io(op, path, e))
            }
        }
    }

    async fn write_and_sync(
        &self,
        file: &AppendFile,
        buf: Vec<u8>,
        base: u64,
        fault: Option<Fault>,
    ) -> Result<(), (&'static str, io::Error)> {
        if let Some(f) = fault {
            if f.stage == FaultStage::Write {
                let half = buf[..buf.len() / 2].to_vec();
                if !half.is_empty() {
                    file.write_all_at(half, base)
                        .await
                        .map_err(|e| ("write", e))?;
                }
                return Err(("write", io::Error::from_raw_os_error(f.errno)));
            }
        }
        if buf.len() <= WRITE_BYTES_MAX {
            file.write_all_at(buf, base)
                .await
                .map_err(|e| ("write", e))?;
        } else {
            let mut at = 0;
            while at < buf.len() {
                let end = (at + WRITE_BYTES_MAX).min(buf.len());
                file.write_all_at(buf[at..end].to_vec(), base + at as u64)
                    .await
                    .map_err(|e| ("write", e))?;
                at = end;
            }
        }
        if let Some(f) = fault {
            return Err(("fdatasync", io::Error::from_raw_os_error(f.errno)));
        }
        if self.fsync == Fsync::Always {
            self.bump(|s| s.syncs += 1);
            file.sync_data().await.map_err(|e| ("fdatasync", e))?;
        }
        Ok(())
    }
}

/// Future of [`LogWriter::wait_room`]: ready when the record fits the pending batch and
/// no earlier appender is still waiting.
pub(crate) struct WaitRoom<'a, T> {
    log: &'a LogWriter<T>,
    record_bytes: usize,
    /// Our place in the queue once we had to wait.
    queued: Option<u64>,
}

impl<T: 'static> Future for WaitRoom<'_, T> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let limit = self.log.batch_limit();
        let record_bytes = self.record_bytes;
        let queued = self.queued;
        let mut st = self.log.state.borrow_mut();
        let used = st.pending.buf.len();
        let fits = used == 0 || used + record_bytes <= limit;
        let first = match (queued, st.room_queue.front()) {
            (_, None) => true,
            (Some(id), Some((head, _))) => id == *head,
            (None, Some(_)) => false,
        };
        if fits && first {
            if queued.is_some() {
                st.room_queue.pop_front();
                // The next in line may fit too.
                if let Some((_, w)) = st.room_queue.front() {
                    w.wake_by_ref();
                }
            }
            drop(st);
            self.queued = None;
            return Poll::Ready(());
        }
        match queued {
            Some(id) => {
                if let Some(entry) = st.room_queue.iter_mut().find(|(i, _)| *i == id) {
                    entry.1 = cx.waker().clone();
                }
            }
            None => {
                let id = st.room_next_id;
                st.room_next_id += 1;
                st.room_queue.push_back((id, cx.waker().clone()));
                drop(st);
                self.queued = Some(id);
            }
        }
        Poll::Pending
    }
}

impl<T> Drop for WaitRoom<'_, T> {
    fn drop(&mut self) {
        // A cancelled waiter leaves the queue, and whoever is now first gets a look.
        if let Some(id) = self.queued {
            if let Ok(mut st) = self.log.state.try_borrow_mut() {
                st.room_queue.retain(|(i, _)| *i != id);
                if let Some((_, w)) = st.room_queue.front() {
                    w.wake_by_ref();
                }
            }
        }
    }
}

/// Resolves when the pending batch is not empty.
struct WorkReady<'a, T> {
    log: &'a LogWriter<T>,
}

impl<T> Future for WorkReady<'_, T> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.log.state.borrow_mut();
        if st.pending.buf.is_empty() {
            st.work_waker = Some(cx.waker().clone());
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

/// The commit task of one log. `on_durable(ops, batch_bytes)` runs after a batch is
/// durable and before its waiters are woken (the meta log publishes to the index there,
/// so a `deliver` returns only after its messages are visible, in record order).
pub(crate) async fn run<T: 'static>(
    log: Rc<LogWriter<T>>,
    mut on_durable: impl FnMut(Vec<T>, u64),
) {
    loop {
        WorkReady { log: &log }.await;
        let batch = {
            let mut st = log.state.borrow_mut();
            let b = std::mem::replace(&mut st.pending, Batch::new());
            st.in_flight = Some(b.done.clone());
            if let Some((_, w)) = st.room_queue.front() {
                w.wake_by_ref();
            }
            b
        };
        let Batch {
            buf,
            ops,
            done,
            last_record,
        } = batch;
        let len = buf.len() as u64;
        let records = ops.len() as u64;
        let result = log.write_batch(buf).await;
        match &result {
            Ok(p) => {
                if let Some((rel, crc)) = last_record {
                    log.state.borrow_mut().tail.last_record = Some((p.base + rel, crc));
                }
                log.bump(|s| {
                    s.batches += 1;
                    s.records += records;
                    s.bytes += len;
                });
                on_durable(ops, len);
            }
            Err(_) => log.bump(|s| s.failed_batches += 1),
        }
        done.complete(result);
        log.state.borrow_mut().in_flight = None;
    }
}
