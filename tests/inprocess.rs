//! The proxy run in this process (`rampart::run` with `RunOptions`: a stop
//! handle, an on-ready callback, and runtimes whose clock starts paused). Timer
//! behaviour configured in seconds (health intervals, rise and fall) is checked
//! in milliseconds of real time: a paused tokio clock jumps to the next timer
//! whenever the proxy has nothing else to do.

mod common;

use rampart::control::Shared;
use rampart::plane::Plane;
use rampart::pool::Health;
use rampart::supervisor::{OnReady, RunError, RunOptions, RuntimeFactory};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A proxy running on threads of this process.
struct InProcess {
    stop: CancellationToken,
    plane: Arc<Plane>,
    thread: Option<std::thread::JoinHandle<Result<(), RunError>>>,
}

impl InProcess {
    /// Starts `config`; with `paused`, every runtime's clock starts paused.
    fn start(config: &str, paused: bool) -> InProcess {
        let cfg = rampart::config::parse(config, "inprocess.toml").expect("config");
        let stop = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = Mutex::new(tx);
        let on_ready: OnReady = Arc::new(move |shared: &Shared| {
            let _ = tx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send(Arc::clone(&shared.plane));
        });
        let runtime: Option<RuntimeFactory> = paused.then(|| {
            Arc::new(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .start_paused(true)
                    .build()
            }) as RuntimeFactory
        });
        let opts = RunOptions {
            stop: Some(stop.clone()),
            config_path: None,
            on_ready: Some(on_ready),
            runtime,
        };
        let thread = std::thread::spawn(move || rampart::run(cfg, opts));
        let plane = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the proxy did not get ready");
        InProcess {
            stop,
            plane,
            thread: Some(thread),
        }
    }

    /// The health of the first server of the first pool.
    fn health(&self) -> Health {
        self.plane.snapshot.load().pools[0].servers[0]
            .state
            .health()
    }

    /// Polls the proxy's state (real time) until `cond` holds, at most `within`.
    fn wait(&self, within: Duration, what: &str, cond: impl Fn(&InProcess) -> bool) {
        let deadline = Instant::now() + within;
        while !cond(self) {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            // pacing of the poll, not synchronisation: the condition decides
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One http listener and pool "api" with one server, checked over TCP every 10 s.
fn config(server: SocketAddr) -> String {
    let health =
        "[pool.health]\nkind = \"tcp\"\ninterval = \"10s\"\ntimeout = \"2s\"\nrise = 2\nfall = 2\n";
    common::http_config_at(
        common::free_addr("127.0.0.1"),
        common::free_addr("127.0.0.1"),
        "threads = 1\naccess_log = \"off\"\nshutdown_grace = \"1s\"\n",
        health,
        &[(server, 1)],
    )
}

/// Rise and fall with a 10 s interval: DOWN after the first refused check, UP
/// after two good ones, 20 s of the proxy's clock apart, in well under a second
/// of real time.
#[test]
fn health_rise_and_fall_at_a_10s_interval_take_milliseconds_on_a_paused_clock() {
    let server = common::free_addr("127.0.0.2");
    let cfg = config(server);
    let t0 = Instant::now();
    let p = InProcess::start(&cfg, true);
    // nothing listens: refused, DOWN at the first check (a new server starts UNKNOWN)
    p.wait(Duration::from_secs(5), "DOWN", |p| {
        p.health() == Health::Down
    });
    let st = &p.plane.snapshot.load().pools[0].servers[0].state;
    let checks_down = st.checks.total.load(std::sync::atomic::Ordering::Relaxed);
    // the server comes up: rise = 2 checks, 10 s apart
    let _listener = std::net::TcpListener::bind(server).expect("bind the server");
    let up_at = Instant::now();
    p.wait(Duration::from_secs(5), "UP", |p| p.health() == Health::Up);
    let checks = st.checks.total.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        checks >= checks_down + 2,
        "UP after {} more checks",
        checks - checks_down
    );
    let real = up_at.elapsed();
    assert!(
        real < Duration::from_secs(3),
        "two 10 s intervals took {real:?} of real time: the clock was not paused"
    );
    eprintln!(
        "DOWN, then UP after 2 checks 10 s apart: {real:?} of real time ({:?} in all)",
        t0.elapsed()
    );
}

/// The same proxy on ordinary runtimes: the first check still comes at once,
/// and nothing rises within a second, since the next check is 10 s away (the
/// paused clock above is what made the difference).
#[test]
fn without_the_paused_clock_the_interval_is_real() {
    let server = common::free_addr("127.0.0.2");
    let cfg = config(server);
    let p = InProcess::start(&cfg, false);
    p.wait(Duration::from_secs(5), "DOWN", |p| {
        p.health() == Health::Down
    });
    let _listener = std::net::TcpListener::bind(server).expect("bind the server");
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        assert_eq!(p.health(), Health::Down, "UP before a 10 s interval passed");
        std::thread::sleep(Duration::from_millis(50));
    }
}
