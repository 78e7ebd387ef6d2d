//! Owns the process: binds every socket up front (so a bad address fails the start
//! with a clear error), runs one current-thread runtime per worker thread (each with
//! its own SO_REUSEPORT sockets and its own idle backend connections), and handles
//! SIGTERM/SIGINT: drain delay with /ready = 503, stop accepting, let in-flight work
//! finish within `shutdown_grace`, exit.

use crate::accesslog::AccessLog;
use crate::config::{Config, Mode};
use crate::listener::{self, AcceptCtx, Limits};
use crate::snapshot::Snapshot;
use crate::{discovery, statefile, upstream, Shared};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("listener {listener:?}: cannot listen on {addr}: {source}")]
    Bind {
        listener: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Discovery(#[source] discovery::DiscoveryError),
    #[error("{0}")]
    Ha(#[source] crate::ha::HaError),
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// A callback run once the proxy accepts connections.
pub type OnReady = Arc<dyn Fn(&Shared) + Send + Sync>;

/// How a run ends besides SIGTERM/SIGINT.
#[derive(Default, Clone)]
pub struct RunOptions {
    /// Cancelling it behaves like SIGTERM (used by `rampart demo` and embedders).
    pub stop: Option<CancellationToken>,
    /// The config file (shown on the stats page).
    pub config_path: Option<std::path::PathBuf>,
    /// Called once every listener is bound and accepting.
    pub on_ready: Option<OnReady>,
}

/// Runs the proxy until a signal (or `opts.stop`) and a graceful drain. Blocks.
pub fn run(config: Config, opts: RunOptions) -> Result<(), RunError> {
    let threads = config.global.threads.max(1);
    let reuse_port = threads > 1;

    // The control runtime: signals, health checks. Signal handlers go in first, so a
    // SIGTERM that arrives while starting is handled as a graceful stop.
    let main_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let _ctx = main_rt.enter();
    let signals = Signals::new();

    // Bind every socket for every worker before starting anything.
    let mut per_worker: Vec<Vec<(usize, std::net::TcpListener)>> =
        (0..threads).map(|_| Vec::new()).collect();
    for (li, l) in config.listeners.iter().enumerate() {
        for &addr in &l.binds {
            for sockets in per_worker.iter_mut() {
                let s = listener::bind(addr, reuse_port).map_err(|source| RunError::Bind {
                    listener: l.name.clone(),
                    addr,
                    source,
                })?;
                sockets.push((li, s));
            }
            tracing::info!(listener = %l.name, %addr, mode = ?l.mode, "listening");
        }
    }
    let admin_listener =
        listener::bind(config.admin.bind, false).map_err(|source| RunError::Bind {
            listener: "admin".into(),
            addr: config.admin.bind,
            source,
        })?;

    // DNS: resolve every name once before serving, so the first requests find
    // their members; a name that does not resolve yet is not fatal.
    let discovery = if discovery::targets(&config).is_empty() {
        None
    } else {
        Some(Arc::new(
            discovery::Discovery::new(&config.resolver).map_err(RunError::Discovery)?,
        ))
    };
    let registry = discovery::NameRegistry::default();
    let (discovered, ttls) = match &discovery {
        Some(d) => main_rt.block_on(discovery::initial_round(d, &config, &registry)),
        None => Default::default(),
    };

    let (control_tx, control_rx) = tokio::sync::mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        ha: std::sync::OnceLock::new(),
        control: control_tx,
        rates: Default::default(),
        dns: registry,
        retired: tokio::sync::Notify::new(),
        listener_stats: config
            .listeners
            .iter()
            .map(|_| Default::default())
            .collect(),
        first_round_done: AtomicBool::new(false),
        config_path: opts.config_path.clone(),
        snapshot: ArcSwap::from_pointee(Snapshot::build(&config, None, &discovered)),
        access_log: AccessLog::new(config.global.access_log),
        ready: AtomicBool::new(false),
        started: Instant::now(),
    });
    // Operator state and last known health from the previous run; the control
    // task keeps it for servers that are not members right now.
    let mut saved = statefile::StateFile::default();
    if let Some(path) = &config.global.state_file {
        match statefile::load(path) {
            Ok(s) => {
                let n = statefile::restore(&shared.snapshot.load(), &s);
                // rebuild so restored weights reach the balancers
                let rebuilt = Snapshot::build(&config, Some(&shared.snapshot.load()), &discovered);
                shared.snapshot.store(Arc::new(rebuilt));
                if n > 0 {
                    tracing::info!(path = %path.display(), servers = n, "restored server states");
                }
                saved = s;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the state file; starting without it")
            }
        }
    }
    let global = Arc::new(Semaphore::new(config.global.max_connections));
    let local: Vec<Option<Arc<Semaphore>>> = config
        .listeners
        .iter()
        .map(|l| (l.max_connections > 0).then(|| Arc::new(Semaphore::new(l.max_connections))))
        .collect();
    let stop_accept = CancellationToken::new();
    let graceful = CancellationToken::new();
    let hard_stop = CancellationToken::new();
    // Stops the workers however this function returns, early errors included.
    let _stop_workers = hard_stop.clone().drop_guard();
    let tracker = TaskTracker::new();

    let mut workers = Vec::with_capacity(threads);
    for (wi, sockets) in per_worker.into_iter().enumerate() {
        let listeners: Vec<(usize, String, Mode, (Duration, Duration))> = config
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let timeouts = (l.request_header_timeout, l.client_timeout);
                (i, l.name.clone(), l.mode, timeouts)
            })
            .collect();
        let shared = Arc::clone(&shared);
        let limits: Vec<Limits> = local
            .iter()
            .map(|l| Limits {
                global: Arc::clone(&global),
                local: l.clone(),
            })
            .collect();
        let (stop_accept, graceful, hard_stop, tracker) = (
            stop_accept.clone(),
            graceful.clone(),
            hard_stop.clone(),
            tracker.clone(),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(RunError::Runtime)?;
        let handle = std::thread::Builder::new()
            .name(format!("rampart-w{wi}"))
            .spawn(move || {
                rt.block_on(async move {
                    for (li, sock) in sockets {
                        let (_, name, mode, (hdr_timeout, client_timeout)) = &listeners[li];
                        let l = match tokio::net::TcpListener::from_std(sock) {
                            Ok(l) => l,
                            Err(e) => {
                                tracing::error!(listener = %name, error = %e, "cannot register listener");
                                continue;
                            }
                        };
                        let ctx = AcceptCtx {
                            listener: li,
                            name: Arc::from(name.as_str()),
                            mode: *mode,
                            shared: Arc::clone(&shared),
                            limits: limits[li].clone(),
                            stop_accept: stop_accept.clone(),
                            graceful: graceful.clone(),
                            tracker: tracker.clone(),
                            http: (*mode == Mode::Http)
                                .then(|| Arc::new(crate::proxy::http::server_builders(*hdr_timeout, *client_timeout))),
                        };
                        tokio::spawn(listener::accept_loop(l, ctx));
                    }
                    // Close idle backend connections that aged out or were closed.
                    // ... and at once when members leave their pool (DNS).
                    let sweeper = async {
                        let mut tick = tokio::time::interval(Duration::from_secs(1));
                        loop {
                            tokio::select! {
                                _ = tick.tick() => {}
                                _ = shared.retired.notified() => {}
                            }
                            upstream::sweep_idle();
                        }
                    };
                    tokio::select! {
                        _ = hard_stop.cancelled() => {}
                        _ = sweeper => {}
                    }
                });
            })
            .map_err(RunError::Runtime)?;
        workers.push(handle);
    }

    // The control plane on this runtime: health checks, DNS, the control task,
    // the admin server.
    let health_stop = CancellationToken::new();
    let health_tasks = TaskTracker::new();
    let mut health = crate::health::HealthManager::new(
        health_stop.clone(),
        health_tasks.clone(),
        shared.control.clone(),
    );
    health.sync(&shared.snapshot.load().pools);
    let config = Arc::new(config);
    if let Some(d) = discovery {
        discovery::spawn(
            &shared,
            &config,
            d,
            &discovered,
            &ttls,
            &health_stop,
            &health_tasks,
        );
    }
    health_tasks.spawn(crate::control::run(
        Arc::clone(&shared),
        Arc::clone(&config),
        discovered,
        health,
        saved,
        control_rx,
        health_stop.clone(),
    ));
    let admin_listener =
        tokio::net::TcpListener::from_std(admin_listener).map_err(RunError::Runtime)?;
    tracing::info!(addr = %config.admin.bind, "admin server listening");
    health_tasks.spawn(crate::admin::serve(
        admin_listener,
        Arc::clone(&shared),
        Arc::clone(&config),
        health_stop.clone(),
    ));

    // HA: the heartbeat socket and the interface must be there now.
    let ha_stop = CancellationToken::new();
    let ha_task = match &config.ha {
        Some(hc) => {
            let ha = crate::ha::Ha::new(hc.clone()).map_err(RunError::Ha)?;
            let _ = shared.ha.set(Arc::clone(&ha.status));
            tracing::info!(node = %hc.node_id, priority = hc.priority, interface = %hc.interface, "HA started");
            Some(tokio::spawn(ha.run(Arc::clone(&shared), ha_stop.clone())))
        }
        None => None,
    };

    shared.ready.store(true, Ordering::Release);
    if let Some(f) = &opts.on_ready {
        f(&shared);
    }
    tracing::info!(threads, "rampart started");

    main_rt.block_on(shutdown_sequence(
        &config,
        &shared,
        signals,
        opts.stop.clone(),
        (ha_stop, ha_task),
        stop_accept,
        graceful,
        tracker,
    ));
    health_stop.cancel();
    hard_stop.cancel();
    // let the control task write the state file one last time
    health_tasks.close();
    let _ = main_rt.block_on(tokio::time::timeout(
        Duration::from_secs(2),
        health_tasks.wait(),
    ));
    for w in workers {
        let _ = w.join();
    }
    shared.access_log.flush(Duration::from_secs(1));
    tracing::info!("rampart stopped");
    Ok(())
}

