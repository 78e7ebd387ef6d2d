//! Persistence by a cookie (`[pool.cookie]`, HAProxy's `cookie NAME insert
//! indirect nocache`): a response from a server the request's cookie did not
//! name sets the cookie to that server's value, and a request that carries it
//! goes to that server while it can take it (UP, or draining: HAProxy's drain
//! keeps persistent clients too), else it is balanced as any other and the
//! cookie set anew.
//!
//! A server's value is written in the config (`[[pool.server]] cookie`), or a
//! hash of its address (an HMAC under `key`): the same in every process and
//! node, and across reloads, so a client keeps its server when another
//! rampart of the same config answers, and a pod with a new address is a new
//! value.

use crate::config::CookieConfig;
use http::{HeaderMap, HeaderValue};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// A pool's cookie values: each server's, and the servers of each.
#[derive(Debug)]
pub struct Persist {
    pub cfg: Arc<CookieConfig>,
    values: Vec<Box<str>>,
    /// The first server of each value ...
    by_value: HashMap<Box<str>, usize>,
    /// ... and the next one of the same value, if any (HAProxy lets servers
    /// share one, a backup with its normal server).
    next: Vec<Option<usize>>,
}

impl Persist {
    /// The values of the servers at `addrs`, in the pool's order.
    pub fn new(cfg: &Arc<CookieConfig>, addrs: impl Iterator<Item = SocketAddr>) -> Persist {
        let values: Vec<Box<str>> = addrs
            .map(|addr| match cfg.values.iter().find(|(a, _)| *a == addr) {
                Some((_, v)) => v.as_str().into(),
                None => hashed(cfg.key.as_deref(), addr),
            })
            .collect();
        let mut by_value: HashMap<Box<str>, usize> = HashMap::with_capacity(values.len());
        let mut last: HashMap<&str, usize> = HashMap::new();
        let mut next = vec![None; values.len()];
        for (i, v) in values.iter().enumerate() {
            by_value.entry(v.clone()).or_insert(i);
            if let Some(j) = last.insert(v, i) {
                next[j] = Some(i);
            }
        }
        Persist {
            cfg: Arc::clone(cfg),
            values,
            by_value,
            next,
        }
    }

