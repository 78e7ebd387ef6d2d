//! The comparison's traffic: the requests sent to both configs (from the
//! listeners' rules), the local backends that answer them by name, and the
//! answers as read back.

use super::error::VerifyError;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A listener of the converted config, as the request corpus needs it.
#[derive(Debug, Clone)]
pub(super) struct Listener {
    pub(super) name: String,
    pub(super) binds: Vec<String>,
    pub(super) tls: bool,
    pub(super) tcp: bool,
    pub(super) rules: Vec<toml::Table>,
}

#[derive(Debug, Clone)]
pub(super) struct Req {
    pub(super) method: String,
    pub(super) host: String,
    pub(super) path: String,
    pub(super) header: Option<(String, String)>,
}

/// Requests for a listener: every host and path its rules name (and a
/// request outside each), each method and header they name.
pub(super) fn requests_for(l: &Listener) -> Vec<Req> {
    let mut hosts: Vec<String> = vec!["unknown.example".into()];
    let mut paths: Vec<String> = vec!["/".into(), "/zz-unmatched/x".into()];
    let mut methods: Vec<String> = vec!["GET".into()];
    let mut headers: Vec<(String, String)> = Vec::new();
    for r in &l.rules {
        if let Some(h) = r.get("host").and_then(|v| v.as_str()) {
            let h = h
                .strip_prefix("*.")
                .map(|d| format!("www.{d}"))
                .unwrap_or_else(|| h.to_string());
            if !hosts.contains(&h) {
                hosts.push(h);
            }
        }
        if let Some(p) = r.get("path").and_then(|v| v.as_str()) {
            paths.push(p.to_string());
        }
        if let Some(p) = r.get("path_prefix").and_then(|v| v.as_str()) {
            paths.push(p.to_string());
            paths.push(format!("{}{}x", p, if p.ends_with('/') { "" } else { "/" }));
        }
        if let Some(re) = r.get("path_regex").and_then(|v| v.as_str()) {
            // a literal that matches the plainer regexes
            let lit: String = re
                .trim_start_matches("(?i)")
                .trim_start_matches('^')
                .replace("\\.", ".")
                .replace("\\/", "/")
                .chars()
                .filter(|c| c.is_alphanumeric() || "/._-".contains(*c))
                .collect();
            if !lit.is_empty() {
                paths.push(if lit.starts_with('/') {
                    lit
                } else {
                    format!("/x/{lit}")
                });
            }
        }
        if let Some(ms) = r.get("method").and_then(|v| v.as_array()) {
            for m in ms.iter().filter_map(|m| m.as_str()) {
                if !methods.iter().any(|x| x == m) {
                    methods.push(m.to_string());
                }
            }
        }
        if let Some(h) = r.get("header").and_then(|v| v.as_table()) {
            if let Some(n) = h.get("name").and_then(|v| v.as_str()) {
                let v = h.get("value").and_then(|v| v.as_str()).unwrap_or("1");
                headers.push((n.to_string(), v.to_string()));
            }
        }
    }
    paths.sort();
    paths.dedup();
    if l.tcp {
        return vec![Req {
            method: "GET".into(),
            host: "unknown.example".into(),
            path: "/".into(),
            header: None,
        }];
    }
    let mut out = Vec::new();
    for h in &hosts {
        for p in &paths {
            out.push(Req {
                method: "GET".into(),
                host: h.clone(),
                path: p.clone(),
                header: None,
            });
        }
    }
    for m in methods.iter().skip(1) {
        for p in &paths {
            out.push(Req {
                method: m.clone(),
                host: hosts.get(1).unwrap_or(&hosts[0]).clone(),
                path: p.clone(),
                header: None,
            });
        }
    }
    for hd in &headers {
        for p in &paths {
            out.push(Req {
                method: "GET".into(),
                host: hosts.get(1).unwrap_or(&hosts[0]).clone(),
                path: p.clone(),
                header: Some(hd.clone()),
            });
        }
    }
    out.truncate(400);
    out
}

/// `METHOD HOST PATH [NAME: VALUE]` per line; `#` comments.
pub(super) fn read_requests(p: &Path) -> Result<Vec<Req>, VerifyError> {
    let text = std::fs::read_to_string(p)
        .map_err(|e| VerifyError::Setup(format!("{}: {e}", p.display())))?;
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.split('#').next().unwrap_or("").trim();
        if l.is_empty() {
            continue;
        }
        let mut w = l.splitn(4, ' ');
        let (Some(m), Some(h), Some(path)) = (w.next(), w.next(), w.next()) else {
            return Err(VerifyError::Setup(format!(
                "{}:{}: METHOD HOST PATH [NAME: VALUE] expected",
                p.display(),
                i + 1
            )));
        };
        let header = w
            .next()
            .and_then(|hv| hv.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()));
        out.push(Req {
            method: m.to_string(),
            host: h.to_string(),
            path: path.to_string(),
            header,
        });
    }
    Ok(out)
}

#[derive(Debug, Default)]
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) location: Option<String>,
    pub(super) pool: Option<String>,
    pub(super) error: Option<String>,
    pub(super) not_imported: bool,
}

impl Answer {
    pub(super) fn show(&self) -> String {
        if let Some(e) = &self.error {
            return format!("error ({e})");
        }
        let mut s = format!("{}", self.status);
        if let Some(p) = &self.pool {
            s.push_str(&format!(" pool={p}"));
        }
        if let Some(l) = &self.location {
            s.push_str(&format!(" location={l}"));
        }
        s
    }
    pub(super) fn same(&self, o: &Answer) -> bool {
        // a connection both close without an answer is the same answer
        if self.error.is_some() || o.error.is_some() {
            return self.error.is_some() && o.error.is_some();
        }
        self.status == o.status && self.pool == o.pool && self.location == o.location
    }
}

