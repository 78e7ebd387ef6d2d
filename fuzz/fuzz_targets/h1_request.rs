//! The fast path's request head parser, and what it writes to the backend: any
//! head it takes, rewritten, must parse again as one complete head with the
//! same method, target, Host and body length (the backend sees exactly one
//! request, and its body where rampart sent it).
#![no_main]
use libfuzzer_sys::fuzz_target;
use rampart::h1;

fuzz_target!(|data: &[u8]| {
    let _ = h1::head_end(data, 0);
    let mut slots = h1::header_slots();
    let Ok(Some(r)) = h1::parse_request(data, &mut slots) else {
        return;
    };
    assert!(r.len <= data.len());
    let _ = (r.path(), r.idempotent(), r.close());
    if r.fallback.is_some() {
        return; // hyper's to parse
    }
    let mut out = Vec::new();
    r.write_upstream(b"10.0.0.1", "http", None, None, &mut out);
    let mut slots2 = h1::header_slots();
    match h1::parse_request(&out, &mut slots2) {
        Ok(Some(again)) => {
            assert_eq!(again.len, out.len(), "one head, nothing after it");
            assert_eq!(again.method, r.method);
            assert_eq!(again.target, r.target);
            assert_eq!(again.host, r.host);
            // the body ends where rampart read it to end
            assert_eq!(again.fallback, None, "{:?}", String::from_utf8_lossy(&out));
            assert_eq!(again.body, r.body);
        }
        // rampart adds X-Forwarded-* fields: a head at its own size or field
        // limit may be over them once rewritten (the server then decides)
        Err(h1::HeadError::TooLarge) => {}
        other => panic!(
            "the rewritten head does not parse: {other:?}\n{:?}",
            String::from_utf8_lossy(&out)
        ),
    }
});
