//! Delivery status notifications, sans-IO: the RFC 3464 `multipart/report` message that
//! tells an envelope sender what became of their message (bounce, delay notice, success
//! notice), with RFC 3463 status codes. [`build`] takes a [`Report`] (what happened to which
//! recipients) and returns the notice's bytes, or `None` when nobody is to be told.
//!
//! # Who is told what
//! - A null sender (`<>`, i.e. a bounce itself) never gets a notice: no bounce loops.
//! - Each recipient is reported only if its RFC 3461 NOTIFY asks for its action: `failed`
//!   needs FAILURE, `delayed` DELAY, `delivered`/`relayed` SUCCESS. Without NOTIFY the
//!   default is FAILURE,DELAY (RFC 3461 §4.1); NEVER reports nothing.
//! - The subject follows the most serious action reported: any `failed` → "Undelivered
//!   Mail Returned to Sender", else any `delayed` → "Delayed Mail (still being retried)",
//!   else "Successful Mail Delivery Report" (Postfix's subjects).
//!
//! # The message
//! `From: MAILER-DAEMON@<hostname> (Mail Delivery System)`, `To:` the envelope sender,
//! `Auto-Submitted: auto-replied`, a `Message-ID` made of the time, the queue id, the kind
//! and the hostname, `Date`. Three parts:
//! 1. `text/plain`: what happened, per recipient, with the remote's reply. US-ASCII, or
//!    UTF-8 in quoted-printable when an address or a reason is not ASCII.
//! 2. `message/delivery-status`: per message `Original-Envelope-Id` (the ENVID, decoded from
//!    xtext), `Reporting-MTA: dns; <hostname>`, `Arrival-Date`; per recipient
//!    `Original-Recipient` (the ORCPT, decoded), `Final-Recipient`, `Action`, `Status`,
//!    `Remote-MTA`, `Diagnostic-Code: smtp; <reply>`, `Last-Attempt-Date`, and
//!    `Will-Retry-Until` for `delayed`. An address that is not ASCII is written with RFC
//!    6533's `utf-8` address type (`\x{HEX}` escapes), so the part stays 7-bit.
//! 3. The original: `message/rfc822` (the whole message) when the notice reports a failure,
//!    the sender asked RET=FULL and the message is at most [`RETURN_FULL_BYTES_MAX`]
//!    (64 KiB; Postfix's `bounce_size_limit` is 50 000) and has no line longer than 998
//!    bytes; otherwise `text/rfc822-headers` (its header only). RFC 3461 §4.3: RET is about
//!    failure notices; delay and success notices return the header only.
//!
//! Lines end in CRLF (the original's bare CRs and LFs are turned into CRLF) and are at most
//! 998 bytes (an overlong header line of the original is folded). Header fields are 7-bit
//! except `To:` for an RFC 6531 sender address and the returned original, whose part (and
//! the whole message) is then marked `Content-Transfer-Encoding: 8bit`: the sender must
//! send such a notice with 8BITMIME/SMTPUTF8 or downgrade it. The notice's own envelope is
//! `MAIL FROM:<>` to the original sender (the caller's job).

use std::fmt::Write as _;

use memchr::memmem;

use crate::smtp::command::{xtext_decode, Notify, Ret};
use crate::time::DateTime;

/// A RET=FULL original larger than this is returned as its header only.
pub const RETURN_FULL_BYTES_MAX: usize = 64 * 1024;
/// RFC 5322 §2.1.1: at most 998 characters per line, CRLF excluded.
pub const LINE_BYTES_MAX: usize = 998;
/// Reasons and remote replies are cut to this many bytes in the notice.
pub const TEXT_BYTES_MAX: usize = 900;
/// Recipients reported in one notice; the rest are summarized in one line.
pub const RECIPIENTS_MAX: usize = 1000;

/// Which notice: decided by the most serious action reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Failure,
    Delay,
    Success,
}

impl Kind {
    fn subject(self) -> &'static str {
        match self {
            Kind::Failure => "Undelivered Mail Returned to Sender",
            Kind::Delay => "Delayed Mail (still being retried)",
            Kind::Success => "Successful Mail Delivery Report",
        }
    }

    /// A letter that keeps the Message-IDs of the notices for one message apart.
    fn letter(self) -> char {
        match self {
            Kind::Failure => 'F',
            Kind::Delay => 'D',
            Kind::Success => 'S',
        }
    }
}

/// What happened to one recipient (RFC 3464 §2.3.3 `Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Failed for good: a bounce.
    Failed,
    /// Not delivered yet, still being retried.
    Delayed,
    /// Delivered (accepted by a DSN-capable remote, or stored locally).
    Delivered,
    /// Handed to a remote that does not offer DSN: no further notices will come.
    Relayed,
}

impl Action {
    /// The `Action:` field value.
    pub fn name(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
        }
    }

    /// The NOTIFY bit that asks for this action.
    fn notify_bit(self) -> u8 {
        match self {
            Action::Failed => Notify::FAILURE,
            Action::Delayed => Notify::DELAY,
            Action::Delivered | Action::Relayed => Notify::SUCCESS,
        }
    }

    /// The status when neither the caller nor the reply gives one.
    fn default_status(self) -> &'static str {
        match self {
            Action::Failed => "5.0.0",
            Action::Delayed => "4.0.0",
            Action::Delivered | Action::Relayed => "2.0.0",
        }
    }
}

