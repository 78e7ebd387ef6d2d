//! Connection limits and what an open connection holds: the global and
//! per-listener `Limit`s, a listener's state kept across generations
//! (`ListenerShared`: its counters, its limit, its read-only switch) and the
//! `Permits` a connection holds until it closes. The accept loop takes them; the
//! data plane reads them; the snapshot carries `ListenerShared` over by name.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// A connection limit whose maximum a reload can change. Raising it lets waiting
/// accept loops go on at once; lowering it cuts no established connection (new
/// ones wait until enough have closed).
#[derive(Debug)]
pub struct Limit {
    max: AtomicUsize,
    active: AtomicUsize,
    /// Accept loops waiting for a slot (so a release only wakes when needed).
    waiting: AtomicUsize,
    freed: Notify,
}

impl Limit {
    /// `max` 0 means no limit.
    pub fn new(max: usize) -> Limit {
        let l = Limit {
            max: AtomicUsize::new(usize::MAX),
            active: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
        };
        l.set_max(max);
        l
    }

    /// `max` 0 means no limit.
    pub fn set_max(&self, max: usize) {
        let max = if max == 0 { usize::MAX } else { max };
        if self.max.swap(max, Ordering::SeqCst) != max {
            self.freed.notify_waiters();
        }
    }

    fn try_take(&self) -> bool {
        let max = self.max.load(Ordering::SeqCst);
        self.active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |a| {
                (a < max).then_some(a + 1)
            })
            .is_ok()
    }

    /// A slot if one is free now.
    pub fn try_slot(self: &Arc<Self>) -> Option<LimitSlot> {
        self.try_take().then(|| LimitSlot(Arc::clone(self)))
    }

    /// Waits for a slot. Cancel-safe: a wait dropped before it got one leaves
    /// nothing counted.
    pub async fn take(self: &Arc<Self>) -> LimitSlot {
        if !self.try_take() {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let _waiting = Waiting(self);
            loop {
                let freed = self.freed.notified();
                tokio::pin!(freed);
                freed.as_mut().enable();
                if self.try_take() {
                    break;
                }
                freed.await;
            }
        }
        LimitSlot(Arc::clone(self))
    }
}

/// One waiter counted in `Limit::waiting` until dropped.
struct Waiting<'a>(&'a Limit);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One slot under a `Limit`, released when dropped.
#[derive(Debug)]
pub struct LimitSlot(Arc<Limit>);

impl Drop for LimitSlot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        // SeqCst with take(): a waiter counted after this load re-checks
        // try_take after enabling its notification, so no wakeup is lost.
        if self.0.waiting.load(Ordering::SeqCst) > 0 {
            self.0.freed.notify_waiters();
        }
    }
}

/// What a listener keeps across generations (by name): its connection counters
/// and its own connection limit.
#[derive(Debug)]
pub struct ListenerShared {
    pub name: Arc<str>,
    /// Its place among the listeners of the snapshot last published
    /// (`Snapshot::place_listeners`): where `Snapshot::listener_of` looks
    /// first (a hint it checks), so that a request does not walk the
    /// listeners before it in the config.
    pub slot: std::sync::atomic::AtomicUsize,
    pub active: AtomicU64,
    pub total: AtomicU64,
    pub limit: Arc<Limit>,
    /// An operator switched it to read-only (`rampart mode`; kept in the state file).
    pub manual_read_only: std::sync::atomic::AtomicBool,
    /// It refused the last write it saw (logged when this flips).
    pub read_only_now: std::sync::atomic::AtomicBool,
    /// Writes refused in read-only mode.
    pub read_only_refused: AtomicU64,
    /// Times the listener switched into or out of read-only mode.
    pub read_only_switches: AtomicU64,
    /// Connections refused for their PROXY header, by
    /// [`PpError::reason`](crate::proxy_protocol::PpError::reason).
    pub proxy_refused: [AtomicU64; crate::proxy_protocol::PpError::REASONS.len()],
    /// Responses its clients got (HTTP), by status class: the servers' and
    /// the proxy's own.
    pub responses: crate::accesslog::StatusCounts,
    /// Requests answered by a `deny` rule.
    pub denied: AtomicU64,
    /// Requests answered by a `redirect` rule.
    pub redirected: AtomicU64,
    /// Requests a rule answered itself (`respond`).
    pub responded: AtomicU64,
    /// Requests refused by a rate limit or quota (429).
    pub rate_limited: AtomicU64,
    /// Requests refused for what the client sent, by
    /// [`RequestFault::index`](crate::accesslog::RequestFault::index).
    pub request_errors: [AtomicU64; crate::accesslog::RequestFault::REASONS.len()],
    /// The longest request body any request may send (0: no limit): the
    /// listener's `max_request_body`, or more where its rules allow more
    /// (`RuleSet::max_body_bound`). Set by each generation.
    pub max_request_body: AtomicU64,
    /// `error_pages` in force: set by each generation.
    pub error_pages: arc_swap::ArcSwap<crate::config::ErrorPages>,
    /// `client_ip_header` in force: set by each generation.
    pub client_ip_header: Switch<http::HeaderName>,
    /// `client_ip_from` in force: set by each generation.
    pub client_ip_from: Switch<crate::forwarded::ClientIpFrom>,
    /// `compression` in force: set by each generation.
    pub compression: Switch<crate::config::Compression>,
}

