//! `GET /metrics`: the node's counters in Prometheus's text format (0.0.4).
//!
//! The values are the same atomics `/api/stats` reads (nothing is counted twice); this module
//! only writes them out. It writes the format itself rather than through a client library:
//! the counters already exist as relaxed atomics on the hot paths, and the Rust client that
//! would own them (`prometheus-client`) writes OpenMetrics, whose counter families Debian's
//! `promtool check metrics` (2.42) rejects.

use crate::App;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use herald_core::{HistogramSnapshot, Transport, BUCKETS_US};
use herald_protocol::CloseCode;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

/// The content type of the text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A Prometheus text exposition being written.
#[derive(Default)]
pub(crate) struct Exposition {
    out: String,
}

/// Escapes a label value (backslash, double quote, line feed).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

impl Exposition {
    /// Starts a family: its help line and type.
    pub(crate) fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample of the current family.
    pub(crate) fn sample(
        &mut self,
        name: &str,
        pairs: &[(&str, &str)],
        value: impl std::fmt::Display,
    ) {
        let _ = writeln!(self.out, "{name}{} {value}", labels(pairs));
    }

    /// A family with a single unlabelled sample.
    pub(crate) fn single(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        value: impl std::fmt::Display,
    ) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// One labelled histogram of the current family (the family line is written by the caller).
    pub(crate) fn histogram(&mut self, name: &str, pairs: &[(&str, &str)], h: &HistogramSnapshot) {
        let mut cumulative = 0;
        for (i, bound) in BUCKETS_US.iter().enumerate() {
            cumulative += h.counts[i];
            #[allow(clippy::cast_precision_loss)]
            let le = format!("{}", *bound as f64 / 1e6);
            let mut with = pairs.to_vec();
            with.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &with, cumulative);
        }
        cumulative += h.counts[BUCKETS_US.len()];
        let mut with = pairs.to_vec();
        with.push(("le", "+Inf"));
        self.sample(&format!("{name}_bucket"), &with, cumulative);
        #[allow(clippy::cast_precision_loss)]
        let sum = h.sum_us as f64 / 1e6;
        self.sample(&format!("{name}_sum"), pairs, sum);
        self.sample(&format!("{name}_count"), pairs, cumulative);
    }

    pub(crate) fn finish(self) -> String {
        self.out
    }
}

/// The routes counted by name; any other is `other`.
const ROUTES: [&str; 13] = [
    "/api/publish",
    "/api/broadcast",
    "/api/batch",
    "/api/history",
    "/api/channels",
    "/api/presence",
    "/api/stats",
    "/api/connections",
    "/api/disconnect",
    "/metrics",
    "/auth/telegram",
    "/auth/refresh",
    "other",
];

/// The statuses counted by code; any other is counted as `other`.
const STATUSES: [u16; 14] = [
    200, 304, 400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 500, 503,
];

/// HTTP API requests by route and status, and their durations by route: fixed tables of
/// relaxed atomics (no lock on a request's path; labels bounded by the tables).
#[derive(Debug, Default)]
pub(crate) struct HttpMetrics {
    /// Per route, per status (the last slot: any other status).
    requests: [[AtomicU64; STATUSES.len() + 1]; ROUTES.len()],
    durations: [herald_core::Histogram; ROUTES.len()],
}

/// The route index of a request: its matched path, one of the router's own.
fn route_index(req: &Request) -> usize {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(req.uri().path(), MatchedPath::as_str);
    ROUTES
        .iter()
        .position(|r| *r == path)
        .unwrap_or(ROUTES.len() - 1)
}

/// A layer that counts each API request and times it. A plain tower service rather than an
/// axum `from_fn` middleware: that one clones the service inside it for every request (here the
/// API-key check, which holds the whole `App`), which cost a publish a quarter of its speed.
#[derive(Clone)]
pub(crate) struct Track(pub(crate) Arc<HttpMetrics>);

