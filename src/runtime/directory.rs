//! Who receives mail here, and who may send as whom: the local domains, the user table and
//! the alias table as this core last loaded them. Implements the SMTP session's
//! [`Directory`] and, for delivery, [`LocalDirectory::expand`] (the rules live in
//! [`crate::aliases`]; this file only holds the tables and reloads them when their files
//! change).

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::time::SystemTime;

use crate::accounts::Accounts;
use crate::aliases::{Aliases, LocalMailboxes};
pub use crate::aliases::{Destination, ExpandError, ALIAS_DEPTH_MAX, ALIAS_TARGETS_MAX};
use crate::config::Config;
use crate::smtp::Directory;

/// Local domains, the user table and the alias table as this core last loaded them.
pub struct LocalDirectory {
    local_domains: Vec<String>,
    accounts: RefCell<Accounts>,
    accounts_mtime: Cell<Option<SystemTime>>,
    aliases: RefCell<Aliases>,
    aliases_mtime: Cell<Option<SystemTime>>,
}

impl LocalDirectory {
    /// Starts from `accounts` (loaded by the caller) and loads the aliases file; an unreadable
    /// aliases file is reported and treated as empty until it changes.
    pub fn new(config: &Config, accounts: Accounts) -> LocalDirectory {
        let data_dir = &config.server.data_dir;
        let aliases_mtime = Aliases::modified(data_dir);
        let aliases = Aliases::load(data_dir).unwrap_or_else(|e| {
            eprintln!("ringmail: ignoring the aliases until the file is fixed: {e}");
            Aliases::default()
        });
        LocalDirectory::from_tables(config, accounts, aliases, aliases_mtime)
    }

    fn from_tables(
        config: &Config,
        accounts: Accounts,
        aliases: Aliases,
        aliases_mtime: Option<SystemTime>,
    ) -> LocalDirectory {
        LocalDirectory {
            local_domains: config.domains.local.clone(),
            accounts: RefCell::new(accounts),
            accounts_mtime: Cell::new(Accounts::modified(&config.server.data_dir)),
            aliases: RefCell::new(aliases),
            aliases_mtime: Cell::new(aliases_mtime),
        }
    }

    /// Re-reads the users and aliases files if they changed (`ringmail user add`, `ringmail
    /// alias add` while running). A file that does not load keeps the previous table.
    pub fn refresh(&self, config: &Config) {
        let data_dir: &Path = &config.server.data_dir;
        // The mtime is read before the file: a change in between is picked up next time.
        let now = Accounts::modified(data_dir);
        if now != self.accounts_mtime.get() {
            match Accounts::load(data_dir) {
                Ok(a) => *self.accounts.borrow_mut() = a,
                Err(e) => eprintln!("ringmail: keeping the previous user table: {e}"),
            }
            self.accounts_mtime.set(now);
        }
        let now = Aliases::modified(data_dir);
        if now != self.aliases_mtime.get() {
            match Aliases::load(data_dir) {
                Ok(a) => *self.aliases.borrow_mut() = a,
                Err(e) => eprintln!("ringmail: keeping the previous alias table: {e}"),
            }
            self.aliases_mtime.set(now);
        }
    }

    /// The stored password hash of a user.
    pub fn password_hash(&self, normalized: &str) -> Option<String> {
        self.accounts.borrow().hash_of(normalized)
    }

    /// Is `address` (normalized) a user's mailbox?
    pub fn is_user(&self, address: &str) -> bool {
        self.accounts.borrow().contains(address)
    }

