//! Password checks for IMAP, POP3 and SMTP AUTH logins, off the executor thread, and the
//! per-core table of recent failures that paces retries.
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
//! mailbox exists. [`FailureTable`] (pure, one per core) counts recent failures per client IP
//! and per account so the delay can grow with each one.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::Blake2bMac512;

use crate::accounts::{normalize_address, verify_phc, Secret};

/// Cached logins per core (users beyond it are verified with argon2 every time).
pub const CACHE_USERS_MAX: usize = 100_000;
/// Longest user name or password a login may carry.
pub const CREDENTIAL_BYTES_MAX: usize = 1024;

/// Why a login failed; defined in `sasl` so the sans-IO sessions can name it.
pub use crate::sasl::AuthFailure;

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

/// Failed-login entries one core remembers (client IPs and accounts together); when full,
/// the entry whose last failure is the oldest is forgotten.
pub const FAILURE_ENTRIES_MAX: usize = 16_384;
/// An entry is forgotten this long after its last failure.
pub const FAILURE_WINDOW_MS: u64 = 15 * 60 * 1000;
/// The longest delay [`FailureTable::delay_ms`] asks for.
pub const FAILURE_DELAY_MS_MAX: u64 = 15_000;

/// What failures are counted by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FailureKey {
    Ip(IpAddr),
    /// ASCII-lowercased, at most [`CREDENTIAL_BYTES_MAX`] bytes.
    Account(String),
}

impl FailureKey {
    /// The key of an account name, or None for an empty one (the IP still counts).
    fn account(account: &str) -> Option<FailureKey> {
        if account.is_empty() {
            return None;
        }
        let mut end = account.len().min(CREDENTIAL_BYTES_MAX);
        while !account.is_char_boundary(end) {
            end -= 1;
        }
        Some(FailureKey::Account(account[..end].to_ascii_lowercase()))
    }
}

#[derive(Debug, Clone, Copy)]
struct FailureEntry {
    count: u32,
    last_ms: u64,
    /// Tie-breaker in `by_age` for failures in the same millisecond.
    seq: u64,
}

/// One core's recent failed logins, counted by client IP and by account, so that failures
/// can be answered with a growing delay (`base × 2^(n-1)`, at most
/// [`FAILURE_DELAY_MS_MAX`]) whether an attacker tries many passwords from one address or
/// one account from many addresses. Bounded by [`FAILURE_ENTRIES_MAX`]; entries expire
/// [`FAILURE_WINDOW_MS`] after their last failure. Pure: time is passed in (milliseconds
/// of any monotonic clock), nothing sleeps here.
///
/// Use: after a failed check, [`record_failure`](Self::record_failure), then answer after
/// [`delay_ms`](Self::delay_ms) (the first failure waits `base_ms`); after a success,
/// [`record_success`](Self::record_success).
#[derive(Debug, Default)]
pub struct FailureTable {
    entries: HashMap<FailureKey, FailureEntry>,
    /// (last failure ms, seq) → key, oldest first: expiry and eviction order.
    by_age: BTreeMap<(u64, u64), FailureKey>,
    seq: u64,
}

impl FailureTable {
    pub fn new() -> FailureTable {
        FailureTable::default()
    }

    /// Entries held (IP and account keys).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Recent failures of `ip` or of `account`, whichever is larger.
    pub fn failures(&self, ip: IpAddr, account: &str, now_ms: u64) -> u32 {
        let by_ip = self.count(&FailureKey::Ip(ip), now_ms);
        let by_account = FailureKey::account(account).map_or(0, |key| self.count(&key, now_ms));
        by_ip.max(by_account)
    }

    /// How long to hold back the answer to a failed login: `base_ms × 2^(n-1)` for the
    /// larger of the IP's and the account's recent failure counts `n`, at most
    /// [`FAILURE_DELAY_MS_MAX`]; 0 when neither has failed recently.
    pub fn delay_ms(&self, ip: IpAddr, account: &str, now_ms: u64, base_ms: u64) -> u64 {
        match self.failures(ip, account, now_ms) {
            0 => 0,
            n => {
                let factor = 1u64.checked_shl(n - 1).unwrap_or(u64::MAX);
                base_ms.saturating_mul(factor).min(FAILURE_DELAY_MS_MAX)
            }
        }
    }

