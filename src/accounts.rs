//! Users and their password hashes.
//!
//! Stored in `<data_dir>/users`, one `address<TAB>argon2id-PHC-string` line per user, sorted.
//! Every change rewrites the file through a temporary file that is fsynced, renamed over the
//! old one, and followed by an fsync of the directory, so a crash leaves either the old or the
//! new list, never a torn one. Concurrent `ringmail user ...` commands serialise on an flock of
//! `<data_dir>/users.lock` (shared with `ringmail alias ...`: [`DirLock`], [`replace_file`]).
//! The server re-reads the file when its modification time changes. A user cannot be added
//! under an address that is an alias (the user would silently hide the alias).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::aliases::{AliasError, Aliases};

/// Longest accepted address (RFC 5321 4.5.3.1.3 path limit minus the brackets).
pub const ADDRESS_BYTES_MAX: usize = 254;
/// Longest accepted password.
pub const PASSWORD_BYTES_MAX: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path}:{line}: malformed user line")]
    Malformed { path: PathBuf, line: usize },
    #[error("{0:?} is not a valid address (expected local@domain, at most 254 bytes, no spaces)")]
    BadAddress(String),
    #[error("password must be 1 to {PASSWORD_BYTES_MAX} bytes and contain no line break")]
    BadPassword,
    #[error("user {0} already exists")]
    Exists(String),
    #[error("no such user {0}")]
    NoSuchUser(String),
    #[error("hashing the password failed: {0}")]
    Hash(String),
    #[error(
        "{0} is an alias; a user of the same name would hide it (remove it first with `ringmail alias del {0}`)"
    )]
    IsAlias(String),
    #[error(transparent)]
    Aliases(Box<AliasError>),
}

/// A password: its `Debug` and `Display` never show it.
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Lowercases and checks an address; returns the normalized form.
pub fn normalize_address(address: &str) -> Result<String, AccountsError> {
    let a = address.trim().to_lowercase();
    let ok = a.len() <= ADDRESS_BYTES_MAX
        && !a
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        && match a.rsplit_once('@') {
            Some((local, domain)) => {
                !local.is_empty() && !local.contains('@') && crate::config::valid_hostname(domain)
            }
            None => false,
        };
    if ok {
        Ok(a)
    } else {
        Err(AccountsError::BadAddress(address.to_string()))
    }
}

/// Checks `password` against a PHC hash string (argon2; false for a malformed hash). Costs
/// tens of milliseconds of CPU: the server runs it off the executor thread.
pub fn verify_phc(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// The user table as loaded from disk.
#[derive(Debug, Default, Clone)]
pub struct Accounts {
    users: BTreeMap<String, String>,
}

impl Accounts {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("users")
    }

    /// Loads `<data_dir>/users`; a missing file is an empty table.
    pub fn load(data_dir: &Path) -> Result<Accounts, AccountsError> {
        let path = Accounts::path(data_dir);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Accounts::default()),
            Err(source) => {
                return Err(AccountsError::Io {
                    op: "read",
                    path,
                    source,
                })
            }
        };
        let mut users = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.is_empty() {
                continue;
            }
            let Some((addr, hash)) = line.split_once('\t') else {
                return Err(AccountsError::Malformed { path, line: i + 1 });
            };
            if PasswordHash::new(hash).is_err() {
                return Err(AccountsError::Malformed { path, line: i + 1 });
            }
            users.insert(addr.to_string(), hash.to_string());
        }
        Ok(Accounts { users })
    }

    /// Modification time of the users file, to notice changes cheaply.
    pub fn modified(data_dir: &Path) -> Option<SystemTime> {
        fs::metadata(Accounts::path(data_dir))
            .and_then(|m| m.modified())
            .ok()
    }

    pub fn contains(&self, normalized: &str) -> bool {
        self.users.contains_key(normalized)
    }

    pub fn addresses(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The stored PHC hash string of a user (for off-thread verification).
    pub fn hash_of(&self, normalized: &str) -> Option<String> {
        self.users.get(normalized).cloned()
    }

    /// Checks a password (constant-time comparison inside argon2).
    pub fn verify(&self, normalized: &str, password: &Secret) -> bool {
        self.users
            .get(normalized)
            .is_some_and(|hash| verify_phc(hash, password.expose()))
    }

    /// Adds a user (under the lock, atomically). Returns the normalized address.
    pub fn add(data_dir: &Path, address: &str, password: &Secret) -> Result<String, AccountsError> {
        let addr = normalize_address(address)?;
        let pw = password.expose();
        if pw.is_empty() || pw.len() > PASSWORD_BYTES_MAX || pw.contains(['\n', '\r']) {
            return Err(AccountsError::BadPassword);
        }
        let salt = SaltString::generate(&mut password_hash::rand_core::OsRng);
        let hash = Argon2::default()
            .hash_password(pw.as_bytes(), &salt)
            .map_err(|e| AccountsError::Hash(e.to_string()))?
            .to_string();
        let _lock = DirLock::acquire(data_dir)?;
        let mut table = Accounts::load(data_dir)?;
        if table.users.contains_key(&addr) {
            return Err(AccountsError::Exists(addr));
        }
        let aliases = Aliases::load(data_dir).map_err(|e| AccountsError::Aliases(Box::new(e)))?;
        if aliases.contains(&addr) {
            return Err(AccountsError::IsAlias(addr));
        }
        table.users.insert(addr.clone(), hash);
        table.save(data_dir)?;
        Ok(addr)
    }

    /// Deletes a user (its stored mail stays in the store).
    pub fn delete(data_dir: &Path, address: &str) -> Result<String, AccountsError> {
        let addr = normalize_address(address)?;
        let _lock = DirLock::acquire(data_dir)?;
        let mut table = Accounts::load(data_dir)?;
        if table.users.remove(&addr).is_none() {
            return Err(AccountsError::NoSuchUser(addr));
        }
        table.save(data_dir)?;
        Ok(addr)
    }

    fn save(&self, data_dir: &Path) -> Result<(), AccountsError> {
        let mut text = String::new();
        for (a, h) in &self.users {
            text.push_str(a);
            text.push('\t');
            text.push_str(h);
            text.push('\n');
        }
        replace_file(data_dir, "users", text.as_bytes())
    }
}

