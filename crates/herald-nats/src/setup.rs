//! Starting the NATS engine: checking the configuration, connecting, creating or updating the
//! history streams and key-value buckets, one canary round trip, then the node's tasks.

use crate::codec::hex;
use crate::config::{check_config, label, stream_max_age, NatsEngineConfig};
use crate::engine::{Namespace, NatsEngine, STRIPES};
use crate::loops;
use crate::presence::NatsPresence;
use crate::remote::canary_round_trip;
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use async_nats::{jetstream, ConnectOptions, Event};
use herald_core::{
    ChannelsConfig, EngineError, EngineParts, Hub, LinkState, NamespaceOptions, NodeParts, Remote,
    CANARY_WAIT,
};
use std::collections::HashMap;
use std::hash::RandomState;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

impl NatsEngine {
    /// Connects, creates or updates the JetStream streams and key-value buckets, and runs one
    /// canary, failing with a clear error if NATS is unreachable or a namespace option cannot
    /// be honoured; then spawns on `tracker` the presence refresher and the canary, recovery
    /// and re-subscription tasks, all stopping when `shutdown` is cancelled.
    pub async fn start(
        config: NatsEngineConfig,
        node: &NodeParts,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<EngineParts, EngineError> {
        let engine = Self::connect(
            config,
            node.hub.clone(),
            &node.channels,
            node.publish_limits.idempotency_window,
        )
        .await?;
        let publisher = node.publisher(engine.clone());
        loops::spawn(&engine, &shutdown, tracker);
        engine.remote.start(engine.clone(), shutdown, tracker).await;
        Ok(EngineParts {
            broker: engine.clone(),
            history: engine.clone(),
            presence: engine.presence.clone(),
            publisher,
            leases: engine.clone(),
        })
    }

    async fn connect(
        config: NatsEngineConfig,
        hub: Arc<Hub>,
        channels: &ChannelsConfig,
        idempotency_window: Duration,
    ) -> Result<Arc<Self>, EngineError> {
        check_config(&config, channels)?;
        let remote = Remote::new::<Self>(hub);
        let node_id = format!("{:016x}", fastrand::u64(..));
        let connects = Arc::new(AtomicU64::new(0));
        let r = remote.clone();
        let client = ConnectOptions::new()
            .name(format!("herald-{node_id}"))
            .connection_timeout(config.command_timeout)
            .request_timeout(Some(config.command_timeout))
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(100 * u64::try_from(attempts).unwrap_or(10).min(10))
            })
            .event_callback(move |event| {
                let (remote, connects) = (r.clone(), connects.clone());
                async move { on_event(&remote, &connects, event) }
            })
            .connect(&*config.url)
            .await
            .map_err(|e| {
                EngineError::start(format!("cannot connect to NATS at {}", config.url), e)
            })?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(config.command_timeout);

        let window = idempotency_window;
        let default_ns = ensure_stream(&js, &config, "", &channels.defaults, window).await?;
        let mut namespaces = HashMap::new();
        for (name, options) in &channels.namespaces {
            let ns = ensure_stream(&js, &config, name, options, window).await?;
            namespaces.insert(name.clone(), ns);
        }
        let upper = config.prefix.to_uppercase();
        let (epochs, _) =
            ensure_bucket(&js, format!("{upper}_EPOCHS"), config.channel_state_ttl).await?;
        let latest_stream = ensure_latest_stream(&js, &config).await?;
        let (latest_channels, latest_channels_stream) =
            ensure_bucket(&js, format!("{upper}_LATEST_CHANNELS"), Duration::ZERO).await?;
        let (leases, _) =
            ensure_bucket(&js, format!("{upper}_LEASES"), herald_core::LEASE_TTL).await?;
        let bucket = format!("{upper}_PRESENCE");
        let (presence_kv, presence_stream) =
            ensure_bucket(&js, bucket.clone(), config.presence_lease).await?;
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
            .map_err(|e| EngineError::start("cannot subscribe to the canary subject", e))?;
        if !canary_round_trip(&client, &canary_subject, &mut canary).await {
            return Err(EngineError::start(
                format!("NATS at {} did not return a canary message", config.url),
                format!("no reply within {CANARY_WAIT:?}"),
            ));
        }
        remote.health().set_state(LinkState::Connected);
        remote.health().set_ready(true);

