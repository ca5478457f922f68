//! Configuration in two stages.
//!
//! Stage one, [`raw`]: the TOML text is parsed into `RawConfig`, whose every field is
//! optional and whose unknown keys are collected (not rejected) so they can be warned about.
//! Stage two, [`Config::from_raw`]: every value is checked and defaulted into [`Config`],
//! grouped by subsystem; *all* errors are collected and reported at once.
//!
//! With no file at all, [`Config::defaults`] gives the built-in defaults a newcomer gets from
//! `ringmail serve`: data dir `./ringmail-data`, SMTP on 127.0.0.1:2525, local domain
//! `localhost`.

mod cores;
mod raw;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use cores::{CoreOverride, CoresConfig, ExecutorSettings};
pub use raw::RawConfig;

use crate::net::tls::{CertFiles, TlsSettings, SNI_CERTIFICATES_MAX};

/// Errors of loading a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: TOML syntax: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: {} error(s):\n{}", problems.len(), Problems(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

struct Problems<'a>(&'a [String]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// Which executors to run: every online CPU, or an explicit list of CPU ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cores {
    All,
    List(Vec<usize>),
}

/// How an executor waits for a batch's fdatasync (`store.fsync_wait`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncWait {
    /// Through io_uring: the core serves other sessions while the disk flushes.
    IoUring,
    /// On the executor thread: the core pauses for each flush, and saves the wake-ups.
    Inline,
}

/// The value named by `value` among two `choices` (the first when unset); an unknown name
/// is a problem naming `key` and both choices (the first is used meanwhile).
fn one_of<T: Copy>(
    problems: &mut Vec<String>,
    key: &str,
    value: Option<&str>,
    choices: [(&str, T); 2],
) -> T {
    let [(a, first), (b, _)] = choices;
    match value {
        None => first,
        Some(v) => match choices.iter().find(|(name, _)| *name == v) {
            Some(&(_, t)) => t,
            None => {
                problems.push(format!("{key} = {v:?}: expected \"{a}\" or \"{b}\""));
                first
            }
        },
    }
}

/// Whether a commit waits for fdatasync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Group commit: a 250 is sent only after fdatasync.
    Always,
    /// Write but never sync: for benchmarks only; a crash loses acknowledged mail.
    Never,
}

/// The largest `server.cpu_wakeup_us_max`: the kernel's PM QoS default (2 000 s, an `i32` of
/// µs), which asks for nothing.
pub const CPU_WAKEUP_US_MAX_LIMIT: u64 = 2_000_000_000;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub hostname: String,
    pub data_dir: PathBuf,
    /// On SIGTERM/SIGINT, how long sessions may take to finish their transaction.
    pub timeout_ms_drain: u64,
    /// Hold idle CPUs to states this quick to leave while serving (`runtime::idle`);
    /// None: leave the system's choice.
    pub cpu_wakeup_us_max: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// Port 25 (MX): STARTTLS is offered when TLS is on; AUTH only after it (or with
    /// `allow_plaintext_auth`), and an authenticated client may relay.
    pub listen: Vec<SocketAddr>,
    pub allow_plaintext_auth: bool,
    pub max_message_bytes: usize,
    pub max_recipients: usize,
    pub timeout_ms_command: u64,
    pub timeout_ms_data: u64,
    pub connections_per_core_max: usize,
    pub errors_max: usize,
}

/// Message submission (RFC 6409): AUTH before MAIL; limits as `[smtp]`.
#[derive(Debug, Clone)]
pub struct SubmissionConfig {
    /// Port 587: STARTTLS.
    pub listen: Vec<SocketAddr>,
    /// Port 465: implicit TLS (RFC 8314).
    pub listen_tls: Vec<SocketAddr>,
    pub allow_plaintext_auth: bool,
}

/// IMAP (RFC 9051 / 3501).
#[derive(Debug, Clone)]
pub struct ImapConfig {
    pub listen: Vec<SocketAddr>,
    /// IMAPS (993): implicit TLS.
    pub listen_tls: Vec<SocketAddr>,
    /// LOGIN and AUTHENTICATE PLAIN without TLS (loopback testing only).
    pub allow_plaintext_auth: bool,
    /// Autologout of an idle session (RFC 9051 §5.4: at least 30 minutes in production).
    pub timeout_ms_idle: u64,
    /// Longest command line, literals excluded.
    pub line_bytes_max: usize,
    /// Largest literal outside APPEND (APPEND is bounded by `smtp.max_message_bytes`).
    pub literal_bytes_max: usize,
    pub connections_per_core_max: usize,
}

/// POP3 (RFC 1939).
#[derive(Debug, Clone)]
pub struct Pop3Config {
    pub listen: Vec<SocketAddr>,
    /// POP3S (995): implicit TLS.
    pub listen_tls: Vec<SocketAddr>,
    /// USER/PASS and AUTH PLAIN without TLS (loopback testing only).
    pub allow_plaintext_auth: bool,
    /// RFC 1939 §3: at least 10 minutes.
    pub timeout_ms_idle: u64,
    pub line_bytes_max: usize,
    pub connections_per_core_max: usize,
}

