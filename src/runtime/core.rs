//! What one core owns: its store, its end of the mesh, its copy of the user table, its
//! connection count, and the shutdown signal its sessions listen to.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::SystemTime;

use glommio::sync::Semaphore;

use crate::accounts::Accounts;
use crate::config::Config;
use crate::runtime::mesh::{DeliverFailure, Mesh};
use crate::runtime::placement::owner_core;
use crate::smtp::{DeliveryResult, Directory, Limits, Transaction};
use crate::store::{Delivery, Store};

/// The mailbox every SMTP delivery lands in.
pub const INBOX: &str = "INBOX";

/// Local domains and the user table as this core last loaded it.
pub struct LocalDirectory {
    local_domains: Vec<String>,
    accounts: RefCell<Accounts>,
    accounts_mtime: Cell<Option<SystemTime>>,
}

impl LocalDirectory {
    pub fn new(config: &Config, accounts: Accounts) -> LocalDirectory {
        LocalDirectory {
            local_domains: config.domains.local.clone(),
            accounts: RefCell::new(accounts),
            accounts_mtime: Cell::new(Accounts::modified(&config.server.data_dir)),
        }
    }

    /// Re-reads the users file if it changed (`ringmail user add` while running).
    pub fn refresh(&self, config: &Config) {
        let now = Accounts::modified(&config.server.data_dir);
        if now != self.accounts_mtime.get() {
            match Accounts::load(&config.server.data_dir) {
                Ok(a) => {
                    *self.accounts.borrow_mut() = a;
                    self.accounts_mtime.set(now);
                }
                Err(e) => eprintln!("ringmail: keeping the previous user table: {e}"),
            }
        }
    }
}

impl Directory for LocalDirectory {
    fn is_local_domain(&self, domain: &str) -> bool {
        self.local_domains.iter().any(|d| d == domain)
    }

    fn has_mailbox(&self, address: &str) -> bool {
        self.accounts.borrow().contains(address)
    }
}

/// Per-core state shared by every task on the core (never crosses threads).
pub struct Core {
    pub index: usize,
    pub cores: usize,
    pub config: Arc<Config>,
    pub smtp_limits: Rc<Limits>,
    pub store: Rc<Store>,
    pub mesh: Rc<Mesh>,
    pub directory: LocalDirectory,
    /// Closed (never acquired) when the process shuts down: a broadcast to every waiter.
    pub shutdown: Rc<Semaphore>,
    shutting_down: Cell<bool>,
    pub connections: Cell<usize>,
    next_session: Cell<u64>,
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
        let smtp_limits = Rc::new(Limits {
            hostname: config.server.hostname.clone(),
            message_bytes_max: config.smtp.max_message_bytes,
            recipients_max: config.smtp.max_recipients,
            command_line_bytes_max: 512,
            text_line_bytes_max: 1000,
            errors_max: config.smtp.errors_max,
        });
        let directory = LocalDirectory::new(&config, accounts);
        Core {
            index,
            cores,
            config,
            smtp_limits,
            store,
            mesh,
            directory,
            shutdown: Rc::new(Semaphore::new(0)),
            shutting_down: Cell::new(false),
            connections: Cell::new(0),
            next_session: Cell::new(0),
        }
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

    /// Stores a message once and files it into every recipient's INBOX on the owning core.
    /// Returns only when the blob and all index records are durable.
    pub async fn deliver(&self, txn: &Transaction) -> DeliveryResult {
        let blob = match self.store.append_blob(&txn.message).await {
            Ok(b) => b,
            Err(e) => return storage_failure(&e),
        };
        let internal_date = unix_now();
        // Group recipients by owning core; the local group is committed here, the others are
        // sent to their owners, all concurrently.
        let mut groups: Vec<Vec<Delivery>> = (0..self.cores).map(|_| Vec::new()).collect();
        for rcpt in &txn.recipients {
            groups[owner_core(rcpt, self.cores)].push(Delivery {
                user: rcpt.clone(),
                mailbox: INBOX.to_string(),
                blob,
                internal_date,
            });
        }
        let mut remote = Vec::new();
        let mut local = Vec::new();
        for (core, group) in groups.into_iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            if core == self.index {
                local = group;
            } else {
                let mesh = self.mesh.clone();
                remote.push(glommio::spawn_local(async move {
                    mesh.deliver_remote(core, group).await
                }));
            }
        }
        let mut result = DeliveryResult::Stored;
        if !local.is_empty() {
            if let Err(e) = self.store.deliver(&local).await {
                result = storage_failure(&e);
            }
        }
        for task in remote {
            match task.await {
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
        result
    }
}

fn storage_failure(e: &crate::store::StoreError) -> DeliveryResult {
    if e.is_disk_full() {
        DeliveryResult::DiskFull
    } else {
        eprintln!("ringmail: storage error: {e}");
        DeliveryResult::TempFail
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
