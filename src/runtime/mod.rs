//! Executors and their lifecycle: the only module that builds glommio executors.
//!
//! `serve` does, in order: lock the data dir, check the listen ports are free (and resolve
//! port 0), load the TLS certificates (generating the self-signed one on a fresh install),
//! raise RLIMIT_MEMLOCK, hold the CPU wake-up latency when `server.cpu_wakeup_us_max` asks
//! (`idle`), recover the store, then start one pinned executor per configured core.
//! Each executor joins the mesh, opens its store, binds every listener with SO_REUSEPORT and
//! accepts its own connections. A watcher thread per executor joins its
//! handle, so an executor that fails to start or dies stops the process with its error.
//! SIGTERM/SIGINT close every core's shutdown semaphore: listeners stop, idle sessions get
//! `421`, sessions inside a transaction finish it (bounded by `timeout_ms_drain`), stores
//! flush, and the process exits 0. SIGHUP re-reads the TLS certificate files (`net::tls`).

pub mod auth;
pub mod control;
pub mod core;
pub mod directory;
pub mod file;
pub mod handoff;
pub mod idle;
pub mod lock;
pub mod memlock;
pub mod mesh;
pub mod placement;
pub mod watch;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use glommio::{Latency, LocalExecutorBuilder, Placement, Shares, TaskQueueHandle};

use crate::accounts::Accounts;
use crate::config::{Config, Cores, CoresConfig, ExecutorSettings, FsyncPolicy};
use crate::net::tls::{self, TlsAcceptor, TlsShared};
use crate::net::{self, Listener, Protocol};
use crate::store::{self, CoreIndex, Store, StoreConfig};

