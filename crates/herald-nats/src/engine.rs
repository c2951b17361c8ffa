//! `NatsEngine`: the broker and history store over JetStream and core NATS (see the crate docs
//! for the layout and the ordering argument).

use crate::codec::{self, hex, Stored, KIND, PREV};
use crate::presence::NatsPresence;
use crate::util::{call, scan, unavailable, within};
use crate::NatsEngineConfig;
use anyhow::{bail, Context as _};
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv::{self, CreateErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, DirectGetErrorKind, DiscardPolicy, StorageType, Stream};
use async_nats::{jetstream, Client, ConnectOptions, Event, HeaderMap, Subscriber};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use herald_core::{
    now_ms, resume_reset, Broker, ChannelName, ChannelsConfig, EngineError, EngineHealth,
    EngineStatus, EventName, HistoryPage, HistoryQuery, HistoryStore, Hub, LinkState,
    NamespaceOptions, Outgoing, PresenceEvent, PresenceKind, Publication, Publisher,
    RemoteSubscriber, RemoteSubscriptions, Retention,
};
use herald_protocol::{Epoch, Member, StreamPosition};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Appends tried per publish before giving up under contention.
const MAX_ATTEMPTS: usize = 50;
/// Reads spanning at most this many messages walk back from the last one by direct gets;
/// longer ones use an ordered consumer.
const WALK_MAX: u64 = 32;
/// Local publish locks (and one-entry caches of the last append), shared by channels by hash.
const STRIPES: usize = 256;
/// How much longer than `channel_state_ttl` history streams keep a channel's last message, so
/// it always outlives the channel's epoch entry (see the crate docs).
const STATE_MARGIN: Duration = Duration::from_secs(60);
/// Most publications a namespace may keep per channel.
const MAX_HISTORY: usize = 100_000;
/// Canary period and the longest it may take to come back.
const CANARY_EVERY: Duration = Duration::from_millis(500);
const CANARY_WAIT: Duration = Duration::from_secs(1);
/// Channels recovered at once after a reconnect.
const RECOVERY_CONCURRENCY: usize = 16;
/// Engine counters, as reported in `EngineStatus::counters`.
const COUNTERS: &[&str] = &[
    "recoveries",
    "recovered_publications",
    "publish_retries",
    "slow_consumers",
    "bad_messages",
];

/// One namespace's history stream.
struct Namespace {
    stream: Stream,
    /// The subject token: the namespace in hex, or `_` for the default namespace.
    token: String,
    /// Publications kept per channel (0: the stream holds only each channel's position).
    retained: usize,
    /// `history_ttl` in milliseconds, applied when reading.
    ttl_ms: u64,
}

/// A channel's last appended message: where the next publish continues.
#[derive(Debug)]
struct Tip {
    epoch: Epoch,
    offset: u64,
    seq: u64,
}

/// A channel this node receives from NATS.
struct Sub {
    stop: CancellationToken,
    /// The newest position received (or recovered) on it.
    last: Arc<Mutex<StreamPosition>>,
}

type Stripe = tokio::sync::Mutex<Option<(ChannelName, Tip)>>;

