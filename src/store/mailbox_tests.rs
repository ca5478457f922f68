//! Tests of the IMAP/POP3 operations ([`super::ops`]): accounts, mailboxes, keywords,
//! flags (UNCHANGEDSINCE, concurrent changes), expunge, copy/move, the change hook, and
//! for each the state after a restart, from a full meta scan and from a checkpoint,
//! including records of one user spread over several cores' logs.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::future::Future;
use std::path::Path;
use std::rc::Rc;

use super::checkpoint;
use super::commit::{Fault, FaultStage};
use super::engine::LogKind;
use super::flags::{self, special_use};
use super::index::MailboxStatus;
use super::record::{encode_record, RecordType};
use super::segment::{self, SegmentHeader, SegmentKind};
use super::test_util::*;
use super::*;

// ---------------------------------------------------------------------------------------
// Helpers

type MailboxAttrsView = BTreeMap<(String, String), (u64, u8, Vec<(u8, String)>)>;
type AccountsView = BTreeMap<String, (bool, Vec<String>)>;
type Work = std::pin::Pin<Box<dyn Future<Output = ()>>>;

/// Everything a restart must bring back: statuses (with counters), messages, ids,
/// special-use, keywords, account init and subscriptions.
#[derive(Debug, PartialEq)]
struct State {
    canon: Canon,
    mailboxes: MailboxAttrsView,
    accounts: AccountsView,
}

fn state_of<'a>(cores: impl IntoIterator<Item = &'a CoreIndex>) -> State {
    let mut s = State {
        canon: Canon::new(),
        mailboxes: MailboxAttrsView::new(),
        accounts: AccountsView::new(),
    };
    for c in cores {
        s.canon.extend(c.canonical());
        let (m, a) = c.canonical_attrs();
        s.mailboxes.extend(m);
        s.accounts.extend(a);
    }
    s
}

fn live_state(store: &Store) -> State {
    store.with_index(|i| state_of([i]))
}

/// bob and dave on core 1, everyone else on core 0 (with two cores).
fn owner_two(user: &str) -> usize {
    usize::from(matches!(user, "bob" | "dave"))
}

async fn open(data: &Path) -> Rc<Store> {
    let rec = recover(data, 1, &owner0).unwrap();
    let idx = rec.cores.into_iter().next().unwrap();
    Store::open(cfg(data, 0), idx).await.unwrap()
}

async fn blob(store: &Store, text: &str) -> BlobRef {
    store.append_blob(text.as_bytes()).await.unwrap()
}

fn delivery(user: &str, mailbox: &str, blob: BlobRef) -> Delivery {
    Delivery {
        user: user.into(),
        mailbox: mailbox.into(),
        blob,
        internal_date: 1_700_000_000,
    }
}

/// Recovery by a full meta scan and (if one is there) from the newest checkpoint both
/// give `live`.
fn assert_recovers(data: &Path, live: &State) {
    let full = full_scan(data, 1, &owner0);
    assert_eq!(&state_of(&full.cores), live, "full scan");
    let fast = recover(data, 1, &owner0).unwrap();
    assert_eq!(
        &state_of(&fast.cores),
        live,
        "from checkpoint {:?} ({})",
        fast.report.checkpoint_generation,
        fast.report.checkpoint_note
    );
}

fn uids_of(store: &Store, user: &str, mailbox: &str) -> Vec<u32> {
    store
        .with_mailbox(user, mailbox, |m| {
            m.messages().iter().map(|e| e.uid).collect()
        })
        .unwrap_or_default()
}

fn status(store: &Store, user: &str, mailbox: &str) -> MailboxStatus {
    store.with_mailbox(user, mailbox, |m| m.status()).unwrap()
}

fn flags_of(store: &Store, user: &str, mailbox: &str, uid: u32) -> u32 {
    store.message(user, mailbox, uid).unwrap().flags
}

fn kw(store: &Store, user: &str, mailbox: &str, name: &str) -> u32 {
    store
        .with_mailbox(user, mailbox, |m| m.keyword_bit(name))
        .flatten()
        .map_or(0, flags::keyword_flag)
}

