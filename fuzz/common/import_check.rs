//! What the importer fuzz targets check of an import's output: TOML that parses,
//! and that rampart's loader accepts unless it names files that are not there.

pub fn check(toml_text: &str) {
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
