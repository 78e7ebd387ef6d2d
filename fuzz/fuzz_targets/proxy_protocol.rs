//! The PROXY protocol (v1 and v2) header parser: never a panic, never a length
//! past the input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = rampart::proxy_protocol::parse(data) {
        let _ = format!("{p:?}");
    }
});
