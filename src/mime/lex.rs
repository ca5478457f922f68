//! The RFC 5322 / RFC 2045 lexer under addresses, dates and Content-* values:
//! white space and (nested) comments, atoms, dot-atoms, MIME tokens, quoted
//! strings, phrases, domains, `type/subtype` and `; name=value` parameters
//! with RFC 2231 continuations merged.
//!
//! Error recovery is deliberately the same as Dovecot's lexer (imaptest
//! compares our BODYSTRUCTURE and ENVELOPE with its output for broken mail):
//! every step reports [`Lex::Err`], [`Lex::End`] (input exhausted) or
//! [`Lex::More`], and callers decide how far a partial result counts.
//! Folding line ends inside quoted strings, comments and domain literals are
//! removed; NUL bytes there become U+FFFD.

/// Outcome of one lexer step. Ordered: `Err < End < More`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lex {
    /// Malformed input.
    Err,
    /// Success, and the input is exhausted.
    End,
    /// Success, and more input follows.
    More,
}

const ATEXT: u8 = 1; // atext that is also a MIME token character
const ALNUM: u8 = 2; // letters, digits and all 8-bit bytes
const TSPECIAL: u8 = 4; // atext that MIME calls a tspecial: '/', '=', '?'

const fn char_classes() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut c = 0usize;
    while c < 256 {
        let b = c as u8;
        table[c] = if b.is_ascii_alphanumeric() || b >= 0x80 {
            ALNUM
        } else if b == b'/' || b == b'=' || b == b'?' {
            TSPECIAL
        } else if matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'^'
                | b'_'
                | b'`'
                | b'{'
                | b'|'
                | b'}'
                | b'~'
        ) {
            ATEXT
        } else {
            0
        };
        c += 1;
    }
    table
}

static CLASSES: [u8; 256] = char_classes();

/// RFC 5322 atext (8-bit bytes included).
pub fn is_atext(c: u8) -> bool {
    CLASSES[c as usize] != 0
}

/// RFC 2045 token character (atext minus `/`, `=`, `?`).
pub fn is_token_char(c: u8) -> bool {
    CLASSES[c as usize] & (ATEXT | ALNUM) != 0
}

const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// A cursor over one header value.
pub struct Lexer<'a> {
    input: &'a [u8],
    pos: usize,
    /// When set, the text of the last comment skipped (Dovecot uses it as
    /// the display name of `user@host (Name)`).
    pub last_comment: Option<Vec<u8>>,
}

impl<'a> Lexer<'a> {
    pub fn new(input: &'a [u8]) -> Lexer<'a> {
        Lexer {
            input,
            pos: 0,
            last_comment: None,
        }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn set_pos(&mut self, pos: usize) {
        self.pos = pos.min(self.input.len());
    }

    pub fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    pub fn bump(&mut self) {
        if self.pos < self.input.len() {
            self.pos += 1;
        }
    }

    fn state(&self) -> Lex {
        if self.at_end() {
            Lex::End
        } else {
            Lex::More
        }
    }

    /// Skips white space, line ends and comments.
    pub fn skip_cfws(&mut self) -> Lex {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\r' | b'\n' => self.pos += 1,
                b'(' => {
                    if self.skip_comment() == Lex::Err {
                        return Lex::Err;
                    }
                }
                _ => break,
            }
        }
        self.state()
    }

    /// Skips one comment starting at `(`. When recording, `last_comment`
    /// receives its text up to the last point Dovecot would have copied it
    /// (closing paren, folding line end, escape or NUL), so even an
    /// unterminated comment leaves the same partial name.
    fn skip_comment(&mut self) -> Lex {
        let record = self.last_comment.is_some();
        let mut text = Vec::new();
        let state = match self.enclosed(&mut text, b')') {
            Ok(()) => self.state(),
            Err(copied) => {
                text.truncate(copied);
                Lex::Err
            }
        };
        if record {
            self.last_comment = Some(text);
        }
        state
    }

