//! Offline mboxrd export of one mailbox (the `ringmail export` command).
//!
//! Read-only and safe while the server runs: it never truncates or writes anything in the
//! store, and each log is read only up to its first invalid record (the tail may be being
//! written). Messages come out in UID order, each as
//! `From <sender> <asctime internal date>\n`, the stored bytes with mboxrd quoting (a line
//! matching `^>*From ` gets one more `>`), a `\n` if the message does not end with one,
//! and one empty line. The sender is taken from the first `Return-Path: <...>` header,
//! else `MAILER-DAEMON`.

use std::io::Write;
use std::path::Path;

use super::engine::read_blob_at;
use super::recover;
use super::StoreError;
use crate::time::{civil_from_days, MONTHS, WEEKDAYS};

/// Header bytes searched for `Return-Path:`.
const HEADER_SCAN_BYTES_MAX: usize = 64 * 1024;
/// Longest sender address put on a `From ` line.
const SENDER_BYTES_MAX: usize = 512;

/// Writes `user`'s `mailbox` to `out` as mboxrd; returns the number of messages.
pub fn export_mboxrd(
    data_dir: &Path,
    user: &str,
    mailbox: &str,
    out: &mut dyn Write,
) -> Result<usize, StoreError> {
    let loaded = recover::load(data_dir, 0, true)?;
    let mb = loaded
        .global
        .mailbox(user, mailbox)
        .ok_or_else(|| StoreError::NoSuchMailbox {
            user: user.to_owned(),
            mailbox: mailbox.to_owned(),
        })?;
    let mut buf = Vec::new();
    for m in mb.messages() {
        let body = read_blob_at(data_dir, m.blob())?;
        buf.clear();
        write_message(&mut buf, &body, m.internal_date);
        out.write_all(&buf)
            .map_err(|e| StoreError::io("write export output", "<output>", e))?;
    }
    out.flush()
        .map_err(|e| StoreError::io("flush export output", "<output>", e))?;
    Ok(mb.messages().len())
}

/// Appends one mboxrd entry for `message` to `out`.
pub fn write_message(out: &mut Vec<u8>, message: &[u8], internal_date: i64) {
    out.extend_from_slice(b"From ");
    out.extend_from_slice(sender(message).as_bytes());
    out.push(b' ');
    out.extend_from_slice(asctime(internal_date).as_bytes());
    out.push(b'\n');
    quote_from_lines(message, out);
    if !message.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// The envelope sender: the first `Return-Path: <addr>` in the header, `MAILER-DAEMON`
/// for `<>`, a missing header, or anything unusable on a `From ` line.
pub fn sender(message: &[u8]) -> String {
    let head = &message[..message.len().min(HEADER_SCAN_BYTES_MAX)];
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break; // end of the header section
        }
        const NAME: &[u8] = b"return-path:";
        if line.len() >= NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME) {
            let value = &line[NAME.len()..];
            let Some(open) = memchr::memchr(b'<', value) else {
                break;
            };
            let Some(close) = memchr::memchr(b'>', &value[open..]) else {
                break;
            };
            let addr = &value[open + 1..open + close];
            let usable = !addr.is_empty()
                && addr.len() <= SENDER_BYTES_MAX
                && addr.iter().all(|&b| b.is_ascii_graphic());
            if usable {
                return String::from_utf8_lossy(addr).into_owned();
            }
            break;
        }
    }
    "MAILER-DAEMON".to_string()
}

/// mboxrd quoting: every line matching `^>*From ` gets one more leading `>`.
pub fn quote_from_lines(message: &[u8], out: &mut Vec<u8>) {
    out.reserve(message.len() + 16);
    for line in message.split_inclusive(|&b| b == b'\n') {
        if is_from_line(line, 0) {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
}

/// Reverses [`quote_from_lines`]: a line matching `^>+From ` loses one `>`.
pub fn unquote_from_lines(text: &[u8], out: &mut Vec<u8>) {
    for line in text.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'>') && is_from_line(line, 1) {
            out.extend_from_slice(&line[1..]);
        } else {
            out.extend_from_slice(line);
        }
    }
}

/// `line[skip..]` matches `>*From `.
fn is_from_line(line: &[u8], skip: usize) -> bool {
    let rest = &line[skip.min(line.len())..];
    let quotes = rest.iter().take_while(|&&b| b == b'>').count();
    rest[quotes..].starts_with(b"From ")
}

