//! WebSocket (or any Upgrade) tunnels: once both sides upgraded, bytes are
//! relayed both ways until both close, the tunnel's idle timeout, or its
//! listener's grace ends.

use super::body::ReqLog;
use super::conn::ConnCtx;
use crate::accesslog::End;
use crate::pool::ServerGuard;
use hyper_util::rt::TokioIo;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// WebSocket (or any Upgrade) tunnel: copies bytes both ways until both sides close.
pub(super) async fn tunnel(
    conn: Arc<ConnCtx>,
    client: hyper::upgrade::OnUpgrade,
    server: hyper::upgrade::OnUpgrade,
    guard: ServerGuard,
    log: Option<Box<ReqLog>>,
    idle: Duration,
) {
    let (c, s) = match tokio::try_join!(client, server) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            if let Some(mut l) = log {
                l.finish(0, End::ClientAbort);
            }
            return;
        }
    };
    let mut c = TokioIo::new(c);
    let mut s = TokioIo::new(s);
    let out = tokio::select! {
        out = super::tcp::relay(&mut c, &mut s, idle) => out,
        _ = conn.shared.kill.cancelled() => {
            // the log line (dropped unwritten) says client_abort
            tracing::debug!(peer = %conn.peer, "tunnel cut: its listener's grace is over");
            return;
        }
    };
    let st = &guard.server().state;
    st.traffic.bytes_in.fetch_add(out.a_to_b, Ordering::Relaxed);
    st.traffic
        .bytes_out
        .fetch_add(out.b_to_a, Ordering::Relaxed);
    if let Some(mut l) = log {
        let end = match out.end {
            End::Ok => End::Upgraded,
            other => other,
        };
        l.finish(out.b_to_a, end);
    }
    drop(guard);
}
