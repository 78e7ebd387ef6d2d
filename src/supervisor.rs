//! Owns the process: binds every socket up front (so a bad address fails the start
//! with a clear error), runs one current-thread runtime per worker thread (each with
//! its own SO_REUSEPORT sockets and its own idle backend connections), and handles
//! SIGTERM/SIGINT: drain delay with /ready = 503, stop accepting, let in-flight work
//! finish within `shutdown_grace`, exit.

use crate::accesslog::AccessLog;
use crate::config::Config;
use crate::control::Control;
use crate::control::Shared;
use crate::limits::Limit;
use crate::listener::{self, ListenerSet};
use crate::plane::Plane;
use crate::snapshot::Snapshot;
use crate::{discovery, statefile, upstream};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

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
    #[error("binary upgrade: {0}")]
    Upgrade(#[source] crate::upgrade::UpgradeError),
}

/// A callback run once the proxy accepts connections.
pub type OnReady = Arc<dyn Fn(&Shared) + Send + Sync>;

/// Builds each runtime the proxy runs on (the control runtime and one per
/// worker): each must be a current-thread runtime with IO and time enabled.
pub type RuntimeFactory = Arc<dyn Fn() -> std::io::Result<tokio::runtime::Runtime> + Send + Sync>;

/// How a run ends besides SIGTERM/SIGINT, and what an embedder (a test, `rampart
/// demo`) may choose.
#[derive(Default, Clone)]
pub struct RunOptions {
    /// Cancelling it behaves like SIGTERM (used by `rampart demo` and embedders).
    pub stop: Option<CancellationToken>,
    /// The config file (shown on the stats page).
    pub config_path: Option<std::path::PathBuf>,
    /// Called once every listener is bound and accepting.
    pub on_ready: Option<OnReady>,
    /// Builds the runtimes (None: `current_thread` with IO and time). A test
    /// passes runtimes whose clock starts paused, so that intervals and
    /// timeouts of seconds pass in milliseconds.
    pub runtime: Option<RuntimeFactory>,
}

