//! What one core owns: its store, its end of the mesh, its copy of the user table, its
//! connection count, and the shutdown signal its sessions listen to.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use glommio::sync::Semaphore;

use crate::accounts::Accounts;
use crate::config::Config;
use crate::net::tls::TlsAcceptor;
use crate::net::Protocol;
use crate::runtime::auth::{FailureTable, LoginCache};
use crate::runtime::directory::Destination;
pub use crate::runtime::directory::LocalDirectory;
use crate::runtime::mesh::{DeliverFailure, Mesh};
use crate::runtime::placement::owner_core;
use crate::runtime::watch::MailboxWatch;
use crate::smtp::command::{xtext_encode, Notify, Ret};
use crate::smtp::{DeliveryResult, Limits, Transaction};
use crate::store::queue::{
    clip, NOTIFY_DELAY, NOTIFY_FAILURE, NOTIFY_NEVER, NOTIFY_SUCCESS, ORCPT_BYTES_MAX,
    QUEUE_RECIPIENTS_MAX, RET_FULL, RET_HDRS, SMTP_ID_BYTES_MAX,
};
use crate::store::{BlobRef, Delivery, DoneReason, Filing, NewQueueEntry, QueueRecipient, Store};
use crate::time::unix_now;

/// The mailbox every SMTP delivery lands in.
pub const INBOX: &str = "INBOX";

/// POP3's exclusive hold on a user's maildrop on its owner core; released on drop.
pub struct MaildropLock {
    core: Rc<Core>,
    user: String,
}

impl Drop for MaildropLock {
    fn drop(&mut self) {
        self.core.maildrops.borrow_mut().remove(&self.user);
    }
}

/// Per-core state shared by every task on the core (never crosses threads).
pub struct Core {
    pub index: usize,
    pub cores: usize,
    pub config: Arc<Config>,
    pub smtp_limits: Arc<Limits>,
    /// Limits of the submission listeners (AUTH required before MAIL).
    pub submission_limits: Arc<Limits>,
    /// This core's TLS acceptor (None only in unit tests: serve always has certificates).
    pub tls: Option<TlsAcceptor>,
    pub store: Rc<Store>,
    pub mesh: Rc<Mesh>,
    pub directory: LocalDirectory,
    /// Closed (never acquired) when the process shuts down: a broadcast to every waiter.
    pub shutdown: Rc<Semaphore>,
    /// Signalled when the outbound queue of this core grows or an operator asks for a flush:
    /// wakes the sender (`outbound::sender::run`). Holds at most one permit.
    pub outbound_wake: Rc<Semaphore>,
    shutting_down: Cell<bool>,
    next_session: Cell<u64>,
    pub(crate) logins: LoginCache,
    /// Recent failed logins per client IP and per account (progressive delays).
    pub(crate) login_failures: RefCell<FailureTable>,
    /// Users whose maildrop a POP3 session holds (on their owner core).
    maildrops: RefCell<HashSet<String>>,
    /// Change signals of the mailboxes this core owns (fed by the store's change hook).
    pub watch: Rc<MailboxWatch>,
    /// Per mailbox, the highest UID some IMAP session has already been told about: newer
    /// messages are \Recent for the first session that sees them (RFC 3501 §2.3.2). Kept in
    /// memory only: after a restart every message is recent again for the first session.
    recent_seen: RefCell<HashMap<u64, u32>>,
    /// This core's Prometheus counters (written by this core only; `crate::metrics`).
    pub metrics: Arc<crate::metrics::CoreMetrics>,
}

