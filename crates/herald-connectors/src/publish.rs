//! How a connector publishes one event: at most once for a key naming its place in the
//! source, counted on the connector, and sorted into what is done, what can never be
//! published and what may be published later.

use herald_core::{
    ConnectorOutcome, ConnectorStatus, EngineError, PublishError, Published, Publisher, Source,
};
use serde_json::value::RawValue;

/// What became of an event.
pub(crate) enum Fate {
    /// Published now (`new`), or before (a repeat of its key): the source may forget it.
    Done {
        /// Published now.
        new: bool,
    },
    /// Can never be published (a bad channel, too large): set it aside with the reason.
    Rejected(String),
    /// The engine cannot take it now: keep it, and what follows it on its channel.
    Retry(String),
}

/// Publishes `data` on `channel` as `event` once for `key` (see [`Publisher::publish_once`]).
pub(crate) async fn publish_keyed(
    publisher: &Publisher,
    status: &ConnectorStatus,
    source: Source,
    (channel, event, data): (&str, Option<&str>, Box<RawValue>),
    key: &str,
) -> Fate {
    let prepared = match publisher.prepare(channel, event, data) {
        Ok(p) => p,
        Err(e) => return Fate::Rejected(e.to_string()),
    };
    let once = match publisher.once(&prepared, key) {
        Ok(o) => o,
        Err(e) => return Fate::Rejected(e.to_string()),
    };
    match publisher.publish_once(prepared, source, &once).await {
        Ok(Published::New(_)) => {
            status.count(ConnectorOutcome::Published, 1);
            Fate::Done { new: true }
        }
        Ok(Published::Repeat { .. }) => {
            status.count(ConnectorOutcome::Duplicate, 1);
            Fate::Done { new: false }
        }
        Err(e) => match refusal(e) {
            Ok(reason) => Fate::Rejected(reason),
            Err(e) => Fate::Retry(e),
        },
    }
}

/// Whether a refused publish can never succeed (`Ok(reason)`) or may later (`Err`).
pub(crate) fn refusal(e: PublishError) -> Result<String, String> {
    match e {
        PublishError::ShuttingDown
        | PublishError::Engine(
            EngineError::Unavailable(_)
            | EngineError::Storage(_)
            | EngineError::Start { .. }
            | EngineError::Config(_),
        ) => Err(e.to_string()),
        other => Ok(other.to_string()),
    }
}
