//! splice(2) through a kernel pipe: the bytes of a plain TCP session go from one
//! socket to the other without being copied into the proxy's memory (HAProxy's
//! `option splice-auto`). Used by [`tcp::relay_tcp`](super::tcp::relay_tcp) once a
//! direction carries bulk data, and by the HTTP fast path for the rest of a long
//! response body between plain sockets ([`body`]).
//!
//! The two calls here are the only `unsafe` of the relay. Both are plain system
//! calls on descriptors: no user memory is read or written by `splice`, and
//! `pipe2` writes two integers into an array we own.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes asked of one splice into the pipe. The kernel moves at most what the
/// pipe holds, so this is a ceiling, not a buffer size.
const CHUNK: usize = 1 << 20;

/// The pipe's capacity, asked for with F_SETPIPE_SZ (the default is 64 KiB): fewer
/// splices per megabyte. Its pages are taken only while they hold data. A refusal
/// (a user over `fs.pipe-user-pages-soft`) keeps the default.
const PIPE_SIZE: libc::c_int = 256 << 10;

/// A non-blocking pipe owned by one direction of a session: its two ends close
/// with it.
#[derive(Debug)]
pub(super) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    pub(super) fn new() -> io::Result<Pipe> {
        let mut fds: [libc::c_int; 2] = [-1; 2];
        // SAFETY: `fds` is an array of two c_ints that lives across the call,
        // which is all pipe2 writes to.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both are open descriptors that nothing else
        // owns; each is wrapped once and closed once (by its OwnedFd).
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ takes an int and touches no memory of ours; the
        // descriptor is open (owned just above). Failure leaves the pipe as it was.
        let _ = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        Ok(Pipe { read, write })
    }

    /// Moves what `from` has (up to the pipe's capacity) into the pipe. Ok(0):
    /// `from` reached EOF. WouldBlock: `from` has nothing, as long as the pipe was
    /// empty (which the caller makes sure of: a full pipe also says WouldBlock).
    pub(super) fn fill_from(&self, from: &impl AsRawFd) -> io::Result<usize> {
        self.fill_at_most(from, CHUNK)
    }

    /// As `fill_from`, taking at most `len` bytes of `from` (the rest of a body:
    /// what follows it is not the pipe's).
    pub(super) fn fill_at_most(&self, from: &impl AsRawFd, len: usize) -> io::Result<usize> {
        splice(from.as_raw_fd(), self.write.as_raw_fd(), len.min(CHUNK))
    }

    /// Moves up to `len` bytes held in the pipe to `to`. WouldBlock: `to` is full
    /// (the pipe holds `len` > 0 bytes, so it is not the one that would block).
    pub(super) fn drain_to(&self, to: &impl AsRawFd, len: usize) -> io::Result<usize> {
        splice(self.read.as_raw_fd(), to.as_raw_fd(), len)
    }
}

/// How [`body`] ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Spliced {
    /// All of it moved (the server's EOF, when no length was given).
    Done,
    /// The server closed early, failed, or sent nothing for its timeout.
    ServerFailed,
    /// The client failed, or took nothing for its timeout.
    ClientFailed,
    /// No pipe could be had, or splice is refused here; the pipe held nothing
    /// then, so the caller copies the rest as usual.
    Refused,
}