fn change(uid: u32, mode: FlagMode, mask: u32) -> FlagChange {
    FlagChange {
        uid,
        mode,
        mask,
        unchanged_since: None,
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------
// Accounts

#[test]
fn ensure_account_creates_the_defaults_once_and_never_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let live = run_local({
        let data = data.clone();
        move || async move {
            let store = open(&data).await;
            // Mail arrived before the first login, and a "Sent" without special-use
            // exists: both are kept (same ids), Sent gets its bit.
            let b = blob(&store, "Subject: early\r\n\r\n").await;
            store
                .deliver(&[delivery("alice", "INBOX", b)])
                .await
                .unwrap();
            store.create_mailbox("alice", "Sent", 0).await.unwrap();
            let inbox = store.with_mailbox("alice", "INBOX", |m| m.id()).unwrap();
            let sent = store.with_mailbox("alice", "Sent", |m| m.id()).unwrap();
            assert!(!store.account_initialized("alice"));
            store.ensure_account("alice").await.unwrap();
            let boxes = store.mailboxes("alice");
            let got: Vec<(&str, u8)> = boxes
                .iter()
                .map(|m| (m.name.as_str(), m.special_use))
                .collect();
            assert_eq!(
                got,
                [
                    ("Drafts", special_use::DRAFTS),
                    ("INBOX", 0),
                    ("Junk", special_use::JUNK),
                    ("Sent", special_use::SENT),
                    ("Trash", special_use::TRASH)
                ]
            );
            assert_eq!((boxes[1].id, boxes[1].status.messages), (inbox, 1));
            assert_eq!(boxes[3].id, sent);
            assert_eq!(
                store.subscriptions("alice"),
                names(&["Drafts", "INBOX", "Junk", "Sent", "Trash"])
            );
            assert!(store.account_initialized("alice"));
            // The next logins do no I/O.
            let records = store.stats().meta.records;
            store.ensure_account("alice").await.unwrap();
            assert_eq!(store.stats().meta.records, records);
            // A deleted Trash stays deleted.
            store.delete_mailbox("alice", "Trash").await.unwrap();
            store.ensure_account("alice").await.unwrap();
            assert!(store.with_mailbox("alice", "Trash", |_| ()).is_none());
            // Concurrent first logins initialise once: 5 creates, 4 special-use records,
            // 5 subscriptions, 1 account init.
            let before = store.stats().meta.records;
            let tasks: Vec<_> = (0..5)
                .map(|_| {
                    let s = store.clone();
                    glommio::spawn_local(async move { s.ensure_account("carol").await })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            assert_eq!(store.stats().meta.records - before, 15);
            assert_eq!(store.mailboxes("carol").len(), 5);
            assert_eq!(store.inner.user_locks.held_count(), 0);
            store.flush().await.unwrap();
            live_state(&store)
        }
    });
    assert_recovers(&data, &live);
    run_local(move || async move {
        let store = open(&data).await;
        assert!(store.account_initialized("alice"));
        store.ensure_account("alice").await.unwrap();
        store.ensure_account("carol").await.unwrap();
        assert_eq!(store.stats().meta.records, 0);
        assert!(store.with_mailbox("alice", "Trash", |_| ()).is_none());
        assert_eq!(store.mailboxes("alice").len(), 4);
    });
}

// ---------------------------------------------------------------------------------------
// Mailboxes

#[test]
fn create_mailbox_checks_names_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let (live, last_validity) = run_local({
        let data = data.clone();
        move || async move {
            let store = open(&data).await;
            // "inbox" in any case is INBOX.
            let inbox = store.create_mailbox("alice", "inbox", 0).await.unwrap();
            assert!(store.with_mailbox("alice", "INBOX", |_| ()).is_some());
            assert!(store.with_mailbox("alice", "Inbox", |_| ()).is_some());
            assert!(matches!(
                store.create_mailbox("alice", "INBOX", 0).await,
                Err(StoreError::AlreadyExists { .. })
            ));
            let work = store
                .create_mailbox("alice", "Archive/2025 Ünïcode", special_use::ARCHIVE)
                .await
                .unwrap();
            assert!(work.uid_validity > inbox.uid_validity);
            assert_eq!((work.messages, work.uid_next, work.size), (0, 1, 0));
            assert!(matches!(
                store
                    .create_mailbox("alice", "Archive/2025 Ünïcode", 0)
                    .await,
                Err(StoreError::AlreadyExists { .. })
            ));
            let too_long = "x".repeat(MAILBOX_NAME_BYTES_MAX + 1);
            for bad in ["", "a\r\nb", "nul\0", too_long.as_str()] {
                assert!(
                    matches!(
                        store.create_mailbox("alice", bad, 0).await,
                        Err(StoreError::InvalidName { .. })
                    ),
                    "{bad:?}"
                );
            }
            assert!(matches!(
                store.create_mailbox("alice", "x", 0x80).await,
                Err(StoreError::InvalidName { .. })
            ));
            let long = "y".repeat(MAILBOX_NAME_BYTES_MAX);
            store.create_mailbox("alice", &long, 0).await.unwrap();
            // Concurrent creates of one name: exactly one wins.
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let s = store.clone();
                    glommio::spawn_local(async move { s.create_mailbox("alice", "Race", 0).await })
                })
                .collect();
            let mut ok = 0;
            for t in tasks {
                match t.await {
                    Ok(_) => ok += 1,
                    Err(StoreError::AlreadyExists { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(ok, 1);
            let info = store.mailboxes("alice");
            assert_eq!(info.len(), 4);
            let by_id = store.mailbox_by_id(info[0].id).unwrap();
            assert_eq!(by_id, info[0]);
            let last = status(&store, "alice", "Race").uid_validity;
            (live_state(&store), last)
        }
    });
    assert_recovers(&data, &live);
    // After a restart new UIDVALIDITYs are still above every one handed out.
    run_local(move || async move {
        let store = open(&data).await;
        let s = store.create_mailbox("alice", "After", 0).await.unwrap();
        assert!(s.uid_validity > last_validity);
    });
}

#[test]
fn delete_then_recreate_gets_a_new_id_and_greater_uidvalidity() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let (live, old) = run_local({
        let data = data.clone();
        move || async move {
            let store = open(&data).await;
            store.ensure_account("alice").await.unwrap();
            store.create_mailbox("alice", "Lists", 0).await.unwrap();
            store
                .create_mailbox("alice", "Lists/rust", 0)
                .await
                .unwrap();
            let old = store
                .with_mailbox("alice", "Lists", |m| (m.id(), m.uid_validity()))
                .unwrap();
            for i in 0..3 {
                let b = blob(&store, &format!("Subject: old {i}\r\n\r\n")).await;
                store
                    .append("alice", "Lists", b, flags::SEEN, 1000 + i)
                    .await
                    .unwrap();
            }
            // A checkpoint while the old mailbox exists.
            store.flush().await.unwrap();
            store.delete_mailbox("alice", "Lists").await.unwrap();
            assert!(store.with_mailbox("alice", "Lists", |_| ()).is_none());
            assert!(store.mailbox_by_id(old.0).is_none());
            assert!(store.messages("alice", "Lists").is_empty());
            // The child stays.
            assert!(store.with_mailbox("alice", "Lists/rust", |_| ()).is_some());
            assert!(matches!(
                store.delete_mailbox("alice", "Lists").await,
                Err(StoreError::NoSuchMailbox { .. })
            ));
            assert!(matches!(
                store.delete_mailbox("alice", "inbox").await,
                Err(StoreError::Forbidden { .. })
            ));
            let b = blob(&store, "Subject: new\r\n\r\n").await;
            assert!(matches!(
                store.append("alice", "Lists", b, 0, 0).await,
                Err(StoreError::NoSuchMailbox { .. })
            ));
            let again = store.create_mailbox("alice", "Lists", 0).await.unwrap();
            let new_id = store.with_mailbox("alice", "Lists", |m| m.id()).unwrap();
            assert_ne!(new_id, old.0);
            assert!(again.uid_validity > old.1);
            assert_eq!(again.messages, 0);
            let (uid, _, validity) = store.append("alice", "Lists", b, 0, 7).await.unwrap();
            assert_eq!((uid, validity), (1, again.uid_validity));
            (live_state(&store), old)
        }
    });
    // From the full scan and from the checkpoint taken before the delete: the old
    // messages do not come back, the new mailbox has its own id and UIDVALIDITY.
    assert_recovers(&data, &live);
    let fast = recover(&data, 1, &owner0).unwrap();
    assert_eq!(fast.report.checkpoint_generation, Some(1));
    let lists = fast.cores[0].mailbox("alice", "Lists").unwrap();
    assert_ne!(lists.id(), old.0);
    assert_eq!(lists.messages().len(), 1);
    assert!(fast.cores[0].mailbox_by_id(old.0).is_none());
    let live = run_local({
        let data = data.clone();
        move || async move {
            let store = open(&data).await;
            let before = status(&store, "alice", "Lists").uid_validity;
            store.delete_mailbox("alice", "Lists").await.unwrap();
            let s = store.create_mailbox("alice", "Lists", 0).await.unwrap();
            assert!(s.uid_validity > before);
            // A checkpoint after the delete.
            store.flush().await.unwrap();
            live_state(&store)
        }
    });
    assert_recovers(&data, &live);
}

#[test]
fn deleted_mailbox_stays_deleted_when_a_checkpoint_makes_recovery_reread_its_create() {
    // bob's "Gone" is created on core 1 (two cores) and deleted on core 0 (one core). A
    // checkpoint that covers core 0's log (with the delete) but names no position for
    // core 1's log makes recovery read core 1's log again from its start, create and
    // message of "Gone" included: the deleted ids it carries keep "Gone" deleted.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let rec = recover(&data, 2, &owner_two).unwrap();
    let i1 = rec.cores.into_iter().nth(1).unwrap();
    run_local({
        let data = data.clone();
        move || async move {
            let s = Store::open(cfg(&data, 1), i1).await.unwrap();
            s.create_mailbox("bob", "Gone", 0).await.unwrap();
            s.create_mailbox("bob", "Kept", 0).await.unwrap();
            let b = s.append_blob(b"x").await.unwrap();
            s.append("bob", "Gone", b, 0, 0).await.unwrap();
            s.append("bob", "Kept", b, 0, 0).await.unwrap();
            s.set_subscribed("bob", "Gone", true).await.unwrap();
        }
    });
    run_local({
        let data = data.clone();
        move || async move {
            let s = open(&data).await;
            s.delete_mailbox("bob", "Gone").await.unwrap();
            s.set_subscribed("bob", "Gone", false).await.unwrap();
            let b = s.append_blob(b"y").await.unwrap();
            s.append("bob", "Kept", b, flags::SEEN, 0).await.unwrap();
        }
    });
    let full = full_scan(&data, 1, &owner0);
    let live = state_of(&full.cores);
    assert!(!live
        .canon
        .contains_key(&("bob".to_string(), "Gone".to_string())));
    let own: Vec<_> = full.cores[0]
        .covered()
        .iter()
        .filter(|p| p.core == 0)
        .copied()
        .collect();
    let own_blob: Vec<_> = full.cores[0]
        .covered_blob()
        .iter()
        .filter(|p| p.core == 0)
        .copied()
        .collect();
    let bytes = checkpoint::encode(&full.cores[0], 9, own, own_blob).unwrap();
    fs::write(
        segment::core_dir(&data, 0).join(checkpoint::file_name(9)),
        bytes,
    )
    .unwrap();
    let rec = recover(&data, 1, &owner0).unwrap();
    assert_eq!(rec.report.checkpoint_generation, Some(9));
    assert!(rec.report.meta_records > 0, "core 1's log was read again");
    assert_eq!(state_of(&rec.cores), live);
}

#[test]
fn rename_moves_children_keeps_ids_and_subscriptions_follow() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let live = run_local({
        let data = data.clone();
        move || async move {
            let store = open(&data).await;
            for name in ["a", "a/b", "a/b/c", "ab", "q", "q/b", "z/b", "m/n", "m/n/n"] {
                store.create_mailbox("alice", name, 0).await.unwrap();
            }
            for name in ["a", "a/b/c", "ab", "never/created"] {
                store.set_subscribed("alice", name, true).await.unwrap();
            }
            let b = blob(&store, "Subject: in a/b\r\n\r\n").await;
            store
                .append("alice", "a/b", b, flags::FLAGGED, 5)
                .await
                .unwrap();
            let before: BTreeMap<String, (u64, u32)> = store
                .mailboxes("alice")
                .into_iter()
                .map(|m| (m.name, (m.id, m.status.uid_validity)))
                .collect();
            store.flush().await.unwrap();
            store.rename_mailbox("alice", "a", "x").await.unwrap();
            let after: BTreeMap<String, (u64, u32)> = store
                .mailboxes("alice")
                .into_iter()
                .map(|m| (m.name, (m.id, m.status.uid_validity)))
                .collect();
            assert_eq!(after["x"], before["a"]);
            assert_eq!(after["x/b"], before["a/b"]);
            assert_eq!(after["x/b/c"], before["a/b/c"]);
            assert_eq!(after["ab"], before["ab"]);
            assert!(!after.contains_key("a") && !after.contains_key("a/b"));
            assert_eq!(uids_of(&store, "alice", "x/b"), vec![1]);
            assert_eq!(
                store.subscriptions("alice"),
                names(&["ab", "never/created", "x", "x/b/c"])
            );
            // Errors.
            assert!(matches!(
                store.rename_mailbox("alice", "nope", "n2").await,
                Err(StoreError::NoSuchMailbox { .. })
            ));
            assert!(matches!(
                store.rename_mailbox("alice", "x", "ab").await,
                Err(StoreError::AlreadyExists { .. })
            ));
            assert!(matches!(
                store.rename_mailbox("alice", "x", "x").await,
                Err(StoreError::AlreadyExists { .. })
            ));
            assert!(matches!(
                store.rename_mailbox("alice", "x", "x/b/y").await,
                Err(StoreError::Forbidden { .. })
            ));
            assert!(matches!(
                store.rename_mailbox("alice", "x", "bad\nname").await,
                Err(StoreError::InvalidName { .. })
            ));
            // A child's new name is taken: nothing is renamed.
            match store.rename_mailbox("alice", "q", "z").await {
                Err(StoreError::AlreadyExists { mailbox, .. }) => assert_eq!(mailbox, "z/b"),
                other => panic!("{other:?}"),
            }
            assert!(store.with_mailbox("alice", "q", |_| ()).is_some());
            assert!(store.with_mailbox("alice", "z", |_| ()).is_none());
            // A new name that only an old name of this rename holds is free.
            let (mn, mnn) = (after["m/n"].0, after["m/n/n"].0);
            store.rename_mailbox("alice", "m/n", "m").await.unwrap();
            assert_eq!(store.with_mailbox("alice", "m", |m| m.id()), Some(mn));
            assert_eq!(store.with_mailbox("alice", "m/n", |m| m.id()), Some(mnn));
            live_state(&store)
        }
    });
    assert_recovers(&data, &live);
}

#[test]
fn renaming_inbox_moves_its_messages_to_a_new_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let live = run_local({
        let data = data.clone();
        move || async move {
            let store = open(&data).await;
            store.ensure_account("alice").await.unwrap();
            store
                .create_mailbox("alice", "INBOX/child", 0)
                .await
                .unwrap();
            let mut blobs = Vec::new();
            for i in 0..3 {
                let b = blob(&store, &format!("Subject: {i}\r\n\r\nbody {i}\r\n")).await;
                blobs.push(b);
                store
                    .deliver(&[delivery("alice", "INBOX", b)])
                    .await
                    .unwrap();
            }
            let label = store
                .keyword_bits("alice", "INBOX", &names(&["$Label1"]))
                .await
                .unwrap();
            store
                .update_flags(
                    "alice",
                    "INBOX",
                    &[change(2, FlagMode::Add, flags::SEEN | label)],
                )
                .await
                .unwrap();
            let inbox = store
                .with_mailbox("alice", "INBOX", |m| (m.id(), m.uid_validity()))
                .unwrap();
            store
                .rename_mailbox("alice", "inbox", "Old Mail")
                .await
                .unwrap();
            // INBOX stays: same id and UIDVALIDITY, empty, UIDs not reused.
            let st = status(&store, "alice", "INBOX");
            assert_eq!(
                store.with_mailbox("alice", "INBOX", |m| (m.id(), m.uid_validity())),
                Some(inbox)
            );
            assert_eq!((st.messages, st.uid_next, st.unseen, st.size), (0, 4, 0, 0));
            let old = status(&store, "alice", "Old Mail");
            assert!(old.uid_validity > inbox.1);
            assert_eq!(old.messages, 3);
            assert_eq!(old.unseen, 2);
            let moved = store.messages("alice", "Old Mail");
            assert_eq!(moved.iter().map(|m| m.uid).collect::<Vec<_>>(), [1, 2, 3]);
            let got: Vec<BlobRef> = moved.iter().map(|m| m.blob()).collect();
            assert_eq!(got, blobs);
            let label_there = kw(&store, "alice", "Old Mail", "$label1");
            assert_ne!(label_there, 0);
            assert_eq!(moved[1].flags, flags::SEEN | label_there);
            assert!(store.with_mailbox("alice", "INBOX/child", |_| ()).is_some());
            // New mail still goes to INBOX.
            let b = blob(&store, "Subject: later\r\n\r\n").await;
            assert_eq!(
                store
                    .deliver(&[delivery("alice", "INBOX", b)])
                    .await
                    .unwrap(),
                vec![4]
            );
            live_state(&store)
        }
    });
    assert_recovers(&data, &live);
}

#[test]
fn subscriptions_may_name_missing_mailboxes_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let live = run_local({
        let data = data.clone();
        move || async move {
            let store = open(&data).await;
            store
                .set_subscribed("alice", "Does/Not/Exist", true)
                .await
                .unwrap();
            store.set_subscribed("alice", "inbox", true).await.unwrap();
            store.set_subscribed("alice", "Other", true).await.unwrap();
            store.flush().await.unwrap();
            store.set_subscribed("alice", "Other", false).await.unwrap();
            // Nothing changes: no I/O.
            let records = store.stats().meta.records;
            store.set_subscribed("alice", "Other", false).await.unwrap();
            store
                .set_subscribed("alice", "Does/Not/Exist", true)
                .await
                .unwrap();
            assert_eq!(store.stats().meta.records, records);
            assert_eq!(
                store.subscriptions("alice"),
                names(&["Does/Not/Exist", "INBOX"])
            );
            assert!(store.subscriptions("nobody").is_empty());
            assert!(matches!(
                store.set_subscribed("alice", "", true).await,
                Err(StoreError::InvalidName { .. })
            ));
            live_state(&store)
        }
    });
    assert_recovers(&data, &live);
}

