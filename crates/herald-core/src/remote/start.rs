//! Starting the shared tasks of a remote engine.

use super::backend::RemoteBackend;
use super::shared::Remote;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

impl Remote {
    /// Runs one canary, so readiness is known when this returns, then spawns on `tracker` the
    /// canary loop (which closes `backend` once `token` is cancelled), the recovery task and
    /// the re-subscription task. Call it once the engine is connected and delivering.
    pub async fn start<B: RemoteBackend>(
        self: &Arc<Self>,
        backend: Arc<B>,
        token: CancellationToken,
        tracker: &TaskTracker,
    ) {
        self.canary_once(&*backend).await;
        tracker.spawn(self.clone().recovery_loop(backend.clone(), token.clone()));
        tracker.spawn(
            self.clone()
                .resubscribe_loop(backend.clone(), token.clone()),
        );
        tracker.spawn(self.clone().canary_loop(backend, token));
    }
}
