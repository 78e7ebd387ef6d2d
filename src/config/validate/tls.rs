//! `[listener.tls]` and `[pool.tls]`: the files are read and checked here, when the
//! config is read (by `rampart check`, at start and on every reload), so a bad
//! certificate is refused with its key, line and file named, and a running
//! proxy keeps the certificates it has.

use crate::config::file::{CertEntry, ListenerTlsFile, Mode, PoolTlsFile};
use crate::config::problems::{KeyPath, Problems};
use crate::tls::cert::CrlFile;
use crate::tls::{CaFile, CertFile, ListenerTls, PoolTls};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A path from the config, relative to the config file's folder.
fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn load_cert(
    base: &Path,
    path: &str,
    key: Option<&str>,
    at: &KeyPath,
    p: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> Option<Arc<CertFile>> {
    let key = key.map(|k| resolve(base, k));
    match CertFile::load(&resolve(base, path), key.as_deref()) {
        Ok((c, warning)) => {
            warnings.extend(warning.map(|w| format!("{at}: {w}")));
            Some(Arc::new(c))
        }
        Err(e) => {
            p.add(at, e.to_string());
            None
        }
    }
}

/// `system`: whether `"system"` names the OS trust store (a pool's `ca`, a
/// postgres check's); for a listener's `client_ca` it would let any publicly
/// issued certificate in.
pub(super) fn load_ca(
    base: &Path,
    path: &str,
    system: bool,
    at: &KeyPath,
    p: &mut Problems<'_>,
) -> Option<CaFile> {
    if path == "system" && !system {
        p.add(
            at,
            "\"system\" (the OS trust store) would accept any publicly issued client certificate: give the file of the CA that signs your clients' certificates (\"./system\" for a file of that name)",
        );
        return None;
    }
    let r = if path == "system" {
        CaFile::system()
    } else {
        CaFile::load(&resolve(base, path))
    };
    r.map_err(|e| p.add(at, e.to_string())).ok()
}

/// A CRL file, and what it and its CA file say to each other (warnings, or
/// a CRL its CA's key does not verify, refused).
fn load_crl(
    base: &Path,
    path: &str,
    ca: Option<&CaFile>,
    at: &KeyPath,
    p: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> Option<CrlFile> {
    let (crl, skipped) = CrlFile::load(&resolve(base, path))
        .map_err(|e| p.add(at, e.to_string()))
        .ok()?;
    warnings.extend(skipped.into_iter().map(|w| format!("{at}: {w}")));
    warnings.extend(crl.stale().map(|w| format!("{at}: {w}")));
    match ca {
        Some(ca) if ca.from_file() => match crl.against(ca) {
            Ok(found) => warnings.extend(found.into_iter().map(|w| format!("{at}: {w}"))),
            Err(e) => {
                p.add(at, e.to_string());
                return None;
            }
        },
        // every CA of a public chain would need its CRL here
        Some(_) => warnings.push(format!(
            "{at}: with the OS trust store, a server whose chain has a CA without a CRL in {} is refused (its revocation status is unknown): give the file of your servers' CA as ca",
            crl.path.display()
        )),
        None => {}
    }
    Some(crl)
}

pub(super) fn listener(
    t: &ListenerTlsFile,
    mode: Mode,
    at: &KeyPath,
    base: &Path,
    p: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> Option<ListenerTls> {
    let before = p.list.len();
    if t.cert.is_empty() {
        p.add(
            &at.key("cert"),
            "give at least one certificate: cert = [\"site.pem\"] (chain and key in one PEM file)",
        );
    }
    let mut certs = Vec::new();
    for (i, c) in t.cert.iter().enumerate() {
        let (path, key) = match c {
            CertEntry::Path(path) => (path.as_str(), None),
            CertEntry::Pair(pair) => (pair.path.as_str(), pair.key.as_deref()),
        };
        certs.extend(load_cert(
            base,
            path,
            key,
            &at.index("cert", i),
            p,
            warnings,
        ));
    }
    let mut alpn = match (&t.alpn, mode) {
        (Some(a), _) => a.clone(),
        (None, Mode::Http) => vec!["h2".into(), "http/1.1".into()],
        (None, Mode::Tcp) => Vec::new(),
    };
    for (i, a) in alpn.iter().enumerate() {
        if a.is_empty() || a.len() > 255 {
            p.add(&at.index("alpn", i), "a protocol name is 1 to 255 bytes");
        } else if mode == Mode::Http && !matches!(a.as_str(), "h2" | "http/1.1" | "http/1.0") {
            p.add(
                &at.index("alpn", i),
                format!("{a:?}: an http listener speaks \"h2\", \"http/1.1\" and \"http/1.0\""),
            );
        }
    }
    // A listener that speaks HTTP/1.1 speaks 1.0: offered last, as nginx
    // does, so that a client offering only "http/1.0" (curl --http1.0) is
    // served, not refused in the handshake (rustls ends a handshake whose
    // lists do not meet)
    if mode == Mode::Http
        && alpn.iter().any(|a| a == "http/1.1")
        && !alpn.iter().any(|a| a == "http/1.0")
    {
        alpn.push("http/1.0".into());
    }
    let tls13_only = match t.min_version.as_str() {
        "1.2" => false,
        "1.3" => true,
        v => {
            p.add(
                &at.key("min_version"),
                format!("unsupported version {v:?}: use \"1.2\" or \"1.3\""),
            );
            false
        }
    };
    let client_ca = t
        .client_ca
        .as_deref()
        .and_then(|c| load_ca(base, c, false, &at.key("client_ca"), p));
    let client_crl = match (&t.client_crl, &t.client_ca) {
        (None, _) => None,
        (Some(_), None) => {
            p.add(
                &at.key("client_crl"),
                "needs client_ca (the CA whose revoked client certificates it lists)",
            );
            None
        }
        (Some(c), Some(_)) => load_crl(
            base,
            c,
            client_ca.as_ref(),
            &at.key("client_crl"),
            p,
            warnings,
        ),
    };
    let client_auth_required = match t.client_auth.as_deref() {
        None | Some("required") => true,
        Some("optional") => false,
        Some(v) => {
            p.add(
                &at.key("client_auth"),
                format!("unknown value {v:?}: use \"required\" or \"optional\""),
            );
            true
        }
    };
    if t.client_auth.is_some() && t.client_ca.is_none() {
        p.add(
            &at.key("client_auth"),
            "needs client_ca (the CA that signs client certificates)",
        );
    }
    let client_subject_header = match &t.client_subject_header {
        None => None,
        Some(h) => match http::HeaderName::from_bytes(h.as_bytes()) {
            Ok(n) if t.client_ca.is_some() && mode == Mode::Http => Some(n),
            Ok(_) => {
                p.add(
                    &at.key("client_subject_header"),
                    "needs client_ca, on an http listener (it carries the verified client certificate's subject)",
                );
                None
            }
            Err(_) => {
                p.add(
                    &at.key("client_subject_header"),
                    format!("{h:?} is not a valid header name"),
                );
                None
            }
        },
    };
    if t.handshake_timeout.0.is_zero() {
        p.add(&at.key("handshake_timeout"), "must be greater than zero");
    }
    if p.list.len() > before {
        return None;
    }
    match ListenerTls::build(
        certs,
        alpn,
        tls13_only,
        client_ca,
        client_crl,
        client_auth_required,
        t.session_tickets,
        t.handshake_timeout.0,
        t.strict_sni,
        client_subject_header,
    ) {
        Ok(l) => Some(l),
        Err(e) => {
            p.add(at, e.to_string());
            None
        }
    }
}

pub(super) fn pool(
    t: &PoolTlsFile,
    at: &KeyPath,
    base: &Path,
    alpn: &[&[u8]],
    p: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> Option<PoolTls> {
    let before = p.list.len();
    let ca = match (t.verify, t.insecure, &t.ca) {
        (true, _, Some(ca)) => load_ca(base, ca, true, &at.key("ca"), p),
        (true, _, None) => load_ca(base, "system", true, &at.key("ca"), p),
        (false, true, _) => None,
        (false, false, _) => {
            p.add(
                &at.key("verify"),
                "verify = false sends traffic to servers whose identity is not checked; add insecure = true to mean it",
            );
            None
        }
    };
    if !t.verify && t.ca.is_some() {
        warnings.push(format!(
            "{}: ca is not used with verify = false",
            at.key("ca")
        ));
    }
    if let Some(n) = &t.server_name {
        if rustls_pki_types::ServerName::try_from(n.as_str()).is_err() {
            p.add(
                &at.key("server_name"),
                format!("{n:?} is not a DNS name or IP address"),
            );
        }
    }
    let crl = match (&t.crl, t.verify) {
        (None, _) => None,
        (Some(_), false) => {
            p.add(
                &at.key("crl"),
                "is not used with verify = false (no server certificate is verified)",
            );
            None
        }
        (Some(c), true) => load_crl(base, c, ca.as_ref(), &at.key("crl"), p, warnings),
    };
    if t.key.is_some() && t.cert.is_none() {
        p.add(&at.key("key"), "is the key of cert, which is not given");
    }
    let cert = t
        .cert
        .as_deref()
        .and_then(|c| load_cert(base, c, t.key.as_deref(), &at.key("cert"), p, warnings));
    if p.list.len() > before {
        return None;
    }
    match PoolTls::build(ca, crl, t.server_name.clone(), cert, alpn) {
        Ok(t) => Some(t),
        Err(e) => {
            p.add(at, e.to_string());
            None
        }
    }
}
