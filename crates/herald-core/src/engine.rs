//! The engine traits a backend implements (broker, history store, presence store), the values
//! they exchange, and their error type.
//!
//! Ordering contract: each channel has one ordering authority. `Broker::publish` assigns the
//! offset, appends to history and delivers to every node's hub as one step per channel, so no
//! subscriber can see an order that differs from the offsets.

use crate::{ChannelName, EventName, KeepLatest, PresenceEvent, Publication};
use async_trait::async_trait;
use herald_protocol::{Member, StreamPosition};
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How a backend failed; the caller picks retry, 503 or close from the kind.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The backend cannot be reached or the node is shutting down.
    #[error("engine unavailable: {0}")]
    Unavailable(&'static str),
    /// The backend refused the operation because a bound was reached.
    #[error("engine limit reached: {0}")]
    LimitReached(&'static str),
    /// The engine cannot do what was asked (yet); the message says what.
    #[error("{0}")]
    Unsupported(&'static str),
    /// The idempotency key was used before with another event or payload.
    #[error("idempotency_key was used before with another event or data on this channel")]
    Conflict,
    /// The node's own storage failed to keep a write (a full disk, an I/O error); nothing of
    /// the operation took effect.
    #[error("storage failed: {0}")]
    Storage(String),
    /// The engine could not start: its server cannot be reached, or refused a step of the
    /// set-up. Only an engine's `start` returns it.
    #[error("{what}")]
    Start {
        /// What failed, naming the server or the object (the URL's hosts, a stream's name).
        what: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The configuration asks for something the engine cannot honour; the message names the
    /// setting. Only an engine's `start` returns it.
    #[error("{0}")]
    Config(String),
}

impl EngineError {
    /// A failed start: `what` failed because of `source`.
    pub fn start(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Start {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// How much history (and latest state) a publish keeps for its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Publications kept per channel.
    pub size: usize,
    /// How long each is kept.
    pub ttl: Duration,
    /// The latest state it keeps, apart from history. While a channel keeps latest state, the
    /// engine keeps its epoch and newest offset too.
    pub latest: KeepLatest,
    /// Most channels keeping latest state at once (`channels.max_latest_state_channels`);
    /// beyond it the engine refuses with [`EngineError::LimitReached`]\([`LATEST_STATE_BOUND`]).
    pub max_latest_channels: usize,
}

/// The bound a publish that would add a channel keeping latest state beyond
/// `channels.max_latest_state_channels` reports.
pub const LATEST_STATE_BOUND: &str = "channels.max_latest_state_channels";

/// The bound a state-store write that would add a key beyond `engine.max_state_keys` reports
/// (an idempotency key among them).
pub const STATE_KEYS_BOUND: &str = "engine.max_state_keys";

impl Retention {
    /// History only: `size` publications for `ttl`, no latest state.
    pub const fn history(size: usize, ttl: Duration) -> Self {
        Self {
            size,
            ttl,
            latest: KeepLatest::OFF,
            max_latest_channels: 0,
        }
    }
}

/// What to read from history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// `Some`: the publications after this position, oldest first.
    /// `None`: the newest `limit` publications, oldest first.
    pub since: Option<StreamPosition>,
    /// At most this many.
    pub limit: usize,
}

/// Why a position cannot be resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// Publications after the position were trimmed or expired.
    BeyondRetention,
    /// The channel's history was lost and restarted under a new epoch.
    EpochChanged,
}

impl ResetReason {
    /// The reason as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BeyondRetention => "beyond_retention",
            Self::EpochChanged => "epoch_changed",
        }
    }
}

/// The answer to a history read.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// The publications, oldest first.
    pub publications: Vec<Arc<Publication>>,
    /// The channel's current position (its newest offset).
    pub top: StreamPosition,
    /// Set when `since` cannot be continued without a gap.
    pub reset: Option<ResetReason>,
}

/// What makes a publish happen at most once: its key (scoped to the channel), a digest of
/// its event and payload (the same key with another body is a conflict) and how long the key
/// is remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Once {
    /// The caller's key.
    pub key: String,
    /// Digest of the event name and payload (16 hex digits).
    pub digest: String,
    /// How long a repeat is recognised.
    pub window: Duration,
}

/// The answer to [`Broker::publish_once`].
#[derive(Debug, Clone)]
pub enum Published {
    /// Published now.
    New(Arc<Publication>),
    /// The key was published before, at this position: nothing was published now.
    Repeat {
        /// The first publication's position.
        position: StreamPosition,
        /// Its time (Unix milliseconds).
        time_ms: u64,
    },
}