        Ok(Arc::new(Self {
            config,
            client,
            js,
            default_ns,
            namespaces,
            epochs,
            latest_stream,
            latest_channels,
            latest_channels_stream,
            latest_counted: Mutex::new(std::collections::HashSet::new()),
            leases,
            presence,
            remote,
            subs: Mutex::new(HashMap::new()),
            stripes: (0..STRIPES)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            hasher: RandomState::new(),
            canary_subject,
            canary: tokio::sync::Mutex::new(canary),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        }))
    }
}

/// Creates or updates the history stream of namespace `name` (`""`: the default namespace).
/// Its duplicate window is `publish.idempotency_window` (at most the stream's age): the
/// `idempotency_key` of a publish is its message id.
async fn ensure_stream(
    js: &jetstream::Context,
    config: &NatsEngineConfig,
    name: &str,
    options: &NamespaceOptions,
    idempotency_window: Duration,
) -> Result<Namespace, EngineError> {
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
        duplicate_window: idempotency_window.min(max_age),
        allow_direct: true,
        storage: StorageType::File,
        discard: DiscardPolicy::Old,
        ..Default::default()
    };
    let stream = put_stream(
        js,
        stream_config,
        &format!("JetStream stream {stream_name} for {label}"),
    )
    .await?;
    Ok(Namespace {
        stream,
        token,
        retained,
        ttl_ms: u64::try_from(options.history_ttl.as_millis()).unwrap_or(u64::MAX),
        latest: options.latest_state,
        latest_ttl_ms: (!options.latest_state_ttl.is_zero())
            .then(|| u64::try_from(options.latest_state_ttl.as_millis()).unwrap_or(u64::MAX)),
    })
}

/// Creates or updates the latest-state stream: one message kept per subject, for as long as
/// the stream lives (see `latest.rs`).
async fn ensure_latest_stream(
    js: &jetstream::Context,
    config: &NatsEngineConfig,
) -> Result<stream::Stream, EngineError> {
    let name = format!("{}_LATEST", config.prefix.to_uppercase());
    let stream_config = stream::Config {
        name: name.clone(),
        subjects: vec![format!("{}.l.>", config.prefix)],
        max_messages_per_subject: 1,
        allow_direct: true,
        storage: StorageType::File,
        discard: DiscardPolicy::Old,
        ..Default::default()
    };
    put_stream(js, stream_config, &format!("JetStream stream {name}")).await
}

/// Creates or updates the stream `config` describes and opens it; `what` names it in errors.
async fn put_stream(
    js: &jetstream::Context,
    config: stream::Config,
    what: &str,
) -> Result<stream::Stream, EngineError> {
    let name = config.name.clone();
    js.create_or_update_stream(config).await.map_err(|e| {
        EngineError::start(
            format!("cannot create or update {what} (is JetStream enabled on the NATS server?)"),
            e,
        )
    })?;
    js.get_stream(&name)
        .await
        .map_err(|e| EngineError::start(format!("cannot open {what}"), e))
}

/// Creates or updates a key-value bucket keeping one value per key for `max_age`; returns it
/// and its stream. The bucket's
/// stream is configured directly (as async-nats would for a key-value bucket): the client's own
/// bucket creation queries account details that nats-server 2.9 does not report.
async fn ensure_bucket(
    js: &jetstream::Context,
    bucket: String,
    max_age: Duration,
) -> Result<(kv::Store, stream::Stream), EngineError> {
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
    let stream = put_stream(js, stream_config, &format!("key-value bucket {bucket}")).await?;
    let store = js
        .get_key_value(bucket.as_str())
        .await
        .map_err(|e| EngineError::start(format!("cannot open key-value bucket {bucket}"), e))?;
    Ok((store, stream))
}

/// Connection events: state, readiness, reconnects (followed by a re-subscription and a
/// recovery), and recovery after the client dropped messages for a slow subscription.
fn on_event(remote: &Remote, connects: &AtomicU64, event: Event) {
    let health = remote.health();
    match event {
        Event::Connected => {
            if connects.fetch_add(1, Relaxed) == 0 {
                health.set_state(LinkState::Connected);
            } else {
                tracing::info!("Reconnected to NATS.");
                remote.reconnected();
            }
        }
        Event::Disconnected | Event::Closed => {
            tracing::warn!(event = %event, "Lost the NATS connection.");
            health.link_lost();
        }
        Event::SlowConsumer(sid) => {
            tracing::warn!(
                sid,
                "NATS dropped messages for a slow subscription; recovering."
            );
            health.count("slow_consumers", 1);
            remote.lost_messages();
        }
        other => tracing::info!(event = %other, "NATS event."),
    }
}
