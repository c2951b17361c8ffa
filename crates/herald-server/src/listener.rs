//! The accept loop: hyper HTTP/1.1 with upgrades, a header read timeout (slow request heads are
//! cut off), a write timeout on every socket (a client that stops reading cannot pin a
//! connection forever), and graceful shutdown.

use crate::{direct, App};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::io;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_io_timeout::TimeoutStream;
use tower::ServiceExt;

/// Serves `router` on `listener` until `app.shutdown` is cancelled, then closes idle
/// connections and waits (up to the grace period) for the rest. Returns false when the grace
/// period ran out with connections still open.
pub async fn serve(listener: TcpListener, router: Router, app: &App) -> io::Result<bool> {
    let graceful = GracefulShutdown::new();
    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(app.server.header_read_timeout)
        .max_buf_size(64 * 1024);
    // Shared: the builder is a few hundred bytes, and each connection's task would otherwise
    // hold its own copy for its whole life.
    let http = std::sync::Arc::new(http);
    let write_timeout = app.server.write_timeout;
    // The drain (SIGTERM) paces the goodbyes, then cancels `app.shutdown`, which ends this loop.
    app.tracker.spawn(crate::lifecycle::drain(app.clone()));
    loop {
        let (tcp, peer) = tokio::select! {
            () = app.shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and similar: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let http = http.clone();
        let watcher = graceful.watcher();
        let header_timeout = app.server.header_read_timeout;
        let shutdown = app.shutdown.clone();
        app.tracker.spawn(async move {
            // Awaited where it is made: binding it first would store the future twice.
            let tcp =
                match direct::try_serve(tcp, &router, header_timeout, write_timeout, &shutdown)
                    .await
                {
                    direct::Outcome::Served => return,
                    direct::Outcome::Hyper(tcp) => tcp,
                };
            // Boxed: hyper's connection future is several KB, and held inline it would make
            // every connection's task that large, including the SSE streams served above.
            Box::pin(serve_with_hyper(
                tcp,
                router,
                http,
                watcher,
                write_timeout,
                peer,
            ))
            .await;
        });
    }
    drop(listener);
    // Every SSE and WebSocket connection learns of shutdown through its outbox: one pass here
    // instead of a cancellation check in every connection's loop on every wake-up.
    let told = app
        .node
        .hub
        .close_all(herald_protocol::CloseCode::ServerShutdown);
    tracing::info!(
        connections = told,
        "Stopped accepting connections; told clients to reconnect."
    );
    let grace = app.server.shutdown_grace;
    let drained = tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_ok();
    Ok(drained)
}

type Http = hyper_util::server::conn::auto::Builder<TokioExecutor>;

/// Serves one connection with hyper (everything but the lean SSE path).
async fn serve_with_hyper(
    tcp: tokio::net::TcpStream,
    router: Router,
    http: std::sync::Arc<Http>,
    watcher: hyper_util::server::graceful::Watcher,
    write_timeout: Duration,
    peer: std::net::SocketAddr,
) {
    let mut io = TimeoutStream::new(tcp);
    io.set_write_timeout(Some(write_timeout));
    let io = TokioIo::new(Box::pin(io));
    let svc = router.map_request(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        req.map(axum::body::Body::new)
    });
    let conn = http
        .serve_connection_with_upgrades(io, TowerToHyperService::new(svc))
        .into_owned();
    // hyper's body channel wakes the connection's own task while it is polled; answered by
    // polling again at once, a publish is not sent to the back of a busy run queue (repoll.rs).
    if let Err(e) = crate::repoll::Repoll::new(Box::pin(watcher.watch(conn))).await {
        if timed_out(&*e) {
            // The peer stopped reading a response (a long SSE stream, most likely).
            crate::write_timeouts::write_timed_out();
        }
        tracing::trace!(peer = %peer, error = %e, "HTTP connection ended with an error.");
    }
}

/// Whether an error, or one it was caused by, is an I/O timeout (the write timeout).
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut)
        {
            return true;
        }
        cur = err.source();
    }
    false
}
