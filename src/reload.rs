//! `[global] watch_config`: reload when the config file, or a certificate,
//! key or CA file it names, changes.
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
use crate::control::Shared;
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

/// The files a config is read from: the config file and the certificate,
/// key and CA files it names.
fn files(path: &Path, shared: &Shared) -> Vec<PathBuf> {
    let mut v = vec![path.to_path_buf()];
    v.extend(shared.config.load().tls_files());
    v
}

/// Watches `path` and the files it names (certificates) until `cancel`; asks
/// the control task to reload after a change (only while the config in force
/// says `watch_config = true`).
pub async fn watch_file(path: PathBuf, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut watched = files(&path, &shared);
    let mut applied: Vec<Option<Seen>> = watched.iter().map(|p| look(p)).collect();
    let mut applied_bytes: Vec<Option<Vec<u8>>> =
        watched.iter().map(|p| std::fs::read(p).ok()).collect();
    // A change seen at the last look, waiting to be still for one more.
    let mut pending: Option<Vec<Option<Seen>>> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        // a reload may have changed which certificate files the config names
        let now_files = files(&path, &shared);
        if now_files != watched {
            watched = now_files;
            applied = watched.iter().map(|p| look(p)).collect();
            applied_bytes = watched.iter().map(|p| std::fs::read(p).ok()).collect();
            pending = None;
            continue;
        }
        let now: Vec<Option<Seen>> = watched.iter().map(|p| look(p)).collect();
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
        let bytes: Vec<Option<Vec<u8>>> = watched.iter().map(|p| std::fs::read(p).ok()).collect();
        if bytes.iter().any(Option::is_none) || bytes == applied_bytes {
            // gone (a swap in progress: the next look sees the new one), or the
            // same text under a new inode
            continue;
        }
        applied_bytes = bytes;
        let changed: Vec<String> = watched.iter().map(|p| p.display().to_string()).collect();
        tracing::info!(files = ?changed, "config or certificate file changed; reloading");
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