    /// The text between the opening delimiter at `pos` and the matching
    /// `close` (`"` quoted string, `)` comment, `]` domain literal), appended
    /// to `out`; `pos` ends past `close`. Shared rules: folding line ends are
    /// removed (a CR only right before the LF, within the text since the last
    /// escape, NUL or line end), NUL becomes U+FFFD, a backslash before CR,
    /// LF or NUL is kept as text. Comments nest; a domain literal keeps its
    /// escapes and may not contain `[`. `Err` holds the length `out` had at
    /// the last of those points (Dovecot's last copy) when the text is
    /// unterminated or broken.
    fn enclosed(&mut self, out: &mut Vec<u8>, close: u8) -> Result<(), usize> {
        let mut segment = out.len();
        let mut depth = 1u32;
        self.pos += 1;
        while let Some(c) = self.peek() {
            match c {
                b'(' if close == b')' => depth += 1,
                b'[' if close == b']' => return Err(segment),
                _ if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        self.pos += 1;
                        return Ok(());
                    }
                }
                b'\n' => {
                    if out.len() > segment && out.last() == Some(&b'\r') {
                        out.pop();
                    }
                    segment = out.len();
                    self.pos += 1;
                    continue;
                }
                0 => {
                    out.extend_from_slice(REPLACEMENT);
                    segment = out.len();
                    self.pos += 1;
                    continue;
                }
                b'\\' => match self.input.get(self.pos + 1) {
                    None => return Err(segment),
                    Some(b'\r' | b'\n' | 0) => {}
                    Some(&escaped) => {
                        segment = out.len();
                        if close == b']' {
                            out.push(b'\\');
                        }
                        out.push(escaped);
                        self.pos += 2;
                        continue;
                    }
                },
                _ => {}
            }
            out.push(c);
            self.pos += 1;
        }
        Err(segment)
    }

    /// `1*atext`, then CFWS.
    pub fn atom(&mut self, out: &mut Vec<u8>) -> Lex {
        match self.peek() {
            Some(c) if is_atext(c) => {}
            _ => return Lex::Err,
        }
        let start = self.pos;
        while self.peek().is_some_and(is_atext) {
            self.pos += 1;
        }
        out.extend_from_slice(&self.input[start..self.pos]);
        if self.at_end() {
            Lex::End
        } else {
            self.skip_cfws()
        }
    }

    /// `dot-atom` allowing CFWS around the dots (RFC 822).
    pub fn dot_atom(&mut self, out: &mut Vec<u8>) -> Lex {
        loop {
            let start = self.pos;
            while self.peek().is_some_and(is_atext) {
                self.pos += 1;
            }
            if start == self.pos {
                return Lex::Err;
            }
            out.extend_from_slice(&self.input[start..self.pos]);
            if self.at_end() {
                return Lex::End;
            }
            let state = self.skip_cfws();
            if state <= Lex::End {
                return state;
            }
            if self.peek() != Some(b'.') {
                return Lex::More;
            }
            self.pos += 1;
            out.push(b'.');
            if self.skip_cfws() <= Lex::End {
                return Lex::Err;
            }
        }
    }

    /// A MIME token (dots allowed), possibly empty, then CFWS.
    pub fn token(&mut self, out: &mut Vec<u8>) -> Lex {
        let start = self.pos;
        while self.peek().is_some_and(|c| is_token_char(c) || c == b'.') {
            self.pos += 1;
        }
        out.extend_from_slice(&self.input[start..self.pos]);
        if self.at_end() {
            Lex::End
        } else {
            self.skip_cfws()
        }
    }

    /// A quoted string starting at `"`: escapes and folding removed.
    pub fn quoted_string(&mut self, out: &mut Vec<u8>) -> Lex {
        match self.enclosed(out, b'"') {
            Ok(()) => self.skip_cfws(),
            Err(_) => Lex::Err,
        }
    }

    /// Atext and dots (possibly none), then CFWS.
    fn atom_or_dots(&mut self, out: &mut Vec<u8>) -> Lex {
        let start = self.pos;
        while self.peek().is_some_and(|c| is_atext(c) || c == b'.') {
            self.pos += 1;
        }
        out.extend_from_slice(&self.input[start..self.pos]);
        if self.at_end() {
            Lex::End
        } else {
            self.skip_cfws()
        }
    }

    /// `phrase` (obs-phrase: dots allowed): words joined by single spaces.
    pub fn phrase(&mut self, out: &mut Vec<u8>) -> Lex {
        match self.peek() {
            None => return Lex::End,
            Some(b'.') => return Lex::Err,
            Some(_) => {}
        }
        loop {
            let state = if self.peek() == Some(b'"') {
                self.quoted_string(out)
            } else {
                self.atom_or_dots(out)
            };
            if state <= Lex::End {
                return state;
            }
            match self.peek() {
                Some(c) if is_atext(c) || c == b'"' || c == b'.' => out.push(b' '),
                _ => break,
            }
        }
        self.skip_cfws()
    }

    /// A domain literal starting at `[`, brackets and escapes kept.
    fn domain_literal(&mut self, out: &mut Vec<u8>) -> Lex {
        out.push(b'[');
        if self.enclosed(out, b']').is_err() {
            return Lex::Err;
        }
        out.push(b']');
        self.skip_cfws()
    }

    /// `"@" domain` starting at `@`: a dot-atom or a domain literal.
    pub fn domain(&mut self, out: &mut Vec<u8>) -> Lex {
        self.pos += 1;
        if self.skip_cfws() <= Lex::End {
            return Lex::Err;
        }
        if self.peek() == Some(b'[') {
            self.domain_literal(out)
        } else {
            self.dot_atom(out)
        }
    }

    /// `type "/" subtype` into `out`. On a broken value `out` keeps what
    /// Dovecot keeps: a lone type token when the input ended right after it,
    /// nothing otherwise.
    pub fn content_type(&mut self, out: &mut Vec<u8>) -> Lex {
        let start = out.len();
        if self.skip_cfws() <= Lex::End {
            return Lex::Err;
        }
        if self.token(out) <= Lex::End || out.len() == start {
            return Lex::Err;
        }
        if self.peek() != Some(b'/') {
            out.truncate(start);
            return Lex::Err;
        }
        self.pos += 1;
        if self.skip_cfws() <= Lex::End {
            out.truncate(start);
            return Lex::Err;
        }
        out.push(b'/');
        let subtype_start = out.len();
        let state = self.token(out);
        if state == Lex::Err
            || out.len() == subtype_start
            || !(self.at_end() || self.peek() == Some(b';'))
        {
            out.truncate(start);
            return Lex::Err;
        }
        state
    }

    /// One `; name=value` parameter. `End` when the input is exhausted.
    fn parameter(&mut self, name: &mut Vec<u8>, value: &mut Vec<u8>) -> Lex {
        name.clear();
        value.clear();
        match self.peek() {
            None => return Lex::End,
            Some(b';') => self.pos += 1,
            Some(_) => return Lex::Err,
        }
        if self.skip_cfws() <= Lex::End {
            return Lex::Err;
        }
        if self.token(name) <= Lex::End || self.peek() != Some(b'=') {
            return Lex::Err;
        }
        self.pos += 1;
        let mut state = self.skip_cfws();
        if state > Lex::End {
            match self.peek() {
                Some(b'"') => state = self.quoted_string(value),
                Some(b'=') => {
                    // Broken senders write `name==?utf-8?b?...?=` unquoted.
                    while let Some(c) = self.peek() {
                        if matches!(c, b';' | b' ' | b'\t' | b'\r' | b'\n') {
                            break;
                        }
                        value.push(c);
                        self.pos += 1;
                    }
                }
                _ => state = self.token(value),
            }
        }
        if state == Lex::Err {
            Lex::Err
        } else {
            Lex::More
        }
    }

    /// All remaining parameters, RFC 2231 continuations (`name*0*=...`)
    /// merged into `name*` (extended) or `name` (plain) without decoding.
    /// Plain parameters come first in message order, merged ones after,
    /// sorted by name.
    pub fn parameters(&mut self) -> Params {
        struct Piece {
            key: Vec<u8>,
            value: Vec<u8>,
            index: u32,
            extended: bool,
        }
        let mut result = Vec::new();
        let mut pieces: Vec<Piece> = Vec::new();
        let mut name = Vec::new();
        let mut value = Vec::new();
        // Dovecot keeps the last index when a key ends in a bare `*`.
        let mut index = 0u32;
        const PARAMETERS_MAX: usize = 1_000;
        while result.len() + pieces.len() < PARAMETERS_MAX {
            match self.parameter(&mut name, &mut value) {
                Lex::End => break,
                Lex::Err => {
                    if self.at_end() {
                        break;
                    }
                    self.pos += 1;
                    continue;
                }
                Lex::More => {}
            }
            let Some(star) = name.iter().position(|&c| c == b'*') else {
                result.push((name.clone(), value.clone()));
                continue;
            };
            // `name*` is extended (index kept); `name*N` or `name*N*` sets it.
            let mut p = star;
            if star + 1 < name.len() {
                p = star + 1;
                index = 0;
                while p < name.len() && name[p].is_ascii_digit() {
                    index = index
                        .saturating_mul(10)
                        .saturating_add(u32::from(name[p] - b'0'));
                    p += 1;
                }
            }
            let extended = name.get(p) == Some(&b'*');
            if extended {
                p += 1;
            }
            if p != name.len() {
                result.push((name.clone(), value.clone()));
                continue;
            }
            pieces.push(Piece {
                key: name[..star].to_vec(),
                value: value.clone(),
                index,
                extended,
            });
        }
        if pieces.is_empty() {
            return result;
        }
        pieces.sort_by(|a, b| a.key.cmp(&b.key).then(a.index.cmp(&b.index)));
        let mut i = 0;
        while i < pieces.len() {
            let mut j = i;
            let mut contiguous = true;
            let mut any_extended = false;
            while j < pieces.len() && pieces[j].key.eq_ignore_ascii_case(&pieces[i].key) {
                if pieces[j].index as usize != j - i {
                    contiguous = false;
                }
                any_extended |= pieces[j].extended;
                j += 1;
            }
            if !contiguous {
                for piece in &pieces[i..j] {
                    let mut key = piece.key.clone();
                    key.push(b'*');
                    key.extend_from_slice(piece.index.to_string().as_bytes());
                    if piece.extended {
                        key.push(b'*');
                    }
                    result.push((key, piece.value.clone()));
                }
            } else {
                let mut merged = Vec::new();
                if any_extended && !pieces[i].extended {
                    merged.extend_from_slice(b"''");
                }
                for piece in &pieces[i..j] {
                    if any_extended && !piece.extended {
                        for &c in &piece.value {
                            if c == b'%' {
                                merged.extend_from_slice(b"%25");
                            } else {
                                merged.push(c);
                            }
                        }
                    } else {
                        merged.extend_from_slice(&piece.value);
                    }
                }
                let mut key = pieces[i].key.clone();
                if any_extended {
                    key.push(b'*');
                }
                result.push((key, merged));
            }
            i = j;
        }
        result
    }
}

