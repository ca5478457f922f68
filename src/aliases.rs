//! Aliases and domain catch-alls, and how a recipient expands into final destinations.
//!
//! Stored in `<data_dir>/aliases`, one `alias<TAB>target` line per pair: aliases sorted, the
//! targets of one alias in the order they were added. An alias is `local@domain` or
//! `@domain` (the catch-all of a local domain); a target is any address: a user, another
//! alias, or a remote address (forwarding, carried by the outbound queue). Edits go through
//! the users table's lock and crash-safe rewrite ([`crate::accounts::DirLock`],
//! [`crate::accounts::replace_file`]); the server re-reads the file when its modification
//! time changes.
//!
//! Expansion ([`Aliases::expand`]): an address outside the local domains is a remote
//! destination; in a local domain, an exact user beats an exact alias, which beats the
//! domain's catch-all; anything else is unknown. Aliases chain at most [`ALIAS_DEPTH_MAX`]
//! deep, a loop is an error, and one expansion visits at most [`ALIAS_TARGETS_MAX`] targets.
//! Pure: the user table and the local domains come in through [`Mailboxes`].

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::accounts::{normalize_address, replace_file, Accounts, AccountsError, DirLock};
use crate::config::valid_hostname;

/// Longest chain of aliases one address may go through (an alias naming an alias ...).
pub const ALIAS_DEPTH_MAX: usize = 8;
/// Most targets one expansion visits (and most targets of one alias).
pub const ALIAS_TARGETS_MAX: usize = 1000;
/// Most `alias<TAB>target` lines in the aliases file.
pub const ALIAS_PAIRS_MAX: usize = 100_000;

const FILE_NAME: &str = "aliases";

#[derive(Debug, thiserror::Error)]
pub enum AliasError {
    /// Reading, locking or rewriting a file, or loading the users table.
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}:{line}: malformed alias line (expected ALIAS<TAB>TARGET)")]
    Malformed { path: PathBuf, line: usize },
    #[error("{path}: more than {ALIAS_PAIRS_MAX} alias lines")]
    TooLarge { path: PathBuf },
    #[error(
        "{0:?} is not a valid alias (expected local@domain, or @domain for a domain catch-all)"
    )]
    BadAlias(String),
    #[error(
        "{0:?} is not a valid target address (expected local@domain, at most 254 bytes, no spaces)"
    )]
    BadTarget(String),
    #[error("alias {alias}: {domain} is not a local domain (add it to [domains] local first)")]
    NotLocalDomain { alias: String, domain: String },
    #[error("{0} is a user: an alias of the same name would hide its mailbox (delete the user first, or pick another alias)")]
    IsUser(String),
    #[error("alias {0} cannot have itself as a target")]
    SelfTarget(String),
    #[error("alias {alias} already has target {target}")]
    Exists { alias: String, target: String },
    #[error("no such alias {0}")]
    NoSuchAlias(String),
    #[error("alias {alias} has no target {target}")]
    NoSuchTarget { alias: String, target: String },
    #[error("alias {alias} would have more than {ALIAS_TARGETS_MAX} targets")]
    TooManyTargets { alias: String },
    #[error("the aliases file would have more than {ALIAS_PAIRS_MAX} lines")]
    TableFull,
    #[error("refused: with this change, mail to {alias} could not be delivered: {source}")]
    Unusable { alias: String, source: ExpandError },
}

/// Why a recipient did not expand (fully).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// The aliases form a cycle; `chain` is `a -> b -> a`.
    #[error("alias loop: {chain}")]
    Loop { chain: String },
    #[error("alias chain longer than {ALIAS_DEPTH_MAX}: {chain}")]
    TooDeep { chain: String },
    #[error("{address} expands to more than {ALIAS_TARGETS_MAX} targets")]
    TooMany { address: String },
    /// The address itself is in a local domain and is no user, no alias and has no
    /// catch-all.
    #[error("{address}: no such user or alias")]
    NoSuchRecipient { address: String },
    /// A target of `alias` is in a local domain but is neither a user nor an alias (nor
    /// caught by a catch-all). The other targets still deliver.
    #[error("{target} (a target of alias {alias}) is in a local domain but is neither a user nor an alias")]
    UnknownTarget { alias: String, target: String },
}

impl ExpandError {
    /// True when nothing of the expansion may be delivered (loop, depth, size, unknown
    /// recipient); false for an unknown target, whose siblings still deliver.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, ExpandError::UnknownTarget { .. })
    }
}

/// Where a copy of a message goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// A user's mailbox here (the normalized user address).
    Local(String),
    /// An address in another domain, for the outbound queue.
    Remote(String),
}

/// What expansion needs to know besides the aliases.
pub trait Mailboxes {
    /// `address` is normalized.
    fn is_user(&self, address: &str) -> bool;
    /// `domain` is lowercase.
    fn is_local_domain(&self, domain: &str) -> bool;
}