/// Outbound delivery of queued mail (`[relay]`).
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The port remote MX hosts are contacted on (25; tests point it at loopback sinks).
    pub port: u16,
    /// Send everything to this host (`host:port`) instead of looking up MX records.
    pub smarthost: Option<(String, u16)>,
    /// Delays between attempts, in ms; the last one repeats. Each gets ±10 % jitter.
    pub retry_ms: Vec<u64>,
    /// A message still undelivered this long after arrival bounces.
    pub age_ms_max: u64,
    /// After this long undelivered, the sender gets one delay notice (RFC 3461 DELAY).
    pub delay_notice_ms: u64,
    /// Simultaneous connections per destination domain per core.
    pub connections_per_domain_max: usize,
    /// Domains whose MX certificate must verify (else delivery is deferred); lowercase.
    pub tls_verify_domains: Vec<String>,
    /// Trusted roots for verified deliveries (PEM bundle).
    pub tls_ca_file: PathBuf,
}

/// The outbound stub resolver (`[dns]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// `None`: the `nameserver` lines of /etc/resolv.conf, read when the resolver starts
    /// (`dns::Resolver::new`), so a machine without one only fails when mail goes out.
    pub servers: Option<Vec<SocketAddr>>,
    /// Per try, per server.
    pub timeout_ms: u64,
    /// Rounds over the server list.
    pub attempts: u32,
    /// Answers cached per core (0: no cache).
    pub cache_entries_max: usize,
}

/// The Prometheus scrape endpoint (`[metrics]`), served by core 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Empty (the default): no endpoint.
    pub listen: Vec<SocketAddr>,
}

/// Logins (IMAP, POP3; SMTP AUTH later).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// A failed login is answered only after this delay.
    pub failure_delay_ms: u64,
    /// Failed logins on one connection before it is closed.
    pub failures_max: usize,
}

#[derive(Debug, Clone)]
pub struct DomainsConfig {
    /// ASCII-lowercased.
    pub local: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub fsync: FsyncPolicy,
    pub fsync_wait: FsyncWait,
    pub blob_segment_bytes_max: u64,
    pub meta_segment_bytes_max: u64,
    pub batch_bytes_max: usize,
    /// Write an index checkpoint after this many meta-log bytes (0: only at shutdown).
    pub checkpoint_interval_meta_bytes: u64,
    /// ...and after this many blob-log bytes (0: only at shutdown).
    pub checkpoint_interval_blob_bytes: u64,
    /// Group-commit window (`[cores] group_commit_window_us`): how long a commit waits for
    /// more appenders before it writes and syncs (0: at once).
    pub commit_window_us: u64,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    /// `[cores]`: executors, task queues, connection limits and buffers.
    pub cores: CoresConfig,
    pub smtp: SmtpConfig,
    pub submission: SubmissionConfig,
    pub imap: ImapConfig,
    pub pop3: Pop3Config,
    /// `[tls]`: with no `cert`, the self-signed certificate generated at first start.
    pub tls: TlsSettings,
    pub relay: RelayConfig,
    pub auth: AuthConfig,
    pub domains: DomainsConfig,
    pub store: StoreSettings,
    pub dns: DnsConfig,
    pub metrics: MetricsConfig,
    /// Keys that were present but unknown (`section.key`), for warnings.
    pub unknown_keys: Vec<String>,
    /// Other warnings (old key names that still work), one sentence each.
    pub warnings: Vec<String>,
}

pub const DEFAULT_SMTP_LISTEN: &str = "127.0.0.1:2525";
pub const DEFAULT_IMAP_LISTEN: &str = "127.0.0.1:2143";
pub const DEFAULT_POP3_LISTEN: &str = "127.0.0.1:2110";
pub const DEFAULT_SUBMISSION_LISTEN: &str = "127.0.0.1:2587";
pub const DEFAULT_SUBMISSIONS_LISTEN: &str = "127.0.0.1:2465";
pub const DEFAULT_IMAPS_LISTEN: &str = "127.0.0.1:2993";
pub const DEFAULT_POP3S_LISTEN: &str = "127.0.0.1:2995";
const MIB: u64 = 1024 * 1024;

impl Config {
    /// The built-in defaults (`ringmail serve` with no `--config`).
    pub fn defaults() -> Config {
        match Config::from_raw(RawConfig::default()) {
            Ok(c) => c,
            // The defaults are constants checked by a unit test.
            Err(problems) => unreachable!("built-in defaults invalid: {problems:?}"),
        }
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates TOML text (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw = RawConfig::parse(text).map_err(|message| ConfigError::Syntax {
            path: path.to_path_buf(),
            message,
        })?;
        Config::from_raw(raw).map_err(|problems| ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        })
    }

