//! One server's runtime state (`ServerState`): it outlives snapshots and is
//! carried over by (pool, address). Its fields are grouped by who writes them:
//! the data plane (`traffic`, the breaker), the server's check loop (`checks`),
//! the control task (`control`); every transition goes through a method here.

use super::breaker::Breaker;
use crate::clock;
use arc_swap::ArcSwapOption;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// Health as written by the health checker. Pools without checks keep servers UP.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up = 0,
    Down = 1,
    /// Not checked yet: no traffic until the first successful check.
    Unknown = 2,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "UP",
            Health::Down => "DOWN",
            Health::Unknown => "UNKNOWN",
        }
    }
}

/// The last active check of a server, for the stats page and API.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub at: SystemTime,
    pub duration: Duration,
    pub ok: bool,
    /// "HTTP 200", "connection refused", "role mismatch: ...".
    pub detail: String,
}

/// Runtime state of one server; it outlives snapshots (and reloads: it is carried
/// by pool name and address). Each group of fields has one writer, and every
/// state transition goes through the methods below (set_health, set_admin,
/// set_weight_override, retire), as HAProxy's server.c owns every server change:
/// - `traffic` and `breaker`: the data plane (a check that brings the server
///   UP also resets the breaker);
/// - `checks`: the server's check loop;
/// - health and its history (`health()`, `went_up`, `went_down`, `downtime`):
///   `set_health`, called by the check loop (the control task only when a
///   reload drops a pool's checks, or the state file restores a state);
/// - operator state, weight override, retirement: the control task (the admin
///   API and the state file reach it through the control task).
#[derive(Debug)]
pub struct ServerState {
    /// Process-unique id; keys the per-thread idle connection pools.
    pub uid: u64,
    pub traffic: Traffic,
    pub breaker: Breaker,
    pub checks: Checks,
    health: AtomicU8,
    /// `clock::now_ms()` when the server last came back UP from DOWN (slow start).
    up_since: AtomicU64,
    /// Its next UP starts a slow-start ramp too, from UNKNOWN: a member DNS
    /// added while serving, or one leaving maintenance (HAProxy ramps both).
    ramp_at_up: std::sync::atomic::AtomicBool,
    /// Set when the member left its pool (DNS, reload): its idle connections
    /// are closed.
    retired: std::sync::atomic::AtomicBool,
    /// The highest `Pool::conn_epoch` of a snapshot put in force with this
    /// member: idle connections made under an older one (another
    /// `[pool.tls]`, `protocol` or `send_proxy`) are closed, never reused.
    conn_epoch: AtomicU64,
    /// Operator state (admin API), see `AdminState`.
    admin: AtomicU8,
    /// Operator weight; `NO_WEIGHT` when the config's weight applies.
    weight_override: AtomicU32,
    /// `clock::now_ms()` of the last health or admin state change.
    pub status_since: AtomicU64,
    down_since: AtomicU64,
    downtime_ms: AtomicU64,
    /// The most `downtime()` returned (ms): a counter's value never goes down.
    downtime_shown: AtomicU64,
    /// UP -> DOWN flips (HAProxy's chkdown).
    pub went_down: AtomicU64,
    /// Flips to UP, from UNKNOWN or DOWN.
    pub went_up: AtomicU64,
}

/// What the data plane counts, per request or session.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Requests (http) or sessions (tcp) in flight.
    pub active: AtomicU32,
    /// Highest `active` seen (smax).
    pub max_active: AtomicU32,
    /// Requests waiting for a slot here in particular (their persistence
    /// cookie names it): a slot freed here is theirs, not the pool queue's
    /// (they are woken by their pool's `PoolShared::pinned_freed`).
    pub pinned: AtomicU32,
    pub total: AtomicU64,
    /// Bytes client -> server / server -> client.
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub connect_errors: AtomicU64,
    pub response_errors: AtomicU64,
    /// Requests that failed here and were retried on another server.
    pub retries: AtomicU64,
    /// Its responses (HTTP), by status class.
    pub responses: crate::accesslog::StatusCounts,
    /// The last failed attempt here (unix seconds, and why), for the operator:
    /// written only on the error path, by [`Traffic::failed`].
    pub last_error: std::sync::Mutex<Option<(u64, String)>>,
}

impl Traffic {
    /// Counts a failed attempt (a connect error, or a response error) and
    /// remembers why.
    pub fn failed(&self, connect: bool, why: &dyn std::fmt::Display) {
        let c = if connect {
            &self.connect_errors
        } else {
            &self.response_errors
        };
        c.fetch_add(1, Ordering::Relaxed);
        let last = Some((crate::clock::unix_now(), why.to_string()));
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = last;
    }
}

