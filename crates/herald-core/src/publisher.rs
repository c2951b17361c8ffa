//! `Publisher`: the single front door for publishing, used by the HTTP API and client
//! publishes. It validates names and sizes, looks up the namespace's retention, and hands the
//! publication to the broker, which orders it.

use crate::Source;
use crate::{
    Broker, ChannelError, ChannelName, ChannelsConfig, EngineError, EventName, Once, Publication,
    Published, Retention, Stats, LATEST_STATE_BOUND, STATE_KEYS_BOUND,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::Digest;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

/// Bounds on what may be published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublisherLimits {
    /// Largest `data` payload, in bytes of JSON.
    pub max_data_bytes: usize,
    /// How long an idempotency key is remembered (`publish.idempotency_window`).
    #[serde(with = "humantime_serde")]
    pub idempotency_window: std::time::Duration,
}

/// Most bytes of an idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;

/// Why a publication was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Invalid channel name.
    #[error("{0}")]
    BadChannel(ChannelError),
    /// Invalid event name.
    #[error("{0}")]
    BadEvent(ChannelError),
    /// The payload is JSON that subscribers could not read.
    #[error("{0}")]
    BadData(String),
    /// Payload too large.
    #[error("data is {len} bytes; the limit is {max}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The idempotency key is empty, too long or holds control characters.
    #[error("idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY} bytes without control characters")]
    BadKey(usize),
    /// The node is draining for shutdown.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A validated publish command, ready to go to the broker.
#[derive(Debug)]
pub struct Prepared {
    channel: ChannelName,
    event: EventName,
    data: Box<RawValue>,
}

impl Prepared {
    /// The channel.
    pub fn channel(&self) -> &ChannelName {
        &self.channel
    }

    /// The event name.
    pub fn event(&self) -> &EventName {
        &self.event
    }

    /// The payload.
    pub fn data(&self) -> &RawValue {
        &self.data
    }

    /// The parts, for an engine that publishes outside [`Publisher::publish`] (such as a
    /// queue consumer that must acknowledge in the same step).
    pub fn into_parts(self) -> (ChannelName, EventName, Box<RawValue>) {
        (self.channel, self.event, self.data)
    }
}

/// Validates and publishes.
#[derive(Debug)]
pub struct Publisher {
    broker: Arc<dyn Broker>,
    channels: Arc<ChannelsConfig>,
    limits: PublisherLimits,
    stats: Arc<Stats>,
    closed: AtomicBool,
}

