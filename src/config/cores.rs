//! `[cores]`: which CPUs run an executor, how each executor is built (io_uring ring depth,
//! io memory, spin before park, preempt timer, connection limit), the task-queue shares of
//! sessions and background work, the per-connection buffer sizes and the group-commit window;
//! `[[cores.override]]` changes the per-core keys of one CPU's executor.
//!
//! The old `[server]` keys `cores`, `io_memory_bytes` and `spin_before_park_us` still work (with
//! a warning that they moved); giving a key under both names is an error.

use super::raw::{RawCores, RawCoresSection, RawExecutor, RawServer};
use super::{check_range, Cores};

/// Smallest and largest io_uring ring (entries per ring; the kernel's IORING_MAX_ENTRIES is
/// 32768).
pub const RING_DEPTH_MIN: u64 = 16;
pub const RING_DEPTH_MAX: u64 = 32_768;
/// glommio's task-queue shares are clamped to this range.
pub const SHARES_MAX: u64 = 1000;
/// A longer group-commit window would make every acknowledgement that much slower.
pub const GROUP_COMMIT_WINDOW_US_MAX: u64 = 10_000;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// How one core's executor is built and how many connections it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecutorSettings {
    /// Entries of each of the executor's three io_uring rings (glommio `ring_depth`).
    pub ring_depth: usize,
    /// io_uring buffer memory (glommio `io_memory`); locked memory, see `runtime::memlock`.
    pub io_memory_bytes: usize,
    /// How long an idle executor spins before parking (0: park at once). Parking costs a
    /// process-wide memory barrier (IPIs to every core running ringmail), so a short spin pays
    /// off under load; it burns CPU when idle-but-busy.
    pub spin_before_park_us: u64,
    /// How often a running task queue is asked to yield to the others (glommio
    /// `preempt_timer`).
    pub preempt_timer_us: u64,
    /// Open connections on this core, every protocol together; the next one is refused with
    /// the protocol's "too many connections" answer.
    pub connections_max: usize,
}

impl ExecutorSettings {
    pub const DEFAULT: ExecutorSettings = ExecutorSettings {
        ring_depth: 128,
        io_memory_bytes: 512 * 1024,
        spin_before_park_us: 0,
        preempt_timer_us: 100_000,
        connections_max: 10_000,
    };
}

/// `[[cores.override]]`: the keys given replace `[cores]`'s on CPU `cpu` only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoreOverride {
    pub cpu: usize,
    pub ring_depth: Option<usize>,
    pub io_memory_bytes: Option<usize>,
    pub spin_before_park_us: Option<u64>,
    pub preempt_timer_us: Option<u64>,
    pub connections_max: Option<usize>,
}

/// The validated `[cores]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoresConfig {
    pub placement: Cores,
    /// Every core's executor, unless overridden.
    pub executor: ExecutorSettings,
    /// At most one per CPU.
    pub overrides: Vec<CoreOverride>,
    /// Task-queue shares (1..=1000) of accept loops and connections.
    pub shares_sessions: usize,
    /// Task-queue shares (1..=1000) of background work: the outbound sender.
    pub shares_background: usize,
    /// Read buffer of one connection (SMTP, IMAP, POP3).
    pub read_buffer_bytes: usize,
    /// IMAP and POP3 output is written once it reaches this size (a big FETCH or a run of
    /// RETRs goes out in pieces of about this size). SMTP replies are small and go out once
    /// per batch of pipelined commands, so SMTP has no such buffer.
    pub write_buffer_bytes: usize,
}

impl CoresConfig {
    /// The settings of CPU `cpu`'s executor: `[cores]` with its override applied.
    pub fn executor_for(&self, cpu: usize) -> ExecutorSettings {
        let mut e = self.executor;
        if let Some(o) = self.overrides.iter().find(|o| o.cpu == cpu) {
            e.ring_depth = o.ring_depth.unwrap_or(e.ring_depth);
            e.io_memory_bytes = o.io_memory_bytes.unwrap_or(e.io_memory_bytes);
            e.spin_before_park_us = o.spin_before_park_us.unwrap_or(e.spin_before_park_us);
            e.preempt_timer_us = o.preempt_timer_us.unwrap_or(e.preempt_timer_us);
            e.connections_max = o.connections_max.unwrap_or(e.connections_max);
        }
        e
    }

