//! IMAP client commands: the owned AST and [`parse`], which turns one complete
//! command as framed by [`super::codec`] (every line and every literal, exactly
//! as received) into a [`Command`].
//!
//! Grammar: RFC 9051 (IMAP4rev2) and RFC 3501 (IMAP4rev1), with LITERAL+/-
//! (7888), LIST-EXTENDED (5258), LIST-STATUS (5819), SPECIAL-USE and
//! CREATE-SPECIAL-USE (6154), ESEARCH (4731), SEARCHRES (5182), CONDSTORE and
//! QRESYNC (7162), UIDPLUS (4315), MOVE (6851), ID (2971), ENABLE (5161),
//! UNSELECT (3691), IDLE (2177), SASL-IR (4959), MULTIAPPEND (3502) and
//! BINARY (3516). Keywords are case-insensitive; mailbox names come back as the
//! raw bytes sent (the session decodes modified UTF-7 and matches INBOX).
//!
//! Deliberate leniency: bytes >= 0x80 are accepted in atoms and quoted strings
//! (rev1 clients do send raw UTF-8 names), and a command may end in LF or at the
//! end of input as well as CRLF. Everything else is strict, and [`parse`] never
//! panics: nesting is bounded by [`SEARCH_DEPTH_MAX`], lengths by the input.

use std::fmt;
use std::hash::{Hash, Hasher};

use thiserror::Error;

use super::sequence::SequenceSet;

/// How deeply search keys may nest (`NOT`, `OR`, parentheses).
pub const SEARCH_DEPTH_MAX: usize = 64;
/// RFC 2971: at most 30 field-value pairs in ID.
pub const ID_PAIRS_MAX: usize = 30;

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub tag: String,
    pub body: CommandBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandBody {
    Capability,
    Noop,
    Logout,
    StartTls,
    Login {
        username: Vec<u8>,
        password: Secret,
    },
    Authenticate {
        /// Upper-cased.
        mechanism: String,
        /// SASL-IR: the base64 text as sent; `=` gives an empty vector.
        initial_response: Option<Vec<u8>>,
    },
    Enable {
        /// Upper-cased.
        capabilities: Vec<String>,
    },
    Id {
        parameters: Option<Vec<(String, Option<String>)>>,
    },
    Namespace,
    Select {
        mailbox: Vec<u8>,
        condstore: bool,
        qresync: Option<QResync>,
    },
    Examine {
        mailbox: Vec<u8>,
        condstore: bool,
        qresync: Option<QResync>,
    },
    Create {
        mailbox: Vec<u8>,
        /// `USE (\Sent ...)`: the attributes as sent, backslash included.
        special_use: Vec<String>,
    },
    Delete {
        mailbox: Vec<u8>,
    },
    Rename {
        from: Vec<u8>,
        to: Vec<u8>,
    },
    Subscribe {
        mailbox: Vec<u8>,
    },
    Unsubscribe {
        mailbox: Vec<u8>,
    },
    List {
        reference: Vec<u8>,
        patterns: Vec<Vec<u8>>,
        select: ListSelect,
        returns: ListReturn,
    },
    Lsub {
        reference: Vec<u8>,
        pattern: Vec<u8>,
    },
    Status {
        mailbox: Vec<u8>,
        items: Vec<StatusItem>,
    },
    /// One message, or several with MULTIAPPEND.
    Append {
        mailbox: Vec<u8>,
        messages: Vec<AppendMessage>,
    },
    Idle,
    Check,
    Close,
    Unselect,
    Expunge,
    UidExpunge {
        set: SequenceSet,
    },
    Search {
        uid: bool,
        charset: Option<String>,
        /// Always `SearchKey::And` of the keys as listed.
        criteria: SearchKey,
        /// ESEARCH `RETURN (...)`; `Some(vec![])` for `RETURN ()`.
        returns: Option<Vec<SearchReturn>>,
    },
    Fetch {
        uid: bool,
        set: SequenceSet,
        /// Macros (ALL, FAST, FULL) are expanded.
        items: Vec<FetchItem>,
        changed_since: Option<u64>,
        /// QRESYNC `VANISHED`; only accepted with UID FETCH and CHANGEDSINCE.
        vanished: bool,
    },
    Store {
        uid: bool,
        set: SequenceSet,
        unchanged_since: Option<u64>,
        mode: StoreMode,
        silent: bool,
        flags: Vec<Flag>,
    },
    Copy {
        uid: bool,
        set: SequenceSet,
        mailbox: Vec<u8>,
    },
    Move {
        uid: bool,
        set: SequenceSet,
        mailbox: Vec<u8>,
    },
}

impl CommandBody {
    /// The command's name as a client would write it, for logs and replies.
    pub fn name(&self) -> &'static str {
        match self {
            CommandBody::Capability => "CAPABILITY",
            CommandBody::Noop => "NOOP",
            CommandBody::Logout => "LOGOUT",
            CommandBody::StartTls => "STARTTLS",
            CommandBody::Login { .. } => "LOGIN",
            CommandBody::Authenticate { .. } => "AUTHENTICATE",
            CommandBody::Enable { .. } => "ENABLE",
            CommandBody::Id { .. } => "ID",
            CommandBody::Namespace => "NAMESPACE",
            CommandBody::Select { .. } => "SELECT",
            CommandBody::Examine { .. } => "EXAMINE",
            CommandBody::Create { .. } => "CREATE",
            CommandBody::Delete { .. } => "DELETE",
            CommandBody::Rename { .. } => "RENAME",
            CommandBody::Subscribe { .. } => "SUBSCRIBE",
            CommandBody::Unsubscribe { .. } => "UNSUBSCRIBE",
            CommandBody::List { .. } => "LIST",
            CommandBody::Lsub { .. } => "LSUB",
            CommandBody::Status { .. } => "STATUS",
            CommandBody::Append { .. } => "APPEND",
            CommandBody::Idle => "IDLE",
            CommandBody::Check => "CHECK",
            CommandBody::Close => "CLOSE",
            CommandBody::Unselect => "UNSELECT",
            CommandBody::Expunge => "EXPUNGE",
            CommandBody::UidExpunge { .. } => "UID EXPUNGE",
            CommandBody::Search { uid: false, .. } => "SEARCH",
            CommandBody::Search { uid: true, .. } => "UID SEARCH",
            CommandBody::Fetch { uid: false, .. } => "FETCH",
            CommandBody::Fetch { uid: true, .. } => "UID FETCH",
            CommandBody::Store { uid: false, .. } => "STORE",
            CommandBody::Store { uid: true, .. } => "UID STORE",
            CommandBody::Copy { uid: false, .. } => "COPY",
            CommandBody::Copy { uid: true, .. } => "UID COPY",
            CommandBody::Move { uid: false, .. } => "MOVE",
            CommandBody::Move { uid: true, .. } => "UID MOVE",
        }
    }
}

/// A password or other credential: its `Debug` prints `***`, and it has no
/// `Display`, so it cannot end up in a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    /// The secret bytes, for the one place that checks them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `QRESYNC (uidvalidity modseq [known-uids] [(seq-set uid-set)])`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QResync {
    pub uid_validity: u32,
    pub modseq: u64,
    pub known_uids: Option<SequenceSet>,
    /// (known sequence numbers, their UIDs).
    pub seq_match: Option<(SequenceSet, SequenceSet)>,
}

/// LIST-EXTENDED selection options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListSelect {
    pub subscribed: bool,
    pub remote: bool,
    pub recursive_match: bool,
    pub special_use: bool,
}

/// LIST-EXTENDED return options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListReturn {
    pub subscribed: bool,
    pub children: bool,
    pub special_use: bool,
    /// LIST-STATUS.
    pub status: Option<Vec<StatusItem>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusItem {
    Messages,
    Recent,
    UidNext,
    UidValidity,
    Unseen,
    Deleted,
    Size,
    HighestModSeq,
    AppendLimit,
}

impl StatusItem {
    /// The item's name as written in STATUS responses.
    pub fn name(self) -> &'static str {
        match self {
            StatusItem::Messages => "MESSAGES",
            StatusItem::Recent => "RECENT",
            StatusItem::UidNext => "UIDNEXT",
            StatusItem::UidValidity => "UIDVALIDITY",
            StatusItem::Unseen => "UNSEEN",
            StatusItem::Deleted => "DELETED",
            StatusItem::Size => "SIZE",
            StatusItem::HighestModSeq => "HIGHESTMODSEQ",
            StatusItem::AppendLimit => "APPENDLIMIT",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendMessage {
    pub flags: Vec<Flag>,
    pub date: Option<DateTime>,
    pub data: Vec<u8>,
    /// Sent as `~{N}` (BINARY literal8).
    pub binary: bool,
}

/// A message flag. Keywords and extension flags compare and hash
/// case-insensitively but keep the spelling they were sent with.
#[derive(Debug, Clone)]
pub enum Flag {
    Seen,
    Answered,
    Flagged,
    Deleted,
    Draft,
    Recent,
    /// A keyword atom as sent, e.g. `$Forwarded`.
    Keyword(String),
    /// Any other `\Foo`, backslash included.
    Extension(String),
}

impl Flag {
    /// The flag as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Flag::Seen => "\\Seen",
            Flag::Answered => "\\Answered",
            Flag::Flagged => "\\Flagged",
            Flag::Deleted => "\\Deleted",
            Flag::Draft => "\\Draft",
            Flag::Recent => "\\Recent",
            Flag::Keyword(s) | Flag::Extension(s) => s,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Flag::Seen => 0,
            Flag::Answered => 1,
            Flag::Flagged => 2,
            Flag::Deleted => 3,
            Flag::Draft => 4,
            Flag::Recent => 5,
            Flag::Keyword(_) => 6,
            Flag::Extension(_) => 7,
        }
    }
}

impl PartialEq for Flag {
    fn eq(&self, other: &Flag) -> bool {
        match (self, other) {
            (Flag::Keyword(a), Flag::Keyword(b)) | (Flag::Extension(a), Flag::Extension(b)) => {
                a.eq_ignore_ascii_case(b)
            }
            _ => self.rank() == other.rank(),
        }
    }
}

impl Eq for Flag {}

impl Hash for Flag {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
        if let Flag::Keyword(s) | Flag::Extension(s) = self {
            for b in s.bytes() {
                state.write_u8(b.to_ascii_lowercase());
            }
        }
    }
}

/// An instant with the zone it was written in: `"dd-Mon-yyyy hh:mm:ss +zzzz"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    /// Seconds since 1970-01-01T00:00:00Z.
    pub unix: i64,
    /// The written zone, east of UTC.
    pub offset_minutes: i16,
}

/// A calendar day (SEARCH BEFORE/ON/SINCE and the SENT* keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

