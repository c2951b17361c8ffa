//! Recovery: re-reads each received channel's history from the last position seen and fans
//! out what this node missed. Sessions drop what they already had by offset, so the engine's
//! own delivery is never trusted to be complete.

use super::backend::RemoteBackend;
use super::shared::{Remote, RETRY_AFTER};
use crate::{ChannelName, EngineError, HistoryQuery, Outgoing};
use futures_util::StreamExt;
use herald_protocol::StreamPosition;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

impl Remote {
    /// Runs a recovery whenever one is wanted (a lost message, a re-subscription after a
    /// reconnect), retrying until every channel was read: a channel skipped would stay silent
    /// until its next publication.
    pub(super) async fn recovery_loop<B: RemoteBackend>(
        self: Arc<Self>,
        backend: Arc<B>,
        token: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                () = self.recovery_wanted.notified() => {}
            }
            loop {
                let complete = tokio::select! {
                    () = token.cancelled() => return,
                    complete = self.recover(&*backend) => complete,
                };
                if complete {
                    break;
                }
                tracing::warn!(engine = B::KIND, "Recovery from history failed; retrying.");
                // Backoff before the next pass, not synchronisation.
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(RETRY_AFTER) => {}
                }
            }
        }
    }

    /// One pass over every received channel. Returns false when some channel could not be
    /// read.
    async fn recover<B: RemoteBackend>(&self, backend: &B) -> bool {
        self.health.count("recoveries", 1);
        let results: Vec<_> = futures_util::stream::iter(self.last_seen.snapshot())
            .map(|(channel, since)| self.recover_channel(backend, channel, since))
            .buffer_unordered(B::RECOVER_CONCURRENCY.max(1))
            .collect()
            .await;
        let mut recovered = 0;
        let mut complete = true;
        for result in results {
            match result {
                Ok(n) => recovered += n,
                Err(_) => complete = false,
            }
        }
        if complete {
            tracing::info!(engine = B::KIND, recovered, "Recovered from history.");
        }
        complete
    }

    /// Fans out what `channel` has after `since`; returns how many publications that was.
    async fn recover_channel<B: RemoteBackend>(
        &self,
        backend: &B,
        channel: ChannelName,
        since: StreamPosition,
    ) -> Result<u64, EngineError> {
        let channel = &channel;
        let read = |query| async move {
            backend.read(channel, query).await.inspect_err(|e| {
                tracing::debug!(channel = %channel, error = %e, "Recovery read failed.");
            })
        };
        let page = read(HistoryQuery {
            since: Some(since),
            limit: B::RECOVER_LIMIT,
        })
        .await?;
        let publications = if page.reset.is_none() {
            page.publications
        } else {
            // The gap cannot be filled from here: hand subscribers the newest publication, so
            // each session finds the gap itself and sends its clients a reset.
            let newest = read(HistoryQuery {
                since: None,
                limit: 1,
            })
            .await?;
            self.last_seen.saw(channel, &page.top);
            newest.publications
        };
        let n = publications.len() as u64;
        self.health.count("recovered_publications", n);
        for p in publications {
            self.deliver(channel, &Outgoing::Publication(p));
        }
        Ok(n)
    }
}
