//! Publishing through Redis: one script assigns the offset, appends to the channel's stream
//! and PUBLISHes (see `scripts.rs`); presence events go straight to pub/sub.

use crate::engine::{unavailable, RedisEngine, LATEST_COUNTED_CACHE};
use async_trait::async_trait;
use fred::interfaces::{ClientLike, PubsubInterface};
use herald_core::{
    Broker, ChannelName, EngineError, EngineStatus, EventName, LatestState, Once, OnceRecord,
    PresenceEvent, PresenceKind, Publication, Published, Retention, LATEST_STATE_BOUND,
    MAX_LATEST_EVENTS,
};
use herald_protocol::{Epoch, StreamPosition};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl RedisEngine {
    /// Publishes; for a worker's stream entry (`dedupe` = its id and how long ids are
    /// remembered) records the id in the same step. Returns `None` when that entry was
    /// already published (by another node, or before a crash).
    pub(crate) async fn publish_deduped(
        &self,
        channel: &ChannelName,
        event: &EventName,
        data: &RawValue,
        retention: Retention,
        dedupe: Option<(&str, Duration)>,
    ) -> Result<Option<Arc<Publication>>, EngineError> {
        if !self.remote.health().accepts_publishes() {
            return Err(EngineError::Unavailable("redis engine not ready"));
        }
        if retention.latest.mode != LatestState::Off {
            self.count_latest(channel, retention).await?;
        }
        let (mut keys, mut args) = self.publish_args(channel, event, data, retention);
        if let Some((id, window)) = dedupe {
            keys.push(self.key(channel, "i"));
            args.push(id.to_owned());
            args.push(Self::ms(window));
        }
        let started = Instant::now();
        let reply = self
            .eval(&self.publish_script, keys, args)
            .await
            .map_err(|e| unavailable(&e))?;
        self.remote.health().publish_took(started.elapsed());
        let parts = reply.into_array();
        if parts.is_empty() {
            return Ok(None);
        }
        Self::published(channel, event, data, parts).map(Some)
    }

    /// The publication a publish script's `{epoch, offset, time}` names.
    fn published(
        channel: &ChannelName,
        event: &EventName,
        data: &RawValue,
        parts: Vec<fred::types::Value>,
    ) -> Result<Arc<Publication>, EngineError> {
        let mut parts = parts.into_iter();
        let (Some(epoch), Some(offset), Some(time)) = (
            parts
                .next()
                .and_then(|e| e.as_str().and_then(|e| Epoch::parse(&e).ok())),
            parts.next().and_then(|v| v.as_u64()),
            parts.next().and_then(|v| v.as_u64()),
        ) else {
            return Err(EngineError::Unavailable(
                "redis engine gave a malformed reply",
            ));
        };
        // Already valid JSON: copied, not parsed again.
        let data: Box<RawValue> = data.to_owned();
        Ok(Arc::new(Publication::new(
            channel.clone(),
            event.clone(),
            data,
            StreamPosition::new(epoch, offset),
            time,
        )))
    }

    /// The keys and arguments the publish scripts share (see `scripts::PUBLISH`).
    fn publish_args(
        &self,
        channel: &ChannelName,
        event: &EventName,
        data: &RawValue,
        retention: Retention,
    ) -> (Vec<String>, Vec<String>) {
        let latest = retention.latest;
        let mode = match latest.mode {
            LatestState::Off => "",
            LatestState::Last => "last",
            LatestState::PerEvent => "per_event",
        };
        let keys = self.channel_keys(channel);
        let args = vec![
            herald_core::new_epoch().as_str().to_owned(),
            Self::ms(self.config.channel_state_ttl.max(retention.ttl)),
            retention.size.to_string(),
            Self::ms(retention.ttl),
            event.as_str().to_owned(),
            data.get().to_owned(),
            self.pubsub_channel(channel),
            if self.sharded { "SPUBLISH" } else { "PUBLISH" }.to_owned(),
            mode.to_owned(),
            latest.ttl.map_or_else(|| "0".to_owned(), Self::ms),
            MAX_LATEST_EVENTS.to_string(),
        ];
        (keys, args)
    }

    /// Publishes unless `once.key` was published on `channel` within its window; the check
    /// and the record are one script with the publish, so every node sees the same answer.
    async fn publish_keyed(
        &self,
        channel: &ChannelName,
        event: &EventName,
        data: &RawValue,
        retention: Retention,
        once: &Once,
    ) -> Result<Published, EngineError> {
        if !self.remote.health().accepts_publishes() {
            return Err(EngineError::Unavailable("redis engine not ready"));
        }
        if retention.latest.mode != LatestState::Off {
            self.count_latest(channel, retention).await?;
        }
        let (mut keys, mut args) = self.publish_args(channel, event, data, retention);
        keys.push(self.key(channel, &format!("o:{}", once.key)));
        args.push(once.digest.clone());
        args.push(Self::ms(once.window));
        let started = Instant::now();
        let reply = self
            .eval(&self.publish_once_script, keys, args)
            .await
            .map_err(|e| unavailable(&e))?;
        self.remote.health().publish_took(started.elapsed());
        let parts = reply.into_array();
        if parts.first().and_then(|v| v.as_str()).as_deref() != Some("=") {
            return Self::published(channel, event, data, parts).map(Published::New);
        }
        let seen = parts
            .get(1)
            .and_then(|v| v.as_str().map(|s| s.to_string()))
            .unwrap_or_default();
        OnceRecord::parse(&seen)
            .ok_or(EngineError::Unavailable(
                "redis engine holds a malformed idempotency record",
            ))?
            .answer(once)
    }
}

