//! The fast path's response head parser and the heads it writes on: never a
//! panic; the head an HTTP/1.1 client gets parses as one head with the same status,
//! and a client reading it by RFC 9112 6.3 finds the body where rampart reads it
//! (else the client would take part of one answer for the next); the fields an
//! HTTP/2 client gets carry a content-length only where it is the body's.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rampart::h1::{self, Framing};

/// The comma-separated elements of every field named `name`, in order, trimmed,
/// empty ones skipped (RFC 9110 5.6.1).
fn elements<'a>(headers: &'a [httparse::Header<'a>], name: &'a str) -> Vec<&'a [u8]> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
        .collect()
}

/// The status a client reads in this head, written by rampart (so always
/// HTTP/1.1), and where it finds the body (RFC 9112 6.3); `Err` for a head
/// it must refuse.
fn client_framing(head: &[u8], head_request: bool) -> Result<(u16, Framing), String> {
    let mut fields = [httparse::EMPTY_HEADER; 256];
    let mut r = httparse::Response::new(&mut fields);
    match r.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        other => return Err(format!("not one whole head: {other:?}")),
    }
    let status = r.code.unwrap_or(0);
    Ok((status, framing(status, r.headers, head_request)?))
}

/// The framing of RFC 9112 6.3, every field's codings and lengths read as one list.
fn framing(
    status: u16,
    headers: &[httparse::Header<'_>],
    head_request: bool,
) -> Result<Framing, String> {
    if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(Framing::Empty);
    }
    let has_te = headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    if has_te {
        let codings = elements(headers, "transfer-encoding");
        return Ok(match codings.last() {
            Some(c) if c.eq_ignore_ascii_case(b"chunked") => Framing::Chunked,
            _ => Framing::Close,
        });
    }
    let lengths = elements(headers, "content-length");
    let Some(first) = lengths.first() else {
        return Ok(Framing::Close);
    };
    if lengths.iter().any(|l| l != first) {
        return Err("Content-Length values differ".into());
    }
    let n = std::str::from_utf8(first)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or("Content-Length is not a number")?;
    Ok(Framing::Length(n))
}

fuzz_target!(|data: &[u8]| {
    let (head_request, data) = match data.split_first() {
        Some((b, rest)) => (b & 1 == 1, rest),
        None => return,
    };
    let mut slots = h1::header_slots();
    let Ok(Some(r)) = h1::parse_response(data, &mut slots, head_request) else {
        return;
    };
    // as the fast path writes it: an answer that ends when the server closes
    // ends the client's connection too
    let mut out = Vec::new();
    r.write_client(r.framing == Framing::Close, None, &mut out);
    let shown = || String::from_utf8_lossy(&out).into_owned();
    match client_framing(&out, head_request) {
        Ok((status, f)) => {
            assert_eq!(status, r.status);
            assert_eq!(
                f,
                r.framing,
                "the client finds the body elsewhere than rampart\n{:?}",
                shown()
            );
        }
        Err(e) => panic!(
            "a client must refuse the head rampart wrote: {e}\n{:?}",
            shown()
        ),
    }
    // HTTP/2: no Transfer-Encoding, and one content-length, the body's, or none
    let lengths: Vec<&[u8]> = r
        .end_to_end()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("transfer-encoding") || panic!("{n} sent on"))
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v)
        .collect();
    match (r.framing, lengths.as_slice()) {
        (Framing::Length(n), [v]) => assert_eq!(
            std::str::from_utf8(v).ok().and_then(|v| v.parse().ok()),
            Some(n),
            "content-length for HTTP/2 {:?}",
            String::from_utf8_lossy(v)
        ),
        (Framing::Length(_), other) => panic!("content-length for HTTP/2: {other:?}"),
        (Framing::Chunked | Framing::Close, []) => {}
        (Framing::Chunked | Framing::Close, other) => {
            panic!("content-length for a body it does not frame: {other:?}")
        }
        (Framing::Empty, [] | [_]) => {}
        (Framing::Empty, other) => panic!("content-length more than once: {other:?}"),
    }
});
