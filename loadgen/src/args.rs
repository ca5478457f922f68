//! Command line: raw option strings first, then a validated [`SmtpConfig`] with
//! every problem reported at once. No argument crate: the grammar is
//! `ringmail-loadgen smtp --name value|--name=value|--flag ...`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::message::{MessageTemplate, SEQUENCE_MAX};

pub const USAGE: &str = "\
usage: ringmail-loadgen smtp --target HOST:PORT [options]

  --target HOST:PORT        server to load (loopback only unless --allow-remote)
  --connections N           concurrent SMTP sessions (default 20)
  --messages N              messages in total (default 20000)
  --per-connection N        messages per session before QUIT + reconnect
                            (default: unlimited, one session per connection)
  --size BYTES              message size before dot-stuffing (default 2048)
  --recipients N            RCPT TO per message (default 1)
  --from ADDR               envelope and header sender (default sender@load.test)
  --to ADDR                 recipient, repeatable, used round-robin
                            (default rcpt@example.test)
  --pipelining              always pipeline MAIL+RCPT+DATA in one write
  --no-pipelining           never pipeline
                            (default: pipeline if the server offers PIPELINING)
  --duration-secs N         hard stop (default 300)
  --threads N               worker threads, one per core (default: CPUs)
  --io epoll|blocking       epoll: each thread drives its connections from one
                            event loop (default); blocking: one thread per connection
  --json FILE               also write the results as JSON
  --helo NAME               EHLO name and Message-ID domain (default loadgen.test)
  --allow-remote            allow a non-loopback target
  -h, --help                this text

Stops at --messages or --duration-secs, whichever comes first.";

pub const CONNECTIONS_MAX: u32 = 10_000;
pub const RECIPIENTS_MAX: u32 = 100;
pub const TO_ADDRESSES_MAX: usize = 10_000;
pub const ADDRESS_BYTES_MAX: usize = 254;
pub const HELO_BYTES_MAX: usize = 255;
pub const SIZE_BYTES_MAX: usize = 64 << 20;
pub const DURATION_SECS_MAX: u64 = 7 * 86_400;
pub const THREADS_MAX: usize = 1_024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    #[error("missing command: expected `smtp`")]
    MissingCommand,
    #[error("unknown command `{0}`: expected `smtp`")]
    UnknownCommand(String),
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipeliningMode {
    /// Pipeline when the server's EHLO reply lists PIPELINING.
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoMode {
    /// One event loop (epoll) per worker thread.
    Epoll,
    /// One blocking thread per connection, pinned round-robin to the worker cores.
    Blocking,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Smtp(Box<SmtpConfig>),
}

/// A validated SMTP load run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpConfig {
    /// As typed, for the report.
    pub target_text: String,
    pub target: SocketAddr,
    pub connections: u32,
    pub messages: u64,
    pub per_connection: Option<u64>,
    pub size_bytes: usize,
    pub recipients: u32,
    pub from: String,
    pub to: Vec<String>,
    pub pipelining: PipeliningMode,
    pub duration: Duration,
    pub threads: usize,
    pub io: IoMode,
    pub json_path: Option<PathBuf>,
    pub helo: String,
    pub allow_remote: bool,
}

/// Options as strings, before validation.
#[derive(Default, Debug)]
struct RawSmtpArgs {
    target: Option<String>,
    connections: Option<String>,
    messages: Option<String>,
    per_connection: Option<String>,
    size: Option<String>,
    recipients: Option<String>,
    from: Option<String>,
    to: Vec<String>,
    pipelining: Option<bool>,
    duration_secs: Option<String>,
    threads: Option<String>,
    io: Option<String>,
    json: Option<String>,
    helo: Option<String>,
    allow_remote: bool,
    help: bool,
}

