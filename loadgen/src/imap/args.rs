//! `ringmail-loadgen imap` command line → a validated [`ImapConfig`], every
//! problem reported at once; and the weighted command [`Mix`].

use std::net::SocketAddr;
use std::time::Duration;

use crate::args::{self, number, ArgsError};
use crate::mailrun::{describe_users, Credentials, RawArgs, Rng};
use crate::output::{OutputOptions, OUTPUT_USAGE};

const USAGE_HEAD: &str = "\
usage: ringmail-loadgen imap --target HOST:PORT --user LOGIN:PASSWORD [options]

  --target HOST:PORT        IMAP server to load (loopback only unless --allow-remote)
  --user LOGIN:PASSWORD     account to log in with; repeatable, connections take
                            them round-robin
  --user-count N            expand `%` in LOGIN to 1..N (--user 'load%@x.test:pw')
  --connections N           concurrent IMAP sessions (default 20)
  --commands N              commands in total, LOGIN included, LOGOUT not (default 100000)
  --duration-secs N         hard stop (default 60)
  --threads N               worker threads, one per core (default: CPUs)
  --sessions MODE           persistent: one session per connection (default);
                            churn: LOGOUT and reconnect after --commands-per-session
  --commands-per-session N  session length with --sessions churn (default 20)
  --mix OP=W,...            command weights (default select=1,fetch=10,store=2,
                            search=2,append=1,idle=0,noop=0; ops not named weigh 0)
  --mailbox NAME            mailbox to SELECT and APPEND to (default INBOX)
  --append-size BYTES       size of each APPENDed message (default 2048)
  --allow-remote            allow a non-loopback target
";

const USAGE_TAIL: &str = "

Each session: LOGIN, SELECT, UID SEARCH ALL (to learn the UIDs), then commands
drawn from the mix: fetch = UID FETCH <uid> (FLAGS BODY.PEEK[]), store = UID STORE
<uid> +FLAGS/-FLAGS (\\Flagged) alternating, search = UID SEARCH BODY \"loadgen\" or
UNSEEN alternating, append = APPEND (LITERAL+ when offered), idle = IDLE for 100 ms,
noop = NOOP. In an empty mailbox, fetch and store are sent as NOOP (counted as noop).
Latency: command's first line written -> its tagged reply (OK = ok, NO = tempfail,
BAD = permfail). Stops at --commands or --duration-secs, whichever comes first.";

const USAGE_PARTS: [&str; 3] = [USAGE_HEAD, OUTPUT_USAGE, USAGE_TAIL];
const USAGE_BYTES: [u8; args::usage_len(&USAGE_PARTS)] = args::concat_usage(&USAGE_PARTS);

/// The `imap` help text.
pub const IMAP_USAGE: &str = match std::str::from_utf8(&USAGE_BYTES) {
    Ok(text) => text,
    Err(_) => panic!("usage text is not UTF-8"),
};

pub const COMMANDS_MAX: u64 = 1_000_000_000_000;
pub const MAILBOX_BYTES_MAX: usize = 255;
/// Smallest `--append-size`: the generated headers need about 200 bytes.
pub const APPEND_BYTES_MIN: u64 = 256;
pub const APPEND_BYTES_MAX: u64 = 64 << 20;
/// Largest weight of one op in `--mix`.
pub const WEIGHT_MAX: u32 = 1_000_000;

/// How sessions end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionMode {
    /// One session per connection for the whole run.
    Persistent,
    /// LOGOUT and reconnect after `commands_per_session` commands.
    Churn,
}

/// The commands the mix draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MixOp {
    Select,
    Fetch,
    Store,
    Search,
    Append,
    Idle,
    Noop,
}

impl MixOp {
    pub const ALL: [MixOp; 7] = [
        MixOp::Select,
        MixOp::Fetch,
        MixOp::Store,
        MixOp::Search,
        MixOp::Append,
        MixOp::Idle,
        MixOp::Noop,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MixOp::Select => "select",
            MixOp::Fetch => "fetch",
            MixOp::Store => "store",
            MixOp::Search => "search",
            MixOp::Append => "append",
            MixOp::Idle => "idle",
            MixOp::Noop => "noop",
        }
    }
}

/// Weights of the mix ops, in [`MixOp::ALL`] order; at least one is non-zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 7],
    total: u64,
}

