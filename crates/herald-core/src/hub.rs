//! The local registry of who on this node is subscribed to what, sharded by channel, and the
//! synchronous fan-out that never waits: a publication is appended once to its channel's
//! [`Topic`] ring, which tells only the subscribers that were idle; a presence change is queued
//! into each subscriber's outbox.
//!
//! A subscriber that falls too far behind (the ring dropped what it had not read, or its outbox
//! is full) is evicted: removed from the channel and told to close with a reconnect code.
//! Nothing in this file awaits.

use crate::conn_id::ConnIdMap;
use crate::topic::Topic;
use crate::{ChannelName, ConnId, OutboxLimits, OutboxTx, Outgoing, PushError, Stats};
use herald_protocol::CloseCode;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// One shard of the channel map.
type Topics = HashMap<ChannelName, Arc<Topic>>;

/// This node's subscriptions: channel → topic (its readers and recent publications).
#[derive(Debug)]
pub struct Hub {
    shards: Box<[Mutex<Topics>]>,
    conns: Box<[Mutex<ConnIdMap<Registered>>]>,
    hasher: RandomState,
    /// How far a subscriber may fall behind on one channel before it is evicted.
    lag: OutboxLimits,
    stats: Arc<Stats>,
}

const DEFAULT_SHARDS: usize = 64;

/// A registered connection: its outbox, and who its token names (the session's own `Arc`, so
/// an entry costs one pointer more than the outbox alone).
#[derive(Debug, Clone)]
struct Registered {
    tx: OutboxTx,
    identity: Option<Arc<crate::Identity>>,
}

/// A connection as operators list it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConnectionInfo {
    /// Its id (as in presence and `POST /api/disconnect`).
    pub conn_id: String,
    /// Its token's `sub`, when it has a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

impl Hub {
    /// An empty hub with the default lag bound.
    pub fn new(stats: Arc<Stats>) -> Self {
        Self::with_lag(stats, OutboxLimits::default())
    }

    /// An empty hub whose subscribers are evicted once they are more than `lag` behind on a
    /// channel (messages or bytes).
    pub fn with_lag(stats: Arc<Stats>, lag: OutboxLimits) -> Self {
        Self {
            shards: (0..DEFAULT_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            conns: (0..DEFAULT_SHARDS)
                .map(|_| Mutex::new(ConnIdMap::default()))
                .collect(),
            hasher: RandomState::new(),
            lag,
            stats,
        }
    }

    fn shard(&self, channel: &ChannelName) -> MutexGuard<'_, Topics> {
        let i = (self.hasher.hash_one(channel.as_str()) as usize) % self.shards.len();
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn topic(&self, channel: &ChannelName) -> Option<Arc<Topic>> {
        self.shard(channel).get(channel).cloned()
    }

    /// Adds a subscriber; it receives the channel's publications from now on. Returns true when
    /// it is the channel's first on this node.
    pub fn subscribe(&self, channel: &ChannelName, conn: ConnId, tx: OutboxTx) -> bool {
        let mut shard = self.shard(channel);
        let topic = shard
            .entry(channel.clone())
            .or_insert_with(|| Arc::new(Topic::new(self.lag, self.stats.clone())));
        topic.add(conn, tx) == 1
    }

    /// Removes a subscriber. Returns true when the channel has no subscribers left on this node.
    pub fn unsubscribe(&self, channel: &ChannelName, conn: ConnId) -> bool {
        let mut shard = self.shard(channel);
        let Some(topic) = shard.get(channel) else {
            return true;
        };
        if topic.remove(conn) == 0 {
            shard.remove(channel);
            true
        } else {
            false
        }
    }

    /// Delivers `item` to every subscriber of `channel` on this node; never waits. Returns how
    /// many subscribers it reaches. Subscribers that fell too far behind are evicted with
    /// [`CloseCode::SlowConsumer`].
    pub fn fan_out(&self, channel: &ChannelName, item: &Outgoing) -> usize {
        let Some(topic) = self.topic(channel) else {
            return 0;
        };
        let (delivered, evicted) = match item {
            Outgoing::Publication(p) => {
                let appended = topic.append(p);
                let mut notify = appended.notify;
                let mut closed = Vec::new();
                for (conn, tx) in &notify {
                    if !tx.notify(topic.clone()) {
                        closed.push(*conn);
                    }
                }
                notify.clear();
                topic.recycle(notify);
                // A connection that closed (shutdown, operator disconnect, gone) stops holding
                // the ring before its session leaves, and is not later taken for a slow one.
                for conn in closed {
                    topic.remove(conn);
                }
                (appended.readers, appended.evicted)
            }
            Outgoing::Presence(_) => {
                let mut delivered = 0;
                let mut evicted = Vec::new();
                for tx in topic.outboxes() {
                    match tx.push(item.clone()) {
                        Ok(()) => delivered += 1,
                        Err(PushError::Full) => evicted.push(tx),
                        Err(PushError::Closed) => {}
                    }
                }
                (delivered, evicted)
            }
        };
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
        let txs = self
            .topic(channel)
            .map(|t| t.outboxes())
            .unwrap_or_default();
        for tx in &txs {
            tx.close(code);
        }
        txs.len()
    }

    fn conn_shard(&self, conn: ConnId) -> MutexGuard<'_, ConnIdMap<Registered>> {
        // Bits the shard's own map does not use (it takes the low bits for the bucket and the
        // top seven for its tags), so every shard's table stays evenly filled.
        let i = ((conn.0 >> 32) as usize) % self.conns.len();
        self.conns[i].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a connection so operators can close it by id.
    pub fn register(&self, conn: ConnId, tx: OutboxTx) {
        self.conn_shard(conn)
            .insert(conn, Registered { tx, identity: None });
    }

    /// Records who a registered connection's token names (after it authenticated).
    pub fn set_identity(&self, conn: ConnId, identity: Option<Arc<crate::Identity>>) {
        if let Some(r) = self.conn_shard(conn).get_mut(&conn) {
            r.identity = identity;
        }
    }

    /// The registered connections, those of `user` only when given, at most `limit` (sorted
    /// by id), and how many matched in all.
    pub fn connections(&self, user: Option<&str>, limit: usize) -> (Vec<ConnectionInfo>, usize) {
        let mut out = Vec::new();
        for shard in self.conns.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for (id, r) in shard.iter() {
                let who = r.identity.as_deref().map(|i| &*i.user);
                if user.is_some_and(|u| who != Some(u)) {
                    continue;
                }
                out.push(ConnectionInfo {
                    conn_id: id.to_string(),
                    user_id: who.map(str::to_owned),
                });
            }
        }
        out.sort_by(|a, b| a.conn_id.cmp(&b.conn_id));
        let total = out.len();
        out.truncate(limit);
        (out, total)
    }

