//! Group commit for one append-only log (a core's blob log or meta log).
//!
//! Appenders encode their record into the log's single *pending* batch (synchronously, so
//! record order is the order of the `push` calls) and await the batch's completion. One
//! commit task per log takes the pending batch whenever it is not empty and no batch is in
//! flight, and writes it with one write (a `pwrite` on the executor thread up to
//! [`PWRITE_BYTES_MAX`], else through io_uring in chunks of at most 4 MiB) and one
//! `fdatasync` (through io_uring: the executor keeps serving while the disk flushes).
//! Everything pushed while a batch is in flight goes into the next one. An appender whose
//! record would overflow `batch_bytes_max` (or the segment the pending batch is placed
//! in) waits until the pending batch is taken (back-pressure).
//!
//! # Placement at push time
//! The pending batch is *placed* (segment and base offset) by its first record: right
//! after the batch in flight (or the durable tail when none is), or at the start of a new
//! segment when it would not fit. So a record's final position is known when it is pushed,
//! before it is durable: `LogWriter::push` returns it, and the blob log hands it out as
//! the message's `BlobRef` while the blob is still on its way to the disk (the caller
//! writes the index records concurrently; see `store` "Ownership and ordering"). The
//! segment is created (and the previous one sealed: cut to its durable end and synced)
//! when the first batch placed in it is written, after the batch before it is durable.
//!
//! # Failures
//! On a failed write or sync, every waiter of the batch gets the error (DiskFull for
//! ENOSPC/EDQUOT/short writes), the file is truncated back to the batch start and the
//! durable tail stays there; if even the truncation fails, it is retried before the next
//! batch, which fails too until it succeeds. Service resumes when space returns. The
//! pending batch was placed behind the failed one, so its position is gone too:
//! - a log that hands positions out (`LogPositions::Exposed`, the blob log) fails the
//!   pending batch as well and places the next batch in a *new segment*: a position once
//!   handed out is never reused for other bytes, so an index record that became durable
//!   for a blob whose batch then failed points at nothing (its read fails) instead of at
//!   another message;
//! - a log whose positions nobody keeps (the meta log) re-places the pending batch at the
//!   durable tail and writes it normally.
//!
//! # Zero-filled space ahead
//! On a disk (`Fsync::Always`, not tmpfs), appending to a file makes every fdatasync also
//! write the file's new size and block allocation (a journal commit on a journalling
//! filesystem); overwriting blocks that were already written and synced needs only the
//! data and a cache flush. So the current
//! segment is kept zero-filled (zeros written and fdatasynced, in chunks of
//! [`ZERO_CHUNK_BYTES`], by a task of its own, off the commit path) from
//! [`ZERO_AHEAD_LOW_BYTES`] up to [`ZERO_AHEAD_HIGH_BYTES`] past the last batch, never past
//! `segment_bytes_max`. A zero record header has type 0, which is never valid, so
//! recovery and every reader see the zero tail as the end of the log (free space, see
//! `segment::Scanner`); the durable end stays the logical end (`LogTail::end`). The
//! commit task never writes a batch into a range being zero-filled nor truncates or seals
//! while a zero-fill write is in flight (it waits for it), so zeros never land on data;
//! sealing cuts the zero tail off. A failed zero-fill (disk full) stops the zero-filling of
//! that segment; batches then append as they would without it.
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
use super::segment::{self, SegmentHeader, SegmentKind, SEGMENT_HEADER_BYTES};
use super::{Fsync, StoreError, SyncWait};
use crate::runtime::file::AppendFile;

/// Largest single write submitted to the kernel.
pub const WRITE_BYTES_MAX: usize = 4 << 20;
/// Batches up to this size are written with a synchronous `pwrite` on the executor
/// thread (a few microseconds into the page cache); larger ones through io_uring.
pub const PWRITE_BYTES_MAX: usize = 256 << 10;
/// Zero-filling starts when less than this is zero-filled past the last batch...
pub const ZERO_AHEAD_LOW_BYTES: u64 = 4 << 20;
/// ...and goes on, one chunk at a time, until this much is.
pub const ZERO_AHEAD_HIGH_BYTES: u64 = 8 << 20;
/// One zero-fill write (+ fdatasync).
pub const ZERO_CHUNK_BYTES: usize = 1 << 20;
const _: () = assert!(ZERO_AHEAD_LOW_BYTES < ZERO_AHEAD_HIGH_BYTES);

