//! The per-core queue runner: delivers the outbound queue this core owns.
//!
//! Each core runs one [`run`] loop. A pass reads the core's queue entries, lets
//! [`schedule::plan`] decide what is due, fails expired recipients, sends delay notices, and
//! hands the due recipients to per-domain workers: at most `connections_per_domain_max`
//! connections per domain per core, each taking work items (one entry's recipients of that
//! domain) from the domain's shared list, so one connection carries several messages in a
//! row (connection reuse) and one transaction carries all of a message's recipients of the
//! domain. A pass runs when the queue grows (`Core::deliver` signals `outbound_wake`), on
//! operator request, and at least every [`PASS_INTERVAL_MS`].
//!
//! A worker resolves the route ([`Resolver::mx_route`], or the `[relay] smarthost`), tries
//! the hosts in order and each host's addresses, and drives a [`Client`] over the connection
//! (STARTTLS opportunistically; verified for `tls_verify_domains`). Every outcome becomes a
//! durable `QueueUpdate` (delivered, failed, or deferred to `schedule::next_try`); failed
//! recipients are bounced to the sender with an RFC 3464 notice ([`dsn::build`]), delivered
//! to the sender's mailbox here or queued like any other mail, sent from `<>` so a bounce is
//! never bounced. An entry whose recipients are all final gets its `QueueDone`.
//!
//! At-least-once: a remote that accepted a message just before a crash, before the
//! `QueueUpdate` was durable, gets it again after the restart.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;

use super::client::{self, Abort, Client, Outcome, Step, TlsPolicy};
use super::dsn::{self, Action, RecipientReport, Report};
use super::schedule::{self, Policy};
use crate::dns::{MxHost, Resolver, RouteError};
use crate::net::tls::{ClientConfigs, Verify};
use crate::net::transport::Transport;
use crate::runtime::control::{ControlOp, ControlRequest};
use crate::runtime::core::Core;
use crate::smtp::command::Ret;
use crate::smtp::Transaction as SmtpTransaction;
use crate::store::queue::{FLAG_DELAY_NOTIFIED, RET_FULL, RET_HDRS};
use crate::store::{DoneReason, QueueEntry, RecipientChange, RecipientState};
use crate::time::unix_now;

/// Longest wait between passes over the queue.
pub const PASS_INTERVAL_MS: u64 = 1000;
/// Connecting to one address may take this long.
pub const TIMEOUT_MS_CONNECT: u64 = 30_000;
/// MX hosts tried per attempt (RFC 5321 §5.1 suggests trying a few, not all).
pub const HOSTS_PER_ATTEMPT_MAX: usize = 5;
/// Addresses tried per attempt, over all hosts.
pub const ADDRESSES_PER_ATTEMPT_MAX: usize = 10;
/// Connections one worker opens before it leaves the rest of its list to the next pass.
pub const CONNECTIONS_PER_WORKER_MAX: usize = 100;
/// How long a connection with nothing to send waits for more work before QUIT.
pub const IDLE_MS_REUSE: u64 = 200;
const IDLE_MS_STEP: u64 = 5;
/// Read buffer of one outbound connection.
pub const READ_BUFFER_BYTES: usize = 16 * 1024;

/// One entry's recipients of one domain.
struct Work {
    entry: Rc<QueueEntry>,
    indexes: Vec<usize>,
}

/// A core's outbound delivery agent.
pub struct Sender {
    core: Rc<Core>,
    resolver: Rc<Resolver>,
    tls: ClientConfigs,
    opportunistic: Rc<client::Config>,
    required: Rc<client::Config>,
    policy: Policy,
    /// (entry id, recipient index) handed to a worker and not recorded yet.
    busy: RefCell<HashSet<(u64, usize)>>,
    /// Open connections (workers) per domain, and their shared work lists.
    domains: RefCell<HashMap<String, DomainState>>,
    /// Entries whose `QueueDone` is being written.
    retiring: RefCell<HashSet<u64>>,
}

#[derive(Default)]
struct DomainState {
    workers: usize,
    work: Rc<RefCell<VecDeque<Work>>>,
}

