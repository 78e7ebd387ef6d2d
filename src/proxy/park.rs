//! Idle HTTP/1.1 client connections, parked outside tokio.
//!
//! A keep-alive connection waiting for its next request costs its task (the
//! cell tokio allocates for the connection's future, 640 bytes) and its
//! socket's registration with the reactor (256 bytes), on top of its
//! `ConnCtx`: about 1,500 bytes in all, where nginx holds about 600. A
//! connection that has served a request and then been idle for its listener's
//! `park_idle_after` gives both up: its task ends, its socket leaves tokio's
//! reactor for the worker's parker, and what is needed to serve it again (the
//! socket, its `ConnCtx` moved out of its `Arc`, the listener's builders and
//! drain token, its request-head deadline) is kept in one slot of a slab
//! (`size_of::<Slot>()`, 264 bytes) plus an entry in a heap of deadlines (24).
//!
//! The parker is one task per worker thread. It owns an epoll instance of its
//! own, registered with tokio as one descriptor (an epoll fd is readable while
//! one of its sockets is), a heap of the slots' deadlines, and one drain future
//! per listener that has parked connections.
//! - A parked socket that becomes readable (a request, the client closing, an
//!   error) is handed back to a new task that serves it from where it stopped,
//!   its request head due when it was due before; the task is the same future
//!   a new connection gets, and its accept loop holds it as one of its own (to
//!   prune it, and to cut it when a removed address's grace is over).
//! - One whose deadline (request_header_timeout after its last response)
//!   passes is closed, as its task would have closed it.
//! - When its listener drains, its deadline comes forward to the linger an idle
//!   task gets (`DRAIN_LINGER`): a request that comes meanwhile is served, with
//!   `Connection: close`; the rest close then.
//!
//! Waking a parked connection costs an `epoll_ctl` call (out of the parker's
//! set), an `Arc` and a spawn, and a registration with the reactor if it waits
//! again: a few microseconds, against a connection that was idle for at least
//! `park_idle_after`. A busy keep-alive connection
//! never parks; a TLS connection never does (its state lives in its task).

use super::conn::{ConnCtx, ListenerCtx};
use crate::snapshot::ServerBuilders;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::task_tracker::TaskTrackerToken;

/// Connections parked now, in all workers (`rampart_connections_parked`).
pub static PARKED: AtomicI64 = AtomicI64::new(0);
/// Connections parked since start (`rampart_connections_parked_total`).
pub static PARKED_TOTAL: AtomicU64 = AtomicU64::new(0);

/// Readiness events taken from the parker's epoll per call.
const EVENTS: usize = 256;

/// What a parked connection needs to be served again.
pub(super) struct Parked {
    pub(super) stream: std::net::TcpStream,
    pub(super) ctx: ConnCtx,
    pub(super) builders: Arc<ServerBuilders>,
    pub(super) graceful: CancellationToken,
    /// When its next request head must be complete (request_header_timeout
    /// after its last response): it is closed then.
    pub(super) deadline: Instant,
    /// Keeps its listener's tracker counting it, so that a drain waits for it.
    pub(super) track: TaskTrackerToken,
}

struct Slot {
    /// Bumped each time the slot is freed: a stale event or deadline (one for
    /// an earlier tenant of the slot) does not match.
    gen: u32,
    parked: Option<Parked>,
}

/// One listener's (one accept loop's) parked connections: its drain is watched
/// once for all of them.
struct Group {
    shared: Arc<ListenerCtx>,
    drained: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The drain came, and its connections' deadlines were brought forward.
    draining: bool,
    count: usize,
}

#[derive(Default)]
struct State {
    /// Parked now (slots that hold a connection).
    live: usize,
    slots: Vec<Slot>,
    free: Vec<u32>,
    deadlines: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    groups: Vec<Group>,
    /// The parker task, woken when a deadline earlier than all before or a new
    /// listener arrives.
    task: Option<Waker>,
}

/// Spawns the task that serves a parked connection again (`fast_path::serve`,
/// on its listener's tracker): passed in by the fast path, which depends on
/// this module, not the other way round.
pub(super) type ServeAgain = fn(
    std::net::TcpStream,
    Arc<ConnCtx>,
    Arc<ServerBuilders>,
    CancellationToken,
) -> tokio::task::AbortHandle;

impl Drop for State {
    fn drop(&mut self) {
        // a parker dropped with connections in it (its runtime shut down):
        // they close here
        PARKED.fetch_sub(self.live as i64, Ordering::Relaxed);
    }
}