    /// Counts one failed login for `ip` and for `account`.
    pub fn record_failure(&mut self, ip: IpAddr, account: &str, now_ms: u64) {
        self.expire(now_ms);
        self.bump(FailureKey::Ip(ip), now_ms);
        if let Some(key) = FailureKey::account(account) {
            self.bump(key, now_ms);
        }
    }

    /// A login succeeded: forgets the account's failures. The IP's count stays until it
    /// expires, so one valid account does not reset an address that guesses others.
    pub fn record_success(&mut self, _ip: IpAddr, account: &str) {
        if let Some(key) = FailureKey::account(account) {
            if let Some(entry) = self.entries.remove(&key) {
                self.by_age.remove(&(entry.last_ms, entry.seq));
            }
        }
    }

    fn count(&self, key: &FailureKey, now_ms: u64) -> u32 {
        match self.entries.get(key) {
            Some(entry) if !expired(entry.last_ms, now_ms) => entry.count,
            _ => 0,
        }
    }

    fn bump(&mut self, key: FailureKey, now_ms: u64) {
        self.seq += 1;
        let seq = self.seq;
        let count = match self.entries.get(&key) {
            Some(old) => {
                self.by_age.remove(&(old.last_ms, old.seq));
                if expired(old.last_ms, now_ms) {
                    1
                } else {
                    old.count.saturating_add(1)
                }
            }
            None => {
                while self.entries.len() >= FAILURE_ENTRIES_MAX {
                    let Some((_, oldest)) = self.by_age.pop_first() else {
                        break;
                    };
                    self.entries.remove(&oldest);
                }
                1
            }
        };
        self.by_age.insert((now_ms, seq), key.clone());
        self.entries.insert(
            key,
            FailureEntry {
                count,
                last_ms: now_ms,
                seq,
            },
        );
    }

    /// Drops entries whose last failure is older than the window.
    fn expire(&mut self, now_ms: u64) {
        while let Some(entry) = self.by_age.first_entry() {
            if !expired(entry.key().0, now_ms) {
                break;
            }
            let key = entry.remove();
            self.entries.remove(&key);
        }
    }
}

fn expired(last_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(last_ms) >= FAILURE_WINDOW_MS
}

/// Sleeps the configured failure delay.
pub async fn failure_delay(ms: u64) {
    if ms > 0 {
        glommio::timer::sleep(Duration::from_millis(ms)).await;
    }
}

