//! Idle backend connections, kept per worker thread: checkout and checkin touch a
//! thread-local `RefCell`, never a lock (each worker runs a current-thread
//! runtime, so a connection's tasks never leave the thread that made it). And the
//! private connections of a client, for pools that send the PROXY protocol.

use crate::pool::ServerState;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

use super::body::ReqBody;
use hyper::client::conn::http1;
use std::net::SocketAddr;

/// An HTTP/1.1 connection's sending half.
pub type Sender = http1::SendRequest<ReqBody>;

/// Who a request is for, for pools that send the PROXY protocol: the client it
/// names, and where that client's private connections are kept.
pub struct Via<'a> {
    pub private: &'a Private,
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub tls: Option<&'a crate::tls::TlsInfo>,
}

struct Idle<C> {
    conn: C,
    /// `clock::now_ms()` when this connection has been idle for its keep-alive timeout.
    expires: u64,
}

/// One server's idle connections on this thread: hyper's (requests with bodies,
/// upgrades, HTTP/2 clients) and plain sockets (the HTTP/1.1 fast path, proxy/fast_path.rs).
struct IdleList {
    state: Arc<ServerState>,
    /// The `Pool::conn_epoch` they were all made under.
    epoch: u64,
    conns: VecDeque<Idle<Sender>>,
    raw: VecDeque<Idle<TcpStream>>,
}

impl IdleList {
    /// This list, for connections made under `epoch`: emptied first if its
    /// own were made under an older one (a reload changed how connections
    /// to the server are made); None if under a newer one (the caller holds
    /// the pool of a snapshot before that reload).
    fn of_epoch(&mut self, epoch: u64) -> Option<&mut IdleList> {
        if self.epoch != epoch {
            if self.epoch > epoch {
                return None;
            }
            self.conns.clear();
            self.raw.clear();
            self.epoch = epoch;
        }
        Some(self)
    }
}

thread_local! {
    static IDLE: RefCell<HashMap<u64, IdleList>> = RefCell::new(HashMap::new());
}

/// An idle connection to `server` made under `epoch` (the `Pool::conn_epoch`
/// of the caller's pool), if this thread has one that looks alive.
pub(super) fn take_idle(server: &ServerState, epoch: u64) -> Option<Sender> {
    IDLE.with_borrow_mut(|m| {
        let list = &mut m.get_mut(&server.uid)?.of_epoch(epoch)?.conns;
        let now = crate::clock::now_ms();
        while let Some(c) = list.pop_back() {
            if !c.conn.is_closed() && c.expires > now {
                return Some(c.conn);
            }
        }
        None
    })
}

/// An idle plain connection to `server` made under `epoch` (the
/// `Pool::conn_epoch` of the caller's pool), if this thread has one that
/// looks alive.
pub fn take_idle_raw(server: &ServerState, epoch: u64) -> Option<TcpStream> {
    IDLE.with_borrow_mut(|m| {
        let list = &mut m.get_mut(&server.uid)?.of_epoch(epoch)?.raw;
        let now = crate::clock::now_ms();
        while let Some(c) = list.pop_back() {
            if c.expires > now && raw_is_open(&c.conn) {
                return Some(c.conn);
            }
        }
        None
    })
}

/// Whether an idle socket is still open, without a system call in the usual case:
/// the reactor has flagged it readable only if the server closed it (or sent
/// something it should not have); then one read tells which. A close that the
/// reactor has not seen yet is the keep-alive race, handled by the caller's replay.
fn raw_is_open(s: &TcpStream) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match s.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            matches!(s.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}

/// The idle connections kept per server and thread when `max_idle_per_server` is
/// unset: the server's peak of concurrent requests, within these bounds. A fixed
/// cap below the peak makes churn: with 50 clients on one thread and the old
/// default of 32, a burst of responses closed connections the next burst had to
/// open again (87,060 backend connects in 501,425 requests; 50 with 50 kept).
pub const DEMAND_MIN: usize = 32;
pub const DEMAND_MAX: usize = 1024;