/// One recipient's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecipientReport<'a> {
    /// The address delivered to (as on RCPT TO).
    pub address: &'a str,
    /// RFC 3461 NOTIFY bits ([`Notify`] values, the same as the queue's `NOTIFY_*`);
    /// `None`: the client gave none.
    pub notify: Option<u8>,
    /// RFC 3461 ORCPT as received (`addr-type;xtext`).
    pub orcpt: Option<&'a str>,
    pub action: Action,
    /// RFC 3463 status (`5.1.1`) when the caller knows it better than the reply does
    /// (DNS failures, expiry); else taken from `reply` (its enhanced code, or 5.0.0 / 4.0.0
    /// for a bare 5xx / 4xx), else from the action.
    pub status: Option<&'a str>,
    /// The remote host that answered (`Remote-MTA: dns; host`).
    pub remote_mta: Option<&'a str>,
    /// The remote's SMTP reply (code, enhanced code, text; a multi-line reply joined by
    /// spaces): `Diagnostic-Code: smtp; ...`.
    pub reply: Option<&'a str>,
    /// What happened, for people ("host mx.remote.test said: ...", "Domain remote.test
    /// does not accept mail (nullMX)", "delivery temporarily suspended: connection refused").
    pub reason: &'a str,
    /// Unix seconds of the last attempt (0: none).
    pub last_attempt: i64,
}

/// What one notice reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report<'a> {
    /// The original message's queue id (goes into the Message-ID and the text).
    pub queue_id: &'a str,
    /// The original envelope sender, "" for the null sender.
    pub sender: &'a str,
    /// RFC 3461 ENVID as received (xtext).
    pub envid: Option<&'a str>,
    pub ret: Option<Ret>,
    /// Unix seconds the original arrived.
    pub arrival: i64,
    /// For `delayed` recipients: unix seconds until which delivery is retried.
    pub retry_until: Option<i64>,
    /// The original message as stored.
    pub message: &'a [u8],
    pub recipients: &'a [RecipientReport<'a>],
}

