//! FETCH and UID FETCH (RFC 9051 §6.4.5, RFC 7162 CHANGEDSINCE/VANISHED).
//!
//! Items that need only the index (FLAGS, UID, INTERNALDATE, RFC822.SIZE, MODSEQ) never touch
//! the message. The others read the blob from its segment (page cache, CRC-checked) and use
//! its MIME structure, parsed once and kept in a per-core cache keyed by blob position (a
//! blob never changes), so fetching ENVELOPE/BODYSTRUCTURE of a whole mailbox again does not
//! parse anything again. Partial fetches copy only their range into the output.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::mime::{MessageStructure, SectionSpec};
use crate::runtime::core::Core;
use crate::store::{self, flags as sflags, BlobRef, MessageEntry};

use super::command::{FetchItem, SectionText};
use super::flags::{self, Keywords};
use super::response;
use super::selected::Selected;
use super::sequence::SequenceSet;
use super::server::Conn;
use super::session::resolve;

/// Parsed structures kept per core.
pub const STRUCTURE_CACHE_ENTRIES_MAX: usize = 20_000;

thread_local! {
    static STRUCTURES: RefCell<HashMap<(u16, u32, u64), Rc<MessageStructure>>> =
        RefCell::new(HashMap::new());
}

/// The structure of a blob, from the cache or parsed now.
pub fn structure_of(blob: BlobRef, bytes: &[u8]) -> Rc<MessageStructure> {
    let key = (blob.core, blob.segment, blob.offset);
    if let Some(s) = STRUCTURES.with(|c| c.borrow().get(&key).cloned()) {
        return s;
    }
    let s = Rc::new(crate::mime::Message::parse(bytes));
    STRUCTURES.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= STRUCTURE_CACHE_ENTRIES_MAX {
            c.clear();
        }
        c.insert(key, s.clone());
    });
    s
}

pub struct FetchContext<'a> {
    pub core: &'a Rc<Core>,
    pub user: &'a str,
    pub rev2: bool,
    pub condstore: bool,
}

pub enum FetchFailure {
    /// The connection failed while streaming.
    Io,
    /// `TAG NO <text>`.
    No(String),
}

fn needs_body(items: &[FetchItem]) -> bool {
    items.iter().any(|i| {
        !matches!(
            i,
            FetchItem::Flags
                | FetchItem::Uid
                | FetchItem::InternalDate
                | FetchItem::Rfc822Size
                | FetchItem::ModSeq
        )
    })
}

fn sets_seen(items: &[FetchItem]) -> bool {
    items.iter().any(|i| match i {
        FetchItem::Rfc822 | FetchItem::Rfc822Text => true,
        FetchItem::BodySection { peek, .. } | FetchItem::Binary { peek, .. } => !peek,
        _ => false,
    })
}

