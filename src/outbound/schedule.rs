//! When queued mail is tried, retried, given up on, and when its sender hears about a delay:
//! pure decisions over a [`QueueEntry`] and the clock (unix seconds), no I/O.
//!
//! - A recipient is due when it is pending or deferred and its `next_try` has come.
//! - Due recipients of one entry are grouped by destination domain: one SMTP transaction per
//!   domain carries all of them (issue 5: "multiple recipients for the same domain in one
//!   transaction").
//! - After an attempt that failed temporarily, the next try is `retry[attempts - 1]` later
//!   (the last delay repeats), with ±10 % jitter so a burst of deferrals does not come back
//!   as a burst.
//! - A recipient still not delivered `age_max` after arrival fails for good ("4.4.7 message
//!   expired"), whatever its next try.
//! - Once `delay_notice` has passed since arrival, each still-undelivered recipient whose
//!   NOTIFY asks for delays (RFC 3461: the default is FAILURE,DELAY) is reported once in a
//!   delay notice; the flag `FLAG_DELAY_NOTIFIED` remembers it. A null sender gets none.

use std::collections::BTreeMap;

use crate::store::queue::{FLAG_DELAY_NOTIFIED, NOTIFY_DELAY, NOTIFY_NEVER};
use crate::store::{QueueEntry, RecipientState};

/// The retry policy (`[relay]`), in milliseconds as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub retry_ms: Vec<u64>,
    pub age_ms_max: u64,
    pub delay_notice_ms: u64,
}

/// What to do with one entry now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Recipients to attempt now, by domain (lowercase), in recipient order.
    pub attempts: Vec<(String, Vec<usize>)>,
    /// Recipients past the maximum age: fail them (and bounce).
    pub expired: Vec<usize>,
    /// Recipients to report in a delay notice now.
    pub delay_notice: Vec<usize>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.attempts.is_empty() && self.expired.is_empty() && self.delay_notice.is_empty()
    }
}

/// The domain of an address (after the last `@`), lowercase; "" if none.
pub fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
        .unwrap_or_default()
}

fn ms_to_s_ceil(ms: u64) -> i64 {
    (ms.div_ceil(1000)).min(i64::MAX as u64) as i64
}

/// Whether a recipient's NOTIFY asks for delay notices (None: the RFC 3461 default does).
fn wants_delay(notify: Option<u8>) -> bool {
    match notify {
        None => true,
        Some(n) => n & NOTIFY_NEVER == 0 && n & NOTIFY_DELAY != 0,
    }
}

/// Decides what happens to `entry` at `now`.
pub fn plan(entry: &QueueEntry, now: i64, policy: &Policy) -> Plan {
    let mut plan = Plan::default();
    let age_s = now.saturating_sub(entry.arrival);
    let expired = age_s >= ms_to_s_ceil(policy.age_ms_max);
    let notice_due = age_s >= ms_to_s_ceil(policy.delay_notice_ms) && !entry.sender.is_empty();
    let mut by_domain: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for (i, r) in entry.recipients.iter().enumerate() {
        if r.state.is_final() {
            continue;
        }
        if expired {
            plan.expired.push(i);
            continue;
        }
        if notice_due && r.flags & FLAG_DELAY_NOTIFIED == 0 && wants_delay(r.notify) {
            // Only recipients that have been tried and are still waiting are "delayed".
            if r.state == RecipientState::Deferred {
                plan.delay_notice.push(i);
            }
        }
        if r.next_try <= now {
            let domain = domain_of(&r.address);
            if !by_domain.contains_key(&domain) {
                order.push(domain.clone());
            }
            by_domain.entry(domain).or_default().push(i);
        }
    }
    for domain in order {
        if let Some(list) = by_domain.remove(&domain) {
            plan.attempts.push((domain, list));
        }
    }
    plan
}

