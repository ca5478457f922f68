//! POP3 command lines, sans-IO: parsing into [`Command`] (zero-copy: arguments borrow the
//! line). Lines are framed by the shared [`crate::line::LineReader`] (a bare LF is accepted,
//! as by Dovecot); RFC 2449 §4 allows 255 octets per command line, ringmail accepts
//! `line_bytes_max` (512 by default) so that an `AUTH PLAIN` initial response with a long
//! password still fits. The SASL PLAIN message that `AUTH PLAIN` carries is decoded by the
//! shared `crate::sasl`.

use std::fmt;

use memchr::memchr;

/// One parsed command. Arguments borrow the command line.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// RFC 2449: any state.
    Capa,
    Quit,
    /// RFC 2595: AUTHORIZATION, before any USER/AUTH.
    Stls,
    /// AUTHORIZATION. The name is the rest of the line (trailing blanks trimmed).
    User(&'a [u8]),
    /// AUTHORIZATION. The password is the rest of the line after one space, verbatim
    /// (passwords may contain spaces).
    Pass(&'a [u8]),
    /// Recognised only to refuse it: ringmail offers no APOP (no timestamp in the greeting).
    Apop,
    /// RFC 5034. No mechanism: list the mechanisms. `initial` is the initial response as
    /// sent (`=` means an empty one).
    Auth {
        mechanism: Option<&'a [u8]>,
        initial: Option<&'a [u8]>,
    },
    // TRANSACTION
    Stat,
    List(Option<u32>),
    Retr(u32),
    Dele(u32),
    Noop,
    Rset,
    Top {
        message: u32,
        lines: u32,
    },
    Uidl(Option<u32>),
}

impl fmt::Debug for Command<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Capa => f.write_str("Capa"),
            Command::Stls => f.write_str("Stls"),
            Command::Quit => f.write_str("Quit"),
            Command::User(u) => write!(f, "User({:?})", u.escape_ascii().to_string()),
            // Secrets never print.
            Command::Pass(_) => f.write_str("Pass(***)"),
            Command::Apop => f.write_str("Apop"),
            Command::Auth { mechanism, initial } => write!(
                f,
                "Auth {{ mechanism: {:?}, initial: {} }}",
                mechanism.map(|m| m.escape_ascii().to_string()),
                if initial.is_some() {
                    "Some(***)"
                } else {
                    "None"
                }
            ),
            Command::Stat => f.write_str("Stat"),
            Command::List(n) => write!(f, "List({n:?})"),
            Command::Retr(n) => write!(f, "Retr({n})"),
            Command::Dele(n) => write!(f, "Dele({n})"),
            Command::Noop => f.write_str("Noop"),
            Command::Rset => f.write_str("Rset"),
            Command::Top { message, lines } => write!(f, "Top({message}, {lines})"),
            Command::Uidl(n) => write!(f, "Uidl({n:?})"),
        }
    }
}

/// Why a command line did not parse. The session turns each into one `-ERR` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown command")]
    Unknown,
    #[error("syntax error: {usage}")]
    Syntax { usage: &'static str },
    #[error("invalid message number")]
    BadNumber,
}

pub const USAGE_USER: &str = "USER name";
pub const USAGE_PASS: &str = "PASS password";
pub const USAGE_AUTH: &str = "AUTH [mechanism [initial-response]]";
pub const USAGE_TOP: &str = "TOP message lines";
pub const USAGE_NUMBER: &str = "command message";
pub const USAGE_NO_ARGUMENTS: &str = "no arguments expected";

/// Longest command keyword (`CAPA`, `UIDL`, ...): anything longer is unknown at once.
const VERB_BYTES_MAX: usize = 4;

