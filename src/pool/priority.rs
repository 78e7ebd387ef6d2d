//! The pool's queue, ordered by priority, and priority shedding.
//!
//! A request that finds every server of its pool at `max_connections_per_server`
//! waits here. Each priority class has its own FIFO; a freed slot goes to the
//! oldest waiter of the highest class that has one, so a `critical` request
//! never waits behind a `low` one, and within a class the first come is the
//! first served. A newcomer takes a free slot at once only when no request of
//! its class or a higher one is waiting (it does not jump its own queue, and it
//! outranks the waiters of lower classes anyway).
//!
//! With `shed_after` set, a saturated pool sheds by class instead of letting
//! every class wait until `queue_timeout`: a `low` request is answered 503 once
//! it has waited `shed_after`, a `normal` one after 4 times that and a `high`
//! one after 16 times; `critical` is never shed (it waits up to `queue_timeout`).
//! A newcomer is shed at once when the oldest request it would wait behind (of
//! its class or higher) has already waited longer than its class's limit; with
//! `shed_after = "0s"`, every class but `critical` is shed as soon as the pool
//! is full.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::rules::{Priority, CLASSES};

/// How long a request of each class may wait in a saturated pool's queue
/// before it is shed (`None`: until `queue_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shedding {
    after: [Option<Duration>; CLASSES],
}

impl Shedding {
    /// From `shed_after` (the limit of `low`): `normal` waits 4 times and `high`
    /// 16 times as long; `critical` is never shed.
    pub fn from_shed_after(low: Duration) -> Shedding {
        Shedding {
            after: [Some(low), Some(low * 4), Some(low * 16), None],
        }
    }

    pub fn limit(&self, p: Priority) -> Option<Duration> {
        self.after[p.ix()]
    }
}

/// One request waiting for a slot.
#[derive(Debug)]
struct Waiter {
    since: Instant,
    notify: Notify,
    /// A freed slot was offered to it and it has not yet tried to take it.
    woken: AtomicBool,
}

/// The pool's queue, with its counters by class. Part of the pool's shared
/// state, so it outlives reloads.
#[derive(Debug, Default)]
pub struct Queue {
    classes: Mutex<[VecDeque<Arc<Waiter>>; CLASSES]>,
    /// Requests waiting, all classes.
    waiting: AtomicU32,
    /// Waiting by class (for the fast check of a newcomer and for metrics).
    depth: [AtomicU32; CLASSES],
    /// Requests that got a slot, by class.
    admitted: [AtomicU64; CLASSES],
    /// Requests shed, by class.
    shed: [AtomicU64; CLASSES],
}

/// One class's figures, for metrics, the admin API and the stats page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassStats {
    pub queued: u32,
    pub admitted: u64,
    pub shed: u64,
}

impl Queue {
    /// Requests waiting, all classes.
    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Whether a request of class `p` must queue rather than take a free slot:
    /// one of its class or a higher one is already waiting.
    pub fn must_queue(&self, p: Priority) -> bool {
        self.waiting.load(Ordering::SeqCst) != 0
            && self.depth[p.ix()..]
                .iter()
                .any(|d| d.load(Ordering::SeqCst) != 0)
    }