/// Where a batch landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub segment: u32,
    /// Offset of the batch's first byte in the segment.
    pub base: u64,
}

/// Whether anyone keeps the positions of this log's records (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogPositions {
    /// Handed out at push time and stored elsewhere (blob log → `BlobRef`): never reused.
    Exposed,
    /// Only the log itself cares (meta log): a failed batch's space is reused.
    Private,
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
    /// Fixed by the first record (see the module doc); None while the batch is empty.
    place: Option<Placement>,
    /// Bytes an appender waited room for while the batch was empty: the first record
    /// places the batch for at least this much (a group of records stays in one segment).
    reserved: u64,
    /// The batch starts a new segment.
    rolls: bool,
    /// When the first record went in; None while the batch is empty. The group-commit
    /// window counts from here, so a batch that gathered during the previous write
    /// does not wait again.
    first_pushed: Option<std::time::Instant>,
}

impl<T> Batch<T> {
    fn new() -> Batch<T> {
        Batch {
            buf: Vec::new(),
            ops: Vec::new(),
            done: BatchDone::new(),
            last_record: None,
            place: None,
            reserved: 0,
            rolls: false,
            first_pushed: None,
        }
    }
}

/// Where the next batch goes if nothing fails: just past the batch in flight, or the
/// durable tail when none is in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursor {
    segment: u32,
    end: u64,
    next_sequence: u32,
}

