//! The HA heartbeat decoder: never a panic; what decodes without a key encodes
//! back to the same bytes' meaning.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rampart::ha::wire::Advert;
use std::net::IpAddr;

fuzz_target!(|data: &[u8]| {
    let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
    let _ = Advert::decode(data, Some(&b"a key of some length"[..]), a, b);
    if let Ok(adv) = Advert::decode(data, None, a, b) {
        let again = Advert::encode(&adv, None, a, b);
        let back = Advert::decode(&again, None, a, b).expect("its own encoding decodes");
        assert_eq!(back, adv);
    }
});
