//! Publishing to NATS: an append to the channel's history subject conditional on its last
//! sequence (retried when another node appended first), then the fan-out message, both under
//! the channel's local stripe lock.

use crate::codec::{self, hex, DIGEST, KIND, PREV};
use crate::engine::{NatsEngine, Tip};
use crate::util::{call, unavailable, within};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::HeaderMap;
use async_trait::async_trait;
use bytes::Bytes;
use herald_core::{
    now_ms, Broker, ChannelName, EngineError, EngineStatus, EventName, LatestState, Once,
    OnceRecord, PresenceEvent, PresenceKind, Publication, Published, Retention,
};
use herald_protocol::StreamPosition;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Instant;

/// Appends tried per publish before giving up under contention.
const MAX_ATTEMPTS: usize = 50;

#[async_trait]
impl Broker for NatsEngine {
    async fn publish(
        &self,
        channel: ChannelName,
        event: EventName,
        data: Box<RawValue>,
        retention: Retention,
    ) -> Result<Arc<Publication>, EngineError> {
        self.publish_with(channel, event, data, retention, None)
            .await?
            .into_new()
    }

    async fn publish_once(
        &self,
        channel: ChannelName,
        event: EventName,
        data: Box<RawValue>,
        retention: Retention,
        once: &Once,
    ) -> Result<Published, EngineError> {
        self.publish_with(channel, event, data, retention, Some(once))
            .await
    }

    async fn publish_presence(&self, event: PresenceEvent) -> Result<(), EngineError> {
        let kind = match event.kind {
            PresenceKind::Join => "j",
            PresenceKind::Leave => "l",
            // Totals are node-local: each node reads and sends its own.
            PresenceKind::Counts => return Ok(()),
        };
        let mut headers = HeaderMap::new();
        headers.insert(KIND, kind);
        let payload = serde_json::to_vec(&event.member)
            .map_err(|e| unavailable("presence encoding failed")(&e))?;
        let subject = self.fanout_subject(&hex(event.channel.as_str()));
        call(
            self.timeout(),
            "nats presence publish failed",
            self.client
                .publish_with_headers(subject, headers, payload.into()),
        )
        .await
    }

    async fn subscribe(&self, channel: &ChannelName) -> Result<(), EngineError> {
        self.remote.sync(self, channel).await
    }

    async fn unsubscribe(&self, channel: &ChannelName) -> Result<(), EngineError> {
        self.remote.sync(self, channel).await
    }

    fn status(&self) -> EngineStatus {
        self.remote.status()
    }
}