impl Sender {
    pub fn new(core: Rc<Core>, resolver: Rc<Resolver>, tls: ClientConfigs) -> Sender {
        let relay = &core.config.relay;
        let policy = Policy {
            retry_ms: relay.retry_ms.clone(),
            age_ms_max: relay.age_ms_max,
            delay_notice_ms: relay.delay_notice_ms,
        };
        let mut opportunistic = client::Config::new(&core.config.server.hostname);
        opportunistic.tls = TlsPolicy::Opportunistic;
        let mut required = opportunistic.clone();
        required.tls = TlsPolicy::Required;
        Sender {
            core,
            resolver,
            tls,
            opportunistic: Rc::new(opportunistic),
            required: Rc::new(required),
            policy,
            busy: RefCell::new(HashSet::new()),
            domains: RefCell::new(HashMap::new()),
            retiring: RefCell::new(HashSet::new()),
        }
    }

    /// One pass: expire, notify, hand due recipients to workers, retire finished entries.
    pub async fn pass(self: &Rc<Self>) {
        let now = unix_now();
        let entries = self.core.store.queue_entries();
        self.core.metrics.outbound_queue(entries.len());
        for entry in entries {
            if entry.is_complete() {
                self.retire(entry.id).await;
                continue;
            }
            let plan = schedule::plan(&entry, now, &self.policy);
            if plan.is_empty() {
                continue;
            }
            let entry = Rc::new(entry);
            if !plan.expired.is_empty() {
                let expired: Vec<usize> = {
                    let busy = self.busy.borrow();
                    plan.expired
                        .iter()
                        .copied()
                        .filter(|i| !busy.contains(&(entry.id, *i)))
                        .collect()
                };
                let results = expired
                    .iter()
                    .map(|&i| {
                        let mut reason = String::from(
                            "message expired: not delivered within the maximum queue time",
                        );
                        if let Some(r) = entry.recipients.get(i).filter(|r| !r.error.is_empty()) {
                            reason.push_str("; last error: ");
                            reason.push_str(&r.error);
                        }
                        (i, Attempt::Permanent(None, reason, Some("4.4.7".into())))
                    })
                    .collect();
                self.record(&entry, results, None).await;
                continue;
            }
            // Recipients a worker holds are left to it: their update is in flight.
            let notice: Vec<usize> = {
                let busy = self.busy.borrow();
                plan.delay_notice
                    .iter()
                    .copied()
                    .filter(|i| !busy.contains(&(entry.id, *i)))
                    .collect()
            };
            if !notice.is_empty() {
                self.delay_notice(&entry, &notice, now).await;
            }
            for (domain, indexes) in plan.attempts {
                let indexes: Vec<usize> = {
                    let mut busy = self.busy.borrow_mut();
                    indexes
                        .into_iter()
                        .filter(|i| busy.insert((entry.id, *i)))
                        .collect()
                };
                if indexes.is_empty() {
                    continue;
                }
                self.enqueue_work(
                    domain,
                    Work {
                        entry: entry.clone(),
                        indexes,
                    },
                );
            }
        }
    }

    /// Adds work for `domain` and starts a worker if the domain has room for one more.
    fn enqueue_work(self: &Rc<Self>, domain: String, work: Work) {
        let start = {
            let mut domains = self.domains.borrow_mut();
            let state = domains.entry(domain.clone()).or_default();
            state.work.borrow_mut().push_back(work);
            let queued = state.work.borrow().len();
            if state.workers < self.core.config.relay.connections_per_domain_max
                && state.workers < queued
            {
                state.workers += 1;
                Some(state.work.clone())
            } else {
                None
            }
        };
        if let Some(list) = start {
            let me = self.clone();
            glommio::spawn_local(async move {
                me.worker(&domain, &list).await;
                let mut domains = me.domains.borrow_mut();
                if let Some(state) = domains.get_mut(&domain) {
                    state.workers = state.workers.saturating_sub(1);
                    if state.workers == 0 && state.work.borrow().is_empty() {
                        domains.remove(&domain);
                    }
                }
            })
            .detach();
        }
    }

