//! `ringmail tune --check`: does this host suit the configured executors?
//!
//! One line per check: `ok`, `warn` or `fail`, the figure found, and the fix. The checks:
//! locked memory (RLIMIT_MEMLOCK against what the configured executors need, with the formula
//! of `runtime::memlock`), io_uring (the sysctl, then a real `io_uring_setup` of a tiny ring),
//! the listen backlog (`net.core.somaxconn` against glommio's 1024), descriptors
//! (RLIMIT_NOFILE against `connections_max` on every core plus slack, and `fs.file-max`), the
//! CPU frequency governor of every configured CPU, the idle states against
//! `server.cpu_wakeup_us_max` (`runtime::idle`), the NIC receive queues and where their
//! interrupts land compared with the executors' CPUs, transparent hugepages and swap.
//!
//! Reading the host is kept apart from judging it: every `/proc` or `/sys` text goes through a
//! pure parser, and every verdict is a pure function of the figures (both unit-tested on
//! sample texts); only [`run`] touches the machine.

use std::fmt;
use std::path::Path;

use crate::config::{Config, Cores, ExecutorSettings};
use crate::runtime::memlock;

/// glommio's `listen(2)` backlog (`TcpListener::bind`).
pub const LISTEN_BACKLOG: u64 = 1024;
/// Descriptors a core needs besides its connections: listeners, store segments, the
/// io_uring rings, mesh eventfds, outbound connections.
pub const DESCRIPTORS_PER_CORE_SLACK: u64 = 256;
/// Descriptors of the process outside the cores (data-dir lock, port locks, control socket).
pub const DESCRIPTORS_PROCESS_SLACK: u64 = 64;

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    pub fn word(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub level: Level,
    /// What was found.
    pub figure: String,
    /// What to do about it (empty when nothing needs doing).
    pub fix: String,
}

impl Check {
    fn new(name: &'static str, level: Level, figure: impl Into<String>) -> Check {
        Check {
            name,
            level,
            figure: figure.into(),
            fix: String::new(),
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = fix.into();
        self
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<4}  {:<12} {}",
            self.level.word(),
            self.name,
            self.figure
        )?;
        if !self.fix.is_empty() {
            write!(f, "; fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// Every check's name, in report order.
pub const CHECK_NAMES: [&str; 12] = [
    "placement",
    "memlock",
    "io_uring",
    "somaxconn",
    "nofile",
    "file-max",
    "governor",
    "cpu-idle",
    "nic-queues",
    "irq-affinity",
    "thp",
    "swap",
];

/// The whole report.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// True when any check failed (`ringmail tune --check` then exits 1).
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.level == Level::Fail)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            writeln!(f, "{c}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Parsers of /proc and /sys texts (pure).

/// A sysctl-style file holding one number (`/proc/sys/net/core/somaxconn`).
pub fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The bracketed choice of a sysfs selector (`always [madvise] never` → `madvise`).
pub fn parse_selected(text: &str) -> Option<&str> {
    let open = text.find('[')?;
    let close = open + text[open..].find(']')?;
    Some(&text[open + 1..close])
}

/// A kernel CPU list (`0-3,8,10-11`, as in `smp_affinity_list`).
pub fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    let text = text.trim();
    if text.is_empty() {
        return Some(cpus);
    }
    for part in text.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if a > b || b - a > 65_536 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// One numbered line of `/proc/interrupts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrqLine {
    pub irq: u32,
    /// Interrupts taken per CPU (the header's column order).
    pub counts: Vec<u64>,
    /// The rest of the line: chip, hardware IRQ, trigger and the action (device) names.
    pub description: String,
}

impl IrqLine {
    /// The action names (the last column; several are separated by ", ").
    pub fn actions(&self) -> &str {
        // The chip and hwirq columns have no spaces inside; the names come after the last run
        // of two or more spaces.
        match self.description.rfind("  ") {
            Some(i) => self.description[i..].trim(),
            None => self.description.rsplit(' ').next().unwrap_or("").trim(),
        }
    }
}

/// The numbered lines of `/proc/interrupts` (NMI, LOC and the other named rows are skipped).
pub fn parse_interrupts(text: &str) -> Vec<IrqLine> {
    let mut lines = text.lines();
    let ncpus = lines
        .next()
        .map(|h| {
            h.split_whitespace()
                .filter(|w| w.starts_with("CPU"))
                .count()
        })
        .unwrap_or(0);
    let mut out = Vec::new();
    for line in lines {
        let Some((num, rest)) = line.trim_start().split_once(':') else {
            continue;
        };
        let Ok(irq) = num.parse::<u32>() else {
            continue;
        };
        let mut rest = rest;
        let mut counts = Vec::with_capacity(ncpus);
        while counts.len() < ncpus {
            let trimmed = rest.trim_start();
            let end = trimmed
                .find(|c: char| c.is_whitespace())
                .unwrap_or(trimmed.len());
            match trimmed[..end].parse::<u64>() {
                Ok(n) => {
                    counts.push(n);
                    rest = &trimmed[end..];
                }
                Err(_) => break,
            }
        }
        out.push(IrqLine {
            irq,
            counts,
            description: rest.trim().to_string(),
        });
    }
    out
}

/// The interrupts of a NIC that carry traffic: those whose action names contain one of
/// `tokens` (the interface name, the name of its device: `virtio2`, a PCI address), without
/// the configuration and async-event vectors.
pub fn nic_irqs<'a>(lines: &'a [IrqLine], tokens: &[String]) -> Vec<&'a IrqLine> {
    lines
        .iter()
        .filter(|l| {
            let a = l.actions();
            tokens
                .iter()
                .any(|t| !t.is_empty() && a.contains(t.as_str()))
                && !a.contains("config")
                && !a.contains("async")
        })
        .collect()
}