    /// The servers a request's cookie names, in the order written.
    pub fn servers_of<'a>(
        &'a self,
        cookies: impl Iterator<Item = &'a [u8]>,
    ) -> impl Iterator<Item = usize> + 'a {
        let v = find(cookies, self.cfg.name.as_bytes()).and_then(|v| std::str::from_utf8(v).ok());
        let first = v.and_then(|v| self.by_value.get(v).copied());
        std::iter::successors(first, |&i| self.next.get(i).copied().flatten())
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

    /// The answer of server `i` to a client whose cookie had the value
    /// `had`: the server's own cookies of this name go (rampart's insert
    /// owns it, as HAProxy's does without `preserve`), and a client not sent
    /// here by its cookie gets it set to this server's value, beside the
    /// server's other cookies; with `nocache`, with `Cache-Control: private`
    /// too, so that no shared cache hands it to other clients.
    pub fn answer(&self, i: usize, had: Option<&str>, headers: &mut HeaderMap) {
        drop_named(headers, self.cfg.name.as_bytes());
        if had.is_some() && had == self.value(i) {
            return;
        }
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

/// Takes the `Set-Cookie` fields of cookie `name` out of a response.
fn drop_named(headers: &mut HeaderMap, name: &[u8]) {
    let set = headers.get_all(http::header::SET_COOKIE);
    let named = |v: &HeaderValue| {
        let b = v.as_bytes();
        let n = b.split(|&c| c == b'=').next().unwrap_or(b);
        n.trim_ascii() == name
    };
    if !set.iter().any(named) {
        return;
    }
    let kept: Vec<HeaderValue> = set.iter().filter(|v| !named(v)).cloned().collect();
    headers.remove(http::header::SET_COOKIE);
    for v in kept {
        headers.append(http::header::SET_COOKIE, v);
    }
}

/// Takes the cookie `name` out of a request's `Cookie` fields (`indirect`):
/// the server never sees it; a field left empty goes.
pub fn strip_from(headers: &mut HeaderMap, name: &str) {
    let name = name.as_bytes();
    let cookies = headers.get_all(http::header::COOKIE);
    if !cookies
        .iter()
        .any(|v| pairs(v.as_bytes()).any(|(n, _)| n == name))
    {
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

/// A server's value when none is written: 16 hex digits of a hash of its
/// address; with a `key`, of an HMAC-SHA256 under it, so that without the
/// key a value tells nothing of the address (FNV and its like can be run
/// backwards from a few values).
fn hashed(key: Option<&str>, addr: SocketAddr) -> Box<str> {
    use hmac::{Hmac, Mac};
    let addr = addr.to_string();
    let h = match key.map(|k| Hmac::<sha2::Sha256>::new_from_slice(k.as_bytes())) {
        Some(Ok(mut mac)) => {
            mac.update(addr.as_bytes());
            let tag = mac.finalize().into_bytes();
            let mut first = [0u8; 8];
            first.copy_from_slice(&tag[..8]);
            u64::from_be_bytes(first)
        }
        _ => crate::pool::balance::hash_parts(&[addr.as_bytes()]),
    };
    format!("{h:016x}").into()
}

/// The value of the cookie `name` in `Cookie` fields (an HTTP/2 client may
/// send several: RFC 9113 8.2.3): the first pair of that name, unquoted.
pub fn find<'a>(mut fields: impl Iterator<Item = &'a [u8]>, name: &[u8]) -> Option<&'a [u8]> {
    let v = fields.find_map(|f| pairs(f).find(|(n, _)| *n == name).map(|(_, v)| v))?;
    // (a value may come quoted: RFC 6265 4.1.1)
    Some(
        v.strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(v),
    )
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

    fn server(addr: &str) -> SocketAddr {
        addr.parse().unwrap()
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
        let p = Persist::new(
            &cfg(None, vec![("10.0.0.2:80", "web2")]),
            servers.iter().copied(),
        );
        assert_eq!(p.value(1), Some("web2"));
        let v0 = p.value(0).unwrap().to_string();
        assert_eq!(v0.len(), 16);
        let of = |c: &str| p.servers_of([c.as_bytes()].into_iter()).collect::<Vec<_>>();
        assert_eq!(of(&format!("x=1; SRV={v0}")), [0]);
        assert_eq!(of("SRV=web2"), [1]);
        assert_eq!(of("SRV=\"web2\""), [1]);
        assert_eq!(of("SRV=web3"), [0usize; 0]);
        assert_eq!(
            p.set_cookie(1).unwrap(),
            HeaderValue::from_static("SRV=web2; Path=/; HttpOnly")
        );
        // the same address is the same value in another process (or pool
        // generation), and another key another value
        let again = Persist::new(&cfg(None, vec![]), servers[..1].iter().copied());
        assert_eq!(again.value(0), Some(v0.as_str()));
        let keyed = Persist::new(&cfg(Some("s3cret"), vec![]), servers[..1].iter().copied());
        assert_ne!(keyed.value(0), Some(v0.as_str()));
        assert_eq!(keyed.value(0).unwrap().len(), 16);
        // servers may share a value (HAProxy lets a backup have its normal
        // server's): each in turn, in the order written
        let three = [servers[0], servers[1], server("10.0.0.3:80")];
        let shared = cfg(None, vec![("10.0.0.1:80", "web"), ("10.0.0.3:80", "web")]);
        let p = Persist::new(&shared, three.iter().copied());
        let of = |c: &str| p.servers_of([c.as_bytes()].into_iter()).collect::<Vec<_>>();
        assert_eq!(of("SRV=web"), [0, 2]);
    }

    #[test]
    fn the_servers_own_cookie_of_the_name_goes_and_ours_is_set_when_due() {
        let servers = [server("10.0.0.1:80")];
        let p = Persist::new(
            &cfg(None, vec![("10.0.0.1:80", "web1")]),
            servers.iter().copied(),
        );
        let answer = |had| {
            let mut h = HeaderMap::new();
            h.append("set-cookie", HeaderValue::from_static("SRV=theirs; Path=/"));
            h.append("set-cookie", HeaderValue::from_static("session=abc"));
            p.answer(0, had, &mut h);
            let all = |n| {
                h.get_all(n)
                    .iter()
                    .map(|v| v.to_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            };
            (all("set-cookie"), all("cache-control"))
        };
        assert_eq!(
            answer(None),
            (
                vec![
                    "session=abc".to_string(),
                    "SRV=web1; Path=/; HttpOnly".into()
                ],
                vec!["private".to_string()]
            )
        );
        assert_eq!(
            answer(Some("web1")),
            (vec!["session=abc".to_string()], vec![])
        );
        assert_eq!(answer(Some("web2")).0.len(), 2);
    }
}
