//! A future boxed where it is made, not made on the stack and copied.
//!
//! `Box::pin(f())` makes `f`'s future first, on the stack, then allocates and
//! copies it into the box: all of it, since a future's size is its largest
//! state's, though its first state is only the arguments. A request's future
//! through the whole lifecycle is 5.9 KB; the fast path's exchange 1.9 KB.
//! [`pin`] allocates first, then makes the future in a call that is not
//! inlined, which LLVM has write it into the box (its call-slot
//! optimisation): only the first state's bytes are written. That call must
//! not unwind: `make` should do nothing but make the future (an `async fn`'s
//! call, an `async` block), with any allocation or other work done before
//! (where the making may unwind, LLVM copies, as `Box::pin` did).

use std::pin::Pin;

/// `Box::pin(make())`, the box allocated before `make` runs (see the module).
///
/// Not inlined either: in a large function (a connection's whole `async`
/// body) LLVM gave up on the optimisation and copied, where in this small
/// one it does not.
#[inline(never)]
pub fn pin<F>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    let mut slot = Box::new_uninit();
    slot.write(made(make));
    // SAFETY: the line above initialised the box's value. (`Box::write` says
    // so without `unsafe`, but is newer than this crate's MSRV, 1.85.)
    Box::into_pin(unsafe { slot.assume_init() })
}

/// `make()`, not inlined: a call whose value LLVM can have written where
/// the caller puts it (the box). (`#[inline(never)]` on an `async fn` does
/// not keep the making of its future from being inlined, nor can a closure
/// be marked.)
#[inline(never)]
fn made<F>(make: impl FnOnce() -> F) -> F {
    make()
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    struct Counted(Arc<AtomicUsize>, u64);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    async fn counted(c: Counted) -> u64 {
        // a large state, as the futures this is for have
        let big = [c.1 as u8; 4096];
        std::future::ready(()).await;
        c.1 + u64::from(big[4095])
    }

    #[test]
    fn the_boxed_future_is_the_one_made_and_is_dropped_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut f = super::pin(|| counted(Counted(Arc::clone(&drops), 7)));
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(f.as_mut().poll(&mut cx), Poll::Ready(14));
        assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped as it ended");
        // one never polled: its arguments are dropped with it, once
        let f = super::pin(|| counted(Counted(Arc::clone(&drops), 1)));
        drop(f);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_making_that_panics_drops_what_it_had_and_nothing_more() {
        let drops = Arc::new(AtomicUsize::new(0));
        let held = Counted(Arc::clone(&drops), 3);
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            super::pin(|| {
                let c = held;
                if c.1 == 3 {
                    panic!("made no future");
                }
                counted(c)
            })
        }));
        assert!(got.is_err());
        // the argument was dropped once as the panic unwound; the box, never
        // written, was freed without a future's drop
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }
}