// ---------------------------------------------------------------------------------------
// Keywords

#[test]
fn keywords_are_case_insensitive_keep_the_first_spelling_and_stop_at_27() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let live = run_local({
        let data = data.clone();
        move || async move {
            let store = open(&data).await;
            store.create_mailbox("alice", "K", 0).await.unwrap();
            let mask = store
                .keyword_bits("alice", "K", &names(&["$Forwarded", "Work", "work"]))
                .await
                .unwrap();
            assert_eq!(mask, (1 << 5) | (1 << 6));
            let records = store.stats().meta.records;
            let again = store
                .keyword_bits("alice", "K", &names(&["WORK", "$forwarded"]))
                .await
                .unwrap();
            assert_eq!(again, mask);
            assert_eq!(store.stats().meta.records, records, "no I/O when defined");
            assert_eq!(
                store.keywords("alice", "K"),
                vec![(5, "$Forwarded".to_string()), (6, "Work".to_string())]
            );
            assert_eq!(store.keyword_bits("alice", "K", &[]).await.unwrap(), 0);
            // Concurrent definitions of one new name get one bit.
            let tasks: Vec<_> = (0..4)
                .map(|i| {
                    let s = store.clone();
                    let n = if i % 2 == 0 { "Shared" } else { "sHARED" };
                    glommio::spawn_local(
                        async move { s.keyword_bits("alice", "K", &names(&[n])).await },
                    )
                })
                .collect();
            let mut got = Vec::new();
            for t in tasks {
                got.push(t.await.unwrap());
            }
            assert!(got.iter().all(|&m| m == 1 << 7), "{got:?}");
            // Errors.
            for bad in ["", "\\Seen", "two words", "cr\r"] {
                assert!(
                    matches!(
                        store.keyword_bits("alice", "K", &names(&[bad])).await,
                        Err(StoreError::InvalidName { .. })
                    ),
                    "{bad:?}"
                );
            }
            assert!(matches!(
                store.keyword_bits("alice", "Nope", &names(&["a"])).await,
                Err(StoreError::NoSuchMailbox { .. })
            ));
            let many: Vec<String> = (0..KEYWORDS_PER_CALL_MAX + 1)
                .map(|i| format!("k{i}"))
                .collect();
            assert!(matches!(
                store.keyword_bits("alice", "K", &many).await,
                Err(StoreError::TooLarge { .. })
            ));
            store.flush().await.unwrap();
            // Fill up to 27: 3 defined, 23 more fit, then 1 more.
            let fill: Vec<String> = (0..23).map(|i| format!("fill{i}")).collect();
            store.keyword_bits("alice", "K", &fill).await.unwrap();
            let two = names(&["late1", "late2"]);
            assert!(matches!(
                store.keyword_bits("alice", "K", &two).await,
                Err(StoreError::Exhausted { .. })
            ));
            assert_eq!(store.keywords("alice", "K").len(), 26, "none of the two");
            let last = store
                .keyword_bits("alice", "K", &names(&["late1"]))
                .await
                .unwrap();
            assert_eq!(last, 1 << 31);
            assert!(matches!(
                store.keyword_bits("alice", "K", &names(&["late2"])).await,
                Err(StoreError::Exhausted { .. })
            ));
            assert_eq!(store.keywords("alice", "K").len(), flags::KEYWORDS_MAX);
            // Keywords are per mailbox.
            store.create_mailbox("alice", "L", 0).await.unwrap();
            let l = store
                .keyword_bits("alice", "L", &names(&["late2"]))
                .await
                .unwrap();
            assert_eq!(l, 1 << 5);
            live_state(&store)
        }
    });
    assert_recovers(&data, &live);
}