impl Default for Mix {
    fn default() -> Self {
        Self::from_weights([1, 10, 2, 2, 1, 0, 0])
    }
}

impl Mix {
    fn from_weights(weights: [u32; 7]) -> Self {
        let total = weights.iter().map(|&w| u64::from(w)).sum();
        Self { weights, total }
    }

    /// `op=weight,...`; ops not named weigh 0. Every problem is returned.
    pub fn parse(text: &str) -> Result<Mix, Vec<String>> {
        let mut weights = [0u32; 7];
        let mut seen = [false; 7];
        let mut problems = Vec::new();
        for part in text.split(',') {
            let Some((name, weight)) = part.split_once('=') else {
                problems.push(format!("--mix `{part}`: expected OP=WEIGHT"));
                continue;
            };
            let Some(index) = MixOp::ALL.iter().position(|op| op.name() == name.trim()) else {
                problems.push(format!(
                    "--mix: unknown op `{name}` (expected select, fetch, store, search, append, idle or noop)"
                ));
                continue;
            };
            match weight.trim().parse::<u32>() {
                Ok(w) if w <= WEIGHT_MAX => weights[index] = w,
                _ => problems.push(format!(
                    "--mix {name}=`{weight}`: expected a whole number from 0 to {WEIGHT_MAX}"
                )),
            }
            if std::mem::replace(&mut seen[index], true) {
                problems.push(format!("--mix: `{name}` given more than once"));
            }
        }
        let mix = Self::from_weights(weights);
        if problems.is_empty() && mix.total == 0 {
            problems.push("--mix: every weight is 0".into());
        }
        if problems.is_empty() {
            Ok(mix)
        } else {
            Err(problems)
        }
    }

    pub fn weight(&self, op: MixOp) -> u32 {
        self.weights[op as usize]
    }

    /// An op drawn with probability weight / total.
    pub fn choose(&self, rng: &mut Rng) -> MixOp {
        let mut pick = rng.below(self.total.max(1));
        for (op, &w) in MixOp::ALL.iter().zip(&self.weights) {
            if pick < u64::from(w) {
                return *op;
            }
            pick -= u64::from(w);
        }
        MixOp::Noop
    }