impl Date {
    /// Days since 1970-01-01 (negative before).
    pub fn days_from_epoch(&self) -> i64 {
        days_from_civil(
            i64::from(self.year),
            u32::from(self.month),
            u32::from(self.day),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    Replace,
    Add,
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchKey {
    All,
    Answered,
    Deleted,
    Draft,
    Flagged,
    New,
    Old,
    Recent,
    Seen,
    Unanswered,
    Undeleted,
    Undraft,
    Unflagged,
    Unseen,
    Keyword(String),
    Unkeyword(String),
    Bcc(Vec<u8>),
    Cc(Vec<u8>),
    From(Vec<u8>),
    Subject(Vec<u8>),
    To(Vec<u8>),
    Body(Vec<u8>),
    Text(Vec<u8>),
    Header(String, Vec<u8>),
    Before(Date),
    On(Date),
    Since(Date),
    SentBefore(Date),
    SentOn(Date),
    SentSince(Date),
    Larger(u32),
    Smaller(u32),
    Uid(SequenceSet),
    SequenceSet(SequenceSet),
    /// CONDSTORE; an entry name and type, if sent, are accepted and ignored.
    ModSeq(u64),
    Not(Box<SearchKey>),
    Or(Box<SearchKey>, Box<SearchKey>),
    And(Vec<SearchKey>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchReturn {
    Min,
    Max,
    All,
    Count,
    Save,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchItem {
    Flags,
    InternalDate,
    Rfc822Size,
    Envelope,
    BodyStructure,
    /// `BODY` without a section: the non-extensible BODYSTRUCTURE.
    Body,
    Uid,
    ModSeq,
    Rfc822,
    Rfc822Header,
    Rfc822Text,
    BodySection {
        peek: bool,
        section: Section,
        /// `<offset.length>`.
        partial: Option<(u32, u32)>,
    },
    Binary {
        peek: bool,
        part: Vec<u32>,
        partial: Option<(u32, u32)>,
    },
    BinarySize {
        part: Vec<u32>,
    },
}

/// `[1.2.HEADER.FIELDS (From To)]`: a part path (empty for the whole message)
/// and what of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    pub part: Vec<u32>,
    pub text: Option<SectionText>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionText {
    Header,
    /// Field names as sent.
    HeaderFields(Vec<String>),
    HeaderFieldsNot(Vec<String>),
    Text,
    /// Only after a part number.
    Mime,
}

/// Why a command did not parse. The reason is a fixed phrase (never peer
/// bytes), safe to send back as `TAG BAD <reason>`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("unknown command")]
    UnknownCommand {
        tag: String,
        /// The command word, if it was an atom (at most 32 bytes of it).
        name: String,
    },
    #[error("{reason}")]
    Syntax {
        tag: Option<String>,
        reason: &'static str,
    },
}

impl ParseError {
    /// The command's tag, when it could be read (else answer `* BAD`).
    pub fn tag(&self) -> Option<&str> {
        match self {
            ParseError::UnknownCommand { tag, .. } => Some(tag),
            ParseError::Syntax { tag, .. } => tag.as_deref(),
        }
    }
}

/// Parses one complete command: tag, name, arguments, literals and the final
/// CRLF (LF alone and a missing terminator are tolerated).
pub fn parse(input: &[u8]) -> Result<Command, ParseError> {
    let mut p = Parser { input, pos: 0 };
    // A tag counts only when a space follows it; else answer `* BAD`.
    let tag = match p.tag().and_then(|tag| p.sp().map(|()| tag)) {
        Ok(tag) => tag,
        Err(reason) => return Err(ParseError::Syntax { tag: None, reason }),
    };
    let syntax = |reason| ParseError::Syntax {
        tag: Some(tag.clone()),
        reason,
    };
    let name = p.word();
    if name.is_empty() {
        return Err(syntax("missing command name"));
    }
    let body = match p.body(name) {
        Ok(Some(body)) => body,
        Ok(None) => {
            let name = String::from_utf8_lossy(&name[..name.len().min(32)]).into_owned();
            return Err(ParseError::UnknownCommand { tag, name });
        }
        Err(reason) => return Err(syntax(reason)),
    };
    p.end().map_err(syntax)?;
    Ok(Command { tag, body })
}

/// The tag at the start of a command line, if it is a valid tag followed by a
/// space. Used by the framer to name a command it refuses.
pub fn tag_prefix(line: &[u8]) -> Option<String> {
    let len = line.iter().position(|&b| !is_tag_char(b))?;
    if len == 0 || line[len] != b' ' {
        return None;
    }
    Some(String::from_utf8_lossy(&line[..len]).into_owned())
}

type PResult<T> = Result<T, &'static str>;

fn is_atom_char(b: u8) -> bool {
    // CHAR minus atom-specials; bytes >= 0x80 accepted (see module doc).
    b > 0x1f
        && b != 0x7f
        && !matches!(
            b,
            b'(' | b')' | b'{' | b' ' | b'%' | b'*' | b'"' | b'\\' | b']'
        )
}

fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

fn is_tag_char(b: u8) -> bool {
    is_astring_char(b) && b != b'+'
}

fn is_list_char(b: u8) -> bool {
    is_astring_char(b) || b == b'%' || b == b'*'
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, b: u8, reason: &'static str) -> PResult<()> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(reason)
        }
    }

    fn sp(&mut self) -> PResult<()> {
        self.expect(b' ', "expected a space")
    }

    fn at_line_end(&self) -> bool {
        matches!(self.peek(), None | Some(b'\r') | Some(b'\n'))
    }

    /// The final CRLF, then nothing.
    fn end(&mut self) -> PResult<()> {
        if self.at_line_end() {
            self.eat(b'\r');
            self.eat(b'\n');
            if self.pos == self.input.len() {
                return Ok(());
            }
        }
        Err("unexpected characters at end of command")
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        &self.input[start..self.pos]
    }

    /// A keyword-like token: letters, digits, `.`, `-`, `_`.
    fn word(&mut self) -> &'a [u8] {
        self.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    }

    fn keyword(&mut self, reason: &'static str) -> PResult<&'a [u8]> {
        let w = self.word();
        if w.is_empty() {
            Err(reason)
        } else {
            Ok(w)
        }
    }

    /// Consumes `kw` (case-insensitive) if it is the next whole word.
    fn eat_keyword(&mut self, kw: &str) -> bool {
        let save = self.pos;
        let w = self.word();
        if w.eq_ignore_ascii_case(kw.as_bytes()) {
            true
        } else {
            self.pos = save;
            false
        }
    }

    fn tag(&mut self) -> PResult<String> {
        let t = self.take_while(is_tag_char);
        if t.is_empty() {
            return Err("missing or invalid tag");
        }
        Ok(String::from_utf8_lossy(t).into_owned())
    }

    fn atom(&mut self) -> PResult<&'a [u8]> {
        let a = self.take_while(is_atom_char);
        if a.is_empty() {
            Err("expected an atom")
        } else {
            Ok(a)
        }
    }

    fn number(&mut self) -> PResult<u32> {
        let digits = self.take_while(|b| b.is_ascii_digit());
        if digits.is_empty() {
            return Err("expected a number");
        }
        let mut v: u32 = 0;
        for &d in digits {
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u32::from(d - b'0')))
                .ok_or("number too large")?;
        }
        Ok(v)
    }

    fn nz_number(&mut self) -> PResult<u32> {
        match self.number()? {
            0 => Err("expected a non-zero number"),
            n => Ok(n),
        }
    }

    /// `mod-sequence-value`: 1*DIGIT, at most 2^63 - 1 (RFC 7162).
    fn modseq(&mut self) -> PResult<u64> {
        let digits = self.take_while(|b| b.is_ascii_digit());
        if digits.is_empty() {
            return Err("expected a mod-sequence value");
        }
        let mut v: u64 = 0;
        for &d in digits {
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
                .filter(|&v| v <= i64::MAX as u64)
                .ok_or("mod-sequence value too large")?;
        }
        Ok(v)
    }