    pub fn admitted(&self, p: Priority) {
        self.admitted[p.ix()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_shed(&self, p: Priority) {
        self.shed[p.ix()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self, p: Priority) -> ClassStats {
        ClassStats {
            queued: self.depth[p.ix()].load(Ordering::Relaxed),
            admitted: self.admitted[p.ix()].load(Ordering::Relaxed),
            shed: self.shed[p.ix()].load(Ordering::Relaxed),
        }
    }

    /// How long the oldest request of class `p` or higher has waited: how long
    /// at least a newcomer of class `p` would wait.
    pub fn oldest_wait(&self, p: Priority, now: Instant) -> Option<Duration> {
        let classes = self.classes.lock().unwrap_or_else(|e| e.into_inner());
        classes[p.ix()..]
            .iter()
            .filter_map(|q| q.front())
            .map(|w| now.saturating_duration_since(w.since))
            .max()
    }

    /// Queues a request of class `p` at the back of its class.
    pub fn enter(&self, p: Priority) -> Entry<'_> {
        let waiter = Arc::new(Waiter {
            since: Instant::now(),
            notify: Notify::new(),
            woken: AtomicBool::new(false),
        });
        {
            let mut classes = self.classes.lock().unwrap_or_else(|e| e.into_inner());
            classes[p.ix()].push_back(Arc::clone(&waiter));
            // SeqCst pairs with the release path (a slot freed, then `waiting`
            // read): a waiter that registered before the slot was freed is woken,
            // and one that registered after sees the slot when it looks.
            self.depth[p.ix()].fetch_add(1, Ordering::SeqCst);
            self.waiting.fetch_add(1, Ordering::SeqCst);
        }
        Entry {
            queue: self,
            class: p,
            waiter,
        }
    }

    /// A slot was freed: offers it to the oldest waiter of the highest class
    /// that has not been offered one yet. Returns whether one was woken.
    pub fn wake_one(&self) -> bool {
        self.offer(None)
    }

    /// Capacity may have grown (a server came back, a reload, an operator):
    /// every waiter not holding an offer gets one, and looks.
    pub fn wake_all(&self) {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let classes = self.classes.lock().unwrap_or_else(|e| e.into_inner());
        for w in classes.iter().flatten() {
            if !w.woken.swap(true, Ordering::AcqRel) {
                w.notify.notify_one();
            }
        }
    }

    /// Offers a slot to the first waiter not offered one yet, in serving order
    /// (highest class first, FIFO within it); with `after`, only to one behind
    /// that waiter, so an offer passed on moves strictly down the queue and
    /// cannot go round between waiters that all cannot use it.
    fn offer(&self, after: Option<&Arc<Waiter>>) -> bool {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return false;
        }
        let classes = self.classes.lock().unwrap_or_else(|e| e.into_inner());
        let mut behind = after.is_none();
        for p in Priority::ALL {
            for w in &classes[p.ix()] {
                if !behind {
                    behind = after.is_some_and(|a| Arc::ptr_eq(a, w));
                    continue;
                }
                if !w.woken.swap(true, Ordering::AcqRel) {
                    // a permit is kept if it is not waiting at this instant
                    w.notify.notify_one();
                    return true;
                }
            }
        }
        false
    }
}

/// A request's place in the queue; it leaves the queue when dropped.
#[derive(Debug)]
pub struct Entry<'a> {
    queue: &'a Queue,
    class: Priority,
    waiter: Arc<Waiter>,
}

