//! `rampart import haproxy`: any text imports without a panic, into TOML that
//! parses, and that rampart's loader accepts unless it names files that are
//! not there.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../common/import_check.rs"]
mod import_check;
use import_check::check;

fuzz_target!(|data: &[u8]| {
    let src = String::from_utf8_lossy(data);
    let out = rampart::import::haproxy::import(&src, "fuzz.cfg");
    check(&out.toml);
    let _ = out.report_text("fuzz.cfg");
});
