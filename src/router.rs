//! Pure routing: (host, path) -> pool index. No I/O, no allocation per request.

/// How a route matches the request's host (port and case ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `api.example.com`
    Exact(String),
    /// `*.example.com`, stored as `.example.com`: matches `a.example.com`, `a.b.example.com`,
    /// not `example.com` itself (as nginx's `*.example.com`).
    Suffix(String),
}

impl HostMatch {
    pub fn parse(pattern: &str) -> Result<HostMatch, String> {
        let p = pattern.trim().to_ascii_lowercase();
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        };
        if let Some(rest) = p.strip_prefix("*.") {
            if valid(rest) {
                return Ok(HostMatch::Suffix(format!(".{rest}")));
            }
        } else if valid(&p) {
            return Ok(HostMatch::Exact(p));
        }
        Err(format!(
            "invalid host pattern {pattern:?}: write an exact name (\"api.example.com\") or a wildcard (\"*.example.com\")"
        ))
    }

    /// `host` must already have its port removed.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
            HostMatch::Suffix(s) => {
                host.len() > s.len()
                    && host.as_bytes()[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub host: Option<HostMatch>,
    pub path_prefix: Option<String>,
    pub pool: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Router {
    pub routes: Vec<Route>,
    pub default_pool: usize,
}

impl Router {
    /// First matching route wins, else the default pool.
    pub fn route(&self, host: Option<&str>, path: &str) -> usize {
        let host = host.map(strip_port);
        for r in &self.routes {
            if let Some(m) = &r.host {
                match host {
                    Some(h) if m.matches(h) => {}
                    _ => continue,
                }
            }
            if let Some(prefix) = &r.path_prefix {
                if !path.starts_with(prefix.as_str()) {
                    continue;
                }
            }
            return r.pool;
        }
        self.default_pool
    }
}

/// "example.com:8080" -> "example.com", "[::1]:80" -> "[::1]". Byte-wise, from
/// the end: it runs for every request that is routed or matched on its host.
pub fn strip_port(host: &str) -> &str {
    let b = host.as_bytes();
    if b.first() == Some(&b'[') {
        return match b.iter().position(|&c| c == b']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    let mut i = b.len();
    while i > 0 && b[i - 1].is_ascii_digit() {
        i -= 1;
    }
    if i > 0 && b[i - 1] == b':' {
        &host[..i - 1]
    } else {
        host
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router {
            routes: vec![
                Route {
                    host: Some(HostMatch::parse("api.example.com").unwrap()),
                    path_prefix: Some("/v1".into()),
                    pool: 1,
                },
                Route {
                    host: Some(HostMatch::parse("*.example.com").unwrap()),
                    path_prefix: None,
                    pool: 2,
                },
                Route {
                    host: None,
                    path_prefix: Some("/static".into()),
                    pool: 3,
                },
            ],
            default_pool: 0,
        }
    }

    #[test]
    fn first_match_wins() {
        let r = router();
        assert_eq!(r.route(Some("api.example.com"), "/v1/users"), 1);
        assert_eq!(r.route(Some("API.Example.com:8080"), "/v1/users"), 1);
        assert_eq!(r.route(Some("api.example.com"), "/v2"), 2);
        assert_eq!(r.route(Some("www.example.com"), "/static/x"), 2);
        assert_eq!(r.route(Some("example.com"), "/static/x"), 3);
        assert_eq!(r.route(None, "/static/x"), 3);
        assert_eq!(r.route(Some("other.org"), "/"), 0);
        assert_eq!(r.route(None, "/"), 0);
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("a.b:"), "a.b");
        assert_eq!(strip_port("a1.b2"), "a1.b2");
        assert_eq!(strip_port("1.2.3.4:8080"), "1.2.3.4");
        assert_eq!(strip_port("1.2.3.4"), "1.2.3.4");
        assert_eq!(strip_port(""), "");
    }

    #[test]
    fn bad_patterns_refused() {
        for p in ["", "*.", "a b", "*foo.com", "http://x"] {
            assert!(HostMatch::parse(p).is_err(), "{p:?}");
        }
    }
}
