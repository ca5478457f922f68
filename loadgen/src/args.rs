//! Command line of `ringmail-loadgen smtp`: raw option strings first, then a
//! validated [`SmtpConfig`] with every problem reported at once. No argument
//! crate: the grammar is `ringmail-loadgen smtp --name value|--name=value|--flag ...`.
//! Settings are grouped: target and load shape, messages ([`SizeSpec`]),
//! [`TlsSettings`], [`AuthSettings`], open-loop rate, [`OutputOptions`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::corpus::EmlCorpus;
use crate::mailrun::{Credentials, Secret};
use crate::message::{MessageTemplate, SizeSpec, SEQUENCE_MAX, SIZE_CHOICES_MAX, SIZE_WEIGHT_MAX};
use crate::output::{OutputOptions, OUTPUT_USAGE};
use crate::rate::RATE_PER_SEC_MAX;
use crate::tls::{check_server_name, load_ca_file, TlsMode, TlsSettings};

const USAGE_HEAD: &str = "\
usage: ringmail-loadgen smtp --target HOST:PORT [options]

  --target HOST:PORT     server to load (loopback only unless --allow-remote)
  --connections N        concurrent SMTP sessions (default 20, max 10000)
  --messages N           messages in total (default 20000)
  --per-connection N     messages per session before QUIT + reconnect
                         (default: unlimited, one session per connection)
  --size BYTES           message size before dot-stuffing (default 2048)
  --size MIN-MAX         sizes uniform in MIN..=MAX, fixed per message number
  --size-dist S:W,...    sizes S with weights W, e.g. 1024:50,4096:30,65536:20
  --eml-dir DIR          send the DIR/*.eml files instead (cycled; CRLF and
                         dot-stuffing applied once at load; 512 MiB at most)
  --recipients N         RCPT TO per message (default 1, max 100)
  --from ADDR            envelope and header sender (default sender@load.test)
  --to ADDR              recipient, repeatable, used round-robin (default rcpt@example.test)
  --pipelining           always send MAIL+RCPT+DATA in one write
  --no-pipelining        never pipeline
                         (default: pipeline if the EHLO reply lists PIPELINING)
  --starttls             EHLO, STARTTLS, TLS handshake, EHLO again
  --tls                  TLS from the first byte (port 465 style)
  --tls-ca FILE          verify the server's certificate against these PEM roots
                         (default: accept any certificate, still encrypted)
  --tls-name NAME        SNI and certificate name (default: the --target host)
  --auth PLAIN|LOGIN     authenticate each session (after TLS, if any)
  --auth-user USER:PASS  credentials, repeatable, used round-robin over the
                         connections (--auth defaults to PLAIN when only this is given)
  --rate N               open loop: N messages/s in total, spread over the threads
                         (default: closed loop, each connection as fast as replies come)
  --duration-secs N      hard stop (default 300)
  --threads N            worker threads, one pinned per core (default: CPUs)
  --io epoll|blocking    event loop per thread (default) or a thread per connection
  --helo NAME            EHLO name and Message-ID domain (default loadgen.test)
  --allow-remote         allow a non-loopback target
";

const USAGE_TAIL: &str = "
  -h, --help             this text

Stops at --messages or --duration-secs, whichever comes first.";

const SMTP_USAGE_PARTS: [&str; 3] = [USAGE_HEAD, OUTPUT_USAGE, USAGE_TAIL];
const SMTP_USAGE_ARRAY: [u8; usage_len(&SMTP_USAGE_PARTS)] = concat_usage(&SMTP_USAGE_PARTS);

/// Help text of `ringmail-loadgen smtp` (the output options included).
pub const SMTP_USAGE: &str = match std::str::from_utf8(&SMTP_USAGE_ARRAY) {
    Ok(text) => text,
    Err(_) => panic!("usage text is not UTF-8"),
};

/// Joins usage text pieces at compile time: `[u8; N]` with N the total length.
pub(crate) const fn concat_usage<const N: usize>(parts: &[&str]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut at = 0;
    let mut p = 0;
    while p < parts.len() {
        let bytes = parts[p].as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            out[at] = bytes[i];
            at += 1;
            i += 1;
        }
        p += 1;
    }
    assert!(at == N, "usage length mismatch");
    out
}

/// Total length of usage pieces, for [`concat_usage`].
pub(crate) const fn usage_len(parts: &[&str]) -> usize {
    let mut n = 0;
    let mut p = 0;
    while p < parts.len() {
        n += parts[p].len();
        p += 1;
    }
    n
}

pub const CONNECTIONS_MAX: u32 = 10_000;
pub const RECIPIENTS_MAX: u32 = 100;
pub const TO_ADDRESSES_MAX: usize = 10_000;
pub const ADDRESS_BYTES_MAX: usize = 254;
pub const HELO_BYTES_MAX: usize = 255;
pub const SIZE_BYTES_MAX: usize = 64 << 20;
pub const DURATION_SECS_MAX: u64 = 7 * 86_400;
pub const THREADS_MAX: usize = 1_024;
pub const AUTH_USERS_MAX: usize = 10_000;
/// Longest `--auth-user` login and password, each.
pub const CREDENTIAL_BYTES_MAX: usize = 255;

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

impl IoMode {
    pub fn name(self) -> &'static str {
        match self {
            IoMode::Epoll => "epoll",
            IoMode::Blocking => "blocking",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMechanism {
    /// `AUTH PLAIN <initial response>` (RFC 4616): one round trip.
    Plain,
    /// `AUTH LOGIN`, user name, password: three round trips.
    Login,
}

impl AuthMechanism {
    pub fn name(self) -> &'static str {
        match self {
            AuthMechanism::Plain => "PLAIN",
            AuthMechanism::Login => "LOGIN",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthSettings {
    pub mechanism: AuthMechanism,
    /// At least one; connection slot `i` uses `users[i % len]`.
    pub users: Vec<Credentials>,
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
    /// Message sizes, or the real messages to send.
    pub size: SizeSpec,
    pub recipients: u32,
    pub from: String,
    pub to: Vec<String>,
    pub pipelining: PipeliningMode,
    pub duration: Duration,
    pub threads: usize,
    pub io: IoMode,
    pub helo: String,
    pub allow_remote: bool,
    pub tls: Option<TlsSettings>,
    pub auth: Option<AuthSettings>,
    /// Open loop: messages per second in total; `None`: closed loop.
    pub rate_per_sec: Option<u64>,
    pub output: OutputOptions,
}

/// Options as strings, before validation.
#[derive(Default, Debug)]
struct RawSmtpArgs {
    target: Option<String>,
    connections: Option<String>,
    messages: Option<String>,
    per_connection: Option<String>,
    size: Option<String>,
    size_dist: Option<String>,
    eml_dir: Option<String>,
    recipients: Option<String>,
    from: Option<String>,
    to: Vec<String>,
    pipelining: Option<bool>,
    duration_secs: Option<String>,
    threads: Option<String>,
    io: Option<String>,
    helo: Option<String>,
    allow_remote: bool,
    starttls: bool,
    tls: bool,
    tls_ca: Option<String>,
    tls_name: Option<String>,
    auth: Option<String>,
    auth_users: Vec<Secret>,
    rate: Option<String>,
    output: OutputOptions,
    help: bool,
}

/// Parses the arguments after the program name (the first is the command
/// word, `smtp`). `cpus` is the default thread count.
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
            "--starttls" => flag(&mut raw, &mut problems, |r| r.starttls = true),
            "--tls" => flag(&mut raw, &mut problems, |r| r.tls = true),
            "--target" | "--connections" | "--messages" | "--per-connection" | "--size"
            | "--size-dist" | "--eml-dir" | "--recipients" | "--from" | "--to"
            | "--duration-secs" | "--threads" | "--io" | "--helo" | "--tls-ca" | "--tls-name"
            | "--auth" | "--auth-user" | "--rate" => {
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
                    "--size-dist" => &mut raw.size_dist,
                    "--eml-dir" => &mut raw.eml_dir,
                    "--recipients" => &mut raw.recipients,
                    "--from" => &mut raw.from,
                    "--duration-secs" => &mut raw.duration_secs,
                    "--threads" => &mut raw.threads,
                    "--io" => &mut raw.io,
                    "--helo" => &mut raw.helo,
                    "--tls-ca" => &mut raw.tls_ca,
                    "--tls-name" => &mut raw.tls_name,
                    "--auth" => &mut raw.auth,
                    "--rate" => &mut raw.rate,
                    "--auth-user" => {
                        raw.auth_users.push(Secret::new(value));
                        continue;
                    }
                    _ => {
                        raw.to.push(value);
                        continue;
                    }
                };
                if slot.replace(value).is_some() {
                    problems.push(format!("{name} given more than once"));
                }
            }
            _ => {
                let mut rest = &mut args as &mut dyn Iterator<Item = String>;
                if !raw
                    .output
                    .take(&name, inline.clone(), &mut rest, &mut problems)
                {
                    problems.push(format!("unknown option `{arg}`"));
                }
            }
        }
    }
    (raw, problems)
}

fn validate(raw: RawSmtpArgs, cpus: usize, problems: &mut Vec<String>) -> Option<SmtpConfig> {
    let tls = tls_settings(&raw, raw.target.as_deref().unwrap_or(""), problems);
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
    let rate_per_sec = raw
        .rate
        .as_ref()
        .map(|_| number(&raw.rate, "--rate", 1, 1, RATE_PER_SEC_MAX, problems));

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

    let template = MessageTemplate {
        from: from.clone(),
        id_domain: helo.clone(),
        run_id: 0,
    };
    let longest_to = to
        .iter()
        .max_by_key(|a| a.len())
        .map(String::as_str)
        .unwrap_or("");
    let size = size_spec(
        &raw.size,
        &raw.size_dist,
        &raw.eml_dir,
        template.size_bytes_min(longest_to),
        problems,
    );

    let target = crate::mailrun::target(&raw.target, raw.allow_remote, problems);
    let target_text = raw.target.unwrap_or_default();
    let auth = auth_settings(raw.auth.as_deref(), raw.auth_users, problems);

    Some(SmtpConfig {
        target_text,
        target: target?,
        connections,
        messages,
        per_connection,
        size: size?,
        recipients,
        from,
        to,
        pipelining,
        duration: Duration::from_secs(duration_secs),
        threads: threads.min(connections as usize),
        io,
        helo,
        allow_remote: raw.allow_remote,
        tls,
        auth,
        rate_per_sec,
        output: raw.output,
    })
}

/// `--size N`, `--size MIN-MAX`, `--size-dist S:W,...` or `--eml-dir DIR`
/// (at most one); generated sizes must fit the headers (`size_min`).
fn size_spec(
    size: &Option<String>,
    size_dist: &Option<String>,
    eml_dir: &Option<String>,
    size_min: usize,
    problems: &mut Vec<String>,
) -> Option<SizeSpec> {
    let given = [size.is_some(), size_dist.is_some(), eml_dir.is_some()];
    if given.iter().filter(|&&g| g).count() > 1 {
        problems.push("give only one of --size, --size-dist and --eml-dir".into());
        return None;
    }
    let parse_size = |text: &str| {
        text.parse::<usize>()
            .ok()
            .filter(|n| (1..=SIZE_BYTES_MAX).contains(n))
    };
    let spec = if let Some(dir) = eml_dir {
        match EmlCorpus::load(std::path::Path::new(dir)) {
            Ok(corpus) => SizeSpec::Eml(Arc::new(corpus)),
            Err(e) => {
                problems.push(e.to_string());
                return None;
            }
        }
    } else if let Some(list) = size_dist {
        let mut choices = Vec::new();
        for item in list.split(',') {
            let parsed = item.split_once(':').and_then(|(s, w)| {
                let weight = w
                    .parse::<u32>()
                    .ok()
                    .filter(|w| (1..=SIZE_WEIGHT_MAX).contains(w))?;
                Some((parse_size(s)?, weight))
            });
            match parsed {
                Some(choice) => choices.push(choice),
                None => {
                    problems.push(format!(
                        "--size-dist `{item}`: expected SIZE:WEIGHT with SIZE 1-{SIZE_BYTES_MAX} and WEIGHT 1-{SIZE_WEIGHT_MAX}"
                    ));
                    return None;
                }
            }
        }
        if choices.len() > SIZE_CHOICES_MAX {
            problems.push(format!("--size-dist: at most {SIZE_CHOICES_MAX} sizes"));
            return None;
        }
        SizeSpec::Weighted(choices)
    } else {
        let text = size.as_deref().unwrap_or("2048");
        let range = text
            .split_once('-')
            .map(|(a, b)| (parse_size(a), parse_size(b)));
        match (range, parse_size(text)) {
            (None, Some(n)) => SizeSpec::Fixed(n),
            (Some((Some(min), Some(max))), _) if min <= max => SizeSpec::Uniform { min, max },
            _ => {
                problems.push(format!(
                    "--size `{text}`: expected BYTES or MIN-MAX, each 1-{SIZE_BYTES_MAX}, MIN <= MAX"
                ));
                return None;
            }
        }
    };
    if !matches!(spec, SizeSpec::Eml(_)) {
        let (smallest, _) = spec.bounds();
        if smallest < size_min {
            let name = if size_dist.is_some() {
                "--size-dist"
            } else {
                "--size"
            };
            problems.push(format!(
                "{name}: {smallest} is too small for the headers with these addresses (at least {size_min})"
            ));
        }
    }
    Some(spec)
}

fn tls_settings(
    raw: &RawSmtpArgs,
    target_text: &str,
    problems: &mut Vec<String>,
) -> Option<TlsSettings> {
    let mode = match (raw.starttls, raw.tls) {
        (true, true) => {
            problems.push("give only one of --starttls and --tls".into());
            return None;
        }
        (true, false) => TlsMode::StartTls,
        (false, true) => TlsMode::Implicit,
        (false, false) => {
            if raw.tls_ca.is_some() || raw.tls_name.is_some() {
                problems.push("--tls-ca and --tls-name need --starttls or --tls".into());
            }
            return None;
        }
    };
    let server_name = match &raw.tls_name {
        Some(name) => name.clone(),
        None => target_host(target_text).to_string(),
    };
    if let Err(e) = check_server_name(&server_name) {
        // Only worth saying when the name was typed or the target is valid.
        if raw.tls_name.is_some() || !server_name.is_empty() {
            problems.push(e.to_string());
        }
    }
    let ca_file = raw.tls_ca.as_ref().map(PathBuf::from);
    let ca_certs = match &ca_file {
        Some(path) => match load_ca_file(path) {
            Ok(certs) => certs,
            Err(e) => {
                problems.push(e.to_string());
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    Some(TlsSettings {
        mode,
        server_name,
        ca_file,
        ca_certs,
    })
}

/// The host part of `HOST:PORT` / `[IPv6]:PORT`.
fn target_host(target: &str) -> &str {
    let host = target.rsplit_once(':').map_or(target, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

fn auth_settings(
    mechanism: Option<&str>,
    users: Vec<Secret>,
    problems: &mut Vec<String>,
) -> Option<AuthSettings> {
    let mechanism = match mechanism {
        None if users.is_empty() => return None,
        None => AuthMechanism::Plain,
        Some(m) if m.eq_ignore_ascii_case("plain") => AuthMechanism::Plain,
        Some(m) if m.eq_ignore_ascii_case("login") => AuthMechanism::Login,
        Some(m) => {
            problems.push(format!("--auth `{m}`: expected PLAIN or LOGIN"));
            AuthMechanism::Plain
        }
    };
    if users.is_empty() {
        problems.push("--auth needs at least one --auth-user USER:PASSWORD".into());
    }
    if users.len() > AUTH_USERS_MAX {
        problems.push(format!(
            "--auth-user given {} times (at most {AUTH_USERS_MAX})",
            users.len()
        ));
    }
    let mut credentials = Vec::with_capacity(users.len());
    for (index, user) in users.into_iter().enumerate() {
        let usable = |s: &str| {
            !s.is_empty() && s.len() <= CREDENTIAL_BYTES_MAX && !s.chars().any(char::is_control)
        };
        // The password is never echoed, only the position of the bad entry.
        match user.expose().split_once(':') {
            Some((login, password)) if usable(login) && usable(password) && !login.contains(' ') => {
                credentials.push(Credentials {
                    login: login.to_string(),
                    password: Secret::new(password),
                })
            }
            _ => problems.push(format!(
                "--auth-user #{}: expected USER:PASSWORD, each 1-{CREDENTIAL_BYTES_MAX} bytes without control characters (no space in USER)",
                index + 1
            )),
        }
    }
    Some(AuthSettings {
        mechanism,
        users: credentials,
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

    #[test]
    fn usage_pieces_concatenate() {
        const PARTS: [&str; 3] = ["ab", "", "cde"];
        const BYTES: [u8; usage_len(&PARTS)] = concat_usage(&PARTS);
        assert_eq!(&BYTES, b"abcde");
    }

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
        assert_eq!(c.size, SizeSpec::Fixed(2048));
        assert_eq!(c.recipients, 1);
        assert_eq!(c.from, "sender@load.test");
        assert_eq!(c.to, ["rcpt@example.test"]);
        assert_eq!(c.pipelining, PipeliningMode::Auto);
        assert_eq!(c.duration, Duration::from_secs(300));
        assert_eq!(c.threads, 2);
        assert_eq!(c.io, IoMode::Epoll);
        assert_eq!(c.output, OutputOptions::default());
        assert_eq!(c.helo, "loadgen.test");
        assert_eq!(
            (c.tls.clone(), c.auth.clone(), c.rate_per_sec),
            (None, None, None)
        );
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
            "--quiet",
            "--rate=500",
        ])
        .unwrap();
        assert_eq!(c.target, "[::1]:25".parse().unwrap());
        assert_eq!(
            (c.connections, c.messages, c.per_connection),
            (3, 10, Some(2))
        );
        assert_eq!((c.size.clone(), c.recipients), (SizeSpec::Fixed(4096), 2));
        assert_eq!(c.from, "a@b.test");
        assert_eq!(c.to, ["x@y.test", "z@y.test"]);
        assert_eq!(c.pipelining, PipeliningMode::Never);
        assert_eq!(c.duration, Duration::from_secs(5));
        assert_eq!(c.threads, 3, "threads are capped at the connection count");
        assert_eq!(c.io, IoMode::Blocking);
        assert_eq!(c.output.json_path, Some(PathBuf::from("out.json")));
        assert!(c.output.quiet);
        assert_eq!(c.rate_per_sec, Some(500));
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
            p.iter().any(|m| m.contains("--size: 300 is too small")),
            "{p:?}"
        );
    }

    #[test]
    fn usage_includes_the_output_options_and_every_smtp_option() {
        assert!(SMTP_USAGE.contains(OUTPUT_USAGE));
        assert!(SMTP_USAGE.starts_with("usage: ringmail-loadgen smtp"));
        for option in [
            "--size-dist",
            "--eml-dir",
            "--starttls",
            "--tls ",
            "--tls-ca",
            "--tls-name",
            "--auth ",
            "--auth-user",
            "--rate",
            "--json",
            "--quiet",
        ] {
            assert!(SMTP_USAGE.contains(option), "{option}");
        }
    }

    #[test]
    fn readme_shows_the_usage_text() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
        for line in SMTP_USAGE.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                readme.contains(line),
                "README lacks the usage line {line:?}"
            );
        }
    }

    #[test]
    fn size_ranges_and_distributions() {
        let base = ["--target", "127.0.0.1:25"];
        let with = |extra: &[&str]| {
            let mut all = base.to_vec();
            all.extend_from_slice(extra);
            smtp(&all)
        };
        assert_eq!(
            with(&["--size", "1000-5000"]).unwrap().size,
            SizeSpec::Uniform {
                min: 1000,
                max: 5000
            }
        );
        assert_eq!(
            with(&["--size-dist", "1024:50,4096:30,65536:20"])
                .unwrap()
                .size,
            SizeSpec::Weighted(vec![(1024, 50), (4096, 30), (65536, 20)])
        );
        for bad in [
            &["--size", "5000-1000"][..],
            &["--size", "1-"],
            &["--size", "0"],
            &["--size-dist", "1024"],
            &["--size-dist", "1024:0"],
            &["--size-dist", "1024:5,x:1"],
            &["--size", "1000", "--size-dist", "1024:1"],
        ] {
            let mut all = base.to_vec();
            all.extend_from_slice(bad);
            assert_eq!(problems(&all).len(), 1, "{bad:?}: {:?}", problems(&all));
        }
        // The smallest generated size must still fit the headers.
        let p = problems(&["--target", "127.0.0.1:25", "--size-dist", "100:1,4096:1"]);
        assert!(p[0].contains("--size-dist: 100 is too small"), "{p:?}");
        let p = problems(&["--target", "127.0.0.1:25", "--size", "100-4096"]);
        assert!(p[0].contains("--size: 100 is too small"), "{p:?}");
    }

    #[test]
    fn eml_dir_is_loaded_at_parse_time() {
        let dir =
            std::env::temp_dir().join(format!("ringmail-loadgen-args-eml-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let dir_text = dir.display().to_string();
        let p = problems(&["--target", "127.0.0.1:25", "--eml-dir", &dir_text]);
        assert!(p[0].contains("no *.eml files"), "{p:?}");
        std::fs::write(dir.join("one.eml"), "Subject: x\n\nhi\n").unwrap();
        let c = smtp(&["--target", "127.0.0.1:25", "--eml-dir", &dir_text]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let SizeSpec::Eml(corpus) = &c.size else {
            panic!("{:?}", c.size)
        };
        assert_eq!(corpus.get(7), b"Subject: x\r\n\r\nhi\r\n");
    }

    #[test]
    fn tls_options() {
        let c = smtp(&["--target", "127.0.0.1:2587", "--starttls"]).unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.mode, TlsMode::StartTls);
        assert_eq!(tls.server_name, "127.0.0.1", "default: the target host");
        assert_eq!(tls.ca_file, None);
        let c = smtp(&["--target", "[::1]:465", "--tls", "--tls-name", "mail.test"]).unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(
            (tls.mode, tls.server_name.as_str()),
            (TlsMode::Implicit, "mail.test")
        );
        assert_eq!(target_host("[::1]:465"), "::1");
        assert_eq!(target_host("localhost:25"), "localhost");
    }

    #[test]
    fn auth_options_and_secrets() {
        let c = smtp(&[
            "--target",
            "127.0.0.1:25",
            "--auth",
            "login",
            "--auth-user",
            "alice@x.test:pw:with:colons",
            "--auth-user=bob:secret",
        ])
        .unwrap();
        let auth = c.auth.clone().unwrap();
        assert_eq!(auth.mechanism, AuthMechanism::Login);
        assert_eq!(auth.users.len(), 2);
        assert_eq!(auth.users[0].login, "alice@x.test");
        assert_eq!(auth.users[0].password.expose(), "pw:with:colons");
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("secret") && !debug.contains("pw:with"),
            "{debug}"
        );
        assert!(debug.contains("***"));
        // --auth-user alone means PLAIN.
        let c = smtp(&["--target", "127.0.0.1:25", "--auth-user", "a:b"]).unwrap();
        assert_eq!(c.auth.unwrap().mechanism, AuthMechanism::Plain);
    }

    #[test]
    fn every_new_problem_is_reported_at_once() {
        let p = problems(&[
            "--target",
            "127.0.0.1:25",
            "--starttls",
            "--tls",
            "--auth",
            "cram-md5",
            "--auth-user",
            "nopassword",
            "--auth-user",
            "user:hunter2\u{7}",
            "--rate",
            "0",
            "--size-dist",
            "12:0",
            "--html",
        ]);
        let expect = [
            "--starttls and --tls",
            "--auth `cram-md5`",
            "--auth-user #1",
            "--auth-user #2",
            "--rate",
            "--size-dist",
            "--html needs a value",
        ];
        for what in expect {
            assert!(
                p.iter().any(|m| m.contains(what)),
                "no problem about {what} in {p:?}"
            );
        }
        assert_eq!(p.len(), expect.len(), "{p:?}");
        assert!(
            !p.iter().any(|m| m.contains("hunter2")),
            "passwords are never echoed"
        );
        let p = problems(&[
            "--target",
            "127.0.0.1:25",
            "--tls-name",
            "x.test",
            "--auth",
            "plain",
            "--tls",
            "--tls-ca",
            "/nonexistent/ca.pem",
            "--tls-name",
            "y",
        ]);
        let expect = [
            "--tls-name given more than once",
            "--auth needs at least one",
            "--tls-ca /nonexistent/ca.pem",
        ];
        for what in expect {
            assert!(
                p.iter().any(|m| m.contains(what)),
                "no problem about {what} in {p:?}"
            );
        }
        assert_eq!(p.len(), expect.len(), "{p:?}");
        let p = problems(&[
            "--target",
            "127.0.0.1:25",
            "--tls-ca",
            "x.pem",
            "--tls-name",
            "bad name!",
        ]);
        assert_eq!(p, ["--tls-ca and --tls-name need --starttls or --tls"]);
        let p = problems(&[
            "--target",
            "127.0.0.1:25",
            "--tls",
            "--tls-name",
            "bad name!",
        ]);
        assert!(p[0].contains("--tls-name `bad name!`"), "{p:?}");
    }
}