// ---------------------------------------------------------------------------------------
// Messages

#[test]
fn append_assigns_uids_and_keeps_counters() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let live = run_local({
        let data = data.clone();
        move || async move {
            let store = open(&data).await;
            store.ensure_account("alice").await.unwrap();
            let b1 = blob(&store, "12345").await;
            let b2 = blob(&store, "1234567890").await;
            let (uid1, ms1, v) = store
                .append("alice", "Drafts", b1, flags::DRAFT | flags::SEEN, 11)
                .await
                .unwrap();
            // Names other than INBOX are case-sensitive.
            assert!(matches!(
                store
                    .append("alice", "drafts", b2, flags::DELETED, 12)
                    .await,
                Err(StoreError::NoSuchMailbox { .. })
            ));
            let (uid2, ms2, v2) = store
                .append("alice", "Drafts", b2, flags::DELETED, 12)
                .await
                .unwrap();
            assert_eq!((uid1, uid2), (1, 2));
            assert!(ms2 > ms1);
            assert_eq!(v, v2);
            let st = status(&store, "alice", "Drafts");
            assert_eq!(st.uid_validity, v);
            assert_eq!(st.highest_modseq, ms2);
            assert_eq!((st.messages, st.unseen, st.deleted, st.size), (2, 1, 1, 15));
            let m = store.message("alice", "Drafts", 1).unwrap();
            assert_eq!((m.blob(), m.internal_date, m.modseq), (b1, 11, ms1));
            assert!(matches!(
                store.append("alice", "Nope", b1, 0, 0).await,
                Err(StoreError::NoSuchMailbox { .. })
            ));
            assert!(store.message("alice", "Drafts", 3).is_none());
            live_state(&store)
        }
    });
    assert_recovers(&data, &live);
}

