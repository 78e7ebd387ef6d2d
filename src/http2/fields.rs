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
/// malformed (RFC 9113 8.2.1, 8.2.2). The name is the table's where it lives
/// there, and so is the value.
pub fn regular(
    name: hpack::Name<'_>,
    val: hpack::Value<'_>,
) -> Result<(HeaderName, HeaderValue), &'static str> {
    let n = match name.header {
        Some(n) => n.clone(),
        None => hpack::header_name(name.bytes)
            .ok_or("a field name with an uppercase or non-token byte")?,
    };
    if is_connection_specific(&n) {
        return Err("a connection-specific field");
    }
    // (HeaderValue refuses NUL, CR, LF and the other control bytes)
    if edge_whitespace(val.bytes()) {
        return Err("a field value with whitespace at an end");
    }
    let v = match val {
        // (checked when the memo kept it)
        hpack::Value::Memo(_, v) => v.clone(),
        _ => {
            let mut v = HeaderValue::from_maybe_shared(val.to_bytes())
                .map_err(|_| "an invalid field value")?;
            // (sent on "never indexed", as it came)
            v.set_sensitive(matches!(val, hpack::Value::Sensitive(_)));
            v
        }
    };
    Ok((n, v))
}

/// A thread's header maps kept for the requests that follow: a map is two
/// allocations (its index and its entries), and an HTTP/2 exchange makes up
/// to three (the request's, the answer's, its trailers). Bounded: a burst
/// leaves at most `SPARE_MAPS` behind, none with room for more than
/// `SPARE_MAP_FIELDS` fields. A map for 12 fields is 1,312 bytes (12 entries
/// of 104 and a 64-byte index), one for 24 is 2,624: at most 330 KiB a worker
/// thread. 32 maps kept about half of them through the bench's 100 streams
/// at once; 128 keep nearly all.
const SPARE_MAPS: usize = 128;
const SPARE_MAP_FIELDS: usize = 24;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<HeaderMap>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An empty map: a spare of this thread's, or a new one for `capacity` fields.
pub fn map(capacity: usize) -> HeaderMap {
    SPARE
        .try_with(|s| s.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| HeaderMap::with_capacity(capacity))
}

