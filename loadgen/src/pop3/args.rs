//! `ringmail-loadgen pop3` command line → a validated [`Pop3Config`], every
//! problem reported at once.

use std::net::SocketAddr;
use std::time::Duration;

use crate::args::{self, number, ArgsError};
use crate::mailrun::{describe_users, Credentials, RawArgs};
use crate::output::{OutputOptions, OUTPUT_USAGE};

const USAGE_HEAD: &str = "\
usage: ringmail-loadgen pop3 --target HOST:PORT --user LOGIN:PASSWORD [options]

  --target HOST:PORT        POP3 server to load (loopback only unless --allow-remote)
  --user LOGIN:PASSWORD     account to log in with; repeatable, connections take
                            them round-robin
  --user-count N            expand `%` in LOGIN to 1..N (--user 'load%@x.test:pw')
  --connections N           concurrent POP3 sessions (default 20)
  --sessions N              sessions in total (default 10000)
  --duration-secs N         hard stop (default 60)
  --threads N               worker threads, one per core (default: CPUs)
  --retr-per-session N      RETRs of random messages per session (default 10)
  --dele                    DELE each retrieved message before QUIT
  --allow-remote            allow a non-loopback target
";

const USAGE_TAIL: &str = "

Each session: USER/PASS (op login: USER written -> PASS's +OK), STAT, RETR of
random message numbers (distinct ones with --dele), DELE after each RETR with
--dele, QUIT. +OK = ok, -ERR = tempfail. A failed login (a wrong password, or a
maildrop another session holds) closes the connection and retries after a
backoff. The server deletes only at QUIT: DELEs of a session cut short by the
deadline are counted but not applied. Stops at --sessions or --duration-secs,
whichever comes first.";

const USAGE_PARTS: [&str; 3] = [USAGE_HEAD, OUTPUT_USAGE, USAGE_TAIL];
const USAGE_BYTES: [u8; args::usage_len(&USAGE_PARTS)] = args::concat_usage(&USAGE_PARTS);

/// The `pop3` help text.
pub const POP3_USAGE: &str = match std::str::from_utf8(&USAGE_BYTES) {
    Ok(text) => text,
    Err(_) => panic!("usage text is not UTF-8"),
};

pub const SESSIONS_MAX: u64 = 1_000_000_000_000;
pub const RETR_PER_SESSION_MAX: u64 = 100_000;

/// A validated POP3 load run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pop3Config {
    /// As typed, for the report.
    pub target_text: String,
    pub target: SocketAddr,
    pub output: OutputOptions,
    pub users: Vec<Credentials>,
    pub connections: u32,
    /// Sessions (login attempts) in total.
    pub sessions: u64,
    pub duration: Duration,
    pub threads: usize,
    pub retr_per_session: u32,
    pub dele: bool,
    pub allow_remote: bool,
}

