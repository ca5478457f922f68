//! SMTP command types and their zero-copy parser (RFC 5321 4.1, RFC 1870 SIZE,
//! RFC 6152 8BITMIME, RFC 6531 SMTPUTF8, RFC 3030 CHUNKING, RFC 3207 STARTTLS,
//! RFC 4954 AUTH, RFC 3461 DSN parameters and their xtext encoding).
//!
//! [`parse`] takes one command line without its terminator and returns a
//! [`Command`] whose arguments borrow from that line; it never allocates. It
//! checks syntax only: whether a command is allowed now, and what a mailbox
//! means, is the session's business.
//!
//! Mailbox syntax is RFC 5321 `Path` with two Postfix-like leniencies: a local
//! part may have empty atoms (`a..b`), and a domain may end in one dot (such a
//! domain is then simply not local). Source routes (`<@a,@b:user@dom>`) are
//! parsed and dropped (RFC 5321 4.1.1.3). Bytes >= 0x80 are allowed where RFC
//! 6531 allows UTF-8, and the path must then be valid UTF-8.
//!
//! DSN parameters (RFC 3461 §4) are checked here and kept as xtext, exactly as
//! received (that is what the queue stores and what is relayed): `RET=FULL|HDRS`
//! and `ENVID=` on MAIL, `NOTIFY=` and `ORCPT=` on RCPT. A parameter given twice is
//! refused like a malformed one (Postfix). The length limits apply to the value as
//! sent (RFC 3461: "the ENVID MAY be up to 100 characters", "the entire ORCPT
//! parameter MAY be up to 500"), so the decoded text is never longer. Leniencies
//! (Postfix's): lowercase hex digits after `+` are accepted. Strictness: a decoded
//! ENVID must be printable ASCII (Postfix), a decoded ORCPT address must be non-empty
//! and free of control characters (it ends up in a DSN header).

use std::fmt;

use thiserror::Error;

/// Longest domain accepted (RFC 5321 4.5.3.1.2).
pub const DOMAIN_BYTES_MAX: usize = 255;
/// Most decimal digits accepted in a SIZE or BDAT number (u64::MAX has 20).
const NUMBER_DIGITS_MAX: usize = 20;
/// RFC 3461 §4.4: the ENVID value (xtext, as sent) is at most 100 characters.
pub const ENVID_BYTES_MAX: usize = 100;
/// RFC 3461 §4.2: the ORCPT value (`addr-type;xtext`, as sent) is at most 500 characters.
pub const ORCPT_BYTES_MAX: usize = 500;

/// One parsed command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// EHLO with the client's name as sent (valid UTF-8, no control characters).
    Ehlo(&'a str),
    Helo(&'a str),
    Mail(MailFrom<'a>),
    Rcpt(RcptTo<'a>),
    Data,
    /// BDAT: `size` octets follow the command line; `last` ends the message.
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Help,
    /// VRFY with its (non-empty) argument, which is never looked up.
    Vrfy(&'a [u8]),
    StartTls,
    Auth(Auth<'a>),
    /// A web or proxy request (CONNECT, GET, POST) sent to the SMTP port:
    /// like Postfix's `smtpd_forbidden_commands`, the session hangs up.
    Forbidden,
}

/// A mailbox (`local@domain`) inside a path, borrowed from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mailbox<'a> {
    /// `local@domain` as written, without brackets and without a source route.
    pub address: &'a str,
    /// The local part as written, with its quotes if it is a quoted string.
    pub local: &'a str,
    /// The domain as written; for an address literal, with its brackets.
    pub domain: &'a str,
    /// The domain is an address literal (`[192.0.2.1]`, `[IPv6:...]`).
    pub literal: bool,
}

/// A SASL mechanism this server offers in AUTH (RFC 4954).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// RFC 4616.
    Plain,
    /// The de-facto LOGIN mechanism (draft-murchison-sasl-login).
    Login,
}

impl Mechanism {
    /// The mechanism named `name` (case-insensitive), if offered.
    pub fn from_name(name: &[u8]) -> Option<Mechanism> {
        if name.eq_ignore_ascii_case(b"PLAIN") {
            Some(Mechanism::Plain)
        } else if name.eq_ignore_ascii_case(b"LOGIN") {
            Some(Mechanism::Login)
        } else {
            None
        }
    }
}

/// `AUTH mechanism [initial-response]` (RFC 4954 4). The initial response is base64
/// holding credentials: `Debug` never shows it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Auth<'a> {
    /// The mechanism name as sent (not necessarily one we offer).
    pub mechanism: &'a [u8],
    /// The initial response as sent (`=` stands for an empty one, RFC 4954 4).
    pub initial_response: Option<&'a [u8]>,
}

impl fmt::Debug for Auth<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("mechanism", &String::from_utf8_lossy(self.mechanism))
            .field("initial_response", &self.initial_response.map(|_| "***"))
            .finish()
    }
}

/// BODY= parameter of MAIL (RFC 6152). BINARYMIME is not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    SevenBit,
    EightBitMime,
}

/// RET= parameter of MAIL (RFC 3461 §4.3): what a failure DSN returns of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    /// The whole message.
    Full,
    /// Its header only.
    Hdrs,
}

/// NOTIFY= parameter of RCPT (RFC 3461 §4.1) as bits: [`Notify::NEVER`] alone, or any
/// non-empty set of [`Notify::SUCCESS`], [`Notify::FAILURE`] and [`Notify::DELAY`]. The
/// bit values are those of the queue's `NOTIFY_*` constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notify(u8);

impl Notify {
    pub const NEVER: u8 = 1;
    pub const SUCCESS: u8 = 2;
    pub const FAILURE: u8 = 4;
    pub const DELAY: u8 = 8;

    /// A valid set of bits (NEVER alone, or a non-empty set of the others).
    pub fn from_bits(bits: u8) -> Option<Notify> {
        let valid = bits == Notify::NEVER
            || (bits != 0 && bits & !(Notify::SUCCESS | Notify::FAILURE | Notify::DELAY) == 0);
        valid.then_some(Notify(bits))
    }

    pub fn bits(self) -> u8 {
        self.0
    }

