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

/// One watched file: what was seen of it (and its bytes) at the last look
/// that was acted on.
struct Watched {
    path: PathBuf,
    seen: Option<Seen>,
    bytes: Option<Vec<u8>>,
}

impl Watched {
    /// `path` as it is now (missing, perhaps).
    fn now(path: PathBuf) -> Watched {
        Watched {
            seen: look(&path),
            bytes: std::fs::read(&path).ok(),
            path,
        }
    }
}

/// The files to watch: the config file, the certificate, key and CA files the
/// config in force names, and those `named` by the config text last read for
/// a reload, which a refused config may name before they exist.
fn files(path: &Path, shared: &Shared, named: &[PathBuf]) -> Vec<PathBuf> {
    let mut names = shared.config.load().tls_files();
    names.extend(named.iter().cloned());
    names.sort();
    names.dedup();
    let mut v = vec![path.to_path_buf()];
    v.extend(names.into_iter().filter(|p| p != path));
    v
}

/// Makes `watched` the files of `list`: one still in it keeps what was seen of
/// it, a new one starts from what it is now. Whether the list changed.
fn follow(watched: &mut Vec<Watched>, list: Vec<PathBuf>) -> bool {
    if list.len() == watched.len() && list.iter().zip(watched.iter()).all(|(p, w)| *p == w.path) {
        return false;
    }
    let mut old = std::mem::take(watched);
    *watched = list
        .into_iter()
        .map(|p| match old.iter().position(|w| w.path == p) {
            Some(i) => old.swap_remove(i),
            None => Watched::now(p),
        })
        .collect();
    true
}

/// The `tls` tables of the `[[listener]]` or `[[pool]]` entries of `doc`.
fn tls_tables<'a>(doc: &'a toml::Table, key: &str) -> Vec<&'a toml::Value> {
    doc.get(key)
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.get("tls"))
        .collect()
}