impl Cursor {
    fn from_tail(t: &LogTail) -> Cursor {
        Cursor {
            segment: t.segment,
            end: t.end,
            next_sequence: t.next_sequence,
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
    /// Batches that failed, including pending batches failed with the one in flight.
    pub failed_batches: u64,
    pub segments_created: u64,
    /// Bytes of zeros written ahead of the data.
    pub zero_filled_bytes: u64,
}

/// A zero-fill write in flight.
struct ZeroJob {
    /// Its range starts here (it ends before `segment_bytes_max`).
    start: u64,
    done: Rc<BatchDone>,
}

struct State<T> {
    file: Option<Rc<AppendFile>>,
    /// The durable end of the log.
    tail: LogTail,
    /// Where the next pending batch is placed.
    planned: Cursor,
    pending: Batch<T>,
    in_flight: Option<Rc<BatchDone>>,
    work_waker: Option<Waker>,
    /// Appenders waiting for room, first come first served (a large record is not
    /// starved by a stream of small ones).
    room_queue: VecDeque<(u64, Waker)>,
    room_next_id: u64,
    /// A failed batch left bytes past this offset that could not be truncated yet.
    dirty_tail: Option<u64>,
    /// The next batch starts a new segment (after a failure of an `Exposed` log).
    roll_next: bool,
    fault: Option<Fault>,
    /// The current segment holds data or written zeros up to here.
    zero_end: u64,
    zeroing: Option<ZeroJob>,
    /// Filling towards the high mark (between the low and the high mark).
    zero_filling: bool,
    /// Bumped whenever the file is cut or replaced: a zero-fill of an older epoch that
    /// completes does not count.
    zero_epoch: u64,
    /// Zero-filling failed in this segment: not tried again there.
    zero_off_segment: Option<u32>,
}

/// One log's writer; shared (Rc) by appenders and its commit task.
pub(crate) struct LogWriter<T> {
    kind: SegmentKind,
    core: u16,
    dir: PathBuf,
    segment_bytes_max: u64,
    batch_bytes_max: usize,
    fsync: Fsync,
    sync_wait: SyncWait,
    positions: LogPositions,
    /// Keep zero-filled space ahead (see the module doc).
    zero_fill: bool,
    state: RefCell<State<T>>,
    stats: Cell<LogStats>,
    /// The core's Prometheus counters (`Store::set_metrics`).
    metrics: std::cell::OnceCell<std::sync::Arc<crate::metrics::CoreMetrics>>,
}

impl<T: 'static> LogWriter<T> {
    /// Opens the log where recovery left it (creating its first segment if needed).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn open(
        kind: SegmentKind,
        core: u16,
        dir: PathBuf,
        mut tail: LogTail,
        segment_bytes_max: u64,
        batch_bytes_max: usize,
        fsync: (Fsync, SyncWait),
        positions: LogPositions,
    ) -> Result<Rc<LogWriter<T>>, StoreError> {
        let (fsync, sync_wait) = fsync;
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
        tail.next_sequence = tail.next_sequence.max(tail.segment + 1);
        let path = segment::segment_path(&dir, kind, tail.segment);
        let file = AppendFile::open(&path)
            .await
            .map_err(|e| StoreError::io("open", &path, e))?;
        // Recovery left nothing but zeros past the tail (or cut the file there).
        let zero_end = file
            .size_bytes()
            .map_err(|e| StoreError::io("stat", &path, e))?
            .max(tail.end);
        let zero_fill = fsync == Fsync::Always && !file.is_memory_backed();
        // Index records never go into a version-1 blob segment (see
        // `segment::FORMAT_VERSION`): the first batch starts a new one.
        let roll_next = kind == SegmentKind::Blob && {
            let std_file =
                std::fs::File::open(&path).map_err(|e| StoreError::io("open", &path, e))?;
            SegmentHeader::read_version(&std_file, &path)? < 2
        };
        Ok(Rc::new(LogWriter {
            kind,
            core,
            dir,
            segment_bytes_max,
            batch_bytes_max,
            fsync,
            sync_wait,
            positions,
            zero_fill,
            state: RefCell::new(State {
                file: Some(Rc::new(file)),
                tail,
                planned: Cursor::from_tail(&tail),
                pending: Batch::new(),
                in_flight: None,
                work_waker: None,
                room_queue: VecDeque::new(),
                room_next_id: 0,
                dirty_tail: None,
                roll_next,
                fault: None,
                zero_end,
                zeroing: None,
                zero_filling: false,
                zero_epoch: 0,
                zero_off_segment: None,
            }),
            stats: Cell::new(stats),
            metrics: std::cell::OnceCell::new(),
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

    /// Places an empty pending batch whose first record has `record_bytes` bytes.
    fn place(&self, st: &mut State<T>, record_bytes: u64) {
        if st.pending.place.is_some() {
            return;
        }
        let record_bytes = record_bytes.max(st.pending.reserved);
        let p = st.planned;
        let header = SEGMENT_HEADER_BYTES as u64;
        let roll =
            st.roll_next || (p.end > header && p.end + record_bytes > self.segment_bytes_max);
        st.pending.rolls = roll;
        st.pending.place = Some(if roll {
            Placement {
                segment: p.next_sequence,
                base: header,
            }
        } else {
            Placement {
                segment: p.segment,
                base: p.end,
            }
        });
    }

    /// Appends one record to the pending batch. `encode` appends header + payload of `op`
    /// to the buffer and returns the CRC. Synchronous: call right after `wait_room`.
    /// `encode` may also update `op` (it runs only once: a failed encode leaves nothing).
    pub(crate) fn push_with(
        &self,
        mut op: T,
        encode: impl FnOnce(&mut T, &mut Vec<u8>) -> Result<u32, String>,
    ) -> Result<Ticket, String> {
        let mut st = self.state.borrow_mut();
        let off = st.pending.buf.len();
        match encode(&mut op, &mut st.pending.buf) {
            Ok(crc) => Ok(self.pushed(&mut st, off, crc, op)),
            Err(e) => {
                st.pending.buf.truncate(off);
                Err(e)
            }
        }
    }

    /// Appends one framed record with a raw payload; returns its ticket and its final
    /// (segment, offset), valid once the ticket resolves Ok.
    pub(crate) fn push(&self, kind: RecordType, payload: &[u8], op: T) -> (Ticket, (u32, u64)) {
        let mut st = self.state.borrow_mut();
        let off = st.pending.buf.len();
        let crc = record::encode_record(&mut st.pending.buf, kind, payload);
        let ticket = self.pushed(&mut st, off, crc, op);
        let at = st
            .pending
            .place
            .map(|p| (p.segment, p.base + off as u64))
            .unwrap_or_default();
        (ticket, at)
    }

    /// Accounts for the record just encoded at `off` of the pending buffer: places the
    /// batch, keeps `op`, wakes the commit task.
    fn pushed(&self, st: &mut State<T>, off: usize, crc: u32, op: T) -> Ticket {
        let bytes = (st.pending.buf.len() - off) as u64;
        self.place(st, bytes);
        st.pending
            .first_pushed
            .get_or_insert_with(std::time::Instant::now);
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

    pub(crate) fn set_metrics(&self, m: std::sync::Arc<crate::metrics::CoreMetrics>) {
        let _ = self.metrics.set(m);
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

    /// Seals the current segment (cut to its durable end, synced) and creates segment
    /// `seq`, which becomes the current one.
    async fn roll(&self, file: &AppendFile, seq: u32) -> Result<Rc<AppendFile>, StoreError> {
        self.wait_zero_fill(None).await;
        let (end, segment) = {
            let mut st = self.state.borrow_mut();
            st.zero_epoch += 1;
            (st.tail.end, st.tail.segment)
        };
        // Recovery trusts a sealed segment up to its length: nothing may follow its last
        // durable record (a failed batch, zero-filled space).
        let path = self.current_path(segment);
        file.truncate(end)
            .await
            .map_err(|e| StoreError::io("truncate", &path, e))?;
        self.state.borrow_mut().zero_end = end;
        if self.fsync == Fsync::Always {
            file.sync_data()
                .await
                .map_err(|e| StoreError::io("fdatasync", &path, e))?;
        }
        self.state.borrow_mut().dirty_tail = None;
        // A roll that failed after creating the file (e.g. the open failed) left a
        // header-only segment behind: replace it.
        let leftover = segment::segment_path(&self.dir, self.kind, seq);
        if std::fs::metadata(&leftover).is_ok_and(|m| m.len() <= SEGMENT_HEADER_BYTES as u64) {
            std::fs::remove_file(&leftover).map_err(|e| StoreError::io("remove", &leftover, e))?;
        }
        let (path, header) = segment::create_segment(
            &self.dir,
            self.kind,
            self.core,
            seq,
            self.fsync == Fsync::Always,
        )?;
        let new_file = Rc::new(
            AppendFile::open(&path)
                .await
                .map_err(|e| StoreError::io("open", &path, e))?,
        );
        let mut st = self.state.borrow_mut();
        st.file = Some(new_file.clone());
        st.tail = LogTail {
            segment: seq,
            nonce: header.nonce,
            end: SEGMENT_HEADER_BYTES as u64,
            next_sequence: seq + 1,
            last_record: None,
        };
        st.zero_end = SEGMENT_HEADER_BYTES as u64;
        st.zero_filling = false;
        st.zero_epoch += 1;
        st.zero_off_segment = None;
        drop(st);
        self.bump(|s| s.segments_created += 1);
        Ok(new_file)
    }

    /// Writes one batch at its placement; on success the tail has advanced past it.
    async fn write_batch(
        &self,
        place: Placement,
        rolls: bool,
        buf: Vec<u8>,
    ) -> Result<Placement, StoreError> {
        let len = buf.len() as u64;
        let (dirty, file, segment) = {
            let st = self.state.borrow();
            (st.dirty_tail, st.file.clone(), st.tail.segment)
        };
        let Some(mut file) = file else {
            return Err(StoreError::Closed {
                path: self.current_path(segment),
            });
        };
        if rolls {
            file = self.roll(&file, place.segment).await?;
        } else if let Some(at) = dirty {
            // Undo an earlier failed batch whose truncation failed.
            self.wait_zero_fill(None).await;
            self.state.borrow_mut().zero_epoch += 1;
            file.truncate(at)
                .await
                .map_err(|e| StoreError::io("truncate", self.current_path(segment), e))?;
            let mut st = self.state.borrow_mut();
            st.dirty_tail = None;
            st.zero_end = at;
        }
        let (end, segment) = {
            let st = self.state.borrow();
            (st.tail.end, st.tail.segment)
        };
        if (segment, end) != (place.segment, place.base) {
            // Placement and tail are kept in step by `run`; a mismatch would leave a gap.
            return Err(StoreError::corrupt(
                self.current_path(segment),
                end,
                format!(
                    "batch placed at segment {} offset {}, but the log continues here",
                    place.segment, place.base
                ),
            ));
        }
        let base = place.base;
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
        // Zeros must not land on the batch: wait for a zero-fill write in its range.
        self.wait_zero_fill(Some(base + len)).await;
        let result = self.write_and_sync(&file, buf, base, fault).await;
        match result {
            Ok(()) => {
                let mut st = self.state.borrow_mut();
                st.tail.end = base + len;
                st.zero_end = st.zero_end.max(base + len);
                Ok(place)
            }
            Err((op, e)) => {
                // No half batch may ever be read back: cut the file to the batch start.
                self.wait_zero_fill(None).await;
                self.state.borrow_mut().zero_epoch += 1;
                if file.truncate(base).await.is_err() {
                    self.state.borrow_mut().dirty_tail = Some(base);
                } else {
                    self.state.borrow_mut().zero_end = base;
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
        if buf.len() <= PWRITE_BYTES_MAX {
            file.write_all_at_now(&buf, base)
                .map_err(|e| ("write", e))?;
        } else if buf.len() <= WRITE_BYTES_MAX {
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
            let started = std::time::Instant::now();
            match self.sync_wait {
                SyncWait::IoUring => file.sync_data().await,
                SyncWait::Inline => file.sync_data_now(),
            }
            .map_err(|e| ("fdatasync", e))?;
            if let Some(m) = self.metrics.get() {
                m.store_sync(self.kind.into(), started.elapsed());
            }
        }
        Ok(())
    }

    /// Waits while a zero-fill write is in flight whose range starts before `reaching`
    /// (None: any).
    async fn wait_zero_fill(&self, reaching: Option<u64>) {
        loop {
            let done = {
                let st = self.state.borrow();
                match &st.zeroing {
                    Some(job) if reaching.is_none_or(|end| end > job.start) => job.done.clone(),
                    _ => return,
                }
            };
            let _ = done.wait().await;
        }
    }

    /// Starts the next zero-fill write if the current segment needs one (module doc).
    fn maybe_zero_fill(self: &Rc<Self>) {
        if !self.zero_fill {
            return;
        }
        let job = {
            let mut st = self.state.borrow_mut();
            let segment = st.tail.segment;
            // Not in a segment about to be sealed (the next batch starts a new one).
            let leaving = st.planned.segment != segment || st.pending.rolls || st.roll_next;
            if st.zeroing.is_some() || st.zero_off_segment == Some(segment) || leaving {
                return;
            }
            // Past the last batch taken in this segment (in flight or durable).
            let written = st.planned.end.max(st.tail.end);
            let mark = if st.zero_filling {
                ZERO_AHEAD_HIGH_BYTES
            } else {
                ZERO_AHEAD_LOW_BYTES
            };
            let start = st.zero_end.max(written);
            let end = (start + ZERO_CHUNK_BYTES as u64).min(self.segment_bytes_max);
            if st.zero_end >= written + mark || start >= end {
                st.zero_filling = false;
                return;
            }
            let Some(file) = st.file.clone() else {
                return;
            };
            st.zero_filling = true;
            let done = BatchDone::new();
            st.zeroing = Some(ZeroJob {
                start,
                done: done.clone(),
            });
            (file, segment, start, end, st.zero_epoch, done)
        };
        let log = self.clone();
        glommio::spawn_local(async move {
            let (file, segment, start, end, epoch, done) = job;
            let bytes = end - start;
            let result = match file.write_all_at(vec![0u8; bytes as usize], start).await {
                Ok(()) => file.sync_data().await,
                Err(e) => Err(e),
            };
            let ok = result.is_ok();
            {
                let mut st = log.state.borrow_mut();
                st.zeroing = None;
                if !ok {
                    st.zero_off_segment = Some(segment);
                    st.zero_filling = false;
                } else if st.zero_epoch == epoch && st.tail.segment == segment {
                    st.zero_end = st.zero_end.max(end);
                }
            }
            if ok {
                log.bump(|s| s.zero_filled_bytes += bytes);
            }
            done.complete(Ok(Placement {
                segment,
                base: start,
            }));
            if ok {
                log.maybe_zero_fill();
            }
        })
        .detach();
    }

    /// After the batch in flight failed: the pending batch was placed behind it.
    /// Returns the pending batch if it has to fail too.
    fn after_failure(&self) -> Option<Batch<T>> {
        let mut st = self.state.borrow_mut();
        st.planned = Cursor::from_tail(&st.tail);
        let poisoned = match self.positions {
            LogPositions::Exposed => {
                st.roll_next = true;
                if st.pending.buf.is_empty() {
                    None
                } else {
                    Some(std::mem::replace(&mut st.pending, Batch::new()))
                }
            }
            LogPositions::Private => {
                if !st.pending.buf.is_empty() {
                    st.pending.place = None;
                    let bytes = st.pending.buf.len() as u64;
                    self.place(&mut st, bytes);
                }
                None
            }
        };
        if let Some((_, w)) = st.room_queue.front() {
            w.wake_by_ref();
        }
        poisoned
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
        let segment_max = self.log.segment_bytes_max;
        let record_bytes = self.record_bytes;
        let queued = self.queued;
        let mut st = self.log.state.borrow_mut();
        let used = st.pending.buf.len();
        let fits = used == 0
            || (used + record_bytes <= limit
                && st
                    .pending
                    .place
                    .is_none_or(|p| p.base + (used + record_bytes) as u64 <= segment_max));
        let first = match (queued, st.room_queue.front()) {
            (_, None) => true,
            (Some(id), Some((head, _))) => id == *head,
            (None, Some(_)) => false,
        };
        if fits && first {
            if used == 0 {
                // The records this appender pushes next place the batch: for all of them.
                st.pending.reserved = st.pending.reserved.max(record_bytes as u64);
            }
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

/// How a batch ended, for [`run`]'s callback.
#[derive(Clone, Copy, Debug)]
pub(crate) enum BatchOutcome {
    /// Written and synced; the log's durable tail is now `tail` (just past the batch).
    Durable { bytes: u64, tail: LogTail },
    /// Failed (its waiters get the error): its records are not in the log.
    Failed,
}

/// The commit task of one log. `on_batch(ops, outcome)` runs for every batch taken, in
/// log order, before its waiters are woken: when it is durable (the store publishes its
/// records to the index there, so a `deliver` returns only after its messages are
/// visible), and when it failed (also for a pending batch failed with it), so a caller
/// that orders records across logs can skip the lost ones.
/// `window` > 0: once there is work, wait until the pending batch's first record is that
/// old (unless the batch fills up first: appenders then wait for room anyway) so more
/// appenders share the write and the sync.
pub(crate) async fn run<T: 'static>(
    log: Rc<LogWriter<T>>,
    window: std::time::Duration,
    mut on_batch: impl FnMut(Vec<T>, BatchOutcome),
) {
    log.maybe_zero_fill();
    loop {
        WorkReady { log: &log }.await;
        let wait = {
            let st = log.state.borrow();
            if !window.is_zero() && st.pending.buf.len() < log.batch_limit() {
                let gathered = st.pending.first_pushed.map(|t| t.elapsed());
                window.saturating_sub(gathered.unwrap_or_default())
            } else {
                std::time::Duration::ZERO
            }
        };
        if !wait.is_zero() {
            glommio::timer::sleep(wait).await;
        }
        let batch = {
            let mut st = log.state.borrow_mut();
            let b = std::mem::replace(&mut st.pending, Batch::new());
            st.in_flight = Some(b.done.clone());
            if let Some(p) = b.place {
                st.planned = Cursor {
                    segment: p.segment,
                    end: p.base + b.buf.len() as u64,
                    next_sequence: if b.rolls {
                        p.segment + 1
                    } else {
                        st.planned.next_sequence
                    },
                };
            }
            if b.rolls {
                st.roll_next = false;
            }
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
            place,
            rolls,
            ..
        } = batch;
        let len = buf.len() as u64;
        let records = ops.len() as u64;
        let result = match place {
            Some(p) => log.write_batch(p, rolls, buf).await,
            None => Err(StoreError::Encode {
                what: "batch",
                reason: "a non-empty batch without a placement".into(),
            }),
        };
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
                if let Some(m) = log.metrics.get() {
                    m.store_batch(log.kind.into(), records, len);
                }
                let tail = log.tail();
                on_batch(ops, BatchOutcome::Durable { bytes: len, tail });
                log.maybe_zero_fill();
            }
            Err(e) => {
                log.bump(|s| s.failed_batches += 1);
                on_batch(ops, BatchOutcome::Failed);
                if let Some(next) = log.after_failure() {
                    log.bump(|s| s.failed_batches += 1);
                    on_batch(next.ops, BatchOutcome::Failed);
                    next.done.complete(Err(duplicate_error(e)));
                }
            }
        }
        done.complete(result);
        log.state.borrow_mut().in_flight = None;
    }
}
