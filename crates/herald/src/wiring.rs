//! The composition root: builds the engine from the configuration, starts the server and the
//! background tasks, and runs the shutdown sequence. The only place that names a concrete
//! engine backend.

use crate::config::{Config, EngineConfig};
use crate::{shutdown, tasks};
use anyhow::Context;
use herald_core::memory::{MemoryEngine, MemoryPresenceStore};
use herald_core::{
    ChannelsConfig, Hub, KeyedBuckets, Node, NodeParts, Publisher, PublisherLimits, Stats,
};
use herald_nats::NatsEngine;
use herald_redis::RedisEngine;
use herald_server::{App, EdgeSettings};
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the memory engine drops expired history and idle channels.
const MEMORY_SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Most (namespace, user) publish buckets remembered at once.
const USER_RATE_KEYS: usize = 100_000;

/// What an engine contributes to the node.
type EngineParts = (
    Arc<dyn herald_core::Broker>,
    Arc<dyn herald_core::HistoryStore>,
    Arc<dyn herald_core::PresenceStore>,
    Arc<Publisher>,
);

/// Builds the engine parts for `config`, spawning their background tasks on `tracker`.
/// Fails when a shared engine cannot be reached or cannot honour the configuration.
pub(crate) async fn build(
    config: &Config,
    root: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<Node> {
    let stats = Arc::new(Stats::default());
    let hub = Arc::new(Hub::with_lag(
        stats.clone(),
        config.connection.limits().outbox,
    ));
    let channels = Arc::new(ChannelsConfig {
        closed: config.auth.configured(),
        ..config.channels.clone()
    });
    let publisher = |broker: Arc<dyn herald_core::Broker>| {
        Arc::new(Publisher::new(
            broker,
            channels.clone(),
            PublisherLimits {
                max_data_bytes: usize::try_from(config.publish.max_data.as_u64())
                    .unwrap_or(usize::MAX),
            },
            stats.clone(),
        ))
    };
    let (broker, history, presence, publisher): EngineParts = match &config.engine {
        EngineConfig::Memory(m) => {
            let engine = Arc::new(MemoryEngine::new(hub.clone(), m.clone()));
            let sweeper = engine.clone();
            let token = root.clone();
            tasks::spawn(tracker, "memory-sweep", async move {
                let mut tick = tokio::time::interval(MEMORY_SWEEP_INTERVAL);
                loop {
                    tokio::select! {
                        () = token.cancelled() => return Ok(()),
                        _ = tick.tick() => sweeper.sweep(),
                    }
                }
            });
            (
                engine.clone(),
                engine.clone(),
                Arc::new(MemoryPresenceStore::default()),
                publisher(engine),
            )
        }
        EngineConfig::Redis(r) => {
            let node = NodeParts {
                hub: hub.clone(),
                channels: channels.clone(),
                stats: stats.clone(),
                publish_limits: PublisherLimits {
                    max_data_bytes: usize::try_from(config.publish.max_data.as_u64())
                        .unwrap_or(usize::MAX),
                },
            };
            let parts = RedisEngine::start(r.clone(), &node, root.clone(), tracker).await?;
            (parts.broker, parts.history, parts.presence, parts.publisher)
        }
        EngineConfig::Nats(n) => {
            let engine = NatsEngine::connect(n.clone(), hub.clone(), &config.channels).await?;
            let p = publisher(engine.clone());
            engine.start(p.clone(), root.clone(), tracker);
            (engine.clone(), engine.clone(), engine.presence(), p)
        }
    };
    Ok(Node {
        hub,
        broker,
        history,
        presence,
        publisher,
        channels,
        stats,
        user_rates: Arc::new(KeyedBuckets::new(0, 60.0, USER_RATE_KEYS)),
    })
}

/// Runs the server until SIGINT/SIGTERM, then shuts down within the grace period.
pub(crate) async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let root = CancellationToken::new();
    let tracker = TaskTracker::new();
    let node = build(&config, &root, &tracker).await?;
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding {}", config.server.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let signals = shutdown::install().context("installing signal handlers")?;
    tracing::info!(
        addr = %addr,
        engine = config.engine.kind(),
        "Herald is listening."
    );
    if !config.auth.configured() {
        if addr.ip().is_loopback() {
            tracing::warn!(
                "No authentication is configured: running open for development, on loopback only. The HTTP API answers loopback callers only; configure auth.api_keys (and auth.token for clients) before exposing Herald."
            );
        } else {
            tracing::warn!(
                addr = %addr,
                "INSECURE: listening beyond loopback with no authentication (allow_insecure). Anyone who can reach this address may subscribe; the HTTP API still answers loopback callers only."
            );
        }
    }
    if config.auth.configured() {
        let public: Vec<&str> = config
            .channels
            .namespaces
            .iter()
            .filter(|(_, o)| o.subscribe == Some(herald_core::Access::Public))
            .map(|(n, _)| n.as_str())
            .collect();
        tracing::info!(
            public = ?public,
            "Authentication is configured: namespaces without an explicit `subscribe` need a token grant."
        );
        if !config.auth.token.configured() {
            tracing::warn!(
                "No connection-token keys (auth.token): clients cannot authenticate, so only public namespaces can be subscribed to."
            );
        }
        if config.auth.api_keys.is_empty() {
            tracing::warn!(
                "No API keys (auth.api_keys): the HTTP API answers loopback callers only. Behind a reverse proxy on this machine every caller is loopback, so do not proxy /api/ to the outside; configure auth.api_keys before you do."
            );
        }
    }
    // One line on stdout so scripts (and tests) can find the port when listening on :0.
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "Listening on http://{addr}");
        let _ = out.flush();
    }
    tasks::spawn(&tracker, "signals", signals.cancel_on_signal(root.clone()));
    let grace = config.server.shutdown_grace;
    let app = App::new(
        node.clone(),
        EdgeSettings {
            server: config.server.clone(),
            sse: config.sse.clone(),
            ws: config.ws.clone(),
            limits: config.connection.limits(),
            auth: config.auth.clone(),
        },
        root.clone(),
        tracker.clone(),
    )
    .map_err(|errors| anyhow::anyhow!("auth.token: {}", errors.join("; ")))?;
    let router = herald_server::router(app.clone());
    // Stop publishing as soon as shutdown begins, so nothing is accepted and then lost.
    let publisher = node.publisher.clone();
    let closing = root.clone();
    let (began_tx, began_rx) = tokio::sync::oneshot::channel();
    tasks::spawn(&tracker, "publisher-close", async move {
        closing.cancelled().await;
        let _ = began_tx.send(tokio::time::Instant::now());
        publisher.close();
        Ok(())
    });
    let drained = herald_server::serve(listener, router, &app).await?;
    // The grace period counts from the moment shutdown began.
    let began = began_rx
        .await
        .unwrap_or_else(|_| tokio::time::Instant::now());
    tracker.close();
    let left = grace.saturating_sub(began.elapsed());
    let waited = tokio::time::timeout(left.max(Duration::from_millis(100)), tracker.wait()).await;
    if drained && waited.is_ok() {
        tracing::info!("Shutdown complete.");
        Ok(ExitCode::SUCCESS)
    } else {
        tracing::warn!(grace = ?grace, "Shutdown grace period ran out; exiting with connections still open.");
        Ok(ExitCode::FAILURE)
    }
}