#[allow(clippy::too_many_arguments)] // the run's pieces, passed once
async fn shutdown_sequence(
    config: &Config,
    shared: &Shared,
    mut signals: Signals,
    stop: Option<CancellationToken>,
    (ha_stop, ha_task): (CancellationToken, Option<tokio::task::JoinHandle<()>>),
    stop_accept: CancellationToken,
    graceful: CancellationToken,
    tracker: TaskTracker,
) {
    let external = stop.unwrap_or_default();
    tokio::select! {
        name = signals.next() => tracing::info!(signal = name, "shutting down"),
        _ = external.cancelled() => tracing::info!("shutting down"),
    }
    shared.ready.store(false, Ordering::Release);
    // A MASTER hands the VIP over first (priority-0 advert): the peer takes it
    // after only its skew, while this node drains what it already has.
    ha_stop.cancel();
    if let Some(t) = ha_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    let drain = config.global.drain_delay;
    if !drain.is_zero() {
        tracing::info!(?drain, "draining: still serving, /ready reports 503");
        tokio::select! {
            _ = tokio::time::sleep(drain) => {}
            name = signals.next() => tracing::warn!(signal = name, "second signal: skipping the drain delay"),
        }
    }
    stop_accept.cancel();
    graceful.cancel();
    tracker.close();
    let grace = config.global.shutdown_grace;
    tracing::info!(
        open = tracker.len(),
        ?grace,
        "stopped accepting; waiting for in-flight work"
    );
    tokio::select! {
        _ = tracker.wait() => tracing::info!("all connections finished"),
        _ = tokio::time::sleep(grace) => tracing::warn!(open = tracker.len(), "shutdown grace expired; closing what is left"),
        name = signals.next() => tracing::warn!(signal = name, open = tracker.len(), "second signal: closing what is left"),
    }
}

/// SIGTERM and SIGINT as one stream. If the handlers cannot be installed, only the
/// external stop token ends the run.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate())
            .map_err(|e| tracing::error!(error = %e, "cannot handle SIGTERM"))
            .ok();
        let int = signal(SignalKind::interrupt())
            .map_err(|e| tracing::error!(error = %e, "cannot handle SIGINT"))
            .ok();
        Signals { term, int }
    }

    async fn next(&mut self) -> &'static str {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.term) => "SIGTERM",
            _ = recv(&mut self.int) => "SIGINT",
        }
    }
}
