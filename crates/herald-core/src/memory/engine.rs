//! `MemoryEngine`: the node is the ordering authority for every channel. Each channel keeps its
//! epoch, newest offset and a bounded ring of recent publications behind its own mutex; publish
//! assigns the offset under it.
//!
//! Without a journal, publish also keeps and fans out under that lock. With one (a data
//! directory), publish queues the publication to the writer thread under the lock, and the
//! writer keeps and fans it out once it is on disk (see `writer.rs`).

use super::channel::{ChannelState, Gone};
use super::journal::{Entry, Journal, Recovered};
use super::presence::MemoryPresenceStore;
use super::writer::{lock, Op, Slot, StateMap, Then, Writer};
use crate::{
    Broker, ChannelName, EngineError, EngineParts, EngineStatus, EventName, Hub, KeepLatest,
    LatestState, NodeParts, Once, Outgoing, PresenceEvent, Publication, Published, Retention,
    LATEST_STATE_BOUND,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
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
    /// Keep every channel's epoch, offsets, history and latest state in this directory, so a
    /// restart (or a crash) continues them; unset, the engine keeps them in memory only.
    pub data_dir: Option<PathBuf>,
    /// With `data_dir`: flush every group of publications to the disk (fsync) before anyone
    /// hears of it. `false` writes them to the operating system only: they survive Herald
    /// being killed, not the machine stopping, after which every channel starts under a new
    /// epoch (clients are told to reset) so no offset is given twice.
    pub fsync: bool,
    /// Most keys of the state store (what connectors keep: cursors, idempotency keys, tokens).
    pub max_state_keys: usize,
}

impl Default for MemoryEngineConfig {
    fn default() -> Self {
        Self {
            max_channels: 1_000_000,
            idle_channel_ttl: Duration::from_secs(3600),
            data_dir: None,
            fsync: true,
            max_state_keys: 100_000,
        }
    }
}

/// The in-process broker, history store and state store.
#[derive(Debug)]
pub struct MemoryEngine {
    shards: Box<[Mutex<HashMap<ChannelName, Slot>>]>,
    hasher: RandomState,
    pub(super) hub: Arc<Hub>,
    pub(super) config: MemoryEngineConfig,
    channels: AtomicUsize,
    /// Channels keeping latest state.
    latest_channels: AtomicUsize,
    /// The journal's writer, with a data directory.
    pub(super) writer: Option<Writer>,
    pub(super) state: Arc<StateMap>,
}

/// The engine refuses because its writer stopped.
pub(super) const STOPPED: EngineError = EngineError::Unavailable("the node is shutting down");

impl MemoryEngine {
    /// An engine delivering into `hub`, keeping everything in memory.
    pub fn new(hub: Arc<Hub>, config: MemoryEngineConfig) -> Self {
        Self::build(hub, config, None)
    }

    fn build(hub: Arc<Hub>, config: MemoryEngineConfig, writer: Option<Writer>) -> Self {
        Self {
            shards: (0..64).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            hub,
            config,
            channels: AtomicUsize::new(0),
            latest_channels: AtomicUsize::new(0),
            writer,
            state: Arc::default(),
        }
    }

    /// An engine delivering into `hub` that keeps everything in `journal` as well, starting
    /// from what the journal `recovered`. Its writer thread stops once `shutdown` is cancelled
    /// and what was queued is written; `closed` fires when it closed the journal.
    pub fn durable(
        hub: Arc<Hub>,
        config: MemoryEngineConfig,
        journal: Box<dyn Journal>,
        recovered: Recovered,
        shutdown: CancellationToken,
        closed: oneshot::Sender<()>,
    ) -> Self {
        let writer = Writer::start(journal, hub.clone(), &shutdown, closed);
        let engine = Self::build(hub, config, Some(writer));
        engine.recover(recovered);
        engine
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
        Self::parts(engine, node, shutdown, tracker)
    }

