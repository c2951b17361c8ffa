//! The binary's own configuration loader (`crates/herald/src/config/`, compiled in here by
//! path): figment layering of defaults, the file, `HERALD_*` environment and flags, per-section
//! schemas with unknown-key reporting, the `engine.kind` switch (memory, redis, nats), every
//! `problems()` check (including auth: token keys and Telegram settings), and rendering for
//! `herald check-config`.
//!
//! Input: the bytes as a configuration file (UTF-8), written to a file in the temp directory
//! because the loader reads files as `herald serve --config` does.
//! Oracle: never panics; a loaded configuration renders, and the rendering (secrets redacted,
//! so only when nothing was redacted) loads again to the same configuration.
#![no_main]

#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../../crates/herald/src/config/mod.rs"]
mod config;

use libfuzzer_sys::fuzz_target;
use std::io::Write;

fn temp_file(text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("herald-fuzz-config-{}.toml", std::process::id()));
    let mut f = std::fs::File::create(&path).expect("temp file");
    f.write_all(text.as_bytes()).expect("write temp file");
    path
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = temp_file(text);
    let loaded = config::load(Some(&path), &config::Overrides::default());
    let Ok(cfg) = loaded else {
        let _ = loaded.map_err(|p| p.to_string());
        return;
    };
    let rendered = config::render(&cfg).expect("a loaded configuration renders");
    if rendered.contains("<redacted>") || rendered.contains("***@") {
        return;
    }
    let again_path = temp_file(&rendered);
    match config::load(Some(&again_path), &config::Overrides::default()) {
        Ok(again) => assert_eq!(again, cfg, "check-config output {rendered:?} reads back differently"),
        Err(p) => panic!("check-config output {rendered:?} does not load: {p}"),
    }
});
