//! The global allocator: glibc's, behind a cache per thread of the blocks
//! freed last, by size class: small asks (malloc's own alignment, up to
//! [`SMALL_MAX`] bytes) and aligned ones (up to [`ALIGN`], up to
//! [`MAX_SIZE`] bytes). HAProxy keeps its objects in pools with a cache per
//! thread for the same reasons.
//!
//! - tokio aligns a task's cell and a socket's `ScheduledIo` to 128 bytes
//!   (against false sharing), so every spawned task and every registered
//!   socket went through `posix_memalign`. glibc 2.36 serves that outside
//!   its thread cache (tcache): each call takes the arena's bins, carves an
//!   aligned chunk out of a larger one and frees what is left on either
//!   side, about 640 instructions under callgrind. A new connection makes
//!   two or three (its task, its socket, a server's socket). (glibc 2.38
//!   serves `memalign` from its thread cache: on a newer base image,
//!   measure again.)
//! - glibc's thread cache keeps 7 blocks a size. An HTTP/2 connection's ten
//!   streams at once each allocate their request's, answer's and trailers'
//!   maps, frames and bodies: the eighth of a size, and the frees past the
//!   seventh, went to the arena's bins (`_int_malloc`, `_int_free`), about
//!   1,100 instructions a gRPC request (`GLIBC_TUNABLES` can deepen that
//!   cache, but only from the environment the process starts with).
//!
//! [`Allocator`] serves an ask of a class from this thread's list for the
//! class when it has a block, and from the system's allocator with the
//! class's full size and alignment when it has none; a freed block of a
//! class goes on the freeing thread's list, up to [`CLASS_HOLD`] bytes a
//! class and [`SMALL_HOLD`] and [`ALIGNED_HOLD`] for the two kinds (so a
//! burst of one kind of free cannot crowd the task cells out), and to the
//! system past that. Every other ask is the system's. A thread's lists are
//! freed when it ends. Memory held here is not glibc's free memory:
//! `malloc_trim` cannot return it (at most 384 KiB a thread).
//!
//! The tests here call an [`Allocator`] of their own; the integration tests
//! run the `rampart` binary, where it is the global allocator, under all
//! their traffic.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::ptr;

/// malloc's own alignment on 64-bit Linux.
const MALLOC_ALIGN: usize = 16;
/// The step between small classes, whose blocks are 24, 40, 56, ... bytes:
/// what one of glibc's chunks (16-byte steps, an 8-byte header) holds, so a
/// class asks glibc for no larger chunk than its largest ask would.
const SMALL_STEP: usize = 16;
const SMALL_FIRST: usize = 24;
const SMALL_CLASSES: usize = 64;
/// The largest small ask served from the classes: glibc's thread cache's
/// largest, too.
pub const SMALL_MAX: usize = SMALL_FIRST + SMALL_STEP * (SMALL_CLASSES - 1);
/// Every aligned class's alignment, and the step between aligned classes.
pub const ALIGN: usize = 128;
const ALIGNED_CLASSES: usize = 16;
/// The largest aligned ask served from the classes (an HTTP connection's
/// task cell is 128 bytes, its future boxed apart; a socket's
/// `Arc<ScheduledIo>` 256).
pub const MAX_SIZE: usize = ALIGN * ALIGNED_CLASSES;
const CLASSES: usize = SMALL_CLASSES + ALIGNED_CLASSES;
/// The bytes of freed blocks a thread keeps of one class: 512 task cells of
/// 128 bytes, or 256 socket states. (An accept loop holds its connections'
/// task handles and drops the finished ones in batches of 64 and more: with
/// 32 blocks a class, as first written, half of each batch went back to
/// glibc and the next connections' cells came from `posix_memalign` again.)
pub const CLASS_HOLD: usize = 64 * 1024;
/// The bytes a thread keeps of the small classes together.
pub const SMALL_HOLD: usize = 256 * 1024;
/// The bytes a thread keeps of the aligned classes together.
pub const ALIGNED_HOLD: usize = 128 * 1024;

/// See the module. Installed in the binary (main.rs) with
/// `#[global_allocator]`.
pub struct Allocator;

