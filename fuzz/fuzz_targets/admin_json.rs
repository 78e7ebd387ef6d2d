//! The admin API's JSON bodies: never a panic, whatever arrives.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rampart::admin::body;

fuzz_target!(|data: &[u8]| {
    let _ = body::quota_reset(data);
    let _ = body::mode_change(data);
    if let Ok((_, Some(w))) = body::server_change(data) {
        assert!(w <= 256);
    }
});
