//! `/metrics`: every Prometheus family, named here. The data plane keeps its
//! counters in per-server atomics; `render` turns them into metric families at
//! scrape time, so counting costs nothing beyond the atomics. The two per-pool
//! histograms (request duration, backend connect time) are prometheus `Histogram`s
//! that each pool owns (`pool::PoolHistograms`), so observing is lock-free and a
//! pool's series leave with the pool. The few process-wide counters live in
//! `crate::metrics`.

use crate::control::Shared;
use crate::metrics::{counter, gauge};
use crate::pool::{AdminState, Health, Pool};
use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, GaugeVec, Opts, TextEncoder};
use std::sync::atomic::Ordering;

/// The state label of a server, as on the stats page.
pub fn server_status(pool: &Pool, i: usize, now: u64) -> &'static str {
    let s = &pool.servers[i];
    let st = &s.state;
    match (st.admin(), st.health()) {
        (AdminState::Maint, _) => "MAINT",
        (AdminState::Drain, _) => "DRAIN",
        (_, Health::Down) => "DOWN",
        (_, Health::Unknown) => "UNKNOWN",
        _ if !st.breaker.admits(now)
            || st.breaker.state() != crate::pool::breaker::BreakerState::Closed =>
        {
            "EJECTED"
        }
        _ if s.backup => "BACKUP",
        _ => "UP",
    }
}

const STATES: [&str; 7] = [
    "UP", "DOWN", "UNKNOWN", "DRAIN", "MAINT", "EJECTED", "BACKUP",
];

