//! The JSON HTTP API: publish, broadcast, batch, history, channels, presence, stats and
//! disconnect. Bodies are read with a size limit and a content-type check, and every failure is
//! an [`ApiError`].

use crate::error::status_for;
use crate::{ApiError, App};
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use herald_core::{ChannelName, ConnId, HistoryQuery, Publication, Transport};
use herald_protocol::{parse_sse_id, CloseCode, ErrorCode, StreamPosition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;

/// Most channels in one broadcast.
const MAX_BROADCAST_CHANNELS: usize = 1000;
/// Most commands in one batch.
const MAX_BATCH_COMMANDS: usize = 1000;
/// Default and largest `limit` for history; channel listings default to 1000.
const DEFAULT_LIST_LIMIT: usize = 100;
const MAX_LIST_LIMIT: usize = 10_000;

/// A JSON body: `application/json` (or no content type), at most `server.max_body` bytes.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<App> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &App) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ok = ct
                .to_str()
                .ok()
                .and_then(|s| s.split(';').next())
                .is_some_and(|s| s.trim().eq_ignore_ascii_case("application/json"));
            if !ok {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    ErrorCode::UnsupportedMediaType,
                    "the body must be application/json",
                ));
            }
        }
        let limit = usize::try_from(app.server.max_body.as_u64()).unwrap_or(usize::MAX);
        let bytes: Bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| {
                app.node.stats.refused.too_large.fetch_add(1, Relaxed);
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::TooLarge,
                    format!("the body is larger than {limit} bytes or was cut short"),
                )
            })?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            if e.is_syntax() || e.is_eof() {
                ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadJson, e.to_string())
            } else {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::BadRequest,
                    e.to_string(),
                )
            }
        })
    }
}

/// One publish command.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishBody {
    channel: String,
    event: Option<String>,
    data: Box<RawValue>,
    /// Publish at most once for this key on the channel, within `publish.idempotency_window`.
    idempotency_key: Option<String>,
}

#[derive(Debug, Serialize)]
struct Published<'a> {
    channel: &'a str,
    offset: u64,
    epoch: &'a str,
    time: u64,
}

pub(crate) fn published(p: &Publication) -> Value {
    json!(Published {
        channel: p.channel.as_str(),
        offset: p.position.offset,
        epoch: p.position.epoch.as_str(),
        time: p.time_ms,
    })
}

/// A repeat of a publish with an idempotency key: the first one's position.
fn repeated(channel: &ChannelName, position: &StreamPosition, time_ms: u64) -> Value {
    json!({
        "channel": channel.as_str(),
        "offset": position.offset,
        "epoch": position.epoch.as_str(),
        "time": time_ms,
        "duplicate": true,
    })
}

/// A validated command and, with an idempotency key, what makes it happen once.
type Command = (herald_core::Prepared, Option<herald_core::Once>);

fn command(app: &App, body: PublishBody) -> Result<Command, herald_core::PublishError> {
    let publisher = &app.node.publisher;
    let prepared = publisher.prepare(&body.channel, body.event.as_deref(), body.data)?;
    let once = match &body.idempotency_key {
        Some(key) => Some(publisher.once(&prepared, key)?),
        None => None,
    };
    Ok((prepared, once))
}

/// Publishes one command; the answer is its position (a repeat's says `duplicate`).
async fn apply(app: &App, (prepared, once): Command) -> Result<Value, herald_core::PublishError> {
    let publisher = &app.node.publisher;
    let Some(once) = once else {
        let p = publisher
            .publish(prepared, herald_core::Source::Http)
            .await?;
        return Ok(published(&p));
    };
    let channel = prepared.channel().clone();
    match publisher
        .publish_once(prepared, herald_core::Source::Http, &once)
        .await?
    {
        herald_core::Published::New(p) => Ok(published(&p)),
        herald_core::Published::Repeat { position, time_ms } => {
            Ok(repeated(&channel, &position, time_ms))
        }
    }
}