impl Core {
    pub fn new(
        index: usize,
        cores: usize,
        config: Arc<Config>,
        store: Rc<Store>,
        mesh: Rc<Mesh>,
        accounts: Accounts,
    ) -> Core {
        let limits = |submission: bool, allow_plaintext_auth: bool| {
            let mut l = Limits::new(
                &config.server.hostname,
                config.smtp.max_message_bytes,
                config.smtp.max_recipients,
            );
            l.errors_max = config.smtp.errors_max;
            l.submission = submission;
            l.allow_plaintext_auth = allow_plaintext_auth;
            Arc::new(l)
        };
        let smtp_limits = limits(false, config.smtp.allow_plaintext_auth);
        let submission_limits = limits(true, config.submission.allow_plaintext_auth);
        let directory = LocalDirectory::new(&config, accounts);
        Core {
            index,
            cores,
            config,
            smtp_limits,
            submission_limits,
            tls: None,
            store,
            mesh,
            directory,
            shutdown: Rc::new(Semaphore::new(0)),
            outbound_wake: Rc::new(Semaphore::new(0)),
            shutting_down: Cell::new(false),
            next_session: Cell::new(0),
            logins: LoginCache::default(),
            login_failures: RefCell::new(FailureTable::new()),
            maildrops: RefCell::new(HashSet::new()),
            watch: Rc::new(MailboxWatch::default()),
            recent_seen: RefCell::new(HashMap::new()),
            metrics: Arc::default(),
        }
    }