impl Pop3Config {
    /// Every setting as text pairs, for the report.
    pub fn describe(&self) -> Vec<(String, String)> {
        let pairs: [(&str, String); 10] = [
            ("target", self.target_text.clone()),
            ("users", describe_users(&self.users)),
            ("user_count", self.users.len().to_string()),
            ("connections", self.connections.to_string()),
            ("sessions", self.sessions.to_string()),
            ("duration_secs", self.duration.as_secs().to_string()),
            ("threads", self.threads.to_string()),
            ("retr_per_session", self.retr_per_session.to_string()),
            ("dele", self.dele.to_string()),
            ("allow_remote", self.allow_remote.to_string()),
        ];
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}

const VALUE_OPTIONS: [&str; 8] = [
    "--target",
    "--user",
    "--user-count",
    "--connections",
    "--sessions",
    "--duration-secs",
    "--threads",
    "--retr-per-session",
];
const FLAG_OPTIONS: [&str; 2] = ["--dele", "--allow-remote"];

/// Parses the arguments after `pop3`. `cpus` is the default thread count.
pub fn parse_pop3_args(
    args: impl Iterator<Item = String>,
    cpus: usize,
) -> Result<Pop3Config, ArgsError> {
    let mut problems = Vec::new();
    let raw = RawArgs::collect(args, &VALUE_OPTIONS, &FLAG_OPTIONS, &mut problems);
    let single = |name: &str, problems: &mut Vec<String>| raw.single(name, problems);

    let dele = raw.flag("--dele");
    let common = raw.common(cpus, &mut problems);
    let sessions = number(
        &single("--sessions", &mut problems),
        "--sessions",
        10_000,
        1,
        SESSIONS_MAX,
        &mut problems,
    );
    let retr_per_session = number(
        &single("--retr-per-session", &mut problems),
        "--retr-per-session",
        10,
        0,
        RETR_PER_SESSION_MAX,
        &mut problems,
    ) as u32;

    match common.target {
        Some(target) if problems.is_empty() => Ok(Pop3Config {
            target_text: common.target_text,
            target,
            output: raw.output,
            users: common.users,
            connections: common.connections,
            sessions,
            duration: common.duration,
            threads: common.threads,
            retr_per_session,
            dele,
            allow_remote: common.allow_remote,
        }),
        _ => Err(ArgsError::Invalid(problems)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Pop3Config, ArgsError> {
        parse_pop3_args(args.iter().map(|s| s.to_string()), 4)
    }

    #[test]
    fn defaults() {
        let c = parse(&["--target", "127.0.0.1:110", "--user", "a@x.test:pw"]).unwrap();
        assert_eq!(c.target, "127.0.0.1:110".parse().unwrap());
        assert_eq!((c.connections, c.sessions, c.threads), (20, 10_000, 4));
        assert_eq!(c.duration, Duration::from_secs(60));
        assert_eq!(c.retr_per_session, 10);
        assert!(!c.dele && !c.allow_remote);
        assert_eq!(c.describe().len(), 10);
    }

    #[test]
    fn every_option() {
        let c = parse(&[
            "--target=[::1]:1110",
            "--user",
            "u%@x.test:pw",
            "--user-count",
            "3",
            "--connections=2",
            "--sessions",
            "50",
            "--duration-secs=5",
            "--threads",
            "1",
            "--retr-per-session",
            "0",
            "--dele",
            "--html",
            "r.html",
        ])
        .unwrap();
        assert_eq!(c.users.len(), 3);
        assert_eq!(c.users[2].login, "u3@x.test");
        assert_eq!((c.connections, c.sessions, c.threads), (2, 50, 1));
        assert_eq!(c.duration, Duration::from_secs(5));
        assert_eq!(c.retr_per_session, 0);
        assert!(c.dele);
        assert!(c.output.html_path.is_some());
    }

    #[test]
    fn all_problems_at_once() {
        let Err(ArgsError::Invalid(p)) = parse(&[
            "--target",
            "example.com:110",
            "--user",
            "x%:pw",
            "--sessions",
            "0",
            "--retr-per-session",
            "many",
            "--dele=yes",
            "--mix",
            "fetch=1",
        ]) else {
            panic!("expected problems");
        };
        let expect = [
            "refusing non-loopback",
            "needs --user-count",
            "--sessions",
            "--retr-per-session",
            "--dele takes no value",
            "unknown option `--mix`",
        ];
        for e in expect {
            assert!(p.iter().any(|m| m.contains(e)), "no `{e}` in {p:?}");
        }
        // `--mix`'s value is taken as an unknown positional too.
        assert_eq!(p.len(), expect.len() + 1, "{p:?}");
    }

    #[test]
    fn usage_names_every_option() {
        for name in VALUE_OPTIONS.iter().chain(&FLAG_OPTIONS) {
            assert!(POP3_USAGE.contains(name), "{name} missing from the usage");
        }
        assert!(POP3_USAGE.contains("--label NAME"));
    }
}
