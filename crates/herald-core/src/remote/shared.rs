//! `Remote`: the state a remote engine shares with the tasks in `remote/`: the hub it delivers
//! into, its health, which channels it receives and the last position seen on each, and the
//! signals that wake recovery and re-subscription.

use super::backend::RemoteBackend;
use super::health::EngineHealth;
use super::last_seen::LastSeen;
use super::subscriptions::{RemoteSubscriber, RemoteSubscriptions};
use crate::{ChannelName, EngineError, EngineStatus, HistoryQuery, Hub, Outgoing};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Counters kept for every remote engine, besides the engine's own.
const COUNTERS: &[&str] = &["recoveries", "recovered_publications"];

/// How long a failed recovery or re-subscription waits before it tries again.
pub(super) const RETRY_AFTER: Duration = Duration::from_millis(500);

/// One remote engine's shared state on this node; see the module documentation.
#[derive(Debug)]
pub struct Remote {
    pub(super) hub: Arc<Hub>,
    pub(super) health: EngineHealth,
    subscriptions: RemoteSubscriptions,
    pub(super) last_seen: LastSeen,
    /// Wakes the recovery task; holds at most one pending request, so any number of lags or
    /// reconnects while a recovery runs cause exactly one more pass.
    pub(super) recovery_wanted: Notify,
    /// Wakes the re-subscription task after a reconnect; at most one pending request too.
    pub(super) resubscribe_wanted: Notify,
}

impl Remote {
    /// The shared state of an engine of type `B` delivering into `hub`: not ready, nothing
    /// received yet.
    pub fn new<B: RemoteBackend>(hub: Arc<Hub>) -> Arc<Self> {
        let counters: Vec<&'static str> = COUNTERS.iter().chain(B::COUNTERS).copied().collect();
        Arc::new(Self {
            hub,
            health: EngineHealth::new(B::KIND, &counters),
            subscriptions: RemoteSubscriptions::default(),
            last_seen: LastSeen::default(),
            recovery_wanted: Notify::new(),
            resubscribe_wanted: Notify::new(),
        })
    }

    /// The engine's health and counters.
    pub fn health(&self) -> &EngineHealth {
        &self.health
    }

    /// The status for `/api/stats` (`Broker::status`).
    pub fn status(&self) -> EngineStatus {
        self.health.status()
    }

    /// Fans out what arrived from the engine on `channel` to this node's subscribers, noting a
    /// publication's position for recovery.
    pub fn deliver(&self, channel: &ChannelName, item: &Outgoing) {
        if let Outgoing::Publication(p) = item {
            self.last_seen.saw(channel, &p.position);
            self.health.arrived(p.time_ms);
        }
        self.hub.fan_out(channel, item);
    }

    /// Asks for a recovery: messages from the engine may have been lost (a receiver lagged, the
    /// client dropped messages for a slow subscription).
    pub fn lost_messages(&self) {
        self.recovery_wanted.notify_one();
    }

    /// Counts a re-established connection and asks for a re-subscription, which is followed by a
    /// recovery.
    pub fn reconnected(&self) {
        self.health.reconnected();
        self.resubscribe_wanted.notify_one();
    }

    /// Subscribes or unsubscribes `channel` at the engine so it matches the hub
    /// (`Broker::subscribe` and `Broker::unsubscribe`). A channel newly received is tracked
    /// from its position at that moment.
    pub async fn sync<B: RemoteBackend>(
        &self,
        backend: &B,
        channel: &ChannelName,
    ) -> Result<(), EngineError> {
        let listener = Listener {
            remote: self,
            backend,
        };
        self.subscriptions.sync(&self.hub, channel, &listener).await
    }
}

/// A backend's per-channel subscription together with the last-seen bookkeeping.
struct Listener<'a, B> {
    remote: &'a Remote,
    backend: &'a B,
}

#[async_trait]
impl<B: RemoteBackend> RemoteSubscriber for Listener<'_, B> {
    async fn remote_subscribe(&self, channel: &ChannelName) -> Result<(), EngineError> {
        self.backend.listen(channel).await?;
        // Publications from here on arrive from the engine; the current top is where this
        // node starts counting for recovery.
        let top = self
            .backend
            .read(
                channel,
                HistoryQuery {
                    since: None,
                    limit: 0,
                },
            )
            .await;
        match top {
            Ok(page) => {
                self.remote.last_seen.track(channel, page.top);
                Ok(())
            }
            Err(e) => {
                // Not subscribed after all (the caller retries from scratch), so the engine
                // must not keep delivering it.
                if let Err(error) = self.backend.unlisten(channel).await {
                    tracing::debug!(channel = %channel, error = %error, "Undoing a failed subscribe failed.");
                }
                Err(e)
            }
        }
    }

    async fn remote_unsubscribe(&self, channel: &ChannelName) -> Result<(), EngineError> {
        self.remote.last_seen.forget(channel);
        self.backend.unlisten(channel).await
    }
}
