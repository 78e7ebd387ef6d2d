//! `[listener.compression]`: which answers are gzipped on their way to a
//! client that accepts it, as nginx's `gzip` and HAProxy's `compression`
//! decide, and their fields; the body itself is `body::Gzip`.

use crate::config::Compression;
use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;

/// Whether the request's Accept-Encoding takes gzip: `gzip` (or `x-gzip`),
/// or `*` where gzip is not named, with a q-value above 0.
pub fn accepts_gzip<'a>(lines: impl Iterator<Item = &'a [u8]>) -> bool {
    let mut star = false;
    for line in lines {
        for item in line.split(|&b| b == b',') {
            let mut parts = item.split(|&b| b == b';');
            let coding = parts.next().unwrap_or_default().trim_ascii();
            let q_zero = parts.any(|p| {
                let p = p.trim_ascii();
                p.len() >= 2
                    && p[..2].eq_ignore_ascii_case(b"q=")
                    && std::str::from_utf8(&p[2..])
                        .ok()
                        .and_then(|v| v.trim().parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
            });
            if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip") {
                // (named: its own q-value decides, whatever `*` says)
                return !q_zero;
            }
            if coding == b"*" {
                star = !q_zero;
            }
        }
    }
    star
}

/// Whether a server's answer `status`, `headers` to a request is gzipped:
/// 200, 403 or 404 (nginx's), of a listed type, not encoded already, not a
/// range, not `no-transform`, not shorter than `min_length`, not gRPC.
pub fn applies(c: &Compression, status: StatusCode, headers: &HeaderMap) -> bool {
    if !matches!(status.as_u16(), 200 | 403 | 404)
        || headers
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
        || headers.contains_key(header::CONTENT_RANGE)
    {
        return false;
    }
    let no_transform = headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
    });
    if no_transform {
        return false;
    }
    let short = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n < c.min_length);
    if short {
        return false;
    }
    let Some(ctype) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let media = ctype
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if media.starts_with("application/grpc") {
        return false;
    }
    c.types.iter().any(|t| {
        t == "*"
            || *t == media
            || t.strip_suffix("/*")
                .is_some_and(|major| media.split_once('/').is_some_and(|(m, _)| m == major))
    })
}

/// The fields of an answer about to be gzipped: Content-Encoding set,
/// Content-Length and Accept-Ranges gone, `Vary: Accept-Encoding` added,
/// a strong ETag made weak (the bytes differ; nginx and HAProxy do the same).
pub fn mark(headers: &mut HeaderMap) {
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    vary(headers);
    if let Some(etag) = headers.get(header::ETAG) {
        if etag.as_bytes().starts_with(b"\"") {
            let mut weak = b"W/".to_vec();
            weak.extend_from_slice(etag.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&weak) {
                headers.insert(header::ETAG, v);
            }
        }
    }
}

/// `Vary: Accept-Encoding` on an answer that would be gzipped for a client
/// that takes it, whether this one does or not (a cache then keeps both;
/// nginx's `gzip_vary on` says it on both).
pub fn vary(headers: &mut HeaderMap) {
    let varies = headers.get_all(header::VARY).iter().any(|v| {
        v.as_bytes().split(|&b| b == b',').any(|t| {
            let t = t.trim_ascii();
            t == b"*" || t.eq_ignore_ascii_case(b"accept-encoding")
        })
    });
    if !varies {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_is_read_with_its_q_values() {
        let ok = |v: &str| accepts_gzip(std::iter::once(v.as_bytes()));
        assert!(ok("gzip"));
        assert!(ok("deflate, GZIP;q=0.5"));
        assert!(ok("br, x-gzip"));
        assert!(ok("*"));
        assert!(!ok("gzip;q=0"));
        assert!(!ok("gzip; q=0.0, *"));
        assert!(!ok("*;q=0"));
        assert!(!ok("br, deflate"));
        assert!(!ok("identity"));
        assert!(!ok(""));
        assert!(accepts_gzip(["br", "gzip"].iter().map(|v| v.as_bytes())));
    }

    fn answer(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_listed_whole_unencoded_answers_are_compressed() {
        let c = Compression {
            types: vec!["text/html".into(), "application/*".into()],
            min_length: 20,
            level: 1,
        };
        let html = [("content-type", "text/html; charset=utf-8")];
        assert!(applies(&c, StatusCode::OK, &answer(&html)));
        assert!(applies(&c, StatusCode::NOT_FOUND, &answer(&html)));
        assert!(applies(
            &c,
            StatusCode::OK,
            &answer(&[("content-type", "application/json")])
        ));
        for (status, fields) in [
            (StatusCode::CREATED, &html[..]),
            (StatusCode::OK, &[("content-type", "text/css")][..]),
            (StatusCode::OK, &[][..]),
            (StatusCode::OK, &[("content-type", "application/grpc")][..]),
            (
                StatusCode::OK,
                &[("content-type", "text/html"), ("content-encoding", "br")][..],
            ),
            (
                StatusCode::OK,
                &[("content-type", "text/html"), ("content-length", "19")][..],
            ),
            (
                StatusCode::OK,
                &[
                    ("content-type", "text/html"),
                    ("cache-control", "public, no-transform"),
                ][..],
            ),
            (
                StatusCode::OK,
                &[
                    ("content-type", "text/html"),
                    ("content-range", "bytes 0-9/99"),
                ][..],
            ),
        ] {
            assert!(!applies(&c, status, &answer(fields)), "{status} {fields:?}");
        }
    }

    #[test]
    fn marked_fields_say_gzip_and_vary() {
        let mut h = answer(&[
            ("content-length", "100"),
            ("accept-ranges", "bytes"),
            ("etag", "\"abc\""),
            ("vary", "Origin"),
        ]);
        mark(&mut h);
        assert_eq!(h["content-encoding"], "gzip");
        assert!(!h.contains_key("content-length") && !h.contains_key("accept-ranges"));
        assert_eq!(h["etag"], "W/\"abc\"");
        let vary: Vec<_> = h.get_all("vary").iter().collect();
        assert_eq!(vary, ["Origin", "Accept-Encoding"]);
        let mut h = answer(&[("vary", "accept-encoding"), ("etag", "W/\"x\"")]);
        mark(&mut h);
        assert_eq!(h.get_all("vary").iter().count(), 1);
        assert_eq!(h["etag"], "W/\"x\"");
    }
}