    /// `select=1,fetch=10,...` (every op, in order).
    pub fn describe(&self) -> String {
        MixOp::ALL
            .iter()
            .map(|op| format!("{}={}", op.name(), self.weight(*op)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A validated IMAP load run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImapConfig {
    /// As typed, for the report.
    pub target_text: String,
    pub target: SocketAddr,
    pub output: OutputOptions,
    pub users: Vec<Credentials>,
    pub connections: u32,
    /// Commands in total (LOGOUT not counted).
    pub commands: u64,
    pub duration: Duration,
    pub threads: usize,
    pub sessions: SessionMode,
    /// Commands per session with [`SessionMode::Churn`] (LOGIN included).
    pub commands_per_session: u64,
    pub mix: Mix,
    pub mailbox: String,
    pub append_size_bytes: usize,
    pub allow_remote: bool,
}

impl ImapConfig {
    /// Every setting as text pairs, for the report.
    pub fn describe(&self) -> Vec<(String, String)> {
        let pairs: [(&str, String); 13] = [
            ("target", self.target_text.clone()),
            ("users", describe_users(&self.users)),
            ("user_count", self.users.len().to_string()),
            ("connections", self.connections.to_string()),
            ("commands", self.commands.to_string()),
            ("duration_secs", self.duration.as_secs().to_string()),
            ("threads", self.threads.to_string()),
            (
                "sessions",
                match self.sessions {
                    SessionMode::Persistent => "persistent".into(),
                    SessionMode::Churn => "churn".into(),
                },
            ),
            (
                "commands_per_session",
                self.commands_per_session.to_string(),
            ),
            ("mix", self.mix.describe()),
            ("mailbox", self.mailbox.clone()),
            ("append_size", self.append_size_bytes.to_string()),
            ("allow_remote", self.allow_remote.to_string()),
        ];
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}

const VALUE_OPTIONS: [&str; 12] = [
    "--target",
    "--user",
    "--user-count",
    "--connections",
    "--commands",
    "--duration-secs",
    "--threads",
    "--sessions",
    "--commands-per-session",
    "--mix",
    "--mailbox",
    "--append-size",
];
const FLAG_OPTIONS: [&str; 1] = ["--allow-remote"];

/// Parses the arguments after `imap`. `cpus` is the default thread count.
pub fn parse_imap_args(
    args: impl Iterator<Item = String>,
    cpus: usize,
) -> Result<ImapConfig, ArgsError> {
    let mut problems = Vec::new();
    let raw = RawArgs::collect(args, &VALUE_OPTIONS, &FLAG_OPTIONS, &mut problems);
    let single = |name: &str, problems: &mut Vec<String>| raw.single(name, problems);

    let common = raw.common(cpus, &mut problems);
    let commands = number(
        &single("--commands", &mut problems),
        "--commands",
        100_000,
        1,
        COMMANDS_MAX,
        &mut problems,
    );
    let sessions = match single("--sessions", &mut problems).as_deref() {
        None | Some("persistent") => SessionMode::Persistent,
        Some("churn") => SessionMode::Churn,
        Some(other) => {
            problems.push(format!(
                "--sessions `{other}`: expected `persistent` or `churn`"
            ));
            SessionMode::Persistent
        }
    };
    let commands_per_session = number(
        &single("--commands-per-session", &mut problems),
        "--commands-per-session",
        20,
        1,
        COMMANDS_MAX,
        &mut problems,
    );
    let mix = match single("--mix", &mut problems) {
        None => Mix::default(),
        Some(text) => Mix::parse(&text).unwrap_or_else(|mut p| {
            problems.append(&mut p);
            Mix::default()
        }),
    };
    let mailbox = single("--mailbox", &mut problems).unwrap_or_else(|| "INBOX".into());
    if mailbox.is_empty()
        || mailbox.len() > MAILBOX_BYTES_MAX
        || !mailbox.bytes().all(|b| (b' '..=b'~').contains(&b))
    {
        problems.push(format!(
            "--mailbox `{mailbox}`: expected 1-{MAILBOX_BYTES_MAX} printable ASCII characters"
        ));
    }
    let append_size_bytes = number(
        &single("--append-size", &mut problems),
        "--append-size",
        2048,
        APPEND_BYTES_MIN,
        APPEND_BYTES_MAX,
        &mut problems,
    ) as usize;

    match common.target {
        Some(target) if problems.is_empty() => Ok(ImapConfig {
            target_text: common.target_text,
            target,
            output: raw.output,
            users: common.users,
            connections: common.connections,
            commands,
            duration: common.duration,
            threads: common.threads,
            sessions,
            commands_per_session,
            mix,
            mailbox,
            append_size_bytes,
            allow_remote: common.allow_remote,
        }),
        _ => Err(ArgsError::Invalid(problems)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ImapConfig, ArgsError> {
        parse_imap_args(args.iter().map(|s| s.to_string()), 2)
    }

    fn problems(args: &[&str]) -> Vec<String> {
        match parse(args) {
            Err(ArgsError::Invalid(p)) => p,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = parse(&["--target", "127.0.0.1:143", "--user", "a@x.test:pw"]).unwrap();
        assert_eq!(c.target, "127.0.0.1:143".parse().unwrap());
        assert_eq!(c.target_text, "127.0.0.1:143");
        assert_eq!(c.users.len(), 1);
        assert_eq!((c.connections, c.commands), (20, 100_000));
        assert_eq!(c.duration, Duration::from_secs(60));
        assert_eq!(c.threads, 2);
        assert_eq!(c.sessions, SessionMode::Persistent);
        assert_eq!(c.commands_per_session, 20);
        assert_eq!(c.mix, Mix::default());
        assert_eq!(
            c.mix.describe(),
            "select=1,fetch=10,store=2,search=2,append=1,idle=0,noop=0"
        );
        assert_eq!(c.mailbox, "INBOX");
        assert_eq!(c.append_size_bytes, 2048);
        assert!(!c.allow_remote);
        assert_eq!(c.output, OutputOptions::default());
        let described = c.describe();
        assert_eq!(described.len(), 13);
        assert!(!format!("{described:?}").contains("pw"), "{described:?}");
    }

    #[test]
    fn every_option() {
        let c = parse(&[
            "--target=localhost:1143",
            "--user",
            "load%@x.test:secret",
            "--user-count=5",
            "--user",
            "b@x.test:pw2",
            "--connections",
            "4",
            "--commands=3000",
            "--duration-secs",
            "5",
            "--threads",
            "8",
            "--sessions",
            "churn",
            "--commands-per-session",
            "7",
            "--mix",
            "fetch=3,idle=1,noop=2",
            "--mailbox",
            "Archive",
            "--append-size",
            "4096",
            "--json",
            "out.json",
            "--label",
            "ringmail",
            "--quiet",
        ])
        .unwrap();
        assert_eq!(c.target, "127.0.0.1:1143".parse().unwrap());
        assert_eq!(c.users.len(), 6);
        assert_eq!(c.users[4].login, "load5@x.test");
        assert_eq!(c.users[5].login, "b@x.test");
        assert_eq!((c.connections, c.commands, c.threads), (4, 3000, 4));
        assert_eq!(c.sessions, SessionMode::Churn);
        assert_eq!(c.commands_per_session, 7);
        assert_eq!(c.mix.weight(MixOp::Fetch), 3);
        assert_eq!(c.mix.weight(MixOp::Select), 0, "ops not named weigh 0");
        assert_eq!(c.mailbox, "Archive");
        assert_eq!(c.append_size_bytes, 4096);
        assert_eq!(c.output.label.as_deref(), Some("ringmail"));
        assert!(c.output.quiet && c.output.json_path.is_some());
    }

    #[test]
    fn all_problems_at_once() {
        let p = problems(&[
            "--target",
            "10.1.2.3:143",
            "--connections",
            "0",
            "--sessions",
            "sometimes",
            "--mix",
            "fetch=x,bogus=1",
            "--append-size",
            "10",
            "--mailbox",
            "",
            "--frobnicate",
        ]);
        let expect = [
            "refusing non-loopback",
            "--user LOGIN:PASSWORD is required",
            "--connections",
            "--sessions",
            "--mix fetch",
            "unknown op `bogus`",
            "--mailbox",
            "--append-size",
            "unknown option `--frobnicate`",
        ];
        for e in expect {
            assert!(p.iter().any(|m| m.contains(e)), "no `{e}` in {p:?}");
        }
        assert_eq!(p.len(), expect.len(), "{p:?}");
        assert_eq!(
            problems(&["--user", "a:b"]),
            ["--target HOST:PORT is required"]
        );
    }

    #[test]
    fn mix_parsing() {
        assert_eq!(
            Mix::parse("fetch=0,noop=0"),
            Err(vec!["--mix: every weight is 0".to_string()])
        );
        assert_eq!(Mix::parse("noop=1,noop=2").unwrap_err().len(), 1);
        assert_eq!(Mix::parse("noop").unwrap_err().len(), 1);
        assert_eq!(
            Mix::parse(&format!("noop={}", WEIGHT_MAX + 1))
                .unwrap_err()
                .len(),
            1
        );
        let m = Mix::parse(" select = 2 ,append=1").unwrap();
        assert_eq!((m.weight(MixOp::Select), m.weight(MixOp::Append)), (2, 1));
    }

    #[test]
    fn weighted_choice_follows_the_weights() {
        let mix = Mix::parse("fetch=6,store=3,idle=1").unwrap();
        let mut rng = Rng::new(7);
        let mut counts = [0u32; 7];
        for _ in 0..100_000 {
            counts[mix.choose(&mut rng) as usize] += 1;
        }
        assert_eq!(counts[MixOp::Select as usize], 0);
        assert_eq!(counts[MixOp::Noop as usize], 0);
        let share = |op: MixOp| f64::from(counts[op as usize]) / 100_000.0;
        assert!((share(MixOp::Fetch) - 0.6).abs() < 0.01, "{counts:?}");
        assert!((share(MixOp::Store) - 0.3).abs() < 0.01, "{counts:?}");
        assert!((share(MixOp::Idle) - 0.1).abs() < 0.01, "{counts:?}");
    }

    #[test]
    fn usage_names_every_option() {
        for name in VALUE_OPTIONS.iter().chain(&FLAG_OPTIONS) {
            assert!(IMAP_USAGE.contains(name), "{name} missing from the usage");
        }
        assert!(IMAP_USAGE.contains("--json FILE"));
        assert!(IMAP_USAGE.contains("sent as NOOP"));
    }
}
