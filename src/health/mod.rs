//! Active health checks: one task per server of every pool with `[pool.health]`.
//! A check is TCP (connect), HTTP (status and optional body) or Postgres (a real
//! client, role-aware: primary / replica / any, replica lag; TLS as libpq's
//! sslmode). Results go through a rise/fall counter; health changes only after
//! `rise`/`fall` consecutive results, and is logged once when it flips, with
//! the reason.

use crate::clock;
use crate::config::HealthConfig;
use crate::pool::{CheckReport, Health, Pool, Server, ServerState};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod check;

pub use check::{check_with, CheckFailure, CheckTls};

/// Consecutive-result counter: the pure core of a health check.
#[derive(Debug, Clone)]
pub struct RiseFall {
    state: Health,
    ok_streak: u32,
    fail_streak: u32,
    rise: u32,
    fall: u32,
}

impl RiseFall {
    pub fn new(initial: Health, rise: u32, fall: u32) -> RiseFall {
        RiseFall {
            state: initial,
            ok_streak: 0,
            fail_streak: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    pub fn state(&self) -> Health {
        self.state
    }

    /// Feeds one result; returns the new state when it flips. From UNKNOWN the
    /// first result decides.
    pub fn observe(&mut self, ok: bool) -> Option<Health> {
        if ok {
            self.ok_streak += 1;
            self.fail_streak = 0;
        } else {
            self.fail_streak += 1;
            self.ok_streak = 0;
        }
        let next = match (self.state, ok) {
            (Health::Unknown, true) => Health::Up,
            (Health::Unknown, false) => Health::Down,
            (Health::Down, true) if self.ok_streak >= self.rise => Health::Up,
            (Health::Up, false) if self.fail_streak >= self.fall => Health::Down,
            (s, _) => s,
        };
        (next != self.state).then(|| {
            self.state = next;
            next
        })
    }

    /// Is the server between states (so checks run at `fast_interval`)?
    pub fn changing(&self) -> bool {
        match self.state {
            Health::Unknown => true,
            Health::Up => self.fail_streak > 0,
            Health::Down => self.ok_streak > 0,
        }
    }
}

/// `d` with +-10% jitter, so the checks of many servers do not align.
fn jittered(d: Duration) -> Duration {
    let ms = d.as_millis() as u64;
    let spread = ms / 10;
    if spread == 0 {
        return d;
    }
    Duration::from_millis(ms - spread + fastrand::u64(..=2 * spread))
}

/// A running check task: its stop, the settings it runs with, and whether
/// its first result, which decides, is still to come.
type CheckTask = (
    CancellationToken,
    Arc<HealthConfig>,
    Option<crate::tls::PoolTls>,
    Option<crate::proxy_protocol::Version>,
    Arc<std::sync::atomic::AtomicBool>,
);

/// Keeps one check task per member of every pool with `[pool.health]`: members
/// that appear (DNS) get a task, members that leave have theirs stopped. Each
/// task carries a tracing span and writes only its member's health.
pub struct HealthManager {
    /// Server uid -> its task and the settings it runs with (the pool's
    /// `[health]`, `[tls]` and `send_proxy`).
    tasks: HashMap<u64, CheckTask>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    /// Notified at each health flip (the control task records it in the state file).
    flipped: Arc<tokio::sync::Notify>,
    /// Members of pools without checks: UP by default, not by a check. One
    /// that a reload gives checks is judged by its first one.
    unchecked: HashSet<u64>,
    /// How far each Postgres cluster is known to be (postgres checks).
    wal: check::WalMarks,
}

impl HealthManager {
    pub fn new(
        cancel: CancellationToken,
        tracker: TaskTracker,
        flipped: Arc<tokio::sync::Notify>,
    ) -> HealthManager {
        HealthManager {
            tasks: HashMap::new(),
            cancel,
            tracker,
            flipped,
            unchecked: HashSet::new(),
            wal: check::WalMarks::default(),
        }
    }

    /// Starts and stops check tasks so there is exactly one per current member,
    /// running with its pool's current settings: a member whose pool's `[health]`
    /// changed gets a new task, which starts from the member's current health
    /// (a DOWN server stays DOWN until `rise` checks pass). Where what is
    /// checked changed (the kind of check or what it asks, the TLS or PROXY
    /// header it goes with), or a pool without checks got some, the new
    /// task's first result decides at once: the old verdict answered another
    /// question (a replica that a TCP check found UP is not a primary).
    pub fn sync(&mut self, pools: &[Arc<Pool>]) {
        let mut live = HashSet::new();
        let mut unchecked = HashSet::new();
        for pool in pools {
            let Some(cfg) = &pool.health else {
                unchecked.extend(pool.servers.iter().map(|s| s.state.uid));
                continue;
            };
            let cfg = Arc::new(cfg.clone());
            for s in &pool.servers {
                live.insert(s.state.uid);
                let decisive = match self.tasks.get(&s.state.uid) {
                    Some((_, running, tls, send_proxy, undecided)) => {
                        let same_question = running.check == cfg.check
                            && *tls == pool.tls
                            && *send_proxy == pool.send_proxy;
                        if same_question && **running == *cfg {
                            continue;
                        }
                        // (a task replaced before its decisive first result
                        // hands the decision on: two reloads in a row)
                        !same_question || undecided.load(std::sync::atomic::Ordering::Relaxed)
                    }
                    None => self.unchecked.contains(&s.state.uid),
                };
                self.start(pool, s, &cfg, decisive);
            }
        }
        self.unchecked = unchecked;
        self.tasks.retain(|uid, (token, _, _, _, _)| {
            let keep = live.contains(uid);
            if !keep {
                token.cancel();
            }
            keep
        });
    }

    /// Members came to and left `pool` (a DNS refresh): theirs are the only
    /// tasks started and stopped, whatever the size of the pool.
    pub fn members_changed(&mut self, pool: &Pool, added: &[Arc<Server>], removed: &[Arc<Server>]) {
        for s in removed {
            self.unchecked.remove(&s.state.uid);
            if let Some((token, _, _, _, _)) = self.tasks.remove(&s.state.uid) {
                token.cancel();
            }
        }
        let Some(cfg) = &pool.health else {
            self.unchecked.extend(added.iter().map(|s| s.state.uid));
            return;
        };
        let cfg = Arc::new(cfg.clone());
        for s in added {
            self.start(pool, s, &cfg, false);
        }
    }

    /// Starts the check task of member `s` (stopping the one it had);
    /// `decisive`: its first result decides, whatever rise and fall say.
    fn start(&mut self, pool: &Pool, s: &Server, cfg: &Arc<HealthConfig>, decisive: bool) {
        let token = self.cancel.child_token();
        let undecided = Arc::new(std::sync::atomic::AtomicBool::new(decisive));
        let replaced = self.tasks.insert(
            s.state.uid,
            (
                token.clone(),
                Arc::clone(cfg),
                pool.tls.clone(),
                pool.send_proxy,
                Arc::clone(&undecided),
            ),
        );
        if let Some((old, _, _, _, _)) = replaced {
            old.cancel();
        }
        let span = tracing::info_span!("health", pool = %pool.name, server = %s.id);
        let (addr, state, cfg) = (s.addr, Arc::clone(&s.state), Arc::clone(cfg));
        let tls = check_tls(pool, s.source.as_deref(), s.addr);
        let send_proxy = pool.send_proxy;
        let flipped = Arc::clone(&self.flipped);
        // what its checks see of a cluster counts for three of its intervals
        let fresh = cfg.interval.saturating_mul(3).saturating_add(cfg.timeout);
        let pg = check::PgTrack::new(self.wal.clone(), fresh);
        self.tracker.spawn(tracing::Instrument::instrument(
            async move {
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = check_loop(Member { addr, tls, send_proxy }, state, cfg, flipped, undecided, pg) => {}
                }
            },
            span,
        ));
    }

    /// One check of each of `addrs`, members a DNS answer for `source` brings
    /// to `pool` that are not published yet, all at once; `done` gets the
    /// reports when every one has answered (each within the check timeout),
    /// or none at once when the pool has no `[health]`.
    pub fn first_checks(
        &self,
        pool: &Pool,
        source: &str,
        addrs: Vec<SocketAddr>,
        done: impl FnOnce(Vec<(SocketAddr, CheckReport)>) + Send + 'static,
    ) {
        let Some(cfg) = &pool.health else {
            return done(Vec::new());
        };
        let cfg = Arc::new(cfg.clone());
        let send_proxy = pool.send_proxy;
        let span = tracing::info_span!("health", pool = %pool.name, first_checks = %source);
        // (the set aborts its checks if the task below is dropped)
        let mut checks = tokio::task::JoinSet::new();
        for addr in addrs {
            let tls = check_tls(pool, Some(source), addr);
            let cfg = Arc::clone(&cfg);
            checks.spawn(tracing::Instrument::instrument(
                async move {
                    let report = check_once(&cfg, addr, tls.as_ref(), send_proxy, None).await;
                    (addr, report)
                },
                tracing::info_span!(parent: &span, "check", server = %addr),
            ));
        }
        let cancel = self.cancel.clone();
        self.tracker.spawn(tracing::Instrument::instrument(
            async move {
                let all = async {
                    let mut reports = Vec::with_capacity(checks.len());
                    while let Some(r) = checks.join_next().await {
                        // (a check that panicked has no report: the member's
                        // own task checks it once published)
                        if let Ok(r) = r {
                            reports.push(r);
                        }
                    }
                    reports
                };
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    reports = all => done(reports),
                }
            },
            span,
        ));
    }