/// Active swap areas in `/proc/swaps` (after its header).
pub fn parse_swaps(text: &str) -> usize {
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count()
}

// ---------------------------------------------------------------------------------------
// Verdicts (pure).

fn human_bytes(b: u64) -> String {
    if b == u64::MAX {
        "unlimited".into()
    } else if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
        format!("{} MiB", b >> 20)
    } else if b >= 1 << 10 && b.is_multiple_of(1 << 10) {
        format!("{} KiB", b >> 10)
    } else {
        format!("{b} bytes")
    }
}

fn limit_text(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

/// RLIMIT_MEMLOCK: `serve` raises soft to hard, so the hard limit (or CAP_IPC_LOCK) decides.
pub fn judge_memlock(soft: u64, hard: u64, needed: u64, cap_ipc_lock: bool) -> Check {
    let figure = format!(
        "soft {} / hard {}, the executors need {}{}",
        human_bytes(soft),
        human_bytes(hard),
        human_bytes(needed),
        if cap_ipc_lock {
            ", CAP_IPC_LOCK held"
        } else {
            ""
        }
    );
    let fix = "systemd `LimitMEMLOCK=infinity` (or `ulimit -l unlimited` as root), or \
               `setcap cap_ipc_lock+ep ringmail`, or lower [cores] io_memory_bytes / ring_depth \
               or use fewer cores";
    match memlock::verdict(hard, needed, cap_ipc_lock) {
        memlock::Verdict::Enough if soft >= needed => Check::new("memlock", Level::Ok, figure),
        memlock::Verdict::Enough => Check::new(
            "memlock",
            Level::Ok,
            format!("{figure} (serve raises the soft limit to the hard one)"),
        ),
        memlock::Verdict::CapIpcLock => Check::new(
            "memlock",
            Level::Ok,
            format!("{figure} (io_uring memory is not charged with CAP_IPC_LOCK)"),
        ),
        memlock::Verdict::TooSmall { .. } => Check::new("memlock", Level::Fail, figure).fix(fix),
    }
}

/// `kernel.io_uring_disabled` (0 enabled, 1 only for `io_uring_group`, 2 off; absent on
/// older kernels) and the outcome of a real `io_uring_setup`.
pub fn judge_io_uring(disabled: Option<u64>, setup: &Result<u32, String>) -> Check {
    let sysctl = match disabled {
        None => "kernel.io_uring_disabled not present".to_string(),
        Some(v) => format!("kernel.io_uring_disabled = {v}"),
    };
    match setup {
        Ok(features) => Check::new(
            "io_uring",
            Level::Ok,
            format!("{sysctl}; io_uring_setup of a 4-entry ring works (features {features:#x})"),
        ),
        Err(e) => {
            let fix = match disabled {
                Some(2) => "`sysctl -w kernel.io_uring_disabled=0` (2 turns io_uring off for all)",
                Some(1) => {
                    "`sysctl -w kernel.io_uring_disabled=0`, or add the ringmail user to the \
                     group in kernel.io_uring_group"
                }
                _ => {
                    "a kernel with io_uring (5.8 or later, 6.x recommended) and no seccomp \
                     filter blocking io_uring_setup (containers: allow the io_uring syscalls)"
                }
            };
            Check::new(
                "io_uring",
                Level::Fail,
                format!("{sysctl}; io_uring_setup failed: {e}"),
            )
            .fix(fix)
        }
    }
}

/// `net.core.somaxconn` caps every listener's backlog.
pub fn judge_somaxconn(somaxconn: Option<u64>) -> Check {
    match somaxconn {
        None => Check::new("somaxconn", Level::Warn, "net.core.somaxconn not readable")
            .fix("check /proc/sys/net/core/somaxconn is mounted"),
        Some(v) if v >= LISTEN_BACKLOG => Check::new(
            "somaxconn",
            Level::Ok,
            format!("net.core.somaxconn = {v} ≥ the listen backlog {LISTEN_BACKLOG}"),
        ),
        Some(v) => Check::new(
            "somaxconn",
            Level::Warn,
            format!(
                "net.core.somaxconn = {v} caps the listen backlog ({LISTEN_BACKLOG}): bursts of \
                 connections are dropped"
            ),
        )
        .fix("`sysctl -w net.core.somaxconn=4096` (persist in /etc/sysctl.d/)"),
    }
}

/// Descriptors one process needs: every core's connections plus slack.
pub fn descriptors_needed(executors: &[ExecutorSettings]) -> u64 {
    executors
        .iter()
        .map(|e| e.connections_max as u64 + DESCRIPTORS_PER_CORE_SLACK)
        .sum::<u64>()
        + DESCRIPTORS_PROCESS_SLACK
}

/// RLIMIT_NOFILE: ringmail does not raise it, so the soft limit is what counts.
pub fn judge_nofile(soft: u64, hard: u64, needed: u64) -> Check {
    let figure = format!(
        "soft {} / hard {}, connections_max on every core + slack need {needed}",
        limit_text(soft),
        limit_text(hard)
    );
    if soft >= needed {
        Check::new("nofile", Level::Ok, figure)
    } else if hard >= needed {
        Check::new("nofile", Level::Warn, figure).fix(format!(
            "raise the soft limit: `ulimit -n {needed}` before starting, or systemd \
             `LimitNOFILE={needed}`; else accepts fail with EMFILE before connections_max"
        ))
    } else {
        Check::new("nofile", Level::Warn, figure).fix(format!(
            "raise the hard limit (systemd `LimitNOFILE={needed}`, /etc/security/limits.conf) \
             or lower [cores] connections_max"
        ))
    }
}

/// `fs.file-max`: the system-wide descriptor limit.
pub fn judge_file_max(file_max: Option<u64>, needed: u64) -> Check {
    match file_max {
        None => Check::new("file-max", Level::Warn, "fs.file-max not readable"),
        Some(v) if v >= needed => Check::new(
            "file-max",
            Level::Ok,
            format!("fs.file-max = {v} ≥ {needed}"),
        ),
        Some(v) => Check::new(
            "file-max",
            Level::Warn,
            format!("fs.file-max = {v} < {needed} descriptors ringmail may open"),
        )
        .fix(format!("`sysctl -w fs.file-max={}`", needed * 2)),
    }
}

/// The frequency governor per configured CPU (`None`: not exposed, usual on VMs).
pub fn judge_governors(governors: &[(usize, Option<String>)]) -> Check {
    let mut slow = Vec::new();
    // CPUs grouped by what they report, in order of first appearance.
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for (cpu, g) in governors {
        let what = g.as_deref().unwrap_or("not exposed");
        if g.as_deref().is_some_and(|g| g != "performance") {
            slow.push(*cpu);
        }
        match groups.iter_mut().find(|(w, _)| *w == what) {
            Some((_, cpus)) => cpus.push(*cpu),
            None => groups.push((what, vec![*cpu])),
        }
    }
    let figure = groups
        .iter()
        .map(|(what, cpus)| format!("cpu {}: {what}", cpu_list_text(cpus)))
        .collect::<Vec<_>>()
        .join(", ");
    if slow.is_empty() {
        let note = if governors.iter().all(|(_, g)| g.is_none()) {
            " (no cpufreq driver: a VM or fixed-frequency host, nothing to set)"
        } else {
            ""
        };
        Check::new("governor", Level::Ok, format!("{figure}{note}"))
    } else {
        let list = slow
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        Check::new("governor", Level::Warn, figure).fix(format!(
            "`cpupower -c {list} frequency-set -g performance`: a polling executor that \
             parks and wakes often is slowed by frequency ramps"
        ))
    }
}

/// One NIC: its name, receive queues and the CPUs its traffic interrupts may run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    pub rx_queues: usize,
    /// Per traffic interrupt: its number, name and `smp_affinity_list` (None: unreadable).
    pub irqs: Vec<(u32, String, Option<Vec<usize>>)>,
}