    /// `NEVER,`-free comma list of SUCCESS, FAILURE, DELAY, or `NEVER` alone
    /// (case-insensitive; a keyword repeated is harmless).
    pub fn parse(value: &[u8]) -> Option<Notify> {
        let mut bits = 0;
        for word in value.split(|&b| b == b',') {
            bits |= [
                ("NEVER", Notify::NEVER),
                ("SUCCESS", Notify::SUCCESS),
                ("FAILURE", Notify::FAILURE),
                ("DELAY", Notify::DELAY),
            ]
            .iter()
            .find(|(name, _)| word.eq_ignore_ascii_case(name.as_bytes()))?
            .1;
        }
        Notify::from_bits(bits)
    }
}

/// `MAIL FROM:<reverse-path> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8] [RET=FULL|HDRS]
/// [ENVID=xtext]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailFrom<'a> {
    /// `None` for the null reverse-path `<>`.
    pub sender: Option<Mailbox<'a>>,
    /// Declared message size; saturates at u64::MAX when the number is larger.
    pub size: Option<u64>,
    pub body: Option<Body>,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    /// ENVID as sent (valid xtext, at most [`ENVID_BYTES_MAX`], decodes to printable
    /// ASCII).
    pub envid: Option<&'a str>,
}

/// `RCPT TO:<forward-path> [NOTIFY=...] [ORCPT=addr-type;xtext]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RcptTo<'a> {
    pub recipient: Mailbox<'a>,
    pub notify: Option<Notify>,
    /// ORCPT as sent (`addr-type;xtext`, at most [`ORCPT_BYTES_MAX`]).
    pub orcpt: Option<&'a str>,
}

/// Why a command line was not understood. Each maps to one reply code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CommandError<'a> {
    /// Not a command this server knows (502).
    #[error("command not recognized")]
    Unrecognized,
    /// The arguments do not match the usage shown (501).
    #[error("syntax: {usage}")]
    Syntax { usage: &'static str },
    /// The reverse-path of MAIL is malformed (501 5.1.7).
    #[error("bad sender address syntax")]
    BadSender,
    /// The forward-path of RCPT is malformed (501 5.1.3).
    #[error("bad recipient address syntax")]
    BadRecipient,
    /// SIZE= is not a decimal number (501).
    #[error("bad message size syntax")]
    BadSize,
    /// RET= is not FULL or HDRS, or is repeated (501).
    #[error("bad RET parameter syntax")]
    BadRet,
    /// ENVID= is not valid xtext of printable ASCII, too long, or repeated (501).
    #[error("bad ENVID parameter syntax")]
    BadEnvid,
    /// NOTIFY= is not NEVER or a list of SUCCESS/FAILURE/DELAY, or is repeated (501).
    #[error("bad NOTIFY parameter syntax")]
    BadNotify,
    /// ORCPT= is not `addr-type;xtext`, too long, or repeated (501).
    #[error("bad ORCPT parameter syntax")]
    BadOrcpt,
    /// A MAIL/RCPT parameter this server does not implement (555).
    #[error("unsupported option: {}", String::from_utf8_lossy(.parameter))]
    UnsupportedParameter { parameter: &'a [u8] },
}

pub const USAGE_EHLO: &str = "EHLO hostname";
pub const USAGE_HELO: &str = "HELO hostname";
pub const USAGE_MAIL: &str = "MAIL FROM:<address>";
pub const USAGE_RCPT: &str = "RCPT TO:<address>";
pub const USAGE_DATA: &str = "DATA";
pub const USAGE_BDAT: &str = "BDAT chunk-size [LAST]";
pub const USAGE_RSET: &str = "RSET";
pub const USAGE_QUIT: &str = "QUIT";
pub const USAGE_VRFY: &str = "VRFY address";
pub const USAGE_STARTTLS: &str = "STARTTLS";
pub const USAGE_AUTH: &str = "AUTH mechanism";

/// A recognized command verb; its arguments are parsed separately so the
/// session can check the command's sequence before its syntax, as Postfix does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Ehlo,
    Helo,
    Mail,
    Rcpt,
    Data,
    Bdat,
    Rset,
    Noop,
    Quit,
    Help,
    Vrfy,
    StartTls,
    Auth,
    Forbidden,
}

const VERBS: [(&str, Verb); 16] = [
    ("EHLO", Verb::Ehlo),
    ("HELO", Verb::Helo),
    ("MAIL", Verb::Mail),
    ("RCPT", Verb::Rcpt),
    ("DATA", Verb::Data),
    ("BDAT", Verb::Bdat),
    ("RSET", Verb::Rset),
    ("NOOP", Verb::Noop),
    ("QUIT", Verb::Quit),
    ("HELP", Verb::Help),
    ("VRFY", Verb::Vrfy),
    ("STARTTLS", Verb::StartTls),
    ("AUTH", Verb::Auth),
    ("CONNECT", Verb::Forbidden),
    ("GET", Verb::Forbidden),
    ("POST", Verb::Forbidden),
];

/// Splits a command line (without CRLF) into its verb (case-insensitive) and
/// its arguments (leading and trailing spaces and tabs removed).
pub fn split_verb(line: &[u8]) -> Result<(Verb, &[u8]), CommandError<'_>> {
    let line = trim_end(line);
    let (word, args) = match line.iter().position(|&b| b == b' ') {
        Some(space) => (&line[..space], trim_start(&line[space + 1..])),
        None => (line, &line[line.len()..]),
    };
    VERBS
        .iter()
        .find(|(name, _)| word.eq_ignore_ascii_case(name.as_bytes()))
        .map(|&(_, verb)| (verb, args))
        .ok_or(CommandError::Unrecognized)
}

/// Parses one command line (without CRLF): [`split_verb`], then the arguments.
pub fn parse(line: &[u8]) -> Result<Command<'_>, CommandError<'_>> {
    let (verb, args) = split_verb(line)?;
    match verb {
        Verb::Ehlo => parse_hello(args, USAGE_EHLO).map(Command::Ehlo),
        Verb::Helo => parse_hello(args, USAGE_HELO).map(Command::Helo),
        Verb::Mail => parse_mail(args).map(Command::Mail),
        Verb::Rcpt => parse_rcpt(args).map(Command::Rcpt),
        Verb::Data => no_args(args, USAGE_DATA, Command::Data),
        Verb::Bdat => parse_bdat(args).map(|(size, last)| Command::Bdat { size, last }),
        Verb::Rset => no_args(args, USAGE_RSET, Command::Rset),
        Verb::Noop => Ok(Command::Noop),
        Verb::Quit => no_args(args, USAGE_QUIT, Command::Quit),
        Verb::Help => Ok(Command::Help),
        Verb::Vrfy if args.is_empty() => Err(CommandError::Syntax { usage: USAGE_VRFY }),
        Verb::Vrfy => Ok(Command::Vrfy(args)),
        Verb::StartTls => no_args(args, USAGE_STARTTLS, Command::StartTls),
        Verb::Auth => parse_auth(args).map(Command::Auth),
        Verb::Forbidden => Ok(Command::Forbidden),
    }
}