/// What the server's check loop records.
#[derive(Debug, Default)]
pub struct Checks {
    /// Active checks run.
    pub total: AtomicU64,
    /// Passed active checks: a counter of its own, never `total - failed`
    /// (the check loop adds to those one after the other, and a scrape
    /// between them saw one more pass, then one less).
    pub ok: AtomicU64,
    /// Failed active checks (HAProxy's chkfail).
    pub failed: AtomicU64,
    /// Failed active checks in a row (reset by a success).
    pub fail_streak: AtomicU32,
    pub last: ArcSwapOption<CheckReport>,
    /// Asks the check loop to check now (`POST /api/health/check`, leaving
    /// maintenance): a signal to the loop, which alone writes the rest.
    pub now: Notify,
}

const NO_WEIGHT: u32 = u32::MAX;

/// A server's state as a new process takes it over in a binary upgrade: health,
/// operator state and weight, breaker, the times of its last changes (on the
/// system-wide monotonic clock) and its counters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Carried {
    pub health: u8,
    pub admin: u8,
    pub weight_override: u32,
    pub breaker: [u64; 5],
    /// status_since, up_since, down_since, downtime_ms
    pub times: [u64; 4],
    /// total, bytes_in, bytes_out, connect_errors, response_errors, retries,
    /// checks_total, checks_failed, went_down, max_active
    pub counters: [u64; 10],
    /// Flips to UP (absent from an older process's handover: 0).
    #[serde(default)]
    pub went_up: u64,
    /// Responses by status class (absent from an older process's handover: 0).
    #[serde(default)]
    pub responses: [u64; 6],
    /// Passed checks (absent from an older process's handover: checks_total
    /// less checks_failed, as it counted them).
    #[serde(default)]
    pub checks_ok: Option<u64>,
}

/// What an operator set through the admin API.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    /// In rotation (if healthy).
    Ready = 0,
    /// No new requests or connections; in-flight ones finish; still checked.
    Drain = 1,
    /// Out of rotation and not checked.
    Maint = 2,
}

impl AdminState {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }

    pub fn parse(s: &str) -> Option<AdminState> {
        match s {
            "ready" => Some(AdminState::Ready),
            "drain" => Some(AdminState::Drain),
            "maint" => Some(AdminState::Maint),
            _ => None,
        }
    }
}

impl ServerState {
    pub fn new(initial: Health) -> ServerState {
        ServerState {
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            traffic: Traffic::default(),
            breaker: Breaker::default(),
            checks: Checks::default(),
            health: AtomicU8::new(initial as u8),
            up_since: AtomicU64::new(0),
            ramp_at_up: std::sync::atomic::AtomicBool::new(false),
            retired: std::sync::atomic::AtomicBool::new(false),
            conn_epoch: AtomicU64::new(0),
            admin: AtomicU8::new(AdminState::Ready as u8),
            weight_override: AtomicU32::new(NO_WEIGHT),
            status_since: AtomicU64::new(clock::now_ms()),
            down_since: AtomicU64::new(0),
            downtime_ms: AtomicU64::new(0),
            downtime_shown: AtomicU64::new(0),
            went_down: AtomicU64::new(0),
            went_up: AtomicU64::new(0),
        }
    }

    pub fn health(&self) -> Health {
        match self.health.load(Ordering::Relaxed) {
            0 => Health::Up,
            1 => Health::Down,
            _ => Health::Unknown,
        }
    }

    /// Sets the health; a DOWN -> UP flip starts the slow-start ramp at `now`.
    pub fn set_health(&self, h: Health, now: u64) {
        let old = self.health.swap(h as u8, Ordering::AcqRel);
        if old == h as u8 {
            return;
        }
        self.status_since.store(now, Ordering::Release);
        if old == Health::Down as u8 {
            // (cleared, then added: `downtime_sum` relies on that order)
            let since = self.down_since.swap(0, Ordering::AcqRel);
            if since != 0 {
                self.downtime_ms
                    .fetch_add(now.saturating_sub(since), Ordering::AcqRel);
            }
        }
        if h == Health::Down {
            self.down_since.store(now, Ordering::Release);
            if old == Health::Up as u8 {
                self.went_down.fetch_add(1, Ordering::Relaxed);
            }
        }
        if h == Health::Up {
            self.went_up.fetch_add(1, Ordering::Relaxed);
            if old == Health::Down as u8 || self.ramp_at_up.swap(false, Ordering::AcqRel) {
                self.up_since.store(now, Ordering::Release);
            }
        }
    }

    /// Total time spent DOWN, including the current stretch; exported as a
    /// counter, so never less than it returned before (a `now` older than
    /// the last caller's, or a read that `set_health` tore, would be).
    pub fn downtime(&self, now: u64) -> Duration {
        let ms = self.downtime_sum(now);
        let shown = self.downtime_shown.fetch_max(ms, Ordering::AcqRel);
        Duration::from_millis(ms.max(shown))
    }