/// How many idle connections to `state` this thread keeps.
fn idle_cap(state: &ServerState, max_idle: Option<usize>) -> usize {
    max_idle.unwrap_or_else(|| {
        let peak = state
            .traffic
            .max_active
            .load(std::sync::atomic::Ordering::Relaxed) as usize;
        peak.clamp(DEMAND_MIN, DEMAND_MAX)
    })
}

/// Puts an idle connection, made under `epoch`, in this thread's pool,
/// dropping the oldest when full. One made under settings a reload replaced
/// (an older epoch than the pool's in force) is closed instead.
fn park<C>(
    state: &Arc<ServerState>,
    epoch: u64,
    max_idle: Option<usize>,
    keepalive: Duration,
    conn: C,
    list: impl FnOnce(&mut IdleList) -> &mut VecDeque<Idle<C>>,
) {
    let max_idle = idle_cap(state, max_idle);
    if max_idle == 0 || keepalive.is_zero() || state.is_retired() || epoch < state.conn_epoch() {
        return;
    }
    IDLE.with_borrow_mut(|m| {
        let entry = m.entry(state.uid).or_insert_with(|| IdleList {
            state: Arc::clone(state),
            epoch,
            conns: VecDeque::new(),
            raw: VecDeque::new(),
        });
        let Some(entry) = entry.of_epoch(epoch) else {
            return;
        };
        let list = list(entry);
        if list.len() >= max_idle {
            // keep the most recently used ones: drop the oldest
            list.pop_front();
        }
        list.push_back(Idle {
            conn,
            expires: crate::clock::now_ms() + keepalive.as_millis() as u64,
        });
    });
}

/// Returns a plain connection whose last response was read completely;
/// `epoch` is the `Pool::conn_epoch` of the pool it was made (or taken) for.
pub fn checkin_raw(
    state: &Arc<ServerState>,
    epoch: u64,
    max_idle: Option<usize>,
    keepalive: Duration,
    s: TcpStream,
) {
    park(state, epoch, max_idle, keepalive, s, |l| &mut l.raw);
}

/// Returns a connection whose last response was read completely to this
/// thread's pool; `epoch` is the `Pool::conn_epoch` of the pool it was made
/// (or taken) for.
pub fn checkin(
    state: &Arc<ServerState>,
    epoch: u64,
    max_idle: Option<usize>,
    keepalive: Duration,
    sender: Sender,
) {
    if !sender.is_closed() {
        park(state, epoch, max_idle, keepalive, sender, |l| &mut l.conns);
    }
}

/// Closes this thread's idle connections that were closed by the server, have
/// outlived their keep-alive timeout, belong to a member that left its pool,
/// or were made under settings a reload replaced. Each worker calls it every
/// second and when members are retired or their pool's settings change.
pub fn sweep() {
    let now = crate::clock::now_ms();
    IDLE.with_borrow_mut(|m| {
        m.retain(|_, list| {
            if list.state.is_retired() || list.epoch < list.state.conn_epoch() {
                return false;
            }
            list.conns
                .retain(|c| !c.conn.is_closed() && c.expires > now);
            list.raw.retain(|c| c.expires > now && raw_is_open(&c.conn));
            !list.conns.is_empty() || !list.raw.is_empty()
        })
    });
}

/// Backend connections private to one client connection: those of pools that
/// send the PROXY protocol, whose header names that client, so no other client
/// may ever use them (HAProxy makes such connections private too). At most one
/// idle connection per server is kept.
#[derive(Debug, Default)]
pub struct Private {
    /// (server uid, the `Pool::conn_epoch` it was made under, connection)
    idle: std::sync::Mutex<Vec<(u64, u64, Sender)>>,
}