struct Parker {
    epoll: AsyncFd<OwnedFd>,
    again: ServeAgain,
    state: Mutex<State>,
    /// Cleared when the parker's task is dropped (its runtime shut down): a
    /// later park on this thread makes a new parker.
    alive: AtomicBool,
}

thread_local! {
    static PARKER: std::cell::RefCell<Option<Arc<Parker>>> = const { std::cell::RefCell::new(None) };
}

fn token(key: u32, gen: u32) -> u64 {
    (u64::from(key) << 32) | u64::from(gen)
}

impl Parker {
    fn new(again: ServeAgain) -> io::Result<Parker> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a
        // new descriptor that nothing else owns, so OwnedFd may close it.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: see above: `fd` is open and owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the OwnedFd is open and moves into the AsyncFd, which owns it
        // (nothing else can close or replace it) until the AsyncFd is dropped.
        let epoll = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Parker {
            epoll,
            again,
            state: Mutex::new(State::default()),
            alive: AtomicBool::new(true),
        })
    }

    fn ctl(&self, op: libc::c_int, fd: i32, data: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: data,
        };
        // SAFETY: `ev` lives across the call, which only reads it; the two
        // descriptors are checked by the kernel (a bad one is an error).
        let r = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // a panic while holding it leaves slots that are still consistent
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `p` in. Where its socket cannot be watched (epoll refused it),
    /// it is served on by a task at once.
    fn park(&self, p: Parked) {
        if let Err(p) = self.try_park(p) {
            resume(*p, self.again);
        }
    }

    fn try_park(&self, p: Parked) -> Result<(), Box<Parked>> {
        let mut st = self.lock();
        let key = match st.free.pop() {
            Some(k) => k,
            None => {
                let Ok(k) = u32::try_from(st.slots.len()) else {
                    return Err(Box::new(p));
                };
                st.slots.push(Slot {
                    gen: 0,
                    parked: None,
                });
                k
            }
        };
        let gen = st.slots[key as usize].gen;
        if self
            .ctl(libc::EPOLL_CTL_ADD, p.stream.as_raw_fd(), token(key, gen))
            .is_err()
        {
            st.free.push(key);
            return Err(Box::new(p));
        }
        let mut wake = st
            .deadlines
            .peek()
            .is_none_or(|Reverse((d, _, _))| p.deadline < *d);
        st.deadlines.push(Reverse((p.deadline, key, gen)));
        match st
            .groups
            .iter_mut()
            .find(|g| Arc::ptr_eq(&g.shared, &p.ctx.shared))
        {
            Some(g) => g.count += 1,
            None => {
                st.groups.push(Group {
                    shared: Arc::clone(&p.ctx.shared),
                    drained: Box::pin(p.graceful.clone().cancelled_owned()),
                    draining: false,
                    count: 1,
                });
                wake = true;
            }
        }
        st.slots[key as usize].parked = Some(p);
        st.live += 1;
        PARKED.fetch_add(1, Ordering::Relaxed);
        PARKED_TOTAL.fetch_add(1, Ordering::Relaxed);
        if wake {
            if let Some(w) = &st.task {
                w.wake_by_ref();
            }
        }
        Ok(())
    }

    /// Empties slot `key` if its tenant is still generation `gen`.
    fn take(&self, st: &mut State, key: u32, gen: u32) -> Option<Parked> {
        let slot = st.slots.get_mut(key as usize)?;
        if slot.gen != gen {
            return None;
        }
        let p = slot.parked.take()?;
        slot.gen = slot.gen.wrapping_add(1);
        st.free.push(key);
        // a closed descriptor leaves the epoll set by itself; this one stays
        // open (it is served again), so it is taken out
        let _ = self.ctl(libc::EPOLL_CTL_DEL, p.stream.as_raw_fd(), 0);
        if let Some(i) = st
            .groups
            .iter()
            .position(|g| Arc::ptr_eq(&g.shared, &p.ctx.shared))
        {
            st.groups[i].count -= 1;
            if st.groups[i].count == 0 {
                st.groups.swap_remove(i);
            }
        }
        st.live -= 1;
        PARKED.fetch_sub(1, Ordering::Relaxed);
        Some(p)
    }

    /// One turn of the parker's task: what is readable is handed back, what
    /// ran out of time is closed, a draining listener's connections are handed
    /// back. Never finishes.
    fn poll_turn(
        &self,
        cx: &mut Context<'_>,
        sleep: &mut Pin<Box<tokio::time::Sleep>>,
    ) -> Poll<()> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        // a few rounds, then a yield to the worker's other tasks
        for _ in 0..4 {
            let mut wake: Vec<Parked> = Vec::new();
            let mut close: Vec<Parked> = Vec::new();
            let mut again = false;
            if let Poll::Ready(r) = self.epoll.poll_read_ready(cx) {
                match r {
                    Ok(mut guard) => {
                        // SAFETY: `events` is a writable array of EVENTS
                        // entries that outlives the call; the kernel writes at
                        // most that many.
                        let r = unsafe {
                            libc::epoll_wait(
                                self.epoll.as_raw_fd(),
                                events.as_mut_ptr(),
                                EVENTS as libc::c_int,
                                0,
                            )
                        };
                        // (an error, EINTR at most with no timeout, leaves the
                        // readiness set: the next round tries again)
                        let n = usize::try_from(r).map_or(0, |n| n.min(EVENTS));
                        if r >= 0 && n < EVENTS {
                            guard.clear_ready();
                        }
                        // polled again either way: only a Pending poll
                        // registers this task for the next readiness
                        again = true;
                        let mut st = self.lock();
                        for ev in &events[..n] {
                            let data = ev.u64;
                            if let Some(p) = self.take(&mut st, (data >> 32) as u32, data as u32) {
                                wake.push(p);
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "parked connections: epoll failed"),
                }
            }
            {
                let mut st = self.lock();
                let now = Instant::now();
                while let Some(Reverse((d, key, gen))) = st.deadlines.peek().copied() {
                    if d > now {
                        break;
                    }
                    st.deadlines.pop();
                    if let Some(p) = self.take(&mut st, key, gen) {
                        close.push(p);
                    }
                }
                // a listener draining: its parked connections close after
                // the linger an idle task gets, unless a request comes first
                // (served, with Connection: close); they stay parked meanwhile
                let mut drained = Vec::new();
                for g in st.groups.iter_mut().filter(|g| !g.draining) {
                    if g.drained.as_mut().poll(cx).is_ready() {
                        g.draining = true;
                        drained.push(Arc::clone(&g.shared));
                    }
                }
                if !drained.is_empty() {
                    let by = now + super::DRAIN_LINGER;
                    let st = &mut *st;
                    for (key, slot) in st.slots.iter_mut().enumerate() {
                        if let Some(p) = slot.parked.as_mut().filter(|p| {
                            p.deadline > by && drained.iter().any(|s| Arc::ptr_eq(&p.ctx.shared, s))
                        }) {
                            p.deadline = by;
                            st.deadlines.push(Reverse((by, key as u32, slot.gen)));
                        }
                    }
                }
                if !st.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    st.task = Some(cx.waker().clone());
                }
                if let Some(Reverse((d, _, _))) = st.deadlines.peek() {
                    if sleep.deadline() != *d {
                        sleep.as_mut().reset(*d);
                    }
                    if sleep.as_mut().poll(cx).is_ready() {
                        again = true;
                    }
                }
                if st.live == 0 {
                    // nothing parked: the slab's memory goes back
                    st.slots = Vec::new();
                    st.free = Vec::new();
                    st.deadlines = BinaryHeap::new();
                } else if st.deadlines.len() > 2 * st.live + 64 {
                    // deadlines of connections that woke up stay in the heap
                    // until they pass: dropped when they outnumber the live
                    let st = &mut *st;
                    let slots = &st.slots;
                    st.deadlines.retain(|Reverse((_, key, gen))| {
                        slots
                            .get(*key as usize)
                            .is_some_and(|s| s.gen == *gen && s.parked.is_some())
                    });
                    st.deadlines.shrink_to_fit();
                }
            }
            for p in close {
                tracing::debug!(peer = %p.ctx.peer, "no request in time on a parked connection; closed");
                drop(p);
            }
            for p in wake {
                resume(p, self.again);
            }
            if !again {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Makes this worker thread's parker (and spawns its task), if it has none.
pub(super) fn start(again: ServeAgain) {
    let _ = parker(again);
}

/// The worker thread's parker, made (and its task spawned) on first use where
/// the worker did not make it at start (`start`).
fn parker(again: ServeAgain) -> Option<Arc<Parker>> {
    PARKER.with(|cell| {
        let mut cell = cell.borrow_mut();
        if let Some(p) = cell.as_ref().filter(|p| p.alive.load(Ordering::Relaxed)) {
            return Some(Arc::clone(p));
        }
        // after a failure (EMFILE, most likely), not tried again for 10 s
        static FAILED_MS: AtomicU64 = AtomicU64::new(0);
        let failed = FAILED_MS.load(Ordering::Relaxed);
        if failed != 0 && crate::clock::now_ms().saturating_sub(failed) < 10_000 {
            return None;
        }
        let p = match Parker::new(again) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                FAILED_MS.store(crate::clock::now_ms().max(1), Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot park idle connections (for 10 s)");
                return None;
            }
        };
        let task = Arc::clone(&p);
        struct Alive(Arc<Parker>);
        impl Drop for Alive {
            fn drop(&mut self) {
                self.0.alive.store(false, Ordering::Relaxed);
            }
        }
        let me = Alive(task);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let mut sleep = Box::pin(tokio::time::sleep_until(Instant::now()));
                std::future::poll_fn(|cx| me.0.poll_turn(cx, &mut sleep)).await
            },
            tracing::info_span!("parker"),
        ));
        // what a dead parker held is dropped (closed) here
        *cell = Some(Arc::clone(&p));
        Some(p)
    })
}