    /// Counts into `metrics` (this core's entry of the registry), the store included.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::CoreMetrics>) -> Core {
        self.store.set_metrics(metrics.clone());
        self.metrics = metrics;
        self
    }

    /// Wakes the outbound sender (one pending wake-up is enough).
    pub fn wake_outbound(&self) {
        if self.outbound_wake.available() == 0 {
            self.outbound_wake.signal(1);
        }
    }

    /// Serves TLS with `tls`: STARTTLS is offered and the implicit-TLS listeners work.
    pub fn with_tls(mut self, tls: TlsAcceptor) -> Core {
        for limits in [&mut self.smtp_limits, &mut self.submission_limits] {
            Arc::make_mut(limits).tls_available = true;
        }
        self.tls = Some(tls);
        self
    }

    /// The first UID of mailbox `id` no session has claimed yet (EXAMINE and STATUS report
    /// such messages as recent without claiming them).
    pub fn first_unclaimed(&self, id: u64) -> u32 {
        self.recent_seen
            .borrow()
            .get(&id)
            .map(|last| last.saturating_add(1))
            .unwrap_or(1)
    }

    /// Claims the messages of mailbox `id` above the last claimed UID, up to `uid_max`:
    /// returns the lowest UID that is recent for the caller (`uid_max + 1` if none).
    pub fn claim_recent(&self, id: u64, uid_max: u32) -> u32 {
        let mut seen = self.recent_seen.borrow_mut();
        let last = seen.entry(id).or_insert(0);
        if uid_max > *last {
            let first = last.saturating_add(1);
            *last = uid_max;
            first
        } else {
            uid_max.saturating_add(1)
        }
    }

    /// Open connections of protocol `p` on this core (the `connections_open` gauge, kept
    /// by `net::ConnectionGuard`).
    pub fn protocol_connections(&self, p: Protocol) -> usize {
        usize::try_from(self.metrics.connections_open[p.index()].get()).unwrap_or(usize::MAX)
    }

    /// Every open connection on this core, whatever its protocol.
    pub fn connections(&self) -> usize {
        self.metrics
            .connections_open
            .iter()
            .map(|c| usize::try_from(c.get()).unwrap_or(usize::MAX))
            .fold(0, usize::saturating_add)
    }

    /// Takes `user`'s POP3 maildrop lock (None: another session holds it). Call on the
    /// user's owner core.
    pub fn lock_maildrop(self: &Rc<Self>, user: &str) -> Option<MaildropLock> {
        if !self.maildrops.borrow_mut().insert(user.to_string()) {
            return None;
        }
        Some(MaildropLock {
            core: self.clone(),
            user: user.to_string(),
        })
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    /// Wakes every task waiting on `shutdown` (listeners, idle sessions).
    pub fn begin_shutdown(&self) {
        self.shutting_down.set(true);
        self.shutdown.close();
    }

    /// A session id unique in the process: a per-core counter with the core index in the
    /// low byte, so ids (and the queue ids made from them) stay short.
    pub fn next_session_id(&self) -> u64 {
        let n = self.next_session.get() + 1;
        self.next_session.set(n);
        (n << 8) | (self.index as u64 & 0xff)
    }

    /// Stores a message once, files it into the INBOX of every local destination on the
    /// owning core, and puts the remote destinations into this core's outbound queue (one
    /// entry, or one per [`QUEUE_RECIPIENTS_MAX`] recipients). Returns only when the blob,
    /// every index record and every queue entry are durable.
    ///
    /// Each recipient is first expanded through the directory (aliases, catch-all). A
    /// recipient that does not expand (alias loop, unknown target...) is logged and skipped;
    /// the message is refused (temporarily) only if no destination remains. (Until issue 5
    /// brings bounces, nobody else is told.)
    ///
    /// One flush per message where possible: the blob goes into the blob log of the core
    /// that owns the local recipients, with their `MessageAppend` records in the same batch
    /// ([`Store::store_message`]). When all local recipients belong to one other core and
    /// nobody is remote, the whole message moves there (work moves to the data: that
    /// core's single log write covers everything). Otherwise the blob is stored here (with
    /// this core's recipients), and the other cores' index records and the queue entries
    /// are committed *while* the blob's batch is written: their fdatasyncs overlap instead
    /// of following each other. `Stored` only if all of them succeed. If the blob fails,
    /// queue entries already durable are marked done again (best effort); other cores'
    /// records for it point at nothing (see `store` "Ownership and ordering" for why that
    /// is harmless).
    pub async fn deliver(&self, txn: &Transaction) -> DeliveryResult {
        let plan = self.plan(txn);
        self.deliver_planned(txn, plan).await
    }

    /// Expands `txn`'s recipients through the directory (aliases, catch-all; a recipient
    /// that does not expand is logged and skipped) and groups the local ones by owning core.
    pub fn plan(&self, txn: &Transaction) -> DeliveryPlan {
        let mut dests = Vec::new();
        // The RCPT (index into `txn.recipients`) each destination came from, for its DSN
        // parameters.
        let mut origins = Vec::new();
        for (index, rcpt) in txn.recipients.iter().enumerate() {
            let expanded = self.directory.expand(rcpt, &mut dests);
            origins.resize(dests.len(), index);
            if let Err(e) = expanded {
                eprintln!(
                    "ringmail: core {}: {}: recipient <{rcpt}>: {e}{}",
                    self.index,
                    txn.queue_id,
                    if e.is_fatal() { " (not delivered)" } else { "" }
                );
            }
        }
        let (locals, remotes) = split_destinations(dests, &origins);
        let mut groups: Vec<Vec<Filing>> = (0..self.cores).map(|_| Vec::new()).collect();
        for user in locals {
            groups[owner_core(&user, self.cores)].push(Filing {
                user,
                mailbox: INBOX.to_string(),
            });
        }
        DeliveryPlan { groups, remotes }
    }

    /// [`Core::deliver`] with the recipients already expanded (`plan`, made by
    /// [`Core::plan`] on this or another core: every core has the same directory).
    pub async fn deliver_planned(&self, txn: &Transaction, plan: DeliveryPlan) -> DeliveryResult {
        let DeliveryPlan {
            mut groups,
            remotes,
        } = plan;
        if groups.iter().all(Vec::is_empty) && remotes.is_empty() {
            return DeliveryResult::TempFail;
        }
        let internal_date = unix_now();
        if let Some(owner) = single_owner(&groups, &remotes) {
            if owner != self.index {
                let filings = std::mem::take(&mut groups[owner]);
                self.metrics.mesh_delivery_sent();
                let result = self
                    .mesh
                    .store_remote(owner, txn.message.clone(), filings, internal_date)
                    .await;
                return match result {
                    Ok(_) => DeliveryResult::Stored,
                    Err(DeliverFailure::DiskFull) => DeliveryResult::DiskFull,
                    Err(f) => {
                        eprintln!(
                            "ringmail: core {}: delivery on core {owner} failed: {f:?}",
                            self.index
                        );
                        DeliveryResult::TempFail
                    }
                };
            }
        }
        let own = std::mem::take(&mut groups[self.index]);
        let (blob, _, stored) = match self
            .store
            .store_message(&txn.message, &own, internal_date)
            .await
        {
            Ok(staged) => staged,
            Err(e) => return storage_failure(&e),
        };
        // The other cores' deliveries, all concurrently with the blob's commit.
        let mut remote = Vec::new();
        for (core, group) in groups.into_iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let deliveries = group
                .into_iter()
                .map(|f| Delivery {
                    user: f.user,
                    mailbox: f.mailbox,
                    blob,
                    internal_date,
                })
                .collect();
            let mesh = &self.mesh;
            self.metrics.mesh_delivery_sent();
            remote.push(async move { mesh.deliver_remote(core, deliveries).await });
        }
        let entries = queue_entries(txn, blob, internal_date, remotes);
        let queued = std::cell::RefCell::new(Vec::with_capacity(entries.len()));
        let queue_commit = async {
            for entry in entries {
                let id = self.store.enqueue(entry).await?;
                queued.borrow_mut().push(id);
                self.wake_outbound();
            }
            Ok::<(), crate::store::StoreError>(())
        };
        // Polled here rather than spawned: a spawned task would send its mesh request
        // only after every task already queued on this core has run.
        let ((stored_result, queue_result), remote_results) = futures_lite::future::zip(
            futures_lite::future::zip(stored.wait(), queue_commit),
            join_all(remote),
        )
        .await;
        let mut result = DeliveryResult::Stored;
        if let Err(e) = queue_result {
            result = storage_failure(&e);
        }
        for remote_result in remote_results {
            match remote_result {
                Ok(_) => {}
                Err(DeliverFailure::DiskFull) => result = DeliveryResult::DiskFull,
                Err(f) => {
                    eprintln!(
                        "ringmail: core {}: remote delivery failed: {f:?}",
                        self.index
                    );
                    if result == DeliveryResult::Stored {
                        result = DeliveryResult::TempFail;
                    }
                }
            }
        }
        if let Err(e) = stored_result {
            // This core's records were in the failed batch with the blob: nothing of them
            // is in the log. The sender must not try to send a message that is not there.
            for id in queued.take() {
                let _ = self.store.queue_done(id, DoneReason::Lost).await;
            }
            return storage_failure(&e);
        }
        result
    }
}

