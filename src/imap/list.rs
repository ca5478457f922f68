//! LIST (with LIST-EXTENDED selection and return options, LIST-STATUS, SPECIAL-USE), LSUB
//! and the STATUS item writer. The hierarchy delimiter is `/`.

use std::collections::BTreeMap;

use crate::store::{MailboxStatus, Store};

use super::command::{ListReturn, ListSelect, StatusItem};
use super::response;
use super::session::{normalize_inbox, status_value};

/// SPECIAL-USE attributes and the store's bits for them.
pub const SPECIAL_USE: [(u8, &str); 7] = [
    (1, "\\Drafts"),
    (2, "\\Sent"),
    (4, "\\Trash"),
    (8, "\\Junk"),
    (16, "\\Archive"),
    (32, "\\All"),
    (64, "\\Flagged"),
];

/// Most LIST responses one command writes.
pub const LIST_RESPONSES_MAX: usize = 100_000;

pub fn special_use_bit(attr: &str) -> Option<u8> {
    SPECIAL_USE
        .iter()
        .find(|(_, a)| a.eq_ignore_ascii_case(attr))
        .map(|(b, _)| *b)
}

pub struct ListContext<'a> {
    pub store: &'a Store,
    pub user: &'a str,
    pub utf8: bool,
    pub rev2: bool,
    pub selected: Option<&'a str>,
}

/// Longest LIST pattern accepted (a mailbox name is at most this long too).
pub const PATTERN_BYTES_MAX: usize = 1024;

/// Matches a name against a list-mailbox pattern (`*` anything, `%` anything but `/`).
/// Dynamic programming over (pattern, name) with one row: O(pattern × name), never
/// exponential whatever wildcards a client sends.
pub fn pattern_matches(pattern: &[u8], name: &[u8]) -> bool {
    // row[j]: pattern[..i] matches name[..j]; two rows, swapped per pattern byte.
    let mut row = vec![false; name.len() + 1];
    let mut next = vec![false; name.len() + 1];
    row[0] = true;
    for &p in pattern {
        match p {
            b'*' | b'%' => {
                let mut any = false;
                for j in 0..=name.len() {
                    if p == b'%' && j > 0 && name[j - 1] == b'/' {
                        any = false;
                    }
                    any |= row[j];
                    next[j] = any;
                }
            }
            c => {
                next[0] = false;
                for j in 1..=name.len() {
                    next[j] = row[j - 1] && name[j - 1] == c;
                }
            }
        }
        std::mem::swap(&mut row, &mut next);
    }
    row[name.len()]
}

/// Name matching with INBOX case-insensitive (the pattern's own INBOX prefix is normalized).
fn matches(pattern: &str, name: &str) -> bool {
    let p = normalize_inbox_pattern(pattern);
    pattern_matches(p.as_bytes(), name.as_bytes())
}

fn normalize_inbox_pattern(p: &str) -> String {
    // Byte comparisons: byte 5 may fall inside a multi-byte character (regression test
    // `list_pattern_multibyte`).
    let b = p.as_bytes();
    let inbox = b.get(..5).is_some_and(|h| h.eq_ignore_ascii_case(b"INBOX"))
        && matches!(b.get(5), None | Some(b'/'));
    if inbox {
        format!("INBOX{}", &p[5..])
    } else {
        p.to_string()
    }
}

/// What LIST knows about one name.
#[derive(Default, Clone)]
struct Node {
    exists: bool,
    special_use: u8,
    subscribed: bool,
    has_children: bool,
    has_subscribed_child: bool,
    status: Option<MailboxStatus>,
}

fn tree(cx: &ListContext<'_>) -> BTreeMap<String, Node> {
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    for mb in cx.store.mailboxes(cx.user) {
        let n = nodes.entry(mb.name.clone()).or_default();
        n.exists = true;
        n.special_use = mb.special_use;
        n.status = Some(mb.status);
    }
    for name in cx.store.subscriptions(cx.user) {
        nodes.entry(normalize_inbox(&name)).or_default().subscribed = true;
    }
    // Parents: every prefix level of every name.
    let names: Vec<(String, bool, bool)> = nodes
        .iter()
        .map(|(k, v)| (k.clone(), v.exists, v.subscribed))
        .collect();
    for (name, exists, subscribed) in names {
        let mut at = 0;
        while let Some(i) = name[at..].find('/') {
            let parent = &name[..at + i];
            let p = nodes.entry(parent.to_string()).or_default();
            if exists {
                p.has_children = true;
            }
            if subscribed {
                p.has_subscribed_child = true;
            }
            at += i + 1;
        }
    }
    nodes
}

