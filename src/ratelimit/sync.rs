//! Limits shared by several nodes through Redis (or Valkey): `[rate_limit_store]`.
//!
//! Local first. Every node decides each request on its own state, as a
//! local-only limit would: a request never waits on Redis. What a node admits
//! is also noted as pending, per key; every `sync_interval` a background task
//! sends all pending counts in one batch to Redis, where one Lua script adds
//! them atomically to the global state and returns it, and the node takes the
//! global state (everyone's requests) as its own view of each key.
//!
//! - A rate (GCRA) key's global state is its TAT, kept in Redis's clock; the
//!   script answers how far ahead of Redis's now it is, so the nodes' clocks
//!   never need to agree.
//! - A quota key's global state is the count of its window (`INCRBY`, expiring
//!   with the window).
//! - Keys a node saw lately but admitted nothing for are read too (a refresh),
//!   so an idle node learns what the others used before its next request.
//!
//! How far over the limit a cluster can go: between two syncs a node does not
//! see the others' requests, so each node can admit, per key, what its own
//! view allows during one `sync_interval` (plus the batch's round trip): at
//! most the requests it receives for the key in that time. With N nodes the
//! excess over the global limit is bounded by what the other N - 1 nodes admit
//! in one interval; a rate's excess is then paid back (the global TAT is ahead,
//! so the key waits longer), a quota's is not.
//!
//! When Redis cannot be reached (connect, timeout or script error) the node
//! falls back to local-only limits, each enforcing `fallback_share` of every
//! rate and of every quota's remainder, logs it and counts it, keeps its
//! pending counts, and tries again every interval; once a sync succeeds the
//! counts kept meanwhile are sent and limits are shared again. A batch that
//! was sent and not answered (a timeout) may have been run, or may still be
//! run from Redis's socket buffer: it is sent again as it was, numbered the same,
//! before anything else, and the script adds a batch only the first time it
//! sees its number, so every admitted request is counted once.

use super::link::{Link, Pend};
use super::{Limiter, SHARDS};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Keys of one limit sent in one sync, at most.
const MAX_BATCH: usize = 4096;
/// A key nothing was admitted for is still refreshed while it was seen within
/// this many intervals, or 10 s if that is longer.
const HOT_INTERVALS: u64 = 50;
const HOT_MIN: Duration = Duration::from_secs(10);

/// One key in a batch.
#[derive(Debug, Clone)]
struct Item {
    limit: usize,
    key: u64,
    p: Pend,
    /// Over how long (µs) the `rate_n` requests came.
    span: u64,
    /// A quota key's text (its name in the store, so an operator's reset can
    /// name it) and the count the store should have at least: a count it never
    /// confirmed (restored from the state file or a handover).
    quota_key: String,
    floor: u64,
}