impl Private {
    /// The idle connection to `server` made under `epoch`, if there is one.
    pub(super) fn take(&self, server: &ServerState, epoch: u64) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let i = idle.iter().position(|(uid, _, _)| *uid == server.uid)?;
        // one made for the pool in force, while this request holds the pool
        // of a snapshot before a reload, stays for the next request
        if idle[i].1 > epoch {
            return None;
        }
        let (_, made, s) = idle.swap_remove(i);
        (made == epoch && !s.is_closed()).then_some(s)
    }

    /// Keeps a connection whose last response was read completely (made
    /// under `epoch`, unless a reload has replaced those settings since).
    pub fn put(&self, server: &ServerState, epoch: u64, sender: Sender) {
        if sender.is_closed() || server.is_retired() || epoch < server.conn_epoch() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|(uid, _, _)| *uid != server.uid);
        idle.push((server.uid, epoch, sender));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::Health;
    use std::sync::atomic::Ordering;

    /// Idle connections to `state` on this thread.
    fn kept(state: &ServerState) -> usize {
        IDLE.with_borrow(|m| m.get(&state.uid).map_or(0, |l| l.raw.len()))
    }

    /// `n` connected sockets (their server ends kept open in `accepted`).
    async fn sockets(n: usize, accepted: &mut Vec<TcpStream>) -> Vec<TcpStream> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(TcpStream::connect(addr).await.unwrap());
            accepted.push(l.accept().await.unwrap().0);
        }
        out
    }

    #[tokio::test(flavor = "current_thread")]
    async fn unset_the_idle_cap_follows_the_servers_peak_within_bounds() {
        let keep = Duration::from_secs(60);
        let mut ends = Vec::new();
        let state = |peak: u32| {
            let s = Arc::new(ServerState::new(Health::Up));
            s.traffic.max_active.store(peak, Ordering::Relaxed);
            s
        };
        // a peak of 50 concurrent requests: 50 kept, not the old fixed 32
        let busy = state(50);
        for s in sockets(60, &mut ends).await {
            checkin_raw(&busy, 0, None, keep, s);
        }
        assert_eq!(kept(&busy), 50);
        // a quiet server keeps the floor
        let quiet = state(3);
        for s in sockets(40, &mut ends).await {
            checkin_raw(&quiet, 0, None, keep, s);
        }
        assert_eq!(kept(&quiet), DEMAND_MIN);
        // a set cap is the cap, whatever the peak
        let capped = state(50);
        for s in sockets(20, &mut ends).await {
            checkin_raw(&capped, 0, Some(8), keep, s);
        }
        assert_eq!(kept(&capped), 8);
        assert_eq!(idle_cap(&state(1_000_000), None), DEMAND_MAX);
        assert_eq!(idle_cap(&state(50), Some(0)), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn connections_made_under_replaced_pool_settings_are_never_reused() {
        let keep = Duration::from_secs(60);
        let mut ends = Vec::new();
        let state = Arc::new(ServerState::new(Health::Up));
        for s in sockets(2, &mut ends).await {
            checkin_raw(&state, 0, None, keep, s);
        }
        // the pool they were made for finds them
        let s = take_idle_raw(&state, 0).expect("an idle connection");
        checkin_raw(&state, 0, None, keep, s);
        assert_eq!(kept(&state), 2);
        // a pool whose [tls], protocol or send_proxy a reload changed does
        // not, and they are closed
        assert!(take_idle_raw(&state, 1).is_none());
        assert_eq!(kept(&state), 0);
        for s in sockets(1, &mut ends).await {
            checkin_raw(&state, 1, None, keep, s);
        }
        // a request that began before the reload returns its connection:
        // not kept, and the new ones stay
        for s in sockets(1, &mut ends).await {
            checkin_raw(&state, 0, None, keep, s);
        }
        assert_eq!(kept(&state), 1);
        assert!(take_idle_raw(&state, 0).is_none());
        assert_eq!(kept(&state), 1);
        // once the next epoch is in force, the sweep closes the older ones,
        // and one returned late is not kept either
        assert!(state.advance_conn_epoch(2));
        assert!(!state.advance_conn_epoch(1));
        sweep();
        assert_eq!(kept(&state), 0);
        for s in sockets(1, &mut ends).await {
            checkin_raw(&state, 1, None, keep, s);
        }
        assert_eq!(kept(&state), 0);
        for s in sockets(1, &mut ends).await {
            checkin_raw(&state, 2, None, keep, s);
        }
        assert_eq!(kept(&state), 1);
    }
}
