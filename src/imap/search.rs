//! SEARCH and UID SEARCH (RFC 9051 §6.4.4, RFC 3501 §6.4.4), with ESEARCH (RFC 4731) and
//! SEARCHRES (RFC 5182) result options and CONDSTORE's MODSEQ key.
//!
//! Keys that only need the index (flags, UIDs, sizes, internal dates, modseq) are evaluated
//! from the entry; a message is read and its MIME structure used only when a header, body or
//! sent-date key needs it, at most once per message per search.

use std::rc::Rc;

use crate::mime::MessageStructure;
use crate::store::{flags as sflags, MessageEntry, Store};

use super::command::{SearchKey, SearchReturn};
use super::flags::Keywords;
use super::selected::Selected;
use super::sequence::SequenceSet;

/// One matching message.
#[derive(Debug, Clone, Copy)]
pub struct Hit {
    pub seq: u32,
    pub uid: u32,
    pub modseq: u64,
}

/// Evaluates `key` over the selected view.
pub fn run(store: &Store, user: &str, sel: &Selected, key: &SearchKey) -> Vec<Hit> {
    let entries: Vec<Option<MessageEntry>> = store
        .with_mailbox(user, &sel.name, |mb| {
            let msgs = mb.messages();
            sel.view
                .iter()
                .map(|v| {
                    msgs.binary_search_by_key(&v.uid, |m| m.uid)
                        .ok()
                        .map(|i| msgs[i])
                })
                .collect()
        })
        .unwrap_or_default();
    let keywords = Keywords::of(store, user, &sel.name);
    let exists = sel.exists();
    let uid_max = sel.uid_max();
    let mut hits = Vec::new();
    for (i, v) in sel.view.iter().enumerate() {
        let Some(Some(entry)) = entries.get(i) else {
            continue;
        };
        let mut m = Candidate {
            seq: i as u32 + 1,
            entry,
            flags: v.flags,
            recent: sel.is_recent(v.uid),
            store,
            loaded: None,
            exists,
            uid_max,
            saved: &sel.saved,
            keywords: &keywords,
        };
        if m.matches(key) {
            hits.push(Hit {
                seq: i as u32 + 1,
                uid: v.uid,
                modseq: entry.modseq,
            });
        }
    }
    hits
}

/// A message read for SEARCH: its bytes and MIME structure.
type Loaded = (Rc<[u8]>, Rc<MessageStructure>);

struct Candidate<'a> {
    seq: u32,
    entry: &'a MessageEntry,
    flags: u32,
    recent: bool,
    store: &'a Store,
    /// The message and its structure, read on first need (None inside: unreadable).
    loaded: Option<Option<Loaded>>,
    exists: u32,
    uid_max: u32,
    saved: &'a [u32],
    keywords: &'a Keywords,
}

