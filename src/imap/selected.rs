//! The selected mailbox as one session sees it: the message sequence numbers it has told
//! the client about, with the flags and modseq it last reported for each, and the code that
//! brings that view up to date with the store (untagged EXISTS / EXPUNGE / VANISHED / FETCH).
//!
//! The index on the owner core is the truth; each session keeps its own `Vec<ViewEntry>`
//! (16 bytes per message), because sequence numbers are per session: a message expunged by
//! another session keeps its number here until this session is allowed to report the
//! EXPUNGE (never during FETCH, STORE or SEARCH: RFC 9051 §7.5.1).

use std::rc::Rc;

use crate::runtime::watch::Signal;
use crate::store::MessageEntry;

use super::flags::{self, Keywords};
use super::sequence::{self, SequenceSet};

/// One message of the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewEntry {
    pub uid: u32,
    pub flags: u32,
    pub modseq: u64,
    /// Expunged in the store but not yet reported to this client.
    pub expunged: bool,
}

/// The selected state of one session.
pub struct Selected {
    pub name: String,
    pub id: u64,
    pub read_only: bool,
    pub uid_validity: u32,
    pub view: Vec<ViewEntry>,
    /// Highest modseq of the mailbox this view reflects.
    pub modseq_seen: u64,
    /// UIDs that are \Recent for this session (ascending): those it was the first session
    /// to learn about (RFC 3501 §2.3.2), claimed through the core.
    pub recent: Vec<u32>,
    /// Keyword names the client has been shown with FLAGS (in bit order).
    pub keywords_shown: usize,
    /// Some view entries are expunged in the store but not yet reported.
    pub ghosts: bool,
    /// Fires when the store changes this mailbox.
    pub signal: Rc<Signal>,
    /// `SEARCH RETURN (SAVE)` result, as UIDs (RFC 5182).
    pub saved: Vec<u32>,
}

/// What the sync may report.
#[derive(Debug, Clone, Copy)]
pub struct SyncMode {
    /// EXPUNGE/VANISHED may be sent (not during FETCH, STORE, SEARCH).
    pub expunges: bool,
    /// QRESYNC enabled: VANISHED instead of EXPUNGE.
    pub qresync: bool,
    /// CONDSTORE enabled: flag updates carry MODSEQ.
    pub condstore: bool,
    /// IMAP4rev2 (no RECENT responses).
    pub rev2: bool,
}

impl Selected {
    /// Number of messages the client knows about (EXISTS).
    pub fn exists(&self) -> u32 {
        self.view.len() as u32
    }

    /// Sequence number (1-based) of a UID in the view.
    pub fn seq_of(&self, uid: u32) -> Option<u32> {
        self.view
            .binary_search_by_key(&uid, |e| e.uid)
            .ok()
            .map(|i| i as u32 + 1)
    }

    /// The highest UID in the view (0 if empty).
    pub fn uid_max(&self) -> u32 {
        self.view.last().map(|e| e.uid).unwrap_or(0)
    }

    pub fn recent_count(&self) -> u32 {
        self.recent.len() as u32
    }

    pub fn is_recent(&self, uid: u32) -> bool {
        self.recent.binary_search(&uid).is_ok()
    }

    /// Adds the view's UIDs at or above `first` to the recent set (after a claim).
    pub fn mark_recent_from(&mut self, first: u32) {
        let start = self.view.partition_point(|e| e.uid < first);
        for e in &self.view[start..] {
            if self.recent.last().is_none_or(|&last| last < e.uid) {
                self.recent.push(e.uid);
            }
        }
    }

    /// The UIDs of `set` (`*` = `star`, at most `limit`) that are not in the view, as
    /// ascending ranges: O(ranges + view) whatever the numbers, at most
    /// [`sequence::RANGES_MAX`] ranges (for VANISHED (EARLIER)).
    pub fn absent(&self, set: &SequenceSet, star: u32, limit: u32) -> Vec<(u32, u32)> {
        let mut gaps = Vec::new();
        for r in set.ranges_resolved(star) {
            let (lo, hi) = (*r.start(), (*r.end()).min(limit));
            if lo > hi {
                continue;
            }
            let mut next = Some(lo);
            let first = self.view.partition_point(|e| e.uid < lo);
            for e in self.view[first..].iter().take_while(|e| e.uid <= hi) {
                if let Some(n) = next.filter(|&n| n < e.uid) {
                    gaps.push((n, e.uid - 1));
                }
                next = e.uid.checked_add(1);
            }
            if let Some(n) = next.filter(|&n| n <= hi) {
                gaps.push((n, hi));
            }
            if gaps.len() >= sequence::RANGES_MAX {
                gaps.truncate(sequence::RANGES_MAX);
                break;
            }
        }
        gaps
    }

