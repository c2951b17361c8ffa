//! Herald's HTTP edge: the axum router (SSE, WebSocket, JSON API, health) and the accept loop
//! that serves it with per-connection timeouts and graceful shutdown.
//!
//! Only this crate knows HTTP, WebSocket or SSE. Engine logic lives in herald-core; the binary
//! builds the [`App`] and calls [`serve`].

mod admin;
mod admission;
mod api;
mod app_proxy;
mod auth;
mod client_addr;
mod config;
mod direct;
mod error;
mod gate;
mod health;
mod ingest;
mod instrumented;
mod lifecycle;
mod limits;
mod listener;
mod metrics;
mod repoll;
mod scratch;
mod sdk;
mod sse;
mod timer;
mod tokens;
mod write_timeouts;
mod ws;

pub use admin::{hash_password, AdminConfig};
pub use app_proxy::{signature, HttpProxy, ProxyConfig};
pub use config::{exact_size, ApiKey, AuthConfig, ServerConfig, SseConfig, WsConfig};
pub use error::ApiError;
pub use ingest::{webhook_problems, WebhookConfig};
pub use listener::serve;

use axum::routing::{get, post};
use axum::Router;
use herald_auth::{Minter, TokenVerifier};
use herald_core::{KeyedBuckets, Node, SessionLimits};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Everything the handlers share.
#[derive(Debug, Clone)]
pub struct App {
    /// The engine parts.
    pub node: Node,
    /// Listener and HTTP settings.
    pub server: Arc<ServerConfig>,
    /// SSE settings.
    pub sse: Arc<SseConfig>,
    /// WebSocket settings.
    pub ws: Arc<WsConfig>,
    /// Per-connection bounds.
    pub limits: SessionLimits,
    /// Who may use the HTTP API.
    pub auth: Arc<AuthConfig>,
    /// Cancelled when the node shuts down (after the drain window).
    pub shutdown: CancellationToken,
    /// Cancelled when the drain before shutdown begins (SIGTERM); a child of `shutdown`, so
    /// also cancelled by it.
    pub draining: CancellationToken,
    /// Tracks connection tasks so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// What every connection and request shares but an open connection's task need not hold
    /// inline (one pointer instead of one per field).
    shared: Arc<Shared>,
}

/// The parts of [`App`] behind one pointer.
#[derive(Debug)]
struct Shared {
    connections: Arc<Semaphore>,
    per_ip: Arc<limits::IpLimiter>,
    per_user: Arc<herald_core::UserLimiter>,
    /// Verifies connection tokens; None when no token keys are configured.
    tokens: Option<Arc<TokenVerifier>>,
    /// Signs tokens for Telegram logins; None without an HMAC secret.
    minter: Option<Arc<Minter>>,
    /// Request buckets per API key (`requests_per_second`).
    api_rates: Arc<KeyedBuckets>,
    /// Telegram login buckets per remote address.
    login_rates: Arc<KeyedBuckets>,
    /// Reverse proxies whose `X-Forwarded-For` is believed.
    trusted_proxies: Arc<client_addr::TrustedProxies>,
    /// This node's id in hellos (random per process).
    node_id: Arc<str>,
    /// HTTP API requests by route and status, with durations (`/metrics`).
    http_metrics: Arc<metrics::HttpMetrics>,
    /// The admin page's logins; None while it is off.
    admin: Option<admin::Admin>,
    /// Webhook sources (`POST /ingest/{source}`) and their counters.
    webhooks: Arc<ingest::Webhooks>,
    /// The pulled connectors' states.
    connectors: Arc<herald_core::Connectors>,
}

