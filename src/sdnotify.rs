//! systemd's notify protocol (`Type=notify`): datagrams to `$NOTIFY_SOCKET`.
//!
//! - `READY=1` (with `MAINPID`) once the proxy serves;
//! - `RELOADING=1` with `MONOTONIC_USEC` when a reload starts, then `READY=1`
//!   when it is applied or refused (systemd's `Type=notify-reload` protocol);
//! - `STOPPING=1` when shutdown begins;
//! - `WATCHDOG=1` every half of `$WATCHDOG_USEC`, when systemd asks for it
//!   (`WatchdogSec=`), from the control task's runtime: a wedged control loop
//!   stops the pings and systemd restarts the service.
//!
//! Without `$NOTIFY_SOCKET` every call is a no-op. A send that fails is logged
//! once per message kind at most, and never stops the proxy.

use std::path::PathBuf;
use std::time::Duration;

/// Sends one notification (lines `KEY=VALUE`). Returns whether it was sent.
pub fn notify(msg: &str) -> bool {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(path) => notify_to(&PathBuf::from(path), msg),
        None => false,
    }
}

/// [`notify`] to the socket at `path`. The send never blocks: a receiver
/// that stopped reading (its queue holds `net.unix.max_dgram_qlen`, 10 by
/// default) must not stall the control task that reloads or the watchdog.
fn notify_to(path: &std::path::Path, msg: &str) -> bool {
    let sent = std::os::unix::net::UnixDatagram::unbound().and_then(|sock| {
        sock.set_nonblocking(true)?;
        // `@name`: an abstract socket
        match path.to_str().and_then(|p| p.strip_prefix('@')) {
            Some(abs) => {
                use std::os::linux::net::SocketAddrExt;
                let a = std::os::unix::net::SocketAddr::from_abstract_name(abs.as_bytes())?;
                sock.send_to_addr(msg.as_bytes(), &a)
            }
            None => sock.send_to(msg.as_bytes(), path),
        }
    });
    match sent {
        Ok(_) => true,
        Err(e) => {
            if first_failure(msg) {
                tracing::warn!(error = %e, "cannot notify systemd (logged once for this kind of message)");
            }
            false
        }
    }
}

/// Whether this is the first failed send of `msg`'s kind (its first key).
fn first_failure(msg: &str) -> bool {
    const KINDS: [&str; 4] = ["MAINPID", "RELOADING", "STOPPING", "WATCHDOG"];
    static WARNED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
    let key = msg.split(['=', '\n']).next().unwrap_or("");
    let bit = 1u8 << KINDS.iter().position(|k| *k == key).unwrap_or(KINDS.len());
    WARNED.fetch_or(bit, std::sync::atomic::Ordering::Relaxed) & bit == 0
}

/// The proxy serves (also sent by the new process of a binary upgrade, whose
/// `MAINPID` then takes over; the unit needs `NotifyAccess=all` for that).
pub fn ready() {
    notify(&format!("MAINPID={}\nREADY=1\n", std::process::id()));
}

/// A reload is over (READY=1 alone: the main process is the one it was).
pub fn reloaded() {
    notify("READY=1\n");
}

/// A reload starts; `reloaded()` follows when it is over.
pub fn reloading() {
    notify(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}\n",
        crate::clock::now_us()
    ));
}

/// Shutdown begins.
pub fn stopping() {
    notify("STOPPING=1\n");
}

/// How often systemd wants `WATCHDOG=1`: half its `WATCHDOG_USEC`, if it asks
/// this process (`WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    interval_of(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn interval_of(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.parse().ok()?;
    if let Some(pid) = pid {
        if pid.parse::<u32>().ok()? != me {
            return None;
        }
    }
    // (a period under 2 µs would be zero, which tokio's interval refuses)
    (usec >= 2).then(|| Duration::from_micros(usec / 2))
}

/// Pings the watchdog until `stop`.
pub async fn watchdog(every: Duration, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                notify("WATCHDOG=1\n");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receiver_that_stopped_reading_never_blocks_a_sender() {
        let dir = std::env::temp_dir().join(format!("rampart-sdnotify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let receiver = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        // far more than the kernel's queue holds (10 by default), none read
        let (tx, rx) = std::sync::mpsc::channel();
        let sender = std::thread::spawn(move || {
            let sent = (0..100)
                .filter(|_| notify_to(&path, "WATCHDOG=1\n"))
                .count();
            let _ = tx.send(sent);
        });
        let sent = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a send blocked on a full queue");
        sender.join().unwrap();
        assert!((1..100).contains(&sent), "{sent} of 100 sent");
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_watchdog_interval_is_half_of_what_systemd_asks() {
        let two = Some(Duration::from_secs(2));
        assert_eq!(interval_of(Some("4000000"), None, 7), two);
        assert_eq!(interval_of(Some("4000000"), Some("7"), 7), two);
        assert_eq!(
            interval_of(Some("4000000"), Some("1"), 7),
            None,
            "another process's"
        );
        assert_eq!(interval_of(Some("0"), None, 7), None);
        // half of 1 µs is no period at all (tokio's interval would panic)
        assert_eq!(interval_of(Some("1"), None, 7), None);
        assert_eq!(
            interval_of(Some("2"), None, 7),
            Some(Duration::from_micros(1))
        );
        assert_eq!(interval_of(Some("soon"), None, 7), None);
        assert_eq!(interval_of(None, None, 7), None);
    }
}
