//! `rampart import haproxy`: any text imports without a panic, into TOML that
//! parses, and that rampart's loader accepts unless it names files that are
//! not there.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = String::from_utf8_lossy(data);
    let out = rampart::import::haproxy::import(&src, "fuzz.cfg");
    check(&out.toml);
    let _ = out.report_text("fuzz.cfg");
});

fn check(toml_text: &str) {
    if let Err(e) = toml_text.parse::<toml::Table>() {
        panic!("not TOML: {e}\n{toml_text}");
    }
    let base = std::env::temp_dir().join("rampart-fuzz-config-empty");
    let _ = std::fs::create_dir_all(&base);
    if let Err(rampart::config::ConfigError::Invalid { problems, .. }) =
        rampart::config::parse_in(toml_text, "imported.toml", &base)
    {
        for p in &problems {
            assert!(
                p.message.contains("cannot read"),
                "rampart refuses the import: {p:?}\n{toml_text}"
            );
        }
    }
}
