//! The worker stream: any program with a Redis connection publishes by adding an entry to
//! `PREFIX:ingest` with the fields `channel`, `data` (JSON) and optionally `event`. Nodes read
//! it as one consumer group. The publish script records the entry's id in the channel's
//! dedupe set in the same step that publishes it, and the entry is acknowledged after; a node
//! that dies in between leaves the entry pending, another node claims it after
//! [`CLAIM_IDLE`], and the script refuses the second publish. So each entry is published
//! exactly once, on a single Redis and on a cluster alike (no script spans two slots).
//! Entries that cannot be published (bad channel, bad JSON, too large) are moved to
//! `PREFIX:ingest:rejected` with the reason.

use crate::engine::RedisEngine;
use fred::interfaces::{ClientLike, StreamsInterface};
use fred::prelude::{Client, Value};
use fred::types::{ClusterHash, CustomCommand};
use herald_core::{EngineError, Publisher};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Consumer group name shared by all nodes.
const GROUP: &str = "herald";
/// Entries read per round.
const BATCH: u64 = 100;
/// How long a read blocks waiting for new entries.
const BLOCK_MS: u64 = 1000;
/// A pending entry idle this long (its node died) is claimed by another node.
const CLAIM_IDLE: Duration = Duration::from_secs(30);
/// How long published entry ids are remembered: far beyond the time a pending entry waits
/// before it is claimed.
const DEDUPE_WINDOW: Duration = Duration::from_secs(3600);
/// Wait before reading again after a failed round.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// Rejected entries kept for inspection.
const REJECTED_KEEP: u64 = 10_000;

/// Reads failing this long are logged as a warning (shorter outages, such as a Redis restart
/// the engine already reports, only at debug).
const FAILING_TOLD_AFTER: Duration = Duration::from_secs(10);

/// Reads have been failing since `since`; `told`: the warning was logged.
struct Failing {
    since: tokio::time::Instant,
    told: bool,
}

struct Entry {
    id: String,
    fields: Vec<(String, String)>,
}

impl Entry {
    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses an XREADGROUP / XAUTOCLAIM entry list.
fn entries(list: Value) -> Vec<Entry> {
    list.into_array()
        .into_iter()
        .filter_map(|e| {
            let mut e = e.into_array().into_iter();
            let id = e.next()?.as_str()?.into_owned();
            let flat = e.next()?.into_array();
            let fields = flat
                .chunks(2)
                .filter_map(|kv| {
                    Some((
                        kv.first()?.as_str()?.into_owned(),
                        kv.get(1)?.as_str()?.into_owned(),
                    ))
                })
                .collect();
            Some(Entry { id, fields })
        })
        .collect()
}

/// Runs the consumer until `token` is cancelled.
pub(crate) async fn run(
    engine: Arc<RedisEngine>,
    publisher: Arc<Publisher>,
    token: CancellationToken,
) {
    // Blocking reads need a connection of their own, reconnecting as the engine's does (a
    // client without that policy stops for good when Redis restarts).
    let client = engine.client.clone_new();
    let _ = client.init().await;
    let stream = format!("{}:ingest", engine.config.prefix);
    let consumer = format!("node-{:016x}", fastrand::u64(..));
    let mut claim_next = tokio::time::Instant::now();
    let mut backlog = true;
    // The group is (re)created at start and after any failed round (Redis may have restarted
    // empty), not on every read.
    let mut group_ready = false;
    let mut failing: Option<Failing> = None;
    loop {
        if token.is_cancelled() || publisher.is_closed() {
            break;
        }
        let round = async {
            if !group_ready {
                ensure_group(&client, &stream).await?;
                group_ready = true;
            }
            let mut batch = Vec::new();
            if tokio::time::Instant::now() >= claim_next {
                claim_next = tokio::time::Instant::now() + CLAIM_IDLE / 3;
                let claimed: Value = client
                    .custom(
                        CustomCommand::new_static("XAUTOCLAIM", ClusterHash::FirstKey, false),
                        vec![
                            stream.clone(),
                            GROUP.to_owned(),
                            consumer.clone(),
                            CLAIM_IDLE.as_millis().to_string(),
                            "0-0".to_owned(),
                            "COUNT".to_owned(),
                            BATCH.to_string(),
                        ],
                    )
                    .await?;
                batch.extend(entries(
                    claimed
                        .into_array()
                        .into_iter()
                        .nth(1)
                        .unwrap_or(Value::Null),
                ));
            }
            if batch.is_empty() {
                // Our own pending entries first (a failed round leaves them there), then new.
                let id = if backlog { "0" } else { ">" };
                let mut args = vec![
                    "GROUP".to_owned(),
                    GROUP.to_owned(),
                    consumer.clone(),
                    "COUNT".to_owned(),
                    BATCH.to_string(),
                ];
                if !backlog {
                    args.extend(["BLOCK".to_owned(), BLOCK_MS.to_string()]);
                }
                args.extend(["STREAMS".to_owned(), stream.clone(), id.to_owned()]);
                // Routed by the stream's slot (the key is not the first argument).
                let slot = fred::util::redis_keyslot(stream.as_bytes());
                let read: Value = client
                    .custom(CustomCommand::new_static("XREADGROUP", slot, true), args)
                    .await?;
                let got = read
                    .into_array()
                    .into_iter()
                    .next()
                    .map(|s| entries(s.into_array().into_iter().nth(1).unwrap_or(Value::Null)))
                    .unwrap_or_default();
                if backlog && got.is_empty() {
                    backlog = false;
                }
                batch = got;
            }
            Ok::<_, fred::error::Error>(batch)
        };
        let batch = tokio::select! {
            () = token.cancelled() => break,
            b = round => b,
        };
        let batch = match batch {
            Ok(b) => {
                if failing.take().is_some_and(|f| f.told) {
                    tracing::info!(stream, "Reading the worker stream again.");
                }
                b
            }
            Err(e) => {
                let f = failing.get_or_insert(Failing {
                    since: tokio::time::Instant::now(),
                    told: false,
                });
                if !f.told && f.since.elapsed() >= FAILING_TOLD_AFTER {
                    f.told = true;
                    tracing::warn!(stream, error = %e, "The worker stream cannot be read; its entries wait in Redis until it can. Retrying.");
                } else {
                    tracing::debug!(error = %e, "Worker stream read failed; retrying.");
                }
                backlog = true;
                group_ready = false;
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(RETRY_AFTER) => continue,
                }
            }
        };
        let mut failed = false;
        for entry in batch {
            if let Err(e) = handle(&engine, &publisher, &client, &stream, &entry).await {
                tracing::debug!(error = %e, id = entry.id, "Publishing a worker entry failed; it stays pending.");
                failed = true;
                break;
            }
        }
        if failed {
            // The entry stays pending and is read again; wait first, so a node whose engine is
            // not ready does not spin.
            backlog = true;
            tokio::select! {
                () = token.cancelled() => break,
                () = tokio::time::sleep(RETRY_AFTER) => {}
            }
        }
    }
    let _ = client.quit().await;
}

