//! `ChannelName::parse` and `EventName::parse`.
//!
//! Oracle (both directions): a name is accepted exactly when it is 1..=255 (channel) or 1..=64
//! (event) bytes of ASCII letters, digits and the allowed punctuation (`_-:.#@=/` for channels,
//! `_-:.` for events), and an event name does not start with the reserved `herald.`; an accepted
//! name is returned unchanged and a channel's namespace is the text before its first `:`.
#![no_main]

use herald_core::{ChannelName, EventName, MAX_CHANNEL_BYTES, MAX_EVENT_BYTES};
use libfuzzer_sys::fuzz_target;

fn allowed(s: &str, max: usize, punct: &str) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || punct.as_bytes().contains(&b))
}

fuzz_target!(|data: &[u8]| {
    // Names reach the parsers as `&str` (URL query, JSON, path); also try the lossy form so
    // non-UTF-8 inputs still exercise the character checks.
    let lossy;
    let s = match std::str::from_utf8(data) {
        Ok(s) => s,
        Err(_) => {
            lossy = String::from_utf8_lossy(data);
            &lossy
        }
    };

    let channel_ok = allowed(s, MAX_CHANNEL_BYTES, "_-:.#@=/");
    assert_eq!(MAX_CHANNEL_BYTES, 255);
    match ChannelName::parse(s) {
        Ok(c) => {
            assert!(channel_ok, "accepted channel {s:?}");
            assert_eq!(c.as_str(), s);
            let ns = s.split_once(':').map_or("", |(ns, _)| ns);
            assert_eq!(c.namespace(), ns);
            let _ = format!("{c} {c:?}");
        }
        Err(e) => {
            assert!(!channel_ok, "refused channel {s:?}: {e}");
            let _ = e.to_string();
        }
    }

    let event_ok = allowed(s, MAX_EVENT_BYTES, "_-:.") && !s.starts_with("herald.");
    match EventName::parse(s) {
        Ok(e) => {
            assert!(event_ok, "accepted event {s:?}");
            assert_eq!(e.as_str(), s);
        }
        Err(e) => {
            assert!(!event_ok, "refused event {s:?}: {e}");
            let _ = e.to_string();
        }
    }
});