/// The users table and the configured local domains.
pub struct LocalMailboxes<'a> {
    pub users: &'a Accounts,
    pub local_domains: &'a [String],
}

impl Mailboxes for LocalMailboxes<'_> {
    fn is_user(&self, address: &str) -> bool {
        self.users.contains(address)
    }
    fn is_local_domain(&self, domain: &str) -> bool {
        self.local_domains.iter().any(|d| d == domain)
    }
}

/// Outcome of [`Aliases::add`].
#[derive(Debug)]
pub struct Added {
    /// The normalized alias (`local@domain` or `@domain`).
    pub alias: String,
    /// The normalized targets that were added.
    pub targets: Vec<String>,
    /// Targets that will not deliver as things stand (a local address that is neither a
    /// user nor an alias): worth a warning, not a refusal (the user may be added next).
    pub warnings: Vec<ExpandError>,
}

/// The alias table as loaded from disk. Keys are `local@domain` or `@domain`.
#[derive(Debug, Default, Clone)]
pub struct Aliases {
    map: BTreeMap<String, Vec<String>>,
}

/// Normalizes an alias: `local@domain` like a user address, or `@domain` for a catch-all.
pub fn normalize_alias(alias: &str) -> Result<String, AliasError> {
    let bad = || AliasError::BadAlias(alias.to_string());
    match alias.trim().strip_prefix('@') {
        Some(domain) => {
            let domain = domain.to_ascii_lowercase();
            if valid_hostname(&domain) {
                Ok(format!("@{domain}"))
            } else {
                Err(bad())
            }
        }
        None => normalize_address(alias).map_err(|_| bad()),
    }
}

fn domain_of(key: &str) -> &str {
    key.rsplit_once('@').map_or("", |(_, d)| d)
}