/// The class an ask is served from, or none (the system's).
#[inline]
fn class(layout: Layout) -> Option<usize> {
    let (size, align) = (layout.size(), layout.align());
    if size == 0 {
        None
    } else if align <= MALLOC_ALIGN {
        (size <= SMALL_MAX).then(|| size.saturating_sub(SMALL_FIRST - SMALL_STEP + 1) / SMALL_STEP)
    } else if align <= ALIGN && size <= MAX_SIZE {
        Some(SMALL_CLASSES + (size - 1) / ALIGN)
    } else {
        None
    }
}

/// What each class's blocks are allocated as (made at compile time): the
/// small classes 24, 40, ... 1,032 bytes aligned to 16 (`malloc`'s, which
/// std asks for when the alignment is at most 16 and the size at least
/// that), the aligned ones 128, 256, ... 2,048 aligned to 128.
const LAYOUTS: [Layout; CLASSES] = {
    let mut all = [Layout::new::<u8>(); CLASSES];
    let mut c = 0;
    while c < CLASSES {
        let (size, align) = if c < SMALL_CLASSES {
            (SMALL_FIRST + c * SMALL_STEP, MALLOC_ALIGN)
        } else {
            ((c - SMALL_CLASSES + 1) * ALIGN, ALIGN)
        };
        all[c] = match Layout::from_size_align(size, align) {
            Ok(l) => l,
            Err(_) => panic!("a size class's layout"),
        };
        c += 1;
    }
    all
};

/// What class `c`'s blocks are allocated as.
#[inline]
fn class_layout(c: usize) -> Layout {
    LAYOUTS[c]
}

/// A thread's freed blocks: for each class a list threaded through the
/// blocks themselves (a free block's first word points to the next), and
/// the bytes they hold, by class and by kind (small, aligned).
struct Cache {
    heads: [*mut u8; CLASSES],
    held: [usize; CLASSES],
    kinds: [usize; 2],
    /// False on a thread that keeps nothing ([`hold_none`]).
    holds: bool,
}

/// A class's kind: 0 small, 1 aligned.
#[inline]
fn kind(c: usize) -> usize {
    usize::from(c >= SMALL_CLASSES)
}

const KIND_HOLD: [usize; 2] = [SMALL_HOLD, ALIGNED_HOLD];

impl Cache {
    const fn new() -> Cache {
        Cache {
            heads: [ptr::null_mut(); CLASSES],
            held: [0; CLASSES],
            kinds: [0; 2],
            holds: true,
        }
    }

    fn pop(&mut self, c: usize) -> Option<*mut u8> {
        let p = self.heads[c];
        if p.is_null() {
            return None;
        }
        let class = class_layout(c);
        // A block that is not aligned as its class's are is no block of
        // ours: the list was written over (a use after free elsewhere).
        // glibc's own cache aborts on that too, rather than hand out what
        // the link points to.
        // (a mask, not `%`: the alignment is read from the table, and a
        // remainder by it compiles to a division on every block handed out)
        if p as usize & (class.align() - 1) != 0 {
            std::process::abort();
        }
        // SAFETY: `p` is a free block of class `c` this list owns (pushed by
        // `push`, which wrote the next block's address in its first word;
        // at least 24 bytes and aligned to 16, so a pointer fits there).
        self.heads[c] = unsafe { p.cast::<*mut u8>().read() };
        let size = class.size();
        self.held[c] -= size;
        self.kinds[kind(c)] -= size;
        Some(p)
    }

    /// False when the thread holds `CLASS_HOLD` bytes of the class already,
    /// or its kind's hold (the caller frees the block).
    fn push(&mut self, c: usize, p: *mut u8) -> bool {
        let size = class_layout(c).size();
        let k = kind(c);
        if !self.holds || self.held[c] + size > CLASS_HOLD || self.kinds[k] + size > KIND_HOLD[k] {
            return false;
        }
        // SAFETY: the caller gives the block up (it was freed): its first
        // word is free to hold the list's link (see `pop`).
        unsafe { p.cast::<*mut u8>().write(self.heads[c]) };
        self.heads[c] = p;
        self.held[c] += size;
        self.kinds[k] += size;
        true
    }