impl ListenerShared {
    pub fn new(name: &str) -> ListenerShared {
        ListenerShared {
            name: Arc::from(name),
            slot: Default::default(),
            active: AtomicU64::new(0),
            total: AtomicU64::new(0),
            limit: Arc::new(Limit::new(0)),
            manual_read_only: Default::default(),
            read_only_now: Default::default(),
            read_only_refused: AtomicU64::new(0),
            read_only_switches: AtomicU64::new(0),
            proxy_refused: Default::default(),
            request_errors: Default::default(),
            responses: Default::default(),
            denied: AtomicU64::new(0),
            redirected: AtomicU64::new(0),
            responded: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            max_request_body: AtomicU64::new(0),
            error_pages: Default::default(),
            client_ip_header: Default::default(),
            client_ip_from: Default::default(),
            compression: Default::default(),
        }
    }

    /// The client of a request from the connection's `peer` with the fields
    /// `fields` gives (name, value): the one `client_ip_from` believes, else
    /// `peer`.
    #[inline]
    pub fn request_client<'a, I: Iterator<Item = (&'a [u8], &'a [u8])>>(
        &self,
        peer: std::net::IpAddr,
        fields: impl FnOnce() -> I,
    ) -> std::net::IpAddr {
        match self.client_ip_from.load().get() {
            Some(c) => c.client(peer, fields()),
            None => peer,
        }
    }
}

/// A listener setting that each generation sets and most listeners leave
/// unset. A relaxed flag answers "is it set?" for the requests of listeners
/// without it, for less than the swap's load; the value sits behind an
/// `ArcSwapOption`, read without touching a shared count.
#[derive(Debug)]
pub struct Switch<T> {
    on: std::sync::atomic::AtomicBool,
    value: arc_swap::ArcSwapOption<T>,
}

impl<T> Default for Switch<T> {
    fn default() -> Self {
        Switch {
            on: Default::default(),
            value: Default::default(),
        }
    }
}

impl<T> Switch<T> {
    /// Whether it is set (a relaxed load: the fast path's test).
    #[inline]
    pub fn is_set(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// The value in force, held for as long as the guard lives.
    #[inline]
    pub fn load(&self) -> Held<T> {
        Held(self.is_set().then(|| self.value.load()))
    }

    /// The value in force, to keep past the current request.
    pub fn load_full(&self) -> Option<Arc<T>> {
        if self.is_set() {
            self.value.load_full()
        } else {
            None
        }
    }

    /// Sets it (a new generation's value).
    pub fn set(&self, value: Option<Arc<T>>) {
        self.on.store(value.is_some(), Ordering::Relaxed);
        self.value.store(value);
    }
}

/// A [`Switch`]'s value, held.
pub struct Held<T>(Option<arc_swap::Guard<Option<Arc<T>>>>);

impl<T> Held<T> {
    #[inline]
    pub fn get(&self) -> Option<&T> {
        self.0.as_ref().and_then(|g| g.as_deref())
    }
}

/// One client connection's slots under the limits and its place in its
/// listener's count, released when dropped.
#[derive(Debug)]
pub struct Permits {
    _global: LimitSlot,
    _local: LimitSlot,
    listener: Arc<ListenerShared>,
}

impl Permits {
    /// A new connection's permits: counted as active and in the total.
    pub fn new(global: LimitSlot, local: LimitSlot, listener: Arc<ListenerShared>) -> Permits {
        listener.active.fetch_add(1, Ordering::Relaxed);
        listener.total.fetch_add(1, Ordering::Relaxed);
        Permits {
            _global: global,
            _local: local,
            listener,
        }
    }

    pub fn listener(&self) -> &Arc<ListenerShared> {
        &self.listener
    }
}

impl Drop for Permits {
    fn drop(&mut self) {
        self.listener.active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wait given up before it got a slot (the accept loop's, at `kill`)
    /// leaves no waiter counted: else every release would wake for nobody.
    #[tokio::test]
    async fn a_dropped_wait_leaves_no_waiter() {
        let l = Arc::new(Limit::new(1));
        let held = l.try_slot().expect("one slot");
        assert!(l.try_slot().is_none());
        let mut wait = Box::pin(l.take());
        assert!(futures_poll_once(wait.as_mut()).await.is_none());
        assert_eq!(l.waiting.load(Ordering::SeqCst), 1);
        drop(wait);
        assert_eq!(l.waiting.load(Ordering::SeqCst), 0);
        drop(held);
        let slot = l.take().await;
        assert_eq!(l.active.load(Ordering::SeqCst), 1);
        drop(slot);
        assert_eq!(l.active.load(Ordering::SeqCst), 0);
    }

    /// A generation that drops a setting leaves it unset, not its old value.
    #[test]
    fn a_switch_follows_each_set() {
        let s: Switch<u32> = Switch::default();
        assert!(!s.is_set() && s.load().get().is_none() && s.load_full().is_none());
        s.set(Some(Arc::new(7)));
        assert!(s.is_set());
        assert_eq!(
            (s.load().get(), s.load_full().as_deref()),
            (Some(&7), Some(&7))
        );
        s.set(None);
        assert!(!s.is_set() && s.load().get().is_none() && s.load_full().is_none());
    }

    async fn futures_poll_once<F: std::future::Future + Unpin>(mut f: F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