impl RedisEngine {
    /// Counts `channel` among the channels keeping latest state (a zset shared by every node,
    /// scored by when the state expires), or refuses when one more would pass
    /// `channels.max_latest_state_channels`. A channel whose state lasts until replaced is
    /// counted once per node; one with a TTL on every publish, which moves its expiry.
    async fn count_latest(
        &self,
        channel: &ChannelName,
        retention: Retention,
    ) -> Result<(), EngineError> {
        let forever = retention.latest.ttl.is_none();
        let cached = || {
            self.latest_counted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if forever && cached().contains(channel) {
            return Ok(());
        }
        let expiry = match retention.latest.ttl {
            None => "+inf".to_owned(),
            Some(ttl) => (herald_core::now_ms()
                + u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX / 2))
            .to_string(),
        };
        let counted = self
            .eval(
                &self.count_latest_script,
                vec![format!("{}:latest", self.config.prefix)],
                vec![
                    channel.as_str().to_owned(),
                    expiry,
                    retention.max_latest_channels.to_string(),
                ],
            )
            .await
            .map_err(|e| unavailable(&e))?;
        if counted.as_u64() != Some(1) {
            return Err(EngineError::LimitReached(LATEST_STATE_BOUND));
        }
        if forever {
            let mut set = cached();
            if set.len() >= LATEST_COUNTED_CACHE {
                set.clear();
            }
            set.insert(channel.clone());
        }
        Ok(())
    }
}

#[async_trait]
impl Broker for RedisEngine {
    async fn publish(
        &self,
        channel: ChannelName,
        event: EventName,
        data: Box<RawValue>,
        retention: Retention,
    ) -> Result<Arc<Publication>, EngineError> {
        self.publish_deduped(&channel, &event, &data, retention, None)
            .await?
            .ok_or(EngineError::Unavailable("redis engine gave an empty reply"))
    }

    async fn publish_once(
        &self,
        channel: ChannelName,
        event: EventName,
        data: Box<RawValue>,
        retention: Retention,
        once: &Once,
    ) -> Result<Published, EngineError> {
        self.publish_keyed(&channel, &event, &data, retention, once)
            .await
    }

    async fn publish_presence(&self, event: PresenceEvent) -> Result<(), EngineError> {
        let tag = match event.kind {
            PresenceKind::Join => "J ",
            PresenceKind::Leave => "L ",
            // Totals are node-local: each node reads and sends its own.
            PresenceKind::Counts => return Ok(()),
        };
        let member = serde_json::to_string(&event.member)
            .map_err(|_| EngineError::Unavailable("presence member is not serializable"))?;
        let name = self.pubsub_channel(&event.channel);
        let client = self.client.with_options(&self.fast());
        let message = format!("{tag}{member}");
        let sent: Result<i64, _> = if self.sharded {
            client.spublish(name.as_str(), message).await
        } else {
            client.publish(name.as_str(), message).await
        };
        sent.map(|_| ()).map_err(|e| unavailable(&e))
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