impl Published {
    /// The publication of a publish made without a key (which is never a repeat).
    pub fn into_new(self) -> Result<Arc<Publication>, EngineError> {
        match self {
            Self::New(p) => Ok(p),
            Self::Repeat { .. } => Err(EngineError::Unavailable(
                "the engine took a publish without a key for a repeat",
            )),
        }
    }
}

/// What an engine keeps for an idempotency key: `EPOCH OFFSET TIME DIGEST`, one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnceRecord {
    /// The first publication's position.
    pub position: StreamPosition,
    /// Its time (Unix milliseconds).
    pub time_ms: u64,
    /// The digest of its event and payload.
    pub digest: String,
}

impl OnceRecord {
    /// The record of `p`, published with `once`.
    pub fn text(p: &Publication, once: &Once) -> String {
        format!(
            "{} {} {} {}",
            p.position.epoch.as_str(),
            p.position.offset,
            p.time_ms,
            once.digest
        )
    }

    /// Reads a record; `None` when malformed.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(' ');
        let epoch = herald_protocol::Epoch::parse(parts.next()?).ok()?;
        let offset = parts.next()?.parse().ok()?;
        let time_ms = parts.next()?.parse().ok()?;
        let digest = parts.next()?.to_owned();
        Some(Self {
            position: StreamPosition::new(epoch, offset),
            time_ms,
            digest,
        })
    }

    /// The answer to a repeat with `once`: the first position, or a conflict.
    pub fn answer(self, once: &Once) -> Result<Published, EngineError> {
        if self.digest != once.digest {
            return Err(EngineError::Conflict);
        }
        Ok(Published::Repeat {
            position: self.position,
            time_ms: self.time_ms,
        })
    }
}

/// Moves publications and presence events to every node's hub, assigning offsets and appending
/// to history in the same ordered step.
#[async_trait]
pub trait Broker: Send + Sync + std::fmt::Debug + 'static {
    /// Assigns the next position on `channel`, keeps the publication per `retention`, and
    /// delivers it to every subscribed node. Returns the publication with its position.
    async fn publish(
        &self,
        channel: ChannelName,
        event: EventName,
        data: Box<RawValue>,
        retention: Retention,
    ) -> Result<Arc<Publication>, EngineError>;
    /// [`Broker::publish`], unless `once.key` was published on `channel` within
    /// `once.window`: then nothing is published and the first publication's position is
    /// returned ([`EngineError::Conflict`] when its event or payload differed). The check is
    /// made where the order is decided, so a repeat sent to another node is caught too.
    async fn publish_once(
        &self,
        channel: ChannelName,
        event: EventName,
        data: Box<RawValue>,
        retention: Retention,
        once: &Once,
    ) -> Result<Published, EngineError> {
        let _ = (channel, event, data, retention, once);
        Err(EngineError::Unsupported(
            "idempotency_key is not supported by this engine",
        ))
    }
    /// Delivers a presence event to every subscribed node (not kept in history).
    async fn publish_presence(&self, event: PresenceEvent) -> Result<(), EngineError>;
    /// A local subscriber was added to `channel` in the hub. Returns once the engine delivers
    /// `channel` to this node (a no-op when it already does).
    async fn subscribe(&self, channel: &ChannelName) -> Result<(), EngineError>;
    /// A local subscriber left `channel`; the engine stops delivering it to this node when the
    /// hub has none left.
    async fn unsubscribe(&self, channel: &ChannelName) -> Result<(), EngineError>;
    /// Health and counters for `/health/ready` and `/api/stats`.
    fn status(&self) -> EngineStatus {
        EngineStatus::embedded()
    }
}

/// What an engine reports about itself.
#[derive(Debug, Clone, Serialize)]
pub struct EngineStatus {
    /// `memory`, `redis` or `nats`.
    pub kind: &'static str,
    /// Whether the node may take work: the engine is reachable and a canary made the round trip.
    pub ready: bool,
    /// `embedded`, `connected`, `connecting` or `disconnected`.
    pub state: &'static str,
    /// Times the connection to the engine was re-established.
    pub reconnects: u64,
    /// Publish round trips to the engine: count, mean and max in microseconds.
    pub publish_latency: LatencySummary,
    /// Engine-specific counters (recoveries after lost pub/sub messages, ingested entries…).
    pub counters: BTreeMap<&'static str, u64>,
    /// Publish round trips to the engine (`/metrics`; percentiles in `/api/stats`).
    #[serde(skip)]
    pub publish_durations: crate::HistogramSnapshot,
    /// Publication time to arrival from the engine (`/metrics`; percentiles in `/api/stats`).
    #[serde(skip)]
    pub lag: crate::HistogramSnapshot,
}