fn trim_end(mut bytes: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

fn trim_start(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    bytes
}

fn no_args<'a>(
    args: &'a [u8],
    usage: &'static str,
    command: Command<'a>,
) -> Result<Command<'a>, CommandError<'a>> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(CommandError::Syntax { usage })
    }
}

/// EHLO/HELO argument: non-empty UTF-8 without control characters (it is
/// copied into the Received header).
pub fn parse_hello<'a>(args: &'a [u8], usage: &'static str) -> Result<&'a str, CommandError<'a>> {
    let name = std::str::from_utf8(args).map_err(|_| CommandError::Syntax { usage })?;
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(CommandError::Syntax { usage });
    }
    Ok(name)
}

/// Strips a case-insensitive keyword such as `FROM:` and the spaces after it
/// (Postfix accepts `MAIL FROM: <a@b>`).
fn strip_keyword<'a>(args: &'a [u8], keyword: &str) -> Option<&'a [u8]> {
    let head = args.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword.as_bytes())
        .then(|| trim_start(&args[keyword.len()..]))
}

/// Arguments of MAIL (after the verb).
pub fn parse_mail(args: &[u8]) -> Result<MailFrom<'_>, CommandError<'_>> {
    let rest = strip_keyword(args, "FROM:").ok_or(CommandError::Syntax { usage: USAGE_MAIL })?;
    if rest.is_empty() {
        return Err(CommandError::Syntax { usage: USAGE_MAIL });
    }
    let (sender, params) = parse_path(rest, true).ok_or(CommandError::BadSender)?;
    let mut mail = MailFrom {
        sender,
        size: None,
        body: None,
        smtputf8: false,
        ret: None,
        envid: None,
    };
    for param in Params::new(params).ok_or(CommandError::BadSender)? {
        let (key, value) = match param.iter().position(|&b| b == b'=') {
            Some(eq) => (&param[..eq], Some(&param[eq + 1..])),
            None => (param, None),
        };
        let unsupported = CommandError::UnsupportedParameter { parameter: param };
        if key.eq_ignore_ascii_case(b"SIZE") {
            mail.size = Some(parse_number(value.unwrap_or(b"")).ok_or(CommandError::BadSize)?);
        } else if key.eq_ignore_ascii_case(b"BODY") {
            let value = value.unwrap_or(b"");
            if value.eq_ignore_ascii_case(b"7BIT") {
                mail.body = Some(Body::SevenBit);
            } else if value.eq_ignore_ascii_case(b"8BITMIME") {
                mail.body = Some(Body::EightBitMime);
            } else {
                return Err(unsupported);
            }
        } else if key.eq_ignore_ascii_case(b"SMTPUTF8") && value.is_none() {
            mail.smtputf8 = true;
        } else if key.eq_ignore_ascii_case(b"RET") {
            let value = value.unwrap_or(b"");
            let ret = if value.eq_ignore_ascii_case(b"FULL") {
                Ret::Full
            } else if value.eq_ignore_ascii_case(b"HDRS") {
                Ret::Hdrs
            } else {
                return Err(CommandError::BadRet);
            };
            if mail.ret.replace(ret).is_some() {
                return Err(CommandError::BadRet);
            }
        } else if key.eq_ignore_ascii_case(b"ENVID") {
            let envid = value
                .filter(|v| !v.is_empty() && v.len() <= ENVID_BYTES_MAX)
                .filter(|v| xtext_each(v, |b| (0x20..=0x7E).contains(&b)))
                .and_then(|v| std::str::from_utf8(v).ok())
                .ok_or(CommandError::BadEnvid)?;
            if mail.envid.replace(envid).is_some() {
                return Err(CommandError::BadEnvid);
            }
        } else {
            return Err(unsupported);
        }
    }
    Ok(mail)
}

/// Checks an ORCPT value: `addr-type ";" xtext`, the type an atom, the decoded address
/// non-empty and without control characters, at most [`ORCPT_BYTES_MAX`] in all.
fn parse_orcpt(value: &[u8]) -> Option<&str> {
    if value.len() > ORCPT_BYTES_MAX {
        return None;
    }
    let semicolon = value.iter().position(|&b| b == b';')?;
    let (addr_type, xtext) = (&value[..semicolon], &value[semicolon + 1..]);
    let valid = !addr_type.is_empty()
        && addr_type.iter().all(|&b| b.is_ascii() && is_atext(b))
        && !xtext.is_empty()
        && xtext_each(xtext, |b| b >= 0x20 && b != 0x7F);
    valid.then(|| std::str::from_utf8(value).ok()).flatten()
}

/// Calls `accept` with each byte `xtext` stands for (RFC 3461 §4: `xchar`s, `!`..`~`
/// except `+` and `=`, stand for themselves; `+XX` for the byte 0xXX). False when the
/// xtext is malformed or `accept` refuses a byte.
fn xtext_each(xtext: &[u8], mut accept: impl FnMut(u8) -> bool) -> bool {
    let mut at = 0;
    while let Some(&b) = xtext.get(at) {
        let byte = match b {
            b'+' => {
                let hex = |i: usize| xtext.get(i).and_then(|&h| (h as char).to_digit(16));
                match (hex(at + 1), hex(at + 2)) {
                    // Two hex digits: at most 0xFF.
                    (Some(high), Some(low)) => {
                        at += 3;
                        (high * 16 + low) as u8
                    }
                    _ => return false,
                }
            }
            b'=' => return false,
            b'!'..=b'~' => {
                at += 1;
                b
            }
            _ => return false,
        };
        if !accept(byte) {
            return false;
        }
    }
    true
}

/// Decodes xtext (RFC 3461 §4); `None` when malformed.
pub fn xtext_decode(xtext: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(xtext.len());
    xtext_each(xtext, |b| {
        out.push(b);
        true
    })
    .then_some(out)
}

