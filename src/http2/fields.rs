//! What RFC 9113 8.2 asks of a field, whichever way it goes: the checks the
//! server side makes of a client's request and the client side of a server's
//! response.

use super::hpack;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Fields HTTP/2 forbids (RFC 9113 8.2.2).
pub fn is_connection_specific(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        // (a byte comparison: a name is lowercase already)
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// RFC 9113 8.2.1: no NUL, CR or LF, no whitespace at either end.
pub fn valid_value(v: &[u8]) -> bool {
    !edge_whitespace(v) && !v.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n')
}

fn edge_whitespace(v: &[u8]) -> bool {
    match (v.first(), v.last()) {
        (Some(&a), Some(&z)) => a == b' ' || a == b'\t' || z == b' ' || z == b'\t',
        _ => false,
    }
}

/// A regular (not pseudo) field as kept, or why it makes its message
/// malformed (RFC 9113 8.2.1, 8.2.2). The value is shared with the decoder's
/// table where it lives there.
pub fn regular(
    name: &[u8],
    val: hpack::Value<'_>,
) -> Result<(HeaderName, HeaderValue), &'static str> {
    if name.is_empty() || !name.iter().all(|&b| TOKEN_LOWER[b as usize]) {
        return Err("a field name with an uppercase or non-token byte");
    }
    let n = HeaderName::from_bytes(name).map_err(|_| "an invalid field name")?;
    if is_connection_specific(&n) {
        return Err("a connection-specific field");
    }
    // (HeaderValue refuses NUL, CR, LF and the other control bytes)
    if edge_whitespace(val.bytes()) {
        return Err("a field value with whitespace at an end");
    }
    let v = HeaderValue::from_maybe_shared(val.to_bytes()).map_err(|_| "an invalid field value")?;
    Ok((n, v))
}

/// A content-length field's value, given the one an earlier field said
/// (several must agree: RFC 9110 8.6).
pub fn content_length(value: &[u8], before: Option<u64>) -> Result<u64, &'static str> {
    let n = std::str::from_utf8(value)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or("an invalid content-length")?;
    match before {
        Some(b) if b != n => Err("two content-lengths"),
        _ => Ok(n),
    }
}

/// Token characters (RFC 9110 5.6.2) other than uppercase letters.
static TOKEN_LOWER: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

/// A header block's fields as they are decoded (a request's or a response's
/// regular fields, or trailers), and what was wrong with them.
pub struct Block {
    pub headers: HeaderMap,
    /// A regular field came: no pseudo-header may follow.
    pub regular_seen: bool,
    pub malformed: Option<&'static str>,
    size: usize,
    limit: usize,
    /// Over `limit` as RFC 9113 6.5.2 counts a header list.
    pub too_large: bool,
    pub trailers: bool,
    pub content_length: Option<u64>,
}

impl Block {
    /// `capacity`: the fields expected (the map is sized once for them).
    pub fn new(limit: usize, trailers: bool, capacity: usize) -> Block {
        Block {
            headers: HeaderMap::with_capacity(capacity),
            regular_seen: false,
            malformed: None,
            size: 0,
            limit,
            too_large: false,
            trailers,
            content_length: None,
        }
    }

    /// The first reason the block is malformed is the one kept.
    pub fn bad(&mut self, why: &'static str) {
        if self.malformed.is_none() {
            self.malformed = Some(why);
        }
    }

    /// Counts a field against the limit: false when the block is already too
    /// large or malformed, and the field is not looked at.
    pub fn count(&mut self, name: &[u8], value: &[u8]) -> bool {
        self.size += name.len() + value.len() + 32;
        if self.size > self.limit {
            self.too_large = true;
        }
        !self.too_large && self.malformed.is_none()
    }

    /// A regular field: checked, and kept unless `refuse` says why not.
    pub fn regular(
        &mut self,
        name: &[u8],
        val: hpack::Value<'_>,
        refuse: impl FnOnce(&HeaderName, &[u8]) -> Option<&'static str>,
    ) {
        self.regular_seen = true;
        let (n, v) = match regular(name, val) {
            Ok(f) => f,
            Err(why) => return self.bad(why),
        };
        if let Some(why) = refuse(&n, val.bytes()) {
            return self.bad(why);
        }
        if n == header::CONTENT_LENGTH && !self.trailers {
            match content_length(val.bytes(), self.content_length) {
                Ok(n) => self.content_length = Some(n),
                Err(why) => return self.bad(why),
            }
        }
        self.headers.append(n, v);
    }
}
