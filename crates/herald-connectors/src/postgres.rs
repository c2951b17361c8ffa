//! `[[connectors.postgres]]`: changes in Postgres become channel events.
//!
//! - **Outbox** (the default, lossless): the application calls `herald_publish(channel,
//!   event, data)` inside its own transaction. The function takes a per-channel transaction
//!   lock, inserts a row into `herald_outbox` and sends a NOTIFY that only wakes the
//!   connector. Because the lock is held until commit, a later row of a channel is committed
//!   after an earlier one, so the connector, reading committed rows in id order, reads each
//!   channel in commit order, and a row that commits late is never skipped (there is no
//!   cursor: published rows are deleted). Each row is published with the idempotency key
//!   `postgres:NAME:TABLE_OID:ID`, so a row published just before a crash, and read again
//!   after it, publishes nothing the second time. A row that can never be published moves
//!   to `herald_rejected` with the reason.
//! - **Trigger**: LISTEN on existing NOTIFY channels and map each JSON payload to a channel
//!   and event by template. NOTIFY delivers only to sessions listening at commit, so what is
//!   sent while the connector is disconnected is lost (counted as reconnects).

use crate::publish::{publish_keyed, refusal, Fate};
use crate::run::{pause, Backoff};
use futures_util::StreamExt;
use herald_core::{
    ConnectorOutcome, ConnectorState, ConnectorStatus, Publisher, SecretUrl, Source,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_postgres::{AsyncMessage, Client, NoTls};
use tokio_util::sync::CancellationToken;

/// The NOTIFY channel `herald_publish` wakes the connector on.
const WAKE_CHANNEL: &str = "herald_outbox";
/// Trigger payloads queued between the connection and the publisher; when full the
/// connection is not read, so Postgres holds the rest (backpressure, not a buffer).
const TRIGGER_QUEUE: usize = 1024;

/// How a Postgres connector reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PostgresMode {
    /// `herald_publish()` into an outbox table: lossless, in commit order per channel.
    #[default]
    Outbox,
    /// LISTEN to existing triggers' NOTIFYs: lost while disconnected.
    Trigger,
}

/// One `[[connectors.postgres]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Names the connector in stats, logs and its lease.
    pub name: String,
    /// `postgres://user:password@host:port/database`.
    pub url: SecretUrl,
    /// `outbox` or `trigger`.
    #[serde(default)]
    pub mode: PostgresMode,
    /// Outbox: the schema of `herald_outbox`, `herald_rejected` and `herald_publish()`.
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Outbox: create the table, the rejected table and the function when missing.
    #[serde(default = "yes")]
    pub create: bool,
    /// Outbox: most rows read at once.
    #[serde(default = "default_batch")]
    pub batch: u32,
    /// Outbox: how often the table is read when no NOTIFY woke the connector.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Trigger: the NOTIFY channels to LISTEN on.
    #[serde(default)]
    pub listen: Vec<String>,
    /// Trigger: the Herald channel, a template over the payload (`{table}:{data.room_id}`).
    #[serde(default)]
    pub channel: String,
    /// Trigger: the event name, a template over the payload (`{action}`).
    #[serde(default = "default_event")]
    pub event: String,
    /// Trigger: the payload field published as data (`data`); empty: the whole payload.
    #[serde(default)]
    pub data: String,
}

fn default_schema() -> String {
    "public".to_owned()
}
fn yes() -> bool {
    true
}
fn default_batch() -> u32 {
    500
}
fn default_poll() -> Duration {
    Duration::from_secs(1)
}
fn default_event() -> String {
    "message".to_owned()
}

fn identifier_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

/// Every problem with the Postgres connectors, for `check-config`.
pub(crate) fn problems(configs: &[PostgresConfig], out: &mut Vec<String>) {
    for (i, c) in configs.iter().enumerate() {
        let at = format!("connectors.postgres[{i}]");
        if c.url.parse::<tokio_postgres::Config>().is_err() {
            out.push(format!(
                "{at}.url is not a Postgres URL (postgres://user@host:port/database)"
            ));
        }
        match c.mode {
            PostgresMode::Outbox => {
                if !identifier_ok(&c.schema) {
                    out.push(format!(
                        "{at}.schema must be letters, digits and '_' (not starting with a digit)"
                    ));
                }
                if !(1..=10_000).contains(&c.batch) {
                    out.push(format!("{at}.batch must be 1 to 10000"));
                }
                if c.poll_interval < Duration::from_millis(10) {
                    out.push(format!("{at}.poll_interval must be at least 10ms"));
                }
                if !c.listen.is_empty() || !c.channel.is_empty() || !c.data.is_empty() {
                    out.push(format!(
                        "{at}: listen, channel and data belong to mode = \"trigger\"; the outbox names channels in herald_publish()"
                    ));
                }
            }
            PostgresMode::Trigger => {
                if c.listen.is_empty() {
                    out.push(format!("{at}.listen must name at least one NOTIFY channel"));
                }
                for l in &c.listen {
                    if !identifier_ok(l) {
                        out.push(format!("{at}.listen {l:?} must be letters, digits and '_'"));
                    }
                }
                for (what, t) in [("channel", &c.channel), ("event", &c.event)] {
                    if let Err(e) = herald_core::template::check(t) {
                        out.push(format!("{at}.{what}: {e}"));
                    }
                }
            }
        }
    }
}

