//! The CLI's side of the admin API: `rampart status`, `watch`, `server`, `check-now`.

use super::html::human_secs;
use super::model::{HealthSummary, ServerView, Stats};
use crate::control::ReloadRecord;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::fmt::Write;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid admin URL {0:?}: write http://HOST:PORT, e.g. http://127.0.0.1:8404")]
    Url(String),
    #[error("cannot reach the admin API at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("admin API request failed: {0}")]
    Http(String),
    #[error("admin API answered {status}: {body}")]
    Status { status: u16, body: String },
    /// 401: credentials missing or wrong ([admin] token_env, or read_auth for reads).
    #[error(
        "admin API answered 401: {body}: give the admin token with --token or RAMPART_ADMIN_TOKEN"
    )]
    Unauthorized { body: String },
    #[error("unexpected answer from the admin API: {0}")]
    Json(#[from] serde_json::Error),
    /// The proxy refused what was asked (a reload of a config that does not
    /// validate): every problem, one per line.
    #[error("{0}")]
    Refused(String),
}

impl ClientError {
    /// The error for an answer with a status other than the one asked for.
    fn status(status: http::StatusCode, body: &[u8]) -> ClientError {
        let body = String::from_utf8_lossy(body).trim().to_string();
        if status == http::StatusCode::UNAUTHORIZED {
            ClientError::Unauthorized { body }
        } else {
            ClientError::Status {
                status: status.as_u16(),
                body,
            }
        }
    }
}

pub struct AdminClient {
    host: String,
    token: Option<String>,
}