    /// Final destinations of an accepted recipient: local mailboxes (normalized user
    /// addresses) and remote addresses, appended to `out` unless already there, in a stable
    /// order. Exact user beats exact alias beats catch-all; chains are bounded by
    /// [`ALIAS_DEPTH_MAX`], the whole expansion by [`ALIAS_TARGETS_MAX`]. On a fatal error
    /// ([`ExpandError::is_fatal`]) `out` is unchanged and the recipient is undeliverable; an
    /// unknown target is returned as the error while the other targets are in `out`.
    pub fn expand(&self, address: &str, out: &mut Vec<Destination>) -> Result<(), ExpandError> {
        let accounts = self.accounts.borrow();
        let mailboxes = LocalMailboxes {
            users: &accounts,
            local_domains: &self.local_domains,
        };
        self.aliases.borrow().expand(&mailboxes, address, out)
    }

    fn with_mailboxes<R>(&self, f: impl FnOnce(&Aliases, &LocalMailboxes<'_>) -> R) -> R {
        let accounts = self.accounts.borrow();
        let mailboxes = LocalMailboxes {
            users: &accounts,
            local_domains: &self.local_domains,
        };
        f(&self.aliases.borrow(), &mailboxes)
    }
}

impl Directory for LocalDirectory {
    fn is_local_domain(&self, domain: &str) -> bool {
        self.local_domains.iter().any(|d| d == domain)
    }

    fn accepts(&self, address: &str) -> bool {
        self.with_mailboxes(|aliases, m| aliases.accepts(m, address))
    }

    fn may_send_as(&self, user: &str, sender: &str) -> bool {
        self.with_mailboxes(|aliases, m| aliases.may_send_as(m, user, sender))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::Secret;

    fn config(data_dir: &Path) -> Config {
        let mut c = Config::defaults();
        c.server.data_dir = data_dir.to_path_buf();
        c.domains.local = vec!["example.test".to_string()];
        c
    }

    /// Sets a file's mtime to `secs` after the epoch, so a rewrite within the same clock
    /// tick is still noticed by the test (as it would be a second later in the server).
    fn touch(path: &Path, secs: u64) {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn trait_answers_and_expansion_follow_the_tables() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let c = config(d);
        Accounts::add(d, "alice@example.test", &Secret::new("pw".into())).unwrap();
        let ld = c.domains.local.clone();
        Aliases::add(
            d,
            "info@example.test",
            &["alice@example.test", "x@remote.test"],
            &ld,
        )
        .unwrap();
        let dirx = LocalDirectory::new(&c, Accounts::load(d).unwrap());
        assert!(dirx.is_local_domain("example.test"));
        assert!(!dirx.is_local_domain("remote.test"));
        assert!(dirx.accepts("alice@example.test"));
        assert!(dirx.accepts("info@example.test"));
        assert!(!dirx.accepts("other@example.test"));
        assert!(dirx.may_send_as("alice@example.test", "info@example.test"));
        assert!(!dirx.may_send_as("alice@example.test", "other@example.test"));
        let mut out = Vec::new();
        dirx.expand("info@example.test", &mut out).unwrap();
        assert_eq!(
            out,
            [
                Destination::Local("alice@example.test".into()),
                Destination::Remote("x@remote.test".into())
            ]
        );
    }

    #[test]
    fn refresh_picks_up_alias_changes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let c = config(d);
        let ld = c.domains.local.clone();
        let dirx = LocalDirectory::new(&c, Accounts::default());
        assert!(!dirx.accepts("any@example.test"));

        Aliases::add(d, "@example.test", &["x@remote.test"], &ld).unwrap();
        touch(&Aliases::path(d), 1_000);
        dirx.refresh(&c);
        assert!(dirx.accepts("any@example.test"));

        // A broken file keeps the previous table, and is not re-read until it changes.
        std::fs::write(Aliases::path(d), "garbage\n").unwrap();
        touch(&Aliases::path(d), 2_000);
        dirx.refresh(&c);
        assert!(dirx.accepts("any@example.test"));

        Aliases::delete(d, "@example.test", None).unwrap_err(); // the file is broken
        std::fs::write(Aliases::path(d), "").unwrap();
        touch(&Aliases::path(d), 3_000);
        dirx.refresh(&c);
        assert!(!dirx.accepts("any@example.test"));
    }
}
