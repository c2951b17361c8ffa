//! The composition root: builds the engine from the configuration, starts the server and the
//! background tasks, and runs the shutdown sequence. The only place that names a concrete
//! engine backend.

use crate::config::{Config, EngineConfig};
use crate::{shutdown, tasks};
use anyhow::Context;
use herald_core::memory::MemoryEngine;
use herald_core::{
    ChannelsConfig, ClientRules, EngineParts, Hub, KeyedBuckets, Node, NodeParts, PublisherLimits,
    Stats,
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

/// Most (namespace, user) publish buckets remembered at once.
const USER_RATE_KEYS: usize = 100_000;

/// Builds the engine parts for `config`, spawning their background tasks and the connectors
/// on `tracker`. Fails when a shared engine cannot be reached or cannot honour the
/// configuration.
pub(crate) async fn build(
    config: &Config,
    root: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<(Node, Arc<herald_core::Connectors>)> {
    let stats = Arc::new(Stats::default());
    let hub = Arc::new(Hub::with_lag(
        stats.clone(),
        config.connection.limits().outbox,
    ));
    let channels = Arc::new(ChannelsConfig {
        closed: config.auth.configured(),
        ..config.channels.clone()
    });
    let node = NodeParts {
        hub: hub.clone(),
        channels: channels.clone(),
        stats: stats.clone(),
        publish_limits: PublisherLimits {
            max_data_bytes: usize::try_from(config.publish.max_data.as_u64()).unwrap_or(usize::MAX),
            idempotency_window: config.publish.idempotency_window,
        },
    };
    let token = root.clone();
    let EngineParts {
        broker,
        history,
        presence,
        publisher,
        leases,
    } = match &config.engine {
        EngineConfig::Memory(m) => match &m.data_dir {
            None => MemoryEngine::start(m.clone(), &node, token, tracker),
            Some(dir) => {
                let started = std::time::Instant::now();
                let at = dir.clone();
                let fsync = m.fsync;
                let (journal, recovered) =
                    tokio::task::spawn_blocking(move || herald_store::open(&at, fsync))
                        .await
                        .context("opening the store")??;
                tracing::info!(
                    dir = %dir.display(),
                    channels = recovered.channels.len(),
                    publications = recovered.history_len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "Opened the store: channels continue where they were."
                );
                MemoryEngine::start_durable(
                    m.clone(),
                    &node,
                    Box::new(journal),
                    recovered,
                    token,
                    tracker,
                )
            }
        },
        EngineConfig::Redis(r) => RedisEngine::start(r.clone(), &node, token, tracker).await?,
        EngineConfig::Nats(n) => NatsEngine::start(n.clone(), &node, token, tracker).await?,
    };
    tracker.spawn(herald_core::roster::push_counts(
        hub.clone(),
        channels.clone(),
        presence.clone(),
        root.clone(),
    ));
    let proxy = if channels.uses_proxy() {
        let proxy = herald_server::HttpProxy::new(&config.proxy).map_err(anyhow::Error::msg)?;
        Some(Arc::new(proxy) as Arc<dyn herald_core::AppProxy>)
    } else {
        None
    };
    let connectors = herald_connectors::start(
        &config.connectors.pulled(&config.engine),
        &publisher,
        &leases,
        root,
        tracker,
    );
    let node = Node {
        hub,
        broker,
        history,
        presence,
        publisher,
        channels,
        stats,
        clients: Arc::new(ClientRules {
            user_rates: KeyedBuckets::new(0, 60.0, USER_RATE_KEYS),
            proxy,
        }),
    };
    Ok((node, connectors))
}

/// Runs the server until SIGINT/SIGTERM, then shuts down within the grace period.
pub(crate) async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let root = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (node, connectors) = build(&config, &root, &tracker).await?;
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
                "No API keys (auth.api_keys): the HTTP API answers loopback callers only. Behind a reverse proxy on this machine that is not listed in server.trusted_proxies every caller is loopback, so do not proxy /api/ to the outside; configure auth.api_keys before you do."
            );
        }
    }
    // One line on stdout so scripts (and tests) can find the port when listening on :0.
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "Listening on http://{addr}");
        let _ = out.flush();
    }
    let grace = config.server.shutdown_grace;
    let app = App::new(
        node.clone(),
        EdgeSettings {
            server: config.server.clone(),
            sse: config.sse.clone(),
            ws: config.ws.clone(),
            limits: config.connection.limits(),
            auth: config.auth.clone(),
            admin: config.admin.clone(),
            webhooks: config.connectors.webhook.clone(),
            connectors,
        },
        root.clone(),
        tracker.clone(),
    )
    .map_err(|errors| anyhow::anyhow!("auth.token: {}", errors.join("; ")))?;
    let router = herald_server::router(app.clone());
    if let Some(addr) = config.metrics.listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics.listen {addr}"))?;
        tracing::info!(addr = %addr, "Serving /metrics on its own address.");
        let app = app.clone();
        tasks::spawn(&tracker, "metrics-listener", async move {
            herald_server::serve_metrics(listener, app)
                .await
                .context("serving metrics.listen")
        });
    }
    // A signal begins the drain (`server.drain_window`); the server cancels `root` after it.
    tasks::spawn(
        &tracker,
        "signals",
        signals.cancel_on_signal(app.draining.clone()),
    );
    let (began_tx, began_rx) = tokio::sync::oneshot::channel();
    let draining = app.draining.clone();
    tasks::spawn(&tracker, "drain-began", async move {
        draining.cancelled().await;
        let _ = began_tx.send(tokio::time::Instant::now());
        Ok(())
    });
    // Stop publishing as soon as shutdown proper begins (after the drain window), so nothing
    // is accepted and then lost.
    let publisher = node.publisher.clone();
    let closing = root.clone();
    tasks::spawn(&tracker, "publisher-close", async move {
        closing.cancelled().await;
        publisher.close();
        Ok(())
    });
    let drained = herald_server::serve(listener, router, &app).await?;
    // The grace period counts from the signal (the drain window is part of it).
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