use self::core::Core;
use self::mesh::Mesh;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("create data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error(transparent)]
    Memlock(#[from] memlock::MemlockError),
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error("store recovery: {0}")]
    Recovery(#[from] store::StoreError),
    #[error("user table: {0}")]
    Accounts(#[from] crate::accounts::AccountsError),
    #[error("alias table: {0}")]
    Aliases(#[from] crate::aliases::AliasError),
    #[error("cores: {0}")]
    Cores(String),
    #[error("core {core} (cpu {cpu}) failed: {reason}")]
    CoreFailed {
        core: usize,
        cpu: usize,
        reason: String,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error("signal setup: {0}")]
    Signals(std::io::Error),
}

/// What a core reports to the main thread.
enum CoreEvent {
    Ready,
    Failed { core: usize, reason: String },
    Exited,
}

/// Resolves `cores` against the CPUs that are online.
pub fn resolve_cpus(cores: &Cores) -> Result<Vec<usize>, RuntimeError> {
    let online: Vec<usize> = glommio::CpuSet::online()
        .map_err(|e| RuntimeError::Cores(format!("cannot read the CPU topology: {e}")))?
        .iter()
        .map(|l| l.cpu)
        .collect();
    let mut cpus = match cores {
        Cores::All => online.clone(),
        Cores::List(list) => {
            for cpu in list {
                if !online.contains(cpu) {
                    return Err(RuntimeError::Cores(format!(
                        "CPU {cpu} is not online (online: {online:?})"
                    )));
                }
            }
            list.clone()
        }
    };
    cpus.sort_unstable();
    if cpus.is_empty() {
        return Err(RuntimeError::Cores("no CPU is online".into()));
    }
    Ok(cpus)
}

/// Every `[[cores.override]]` must name a CPU that runs an executor (with `placement = "all"`
/// this is known only here).
pub fn check_overrides(cores: &CoresConfig, cpus: &[usize]) -> Result<(), RuntimeError> {
    for o in &cores.overrides {
        if !cpus.contains(&o.cpu) {
            return Err(RuntimeError::Cores(format!(
                "[[cores.override]] core = {}: no executor runs on that CPU (executors: {cpus:?})",
                o.cpu
            )));
        }
    }
    Ok(())
}

/// The builder of core `core`'s executor, pinned to `cpu`, with its `[cores]` settings.
fn executor_builder(core: usize, cpu: usize, e: &ExecutorSettings) -> LocalExecutorBuilder {
    let mut builder = LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name(&format!("ringmail-core{core}"))
        .io_memory(e.io_memory_bytes)
        // Validated when the config is loaded: a power of two ≥ 16.
        .ring_depth(e.ring_depth)
        .preempt_timer(Duration::from_micros(e.preempt_timer_us));
    if e.spin_before_park_us > 0 {
        builder = builder.spin_before_park(Duration::from_micros(e.spin_before_park_us));
    }
    builder
}

/// This core's two task queues: sessions (accept loops and the connections they spawn, which
/// inherit the queue) and background work (the outbound sender), sharing the CPU by
/// `[cores] shares_sessions` : `shares_background` when both have work.
struct TaskQueues {
    sessions: TaskQueueHandle,
    background: TaskQueueHandle,
}

impl TaskQueues {
    fn create(cores: &CoresConfig) -> TaskQueues {
        let ex = glommio::executor();
        TaskQueues {
            sessions: ex.create_task_queue(
                Shares::Static(cores.shares_sessions),
                Latency::NotImportant,
                "sessions",
            ),
            background: ex.create_task_queue(
                Shares::Static(cores.shares_background),
                Latency::NotImportant,
                "background",
            ),
        }
    }
}

/// Spawns `fut` into task queue `tq` of this executor.
fn spawn_into<T: 'static>(
    fut: impl std::future::Future<Output = T> + 'static,
    tq: TaskQueueHandle,
    what: &str,
) -> Result<glommio::Task<T>, String> {
    glommio::spawn_local_into(fut, tq).map_err(|e| format!("spawning the {what}: {e}"))
}

/// Runs the server until SIGTERM/SIGINT. Prints the listening addresses and `ready` on
/// stdout once every core accepts connections.
pub fn serve(config: Config) -> Result<(), RuntimeError> {
    let data_dir = config.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| RuntimeError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let _lock = lock::DataDirLock::acquire(&data_dir)?;
    let cpus = resolve_cpus(&config.cores.placement)?;
    check_overrides(&config.cores, &cpus)?;
    let ncores = cpus.len();

    // Block the signals in every thread; the main thread takes them with sigtimedwait.
    let signals = signal_set();
    // SAFETY: sigmask manipulation of the calling thread with a valid set.
    if unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut()) } != 0 {
        return Err(RuntimeError::Signals(std::io::Error::last_os_error()));
    }

    // Every listener's addresses are checked together (a port named twice is an error).
    let mut kinds = Vec::new();
    let mut addrs = Vec::new();
    let listener = |protocol, implicit_tls| Listener {
        protocol,
        implicit_tls,
    };
    for (kind, list) in [
        (listener(Protocol::Smtp, false), &config.smtp.listen),
        (
            listener(Protocol::Submission, false),
            &config.submission.listen,
        ),
        (
            listener(Protocol::Submission, true),
            &config.submission.listen_tls,
        ),
        (listener(Protocol::Imap, false), &config.imap.listen),
        (listener(Protocol::Imap, true), &config.imap.listen_tls),
        (listener(Protocol::Pop3, false), &config.pop3.listen),
        (listener(Protocol::Pop3, true), &config.pop3.listen_tls),
    ] {
        for a in list {
            kinds.push(kind);
            addrs.push(*a);
        }
    }
    // `[metrics] listen` is checked and locked with the others; core 0 serves it.
    let metrics_from = addrs.len();
    addrs.extend(config.metrics.listen.iter().copied());
    let (mut resolved, _port_locks) = net::precheck(&addrs)?;
    let metrics_listen = Arc::new(resolved.split_off(metrics_from));
    let metrics_registry = crate::metrics::MetricsRegistry::new(ncores);
    let listen: Vec<(Listener, SocketAddr)> = kinds.into_iter().zip(resolved).collect();
    let tls = Arc::new(load_tls(&config)?);
    memlock::ensure_executors(&config.cores.executors(&cpus))?;
    // Held until serve returns (the kernel also drops it if the process dies).
    let _wakeup = config
        .server
        .cpu_wakeup_us_max
        .and_then(|us| match idle::hold(us) {
            Ok(held) => {
                println!(
                    "ringmail: holding idle CPUs to a {} µs wake-up ({})",
                    held.us(),
                    idle::QOS_DEVICE
                );
                Some(held)
            }
            Err(e) => {
                eprintln!(
                    "ringmail: {e}; idle CPUs keep their deeper states (run as root or give write \
                 access to {}, or remove server.cpu_wakeup_us_max)",
                    idle::QOS_DEVICE
                );
                None
            }
        });

    let started = Instant::now();
    let recovered = store::recover(&data_dir, ncores, &|user: &str| {
        placement::owner_core(user, ncores)
    })?;
    let r = &recovered.report;
    println!(
        "ringmail: recovered {} messages in {} mailboxes ({} bytes scanned) in {:.3}s",
        r.messages,
        r.mailboxes,
        r.bytes_scanned,
        started.elapsed().as_secs_f64()
    );
    for (path, at, why) in &r.truncated {
        println!("ringmail: truncated {} at byte {at}: {why}", path.display());
    }
    let accounts = Accounts::load(&data_dir)?;
    // A broken aliases file stops the start here (a running server keeps its last good table).
    crate::aliases::Aliases::load(&data_dir)?;

    let config = Arc::new(config);
    let stop = Arc::new(AtomicBool::new(false));
    let drained = Arc::new(AtomicUsize::new(0));
    let (events_tx, events_rx) = mpsc::channel::<CoreEvent>();
    let mesh_builder = (ncores > 1).then(|| mesh::builder(ncores));
    let listen = Arc::new(listen);

    // The operator's control socket: one channel per core, served by this thread.
    let mut control_rx = Vec::with_capacity(ncores);
    let mut control_tx = Vec::with_capacity(ncores);
    for _ in 0..ncores {
        let (tx, rx) = mpsc::channel::<control::ControlRequest>();
        control_tx.push(tx);
        control_rx.push(Some(rx));
    }
    let control_server = control::ControlServer::bind(&data_dir, control_tx)?;

    let mut indexes: Vec<Option<CoreIndex>> = recovered.cores.into_iter().map(Some).collect();
    for (core, &cpu) in cpus.iter().enumerate() {
        let index = indexes
            .get_mut(core)
            .and_then(Option::take)
            .ok_or_else(|| {
                RuntimeError::Cores(format!("recovery returned no index for core {core}"))
            })?;
        let config = config.clone();
        let stop = stop.clone();
        let drained = drained.clone();
        let tx = events_tx.clone();
        let mesh_builder = mesh_builder.clone();
        let listen = listen.clone();
        let accounts = accounts.clone();
        let tls = tls.clone();
        let metrics = crate::metrics::CoreWiring {
            core,
            registry: metrics_registry.clone(),
            listen: metrics_listen.clone(),
        };
        let control = control_rx[core]
            .take()
            .ok_or_else(|| RuntimeError::Cores(format!("no control channel for core {core}")))?;
        let builder = executor_builder(core, cpu, &config.cores.executor_for(cpu));
        let spawned = builder.spawn(move || async move {
            let result = core_main(
                core,
                cpu,
                ncores,
                config,
                index,
                mesh_builder,
                &listen,
                accounts,
                tls,
                control,
                metrics,
                Shutdown { stop, drained },
                &tx,
            )
            .await;
            let _ = match result {
                Ok(()) => tx.send(CoreEvent::Exited),
                Err(reason) => tx.send(CoreEvent::Failed { core, reason }),
            };
        });
        let handle = spawned.map_err(|e| RuntimeError::CoreFailed {
            core,
            cpu,
            reason: e.to_string(),
        })?;
        // The join handle is the only place a start-up failure shows (PLATFORM.md).
        let tx = events_tx.clone();
        std::thread::Builder::new()
            .name(format!("ringmail-watch{core}"))
            .spawn(move || {
                if let Err(e) = handle.join() {
                    let _ = tx.send(CoreEvent::Failed {
                        core,
                        reason: e.to_string(),
                    });
                }
            })
            .map_err(|e| RuntimeError::CoreFailed {
                core,
                cpu,
                reason: format!("cannot start watcher thread: {e}"),
            })?;
    }
    drop(events_tx);

    let mut ready = 0;
    let mut exited = 0;
    let mut failure: Option<RuntimeError> = None;
    let mut drain_deadline: Option<Instant> = None;
    loop {
        if exited == ncores {
            break;
        }
        // Signals: a short sigtimedwait, then the core events.
        control_server.poll();
        let signal = if stop.load(Ordering::Relaxed) {
            None
        } else {
            take_signal(&signals, Duration::from_millis(50))
        };
        if signal == Some(libc::SIGHUP) {
            // New certificates for new connections; established ones keep theirs.
            match tls.reload() {
                Ok(()) => println!("ringmail: TLS certificates reloaded"),
                Err(e) => eprintln!("ringmail: {e}; keeping the certificates in use"),
            }
        } else if signal.is_some() {
            println!("ringmail: shutting down");
            stop.store(true, Ordering::Relaxed);
            drain_deadline =
                Some(Instant::now() + Duration::from_millis(config.server.timeout_ms_drain + 5000));
        } else if stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(d) = drain_deadline {
            if Instant::now() > d {
                eprintln!("ringmail: cores did not stop within the drain timeout; exiting");
                break;
            }
        }
        while let Ok(ev) = events_rx.try_recv() {
            match ev {
                CoreEvent::Ready => {
                    ready += 1;
                    if ready == ncores {
                        for (kind, a) in listen.iter() {
                            println!("{} listening on {a}", kind.name());
                        }
                        for a in metrics_listen.iter() {
                            println!("metrics listening on {a}");
                        }
                        println!("ready ({ncores} cores, data dir {})", data_dir.display());
                    }
                }
                CoreEvent::Exited => exited += 1,
                CoreEvent::Failed { core, reason } => {
                    exited += 1;
                    if failure.is_none() {
                        failure = Some(RuntimeError::CoreFailed {
                            core,
                            cpu: cpus[core],
                            reason,
                        });
                    }
                    if !stop.swap(true, Ordering::Relaxed) {
                        drain_deadline = Some(
                            Instant::now()
                                + Duration::from_millis(config.server.timeout_ms_drain + 5000),
                        );
                    }
                }
            }
        }
    }
    match failure {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// The signal that arrived within `wait`, if any.
fn take_signal(set: &libc::sigset_t, wait: Duration) -> Option<libc::c_int> {
    let ts = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    // SAFETY: valid set and timespec; the siginfo pointer may be null.
    let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

/// The certificates of `[tls]`, or the self-signed one of the data dir (generated at first
/// start, and said so).
fn load_tls(config: &Config) -> Result<TlsShared, RuntimeError> {
    let mut settings = config.tls.clone();
    if settings.default.is_none() {
        let (files, generated) =
            tls::ensure_self_signed(&config.server.data_dir, &config.server.hostname)?;
        if generated {
            println!(
                "ringmail: generated a self-signed TLS certificate for {} at {} \
                 (set [tls] cert and key to use a real one)",
                config.server.hostname,
                files.cert.display()
            );
        }
        settings.default = Some(files);
    }
    Ok(TlsShared::load(settings)?)
}

/// Process-wide shutdown state (touched only at start and stop, never per message).
struct Shutdown {
    stop: Arc<AtomicBool>,
    drained: Arc<AtomicUsize>,
}

#[allow(clippy::too_many_arguments)]
async fn core_main(
    core: usize,
    cpu: usize,
    ncores: usize,
    config: Arc<Config>,
    index: CoreIndex,
    mesh_builder: Option<mesh::MeshHandle>,
    listen: &[(Listener, SocketAddr)],
    accounts: Accounts,
    tls: Arc<TlsShared>,
    control: mpsc::Receiver<control::ControlRequest>,
    metrics: crate::metrics::CoreWiring,
    shutdown: Shutdown,
    events: &mpsc::Sender<CoreEvent>,
) -> Result<(), String> {
    let Shutdown { stop, drained } = shutdown;
    let store_config = StoreConfig {
        data_dir: config.server.data_dir.clone(),
        core: core as u16,
        fsync: match config.store.fsync {
            FsyncPolicy::Always => store::Fsync::Always,
            FsyncPolicy::Never => store::Fsync::Never,
        },
        sync_wait: match config.store.fsync_wait {
            crate::config::FsyncWait::IoUring => store::SyncWait::IoUring,
            crate::config::FsyncWait::Inline => store::SyncWait::Inline,
        },
        blob_segment_bytes_max: config.store.blob_segment_bytes_max,
        meta_segment_bytes_max: config.store.meta_segment_bytes_max,
        batch_bytes_max: config.store.batch_bytes_max,
        checkpoint_meta_bytes_interval: config.store.checkpoint_interval_meta_bytes,
        checkpoint_blob_bytes_interval: config.store.checkpoint_interval_blob_bytes,
        commit_window_us: config.store.commit_window_us,
    };
    let store = Store::open(store_config, index)
        .await
        .map_err(|e| format!("opening the store: {e}"))?;
    let mesh = match mesh_builder {
        Some(b) => {
            // Every core must join before any can proceed; if another core failed to start,
            // the stop flag is the only way out of the wait.
            let joined = futures_lite::future::or(
                async { Some(Mesh::join(b, store.clone()).await) },
                async {
                    while !stop.load(Ordering::Relaxed) {
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                    }
                    None
                },
            )
            .await;
            let Some(joined) = joined else {
                return Err("stopped before every core joined the mesh".into());
            };
            let (me, mesh) = joined?;
            if me != core {
                return Err(format!("mesh peer id {me} is not core index {core}"));
            }
            mesh
        }
        None => Mesh::single(),
    };
    let acceptor = TlsAcceptor::new(tls).map_err(|e| e.to_string())?;
    let core_ctx = Rc::new(
        Core::new(core, ncores, config.clone(), store.clone(), mesh, accounts)
            .with_tls(acceptor)
            .with_metrics(metrics.own()),
    );

    let mut listeners = Vec::new();
    for (kind, addr) in listen {
        let l = net::bind(*addr).map_err(|e| e.to_string())?;
        listeners.push((*kind, l));
    }
    let queues = TaskQueues::create(&config.cores);
    let connections_max = config.cores.executor_for(cpu).connections_max;
    let mut accept_tasks = Vec::new();
    for (kind, l) in listeners {
        accept_tasks.push(spawn_into(
            net::accept_loop(l, core_ctx.clone(), kind, connections_max),
            queues.sessions,
            "accept loop",
        )?);
    }
    spawn_into(
        handoff::adoption_loop(core_ctx.clone()),
        queues.sessions,
        "adoption loop",
    )?
    .detach();
    // Outbound delivery of this core's queue. Without a resolver (no [dns] servers and no
    // usable /etc/resolv.conf) mail still queues; the sender starts only with a smarthost.
    let resolver = match crate::dns::Resolver::new(&config.dns) {
        Ok(r) => Some(Rc::new(r)),
        Err(e) if config.relay.smarthost.is_some() => {
            eprintln!("ringmail: core {core}: {e}; delivering through the smarthost only");
            Some(Rc::new(crate::dns::Resolver::with_servers(
                Vec::new(),
                &config.dns,
            )))
        }
        Err(e) => {
            eprintln!("ringmail: core {core}: {e}; outbound mail stays queued");
            None
        }
    };
    let sender_task = match resolver {
        Some(resolver) => {
            let client_tls = crate::net::tls::ClientConfigs::new(&config.relay.tls_ca_file)
                .map_err(|e| e.to_string())?;
            Some(spawn_into(
                crate::outbound::sender::run(core_ctx.clone(), resolver, client_tls, control),
                queues.background,
                "outbound sender",
            )?)
        }
        None => None,
    };
    crate::metrics::http::start(&core_ctx, &metrics).map_err(|e| format!("metrics: {e}"))?;
    let watch = core_ctx.watch.clone();
    store.set_change_hook(Box::new(move |ids: &[u64]| watch.notify(ids)));
    let _ = events.send(CoreEvent::Ready);

    // Housekeeping: notice shutdown and user-table changes.
    let mut since_refresh = Duration::ZERO;
    let tick = Duration::from_millis(20);
    while !stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(tick).await;
        since_refresh += tick;
        if since_refresh >= Duration::from_secs(1) {
            since_refresh = Duration::ZERO;
            core_ctx.directory.refresh(&config);
        }
    }
    core_ctx.begin_shutdown();
    for t in accept_tasks {
        t.await;
    }
    if let Some(t) = sender_task {
        t.await;
    }
    // Drain: sessions in a transaction finish it; bounded by timeout_ms_drain.
    let deadline = Instant::now() + Duration::from_millis(config.server.timeout_ms_drain);
    while core_ctx.connections() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    // Stay reachable over the mesh until every core has drained: their last transactions may
    // still need this core to commit index records.
    drained.fetch_add(1, Ordering::AcqRel);
    let deadline = deadline + Duration::from_millis(1000);
    while drained.load(Ordering::Acquire) < ncores && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    store
        .flush()
        .await
        .map_err(|e| format!("flushing the store: {e}"))?;
    Ok(())
}
