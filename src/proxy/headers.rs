//! What a proxied request's and response's headers go through: the hop-by-hop
//! ones removed, X-Forwarded-* set, the target and host read, and the HTTP/1
//! strictness checks (smuggling) made before anything is forwarded.

use super::conn::ConnCtx;
use crate::forwarded;
use crate::h1::PooledBuf;
use crate::rules::RuleEdits;
use crate::upstream;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Uri, Version};
use std::time::Duration;

pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static(forwarded::FOR);
pub(super) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static(forwarded::PROTO);
pub(super) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static(forwarded::HOST);
pub(super) const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub(super) const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Hop-by-hop headers (RFC 9110 7.6.1 and the de-facto Keep-Alive/Proxy-Connection).
/// `Trailer` is end-to-end (hyper needs it to send trailers), so it stays.
pub(super) const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    // not hop-by-hop by name, but rampart answers `100-continue` itself
    // (hyper does, once the body is first read) and sends the body with the
    // head: a server asked again could answer early and, believing the body
    // unsent, read it as the next request
    header::EXPECT,
];

pub(super) fn request_target<B>(req: &Request<B>) -> &str {
    req.uri().path_and_query().map_or("/", |p| p.as_str())
}

/// The host a request is for. HTTP/1: an absolute-form target's authority,
/// else Host (RFC 9112 3.2.2: the target's authority replaces Host). HTTP/2:
/// Host when a client sends one (as before), else `:authority`.
pub(super) fn request_host<B>(req: &Request<B>) -> Option<&str> {
    let host = || {
        req.headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
    };
    // the target's authority (HTTP/2's :authority, an absolute-form target)
    // wins over Host: RFC 9113 8.3.1, RFC 9112 3.2.2
    req.uri().authority().map(|a| a.as_str()).or_else(host)
}

/// An HTTP/1.1 protocol switch to tunnel (WebSocket and the like). `h2c` is not
/// tunnelled: the request is served as plain HTTP/1.1 instead, so routing and
/// balancing stay per request.
pub(super) fn is_upgrade_request<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && connection_has(req.headers(), "upgrade")
        && req.headers().get(header::UPGRADE).is_some_and(|v| {
            !v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"h2c"))
        })
}

pub(super) fn connection_has(h: &HeaderMap, token: &str) -> bool {
    h.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// The idle time a backend allows on its keep-alive connections (`Keep-Alive:
/// timeout=N`), less a second of margin so we never reuse one it is closing.
pub(super) fn keepalive_hint(h: &HeaderMap) -> Option<Duration> {
    crate::h1::keepalive_hint(h.get(&KEEP_ALIVE)?.as_bytes())
}

/// Removes hop-by-hop headers, including any header the Connection header names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages carry none of them: find the ones present by walking the few
    // keys (cheap comparisons of standard names) instead of hashing six names.
    let present = present(h, &HOP_BY_HOP);
    // (HOP_BY_HOP[0] is Connection)
    if present[0] {
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|t| {
                !t.is_empty()
                    && !t.eq_ignore_ascii_case("close")
                    && !t.eq_ignore_ascii_case("keep-alive")
                    && !t.eq_ignore_ascii_case("upgrade")
                    // end to end whatever Connection says (RFC 9110 7.6.1):
                    // the routes used it, as the fast path passes it on
                    && !t.eq_ignore_ascii_case("host")
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    for (n, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        h.remove(n);
    }
}

/// Which of `names` the map has, found by one walk over its keys: a few
/// comparisons each, where looking each name up hashes it.
fn present<const N: usize>(h: &HeaderMap, names: &[HeaderName; N]) -> [bool; N] {
    let mut p = [false; N];
    for k in h.keys() {
        if let Some(i) = names.iter().position(|n| n == k) {
            p[i] = true;
        }
    }
    p
}

/// A Content-Length given more than once with one value (a list, or several
/// fields: hyper's client accepts them when they agree) as one field with one
/// number (RFC 9110 8.6), as the raw path passes it on (`h1::RespHead`).
pub(super) fn one_content_length(h: &mut HeaderMap) {
    let mut all = h.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = all.next() else {
        return;
    };
    if all.next().is_none() && !first.as_bytes().contains(&b',') {
        return;
    }
    if let Ok(v) = HeaderValue::from_bytes(crate::h1::first_value(first.as_bytes())) {
        h.insert(header::CONTENT_LENGTH, v);
    }
}

/// Rewrites a client request into what the backend gets: HTTP/1.1, origin-form URI,
/// no hop-by-hop headers (but the upgrade handshake when tunnelling). X-Forwarded-*
/// come after: `set_forwarded` into the map, or `wire` into the bytes.
///
/// Returns the Host the client's request named (its field, or the authority
/// that replaced it; None: it had none) when rules edited the request (None:
/// the Host field is still the client's): what X-Forwarded-Host says, as on
/// the fast path, whatever a rule sets Host to.
pub(super) fn prepare_request(
    parts: &mut Parts,
    upgrade: bool,
    edits: Option<&RuleEdits>,
) -> Option<Option<HeaderValue>> {
    let h = &mut parts.headers;
    let upgrade_value = if upgrade {
        h.get(header::UPGRADE).cloned()
    } else {
        None
    };
    strip_hop_by_hop(h);
    // HTTP/2 and absolute-form requests carry the host in the URI, and it replaces
    // any Host field (RFC 9112 3.2.2; RFC 9113 8.3.1: an intermediary generating
    // Host from :authority replaces an existing one), before the rules' edits,
    // which may set Host themselves
    if let Some(a) = parts.uri.authority() {
        // (an HTTP/2 request's Host was made from :authority already)
        if h.get(header::HOST)
            .is_none_or(|v| v.as_bytes() != a.as_str().as_bytes())
        {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                h.insert(header::HOST, v);
            }
        }
        parts.uri = match parts.uri.path_and_query() {
            // an absolute-form target with an empty path and a query
            // (`http://a.example?q=1`): the routes saw the path "/", and the
            // server gets "/?q=1" (RFC 9112 3.2.1), not "?q=1"
            Some(pq) if pq.as_str().starts_with('?') => {
                Uri::try_from(format!("/{}", pq.as_str())).unwrap_or_else(|_| Uri::from_static("/"))
            }
            Some(pq) => Uri::from(pq.clone()),
            None => Uri::from_static("/"),
        };
    }
    // rules' header edits, before X-Forwarded-* (which stay rampart's); the
    // client's Host kept first only when they may change it
    let mut client_host = None;
    if let Some(e) = edits {
        client_host = Some(h.get(header::HOST).cloned());
        e.edit_request(h);
        // a rule's path (encoded by `rules::encode_path`, so it parses)
        if let Some(t) = e.target.as_deref().and_then(|t| Uri::try_from(t).ok()) {
            parts.uri = t;
        }
    }
    if let Some(v) = upgrade_value {
        h.insert(header::UPGRADE, v);
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }

    let from_h2 = parts.version == Version::HTTP_2;
    parts.version = Version::HTTP_11;

    // HTTP/2 may split cookies over several fields; HTTP/1.1 wants one line
    // (RFC 9113 8.2.3).
    if from_h2 {
        let mut cookies = h.get_all(header::COOKIE).iter();
        if let (Some(_), Some(_)) = (cookies.next(), cookies.next()) {
            let joined: Vec<u8> = h
                .get_all(header::COOKIE)
                .iter()
                .map(|c| c.as_bytes())
                .collect::<Vec<_>>()
                .join(&b"; "[..]);
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                h.insert(header::COOKIE, v);
            }
        }
    }
    client_host
}

