//! `SseDecoder`: the incremental Server-Sent Events decoder (used by `herald tail` and tests).
//!
//! Input: first byte = number of split points (0..=15), then that many bytes, each a split
//! offset (relative step, so splits are ordered), then the stream itself.
//! Oracle: never panics; feeding the stream in one call, in the given pieces, and one byte at a
//! time yields the same events, the same last event id and the same retry value.
#![no_main]

use herald_protocol::{SseDecoder, SseEvent};
use libfuzzer_sys::fuzz_target;

fn decode<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<SseEvent>, String, Option<u64>) {
    let mut d = SseDecoder::new();
    let mut out = Vec::new();
    for c in chunks {
        d.feed(c, &mut out);
    }
    (out, d.last_event_id().to_owned(), d.retry_ms())
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 16).min(rest.len());
    let (steps, stream) = rest.split_at(n);

    let mut cuts = Vec::with_capacity(n + 2);
    cuts.push(0);
    let mut at = 0usize;
    for &s in steps {
        at = (at + usize::from(s)).min(stream.len());
        cuts.push(at);
    }
    cuts.push(stream.len());
    let pieces: Vec<&[u8]> = cuts.windows(2).map(|w| &stream[w[0]..w[1]]).collect();

    let whole = decode([stream]);
    for ev in &whole.0 {
        assert!(!ev.event.is_empty(), "event with an empty type");
    }
    let split = decode(pieces.iter().copied());
    assert_eq!(whole, split, "splitting at {cuts:?} changed the result");
    let bytewise = decode(stream.chunks(1));
    assert_eq!(whole, bytewise, "feeding byte by byte changed the result");
});
