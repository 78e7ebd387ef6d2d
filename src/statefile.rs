//! `[global] state_file`: operator state (drain/maint, weights) and the last known
//! health of every server, written atomically (write, fsync, rename, fsync the
//! directory) when it changes and restored at start-up, so a drained server stays
//! drained across a restart.

use crate::pool::{AdminState, Health};
use crate::snapshot::Snapshot;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a rampart state file: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedServer {
    pub pool: String,
    pub address: String,
    pub admin: String,
    pub weight: Option<u32>,
    pub health: String,
    /// When the server was first found gone from its pool (Unix seconds) and
    /// its entry carried over for its return; none while it is a member (and
    /// in files older versions wrote). Dropped once older than
    /// [`DEPARTED_FOR`]: an address a new, unrelated pod reuses later starts
    /// ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub departed_at: Option<u64>,
}

impl SavedServer {
    /// Whether an operator set anything here (drain, maint, a weight): what is
    /// worth keeping for a server that left.
    fn holds_operator_state(&self) -> bool {
        AdminState::parse(&self.admin).is_some_and(|a| a != AdminState::Ready)
            || self.weight.is_some()
    }

    /// How long the server has been gone at `now` (Unix seconds): zero for a
    /// member, and for a time in the future (a clock set back).
    fn away(&self, now: u64) -> Duration {
        Duration::from_secs(self.departed_at.map_or(0, |t| now.saturating_sub(t)))
    }

    /// Whether the server left longer ago than an operator's state of it is kept.
    fn expired(&self, now: u64) -> bool {
        self.away(now) >= DEPARTED_FOR
    }
}

/// How long an operator's state of a server that left its pool is kept for its
/// return, in the running process and across restarts (a pod's restart takes
/// seconds to minutes; an address reused by another pod much later starts ready).
pub const DEPARTED_FOR: Duration = Duration::from_secs(15 * 60);

/// A listener an operator switched to read-only (`rampart mode`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedListener {
    pub name: String,
    /// "read-only" (listeners in normal mode are not written).
    pub mode: String,
}

/// A key's use of a quota in the current window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedQuota {
    /// The `[[rate_limit]]` name.
    pub limit: String,
    pub key: String,
    /// The key's hash, as requests compute it.
    pub hash: u64,
    pub window: u64,
    /// The window's length, seconds.
    #[serde(default = "day")]
    pub len: u64,
    pub used: u64,
}

fn day() -> u64 {
    86_400
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    pub version: u32,
    pub servers: Vec<SavedServer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<SavedListener>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<SavedQuota>,
}

impl Default for StateFile {
    fn default() -> StateFile {
        StateFile {
            version: 1,
            servers: Vec::new(),
            listeners: Vec::new(),
            quotas: Vec::new(),
        }
    }
}

/// What the snapshot holds now, plus the entries of `previous` that hold an
/// operator's state (drain, maint, a weight) for servers that are not members
/// right now (a DNS member briefly absent keeps its drain/maint state) in pools
/// that still exist, each stamped with when it was first carried over and
/// dropped [`DEPARTED_FOR`] after that: with pod churn, every address ever seen
/// would otherwise stay in the file, and an old maint come back on an unrelated
/// pod that reuses the address.
pub fn capture_merged(snap: &Snapshot, previous: &StateFile) -> StateFile {
    capture_merged_at(snap, previous, crate::clock::unix_now())
}

/// [`capture_merged`] at `now` (Unix seconds).
pub fn capture_merged_at(snap: &Snapshot, previous: &StateFile, now: u64) -> StateFile {
    let mut st = capture(snap);
    let present: std::collections::HashSet<(String, String)> = st
        .servers
        .iter()
        .map(|s| (s.pool.clone(), s.address.clone()))
        .collect();
    for old in &previous.servers {
        let pool_exists = snap.pools.iter().any(|p| *p.name == *old.pool);
        if !pool_exists
            || present.contains(&(old.pool.clone(), old.address.clone()))
            || !old.holds_operator_state()
        {
            continue;
        }
        // (a member at the last write left now; a time ahead of `now` is a
        // clock set back, and must not keep the entry for as long)
        let departed_at = old.departed_at.map_or(now, |t| t.min(now));
        let carried = SavedServer {
            departed_at: Some(departed_at),
            ..old.clone()
        };
        if !carried.expired(now) {
            st.servers.push(carried);
        }
    }
    st
}

