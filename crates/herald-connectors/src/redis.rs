//! `[[connectors.redis]]`: events that programs put on a Redis they already have, whatever
//! engine Herald runs on.
//!
//! - **`patterns`** (at most once): PSUBSCRIBE, and each message, which must be JSON, is
//!   published to the Herald channel of the same name (or a template). Redis pub/sub keeps
//!   nothing: what is published while the connector is disconnected, or what a full queue
//!   drops (counted as `dropped`), is gone. Use the stream where that matters.
//! - **`stream`** (lossless): entries with the fields `channel`, `data` (JSON) and optionally
//!   `event` and `id` are read as the consumer group `group`. Each is published with the
//!   idempotency key `redis:NAME:ENTRY_ID` (or `redis:NAME:ID` when the entry names its own id),
//!   then acknowledged and deleted; one the node could not acknowledge before it died is read
//!   again by the next holder of the lease and published nothing the second time. An entry
//!   that can never be published moves to `STREAM:rejected` with the reason.

use crate::publish::{publish_keyed, Fate};
use crate::run::{pause, Backoff};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface, StreamsInterface};
use fred::prelude::{Builder, Client, Config as FredConfig, Value};
use herald_core::{
    ConnectorOutcome, ConnectorState, ConnectorStatus, Publisher, SecretUrl, Source,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Entries read per round.
const BATCH: u64 = 100;
/// How long a stream read blocks waiting for entries.
const BLOCK_MS: u64 = 1000;
/// Rejected entries kept for inspection.
const REJECTED_KEEP: u64 = 10_000;
/// Pub/sub messages queued between the connection and the publisher.
const MESSAGE_QUEUE: usize = 4096;

/// One `[[connectors.redis]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSourceConfig {
    /// Names the connector in stats, logs and its lease.
    pub name: String,
    /// `redis://[user:password@]host:port[/db]`.
    pub url: SecretUrl,
    /// Pub/sub patterns to PSUBSCRIBE (`job_progress:*`).
    #[serde(default)]
    pub patterns: Vec<String>,
    /// The Herald channel of a pub/sub message, a template over `{channel}` (the Redis
    /// channel) and the message's fields (`{data.user}`).
    #[serde(default = "default_channel")]
    pub channel: String,
    /// The event name of a pub/sub message, a template like `channel` (`{data.type}`).
    #[serde(default = "default_event")]
    pub event: String,
    /// A stream read as a consumer group (lossless); empty: none.
    #[serde(default)]
    pub stream: String,
    /// The consumer group's name.
    #[serde(default = "default_group")]
    pub group: String,
}

fn default_channel() -> String {
    "{channel}".to_owned()
}
fn default_event() -> String {
    "message".to_owned()
}
fn default_group() -> String {
    "herald".to_owned()
}

/// Every problem with the Redis connectors, for `check-config`. `engine_prefix` is the Redis
/// engine's key prefix, when the engine is Redis.
pub(crate) fn problems(
    configs: &[RedisSourceConfig],
    engine_prefix: Option<&str>,
    out: &mut Vec<String>,
) {
    for (i, c) in configs.iter().enumerate() {
        let at = format!("connectors.redis[{i}]");
        // fred also parses other schemes (http://...) as a Redis address: ask for Redis's own.
        let scheme_ok = c.url.starts_with("redis://") || c.url.starts_with("rediss://");
        if !scheme_ok || FredConfig::from_url(&c.url).is_err() {
            out.push(format!(
                "{at}.url is not a Redis URL (redis://host:port/db, or rediss:// for TLS)"
            ));
        }
        if c.patterns.is_empty() && c.stream.is_empty() {
            out.push(format!("{at} needs patterns, a stream, or both"));
        }
        if c.patterns.iter().any(String::is_empty) {
            out.push(format!("{at}.patterns must not hold an empty pattern"));
        }
        for (what, t) in [("channel", &c.channel), ("event", &c.event)] {
            if let Err(e) = herald_core::template::check(t) {
                out.push(format!("{at}.{what}: {e}"));
            }
        }
        if !c.stream.is_empty() && c.group.is_empty() {
            out.push(format!("{at}.group must not be empty"));
        }
        if let Some(prefix) = engine_prefix {
            if c.stream == format!("{prefix}:ingest") {
                out.push(format!(
                    "{at}.stream {:?} is the Redis engine's own worker stream, which the engine already reads; name another stream",
                    c.stream
                ));
            }
        }
    }
}