impl Core {
    /// Whether an SMTP session should move, with its transaction (planned as `plan`), to
    /// the core that owns every local recipient of it (see `smtp::server`): returns one of
    /// those recipients when that core is another one and nobody is remote (a remote
    /// recipient is queued where the session is; recipients on several cores are served
    /// from here). Never while shutting down.
    pub fn moves_to_owner(&self, plan: &DeliveryPlan) -> Option<String> {
        if self.is_shutting_down() {
            return None;
        }
        let owner = single_owner(&plan.groups, &plan.remotes)?;
        if owner == self.index {
            return None;
        }
        plan.groups[owner].first().map(|f| f.user.clone())
    }
}

/// Where a transaction's message goes ([`Core::plan`]): the local recipients grouped by
/// owning core (index = core), and the remote addresses with the index of the RCPT each
/// came from. Send: it travels with a session that moves to another core.
#[derive(Debug)]
pub struct DeliveryPlan {
    groups: Vec<Vec<Filing>>,
    remotes: Vec<(String, usize)>,
}

/// The one core that owns every recipient, when nobody is remote.
fn single_owner(groups: &[Vec<Filing>], remotes: &[(String, usize)]) -> Option<usize> {
    if !remotes.is_empty() {
        return None;
    }
    let mut owners = (0..groups.len()).filter(|&c| !groups[c].is_empty());
    let first = owners.next()?;
    owners.next().is_none().then_some(first)
}

