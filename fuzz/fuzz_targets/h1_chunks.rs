//! The chunked-body scanner: fed in arbitrary pieces it finds the same end as
//! fed at once, and never reports an end past the bytes it was given. A body
//! it passes on ends where a client reading it ends it: a client that takes
//! only CRLF as a line end (RFC 9112 7.1) and one that also takes a bare LF
//! (as many do, RFC 9112 2.2) either find the same end or refuse the body,
//! never another end (the bytes after it would be read as the next answer).
#![no_main]
use libfuzzer_sys::fuzz_target;
use rampart::h1::ChunkedScanner;

fuzz_target!(|data: &[u8]| {
    let (split, body) = match data.split_first() {
        Some((b, rest)) => (*b as usize, rest),
        None => return,
    };
    let mut whole = ChunkedScanner::default();
    let at_once = whole.feed(body);
    if let Ok(Some(n)) = at_once {
        assert!(n <= body.len());
    }
    // the same bytes in two pieces
    let cut = if body.is_empty() {
        0
    } else {
        split % (body.len() + 1)
    };
    let mut pieces = ChunkedScanner::default();
    let first = pieces.feed(&body[..cut]);
    let in_pieces = match first {
        Ok(Some(n)) => Ok(Some(n)),
        Ok(None) => pieces.feed(&body[cut..]).map(|r| r.map(|n| n + cut)),
        Err(e) => Err(e),
    };
    assert_eq!(at_once, in_pieces, "cut at {cut}");
    if let Ok(Some(n)) = at_once {
        for bare_lf in [false, true] {
            if let Some(m) = client_end(body, bare_lf) {
                assert_eq!(
                    m, n,
                    "a client (bare LF a line end: {bare_lf}) ends the body elsewhere"
                );
            }
        }
    }
});

/// The next line of `b` from `at`: its content and where the next starts.
fn line(b: &[u8], at: usize, bare_lf: bool) -> Option<(&[u8], usize)> {
    let lf = at + b.get(at..)?.iter().position(|&c| c == b'\n')?;
    match lf.checked_sub(1).map(|cr| b[cr]) {
        Some(b'\r') if lf > at => Some((&b[at..lf - 1], lf + 1)),
        _ if bare_lf => Some((&b[at..lf], lf + 1)),
        _ => None,
    }
}

/// Where a client reading a chunked body ends it: `None` if it refuses it or
/// it is not whole. Chunk extensions and trailer fields are skipped, not
/// judged, as far as their line goes.
fn client_end(b: &[u8], bare_lf: bool) -> Option<usize> {
    let mut at = 0;
    loop {
        let (size_line, next) = line(b, at, bare_lf)?;
        let digits = size_line
            .iter()
            .take_while(|c| c.is_ascii_hexdigit())
            .count();
        let rest = size_line[digits..].trim_ascii_start();
        if digits == 0 || !(rest.is_empty() || rest[0] == b';') {
            return None;
        }
        let size = u64::from_str_radix(std::str::from_utf8(&size_line[..digits]).ok()?, 16).ok()?;
        at = next;
        if size == 0 {
            break;
        }
        let end = at.checked_add(usize::try_from(size).ok()?)?;
        let (empty, next) = line(b, end, bare_lf)?;
        if !empty.is_empty() {
            return None;
        }
        at = next;
    }
    // the trailer section, ended by an empty line
    loop {
        let (field, next) = line(b, at, bare_lf)?;
        at = next;
        if field.is_empty() {
            return Some(at);
        }
    }
}