/// The outbox's SQL objects, created when missing (and the function replaced, so an upgrade
/// of Herald updates it).
fn setup_sql(schema: &str) -> String {
    format!(
        r#"
SELECT pg_advisory_xact_lock(hashtext('herald_setup'));
CREATE SCHEMA IF NOT EXISTS "{schema}";
CREATE TABLE IF NOT EXISTS "{schema}".herald_outbox (
    id bigserial PRIMARY KEY,
    channel text NOT NULL,
    event text NOT NULL DEFAULT 'message',
    data jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS "{schema}".herald_rejected (
    id bigint PRIMARY KEY,
    channel text NOT NULL,
    event text NOT NULL,
    data jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    reason text NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE OR REPLACE FUNCTION "{schema}".herald_publish(channel text, event text, data jsonb)
RETURNS bigint LANGUAGE plpgsql AS $herald$
DECLARE
    new_id bigint;
BEGIN
    -- Held until this transaction ends: a later publication on the channel gets a larger id
    -- and commits after this one, so id order is commit order per channel.
    PERFORM pg_advisory_xact_lock(hashtext('herald_outbox'), hashtext($1));
    INSERT INTO "{schema}".herald_outbox (channel, event, data)
        VALUES ($1, coalesce($2, 'message'), $3) RETURNING id INTO new_id;
    PERFORM pg_notify('{WAKE_CHANNEL}', '');
    RETURN new_id;
END
$herald$;
"#
    )
}

/// Connects, and drives the connection on its own task: notifications go to `on_notify`.
/// The returned receiver resolves when the connection ends.
async fn connect(
    url: &str,
    on_notify: impl Fn(tokio_postgres::Notification) -> NotifyAction + Send + 'static,
) -> Result<(Client, tokio::sync::oneshot::Receiver<String>), tokio_postgres::Error> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await?;
    let (ended_tx, ended) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        let why = loop {
            match messages.next().await {
                Some(Ok(AsyncMessage::Notification(n))) => match on_notify(n) {
                    NotifyAction::Done => {}
                    NotifyAction::Wait(fut) => fut.await,
                },
                Some(Ok(_)) => {}
                Some(Err(e)) => break why(&e),
                None => break "the connection closed".to_owned(),
            }
        };
        let _ = ended_tx.send(why);
    });
    Ok((client, ended))
}

