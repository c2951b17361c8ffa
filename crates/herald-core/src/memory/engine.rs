//! `MemoryEngine`: the node is the ordering authority for every channel. Each channel keeps its
//! epoch, newest offset and a bounded ring of recent publications behind its own mutex; publish
//! assigns the offset, appends and fans out to the local hub while holding it.

use super::presence::MemoryPresenceStore;
use crate::{
    Broker, ChannelName, EngineError, EngineParts, EventName, HistoryPage, HistoryQuery,
    HistoryStore, Hub, KeepLatest, LatestState, NodeParts, Outgoing, PresenceEvent, Publication,
    Retention, LATEST_STATE_BOUND, MAX_LATEST_EVENTS,
};
use async_trait::async_trait;
use herald_protocol::{Epoch, StreamPosition};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the engine drops expired history and idle channels.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Bounds of the embedded engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryEngineConfig {
    /// Most channels with state (epoch, offset, history) kept at once; publishing to a new
    /// channel beyond it fails with 503.
    pub max_channels: usize,
    /// How long a channel with no history left, no subscribers and no publications keeps its
    /// epoch and offset before it is forgotten (it then restarts under a new epoch).
    #[serde(with = "humantime_serde")]
    pub idle_channel_ttl: Duration,
}

impl Default for MemoryEngineConfig {
    fn default() -> Self {
        Self {
            max_channels: 1_000_000,
            idle_channel_ttl: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug)]
struct ChannelState {
    epoch: Epoch,
    top: u64,
    ring: VecDeque<(Instant, Arc<Publication>)>,
    touched: Instant,
    /// Latest state. Boxed: most channels keep none.
    latest: Option<Box<Latest>>,
}

/// A channel's latest state, oldest first, each with its expiry (`None`: until replaced).
#[derive(Debug, Default)]
struct Latest(Vec<(Option<Instant>, Arc<Publication>)>);

impl ChannelState {
    fn trim_expired(&mut self, now: Instant) {
        while self.ring.front().is_some_and(|(exp, _)| *exp <= now) {
            self.ring.pop_front();
        }
        if let Some(latest) = &mut self.latest {
            latest.0.retain(|(exp, _)| exp.is_none_or(|e| e > now));
        }
    }

    /// Whether the channel keeps latest state (after [`Self::trim_expired`]).
    fn keeps_latest(&self) -> bool {
        self.latest.as_ref().is_some_and(|l| !l.0.is_empty())
    }

    /// Records `p` as latest state per `keep`.
    fn keep_latest(&mut self, keep: KeepLatest, p: &Arc<Publication>, now: Instant) {
        let latest = &mut self.latest.get_or_insert_with(Box::default).0;
        if keep.mode == LatestState::Last {
            latest.clear();
        }
        latest.retain(|(_, q)| q.event != p.event);
        if latest.len() >= MAX_LATEST_EVENTS {
            // Oldest first: the name published longest ago gives way.
            latest.remove(0);
        }
        latest.push((keep.ttl.map(|t| now + t), p.clone()));
    }

