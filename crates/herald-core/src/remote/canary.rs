//! The readiness canary: a round trip through the engine every [`CANARY_EVERY`]; the engine is
//! ready while it comes back.

use super::backend::RemoteBackend;
use super::shared::Remote;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// How often the canary goes round.
pub const CANARY_EVERY: Duration = Duration::from_millis(500);
/// How long the canary may take to come back.
pub const CANARY_WAIT: Duration = Duration::from_secs(1);

impl Remote {
    /// One round trip; records readiness and the link state from it.
    pub(super) async fn canary_once<B: RemoteBackend>(&self, backend: &B) {
        let canary = backend.canary().await;
        self.health.set_state(canary.state);
        self.health.set_ready(canary.came_back);
    }

    /// Sends the canary every [`CANARY_EVERY`] until `token` is cancelled, then closes the
    /// backend.
    pub(super) async fn canary_loop<B: RemoteBackend>(
        self: Arc<Self>,
        backend: Arc<B>,
        token: CancellationToken,
    ) {
        let first = tokio::time::Instant::now() + CANARY_EVERY;
        let mut tick = tokio::time::interval_at(first, CANARY_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                _ = tick.tick() => {}
            }
            tokio::select! {
                () = token.cancelled() => break,
                () = self.canary_once(&*backend) => {}
            }
        }
        backend.close().await;
    }
}