/// The NATS broker and history store; see the crate docs.
pub struct NatsEngine {
    config: NatsEngineConfig,
    client: Client,
    js: jetstream::Context,
    hub: Arc<Hub>,
    default_ns: Namespace,
    namespaces: HashMap<String, Namespace>,
    epochs: kv::Store,
    presence: Arc<NatsPresence>,
    health: Arc<EngineHealth>,
    remote: RemoteSubscriptions,
    subs: Mutex<HashMap<ChannelName, Sub>>,
    stripes: Box<[Stripe]>,
    hasher: RandomState,
    recover: Arc<Notify>,
    canary_subject: String,
    canary: Mutex<Option<Subscriber>>,
    /// Per-channel receive tasks, stopped through `stop` when the engine's token is cancelled.
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl fmt::Debug for NatsEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsEngine")
            .field("url", &self.config.url)
            .field("prefix", &self.config.prefix)
            .field("subscriptions", &lock(&self.subs).len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Records `position` as seen unless a newer one of the same epoch was.
fn note(last: &Mutex<StreamPosition>, position: &StreamPosition) {
    let mut last = lock(last);
    if last.epoch != position.epoch || last.offset < position.offset {
        *last = position.clone();
    }
}

impl NatsEngine {
    /// Connects, creates/updates JetStream streams and KV buckets, runs one canary; fails with a
    /// clear error if NATS is unreachable or a namespace option cannot be honoured.
    pub async fn connect(
        config: NatsEngineConfig,
        hub: Arc<Hub>,
        channels: &ChannelsConfig,
    ) -> anyhow::Result<Arc<Self>> {
        check_config(&config, channels)?;
        let health = Arc::new(EngineHealth::new("nats", COUNTERS));
        let recover = Arc::new(Notify::new());
        let node_id = format!("{:016x}", fastrand::u64(..));
        let connects = Arc::new(AtomicU64::new(0));
        let (h, r) = (health.clone(), recover.clone());
        let client = ConnectOptions::new()
            .name(format!("herald-{node_id}"))
            .connection_timeout(config.command_timeout)
            .request_timeout(Some(config.command_timeout))
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(100 * u64::try_from(attempts).unwrap_or(10).min(10))
            })
            .event_callback(move |event| {
                let (health, recover, connects) = (h.clone(), r.clone(), connects.clone());
                async move { on_event(&health, &recover, &connects, event) }
            })
            .connect(config.url.as_str())
            .await
            .with_context(|| format!("cannot connect to NATS at {}", config.url))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(config.command_timeout);

        let default_ns = ensure_stream(&js, &config, "", &channels.defaults).await?;
        let mut namespaces = HashMap::new();
        for (name, options) in &channels.namespaces {
            let ns = ensure_stream(&js, &config, name, options).await?;
            namespaces.insert(name.clone(), ns);
        }
        let upper = config.prefix.to_uppercase();
        let epochs =
            ensure_bucket(&js, format!("{upper}_EPOCHS"), config.channel_state_ttl).await?;
        let bucket = format!("{upper}_PRESENCE");
        let presence_kv = ensure_bucket(&js, bucket.clone(), config.presence_lease).await?;
        let presence_stream = js
            .get_stream(format!("KV_{bucket}"))
            .await
            .with_context(|| format!("cannot open the stream of key-value bucket {bucket}"))?;
        let presence = Arc::new(NatsPresence::new(
            presence_kv,
            presence_stream,
            bucket,
            config.command_timeout,
        ));

        let canary_subject = format!("{}.canary.{node_id}", config.prefix);
        let mut canary = client
            .subscribe(canary_subject.clone())
            .await
            .context("cannot subscribe to the canary subject")?;
        if !canary_round_trip(&client, &canary_subject, &mut canary).await {
            bail!(
                "NATS at {} did not return a canary message within {CANARY_WAIT:?}",
                config.url
            );
        }
        health.set_state(LinkState::Connected);
        health.set_ready(true);

        Ok(Arc::new(Self {
            config,
            client,
            js,
            hub,
            default_ns,
            namespaces,
            epochs,
            presence,
            health,
            remote: RemoteSubscriptions::default(),
            subs: Mutex::new(HashMap::new()),
            stripes: (0..STRIPES)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            hasher: RandomState::new(),
            recover,
            canary_subject,
            canary: Mutex::new(Some(canary)),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        }))
    }

    /// The presence store sharing this engine's connection.
    pub fn presence(&self) -> Arc<NatsPresence> {
        self.presence.clone()
    }

    /// Spawns the background tasks (canary health loop every 500 ms, presence lease refresh
    /// every lease/3, recovery after reconnect, and the supervisor of the per-channel receive
    /// tasks) on `tracker`, stopping when `token` is cancelled. `_publisher` is unused: the
    /// engine publishes nothing on its own.
    pub fn start(
        self: &Arc<Self>,
        _publisher: Arc<Publisher>,
        token: CancellationToken,
        tracker: &TaskTracker,
    ) {
        match lock(&self.canary).take() {
            Some(canary) => {
                tracker.spawn(self.clone().canary_loop(canary, token.clone()));
            }
            None => tracing::warn!("NatsEngine::start called twice; the canary already runs."),
        }
        tracker.spawn(self.clone().refresh_loop(token.clone()));
        tracker.spawn(self.clone().recovery_loop(token.clone()));
        let (stop, tasks) = (self.stop.clone(), self.tasks.clone());
        tracker.spawn(async move {
            token.cancelled().await;
            stop.cancel();
            tasks.close();
            tasks.wait().await;
        });
    }

