//! RFC 5322 address lists as ENVELOPE and SEARCH see them: mailboxes with
//! display names (phrases, or a trailing comment), routes, quoted local
//! parts, domain literals and groups. A group becomes a start marker (its
//! name as mailbox, no domain) and an end marker (all fields absent).
//!
//! Broken input is repaired the way Dovecot does, so our ENVELOPE matches
//! its: a missing mailbox or domain is filled with `MISSING_MAILBOX` /
//! `MISSING_DOMAIN`, an unparsable `<...>` gives `SYNTAX_ERROR`, a route
//! without `:` gives `INVALID_ROUTE`, and `user name` without `@` becomes a
//! display name.

use super::lex::{is_atext, Lex, Lexer};

/// At most this many addresses are taken from one header field.
pub(crate) const ADDRESSES_MAX: usize = 10_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Address {
    pub name: Option<Vec<u8>>,
    pub route: Option<Vec<u8>>,
    pub mailbox: Option<Vec<u8>>,
    pub domain: Option<Vec<u8>>,
    pub invalid: bool,
}

struct AddressParser<'a> {
    lex: Lexer<'a>,
    current: Address,
    scratch: Vec<u8>,
    out: Vec<Address>,
}

/// Parses one address header value into addresses and group markers.
pub(crate) fn parse_list(value: &[u8]) -> Vec<Address> {
    let mut p = AddressParser {
        lex: Lexer::new(value),
        current: Address::default(),
        scratch: Vec::new(),
        out: Vec::new(),
    };
    p.lex.last_comment = Some(Vec::new());
    if p.lex.skip_cfws() > Lex::End {
        p.address_list();
    }
    p.out
}