/// Which side of the connector: the pub/sub patterns or the stream.
#[derive(Debug, Clone, Copy)]
enum Side {
    PubSub = 0,
    Stream = 1,
}

/// The connector is `connected` once every configured side is.
struct Sides<'a> {
    status: &'a ConnectorStatus,
    wanted: [bool; 2],
    ready: [std::sync::atomic::AtomicBool; 2],
}

impl Sides<'_> {
    fn set(&self, side: Side, ready: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        self.ready[side as usize].store(ready, Relaxed);
        let all = (0..2).all(|i| !self.wanted[i] || self.ready[i].load(Relaxed));
        self.status.set_state(if all {
            ConnectorState::Connected
        } else {
            ConnectorState::Connecting
        });
    }
}

/// Runs the connector until `token` is cancelled: pub/sub and the stream side by side.
pub(crate) async fn run(
    config: Arc<RedisSourceConfig>,
    publisher: Arc<Publisher>,
    status: Arc<ConnectorStatus>,
    own_prefix: Option<String>,
    token: CancellationToken,
) {
    let sides = Sides {
        status: &status,
        wanted: [!config.patterns.is_empty(), !config.stream.is_empty()],
        ready: Default::default(),
    };
    let sides = &sides;
    let subscribed = async {
        if !config.patterns.is_empty() {
            retrying(&config, &status, &token, (sides, Side::PubSub), || {
                patterns(
                    &config,
                    &publisher,
                    &status,
                    own_prefix.as_deref(),
                    &token,
                    sides,
                )
            })
            .await;
        }
    };
    let streamed = async {
        if !config.stream.is_empty() {
            retrying(&config, &status, &token, (sides, Side::Stream), || {
                stream(&config, &publisher, &status, &token, sides)
            })
            .await;
        }
    };
    tokio::join!(subscribed, streamed);
}

/// How a session ended, when not by cancellation.
struct Ended {
    why: String,
    /// Whether it had connected (the next attempt then waits the least again).
    connected: bool,
}

