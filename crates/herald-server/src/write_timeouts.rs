//! The count of connections dropped by `server.write_timeout`, shared by every path that
//! writes to a socket (WebSocket, the lean SSE path, hyper's connections).

/// Connections dropped because their socket took no bytes for `server.write_timeout` (the peer
/// stopped reading, so not even a close frame or `herald.disconnect` event could reach it; it
/// sees the connection end and resumes). Process-wide rather than in the node's `Stats`, so a
/// connection's task does not hold a handle to the stats for its whole life just to bump this
/// on the way out (one node runs per process).
pub(crate) static WRITE_TIMEOUTS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// Counts a connection dropped by the write timeout ([`WRITE_TIMEOUTS`]).
pub(crate) fn write_timed_out() {
    WRITE_TIMEOUTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!("Write timed out; dropping the connection.");
}