impl Publisher {
    /// A publisher over `broker`.
    pub fn new(
        broker: Arc<dyn Broker>,
        channels: Arc<ChannelsConfig>,
        limits: PublisherLimits,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            broker,
            channels,
            limits,
            stats,
            closed: AtomicBool::new(false),
        }
    }

    /// Checks a command without publishing it.
    pub fn prepare(
        &self,
        channel: &str,
        event: Option<&str>,
        data: Box<RawValue>,
    ) -> Result<Prepared, PublishError> {
        let channel = ChannelName::parse(channel).map_err(PublishError::BadChannel)?;
        let event = match event {
            Some(e) => EventName::parse(e).map_err(PublishError::BadEvent)?,
            None => EventName::message(),
        };
        let len = data.get().len();
        if len > self.limits.max_data_bytes {
            self.stats.refused.too_large.fetch_add(1, Relaxed);
            return Err(PublishError::TooLarge {
                len,
                max: self.limits.max_data_bytes,
            });
        }
        // RawValue checks syntax only; a number beyond f64 (such as 1e400) would break
        // subscribers that parse the payload, so it is refused here.
        if serde_json::from_str::<Checked>(data.get()).is_err() {
            return Err(PublishError::BadData(
                "data holds a number outside the range of a 64-bit float".to_owned(),
            ));
        }
        // A line break can only be whitespace between JSON tokens (a string holds none raw), but
        // it would end an SSE `data:` line: each becomes a space, which means the same JSON.
        let data = if memchr::memchr2(b'\n', b'\r', data.get().as_bytes()).is_some() {
            RawValue::from_string(data.get().replace(['\n', '\r'], " "))
                .map_err(|e| PublishError::BadData(e.to_string()))?
        } else {
            data
        };
        Ok(Prepared {
            channel,
            event,
            data,
        })
    }

    /// How much history `channel`'s namespace keeps.
    pub fn retention(&self, channel: &ChannelName) -> Retention {
        let o = self.channels.options(channel);
        Retention {
            size: o.retained(),
            ttl: o.history_ttl,
            latest: o.keep_latest(),
            max_latest_channels: self.channels.max_latest_state_channels,
        }
    }

    /// Whether shutdown has begun (publishing is refused).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    /// Counts a publication made outside [`Publisher::publish`].
    pub fn count_published(&self, source: Source, event: &str) {
        self.stats.publications.fetch_add(1, Relaxed);
        self.stats.published.count(source, event);
    }

    /// Publishes a prepared command from `source`.
    pub async fn publish(
        &self,
        p: Prepared,
        source: Source,
    ) -> Result<Arc<Publication>, PublishError> {
        if self.is_closed() {
            return Err(PublishError::ShuttingDown);
        }
        let retention = self.retention(&p.channel);
        let publication = self
            .broker
            .publish(p.channel, p.event, p.data, retention)
            .await
            .inspect_err(|e| self.count_refusal(e))?;
        self.count_published(source, publication.event.as_str());
        tracing::trace!(channel = %publication.channel, offset = publication.position.offset, "Published.");
        Ok(publication)
    }

    /// What makes `p` happen at most once for `key` (see [`Broker::publish_once`]): checks
    /// the key and digests the event and payload.
    pub fn once(&self, p: &Prepared, key: &str) -> Result<Once, PublishError> {
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY || key.chars().any(char::is_control) {
            return Err(PublishError::BadKey(key.len()));
        }
        let mut h = sha2::Sha256::new();
        h.update(p.event.as_str().as_bytes());
        h.update([0]);
        h.update(p.data.get().as_bytes());
        let d = h.finalize();
        let digest = d[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Once {
            key: key.to_owned(),
            digest,
            window: self.limits.idempotency_window,
        })
    }

    /// Publishes a prepared command from `source` at most once for `once` (see
    /// [`Broker::publish_once`]); a repeat publishes and counts nothing.
    pub async fn publish_once(
        &self,
        p: Prepared,
        source: Source,
        once: &Once,
    ) -> Result<Published, PublishError> {
        if self.is_closed() {
            return Err(PublishError::ShuttingDown);
        }
        let retention = self.retention(&p.channel);
        let published = self
            .broker
            .publish_once(p.channel, p.event, p.data, retention, once)
            .await
            .inspect_err(|e| self.count_refusal(e))?;
        if let Published::New(p) = &published {
            self.count_published(source, p.event.as_str());
        }
        Ok(published)
    }

    /// Counts an engine refusal that has a counter of its own.
    fn count_refusal(&self, e: &EngineError) {
        let refused = &self.stats.refused;
        match e {
            EngineError::LimitReached(LATEST_STATE_BOUND) => {
                refused.latest_state_channels.fetch_add(1, Relaxed);
            }
            EngineError::LimitReached(STATE_KEYS_BOUND) => {
                refused.state_keys.fetch_add(1, Relaxed);
            }
            _ => {}
        }
    }

    /// Refuses further publications (shutdown).
    pub fn close(&self) {
        self.closed.store(true, Relaxed);
    }
}

/// Deserializes any JSON value, discarding it, but parsing every number (which `IgnoredAny`
/// skips), so values a JSON reader would refuse are caught.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> serde::de::Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Checked, E> {
        if v.is_finite() {
            Ok(Checked)
        } else {
            Err(E::custom("number out of range"))
        }
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, Checked>()?
            .is_some()
        {}
        Ok(Checked)
    }
}
