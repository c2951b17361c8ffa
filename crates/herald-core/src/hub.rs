//! The local registry of who on this node is subscribed to what, sharded by channel, and the
//! synchronous fan-out that queues a shared item into each subscriber's outbox without waiting.
//!
//! A subscriber whose outbox is full is evicted here: removed from every shard entry fan-out
//! touches and told to close with a reconnect code. Nothing in this file awaits.

use crate::{ChannelName, OutboxTx, Outgoing, PushError, Stats};
use herald_protocol::CloseCode;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A connection's id, unique on this node and random across nodes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(fastrand::u64(..))
    }
}

impl ConnId {
    /// Parses the 16-hex-digit form shown to clients.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 16
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(Self)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnId({self})")
    }
}

type Subscribers = HashMap<ConnId, OutboxTx>;

/// This node's subscriptions: channel → connection → outbox.
#[derive(Debug)]
pub struct Hub {
    shards: Box<[Mutex<HashMap<ChannelName, Subscribers>>]>,
    conns: Box<[Mutex<HashMap<ConnId, OutboxTx>>]>,
    hasher: RandomState,
    stats: Arc<Stats>,
}

const DEFAULT_SHARDS: usize = 64;

impl Hub {
    /// An empty hub.
    pub fn new(stats: Arc<Stats>) -> Self {
        Self {
            shards: (0..DEFAULT_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            conns: (0..DEFAULT_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            hasher: RandomState::new(),
            stats,
        }
    }

    fn shard(&self, channel: &ChannelName) -> MutexGuard<'_, HashMap<ChannelName, Subscribers>> {
        let i = (self.hasher.hash_one(channel.as_str()) as usize) % self.shards.len();
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a subscriber. Returns true when it is the channel's first on this node.
    pub fn subscribe(&self, channel: &ChannelName, conn: ConnId, tx: OutboxTx) -> bool {
        let mut shard = self.shard(channel);
        let subs = shard.entry(channel.clone()).or_default();
        subs.insert(conn, tx);
        subs.len() == 1
    }

    /// Removes a subscriber. Returns true when the channel has no subscribers left on this node.
    pub fn unsubscribe(&self, channel: &ChannelName, conn: ConnId) -> bool {
        let mut shard = self.shard(channel);
        let Some(subs) = shard.get_mut(channel) else {
            return true;
        };
        subs.remove(&conn);
        if subs.is_empty() {
            shard.remove(channel);
            true
        } else {
            false
        }
    }

    /// Queues `item` to every subscriber of `channel` on this node; never waits. Subscribers
    /// whose outbox is full are evicted with [`CloseCode::SlowConsumer`].
    pub fn fan_out(&self, channel: &ChannelName, item: &Outgoing) -> usize {
        let mut evicted = Vec::new();
        let mut delivered = 0;
        {
            let mut shard = self.shard(channel);
            let Some(subs) = shard.get_mut(channel) else {
                return 0;
            };
            subs.retain(|_, tx| match tx.push(item.clone()) {
                Ok(()) => {
                    delivered += 1;
                    true
                }
                Err(PushError::Full) => {
                    evicted.push(tx.clone());
                    false
                }
                Err(PushError::Closed) => false,
            });
            if subs.is_empty() {
                shard.remove(channel);
            }
        }
        for tx in &evicted {
            tx.close(CloseCode::SlowConsumer);
        }
        if !evicted.is_empty() {
            self.stats
                .slow_consumer_evictions
                .fetch_add(evicted.len() as u64, Relaxed);
            tracing::debug!(channel = %channel, count = evicted.len(), "Evicted slow consumers.");
        }
        self.stats.deliveries.fetch_add(delivered as u64, Relaxed);
        delivered
    }

    /// Closes every local subscriber of `channel` with `code`. Returns how many.
    pub fn close_channel(&self, channel: &ChannelName, code: CloseCode) -> usize {
        let txs: Vec<OutboxTx> = self
            .shard(channel)
            .get(channel)
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default();
        for tx in &txs {
            tx.close(code);
        }
        txs.len()
    }

    fn conn_shard(&self, conn: ConnId) -> MutexGuard<'_, HashMap<ConnId, OutboxTx>> {
        let i = (conn.0 as usize) % self.conns.len();
        self.conns[i].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a connection so operators can close it by id.
    pub fn register(&self, conn: ConnId, tx: OutboxTx) {
        self.conn_shard(conn).insert(conn, tx);
    }

    /// Forgets a connection.
    pub fn deregister(&self, conn: ConnId) {
        self.conn_shard(conn).remove(&conn);
    }

    /// Closes the connection `conn` with `code`. Returns whether it exists on this node.
    pub fn close_conn(&self, conn: ConnId, code: CloseCode) -> bool {
        let tx = self.conn_shard(conn).get(&conn).cloned();
        match tx {
            Some(tx) => {
                tx.close(code);
                true
            }
            None => false,
        }
    }

    /// Closes every connection on this node with `code` (shutdown). Returns how many.
    pub fn close_all(&self, code: CloseCode) -> usize {
        let mut n = 0;
        for shard in self.conns.iter() {
            let txs: Vec<OutboxTx> = shard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .cloned()
                .collect();
            for tx in txs {
                tx.close(code);
                n += 1;
            }
        }
        n
    }

    /// Local subscribers of `channel`.
    pub fn subscribers(&self, channel: &ChannelName) -> usize {
        self.shard(channel).get(channel).map_or(0, HashMap::len)
    }

    /// Up to `limit` active channels with their local subscriber counts, sorted by name.
    pub fn channels(&self, limit: usize) -> Vec<(ChannelName, usize)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            out.extend(shard.iter().map(|(c, s)| (c.clone(), s.len())));
        }
        out.sort();
        out.truncate(limit);
        out
    }

    /// Totals: (active channels, subscriptions).
    pub fn totals(&self) -> (usize, usize) {
        let mut channels = 0;
        let mut subs = 0;
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            channels += shard.len();
            subs += shard.values().map(HashMap::len).sum::<usize>();
        }
        (channels, subs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{outbox, EventName, OutboxLimits, Publication};
    use herald_protocol::{Epoch, StreamPosition};
    use serde_json::value::RawValue;

    #[tokio::test]
    async fn full_subscriber_is_evicted_and_others_keep_receiving() {
        let hub = Hub::new(Arc::new(Stats::default()));
        let ch = ChannelName::parse("c").unwrap();
        let (slow_tx, mut slow_rx) = outbox(OutboxLimits {
            messages: 1,
            bytes: 1 << 20,
        });
        let (fast_tx, mut fast_rx) = outbox(OutboxLimits::default());
        assert!(hub.subscribe(&ch, ConnId::random(), slow_tx));
        assert!(!hub.subscribe(&ch, ConnId::random(), fast_tx));
        let item = |n| {
            Outgoing::Publication(Arc::new(Publication::new(
                ch.clone(),
                EventName::message(),
                RawValue::from_string("{}".into()).unwrap(),
                StreamPosition::new(Epoch::parse("e").unwrap(), n),
                0,
            )))
        };
        assert_eq!(hub.fan_out(&ch, &item(1)), 2);
        assert_eq!(hub.fan_out(&ch, &item(2)), 1);
        assert_eq!(hub.subscribers(&ch), 1);
        let mut buf = Vec::new();
        assert_eq!(slow_rx.recv(&mut buf).await, Err(CloseCode::SlowConsumer));
        fast_rx.recv(&mut buf).await.unwrap();
        assert_eq!(buf.len(), 2);
        assert_eq!(hub.stats.slow_consumer_evictions.load(Relaxed), 1);
    }
}