    /// Gives `s`, a member not yet published, the verdict of the check it had
    /// before (`first_checks`), as if its own task had run it.
    pub fn seed(&self, pool: &Pool, s: &Server, report: CheckReport) {
        let Some(cfg) = &pool.health else { return };
        let mut rf = RiseFall::new(s.state.health(), cfg.rise, cfg.fall);
        let _span = tracing::info_span!("health", pool = %pool.name, server = %s.id).entered();
        record(&s.state, &mut rf, report, &self.flipped);
    }

    pub fn stop_all(&mut self) {
        for (_, (t, _, _, _, _)) in self.tasks.drain() {
            t.cancel();
        }
    }
}

/// The member a check loop checks, and how it reaches it.
struct Member {
    addr: SocketAddr,
    tls: Option<CheckTls>,
    send_proxy: Option<crate::proxy_protocol::Version>,
}

async fn check_loop(
    Member {
        addr,
        tls,
        send_proxy,
    }: Member,
    state: Arc<ServerState>,
    cfg: Arc<HealthConfig>,
    flipped: Arc<tokio::sync::Notify>,
    undecided: Arc<std::sync::atomic::AtomicBool>,
    mut pg: check::PgTrack,
) {
    let mut rf = RiseFall::new(state.health(), cfg.rise, cfg.fall);
    loop {
        if state.admin() == crate::pool::AdminState::Maint {
            // In maintenance: not checked. Look again at the normal interval,
            // or at once when it ends (set_admin asks for a check then).
            tokio::select! {
                _ = tokio::time::sleep(cfg.interval) => {}
                _ = state.checks.now.notified() => {}
            }
            continue;
        }
        let started = Instant::now();
        let report = check_once(&cfg, addr, tls.as_ref(), send_proxy, Some(&mut pg)).await;
        if state.admin() == crate::pool::AdminState::Maint {
            // put in maintenance while this check ran: its verdict is from
            // before, and must not undo the UNKNOWN that maintenance set
            continue;
        }
        if undecided.swap(false, std::sync::atomic::Ordering::Relaxed) {
            // the first result of a check that asks something new decides:
            // as from UNKNOWN, unless it confirms the current state
            let now = state.health();
            let confirms = (now == Health::Up) == report.ok && now != Health::Unknown;
            let from = if confirms { now } else { Health::Unknown };
            rf = RiseFall::new(from, cfg.rise, cfg.fall);
        } else if rf.state() != state.health() {
            // changed from outside (maintenance resets it to UNKNOWN, a restored state file)
            rf = RiseFall::new(state.health(), cfg.rise, cfg.fall);
        }
        record(&state, &mut rf, report, &flipped);
        if state.admin() == crate::pool::AdminState::Maint {
            // maintenance came between the look above and the record: its
            // UNKNOWN stands (the verdict is from before)
            state.set_health(crate::pool::Health::Unknown, crate::clock::now_ms());
            continue;
        }
        let wait = if rf.changing() {
            cfg.fast_interval
        } else {
            cfg.interval
        };
        tokio::select! {
            _ = tokio::time::sleep(jittered(wait).saturating_sub(started.elapsed().min(wait / 2))) => {}
            _ = state.checks.now.notified() => {}
        }
    }
}