/// Takes what is to be sent: pending counts first (reset to zero here), then
/// keys seen lately, at most `MAX_BATCH`, starting from a rotating shard so
/// that no shard's keys wait behind another's; forgets keys idle for long.
fn take_batch(
    limiter: &Limiter,
    limit: usize,
    now: u64,
    hot_us: u64,
    start: usize,
    out: &mut Vec<Item>,
) {
    let mut room = MAX_BATCH;
    let before = out.len();
    for pass in [true, false] {
        for i in 0..SHARDS {
            let shard = (start + i) % SHARDS;
            let mut m = limiter.store.pending[shard]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            m.retain(|&key, p| {
                let pending = p.rate_n > 0 || p.quota_n > 0;
                let hot = now.saturating_sub(p.touched) < hot_us;
                // pass one takes the pending keys, pass two refreshes the hot
                // ones not taken already
                let taken = !pass && p.taken == now;
                if room > 0 && pending == pass && (pending || hot) && !taken {
                    p.taken = now;
                    room -= 1;
                    let span = if p.rate_n > 0 {
                        now.saturating_sub(p.first)
                    } else {
                        0
                    };
                    out.push(Item {
                        limit,
                        key,
                        p: *p,
                        span,
                        quota_key: String::new(),
                        floor: 0,
                    });
                    p.rate_n = 0;
                    p.quota_n = 0;
                }
                pending || hot
            });
        }
    }
    // the quota keys' names and floors, from the quota table
    for it in out[before..].iter_mut().filter(|it| it.p.q_len > 0) {
        let m = limiter.store.quotas[(it.key % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(e) = m.get(&it.key).filter(|e| e.window == it.p.q_window) {
            it.quota_key.clone_from(&e.key);
            if e.synced.is_none() {
                it.floor = e.seed;
            }
        } else {
            // reset by an operator, or evicted: nothing to say about it
            it.p.q_len = 0;
        }
    }
}

/// A failed sync: the counts taken go back to pending (sent with the next).
fn give_back(limiters: &[Arc<Limiter>], batch: &[Item]) {
    for it in batch {
        let Some(l) = limiters.get(it.limit) else {
            continue;
        };
        let mut m = l.store.pending[(it.key % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let p = m.entry(it.key).or_default();
        if it.p.rate_n > 0 {
            if p.rate_n == 0 || it.p.first < p.first {
                p.first = it.p.first;
            }
            p.rate_n = p.rate_n.saturating_add(it.p.rate_n);
            if p.t_ns == 0 {
                p.t_ns = it.p.t_ns;
            }
        }
        // (counts of a window that has ended since no longer matter)
        if it.p.quota_n > 0 && (p.q_len == 0 || p.q_window == it.p.q_window) {
            (p.q_len, p.q_window) = (it.p.q_len, it.p.q_window);
            p.quota_n = p.quota_n.saturating_add(it.p.quota_n);
        }
    }
}

/// The script: for each rate key, adds n * T to its TAT and answers the TAT's
/// lead over Redis's now in µs; for each quota key, raises the window's count
/// to the floor given (a count the store never saw), adds n and answers the
/// count. Keys are in ARGV (one script, any number of keys), so a Redis
/// Cluster is not supported; `replicate_commands` lets Redis 5 write after
/// `TIME` (a no-op from Redis 7). One round trip, atomic. The n requests of a
/// rate key came over `span` µs, not at once: they are counted from
/// `max(TAT, now - span)`, as GCRA would have counted them one by one had
/// they come evenly (from `now` they would look like a burst and a key well
/// under its rate would be refused after each sync).
///
/// ARGV[1] is the node's mark (`{prefix}batch:{node}`: the sequence number of
/// its last batch that counted, kept a day) and ARGV[2] this batch's number
/// (0: it counts nothing, and needs no mark). A node's batches go out in
/// order, one at a time, so a batch numbered at or below the mark has been
/// counted: it adds nothing and only answers. A node that saw no answer (a
/// timeout: Redis may have run the batch, or may still run it from its
/// socket buffer) sends the same batch, numbered the same, until it gets one,
/// so it is counted once however long that takes. A value under the prefix
/// that is not a number (another type, text) is reset to 0 before anything
/// is written, so that no write of the script fails halfway (Redis does not
/// roll a script back).
const SCRIPT: &str = r#"
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
-- a number under our prefix; a key there that holds anything else (another
-- type, text) is ours to reset, so that no write below can fail
local function num(k)
  local v = redis.pcall('GET', k)
  if type(v) == 'table' then
    redis.call('DEL', k)
    return 0
  end
  local n = tonumber(v or '0')
  if n == nil then
    redis.call('DEL', k)
    return 0
  end
  return n
end
local fresh = true
local seq = tonumber(ARGV[2])
if seq > 0 then
  local last = num(ARGV[1])
  if seq <= last then
    fresh = false
  else
    redis.call('SET', ARGV[1], ARGV[2], 'EX', 86400)
  end
end
local i = 3
local nr = tonumber(ARGV[i]); i = i + 1
for _ = 1, nr do
  local k, n, T, span = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]); i = i + 4
  if not fresh then n = 0 end
  local tat = num(k)
  if n > 0 then
    if tat < now - span then tat = now - span end
    tat = tat + n * T
    if tat > now then
      redis.call('SET', k, string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
    end
  end
  if tat < now then tat = now end
  out[#out + 1] = tat - now
end
local nq = tonumber(ARGV[i]); i = i + 1
for _ = 1, nq do
  local k, n, ttl, floor = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]); i = i + 4
  if not fresh then n = 0 end
  local used = num(k)
  if used < floor then
    used = floor
    redis.call('SET', k, floor, 'EX', ttl)
  end
  if n > 0 then
    used = redis.call('INCRBY', k, n)
    redis.call('EXPIRE', k, ttl)
  end
  out[#out + 1] = used
end
return out
"#;

/// What a sync round works on, read afresh each round from the current
/// generation: the store's link (None: no `[rate_limit_store]`) and the limits.
pub struct Current {
    pub link: Option<Arc<Link>>,
    pub limits: Vec<Arc<super::Limiter>>,
}

/// The background task: one sync every `sync_interval`, while the config has
/// a store; stops with `stop`.
pub async fn run(current: impl Fn() -> Current + Send, stop: tokio_util::sync::CancellationToken) {
    let script = redis::Script::new(SCRIPT);
    let mut conn: Option<(String, redis::aio::MultiplexedConnection)> = None;
    let mut batch: Vec<Item> = Vec::new();
    let mut start = 0usize;
    // this process's batches are numbered `seq` under its mark `{node}`
    let node = fastrand::u64(..);
    let mut seq = 0u64;
    // a batch sent without an answer: sent again, numbered the same, before
    // anything else (its counts are not pending any more: they are in it),
    // with the limits it was taken from (its items name them by index)
    let mut unanswered: Option<(u64, Vec<Item>, Vec<Arc<Limiter>>)> = None;
    loop {
        let snap = current();
        let interval = snap
            .link
            .as_ref()
            .map_or(Duration::from_secs(1), |l| l.cfg.sync_interval);
        // on the way out, one last sync sends what was admitted since the last
        let last = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(interval) => false,
        };
        let Some(link) = snap.link.clone() else {
            if last {
                return;
            }
            conn = None;
            // (a store taken out of the config: its counts stay unsent)
            unanswered = None;
            continue;
        };
        let timeout = (interval * 5).clamp(Duration::from_millis(200), Duration::from_secs(2));
        let mark = format!("{}batch:{node:016x}", link.cfg.key_prefix);
        if let Some((id, old, limits)) = unanswered.take() {
            match sync_once(
                &link,
                &mut conn,
                &script,
                &limits,
                &old,
                (&mark, id),
                timeout,
            )
            .await
            {
                Ok(answers) => {
                    apply(&limits, &old, &answers);
                    link.came_up(old.len());
                }
                Err(e) => {
                    conn = None;
                    link.went_down(e.to_string());
                    unanswered = Some((id, old, limits));
                    if last {
                        return;
                    }
                    continue;
                }
            }
        }
        batch.clear();
        let now = crate::clock::now_us();
        let hot = (interval.as_micros() as u64 * HOT_INTERVALS).max(HOT_MIN.as_micros() as u64);
        start = start.wrapping_add(1);
        for (i, l) in snap.limits.iter().enumerate() {
            take_batch(l, i, now, hot, start % SHARDS, &mut batch);
        }
        // idle and up: nothing to say (down: try anyway, to learn it is back)
        if batch.is_empty() && (last || (link.is_up() && conn.is_some())) {
            if last {
                return;
            }
            continue;
        }
        // (a batch that counts nothing is not numbered: run twice, it does
        // no harm)
        let id = if batch.iter().any(|it| it.p.rate_n > 0 || it.p.quota_n > 0) {
            seq += 1;
            seq
        } else {
            0
        };
        match sync_once(
            &link,
            &mut conn,
            &script,
            &snap.limits,
            &batch,
            (&mark, id),
            timeout,
        )
        .await
        {
            Ok(answers) => {
                apply(&snap.limits, &batch, &answers);
                link.came_up(batch.len());
            }
            Err(e) => {
                conn = None;
                link.went_down(e.to_string());
                match e {
                    // never sent: its counts go back to pending
                    SyncError::Unsent(_) => give_back(&snap.limits, &batch),
                    // perhaps run: sent again as it is, numbered the same
                    SyncError::Unanswered(_) if id > 0 => {
                        unanswered = Some((id, std::mem::take(&mut batch), snap.limits.clone()));
                    }
                    // (counting nothing, it is just taken again)
                    SyncError::Unanswered(_) => {}
                }
            }
        }
        if last {
            return;
        }
    }
}

/// Why a sync failed: whether Redis may have run the batch.
#[derive(Debug, thiserror::Error)]
enum SyncError {
    /// Not run: nothing was sent (no connection), or Redis refused it before
    /// running it (busy, loading, out of memory, a read-only replica).
    #[error("{0}")]
    Unsent(String),
    /// Sent, and no answer came (a timeout, the connection lost), or an
    /// error from inside the script: Redis may have run it, or part of it.
    #[error("{0}")]
    Unanswered(String),
}

/// One batch to Redis (connecting first if need be), numbered `id` under the
/// node's `mark`: the script's answers.
async fn sync_once(
    link: &Link,
    conn: &mut Option<(String, redis::aio::MultiplexedConnection)>,
    script: &redis::Script,
    limiters: &[Arc<Limiter>],
    batch: &[Item],
    (mark, id): (&str, u64),
    timeout: Duration,
) -> Result<Vec<i64>, SyncError> {
    if conn.as_ref().is_none_or(|(url, _)| *url != link.cfg.url) {
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let c = link
            .cfg
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(|e| SyncError::Unsent(format!("connect: {e}")))?;
        *conn = Some((link.cfg.url.clone(), c));
    }
    let Some((_, c)) = conn.as_mut() else {
        return Err(SyncError::Unsent("no connection".into()));
    };
    let prefix = &link.cfg.key_prefix;
    let unix = crate::clock::unix_now();
    let mut inv = script.prepare_invoke();
    inv.arg(mark).arg(id);
    let rates: Vec<&Item> = batch.iter().filter(|it| it.p.t_ns > 0).collect();
    let quotas: Vec<&Item> = batch.iter().filter(|it| it.p.q_len > 0).collect();
    inv.arg(rates.len());
    for it in &rates {
        let name = limiters.get(it.limit).map_or("", |l| l.cfg.name.as_str());
        inv.arg(format!("{prefix}{name}:r:{:016x}", it.key))
            .arg(it.p.rate_n)
            // (T in µs, with its fraction: the store's TATs are in µs)
            .arg(it.p.t_ns as f64 / 1000.0)
            .arg(it.span);
    }
    inv.arg(quotas.len());
    for it in &quotas {
        let name = limiters.get(it.limit).map_or("", |l| l.cfg.name.as_str());
        let end = (it.p.q_window + 1) * it.p.q_len;
        let ttl = end - unix.min(end) + 60;
        inv.arg(quota_key(prefix, name, &it.quota_key, it.p.q_window))
            .arg(it.p.quota_n)
            .arg(ttl)
            .arg(it.floor);
    }
    let answers: Vec<i64> = inv.invoke_async(c).await.map_err(|e| {
        let text = format!("script: {e}");
        // refused before it ran; anything else may have run, in part (Redis
        // does not roll a script back): sent again, numbered the same, it
        // counts nothing twice
        match e.code() {
            Some("BUSY" | "LOADING" | "OOM" | "READONLY" | "MASTERDOWN" | "NOSCRIPT") => {
                SyncError::Unsent(text)
            }
            _ => SyncError::Unanswered(text),
        }
    })?;
    if answers.len() != rates.len() + quotas.len() {
        // (it ran, and marked the batch: sent again, it answers only)
        return Err(SyncError::Unanswered(format!(
            "script answered {} values for {} keys",
            answers.len(),
            rates.len() + quotas.len()
        )));
    }
    Ok(answers)
}

/// The store's key of a quota count: by the key's text (as operators name
/// it), so a reset on any node can delete it.
fn quota_key(prefix: &str, limit: &str, key: &str, window: u64) -> String {
    format!("{prefix}{limit}:q:{key}:{window}")
}

/// An operator's quota reset, on the store too: deletes the key's global
/// count in the current window of each window length the limit uses
/// (`lens`, seconds), whether or not this node has seen the key. Other nodes
/// learn it at their next sync of the key; counts a node sends in the same
/// instant may land after the delete.
pub async fn reset_shared(link: &Link, limit: &str, key: &str, lens: &[u64]) -> Result<(), String> {
    if lens.is_empty() {
        return Ok(());
    }
    // (stored under the text its entries keep)
    let key = super::bounded_key(key.to_owned());
    let key = key.as_str();
    let unix = crate::clock::unix_now();
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(1)));
    let mut c = link
        .cfg
        .client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let keys: Vec<String> = lens
        .iter()
        .map(|&len| quota_key(&link.cfg.key_prefix, limit, key, unix / len.max(1)))
        .collect();
    redis::cmd("DEL")
        .arg(&keys)
        .query_async::<i64>(&mut c)
        .await
        .map(|_| ())
        .map_err(|e| format!("DEL: {e}"))
}