    /// [`Self::start`] with a journal (see [`Self::durable`]); the tracker waits for the
    /// journal to be closed.
    pub fn start_durable(
        config: MemoryEngineConfig,
        node: &NodeParts,
        journal: Box<dyn Journal>,
        recovered: Recovered,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> EngineParts {
        let (closed, closing) = oneshot::channel();
        let engine = Arc::new(Self::durable(
            node.hub.clone(),
            config,
            journal,
            recovered,
            shutdown.clone(),
            closed,
        ));
        tracker.spawn(async move {
            let _ = closing.await;
        });
        Self::parts(engine, node, shutdown, tracker)
    }

    fn parts(
        engine: Arc<Self>,
        node: &NodeParts,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> EngineParts {
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
            leases: Arc::new(super::MemoryLeases::default()),
        }
    }

    fn shard(&self, channel: &ChannelName) -> &Mutex<HashMap<ChannelName, Slot>> {
        let i = (self.hasher.hash_one(channel.as_str()) as usize) % self.shards.len();
        &self.shards[i]
    }

    pub(super) fn slot(&self, channel: &ChannelName) -> Result<Slot, EngineError> {
        let mut shard = lock(self.shard(channel));
        if let Some(slot) = shard.get(channel) {
            return Ok(slot.clone());
        }
        if self.channels.load(Relaxed) >= self.config.max_channels {
            return Err(EngineError::LimitReached("engine.max_channels"));
        }
        self.channels.fetch_add(1, Relaxed);
        let durable = self.writer.is_none();
        let slot = Arc::new(Mutex::new(ChannelState::new(
            crate::new_epoch(),
            0,
            durable,
        )));
        shard.insert(channel.clone(), slot.clone());
        Ok(slot)
    }

    /// Puts what the journal kept back in memory.
    fn recover(&self, recovered: Recovered) {
        let now = Instant::now();
        let now_ms = crate::now_ms();
        let at = |ms: u64| now + Duration::from_millis(ms.saturating_sub(now_ms));
        for rc in recovered.channels {
            let mut st = ChannelState::new(rc.epoch, rc.top, true);
            let mut gone = Gone::default();
            for (p, expires) in rc.history {
                st.ring.push_back((at(expires), p));
            }
            // As in memory: history leaves from its oldest end.
            st.trim_expired(now, &mut gone);
            // Replayed oldest first, the modes leave exactly what publishing left.
            for (p, mode, expires) in rc.latest {
                if expires.is_some_and(|e| e <= now_ms) {
                    gone.latest.push(p.position.offset);
                    continue;
                }
                let keep = KeepLatest { mode, ttl: None };
                st.keep_latest(keep, &p, expires.map(at), &mut gone);
            }
            if st.keeps_latest() {
                st.latest_counted = true;
                self.latest_channels.fetch_add(1, Relaxed);
            }
            self.channels.fetch_add(1, Relaxed);
            if let Some(w) = &self.writer {
                w.tidy(&rc.channel, gone);
            }
            lock(self.shard(&rc.channel)).insert(rc.channel, Arc::new(Mutex::new(st)));
        }
        let mut map = lock(&self.state);
        for (scope, key, value) in recovered.state {
            if value.expires_ms.is_none_or(|e| e > now_ms) {
                map.insert((scope, key), value);
            }
        }
    }

    /// Drops expired history, latest state and state-store values, and forgets idle
    /// channels. Call it periodically.
    pub fn sweep(&self) {
        let now = Instant::now();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            shard.retain(|channel, slot| {
                let mut st = lock(slot);
                let mut gone = Gone::default();
                st.trim_expired(now, &mut gone);
                self.release_latest(&mut st);
                // A channel keeping latest state keeps its epoch and offset with it.
                let keep = !st.ring.is_empty()
                    || st.keeps_latest()
                    || st.pending()
                    || now.duration_since(st.touched) < self.config.idle_channel_ttl
                    || self.hub.subscribers(channel) > 0;
                if let Some(w) = &self.writer {
                    w.tidy(channel, gone);
                    if !keep {
                        // Queued under the shard's lock: before anything of a channel of the
                        // same name created after it.
                        let _ = w.push(Op {
                            entry: Some(Entry::Forget {
                                channel: channel.clone(),
                            }),
                            then: Then::Nothing,
                        });
                    }
                }
                if !keep {
                    self.channels.fetch_sub(1, Relaxed);
                }
                keep
            });
        }
        let now_ms = crate::now_ms();
        let mut map = lock(&self.state);
        map.retain(|(scope, key), v| {
            let keep = v.expires_ms.is_none_or(|e| e > now_ms);
            if let (false, Some(w)) = (keep, &self.writer) {
                let _ = w.push(Op {
                    entry: Some(Entry::State {
                        scope: scope.clone(),
                        key: key.clone(),
                        value: None,
                    }),
                    then: Then::Nothing,
                });
            }
            keep
        });
    }