    fn timeout(&self) -> Duration {
        self.config.command_timeout
    }

    fn namespace(&self, channel: &ChannelName) -> &Namespace {
        self.namespaces
            .get(channel.namespace())
            .unwrap_or(&self.default_ns)
    }

    fn history_subject(&self, ns: &Namespace, chan: &str) -> String {
        format!("{}.h.{}.{chan}", self.config.prefix, ns.token)
    }

    fn fanout_subject(&self, chan: &str) -> String {
        format!("{}.f.{chan}", self.config.prefix)
    }

    fn stripe(&self, channel: &ChannelName) -> &Stripe {
        &self.stripes[(self.hasher.hash_one(channel.as_str()) as usize) % STRIPES]
    }

    /// The channel's last message in history.
    async fn last(&self, ns: &Namespace, subject: &str) -> Result<Option<Stored>, EngineError> {
        let got = within(
            self.timeout(),
            "nats history read timed out",
            ns.stream.direct_get_last_for_subject(subject),
        )
        .await?;
        match got {
            Ok(m) => Stored::decode(&m.headers, m.payload, m.sequence)
                .map(Some)
                .ok_or(EngineError::Unavailable("nats history message malformed")),
            Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => Ok(None),
            Err(e) => Err(unavailable("nats history read failed")(&e)),
        }
    }

    /// The epoch of a channel with nothing in history, created (by exactly one node) if absent.
    /// The key names the namespace's stream too: the entry vouches for that subject only.
    async fn epoch(&self, ns: &Namespace, chan: &str) -> Result<Epoch, EngineError> {
        let key = format!("{}.{chan}", ns.token);
        for _ in 0..3 {
            let got = call(
                self.timeout(),
                "nats epoch read failed",
                self.epochs.get(key.as_str()),
            )
            .await?;
            if let Some(value) = got {
                return std::str::from_utf8(&value)
                    .ok()
                    .and_then(|s| Epoch::parse(s).ok())
                    .ok_or(EngineError::Unavailable("nats epoch malformed"));
            }
            let epoch = herald_core::new_epoch();
            let value = Bytes::from(epoch.as_str().to_owned());
            let created = within(
                self.timeout(),
                "nats epoch write timed out",
                self.epochs.create(&key, value),
            )
            .await?;
            match created {
                Ok(_) => return Ok(epoch),
                // Another node created it first; read theirs.
                Err(e) if matches!(e.kind(), CreateErrorKind::AlreadyExists) => {}
                Err(e) => return Err(unavailable("nats epoch write failed")(&e)),
            }
        }
        Err(EngineError::Unavailable("nats epoch contention"))
    }

    /// Where the next publish on the channel continues.
    async fn tip(&self, ns: &Namespace, subject: &str, chan: &str) -> Result<Tip, EngineError> {
        Ok(match self.last(ns, subject).await? {
            Some(s) => Tip {
                epoch: s.position.epoch,
                offset: s.position.offset,
                seq: s.seq,
            },
            None => Tip {
                epoch: self.epoch(ns, chan).await?,
                offset: 0,
                seq: 0,
            },
        })
    }

    /// The channel's current position.
    async fn position(&self, channel: &ChannelName) -> Result<StreamPosition, EngineError> {
        let ns = self.namespace(channel);
        let chan = hex(channel.as_str());
        let tip = self
            .tip(ns, &self.history_subject(ns, &chan), &chan)
            .await?;
        Ok(StreamPosition::new(tip.epoch, tip.offset))
    }