    /// Closes every connection of `user` with `code`. Returns how many.
    pub fn close_user(&self, user: &str, code: CloseCode) -> usize {
        let mut txs = Vec::new();
        for shard in self.conns.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            txs.extend(
                shard
                    .values()
                    .filter(|r| r.identity.as_deref().is_some_and(|i| &*i.user == user))
                    .map(|r| r.tx.clone()),
            );
        }
        for tx in &txs {
            tx.close(code);
        }
        txs.len()
    }

    /// Forgets a connection.
    pub fn deregister(&self, conn: ConnId) {
        self.conn_shard(conn).remove(&conn);
    }

    /// Closes the connection `conn` with `code`. Returns whether it exists on this node.
    pub fn close_conn(&self, conn: ConnId, code: CloseCode) -> bool {
        let tx = self.conn_shard(conn).get(&conn).map(|r| r.tx.clone());
        match tx {
            Some(tx) => {
                tx.close(code);
                true
            }
            None => false,
        }
    }

    /// The ids of every registered connection (a drain tells them one by one).
    pub fn conn_ids(&self) -> Vec<ConnId> {
        let mut ids = Vec::new();
        for shard in self.conns.iter() {
            ids.extend(
                shard
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .keys()
                    .copied(),
            );
        }
        ids
    }

    /// Closes every connection on this node with `code` (shutdown). Returns how many.
    pub fn close_all(&self, code: CloseCode) -> usize {
        let mut n = 0;
        for shard in self.conns.iter() {
            let txs: Vec<OutboxTx> = shard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .map(|r| r.tx.clone())
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
        self.topic(channel).map_or(0, |t| t.len())
    }

    /// Up to `limit` active channels with their local subscriber counts, sorted by name.
    pub fn channels(&self, limit: usize) -> Vec<(ChannelName, usize)> {
        self.channels_matching("", limit).0
    }

    /// Channels whose name contains `search` (every one for ""), sorted, at most `limit`, and
    /// how many matched.
    pub fn channels_matching(
        &self,
        search: &str,
        limit: usize,
    ) -> (Vec<(ChannelName, usize)>, usize) {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            out.extend(
                shard
                    .iter()
                    .filter(|(c, _)| c.as_str().contains(search))
                    .map(|(c, t)| (c.clone(), t.len())),
            );
        }
        out.sort();
        let total = out.len();
        out.truncate(limit);
        (out, total)
    }

    /// Totals: (active channels, subscriptions).
    pub fn totals(&self) -> (usize, usize) {
        let mut channels = 0;
        let mut subs = 0;
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            channels += shard.len();
            subs += shard.values().map(|t| t.len()).sum::<usize>();
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

    fn publication(ch: &ChannelName, n: u64) -> Outgoing {
        Outgoing::Publication(Arc::new(Publication::new(
            ch.clone(),
            EventName::message(),
            RawValue::from_string("{}".into()).unwrap(),
            StreamPosition::new(Epoch::parse("e").unwrap(), n),
            0,
        )))
    }

    fn offsets(buf: &[Outgoing]) -> Vec<u64> {
        buf.iter()
            .map(|o| match o {
                Outgoing::Publication(p) => p.position.offset,
                Outgoing::Presence(_) => 0,
            })
            .collect()
    }

    /// A hub whose channels let a reader fall two publications behind.
    fn hub_with_lag_of_two() -> (Hub, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        let hub = Hub::with_lag(
            stats.clone(),
            OutboxLimits {
                messages: 2,
                bytes: 1 << 20,
            },
        );
        (hub, stats)
    }

    #[tokio::test]
    async fn a_subscriber_too_far_behind_is_evicted_and_others_keep_receiving() {
        let (hub, stats) = hub_with_lag_of_two();
        let ch = ChannelName::parse("c").unwrap();
        let (slow, fast) = (ConnId::random(), ConnId::random());
        let (slow_tx, mut slow_rx) = outbox(slow, OutboxLimits::default());
        let (fast_tx, mut fast_rx) = outbox(fast, OutboxLimits::default());
        assert!(hub.subscribe(&ch, slow, slow_tx));
        assert!(!hub.subscribe(&ch, fast, fast_tx));
        let mut buf = Vec::new();
        for n in 1..=3 {
            assert_eq!(
                hub.fan_out(&ch, &publication(&ch, n)),
                2 - usize::from(n == 3)
            );
            fast_rx.recv(&mut buf).await.unwrap();
            assert_eq!(offsets(&buf), [n]);
            buf.clear();
        }
        // The slow one never read: the third publication pushed its first out of the ring.
        assert_eq!(hub.subscribers(&ch), 1);
        assert_eq!(slow_rx.recv(&mut buf).await, Err(CloseCode::SlowConsumer));
        assert!(buf.is_empty());
        assert_eq!(stats.slow_consumer_evictions.load(Relaxed), 1);
        assert_eq!(stats.deliveries.load(Relaxed), 5);
    }

    #[tokio::test]
    async fn a_closed_subscriber_stops_holding_the_ring_and_is_not_counted_slow() {
        let (hub, stats) = hub_with_lag_of_two();
        let ch = ChannelName::parse("c").unwrap();
        let (gone, live) = (ConnId::random(), ConnId::random());
        let (gone_tx, gone_rx) = outbox(gone, OutboxLimits::default());
        let (live_tx, mut live_rx) = outbox(live, OutboxLimits::default());
        hub.subscribe(&ch, gone, gone_tx.clone());
        hub.subscribe(&ch, live, live_tx);
        gone_tx.close(CloseCode::ServerShutdown);
        drop(gone_rx);
        let mut buf = Vec::new();
        for n in 1..=4 {
            hub.fan_out(&ch, &publication(&ch, n));
            live_rx.recv(&mut buf).await.unwrap();
            assert_eq!(offsets(&buf), [n]);
            buf.clear();
        }
        assert_eq!(hub.subscribers(&ch), 1);
        assert_eq!(stats.slow_consumer_evictions.load(Relaxed), 0);
        // Its session leaving later is harmless.
        assert!(!hub.unsubscribe(&ch, gone));
    }

    #[tokio::test]
    async fn a_busy_subscriber_reads_everything_since_its_cursor_in_one_drain() {
        let hub = Hub::new(Arc::new(Stats::default()));
        let (a, b) = (
            ChannelName::parse("a").unwrap(),
            ChannelName::parse("b").unwrap(),
        );
        let conn = ConnId::random();
        let (tx, mut rx) = outbox(conn, OutboxLimits::default());
        hub.subscribe(&a, conn, tx.clone());
        hub.subscribe(&b, conn, tx);
        for n in 1..=3 {
            hub.fan_out(&a, &publication(&a, n));
        }
        hub.fan_out(&b, &publication(&b, 7));
        let mut buf = Vec::new();
        rx.recv(&mut buf).await.unwrap();
        let mut got = offsets(&buf);
        got.sort_unstable();
        assert_eq!(got, [1, 2, 3, 7]);
        // Caught up: the next publication is the only one read, and a left channel's mark is
        // ignored.
        buf.clear();
        hub.fan_out(&a, &publication(&a, 4));
        hub.fan_out(&b, &publication(&b, 8));
        assert!(!hub.unsubscribe(&a, ConnId::random()));
        assert!(hub.unsubscribe(&b, conn));
        rx.recv(&mut buf).await.unwrap();
        assert_eq!(offsets(&buf), [4]);
        // Idle channel: the ring is emptied once everyone has read it.
        hub.fan_out(&a, &publication(&a, 5));
        buf.clear();
        rx.recv(&mut buf).await.unwrap();
        assert_eq!(offsets(&buf), [5]);
    }
}