impl AddressParser<'_> {
    fn add(&mut self) {
        let address = std::mem::take(&mut self.current);
        if self.out.len() < ADDRESSES_MAX * 2 {
            self.out.push(address);
        }
    }

    fn add_fixed(&mut self) {
        if self.current.mailbox.is_none() {
            self.current.mailbox = Some(b"MISSING_MAILBOX".to_vec());
            self.current.invalid = true;
        }
        if self.current.domain.as_ref().is_none_or(|d| d.is_empty()) {
            self.current.domain = Some(b"MISSING_DOMAIN".to_vec());
            self.current.invalid = true;
        }
        self.add();
    }

    fn address_list(&mut self) {
        for _ in 0..ADDRESSES_MAX {
            if self.address() == Lex::End {
                break;
            }
            if self.lex.peek() != Some(b',') {
                break;
            }
            self.lex.bump();
            let state = self.lex.skip_cfws();
            if state <= Lex::End {
                if state == Lex::Err {
                    // The list ends with garbage.
                    self.add_fixed();
                }
                break;
            }
        }
    }

    fn address(&mut self) -> Lex {
        let start = self.lex.pos();
        match self.group() {
            Some(state) => state,
            None => {
                self.lex.set_pos(start);
                self.mailbox()
            }
        }
    }

    /// `display-name ":" [mailbox-list] ";"`; `None` when it is not a group.
    fn group(&mut self) -> Option<Lex> {
        self.scratch.clear();
        let mut name = std::mem::take(&mut self.scratch);
        let state = self.lex.phrase(&mut name);
        if state <= Lex::End || self.lex.peek() != Some(b':') {
            self.scratch = name;
            return None;
        }
        self.lex.bump();
        let mut state = self.lex.skip_cfws();
        if state <= Lex::End {
            self.current.invalid = true;
        }
        self.current.mailbox = Some(name);
        self.add();
        if state > Lex::End && self.lex.peek() != Some(b';') {
            for _ in 0..ADDRESSES_MAX {
                // A broken mailbox is skipped; the list goes on.
                self.mailbox();
                if self.lex.peek() != Some(b',') {
                    break;
                }
                self.lex.bump();
                if self.lex.skip_cfws() <= Lex::End {
                    state = Lex::Err;
                    break;
                }
            }
        }
        if state != Lex::Err {
            if self.lex.peek() == Some(b';') {
                self.lex.bump();
                state = self.lex.skip_cfws();
            } else {
                state = Lex::Err;
            }
        }
        if state == Lex::Err {
            self.current.invalid = true;
        }
        self.add();
        Some(if state == Lex::End {
            Lex::End
        } else {
            Lex::More
        })
    }

    /// `name-addr / addr-spec`, always adding one address.
    fn mailbox(&mut self) -> Lex {
        let start = self.lex.pos();
        let mut state = match self.name_addr() {
            Some(state) => state,
            None => {
                self.lex.set_pos(start);
                let state = self.addr_spec();
                let a = &mut self.current;
                if a.invalid && a.name.is_none() && a.mailbox.is_some() && a.domain.is_none() {
                    a.name = a.mailbox.take();
                }
                state
            }
        };
        if state == Lex::Err {
            self.current.invalid = true;
            state = Lex::Err;
        }
        self.add_fixed();
        state
    }

    /// `[display-name] angle-addr`; `None` when it is not one.
    fn name_addr(&mut self) -> Option<Lex> {
        self.scratch.clear();
        let state = self.lex.phrase(&mut self.scratch);
        if state <= Lex::End || self.lex.peek() != Some(b'<') {
            return None;
        }
        self.current.name = if self.scratch.is_empty() {
            None
        } else {
            Some(self.scratch.clone())
        };
        if self.angle_addr() == Lex::Err {
            self.current.domain = Some(b"SYNTAX_ERROR".to_vec());
            self.current.invalid = true;
        }
        Some(if self.lex.at_end() {
            Lex::End
        } else {
            Lex::More
        })
    }

    /// `"<" [route ":"] local-part "@" domain ">"`.
    fn angle_addr(&mut self) -> Lex {
        self.lex.bump();
        if self.lex.skip_cfws() <= Lex::End {
            return Lex::Err;
        }
        if self.lex.peek() == Some(b'@') {
            if self.route() == Lex::More && self.lex.peek() == Some(b':') {
                self.lex.bump();
            } else {
                self.current.route = Some(b"INVALID_ROUTE".to_vec());
                if self.lex.at_end() {
                    return Lex::Err;
                }
            }
            if self.lex.skip_cfws() <= Lex::End {
                return Lex::Err;
            }
        }
        if self.lex.peek() != Some(b'>') {
            if self.local_part() <= Lex::End {
                return Lex::Err;
            }
            if self.lex.peek() == Some(b'@') && self.domain() <= Lex::End {
                return Lex::Err;
            }
        }
        if self.lex.peek() != Some(b'>') {
            return Lex::Err;
        }
        self.lex.bump();
        self.lex.skip_cfws()
    }

    /// `obs-domain-list`: `@a,@b` up to the `:`.
    fn route(&mut self) -> Lex {
        self.scratch.clear();
        let mut route = std::mem::take(&mut self.scratch);
        loop {
            if self.lex.at_end() {
                self.scratch = route;
                return Lex::End;
            }
            if self.lex.peek() != Some(b'@') {
                break;
            }
            if !route.is_empty() {
                route.push(b',');
            }
            route.push(b'@');
            let state = self.lex.domain(&mut route);
            if state <= Lex::End {
                self.scratch = route;
                return state;
            }
            while self.lex.skip_cfws() > Lex::End && self.lex.peek() == Some(b',') {
                self.lex.bump();
            }
        }
        self.current.route = Some(route);
        Lex::More
    }

    fn local_part(&mut self) -> Lex {
        self.scratch.clear();
        let state = if self.lex.peek() == Some(b'"') {
            self.lex.quoted_string(&mut self.scratch)
        } else {
            self.loose_dot_atom()
        };
        if state == Lex::Err {
            return Lex::Err;
        }
        self.current.mailbox = Some(self.scratch.clone());
        state
    }

    /// A dot-atom that also accepts leading, trailing and doubled dots.
    fn loose_dot_atom(&mut self) -> Lex {
        let mut state = Lex::Err;
        loop {
            while self.lex.peek() == Some(b'.') {
                self.scratch.push(b'.');
                self.lex.bump();
                if self.lex.at_end() {
                    return Lex::End;
                }
                state = Lex::More;
            }
            if self.lex.peek() == Some(b'@') {
                break;
            }
            state = self.lex.atom(&mut self.scratch);
            if !(state == Lex::More && self.lex.peek() == Some(b'.')) {
                break;
            }
        }
        state
    }

    fn domain(&mut self) -> Lex {
        self.scratch.clear();
        let state = self.lex.domain(&mut self.scratch);
        if state == Lex::Err {
            return Lex::Err;
        }
        self.current.domain = Some(self.scratch.clone());
        state
    }

    /// `local-part "@" domain`, with a comment as display name.
    fn addr_spec(&mut self) -> Lex {
        self.lex.last_comment = Some(Vec::new());
        let quoted = self.lex.peek() == Some(b'"');
        let mut state = self.local_part();
        if state <= Lex::End {
            self.current.invalid = true;
        }
        let mut domain_state = None;
        if state != Lex::End && self.lex.peek() == Some(b'@') {
            let d = self.domain();
            if d <= Lex::End {
                state = d;
            }
            domain_state = Some(d);
        }
        let comment = self.lex.last_comment.clone().unwrap_or_default();
        if !comment.is_empty() {
            self.current.name = Some(comment);
        } else if domain_state.is_none() {
            // `user` alone is a mailbox; `user more words` a display name.
            self.scratch.push(b' ');
            let before = self.scratch.len();
            self.lex.phrase(&mut self.scratch);
            if self.scratch.len() != before {
                self.current.mailbox = None;
                self.current.name = Some(self.scratch.clone());
            } else if !quoted {
                self.current.domain = Some(Vec::new());
            }
            self.current.invalid = true;
            state = Lex::Err;
        }
        state
    }
}