/// Replaces `<data_dir>/<name>` with `bytes` so that a crash leaves either the old or the
/// new contents, never a torn file: write `<name>.tmp`, fsync it, rename it over `<name>`,
/// fsync the directory. The caller holds the [`DirLock`]. Shared by every table the
/// `ringmail` command edits (users, aliases).
pub(crate) fn replace_file(data_dir: &Path, name: &str, bytes: &[u8]) -> Result<(), AccountsError> {
    replace_file_mode(data_dir, name, bytes, 0o666).map_err(|e| AccountsError::Io {
        op: e.op,
        path: e.path,
        source: e.source,
    })
}

/// Why [`replace_file_mode`] failed: the step, its path, the error.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub(crate) struct ReplaceError {
    pub op: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

/// Replaces `dir/name` with `bytes` so that a crash leaves the old or the new file, never a
/// mix: a temp file created with `mode` (before the umask), written, fsync'd, renamed over
/// the old one, then the directory fsync'd. Users, aliases and the generated TLS key use it.
pub(crate) fn replace_file_mode(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
) -> Result<(), ReplaceError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let io = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| ReplaceError {
            op,
            path: p,
            source,
        }
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    f.write_all(bytes).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("fsync", &tmp))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(io("rename", &path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", dir))?;
    Ok(())
}

/// An exclusive flock on `<data_dir>/users.lock`, released on drop. Every edit of the users
/// or the aliases table holds it, so the checks between the two tables (an alias is never
/// also a user) cannot race.
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(crate) fn acquire(data_dir: &Path) -> Result<DirLock, AccountsError> {
        fs::create_dir_all(data_dir).map_err(|source| AccountsError::Io {
            op: "create directory",
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join("users.lock");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| AccountsError::Io {
                op: "open",
                path: path.clone(),
                source,
            })?;
        // SAFETY: flock on a valid, owned file descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(AccountsError::Io {
                op: "flock",
                path,
                source: io::Error::last_os_error(),
            });
        }
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(s: &str) -> Secret {
        Secret::new(s.to_string())
    }

    #[test]
    fn add_verify_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let a = Accounts::add(dir.path(), "Alice@Example.TEST", &pw("correct horse")).unwrap();
        assert_eq!(a, "alice@example.test");
        Accounts::add(dir.path(), "bob@example.test", &pw("b")).unwrap();
        let t = Accounts::load(dir.path()).unwrap();
        assert_eq!(
            t.addresses().collect::<Vec<_>>(),
            ["alice@example.test", "bob@example.test"]
        );
        assert!(t.verify("alice@example.test", &pw("correct horse")));
        assert!(!t.verify("alice@example.test", &pw("wrong")));
        assert!(!t.verify("nobody@example.test", &pw("correct horse")));
        assert!(matches!(
            Accounts::add(dir.path(), "alice@example.test", &pw("x")),
            Err(AccountsError::Exists(_))
        ));
        Accounts::delete(dir.path(), "ALICE@example.test").unwrap();
        let t = Accounts::load(dir.path()).unwrap();
        assert!(!t.contains("alice@example.test"));
        assert!(t.contains("bob@example.test"));
        assert!(matches!(
            Accounts::delete(dir.path(), "alice@example.test"),
            Err(AccountsError::NoSuchUser(_))
        ));
    }

    #[test]
    fn password_is_never_stored_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        Accounts::add(dir.path(), "c@example.test", &pw("hunter2-very-secret")).unwrap();
        let text = fs::read_to_string(Accounts::path(dir.path())).unwrap();
        assert!(!text.contains("hunter2-very-secret"));
        assert!(text.contains("$argon2id$"), "{text}");
        assert!(!dir.path().join("users.tmp").exists());
    }

    #[test]
    fn secret_debug_and_display_hide_the_password() {
        let s = pw("topsecret");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
        assert!(!format!("{:?}", Some(&s)).contains("topsecret"));
    }

    #[test]
    fn bad_addresses_and_passwords_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "",
            "noat",
            "@example.test",
            "a b@example.test",
            "a@bad domain",
            "a@-x.test",
        ] {
            assert!(
                matches!(
                    Accounts::add(dir.path(), bad, &pw("x")),
                    Err(AccountsError::BadAddress(_))
                ),
                "{bad:?} accepted"
            );
        }
        assert!(matches!(
            Accounts::add(dir.path(), "a@example.test", &pw("")),
            Err(AccountsError::BadPassword)
        ));
        assert!(matches!(
            Accounts::add(dir.path(), "a@example.test", &pw("a\nb")),
            Err(AccountsError::BadPassword)
        ));
    }

    #[test]
    fn malformed_file_is_an_error_with_line_number() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(Accounts::path(dir.path()), "a@b.test\tnot-a-hash\n").unwrap();
        let e = Accounts::load(dir.path()).unwrap_err();
        assert!(e.to_string().ends_with(":1: malformed user line"), "{e}");
    }
}