#[allow(clippy::too_many_arguments)]
pub async fn run(
    cx: &FetchContext<'_>,
    sel: &mut Selected,
    uid: bool,
    set: &SequenceSet,
    items: &[FetchItem],
    changed_since: Option<u64>,
    vanished: bool,
    conn: &mut Conn,
) -> Result<(), FetchFailure> {
    let store = cx.core.store.clone();
    let mut targets = resolve(sel, uid, set);
    if !uid && targets.is_empty() && !set.is_saved() && sel.exists() == 0 {
        return Err(FetchFailure::No(
            "[CANNOT] No messages in the mailbox.".into(),
        ));
    }
    if vanished && changed_since.is_some() {
        let uid_max = sel.uid_max();
        let gone = sel.absent(set, uid_max.max(1), uid_max);
        if !gone.is_empty() {
            put!(
                conn.out,
                "* VANISHED (EARLIER) {}\r\n",
                SequenceSet::from_ranges(&gone)
            );
        }
    }
    if let Some(since) = changed_since {
        targets.retain(|(seq, _)| sel.view[*seq as usize - 1].modseq > since);
    }
    // \Seen first (one group commit for all), so the FLAGS we send are the new ones.
    let mut seen_now = Vec::new();
    if sets_seen(items) && !sel.read_only {
        let changes: Vec<store::FlagChange> = targets
            .iter()
            .filter(|(seq, _)| sel.view[*seq as usize - 1].flags & sflags::SEEN == 0)
            .map(|&(_, u)| store::FlagChange {
                uid: u,
                mode: store::FlagMode::Add,
                mask: sflags::SEEN,
                unchanged_since: None,
            })
            .collect();
        if !changes.is_empty() {
            match store.update_flags(cx.user, &sel.name, &changes).await {
                Ok(outcomes) => {
                    for o in outcomes {
                        if let store::FlagOutcome::Changed { uid, flags, modseq } = o {
                            if let Some(seq) = sel.seq_of(uid) {
                                let e = &mut sel.view[seq as usize - 1];
                                if modseq > e.modseq {
                                    e.flags = flags;
                                    e.modseq = modseq;
                                }
                                seen_now.push(uid);
                            }
                        }
                    }
                }
                Err(e) => {
                    eprintln!("ringmail: imap: setting \\Seen failed: {e}");
                    return Err(FetchFailure::No("[SERVERBUG] Internal error.".into()));
                }
            }
        }
    }
    seen_now.sort_unstable();
    let keywords = Keywords::of(&store, cx.user, &sel.name);
    let entries: Vec<Option<MessageEntry>> = store
        .with_mailbox(cx.user, &sel.name, |mb| {
            let msgs = mb.messages();
            targets
                .iter()
                .map(|&(_, u)| {
                    msgs.binary_search_by_key(&u, |m| m.uid)
                        .ok()
                        .map(|i| msgs[i])
                })
                .collect()
        })
        .unwrap_or_else(|| targets.iter().map(|_| None).collect());
    let body = needs_body(items);
    // `BODY[]<o.n>` alone (with index items): read just the ranges (see `store::cache`).
    let ranges_only = body
        && items.iter().all(|i| match i {
            FetchItem::BodySection {
                section, partial, ..
            } => partial.is_some() && section.part.is_empty() && section.text.is_none(),
            other => !needs_body(std::slice::from_ref(other)),
        });
    let mut missing = false;
    let with_uid = uid && !items.iter().any(|i| matches!(i, FetchItem::Uid));
    let with_modseq =
        changed_since.is_some() && !items.iter().any(|i| matches!(i, FetchItem::ModSeq));
    for (&(seq, u), entry) in targets.iter().zip(&entries) {
        let Some(entry) = entry else {
            missing = true;
            continue;
        };
        let view = sel.view[seq as usize - 1];
        let message = if body && !ranges_only {
            match store.read_blob_settled(entry.blob()).await {
                Ok(b) => Some(b),
                Err(e) => {
                    eprintln!("ringmail: imap: reading message {u} of {}: {e}", sel.name);
                    missing = true;
                    continue;
                }
            }
        } else {
            None
        };
        let out = &mut conn.out;
        put!(out, "* {seq} FETCH (");
        let mut first = true;
        let mut sep = |out: &mut Vec<u8>| {
            if !first {
                out.push(b' ');
            }
            first = false;
        };
        if with_uid {
            sep(out);
            put!(out, "UID {u}");
        }
        let mut flags_written = false;
        let recent = sel.is_recent(u) && !cx.rev2;
        for item in items {
            sep(out);
            match item {
                FetchItem::Uid => put!(out, "UID {u}"),
                FetchItem::Flags => {
                    out.extend_from_slice(b"FLAGS ");
                    flags::write_flags(out, view.flags, recent, &keywords);
                    flags_written = true;
                }
                FetchItem::ModSeq => {
                    put!(out, "MODSEQ ({})", view.modseq)
                }
                FetchItem::InternalDate => {
                    out.extend_from_slice(b"INTERNALDATE ");
                    response::date_time(out, entry.internal_date, 0);
                }
                FetchItem::Rfc822Size => {
                    put!(out, "RFC822.SIZE {}", entry.blob().len)
                }
                FetchItem::BodySection {
                    partial: Some((origin, len)),
                    ..
                } if ranges_only => {
                    let (o, l) = (*origin as usize, *len as usize);
                    let range = o..o.saturating_add(l);
                    let read = match store.read_blob_range(entry.blob(), range.clone()) {
                        Err(e) if e.is_unwritten() => {
                            // Published a moment before its blob: wait for the batch.
                            let _ = store.read_blob_settled(entry.blob()).await;
                            store.read_blob_range(entry.blob(), range)
                        }
                        other => other,
                    };
                    match read {
                        Ok(bytes) => {
                            put!(out, "BODY[]<{origin}> ");
                            literal(out, &bytes);
                        }
                        Err(e) => {
                            eprintln!("ringmail: imap: reading message {u} of {}: {e}", sel.name);
                            put!(out, "BODY[]<{origin}> NIL");
                        }
                    }
                }
                _ => {
                    let Some(msg) = message.as_deref() else {
                        continue;
                    };
                    write_body_item(out, item, msg, entry.blob());
                }
            }
        }
        if seen_now.binary_search(&u).is_ok() && !flags_written {
            sep(out);
            out.extend_from_slice(b"FLAGS ");
            flags::write_flags(out, view.flags, recent, &keywords);
        }
        if (with_modseq || (cx.condstore && seen_now.binary_search(&u).is_ok()))
            && !items.iter().any(|i| matches!(i, FetchItem::ModSeq))
        {
            sep(out);
            put!(out, "MODSEQ ({})", view.modseq);
        }
        out.extend_from_slice(b")\r\n");
        if conn.flush_if_large().await.is_err() {
            return Err(FetchFailure::Io);
        }
    }
    if missing {
        return Err(FetchFailure::No(
            "[EXPUNGEISSUED] Some of the requested messages no longer exist.".into(),
        ));
    }
    Ok(())
}