/// Receive queues against the executors: fewer queues than cores leave RSS unable to spread
/// receive processing (SO_REUSEPORT still spreads the connections).
pub fn judge_nic_queues(nics: &[Nic], cores: usize) -> Check {
    if nics.is_empty() {
        return Check::new(
            "nic-queues",
            Level::Ok,
            "no physical NIC (loopback only): nothing to spread",
        );
    }
    let figure = nics
        .iter()
        .map(|n| format!("{}: {} rx queue(s)", n.name, n.rx_queues))
        .collect::<Vec<_>>()
        .join(", ");
    let short: Vec<&Nic> = nics.iter().filter(|n| n.rx_queues < cores).collect();
    if short.is_empty() {
        Check::new(
            "nic-queues",
            Level::Ok,
            format!("{figure} for {cores} executor(s)"),
        )
    } else {
        let n = &short[0];
        Check::new(
            "nic-queues",
            Level::Warn,
            format!(
                "{figure} for {cores} executor(s): receive processing cannot follow every core"
            ),
        )
        .fix(format!(
            "`ethtool -L {} combined {cores}` if the NIC has more channels, else RPS: write the \
             executors' CPU mask to /sys/class/net/{}/queues/rx-*/rps_cpus",
            n.name, n.name
        ))
    }
}