    /// `downtime_ms` plus the current stretch, read as one. `set_health`
    /// clears `down_since`, then adds the stretch to `downtime_ms`: a read of
    /// the old `down_since` and the new sum counts the stretch twice, so
    /// `down_since` is read again after the sum and the read retried if it
    /// changed. (A read of the cleared `down_since` and the old sum misses
    /// the stretch, low, not high: `downtime` keeps what it showed before.)
    fn downtime_sum(&self, now: u64) -> u64 {
        let stretch = |since: u64| {
            if since == 0 {
                0
            } else {
                now.saturating_sub(since)
            }
        };
        let mut since = self.down_since.load(Ordering::Acquire);
        for _ in 0..4 {
            let sum = self.downtime_ms.load(Ordering::Acquire);
            let again = self.down_since.load(Ordering::Acquire);
            if again == since {
                return sum.saturating_add(stretch(since));
            }
            since = again;
        }
        // flipping faster than it can be read: the sum alone (low, not high)
        self.downtime_ms.load(Ordering::Acquire)
    }

    pub fn admin(&self) -> AdminState {
        match self.admin.load(Ordering::Relaxed) {
            1 => AdminState::Drain,
            2 => AdminState::Maint,
            _ => AdminState::Ready,
        }
    }

    /// An operator state change. `checked`: the server's pool has active checks;
    /// then maintenance (not checked) makes its health UNKNOWN, and leaving
    /// maintenance asks for a check at once. Returns whether the state changed.
    pub fn set_admin(&self, a: AdminState, checked: bool) -> bool {
        let was = self.admin.swap(a as u8, Ordering::AcqRel);
        if was == a as u8 {
            return false;
        }
        self.status_since.store(clock::now_ms(), Ordering::Release);
        if checked {
            if a == AdminState::Maint {
                self.set_health(Health::Unknown, clock::now_ms());
            } else if was == AdminState::Maint as u8 {
                self.ramp_from_next_up(clock::now_ms());
                self.checks.now.notify_one();
            }
        } else if was == AdminState::Maint as u8 {
            self.ramp_from_next_up(clock::now_ms());
        }
        true
    }

    /// Slow start for a server that joins the traffic now: a ramp from `now`
    /// if it is UP, else from its first UP.
    pub fn ramp_from_next_up(&self, now: u64) {
        if self.health() == Health::Up {
            self.up_since.store(now, Ordering::Release);
        } else {
            self.ramp_at_up.store(true, Ordering::Release);
        }
    }

    /// What a new process takes over (binary upgrade).
    pub fn carry(&self) -> Carried {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Carried {
            health: self.health.load(Ordering::Acquire),
            admin: self.admin.load(Ordering::Acquire),
            weight_override: self.weight_override.load(Ordering::Acquire),
            breaker: self.breaker.carry(),
            times: [
                r(&self.status_since),
                r(&self.up_since),
                r(&self.down_since),
                r(&self.downtime_ms),
            ],
            counters: [
                r(&self.traffic.total),
                r(&self.traffic.bytes_in),
                r(&self.traffic.bytes_out),
                r(&self.traffic.connect_errors),
                r(&self.traffic.response_errors),
                r(&self.traffic.retries),
                r(&self.checks.total),
                r(&self.checks.failed),
                r(&self.went_down),
                u64::from(self.traffic.max_active.load(Ordering::Relaxed)),
            ],
            went_up: r(&self.went_up),
            responses: self.traffic.responses.get(),
            checks_ok: Some(r(&self.checks.ok)),
        }
    }

    /// Takes over a server's state from the old process (a fresh state only).
    pub fn adopt(&self, c: &Carried) {
        let health = match c.health {
            0 => Health::Up,
            1 => Health::Down,
            _ => Health::Unknown,
        };
        self.health.store(health as u8, Ordering::Release);
        let admin = match c.admin {
            1 => AdminState::Drain,
            2 => AdminState::Maint,
            _ => AdminState::Ready,
        };
        self.admin.store(admin as u8, Ordering::Release);
        let w = c.weight_override;
        self.set_weight_override((w <= crate::config::MAX_WEIGHT).then_some(w));
        self.breaker.adopt(c.breaker);
        let [status_since, up_since, down_since, downtime] = c.times;
        let w = |a: &AtomicU64, v: u64| a.store(v, Ordering::Release);
        w(&self.status_since, status_since);
        w(&self.up_since, up_since);
        w(&self.down_since, down_since);
        w(&self.downtime_ms, downtime);
        w(&self.downtime_shown, 0);
        let [total, bin, bout, econn, eresp, retries, checks, failed, down, max] = c.counters;
        w(&self.traffic.total, total);
        w(&self.traffic.bytes_in, bin);
        w(&self.traffic.bytes_out, bout);
        w(&self.traffic.connect_errors, econn);
        w(&self.traffic.response_errors, eresp);
        w(&self.traffic.retries, retries);
        w(&self.checks.total, checks);
        w(&self.checks.failed, failed);
        w(
            &self.checks.ok,
            c.checks_ok.unwrap_or(checks.saturating_sub(failed)),
        );
        w(&self.went_down, down);
        w(&self.went_up, c.went_up);
        self.traffic.responses.set(c.responses);
        self.traffic
            .max_active
            .store(max.min(u64::from(u32::MAX)) as u32, Ordering::Relaxed);
    }