    /// The consecutive, unexpired publications `lower+1 ..= last`, oldest first; fewer (only the
    /// newest run) when older ones are gone.
    async fn collect(
        &self,
        ns: &Namespace,
        channel: &ChannelName,
        subject: &str,
        last: Stored,
        lower: u64,
    ) -> Result<Vec<Arc<Publication>>, EngineError> {
        let now = now_ms();
        let top = last.position.offset;
        let epoch = last.position.epoch.clone();
        // Newest first: accepts the message that continues the run downwards.
        let accept = |have: usize, s: &Stored| {
            s.position.epoch == epoch
                && s.position.offset + have as u64 == top
                && s.position.offset > lower
                && now < s.time_ms.saturating_add(ns.ttl_ms)
        };
        let mut run: Vec<Stored> = Vec::new();
        if top - lower <= WALK_MAX {
            let mut next = Some(last);
            while let Some(s) = next.take() {
                if !accept(run.len(), &s) {
                    break;
                }
                let (prev, done) = (s.prev, s.position.offset == lower + 1);
                run.push(s);
                if prev == 0 || done {
                    break;
                }
                let got = within(
                    self.timeout(),
                    "nats history read timed out",
                    ns.stream.direct_get(prev),
                )
                .await?;
                next = match got {
                    Ok(m) if m.subject.as_str() == subject => {
                        Stored::decode(&m.headers, m.payload, m.sequence)
                    }
                    Ok(_) => None,
                    Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => None,
                    Err(e) => return Err(unavailable("nats history read failed")(&e)),
                };
            }
        } else {
            let scanned = scan(
                &ns.stream,
                subject.to_owned(),
                DeliverPolicy::All,
                Some(last.seq),
                MAX_HISTORY + 1,
                self.timeout(),
            )
            .await?;
            for (seq, m) in scanned.into_iter().rev() {
                let Some(s) = m
                    .headers
                    .as_ref()
                    .and_then(|h| Stored::decode(h, m.payload.clone(), seq))
                else {
                    break;
                };
                if !accept(run.len(), &s) {
                    break;
                }
                let done = s.position.offset == lower + 1;
                run.push(s);
                if done {
                    break;
                }
            }
        }
        Ok(run
            .into_iter()
            .rev()
            .filter_map(|s| s.publication(channel))
            .collect())
    }

    async fn read_page(
        &self,
        channel: &ChannelName,
        query: HistoryQuery,
    ) -> Result<HistoryPage, EngineError> {
        let ns = self.namespace(channel);
        let chan = hex(channel.as_str());
        let subject = self.history_subject(ns, &chan);
        let Some(last) = self.last(ns, &subject).await? else {
            let epoch = self.epoch(ns, &chan).await?;
            let reset = query
                .since
                .as_ref()
                .and_then(|s| resume_reset(s, &epoch, 0, 1));
            return Ok(HistoryPage {
                publications: Vec::new(),
                top: StreamPosition::new(epoch, 0),
                reset,
            });
        };
        let top = last.position.clone();
        let lower = match &query.since {
            None => top.offset - (query.limit.min(ns.retained) as u64).min(top.offset),
            Some(since) => {
                // With `oldest` 0 only the epoch and range checks can fire.
                if let Some(reset) = resume_reset(since, &top.epoch, top.offset, 0) {
                    return Ok(HistoryPage {
                        publications: Vec::new(),
                        top,
                        reset: Some(reset),
                    });
                }
                since.offset
            }
        };
        let mut publications = if lower == top.offset || ns.retained == 0 {
            Vec::new()
        } else {
            self.collect(ns, channel, &subject, last, lower).await?
        };
        let mut reset = None;
        if let Some(since) = &query.since {
            let oldest = publications
                .first()
                .map_or(top.offset + 1, |p| p.position.offset);
            reset = resume_reset(since, &top.epoch, top.offset, oldest);
            if reset.is_some() {
                publications.clear();
            } else {
                publications.truncate(query.limit);
            }
        }
        Ok(HistoryPage {
            publications,
            top,
            reset,
        })
    }

