//! `error_pages` (`[global]` and `[[listener]]`): files read when the config
//! is, a HAProxy `errorfile` (a whole HTTP response) or a plain body.

use crate::config::model::{ErrorPage, ErrorPages};
use crate::config::problems::{KeyPath, Problems};
use std::collections::BTreeMap;
use std::path::Path;

/// The longest page read (HAProxy's own limit is its buffer size, 16 KiB).
const MAX_PAGE: u64 = 64 * 1024;

/// Reads every page of `files` (status → path, relative to `base`).
pub(super) fn pages(
    files: &BTreeMap<String, String>,
    at: &KeyPath,
    base: &Path,
    p: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> ErrorPages {
    let mut out = Vec::new();
    for (code, path) in files {
        // (the table's key: its entries are named in the message)
        let key = at;
        let status = match code.parse::<u16>() {
            Ok(n @ 400..=599) => http::StatusCode::from_u16(n).ok(),
            _ => None,
        };
        let Some(status) = status else {
            p.add(
                key,
                format!("{code:?} is not an error status: write one from \"400\" to \"599\""),
            );
            continue;
        };
        let file = if Path::new(path).is_absolute() {
            Path::new(path).to_path_buf()
        } else {
            base.join(path)
        };
        let read = std::fs::File::open(&file).and_then(|f| {
            use std::io::Read;
            let mut v = Vec::new();
            f.take(MAX_PAGE + 1).read_to_end(&mut v)?;
            Ok(v)
        });
        match read {
            Err(e) => p.add(key, format!("{code}: {}: cannot read: {e}", file.display())),
            Ok(v) if v.len() as u64 > MAX_PAGE => p.add(
                key,
                format!(
                    "{code}: {} is longer than {} KiB",
                    file.display(),
                    MAX_PAGE / 1024
                ),
            ),
            Ok(v) => match page(status, &v, &file) {
                Ok((page, other)) => {
                    if let Some(other) = other {
                        warnings.push(format!(
                            "{at}: {code}: {} answers {other}: served with {code}, the status of what went wrong",
                            file.display()
                        ));
                    }
                    out.push(page);
                }
                Err(why) => p.add(key, format!("{code}: {}: {why}", file.display())),
            },
        }
    }
    ErrorPages(out)
}

/// A page from a file's bytes: a whole HTTP response (HAProxy's errorfile:
/// `HTTP/1.0 503 Service Unavailable`, fields, a blank line, the body), with
/// the status it says if that is not `status` (the answer keeps `status`);
/// else the file is the body, its Content-Type told by its extension.
fn page(
    status: http::StatusCode,
    file: &[u8],
    path: &Path,
) -> Result<(ErrorPage, Option<u16>), String> {
    if !file.starts_with(b"HTTP/") {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let ctype = match ext.to_ascii_lowercase().as_str() {
            "html" | "htm" => "text/html; charset=utf-8",
            "json" => "application/json",
            "xml" => "application/xml",
            _ => "text/plain; charset=utf-8",
        };
        let page = ErrorPage {
            status,
            headers: vec![(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(ctype),
            )],
            body: bytes::Bytes::copy_from_slice(file),
        };
        return Ok((page, None));
    }
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut slots);
    let len = match resp.parse(file) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err("an HTTP response without the blank line that ends its head".into())
        }
        Err(e) => return Err(format!("not a valid HTTP response: {e}")),
    };
    let other = resp.code.filter(|&c| c != status.as_u16());
    let mut headers = Vec::new();
    for h in resp.headers.iter() {
        let name = http::HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| format!("invalid field name {:?}", h.name))?;
        // framing and hop-by-hop fields are the answer's own
        if matches!(
            name.as_str(),
            "content-length"
                | "transfer-encoding"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "upgrade"
                | "te"
                | "trailer"
        ) {
            continue;
        }
        let value = http::HeaderValue::from_bytes(h.value)
            .map_err(|_| format!("invalid value of {}", h.name))?;
        headers.push((name, value));
    }
    let page = ErrorPage {
        status,
        headers,
        body: bytes::Bytes::copy_from_slice(&file[len..]),
    };
    Ok((page, other))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_haproxy_errorfile_or_a_plain_body() {
        let s = http::StatusCode::SERVICE_UNAVAILABLE;
        let raw = b"HTTP/1.0 503 Service Unavailable\r\nCache-Control: no-cache\r\nConnection: close\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\n<h1>x";
        let (p, other) = page(s, raw, Path::new("503.http")).unwrap();
        assert_eq!(other, None);
        let names: Vec<&str> = p.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["cache-control", "content-type"]);
        assert_eq!(&p.body[..], b"<h1>x");
        // LF line ends, as such files are often saved
        let lf = b"HTTP/1.0 503 Service Unavailable\nContent-Type: text/html\n\nhi\n";
        assert_eq!(&page(s, lf, Path::new("x")).unwrap().0.body[..], b"hi\n");
        // another status than the key's: said, and the key's is served
        let (p, other) = page(http::StatusCode::BAD_GATEWAY, raw, Path::new("x")).unwrap();
        assert_eq!((p.status.as_u16(), other), (502, Some(503)));
        assert!(page(s, b"HTTP/1.0 503 x\r\nbad", Path::new("x")).is_err());
        let (html, _) = page(s, b"<p>down</p>", Path::new("down.HTML")).unwrap();
        assert_eq!(html.headers[0].1, "text/html; charset=utf-8");
        assert_eq!(&html.body[..], b"<p>down</p>");
    }
}
