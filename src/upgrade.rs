//! Binary upgrade without refusing a connection (`rampart upgrade`, SIGUSR2,
//! `POST /api/upgrade`).
//!
//! The running process starts the binary at its own path with its own arguments
//! and `RAMPART_UPGRADE_SOCKET` naming a unix socket only it and its child can
//! reach. Over that socket the new process takes the listening sockets (file
//! descriptors, SCM_RIGHTS: the kernel objects themselves, so their accept queues
//! and every connection waiting in them come along), the admin socket, the HA
//! heartbeat socket and the runtime state (health, admin state, weights,
//! breakers, counters, and whether this node is the HA MASTER). When the new
//! process serves, it says `ready`; the old one then stops accepting, drains its
//! connections within `shutdown_grace` and exits 0. If the new process fails
//! before that, the old one keeps serving and says why.
//!
//! As HAProxy's `-x`, Envoy's hot restart and Pingora's upgrade pass sockets;
//! none of them carries health across.

use crate::pool::Carried;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// Names the handover socket in the new process's environment.
pub const ENV: &str = "RAMPART_UPGRADE_SOCKET";
/// How long the new process may take to connect and then to serve.
const TAKEOVER: Duration = Duration::from_secs(60);
/// File descriptors per message (the kernel's limit is 253).
const FDS_PER_MSG: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("rampart runs as PID 1 (a container's init): a new binary would outlive the container's process; roll the container image instead (config changes: SIGHUP or `rampart reload`)")]
    Pid1,
    #[error("an upgrade is already in progress")]
    Busy,
    #[error("this process is shutting down: start the new one instead")]
    Stopping,
    #[error("cannot find this program's path: {0}")]
    Exe(#[source] io::Error),
    #[error("cannot start {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the new process exited ({0}) before taking over; this one keeps serving (its reasons are in the log above)")]
    Exited(String),
    #[error(
        "the new process did not take over within {0:?}; it was stopped and this one keeps serving"
    )]
    Timeout(Duration),
    #[error("the new process could not start: {0}")]
    Failed(String),
    #[error("handover: {0}")]
    Io(#[from] io::Error),
    #[error("handover: unreadable message: {0}")]
    Message(#[from] serde_json::Error),
}

/// What the old process hands over besides file descriptors; the descriptors
/// follow in the order listed here: each listener's sockets, then the admin
/// socket, then the HA socket.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Handover {
    /// Listening addresses and how many sockets each has (one per worker).
    pub listeners: Vec<(SocketAddr, usize)>,
    pub admin: Option<SocketAddr>,
    /// The HA heartbeat socket's address, and whether this node is MASTER.
    pub ha: Option<(SocketAddr, bool)>,
    /// (pool, address, state) of every server.
    pub servers: Vec<(String, SocketAddr, Carried)>,
    /// Quota use in the current windows, as at the handover (fresher than
    /// the state file, written at most once a second).
    #[serde(default)]
    pub quotas: Vec<crate::statefile::SavedQuota>,
}

/// What the new process got.
#[derive(Debug, Default)]
pub struct Inherited {
    pub listeners: HashMap<SocketAddr, Vec<std::net::TcpListener>>,
    pub admin: Option<(SocketAddr, std::net::TcpListener)>,
    pub ha: Option<(SocketAddr, std::net::UdpSocket, bool)>,
    pub servers: Vec<(String, SocketAddr, Carried)>,
    pub quotas: Vec<crate::statefile::SavedQuota>,
}

/// The new process's end of the handover, to say `ready` (or why not).
pub struct Taken {
    stream: UnixStream,
}

impl Taken {
    pub fn ready(mut self) {
        if let Err(e) = self.stream.write_all(b"ready\n") {
            tracing::error!(error = %e, "cannot tell the old process we are ready");
        }
    }

    pub fn failed(mut self, why: &str) {
        let line = why.replace('\n', " ");
        let _ = self
            .stream
            .write_all(format!("failed: {line}\n").as_bytes());
    }
}

