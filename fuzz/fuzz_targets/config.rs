//! The config loader, TOML into validation: never a panic; a refusal lists
//! problems that each name a key or a line.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = String::from_utf8_lossy(data);
    let base = std::env::temp_dir().join("rampart-fuzz-config-empty");
    let _ = std::fs::create_dir_all(&base);
    match rampart::config::parse_in(&src, "fuzz.toml", &base) {
        Ok(_) => {}
        Err(rampart::config::ConfigError::Invalid { problems, .. }) => {
            assert!(!problems.is_empty());
            for p in problems {
                assert!(!p.message.is_empty());
                assert!(p.line.is_some() || !p.key.is_empty(), "{p:?}");
            }
        }
        Err(e) => panic!("{e}"),
    }
});