    /// Whether a sync would have nothing to report: the mailbox's modseq (bumped by every
    /// append, flag change, keyword and expunge) is the one last synced, and no expunge is
    /// waiting to be reported where reporting is allowed.
    pub fn is_current(&self, modseq_highest: u64, expunges: bool) -> bool {
        modseq_highest == self.modseq_seen && !(expunges && self.ghosts)
    }

    /// Brings the view up to date with `current` (the mailbox's entries, ascending by UID),
    /// writing the untagged responses. `keywords` renders keyword bits; `claim_recent(uid_max)`
    /// claims new messages for this session and returns the first UID that is recent for it.
    pub fn sync(
        &mut self,
        current: &[MessageEntry],
        modseq_highest: u64,
        keywords: &Keywords,
        mode: SyncMode,
        claim_recent: &dyn Fn(u32) -> u32,
        out: &mut Vec<u8>,
    ) {
        if keywords.len() != self.keywords_shown {
            self.keywords_shown = keywords.len();
            flags::announce(out, keywords, self.read_only);
        }
        // 1. Flag changes of messages both sides have, with the numbers the client knows.
        let mut j = 0;
        for (i, v) in self.view.iter_mut().enumerate() {
            while j < current.len() && current[j].uid < v.uid {
                j += 1;
            }
            match current.get(j) {
                Some(c) if c.uid == v.uid => {
                    // Only forward: the view may already hold a newer change (a STORE's
                    // own outcome); a modseq never goes down for a client.
                    if c.modseq > v.modseq {
                        let changed = c.flags != v.flags;
                        v.flags = c.flags;
                        v.modseq = c.modseq;
                        if changed || mode.condstore {
                            let recent = self.recent.binary_search(&v.uid).is_ok();
                            put!(out, "* {} FETCH (", i + 1);
                            if mode.qresync {
                                put!(out, "UID {} ", v.uid);
                            }
                            out.extend_from_slice(b"FLAGS ");
                            flags::write_flags(out, v.flags, recent && !mode.rev2, keywords);
                            if mode.condstore {
                                put!(out, " MODSEQ ({})", v.modseq);
                            }
                            out.extend_from_slice(b")\r\n");
                        }
                    }
                }
                _ => v.expunged = true,
            }
        }
        // 2. Expunges.
        self.ghosts = self.view.iter().any(|e| e.expunged);
        if mode.expunges && self.ghosts {
            if mode.qresync {
                let gone: Vec<u32> = self
                    .view
                    .iter()
                    .filter(|e| e.expunged)
                    .map(|e| e.uid)
                    .collect();
                let set = SequenceSet::from_sorted(&gone);
                put!(out, "* VANISHED {set}\r\n");
            } else {
                // Highest first: each number stays valid for the client as it applies them.
                for (i, e) in self.view.iter().enumerate().rev() {
                    if e.expunged {
                        put!(out, "* {} EXPUNGE\r\n", i + 1);
                    }
                }
            }
            self.view.retain(|e| !e.expunged);
            self.ghosts = false;
            let view = &self.view;
            self.recent
                .retain(|u| view.binary_search_by_key(u, |e| e.uid).is_ok());
        }
        // 3. New messages.
        let last = self.uid_max();
        let before = self.view.len();
        let start = current.partition_point(|c| c.uid <= last);
        for c in &current[start..] {
            self.view.push(ViewEntry {
                uid: c.uid,
                flags: c.flags,
                modseq: c.modseq,
                expunged: false,
            });
        }
        if self.view.len() != before {
            if !self.read_only {
                let first = claim_recent(self.uid_max());
                self.mark_recent_from(first);
            }
            put!(out, "* {} EXISTS\r\n", self.view.len());
            if !mode.rev2 {
                put!(out, "* {} RECENT\r\n", self.recent_count());
            }
        }
        self.modseq_seen = self.modseq_seen.max(modseq_highest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::watch::MailboxWatch;
    use crate::store::BlobRef;

    fn entry(uid: u32, flags: u32, modseq: u64) -> MessageEntry {
        MessageEntry::new(
            uid,
            flags,
            modseq,
            0,
            BlobRef {
                core: 0,
                segment: 1,
                offset: 0,
                len: 10,
            },
        )
        .unwrap()
    }

    fn selected(uids: &[u32]) -> Selected {
        Selected {
            name: "INBOX".into(),
            id: 1,
            read_only: false,
            uid_validity: 1,
            view: uids
                .iter()
                .map(|&uid| ViewEntry {
                    uid,
                    flags: 0,
                    modseq: 1,
                    expunged: false,
                })
                .collect(),
            modseq_seen: 1,
            recent: Vec::new(),
            keywords_shown: 0,
            ghosts: false,
            signal: MailboxWatch::default().subscribe(1),
            saved: Vec::new(),
        }
    }

    const REV1: SyncMode = SyncMode {
        expunges: true,
        qresync: false,
        condstore: false,
        rev2: false,
    };

    #[test]
    fn expunges_are_reported_highest_first_then_exists() {
        let mut s = selected(&[1, 2, 3, 4]);
        let current = [entry(1, 0, 1), entry(3, 0, 1), entry(5, 0, 2)];
        let mut out = Vec::new();
        s.sync(
            &current,
            2,
            &Keywords::default(),
            REV1,
            &|m| m + 1,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "* 4 EXPUNGE\r\n* 2 EXPUNGE\r\n* 3 EXISTS\r\n* 0 RECENT\r\n"
        );
        assert_eq!(s.view.iter().map(|e| e.uid).collect::<Vec<_>>(), [1, 3, 5]);
    }

    #[test]
    fn expunges_wait_when_not_allowed() {
        let mut s = selected(&[1, 2]);
        let mut out = Vec::new();
        let mode = SyncMode {
            expunges: false,
            ..REV1
        };
        s.sync(
            &[entry(2, 0, 1)],
            2,
            &Keywords::default(),
            mode,
            &|m| m + 1,
            &mut out,
        );
        assert!(out.is_empty());
        assert_eq!(s.exists(), 2);
        assert!(s.view[0].expunged);
        s.sync(
            &[entry(2, 0, 1)],
            2,
            &Keywords::default(),
            REV1,
            &|m| m + 1,
            &mut out,
        );
        assert_eq!(String::from_utf8(out).unwrap(), "* 1 EXPUNGE\r\n");
    }

    #[test]
    fn flag_changes_become_fetch_with_modseq_under_condstore() {
        let mut s = selected(&[7]);
        let mut out = Vec::new();
        let mode = SyncMode {
            condstore: true,
            ..REV1
        };
        s.sync(
            &[entry(7, crate::store::flags::SEEN, 9)],
            9,
            &Keywords::default(),
            mode,
            &|m| m + 1,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "* 1 FETCH (FLAGS (\\Seen) MODSEQ (9))\r\n"
        );
    }

    #[test]
    fn vanished_under_qresync() {
        let mut s = selected(&[1, 2, 3, 9]);
        let mut out = Vec::new();
        let mode = SyncMode {
            qresync: true,
            condstore: true,
            ..REV1
        };
        s.sync(
            &[entry(2, 0, 1)],
            4,
            &Keywords::default(),
            mode,
            &|m| m + 1,
            &mut out,
        );
        assert_eq!(String::from_utf8(out).unwrap(), "* VANISHED 1,3,9\r\n");
    }

    #[test]
    fn a_view_newer_than_the_index_is_never_reported_backwards() {
        // The session's own STORE outcome (modseq 9) is in the view; the index still shows
        // an older published change (modseq 7): no FETCH, and the view keeps 9.
        let mut s = selected(&[4]);
        s.view[0].modseq = 9;
        s.view[0].flags = crate::store::flags::SEEN;
        let mut out = Vec::new();
        let mode = SyncMode {
            condstore: true,
            ..REV1
        };
        s.sync(
            &[entry(4, 0, 7)],
            9,
            &Keywords::default(),
            mode,
            &|m| m + 1,
            &mut out,
        );
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
        assert_eq!(s.view[0].modseq, 9);
    }

    #[test]
    fn absent_uids_are_the_gaps_of_the_view_within_the_set() {
        let s = selected(&[2, 3, 7, 10]);
        let set = SequenceSet::parse(b"1:8,10:*").unwrap();
        assert_eq!(s.absent(&set, 10, 10), vec![(1, 1), (4, 6), (8, 8)]);
        // Bounded by `limit`, and a huge range costs nothing.
        let all = SequenceSet::parse(b"1:4000000000").unwrap();
        assert_eq!(s.absent(&all, 10, 9), vec![(1, 1), (4, 6), (8, 9)]);
        assert!(selected(&[]).absent(&all, 1, 0).is_empty());
    }

    #[test]
    fn is_current_until_the_modseq_moves_or_a_ghost_may_be_reported() {
        let mut s = selected(&[1, 2]);
        assert!(s.is_current(1, true));
        assert!(!s.is_current(2, true));
        s.ghosts = true;
        assert!(
            s.is_current(1, false),
            "ghosts wait while expunges are not allowed"
        );
        assert!(!s.is_current(1, true));
    }
}