/// What is pending for `key` now: admitted since its batch was taken.
fn pending_now(l: &Limiter, key: u64) -> Pend {
    l.store.pending[(key % SHARDS as u64) as usize]
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .copied()
        .unwrap_or_default()
}

/// Takes the global state as this node's view of each key sent, plus what
/// it admitted since the batch was taken.
fn apply(limiters: &[Arc<Limiter>], batch: &[Item], answers: &[i64]) {
    let now = crate::clock::now_us();
    let unix = crate::clock::unix_now();
    let rates = batch.iter().filter(|it| it.p.t_ns > 0);
    let quotas = batch.iter().filter(|it| it.p.q_len > 0);
    let (ra, qa) = answers.split_at(answers.len().min(rates.clone().count()));
    for (it, &lead) in rates.zip(ra) {
        let Some(l) = limiters.get(it.limit) else {
            continue;
        };
        let shard = (it.key % SHARDS as u64) as usize;
        let since = pending_now(l, it.key).rate_n;
        // (in ns, as the local TATs)
        let global = (now + lead.max(0) as u64)
            .saturating_mul(1000)
            .saturating_add(u64::from(since).saturating_mul(it.p.t_ns));
        if let Some(one) = l.one {
            // (0, none yet, takes the global view as any TAT below it does;
            // a key of the limit's form before a reload, still pending, is
            // another count, not this one)
            if it.key == one {
                l.store.one.fetch_max(global, Ordering::Relaxed);
            }
            continue;
        }
        let mut m = l.store.shards[shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // its own requests are exact here: the global view only adds the others'
        let room = m.len() < (l.cfg.max_keys / SHARDS).max(1);
        match m.get_mut(&it.key) {
            Some(local) => *local = (*local).max(global),
            // evicted meanwhile: back only if there is room (max_keys holds)
            None if room => {
                m.insert(it.key, global);
            }
            None => {}
        }
    }
    for (it, &used) in quotas.zip(qa) {
        let Some(l) = limiters.get(it.limit) else {
            continue;
        };
        if unix / it.p.q_len.max(1) != it.p.q_window {
            continue; // the window turned meanwhile
        }
        let shard = (it.key % SHARDS as u64) as usize;
        let mut m = l.store.quotas[shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // read under the quota table's lock, as requests note under it: each
        // admitted request is in the store's count or in `since`
        let since = pending_now(l, it.key).quota_n;
        if let Some(e) = m.get_mut(&it.key) {
            if e.window == it.p.q_window {
                let used = used.max(0) as u64;
                e.synced = Some(used);
                e.used = used + u64::from(since);
                l.store.quotas_changed.store(true, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KeyPart, RateLimitConfig, StoreConfig};
    use std::sync::atomic::AtomicU64;

    /// A store no sync reaches (the tests call `take_batch` and `apply`
    /// themselves).
    fn unreachable_store() -> StoreConfig {
        StoreConfig {
            url: "redis://127.0.0.1:1".into(),
            client: redis::Client::open("redis://127.0.0.1:1").unwrap(),
            sync_interval: Duration::from_millis(20),
            fallback_share: 0.5,
            key_prefix: "t".into(),
        }
    }

    /// The global view of a limit keyed by nothing (`key = "all"`) lands in
    /// its one word (no shard holds it): once the store says the other nodes
    /// are 10 s ahead at 10/s with a burst of 20, this node refuses. A key
    /// still pending from the limit's form before a reload (one client, a
    /// minute ahead) does not move it.
    #[test]
    fn the_global_view_of_a_limit_keyed_by_nothing_is_applied() {
        let store = unreachable_store();
        let rate = (10, Duration::from_secs(1));
        let l = Arc::new(Limiter::new(
            RateLimitConfig {
                name: "all".into(),
                key: vec![KeyPart::All],
                rate: Some(rate),
                burst: 20,
                quota: None,
                max_keys: 1000,
                ipv6_prefix: 64,
                tiers: vec![],
            },
            Arc::default(),
            Some(Arc::new(Link::new(store))),
        ));
        let now = crate::clock::now_us();
        let all = l.one.unwrap();
        l.check(all, rate, 20, now).unwrap();
        l.check(all, rate, 20, now).unwrap();
        let client = all ^ 1;
        l.note_rate(client, now, 100_000_000);
        let mut batch = Vec::new();
        take_batch(&l, 0, now, 1_000_000_000, 0, &mut batch);
        assert_eq!(batch.len(), 2);
        let answers: Vec<i64> = batch
            .iter()
            .map(|it| {
                if it.key == all {
                    10_000_000
                } else {
                    60_000_000
                }
            })
            .collect();
        assert_eq!(batch.iter().find(|it| it.key == all).unwrap().p.rate_n, 2);
        apply(&[Arc::clone(&l)], &batch, &answers);
        let e = l.check(all, rate, 20, now).unwrap_err();
        // about 10 s ahead, less the 2 s burst (not the client's minute)
        assert!(e.retry_after > Duration::from_secs(7), "{e:?}");
        assert!(e.retry_after < Duration::from_secs(12), "{e:?}");
        assert_eq!(l.rate_keys(), 1);
        assert!(l.store.shards.iter().all(|s| s.lock().unwrap().is_empty()));
    }

    /// Requests counted on one thread while another syncs in a loop (the
    /// store's answer is what it was sent, as Redis would count for a node
    /// alone): after each sync, the node's count holds at least every request
    /// that had returned. A request counted between the sync reading what was
    /// pending and it setting the count was lost from it until the next sync.
    #[test]
    fn a_request_counted_while_a_sync_applies_is_not_lost() {
        let store = unreachable_store();
        let l = Arc::new(Limiter::new(
            RateLimitConfig {
                name: "jobs".into(),
                key: vec![KeyPart::ClientIp],
                rate: None,
                burst: 0,
                quota: Some((u64::MAX / 2, Duration::from_secs(86_400))),
                max_keys: 1000,
                ipv6_prefix: 64,
                tiers: vec![],
            },
            Arc::default(),
            Some(Arc::new(Link::new(store))),
        ));
        const N: u64 = 200_000;
        const KEY: u64 = 7;
        let done = Arc::new(AtomicU64::new(0));
        // one instant for the whole test: a run across a quota window's end
        // (UTC midnight) would otherwise read the new window's count
        let unix = crate::clock::unix_now();
        let counting = {
            let (l, done) = (Arc::clone(&l), Arc::clone(&done));
            std::thread::spawn(move || {
                let q = l.cfg.quota.unwrap();
                for _ in 0..N {
                    l.quota_check(KEY, q, || "k".into(), unix, false).unwrap();
                    l.quota_check(KEY, q, String::new, unix, true).unwrap();
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let limiters = vec![Arc::clone(&l)];
        let mut global: i64 = 0;
        let mut syncs = 0u64;
        let mut batch = Vec::new();
        loop {
            let finished = counting.is_finished();
            batch.clear();
            take_batch(&l, 0, crate::clock::now_us(), 1_000_000_000, 0, &mut batch);
            let answers: Vec<i64> = batch
                .iter()
                .filter(|it| it.p.q_len > 0)
                .map(|it| {
                    global += i64::from(it.p.quota_n);
                    global
                })
                .collect();
            apply(&limiters, &batch, &answers);
            syncs += 1;
            let returned = done.load(Ordering::SeqCst);
            let used = l.quotas(None, unix).first().map_or(0, |e| e.used);
            assert!(
                used >= returned,
                "sync {syncs}: the count is {used} after {returned} requests returned"
            );
            if finished {
                break;
            }
        }
        counting.join().unwrap();
        assert_eq!(global, N as i64, "every request reached the store");
        assert!(syncs > 10, "{syncs} syncs ran beside the requests");
    }
}
