//! RFC 5322 `Date:` values for SENTBEFORE/SENTON/SENTSINCE, obsolete forms
//! included: optional weekday, one- or two-digit day and hour, two-digit
//! years (< 70 → 20xx), `.` as time separator, missing seconds, comments,
//! and the zones `UT`, `GMT`, `EST`/`EDT`/`CST`/`CDT`/`MST`/`MDT`/`PST`/`PDT`,
//! military letters and `+hhmm`/`-hhmm`. An unknown or missing zone counts
//! as +0000 (Dovecot does the same).

use super::lex::{Lex, Lexer};
use crate::time::{days_from_civil, MONTHS};

/// Minutes east of UTC for a zone token.
fn zone_minutes(zone: &[u8]) -> i32 {
    match zone {
        [sign @ (b'+' | b'-'), digits @ ..]
            if digits.len() == 4 && digits.iter().all(u8::is_ascii_digit) =>
        {
            let d = |i: usize| i32::from(digits[i] - b'0');
            let minutes = (d(0) * 10 + d(1)) * 60 + d(2) * 10 + d(3);
            if *sign == b'+' {
                minutes
            } else {
                -minutes
            }
        }
        [c] => {
            let upper = c.to_ascii_uppercase();
            let c = i32::from(*c);
            if upper < b'J' {
                (c - i32::from(b'A') + 1) * 60
            } else if upper == b'J' {
                0
            } else if upper <= b'M' {
                (c - i32::from(b'A')) * 60
            } else if upper < b'Z' {
                (i32::from(b'M') - c) * 60
            } else {
                0
            }
        }
        [a, b, b'T'] => {
            let base = match a.to_ascii_uppercase() {
                b'E' => -5 * 60,
                b'C' => -6 * 60,
                b'M' => -7 * 60,
                b'P' => -8 * 60,
                _ => return 0,
            };
            match b.to_ascii_uppercase() {
                b'D' => base + 60,
                b'S' => base,
                _ => 0,
            }
        }
        _ => 0,
    }
}

/// Reads the next atom into `buf`: `Some(true)` when there is one,
/// `Some(false)` at the end of the value, `None` when the value is broken.
fn next_atom(lex: &mut Lexer<'_>, buf: &mut Vec<u8>) -> Option<bool> {
    buf.clear();
    if lex.at_end() {
        return Some(false);
    }
    if lex.atom(buf) == Lex::Err {
        return None;
    }
    Some(!buf.is_empty())
}

fn digits(s: &[u8]) -> Option<i64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0i64, |n, &c| n * 10 + i64::from(c - b'0')))
}

fn is_time_separator(c: Option<u8>) -> bool {
    matches!(c, Some(b':' | b'.'))
}

/// Parses a Date value: `(unix seconds UTC, zone offset in minutes)`.
pub(crate) fn parse(value: &[u8]) -> Option<(i64, i16)> {
    let mut lex = Lexer::new(value);
    let mut t = Vec::new();
    lex.skip_cfws();
    if !next_atom(&mut lex, &mut t)? {
        return None;
    }
    if t.len() == 3 {
        // Weekday.
        if lex.peek() != Some(b',') {
            return None;
        }
        lex.bump();
        lex.skip_cfws();
        if !next_atom(&mut lex, &mut t)? {
            return None;
        }
    }
    if t.is_empty() || t.len() > 2 {
        return None;
    }
    let day = digits(&t)?;
    if !next_atom(&mut lex, &mut t)? || t.len() < 3 {
        return None;
    }
    let month = MONTHS
        .iter()
        .position(|m| t[..3].eq_ignore_ascii_case(m.as_bytes()))? as u32
        + 1;
    if !next_atom(&mut lex, &mut t)? || (t.len() != 2 && t.len() != 4) {
        return None;
    }
    let mut year = digits(&t)?;
    if t.len() == 2 {
        year += if year < 70 { 2000 } else { 1900 };
    } else if year < 1900 {
        return None;
    }
    if !next_atom(&mut lex, &mut t)? || t.len() > 2 {
        return None;
    }
    let hour = digits(&t)?;
    if !is_time_separator(lex.peek()) {
        return None;
    }
    lex.bump();
    lex.skip_cfws();
    next_atom(&mut lex, &mut t)?;
    if t.len() != 2 {
        return None;
    }
    let minute = digits(&t)?;
    let mut second = 0;
    if is_time_separator(lex.peek()) {
        lex.bump();
        lex.skip_cfws();
        if !next_atom(&mut lex, &mut t)? || t.len() != 2 {
            return None;
        }
        second = digits(&t)?;
    }
    let zone = match next_atom(&mut lex, &mut t)? {
        true => zone_minutes(&t),
        false => 0,
    };
    let days = days_from_civil(year, month, 1) + day - 1;
    let local = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Some((local - i64::from(zone) * 60, zone as i16))
}
