//! Persistence by a cookie (`[pool.cookie]`, HAProxy's `cookie NAME insert
//! indirect nocache`): a response from a server the request's cookie did not
//! name sets the cookie to that server's value, and a request that carries it
//! goes to that server while it can take it (UP, or draining: HAProxy's drain
//! keeps persistent clients too), else it is balanced as any other and the
//! cookie set anew.
//!
//! A server's value is written in the config (`[[pool.server]] cookie`), or a
//! hash of its address (and `key`): the same in every process and node, and
//! across reloads, so a client keeps its server when another rampart of the
//! same config answers, and a pod with a new address is a new value.

use super::Server;
use crate::config::CookieConfig;
use http::{HeaderMap, HeaderValue};
use std::collections::HashMap;
use std::sync::Arc;

/// A pool's cookie values: each server's, and the server of each.
#[derive(Debug)]
pub struct Persist {
    pub cfg: Arc<CookieConfig>,
    values: Vec<Box<str>>,
    by_value: HashMap<Box<str>, usize>,
}

impl Persist {
    pub fn new(cfg: &Arc<CookieConfig>, servers: &[Arc<Server>]) -> Persist {
        let values: Vec<Box<str>> = servers
            .iter()
            .map(|s| match cfg.values.iter().find(|(a, _)| *a == s.addr) {
                Some((_, v)) => v.as_str().into(),
                None => hashed(cfg.key.as_deref(), s.addr),
            })
            .collect();
        let mut by_value = HashMap::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            // (a written value equal to another server's hash: the first wins)
            by_value.entry(v.clone()).or_insert(i);
        }
        Persist {
            cfg: Arc::clone(cfg),
            values,
            by_value,
        }
    }

    /// The server a request's cookie names, if any, and that value.
    pub fn server_of<'a>(&self, cookies: impl Iterator<Item = &'a [u8]>) -> Option<(usize, &str)> {
        let v = find(cookies, self.cfg.name.as_bytes())?;
        let v = std::str::from_utf8(v).ok()?;
        let (k, &i) = self.by_value.get_key_value(v)?;
        Some((i, k))
    }

    /// Server `i`'s value.
    pub fn value(&self, i: usize) -> Option<&str> {
        self.values.get(i).map(|v| &**v)
    }

    /// The `Set-Cookie` that sends a client to server `i`.
    pub fn set_cookie(&self, i: usize) -> Option<HeaderValue> {
        let v = self.value(i)?;
        let text = format!("{}={v}{}", self.cfg.name, self.cfg.attributes);
        HeaderValue::from_str(&text).ok()
    }

    /// Sets the cookie to server `i`'s value in a response (beside the
    /// server's own cookies), and with `nocache` keeps shared caches from
    /// storing it (HAProxy's `nocache` adds `Cache-Control: private` too).
    pub fn insert(&self, i: usize, headers: &mut HeaderMap) {
        let Some(v) = self.set_cookie(i) else {
            return;
        };
        headers.append(http::header::SET_COOKIE, v);
        if self.cfg.nocache {
            headers.append(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("private"),
            );
        }
    }
}

/// Takes the cookie `name` out of a request's `Cookie` fields (`indirect`):
/// the server never sees it; a field left empty goes.
pub fn strip_from(headers: &mut HeaderMap, name: &str) {
    let name = name.as_bytes();
    let cookies = headers.get_all(http::header::COOKIE);
    if !cookies.iter().any(|v| strip(v.as_bytes(), name).is_some()) {
        return;
    }
    let kept: Vec<HeaderValue> = cookies
        .iter()
        .filter_map(|v| match strip(v.as_bytes(), name) {
            None => Some(v.clone()),
            Some(rest) => rest.and_then(|r| HeaderValue::from_bytes(&r).ok()),
        })
        .collect();
    headers.remove(http::header::COOKIE);
    for v in kept {
        headers.append(http::header::COOKIE, v);
    }
}

/// A server's value when none is written: 16 hex digits of a hash of the
/// key (if any) and its address.
fn hashed(key: Option<&str>, addr: std::net::SocketAddr) -> Box<str> {
    let addr = addr.to_string();
    let h =
        crate::pool::balance::hash_parts(&[key.unwrap_or("").as_bytes(), &[0], addr.as_bytes()]);
    format!("{h:016x}").into()
}

/// The value of the cookie `name` in `Cookie` fields (an HTTP/2 client may
/// send several: RFC 9113 8.2.3): the first pair of that name.
pub fn find<'a>(mut fields: impl Iterator<Item = &'a [u8]>, name: &[u8]) -> Option<&'a [u8]> {
    fields.find_map(|f| pairs(f).find(|(n, _)| *n == name).map(|(_, v)| v))
}