impl Aliases {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE_NAME)
    }

    /// Loads `<data_dir>/aliases`; a missing file is an empty table.
    pub fn load(data_dir: &Path) -> Result<Aliases, AliasError> {
        let path = Aliases::path(data_dir);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Aliases::default()),
            Err(source) => return Err(AliasError::Read { path, source }),
        };
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut pairs = 0usize;
        for (i, line) in text.lines().enumerate() {
            if line.is_empty() {
                continue;
            }
            pairs += 1;
            if pairs > ALIAS_PAIRS_MAX {
                return Err(AliasError::TooLarge { path });
            }
            let malformed = || AliasError::Malformed {
                path: path.clone(),
                line: i + 1,
            };
            let (key, target) = line.split_once('\t').ok_or_else(malformed)?;
            // Stored forms are already normalized: anything else was not written by us.
            if normalize_alias(key).ok().as_deref() != Some(key)
                || normalize_address(target).ok().as_deref() != Some(target)
            {
                return Err(malformed());
            }
            let targets = map.entry(key.to_string()).or_default();
            if targets.iter().any(|t| t == target) || targets.len() >= ALIAS_TARGETS_MAX {
                return Err(malformed());
            }
            targets.push(target.to_string());
        }
        Ok(Aliases { map })
    }

    /// Modification time of the aliases file, to notice changes cheaply.
    pub fn modified(data_dir: &Path) -> Option<SystemTime> {
        fs::metadata(Aliases::path(data_dir))
            .and_then(|m| m.modified())
            .ok()
    }

    /// Is `key` (normalized `local@domain` or `@domain`) an alias?
    pub fn contains(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// The targets of alias `key`, in the order they were added.
    pub fn targets(&self, key: &str) -> Option<&[String]> {
        self.map.get(key).map(Vec::as_slice)
    }

    /// Every `(alias, target)` pair: aliases sorted, targets in the order added.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.map
            .iter()
            .flat_map(|(k, ts)| ts.iter().map(move |t| (k.as_str(), t.as_str())))
    }

    /// Number of `(alias, target)` pairs.
    pub fn len(&self) -> usize {
        self.map.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The aliases that name `target` as one of their targets.
    pub fn referrers<'a>(&'a self, target: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.map
            .iter()
            .filter(move |(_, ts)| ts.iter().any(|t| t == target))
            .map(|(k, _)| k.as_str())
    }

    /// Does a mailbox, an exact alias or the domain's catch-all accept `address`
    /// (normalized)? Only addresses in local domains are accepted.
    pub fn accepts<M: Mailboxes + ?Sized>(&self, mailboxes: &M, address: &str) -> bool {
        let domain = domain_of(address);
        mailboxes.is_local_domain(domain)
            && (mailboxes.is_user(address)
                || self.map.contains_key(address)
                || self.catch_all(domain).is_some())
    }

    /// May logged-in `user` use `sender` (normalized) as envelope sender? Their own address,
    /// or an exact alias that expands (directly or through other exact aliases) to their
    /// mailbox. A domain catch-all gives no right to send: owning stray mail for a domain is
    /// not owning every address in it.
    pub fn may_send_as<M: Mailboxes + ?Sized>(
        &self,
        mailboxes: &M,
        user: &str,
        sender: &str,
    ) -> bool {
        if sender.is_empty() || user.is_empty() {
            return false;
        }
        if sender == user {
            return true;
        }
        if !mailboxes.is_local_domain(domain_of(sender)) || !self.map.contains_key(sender) {
            return false;
        }
        let mut out = Vec::new();
        let mut unknown = Vec::new();
        let walked =
            Walk::new(self, mailboxes, false, &mut out, &mut unknown).start_at_address(sender);
        walked.is_ok()
            && out
                .iter()
                .any(|d| matches!(d, Destination::Local(u) if u == user))
    }

    /// Appends the final destinations of an accepted recipient to `out`: local mailboxes and
    /// remote addresses, each once (destinations already in `out` are not added again), in
    /// depth-first order of the alias targets.
    ///
    /// On a fatal error ([`ExpandError::is_fatal`]: loop, too deep, too many targets, unknown
    /// recipient) `out` is left as it was. Unknown targets do not stop the others: they are
    /// reported as the returned error (the first of them) with `out` holding what delivers.
    pub fn expand<M: Mailboxes + ?Sized>(
        &self,
        mailboxes: &M,
        address: &str,
        out: &mut Vec<Destination>,
    ) -> Result<(), ExpandError> {
        let mut unknown = Vec::new();
        self.expand_all(mailboxes, address, out, &mut unknown)?;
        match unknown.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Like [`Aliases::expand`], but every unknown target is appended to `unknown`.
    pub fn expand_all<M: Mailboxes + ?Sized>(
        &self,
        mailboxes: &M,
        address: &str,
        out: &mut Vec<Destination>,
        unknown: &mut Vec<ExpandError>,
    ) -> Result<(), ExpandError> {
        let lowered;
        let address = if address.chars().any(char::is_uppercase) {
            lowered = address.to_lowercase();
            lowered.as_str()
        } else {
            address
        };
        let (out_len, unknown_len) = (out.len(), unknown.len());
        let walked = Walk::new(self, mailboxes, true, out, unknown).start_at_address(address);
        if walked.is_err() {
            out.truncate(out_len);
            unknown.truncate(unknown_len);
        }
        walked
    }

    fn catch_all(&self, domain: &str) -> Option<(&str, &[String])> {
        if domain.is_empty() {
            return None;
        }
        self.map
            .get_key_value(format!("@{domain}").as_str())
            .map(|(k, ts)| (k.as_str(), ts.as_slice()))
    }

    /// Adds `targets` to `alias` (under the lock, atomically, all or nothing). The alias
    /// must be in one of `local_domains` and must not be a user; the change is refused if it
    /// makes mail to the alias undeliverable (a loop, or a chain that is too long).
    pub fn add(
        data_dir: &Path,
        alias: &str,
        targets: &[&str],
        local_domains: &[String],
    ) -> Result<Added, AliasError> {
        let key = normalize_alias(alias)?;
        let domain = domain_of(&key);
        if !local_domains.iter().any(|d| d == domain) {
            return Err(AliasError::NotLocalDomain {
                alias: key.clone(),
                domain: domain.to_string(),
            });
        }
        let mut new_targets: Vec<String> = Vec::with_capacity(targets.len());
        for t in targets {
            let t = normalize_address(t).map_err(|_| AliasError::BadTarget(t.to_string()))?;
            if t == key {
                return Err(AliasError::SelfTarget(key));
            }
            if !new_targets.contains(&t) {
                new_targets.push(t);
            }
        }
        if new_targets.is_empty() {
            return Err(AliasError::BadTarget(String::new()));
        }

        let _lock = DirLock::acquire(data_dir)?;
        let users = Accounts::load(data_dir)?;
        if users.contains(&key) {
            return Err(AliasError::IsUser(key));
        }
        let mut table = Aliases::load(data_dir)?;
        if table.len() + new_targets.len() > ALIAS_PAIRS_MAX {
            return Err(AliasError::TableFull);
        }
        let list = table.map.entry(key.clone()).or_default();
        if let Some(t) = new_targets.iter().find(|t| list.contains(t)) {
            return Err(AliasError::Exists {
                alias: key,
                target: t.clone(),
            });
        }
        if list.len() + new_targets.len() > ALIAS_TARGETS_MAX {
            return Err(AliasError::TooManyTargets { alias: key });
        }
        list.extend(new_targets.iter().cloned());

        let mailboxes = LocalMailboxes {
            users: &users,
            local_domains,
        };
        let mut out = Vec::new();
        let mut warnings = Vec::new();
        let walked = match table.map.get_key_value(key.as_str()) {
            Some((k, ts)) => {
                Walk::new(&table, &mailboxes, true, &mut out, &mut warnings).start_at_alias(k, ts)
            }
            None => Ok(()),
        };
        if let Err(source) = walked {
            return Err(AliasError::Unusable { alias: key, source });
        }
        table.save(data_dir)?;
        Ok(Added {
            alias: key,
            targets: new_targets,
            warnings,
        })
    }

    /// Deletes one target of `alias`, or the whole alias when `target` is `None`. Returns
    /// the normalized alias and the removed targets. Works for any domain (also one that is
    /// no longer local).
    pub fn delete(
        data_dir: &Path,
        alias: &str,
        target: Option<&str>,
    ) -> Result<(String, Vec<String>), AliasError> {
        let key = normalize_alias(alias)?;
        let target = match target {
            Some(t) => {
                Some(normalize_address(t).map_err(|_| AliasError::BadTarget(t.to_string()))?)
            }
            None => None,
        };
        let _lock = DirLock::acquire(data_dir)?;
        let mut table = Aliases::load(data_dir)?;
        let Some(list) = table.map.get_mut(&key) else {
            return Err(AliasError::NoSuchAlias(key));
        };
        let removed = match target {
            None => std::mem::take(list),
            Some(t) => match list.iter().position(|x| *x == t) {
                Some(i) => vec![list.remove(i)],
                None => {
                    return Err(AliasError::NoSuchTarget {
                        alias: key,
                        target: t,
                    })
                }
            },
        };
        if list.is_empty() {
            table.map.remove(&key);
        }
        table.save(data_dir)?;
        Ok((key, removed))
    }

    fn save(&self, data_dir: &Path) -> Result<(), AliasError> {
        let mut text = String::new();
        for (k, t) in self.pairs() {
            text.push_str(k);
            text.push('\t');
            text.push_str(t);
            text.push('\n');
        }
        replace_file(data_dir, FILE_NAME, text.as_bytes())?;
        Ok(())
    }
}