/// Appends the xtext form of `bytes` to `out` (RFC 3461 §4: `+`, `=`, and bytes outside
/// `!`..`~` become `+XX`, uppercase hex).
pub fn xtext_encode(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if matches!(b, b'!'..=b'~') && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push('+');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

/// Arguments of RCPT (after the verb).
pub fn parse_rcpt(args: &[u8]) -> Result<RcptTo<'_>, CommandError<'_>> {
    let rest = strip_keyword(args, "TO:").ok_or(CommandError::Syntax { usage: USAGE_RCPT })?;
    if rest.is_empty() {
        return Err(CommandError::Syntax { usage: USAGE_RCPT });
    }
    let (recipient, params) = parse_path(rest, false).ok_or(CommandError::BadRecipient)?;
    let recipient = recipient.ok_or(CommandError::BadRecipient)?;
    let mut rcpt = RcptTo {
        recipient,
        notify: None,
        orcpt: None,
    };
    for param in Params::new(params).ok_or(CommandError::BadRecipient)? {
        let (key, value) = match param.iter().position(|&b| b == b'=') {
            Some(eq) => (&param[..eq], Some(&param[eq + 1..])),
            None => (param, None),
        };
        if key.eq_ignore_ascii_case(b"NOTIFY") {
            let notify = value
                .and_then(Notify::parse)
                .ok_or(CommandError::BadNotify)?;
            if rcpt.notify.replace(notify).is_some() {
                return Err(CommandError::BadNotify);
            }
        } else if key.eq_ignore_ascii_case(b"ORCPT") {
            let orcpt = value.and_then(parse_orcpt).ok_or(CommandError::BadOrcpt)?;
            if rcpt.orcpt.replace(orcpt).is_some() {
                return Err(CommandError::BadOrcpt);
            }
        } else {
            return Err(CommandError::UnsupportedParameter { parameter: param });
        }
    }
    Ok(rcpt)
}

/// Arguments of BDAT: (chunk size, LAST).
pub fn parse_bdat(args: &[u8]) -> Result<(u64, bool), CommandError<'_>> {
    let syntax = CommandError::Syntax { usage: USAGE_BDAT };
    let mut words = args.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let size = words.next().and_then(parse_number).ok_or(syntax)?;
    let last = match words.next() {
        None => false,
        Some(word) if word.eq_ignore_ascii_case(b"LAST") => true,
        Some(_) => return Err(syntax),
    };
    if words.next().is_some() {
        return Err(syntax);
    }
    Ok((size, last))
}

/// Arguments of AUTH: a mechanism name and at most one initial response, separated
/// by spaces (the name is checked against the offered ones by the session).
pub fn parse_auth(args: &[u8]) -> Result<Auth<'_>, CommandError<'_>> {
    let syntax = CommandError::Syntax { usage: USAGE_AUTH };
    let mut words = args.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let mechanism = words.next().ok_or(syntax)?;
    let initial_response = words.next();
    if words.next().is_some() {
        return Err(syntax);
    }
    Ok(Auth {
        mechanism,
        initial_response,
    })
}

/// Decimal digits only; a number beyond u64 saturates (any limit rejects it).
fn parse_number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if digits.len() > NUMBER_DIGITS_MAX {
        return Some(u64::MAX);
    }
    Some(digits.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// The space-separated `esmtp-param`s after a path. `None` if the text after
/// the path does not start with a space.
struct Params<'a> {
    rest: &'a [u8],
}

impl<'a> Params<'a> {
    fn new(after_path: &'a [u8]) -> Option<Params<'a>> {
        match after_path {
            [] | [b' ', ..] => Some(Params { rest: after_path }),
            _ => None,
        }
    }
}

impl<'a> Iterator for Params<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = trim_start(self.rest);
        if rest.is_empty() {
            return None;
        }
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        self.rest = &rest[end..];
        Some(&rest[..end])
    }
}

