//! `spawn`: every background task goes through here, so it is tracked (shutdown waits for it),
//! runs in its own span, and has its failure logged.

use std::future::Future;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Spawns `fut` on `tracker` under a span named after the task.
pub(crate) fn spawn<F>(tracker: &TaskTracker, name: &'static str, fut: F)
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let span = tracing::info_span!("task", name);
    tracker.spawn(
        async move {
            if let Err(error) = fut.await {
                tracing::error!(error = %format!("{error:#}"), "Task failed.");
            }
        }
        .instrument(span),
    );
}