/// The TLS a check of `addr` (found under `source`) goes over, if the pool's
/// servers speak TLS; a postgres check's is its own (`ssl`: asked for inside
/// the protocol, as the servers take it), with the name the server is
/// verified under.
fn check_tls(pool: &Pool, source: Option<&str>, addr: SocketAddr) -> Option<CheckTls> {
    let tls = match pool.health.as_ref().map(|h| &h.check) {
        Some(crate::config::CheckKind::Postgres { ssl, .. }) => ssl.as_ref().map(|pg| &pg.tls),
        _ => pool.tls.as_ref(),
    };
    tls.map(|t| (t.clone(), t.name_for(source, addr)))
}

/// Runs one check (with the pool's `send_proxy`) and reports it.
async fn check_once(
    cfg: &HealthConfig,
    addr: SocketAddr,
    tls: Option<&CheckTls>,
    send_proxy: Option<crate::proxy_protocol::Version>,
    pg: Option<&mut check::PgTrack>,
) -> CheckReport {
    let started = Instant::now();
    let result = check_with(&cfg.check, addr, tls, send_proxy, cfg.timeout, pg).await;
    CheckReport {
        at: SystemTime::now(),
        duration: started.elapsed(),
        ok: result.is_ok(),
        detail: match result {
            Ok(s) => s,
            Err(e) => e.to_string(),
        },
    }
}