/// Parses `<[route:]mailbox>` or (if `allow_null`) `<>` at the start of
/// `input`. Returns the mailbox (`None` for `<>`) and the bytes after `>`.
fn parse_path(input: &[u8], allow_null: bool) -> Option<(Option<Mailbox<'_>>, &[u8])> {
    let mut at = 1;
    if input.first() != Some(&b'<') {
        return None;
    }
    if input.get(at) == Some(&b'>') {
        return allow_null.then(|| (None, &input[at + 1..]));
    }
    if input.get(at) == Some(&b'@') {
        // A-d-l: "@" Domain *( "," "@" Domain ) ":"
        loop {
            at += 1; // the '@'
            let end = scan_domain(input, at)?;
            at = end;
            match input.get(at) {
                Some(b',') if input.get(at + 1) == Some(&b'@') => at += 1,
                Some(b':') => {
                    at += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    let local_start = at;
    let local_end = if input.get(at) == Some(&b'"') {
        scan_quoted(input, at)?
    } else {
        scan_dot_string(input, at)?
    };
    if input.get(local_end) != Some(&b'@') {
        return None;
    }
    let domain_start = local_end + 1;
    let (domain_end, literal) = if input.get(domain_start) == Some(&b'[') {
        (scan_literal(input, domain_start)?, true)
    } else {
        (scan_domain(input, domain_start)?, false)
    };
    if input.get(domain_end) != Some(&b'>') {
        return None;
    }
    let address = std::str::from_utf8(&input[local_start..domain_end]).ok()?;
    let split = local_end - local_start;
    let mailbox = Mailbox {
        address,
        local: &address[..split],
        domain: &address[split + 1..],
        literal,
    };
    Some((Some(mailbox), &input[domain_end + 1..]))
}

/// RFC 5322 atext, plus any byte of a UTF-8 sequence (RFC 6531).
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80 || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// Dot-string (leniently: any mix of atext and dots, not empty). Returns the end.
fn scan_dot_string(input: &[u8], start: usize) -> Option<usize> {
    let len = input[start..]
        .iter()
        .take_while(|&&b| is_atext(b) || b == b'.')
        .count();
    (len > 0).then_some(start + len)
}

/// Quoted-string starting at the `"` at `start`. Returns the end (after `"`).
fn scan_quoted(input: &[u8], start: usize) -> Option<usize> {
    let mut at = start + 1;
    loop {
        match *input.get(at)? {
            b'"' => return Some(at + 1),
            b'\\' => {
                let escaped = *input.get(at + 1)?;
                if !(32..=126).contains(&escaped) {
                    return None;
                }
                at += 2;
            }
            b if (32..=126).contains(&b) || b >= 0x80 => at += 1,
            _ => return None,
        }
    }
}

/// Domain: labels of letters, digits, `-`, `_` or UTF-8 bytes separated by
/// single dots; one trailing dot is tolerated. Returns the end.
fn scan_domain(input: &[u8], start: usize) -> Option<usize> {
    let mut at = start;
    let mut label_bytes = 0;
    while let Some(&b) = input.get(at) {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b >= 0x80 {
            label_bytes += 1;
        } else if b == b'.' && label_bytes > 0 {
            label_bytes = 0;
        } else {
            break;
        }
        at += 1;
    }
    let len = at - start;
    (len > 0 && len <= DOMAIN_BYTES_MAX).then_some(at)
}

/// Address literal `[...]` starting at `start` (dtext inside). Returns the end.
fn scan_literal(input: &[u8], start: usize) -> Option<usize> {
    let close = start + 1 + input[start + 1..].iter().position(|&b| b == b']')?;
    let inside = &input[start + 1..close];
    let dtext = |b: &u8| matches!(b, 33..=90 | 94..=126);
    (!inside.is_empty() && inside.iter().all(dtext)).then_some(close + 1)
}

impl Mailbox<'_> {
    /// True when the address is all ASCII (else SMTPUTF8 is required).
    pub fn is_ascii(&self) -> bool {
        self.address.is_ascii()
    }

    /// Writes the normalized address into `out` (cleared first): ASCII
    /// lowercase, and a quoted local part whose content is a plain dot-string
    /// written without quotes (`"Alice"@X` → `alice@x`). Returns the index of
    /// the `@` that separates the domain, so `&out[at + 1..]` is the domain.
    pub fn normalize_into(&self, out: &mut String) -> usize {
        out.clear();
        match self
            .local
            .strip_prefix('"')
            .and_then(|l| l.strip_suffix('"'))
        {
            Some(quoted) => {
                let unescaped_len = out.len();
                let mut escaped = false;
                for c in quoted.chars() {
                    if c == '\\' && !escaped {
                        escaped = true;
                        continue;
                    }
                    escaped = false;
                    out.push(c);
                }
                if !is_strict_dot_string(&out[unescaped_len..]) {
                    out.truncate(unescaped_len);
                    out.push_str(self.local);
                }
            }
            None => out.push_str(self.local),
        }
        let at = out.len();
        out.push('@');
        out.push_str(self.domain);
        out.make_ascii_lowercase();
        at
    }
}

/// Atom *("." Atom): what a local part may be without quotes.
fn is_strict_dot_string(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.bytes().all(is_atext))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(address: &str, split: usize, literal: bool) -> Mailbox<'_> {
        Mailbox {
            address,
            local: &address[..split],
            domain: &address[split + 1..],
            literal,
        }
    }

    fn mail(line: &str) -> Result<MailFrom<'_>, CommandError<'_>> {
        match parse(line.as_bytes())? {
            Command::Mail(mail) => Ok(mail),
            other => panic!("not MAIL: {other:?}"),
        }
    }

    fn rcpt(line: &str) -> Result<Mailbox<'_>, CommandError<'_>> {
        match parse(line.as_bytes())? {
            Command::Rcpt(rcpt) => Ok(rcpt.recipient),
            other => panic!("not RCPT: {other:?}"),
        }
    }

    #[test]
    fn simple_commands_case_insensitive() {
        assert_eq!(parse(b"ehlo client.test"), Ok(Command::Ehlo("client.test")));
        assert_eq!(parse(b"HeLo x"), Ok(Command::Helo("x")));
        assert_eq!(parse(b"DATA"), Ok(Command::Data));
        assert_eq!(parse(b"data  "), Ok(Command::Data));
        assert_eq!(parse(b"RSET"), Ok(Command::Rset));
        assert_eq!(parse(b"noop anything"), Ok(Command::Noop));
        assert_eq!(parse(b"Quit"), Ok(Command::Quit));
        assert_eq!(parse(b"HELP mail"), Ok(Command::Help));
        assert_eq!(parse(b"VRFY alice"), Ok(Command::Vrfy(b"alice")));
        assert_eq!(parse(b"GET / HTTP/1.1"), Ok(Command::Forbidden));
        assert_eq!(parse(b"connect x:25"), Ok(Command::Forbidden));
    }

    #[test]
    fn unknown_and_malformed_verbs() {
        assert_eq!(parse(b"FOO"), Err(CommandError::Unrecognized));
        assert_eq!(parse(b""), Err(CommandError::Unrecognized));
        assert_eq!(parse(b" EHLO x"), Err(CommandError::Unrecognized));
        assert_eq!(parse(b"MAILFROM:<a@b>"), Err(CommandError::Unrecognized));
        assert_eq!(parse(b"STARTTLSX"), Err(CommandError::Unrecognized));
    }

    #[test]
    fn argument_syntax() {
        let syntax = |usage| Err(CommandError::Syntax { usage });
        assert_eq!(parse(b"EHLO"), syntax(USAGE_EHLO));
        assert_eq!(parse(b"HELO   "), syntax(USAGE_HELO));
        assert_eq!(parse(b"EHLO a\x01b"), syntax(USAGE_EHLO));
        assert_eq!(parse(b"EHLO a\rb"), syntax(USAGE_EHLO));
        assert_eq!(parse(b"EHLO \xff"), syntax(USAGE_EHLO));
        assert_eq!(parse(b"DATA x"), syntax(USAGE_DATA));
        assert_eq!(parse(b"RSET x"), syntax(USAGE_RSET));
        assert_eq!(parse(b"QUIT now"), syntax(USAGE_QUIT));
        assert_eq!(parse(b"VRFY"), syntax(USAGE_VRFY));
        assert_eq!(parse(b"MAIL"), syntax(USAGE_MAIL));
        assert_eq!(parse(b"MAIL TO:<a@b>"), syntax(USAGE_MAIL));
        assert_eq!(parse(b"MAIL FROM:"), syntax(USAGE_MAIL));
        assert_eq!(parse(b"RCPT FROM:<a@b>"), syntax(USAGE_RCPT));
        assert_eq!(parse(b"RCPT TO:  "), syntax(USAGE_RCPT));
        assert_eq!(parse(b"STARTTLS now"), syntax(USAGE_STARTTLS));
        assert_eq!(parse(b"AUTH"), syntax(USAGE_AUTH));
        assert_eq!(parse(b"AUTH   "), syntax(USAGE_AUTH));
        assert_eq!(parse(b"AUTH PLAIN a b"), syntax(USAGE_AUTH));
    }

    #[test]
    fn starttls_and_auth() {
        assert_eq!(parse(b"starttls"), Ok(Command::StartTls));
        assert_eq!(parse(b"STARTTLS  "), Ok(Command::StartTls));
        let auth = |mechanism, initial_response| {
            Ok(Command::Auth(Auth {
                mechanism,
                initial_response,
            }))
        };
        assert_eq!(parse(b"AUTH PLAIN"), auth(&b"PLAIN"[..], None));
        assert_eq!(parse(b"auth login  dGlt "), auth(b"login", Some(b"dGlt")));
        assert_eq!(parse(b"AUTH PLAIN ="), auth(b"PLAIN", Some(b"=")));
        assert_eq!(parse(b"AUTH CRAM-MD5"), auth(b"CRAM-MD5", None));
        assert_eq!(Mechanism::from_name(b"plain"), Some(Mechanism::Plain));
        assert_eq!(Mechanism::from_name(b"LoGiN"), Some(Mechanism::Login));
        assert_eq!(Mechanism::from_name(b"CRAM-MD5"), None);
        assert_eq!(Mechanism::from_name(b"PLAINX"), None);
    }

    #[test]
    fn auth_debug_hides_the_initial_response() {
        let Ok(Command::Auth(auth)) = parse(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==") else {
            panic!("not AUTH");
        };
        let shown = format!("{auth:?} {:?}", Command::Auth(auth));
        assert!(shown.contains("PLAIN") && shown.contains("***"), "{shown}");
        assert!(!shown.contains("AGFsaWNl"), "{shown}");
        assert!(!shown.contains("65, 71"), "{shown}");
    }

    #[test]
    fn mail_paths() {
        let m = mail("MAIL FROM:<Alice@Example.TEST>").unwrap();
        assert_eq!(m.sender, Some(mailbox("Alice@Example.TEST", 5, false)));
        assert_eq!((m.size, m.body, m.smtputf8), (None, None, false));
        // Postfix-style space after the colon.
        let m = mail("mail from: <a@b>").unwrap();
        assert_eq!(m.sender, Some(mailbox("a@b", 1, false)));
        assert_eq!(mail("MAIL FROM:<>").unwrap().sender, None);
        // Source route accepted and dropped.
        let m = mail("MAIL FROM:<@a.test,@b.test:u@c.test>").unwrap();
        assert_eq!(m.sender, Some(mailbox("u@c.test", 1, false)));
        // Quoted local part with a space, an escaped quote and a '>'.
        let m = mail(r#"MAIL FROM:<"a b\"c>"@d.test>"#).unwrap();
        assert_eq!(m.sender, Some(mailbox(r#""a b\"c>"@d.test"#, 9, false)));
        // Address literal.
        let m = mail("MAIL FROM:<u@[192.0.2.1]>").unwrap();
        assert_eq!(m.sender, Some(mailbox("u@[192.0.2.1]", 1, true)));
    }

    #[test]
    fn bad_paths() {
        for line in [
            "MAIL FROM:a@b",
            "MAIL FROM:<a@b",
            "MAIL FROM:<a>",
            "MAIL FROM:<@b>",
            "MAIL FROM:<a@>",
            "MAIL FROM:<a@b>x",
            "MAIL FROM:<a b@c>",
            "MAIL FROM:<a@b..c>",
            "MAIL FROM:<a@.b>",
            "MAIL FROM:<a@[]>",
            "MAIL FROM:<a@[1.2.3.4>",
            "MAIL FROM:<\"a@b>",
            "MAIL FROM:<@a:>",
            "MAIL FROM:<@a,b:c@d>",
            "MAIL FROM:<@a b@c>",
            "MAIL FROM:< a@b>",
            "MAIL FROM:<<a@b>>",
        ] {
            assert_eq!(mail(line), Err(CommandError::BadSender), "{line}");
        }
        assert_eq!(rcpt("RCPT TO:<>"), Err(CommandError::BadRecipient));
        assert_eq!(
            rcpt("RCPT TO:<postmaster>"),
            Err(CommandError::BadRecipient)
        );
        assert_eq!(rcpt("RCPT TO:bob@x"), Err(CommandError::BadRecipient));
        // Invalid UTF-8 in an address.
        assert_eq!(
            parse(b"RCPT TO:<\xc3(@x.test>"),
            Err(CommandError::BadRecipient)
        );
        let long_domain = format!("MAIL FROM:<a@{}>", "d".repeat(DOMAIN_BYTES_MAX + 1));
        assert_eq!(mail(&long_domain), Err(CommandError::BadSender));
    }

    #[test]
    fn lenient_paths() {
        // Trailing dot in the domain parses (and is then not a local domain).
        let m = rcpt("RCPT TO:<bob@example.test.>").unwrap();
        assert_eq!(m.domain, "example.test.");
        // Empty atoms in the local part parse, like Postfix.
        assert_eq!(rcpt("RCPT TO:<a..b@x>").unwrap().local, "a..b");
        // Percent hack and bang path are just local-part characters.
        assert_eq!(
            rcpt("RCPT TO:<bob%remote.test@x>").unwrap().local,
            "bob%remote.test"
        );
        assert_eq!(rcpt("RCPT TO:<remote!bob@x>").unwrap().local, "remote!bob");
        // UTF-8 (SMTPUTF8 is checked by the session).
        let m = rcpt("RCPT TO:<jörg@bücher.test>").unwrap();
        assert!(!m.is_ascii());
        assert_eq!(m.local, "jörg");
        assert_eq!(m.domain, "bücher.test");
    }

    #[test]
    fn mail_parameters() {
        let m = mail("MAIL FROM:<a@b> SIZE=1000 body=8bitmime SmtpUtf8").unwrap();
        assert_eq!(m.size, Some(1000));
        assert_eq!(m.body, Some(Body::EightBitMime));
        assert!(m.smtputf8);
        let m = mail("MAIL FROM:<>   BODY=7BIT  ").unwrap();
        assert_eq!(m.body, Some(Body::SevenBit));
        let m = mail("MAIL FROM:<> SIZE=123456789012345678901234567890").unwrap();
        assert_eq!(m.size, Some(u64::MAX));
        assert_eq!(mail("MAIL FROM:<> SIZE=12k"), Err(CommandError::BadSize));
        assert_eq!(mail("MAIL FROM:<> SIZE="), Err(CommandError::BadSize));
        assert_eq!(mail("MAIL FROM:<> SIZE"), Err(CommandError::BadSize));
        for param in [
            "BODY=BINARYMIME",
            "BODY=",
            "SMTPUTF8=yes",
            "NOTIFY=NEVER",
            "AUTH=<>",
        ] {
            let line = format!("MAIL FROM:<a@b> {param}");
            assert_eq!(
                mail(&line),
                Err(CommandError::UnsupportedParameter {
                    parameter: param.as_bytes()
                }),
                "{line}"
            );
        }
    }

    #[test]
    fn unknown_rcpt_parameters_are_unsupported() {
        for param in ["RET=FULL", "X=1", "NOTIFYX=NEVER", "SIZE=1"] {
            let line = format!("RCPT TO:<a@b> {param}");
            assert_eq!(
                rcpt(&line),
                Err(CommandError::UnsupportedParameter {
                    parameter: param.as_bytes()
                }),
                "{line}"
            );
        }
        assert_eq!(rcpt("RCPT TO: <a@b>  ").unwrap().address, "a@b");
    }

    fn rcpt_to(line: &str) -> Result<RcptTo<'_>, CommandError<'_>> {
        match parse(line.as_bytes())? {
            Command::Rcpt(rcpt) => Ok(rcpt),
            other => panic!("not RCPT: {other:?}"),
        }
    }

    #[test]
    fn dsn_mail_parameters() {
        let m = mail("MAIL FROM:<a@b> RET=FULL ENVID=QQ314159").unwrap();
        assert_eq!((m.ret, m.envid), (Some(Ret::Full), Some("QQ314159")));
        let m = mail("MAIL FROM:<> ret=hdrs envid=a+2Bb+3Dc+20d SIZE=10").unwrap();
        assert_eq!(m.ret, Some(Ret::Hdrs));
        // Kept as sent (xtext), lowercase hex accepted.
        assert_eq!(m.envid, Some("a+2Bb+3Dc+20d"));
        assert_eq!(m.size, Some(10));
        assert_eq!(
            mail("MAIL FROM:<a@b> EnVid=x+2b").unwrap().envid,
            Some("x+2b")
        );
        let m = mail("MAIL FROM:<a@b>").unwrap();
        assert_eq!((m.ret, m.envid), (None, None));
        let longest = format!("MAIL FROM:<a@b> ENVID={}", "e".repeat(ENVID_BYTES_MAX));
        assert_eq!(mail(&longest).unwrap().envid.map(str::len), Some(100));
    }

    #[test]
    fn bad_dsn_mail_parameters() {
        for line in [
            "MAIL FROM:<a@b> RET=",
            "MAIL FROM:<a@b> RET",
            "MAIL FROM:<a@b> RET=ALL",
            "MAIL FROM:<a@b> RET=FULLX",
            "MAIL FROM:<a@b> RET=FULL RET=FULL",
            "MAIL FROM:<a@b> RET=HDRS RET=FULL",
        ] {
            assert_eq!(mail(line), Err(CommandError::BadRet), "{line}");
        }
        let too_long = format!("MAIL FROM:<a@b> ENVID={}", "e".repeat(ENVID_BYTES_MAX + 1));
        // Short decoded, long as sent: the limit is on the value as sent.
        let too_long_encoded = format!("MAIL FROM:<a@b> ENVID={}", "+41".repeat(34));
        for line in [
            "MAIL FROM:<a@b> ENVID",
            "MAIL FROM:<a@b> ENVID=",
            "MAIL FROM:<a@b> ENVID=a+",
            "MAIL FROM:<a@b> ENVID=a+4",
            "MAIL FROM:<a@b> ENVID=a+4G",
            "MAIL FROM:<a@b> ENVID=a+G4",
            "MAIL FROM:<a@b> ENVID=a=b",
            "MAIL FROM:<a@b> ENVID=a+0Db",
            "MAIL FROM:<a@b> ENVID=a+0A",
            "MAIL FROM:<a@b> ENVID=+00",
            "MAIL FROM:<a@b> ENVID=+7F",
            "MAIL FROM:<a@b> ENVID=+C3+A9",
            "MAIL FROM:<a@b> ENVID=\x7f",
            "MAIL FROM:<a@b> ENVID=1 ENVID=1",
            &too_long,
            &too_long_encoded,
        ] {
            assert_eq!(mail(line), Err(CommandError::BadEnvid), "{line}");
        }
        // Raw bytes outside xchar are refused.
        assert_eq!(
            parse(b"MAIL FROM:<a@b> ENVID=\xc3\xa9"),
            Err(CommandError::BadEnvid)
        );
    }

    #[test]
    fn dsn_rcpt_parameters() {
        let r = rcpt_to("RCPT TO:<a@b> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;A+40b").unwrap();
        assert_eq!(r.recipient.address, "a@b");
        assert_eq!(
            r.notify.map(Notify::bits),
            Some(Notify::SUCCESS | Notify::FAILURE)
        );
        assert_eq!(r.orcpt, Some("rfc822;A+40b"));
        let r = rcpt_to("rcpt to:<a@b> orcpt=utf-8;x notify=never").unwrap();
        assert_eq!(r.notify.map(Notify::bits), Some(Notify::NEVER));
        assert_eq!(r.orcpt, Some("utf-8;x"));
        let r = rcpt_to("RCPT TO:<a@b> NOTIFY=delay,Failure,SUCCESS,DELAY").unwrap();
        assert_eq!(r.notify.map(Notify::bits), Some(14));
        let r = rcpt_to("RCPT TO:<a@b>").unwrap();
        assert_eq!((r.notify, r.orcpt), (None, None));
        // A decoded ORCPT may hold UTF-8 (not control characters).
        assert!(rcpt_to("RCPT TO:<a@b> ORCPT=rfc822;j+C3+B6rg@x").is_ok());
        let longest = format!(
            "RCPT TO:<a@b> ORCPT=rfc822;{}",
            "o".repeat(ORCPT_BYTES_MAX - 7)
        );
        assert_eq!(rcpt_to(&longest).unwrap().orcpt.map(str::len), Some(500));
    }

    #[test]
    fn bad_dsn_rcpt_parameters() {
        for line in [
            "RCPT TO:<a@b> NOTIFY",
            "RCPT TO:<a@b> NOTIFY=",
            "RCPT TO:<a@b> NOTIFY=NEVER,SUCCESS",
            "RCPT TO:<a@b> NOTIFY=FAILURE,NEVER",
            "RCPT TO:<a@b> NOTIFY=SUCCESS,",
            "RCPT TO:<a@b> NOTIFY=,SUCCESS",
            "RCPT TO:<a@b> NOTIFY=SUCCESS,,DELAY",
            "RCPT TO:<a@b> NOTIFY=ALWAYS",
            "RCPT TO:<a@b> NOTIFY=SUCCESS NOTIFY=SUCCESS",
        ] {
            assert_eq!(rcpt_to(line), Err(CommandError::BadNotify), "{line}");
        }
        let too_long = format!(
            "RCPT TO:<a@b> ORCPT=rfc822;{}",
            "o".repeat(ORCPT_BYTES_MAX - 6)
        );
        for line in [
            "RCPT TO:<a@b> ORCPT",
            "RCPT TO:<a@b> ORCPT=",
            "RCPT TO:<a@b> ORCPT=rfc822",
            "RCPT TO:<a@b> ORCPT=;a@b",
            "RCPT TO:<a@b> ORCPT=rfc822;",
            "RCPT TO:<a@b> ORCPT=rfc(822);a@b",
            "RCPT TO:<a@b> ORCPT=rfc822;a+0Db",
            "RCPT TO:<a@b> ORCPT=rfc822;a+7F",
            "RCPT TO:<a@b> ORCPT=rfc822;a+",
            "RCPT TO:<a@b> ORCPT=rfc822;a=b",
            "RCPT TO:<a@b> ORCPT=rfc822;a@b ORCPT=rfc822;a@b",
            &too_long,
        ] {
            assert_eq!(rcpt_to(line), Err(CommandError::BadOrcpt), "{line}");
        }
    }

    #[test]
    fn notify_bits() {
        assert_eq!(Notify::from_bits(0), None);
        assert_eq!(Notify::from_bits(Notify::NEVER | Notify::DELAY), None);
        assert_eq!(Notify::from_bits(16), None);
        for bits in 2..16u8 {
            let others = bits & !Notify::NEVER;
            assert_eq!(Notify::from_bits(others).is_some(), others != 0);
        }
        assert_eq!(Notify::from_bits(Notify::NEVER).map(Notify::bits), Some(1));
    }

    #[test]
    fn xtext_round_trip() {
        let mut encoded = String::new();
        let all: Vec<u8> = (0..=255).collect();
        xtext_encode(&all, &mut encoded);
        assert!(encoded
            .bytes()
            .all(|b| (b'!'..=b'~').contains(&b) && b != b'='));
        assert_eq!(xtext_decode(encoded.as_bytes()), Some(all));
        encoded.clear();
        xtext_encode(b"a+b=c d@x", &mut encoded);
        assert_eq!(encoded, "a+2Bb+3Dc+20d@x");
        assert_eq!(xtext_decode(b"A+2b"), Some(b"A+".to_vec()));
        assert_eq!(xtext_decode(b""), Some(Vec::new()));
        for bad in [&b"+"[..], b"+2", b"a=b", b"a b", b"+ZZ", b"\xff"] {
            assert_eq!(xtext_decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bdat_arguments() {
        let bdat = |size, last| Ok(Command::Bdat { size, last });
        assert_eq!(parse(b"BDAT 0"), bdat(0, false));
        assert_eq!(parse(b"bdat 0 last"), bdat(0, true));
        assert_eq!(parse(b"BDAT 1234  LAST"), bdat(1234, true));
        assert_eq!(parse(b"BDAT 18446744073709551615"), bdat(u64::MAX, false));
        let syntax = Err(CommandError::Syntax { usage: USAGE_BDAT });
        for line in [
            "BDAT",
            "BDAT x",
            "BDAT -1",
            "BDAT 1 FIRST",
            "BDAT 1 LAST x",
            "BDAT +5",
        ] {
            assert_eq!(parse(line.as_bytes()), syntax, "{line}");
        }
        // Beyond u64: saturates, so any size limit rejects it.
        assert_eq!(
            parse(b"BDAT 99999999999999999999999"),
            bdat(u64::MAX, false)
        );
    }

    #[test]
    fn normalization() {
        let mut out = String::new();
        let cases = [
            ("RCPT TO:<ALICE@Example.TEST>", "alice@example.test"),
            ("RCPT TO:<\"Alice\"@example.test>", "alice@example.test"),
            ("RCPT TO:<\"a.b\"@x>", "a.b@x"),
            ("RCPT TO:<\"A B\"@X>", "\"a b\"@x"),
            ("RCPT TO:<\"a..b\"@x>", "\"a..b\"@x"),
            ("RCPT TO:<\"\"@x>", "\"\"@x"),
            (
                "RCPT TO:<\"bob@remote.test\"@example.test>",
                "\"bob@remote.test\"@example.test",
            ),
            ("RCPT TO:<\"\\a\\l\\i\\c\\e\"@x>", "alice@x"),
            ("RCPT TO:<@remote:Bob@X.Test>", "bob@x.test"),
            ("RCPT TO:<U@[IPv6:::1]>", "u@[ipv6:::1]"),
            ("RCPT TO:<JÖRG@x>", "jÖrg@x"),
        ];
        for (line, want) in cases {
            let mailbox = rcpt(line).unwrap();
            let at = mailbox.normalize_into(&mut out);
            assert_eq!(out, want, "{line}");
            assert_eq!(&out[at..at + 1], "@");
            assert!(!out[at + 1..].contains('@'));
        }
    }

    #[test]
    fn error_messages_name_the_problem() {
        let error = mail("MAIL FROM:<a@b> X-FOO=1").unwrap_err();
        assert_eq!(error.to_string(), "unsupported option: X-FOO=1");
        assert_eq!(
            CommandError::Syntax { usage: USAGE_MAIL }.to_string(),
            "syntax: MAIL FROM:<address>"
        );
    }
}