/// Where the NIC's traffic interrupts may run, against the executors' CPUs. All of them
/// pinned to one executor CPU while several executors run makes that core do every core's
/// receive work.
pub fn judge_irq_affinity(nics: &[Nic], executor_cpus: &[usize]) -> Check {
    let irqs: Vec<&(u32, String, Option<Vec<usize>>)> =
        nics.iter().flat_map(|n| n.irqs.iter()).collect();
    if irqs.is_empty() {
        return Check::new(
            "irq-affinity",
            Level::Ok,
            "no NIC interrupt found in /proc/interrupts",
        );
    }
    let mut parts = Vec::new();
    let mut cpus_used: Vec<usize> = Vec::new();
    for (irq, name, affinity) in &irqs {
        match affinity {
            Some(list) => {
                parts.push(format!("{irq} {name} → {}", cpu_list_text(list)));
                cpus_used.extend(list.iter().copied());
            }
            None => parts.push(format!("{irq} {name} → ?")),
        }
    }
    cpus_used.sort_unstable();
    cpus_used.dedup();
    let on_executors: Vec<usize> = cpus_used
        .iter()
        .copied()
        .filter(|c| executor_cpus.contains(c))
        .collect();
    let figure = format!(
        "{}; executors on {}",
        parts.join(", "),
        cpu_list_text(executor_cpus)
    );
    if executor_cpus.len() > 1 && cpus_used.len() == 1 && on_executors.len() == 1 {
        Check::new("irq-affinity", Level::Warn, figure).fix(format!(
            "every NIC interrupt runs on cpu{}, which also runs an executor: spread them \
             (`echo CPU > /proc/irq/N/smp_affinity_list` per queue, or irqbalance), or leave \
             that CPU out of [cores] placement",
            on_executors[0]
        ))
    } else {
        Check::new("irq-affinity", Level::Ok, figure)
    }
}