fn runtime(opts: &RunOptions) -> Result<tokio::runtime::Runtime, RunError> {
    match &opts.runtime {
        Some(make) => make(),
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
    .map_err(RunError::Runtime)
}

/// Runs the proxy until a signal (or `opts.stop`) and a graceful drain. Blocks.
pub fn run(config: Config, opts: RunOptions) -> Result<(), RunError> {
    let threads = config.global.threads.max(1);

    // The control runtime: signals, health checks. Signal handlers go in first, so a
    // SIGTERM that arrives while starting is handled as a graceful stop.
    let main_rt = runtime(&opts)?;
    let _ctx = main_rt.enter();
    let signals = Signals::new();

    // Started by a binary upgrade: the old process's sockets and state.
    let (mut inherited, taken) = match crate::upgrade::take_over().map_err(RunError::Upgrade)? {
        Some((i, t)) => (i, Some(t)),
        None => Default::default(),
    };
    // Whatever fails from here on is told to the old process, which keeps serving.
    let fail = |taken: Option<crate::upgrade::Taken>, e: RunError| {
        if let Some(t) = taken {
            t.failed(&e.to_string());
        }
        e
    };

    let admin_listener = match inherited.admin.take() {
        Some((addr, sock)) if addr == config.admin.bind => sock,
        _ => match listener::bind(config.admin.bind, false) {
            Ok(s) => s,
            Err(source) => {
                return Err(fail(
                    taken,
                    RunError::Bind {
                        listener: "admin".into(),
                        addr: config.admin.bind,
                        source,
                    },
                ))
            }
        },
    };

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
    let (discovered, first_wait) = match &discovery {
        Some(d) => main_rt.block_on(discovery::initial_round(d, &config, &registry)),
        None => Default::default(),
    };

    let (control_tx, control_rx) = tokio::sync::mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        ha: std::sync::OnceLock::new(),
        ha_reconfigure: std::sync::OnceLock::new(),
        control: control_tx,
        rates: Default::default(),
        dns: Arc::new(registry),
        retired: tokio::sync::Notify::new(),
        config_path: opts.config_path.clone(),
        config: ArcSwap::from_pointee(config.clone()),
        reloads: Default::default(),
        admin_socket: std::sync::OnceLock::new(),
        ha_socket: std::sync::OnceLock::new(),
        handed_over: CancellationToken::new(),
        plane: Arc::new(Plane {
            snapshot: ArcSwap::from_pointee(Snapshot::empty()),
            access_log: AccessLog::new(config.global.access_log),
            limit: Arc::new(Limit::new(config.global.max_connections)),
            ready: AtomicBool::new(false),
            first_round_done: AtomicBool::new(false),
        }),
        started: Instant::now(),
        phase: std::sync::atomic::AtomicU8::new(crate::control::Phase::Starting as u8),
        runtimes: std::sync::OnceLock::new(),
    });
    // Operator state and last known health from the previous run; the control
    // task keeps it for servers that are not members right now.
    let saved = match &config.global.state_file {
        Some(path) => match statefile::load_at_start(path) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the state file; starting without it");
                None
            }
        },
        None => None,
    };
    let stop_accept = CancellationToken::new();
    let graceful = CancellationToken::new();
    let hard_stop = CancellationToken::new();
    // Stops the workers however this function returns, early errors included.
    let _stop_workers = hard_stop.clone().drop_guard();
    let tracker = TaskTracker::new();

    // The workers: each runs its accept loops (spawned onto it by the listener
    // set, now and at every reload) and its connections.
    let mut workers = Vec::with_capacity(threads);
    let mut handles = Vec::with_capacity(threads);
    for wi in 0..threads {
        let shared = Arc::clone(&shared);
        let hard_stop = hard_stop.clone();
        let rt = runtime(&opts)?;
        handles.push(rt.handle().clone());
        let handle = std::thread::Builder::new()
            .name(format!("rampart-w{wi}"))
            .spawn(move || {
                let span = tracing::info_span!("worker", id = wi);
                rt.block_on(tracing::Instrument::instrument(
                    async move {
                        // The worker's parker of idle client connections, made
                        // now: its descriptor and task are there from the start,
                        // not from the first connection that idles.
                        crate::proxy::fast_path::start_parker();
                        // Close idle backend connections that aged out or were closed.
                        // ... and at once when members leave their pool (DNS, reload).
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
                    },
                    span,
                ));
            })
            .map_err(RunError::Runtime)?;
        workers.push(handle);
    }
    let named = std::iter::once(("control".to_string(), main_rt.handle().clone())).chain(
        handles
            .iter()
            .enumerate()
            .map(|(i, h)| (format!("w{i}"), h.clone())),
    );
    let _ = shared.runtimes.set(named.collect());

    // The control plane on this runtime: the control task (which binds the
    // listeners, and starts health checks and DNS watches), the admin server.
    let control_stop = CancellationToken::new();
    let control_tasks = TaskTracker::new();
    let health_flipped = Arc::new(tokio::sync::Notify::new());
    let health = crate::health::HealthManager::new(
        control_stop.clone(),
        control_tasks.clone(),
        Arc::clone(&health_flipped),
    );
    let (dns_tx, dns_rx) = tokio::sync::mpsc::unbounded_channel();
    let watches = discovery::Watches::new(
        discovery,
        (control_stop.clone(), control_tasks.clone()),
        Arc::clone(&shared.dns),
        dns_tx,
    );
    let listeners = ListenerSet::new(
        handles,
        (stop_accept.clone(), graceful.clone()),
        tracker.clone(),
        std::mem::take(&mut inherited.listeners),
    );
    let admin_bind = config.admin.bind;
    // before anything connects to a backend (Control::start starts health
    // checks and accepting): never the admin server
    crate::upstream::admin_listening(admin_listener.local_addr().unwrap_or(admin_bind));
    let ha_config = config.ha.clone();
    // A binary upgrade carries the old process's server health: its first
    // round of checks is done (else /ready, and an HA node tracking it,
    // would say "not ready" and hand the VIP away until each server's first
    // check here)
    if !inherited.servers.is_empty() {
        shared.plane.first_round_done.store(true, Ordering::Release);
    }
    let control = Control::start(
        Arc::clone(&shared),
        config,
        discovered,
        first_wait,
        health,
        watches,
        listeners,
        (saved, std::mem::take(&mut inherited.servers)),
    );
    let control = match control {
        Ok(c) => c,
        Err(e) => {
            return Err(fail(
                taken,
                RunError::Bind {
                    listener: e.listener,
                    addr: e.addr,
                    source: e.source,
                },
            ))
        }
    };
    // a binary upgrade: the old process's quota counts win over the state file
    crate::statefile::restore_quotas(&shared.plane.snapshot.load(), &inherited.quotas);
    let inbox = crate::control::Inbox {
        msgs: control_rx,
        dns: dns_rx,
        health_flipped,
    };
    control_tasks.spawn(
        control
            .run(inbox, control_stop.clone())
            .instrument(tracing::info_span!("control")),
    );
    {
        use std::os::fd::AsRawFd;
        let _ = shared
            .admin_socket
            .set((admin_bind, admin_listener.as_raw_fd()));
    }
    let admin_listener =
        tokio::net::TcpListener::from_std(admin_listener).map_err(RunError::Runtime)?;
    tracing::info!(addr = %admin_bind, "admin server listening");
    control_tasks.spawn(
        crate::admin::serve(admin_listener, Arc::clone(&shared), control_stop.clone())
            .instrument(tracing::info_span!("admin", addr = %admin_bind)),
    );
    if let Some(every) = crate::sdnotify::watchdog_interval() {
        tracing::info!(?every, "systemd watchdog: pinging");
        control_tasks.spawn(
            crate::sdnotify::watchdog(every, control_stop.clone())
                .instrument(tracing::info_span!("watchdog")),
        );
    }
    let plane = Arc::clone(&shared.plane);
    control_tasks.spawn(
        crate::ratelimit::sync::run(
            move || {
                let snap = plane.snapshot.load();
                crate::ratelimit::sync::Current {
                    link: snap.rate_link.clone(),
                    limits: snap.rate_limits.clone(),
                }
            },
            control_stop.clone(),
        )
        .instrument(tracing::info_span!("rate_limit_sync")),
    );
    if let Some(path) = &opts.config_path {
        control_tasks.spawn(
            crate::reload::watch_file(path.clone(), Arc::clone(&shared), control_stop.clone())
                .instrument(tracing::info_span!("config_watch")),
        );
    }

    // HA: the heartbeat socket and the interface must be there now.
    let ha_stop = CancellationToken::new();
    let ha_task = match &ha_config {
        Some(hc) => {
            let (sock, master) = match inherited.ha.take() {
                Some((addr, sock, master)) if addr == hc.bind => (Some(sock), master),
                _ => (None, false),
            };
            let ha = match crate::ha::Ha::new(hc.clone(), sock, master) {
                Ok(h) => h,
                Err(e) => return Err(fail(taken, RunError::Ha(e))),
            };
            let _ = shared.ha_socket.set((hc.bind, ha.raw_fd()));
            let _ = shared.ha.set(Arc::clone(&ha.status));
            let _ = shared.ha_reconfigure.set(ha.reconfigure.clone());
            tracing::info!(node = %hc.node_id, priority = hc.priority, interface = %hc.interface, "HA started");
            Some(tokio::spawn(
                ha.run(
                    Arc::clone(&shared.plane),
                    shared.handed_over.clone(),
                    ha_stop.clone(),
                )
                .instrument(tracing::info_span!("ha", node = %hc.node_id)),
            ))
        }
        None => None,
    };

    shared.plane.ready.store(true, Ordering::Release);
    if let Some(f) = &opts.on_ready {
        f(&shared);
    }
    {
        let g = &shared.config.load().global;
        if let Some((budget, margin)) = g.drain_budget {
            tracing::info!(
                ?budget,
                readiness = "503 at once",
                propagation = ?g.drain_delay,
                connections = ?g.shutdown_grace,
                margin = ?margin,
                "drain budget: after SIGTERM, /ready says 503 at once; everything is served while endpoints notice (propagation), then listeners close and connections finish (connections), with a margin before the hard stop"
            );
        }
    }
    shared.set_phase(crate::control::Phase::Running);
    tracing::info!(threads, "rampart started");
    if let Some(t) = taken {
        t.ready();
    }
    crate::sdnotify::ready();

    main_rt.block_on(shutdown_sequence(
        &shared,
        signals,
        opts.stop.clone(),
        (ha_stop, ha_task),
        stop_accept,
        graceful,
        tracker,
    ));
    control_stop.cancel();
    hard_stop.cancel();
    // let the control task write the state file one last time
    control_tasks.close();
    let _ = main_rt.block_on(tokio::time::timeout(
        Duration::from_secs(2),
        control_tasks.wait(),
    ));
    for w in workers {
        let _ = w.join();
    }
    shared.plane.access_log.flush(Duration::from_secs(1));
    tracing::info!("rampart stopped");
    Ok(())
}

