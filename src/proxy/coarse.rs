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
//! A wait that is dropped (its request was answered) takes its waker off the
//! list at once, so that its task's memory is freed then, not at the tick.

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
    /// Woken at the next tick; None where the wait was dropped.
    due: Vec<Option<Waker>>,
    /// Woken at the tick after.
    after: Vec<Option<Waker>>,
    /// Whether the task that ticks is running.
    running: bool,
}

impl Wheel {
    /// The list of the waits that end at tick `end`, if it is still to come.
    fn list(&mut self, end: u64) -> Option<&mut Vec<Option<Waker>>> {
        match end.checked_sub(self.ticks) {
            Some(1) => Some(&mut self.due),
            Some(2) => Some(&mut self.after),
            _ => None,
        }
    }
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
    at: Option<Place>,
}

/// Where a wait's waker is: the wheel, the tick at which the wait is over,
/// and its index in that tick's list.
#[derive(Clone, Copy)]
struct Place {
    wheel: u64,
    end: u64,
    index: usize,
}

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        WHEEL.with(|w| {
            let mut w = w.borrow_mut();
            match this.at {
                Some(at) if at.wheel == w.id => {
                    if w.ticks >= at.end {
                        this.at = None;
                        return Poll::Ready(());
                    }
                    // polled early (the task was woken for something else):
                    // its waker is on the list already
                    Poll::Pending
                }
                _ => {
                    // after the next tick, which may come at once; or, if the
                    // ticker starts now, at its first tick, a whole TICK away
                    let end = w.ticks + if w.running { 2 } else { 1 };
                    let Some(list) = w.list(end) else {
                        return Poll::Ready(());
                    };
                    list.push(Some(cx.waker().clone()));
                    let index = list.len() - 1;
                    this.at = Some(Place {
                        wheel: w.id,
                        end,
                        index,
                    });
                    if !w.running {
                        w.running = true;
                        tokio::spawn(tracing::Instrument::instrument(
                            ticker(),
                            tracing::info_span!("coarse_timer"),
                        ));
                    }
                    Poll::Pending
                }
            }
        })
    }
}

impl Drop for Wait {
    /// A wait dropped before its tick (its request was answered) lets go of
    /// its waker at once: the task's memory is not held until the tick, and
    /// the tick does not wake a task that no longer waits.
    fn drop(&mut self) {
        let Some(at) = self.at else {
            return;
        };
        let waker = WHEEL
            .try_with(|w| {
                let mut w = w.try_borrow_mut().ok()?;
                if w.id != at.wheel {
                    return None;
                }
                w.list(at.end)?.get_mut(at.index)?.take()
            })
            .ok()
            .flatten();
        drop(waker);
    }
}

/// Wakes the waits every `TICK`, until there are none.
async fn ticker() {
    let mut fired: Vec<Option<Waker>> = Vec::new();
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
        for waker in fired.drain(..).flatten() {
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

    #[tokio::test(start_paused = true)]
    async fn a_dropped_wait_lets_go_of_its_waker_at_once() {
        struct Count;
        impl std::task::Wake for Count {
            fn wake(self: std::sync::Arc<Self>) {}
        }
        let count = std::sync::Arc::new(Count);
        let waker = Waker::from(std::sync::Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        // the first starts the ticker (its list: the next tick); the second
        // goes on the list after
        let mut first = Box::pin(wait());
        let mut second = Box::pin(wait());
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        assert_eq!(std::sync::Arc::strong_count(&count), 4);
        drop(second);
        assert_eq!(std::sync::Arc::strong_count(&count), 3);
        drop(first);
        assert_eq!(std::sync::Arc::strong_count(&count), 2);
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