/// X-Forwarded-* as `forwarded` says: what earlier hops wrote in X-Forwarded-For
/// is kept, everything else the client sent under these names is replaced.
/// What earlier hops wrote in X-Forwarded-For, joined with ", ".
fn prior_for(h: &HeaderMap) -> Option<Vec<u8>> {
    let mut prior: Option<Vec<u8>> = None;
    for v in h.get_all(&X_FORWARDED_FOR) {
        let p = prior.get_or_insert_with(|| Vec::with_capacity(64));
        if !p.is_empty() {
            p.extend_from_slice(b", ");
        }
        p.extend_from_slice(v.as_bytes());
    }
    prior
}

/// The client certificate's subject: only rampart writes that header.
fn set_client_subject(h: &mut HeaderMap, ctx: &ConnCtx) {
    if let Some(tls) = &ctx.tls {
        if let Some(name) = &tls.subject_header {
            h.remove(name);
            // the same name with `_` for `-`: CGI, WSGI and Rack servers read
            // both as one (`HTTP_X_CLIENT_SUBJECT`), so a client's copy must
            // not pass as rampart's
            if name.as_str().contains('-') {
                if let Ok(under) =
                    HeaderName::from_bytes(name.as_str().replace('-', "_").as_bytes())
                {
                    h.remove(under);
                }
            }
            if let Some(v) = tls
                .client_subject
                .as_deref()
                .and_then(|s| HeaderValue::from_str(s).ok())
            {
                h.insert(name.clone(), v);
            }
        }
    }
}

/// The head of a request `prepare_request` left, without its X-Forwarded-*
/// fields, as the bytes an HTTP/1.1 server gets: they are written straight to
/// the wire (as on the fast path) rather than into the map. `body`: the length
/// of the body that follows it.
pub(super) fn wire(
    parts: &mut Parts,
    ctx: &ConnCtx,
    client_ip: &[u8],
    host: Option<Option<&HeaderValue>>,
    body: usize,
    length: bool,
) -> PooledBuf {
    set_client_subject(&mut parts.headers, ctx);
    let prior = prior_for(&parts.headers);
    let real_ip = ctx.permits.listener().client_ip_header.load();
    let xf = forwarded::XForwarded {
        prior_for: prior.as_deref(),
        client_ip,
        proto: ctx.shared.proto,
        host: host
            .unwrap_or_else(|| parts.headers.get(header::HOST))
            .map(HeaderValue::as_bytes),
        real_ip: real_ip.get(),
    };
    upstream::wire_request(parts, body, length, &xf)
}