#[allow(clippy::too_many_arguments)] // the run's pieces, passed once
async fn shutdown_sequence(
    shared: &Shared,
    mut signals: Signals,
    stop: Option<CancellationToken>,
    (ha_stop, ha_task): (CancellationToken, Option<tokio::task::JoinHandle<()>>),
    stop_accept: CancellationToken,
    graceful: CancellationToken,
    tracker: TaskTracker,
) {
    let external = stop.unwrap_or_default();
    loop {
        tokio::select! {
            sig = signals.next_event() => match sig {
                Sig::Stop(name) => {
                    tracing::info!(signal = name, "shutting down");
                    break;
                }
                Sig::Reload => {
                    tracing::info!(signal = "SIGHUP", "reloading the config");
                    let _ = shared.control.send(crate::control::ControlMsg::Reload {
                        trigger: "SIGHUP",
                        reply: None,
                    });
                }
                Sig::Upgrade => {
                    tracing::info!(signal = "SIGUSR2", "binary upgrade");
                    let _ = shared.control.send(crate::control::ControlMsg::Upgrade {
                        trigger: "SIGUSR2",
                        reply: None,
                    });
                }
            },
            _ = shared.handed_over.cancelled() => {
                tracing::info!("handed over to the new process");
                break;
            }
            _ = external.cancelled() => {
                tracing::info!("shutting down");
                break;
            }
        }
    }
    shared.plane.ready.store(false, Ordering::Release);
    shared.set_phase(crate::control::Phase::Draining);
    let config = shared.config.load_full();
    let handed_over = shared.handed_over.is_cancelled();
    if !handed_over {
        // (after a handover the new process is the service's main process)
        crate::sdnotify::stopping();
    }
    // A MASTER hands the VIP over first (priority-0 advert): the peer takes it
    // after only its skew, while this node drains what it already has.
    ha_stop.cancel();
    if let Some(t) = ha_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    // After a handover the new process accepts: no drain delay.
    let drain = if handed_over {
        Duration::ZERO
    } else {
        config.global.drain_delay
    };
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
    shared.set_phase(crate::control::Phase::Closing);
    let grace = config.global.shutdown_grace;
    // client connections (and tunnels) are what shutdown waits for; backend
    // connections (pooled, or serving them) are counted alongside
    tracing::info!(
        open = tracker.len(),
        backend = upstream::tasks().len(),
        ?grace,
        "stopped accepting; waiting for in-flight work"
    );
    tokio::select! {
        _ = tracker.wait() => tracing::info!(backend = upstream::tasks().len(), "all connections finished"),
        _ = tokio::time::sleep(grace) => tracing::warn!(open = tracker.len(), backend = upstream::tasks().len(), "shutdown grace expired; closing what is left"),
        name = signals.next() => tracing::warn!(signal = name, open = tracker.len(), backend = upstream::tasks().len(), "second signal: closing what is left"),
    }
}

/// SIGTERM and SIGINT (stop), SIGHUP (reload) and SIGUSR2 (binary upgrade). If
/// the handlers cannot be installed, only the external stop token ends the run.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
    usr2: Option<tokio::signal::unix::Signal>,
}

enum Sig {
    Stop(&'static str),
    Reload,
    Upgrade,
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
        let hup = signal(SignalKind::hangup())
            .map_err(|e| tracing::error!(error = %e, "cannot handle SIGHUP"))
            .ok();
        let usr2 = signal(SignalKind::user_defined2())
            .map_err(|e| tracing::error!(error = %e, "cannot handle SIGUSR2"))
            .ok();
        Signals {
            term,
            int,
            hup,
            usr2,
        }
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = recv(&mut self.term) => "SIGTERM",
            _ = recv(&mut self.int) => "SIGINT",
        }
    }

    async fn next_event(&mut self) -> Sig {
        tokio::select! {
            _ = recv(&mut self.term) => Sig::Stop("SIGTERM"),
            _ = recv(&mut self.int) => Sig::Stop("SIGINT"),
            _ = recv(&mut self.hup) => Sig::Reload,
            _ = recv(&mut self.usr2) => Sig::Upgrade,
        }
    }
}

async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
