//! Bounded NATS calls: every call gets a deadline, and failures become `EngineError`.

use async_nats::jetstream::consumer::{pull, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::{self, stream::Stream};
use futures_util::StreamExt;
use herald_core::EngineError;
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

/// Runs `fut` for at most `limit`; a timeout is `Unavailable(what)`.
pub(crate) async fn within<F: Future>(
    limit: Duration,
    what: &'static str,
    fut: F,
) -> Result<F::Output, EngineError> {
    tokio::time::timeout(limit, fut).await.map_err(|_| {
        tracing::debug!(call = what, "NATS call timed out.");
        EngineError::Unavailable(what)
    })
}

/// Logs a failed NATS call and turns it into `Unavailable(what)`.
pub(crate) fn unavailable(what: &'static str) -> impl FnOnce(&dyn Display) -> EngineError {
    move |error| {
        tracing::debug!(call = what, error = %error, "NATS call failed.");
        EngineError::Unavailable(what)
    }
}

/// Runs `fut` for at most `limit` and maps any error to `Unavailable(what)`.
pub(crate) async fn call<T, E: Display, F: Future<Output = Result<T, E>>>(
    limit: Duration,
    what: &'static str,
    fut: F,
) -> Result<T, EngineError> {
    within(limit, what, fut)
        .await?
        .map_err(|e| unavailable(what)(&e))
}

/// Reads the messages of `stream` on `filter` with a short-lived ordered consumer, oldest first:
/// at most `max`, none with a sequence above `stop_seq`, and ending once the consumer has nothing
/// pending. Used where a read spans more than a few messages. The consumer is deleted afterwards
/// rather than left for the server to drop after 30 s of inactivity.
pub(crate) async fn scan(
    stream: &Stream,
    filter: String,
    deliver_policy: DeliverPolicy,
    stop_seq: Option<u64>,
    max: usize,
    limit: Duration,
) -> Result<Vec<(u64, jetstream::Message)>, EngineError> {
    const WHAT: &str = "nats scan failed";
    let config = pull::OrderedConfig {
        filter_subject: filter,
        deliver_policy,
        replay_policy: ReplayPolicy::Instant,
        ..Default::default()
    };
    let consumer = call(limit, WHAT, stream.create_consumer(config)).await?;
    let name = consumer.cached_info().name.clone();
    let pending = consumer.cached_info().num_pending;
    let read = async move {
        let mut out = Vec::new();
        if pending == 0 {
            return Ok(out);
        }
        let mut messages = consumer.messages().await?;
        while let Some(message) = messages.next().await {
            let message = message?;
            let info = message.info()?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            if stop_seq.is_some_and(|stop| seq > stop) {
                break;
            }
            out.push((seq, message));
            if pending == 0 || stop_seq == Some(seq) || out.len() >= max {
                break;
            }
        }
        Ok::<_, async_nats::Error>(out)
    };
    let out = call(limit, WHAT, read).await;
    if let Err(error) = call(limit, WHAT, stream.delete_consumer(&name)).await {
        tracing::debug!(error = %error, "Could not delete a scan consumer; the server drops it when idle.");
    }
    out
}