    /// Takes the server out of its pool for good (it left through DNS or a
    /// reload): it is in no snapshot any more, in-flight requests finish, and
    /// every worker closes its idle connections at the next sweep.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// The connection epoch of its pool in force (see `Pool::conn_epoch`):
    /// a connection made under an older one is not kept.
    #[inline]
    pub fn conn_epoch(&self) -> u64 {
        self.conn_epoch.load(Ordering::Relaxed)
    }

    /// A snapshot whose pool makes connections under `epoch` is in force
    /// (the control task, after storing it): connections of older epochs
    /// are closed at every worker's next sweep. Whether it was news.
    pub fn advance_conn_epoch(&self, epoch: u64) -> bool {
        self.conn_epoch.fetch_max(epoch, Ordering::Relaxed) < epoch
    }

    pub fn weight_override(&self) -> Option<u32> {
        match self.weight_override.load(Ordering::Relaxed) {
            NO_WEIGHT => None,
            w => Some(w),
        }
    }

    pub fn set_weight_override(&self, w: Option<u32>) {
        self.weight_override
            .store(w.unwrap_or(NO_WEIGHT), Ordering::Relaxed);
    }

    /// The slow-start ramp's start, if the server came back UP (0 = none).
    pub fn up_since(&self) -> u64 {
        self.up_since.load(Ordering::Acquire)
    }

    /// Takes one connection slot if the server is below `max` (0 = unlimited).
    pub(super) fn try_take(&self, max: u32) -> bool {
        let now = if max == 0 {
            self.traffic.active.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            match self
                .traffic
                .active
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |a| {
                    (a < max).then_some(a + 1)
                }) {
                Ok(prev) => prev + 1,
                Err(_) => return false,
            }
        };
        // Written only when a new peak is reached: rarely, after warm-up.
        if now > self.traffic.max_active.load(Ordering::Relaxed) {
            self.traffic.max_active.fetch_max(now, Ordering::Relaxed);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `downtime()` interleaved by hand with `set_health` (and with the two
    /// steps of its DOWN -> UP, the window a concurrent scrape can fall in):
    /// what it returns never goes down, and never counts a stretch twice.
    #[test]
    fn downtime_never_goes_down_and_never_double_counts() {
        let ms = |d: Duration| d.as_millis();
        let s = ServerState::new(Health::Up);
        s.set_health(Health::Down, 1_000);
        assert_eq!(ms(s.downtime(1_500)), 500);
        // a scrape that took its `now` before the one above ended after it
        assert_eq!(ms(s.downtime(1_400)), 500, "an older now");
        assert_eq!(ms(s.downtime(1_900)), 900);
        // DOWN -> UP at 2_000, stopped between its two steps: down_since is
        // cleared, the stretch not added yet
        let since = s.down_since.swap(0, Ordering::AcqRel);
        assert_eq!(since, 1_000);
        assert_eq!(ms(s.downtime(1_950)), 900, "a torn read shows no less");
        s.downtime_ms.fetch_add(2_000 - since, Ordering::AcqRel);
        s.health.store(Health::Up as u8, Ordering::Release);
        // the sum alone now, the stretch counted once
        assert_eq!(ms(s.downtime(2_500)), 1_000);
        assert_eq!(ms(s.downtime(9_000)), 1_000, "UP: no more downtime");
        // and through set_health itself
        s.set_health(Health::Down, 10_000);
        assert_eq!(ms(s.downtime(10_250)), 1_250);
        s.set_health(Health::Up, 10_500);
        assert_eq!(ms(s.downtime(10_400)), 1_500, "an older now after UP");
        assert_eq!(ms(s.downtime(11_000)), 1_500);
        // a handover starts from the old process's sum
        let next = ServerState::new(Health::Up);
        next.adopt(&s.carry());
        assert_eq!(ms(next.downtime(20_000)), 1_500);
    }
}