/// Parses the arguments after the program name. `cpus` is the default thread count.
pub fn parse_args<I, S>(args: I, cpus: usize) -> Result<Command, ArgsError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut args = args.into_iter().map(Into::into);
    let command = match args.next() {
        None => return Err(ArgsError::MissingCommand),
        Some(c) if c == "-h" || c == "--help" || c == "help" => return Ok(Command::Help),
        Some(c) if c == "smtp" => c,
        Some(c) => return Err(ArgsError::UnknownCommand(c)),
    };
    debug_assert_eq!(command, "smtp");
    let (raw, mut problems) = collect_raw(args);
    if raw.help {
        return Ok(Command::Help);
    }
    let config = validate(raw, cpus, &mut problems);
    match config {
        Some(config) if problems.is_empty() => Ok(Command::Smtp(Box::new(config))),
        _ => Err(ArgsError::Invalid(problems)),
    }
}

fn collect_raw(mut args: impl Iterator<Item = String>) -> (RawSmtpArgs, Vec<String>) {
    let mut raw = RawSmtpArgs::default();
    let mut problems = Vec::new();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let flag =
            |raw: &mut RawSmtpArgs, problems: &mut Vec<String>, set: fn(&mut RawSmtpArgs)| {
                if inline.is_some() {
                    problems.push(format!("{name} takes no value"));
                }
                set(raw);
            };
        match name.as_str() {
            "-h" | "--help" => flag(&mut raw, &mut problems, |r| r.help = true),
            "--pipelining" => flag(&mut raw, &mut problems, |r| r.pipelining = Some(true)),
            "--no-pipelining" => flag(&mut raw, &mut problems, |r| r.pipelining = Some(false)),
            "--allow-remote" => flag(&mut raw, &mut problems, |r| r.allow_remote = true),
            "--target" | "--connections" | "--messages" | "--per-connection" | "--size"
            | "--recipients" | "--from" | "--to" | "--duration-secs" | "--threads" | "--io"
            | "--json" | "--helo" => {
                let Some(value) = inline.clone().or_else(|| args.next()) else {
                    problems.push(format!("{name} needs a value"));
                    continue;
                };
                let slot = match name.as_str() {
                    "--target" => &mut raw.target,
                    "--connections" => &mut raw.connections,
                    "--messages" => &mut raw.messages,
                    "--per-connection" => &mut raw.per_connection,
                    "--size" => &mut raw.size,
                    "--recipients" => &mut raw.recipients,
                    "--from" => &mut raw.from,
                    "--duration-secs" => &mut raw.duration_secs,
                    "--threads" => &mut raw.threads,
                    "--io" => &mut raw.io,
                    "--json" => &mut raw.json,
                    "--helo" => &mut raw.helo,
                    _ => {
                        raw.to.push(value);
                        continue;
                    }
                };
                if slot.replace(value).is_some() {
                    problems.push(format!("{name} given more than once"));
                }
            }
            _ => problems.push(format!("unknown option `{arg}`")),
        }
    }
    (raw, problems)
}