impl crate::runtime::core::Core {
    /// Checks a login from `peer`. On failure the reply is delayed before this returns,
    /// whatever the reason (unknown user, wrong password): `auth.failure_delay_ms`, doubled
    /// for each recent failure from the same client IP or on the same account on this core
    /// ([`FailureTable`]), up to [`FAILURE_DELAY_MS_MAX`].
    pub async fn authenticate(
        &self,
        peer: std::net::IpAddr,
        username: &str,
        password: &Secret,
    ) -> Result<String, AuthFailure> {
        let result = self
            .logins
            .verify(username, password, |u| self.directory.password_hash(u))
            .await;
        match &result {
            Ok(user) => self.login_failures.borrow_mut().record_success(peer, user),
            Err(_) => {
                let account =
                    normalize_address(username).unwrap_or_else(|_| username.to_ascii_lowercase());
                let now_ms = crate::time::unix_now_ms();
                let delay_ms = {
                    let mut failures = self.login_failures.borrow_mut();
                    failures.record_failure(peer, &account, now_ms);
                    failures.delay_ms(peer, &account, now_ms, self.config.auth.failure_delay_ms)
                };
                failure_delay(delay_ms).await;
            }
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

    // ---- FailureTable ----

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn failure_delay_doubles_from_the_base_up_to_the_cap() {
        let mut t = FailureTable::new();
        assert_eq!(t.delay_ms(ip(1), "a@x.test", 0, 500), 0);
        let mut want = Vec::new();
        let mut got = Vec::new();
        for n in 1..=8u32 {
            t.record_failure(ip(1), "a@x.test", u64::from(n));
            got.push(t.delay_ms(ip(1), "a@x.test", u64::from(n), 500));
            want.push((500u64 << (n - 1)).min(FAILURE_DELAY_MS_MAX));
        }
        assert_eq!(got, want);
        assert_eq!(got[0], 500);
        assert_eq!(got[7], FAILURE_DELAY_MS_MAX);
        // Many more failures never overflow; a zero base means no delay.
        for n in 0..200 {
            t.record_failure(ip(1), "a@x.test", 10 + n);
        }
        assert_eq!(t.failures(ip(1), "a@x.test", 300), 208);
        assert_eq!(t.delay_ms(ip(1), "a@x.test", 300, 1), FAILURE_DELAY_MS_MAX);
        assert_eq!(t.delay_ms(ip(1), "a@x.test", 300, 0), 0);
    }

    #[test]
    fn failure_delay_uses_the_larger_of_ip_and_account() {
        let mut t = FailureTable::new();
        // One address guessing many accounts.
        for n in 0..4u8 {
            t.record_failure(ip(1), &format!("user{n}@x.test"), 1);
        }
        assert_eq!(t.delay_ms(ip(1), "new@x.test", 2, 100), 800);
        assert_eq!(t.delay_ms(ip(9), "user0@x.test", 2, 100), 100);
        // One account guessed from many addresses (case does not matter).
        for n in 10..13u8 {
            t.record_failure(ip(n), "Victim@X.test", 1);
        }
        assert_eq!(t.delay_ms(ip(200), "victim@x.test", 2, 100), 400);
        assert_eq!(t.delay_ms(ip(200), "other@x.test", 2, 100), 0);
        // IPv6 and IPv4 addresses are separate keys.
        assert_eq!(t.delay_ms("2001:db8::1".parse().unwrap(), "", 2, 100), 0);
    }

    #[test]
    fn failures_are_forgotten_after_the_window() {
        let mut t = FailureTable::new();
        t.record_failure(ip(1), "a@x.test", 1_000);
        t.record_failure(ip(1), "a@x.test", 2_000);
        let last = 2_000 + FAILURE_WINDOW_MS;
        assert_eq!(t.failures(ip(1), "a@x.test", last - 1), 2);
        assert_eq!(t.failures(ip(1), "a@x.test", last), 0);
        assert_eq!(t.delay_ms(ip(1), "a@x.test", last, 100), 0);
        // A new failure after the window starts again at one.
        t.record_failure(ip(1), "a@x.test", last);
        assert_eq!(t.failures(ip(1), "a@x.test", last), 1);
        // Expired entries are dropped when the next failure is recorded.
        t.record_failure(ip(2), "b@x.test", last + FAILURE_WINDOW_MS);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn success_forgets_the_account_but_not_the_ip() {
        let mut t = FailureTable::new();
        for now in 0..3 {
            t.record_failure(ip(1), "a@x.test", now);
        }
        t.record_success(ip(1), "A@x.test");
        assert_eq!(t.failures(ip(7), "a@x.test", 5), 0);
        assert_eq!(t.failures(ip(1), "other@x.test", 5), 3);
        assert_eq!(t.len(), 1);
        // The IP's entry still expires and is evicted normally afterwards.
        t.record_failure(ip(2), "", 5 + FAILURE_WINDOW_MS);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn failure_table_is_bounded_and_evicts_the_oldest() {
        let mut t = FailureTable::new();
        let total = FAILURE_ENTRIES_MAX + 100;
        for n in 0..total {
            let addr = IpAddr::from((n as u32).to_be_bytes());
            t.record_failure(addr, "", n as u64);
            assert!(t.len() <= FAILURE_ENTRIES_MAX);
        }
        assert_eq!(t.len(), FAILURE_ENTRIES_MAX);
        let now = total as u64;
        let addr = |n: usize| IpAddr::from((n as u32).to_be_bytes());
        for n in 0..100 {
            assert_eq!(t.failures(addr(n), "", now), 0, "{n} should be evicted");
        }
        for n in [100, total / 2, total - 1] {
            assert_eq!(t.failures(addr(n), "", now), 1, "{n} should be kept");
        }
        // A failing key is refreshed, so it outlives keys that stopped failing.
        t.record_failure(addr(100), "", now);
        t.record_failure(addr(total), "", now + 1);
        assert_eq!(t.failures(addr(100), "", now + 1), 2);
        assert_eq!(t.failures(addr(101), "", now + 1), 0);
        // Long account names are cut at the credential limit, on a char boundary.
        let long = "é".repeat(CREDENTIAL_BYTES_MAX);
        t.record_failure(ip(1), &long, now + 2);
        assert_eq!(t.failures(ip(2), &long, now + 2), 1);
        assert_eq!(t.len(), FAILURE_ENTRIES_MAX);
    }
}