    async fn canary_loop(self: Arc<Self>, mut canary: Subscriber, token: CancellationToken) {
        let mut tick = tokio::time::interval(CANARY_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                _ = tick.tick() => {}
            }
            let ok = tokio::select! {
                () = token.cancelled() => return,
                ok = canary_round_trip(&self.client, &self.canary_subject, &mut canary) => ok,
            };
            let state = match self.client.connection_state() {
                async_nats::connection::State::Connected => LinkState::Connected,
                async_nats::connection::State::Disconnected => LinkState::Disconnected,
                async_nats::connection::State::Pending => LinkState::Connecting,
            };
            self.health.set_state(state);
            self.health.set_ready(ok && state == LinkState::Connected);
        }
    }

    async fn refresh_loop(self: Arc<Self>, token: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.presence_lease / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                _ = tick.tick() => {}
            }
            tokio::select! {
                () = token.cancelled() => return,
                () = self.presence.refresh() => {}
            }
        }
    }

    async fn recovery_loop(self: Arc<Self>, token: CancellationToken) {
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                () = self.recover.notified() => {}
            }
            loop {
                let done = tokio::select! {
                    () = token.cancelled() => return,
                    done = self.recover_all() => done,
                };
                match done {
                    Ok(()) => break,
                    Err(error) => {
                        tracing::warn!(error = %error, "NATS recovery failed; retrying.");
                        // Backoff before the next attempt, not synchronisation.
                        tokio::select! {
                            () = token.cancelled() => return,
                            () = tokio::time::sleep(CANARY_EVERY) => {}
                        }
                    }
                }
            }
        }
    }

    /// Fans out what every subscribed channel missed since its last seen position.
    async fn recover_all(&self) -> Result<(), EngineError> {
        // The client re-subscribed before anything else on the new connection; once the server
        // answered this flush, everything newer than the reads below arrives live.
        call(self.timeout(), "nats flush failed", self.client.flush()).await?;
        let subs: Vec<_> = lock(&self.subs)
            .iter()
            .map(|(c, s)| (c.clone(), s.last.clone()))
            .collect();
        let results: Vec<_> = futures_util::stream::iter(subs)
            .map(|(channel, last)| async move { self.recover_channel(&channel, &last).await })
            .buffer_unordered(RECOVERY_CONCURRENCY)
            .collect()
            .await;
        let mut recovered = 0;
        for result in results {
            recovered += result?;
        }
        self.health.count("recoveries", 1);
        self.health.count("recovered_publications", recovered);
        tracing::info!(recovered, "Recovered after NATS reconnect.");
        Ok(())
    }

    async fn recover_channel(
        &self,
        channel: &ChannelName,
        last: &Mutex<StreamPosition>,
    ) -> Result<u64, EngineError> {
        let since = lock(last).clone();
        let query = HistoryQuery {
            since: Some(since),
            limit: MAX_HISTORY,
        };
        let page = self.read_page(channel, query).await?;
        let publications = if page.reset.is_some() {
            // Sessions cannot be resumed from here; the newest publication shows them the jump.
            note(last, &page.top);
            let newest = HistoryQuery {
                since: None,
                limit: 1,
            };
            self.read_page(channel, newest).await?.publications
        } else {
            page.publications
        };
        let n = publications.len() as u64;
        for p in publications {
            note(last, &p.position);
            self.hub.fan_out(channel, &Outgoing::Publication(p));
        }
        Ok(n)
    }
}

fn label(namespace: &str) -> String {
    if namespace.is_empty() {
        "channels.defaults".to_owned()
    } else {
        format!("channels.namespaces.{namespace}")
    }
}

/// How long a namespace's stream keeps messages (see the crate docs).
fn stream_max_age(config: &NatsEngineConfig, options: &NamespaceOptions) -> Duration {
    options
        .history_ttl
        .max(config.channel_state_ttl.saturating_add(STATE_MARGIN))
}