/// Parses one command line (without its terminator).
pub fn parse(line: &[u8]) -> Result<Command<'_>, CommandError> {
    let (verb, rest) = match memchr(b' ', line) {
        Some(sp) => (&line[..sp], Some(&line[sp + 1..])),
        None => (line, None),
    };
    if verb.is_empty() || verb.len() > VERB_BYTES_MAX {
        return Err(CommandError::Unknown);
    }
    let mut upper = [0u8; VERB_BYTES_MAX];
    upper[..verb.len()].copy_from_slice(verb);
    upper.make_ascii_uppercase();
    let args = Args::new(rest.unwrap_or(b""));
    match &upper[..verb.len()] {
        b"CAPA" => args.none(Command::Capa),
        b"STLS" => args.none(Command::Stls),
        b"QUIT" => args.none(Command::Quit),
        b"STAT" => args.none(Command::Stat),
        b"NOOP" => args.none(Command::Noop),
        b"RSET" => args.none(Command::Rset),
        b"USER" => {
            let name = trim_blanks(rest.unwrap_or(b""));
            if name.is_empty() {
                Err(CommandError::Syntax { usage: USAGE_USER })
            } else {
                Ok(Command::User(name))
            }
        }
        b"PASS" => match rest {
            Some(password) if !password.is_empty() => Ok(Command::Pass(password)),
            _ => Err(CommandError::Syntax { usage: USAGE_PASS }),
        },
        b"APOP" => Ok(Command::Apop),
        b"AUTH" => {
            let mut args = args;
            let mechanism = args.next();
            let initial = args.next();
            if args.next().is_some() {
                return Err(CommandError::Syntax { usage: USAGE_AUTH });
            }
            Ok(Command::Auth { mechanism, initial })
        }
        b"LIST" => args.optional_number().map(Command::List),
        b"UIDL" => args.optional_number().map(Command::Uidl),
        b"RETR" => args.number().map(Command::Retr),
        b"DELE" => args.number().map(Command::Dele),
        b"TOP" => {
            let mut args = args;
            let (Some(message), Some(lines), None) = (args.next(), args.next(), args.next()) else {
                return Err(CommandError::Syntax { usage: USAGE_TOP });
            };
            Ok(Command::Top {
                message: parse_number(message)?,
                lines: parse_number(lines)?,
            })
        }
        _ => Err(CommandError::Unknown),
    }
}

/// Space-separated arguments; runs of spaces count as one separator.
#[derive(Clone, Copy)]
struct Args<'a> {
    rest: &'a [u8],
}

impl<'a> Args<'a> {
    fn new(rest: &'a [u8]) -> Args<'a> {
        Args { rest }
    }

    fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.rest.iter().position(|&b| b != b' ')?;
        let rest = &self.rest[start..];
        let end = memchr(b' ', rest).unwrap_or(rest.len());
        self.rest = &rest[end..];
        Some(&rest[..end])
    }

    fn none(mut self, command: Command<'a>) -> Result<Command<'a>, CommandError> {
        match self.next() {
            None => Ok(command),
            Some(_) => Err(CommandError::Syntax {
                usage: USAGE_NO_ARGUMENTS,
            }),
        }
    }

    fn optional_number(mut self) -> Result<Option<u32>, CommandError> {
        let Some(arg) = self.next() else {
            return Ok(None);
        };
        if self.next().is_some() {
            return Err(CommandError::Syntax {
                usage: USAGE_NUMBER,
            });
        }
        parse_number(arg).map(Some)
    }

    fn number(self) -> Result<u32, CommandError> {
        match self.optional_number()? {
            Some(n) => Ok(n),
            None => Err(CommandError::Syntax {
                usage: USAGE_NUMBER,
            }),
        }
    }
}

/// A decimal number (digits only, at most u32::MAX).
fn parse_number(arg: &[u8]) -> Result<u32, CommandError> {
    if arg.is_empty() || !arg.iter().all(u8::is_ascii_digit) {
        return Err(CommandError::BadNumber);
    }
    let mut n: u32 = 0;
    for &d in arg {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u32::from(d - b'0')))
            .ok_or(CommandError::BadNumber)?;
    }
    Ok(n)
}

fn trim_blanks(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ' && b != b'\t');
    let end = s.iter().rposition(|&b| b != b' ' && b != b'\t');
    match (start, end) {
        (Some(start), Some(end)) => &s[start..=end],
        _ => &[],
    }
}