    /// Stops counting a channel whose latest state expired.
    fn release_latest(&self, st: &mut ChannelState) {
        if st.latest_counted && !st.keeps_latest() && !st.pending() {
            st.latest = None;
            st.latest_counted = false;
            self.latest_channels.fetch_sub(1, Relaxed);
        }
    }

    /// Before an offset is taken: trims what expired and counts the channel in the
    /// latest-state bound if it starts keeping latest state (a refusal leaves no trace).
    pub(super) fn prepare(
        &self,
        channel: &ChannelName,
        st: &mut ChannelState,
        retention: Retention,
        now: Instant,
    ) -> Result<(), EngineError> {
        let mut gone = Gone::default();
        st.trim_expired(now, &mut gone);
        if let Some(w) = &self.writer {
            w.tidy(channel, gone);
        }
        self.release_latest(st);
        if retention.latest.mode != LatestState::Off && !st.latest_counted {
            let counted = self.latest_channels.fetch_update(Relaxed, Relaxed, |n| {
                (n < retention.max_latest_channels).then_some(n + 1)
            });
            if counted.is_err() {
                return Err(EngineError::LimitReached(LATEST_STATE_BOUND));
            }
            st.latest_counted = true;
        }
        Ok(())
    }

    /// Waits until `channel`'s epoch is in the journal, so no position a read hands out can
    /// be lost by a crash.
    pub(super) async fn make_durable(
        &self,
        channel: &ChannelName,
        slot: &Slot,
    ) -> Result<(), EngineError> {
        let Some(w) = &self.writer else {
            return Ok(());
        };
        let rx = {
            let mut st = lock(slot);
            if st.durable {
                return Ok(());
            }
            let entry = (!st.durable_queued).then(|| Entry::Channel {
                channel: channel.clone(),
                epoch: st.epoch.clone(),
            });
            let (reply, rx) = oneshot::channel();
            let carries = entry.is_some();
            w.push(Op {
                entry,
                then: Then::Durable {
                    slot: slot.clone(),
                    carries,
                    reply,
                },
            })?;
            st.durable_queued |= carries;
            rx
        };
        rx.await.unwrap_or(Err(STOPPED))
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
        self.publish_with(channel, event, data, retention, None)
            .await?
            .into_new()
    }

    async fn publish_once(
        &self,
        channel: ChannelName,
        event: EventName,
        data: Box<RawValue>,
        retention: Retention,
        once: &Once,
    ) -> Result<Published, EngineError> {
        self.publish_with(channel, event, data, retention, Some(once))
            .await
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

    fn status(&self) -> EngineStatus {
        let mut status = EngineStatus::embedded();
        if let Some(w) = &self.writer {
            let c = &w.counters;
            for (name, n) in [
                ("store_commits", &c.commits),
                ("store_records", &c.entries),
                ("store_write_errors", &c.write_errors),
                ("store_refused_publications", &c.refused),
            ] {
                status.counters.insert(name, n.load(Relaxed));
            }
            status.publish_durations = c.commit_waits.snapshot();
        }
        status
    }
}