fn validate(raw: RawSmtpArgs, cpus: usize, problems: &mut Vec<String>) -> Option<SmtpConfig> {
    let connections = number(
        &raw.connections,
        "--connections",
        20,
        1,
        u64::from(CONNECTIONS_MAX),
        problems,
    ) as u32;
    let messages = number(
        &raw.messages,
        "--messages",
        20_000,
        1,
        SEQUENCE_MAX,
        problems,
    );
    let per_connection = raw.per_connection.as_ref().map(|_| {
        number(
            &raw.per_connection,
            "--per-connection",
            1,
            1,
            SEQUENCE_MAX,
            problems,
        )
    });
    let recipients = number(
        &raw.recipients,
        "--recipients",
        1,
        1,
        u64::from(RECIPIENTS_MAX),
        problems,
    ) as u32;
    let duration_secs = number(
        &raw.duration_secs,
        "--duration-secs",
        300,
        1,
        DURATION_SECS_MAX,
        problems,
    );
    let threads_default = cpus.clamp(1, THREADS_MAX) as u64;
    let threads = number(
        &raw.threads,
        "--threads",
        threads_default,
        1,
        THREADS_MAX as u64,
        problems,
    ) as usize;
    let size_bytes = number(
        &raw.size,
        "--size",
        2048,
        1,
        SIZE_BYTES_MAX as u64,
        problems,
    ) as usize;

    let from = raw.from.unwrap_or_else(|| "sender@load.test".into());
    check_address(&from, "--from", problems);
    let to = if raw.to.is_empty() {
        vec!["rcpt@example.test".to_string()]
    } else {
        raw.to
    };
    if to.len() > TO_ADDRESSES_MAX {
        problems.push(format!(
            "--to given {} times (at most {TO_ADDRESSES_MAX})",
            to.len()
        ));
    }
    for address in &to {
        check_address(address, "--to", problems);
    }
    let helo = raw.helo.unwrap_or_else(|| "loadgen.test".into());
    if helo.is_empty()
        || helo.len() > HELO_BYTES_MAX
        || !helo
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:_".contains(&b))
    {
        problems.push(format!(
            "--helo `{helo}` must be 1-{HELO_BYTES_MAX} letters, digits, '-', '.', '_' (or an [address] literal)"
        ));
    }
    let pipelining = match raw.pipelining {
        None => PipeliningMode::Auto,
        Some(true) => PipeliningMode::Always,
        Some(false) => PipeliningMode::Never,
    };
    let io = match raw.io.as_deref() {
        None | Some("epoll") => IoMode::Epoll,
        Some("blocking") => IoMode::Blocking,
        Some(other) => {
            problems.push(format!("--io `{other}`: expected `epoll` or `blocking`"));
            IoMode::Epoll
        }
    };
    let json_path = match raw.json {
        Some(p) if p.is_empty() => {
            problems.push("--json needs a file name".into());
            None
        }
        other => other.map(PathBuf::from),
    };

    let template = MessageTemplate {
        from: from.clone(),
        id_domain: helo.clone(),
        run_id: 0,
        size_bytes,
    };
    let longest_to = to
        .iter()
        .max_by_key(|a| a.len())
        .map(String::as_str)
        .unwrap_or("");
    let size_min = template.size_bytes_min(longest_to);
    if size_bytes < size_min {
        problems.push(format!(
            "--size {size_bytes} is too small for the headers with these addresses (at least {size_min})"
        ));
    }

    let target_text = raw.target.unwrap_or_default();
    let target = if target_text.is_empty() {
        problems.push("--target HOST:PORT is required".into());
        None
    } else {
        match resolve_target(&target_text, raw.allow_remote) {
            Ok(addr) => Some(addr),
            Err(problem) => {
                problems.push(problem);
                None
            }
        }
    };

    Some(SmtpConfig {
        target_text,
        target: target?,
        connections,
        messages,
        per_connection,
        size_bytes,
        recipients,
        from,
        to,
        pipelining,
        duration: Duration::from_secs(duration_secs),
        threads: threads.min(connections as usize),
        io,
        json_path,
        helo,
        allow_remote: raw.allow_remote,
    })
}

/// Parses an optional decimal option within `min..=max`, recording a problem
/// (and returning the default) when it is not.
pub(crate) fn number(
    value: &Option<String>,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
    problems: &mut Vec<String>,
) -> u64 {
    let Some(text) = value else {
        return default;
    };
    match text.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => n,
        _ => {
            problems.push(format!(
                "{name} `{text}`: expected a whole number from {min} to {max}"
            ));
            default
        }
    }
}

/// A mailbox for `MAIL FROM:<..>` / `RCPT TO:<..>`: local@domain, printable,
/// nothing that would break the command line or the header.
fn check_address(address: &str, name: &str, problems: &mut Vec<String>) {
    let printable = address
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"<>\"\\,;".contains(&b));
    let shape = match address.rsplit_once('@') {
        Some((local, domain)) => !local.is_empty() && !domain.is_empty(),
        None => false,
    };
    if !printable || !shape || address.len() > ADDRESS_BYTES_MAX {
        problems.push(format!(
            "{name} `{address}`: expected local@domain, at most {ADDRESS_BYTES_MAX} printable ASCII characters without <>\",;\\ or spaces"
        ));
    }
}