impl Entry<'_> {
    pub fn since(&self) -> Instant {
        self.waiter.since
    }

    /// Waits to be offered a freed slot. The offer is then in hand: the flag
    /// is cleared before the waiter looks for the slot, so a slot freed while it
    /// looks is offered to it again (or to the next) rather than skipped.
    pub async fn woken(&self) {
        self.waiter.notify.notified().await;
        self.waiter.woken.store(false, Ordering::Release);
    }

    /// Whether no one waits ahead of it in serving order.
    pub fn first_in_line(&self) -> bool {
        let classes = self.queue.classes.lock().unwrap_or_else(|e| e.into_inner());
        Priority::ALL
            .iter()
            .find_map(|p| classes[p.ix()].front())
            .is_some_and(|w| Arc::ptr_eq(w, &self.waiter))
    }

    /// The offer it had cannot serve it (a free slot is on a server this
    /// request already tried): it goes on to a waiter behind it.
    pub fn pass_on(&self) {
        self.queue.offer(Some(&self.waiter));
    }
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        let q = self.queue;
        {
            let mut classes = q.classes.lock().unwrap_or_else(|e| e.into_inner());
            let list = &mut classes[self.class.ix()];
            if let Some(i) = list.iter().position(|w| Arc::ptr_eq(w, &self.waiter)) {
                list.remove(i);
            }
            q.depth[self.class.ix()].fetch_sub(1, Ordering::SeqCst);
            q.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        // Leaving (served, timed out, shed or gone) with an offer it has not
        // looked at: the offer goes to the next waiter, so no freed slot is left
        // unclaimed (at worst the next one looks in vain).
        if self.waiter.woken.load(Ordering::Acquire) {
            q.wake_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order() {
        for p in Priority::ALL {
            assert_eq!(Priority::parse(p.name()), Some(p));
        }
        assert_eq!(Priority::parse("urgent"), None);
        assert!(Priority::Critical > Priority::High && Priority::Normal > Priority::Low);
        assert_eq!(Priority::default(), Priority::Normal);
    }

    #[test]
    fn shedding_scales_from_low() {
        let s = Shedding::from_shed_after(Duration::from_millis(50));
        assert_eq!(s.limit(Priority::Low), Some(Duration::from_millis(50)));
        assert_eq!(s.limit(Priority::Normal), Some(Duration::from_millis(200)));
        assert_eq!(s.limit(Priority::High), Some(Duration::from_millis(800)));
        assert_eq!(s.limit(Priority::Critical), None);
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_highest_class_then_fifo() {
        let q = Queue::default();
        let low = q.enter(Priority::Low);
        let n1 = q.enter(Priority::Normal);
        let n2 = q.enter(Priority::Normal);
        let crit = q.enter(Priority::Critical);
        assert!(q.must_queue(Priority::Low));
        assert!(q.must_queue(Priority::Critical));
        {
            // a newcomer outranks the waiters of lower classes
            drop(crit);
            assert!(!q.must_queue(Priority::Critical));
            assert!(!q.must_queue(Priority::High));
            assert!(q.must_queue(Priority::Normal));
        }
        let crit = q.enter(Priority::Critical);
        for e in [crit, n1, n2, low] {
            assert!(q.wake_one());
            // only this one was offered the slot: it completes at once
            tokio::time::timeout(Duration::from_millis(100), e.woken())
                .await
                .expect("woken in order");
            drop(e); // served: out of the queue
        }
        // everyone has been offered a slot already
        assert!(!q.wake_one());
    }

    #[tokio::test]
    async fn an_unused_offer_passes_to_the_next_waiter() {
        let q = Queue::default();
        let first = q.enter(Priority::Normal);
        let second = q.enter(Priority::Normal);
        assert!(q.wake_one());
        drop(first); // gone with the offer in hand
        tokio::time::timeout(Duration::from_millis(100), second.woken())
            .await
            .expect("the offer moved on");
        // one that cannot use its offer passes it only to those behind it
        let third = q.enter(Priority::Low);
        assert!(!third.first_in_line() && second.first_in_line());
        second.pass_on();
        tokio::time::timeout(Duration::from_millis(100), third.woken())
            .await
            .expect("passed on down the queue");
        third.pass_on();
        assert!(
            !second.waiter.woken.load(Ordering::Acquire),
            "not back up the queue"
        );
        drop((second, third));
        assert_eq!(q.waiting(), 0);
        assert_eq!(q.stats(Priority::Normal).queued, 0);
    }

    #[tokio::test]
    async fn oldest_wait_looks_at_the_class_and_above() {
        let q = Queue::default();
        let _low = q.enter(Priority::Low);
        let later = Instant::now() + Duration::from_secs(1);
        assert!(q.oldest_wait(Priority::Normal, later).is_none());
        assert!(q.oldest_wait(Priority::Low, later).unwrap() >= Duration::from_secs(1));
        let _high = q.enter(Priority::High);
        assert!(q.oldest_wait(Priority::Normal, later).is_some());
    }
}