    /// Stage two: check every value, collect every problem.
    pub fn from_raw(raw: RawConfig) -> Result<Config, Vec<String>> {
        let unknown_keys = raw.unknown_keys();
        let mut problems = raw.problems;
        let mut warnings = Vec::new();
        let mut r = raw.known;

        let hostname = r.server.hostname.unwrap_or_else(default_hostname);
        if !valid_hostname(&hostname) {
            problems.push(format!(
                "server.hostname = {hostname:?}: not a valid host name (letters, digits, '-', '.')"
            ));
        }
        let data_dir = PathBuf::from(
            r.server
                .data_dir
                .unwrap_or_else(|| "./ringmail-data".into()),
        );
        if data_dir.as_os_str().is_empty() {
            problems.push("server.data_dir is empty".into());
        }
        let timeout_ms_drain = r.server.timeout_ms_drain.unwrap_or(10_000);
        let cpu_wakeup_us_max = match r.server.cpu_wakeup_us_max {
            None => None,
            Some(us) if us <= CPU_WAKEUP_US_MAX_LIMIT => Some(us as u32),
            Some(us) => {
                problems.push(format!(
                    "server.cpu_wakeup_us_max = {us}: at most {CPU_WAKEUP_US_MAX_LIMIT} (µs)"
                ));
                None
            }
        };

        let listen = parse_listen(
            "smtp.listen",
            r.smtp.listen,
            DEFAULT_SMTP_LISTEN,
            &mut problems,
        );
        let max_message_bytes = r.smtp.max_message_bytes.unwrap_or(26_214_400);
        if !(1024..=2048 * MIB).contains(&max_message_bytes) {
            problems.push(format!(
                "smtp.max_message_bytes = {max_message_bytes}: must be between 1024 and 2 GiB"
            ));
        }
        let max_recipients = r.smtp.max_recipients.unwrap_or(100);
        check_range(
            &mut problems,
            "smtp.max_recipients",
            max_recipients,
            1,
            100_000,
        );
        let timeout_ms_command = r.smtp.timeout_ms_command.unwrap_or(300_000);
        let timeout_ms_data = r.smtp.timeout_ms_data.unwrap_or(180_000);
        for (k, v) in [
            ("smtp.timeout_ms_command", timeout_ms_command),
            ("smtp.timeout_ms_data", timeout_ms_data),
        ] {
            check_range(&mut problems, k, v, 100, 3_600_000);
        }
        let connections_per_core_max = r.smtp.connections_per_core_max.unwrap_or(10_000);
        check_range(
            &mut problems,
            "smtp.connections_per_core_max",
            connections_per_core_max,
            1,
            1_000_000,
        );
        let errors_max = r.smtp.errors_max.unwrap_or(20);
        check_range(&mut problems, "smtp.errors_max", errors_max, 1, 1000);

        let submission = SubmissionConfig {
            listen: parse_listen(
                "submission.listen",
                r.submission.listen,
                DEFAULT_SUBMISSION_LISTEN,
                &mut problems,
            ),
            listen_tls: parse_listen(
                "submission.listen_tls",
                r.submission.listen_tls,
                DEFAULT_SUBMISSIONS_LISTEN,
                &mut problems,
            ),
            allow_plaintext_auth: r.submission.allow_plaintext_auth.unwrap_or(false),
        };
        let imap_listen = parse_listen(
            "imap.listen",
            r.imap.listen,
            DEFAULT_IMAP_LISTEN,
            &mut problems,
        );
        let imap_listen_tls = parse_listen(
            "imap.listen_tls",
            r.imap.listen_tls,
            DEFAULT_IMAPS_LISTEN,
            &mut problems,
        );
        let pop3_listen_tls = parse_listen(
            "pop3.listen_tls",
            r.pop3.listen_tls,
            DEFAULT_POP3S_LISTEN,
            &mut problems,
        );
        let tls = tls_settings(r.tls, &mut problems);
        let dns = dns_config(r.dns, &mut problems);
        let relay = relay_config(r.relay, &mut problems);
        let imap_timeout_ms_idle = r.imap.timeout_ms_idle.unwrap_or(30 * 60 * 1000);
        let pop3_listen = parse_listen(
            "pop3.listen",
            r.pop3.listen,
            DEFAULT_POP3_LISTEN,
            &mut problems,
        );
        let pop3_timeout_ms_idle = r.pop3.timeout_ms_idle.unwrap_or(10 * 60 * 1000);
        for (k, v) in [
            ("imap.timeout_ms_idle", imap_timeout_ms_idle),
            ("pop3.timeout_ms_idle", pop3_timeout_ms_idle),
        ] {
            // Below the RFC minimums (30 / 10 minutes) only for tests; see README.
            check_range(&mut problems, k, v, 100, 24 * 3_600_000);
        }
        let imap_line_bytes_max = r.imap.line_bytes_max.unwrap_or(64 * 1024);
        let imap_literal_bytes_max = r.imap.literal_bytes_max.unwrap_or(64 * 1024);
        let pop3_line_bytes_max = r.pop3.line_bytes_max.unwrap_or(512);
        for (k, v, lo, hi) in [
            (
                "imap.line_bytes_max",
                imap_line_bytes_max,
                1024,
                1024 * 1024,
            ),
            (
                "imap.literal_bytes_max",
                imap_literal_bytes_max,
                1024,
                16 * MIB,
            ),
            ("pop3.line_bytes_max", pop3_line_bytes_max, 255, 64 * 1024),
        ] {
            check_range(&mut problems, k, v, lo, hi);
        }
        let imap_connections_max = r.imap.connections_per_core_max.unwrap_or(10_000);
        let pop3_connections_max = r.pop3.connections_per_core_max.unwrap_or(10_000);
        for (k, v) in [
            ("imap.connections_per_core_max", imap_connections_max),
            ("pop3.connections_per_core_max", pop3_connections_max),
        ] {
            check_range(&mut problems, k, v, 1, 1_000_000);
        }
        let failure_delay_ms = r.auth.failure_delay_ms.unwrap_or(2000);
        if failure_delay_ms > 60_000 {
            problems.push(format!(
                "auth.failure_delay_ms = {failure_delay_ms}: at most 60000"
            ));
        }
        let failures_max = r.auth.failures_max.unwrap_or(3);
        check_range(&mut problems, "auth.failures_max", failures_max, 1, 100);

        let mut local = Vec::new();
        for d in r.domains.local.unwrap_or_else(|| vec!["localhost".into()]) {
            let d = d.to_ascii_lowercase();
            if !valid_hostname(&d) {
                problems.push(format!("domains.local: {d:?} is not a valid domain name"));
            } else if !local.contains(&d) {
                local.push(d);
            }
        }

        let fsync = one_of(
            &mut problems,
            "store.fsync",
            r.store.fsync.as_deref(),
            [
                ("always", FsyncPolicy::Always),
                ("never", FsyncPolicy::Never),
            ],
        );
        let fsync_wait = one_of(
            &mut problems,
            "store.fsync_wait",
            r.store.fsync_wait.as_deref(),
            [
                ("io_uring", FsyncWait::IoUring),
                ("inline", FsyncWait::Inline),
            ],
        );
        let blob_segment_bytes_max = r.store.blob_segment_bytes_max.unwrap_or(256 * MIB);
        let meta_segment_bytes_max = r.store.meta_segment_bytes_max.unwrap_or(64 * MIB);
        for (k, v) in [
            ("store.blob_segment_bytes_max", blob_segment_bytes_max),
            ("store.meta_segment_bytes_max", meta_segment_bytes_max),
        ] {
            if !(MIB..=4096 * MIB).contains(&v) {
                problems.push(format!("{k} = {v}: must be between 1 MiB and 4 GiB"));
            }
        }
        let batch_bytes_max = r.store.batch_bytes_max.unwrap_or(4 * MIB);
        if !(64 * 1024..=4 * MIB).contains(&batch_bytes_max) {
            problems.push(format!(
                "store.batch_bytes_max = {batch_bytes_max}: must be between 64 KiB and 4 MiB (larger single I/Os can hang, see tuning/README.md)"
            ));
        }

        let checkpoint_interval_meta_bytes =
            r.store.checkpoint_interval_meta_bytes.unwrap_or(64 * MIB);
        let checkpoint_interval_blob_bytes =
            r.store.checkpoint_interval_blob_bytes.unwrap_or(1024 * MIB);

        // The read buffer must hold the longest line a session waits for whole.
        let smtp_min = crate::smtp::Limits::new(&hostname, 0, 0).read_buffer_bytes_min() as u64;
        let read_buffer_bytes_min = smtp_min.max(pop3_line_bytes_max);
        let mut old_keys = raw::RawServer {
            cores: r.server.cores.take(),
            io_memory_bytes: r.server.io_memory_bytes.take(),
            spin_before_park_us: r.server.spin_before_park_us.take(),
            ..Default::default()
        };
        let cores = cores::validate(
            &mut old_keys,
            std::mem::take(&mut r.cores),
            read_buffer_bytes_min,
            &mut problems,
            &mut warnings,
        );

        let metrics = metrics_config(
            r.metrics,
            &[
                &listen,
                &submission.listen,
                &submission.listen_tls,
                &imap_listen,
                &imap_listen_tls,
                &pop3_listen,
                &pop3_listen_tls,
            ],
            &mut problems,
        );

        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Config {
            server: ServerConfig {
                hostname,
                data_dir,
                timeout_ms_drain,
                cpu_wakeup_us_max,
            },
            cores: cores.cores,
            smtp: SmtpConfig {
                listen,
                allow_plaintext_auth: r.smtp.allow_plaintext_auth.unwrap_or(false),
                max_message_bytes: max_message_bytes as usize,
                max_recipients: max_recipients as usize,
                timeout_ms_command,
                timeout_ms_data,
                connections_per_core_max: connections_per_core_max as usize,
                errors_max: errors_max as usize,
            },
            submission,
            imap: ImapConfig {
                listen: imap_listen,
                listen_tls: imap_listen_tls,
                allow_plaintext_auth: r.imap.allow_plaintext_auth.unwrap_or(false),
                timeout_ms_idle: imap_timeout_ms_idle,
                line_bytes_max: imap_line_bytes_max as usize,
                literal_bytes_max: imap_literal_bytes_max as usize,
                connections_per_core_max: imap_connections_max as usize,
            },
            pop3: Pop3Config {
                listen: pop3_listen,
                listen_tls: pop3_listen_tls,
                allow_plaintext_auth: r.pop3.allow_plaintext_auth.unwrap_or(false),
                timeout_ms_idle: pop3_timeout_ms_idle,
                line_bytes_max: pop3_line_bytes_max as usize,
                connections_per_core_max: pop3_connections_max as usize,
            },
            tls,
            relay,
            auth: AuthConfig {
                failure_delay_ms,
                failures_max: failures_max as usize,
            },
            domains: DomainsConfig { local },
            store: StoreSettings {
                fsync,
                fsync_wait,
                blob_segment_bytes_max,
                meta_segment_bytes_max,
                batch_bytes_max: batch_bytes_max as usize,
                checkpoint_interval_meta_bytes,
                checkpoint_interval_blob_bytes,
                commit_window_us: cores.group_commit_window_us,
            },
            dns,
            metrics,
            unknown_keys,
            warnings,
        })
    }
}

