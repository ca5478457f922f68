//! The order in which durable records reach the index.
//!
//! A core appends index records to two logs: most go to its meta log, but a message
//! delivered to a mailbox the core owns has its `MessageAppend` in the *blob* log, right
//! after its blob (one write and one fdatasync for both; see `store` "Ownership and
//! ordering"). The two logs commit independently, so a batch of one can be durable
//! before an earlier batch of the other. The index must still see the records in the
//! order they were pushed, because that is the order their UIDs and modseqs were
//! allocated in: a client that saw UID 6 must never see UID 5 appear afterwards, nor a
//! message whose modseq is below a HIGHESTMODSEQ it was already told.
//!
//! So every index record gets a sequence number when it is pushed (synchronously, in
//! push order across both logs), and [`PublishOrder`] publishes them strictly in that
//! order: a durable batch's records wait (in a per-log queue) until every record numbered
//! before them is published, or was lost with a failed batch (its number is skipped).
//! An appender is told its record is stored only once it is *published*
//! ([`PublishOrder::published`]), not merely durable.
//!
//! Checkpoints need the same discipline: a checkpoint snapshots the index and, for each
//! log, the end of the last batch all of whose records are published
//! ([`PublishOrder::published_tail`]). Records after that position are scanned again at
//! recovery; those already in the snapshot are skipped by their modseq, which works
//! because what is published is always a prefix of what was pushed.
//!
//! Bounded: the queues hold records of finished batches of one log waiting for an earlier
//! record of the other log, whose batch is in flight. Every such record has an appender
//! still awaiting it (a session, a mesh request), so they are at most the records of the
//! operations in flight on the core, which its connection limits bound.
//!
//! Sans-IO: no runtime, no files; the commit tasks feed it (`engine`).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use super::commit::BatchOutcome;
use super::index::LogTail;
use super::record::MetaRecord;

/// An index record numbered in push order (the op type of both commit logs; `None` in
/// the blob log for a blob record).
#[derive(Debug)]
pub(crate) struct Sequenced {
    pub(crate) seq: u64,
    pub(crate) rec: MetaRecord,
}

/// One of a core's two logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Log {
    Blob = 0,
    Meta = 1,
}

/// Per log: records of finished batches waiting for their turn, and the batches'
/// ends.
#[derive(Default)]
struct LogQueue {
    /// (number, record; None if its batch failed), ascending.
    records: VecDeque<(u64, Option<MetaRecord>)>,
    /// Durable batches not yet fully published: the number of their last record (None:
    /// no index record in it) and the log's tail just past them.
    batch_ends: VecDeque<(Option<u64>, LogTail)>,
    /// The end of the last batch whose records are all published.
    published_tail: LogTail,
}

/// See the module doc. One per core (Cells: single-threaded).
pub(crate) struct PublishOrder {
    next_number: Cell<u64>,
    /// Every record numbered below this is published or was lost.
    next_publish: Cell<u64>,
    logs: [RefCell<LogQueue>; 2],
    waiters: RefCell<Vec<Waker>>,
}

impl PublishOrder {
    /// Both logs start fully published at the tails recovery left.
    pub(crate) fn new(blob_tail: LogTail, meta_tail: LogTail) -> PublishOrder {
        let queue = |tail| {
            RefCell::new(LogQueue {
                published_tail: tail,
                ..LogQueue::default()
            })
        };
        PublishOrder {
            next_number: Cell::new(0),
            next_publish: Cell::new(0),
            logs: [queue(blob_tail), queue(meta_tail)],
            waiters: RefCell::new(Vec::new()),
        }
    }

    /// The number of a record being pushed (call once it is encoded into its batch, with no
    /// await before the push completes: a number taken must reach a batch).
    pub(crate) fn number(&self) -> u64 {
        let seq = self.next_number.get();
        self.next_number.set(seq + 1);
        seq
    }

    /// The number the next record will get: everything below it has been pushed.
    pub(crate) fn pushed_below(&self) -> u64 {
        self.next_number.get()
    }

