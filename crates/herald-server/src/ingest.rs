//! `POST /ingest/{source}`: signed webhooks (a donation platform, a payment provider) become
//! publications. Each source (`[[connectors.webhook]]`) has a shared secret checked with
//! HMAC-SHA256 over the raw body (over `TIMESTAMP.BODY` when it sends a timestamp, refused
//! outside a tolerance), templates mapping body fields to the channel and event, the field
//! published as data, and the field naming the delivery, used as the idempotency key so a
//! retried delivery publishes once. No API key is asked: the signature is the credential.

use crate::{ApiError, App};
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use herald_core::Secret;
use herald_protocol::ErrorCode;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// One webhook source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Deliveries are POSTed to `/ingest/NAME`.
    pub name: String,
    /// The secret shared with the sender.
    pub secret: Secret,
    /// The header carrying the signature.
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
    /// What precedes the hex digest in that header (`sha256=`; empty for none).
    #[serde(default = "default_signature_prefix")]
    pub signature_prefix: String,
    /// The header carrying the delivery's Unix time in seconds; empty: none. With one, the
    /// signature covers `TIMESTAMP.BODY` and deliveries outside `tolerance` are refused.
    #[serde(default)]
    pub timestamp_header: String,
    /// How far a delivery's timestamp may be from the node's clock.
    #[serde(default = "default_tolerance", with = "humantime_serde")]
    pub tolerance: Duration,
    /// The channel, a template over the body: `donations:{streamer.id}`.
    pub channel: String,
    /// The event name, a template over the body.
    #[serde(default = "default_event")]
    pub event: String,
    /// The body field published as data (`a.b`); empty: the whole body.
    #[serde(default)]
    pub data: String,
    /// The body field naming the delivery (its idempotency key); empty: none.
    #[serde(default)]
    pub id: String,
}

fn default_signature_header() -> String {
    "x-signature".to_owned()
}

fn default_signature_prefix() -> String {
    "sha256=".to_owned()
}

fn default_tolerance() -> Duration {
    Duration::from_secs(300)
}

fn default_event() -> String {
    "message".to_owned()
}

/// Outcomes a delivery is counted under, in `/api/stats` and `/metrics`.
pub(crate) const OUTCOMES: [&str; 7] = [
    "published",
    "duplicate",
    "bad_signature",
    "stale",
    "too_large",
    "bad_body",
    "failed",
];

/// A source and its counters.
#[derive(Debug)]
pub(crate) struct Source {
    config: WebhookConfig,
    counts: [AtomicU64; OUTCOMES.len()],
}

/// Every source by name, and deliveries to names that are not one.
#[derive(Debug, Default)]
pub(crate) struct Webhooks {
    sources: BTreeMap<String, Source>,
    unknown: AtomicU64,
}

impl Webhooks {
    pub(crate) fn new(configs: &[WebhookConfig]) -> Arc<Self> {
        Arc::new(Self {
            sources: configs
                .iter()
                .map(|c| {
                    let source = Source {
                        config: c.clone(),
                        counts: Default::default(),
                    };
                    (c.name.clone(), source)
                })
                .collect(),
            unknown: AtomicU64::new(0),
        })
    }

    /// Per source, per outcome.
    pub(crate) fn counts(&self) -> impl Iterator<Item = (&str, [(&'static str, u64); 7])> {
        self.sources.iter().map(|(name, s)| {
            let mut out = [("", 0); 7];
            for (i, o) in OUTCOMES.iter().enumerate() {
                out[i] = (*o, s.counts[i].load(Relaxed));
            }
            (name.as_str(), out)
        })
    }

    /// Deliveries to unknown sources.
    pub(crate) fn unknown(&self) -> u64 {
        self.unknown.load(Relaxed)
    }

    /// `/api/stats`' `ingest`.
    pub(crate) fn stats(&self) -> Value {
        let sources: serde_json::Map<String, Value> = self
            .counts()
            .map(|(name, counts)| {
                let row: serde_json::Map<String, Value> = counts
                    .iter()
                    .map(|(o, n)| ((*o).to_owned(), json!(n)))
                    .collect();
                (name.to_owned(), Value::Object(row))
            })
            .collect();
        json!({"sources": sources, "unknown_source": self.unknown()})
    }
}

/// Every problem with the sources, for `check-config`.
pub fn webhook_problems(configs: &[WebhookConfig]) -> Vec<String> {
    let mut out = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, c) in configs.iter().enumerate() {
        let at = format!("connectors.webhook[{i}]");
        if c.name.is_empty()
            || !c
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            out.push(format!("{at}.name must be letters, digits, '-' or '_'"));
        } else if !names.insert(c.name.clone()) {
            out.push(format!("{at}.name {:?} is used twice", c.name));
        }
        if c.secret.len() < 16 {
            out.push(format!("{at}.secret must be at least 16 characters"));
        }
        if c.signature_header.is_empty() {
            out.push(format!("{at}.signature_header must not be empty"));
        }
        if !c.timestamp_header.is_empty() && c.tolerance.is_zero() {
            out.push(format!("{at}.tolerance must be more than 0s"));
        }
        for (what, t) in [("channel", &c.channel), ("event", &c.event)] {
            if let Err(e) = herald_core::template::check(t) {
                out.push(format!("{at}.{what}: {e}"));
            }
        }
    }
    out
}