/// `POST /api/publish`.
pub(crate) async fn publish(
    State(app): State<App>,
    JsonBody(body): JsonBody<PublishBody>,
) -> Result<Json<Value>, ApiError> {
    let command = command(&app, body)?;
    Ok(Json(apply(&app, command).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BroadcastBody {
    channels: Vec<String>,
    event: Option<String>,
    data: Box<RawValue>,
}

/// `POST /api/broadcast`: one payload to many channels.
pub(crate) async fn broadcast(
    State(app): State<App>,
    JsonBody(body): JsonBody<BroadcastBody>,
) -> Result<Json<Value>, ApiError> {
    list_size("channels", body.channels.len(), MAX_BROADCAST_CHANNELS)?;
    let publisher = &app.node.publisher;
    let mut prepared = Vec::with_capacity(body.channels.len());
    for c in &body.channels {
        prepared.push((
            publisher.prepare(c, body.event.as_deref(), body.data.clone())?,
            None,
        ));
    }
    run_in_order(&app, prepared).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchBody {
    commands: Vec<PublishBody>,
}

/// `POST /api/batch`: many publish commands, validated first, then applied in order.
pub(crate) async fn batch(
    State(app): State<App>,
    JsonBody(body): JsonBody<BatchBody>,
) -> Result<Json<Value>, ApiError> {
    list_size("commands", body.commands.len(), MAX_BATCH_COMMANDS)?;
    let mut prepared = Vec::with_capacity(body.commands.len());
    for (i, c) in body.commands.into_iter().enumerate() {
        let p = command(&app, c).map_err(|e| {
            let mut err = ApiError::from(e);
            err.message = format!("commands[{i}]: {}", err.message);
            err
        })?;
        prepared.push(p);
    }
    run_in_order(&app, prepared).await
}

/// A body list must hold 1 to `max` items.
fn list_size(what: &str, len: usize, max: usize) -> Result<(), ApiError> {
    if (1..=max).contains(&len) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::BadRequest,
            format!("`{what}` must hold 1 to {max} items; it holds {len}"),
        ))
    }
}

async fn run_in_order(app: &App, prepared: Vec<Command>) -> Result<Json<Value>, ApiError> {
    let total = prepared.len();
    let mut results = Vec::with_capacity(total);
    for p in prepared {
        match apply(app, p).await {
            Ok(v) => results.push(v),
            Err(e) => {
                let mut err = ApiError::from(e);
                err.message = format!(
                    "{} ({} of {total} were applied)",
                    err.message,
                    results.len()
                );
                return Err(err);
            }
        }
    }
    Ok(Json(json!({ "results": results })))
}

fn query(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn single<'a>(q: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, ApiError> {
    let mut it = q.iter().filter(|(k, _)| k == name);
    let first = it.next().map(|(_, v)| v.as_str());
    if it.next().is_some() {
        return Err(ApiError::bad_request(format!(
            "`{name}` given more than once"
        )));
    }
    Ok(first)
}

fn only(q: &[(String, String)], allowed: &[&str]) -> Result<(), ApiError> {
    match q.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        Some((k, _)) => Err(ApiError::bad_request(format!(
            "unknown query parameter `{}`; allowed: {}",
            k.escape_debug(),
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

fn channel_param(q: &[(String, String)]) -> Result<ChannelName, ApiError> {
    let raw =
        single(q, "channel")?.ok_or_else(|| ApiError::bad_request("`channel` is required"))?;
    ChannelName::parse(raw).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::BadChannel,
            e.to_string(),
        )
    })
}

fn limit_param(q: &[(String, String)]) -> Result<usize, ApiError> {
    match single(q, "limit")? {
        None => Ok(DEFAULT_LIST_LIMIT),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_LIST_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "`limit` must be a whole number from 1 to {MAX_LIST_LIMIT}"
            ))),
        },
    }
}

/// `GET /api/history?channel=&since=&limit=`.
pub(crate) async fn history(
    State(app): State<App>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<axum::response::Response, ApiError> {
    let q = query(raw.as_deref());
    only(&q, &["channel", "since", "limit"])?;
    let channel = channel_param(&q)?;
    let limit = limit_param(&q)?;
    let since = match single(&q, "since")? {
        None => None,
        Some(s) => Some(
            parse_sse_id(s, 1)
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::BadPosition,
                        e.to_string(),
                    )
                })?
                .remove(0),
        ),
    };
    let page = app
        .node
        .history
        .read(&channel, HistoryQuery { since, limit })
        .await
        .map_err(unavailable)?;
    // Serialized straight from the stored raw JSON, so payloads come back byte for byte.
    Ok(Json(herald_core::history_result(&channel, &page)).into_response())
}

pub(crate) fn unavailable(e: herald_core::EngineError) -> ApiError {
    ApiError::new(
        status_for(ErrorCode::Unavailable),
        ErrorCode::Unavailable,
        e.to_string(),
    )
}

/// `GET /api/channels?limit=`: active channels on this node with subscriber counts.
pub(crate) async fn channels(
    State(app): State<App>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = query(raw.as_deref());
    only(&q, &["limit", "search"])?;
    let limit = match single(&q, "limit")? {
        None => 1000,
        Some(_) => limit_param(&q)?,
    };
    let search = single(&q, "search")?.unwrap_or("");
    let (found, total) = app.node.hub.channels_matching(search, limit);
    let list: Vec<Value> = found
        .into_iter()
        .map(|(c, n)| json!({"channel": c.as_str(), "subscribers": n}))
        .collect();
    Ok(Json(json!({"total": total, "channels": list})))
}

/// `GET /api/connections?user=&limit=`: this node's connections, or one user's.
pub(crate) async fn connections(
    State(app): State<App>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = query(raw.as_deref());
    only(&q, &["user", "limit"])?;
    let limit = match single(&q, "limit")? {
        None => 1000,
        Some(_) => limit_param(&q)?,
    };
    let user = single(&q, "user")?;
    if user.is_some_and(str::is_empty) {
        return Err(ApiError::bad_request("`user` is empty"));
    }
    let (list, total) = app.node.hub.connections(user, limit);
    Ok(Json(json!({"total": total, "connections": list})))
}

