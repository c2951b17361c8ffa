//! The public configuration types the `herald` binary builds its `Config` from, read from
//! arbitrary TOML text with `toml::from_str` (the binary's own figment layering — defaults,
//! file, `HERALD_*` environment, flags, unknown-key reporting — is private and not fuzzed).
//!
//! Oracle: never panics (parsing, the `problems()` checks, rendering); a value that parses
//! renders back to TOML (as `herald check-config` does) and that TOML parses to the same value.
//!
//! Known finding (fuzz/README.md): `bytesize::ByteSize` renders with one decimal ("976.6 KiB"),
//! so sizes that are not a round multiple read back as a different number of bytes. Types with
//! a size field (`ServerConfig`, `WsConfig`, `Sections`) only need their sizes to read back within
//! that rounding (5%, plus a byte) unless `FUZZ_STRICT_SIZES=1` is set, which demands exact
//! equality and reproduces the finding.
#![no_main]

use bytesize::ByteSize;
use herald_core::memory::MemoryEngineConfig;
use herald_core::{ChannelsConfig, NamespaceOptions};
use herald_server::{AuthConfig, ServerConfig, SseConfig, WsConfig};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;

/// The sections of the binary's `Config` whose types are public (the others are ignored here,
/// so whole configuration files such as `herald.example.toml` are read too).
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct Sections {
    server: ServerConfig,
    sse: SseConfig,
    ws: WsConfig,
    channels: ChannelsConfig,
    auth: AuthConfig,
}

/// A value whose `ByteSize` fields may change by rounding when rendered (see the finding above).
trait Sizes: Sized {
    /// Checks that `again`'s sizes are within rounding of `self`'s, then copies them over so the
    /// rest can be compared exactly.
    fn settle_sizes(&self, _again: &mut Self) {}
}

fn settle(original: ByteSize, again: &mut ByteSize) {
    let (a, b) = (again.as_u64(), original.as_u64());
    // One decimal of a unit that is at most the value itself: at most 5% (plus a byte) off.
    assert!(
        a.abs_diff(b) <= b / 20 + 1,
        "size {b} rendered as {original} reads back as {a}"
    );
    *again = original;
}

impl Sizes for ServerConfig {
    fn settle_sizes(&self, again: &mut Self) {
        settle(self.max_body, &mut again.max_body);
    }
}
impl Sizes for WsConfig {
    fn settle_sizes(&self, again: &mut Self) {
        settle(self.max_message, &mut again.max_message);
    }
}
impl Sizes for Sections {
    fn settle_sizes(&self, again: &mut Self) {
        self.server.settle_sizes(&mut again.server);
        self.ws.settle_sizes(&mut again.ws);
    }
}
impl Sizes for AuthConfig {}
impl Sizes for SseConfig {}
impl Sizes for ChannelsConfig {}
impl Sizes for NamespaceOptions {}
impl Sizes for MemoryEngineConfig {}

fn strict_sizes() -> bool {
    static STRICT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("FUZZ_STRICT_SIZES").is_some_and(|v| v == "1"))
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug + Sizes>(value: &T) {
    let rendered =
        toml::to_string(value).unwrap_or_else(|e| panic!("{value:?} does not render as TOML: {e}"));
    let mut again: T = toml::from_str(&rendered)
        .unwrap_or_else(|e| panic!("rendered TOML {rendered:?} does not parse: {e}"));
    if !strict_sizes() {
        value.settle_sizes(&mut again);
    }
    assert_eq!(
        &again, value,
        "round trip through {rendered:?} changed the value"
    );
}

fn read<T: Serialize + DeserializeOwned + PartialEq + Debug + Sizes>(text: &str) -> Option<T> {
    match toml::from_str::<T>(text) {
        Ok(v) => {
            round_trip(&v);
            Some(v)
        }
        Err(e) => {
            let _ = e.to_string();
            None
        }
    }
}

fn check_server(s: &ServerConfig) {
    let _ = s.problems();
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(s) = read::<Sections>(text) {
        check_server(&s.server);
        let _ = s.ws.problems();
        let _ = s.channels.problems();
        let _ = s.auth.problems(s.server.listen);
    }
    if let Some(s) = read::<ServerConfig>(text) {
        check_server(&s);
    }
    if let Some(a) = read::<AuthConfig>(text) {
        let _ = a.problems(ServerConfig::default().listen);
        let _ = a.configured();
    }
    let _ = read::<SseConfig>(text);
    if let Some(w) = read::<WsConfig>(text) {
        let _ = w.problems();
    }
    if let Some(c) = read::<ChannelsConfig>(text) {
        let _ = c.problems();
    }
    if let Some(n) = read::<NamespaceOptions>(text) {
        let _ = n.retained();
    }
    let _ = read::<MemoryEngineConfig>(text);
});