/// Refuses, before connecting, settings this engine cannot honour.
fn check_config(config: &NatsEngineConfig, channels: &ChannelsConfig) -> anyhow::Result<()> {
    let ok = !config.prefix.is_empty()
        && config
            .prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        bail!(
            "engine.prefix {:?} must be lowercase letters, digits, `_` and `-` for NATS",
            config.prefix
        );
    }
    // NATS carries durations as i64 nanoseconds.
    let fits = |d: Duration| i64::try_from(d.as_nanos()).is_ok();
    for (name, d) in [
        ("presence_lease", config.presence_lease),
        ("channel_state_ttl", config.channel_state_ttl),
        ("command_timeout", config.command_timeout),
    ] {
        if d < Duration::from_millis(10) || !fits(d.saturating_add(STATE_MARGIN)) {
            bail!("engine.{name} must be between 10ms and 200 years for NATS");
        }
    }
    let all = std::iter::once(("", &channels.defaults))
        .chain(channels.namespaces.iter().map(|(k, v)| (k.as_str(), v)));
    for (name, options) in all {
        let label = label(name);
        let retained = options.retained();
        if retained > MAX_HISTORY {
            bail!(
                "{label}.history_size is {retained}; the NATS engine keeps at most {MAX_HISTORY} per channel"
            );
        }
        if retained > 0 && options.history_ttl.is_zero() {
            bail!("{label}.history_ttl must be more than 0s when history is kept");
        }
        if !fits(stream_max_age(config, options)) {
            bail!("{label}.history_ttl is longer than NATS can keep messages");
        }
        // The stream's directory is named after it: `{PREFIX}_H_{nshex}` must fit a file name.
        if config.prefix.len() + 3 + 2 * name.len() > 255 {
            bail!("{label}: the namespace name is too long for a NATS stream name");
        }
    }
    Ok(())
}

/// Creates or updates the history stream of namespace `name` (`""`: the default namespace).
async fn ensure_stream(
    js: &jetstream::Context,
    config: &NatsEngineConfig,
    name: &str,
    options: &NamespaceOptions,
) -> anyhow::Result<Namespace> {
    let label = label(name);
    let retained = options.retained();
    let max_age = stream_max_age(config, options);
    let (token, suffix) = if name.is_empty() {
        ("_".to_owned(), "DEFAULT".to_owned())
    } else {
        (hex(name), hex(name))
    };
    let stream_name = format!("{}_H_{suffix}", config.prefix.to_uppercase());
    let stream_config = stream::Config {
        name: stream_name.clone(),
        subjects: vec![format!("{}.h.{token}.*", config.prefix)],
        max_messages_per_subject: i64::try_from(retained.max(1)).unwrap_or(i64::MAX),
        max_age,
        allow_direct: true,
        storage: StorageType::File,
        discard: DiscardPolicy::Old,
        ..Default::default()
    };
    js.create_or_update_stream(stream_config)
        .await
        .with_context(|| {
            format!(
                "cannot create or update JetStream stream {stream_name} for {label} \
                 (is JetStream enabled on the NATS server?)"
            )
        })?;
    let stream = js
        .get_stream(&stream_name)
        .await
        .with_context(|| format!("cannot open JetStream stream {stream_name} for {label}"))?;
    Ok(Namespace {
        stream,
        token,
        retained,
        ttl_ms: u64::try_from(options.history_ttl.as_millis()).unwrap_or(u64::MAX),
    })
}

/// Creates or updates a key-value bucket keeping one value per key for `max_age`. The bucket's
/// stream is configured directly (as async-nats would for a key-value bucket): the client's own
/// bucket creation queries account details that nats-server 2.9 does not report.
async fn ensure_bucket(
    js: &jetstream::Context,
    bucket: String,
    max_age: Duration,
) -> anyhow::Result<kv::Store> {
    let stream_config = stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: DiscardPolicy::New,
        ..Default::default()
    };
    js.create_or_update_stream(stream_config)
        .await
        .with_context(|| {
            format!("cannot create or update key-value bucket {bucket} (is JetStream enabled?)")
        })?;
    js.get_key_value(bucket.as_str())
        .await
        .with_context(|| format!("cannot open key-value bucket {bucket}"))
}

