//! `RemoteBackend`: what an engine that connects nodes provides to the shared parts in
//! `remote/`. Its history store is what recovery reads.

use super::health::LinkState;
use crate::{ChannelName, EngineError, HistoryStore};
use async_trait::async_trait;

/// What one canary round trip found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canary {
    /// Whether the canary came back: the engine is ready.
    pub came_back: bool,
    /// The connection's state, as the engine's client sees it.
    pub state: LinkState,
}

/// The engine-specific side of a remote engine; the rest lives in [`super::Remote`].
#[async_trait]
pub trait RemoteBackend: HistoryStore {
    /// The engine's kind (`redis`, `nats`), as `/api/stats` and the logs name it.
    const KIND: &'static str;
    /// The engine's own counters; the shared parts add `recoveries` and
    /// `recovered_publications`.
    const COUNTERS: &'static [&'static str];
    /// Most publications one recovery replays per channel; beyond it sessions find the gap and
    /// read history themselves (or get a reset).
    const RECOVER_LIMIT: usize;
    /// Channels one recovery reads at once.
    const RECOVER_CONCURRENCY: usize;

    /// Starts receiving `channel`; returns once the engine confirmed it, so everything
    /// published from then on arrives.
    async fn listen(&self, channel: &ChannelName) -> Result<(), EngineError>;
    /// Stops receiving `channel`.
    async fn unlisten(&self, channel: &ChannelName) -> Result<(), EngineError>;
    /// One canary round trip, bounded in time by the engine ([`super::CANARY_WAIT`]).
    async fn canary(&self) -> Canary;
    /// After a reconnect: makes sure every channel this node receives is subscribed on the new
    /// connection, and returns once what is published from now on arrives. A recovery follows.
    async fn resubscribe(&self) -> Result<(), EngineError>;
    /// Closes the engine's connections once the node shuts down.
    async fn close(&self);
}