/// Moves a response body's rest, `left` bytes (`None`: until the server's
/// EOF), from the server's socket to the client's through a pipe, without
/// copying it into the proxy's memory. Returns how it ended and the bytes
/// moved. Waits at most `server_timeout` for the server's next bytes and
/// `client_timeout` for the client to take them, as the copying path does.
pub(super) async fn body(
    from: &TcpStream,
    to: &TcpStream,
    mut left: Option<u64>,
    server_timeout: Duration,
    client_timeout: Duration,
) -> (Spliced, u64) {
    let pipe = match Pipe::new() {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(error = %e, "no pipe to splice a body through; copying");
            return (Spliced::Refused, 0);
        }
    };
    let mut moved = 0u64;
    loop {
        let want = match left {
            Some(0) => return (Spliced::Done, moved),
            Some(l) => usize::try_from(l).unwrap_or(usize::MAX),
            None => CHUNK,
        };
        let held = loop {
            // poll_read_ready, not readable(): it spends the task's budget, so a
            // transfer both sides keep ready still lets the worker's other
            // connections run
            let ready = std::future::poll_fn(|cx| from.poll_read_ready(cx));
            match tokio::time::timeout(server_timeout, ready).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return (Spliced::ServerFailed, moved),
            }
            // The pipe is empty, so WouldBlock is about `from`: try_io clears
            // its readiness and the next poll_read_ready waits for more.
            match from.try_io(Interest::READABLE, || pipe.fill_at_most(from, want)) {
                Ok(0) if left.is_none() => return (Spliced::Done, moved),
                Ok(0) => return (Spliced::ServerFailed, moved),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if refused(&e) => {
                    tracing::debug!(error = %e, "splice refused; copying");
                    return (Spliced::Refused, moved);
                }
                Err(_) => return (Spliced::ServerFailed, moved),
            }
        };
        let mut rest = held;
        while rest > 0 {
            let ready = std::future::poll_fn(|cx| to.poll_write_ready(cx));
            match tokio::time::timeout(client_timeout, ready).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return (Spliced::ClientFailed, moved),
            }
            match to.try_io(Interest::WRITABLE, || pipe.drain_to(to, rest)) {
                Ok(0) => return (Spliced::ClientFailed, moved),
                Ok(n) => {
                    rest -= n;
                    moved += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return (Spliced::ClientFailed, moved),
            }
        }
        if let Some(l) = left.as_mut() {
            *l -= held as u64;
        }
    }
}

/// Whether splice is not supported for these descriptors (nothing moved: the
/// caller may copy instead, without losing a byte).
pub(super) fn refused(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS))
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both offsets are null (what splice requires of sockets and pipes),
    // so the kernel touches no memory of ours. The descriptors are borrowed from
    // a socket and a Pipe the caller holds across the call; a closed one would be
    // EBADF, not undefined behaviour.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // n >= 0 here, and at most `len`
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    /// What descriptor `fd` of this process is ("pipe:[inode]"), if open.
    fn what(fd: RawFd) -> Option<std::path::PathBuf> {
        std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()
    }

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn moves_bytes_between_sockets_and_closes_its_descriptors() {
        let (mut client, from) = pair();
        let (to, mut server) = pair();
        from.set_nonblocking(true).unwrap();
        let pipe = Pipe::new().unwrap();
        let ends = [pipe.read.as_raw_fd(), pipe.write.as_raw_fd()];
        let names = ends.map(what);
        assert!(names.iter().all(|n| n
            .as_ref()
            .is_some_and(|p| p.to_string_lossy().starts_with("pipe:"))));
        // nothing sent yet, empty pipe: WouldBlock means the socket is empty
        let e = pipe.fill_from(&from).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sender = {
            let data = data.clone();
            std::thread::spawn(move || {
                client.write_all(&data).unwrap();
                client.shutdown(std::net::Shutdown::Write).unwrap();
            })
        };
        let mut moved = 0;
        loop {
            match pipe.fill_from(&from) {
                Ok(0) => break,
                Ok(mut held) => {
                    while held > 0 {
                        let n = pipe.drain_to(&to, held).unwrap();
                        held -= n;
                        moved += n;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("splice: {e}"),
            }
        }
        sender.join().unwrap();
        drop(to);
        let mut got = Vec::new();
        server.read_to_end(&mut got).unwrap();
        assert_eq!(moved, data.len());
        assert!(got == data, "the bytes arrived changed");
        drop(pipe);
        // closed: the numbers are free (or, with tests running beside this one,
        // already another descriptor)
        for (fd, name) in ends.into_iter().zip(names) {
            assert_ne!(what(fd), name, "descriptor {fd} is still the pipe");
        }
    }
}