/// The notice for `report`, or `None` when it goes to nobody (null sender) or reports
/// nobody (every recipient's NOTIFY excludes its action). `now` (unix seconds) dates it;
/// `hostname` names this MTA.
pub fn build(report: &Report, now: i64, hostname: &str) -> Option<Vec<u8>> {
    if report.sender.is_empty() {
        return None;
    }
    let reported: Vec<&RecipientReport> = report
        .recipients
        .iter()
        .filter(|r| wants(r.notify, r.action))
        .collect();
    let has = |action| reported.iter().any(|r| r.action == action);
    let kind = if has(Action::Failed) {
        Kind::Failure
    } else if has(Action::Delayed) {
        Kind::Delay
    } else if !reported.is_empty() {
        Kind::Success
    } else {
        return None;
    };
    let subject = kind.subject();
    let letter = kind.letter();
    let shown = &reported[..reported.len().min(RECIPIENTS_MAX)];

    // Part 3 first: its 8-bitness decides the headers.
    let full = kind == Kind::Failure
        && report.ret == Some(Ret::Full)
        && report.message.len() <= RETURN_FULL_BYTES_MAX
        && longest_line(report.message) <= LINE_BYTES_MAX;
    let mut original = Vec::with_capacity(report.message.len().min(RETURN_FULL_BYTES_MAX) + 64);
    if full {
        push_crlf(&mut original, report.message);
    } else {
        push_header(&mut original, header_of(report.message));
    }
    let eight_bit = !original.is_ascii();

    let human = human_text(report, shown, reported.len(), kind, hostname);
    let status = delivery_status(report, shown, hostname);

    let mut boundary = format!("{}.{}/{}", report.queue_id, now, hostname);
    let mut n = 0;
    while [human.as_bytes(), status.as_bytes(), &original]
        .iter()
        .any(|part| memmem::find(part, boundary.as_bytes()).is_some())
    {
        n += 1;
        boundary = format!("{}.{}.{n}/{}", report.queue_id, now, hostname);
    }

    let mut out = Vec::with_capacity(original.len() + human.len() + status.len() + 1024);
    let date = DateTime::from_unix(now);
    let mut head = String::with_capacity(512);
    let _ = write!(
        head,
        "From: MAILER-DAEMON@{hostname} (Mail Delivery System)\r\n\
         To: {}\r\n\
         Subject: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: <{}.{}.{letter}@{hostname}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"{boundary}\"\r\n",
        report.sender,
        now,
        sanitize(report.queue_id, 64),
    );
    if eight_bit {
        head.push_str("Content-Transfer-Encoding: 8bit\r\n");
    }
    let _ = write!(
        head,
        "\r\nThis is a MIME-encapsulated message.\r\n\r\n--{boundary}\r\n\
         Content-Description: Notification\r\n"
    );
    out.extend_from_slice(head.as_bytes());
    if human.is_ascii() {
        out.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\n\r\n");
        out.extend_from_slice(human.as_bytes());
    } else {
        out.extend_from_slice(
            b"Content-Type: text/plain; charset=utf-8\r\n\
              Content-Transfer-Encoding: quoted-printable\r\n\r\n",
        );
        quoted_printable(human.as_bytes(), &mut out);
    }
    let _ = write!(
        head_clear(&mut head),
        "\r\n--{boundary}\r\nContent-Description: Delivery report\r\n\
         Content-Type: message/delivery-status\r\n\r\n"
    );
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(status.as_bytes());
    let (description, content_type) = if full {
        ("Undelivered Message", "message/rfc822")
    } else if kind == Kind::Failure {
        ("Undelivered Message Headers", "text/rfc822-headers")
    } else {
        ("Message Headers", "text/rfc822-headers")
    };
    let _ = write!(
        head_clear(&mut head),
        "\r\n--{boundary}\r\nContent-Description: {description}\r\n\
         Content-Type: {content_type}\r\n"
    );
    if eight_bit {
        head.push_str("Content-Transfer-Encoding: 8bit\r\n");
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(&original);
    if !original.ends_with(b"\r\n") && !original.is_empty() {
        out.extend_from_slice(b"\r\n");
    }
    let _ = write!(head_clear(&mut head), "\r\n--{boundary}--\r\n");
    out.extend_from_slice(head.as_bytes());
    Some(out)
}

/// Does NOTIFY ask for a notice about `action`? (Absent: FAILURE,DELAY.)
fn wants(notify: Option<u8>, action: Action) -> bool {
    let bits = notify.unwrap_or(Notify::FAILURE | Notify::DELAY);
    bits & Notify::NEVER == 0 && bits & action.notify_bit() != 0
}

fn head_clear(head: &mut String) -> &mut String {
    head.clear();
    head
}

/// The human-readable part (lines end in CRLF; may contain UTF-8 from addresses).
fn human_text(
    report: &Report,
    shown: &[&RecipientReport],
    reported: usize,
    kind: Kind,
    hostname: &str,
) -> String {
    let mut t = String::with_capacity(1024);
    let _ = write!(t, "This is the mail system at host {hostname}.\r\n\r\n");
    match kind {
        Kind::Failure => t.push_str(
            "I'm sorry to have to inform you that your message could not\r\n\
             be delivered to one or more recipients. Its header (or the whole\r\n\
             message, if you asked for it) is attached below.\r\n",
        ),
        Kind::Delay => {
            t.push_str(
                "Your message could not be delivered yet to one or more recipients.\r\n\
                 It will be retried; you do not need to resend it.\r\n",
            );
            if let Some(until) = report.retry_until {
                let _ = write!(
                    t,
                    "Delivery attempts go on until {}.\r\n",
                    DateTime::from_unix(until)
                );
            }
        }
        Kind::Success => t.push_str(
            "Your message was successfully delivered to the destination(s)\r\n\
             listed below.\r\n",
        ),
    }
    let _ = write!(t, "\r\nQueue id: {}\r\n\r\n", sanitize(report.queue_id, 64));
    for r in shown {
        let _ = write!(
            t,
            "<{}>: {}: {}\r\n",
            sanitize(r.address, TEXT_BYTES_MAX),
            r.action.name(),
            sanitize(r.reason, TEXT_BYTES_MAX)
        );
        if let Some(reply) = r.reply {
            let host = r.remote_mta.map(|h| sanitize(h, 255)).unwrap_or_default();
            let _ = write!(
                t,
                "    host {host} said: {}\r\n",
                sanitize(reply, TEXT_BYTES_MAX)
            );
        }
    }
    if reported > shown.len() {
        let _ = write!(
            t,
            "... and {} more recipient(s).\r\n",
            reported - shown.len()
        );
    }
    t
}

/// The `message/delivery-status` body (7-bit, CRLF).
fn delivery_status(report: &Report, shown: &[&RecipientReport], hostname: &str) -> String {
    let mut s = String::with_capacity(256 + shown.len() * 256);
    if let Some(envid) = report.envid {
        let _ = write!(s, "Original-Envelope-Id: {}\r\n", decoded(envid.as_bytes()));
    }
    let _ = write!(s, "Reporting-MTA: dns; {hostname}\r\n");
    let _ = write!(
        s,
        "Arrival-Date: {}\r\n",
        DateTime::from_unix(report.arrival)
    );
    for r in shown {
        s.push_str("\r\n");
        if let Some(orcpt) = r.orcpt {
            let (addr_type, xtext) = orcpt.split_once(';').unwrap_or(("rfc822", orcpt));
            let _ = write!(
                s,
                "Original-Recipient: {}; {}\r\n",
                sanitize_ascii(addr_type, 64),
                decoded(xtext.as_bytes())
            );
        }
        let _ = write!(s, "Final-Recipient: {}\r\n", typed_address(r.address));
        let _ = write!(s, "Action: {}\r\n", r.action.name());
        let _ = write!(s, "Status: {}\r\n", status_of(r));
        if let Some(host) = r.remote_mta {
            let _ = write!(s, "Remote-MTA: dns; {}\r\n", sanitize_ascii(host, 255));
        }
        if let Some(reply) = r.reply {
            let _ = write!(
                s,
                "Diagnostic-Code: smtp; {}\r\n",
                sanitize_ascii(reply, TEXT_BYTES_MAX)
            );
        }
        if r.last_attempt > 0 {
            let _ = write!(
                s,
                "Last-Attempt-Date: {}\r\n",
                DateTime::from_unix(r.last_attempt)
            );
        }
        if let (Action::Delayed, Some(until)) = (r.action, report.retry_until) {
            let _ = write!(s, "Will-Retry-Until: {}\r\n", DateTime::from_unix(until));
        }
    }
    s
}

/// The RFC 3463 status of a recipient: the caller's, else the reply's enhanced code (when
/// its class matches the reply code), else 5.0.0 / 4.0.0 / 2.0.0 from the reply code, else
/// from the action.
fn status_of(r: &RecipientReport) -> String {
    if let Some(status) = r.status.filter(|s| is_status(s)) {
        return status.to_owned();
    }
    if let Some(reply) = r.reply {
        let bytes = reply.as_bytes();
        if bytes.len() >= 3
            && matches!(bytes[0], b'2' | b'4' | b'5')
            && bytes[1..3].iter().all(u8::is_ascii_digit)
            && bytes.get(3).is_none_or(|&b| b == b' ' || b == b'-')
        {
            let enhanced = reply
                .get(4..)
                .and_then(|rest| rest.split(' ').next())
                .filter(|code| is_status(code) && code.as_bytes()[0] == bytes[0]);
            return match enhanced {
                Some(code) => code.to_owned(),
                None => format!("{}.0.0", bytes[0] as char),
            };
        }
    }
    r.action.default_status().to_owned()
}

/// RFC 3463 `class "." subject "." detail`: class 2, 4 or 5; subject 1–3 digits; detail
/// 1–3 digits.
fn is_status(s: &str) -> bool {
    let mut parts = s.split('.');
    let class_ok = matches!(parts.next(), Some("2" | "4" | "5"));
    let number = |p: Option<&str>| {
        p.is_some_and(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    };
    class_ok && number(parts.next()) && number(parts.next()) && parts.next().is_none()
}

/// `rfc822;addr`, or for an address that is not ASCII RFC 6533's `utf-8;` with `\x{HEX}`
/// for every character outside printable ASCII and for `\`, `+` and `=`.
fn typed_address(address: &str) -> String {
    if address.bytes().all(|b| (0x21..=0x7E).contains(&b)) {
        return format!("rfc822; {address}");
    }
    let mut out = String::from("utf-8; ");
    for c in address.chars().take(TEXT_BYTES_MAX) {
        if c.is_ascii_graphic() && !matches!(c, '\\' | '+' | '=') {
            out.push(c);
        } else {
            let _ = write!(out, "\\x{{{:X}}}", u32::from(c));
        }
    }
    out
}

/// Decoded xtext when it is printable ASCII; else the text as received (printable ASCII).
fn decoded(xtext: &[u8]) -> String {
    match xtext_decode(xtext) {
        Some(bytes) if bytes.iter().all(|&b| (0x20..=0x7E).contains(&b)) => {
            sanitize(&String::from_utf8_lossy(&bytes), TEXT_BYTES_MAX)
        }
        _ => sanitize_ascii(&String::from_utf8_lossy(xtext), TEXT_BYTES_MAX),
    }
}

/// [`sanitize`], then every non-ASCII character as `?` (for the 7-bit status part).
fn sanitize_ascii(text: &str, max: usize) -> String {
    sanitize(text, max)
        .chars()
        .map(|c| if c.is_ascii() { c } else { '?' })
        .collect()
}

/// One line of printable text: control characters (CR and LF included) become spaces,
/// non-ASCII stays (the human part encodes it; the status part never gets any), cut to
/// `max` bytes at a character boundary.
fn sanitize(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// The header of a message: up to and including the line break before the first empty
/// line (the whole message when there is none). A bare CR or LF counts as a line break, as
/// in [`push_crlf`].
fn header_of(message: &[u8]) -> &[u8] {
    let mut line_start = 0;
    while let Some(found) = memchr::memchr2(b'\r', b'\n', &message[line_start..]) {
        let at = line_start + found;
        if at == line_start {
            return &message[..line_start];
        }
        let crlf = message[at] == b'\r' && message.get(at + 1) == Some(&b'\n');
        line_start = at + if crlf { 2 } else { 1 };
    }
    message
}

/// The longest line of `bytes`, line break excluded.
fn longest_line(bytes: &[u8]) -> usize {
    bytes
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line).len())
        .max()
        .unwrap_or(0)
}

/// Appends `bytes` with every line break made CRLF (bare CR and bare LF included).
fn push_crlf(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                i += if bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
            }
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
}