/// Local users and remote addresses of an expansion, each once, in first-seen order; a
/// remote address with the index of the RCPT it came from (`origins[i]` for `dests[i]`).
fn split_destinations(
    dests: Vec<Destination>,
    origins: &[usize],
) -> (Vec<String>, Vec<(String, usize)>) {
    let mut seen = HashSet::with_capacity(dests.len());
    let mut locals = Vec::new();
    let mut remotes = Vec::new();
    for (i, d) in dests.into_iter().enumerate() {
        if !seen.insert(d.clone()) {
            continue;
        }
        match d {
            Destination::Local(user) => locals.push(user),
            Destination::Remote(address) => {
                remotes.push((address, origins.get(i).copied().unwrap_or(usize::MAX)))
            }
        }
    }
    (locals, remotes)
}

// The NOTIFY bits of the SMTP parser are those the queue stores.
const _: () = assert!(
    Notify::NEVER == NOTIFY_NEVER
        && Notify::SUCCESS == NOTIFY_SUCCESS
        && Notify::FAILURE == NOTIFY_FAILURE
        && Notify::DELAY == NOTIFY_DELAY
);

/// A remote destination with the RFC 3461 NOTIFY and ORCPT of the RCPT it came from
/// (`origin`, an index into `txn.recipients`). Without an ORCPT from the client, one naming
/// that RCPT's address is added when an alias changed the address (RFC 3461 §4.2 lets a
/// relay add it, "the recipient address from the RCPT command"), so a DSN tells the sender
/// the address they used; not for a non-ASCII address (that would need RFC 6533's utf-8
/// type) or one whose xtext exceeds [`ORCPT_BYTES_MAX`].
fn queue_recipient(txn: &Transaction, address: String, origin: usize) -> QueueRecipient {
    let dsn = txn.recipient_dsn.get(origin);
    let orcpt = dsn.and_then(|d| d.orcpt.clone()).or_else(|| {
        let original = txn
            .recipients
            .get(origin)
            .filter(|o| **o != address && o.is_ascii())?;
        let mut orcpt = String::from("rfc822;");
        xtext_encode(original.as_bytes(), &mut orcpt);
        (orcpt.len() <= ORCPT_BYTES_MAX).then_some(orcpt)
    });
    QueueRecipient {
        address,
        notify: dsn.and_then(|d| d.notify).map(Notify::bits),
        orcpt,
    }
}

/// The outbound queue entries for a transaction's remote addresses (none if there are
/// none; one per [`QUEUE_RECIPIENTS_MAX`] addresses).
fn queue_entries(
    txn: &Transaction,
    blob: BlobRef,
    arrival: i64,
    remotes: Vec<(String, usize)>,
) -> Vec<NewQueueEntry> {
    remotes
        .chunks(QUEUE_RECIPIENTS_MAX)
        .map(|chunk| NewQueueEntry {
            blob,
            smtp_id: clip(&txn.queue_id, SMTP_ID_BYTES_MAX).to_owned(),
            sender: txn.mail_from.clone(),
            recipients: chunk
                .iter()
                .map(|(address, origin)| queue_recipient(txn, address.clone(), *origin))
                .collect(),
            smtputf8: txn.smtputf8,
            body_8bitmime: txn.body_8bitmime,
            arrival,
            authenticated: txn.authenticated.clone(),
            ret: txn.ret.map(|ret| match ret {
                Ret::Full => RET_FULL,
                Ret::Hdrs => RET_HDRS,
            }),
            envid: txn.envid.clone(),
        })
        .collect()
}

/// Polls every future until all are done; their outputs in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    futures_lite::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

