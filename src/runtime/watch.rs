//! Mailbox change signals on one core: IMAP sessions (IDLE, NOOP) learn that a mailbox they
//! show changed without polling the index.
//!
//! The store calls [`MailboxWatch::notify`] (through its change hook) after every durable meta
//! batch, with the ids of the mailboxes the batch changed. A session that selected a mailbox
//! holds a [`Signal`] for its id; `notify` sets it and wakes the task waiting on it. Every
//! session of a user lives on the user's owner core (see `handoff`), and so does the store
//! that changes the user's mailboxes, so this is all local: no atomics, no cross-core wake-up.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

/// One subscriber's flag + waker.
#[derive(Default)]
pub struct Signal {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Signal {
    /// True (once) if a change happened since the last call.
    pub fn take(&self) -> bool {
        self.fired.replace(false)
    }

    fn fire(&self) {
        self.fired.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Resolves when the signal fires (at once if it already did); clears it.
    pub fn changed(&self) -> Changed<'_> {
        Changed { signal: self }
    }
}

/// Future of [`Signal::changed`].
pub struct Changed<'a> {
    signal: &'a Signal,
}

impl Future for Changed<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.take() {
            return Poll::Ready(());
        }
        *self.signal.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The subscribers of every mailbox on this core.
#[derive(Default)]
pub struct MailboxWatch {
    subscribers: RefCell<HashMap<u64, Vec<Weak<Signal>>>>,
}

impl MailboxWatch {
    /// A signal for changes of mailbox `id`; dropping it unsubscribes (lazily).
    pub fn subscribe(&self, id: u64) -> Rc<Signal> {
        let s = Rc::new(Signal::default());
        let mut subs = self.subscribers.borrow_mut();
        let list = subs.entry(id).or_default();
        list.retain(|w| w.strong_count() > 0);
        list.push(Rc::downgrade(&s));
        s
    }

    /// Fires every live signal of the given mailboxes.
    pub fn notify(&self, ids: &[u64]) {
        let mut subs = self.subscribers.borrow_mut();
        for id in ids {
            let Some(list) = subs.get_mut(id) else {
                continue;
            };
            list.retain(|w| match w.upgrade() {
                Some(s) => {
                    s.fire();
                    true
                }
                None => false,
            });
            if list.is_empty() {
                subs.remove(id);
            }
        }
    }

    /// Mailboxes with at least one subscriber entry (tests, metrics).
    pub fn watched(&self) -> usize {
        self.subscribers.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_fires_only_subscribers_of_that_mailbox() {
        let w = MailboxWatch::default();
        let a = w.subscribe(1);
        let b = w.subscribe(2);
        w.notify(&[1]);
        assert!(a.take());
        assert!(!a.take(), "take clears");
        assert!(!b.take());
    }

    #[test]
    fn dropped_signals_are_forgotten() {
        let w = MailboxWatch::default();
        let a = w.subscribe(7);
        drop(a);
        w.notify(&[7]);
        assert_eq!(w.watched(), 0);
    }

    #[test]
    fn changed_wakes_a_waiting_task() {
        let w = Rc::new(MailboxWatch::default());
        let s = w.subscribe(3);
        let woke = Rc::new(Cell::new(false));
        let ex = glommio::LocalExecutorBuilder::default()
            .make()
            .expect("executor");
        ex.run(async {
            let w2 = w.clone();
            let t = glommio::spawn_local(async move {
                glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
                w2.notify(&[3]);
            });
            s.changed().await;
            woke.set(true);
            t.await;
        });
        assert!(woke.get());
    }
}
