//! What the node hands an engine when it starts one, and what the engine hands back. Every
//! engine starts the same way (`start(config, &NodeParts, shutdown, tracker)`), so the binary's
//! wiring names a backend only to call its `start`.

use crate::{
    Broker, ChannelsConfig, HistoryStore, Hub, Leases, PresenceStore, Publisher, PublisherLimits,
    Stats,
};
use std::sync::Arc;

/// The parts of the node an engine works with.
#[derive(Debug, Clone)]
pub struct NodeParts {
    /// Where the engine delivers publications and presence events.
    pub hub: Arc<Hub>,
    /// Namespace options.
    pub channels: Arc<ChannelsConfig>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Bounds on what may be published.
    pub publish_limits: PublisherLimits,
}

impl NodeParts {
    /// The node's publisher, publishing through `broker`.
    pub fn publisher(&self, broker: Arc<dyn Broker>) -> Arc<Publisher> {
        Arc::new(Publisher::new(
            broker,
            self.channels.clone(),
            self.publish_limits,
            self.stats.clone(),
        ))
    }
}

/// What a started engine contributes to the node. Its background tasks run on the tracker it
/// was started with and stop when the shutdown token is cancelled.
#[derive(Debug, Clone)]
pub struct EngineParts {
    /// Moves publications between nodes.
    pub broker: Arc<dyn Broker>,
    /// Per-channel streams.
    pub history: Arc<dyn HistoryStore>,
    /// Who is in presence channels.
    pub presence: Arc<dyn PresenceStore>,
    /// The single front door for publishing, built on `broker`.
    pub publisher: Arc<Publisher>,
    /// Leases of pulled sources, shared by the engine's nodes.
    pub leases: Arc<dyn Leases>,
}