/// The whole exposition: the registry's histograms plus families built from the
/// current snapshot's atomics.
pub fn render(shared: &Shared) -> String {
    let mut families = crate::metrics::global().registry.gather();
    families.extend(snapshot_families(shared));
    families.extend(pool_histograms(&shared.plane.snapshot.load()));
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Each pool's two histograms, one family each: the pools own them (a pool that
/// leaves the config takes its series with it).
fn pool_histograms(snap: &crate::snapshot::Snapshot) -> Vec<MetricFamily> {
    let mut out: Vec<MetricFamily> = Vec::new();
    for pick in [
        |h: &crate::pool::PoolHistograms| h.request_duration.collect(),
        |h: &crate::pool::PoolHistograms| h.connect_time.collect(),
    ] {
        let mut family: Option<MetricFamily> = None;
        for pool in &snap.pools {
            for mut f in pick(&pool.shared.histograms) {
                match &mut family {
                    None => family = Some(f),
                    Some(all) => all.mut_metric().append(f.mut_metric()),
                }
            }
        }
        out.extend(family);
    }
    out
}

fn snapshot_families(shared: &Shared) -> Vec<MetricFamily> {
    let now = crate::clock::now_ms();
    let ps = ["pool", "server"];
    let requests = counter(
        "rampart_server_requests_total",
        "Requests (http) or sessions (tcp) sent to a server",
        &ps,
    );
    let active = gauge(
        "rampart_server_active",
        "Requests or sessions in flight on a server",
        &ps,
    );
    let max_active = gauge(
        "rampart_server_active_max",
        "Highest number in flight seen on a server",
        &ps,
    );
    let bytes_in = counter(
        "rampart_server_bytes_in_total",
        "Bytes sent to a server (client to server)",
        &ps,
    );
    let bytes_out = counter(
        "rampart_server_bytes_out_total",
        "Bytes received from a server (server to client)",
        &ps,
    );
    let econ = counter(
        "rampart_server_connect_errors_total",
        "Failed connects to a server",
        &ps,
    );
    let eresp = counter(
        "rampart_server_response_errors_total",
        "Resets, timeouts and aborted responses from a server",
        &ps,
    );
    let retries = counter(
        "rampart_server_retries_total",
        "Requests that failed on a server and were retried on another",
        &ps,
    );
    let responses = counter(
        "rampart_server_responses_total",
        "HTTP responses from a server, by status class (servers that answered any)",
        &["pool", "server", "code"],
    );
    let weight = gauge(
        "rampart_server_weight",
        "Weight of a server (configured, or set through the admin API)",
        &ps,
    );
    let up = gauge(
        "rampart_server_up",
        "1 if the server can take traffic now",
        &ps,
    );
    let state = gauge(
        "rampart_server_state",
        "1 for the server's current state",
        &["pool", "server", "state"],
    );
    let checks = counter(
        "rampart_server_health_checks_total",
        "Active health checks by result",
        &["pool", "server", "result"],
    );
    let went_down = counter(
        "rampart_server_down_transitions_total",
        "UP to DOWN flips",
        &ps,
    );
    let downtime = prometheus::CounterVec::new(
        Opts::new(
            "rampart_server_downtime_seconds_total",
            "Total time a server has been DOWN",
        ),
        &ps,
    )
    .unwrap_or_else(|e| crate::metrics::unreachable_metric(e));
    let ejections = counter(
        "rampart_server_ejections_total",
        "Times the circuit breaker ejected a server",
        &ps,
    );
    let queue = gauge(
        "rampart_pool_queue",
        "Requests waiting for a free server",
        &["pool"],
    );
    let queue_class = gauge(
        "rampart_pool_queue_priority",
        "Requests waiting for a free server, by priority class",
        &["pool", "priority"],
    );
    let admitted = counter(
        "rampart_pool_admitted_total",
        "Requests that got a server slot, by priority class",
        &["pool", "priority"],
    );
    let shed = counter(
        "rampart_pool_shed_total",
        "Requests shed (503) while the pool was saturated, by priority class",
        &["pool", "priority"],
    );
    let perrors = counter(
        "rampart_pool_errors_total",
        "Requests or sessions that failed for good (502/503/504, closed tcp)",
        &["pool"],
    );
    let pretries = counter(
        "rampart_pool_retries_total",
        "Retries made on another server",
        &["pool"],
    );
    let dns_refreshes = counter(
        "rampart_pool_dns_refreshes_total",
        "DNS answers applied to the pool's members, in place or by a rebuild of the pool",
        &["pool", "how"],
    );
    let eligible = gauge(
        "rampart_pool_eligible_servers",
        "Servers that can take traffic now",
        &["pool"],
    );
    let servers = gauge("rampart_pool_servers", "Members of the pool", &["pool"]);
    let circuit_state = gauge(
        "rampart_pool_circuit_state",
        "The pool-level circuit ([pool.circuit]): 0 closed, 1 open (failing fast), 2 half-open (one trial)",
        &["pool"],
    );
    let circuit_opened = counter(
        "rampart_pool_circuit_opened_total",
        "Times the pool-level circuit opened",
        &["pool"],
    );
    let l_active = gauge(
        "rampart_listener_connections",
        "Open client connections",
        &["listener"],
    );
    let l_total = counter(
        "rampart_listener_connections_total",
        "Client connections accepted",
        &["listener"],
    );
    let l_ro = gauge(
        "rampart_listener_read_only",
        "1 while the listener refuses writes (switched by an operator, or a pool of read_only_when has no server)",
        &["listener"],
    );
    let l_ro_refused = counter(
        "rampart_listener_read_only_refused_total",
        "Writes refused in read-only mode",
        &["listener"],
    );
    let l_pp_refused = counter(
        "rampart_listener_proxy_protocol_refused_total",
        "Connections refused for their PROXY header, by reason",
        &["listener", "reason"],
    );
    let l_req_errors = counter(
        "rampart_listener_request_errors_total",
        "Requests refused for what the client sent (answered 400, 431 or 408 by the proxy), by reason",
        &["listener", "reason"],
    );
    let l_responses = counter(
        "rampart_listener_responses_total",
        "Responses a listener's clients got (the servers' and the proxy's own), by status class",
        &["listener", "code"],
    );
    let l_denied = counter(
        "rampart_listener_denied_total",
        "Requests answered by a deny rule; a tcp listener's connections no route took (it has no pool)",
        &["listener"],
    );
    let l_redirected = counter(
        "rampart_listener_redirected_total",
        "Requests answered by a redirect rule",
        &["listener"],
    );
    let l_responded = counter(
        "rampart_listener_responded_total",
        "Requests answered by a respond rule",
        &["listener"],
    );
    let l_limited = counter(
        "rampart_listener_rate_limited_total",
        "Requests refused by a rate limit or quota (429)",
        &["listener"],
    );
    let l_ro_switches = counter(
        "rampart_listener_read_only_switches_total",
        "Times the listener switched into or out of read-only mode",
        &["listener"],
    );
    let dns_lookups = counter(
        "rampart_dns_lookups_total",
        "DNS lookups of a server name",
        &["pool", "name"],
    );
    let dns_errors = counter(
        "rampart_dns_errors_total",
        "Failed DNS lookups (timeout, refused, server failure)",
        &["pool", "name"],
    );
    let dns_members = gauge(
        "rampart_dns_members",
        "Members a name resolves to",
        &["pool", "name"],
    );
    let misc = gauge("rampart_ready", "1 when the proxy reports ready", &[]);
    let tasks = gauge(
        "rampart_runtime_alive_tasks",
        "Tasks alive on a runtime (control, or worker wN): back to its baseline when idle",
        &["runtime"],
    );
    for (name, handle) in shared.runtimes.get().into_iter().flatten() {
        let n = handle.metrics().num_alive_tasks();
        tasks
            .with_label_values(&[name])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    let dropped = counter(
        "rampart_access_log_dropped_total",
        "Access log lines dropped because the writer fell behind",
        &[],
    );

    let snap = shared.plane.snapshot.load();
    for pool in &snap.pools {
        let p = &*pool.name;
        for (i, s) in pool.servers.iter().enumerate() {
            let l = [p, &*s.id];
            let st = &s.state;
            requests
                .with_label_values(&l)
                .inc_by(st.traffic.total.load(Ordering::Relaxed));
            active
                .with_label_values(&l)
                .set(i64::from(st.traffic.active.load(Ordering::Relaxed)));
            max_active
                .with_label_values(&l)
                .set(i64::from(st.traffic.max_active.load(Ordering::Relaxed)));
            bytes_in
                .with_label_values(&l)
                .inc_by(st.traffic.bytes_in.load(Ordering::Relaxed));
            bytes_out
                .with_label_values(&l)
                .inc_by(st.traffic.bytes_out.load(Ordering::Relaxed));
            econ.with_label_values(&l)
                .inc_by(st.traffic.connect_errors.load(Ordering::Relaxed));
            eresp
                .with_label_values(&l)
                .inc_by(st.traffic.response_errors.load(Ordering::Relaxed));
            retries
                .with_label_values(&l)
                .inc_by(st.traffic.retries.load(Ordering::Relaxed));
            // (a TCP pool's servers answer none: no series for them)
            let by_class = st.traffic.responses.get();
            if by_class.iter().any(|n| *n > 0) {
                let classes = crate::accesslog::StatusCounts::CLASSES;
                for (code, n) in classes.iter().zip(by_class) {
                    responses.with_label_values(&[p, &*s.id, code]).inc_by(n);
                }
            }
            weight.with_label_values(&l).set(i64::from(s.weight));
            up.with_label_values(&l).set(i64::from(pool.usable(i, now)));
            let current = server_status(pool, i, now);
            for name in STATES {
                state
                    .with_label_values(&[p, &*s.id, name])
                    .set(i64::from(name == current));
            }
            if pool.health.is_some() {
                // (each its own counter: `total - failed` went down when a
                // scrape fell between the check loop's two additions)
                checks
                    .with_label_values(&[p, &*s.id, "ok"])
                    .inc_by(st.checks.ok.load(Ordering::Relaxed));
                checks
                    .with_label_values(&[p, &*s.id, "failed"])
                    .inc_by(st.checks.failed.load(Ordering::Relaxed));
            }
            went_down
                .with_label_values(&l)
                .inc_by(st.went_down.load(Ordering::Relaxed));
            downtime
                .with_label_values(&l)
                .inc_by(st.downtime(now).as_secs_f64());
            ejections
                .with_label_values(&l)
                .inc_by(st.breaker.ejections.load(Ordering::Relaxed));
        }
        queue
            .with_label_values(&[p])
            .set(i64::from(pool.shared.queue.waiting()));
        // (a pool without max_connections_per_server never queues)
        for class in crate::rules::Priority::ALL
            .iter()
            .filter(|_| pool.max_conn_per_server > 0)
        {
            let class = *class;
            let st = pool.shared.queue.stats(class);
            let l = [p, class.name()];
            queue_class.with_label_values(&l).set(i64::from(st.queued));
            admitted.with_label_values(&l).inc_by(st.admitted);
            shed.with_label_values(&l).inc_by(st.shed);
        }
        perrors
            .with_label_values(&[p])
            .inc_by(pool.shared.errors.load(Ordering::Relaxed));
        pretries
            .with_label_values(&[p])
            .inc_by(pool.shared.retries.load(Ordering::Relaxed));
        for (how, n) in [
            ("in_place", &pool.shared.dns_in_place),
            ("rebuilt", &pool.shared.dns_rebuilt),
        ] {
            dns_refreshes
                .with_label_values(&[p, how])
                .inc_by(n.load(Ordering::Relaxed));
        }
        eligible
            .with_label_values(&[p])
            .set(pool.eligible_count() as i64);
        if pool.circuit.is_some() {
            use crate::pool::circuit::State;
            let c = &pool.shared.circuit;
            circuit_state.with_label_values(&[p]).set(match c.state() {
                State::Closed => 0,
                State::Open => 1,
                State::HalfOpen => 2,
            });
            circuit_opened
                .with_label_values(&[p])
                .inc_by(c.opened_total.load(Ordering::Relaxed));
        }
        servers
            .with_label_values(&[p])
            .set(pool.servers.len() as i64);
    }
    let store_up = gauge(
        "rampart_rate_limit_store_up",
        "[rate_limit_store]: 1 while syncs succeed, 0 while limits are local-only (fallback_share)",
        &[],
    );
    let store_syncs = counter(
        "rampart_rate_limit_store_syncs_total",
        "Syncs of shared rate limits and quotas with the store, by result",
        &["result"],
    );
    let store_fallbacks = counter(
        "rampart_rate_limit_store_fallbacks_total",
        "Times this node fell back to local-only limits because the store was unreachable",
        &[],
    );
    let limit_refused = counter(
        "rampart_rate_limit_refused_total",
        "Requests refused by a rate limit, by what refused them: the rate or the quota",
        &["limit", "by"],
    );
    let limit_keys = gauge(
        "rampart_rate_limit_keys",
        "Keys a rate limit holds now, for its rate and for its quota (each at most its max_keys)",
        &["limit", "kind"],
    );
    for l in &snap.rate_limits {
        let name = l.cfg.name.as_str();
        for (by, n) in [
            ("rate", &l.store.refused_rate),
            ("quota", &l.store.refused_quota),
        ] {
            limit_refused
                .with_label_values(&[name, by])
                .inc_by(n.load(Ordering::Relaxed));
        }
        for (kind, n) in [("rate", l.rate_keys()), ("quota", l.store.quota_len())] {
            limit_keys.with_label_values(&[name, kind]).set(n as i64);
        }
    }
    if let Some(link) = &snap.rate_link {
        store_up
            .with_label_values::<&str>(&[])
            .set(i64::from(link.is_up()));
        store_syncs
            .with_label_values(&["ok"])
            .inc_by(link.syncs_ok.load(Ordering::Relaxed));
        store_syncs
            .with_label_values(&["failed"])
            .inc_by(link.syncs_failed.load(Ordering::Relaxed));
        store_fallbacks
            .with_label_values::<&str>(&[])
            .inc_by(link.fallbacks.load(Ordering::Relaxed));
    }
    let expiry = gauge(
        "rampart_tls_cert_expiry_timestamp_seconds",
        "When a listener's certificate expires (notAfter, seconds since the epoch), by listener and certificate file",
        &["listener", "cert"],
    );
    let crl_next = gauge(
        "rampart_tls_crl_next_update_timestamp_seconds",
        "When a listener's client CRL goes stale (its earliest nextUpdate, seconds since the epoch): from then on every full handshake with a client certificate it covers is refused",
        &["listener", "crl"],
    );
    let pool_crl_next = gauge(
        "rampart_pool_tls_crl_next_update_timestamp_seconds",
        "When a pool's CRL goes stale (its earliest nextUpdate, seconds since the epoch): from then on every full handshake with a server certificate it covers is refused",
        &["pool", "crl"],
    );
    for pool in &snap.pools {
        if let Some(crl) = pool.tls.as_ref().and_then(|t| t.crl.as_ref()) {
            if let Some(next) = crl.next_update {
                pool_crl_next
                    .with_label_values(&[&*pool.name, &*crl.path.display().to_string()])
                    .set(next);
            }
        }
    }
    for l in &snap.listeners {
        if let Some(tls) = &l.tls {
            for (cert, not_after) in &tls.certs {
                expiry
                    .with_label_values(&[&*l.name, cert.as_str()])
                    .set(*not_after);
            }
            if let Some((crl, next)) = &tls.crl {
                crl_next
                    .with_label_values(&[&*l.name, crl.as_str()])
                    .set(*next);
            }
        }
        let st = &l.shared;
        l_active
            .with_label_values(&[&*l.name])
            .set(st.active.load(Ordering::Relaxed) as i64);
        l_total
            .with_label_values(&[&*l.name])
            .inc_by(st.total.load(Ordering::Relaxed));
        if l.proxy_protocol.is_some() {
            let reasons = crate::proxy_protocol::PpError::REASONS;
            for (reason, n) in reasons.iter().zip(&st.proxy_refused) {
                l_pp_refused
                    .with_label_values(&[&*l.name, reason])
                    .inc_by(n.load(Ordering::Relaxed));
            }
        }
        l_denied
            .with_label_values(&[&*l.name])
            .inc_by(st.denied.load(Ordering::Relaxed));
        if l.mode == crate::config::Mode::Http {
            for (code, n) in crate::accesslog::StatusCounts::CLASSES
                .iter()
                .zip(st.responses.get())
            {
                l_responses.with_label_values(&[&*l.name, code]).inc_by(n);
            }
            for (c, n) in [
                (&l_redirected, &st.redirected),
                (&l_responded, &st.responded),
                (&l_limited, &st.rate_limited),
            ] {
                c.with_label_values(&[&*l.name])
                    .inc_by(n.load(Ordering::Relaxed));
            }
            let reasons = crate::accesslog::RequestFault::REASONS;
            for (reason, n) in reasons.iter().zip(&st.request_errors) {
                l_req_errors
                    .with_label_values(&[&*l.name, reason])
                    .inc_by(n.load(Ordering::Relaxed));
            }
            let ro = st.manual_read_only.load(Ordering::Relaxed)
                || st.read_only_now.load(Ordering::Relaxed);
            l_ro.with_label_values(&[&*l.name]).set(i64::from(ro));
            l_ro_refused
                .with_label_values(&[&*l.name])
                .inc_by(st.read_only_refused.load(Ordering::Relaxed));
            l_ro_switches
                .with_label_values(&[&*l.name])
                .inc_by(st.read_only_switches.load(Ordering::Relaxed));
        }
    }
    let generation = gauge(
        "rampart_config_generation",
        "The config generation in force (1 at start, +1 per successful reload)",
        &[],
    );
    generation
        .with_label_values::<&str>(&[])
        .set(snap.generation as i64);
    let reloads = counter(
        "rampart_config_reloads_total",
        "Config reloads, by result (ok, failed)",
        &["result"],
    );
    let last_reload = GaugeVec::new(
        Opts::new(
            "rampart_config_last_reload_timestamp_seconds",
            "Unix time of the last reload attempt (0: none yet)",
        ),
        &[],
    )
    .unwrap_or_else(|e| crate::metrics::unreachable_metric(e));
    {
        let r = shared.reloads.lock().unwrap_or_else(|e| e.into_inner());
        reloads.with_label_values(&["ok"]).inc_by(r.ok);
        reloads.with_label_values(&["failed"]).inc_by(r.failed);
        last_reload.with_label_values::<&str>(&[]).set(
            r.last
                .as_ref()
                .and_then(|l| l.at.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64()),
        );
    }
    for st in shared
        .dns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
    {
        let l = [st.pool.as_str(), st.name.as_str()];
        dns_lookups.with_label_values(&l).inc_by(st.lookups);
        dns_errors.with_label_values(&l).inc_by(st.errors);
        dns_members
            .with_label_values(&l)
            .set(st.members.len() as i64);
    }
    misc.with_label_values::<&str>(&[])
        .set(i64::from(shared.plane.is_ready()));
    dropped
        .with_label_values::<&str>(&[])
        .inc_by(shared.plane.access_log.dropped.load(Ordering::Relaxed));
    let state_errors = counter(
        "rampart_state_file_write_errors_total",
        "Failed writes of the state file (a full disk, a read-only mount)",
        &[],
    );
    state_errors
        .with_label_values::<&str>(&[])
        .inc_by(crate::metrics::STATE_FILE_WRITE_ERRORS.load(Ordering::Relaxed));
    let spliced = counter(
        "rampart_tcp_spliced_bytes_total",
        "Bytes tcp sessions moved with splice(2), zero-copy (counted as a session ends)",
        &[],
    );
    spliced
        .with_label_values::<&str>(&[])
        .inc_by(crate::metrics::TCP_SPLICED_BYTES.load(Ordering::Relaxed));
    let http_spliced = counter(
        "rampart_http_spliced_bytes_total",
        "Bytes of HTTP response bodies moved with splice(2), zero-copy (counted as a response ends)",
        &[],
    );
    http_spliced
        .with_label_values::<&str>(&[])
        .inc_by(crate::metrics::HTTP_SPLICED_BYTES.load(Ordering::Relaxed));
    let state_failing = gauge(
        "rampart_state_file_failing",
        "1 while the last write of the state file failed",
        &[],
    );
    state_failing.with_label_values::<&str>(&[]).set(i64::from(
        crate::metrics::STATE_FILE_FAILING.load(Ordering::Relaxed),
    ));
    let parked = gauge(
        "rampart_connections_parked",
        "Idle HTTP/1.1 client connections parked outside their tasks (park_idle_after)",
        &[],
    );
    parked
        .with_label_values::<&str>(&[])
        .set(crate::proxy::park::PARKED.load(Ordering::Relaxed));
    let parked_total = counter(
        "rampart_connections_parked_total",
        "Times an idle HTTP/1.1 client connection was parked",
        &[],
    );
    parked_total
        .with_label_values::<&str>(&[])
        .inc_by(crate::proxy::park::PARKED_TOTAL.load(Ordering::Relaxed));

    let mut out = Vec::new();
    if let Some(ha) = shared.ha.get() {
        let st = gauge(
            "rampart_ha_state",
            "1 for this node's current HA state",
            &["state"],
        );
        for s in ["INIT", "BACKUP", "MASTER", "FAULT"] {
            st.with_label_values(&[s])
                .set(i64::from(ha.state().as_str() == s));
        }
        let prio = gauge("rampart_ha_priority", "This node's HA priority", &[]);
        prio.with_label_values::<&str>(&[])
            .set(i64::from(ha.priority()));
        let tr = counter("rampart_ha_transitions_total", "HA state transitions", &[]);
        tr.with_label_values::<&str>(&[])
            .inc_by(ha.transitions.load(Ordering::Relaxed));
        let sent = counter("rampart_ha_adverts_sent_total", "Heartbeats sent", &[]);
        sent.with_label_values::<&str>(&[])
            .inc_by(ha.adverts_sent.load(Ordering::Relaxed));
        let recv = counter(
            "rampart_ha_adverts_received_total",
            "Heartbeats accepted",
            &[],
        );
        recv.with_label_values::<&str>(&[])
            .inc_by(ha.adverts_received.load(Ordering::Relaxed));
        let reinstated = counter(
            "rampart_ha_vips_reinstated_total",
            "VIPs found missing from the interface while MASTER, and added back",
            &[],
        );
        reinstated
            .with_label_values::<&str>(&[])
            .inc_by(ha.vips_reinstated.load(Ordering::Relaxed));
        let dropped = counter(
            "rampart_ha_dropped_total",
            "Heartbeats dropped, by reason",
            &["reason"],
        );
        for (reason, n) in ha.dropped() {
            dropped.with_label_values(&[reason]).inc_by(n);
        }
        let seen = GaugeVec::new(
            Opts::new(
                "rampart_ha_peer_last_seen_seconds",
                "Seconds since a peer's last heartbeat",
            ),
            &["peer"],
        )
        .unwrap_or_else(|e| crate::metrics::unreachable_metric(e));
        let peer_key = gauge(
            "rampart_ha_peer_key",
            "1 for the key that verified a peer's last heartbeat: current (auth_key_file), previous (auth_previous_key_file) or grace (what auth_key_file held before the last reload, for auth_key_grace after it)",
            &["peer", "key"],
        );
        for p in ha.peers() {
            seen.with_label_values(&[p.node_id.as_str()])
                .set(p.ago.as_secs_f64());
            // (none for a peer heard without a key: auth = "none")
            if p.key.is_some() {
                for k in crate::ha::keys::KeyUsed::ALL {
                    peer_key
                        .with_label_values(&[p.node_id.as_str(), k.label()])
                        .set(i64::from(p.key == Some(k)));
                }
            }
        }
        let previous_unused = gauge(
            "rampart_ha_previous_key_unused",
            &format!(
                "1 while auth_previous_key_file is set and no longer used: the peer's last {} heartbeats in a row verified with auth_key_file's key (0 while nothing is heard, as on a MASTER, and with more than one peer)",
                crate::ha::keys::PREVIOUS_UNUSED_AFTER
            ),
            &[],
        );
        previous_unused
            .with_label_values::<&str>(&[])
            .set(i64::from(ha.previous_key_unused()));
        for c in [&st, &prio, &peer_key, &previous_unused] {
            out.extend(c.collect());
        }
        for c in [&tr, &sent, &recv, &reinstated, &dropped] {
            out.extend(c.collect());
        }
        out.extend(seen.collect());
    }
    out.extend(requests.collect());
    out.extend(active.collect());
    out.extend(max_active.collect());
    out.extend(bytes_in.collect());
    out.extend(bytes_out.collect());
    out.extend(econ.collect());
    out.extend(eresp.collect());
    out.extend(retries.collect());
    out.extend(responses.collect());
    out.extend(weight.collect());
    out.extend(up.collect());
    out.extend(state.collect());
    out.extend(checks.collect());
    out.extend(went_down.collect());
    out.extend(downtime.collect());
    out.extend(ejections.collect());
    out.extend(queue.collect());
    out.extend(limit_refused.collect());
    out.extend(limit_keys.collect());
    out.extend(store_up.collect());
    out.extend(store_syncs.collect());
    out.extend(store_fallbacks.collect());
    out.extend(queue_class.collect());
    out.extend(admitted.collect());
    out.extend(shed.collect());
    out.extend(perrors.collect());
    out.extend(pretries.collect());
    out.extend(dns_refreshes.collect());
    out.extend(eligible.collect());
    out.extend(circuit_state.collect());
    out.extend(circuit_opened.collect());
    out.extend(servers.collect());
    out.extend(l_active.collect());
    out.extend(l_total.collect());
    out.extend(l_ro.collect());
    out.extend(l_ro_refused.collect());
    out.extend(l_ro_switches.collect());
    out.extend(l_pp_refused.collect());
    out.extend(l_req_errors.collect());
    out.extend(l_responses.collect());
    out.extend(l_denied.collect());
    out.extend(l_redirected.collect());
    out.extend(l_responded.collect());
    out.extend(l_limited.collect());
    out.extend(dns_lookups.collect());
    out.extend(dns_errors.collect());
    out.extend(dns_members.collect());
    out.extend(misc.collect());
    out.extend(tasks.collect());
    out.extend(state_errors.collect());
    out.extend(spliced.collect());
    out.extend(http_spliced.collect());
    out.extend(state_failing.collect());
    out.extend(parked.collect());
    out.extend(parked_total.collect());
    out.extend(generation.collect());
    out.extend(reloads.collect());
    out.extend(last_reload.collect());
    out.extend(dropped.collect());
    out.extend(expiry.collect());
    out.extend(crl_next.collect());
    out.extend(pool_crl_next.collect());
    // families with no samples (e.g. no DNS names) are left out
    out.retain(|f| !f.get_metric().is_empty());
    out
}