    fn position(&self) -> StreamPosition {
        StreamPosition::new(self.epoch.clone(), self.top)
    }
}

type Slot = Arc<Mutex<ChannelState>>;

/// The in-process broker and history store.
#[derive(Debug)]
pub struct MemoryEngine {
    shards: Box<[Mutex<HashMap<ChannelName, Slot>>]>,
    hasher: RandomState,
    hub: Arc<Hub>,
    config: MemoryEngineConfig,
    channels: AtomicUsize,
    /// Channels keeping latest state.
    latest_channels: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryEngine {
    /// An engine delivering into `hub`.
    pub fn new(hub: Arc<Hub>, config: MemoryEngineConfig) -> Self {
        Self {
            shards: (0..64).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            hub,
            config,
            channels: AtomicUsize::new(0),
            latest_channels: AtomicUsize::new(0),
        }
    }

    /// Builds the engine on `node`'s hub, with presence in memory, and spawns its sweeper on
    /// `tracker` until `shutdown` is cancelled. The same shape as the remote engines' `start`.
    pub fn start(
        config: MemoryEngineConfig,
        node: &NodeParts,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> EngineParts {
        let engine = Arc::new(Self::new(node.hub.clone(), config));
        let sweeper = engine.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => sweeper.sweep(),
                }
            }
        });
        EngineParts {
            broker: engine.clone(),
            history: engine.clone(),
            presence: Arc::new(MemoryPresenceStore::default()),
            publisher: node.publisher(engine),
        }
    }

    fn slot(&self, channel: &ChannelName) -> Result<Slot, EngineError> {
        let i = (self.hasher.hash_one(channel.as_str()) as usize) % self.shards.len();
        let mut shard = lock(&self.shards[i]);
        if let Some(slot) = shard.get(channel) {
            return Ok(slot.clone());
        }
        if self.channels.load(Relaxed) >= self.config.max_channels {
            return Err(EngineError::LimitReached("engine.max_channels"));
        }
        self.channels.fetch_add(1, Relaxed);
        let slot = Arc::new(Mutex::new(ChannelState {
            epoch: crate::new_epoch(),
            top: 0,
            ring: VecDeque::new(),
            touched: Instant::now(),
            latest: None,
        }));
        shard.insert(channel.clone(), slot.clone());
        Ok(slot)
    }

    /// Drops expired history and forgets idle channels. Call it periodically.
    pub fn sweep(&self) {
        let now = Instant::now();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            shard.retain(|channel, slot| {
                let mut st = lock(slot);
                let had_latest = st.keeps_latest();
                st.trim_expired(now);
                if had_latest && !st.keeps_latest() {
                    st.latest = None;
                    self.latest_channels.fetch_sub(1, Relaxed);
                }
                // A channel keeping latest state keeps its epoch and offset with it.
                let keep = !st.ring.is_empty()
                    || st.keeps_latest()
                    || now.duration_since(st.touched) < self.config.idle_channel_ttl
                    || self.hub.subscribers(channel) > 0;
                if !keep {
                    self.channels.fetch_sub(1, Relaxed);
                }
                keep
            });
        }
    }

    /// Channels with state.
    pub fn channel_count(&self) -> usize {
        self.channels.load(Relaxed)
    }

    /// Channels keeping latest state.
    pub fn latest_channel_count(&self) -> usize {
        self.latest_channels.load(Relaxed)
    }
}

#[async_trait]
impl Broker for MemoryEngine {
    async fn publish(
        &self,
        channel: ChannelName,
        event: EventName,
        data: Box<RawValue>,
        retention: Retention,
    ) -> Result<Arc<Publication>, EngineError> {
        let slot = self.slot(&channel)?;
        let mut st = lock(&slot);
        let now = Instant::now();
        let had_latest = st.keeps_latest();
        st.trim_expired(now);
        let keeps_latest = retention.latest.mode != LatestState::Off;
        if had_latest && !st.keeps_latest() {
            // Expired since the last sweep: counted again below if it is kept anew.
            self.latest_channels.fetch_sub(1, Relaxed);
        }
        if keeps_latest && !st.keeps_latest() {
            // Checked before the offset is taken, so a refusal leaves no trace.
            let counted = self.latest_channels.fetch_update(Relaxed, Relaxed, |n| {
                (n < retention.max_latest_channels).then_some(n + 1)
            });
            if counted.is_err() {
                return Err(EngineError::LimitReached(LATEST_STATE_BOUND));
            }
        }
        st.top += 1;
        st.touched = now;
        let publication = Arc::new(Publication::new(
            channel,
            event,
            data,
            st.position(),
            crate::now_ms(),
        ));
        if retention.size > 0 {
            st.ring
                .push_back((now + retention.ttl, publication.clone()));
            while st.ring.len() > retention.size {
                st.ring.pop_front();
            }
        }
        if keeps_latest {
            st.keep_latest(retention.latest, &publication, now);
        }
        // Fan-out happens under the channel's lock so delivery order equals offset order.
        self.hub.fan_out(
            &publication.channel,
            &Outgoing::Publication(publication.clone()),
        );
        drop(st);
        Ok(publication)
    }

    async fn publish_presence(&self, event: PresenceEvent) -> Result<(), EngineError> {
        let channel = event.channel.clone();
        self.hub
            .fan_out(&channel, &Outgoing::Presence(Arc::new(event)));
        Ok(())
    }

    async fn subscribe(&self, _channel: &ChannelName) -> Result<(), EngineError> {
        Ok(())
    }

    async fn unsubscribe(&self, _channel: &ChannelName) -> Result<(), EngineError> {
        Ok(())
    }
}

#[async_trait]
impl HistoryStore for MemoryEngine {
    async fn read(
        &self,
        channel: &ChannelName,
        query: HistoryQuery,
    ) -> Result<HistoryPage, EngineError> {
        let slot = self.slot(channel)?;
        let mut st = lock(&slot);
        st.trim_expired(Instant::now());
        let top = st.position();
        let Some(since) = query.since else {
            let skip = st.ring.len().saturating_sub(query.limit);
            let publications = st.ring.iter().skip(skip).map(|(_, p)| p.clone()).collect();
            return Ok(HistoryPage {
                publications,
                top,
                reset: None,
            });
        };
        let oldest = st
            .ring
            .front()
            .map_or(st.top + 1, |(_, p)| p.position.offset);
        let reset = crate::resume_reset(&since, &st.epoch, st.top, oldest);
        let publications = if reset.is_some() {
            Vec::new()
        } else {
            st.ring
                .iter()
                .filter(|(_, p)| p.position.offset > since.offset)
                .take(query.limit)
                .map(|(_, p)| p.clone())
                .collect()
        };
        Ok(HistoryPage {
            publications,
            top,
            reset,
        })
    }

