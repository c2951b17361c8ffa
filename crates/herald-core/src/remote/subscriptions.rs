//! `RemoteSubscriptions`: which channels this node receives from the engine, kept in step with
//! the hub under a per-channel lock.

use crate::{ChannelName, EngineError, Hub};
use async_trait::async_trait;
use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use tokio::sync::Mutex;

/// The engine side of a per-channel subscription.
#[async_trait]
pub trait RemoteSubscriber: Send + Sync {
    /// Starts receiving `channel` from the engine; returns once the engine confirmed it.
    async fn remote_subscribe(&self, channel: &ChannelName) -> Result<(), EngineError>;
    /// Stops receiving `channel`.
    async fn remote_unsubscribe(&self, channel: &ChannelName) -> Result<(), EngineError>;
}

/// Which channels this node receives from the engine.
///
/// Sessions change the hub first and then call [`RemoteSubscriptions::sync`], which compares
/// the hub's state with the engine's under a per-channel lock. A subscribe racing an
/// unsubscribe therefore always ends with the engine subscribed exactly when the hub has
/// subscribers: the last `sync` sees the final state.
#[derive(Debug)]
pub struct RemoteSubscriptions {
    shards: Box<[Mutex<HashSet<ChannelName>>]>,
    hasher: RandomState,
}

impl Default for RemoteSubscriptions {
    fn default() -> Self {
        Self {
            shards: (0..64).map(|_| Mutex::new(HashSet::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl RemoteSubscriptions {
    /// Subscribes or unsubscribes `channel` at the engine so it matches the hub.
    pub async fn sync<S: RemoteSubscriber + ?Sized>(
        &self,
        hub: &Hub,
        channel: &ChannelName,
        engine: &S,
    ) -> Result<(), EngineError> {
        let i = (self.hasher.hash_one(channel.as_str()) as usize) % self.shards.len();
        let mut subscribed = self.shards[i].lock().await;
        let wanted = hub.subscribers(channel) > 0;
        let have = subscribed.contains(channel);
        if wanted && !have {
            engine.remote_subscribe(channel).await?;
            subscribed.insert(channel.clone());
        } else if !wanted && have {
            // Forget it first: if the engine call fails, a later subscribe retries cleanly.
            subscribed.remove(channel);
            engine.remote_unsubscribe(channel).await?;
        }
        Ok(())
    }

    /// Every channel currently subscribed at the engine.
    pub async fn channels(&self) -> Vec<ChannelName> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            out.extend(shard.lock().await.iter().cloned());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{outbox, ConnId, OutboxLimits, Stats};
    use std::sync::Arc;

    #[derive(Default)]
    struct Counting {
        subs: std::sync::Mutex<Vec<(bool, String)>>,
    }

    #[async_trait]
    impl RemoteSubscriber for Counting {
        async fn remote_subscribe(&self, c: &ChannelName) -> Result<(), EngineError> {
            self.subs.lock().unwrap().push((true, c.to_string()));
            Ok(())
        }
        async fn remote_unsubscribe(&self, c: &ChannelName) -> Result<(), EngineError> {
            self.subs.lock().unwrap().push((false, c.to_string()));
            Ok(())
        }
    }

    #[tokio::test]
    async fn sync_follows_the_hub_whatever_order_calls_arrive_in() {
        let hub = Hub::new(Arc::new(Stats::default()));
        let remote = RemoteSubscriptions::default();
        let engine = Counting::default();
        let ch = ChannelName::parse("c").unwrap();
        let (tx, _rx) = outbox(ConnId::random(), OutboxLimits::default());
        let a = ConnId::random();
        hub.subscribe(&ch, a, tx.clone());
        remote.sync(&hub, &ch, &engine).await.unwrap();
        // A second sync with subscribers still present does nothing.
        remote.sync(&hub, &ch, &engine).await.unwrap();
        // The last subscriber leaves and another arrives before the leave's sync runs.
        hub.unsubscribe(&ch, a);
        hub.subscribe(&ch, ConnId::random(), tx);
        remote.sync(&hub, &ch, &engine).await.unwrap();
        remote.sync(&hub, &ch, &engine).await.unwrap();
        assert_eq!(*engine.subs.lock().unwrap(), vec![(true, "c".to_owned())]);
        assert_eq!(remote.channels().await, vec![ch]);
    }
}