/// True if `mechanism` names SASL PLAIN (case-insensitive, RFC 4422 §3.1).
pub fn is_plain(mechanism: &[u8]) -> bool {
    mechanism.eq_ignore_ascii_case(b"PLAIN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_case_insensitively() {
        assert_eq!(parse(b"capa"), Ok(Command::Capa));
        assert_eq!(parse(b"stls"), Ok(Command::Stls));
        assert!(parse(b"STLS now").is_err());
        assert_eq!(parse(b"QuIt"), Ok(Command::Quit));
        assert_eq!(parse(b"STAT"), Ok(Command::Stat));
        assert_eq!(parse(b"noop"), Ok(Command::Noop));
        assert_eq!(parse(b"RSET"), Ok(Command::Rset));
        assert_eq!(parse(b"LIST"), Ok(Command::List(None)));
        assert_eq!(parse(b"list 7"), Ok(Command::List(Some(7))));
        assert_eq!(parse(b"UIDL"), Ok(Command::Uidl(None)));
        assert_eq!(parse(b"uidl 12"), Ok(Command::Uidl(Some(12))));
        assert_eq!(parse(b"RETR 1"), Ok(Command::Retr(1)));
        assert_eq!(parse(b"DELE 4294967295"), Ok(Command::Dele(u32::MAX)));
        assert_eq!(
            parse(b"TOP 2 0"),
            Ok(Command::Top {
                message: 2,
                lines: 0
            })
        );
        // Runs of spaces separate like one.
        assert_eq!(parse(b"LIST  3 "), Ok(Command::List(Some(3))));
        assert_eq!(
            parse(b"APOP mrose c4c9334bac560ecc979e58001b3e22fb"),
            Ok(Command::Apop)
        );
    }

    #[test]
    fn user_and_pass_take_the_rest_of_the_line() {
        assert_eq!(
            parse(b"USER alice@example.test"),
            Ok(Command::User(b"alice@example.test"))
        );
        assert_eq!(parse(b"user  bob \t"), Ok(Command::User(b"bob")));
        assert_eq!(
            parse(b"PASS  two words "),
            Ok(Command::Pass(b" two words "))
        );
        assert_eq!(
            parse(b"USER"),
            Err(CommandError::Syntax { usage: USAGE_USER })
        );
        assert_eq!(
            parse(b"USER  "),
            Err(CommandError::Syntax { usage: USAGE_USER })
        );
        assert_eq!(
            parse(b"PASS"),
            Err(CommandError::Syntax { usage: USAGE_PASS })
        );
        assert_eq!(
            parse(b"PASS "),
            Err(CommandError::Syntax { usage: USAGE_PASS })
        );
    }

    #[test]
    fn auth_arguments() {
        assert_eq!(
            parse(b"AUTH"),
            Ok(Command::Auth {
                mechanism: None,
                initial: None
            })
        );
        assert_eq!(
            parse(b"auth plain"),
            Ok(Command::Auth {
                mechanism: Some(b"plain"),
                initial: None
            })
        );
        assert_eq!(
            parse(b"AUTH PLAIN AGEAYg=="),
            Ok(Command::Auth {
                mechanism: Some(b"PLAIN"),
                initial: Some(b"AGEAYg==")
            })
        );
        assert_eq!(
            parse(b"AUTH PLAIN a b"),
            Err(CommandError::Syntax { usage: USAGE_AUTH })
        );
        assert!(is_plain(b"pLaIn") && !is_plain(b"LOGIN"));
    }

    #[test]
    fn bad_commands() {
        assert_eq!(parse(b""), Err(CommandError::Unknown));
        assert_eq!(parse(b" STAT"), Err(CommandError::Unknown));
        assert_eq!(parse(b"STATS"), Err(CommandError::Unknown));
        assert_eq!(parse(b"XTND XMIT"), Err(CommandError::Unknown));
        assert_eq!(parse(b"STLSX"), Err(CommandError::Unknown));
        assert_eq!(parse(b"ST\xffT"), Err(CommandError::Unknown));
        assert_eq!(
            parse(b"STAT 1"),
            Err(CommandError::Syntax {
                usage: USAGE_NO_ARGUMENTS
            })
        );
        assert_eq!(
            parse(b"RETR"),
            Err(CommandError::Syntax {
                usage: USAGE_NUMBER
            })
        );
        assert_eq!(
            parse(b"LIST 1 2"),
            Err(CommandError::Syntax {
                usage: USAGE_NUMBER
            })
        );
        assert_eq!(parse(b"RETR x"), Err(CommandError::BadNumber));
        assert_eq!(parse(b"RETR -1"), Err(CommandError::BadNumber));
        assert_eq!(parse(b"RETR +1"), Err(CommandError::BadNumber));
        assert_eq!(parse(b"DELE 4294967296"), Err(CommandError::BadNumber));
        assert_eq!(
            parse(b"TOP 1"),
            Err(CommandError::Syntax { usage: USAGE_TOP })
        );
        assert_eq!(
            parse(b"TOP 1 2 3"),
            Err(CommandError::Syntax { usage: USAGE_TOP })
        );
        assert_eq!(parse(b"TOP 1 x"), Err(CommandError::BadNumber));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let pass = format!("{:?}", parse(b"PASS hunter2").unwrap());
        assert_eq!(pass, "Pass(***)");
        let auth = format!("{:?}", parse(b"AUTH PLAIN AGEAaHVudGVyMg==").unwrap());
        assert!(!auth.contains("AGEA") && auth.contains("***"), "{auth}");
    }
}