/// A Postgres error with the server's message, where `Display` says only "db error".
fn why(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

/// What the connection task does after a notification.
enum NotifyAction {
    Done,
    /// Wait for this (a full queue) before reading the connection again.
    Wait(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>),
}

/// Runs the connector until `token` is cancelled, reconnecting with backoff.
pub(crate) async fn run(
    config: Arc<PostgresConfig>,
    publisher: Arc<Publisher>,
    status: Arc<ConnectorStatus>,
    token: CancellationToken,
) {
    let mut backoff = Backoff::default();
    let mut first = true;
    while !token.is_cancelled() {
        status.set_state(ConnectorState::Connecting);
        if !first {
            status.reconnected();
        }
        first = false;
        let outcome = match config.mode {
            PostgresMode::Outbox => {
                outbox(&config, &publisher, &status, &token, &mut backoff).await
            }
            PostgresMode::Trigger => {
                trigger(&config, &publisher, &status, &token, &mut backoff).await
            }
        };
        match outcome {
            Ok(()) => break,
            Err(e) => {
                status.error(&e);
                let wait = backoff.next();
                tracing::warn!(connector = %config.name, error = %e, retry_in = ?wait, "Postgres connector lost its connection; reconnecting.");
                if !pause(&token, wait).await {
                    break;
                }
            }
        }
    }
}

/// One outbox row.
struct Row {
    id: i64,
    channel: String,
    event: String,
    data: String,
}

async fn outbox(
    config: &PostgresConfig,
    publisher: &Publisher,
    status: &ConnectorStatus,
    token: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let wake = Arc::new(Notify::new());
    let w = wake.clone();
    let (client, mut ended) = connect(&config.url, move |_| {
        w.notify_one();
        NotifyAction::Done
    })
    .await
    .map_err(|e| format!("connecting: {}", why(&e)))?;
    let schema = &config.schema;
    if config.create {
        client
            .batch_execute(&format!("BEGIN; {} COMMIT;", setup_sql(schema)))
            .await
            .map_err(|e| format!("creating {schema}.herald_outbox: {}", why(&e)))?;
    }
    client
        .batch_execute(&format!("LISTEN {WAKE_CHANNEL}"))
        .await
        .map_err(|e| format!("LISTEN: {}", why(&e)))?;
    let table: u32 = client
        .query_one(
            &format!("SELECT '\"{schema}\".herald_outbox'::regclass::oid"),
            &[],
        )
        .await
        .map_err(|e| {
            format!(
                "{schema}.herald_outbox is missing ({}); set create = true or create it",
                why(&e)
            )
        })?
        .get(0);
    let read = client
        .prepare(&format!(
            "SELECT id, channel, event, data::text, \
             (extract(epoch FROM clock_timestamp() - created_at) * 1000)::float8 \
             FROM \"{schema}\".herald_outbox ORDER BY id LIMIT $1"
        ))
        .await
        .map_err(|e| format!("preparing the read: {}", why(&e)))?;
    let finish = client
        .prepare(&format!(
            "WITH moved AS (INSERT INTO \"{schema}\".herald_rejected \
               (id, channel, event, data, created_at, reason) \
               SELECT o.id, o.channel, o.event, o.data, o.created_at, r.reason \
               FROM \"{schema}\".herald_outbox o \
               JOIN unnest($2::bigint[], $3::text[]) AS r(id, reason) ON o.id = r.id \
               ON CONFLICT (id) DO NOTHING) \
             DELETE FROM \"{schema}\".herald_outbox WHERE id = ANY($1::bigint[]) OR id = ANY($2::bigint[])"
        ))
        .await
        .map_err(|e| format!("preparing the delete: {}", why(&e)))?;
    status.set_state(ConnectorState::Connected);
    backoff.reset();
    tracing::info!(connector = %config.name, schema = %schema, "Postgres outbox connected; publishing herald_publish() calls.");
    let limit = i64::from(config.batch);
    let mut engine_backoff = Backoff::default();
    loop {
        if token.is_cancelled() {
            return Ok(());
        }
        let rows = client
            .query(&read, &[&limit])
            .await
            .map_err(|e| format!("reading the outbox: {}", why(&e)))?;
        if rows.is_empty() {
            status.set_lag_ms(0);
            tokio::select! {
                () = token.cancelled() => return Ok(()),
                () = wake.notified() => {}
                () = tokio::time::sleep(config.poll_interval) => {}
                why = &mut ended => return Err(why.unwrap_or_default()),
            }
            continue;
        }
        let age: f64 = rows[0].get(4);
        status.set_lag_ms(age.max(0.0) as u64);
        let rows: Vec<Row> = rows
            .into_iter()
            .map(|r| Row {
                id: r.get(0),
                channel: r.get(1),
                event: r.get(2),
                data: r.get(3),
            })
            .collect();
        let full = rows.len() == usize::try_from(limit).unwrap_or(usize::MAX);
        // Channels are published side by side; a channel's rows one after another, stopping
        // at the first that must wait.
        let mut groups: Vec<Vec<Row>> = Vec::new();
        let mut index = std::collections::HashMap::new();
        for row in rows {
            let i = *index.entry(row.channel.clone()).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[i].push(row);
        }
        let outcomes = futures_util::future::join_all(groups.iter().map(|rows| async move {
            let mut fates = Vec::with_capacity(rows.len());
            for row in rows {
                let fate = publish_row(config, publisher, status, table, row).await;
                let stop = matches!(fate, Fate::Retry(_));
                fates.push((row.id, fate));
                if stop {
                    break;
                }
            }
            fates
        }))
        .await;
        let (mut done, mut rejected, mut reasons, mut retry) =
            (Vec::new(), Vec::new(), Vec::new(), None);
        for (id, fate) in outcomes.into_iter().flatten() {
            match fate {
                Fate::Done { .. } => done.push(id),
                Fate::Rejected(reason) => {
                    tracing::warn!(connector = %config.name, id, reason, "Moved an outbox row to herald_rejected.");
                    status.count(ConnectorOutcome::Rejected, 1);
                    rejected.push(id);
                    reasons.push(reason);
                }
                Fate::Retry(e) => retry = Some(e),
            }
        }
        if !done.is_empty() || !rejected.is_empty() {
            client
                .execute(&finish, &[&done, &rejected, &reasons])
                .await
                .map_err(|e| format!("deleting published rows: {}", why(&e)))?;
        }
        if let Some(e) = retry {
            status.error(&e);
            let wait = engine_backoff.next();
            tracing::warn!(connector = %config.name, error = %e, retry_in = ?wait, "Cannot publish outbox rows now; they stay in the outbox.");
            if !pause(token, wait).await {
                return Ok(());
            }
        } else {
            engine_backoff.reset();
            if !full {
                // Let a burst gather rather than reading one row at a time.
                tokio::task::yield_now().await;
            }
        }
    }
}

async fn publish_row(
    config: &PostgresConfig,
    publisher: &Publisher,
    status: &ConnectorStatus,
    table: u32,
    row: &Row,
) -> Fate {
    let data = match RawValue::from_string(row.data.clone()) {
        Ok(d) => d,
        Err(e) => return Fate::Rejected(format!("data is not JSON: {e}")),
    };
    let key = format!("postgres:{}:{table}:{}", config.name, row.id);
    let event = (row.channel.as_str(), Some(row.event.as_str()), data);
    publish_keyed(publisher, status, Source::Postgres, event, &key).await
}

async fn trigger(
    config: &PostgresConfig,
    publisher: &Publisher,
    status: &ConnectorStatus,
    token: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let (tx, mut rx) = mpsc::channel::<String>(TRIGGER_QUEUE);
    let (client, mut ended) = connect(&config.url, move |n| {
        match tx.try_send(n.payload().to_owned()) {
            Ok(()) => NotifyAction::Done,
            Err(mpsc::error::TrySendError::Full(p)) => {
                let tx = tx.clone();
                NotifyAction::Wait(Box::pin(async move {
                    let _ = tx.send(p).await;
                }))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => NotifyAction::Done,
        }
    })
    .await
    .map_err(|e| format!("connecting: {}", why(&e)))?;
    for l in &config.listen {
        client
            .batch_execute(&format!("LISTEN \"{l}\""))
            .await
            .map_err(|e| format!("LISTEN {l}: {}", why(&e)))?;
    }
    status.set_state(ConnectorState::Connected);
    backoff.reset();
    tracing::info!(connector = %config.name, listen = ?config.listen, "Postgres trigger connector listening (NOTIFYs sent while it is disconnected are lost).");
    loop {
        let payload = tokio::select! {
            () = token.cancelled() => return Ok(()),
            p = rx.recv() => match p {
                Some(p) => p,
                None => return Err("the connection closed".to_owned()),
            },
            why = &mut ended => return Err(why.unwrap_or_default()),
        };
        status.set_lag_ms(0);
        publish_payload(config, publisher, status, token, &payload).await;
        let _ = &client;
    }
}

/// Publishes one NOTIFY payload, retrying while the engine cannot take it (the queue behind
/// it waits, and Postgres keeps what the connection has not read).
async fn publish_payload(
    config: &PostgresConfig,
    publisher: &Publisher,
    status: &ConnectorStatus,
    token: &CancellationToken,
    payload: &str,
) {
    let reject = |reason: String| {
        status.count(ConnectorOutcome::Rejected, 1);
        tracing::warn!(connector = %config.name, reason, "Refused a NOTIFY payload.");
    };
    let body: serde_json::Value = match serde_json::from_str(payload) {
        Ok(b) => b,
        Err(e) => return reject(format!("the payload is not JSON: {e}")),
    };
    let mapped = (|| {
        let channel = herald_core::template::render(&config.channel, &body)?;
        let event = herald_core::template::render(&config.event, &body)?;
        let data = herald_core::template::field(&body, &config.data)
            .ok_or_else(|| format!("the payload has no `{}`", config.data))?;
        let data = serde_json::value::to_raw_value(data).map_err(|e| e.to_string())?;
        Ok::<_, String>((channel, event, data))
    })();
    let (channel, event, data) = match mapped {
        Ok(m) => m,
        Err(reason) => return reject(reason),
    };
    let mut backoff = Backoff::default();
    loop {
        let prepared = match publisher.prepare(&channel, Some(&event), data.clone()) {
            Ok(p) => p,
            Err(e) => return reject(e.to_string()),
        };
        match publisher.publish(prepared, Source::Postgres).await {
            Ok(_) => return status.count(ConnectorOutcome::Published, 1),
            Err(e) => match refusal(e) {
                Ok(reason) => return reject(reason),
                Err(e) => {
                    status.error(&e);
                    if !pause(token, backoff.next()).await {
                        tracing::error!(connector = %config.name, channel, "A NOTIFY payload was not published before shutdown.");
                        return;
                    }
                }
            },
        }
    }
}
