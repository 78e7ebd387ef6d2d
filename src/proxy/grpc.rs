//! gRPC clients get rampart's own errors as gRPC statuses (trailers-only), and
//! the access log their `grpc-status`.

use super::body::ProxyBody;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

/// A gRPC client reads its outcome from `grpc-status`, not the HTTP status: an
/// answer rampart made itself (no server, queue timeout, 502, 504, 431...)
/// becomes a trailers-only gRPC response (HTTP 200, `grpc-status` and
/// `grpc-message`), with the code gRPC's HTTP mapping gives the status
/// (429, 502, 503, 504: UNAVAILABLE). A server's own answers pass as they are.
pub(super) fn grpc_error(resp: Response<ProxyBody>) -> Response<ProxyBody> {
    if !matches!(resp.body(), ProxyBody::Full(_)) || resp.status() == StatusCode::OK {
        return resp;
    }
    let code = grpc_code(resp.status().as_u16());
    let message = match resp.body() {
        ProxyBody::Full(Some(b)) => String::from_utf8_lossy(b).trim().to_string(),
        _ => resp.status().to_string(),
    };
    // grpc-message is percent-encoded (gRPC over HTTP/2, "Responses")
    let mut enc = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    let mut out = Response::new(ProxyBody::empty());
    let h = out.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(&enc) {
        h.insert("grpc-message", v);
    }
    out
}

/// The gRPC status of an HTTP status rampart answered with (gRPC's HTTP mapping).
pub(super) fn grpc_code(status: u16) -> u32 {
    match status {
        200 => 0,                    // OK
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => 14, // UNAVAILABLE
        _ => 2,                      // UNKNOWN
    }
}