/// `[tls]`: `cert` and `key` go together; every `[[tls.sni]]` needs names, cert and key.
fn tls_settings(raw: raw::RawTls, problems: &mut Vec<String>) -> TlsSettings {
    let default = match (raw.cert, raw.key) {
        (Some(cert), Some(key)) => Some(CertFiles {
            cert: cert.into(),
            key: key.into(),
        }),
        (None, None) => None,
        (Some(_), None) => {
            problems.push("tls.cert is set but tls.key is not".into());
            None
        }
        (None, Some(_)) => {
            problems.push("tls.key is set but tls.cert is not".into());
            None
        }
    };
    if raw.sni.len() > SNI_CERTIFICATES_MAX {
        problems.push(format!(
            "tls.sni: {} entries, at most {SNI_CERTIFICATES_MAX}",
            raw.sni.len()
        ));
    }
    let mut sni = Vec::new();
    for (i, e) in raw.sni.into_iter().enumerate() {
        let names: Vec<String> = e
            .names
            .unwrap_or_default()
            .into_iter()
            .map(|n| n.to_ascii_lowercase())
            .collect();
        if names.is_empty() {
            problems.push(format!("tls.sni[{i}]: names is missing or empty"));
        }
        for n in &names {
            let host = n.strip_prefix("*.").unwrap_or(n);
            if !valid_hostname(host) {
                problems.push(format!("tls.sni[{i}]: {n:?} is not a host name"));
            }
        }
        match (e.cert, e.key) {
            (Some(cert), Some(key)) => sni.push((
                names,
                CertFiles {
                    cert: cert.into(),
                    key: key.into(),
                },
            )),
            _ => problems.push(format!("tls.sni[{i}]: needs both cert and key")),
        }
    }
    if default.is_none() && !sni.is_empty() {
        problems.push("tls.sni needs a default certificate (tls.cert and tls.key)".into());
    }
    TlsSettings { default, sni }
}

