//! The store operations IMAP and POP3 sessions use: accounts, mailboxes (create, delete,
//! rename, special-use, subscriptions), keywords, and messages (append, flag changes with
//! CONDSTORE's UNCHANGEDSINCE, expunge, copy and move), plus the read accessors.
//!
//! Every method runs on the core that owns `user` (the runtime hands IMAP/POP3
//! connections to it after login). Every change appends meta records through the group
//! commit and resolves once they are durable and published to the index (the change hook
//! has run by then). Namespace changes hold the user's lock until then (see `engine`);
//! message operations allocate UIDs and modseqs right after waiting for batch room, with
//! no await until their records are pushed, and build on changes still in flight
//! (`Mailbox::pending`), so concurrent flag changes never lose one another.
//!
//! Bulk operations (thousands of UIDs) are split into batches of `batch_bytes_max`; a
//! batch is durable as a prefix after a crash, so a MOVE pushes each chunk's appends
//! before its expunges (a crash can leave a message in both mailboxes, never in none).

use std::collections::HashSet;

use super::engine::{canonical_name, check_mailbox_name, check_names, meta_record_bytes, wait_all};
use super::flags::{self, special_use};
use super::index::{Mailbox, MailboxInfo, MailboxStatus, MessageEntry, Pending};
use super::record::{
    AccountInit, Expunge, FlagsSet, KeywordDefine, MailboxAttrs, MailboxDelete, MailboxRename,
    MessageAppend, MetaRecord, Subscription,
};
use super::{
    BlobRef, Store, StoreError, KEYWORDS_PER_CALL_MAX, MAILBOX_NAME_BYTES_MAX,
    SUBSCRIPTIONS_PER_USER_MAX, UIDS_PER_CALL_MAX,
};

/// How a [`FlagChange`] combines its mask with the message's flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagMode {
    /// `FLAGS`: the flags become the mask.
    Replace,
    /// `+FLAGS`.
    Add,
    /// `-FLAGS`.
    Remove,
}

/// One message's flag change (IMAP STORE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlagChange {
    pub uid: u32,
    pub mode: FlagMode,
    /// System flags (`flags::SEEN`...) and keyword bits (from `keyword_bits`).
    pub mask: u32,
    /// CONDSTORE UNCHANGEDSINCE: no change if the message's modseq is above it.
    pub unchanged_since: Option<u64>,
}

/// What a [`FlagChange`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagOutcome {
    /// Written: the new flags and their modseq.
    Changed { uid: u32, flags: u32, modseq: u64 },
    /// The flags already were the result: nothing written; the current flags and modseq.
    Unchanged { uid: u32, flags: u32, modseq: u64 },
    /// UNCHANGEDSINCE failed: the message's modseq is above it (RFC 7162 MODIFIED).
    Modified { uid: u32 },
    /// No such message (or it is being expunged).
    Missing { uid: u32 },
}

/// What [`Store::copy`] did (UIDPLUS COPYUID).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyOutcome {
    /// UIDVALIDITY of the destination.
    pub uid_validity: u32,
    /// (source UID, destination UID) per copied message, in the order of the request;
    /// UIDs that do not exist are left out.
    pub pairs: Vec<(u32, u32)>,
}

/// The mailboxes `ensure_account` creates, with their SPECIAL-USE bits.
pub const DEFAULT_MAILBOXES: [(&str, u8); 5] = [
    ("INBOX", 0),
    ("Drafts", special_use::DRAFTS),
    ("Sent", special_use::SENT),
    ("Trash", special_use::TRASH),
    ("Junk", special_use::JUNK),
];

/// What a copy chunk did under the index borrow.
enum CopyStep {
    Pushed,
    /// These keyword names of the source are not defined in the destination yet.
    NeedKeywords(Vec<String>),
}

impl Store {
    // -----------------------------------------------------------------------------------
    // Reads (published, durable state; no I/O)

