//! The broker and history store over Redis, and the tasks that keep a node's view of Redis
//! whole: the pub/sub message loop, recovery after reconnects, and the readiness canary.

use crate::presence::RedisPresence;
use crate::scripts::{self, Lua};
use async_trait::async_trait;
use fred::clients::SubscriberClient;
use fred::error::Error as RedisError;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::prelude::{Builder, Client, Config as FredConfig, ReconnectPolicy, Value};
use fred::types::config::Options;
use herald_core::{
    Broker, ChannelName, EngineError, EngineHealth, EngineStatus, EventName, HistoryPage,
    HistoryQuery, HistoryStore, Hub, LinkState, Outgoing, PresenceEvent, PresenceKind, Publication,
    Publisher, RemoteSubscriber, RemoteSubscriptions, Retention,
};
use herald_protocol::{Epoch, Member, StreamPosition};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Settings of the Redis engine (`[engine]` with `kind = "redis"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisEngineConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Prefix of every key and pub/sub channel, so several Herald deployments can share one
    /// Redis.
    pub prefix: String,
    /// How long a presence member lives without its node refreshing it.
    #[serde(with = "humantime_serde")]
    pub presence_lease: Duration,
    /// How long a channel's epoch and offset are kept after its last publish or read; a
    /// channel forgotten this way restarts under a new epoch (clients get a reset).
    #[serde(with = "humantime_serde")]
    pub channel_state_ttl: Duration,
    /// Longest wait for one Redis command before it fails with 503.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Consume the worker stream (`PREFIX:ingest`) on this node.
    pub ingest: bool,
}

impl Default for RedisEngineConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            prefix: "herald".to_owned(),
            presence_lease: Duration::from_secs(30),
            channel_state_ttl: Duration::from_secs(24 * 3600),
            command_timeout: Duration::from_secs(2),
            ingest: true,
        }
    }
}

/// Most publications one recovery replays per channel; beyond it sessions find the gap and
/// read history themselves (or get a reset).
const RECOVER_LIMIT: usize = 10_000;
/// How often the canary goes round, and how long it may take.
const CANARY_EVERY: Duration = Duration::from_millis(500);
const CANARY_WAIT: Duration = Duration::from_secs(1);
/// Pub/sub messages buffered between fred's reader and the message loop; overflowing it
/// triggers a recovery from history, never a silent loss. (The message loop only decodes and
/// queues, so it falls this far behind only when the node is starved of CPU.)
const MESSAGE_BUFFER: usize = 2048;

/// Counters this engine reports in `/api/stats`.
pub(crate) const COUNTERS: &[&str] = &[
    "recoveries",
    "recovered_publications",
    "lagged_messages",
    "bad_messages",
    "ingested",
    "ingest_rejected",
    "ingest_duplicates",
];

/// The Redis broker and history store.
#[derive(Debug)]
pub struct RedisEngine {
    pub(crate) config: RedisEngineConfig,
    pub(crate) client: Client,
    subscriber: SubscriberClient,
    pub(crate) hub: Arc<Hub>,
    remote: RemoteSubscriptions,
    /// The newest position this node saw on each channel it subscribes to.
    last_seen: Mutex<HashMap<ChannelName, StreamPosition>>,
    pub(crate) health: EngineHealth,
    presence: Arc<RedisPresence>,
    publish_script: Lua,
    read_script: Lua,
    canary_channel: String,
    canary_seen: AtomicU64,
    canary_arrived: Notify,
    /// Wakes the recovery task; holds at most one pending request, so any number of lags or
    /// reconnects while a recovery runs cause exactly one more pass.
    recover_wanted: Notify,
    sharded: bool,
}

fn unavailable(e: &RedisError) -> EngineError {
    tracing::debug!(error = %e, "Redis command failed.");
    EngineError::Unavailable("redis engine unreachable")
}

impl RedisEngine {
    /// Connects to Redis and checks the round trip once. Fails when Redis cannot be reached.
    pub async fn connect(config: RedisEngineConfig, hub: Arc<Hub>) -> anyhow::Result<Arc<Self>> {
        let fred_config = FredConfig::from_url(&config.url)
            .map_err(|e| anyhow::anyhow!("engine.url is not a Redis URL: {e}"))?;
        // Hosts only: the URL may carry a password.
        let hosts = fred_config
            .server
            .hosts()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let sharded = fred_config.server.is_clustered();
        let mut builder = Builder::from_config(fred_config);
        builder
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .with_connection_config(|c| {
                c.connection_timeout = config.command_timeout;
                c.internal_command_timeout = config.command_timeout;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = config.command_timeout;
            });
        let client = builder.build()?;
        // fred gives each client eight broadcast channels of this capacity, allocated up
        // front; only the subscriber needs a deep one.
        builder.with_performance_config(|p| p.broadcast_channel_capacity = MESSAGE_BUFFER);
        let subscriber = builder.build_subscriber_client()?;
        let started = tokio::time::timeout(config.command_timeout * 3, async {
            client.init().await?;
            subscriber.init().await?;
            Ok::<_, RedisError>(())
        })
        .await;
        match started {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!("cannot reach Redis at {hosts}: {e}"),
            Err(_) => anyhow::bail!("cannot reach Redis at {hosts}: timed out"),
        }
        let canary_channel = format!("{}:canary:{:016x}", config.prefix, fastrand::u64(..));
        let presence = Arc::new(RedisPresence::new(client.clone(), &config));
        let engine = Arc::new(Self {
            client,
            subscriber,
            hub,
            remote: RemoteSubscriptions::default(),
            last_seen: Mutex::new(HashMap::new()),
            health: EngineHealth::new("redis", COUNTERS),
            presence,
            publish_script: Lua::new(scripts::PUBLISH),
            read_script: Lua::new(scripts::READ),
            canary_channel,
            canary_seen: AtomicU64::new(0),
            canary_arrived: Notify::new(),
            recover_wanted: Notify::new(),
            sharded,
            config,
        });
        engine
            .subscriber
            .subscribe(engine.canary_channel.as_str())
            .await?;
        engine.health.set_state(LinkState::Connected);
        Ok(engine)
    }

    /// The presence store that shares this engine's connection.
    pub fn presence(&self) -> Arc<RedisPresence> {
        self.presence.clone()
    }

    /// Spawns the message loop, the reconnect watcher, the canary, the presence refresher and
    /// (when configured) the worker stream consumer. Returns once the first canary made the
    /// round trip or failed.
    pub async fn start(
        self: &Arc<Self>,
        publisher: Arc<Publisher>,
        token: CancellationToken,
        tracker: &TaskTracker,
    ) {
        let me = self.clone();
        let t = token.clone();
        tracker.spawn(async move { me.message_loop(t).await });
        let me = self.clone();
        let t = token.clone();
        tracker.spawn(async move { me.reconnect_loop(t).await });
        let me = self.clone();
        let t = token.clone();
        tracker.spawn(async move { me.recovery_loop(t).await });
        let me = self.clone();
        let t = token.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(me.presence.refresh_every());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = t.cancelled() => return,
                    _ = tick.tick() => {}
                }
                // Members of a node that died: every node's subscribers are told they left.
                for (channel, member) in me.presence.refresh().await {
                    let event = PresenceEvent::new(channel, PresenceKind::Leave, member);
                    if let Err(e) = me.publish_presence(event).await {
                        tracing::debug!(error = %e, "Announcing an expired presence member failed.");
                    }
                }
            }
        });
        if self.config.ingest {
            let me = self.clone();
            let t = token.clone();
            tracker.spawn(async move { crate::ingest::run(me, publisher, t).await });
        }
        self.canary().await;
        let me = self.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(CANARY_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    _ = tick.tick() => me.canary().await,
                }
            }
            let _ = me.subscriber.quit().await;
            let _ = me.client.quit().await;
        });
    }

    fn key(&self, channel: &ChannelName, suffix: &str) -> String {
        format!("{}:{{{}}}:{suffix}", self.config.prefix, channel.as_str())
    }

    fn pubsub_channel(&self, channel: &ChannelName) -> String {
        self.key(channel, "p")
    }

    fn channel_of(&self, pubsub: &str) -> Option<ChannelName> {
        let rest = pubsub.strip_prefix(self.config.prefix.as_str())?;
        let name = rest.strip_prefix(":{")?.strip_suffix("}:p")?;
        ChannelName::parse(name).ok()
    }

    fn fast(&self) -> Options {
        Options {
            fail_fast: true,
            timeout: Some(self.config.command_timeout),
            max_attempts: Some(2),
            ..Options::default()
        }
    }

    fn ms(d: Duration) -> String {
        d.as_millis().max(1).to_string()
    }

    async fn eval(
        &self,
        script: &Lua,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, RedisError> {
        script.run(&self.client, &self.fast(), keys, args).await
    }

    /// Publishes; for a worker's stream entry (`dedupe` = its id and how long ids are
    /// remembered) records the id in the same step. Returns `None` when that entry was
    /// already published (by another node, or before a crash).
    pub(crate) async fn publish_deduped(
        &self,
        channel: &ChannelName,
        event: &EventName,
        data: &RawValue,
        retention: Retention,
        dedupe: Option<(&str, Duration)>,
    ) -> Result<Option<Arc<Publication>>, EngineError> {
        if !self.health.canary_ok() {
            return Err(EngineError::Unavailable("redis engine not ready"));
        }
        let mut keys = vec![self.key(channel, "m"), self.key(channel, "h")];
        let mut args = vec![
            herald_core::new_epoch().as_str().to_owned(),
            Self::ms(self.config.channel_state_ttl.max(retention.ttl)),
            retention.size.to_string(),
            Self::ms(retention.ttl),
            event.as_str().to_owned(),
            data.get().to_owned(),
            self.pubsub_channel(channel),
            if self.sharded { "SPUBLISH" } else { "PUBLISH" }.to_owned(),
        ];
        if let Some((id, window)) = dedupe {
            keys.push(self.key(channel, "i"));
            args.push(id.to_owned());
            args.push(Self::ms(window));
        }
        let started = Instant::now();
        let reply = self
            .eval(&self.publish_script, keys, args)
            .await
            .map_err(|e| unavailable(&e))?;
        self.health.publish_took(started.elapsed());
        let mut parts = reply.into_array().into_iter();
        let Some(epoch) = parts.next() else {
            return Ok(None);
        };
        let (Some(epoch), Some(offset), Some(time)) = (
            epoch.as_str().and_then(|e| Epoch::parse(&e).ok()),
            parts.next().and_then(|v| v.as_u64()),
            parts.next().and_then(|v| v.as_u64()),
        ) else {
            return Err(EngineError::Unavailable(
                "redis engine gave a malformed reply",
            ));
        };
        // Already valid JSON: copied, not parsed again.
        let data: Box<RawValue> = data.to_owned();
        Ok(Some(Arc::new(Publication::new(
            channel.clone(),
            event.clone(),
            data,
            StreamPosition::new(epoch, offset),
            time,
        ))))
    }

    /// One canary round trip through pub/sub; sets readiness from the result.
    async fn canary(&self) {
        let nonce = self.canary_seen.load(Relaxed).wrapping_add(1);
        let arrived = self.canary_arrived.notified();
        let client = self.client.with_options(&self.fast());
        let sent: Result<i64, _> = client
            .publish(self.canary_channel.as_str(), nonce.to_string())
            .await;
        let ok = match sent {
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
        self.health.set_state(
            if self.client.is_connected() && self.subscriber.is_connected() {
                LinkState::Connected
            } else {
                LinkState::Disconnected
            },
        );
        self.health.set_ready(ok);
    }

    async fn message_loop(self: Arc<Self>, token: CancellationToken) {
        let mut rx = self.subscriber.message_rx();
        loop {
            let message = tokio::select! {
                () = token.cancelled() => return,
                m = rx.recv() => m,
            };
            match message {
                Ok(m) => self.on_message(&m.channel, &m.value),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    self.health.count("lagged_messages", n);
                    tracing::warn!(
                        missed = n,
                        "Redis pub/sub receiver lagged; recovering from history."
                    );
                    self.recover_wanted.notify_one();
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    fn on_message(&self, channel: &str, value: &Value) {
        if channel == self.canary_channel {
            if let Some(n) = value.as_u64() {
                self.canary_seen.fetch_max(n, Relaxed);
                self.canary_arrived.notify_waiters();
            }
            return;
        }
        let decoded = self
            .channel_of(channel)
            .and_then(|c| value.as_bytes().and_then(|b| decode(c, b)));
        match decoded {
            Some(Outgoing::Publication(p)) => {
                self.saw(&p.channel, &p.position);
                self.hub
                    .fan_out(&p.channel.clone(), &Outgoing::Publication(p));
            }
            Some(other @ Outgoing::Presence(_)) => {
                if let Outgoing::Presence(e) = &other {
                    self.hub.fan_out(&e.channel.clone(), &other);
                }
            }
            None => {
                self.health.count("bad_messages", 1);
                tracing::warn!(
                    channel,
                    "Ignored a malformed message on a Herald pub/sub channel."
                );
            }
        }
    }

    /// Records `position` as the newest seen on `channel` (only for subscribed channels).
    fn saw(&self, channel: &ChannelName, position: &StreamPosition) {
        let mut seen = self
            .last_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(last) = seen.get_mut(channel) {
            if last.epoch != position.epoch || last.offset < position.offset {
                *last = position.clone();
            }
        }
    }

    async fn reconnect_loop(self: Arc<Self>, token: CancellationToken) {
        use tokio::sync::broadcast::error::RecvError;
        let mut sub_rx = self.subscriber.reconnect_rx();
        let mut client_rx = self.client.reconnect_rx();
        loop {
            let subscriber = tokio::select! {
                () = token.cancelled() => return,
                r = sub_rx.recv() => match r {
                    Ok(_) | Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => return,
                },
                r = client_rx.recv() => match r {
                    Ok(_) | Err(RecvError::Lagged(_)) => false,
                    Err(RecvError::Closed) => return,
                },
            };
            self.health.reconnected();
            if !subscriber {
                continue;
            }
            tracing::info!("Reconnected to Redis; re-subscribing and recovering.");
            if let Err(e) = self.resubscribe().await {
                tracing::warn!(error = %e, "Re-subscribing after a reconnect failed; forcing another reconnect.");
                let _ = self.subscriber.force_reconnection().await;
                continue;
            }
            self.recover_wanted.notify_one();
        }
    }

    /// Subscribes again to every channel the subscriber client tracks. (fred's own
    /// `resubscribe_all` also sends a `PSUBSCRIBE` with no patterns, which a Redis Cluster node
    /// refuses, failing every re-subscription after a failover.)
    async fn resubscribe(&self) -> Result<(), RedisError> {
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
        Ok(())
    }

    /// Runs a recovery whenever one is wanted (a lagging receiver, a reconnect), retrying until
    /// every channel was read: a channel skipped would stay silent until its next publication.
    async fn recovery_loop(self: Arc<Self>, token: CancellationToken) {
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                () = self.recover_wanted.notified() => {}
            }
            while !self.recover().await {
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(CANARY_EVERY) => {}
                }
            }
        }
    }

    /// Re-reads history from the last offset seen on every subscribed channel and fans out
    /// what this node missed. Returns false when some channel could not be read.
    async fn recover(&self) -> bool {
        let mut complete = true;
        self.health.count("recoveries", 1);
        let channels: Vec<(ChannelName, StreamPosition)> = self
            .last_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(c, p)| (c.clone(), p.clone()))
            .collect();
        for (channel, since) in channels {
            let page = self
                .read(
                    &channel,
                    HistoryQuery {
                        since: Some(since),
                        limit: RECOVER_LIMIT,
                    },
                )
                .await;
            let publications = match page {
                Ok(page) if page.reset.is_none() => page.publications,
                // The gap cannot be filled here: hand subscribers the newest publication, so
                // each session finds the gap itself and sends its clients a reset.
                Ok(_) => match self
                    .read(
                        &channel,
                        HistoryQuery {
                            since: None,
                            limit: 1,
                        },
                    )
                    .await
                {
                    Ok(page) => page.publications,
                    Err(_) => Vec::new(),
                },
                Err(e) => {
                    tracing::debug!(channel = %channel, error = %e, "Recovery read failed; retrying.");
                    complete = false;
                    Vec::new()
                }
            };
            self.health
                .count("recovered_publications", publications.len() as u64);
            for p in publications {
                self.saw(&p.channel, &p.position);
                self.hub.fan_out(&channel, &Outgoing::Publication(p));
            }
        }
        complete
    }
}

/// Decodes a message from a channel's pub/sub channel: `P epoch offset time event\ndata` for
/// a publication, `J member` or `L member` for presence.
fn decode(channel: ChannelName, bytes: &[u8]) -> Option<Outgoing> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (kind, rest) = text.split_at_checked(2)?;
    match kind {
        "P " => {
            let (head, data) = rest.split_once('\n')?;
            let mut f = head.split(' ');
            let epoch = Epoch::parse(f.next()?).ok()?;
            let offset = f.next()?.parse().ok()?;
            let time = f.next()?.parse().ok()?;
            let event = EventName::parse(f.next()?).ok()?;
            let data = RawValue::from_string(data.to_owned()).ok()?;
            Some(Outgoing::Publication(Arc::new(Publication::new(
                channel,
                event,
                data,
                StreamPosition::new(epoch, offset),
                time,
            ))))
        }
        "J " | "L " => {
            let member: Member = serde_json::from_str(rest).ok()?;
            let kind = if kind == "J " {
                PresenceKind::Join
            } else {
                PresenceKind::Leave
            };
            Some(Outgoing::Presence(Arc::new(PresenceEvent::new(
                channel, kind, member,
            ))))
        }
        _ => None,
    }
}

#[async_trait]
impl RemoteSubscriber for RedisEngine {
    async fn remote_subscribe(&self, channel: &ChannelName) -> Result<(), EngineError> {
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
        done.map_err(|e| unavailable(&e))?;
        // Publications from here on arrive over pub/sub; the current top is where this node
        // starts counting for recovery.
        let top = self
            .read(
                channel,
                HistoryQuery {
                    since: None,
                    limit: 0,
                },
            )
            .await?
            .top;
        self.last_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(channel.clone(), top);
        Ok(())
    }

    async fn remote_unsubscribe(&self, channel: &ChannelName) -> Result<(), EngineError> {
        self.last_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(channel);
        let name = self.pubsub_channel(channel);
        let done = if self.sharded {
            self.subscriber.sunsubscribe(name.as_str()).await
        } else {
            self.subscriber.unsubscribe(name.as_str()).await
        };
        done.map_err(|e| unavailable(&e))
    }
}

#[async_trait]
impl Broker for RedisEngine {
    async fn publish(
        &self,
        channel: ChannelName,
        event: EventName,
        data: Box<RawValue>,
        retention: Retention,
    ) -> Result<Arc<Publication>, EngineError> {
        self.publish_deduped(&channel, &event, &data, retention, None)
            .await?
            .ok_or(EngineError::Unavailable("redis engine gave an empty reply"))
    }

    async fn publish_presence(&self, event: PresenceEvent) -> Result<(), EngineError> {
        let tag = match event.kind {
            PresenceKind::Join => "J ",
            PresenceKind::Leave => "L ",
        };
        let member = serde_json::to_string(&event.member)
            .map_err(|_| EngineError::Unavailable("presence member is not serializable"))?;
        let name = self.pubsub_channel(&event.channel);
        let client = self.client.with_options(&self.fast());
        let message = format!("{tag}{member}");
        let sent: Result<i64, _> = if self.sharded {
            client.spublish(name.as_str(), message).await
        } else {
            client.publish(name.as_str(), message).await
        };
        sent.map(|_| ()).map_err(|e| unavailable(&e))
    }

    async fn subscribe(&self, channel: &ChannelName) -> Result<(), EngineError> {
        self.remote.sync(&self.hub, channel, self).await
    }

    async fn unsubscribe(&self, channel: &ChannelName) -> Result<(), EngineError> {
        self.remote.sync(&self.hub, channel, self).await
    }

    fn status(&self) -> EngineStatus {
        self.health.status()
    }
}

#[async_trait]
impl HistoryStore for RedisEngine {
    async fn read(
        &self,
        channel: &ChannelName,
        query: HistoryQuery,
    ) -> Result<HistoryPage, EngineError> {
        let since = query
            .since
            .as_ref()
            .map_or(String::new(), |s| s.offset.to_string());
        let reply = self
            .eval(
                &self.read_script,
                vec![self.key(channel, "m"), self.key(channel, "h")],
                vec![
                    herald_core::new_epoch().as_str().to_owned(),
                    Self::ms(self.config.channel_state_ttl),
                    since,
                    query.limit.to_string(),
                ],
            )
            .await
            .map_err(|e| unavailable(&e))?;
        let malformed = EngineError::Unavailable("redis engine gave a malformed history reply");
        let mut parts = reply.into_array().into_iter();
        let (Some(epoch), Some(top), Some(oldest), Some(entries)) = (
            parts
                .next()
                .and_then(|v| v.as_str().and_then(|e| Epoch::parse(&e).ok())),
            parts.next().and_then(|v| v.as_u64()),
            parts.next().and_then(|v| v.as_u64()),
            parts.next(),
        ) else {
            return Err(malformed);
        };
        let top_position = StreamPosition::new(epoch.clone(), top);
        if let Some(since) = &query.since {
            if let Some(reason) = herald_core::resume_reset(since, &epoch, top, oldest) {
                return Ok(HistoryPage {
                    publications: Vec::new(),
                    top: top_position,
                    reset: Some(reason),
                });
            }
        }
        let mut publications = Vec::new();
        for entry in entries.into_array() {
            let p = decode_entry(channel, &epoch, entry).ok_or(EngineError::Unavailable(
                "redis engine gave a malformed history entry",
            ))?;
            publications.push(p);
        }
        Ok(HistoryPage {
            publications,
            top: top_position,
            reset: None,
        })
    }
}

/// Decodes one XRANGE entry: `[id, [e, event, d, data, c, time, x, expiry]]`.
fn decode_entry(channel: &ChannelName, epoch: &Epoch, entry: Value) -> Option<Arc<Publication>> {
    let mut entry = entry.into_array().into_iter();
    let id = entry.next()?.as_str()?.into_owned();
    let offset: u64 = id.split('-').next()?.parse().ok()?;
    let fields: Vec<Value> = entry.next()?.into_array();
    let field = |i: usize| fields.get(i).and_then(Value::as_str);
    let event = EventName::parse(&field(1)?).ok()?;
    let data = RawValue::from_string(field(3)?.into_owned()).ok()?;
    let time = field(5)?.parse().ok()?;
    Some(Arc::new(Publication::new(
        channel.clone(),
        event,
        data,
        StreamPosition::new(epoch.clone(), offset),
        time,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_the_publish_script_sends() {
        let c = ChannelName::parse("news").unwrap();
        let Some(Outgoing::Publication(p)) = decode(c.clone(), b"P abc 7 1700 update\n{\"a\":\n1}")
        else {
            panic!("not a publication");
        };
        assert_eq!(p.position.offset, 7);
        assert_eq!(p.position.epoch.as_str(), "abc");
        assert_eq!(p.event.as_str(), "update");
        assert_eq!(p.data.get(), "{\"a\":\n1}");
        assert!(decode(c.clone(), b"P abc x 1 e\n{}").is_none());
        assert!(decode(c.clone(), b"P abc 1 1 e\nnot json").is_none());
        assert!(decode(c.clone(), b"X").is_none());
        let member = br#"J {"conn_id":"00000000000000aa","transport":"ws"}"#;
        assert!(matches!(decode(c, member), Some(Outgoing::Presence(_))));
    }
}
