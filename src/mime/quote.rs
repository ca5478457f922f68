//! IMAP string output for ENVELOPE and BODYSTRUCTURE, choosing between NIL,
//! quoted string and literal exactly as Dovecot 2.3 does: a literal for
//! 8-bit bytes, CR, LF, or more than four `"`/`\`; the "for humans" form
//! (subjects, display names) collapses white space and turns anything
//! needing escapes into a literal.

use std::io::Write;

use crate::imap::response::literal;

/// More quoted-specials than this make a literal.
const QUOTED_ESCAPES_MAX: usize = 4;

fn quoted(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &c in s {
        match c {
            b'\r' | b'\n' => {}
            b'"' | b'\\' => {
                out.push(b'\\');
                out.push(c);
            }
            c if c >= 0x80 => {}
            c => out.push(c),
        }
    }
    out.push(b'"');
}

/// `string`: quoted when possible, literal otherwise.
pub(crate) fn string(out: &mut Vec<u8>, s: &[u8]) {
    let mut escapes = 0usize;
    for &c in s {
        let needs_literal = match c {
            b'"' | b'\\' => {
                escapes += 1;
                escapes > QUOTED_ESCAPES_MAX
            }
            b'\r' | b'\n' => true,
            c => c >= 0x80,
        };
        if needs_literal {
            literal(out, s);
            return;
        }
    }
    quoted(out, s);
}

/// `nstring`: NIL for `None`.
pub(crate) fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        None => out.extend_from_slice(b"NIL"),
        Some(s) => string(out, s),
    }
}

/// `nstring` of a header value with its line ends removed: a line end
/// followed by something other than white space or the end becomes a space.
pub(crate) fn nstring_nolf(out: &mut Vec<u8>, s: Option<&[u8]>) {
    let Some(s) = s else {
        out.extend_from_slice(b"NIL");
        return;
    };
    if !s.iter().any(|&c| c == b'\r' || c == b'\n') {
        string(out, s);
        return;
    }
    let mut flat = Vec::with_capacity(s.len());
    for (i, &c) in s.iter().enumerate() {
        if c != b'\r' && c != b'\n' {
            flat.push(c);
        } else if !matches!(s.get(i + 1), None | Some(b' ' | b'\t' | b'\r' | b'\n')) {
            flat.push(b' ');
        }
    }
    string(out, &flat);
}

/// A string meant for people (subject, display name): runs of white space
/// and line ends become one space, leading and trailing white space goes, a
/// NUL becomes 0x80; a plain result is quoted, anything else a literal.
pub(crate) fn string_for_humans(out: &mut Vec<u8>, s: &[u8]) {
    let mut modify = false;
    let mut removed = 0usize;
    let mut last_lwsp = true;
    let mut only_lwsp_so_far = true;
    for &c in s {
        match c {
            0 => {
                last_lwsp = false;
                modify = true;
            }
            b'\r' | b'\n' | b'\t' | b' ' => {
                if c != b' ' {
                    modify = true;
                }
                if last_lwsp {
                    modify = true;
                    removed += 1;
                }
                last_lwsp = true;
            }
            b'"' | b'\\' => {
                modify = true;
                last_lwsp = false;
            }
            c => {
                if c >= 0x80 {
                    modify = true;
                }
                last_lwsp = false;
            }
        }
        if !last_lwsp {
            only_lwsp_so_far = false;
        }
    }
    if last_lwsp && !s.is_empty() && !only_lwsp_so_far {
        modify = true;
        removed += 1;
    }
    if !modify {
        out.push(b'"');
        out.extend_from_slice(s);
        out.push(b'"');
        return;
    }
    if removed == s.len() {
        out.extend_from_slice(b"\"\"");
        return;
    }
    let _ = write!(out, "{{{}}}\r\n", s.len() - removed);
    let start = out.len();
    let mut last_lwsp = true;
    let mut only_lwsp_so_far = true;
    for &c in s {
        match c {
            0 => {
                out.push(0x80);
                last_lwsp = false;
            }
            b'\r' | b'\n' | b'\t' | b' ' => {
                if !last_lwsp {
                    out.push(b' ');
                }
                last_lwsp = true;
            }
            c => {
                out.push(c);
                last_lwsp = false;
            }
        }
        if !last_lwsp {
            only_lwsp_so_far = false;
        }
    }
    if last_lwsp && !s.is_empty() && !only_lwsp_so_far {
        out.pop();
    }
    debug_assert_eq!(out.len() - start, s.len() - removed);
}