/// `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT`; anything else only with
/// `--allow-remote` (resolved once, here). Loopback means 127.0.0.0/8 or ::1.
pub(crate) fn resolve_target(text: &str, allow_remote: bool) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        if allow_remote || is_loopback(addr.ip()) {
            return Ok(addr);
        }
        return Err(format!(
            "refusing non-loopback target {text} (pass --allow-remote)"
        ));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("--target `{text}`: expected HOST:PORT"));
    };
    let Ok(port) = port.parse::<u16>() else {
        return Err(format!("--target `{text}`: bad port `{port}`"));
    };
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if !allow_remote {
        return Err(format!(
            "refusing non-loopback target {text} (pass --allow-remote)"
        ));
    }
    match (host, port).to_socket_addrs().map(|mut addrs| addrs.next()) {
        Ok(Some(addr)) => Ok(addr),
        Ok(None) => Err(format!("--target `{text}`: no address found")),
        Err(e) => Err(format!("--target `{text}`: {e}")),
    }
}

pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smtp(args: &[&str]) -> Result<SmtpConfig, ArgsError> {
        let mut all = vec!["smtp"];
        all.extend_from_slice(args);
        match parse_args(all, 2)? {
            Command::Smtp(c) => Ok(*c),
            Command::Help => panic!("unexpected help"),
        }
    }

    fn problems(args: &[&str]) -> Vec<String> {
        match smtp(args) {
            Err(ArgsError::Invalid(p)) => p,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = smtp(&["--target", "127.0.0.1:2525"]).unwrap();
        assert_eq!(c.target, "127.0.0.1:2525".parse().unwrap());
        assert_eq!(c.connections, 20);
        assert_eq!(c.messages, 20_000);
        assert_eq!(c.per_connection, None);
        assert_eq!(c.size_bytes, 2048);
        assert_eq!(c.recipients, 1);
        assert_eq!(c.from, "sender@load.test");
        assert_eq!(c.to, ["rcpt@example.test"]);
        assert_eq!(c.pipelining, PipeliningMode::Auto);
        assert_eq!(c.duration, Duration::from_secs(300));
        assert_eq!(c.threads, 2);
        assert_eq!(c.io, IoMode::Epoll);
        assert_eq!(c.json_path, None);
        assert_eq!(c.helo, "loadgen.test");
    }

    #[test]
    fn every_option_both_spellings() {
        let c = smtp(&[
            "--target=[::1]:25",
            "--connections",
            "3",
            "--messages=10",
            "--per-connection",
            "2",
            "--size=4096",
            "--recipients",
            "2",
            "--from=a@b.test",
            "--to",
            "x@y.test",
            "--to=z@y.test",
            "--no-pipelining",
            "--duration-secs",
            "5",
            "--threads=8",
            "--io=blocking",
            "--json",
            "out.json",
            "--helo",
            "client.test",
        ])
        .unwrap();
        assert_eq!(c.target, "[::1]:25".parse().unwrap());
        assert_eq!(
            (c.connections, c.messages, c.per_connection),
            (3, 10, Some(2))
        );
        assert_eq!((c.size_bytes, c.recipients), (4096, 2));
        assert_eq!(c.from, "a@b.test");
        assert_eq!(c.to, ["x@y.test", "z@y.test"]);
        assert_eq!(c.pipelining, PipeliningMode::Never);
        assert_eq!(c.duration, Duration::from_secs(5));
        assert_eq!(c.threads, 3, "threads are capped at the connection count");
        assert_eq!(c.io, IoMode::Blocking);
        assert_eq!(c.json_path, Some(PathBuf::from("out.json")));
        assert_eq!(c.helo, "client.test");
        assert_eq!(
            smtp(&["--target=localhost:2525", "--pipelining"])
                .unwrap()
                .pipelining,
            PipeliningMode::Always
        );
    }

    #[test]
    fn localhost_maps_to_ipv4_loopback() {
        let c = smtp(&["--target", "LocalHost:2525"]).unwrap();
        assert_eq!(c.target, "127.0.0.1:2525".parse().unwrap());
        assert!(
            smtp(&["--target", "127.9.8.7:1"]).is_ok(),
            "all of 127/8 is loopback"
        );
        assert!(smtp(&["--target", "[::ffff:127.0.0.1]:1"]).is_ok());
    }

    #[test]
    fn refuses_remote_targets_without_the_flag() {
        for target in [
            "10.0.0.1:25",
            "[2001:db8::1]:25",
            "mx.example.com:25",
            "0.0.0.0:25",
        ] {
            let p = problems(&["--target", target]);
            assert!(
                p.iter().any(|m| m.contains("refusing non-loopback")),
                "{target}: {p:?}"
            );
        }
        let c = smtp(&["--target", "10.0.0.1:25", "--allow-remote"]).unwrap();
        assert_eq!(c.target, "10.0.0.1:25".parse().unwrap());
        assert!(c.allow_remote);
    }

    #[test]
    fn bad_values_are_all_reported_at_once() {
        let p = problems(&[
            "--connections",
            "0",
            "--messages",
            "-5",
            "--size",
            "10",
            "--recipients",
            "101",
            "--io",
            "uring",
            "--from",
            "no-at-sign",
            "--to",
            "a b@c",
        ]);
        let expect = [
            "--connections",
            "--messages",
            "--size",
            "--recipients",
            "--io",
            "--from",
            "--to",
            "--target",
        ];
        for name in expect {
            assert!(
                p.iter().any(|m| m.contains(name)),
                "no problem about {name} in {p:?}"
            );
        }
        assert_eq!(p.len(), expect.len(), "{p:?}");
    }

    #[test]
    fn malformed_command_lines() {
        assert_eq!(
            parse_args(Vec::<String>::new(), 1),
            Err(ArgsError::MissingCommand)
        );
        assert_eq!(
            parse_args(["imap"], 1),
            Err(ArgsError::UnknownCommand("imap".into()))
        );
        assert_eq!(parse_args(["--help"], 1), Ok(Command::Help));
        assert_eq!(
            parse_args(["smtp", "--target", "x", "-h"], 1),
            Ok(Command::Help)
        );
        let p = problems(&[
            "--target",
            "127.0.0.1:25",
            "--bogus",
            "--pipelining=yes",
            "--messages",
        ]);
        assert_eq!(
            p,
            [
                "unknown option `--bogus`",
                "--pipelining takes no value",
                "--messages needs a value"
            ]
        );
        let p = problems(&["--target", "127.0.0.1:25", "--size", "1", "--size", "2"]);
        assert!(
            p.iter().any(|m| m == "--size given more than once"),
            "{p:?}"
        );
        assert!(problems(&["--target", "127.0.0.1"])
            .iter()
            .any(|m| m.contains("HOST:PORT")));
        assert!(problems(&["--target", "localhost:99999"])
            .iter()
            .any(|m| m.contains("bad port")));
    }

    #[test]
    fn size_minimum_depends_on_the_longest_address() {
        let long = format!("{}@example.test", "x".repeat(200));
        let short_ok = smtp(&["--target", "127.0.0.1:25", "--size", "300"]);
        assert!(short_ok.is_ok(), "{short_ok:?}");
        let p = problems(&["--target", "127.0.0.1:25", "--size", "300", "--to", &long]);
        assert!(
            p.iter().any(|m| m.contains("--size 300 is too small")),
            "{p:?}"
        );
    }
}