/// The settings the HTTP edge runs with, as configured.
#[derive(Debug, Clone, Default)]
pub struct EdgeSettings {
    /// Listener and HTTP settings.
    pub server: ServerConfig,
    /// SSE settings.
    pub sse: SseConfig,
    /// WebSocket settings.
    pub ws: WsConfig,
    /// Per-connection bounds.
    pub limits: SessionLimits,
    /// Who may use the HTTP API.
    pub auth: AuthConfig,
    /// The admin page.
    pub admin: AdminConfig,
    /// Webhook sources (`[[connectors.webhook]]`).
    pub webhooks: Vec<WebhookConfig>,
    /// The pulled connectors' states.
    pub connectors: Arc<herald_core::Connectors>,
}

impl App {
    /// Assembles the shared state; fails when the token keys cannot be loaded.
    pub fn new(
        node: Node,
        settings: EdgeSettings,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Result<Self, Vec<String>> {
        let connections = Arc::new(Semaphore::new(settings.server.max_connections));
        let trusted_proxies = Arc::new(client_addr::TrustedProxies::parse(
            &settings.server.trusted_proxies,
        )?);
        let per_ip = limits::IpLimiter::new(settings.server.max_connections_per_ip);
        let per_user = herald_core::UserLimiter::new(settings.limits.max_per_user);
        let tokens = if settings.auth.token.configured() {
            Some(Arc::new(TokenVerifier::new(&settings.auth.token)?))
        } else {
            None
        };
        let minter = Minter::from_config(&settings.auth.token).map(Arc::new);
        let admin = admin::Admin::new(&settings.admin, &settings.auth.api_keys);
        let api_rates = Arc::new(KeyedBuckets::new(0, 1.0, 4096));
        let login_rates = Arc::new(KeyedBuckets::new(
            settings.auth.telegram.logins_per_minute_per_ip,
            60.0,
            100_000,
        ));
        Ok(Self {
            node,
            server: Arc::new(settings.server),
            sse: Arc::new(settings.sse),
            ws: Arc::new(settings.ws),
            limits: settings.limits,
            auth: Arc::new(settings.auth),
            draining: shutdown.child_token(),
            shutdown,
            tracker,
            shared: Arc::new(Shared {
                connections,
                per_ip,
                per_user,
                tokens,
                minter,
                api_rates,
                login_rates,
                trusted_proxies,
                node_id: herald_core::new_epoch().to_string().into(),
                http_metrics: Arc::default(),
                admin,
                webhooks: ingest::Webhooks::new(&settings.webhooks),
                connectors: settings.connectors.clone(),
            }),
        })
    }
}

/// Serves only `GET /metrics`, without the API's authentication, on `listener` (`metrics.listen`:
/// an address scrapers inside the network reach) until the node shuts down.
pub async fn serve_metrics(listener: tokio::net::TcpListener, app: App) -> std::io::Result<()> {
    let stop = app.shutdown.clone();
    let router = Router::new()
        .route("/metrics", get(metrics::metrics))
        .fallback(error::not_found)
        .with_state(app);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

/// The router with every route.
pub fn router(app: App) -> Router {
    let cors = config::cors_layer(&app.server.cors_allowed_origins);
    let api = Router::new()
        .route("/api/publish", post(api::publish))
        .route("/api/broadcast", post(api::broadcast))
        .route("/api/batch", post(api::batch))
        .route("/api/history", get(api::history))
        .route("/api/channels", get(api::channels))
        .route("/api/presence", get(api::presence))
        .route("/api/connections", get(api::connections))
        .route("/api/stats", get(api::stats))
        .route("/api/disconnect", post(api::disconnect))
        .route("/metrics", get(metrics::metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::require_api_key,
        ))
        .route_layer(metrics::Track(app.shared.http_metrics.clone()));
    Router::new()
        .route("/sse", get(sse::handler))
        .route("/ws", get(ws::handler))
        .merge(api)
        .route("/ingest/{source}", post(ingest::ingest))
        .route("/auth/telegram", post(tokens::telegram_login))
        .route("/auth/refresh", post(tokens::refresh))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/sdk/herald.js", get(sdk::bundle))
        .merge(admin::routes(&app))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(cors)
        .with_state(app)
}
