//! What the shared remote-engine parts call on Redis: per-channel pub/sub subscriptions, the
//! canary round trip, re-subscribing after a reconnect, and closing.

use crate::engine::{unavailable, RedisEngine};
use async_trait::async_trait;
use fred::error::Error as RedisError;
use fred::interfaces::{ClientLike, PubsubInterface};
use herald_core::{Canary, ChannelName, EngineError, LinkState, RemoteBackend, CANARY_WAIT};
use std::sync::atomic::Ordering::Relaxed;

#[async_trait]
impl RemoteBackend for RedisEngine {
    const KIND: &'static str = "redis";
    const COUNTERS: &'static [&'static str] = &[
        "lagged_messages",
        "bad_messages",
        "ingested",
        "ingest_rejected",
        "ingest_duplicates",
    ];
    const RECOVER_LIMIT: usize = 10_000;
    /// One channel at a time: each read is a script that holds Redis while it runs.
    const RECOVER_CONCURRENCY: usize = 1;

    async fn listen(&self, channel: &ChannelName) -> Result<(), EngineError> {
        let name = self.pubsub_channel(channel);
        if !self.subscriber.is_connected() {
            return Err(EngineError::Unavailable("redis engine unreachable"));
        }
        // Called on the subscriber client itself (not through `with_options`) so it tracks
        // the channel and re-subscribes it after a reconnect.
        let done = if self.sharded {
            self.subscriber.ssubscribe(name.as_str()).await
        } else {
            self.subscriber.subscribe(name.as_str()).await
        };
        done.map_err(|e| unavailable(&e))
    }

    async fn unlisten(&self, channel: &ChannelName) -> Result<(), EngineError> {
        let name = self.pubsub_channel(channel);
        let done = if self.sharded {
            self.subscriber.sunsubscribe(name.as_str()).await
        } else {
            self.subscriber.unsubscribe(name.as_str()).await
        };
        done.map_err(|e| unavailable(&e))
    }

    /// One round trip through pub/sub, on this node's own canary channel.
    async fn canary(&self) -> Canary {
        let nonce = self.canary_seen.load(Relaxed).wrapping_add(1);
        let arrived = self.canary_arrived.notified();
        let client = self.client.with_options(&self.fast());
        let sent: Result<i64, _> = client
            .publish(self.canary_channel.as_str(), nonce.to_string())
            .await;
        let came_back = match sent {
            Ok(_) => tokio::time::timeout(CANARY_WAIT, async {
                let mut arrived = std::pin::pin!(arrived);
                while self.canary_seen.load(Relaxed) < nonce {
                    arrived.as_mut().await;
                    arrived.set(self.canary_arrived.notified());
                }
            })
            .await
            .is_ok(),
            Err(_) => false,
        };
        let state = if self.client.is_connected() && self.subscriber.is_connected() {
            LinkState::Connected
        } else {
            LinkState::Disconnected
        };
        Canary { came_back, state }
    }

    /// Subscribes again to every channel the subscriber client tracks. (fred's own
    /// `resubscribe_all` also sends a `PSUBSCRIBE` with no patterns, which a Redis Cluster node
    /// refuses, failing every re-subscription after a failover.) When that fails, forces
    /// another reconnect, which asks for another re-subscription.
    async fn resubscribe(&self) -> Result<(), EngineError> {
        let done = async {
            let channels: Vec<String> = self
                .subscriber
                .tracked_channels()
                .into_iter()
                .map(|c| c.to_string())
                .collect();
            if !channels.is_empty() {
                self.subscriber.subscribe(channels).await?;
            }
            // One at a time: channels of different slots may live on different shards.
            for channel in self.subscriber.tracked_shard_channels() {
                self.subscriber.ssubscribe(channel.to_string()).await?;
            }
            Ok::<_, RedisError>(())
        }
        .await;
        if let Err(e) = done {
            let _ = self.subscriber.force_reconnection().await;
            return Err(unavailable(&e));
        }
        Ok(())
    }

    async fn close(&self) {
        let _ = self.subscriber.quit().await;
        let _ = self.client.quit().await;
    }
}