/// A duration written with its unit: `250ms`, `30s`, `5m`, `4h`, `5d`.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().ok()?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// `[relay]`.
fn relay_config(raw: raw::RawRelay, problems: &mut Vec<String>) -> RelayConfig {
    let mut duration = |key: &str, v: Option<String>, default: u64| match v {
        None => default,
        Some(text) => match parse_duration_ms(&text) {
            Some(ms) if ms > 0 => ms,
            _ => {
                problems.push(format!(
                    "relay.{key} = {text:?}: expected a duration like \"30s\", \"5m\", \"4h\", \"5d\""
                ));
                default
            }
        },
    };
    let age_ms_max = duration("max_age", raw.max_age, 5 * 86_400_000);
    let delay_notice_ms = duration("delay_notice", raw.delay_notice, 4 * 3_600_000);
    let mut retry_ms = Vec::new();
    let default_retry = ["5m", "10m", "30m", "1h", "2h", "4h"];
    let retry = raw
        .retry
        .unwrap_or_else(|| default_retry.iter().map(|s| s.to_string()).collect());
    if retry.is_empty() || retry.len() > 100 {
        problems.push("relay.retry: between 1 and 100 delays".into());
    }
    for text in retry {
        match parse_duration_ms(&text) {
            Some(ms) if ms > 0 => retry_ms.push(ms),
            _ => problems.push(format!(
                "relay.retry: {text:?} is not a duration like \"5m\" or \"1h\""
            )),
        }
    }
    let port = raw.port.unwrap_or(25);
    check_range(problems, "relay.port", port, 1, 65535);
    let smarthost = raw.smarthost.and_then(|text| {
        let parsed = text
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
            .filter(|(host, port)| *port > 0 && !host.is_empty());
        match parsed {
            Some((host, port)) => Some((host.trim_matches(['[', ']']).to_string(), port)),
            None => {
                problems.push(format!(
                    "relay.smarthost = {text:?}: expected host:port, e.g. \"smtp.example.net:25\""
                ));
                None
            }
        }
    });
    let connections_per_domain_max = raw.connections_per_domain_max.unwrap_or(10);
    check_range(
        problems,
        "relay.connections_per_domain_max",
        connections_per_domain_max,
        1,
        1000,
    );
    let mut tls_verify_domains = Vec::new();
    for d in raw.tls_verify_domains.unwrap_or_default() {
        let d = d.to_ascii_lowercase();
        if valid_hostname(&d) {
            tls_verify_domains.push(d);
        } else {
            problems.push(format!(
                "relay.tls_verify_domains: {d:?} is not a domain name"
            ));
        }
    }
    RelayConfig {
        port: port as u16,
        smarthost,
        retry_ms,
        age_ms_max,
        delay_notice_ms,
        connections_per_domain_max: connections_per_domain_max as usize,
        tls_verify_domains,
        tls_ca_file: raw
            .tls_ca_file
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(crate::net::tls::SYSTEM_CA_FILE)),
    }
}

