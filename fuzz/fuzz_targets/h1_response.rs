//! The fast path's response head parser and the head it writes to the client:
//! never a panic; a rewritten head parses again with the same status.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rampart::h1;

fuzz_target!(|data: &[u8]| {
    let (head_request, data) = match data.split_first() {
        Some((b, rest)) => (b & 1 == 1, rest),
        None => return,
    };
    let mut slots = h1::header_slots();
    let Ok(Some(r)) = h1::parse_response(data, &mut slots, head_request) else {
        return;
    };
    let mut out = Vec::new();
    r.write_client(false, None, &mut out);
    let mut slots2 = h1::header_slots();
    match h1::parse_response(&out, &mut slots2, head_request) {
        Ok(Some(again)) => assert_eq!(again.status, r.status),
        other => panic!(
            "the rewritten head does not parse: {other:?}\n{:?}",
            String::from_utf8_lossy(&out)
        ),
    }
});