#[test]
fn update_flags_modes_unchangedsince_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let live = run_local({
        let data = data.clone();
        move || async move {
            let store = open(&data).await;
            store.create_mailbox("alice", "F", 0).await.unwrap();
            let b = blob(&store, "abc").await;
            for f in [flags::SEEN, 0, flags::SEEN | flags::DELETED] {
                store.append("alice", "F", b, f, 0).await.unwrap();
            }
            let st = status(&store, "alice", "F");
            assert_eq!((st.unseen, st.deleted, st.size), (1, 1, 9));
            store.flush().await.unwrap();
            let ms3 = store.message("alice", "F", 3).unwrap().modseq;
            let out = store
                .update_flags(
                    "alice",
                    "F",
                    &[
                        change(1, FlagMode::Remove, flags::SEEN),
                        change(2, FlagMode::Add, flags::SEEN | flags::FLAGGED),
                        change(3, FlagMode::Replace, flags::SEEN),
                        change(99, FlagMode::Add, flags::SEEN),
                        // Builds on the change to UID 2 above (in flight): no change.
                        change(2, FlagMode::Add, flags::SEEN),
                        change(3, FlagMode::Replace, flags::SEEN | flags::DELETED),
                    ],
                )
                .await
                .unwrap();
            let modseqs: Vec<u64> = out
                .iter()
                .filter_map(|o| match o {
                    FlagOutcome::Changed { modseq, .. } => Some(*modseq),
                    _ => None,
                })
                .collect();
            assert_eq!(modseqs.len(), 4);
            assert!(modseqs.windows(2).all(|w| w[0] < w[1]), "{modseqs:?}");
            assert!(modseqs[0] > ms3);
            assert_eq!(
                out,
                vec![
                    FlagOutcome::Changed {
                        uid: 1,
                        flags: 0,
                        modseq: modseqs[0]
                    },
                    FlagOutcome::Changed {
                        uid: 2,
                        flags: flags::SEEN | flags::FLAGGED,
                        modseq: modseqs[1]
                    },
                    FlagOutcome::Changed {
                        uid: 3,
                        flags: flags::SEEN,
                        modseq: modseqs[2]
                    },
                    FlagOutcome::Missing { uid: 99 },
                    FlagOutcome::Unchanged {
                        uid: 2,
                        flags: flags::SEEN | flags::FLAGGED,
                        modseq: modseqs[1]
                    },
                    FlagOutcome::Changed {
                        uid: 3,
                        flags: flags::SEEN | flags::DELETED,
                        modseq: modseqs[3]
                    },
                ]
            );
            // One group commit for all of them.
            let st = status(&store, "alice", "F");
            assert_eq!(st.highest_modseq, modseqs[3]);
            assert_eq!((st.unseen, st.deleted, st.size), (1, 1, 9));
            assert_eq!(
                flags_of(&store, "alice", "F", 3),
                flags::SEEN | flags::DELETED
            );
            // UNCHANGEDSINCE (RFC 7162): below the message's modseq fails, at it works.
            let ms1 = store.message("alice", "F", 1).unwrap().modseq;
            let guarded = |since| FlagChange {
                uid: 1,
                mode: FlagMode::Add,
                mask: flags::ANSWERED,
                unchanged_since: Some(since),
            };
            let out = store
                .update_flags("alice", "F", &[guarded(ms1 - 1)])
                .await
                .unwrap();
            assert_eq!(out, vec![FlagOutcome::Modified { uid: 1 }]);
            let out = store
                .update_flags("alice", "F", &[guarded(ms1)])
                .await
                .unwrap();
            assert!(
                matches!(out[0], FlagOutcome::Changed { uid: 1, flags: f, .. } if f == flags::ANSWERED)
            );
            assert!(matches!(
                store.update_flags("alice", "Nope", &[guarded(0)]).await,
                Err(StoreError::NoSuchMailbox { .. })
            ));
            // The old single-message API goes the same way.
            let m = store.set_flags("alice", "F", 2, 0).await.unwrap();
            assert_eq!(status(&store, "alice", "F").highest_modseq, m);
            assert_eq!(status(&store, "alice", "F").unseen, 2);
            live_state(&store)
        }
    });
    assert_recovers(&data, &live);
}

#[test]
fn concurrent_flag_changes_never_lose_one_another() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let live = run_local({
        let data = data.clone();
        move || async move {
            let store = open(&data).await;
            store.create_mailbox("alice", "C", 0).await.unwrap();
            let b = blob(&store, "m").await;
            store.append("alice", "C", b, 0, 0).await.unwrap();
            store.append("alice", "C", b, 0, 0).await.unwrap();
            let kws: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
            let all = store.keyword_bits("alice", "C", &kws).await.unwrap();
            // 20 sessions each add one keyword to UID 1 at once: all 20 stay.
            let tasks: Vec<_> = (0..20)
                .map(|i| {
                    let s = store.clone();
                    let bit = 1u32 << (5 + i);
                    glommio::spawn_local(async move {
                        s.update_flags("alice", "C", &[change(1, FlagMode::Add, bit)])
                            .await
                    })
                })
                .collect();
            for t in tasks {
                assert!(matches!(t.await.unwrap()[0], FlagOutcome::Changed { .. }));
            }
            assert_eq!(flags_of(&store, "alice", "C", 1), all);
            // 10 sessions store with UNCHANGEDSINCE the same modseq: one wins.
            let since = store.message("alice", "C", 2).unwrap().modseq;
            let tasks: Vec<_> = (0..10)
                .map(|i| {
                    let s = store.clone();
                    glommio::spawn_local(async move {
                        let c = FlagChange {
                            uid: 2,
                            mode: FlagMode::Replace,
                            mask: 1 << (5 + i),
                            unchanged_since: Some(since),
                        };
                        s.update_flags("alice", "C", &[c]).await
                    })
                })
                .collect();
            let mut changed = 0;
            for t in tasks {
                match t.await.unwrap()[0] {
                    FlagOutcome::Changed { .. } => changed += 1,
                    FlagOutcome::Modified { uid: 2 } => {}
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(changed, 1);
            store.with_mailbox("alice", "C", |m| assert!(m.pending.is_empty()));
            live_state(&store)
        }
    });
    assert_recovers(&data, &live);
}

#[test]
fn a_failed_flag_batch_leaves_no_pending_state_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    run_local(move || async move {
        let store = open(&data).await;
        store.create_mailbox("alice", "P", 0).await.unwrap();
        let b = blob(&store, "m").await;
        store.append("alice", "P", b, 0, 0).await.unwrap();
        store.inject_fault(
            LogKind::Meta,
            Some(Fault {
                stage: FaultStage::Sync,
                errno: libc::EIO,
                batches: 1,
            }),
        );
        assert!(store
            .update_flags("alice", "P", &[change(1, FlagMode::Add, flags::SEEN)])
            .await
            .is_err());
        store.with_mailbox("alice", "P", |m| assert!(m.pending.is_empty()));
        assert_eq!(flags_of(&store, "alice", "P", 1), 0);
        // The next change starts from the durable flags again.
        let out = store
            .update_flags("alice", "P", &[change(1, FlagMode::Add, flags::FLAGGED)])
            .await
            .unwrap();
        assert!(matches!(out[0], FlagOutcome::Changed { flags: f, .. } if f == flags::FLAGGED));
        assert!(matches!(
            store.expunge_uids("alice", "P", &[1]).await,
            Ok(v) if v == [1]
        ));
    });
}