    /// A batch of `log` finished (called by its commit task, in log order). Hands every
    /// record that is now next in push order to `publish`, across both logs; returns how
    /// many records were published.
    pub(crate) fn batch_done(
        &self,
        log: Log,
        ops: Vec<Option<Sequenced>>,
        outcome: BatchOutcome,
        mut publish: impl FnMut(MetaRecord),
    ) -> usize {
        {
            let mut q = self.logs[log as usize].borrow_mut();
            let mut last = None;
            for s in ops.into_iter().flatten() {
                last = Some(s.seq);
                let rec = match outcome {
                    BatchOutcome::Durable { .. } => Some(s.rec),
                    BatchOutcome::Failed => None,
                };
                q.records.push_back((s.seq, rec));
            }
            if let BatchOutcome::Durable { tail, .. } = outcome {
                q.batch_ends.push_back((last, tail));
            }
        }
        let before = self.next_publish.get();
        let mut published = 0;
        loop {
            let next = self.next_publish.get();
            let Some(rec) = self
                .take(Log::Blob, next)
                .or_else(|| self.take(Log::Meta, next))
            else {
                break;
            };
            self.next_publish.set(next + 1);
            if let Some(rec) = rec {
                publish(rec);
                published += 1;
            }
        }
        let next = self.next_publish.get();
        for q in &self.logs {
            let mut q = q.borrow_mut();
            while let Some(&(last, tail)) = q.batch_ends.front() {
                if last.is_some_and(|s| s >= next) {
                    break;
                }
                q.published_tail = tail;
                q.batch_ends.pop_front();
            }
        }
        if next != before {
            for w in self.waiters.take() {
                w.wake();
            }
        }
        published
    }

    /// The record numbered `seq` if it heads `log`'s queue.
    fn take(&self, log: Log, seq: u64) -> Option<Option<MetaRecord>> {
        let mut q = self.logs[log as usize].borrow_mut();
        match q.records.front() {
            Some((s, _)) if *s == seq => q.records.pop_front().map(|(_, r)| r),
            _ => None,
        }
    }

    /// Where a checkpoint of the current index may say `log` is covered up to.
    pub(crate) fn published_tail(&self, log: Log) -> LogTail {
        self.logs[log as usize].borrow().published_tail
    }

    /// Resolves once every record numbered up to `seq` is published or lost.
    pub(crate) fn published(&self, seq: u64) -> Published<'_> {
        Published { order: self, seq }
    }

    /// Records of finished batches still waiting for an earlier one (tests, metrics).
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.logs.iter().map(|q| q.borrow().records.len()).sum()
    }
}

/// Future of [`PublishOrder::published`].
pub(crate) struct Published<'a> {
    order: &'a PublishOrder,
    seq: u64,
}