/// `[dns]`: servers as `IP:port` or a bare `IP` (port 53), at most 8.
fn dns_config(raw: raw::RawDns, problems: &mut Vec<String>) -> DnsConfig {
    let servers = raw.servers.map(|list| {
        let mut servers = Vec::new();
        for text in &list {
            let parsed = text.parse::<SocketAddr>().ok().or_else(|| {
                let ip = text
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .ok()?;
                Some(SocketAddr::new(ip, 53))
            });
            match parsed {
                Some(sa) if sa.port() != 0 => servers.push(sa),
                _ => problems.push(format!(
                    "dns.servers: {text:?} is not an IP or IP:port (e.g. \"127.0.0.1:53\")"
                )),
            }
        }
        if list.is_empty() || list.len() > 8 {
            problems.push(format!(
                "dns.servers: {} server(s), expected 1 to 8 (leave it out for /etc/resolv.conf)",
                list.len()
            ));
        }
        servers
    });
    let timeout_ms = raw.timeout_ms.unwrap_or(2000);
    check_range(problems, "dns.timeout_ms", timeout_ms, 10, 60_000);
    let attempts = raw.attempts.unwrap_or(2);
    check_range(problems, "dns.attempts", attempts, 1, 10);
    let cache_entries_max = raw.cache_entries_max.unwrap_or(10_000);
    check_range(
        problems,
        "dns.cache_entries_max",
        cache_entries_max,
        0,
        1_000_000,
    );
    DnsConfig {
        servers,
        timeout_ms,
        attempts: attempts as u32,
        cache_entries_max: cache_entries_max as usize,
    }
}

/// `[metrics]`: addresses that parse, none named twice or also by another listener (port 0
/// excepted: each gets its own port).
fn metrics_config(
    raw: raw::RawMetrics,
    others: &[&Vec<SocketAddr>],
    problems: &mut Vec<String>,
) -> MetricsConfig {
    let mut listen: Vec<SocketAddr> = Vec::new();
    for a in raw.listen.unwrap_or_default() {
        match a.parse::<SocketAddr>() {
            Err(_) => problems.push(format!(
                "metrics.listen: {a:?} is not an IP:port address (e.g. \"127.0.0.1:9187\")"
            )),
            Ok(sa) if sa.port() != 0 && listen.contains(&sa) => {
                problems.push(format!("metrics.listen: {sa} is listed twice"))
            }
            Ok(sa) if sa.port() != 0 && others.iter().any(|l| l.contains(&sa)) => problems.push(
                format!("metrics.listen: {sa} is also the address of another listener"),
            ),
            Ok(sa) => listen.push(sa),
        }
    }
    MetricsConfig { listen }
}

/// Notes `key = v: must be between lo and hi` unless `lo <= v <= hi`.
fn check_range(problems: &mut Vec<String>, key: &str, v: u64, lo: u64, hi: u64) {
    if !(lo..=hi).contains(&v) {
        problems.push(format!("{key} = {v}: must be between {lo} and {hi}"));
    }
}

/// A listen list (`[]` turns the protocol off); every bad entry is a problem.
fn parse_listen(
    key: &str,
    raw: Option<Vec<String>>,
    default: &str,
    problems: &mut Vec<String>,
) -> Vec<SocketAddr> {
    let raw = raw.unwrap_or_else(|| vec![default.to_string()]);
    let mut listen = Vec::new();
    for a in &raw {
        match a.parse::<SocketAddr>() {
            Ok(sa) => listen.push(sa),
            Err(_) => problems.push(format!(
                "{key}: {a:?} is not an IP:port address (e.g. \"{default}\")"
            )),
        }
    }
    listen
}

fn default_hostname() -> String {
    // The kernel's node name when it is a usable host name, else "localhost".
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        if let Ok(s) = std::str::from_utf8(&buf[..end]) {
            if valid_hostname(s) {
                return s.to_ascii_lowercase();
            }
        }
    }
    "localhost".into()
}