/// Runs `session` again after each failure, with backoff, until it returns `Ok` (cancelled).
async fn retrying<F, Fut>(
    config: &RedisSourceConfig,
    status: &ConnectorStatus,
    token: &CancellationToken,
    (sides, side): (&Sides<'_>, Side),
    mut session: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Ended>>,
{
    let mut backoff = Backoff::default();
    let mut first = true;
    let what = match side {
        Side::PubSub => "pub/sub",
        Side::Stream => "stream",
    };
    while !token.is_cancelled() {
        sides.set(side, false);
        if !first {
            status.reconnected();
        }
        first = false;
        match session().await {
            Ok(()) => return,
            Err(e) => {
                if e.connected {
                    backoff.reset();
                }
                status.error(&e.why);
                let wait = backoff.next();
                tracing::warn!(connector = %config.name, what, error = %e.why, retry_in = ?wait, "Redis connector lost its connection; reconnecting.");
                if !pause(token, wait).await {
                    return;
                }
            }
        }
    }
}

/// A client for `url` that does not reconnect by itself (the connector does, with backoff
/// and a count), connected.
async fn connect(url: &str) -> Result<(Client, fred::types::ConnectHandle), String> {
    let config = FredConfig::from_url(url).map_err(|e| format!("url: {e}"))?;
    let client = Builder::from_config(config)
        .with_connection_config(|c| c.connection_timeout = Duration::from_secs(5))
        .with_performance_config(|p| p.broadcast_channel_capacity = MESSAGE_QUEUE)
        .build()
        .map_err(|e| e.to_string())?;
    let handle = client.connect();
    client
        .wait_for_connect()
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    Ok((client, handle))
}

async fn patterns(
    config: &RedisSourceConfig,
    publisher: &Publisher,
    status: &ConnectorStatus,
    own_prefix: Option<&str>,
    token: &CancellationToken,
    sides: &Sides<'_>,
) -> Result<(), Ended> {
    let lost = |why: String| Ended {
        why,
        connected: false,
    };
    let (client, mut handle) = connect(&config.url).await.map_err(lost)?;
    let mut messages = client.message_rx();
    client
        .psubscribe(config.patterns.clone())
        .await
        .map_err(|e| lost(format!("PSUBSCRIBE: {e}")))?;
    sides.set(Side::PubSub, true);
    tracing::info!(connector = %config.name, patterns = ?config.patterns, "Redis connector subscribed (pub/sub is at most once: messages published while it is disconnected are lost).");
    let ended = loop {
        let message = tokio::select! {
            () = token.cancelled() => break None,
            m = messages.recv() => m,
            r = &mut handle => break Some(match r {
                Ok(Err(e)) => e.to_string(),
                _ => "the connection closed".to_owned(),
            }),
        };
        let message = match message {
            Ok(m) => m,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                status.add("dropped", n);
                tracing::error!(connector = %config.name, dropped = n, "Redis pub/sub messages arrived faster than they could be published; these were dropped.");
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                break Some("the connection closed".to_owned())
            }
        };
        let channel = message.channel.to_string();
        if own_prefix.is_some_and(|p| channel.starts_with(p) && channel[p.len()..].starts_with(':'))
        {
            // The Redis engine's own traffic on the same Redis: never read back.
            continue;
        }
        let Some(payload) = message.value.as_str().map(|s| s.into_owned()) else {
            reject(config, status, "the message is not text".to_owned());
            continue;
        };
        publish_message(config, publisher, status, token, &channel, &payload).await;
    };
    // A connection that ended has nothing to quit (fred would warn that it already stopped).
    if ended.is_none() {
        let _ = client.quit().await;
    }
    match ended {
        None => Ok(()),
        Some(why) => Err(Ended {
            why,
            connected: true,
        }),
    }
}

fn reject(config: &RedisSourceConfig, status: &ConnectorStatus, reason: String) {
    status.count(ConnectorOutcome::Rejected, 1);
    tracing::warn!(connector = %config.name, reason, "Refused a Redis message.");
}

/// Publishes one pub/sub message, waiting out an engine that cannot take it now (the
/// messages behind it queue up to [`MESSAGE_QUEUE`]).
async fn publish_message(
    config: &RedisSourceConfig,
    publisher: &Publisher,
    status: &ConnectorStatus,
    token: &CancellationToken,
    redis_channel: &str,
    payload: &str,
) {
    let data: serde_json::Value = match serde_json::from_str(payload) {
        Ok(d) => d,
        Err(e) => return reject(config, status, format!("the message is not JSON: {e}")),
    };
    let doc = serde_json::json!({"channel": redis_channel, "data": data});
    let mapped = herald_core::template::render(&config.channel, &doc)
        .and_then(|c| Ok((c, herald_core::template::render(&config.event, &doc)?)));
    let (channel, event) = match mapped {
        Ok(m) => m,
        Err(reason) => return reject(config, status, reason),
    };
    let mut backoff = Backoff::default();
    loop {
        let raw = match RawValue::from_string(payload.to_owned()) {
            Ok(r) => r,
            Err(e) => return reject(config, status, e.to_string()),
        };
        let prepared = match publisher.prepare(&channel, Some(&event), raw) {
            Ok(p) => p,
            Err(e) => return reject(config, status, e.to_string()),
        };
        match publisher.publish(prepared, Source::RedisConnector).await {
            Ok(_) => return status.count(ConnectorOutcome::Published, 1),
            Err(e) => match crate::publish::refusal(e) {
                Ok(reason) => return reject(config, status, reason),
                Err(e) => {
                    status.error(&e);
                    if !pause(token, backoff.next()).await {
                        tracing::error!(connector = %config.name, channel, "A Redis message was not published before shutdown.");
                        return;
                    }
                }
            },
        }
    }
}

async fn stream(
    config: &RedisSourceConfig,
    publisher: &Publisher,
    status: &ConnectorStatus,
    token: &CancellationToken,
    sides: &Sides<'_>,
) -> Result<(), Ended> {
    let (client, mut handle) = connect(&config.url).await.map_err(|why| Ended {
        why,
        connected: false,
    })?;
    let key = config.stream.as_str();
    let made: Result<Value, _> = client.xgroup_create(key, &config.group, "0", true).await;
    if let Err(e) = made {
        if !e.details().contains("BUSYGROUP") {
            return Err(Ended {
                why: format!("XGROUP CREATE: {e}"),
                connected: false,
            });
        }
    }
    sides.set(Side::Stream, true);
    tracing::info!(connector = %config.name, stream = key, group = %config.group, "Redis connector reading its stream.");
    // The lease makes this node the only reader, so one consumer name serves every node:
    // entries a dead holder read but did not acknowledge are this consumer's backlog.
    let consumer = "herald";
    let mut backlog = true;
    let mut engine_backoff = Backoff::default();
    let failed = |why: String| Ended {
        why,
        connected: true,
    };
    loop {
        let id = if backlog { "0" } else { ">" };
        let read = client.xreadgroup::<Value, _, _, _, _>(
            &config.group,
            consumer,
            Some(BATCH),
            (!backlog).then_some(BLOCK_MS),
            false,
            key,
            id,
        );
        let read = tokio::select! {
            () = token.cancelled() => break,
            r = read => r,
            r = &mut handle => return Err(failed(match r {
                Ok(Err(e)) => e.to_string(),
                _ => "the connection closed".to_owned(),
            })),
        };
        let read = read.map_err(|e| failed(format!("XREADGROUP: {e}")))?;
        // A blocking read that timed out answers nil: no entries, not a failure.
        let entries = if read.is_null() {
            Vec::new()
        } else {
            let mut read: fred::types::streams::XReadResponse<String, String, String, String> =
                read.into_xread_response()
                    .map_err(|e| failed(format!("XREADGROUP answer: {e}")))?;
            read.remove(key).unwrap_or_default()
        };
        if backlog && entries.is_empty() {
            backlog = false;
            continue;
        }
        status.set_lag_ms(entries.first().map_or(0, |(id, _)| age_ms(id)));
        let mut retry = None;
        for (id, fields) in &entries {
            match publish_entry(config, publisher, status, id, fields).await {
                Fate::Done { .. } => {}
                Fate::Rejected(reason) => {
                    status.count(ConnectorOutcome::Rejected, 1);
                    tracing::warn!(connector = %config.name, id, reason, "Moved a stream entry to its rejected stream.");
                    let mut kept: Vec<(String, String)> =
                        vec![("id".to_owned(), id.clone()), ("error".to_owned(), reason)];
                    kept.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
                    let _: Value = client
                        .xadd(
                            format!("{key}:rejected"),
                            false,
                            ("MAXLEN", "~", REJECTED_KEEP),
                            "*",
                            kept,
                        )
                        .await
                        .map_err(|e| failed(format!("XADD rejected: {e}")))?;
                }
                Fate::Retry(e) => {
                    retry = Some(e);
                    break;
                }
            }
            let _: Value = client
                .xack(key, &config.group, id.as_str())
                .await
                .map_err(|e| failed(format!("XACK: {e}")))?;
            let _: Value = client
                .xdel(key, id.as_str())
                .await
                .map_err(|e| failed(format!("XDEL: {e}")))?;
        }
        status.set_lag_ms(0);
        if let Some(e) = retry {
            // The entry stays pending, and is read first next time.
            backlog = true;
            status.error(&e);
            let wait = engine_backoff.next();
            tracing::warn!(connector = %config.name, error = %e, retry_in = ?wait, "Cannot publish stream entries now; they stay pending.");
            if !pause(token, wait).await {
                break;
            }
        } else {
            engine_backoff.reset();
        }
    }
    let _ = client.quit().await;
    Ok(())
}

/// How old an entry is, from its id's milliseconds.
fn age_ms(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse::<u64>().ok())
        .map_or(0, |ms| herald_core::now_ms().saturating_sub(ms))
}

async fn publish_entry(
    config: &RedisSourceConfig,
    publisher: &Publisher,
    status: &ConnectorStatus,
    id: &str,
    fields: &HashMap<String, String>,
) -> Fate {
    let Some(channel) = fields.get("channel") else {
        return Fate::Rejected("the entry has no channel field".to_owned());
    };
    let Some(data) = fields.get("data") else {
        return Fate::Rejected("the entry has no data field".to_owned());
    };
    let data = match RawValue::from_string(data.clone()) {
        Ok(d) => d,
        Err(e) => return Fate::Rejected(format!("data is not JSON: {e}")),
    };
    let key = format!(
        "redis:{}:{}",
        config.name,
        fields.get("id").map_or(id, String::as_str)
    );
    let event = (
        channel.as_str(),
        fields.get("event").map(String::as_str),
        data,
    );
    publish_keyed(publisher, status, Source::RedisConnector, event, &key).await
}