fn cpu_list_text(list: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < list.len() {
        let start = list[i];
        let mut end = start;
        while i + 1 < list.len() && list[i + 1] == end + 1 {
            i += 1;
            end = list[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

/// One cpuidle state of a CPU: its name and exit latency in µs (`cpuidle/stateN/{name,latency}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleState {
    pub name: String,
    pub latency_us: u64,
}

/// Idle states against `server.cpu_wakeup_us_max` (see `runtime::idle`). `held_us` is the
/// PM QoS target in force now (readable by root only), `writable` whether this process could
/// open the QoS device to hold one.
pub fn judge_cpu_idle(
    driver: Option<&str>,
    states: &[IdleState],
    wanted_us: Option<u32>,
    held_us: Option<i32>,
    writable: bool,
) -> Check {
    let list: Vec<String> = states
        .iter()
        .map(|s| format!("{} {} µs", s.name, s.latency_us))
        .collect();
    let mut figure = match driver {
        None => "cpuidle not exposed".to_string(),
        Some(d) => format!("driver {d}: {}", list.join(", ")),
    };
    match held_us {
        // The kernel's default: no process asks for anything.
        Some(held) if i64::from(held) == crate::config::CPU_WAKEUP_US_MAX_LIMIT as i64 => {
            figure.push_str("; no wake-up latency requested now")
        }
        Some(held) => figure.push_str(&format!("; wake-up latency now held to {held} µs")),
        None => {}
    }
    let deepest = states.iter().map(|s| s.latency_us).max().unwrap_or(0);
    match wanted_us {
        Some(us) if !writable => Check::new("cpu-idle", Level::Warn, figure).fix(format!(
            "server.cpu_wakeup_us_max = {us} needs write access to {}: run as root, or \
             remove the key",
            crate::runtime::idle::QOS_DEVICE
        )),
        Some(us) => {
            figure.push_str(&format!(
                "; ringmail will hold {us} µs (server.cpu_wakeup_us_max)"
            ));
            Check::new("cpu-idle", Level::Ok, figure)
        }
        None if deepest > 0 => {
            figure.push_str(
                "; idle CPUs may sleep in the deeper states (server.cpu_wakeup_us_max = 0 \
                 keeps them polling: faster durable ingest at low concurrency, more power)",
            );
            Check::new("cpu-idle", Level::Ok, figure)
        }
        None => Check::new("cpu-idle", Level::Ok, figure),
    }
}

/// Transparent hugepages: `always` lets khugepaged compact memory behind a core's back.
pub fn judge_thp(selected: Option<&str>) -> Check {
    match selected {
        None => Check::new("thp", Level::Ok, "transparent hugepages not exposed"),
        Some("always") => Check::new(
            "thp",
            Level::Warn,
            "transparent_hugepage = always: compaction stalls show up as latency spikes",
        )
        .fix("`echo madvise > /sys/kernel/mm/transparent_hugepage/enabled`"),
        Some(s) => Check::new("thp", Level::Ok, format!("transparent_hugepage = {s}")),
    }
}

/// Swap: with swap active, a swapped-out index page stalls a whole core.
pub fn judge_swap(swap_areas: usize, swappiness: Option<u64>) -> Check {
    let s = swappiness.map_or("?".to_string(), |v| v.to_string());
    if swap_areas == 0 {
        Check::new("swap", Level::Ok, format!("no swap (vm.swappiness = {s})"))
    } else if swappiness.is_some_and(|v| v <= 10) {
        Check::new(
            "swap",
            Level::Ok,
            format!("{swap_areas} swap area(s), vm.swappiness = {s}"),
        )
    } else {
        Check::new(
            "swap",
            Level::Warn,
            format!("{swap_areas} swap area(s), vm.swappiness = {s}"),
        )
        .fix("`sysctl -w vm.swappiness=1`: a core whose pages are swapped out stalls every session on it")
    }
}

// ---------------------------------------------------------------------------------------
// Reading the host.

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Sets up (and closes) a 4-entry io_uring; returns its feature bits.
pub fn try_io_uring_setup() -> Result<u32, String> {
    // struct io_uring_params is 120 bytes: ten u32 fields (features at index 5) followed by
    // the sq and cq offset structs; u64 words keep it aligned for the kernel.
    let mut params = [0u64; 15];
    // SAFETY: io_uring_setup(2) reads and writes `params`, which is zeroed and as large as
    // struct io_uring_params; the returned descriptor is closed right below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            4 as libc::c_uint,
            params.as_mut_ptr().cast::<libc::c_void>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: fd is the descriptor io_uring_setup just returned, owned by nobody else.
    unsafe { libc::close(fd as libc::c_int) };
    // features: the sixth u32, i.e. the high half of the third u64 on little-endian.
    let words: Vec<u32> = params
        .iter()
        .flat_map(|w| {
            let b = w.to_ne_bytes();
            [
                u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
                u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            ]
        })
        .collect();
    Ok(words[5])
}

/// The NICs with a device behind them (loopback, bridges, ifb and veth have none).
fn read_nics(interrupts: &[IrqLine]) -> Vec<Nic> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut nics = Vec::new();
    for name in names {
        let base = Path::new("/sys/class/net").join(&name);
        let Ok(device) = std::fs::read_link(base.join("device")) else {
            continue;
        };
        let device_name = device
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rx_queues = std::fs::read_dir(base.join("queues"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                    .count()
            })
            .unwrap_or(0);
        let tokens = [name.clone(), device_name];
        let irqs = nic_irqs(interrupts, &tokens)
            .into_iter()
            .map(|l| {
                let affinity = read(format!("/proc/irq/{}/smp_affinity_list", l.irq))
                    .and_then(|t| parse_cpu_list(&t));
                (l.irq, l.actions().to_string(), affinity)
            })
            .collect();
        nics.push(Nic {
            name,
            rx_queues,
            irqs,
        });
    }
    nics
}

/// Runs every check against this host and `config`.
pub fn run(config: &Config) -> Report {
    let mut checks = Vec::new();
    let cpus = match crate::runtime::resolve_cpus(&config.cores.placement)
        .and_then(|cpus| crate::runtime::check_overrides(&config.cores, &cpus).map(|()| cpus))
    {
        Ok(cpus) => {
            let how = match &config.cores.placement {
                Cores::All => "all online CPUs",
                Cores::List(_) => "as listed",
            };
            checks.push(Check::new(
                "placement",
                Level::Ok,
                format!(
                    "{} executor(s) on cpu {} ({how})",
                    cpus.len(),
                    cpu_list_text(&cpus)
                ),
            ));
            cpus
        }
        Err(e) => {
            checks.push(
                Check::new("placement", Level::Fail, e.to_string())
                    .fix("list only online CPUs in [cores] placement and [[cores.override]] core"),
            );
            match &config.cores.placement {
                Cores::List(l) => l.clone(),
                Cores::All => vec![0],
            }
        }
    };
    let executors = config.cores.executors(&cpus);

    let needed = memlock::bytes_needed(&executors);
    checks.push(match memlock::limits() {
        Ok((soft, hard)) => judge_memlock(soft, hard, needed, memlock::has_cap_ipc_lock()),
        Err(e) => Check::new("memlock", Level::Fail, e.to_string()),
    });

    let disabled = read("/proc/sys/kernel/io_uring_disabled").and_then(|t| parse_u64(&t));
    checks.push(judge_io_uring(disabled, &try_io_uring_setup()));

    checks.push(judge_somaxconn(
        read("/proc/sys/net/core/somaxconn").and_then(|t| parse_u64(&t)),
    ));

    let fds = descriptors_needed(&executors);
    checks.push(match memlock::getrlimit(memlock::Resource::Nofile) {
        Ok((soft, hard)) => judge_nofile(soft, hard, fds),
        Err(_) => Check::new("nofile", Level::Warn, "getrlimit(RLIMIT_NOFILE) failed"),
    });
    checks.push(judge_file_max(
        read("/proc/sys/fs/file-max").and_then(|t| parse_u64(&t)),
        fds,
    ));

    let governors: Vec<(usize, Option<String>)> = cpus
        .iter()
        .map(|&cpu| {
            let g = read(format!(
                "/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"
            ))
            .map(|t| t.trim().to_string());
            (cpu, g)
        })
        .collect();
    checks.push(judge_governors(&governors));

    let cpuidle = Path::new("/sys/devices/system/cpu/cpuidle");
    let idle_cpu = cpus.first().copied().unwrap_or(0);
    let states: Vec<IdleState> = (0..)
        .map_while(|i| {
            let dir = format!("/sys/devices/system/cpu/cpu{idle_cpu}/cpuidle/state{i}");
            let name = read(format!("{dir}/name"))?.trim().to_string();
            let latency_us = read(format!("{dir}/latency")).and_then(|t| parse_u64(&t))?;
            Some(IdleState { name, latency_us })
        })
        .collect();
    checks.push(judge_cpu_idle(
        read(cpuidle.join("current_driver"))
            .as_deref()
            .map(str::trim),
        &states,
        config.server.cpu_wakeup_us_max,
        crate::runtime::idle::current_us(),
        crate::runtime::idle::may_hold(),
    ));

    let interrupts = read("/proc/interrupts")
        .map(|t| parse_interrupts(&t))
        .unwrap_or_default();
    let nics = read_nics(&interrupts);
    checks.push(judge_nic_queues(&nics, cpus.len()));
    checks.push(judge_irq_affinity(&nics, &cpus));

    let thp = read("/sys/kernel/mm/transparent_hugepage/enabled");
    checks.push(judge_thp(thp.as_deref().and_then(parse_selected)));
    checks.push(judge_swap(
        read("/proc/swaps").map_or(0, |t| parse_swaps(&t)),
        read("/proc/sys/vm/swappiness").and_then(|t| parse_u64(&t)),
    ));
    debug_assert_eq!(
        checks.iter().map(|c| c.name).collect::<Vec<_>>(),
        CHECK_NAMES.to_vec()
    );
    Report { checks }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERRUPTS_VIRTIO: &str = "\
           CPU0       CPU1       
  0:         40          0   IO-APIC   2-edge      timer
 28:          0          0 PCI-MSIX-0000:00:01.0   0-edge      virtio0-config
 34:        434          0 PCI-MSIX-0000:00:05.0   1-edge      virtio4-input
 37:          0          0 PCI-MSIX-0000:00:03.0   0-edge      virtio2-config
 38:          0       4523 PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0
 39:       3102          0 PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0
NMI:          0          0   Non-maskable interrupts
LOC:    1234567    2345678   Local timer interrupts
ERR:          0
";

    const INTERRUPTS_MLX5: &str = "\
            CPU0       CPU1       CPU2       CPU3
 120:          5          0          0          0  IR-PCI-MSI-0000:3b:00.0    0-edge      mlx5_async0@pci:0000:3b:00.0
 121:     912345          0          0          0  IR-PCI-MSI-0000:3b:00.0    1-edge      mlx5_comp0@pci:0000:3b:00.0
 122:          0     812345          0          0  IR-PCI-MSI-0000:3b:00.0    2-edge      mlx5_comp1@pci:0000:3b:00.0
 123:          0          0     712345          0  IR-PCI-MSI-0000:3b:00.0    3-edge      mlx5_comp2@pci:0000:3b:00.0
 124:          0          0          0     612345  IR-PCI-MSI-0000:3b:00.0    4-edge      mlx5_comp3@pci:0000:3b:00.0
 130:         17          0          0          0  IR-PCI-MSI-0000:00:1f.6    0-edge      eth1
";

    fn names(lines: &[&IrqLine]) -> Vec<String> {
        lines.iter().map(|l| l.actions().to_string()).collect()
    }

    #[test]
    fn interrupts_virtio() {
        let lines = parse_interrupts(INTERRUPTS_VIRTIO);
        assert_eq!(lines.len(), 6, "numbered lines only: {lines:#?}");
        assert_eq!(lines[4].irq, 38);
        assert_eq!(lines[4].counts, vec![0, 4523]);
        assert_eq!(lines[4].actions(), "virtio2-input.0");
        assert_eq!(lines[0].actions(), "timer");
        // eth0 is virtio2: its traffic vectors, not the config vector, not virtio4 (a
        // different device).
        let nic = nic_irqs(&lines, &["eth0".into(), "virtio2".into()]);
        assert_eq!(names(&nic), vec!["virtio2-input.0", "virtio2-output.0"]);
    }

    #[test]
    fn interrupts_mlx5() {
        let lines = parse_interrupts(INTERRUPTS_MLX5);
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[1].counts, vec![912345, 0, 0, 0]);
        let nic = nic_irqs(&lines, &["ens1f0".into(), "0000:3b:00.0".into()]);
        assert_eq!(
            names(&nic),
            vec![
                "mlx5_comp0@pci:0000:3b:00.0",
                "mlx5_comp1@pci:0000:3b:00.0",
                "mlx5_comp2@pci:0000:3b:00.0",
                "mlx5_comp3@pci:0000:3b:00.0"
            ]
        );
        // A NIC named in its own interrupt line.
        let eth1 = nic_irqs(&lines, &["eth1".into(), "0000:00:1f.6".into()]);
        assert_eq!(names(&eth1), vec!["eth1"]);
        // An empty token matches nothing.
        assert!(nic_irqs(&lines, &[String::new()]).is_empty());
    }

    #[test]
    fn interrupts_garbage_is_skipped() {
        assert!(parse_interrupts("").is_empty());
        assert!(parse_interrupts("CPU0\nnot an irq line\n x: 1 2\n").is_empty());
        // Fewer counts than CPUs (a short line) keeps what was there.
        let l = parse_interrupts("  CPU0 CPU1\n 5: 7 edge-thing  dev\n");
        assert_eq!(l[0].counts, vec![7]);
        assert_eq!(l[0].actions(), "dev");
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(vec![0, 1]));
        assert_eq!(
            parse_cpu_list("0-3,8,10-11"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
        assert_eq!(parse_cpu_list("0-99999999"), None);
        assert_eq!(cpu_list_text(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
    }

    #[test]
    fn sysctl_selector_and_swaps() {
        assert_eq!(parse_u64("4096\n"), Some(4096));
        assert_eq!(parse_u64("x"), None);
        assert_eq!(parse_selected("always [madvise] never\n"), Some("madvise"));
        assert_eq!(parse_selected("[always] madvise never"), Some("always"));
        assert_eq!(parse_selected("always madvise never"), None);
        let swaps = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";
        assert_eq!(parse_swaps(swaps), 0);
        let one =
            format!("{swaps}/swapfile                               file\t\t2097148\t\t0\t\t-2\n");
        assert_eq!(parse_swaps(&one), 1);
    }

    #[test]
    fn memlock_verdicts() {
        let mib = 1 << 20;
        assert_eq!(
            judge_memlock(8 * mib, 8 * mib, 2 * mib, false).level,
            Level::Ok
        );
        // Soft too small, hard enough: serve raises it.
        let c = judge_memlock(64 * 1024, 8 * mib, 2 * mib, false);
        assert_eq!(c.level, Level::Ok);
        assert!(c.figure.contains("raises"), "{c}");
        // Neither: fail, with the fixes.
        let c = judge_memlock(mib, 8 * mib, 100 * mib, false);
        assert_eq!(c.level, Level::Fail);
        assert!(
            c.fix.contains("LimitMEMLOCK") && c.fix.contains("io_memory_bytes"),
            "{c}"
        );
        // CAP_IPC_LOCK covers it if glommio's floor fits.
        assert_eq!(
            judge_memlock(mib, 8 * mib, 100 * mib, true).level,
            Level::Ok
        );
        assert_eq!(judge_memlock(64, 64, 100 * mib, true).level, Level::Fail);
        assert_eq!(
            judge_memlock(u64::MAX, u64::MAX, 100 * mib, false).level,
            Level::Ok
        );
    }

    #[test]
    fn io_uring_verdicts() {
        assert_eq!(judge_io_uring(Some(0), &Ok(0x3fff)).level, Level::Ok);
        let c = judge_io_uring(Some(2), &Err("Operation not permitted".into()));
        assert_eq!(c.level, Level::Fail);
        assert!(c.fix.contains("io_uring_disabled=0"), "{c}");
        let c = judge_io_uring(None, &Err("Function not implemented".into()));
        assert!(c.fix.contains("seccomp"), "{c}");
    }

    #[test]
    fn limits_verdicts() {
        assert_eq!(judge_somaxconn(Some(4096)).level, Level::Ok);
        assert_eq!(judge_somaxconn(Some(128)).level, Level::Warn);
        assert_eq!(judge_somaxconn(None).level, Level::Warn);
        let e = ExecutorSettings {
            connections_max: 1000,
            ..ExecutorSettings::DEFAULT
        };
        let need = descriptors_needed(&[e, e]);
        assert_eq!(
            need,
            2 * (1000 + DESCRIPTORS_PER_CORE_SLACK) + DESCRIPTORS_PROCESS_SLACK
        );
        assert_eq!(judge_nofile(need, need, need).level, Level::Ok);
        let c = judge_nofile(1024, 1 << 20, need);
        assert_eq!(c.level, Level::Warn);
        assert!(c.fix.contains("ulimit -n"), "{c}");
        let c = judge_nofile(1024, 1024, need);
        assert!(c.fix.contains("connections_max"), "{c}");
        assert_eq!(judge_file_max(Some(1 << 20), need).level, Level::Ok);
        assert_eq!(judge_file_max(Some(100), need).level, Level::Warn);
    }

    #[test]
    fn governor_verdicts() {
        let c = judge_governors(&[(0, None), (1, None)]);
        assert_eq!(c.level, Level::Ok);
        assert!(c.figure.starts_with("cpu 0-1: not exposed"), "{c}");
        let c = judge_governors(&[
            (0, Some("performance".into())),
            (2, Some("powersave".into())),
            (3, Some("powersave".into())),
        ]);
        assert_eq!(c.level, Level::Warn);
        assert_eq!(c.figure, "cpu 0: performance, cpu 2-3: powersave");
        assert!(c.fix.contains("-c 2,3 "), "{c}");
    }

    fn nic(rx: usize, irqs: &[(u32, &str, &[usize])]) -> Nic {
        Nic {
            name: "eth0".into(),
            rx_queues: rx,
            irqs: irqs
                .iter()
                .map(|(n, s, a)| (*n, s.to_string(), Some(a.to_vec())))
                .collect(),
        }
    }

    #[test]
    fn nic_verdicts() {
        assert_eq!(judge_nic_queues(&[], 4).level, Level::Ok);
        assert_eq!(judge_nic_queues(&[nic(4, &[])], 4).level, Level::Ok);
        let c = judge_nic_queues(&[nic(1, &[])], 2);
        assert_eq!(c.level, Level::Warn);
        assert!(c.fix.contains("rps_cpus"), "{c}");
        // Spread over both executor CPUs (this VM: 0-1).
        let spread = nic(1, &[(38, "virtio2-input.0", &[0, 1])]);
        assert_eq!(judge_irq_affinity(&[spread], &[0, 1]).level, Level::Ok);
        // Everything on cpu0, which runs an executor of two: warn.
        let pinned = nic(2, &[(121, "q0", &[0]), (122, "q1", &[0])]);
        let c = judge_irq_affinity(std::slice::from_ref(&pinned), &[0, 1]);
        assert_eq!(c.level, Level::Warn);
        assert!(c.fix.contains("cpu0"), "{c}");
        // On a CPU left out of the placement: fine.
        assert_eq!(judge_irq_affinity(&[pinned], &[1, 2]).level, Level::Ok);
        assert_eq!(judge_irq_affinity(&[], &[0]).level, Level::Ok);
    }

    #[test]
    fn cpu_idle_verdicts() {
        let states = [
            IdleState {
                name: "POLL".into(),
                latency_us: 0,
            },
            IdleState {
                name: "C6".into(),
                latency_us: 133,
            },
        ];
        // Deep states, nothing asked: ok, and the figure names the key that would help.
        let c = judge_cpu_idle(Some("intel_idle"), &states, None, None, false);
        assert_eq!(c.level, Level::Ok);
        assert!(
            c.figure.contains("C6 133 µs") && c.figure.contains("cpu_wakeup_us_max = 0"),
            "{c}"
        );
        // Asked but the device is not writable: warn, with the fix.
        let c = judge_cpu_idle(Some("intel_idle"), &states, Some(0), None, false);
        assert_eq!(c.level, Level::Warn);
        assert!(c.fix.contains("/dev/cpu_dma_latency"), "{c}");
        // Asked and writable: ok, says what will be held and what is held now.
        let c = judge_cpu_idle(
            Some("haltpoll"),
            &states,
            Some(0),
            Some(2_000_000_000),
            true,
        );
        assert_eq!(c.level, Level::Ok);
        assert!(
            c.figure.contains("will hold 0 µs")
                && c.figure.contains("no wake-up latency requested"),
            "{c}"
        );
        let c = judge_cpu_idle(Some("haltpoll"), &states, None, Some(20), true);
        assert!(c.figure.contains("now held to 20 µs"), "{c}");
        // No cpuidle at all (some containers): ok.
        let c = judge_cpu_idle(None, &[], None, None, false);
        assert_eq!(c.level, Level::Ok);
        assert!(c.figure.contains("not exposed"), "{c}");
    }

    #[test]
    fn thp_and_swap_verdicts() {
        assert_eq!(judge_thp(Some("madvise")).level, Level::Ok);
        assert_eq!(judge_thp(Some("always")).level, Level::Warn);
        assert_eq!(judge_thp(None).level, Level::Ok);
        assert_eq!(judge_swap(0, Some(60)).level, Level::Ok);
        assert_eq!(judge_swap(1, Some(1)).level, Level::Ok);
        assert_eq!(judge_swap(1, Some(60)).level, Level::Warn);
    }

    #[test]
    fn report_lines_and_exit() {
        let mut r = Report::default();
        r.checks.push(Check::new("somaxconn", Level::Ok, "4096"));
        assert!(!r.failed());
        r.checks
            .push(Check::new("memlock", Level::Fail, "too small").fix("raise it"));
        assert!(r.failed());
        let text = r.to_string();
        assert!(
            text.lines().any(|l| l.starts_with("fail")
                && l.contains("memlock")
                && l.ends_with("fix: raise it")),
            "{text}"
        );
    }

    #[test]
    fn io_uring_setup_runs_here() {
        // ringmail's executors need io_uring, so every machine its tests run on has it.
        let features = try_io_uring_setup().unwrap();
        // IORING_FEAT_SINGLE_MMAP (bit 0) exists since 5.4.
        assert_ne!(features & 1, 0, "features {features:#x}");
    }
}