impl AdminClient {
    /// `url` is `http://HOST:PORT` (a trailing slash is fine).
    pub fn new(url: &str, token: Option<String>) -> Result<AdminClient, ClientError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| ClientError::Url(url.to_string()))?;
        let host = rest.trim_end_matches('/').to_string();
        if host.is_empty() || host.contains('/') {
            return Err(ClientError::Url(url.to_string()));
        }
        Ok(AdminClient { host, token })
    }

    async fn request(
        &self,
        method: http::Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Bytes, ClientError> {
        let (status, body) = self.send(method, path, body).await?;
        if !status.is_success() {
            return Err(ClientError::status(status, &body));
        }
        Ok(body)
    }

    async fn send(
        &self,
        method: http::Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(http::StatusCode, Bytes), ClientError> {
        let stream = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(&self.host),
        )
        .await
        .map_err(|_| ClientError::Connect {
            addr: self.host.clone(),
            source: std::io::ErrorKind::TimedOut.into(),
        })?
        .map_err(|source| ClientError::Connect {
            addr: self.host.clone(),
            source,
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        // aborted when this call returns, on every path
        let _conn = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(conn));
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.host)
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
            .await
            .map_err(|_| ClientError::Http("timed out".into()))?
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        Ok((status, body))
    }

    /// `POST /api/upgrade`: the new process's id once it serves.
    pub async fn upgrade(&self) -> Result<u32, ClientError> {
        let body = self
            .request(http::Method::POST, "/api/upgrade", None)
            .await?;
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        v["pid"]
            .as_u64()
            .map(|p| p as u32)
            .ok_or_else(|| ClientError::Http(format!("no pid in {v}")))
    }

    /// `POST /api/reload`: the record says whether the new config is live (`ok`)
    /// or was refused, with every problem (and nothing changed).
    pub async fn reload(&self) -> Result<ReloadRecord, ClientError> {
        let (status, body) = self.send(http::Method::POST, "/api/reload", None).await?;
        match status {
            http::StatusCode::OK | http::StatusCode::UNPROCESSABLE_ENTITY => {
                Ok(serde_json::from_slice(&body)?)
            }
            s => Err(ClientError::status(s, &body)),
        }
    }

    pub async fn stats(&self) -> Result<Stats, ClientError> {
        Ok(serde_json::from_slice(
            &self.request(http::Method::GET, "/stats;json", None).await?,
        )?)
    }

    pub async fn set_server(
        &self,
        pool: &str,
        server: &str,
        state: &str,
        weight: Option<u32>,
    ) -> Result<ServerView, ClientError> {
        let mut body = serde_json::json!({ "state": state });
        if let Some(w) = weight {
            body["weight"] = w.into();
        }
        let path = format!("/api/pools/{}/servers/{}", encode(pool), encode(server));
        Ok(serde_json::from_slice(
            &self
                .request(http::Method::POST, &path, Some(body.to_string()))
                .await?,
        )?)
    }

    /// `GET /api/quotas`: every key's use (or one key's, or one limit's).
    pub async fn quotas(
        &self,
        key: Option<&str>,
        limit: Option<&str>,
    ) -> Result<Vec<crate::admin::QuotaView>, ClientError> {
        let mut q = Vec::new();
        if let Some(k) = key {
            q.push(format!("key={}", encode(k)));
        }
        if let Some(l) = limit {
            q.push(format!("limit={}", encode(l)));
        }
        let path = if q.is_empty() {
            "/api/quotas".to_string()
        } else {
            format!("/api/quotas?{}", q.join("&"))
        };
        Ok(serde_json::from_slice(
            &self.request(http::Method::GET, &path, None).await?,
        )?)
    }

    /// `POST /api/quotas/reset`: the limits whose quota `key` had used.
    pub async fn reset_quota(
        &self,
        key: &str,
        limit: Option<&str>,
    ) -> Result<Vec<String>, ClientError> {
        let body = serde_json::json!({ "key": key, "limit": limit });
        let v: serde_json::Value = serde_json::from_slice(
            &self
                .request(
                    http::Method::POST,
                    "/api/quotas/reset",
                    Some(body.to_string()),
                )
                .await?,
        )?;
        Ok(v["reset"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `POST /api/listeners/{name}/mode`: "read-only" or "normal".
    pub async fn set_mode(
        &self,
        listener: &str,
        mode: &str,
    ) -> Result<crate::admin::model::ListenerView, ClientError> {
        let path = format!("/api/listeners/{}/mode", encode(listener));
        let body = serde_json::json!({ "mode": mode });
        Ok(serde_json::from_slice(
            &self
                .request(http::Method::POST, &path, Some(body.to_string()))
                .await?,
        )?)
    }

    pub async fn check_now(&self) -> Result<HealthSummary, ClientError> {
        Ok(serde_json::from_slice(
            &self
                .request(http::Method::POST, "/api/health/check", None)
                .await?,
        )?)
    }
}

fn encode(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            o.push(b as char);
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

/// The `rampart status` table.
pub fn render_table(s: &Stats) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "rampart {}  up {}  ready: {}{}  config generation {}",
        s.version,
        human_secs(s.uptime_secs),
        if s.ready { "yes" } else { "NO" },
        s.ha.as_ref()
            .and_then(|h| h.get("state"))
            .and_then(|v| v.as_str())
            .map(|st| format!("  HA: {st}"))
            .unwrap_or_default(),
        s.config.generation
    );
    if let Some(r) = &s.config.last_reload {
        let _ = writeln!(
            o,
            "last reload {} ({}): {}{}",
            r.time,
            r.trigger,
            if r.ok { "" } else { "FAILED: " },
            r.summary
        );
    }
    for p in &s.pools {
        let _ = writeln!(
            o,
            "\npool {} ({})  {}/{} eligible  {:.1} req/s  queue {}  errors {}  retries {}",
            p.name,
            p.balance,
            p.eligible,
            p.servers.len(),
            p.rate,
            p.queue,
            p.errors,
            p.retries
        );
        let _ = writeln!(
            o,
            "  {:<24} {:<8} {:>7} {:>6} {:>6} {:>8} {:>9} {:>6}  LAST CHECK",
            "SERVER", "STATUS", "SINCE", "WEIGHT", "ACTIVE", "REQ/S", "TOTAL", "ERR"
        );
        for sv in &p.servers {
            let check = sv
                .last_check
                .as_ref()
                .map(|c| format!("{} ({:.0} ms)", c.detail, c.duration_ms))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                o,
                "  {:<24} {:<8} {:>7} {:>6} {:>6} {:>8.1} {:>9} {:>6}  {}",
                sv.id,
                sv.status,
                human_secs(sv.status_secs),
                sv.weight,
                sv.active,
                sv.rate,
                sv.total,
                sv.connect_errors + sv.response_errors,
                check
            );
        }
    }
    shown(o)
}

/// Text for a terminal: a server's own text (a health check's detail, a
/// reload's error) may carry escape sequences, shown as `?`, not run.
pub fn shown(o: String) -> String {
    if !o.chars().any(|c| c.is_control() && c != '\n') {
        return o;
    }
    o.chars()
        .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_bytes_from_a_server_are_not_sent_to_the_terminal() {
        let t = super::shown("pg: \x1b]0;owned\x07 down\n\u{9b}2J".to_string());
        assert_eq!(t, "pg: ?]0;owned? down\n?2J");
        assert_eq!(super::shown("ok\n".into()), "ok\n");
    }
}
