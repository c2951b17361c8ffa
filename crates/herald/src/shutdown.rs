//! Turns SIGINT and SIGTERM into cancellation of a token: the server's drain token, which
//! begins the drain before shutdown. The handlers are installed
//! before the server announces its address, so a signal sent right after that line still
//! shuts down gracefully.

use tokio_util::sync::CancellationToken;

/// Installed signal handlers.
#[derive(Debug)]
pub(crate) struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

/// Installs the SIGINT and SIGTERM handlers.
pub(crate) fn install() -> std::io::Result<Signals> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
    #[cfg(not(unix))]
    {
        Ok(Signals {})
    }
}

impl Signals {
    /// Waits for a signal, then cancels `root`. Returns early if `root` is cancelled for
    /// another reason (the drain token is a child of the node's root token).
    pub(crate) async fn cancel_on_signal(mut self, root: CancellationToken) -> anyhow::Result<()> {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received; shutting down."),
            _ = self.int.recv() => tracing::info!("SIGINT received; shutting down."),
            () = root.cancelled() => return Ok(()),
        }
        #[cfg(not(unix))]
        tokio::select! {
            r = tokio::signal::ctrl_c() => { r?; tracing::info!("Ctrl-C received; shutting down."); }
            () = root.cancelled() => return Ok(()),
        }
        root.cancel();
        Ok(())
    }
}