    /// The user's mailboxes, sorted by name.
    pub fn mailboxes(&self, user: &str) -> Vec<MailboxInfo> {
        let idx = self.inner.index.borrow();
        let mut out: Vec<MailboxInfo> = idx.user_mailboxes(user).map(MailboxInfo::of).collect();
        out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// A mailbox by id (ids outlive renames; a session keeps the id of its selection).
    pub fn mailbox_by_id(&self, id: u64) -> Option<MailboxInfo> {
        self.inner
            .index
            .borrow()
            .mailbox_by_id(id)
            .map(MailboxInfo::of)
    }

    /// Runs `f` on the mailbox (messages sorted by UID, status, keywords...) without
    /// copying it; None if it does not exist. `f` must not call back into the store's
    /// write methods.
    pub fn with_mailbox<R>(
        &self,
        user: &str,
        mailbox: &str,
        f: impl FnOnce(&Mailbox) -> R,
    ) -> Option<R> {
        self.inner
            .index
            .borrow()
            .mailbox(user, canonical_name(mailbox))
            .map(f)
    }

    /// [`with_mailbox`](Self::with_mailbox) by id.
    pub fn with_mailbox_id<R>(&self, id: u64, f: impl FnOnce(&Mailbox) -> R) -> Option<R> {
        self.inner.index.borrow().mailbox_by_id(id).map(f)
    }

    /// One message (copied: 40 bytes).
    pub fn message(&self, user: &str, mailbox: &str, uid: u32) -> Option<MessageEntry> {
        self.with_mailbox(user, mailbox, |m| m.message(uid).copied())
            .flatten()
    }

    /// The mailbox's keywords as (bit, name), ascending by bit.
    pub fn keywords(&self, user: &str, mailbox: &str) -> Vec<(u8, String)> {
        self.with_mailbox(user, mailbox, |m| m.keywords().to_vec())
            .unwrap_or_default()
    }

    /// The user's subscribed names, sorted (they need not exist).
    pub fn subscriptions(&self, user: &str) -> Vec<String> {
        self.inner
            .index
            .borrow()
            .account(user)
            .map(|a| a.subscriptions().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// True once `ensure_account` has initialised the user.
    pub fn account_initialized(&self, user: &str) -> bool {
        self.inner
            .index
            .borrow()
            .account(user)
            .is_some_and(|a| a.initialized())
    }

    // -----------------------------------------------------------------------------------
    // Accounts and mailboxes

    /// Called on every login. The first time ever for `user`: creates INBOX (if missing)
    /// and Drafts, Sent, Trash and Junk with their SPECIAL-USE bits (an existing mailbox
    /// of that name without special-use gets the bit), subscribes all five and writes
    /// `AccountInit`, all durably; a user who deletes Trash later does not get it back.
    /// After that: no I/O.
    pub async fn ensure_account(&self, user: &str) -> Result<(), StoreError> {
        if self.account_initialized(user) {
            return Ok(());
        }
        check_names(user, "")?;
        let _guard = self.inner.user_locks.lock(user).await;
        if self.account_initialized(user) {
            return Ok(());
        }
        let missing = DEFAULT_MAILBOXES
            .iter()
            .filter(|(name, _)| self.inner.index.borrow().mailbox(user, name).is_none())
            .count();
        self.check_mailbox_room(user, "INBOX", missing)?;
        let bytes: usize = DEFAULT_MAILBOXES
            .iter()
            .map(|(name, _)| 3 * meta_record_bytes(user.len() + name.len()))
            .sum::<usize>()
            + meta_record_bytes(user.len());
        self.inner.meta.wait_room(bytes).await;
        let mut tickets = Vec::new();
        for (name, bits) in DEFAULT_MAILBOXES {
            let existing = {
                let mut idx = self.inner.index.borrow_mut();
                match idx.mailbox_mut(user, name) {
                    Some(mb) if bits != 0 && mb.special_use == 0 => {
                        let modseq = alloc_modseq(mb);
                        Some(Some(MailboxAttrs {
                            mailbox_id: mb.id,
                            modseq,
                            special_use: bits,
                        }))
                    }
                    Some(_) => Some(None),
                    None => None,
                }
            };
            match existing {
                Some(Some(attrs)) => tickets.push(self.push_meta(MetaRecord::MailboxAttrs(attrs))?),
                Some(None) => {}
                None => tickets.extend(self.push_create(user, name, bits)?.1),
            }
            if !self.is_subscribed(user, name) {
                let rec = self.subscription_record(user, name, true);
                tickets.push(self.push_meta(rec)?);
            }
        }
        tickets.push(self.push_meta(MetaRecord::AccountInit(AccountInit {
            user: user.to_owned(),
        }))?);
        wait_all(&tickets).await
    }

    /// Creates a mailbox with a new id and UIDVALIDITY (above every one handed out
    /// before). `special_use`: bits of [`special_use`]. Parents are not created (the IMAP
    /// layer does that if it wants to). "INBOX" in any case is stored as "INBOX".
    pub async fn create_mailbox(
        &self,
        user: &str,
        name: &str,
        special_use: u8,
    ) -> Result<MailboxStatus, StoreError> {
        check_names(user, "")?;
        let name = check_mailbox_name(name)?;
        check_special_use(special_use)?;
        let _guard = self.inner.user_locks.lock(user).await;
        self.check_absent(user, name)?;
        self.check_mailbox_room(user, name, 1)?;
        self.inner
            .meta
            .wait_room(2 * meta_record_bytes(user.len() + name.len()))
            .await;
        let (id, tickets) = self.push_create(user, name, special_use)?;
        wait_all(&tickets).await?;
        self.inner
            .index
            .borrow()
            .mailbox_by_id(id)
            .map(Mailbox::status)
            .ok_or_else(|| no_mailbox(user, name))
    }

    /// Deletes a mailbox and its messages (their blobs become garbage). INBOX cannot be
    /// deleted. Children (`name/...`) stay; subscriptions stay (RFC 9051 §6.3.9).
    pub async fn delete_mailbox(&self, user: &str, name: &str) -> Result<(), StoreError> {
        check_names(user, "")?;
        let name = check_mailbox_name(name)?;
        if name == "INBOX" {
            return Err(StoreError::Forbidden {
                op: "delete",
                user: user.to_owned(),
                mailbox: name.to_owned(),
                reason: "INBOX cannot be deleted",
            });
        }
        let _guard = self.inner.user_locks.lock(user).await;
        self.inner.meta.wait_room(meta_record_bytes(0)).await;
        let (id, rec) = {
            let mut idx = self.inner.index.borrow_mut();
            let mb = idx
                .mailbox_mut(user, name)
                .ok_or_else(|| no_mailbox(user, name))?;
            // From here on message operations refuse the mailbox: nothing they write
            // could outlive the delete.
            mb.deleting = true;
            let modseq = alloc_modseq(mb);
            (
                mb.id,
                MailboxDelete {
                    mailbox_id: mb.id,
                    modseq,
                },
            )
        };
        let result = match self.push_meta(MetaRecord::MailboxDelete(rec)) {
            Ok(ticket) => ticket.wait().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if result.is_err() {
            if let Some(mb) = self.inner.index.borrow_mut().mailboxes.get_mut(&id) {
                mb.deleting = false;
            }
        }
        result
    }

    /// Renames a mailbox and its children (`from/x` becomes `to/x`), keeping ids,
    /// UIDVALIDITY and UIDs; subscriptions of renamed names follow. Renaming INBOX moves
    /// all its messages to a new mailbox `to` (new UIDVALIDITY and UIDs) and leaves INBOX
    /// empty; INBOX's children are not renamed (RFC 9051 §6.3.6).
    pub async fn rename_mailbox(&self, user: &str, from: &str, to: &str) -> Result<(), StoreError> {
        check_names(user, "")?;
        let from = check_mailbox_name(from)?;
        let to = check_mailbox_name(to)?;
        let _guard = self.inner.user_locks.lock(user).await;
        if self.inner.index.borrow().mailbox(user, from).is_none() {
            return Err(no_mailbox(user, from));
        }
        self.check_absent(user, to)?;
        if from == "INBOX" {
            return self.rename_inbox_locked(user, to).await;
        }
        if to.len() > from.len() && to.starts_with(from) && to.as_bytes()[from.len()] == b'/' {
            return Err(StoreError::Forbidden {
                op: "rename",
                user: user.to_owned(),
                mailbox: from.to_owned(),
                reason: "a mailbox cannot be moved under itself",
            });
        }
        // (id, old name, new name): the mailbox first, then its children.
        let renames: Vec<(u64, String, String)> = {
            let idx = self.inner.index.borrow();
            let mut out = Vec::new();
            for mb in idx.user_mailboxes(user) {
                let new = if mb.name == from {
                    to.to_owned()
                } else if let Some(rest) = child_suffix(&mb.name, from) {
                    format!("{to}/{rest}")
                } else {
                    continue;
                };
                out.push((mb.id, mb.name.clone(), new));
            }
            out.sort_unstable_by_key(|(_, old, _)| old.len());
            out
        };
        let moving: HashSet<&str> = renames.iter().map(|(_, old, _)| old.as_str()).collect();
        for (_, _, new) in &renames {
            if new.len() > MAILBOX_NAME_BYTES_MAX {
                return Err(StoreError::TooLarge {
                    what: "renamed mailbox name",
                    bytes: new.len(),
                    max: MAILBOX_NAME_BYTES_MAX,
                });
            }
            let taken = self.inner.index.borrow().mailbox(user, new).is_some();
            if taken && !moving.contains(new.as_str()) {
                return Err(StoreError::AlreadyExists {
                    user: user.to_owned(),
                    mailbox: new.clone(),
                });
            }
        }
        let mut tickets = Vec::new();
        for (id, old, new) in &renames {
            let subscribed = self.is_subscribed(user, old);
            let names = old.len() + new.len() + user.len();
            self.inner
                .meta
                .wait_room(3 * meta_record_bytes(names))
                .await;
            // Synchronous from here: the modseq is allocated and pushed together.
            let rec = {
                let mut idx = self.inner.index.borrow_mut();
                let mb = idx
                    .mailboxes
                    .get_mut(id)
                    .ok_or_else(|| no_mailbox(user, old))?;
                MailboxRename {
                    mailbox_id: *id,
                    modseq: alloc_modseq(mb),
                    name: new.clone(),
                }
            };
            tickets.push(self.push_meta(MetaRecord::MailboxRename(rec))?);
            if subscribed {
                let off = self.subscription_record(user, old, false);
                tickets.push(self.push_meta(off)?);
                let on = self.subscription_record(user, new, true);
                tickets.push(self.push_meta(on)?);
            }
        }
        wait_all(&tickets).await
    }

    /// RENAME INBOX (caller holds the user's lock, `to` is free): a new mailbox `to`,
    /// then every INBOX message moved there.
    async fn rename_inbox_locked(&self, user: &str, to: &str) -> Result<(), StoreError> {
        self.check_mailbox_room(user, to, 1)?;
        self.inner
            .meta
            .wait_room(meta_record_bytes(user.len() + to.len()))
            .await;
        let (to_id, tickets) = self.push_create(user, to, 0)?;
        wait_all(&tickets).await?;
        let inbox_id = self.mailbox_id(user, "INBOX")?;
        let uids: Vec<u32> = self
            .with_mailbox_id(inbox_id, |m| m.messages().iter().map(|e| e.uid).collect())
            .unwrap_or_default();
        for part in uids.chunks(UIDS_PER_CALL_MAX) {
            self.copy_ids(user, ("INBOX", inbox_id), (to, to_id), part, true, true)
                .await?;
        }
        Ok(())
    }

    /// Sets a mailbox's SPECIAL-USE bits (CREATE ... USE, METADATA).
    pub async fn set_special_use(
        &self,
        user: &str,
        name: &str,
        special_use: u8,
    ) -> Result<(), StoreError> {
        check_names(user, "")?;
        let name = check_mailbox_name(name)?;
        check_special_use(special_use)?;
        let _guard = self.inner.user_locks.lock(user).await;
        self.inner.meta.wait_room(meta_record_bytes(0)).await;
        let rec = {
            let mut idx = self.inner.index.borrow_mut();
            let mb = idx
                .mailbox_mut(user, name)
                .ok_or_else(|| no_mailbox(user, name))?;
            if mb.special_use == special_use {
                return Ok(());
            }
            MailboxAttrs {
                mailbox_id: mb.id,
                modseq: alloc_modseq(mb),
                special_use,
            }
        };
        self.push_meta(MetaRecord::MailboxAttrs(rec))?
            .wait()
            .await
            .map(|_| ())
    }

    /// Subscribes or unsubscribes `user` to `name`, which need not exist (no I/O if
    /// nothing changes).
    pub async fn set_subscribed(
        &self,
        user: &str,
        name: &str,
        subscribed: bool,
    ) -> Result<(), StoreError> {
        check_names(user, "")?;
        let name = check_mailbox_name(name)?;
        let _guard = self.inner.user_locks.lock(user).await;
        if self.is_subscribed(user, name) == subscribed {
            return Ok(());
        }
        if subscribed && self.subscriptions_count(user) >= SUBSCRIPTIONS_PER_USER_MAX {
            return Err(StoreError::Exhausted {
                user: user.to_owned(),
                mailbox: name.to_owned(),
                what: "subscription limit",
            });
        }
        self.inner
            .meta
            .wait_room(meta_record_bytes(user.len() + name.len()))
            .await;
        let rec = self.subscription_record(user, name, subscribed);
        self.push_meta(rec)?.wait().await.map(|_| ())
    }

    /// The flag mask of keyword `names` in the mailbox, defining the missing ones durably
    /// first (compared case-insensitively; the first spelling is kept). `Exhausted` if
    /// they do not all fit in the 27 keyword bits (then none is defined).
    pub async fn keyword_bits(
        &self,
        user: &str,
        mailbox: &str,
        names: &[String],
    ) -> Result<u32, StoreError> {
        check_names(user, mailbox)?;
        if names.len() > KEYWORDS_PER_CALL_MAX {
            return Err(StoreError::TooLarge {
                what: "keyword list",
                bytes: names.len(),
                max: KEYWORDS_PER_CALL_MAX,
            });
        }
        for n in names {
            if let Some(reason) = flags::keyword_problem(n) {
                return Err(StoreError::InvalidName {
                    what: "keyword",
                    name: n.chars().take(64).collect(),
                    reason,
                });
            }
        }
        if let Some(mask) = self.keyword_mask(user, mailbox, names)? {
            return Ok(mask);
        }
        let _guard = self.inner.user_locks.lock(user).await;
        let id = self.mailbox_id(user, mailbox)?;
        self.define_keywords_locked(user, (mailbox, id), names, false)
            .await?;
        self.keyword_mask(user, mailbox, names)?
            .ok_or_else(|| StoreError::Exhausted {
                user: user.to_owned(),
                mailbox: mailbox.to_owned(),
                what: "keyword bits",
            })
    }

    // -----------------------------------------------------------------------------------
    // Messages

    /// IMAP APPEND: adds a staged blob (the caller also waits for its `BlobTicket`) to an
    /// existing mailbox with `flags` (system flags and keyword bits of this mailbox).
    /// Returns (UID, modseq, UIDVALIDITY) once durable and published.
    pub async fn append(
        &self,
        user: &str,
        mailbox: &str,
        blob: BlobRef,
        flags: u32,
        internal_date: i64,
    ) -> Result<(u32, u64, u32), StoreError> {
        check_names(user, mailbox)?;
        check_blob(&blob)?;
        let id = self.mailbox_id(user, mailbox)?;
        self.inner
            .meta
            .wait_room(self.inner.append_record_bytes)
            .await;
        let (rec, uid_validity) = {
            let mut idx = self.inner.index.borrow_mut();
            let mb = live_mailbox(&mut idx.mailboxes, id, user, mailbox)?;
            let uid = alloc_uid(mb)?;
            let rec = MessageAppend {
                mailbox_id: id,
                uid,
                modseq: alloc_modseq(mb),
                blob,
                internal_date,
                flags,
            };
            (rec, mb.uid_validity)
        };
        let (uid, modseq) = (rec.uid, rec.modseq);
        self.push_meta(MetaRecord::MessageAppend(rec))?
            .wait()
            .await?;
        Ok((uid, modseq, uid_validity))
    }

    /// IMAP STORE: one FlagsSet record per message whose flags actually change, all
    /// committed together (in batches of `batch_bytes_max`), one await. The UNCHANGEDSINCE
    /// check, the new flags and the modseq are computed from the newest state, changes in
    /// flight included, with no await in between. Outcomes are in the order of `changes`.
    pub async fn update_flags(
        &self,
        user: &str,
        mailbox: &str,
        changes: &[FlagChange],
    ) -> Result<Vec<FlagOutcome>, StoreError> {
        check_names(user, mailbox)?;
        check_count("flag change list", changes.len())?;
        let id = self.mailbox_id(user, mailbox)?;
        let per = self.inner.append_record_bytes;
        let chunk = (self.inner.cfg.batch_bytes_max / per).max(1);
        let mut outcomes = Vec::with_capacity(changes.len());
        let mut made: Vec<(u32, u64)> = Vec::new();
        let mut tickets = Vec::new();
        let mut saw_pending = false;
        for group in changes.chunks(chunk) {
            self.inner.meta.wait_room(per * group.len()).await;
            let mut idx = self.inner.index.borrow_mut();
            let mb = live_mailbox(&mut idx.mailboxes, id, user, mailbox)?;
            for c in group {
                let Some((current, current_modseq)) = mb.effective(c.uid) else {
                    outcomes.push(FlagOutcome::Missing { uid: c.uid });
                    continue;
                };
                saw_pending |= mb.pending.contains_key(&c.uid);
                if c.unchanged_since
                    .is_some_and(|since| current_modseq > since)
                {
                    outcomes.push(FlagOutcome::Modified { uid: c.uid });
                    continue;
                }
                let new = match c.mode {
                    FlagMode::Replace => c.mask,
                    FlagMode::Add => current | c.mask,
                    FlagMode::Remove => current & !c.mask,
                };
                if new == current {
                    outcomes.push(FlagOutcome::Unchanged {
                        uid: c.uid,
                        flags: current,
                        modseq: current_modseq,
                    });
                    continue;
                }
                let modseq = alloc_modseq(mb);
                tickets.push(self.push_meta(MetaRecord::FlagsSet(FlagsSet {
                    mailbox_id: id,
                    uid: c.uid,
                    modseq,
                    flags: new,
                }))?);
                mb.pending
                    .insert(c.uid, Pending::Flags { flags: new, modseq });
                made.push((c.uid, modseq));
                outcomes.push(FlagOutcome::Changed {
                    uid: c.uid,
                    flags: new,
                    modseq,
                });
            }
        }
        if tickets.is_empty() && saw_pending {
            // An outcome reported a change still in flight: let it become durable (and
            // published) first.
            self.inner.meta.flush().await;
            self.settle().await;
        }
        if let Err(e) = wait_all(&tickets).await {
            self.forget_pending(id, &made);
            return Err(e);
        }
        Ok(outcomes)
    }

    /// IMAP EXPUNGE / UID EXPUNGE / POP3 UPDATE: one Expunge record per UID present (the
    /// others are skipped), one await. Returns the expunged UIDs, ascending.
    pub async fn expunge_uids(
        &self,
        user: &str,
        mailbox: &str,
        uids: &[u32],
    ) -> Result<Vec<u32>, StoreError> {
        check_names(user, mailbox)?;
        check_count("UID list", uids.len())?;
        let id = self.mailbox_id(user, mailbox)?;
        let mut done: Vec<u32> = self
            .expunge_ids(user, mailbox, id, uids)
            .await?
            .into_iter()
            .map(|(uid, _)| uid)
            .collect();
        done.sort_unstable();
        Ok(done)
    }

    /// Expunges `uids` of mailbox `id`; returns (uid, modseq) of each expunged message.
    pub(super) async fn expunge_ids(
        &self,
        user: &str,
        mailbox: &str,
        id: u64,
        uids: &[u32],
    ) -> Result<Vec<(u32, u64)>, StoreError> {
        let per = self.inner.append_record_bytes;
        let chunk = (self.inner.cfg.batch_bytes_max / per).max(1);
        let mut made: Vec<(u32, u64)> = Vec::new();
        let mut tickets = Vec::new();
        for group in uids.chunks(chunk) {
            self.inner.meta.wait_room(per * group.len()).await;
            let mut idx = self.inner.index.borrow_mut();
            let mb = live_mailbox(&mut idx.mailboxes, id, user, mailbox)?;
            for &uid in group {
                if mb.effective(uid).is_none() {
                    continue; // absent, or its expunge is already in flight
                }
                let modseq = alloc_modseq(mb);
                tickets.push(self.push_meta(MetaRecord::Expunge(Expunge {
                    mailbox_id: id,
                    uid,
                    modseq,
                }))?);
                mb.pending.insert(uid, Pending::Expunged { modseq });
                made.push((uid, modseq));
            }
        }
        if let Err(e) = wait_all(&tickets).await {
            self.forget_pending(id, &made);
            return Err(e);
        }
        Ok(made)
    }

    /// IMAP COPY (and MOVE with `remove_source`): new MessageAppend records in `to` that
    /// reference the same blobs (one copy of a message on disk), keeping flags (keywords
    /// remapped to `to`'s bits, defined there if needed; dropped if `to` has no room) and
    /// internal dates; MOVE also expunges the sources in the same batches.
    pub async fn copy(
        &self,
        user: &str,
        from: &str,
        to: &str,
        uids: &[u32],
        remove_source: bool,
    ) -> Result<CopyOutcome, StoreError> {
        check_names(user, from)?;
        check_names(user, to)?;
        check_count("UID list", uids.len())?;
        let from_id = self.mailbox_id(user, from)?;
        let to_id = self.mailbox_id(user, to)?;
        self.copy_ids(
            user,
            (from, from_id),
            (to, to_id),
            uids,
            remove_source,
            false,
        )
        .await
    }

    /// [`copy`](Self::copy) between mailbox ids; `locked`: the caller holds the user's
    /// lock (keyword definitions then do not take it again).
    async fn copy_ids(
        &self,
        user: &str,
        (from, from_id): (&str, u64),
        (to, to_id): (&str, u64),
        uids: &[u32],
        remove_source: bool,
        locked: bool,
    ) -> Result<CopyOutcome, StoreError> {
        let records_per_uid = 1 + usize::from(remove_source);
        let per = self.inner.append_record_bytes * records_per_uid;
        let chunk = (self.inner.cfg.batch_bytes_max / per).max(1);
        let mut pairs = Vec::with_capacity(uids.len());
        let mut made: Vec<(u32, u64)> = Vec::new();
        let mut tickets = Vec::new();
        // Keywords `to` could not define (no free bit): dropped from the copies.
        let mut unmappable: HashSet<String> = HashSet::new();
        let mut at = 0;
        while at < uids.len() {
            let group = &uids[at..(at + chunk).min(uids.len())];
            self.inner.meta.wait_room(per * group.len()).await;
            let step = {
                let mut idx = self.inner.index.borrow_mut();
                // The sources, with their newest flags, and the names of their keywords.
                let src = live_mailbox(&mut idx.mailboxes, from_id, user, from)?;
                let mut picked: Vec<(u32, u32, MessageEntry)> = Vec::with_capacity(group.len());
                let mut used = 0u32;
                for &uid in group {
                    if let (Some((flags, _)), Some(e)) = (src.effective(uid), src.message(uid)) {
                        used |= flags;
                        picked.push((uid, flags, *e));
                    }
                }
                let src_names: Vec<(u8, String)> = src
                    .keywords()
                    .iter()
                    .filter(|(bit, _)| used & flags::keyword_flag(*bit) != 0)
                    .cloned()
                    .collect();
                let dst = live_mailbox(&mut idx.mailboxes, to_id, user, to)?;
                let missing: Vec<String> = src_names
                    .iter()
                    .filter(|(_, n)| dst.keyword_bit(n).is_none() && !unmappable.contains(n))
                    .map(|(_, n)| n.clone())
                    .collect();
                if !missing.is_empty() {
                    CopyStep::NeedKeywords(missing)
                } else {
                    // Source bit → destination flag bit (0: dropped).
                    let map: Vec<(u32, u32)> = src_names
                        .iter()
                        .map(|(bit, n)| {
                            let to_bit = dst.keyword_bit(n).map_or(0, flags::keyword_flag);
                            (flags::keyword_flag(*bit), to_bit)
                        })
                        .collect();
                    for &(uid, flags, e) in &picked {
                        let mut new_flags = flags & flags::SYSTEM_MASK;
                        for &(from_bit, to_bit) in &map {
                            if flags & from_bit != 0 {
                                new_flags |= to_bit;
                            }
                        }
                        let new_uid = alloc_uid(dst)?;
                        let rec = MessageAppend {
                            mailbox_id: to_id,
                            uid: new_uid,
                            modseq: alloc_modseq(dst),
                            blob: e.blob(),
                            internal_date: e.internal_date,
                            flags: new_flags,
                        };
                        tickets.push(self.push_meta(MetaRecord::MessageAppend(rec))?);
                        pairs.push((uid, new_uid));
                    }
                    if remove_source {
                        // After every append of the chunk: a torn batch keeps a prefix,
                        // so a crash can duplicate a message but never lose it.
                        let src = live_mailbox(&mut idx.mailboxes, from_id, user, from)?;
                        for &(uid, _, _) in &picked {
                            let modseq = alloc_modseq(src);
                            tickets.push(self.push_meta(MetaRecord::Expunge(Expunge {
                                mailbox_id: from_id,
                                uid,
                                modseq,
                            }))?);
                            src.pending.insert(uid, Pending::Expunged { modseq });
                            made.push((uid, modseq));
                        }
                    }
                    CopyStep::Pushed
                }
            };
            match step {
                CopyStep::Pushed => at += group.len(),
                CopyStep::NeedKeywords(names) => {
                    // Define them durably (nothing of this chunk was pushed), then redo it.
                    if locked {
                        self.define_keywords_locked(user, (to, to_id), &names, true)
                            .await?;
                    } else {
                        let _guard = self.inner.user_locks.lock(user).await;
                        self.define_keywords_locked(user, (to, to_id), &names, true)
                            .await?;
                    }
                    let idx = self.inner.index.borrow();
                    let dst = idx
                        .mailbox_by_id(to_id)
                        .ok_or_else(|| no_mailbox(user, to))?;
                    for n in names {
                        if dst.keyword_bit(&n).is_none() {
                            unmappable.insert(n);
                        }
                    }
                }
            }
        }
        if let Err(e) = wait_all(&tickets).await {
            self.forget_pending(from_id, &made);
            return Err(e);
        }
        let uid_validity = self
            .with_mailbox_id(to_id, |m| m.uid_validity())
            .ok_or_else(|| no_mailbox(user, to))?;
        Ok(CopyOutcome {
            uid_validity,
            pairs,
        })
    }

    // -----------------------------------------------------------------------------------
    // Helpers

    /// The mask of `names` if every one is defined in the mailbox (None otherwise).
    fn keyword_mask(
        &self,
        user: &str,
        mailbox: &str,
        names: &[String],
    ) -> Result<Option<u32>, StoreError> {
        let idx = self.inner.index.borrow();
        let mb = idx
            .mailbox(user, canonical_name(mailbox))
            .filter(|m| !m.deleting)
            .ok_or_else(|| no_mailbox(user, mailbox))?;
        let mut mask = 0;
        for n in names {
            match mb.keyword_bit(n) {
                Some(bit) => mask |= flags::keyword_flag(bit),
                None => return Ok(None),
            }
        }
        Ok(Some(mask))
    }

    /// Defines the keywords of `names` the mailbox lacks, durably (caller holds the
    /// user's lock). Not `best_effort`: `Exhausted` if they do not all fit, and none is
    /// defined; `best_effort`: as many as fit, in order.
    async fn define_keywords_locked(
        &self,
        user: &str,
        (mailbox, id): (&str, u64),
        names: &[String],
        best_effort: bool,
    ) -> Result<(), StoreError> {
        let bytes: usize = names.iter().map(|n| meta_record_bytes(n.len())).sum();
        self.inner.meta.wait_room(bytes).await;
        let records = {
            let mut idx = self.inner.index.borrow_mut();
            let mb = live_mailbox(&mut idx.mailboxes, id, user, mailbox)?;
            let mut new: Vec<(u8, String)> = Vec::new();
            let mut taken = 0u32;
            for n in names {
                let known = mb.keyword_bit(n).is_some()
                    || new.iter().any(|(_, k)| k.eq_ignore_ascii_case(n));
                if known {
                    continue;
                }
                let free = (flags::KEYWORD_SHIFT as u8..32).find(|b| {
                    mb.keyword_name(*b).is_none() && taken & flags::keyword_flag(*b) == 0
                });
                match free {
                    Some(bit) => {
                        taken |= flags::keyword_flag(bit);
                        new.push((bit, n.clone()));
                    }
                    None if best_effort => break,
                    None => {
                        return Err(StoreError::Exhausted {
                            user: user.to_owned(),
                            mailbox: mailbox.to_owned(),
                            what: "keyword bits",
                        })
                    }
                }
            }
            let id = mb.id;
            new.into_iter()
                .map(|(bit, name)| KeywordDefine {
                    mailbox_id: id,
                    modseq: alloc_modseq(mb),
                    bit,
                    name,
                })
                .collect::<Vec<_>>()
        };
        let mut tickets = Vec::with_capacity(records.len());
        for r in records {
            tickets.push(self.push_meta(MetaRecord::KeywordDefine(r))?);
        }
        wait_all(&tickets).await
    }

    fn check_absent(&self, user: &str, name: &str) -> Result<(), StoreError> {
        if self.inner.index.borrow().mailbox(user, name).is_some() {
            return Err(StoreError::AlreadyExists {
                user: user.to_owned(),
                mailbox: name.to_owned(),
            });
        }
        Ok(())
    }

    fn is_subscribed(&self, user: &str, name: &str) -> bool {
        self.inner
            .index
            .borrow()
            .account(user)
            .is_some_and(|a| a.subscriptions.contains(name))
    }

    fn subscriptions_count(&self, user: &str) -> usize {
        self.inner
            .index
            .borrow()
            .account(user)
            .map_or(0, |a| a.subscriptions.len())
    }

    /// A Subscription record with the user's next sequence (synchronous: push at once).
    fn subscription_record(&self, user: &str, name: &str, subscribed: bool) -> MetaRecord {
        let mut idx = self.inner.index.borrow_mut();
        if !idx.accounts.contains_key(user) {
            idx.accounts.insert(user.to_owned(), Default::default());
        }
        let seq = match idx.accounts.get_mut(user) {
            Some(a) => {
                let seq = a.seq_next.max(a.seq_highest + 1).max(1);
                a.seq_next = seq + 1;
                seq
            }
            None => 1,
        };
        MetaRecord::Subscription(Subscription {
            user: user.to_owned(),
            seq,
            name: name.to_owned(),
            subscribed,
        })
    }

    /// After a failed batch: drops the pending entries this call made.
    fn forget_pending(&self, id: u64, made: &[(u32, u64)]) {
        if let Some(mb) = self.inner.index.borrow_mut().mailboxes.get_mut(&id) {
            mb.forget_pending(made);
        }
    }
}

/// The mailbox `id` if it exists and is not being deleted.
fn live_mailbox<'a>(
    mailboxes: &'a mut std::collections::HashMap<u64, Mailbox>,
    id: u64,
    user: &str,
    name: &str,
) -> Result<&'a mut Mailbox, StoreError> {
    mailboxes
        .get_mut(&id)
        .filter(|m| !m.deleting)
        .ok_or_else(|| no_mailbox(user, name))
}

pub(super) fn no_mailbox(user: &str, name: &str) -> StoreError {
    StoreError::NoSuchMailbox {
        user: user.to_owned(),
        mailbox: name.to_owned(),
    }
}

pub(super) fn alloc_modseq(mb: &mut Mailbox) -> u64 {
    let modseq = mb.modseq_next;
    mb.modseq_next += 1;
    modseq
}

pub(super) fn alloc_uid(mb: &mut Mailbox) -> Result<u32, StoreError> {
    if mb.uid_next == u32::MAX || mb.uid_next == 0 {
        return Err(StoreError::Exhausted {
            user: mb.user.clone(),
            mailbox: mb.name.clone(),
            what: "UIDs",
        });
    }
    let uid = mb.uid_next;
    mb.uid_next += 1;
    Ok(uid)
}

/// `child` is `parent/<rest>`: returns `rest`.
fn child_suffix<'a>(child: &'a str, parent: &str) -> Option<&'a str> {
    child.strip_prefix(parent)?.strip_prefix('/')
}

fn check_special_use(bits: u8) -> Result<(), StoreError> {
    if bits & !special_use::MASK != 0 {
        return Err(StoreError::InvalidName {
            what: "special-use bit set",
            name: format!("{bits:#x}"),
            reason: "unknown bits",
        });
    }
    Ok(())
}

fn check_count(what: &'static str, n: usize) -> Result<(), StoreError> {
    if n > UIDS_PER_CALL_MAX {
        return Err(StoreError::TooLarge {
            what,
            bytes: n,
            max: UIDS_PER_CALL_MAX,
        });
    }
    Ok(())
}

pub(super) fn check_blob(blob: &BlobRef) -> Result<(), StoreError> {
    if blob.offset > u64::from(u32::MAX) {
        return Err(StoreError::TooLarge {
            what: "blob offset",
            bytes: usize::try_from(blob.offset).unwrap_or(usize::MAX),
            max: u32::MAX as usize,
        });
    }
    Ok(())
}