    /// Where mail for `domain` goes: (host name for TLS/SNI and DSNs, address).
    async fn route(&self, domain: &str) -> Result<Vec<(String, SocketAddr)>, RouteError> {
        let port = self.core.config.relay.port;
        let hosts: Vec<(String, u16)> = match &self.core.config.relay.smarthost {
            Some((host, port)) => vec![(host.clone(), *port)],
            None => self
                .resolver
                .mx_route(domain)
                .await?
                .into_iter()
                .take(HOSTS_PER_ATTEMPT_MAX)
                .map(|MxHost { host, .. }| (host, port))
                .collect(),
        };
        let mut out = Vec::new();
        let mut last_error = None;
        for (host, port) in hosts {
            let ips = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(vec![ip]),
                Err(_) => self.resolver.addresses(&host).await,
            };
            match ips {
                Ok(ips) => {
                    for ip in ips {
                        if out.len() < ADDRESSES_PER_ATTEMPT_MAX {
                            out.push((host.clone(), SocketAddr::new(ip, port)));
                        }
                    }
                }
                Err(e) => last_error = Some(e),
            }
        }
        match (out.is_empty(), last_error) {
            (true, Some(e)) => Err(e),
            (true, None) => Err(RouteError::Temporary(format!("{domain}: no route"))),
            _ => Ok(out),
        }
    }

    /// Delivers the domain's work list over as few connections as it takes.
    async fn worker(self: &Rc<Self>, domain: &str, list: &Rc<RefCell<VecDeque<Work>>>) {
        if list.borrow().is_empty() {
            return;
        }
        let route = match self.route(domain).await {
            Ok(route) => route,
            Err(e) => {
                // RFC 3463 / RFC 7505 status of each routing failure.
                let status = match e {
                    RouteError::NullMx(_) => "5.1.10",
                    RouteError::NoSuchDomain(_) | RouteError::BadName(_) => "5.1.2",
                    RouteError::NoAddresses(_) => "5.4.4",
                    RouteError::Temporary(_) => "4.4.3",
                };
                let reason = format!("{e}");
                loop {
                    // Not `while let`: the borrow would live across the awaits below.
                    let next = list.borrow_mut().pop_front();
                    let Some(work) = next else { break };
                    let result = if e.is_permanent() {
                        Attempt::Permanent(None, reason.clone(), Some(status.into()))
                    } else {
                        Attempt::Temporary(reason.clone())
                    };
                    let results = work.indexes.iter().map(|&i| (i, result.clone())).collect();
                    self.record(&work.entry, results, None).await;
                }
                return;
            }
        };
        let verify = self
            .core
            .config
            .relay
            .tls_verify_domains
            .iter()
            .any(|d| d == domain);
        let mut last_error = String::from("no address to connect to");
        // A connection that delivered something and then ended (QUIT after an idle moment,
        // a 421) leaves the list to a new connection, from the first address again; one that
        // delivered nothing passes the work to the next address. Bounded either way.
        let mut connections = 0;
        'route: while connections < CONNECTIONS_PER_WORKER_MAX {
            for (host, addr) in &route {
                if list.borrow().is_empty() {
                    return;
                }
                connections += 1;
                let tcp = match glommio::net::TcpStream::connect_timeout(
                    *addr,
                    Duration::from_millis(TIMEOUT_MS_CONNECT),
                )
                .await
                {
                    Ok(tcp) => tcp,
                    Err(e) => {
                        last_error = format!("connect to {host}[{}]: {e}", addr.ip());
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                match self.session(tcp, host, verify, list).await {
                    Ok(true) => continue 'route,
                    Ok(false) => last_error = format!("{host}[{}]: connection ended", addr.ip()),
                    Err(e) => last_error = format!("{host}[{}]: {e}", addr.ip()),
                }
            }
            break;
        }
        // Every address failed: what is left waits for the next try.
        loop {
            let next = list.borrow_mut().pop_front();
            let Some(work) = next else { break };
            let results = work
                .indexes
                .iter()
                .map(|&i| (i, Attempt::Temporary(last_error.clone())))
                .collect();
            self.record(&work.entry, results, None).await;
        }
    }

    /// One connection: as many work items as the list holds, waiting up to
    /// [`IDLE_MS_REUSE`] for more before QUIT (connection reuse under a steady stream).
    /// Ok(true) when at least one transaction ran; Err when the connection failed before any
    /// (the caller tries the next address). A failure in the middle of a transaction is
    /// recorded as that transaction's outcome.
    async fn session(
        self: &Rc<Self>,
        tcp: glommio::net::TcpStream,
        host: &str,
        verify: bool,
        list: &Rc<RefCell<VecDeque<Work>>>,
    ) -> io::Result<bool> {
        let config = if verify {
            self.required.clone()
        } else {
            self.opportunistic.clone()
        };
        let mut conn = Conn {
            transport: Some(Transport::Plain(tcp)),
            buf: vec![0u8; READ_BUFFER_BYTES.max(config.read_buffer_bytes_min())],
            start: 0,
            end: 0,
            out: Vec::with_capacity(4096),
        };
        let mut client = Client::new(config, false);
        let tls_verify = if verify {
            Verify::Verified
        } else {
            Verify::None
        };
        let mut step = conn.drive(&mut client, &self.tls, tls_verify, host).await;
        let mut sent_any = false;
        loop {
            match step {
                Step::Ready | Step::TransactionDone => {
                    let mut next = list.borrow_mut().pop_front();
                    let mut idle_ms = 0;
                    while next.is_none() && idle_ms < IDLE_MS_REUSE {
                        glommio::timer::sleep(Duration::from_millis(IDLE_MS_STEP)).await;
                        idle_ms += IDLE_MS_STEP;
                        next = list.borrow_mut().pop_front();
                    }
                    let Some(work) = next else {
                        let _ = client.quit();
                        step = conn.drive(&mut client, &self.tls, tls_verify, host).await;
                        continue;
                    };
                    let message = match self.core.store.read_blob_settled(work.entry.blob).await {
                        // RFC 5321 §4.4: Return-Path is added at final delivery only.
                        Ok(m) => without_return_path(&m).to_vec(),
                        Err(e) => {
                            let results = work
                                .indexes
                                .iter()
                                .map(|&i| {
                                    (i, Attempt::Temporary(format!("reading the message: {e}")))
                                })
                                .collect();
                            self.record(&work.entry, results, None).await;
                            continue;
                        }
                    };
                    let tx = client::Transaction {
                        sender: work.entry.sender.clone(),
                        recipients: work
                            .indexes
                            .iter()
                            .map(|&i| {
                                let r = &work.entry.recipients[i];
                                client::Recipient {
                                    address: r.address.clone(),
                                    notify: r.notify,
                                    orcpt: r.orcpt.clone(),
                                }
                            })
                            .collect(),
                        smtputf8: work.entry.smtputf8,
                        ret: work.entry.ret,
                        envid: work.entry.envid.clone(),
                        message,
                    };
                    if let Err(e) = client.start(tx) {
                        let results = work
                            .indexes
                            .iter()
                            .map(|&i| {
                                (
                                    i,
                                    Attempt::Permanent(None, e.to_string(), Some("5.1.3".into())),
                                )
                            })
                            .collect();
                        self.record(&work.entry, results, Some(host)).await;
                        continue;
                    }
                    sent_any = true;
                    step = conn.drive(&mut client, &self.tls, tls_verify, host).await;
                    let outcomes = client.take_results().unwrap_or_default();
                    let dsn_capable = client.extensions().dsn;
                    let results = work
                        .indexes
                        .iter()
                        .enumerate()
                        .map(|(k, &i)| {
                            let result = match outcomes.get(k) {
                                Some(Outcome::Delivered(reply)) => {
                                    Attempt::Delivered(reply.to_string(), dsn_capable)
                                }
                                Some(Outcome::Failed(f)) => Attempt::Permanent(
                                    Some(f.reply.to_string()),
                                    f.to_string(),
                                    Some(f.reply.status().to_string()),
                                ),
                                Some(Outcome::Deferred(f)) => Attempt::Temporary(f.to_string()),
                                None => Attempt::Temporary(
                                    client
                                        .error()
                                        .map(|f| f.to_string())
                                        .unwrap_or_else(|| "connection lost".into()),
                                ),
                            };
                            (i, result)
                        })
                        .collect();
                    self.record(&work.entry, results, Some(host)).await;
                }
                Step::Close => {
                    let error = client.error().map(|f| f.to_string());
                    conn.close().await;
                    return match (sent_any, error) {
                        (false, Some(e)) => Err(io::Error::other(e)),
                        (sent_any, _) => Ok(sent_any),
                    };
                }
                // `drive` returns only the steps above.
                Step::NeedInput | Step::Write | Step::StartTls => {
                    conn.close().await;
                    return Err(io::Error::other("client stalled"));
                }
            }
        }
    }

    /// Writes the outcomes of one attempt durably, then bounces, notifies and retires.
    async fn record(&self, entry: &QueueEntry, results: Vec<(usize, Attempt)>, host: Option<&str>) {
        let now = unix_now();
        // The entry as it is now: a delay notice may have set a flag since `entry` was read.
        let current = self.core.store.queue_entry(entry.id);
        let mut changes = Vec::with_capacity(results.len());
        for (i, result) in &results {
            let Some(r) = current
                .as_ref()
                .and_then(|c| c.recipients.get(*i))
                .or_else(|| entry.recipients.get(*i))
            else {
                continue;
            };
            let attempts = r.attempts.saturating_add(1);
            let (state, next_try, error) = match result {
                // The error text stays empty: `queue list` shows the last *error*.
                Attempt::Delivered(_, _) => (RecipientState::Delivered, now, String::new()),
                Attempt::Permanent(_, reason, _) => (RecipientState::Failed, now, reason.clone()),
                Attempt::Temporary(reason) => (
                    RecipientState::Deferred,
                    schedule::next_try(now, attempts, &self.policy, jitter()),
                    reason.clone(),
                ),
            };
            changes.push(RecipientChange {
                index: *i,
                state,
                attempts,
                next_try,
                flags: r.flags,
                error,
            });
        }
        let written = self.core.store.queue_update(entry.id, now, &changes).await;
        // Released only once the update is applied: until then no pass may plan (or send a
        // delay notice for) these recipients from a stale view.
        {
            let mut busy = self.busy.borrow_mut();
            for (i, _) in &results {
                busy.remove(&(entry.id, *i));
            }
        }
        if let Err(e) = written {
            eprintln!(
                "ringmail: core {}: queue {}: recording an attempt failed: {e}",
                self.core.index,
                entry.id_text()
            );
            return;
        }
        for c in &changes {
            self.core.metrics.outbound_recipient(c.state);
        }
        // Bounces and success notices (dsn::build applies NOTIFY and the null sender rule).
        let mut reports = Vec::new();
        for (i, result) in &results {
            let Some(r) = entry.recipients.get(*i) else {
                continue;
            };
            let (action, reply, reason, status) = match result {
                Attempt::Permanent(reply, reason, status) => (
                    Action::Failed,
                    reply.clone(),
                    reason.clone(),
                    status.clone(),
                ),
                // RFC 3461 §5.2.2: a DSN-capable remote got the NOTIFY request and reports
                // itself; for one without DSN, this MTA says "relayed".
                Attempt::Delivered(_, true) => continue,
                Attempt::Delivered(reply, false) => (
                    Action::Relayed,
                    Some(reply.clone()),
                    format!("relayed to {}", host.unwrap_or("the remote")),
                    None,
                ),
                Attempt::Temporary(_) => continue,
            };
            reports.push((r, action, reply, reason, status));
        }
        if !reports.is_empty() {
            let recipients: Vec<RecipientReport> = reports
                .iter()
                .map(|(r, action, reply, reason, status)| RecipientReport {
                    address: &r.address,
                    notify: r.notify,
                    orcpt: r.orcpt.as_deref(),
                    action: *action,
                    status: status.as_deref(),
                    remote_mta: host,
                    reply: reply.as_deref(),
                    reason,
                    last_attempt: now,
                })
                .collect();
            self.notify(entry, &recipients, None, now).await;
        }
        if self
            .core
            .store
            .queue_entry(entry.id)
            .is_some_and(|e| e.is_complete())
        {
            self.retire(entry.id).await;
        }
    }

    /// Builds a notice and delivers it from `<>` to the entry's sender.
    async fn notify(
        &self,
        entry: &QueueEntry,
        recipients: &[RecipientReport<'_>],
        retry_until: Option<i64>,
        now: i64,
    ) {
        // The notice quotes the original (its header at least); unreadable: none.
        let message: std::rc::Rc<[u8]> = match self.core.store.read_blob_settled(entry.blob).await {
            Ok(m) => m,
            Err(_) => std::rc::Rc::from(&[][..]),
        };
        let report = Report {
            queue_id: &entry.id_text(),
            sender: &entry.sender,
            envid: entry.envid.as_deref(),
            ret: match entry.ret {
                Some(RET_FULL) => Some(Ret::Full),
                Some(RET_HDRS) => Some(Ret::Hdrs),
                _ => None,
            },
            arrival: entry.arrival,
            retry_until,
            message: &message,
            recipients,
        };
        let Some(notice) = dsn::build(&report, now, &self.core.config.server.hostname) else {
            return;
        };
        let Ok(to) = crate::accounts::normalize_address(&entry.sender) else {
            return;
        };
        let mut bytes = Vec::with_capacity(notice.len() + 32);
        bytes.extend_from_slice(b"Return-Path: <>\r\n");
        bytes.extend_from_slice(&notice);
        let txn = SmtpTransaction {
            queue_id: format!("{}-DSN", entry.id_text()),
            mail_from: String::new(),
            recipients: vec![to],
            body_8bitmime: true,
            smtputf8: !entry.sender.is_ascii(),
            message: bytes,
            ..Default::default()
        };
        let result = self.core.deliver(&txn).await;
        if result != crate::smtp::DeliveryResult::Stored {
            eprintln!(
                "ringmail: core {}: queue {}: the notice to <{}> could not be stored ({result:?})",
                self.core.index,
                entry.id_text(),
                entry.sender
            );
        }
    }

    /// One delay notice for `indexes` (then flagged so it is sent once).
    async fn delay_notice(&self, entry: &QueueEntry, indexes: &[usize], now: i64) {
        let recipients: Vec<RecipientReport> = indexes
            .iter()
            .filter_map(|&i| entry.recipients.get(i))
            .map(|r| RecipientReport {
                address: &r.address,
                notify: r.notify,
                orcpt: r.orcpt.as_deref(),
                action: Action::Delayed,
                status: None,
                remote_mta: None,
                reply: None,
                reason: &r.error,
                last_attempt: entry.last_try,
            })
            .collect();
        let retry_until = entry
            .arrival
            .saturating_add((self.policy.age_ms_max / 1000) as i64);
        self.notify(entry, &recipients, Some(retry_until), now)
            .await;
        // Re-read: a worker may have recorded an attempt while the notice was stored; only
        // the flag changes here.
        let Some(current) = self.core.store.queue_entry(entry.id) else {
            return;
        };
        let changes: Vec<RecipientChange> = indexes
            .iter()
            .filter_map(|&i| {
                let r = current.recipients.get(i).filter(|r| !r.state.is_final())?;
                Some(RecipientChange {
                    index: i,
                    state: r.state,
                    attempts: r.attempts,
                    next_try: r.next_try,
                    flags: r.flags | FLAG_DELAY_NOTIFIED,
                    error: r.error.clone(),
                })
            })
            .collect();
        if changes.is_empty() {
            return;
        }
        if let Err(e) = self.core.store.queue_update(entry.id, now, &changes).await {
            eprintln!(
                "ringmail: core {}: queue {}: {e}",
                self.core.index,
                entry.id_text()
            );
        }
    }

    /// Writes an entry's `QueueDone` once: a pass and a worker's `record` can both find it
    /// complete.
    async fn retire(&self, id: u64) {
        if !self.retiring.borrow_mut().insert(id) {
            return;
        }
        let done = self.core.store.queue_done(id, DoneReason::Finished).await;
        self.retiring.borrow_mut().remove(&id);
        match done {
            Ok(()) | Err(crate::store::StoreError::NoSuchQueueEntry { .. }) => {}
            Err(e) => eprintln!("ringmail: core {}: queue done {id}: {e}", self.core.index),
        }
    }

    /// An operator's request (`ringmail queue flush|delete|bounce`), on the owner core.
    pub async fn control(&self, op: ControlOp) -> Result<String, String> {
        let now = unix_now();
        match op {
            ControlOp::Flush => {
                let mut n = 0;
                for entry in self.core.store.queue_entries() {
                    let changes: Vec<RecipientChange> = entry
                        .recipients
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| r.state == RecipientState::Deferred && r.next_try > now)
                        .map(|(i, r)| RecipientChange {
                            index: i,
                            state: r.state,
                            attempts: r.attempts,
                            next_try: now,
                            flags: r.flags,
                            error: r.error.clone(),
                        })
                        .collect();
                    if !changes.is_empty() {
                        n += changes.len();
                        self.core
                            .store
                            .queue_update(entry.id, now, &changes)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                }
                self.core.wake_outbound();
                Ok(format!(
                    "core {}: {n} recipient(s) due now",
                    self.core.index
                ))
            }
            ControlOp::Delete(id) => {
                let entry = self
                    .core
                    .store
                    .queue_entry(id)
                    .ok_or_else(|| "no such queue entry".to_string())?;
                self.core
                    .store
                    .queue_done(id, DoneReason::Deleted)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(format!("deleted {}", entry.id_text()))
            }
            ControlOp::Bounce(id) => {
                let entry = self
                    .core
                    .store
                    .queue_entry(id)
                    .ok_or_else(|| "no such queue entry".to_string())?;
                let results = entry
                    .recipients
                    .iter()
                    .enumerate()
                    .filter(|(i, r)| !r.state.is_final() && !self.busy.borrow().contains(&(id, *i)))
                    .map(|(i, _)| {
                        (
                            i,
                            Attempt::Permanent(
                                None,
                                "returned to the sender by the postmaster".into(),
                                Some("5.0.0".into()),
                            ),
                        )
                    })
                    .collect::<Vec<_>>();
                let n = results.len();
                self.record(&entry, results, None).await;
                Ok(format!("bounced {n} recipient(s) of {}", entry.id_text()))
            }
        }
    }
}

/// What an attempt gave one recipient.
#[derive(Debug, Clone)]
enum Attempt {
    /// Accepted: the reply, and whether the remote offers DSN (then it reports further).
    Delivered(String, bool),
    /// Failed for good: the remote's reply if it gave one, what happened, the RFC 3463 status.
    Permanent(Option<String>, String, Option<String>),
    /// Try again later: what happened.
    Temporary(String),
}

/// `message` without a leading `Return-Path:` field (the one the SMTP session prepends to
/// every stored message), folded lines included.
pub fn without_return_path(message: &[u8]) -> &[u8] {
    const NAME: &[u8] = b"return-path:";
    if message.len() < NAME.len() || !message[..NAME.len()].eq_ignore_ascii_case(NAME) {
        return message;
    }
    let mut at = 0;
    loop {
        match memchr::memchr(b'\n', &message[at..]) {
            None => return &message[message.len()..],
            Some(i) => {
                at += i + 1;
                if !matches!(message.get(at), Some(b' ' | b'\t')) {
                    return &message[at..];
                }
            }
        }
    }
}

/// ±1, uniformly-ish, from the clock (jitter needs no better randomness).
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos % 2001) as f64 / 1000.0 - 1.0
}