/// One depth-first expansion.
struct Walk<'a, 'o, M: ?Sized> {
    aliases: &'a Aliases,
    mailboxes: &'o M,
    follow_catch_all: bool,
    out: &'o mut Vec<Destination>,
    unknown: &'o mut Vec<ExpandError>,
    /// The aliases being expanded, outermost first (at most `ALIAS_DEPTH_MAX`).
    chain: Vec<&'a str>,
    /// Aliases already fully expanded in this walk: their destinations are in `out`.
    done: HashSet<&'a str>,
    /// Targets visited so far (bounded by `ALIAS_TARGETS_MAX`).
    visits: usize,
    /// The address the walk started from, for error messages.
    start: String,
}

impl<'a, 'o, M: Mailboxes + ?Sized> Walk<'a, 'o, M> {
    fn new(
        aliases: &'a Aliases,
        mailboxes: &'o M,
        follow_catch_all: bool,
        out: &'o mut Vec<Destination>,
        unknown: &'o mut Vec<ExpandError>,
    ) -> Self {
        Walk {
            aliases,
            mailboxes,
            follow_catch_all,
            out,
            unknown,
            chain: Vec::with_capacity(ALIAS_DEPTH_MAX),
            done: HashSet::new(),
            visits: 0,
            start: String::new(),
        }
    }

    fn start_at_address(mut self, address: &str) -> Result<(), ExpandError> {
        self.start = address.to_string();
        self.address(address, None)
    }

    fn start_at_alias(mut self, key: &'a str, targets: &'a [String]) -> Result<(), ExpandError> {
        self.start = key.to_string();
        self.alias(key, targets)
    }

    fn push(&mut self, d: Destination) {
        if !self.out.contains(&d) {
            self.out.push(d);
        }
    }

    fn chain_through(&self, last: &str) -> String {
        let mut s = String::new();
        for k in &self.chain {
            s.push_str(k);
            s.push_str(" -> ");
        }
        s.push_str(last);
        s
    }

    /// `via` is the alias that named `address` (`None` for the recipient itself).
    fn address(&mut self, address: &str, via: Option<&'a str>) -> Result<(), ExpandError> {
        self.visits += 1;
        if self.visits > ALIAS_TARGETS_MAX {
            return Err(ExpandError::TooMany {
                address: self.start.clone(),
            });
        }
        let domain = domain_of(address);
        if !self.mailboxes.is_local_domain(domain) {
            self.push(Destination::Remote(address.to_string()));
            return Ok(());
        }
        if self.mailboxes.is_user(address) {
            self.push(Destination::Local(address.to_string()));
            return Ok(());
        }
        if let Some((k, ts)) = self.aliases.map.get_key_value(address) {
            return self.alias(k, ts);
        }
        if self.follow_catch_all {
            if let Some((k, ts)) = self.aliases.catch_all(domain) {
                return self.alias(k, ts);
            }
        }
        match via {
            None => Err(ExpandError::NoSuchRecipient {
                address: address.to_string(),
            }),
            Some(alias) => {
                self.unknown.push(ExpandError::UnknownTarget {
                    alias: alias.to_string(),
                    target: address.to_string(),
                });
                Ok(())
            }
        }
    }