/// In a process started by an upgrade: takes the sockets and state over.
/// `None` when this process was not started by an upgrade.
pub fn take_over() -> Result<Option<(Inherited, Taken)>, UpgradeError> {
    let Some(path) = std::env::var_os(ENV) else {
        return Ok(None);
    };
    // Not for our own children (a later upgrade sets its own).
    std::env::remove_var(ENV);
    let mut stream = UnixStream::connect(&path)?;
    stream.set_read_timeout(Some(TAKEOVER))?;
    let mut len = [0u8; 8];
    stream.read_exact(&mut len)?;
    let len = u64::from_be_bytes(len);
    if len > 256 << 20 {
        return Err(UpgradeError::Failed(format!("message of {len} bytes")));
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body)?;
    let h: Handover = serde_json::from_slice(&body)?;
    let count = h.listeners.iter().map(|(_, n)| n).sum::<usize>()
        + usize::from(h.admin.is_some())
        + usize::from(h.ha.is_some());
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(count);
    while fds.len() < count {
        let got = recv_fds(&stream, count - fds.len())?;
        if got.is_empty() {
            return Err(UpgradeError::Failed(
                "the old process closed the handover early".into(),
            ));
        }
        fds.extend(got);
    }
    let mut fds = fds.into_iter();
    let mut inh = Inherited::default();
    for (addr, n) in h.listeners {
        let socks = (&mut fds)
            .take(n)
            .map(std::net::TcpListener::from)
            .collect();
        inh.listeners.insert(addr, socks);
    }
    if let (Some(addr), Some(fd)) = (h.admin, h.admin.and_then(|_| fds.next())) {
        inh.admin = Some((addr, std::net::TcpListener::from(fd)));
    }
    if let (Some((addr, master)), Some(fd)) = (h.ha, h.ha.and_then(|_| fds.next())) {
        inh.ha = Some((addr, std::net::UdpSocket::from(fd), master));
    }
    inh.servers = h.servers;
    inh.quotas = h.quotas;
    tracing::info!(
        listeners = inh.listeners.len(),
        servers = inh.servers.len(),
        quotas = inh.quotas.len(),
        "took over from the old process"
    );
    stream.set_read_timeout(None)?;
    Ok(Some((inh, Taken { stream })))
}

/// In the running process: starts the new binary and hands everything over.
/// Returns the new process's id once it serves; on any failure the new process
/// is stopped and this one goes on as before.
/// `fresh` completes the handover with what changes by the request (quota
/// counts) at the moment it is sent, once the new process has connected.
pub async fn hand_over(
    mut handover: Handover,
    fds: Vec<std::os::fd::OwnedFd>,
    fresh: impl FnOnce(&mut Handover),
) -> Result<u32, UpgradeError> {
    if std::process::id() == 1 {
        return Err(UpgradeError::Pid1);
    }
    let exe = current_exe()?;
    let dir = private_dir()?;
    let sock_path = dir.join("upgrade.sock");
    let listener = tokio::net::UnixListener::bind(&sock_path)?;
    let mut child = tokio::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .env(ENV, &sock_path)
        // systemd's WATCHDOG_PID names this process: the new one, which
        // becomes the main process (MAINPID=), would take it as someone
        // else's watchdog and never ping, and systemd would kill it
        // WatchdogSec after this one is gone
        .env_remove("WATCHDOG_PID")
        .kill_on_drop(false)
        .spawn()
        .map_err(|source| UpgradeError::Spawn {
            path: exe.clone(),
            source,
        })?;
    let pid = child.id().unwrap_or(0);
    tracing::info!(pid, path = %exe.display(), "started the new process; handing over");
    let result = async {
        // 1. It connects.
        let stream = tokio::select! {
            r = listener.accept() => r?.0,
            st = child.wait() => return Err(UpgradeError::Exited(describe(st))),
            _ = tokio::time::sleep(TAKEOVER) => return Err(UpgradeError::Timeout(TAKEOVER)),
        };
        // 2. It gets the state and the sockets (blocking writes, off the runtime).
        fresh(&mut handover);
        let std_stream = stream.into_std()?;
        std_stream.set_nonblocking(false)?;
        let std_stream =
            tokio::task::spawn_blocking(move || -> Result<UnixStream, UpgradeError> {
                let body = serde_json::to_vec(&handover)?;
                let mut s = std_stream;
                s.write_all(&(body.len() as u64).to_be_bytes())?;
                s.write_all(&body)?;
                let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
                for chunk in raw.chunks(FDS_PER_MSG) {
                    send_fds(&s, chunk)?;
                }
                drop(fds);
                Ok(s)
            })
            .await
            .map_err(|e| UpgradeError::Failed(e.to_string()))??;
        std_stream.set_nonblocking(true)?;
        let stream = tokio::net::UnixStream::from_std(std_stream)?;
        // 3. It says it serves.
        let mut line = Vec::new();
        let read = async {
            use tokio::io::AsyncReadExt;
            let mut stream = stream;
            let mut b = [0u8; 1];
            while stream.read(&mut b).await? == 1 && b[0] != b'\n' {
                line.push(b[0]);
            }
            Ok::<_, io::Error>(())
        };
        tokio::select! {
            r = read => r?,
            st = child.wait() => return Err(UpgradeError::Exited(describe(st))),
            _ = tokio::time::sleep(TAKEOVER) => return Err(UpgradeError::Timeout(TAKEOVER)),
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        match line.as_str() {
            "ready" => Ok(pid),
            "" => Err(UpgradeError::Exited(describe(child.wait().await))),
            other => Err(UpgradeError::Failed(
                other.strip_prefix("failed: ").unwrap_or(other).to_string(),
            )),
        }
    }
    .await;
    let _ = std::fs::remove_file(&sock_path);
    let _ = std::fs::remove_dir(&dir);
    if result.is_err() {
        // It may hold our sockets: stop it (our own copies are unaffected).
        let _ = child.start_kill();
        let _ = child.wait().await;
    } else {
        // Reap it if it ever exits while we still run (we exit soon).
        let span = tracing::info_span!("upgrade_reaper", pid = child.id());
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let _ = child.wait().await;
            },
            span,
        ));
    }
    result
}

