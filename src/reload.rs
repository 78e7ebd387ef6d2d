//! `[global] watch_config`: reload when the config file changes.
//!
//! A Kubernetes ConfigMap volume changes by an atomic swap of a symlinked
//! directory (`rampart.toml -> ..data/rampart.toml`, `..data -> ..2026_11_29...`),
//! so the file's own mtime may never change: the watch follows the symlinks on
//! every look and compares what it finds (device, inode, size, mtime, ctime), then
//! the bytes. It polls twice a second (a handful of system calls, no extra crate,
//! and it works on every filesystem, which inotify does not for some network and
//! overlay mounts) and waits until a change has been still for one more look
//! before reloading, so an editor's half-written file is not read.

use crate::control::ControlMsg;
use crate::Shared;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const POLL: Duration = Duration::from_millis(500);

/// What identifies one version of the file as seen through its symlinks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    real: PathBuf,
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn look(path: &Path) -> Option<Seen> {
    let real = std::fs::canonicalize(path).ok()?;
    let m = std::fs::metadata(&real).ok()?;
    Some(Seen {
        real,
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// Watches `path` until `cancel`; asks the control task to reload after a change
/// (only while the config in force says `watch_config = true`).
pub async fn watch_file(path: PathBuf, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut applied = look(&path);
    let mut applied_bytes = std::fs::read(&path).ok();
    // A change seen at the last look, waiting to be still for one more.
    let mut pending: Option<Option<Seen>> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        let now = look(&path);
        if now == applied {
            pending = None;
            continue;
        }
        if pending.as_ref() != Some(&now) {
            pending = Some(now);
            continue;
        }
        // Still for one look: this version is the one to read.
        pending = None;
        applied = now;
        if !shared.config.load().global.watch_config {
            continue;
        }
        let bytes = std::fs::read(&path).ok();
        if bytes.is_none() || bytes == applied_bytes {
            // gone (a swap in progress: the next look sees the new one), or the
            // same text under a new inode
            continue;
        }
        applied_bytes = bytes;
        tracing::info!(path = %path.display(), "config file changed; reloading");
        if shared
            .control
            .send(ControlMsg::Reload {
                trigger: "file watch",
                reply: None,
            })
            .is_err()
        {
            return;
        }
    }
}