    fn alias(&mut self, key: &'a str, targets: &'a [String]) -> Result<(), ExpandError> {
        if self.chain.contains(&key) {
            return Err(ExpandError::Loop {
                chain: self.chain_through(key),
            });
        }
        if self.done.contains(key) {
            return Ok(());
        }
        if self.chain.len() >= ALIAS_DEPTH_MAX {
            return Err(ExpandError::TooDeep {
                chain: self.chain_through(key),
            });
        }
        self.chain.push(key);
        for t in targets {
            self.address(t, Some(key))?;
        }
        self.chain.pop();
        self.done.insert(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Users and local domains without argon2 or files.
    struct Fake {
        users: Vec<&'static str>,
        domains: Vec<&'static str>,
    }

    impl Mailboxes for Fake {
        fn is_user(&self, address: &str) -> bool {
            self.users.contains(&address)
        }
        fn is_local_domain(&self, domain: &str) -> bool {
            self.domains.contains(&domain)
        }
    }

    fn fake() -> Fake {
        Fake {
            users: vec!["alice@example.test", "bob@example.test", "carol@other.test"],
            domains: vec!["example.test", "other.test"],
        }
    }

    fn table(pairs: &[(&str, &str)]) -> Aliases {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, t) in pairs {
            map.entry(k.to_string()).or_default().push(t.to_string());
        }
        Aliases { map }
    }

    fn local(a: &str) -> Destination {
        Destination::Local(a.to_string())
    }
    fn remote(a: &str) -> Destination {
        Destination::Remote(a.to_string())
    }

    fn expand(t: &Aliases, m: &Fake, a: &str) -> (Vec<Destination>, Result<(), ExpandError>) {
        let mut out = Vec::new();
        let r = t.expand(m, a, &mut out);
        (out, r)
    }

    #[test]
    fn users_and_remote_addresses_expand_to_themselves() {
        let t = table(&[]);
        let m = fake();
        assert_eq!(
            expand(&t, &m, "alice@example.test"),
            (vec![local("alice@example.test")], Ok(()))
        );
        assert_eq!(
            expand(&t, &m, "x@remote.test"),
            (vec![remote("x@remote.test")], Ok(()))
        );
        let (out, r) = expand(&t, &m, "nobody@example.test");
        assert!(out.is_empty());
        assert_eq!(
            r,
            Err(ExpandError::NoSuchRecipient {
                address: "nobody@example.test".into()
            })
        );
        assert!(r.unwrap_err().is_fatal());
    }

    #[test]
    fn a_chain_expands_to_local_and_remote_destinations_in_order() {
        let t = table(&[
            ("sales@example.test", "team@example.test"),
            ("sales@example.test", "boss@remote.test"),
            ("team@example.test", "bob@example.test"),
            ("team@example.test", "alice@example.test"),
            ("team@example.test", "carol@other.test"),
        ]);
        let m = fake();
        assert_eq!(
            expand(&t, &m, "sales@example.test"),
            (
                vec![
                    local("bob@example.test"),
                    local("alice@example.test"),
                    local("carol@other.test"),
                    remote("boss@remote.test"),
                ],
                Ok(())
            )
        );
    }

    #[test]
    fn duplicates_are_delivered_once_also_across_calls() {
        let t = table(&[
            ("a@example.test", "alice@example.test"),
            ("a@example.test", "b@example.test"),
            ("a@example.test", "c@example.test"),
            ("b@example.test", "alice@example.test"),
            ("b@example.test", "x@remote.test"),
            ("c@example.test", "b@example.test"), // a diamond, not a loop
            ("c@example.test", "x@remote.test"),
        ]);
        let m = fake();
        let (out, r) = expand(&t, &m, "a@example.test");
        assert_eq!(r, Ok(()));
        assert_eq!(
            out,
            vec![local("alice@example.test"), remote("x@remote.test")]
        );
        // A second recipient of the same message adds only what is new.
        let mut out2 = out.clone();
        t.expand(&m, "alice@example.test", &mut out2).unwrap();
        t.expand(&m, "bob@example.test", &mut out2).unwrap();
        assert_eq!(
            out2,
            vec![
                local("alice@example.test"),
                remote("x@remote.test"),
                local("bob@example.test")
            ]
        );
    }

    #[test]
    fn exact_user_beats_exact_alias_beats_catch_all() {
        let t = table(&[
            ("@example.test", "bob@example.test"),
            ("alice@example.test", "x@remote.test"), // shadowed by the user
            ("info@example.test", "alice@example.test"),
        ]);
        let m = fake();
        assert_eq!(
            expand(&t, &m, "alice@example.test").0,
            vec![local("alice@example.test")]
        );
        assert_eq!(
            expand(&t, &m, "info@example.test").0,
            vec![local("alice@example.test")]
        );
        assert_eq!(
            expand(&t, &m, "whatever@example.test").0,
            vec![local("bob@example.test")]
        );
        // The catch-all is per domain.
        assert!(expand(&t, &m, "whatever@other.test").1.is_err());
        assert!(t.accepts(&m, "whatever@example.test"));
        assert!(!t.accepts(&m, "whatever@other.test"));
        assert!(t.accepts(&m, "carol@other.test"));
        assert!(!t.accepts(&m, "x@remote.test"));
    }

    #[test]
    fn unknown_target_is_reported_and_the_others_still_deliver() {
        let t = table(&[
            ("list@example.test", "gone@example.test"),
            ("list@example.test", "bob@example.test"),
            ("list@example.test", "left@other.test"),
        ]);
        let m = fake();
        let mut out = Vec::new();
        let mut unknown = Vec::new();
        t.expand_all(&m, "list@example.test", &mut out, &mut unknown)
            .unwrap();
        assert_eq!(out, vec![local("bob@example.test")]);
        assert_eq!(unknown.len(), 2);
        let (out, r) = expand(&t, &m, "list@example.test");
        assert_eq!(out, vec![local("bob@example.test")]);
        let e = r.unwrap_err();
        assert!(!e.is_fatal());
        assert_eq!(
            e,
            ExpandError::UnknownTarget {
                alias: "list@example.test".into(),
                target: "gone@example.test".into()
            }
        );
        assert!(e.to_string().contains("gone@example.test"), "{e}");
    }

    #[test]
    fn loops_are_fatal_and_leave_out_untouched() {
        let t = table(&[
            ("a@example.test", "alice@example.test"),
            ("a@example.test", "b@example.test"),
            ("b@example.test", "c@example.test"),
            ("c@example.test", "a@example.test"),
        ]);
        let m = fake();
        let mut out = vec![remote("earlier@remote.test")];
        let e = t.expand(&m, "b@example.test", &mut out).unwrap_err();
        assert!(e.is_fatal());
        assert_eq!(
            e,
            ExpandError::Loop {
                chain: "b@example.test -> c@example.test -> a@example.test -> b@example.test"
                    .into()
            }
        );
        assert_eq!(out, vec![remote("earlier@remote.test")]);
        // A catch-all whose target falls back into the catch-all loops too.
        let t = table(&[("@example.test", "nobody@example.test")]);
        let (out, r) = expand(&t, &m, "x@example.test");
        assert!(out.is_empty());
        assert!(matches!(r, Err(ExpandError::Loop { .. })), "{r:?}");
    }

    fn chain_of(n: usize) -> Aliases {
        let mut pairs = Vec::new();
        let names: Vec<String> = (0..=n).map(|i| format!("a{i}@example.test")).collect();
        for i in 0..n {
            pairs.push((names[i].as_str(), names[i + 1].as_str()));
        }
        pairs.push((names[n].as_str(), "alice@example.test"));
        let pairs: Vec<(&str, &str)> = pairs;
        table(&pairs)
    }

    #[test]
    fn depth_is_bounded() {
        let m = fake();
        // a0 -> ... -> a7 -> alice: 8 aliases in the chain.
        let t = chain_of(ALIAS_DEPTH_MAX - 1);
        assert_eq!(
            expand(&t, &m, "a0@example.test"),
            (vec![local("alice@example.test")], Ok(()))
        );
        let t = chain_of(ALIAS_DEPTH_MAX);
        let (out, r) = expand(&t, &m, "a0@example.test");
        assert!(out.is_empty());
        match r {
            Err(ExpandError::TooDeep { chain }) => {
                assert_eq!(chain.matches(" -> ").count(), ALIAS_DEPTH_MAX, "{chain}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn total_work_is_bounded() {
        let m = fake();
        let names: Vec<String> = (0..ALIAS_TARGETS_MAX)
            .map(|i| format!("r{i}@remote.test"))
            .collect();
        let mut pairs: Vec<(&str, &str)> = names
            .iter()
            .map(|n| ("big@example.test", n.as_str()))
            .collect();
        let t = table(&pairs);
        // The recipient itself is one visit: 1000 targets make 1001.
        let (out, r) = expand(&t, &m, "big@example.test");
        assert!(out.is_empty());
        assert!(matches!(r, Err(ExpandError::TooMany { .. })), "{r:?}");
        pairs.pop();
        let t = table(&pairs);
        let (out, r) = expand(&t, &m, "big@example.test");
        assert_eq!(r, Ok(()));
        assert_eq!(out.len(), ALIAS_TARGETS_MAX - 1);
    }

    #[test]
    fn a_wide_diamond_is_expanded_once_per_alias() {
        // l1 names 30 aliases l2_i; each l2_i names all 30 l3_j; each l3_j names alice.
        // Expanding every path is 1 + 30 + 30 * (30 + 30) = 1831 visits (over the bound);
        // expanding each alias once is 1 + 30 + 30 + 30 + 29 * 30 = 961.
        let m = fake();
        let n = 30;
        let mut owned = Vec::new();
        for i in 0..n {
            owned.push((
                "l1@example.test".to_string(),
                format!("l2-{i}@example.test"),
            ));
            for j in 0..n {
                owned.push((
                    format!("l2-{i}@example.test"),
                    format!("l3-{j}@example.test"),
                ));
            }
            owned.push((
                format!("l3-{i}@example.test"),
                "alice@example.test".to_string(),
            ));
        }
        let pairs: Vec<(&str, &str)> = owned
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let t = table(&pairs);
        assert_eq!(
            expand(&t, &m, "l1@example.test"),
            (vec![local("alice@example.test")], Ok(()))
        );
    }

    #[test]
    fn mixed_case_recipients_are_normalized() {
        let t = table(&[("info@example.test", "bob@example.test")]);
        let m = fake();
        assert_eq!(
            expand(&t, &m, "Info@EXAMPLE.test"),
            (vec![local("bob@example.test")], Ok(()))
        );
    }

    #[test]
    fn may_send_as_own_address_and_exact_aliases_only() {
        let t = table(&[
            ("@example.test", "alice@example.test"),
            ("info@example.test", "team@example.test"),
            ("team@example.test", "alice@example.test"),
            ("team@example.test", "gone@example.test"),
            ("fwd@example.test", "x@remote.test"),
            ("stray@example.test", "nobody@example.test"), // caught by the catch-all
            ("loop@example.test", "loop2@example.test"),
            ("loop2@example.test", "loop@example.test"),
            ("loop2@example.test", "alice@example.test"),
        ]);
        let m = fake();
        assert!(t.may_send_as(&m, "alice@example.test", "alice@example.test"));
        assert!(t.may_send_as(&m, "alice@example.test", "team@example.test"));
        // Through two aliases, despite an unknown sibling target.
        assert!(t.may_send_as(&m, "alice@example.test", "info@example.test"));
        assert!(!t.may_send_as(&m, "bob@example.test", "info@example.test"));
        assert!(!t.may_send_as(&m, "alice@example.test", "bob@example.test"));
        // The catch-all delivers stray mail to alice but does not let her send as anyone.
        assert!(!t.may_send_as(&m, "alice@example.test", "ceo@example.test"));
        assert!(!t.may_send_as(&m, "alice@example.test", "fwd@example.test"));
        assert!(!t.may_send_as(&m, "alice@example.test", "stray@example.test"));
        assert_eq!(
            expand(&t, &m, "stray@example.test").0,
            vec![local("alice@example.test")]
        );
        assert!(!t.may_send_as(&m, "alice@example.test", "loop@example.test"));
        assert!(!t.may_send_as(&m, "alice@example.test", ""));
        assert!(!t.may_send_as(&m, "alice@example.test", "x@remote.test"));
    }

    #[test]
    fn normalize_alias_forms() {
        assert_eq!(
            normalize_alias("Info@Example.TEST").unwrap(),
            "info@example.test"
        );
        assert_eq!(normalize_alias("@Example.TEST").unwrap(), "@example.test");
        for bad in [
            "",
            "@",
            "@bad domain",
            "noat",
            "a b@example.test",
            "@-x.test",
            "@a@b.test",
        ] {
            assert!(
                matches!(normalize_alias(bad), Err(AliasError::BadAlias(_))),
                "{bad:?} accepted"
            );
        }
    }

    fn local_domains() -> Vec<String> {
        vec!["example.test".to_string()]
    }

    #[test]
    fn add_list_delete_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ld = local_domains();
        let a = Aliases::add(
            d,
            "Sales@Example.test",
            &["X@Remote.test", "y@remote.test"],
            &ld,
        )
        .unwrap();
        assert_eq!(a.alias, "sales@example.test");
        assert_eq!(a.targets, ["x@remote.test", "y@remote.test"]);
        assert!(a.warnings.is_empty());
        let a = Aliases::add(d, "sales@example.test", &["a@remote.test"], &ld).unwrap();
        assert_eq!(a.targets, ["a@remote.test"]);
        Aliases::add(d, "@example.test", &["z@remote.test"], &ld).unwrap();
        let text = fs::read_to_string(Aliases::path(d)).unwrap();
        assert_eq!(
            text,
            "@example.test\tz@remote.test\nsales@example.test\tx@remote.test\n\
             sales@example.test\ty@remote.test\nsales@example.test\ta@remote.test\n"
        );
        assert!(!d.join("aliases.tmp").exists());
        let t = Aliases::load(d).unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(
            t.targets("sales@example.test").unwrap(),
            ["x@remote.test", "y@remote.test", "a@remote.test"]
        );
        assert_eq!(
            t.referrers("z@remote.test").collect::<Vec<_>>(),
            ["@example.test"]
        );

        assert!(matches!(
            Aliases::add(d, "sales@example.test", &["Y@remote.test"], &ld),
            Err(AliasError::Exists { .. })
        ));
        let (k, removed) = Aliases::delete(d, "SALES@example.test", Some("y@remote.test")).unwrap();
        assert_eq!(
            (k.as_str(), removed.as_slice()),
            ("sales@example.test", &["y@remote.test".to_string()][..])
        );
        assert!(matches!(
            Aliases::delete(d, "sales@example.test", Some("y@remote.test")),
            Err(AliasError::NoSuchTarget { .. })
        ));
        let (_, removed) = Aliases::delete(d, "sales@example.test", None).unwrap();
        assert_eq!(removed, ["x@remote.test", "a@remote.test"]);
        assert!(matches!(
            Aliases::delete(d, "sales@example.test", None),
            Err(AliasError::NoSuchAlias(_))
        ));
        // Removing the last target removes the alias.
        Aliases::delete(d, "@example.test", Some("z@remote.test")).unwrap();
        assert!(Aliases::load(d).unwrap().is_empty());
        assert_eq!(fs::read_to_string(Aliases::path(d)).unwrap(), "");
    }

    #[test]
    fn add_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ld = local_domains();
        assert!(matches!(
            Aliases::add(d, "a@elsewhere.test", &["b@example.test"], &ld),
            Err(AliasError::NotLocalDomain { .. })
        ));
        assert!(matches!(
            Aliases::add(d, "@elsewhere.test", &["b@example.test"], &ld),
            Err(AliasError::NotLocalDomain { .. })
        ));
        assert!(matches!(
            Aliases::add(d, "a@example.test", &["A@example.test"], &ld),
            Err(AliasError::SelfTarget(_))
        ));
        assert!(matches!(
            Aliases::add(d, "a@example.test", &["not an address"], &ld),
            Err(AliasError::BadTarget(_))
        ));
        assert!(matches!(
            Aliases::add(d, "a@example.test", &["@example.test"], &ld),
            Err(AliasError::BadTarget(_))
        ));
        assert!(matches!(
            Aliases::add(d, "a@example.test", &[], &ld),
            Err(AliasError::BadTarget(_))
        ));
        // A loop is refused and leaves the file as it was.
        Aliases::add(d, "a@example.test", &["b@example.test"], &ld).unwrap();
        let before = fs::read_to_string(Aliases::path(d)).unwrap();
        let e = Aliases::add(d, "b@example.test", &["a@example.test"], &ld).unwrap_err();
        assert!(
            matches!(
                &e,
                AliasError::Unusable {
                    source: ExpandError::Loop { .. },
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("alias loop"), "{e}");
        assert_eq!(fs::read_to_string(Aliases::path(d)).unwrap(), before);
        // a -> b, b unknown: a warning, not a refusal.
        let t = Aliases::load(d).unwrap();
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn unknown_local_target_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let a = Aliases::add(
            dir.path(),
            "a@example.test",
            &["nobody@example.test", "x@remote.test"],
            &local_domains(),
        )
        .unwrap();
        assert_eq!(a.warnings.len(), 1);
        assert!(a.warnings[0].to_string().contains("nobody@example.test"));
    }

    #[test]
    fn alias_and_user_never_share_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let pw = crate::accounts::Secret::new("pw".to_string());
        Accounts::add(d, "alice@example.test", &pw).unwrap();
        let e = Aliases::add(
            d,
            "Alice@example.test",
            &["x@remote.test"],
            &local_domains(),
        )
        .unwrap_err();
        assert!(matches!(e, AliasError::IsUser(_)), "{e}");
        assert!(e.to_string().contains("would hide its mailbox"), "{e}");
        Aliases::add(
            d,
            "info@example.test",
            &["alice@example.test"],
            &local_domains(),
        )
        .unwrap();
        let e = Accounts::add(d, "info@example.test", &pw).unwrap_err();
        assert!(matches!(e, AccountsError::IsAlias(_)), "{e}");
    }

    #[test]
    fn malformed_files_are_errors_with_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (text, line) in [
            ("a@example.test\tb@example.test\nno tab here\n", 2),
            ("A@example.test\tb@example.test\n", 1),
            ("a@example.test\tb c@example.test\n", 1),
            ("\na@example.test\tb@x.test\na@example.test\tb@x.test\n", 3),
        ] {
            fs::write(Aliases::path(d), text).unwrap();
            let e = Aliases::load(d).unwrap_err();
            assert!(
                e.to_string().ends_with(&format!(
                    ":{line}: malformed alias line (expected ALIAS<TAB>TARGET)"
                )),
                "{text:?}: {e}"
            );
        }
    }
}