impl Future for Published<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.order.next_publish.get() > self.seq {
            return Poll::Ready(());
        }
        let mut waiters = self.order.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::{Expunge, MessageAppend};
    use crate::store::BlobRef;

    fn append(uid: u32) -> MetaRecord {
        MetaRecord::MessageAppend(MessageAppend {
            mailbox_id: 1,
            uid,
            modseq: u64::from(uid),
            blob: BlobRef {
                core: 0,
                segment: 1,
                offset: 40,
                len: 1,
            },
            internal_date: 0,
            flags: 0,
        })
    }

    fn seq(order: &PublishOrder, rec: MetaRecord) -> Sequenced {
        Sequenced {
            seq: order.number(),
            rec,
        }
    }

    fn tail(end: u64) -> LogTail {
        LogTail {
            segment: 1,
            end,
            ..LogTail::default()
        }
    }

    fn durable(end: u64) -> BatchOutcome {
        BatchOutcome::Durable {
            bytes: 0,
            tail: tail(end),
        }
    }

    fn uids(out: &[MetaRecord]) -> Vec<u32> {
        out.iter()
            .map(|r| match r {
                MetaRecord::MessageAppend(a) => a.uid,
                MetaRecord::Expunge(e) => 1000 + e.uid,
                _ => 0,
            })
            .collect()
    }

    #[test]
    fn a_later_batch_waits_for_an_earlier_one_of_the_other_log() {
        let order = PublishOrder::new(tail(40), tail(40));
        let a = seq(&order, append(1)); // meta
        let b = seq(&order, append(2)); // blob, with its blob record
        let mut out = Vec::new();
        let n = order.batch_done(Log::Blob, vec![None, Some(b)], durable(500), |r| {
            out.push(r)
        });
        assert_eq!(n, 0, "UID 2 may not appear before UID 1");
        assert_eq!(order.waiting(), 1);
        assert_eq!(
            order.published_tail(Log::Blob),
            tail(40),
            "blob batch not covered"
        );
        let n = order.batch_done(Log::Meta, vec![Some(a)], durable(100), |r| out.push(r));
        assert_eq!(n, 2);
        assert_eq!(uids(&out), vec![1, 2]);
        assert_eq!(order.published_tail(Log::Blob), tail(500));
        assert_eq!(order.published_tail(Log::Meta), tail(100));
        assert_eq!(order.waiting(), 0);
    }

    #[test]
    fn failed_records_are_skipped_and_their_batch_covers_nothing() {
        let order = PublishOrder::new(tail(40), tail(40));
        let a = seq(&order, append(1)); // blob, fails
        let b = seq(&order, append(2)); // meta
        let c = seq(
            &order,
            MetaRecord::Expunge(Expunge {
                mailbox_id: 1,
                uid: 2,
                modseq: 3,
            }),
        );
        let mut out = Vec::new();
        order.batch_done(Log::Meta, vec![Some(b), Some(c)], durable(200), |r| {
            out.push(r)
        });
        assert!(out.is_empty());
        order.batch_done(Log::Blob, vec![None, Some(a)], BatchOutcome::Failed, |r| {
            out.push(r)
        });
        assert_eq!(uids(&out), vec![2, 1002], "UID 1 lost, the rest in order");
        assert_eq!(order.published_tail(Log::Blob), tail(40));
        assert_eq!(order.published_tail(Log::Meta), tail(200));
    }

    #[test]
    fn a_batch_without_records_is_covered_in_log_order() {
        let order = PublishOrder::new(tail(40), tail(40));
        let a = seq(&order, append(1)); // meta, late
        let b = seq(&order, append(2)); // blob batch 1
        let mut out = Vec::new();
        order.batch_done(Log::Blob, vec![None, Some(b)], durable(300), |r| {
            out.push(r)
        });
        // Blob batch 2 holds only a blob (a cross-core delivery's): it is published, but
        // the position may not pass batch 1, whose record still waits.
        order.batch_done(Log::Blob, vec![None], durable(400), |r| out.push(r));
        assert_eq!(order.published_tail(Log::Blob), tail(40));
        order.batch_done(Log::Meta, vec![Some(a)], durable(90), |r| out.push(r));
        assert_eq!(order.published_tail(Log::Blob), tail(400));
        assert_eq!(uids(&out), vec![1, 2]);
    }

    #[test]
    fn published_resolves_only_in_order() {
        let order = PublishOrder::new(tail(40), tail(40));
        let a = seq(&order, append(1));
        let b = seq(&order, append(2));
        let waker = futures_lite::future::block_on(futures_lite::future::poll_fn(|cx| {
            Poll::Ready(cx.waker().clone())
        }));
        let mut cx = Context::from_waker(&waker);
        let mut wait_b = Box::pin(order.published(1));
        assert!(wait_b.as_mut().poll(&mut cx).is_pending());
        order.batch_done(Log::Blob, vec![Some(b)], durable(100), |_| {});
        assert!(wait_b.as_mut().poll(&mut cx).is_pending());
        order.batch_done(Log::Meta, vec![Some(a)], durable(100), |_| {});
        assert!(wait_b.as_mut().poll(&mut cx).is_ready());
        assert_eq!(order.pushed_below(), 2);
    }
}
