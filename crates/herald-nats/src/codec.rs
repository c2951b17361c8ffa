//! Subject tokens and the headers a publication travels with, in history and on the fan-out
//! subject.

use async_nats::HeaderMap;
use bytes::Bytes;
use herald_core::{ChannelName, EventName, Publication};
use herald_protocol::{Epoch, StreamPosition};
use serde_json::value::RawValue;
use std::sync::Arc;

/// The channel's epoch.
pub(crate) const EPOCH: &str = "Herald-Epoch";
/// The publication's offset in its epoch.
pub(crate) const OFFSET: &str = "Herald-Offset";
/// The event name.
pub(crate) const EVENT: &str = "Herald-Event";
/// When it was published, milliseconds since the Unix epoch.
pub(crate) const TIME: &str = "Herald-Time";
/// History only: the stream sequence of the channel's previous message (0 for the first of its
/// epoch), so recent history is read by walking back from the last message.
pub(crate) const PREV: &str = "Herald-Prev";
/// Fan-out only: `p` (publication), `j` (join) or `l` (leave).
pub(crate) const KIND: &str = "Herald-Kind";
/// Header: digest of the event and payload of a publish with an idempotency key.
pub(crate) const DIGEST: &str = "Herald-Digest";

/// Lowercase hex of `s`: channel and namespace names hold characters that subjects cannot
/// (`.`, and `*`/`>` would be wildcards), and hex is also a valid key-value key.
pub(crate) fn hex(s: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// The headers of a publication at `position`.
pub(crate) fn headers(position: &StreamPosition, event: &EventName, time_ms: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(EPOCH, position.epoch.as_str());
    h.insert(OFFSET, position.offset.to_string());
    h.insert(EVENT, event.as_str());
    h.insert(TIME, time_ms.to_string());
    h
}

/// A publication as stored in history (or received from fan-out, where `seq` and `prev` are 0).
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) position: StreamPosition,
    pub(crate) event: EventName,
    pub(crate) time_ms: u64,
    /// Stream sequence of this message.
    pub(crate) seq: u64,
    /// Stream sequence of the channel's previous message.
    pub(crate) prev: u64,
    /// The JSON payload (empty in namespaces that keep no history).
    pub(crate) data: Bytes,
}

impl Stored {
    /// Decodes Herald's headers; `None` when any is missing or malformed.
    pub(crate) fn decode(headers: &HeaderMap, data: Bytes, seq: u64) -> Option<Self> {
        let get = |name: &str| headers.get(name).map(|v| v.as_str());
        Some(Self {
            position: StreamPosition::new(
                Epoch::parse(get(EPOCH)?).ok()?,
                get(OFFSET)?.parse().ok()?,
            ),
            event: EventName::parse(get(EVENT)?).ok()?,
            time_ms: get(TIME)?.parse().ok()?,
            seq,
            prev: get(PREV).map_or(Some(0), |v| v.parse().ok())?,
            data,
        })
    }

    /// The publication on `channel`; `None` when the payload is not JSON.
    pub(crate) fn publication(self, channel: &ChannelName) -> Option<Arc<Publication>> {
        let text = String::from_utf8(self.data.into()).ok()?;
        let data = RawValue::from_string(text).ok()?;
        Some(Arc::new(Publication::new(
            channel.clone(),
            self.event,
            data,
            self.position,
            self.time_ms,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_headers_round_trip() {
        assert_eq!(hex("a:b.c"), "613a622e63");
        let pos = StreamPosition::new(Epoch::parse("abc").unwrap(), 7);
        let mut h = headers(&pos, &EventName::message(), 42);
        h.insert(PREV, "3");
        let s = Stored::decode(&h, Bytes::from_static(b"{\"x\":1}"), 9).unwrap();
        assert_eq!(
            (s.position.clone(), s.time_ms, s.seq, s.prev),
            (pos, 42, 9, 3)
        );
        let p = s.publication(&ChannelName::parse("c").unwrap()).unwrap();
        assert_eq!(p.data.get(), "{\"x\":1}");
        h.insert(OFFSET, "x");
        assert!(Stored::decode(&h, Bytes::new(), 1).is_none());
    }
}
