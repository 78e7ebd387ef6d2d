//! A coarse timer per worker thread, for waits that need no precision and are
//! mostly dropped before they end: a new connection's client is watched for
//! closing only once its request has been in flight for a while
//! (`fast_path::client_gone`), and nearly every request is answered sooner.
//!
//! A tokio timer for each of those waits cost an insertion into and a removal
//! from the timer wheel, and, whenever it was the earliest timer, a write to
//! the reactor's eventfd to wake the driver: 0.76 such system calls a request
//! with a new connection per request (`strace -c`). Here a wait is a waker
//! pushed onto a list; one task per worker wakes the list every `TICK` while
//! there are waits, and ends when there are none. A wait ends one to two
//! ticks after it starts.
//!
//! The lists hold the wakers of waits that were dropped (their requests were
//! answered) until their tick: waking them is harmless (a finished task is not
//! polled again; a task waiting on something else is polled once for nothing),
//! and their tasks' cells stay allocated until then.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// How often the waits are woken.
pub(super) const TICK: Duration = Duration::from_millis(100);

struct Wheel {
    /// Which thread's wheel this is (a wait polled on another thread starts
    /// again there).
    id: u64,
    /// Ticks so far.
    ticks: u64,
    /// Woken at the next tick.
    due: Vec<Waker>,
    /// Woken at the tick after.
    after: Vec<Waker>,
    /// Whether the task that ticks is running.
    running: bool,
}

thread_local! {
    static WHEEL: RefCell<Wheel> = RefCell::new(Wheel {
        id: {
            static IDS: AtomicU64 = AtomicU64::new(1);
            IDS.fetch_add(1, Ordering::Relaxed)
        },
        ticks: 0,
        due: Vec::new(),
        after: Vec::new(),
        running: false,
    });
}

/// Resolves one to two `TICK`s after it is first polled.
pub(super) fn wait() -> Wait {
    Wait { at: None }
}

pub(super) struct Wait {
    /// The wheel it waits on and the tick at which it is over.
    at: Option<(u64, u64)>,
}

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        WHEEL.with(|w| {
            let mut w = w.borrow_mut();
            match this.at {
                Some((id, end)) if id == w.id => {
                    if w.ticks >= end {
                        return Poll::Ready(());
                    }
                    // polled early (the task was woken for something else):
                    // its waker is on the list already
                    Poll::Pending
                }
                _ if w.running => {
                    // after the next tick, which may come at once
                    this.at = Some((w.id, w.ticks + 2));
                    w.after.push(cx.waker().clone());
                    Poll::Pending
                }
                _ => {
                    // the ticker starts: its first tick is a whole TICK away
                    this.at = Some((w.id, w.ticks + 1));
                    w.due.push(cx.waker().clone());
                    w.running = true;
                    tokio::spawn(tracing::Instrument::instrument(
                        ticker(),
                        tracing::info_span!("coarse_timer"),
                    ));
                    Poll::Pending
                }
            }
        })
    }
}

/// Wakes the waits every `TICK`, until there are none.
async fn ticker() {
    let mut fired: Vec<Waker> = Vec::new();
    loop {
        tokio::time::sleep(TICK).await;
        let more = WHEEL.with(|w| {
            let mut w = w.borrow_mut();
            w.ticks += 1;
            let after = std::mem::replace(&mut w.after, std::mem::take(&mut fired));
            fired = std::mem::replace(&mut w.due, after);
            let more = !w.due.is_empty();
            w.running = more;
            more
        });
        // waking does not poll: nothing is pushed meanwhile
        for waker in fired.drain(..) {
            waker.wake();
        }
        if !more {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_between_one_and_two_ticks() {
        for offset in [0, 30, 99] {
            // waits started at different points between ticks
            tokio::time::sleep(Duration::from_millis(offset)).await;
            let start = tokio::time::Instant::now();
            wait().await;
            let took = start.elapsed();
            assert!(took >= TICK && took <= 2 * TICK, "{took:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_ticker_stops_when_idle_and_starts_again() {
        wait().await;
        // the list emptied: the ticker ended
        tokio::time::sleep(3 * TICK).await;
        assert!(!WHEEL.with(|w| w.borrow().running));
        let start = tokio::time::Instant::now();
        wait().await;
        // the ticker started again with it: one tick
        assert_eq!(start.elapsed(), TICK);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_wait_does_not_hold_the_others() {
        let dropped = tokio::time::timeout(Duration::from_millis(10), wait()).await;
        assert!(dropped.is_err());
        let many = futures_all(16).await;
        assert_eq!(many, 16);
    }

    async fn futures_all(n: usize) -> usize {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            set.spawn(wait());
        }
        let mut done = 0;
        while set.join_next().await.is_some() {
            done += 1;
        }
        done
    }
}