/// An outbound connection: transport, read buffer, pending output.
struct Conn {
    /// None only for the moment of a STARTTLS upgrade (or after a failed one).
    transport: Option<Transport>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
}

impl Conn {
    async fn flush(&mut self) -> io::Result<()> {
        let Some(t) = self.transport.as_mut() else {
            return Err(io::Error::other("connection closed"));
        };
        if !self.out.is_empty() {
            t.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    async fn read(&mut self, timeout_ms: u64) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let t = self
            .transport
            .as_mut()
            .ok_or_else(|| io::Error::other("connection closed"))?;
        t.set_read_timeout(Some(Duration::from_millis(timeout_ms)))?;
        let n = t.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// Runs the client until it needs a decision (Ready, TransactionDone) or closes.
    async fn drive(
        &mut self,
        client: &mut Client,
        tls: &ClientConfigs,
        verify: Verify,
        host: &str,
    ) -> Step {
        loop {
            let (used, step) = client.advance(&self.buf[self.start..self.end], &mut self.out);
            self.start += used;
            match step {
                Step::Ready | Step::TransactionDone => {
                    if self.flush().await.is_err() {
                        client.abort(Abort::Io);
                    }
                    return step;
                }
                Step::Close => {
                    let _ = self.flush().await;
                    return Step::Close;
                }
                Step::Write => {
                    if self.flush().await.is_err() {
                        client.abort(Abort::Io);
                    }
                }
                Step::NeedInput => {
                    if self.flush().await.is_err() {
                        client.abort(Abort::Io);
                        continue;
                    }
                    match self.read(client.timeout_ms()).await {
                        Ok(0) => {
                            client.abort(Abort::Closed);
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                            client.abort(Abort::Timeout);
                        }
                        Err(_) => {
                            client.abort(Abort::Io);
                        }
                    }
                }
                Step::StartTls => {
                    let _ = self.flush().await;
                    self.start = 0;
                    self.end = 0;
                    let upgraded = match (self.transport.take(), tls.connection(verify, host)) {
                        (Some(t), Ok(conn)) => t.connect_tls(conn).await.ok(),
                        _ => None,
                    };
                    match upgraded {
                        Some(t) => {
                            self.transport = Some(t);
                            client.tls_started();
                        }
                        None => {
                            client.abort(Abort::TlsHandshake);
                        }
                    }
                }
            }
        }
    }

    async fn close(&mut self) {
        if let Some(t) = self.transport.take() {
            t.close().await;
        }
    }
}

/// Runs the core's sender until shutdown; also serves the operator's requests that reach
/// this core.
pub async fn run(
    core: Rc<Core>,
    resolver: Rc<Resolver>,
    tls: ClientConfigs,
    control: std::sync::mpsc::Receiver<ControlRequest>,
) {
    let sender = Rc::new(Sender::new(core.clone(), resolver, tls));
    while !core.is_shutting_down() {
        while let Ok(request) = control.try_recv() {
            let answer = sender.control(request.op).await;
            let _ = request.reply.send(answer);
        }
        sender.pass().await;
        let wake = core.outbound_wake.clone();
        let shutdown = core.shutdown.clone();
        future::or(
            future::or(
                async {
                    let _ = wake.acquire(1).await;
                },
                async {
                    let _ = shutdown.acquire(1).await;
                },
            ),
            glommio::timer::sleep(Duration::from_millis(PASS_INTERVAL_MS)),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_path_is_removed_with_its_folded_lines_only() {
        assert_eq!(
            without_return_path(b"Return-Path: <a@b.test>\r\nReceived: x\r\n\r\nbody"),
            b"Received: x\r\n\r\nbody"
        );
        assert_eq!(
            without_return_path(b"return-path:\r\n <a@b.test>\r\nSubject: s\r\n"),
            b"Subject: s\r\n"
        );
        assert_eq!(
            without_return_path(b"Subject: Return-Path: no\r\n"),
            b"Subject: Return-Path: no\r\n"
        );
        assert_eq!(without_return_path(b"Return-Path: <>"), b"");
    }

    #[test]
    fn jitter_stays_within_one() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((-1.0..=1.0).contains(&j), "{j}");
        }
    }
}