fn refuse(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

/// `POST /ingest/{source}`.
pub(crate) async fn ingest(
    State(app): State<App>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let webhooks = &app.shared.webhooks;
    let Some(source) = webhooks.sources.get(&name) else {
        webhooks.unknown.fetch_add(1, Relaxed);
        return Err(refuse(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no webhook source {name:?}"),
        ));
    };
    let count = |outcome: &str| {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            source.counts[i].fetch_add(1, Relaxed);
        }
    };
    let (parts, body) = request.into_parts();
    // Read up to server.max_body, like the API's bodies (not axum's own default limit).
    let limit = usize::try_from(app.server.max_body.as_u64()).unwrap_or(usize::MAX);
    let outcome = match axum::body::to_bytes(body, limit).await {
        Ok(body) => deliver(&app, &source.config, &parts.headers, &body).await,
        Err(_) => Err((
            "too_large",
            refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::TooLarge,
                format!(
                    "the delivery is larger than {limit} bytes (server.max_body) or was cut short"
                ),
            ),
        )),
    };
    match &outcome {
        Ok((_, duplicate)) => count(if *duplicate { "duplicate" } else { "published" }),
        Err((outcome, _)) => count(outcome),
    }
    match outcome {
        Ok((v, _)) => Ok(Json(v)),
        Err((_, e)) => {
            tracing::debug!(source = %name, error = %e.message, "Webhook delivery refused.");
            Err(e)
        }
    }
}

type Refusal = (&'static str, ApiError);

async fn deliver(
    app: &App,
    source: &WebhookConfig,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Value, bool), Refusal> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let unauthorized = |why: String| refuse(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, why);
    let mut mac = Hmac::<Sha256>::new_from_slice(source.secret.as_bytes()).map_err(|_| {
        (
            "bad_signature",
            unauthorized("the source's secret is unusable".into()),
        )
    })?;
    if !source.timestamp_header.is_empty() {
        let sent: Option<i64> =
            header(&source.timestamp_header).and_then(|t| t.trim().parse().ok());
        let Some(sent) = sent else {
            return Err((
                "stale",
                unauthorized("the delivery has no valid timestamp".into()),
            ));
        };
        let now = i64::try_from(herald_core::now_ms() / 1000).unwrap_or(i64::MAX);
        let off = now.abs_diff(sent);
        if off > source.tolerance.as_secs() {
            return Err((
                "stale",
                unauthorized(format!(
                    "the delivery's timestamp is {off}s away from this node's clock (tolerance {}s)",
                    source.tolerance.as_secs()
                )),
            ));
        }
        mac.update(sent.to_string().as_bytes());
        mac.update(b".");
    }
    mac.update(body);
    let signature = header(&source.signature_header)
        .and_then(|s| s.trim().strip_prefix(source.signature_prefix.as_str()))
        .and_then(|hex_digest| hex::decode(hex_digest).ok());
    let Some(signature) = signature else {
        return Err((
            "bad_signature",
            unauthorized("the delivery has no valid signature".into()),
        ));
    };
    if mac.verify_slice(&signature).is_err() {
        return Err((
            "bad_signature",
            unauthorized("the signature does not match".into()),
        ));
    }
    let bad = |message: String| {
        (
            "bad_body",
            refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::BadRequest,
                message,
            ),
        )
    };
    let parsed: Value = serde_json::from_slice(body).map_err(|e| {
        (
            "bad_body",
            refuse(StatusCode::BAD_REQUEST, ErrorCode::BadJson, e.to_string()),
        )
    })?;
    let channel = herald_core::template::render(&source.channel, &parsed).map_err(bad)?;
    let event = herald_core::template::render(&source.event, &parsed).map_err(bad)?;
    let data = herald_core::template::field(&parsed, &source.data)
        .ok_or_else(|| bad(format!("the body has no field `{}`", source.data)))?;
    let data = RawValue::from_string(data.to_string()).map_err(|e| bad(e.to_string()))?;
    let key = if source.id.is_empty() {
        None
    } else {
        match herald_core::template::field(&parsed, &source.id) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(v @ Value::Number(_)) => Some(v.to_string()),
            _ => {
                return Err(bad(format!(
                    "the body has no delivery id at `{}`",
                    source.id
                )))
            }
        }
    };
    let publisher = &app.node.publisher;
    let failed = |e: herald_core::PublishError| ("failed", ApiError::from(e));
    let prepared = publisher
        .prepare(&channel, Some(&event), data)
        .map_err(|e| ("bad_body", ApiError::from(e)))?;
    let Some(key) = key else {
        let p = publisher
            .publish(prepared, herald_core::Source::Webhook)
            .await
            .map_err(failed)?;
        return Ok((crate::api::published(&p), false));
    };
    let once = publisher
        .once(&prepared, &key)
        .map_err(|e| ("bad_body", ApiError::from(e)))?;
    match publisher
        .publish_once(prepared, herald_core::Source::Webhook, &once)
        .await
        .map_err(failed)?
    {
        herald_core::Published::New(p) => Ok((crate::api::published(&p), false)),
        herald_core::Published::Repeat { position, time_ms } => Ok((
            json!({
                "channel": channel,
                "offset": position.offset,
                "epoch": position.epoch.as_str(),
                "time": time_ms,
                "duplicate": true,
            }),
            true,
        )),
    }
}