/// Letters, digits, '-' and '.', labels of 1..=63, total ≤ 253.
pub fn valid_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("test.toml"))
    }

    #[test]
    fn defaults_are_valid_and_documented() {
        let c = Config::defaults();
        assert_eq!(c.server.data_dir, PathBuf::from("./ringmail-data"));
        assert_eq!(
            c.smtp.listen,
            vec!["127.0.0.1:2525".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(c.domains.local, vec!["localhost".to_string()]);
        assert_eq!(c.store.fsync, FsyncPolicy::Always);
        assert_eq!(c.cores.placement, Cores::All);
        assert_eq!(c.smtp.max_message_bytes, 26_214_400);
        assert_eq!(c.smtp.max_recipients, 100);
        assert_eq!(
            c.imap.listen,
            vec!["127.0.0.1:2143".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            c.pop3.listen,
            vec!["127.0.0.1:2110".parse::<SocketAddr>().unwrap()]
        );
        // RFC 9051 §5.4 (30 min autologout) and RFC 1939 §3 (10 min).
        assert_eq!(c.imap.timeout_ms_idle, 1_800_000);
        assert_eq!(c.pop3.timeout_ms_idle, 600_000);
        assert_eq!(c.auth.failures_max, 3);
        let addr = |a: &str| vec![a.parse::<SocketAddr>().unwrap()];
        assert_eq!(c.submission.listen, addr("127.0.0.1:2587"));
        assert_eq!(c.submission.listen_tls, addr("127.0.0.1:2465"));
        assert_eq!(c.imap.listen_tls, addr("127.0.0.1:2993"));
        assert_eq!(c.pop3.listen_tls, addr("127.0.0.1:2995"));
        // Passwords only over TLS unless the operator says otherwise.
        assert!(!c.smtp.allow_plaintext_auth);
        assert!(!c.submission.allow_plaintext_auth);
        assert!(!c.imap.allow_plaintext_auth);
        assert!(!c.pop3.allow_plaintext_auth);
        assert_eq!(c.tls, TlsSettings::default());
    }

    #[test]
    fn tls_and_submission_sections() {
        let c = parse(
            "[tls]\ncert = \"a.pem\"\nkey = \"a.key\"\n\
             [[tls.sni]]\nnames = [\"Mail.Example.org\", \"*.example.net\"]\n\
             cert = \"b.pem\"\nkey = \"b.key\"\n\
             [submission]\nlisten = []\nlisten_tls = [\"127.0.0.1:465\"]\n\
             allow_plaintext_auth = true\n",
        )
        .unwrap();
        let default = c.tls.default.unwrap();
        assert_eq!(default.cert, PathBuf::from("a.pem"));
        assert_eq!(default.key, PathBuf::from("a.key"));
        assert_eq!(c.tls.sni.len(), 1);
        assert_eq!(c.tls.sni[0].0, vec!["mail.example.org", "*.example.net"]);
        assert_eq!(c.tls.sni[0].1.key, PathBuf::from("b.key"));
        assert!(c.submission.listen.is_empty());
        assert_eq!(c.submission.listen_tls.len(), 1);
        assert!(c.submission.allow_plaintext_auth);
    }

    #[test]
    fn relay_section_and_durations() {
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("30s"), Some(30_000));
        assert_eq!(parse_duration_ms("5d"), Some(432_000_000));
        for bad in ["", "5", "m", "5 m", "5w", "-5s", "99999999999999999999d"] {
            assert_eq!(parse_duration_ms(bad), None, "{bad:?}");
        }
        let c = Config::defaults();
        assert_eq!(c.relay.port, 25);
        assert_eq!(c.relay.retry_ms[0], 300_000);
        assert_eq!(c.relay.age_ms_max, 5 * 86_400_000);
        assert_eq!(c.relay.delay_notice_ms, 4 * 3_600_000);
        let c = parse(
            "[relay]\nport = 2525\nsmarthost = \"[::1]:2526\"\nretry = [\"1s\", \"2s\"]\n\
             max_age = \"10s\"\ndelay_notice = \"3s\"\ntls_verify_domains = [\"Bank.Test\"]\n",
        )
        .unwrap();
        assert_eq!(c.relay.port, 2525);
        assert_eq!(c.relay.smarthost, Some(("::1".to_string(), 2526)));
        assert_eq!(c.relay.retry_ms, vec![1000, 2000]);
        assert_eq!(c.relay.age_ms_max, 10_000);
        assert_eq!(c.relay.tls_verify_domains, vec!["bank.test"]);
        let e = parse(
            "[relay]\nport = 0\nsmarthost = \"nohost\"\nretry = [\"soon\"]\nmax_age = \"5\"\n",
        )
        .unwrap_err()
        .to_string();
        for want in [
            "relay.port = 0",
            "relay.smarthost = \"nohost\"",
            "relay.retry: \"soon\"",
            "relay.max_age = \"5\"",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
    }

    #[test]
    fn dns_section() {
        let c = Config::defaults();
        assert_eq!(
            c.dns,
            DnsConfig {
                servers: None,
                timeout_ms: 2000,
                attempts: 2,
                cache_entries_max: 10_000,
            }
        );
        let c = parse(
            "[dns]\nservers = [\"127.0.0.1:5353\", \"::1\", \"192.0.2.53\"]\n\
             timeout_ms = 300\nattempts = 1\ncache_entries_max = 0\n",
        )
        .unwrap();
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            c.dns.servers,
            Some(vec![
                sa("127.0.0.1:5353"),
                sa("[::1]:53"),
                sa("192.0.2.53:53")
            ])
        );
        assert_eq!((c.dns.timeout_ms, c.dns.attempts), (300, 1));
        assert_eq!(c.dns.cache_entries_max, 0);
        let e = parse(
            "[dns]\nservers = [\"nowhere\", \"127.0.0.1:0\"]\ntimeout_ms = 0\nattempts = 50\n\
             cache_entries_max = 2000000\n[smtp]\nmax_recipients = 0\n",
        )
        .unwrap_err()
        .to_string();
        for want in [
            "6 error(s)",
            "dns.servers: \"nowhere\"",
            "dns.servers: \"127.0.0.1:0\"",
            "dns.timeout_ms = 0",
            "dns.attempts = 50",
            "dns.cache_entries_max = 2000000",
            "smtp.max_recipients = 0",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
        let e = parse("[dns]\nservers = []\n").unwrap_err().to_string();
        assert!(e.contains("dns.servers: 0 server(s)"), "{e}");
    }

    #[test]
    fn tls_problems_are_reported_together() {
        let e = parse(
            "[tls]\ncert = \"a.pem\"\n\
             [[tls.sni]]\nnames = []\ncert = \"b.pem\"\n\
             [[tls.sni]]\nnames = [\"bad host\"]\ncert = \"c.pem\"\nkey = \"c.key\"\nextra = 1\n\
             [imap]\nallow_plaintext_auth = \"yes\"\nlisten_tls = [\"nowhere\"]\n",
        )
        .unwrap_err()
        .to_string();
        for want in [
            "tls.cert is set but tls.key is not",
            "tls.sni[0]: names is missing or empty",
            "tls.sni[0]: needs both cert and key",
            "tls.sni[1]: \"bad host\" is not a host name",
            "tls.sni[1]: unknown key \"extra\"",
            "tls.sni needs a default certificate",
            "imap.allow_plaintext_auth: expected true or false",
            "imap.listen_tls: \"nowhere\"",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
    }

    #[test]
    fn imap_pop3_and_auth_sections_are_validated_together() {
        let err = parse(
            "[imap]\nlisten = [\"nowhere\"]\nline_bytes_max = 10\n\
             [pop3]\nlisten = []\ntimeout_ms_idle = 5\n[auth]\nfailures_max = 0\nfailure_delay_ms = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("4 error(s)"), "{err}");
        assert!(err.contains("imap.listen: \"nowhere\""), "{err}");
        assert!(err.contains("imap.line_bytes_max = 10"), "{err}");
        assert!(err.contains("pop3.timeout_ms_idle = 5"), "{err}");
        assert!(err.contains("auth.failures_max = 0"), "{err}");
        // An empty listen list turns the protocol off.
        let c = parse("[pop3]\nlisten = []\n").unwrap();
        assert!(c.pop3.listen.is_empty());
    }

    #[test]
    fn public_contract_keys_parse() {
        let c = parse(
            r#"
            [server]
            hostname = "mx.example.test"
            data_dir = "/tmp/x"
            cores = [0, 1]
            [smtp]
            listen = ["127.0.0.1:2525", "[::1]:2525"]
            max_message_bytes = 1048576
            max_recipients = 7
            [domains]
            local = ["Example.TEST", "other.test"]
            [store]
            fsync = "never"
            fsync_wait = "inline"
            "#,
        )
        .unwrap();
        assert_eq!(c.server.hostname, "mx.example.test");
        assert_eq!(c.cores.placement, Cores::List(vec![0, 1]));
        assert_eq!(c.smtp.listen.len(), 2);
        assert_eq!(c.smtp.max_recipients, 7);
        assert_eq!(c.domains.local, vec!["example.test", "other.test"]);
        assert_eq!(c.store.fsync, FsyncPolicy::Never);
        assert_eq!(c.store.fsync_wait, FsyncWait::Inline);
        assert!(c.unknown_keys.is_empty());
    }

    #[test]
    fn cpu_wakeup_us_max_is_optional_and_bounded() {
        let c = parse("").unwrap();
        assert_eq!(c.server.cpu_wakeup_us_max, None);
        let c = parse("[server]\ncpu_wakeup_us_max = 0\n").unwrap();
        assert_eq!(c.server.cpu_wakeup_us_max, Some(0));
        let err = parse("[server]\ncpu_wakeup_us_max = 3000000000\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("server.cpu_wakeup_us_max = 3000000000: at most 2000000000"),
            "{err}"
        );
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let err = parse(
            r#"
            [server]
            hostname = "bad host"
            cores = "some"
            [smtp]
            listen = ["nowhere"]
            max_recipients = 0
            [store]
            fsync = "sometimes"
            fsync_wait = "later"
            "#,
        )
        .unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("expected Invalid, got {err}");
        };
        assert_eq!(problems.len(), 6, "{problems:#?}");
        let text = err.to_string();
        for needle in [
            "server.hostname",
            "server.cores",
            "smtp.listen",
            "smtp.max_recipients",
            "store.fsync",
            "store.fsync_wait",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }

    #[test]
    fn unknown_keys_are_kept_for_warnings() {
        let c = parse(
            r#"
            colour = "blue"
            [server]
            hostnme = "typo.test"
            [smtp]
            listen = ["127.0.0.1:2525"]
            [nonsense]
            a = 1
            "#,
        )
        .unwrap();
        let mut keys = c.unknown_keys.clone();
        keys.sort();
        assert_eq!(keys, vec!["colour", "nonsense", "server.hostnme"]);
    }

    #[test]
    fn syntax_error_names_the_file() {
        let err = parse("[server\nhostname=").unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }));
        assert!(err.to_string().contains("test.toml"));
    }

    #[test]
    fn wrong_types_name_their_keys_and_are_reported_with_the_rest() {
        let err = parse("[smtp]\nmax_recipients = \"ten\"\nlisten = \"x\"\n[store]\nfsync = 1\n")
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("3 error(s)"), "{text}");
        assert!(
            text.contains("smtp.max_recipients: expected a non-negative integer, found string"),
            "{text}"
        );
        assert!(
            text.contains("smtp.listen: expected a list of strings"),
            "{text}"
        );
        assert!(
            text.contains("store.fsync: expected a string, found integer"),
            "{text}"
        );
    }

    #[test]
    fn metrics_section_is_off_by_default_and_checked() {
        assert!(Config::defaults().metrics.listen.is_empty());
        let c =
            parse("[metrics]\nlisten = [\"127.0.0.1:9187\", \"127.0.0.1:0\", \"127.0.0.1:0\"]\n")
                .unwrap();
        let want: Vec<SocketAddr> = ["127.0.0.1:9187", "127.0.0.1:0", "127.0.0.1:0"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(c.metrics.listen, want);
        let err = parse(
            "[smtp]\nlisten = [\"127.0.0.1:2525\"]\n[metrics]\n\
             listen = [\"nonsense\", \"127.0.0.1:9187\", \"127.0.0.1:9187\", \"127.0.0.1:2525\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("3 error(s)"), "{err}");
        assert!(
            err.contains("metrics.listen: \"nonsense\" is not an IP:port"),
            "{err}"
        );
        assert!(
            err.contains("metrics.listen: 127.0.0.1:9187 is listed twice"),
            "{err}"
        );
        assert!(
            err.contains("metrics.listen: 127.0.0.1:2525 is also the address of another listener"),
            "{err}"
        );
    }
}