    async fn latest(&self, channel: &ChannelName) -> Result<HistoryPage, EngineError> {
        let slot = self.slot(channel)?;
        let mut st = lock(&slot);
        st.trim_expired(Instant::now());
        let publications = st
            .latest
            .as_ref()
            .map_or_else(Vec::new, |l| l.0.iter().map(|(_, p)| p.clone()).collect());
        Ok(HistoryPage {
            publications,
            top: st.position(),
            reset: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ResetReason;
    use crate::Stats;

    fn engine() -> MemoryEngine {
        MemoryEngine::new(
            Arc::new(Hub::new(Arc::new(Stats::default()))),
            MemoryEngineConfig::default(),
        )
    }

    fn data() -> Box<RawValue> {
        RawValue::from_string("{}".into()).unwrap()
    }

    const KEEP3: Retention = Retention::history(3, Duration::from_secs(60));

    #[tokio::test(start_paused = true)]
    async fn offsets_history_and_resets() {
        let e = engine();
        let c = ChannelName::parse("c").unwrap();
        let mut last = None;
        for _ in 0..5 {
            last = Some(
                e.publish(c.clone(), EventName::message(), data(), KEEP3)
                    .await
                    .unwrap(),
            );
        }
        let last = last.unwrap();
        assert_eq!(last.position.offset, 5);
        let epoch = last.position.epoch.clone();
        let since = |o| HistoryQuery {
            since: Some(StreamPosition::new(epoch.clone(), o)),
            limit: 100,
        };
        let page = e.read(&c, since(2)).await.unwrap();
        assert_eq!(page.reset, None);
        let offs: Vec<u64> = page
            .publications
            .iter()
            .map(|p| p.position.offset)
            .collect();
        assert_eq!(offs, vec![3, 4, 5]);
        assert_eq!(
            e.read(&c, since(1)).await.unwrap().reset,
            Some(ResetReason::BeyondRetention)
        );
        assert_eq!(
            e.read(&c, since(9)).await.unwrap().reset,
            Some(ResetReason::EpochChanged)
        );
        let other = HistoryQuery {
            since: Some(StreamPosition::new(Epoch::parse("zz").unwrap(), 5)),
            limit: 10,
        };
        assert_eq!(
            e.read(&c, other).await.unwrap().reset,
            Some(ResetReason::EpochChanged)
        );
        let newest = e
            .read(
                &c,
                HistoryQuery {
                    since: None,
                    limit: 1,
                },
            )
            .await
            .unwrap();
        assert_eq!(newest.publications[0].position.offset, 5);
        assert_eq!(newest.top.offset, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn history_expires_and_idle_channels_are_forgotten() {
        let e = engine();
        let c = ChannelName::parse("c").unwrap();
        let p = e
            .publish(c.clone(), EventName::message(), data(), KEEP3)
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        let page = e
            .read(
                &c,
                HistoryQuery {
                    since: Some(StreamPosition::new(p.position.epoch.clone(), 0)),
                    limit: 10,
                },
            )
            .await
            .unwrap();
        assert_eq!(page.reset, Some(ResetReason::BeyondRetention));
        e.sweep();
        assert_eq!(e.channel_count(), 1);
        tokio::time::advance(Duration::from_secs(3600)).await;
        e.sweep();
        assert_eq!(e.channel_count(), 0);
        let p2 = e
            .publish(c.clone(), EventName::message(), data(), KEEP3)
            .await
            .unwrap();
        assert_ne!(p2.position.epoch, p.position.epoch);
        assert_eq!(p2.position.offset, 1);
    }

    #[tokio::test]
    async fn channel_bound_is_enforced() {
        let e = MemoryEngine::new(
            Arc::new(Hub::new(Arc::new(Stats::default()))),
            MemoryEngineConfig {
                max_channels: 1,
                ..MemoryEngineConfig::default()
            },
        );
        let a = ChannelName::parse("a").unwrap();
        let b = ChannelName::parse("b").unwrap();
        e.publish(a, EventName::message(), data(), KEEP3)
            .await
            .unwrap();
        assert!(matches!(
            e.publish(b, EventName::message(), data(), KEEP3).await,
            Err(EngineError::LimitReached(_))
        ));
    }
}