    /// Frees every block held; how many there were.
    fn release(&mut self) -> usize {
        let mut n = 0;
        for c in 0..CLASSES {
            while let Some(p) = self.pop(c) {
                // SAFETY: every block on a list was allocated by `System`
                // with its class's layout, and is the list's alone (pushed
                // once when freed, popped before it is handed out).
                unsafe { System.dealloc(p, class_layout(c)) };
                n += 1;
                #[cfg(test)]
                tests::RELEASED[c].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        n
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.release();
    }
}

thread_local! {
    // (const: no lazy initialiser that could allocate. The destructor is
    // registered on the thread's first ask or free of a class, through
    // glibc's `__cxa_thread_atexit_impl`, whose memory is glibc's own
    // `calloc` (std's fallback list, for a libc without it, allocates from
    // `System`): nothing comes back here. Once the destructor has run,
    // `try_with` fails and the system's serves. A thread that first touches
    // this in a pthread key's destructor, after glibc ran the thread's TLS
    // destructors, registers one that never runs: its lists, at most 384
    // KiB, are not freed.)
    static CACHE: RefCell<Cache> = const { RefCell::new(Cache::new()) };
}

/// Gives this thread's lists back to the system's allocator; how many blocks
/// there were. For a worker that has just let many connections go (their
/// parked sockets' tasks), before `malloc_trim`: what it holds is free memory
/// glibc can return only once glibc has it.
pub fn release() -> usize {
    CACHE
        .try_with(|k| k.try_borrow_mut().map_or(0, |mut k| k.release()))
        .unwrap_or(0)
}

/// This thread keeps no freed block from now on (and gives back what it
/// held): each goes to the system's allocator as it is freed. For a thread
/// that frees what others allocated and allocates few of its own, such as
/// the access log's writer, which frees the workers' lines: its lists would
/// fill to their holds with blocks only it could use, and keep them.
pub fn hold_none() {
    let _ = CACHE.try_with(|k| {
        if let Ok(mut k) = k.try_borrow_mut() {
            k.holds = false;
            k.release();
        }
    });
}

/// A block of class `c` from this thread's list.
#[inline]
fn take(c: usize) -> Option<*mut u8> {
    CACHE
        .try_with(|k| k.try_borrow_mut().ok().and_then(|mut k| k.pop(c)))
        .ok()
        .flatten()
}

/// `p`, of class `c`, onto this thread's list; false when there is no room
/// (or no list: the thread is ending).
#[inline]
fn keep(c: usize, p: *mut u8) -> bool {
    CACHE
        .try_with(|k| k.try_borrow_mut().is_ok_and(|mut k| k.push(c, p)))
        .unwrap_or(false)
}

// SAFETY: every block handed out is either the system allocator's answer to
// the same layout, or (for a class) a block the system allocated with the
// class's layout, which is at least as large and as aligned as any layout of
// the class. A cached block is held by one thread's list alone from its
// `dealloc` to the `alloc` that pops it, so it is never handed out twice.
// `dealloc` and `realloc` are given the layout the block was asked with, so
// `class` sends it back the way it came. `pop` and `push` never allocate,
// and where this thread's lists cannot be reached (its destructor has run,
// or a borrow is held: a re-entry) the system's allocator serves.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class(layout) {
            // SAFETY: the caller's contract, passed on.
            None => unsafe { System.alloc(layout) },
            Some(c) => match take(c) {
                Some(p) => p,
                // SAFETY: a class's layout has a non-zero size.
                None => unsafe { System.alloc(class_layout(c)) },
            },
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class(layout) {
            // SAFETY: the caller's contract, passed on.
            None => unsafe { System.alloc_zeroed(layout) },
            Some(c) => {
                // SAFETY: as `alloc`.
                let p = unsafe { self.alloc(layout) };
                if !p.is_null() {
                    // SAFETY: `p` is a block of class `c`, at least
                    // `layout.size()` bytes.
                    unsafe { ptr::write_bytes(p, 0, class_layout(c).size()) };
                }
                p
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        match class(layout) {
            // SAFETY: the caller's contract, passed on.
            None => unsafe { System.dealloc(p, layout) },
            Some(c) => {
                if !keep(c, p) {
                    // SAFETY: `p` was allocated by `System` with `c`'s layout.
                    unsafe { System.dealloc(p, class_layout(c)) }
                }
            }
        }
    }

    #[inline]
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract: `new_size`, rounded up to the
        // alignment, does not overflow.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class(layout), class(new)) {
            // SAFETY: the caller's contract, passed on: both ways are the
            // system's.
            (None, None) => return unsafe { System.realloc(p, layout, new_size) },
            // the block has its class's whole size: it is kept, and freed
            // later with `new`, of the same class
            (Some(a), Some(b)) if a == b => return p,
            _ => {}
        }
        // SAFETY: `new` is a valid layout of non-zero size (the caller's
        // contract).
        let q = unsafe { self.alloc(new) };
        if !q.is_null() {
            // SAFETY: both blocks hold at least the smaller size, and are
            // distinct (`p` is live).
            unsafe {
                ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                self.dealloc(p, layout);
            }
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Blocks `Cache::release` gave back to the system, by class.
    pub(super) static RELEASED: [AtomicUsize; CLASSES] = [const { AtomicUsize::new(0) }; CLASSES];

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    /// Blocks this thread holds for class `c`.
    fn held(c: usize) -> usize {
        CACHE.with(|k| {
            let k = k.borrow();
            let (mut n, mut p) = (0, k.heads[c]);
            while !p.is_null() {
                n += 1;
                p = unsafe { p.cast::<*mut u8>().read() };
            }
            n
        })
    }

    #[test]
    fn asks_are_sorted_into_classes_by_size_and_alignment() {
        assert_eq!(class(layout(0, 8)), None);
        assert_eq!(class(layout(1, 1)), Some(0));
        assert_eq!(class(layout(16, 16)), Some(0));
        assert_eq!(class(layout(24, 8)), Some(0));
        assert_eq!(class(layout(25, 8)), Some(1));
        assert_eq!(class(layout(40, 8)), Some(1));
        assert_eq!(class(layout(41, 1)), Some(2));
        assert_eq!(SMALL_MAX, 1032);
        assert_eq!(class(layout(SMALL_MAX, 8)), Some(SMALL_CLASSES - 1));
        assert_eq!(class(layout(SMALL_MAX + 1, 8)), None);
        let aligned = SMALL_CLASSES;
        assert_eq!(class(layout(1, 32)), Some(aligned));
        assert_eq!(class(layout(128, 128)), Some(aligned));
        assert_eq!(class(layout(129, 128)), Some(aligned + 1));
        assert_eq!(class(layout(256, 64)), Some(aligned + 1));
        assert_eq!(class(layout(MAX_SIZE, 128)), Some(CLASSES - 1));
        assert_eq!(class(layout(MAX_SIZE + 1, 128)), None);
        assert_eq!(class(layout(256, 256)), None);
        for c in 0..CLASSES {
            let l = class_layout(c);
            let (first, step, align) = if c < aligned {
                (SMALL_FIRST, SMALL_STEP, MALLOC_ALIGN)
            } else {
                (ALIGN, ALIGN, ALIGN)
            };
            assert_eq!(l.align(), align);
            assert_eq!((l.size() - first) % step, 0);
            assert_eq!(class(l), Some(c));
        }
    }

    #[test]
    fn every_ask_of_a_class_fits_its_blocks() {
        for align in [1, 2, 4, 8, 16, 32, 64, 128] {
            // (the first small class holds asks of 1 to 24 bytes)
            let (max, slack) = if align <= MALLOC_ALIGN {
                (SMALL_MAX, SMALL_FIRST)
            } else {
                (MAX_SIZE, ALIGN)
            };
            for size in 1..=max {
                let c = class(layout(size, align)).unwrap();
                let l = class_layout(c);
                assert!(l.size() >= size && l.align() >= align, "{size} {align}");
                // and no class is larger than the ask needs
                assert!(l.size() - size < slack);
            }
        }
    }

    #[test]
    fn a_freed_block_is_the_next_of_its_class_and_no_other() {
        let a = Allocator;
        unsafe {
            let p = a.alloc(layout(256, 128));
            assert!(!p.is_null());
            assert_eq!(p as usize % 128, 0);
            let c = class(layout(256, 128)).unwrap();
            let before = held(c);
            a.dealloc(p, layout(256, 128));
            assert_eq!(held(c), before + 1);
            // another class, or malloc's own alignment: not that block
            let other = a.alloc(layout(384, 128));
            let small = a.alloc(layout(200, 16));
            assert_ne!(other, p);
            assert_ne!(small, p);
            // the same class by another size and alignment: that block
            let q = a.alloc(layout(200, 64));
            assert_eq!(q, p);
            assert_eq!(held(c), before);
            a.dealloc(q, layout(200, 64));
            a.dealloc(other, layout(384, 128));
            a.dealloc(small, layout(200, 16));
        }
    }

    #[test]
    fn live_blocks_never_overlap_and_keep_what_was_written() {
        let a = Allocator;
        let sizes = [1usize, 100, 128, 129, 256, 300, 700, 1024, 2000, MAX_SIZE];
        let aligns = [1usize, 8, 16, 32, 64, 128];
        let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
        let mut rng = fastrand::Rng::with_seed(17);
        for round in 0..4000u32 {
            if !live.is_empty() && rng.u8(..) < 110 {
                let (p, l, tag) = live.swap_remove(rng.usize(..live.len()));
                let bytes = unsafe { std::slice::from_raw_parts(p, l.size()) };
                assert!(
                    bytes.iter().all(|&b| b == tag),
                    "a live block was written over"
                );
                unsafe { a.dealloc(p, l) };
            } else {
                let l = layout(
                    sizes[rng.usize(..sizes.len())],
                    aligns[rng.usize(..aligns.len())],
                );
                let p = unsafe { a.alloc(l) };
                assert!(!p.is_null());
                assert_eq!(p as usize % l.align(), 0);
                let tag = (round % 251) as u8;
                unsafe { ptr::write_bytes(p, tag, l.size()) };
                live.push((p, l, tag));
            }
        }
        for (p, l, tag) in live {
            let bytes = unsafe { std::slice::from_raw_parts(p, l.size()) };
            assert!(
                bytes.iter().all(|&b| b == tag),
                "a live block was written over"
            );
            unsafe { a.dealloc(p, l) };
        }
    }

    #[test]
    fn a_thread_holds_at_most_class_hold_bytes_of_a_class() {
        let a = Allocator;
        let l = layout(2000, 128);
        let c = class(l).unwrap();
        let fit = CLASS_HOLD / class_layout(c).size();
        let blocks: Vec<*mut u8> = (0..fit + 8).map(|_| unsafe { a.alloc(l) }).collect();
        assert_eq!(held(c), 0);
        for &p in &blocks {
            unsafe { a.dealloc(p, l) };
        }
        // (a test's thread is its own: nothing else is held in it)
        assert_eq!(held(c), fit);
        assert_eq!(CACHE.with(|k| k.borrow().held[c]), CLASS_HOLD);
        // the last ones freed went to the system: the first freed is held
        let first = unsafe { a.alloc(l) };
        assert!(blocks[..fit].contains(&first));
        unsafe { a.dealloc(first, l) };
    }

    #[test]
    fn a_kind_holds_at_most_its_bytes_and_small_frees_leave_room_for_task_cells() {
        let mut cache = Cache::new();
        let mut system = Vec::new();
        // push blocks of class after class of one kind until the kind is full
        let mut fill = |cache: &mut Cache, classes: std::ops::Range<usize>| {
            for c in classes {
                loop {
                    let p = unsafe { System.alloc(class_layout(c)) };
                    if !cache.push(c, p) {
                        system.push((p, c));
                        break;
                    }
                }
                assert!(cache.held[c] <= CLASS_HOLD);
            }
        };
        fill(&mut cache, 0..SMALL_CLASSES);
        assert!(cache.kinds[0] <= SMALL_HOLD && cache.kinds[0] > SMALL_HOLD - SMALL_MAX);
        assert_eq!(cache.kinds[1], 0);
        // a task cell's class still has room
        let cell = SMALL_CLASSES;
        let p = unsafe { System.alloc(class_layout(cell)) };
        assert!(cache.push(cell, p));
        fill(&mut cache, SMALL_CLASSES..CLASSES);
        assert!(cache.kinds[1] <= ALIGNED_HOLD && cache.kinds[1] > ALIGNED_HOLD - MAX_SIZE);
        let total: usize = cache.held.iter().sum();
        assert_eq!(total, cache.kinds[0] + cache.kinds[1]);
        cache.release();
        assert_eq!(cache.kinds, [0, 0]);
        for (p, c) in system {
            unsafe { System.dealloc(p, class_layout(c)) };
        }
    }

    #[test]
    fn small_blocks_are_reused_by_class_and_zeroed_when_asked() {
        let a = Allocator;
        unsafe {
            let l = layout(24, 8);
            let c = class(l).unwrap();
            let p = a.alloc(l);
            assert_eq!(p as usize % 16, 0);
            ptr::write_bytes(p, 0xEE, 24);
            a.dealloc(p, l);
            assert_eq!(held(c), 1);
            // the next class's ask: another block
            let other = a.alloc(layout(25, 8));
            assert_ne!(other, p);
            // the same class's, smaller and zeroed: that block, all zero
            let q = a.alloc_zeroed(layout(20, 4));
            assert_eq!(q, p);
            assert!(std::slice::from_raw_parts(q, 20).iter().all(|&b| b == 0));
            // a realloc within the class keeps it; past it, the contents go
            *q = 5;
            let r = a.realloc(q, layout(20, 4), 24);
            assert_eq!(r, q);
            let r2 = a.realloc(r, layout(24, 4), 100);
            assert_ne!(r2, r);
            assert_eq!(*r2, 5);
            assert_eq!(held(c), 1);
            a.dealloc(r2, layout(100, 4));
            a.dealloc(other, layout(25, 8));
        }
    }

    #[test]
    fn zeroed_asks_are_zero_even_from_a_written_block() {
        let a = Allocator;
        let l = layout(640, 128);
        unsafe {
            let p = a.alloc(l);
            ptr::write_bytes(p, 0xAA, l.size());
            a.dealloc(p, l);
            let q = a.alloc_zeroed(l);
            assert_eq!(q, p);
            let bytes = std::slice::from_raw_parts(q, class_layout(class(l).unwrap()).size());
            assert!(bytes.iter().all(|&b| b == 0));
            a.dealloc(q, l);
        }
    }

    #[test]
    fn realloc_keeps_the_contents_across_classes_and_out_of_them() {
        let a = Allocator;
        unsafe {
            let mut l = layout(100, 128);
            let mut p = a.alloc(l);
            for i in 0..100 {
                *p.add(i) = i as u8;
            }
            // a larger class, then past the classes, then back into one
            for size in [1000usize, MAX_SIZE + 500, 60] {
                p = a.realloc(p, l, size);
                assert!(!p.is_null());
                assert_eq!(p as usize % 128, 0);
                for i in 0..60 {
                    assert_eq!(*p.add(i), i as u8);
                }
                l = layout(size, 128);
            }
            a.dealloc(p, l);
            // from a small class to past the small ones
            let l = layout(10, 8);
            let p = a.alloc(l);
            *p = 7;
            let q = a.realloc(p, l, 5000);
            assert_eq!(*q, 7);
            a.dealloc(q, layout(5000, 8));
        }
    }

    #[test]
    fn a_cache_frees_what_it_holds() {
        let a = Allocator;
        let mut cache = Cache::new();
        let big = CLASSES - 1;
        let fit = CLASS_HOLD / class_layout(big).size();
        for (c, n) in [(0usize, 3usize), (big, fit - 1)] {
            for _ in 0..n {
                let p = unsafe { System.alloc(class_layout(c)) };
                assert!(cache.push(c, p));
            }
        }
        // all but one of the largest class's room taken: no room for two
        let p = unsafe { System.alloc(class_layout(big)) };
        assert!(cache.push(big, p));
        let p = unsafe { System.alloc(class_layout(big)) };
        assert!(!cache.push(big, p));
        unsafe { System.dealloc(p, class_layout(big)) };
        assert_eq!(cache.release(), 3 + fit);
        assert_eq!(cache.kinds, [0, 0]);
        assert_eq!(cache.release(), 0);
        assert_eq!(cache.pop(0), None);
        // (a thread's own is released by its destructor when it ends: a
        // thread that kept blocks ends, and this one goes on allocating)
        std::thread::spawn(move || unsafe {
            let l = layout(300, 128);
            let p = a.alloc(l);
            a.dealloc(p, l);
            assert_eq!(held(class(l).unwrap()), 1);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_block_freed_on_another_thread_is_that_threads() {
        let a = Allocator;
        let l = layout(500, 128);
        let c = class(l).unwrap();
        let p = unsafe { a.alloc(l) } as usize;
        let (before, after) = std::thread::spawn(move || {
            let before = held(c);
            unsafe { Allocator.dealloc(p as *mut u8, l) };
            (before, held(c))
        })
        .join()
        .unwrap();
        assert_eq!((before, after), (0, 1));
        // not this thread's: its next block of the class is another
        let q = unsafe { a.alloc(l) };
        assert_ne!(q as usize, p);
        unsafe { a.dealloc(q, l) };
    }

    #[test]
    fn a_realloc_within_a_class_keeps_the_block() {
        let a = Allocator;
        unsafe {
            let l = layout(200, 128);
            let p = a.alloc(l);
            ptr::write_bytes(p, 9, 200);
            let q = a.realloc(p, l, 250);
            assert_eq!(q, p);
            let bytes = std::slice::from_raw_parts(q, 250);
            assert!(bytes[..200].iter().all(|&b| b == 9));
            a.dealloc(q, layout(250, 128));
        }
    }

    #[test]
    fn a_threads_blocks_are_freed_when_it_ends() {
        // (a class no other test uses: the counter is shared)
        let l = layout(1300, 128);
        let c = class(l).unwrap();
        let before = RELEASED[c].load(Ordering::Relaxed);
        std::thread::spawn(move || {
            let a = Allocator;
            let blocks: Vec<usize> = (0..5).map(|_| unsafe { a.alloc(l) } as usize).collect();
            for p in blocks {
                unsafe { a.dealloc(p as *mut u8, l) };
            }
            assert_eq!(held(c), 5);
        })
        .join()
        .unwrap();
        assert_eq!(RELEASED[c].load(Ordering::Relaxed), before + 5);
    }

    #[test]
    fn blocks_freed_after_the_threads_lists_are_gone_go_to_the_system() {
        // A thread-local whose destructor frees an aligned block, made
        // before the lists are: its destructor runs after theirs.
        struct FreesLate(std::cell::Cell<usize>);
        impl Drop for FreesLate {
            fn drop(&mut self) {
                let p = self.0.get();
                if p != 0 {
                    unsafe { Allocator.dealloc(p as *mut u8, layout(700, 128)) };
                }
            }
        }
        thread_local! {
            static LATE: FreesLate = const { FreesLate(std::cell::Cell::new(0)) };
        }
        let l = layout(700, 128);
        let c = class(l).unwrap();
        let ok = std::thread::spawn(move || {
            LATE.with(|_| ());
            let p = unsafe { Allocator.alloc(l) };
            LATE.with(|late| late.0.set(p as usize));
            // (the lists were made by the first `alloc`, after LATE)
            let q = unsafe { Allocator.alloc(l) };
            unsafe { Allocator.dealloc(q, l) };
            held(c) == 1
        })
        .join();
        // (the thread ended through both destructors without a panic or an
        // abort, the late free going to the system)
        assert!(matches!(ok, Ok(true)));
    }

    #[test]
    fn a_thread_that_holds_none_frees_to_the_system() {
        let l = layout(64, 8);
        let c = class(l).unwrap();
        let held_after = std::thread::spawn(move || {
            let a = Allocator;
            let p = unsafe { a.alloc(l) };
            unsafe { a.dealloc(p, l) };
            assert!(held(c) >= 1);
            hold_none();
            // what it held went back, and what it frees now goes too
            assert_eq!(held(c), 0);
            let blocks: Vec<*mut u8> = (0..4).map(|_| unsafe { a.alloc(l) }).collect();
            for p in blocks {
                unsafe { a.dealloc(p, l) };
            }
            (held(c), CACHE.with(|k| k.borrow().kinds))
        })
        .join()
        .unwrap();
        assert_eq!(held_after, (0, [0, 0]));
    }

    #[test]
    fn while_the_lists_are_borrowed_the_system_serves() {
        // (a re-entry: the allocator called while this thread's lists are
        // in use goes to the system, and leaves the lists as they were)
        let a = Allocator;
        let l = layout(96, 16);
        let c = class(l).unwrap();
        let p = unsafe { a.alloc(l) };
        unsafe { a.dealloc(p, l) };
        let before = held(c);
        assert!(before >= 1);
        CACHE.with(|k| {
            let _borrowed = k.borrow_mut();
            // the list's block is not handed out, nor is a freed one kept
            let q = unsafe { a.alloc(l) };
            assert!(!q.is_null());
            unsafe { ptr::write_bytes(q, 1, 96) };
            unsafe { a.dealloc(q, l) };
            assert_eq!(release(), 0);
        });
        assert_eq!(held(c), before);
    }

    #[test]
    fn release_gives_this_threads_lists_back() {
        let a = Allocator;
        let l = layout(48, 8);
        let c = class(l).unwrap();
        let blocks: Vec<*mut u8> = (0..3).map(|_| unsafe { a.alloc(l) }).collect();
        for &p in &blocks {
            unsafe { a.dealloc(p, l) };
        }
        assert_eq!(held(c), 3);
        assert_eq!(release(), 3);
        assert_eq!(held(c), 0);
        assert_eq!(CACHE.with(|k| k.borrow().kinds), [0, 0]);
    }
}