    /// The settings of every executor, in the order of `cpus`.
    pub fn executors(&self, cpus: &[usize]) -> Vec<ExecutorSettings> {
        cpus.iter().map(|&cpu| self.executor_for(cpu)).collect()
    }
}

/// What the `[cores]` validation yields besides [`CoresConfig`].
pub struct Validated {
    pub cores: CoresConfig,
    /// Goes to `store.commit_window_us`.
    pub group_commit_window_us: u64,
}

/// One key that may be given under its new name (`[cores]`) or its old one (`[server]`).
fn aliased<T>(
    new_key: &str,
    new: Option<T>,
    old_key: &str,
    old: Option<T>,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> (Option<T>, String) {
    match (new, old) {
        (Some(_), Some(_)) => {
            problems.push(format!(
                "{old_key} and {new_key} are both set: {old_key} is the old name, keep only \
                 {new_key}"
            ));
            (None, new_key.to_string())
        }
        (None, Some(v)) => {
            warnings.push(format!(
                "{old_key} has moved to {new_key}; the old name still works for now"
            ));
            (Some(v), old_key.to_string())
        }
        (new, None) => (new, new_key.to_string()),
    }
}

/// `"all"` or a list of distinct CPU ids; `key` names the key as written.
fn placement(key: &str, raw: Option<RawCores>, problems: &mut Vec<String>) -> Cores {
    match raw {
        None => Cores::All,
        Some(RawCores::Word(w)) if w == "all" => Cores::All,
        Some(RawCores::Word(w)) => {
            problems.push(format!(
                "{key} = {w:?}: expected \"all\" or a list of CPU ids"
            ));
            Cores::All
        }
        Some(RawCores::List(list)) => {
            let mut ids = Vec::with_capacity(list.len());
            for id in list {
                match usize::try_from(id) {
                    Ok(id) if !ids.contains(&id) => ids.push(id),
                    Ok(id) => problems.push(format!("{key}: CPU {id} listed twice")),
                    Err(_) => problems.push(format!("{key}: {id} is not a CPU id")),
                }
            }
            if ids.is_empty() {
                problems.push(format!("{key}: the list is empty"));
            }
            Cores::List(ids)
        }
    }
}

/// Checks the per-core keys given (under `prefix.`); returns them, `None` where absent or bad.
fn executor_keys(
    prefix: &str,
    raw: &RawExecutor,
    names: [&str; 2],
    problems: &mut Vec<String>,
) -> [Option<u64>; 5] {
    // `names`: how io_memory_bytes and spin_before_park_us were written (old or new key).
    let mut check = |key: String, v: Option<u64>, ok: bool, bound: &str| match v {
        Some(v) if !ok => {
            problems.push(format!("{key} = {v}: {bound}"));
            None
        }
        v => v,
    };
    let ring = raw.ring_depth;
    let ring = check(
        format!("{prefix}.ring_depth"),
        ring,
        ring.is_none_or(|v| v.is_power_of_two() && (RING_DEPTH_MIN..=RING_DEPTH_MAX).contains(&v)),
        &format!("must be a power of two between {RING_DEPTH_MIN} and {RING_DEPTH_MAX}"),
    );
    let io = raw.io_memory_bytes;
    let io = check(
        names[0].to_string(),
        io,
        io.is_none_or(|v| (64 * KIB..=64 * MIB).contains(&v)),
        &format!("must be between {} and {}", 64 * KIB, 64 * MIB),
    );
    let spin = raw.spin_before_park_us;
    let spin = check(
        names[1].to_string(),
        spin,
        spin.is_none_or(|v| v <= 100_000),
        "must be between 0 and 100000",
    );
    let preempt = raw.preempt_timer_us;
    let preempt = check(
        format!("{prefix}.preempt_timer_us"),
        preempt,
        preempt.is_none_or(|v| (100..=1_000_000).contains(&v)),
        "must be between 100 and 1000000",
    );
    let conns = raw.connections_max;
    let conns = check(
        format!("{prefix}.connections_max"),
        conns,
        conns.is_none_or(|v| (1..=1_000_000).contains(&v)),
        "must be between 1 and 1000000",
    );
    [ring, io, spin, preempt, conns]
}

/// `[cores]` (and the old `[server]` keys). `read_buffer_bytes_min`: what the protocols
/// need (the SMTP session's minimum, POP3's longest line).
pub fn validate(
    server: &mut RawServer,
    raw: RawCoresSection,
    read_buffer_bytes_min: u64,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Validated {
    let (place, place_key) = aliased(
        "cores.placement",
        raw.placement,
        "server.cores",
        server.cores.take(),
        problems,
        warnings,
    );
    let placement = placement(&place_key, place, problems);
    let mut base = raw.executor;
    let (io, io_key) = aliased(
        "cores.io_memory_bytes",
        base.io_memory_bytes,
        "server.io_memory_bytes",
        server.io_memory_bytes.take(),
        problems,
        warnings,
    );
    base.io_memory_bytes = io;
    let (spin, spin_key) = aliased(
        "cores.spin_before_park_us",
        base.spin_before_park_us,
        "server.spin_before_park_us",
        server.spin_before_park_us.take(),
        problems,
        warnings,
    );
    base.spin_before_park_us = spin;
    let d = ExecutorSettings::DEFAULT;
    let [ring, io, spin, preempt, conns] =
        executor_keys("cores", &base, [&io_key, &spin_key], problems);
    let executor = ExecutorSettings {
        ring_depth: ring.map_or(d.ring_depth, |v| v as usize),
        io_memory_bytes: io.map_or(d.io_memory_bytes, |v| v as usize),
        spin_before_park_us: spin.unwrap_or(d.spin_before_park_us),
        preempt_timer_us: preempt.unwrap_or(d.preempt_timer_us),
        connections_max: conns.map_or(d.connections_max, |v| v as usize),
    };

    let mut overrides: Vec<CoreOverride> = Vec::new();
    for (i, o) in raw.overrides.iter().enumerate() {
        let prefix = format!("cores.override[{i}]");
        let names = [
            format!("{prefix}.io_memory_bytes"),
            format!("{prefix}.spin_before_park_us"),
        ];
        let [ring, io, spin, preempt, conns] =
            executor_keys(&prefix, &o.executor, [&names[0], &names[1]], problems);
        let e = &o.executor;
        if [
            e.ring_depth,
            e.io_memory_bytes,
            e.spin_before_park_us,
            e.preempt_timer_us,
            e.connections_max,
        ]
        .iter()
        .all(Option::is_none)
        {
            problems.push(format!(
                "{prefix}: sets no per-core key (ring_depth, io_memory_bytes, \
                 spin_before_park_us, preempt_timer_us, connections_max)"
            ));
        }
        let Some(cpu) = o.core else {
            problems.push(format!("{prefix}: `core` (the CPU id) is missing"));
            continue;
        };
        let Ok(cpu) = usize::try_from(cpu) else {
            problems.push(format!("{prefix}.core = {cpu}: not a CPU id"));
            continue;
        };
        if overrides.iter().any(|x| x.cpu == cpu) {
            problems.push(format!("{prefix}: CPU {cpu} already has an override"));
            continue;
        }
        if let Cores::List(list) = &placement {
            if !list.contains(&cpu) {
                problems.push(format!(
                    "{prefix}.core = {cpu}: CPU {cpu} is not in {place_key} {list:?}"
                ));
            }
        }
        overrides.push(CoreOverride {
            cpu,
            ring_depth: ring.map(|v| v as usize),
            io_memory_bytes: io.map(|v| v as usize),
            spin_before_park_us: spin,
            preempt_timer_us: preempt,
            connections_max: conns.map(|v| v as usize),
        });
    }

    let shares_sessions = raw.shares_sessions.unwrap_or(1000);
    let shares_background = raw.shares_background.unwrap_or(250);
    check_range(
        problems,
        "cores.shares_sessions",
        shares_sessions,
        1,
        SHARES_MAX,
    );
    check_range(
        problems,
        "cores.shares_background",
        shares_background,
        1,
        SHARES_MAX,
    );
    let read_buffer_bytes = raw.read_buffer_bytes.unwrap_or(64 * KIB);
    if !(read_buffer_bytes_min..=16 * MIB).contains(&read_buffer_bytes) {
        problems.push(format!(
            "cores.read_buffer_bytes = {read_buffer_bytes}: must be between \
             {read_buffer_bytes_min} (the longest SMTP AUTH line or POP3 line must fit) and {}",
            16 * MIB
        ));
    }
    let write_buffer_bytes = raw.write_buffer_bytes.unwrap_or(256 * KIB);
    check_range(
        problems,
        "cores.write_buffer_bytes",
        write_buffer_bytes,
        4 * KIB,
        16 * MIB,
    );
    let group_commit_window_us = raw.group_commit_window_us.unwrap_or(0);
    check_range(
        problems,
        "cores.group_commit_window_us",
        group_commit_window_us,
        0,
        GROUP_COMMIT_WINDOW_US_MAX,
    );
    Validated {
        cores: CoresConfig {
            placement,
            executor,
            overrides,
            shares_sessions: shares_sessions as usize,
            shares_background: shares_background as usize,
            read_buffer_bytes: read_buffer_bytes as usize,
            write_buffer_bytes: write_buffer_bytes as usize,
        },
        group_commit_window_us,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigError};
    use super::*;
    use std::path::Path;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("test.toml"))
    }

    fn problems(s: &str) -> Vec<String> {
        match parse(s) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = Config::defaults();
        assert_eq!(c.cores.placement, Cores::All);
        assert_eq!(c.cores.executor, ExecutorSettings::DEFAULT);
        assert_eq!(c.cores.executor.ring_depth, 128);
        assert_eq!(c.cores.executor.io_memory_bytes, 512 * 1024);
        assert_eq!(c.cores.executor.preempt_timer_us, 100_000);
        assert!(c.cores.overrides.is_empty());
        assert_eq!(
            (c.cores.shares_sessions, c.cores.shares_background),
            (1000, 250)
        );
        assert_eq!(c.cores.read_buffer_bytes, 64 * 1024);
        assert_eq!(c.cores.write_buffer_bytes, 256 * 1024);
        assert_eq!(c.store.commit_window_us, 0);
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn every_key_parses_and_overrides_apply_to_their_cpu_only() {
        let c = parse(
            "[cores]\nplacement = [0, 2]\nring_depth = 256\nio_memory_bytes = 1048576\n\
             spin_before_park_us = 20\npreempt_timer_us = 500\nshares_sessions = 800\n\
             shares_background = 100\nconnections_max = 5000\nread_buffer_bytes = 32768\n\
             write_buffer_bytes = 65536\ngroup_commit_window_us = 200\n\
             [[cores.override]]\ncore = 2\nring_depth = 1024\nconnections_max = 7\n",
        )
        .unwrap();
        assert_eq!(c.cores.placement, Cores::List(vec![0, 2]));
        let base = ExecutorSettings {
            ring_depth: 256,
            io_memory_bytes: 1 << 20,
            spin_before_park_us: 20,
            preempt_timer_us: 500,
            connections_max: 5000,
        };
        assert_eq!(c.cores.executor_for(0), base);
        assert_eq!(
            c.cores.executor_for(2),
            ExecutorSettings {
                ring_depth: 1024,
                connections_max: 7,
                ..base
            }
        );
        assert_eq!(c.cores.executors(&[0, 2])[1].ring_depth, 1024);
        assert_eq!(
            (c.cores.shares_sessions, c.cores.shares_background),
            (800, 100)
        );
        assert_eq!(c.cores.read_buffer_bytes, 32768);
        assert_eq!(c.cores.write_buffer_bytes, 65536);
        assert_eq!(c.store.commit_window_us, 200);
        assert!(c.unknown_keys.is_empty() && c.warnings.is_empty());
    }

    #[test]
    fn old_server_keys_still_work_with_a_warning() {
        let c = parse("[server]\ncores = [1]\nio_memory_bytes = 131072\nspin_before_park_us = 5\n")
            .unwrap();
        assert_eq!(c.cores.placement, Cores::List(vec![1]));
        assert_eq!(c.cores.executor.io_memory_bytes, 131072);
        assert_eq!(c.cores.executor.spin_before_park_us, 5);
        assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
        for (old, new) in [
            ("server.cores", "cores.placement"),
            ("server.io_memory_bytes", "cores.io_memory_bytes"),
            ("server.spin_before_park_us", "cores.spin_before_park_us"),
        ] {
            assert!(
                c.warnings
                    .iter()
                    .any(|w| w.contains(old) && w.contains(new)),
                "{old} -> {new} missing: {:?}",
                c.warnings
            );
        }
        // A bad value under the old name is reported under the old name.
        let p = problems("[server]\nio_memory_bytes = 5\n");
        assert!(p[0].starts_with("server.io_memory_bytes = 5"), "{p:?}");
    }

    #[test]
    fn a_key_under_both_names_is_an_error() {
        let p = problems(
            "[server]\ncores = [0]\nio_memory_bytes = 131072\nspin_before_park_us = 1\n\
             [cores]\nplacement = [0]\nio_memory_bytes = 131072\nspin_before_park_us = 1\n",
        );
        assert_eq!(p.len(), 3, "{p:#?}");
        for k in [
            "server.cores and cores.placement",
            "server.io_memory_bytes and cores.io_memory_bytes",
            "server.spin_before_park_us and cores.spin_before_park_us",
        ] {
            assert!(p.iter().any(|x| x.starts_with(k)), "{k} missing: {p:#?}");
        }
    }

    #[test]
    fn every_bad_value_is_reported_at_once_naming_key_and_bound() {
        let p = problems(
            "[cores]\nplacement = [0, 0, -1]\nring_depth = 100\nio_memory_bytes = 1\n\
             spin_before_park_us = 100001\npreempt_timer_us = 5\nconnections_max = 0\n\
             shares_sessions = 0\nshares_background = 1001\nread_buffer_bytes = 1024\n\
             write_buffer_bytes = 10\ngroup_commit_window_us = 10001\n\
             [[cores.override]]\ncore = 3\nring_depth = 8\n\
             [[cores.override]]\nring_depth = 64\n\
             [[cores.override]]\ncore = 0\n\
             [[cores.override]]\ncore = 0\nconnections_max = 2\nlisten = 1\n",
        );
        let want = [
            "cores.placement: CPU 0 listed twice",
            "cores.placement: -1 is not a CPU id",
            "cores.ring_depth = 100: must be a power of two between 16 and 32768",
            "cores.io_memory_bytes = 1: must be between 65536 and 67108864",
            "cores.spin_before_park_us = 100001: must be between 0 and 100000",
            "cores.preempt_timer_us = 5: must be between 100 and 1000000",
            "cores.connections_max = 0: must be between 1 and 1000000",
            "cores.shares_sessions = 0: must be between 1 and 1000",
            "cores.shares_background = 1001: must be between 1 and 1000",
            "cores.read_buffer_bytes = 1024: must be between 12288",
            "cores.write_buffer_bytes = 10: must be between 4096 and 16777216",
            "cores.group_commit_window_us = 10001: must be between 0 and 10000",
            "cores.override[0].ring_depth = 8: must be a power of two",
            "cores.override[0].core = 3: CPU 3 is not in cores.placement [0]",
            "cores.override[1]: `core` (the CPU id) is missing",
            "cores.override[2]: sets no per-core key",
            "cores.override[3]: CPU 0 already has an override",
            "cores.override[3]: unknown key \"listen\"",
        ];
        for w in want {
            assert!(p.iter().any(|x| x.starts_with(w)), "{w:?} missing: {p:#?}");
        }
        assert_eq!(p.len(), want.len(), "{p:#?}");
    }

    #[test]
    fn read_buffer_must_hold_the_longest_pop3_line() {
        let p = problems("[pop3]\nline_bytes_max = 65536\n[cores]\nread_buffer_bytes = 16384\n");
        assert!(
            p[0].starts_with("cores.read_buffer_bytes = 16384: must be between 65536"),
            "{p:?}"
        );
        // The SMTP minimum itself is accepted.
        let c = parse("[cores]\nread_buffer_bytes = 12288\n").unwrap();
        assert_eq!(c.cores.read_buffer_bytes, 12288);
    }

    #[test]
    fn overrides_with_all_placement_are_checked_at_start() {
        // Any CPU id is accepted here; `runtime::check_overrides` compares with the online
        // CPUs.
        let c = parse("[[cores.override]]\ncore = 4095\npreempt_timer_us = 1000\n").unwrap();
        assert_eq!(c.cores.overrides[0].cpu, 4095);
        assert_eq!(c.cores.executor_for(4095).preempt_timer_us, 1000);
        assert_eq!(c.cores.executor_for(0).preempt_timer_us, 100_000);
    }
}
