//! What every connector shares: it runs only while this node holds its lease, and it
//! reconnects after a failure with backoff and jitter.

use herald_core::{ConnectorState, ConnectorStatus, Leases, LEASE_TTL};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// First wait after a failure.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// Longest wait between attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Waits between attempts: doubling from [`BACKOFF_FIRST`] up to [`BACKOFF_CAP`], each wait
/// drawn from the upper half of its range so that nodes do not retry in step.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The next wait.
    pub(crate) fn next(&mut self) -> Duration {
        let ceiling = BACKOFF_FIRST
            .saturating_mul(1u32 << self.failures.min(16))
            .min(BACKOFF_CAP);
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// A connection that worked: the next failure waits the least again.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Sleeps `d` unless `token` is cancelled first; false when it was.
pub(crate) async fn pause(token: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = token.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

/// Runs `work` only while this node holds the connector's lease, until `token` is cancelled.
/// The lease is renewed every third of [`LEASE_TTL`]; when it is lost (another node has it, or
/// the engine cannot confirm it for half the lease) `work`'s token is cancelled and, once it
/// returned, the node waits to take the lease again.
pub(crate) async fn lead<F, Fut>(
    leases: Arc<dyn Leases>,
    holder: String,
    status: Arc<ConnectorStatus>,
    token: CancellationToken,
    mut work: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    let name = status.lease_name();
    let every = LEASE_TTL / 3;
    let mut waiting_logged = false;
    while !token.is_cancelled() {
        match leases.hold(&name, &holder).await {
            Ok(true) => {}
            Ok(false) => {
                status.set_state(ConnectorState::Standby);
                if !waiting_logged {
                    tracing::info!(connector = %status.name, kind = status.kind, "Another node runs this connector; standing by to take over.");
                    waiting_logged = true;
                }
                if !pause(&token, every).await {
                    break;
                }
                continue;
            }
            Err(e) => {
                status.set_state(ConnectorState::Standby);
                status.error(format!("lease: {e}"));
                tracing::warn!(connector = %status.name, kind = status.kind, error = %e, "Cannot take the connector's lease; retrying.");
                if !pause(&token, every).await {
                    break;
                }
                continue;
            }
        }
        waiting_logged = false;
        status.set_leader(true);
        tracing::info!(connector = %status.name, kind = status.kind, "This node runs the connector.");
        let inner = token.child_token();
        let job = work(inner.clone());
        tokio::pin!(job);
        let mut confirmed = Instant::now();
        let mut tick = tokio::time::interval_at(Instant::now() + every, every);
        loop {
            tokio::select! {
                () = &mut job => break,
                _ = tick.tick(), if !inner.is_cancelled() => {
                    match leases.hold(&name, &holder).await {
                        Ok(true) => confirmed = Instant::now(),
                        Ok(false) => {
                            tracing::warn!(connector = %status.name, kind = status.kind, "Lost the connector's lease to another node; stopping it here.");
                            inner.cancel();
                        }
                        Err(e) => {
                            status.error(format!("lease: {e}"));
                            if confirmed.elapsed() > LEASE_TTL / 2 {
                                tracing::warn!(connector = %status.name, kind = status.kind, error = %e, "Cannot renew the connector's lease; stopping it here before it expires.");
                                inner.cancel();
                            }
                        }
                    }
                }
            }
        }
        status.set_leader(false);
        if token.is_cancelled() {
            let _ = leases.release(&name, &holder).await;
        }
    }
    status.set_state(ConnectorState::Stopped);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_and_resets() {
        let mut b = Backoff::default();
        let first = b.next();
        assert!(first >= BACKOFF_FIRST / 2 && first <= BACKOFF_FIRST);
        let second = b.next();
        assert!(second >= BACKOFF_FIRST && second <= BACKOFF_FIRST * 2);
        let mut ceiling = BACKOFF_FIRST * 2;
        for _ in 0..30 {
            ceiling = (ceiling * 2).min(BACKOFF_CAP);
            let d = b.next();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} outside {ceiling:?}"
            );
        }
        b.reset();
        assert!(b.next() <= BACKOFF_FIRST);
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_node_takes_over_when_the_first_stops() {
        let leases: Arc<dyn Leases> = Arc::new(herald_core::memory::MemoryLeases::default());
        let (a, b) = (
            ConnectorStatus::new("postgres", "app"),
            ConnectorStatus::new("postgres", "app"),
        );
        let (ta, tb) = (CancellationToken::new(), CancellationToken::new());
        let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let spawn = |status: Arc<ConnectorStatus>, token: CancellationToken, holder: &str| {
            let runs = runs.clone();
            tokio::spawn(lead(
                leases.clone(),
                holder.to_owned(),
                status,
                token,
                move |t| {
                    let runs = runs.clone();
                    async move {
                        runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        t.cancelled().await;
                    }
                },
            ))
        };
        let ja = spawn(a.clone(), ta.clone(), "a");
        tokio::time::sleep(Duration::from_millis(10)).await;
        let jb = spawn(b.clone(), tb.clone(), "b");
        tokio::time::sleep(LEASE_TTL * 2).await;
        assert!(a.leader() && !b.leader());
        assert_eq!(b.state(), ConnectorState::Standby);
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        ta.cancel();
        ja.await.unwrap();
        tokio::time::sleep(LEASE_TTL).await;
        assert!(b.leader());
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
        tb.cancel();
        jb.await.unwrap();
    }
}
