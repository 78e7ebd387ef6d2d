//! The chunked-body scanner: fed in arbitrary pieces it finds the same end as
//! fed at once, and never reports an end past the bytes it was given.
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
});