/// A map done with: emptied and kept for `map` when there is room.
pub fn recycle(mut h: HeaderMap) {
    let cap = h.capacity();
    if cap == 0 || cap > SPARE_MAP_FIELDS {
        return;
    }
    h.clear();
    let _ = SPARE.try_with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < SPARE_MAPS {
            s.push(h);
        }
    });
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
            headers: map(capacity),
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
        name: hpack::Name<'_>,
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
            let again = self.content_length.is_some();
            match content_length(val.bytes(), self.content_length) {
                Ok(n) => self.content_length = Some(n),
                Err(why) => return self.bad(why),
            }
            if again {
                // the same length twice (RFC 9110 8.6 lets it be taken as
                // one): kept once, as an HTTP/1.1 server must get it
                return;
            }
        }
        if self.headers.try_append(n, v).is_err() {
            // more fields than a HeaderMap holds (24,576): only a header list
            // limit set far above the default lets that many through
            self.too_large = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More fields than a HeaderMap holds (24,576, with a header list limit
    /// set far above the default) make the list too large; no panic.
    #[test]
    fn more_fields_than_a_map_holds_make_the_list_too_large() {
        let mut b = Block::new(16 << 20, false, 0);
        let mut full = false;
        for i in 0..30_000 {
            let name = format!("x-{i}");
            if !b.count(name.as_bytes(), b"") {
                full = true;
                break;
            }
            b.regular(
                hpack::Name::bare(name.as_bytes()),
                hpack::Value::Scratch(b""),
                |_, _| None,
            );
        }
        assert!(full && b.too_large);
        assert!(b.headers.len() <= 24_576);
    }

    #[test]
    fn a_regular_field_takes_the_tables_name_or_checks_the_bytes() {
        let (n, v) = regular(
            hpack::Name::bare(b"grpc-status"),
            hpack::Value::Scratch(b"0"),
        )
        .unwrap();
        assert_eq!((n.as_str(), v.as_bytes()), ("grpc-status", &b"0"[..]));
        let bare = |n: &'static [u8]| regular(hpack::Name::bare(n), hpack::Value::Scratch(b"1"));
        assert!(bare(b"X-Up").is_err());
        assert!(bare(b"connection").is_err());
        assert!(bare(b"x-ok").is_ok());
        // a name a table made is taken as it is (checked when it was made)
        let h = HeaderName::from_static("x-made");
        let named = hpack::Name {
            bytes: b"x-made",
            header: Some(&h),
        };
        assert_eq!(regular(named, hpack::Value::Scratch(b"1")).unwrap().0, h);
        // a connection-specific name is refused whichever way it came
        let te = hpack::Name {
            bytes: b"transfer-encoding",
            header: Some(&header::TRANSFER_ENCODING),
        };
        assert!(regular(te, hpack::Value::Scratch(b"chunked")).is_err());
        assert!(regular(named, hpack::Value::Scratch(b" edge")).is_err());
        // a value sent "never indexed" is marked sensitive, to go on that way
        let auth = hpack::Name::bare(b"authorization");
        assert!(regular(auth, hpack::Value::Sensitive(b"t"))
            .unwrap()
            .1
            .is_sensitive());
        assert!(!regular(auth, hpack::Value::Scratch(b"t"))
            .unwrap()
            .1
            .is_sensitive());
    }

    /// RFC 9110 8.6: a length repeated with the same value may be taken as
    /// one, and is kept once (an HTTP/1.1 server gets one Content-Length, as
    /// rampart's own HTTP/1 side insists on); two values are malformed.
    #[test]
    fn a_repeated_content_length_is_kept_once_and_two_lengths_are_malformed() {
        let cl = hpack::Name::bare(b"content-length");
        let mut b = Block::new(16_384, false, 0);
        b.regular(cl, hpack::Value::Scratch(b"5"), |_, _| None);
        b.regular(cl, hpack::Value::Scratch(b"5"), |_, _| None);
        assert_eq!(b.malformed, None);
        assert_eq!(b.content_length, Some(5));
        let got: Vec<_> = b.headers.get_all(header::CONTENT_LENGTH).iter().collect();
        assert_eq!(got, [&HeaderValue::from_static("5")]);
        b.regular(cl, hpack::Value::Scratch(b"6"), |_, _| None);
        assert_eq!(b.malformed, Some("two content-lengths"));
    }

    #[test]
    fn a_map_done_with_serves_the_next_one_empty_and_a_large_one_is_not_kept() {
        // (a test thread of its own: its spares start empty)
        std::thread::spawn(|| {
            let mut h = map(12);
            let cap = h.capacity();
            h.append(header::CONTENT_TYPE, HeaderValue::from_static("a"));
            h.append(header::CONTENT_TYPE, HeaderValue::from_static("b"));
            h.append(header::ACCEPT, HeaderValue::from_static("c"));
            recycle(h);
            let again = map(0);
            assert!(again.is_empty(), "{again:?}");
            assert_eq!(again.capacity(), cap, "the same map, its room kept");
            assert!(again.get(header::CONTENT_TYPE).is_none());
            // none left: a new one
            assert_eq!(map(0).capacity(), 0);
            // a map grown past the bound goes
            let mut big = HeaderMap::with_capacity(SPARE_MAP_FIELDS + 1);
            big.append(header::ACCEPT, HeaderValue::from_static("c"));
            recycle(big);
            assert_eq!(map(0).capacity(), 0);
            // and at most SPARE_MAPS are kept
            for _ in 0..SPARE_MAPS + 5 {
                recycle(HeaderMap::with_capacity(4));
            }
            let kept = (0..SPARE_MAPS + 5)
                .map(|_| map(0))
                .filter(|m| m.capacity() > 0)
                .count();
            assert_eq!(kept, SPARE_MAPS);
        })
        .join()
        .unwrap();
    }
}