/// Splits an mboxrd file into its messages (unquoted). A message that did not end with
/// `\n` comes back with one appended (mbox cannot tell the two apart).
pub fn parse_mboxrd(data: &[u8]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    for line in data.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"From ") {
            if let Some(m) = current.take() {
                messages.push(finish(m));
            }
            current = Some(Vec::new());
        } else if let Some(m) = current.as_mut() {
            unquote_from_lines(line, m);
        }
    }
    if let Some(m) = current {
        messages.push(finish(m));
    }
    messages
}

fn finish(mut m: Vec<u8>) -> Vec<u8> {
    // Drop the empty separator line.
    if m.ends_with(b"\n") {
        m.pop();
    }
    m
}

/// `Thu Jan  1 00:00:00 1970` (C asctime, UTC, without the newline).
pub fn asctime(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let wd = (days + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {}",
        WEEKDAYS[wd],
        MONTHS[(m - 1) as usize],
        d,
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        y
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asctime_known_dates() {
        assert_eq!(asctime(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(asctime(951_782_400), "Tue Feb 29 00:00:00 2000");
        assert_eq!(asctime(1_763_783_160), "Sat Nov 22 03:46:00 2025");
        assert_eq!(asctime(-1), "Wed Dec 31 23:59:59 1969");
        assert_eq!(asctime(4_107_542_400), "Mon Mar  1 00:00:00 2100");
    }

    #[test]
    fn civil_round_trips_every_day_for_800_years() {
        // Walk day by day and check the calendar advances consistently.
        let (mut y, mut m, mut d) = civil_from_days(-200 * 366);
        for z in (-200 * 366 + 1)..(600 * 366) {
            let (y2, m2, d2) = civil_from_days(z);
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let month_len = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ][(m - 1) as usize];
            let expect = if d < month_len {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
            assert_eq!((y2, m2, d2), expect, "day {z}");
            (y, m, d) = (y2, m2, d2);
        }
    }

    #[test]
    fn sender_from_return_path() {
        assert_eq!(
            sender(b"Return-Path: <bob@example.org>\r\nSubject: x\r\n\r\nbody"),
            "bob@example.org"
        );
        assert_eq!(sender(b"Received: x\r\nreturn-path:<a@b>\r\n\r\n"), "a@b");
        assert_eq!(sender(b"Return-Path: <>\r\n\r\n"), "MAILER-DAEMON");
        assert_eq!(
            sender(b"Subject: x\r\n\r\nReturn-Path: <late@x>\r\n"),
            "MAILER-DAEMON"
        );
        assert_eq!(sender(b"Return-Path: <a b@c>\r\n"), "MAILER-DAEMON");
    }

    #[test]
    fn quoting_follows_mboxrd() {
        let mut out = Vec::new();
        quote_from_lines(b"From a\nx From b\n>From c\n>>From d\nFrom\n", &mut out);
        assert_eq!(
            out,
            b">From a\nx From b\n>>From c\n>>>From d\nFrom\n".to_vec()
        );
        let mut back = Vec::new();
        unquote_from_lines(&out, &mut back);
        assert_eq!(
            back,
            b"From a\nx From b\n>From c\n>>From d\nFrom\n".to_vec()
        );
    }

    #[test]
    fn mbox_round_trip() {
        let messages: Vec<&[u8]> = vec![
            b"Return-Path: <s@x>\r\nSubject: 1\r\n\r\nFrom here\r\n>From there\r\n",
            b"Subject: 2\n\nFrom \n\n\nFrom x\n",
            b"Subject: 3\r\n\r\n>>>>From deep\r\n.\r\n",
            b"\n",
        ];
        let mut file = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            write_message(&mut file, m, 1_700_000_000 + i as i64);
        }
        let back = parse_mboxrd(&file);
        assert_eq!(back.len(), messages.len());
        for (a, b) in messages.iter().zip(&back) {
            assert_eq!(*a, b.as_slice());
        }
        assert!(file.starts_with(b"From s@x Tue Nov 14 22:13:20 2023\n"));
        // Unterminated message gets a newline.
        let mut one = Vec::new();
        write_message(&mut one, b"no newline", 0);
        assert_eq!(
            one,
            b"From MAILER-DAEMON Thu Jan  1 00:00:00 1970\nno newline\n\n".to_vec()
        );
        assert_eq!(parse_mboxrd(&one), vec![b"no newline\n".to_vec()]);
    }
}
