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

/// Answers being compressed now, in the whole process: each holds a
/// compressor (some 370 KiB) from its first part to its end.
static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// At most this many answers are compressed at once (about 92 MiB of
/// compressors, some 370 KiB each; HAProxy's `maxzlibmem` bounds the same): past it an answer
/// goes as the server sent it, so slow clients holding many streams open
/// cannot make the proxy hold compressors without end.
pub const MAX_LIVE: usize = 256;

/// A place among the `MAX_LIVE` answers compressed at once, given back when
/// dropped.
pub struct Slot(());

impl Slot {
    pub fn take() -> Option<Slot> {
        use std::sync::atomic::Ordering;
        let n = LIVE.fetch_add(1, Ordering::Relaxed);
        if n >= MAX_LIVE {
            LIVE.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Slot(()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A gzip stream, written part by part: a deflate compressor taken from this
/// thread's pool (a compressor is some 370 KiB of tables: made for each
/// answer, its allocation and first touch cost more than compressing a
/// 16 KiB answer) and given back, reset, when the stream is dropped.
pub struct Deflate {
    c: Option<flate2::Compress>,
    level: u32,
    crc: flate2::Crc,
    header: bool,
}

/// The gzip header rampart writes: no name, no time, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// Compressors kept per thread and level (a bound on the memory held idle).
const POOL_MAX: usize = 8;

thread_local! {
    static POOL: std::cell::RefCell<Vec<(u32, flate2::Compress)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Deflate {
    pub fn new(level: u32) -> Deflate {
        let pooled = POOL.with(|p| {
            let mut p = p.borrow_mut();
            let i = p.iter().position(|(l, _)| *l == level)?;
            Some(p.swap_remove(i).1)
        });
        Deflate {
            c: Some(
                pooled.unwrap_or_else(|| {
                    flate2::Compress::new(flate2::Compression::new(level), false)
                }),
            ),
            level,
            crc: flate2::Crc::new(),
            header: false,
        }
    }

    /// `data` compressed and flushed (`finish`: and the stream ended, with
    /// gzip's trailer), to be sent at once.
    pub fn feed(&mut self, data: &[u8], finish: bool) -> std::io::Result<Vec<u8>> {
        let Some(c) = self.c.as_mut() else {
            return Err(std::io::Error::other("the gzip stream has ended"));
        };
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        if !self.header {
            out.extend_from_slice(&GZIP_HEADER);
            self.header = true;
        }
        self.crc.update(data);
        let flush = if finish {
            flate2::FlushCompress::Finish
        } else {
            flate2::FlushCompress::Sync
        };
        let mut input = data;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(4096.max(input.len() / 2));
            }
            let before = c.total_in();
            let status = match c.compress_vec(input, &mut out, flush) {
                Ok(s) => s,
                Err(e) => {
                    // (not given back: a stream cut mid-block is not clean)
                    self.c = None;
                    return Err(std::io::Error::other(e));
                }
            };
            input = &input[(c.total_in() - before) as usize..];
            // done when all is in and the flush left room in the output
            // (a full output may hold back the flush's end)
            let done = match status {
                flate2::Status::StreamEnd => true,
                _ => !finish && input.is_empty() && out.len() < out.capacity(),
            };
            if done {
                break;
            }
        }
        if finish {
            out.extend_from_slice(&self.crc.sum().to_le_bytes());
            out.extend_from_slice(&self.crc.amount().to_le_bytes());
            self.give_back();
        }
        // (a Vec's spare room stays with its Bytes while a slow client reads)
        if out.len() < out.capacity() / 2 {
            out.shrink_to_fit();
        }
        Ok(out)
    }

    fn give_back(&mut self) {
        if let Some(mut c) = self.c.take() {
            c.reset();
            let level = self.level;
            // (`try_with`: not once the thread's locals are gone)
            let _ = POOL.try_with(|p| {
                let mut p = p.borrow_mut();
                if p.iter().filter(|(l, _)| *l == level).count() < POOL_MAX {
                    p.push((level, c));
                }
            });
        }
    }
}

impl Drop for Deflate {
    fn drop(&mut self) {
        self.give_back();
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
    fn a_stream_of_parts_is_one_gzip_member_and_compressors_are_reused() {
        use std::io::Write;
        let parts: Vec<Vec<u8>> = (0..50)
            .map(|i| {
                format!("part {i} of the same words again and again\n")
                    .repeat(i % 7 + 1)
                    .into_bytes()
            })
            .collect();
        for round in 0..3 {
            let mut d = Deflate::new(1);
            let mut out = Vec::new();
            let mut dec = flate2::write::GzDecoder::new(Vec::new());
            for (i, p) in parts.iter().enumerate() {
                let chunk = d.feed(p, false).unwrap();
                out.extend_from_slice(&chunk);
                // each part is decodable as soon as it is sent
                dec.write_all(&chunk).unwrap();
                dec.flush().unwrap();
                let so_far: usize = parts[..=i].iter().map(Vec::len).sum();
                assert_eq!(dec.get_ref().len(), so_far, "round {round} part {i}");
            }
            out.extend_from_slice(&d.feed(&[], true).unwrap());
            assert!(d.feed(b"x", false).is_err(), "ended");
            let mut whole = flate2::write::GzDecoder::new(Vec::new());
            whole.write_all(&out).unwrap();
            assert_eq!(whole.finish().unwrap(), parts.concat(), "round {round}");
            // given back: the next stream's
            assert_eq!(POOL.with(|p| p.borrow().len()), 1, "round {round}");
        }
        // a large part, past the output's first reserve
        let big: Vec<u8> = (0..200_000u32)
            .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
            .collect();
        let mut d = Deflate::new(6);
        let mut out = d.feed(&big, false).unwrap();
        out.extend_from_slice(&d.feed(&big, true).unwrap());
        let mut whole = flate2::write::GzDecoder::new(Vec::new());
        whole.write_all(&out).unwrap();
        assert_eq!(whole.finish().unwrap(), [big.clone(), big].concat());
    }

    #[test]
    fn no_more_than_max_live_answers_are_compressed_at_once() {
        let held: Vec<Slot> = std::iter::from_fn(Slot::take).take(MAX_LIVE + 1).collect();
        assert_eq!(held.len(), MAX_LIVE);
        assert!(Slot::take().is_none());
        drop(held);
        assert!(Slot::take().is_some());
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