/// This worker's parker, for a connection that can be parked: its `ConnCtx`
/// held by it alone (so that it can move out of its `Arc`) and its listener
/// not draining. None: served on by its task.
pub(super) fn parker_for(
    ctx: &Arc<ConnCtx>,
    graceful: &CancellationToken,
    again: ServeAgain,
) -> Option<Ticket> {
    if graceful.is_cancelled() || Arc::strong_count(ctx) != 1 || Arc::weak_count(ctx) != 0 {
        return None;
    }
    parker(again).map(Ticket)
}

/// A parker that will take a connection (`parker_for`).
pub(super) struct Ticket(Arc<Parker>);

impl Ticket {
    /// Parks an idle connection (its task then ends). Where that fails, it is
    /// served on by a new task.
    pub(super) fn park(
        self,
        stream: super::io::ClientSocket,
        ctx: Arc<ConnCtx>,
        builders: Arc<ServerBuilders>,
        graceful: CancellationToken,
        deadline: Instant,
    ) {
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                // the socket left the reactor half-way: nothing to serve it with
                tracing::debug!(peer = %ctx.peer, error = %e, "cannot park an idle connection; closed");
                return;
            }
        };
        let ctx = match Arc::try_unwrap(ctx) {
            Ok(c) => c,
            Err(ctx) => {
                // not reached: `parker_for` saw it held alone
                let adopted = Arc::clone(&ctx.shared.adopted);
                adopted
                    .tasks()
                    .push((self.0.again)(stream, ctx, builders, graceful));
                return;
            }
        };
        let track = ctx.shared.tracker.token();
        ctx.shared.adopted.parks.fetch_add(1, Ordering::Relaxed);
        self.0.park(Parked {
            stream,
            ctx,
            builders,
            graceful,
            deadline,
            track,
        });
    }
}