pub(super) async fn backend(l: tokio::net::TcpListener, name: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            continue;
        };
        let name = name.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
                match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
            }
            let resp = format!(
                "HTTP/1.1 200 OK\r\nx-verify-pool: {name}\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n"
            );
            let _ = s.write_all(resp.as_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}

pub(super) async fn send(
    ip: std::net::Ipv4Addr,
    port: u16,
    tls: Option<&Arc<rustls::ClientConfig>>,
    r: &Req,
    tcp: bool,
) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        r.method, r.path, r.host
    );
    if let Some((n, v)) = &r.header {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if r.method == "POST" || r.method == "PUT" || r.method == "PATCH" {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("\r\n");
    let _ = tcp;
    let go = async {
        let s = tokio::net::TcpStream::connect(SocketAddr::from((ip, port))).await?;
        let mut buf = Vec::new();
        match tls {
            Some(cfg) => {
                let name =
                    rustls_pki_types::ServerName::try_from(r.host.clone()).unwrap_or_else(|_| {
                        rustls_pki_types::ServerName::try_from("verify.invalid".to_string())
                            .expect("a valid name")
                    });
                let mut t = tokio_rustls::TlsConnector::from(Arc::clone(cfg))
                    .connect(name, s)
                    .await?;
                t.write_all(head.as_bytes()).await?;
                let _ = t.read_to_end(&mut buf).await;
            }
            None => {
                let mut s = s;
                s.write_all(head.as_bytes()).await?;
                let _ = s.read_to_end(&mut buf).await;
            }
        }
        Ok::<Vec<u8>, std::io::Error>(buf)
    };
    let buf = match tokio::time::timeout(Duration::from_secs(5), go).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return Answer {
                error: Some(e.kind().to_string()),
                ..Answer::default()
            }
        }
        Err(_) => {
            return Answer {
                error: Some("timeout".into()),
                ..Answer::default()
            }
        }
    };
    let mut a = parse_answer(&buf);
    a.location = a
        .location
        .map(|l| own_origin_off(l, tls.is_some(), &r.host, port));
    a
}

/// A Location to the origin the request was sent to, as the path a client
/// resolves it to: nginx makes its own redirects absolute (its
/// `absolute_redirect`, with the port it listens on), rampart leaves them
/// paths, and both take a client to the same URL.
fn own_origin_off(l: String, tls: bool, host: &str, port: u16) -> String {
    let scheme = if tls { "https" } else { "http" };
    let default = port == if tls { 443 } else { 80 };
    // (nginx writes the Host lowercase, without a port)
    let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
    let with_port = format!("{scheme}://{host}:{port}");
    let without = format!("{scheme}://{host}");
    let strip = |origin: &str| {
        l.get(..origin.len())
            .filter(|o| o.eq_ignore_ascii_case(origin))
            .map(|_| &l[origin.len()..])
    };
    let rest = strip(&with_port).or_else(|| strip(&without).filter(|_| default));
    match rest {
        // (not `//x` or `/\x`: as a Location of its own, another host)
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.starts_with("/\\") => {
            p.to_string()
        }
        _ => l,
    }
}

pub(super) fn parse_answer(buf: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Answer {
            error: Some(if buf.is_empty() {
                "closed".into()
            } else {
                "no complete answer".into()
            }),
            ..Answer::default()
        };
    };
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut a = Answer {
        status,
        ..Answer::default()
    };
    for l in lines {
        if let Some((n, v)) = l.split_once(':') {
            match n.trim().to_ascii_lowercase().as_str() {
                "location" => a.location = Some(v.trim().to_string()),
                "x-verify-pool" => a.pool = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    a.not_imported = status == 501 && body.starts_with("not imported");
    a
}

#[cfg(test)]
mod tests {
    use super::own_origin_off;

    #[test]
    fn a_location_to_the_requests_own_origin_is_its_path() {
        let off = |l: &str, tls, port| own_origin_off(l.to_string(), tls, "a.test", port);
        assert_eq!(off("http://a.test:8080/x/?q", false, 8080), "/x/?q");
        assert_eq!(off("https://a.test:8443/x/", true, 8443), "/x/");
        assert_eq!(off("http://a.test/x/", false, 80), "/x/");
        assert_eq!(off("https://a.test/x/", true, 443), "/x/");
        assert_eq!(off("HTTP://A.test:8080/x/", false, 8080), "/x/");
        assert_eq!(
            own_origin_off("http://a.test:8080/x".into(), false, "A.Test:8080", 8080),
            "/x"
        );
        // another origin, or the default port's form on another port, stays
        for (l, tls, port) in [
            ("http://a.test:8081/x/", false, 8080),
            ("http://a.test/x/", false, 8080),
            ("https://a.test:8080/x/", false, 8080),
            ("http://b.test:8080/x/", false, 8080),
            ("http://a.test:80800/x/", false, 8080),
            ("http://a.test.evil/x", false, 80),
            ("/x/", false, 8080),
            ("http://a.test:8080//evil.example/", false, 8080),
            ("http://a.test:8080/\\evil.example/", false, 8080),
        ] {
            assert_eq!(off(l, tls, port), l);
        }
    }
}