/// The `name=value` pairs of a `Cookie` field, trimmed (a pair without `=`
/// is a name with an empty value).
fn pairs(field: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    field.split(|&b| b == b';').map(|pair| {
        let pair = pair.trim_ascii();
        match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii()),
            None => (pair, &pair[pair.len()..]),
        }
    })
}

/// A `Cookie` field without the pairs named `name` (`indirect`): None when
/// it has none of them (left as it is), Some(None) when nothing else is left.
pub fn strip(field: &[u8], name: &[u8]) -> Option<Option<Vec<u8>>> {
    if !pairs(field).any(|(n, _)| n == name) {
        return None;
    }
    let mut out = Vec::with_capacity(field.len());
    for pair in field.split(|&b| b == b';') {
        let t = pair.trim_ascii();
        let n = t.split(|&b| b == b'=').next().unwrap_or(t).trim_ascii();
        if n == name || t.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(t);
    }
    Some((!out.is_empty()).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others_and_in_any_field() {
        let f: [&[u8]; 2] = [b"a=1; b=2", b"SRV=abc;c=3"];
        assert_eq!(find(f.iter().copied(), b"SRV"), Some(&b"abc"[..]));
        assert_eq!(find(f.iter().copied(), b"b"), Some(&b"2"[..]));
        // a name is matched whole, not as a prefix or suffix
        assert_eq!(find([&b"XSRV=1; SRVX=2"[..]].into_iter(), b"SRV"), None);
        assert_eq!(
            find([&b" SRV = 7 "[..]].into_iter(), b"SRV"),
            Some(&b"7"[..])
        );
        assert_eq!(find(std::iter::empty(), b"SRV"), None);
    }

    #[test]
    fn strip_takes_out_only_the_pairs_of_the_name() {
        assert_eq!(
            strip(b"a=1; SRV=abc; b=2", b"SRV"),
            Some(Some(b"a=1; b=2".to_vec()))
        );
        assert_eq!(strip(b"SRV=abc", b"SRV"), Some(None));
        assert_eq!(strip(b"SRV=a;SRV=b; c", b"SRV"), Some(Some(b"c".to_vec())));
        assert_eq!(strip(b"a=1; XSRV=2", b"SRV"), None);
    }

    fn server(addr: &str) -> Arc<Server> {
        Arc::new(Server {
            addr: addr.parse().unwrap(),
            id: Arc::from(addr),
            weight: 1,
            backup: false,
            source: None,
            state: Arc::new(crate::pool::ServerState::new(crate::pool::Health::Up)),
        })
    }

    fn cfg(key: Option<&str>, values: Vec<(&str, &str)>) -> Arc<CookieConfig> {
        Arc::new(CookieConfig {
            name: "SRV".into(),
            key: key.map(Into::into),
            indirect: true,
            nocache: true,
            attributes: "; Path=/; HttpOnly".into(),
            values: values
                .into_iter()
                .map(|(a, v)| (a.parse().unwrap(), v.into()))
                .collect(),
        })
    }

    #[test]
    fn values_are_written_or_hashed_and_name_their_server() {
        let servers = [server("10.0.0.1:80"), server("10.0.0.2:80")];
        let p = Persist::new(&cfg(None, vec![("10.0.0.2:80", "web2")]), &servers);
        assert_eq!(p.value(1), Some("web2"));
        let v0 = p.value(0).unwrap().to_string();
        assert_eq!(v0.len(), 16);
        let c = format!("x=1; SRV={v0}");
        assert_eq!(
            p.server_of([c.as_bytes()].into_iter()),
            Some((0, v0.as_str()))
        );
        assert_eq!(
            p.server_of([&b"SRV=web2"[..]].into_iter()).map(|s| s.0),
            Some(1)
        );
        assert_eq!(p.server_of([&b"SRV=web3"[..]].into_iter()), None);
        assert_eq!(
            p.set_cookie(1).unwrap(),
            HeaderValue::from_static("SRV=web2; Path=/; HttpOnly")
        );
        // the same address is the same value in another process (or pool
        // generation), and another key another value
        let again = Persist::new(&cfg(None, vec![]), &servers[..1]);
        assert_eq!(again.value(0), Some(v0.as_str()));
        let keyed = Persist::new(&cfg(Some("s3cret"), vec![]), &servers[..1]);
        assert_ne!(keyed.value(0), Some(v0.as_str()));
    }
}