/// Writes `{n}\r\n` + bytes (or `""` when empty, as Dovecot does for missing sections? no:
/// an empty literal is sent as `""`).
/// A message part as a FETCH value: `""` when empty (as before), a literal8 (`~{n}`) when it
/// holds NUL (RFC 3516), else `response::literal`.
fn literal(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.is_empty() {
        out.extend_from_slice(b"\"\"");
        return;
    }
    if bytes.contains(&0) {
        out.push(b'~');
    }
    response::literal(out, bytes);
}

fn partial_of(bytes: &[u8], partial: Option<(u32, u32)>) -> &[u8] {
    match partial {
        None => bytes,
        Some((origin, len)) => {
            let start = (origin as usize).min(bytes.len());
            let end = start.saturating_add(len as usize).min(bytes.len());
            &bytes[start..end]
        }
    }
}

fn write_body_item(out: &mut Vec<u8>, item: &FetchItem, msg: &[u8], blob: BlobRef) {
    let structure = || structure_of(blob, msg);
    match item {
        FetchItem::Envelope => {
            out.extend_from_slice(b"ENVELOPE ");
            structure().envelope(msg, out);
        }
        FetchItem::BodyStructure => {
            out.extend_from_slice(b"BODYSTRUCTURE ");
            structure().body_structure(msg, true, out);
        }
        FetchItem::Body => {
            out.extend_from_slice(b"BODY ");
            structure().body_structure(msg, false, out);
        }
        FetchItem::Rfc822 => {
            out.extend_from_slice(b"RFC822 ");
            literal(out, msg);
        }
        FetchItem::Rfc822Header => {
            out.extend_from_slice(b"RFC822.HEADER ");
            let h = structure().section(msg, &[], SectionSpec::Header);
            literal(out, h.as_deref().unwrap_or(b""));
        }
        FetchItem::Rfc822Text => {
            out.extend_from_slice(b"RFC822.TEXT ");
            let t = structure().section(msg, &[], SectionSpec::Text);
            literal(out, t.as_deref().unwrap_or(b""));
        }
        FetchItem::BodySection {
            section, partial, ..
        } => {
            out.extend_from_slice(b"BODY");
            response::section(out, section);
            if let Some((origin, _)) = partial {
                put!(out, "<{origin}>");
            }
            out.push(b' ');
            let spec = match &section.text {
                None => SectionSpec::Full,
                Some(SectionText::Header) => SectionSpec::Header,
                Some(SectionText::HeaderFields(n)) => SectionSpec::HeaderFields(n),
                Some(SectionText::HeaderFieldsNot(n)) => SectionSpec::HeaderFieldsNot(n),
                Some(SectionText::Text) => SectionSpec::Text,
                Some(SectionText::Mime) => SectionSpec::Mime,
            };
            let data = if section.part.is_empty() && section.text.is_none() {
                Some(std::borrow::Cow::Borrowed(msg))
            } else {
                structure().section(msg, &section.part, spec)
            };
            match data {
                Some(d) => literal(out, partial_of(&d, *partial)),
                None => out.extend_from_slice(b"NIL"),
            }
        }
        FetchItem::Binary { part, partial, .. } => {
            out.extend_from_slice(b"BINARY[");
            response::part(out, part);
            out.push(b']');
            if let Some((origin, _)) = partial {
                put!(out, "<{origin}>");
            }
            out.push(b' ');
            match structure().try_binary(msg, part).ok() {
                Some(d) => literal(out, partial_of(&d, *partial)),
                None => out.extend_from_slice(b"NIL"),
            }
        }
        FetchItem::BinarySize { part } => {
            let size = structure().binary_size(msg, part).unwrap_or(0);
            out.extend_from_slice(b"BINARY.SIZE[");
            response::part(out, part);
            put!(out, "] {size}");
        }
        FetchItem::Flags
        | FetchItem::Uid
        | FetchItem::InternalDate
        | FetchItem::Rfc822Size
        | FetchItem::ModSeq => {}
    }
}