/// The certificate, key and CA files a config text names, as
/// `Config::tls_files` lists them, but read from the TOML alone, unvalidated:
/// a config a reload refuses (for a file it names that does not exist yet,
/// say) names its files too. Relative paths are relative to the config file's
/// folder, as `config::load` takes them. None from text that is not TOML.
fn named_files(path: &Path, text: &[u8]) -> Vec<PathBuf> {
    let Some(doc) = std::str::from_utf8(text)
        .ok()
        .and_then(|t| toml::from_str::<toml::Table>(t).ok())
    else {
        return Vec::new();
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let mut v = Vec::new();
    let mut add = |file: Option<&toml::Value>| {
        if let Some(f) = file.and_then(toml::Value::as_str) {
            let f = Path::new(f);
            v.push(if f.is_absolute() {
                f.to_path_buf()
            } else {
                base.join(f)
            });
        }
    };
    for tls in tls_tables(&doc, "listener") {
        let certs = tls.get("cert").and_then(toml::Value::as_array);
        for c in certs.into_iter().flatten() {
            match c {
                toml::Value::Table(pair) => {
                    add(pair.get("path"));
                    add(pair.get("key"));
                }
                c => add(Some(c)),
            }
        }
        add(tls.get("client_ca"));
    }
    for tls in tls_tables(&doc, "pool") {
        let verify = tls.get("verify").and_then(toml::Value::as_bool);
        if verify != Some(false) {
            add(tls.get("ca").filter(|c| c.as_str() != Some("system")));
        }
        add(tls.get("cert"));
        add(tls.get("key"));
    }
    // a postgres check's own CA
    let pools = doc.get("pool").and_then(toml::Value::as_array);
    for health in pools.into_iter().flatten().filter_map(|p| p.get("health")) {
        add(health.get("ca").filter(|c| c.as_str() != Some("system")));
    }
    v.sort();
    v.dedup();
    v
}

/// Watches `path` and the files it names (certificates) until `cancel`; asks
/// the control task to reload after a change (only while the config in force
/// says `watch_config = true`).
///
/// A file that went missing is a change like any other: once the files have
/// been still for one more look, the config is reloaded all the same (if the
/// config still names the file, the reload is refused with its key and file,
/// and the config in force keeps serving). The files watched are those of the
/// config in force and those of the config text last read for a reload, so a
/// config refused for naming a file that does not exist yet is read again
/// when that file appears. A refused config is not read again until one of
/// its files changes.
pub async fn watch_file(path: PathBuf, shared: Arc<Shared>, cancel: CancellationToken) {
    // the files named by the config text last read for a reload
    let mut named: Vec<PathBuf> = Vec::new();
    let mut watched: Vec<Watched> = files(&path, &shared, &named)
        .into_iter()
        .map(Watched::now)
        .collect();
    // A change seen at the last look, waiting to be still for one more.
    let mut pending: Option<Vec<Option<Seen>>> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        // a reload may have changed which certificate files the config names
        if follow(&mut watched, files(&path, &shared, &named)) {
            pending = None;
            continue;
        }
        let now: Vec<Option<Seen>> = watched.iter().map(|w| look(&w.path)).collect();
        if watched.iter().zip(&now).all(|(w, seen)| w.seen == *seen) {
            pending = None;
            continue;
        }
        if pending.as_ref() != Some(&now) {
            pending = Some(now);
            continue;
        }
        // Still for one look: this version is the one to read.
        pending = None;
        for (w, seen) in watched.iter_mut().zip(now) {
            w.seen = seen;
        }
        if !shared.config.load().global.watch_config {
            continue;
        }
        let bytes: Vec<Option<Vec<u8>>> = watched
            .iter()
            .map(|w| std::fs::read(&w.path).ok())
            .collect();
        if watched.iter().zip(&bytes).all(|(w, b)| w.bytes == *b) {
            // the same text under a new inode
            continue;
        }
        for (w, b) in watched.iter_mut().zip(bytes) {
            w.bytes = b;
        }
        // The files the text about to be read names are watched from now on,
        // from what they are now, whether the reload takes it or not.
        // (the config file is the first)
        named = watched
            .first()
            .and_then(|w| w.bytes.as_deref())
            .map(|text| named_files(&path, text))
            .unwrap_or_default();
        follow(&mut watched, files(&path, &shared, &named));
        let changed: Vec<String> = watched
            .iter()
            .map(|w| match w.seen {
                Some(_) => w.path.display().to_string(),
                None => format!("{} (missing)", w.path.display()),
            })
            .collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_a_config_names_are_found_without_validating_it() {
        let text = r#"
[global]
no_such_key = 1

[[listener]]
name = "web"
  [listener.tls]
  cert = ["site.pem", { path = "/certs/other.crt", key = "other.key" }]
  client_ca = "clients.pem"

[[listener]]
name = "plain"

[[pool]]
name = "a"
  [pool.tls]
  ca = "later/ca.pem"
  cert = "me.pem"

[[pool]]
name = "b"
  [pool.tls]
  ca = "system"

[[pool]]
name = "c"
  [pool.tls]
  ca = "unused.pem"
  verify = false
  insecure = true

[[pool]]
name = "pg"
  [pool.health]
  kind = "postgres"
  ssl = "verify-full"
  ca = "pg-ca.pem"
"#;
        let dir = Path::new("/etc/rampart");
        let got = named_files(&dir.join("rampart.toml"), text.as_bytes());
        let want: Vec<PathBuf> = [
            "/certs/other.crt",
            "/etc/rampart/clients.pem",
            "/etc/rampart/later/ca.pem",
            "/etc/rampart/me.pem",
            "/etc/rampart/other.key",
            "/etc/rampart/pg-ca.pem",
            "/etc/rampart/site.pem",
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(got, want);
        assert!(named_files(Path::new("rampart.toml"), b"[[pool]\n").is_empty());
        assert_eq!(
            named_files(
                Path::new("rampart.toml"),
                b"[[pool]]\n[pool.tls]\nca = \"ca.pem\"\n"
            ),
            vec![PathBuf::from("ca.pem")]
        );
    }
}
