//! Message flag bits and mailbox SPECIAL-USE bits, as the index and the meta records
//! store them, and the checks on keyword names.
//!
//! `MessageEntry.flags` is a u32: bits 0..=4 are the IMAP system flags below, bits
//! 5..=31 are keywords, numbered per mailbox by `KeywordDefine` records (bit `b` of
//! mailbox `m` means the keyword defined for `(m, b)`). A keyword keeps its bit for the
//! life of the mailbox; copying a message to another mailbox remaps its keyword bits.

/// `\Seen`.
pub const SEEN: u32 = 1 << 0;
/// `\Answered`.
pub const ANSWERED: u32 = 1 << 1;
/// `\Flagged`.
pub const FLAGGED: u32 = 1 << 2;
/// `\Deleted`.
pub const DELETED: u32 = 1 << 3;
/// `\Draft`.
pub const DRAFT: u32 = 1 << 4;
/// The five system flags.
pub const SYSTEM_MASK: u32 = SEEN | ANSWERED | FLAGGED | DELETED | DRAFT;
/// The first keyword bit.
pub const KEYWORD_SHIFT: u32 = 5;
/// Keywords a mailbox can define (bits 5..=31).
pub const KEYWORDS_MAX: usize = 27;
/// Every keyword bit.
pub const KEYWORD_MASK: u32 = !SYSTEM_MASK;
/// The longest keyword name accepted.
pub const KEYWORD_BYTES_MAX: usize = 256;

const _: () = assert!(KEYWORD_SHIFT as usize + KEYWORDS_MAX == 32);
const _: () = assert!(SYSTEM_MASK == (1 << KEYWORD_SHIFT) - 1);

/// The flag bit of keyword bit number `bit` (5..=31); 0 for anything else.
pub fn keyword_flag(bit: u8) -> u32 {
    if (KEYWORD_SHIFT..32).contains(&u32::from(bit)) {
        1 << bit
    } else {
        0
    }
}

/// Why `name` cannot be a keyword, if it cannot. Keywords are IMAP atoms: the IMAP layer
/// checks the grammar; the store refuses what would break its own records or rendering
/// (empty, too long, controls, spaces, a leading `\` that belongs to system flags).
pub fn keyword_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("empty");
    }
    if name.len() > KEYWORD_BYTES_MAX {
        return Some("too long");
    }
    if name.starts_with('\\') {
        return Some("system flags are not keywords");
    }
    if name.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Some("contains a control character or a space");
    }
    None
}

/// SPECIAL-USE attributes (RFC 6154) of a mailbox: a bit set kept in `MailboxAttrs`.
pub mod special_use {
    /// `\Drafts`.
    pub const DRAFTS: u8 = 1;
    /// `\Sent`.
    pub const SENT: u8 = 2;
    /// `\Trash`.
    pub const TRASH: u8 = 4;
    /// `\Junk`.
    pub const JUNK: u8 = 8;
    /// `\Archive`.
    pub const ARCHIVE: u8 = 16;
    /// `\All`.
    pub const ALL: u8 = 32;
    /// `\Flagged`.
    pub const FLAGGED: u8 = 64;
    /// Every defined bit.
    pub const MASK: u8 = 0x7f;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_bits_cover_the_rest_of_the_word() {
        assert_eq!(keyword_flag(4), 0);
        assert_eq!(keyword_flag(5), 1 << 5);
        assert_eq!(keyword_flag(31), 1 << 31);
        assert_eq!(keyword_flag(32), 0);
        let all: u32 = (5..32).map(keyword_flag).fold(0, |a, b| a | b);
        assert_eq!(all, KEYWORD_MASK);
        assert_eq!(all & SYSTEM_MASK, 0);
    }

    #[test]
    fn keyword_names_are_checked() {
        assert_eq!(keyword_problem("$Forwarded"), None);
        assert_eq!(keyword_problem("Junk"), None);
        assert!(keyword_problem("").is_some());
        assert!(keyword_problem("\\Seen").is_some());
        assert!(keyword_problem("a b").is_some());
        assert!(keyword_problem("a\r\n").is_some());
        assert!(keyword_problem("a\0").is_some());
        assert!(keyword_problem(&"k".repeat(KEYWORD_BYTES_MAX)).is_none());
        assert!(keyword_problem(&"k".repeat(KEYWORD_BYTES_MAX + 1)).is_some());
    }
}