fn describe(st: io::Result<std::process::ExitStatus>) -> String {
    match st {
        Ok(s) => s.to_string(),
        Err(e) => e.to_string(),
    }
}

/// This program's path, as the kernel knows it; if the file was replaced (the
/// usual way to upgrade), the path it was started from.
fn current_exe() -> Result<PathBuf, UpgradeError> {
    let p = std::env::current_exe().map_err(UpgradeError::Exe)?;
    let s = p.to_string_lossy();
    Ok(match s.strip_suffix(" (deleted)") {
        Some(orig) => PathBuf::from(orig),
        None => p,
    })
}

/// A directory only this user can enter, for the handover socket.
fn private_dir() -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::var_os("RUNTIME_DIRECTORY")
        .or_else(|| std::env::var_os("XDG_RUNTIME_DIR"))
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!(
        "rampart-upgrade-{}-{}",
        std::process::id(),
        crate::clock::now_ms()
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// A zeroed, 8-byte aligned buffer for one control message of `payload` bytes,
/// and its size.
fn control_buffer(payload: usize) -> (usize, Vec<u64>) {
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(payload as u32) } as usize;
    (space, vec![0u64; space.div_ceil(8)])
}

/// A message of one byte (`iov`) and the control buffer `cbuf` (`space` bytes);
/// both must outlive its use.
fn message(iov: &mut libc::iovec, cbuf: &mut [u64], space: usize) -> libc::msghdr {
    // SAFETY: msghdr is plain data (zero is a valid value for every field).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    msg
}

/// Sends `fds` (with one byte of data) over a unix stream.
fn send_fds(s: &UnixStream, fds: &[RawFd]) -> io::Result<()> {
    let mut byte = [b'F'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let payload = std::mem::size_of_val(fds);
    let (space, mut cbuf) = control_buffer(payload);
    let msg = message(&mut iov, &mut cbuf, space);
    // SAFETY: the control buffer is `space` bytes, enough for one cmsg holding
    // `fds`; CMSG_FIRSTHDR/CMSG_DATA point into it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(payload as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), payload);
    }
    // SAFETY: msg is fully initialised and points at live buffers.
    let n = unsafe { libc::sendmsg(s.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives up to `max` file descriptors sent by `send_fds` (empty at EOF).
fn recv_fds(s: &UnixStream, max: usize) -> io::Result<Vec<OwnedFd>> {
    let max = max.min(FDS_PER_MSG);
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let payload = max * std::mem::size_of::<RawFd>();
    let (space, mut cbuf) = control_buffer(payload);
    let mut msg = message(&mut iov, &mut cbuf, space);
    // SAFETY: msg points at live buffers of the sizes it states.
    let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    if n == 0 {
        return Ok(out);
    }
    // SAFETY: the kernel filled the control buffer; CMSG_* walk what it wrote.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(
                        data.add(i * std::mem::size_of::<RawFd>()).cast::<RawFd>(),
                    );
                    out.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_descriptors_cross_a_unix_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
        send_fds(&a, &[l1.as_raw_fd(), l2.as_raw_fd()]).unwrap();
        let got = recv_fds(&b, 10).unwrap();
        assert_eq!(got.len(), 2);
        let got: Vec<std::net::TcpListener> =
            got.into_iter().map(std::net::TcpListener::from).collect();
        assert_eq!(got[0].local_addr().unwrap(), a1);
        assert_eq!(got[1].local_addr().unwrap(), a2);
        // the same socket: a connection queued on it is accepted through the copy
        drop(l1);
        let _c = std::net::TcpStream::connect(a1).unwrap();
        got[0].set_nonblocking(false).unwrap();
        assert!(got[0].accept().is_ok());
        drop(a);
        assert!(recv_fds(&b, 10).unwrap().is_empty(), "EOF");
    }
}
