//! Turns SIGINT and SIGTERM into cancellation of the root token.

use tokio_util::sync::CancellationToken;

/// Waits for SIGINT or SIGTERM, then cancels `root`. Returns early if `root` is cancelled
/// for another reason.
pub(crate) async fn on_signal(root: CancellationToken) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received; shutting down."),
            _ = int.recv() => tracing::info!("SIGINT received; shutting down."),
            () = root.cancelled() => return Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::select! {
            r = tokio::signal::ctrl_c() => { r?; tracing::info!("Ctrl-C received; shutting down."); }
            () = root.cancelled() => return Ok(()),
        }
    }
    root.cancel();
    Ok(())
}
