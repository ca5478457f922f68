//! Password checks for IMAP and POP3 logins (SMTP AUTH later), off the executor thread.
//!
//! An argon2id verification costs tens of milliseconds of CPU: run on the executor it would
//! stall every session of the core, so it runs on the executor's blocking thread. A core
//! remembers, per user, a keyed BLAKE2b digest of the last password that verified against the
//! user's current hash (the key is random per process and never leaves memory), so a client
//! that logs in again and again (phones, imaptest) costs one digest, not one argon2 run.
//! The cache entry is bound to the hash string it was verified against: `ringmail user add`
//! or `del` changing the users file invalidates it.
//!
//! Failed attempts are answered only after `auth.failure_delay_ms`, and an unknown user costs
//! the same argon2 run as a wrong password, so neither the reply nor its timing says whether a
//! mailbox exists.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::Blake2bMac512;

use crate::accounts::{normalize_address, verify_phc, Secret};

/// Cached logins per core (users beyond it are verified with argon2 every time).
pub const CACHE_USERS_MAX: usize = 100_000;
/// Longest user name or password a login may carry.
pub const CREDENTIAL_BYTES_MAX: usize = 1024;

/// Why a login failed (the client only ever sees "invalid credentials").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("invalid credentials")]
    Invalid,
    #[error("the password check could not run")]
    Unavailable,
}

/// One core's login cache.
#[derive(Default)]
pub struct LoginCache {
    entries: RefCell<HashMap<String, CacheEntry>>,
}

struct CacheEntry {
    /// The PHC hash string the password verified against.
    phc: String,
    digest: [u8; 64],
}

fn process_key() -> &'static [u8; 64] {
    static KEY: OnceLock<[u8; 64]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0u8; 64];
        // getrandom through password-hash's OsRng (already a dependency).
        use password_hash::rand_core::RngCore;
        password_hash::rand_core::OsRng.fill_bytes(&mut key);
        key
    })
}

fn digest(user: &str, password: &Secret) -> [u8; 64] {
    let mut mac = match Blake2bMac512::new_from_slice(process_key()) {
        Ok(m) => m,
        // A 64-byte key is always valid for BLAKE2b-512.
        Err(_) => unreachable!("BLAKE2b accepts 64-byte keys"),
    };
    mac.update(user.as_bytes());
    mac.update(&[0]);
    mac.update(password.expose().as_bytes());
    mac.finalize_fixed().into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A hash of a random password, verified for unknown users so they cost the same.
fn dummy_phc() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::generate(&mut password_hash::rand_core::OsRng);
        argon2::Argon2::default()
            .hash_password(b"no such user: a password nobody has", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

impl LoginCache {
    /// Checks `username`/`password`. `phc_of` looks the user's current hash up in the users
    /// table. Returns the normalized address on success. Does not delay failures (the caller
    /// does, so it can count them per connection first).
    pub async fn verify(
        &self,
        username: &str,
        password: &Secret,
        phc_of: impl Fn(&str) -> Option<String>,
    ) -> Result<String, AuthFailure> {
        if username.len() > CREDENTIAL_BYTES_MAX || password.expose().len() > CREDENTIAL_BYTES_MAX {
            return Err(AuthFailure::Invalid);
        }
        let user = normalize_address(username).ok();
        let phc = user.as_deref().and_then(&phc_of);
        if let (Some(user), Some(phc)) = (&user, &phc) {
            let d = digest(user, password);
            if let Some(e) = self.entries.borrow().get(user) {
                if e.phc == *phc && constant_time_eq(&e.digest, &d) {
                    return Ok(user.clone());
                }
            }
        }
        let target = phc.clone().unwrap_or_else(|| dummy_phc().to_string());
        let pw = password.expose().to_string();
        let ok = glommio::executor()
            .spawn_blocking(move || verify_phc(&target, &pw))
            .await;
        match (user, phc) {
            (Some(user), Some(phc)) if ok => {
                let mut entries = self.entries.borrow_mut();
                if entries.len() >= CACHE_USERS_MAX {
                    entries.clear();
                }
                // Bound to the hash the password verified against (not one looked up again
                // after the wait: the users file may have changed meanwhile).
                entries.insert(
                    user.clone(),
                    CacheEntry {
                        phc,
                        digest: digest(&user, password),
                    },
                );
                Ok(user)
            }
            _ => Err(AuthFailure::Invalid),
        }
    }
}

/// Sleeps the configured failure delay.
pub async fn failure_delay(ms: u64) {
    if ms > 0 {
        glommio::timer::sleep(Duration::from_millis(ms)).await;
    }
}

impl crate::runtime::core::Core {
    /// Checks a login. On failure the reply is delayed by `auth.failure_delay_ms` before
    /// this returns, whatever the reason (unknown user, wrong password).
    pub async fn authenticate(
        &self,
        username: &str,
        password: &Secret,
    ) -> Result<String, AuthFailure> {
        let result = self
            .logins
            .verify(username, password, |u| self.directory.password_hash(u))
            .await;
        if result.is_err() {
            failure_delay(self.config.auth.failure_delay_ms).await;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_depends_on_user_and_password() {
        let a = digest("a@x.test", &Secret::new("pw".into()));
        assert_eq!(a, digest("a@x.test", &Secret::new("pw".into())));
        assert_ne!(a, digest("a@x.test", &Secret::new("pw2".into())));
        assert_ne!(a, digest("b@x.test", &Secret::new("pw".into())));
        // The separator keeps ("a", "bc") and ("ab", "c") apart.
        assert_ne!(
            digest("a", &Secret::new("bc".into())),
            digest("ab", &Secret::new("c".into()))
        );
    }

    #[test]
    fn constant_time_eq_compares_everything() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn dummy_hash_verifies_nothing_real() {
        assert!(!verify_phc(dummy_phc(), "password"));
        assert!(!verify_phc("not a phc string", "x"));
    }
}