/// `GET /api/presence?channel=`.
pub(crate) async fn presence(
    State(app): State<App>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = query(raw.as_deref());
    only(&q, &["channel"])?;
    let channel = channel_param(&q)?;
    let mode = app.node.channels.options(&channel).presence;
    if !mode.tracked() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::PresenceDisabled,
            format!(
                "presence is not enabled for namespace {:?}",
                channel.namespace()
            ),
        ));
    }
    let members = app
        .node
        .presence
        .members(&channel)
        .await
        .map_err(unavailable)?;
    Ok(Json(json!(herald_core::roster::presence_result(
        &channel, mode, members
    ))))
}

/// `GET /api/stats`.
pub(crate) async fn stats(State(app): State<App>) -> Json<Value> {
    let stats = &app.node.stats;
    let s = stats.snapshot();
    let (channels, subscriptions) = app.node.hub.totals();
    let per_transport =
        |f: &dyn Fn(Transport) -> Value| json!({"sse": f(Transport::Sse), "ws": f(Transport::Ws)});
    let closed = per_transport(&|t| {
        let codes: serde_json::Map<String, Value> = stats
            .connections
            .closed_counts(t)
            .into_iter()
            .map(|(code, n)| {
                let key = code.map_or_else(|| "peer".to_owned(), |c| c.code().to_string());
                (key, json!(n))
            })
            .collect();
        Value::Object(codes)
    });
    let (beyond, epoch) = stats.resets_by_reason();
    let status = app.node.broker.status();
    let mut engine = serde_json::to_value(&status).unwrap_or(Value::Null);
    engine["publish_percentiles"] = json!(status.publish_durations.percentiles());
    engine["lag_percentiles"] = json!(status.lag.percentiles());
    Json(json!({
        "node": &*app.shared.node_id,
        "uptime_seconds": s.uptime_seconds,
        "connections": {
            "ws": s.connections_ws,
            "sse": s.connections_sse,
            "total": s.connections_ws + s.connections_sse,
            "rejected": s.connections_rejected,
            "accepted": per_transport(&|t| json!(stats.connections.accepted_count(t))),
            "closed": closed,
        },
        "users": app.shared.per_user.keys(),
        "publications_by_source": herald_core::Source::ALL
            .iter()
            .map(|src| (src.as_str().to_owned(), json!(stats.published.from(*src))))
            .collect::<serde_json::Map<String, Value>>(),
        "delivered": per_transport(&|t| json!(stats.writes.messages(t))),
        "written_bytes": per_transport(&|t| json!(stats.writes.bytes(t))),
        "delivery_latency": stats.writes.delivery_latency.snapshot().percentiles(),
        "resumes_reset": stats.resume_resets.load(Relaxed),
        "resets_by_reason": {"beyond_retention": beyond, "epoch_changed": epoch},
        "refused": s.refused,
        "channels": channels,
        "subscriptions": subscriptions,
        "publications": s.publications,
        "deliveries": s.deliveries,
        "slow_consumer_evictions": s.slow_consumer_evictions,
        "write_timeouts": crate::write_timeouts::WRITE_TIMEOUTS.load(Relaxed),
        "resumes": s.resumes,
        "resets": s.resets,
        "memory": { "rss_bytes": rss_bytes() },
        "engine": engine,
        "ingest": app.shared.webhooks.stats(),
        "connectors": app.shared.connectors.list.iter().map(|c| c.to_json()).collect::<Vec<_>>(),
    }))
}

/// This process's resident memory, from `/proc/self/status` (Linux); `null` elsewhere.
pub(crate) fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DisconnectBody {
    conn_id: Option<String>,
    channel: Option<String>,
    user: Option<String>,
    #[serde(default = "yes")]
    reconnect: bool,
}

fn yes() -> bool {
    true
}

/// `POST /api/disconnect`: closes one connection (`conn_id`) or every subscriber of a channel
/// on this node (`channel`), telling them to reconnect or not.
pub(crate) async fn disconnect(
    State(app): State<App>,
    JsonBody(body): JsonBody<DisconnectBody>,
) -> Result<Json<Value>, ApiError> {
    let code = if body.reconnect {
        CloseCode::DisconnectReconnect
    } else {
        CloseCode::DisconnectTerminal
    };
    let n = match (&body.conn_id, &body.channel, &body.user) {
        (None, None, Some(user)) if !user.is_empty() => app.node.hub.close_user(user, code),
        (Some(id), None, None) => {
            let Some(conn) = ConnId::parse(id) else {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::BadRequest,
                    "conn_id is 16 lowercase hex digits",
                ));
            };
            usize::from(app.node.hub.close_conn(conn, code))
        }
        (None, Some(c), None) => {
            let c = ChannelName::parse(c).map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::BadChannel,
                    e.to_string(),
                )
            })?;
            app.node.hub.close_channel(&c, code)
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::BadRequest,
                "give exactly one of conn_id, channel and user (not empty)",
            ))
        }
    };
    Ok(Json(json!({ "disconnected": n })))
}
