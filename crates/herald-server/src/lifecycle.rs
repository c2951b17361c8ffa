//! A connection's first and last words, and the drain that ends them all without a stampede.
//!
//! - The hello: every connection's first push says who it is and which node serves it
//!   ([`Connected`]).
//! - Reconnect delays are jittered per connection (SSE's `retry:`, and the delay a closing
//!   node asks for), so clients told at the same moment do not come back at the same moment.
//! - The drain: on SIGTERM readiness turns false and new connections are refused at once, while
//!   the listener stays open and the HTTP API keeps publishing for `server.drain_window`. Over
//!   that window the open connections are told to go at an even pace, each with its own
//!   jittered delay before it returns; then shutdown proper begins.

use crate::App;
use herald_core::{ConnId, Session};
use herald_protocol::{CloseCode, Connected};
use std::time::Duration;
use tokio::time::Instant;

/// `base` scaled by a random factor in [0.5, 1.5).
pub(crate) fn jitter(base: Duration) -> Duration {
    base.mul_f64(0.5 + fastrand::f64())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl App {
    /// The hello for connection `conn`, which pings (or sends keep-alives) every `interval`.
    pub(crate) fn hello(&self, conn: ConnId, interval: Duration) -> Connected {
        Connected {
            conn_id: conn.to_string(),
            node: self.shared.node_id.to_string(),
            time: herald_core::now_ms(),
            ping_interval_ms: millis(interval),
            recovered: None,
        }
    }

    /// `sse.retry`, jittered for one connection.
    pub(crate) fn jittered_retry(&self) -> Duration {
        jitter(self.sse.retry)
    }

    /// [`App::jittered_retry`] in milliseconds, for an SSE `retry:` field.
    pub(crate) fn retry_ms(&self) -> u64 {
        millis(self.jittered_retry())
    }

    /// Closing closes every registered connection's outbox once; a session registered while it
    /// began may have been missed, so it checks for itself.
    pub(crate) fn close_if_closing(&self, session: &Session) {
        if self.closing() {
            self.node
                .hub
                .close_conn(session.conn_id(), CloseCode::ServerShutdown);
        }
    }
}

/// Appends the WebSocket hello of connection `conn` on node `node_id`, a complete text frame,
/// to `out` without allocating (it is written through the worker thread's scratch buffer, so a
/// connection keeps nothing of it). The same fields as [`App::hello`]; the node id is base36
/// and needs no escaping.
pub(crate) fn write_ws_hello(node_id: &str, conn: ConnId, interval: Duration, out: &mut Vec<u8>) {
    use std::io::Write;
    let start = out.len();
    // Invariant: writing to a Vec cannot fail.
    write!(
        out,
        r#"{{"push":"connected","conn_id":"{conn}","node":"{}","time":{},"ping_interval_ms":{}}}"#,
        node_id,
        herald_core::now_ms(),
        millis(interval)
    )
    .expect("write to a Vec");
    let len = out.len() - start;
    // A text frame's header: FIN and opcode 1, then the length (server frames are unmasked).
    match u16::try_from(len) {
        Ok(n) if n < 126 => {
            out.splice(start..start, [0x81, n as u8]);
        }
        Ok(n) => {
            let [hi, lo] = n.to_be_bytes();
            out.splice(start..start, [0x81, 126, hi, lo]);
        }
        Err(_) => {
            let mut header = vec![0x81, 127];
            header.extend_from_slice(&(len as u64).to_be_bytes());
            out.splice(start..start, header);
        }
    }
}

/// Waits for the drain to begin (SIGTERM), tells the open connections to go at an even pace
/// over `server.drain_window`, then cancels the root token: shutdown proper (the listener
/// closes, the publisher stops). Returns at once, cancelling nothing, if shutdown began
/// without a drain.
pub(crate) async fn drain(app: App) {
    tokio::select! {
        () = app.draining.cancelled() => {}
        () = app.shutdown.cancelled() => return,
    }
    let window = app.server.drain_window;
    if window.is_zero() {
        app.shutdown.cancel();
        return;
    }
    let start = Instant::now();
    let ids = app.node.hub.conn_ids();
    tracing::info!(
        connections = ids.len(),
        window = ?window,
        "Draining: telling connections to go over the drain window."
    );
    tell_evenly(&app, &ids, start, window).await;
    tokio::time::sleep_until(start + window).await;
    app.shutdown.cancel();
}

/// Closes each of `ids` at its own instant, spread evenly over `window` from `start` (the
/// `i`-th of `n` at `(i + 1/2) / n` of the window); several due at once are told together.
async fn tell_evenly(app: &App, ids: &[ConnId], start: Instant, window: Duration) {
    let n = ids.len();
    for (i, id) in ids.iter().enumerate() {
        let at = start + window.mul_f64((i as f64 + 0.5) / n as f64);
        if at > Instant::now() {
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                // Shutdown forced early (a second signal, the grace period): stop pacing.
                () = app.shutdown.cancelled() => return,
            }
        }
        app.node.hub.close_conn(*id, CloseCode::ServerShutdown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_and_one_and_a_half() {
        let base = Duration::from_millis(2000);
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..1000 {
            let d = jitter(base);
            assert!(d >= base / 2 && d < base * 3 / 2, "{d:?}");
            seen_low |= d < base;
            seen_high |= d > base;
        }
        assert!(
            seen_low && seen_high,
            "jitter never left one side of the base"
        );
    }
}
