//! A publication and a presence event, each holding its wire encodings, built once on first
//! use and shared by every subscriber.

use crate::{ChannelName, EventName};
use bytes::{BufMut, Bytes};
use herald_protocol::{
    write_sse_id, Member, PresenceCounts, ServerPush, StreamPosition, MAX_EPOCH_BYTES,
    SSE_EVENT_COUNTS, SSE_EVENT_JOIN, SSE_EVENT_LEAVE,
};
use serde_json::value::RawValue;
use std::sync::OnceLock;

/// One message on one channel, at its position in the channel's stream.
#[derive(Debug)]
pub struct Publication {
    /// The channel.
    pub channel: ChannelName,
    /// The event type.
    pub event: EventName,
    /// The JSON payload, kept as published.
    pub data: Box<RawValue>,
    /// Where it sits in the channel's stream.
    pub position: StreamPosition,
    /// When it was published, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// When this node accepted it (or received it from the engine): the start of its
    /// delivery latency.
    pub accepted: std::time::Instant,
    /// The WebSocket frame and, as a view into it, the JSON.
    encoded: OnceLock<(Bytes, Bytes)>,
    sse: OnceLock<Bytes>,
    sse_event: OnceLock<Bytes>,
    sse_payload_event: OnceLock<Bytes>,
}

impl Publication {
    /// A publication at `position`.
    pub fn new(
        channel: ChannelName,
        event: EventName,
        data: Box<RawValue>,
        position: StreamPosition,
        time_ms: u64,
    ) -> Self {
        Self {
            channel,
            event,
            data,
            position,
            time_ms,
            accepted: std::time::Instant::now(),
            encoded: OnceLock::new(),
            sse: OnceLock::new(),
            sse_event: OnceLock::new(),
            sse_payload_event: OnceLock::new(),
        }
    }

    fn encoded(&self) -> &(Bytes, Bytes) {
        self.encoded.get_or_init(|| {
            ServerPush::Publication {
                channel: self.channel.as_str(),
                event: self.event.as_str(),
                offset: self.position.offset,
                epoch: self.position.epoch.as_str(),
                time: self.time_ms,
                data: &self.data,
            }
            .to_ws_frame()
        })
    }

    /// The push object as JSON (the `data:` of the SSE event).
    pub fn json(&self) -> &Bytes {
        &self.encoded().1
    }

    /// The push as a complete WebSocket text frame, shared by every subscriber.
    pub fn ws_frame(&self) -> &Bytes {
        &self.encoded().0
    }

    /// The SSE event without its `id:` line and final blank line: `event: E\ndata: JSON\n`.
    /// Each connection appends its own `id:` (which holds all its channels' positions).
    pub fn sse(&self) -> &Bytes {
        self.sse
            .get_or_init(|| sse_fields(self.event.as_str(), self.json()))
    }

    /// The complete SSE event for a stream with this one channel: [`Self::sse`], then
    /// `id: epoch-offset` and the blank line. A one-channel stream's id is the publication's own
    /// position, so these bytes are the same for every such subscriber and are shared.
    pub fn sse_event(&self) -> &Bytes {
        self.sse_event.get_or_init(|| {
            // Built from the fields directly, so a publication seen only by one-channel streams
            // never holds `sse()` as well.
            let (event, json) = (self.event.as_str(), self.json());
            let mut v = Vec::with_capacity(json.len() + event.len() + 22 + 2 * MAX_EPOCH_BYTES);
            write_sse_fields(event, json, &mut v);
            v.extend_from_slice(b"id: ");
            write_sse_id([&self.position], &mut v);
            v.extend_from_slice(b"\n\n");
            Bytes::from(v)
        })
    }

    /// [`Self::sse_event`] for a payload-only stream (`format=payload`): `data:` is the
    /// published payload itself.
    pub fn sse_payload_event(&self) -> &Bytes {
        self.sse_payload_event.get_or_init(|| {
            let (event, data) = (self.event.as_str(), self.data.get().as_bytes());
            let mut v = Vec::with_capacity(data.len() + event.len() + 22 + 2 * MAX_EPOCH_BYTES);
            write_sse_fields(event, data, &mut v);
            v.extend_from_slice(b"id: ");
            write_sse_id([&self.position], &mut v);
            v.extend_from_slice(b"\n\n");
            Bytes::from(v)
        })
    }

    /// Writes `event: E\ndata: PAYLOAD\n` (a payload-only event of a stream of several
    /// channels, whose `id:` line the connection writes) into `out`.
    pub fn write_sse_payload_fields(&self, out: &mut impl BufMut) {
        write_sse_fields(self.event.as_str(), self.data.get().as_bytes(), out);
    }

