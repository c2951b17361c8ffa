//! `parse_sse_id`: the `Last-Event-ID` resume id (`epoch-offset` pairs joined by `.`).
//!
//! Input: first byte = channel count (mapped onto 1..=128), the rest = the id (UTF-8 only, as
//! the HTTP header value is handed over as `&str`).
//! Oracle: never panics; an accepted id has exactly `channels` positions; `format_sse_id` of the
//! result is no longer than the input and parses back to the same positions.
#![no_main]

use herald_protocol::{format_sse_id, parse_sse_id, SseIdError, MAX_SSE_ID_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let channels = usize::from(first % 128) + 1;
    let Ok(id) = std::str::from_utf8(rest) else {
        return;
    };
    match parse_sse_id(id, channels) {
        Ok(positions) => {
            assert_eq!(
                positions.len(),
                channels,
                "wrong number of positions for {id:?}"
            );
            let mut formatted = String::new();
            format_sse_id(&positions, &mut formatted);
            // The canonical form drops leading zeros only, so it can never grow.
            assert!(
                formatted.len() <= id.len(),
                "canonical id {formatted:?} is longer than {id:?}"
            );
            let again = parse_sse_id(&formatted, channels)
                .unwrap_or_else(|e| panic!("{formatted:?} (from {id:?}) does not parse: {e:?}"));
            assert_eq!(
                again, positions,
                "round trip through {formatted:?} changed the positions"
            );
        }
        Err(SseIdError::TooLong) => assert!(id.len() > MAX_SSE_ID_BYTES),
        Err(SseIdError::ChannelCountMismatch {
            positions,
            channels: c,
        }) => {
            assert_eq!(c, channels);
            assert_ne!(
                positions, channels,
                "mismatch reported for a matching count in {id:?}"
            );
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
