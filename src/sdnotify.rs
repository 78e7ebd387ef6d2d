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
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot notify systemd");
            return false;
        }
    };
    let path = PathBuf::from(path);
    // `@name`: an abstract socket
    let sent = if let Some(abs) = path.to_str().and_then(|p| p.strip_prefix('@')) {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abs.as_bytes())
            .and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
    } else {
        sock.send_to(msg.as_bytes(), &path)
    };
    match sent {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot notify systemd");
            false
        }
    }
}

/// The proxy serves (also sent by the new process of a binary upgrade, whose
/// `MAINPID` then takes over; the unit needs `NotifyAccess=all` for that).
pub fn ready() {
    notify(&format!("MAINPID={}\nREADY=1\n", std::process::id()));
}

/// A reload starts; `ready()` follows when it is over.
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
    (usec > 0).then(|| Duration::from_micros(usec / 2))
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
        assert_eq!(interval_of(Some("soon"), None, 7), None);
        assert_eq!(interval_of(None, None, 7), None);
    }
}