    /// Approximate bytes this publication holds in an outbox.
    pub fn queued_bytes(&self) -> usize {
        self.data.get().len() + self.channel.as_str().len() + self.event.as_str().len() + 128
    }
}

/// Builds `event: E\ndata: JSON\n`; the JSON has no raw newlines.
pub(crate) fn sse_fields(event: &str, json: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(json.len() + event.len() + 16);
    write_sse_fields(event, json, &mut v);
    Bytes::from(v)
}

fn write_sse_fields(event: &str, json: &[u8], v: &mut impl BufMut) {
    v.put_slice(b"event: ");
    v.put_slice(event.as_bytes());
    v.put_slice(b"\ndata: ");
    v.put_slice(json);
    v.put_u8(b'\n');
}

/// Whether a member joined or left (or, node-local, a channel's totals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceKind {
    /// Subscribed.
    Join,
    /// Unsubscribed or disconnected.
    Leave,
    /// A `presence = "counts"` channel's totals, sent by each node to its own subscribers
    /// (never through the engine).
    Counts,
}

/// A presence change on a channel, encoded once like a publication.
#[derive(Debug)]
pub struct PresenceEvent {
    /// The channel.
    pub channel: ChannelName,
    /// Join or leave.
    pub kind: PresenceKind,
    /// Who (empty for totals).
    pub member: Member,
    /// The totals, for [`PresenceKind::Counts`].
    pub counts: PresenceCounts,
    encoded: OnceLock<(Bytes, Bytes)>,
    sse: OnceLock<Bytes>,
}

impl PresenceEvent {
    /// A presence change.
    pub fn new(channel: ChannelName, kind: PresenceKind, member: Member) -> Self {
        Self {
            channel,
            kind,
            member,
            counts: PresenceCounts::default(),
            encoded: OnceLock::new(),
            sse: OnceLock::new(),
        }
    }

    /// A channel's totals for its subscribers on this node.
    pub fn counts(channel: ChannelName, counts: PresenceCounts) -> Self {
        let member = Member {
            conn_id: String::new(),
            user_id: None,
            info: None,
            transport: String::new(),
        };
        Self {
            counts,
            ..Self::new(channel, PresenceKind::Counts, member)
        }
    }

    fn encoded(&self) -> &(Bytes, Bytes) {
        self.encoded.get_or_init(|| {
            let channel = self.channel.as_str();
            let member = &self.member;
            let push = match self.kind {
                PresenceKind::Join => ServerPush::Join { channel, member },
                PresenceKind::Leave => ServerPush::Leave { channel, member },
                PresenceKind::Counts => ServerPush::Counts {
                    channel,
                    counts: &self.counts,
                },
            };
            push.to_ws_frame()
        })
    }

    /// The push as JSON.
    pub fn json(&self) -> &Bytes {
        &self.encoded().1
    }

    /// The push as a complete WebSocket text frame.
    pub fn ws_frame(&self) -> &Bytes {
        &self.encoded().0
    }

    /// The SSE event, complete with its blank line (presence events carry no id).
    pub fn sse(&self) -> &Bytes {
        self.sse.get_or_init(|| {
            let event = match self.kind {
                PresenceKind::Join => SSE_EVENT_JOIN,
                PresenceKind::Leave => SSE_EVENT_LEAVE,
                PresenceKind::Counts => SSE_EVENT_COUNTS,
            };
            let mut v = sse_fields(event, self.json()).to_vec();
            v.push(b'\n');
            Bytes::from(v)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_protocol::{parse_sse_id, Epoch, SseDecoder};

    #[test]
    fn a_one_channel_sse_event_carries_its_own_position_as_the_id() {
        let p = Publication::new(
            ChannelName::parse("scores:42").unwrap(),
            EventName::parse("goal").unwrap(),
            RawValue::from_string(r#"{"by":"ana"}"#.into()).unwrap(),
            StreamPosition::new(Epoch::parse("k3x9").unwrap(), 1_000_000),
            7,
        );
        let mut events = Vec::new();
        let mut decoder = SseDecoder::new();
        decoder.feed(p.sse_event(), &mut events);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, "goal");
        assert_eq!(events[0].data.as_bytes(), &p.json()[..]);
        assert_eq!(
            parse_sse_id(&events[0].id, 1).unwrap(),
            vec![p.position.clone()]
        );
        assert!(p.sse_event().starts_with(p.sse()));
    }
}