/// Publishes a nonce on the canary subject and waits for it to come back.
async fn canary_round_trip(client: &Client, subject: &str, canary: &mut Subscriber) -> bool {
    let nonce = Bytes::from(format!("{:016x}", fastrand::u64(..)));
    let trip = async {
        if client
            .publish(subject.to_owned(), nonce.clone())
            .await
            .is_err()
        {
            return false;
        }
        while let Some(m) = canary.next().await {
            if m.payload == nonce {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(CANARY_WAIT, trip)
        .await
        .unwrap_or(false)
}

/// Connection events: state, readiness, reconnects, and recovery after a reconnect or after the
/// client dropped messages for a slow subscription.
fn on_event(health: &EngineHealth, recover: &Notify, connects: &AtomicU64, event: Event) {
    match event {
        Event::Connected => {
            if connects.fetch_add(1, Relaxed) == 0 {
                health.set_state(LinkState::Connected);
            } else {
                tracing::info!("Reconnected to NATS.");
                health.reconnected();
                recover.notify_one();
            }
        }
        Event::Disconnected | Event::Closed => {
            tracing::warn!(event = %event, "Lost the NATS connection.");
            health.set_state(LinkState::Disconnected);
            health.set_ready(false);
        }
        Event::SlowConsumer(sid) => {
            tracing::warn!(
                sid,
                "NATS dropped messages for a slow subscription; recovering."
            );
            health.count("slow_consumers", 1);
            recover.notify_one();
        }
        other => tracing::info!(event = %other, "NATS event."),
    }
}

/// Delivers one fan-out message to the hub; false when it is not one of ours.
fn deliver(
    hub: &Hub,
    channel: &ChannelName,
    last: &Mutex<StreamPosition>,
    msg: async_nats::Message,
) -> bool {
    let Some(headers) = msg.headers.as_ref() else {
        return false;
    };
    let kind = match headers.get(KIND).map(|v| v.as_str()) {
        Some("p") => {
            let publication =
                Stored::decode(headers, msg.payload, 0).and_then(|s| s.publication(channel));
            let Some(p) = publication else { return false };
            note(last, &p.position);
            hub.fan_out(channel, &Outgoing::Publication(p));
            return true;
        }
        Some("j") => PresenceKind::Join,
        Some("l") => PresenceKind::Leave,
        _ => return false,
    };
    let Ok(member) = serde_json::from_slice::<Member>(&msg.payload) else {
        return false;
    };
    let event = PresenceEvent::new(channel.clone(), kind, member);
    hub.fan_out(channel, &Outgoing::Presence(Arc::new(event)));
    true
}

/// Receives one channel's fan-out subject until `stop`.
async fn forward(
    (hub, health): (Arc<Hub>, Arc<EngineHealth>),
    channel: ChannelName,
    mut sub: Subscriber,
    last: Arc<Mutex<StreamPosition>>,
    stop: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            () = stop.cancelled() => break,
            msg = sub.next() => msg,
        };
        let Some(msg) = msg else { break };
        if !deliver(&hub, &channel, &last, msg) {
            health.count("bad_messages", 1);
            tracing::debug!(channel = %channel, "Dropped a malformed fan-out message.");
        }
    }
    // Dropping the subscriber unsubscribes at the server.
}

#[async_trait]
impl RemoteSubscriber for NatsEngine {
    async fn remote_subscribe(&self, channel: &ChannelName) -> Result<(), EngineError> {
        let subject = self.fanout_subject(&hex(channel.as_str()));
        let sub = call(
            self.timeout(),
            "nats subscribe failed",
            self.client.subscribe(subject),
        )
        .await?;
        call(self.timeout(), "nats flush failed", self.client.flush()).await?;
        // Subscribed: everything after this position arrives live (or is recovered).
        let last = Arc::new(Mutex::new(self.position(channel).await?));
        let stop = self.stop.child_token();
        let old = lock(&self.subs).insert(
            channel.clone(),
            Sub {
                stop: stop.clone(),
                last: last.clone(),
            },
        );
        if let Some(old) = old {
            old.stop.cancel();
        }
        let parts = (self.hub.clone(), self.health.clone());
        self.tasks
            .spawn(forward(parts, channel.clone(), sub, last, stop));
        Ok(())
    }

    async fn remote_unsubscribe(&self, channel: &ChannelName) -> Result<(), EngineError> {
        if let Some(sub) = lock(&self.subs).remove(channel) {
            sub.stop.cancel();
        }
        Ok(())
    }
}

#[async_trait]
impl Broker for NatsEngine {
    /// Appends to the channel's history subject at the next offset (see the crate docs), then
    /// fans the publication out. `_retention` is not consulted: each namespace's retention is
    /// configured on its stream at connect.
    async fn publish(
        &self,
        channel: ChannelName,
        event: EventName,
        data: Box<RawValue>,
        _retention: Retention,
    ) -> Result<Arc<Publication>, EngineError> {
        if !self.health.canary_ok() {
            return Err(EngineError::Unavailable("nats engine not ready"));
        }
        let started = Instant::now();
        let ns = self.namespace(&channel);
        let chan = hex(channel.as_str());
        let subject = self.history_subject(ns, &chan);
        let time_ms = now_ms();
        let payload = Bytes::copy_from_slice(data.get().as_bytes());
        let kept = if ns.retained > 0 {
            payload.clone()
        } else {
            Bytes::new()
        };
        let mut cache = within(
            self.timeout(),
            "nats publish queue timed out",
            self.stripe(&channel).lock(),
        )
        .await?;
        let mut tip = match cache.take() {
            Some((c, tip)) if c == channel => Some(tip),
            _ => None,
        };
        let mut appended = None;
        for _ in 0..MAX_ATTEMPTS {
            let t = match tip.take() {
                Some(t) => t,
                None => self.tip(ns, &subject, &chan).await?,
            };
            let position = StreamPosition::new(t.epoch, t.offset + 1);
            let mut headers = codec::headers(&position, &event, time_ms);
            headers.insert(PREV, t.seq.to_string());
            let message = PublishMessage::build()
                .headers(headers)
                .payload(kept.clone())
                .expected_last_subject_sequence(t.seq);
            let append = async { self.js.send_publish(subject.clone(), message).await?.await };
            match within(self.timeout(), "nats publish timed out", append).await? {
                Ok(ack) => {
                    appended = Some((position, ack.sequence));
                    break;
                }
                Err(e) if matches!(e.kind(), PublishErrorKind::WrongLastSequence) => {
                    self.health.count("publish_retries", 1);
                }
                Err(e) if matches!(e.kind(), PublishErrorKind::MaxPayloadExceeded) => {
                    return Err(EngineError::LimitReached("nats max_payload"));
                }
                Err(e) => return Err(unavailable("nats publish failed")(&e)),
            }
        }
        let Some((position, seq)) = appended else {
            return Err(EngineError::Unavailable("nats publish contention"));
        };
        *cache = Some((
            channel.clone(),
            Tip {
                epoch: position.epoch.clone(),
                offset: position.offset,
                seq,
            },
        ));
        // Still under the stripe lock, so this node's publications leave in offset order.
        let mut headers = codec::headers(&position, &event, time_ms);
        headers.insert(KIND, "p");
        let fan_out =
            self.client
                .publish_with_headers(self.fanout_subject(&chan), headers, payload);
        if let Err(error) = call(self.timeout(), "nats fan-out failed", fan_out).await {
            // It is in history: subscribers fill the gap at the next publication.
            tracing::warn!(channel = %channel, error = %error, "Fan-out failed.");
        }
        drop(cache);
        self.health.publish_took(started.elapsed());
        Ok(Arc::new(Publication::new(
            channel, event, data, position, time_ms,
        )))
    }

    async fn publish_presence(&self, event: PresenceEvent) -> Result<(), EngineError> {
        let kind = match event.kind {
            PresenceKind::Join => "j",
            PresenceKind::Leave => "l",
        };
        let mut headers = HeaderMap::new();
        headers.insert(KIND, kind);
        let payload = serde_json::to_vec(&event.member)
            .map_err(|e| unavailable("presence encoding failed")(&e))?;
        let subject = self.fanout_subject(&hex(event.channel.as_str()));
        call(
            self.timeout(),
            "nats presence publish failed",
            self.client
                .publish_with_headers(subject, headers, payload.into()),
        )
        .await
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
impl HistoryStore for NatsEngine {
    /// As the memory engine: `since: None` gives the newest `limit` publications; `since: Some`
    /// those after it, or a reset. Reading a channel without an epoch creates it.
    async fn read(
        &self,
        channel: &ChannelName,
        query: HistoryQuery,
    ) -> Result<HistoryPage, EngineError> {
        self.read_page(channel, query).await
    }
}