/// Creates the consumer group if it is missing, reading the stream from its start: handled
/// entries are deleted, so whatever the stream holds was added while no group existed (before
/// the first node started, or while a restarted Redis had none yet) and must be published. An
/// entry handled but not yet deleted when its node died is published again at most as a
/// duplicate the publish script refuses (`DEDUPE_WINDOW`).
async fn ensure_group(client: &Client, stream: &str) -> Result<(), fred::error::Error> {
    let made: Result<Value, _> = client.xgroup_create(stream, GROUP, "0", true).await;
    match made {
        Err(e) if !e.details().contains("BUSYGROUP") => Err(e),
        _ => Ok(()),
    }
}

async fn handle(
    engine: &RedisEngine,
    publisher: &Publisher,
    client: &Client,
    stream: &str,
    entry: &Entry,
) -> Result<(), EngineError> {
    let prepared = entry
        .get("data")
        .ok_or_else(|| "the entry has no data field".to_owned())
        .and_then(|d| {
            RawValue::from_string(d.to_owned()).map_err(|e| format!("data is not JSON: {e}"))
        })
        .and_then(|data| {
            let channel = entry
                .get("channel")
                .ok_or("the entry has no channel field")?;
            publisher
                .prepare(channel, entry.get("event"), data)
                .map_err(|e| e.to_string())
        });
    let prepared = match prepared {
        Ok(p) => p,
        Err(reason) => {
            engine.remote.health().count("ingest_rejected", 1);
            tracing::warn!(id = entry.id, reason, "Rejected a worker stream entry.");
            let mut fields: Vec<(String, String)> = vec![
                ("id".to_owned(), entry.id.clone()),
                ("error".to_owned(), reason),
            ];
            fields.extend(entry.fields.iter().cloned());
            let rejected = format!("{stream}:rejected");
            let _: Value = client
                .xadd(
                    &rejected,
                    false,
                    ("MAXLEN", "~", REJECTED_KEEP),
                    "*",
                    fields,
                )
                .await
                .map_err(|_| EngineError::Unavailable("redis engine unreachable"))?;
            return ack(client, stream, &entry.id).await;
        }
    };
    let retention = publisher.retention(prepared.channel());
    let (channel, event, data) = prepared.into_parts();
    match engine
        .publish_deduped(
            &channel,
            &event,
            &data,
            retention,
            Some((&entry.id, DEDUPE_WINDOW)),
        )
        .await?
    {
        Some(_) => {
            publisher.count_published(herald_core::Source::RedisIngest, event.as_str());
            engine.remote.health().count("ingested", 1);
        }
        None => engine.remote.health().count("ingest_duplicates", 1),
    }
    ack(client, stream, &entry.id).await
}

/// Acknowledges and deletes a handled entry.
async fn ack(client: &Client, stream: &str, id: &str) -> Result<(), EngineError> {
    let acked: Result<Value, _> = client.xack(stream, GROUP, id).await;
    let deleted: Result<Value, _> = client.xdel(stream, id).await;
    acked
        .and(deleted)
        .map(|_| ())
        .map_err(|_| EngineError::Unavailable("redis engine unreachable"))
}