/// MIME parameters: `(name, value)` pairs, names as written.
pub type Params = Vec<(Vec<u8>, Vec<u8>)>;

/// A parsed Content-Type value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContentType {
    /// Main type as written (may be empty for a broken value).
    pub main: Vec<u8>,
    /// Subtype as written (empty when missing or broken).
    pub sub: Vec<u8>,
    /// Parameters, names as written.
    pub params: Params,
}

impl ContentType {
    /// Parses a Content-Type value; `with_params` = false skips parameters.
    pub fn parse(value: &[u8], with_params: bool) -> ContentType {
        let mut lexer = Lexer::new(value);
        lexer.skip_cfws();
        let mut both = Vec::new();
        let state = lexer.content_type(&mut both);
        let (main, sub) = match both.iter().position(|&c| c == b'/') {
            Some(slash) => (both[..slash].to_vec(), both[slash + 1..].to_vec()),
            None => (both, Vec::new()),
        };
        let params = if with_params && state != Lex::Err {
            lexer.parameters()
        } else {
            Vec::new()
        };
        ContentType { main, sub, params }
    }

    /// The value of the first parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&[u8]> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_slice())
    }
}

/// A Content-Transfer-Encoding value as BODYSTRUCTURE shows it: the token,
/// when the value is exactly one token.
pub fn transfer_encoding(v: &[u8]) -> Option<Vec<u8>> {
    let mut lex = Lexer::new(v);
    lex.skip_cfws();
    let mut token = Vec::new();
    if lex.token(&mut token) != Lex::Err && lex.skip_cfws() == Lex::End && !token.is_empty() {
        Some(token)
    } else {
        None
    }
}

/// A Content-Disposition value: type (possibly empty) and parameters.
pub fn disposition(v: &[u8]) -> Option<(Vec<u8>, Params)> {
    let mut lex = Lexer::new(v);
    lex.skip_cfws();
    let mut token = Vec::new();
    if lex.token(&mut token) == Lex::Err {
        return None;
    }
    let params = lex.parameters();
    Some((token, params))
}

/// A Content-Language value: atoms separated by commas.
pub fn language(v: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut lex = Lexer::new(v);
    lex.skip_cfws();
    let mut tags = Vec::new();
    loop {
        let mut tag = Vec::new();
        if lex.atom(&mut tag) == Lex::Err {
            break;
        }
        tags.push(tag);
        if lex.peek() != Some(b',') {
            break;
        }
        lex.bump();
        lex.skip_cfws();
    }
    if tags.is_empty() {
        None
    } else {
        Some(tags)
    }
}
