//! `Node`: the engine's parts on this node, built once by the binary's wiring and shared by the
//! HTTP API, the transports and sessions.

use crate::{
    AppProxy, Broker, ChannelsConfig, HistoryStore, Hub, KeyedBuckets, PresenceStore, Publisher,
    Stats,
};
use std::sync::Arc;

/// The engine's parts on this node.
#[derive(Debug, Clone)]
pub struct Node {
    /// Local subscriptions and fan-out.
    pub hub: Arc<Hub>,
    /// Moves publications between nodes.
    pub broker: Arc<dyn Broker>,
    /// Per-channel streams.
    pub history: Arc<dyn HistoryStore>,
    /// Who is in presence channels.
    pub presence: Arc<dyn PresenceStore>,
    /// The single front door for publishing.
    pub publisher: Arc<Publisher>,
    /// Namespace options.
    pub channels: Arc<ChannelsConfig>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// What client requests are checked against beyond their permission, shared by every
    /// connection of the node. One pointer: every session holds a `Node`.
    pub clients: Arc<ClientRules>,
}

/// What client requests are checked against beyond their permission.
#[derive(Debug)]
pub struct ClientRules {
    /// Client publish buckets per namespace and user (`publish_per_minute`).
    pub user_rates: KeyedBuckets,
    /// Asks the app's backend about client publishes and subscribes where a namespace names a
    /// proxy; `None` when the node has none configured.
    pub proxy: Option<Arc<dyn AppProxy>>,
}
