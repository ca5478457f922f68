//! What the `ringmail queue` commands print: the queue as JSON (`queue list --json`, built
//! with simd-json). The text form is `store::queue::list_line`.

use simd_json::prelude::*;
use simd_json::{json, OwnedValue};

use crate::store::QueueEntry;

/// One JSON array of the entries: id, sender, arrival, attempts, next_try (null when every
/// recipient is final), last_error, and per recipient its address, state, attempts, next try
/// and error. Times are unix seconds.
pub fn list_json(entries: &[QueueEntry]) -> String {
    let list: Vec<OwnedValue> = entries
        .iter()
        .map(|e| {
            let recipients: Vec<OwnedValue> = e
                .recipients
                .iter()
                .map(|r| {
                    json!({
                        "address": r.address.clone(),
                        "state": r.state.name(),
                        "attempts": r.attempts,
                        "next_try": r.next_try,
                        "error": r.error.clone(),
                    })
                })
                .collect();
            json!({
                "id": e.id_text(),
                "sender": e.sender.clone(),
                "arrival": e.arrival,
                "attempts": e.attempts(),
                "next_try": e.next_try(),
                "last_error": e.last_error.clone(),
                "authenticated": e.authenticated.clone(),
                "recipients": recipients,
            })
        })
        .collect();
    OwnedValue::from(list).encode()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BlobRef, QueuedRecipient, RecipientState};

    #[test]
    fn json_lists_entries_and_parses_back() {
        let entry = QueueEntry {
            id: (1 << 48) | 0x2a,
            blob: BlobRef {
                core: 1,
                segment: 1,
                offset: 0,
                len: 1,
            },
            smtp_id: "X".into(),
            sender: "alice@example.test".into(),
            recipients: vec![QueuedRecipient {
                address: "bob@remote.test".into(),
                notify: None,
                orcpt: None,
                state: RecipientState::Deferred,
                attempts: 2,
                next_try: 1700,
                flags: 0,
                error: "421 \"busy\"\ttry later".into(),
            }],
            smtputf8: false,
            body_8bitmime: false,
            arrival: 1000,
            authenticated: Some("alice@example.test".into()),
            ret: None,
            envid: None,
            seq_highest: 3,
            last_try: 1500,
            last_error: "421 \"busy\"\ttry later".into(),
        };
        let mut text = list_json(&[entry]).into_bytes();
        let v = simd_json::to_owned_value(&mut text).unwrap();
        let e = &v.as_array().unwrap()[0];
        assert_eq!(e.get_str("id"), Some("1-2A"));
        assert_eq!(e.get_i64("next_try"), Some(1700));
        assert_eq!(e.get_u64("attempts"), Some(2));
        let r = &e.get_array("recipients").unwrap()[0];
        assert_eq!(r.get_str("state"), Some("deferred"));
        assert_eq!(r.get_str("error"), Some("421 \"busy\"\ttry later"));
        assert_eq!(list_json(&[]), "[]");
    }
}