/// What the snapshot holds now.
pub fn capture(snap: &Snapshot) -> StateFile {
    let unix = crate::clock::unix_now();
    let quotas = snap
        .rate_limits
        .iter()
        .flat_map(|l| {
            l.quota_entries()
                .into_iter()
                .filter(move |(_, e)| e.window == unix / e.len.max(1) && e.used > 0)
                .map(move |(hash, e)| SavedQuota {
                    limit: l.cfg.name.clone(),
                    key: e.key,
                    hash,
                    window: e.window,
                    len: e.len,
                    used: e.used,
                })
        })
        .collect();
    let listeners = snap
        .listeners
        .iter()
        .filter(|l| {
            l.shared
                .manual_read_only
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .map(|l| SavedListener {
            name: l.name.to_string(),
            mode: "read-only".into(),
        })
        .collect();
    let mut servers = Vec::new();
    for p in &snap.pools {
        for s in &p.servers {
            servers.push(SavedServer {
                pool: p.name.to_string(),
                address: s.addr.to_string(),
                admin: s.state.admin().as_str().to_string(),
                weight: s.state.weight_override(),
                health: s.state.health().as_str().to_string(),
                departed_at: None,
            });
        }
    }
    StateFile {
        version: 1,
        servers,
        listeners,
        quotas,
    }
}

/// The sequence number of the last state written; writes run off the control task
/// and may finish out of order, so an older state never replaces a newer one.
static WRITTEN: std::sync::Mutex<u64> = std::sync::Mutex::new(0);

/// Writes `state` to `path` atomically: to a temporary file of this process's
/// own (a binary upgrade runs two processes on one file), fsync, rename, fsync the
/// directory. Writes are serialised; a write whose `seq` is older than the last
/// one written is skipped. A failed write removes its temporary file and counts
/// in `metrics::STATE_FILE_WRITE_ERRORS`; the file on disk stays the last complete one.
pub fn save(path: &Path, state: &StateFile, seq: u64) -> Result<(), StateFileError> {
    let mut written = WRITTEN.lock().unwrap_or_else(|e| e.into_inner());
    if seq != 0 && seq <= *written {
        return Ok(());
    }
    let tmp = tmp_path(path, std::process::id());
    let r = write_atomically(path, &tmp, state);
    match &r {
        Ok(()) => *written = seq.max(*written),
        Err(_) => {
            crate::metrics::STATE_FILE_WRITE_ERRORS
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = std::fs::remove_file(&tmp);
        }
    }
    r
}

/// [`save`], logging a failure when writes start failing and when they recover
/// (quota counts are written every second: one line per outage, not per write).
pub fn save_logged(path: &Path, state: &StateFile, seq: u64) {
    use crate::metrics::STATE_FILE_FAILING as FAILING;
    use std::sync::atomic::Ordering;
    match save(path, state, seq) {
        Err(e) if !FAILING.swap(true, Ordering::Relaxed) => {
            tracing::error!(error = %e, "cannot write the state file; serving goes on, and the next change tries again")
        }
        Err(e) => tracing::debug!(error = %e, "cannot write the state file"),
        Ok(()) if FAILING.swap(false, Ordering::Relaxed) => {
            tracing::info!(path = %path.display(), "the state file is written again")
        }
        Ok(()) => {}
    }
}

fn tmp_path(path: &Path, pid: u32) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{pid}"));
    path.with_file_name(name)
}

fn write_atomically(path: &Path, tmp: &Path, state: &StateFile) -> Result<(), StateFileError> {
    let io = |source| StateFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let body = serde_json::to_vec_pretty(state).map_err(|e| io(std::io::Error::other(e)))?;
    {
        // owner only: quota entries name clients' keys (API keys from headers)
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(tmp)
            .map_err(io)?;
        // (a file left by an older version's crash keeps its mode when
        // opened: set it)
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        f.write_all(&body).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(tmp, path).map_err(io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Reads the state file at start-up. A missing file is an empty state. A file
/// that does not parse (a disk fault, a hand edit) is moved aside to
/// `<path>.corrupt`, so the first write does not destroy what an operator may
/// want to look at, and the error says where it went; start-up goes on without
/// it. Temporary files left by processes that died mid-write are removed.
pub fn load_at_start(path: &Path) -> Result<StateFile, StateFileError> {
    remove_stale_tmp(path);
    let r = load(path);
    if let Err(StateFileError::Parse { .. }) = &r {
        let mut aside = path.as_os_str().to_os_string();
        aside.push(".corrupt");
        let aside = PathBuf::from(aside);
        if std::fs::rename(path, &aside).is_ok() {
            tracing::warn!(moved_to = %aside.display(), "the unreadable state file was moved aside");
        }
    }
    r
}

/// Removes `<file>.tmp.<pid>` next to `path` for processes that no longer run.
fn remove_stale_tmp(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.tmp.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Reads a state file; a missing one is an empty state.
pub fn load(path: &Path) -> Result<StateFile, StateFileError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|source| StateFileError::Parse {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StateFile::default()),
        Err(source) => Err(StateFileError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Puts saved quota use back into the limits of `snap` that still exist (by
/// name); a count already there for the same window is kept if higher.
pub fn restore_quotas(snap: &Snapshot, quotas: &[SavedQuota]) {
    for q in quotas {
        if let Some(l) = snap.rate_limits.iter().find(|l| l.cfg.name == q.limit) {
            l.restore_quota(
                q.hash,
                crate::ratelimit::QuotaEntry {
                    key: q.key.clone(),
                    window: q.window,
                    len: q.len,
                    used: q.used,
                    synced: None,
                    seed: 0,
                },
            );
        }
    }
}

/// An operator's state of a server that is not a member of its pool now.
#[derive(Debug, Clone, PartialEq)]
pub struct AbsentState {
    pub pool: String,
    pub addr: std::net::SocketAddr,
    pub admin: AdminState,
    pub weight: Option<u32>,
    /// How long it has been gone (zero if it was a member at the last write):
    /// what is left of [`DEPARTED_FOR`] is how long the state is kept for it.
    pub away: Duration,
}

/// The saved drain, maint or weight of servers in pools of `snap` that are not
/// members now (DNS members absent from the answer at start-up), at `now` (Unix
/// seconds); those gone longer than [`DEPARTED_FOR`] are left out.
pub fn absent_operator_states(snap: &Snapshot, state: &StateFile, now: u64) -> Vec<AbsentState> {
    state
        .servers
        .iter()
        .filter_map(|saved| {
            let pool = snap.pools.iter().find(|p| *p.name == *saved.pool)?;
            let addr: std::net::SocketAddr = saved.address.parse().ok()?;
            if pool.servers.iter().any(|s| s.addr == addr) || saved.expired(now) {
                return None;
            }
            let admin = AdminState::parse(&saved.admin)?;
            let weight = saved.weight.filter(|w| *w <= crate::config::MAX_WEIGHT);
            (admin != AdminState::Ready || weight.is_some()).then(|| AbsentState {
                pool: saved.pool.clone(),
                addr,
                admin,
                weight,
                away: saved.away(now),
            })
        })
        .collect()
}

/// Applies saved states to the servers of `snap` that still exist (by pool name
/// and address). Returns how many were restored. Weights take effect when the
/// pools are rebuilt.
pub fn restore(snap: &Snapshot, state: &StateFile) -> usize {
    restore_at(snap, state, crate::clock::unix_now())
}

/// [`restore`] at `unix_now` (Unix seconds): an entry of a server that left
/// longer than [`DEPARTED_FOR`] ago is not applied to a member at its address
/// now (an unrelated pod that reuses it).
pub fn restore_at(snap: &Snapshot, state: &StateFile, unix_now: u64) -> usize {
    let now = crate::clock::now_ms();
    let mut n = 0;
    restore_quotas(snap, &state.quotas);
    for saved in &state.listeners {
        if let Some(l) = snap.listeners.iter().find(|l| *l.name == *saved.name) {
            let ro = saved.mode == "read-only";
            l.shared
                .manual_read_only
                .store(ro, std::sync::atomic::Ordering::Relaxed);
            if ro {
                tracing::warn!(listener = %l.name, "read-only, as an operator left it (state file)");
            }
        }
    }
    // (by address, parsed once: 10,000 members and as many saved entries
    // formatted every member for every entry, 10^8 strings at start-up)
    let members: std::collections::HashMap<
        (&str, std::net::SocketAddr),
        (&crate::pool::Pool, &crate::pool::Server),
    > = snap
        .pools
        .iter()
        .flat_map(|p| {
            p.servers
                .iter()
                .map(move |s| ((&*p.name, s.addr), (&**p, &**s)))
        })
        .collect();
    for saved in &state.servers {
        let Ok(addr) = saved.address.parse::<std::net::SocketAddr>() else {
            continue;
        };
        let Some(&(pool, server)) = members.get(&(saved.pool.as_str(), addr)) else {
            continue;
        };
        if saved.expired(unix_now) {
            continue;
        }
        if let Some(a) = AdminState::parse(&saved.admin) {
            // the saved health follows; a check is not asked for here
            server.state.set_admin(a, false);
        }
        // a hand-edited file must not make the balancer allocate a huge schedule
        server
            .state
            .set_weight_override(saved.weight.filter(|w| *w <= crate::config::MAX_WEIGHT));
        if pool.health.is_some() {
            match saved.health.as_str() {
                "UP" => server.state.set_health(Health::Up, now),
                "DOWN" => server.state.set_health(Health::Down, now),
                _ => {}
            }
        }
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_members_keep_their_saved_state_and_restore_applies_it() {
        let snap = one_member_snapshot();
        let saved = |pool: &str, addr: &str, admin: &str, w: Option<u32>| SavedServer {
            pool: pool.into(),
            address: addr.into(),
            admin: admin.into(),
            weight: w,
            health: "UP".into(),
            departed_at: None,
        };
        let previous = StateFile {
            version: 1,
            servers: vec![
                saved("api", "127.0.0.2:80", "drain", Some(9000)),
                // a DNS member not resolved right now: kept
                saved("api", "10.1.1.1:80", "maint", None),
                // a pool that no longer exists: dropped
                saved("gone", "10.1.1.2:80", "maint", None),
            ],
            listeners: vec![],
            quotas: vec![],
        };
        assert_eq!(restore(&snap, &previous), 1);
        let st = &snap.pools[0].servers[0].state;
        assert_eq!(st.admin(), AdminState::Drain);
        assert_eq!(
            st.weight_override(),
            None,
            "a weight above 256 from the file is ignored"
        );
        let merged = capture_merged(&snap, &previous);
        let addrs: Vec<&str> = merged.servers.iter().map(|s| s.address.as_str()).collect();
        assert_eq!(addrs, ["127.0.0.2:80", "10.1.1.1:80"]);
        assert_eq!(merged.servers[0].admin, "drain");
    }

    fn one_member_snapshot() -> Snapshot {
        let cfg = crate::config::parse(
            r#"
[admin]
bind = "127.0.0.1:18404"
[[listener]]
name = "web"
bind = ["127.0.0.1:18080"]
mode = "http"
pool = "api"
[[pool]]
name = "api"
  [[pool.server]]
  address = "127.0.0.2:80"
"#,
            "t.toml",
        )
        .unwrap();
        Snapshot::build(&cfg, None, &Default::default(), 1)
    }

    fn saved_at(addr: &str, admin: &str, weight: Option<u32>, at: Option<u64>) -> SavedServer {
        SavedServer {
            pool: "api".into(),
            address: addr.into(),
            admin: admin.into(),
            weight,
            health: "UP".into(),
            departed_at: at,
        }
    }

    #[test]
    fn departed_servers_are_kept_only_with_operator_state_and_only_for_departed_for() {
        let snap = one_member_snapshot();
        let t0 = 1_700_000_000u64;
        let window = DEPARTED_FOR.as_secs();
        let previous = StateFile {
            servers: vec![
                saved_at("127.0.0.2:80", "ready", None, None),
                // a member at the last write, gone now: stamped now
                saved_at("10.1.1.1:80", "maint", None, None),
                // gone, and nothing an operator set: dropped at once
                saved_at("10.1.1.2:80", "ready", None, None),
                // carried over before: keeps its first stamp
                saved_at("10.1.1.3:80", "ready", Some(5), Some(t0 - 60)),
                // gone for DEPARTED_FOR: dropped
                saved_at("10.1.1.4:80", "drain", None, Some(t0 - window)),
            ],
            ..StateFile::default()
        };
        let stamps = |st: &StateFile| -> Vec<(String, Option<u64>)> {
            st.servers
                .iter()
                .map(|s| (s.address.clone(), s.departed_at))
                .collect()
        };
        let merged = capture_merged_at(&snap, &previous, t0);
        assert_eq!(
            stamps(&merged),
            [
                ("127.0.0.2:80".to_string(), None),
                ("10.1.1.1:80".to_string(), Some(t0)),
                ("10.1.1.3:80".to_string(), Some(t0 - 60)),
            ]
        );
        assert_eq!(merged.servers[1].admin, "maint");
        // every later write keeps the first stamp, until the window is over
        let later = capture_merged_at(&snap, &merged, t0 + window - 1);
        assert_eq!(
            stamps(&later),
            [
                ("127.0.0.2:80".to_string(), None),
                ("10.1.1.1:80".to_string(), Some(t0)),
            ]
        );
        let over = capture_merged_at(&snap, &later, t0 + window);
        assert_eq!(stamps(&over), [("127.0.0.2:80".to_string(), None)]);
        // a clock set back does not stretch the window
        let back = capture_merged_at(&snap, &merged, t0 - 3600);
        assert_eq!(back.servers[1].departed_at, Some(t0 - 3600));
    }

    #[test]
    fn at_start_an_entry_gone_for_departed_for_is_neither_restored_nor_awaited() {
        let snap = one_member_snapshot();
        let t0 = 1_700_000_000u64;
        let window = DEPARTED_FOR.as_secs();
        let state = StateFile {
            servers: vec![
                // left long ago; the address is an unrelated member now
                saved_at("127.0.0.2:80", "maint", None, Some(t0 - window)),
                saved_at("10.1.1.1:80", "drain", None, Some(t0 - window - 1)),
                saved_at("10.1.1.2:80", "maint", Some(3), Some(t0 - 100)),
                // a member at the last write (or a file without the field)
                saved_at("10.1.1.3:80", "drain", None, None),
            ],
            ..StateFile::default()
        };
        assert_eq!(restore_at(&snap, &state, t0), 0);
        assert_eq!(snap.pools[0].servers[0].state.admin(), AdminState::Ready);
        let absent: Vec<(String, AdminState, Duration)> = absent_operator_states(&snap, &state, t0)
            .into_iter()
            .map(|a| (a.addr.to_string(), a.admin, a.away))
            .collect();
        assert_eq!(
            absent,
            [
                (
                    "10.1.1.2:80".to_string(),
                    AdminState::Maint,
                    Duration::from_secs(100)
                ),
                ("10.1.1.3:80".to_string(), AdminState::Drain, Duration::ZERO),
            ]
        );
        // back within the window: the operator's state is given back
        let recent = StateFile {
            servers: vec![saved_at("127.0.0.2:80", "maint", None, Some(t0 - 100))],
            ..StateFile::default()
        };
        assert_eq!(restore_at(&snap, &recent, t0), 1);
        assert_eq!(snap.pools[0].servers[0].state.admin(), AdminState::Maint);
    }

    #[test]
    fn a_file_written_before_departed_at_still_reads() {
        let old = r#"{"version":1,"servers":[{"pool":"api","address":"10.1.1.1:80",
            "admin":"maint","weight":null,"health":"UP"}]}"#;
        let st: StateFile = serde_json::from_str(old).unwrap();
        assert_eq!(st.servers, [saved_at("10.1.1.1:80", "maint", None, None)]);
        // and a member's entry is written without it
        let json = serde_json::to_string(&st).unwrap();
        assert!(!json.contains("departed_at"), "{json}");
    }

    #[test]
    fn save_and_load_round_trip_atomically() {
        let dir = std::env::temp_dir().join(format!("rampart-statefile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        assert_eq!(load(&path).unwrap().servers, vec![]);
        let st = StateFile {
            version: 1,
            servers: vec![SavedServer {
                pool: "api".into(),
                address: "127.0.0.2:80".into(),
                admin: "drain".into(),
                weight: Some(7),
                health: "UP".into(),
                departed_at: None,
            }],
            listeners: vec![SavedListener {
                name: "web".into(),
                mode: "read-only".into(),
            }],
            quotas: vec![SavedQuota {
                limit: "jobs".into(),
                key: "k1".into(),
                hash: 7,
                window: 20_787,
                len: 86_400,
                used: 100,
            }],
        };
        save(&path, &st, 0).unwrap();
        assert_eq!(load(&path).unwrap(), st);
        assert!(!tmp_path(&path, std::process::id()).exists());
        // readable by its owner alone: quota keys may be API keys
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");

        // writes finishing out of order: an older state never replaces a newer one
        let mut newer = st.clone();
        newer.servers[0].weight = Some(9);
        save(&path, &newer, 1_000_001).unwrap();
        save(&path, &st, 1_000_000).unwrap();
        assert_eq!(load(&path).unwrap(), newer);

        // an unreadable file: refused, and moved aside at start-up
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(load(&path), Err(StateFileError::Parse { .. })));
        assert!(matches!(
            load_at_start(&path),
            Err(StateFileError::Parse { .. })
        ));
        assert!(!path.exists());
        assert_eq!(
            std::fs::read_to_string(dir.join("state.json.corrupt")).unwrap(),
            "garbage"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