impl Candidate<'_> {
    fn message(&mut self) -> Option<(&[u8], &MessageStructure)> {
        if self.loaded.is_none() {
            let blob = self.entry.blob();
            self.loaded = Some(match self.store.read_blob_shared(blob) {
                Ok(bytes) => {
                    let s = super::fetch::structure_of(blob, &bytes);
                    Some((bytes, s))
                }
                Err(_) => None,
            });
        }
        match &self.loaded {
            Some(Some((b, s))) => Some((&b[..], s.as_ref())),
            _ => None,
        }
    }

    fn internal_day(&self) -> i64 {
        self.entry.internal_date.div_euclid(86_400)
    }

    /// The Date: header's day in its own zone; a message without a usable Date: counts as
    /// 1970-01-01 (as Dovecot does). None only when the message cannot be read.
    fn sent_day(&mut self) -> Option<i64> {
        let (msg, s) = self.message()?;
        Some(match s.sent_date(msg) {
            Some((unix, offset_minutes)) => {
                (unix + i64::from(offset_minutes) * 60).div_euclid(86_400)
            }
            None => 0,
        })
    }

    fn text(&mut self, f: impl FnOnce(&MessageStructure, &[u8]) -> bool) -> bool {
        match self.message() {
            Some((msg, s)) => f(s, msg),
            None => false,
        }
    }

    fn matches(&mut self, key: &SearchKey) -> bool {
        use SearchKey as K;
        let f = self.flags;
        match key {
            K::All => true,
            K::Answered => f & sflags::ANSWERED != 0,
            K::Deleted => f & sflags::DELETED != 0,
            K::Draft => f & sflags::DRAFT != 0,
            K::Flagged => f & sflags::FLAGGED != 0,
            K::Seen => f & sflags::SEEN != 0,
            K::Unanswered => f & sflags::ANSWERED == 0,
            K::Undeleted => f & sflags::DELETED == 0,
            K::Undraft => f & sflags::DRAFT == 0,
            K::Unflagged => f & sflags::FLAGGED == 0,
            K::Unseen => f & sflags::SEEN == 0,
            K::Recent => self.recent,
            K::Old => !self.recent,
            K::New => self.recent && f & sflags::SEEN == 0,
            K::Keyword(k) => self.keywords.bit_of(k).is_some_and(|b| f & b != 0),
            K::Unkeyword(k) => self.keywords.bit_of(k).is_none_or(|b| f & b == 0),
            K::Larger(n) => self.entry.blob().len > *n,
            K::Smaller(n) => self.entry.blob().len < *n,
            K::Uid(set) => {
                let set = resolve_saved(set, self.saved);
                set.contains(self.entry.uid, self.uid_max.max(1))
            }
            K::SequenceSet(set) => {
                if set.is_saved() {
                    self.saved.binary_search(&self.entry.uid).is_ok()
                } else {
                    set.contains(self.seq, self.exists.max(1))
                }
            }
            K::ModSeq(m) => self.entry.modseq >= *m,
            K::Before(d) => self.internal_day() < d.days_from_epoch(),
            K::On(d) => self.internal_day() == d.days_from_epoch(),
            K::Since(d) => self.internal_day() >= d.days_from_epoch(),
            K::SentBefore(d) => self.sent_day().is_some_and(|x| x < d.days_from_epoch()),
            K::SentOn(d) => self.sent_day().is_some_and(|x| x == d.days_from_epoch()),
            K::SentSince(d) => self.sent_day().is_some_and(|x| x >= d.days_from_epoch()),
            K::From(s) => self.text(|st, m| st.address_contains(m, "From", s)),
            K::To(s) => self.text(|st, m| st.address_contains(m, "To", s)),
            K::Cc(s) => self.text(|st, m| st.address_contains(m, "Cc", s)),
            K::Bcc(s) => self.text(|st, m| st.address_contains(m, "Bcc", s)),
            K::Subject(s) => self.text(|st, m| st.subject_contains(m, s)),
            K::Header(name, s) => self.text(|st, m| st.header_contains(m, name, s)),
            K::Body(s) => self.text(|st, m| st.body_contains(m, s)),
            K::Text(s) => self.text(|st, m| st.text_contains(m, s)),
            K::Not(k) => !self.matches(k),
            K::Or(a, b) => self.matches(a) || self.matches(b),
            K::And(keys) => keys.iter().all(|k| self.matches(k)),
        }
    }
}

fn resolve_saved(set: &SequenceSet, saved: &[u32]) -> SequenceSet {
    if set.is_saved() {
        SequenceSet::from_sorted(saved)
    } else {
        set.clone()
    }
}