/// Counts one check of a server, feeds it to the server's rise/fall counter
/// and sets (and logs) its health when that flips.
fn record(
    state: &ServerState,
    rf: &mut RiseFall,
    report: CheckReport,
    flipped: &tokio::sync::Notify,
) {
    use std::sync::atomic::Ordering::Relaxed;
    state.checks.total.fetch_add(1, Relaxed);
    if report.ok {
        state.checks.ok.fetch_add(1, Relaxed);
        state.checks.fail_streak.store(0, Relaxed);
    } else {
        state.checks.failed.fetch_add(1, Relaxed);
        state.checks.fail_streak.fetch_add(1, Relaxed);
    }
    let was = rf.state();
    if let Some(now) = rf.observe(report.ok) {
        state.set_health(now, clock::now_ms());
        flipped.notify_one();
        if now == Health::Up {
            // Proven healthy by an active check: a breaker left open by the
            // failures that took it down would only delay its return.
            state.breaker.reset();
        }
        match now {
            Health::Up => {
                tracing::info!(from = was.as_str(), to = "UP", check = %report.detail, "server is UP")
            }
            _ => {
                tracing::warn!(from = was.as_str(), to = now.as_str(), reason = %report.detail, "server is DOWN")
            }
        }
    }
    state.checks.last.store(Some(Arc::new(report)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CheckKind;
    use bytes::Bytes;
    use hyper_util::rt::TokioIo;

    #[test]
    fn rise_and_fall_need_consecutive_results() {
        let mut rf = RiseFall::new(Health::Up, 2, 3);
        assert_eq!(rf.observe(false), None);
        assert!(rf.changing());
        assert_eq!(rf.observe(false), None);
        assert_eq!(
            rf.observe(true),
            None,
            "a success resets the failure streak"
        );
        assert!(!rf.changing());
        assert_eq!(rf.observe(false), None);
        assert_eq!(rf.observe(false), None);
        assert_eq!(rf.observe(false), Some(Health::Down));
        assert_eq!(rf.observe(false), None, "logged once");
        assert_eq!(rf.observe(true), None);
        assert_eq!(rf.observe(false), None);
        assert_eq!(rf.observe(true), None);
        assert_eq!(rf.observe(true), Some(Health::Up));
    }

    #[test]
    fn passed_and_failed_checks_are_counted_apart() {
        let state = ServerState::new(Health::Unknown);
        let mut rf = RiseFall::new(Health::Unknown, 1, 1);
        let flipped = tokio::sync::Notify::new();
        let report = |ok: bool| CheckReport {
            at: std::time::SystemTime::now(),
            duration: Duration::from_millis(1),
            ok,
            detail: if ok { "HTTP 200" } else { "HTTP 500" }.into(),
        };
        for ok in [true, true, false, true, false] {
            record(&state, &mut rf, report(ok), &flipped);
        }
        let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        // what `rampart_server_health_checks_total{result="ok"}` exports:
        // its own counter, not total - failed
        assert_eq!(n(&state.checks.ok), 3);
        assert_eq!(n(&state.checks.failed), 2);
        assert_eq!(n(&state.checks.total), 5);
        // (a handover keeps it)
        let next = ServerState::new(Health::Unknown);
        next.adopt(&state.carry());
        assert_eq!(n(&next.checks.ok), 3);
    }

    #[test]
    fn unknown_is_decided_by_the_first_result() {
        let mut rf = RiseFall::new(Health::Unknown, 3, 3);
        assert!(rf.changing());
        assert_eq!(rf.observe(true), Some(Health::Up));
        let mut rf = RiseFall::new(Health::Unknown, 3, 3);
        assert_eq!(rf.observe(false), Some(Health::Down));
        assert_eq!(rf.observe(true), None);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..1000 {
            let j = jittered(Duration::from_secs(3)).as_millis();
            assert!((2700..=3300).contains(&j), "{j}");
        }
    }

    #[tokio::test]
    async fn tcp_and_http_checks_against_real_sockets() {
        // nothing listening: refused
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let r = check_with(
            &CheckKind::Tcp,
            dead,
            None,
            None,
            Duration::from_secs(1),
            None,
        )
        .await;
        assert!(matches!(r, Err(CheckFailure::Connect(_))), "{r:?}");
        // HTTP/1.1 and HTTP/2 (h2c) servers answering 503, then "all ok here"
        for h2 in [false, true] {
            let addr = status_server(h2).await;
            let kind = |body: Option<&str>| CheckKind::Http {
                method: http::Method::GET,
                path: "/health".into(),
                host: None,
                expect_status: vec![(200, 399)],
                expect_body: body.map(String::from),
                h2,
            };
            let t = Duration::from_secs(2);
            assert_eq!(
                check_with(&kind(None), addr, None, None, t, None).await,
                Err(CheckFailure::Status(503)),
                "h2: {h2}"
            );
            assert_eq!(
                check_with(&kind(Some("ok")), addr, None, None, t, None).await,
                Ok("HTTP 200".into())
            );
            assert_eq!(
                check_with(&kind(Some("nope")), addr, None, None, t, None).await,
                Err(CheckFailure::Body)
            );
            assert!(check_with(&CheckKind::Tcp, addr, None, None, t, None)
                .await
                .is_ok());
            // the other protocol's check fails: each speaks what it says
            let other = CheckKind::Http {
                method: http::Method::GET,
                path: "/health".into(),
                host: None,
                expect_status: vec![(200, 399)],
                expect_body: None,
                h2: !h2,
            };
            let r = check_with(&other, addr, None, None, t, None).await;
            assert!(matches!(r, Err(CheckFailure::Http(_))), "h2: {h2}: {r:?}");
        }
    }

    /// A health page longer than the 64 KiB looked at: `expect_body` is
    /// checked in its first 64 KiB, not failed for the length.
    #[tokio::test]
    async fn a_long_health_page_is_checked_in_its_first_64_kib() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let body = format!("status: ok\n{}", "x".repeat(100 * 1024));
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(body.as_bytes()).await;
                });
            }
        });
        let kind = |body: &str| CheckKind::Http {
            method: http::Method::GET,
            path: "/health".into(),
            host: None,
            expect_status: vec![(200, 399)],
            expect_body: Some(body.into()),
            h2: false,
        };
        let t = Duration::from_secs(5);
        assert_eq!(
            check_with(&kind("status: ok"), addr, None, None, t, None).await,
            Ok("HTTP 200".into())
        );
        assert_eq!(
            check_with(&kind("nope"), addr, None, None, t, None).await,
            Err(CheckFailure::Body)
        );
    }

    /// A server (HTTP/1.1, or h2c) whose first connection gets 503, the next 200.
    async fn status_server(h2: bool) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let mut n = 0u32;
            loop {
                let (s, _) = l.accept().await.unwrap();
                n += 1;
                let status = if n == 1 { 503 } else { 200 };
                let svc = hyper::service::service_fn(move |_req| async move {
                    let mut r =
                        http::Response::new(http_body_util::Full::new(Bytes::from("all ok here")));
                    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                    Ok::<_, std::convert::Infallible>(r)
                });
                if h2 {
                    tokio::spawn(
                        hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(TokioIo::new(s), svc),
                    );
                } else {
                    tokio::spawn(
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(s), svc),
                    );
                }
            }
        });
        addr
    }
}