/// Appends a header with CRLF line breaks, folding any line longer than
/// [`LINE_BYTES_MAX`] (a break + tab every 990 bytes, which keeps it a valid header).
fn push_header(out: &mut Vec<u8>, header: &[u8]) {
    let mut normalized = Vec::with_capacity(header.len() + 16);
    push_crlf(&mut normalized, header);
    for line in normalized.split_inclusive(|&b| b == b'\n') {
        let body = line.strip_suffix(b"\r\n").unwrap_or(line);
        let mut chunks = body.chunks(990).peekable();
        if chunks.peek().is_none() {
            out.extend_from_slice(b"\r\n");
            continue;
        }
        let mut first = true;
        for chunk in chunks {
            if !first {
                out.extend_from_slice(b"\r\n\t");
            }
            first = false;
            out.extend_from_slice(chunk);
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// RFC 2045 quoted-printable of CRLF text: lines kept, `=`, non-ASCII and trailing
/// white space encoded, soft breaks keep encoded lines at most 76 characters.
fn quoted_printable(text: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for line in text.split_inclusive(|&b| b == b'\n') {
        let body = line.strip_suffix(b"\r\n").unwrap_or(line);
        let mut width = 0;
        for (i, &b) in body.iter().enumerate() {
            let last = i + 1 == body.len();
            let literal =
                ((b == b' ' || b == b'\t') && !last) || ((0x21..=0x7E).contains(&b) && b != b'=');
            let needed = if literal { 1 } else { 3 };
            if width + needed > 75 {
                out.extend_from_slice(b"=\r\n");
                width = 0;
            }
            if literal {
                out.push(b);
            } else {
                out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            }
            width += needed;
        }
        if line.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mime::header::{fields, first_value};
    use crate::mime::{ContentField, Message, MessageStructure};

    const HOST: &str = "mx.example.test";
    /// Sun, 22 Nov 2026 03:45:16 +0000
    const NOW: i64 = 1_795_319_116;
    const ORIGINAL: &[u8] = b"Return-Path: <alice@example.test>\r\n\
        From: Alice <alice@example.test>\r\nTo: bob@remote.test\r\nSubject: hello\r\n\
        \r\nthe body\r\nsecond line\r\n";

    fn failed(address: &str) -> RecipientReport<'_> {
        RecipientReport {
            address,
            notify: None,
            orcpt: None,
            action: Action::Failed,
            status: None,
            remote_mta: Some("mx.remote.test"),
            reply: Some("550 5.1.1 <bob@remote.test>: Recipient address rejected"),
            reason: "host mx.remote.test refused the recipient",
            last_attempt: NOW - 60,
        }
    }

    fn report<'a>(recipients: &'a [RecipientReport<'a>]) -> Report<'a> {
        Report {
            queue_id: "0-1F",
            sender: "alice@example.test",
            envid: None,
            ret: None,
            arrival: NOW - 3600,
            retry_until: None,
            message: ORIGINAL,
            recipients,
        }
    }

    /// The notice, parsed: its bytes and MIME structure (checked for CRLF, line
    /// lengths and 7-bit headers on the way).
    fn built(report: &Report) -> (Vec<u8>, MessageStructure) {
        let out = build(report, NOW, HOST).expect("a notice");
        for (i, &b) in out.iter().enumerate() {
            if b == b'\n' {
                assert!(i > 0 && out[i - 1] == b'\r', "bare LF at {i}");
            }
            if b == b'\r' {
                assert_eq!(out.get(i + 1), Some(&b'\n'), "bare CR at {i}");
            }
        }
        assert!(longest_line(&out) <= LINE_BYTES_MAX);
        let structure = Message::parse(&out);
        (out, structure)
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    fn header(out: &[u8], s: &MessageStructure, part: usize, name: &str) -> Option<String> {
        let part = &s.parts()[part];
        first_value(out, part.header.range(), name).map(text)
    }

    fn content_type(out: &[u8], s: &MessageStructure, part: usize) -> String {
        let range = s.parts()[part]
            .content_value(ContentField::Type)
            .expect("Content-Type");
        text(&out[range])
    }

    fn body(out: &[u8], s: &MessageStructure, part: usize) -> String {
        text(&out[s.parts()[part].body.range()])
    }

    /// The three parts of a report: indexes of the root's children.
    fn three_parts(s: &MessageStructure) -> [usize; 3] {
        let children: Vec<usize> = s.children(0).collect();
        assert_eq!(children.len(), 3, "three parts");
        [children[0], children[1], children[2]]
    }

    /// The fields of one block of the delivery-status body (0: per message, 1..: per
    /// recipient), as (name, value).
    fn status_block(status: &str, block: usize) -> Vec<(String, String)> {
        let blocks: Vec<&str> = status.split("\r\n\r\n").collect();
        let block = blocks.get(block).copied().unwrap_or("");
        let bytes = format!("{}\r\n\r\n", block.trim_end_matches("\r\n"));
        fields(bytes.as_bytes(), 0..bytes.len())
            .map(|f| (text(f.name), text(f.value)))
            .collect()
    }

    fn field<'a>(block: &'a [(String, String)], name: &str) -> Option<&'a str> {
        block
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_bounce_is_a_multipart_report_in_three_parts() {
        let rcpts = [RecipientReport {
            orcpt: Some("rfc822;Bob+2Bx+40Remote.test"),
            ..failed("bob@remote.test")
        }];
        let r = Report {
            envid: Some("QQ+2B314"),
            ..report(&rcpts)
        };
        let (out, s) = built(&r);
        assert!(out.is_ascii());
        let root_type = content_type(&out, &s, 0);
        assert!(root_type.starts_with("multipart/report;"), "{root_type}");
        assert!(
            root_type.contains("report-type=delivery-status"),
            "{root_type}"
        );
        assert_eq!(
            header(&out, &s, 0, "From").as_deref(),
            Some("MAILER-DAEMON@mx.example.test (Mail Delivery System)")
        );
        assert_eq!(
            header(&out, &s, 0, "To").as_deref(),
            Some("alice@example.test")
        );
        assert_eq!(
            header(&out, &s, 0, "Subject").as_deref(),
            Some("Undelivered Mail Returned to Sender")
        );
        assert_eq!(
            header(&out, &s, 0, "Auto-Submitted").as_deref(),
            Some("auto-replied")
        );
        assert_eq!(
            header(&out, &s, 0, "Date").as_deref(),
            Some("Sun, 22 Nov 2026 03:45:16 +0000")
        );
        let id = header(&out, &s, 0, "Message-ID").unwrap();
        assert!(
            id.starts_with('<') && id.ends_with("@mx.example.test>"),
            "{id}"
        );

        let [human, status, original] = three_parts(&s);
        assert!(content_type(&out, &s, human).starts_with("text/plain"));
        let human_text = body(&out, &s, human);
        assert!(human_text.contains("<bob@remote.test>: failed: host mx.remote.test refused"));
        assert!(human_text.contains(
            "host mx.remote.test said: 550 5.1.1 <bob@remote.test>: Recipient address rejected"
        ));

        assert_eq!(content_type(&out, &s, status), "message/delivery-status");
        let status_text = body(&out, &s, status);
        let per_message = status_block(&status_text, 0);
        assert_eq!(field(&per_message, "Original-Envelope-Id"), Some("QQ+314"));
        assert_eq!(
            field(&per_message, "Reporting-MTA"),
            Some("dns; mx.example.test")
        );
        assert_eq!(
            field(&per_message, "Arrival-Date"),
            Some("Sun, 22 Nov 2026 02:45:16 +0000")
        );
        let bob = status_block(&status_text, 1);
        let names: Vec<&str> = bob.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "Original-Recipient",
                "Final-Recipient",
                "Action",
                "Status",
                "Remote-MTA",
                "Diagnostic-Code",
                "Last-Attempt-Date"
            ]
        );
        assert_eq!(
            field(&bob, "Original-Recipient"),
            Some("rfc822; Bob+x@Remote.test")
        );
        assert_eq!(
            field(&bob, "Final-Recipient"),
            Some("rfc822; bob@remote.test")
        );
        assert_eq!(field(&bob, "Action"), Some("failed"));
        assert_eq!(field(&bob, "Status"), Some("5.1.1"));
        assert_eq!(field(&bob, "Remote-MTA"), Some("dns; mx.remote.test"));
        assert_eq!(
            field(&bob, "Diagnostic-Code"),
            Some("smtp; 550 5.1.1 <bob@remote.test>: Recipient address rejected")
        );
        assert_eq!(
            field(&bob, "Last-Attempt-Date"),
            Some("Sun, 22 Nov 2026 03:44:16 +0000")
        );

        // No RET: the original's header only.
        assert_eq!(content_type(&out, &s, original), "text/rfc822-headers");
        let returned = body(&out, &s, original);
        assert!(returned.starts_with("Return-Path: <alice@example.test>\r\nFrom: Alice"));
        assert!(returned.contains("Subject: hello\r\n"));
        assert!(!returned.contains("the body"));
    }

    #[test]
    fn a_null_sender_never_gets_a_notice() {
        let rcpts = [failed("bob@remote.test")];
        let r = Report {
            sender: "",
            ..report(&rcpts)
        };
        assert_eq!(build(&r, NOW, HOST), None);
        // The same report to a real sender does produce one.
        assert!(build(&report(&rcpts), NOW, HOST).is_some());
    }

    #[test]
    fn notify_decides_who_is_reported() {
        use Action::*;
        const N: u8 = Notify::NEVER;
        const S: u8 = Notify::SUCCESS;
        const F: u8 = Notify::FAILURE;
        const D: u8 = Notify::DELAY;
        let cases: [(Option<u8>, Action, bool); 14] = [
            (None, Failed, true),
            (None, Delayed, true),
            (None, Delivered, false),
            (None, Relayed, false),
            (Some(N), Failed, false),
            (Some(N), Delayed, false),
            (Some(N), Delivered, false),
            (Some(S), Delivered, true),
            (Some(S), Relayed, true),
            (Some(S), Failed, false),
            (Some(F), Delayed, false),
            (Some(D), Delayed, true),
            (Some(S | F), Failed, true),
            (Some(S | F | D), Delayed, true),
        ];
        for (notify, action, reported) in cases {
            let rcpts = [RecipientReport {
                notify,
                action,
                ..failed("bob@remote.test")
            }];
            let out = build(&report(&rcpts), NOW, HOST);
            assert_eq!(out.is_some(), reported, "{notify:?} {action:?}");
        }
        // Mixed: only the recipients that asked appear.
        let rcpts = [
            RecipientReport {
                notify: Some(N),
                ..failed("never@remote.test")
            },
            failed("default@remote.test"),
            RecipientReport {
                notify: Some(S),
                action: Action::Delivered,
                reply: Some("250 2.0.0 Ok: queued as 9"),
                ..failed("ok@remote.test")
            },
            RecipientReport {
                notify: Some(F),
                action: Action::Delivered,
                ..failed("quiet@remote.test")
            },
        ];
        let (out, s) = built(&report(&rcpts));
        let [_, status, _] = three_parts(&s);
        let status_text = body(&out, &s, status);
        let reported: Vec<(String, String)> = (1..)
            .map(|block| status_block(&status_text, block))
            .take_while(|block| !block.is_empty())
            .map(|block| {
                (
                    field(&block, "Final-Recipient").unwrap().to_owned(),
                    field(&block, "Action").unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            reported,
            [
                ("rfc822; default@remote.test".into(), "failed".into()),
                ("rfc822; ok@remote.test".into(), "delivered".into()),
            ]
        );
        assert!(!text(&out).contains("never@remote.test"));
        assert!(!text(&out).contains("quiet@remote.test"));
        assert_eq!(
            header(&out, &s, 0, "Subject").as_deref(),
            Some("Undelivered Mail Returned to Sender")
        );
    }

    #[test]
    fn subjects_and_retry_fields_follow_the_actions() {
        let delayed = [RecipientReport {
            action: Action::Delayed,
            reply: Some("451 4.3.0 try again later"),
            ..failed("bob@remote.test")
        }];
        let r = Report {
            retry_until: Some(NOW + 86_400),
            ..report(&delayed)
        };
        let (out, s) = built(&r);
        assert_eq!(
            header(&out, &s, 0, "Subject").as_deref(),
            Some("Delayed Mail (still being retried)")
        );
        let [human, status, original] = three_parts(&s);
        let bob = status_block(&body(&out, &s, status), 1);
        assert_eq!(field(&bob, "Action"), Some("delayed"));
        assert_eq!(field(&bob, "Status"), Some("4.3.0"));
        assert_eq!(
            field(&bob, "Will-Retry-Until"),
            Some("Mon, 23 Nov 2026 03:45:16 +0000")
        );
        assert!(body(&out, &s, human).contains("until Mon, 23 Nov 2026 03:45:16 +0000"));
        assert_eq!(content_type(&out, &s, original), "text/rfc822-headers");

        let delivered = [RecipientReport {
            notify: Some(Notify::SUCCESS),
            action: Action::Delivered,
            reply: Some("250 2.0.0 Ok"),
            ..failed("bob@remote.test")
        }];
        let (out, s) = built(&Report {
            retry_until: Some(NOW + 86_400),
            ..report(&delivered)
        });
        assert_eq!(
            header(&out, &s, 0, "Subject").as_deref(),
            Some("Successful Mail Delivery Report")
        );
        let [_, status, _] = three_parts(&s);
        let bob = status_block(&body(&out, &s, status), 1);
        assert_eq!(field(&bob, "Status"), Some("2.0.0"));
        assert_eq!(field(&bob, "Will-Retry-Until"), None);
    }

    #[test]
    fn ret_full_returns_the_whole_message_unless_too_large_or_not_a_failure() {
        let rcpts = [failed("bob@remote.test")];
        let full = Report {
            ret: Some(Ret::Full),
            ..report(&rcpts)
        };
        let (out, s) = built(&full);
        let [_, _, original] = three_parts(&s);
        assert_eq!(content_type(&out, &s, original), "message/rfc822");
        assert_eq!(body(&out, &s, original).as_bytes(), ORIGINAL);
        // The embedded message is parsed as one: its Subject is found inside.
        let embedded = s.children(original).next().unwrap();
        assert_eq!(
            header(&out, &s, embedded, "Subject").as_deref(),
            Some("hello")
        );

        let hdrs = Report {
            ret: Some(Ret::Hdrs),
            ..report(&rcpts)
        };
        let (out, s) = built(&hdrs);
        let [_, _, original] = three_parts(&s);
        assert_eq!(content_type(&out, &s, original), "text/rfc822-headers");
        assert!(!body(&out, &s, original).contains("the body"));

        // Larger than RETURN_FULL_BYTES_MAX: the header only.
        let mut big = b"Subject: big\r\n\r\n".to_vec();
        while big.len() <= RETURN_FULL_BYTES_MAX {
            big.extend_from_slice(&[b'x'; 78]);
            big.extend_from_slice(b"\r\n");
        }
        let (out, s) = built(&Report {
            message: &big,
            ..full
        });
        let [_, _, original] = three_parts(&s);
        assert_eq!(content_type(&out, &s, original), "text/rfc822-headers");
        assert_eq!(body(&out, &s, original), "Subject: big\r\n");
        // Exactly at the limit: whole.
        big.truncate(RETURN_FULL_BYTES_MAX);
        let (out, s) = built(&Report {
            message: &big,
            ..full
        });
        let [_, _, original] = three_parts(&s);
        assert_eq!(content_type(&out, &s, original), "message/rfc822");

        // RET=FULL on a delay notice: the header only (RFC 3461 §4.3).
        let delayed = [RecipientReport {
            action: Action::Delayed,
            ..failed("bob@remote.test")
        }];
        let (out, s) = built(&Report {
            ret: Some(Ret::Full),
            ..report(&delayed)
        });
        let [_, _, original] = three_parts(&s);
        assert_eq!(content_type(&out, &s, original), "text/rfc822-headers");
    }

    #[test]
    fn status_codes_come_from_the_caller_the_reply_or_the_action() {
        let cases = [
            (None, Some("550 5.7.1 denied"), Action::Failed, "5.7.1"),
            (
                None,
                Some("550 mailbox unavailable"),
                Action::Failed,
                "5.0.0",
            ),
            (None, Some("451 try later"), Action::Delayed, "4.0.0"),
            (None, Some("550-5.1.1 multi line"), Action::Failed, "5.1.1"),
            // An enhanced code of another class is not believed.
            (None, Some("550 4.1.1 odd"), Action::Failed, "5.0.0"),
            (None, Some("550 5.1234.1 odd"), Action::Failed, "5.0.0"),
            (None, Some("no code at all"), Action::Failed, "5.0.0"),
            (None, None, Action::Delayed, "4.0.0"),
            (Some("5.1.2"), Some("550 5.1.1 x"), Action::Failed, "5.1.2"),
            (Some("5.4.7"), None, Action::Failed, "5.4.7"),
            // A malformed status from the caller falls back.
            (Some("five"), Some("554 5.7.1 x"), Action::Failed, "5.7.1"),
        ];
        for (status, reply, action, want) in cases {
            let r = RecipientReport {
                status,
                reply,
                action,
                ..failed("bob@remote.test")
            };
            assert_eq!(status_of(&r), want, "{status:?} {reply:?}");
        }
    }

    #[test]
    fn non_ascii_addresses_and_reasons_stay_seven_bit_in_the_report() {
        let rcpts = [RecipientReport {
            reason: "Postfach voll — später",
            reply: Some("552 5.2.2 Mailbox voll\r\nfür jörg"),
            ..failed("jörg@bücher.test")
        }];
        let (out, s) = built(&report(&rcpts));
        assert!(out.is_ascii(), "{}", text(&out));
        let [human, status, _] = three_parts(&s);
        let human_type = content_type(&out, &s, human);
        assert!(human_type.contains("charset=utf-8"), "{human_type}");
        assert_eq!(
            header(&out, &s, human, "Content-Transfer-Encoding").as_deref(),
            Some("quoted-printable")
        );
        let mut decoded = Vec::new();
        crate::mime::decode::quoted_printable(body(&out, &s, human).as_bytes(), &mut decoded);
        let decoded = String::from_utf8(decoded).unwrap();
        assert!(decoded.contains("<jörg@bücher.test>: failed: Postfach voll — später"));
        // The reply's line break became a space.
        assert!(decoded.contains("Mailbox voll  für jörg"), "{decoded}");
        let jorg = status_block(&body(&out, &s, status), 1);
        assert_eq!(
            field(&jorg, "Final-Recipient"),
            Some("utf-8; j\\x{F6}rg@b\\x{FC}cher.test")
        );
        assert_eq!(
            field(&jorg, "Diagnostic-Code"),
            Some("smtp; 552 5.2.2 Mailbox voll  f?r j?rg")
        );
    }

    #[test]
    fn the_returned_original_is_made_crlf_and_folded() {
        let long = "x".repeat(2500);
        let message = format!("Subject: a\nX-Long: {long}\r\nLone: cr\r\rbody\n");
        let rcpts = [failed("bob@remote.test")];
        let (out, s) = built(&Report {
            message: message.as_bytes(),
            ..report(&rcpts)
        });
        let [_, _, original] = three_parts(&s);
        let returned = body(&out, &s, original);
        assert!(
            returned.starts_with("Subject: a\r\nX-Long: xxx"),
            "{returned}"
        );
        // One field, folded: its value unfolds to the original.
        let value = first_value(returned.as_bytes(), 0..returned.len(), "X-Long").unwrap();
        let unfolded: Vec<u8> = value
            .iter()
            .copied()
            .filter(|&b| !matches!(b, b'\r' | b'\n' | b'\t'))
            .collect();
        assert_eq!(unfolded, long.as_bytes());
        assert!(returned.ends_with("Lone: cr\r\n"), "{returned:?}");
        // RET=FULL with a line over 998 bytes: the header only.
        let message = format!("Subject: a\r\n\r\n{long}\r\n");
        let (out, s) = built(&Report {
            message: message.as_bytes(),
            ret: Some(Ret::Full),
            ..report(&rcpts)
        });
        let [_, _, original] = three_parts(&s);
        assert_eq!(content_type(&out, &s, original), "text/rfc822-headers");
    }

    #[test]
    fn an_eight_bit_original_is_declared() {
        let message = "Subject: grüße\r\n\r\nhallo\r\n".as_bytes();
        let rcpts = [failed("bob@remote.test")];
        let (out, s) = built(&Report {
            message,
            ..report(&rcpts)
        });
        let [_, _, original] = three_parts(&s);
        assert_eq!(
            header(&out, &s, 0, "Content-Transfer-Encoding").as_deref(),
            Some("8bit")
        );
        assert_eq!(
            header(&out, &s, original, "Content-Transfer-Encoding").as_deref(),
            Some("8bit")
        );
        assert_eq!(body(&out, &s, original), "Subject: grüße\r\n");
    }

    #[test]
    fn the_boundary_never_occurs_in_the_parts() {
        let rcpts = [failed("bob@remote.test")];
        let first = build(&report(&rcpts), NOW, HOST).unwrap();
        let (out, s) = built(&report(&rcpts));
        let boundary = format!("0-1F.{NOW}/{HOST}");
        assert!(text(&out).contains(&format!("--{boundary}--\r\n")));
        assert_eq!(first, out, "deterministic");
        // An original that contains that boundary gets another one.
        let message = format!("Subject: trap --{boundary}\r\n\r\n--{boundary}--\r\n");
        let (out, s2) = built(&Report {
            message: message.as_bytes(),
            ret: Some(Ret::Full),
            ..report(&rcpts)
        });
        assert_eq!(three_parts(&s2).len(), 3);
        let [_, _, original] = three_parts(&s2);
        assert_eq!(body(&out, &s2, original), message);
        assert_eq!(three_parts(&s).len(), 3);
    }

    #[test]
    fn many_recipients_are_capped() {
        let addresses: Vec<String> = (0..RECIPIENTS_MAX + 5)
            .map(|i| format!("r{i}@remote.test"))
            .collect();
        let rcpts: Vec<RecipientReport> = addresses.iter().map(|a| failed(a)).collect();
        let (out, s) = built(&report(&rcpts));
        let [human, status, _] = three_parts(&s);
        assert!(body(&out, &s, human).contains("... and 5 more recipient(s)."));
        let status_text = body(&out, &s, status);
        assert_eq!(
            status_text.matches("Final-Recipient:").count(),
            RECIPIENTS_MAX
        );
    }

    #[test]
    fn quoted_printable_round_trips_and_keeps_lines_short() {
        let text = "a=b \r\n".to_owned() + &"ü".repeat(100) + "\r\nend\t\r\n";
        let mut encoded = Vec::new();
        quoted_printable(text.as_bytes(), &mut encoded);
        assert!(encoded.is_ascii());
        assert!(longest_line(&encoded) <= 76);
        let mut decoded = Vec::new();
        crate::mime::decode::quoted_printable(&encoded, &mut decoded);
        assert_eq!(String::from_utf8(decoded).unwrap(), text);
    }
}
