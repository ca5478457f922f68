//! ENVELOPE (RFC 9051 §7.5.2): date, subject, from, sender, reply-to, to,
//! cc, bcc, in-reply-to, message-id, read from a header block.
//!
//! As in Dovecot: the last Date/Subject/In-Reply-To/Message-ID field wins;
//! repeated address fields are joined as one list; an absent or empty
//! Sender/Reply-To is From; encoded words are sent undecoded; the subject
//! and display names are "strings for humans" (white space collapsed).

use std::ops::Range;

use super::address::{parse_list, Address, ADDRESSES_MAX};
use super::header::{fields, without_nuls};
use super::quote::{nstring, nstring_nolf, string_for_humans};
use super::MessageStructure;

#[derive(Default)]
struct Envelope<'a> {
    date: Option<&'a [u8]>,
    subject: Option<&'a [u8]>,
    in_reply_to: Option<&'a [u8]>,
    message_id: Option<&'a [u8]>,
    /// from, sender, reply-to, to, cc, bcc
    addresses: [Vec<Address>; 6],
}

const ADDRESS_FIELDS: [&str; 6] = ["From", "Sender", "Reply-To", "To", "Cc", "Bcc"];

/// Most addresses (group markers included) one FETCH item writes: as many
/// as one field may hold, but across all address fields of all the
/// envelopes in one ENVELOPE or BODYSTRUCTURE. Broken lists make an address
/// per byte (`To: ,,,` gives `MISSING_MAILBOX@MISSING_DOMAIN` entries, about
/// 45 bytes each), so without a bound across repeated fields and embedded
/// messages a 25 MiB message could produce a reply of a gigabyte.
pub(crate) const ENVELOPE_ADDRESSES_MAX: usize = ADDRESSES_MAX * 2;

/// Writes `(date subject from sender reply-to to cc bcc in-reply-to
/// message-id)` for the header block `header`, taking at most
/// `addresses_left` addresses (and counting them off).
pub(crate) fn write(
    msg: &[u8],
    header: Range<usize>,
    addresses_left: &mut usize,
    out: &mut Vec<u8>,
) {
    let mut env = Envelope::default();
    for field in fields(msg, header) {
        let name = field.name;
        if name.eq_ignore_ascii_case(b"Date") {
            env.date = Some(field.value);
        } else if name.eq_ignore_ascii_case(b"Subject") {
            env.subject = Some(field.value);
        } else if name.eq_ignore_ascii_case(b"In-Reply-To") {
            env.in_reply_to = Some(field.value);
        } else if name.eq_ignore_ascii_case(b"Message-ID") {
            env.message_id = Some(field.value);
        } else if let Some(slot) = ADDRESS_FIELDS
            .iter()
            .position(|n| name.eq_ignore_ascii_case(n.as_bytes()))
        {
            if *addresses_left > 0 {
                let list = parse_list(field.value);
                let taken = list.len().min(*addresses_left);
                *addresses_left -= taken;
                env.addresses[slot].extend(list.into_iter().take(taken));
            }
        }
    }
    out.push(b'(');
    nstring_nolf(out, env.date.map(without_nuls).as_deref());
    out.push(b' ');
    match env.subject {
        None => out.extend_from_slice(b"NIL"),
        Some(subject) => string_for_humans(out, &without_nuls(subject)),
    }
    let [from, sender, reply_to, to, cc, bcc] = &env.addresses;
    for list in [
        from,
        if sender.is_empty() { from } else { sender },
        if reply_to.is_empty() { from } else { reply_to },
        to,
        cc,
        bcc,
    ] {
        out.push(b' ');
        write_addresses(out, list);
    }
    out.push(b' ');
    nstring_nolf(out, env.in_reply_to.map(without_nuls).as_deref());
    out.push(b' ');
    nstring_nolf(out, env.message_id.map(without_nuls).as_deref());
    out.push(b')');
}

fn write_addresses(out: &mut Vec<u8>, list: &[Address]) {
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for a in list {
        out.push(b'(');
        match a.name.as_deref() {
            None => out.extend_from_slice(b"NIL"),
            Some(name) => string_for_humans(out, name),
        }
        out.push(b' ');
        nstring(out, a.route.as_deref());
        out.push(b' ');
        nstring(out, a.mailbox.as_deref());
        out.push(b' ');
        nstring(out, a.domain.as_deref());
        out.push(b')');
    }
    out.push(b')');
}

impl MessageStructure {
    /// Appends the ENVELOPE of the message (parenthesised list) to `out`.
    pub fn envelope(&self, msg: &[u8], out: &mut Vec<u8>) {
        let mut addresses_left = ENVELOPE_ADDRESSES_MAX;
        match self.bytes(msg) {
            Some(msg) => write(msg, self.root().header.range(), &mut addresses_left, out),
            None => write(b"", 0..0, &mut addresses_left, out),
        }
    }
}