impl NatsEngine {
    /// Appends to the channel's history subject at the next offset (see the crate docs), then
    /// fans the publication out, and keeps it as latest state where the namespace asks
    /// (`latest.rs`). With `once`, its key is the message id, so JetStream drops a repeat
    /// within the stream's duplicate window, on whichever node it arrives. History retention
    /// is not taken from `retention`: each namespace's is configured on its stream at connect.
    async fn publish_with(
        &self,
        channel: ChannelName,
        event: EventName,
        data: Box<RawValue>,
        retention: Retention,
        once: Option<&Once>,
    ) -> Result<Published, EngineError> {
        if !self.remote.health().accepts_publishes() {
            return Err(EngineError::Unavailable("nats engine not ready"));
        }
        let started = Instant::now();
        let ns = self.namespace(&channel);
        let chan = hex(channel.as_str());
        let subject = self.history_subject(ns, &chan);
        let time_ms = now_ms();
        let payload = Bytes::copy_from_slice(data.get().as_bytes());
        let kept = if ns.retained > 0 {
            payload.clone()
        } else {
            Bytes::new()
        };
        if ns.latest != LatestState::Off {
            self.count_latest(&channel, &chan, retention).await?;
        }
        let mut cache = within(
            self.timeout(),
            "nats publish queue timed out",
            self.stripe(&channel).lock(),
        )
        .await?;
        let mut tip = match cache.take() {
            Some((c, tip)) if c == channel => Some(tip),
            _ => None,
        };
        let mut appended = None;
        for _ in 0..MAX_ATTEMPTS {
            let t = match tip.take() {
                Some(t) => t,
                None => self.tip(ns, &subject, &chan).await?,
            };
            let position = StreamPosition::new(t.epoch, t.offset + 1);
            let mut headers = codec::headers(&position, &event, time_ms);
            headers.insert(PREV, t.seq.to_string());
            if let Some(once) = once {
                headers.insert(DIGEST, once.digest.as_str());
            }
            // The headers first: setting them replaces the message id's.
            let mut message = PublishMessage::build()
                .headers(headers)
                .payload(kept.clone())
                .expected_last_subject_sequence(t.seq);
            if let Some(once) = once {
                message = message.message_id(format!("{chan}.{}", once.key));
            }
            let append = async { self.js.send_publish(subject.clone(), message).await?.await };
            match within(self.timeout(), "nats publish timed out", append).await? {
                Ok(ack) if ack.duplicate => {
                    // Published before under this key: nothing was appended now.
                    *cache = None;
                    drop(cache);
                    return self.repeat(ns, ack.sequence, once).await;
                }
                Ok(ack) => {
                    appended = Some((position, ack.sequence));
                    break;
                }
                Err(e) if matches!(e.kind(), PublishErrorKind::WrongLastSequence) => {
                    self.remote.health().count("publish_retries", 1);
                }
                Err(e) if matches!(e.kind(), PublishErrorKind::MaxPayloadExceeded) => {
                    return Err(EngineError::LimitReached("nats max_payload"));
                }
                Err(e) => return Err(unavailable("nats publish failed")(&e)),
            }
        }
        let Some((position, seq)) = appended else {
            return Err(EngineError::Unavailable("nats publish contention"));
        };
        *cache = Some((
            channel.clone(),
            Tip {
                epoch: position.epoch.clone(),
                offset: position.offset,
                seq,
            },
        ));
        if ns.latest != LatestState::Off {
            let kept = self
                .keep_latest(ns, &chan, &position, &event, time_ms, payload.clone())
                .await;
            if let Err(error) = kept {
                // In history and delivered; the state stays at the publication before.
                self.remote.health().count("latest_failures", 1);
                tracing::warn!(channel = %channel, error = %error, "Keeping latest state failed.");
            }
        }
        // Still under the stripe lock, so this node's publications leave in offset order.
        let mut headers = codec::headers(&position, &event, time_ms);
        headers.insert(KIND, "p");
        let fan_out =
            self.client
                .publish_with_headers(self.fanout_subject(&chan), headers, payload);
        if let Err(error) = call(self.timeout(), "nats fan-out failed", fan_out).await {
            // It is in history: subscribers fill the gap at the next publication.
            tracing::warn!(channel = %channel, error = %error, "Fan-out failed.");
        }
        drop(cache);
        self.remote.health().publish_took(started.elapsed());
        Ok(Published::New(Arc::new(Publication::new(
            channel, event, data, position, time_ms,
        ))))
    }

    /// The answer to a repeat: the position of the message JetStream kept at `seq`.
    async fn repeat(
        &self,
        ns: &crate::engine::Namespace,
        seq: u64,
        once: Option<&Once>,
    ) -> Result<Published, EngineError> {
        let got = within(
            self.timeout(),
            "nats history read timed out",
            ns.stream.direct_get(seq),
        )
        .await?;
        let message = got.map_err(|_| {
            EngineError::Unavailable(
                "the first publication with this idempotency_key left history; its position is unknown",
            )
        })?;
        let digest = message
            .headers
            .get(DIGEST)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        let stored = codec::Stored::decode(&message.headers, message.payload, seq)
            .ok_or(EngineError::Unavailable("nats holds a malformed message"))?;
        let once = once.ok_or(EngineError::Unavailable(
            "nats took a publish without a key for a repeat",
        ))?;
        OnceRecord {
            position: stored.position,
            time_ms: stored.time_ms,
            digest,
        }
        .answer(once)
    }
}