impl<S> tower::Layer<S> for Track {
    type Service = Tracked<S>;
    fn layer(&self, inner: S) -> Tracked<S> {
        Tracked {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The service [`Track`] wraps a route in.
#[derive(Clone)]
pub(crate) struct Tracked<S> {
    inner: S,
    metrics: Arc<HttpMetrics>,
}

impl<S> tower::Service<Request> for Tracked<S>
where
    S: tower::Service<Request, Response = Response> + Send,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let route = route_index(&req);
        let start = Instant::now();
        let fut = self.inner.call(req);
        let m = self.metrics.clone();
        Box::pin(async move {
            let resp = fut.await?;
            let status = resp.status().as_u16();
            let s = STATUSES
                .iter()
                .position(|c| *c == status)
                .unwrap_or(STATUSES.len());
            m.requests[route][s].fetch_add(1, Relaxed);
            m.durations[route].observe(start.elapsed());
            Ok(resp)
        })
    }
}

fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Sse => "sse",
        Transport::Ws => "ws",
    }
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(app): State<App>) -> Response {
    let mut resp = render(&app).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
    resp
}

/// Writes every metric of the node.
pub(crate) fn render(app: &App) -> String {
    let mut x = Exposition::default();
    let s = app.node.stats.snapshot();
    let (channels, subscriptions) = app.node.hub.totals();

    x.family("herald_build_info", "gauge", "Herald's version, always 1.");
    x.sample(
        "herald_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    x.single(
        "herald_uptime_seconds",
        "gauge",
        "Seconds since this node started.",
        s.uptime_seconds,
    );
    if let Some(rss) = crate::api::rss_bytes() {
        x.single(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of the process in bytes.",
            rss,
        );
    }

    x.family(
        "herald_connections",
        "gauge",
        "Open client connections by transport.",
    );
    x.sample(
        "herald_connections",
        &[("transport", "sse")],
        s.connections_sse,
    );
    x.sample(
        "herald_connections",
        &[("transport", "ws")],
        s.connections_ws,
    );
    let counts = &app.node.stats.connections;
    x.family(
        "herald_connections_accepted_total",
        "counter",
        "Client connections accepted, by transport.",
    );
    for t in [Transport::Sse, Transport::Ws] {
        x.sample(
            "herald_connections_accepted_total",
            &[("transport", transport_name(t))],
            counts.accepted_count(t),
        );
    }
    x.family(
        "herald_connections_closed_total",
        "counter",
        "Client connections closed, by transport and the server's close code (`peer`: the client closed or went away).",
    );
    let mut heartbeat_timeouts = 0;
    for t in [Transport::Sse, Transport::Ws] {
        for (code, n) in counts.closed_counts(t) {
            let label = code.map_or_else(|| "peer".to_owned(), |c| c.code().to_string());
            if code == Some(CloseCode::HeartbeatTimeout) {
                heartbeat_timeouts += n;
            }
            x.sample(
                "herald_connections_closed_total",
                &[("transport", transport_name(t)), ("code", &label)],
                n,
            );
        }
    }
    x.single(
        "herald_heartbeat_timeouts_total",
        "counter",
        "WebSocket connections closed because the peer sent nothing for ws.idle_timeout (4002).",
        heartbeat_timeouts,
    );
    x.single(
        "herald_channels",
        "gauge",
        "Channels with a subscriber on this node.",
        channels,
    );
    x.single(
        "herald_users",
        "gauge",
        "Distinct users (token subjects) with an open connection on this node (counted while connection.max_per_user is set).",
        app.shared.per_user.keys(),
    );
    x.single(
        "herald_subscriptions",
        "gauge",
        "Subscriptions held by this node's connections.",
        subscriptions,
    );

    x.family(
        "herald_refused_total",
        "counter",
        "Requests and connections refused, by cause (a limit, a permission, a full node).",
    );
    x.sample(
        "herald_refused_total",
        &[("cause", "server_full")],
        s.connections_rejected,
    );
    if let Ok(serde_json::Value::Object(causes)) = serde_json::to_value(&s.refused) {
        for (cause, n) in causes {
            x.sample("herald_refused_total", &[("cause", &cause)], n);
        }
    }

    let published = &app.node.stats.published;
    x.family(
        "herald_publications_total",
        "counter",
        "Publications accepted by this node, by source (http: the HTTP API; client: WebSocket publishes; redis_ingest: the Redis engine's worker stream; webhook: signed webhook deliveries; postgres, twitch, redis_connector: the connectors).",
    );
    for source in herald_core::Source::ALL {
        x.sample(
            "herald_publications_total",
            &[("source", source.as_str())],
            published.from(source),
        );
    }
    let (events, other) = published.by_event();
    x.family(
        "herald_publications_by_event_total",
        "counter",
        "Publications accepted by this node, by event name: the first 100 names seen, every later one as `other`.",
    );
    for (event, n) in &events {
        x.sample("herald_publications_by_event_total", &[("event", event)], n);
    }
    x.sample(
        "herald_publications_by_event_total",
        &[("event", "other")],
        other,
    );
    x.single(
        "herald_deliveries_total",
        "counter",
        "Publications queued to subscribers' connections.",
        s.deliveries,
    );
    let writes = &app.node.stats.writes;
    x.family(
        "herald_delivered_total",
        "counter",
        "Publications written to subscribers' connections, by transport.",
    );
    for t in [Transport::Sse, Transport::Ws] {
        x.sample(
            "herald_delivered_total",
            &[("transport", transport_name(t))],
            writes.messages(t),
        );
    }
    x.family(
        "herald_written_bytes_total",
        "counter",
        "Bytes written to subscribers' connections (publications and every other push), by transport.",
    );
    for t in [Transport::Sse, Transport::Ws] {
        x.sample(
            "herald_written_bytes_total",
            &[("transport", transport_name(t))],
            writes.bytes(t),
        );
    }
    x.family(
        "herald_delivery_latency_seconds",
        "histogram",
        "From a publication accepted by this node (or received from the engine) to its bytes handed to a subscriber's connection; sampled, one written batch in 8.",
    );
    x.histogram(
        "herald_delivery_latency_seconds",
        &[],
        &writes.delivery_latency.snapshot(),
    );
    x.single(
        "herald_slow_consumer_evictions_total",
        "counter",
        "Connections closed because they fell too far behind (4001).",
        s.slow_consumer_evictions,
    );
    x.single(
        "herald_write_timeouts_total",
        "counter",
        "Connections dropped because their socket took nothing for server.write_timeout.",
        crate::write_timeouts::WRITE_TIMEOUTS.load(Relaxed),
    );
    let resume_resets = app.node.stats.resume_resets.load(Relaxed);
    x.family(
        "herald_resumes_total",
        "counter",
        "Subscriptions that resumed from a position, by result: recovered (everything missed was replayed) or reset.",
    );
    x.sample(
        "herald_resumes_total",
        &[("result", "recovered")],
        s.resumes.saturating_sub(resume_resets),
    );
    x.sample(
        "herald_resumes_total",
        &[("result", "reset")],
        resume_resets,
    );
    let (beyond, epoch) = app.node.stats.resets_by_reason();
    x.family(
        "herald_resets_total",
        "counter",
        "Reset notices sent (on a resume or a live gap that history could not fill), by reason.",
    );
    x.sample(
        "herald_resets_total",
        &[("reason", "beyond_retention")],
        beyond,
    );
    x.sample("herald_resets_total", &[("reason", "epoch_changed")], epoch);

    let engine = app.node.broker.status();
    x.family(
        "herald_engine_ready",
        "gauge",
        "Whether the engine may take work (1) or not (0).",
    );
    x.sample(
        "herald_engine_ready",
        &[("kind", engine.kind)],
        u8::from(engine.ready),
    );
    x.family(
        "herald_engine_state",
        "gauge",
        "The engine connection's state: 1 for the current one.",
    );
    for state in ["embedded", "connected", "connecting", "disconnected"] {
        x.sample(
            "herald_engine_state",
            &[("state", state)],
            u8::from(engine.state == state),
        );
    }
    x.single(
        "herald_engine_reconnects_total",
        "counter",
        "Times the connection to the engine was re-established.",
        engine.reconnects,
    );
    x.family(
        "herald_engine_publish_duration_seconds",
        "histogram",
        "Publish round trips to the engine (Redis, NATS; none for the embedded engine).",
    );
    x.histogram(
        "herald_engine_publish_duration_seconds",
        &[],
        &engine.publish_durations,
    );
    x.family(
        "herald_engine_lag_seconds",
        "histogram",
        "From a publication's time on the node that published it to its arrival here from the engine (cross-node lag; needs synchronised clocks).",
    );
    x.histogram("herald_engine_lag_seconds", &[], &engine.lag);
    x.family(
        "herald_engine_events_total",
        "counter",
        "Engine events: recoveries after lost messages, ingested entries and the like.",
    );
    for (event, n) in &engine.counters {
        x.sample("herald_engine_events_total", &[("event", event)], n);
    }

    x.family(
        "herald_ingest_deliveries_total",
        "counter",
        "Webhook deliveries (POST /ingest/SOURCE) by source and outcome; source \"\" counts unknown sources.",
    );
    for (source, counts) in app.shared.webhooks.counts() {
        for (outcome, n) in counts {
            x.sample(
                "herald_ingest_deliveries_total",
                &[("source", source), ("outcome", outcome)],
                n,
            );
        }
    }
    x.sample(
        "herald_ingest_deliveries_total",
        &[("source", ""), ("outcome", "unknown_source")],
        app.shared.webhooks.unknown(),
    );

    connector_metrics(&mut x, &app.shared.connectors);

    let http = &app.shared.http_metrics;
    x.family(
        "herald_http_requests_total",
        "counter",
        "HTTP API requests by route and status.",
    );
    for (route, row) in ROUTES.iter().zip(&http.requests) {
        for (i, n) in row.iter().enumerate() {
            let n = n.load(Relaxed);
            if n == 0 {
                continue;
            }
            let status = STATUSES
                .get(i)
                .map_or_else(|| "other".to_owned(), u16::to_string);
            x.sample(
                "herald_http_requests_total",
                &[("route", route), ("status", &status)],
                n,
            );
        }
    }
    x.family(
        "herald_http_request_duration_seconds",
        "histogram",
        "HTTP API request durations by route.",
    );
    for (route, h) in ROUTES.iter().zip(&http.durations) {
        let h = h.snapshot();
        if h.count() > 0 {
            x.histogram(
                "herald_http_request_duration_seconds",
                &[("route", route)],
                &h,
            );
        }
    }
    x.finish()
}