#[test]
fn expunge_uids_skips_missing_and_never_reuses_uids() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let live = run_local({
        let data = data.clone();
        move || async move {
            let store = open(&data).await;
            let b = blob(&store, "0123456789").await;
            for _ in 0..5 {
                store
                    .deliver(&[delivery("alice", "INBOX", b)])
                    .await
                    .unwrap();
            }
            store
                .set_flags("alice", "INBOX", 4, flags::SEEN)
                .await
                .unwrap();
            store.flush().await.unwrap();
            let batches = store.stats().meta.batches;
            let gone = store
                .expunge_uids("alice", "INBOX", &[4, 2, 99, 2])
                .await
                .unwrap();
            assert_eq!(gone, vec![2, 4]);
            assert_eq!(store.stats().meta.batches, batches + 1, "one group commit");
            assert_eq!(uids_of(&store, "alice", "INBOX"), vec![1, 3, 5]);
            let st = status(&store, "alice", "INBOX");
            assert_eq!(
                (st.messages, st.unseen, st.size, st.uid_next),
                (3, 3, 30, 6)
            );
            assert!(store
                .expunge_uids("alice", "INBOX", &[2, 4])
                .await
                .unwrap()
                .is_empty());
            assert!(matches!(
                store.expunge_uids("alice", "Nope", &[1]).await,
                Err(StoreError::NoSuchMailbox { .. })
            ));
            live_state(&store)
        }
    });
    assert_recovers(&data, &live);
    run_local(move || async move {
        let store = open(&data).await;
        let b = blob(&store, "later").await;
        assert_eq!(
            store
                .deliver(&[delivery("alice", "INBOX", b)])
                .await
                .unwrap(),
            vec![6]
        );
    });
}

#[test]
fn copy_shares_blobs_keeps_flags_and_remaps_keywords() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let live = run_local({
        let data = data.clone();
        move || async move {
            let store = open(&data).await;
            store.create_mailbox("alice", "A", 0).await.unwrap();
            store.create_mailbox("alice", "B", 0).await.unwrap();
            // A: x = bit 5, y = bit 6; B knows only "Y", at bit 5.
            let xy = store
                .keyword_bits("alice", "A", &names(&["x", "y"]))
                .await
                .unwrap();
            assert_eq!(xy, 0b110_0000);
            store
                .keyword_bits("alice", "B", &names(&["Y"]))
                .await
                .unwrap();
            let bodies = ["one", "two two", "three three three"];
            let mut blobs = Vec::new();
            for (i, body) in bodies.iter().enumerate() {
                let b = blob(&store, body).await;
                blobs.push(b);
                let f = [flags::SEEN | 1 << 5, flags::FLAGGED | 1 << 6, 0][i];
                store
                    .append("alice", "A", b, f, 100 + i as i64)
                    .await
                    .unwrap();
            }
            let out = store
                .copy("alice", "A", "B", &[1, 3, 77, 2], false)
                .await
                .unwrap();
            assert_eq!(out.pairs, vec![(1, 1), (3, 2), (2, 3)]);
            assert_eq!(out.uid_validity, status(&store, "alice", "B").uid_validity);
            // Same blobs (one copy on disk), dates; flags with B's keyword bits.
            let x_in_b = kw(&store, "alice", "B", "x");
            assert_eq!(x_in_b, 1 << 6, "x defined in B at its first free bit");
            for (src, dst) in &out.pairs {
                let s = store.message("alice", "A", *src).unwrap();
                let d = store.message("alice", "B", *dst).unwrap();
                assert_eq!(s.blob(), d.blob());
                assert_eq!(s.internal_date, d.internal_date);
                assert_eq!(
                    store.read_blob(d.blob()).unwrap(),
                    store.read_blob(s.blob()).unwrap()
                );
            }
            assert_eq!(flags_of(&store, "alice", "B", 1), flags::SEEN | x_in_b);
            assert_eq!(flags_of(&store, "alice", "B", 3), flags::FLAGGED | 1 << 5);
            assert_eq!(flags_of(&store, "alice", "B", 2), 0);
            assert_eq!(uids_of(&store, "alice", "A"), vec![1, 2, 3]);
            let st = status(&store, "alice", "B");
            assert_eq!((st.messages, st.unseen, st.size), (3, 2, 3 + 7 + 17));
            // Copy within one mailbox: new UIDs, same blob.
            let same = store.copy("alice", "A", "A", &[2], false).await.unwrap();
            assert_eq!(same.pairs, vec![(2, 4)]);
            assert_eq!(
                store.message("alice", "A", 4).unwrap().flags,
                flags::FLAGGED | 1 << 6
            );
            assert!(matches!(
                store.copy("alice", "A", "Nope", &[1], false).await,
                Err(StoreError::NoSuchMailbox { mailbox, .. }) if mailbox == "Nope"
            ));
            live_state(&store)
        }
    });
    assert_recovers(&data, &live);
}

#[test]
fn move_expunges_the_sources_in_the_same_commit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let live = run_local({
        let data = data.clone();
        move || async move {
            let store = open(&data).await;
            store.ensure_account("alice").await.unwrap();
            let b = blob(&store, "spam spam").await;
            for _ in 0..3 {
                store
                    .deliver(&[delivery("alice", "INBOX", b)])
                    .await
                    .unwrap();
            }
            // Junk has no room for keywords: a keyword that cannot be defined there is
            // dropped, the message still moves.
            let fill: Vec<String> = (0..flags::KEYWORDS_MAX).map(|i| format!("j{i}")).collect();
            store.keyword_bits("alice", "Junk", &fill).await.unwrap();
            let tag = store
                .keyword_bits("alice", "INBOX", &names(&["$Phishing"]))
                .await
                .unwrap();
            store
                .update_flags(
                    "alice",
                    "INBOX",
                    &[change(2, FlagMode::Add, tag | flags::SEEN)],
                )
                .await
                .unwrap();
            store.flush().await.unwrap();
            let batches = store.stats().meta.batches;
            let out = store
                .copy("alice", "INBOX", "Junk", &[2, 3], true)
                .await
                .unwrap();
            assert_eq!(store.stats().meta.batches, batches + 1, "one group commit");
            assert_eq!(out.pairs, vec![(2, 1), (3, 2)]);
            assert_eq!(uids_of(&store, "alice", "INBOX"), vec![1]);
            assert_eq!(uids_of(&store, "alice", "Junk"), vec![1, 2]);
            assert_eq!(flags_of(&store, "alice", "Junk", 1), flags::SEEN);
            assert_eq!(status(&store, "alice", "INBOX").size, 9);
            assert_eq!(status(&store, "alice", "Junk").unseen, 1);
            // The moved messages are gone from the source: moving them again does nothing.
            let again = store
                .copy("alice", "INBOX", "Junk", &[2, 3], true)
                .await
                .unwrap();
            assert!(again.pairs.is_empty());
            live_state(&store)
        }
    });
    assert_recovers(&data, &live);
}