    fn quoted(&mut self) -> PResult<Vec<u8>> {
        self.expect(b'"', "expected a quoted string")?;
        let mut out = Vec::new();
        loop {
            let chunk = self.take_while(|b| !matches!(b, b'"' | b'\\' | b'\r' | b'\n' | 0));
            out.extend_from_slice(chunk);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => {
                            out.push(c);
                            self.pos += 1;
                        }
                        _ => return Err("invalid escape in quoted string"),
                    }
                }
                _ => return Err("unterminated quoted string"),
            }
        }
    }

    /// `{N}` or `{N+}` (and `~{N}` when `binary_ok`), CRLF, then N bytes.
    /// Returns the bytes and whether it was a literal8.
    fn literal(&mut self, binary_ok: bool) -> PResult<(Vec<u8>, bool)> {
        let binary = self.eat(b'~');
        if binary && !binary_ok {
            return Err("literal8 not allowed here");
        }
        self.expect(b'{', "expected a literal")?;
        let len = self.number()? as usize;
        self.eat(b'+');
        self.expect(b'}', "invalid literal")?;
        self.eat(b'\r');
        self.expect(b'\n', "expected CRLF after literal length")?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.input.len())
            .ok_or("literal shorter than announced")?;
        let data = self.input[self.pos..end].to_vec();
        self.pos = end;
        if !binary && data.contains(&0) {
            return Err("NUL in literal");
        }
        Ok((data, binary))
    }

    fn string(&mut self) -> PResult<Vec<u8>> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'{') => Ok(self.literal(false)?.0),
            _ => Err("expected a string"),
        }
    }

    fn astring(&mut self) -> PResult<Vec<u8>> {
        match self.peek() {
            Some(b'"' | b'{') => self.string(),
            _ => {
                let a = self.take_while(is_astring_char);
                if a.is_empty() {
                    Err("expected an astring")
                } else {
                    Ok(a.to_vec())
                }
            }
        }
    }

    fn nstring(&mut self) -> PResult<Option<Vec<u8>>> {
        if self.peek() != Some(b'"') && self.peek() != Some(b'{') {
            let save = self.pos;
            if self.atom()?.eq_ignore_ascii_case(b"NIL") {
                return Ok(None);
            }
            self.pos = save;
            return Err("expected a string or NIL");
        }
        self.string().map(Some)
    }

    fn astring_utf8(&mut self, reason: &'static str) -> PResult<String> {
        String::from_utf8(self.astring()?).map_err(|_| reason)
    }

    fn mailbox(&mut self) -> PResult<Vec<u8>> {
        self.astring()
    }

    /// `list-mailbox`: list-chars (wildcards allowed) or a string.
    fn list_mailbox(&mut self) -> PResult<Vec<u8>> {
        match self.peek() {
            Some(b'"' | b'{') => self.string(),
            _ => {
                let a = self.take_while(is_list_char);
                if a.is_empty() {
                    Err("expected a mailbox pattern")
                } else {
                    Ok(a.to_vec())
                }
            }
        }
    }

    fn sequence_set(&mut self) -> PResult<SequenceSet> {
        let token =
            self.take_while(|b| b.is_ascii_digit() || matches!(b, b':' | b',' | b'*' | b'$'));
        SequenceSet::parse(token).map_err(|_| "invalid sequence set")
    }

    /// `(a b c)` with at least `min` items, each read by `item`.
    fn paren_list<T>(
        &mut self,
        min: usize,
        mut item: impl FnMut(&mut Self) -> PResult<T>,
    ) -> PResult<Vec<T>> {
        self.expect(b'(', "expected '('")?;
        let mut items = Vec::new();
        if !self.eat(b')') {
            loop {
                items.push(item(self)?);
                if self.eat(b')') {
                    break;
                }
                self.sp()?;
            }
        }
        if items.len() < min {
            return Err("empty list");
        }
        Ok(items)
    }

    fn flag(&mut self) -> PResult<Flag> {
        if self.eat(b'\\') {
            let name = self.atom().map_err(|_| "invalid flag")?;
            let flag = match name.to_ascii_uppercase().as_slice() {
                b"SEEN" => Flag::Seen,
                b"ANSWERED" => Flag::Answered,
                b"FLAGGED" => Flag::Flagged,
                b"DELETED" => Flag::Deleted,
                b"DRAFT" => Flag::Draft,
                b"RECENT" => Flag::Recent,
                _ => Flag::Extension(format!("\\{}", String::from_utf8_lossy(name))),
            };
            Ok(flag)
        } else {
            let name = self.atom().map_err(|_| "invalid flag")?;
            Ok(Flag::Keyword(String::from_utf8_lossy(name).into_owned()))
        }
    }

    fn flag_list(&mut self) -> PResult<Vec<Flag>> {
        self.paren_list(0, Self::flag)
    }

    fn digits_exact(&mut self, n: usize, reason: &'static str) -> PResult<u32> {
        let start = self.pos;
        let mut v = 0;
        for _ in 0..n {
            match self.peek() {
                Some(d @ b'0'..=b'9') => {
                    v = v * 10 + u32::from(d - b'0');
                    self.pos += 1;
                }
                _ => {
                    self.pos = start;
                    return Err(reason);
                }
            }
        }
        Ok(v)
    }

    fn month(&mut self) -> PResult<u32> {
        let name = self
            .input
            .get(self.pos..self.pos + 3)
            .ok_or("invalid month")?;
        let index = MONTHS
            .iter()
            .position(|m| m.as_bytes().eq_ignore_ascii_case(name))
            .ok_or("invalid month")?;
        self.pos += 3;
        Ok(index as u32 + 1)
    }

    /// `date-text`: `d-Mon-yyyy` (1 or 2 day digits), optionally quoted.
    fn date(&mut self) -> PResult<Date> {
        let quoted = self.eat(b'"');
        let day_digits = self.take_while(|b| b.is_ascii_digit());
        if day_digits.is_empty() || day_digits.len() > 2 {
            return Err("invalid date");
        }
        let day = day_digits
            .iter()
            .fold(0u32, |v, d| v * 10 + u32::from(d - b'0'));
        self.expect(b'-', "invalid date")?;
        let month = self.month()?;
        self.expect(b'-', "invalid date")?;
        let year = self.digits_exact(4, "invalid date")?;
        if quoted {
            self.expect(b'"', "invalid date")?;
        }
        if day == 0 || day > days_in_month(year, month) {
            return Err("invalid date");
        }
        Ok(Date {
            year: year as u16,
            month: month as u8,
            day: day as u8,
        })
    }

    /// `date-time`: `"dd-Mon-yyyy hh:mm:ss +zzzz"` (day may be space-padded).
    fn date_time(&mut self) -> PResult<DateTime> {
        const BAD: &str = "invalid date-time";
        self.expect(b'"', BAD)?;
        let day = if self.eat(b' ') {
            self.digits_exact(1, BAD)?
        } else {
            self.digits_exact(2, BAD)?
        };
        self.expect(b'-', BAD)?;
        let month = self.month()?;
        self.expect(b'-', BAD)?;
        let year = self.digits_exact(4, BAD)?;
        self.expect(b' ', BAD)?;
        let hour = self.digits_exact(2, BAD)?;
        self.expect(b':', BAD)?;
        let minute = self.digits_exact(2, BAD)?;
        self.expect(b':', BAD)?;
        let second = self.digits_exact(2, BAD)?;
        self.expect(b' ', BAD)?;
        let sign: i64 = match self.peek() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Err(BAD),
        };
        self.pos += 1;
        let zone_hours = self.digits_exact(2, BAD)?;
        let zone_minutes = self.digits_exact(2, BAD)?;
        self.expect(b'"', BAD)?;
        if day == 0
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 60
            || zone_minutes > 59
        {
            return Err(BAD);
        }
        let offset = sign * i64::from(zone_hours * 60 + zone_minutes);
        let local = days_from_civil(i64::from(year), month, day) * 86_400
            + i64::from(hour * 3600 + minute * 60 + second);
        Ok(DateTime {
            unix: local - offset * 60,
            offset_minutes: offset as i16,
        })
    }

    /// The command body after its name; `Ok(None)` for an unknown command.
    fn body(&mut self, name: &[u8]) -> PResult<Option<CommandBody>> {
        let upper = name.to_ascii_uppercase();
        let body = match upper.as_slice() {
            b"CAPABILITY" => CommandBody::Capability,
            b"NOOP" => CommandBody::Noop,
            b"LOGOUT" => CommandBody::Logout,
            b"STARTTLS" => CommandBody::StartTls,
            b"NAMESPACE" => CommandBody::Namespace,
            b"IDLE" => CommandBody::Idle,
            b"CHECK" => CommandBody::Check,
            b"CLOSE" => CommandBody::Close,
            b"UNSELECT" => CommandBody::Unselect,
            b"EXPUNGE" => CommandBody::Expunge,
            b"LOGIN" => {
                self.sp()?;
                let username = self.astring()?;
                self.sp()?;
                let password = Secret::new(self.astring()?);
                CommandBody::Login { username, password }
            }
            b"AUTHENTICATE" => self.authenticate()?,
            b"ENABLE" => {
                let mut capabilities = Vec::new();
                while self.eat(b' ') {
                    let cap = self.atom()?;
                    capabilities.push(String::from_utf8_lossy(cap).to_ascii_uppercase());
                }
                if capabilities.is_empty() {
                    return Err("ENABLE needs at least one capability");
                }
                CommandBody::Enable { capabilities }
            }
            b"ID" => self.id()?,
            b"SELECT" | b"EXAMINE" => {
                self.sp()?;
                let mailbox = self.mailbox()?;
                let (condstore, qresync) = self.select_params()?;
                if upper == b"SELECT" {
                    CommandBody::Select {
                        mailbox,
                        condstore,
                        qresync,
                    }
                } else {
                    CommandBody::Examine {
                        mailbox,
                        condstore,
                        qresync,
                    }
                }
            }
            b"CREATE" => self.create()?,
            b"DELETE" => CommandBody::Delete {
                mailbox: self.sp_mailbox()?,
            },
            b"RENAME" => {
                let from = self.sp_mailbox()?;
                let to = self.sp_mailbox()?;
                CommandBody::Rename { from, to }
            }
            b"SUBSCRIBE" => CommandBody::Subscribe {
                mailbox: self.sp_mailbox()?,
            },
            b"UNSUBSCRIBE" => CommandBody::Unsubscribe {
                mailbox: self.sp_mailbox()?,
            },
            b"LIST" => self.list()?,
            b"LSUB" => {
                let reference = self.sp_mailbox()?;
                self.sp()?;
                let pattern = self.list_mailbox()?;
                CommandBody::Lsub { reference, pattern }
            }
            b"STATUS" => {
                let mailbox = self.sp_mailbox()?;
                self.sp()?;
                let items = self.paren_list(1, Self::status_item)?;
                CommandBody::Status { mailbox, items }
            }
            b"APPEND" => self.append()?,
            b"SEARCH" => self.search(false)?,
            b"FETCH" => self.fetch(false)?,
            b"STORE" => self.store(false)?,
            b"COPY" => self.copy_move(false, false)?,
            b"MOVE" => self.copy_move(false, true)?,
            b"UID" => {
                self.sp()?;
                let sub = self.keyword("expected a command after UID")?;
                match sub.to_ascii_uppercase().as_slice() {
                    b"SEARCH" => self.search(true)?,
                    b"FETCH" => self.fetch(true)?,
                    b"STORE" => self.store(true)?,
                    b"COPY" => self.copy_move(true, false)?,
                    b"MOVE" => self.copy_move(true, true)?,
                    b"EXPUNGE" => {
                        self.sp()?;
                        CommandBody::UidExpunge {
                            set: self.sequence_set()?,
                        }
                    }
                    _ => return Err("unknown UID command"),
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(body))
    }

    fn sp_mailbox(&mut self) -> PResult<Vec<u8>> {
        self.sp()?;
        self.mailbox()
    }

    fn authenticate(&mut self) -> PResult<CommandBody> {
        self.sp()?;
        let mechanism = String::from_utf8_lossy(self.atom()?).to_ascii_uppercase();
        let initial_response = if self.eat(b' ') {
            if self.eat(b'=') {
                Some(Vec::new())
            } else {
                let text = self.take_while(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
                let pad = self.take_while(|b| b == b'=');
                if text.is_empty() || pad.len() > 2 {
                    return Err("invalid base64 initial response");
                }
                let mut raw = text.to_vec();
                raw.extend_from_slice(pad);
                Some(raw)
            }
        } else {
            None
        };
        Ok(CommandBody::Authenticate {
            mechanism,
            initial_response,
        })
    }

    fn id(&mut self) -> PResult<CommandBody> {
        self.sp()?;
        if self.peek() != Some(b'(') {
            if self.atom()?.eq_ignore_ascii_case(b"NIL") {
                return Ok(CommandBody::Id { parameters: None });
            }
            return Err("expected a parameter list or NIL");
        }
        let pairs = self.paren_list(0, |p| {
            let field = String::from_utf8_lossy(&p.string()?).into_owned();
            p.sp()?;
            let value = p
                .nstring()?
                .map(|v| String::from_utf8_lossy(&v).into_owned());
            Ok((field, value))
        })?;
        if pairs.len() > ID_PAIRS_MAX {
            return Err("too many ID parameters");
        }
        Ok(CommandBody::Id {
            parameters: Some(pairs),
        })
    }

    fn select_params(&mut self) -> PResult<(bool, Option<QResync>)> {
        let mut condstore = false;
        let mut qresync = None;
        if !self.eat(b' ') {
            return Ok((condstore, qresync));
        }
        self.paren_list(1, |p| {
            let name = p.keyword("expected a select parameter")?;
            if name.eq_ignore_ascii_case(b"CONDSTORE") && !condstore {
                condstore = true;
            } else if name.eq_ignore_ascii_case(b"QRESYNC") && qresync.is_none() {
                p.sp()?;
                qresync = Some(p.qresync()?);
            } else {
                return Err("unknown or repeated select parameter");
            }
            Ok(())
        })?;
        Ok((condstore, qresync))
    }

    fn qresync(&mut self) -> PResult<QResync> {
        self.expect(b'(', "expected '('")?;
        let uid_validity = self.nz_number()?;
        self.sp()?;
        let modseq = self.modseq()?;
        let mut known_uids = None;
        let mut seq_match = None;
        if self.eat(b' ') {
            if self.peek() != Some(b'(') {
                known_uids = Some(self.sequence_set()?);
                if self.eat(b' ') {
                    seq_match = Some(self.seq_match()?);
                }
            } else {
                seq_match = Some(self.seq_match()?);
            }
        }
        self.expect(b')', "expected ')'")?;
        Ok(QResync {
            uid_validity,
            modseq,
            known_uids,
            seq_match,
        })
    }

    fn seq_match(&mut self) -> PResult<(SequenceSet, SequenceSet)> {
        self.expect(b'(', "expected '('")?;
        let seqs = self.sequence_set()?;
        self.sp()?;
        let uids = self.sequence_set()?;
        self.expect(b')', "expected ')'")?;
        Ok((seqs, uids))
    }

    fn create(&mut self) -> PResult<CommandBody> {
        let mailbox = self.sp_mailbox()?;
        let mut special_use = Vec::new();
        if self.eat(b' ') {
            let mut seen_use = false;
            self.paren_list(1, |p| {
                if seen_use || !p.eat_keyword("USE") {
                    return Err("unknown or repeated CREATE parameter");
                }
                seen_use = true;
                p.sp()?;
                special_use = p.paren_list(0, |p| {
                    p.expect(b'\\', "expected a special-use attribute")?;
                    let name = p.atom()?;
                    Ok(format!("\\{}", String::from_utf8_lossy(name)))
                })?;
                Ok(())
            })?;
        }
        Ok(CommandBody::Create {
            mailbox,
            special_use,
        })
    }

    fn list(&mut self) -> PResult<CommandBody> {
        self.sp()?;
        let mut select = ListSelect::default();
        if self.peek() == Some(b'(') {
            self.paren_list(0, |p| {
                let opt = p.keyword("expected a selection option")?;
                match opt.to_ascii_uppercase().as_slice() {
                    b"SUBSCRIBED" => select.subscribed = true,
                    b"REMOTE" => select.remote = true,
                    b"RECURSIVEMATCH" => select.recursive_match = true,
                    b"SPECIAL-USE" => select.special_use = true,
                    _ => return Err("unknown LIST selection option"),
                }
                Ok(())
            })?;
            if select.recursive_match && !select.subscribed && !select.special_use {
                return Err("RECURSIVEMATCH needs another selection option");
            }
            self.sp()?;
        }
        let reference = self.mailbox()?;
        self.sp()?;
        let patterns = if self.peek() == Some(b'(') {
            self.paren_list(1, Self::list_mailbox)?
        } else {
            vec![self.list_mailbox()?]
        };
        let mut returns = ListReturn::default();
        if self.eat(b' ') {
            if !self.eat_keyword("RETURN") {
                return Err("expected RETURN");
            }
            self.sp()?;
            self.paren_list(0, |p| {
                let opt = p.keyword("expected a return option")?;
                match opt.to_ascii_uppercase().as_slice() {
                    b"SUBSCRIBED" => returns.subscribed = true,
                    b"CHILDREN" => returns.children = true,
                    b"SPECIAL-USE" => returns.special_use = true,
                    b"STATUS" if returns.status.is_none() => {
                        p.sp()?;
                        returns.status = Some(p.paren_list(1, Self::status_item)?);
                    }
                    _ => return Err("unknown LIST return option"),
                }
                Ok(())
            })?;
        }
        Ok(CommandBody::List {
            reference,
            patterns,
            select,
            returns,
        })
    }

    fn status_item(&mut self) -> PResult<StatusItem> {
        let name = self.keyword("expected a status item")?;
        let item = match name.to_ascii_uppercase().as_slice() {
            b"MESSAGES" => StatusItem::Messages,
            b"RECENT" => StatusItem::Recent,
            b"UIDNEXT" => StatusItem::UidNext,
            b"UIDVALIDITY" => StatusItem::UidValidity,
            b"UNSEEN" => StatusItem::Unseen,
            b"DELETED" => StatusItem::Deleted,
            b"SIZE" => StatusItem::Size,
            b"HIGHESTMODSEQ" => StatusItem::HighestModSeq,
            b"APPENDLIMIT" => StatusItem::AppendLimit,
            _ => return Err("unknown status item"),
        };
        Ok(item)
    }

    fn append(&mut self) -> PResult<CommandBody> {
        let mailbox = self.sp_mailbox()?;
        let mut messages = Vec::new();
        while self.eat(b' ') {
            let mut flags = Vec::new();
            let mut date = None;
            if self.peek() == Some(b'(') {
                flags = self.flag_list()?;
                self.sp()?;
            }
            if self.peek() == Some(b'"') {
                date = Some(self.date_time()?);
                self.sp()?;
            }
            let (data, binary) = self.literal(true)?;
            messages.push(AppendMessage {
                flags,
                date,
                data,
                binary,
            });
        }
        if messages.is_empty() {
            return Err("APPEND needs a message literal");
        }
        Ok(CommandBody::Append { mailbox, messages })
    }

    fn search(&mut self, uid: bool) -> PResult<CommandBody> {
        self.sp()?;
        let mut returns = None;
        if self.eat_keyword("RETURN") {
            self.sp()?;
            returns = Some(self.paren_list(0, |p| {
                let opt = p.keyword("expected a search return option")?;
                let r = match opt.to_ascii_uppercase().as_slice() {
                    b"MIN" => SearchReturn::Min,
                    b"MAX" => SearchReturn::Max,
                    b"ALL" => SearchReturn::All,
                    b"COUNT" => SearchReturn::Count,
                    b"SAVE" => SearchReturn::Save,
                    _ => return Err("unknown search return option"),
                };
                Ok(r)
            })?);
            self.sp()?;
        }
        let mut charset = None;
        if self.eat_keyword("CHARSET") {
            self.sp()?;
            charset = Some(self.astring_utf8("invalid charset")?);
            self.sp()?;
        }
        let mut keys = vec![self.search_key(0)?];
        while self.eat(b' ') {
            keys.push(self.search_key(0)?);
        }
        Ok(CommandBody::Search {
            uid,
            charset,
            criteria: SearchKey::And(keys),
            returns,
        })
    }

    fn search_key(&mut self, depth: usize) -> PResult<SearchKey> {
        if depth >= SEARCH_DEPTH_MAX {
            return Err("search keys nested too deeply");
        }
        match self.peek() {
            Some(b'(') => {
                let keys = self.paren_list(1, |p| p.search_key(depth + 1))?;
                return Ok(SearchKey::And(keys));
            }
            Some(b'0'..=b'9' | b'*' | b'$') => {
                return Ok(SearchKey::SequenceSet(self.sequence_set()?));
            }
            _ => {}
        }
        let name = self.keyword("expected a search key")?;
        let key = match name.to_ascii_uppercase().as_slice() {
            b"ALL" => SearchKey::All,
            b"ANSWERED" => SearchKey::Answered,
            b"DELETED" => SearchKey::Deleted,
            b"DRAFT" => SearchKey::Draft,
            b"FLAGGED" => SearchKey::Flagged,
            b"NEW" => SearchKey::New,
            b"OLD" => SearchKey::Old,
            b"RECENT" => SearchKey::Recent,
            b"SEEN" => SearchKey::Seen,
            b"UNANSWERED" => SearchKey::Unanswered,
            b"UNDELETED" => SearchKey::Undeleted,
            b"UNDRAFT" => SearchKey::Undraft,
            b"UNFLAGGED" => SearchKey::Unflagged,
            b"UNSEEN" => SearchKey::Unseen,
            b"KEYWORD" => SearchKey::Keyword(self.sp_keyword()?),
            b"UNKEYWORD" => SearchKey::Unkeyword(self.sp_keyword()?),
            b"BCC" => SearchKey::Bcc(self.sp_astring()?),
            b"CC" => SearchKey::Cc(self.sp_astring()?),
            b"FROM" => SearchKey::From(self.sp_astring()?),
            b"SUBJECT" => SearchKey::Subject(self.sp_astring()?),
            b"TO" => SearchKey::To(self.sp_astring()?),
            b"BODY" => SearchKey::Body(self.sp_astring()?),
            b"TEXT" => SearchKey::Text(self.sp_astring()?),
            b"HEADER" => {
                self.sp()?;
                let field = self.astring_utf8("invalid header field name")?;
                SearchKey::Header(field, self.sp_astring()?)
            }
            b"BEFORE" => SearchKey::Before(self.sp_date()?),
            b"ON" => SearchKey::On(self.sp_date()?),
            b"SINCE" => SearchKey::Since(self.sp_date()?),
            b"SENTBEFORE" => SearchKey::SentBefore(self.sp_date()?),
            b"SENTON" => SearchKey::SentOn(self.sp_date()?),
            b"SENTSINCE" => SearchKey::SentSince(self.sp_date()?),
            b"LARGER" => {
                self.sp()?;
                SearchKey::Larger(self.number()?)
            }
            b"SMALLER" => {
                self.sp()?;
                SearchKey::Smaller(self.number()?)
            }
            b"UID" => {
                self.sp()?;
                SearchKey::Uid(self.sequence_set()?)
            }
            b"MODSEQ" => {
                self.sp()?;
                if self.peek() == Some(b'"') {
                    // entry-name SP entry-type-req: accepted, not used.
                    self.quoted()?;
                    self.sp()?;
                    let kind = self.keyword("expected an entry type")?;
                    if !(kind.eq_ignore_ascii_case(b"priv")
                        || kind.eq_ignore_ascii_case(b"shared")
                        || kind.eq_ignore_ascii_case(b"all"))
                    {
                        return Err("invalid MODSEQ entry type");
                    }
                    self.sp()?;
                }
                SearchKey::ModSeq(self.modseq()?)
            }
            b"NOT" => {
                self.sp()?;
                SearchKey::Not(Box::new(self.search_key(depth + 1)?))
            }
            b"OR" => {
                self.sp()?;
                let a = self.search_key(depth + 1)?;
                self.sp()?;
                let b = self.search_key(depth + 1)?;
                SearchKey::Or(Box::new(a), Box::new(b))
            }
            _ => return Err("unknown search key"),
        };
        Ok(key)
    }

    fn sp_astring(&mut self) -> PResult<Vec<u8>> {
        self.sp()?;
        self.astring()
    }

    fn sp_date(&mut self) -> PResult<Date> {
        self.sp()?;
        self.date()
    }

    fn sp_keyword(&mut self) -> PResult<String> {
        self.sp()?;
        Ok(String::from_utf8_lossy(self.atom()?).into_owned())
    }

    fn fetch(&mut self, uid: bool) -> PResult<CommandBody> {
        self.sp()?;
        let set = self.sequence_set()?;
        self.sp()?;
        let items = if self.peek() == Some(b'(') {
            let lists = self.paren_list(1, |p| p.fetch_att())?;
            lists.into_iter().flatten().collect()
        } else {
            let save = self.pos;
            let w = self.word();
            if w.eq_ignore_ascii_case(b"ALL") {
                vec![
                    FetchItem::Flags,
                    FetchItem::InternalDate,
                    FetchItem::Rfc822Size,
                    FetchItem::Envelope,
                ]
            } else if w.eq_ignore_ascii_case(b"FAST") {
                vec![
                    FetchItem::Flags,
                    FetchItem::InternalDate,
                    FetchItem::Rfc822Size,
                ]
            } else if w.eq_ignore_ascii_case(b"FULL") {
                vec![
                    FetchItem::Flags,
                    FetchItem::InternalDate,
                    FetchItem::Rfc822Size,
                    FetchItem::Envelope,
                    FetchItem::Body,
                ]
            } else {
                self.pos = save;
                self.fetch_att()?
            }
        };
        let mut changed_since = None;
        let mut vanished = false;
        if self.eat(b' ') {
            self.paren_list(1, |p| {
                let name = p.keyword("expected a fetch modifier")?;
                if name.eq_ignore_ascii_case(b"CHANGEDSINCE") && changed_since.is_none() {
                    p.sp()?;
                    changed_since = Some(p.modseq()?);
                } else if name.eq_ignore_ascii_case(b"VANISHED") && !vanished {
                    vanished = true;
                } else {
                    return Err("unknown or repeated fetch modifier");
                }
                Ok(())
            })?;
        }
        if vanished && (!uid || changed_since.is_none()) {
            return Err("VANISHED needs UID FETCH and CHANGEDSINCE");
        }
        Ok(CommandBody::Fetch {
            uid,
            set,
            items,
            changed_since,
            vanished,
        })
    }

    /// One fetch attribute (a one-item vector, to share the list code).
    fn fetch_att(&mut self) -> PResult<Vec<FetchItem>> {
        let name = self.keyword("expected a fetch attribute")?;
        let item = match name.to_ascii_uppercase().as_slice() {
            b"FLAGS" => FetchItem::Flags,
            b"INTERNALDATE" => FetchItem::InternalDate,
            b"RFC822.SIZE" => FetchItem::Rfc822Size,
            b"ENVELOPE" => FetchItem::Envelope,
            b"BODYSTRUCTURE" => FetchItem::BodyStructure,
            b"UID" => FetchItem::Uid,
            b"MODSEQ" => FetchItem::ModSeq,
            b"RFC822" => FetchItem::Rfc822,
            b"RFC822.HEADER" => FetchItem::Rfc822Header,
            b"RFC822.TEXT" => FetchItem::Rfc822Text,
            b"BODY" if self.peek() != Some(b'[') => FetchItem::Body,
            b"BODY" | b"BODY.PEEK" => {
                let peek = name.len() > 4;
                let section = self.section()?;
                let partial = self.partial()?;
                FetchItem::BodySection {
                    peek,
                    section,
                    partial,
                }
            }
            b"BINARY" | b"BINARY.PEEK" => {
                let peek = name.len() > 6;
                let part = self.section_binary()?;
                let partial = self.partial()?;
                FetchItem::Binary {
                    peek,
                    part,
                    partial,
                }
            }
            b"BINARY.SIZE" => FetchItem::BinarySize {
                part: self.section_binary()?,
            },
            _ => return Err("unknown fetch attribute"),
        };
        Ok(vec![item])
    }

    /// `1.2.3` (stops before a `.` not followed by a digit).
    fn section_part(&mut self) -> PResult<Vec<u32>> {
        let mut part = Vec::new();
        if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
            return Ok(part);
        }
        loop {
            part.push(self.nz_number()?);
            if part.len() > 64 {
                return Err("section part nested too deeply");
            }
            let next_is_digit = self.input.get(self.pos + 1).is_some_and(u8::is_ascii_digit);
            if self.peek() == Some(b'.') && next_is_digit {
                self.pos += 1;
            } else {
                return Ok(part);
            }
        }
    }

    fn section(&mut self) -> PResult<Section> {
        self.expect(b'[', "expected '['")?;
        let part = self.section_part()?;
        let text = if self.peek() == Some(b']') {
            None
        } else {
            if !part.is_empty() {
                self.expect(b'.', "invalid section")?;
            }
            let name = self.keyword("invalid section")?;
            let text = match name.to_ascii_uppercase().as_slice() {
                b"HEADER" => SectionText::Header,
                b"TEXT" => SectionText::Text,
                b"MIME" if !part.is_empty() => SectionText::Mime,
                b"HEADER.FIELDS" => SectionText::HeaderFields(self.header_list()?),
                b"HEADER.FIELDS.NOT" => SectionText::HeaderFieldsNot(self.header_list()?),
                _ => return Err("invalid section"),
            };
            Some(text)
        };
        self.expect(b']', "expected ']'")?;
        Ok(Section { part, text })
    }

    fn header_list(&mut self) -> PResult<Vec<String>> {
        self.sp()?;
        self.paren_list(1, |p| p.astring_utf8("invalid header field name"))
    }

    fn section_binary(&mut self) -> PResult<Vec<u32>> {
        self.expect(b'[', "expected '['")?;
        let part = self.section_part()?;
        self.expect(b']', "expected ']'")?;
        Ok(part)
    }

    fn partial(&mut self) -> PResult<Option<(u32, u32)>> {
        if !self.eat(b'<') {
            return Ok(None);
        }
        let offset = self.number()?;
        self.expect(b'.', "invalid partial")?;
        let length = self.nz_number()?;
        self.expect(b'>', "invalid partial")?;
        Ok(Some((offset, length)))
    }

    fn store(&mut self, uid: bool) -> PResult<CommandBody> {
        self.sp()?;
        let set = self.sequence_set()?;
        self.sp()?;
        let mut unchanged_since = None;
        if self.peek() == Some(b'(') {
            self.pos += 1;
            if !self.eat_keyword("UNCHANGEDSINCE") {
                return Err("unknown STORE modifier");
            }
            self.sp()?;
            unchanged_since = Some(self.modseq()?);
            self.expect(b')', "expected ')'")?;
            self.sp()?;
        }
        let mode = if self.eat(b'+') {
            StoreMode::Add
        } else if self.eat(b'-') {
            StoreMode::Remove
        } else {
            StoreMode::Replace
        };
        let silent = match self.word().to_ascii_uppercase().as_slice() {
            b"FLAGS" => false,
            b"FLAGS.SILENT" => true,
            _ => return Err("expected FLAGS or FLAGS.SILENT"),
        };
        self.sp()?;
        let flags = if self.peek() == Some(b'(') {
            self.flag_list()?
        } else {
            let mut flags = vec![self.flag()?];
            while self.eat(b' ') {
                flags.push(self.flag()?);
            }
            flags
        };
        Ok(CommandBody::Store {
            uid,
            set,
            unchanged_since,
            mode,
            silent,
            flags,
        })
    }

    fn copy_move(&mut self, uid: bool, is_move: bool) -> PResult<CommandBody> {
        self.sp()?;
        let set = self.sequence_set()?;
        let mailbox = self.sp_mailbox()?;
        Ok(if is_move {
            CommandBody::Move { uid, set, mailbox }
        } else {
            CommandBody::Copy { uid, set, mailbox }
        })
    }
}

/// Days in `month` of `year` (0 for a month that does not exist), from crate::time's calendar.
fn days_in_month(year: u32, month: u32) -> u32 {
    if !(1..=12).contains(&month) {
        return 0;
    }
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let days = days_from_civil(i64::from(next_year), next_month, 1)
        - days_from_civil(i64::from(year), month, 1);
    days as u32
}

// The calendar and month names are crate::time's (one implementation in the crate).
use crate::time::{days_from_civil, MONTHS};

#[cfg(test)]
mod tests {
    use super::super::codec::{Frame, Framer, FramerLimits};
    use super::super::sequence::{SeqNo, SeqRange};
    use super::*;
    use crate::time::civil_from_days;

    const APPEND_MESSAGE: &str = "Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\n\
        From: Fred Foobar <foobar@Blurdybloop.example>\r\n\
        Subject: afternoon meeting\r\n\
        To: mooch@owatagu.siam.edu.example\r\n\
        Message-Id: <B27397-0100000@Blurdybloop.example>\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\
        \r\n\
        Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n";

    /// Client commands from the examples of RFC 9051, RFC 3501 and the
    /// extensions ringmail implements, CRLF-terminated.
    fn rfc_examples() -> Vec<Vec<u8>> {
        let lines: &[&str] = &[
            "a441 CAPABILITY",
            "abcd CAPABILITY",
            "a002 NOOP",
            "a047 NOOP",
            "A023 LOGOUT",
            "a002 STARTTLS",
            "a004 LOGIN joe password",
            "A001 AUTHENTICATE GSSAPI",
            "A001 AUTHENTICATE PLAIN",
            "a001 LOGIN SMITH SESAME",
            "A001 LOGIN {11}\r\nFRED FOOBAR {7}\r\nfat man",
            "A001 LOGIN {11+}\r\nFRED FOOBAR {7+}\r\nfat man",
            "t1 ENABLE IMAP4rev2",
            "t2 ENABLE CONDSTORE X-GOOD-IDEA",
            "a1 ENABLE CONDSTORE",
            "A142 SELECT INBOX",
            "A932 EXAMINE blurdybloop",
            "A003 CREATE owatagusiam/",
            "A004 CREATE owatagusiam/blurdybloop",
            "A682 LIST \"\" *",
            "A683 DELETE blurdybloop",
            "A685 DELETE foo/bar",
            "A86 LIST \"\" %",
            "A683 RENAME blurdybloop sarasoop",
            "A684 RENAME foo zowie",
            "Z433 RENAME INBOX old-mail",
            "A002 SUBSCRIBE #news.comp.mail.mime",
            "A002 UNSUBSCRIBE #news.comp.mail.mime",
            "A101 LIST \"\" \"\"",
            "A102 LIST #news.comp.mail.misc \"\"",
            "A103 LIST /usr/staff/jones \"\"",
            "A202 LIST ~/Mail/ %",
            "A02 LIST (SUBSCRIBED) \"\" \"*\"",
            "A03 LIST () \"\" \"%\" RETURN (CHILDREN)",
            "A04 LIST (REMOTE) \"\" \"%\" RETURN (CHILDREN)",
            "A05 LIST (REMOTE SUBSCRIBED) \"\" \"*\"",
            "A06 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"%\" RETURN (CHILDREN)",
            "BBB LIST \"\" (\"INBOX\" \"Drafts\" \"Sent/%\")",
            "A01 LIST \"\" % RETURN (STATUS (MESSAGES UNSEEN))",
            "A02 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" % RETURN (STATUS (MESSAGES))",
            "t1 LIST \"\" \"%\" RETURN (SPECIAL-USE)",
            "t3 LIST (SPECIAL-USE) \"\" \"*\"",
            "t1 CREATE \"Important Messages\" (USE (\\Important))",
            "t2 CREATE MySpecial (USE (\\Drafts \\Sent))",
            "A001 NAMESPACE",
            "A042 STATUS blurdybloop (UIDNEXT MESSAGES)",
            "A042 STATUS blurdybloop (MESSAGES HIGHESTMODSEQ SIZE DELETED APPENDLIMIT)",
            "A001 IDLE",
            "A341 CLOSE",
            "A342 UNSELECT",
            "A202 EXPUNGE",
            "A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"",
            "A283 SEARCH RETURN () FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"",
            "A284 SEARCH TEXT \"string not in mailbox\"",
            "A285 SEARCH CHARSET UTF-8 TEXT {12}\r\n\u{43e}\u{442}\u{43f}\u{443}\u{441}\u{43a}",
            "A286 SEARCH CHARSET UTF-8 TEXT {12+}\r\n\u{43e}\u{442}\u{43f}\u{443}\u{441}\u{43a}",
            "A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"",
            "A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])",
            "A003 STORE 2:4 +FLAGS (\\Deleted)",
            "A003 COPY 2:4 MEETING",
            "a UID MOVE 42:69 foo",
            "A999 UID FETCH 4827313:4828442 FLAGS",
            "A003 UID EXPUNGE 3000:3002",
            "a001 login mrc secret",
            "a002 select inbox",
            "a003 fetch 12 full",
            "a004 fetch 12 body[header]",
            "a005 store 12 +flags \\deleted",
            "a006 logout",
            "A003 LSUB \"news.\" \"comp.%\"",
            "A002 LSUB \"#news.\" \"comp.mail.*\"",
            "A223 COPY 3:200 blurdybloop",
            "a023 ID (\"name\" \"sodr\" \"version\" \"19.34\" \"vendor\" \"Pink Floyd Music Limited\")",
            "a042 ID NIL",
            "a103 SELECT INBOX (CONDSTORE)",
            "A142 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))",
            "B01 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500,9000,9990:9999 15000,22500,27000,29970,29973,29976,29979,29982,29985,29988,29991,29994,29997)))",
            "s100 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)",
            "s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)",
            "a103 UID STORE 6,4,8 (UNCHANGEDSINCE 12121230045) +FLAGS.SILENT (\\Deleted)",
            "c101 STORE 1 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT ($Processed)",
            "a SEARCH MODSEQ \"/flags/\\\\draft\" all 620162338",
            "t SEARCH OR NOT MODSEQ 720162338 LARGER 50000",
            "A282 SEARCH RETURN (SAVE) SINCE 1-Feb-1994 OR FROM \"Smith\" FROM \"Jones\"",
            "A283 FETCH $ (UID INTERNALDATE FLAGS RFC822.HEADER)",
            "A284 UID COPY $ other",
            "A300 UID SEARCH RETURN (SAVE MIN) UID $ SMALLER 4096",
            "A285 UID SEARCH RETURN (MIN MAX) 1:5000",
            "a01 AUTHENTICATE PLAIN dGVzdAB0ZXN0AHRlc3Q=",
            "a01 AUTHENTICATE EXTERNAL =",
            "a01 FETCH 1 BINARY.PEEK[1]",
            "a02 FETCH 1 BINARY.SIZE[1]",
            "a03 FETCH 1 BINARY[1.1]<0.1024>",
            "A001 FETCH 1 BODY[1.2.HEADER.FIELDS (From To)]<0.100>",
            "A003 APPEND Drafts (\\Seen) ~{5}\r\nhe\0lo",
            "A003 APPEND saved-messages (\\Seen) {5}\r\nhello (\\Seen) \" 1-Aug-2002 22:00:00 -0700\" {5}\r\nworld",
        ];
        let mut out: Vec<Vec<u8>> = lines
            .iter()
            .map(|l| format!("{l}\r\n").into_bytes())
            .collect();
        out.push(
            format!(
                "A003 APPEND saved-messages (\\Seen) {{{}}}\r\n{APPEND_MESSAGE}\r\n",
                APPEND_MESSAGE.len()
            )
            .into_bytes(),
        );
        out
    }

    fn body(input: &str) -> CommandBody {
        match parse(input.as_bytes()) {
            Ok(cmd) => cmd.body,
            Err(e) => panic!("{input:?}: {e:?}"),
        }
    }

    fn reason(input: &[u8]) -> &'static str {
        match parse(input) {
            Err(ParseError::Syntax { reason, .. }) => reason,
            other => panic!("{}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    fn seq(s: &str) -> SequenceSet {
        SequenceSet::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn every_rfc_example_parses() {
        for example in rfc_examples() {
            if let Err(e) = parse(&example) {
                panic!("{}: {e:?}", String::from_utf8_lossy(&example));
            }
        }
    }

    #[test]
    fn rfc_examples_frame_then_parse_at_every_split() {
        // The framer and the parser agree on every example, however it arrives.
        let mut stream = Vec::new();
        for example in rfc_examples() {
            stream.extend_from_slice(&example);
        }
        let whole = frame_all(&[&stream]);
        assert_eq!(whole.len(), rfc_examples().len());
        for i in (0..stream.len()).step_by(7) {
            assert_eq!(frame_all(&[&stream[..i], &stream[i..]]), whole, "split {i}");
        }
    }

    fn frame_all(chunks: &[&[u8]]) -> Vec<Command> {
        let mut framer = Framer::new(FramerLimits::default());
        let mut pending = Vec::new();
        let mut out = Vec::new();
        for chunk in chunks {
            pending.extend_from_slice(chunk);
            loop {
                let (n, frame) = framer.push(&pending);
                pending.drain(..n);
                match frame {
                    Some(Frame::Command(bytes)) => out.push(parse(&bytes).unwrap()),
                    Some(Frame::NeedContinuation) => {}
                    Some(Frame::Error { tag, kind }) => panic!("{tag:?} {kind:?}"),
                    None => break,
                }
            }
        }
        out
    }

    #[test]
    fn tag_and_case_insensitive_names() {
        let cmd = parse(b"A0001 noop\r\n").unwrap();
        assert_eq!(cmd.tag, "A0001");
        assert_eq!(cmd.body, CommandBody::Noop);
        assert_eq!(body("x uId fEtCh 1 flags\n"), body("x UID FETCH 1 FLAGS"));
        assert_eq!(parse(b"a]b CHECK").unwrap().tag, "a]b");
    }

    #[test]
    fn login_with_literals_and_quoted_escapes() {
        let CommandBody::Login { username, password } =
            body("A001 LOGIN {11}\r\nFRED FOOBAR {7}\r\nfat man\r\n")
        else {
            panic!()
        };
        assert_eq!(username, b"FRED FOOBAR");
        assert_eq!(password.expose(), b"fat man");
        let CommandBody::Login { username, password } = body("a LOGIN \"a\\\"b\\\\c\" \"p w\"\r\n")
        else {
            panic!()
        };
        assert_eq!(username, b"a\"b\\c");
        assert_eq!(password.expose(), b"p w");
        let CommandBody::Login { username, .. } = body("a LOGIN {0}\r\n x\r\n") else {
            panic!()
        };
        assert!(username.is_empty());
        assert_eq!(
            reason(b"a LOGIN \"a\\b\" x\r\n"),
            "invalid escape in quoted string"
        );
        assert_eq!(reason(b"a LOGIN \"ab x\r\n"), "unterminated quoted string");
        assert_eq!(
            reason(b"a LOGIN {5}\r\nab\r\n"),
            "literal shorter than announced"
        );
        assert_eq!(reason(b"a LOGIN {2}\r\na\0 x\r\n"), "NUL in literal");
        // `~` is an astring character, so `~{1}` is not a literal8 here.
        assert_eq!(reason(b"a LOGIN ~{1}\r\na x\r\n"), "expected a space");
    }

    #[test]
    fn secret_debug_is_masked() {
        let cmd = parse(b"a001 LOGIN SMITH SESAME\r\n").unwrap();
        let debug = format!("{cmd:?}");
        assert!(!debug.contains("SESAME"), "{debug}");
        // Nor as the byte list a Vec<u8> would print.
        let bytes = format!("{:?}", b"SESAME".to_vec());
        assert!(!debug.contains(&bytes[1..bytes.len() - 1]), "{debug}");
        assert!(debug.contains("***"), "{debug}");
        assert_eq!(format!("{:?}", Secret::new(b"hunter2".to_vec())), "***");
    }

    #[test]
    fn authenticate_initial_response() {
        assert_eq!(
            body("a01 authenticate plain dGVzdAB0ZXN0AHRlc3Q=\r\n"),
            CommandBody::Authenticate {
                mechanism: "PLAIN".into(),
                initial_response: Some(b"dGVzdAB0ZXN0AHRlc3Q=".to_vec()),
            }
        );
        assert_eq!(
            body("a01 AUTHENTICATE EXTERNAL =\r\n"),
            CommandBody::Authenticate {
                mechanism: "EXTERNAL".into(),
                initial_response: Some(Vec::new()),
            }
        );
        assert_eq!(
            body("a01 AUTHENTICATE PLAIN\r\n"),
            CommandBody::Authenticate {
                mechanism: "PLAIN".into(),
                initial_response: None,
            }
        );
        assert_eq!(
            reason(b"a01 AUTHENTICATE PLAIN d*w=\r\n"),
            "unexpected characters at end of command"
        );
    }

    #[test]
    fn enable_and_id() {
        assert_eq!(
            body("t2 ENABLE condstore X-GOOD-IDEA UTF8=ACCEPT"),
            CommandBody::Enable {
                capabilities: vec![
                    "CONDSTORE".into(),
                    "X-GOOD-IDEA".into(),
                    "UTF8=ACCEPT".into()
                ]
            }
        );
        assert_eq!(
            reason(b"t ENABLE\r\n"),
            "ENABLE needs at least one capability"
        );
        assert_eq!(
            body("a023 ID (\"name\" \"sodr\" \"os\" NIL)"),
            CommandBody::Id {
                parameters: Some(vec![
                    ("name".into(), Some("sodr".into())),
                    ("os".into(), None)
                ])
            }
        );
        assert_eq!(body("a ID nil"), CommandBody::Id { parameters: None });
        assert_eq!(
            body("a ID ()"),
            CommandBody::Id {
                parameters: Some(vec![])
            }
        );
        let many: String = (0..31).map(|i| format!(" \"k{i}\" \"v\"")).collect();
        assert_eq!(
            reason(format!("a ID ({})", &many[1..]).as_bytes()),
            "too many ID parameters"
        );
    }

    #[test]
    fn select_with_condstore_and_qresync() {
        assert_eq!(
            body("B01 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500 15000,22500)))"),
            CommandBody::Select {
                mailbox: b"INBOX".to_vec(),
                condstore: false,
                qresync: Some(QResync {
                    uid_validity: 67890007,
                    modseq: 90060115194045000,
                    known_uids: Some(seq("1:29997")),
                    seq_match: Some((seq("5000,7500"), seq("15000,22500"))),
                }),
            }
        );
        assert_eq!(
            body("a EXAMINE \"Sent Items\" (CONDSTORE QRESYNC (1 0))"),
            CommandBody::Examine {
                mailbox: b"Sent Items".to_vec(),
                condstore: true,
                qresync: Some(QResync {
                    uid_validity: 1,
                    modseq: 0,
                    known_uids: None,
                    seq_match: None,
                }),
            }
        );
        assert_eq!(
            reason(b"a SELECT x (QRESYNC (0 1))"),
            "expected a non-zero number"
        );
        assert_eq!(
            reason(b"a SELECT x (FOO)"),
            "unknown or repeated select parameter"
        );
        assert_eq!(
            reason(b"a SELECT x (CONDSTORE CONDSTORE)"),
            "unknown or repeated select parameter"
        );
        assert_eq!(
            reason(b"a SELECT x (QRESYNC (1 9223372036854775808))"),
            "mod-sequence value too large"
        );
    }

    #[test]
    fn utf8_and_utf7_mailbox_names_are_raw_bytes() {
        let CommandBody::Select { mailbox, .. } = body("a SELECT \"Entw\u{fc}rfe\"") else {
            panic!()
        };
        assert_eq!(mailbox, "Entw\u{fc}rfe".as_bytes());
        let CommandBody::Create { mailbox, .. } = body("a CREATE {9}\r\nEntw\u{fc}rfe\r\n") else {
            panic!()
        };
        assert_eq!(mailbox, "Entw\u{fc}rfe".as_bytes());
        let CommandBody::Rename { from, to } =
            body("a RENAME Entw&APw-rfe ~peter/mail/&U,BTFw-/&ZeVnLIqe-")
        else {
            panic!()
        };
        assert_eq!(from, b"Entw&APw-rfe");
        assert_eq!(to, b"~peter/mail/&U,BTFw-/&ZeVnLIqe-");
    }

    #[test]
    fn create_special_use() {
        assert_eq!(
            body("t2 CREATE MySpecial (USE (\\Drafts \\Sent))"),
            CommandBody::Create {
                mailbox: b"MySpecial".to_vec(),
                special_use: vec!["\\Drafts".into(), "\\Sent".into()],
            }
        );
        assert_eq!(
            reason(b"t CREATE x (FOO (\\Sent))"),
            "unknown or repeated CREATE parameter"
        );
        assert_eq!(
            reason(b"t CREATE x (USE (Sent))"),
            "expected a special-use attribute"
        );
    }

    #[test]
    fn list_extended() {
        assert_eq!(
            body("A02 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" % RETURN (CHILDREN STATUS (MESSAGES UNSEEN))"),
            CommandBody::List {
                reference: Vec::new(),
                patterns: vec![b"%".to_vec()],
                select: ListSelect {
                    subscribed: true,
                    recursive_match: true,
                    ..ListSelect::default()
                },
                returns: ListReturn {
                    children: true,
                    status: Some(vec![StatusItem::Messages, StatusItem::Unseen]),
                    ..ListReturn::default()
                },
            }
        );
        let CommandBody::List { patterns, .. } =
            body("BBB LIST \"\" (\"INBOX\" \"Drafts\" Sent/%)")
        else {
            panic!()
        };
        assert_eq!(
            patterns,
            vec![b"INBOX".to_vec(), b"Drafts".to_vec(), b"Sent/%".to_vec()]
        );
        let CommandBody::List {
            reference,
            patterns,
            ..
        } = body("A202 LIST ~/Mail/ *]")
        else {
            panic!()
        };
        assert_eq!(
            (reference, patterns),
            (b"~/Mail/".to_vec(), vec![b"*]".to_vec()])
        );
        assert_eq!(
            reason(b"a LIST (RECURSIVEMATCH) \"\" *"),
            "RECURSIVEMATCH needs another selection option"
        );
        assert_eq!(
            reason(b"a LIST (REMOTE RECURSIVEMATCH) \"\" *"),
            "RECURSIVEMATCH needs another selection option"
        );
        assert_eq!(
            reason(b"a LIST (FOO) \"\" *"),
            "unknown LIST selection option"
        );
        assert_eq!(
            reason(b"a LIST \"\" * RETURN (FOO)"),
            "unknown LIST return option"
        );
        assert_eq!(reason(b"a LIST \"\" * FOO (CHILDREN)"), "expected RETURN");
        assert_eq!(reason(b"a LIST \"\" ()"), "empty list");
    }

    #[test]
    fn status_items() {
        assert_eq!(
            body("A042 STATUS blurdybloop (UIDNEXT messages uidvalidity UNSEEN RECENT)"),
            CommandBody::Status {
                mailbox: b"blurdybloop".to_vec(),
                items: vec![
                    StatusItem::UidNext,
                    StatusItem::Messages,
                    StatusItem::UidValidity,
                    StatusItem::Unseen,
                    StatusItem::Recent
                ],
            }
        );
        assert_eq!(reason(b"a STATUS x ()"), "empty list");
        assert_eq!(reason(b"a STATUS x (BOGUS)"), "unknown status item");
    }

    #[test]
    fn append_single_multi_and_binary() {
        let input = format!(
            "A003 APPEND saved-messages (\\Seen) {{{}}}\r\n{APPEND_MESSAGE}\r\n",
            APPEND_MESSAGE.len()
        );
        assert_eq!(
            body(&input),
            CommandBody::Append {
                mailbox: b"saved-messages".to_vec(),
                messages: vec![AppendMessage {
                    flags: vec![Flag::Seen],
                    date: None,
                    data: APPEND_MESSAGE.as_bytes().to_vec(),
                    binary: false,
                }],
            }
        );
        let CommandBody::Append { mailbox, messages } = body(
            "A003 APPEND INBOX {5+}\r\nhello (\\Seen $Work) \" 1-Aug-2002 22:00:00 -0700\" ~{3}\r\n\0\x01\x02 \"17-Jul-1996 02:44:25 -0700\" {0}\r\n\r\n",
        ) else {
            panic!()
        };
        assert_eq!(mailbox, b"INBOX");
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[0].data, b"hello");
        assert!(messages[0].flags.is_empty() && messages[0].date.is_none());
        assert_eq!(
            messages[1].flags,
            vec![Flag::Seen, Flag::Keyword("$work".into())]
        );
        assert_eq!(
            messages[1].date,
            Some(DateTime {
                unix: 1_028_264_400,
                offset_minutes: -420
            })
        );
        assert_eq!(
            (messages[1].data.as_slice(), messages[1].binary),
            (&b"\0\x01\x02"[..], true)
        );
        assert_eq!(
            messages[2].date,
            Some(DateTime {
                unix: 837_596_665,
                offset_minutes: -420
            })
        );
        assert!(messages[2].data.is_empty());
        assert_eq!(
            reason(b"a APPEND INBOX\r\n"),
            "APPEND needs a message literal"
        );
        assert_eq!(reason(b"a APPEND INBOX \"hello\"\r\n"), "invalid date-time");
        assert_eq!(reason(b"a APPEND INBOX (\\Seen)\r\n"), "expected a space");
        for bad in [
            &b"\"30-Feb-2020 00:00:00 +0000\""[..],
            b"\"01-Jan-2020 24:00:00 +0000\"",
            b"\"01-Jan-2020 00:60:00 +0000\"",
            b"\"01-Jan-2020 00:00:00 +0060\"",
            b"\"01-Jan-2020 00:00:00 0000\"",
        ] {
            let mut input = b"a APPEND x ".to_vec();
            input.extend_from_slice(bad);
            input.extend_from_slice(b" {1}\r\nm");
            assert_eq!(
                reason(&input),
                "invalid date-time",
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            reason(b"a APPEND x \"1-Jan-2020 00:00:00 +0000\" {1}\r\nm"),
            "invalid date-time"
        );
    }

    #[test]
    fn fetch_items_and_macros() {
        let fetch = |s: &str| match body(s) {
            CommandBody::Fetch { items, .. } => items,
            other => panic!("{other:?}"),
        };
        use FetchItem as F;
        assert_eq!(
            fetch("a FETCH 1 ALL"),
            vec![F::Flags, F::InternalDate, F::Rfc822Size, F::Envelope]
        );
        assert_eq!(
            fetch("a FETCH 1 fast"),
            vec![F::Flags, F::InternalDate, F::Rfc822Size]
        );
        assert_eq!(
            fetch("a FETCH 1 FULL"),
            vec![
                F::Flags,
                F::InternalDate,
                F::Rfc822Size,
                F::Envelope,
                F::Body
            ]
        );
        assert_eq!(fetch("a FETCH 1 BODYSTRUCTURE"), vec![F::BodyStructure]);
        assert_eq!(
            fetch(
                "a FETCH 1 (UID RFC822 RFC822.HEADER RFC822.TEXT RFC822.SIZE MODSEQ BODY ENVELOPE)"
            ),
            vec![
                F::Uid,
                F::Rfc822,
                F::Rfc822Header,
                F::Rfc822Text,
                F::Rfc822Size,
                F::ModSeq,
                F::Body,
                F::Envelope
            ]
        );
        assert_eq!(
            fetch("A001 FETCH 1 BODY[1.2.HEADER.FIELDS (From To)]<0.100>"),
            vec![F::BodySection {
                peek: false,
                section: Section {
                    part: vec![1, 2],
                    text: Some(SectionText::HeaderFields(vec!["From".into(), "To".into()])),
                },
                partial: Some((0, 100)),
            }]
        );
        assert_eq!(
            fetch("a FETCH 1 (BODY.PEEK[] BODY[TEXT] body.peek[3.mime] BODY[2.HEADER.FIELDS.NOT (\"X-A\" {3}\r\nX-B)] BODY[4.1])"),
            vec![
                F::BodySection { peek: true, section: Section::default(), partial: None },
                F::BodySection {
                    peek: false,
                    section: Section { part: vec![], text: Some(SectionText::Text) },
                    partial: None
                },
                F::BodySection {
                    peek: true,
                    section: Section { part: vec![3], text: Some(SectionText::Mime) },
                    partial: None
                },
                F::BodySection {
                    peek: false,
                    section: Section {
                        part: vec![2],
                        text: Some(SectionText::HeaderFieldsNot(vec!["X-A".into(), "X-B".into()]))
                    },
                    partial: None
                },
                F::BodySection {
                    peek: false,
                    section: Section { part: vec![4, 1], text: None },
                    partial: None
                },
            ]
        );
        assert_eq!(
            fetch("a FETCH 1 (BINARY.PEEK[1]<5.10> BINARY[] BINARY.SIZE[2.3])"),
            vec![
                F::Binary {
                    peek: true,
                    part: vec![1],
                    partial: Some((5, 10))
                },
                F::Binary {
                    peek: false,
                    part: vec![],
                    partial: None
                },
                F::BinarySize { part: vec![2, 3] },
            ]
        );
        for (bad, why) in [
            (&b"a FETCH 1 BODY[MIME]"[..], "invalid section"),
            (b"a FETCH 1 BODY[0]", "expected a non-zero number"),
            (b"a FETCH 1 BODY[1.]", "invalid section"),
            (b"a FETCH 1 BODY[]<0.0>", "expected a non-zero number"),
            (b"a FETCH 1 BODY[]<1>", "invalid partial"),
            (b"a FETCH 1 BODY.PEEK", "expected '['"),
            (b"a FETCH 1 (ALL)", "unknown fetch attribute"),
            (b"a FETCH 1 ()", "empty list"),
            (b"a FETCH 1 BODY[HEADER.FIELDS ()]", "empty list"),
            (b"a FETCH 0 FLAGS", "invalid sequence set"),
            (
                b"a FETCH 1:* (FLAGS) (VANISHED)",
                "VANISHED needs UID FETCH and CHANGEDSINCE",
            ),
            (
                b"a FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)",
                "VANISHED needs UID FETCH and CHANGEDSINCE",
            ),
        ] {
            assert_eq!(reason(bad), why, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            body("s100 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)"),
            CommandBody::Fetch {
                uid: true,
                set: seq("300:500"),
                items: vec![F::Flags],
                changed_since: Some(12345),
                vanished: true,
            }
        );
    }

    #[test]
    fn store_forms() {
        assert_eq!(
            body("A003 STORE 2:4 +FLAGS (\\Deleted)"),
            CommandBody::Store {
                uid: false,
                set: seq("2:4"),
                unchanged_since: None,
                mode: StoreMode::Add,
                silent: false,
                flags: vec![Flag::Deleted],
            }
        );
        assert_eq!(
            body("a103 UID STORE 6,4,8 (UNCHANGEDSINCE 12121230045) -flags.silent \\Seen $Junk \\Custom"),
            CommandBody::Store {
                uid: true,
                set: seq("6,4,8"),
                unchanged_since: Some(12121230045),
                mode: StoreMode::Remove,
                silent: true,
                flags: vec![Flag::Seen, Flag::Keyword("$Junk".into()), Flag::Extension("\\Custom".into())],
            }
        );
        let CommandBody::Store { mode, flags, .. } = body("a STORE 1 FLAGS ()") else {
            panic!()
        };
        assert_eq!((mode, flags), (StoreMode::Replace, vec![]));
        assert_eq!(
            reason(b"a STORE 1 +FLAG (\\Seen)"),
            "expected FLAGS or FLAGS.SILENT"
        );
        assert_eq!(
            reason(b"a STORE 1 (FOO 1) FLAGS ()"),
            "unknown STORE modifier"
        );
        assert_eq!(reason(b"a STORE 1 FLAGS (\\)"), "invalid flag");
    }

    #[test]
    fn copy_move_expunge() {
        assert_eq!(
            body("a UID MOVE 42:69 foo"),
            CommandBody::Move {
                uid: true,
                set: seq("42:69"),
                mailbox: b"foo".to_vec()
            }
        );
        assert_eq!(
            body("A003 COPY 2:4 MEETING"),
            CommandBody::Copy {
                uid: false,
                set: seq("2:4"),
                mailbox: b"MEETING".to_vec()
            }
        );
        assert_eq!(
            body("A003 UID EXPUNGE 3000:3002"),
            CommandBody::UidExpunge {
                set: seq("3000:3002")
            }
        );
        assert_eq!(body("A284 UID COPY $ other").name(), "UID COPY");
        assert_eq!(reason(b"a UID NOOP"), "unknown UID command");
        assert_eq!(reason(b"a UID EXPUNGE"), "expected a space");
    }

    #[test]
    fn search_structure() {
        let search = |s: &str| match body(s) {
            CommandBody::Search {
                uid,
                charset,
                criteria,
                returns,
            } => (uid, charset, criteria, returns),
            other => panic!("{other:?}"),
        };
        use SearchKey as K;
        let feb1 = Date {
            year: 1994,
            month: 2,
            day: 1,
        };
        assert_eq!(
            search("A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\""),
            (
                false,
                None,
                K::And(vec![
                    K::Flagged,
                    K::Since(feb1),
                    K::Not(Box::new(K::From(b"Smith".to_vec())))
                ]),
                None
            )
        );
        assert_eq!(search("A283 SEARCH RETURN () FLAGGED").3, Some(vec![]));
        assert_eq!(
            search("A282 UID SEARCH RETURN (MIN COUNT SAVE) CHARSET UTF-8 ALL"),
            (
                true,
                Some("UTF-8".into()),
                K::And(vec![K::All]),
                Some(vec![
                    SearchReturn::Min,
                    SearchReturn::Count,
                    SearchReturn::Save
                ])
            )
        );
        assert_eq!(
            search("A285 SEARCH CHARSET UTF-8 TEXT {12}\r\n\u{43e}\u{442}\u{43f}\u{443}\u{441}\u{43a}\r\n").2,
            K::And(vec![K::Text("\u{43e}\u{442}\u{43f}\u{443}\u{441}\u{43a}".as_bytes().to_vec())])
        );
        assert_eq!(
            search("a SEARCH OR (SEEN UNSEEN) NOT (1:3,*) UID $ $ 2,4:* HEADER X-Spam \"\" KEYWORD $Junk UNKEYWORD foo").2,
            K::And(vec![
                K::Or(Box::new(K::And(vec![K::Seen, K::Unseen])), Box::new(K::Not(Box::new(K::And(vec![K::SequenceSet(seq("1:3,*"))]))))),
                K::Uid(SequenceSet::Saved),
                K::SequenceSet(SequenceSet::Saved),
                K::SequenceSet(SequenceSet::Ranges(vec![
                    SeqRange { start: SeqNo::Value(2), end: SeqNo::Value(2) },
                    SeqRange { start: SeqNo::Value(4), end: SeqNo::Star },
                ])),
                K::Header("X-Spam".into(), vec![]),
                K::Keyword("$Junk".into()),
                K::Unkeyword("foo".into()),
            ])
        );
        assert_eq!(
            search("a SEARCH answered deleted draft new old recent unanswered undeleted undraft unflagged \
                    BCC b CC c SUBJECT s TO t BODY y BEFORE \"5-Mar-2000\" ON 29-Feb-2000 SENTBEFORE 1-jan-2001 \
                    SENTON 01-Jan-2001 SENTSINCE 31-Dec-1999 LARGER 10 SMALLER 4294967295 MODSEQ 5").2,
            K::And(vec![
                K::Answered, K::Deleted, K::Draft, K::New, K::Old, K::Recent, K::Unanswered, K::Undeleted,
                K::Undraft, K::Unflagged, K::Bcc(b"b".to_vec()), K::Cc(b"c".to_vec()), K::Subject(b"s".to_vec()),
                K::To(b"t".to_vec()), K::Body(b"y".to_vec()),
                K::Before(Date { year: 2000, month: 3, day: 5 }),
                K::On(Date { year: 2000, month: 2, day: 29 }),
                K::SentBefore(Date { year: 2001, month: 1, day: 1 }),
                K::SentOn(Date { year: 2001, month: 1, day: 1 }),
                K::SentSince(Date { year: 1999, month: 12, day: 31 }),
                K::Larger(10), K::Smaller(u32::MAX), K::ModSeq(5),
            ])
        );
        for (bad, why) in [
            (&b"a SEARCH"[..], "expected a space"),
            (b"a SEARCH FOO", "unknown search key"),
            (b"a SEARCH SINCE 29-Feb-1999", "invalid date"),
            (b"a SEARCH SINCE 1-Foo-1999", "invalid month"),
            (b"a SEARCH SINCE 100-Jan-1999", "invalid date"),
            (b"a SEARCH ()", "empty list"),
            (b"a SEARCH OR ALL", "expected a space"),
            (
                b"a SEARCH RETURN (BOGUS) ALL",
                "unknown search return option",
            ),
            (
                b"a SEARCH MODSEQ \"/flags/x\" bogus 5",
                "invalid MODSEQ entry type",
            ),
            (b"a SEARCH LARGER 4294967296", "number too large"),
        ] {
            assert_eq!(reason(bad), why, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn search_nesting_is_bounded() {
        let deep = format!("a SEARCH {}ALL", "NOT ".repeat(SEARCH_DEPTH_MAX + 1));
        assert_eq!(reason(deep.as_bytes()), "search keys nested too deeply");
        let ok = format!("a SEARCH {}ALL", "NOT ".repeat(SEARCH_DEPTH_MAX - 1));
        assert!(parse(ok.as_bytes()).is_ok());
        let parens = format!("a SEARCH {}ALL{}", "(".repeat(10_000), ")".repeat(10_000));
        assert_eq!(reason(parens.as_bytes()), "search keys nested too deeply");
    }

    #[test]
    fn errors_carry_the_tag() {
        assert_eq!(
            parse(b"A442 XPIG-LATIN\r\n"),
            Err(ParseError::UnknownCommand {
                tag: "A442".into(),
                name: "XPIG-LATIN".into()
            })
        );
        let e = parse(b"a1 NOOP extra\r\n").unwrap_err();
        assert_eq!(e.tag(), Some("a1"));
        assert_eq!(e.to_string(), "unexpected characters at end of command");
        for no_tag in [
            &b""[..],
            b"\r\n",
            b" NOOP",
            b"+ NOOP",
            b"a{ NOOP",
            b"a\r\n",
            b"(a) NOOP",
        ] {
            let e = parse(no_tag).unwrap_err();
            assert_eq!(e.tag(), None, "{}", String::from_utf8_lossy(no_tag));
        }
        assert_eq!(parse(b"a  NOOP").unwrap_err().tag(), Some("a"));
        assert_eq!(
            reason(b"a NOOP\r\nb NOOP\r\n"),
            "unexpected characters at end of command"
        );
        assert_eq!(reason(b"a LOGIN x\r\n"), "expected a space");
        assert_eq!(tag_prefix(b"A1 APPEND"), Some("A1".into()));
        assert_eq!(tag_prefix(b"A1"), None);
        assert_eq!(tag_prefix(b"+1 X"), None);
    }

    #[test]
    fn keyword_flags_compare_case_insensitively() {
        use std::collections::HashSet;
        let a = Flag::Keyword("$Forwarded".into());
        let b = Flag::Keyword("$FORWARDED".into());
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "$Forwarded");
        assert_ne!(a, Flag::Keyword("$Junk".into()));
        assert_ne!(Flag::Keyword("\\Seen".into()), Flag::Seen);
        assert_eq!(
            Flag::Extension("\\Foo".into()),
            Flag::Extension("\\FOO".into())
        );
        let set: HashSet<Flag> = [a, b, Flag::Seen, Flag::Seen].into_iter().collect();
        assert_eq!(set.len(), 2);
        let CommandBody::Store { flags, .. } =
            body("a STORE 1 FLAGS (\\SEEN \\answered \\Flagged \\deleted \\DRAFT \\Recent)")
        else {
            panic!()
        };
        assert_eq!(
            flags,
            vec![
                Flag::Seen,
                Flag::Answered,
                Flag::Flagged,
                Flag::Deleted,
                Flag::Draft,
                Flag::Recent
            ]
        );
    }

    #[test]
    fn calendar_round_trip() {
        for days in [-719_468, -1, 0, 59, 10_957, 11_016, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(
            Date {
                year: 1970,
                month: 1,
                day: 2
            }
            .days_from_epoch(),
            1
        );
    }

    /// Deterministic mutation fuzzing: the parser and the framer never panic,
    /// whatever the bytes.
    #[test]
    fn never_panics_on_mutated_input() {
        let seeds = rfc_examples();
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rand = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n.max(1) as u64) as usize
        };
        const ALPHABET: &[u8] = b"{}()[]<>\"\\ *%$:,.+-~0123456789\r\n\0\xffAaNILBODY";
        let mut parsed_ok = 0;
        for i in 0..30_000 {
            let mut input = seeds[rand(seeds.len())].clone();
            for _ in 0..=rand(4) {
                let len = input.len();
                match rand(7) {
                    0 if len > 0 => input[rand(len)] = ALPHABET[rand(ALPHABET.len())],
                    1 => input.insert(rand(len + 1), ALPHABET[rand(ALPHABET.len())]),
                    2 if len > 0 => {
                        let at = rand(len);
                        let end = (at + rand(8) + 1).min(len);
                        input.drain(at..end);
                    }
                    3 => input.truncate(rand(len + 1)),
                    4 if len > 0 => input[rand(len)] = rand(256) as u8,
                    5 => {
                        let other = &seeds[rand(seeds.len())];
                        let cut = rand(other.len() + 1);
                        input.truncate(rand(len + 1));
                        input.extend_from_slice(&other[cut..]);
                    }
                    _ => {
                        let at = rand(len + 1);
                        let digits = rand(12).to_string();
                        input.splice(at..at, format!("{{{digits}}}\r\n").into_bytes());
                    }
                }
            }
            if i % 10 == 0 {
                input = (0..rand(64)).map(|_| rand(256) as u8).collect();
            }
            if parse(&input).is_ok() {
                parsed_ok += 1;
            }
            let _ = tag_prefix(&input);
            let _ = SequenceSet::parse(&input);
            let _ = super::super::utf7::decode(&input);
            let limits = FramerLimits {
                line_bytes_max: 64,
                literal_bytes_max: 32,
                append_bytes_max: 128,
                command_bytes_max: 256,
                non_sync_literal_bytes_max: 16,
            };
            let mut framer = Framer::new(limits);
            let mut rest = &input[..];
            loop {
                let (n, frame) = framer.push(rest);
                rest = &rest[n..];
                match frame {
                    Some(Frame::Command(bytes)) => {
                        assert!(bytes.len() <= 256 + 64);
                        let _ = parse(&bytes);
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            assert!(rest.is_empty());
        }
        // The mutations must leave a fair share valid, or they test little.
        assert!(parsed_ok > 1_000, "only {parsed_ok} mutated inputs parsed");
    }
}