/// Writes addresses back as a header value, normalised (Dovecot's
/// `message_address_write`), for SEARCH FROM/TO/CC/BCC.
pub(crate) fn write_list(out: &mut Vec<u8>, list: &[Address]) {
    let mut first = true;
    let mut in_group = false;
    for a in list {
        if first {
            first = false;
        } else {
            out.extend_from_slice(b", ");
        }
        if a.domain.is_none() {
            if !in_group {
                match a.mailbox.as_deref() {
                    Some(name) if !name.is_empty() => {
                        if contains(name, b"=?") {
                            out.extend_from_slice(name);
                        } else {
                            append_maybe_quoted(out, name, true);
                        }
                    }
                    _ => out.extend_from_slice(b"\"\""),
                }
                out.extend_from_slice(b": ");
                first = true;
            } else {
                if out.ends_with(b", ") {
                    out.truncate(out.len() - 2);
                } else if out.ends_with(b": ") {
                    out.truncate(out.len() - 1);
                }
                out.push(b';');
            }
            in_group = !in_group;
            continue;
        }
        let mailbox = a.mailbox.as_deref().unwrap_or_default();
        let domain = a.domain.as_deref().unwrap_or_default();
        if let Some(name) = a.name.as_deref() {
            if contains(name, b"=?") {
                out.extend_from_slice(name);
            } else {
                append_maybe_quoted(out, name, true);
            }
        }
        if a.route.is_some() || !mailbox.is_empty() || !domain.is_empty() {
            if a.name.as_deref().is_some_and(|n| !n.is_empty()) {
                out.push(b' ');
            }
            out.push(b'<');
            if let Some(route) = a.route.as_deref() {
                out.extend_from_slice(route);
                out.push(b':');
            }
            if mailbox.is_empty() {
                out.extend_from_slice(b"\"\"");
            } else {
                append_maybe_quoted(out, mailbox, false);
            }
            if !domain.is_empty() {
                out.push(b'@');
                out.extend_from_slice(domain);
            }
            out.push(b'>');
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// Quotes a phrase or local part when it has anything but atext (and dots,
/// unless `quote_dots`), escaping `"`, `\` and `'`.
fn append_maybe_quoted(out: &mut Vec<u8>, s: &[u8], quote_dots: bool) {
    if s.iter().all(|&c| is_atext(c) || (!quote_dots && c == b'.')) {
        out.extend_from_slice(s);
        return;
    }
    out.push(b'"');
    for &c in s {
        if matches!(c, b'"' | b'\\' | b'\'') {
            out.push(b'\\');
        }
        out.push(c);
    }
    out.push(b'"');
}