#[test]
fn a_mailbox_being_deleted_takes_no_new_messages() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let live = run_local({
        let data = data.clone();
        move || async move {
            let store = open(&data).await;
            store.create_mailbox("alice", "Lists", 0).await.unwrap();
            let old = store.with_mailbox("alice", "Lists", |m| m.id()).unwrap();
            let b = blob(&store, "x").await;
            let deleting = {
                let s = store.clone();
                glommio::spawn_local(async move { s.delete_mailbox("alice", "Lists").await })
            };
            // Let the delete push its record and wait for it (None: already done).
            glommio::executor().yield_task_queue_now().await;
            assert_ne!(
                store.with_mailbox("alice", "Lists", |m| m.deleting),
                Some(false)
            );
            assert!(matches!(
                store.append("alice", "Lists", b, 0, 0).await,
                Err(StoreError::NoSuchMailbox { .. })
            ));
            // A delivery waits for the delete and creates the mailbox anew.
            let uids = store
                .deliver(&[delivery("alice", "Lists", b)])
                .await
                .unwrap();
            deleting.await.unwrap();
            assert_eq!(uids, vec![1]);
            let new = store.with_mailbox("alice", "Lists", |m| m.id()).unwrap();
            assert_ne!(new, old);
            assert_eq!(uids_of(&store, "alice", "Lists"), vec![1]);
            live_state(&store)
        }
    });
    assert_recovers(&data, &live);
}

// ---------------------------------------------------------------------------------------
// Change notification

#[test]
fn change_hook_hears_every_kind_of_change_with_the_right_ids() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    run_local(move || async move {
        let store = open(&data).await;
        let heard: Rc<RefCell<Vec<Vec<u64>>>> = Rc::default();
        let sink = heard.clone();
        store.set_change_hook(Box::new(move |ids: &[u64]| {
            sink.borrow_mut().push(ids.to_vec())
        }));
        let take = || std::mem::take(&mut *heard.borrow_mut());
        let id = |name: &str| store.with_mailbox("alice", name, |m| m.id()).unwrap();
        let b = blob(&store, "hello").await;
        store
            .deliver(&[delivery("alice", "INBOX", b), delivery("alice", "INBOX", b)])
            .await
            .unwrap();
        let inbox = id("INBOX");
        let mut got: Vec<u64> = take().concat();
        got.dedup();
        assert_eq!(got, vec![inbox], "deliver (create + appends)");
        store.create_mailbox("alice", "A", 0).await.unwrap();
        let a = id("A");
        assert_eq!(take(), vec![vec![a]], "create");
        store.append("alice", "A", b, 0, 0).await.unwrap();
        assert_eq!(take(), vec![vec![a]], "append");
        store
            .update_flags("alice", "INBOX", &[change(1, FlagMode::Add, flags::SEEN)])
            .await
            .unwrap();
        assert_eq!(take(), vec![vec![inbox]], "flags");
        store
            .update_flags("alice", "INBOX", &[change(1, FlagMode::Add, flags::SEEN)])
            .await
            .unwrap();
        assert!(take().is_empty(), "no change, no notification");
        store
            .keyword_bits("alice", "A", &names(&["k"]))
            .await
            .unwrap();
        assert_eq!(take(), vec![vec![a]], "keyword");
        store
            .copy("alice", "INBOX", "A", &[1], false)
            .await
            .unwrap();
        assert_eq!(take(), vec![vec![a]], "copy changes the destination only");
        store.copy("alice", "INBOX", "A", &[1], true).await.unwrap();
        let mut both = vec![inbox, a];
        both.sort_unstable();
        assert_eq!(take(), vec![both], "move: both, once");
        store.expunge_uids("alice", "INBOX", &[2]).await.unwrap();
        assert_eq!(take(), vec![vec![inbox]], "expunge");
        store.set_subscribed("alice", "A", true).await.unwrap();
        assert!(take().is_empty(), "subscriptions change no mailbox");
        store.rename_mailbox("alice", "A", "B").await.unwrap();
        assert_eq!(take(), vec![vec![a]], "rename");
        store
            .set_special_use("alice", "B", special_use::ARCHIVE)
            .await
            .unwrap();
        assert_eq!(take(), vec![vec![a]], "special-use");
        store.delete_mailbox("alice", "B").await.unwrap();
        assert_eq!(take(), vec![vec![a]], "delete");
        // Many changes in one batch: one call, ids deduplicated.
        store.create_mailbox("alice", "C", 0).await.unwrap();
        let c = id("C");
        take();
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let s = store.clone();
                let name = if i % 2 == 0 { "INBOX" } else { "C" };
                glommio::spawn_local(async move { s.append("alice", name, b, 0, 0).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let calls = take();
        assert!(calls.len() < 10, "{calls:?}");
        for ids in &calls {
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        }
        let mut all: Vec<u64> = calls.concat();
        all.sort_unstable();
        all.dedup();
        let mut want = vec![inbox, c];
        want.sort_unstable();
        assert_eq!(all, want);
    });
}

// ---------------------------------------------------------------------------------------
// Checkpoints

#[test]
fn checkpoint_counters_are_checked_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let live = run_local({
        let data = data.clone();
        move || async move {
            let store = open(&data).await;
            store.ensure_account("alice").await.unwrap();
            let b = blob(&store, "abcd").await;
            store
                .append("alice", "Sent", b, flags::SEEN, 0)
                .await
                .unwrap();
            store
                .append("alice", "Sent", b, flags::DELETED, 0)
                .await
                .unwrap();
            store
                .keyword_bits("alice", "Sent", &names(&["$MDNSent"]))
                .await
                .unwrap();
            store.flush().await.unwrap();
            live_state(&store)
        }
    });
    let fast = recover(&data, 1, &owner0).unwrap();
    assert_eq!(fast.report.checkpoint_generation, Some(1));
    assert_eq!(state_of(&fast.cores), live);
    let sent = fast.cores[0].mailbox("alice", "Sent").unwrap().status();
    assert_eq!((sent.unseen, sent.deleted, sent.size), (1, 1, 8));
    // A checkpoint whose counters disagree with its messages is not used.
    let mut idx = fast.cores.into_iter().next().unwrap();
    for mb in idx.mailboxes.values_mut() {
        if mb.name == "Sent" {
            mb.unseen += 1;
        }
    }
    let bytes =
        checkpoint::encode(&idx, 2, idx.covered().to_vec(), idx.covered_blob().to_vec()).unwrap();
    fs::write(
        segment::core_dir(&data, 0).join(checkpoint::file_name(2)),
        bytes,
    )
    .unwrap();
    let rec = recover(&data, 1, &owner0).unwrap();
    assert_eq!(
        rec.report.checkpoint_generation,
        Some(1),
        "generation 2 refused"
    );
    assert_eq!(state_of(&rec.cores), live);
    fs::remove_file(segment::core_dir(&data, 0).join(checkpoint::file_name(1))).unwrap();
    let rec = recover(&data, 1, &owner0).unwrap();
    assert_eq!(rec.report.checkpoint_generation, None);
    assert!(
        rec.report.checkpoint_note.contains("counters"),
        "{}",
        rec.report.checkpoint_note
    );
    assert_eq!(state_of(&rec.cores), live);
}