/// The X-Forwarded-* fields rampart writes for a request (at most three),
/// made by [`forwarded`]: into the map ([`set_forwarded`]), or kept beside it
/// for an HTTP/2 server's encoder, which appends them to the map's fields.
pub(crate) type Forwarded = Vec<(HeaderName, HeaderValue)>;

/// `host`: the Host the client's request named, when rules edited it
/// (`prepare_request`); `client_ip`: the request's client as text (the
/// connection's, or the one `client_ip_from` believes).
pub(super) fn set_forwarded(
    h: &mut HeaderMap,
    ctx: &ConnCtx,
    client_ip: &[u8],
    host: Option<Option<HeaderValue>>,
) {
    made(h, ctx, client_ip, host, |h, n, v| {
        h.append(n, v);
    });
}

/// [`set_forwarded`] but for the X-Forwarded-* fields themselves, which come
/// back to go after the map's: what the client sent under their names is
/// gone from `h`, and the client subject's and `client_ip_header`'s fields
/// are set in it. A request kept for an HTTP/2 server carries them so (three
/// insertions into the map, with their hashing, were about 750 instructions
/// of a gRPC call).
pub(super) fn forwarded(
    h: &mut HeaderMap,
    ctx: &ConnCtx,
    client_ip: &[u8],
    host: Option<Option<HeaderValue>>,
) -> Forwarded {
    let mut out = Forwarded::with_capacity(3);
    made(h, ctx, client_ip, host, |_, n, v| out.push((n, v)));
    out
}

/// The work of both: each X-Forwarded-* field goes to `put`, with the map.
fn made(
    h: &mut HeaderMap,
    ctx: &ConnCtx,
    client_ip: &[u8],
    host: Option<Option<HeaderValue>>,
    mut put: impl FnMut(&mut HeaderMap, HeaderName, HeaderValue),
) {
    const XF: [HeaderName; 4] = [
        X_FORWARDED_FOR,
        X_FORWARDED_PROTO,
        X_FORWARDED_HOST,
        header::FORWARDED,
    ];
    // (most requests carry none: a walk over the keys, not three lookups)
    let present = present(h, &XF);
    let prior = if present[0] { prior_for(h) } else { None };
    for (n, _) in XF.iter().zip(present).filter(|(_, p)| *p) {
        h.remove(n);
    }
    set_client_subject(h, ctx);
    let host = host.unwrap_or_else(|| h.get(header::HOST).cloned());
    let real_ip = ctx.permits.listener().client_ip_header.load();
    let xf = forwarded::XForwarded {
        prior_for: prior.as_deref(),
        client_ip,
        proto: ctx.shared.proto,
        host: host.as_ref().map(HeaderValue::as_bytes),
        real_ip: real_ip.get(),
    };
    if let Some(name) = xf.real_ip {
        // the client's own lines give way, `_` spellings too; rampart's last
        let theirs: Vec<HeaderName> = h
            .keys()
            .filter(|k| forwarded::replaced_by(Some(name), k.as_str().as_bytes()))
            .cloned()
            .collect();
        for k in theirs {
            h.remove(k);
        }
        if let Ok(v) = HeaderValue::from_bytes(xf.client_ip) {
            h.append(name.clone(), v);
        }
    }
    xf.fields(|name, parts| {
        // the protocol is a static string, the host a copy of Host (shared,
        // not copied): only X-Forwarded-For is new bytes
        let value = match (name, parts, &host) {
            (forwarded::PROTO, _, _) => match ctx.shared.proto {
                "http" => Ok(HeaderValue::from_static("http")),
                "https" => Ok(HeaderValue::from_static("https")),
                p => HeaderValue::from_str(p),
            },
            (forwarded::HOST, _, Some(v)) => Ok(v.clone()),
            (_, [one], _) => HeaderValue::from_bytes(one),
            _ => HeaderValue::from_bytes(&parts.concat()),
        };
        if let Ok(v) = value {
            // (a constant's name is built at compile time, `from_static`'s
            // at run time)
            let n = match name {
                forwarded::FOR => X_FORWARDED_FOR,
                forwarded::PROTO => X_FORWARDED_PROTO,
                forwarded::HOST => X_FORWARDED_HOST,
                other => HeaderName::from_static(other),
            };
            put(h, n, v);
        }
    });
}

/// A gRPC request (its content type says so).
pub(super) fn is_grpc(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// A server's `grpc-status`, from trailers or a trailers-only answer's headers.
pub(super) fn grpc_status(h: &HeaderMap) -> Option<u32> {
    const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
    std::str::from_utf8(h.get(GRPC_STATUS)?.as_bytes())
        .ok()?
        .parse()
        .ok()
}