/// The next try after the `attempts`-th failed attempt at `now`. `jitter` in [-1, 1] scales
/// ±10 % of the delay (the caller draws it at random).
pub fn next_try(now: i64, attempts: u32, policy: &Policy, jitter: f64) -> i64 {
    let Some(&last) = policy.retry_ms.last() else {
        return now;
    };
    let index = (attempts.max(1) - 1) as usize;
    let delay_ms = policy.retry_ms.get(index).copied().unwrap_or(last) as f64;
    let jittered = delay_ms * (1.0 + 0.1 * jitter.clamp(-1.0, 1.0));
    now.saturating_add(ms_to_s_ceil(jittered.max(1000.0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::queue::{NOTIFY_FAILURE, NOTIFY_SUCCESS};
    use crate::store::{BlobRef, QueuedRecipient};

    fn policy() -> Policy {
        Policy {
            retry_ms: vec![5_000, 10_000, 60_000],
            age_ms_max: 3_600_000,
            delay_notice_ms: 600_000,
        }
    }

    fn rcpt(address: &str, state: RecipientState, next_try: i64) -> QueuedRecipient {
        QueuedRecipient {
            address: address.into(),
            notify: None,
            orcpt: None,
            state,
            attempts: 0,
            next_try,
            flags: 0,
            error: String::new(),
        }
    }

    fn entry(recipients: Vec<QueuedRecipient>) -> QueueEntry {
        QueueEntry {
            id: 1,
            blob: BlobRef {
                core: 0,
                segment: 1,
                offset: 0,
                len: 10,
            },
            smtp_id: "X".into(),
            sender: "alice@example.test".into(),
            recipients,
            smtputf8: false,
            body_8bitmime: false,
            arrival: 1000,
            authenticated: None,
            ret: None,
            envid: None,
            seq_highest: 0,
            last_try: 0,
            last_error: String::new(),
        }
    }

    #[test]
    fn due_recipients_are_grouped_by_domain_in_order() {
        let e = entry(vec![
            rcpt("a@One.test", RecipientState::Pending, 1000),
            rcpt("b@two.test", RecipientState::Deferred, 1005),
            rcpt("c@one.test.", RecipientState::Deferred, 999),
            rcpt("d@two.test", RecipientState::Delivered, 0),
            rcpt("e@two.test", RecipientState::Deferred, 2000),
            rcpt("f@three.test", RecipientState::Failed, 0),
        ]);
        let p = plan(&e, 1005, &policy());
        assert_eq!(
            p.attempts,
            vec![
                ("one.test".to_string(), vec![0, 2]),
                ("two.test".to_string(), vec![1])
            ]
        );
        assert!(p.expired.is_empty() && p.delay_notice.is_empty());
        assert!(plan(&e, 998, &policy()).attempts.is_empty());
    }

    #[test]
    fn expiry_fails_every_unfinished_recipient() {
        let e = entry(vec![
            rcpt("a@x.test", RecipientState::Deferred, 99_999),
            rcpt("b@x.test", RecipientState::Delivered, 0),
            rcpt("c@y.test", RecipientState::Pending, 0),
        ]);
        assert!(plan(&e, 1000 + 3599, &policy()).expired.is_empty());
        let p = plan(&e, 1000 + 3600, &policy());
        assert_eq!(p.expired, vec![0, 2]);
        assert!(p.attempts.is_empty());
    }

    #[test]
    fn delay_notice_once_per_recipient_and_by_notify() {
        let mut e = entry(vec![
            rcpt("a@x.test", RecipientState::Deferred, 99_999),
            rcpt("b@x.test", RecipientState::Deferred, 99_999),
            rcpt("c@x.test", RecipientState::Deferred, 99_999),
            rcpt("d@x.test", RecipientState::Deferred, 99_999),
            rcpt("e@x.test", RecipientState::Pending, 99_999),
        ]);
        e.recipients[1].notify = Some(NOTIFY_FAILURE | NOTIFY_SUCCESS);
        e.recipients[2].notify = Some(NOTIFY_NEVER);
        e.recipients[3].flags = FLAG_DELAY_NOTIFIED;
        assert!(plan(&e, 1000 + 599, &policy()).delay_notice.is_empty());
        assert_eq!(plan(&e, 1000 + 600, &policy()).delay_notice, vec![0]);
        e.recipients[0].notify = Some(NOTIFY_DELAY);
        assert_eq!(plan(&e, 1000 + 600, &policy()).delay_notice, vec![0]);
        e.sender.clear();
        assert!(plan(&e, 1000 + 600, &policy()).delay_notice.is_empty());
    }

    #[test]
    fn retry_delays_follow_the_schedule_with_bounded_jitter() {
        let p = policy();
        assert_eq!(next_try(100, 1, &p, 0.0), 105);
        assert_eq!(next_try(100, 2, &p, 0.0), 110);
        assert_eq!(next_try(100, 3, &p, 0.0), 160);
        assert_eq!(next_try(100, 9, &p, 0.0), 160, "the last delay repeats");
        assert_eq!(next_try(100, 3, &p, 1.0), 166);
        assert_eq!(next_try(100, 3, &p, -1.0), 154);
        assert_eq!(next_try(100, 3, &p, 7.0), 166, "jitter is clamped");
        let tiny = Policy {
            retry_ms: vec![10],
            ..policy()
        };
        assert_eq!(next_try(100, 1, &tiny, -1.0), 101, "at least a second");
    }

    #[test]
    fn domains() {
        assert_eq!(domain_of("User@Example.TEST."), "example.test");
        assert_eq!(domain_of("\"a@b\"@c.test"), "c.test");
        assert_eq!(domain_of("nodomain"), "");
    }
}
