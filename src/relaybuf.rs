//! The TCP relay's buffers, kept per thread. A session's two directions take
//! one each (the client's side the one its ClientHello was read into, when it
//! was read to route by) and give it back when done, so a
//! new connection zeroes no buffer: a fresh `vec![0; 32 KiB]` per direction
//! cost 66,000 of the 116,000 instructions callgrind counted for a TLS
//! connection passed through by its server name, and the former SNI peek's zeroed
//! 16 KiB another 16,000 (bench/RESULTS.md). What an earlier session left in
//! a buffer is never sent: a relay writes out only what it read into it. That
//! holds as long as its readers fill what they say they read (`ReadBuf::new`
//! takes the whole buffer as initialized, so a reader that advanced over bytes
//! it did not write would pass on an earlier session's): tokio's TcpStream,
//! the client socket (recv, then exactly what it returned), the PROXY
//! protocol's prefixed stream (put_slice) and tokio-rustls all do. A thread
//! keeps at most 64 spares (2 MiB) and never gives them back to the system.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Size of a relay buffer.
pub const RELAY_BUF: usize = 32 * 1024;
/// Spare buffers a thread keeps (2 MiB).
const KEEP: usize = 64;

thread_local! {
    static SPARE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A [`RELAY_BUF`] buffer from this thread's spares (or a new one), given
/// back on drop; or none (`RelayBuf::none`, empty).
pub struct RelayBuf(Box<[u8]>);

impl RelayBuf {
    pub fn take() -> RelayBuf {
        // (`try_with`: a thread that is ending allocates)
        let spare = SPARE.try_with(|s| s.borrow_mut().pop()).ok().flatten();
        RelayBuf(spare.unwrap_or_else(|| vec![0; RELAY_BUF].into_boxed_slice()))
    }

    /// No buffer (a direction that splices).
    pub fn none() -> RelayBuf {
        RelayBuf(Box::default())
    }
}

impl Drop for RelayBuf {
    fn drop(&mut self) {
        let b = std::mem::take(&mut self.0);
        if b.len() == RELAY_BUF {
            let _ = SPARE.try_with(|s| {
                let mut s = s.borrow_mut();
                if s.len() < KEEP {
                    s.push(b);
                }
            });
        }
    }
}

impl std::fmt::Debug for RelayBuf {
    // (its size: what it holds is a session's bytes, or an earlier one's)
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RelayBuf({} bytes)", self.0.len())
    }
}

impl Deref for RelayBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl DerefMut for RelayBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

/// What was read into a relay buffer and is still to be written on: its
/// first `len` bytes (a ClientHello read to route by, which the relay's
/// client direction starts from). Its fields are its own, so that `len` never
/// passes what was read into a buffer that may hold an earlier session's bytes.
#[derive(Debug)]
pub struct Filled {
    buf: RelayBuf,
    len: usize,
}

impl Filled {
    /// Nothing read yet, into a buffer taken for it.
    pub fn empty() -> Filled {
        Filled {
            buf: RelayBuf::take(),
            len: 0,
        }
    }

    /// `bytes` copied into a buffer taken for them (at most a buffer's worth).
    pub fn copied(bytes: &[u8]) -> Filled {
        let mut f = Filled::empty();
        let n = bytes.len().min(f.buf.len());
        f.buf[..n].copy_from_slice(&bytes[..n]);
        f.len = n;
        f
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the next read goes: after what was read, up to `max` bytes from
    /// the start (and never past the buffer). Empty once what was read reaches
    /// `max`: a caller that reads into it must stop before (a read into an
    /// empty slice returns 0, which would look like the peer's EOF).
    pub fn room(&mut self, max: usize) -> &mut [u8] {
        let end = max.min(self.buf.len());
        let start = self.len.min(end);
        &mut self.buf[start..end]
    }

    /// `n` more bytes were read into [`room`](Self::room). A read returns at
    /// most what it was given, so more is a bug here, and it panics rather
    /// than count bytes an earlier session left in the buffer.
    pub fn grew(&mut self, n: usize) {
        assert!(n <= self.buf.len() - self.len, "read past the room");
        self.len += n;
    }

    /// The buffer, and how much of it was read.
    pub fn into_parts(self) -> (RelayBuf, usize) {
        (self.buf, self.len)
    }
}

/// This thread's spare buffers (tests).
#[cfg(test)]
fn spares() -> usize {
    SPARE.with_borrow(Vec::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer given back is the next one taken, as it was left (no
    /// zeroing); a thread keeps at most KEEP; `none` is empty and keeps
    /// nothing.
    #[test]
    fn buffers_come_back_and_are_reused() {
        let before = spares();
        let mut a = RelayBuf::take();
        assert_eq!(a.len(), RELAY_BUF);
        a[0] = 7;
        let at = a.as_ptr();
        drop(a);
        assert_eq!(spares(), before + 1);
        let b = RelayBuf::take();
        assert_eq!((b.as_ptr(), b[0]), (at, 7));
        drop(b);
        let many: Vec<RelayBuf> = (0..KEEP + 10).map(|_| RelayBuf::take()).collect();
        drop(many);
        assert_eq!(spares(), KEEP);
        drop(RelayBuf::none());
        assert_eq!(spares(), KEEP);
        assert!(RelayBuf::none().is_empty());
    }

    /// A read goes after what was read, within the bound it is given and the
    /// buffer; what it says it read is what `bytes` gives, in order.
    #[test]
    fn what_was_read_is_kept_in_order_and_bounded() {
        let mut f = Filled::empty();
        assert_eq!((f.room(10).len(), f.is_empty()), (10, true));
        f.room(10)[..3].copy_from_slice(b"abc");
        f.grew(3);
        assert_eq!(f.room(10).len(), 7);
        f.room(10)[..2].copy_from_slice(b"de");
        f.grew(2);
        assert_eq!((f.bytes(), f.len()), (&b"abcde"[..], 5));
        // a bound under what was read, or past the buffer: no room, and none
        // past the buffer's end
        assert!(f.room(4).is_empty());
        assert_eq!(f.room(usize::MAX).len(), RELAY_BUF - 5);
        let big: Vec<u8> = (0..RELAY_BUF + 10).map(|i| i as u8).collect();
        let c = Filled::copied(&big);
        assert_eq!(c.bytes(), &big[..RELAY_BUF]);
        drop(c);
        let (buf, len) = Filled::copied(b"xy").into_parts();
        assert_eq!(&buf[..len], b"xy");
        drop(buf);
        // a buffer given back holds its last session's bytes; a new Filled in
        // it shows none of them
        let mut old = RelayBuf::take();
        old.fill(0xAA);
        let at = old.as_ptr();
        drop(old);
        let mut f = Filled::empty();
        assert_eq!(f.room(1).as_ptr(), at, "not the buffer given back");
        assert!(f.bytes().is_empty());
        f.room(3)[..1].copy_from_slice(b"z");
        f.grew(1);
        assert_eq!(f.bytes(), b"z");
    }

    #[test]
    #[should_panic(expected = "read past the room")]
    fn a_read_said_to_be_longer_than_its_room_panics() {
        let mut f = Filled::empty();
        f.grew(RELAY_BUF);
        f.grew(1);
    }
}