fn canonical(cx: &ListContext<'_>, reference: &[u8], pattern: &[u8]) -> Option<String> {
    // A pattern that is not valid mUTF-7 (wildcards can split a `&...-` run) is matched
    // as written, as Dovecot does.
    let decode = |b: &[u8]| -> Option<String> {
        if cx.utf8 {
            std::str::from_utf8(b).ok().map(str::to_string)
        } else {
            super::utf7::decode(b)
                .ok()
                .or_else(|| std::str::from_utf8(b).ok().map(str::to_string))
        }
    };
    let r = decode(reference)?;
    let p = decode(pattern)?;
    if p.starts_with('/') || r.is_empty() {
        return Some(p);
    }
    if r.ends_with('/') {
        Some(format!("{r}{p}"))
    } else {
        Some(format!("{r}/{p}"))
    }
}

fn write_line(
    cx: &ListContext<'_>,
    out: &mut Vec<u8>,
    verb: &str,
    name: &str,
    attrs: &[&str],
    extra: Option<&str>,
) {
    put!(out, "* {verb} ({}) \"/\" ", attrs.join(" "));
    response::mailbox_name(out, name, cx.utf8);
    if let Some(e) = extra {
        out.push(b' ');
        out.extend_from_slice(e.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

pub fn handle_list(
    cx: &ListContext<'_>,
    tag: &str,
    reference: &[u8],
    patterns: &[Vec<u8>],
    select: &ListSelect,
    returns: &ListReturn,
    out: &mut Vec<u8>,
) {
    // LIST "" "": the hierarchy delimiter and root.
    if patterns.len() == 1 && patterns[0].is_empty() && !select.subscribed && !select.special_use {
        out.extend_from_slice(b"* LIST (\\Noselect) \"/\" \"\"\r\n");
        put!(out, "{tag} OK List completed.\r\n");
        return;
    }
    if patterns.iter().any(|p| p.len() > PATTERN_BYTES_MAX) || reference.len() > PATTERN_BYTES_MAX {
        put!(out, "{tag} BAD Mailbox pattern too long.\r\n");
        return;
    }
    let mut canon = Vec::new();
    for p in patterns {
        match canonical(cx, reference, p) {
            Some(c) => canon.push(c),
            None => {
                put!(out, "{tag} NO Mailbox name is not valid mUTF-7.\r\n");
                return;
            }
        }
    }
    let nodes = tree(cx);
    let mut written = 0;
    let extended = select.subscribed || select.special_use || select.remote;
    for (name, node) in &nodes {
        if written >= LIST_RESPONSES_MAX {
            break;
        }
        if !canon.iter().any(|p| matches(p, name)) {
            continue;
        }
        let mut attrs: Vec<&str> = Vec::new();
        let mut extra: Option<String> = None;
        if select.subscribed {
            if !node.subscribed {
                // CHILDINFO only for a subscribed descendant the patterns do not list
                // themselves (RFC 5258 §3.5).
                let unlisted_child = || {
                    let prefix = format!("{name}/");
                    nodes
                        .range(prefix.clone()..)
                        .take_while(|(n, _)| n.starts_with(&prefix))
                        .any(|(n, c)| c.subscribed && !canon.iter().any(|p| matches(p, n)))
                };
                if select.recursive_match && node.has_subscribed_child && unlisted_child() {
                    extra = Some("(\"CHILDINFO\" (\"SUBSCRIBED\"))".into());
                } else {
                    continue;
                }
            }
        } else if !node.exists && !node.has_children {
            // Only subscribed, not existing: not listed by a plain LIST.
            continue;
        }
        if select.special_use && node.special_use == 0 {
            continue;
        }
        if !node.exists {
            if extended || returns.subscribed || returns.children || returns.special_use {
                attrs.push("\\NonExistent");
            } else {
                attrs.push("\\Noselect");
            }
        }
        if node.subscribed && (select.subscribed || returns.subscribed) {
            attrs.push("\\Subscribed");
        }
        if node.exists || node.has_children {
            attrs.push(if node.has_children {
                "\\HasChildren"
            } else {
                "\\HasNoChildren"
            });
        }
        for (bit, a) in SPECIAL_USE {
            if node.special_use & bit != 0 {
                attrs.push(a);
            }
        }
        write_line(cx, out, "LIST", name, &attrs, extra.as_deref());
        written += 1;
        if let (Some(items), Some(status), true) = (&returns.status, &node.status, node.exists) {
            out.extend_from_slice(b"* STATUS ");
            response::mailbox_name(out, name, cx.utf8);
            out.push(b' ');
            let recent = 0;
            write_status_items(out, status, items, recent);
            out.extend_from_slice(b"\r\n");
        }
    }
    let _ = cx.selected;
    put!(out, "{tag} OK List completed.\r\n");
}

pub fn handle_lsub(
    cx: &ListContext<'_>,
    tag: &str,
    reference: &[u8],
    pattern: &[u8],
    out: &mut Vec<u8>,
) {
    if pattern.is_empty() {
        out.extend_from_slice(b"* LSUB (\\Noselect) \"/\" \"\"\r\n");
        put!(out, "{tag} OK Lsub completed.\r\n");
        return;
    }
    if pattern.len() > PATTERN_BYTES_MAX || reference.len() > PATTERN_BYTES_MAX {
        put!(out, "{tag} BAD Mailbox pattern too long.\r\n");
        return;
    }
    let Some(canon) = canonical(cx, reference, pattern) else {
        put!(out, "{tag} NO Mailbox name is not valid mUTF-7.\r\n");
        return;
    };
    let nodes = tree(cx);
    for (name, node) in &nodes {
        if !matches(&canon, name) {
            continue;
        }
        if node.subscribed {
            let attrs: Vec<&str> = if node.exists {
                vec![]
            } else {
                vec!["\\Noselect"]
            };
            write_line(cx, out, "LSUB", name, &attrs, None);
        } else if node.has_subscribed_child && canon.ends_with('%') {
            write_line(cx, out, "LSUB", name, &["\\Noselect"], None);
        }
    }
    put!(out, "{tag} OK Lsub completed.\r\n");
}

/// `(MESSAGES 3 UIDNEXT 4 ...)` in the order asked.
pub fn write_status_items(
    out: &mut Vec<u8>,
    status: &MailboxStatus,
    items: &[StatusItem],
    recent: u32,
) {
    out.push(b'(');
    let mut first = true;
    for item in items {
        let Some((name, value)) = status_value(status, item, recent) else {
            continue;
        };
        if !first {
            out.push(b' ');
        }
        first = false;
        put!(out, "{name} {value}");
    }
    out.push(b')');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_like_rfc_9051() {
        assert!(pattern_matches(b"*", b"a/b/c"));
        assert!(pattern_matches(b"%", b"abc"));
        assert!(!pattern_matches(b"%", b"a/b"));
        assert!(pattern_matches(b"a/%", b"a/b"));
        assert!(!pattern_matches(b"a/%", b"a/b/c"));
        assert!(pattern_matches(b"a*c", b"a/b/c"));
        assert!(pattern_matches(b"a%c", b"abc"));
        assert!(!pattern_matches(b"a%c", b"a/c"));
        assert!(matches("inbox", "INBOX"));
        assert!(matches("InBox/%", "INBOX/x"));
        assert!(!matches("inboxes", "INBOXES"));
        // Byte 5 inside a multi-byte character must not panic.
        assert!(!matches("日本語", "INBOX"));
        assert!(matches("INBOé*", "INBOé"));
        assert!(pattern_matches(b"%/%", b"a/b"));
        assert!(!pattern_matches(b"%/%", b"a/b/c"));
        assert!(pattern_matches(b"", b""));
        assert!(!pattern_matches(b"", b"a"));
        // Many wildcards stay linear: this would take ages with backtracking.
        let name = vec![b'a'; 1000];
        let mut pat = b"*a".repeat(400);
        pat.push(b'b');
        assert!(!pattern_matches(&pat, &name));
    }

    #[test]
    fn special_use_names_map_to_bits() {
        assert_eq!(special_use_bit("\\sent"), Some(2));
        assert_eq!(special_use_bit("\\Important"), None);
    }
}