fn storage_failure(e: &crate::store::StoreError) -> DeliveryResult {
    if e.is_disk_full() {
        DeliveryResult::DiskFull
    } else {
        eprintln!("ringmail: storage error: {e}");
        DeliveryResult::TempFail
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::Secret;
    use crate::aliases::Aliases;
    use crate::store::commit::{Fault, FaultStage};
    use crate::store::engine::LogKind;
    use crate::store::{recover, RecipientState, StoreConfig};

    const ALICE: &str = "alice@example.test";
    const BOB: &str = "bob@example.test";

    fn txn(body: &str) -> Transaction {
        Transaction {
            queue_id: "1".into(),
            mail_from: "carol@remote.test".into(),
            recipients: vec![ALICE.into()],
            smtputf8: false,
            body_8bitmime: false,
            authenticated: None,
            tls: false,
            message: format!("Subject: t\r\n\r\n{body}\r\n").into_bytes(),
            ..Default::default()
        }
    }

    /// A submission from alice to `recipients`.
    fn submitted(body: &str, recipients: &[&str]) -> Transaction {
        Transaction {
            queue_id: "5A".into(),
            mail_from: ALICE.into(),
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
            smtputf8: true,
            body_8bitmime: true,
            authenticated: Some(ALICE.into()),
            tls: true,
            ..txn(body)
        }
    }

    /// Users alice and bob in the local domain example.test.
    fn users(data: &std::path::Path) {
        for u in [ALICE, BOB] {
            Accounts::add(data, u, &Secret::new("pw".to_string())).unwrap();
        }
    }

    fn run<T: Send + 'static>(
        data: std::path::PathBuf,
        f: impl FnOnce(Rc<Core>) -> std::pin::Pin<Box<dyn Future<Output = T>>> + Send + 'static,
    ) -> T {
        glommio::LocalExecutorBuilder::default()
            .io_memory(512 << 10)
            .spawn(move || async move {
                let toml = format!(
                    "[server]\ndata_dir = {:?}\n[domains]\nlocal = [\"example.test\"]\n",
                    data.to_str().unwrap()
                );
                let config = Config::parse(&toml, std::path::Path::new("t.toml")).unwrap();
                let idx = recover(&data, 1, &|_| 0).unwrap().cores.remove(0);
                let store = Store::open(StoreConfig::new(&data, 0), idx).await.unwrap();
                let accounts = Accounts::load(&data).unwrap();
                let core = Rc::new(Core::new(
                    0,
                    1,
                    Arc::new(config),
                    store,
                    Mesh::single(),
                    accounts,
                ));
                f(core).await
            })
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn deliver_stores_blob_and_index_record() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        users(&data);
        run(data.clone(), |core| {
            Box::pin(async move {
                assert_eq!(core.deliver(&txn("one")).await, DeliveryResult::Stored);
                let msgs = core.store.mailbox_uids(ALICE, INBOX);
                assert_eq!(msgs.len(), 1);
                let body = core.store.read_blob(msgs[0].1).unwrap();
                assert_eq!(body, txn("one").message);
            })
        });
        let rec = recover(&data, 1, &|_| 0).unwrap();
        assert_eq!(rec.report.messages, 1);
    }

    #[test]
    fn a_failed_blob_fails_the_delivery_and_its_index_record_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        users(&data);
        run(data.clone(), |core| {
            Box::pin(async move {
                assert_eq!(core.deliver(&txn("first")).await, DeliveryResult::Stored);
                core.store.inject_fault(
                    LogKind::Blob,
                    Some(Fault {
                        stage: FaultStage::Sync,
                        errno: libc::ENOSPC,
                        batches: 1,
                    }),
                );
                // The index record is in the blob's batch, which fails: 452, and UID 2
                // never appears (nor after recovery).
                assert_eq!(core.deliver(&txn("doomed")).await, DeliveryResult::DiskFull);
                let uids: Vec<u32> = core
                    .store
                    .mailbox_uids(ALICE, INBOX)
                    .iter()
                    .map(|m| m.0)
                    .collect();
                assert_eq!(uids, vec![1]);
                assert_eq!(core.deliver(&txn("after")).await, DeliveryResult::Stored);
                let msgs = core.store.mailbox_uids(ALICE, INBOX);
                assert_eq!(msgs.iter().map(|m| m.0).collect::<Vec<_>>(), vec![1, 3]);
                assert_eq!(
                    core.store.read_blob(msgs[1].1).unwrap(),
                    txn("after").message
                );
            })
        });
        let rec = recover(&data, 1, &|_| 0).unwrap();
        let mb = rec.cores[0].mailbox(ALICE, INBOX).unwrap();
        assert_eq!(
            mb.messages().iter().map(|m| m.uid).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(rec.report.dropped_refs, 0);
    }

    #[test]
    fn remote_recipients_are_queued_and_local_ones_filed_and_both_survive_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        users(&data);
        let t = submitted(
            "mixed",
            &[
                BOB,
                "dave@remote.test",
                "erin@other.test",
                "dave@remote.test",
            ],
        );
        let msg = t.message.clone();
        let live = run(data.clone(), move |core| {
            Box::pin(async move {
                assert_eq!(core.deliver(&t).await, DeliveryResult::Stored);
                assert_eq!(core.store.mailbox_uids(BOB, INBOX).len(), 1);
                assert!(core.store.mailbox_uids(ALICE, INBOX).is_empty());
                let q = core.store.queue_entries();
                assert_eq!(q.len(), 1, "one entry for every remote recipient");
                let e = &q[0];
                let rcpts: Vec<&str> = e.recipients.iter().map(|r| r.address.as_str()).collect();
                assert_eq!(rcpts, vec!["dave@remote.test", "erin@other.test"]);
                assert!(e
                    .recipients
                    .iter()
                    .all(|r| r.state == RecipientState::Pending && r.attempts == 0));
                assert_eq!(e.sender, ALICE);
                assert_eq!(e.authenticated.as_deref(), Some(ALICE));
                assert_eq!(e.smtp_id, "5A");
                assert!(e.smtputf8 && e.body_8bitmime);
                // The queued blob is the INBOX copy: stored once.
                assert_eq!(core.store.mailbox_uids(BOB, INBOX)[0].1, e.blob);
                assert_eq!(core.store.read_blob(e.blob).unwrap(), msg);
                q
            })
        });
        let rec = recover(&data, 1, &|_| 0).unwrap();
        let q: Vec<_> = rec.cores[0].queue().entries().cloned().collect();
        assert_eq!(q, live);
        assert_eq!(rec.report.messages, 1);
    }

    #[test]
    fn aliases_expand_to_local_and_remote_destinations() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        users(&data);
        let domains = vec!["example.test".to_string()];
        Aliases::add(
            &data,
            "team@example.test",
            &[ALICE, BOB, "ext@remote.test"],
            &domains,
        )
        .unwrap();
        run(data.clone(), |core| {
            Box::pin(async move {
                // alice directly and through the alias: one copy.
                let t = txn("team");
                let t = Transaction {
                    recipients: vec![ALICE.into(), "team@example.test".into()],
                    ..t
                };
                assert_eq!(core.deliver(&t).await, DeliveryResult::Stored);
                assert_eq!(core.store.mailbox_uids(ALICE, INBOX).len(), 1);
                assert_eq!(core.store.mailbox_uids(BOB, INBOX).len(), 1);
                let q = core.store.queue_entries();
                assert_eq!(q.len(), 1);
                assert_eq!(q[0].recipients[0].address, "ext@remote.test");
                assert_eq!(q[0].sender, "carol@remote.test");
                assert_eq!(q[0].authenticated, None);
            })
        });
    }

    #[test]
    fn dsn_parameters_follow_each_remote_recipient_into_the_queue() {
        use crate::smtp::session::RecipientDsn;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        users(&data);
        let domains = vec!["example.test".to_string()];
        Aliases::add(
            &data,
            "team@example.test",
            &[BOB, "ext@remote.test"],
            &domains,
        )
        .unwrap();
        run(data.clone(), |core| {
            Box::pin(async move {
                let notify = |bits| Notify::from_bits(bits);
                let t = Transaction {
                    recipients: vec![
                        "team@example.test".into(),
                        "direct@remote.test".into(),
                        "noted@remote.test".into(),
                    ],
                    recipient_dsn: vec![
                        RecipientDsn {
                            notify: notify(Notify::FAILURE | Notify::DELAY),
                            orcpt: None,
                        },
                        RecipientDsn {
                            notify: notify(Notify::SUCCESS),
                            orcpt: None,
                        },
                        RecipientDsn {
                            notify: notify(Notify::NEVER),
                            orcpt: Some("rfc822;Noted+40Remote.test".into()),
                        },
                    ],
                    ret: Some(Ret::Hdrs),
                    envid: Some("E+2B1".into()),
                    ..txn("dsn")
                };
                assert_eq!(core.deliver(&t).await, DeliveryResult::Stored);
                let q = core.store.queue_entries();
                assert_eq!(q.len(), 1);
                assert_eq!(
                    (q[0].ret, q[0].envid.as_deref()),
                    (Some(RET_HDRS), Some("E+2B1"))
                );
                let got: Vec<_> = q[0]
                    .recipients
                    .iter()
                    .map(|r| (r.address.as_str(), r.notify, r.orcpt.as_deref()))
                    .collect();
                assert_eq!(
                    got,
                    [
                        // Through the alias: ORCPT added, naming the RCPT address.
                        (
                            "ext@remote.test",
                            Some(NOTIFY_FAILURE | NOTIFY_DELAY),
                            Some("rfc822;team@example.test")
                        ),
                        ("direct@remote.test", Some(NOTIFY_SUCCESS), None),
                        (
                            "noted@remote.test",
                            Some(NOTIFY_NEVER),
                            Some("rfc822;Noted+40Remote.test")
                        ),
                    ]
                );
            })
        });
    }

    #[test]
    fn a_transaction_with_no_deliverable_destination_is_refused_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        users(&data);
        run(data.clone(), |core| {
            Box::pin(async move {
                let t = Transaction {
                    recipients: vec!["nobody@example.test".into()],
                    ..txn("x")
                };
                assert_eq!(core.deliver(&t).await, DeliveryResult::TempFail);
                // One bad recipient among good ones: the others still get it.
                let t = Transaction {
                    recipients: vec!["nobody@example.test".into(), BOB.into()],
                    ..txn("y")
                };
                assert_eq!(core.deliver(&t).await, DeliveryResult::Stored);
                assert_eq!(core.store.mailbox_uids(BOB, INBOX).len(), 1);
                // One blob and its index record (in the same batch): nothing stored for x.
                assert_eq!(core.store.stats().blob.records, 2);
            })
        });
    }

    #[test]
    fn a_failed_blob_takes_its_queue_entry_back() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        users(&data);
        run(data.clone(), |core| {
            Box::pin(async move {
                core.store.inject_fault(
                    LogKind::Blob,
                    Some(Fault {
                        stage: FaultStage::Sync,
                        errno: libc::ENOSPC,
                        batches: 1,
                    }),
                );
                let t = submitted("doomed", &["dave@remote.test"]);
                assert_eq!(core.deliver(&t).await, DeliveryResult::DiskFull);
                assert_eq!(core.store.queue_len(), 0);
                let t = submitted("after", &["dave@remote.test"]);
                assert_eq!(core.deliver(&t).await, DeliveryResult::Stored);
                assert_eq!(core.store.queue_len(), 1);
            })
        });
        let rec = recover(&data, 1, &|_| 0).unwrap();
        let q: Vec<_> = rec.cores[0].queue().entries().cloned().collect();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].id, 2, "the first entry was marked done, not reused");
    }
}
