//! Re-subscription after a reconnect, followed by a recovery of what was published while the
//! connection was down.

use super::backend::RemoteBackend;
use super::shared::{Remote, RETRY_AFTER};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

impl Remote {
    /// Re-subscribes whenever a reconnect asks for it ([`Remote::reconnected`]), retrying until
    /// it succeeds, then asks for a recovery.
    pub(super) async fn resubscribe_loop<B: RemoteBackend>(
        self: Arc<Self>,
        backend: Arc<B>,
        token: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                () = self.resubscribe_wanted.notified() => {}
            }
            loop {
                let done = tokio::select! {
                    () = token.cancelled() => return,
                    done = backend.resubscribe() => done,
                };
                match done {
                    Ok(()) => {
                        self.recovery_wanted.notify_one();
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(
                            engine = B::KIND,
                            error = %error,
                            "Re-subscribing after a reconnect failed; trying again."
                        );
                        // Again after the next reconnect, or after the backoff.
                        tokio::select! {
                            () = token.cancelled() => return,
                            () = self.resubscribe_wanted.notified() => {}
                            () = tokio::time::sleep(RETRY_AFTER) => {}
                        }
                    }
                }
            }
        }
    }
}