/// Each pulled connector's state, events, errors, reconnects and lag.
fn connector_metrics(x: &mut Exposition, connectors: &herald_core::Connectors) {
    use herald_core::{ConnectorOutcome, ConnectorState};
    let list = &connectors.list;
    fn id(c: &herald_core::ConnectorStatus) -> [(&'static str, &str); 2] {
        [("kind", c.kind), ("name", c.name.as_str())]
    }
    x.family(
        "herald_connector_up",
        "gauge",
        "1 while the connector is connected to its source on this node.",
    );
    for c in list {
        x.sample(
            "herald_connector_up",
            &id(c),
            u8::from(c.state() == ConnectorState::Connected),
        );
    }
    x.family(
        "herald_connector_leader",
        "gauge",
        "1 while this node holds the connector's lease (runs it); another node stands by.",
    );
    for c in list {
        x.sample("herald_connector_leader", &id(c), u8::from(c.leader()));
    }
    x.family(
        "herald_connector_events_total",
        "counter",
        "Source events by outcome: published, duplicate (already published, nothing sent), rejected (set aside with the reason), and kind-specific counts.",
    );
    for c in list {
        let [kind, name] = id(c);
        for o in ConnectorOutcome::ALL {
            x.sample(
                "herald_connector_events_total",
                &[kind, name, ("outcome", o.as_str())],
                c.counted(o),
            );
        }
        for (k, n) in c.extra() {
            x.sample(
                "herald_connector_events_total",
                &[kind, name, ("outcome", k)],
                n,
            );
        }
    }
    x.family(
        "herald_connector_errors_total",
        "counter",
        "Connector errors: failed connections, reads and publishes (the last is in /api/stats).",
    );
    for c in list {
        x.sample("herald_connector_errors_total", &id(c), c.errors());
    }
    x.family(
        "herald_connector_reconnects_total",
        "counter",
        "Connections to the source made again after the first (lost connections, watchdogs, hand-offs).",
    );
    for c in list {
        x.sample("herald_connector_reconnects_total", &id(c), c.reconnects());
    }
    x.family(
        "herald_connector_lag_seconds",
        "gauge",
        "Age of the oldest event the connector has read but not yet published (0 when caught up).",
    );
    for c in list {
        #[allow(clippy::cast_precision_loss)]
        let lag = c.lag_ms() as f64 / 1e3;
        x.sample("herald_connector_lag_seconds", &id(c), lag);
    }
    x.family(
        "herald_connector_last_event_timestamp_seconds",
        "gauge",
        "Unix time of the connector's last event on this node (0 before the first).",
    );
    for c in list {
        x.sample(
            "herald_connector_last_event_timestamp_seconds",
            &id(c),
            c.last_event_ms() / 1000,
        );
    }
}
