//! `[ha]`: the node, its peers, its VIPs, the heartbeat key and what it tracks.

use crate::config::model::*;
use crate::config::problems::{KeyPath, Problems};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

pub(super) fn ha(
    h: &crate::config::file::HaFile,
    at: &KeyPath,
    base: &Path,
    pool_index: &HashMap<&str, usize>,
    p: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> Option<HaConfig> {
    let before = p.list.len();
    if h.interface.is_empty() {
        p.add(&at.key("interface"), "must name a network interface");
    }
    if h.node_id.is_empty() || h.node_id.len() > NODE_ID_MAX || h.node_id.contains('\0') {
        p.add(
            &at.key("node_id"),
            format!("must be 1 to {NODE_ID_MAX} bytes"),
        );
    }
    if !(1..=254).contains(&h.priority) {
        p.add(
            &at.key("priority"),
            format!("must be between 1 and 254, got {}", h.priority),
        );
    }
    if h.vips.is_empty() {
        p.add(
            &at.key("vips"),
            "needs at least one address, e.g. [\"192.0.2.100/24\"]",
        );
    }
    let mut vips = Vec::new();
    for (i, v) in h.vips.iter().enumerate() {
        let parsed = v.split_once('/').and_then(|(a, l)| {
            let ip: std::net::IpAddr = a.parse().ok()?;
            let len: u8 = l.parse().ok()?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            (len <= max).then_some((ip, len))
        });
        match parsed {
            Some(x) => vips.push(x),
            None => p.add(&at.index("vips", i), format!("invalid {v:?}: write ADDRESS/PREFIX, e.g. \"192.0.2.100/24\" or \"2001:db8::100/64\"")),
        }
    }
    if h.peers.is_empty() {
        p.add(&at.key("peers"), "needs at least one peer address");
    }
    // the heartbeat's authentication covers both addresses: each side must know its own
    if h.bind.0.ip().is_unspecified() {
        p.add(
            &at.key("bind"),
            "must be this node's own address, not a wildcard (0.0.0.0 or ::)",
        );
    }
    for (i, peer) in h.peers.iter().enumerate() {
        if peer.0.ip().is_unspecified() {
            p.add(
                &at.index("peers", i),
                "must be the peer's address, not a wildcard",
            );
        }
    }
    if h.advert_interval.0 < Duration::from_millis(10) {
        p.add(&at.key("advert_interval"), "must be at least 10ms");
    }
    let key = match (h.auth.as_deref(), &h.auth_key_file) {
        (Some("none"), _) => {
            warnings.push("[ha] auth = \"none\": heartbeats are not authenticated".into());
            if h.auth_previous_key_file.is_some() {
                p.add(
                    &at.key("auth_previous_key_file"),
                    "has no use with auth = \"none\": heartbeats are neither signed nor checked",
                );
            }
            Some(HaKey::None)
        }
        (None | Some("hmac-sha256"), Some(path)) => {
            let key = read_key(base, path, &at.key("auth_key_file"), p);
            let previous = h
                .auth_previous_key_file
                .as_ref()
                .map(|prev| read_key(base, prev, &at.key("auth_previous_key_file"), p));
            match (key, previous) {
                (Some(key), None) => Some(HaKey::Hmac {
                    key,
                    previous: None,
                }),
                (Some(key), Some(Some(previous))) => {
                    if previous == key {
                        warnings.push(
                            "[ha] auth_previous_key_file holds the same key as auth_key_file: it adds nothing (a rotation needs the new key in auth_key_file)"
                                .into(),
                        );
                    }
                    Some(HaKey::Hmac {
                        key,
                        previous: Some(previous),
                    })
                }
                _ => None,
            }
        }
        (None | Some("hmac-sha256"), None) => {
            p.add(
                at,
                "auth_key_file is required (or write auth = \"none\" to run unauthenticated)",
            );
            None
        }
        (Some(other), _) => {
            p.add(
                &at.key("auth"),
                format!("unknown auth {other:?}: use \"hmac-sha256\" or \"none\""),
            );
            None
        }
    };
    let key_grace = h.auth_key_grace.map_or(AUTH_KEY_GRACE, |g| g.0);
    if matches!(key, Some(HaKey::None)) && h.auth_key_grace.is_some() {
        p.add(
            &at.key("auth_key_grace"),
            "has no use with auth = \"none\": there is no key to replace",
        );
    }
    if key_grace > AUTH_KEY_GRACE_MAX {
        p.add(
            &at.key("auth_key_grace"),
            format!(
                "must be at most {AUTH_KEY_GRACE_MAX:?} (\"0s\": the replaced key is refused at once), got {key_grace:?}"
            ),
        );
    }
    let mut track = Vec::new();
    for (i, t) in h.track.iter().enumerate() {
        match t.as_str() {
            "ready" => track.push(Track::Ready),
            s => match s.strip_prefix("pool:") {
                Some(name) => match pool_index.get(name) {
                    Some(_) => track.push(Track::Pool(name.to_string())),
                    None => p.add(
                        &at.index("track", i),
                        format!("pool {name:?} is not defined"),
                    ),
                },
                None => p.add(
                    &at.index("track", i),
                    format!("unknown track {s:?}: use \"ready\" or \"pool:NAME\""),
                ),
            },
        }
    }
    // relative to the config file's folder, as auth_key_file and the
    // certificates are: the check and the run find the same program, whatever
    // the working directory (systemd's is /)
    // (absolute: "hook.sh" beside a config given as "rampart.toml" would be
    // looked up in PATH by the run, not beside the config)
    let notify = h.notify.as_ref().map(|n| {
        let n = base.join(n);
        std::path::absolute(&n).unwrap_or(n)
    });
    if let Some(n) = &notify {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(n) {
            Err(_) => p.add(&at.key("notify"), format!("{} does not exist", n.display())),
            Ok(m) if !m.is_file() || m.permissions().mode() & 0o111 == 0 => p.add(
                &at.key("notify"),
                format!("{} is not an executable file", n.display()),
            ),
            Ok(_) => {}
        }
    }
    (p.list.len() == before).then(|| HaConfig {
        interface: h.interface.clone(),
        vips,
        node_id: h.node_id.clone(),
        priority: h.priority as u8,
        bind: h.bind.0,
        peers: h.peers.iter().map(|a| a.0).collect(),
        advert_interval: h.advert_interval.0,
        preempt: h.preempt,
        preempt_delay: h.preempt_delay.0,
        key: key.unwrap_or(HaKey::None),
        key_grace,
        track,
        notify,
    })
}

/// Reads a heartbeat key (`auth_key_file`, `auth_previous_key_file`), relative to
/// the config file's folder: trailing whitespace (a final newline) is not part
/// of it, and what is left must be at least 32 bytes. A problem names `at`.
fn read_key(base: &Path, path: &Path, at: &KeyPath, p: &mut Problems<'_>) -> Option<Vec<u8>> {
    match std::fs::read(base.join(path)) {
        Ok(mut k) => {
            while k.last().is_some_and(|c| c.is_ascii_whitespace()) {
                k.pop();
            }
            if k.len() < 32 {
                p.add(
                    at,
                    format!(
                        "{}: the key must be at least 32 bytes, it has {}",
                        path.display(),
                        k.len()
                    ),
                );
                None
            } else {
                Some(k)
            }
        }
        Err(e) => {
            p.add(at, format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}