/// Writes the SEARCH / ESEARCH response and the tagged OK; saves the result for `$`.
#[allow(clippy::too_many_arguments)]
pub fn respond(
    tag: &str,
    uid: bool,
    rev2: bool,
    sel: &mut Selected,
    hits: &[Hit],
    returns: Option<&[SearchReturn]>,
    condstore: bool,
    out: &mut Vec<u8>,
) {
    let numbers: Vec<u32> = hits
        .iter()
        .map(|h| if uid { h.uid } else { h.seq })
        .collect();
    let modseq_max = hits.iter().map(|h| h.modseq).max();
    let esearch = returns.is_some() || rev2;
    let mut opts: Vec<SearchReturn> = returns.map(|r| r.to_vec()).unwrap_or_default();
    if returns.is_some_and(|r| r.is_empty()) || (returns.is_none() && rev2) {
        opts = vec![SearchReturn::All];
    }
    let save = opts.iter().any(|o| matches!(o, SearchReturn::Save));
    if save {
        // RFC 5182: SAVE alone (or with MIN/MAX only) decides what is saved.
        let only_minmax = opts
            .iter()
            .filter(|o| !matches!(o, SearchReturn::Save))
            .all(|o| matches!(o, SearchReturn::Min | SearchReturn::Max));
        let has_minmax = opts
            .iter()
            .any(|o| matches!(o, SearchReturn::Min | SearchReturn::Max));
        sel.saved = if only_minmax && has_minmax {
            let mut v = Vec::new();
            if opts.iter().any(|o| matches!(o, SearchReturn::Min)) {
                v.extend(hits.first().map(|h| h.uid));
            }
            if opts.iter().any(|o| matches!(o, SearchReturn::Max)) {
                v.extend(hits.last().map(|h| h.uid));
            }
            v.sort_unstable();
            v.dedup();
            v
        } else {
            hits.iter().map(|h| h.uid).collect()
        };
    }
    if !esearch {
        out.extend_from_slice(b"* SEARCH");
        for n in &numbers {
            put!(out, " {n}");
        }
        if condstore {
            if let Some(m) = modseq_max {
                put!(out, " (MODSEQ {m})");
            }
        }
        out.extend_from_slice(b"\r\n");
    } else {
        let only_save = opts.iter().all(|o| matches!(o, SearchReturn::Save));
        if !only_save || returns.is_none() {
            put!(out, "* ESEARCH (TAG \"{tag}\")");
            if uid {
                out.extend_from_slice(b" UID");
            }
            if !numbers.is_empty() {
                for o in &opts {
                    match o {
                        SearchReturn::Min => {
                            put!(out, " MIN {}", numbers[0])
                        }
                        SearchReturn::Max => put!(out, " MAX {}", numbers[numbers.len() - 1]),
                        SearchReturn::All => {
                            put!(out, " ALL {}", SequenceSet::from_sorted(&numbers))
                        }
                        SearchReturn::Count | SearchReturn::Save => {}
                    }
                }
            }
            if opts.iter().any(|o| matches!(o, SearchReturn::Count)) {
                put!(out, " COUNT {}", numbers.len());
            }
            if condstore && !numbers.is_empty() {
                // RFC 7162 §3.1.5: the highest modseq of the messages *returned*: with only
                // MIN and/or MAX, just those.
                let only_minmax = opts.iter().all(|o| {
                    matches!(
                        o,
                        SearchReturn::Min | SearchReturn::Max | SearchReturn::Save
                    )
                }) && opts
                    .iter()
                    .any(|o| matches!(o, SearchReturn::Min | SearchReturn::Max));
                let m = if only_minmax {
                    let mut m = 0;
                    if opts.iter().any(|o| matches!(o, SearchReturn::Min)) {
                        m = m.max(hits.first().map(|h| h.modseq).unwrap_or(0));
                    }
                    if opts.iter().any(|o| matches!(o, SearchReturn::Max)) {
                        m = m.max(hits.last().map(|h| h.modseq).unwrap_or(0));
                    }
                    Some(m)
                } else {
                    modseq_max
                };
                if let Some(m) = m {
                    put!(out, " MODSEQ {m}");
                }
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    put!(out, "{tag} OK Search completed.\r\n");
}