/// Serves a parked connection again, in a task of its own (as the one it had:
/// the same future, nothing wrapped around it).
fn resume(p: Parked, again: ServeAgain) {
    let Parked {
        stream,
        ctx,
        builders,
        graceful,
        deadline,
        track,
    } = p;
    // not registered with the reactor: its task reads it at once
    ctx.resume(deadline.saturating_duration_since(Instant::now()));
    let adopted = Arc::clone(&ctx.shared.adopted);
    let task = again(stream, Arc::new(ctx), builders, graceful);
    // its accept loop prunes it, and cuts it at `kill`, with its own tasks
    adopted.tasks().push(task);
    drop(track);
}

/// Gives memory freed by parked connections back to the system: their tasks
/// and registrations are freed from between allocations that stay, where
/// malloc does not return pages by itself. Called with the number of finished
/// connection tasks an accept loop just let go of; trims at most once a second,
/// and only after at least 256. Their task cells, socket states and other
/// small blocks went first to the worker's own lists (`crate::heap`), which
/// malloc_trim does not see: the worker (the caller's thread) gives them back
/// to glibc first, trim or not (the trims are once a second for all workers).
pub(crate) fn released(n: usize) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    if n < 256 {
        return;
    }
    // (every worker that let them go gives its own back, also when another
    // worker's trim this second is the one that returns the pages)
    crate::heap::release();
    let now = crate::clock::now_ms();
    let last = LAST.load(Ordering::Relaxed);
    if now.saturating_sub(last) < 1000
        || LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    // off the worker: it walks the whole heap
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let span = tracing::debug_span!("malloc_trim", released = n);
        tokio::task::spawn_blocking(move || {
            span.in_scope(|| {
                // SAFETY: malloc_trim takes no pointers and only returns free
                // pages of glibc's own heap to the system; any thread may.
                unsafe {
                    libc::malloc_trim(0);
                }
            })
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_parked_connection_stays_small() {
        // what a parked connection holds in the slab, nginx's whole figure
        // being about 600 bytes
        let size = std::mem::size_of::<super::Slot>();
        assert!(size <= 280, "a parked connection's slot is {size} bytes");
    }
}
