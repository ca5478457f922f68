//! Who receives mail here: the local domains and the user table as this core last loaded it.
//! Implements the SMTP session's [`Directory`].

use std::cell::{Cell, RefCell};
use std::time::SystemTime;

use crate::accounts::Accounts;
use crate::config::Config;
use crate::smtp::Directory;

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

impl LocalDirectory {
    /// The stored password hash of a user.
    pub fn password_hash(&self, normalized: &str) -> Option<String> {
        self.accounts.borrow().hash_of(normalized)
    }
}