#[test]
fn a_version_1_checkpoint_falls_back_to_a_full_scan() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let live = run_local({
        let data = data.clone();
        move || async move {
            let store = open(&data).await;
            store.ensure_account("alice").await.unwrap();
            let b = blob(&store, "v1").await;
            store
                .deliver(&[delivery("alice", "INBOX", b)])
                .await
                .unwrap();
            store.flush().await.unwrap();
            live_state(&store)
        }
    });
    // Replace the checkpoint by one in the issue-2 format (record type Checkpoint).
    let dir0 = segment::core_dir(&data, 0);
    let path = dir0.join(checkpoint::file_name(1));
    let v2 = fs::read(&path).unwrap();
    let payload = &v2[segment::SEGMENT_HEADER_BYTES + record::RECORD_HEADER_BYTES..];
    let mut v1 = SegmentHeader {
        kind: SegmentKind::Checkpoint,
        core: 0,
        sequence: 1,
        nonce: 7,
    }
    .encode()
    .to_vec();
    encode_record(&mut v1, RecordType::Checkpoint, payload);
    fs::write(&path, v1).unwrap();
    let rec = recover(&data, 1, &owner0).unwrap();
    assert_eq!(rec.report.checkpoint_generation, None);
    assert!(
        rec.report.checkpoint_note.contains("version 1"),
        "{}",
        rec.report.checkpoint_note
    );
    assert_eq!(state_of(&rec.cores), live);
    // The next run writes a version-2 checkpoint that is used again.
    run_local({
        let data = data.clone();
        move || async move {
            open(&data).await.flush().await.unwrap();
        }
    });
    let rec = recover(&data, 1, &owner0).unwrap();
    assert_eq!(rec.report.checkpoint_generation, Some(2));
    assert_eq!(state_of(&rec.cores), live);
}

// ---------------------------------------------------------------------------------------
// Several cores

#[test]
fn renames_and_deletes_spread_over_several_cores_logs_apply_in_order() {
    // bob lives on core 1 with two cores and on core 0 with one: his records end up in
    // both meta logs, and every recovery (1 or 2 cores, checkpoint or not) agrees.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let two_cores = |data: &Path, work: fn(Rc<Store>) -> Work| {
        let rec = recover(data, 2, &owner_two).unwrap();
        let mut cores = rec.cores.into_iter();
        let (_, i1) = (cores.next().unwrap(), cores.next().unwrap());
        let d = data.to_path_buf();
        run_local(move || async move {
            let store = Store::open(cfg(&d, 1), i1).await.unwrap();
            work(store.clone()).await;
            store.flush().await.unwrap();
        });
    };
    // Run 1, two cores: Junk deleted, "a" (one message) renamed to "b".
    two_cores(&data, |s| {
        Box::pin(async move {
            s.ensure_account("bob").await.unwrap();
            s.create_mailbox("bob", "a", 0).await.unwrap();
            let b = s.append_blob(b"first").await.unwrap();
            s.append("bob", "a", b, flags::SEEN, 1).await.unwrap();
            s.set_subscribed("bob", "a", true).await.unwrap();
            s.rename_mailbox("bob", "a", "b").await.unwrap();
            s.delete_mailbox("bob", "Junk").await.unwrap();
        })
    });
    let x = full_scan(&data, 1, &owner0).cores[0]
        .mailbox("bob", "b")
        .unwrap()
        .id();
    // Run 2, one core: "b" takes the deleted name "Junk", a new "b" gets a message.
    run_local({
        let data = data.clone();
        move || async move {
            let s = open(&data).await;
            s.rename_mailbox("bob", "b", "Junk").await.unwrap();
            s.create_mailbox("bob", "b", 0).await.unwrap();
            let b = s.append_blob(b"second").await.unwrap();
            s.append("bob", "b", b, 0, 2).await.unwrap();
            s.set_subscribed("bob", "INBOX", false).await.unwrap();
        }
    });
    let check = |data: &Path| -> State {
        let one = full_scan(data, 1, &owner0);
        let two = full_scan(data, 2, &owner_two);
        let one_ckpt = recover(data, 1, &owner0).unwrap();
        let two_ckpt = recover(data, 2, &owner_two).unwrap();
        let s = state_of(&one.cores);
        assert_eq!(state_of(&two.cores), s);
        assert_eq!(state_of(&one_ckpt.cores), s);
        assert_eq!(state_of(&two_ckpt.cores), s);
        assert!(two.cores[1].mailbox("bob", "Junk").is_some());
        s
    };
    let s = check(&data);
    let junk = &s.mailboxes[&("bob".to_string(), "Junk".to_string())];
    assert_eq!(junk.0, x, "the renamed mailbox holds the name");
    assert_eq!(junk.1, 0, "without the deleted Junk's special-use");
    assert_eq!(s.canon[&("bob".to_string(), "Junk".to_string())].1.len(), 1);
    assert_eq!(s.canon[&("bob".to_string(), "b".to_string())].1.len(), 1);
    assert_eq!(
        s.accounts["bob"].1,
        names(&["Drafts", "Junk", "Sent", "Trash"]),
        "subscription of a followed b to Junk; INBOX unsubscribed"
    );
    // Run 3, two cores again: Junk (x) deleted, "b" renamed to "Junk".
    two_cores(&data, |s| {
        Box::pin(async move {
            s.delete_mailbox("bob", "Junk").await.unwrap();
            s.rename_mailbox("bob", "b", "Junk").await.unwrap();
        })
    });
    let s = check(&data);
    let junk = &s.mailboxes[&("bob".to_string(), "Junk".to_string())];
    assert_ne!(junk.0, x);
    let msgs = &s.canon[&("bob".to_string(), "Junk".to_string())].1;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].internal_date, 2);
    assert!(!s.canon.contains_key(&("bob".to_string(), "b".to_string())));
}

#[test]
fn shared_reads_verify_once_and_ranges_read_only_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    run_local(move || async move {
        let store = open(&data).await;
        let text = "Subject: cached\r\n\r\n0123456789";
        let b = blob(&store, text).await;
        let shared = store.read_blob_shared(b).unwrap();
        assert_eq!(&shared[..], text.as_bytes());
        // A second reader gets the very same bytes (no new copy).
        let again = store.read_blob_shared(b).unwrap();
        assert!(Rc::ptr_eq(&shared, &again));
        assert_eq!(store.read_blob_range(b, 19..23).unwrap(), b"0123".to_vec());
        // Past the end: clamped, empty.
        assert!(store.read_blob_range(b, 100..200).unwrap().is_empty());
        // A blob verified but evicted: the range read goes to the file.
        let big = "B".repeat(super::cache::CACHED_BLOB_BYTES_MAX + 10);
        let bb = blob(&store, &big).await;
        assert_eq!(store.read_blob_shared(bb).unwrap().len(), big.len());
        assert_eq!(store.read_blob_range(bb, 5..9).unwrap(), b"BBBB".to_vec());
        // A reference that is not a blob record fails, shared or not.
        let wrong = BlobRef {
            len: b.len + 1,
            ..b
        };
        assert!(store.read_blob_shared(wrong).is_err());
        assert!(store.read_blob_range(wrong, 0..1).is_err());
    });
}