impl EngineStatus {
    /// The in-process engine: always ready.
    pub fn embedded() -> Self {
        Self {
            kind: "memory",
            ready: true,
            state: "embedded",
            reconnects: 0,
            publish_latency: LatencySummary::default(),
            counters: BTreeMap::new(),
            publish_durations: crate::HistogramSnapshot::default(),
            lag: crate::HistogramSnapshot::default(),
        }
    }
}

/// Count, mean and max of a latency, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_us: u64,
    /// Largest.
    pub max_us: u64,
}

/// Decides whether reading on from `since` is possible, given the channel's current `epoch`,
/// its newest offset `top` and the oldest offset still kept (`top + 1` when none is).
pub fn resume_reset(
    since: &StreamPosition,
    epoch: &herald_protocol::Epoch,
    top: u64,
    oldest: u64,
) -> Option<ResetReason> {
    if since.epoch != *epoch || since.offset > top {
        Some(ResetReason::EpochChanged)
    } else if since.offset + 1 < oldest {
        Some(ResetReason::BeyondRetention)
    } else {
        None
    }
}

/// Reads the per-channel streams the broker appends to.
#[async_trait]
pub trait HistoryStore: Send + Sync + std::fmt::Debug + 'static {
    /// Reads publications per `query`.
    async fn read(
        &self,
        channel: &ChannelName,
        query: HistoryQuery,
    ) -> Result<HistoryPage, EngineError>;

    /// The channel's latest state (what publications with [`Retention::latest`] kept), oldest
    /// first, and its current position; `reset` is always `None`. Kept apart from history, so
    /// it outlives `history_ttl` and trimming.
    async fn latest(&self, channel: &ChannelName) -> Result<HistoryPage, EngineError>;
}

/// Small durable values kept beside the channels (idempotency keys, a source's cursor, a
/// rotated token), by scope (who owns them) and key. A value with a time to live expires.
#[async_trait]
pub trait StateStore: Send + Sync + std::fmt::Debug + 'static {
    /// The value of `key` in `scope`, unless absent or expired.
    async fn get(&self, scope: &str, key: &str) -> Result<Option<Arc<[u8]>>, EngineError>;
    /// Sets `key` in `scope` to `value`, for `ttl` if given. Durable when it returns (with a
    /// data directory).
    async fn put(
        &self,
        scope: &str,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), EngineError>;
    /// Removes `key` from `scope`.
    async fn remove(&self, scope: &str, key: &str) -> Result<(), EngineError>;
}

/// Who is subscribed to presence channels.
#[async_trait]
pub trait PresenceStore: Send + Sync + std::fmt::Debug + 'static {
    /// Adds (or refreshes) `member` on `channel`.
    async fn join(&self, channel: &ChannelName, member: &Member) -> Result<(), EngineError>;
    /// Removes the member with `conn_id` from `channel`.
    async fn leave(&self, channel: &ChannelName, conn_id: &str) -> Result<(), EngineError>;
    /// The current members of `channel`.
    async fn members(&self, channel: &ChannelName) -> Result<Vec<Member>, EngineError>;
}

/// How long a lease lasts unless its holder renews it; holders renew every third of it.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// Named leases shared by the nodes of a cluster, so a pulled source (a Postgres outbox, a
/// Twitch session, a Redis stream) is consumed by exactly one node at a time. A holder that
/// stops renewing loses its lease after [`LEASE_TTL`]; another node then takes it.
#[async_trait]
pub trait Leases: Send + Sync + std::fmt::Debug + 'static {
    /// Takes `name` for `holder` when it is free, or renews it when `holder` has it, for
    /// [`LEASE_TTL`]. True while `holder` has it.
    async fn hold(&self, name: &str, holder: &str) -> Result<bool, EngineError>;
    /// Gives `name` up when `holder` has it, so another node need not wait for it to expire.
    async fn release(&self, name: &str, holder: &str) -> Result<(), EngineError>;
}
