//! IMAP flags ↔ the store's flag bits: the five system flags are fixed bits, keywords are
//! numbered per mailbox by the store (bits `KEYWORD_SHIFT..`). `\Recent` is not stored: it is
//! per session (see `selected`).

use crate::store::flags::{ANSWERED, DELETED, DRAFT, FLAGGED, KEYWORD_SHIFT, SEEN};
use crate::store::Store;

use super::command::Flag;

/// The system flags, in the order they are written.
const SYSTEM: [(u32, &str); 5] = [
    (ANSWERED, "\\Answered"),
    (FLAGGED, "\\Flagged"),
    (DELETED, "\\Deleted"),
    (SEEN, "\\Seen"),
    (DRAFT, "\\Draft"),
];

/// A mailbox's keyword names by bit number (index 0 = bit `KEYWORD_SHIFT`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keywords(pub Vec<Option<String>>);

impl Keywords {
    /// From the store's `(bit, name)` list.
    pub fn from_list(list: &[(u8, String)]) -> Keywords {
        let mut v: Vec<Option<String>> = Vec::new();
        for (bit, name) in list {
            let i = usize::from(*bit).saturating_sub(KEYWORD_SHIFT as usize);
            if v.len() <= i {
                v.resize(i + 1, None);
            }
            v[i] = Some(name.clone());
        }
        Keywords(v)
    }

    /// The keywords of a mailbox as the store has them (empty if it does not exist).
    pub fn of(store: &Store, user: &str, mailbox: &str) -> Keywords {
        store
            .with_mailbox(user, mailbox, |mb| Keywords::from_list(mb.keywords()))
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.0.iter().filter(|k| k.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn names(&self) -> impl Iterator<Item = (u32, &str)> {
        self.0.iter().enumerate().filter_map(|(i, k)| {
            k.as_deref()
                .map(|name| (1u32 << (i as u32 + KEYWORD_SHIFT), name))
        })
    }

    /// The bit of a keyword already defined (case-insensitive).
    pub fn bit_of(&self, name: &str) -> Option<u32> {
        self.names()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|(bit, _)| bit)
    }
}

/// `(\Seen \Flagged kw)` for a message.
pub fn write_flags(out: &mut Vec<u8>, flags: u32, recent: bool, keywords: &Keywords) {
    out.push(b'(');
    let mut first = true;
    let mut put = |out: &mut Vec<u8>, s: &str| {
        if !first {
            out.push(b' ');
        }
        first = false;
        out.extend_from_slice(s.as_bytes());
    };
    for (bit, name) in SYSTEM {
        if flags & bit != 0 {
            put(out, name);
        }
    }
    if recent {
        put(out, "\\Recent");
    }
    for (bit, name) in keywords.names() {
        if flags & bit != 0 {
            put(out, name);
        }
    }
    out.push(b')');
}

/// `* FLAGS (...)` and `* OK [PERMANENTFLAGS (...)]` for a mailbox.
pub fn announce(out: &mut Vec<u8>, keywords: &Keywords, read_only: bool) {
    let all = SYSTEM.iter().fold(0, |acc, (b, _)| acc | b) | keyword_mask(keywords);
    out.extend_from_slice(b"* FLAGS ");
    write_flags(out, all, false, keywords);
    out.extend_from_slice(b"\r\n");
    if read_only {
        out.extend_from_slice(b"* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n");
    } else {
        out.extend_from_slice(b"* OK [PERMANENTFLAGS ");
        let mut tmp = Vec::new();
        write_flags(&mut tmp, all, false, keywords);
        // Insert `\*` before the closing parenthesis: new keywords may be created.
        tmp.pop();
        if tmp.len() > 1 {
            tmp.push(b' ');
        }
        tmp.extend_from_slice(b"\\*)");
        out.extend_from_slice(&tmp);
        out.extend_from_slice(b"] Flags permitted.\r\n");
    }
}

fn keyword_mask(keywords: &Keywords) -> u32 {
    keywords.names().fold(0, |acc, (b, _)| acc | b)
}

/// Splits a client's flag list into system bits and keyword names (`\Recent` and unknown
/// `\Extension` flags are ignored, as Dovecot does).
pub fn split(flags: &[Flag]) -> (u32, Vec<String>) {
    let mut bits = 0;
    let mut names: Vec<String> = Vec::new();
    for f in flags {
        match f {
            Flag::Seen => bits |= SEEN,
            Flag::Answered => bits |= ANSWERED,
            Flag::Flagged => bits |= FLAGGED,
            Flag::Deleted => bits |= DELETED,
            Flag::Draft => bits |= DRAFT,
            Flag::Recent | Flag::Extension(_) => {}
            Flag::Keyword(k) => {
                if !names.iter().any(|n| n.eq_ignore_ascii_case(k)) {
                    names.push(k.clone());
                }
            }
        }
    }
    (bits, names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_system_flags_then_recent_then_keywords() {
        let kw = Keywords::from_list(&[(KEYWORD_SHIFT as u8, "$Forwarded".into())]);
        let mut out = Vec::new();
        write_flags(&mut out, SEEN | ANSWERED | (1 << KEYWORD_SHIFT), true, &kw);
        assert_eq!(out, b"(\\Answered \\Seen \\Recent $Forwarded)");
        out.clear();
        write_flags(&mut out, 0, false, &kw);
        assert_eq!(out, b"()");
    }

    #[test]
    fn announce_lists_keywords_and_star() {
        let kw = Keywords::from_list(&[(KEYWORD_SHIFT as u8 + 1, "work".into())]);
        let mut out = Vec::new();
        announce(&mut out, &kw, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft work)\r\n\
             * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft work \\*)] Flags permitted.\r\n"
        );
        assert_eq!(kw.bit_of("WORK"), Some(1 << (KEYWORD_SHIFT + 1)));
    }

    #[test]
    fn split_separates_keywords_case_insensitively() {
        let (bits, names) = split(&[
            Flag::Seen,
            Flag::Keyword("Junk".into()),
            Flag::Keyword("junk".into()),
            Flag::Recent,
        ]);
        assert_eq!(bits, SEEN);
        assert_eq!(names, vec!["Junk".to_string()]);
    }
}
